"""How many tokens the simulated engine counts in a request (docs/simulator.md), and the
fixed vectors its embeddings endpoint answers with."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

EMBEDDING_DIMENSIONS = 8


def text_tokens(text: str) -> int:
    """One token per 4 UTF-8 bytes, at least 1."""
    return max(1, -(-len(text.encode("utf-8")) // 4))


def count_prompt_tokens(body: Mapping[str, Any], chat: bool) -> int:
    """One token per 4 UTF-8 bytes of text, at least 1, plus 4 per chat message; a list of
    token ids counts its length (docs/simulator.md)."""
    if chat:
        total = 0
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            total += 4 + text_tokens(content if isinstance(content, str) else "")
        return max(total, 1)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ValueError("sim serve takes one prompt per request")
        prompt = prompt[0]
    if isinstance(prompt, list):
        return max(len(prompt), 1)
    return text_tokens(str(prompt))


def embedding(text: str) -> list[float]:
    """A fixed vector per input text (its SHA-256, scaled to [-1, 1))."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 128 - 1, 6) for b in digest[:EMBEDDING_DIMENSIONS]]


def embeddings_answer(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The answer to an embeddings request; ValueError when `input` is not usable."""
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs:
        raise ValueError("input must be a string or a non-empty list")
    texts = [str(item) if isinstance(item, str) else repr(item) for item in inputs]
    data = [
        {"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)
    ]
    prompt_tokens = sum(text_tokens(t) for t in texts)
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
