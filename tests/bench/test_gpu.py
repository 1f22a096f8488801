from __future__ import annotations

from pathlib import Path

from modelyard.bench import gpu

FIXTURES = Path(__file__).parent / "fixtures"


def test_parse_nvidia_smi_from_a_real_h200() -> None:
    """Captured on the lent H200 idle, and with a 10 GiB tensor allocated by PyTorch."""
    idle = gpu.parse((FIXTURES / "nvidia_smi_h200_idle.txt").read_text())
    busy = gpu.parse((FIXTURES / "nvidia_smi_h200_10gib.txt").read_text())
    assert idle == [gpu.GpuMemory(0, "NVIDIA H200", 0, 143771)]
    assert busy[0].used_mib - idle[0].used_mib >= 10 * 1024
    assert gpu.parse("garbage\n1, x, y, z\n") == []


def test_read_matches_the_machine() -> None:
    import shutil

    rows = gpu.read()
    if shutil.which("nvidia-smi") is None:
        assert rows == []  # development machines and CI here: no NVIDIA GPU
    else:
        assert rows and all(r["total_mib"] > 0 for r in rows)
