"""Every number the manifests size from, named, with why it is what it is.

Pure arithmetic over bytes and seconds; the renderers read these instead of writing figures
inline, and docs/deploy.md explains each.
"""

from __future__ import annotations

import math

GIB = 1024**3

# --- engine pod resources ---
ENGINE_CPU_REQUEST = "4"  # tokenization, detokenization, the API server and the scheduler loop
ENGINE_CPU_LIMIT = "8"
# host memory while loading: the checkpoint passes through pinned host buffers on its way to
# the GPU, so 1.2 x the served weights, plus the Python runtime, plus the memory-backed /dev/shm
LOAD_BUFFER_FACTOR = 1.2
ENGINE_RUNTIME_GIB = 8.0
# the model cache volume: the checkpoint with 20% headroom (tokenizer, config, partial
# downloads) plus 10 GiB for the engine's own compile and kernel caches
CACHE_HEADROOM_FACTOR = 1.2
CACHE_EXTRA_GIB = 10.0

# --- probes (seconds) ---
STARTUP_PERIOD_S = 10
STARTUP_TIMEOUT_S = 5
STARTUP_MIN_FAILURES = 3
READINESS_PERIOD_S = 5
READINESS_TIMEOUT_S = 3
READINESS_FAILURES = 3
LIVENESS_PERIOD_S = 10
LIVENESS_TIMEOUT_S = 5
LIVENESS_FAILURES = 6  # a busy engine answers /health late; a minute before a restart

# --- shutdown (seconds) ---
# the kubelet SIGKILLs at terminationGracePeriodSeconds counted from the start of preStop, so
# the grace covers preStop + the process's own drain + this margin for exit and log flush
TERMINATION_MARGIN_S = 5

# --- the gateway pod ---
GATEWAY_PORT = 8080
GATEWAY_CPU_REQUEST = "1"
GATEWAY_CPU_LIMIT = "2"
GATEWAY_MEMORY_REQUEST = "512Mi"
GATEWAY_MEMORY_LIMIT = "1Gi"
GATEWAY_READINESS_PERIOD_S = 5
GATEWAY_LIVENESS_PERIOD_S = 10
GATEWAY_PROBE_TIMEOUT_S = 2
GATEWAY_HPA_CPU_PERCENT = 70
GATEWAY_HPA_MAX_FACTOR = 5  # --hpa: up to this many times the gateway replicas

# --- autoscaling (KEDA) ---
AUTOSCALE_POLLING_S = 15
# a new GPU replica takes minutes to download and load, so scale up at once and scale down
# only after the queue has stayed low this long (and one replica at a time)
SCALE_DOWN_STABILIZATION_S = 600
SCALE_DOWN_PODS_PER_PERIOD = 1
SCALE_DOWN_PERIOD_S = 300
METRICS_FAILURE_THRESHOLD = 3  # failed Prometheus queries before KEDA holds the replica count


def startup_failure_threshold(
    checkpoint_bytes: float, bandwidth_bytes_s: float, init_s: float, margin: float
) -> int:
    """Startup probes a loading engine gets before the kubelet restarts it: download + init,
    times the margin, in probe periods."""
    seconds = (checkpoint_bytes / bandwidth_bytes_s + init_s) * margin
    return max(math.ceil(seconds / STARTUP_PERIOD_S), STARTUP_MIN_FAILURES)


def engine_memory_gib(served_weights_bytes: float, shm_gib: float) -> float:
    """Host memory an engine pod requests (= its limit), in GiB."""
    return served_weights_bytes * LOAD_BUFFER_FACTOR / GIB + ENGINE_RUNTIME_GIB + shm_gib


def cache_storage_gib(checkpoint_bytes: float) -> float:
    """Size of an engine's model cache volume, in GiB."""
    return checkpoint_bytes * CACHE_HEADROOM_FACTOR / GIB + CACHE_EXTRA_GIB


def termination_grace_s(pre_stop_s: int, drain_s: float) -> int:
    """terminationGracePeriodSeconds for a pod whose preStop sleeps `pre_stop_s` and whose
    process then drains for up to `drain_s`."""
    return pre_stop_s + math.ceil(drain_s) + TERMINATION_MARGIN_S
