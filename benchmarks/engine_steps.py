"""Measure a running OpenAI-compatible engine's step times from outside, for calibration.

Sends controlled requests (prompts as token-id lists, so lengths are exact; `ignore_eos` so
outputs are exact) and records:
  - prefill: TTFT of one request alone, per prompt length;
  - decode: median inter-token gap while `c` requests stream at once, per c.
Every request's prompt is different (seeded random token ids): engines cache prefixes (vLLM
does by default), and a repeated prompt would time a cache hit instead of a prefill.
Writes the same JSON shape as benchmarks/gpu_calibrate.py, so `modelyard sim calibrate` fits it:

    python benchmarks/engine_steps.py --url http://127.0.0.1:8000 --model gemma \\
        --catalog-model gemma-3-270m --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
from typing import Any

import aiohttp

_PROMPTS = random.Random(20261128)


async def stream_one(
    session: aiohttp.ClientSession, url: str, model: str, prompt: int, output: int
) -> list[float]:
    """Token arrival times (monotonic seconds), starting with the send time. The prompt is
    `prompt` fresh token ids (below 30,000: inside every current model's vocabulary)."""
    body = {
        "model": model,
        "prompt": [_PROMPTS.randrange(1000, 30000) for _ in range(prompt)],
        "max_tokens": output,
        "min_tokens": output,
        "ignore_eos": True,
        "stream": True,
        "temperature": 0.0,
    }
    times = [time.monotonic()]
    async with session.post(f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                payload = json.loads(line[6:])
                if payload.get("choices"):
                    times.append(time.monotonic())
    return times


async def measure(
    url: str,
    model: str,
    batches: list[int],
    prompts: list[int],
    decode_prompt: int,
    decode_output: int,
    repeats: int,
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await stream_one(session, url, model, 16, 4)  # warm-up
        prefill = []
        for length in prompts:
            ttfts = []
            for _ in range(repeats):
                times = await stream_one(session, url, model, length, 1)
                ttfts.append(times[1] - times[0])
            prefill.append({"tokens": length, "seconds": statistics.median(ttfts)})
        decode = []
        for batch in batches:
            runs = await asyncio.gather(
                *[
                    stream_one(session, url, model, decode_prompt, decode_output)
                    for _ in range(batch)
                ]
            )
            # gaps while every stream is decoding: skip each stream's first token (prefill)
            # and keep the middle half, when the batch is steady
            gaps = []
            for times in runs:
                tokens = times[2:]
                quarter = len(tokens) // 4
                middle = tokens[quarter : len(tokens) - quarter]
                gaps.extend(b - a for a, b in itertools.pairwise(middle))
            decode.append(
                {
                    "batch": batch,
                    "context": decode_prompt + decode_output // 2,
                    "seconds": statistics.median(gaps),
                }
            )
    return {"prefill": prefill, "decode": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--catalog-model", required=True, help="modelyard catalog name")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batches", default="1,2,3,4,6,8")
    parser.add_argument("--prompts", default="64,128,256,512,1024")
    parser.add_argument("--decode-prompt", type=int, default=64)
    parser.add_argument("--decode-output", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = asyncio.run(
        measure(
            args.url,
            args.model,
            [int(b) for b in args.batches.split(",")],
            [int(p) for p in args.prompts.split(",")],
            args.decode_prompt,
            args.decode_output,
            args.repeats,
        )
    )
    report = {
        "device": args.device,
        "engine_url": args.url,
        "method": "benchmarks/engine_steps.py against a running engine (TTFT of one request "
        "alone per prompt length, a fresh prompt each; median decode gap of c concurrent "
        f"streams, {args.decode_prompt}-token prompts, {args.decode_output} tokens out)",
        "date": time.strftime("%Y-%m-%d"),
        "models": {args.catalog_model: runs},
    }
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
