"""One fleet — a time-sliced shared group, a task-routed model with tensor parallelism on two GPUs
of its own — and every capability's machine-readable answer about it: `validate`, `fit --json`,
`sim run --json`, `plan --json` (as written), `deploy k8s --stdout`, and `up` with simulated
engines behind the gateway. They must describe the same placement, sharing and traffic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.engines.launcher import free_port
from modelyard.fleet import load_fleet
from modelyard.memory import fit_fleet
from modelyard.placement import DevicePlan, device_plans
from modelyard.traffic import model_shares
from tests.conftest import Cli
from tests.procs import wait_http

FLEET = """\
name: consistent
models:
  llama-8b: {catalog: llama-3.1-8b, engine: ENGINE, gpu: h100-sxm, max_model_len: 8192}
  mistral-7b: {catalog: mistral-7b-instruct-v0.2, engine: ENGINE, gpu: h100-sxm,
               max_model_len: 8192}
  coder: {catalog: qwen2.5-7b, engine: ENGINE, gpu: l4, tensor_parallel_size: 2, replicas: 2,
          max_model_len: 4096}
placement:
  shared:
    - gpu: h100-sxm
      models: [llama-8b, mistral-7b]
      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}
routes:
  - {match: {task: code}, targets: [coder, llama-8b]}
  - {targets: [llama-8b, mistral-7b]}
slo: {ttft_p99: 500ms, tpot_p99: 40ms}
traffic: {daily_active_users: 20000, requests_per_user: 10, peak_factor: 3,
          tasks: {code: 0.2}, fallback_rate: 0.05}
"""


def write(tmp_path: Path, engine: str) -> Path:
    path = tmp_path / f"fleet-{engine}.yaml"
    path.write_text(FLEET.replace("ENGINE", engine))
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    return write(tmp_path, "vllm")


def reference(path: Path) -> tuple[list[DevicePlan], dict[str, float]]:
    loaded = load_fleet(path)
    return device_plans(loaded), model_shares(loaded.fleet)


def _by_model(devices: list[DevicePlan]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for device in devices:
        for engine in device.engines:
            entry = out.setdefault(
                engine.model,
                {
                    "gpu": device.gpu,
                    "gpu_count": device.gpu_count,
                    "fraction": engine.memory_fraction,
                    "shares_with": set(device.models) - {engine.model},
                    "replicas": 0,
                },
            )
            entry["replicas"] += 1
    return out


def _gpus(devices: list[DevicePlan]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for device in devices:
        counts[device.gpu or "cpu"] += device.gpu_count
    return dict(counts)


@pytest.mark.slow  # plan simulates the fleet as written: ~25 s on the 2-core VM
def test_every_capability_describes_the_same_fleet(cli: Cli, fleet: Path) -> None:
    devices, shares = reference(fleet)
    want = _by_model(devices)
    assert want["coder"] == {
        "gpu": "l4",
        "gpu_count": 2,
        "fraction": 0.9,
        "shares_with": set(),
        "replicas": 2,
    }
    assert want["llama-8b"]["shares_with"] == {"mistral-7b"}
    assert _gpus(devices) == {"h100-sxm": 1, "l4": 4}

    assert cli("validate", str(fleet)).returncode == 0

    # fit: the device, fraction and TP of every model
    fit = json.loads(cli("fit", str(fleet), "--json").stdout)
    for row in fit["models"]:
        w = want[row["name"]]
        assert (row["device"], row["gpu_memory_utilization"], row["tensor_parallel_size"]) == (
            w["gpu"],
            w["fraction"],
            w["gpu_count"],
        ), row["name"]
    kv_tokens = {row["name"]: row["kv_cache_tokens"] for row in fit["models"]}

    # sim run: the same GPUs, engines, KV capacity and traffic shares
    requests = 4000
    sim = json.loads(cli("sim", "run", str(fleet), "--requests", str(requests), "--json").stdout)
    assert sim["gpus"] == _gpus(devices)
    for model in sim["models"]:
        name = model["name"]
        assert model["engines"] == want[name]["replicas"], name
        assert model["kv_cache_tokens"] == kv_tokens[name], name
        share = shares[name]
        sigma = math.sqrt(share * (1 - share) / requests)
        assert abs(model["requests"] / requests - share) < 4 * sigma + 1e-9, (name, share)

    # plan, the fleet as written: the same units, sharing, fractions, TP, GPUs and demand shares
    plan = json.loads(cli("plan", str(fleet), "--json").stdout)
    written = next(o for o in plan["options"] if o["kind"] == "as written")
    seen: dict[str, dict[str, Any]] = {}
    demand: dict[str, float] = {}
    for unit in written["units"]:
        members = {e["model"] for e in unit["engines"]}
        for engine in unit["engines"]:
            seen[engine["model"]] = {
                "gpu": unit["gpu"],
                "gpu_count": unit["gpus_per_replica"]
                * engine["tensor_parallel_size"]
                // max(1, unit["gpus_per_replica"]),
                "fraction": engine["memory_fraction"],
                "shares_with": members - {engine["model"]},
                "replicas": unit["replicas"],
            }
        assert unit["sharing"] == ("time-sliced" if len(members) > 1 else "isolated")
        demand.update(unit["demand_rps"])
    assert seen == want
    assert written["gpus"] == sum(_gpus(devices).values())
    total = sum(demand.values())
    for name, rate in demand.items():
        assert rate / total == pytest.approx(shares[name], rel=1e-6), name

    # deploy: one workload per model, its GPUs, fraction, TP, replicas, and the shared node pool
    docs = [d for d in yaml.safe_load_all(cli("deploy", "k8s", str(fleet), "--stdout").stdout) if d]
    workloads = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and not d["metadata"]["name"].endswith("gateway")
    }
    assert set(workloads) == set(want)
    scaled_min = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["minReplicaCount"]
        for d in docs
        if d["kind"] == "ScaledObject"
    }
    pools: dict[str, str] = {}
    for name, doc in workloads.items():
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        w = want[name]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(w["gpu_count"]), name
        assert float(args[args.index("--gpu-memory-utilization") + 1]) == w["fraction"], name
        tp = (
            int(args[args.index("--tensor-parallel-size") + 1])
            if "--tensor-parallel-size" in args
            else 1
        )
        assert tp == w["gpu_count"], name
        # a fixed count, or an autoscaler whose floor is the fleet's count
        replicas = doc["spec"].get("replicas", scaled_min.get(name))
        assert replicas == w["replicas"], name
        # the node pool: GPU product and, for the shared group, its device-plugin config
        affinity = doc["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        pools[name] = yaml.safe_dump(affinity)
    assert pools["llama-8b"] == pools["mistral-7b"] != pools["coder"]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, Any]]]:
    """`modelyard up` of the fleet with simulated engines (ready at once), stopped after."""
    fleet = tmp_path / "fleet-sim.yaml"
    fleet.write_text(
        FLEET.replace("engine: ENGINE", 'engine: sim, engine_args: [--cold-start-s, "0"]')
    )
    state = tmp_path / "state"
    command = [sys.executable, "-m", "modelyard"]
    try:
        done = subprocess.run(
            [*command, "up", str(fleet), "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        yield fleet, state, json.loads((state / "state.json").read_text())
    finally:
        subprocess.run(
            [*command, "down", "--state-dir", str(state)], capture_output=True, check=False
        )


def _cache_config(url: str) -> dict[str, str]:
    """The labels of an engine's `vllm:cache_config_info` metric."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm:cache_config_info{"))
    labels = line[line.index("{") + 1 : line.rindex("}")]
    return dict(
        (key, value.strip('"')) for key, _, value in (p.partition("=") for p in labels.split(","))
    )


