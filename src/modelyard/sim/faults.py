"""Fault injection for `sim serve`: what a misbehaving engine does, on purpose and exactly.

Faults are per model, set from a YAML file or flags at start, and can be changed while the
server runs with `POST /_sim/faults` (the same fields as JSON; `{}` clears them).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from modelyard.sim.errors import SimError
from modelyard.yamlsource import load_yaml, validation_problems

# What vLLM's OpenAI server returns for a prompt longer than the context (HTTP 400).
CONTEXT_LENGTH_BODY = {
    "object": "error",
    "message": "This model's maximum context length is {max_len} tokens. However, you "
    "requested {requested} tokens ({prompt} in the messages, {completion} in the completion). "
    "Please reduce the length of the messages or completion.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


class Faults(BaseModel):
    """Faults of one simulated model. Rates are probabilities per request."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    error_body: dict[str, Any] | Literal["context_length"] | None = Field(
        default=None, description="JSON body of injected errors; 'context_length' = vLLM's 400"
    )
    hang_rate: float = Field(default=0.0, ge=0, le=1, description="never send headers")
    slow_first_token_s: float = Field(default=0.0, ge=0, description="extra TTFT (sim seconds)")
    stall_after_tokens: int | None = Field(default=None, ge=0, description="then send nothing")
    close_after_tokens: int | None = Field(default=None, ge=0, description="then drop the socket")
    crash_after_requests: int | None = Field(default=None, ge=1, description="then exit(1)")
    refuse_connections_s: float = Field(default=0.0, ge=0, description="listener closed for")
    seed: int = 0


class FaultState:
    """The live faults of one model plus their random stream and request counter."""

    def __init__(self, faults: Faults) -> None:
        self.set(faults)

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.requests = 0

    def draw_error(self) -> bool:
        return self.faults.error_rate > 0 and self.rng.random() < self.faults.error_rate

    def draw_hang(self) -> bool:
        return self.faults.hang_rate > 0 and self.rng.random() < self.faults.hang_rate


def parse_faults(data: Any, origin: str = "faults") -> Faults:
    try:
        return Faults.model_validate(data or {})
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise SimError(f"{origin}: {details}") from exc


class FaultFile(RootModel[dict[str, Faults]]):
    """A faults file: model name -> faults."""


def load_fault_file(path: Path) -> dict[str, Faults]:
    """`{model: faults}` from YAML: a mapping of model name to its faults."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise SimError(f"{path}:1: a faults file maps model names to faults")
    try:
        return FaultFile.model_validate(doc.data).root
    except ValidationError as exc:
        raise SimError("\n".join(validation_problems(exc, doc, FaultFile))) from exc
