from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.bench.datasets import load_jsonl, load_sharegpt
from modelyard.workload import WorkloadError


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Hi there", "max_tokens": 5}\n\n{"prompt": "Bye"}\n')
    prompts = load_jsonl(path)
    assert [(p.text, p.max_tokens) for p in prompts] == [("Hi there", 5), ("Bye", None)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"prompt": "a"}\nnot json\n', "p.jsonl:2: not JSON"),
        ('{"text": "a"}\n', 'p.jsonl:1: each line needs a string "prompt"'),
        ('{"prompt": "a", "max_tokens": 0}\n', "p.jsonl:1: max_tokens must be a positive integer"),
        ("\n", "p.jsonl: no prompts"),
    ],
)
def test_jsonl_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(WorkloadError) as info:
        load_jsonl(path)
    assert str(info.value).endswith(message) or message in str(info.value)


def test_sharegpt(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "human", "value": "What is 2+2?"},
                        {"from": "gpt", "value": "4" * 40},
                    ]
                },
                {
                    "conversations": [
                        {"from": "gpt", "value": "starts with the model"},
                        {"from": "human", "value": "skip me"},
                    ]
                },
                {"conversations": [{"from": "human", "value": "only one turn"}]},
            ]
        )
    )
    prompts = load_sharegpt(path)
    assert [(p.text, p.max_tokens) for p in prompts] == [("What is 2+2?", 10)]
    path.write_text("{}")
    with pytest.raises(WorkloadError, match="a JSON list of conversations"):
        load_sharegpt(path)
