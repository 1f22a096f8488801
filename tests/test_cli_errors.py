"""Bad input across every command: malformed YAML, wrong types, unknown names, negative and huge
numbers, missing and empty files, the wrong results file, a busy port. Each must end with a
non-zero exit and one clear line — never a traceback, never a hang."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, CliResult

GOOD_FLEET = Path(__file__).resolve().parent.parent / "examples" / "fleet.yaml"

FLEETS = {
    "malformed": ("models: [1\n", r"invalid YAML"),
    "empty": ("", r"must be a YAML mapping"),
    "wrong-type": ("name: x\nmodels: 5\n", r"models"),
    "unknown-model": (
        "name: x\nmodels:\n  m:\n    catalog: no-such-model\n    engine: sim\n    gpu: h100-sxm\n"
        "routes: [{targets: [m]}]\n",
        r"no-such-model",
    ),
    "unknown-gpu": (
        "name: x\nmodels:\n  m:\n    catalog: llama-3.1-8b\n    engine: sim\n    gpu: no-such-gpu\n"
        "routes: [{targets: [m]}]\n",
        r"no-such-gpu",
    ),
    "negative": (
        "name: x\nmodels:\n  m:\n    catalog: llama-3.1-8b\n    engine: sim\n    gpu: h100-sxm\n"
        "    gpu_memory_utilization: -0.5\nroutes: [{targets: [m]}]\n",
        r"gpu_memory_utilization",
    ),
    "huge": (
        "name: x\nmodels:\n  m:\n    catalog: llama-3.1-8b\n    engine: sim\n    gpu: h100-sxm\n"
        "    max_model_len: 1000000000000\nroutes: [{targets: [m]}]\n",
        r"max_model_len",
    ),
}

# every command that reads a fleet file, with the arguments that make it do its work
FLEET_COMMANDS = {
    "validate": ["validate"],
    "fit": ["fit"],
    "sim run": ["sim", "run"],
    "sim serve": ["sim", "serve"],
    "plan": ["plan"],
    "compare --sim": ["compare", "--sim"],
    "deploy k8s": ["deploy", "k8s", "--stdout"],
    "up": ["up"],
    "gateway": ["gateway"],
}

USAGE_ERROR = 2  # click's code for a bad option value, printed as one message in a box


def assert_one_clear_line(result: CliResult, pattern: str) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.returncode != 0, text
    if result.returncode == USAGE_ERROR:
        messages = [ln for ln in result.stderr.splitlines() if re.match(r"│ \S", ln)]
    else:
        messages = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert messages and messages[0].startswith("error: "), text
    assert len(messages) == 1, text
    assert re.search(pattern, messages[0]), (pattern, messages[0])


@pytest.fixture
def fleet_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, (text, _) in FLEETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        paths[name] = path
    return paths


@pytest.mark.parametrize("command", FLEET_COMMANDS)
@pytest.mark.parametrize("case", FLEETS)
def test_bad_fleet_files(
    cli: Cli, fleet_files: dict[str, Path], tmp_path: Path, command: str, case: str
) -> None:
    path = fleet_files[case]
    args = [*FLEET_COMMANDS[command], str(path)]
    if command == "up":
        args += ["--state-dir", str(tmp_path / "state")]
    result = cli(*args)
    pattern = FLEETS[case][1]
    # the file's name and line, where the problem has one
    if case in ("malformed", "wrong-type", "negative", "huge"):
        pattern = rf"{re.escape(path.name)}:\d+:.*{pattern}"
    assert_one_clear_line(result, pattern)


@pytest.mark.parametrize("command", FLEET_COMMANDS)
def test_missing_fleet_file(cli: Cli, tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = cli(*FLEET_COMMANDS[command], str(missing))
    assert_one_clear_line(result, r"nowhere\.yaml")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["sim", "run", str(GOOD_FLEET), "--rate", "-1"], r"--rate.*positive"),
        (["sim", "run", str(GOOD_FLEET), "--requests", "0"], r"--requests"),
        (["sim", "run", str(GOOD_FLEET), "--mix", "nobody=1"], r"nobody"),
        (["sim", "run", str(GOOD_FLEET), "--placement", "sideways"], r"placement|fleet"),
        (["plan", str(GOOD_FLEET), "--daily-active-users", "-5"], r"daily.active.users|users"),
        (["plan", str(GOOD_FLEET), "--gpu", "no-such-gpu"], r"no-such-gpu"),
        (["plan", str(GOOD_FLEET), "--mix", "nobody=1"], r"nobody"),
        (["compare", str(GOOD_FLEET), "--sim", "--rate", "-2"], r"--rate"),
        (["fit", "--model", "no-such-model", "--gpu", "h100-sxm"], r"no-such-model"),
        (["quant", "no-such-model"], r"no-such-model"),
        (["bench", "--target", "not a url", "--rate", "1", "--results", "x.json"], r"target|url"),
        (
            [
                "bench",
                "--target",
                "http://127.0.0.1:9/v1",
                "--requests",
                "0",
                "--results",
                "x.json",
            ],
            r"--requests",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_numbers_and_names(cli: Cli, args: list[str], pattern: str) -> None:
    assert_one_clear_line(cli(*args), pattern)


RESULTS = {
    "a fleet file": (GOOD_FLEET.read_text(), r"results|JSON|json"),
    "empty": ("", r"results|JSON|json|empty"),
    "up's state file": (json.dumps({"engines": [], "fleet": "x"}), r"state|results|schema"),
    "bench missing fields": (json.dumps({"schema": "modelyard.bench/1"}), r"field|missing|schema"),
    "a list": (json.dumps([1, 2, 3]), r"results|object|schema"),
}


@pytest.mark.parametrize("case", RESULTS)
def test_report_wrong_results_file(cli: Cli, tmp_path: Path, case: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(RESULTS[case][0])
    assert_one_clear_line(
        cli("report", str(path), "-o", str(tmp_path / "r.html")), RESULTS[case][1]
    )


def test_report_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("report", str(tmp_path / "gone.json"), "-o", str(tmp_path / "r.html"))
    assert_one_clear_line(result, r"gone\.json")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_gateway_on_a_busy_port(cli: Cli, busy_port: int, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: x\nmodels:\n  m:\n    catalog: gemma-3-270m\n    engine: sim\n    gpu: h100-sxm\n"
        "    endpoints: ['http://127.0.0.1:9']\nroutes: [{targets: [m]}]\n"
    )
    result = cli("gateway", str(fleet), "--port", str(busy_port))
    assert_one_clear_line(result, rf"{busy_port}.*(in use|busy)|(in use|busy).*{busy_port}")
