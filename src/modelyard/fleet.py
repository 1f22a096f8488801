"""The fleet file: which models a team serves, where they run, how traffic reaches them.

`load_fleet()` reads YAML, validates it with the pydantic models below, then cross-checks it
against the catalog. Every problem comes back as `file:line: dotted.path: message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from modelyard.catalog import Catalog, GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import capability
from modelyard.errors import ConfigError, FleetError, UnknownNameError
from modelyard.names import unknown_name_message
from modelyard.units import Duration
from modelyard.yamlsource import YamlDocument, load_yaml, validation_problems

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


@dataclass(frozen=True)
class LoadedFleet:
    """A validated fleet with the catalog it was checked against."""

    fleet: Fleet
    catalog: Catalog
    path: Path

    def model_spec(self, name: str) -> ModelSpec:
        return self.catalog.model(self.fleet.models[name].catalog)

    def quant(self, name: str) -> QuantProfile:
        return self.catalog.quant(self.fleet.models[name].quant_name)

    def gpu_name(self, name: str) -> str | None:
        """The GPU a model runs on: its shared group's, else its own (None: CPU)."""
        group = self.fleet.group_of(name)
        return group.gpu if group is not None and group.gpu else self.fleet.models[name].gpu

    def gpu(self, name: str) -> GpuSpec | None:
        gpu_name = self.gpu_name(name)
        return self.catalog.gpu(gpu_name) if gpu_name else None

    def memory_fractions(self, group: SharedGroup) -> dict[str, float]:
        """Each member's share of GPU memory: stated, else its gpu_memory_utilization, else an
        equal split of what the group's memory_limit leaves."""
        stated = {
            name: group.memory_fractions.get(name, self.fleet.models[name].gpu_memory_utilization)
            for name in group.models
        }
        given = {name: f for name, f in stated.items() if f is not None}
        rest = [name for name, f in stated.items() if f is None]
        left = max(group.memory_limit - sum(given.values()), 0.0)
        return {**given, **{name: left / len(rest) for name in rest}}


Problem = tuple[tuple[str | int, ...], str]
At = tuple[str | int, ...]


def _check_quant(
    at: At, model: FleetModel, gpu_name: str | None, catalog: Catalog, out: list[Problem]
) -> None:
    name = model.quant_name
    if name not in catalog.quants:
        out.append(((*at, "quant"), unknown_name_message("quantization", name, catalog.quants)))
        return
    quant = catalog.quants[name]
    if model.engine != "sim" and model.engine not in quant.engines:
        served = ", ".join(
            sorted(q for q, p in catalog.quants.items() if model.engine in p.engines)
        )
        message = f"'{name}' is not served by engine '{model.engine}' (profiles for "
        out.append(((*at, "quant"), f"{message}{model.engine}: {served})"))
    gpu = catalog.gpus.get(gpu_name or "")
    needed = quant.min_compute_capability
    if (
        gpu is not None
        and needed is not None
        and capability(gpu.compute_capability) < capability(needed)
    ):
        message = f"'{name}' needs compute capability {needed}+, {gpu_name} has "
        out.append(((*at, "quant"), message + gpu.compute_capability))


def _check_model(
    name: str, model: FleetModel, group_gpu: str | None, catalog: Catalog
) -> list[Problem]:
    at: At = ("models", name)
    out: list[Problem] = []
    spec: ModelSpec | None = None
    try:
        spec = catalog.model(model.catalog)
    except UnknownNameError as exc:
        out.append(((*at, "catalog"), str(exc)))
    _check_quant(at, model, group_gpu or model.gpu, catalog, out)
    known_gpus = ", ".join(sorted(catalog.gpus))
    if model.gpu is not None and model.gpu not in catalog.gpus:
        out.append(((*at, "gpu"), unknown_name_message("GPU", model.gpu, catalog.gpus)))
    if model.gpu is None and model.engine == "sim":
        message = f"engine 'sim' needs the GPU to simulate (known: {known_gpus})"
        out.append(((*at, "gpu"), message))
    tp = model.tensor_parallel_size
    if tp > 1 and model.engine not in TENSOR_PARALLEL_ENGINES:
        engines = ", ".join(TENSOR_PARALLEL_ENGINES)
        message = f"engine '{model.engine}' cannot split a model over GPUs (engines that can: "
        out.append(((*at, "tensor_parallel_size"), f"{message}{engines})"))
    elif tp > 1 and model.gpu is None and model.engine != "sim":
        out.append(((*at, "tensor_parallel_size"), "tensor parallelism needs a gpu"))
    if spec is not None and spec.num_attention_heads % tp:
        message = f"{spec.num_attention_heads} attention heads do not split into {tp} equal parts"
        out.append(((*at, "tensor_parallel_size"), message))
    too_long = spec is not None and (model.max_model_len or 0) > spec.max_context
    if spec is not None and too_long:
        message = f"{model.max_model_len} exceeds {model.catalog}'s maximum context"
        out.append(((*at, "max_model_len"), f"{message} {spec.max_context}"))
    for index, url in enumerate(model.endpoints):
        if not url.startswith(("http://", "https://")):
            out.append(((*at, "endpoints", index), f"'{url}' is not an http(s) URL"))
    explicit_replicas = "replicas" in model.model_fields_set
    if model.endpoints and explicit_replicas and model.replicas != len(model.endpoints):
        message = f"{model.replicas} replicas but {len(model.endpoints)} endpoints listed"
        out.append(((*at, "replicas"), f"{message} (omit replicas when endpoints are given)"))
    return out


