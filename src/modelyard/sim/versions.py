"""Engine versions: what a fleet's `engine_version:` names and which calibrations it matches.

A fleet model says `engine_version: "0.6.3"` (a version of its own engine) or
`engine_version: "sglang 0.3.0"` (another engine, for a model the simulator stands in for).
Calibrations name an engine and a version range, e.g. `engine: vllm, versions: ">=0.6,<0.8"`.
Without `engine_version` the current release of the model's engine is assumed; an engine
without a profile of its own (TGI, llama.cpp, Ollama) is modelled as the current vLLM, and the
simulated figures' accuracy notes say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.sim.errors import SimError

# The releases `engine_version:` defaults to (the newest each profile here was checked against).
CURRENT_VERSIONS = {"vllm": "0.32.0", "sglang": "0.5.5", "tensorrt-llm": "1.2.0"}
# Fleet engines the simulator models with another engine's profile.
ENGINE_ALIASES = {"sim": "vllm"}
KNOWN_ENGINES = ("vllm", "sglang", "tensorrt-llm", "harness")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_BOUND = re.compile(r"^(>=|<=|==|<|>)?\s*(\d+(?:\.\d+)*)(\.\*)?$")


def parse_version(text: str) -> tuple[int, ...]:
    """ "0.6.3" -> (0, 6, 3); a suffix such as "0.6.3.post1" or "1.2.0rc1" is ignored."""
    head = re.match(r"\d+(\.\d+)*", text.strip())
    if head is None:
        raise SimError(f"'{text}' is not a version (expected digits and dots, e.g. 0.6.3)")
    return tuple(int(part) for part in head.group(0).split("."))


def _padded(version: tuple[int, ...], size: int) -> tuple[int, ...]:
    return version + (0,) * (size - len(version))


def version_in(version: str, spec: str) -> bool:
    """Whether `version` lies in `spec`: "*", "0.6.*", ">=0.8", ">=0.6,<0.8", "==1.0"."""
    if spec.strip() in ("", "*"):
        return True
    have = parse_version(version)
    for part in spec.split(","):
        match = _BOUND.match(part.strip())
        if match is None:
            raise SimError(f"'{spec}' is not a version range (e.g. >=0.6,<0.8 or 0.6.*)")
        operator, number, star = match.group(1) or "==", match.group(2), match.group(3)
        bound = parse_version(number)
        size = max(len(have), len(bound))
        left, right = _padded(have, size), _padded(bound, size)
        if star:
            if have[: len(bound)] != bound:
                return False
            continue
        ok = {
            "==": left == right,
            ">=": left >= right,
            "<=": left <= right,
            ">": left > right,
            "<": left < right,
        }[operator]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class EngineVersion:
    """The engine and release whose calibration a simulated model uses."""

    engine: str
    version: str
    stated: bool  # False: the current release was assumed
    stands_in_for: str | None = None  # a fleet engine without a profile of its own (e.g. tgi)

    def __str__(self) -> str:
        return f"{self.engine} {self.version}"


def resolve_engine_version(fleet_engine: str, engine_version: str | None) -> EngineVersion:
    """The engine and version for a fleet model's `engine:` and `engine_version:`."""
    engine = ENGINE_ALIASES.get(fleet_engine, fleet_engine)
    if engine_version is None:
        current = CURRENT_VERSIONS.get(engine)
        if current is None:  # TGI, llama.cpp, Ollama: modelled as the current vLLM, and said so
            return EngineVersion("vllm", CURRENT_VERSIONS["vllm"], False, fleet_engine)
        return EngineVersion(engine, current, stated=False)
    text = engine_version.strip()
    name, _, rest = text.rpartition(" ")
    if name:
        engine = name.strip().lower()
        text = rest
    if engine not in KNOWN_ENGINES:
        raise SimError(
            f"engine_version '{engine_version}': no simulator profile for '{engine}' "
            f"(profiles: {', '.join(KNOWN_ENGINES)})"
        )
    if not _VERSION.match(re.sub(r"(\.post\d+|rc\d+|\.dev\d+)$", "", text)):
        raise SimError(f"engine_version '{engine_version}': '{text}' is not a version")
    return EngineVersion(engine, text, stated=True)
