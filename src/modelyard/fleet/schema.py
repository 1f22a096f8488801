"""The fleet file's schema: which models a team serves, where they run, how traffic reaches
them. Pydantic models; `checks` holds what needs the catalog."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from modelyard.units import Duration

EngineName = Literal["vllm", "sglang", "llamacpp", "tgi", "ollama", "sim"]
TENSOR_PARALLEL_ENGINES = ("vllm", "sglang", "tgi", "sim")
CPU_ENGINES = frozenset({"llamacpp", "ollama"})
DEFAULT_MEMORY_LIMIT = 0.9


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {value:g}")
    return value


def _positive_fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value:g}")
    return value


Fraction = Annotated[float, AfterValidator(_fraction)]
PositiveFraction = Annotated[float, AfterValidator(_positive_fraction)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetModel(_Strict):
    """One model the fleet serves."""

    catalog: str = Field(description="catalog model name or alias, e.g. llama-3.1-8b")
    engine: EngineName = "vllm"
    engine_version: str | None = Field(
        default=None,
        pattern=r"^([A-Za-z][A-Za-z0-9-]* )?\d+(\.\d+)*[A-Za-z0-9.]*$",
        description="engine release the simulator calibrates for, e.g. '0.6.3' or "
        "'sglang 0.3.0'; default: the current release of the model's engine (vLLM: V1)",
    )
    quant: str | None = Field(
        default=None,
        description="quantization profile; default gguf-q4_k_m for llamacpp/ollama, else bf16",
    )
    gpu: str | None = Field(default=None, description="GPU name; omit for CPU engines")
    replicas: int = Field(default=1, ge=1)
    endpoints: list[str] = Field(default_factory=list, description="existing engine base URLs")
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: PositiveFraction | None = None
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=8, description="GPUs of one node each replica spans (vLLM, SGLang, TGI)"
    )
    engine_args: list[str] = Field(default_factory=list, description="extra engine flags")
    weights: str | None = Field(
        default=None, description="local path or hub id of the weights (default: prepared files)"
    )

    @property
    def quant_name(self) -> str:
        if self.quant is not None:
            return self.quant
        return "gguf-q4_k_m" if self.engine in CPU_ENGINES else "bf16"


Sharing = Literal["time-sliced", "mps", "mig"]


class SharedGroup(_Strict):
    """Models that share one GPU (or, without `gpu`, the same CPU cores)."""

    gpu: str | None = None
    models: list[str] = Field(min_length=2)
    sharing: Sharing = Field(
        default="time-sliced",
        description="how the members share the GPU: time-sliced (each engine's kernels take "
        "turns), mps (NVIDIA MPS: kernels of both run at once) or mig (hard slices)",
    )
    mig_profiles: dict[str, str] = Field(
        default_factory=dict,
        description="with sharing: mig, each member's MIG profile (e.g. 3g.40gb); chosen "
        "when omitted",
    )
    memory_limit: PositiveFraction = DEFAULT_MEMORY_LIMIT
    memory_fractions: dict[str, PositiveFraction] = Field(default_factory=dict)


class SharedPlacement(_Strict):
    shared: list[SharedGroup] = Field(min_length=1)


class RouteMatch(_Strict):
    task: str = Field(min_length=1)


class Route(_Strict):
    """Ordered targets: the primary first, then fallbacks. No `match` = the default route."""

    name: str | None = Field(default=None, description="alias clients may send as `model`")
    match: RouteMatch | None = None
    targets: list[str] = Field(min_length=1)


class BreakerPolicy(_Strict):
    consecutive_failures: int = Field(default=5, ge=1)
    open_for: Duration = 30.0
    half_open_probes: int = Field(default=1, ge=1)


class RetryPolicy(_Strict):
    attempts: int = Field(default=2, ge=0, le=10)
    backoff: Duration = 0.05


class Timeouts(_Strict):
    connect: Duration = 2.0
    first_token: Duration = 10.0
    idle: Duration = 30.0
    total: Duration = 600.0


class HealthPolicy(_Strict):
    interval: Duration = 5.0
    warmup_every: Duration = 300.0


class Policy(_Strict):
    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    health: HealthPolicy = HealthPolicy()


class Slo(_Strict):
    ttft_p99: Duration | None = None
    tpot_p99: Duration | None = None
    e2e_p99: Duration | None = None


class Traffic(_Strict):
    daily_active_users: float = Field(default=0, ge=0)
    requests_per_user: float = Field(default=0, ge=0, description="requests per user per day")
    peak_factor: float = Field(default=1.0, ge=1, description="peak rate / average rate")
    fallback_rate: Fraction = Field(
        default=0.0, description="share of each route's requests its first fallback serves"
    )
    tasks: dict[str, Fraction] = Field(
        default_factory=dict,
        description="share of all requests each task route gets; the default route takes "
        "the rest (docs/fleet.md: how traffic is shared)",
    )
    input_tokens: int = Field(default=512, gt=0)
    output_tokens: int = Field(default=256, gt=0)


class RateLimit(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(default=20, ge=1)


class GatewayConfig(_Strict):
    """Gateway operations. API keys are stored only as SHA-256 hex digests
    (`modelyard hash-key KEY` prints one); more come from the environment variable
    named by `api_key_hashes_env` (comma-separated)."""

    api_key_hashes: list[str] = Field(default_factory=list)
    api_key_hashes_env: str = "MODELYARD_API_KEY_HASHES"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    rate_limit: RateLimit | None = Field(default=None, description="per API key (or client)")
    weight_by_engine_load: bool = Field(
        default=False,
        description="add each replica's queue (read from its /metrics at every health check) "
        "to its in-flight count when choosing between replicas",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="gateway processes sharing the port (SO_REUSEPORT), each with its own "
        "event loop; default: one per core (docs/gateway.md: several workers)",
    )


class Fleet(_Strict):
    """The whole fleet file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    catalog: list[str] = Field(default_factory=list, description="extra catalog files")
    models: dict[str, FleetModel] = Field(min_length=1)
    placement: Literal["isolated"] | SharedPlacement = "isolated"
    routes: list[Route] = Field(default_factory=list)
    policy: Policy = Policy()
    slo: Slo = Slo()
    traffic: Traffic = Traffic()
    gateway: GatewayConfig = GatewayConfig()

    def shared_groups(self) -> list[SharedGroup]:
        return self.placement.shared if isinstance(self.placement, SharedPlacement) else []

    def group_of(self, model_name: str) -> SharedGroup | None:
        return next((g for g in self.shared_groups() if model_name in g.models), None)

    def default_route(self) -> Route | None:
        return next((r for r in self.routes if r.match is None), None)
