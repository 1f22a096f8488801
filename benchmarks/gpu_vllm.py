"""Real vLLM on the lent H200: each model isolated, both shared on the one GPU, cold starts,
sleep-mode wake-up, and `vllm bench serve` beside `modelyard bench` — measured with modelyard's
own tools (`modelyard up` through the vLLM adapter, `modelyard bench`, nvidia-smi).

Runs ON the GPU machine, in the repository root, after `make gpu-bundle` here built .gpu/.
Each device call carries at most 64 MiB, so the bundle travels one part a call (the machine keeps
/tmp while it is warm, 30 s after a call):

    call 1..N   carry [.gpu/manifest.json, .gpu/vllm-0.24.0.tar.xz.partK] (.gpu/models with
                the first): python3 benchmarks/gpu_vllm.py unpack
    call N+1    python3 benchmarks/gpu_vllm.py check
    call N+2    python3 benchmarks/gpu_vllm.py run llama mistral --out $OUT
    call N+3    python3 benchmarks/gpu_vllm.py run shared --out $OUT
    call N+4    python3 benchmarks/gpu_vllm.py run sweep --out $OUT
    call N+5    python3 benchmarks/gpu_vllm.py run peer shared-closed --out $OUT

`run` writes each phase's files under /tmp/gpu/results/PHASE/ and packs everything measured so far
into $OUT/gpu_vllm_results.tar.gz. Phases (each starts its engines with `modelyard up` and stops
them with `modelyard down`, whatever happens):

- llama:   Llama-3.1-8B alone (memory fraction 0.9): cold start; closed loop at concurrency
           1, 8, 32; open loop at the 95/5 mix's primary share of each rate; `vllm bench serve`
           and `modelyard bench` at one rate, back to back, same shape.
- mistral: Mistral-7B-v0.2 alone: cold start, then a second start with vLLM's compile cache warm
           (as every start of the shared phase has it); open loop at the fallback's share.
- shared:  both on the GPU (time-sliced, fractions 0.45 / 0.40, started one after the other):
           cold starts; open loop at each rate with the 95/5 mix; then the fallback's sleep mode:
           /sleep level 1, /wake_up, first token after waking, against its cold start.
- sweep:   Llama-3.1-8B alone again: the closed-loop peer comparison (A B A B), a batch sweep,
           a prompt-length sweep and held-out shapes (phase_sweep says which).
- peer:    the closed-loop peer comparison on its own engine, three rounds each way, a new
           `vllm bench serve` seed each round.
- shared-closed: both models time-sliced, closed loop (95/5 mix at 1, 8, 32 users; 50/50 at 16).
- check:   Mistral-7B alone after the H200 profile's refit: closed loop and other shapes, all
           held out of the fit.
- mps / timesliced / mps-open: the shared-closed runs under MPS and time-sliced, back to back;
           the shared open loop under MPS (held out of the MPS fit).
- burst:   Llama-3.1-8B alone, every request sent at once (BURSTS), through `vllm bench serve`
           and `modelyard bench`: the API server's front end under a burst.
- mps-prefill / timesliced-prefill: both models shared; one Llama user's prefill time (and
           Llama at 8 users) with Mistral idle, then with Mistral busy decoding in the background.
- frontend1 / frontend4: Llama alone behind 1 and 4 API-server processes, hundreds of streams.
- bigbatch: Llama alone, decode batches of 128-1,024 sequences; bigbatch-above512 and
           bigbatch-graphs: its loads above 512 sequences with vLLM's CUDA graphs to 512 (the
           default) and to 1,024, back to back an A/B of the graphs alone.

Prompts are token ids of exact length (512 in, 256 out, ignore_eos), weights random
(`--load-format dummy`, timing does not depend on their values).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPU = Path(os.environ.get("MODELYARD_GPU_ROOT", "/tmp/gpu"))
SITE = GPU / "site"
SPARE = GPU / "spare"  # on the path only with GPU_VLLM_SPARE=1
MODELS = GPU / "models"
RESULTS = GPU / "results"
BUNDLE = ROOT / ".gpu"

INPUT_TOKENS = 512
OUTPUT_TOKENS = 256
# total request rates of the fleet (req/s); the isolated runs get each model's share
RATES = (4.0, 12.0, 24.0)
MIX = {"llama-8b": 0.95, "mistral-7b": 0.05}
CONCURRENCY = (1, 8, 32)
PEER_RATE = 8.0
PEER_REQUESTS = 200
PEER_CONCURRENCY = 8
# the sweep phase: closed-loop users (batch sizes), prompt lengths at one user, and held-out
# (input tokens, output tokens, req/s) shapes
SWEEP_USERS = (1, 4, 16, 64, 128)
SWEEP_PROMPTS = (128, 1024, 2048, 4096)
HELD_OUT = ((2048, 128, 3.0), (2048, 128, 8.0), (128, 512, 6.0))
SHARED_USERS = (1, 8, 32)  # the shared-closed phase, 95/5 mix
# the check phase (Mistral alone, after the fit): closed-loop users, and open-loop shapes
CHECK_USERS = (1, 8, 32)
CHECK_SHAPES = ((1024, 256, 10.0), (256, 1024, 4.0))
# the burst phase: every request sent at once through vLLM's API server (as GPUStack's
# throughput pages ran `vllm bench serve` with no rate and no concurrency limit); (prompts,
# input tokens, output tokens)
BURSTS = ((100, 128, 4), (300, 128, 4), (1000, 128, 4), (1000, 128, 128), (500, 2000, 100))
# the front-end phases: Llama alone behind 1 and then FRONTEND_SERVERS API-server processes
# (`--api-server-count`), the same loads each time: (label, prompts, users or None for all at
# once, input tokens, output tokens); per-token output work in the API server is the difference
FRONTEND_SERVERS = 4
FRONTEND_LOADS = (
    ("c64-in128-out256", 256, 64, 128, 256),
    ("c256-in128-out256", 768, 256, 128, 256),
    ("burst1000-in128-out128", 1000, None, 128, 128),
    ("c1024-in128-out512", 1024, 1024, 128, 512),
)
# the big-batch phase: Llama alone, closed loops of hundreds of users whose decode steps are
# compute-bound in the linear layers while attention reads a large KV cache (the two overlap
# or add up); a control where both are memory-bound (c128 x 2048 in); the c1024 run again
BIG_BATCH_LOADS = (
    ("c768-in512-out512", 768, 768, 512, 512),
    ("c384-in1024-out512", 768, 384, 1024, 512),
    ("c128-in2048-out512", 256, 128, 2048, 512),
    ("c1024-in128-out512", 1024, 1024, 128, 512),
)
# the step scans: Llama alone with vLLM logging every engine step (its batch and the time the
# engine core waited on it), a closed loop of B users at each B, short prompts so the KV cache
# stays small and the batch's linear layers are what grows; once with async scheduling (vLLM's
# default) and once without, while nvidia-smi samples SM clock, power and utilization: whether
# the steps above 512 sequences are bound by the GPU's compute, its clocks, or the CPU
STEP_SCAN_BATCHES = (128, 256, 512, 640, 768, 1024)
STEP_SCAN_INPUT = 32
STEP_SCAN_OUTPUT = 256


def step_scan_load(users: int) -> tuple[str, int, int | None, int, int]:
    """One step-scan load for `served_loads`: `users` users, one request each."""
    return (
        f"c{users}-in{STEP_SCAN_INPUT}-out{STEP_SCAN_OUTPUT}",
        users,
        users,
        STEP_SCAN_INPUT,
        STEP_SCAN_OUTPUT,
    )


# the prefill probes: one Llama user at each prompt length (PROBE_OUTPUT tokens out), with the
# Mistral engine idle and then busy decoding (BUSY_USERS users, BUSY_INPUT in / BUSY_OUTPUT out)
PROBE_PROMPTS = (512, 2048, 4096)
PROBE_OUTPUT = 16
BUSY_USERS = 32
BUSY_INPUT = 128
BUSY_OUTPUT = 1024
PHASES = (
    "llama",
    "mistral",
    "shared",
    "sweep",
    "peer",
    "shared-closed",
    "check",
    "mps",
    "timesliced",
    "mps-open",
    "burst",
    "mps-prefill",
    "timesliced-prefill",
    "frontend1",
    f"frontend{FRONTEND_SERVERS}",
    "bigbatch",
    "bigbatch-above512",
    "bigbatch-graphs",
    "stepscan-async",
    "stepscan-sync",
    "stepscan-profile",
)
MPS_DIR = GPU / "mps"  # the MPS control daemon's pipe and log directories (the mps phase)
SECONDS_PER_LEVEL = 25.0  # requests per level = rate x this (at least MIN_REQUESTS)
MIN_REQUESTS = 8
SLO = {"ttft_ms": 800.0, "tpot_ms": 60.0}  # examples/fleet.yaml's SLO, for goodput


@dataclass(frozen=True)
class Model:
    name: str  # served (fleet) name
    catalog: str
    fraction_alone: float
    fraction_shared: float


LLAMA = Model("llama-8b", "llama-3.1-8b", 0.9, 0.45)
MISTRAL = Model("mistral-7b", "mistral-7b-instruct-v0.2", 0.9, 0.40)


def env() -> dict[str, str]:
    """The environment modelyard and the vLLM servers run in."""
    path = [str(ROOT / "src"), str(SITE)]
    if os.environ.get("GPU_VLLM_SPARE") == "1":
        path.append(str(SPARE))
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": ":".join(path),
        "PYTHONUNBUFFERED": "1",
        "MODELYARD_VLLM_PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_SERVER_DEV_MODE": "1",  # /sleep and /wake_up
        # vLLM 0.24's sampler imports flashinfer unless told not to; the bundle leaves it in spare
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
    }


def unpack() -> None:
    """Keep the bundle parts carried in this call (checked against the manifest) under
    /tmp/gpu/parts; once a stream's parts are all there, join and unpack it into /tmp/gpu/site."""
    parts_dir = GPU / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    for part in sorted(BUNDLE.glob("*.tar.xz.part*")):
        expected = {p["file"]: p["sha256"] for ps in manifest["streams"].values() for p in ps}
        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        if expected.get(part.name) != digest:
            raise SystemExit(f"{part.name}: sha256 {digest} is not the manifest's")
        shutil.copy(part, parts_dir / part.name)
        print(f"kept {part.name} ({part.stat().st_size / 1e6:.1f} MB)")
    if (BUNDLE / "models").is_dir():
        shutil.copytree(BUNDLE / "models", MODELS, dirs_exist_ok=True)
        print(f"models: {', '.join(sorted(p.name for p in MODELS.iterdir()))}")
    for stream, parts in manifest["streams"].items():
        marker = GPU / f"{stream}.unpacked"
        have = [parts_dir / p["file"] for p in parts if (parts_dir / p["file"]).exists()]
        if marker.exists():
            print(f"{stream}: unpacked already")
            continue
        if len(have) < len(parts):
            print(f"{stream}: {len(have)} of {len(parts)} parts here")
            continue
        start = time.monotonic()
        into = SITE if stream == "site" else SPARE
        into.mkdir(parents=True, exist_ok=True)
        join = subprocess.Popen(["cat", *map(str, have)], stdout=subprocess.PIPE)
        xz = shutil.which("xz")
        if xz:  # multi-threaded where the machine has xz; Python's lzma otherwise
            untar = subprocess.run(
                f"{xz} -dc -T0 | tar -C {into} -xf -", shell=True, stdin=join.stdout, check=False
            )
            ok = untar.returncode == 0
        else:
            with tarfile.open(fileobj=join.stdout, mode="r|xz") as archive:
                archive.extractall(into, filter="tar")
            ok = True
        if join.wait() != 0 or not ok:
            raise SystemExit(f"{stream}: unpacking failed")
        marker.touch()
        for part in have:
            part.unlink()
        print(f"{stream}: unpacked {len(parts)} parts in {time.monotonic() - start:.1f} s")


