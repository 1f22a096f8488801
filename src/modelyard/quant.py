"""Which quantization profiles suit a model on a GPU, and llm-compressor recipes for them."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from modelyard.catalog import Catalog, QuantProfile
from modelyard.catalog.entries import capability
from modelyard.errors import UnsupportedError
from modelyard.memory import Device, FitResult, FitSettings, fit


@dataclass(frozen=True)
class ProfileOption:
    """One quantization profile judged for a model, a device and an engine."""

    profile: str
    display_name: str
    weights_bytes: float
    engine_args: list[str] | None
    supported: bool
    why_not: str
    fit: FitResult


def profile_options(
    catalog: Catalog,
    model_name: str,
    device: Device,
    compute_capability: str | None,
    engine: str,
    settings: FitSettings,
) -> list[ProfileOption]:
    """Every profile for `model_name`, with memory, engine arguments and why it cannot run."""
    slug = catalog.resolve_model_name(model_name)
    model = catalog.models[slug]
    options = []
    for name, profile in catalog.quants.items():
        engine_args = profile.engines[engine].args if engine in profile.engines else None
        why_not = ""
        if engine_args is None:
            why_not = f"engine {engine} does not serve it"
        elif (
            compute_capability is not None
            and profile.min_compute_capability is not None
            and capability(compute_capability) < capability(profile.min_compute_capability)
        ):
            why_not = f"needs compute capability {profile.min_compute_capability}+"
        result = fit(slug, model, name, profile, device, settings)
        if not why_not and not result.fits:
            why_not = result.reason
        options.append(
            ProfileOption(
                profile=name,
                display_name=profile.display_name,
                weights_bytes=result.weights_bytes,
                engine_args=engine_args,
                supported=not why_not,
                why_not=why_not,
                fit=result,
            )
        )
    options.sort(key=lambda o: (not o.supported, -o.weights_bytes))
    return options


def _ignore_list(catalog: Catalog, model_name: str) -> list[str]:
    model = catalog.model(model_name)
    ignore = ["lm_head"]
    if model.moe is not None:
        ignore.append("re:.*router.*")  # routers stay in full precision
    return ignore


def render_recipe(catalog: Catalog, model_name: str, profile_name: str) -> str:
    """The llm-compressor recipe (YAML) that produces `profile_name` for `model_name`."""
    profile: QuantProfile = catalog.quant(profile_name)
    slug = catalog.resolve_model_name(model_name)
    spec = profile.llmcompressor
    if spec is None:
        raise UnsupportedError(
            f"profile '{profile_name}' has no llm-compressor recipe "
            + (
                "(GGUF files are made with llama.cpp's llama-quantize)"
                if profile_name.startswith("gguf")
                else "(it is not a quantization)"
            )
        )
    ignore = _ignore_list(catalog, slug)
    modifiers: dict[str, object] = {}
    if spec.method == "rtn":
        modifiers["QuantizationModifier"] = {
            "targets": ["Linear"],
            "ignore": ignore,
            "scheme": spec.scheme,
        }
    else:
        weights = {
            "num_bits": spec.num_bits,
            "type": "int",
            "symmetric": spec.symmetric,
            "group_size": spec.group_size,
            "strategy": "group",
            "dynamic": False,
        }
        groups = {"group_0": {"targets": ["Linear"], "weights": weights}}
        if spec.method == "awq":
            # llm-compressor >= 0.14: AWQ is a smoothing transform followed by quantization.
            modifiers["AWQModifier"] = {"duo_scaling": True}
            modifiers["QuantizationModifier"] = {"ignore": ignore, "config_groups": groups}
        else:
            modifiers["GPTQModifier"] = {"ignore": ignore, "config_groups": groups}
    header = (
        f"# llm-compressor recipe: {slug} -> {profile_name} ({profile.display_name})\n"
        f"# written by modelyard; run with llmcompressor.oneshot(model=..., recipe=THIS_FILE,\n"
        f"# dataset=<calibration set>). Serve the result with vLLM (compressed-tensors).\n"
    )
    body = yaml.safe_dump({"quant_stage": {"quant_modifiers": modifiers}}, sort_keys=False)
    return header + body
