"""Fit the engine-profile calibrations to the FIT set of the validation set, never the held-out.

Device efficiency (mfu, fp8_mfu, bandwidth_efficiency) is a property of a GPU class and the
kernels an engine uses, so vLLM V0.6, vLLM V1 and SGLang share one set per class (FlashAttention
/ FlashInfer and cuBLAS); TensorRT-LLM has its own. Request-path and step costs are a property
of the engine version. Each parameter is searched in turn (coordinate descent over a shrinking
grid) to minimise the mean |log(simulated / published)| of the fit-set figures it touches.
Parameters no fit-set case constrains keep the stated prior. With --write the calibration files
are rewritten with the values, which parameters were fitted to which cases, and error bands
from the validation (held-out errors set the bands; they never move a parameter).

    python benchmarks/sim_fit.py [--rounds 3] [--write] [--only 'TensorRT-LLM ampere']
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelyard.catalog import Catalog
from modelyard.sim.calibration import Calibration, Provenance, load_calibration
from modelyard.sim.validation import Case, load_validation_set, replay

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "src" / "modelyard" / "sim" / "calibrations"
V1 = ("vllm-v1-hopper", "vllm-v1-ampere", "vllm-v1-default")  # vLLM >= 0.12
V08 = ("vllm-v0.8-hopper", "vllm-v0.8-ampere", "vllm-v0.8-default")  # vLLM 0.8-0.11 (V1 engine)
V06 = ("vllm-v0.6-hopper", "vllm-v0.6-ampere", "vllm-v0.6-default")
SGL = ("sglang-hopper", "sglang-default")
TRT = ("tensorrt-llm-hopper", "tensorrt-llm-ampere", "tensorrt-llm-default")
HOPPER_SHARED = ("vllm-v1-hopper", "vllm-v0.8-hopper", "vllm-v0.6-hopper", "sglang-hopper")
AMPERE_SHARED = (
    "vllm-v1-ampere",
    "vllm-v0.8-ampere",
    "vllm-v0.6-ampere",
    "vllm-v1-default",
    "vllm-v0.8-default",
    "vllm-v0.6-default",
    "sglang-default",
)


@dataclass
class Param:
    name: str
    files: tuple[str, ...]
    field: str
    low: float
    high: float
    value: float


PARAMS = [
    Param("hopper efficiency: bandwidth", HOPPER_SHARED, "bandwidth_efficiency", 0.4, 1.0, 0.8),
    Param("hopper efficiency: mfu", HOPPER_SHARED, "mfu", 0.1, 0.9, 0.5),
    Param("hopper efficiency: fp8 mfu", HOPPER_SHARED, "fp8_mfu", 0.05, 0.9, 0.4),
    Param("ampere efficiency: bandwidth", AMPERE_SHARED, "bandwidth_efficiency", 0.4, 1.0, 0.8),
    Param("ampere efficiency: mfu", AMPERE_SHARED, "mfu", 0.1, 0.9, 0.5),
    Param("vLLM >=0.12: step overhead ms", V1, "step_overhead_ms", 0.0, 10.0, 1.0),
    Param("vLLM 0.8-0.11: step overhead ms", V08, "step_overhead_ms", 0.0, 10.0, 1.0),
    Param("vLLM 0.8-0.11: per sequence ms", V08, "per_seq_overhead_ms", 0.0, 1.0, 0.01),
    Param("vLLM 0.8-0.11: request latency ms", V08, "request_latency_ms", 0.0, 200.0, 40.0),
    Param("vLLM 0.8-0.11: front end ms/request", V08, "frontend_ms_per_request", 0.0, 60.0, 5.0),
    Param("vLLM V0.6: step overhead ms", V06, "step_overhead_ms", 0.0, 10.0, 2.0),
    Param("SGLang: step overhead ms", SGL, "step_overhead_ms", 0.0, 10.0, 1.0),
    Param("SGLang: per sequence ms", SGL, "per_seq_overhead_ms", 0.0, 1.0, 0.01),
    Param("SGLang: request latency ms", SGL, "request_latency_ms", 0.0, 200.0, 20.0),
    Param("SGLang: front end ms/request", SGL, "frontend_ms_per_request", 0.0, 60.0, 2.0),
    Param(
        "TensorRT-LLM hopper: bandwidth",
        ("tensorrt-llm-hopper",),
        "bandwidth_efficiency",
        0.4,
        1.0,
        0.8,
    ),
    Param("TensorRT-LLM hopper: fp8 mfu", ("tensorrt-llm-hopper",), "fp8_mfu", 0.05, 0.9, 0.4),
    Param("TensorRT-LLM hopper: mfu", ("tensorrt-llm-hopper",), "mfu", 0.1, 0.9, 0.5),
    Param(
        "TensorRT-LLM ampere: bandwidth",
        ("tensorrt-llm-ampere",),
        "bandwidth_efficiency",
        0.4,
        1.0,
        0.8,
    ),
    Param("TensorRT-LLM ampere: mfu", ("tensorrt-llm-ampere",), "mfu", 0.1, 0.9, 0.5),
    Param("TensorRT-LLM: step overhead ms", TRT, "step_overhead_ms", 0.0, 10.0, 1.0),
    Param("TensorRT-LLM: per sequence ms", TRT, "per_seq_overhead_ms", 0.0, 1.0, 0.01),
    Param("TensorRT-LLM: request latency ms", TRT, "request_latency_ms", 0.0, 200.0, 20.0),
]

# Values no fit-set case constrains, and why they are what they are.
TRT_FRONTEND = (2.0, "assumed, not fitted: no TensorRT-LLM case loads its API server")
NO_FP8 = (None, "not measured: FP8 compute falls back to mfu against the FP8 peak (wider band)")
PRIORS: dict[str, dict[str, tuple[float | None, str]]] = {
    **{name: {"frontend_ms_per_request": TRT_FRONTEND} for name in TRT},
}
for _name in ("tensorrt-llm-ampere", "tensorrt-llm-default"):
    PRIORS[_name]["fp8_mfu"] = NO_FP8


# The request path: what no fit-set case of a release range separates from the rest. vLLM >=
# 0.12 takes the API server's costs measured on vLLM 0.24 on the lent H200 (vllm-v1-h200.yaml):
# its one fit-set source, infergrid-a100, has a single user, whose TTFT cannot tell the request
# path from the prefill's compute.
REQUEST_PATH = ("request_latency_ms", "frontend_ms_per_request", "per_seq_overhead_ms")
COPIES = {  # file: (source file, fields) for numbers a fit-set case cannot reach
    **{name: ("vllm-v1-h200", REQUEST_PATH) for name in V1},
    # vLLM 0.6 (V0): the nearest release range's request path
    **{
        f"vllm-v0.6-{kind}": (f"vllm-v0.8-{kind}", REQUEST_PATH)
        for kind in ("hopper", "ampere", "default")
    },
    # TensorRT-LLM on an unknown GPU: vLLM's Ampere efficiency (an H100's fraction of its much
    # higher peak says nothing about another GPU's). tensorrt-llm-ampere has its own fit since
    # 2026-12-02 (NVIDIA's v0.17 A100 throughput table, fit set); before, it copied vLLM's
    # Ampere values too (docs/simulator.md).
    "tensorrt-llm-default": ("vllm-v1-ampere", ("bandwidth_efficiency", "mfu")),
}


# What the fit does not touch, and where it comes from.
COMMON_NOTES = {
    "serial_fraction": "assumed 0.1, not fitted (the H200 harness measurement fits 0.2 for its "
    "own kernels; serving engines overlap better)",
    "contention_slowdown": "time-sliced sharing: two decoders on the lent H200 took 1.78-2.00x "
    "as long per step (harness-h200.yaml)",
    "mps_slowdown": "MPS sharing: vLLM on an A100-80GB, two processes at 60% SMs / 50% memory "
    "each vs dedicated, TPOT median +19.5% (gopebble.com case study, docs/simulator.md)",
    "load_bandwidth_gbps": "vLLM start-up logs ('Loading weights took 2.95 seconds' for 15 GiB)",
    "init_s": "torch.compile ~6 s plus CUDA graph capture (vLLM start-up logs)",
}
FRONTEND_QUEUE = (
    "processor-sharing: vLLM's API server is one asyncio process that interleaves every "
    "request it holds; 1,000 requests sent at once to vLLM 0.24 on the lent H200 reached the "
    "engine together, none early (benchmarks/results/gpu-h200-2026-12-02/burst, "
    "docs/simulator.md)"
)
HOST_BOUND = {
    "host_bound_batch": (
        "the lowest batch where vLLM 0.24.0 on the lent H200 missed by more than the "
        "calibration's band: client TPOT p50 at 256 users 17.2 ms vs 11.9 simulated (+45%, "
        "seventh session); at 256-1,024 users both the API server's and the engine core's main "
        "threads ran at 92-100% of a core, and above 512 (vLLM's max_cudagraph_capture_size, as "
        "its log prints it) the forward is launched from the CPU "
        "(benchmarks/results/gpu-h200-2026-12-04/stepscan-profile); assumed the same for this "
        "release range on other GPUs (not measured)"
    ),
    "host_bound_error_band": (
        "the widest miss from 256 users on, over the eleven runs without a profiler and with "
        "vLLM's default async scheduling on the lent H200 (2026-12-03/04): client TPOT p50 at 640"
        " users 55.4 ms vs 27.1 simulated (+105%); the quietest came within 6% "
        "(benchmarks/gpu_report.py on benchmarks/results/gpu-h200-2026-12-03 and -04; "
        'docs/benchmarks.md, "What the engine core does from 256 sequences on")'
    ),
}
ENGINE_NOTES = {
    "vllm-v1": {"frontend_queue": FRONTEND_QUEUE, **HOST_BOUND},
    "vllm-v0.8": {"frontend_queue": FRONTEND_QUEUE},
    "vllm-v0.6": {
        "frontend_queue": FRONTEND_QUEUE + "; V0's is assumed the same",
        "scheduler": "vLLM 0.6 (V0) without chunked prefill (its default below 32K context): a "
        "step runs prefills or decodes, prefills first",
        "max_num_seqs": "vLLM 0.6 default (256)",
    },
    "sglang": {
        "scheduler": "SGLang runs a prefill batch before decoding when it can admit requests",
        "max_num_batched_tokens": "SGLang's chunked prefill size on 80 GB GPUs (8192), assumed",
        "max_num_seqs": "assumed 2048 (SGLang sizes max running requests from its KV pool)",
        "gpu_memory_utilization": "SGLang's mem_frac 0.88 at TP 1 (sgl-project/sglang "
        "benchmark/benchmark_vllm_060/README.md)",
    },
    "tensorrt-llm": {
        "admission": "TensorRT-LLM's default capacity scheduler policy GUARANTEED_NO_EVICT",
        "max_num_batched_tokens": "assumed 8192 (trtllm-bench tunes max_num_tokens itself)",
        "max_num_seqs": "assumed 2048 (trtllm-bench tunes max_batch_size itself)",
        "gpu_memory_utilization": "kv_cache_free_gpu_mem_fraction 0.95, used 'in many cases' by "
        "the TensorRT-LLM performance overview",
    },
}


# Profiles fitted elsewhere, to this project's own runs (`sim calibrate`): replayed like the others
# (a case picks its profile by engine, version and GPU) but never rewritten here.
FITTED_ELSEWHERE = frozenset({"vllm-v1-h200"})


def load_files() -> dict[str, Calibration]:
    return {
        c.name: c
        for c in (load_calibration(p) for p in sorted(FOLDER.glob("*.yaml")))
        if c.engine in ("vllm", "sglang", "tensorrt-llm") and c.name != "cpu-1core-measured"
    }


def apply(base: dict[str, Calibration]) -> dict[str, Calibration]:
    current = dict(base)
    for param in PARAMS:
        for name in param.files:
            current[name] = current[name].model_copy(update={param.field: param.value})
    for name, fields in PRIORS.items():
        current[name] = current[name].model_copy(update={f: v for f, (v, _) in fields.items()})
    for name, (origin, fields) in COPIES.items():
        current[name] = current[name].model_copy(
            update={f: getattr(current[origin], f) for f in fields}
        )
    return current


def loss(cases: list[Case], calibrations: dict[str, Calibration], catalog: Catalog) -> float:
    errors = []
    for case in cases:
        result = replay(case, tuple(calibrations.values()), catalog=catalog)
        errors += [abs(math.log(c.simulated / c.published)) for c in result.comparisons]
    return statistics.fmean(errors) if errors else 0.0


def users(
    param: Param, cases: list[Case], base: dict[str, Calibration], catalog: Catalog
) -> list[Case]:
    """The fit cases whose calibration is one of the files the parameter sets."""
    return [c for c in cases if replay_name(c, base, catalog) in param.files]


def replay_name(case: Case, calibrations: dict[str, Calibration], catalog: Catalog) -> str:
    from modelyard.sim.validation import case_calibration

    return case_calibration(case, tuple(calibrations.values())).name


def fit(rounds: int, only: str = "") -> tuple[dict[str, Calibration], dict[str, list[str]]]:
    """Coordinate descent over PARAMS (only those whose name starts with `only`, when given;
    the others keep the values in the files)."""
    validation = load_validation_set()
    fit_cases = validation.split("fit")
    catalog = Catalog.load()
    base = load_files()
    for param in PARAMS:  # start from the values in the files (the last fit)
        current = getattr(base[param.files[0]], param.field)
        if current is not None:
            param.value = float(current)
    touched = {p.name: users(p, fit_cases, apply(base), catalog) for p in PARAMS}
    for round_index in range(rounds):
        spread = 0.5 / (2**round_index)
        for param in PARAMS:
            cases = touched[param.name]
            if not cases or not param.name.startswith(only):
                continue
            candidates = {param.value}
            for k in (-1.0, -0.5, 0.5, 1.0):
                candidates.add(min(param.high, max(param.low, param.value * (1 + k * spread))))
            if param.low == 0.0:
                candidates.add(0.0)
            scored = []
            for value in sorted(candidates):
                param.value = value
                scored.append((loss(cases, apply(base), catalog), value))
            best_loss, param.value = min(scored)
            label = f"round {round_index + 1} {param.name:40s}"
            print(f"{label} = {param.value:9.4g}  loss {best_loss:.4f}")
    fitted_on = {p.name: sorted({c.source for c in touched[p.name]}) for p in PARAMS}
    fitted = apply(base)
    # a file is measured on the GPUs of the fit-set cases replayed with it (its own cases, not
    # those of a file it shares a device efficiency with)
    gpus: dict[str, set[str]] = {}
    for case in fit_cases:
        gpus.setdefault(replay_name(case, fitted, catalog), set()).add(case.gpu)
    for name in fitted:
        if name not in FITTED_ELSEWHERE:
            measured = sorted(gpus.get(name, set()))
            fitted[name] = fitted[name].model_copy(update={"measured_on": measured})
    return fitted, fitted_on


def bands(calibrations: dict[str, Calibration]) -> tuple[dict[str, float], float]:
    """Error bands from the validation: a calibration's fit-set mean |error| where it was
    measured (at least 10%), and the held-out mean |error| of cases on unmeasured GPUs for every
    unmeasured use. Held-out errors set the bands only; they move no parameter."""
    validation = load_validation_set()
    catalog = Catalog.load()
    per_file: dict[str, list[float]] = {}
    unmeasured: list[float] = []
    for which in ("fit", "held-out"):
        for case in validation.split(which):  # type: ignore[arg-type]
            done = replay(case, tuple(calibrations.values()), catalog=catalog)
            errors = [abs(c.error) for c in done.comparisons]
            measured = case.gpu in calibrations[done.calibration].measured_on
            if which == "fit" and measured:
                per_file.setdefault(done.calibration, []).extend(errors)
            if which == "held-out" and not measured:
                unmeasured.extend(errors)

    def up(x: float) -> float:
        return math.ceil(x * 20) / 20  # to the next 5%

    measured_bands = {name: up(max(statistics.fmean(e), 0.10)) for name, e in per_file.items()}
    return measured_bands, up(statistics.fmean(unmeasured)) if unmeasured else 0.35


def write(
    calibrations: dict[str, Calibration], fitted_on: dict[str, list[str]], only: str = ""
) -> None:
    """Rewrite the calibration files (with `only`: just the files its parameters set)."""
    today = datetime.date.today()
    measured_bands, unmeasured_band = bands(calibrations)
    print(f"bands: measured {measured_bands}; unmeasured {unmeasured_band:.0%}")
    files = {n for p in PARAMS if p.name.startswith(only) for n in p.files}
    for name, calibration in calibrations.items():
        if name in FITTED_ELSEWHERE or (only and name not in files):
            continue
        notes: dict[str, str] = {}
        for param in PARAMS:
            if name in param.files:
                sources = fitted_on[param.name]
                notes[param.field] = (
                    f"fitted ({param.name}) to fit-set sources {', '.join(sources)}"
                    if sources
                    else f"not constrained by any fit-set case; start value {param.value:g}"
                )
        for field, (_, why) in PRIORS.get(name, {}).items():
            notes[field] = why
        origin, fields = COPIES.get(name, ("", ()))
        for field in fields:
            notes[field] = (
                f"measured: vLLM 0.24 on the lent H200, copied from {origin} (no fit-set case "
                "of this release range separates it from the prefill's compute)"
                if origin in FITTED_ELSEWHERE
                else f"not constrained by any fit-set case: copied from {origin}"
            )
        notes.update(COMMON_NOTES)
        for prefix, extra in ENGINE_NOTES.items():
            if name.startswith(prefix):
                notes.update(extra)
        notes["error_band"] = (
            "fit-set mean |error| of this file's cases on its measured GPUs"
            if name in measured_bands
            else "no fit-set case on a measured GPU: default"
        )
        notes["unmeasured_error_band"] = (
            "held-out mean |error| of all held-out cases on GPUs their calibration was not "
            "measured on"
        )
        body = calibration.model_copy(
            update={
                "error_band": measured_bands.get(name, 0.25),
                "unmeasured_error_band": max(unmeasured_band, measured_bands.get(name, 0.25)),
                "parameters": notes,
                "provenance": Provenance(
                    where=(
                        f"{calibration.engine} {calibration.versions} on "
                        f"{', '.join(calibration.measured_on) or 'no GPU of its own'}: "
                        "published measurements (catalog/validation.yaml, fit set); see "
                        "`parameters` for each number"
                    ),
                    how="fitted by benchmarks/sim_fit.py --write to the fit set of "
                    "src/modelyard/catalog/validation.yaml (held-out sources never used)",
                    when=today,
                    source="src/modelyard/catalog/validation.yaml",
                ),
            }
        ).model_dump(mode="json", exclude_none=True)
        header = (
            f"# {name}: written by `python benchmarks/sim_fit.py --write`; see docs/simulator.md\n"
        )
        (FOLDER / f"{name}.yaml").write_text(
            header + yaml.safe_dump(body, sort_keys=False, width=100)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument(
        "--only",
        default="",
        help="fit only the parameters whose name starts with this (e.g. 'TensorRT-LLM ampere'); "
        "with --write, rewrite only the files they set",
    )
    args = parser.parse_args()
    calibrations, fitted_on = fit(args.rounds, args.only)
    for param in PARAMS:
        sources = ", ".join(fitted_on[param.name]) or "-"
        print(f"{param.name:40s} {param.value:9.4g}  fitted to {sources}")
    if args.write:
        write(calibrations, fitted_on, args.only)


if __name__ == "__main__":
    main()
