"""What an engine's OpenAI-compatible server serves, as the gateway needs to know it: which
endpoints, and the fields its non-streaming answers carry that its streamed chunks leave out.

The gateway assembles non-streaming answers from streams (gateway/assemble.py); an engine's
`AnswerShape` names the fields that only its non-streaming answers have, with the values it
gives them when nothing in the stream set them, so that the client sees what the engine itself
would have sent. Each adapter (engines/adapters.py) sets its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MODELS = "/v1/models"


class Now:
    """Stands, in an `AnswerShape`, for the time the answer was put together (whole seconds
    since the epoch): llama.cpp's non-streaming Responses answer has `completed_at`, its
    stream's final response does not."""

    def __repr__(self) -> str:
        return "NOW"


NOW = Now()


@dataclass(frozen=True)
class AnswerShape:
    """Fields (with their values, or NOW) an engine's non-streaming answer has where its stream
    leaves them out or null: at the top of the answer, in its `usage`, in each choice, and in a
    chat choice's message."""

    answer: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Any] = field(default_factory=dict)
    choice: Mapping[str, Any] = field(default_factory=dict)
    message: Mapping[str, Any] = field(default_factory=dict)