def _check_member(
    fleet: Fleet, group: SharedGroup, at: At, position: int, placed: dict[str, int]
) -> list[Problem]:
    index = at[-1]
    member = group.models[position]
    where = (*at, "models", position)
    if member not in fleet.models:
        return [(where, unknown_name_message("model", member, fleet.models))]
    if member in placed:
        other = placed[member]
        if other == index:
            return [(where, f"'{member}' is listed twice in this group")]
        return [(where, f"'{member}' is already placed in shared group {other}")]
    placed[member] = int(index)
    own_gpu = fleet.models[member].gpu
    if group.gpu is not None and own_gpu is not None and own_gpu != group.gpu:
        message = f"'{member}' says gpu '{own_gpu}' but its shared group is on '{group.gpu}'"
        return [(where, message)]
    if group.gpu is None and own_gpu is not None:
        return [((*at, "gpu"), f"'{member}' runs on gpu '{own_gpu}': name the group's gpu")]
    first = next((m for m in group.models if m in fleet.models), member)
    tp, first_tp = (fleet.models[m].tensor_parallel_size for m in (member, first))
    if tp != first_tp:
        message = f"'{member}' spans {tp} GPUs but '{first}' spans {first_tp}"
        return [(where, f"{message}: members of a group share the same GPUs")]
    return []


def _check_sharing(group: SharedGroup, at: At, catalog: Catalog) -> list[Problem]:
    out: list[Problem] = []
    gpu = catalog.gpus.get(group.gpu or "")
    if group.sharing != "time-sliced" and group.gpu is None:
        out.append(((*at, "sharing"), f"sharing '{group.sharing}' needs the group's gpu"))
    if group.sharing == "mig" and gpu is not None and not gpu.mig_profiles:
        out.append(
            (
                (*at, "sharing"),
                f"{group.gpu} has no MIG (GPUs with MIG: "
                + ", ".join(sorted(n for n, g in catalog.gpus.items() if g.mig_profiles))
                + ")",
            )
        )
    if group.mig_profiles and group.sharing != "mig":
        out.append(((*at, "mig_profiles"), "mig_profiles need sharing: mig"))
    for member, profile in group.mig_profiles.items():
        where = (*at, "mig_profiles", member)
        if member not in group.models:
            out.append((where, f"'{member}' is not a member of this group"))
        elif gpu is not None and gpu.mig_profiles and profile not in gpu.mig_profiles:
            known = ", ".join(gpu.mig_profiles)
            out.append((where, f"'{profile}' is not a MIG profile of {group.gpu} ({known})"))
    return out


def _check_placement(fleet: Fleet, catalog: Catalog) -> list[Problem]:
    out: list[Problem] = []
    placed: dict[str, int] = {}
    for index, group in enumerate(fleet.shared_groups()):
        at: At = ("placement", "shared", index)
        if group.gpu is not None and group.gpu not in catalog.gpus:
            out.append(((*at, "gpu"), unknown_name_message("GPU", group.gpu, catalog.gpus)))
        for position in range(len(group.models)):
            out.extend(_check_member(fleet, group, at, position, placed))
        for member in group.memory_fractions:
            if member not in group.models:
                message = f"'{member}' is not a member of this group"
                where = (*at, "memory_fractions", member)
                out.append((where, f"{message} ({', '.join(group.models)})"))
        out.extend(_check_sharing(group, at, catalog))
        total = sum(group.memory_fractions.values())
        if total > group.memory_limit + 1e-9:
            message = f"fractions add up to {total:.2f}, more than the group's memory_limit"
            out.append(((*at, "memory_fractions"), f"{message} {group.memory_limit:.2f}"))
    return out


def _check_route_name(route: Route, at: At, fleet: Fleet, names: dict[str, int]) -> list[Problem]:
    if route.name is None:
        return []
    where = (*at, "name")
    if route.name in fleet.models:
        return [(where, f"'{route.name}' is also a model name; aliases must differ")]
    if route.name == "default" and route.match is not None:
        return [(where, "'default' is reserved for the route with no match")]
    if route.name in names:
        return [(where, f"alias '{route.name}' is already used by route {names[route.name]}")]
    names[route.name] = int(at[-1])
    return []


