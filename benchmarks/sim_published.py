"""The simulator's step model against published numbers for Llama-3.1-8B (bf16) with vLLM:
single-stream decode speed and the throughput gain from 1 to 8 concurrent streams (1,024-token
prompts, 128 output tokens, so about 1,088 tokens of context mid-generation).

    python benchmarks/sim_published.py
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from modelyard.catalog import Catalog
from modelyard.sim.perf import Hardware, StepModel, calibration_for

# johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23, A100 40GB)
PUBLISHED = {"a100-40gb": {"tokens_per_s": 75.0, "gain_c8": 6.6}}
CONTEXT = 1088


def main() -> None:
    catalog = Catalog.load()
    table = Table(title="Llama-3.1-8B bf16: step model vs published", title_justify="left")
    for column in (
        "GPU",
        "calibration",
        "1 stream tok/s",
        "published",
        "gain 1->8 streams",
        "published",
        "1,024-token prefill ms",
    ):
        table.add_column(column, justify="left" if column in ("GPU", "calibration") else "right")
    for gpu in ("a100-40gb", "h100-sxm", "h200"):
        calibration = calibration_for(gpu)
        hardware = Hardware.for_gpu(gpu, catalog.gpu(gpu), "bf16", calibration)
        model = StepModel(
            catalog.model("llama-3.1-8b"), catalog.quant("bf16"), hardware, calibration, 2.0
        )
        one = model.decode_step_time(1, CONTEXT)
        eight = model.decode_step_time(8, 8 * CONTEXT)
        published = PUBLISHED.get(gpu, {})
        table.add_row(
            gpu,
            calibration.name,
            f"{1 / one:.1f}",
            f"{published['tokens_per_s']:g}" if published else "-",
            f"{8 * one / eight:.2f}x",
            f"{published['gain_c8']:g}x" if published else "-",
            f"{model.prefill_time(1024) * 1000:.1f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
