"""Build the real-vLLM bundle for the lent H200 machine, from PyPI, on this machine.

    python benchmarks/gpu_bundle.py            # or: make gpu-bundle
    python benchmarks/gpu_bundle.py --models-only

Writes, under .gpu/ (ignored by git; never committed):
- `vllm-0.24.0.tar.xz.partN`: vLLM 0.24.0 and the part of its dependency closure that the GPU
  machine's image lacks, pruned (below): one `site` directory (`pip install --target` layout;
  PYTHONPATH=site) as an xz tar stream cut into parts of at most --part-mb MB, so that each
  travels in one 64 MiB device call; the machine joins them and unpacks.
- `spare.tar.xz.partN`: packages of the closure left out (SPARE below), carried only if the
  server turns out to import one.
- `models/<catalog name>/`: a weight-free model directory per catalog model (config.json with the
  published shapes, and a tokenizer of exactly the vocabulary size) for `--load-format dummy`.
- `manifest.json`: every part with its size and sha256.

Why vLLM 0.24.0: it is the release whose wheel pins the GPU image's torch 2.11.0 (+cu130),
torchvision 0.26.0 and torchaudio 2.11.0 (../shared/GPU-VLLM.md). The dependency closure was
resolved on 2026-12-01 with `pip install --dry-run --report` against stand-ins for the image's
torch/triton and is pinned in benchmarks/gpu_bundle.lock, minus every package the image already
has (device KINDS.md's package list), so the bundle is reproducible without resolving again.

Nothing here downloads model weights: the models are shapes and a synthetic tokenizer only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".gpu"
LOCK = Path(__file__).with_name("gpu_bundle.lock")
VLLM = "vllm==0.24.0"
PLATFORMS = [
    "manylinux_2_35_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux_2_12_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
]

# Paths inside the installed tree left out, each with why. Hopper (sm_90) runs FlashAttention 3;
# vllm_flash_attn imports FA2 and FA3 each inside `try`.
PRUNE = {
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": "FA2 (190 MB); Hopper uses FA3",
    "vllm/vllm-rs": "optional Rust front end, used only with VLLM_RUST_FRONTEND_PATH",
    "vllm/third_party/fmha_sm100": "Blackwell (sm_100) attention sources",
    "vllm/third_party/deep_gemm/include": "DeepGEMM JIT headers: FP8 block GEMMs, not bf16",
    "vllm/third_party/deep_gemm/_C.cpython-310-x86_64-linux-gnu.so": "other Python versions",
    "vllm/third_party/deep_gemm/_C.cpython-311-x86_64-linux-gnu.so": "other Python versions",
    "vllm/third_party/deep_gemm/_C.cpython-313-x86_64-linux-gnu.so": "other Python versions",
    "vllm/third_party/deep_gemm/_C.cpython-314-x86_64-linux-gnu.so": "other Python versions",
    "vllm/entrypoints/serve/instrumentator/static": "Swagger UI assets",
}
# Packages of the closure installed into the spare parts instead: a bf16 Llama/Mistral server on
# Hopper never imports them (FlashInfer kernels and their JIT toolchain, optional kernel
# libraries); checked by importing the server's modules with the main parts alone. xgrammar and
# apache-tvm-ffi stay in the main parts: the engine core imports them at start-up.
SPARE = {
    "flashinfer-python",
    "nvidia-cuda-cccl",
    "nvidia-cutlass-dsl",
    "cuda-python",
    "cuda-tile",
    "humming-kernels",
    "quack-kernels",
    "tokenspeed-mla",
    "torch-c-dlpack-ext",
    "nvidia-cudnn-frontend",
}

# Published shapes, from each model's config.json on Hugging Face (read 2026-12-01):
# https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json
# https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2/blob/main/config.json
# The layer shapes match src/modelyard/catalog/models.yaml (asserted in tests/test_gpu_bundle.py).
MODEL_CONFIGS: dict[str, dict[str, object]] = {
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
        "torch_dtype": "bfloat16",
    },
    "mistral-7b-instruct-v0.2": {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    },
}


def tokenizer_files(vocab_size: int, bos_id: int, eos_id: int) -> dict[str, str]:
    """A WordLevel tokenizer with exactly `vocab_size` entries: ids 0-2 are <unk>, <s>, </s>
    (the special tokens' names), id i >= 3 is the word `w{i}`; whitespace pre-tokenizer. Token
    ids round-trip exactly, so prompts sent as token ids keep their lengths.

    Written by hand as JSON (the `tokenizers` format), so building it needs no library."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    specials = {0: "<unk>", bos_id: "<s>", eos_id: "</s>"}
    for index, name in specials.items():
        vocab.pop(f"w{index}", None)
        vocab[name] = index
    added = [
        {
            "id": index,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for index, name in sorted(specials.items())
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False,
        "chat_template": (
            "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant {% endif %}"
        ),
    }
    return {
        "tokenizer.json": json.dumps(tokenizer),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        ),
    }


def write_models(out: Path) -> list[Path]:
    written = []
    for name, config in MODEL_CONFIGS.items():
        folder = out / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        eos = config["eos_token_id"]
        eos_id = eos[0] if isinstance(eos, list) else eos
        assert isinstance(eos_id, int) and isinstance(config["bos_token_id"], int)
        vocab = config["vocab_size"]
        assert isinstance(vocab, int)
        for file, text in tokenizer_files(vocab, config["bos_token_id"], eos_id).items():
            (folder / file).write_text(text)
        written.append(folder)
    return written


def _pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True)