@pytest.mark.slow
@pytest.mark.process
def test_up_and_the_gateway_serve_the_same_fleet(
    started: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    fleet, state, recorded = started
    devices, _ = reference(fleet)
    want = _by_model(devices)
    engines: dict[str, list[dict[str, Any]]] = {}
    for engine in recorded["engines"]:
        engines.setdefault(engine["model"], []).append(engine)
    assert {m: len(e) for m, e in engines.items()} == {m: w["replicas"] for m, w in want.items()}
    fit = load_fleet(fleet)
    kv_tokens = {row.name: row.kv_cache_tokens for row in fit_fleet(fit).models}
    for name, replicas in engines.items():
        for engine in replicas:
            assert len(engine["gpu_devices"]) == want[name]["gpu_count"], engine
            # the KV cache each engine was sized to, as its own /metrics reports it: the
            # memory fraction, TP and KV dtype `fit` uses
            config = _cache_config(engine["url"])
            assert float(config["gpu_memory_utilization"]) == want[name]["fraction"], name
            blocks, block = int(config["num_gpu_blocks"]), int(config["block_size"])
            assert blocks == kv_tokens[name] // block, name
    # the shared group's engines on one GPU, served by one `sim serve` so that they contend as
    # `sim run` simulates them; the TP replicas on GPUs of their own, each its own process
    llama, mistral = engines["llama-8b"][0], engines["mistral-7b"][0]
    assert llama["gpu_devices"] == mistral["gpu_devices"]
    assert llama["pid"] == mistral["pid"] and llama["url"] != mistral["url"]
    ports = llama["command"][llama["command"].index("--ports") + 1]
    assert sorted(ports.split(",")) == sorted(
        [f"llama-8b/0={llama['port']}", f"mistral-7b/0={mistral['port']}"]
    )
    assert len({e["pid"] for e in engines["coder"]}) == 2
    coder_gpus = [d for e in engines["coder"] for d in e["gpu_devices"]]
    assert len(set(coder_gpus)) == 4 and not set(coder_gpus) & set(
        engines["llama-8b"][0]["gpu_devices"]
    )

    port = free_port("127.0.0.1")
    log = tmp_path / "gateway.log"
    with log.open("w") as sink:
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "gateway",
                str(fleet),
                "--port",
                str(port),
                "--state-dir",
                str(state),
                "--grace",
                "5",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", deadline_s=30)

        def answered_by(headers: dict[str, str]) -> str:
            body = json.dumps({"model": "llama-8b", "prompt": "Hi", "max_tokens": 4}).encode()
            request = urllib.request.Request(
                url + "/v1/completions", body, {"Content-Type": "application/json", **headers}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(response.headers["X-Modelyard-Model"])

        # traffic as the fleet routes it: the code task to coder, the rest to the primary
        assert answered_by({"X-Modelyard-Task": "code"}) == "coder"
        assert answered_by({}) == "llama-8b"
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