def _check_routes(fleet: Fleet) -> list[Problem]:
    out: list[Problem] = []
    tasks: dict[str, int] = {}
    names: dict[str, int] = {}
    default_at: int | None = None
    for index, route in enumerate(fleet.routes):
        at: At = ("routes", index)
        seen: set[str] = set()
        for position, target in enumerate(route.targets):
            where = (*at, "targets", position)
            if target not in fleet.models:
                out.append((where, unknown_name_message("model", target, fleet.models)))
            elif target in seen:
                out.append((where, f"'{target}' is listed twice"))
            seen.add(target)
        if route.match is None and default_at is not None:
            message = f"a second default route (route {default_at} has no match either)"
            out.append((at, f"{message}; give one a match: {{task: ...}}"))
        elif route.match is None:
            default_at = index
        elif route.match.task in tasks:
            message = f"task '{route.match.task}' is already routed by route"
            out.append(((*at, "match", "task"), f"{message} {tasks[route.match.task]}"))
        else:
            tasks[route.match.task] = index
        out.extend(_check_route_name(route, at, fleet, names))
    for task in fleet.traffic.tasks:
        if task not in tasks:
            known = ", ".join(sorted(tasks)) or "none"
            message = f"no route matches task '{task}' (task routes: {known})"
            out.append((("traffic", "tasks", task), message))
    total = sum(fleet.traffic.tasks.values())
    if total > 1 + 1e-9:
        out.append((("traffic", "tasks"), f"task shares add up to {total:.2f}, more than 1"))
    return out


def _check_policy(fleet: Fleet) -> list[Problem]:
    timeouts = fleet.policy.timeouts
    out: list[Problem] = []
    for index, digest in enumerate(fleet.gateway.api_key_hashes):
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            out.append(
                (
                    ("gateway", "api_key_hashes", index),
                    "not a SHA-256 hex digest (64 lowercase hex characters); store hashes, "
                    "never keys: `modelyard hash-key KEY`",
                )
            )
    for field_name in ("connect", "first_token", "idle"):
        value = getattr(timeouts, field_name)
        if value > timeouts.total:
            message = f"{field_name} ({value:g}s) is longer than total ({timeouts.total:g}s)"
            out.append((("policy", "timeouts", field_name), message))
    return out


def check_fleet(fleet: Fleet, catalog: Catalog) -> list[Problem]:
    """Cross-checks pydantic cannot do: names against the catalog and against each other."""
    problems: list[Problem] = []
    for name, model in fleet.models.items():
        if not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
            problems.append(
                (("models", name), f"model name '{name}' must be a slug (a-z, 0-9, -._)")
            )
        group = fleet.group_of(name)
        problems.extend(_check_model(name, model, group.gpu if group else None, catalog))
    problems.extend(_check_placement(fleet, catalog))
    problems.extend(_check_routes(fleet))
    problems.extend(_check_policy(fleet))
    return problems


def _format(problems: list[Problem], doc: YamlDocument) -> list[str]:
    located = []
    for path, message in problems:
        line = doc.line_of(path)
        dotted = ".".join(str(p) for p in path)
        located.append((line, f"{doc.filename}:{line}: {dotted}: {message}"))
    located.sort(key=lambda item: item[0])
    return [text for _, text in located]


def parse_fleet(doc: YamlDocument, extra_catalogs: list[Path] | None = None) -> LoadedFleet:
    """Validate a parsed fleet document; raises FleetError listing every problem."""
    if not isinstance(doc.data, dict):
        raise FleetError(
            [f"{doc.filename}:1: a fleet file must be a YAML mapping (name:, models:, ...)"]
        )
    try:
        fleet = Fleet.model_validate(doc.data)
    except ValidationError as exc:
        raise FleetError(validation_problems(exc, doc, Fleet)) from exc
    base = Path(doc.filename).parent
    catalog_paths = [base / p for p in fleet.catalog] + list(extra_catalogs or [])
    try:
        catalog = Catalog.load(catalog_paths)
    except ConfigError as exc:
        raise FleetError(exc.problems) from exc
    problems = check_fleet(fleet, catalog)
    if problems:
        raise FleetError(_format(problems, doc))
    return LoadedFleet(fleet=fleet, catalog=catalog, path=Path(doc.filename))


def load_fleet(path: Path, extra_catalogs: list[Path] | None = None) -> LoadedFleet:
    """Read, validate and cross-check a fleet file."""
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        raise FleetError(exc.problems) from exc
    return parse_fleet(doc, extra_catalogs)


def single_model_fleet(
    model: str,
    gpu: str,
    max_model_len: int | None = None,
    extra_catalogs: list[Path] | None = None,
    served_name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> LoadedFleet:
    """A one-model fleet on the simulated engine, for `sim serve --model M --gpu G`;
    `settings`: more fields of its fleet entry (quant, kv_cache_dtype, ...), validated as the
    fleet file's are."""
    entry: dict[str, Any] = {"catalog": model, "engine": "sim", "gpu": gpu, **(settings or {})}
    if max_model_len is not None:
        entry["max_model_len"] = max_model_len
    else:
        catalog = Catalog.load(extra_catalogs)
        entry["max_model_len"] = min(catalog.model(model).max_context, 8192)
    name = served_name or model.lower().replace("/", "-")
    doc = YamlDocument(data={"name": "sim", "models": {name: entry}}, filename="(--model)")
    return parse_fleet(doc, extra_catalogs)


def fleet_json_schema() -> dict[str, Any]:
    """JSON Schema of the fleet file, for editor completion."""
    schema = Fleet.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "modelyard fleet file"
    return schema
