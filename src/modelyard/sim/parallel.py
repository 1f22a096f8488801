"""Tensor parallelism: the step time of one engine whose model spans N GPUs of one node.

Megatron-style tensor parallelism (what vLLM, SGLang and TGI run) splits every layer's
attention heads and FFN columns over the N ranks, so each rank does 1/N of the FLOPs and reads
1/N of the weights; each rank holds and reads its share of the KV heads (a head is replicated
where there are fewer KV heads than ranks, as `memory.fit` budgets it). After the attention
output and after the FFN down-projection the ranks sum their partial results: two all-reduces
per layer per step, each of (tokens x hidden size) bf16 activations. A ring all-reduce of S
bytes over N GPUs moves 2 (N - 1) / N x S bytes through each GPU's link, one direction at a
time, after a fixed latency:

    allreduce_s = latency + 2 (N - 1) / N x S / (link bandwidth per direction)
    step_s      = per-rank step_s (perf.StepModel) + 2 x layers x allreduce_s

The link's bandwidth and latency come from the GPU's catalog `interconnect` entry (sourced
there). vLLM does not overlap these all-reduces with compute, so they add to the step.
"""

from __future__ import annotations

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import Interconnect
from modelyard.sim.errors import SimError
from modelyard.sim.perf import Calibration, Hardware, StepBatch, StepModel

ACTIVATION_BYTES = 2  # bf16 hidden states are what the ranks sum
ALLREDUCES_PER_LAYER = 2  # after attention and after the FFN


def allreduce_seconds(link: Interconnect, payload_bytes: float, ranks: int) -> float:
    """One ring all-reduce of `payload_bytes` over `ranks` GPUs joined by `link`."""
    if ranks <= 1:
        return 0.0
    per_direction = link.bandwidth_gbps * 1e9 / 2
    moved = 2 * (ranks - 1) / ranks * payload_bytes
    return link.allreduce_latency_us * 1e-6 + moved / per_direction


class TensorParallelStepModel(StepModel):
    """Step time of one rank plus the all-reduces that join the ranks.

    The rank's share is the base roofline on a device N times as fast in FLOP/s and bandwidth
    (1/N of the FLOPs and of the weight bytes per rank), with the KV bytes raised back by
    N x each rank's share of the KV heads (at least one head per rank)."""

    def __init__(
        self,
        model: ModelSpec,
        quant: QuantProfile,
        hardware: Hardware,
        cal: Calibration,
        kv_dtype_bytes: float,
        ranks: int,
        link: Interconnect,
    ) -> None:
        kv_share = max(model.num_kv_heads // ranks, 1) / model.num_kv_heads
        per_rank = Hardware(
            name=hardware.name,
            peak_flops=hardware.peak_flops * ranks,
            bandwidth=hardware.bandwidth * ranks,
        )
        super().__init__(model, quant, per_rank, cal, kv_dtype_bytes * kv_share * ranks)
        self.ranks = ranks
        self.link = link
        self._allreduces = ALLREDUCES_PER_LAYER * model.num_layers
        self._bytes_per_token = model.hidden_size * ACTIVATION_BYTES

    def communication_time(self, tokens: int) -> float:
        """Seconds of all-reduce in one step that computes `tokens` new tokens."""
        payload = tokens * self._bytes_per_token
        return self._allreduces * allreduce_seconds(self.link, payload, self.ranks)

    def step_time(self, batch: StepBatch) -> float:
        return super().step_time(batch) + self.communication_time(batch.tokens)

    def decode_span_time(self, sequences: int, context0: float, steps: int) -> float:
        compute = super().decode_span_time(sequences, context0, steps)
        return compute + max(steps, 0) * self.communication_time(sequences)


def step_model_for(
    model: ModelSpec,
    quant: QuantProfile,
    hardware: Hardware,
    cal: Calibration,
    kv_dtype_bytes: float,
    ranks: int,
    gpu_name: str,
    gpu: GpuSpec,
) -> StepModel:
    """The step model of one engine on `ranks` GPUs of type `gpu` (one GPU: perf.StepModel)."""
    if ranks <= 1:
        return StepModel(model, quant, hardware, cal, kv_dtype_bytes)
    if gpu.interconnect is None:
        raise SimError(
            f"{gpu_name} has no interconnect in the catalog: tensor parallelism over "
            f"{ranks} GPUs cannot be simulated (add `interconnect:` to its catalog entry)"
        )
    return TensorParallelStepModel(
        model, quant, hardware, cal, kv_dtype_bytes, ranks, gpu.interconnect
    )
