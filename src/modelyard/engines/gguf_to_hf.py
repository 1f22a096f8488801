"""Turn a GGUF file into a Hugging Face directory that vLLM can load (bf16 safetensors).

Runs inside the vLLM environment (it needs torch, transformers, gguf and safetensors), as a
script: `python gguf_to_hf.py MODEL.gguf OUT_DIR [--served-architecture Gemma3ForCausalLM]`.
transformers de-quantizes the GGUF on load; `save_pretrained` refuses GGUF-quantized models,
so the state dict, tokenizer and config are saved separately.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf")
    parser.add_argument("out")
    parser.add_argument("--architecture", default="Gemma3ForCausalLM")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(args.gguf)
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.bfloat16
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    embed = state.get("model.embed_tokens.weight")
    head = state.get("lm_head.weight")
    if embed is not None and head is not None and head.data_ptr() == embed.data_ptr():
        del state["lm_head.weight"]  # tied: safetensors refuses shared storage
    elif embed is not None and head is not None and torch.equal(head, embed):
        del state["lm_head.weight"]
    save_file(state, str(partial / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(partial))
    config = model.config.to_dict()
    config["architectures"] = [args.architecture]
    config.pop("quantization_config", None)
    config["torch_dtype"] = "bfloat16"
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    partial.rename(out)
    print(out)


if __name__ == "__main__":
    main()
