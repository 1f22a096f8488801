"""Cross-checks of a fleet against the catalog and itself, each problem as (path, message)."""

from __future__ import annotations

from modelyard.catalog import Catalog, ModelSpec
from modelyard.catalog.entries import capability
from modelyard.errors import UnknownNameError
from modelyard.fleet.schema import TENSOR_PARALLEL_ENGINES, Fleet, FleetModel, Route, SharedGroup
from modelyard.names import unknown_name_message

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
