"""Real processes for integration tests: start, wait for readiness by polling, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelyard.engines.launcher import free_port


def wait_http(url: str, deadline_s: float = 20.0, status: int | tuple[int, ...] = 200) -> None:
    """Poll `url` until it answers `status` (or one of them), or fail after the deadline."""
    wanted = (status,) if isinstance(status, int) else status
    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status in wanted:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:
            last = exc.code
            if exc.code in wanted:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer {status} within {deadline_s}s (last: {last})")


def refuses_connections(url: str) -> bool:
    """Whether nothing listens at `url`: a connection is refused, or reset — it reached the
    backlog of a listening socket that closed before accepting it (the server stopping between
    the handshake and accept; a full run on 2026-12-03 failed on that once)."""
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def poll_until(condition: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        time.sleep(0.02)  # between polls


@dataclass
class SimServe:
    process: subprocess.Popen[str]
    endpoints: list[dict[str, object]]

    def url(self, model: str | None = None) -> str:
        for endpoint in self.endpoints:
            if model is None or endpoint["model"] == model:
                return str(endpoint["url"])
        raise KeyError(model)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_sim_serve(args: list[str], tmp_path: Path, ready_path: str = "/health") -> SimServe:
    """`modelyard sim serve ARGS --state FILE`, waiting until every endpoint is healthy."""
    stamp = time.monotonic_ns()
    state = tmp_path / f"sim-state-{stamp}.json"
    log = tmp_path / f"sim-serve-{stamp}.log"
    with log.open("w") as sink:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "sim", "serve", *args, "--state", str(state)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    end = time.monotonic() + 20
    while not state.exists():
        if process.poll() is not None:
            raise AssertionError(f"sim serve exited: {log.read_text()}")
        if time.monotonic() > end:
            process.kill()
            raise AssertionError("sim serve did not start within 20 s")
        time.sleep(0.02)
    endpoints = json.loads(state.read_text())["engines"]  # `up`'s state format
    running = SimServe(process, endpoints)
    for endpoint in endpoints:
        wait_http(f"{endpoint['url']}{ready_path}")
    return running


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def as_background_job(command: list[str]) -> list[str]:
    """`command` started as a shell's background job starts it: with SIGINT ignored."""
    return ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]


def start_gateway(
    fleet: Path,
    tmp_path: Path,
    sigint_ignored: bool = False,
    workers: int = 1,
    grace_s: float = 10.0,
) -> GatewayProcess:
    """`modelyard gateway`, one worker unless `workers` says more (tests/gateway/test_workers.py),
    draining for `grace_s` on SIGTERM."""
    port = free_port("127.0.0.1")
    log = tmp_path / f"gateway-{port}.log"
    command = [sys.executable, "-m", "modelyard", "gateway", str(fleet), "--port", str(port)]
    command += ["--grace", f"{grace_s:g}", "--workers", str(workers)]
    with log.open("w") as sink:
        process = subprocess.Popen(
            as_background_job(command) if sigint_ignored else command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", deadline_s=20, status=(200, 503))  # 503: nothing can serve
    except AssertionError:
        process.kill()
        process.wait()
        raise AssertionError(f"gateway did not start: {log.read_text()}") from None
    return GatewayProcess(process, url, log)
