"""Shared by the benchmarks: `modelyard sim serve`'s command line, and a server pinned to a core."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def sim_serve_command(model: str, gpu: str, port: int, *options: str) -> list[str]:
    """`sim serve` for one catalog model on a simulated GPU, ready at once (no cold start)."""
    return [
        sys.executable,
        "-m",
        "modelyard",
        "sim",
        "serve",
        "--model",
        model,
        "--gpu",
        gpu,
        "--port",
        str(port),
        "--cold-start-s",
        "0",
        *options,
    ]


@contextlib.contextmanager
def pinned_sim_serve(core: int, model: str, gpu: str, port: int, *options: str) -> Iterator[None]:
    """`sim serve` pinned to `core`: listening when the block starts, stopped when it ends."""
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state.json"  # written once every port listens
        command = sim_serve_command(model, gpu, port, *options, "--state", str(state))
        server = subprocess.Popen(
            ["taskset", "-c", str(core), *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not state.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"sim serve did not start: {' '.join(command)}")
                time.sleep(0.05)
            time.sleep(0.5)
            yield
        finally:
            server.terminate()
            server.wait(timeout=10)
