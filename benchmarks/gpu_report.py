"""Tables from a real-GPU run of `benchmarks/gpu_vllm.py`: shared vs isolated, cold starts and
sleep-mode wake-up, memory, the peer tool beside `modelyard bench`, and `sim run` for the same
runs beside the measurements.

    python benchmarks/gpu_report.py [benchmarks/results/gpu-h200-2026-12-02] [--calibration F]

Every figure is read from the result files; the simulated ones come from `modelyard sim run
--json` on the run's own fleet file, with the same rate, requests, mix, lengths and seed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.catalog import Catalog
from modelyard.results import TargetSummary, read_bench
from modelyard.sim.perf import Hardware, StepModel, builtin_calibrations

DEFAULT = Path(__file__).resolve().parent / "results" / "gpu-h200-2026-12-02"
RATES = (4.0, 12.0, 24.0)  # total fleet rates of the run (gpu_vllm.RATES)
MIX = {"llama-8b": 0.95, "mistral-7b": 0.05}
PHASE_OF = {"llama-8b": "llama", "mistral-7b": "mistral"}
# Llama alone behind 1 and 4 API-server processes (gpu_vllm.FRONTEND_LOADS)
FRONTEND_PHASES = ("frontend1", "frontend4")
# the step-scan phases (gpu_vllm.phase_step_scan), the big-batch ones (gpu_vllm.BIG_BATCH_LOADS)
STEP_SCAN_PHASES = ("stepscan-async", "stepscan-sync")
BIG_BATCH_PHASES = ("bigbatch", "bigbatch-above512", "bigbatch-graphs")
PROFILE_PHASE = "stepscan-profile"  # gpu_vllm.phase_step_profile
# closed loops of 32 in / 256 out at 128-1,024 users: the step scans, the profile phase and its two
# earlier tries (the first with py-spy on the API server, the second profiling before the load)
CLOSED_LOOP_PHASES = (
    *STEP_SCAN_PHASES,
    PROFILE_PHASE,
    f"{PROFILE_PHASE}-missed",
    f"{PROFILE_PHASE}-first",
)
H200 = next(c for c in builtin_calibrations() if c.name == "vllm-v1-h200")  # the shipped profile
HOST_BOUND_KEY = "closed loops from the host-bound batch on, without a profiler, real / sim TPOT"
# where the engine core's main thread is, by the frames below vLLM's busy loop (py-spy --idle)
ENGINE_PARTS = (
    "GPU wait",  # get_output -> stream synchronize: the step's GPU work not yet done
    "forward launch",  # the model's forward called from the model runner (no full-graph replay)
    "other execute_model",  # input preparation, request state, graph replay
    "schedule",
    "update_from_output",
    "sample_tokens",
    "idle",  # waiting for requests
    "other",
)
SCHEDULER_PARTS = ("schedule", "update_from_output", "sample_tokens")  # frames of those names
SHOWN_PARTS = ENGINE_PARTS[:-1]  # the profile table's columns
# vLLM's per-step line (--enable-logging-iteration-details) and its 10-second stats line
ITERATION = re.compile(
    r"(\d\d:\d\d:\d\d) .*Iteration\(\d+\): (\d+) context requests, \d+ context tokens, "
    r"(\d+) generation requests"
)
STATS = re.compile(
    r"Avg prompt throughput: ([\d.]+) tokens/s, Avg generation throughput: ([\d.]+) tokens/s, "
    r"Running: (\d+) reqs"
)
# the seed article's claims for shared runtimes, quoted as the brief states them
SEED = {"p99 latency": "+78%", "cold start": "+350%", "OOMs": "+22%", "cost (isolated)": "-33%"}


def _pct(new: float, old: float) -> str:
    return f"{(new / old - 1) * 100:+.0f}%" if old else "n/a"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    return "\n".join([*lines, *(_row(r) for r in rows)])


def _load(root: Path, phase: str, label: str) -> dict[str, TargetSummary] | None:
    path = root / phase / f"bench-{label}.json"
    return read_bench(path).models if path.exists() else None


def _summary(root: Path, phase: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / phase / "summary.json").read_text())
    return data


def shared_vs_isolated(root: Path) -> str:
    rows = []
    for rate in RATES:
        shared = _load(root, "shared", f"rate{rate:g}")
        for model, share in MIX.items():
            alone = _load(root, PHASE_OF[model], f"rate{rate:g}")
            if not shared or not alone:
                continue
            a, s = alone[model], shared[model]

            def pair(real: float, shared_: float, digits: int) -> str:
                return f"{real:.{digits}f} / {shared_:.{digits}f} ({_pct(shared_, real)})"

            def preempted(summary: TargetSummary) -> float:
                server = summary.server
                return (server.preemptions or 0.0) if server else 0.0

            rows.append(
                [
                    f"{rate:g} ({rate * share:g} to {model})",
                    model,
                    pair(a.ttft_ms.p50, s.ttft_ms.p50, 1),
                    pair(a.ttft_ms.p99, s.ttft_ms.p99, 1),
                    pair(a.tpot_ms.p50, s.tpot_ms.p50, 2),
                    pair(a.tpot_ms.p99, s.tpot_ms.p99, 2),
                    f"{a.output_tokens_per_s:,.0f} / {s.output_tokens_per_s:,.0f}",
                    f"{a.goodput_rps:.2f} / {s.goodput_rps:.2f}",
                    f"{sum(a.errors.values())} / {sum(s.errors.values())}",
                    f"{a.errors.get('oom', 0)} / {s.errors.get('oom', 0)}",
                    f"{preempted(a):g} / {preempted(s):g}",
                ]
            )
    return _table(
        [
            "fleet req/s",
            "model",
            "TTFT p50 ms alone / shared",
            "TTFT p99 ms",
            "TPOT p50 ms",
            "TPOT p99 ms",
            "output tok/s",
            "goodput req/s",
            "errors",
            "OOMs",
            "preemptions",
        ],
        rows,
    )


def starts_and_memory(root: Path) -> str:
    llama, mistral, shared = (_summary(root, p) for p in ("llama", "mistral", "shared"))
    sleep = shared.get("sleep", {})
    rows = [
        [
            "llama-8b alone, compile cache cold",
            f"{llama['engines']['llama-8b']['cold_start_s']:.1f}",
        ],
        [
            "mistral-7b alone, compile cache cold",
            f"{mistral['first_start']['mistral-7b']['cold_start_s']:.1f}",
        ],
        [
            "mistral-7b alone, compile cache warm",
            f"{mistral['engines']['mistral-7b']['cold_start_s']:.1f}",
        ],
        [
            "shared: llama-8b (started first, cache warm)",
            f"{shared['engines']['llama-8b']['cold_start_s']:.1f}",
        ],
        [
            "shared: mistral-7b (started second)",
            f"{shared['engines']['mistral-7b']['cold_start_s']:.1f}",
        ],
        ["shared: both serving (`up` wall time)", f"{shared['up_wall_s']:.1f}"],
    ]
    if sleep:
        rows += [
            ["mistral-7b sleep level 1 (`/sleep`)", f"{sleep['sleep_s']:.2f}"],
            ["mistral-7b `/wake_up`", f"{sleep['wake_s']:.2f}"],
            ["mistral-7b wake-up to first token", f"{sleep['wake_to_first_token_s']:.2f}"],
        ]
    starts = _table(["start", "seconds"], rows)

    def used(summary: dict[str, Any], key: str = "gpu_serving") -> str:
        processes = summary[key]["processes"]
        gib = [int(p[1]) / 1024 for p in processes]
        return " + ".join(f"{g:.1f}" for g in gib) + f" = {sum(gib):.1f} GiB"

    memory = [
        ["llama-8b alone (fraction 0.9)", used(llama)],
        ["mistral-7b alone (fraction 0.9)", used(mistral)],
        ["shared (0.45 / 0.40)", used(shared)],
    ]
    if sleep:
        memory.append(["shared, mistral-7b asleep", used(sleep, "gpu_asleep")])
    return starts + "\n\n" + _table(["GPU memory (nvidia-smi, per process)", "used"], memory)


def peer(root: Path) -> str:
    rows = []
    # the llama phase's open-loop pair, then the sweep phase's closed-loop rounds (A B A B)
    peers = [
        (phase, vllm_file)
        for phase in ("llama", "sweep", "peer")
        for vllm_file in sorted((root / phase).glob("peer-vllm-bench-serve*.json"))
    ]
    for phase, vllm_file in peers:
        tag = vllm_file.stem.removeprefix("peer-vllm-bench-serve")
        mine = _load(root, phase, f"peer-modelyard{tag}")
        if mine is None:
            continue
        v = json.loads(vllm_file.read_text())
        m = mine["llama-8b"]
        doc = read_bench(root / phase / f"bench-peer-modelyard{tag}.json")
        label = f"{phase} {tag.lstrip('-')}" if tag else "open loop"
        # open loop: each tool drew its own Poisson schedule; its realized offered rate is
        # requests over the span of sends (duration less a median request's time, an estimate)
        v_offered = v["completed"] / (v["duration"] - v["median_e2el_ms"] / 1000)
        m_offered = m.completed / (doc.duration_s - m.e2e_ms.p50 / 1000)
        rows += [
            [
                f"`vllm bench serve` {label}",
                f"{v['median_ttft_ms']:.1f}",
                f"{v['median_tpot_ms']:.2f}",
                f"{v['request_throughput']:.2f}",
                f"{v_offered:.2f}",
            ],
            [
                f"`modelyard bench` {label}",
                f"{m.ttft_ms.p50:.1f} ({_pct(m.ttft_ms.p50, v['median_ttft_ms'])})",
                f"{m.tpot_ms.p50:.2f} ({_pct(m.tpot_ms.p50, v['median_tpot_ms'])})",
                f"{m.throughput_rps:.2f} ({_pct(m.throughput_rps, v['request_throughput'])})",
                f"{m_offered:.2f}",
            ],
        ]
    return _table(["tool", "TTFT p50 ms", "TPOT p50 ms", "req/s", "realized offered req/s"], rows)


def _change(old: float, new: float, digits: int) -> str:
    return f"{old:.{digits}f} → {new:.{digits}f} ({_pct(new, old)})"


def mps_vs_timesliced(root: Path, sliced_phase: str = "timesliced", mps_phase: str = "mps") -> str:
    """The same runs of both engines on one H200, time-sliced and as MPS clients (`timesliced`
    and `mps`: one machine, back to back; `shared` and `mps-open`: the open loop, on machines
    of two sessions)."""
    rows = []
    for path in sorted((root / sliced_phase).glob("bench-*.json")):
        label = path.stem.removeprefix("bench-")
        sliced, mps = _load(root, sliced_phase, label), _load(root, mps_phase, label)
        if sliced is None or mps is None:
            continue
        for name, a in sliced.items():
            b = mps.get(name)
            if b is None or a.completed == 0 or b.completed == 0:
                continue
            rows.append(
                [
                    label,
                    name,
                    str(a.completed),
                    _change(a.ttft_ms.p50, b.ttft_ms.p50, 1),
                    _change(a.tpot_ms.p50, b.tpot_ms.p50, 2),
                    _change(a.tpot_ms.p99, b.tpot_ms.p99, 2),
                    _change(a.output_tokens_per_s, b.output_tokens_per_s, 0),
                ]
            )
    return _table(
        [
            "run",
            "model",
            "requests",
            "TTFT p50 ms time-sliced → MPS",
            "TPOT p50 ms",
            "TPOT p99 ms",
            "output tok/s",
        ],
        rows,
    )


def bursts(root: Path) -> str:
    """The burst phase: every request of a run sent at once to one Llama engine. `vllm bench
    serve`'s detailed results carry each request's TTFT, so the table shows where in the run
    first tokens land: a front end that serves requests one at a time (FIFO) spreads them evenly
    (median ~ half the run), one that shares itself among all of them bunches them late."""
    rows = []
    for path in sorted((root / "burst").glob("burst*.json")):
        v = json.loads(path.read_text())
        ttfts = [t for t, e in zip(v["ttfts"], v["errors"], strict=True) if not e and t > 0]
        if not ttfts:
            continue
        prompts = v["completed"] + v["failed"]
        rows.append(
            [
                path.stem,
                "`vllm bench serve`",
                f"{v['completed']} / {v['failed']}",
                f"{v['duration']:.2f}",
                f"{v['duration'] / prompts * 1000:.2f}",
                " / ".join(f"{q:.2f}" for q in np.percentile(ttfts, [10, 50, 90])),
                f"{statistics.median(ttfts) / v['duration']:.2f}",
                f"{v['median_tpot_ms']:.1f}",
                f"{v['output_throughput']:.0f}",
            ]
        )
    for path in sorted((root / "burst").glob("bench-burst*.json")):
        doc = read_bench(path)
        for m in doc.models.values():
            rows.append(
                [
                    path.stem.removeprefix("bench-"),
                    "`modelyard bench`",
                    f"{m.completed} / {m.failed}",
                    f"{doc.duration_s:.2f}",
                    f"{doc.duration_s / max(m.completed + m.failed, 1) * 1000:.2f}",
                    f"- / {m.ttft_ms.p50 / 1000:.2f} / -",
                    f"{m.ttft_ms.p50 / 1000 / doc.duration_s:.2f}",
                    f"{m.tpot_ms.p50:.1f}",
                    f"{m.output_tokens_per_s:.0f}",
                ]
            )
    return _table(
        [
            "run",
            "client",
            "ok / failed",
            "duration s",
            "ms per request",
            "TTFT p10 / p50 / p90 s",
            "TTFT p50 / duration",
            "TPOT p50 ms",
            "output tok/s",
        ],
        rows,
    )


def prefill_probes(root: Path) -> str:
    """The prefill probes: one Llama user's TTFT (and Llama at 8 users) with the peer engine
    idle and then busy decoding, time-sliced and under MPS. busy / idle - 1 is the slowdown a
    step of that kind takes beside a busy peer (the calibration's factors)."""
    rows = []
    for phase in ("timesliced-prefill", "mps-prefill"):
        for idle_path in sorted((root / phase).glob("bench-*-idle.json")):
            label = idle_path.stem.removeprefix("bench-").removesuffix("-idle")
            idle = _load(root, phase, f"{label}-idle")
            busy = _load(root, phase, f"{label}-busy")
            if idle is None or busy is None:
                continue
            a, b = idle["llama-8b"], busy["llama-8b"]
            if a.completed == 0 or b.completed == 0:
                continue
            rows.append(
                [
                    phase.removesuffix("-prefill"),
                    label,
                    _change(a.ttft_ms.p50, b.ttft_ms.p50, 1),
                    _change(a.tpot_ms.p50, b.tpot_ms.p50, 2),
                ]
            )
    return _table(
        ["sharing", "Llama run", "TTFT p50 ms, peer idle → busy", "TPOT p50 ms, idle → busy"],
        rows,
    )


@dataclass(frozen=True)
class SimCase:
    phase: str
    label: str
    args: list[str]  # load, requests, mix and lengths, as the run had them


def _steps_per_second(log: Path) -> dict[str, tuple[int, int]]:
    """Each second of the engine log that holds pure-decode steps: (steps logged, the batch of
    its last step)."""
    seconds: dict[str, tuple[int, int]] = {}
    for line in log.read_text().splitlines():
        match = ITERATION.search(line)
        if match and match[2] == "0":
            count = seconds.get(match[1], (0, 0))[0]
            seconds[match[1]] = (count + 1, int(match[3]))
    return seconds


def _gpu_samples(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """nvidia-smi's samples by second: (SM MHz, W, utilization %)."""
    by_second: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    with path.open() as file:
        for row in list(csv.reader(file))[1:]:
            if len(row) >= 6:
                value = [float(row[i].split()[0]) for i in (1, 3, 5)]
                by_second[row[0].split()[1][:8]].append((value[0], value[1], value[2]))
    return by_second


def step_scans(root: Path) -> str:
    """Per closed loop of B users: the engine's step period (1 s / the pure-decode steps vLLM
    logged in each second whose batch is within 8 of B; median over those seconds), the
    client's TPOT median, the GPU's utilization, SM clock and power over those seconds, and the
    simulated decode step at mid-run context (the shipped vllm-v1-h200 profile)."""
    catalog = Catalog.load()
    cal = H200
    hardware = Hardware.for_gpu("h200", catalog.gpu("h200"), "bf16", cal)
    model = StepModel(catalog.model("llama-3.1-8b"), catalog.quant("bf16"), hardware, cal, 2.0)
    rows = []
    for phase in STEP_SCAN_PHASES:
        if not (root / phase).is_dir():
            continue
        seconds = _steps_per_second(root / phase / "engine-llama-8b.log")
        samples = _gpu_samples(root / phase / "gpu-samples.csv")
        for path in sorted(
            root.glob(f"{phase}/c*.json"), key=lambda p: int(p.stem[1:].split("-")[0])
        ):
            run = json.loads(path.read_text())
            users = int(run["max_concurrency"])
            full = [t for t, (_, batch) in seconds.items() if users - 8 <= batch <= users]
            gpu = [v for t in full for v in samples.get(t, [])]
            mid_run = (run["total_input_tokens"] + run["total_output_tokens"] / 2) / run[
                "completed"
            ]
            step_s = model.decode_step_time(users, users * mid_run)
            rows.append(
                [
                    phase,
                    str(users),
                    f"{statistics.median(1000 / seconds[t][0] for t in full):.1f}",
                    f"{run['median_tpot_ms']:.1f}",
                    f"{statistics.fmean(v[2] for v in gpu):.0f}",
                    f"{statistics.fmean(v[0] for v in gpu):.0f}",
                    f"{statistics.fmean(v[1] for v in gpu):.0f}",
                    f"{step_s * 1000:.1f}",
                ]
            )
    header = [
        "phase",
        "users",
        "engine step ms",
        "client TPOT p50 ms",
        "GPU busy %",
        "SM MHz",
        "W",
        "simulated step ms",
    ]
    return _table(header, rows)


def engine_step_periods(root: Path) -> str:
    """The big-batch phases' engine step period from vLLM's 10-second stats lines: running
    requests / generation tokens per second, in the windows with no prompt work and over 500
    requests running."""
    rows = []
    for phase in BIG_BATCH_PHASES:
        log = root / phase / "engine-llama-8b.log"
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            match = STATS.search(line)
            if match and float(match[1]) < 1 and int(match[3]) > 500:
                running, tokens_s = int(match[3]), float(match[2])
                rows.append(
                    [phase, str(running), f"{tokens_s:.0f}", f"{running / tokens_s * 1000:.1f}"]
                )
    return _table(["phase", "running", "generation tok/s", "engine step ms"], rows)


def engine_main_thread_split(collapsed: str) -> dict[str, float]:
    """py-spy's raw (collapsed) stacks of vLLM's engine-core process: the share of its main
    thread's samples in each of ENGINE_PARTS."""
    counts = dict.fromkeys(ENGINE_PARTS, 0)
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if "run_busy_loop" not in stack or not number.isdigit():
            continue
        frames = stack.split(";")
        names = [frame.split(" (")[0] for frame in frames]
        runner = [
            i
            for i, frame in enumerate(frames)
            if frame.startswith("execute_model (") and "model_runner" in frame
        ]
        if "get_output" in names and "synchronize" in names:
            part = "GPU wait"
        elif "_process_input_queue" in names:
            part = "idle"
        elif runner and names[runner[-1] + 1 : runner[-1] + 2] == ["_wrapped_call_impl"]:
            part = "forward launch"
        elif "execute_model" in names:
            part = "other execute_model"
        else:
            part = next((p for p in SCHEDULER_PARTS if p in names), "other")
        counts[part] += int(number)
    total = sum(counts.values())
    return {part: count / total for part, count in counts.items()} if total else {}


def main_thread_cpu(cpu_percent: dict[str, float], name: str) -> float | None:
    """The CPU % of the main thread (tid = pid) of the process named `name`, from a
    threads-*.json window ("pid/tid name" -> %)."""
    found = []
    for thread, percent in cpu_percent.items():
        ids, _, comm = thread.partition(" ")
        pid, _, tid = ids.partition("/")
        if pid == tid and comm.startswith(name):
            found.append(percent)
    return max(found) if found else None


def engine_core_profile(root: Path) -> str:
    """Per load of the profile phase: the client's TPOT, the CPU of the API server's and the
    engine core's main threads over the window (from /proc), and where py-spy found the engine
    core's main thread over the same window of the profiled twin run."""
    phase = root / PROFILE_PHASE
    rows = []
    for path in sorted(phase.glob("c*-clean.json"), key=lambda p: int(p.stem[1:].split("-")[0])):
        label = path.stem.removesuffix("-clean")
        run = json.loads(path.read_text())
        threads = json.loads((phase / f"threads-{label}-clean.json").read_text())
        cpu = threads.get("thread_cpu_percent", {})
        api, core = main_thread_cpu(cpu, "python"), main_thread_cpu(cpu, "VLLM::EngineCor")
        stacks = phase / f"pyspy-engine-{label}-pyspy.txt"
        split = engine_main_thread_split(stacks.read_text()) if stacks.exists() else {}
        rows.append(
            [
                str(run["max_concurrency"]),
                f"{run['median_tpot_ms']:.1f}",
                "-" if api is None else f"{api:.0f}",
                "-" if core is None else f"{core:.0f}",
                *(f"{split[p] * 100:.0f}" if split else "-" for p in SHOWN_PARTS),
            ]
        )
    header = [
        "users",
        "client TPOT p50 ms",
        "API server main thread CPU %",
        "engine core main thread CPU %",
        *(f"{p} %" for p in SHOWN_PARTS),
    ]
    return _table(header, rows)


def _cases(root: Path) -> list[SimCase]:
    cases = []
    phases = (
        "llama",
        "mistral",
        "shared",
        "sweep",
        "shared-closed",
        "check",
        "timesliced",
        "mps",
        "mps-open",
        "burst",
    )
    for phase in phases:
        for path in sorted((root / phase).glob("bench-*.json")):
            label = path.stem.removeprefix("bench-")
            if label.startswith("peer"):
                continue
            config = read_bench(path).config
            load = config["load"]
            requests = str(config["requests"])
            mix = ",".join(f"{k}={v * 100:g}" for k, v in config["workload"]["mix"].items())
            if load.get("concurrency"):
                shape = ["--concurrency", str(load["concurrency"])]
            else:
                shape = ["--rate", f"{config['workload']['arrivals']['rate']:g}"]
            lengths = [
                "--input-tokens",
                str(config["workload"]["input_tokens"]["mean"]),
                "--output-tokens",
                str(config["workload"]["output_tokens"]["mean"]),
            ]
            sharing = ["--sharing", "mps"] if phase.startswith("mps") else []
            cases.append(
                SimCase(
                    phase, label, [*shape, "--requests", requests, "--mix", mix, *lengths, *sharing]
                )
            )
    # `vllm bench serve`'s runs: every request at once (offline) or a closed loop at
    # --max-concurrency
    served = [
        (phase, path)
        for phase in ("burst", *FRONTEND_PHASES, *BIG_BATCH_PHASES, *CLOSED_LOOP_PHASES)
        for path in sorted(
            (root / phase).glob("c*.json" if phase in CLOSED_LOOP_PHASES else "*.json")
        )
        if not path.stem.startswith("bench-") and path.stem != "summary"
    ]
    for phase, path in served:
        v = json.loads(path.read_text())
        users = v.get("max_concurrency")
        load = ["--concurrency", str(users)] if users else ["--offline"]
        lengths = [
            "--input-tokens",
            str(round(v["total_input_tokens"] / max(v["completed"], 1))),
            "--output-tokens",
            str(round(v["total_output_tokens"] / max(v["completed"], 1))),
        ]
        requests = str(v["completed"] + v["failed"])
        cases.append(
            SimCase(
                phase, path.stem, [*load, "--requests", requests, "--mix", "llama-8b=100", *lengths]
            )
        )
    return cases


@dataclass(frozen=True)
class Measured:
    completed: int
    ttft_p50: float
    tpot_p50: float
    ttft_p99: float
    tpot_p99: float


def _measured(root: Path, case: SimCase) -> dict[str, Measured]:
    """A run's figures per model: `modelyard bench`'s results, or `vllm bench serve`'s (the
    burst phase's runs, one model)."""
    path = root / case.phase / f"{case.label}.json"
    if path.exists():
        v = json.loads(path.read_text())
        figures = [v[f"{k}_{m}_ms"] for m in ("ttft", "tpot") for k in ("median", "p99")]
        return {
            "llama-8b": Measured(v["completed"], figures[0], figures[2], figures[1], figures[3])
        }
    return {
        name: Measured(s.completed, s.ttft_ms.p50, s.tpot_ms.p50, s.ttft_ms.p99, s.tpot_ms.p99)
        for name, s in (_load(root, case.phase, case.label) or {}).items()
    }


# the runs `vllm-v1-h200` was fitted to (docs/simulator.md): the engine's knobs to Llama alone
# at 512/256 (c=1..64, three rates) and one user at four prompt lengths; the time-slicing
# factor to the shared closed-loop phase
FIT_ENGINE = {
    "llama": {"c1", "c8", "c32", "rate4", "rate12", "rate24"},
    "sweep": {"c4", "c16", "c64", "prompt128", "prompt1024", "prompt2048", "prompt4096"},
    "burst": {"burst1000-in128-out4"},  # the front end's cost per request
}


def fit_set(case: SimCase) -> str:
    """Which set a run belongs to for the shipped profile: fit or held out, and which."""
    if case.label in FIT_ENGINE.get(case.phase, set()):
        return "fit (front end): a burst of 1,000" if case.phase == "burst" else "fit: Llama alone"
    if case.phase == "shared-closed":
        # the time-slicing factors come from the timesliced-prefill probes since the fourth
        # session; before, they were chosen on this phase
        return "held out: shared, closed loop (time-slicing factors from the probes)"
    if case.phase == "mps":
        return "fit (MPS factors): both engines as MPS clients, closed loop"
    if case.phase == "llama" or case.phase == "sweep":
        return "held out: Llama alone, other loads and shapes"
    return {
        "mistral": "held out: Mistral alone",
        "shared": "held out: shared, open loop (95/5)",
        "timesliced": "held out: shared closed loop again (another machine, a later session)",
        "check": "held out: Mistral alone after the refit (check phase)",
        "mps-open": "held out: MPS, open loop (95/5) and 50/50 at 8 users",
        "burst": "held out: other bursts (every request at once)",
    }.get(case.phase, f"held out: {case.phase}")


def simulated(
    root: Path, calibration: list[Path], phases: set[str] | None = None
) -> tuple[str, dict[str, list[float]]]:
    rows = []
    errors: dict[str, list[float]] = {}
    for case in _cases(root):
        if phases is not None and case.phase not in phases:
            continue
        command = [
            sys.executable,
            "-m",
            "modelyard",
            "sim",
            "run",
            str(root / case.phase / "fleet.yaml"),
            *case.args,
            "--seed",
            "0",
            "--json",
            *(a for c in calibration for a in ("--calibration", str(c))),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        measured = _measured(root, case)
        if done.returncode != 0:
            # typer frames its usage errors in a box: keep the words
            words = [ln.strip("╭╮╰╯│─ ") for ln in done.stderr.splitlines()]
            reason = " ".join(w for w in words if w and not w.startswith("Usage")) or "failed"
            rows.append([case.phase, case.label, "-", f"not simulated: {reason}", "", "", ""])
            continue
        sim = {m["name"]: m for m in json.loads(done.stdout)["models"]}
        for name, real in measured.items():
            if name not in sim or real.completed == 0:
                continue
            s = sim[name]
            e_ttft = s["ttft_ms"]["p50"] / real.ttft_p50 - 1
            e_tpot = s["tpot_ms"]["p50"] / real.tpot_p50 - 1
            # by set: what the shipped H200 profile was fitted to, and what it was not
            errors.setdefault(f"{fit_set(case)} TTFT", []).append(abs(e_ttft))
            errors.setdefault(f"{fit_set(case)} TPOT", []).append(abs(e_tpot))
            # the band's runs: none with a profiler attached, none without the async scheduling
            # the profile models (stepscan-sync)
            excluded = case.phase in ("stepscan-sync", f"{PROFILE_PHASE}-first")
            excluded = excluded or case.label.endswith("-pyspy")
            users = int(case.args[1]) if case.args[0] == "--concurrency" else 0
            host_bound = users >= (H200.host_bound_batch or users + 1)
            if case.phase in CLOSED_LOOP_PHASES and host_bound and not excluded:
                # the band is on the real figure around the simulated one: real / sim - 1
                errors.setdefault(HOST_BOUND_KEY, []).append(
                    real.tpot_p50 / s["tpot_ms"]["p50"] - 1
                )
            rows.append(
                [
                    case.phase,
                    case.label,
                    name,
                    f"{real.ttft_p50:.1f} / {s['ttft_ms']['p50']:.1f} ({e_ttft * 100:+.0f}%)",
                    f"{real.tpot_p50:.2f} / {s['tpot_ms']['p50']:.2f} ({e_tpot * 100:+.0f}%)",
                    f"{real.ttft_p99:.1f} / {s['ttft_ms']['p99']:.1f}",
                    f"{real.tpot_p99:.2f} / {s['tpot_ms']['p99']:.2f}",
                ]
            )
    table = _table(
        [
            "phase",
            "run",
            "model",
            "TTFT p50 ms real / sim",
            "TPOT p50 ms real / sim",
            "TTFT p99 real / sim",
            "TPOT p99 real / sim",
        ],
        rows,
    )
    return table, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--calibration", type=Path, action="append", default=[])
    parser.add_argument("--no-sim", action="store_true", help="measurements only")
    parser.add_argument(
        "--phases", help="simulate only these phases' runs (comma-separated), e.g. for a grid"
    )
    args = parser.parse_args()
    root: Path = args.root
    print(f"# {root.name}\n")
    full = all((root / p).is_dir() for p in ("llama", "mistral", "shared"))
    if full:  # a later session's run may hold only some phases (e.g. bigbatch-graphs)
        print("## Shared (time-sliced, one H200) vs isolated (each alone on the H200)\n")
        print(shared_vs_isolated(root) + "\n")
        print("## Cold starts, sleep mode, memory\n")
        print(starts_and_memory(root) + "\n")
    if (root / "mps").is_dir() and (root / "timesliced").is_dir():
        print("## Time-sliced vs MPS: both engines on one H200, closed loop\n")
        print(mps_vs_timesliced(root) + "\n")
    if (root / "mps-open").is_dir():
        print("## Time-sliced (first session) vs MPS (third session): open loop, 95/5\n")
        print(mps_vs_timesliced(root, "shared", "mps-open") + "\n")
    if (root / "burst").is_dir():
        print("## Bursts: every request at once through vLLM's API server\n")
        print(bursts(root) + "\n")
    if (root / "mps-prefill").is_dir() or (root / "timesliced-prefill").is_dir():
        print("## Prefill and decode beside a busy peer\n")
        print(prefill_probes(root) + "\n")
    if full:
        print("## The peer: `vllm bench serve` beside `modelyard bench`, same server\n")
        print(peer(root) + "\n")
        print(
            "The seed article's claims for shared runtimes: "
            + ", ".join(f"{k} {v}" for k, v in SEED.items())
            + "\n"
        )
    if any((root / p).is_dir() for p in STEP_SCAN_PHASES):
        print("## Step scans: vLLM's logged engine steps beside the GPU's samples\n")
        print(step_scans(root) + "\n")
    if any((root / p).is_dir() for p in BIG_BATCH_PHASES):
        print("## Big batches: the engine's step period from its own stats lines\n")
        print(engine_step_periods(root) + "\n")
    if (root / PROFILE_PHASE).is_dir():
        print("## What the engine core does: its main thread, sampled by py-spy\n")
        print(engine_core_profile(root) + "\n")
    if args.no_sim:
        return
    phases = set(args.phases.split(",")) if args.phases else None
    table, errors = simulated(root, args.calibration, phases)
    print("## `sim run` beside the measurements\n")
    print(table + "\n")
    ratios = errors.pop(HOST_BOUND_KEY, [])
    if ratios:
        band = H200.host_bound_error_band or H200.error_band
        covered = "covers" if max(abs(r) for r in ratios) <= band else "does NOT cover"
        print(
            f"- {HOST_BOUND_KEY} median - 1 ({H200.host_bound_batch}+ users): "
            f"{min(ratios) * 100:+.0f}% to {max(ratios) * 100:+.0f}% ({len(ratios)} runs); "
            f"{H200.name}'s host_bound_error_band +-{band:.0%} {covered} the widest"
        )
    for key, values in errors.items():
        print(
            f"- {key} median: mean |error| {statistics.fmean(values) * 100:.1f}%, "
            f"max {max(values) * 100:.0f}% ({len(values)} runs)"
        )
    for metric in ("TTFT", "TPOT"):  # every set but the bursts, which only the burst phase has
        pooled = [
            v
            for key, values in errors.items()
            if key.endswith(metric) and "burst" not in key
            for v in values
        ]
        if pooled:
            print(
                f"- every model-run but the bursts, {metric} median: mean |error| "
                f"{statistics.fmean(pooled) * 100:.1f}% ({len(pooled)} runs)"
            )


if __name__ == "__main__":
    main()
