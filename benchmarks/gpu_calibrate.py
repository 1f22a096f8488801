"""Time decode and prefill steps of Llama-3.1-8B- and Mistral-7B-shaped models on a GPU, alone
and with two processes sharing the GPU, to calibrate modelyard's simulator.

Random bf16 weights (timing does not depend on their values). Decode steps run as CUDA graphs
with a static KV cache, as serving engines run them (eager PyTorch is launch-bound). Needs only
PyTorch with CUDA; run it on the GPU you want to calibrate:

    python benchmarks/gpu_calibrate.py --out results.json
    modelyard sim calibrate results.json --gpu h200 -o my-h200.yaml

Writes one JSON file: per model, decode points (batch, context, seconds per step) and prefill
points (tokens, seconds), plus co-location points (each model's decode step alone and while the
other model decodes on the same GPU in another process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # from the models' config.json (see src/modelyard/catalog/models.yaml)
    "llama-3.1-8b": {
        "layers": 32,
        "hidden": 4096,
        "heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "ffn": 14336,
        "vocab": 128256,
    },
    "mistral-7b-instruct-v0.2": {
        "layers": 32,
        "hidden": 4096,
        "heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "ffn": 14336,
        "vocab": 32000,
    },
}


def build(shape: dict[str, int], torch: Any) -> dict[str, Any]:
    device, dtype = "cuda", torch.bfloat16
    h, q = shape["hidden"], shape["heads"] * shape["head_dim"]
    kv = shape["kv_heads"] * shape["head_dim"]

    def weight(rows: int, cols: int) -> Any:
        return torch.randn(rows, cols, device=device, dtype=dtype) * 0.02

    layers = [
        {
            "qkv": weight(h, q + 2 * kv),
            "o": weight(q, h),
            "gate_up": weight(h, 2 * shape["ffn"]),
            "down": weight(shape["ffn"], h),
            "norm1": torch.ones(h, device=device, dtype=dtype),
            "norm2": torch.ones(h, device=device, dtype=dtype),
        }
        for _ in range(shape["layers"])
    ]
    return {
        "layers": layers,
        "embed": weight(shape["vocab"], h),
        "head": weight(h, shape["vocab"]),
        "norm": torch.ones(h, device=device, dtype=dtype),
    }


def rms(x: Any, weight: Any, torch: Any) -> Any:
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * weight


def forward_decode(
    params: dict[str, Any],
    shape: dict[str, int],
    tokens: Any,
    k_cache: Any,
    v_cache: Any,
    torch: Any,
) -> Any:
    """One decode step for `tokens` [B]; caches [layers, B, kv_heads, C, head_dim] are full."""
    f = torch.nn.functional
    batch = tokens.shape[0]
    heads, kv_heads, dim = shape["heads"], shape["kv_heads"], shape["head_dim"]
    group = heads // kv_heads
    x = params["embed"][tokens]
    for index, layer in enumerate(params["layers"]):
        y = rms(x, layer["norm1"], torch) @ layer["qkv"]
        q = y[:, : heads * dim].view(batch, kv_heads, group, dim)
        k_new = y[:, heads * dim : heads * dim + kv_heads * dim].view(batch, kv_heads, 1, dim)
        keys = k_cache[index]
        values = v_cache[index]
        keys[:, :, -1:, :] = k_new  # the new token's slot (attention reads the whole cache)
        scores = torch.matmul(q, keys.transpose(-1, -2)) * dim**-0.5
        attn = torch.matmul(torch.softmax(scores.float(), -1).to(x.dtype), values)
        x = x + attn.reshape(batch, heads * dim) @ layer["o"]
        gate, up = (rms(x, layer["norm2"], torch) @ layer["gate_up"]).chunk(2, dim=-1)
        x = x + (f.silu(gate) * up) @ layer["down"]
    return rms(x, params["norm"], torch) @ params["head"]


def forward_prefill(params: dict[str, Any], shape: dict[str, int], tokens: Any, torch: Any) -> Any:
    f = torch.nn.functional
    length = tokens.shape[0]
    heads, kv_heads, dim = shape["heads"], shape["kv_heads"], shape["head_dim"]
    x = params["embed"][tokens]
    for layer in params["layers"]:
        y = rms(x, layer["norm1"], torch) @ layer["qkv"]
        q = y[:, : heads * dim].view(length, heads, dim).transpose(0, 1)[None]
        k = y[:, heads * dim : (heads + kv_heads) * dim].view(length, kv_heads, dim)
        k = k.transpose(0, 1)[None]
        v = y[:, (heads + kv_heads) * dim :].view(length, kv_heads, dim).transpose(0, 1)[None]
        attn = f.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + attn[0].transpose(0, 1).reshape(length, heads * dim) @ layer["o"]
        gate, up = (rms(x, layer["norm2"], torch) @ layer["gate_up"]).chunk(2, dim=-1)
        x = x + (f.silu(gate) * up) @ layer["down"]
    return rms(x[-1:], params["norm"], torch) @ params["head"]  # logits of the last token only


def graph_timer(fn: Any, torch: Any) -> Any:
    """Capture `fn` in a CUDA graph; return a callable timing `n` replays (seconds each)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()

    def replay(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        return times

    return replay


def decode_timer(
    params: dict[str, Any], shape: dict[str, int], batch: int, context: int, torch: Any
) -> Any:
    layers = shape["layers"]
    k_cache = torch.randn(
        layers,
        batch,
        shape["kv_heads"],
        context,
        shape["head_dim"],
        device="cuda",
        dtype=torch.bfloat16,
    )
    v_cache = torch.randn_like(k_cache)
    tokens = torch.randint(0, shape["vocab"], (batch,), device="cuda")
    replay = graph_timer(
        lambda: forward_decode(params, shape, tokens, k_cache, v_cache, torch), torch
    )
    return replay, (k_cache, v_cache)


def measure_model(
    name: str, batches: list[int], contexts: list[int], prompts: list[int], repeats: int
) -> dict[str, Any]:
    import torch

    shape = SHAPES[name]
    params = build(shape, torch)
    decode = []
    for context in contexts:
        for batch in batches:
            replay, keep = decode_timer(params, shape, batch, context, torch)
            replay(5)
            times = replay(repeats)
            decode.append({"batch": batch, "context": context, "seconds": statistics.median(times)})
            del replay, keep
            torch.cuda.empty_cache()
    prefill = []
    for length in prompts:
        tokens = torch.randint(0, shape["vocab"], (length,), device="cuda")
        replay = graph_timer(lambda t=tokens: forward_prefill(params, shape, t, torch), torch)
        replay(3)
        seconds = statistics.median(replay(max(5, repeats // 4)))
        prefill.append({"tokens": length, "seconds": seconds})
        del replay
        torch.cuda.empty_cache()
    return {"decode": decode, "prefill": prefill}


def colocated_worker(
    name: str, batch: int, context: int, start: Any, seconds: float, out: Any
) -> None:
    import torch

    shape = SHAPES[name]
    params = build(shape, torch)
    replay, _keep = decode_timer(params, shape, batch, context, torch)
    replay(5)
    start.wait()
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        times.extend(replay(10))
    out.put(
        {
            "model": name,
            "batch": batch,
            "context": context,
            "p50": statistics.median(times),
            "steps": len(times),
        }
    )


def colocation(batch: int, context: int, seconds: float) -> list[dict[str, Any]]:
    """Each model decoding alone, then both at once in two processes on the same GPU."""
    ctx = mp.get_context("spawn")
    results = []
    for together in (False, True):
        names = list(SHAPES) if together else None
        runs = [[n] for n in SHAPES] if not together else [names]
        for group in runs:
            barrier = ctx.Barrier(len(group))
            queue = ctx.Queue()
            procs = [
                ctx.Process(
                    target=colocated_worker, args=(n, batch, context, barrier, seconds, queue)
                )
                for n in group
            ]
            for p in procs:
                p.start()
            for _ in procs:
                item = queue.get(timeout=600)
                item["colocated"] = together
                results.append(item)
            for p in procs:
                p.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--contexts", default="512,2048")
    parser.add_argument("--prompts", default="64,128,256,512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument(
        "--colocate", default="16:1024,64:1024", help='batch:context pairs ("" for none)'
    )
    parser.add_argument("--colocate-seconds", type=float, default=6.0)
    args = parser.parse_args()

    import torch

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "method": "benchmarks/gpu_calibrate.py (random-weight models of the catalog's shapes, "
        "bf16, CUDA-graph decode steps, static KV cache)",
        "models": {},
    }
    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    prompts = [int(p) for p in args.prompts.split(",")]
    for name in SHAPES:
        started = time.monotonic()
        report["models"][name] = measure_model(name, batches, contexts, prompts, args.repeats)
        print(f"{name}: measured in {time.monotonic() - started:.0f} s", flush=True)
        torch.cuda.empty_cache()
    report["colocation"] = []
    for pair in filter(None, args.colocate.split(",")):  # --colocate "" skips co-location
        batch, context = (int(v) for v in pair.split(":"))
        report["colocation"].extend(colocation(batch, context, args.colocate_seconds))
        print(f"colocation {pair}: done", flush=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report["colocation"], indent=1))


if __name__ == "__main__":
    main()