def download(python: str, wheels: Path) -> None:
    pins = [line.split("#")[0].strip() for line in LOCK.read_text().splitlines()]
    pins = [p for p in pins if p]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _pip(
        python,
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(wheels),
        VLLM,
        *pins,
    )


def _name_of(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-").lower()


def install(python: str, wheels: Path, main: Path, spare: Path) -> None:
    main_wheels = [w for w in wheels.glob("*.whl") if _name_of(w) not in SPARE]
    spare_wheels = [w for w in wheels.glob("*.whl") if _name_of(w) in SPARE]
    for target, chosen in ((main, main_wheels), (spare, spare_wheels)):
        shutil.rmtree(target, ignore_errors=True)
        _pip(
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--no-index",
            # the wheels are the GPU image's CPython 3.12, whatever Python runs pip here
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *(a for p in PLATFORMS for a in ("--platform", p)),
            "--target",
            str(target),
            *map(str, chosen),
        )
    for relative in PRUNE:
        path = main / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            raise SystemExit(f"prune list names {relative}, which the install lacks")


def pack(tree: Path, stem: str, limit_bytes: int) -> list[Path]:
    """`tree` as one xz-compressed tar stream cut into parts of at most `limit_bytes` (single
    files such as vLLM's 106 MB kernel library are larger than a part, so parts are byte ranges
    of one stream; the machine joins them before unpacking)."""
    tar = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
    xz = subprocess.Popen(["xz", "-9", "-T2", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
    assert tar.stdout is not None and xz.stdout is not None
    tar.stdout.close()
    parts: list[Path] = []
    room = 0
    out = None
    while block := xz.stdout.read(1 << 20):
        while block:
            if room == 0:
                if out is not None:
                    out.close()
                parts.append(OUT / f"{stem}.tar.xz.part{len(parts)}")
                out = parts[-1].open("wb")
                room = limit_bytes
            piece, block = block[:room], block[room:]
            out.write(piece)
            room -= len(piece)
    if out is not None:
        out.close()
    if xz.wait() != 0 or tar.wait() != 0:
        raise SystemExit(f"packing {tree} failed")
    return parts


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part-mb", type=float, default=45.0, help="largest part, MB (10^6)")
    parser.add_argument(
        "--python", default=sys.executable, help="Python whose pip downloads (any version)"
    )
    parser.add_argument("--models-only", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    models = write_models(OUT)
    print(f"models: {', '.join(str(m.relative_to(ROOT)) for m in models)}")
    if args.models_only:
        return
    if shutil.which("xz") is None or shutil.which("tar") is None:
        raise SystemExit("gpu_bundle needs tar and xz on PATH")
    wheels, main_tree, spare_tree = OUT / "wheels", OUT / "site", OUT / "spare"
    download(args.python, wheels)
    install(args.python, wheels, main_tree, spare_tree)
    for old in OUT.glob("*.tar.xz.part*"):
        old.unlink()
    limit = int(args.part_mb * 1e6)
    streams = {
        "site": pack(main_tree, "vllm-0.24.0", limit),
        "spare": pack(spare_tree, "spare", limit),
    }
    manifest = {
        "vllm": VLLM,
        "streams": {
            name: [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in parts]
            for name, parts in streams.items()
        },
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for parts in manifest["streams"].values():
        for part in parts:
            print(f"{part['file']}: {part['bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
