"""MIG profiles (`<g>g.<mem>gb`) as the planner and the deployer see them.

A100/H100/H200 split into 7 compute slices and 8 memory slices; a profile's compute slices are its
`<g>`, its memory slices its share of the whole GPU's memory in eighths
(https://docs.nvidia.com/datacenter/tesla/mig-user-guide/, checked 2026-11-28).
"""

from __future__ import annotations

from modelyard.catalog.entries import GpuSpec

MIB = 1024 * 1024
COMPUTE_SLICES = 7
MEMORY_SLICES = 8


def mig_memory_gb(profile: str) -> float:
    return float(profile.split(".")[1].removesuffix("gb"))


def mig_slices(gpu: GpuSpec, profile: str) -> tuple[int, int]:
    """(compute slices of 7, memory slices of 8) of a MIG profile on `gpu`."""
    compute = int(profile.split("g.")[0])
    full = max(mig_memory_gb(p) for p in gpu.mig_profiles)
    return compute, max(round(MEMORY_SLICES * mig_memory_gb(profile) / full), 1)


def mig_gpu(gpu: GpuSpec, profile: str) -> GpuSpec:
    """A MIG slice as a small GPU: its memory (the profile's GB, slightly under what nvidia-smi
    shows), its share of compute (g/7) and of memory bandwidth (memory slices / 8)."""
    compute, memory = mig_slices(gpu, profile)
    return gpu.model_copy(
        update={
            "display_name": f"{gpu.display_name} MIG {profile}",
            "visible_memory_mib": int(mig_memory_gb(profile) * 1e9 / MIB),
            "memory_bandwidth_gbps": gpu.memory_bandwidth_gbps * memory / MEMORY_SLICES,
            "bf16_tflops": gpu.bf16_tflops * compute / COMPUTE_SLICES,
            "fp8_tflops": gpu.fp8_tflops * compute / COMPUTE_SLICES if gpu.fp8_tflops else None,
            "mig_profiles": [],
        }
    )


def fits_on_one_gpu(gpu: GpuSpec, profiles: list[str]) -> bool:
    compute = sum(mig_slices(gpu, p)[0] for p in profiles)
    memory = sum(mig_slices(gpu, p)[1] for p in profiles)
    return compute <= COMPUTE_SLICES and memory <= MEMORY_SLICES
