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

from dataclasses import replace

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import Interconnect
from modelyard.sim.errors import SimError
from modelyard.sim.perf import Calibration, Communication, Hardware, StepModel

ACTIVATION_BYTES = 2  # bf16 hidden states are what the ranks sum
ALLREDUCES_PER_LAYER = 2  # after attention and after the FFN


def allreduce_seconds(link: Interconnect, payload_bytes: float, ranks: int) -> float:
    """One ring all-reduce of `payload_bytes` over `ranks` GPUs joined by `link`."""
    if ranks <= 1:
        return 0.0
    per_direction = link.bandwidth_gbps * 1e9 / 2
    moved = 2 * (ranks - 1) / ranks * payload_bytes
    return link.allreduce_latency_us * 1e-6 + moved / per_direction


def allreduce_communication(model: ModelSpec, link: Interconnect, ranks: int) -> Communication:
    """The all-reduces of one step, as a fixed part and a part per new token (the payload is
    tokens x hidden size bf16 activations, so one all-reduce is linear in the tokens)."""
    allreduces = ALLREDUCES_PER_LAYER * model.num_layers
    if ranks <= 1:
        return Communication()
    fixed = allreduce_seconds(link, 0.0, ranks)
    per_token = allreduce_seconds(link, model.hidden_size * ACTIVATION_BYTES, ranks) - fixed
    return Communication(allreduces * fixed, allreduces * per_token)


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
    """The step model of one engine on `ranks` GPUs of type `gpu` (one GPU: no communication).

    A rank's share is the base roofline on a device N times as fast in FLOP/s and bandwidth
    (1/N of the FLOPs and of the weight bytes per rank), with the KV bytes raised back by
    N x each rank's share of the KV heads (at least one head per rank)."""
    if ranks <= 1:
        return StepModel(model, quant, hardware, cal, kv_dtype_bytes)
    if gpu.interconnect is None:
        raise SimError(
            f"{gpu_name} has no interconnect in the catalog: tensor parallelism over "
            f"{ranks} GPUs cannot be simulated (add `interconnect:` to its catalog entry)"
        )
    kv_share = max(model.num_kv_heads // ranks, 1) / model.num_kv_heads
    per_rank = replace(
        hardware, peak_flops=hardware.peak_flops * ranks, bandwidth=hardware.bandwidth * ranks
    )
    communication = allreduce_communication(model, gpu.interconnect, ranks)
    return StepModel(model, quant, per_rank, cal, kv_dtype_bytes * kv_share * ranks, communication)
