"""Prompts from files the user provides: JSONL (`{"prompt": ..., "max_tokens": N}` per line)
or ShareGPT (a JSON list of `{"conversations": [{"from": "human", "value": ...}, ...]}`).
Nothing is downloaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modelyard.workload import WorkloadError


@dataclass(frozen=True)
class Prompt:
    text: str
    max_tokens: int | None  # None: use the workload's output length


def _tokens_of(text: str) -> int:
    return max(1, len(text.encode("utf-8")) // 4)  # the same rule as sim serve's


def load_jsonl(path: Path) -> list[Prompt]:
    prompts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot read: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise WorkloadError(f'{path}:{number}: each line needs a string "prompt"')
        max_tokens = row.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise WorkloadError(f"{path}:{number}: max_tokens must be a positive integer")
        prompts.append(Prompt(row["prompt"], max_tokens))
    if not prompts:
        raise WorkloadError(f"{path}: no prompts")
    return prompts


def load_sharegpt(path: Path) -> list[Prompt]:
    """First human turn as the prompt; the following model turn's length as max_tokens."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot read ShareGPT JSON: {exc}") from exc
    if not isinstance(data, list):
        raise WorkloadError(f"{path}: ShareGPT files are a JSON list of conversations")
    prompts = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        if not (isinstance(first, dict) and isinstance(second, dict)):
            continue
        if first.get("from") not in ("human", "user") or not isinstance(first.get("value"), str):
            continue
        answer = second.get("value") if isinstance(second.get("value"), str) else ""
        prompts.append(Prompt(first["value"], _tokens_of(answer) if answer else None))
    if not prompts:
        raise WorkloadError(f"{path}: no conversation starts with a human turn")
    return prompts
