"""Memory fits for the planner, each computed once: does a fleet model fit this GPU (or MIG
slice) at this memory fraction and tensor-parallel size — `memory.fit` with the fleet's engine
settings, cached per (model, GPU, fraction, TP) and counted."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from modelyard.catalog import GpuSpec
from modelyard.fleet import TENSOR_PARALLEL_ENGINES, LoadedFleet
from modelyard.memory import Device, FitResult, fit, fleet_settings
from modelyard.placement import isolated_fraction

TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
FRACTION_STEP = 0.01
MIN_FRACTION = 0.05


@dataclass
class MemoryFits:
    loaded: LoadedFleet
    fits: int = 0  # memory.fit calls made
    _cache: dict[tuple[str, str, float, int], FitResult] = field(default_factory=dict)

    def fit(
        self, model: str, gpu_name: str, gpu: GpuSpec, fraction: float, tensor_parallel: int = 1
    ) -> FitResult:
        """`model` (the fleet's settings) on `gpu` at `fraction`, over `tensor_parallel` GPUs."""
        key = (model, gpu_name, round(fraction, 4), tensor_parallel)
        if key not in self._cache:
            self.fits += 1
            entry = self.loaded.fleet.models[model]
            settings = replace(
                fleet_settings(self.loaded, model, fraction), tensor_parallel_size=tensor_parallel
            )
            self._cache[key] = fit(
                self.loaded.catalog.resolve_model_name(entry.catalog),
                self.loaded.model_spec(model),
                entry.quant_name,
                self.loaded.quant(model),
                Device.from_gpu(gpu_name, gpu),
                settings,
                name=model,
            )
        return self._cache[key]

    def need_fraction(
        self, model: str, gpu_name: str, gpu: GpuSpec, tensor_parallel: int = 1
    ) -> float | None:
        """The smallest memory fraction (to 0.01) at which `model` fits, or None. A larger
        fraction never fits less, so this bisects."""
        low, high = round(MIN_FRACTION / FRACTION_STEP), round(1 / FRACTION_STEP)
        if not self.fit(model, gpu_name, gpu, high * FRACTION_STEP, tensor_parallel).fits:
            return None
        while low < high:
            middle = (low + high) // 2
            if self.fit(model, gpu_name, gpu, middle * FRACTION_STEP, tensor_parallel).fits:
                high = middle
            else:
                low = middle + 1
        return round(low * FRACTION_STEP, 2)

    def tensor_parallel_sizes(self, model: str, gpu_name: str, gpu: GpuSpec) -> list[int]:
        """TP sizes at which `model` fits alone on `gpu` at its own fraction, smallest first
        (sizes its attention heads divide; >1 only for engines that split a model and GPUs whose
        catalog entry lists an interconnect)."""
        spec = self.loaded.model_spec(model)
        splits = (
            self.loaded.fleet.models[model].engine in TENSOR_PARALLEL_ENGINES
            and gpu.interconnect is not None
        )
        fraction = isolated_fraction(self.loaded, model)
        sizes = [
            tp
            for tp in TENSOR_PARALLEL_SIZES
            if spec.num_attention_heads % tp == 0 and (tp == 1 or splits)
        ]
        return [tp for tp in sizes if self.fit(model, gpu_name, gpu, fraction, tp).fits]