def check() -> None:
    """Versions, the GPU, and the modules the server imports."""
    code = (
        "import torch, vllm, transformers; "
        "print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), "
        "torch.cuda.get_device_name(0)); print('vllm', vllm.__version__, 'transformers', "
        "transformers.__version__); import vllm.entrypoints.openai.api_server, "
        "vllm.v1.engine.core, vllm.device_allocator.cumem, vllm.benchmarks.serve; "
        "print('imports ok')"
    )
    subprocess.run([sys.executable, "-c", code], env=env(), check=False)
    subprocess.run(["nvidia-smi"], check=False)


def _run(command: list[str], log: Path, timeout_s: float) -> int:
    """Run a command, its output to `log` and to ours; a failure is returned, not raised."""
    print("$", " ".join(command), flush=True)
    with log.open("a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        try:
            done = subprocess.run(
                command, env=env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            out.write(f"timed out after {timeout_s:.0f} s\n")
            print(f"  timed out after {timeout_s:.0f} s", flush=True)
            return 124
    if done.returncode != 0:
        print(f"  exit {done.returncode}; see {log}", flush=True)
    return done.returncode


def _modelyard(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelyard", *args]


def fleet_yaml(
    name: str,
    models: list[Model],
    shared: bool,
    sleep_mode: set[str],
    extra_args: tuple[str, ...] = (),
) -> str:
    lines = [f"name: {name}", "models:"]
    for model in models:
        args = ["--load-format", "dummy", *extra_args]
        if model.name in sleep_mode:
            args.append("--enable-sleep-mode")
        lines += [
            f"  {model.name}:",
            f"    catalog: {model.catalog}",
            "    engine: vllm",
            "    gpu: h200",
            "    max_model_len: 8192",
            f"    weights: {MODELS / model.catalog}",
            f"    engine_args: {json.dumps(args)}",
        ]
        if not shared:
            lines.append(f"    gpu_memory_utilization: {model.fraction_alone}")
    if shared:
        fractions = ", ".join(f"{m.name}: {m.fraction_shared}" for m in models)
        names = ", ".join(m.name for m in models)
        lines += [
            "placement:",
            "  shared:",
            f"    - {{gpu: h200, models: [{names}], memory_fractions: {{{fractions}}}}}",
        ]
    names = ", ".join(m.name for m in models)
    lines += [
        f"routes: [{{targets: [{names}]}}]",
        f"slo: {{ttft_p99: {SLO['ttft_ms']:g}ms, tpot_p99: {SLO['tpot_ms']:g}ms}}",
    ]
    return "\n".join(lines) + "\n"


def nvidia_smi() -> dict[str, Any]:
    def query(what: str, fields: str) -> list[list[str]]:
        try:
            done = subprocess.run(
                ["nvidia-smi", f"--query-{what}={fields}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [[f"nvidia-smi: {exc}"]]
        return [[c.strip() for c in line.split(",")] for line in done.stdout.strip().splitlines()]

    return {
        "gpu": query("gpu", "name,memory.used,memory.total,utilization.gpu"),
        "processes": query("compute-apps", "pid,used_memory"),
    }


def _http(url: str, body: bytes | None = None, timeout_s: float = 120.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _engines(state: Path) -> dict[str, dict[str, Any]]:
    path = state / "state.json"
    if not path.exists():
        return {}
    return {e["model"]: e for e in json.loads(path.read_text())["engines"]}


class Phase:
    def __init__(
        self,
        name: str,
        models: list[Model],
        shared: bool,
        sleep_mode: set[str],
        extra_args: tuple[str, ...] = (),
        out: Path | None = None,
    ):
        self.name = name
        self.out = out
        self.dir = RESULTS / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.state = self.dir / "state"
        self.log = self.dir / "phase.log"
        self.fleet = self.dir / "fleet.yaml"
        self.fleet.write_text(fleet_yaml(f"h200-{name}", models, shared, sleep_mode, extra_args))
        self.summary: dict[str, Any] = {
            "phase": name,
            "date": time.strftime("%Y-%m-%d"),
            "fleet": self.fleet.read_text(),
            "gpu_idle": nvidia_smi(),
            "host": host_info(),
            "runs": [],
            "errors": [],
        }

    def up(self) -> bool:
        start = time.monotonic()
        code = _run(
            _modelyard("up", str(self.fleet), "--state-dir", str(self.state), "--timeout", "900"),
            self.log,
            1000,
        )
        self.summary["up_wall_s"] = time.monotonic() - start
        self.summary["engines"] = _engines(self.state)
        self.summary["gpu_serving"] = nvidia_smi()
        if code != 0:
            self.summary["errors"].append(f"up exited {code}")
            for engine in self.summary["engines"].values():
                with contextlib.suppress(OSError):
                    self.summary["errors"].append(Path(engine["log"]).read_text()[-4000:])
        for name, engine in self.summary["engines"].items():
            print(f"  {name}: cold start {engine.get('cold_start_s')} s", flush=True)
        return code == 0

    def bench_command(
        self,
        label: str,
        *args: str,
        requests: int,
        input_tokens: int = INPUT_TOKENS,
        output_tokens: int = OUTPUT_TOKENS,
    ) -> list[str]:
        """`modelyard bench` against this phase's fleet, its results in bench-LABEL.json."""
        return _modelyard(
            "bench",
            "--fleet",
            str(self.fleet),
            "--state-dir",
            str(self.state),
            "--requests",
            str(requests),
            "--input-tokens",
            str(input_tokens),
            "--output-tokens",
            str(output_tokens),
            "--slo-ttft-ms",
            f"{SLO['ttft_ms']:g}",
            "--slo-tpot-ms",
            f"{SLO['tpot_ms']:g}",
            "--engine",
            "vllm",
            "--results",
            str(self.dir / f"bench-{label}.json"),
            *args,
        )

    def bench(
        self,
        label: str,
        *args: str,
        requests: int,
        timeout_s: float = 600,
        input_tokens: int = INPUT_TOKENS,
        output_tokens: int = OUTPUT_TOKENS,
    ) -> None:
        command = self.bench_command(
            label,
            *args,
            requests=requests,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        self.record(label, command, f"bench-{label}.json", timeout_s)

    def note_run(
        self, label: str, command: list[str], code: int, wall_s: float, results: str
    ) -> None:
        self.summary["runs"].append(
            {"label": label, "command": command, "exit": code, "wall_s": wall_s, "results": results}
        )

    def record(self, label: str, command: list[str], results: str, timeout_s: float) -> None:
        """Run one benchmark command and note it in the summary (and in $OUT at once)."""
        start = time.monotonic()
        code = _run(command, self.log, timeout_s)
        self.note_run(label, command, code, time.monotonic() - start, results)
        if self.out is not None:  # a call cut off at its limit still brings back every run so far
            self.write()
            pack(self.out)

    def closed_loop(self, users: tuple[int, ...]) -> None:
        """Closed loop at each number of users, 512 in / 256 out."""
        for count in users:
            self.bench(
                f"c{count}",
                "--concurrency",
                str(count),
                "--warmup",
                str(min(count, 8)),
                requests=max(count * 3, 12),
            )

    def one_user(
        self,
        prompts: tuple[int, ...],
        *args: str,
        output_tokens: int = 32,
        tag: str = "",
    ) -> None:
        """One user at each prompt length (runs `promptN` + `tag`; `args` more bench options):
        prefill time against length."""
        for prompt in prompts:
            self.bench(
                f"prompt{prompt}{tag}",
                "--concurrency",
                "1",
                "--warmup",
                "1",
                *args,
                requests=8,
                input_tokens=prompt,
                output_tokens=output_tokens,
            )

    def shapes(self, shapes: tuple[tuple[int, int, float], ...]) -> None:
        """Open loop at each (input tokens, output tokens, req/s), 20 s of requests."""
        for input_tokens, output_tokens, rate in shapes:
            self.bench(
                f"in{input_tokens}-out{output_tokens}-rate{rate:g}",
                "--rate",
                f"{rate:g}",
                "--warmup",
                "2",
                requests=_levels(rate * 20.0),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )

    def down(self) -> None:
        # the engines' logs first: `down` removes the state file that names them
        for engine in _engines(self.state).values():
            with contextlib.suppress(OSError):
                shutil.copy(engine["log"], self.dir / f"engine-{engine['model']}.log")
        _run(_modelyard("down", "--state-dir", str(self.state)), self.log, 120)

    def write(self) -> None:
        self.summary["gpu_after"] = nvidia_smi()
        (self.dir / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")


def _levels(count: float) -> int:
    return max(int(count), MIN_REQUESTS)


def phase_alone(model: Model, closed_loop: bool, peer: bool, restart: bool) -> None:
    phase = Phase(model.name.split("-")[0], [model], shared=False, sleep_mode=set())
    try:
        if not phase.up():
            return
        if restart:
            # the first start compiled the model; a second one starts with vLLM's compile cache
            # warm, as every start in the shared phase will: the like-for-like cold start
            phase.summary["first_start"] = phase.summary["engines"]
            phase.down()
            if not phase.up():
                return
        share = MIX[model.name]
        if closed_loop:
            for users in CONCURRENCY:
                phase.bench(
                    f"c{users}",
                    "--concurrency",
                    str(users),
                    "--warmup",
                    str(users),
                    requests=max(users * 4, 16),
                )
        for rate in RATES:
            rate_alone = rate * share
            phase.bench(
                f"rate{rate:g}",
                "--rate",
                f"{rate_alone:g}",
                "--warmup",
                "2",
                requests=_levels(rate_alone * SECONDS_PER_LEVEL),
            )
        if peer:
            peer_run(phase, model)
    finally:
        phase.down()
        phase.write()


def vllm_bench_serve(
    phase: Phase,
    model: Model,
    label: str,
    load: list[str],
    prompts: int,
    seed: int,
    input_tokens: int = INPUT_TOKENS,
    output_tokens: int = OUTPUT_TOKENS,
    chat: bool = False,
    detailed: bool = False,
) -> None:
    """`vllm bench serve` (vLLM's own client) against one model of the phase, random prompts of
    exact lengths, its results in LABEL.json (`detailed`: with every request's TTFT and
    inter-token latencies)."""
    engine = _engines(phase.state)[model.name]
    result = f"{label}.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "vllm_bench_serve.py"),
        "--backend",
        "openai-chat" if chat else "vllm",
        "--base-url",
        engine["url"],
        "--endpoint",
        "/v1/chat/completions" if chat else "/v1/completions",
        "--model",
        model.name,
        "--tokenizer",
        str(MODELS / model.catalog),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_tokens),
        "--random-output-len",
        str(output_tokens),
        "--ignore-eos",
        "--num-prompts",
        str(prompts),
        *load,
        # a new seed each run: vllm bench serve's random prompts repeat with their seed, and a
        # repeated prompt is answered from vLLM's prefix cache (on by default)
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--save-result",
        "--result-dir",
        str(phase.dir),
        "--result-filename",
        result,
        *(["--save-detailed"] if detailed else []),
    ]
    phase.record(label, command, result, 600)


def peer_run(
    phase: Phase,
    model: Model,
    concurrency: int | None = None,
    requests: int = PEER_REQUESTS,
    tag: str = "",
    seed: int = 0,
) -> None:
    """`vllm bench serve` and `modelyard bench` at the same load and shape, back to back: open
    loop at PEER_RATE, or closed loop at `concurrency` users (the same load whatever the tools'
    random draws, so their figures can be held side by side)."""
    if concurrency is None:
        vllm_load = ["--request-rate", f"{PEER_RATE:g}"]
        modelyard_load = ["--rate", f"{PEER_RATE:g}"]
    else:
        vllm_load = ["--request-rate", "inf", "--max-concurrency", str(concurrency)]
        modelyard_load = ["--concurrency", str(concurrency)]
    vllm_bench_serve(phase, model, f"peer-vllm-bench-serve{tag}", vllm_load, requests, seed)
    phase.bench(
        f"peer-modelyard{tag}",
        *modelyard_load,
        "--mix",
        f"{model.name}=1",
        requests=requests,
    )


def phase_sweep(out: Path) -> None:
    """One graph-mode Llama engine (as the llama phase's), in order of what matters most:
    1. the peer comparison in closed loop, twice each way (A B A B): the same load whatever the
       tools' random draws, so their figures can be held side by side;
    2. the batch sweep: closed loop at SWEEP_USERS (decode step time against batch size);
    3. the prompt sweep: one user, SWEEP_PROMPTS input tokens, 32 out (prefill time against
       prompt length);
    4. held-out shapes the H200 profile was not fitted on: open loop at HELD_OUT.
    Every run is packed into $OUT as soon as it ends (the call's limit cuts the rest)."""
    phase = Phase("sweep", [LLAMA], shared=False, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        for round_ in (1, 2):
            peer_run(
                phase,
                LLAMA,
                concurrency=PEER_CONCURRENCY,
                requests=64,
                tag=f"-c{PEER_CONCURRENCY}-{round_}",
                seed=round_,
            )
        phase.closed_loop(SWEEP_USERS)
        phase.one_user(SWEEP_PROMPTS)
        phase.shapes(HELD_OUT)
    finally:
        phase.down()
        phase.write()


def phase_peer(out: Path) -> None:
    """The closed-loop peer comparison again, on its own graph-mode Llama engine, three rounds
    each way (A B A B A B), each round of `vllm bench serve` with its own seed (the sweep
    phase's second round repeated the first round's prompts and was served from vLLM's prefix
    cache)."""
    phase = Phase("peer", [LLAMA], shared=False, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        for round_ in (1, 2, 3):
            peer_run(
                phase,
                LLAMA,
                concurrency=PEER_CONCURRENCY,
                requests=64,
                tag=f"-c{PEER_CONCURRENCY}-{round_}",
                seed=100 + round_,
            )
    finally:
        phase.down()
        phase.write()


def phase_check(out: Path) -> None:
    """Mistral-7B alone, closed loop and other shapes: runs made after `vllm-v1-h200` was fitted,
    so every one of them is held out of it (the fit used Llama alone; Mistral was held out only
    at three open-loop rates of one shape)."""
    phase = Phase("check", [MISTRAL], shared=False, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        phase.closed_loop(CHECK_USERS)
        phase.shapes(CHECK_SHAPES)
        phase.one_user((2048,))
    finally:
        phase.down()
        phase.write()


def phase_burst(out: Path) -> None:
    """Llama-3.1-8B alone, every request of a run sent at once (BURSTS): what vLLM's single
    API-server process does with hundreds of requests arriving together — the load of the
    published case the simulator misses most (GPUStack, 1,000 x 128-token prompts, 4 out, vLLM
    0.11 on an A100). `vllm bench serve` as published, at three burst sizes (the front end's cost
    per request is the slope), then `modelyard bench` at the largest, then the chat endpoint."""
    phase = Phase("burst", [LLAMA], shared=False, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        everything = ["--request-rate", "inf"]
        for seed, (prompts, input_tokens, output_tokens) in enumerate(BURSTS, start=200):
            vllm_bench_serve(
                phase,
                LLAMA,
                f"burst{prompts}-in{input_tokens}-out{output_tokens}",
                everything,
                prompts,
                seed,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                detailed=True,
            )
        phase.bench(
            "burst1000-in128-out4-modelyard",
            "--concurrency",
            "1000",
            requests=1000,
            input_tokens=128,
            output_tokens=4,
        )
        vllm_bench_serve(
            phase,
            LLAMA,
            "burst1000-in128-out4-chat",
            everything,
            1000,
            299,
            input_tokens=128,
            output_tokens=4,
            chat=True,
            detailed=True,
        )
    finally:
        phase.down()
        phase.write()


def served_loads(
    phase: Phase, loads: tuple[tuple[str, int, int | None, int, int], ...], seed: int
) -> None:
    """`vllm bench serve` at each (label, prompts, users or None for all at once, input tokens,
    output tokens), a new seed each run."""
    for offset, (label, prompts, users, input_tokens, output_tokens) in enumerate(loads):
        load = ["--request-rate", "inf"]
        if users is not None:
            load += ["--max-concurrency", str(users)]
        vllm_bench_serve(
            phase,
            LLAMA,
            label,
            load,
            prompts,
            seed + offset,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            detailed=label.startswith("burst"),
        )


def phase_big_batch(out: Path, name: str, graphs_to: int | None = None) -> None:
    """Llama-3.1-8B alone, BIG_BATCH_LOADS through `vllm bench serve`: decode steps of hundreds
    of sequences, where the linear layers are compute-bound and attention reads tens of GB of
    KV cache — whether those two overlap (one roofline for the step) or follow one another.
    `bigbatch-above512`: only the loads above 512 sequences (vLLM's default CUDA-graph sizes stop
    at 512); `bigbatch-graphs`: the same loads with graphs captured up to `graphs_to`, so the two
    back to back are an A/B of the graphs alone."""
    extra: tuple[str, ...] = ()
    loads: tuple[tuple[str, int, int | None, int, int], ...] = BIG_BATCH_LOADS
    if name != "bigbatch":
        loads = tuple(load for load in BIG_BATCH_LOADS if load[2] is not None and load[2] > 512)
    if graphs_to is not None:
        extra = ("--max-cudagraph-capture-size", str(graphs_to))
    phase = Phase(name, [LLAMA], shared=False, sleep_mode=set(), extra_args=extra, out=out)
    try:
        if phase.up():
            served_loads(phase, loads, 500 if graphs_to is None else 600)
    finally:
        phase.down()
        phase.write()


def phase_step_scan(out: Path, name: str) -> None:
    """Llama-3.1-8B alone with `--enable-logging-iteration-details` (each engine step's batch
    and the milliseconds the engine core waited for it, in the engine log), STEP_SCAN_BATCHES
    users each sending one STEP_SCAN_INPUT-in / STEP_SCAN_OUTPUT-out request; `stepscan-sync`
    adds `--no-async-scheduling`, so the wait is the whole model step and the rest of the
    step period is the engine core's own CPU work. nvidia-smi samples every 200 ms into
    gpu-samples.csv (SM clock, power, utilization) for the whole phase."""
    extra: tuple[str, ...] = ("--enable-logging-iteration-details",)
    if name == "stepscan-sync":
        extra += ("--no-async-scheduling",)
    loads = tuple(step_scan_load(users) for users in STEP_SCAN_BATCHES)
    phase = Phase(name, [LLAMA], shared=False, sleep_mode=set(), extra_args=extra, out=out)
    samples = (phase.dir / "gpu-samples.csv").open("w")
    sampler = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,utilization.gpu,"
            "temperature.gpu",
            "--format=csv",
            "-lms",
            "200",
        ],
        stdout=samples,
        stderr=subprocess.STDOUT,
    )
    try:
        if phase.up():
            served_loads(phase, loads, 700 if name == "stepscan-async" else 800)
    finally:
        sampler.terminate()
        sampler.wait()
        samples.close()
        phase.down()
        phase.write()


PY_SPY = BUNDLE / "pyspy" / "py-spy"  # carried in the call: the py-spy 0.4.1 wheel's binary
PROFILE_BATCHES = (256, 512, 768)  # one GPU-bound level, the last one before the jump, one after
PROFILE_WAVES = 3  # requests per user: steady decoding long enough for the window
PROFILE_DELAY_S = 1.0  # after the engine first runs the whole batch: into steady decoding
PROFILE_S = 6
PROFILE_WAIT_S = 120.0  # for `vllm bench serve` to start (it imports vLLM: over 10 s)


def running_requests(url: str) -> float:
    """vLLM's `vllm:num_requests_running` gauge from the engine's /metrics (0 on no answer)."""
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(f"{url}/metrics", timeout=2.0) as response,
    ):
        for line in response.read().decode().splitlines():
            if line.startswith("vllm:num_requests_running"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def process_tree(root: int) -> dict[int, str]:
    """`root` and every process below it, pid -> command line (vLLM's engine core renames
    itself `VLLM::EngineCore`), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree = {root}
    grown = True
    while grown:
        below = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= below
        grown = bool(below)
    names: dict[int, str] = {}
    for pid in sorted(tree):
        with contextlib.suppress(OSError):
            names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return names


def thread_cpu_s(pids: list[int]) -> dict[str, float]:
    """User + system CPU seconds so far of every thread of `pids`, "pid/tid name" -> s."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    stat = (task / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    name = stat[stat.index("(") + 1 : stat.rindex(")")]
                    seconds[f"{pid}/{task.name} {name}"] = (
                        int(fields[11]) + int(fields[12])
                    ) / tick
    return seconds


def host_info() -> dict[str, Any]:
    """The machine's CPU model, core counts and load: the engine core's step time above 512
    sequences is CPU time, so a run on a slower host is not comparable."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _py_spy(pid: int, output: Path, log: Any) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for PROFILE_S seconds at 100 Hz, idle frames included (a wait on
    the GPU shows as one), without pausing it; raw collapsed stacks into `output`."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--idle", "--rate", "100"]
    command += ["--duration", str(PROFILE_S), "--format", "raw", "--nonblocking"]
    return subprocess.Popen(
        [*command, "--output", str(output)], stdout=log, stderr=subprocess.STDOUT
    )


def _profile_window(
    window: dict[str, Any],
    folder: Path,
    label: str,
    url: str,
    batch: int,
    pids: list[int],
    spied: list[tuple[str, int]],
) -> None:
    """Once the engine runs 90% of `batch` (or after PROFILE_WAIT_S), PROFILE_DELAY_S more,
    then PROFILE_S seconds: every thread's CPU % of `pids` into `window`, py-spy on each of
    `spied` (role, pid) meanwhile."""
    waiting = time.monotonic()
    while running_requests(url) < 0.9 * batch and time.monotonic() < waiting + PROFILE_WAIT_S:
        time.sleep(0.2)
    window["waited_s"] = time.monotonic() - waiting
    time.sleep(PROFILE_DELAY_S)
    before, start = thread_cpu_s(pids), time.monotonic()
    spies = []
    for role, pid in spied:
        log = (folder / f"pyspy-{role}-{label}.log").open("w")
        spies.append((log, _py_spy(pid, folder / f"pyspy-{role}-{label}.txt", log)))
    time.sleep(PROFILE_S)
    after, wall = thread_cpu_s(pids), time.monotonic() - start
    for log, spy in spies:
        spy.wait()
        log.close()
    used = {thread: after[thread] - before.get(thread, 0.0) for thread in after}
    window["wall_s"] = wall
    window["thread_cpu_percent"] = {
        thread: round(100 * seconds / wall, 1)
        for thread, seconds in used.items()
        if seconds > 0.01 * wall
    }
    window["host"] = host_info()


def phase_step_profile(out: Path) -> None:
    """The step scan's shape (32 in / 256 out, async scheduling: vLLM's default) at
    PROFILE_BATCHES users, PROFILE_WAVES requests each, twice: first unprofiled, with every
    thread's CPU seconds of the API server and its engine core read from /proc over a
    PROFILE_S window (threads-LABEL.json: which thread is at 100% of a core); then with py-spy
    sampling the engine core (`--idle`: waits on the GPU show as idle frames, so busy vs
    waiting is in the stacks) and the API server, 100 Hz, the same window
    (pyspy-{engine,api}-LABEL.txt)."""
    phase = Phase("stepscan-profile", [LLAMA], shared=False, sleep_mode=set(), out=out)
    if not PY_SPY.exists():  # before the engine starts: a missing profiler costs no device time
        phase.summary["errors"].append(f"{PY_SPY} was not carried in this call")
        phase.write()
        return
    try:
        if not phase.up():
            return
        engine = _engines(phase.state)[LLAMA.name]
        api, url = int(engine["pid"]), str(engine["url"])
        tree = process_tree(api)
        phase.summary["processes"] = {str(pid): line for pid, line in tree.items()}
        core = [pid for pid, line in tree.items() if "EngineCore" in line]
        seed = 900
        for batch in PROFILE_BATCHES:
            for profiled in (False, True):
                label, _, users, tokens_in, tokens_out = step_scan_load(batch)
                label = f"{label}-{'pyspy' if profiled else 'clean'}"
                spied = ([("engine", pid) for pid in core] + [("api", api)]) if profiled else []
                window: dict[str, Any] = {}
                thread = threading.Thread(
                    target=_profile_window,
                    args=(window, phase.dir, label, url, batch, list(tree), spied),
                )
                thread.start()
                try:
                    served_loads(
                        phase, ((label, batch * PROFILE_WAVES, users, tokens_in, tokens_out),), seed
                    )
                finally:
                    thread.join()
                    (phase.dir / f"threads-{label}.json").write_text(json.dumps(window, indent=1))
                    busiest = sorted(
                        window.get("thread_cpu_percent", {}).items(), key=lambda kv: -kv[1]
                    )[:3]
                    print(f"  {label}: busiest threads {busiest}", flush=True)
                seed += 1
    finally:
        phase.down()
        phase.write()


def phase_frontend(out: Path, servers: int) -> None:
    """Llama-3.1-8B alone behind `servers` API-server processes (vLLM's `--api-server-count`),
    FRONTEND_LOADS through `vllm bench serve`: at hundreds of streams the single API server's
    per-token work (detokenizing, building and writing every stream's events) is what the
    client sees; with several servers sharing it, the engine's own step time shows."""
    extra = ("--api-server-count", str(servers)) if servers > 1 else ()
    phase = Phase(
        f"frontend{servers}", [LLAMA], shared=False, sleep_mode=set(), extra_args=extra, out=out
    )
    try:
        if phase.up():
            served_loads(phase, FRONTEND_LOADS, 400 + 10 * servers)
    finally:
        phase.down()
        phase.write()


def prefill_probe_runs(phase: Phase) -> None:
    """Llama's prefill time with its peer idle, then with the peer busy decoding: one Llama user
    at each of PROBE_PROMPTS; then Llama decoding at 8 users beside the busy peer. The busy load
    is `modelyard bench` on Mistral alone, in the background for as long as the probes run."""
    llama_only = ("--mix", f"{LLAMA.name}=1")

    def probes(tag: str) -> None:
        phase.one_user(PROBE_PROMPTS, *llama_only, output_tokens=PROBE_OUTPUT, tag=f"-{tag}")

    probes("idle")
    phase.bench("c8-idle", "--concurrency", "8", "--warmup", "8", *llama_only, requests=32)
    busy = phase.bench_command(
        "mistral-busy",
        "--concurrency",
        str(BUSY_USERS),
        "--mix",
        f"{MISTRAL.name}=1",
        requests=BUSY_USERS * 5,
        input_tokens=BUSY_INPUT,
        output_tokens=BUSY_OUTPUT,
    )
    with phase.log.open("a") as log:
        background = subprocess.Popen(busy, stdout=log, stderr=subprocess.STDOUT, env=env())
    start = time.monotonic()
    try:
        time.sleep(8.0)  # the busy users past their prompts and decoding
        probes("busy")
        phase.bench("c8-busy", "--concurrency", "8", "--warmup", "8", *llama_only, requests=32)
        phase.summary["busy_running_after_probes"] = background.poll() is None
    finally:
        try:
            code = background.wait(timeout=300)
        except subprocess.TimeoutExpired:
            background.kill()
            code = background.wait()
        wall_s = time.monotonic() - start
        phase.note_run("mistral-busy", busy, code, wall_s, "bench-mistral-busy.json")


def phase_prefill_probe(out: Path, mps: bool) -> None:
    if mps:
        phase_mps(out, "mps-prefill", prefill_probe_runs)
        return
    phase = Phase("timesliced-prefill", [LLAMA, MISTRAL], shared=True, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        prefill_probe_runs(phase)
    finally:
        phase.down()
        phase.write()


def _mix_arg(mix: dict[str, float]) -> str:
    return ",".join(f"{name}={share * 100:g}" for name, share in mix.items())


EVEN_MIX = {LLAMA.name: 0.5, MISTRAL.name: 0.5}


def even_closed_loop(phase: Phase, users: int, requests: int) -> None:
    """Both models, a 50/50 mix, closed loop at `users`."""
    phase.bench(
        f"c{users}-even",
        "--concurrency",
        str(users),
        "--mix",
        _mix_arg(EVEN_MIX),
        "--warmup",
        "8",
        requests=requests,
    )


def shared_closed_runs(phase: Phase) -> None:
    """Both models on one H200 in closed loop: the 95/5 mix at SHARED_USERS users, and a 50/50
    mix at 16."""
    mix = _mix_arg(MIX)
    for users in SHARED_USERS:
        phase.bench(
            f"c{users}",
            "--concurrency",
            str(users),
            "--mix",
            mix,
            "--warmup",
            str(min(users, 8)),
            requests=max(users * 4, 32),
        )
    even_closed_loop(phase, 16, requests=64)


def phase_shared_closed(out: Path, name: str = "shared-closed") -> None:
    """Both models time-sliced on the H200 (as the shared phase), in closed loop (runs the H200
    profile was not fitted on). `timesliced` is the same runs again, as the mps phase's baseline
    on the same machine."""
    phase = Phase(name, [LLAMA, MISTRAL], shared=True, sleep_mode=set(), out=out)
    try:
        if not phase.up():
            return
        shared_closed_runs(phase)
    finally:
        phase.down()
        phase.write()


def _mps_control(command: str | None, log: Path) -> int:
    """`nvidia-cuda-mps-control -d` (start the daemon) or a command on its stdin (`quit`)."""
    binary = shutil.which("nvidia-cuda-mps-control")
    if binary is None:
        with log.open("a") as out:
            out.write("nvidia-cuda-mps-control: not on PATH\n")
        return 127
    with log.open("a") as out:
        done = subprocess.run(
            [binary] if command is not None else [binary, "-d"],
            input=(command + "\n") if command is not None else None,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
    return done.returncode


def mps_open_runs(phase: Phase) -> None:
    """Held out of the MPS fit: the shared phase's open loop (95/5 mix at RATES) and an even
    mix at 8 users."""
    open_loop_rates(phase)
    even_closed_loop(phase, 8, requests=48)


def open_loop_rates(phase: Phase) -> None:
    """Both models, the 95/5 mix, Poisson arrivals at each of RATES."""
    mix = _mix_arg(MIX)
    for rate in RATES:
        phase.bench(
            f"rate{rate:g}",
            "--rate",
            f"{rate:g}",
            "--mix",
            mix,
            "--warmup",
            "2",
            requests=_levels(rate * SECONDS_PER_LEVEL),
        )


def phase_mps(out: Path, name: str, runs: Callable[[Phase], None]) -> None:
    """The shared-closed runs with both engines as clients of one MPS control daemon: kernels of
    both processes run at once instead of time-slicing. The daemon is this user's process, under
    /tmp; the GPU's compute mode is left as it is, and the daemon is told to quit at the end."""
    MPS_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["CUDA_MPS_PIPE_DIRECTORY"] = str(MPS_DIR / "pipe")
    os.environ["CUDA_MPS_LOG_DIRECTORY"] = str(MPS_DIR / "log")
    for sub in ("pipe", "log"):
        (MPS_DIR / sub).mkdir(exist_ok=True)
    phase = Phase(name, [LLAMA, MISTRAL], shared=True, sleep_mode=set(), out=out)
    compute_mode = subprocess.run(
        ["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    phase.summary["compute_mode"] = compute_mode
    started = _mps_control(None, phase.log)
    phase.summary["mps_daemon_start"] = started
    try:
        if started != 0:
            phase.summary["errors"].append(f"nvidia-cuda-mps-control -d exited {started}")
            return
        if not phase.up():
            return
        phase.summary["mps_clients"] = subprocess.run(
            ["sh", "-c", "echo get_server_list | nvidia-cuda-mps-control"],
            capture_output=True,
            text=True,
            env=env(),
            check=False,
        ).stdout.strip()
        runs(phase)
    finally:
        phase.down()
        if started == 0:
            phase.summary["mps_daemon_quit"] = _mps_control("quit", phase.log)
        with contextlib.suppress(OSError):
            for file in sorted((MPS_DIR / "log").iterdir()):
                shutil.copy(file, phase.dir / f"mps-{file.name}")
        phase.write()


def phase_shared() -> None:
    phase = Phase("shared", [LLAMA, MISTRAL], shared=True, sleep_mode={MISTRAL.name})
    try:
        if not phase.up():
            return
        open_loop_rates(phase)
        phase.summary["sleep"] = sleep_wake(phase, MISTRAL)
    finally:
        phase.down()
        phase.write()


def sleep_wake(phase: Phase, model: Model) -> dict[str, Any]:
    """vLLM's sleep mode level 1 (weights to host memory, KV cache dropped), then wake-up and the
    first token, against the engine's cold start."""
    url = _engines(phase.state)[model.name]["url"]
    first = json.dumps({"model": model.name, "prompt": [100, 101, 102], "max_tokens": 1}).encode()
    result: dict[str, Any] = {"model": model.name, "level": 1}
    try:
        start = time.monotonic()
        status, body = _http(url + "/sleep?level=1", b"")
        result["sleep_s"], result["sleep_status"] = time.monotonic() - start, status
        result["sleep_body"] = body.decode(errors="replace")[:500]
        status, body = _http(url + "/is_sleeping")
        result["is_sleeping"] = body.decode(errors="replace")[:200]
        result["gpu_asleep"] = nvidia_smi()
        start = time.monotonic()
        status, body = _http(url + "/wake_up", b"")
        result["wake_s"], result["wake_status"] = time.monotonic() - start, status
        status, _ = _http(url + "/v1/completions", first)
        result["wake_to_first_token_s"] = time.monotonic() - start
        result["first_status"] = status
        result["gpu_awake"] = nvidia_smi()
    except (OSError, urllib.error.URLError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    print(f"  sleep/wake: {json.dumps({k: v for k, v in result.items() if 'gpu' not in k})}")
    return result


def pack(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "gpu_vllm_results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for phase in sorted(RESULTS.iterdir()) if RESULTS.exists() else []:
            for file in sorted(phase.iterdir()):
                if file.is_file():
                    tar.add(file, arcname=f"{phase.name}/{file.name}")
    print(f"packed {archive} ({archive.stat().st_size / 1e6:.2f} MB)")


def run(phases: list[str], out: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-c", "import vllm; print(vllm.__version__)"],
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"vLLM {version or '(not importable)'}", flush=True)
    # engines an earlier call left behind (a call cut off at its limit) hold GPU memory
    for state in RESULTS.glob("*/state") if RESULTS.exists() else []:
        _run(_modelyard("down", "--state-dir", str(state)), GPU / "cleanup.log", 120)
    for name in phases:
        start = time.monotonic()
        print(f"== phase {name}", flush=True)
        try:
            if name == "llama":
                phase_alone(LLAMA, closed_loop=True, peer=True, restart=False)
            elif name == "mistral":
                phase_alone(MISTRAL, closed_loop=False, peer=False, restart=True)
            elif name == "shared":
                phase_shared()
            elif name == "sweep":
                phase_sweep(out)
            elif name == "peer":
                phase_peer(out)
            elif name == "shared-closed":
                phase_shared_closed(out)
            elif name == "check":
                phase_check(out)
            elif name == "mps":
                phase_mps(out, "mps", shared_closed_runs)
            elif name == "mps-open":
                phase_mps(out, "mps-open", mps_open_runs)
            elif name == "timesliced":
                phase_shared_closed(out, name="timesliced")
            elif name == "burst":
                phase_burst(out)
            elif name == "mps-prefill":
                phase_prefill_probe(out, mps=True)
            elif name == "timesliced-prefill":
                phase_prefill_probe(out, mps=False)
            elif name in ("bigbatch", "bigbatch-above512"):
                phase_big_batch(out, name)
            elif name == "bigbatch-graphs":
                phase_big_batch(out, name, graphs_to=1024)
            elif name == "stepscan-profile":
                phase_step_profile(out)
            elif name.startswith("stepscan"):
                phase_step_scan(out, name)
            elif name.startswith("frontend"):
                phase_frontend(out, int(name.removeprefix("frontend")))
        except Exception:  # a broken phase is reported; the next one still runs
            traceback.print_exc()
        finally:
            pack(out)
        print(f"== phase {name} took {time.monotonic() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("unpack")
    sub.add_parser("check")
    runner = sub.add_parser("run")
    runner.add_argument("phases", nargs="+", choices=PHASES)
    runner.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    sub.add_parser("pack").add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out"))
    )
    args = parser.parse_args()
    if args.command == "unpack":
        unpack()
    elif args.command == "check":
        check()
    elif args.command == "pack":
        pack(args.out)
    else:
        run(args.phases, args.out)


if __name__ == "__main__":
    main()
