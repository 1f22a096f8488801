"""GPU memory in use, read through NVML's command-line front end (`nvidia-smi`) when the
machine has one; on machines without NVIDIA GPUs this returns nothing."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

QUERY = "--query-gpu=index,name,memory.used,memory.total"


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    used_mib: int
    total_mib: int


def parse(text: str) -> list[GpuMemory]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.used,memory.total
    --format=csv,noheader,nounits`."""
    rows = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            rows.append(GpuMemory(int(parts[0]), parts[1], int(parts[2]), int(parts[3])))
        except ValueError:
            continue
    return rows


def read() -> list[dict[str, Any]]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        done = subprocess.run(
            [binary, QUERY, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [asdict(row) for row in parse(done.stdout)] if done.returncode == 0 else []
