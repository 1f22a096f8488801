"""What each model must serve at the daily peak: modelyard.traffic's rule, with the plan's
overrides (traffic flags, `--mix`) and, with `--failover`, what a fallback must absorb.

Every model some route reaches is planned. A model whose share is 0 (a fallback at the default
`fallback_rate` 0, or a task route with no `traffic.tasks` share) is standby capacity: it gets
its availability minimum, and with `--failover` enough to absorb the traffic of the one primary
it backs up that sends it the most (the primary's whole share, split over that primary's routes
by their shares).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from modelyard.fleet import Fleet, Traffic
from modelyard.plan.errors import PlanError
from modelyard.traffic import model_shares, peak_rate_rps, reached_models, route_shares

TRAFFIC_FLAGS = (
    "daily_active_users",
    "requests_per_user",
    "peak_factor",
    "fallback_rate",
    "input_tokens",
    "output_tokens",
)


@dataclass(frozen=True)
class Demand:
    """The traffic a plan sizes for: the fleet's `traffic:` with the plan's overrides."""

    traffic: Traffic
    failover: bool = False
    mix: Mapping[str, float] | None = None  # --mix: each model's share of all requests

    @property
    def peak_rps(self) -> float:
        return peak_rate_rps(self.traffic)

    @property
    def average_rps(self) -> float:
        return self.peak_rps / self.traffic.peak_factor

    def replace(self, **values: float) -> Demand:
        """This demand with traffic fields changed (a sweep's points), validated."""
        return Demand(_traffic(self.traffic, values), self.failover, self.mix)

    def to_json(self) -> dict[str, object]:
        return {
            **{name: getattr(self.traffic, name) for name in TRAFFIC_FLAGS},
            "tasks": dict(self.traffic.tasks),
            "failover": self.failover,
            "mix": dict(self.mix) if self.mix is not None else None,
            "average_rps": self.average_rps,
            "peak_rps": self.peak_rps,
        }


_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "daily_active_users": ("daily active users must be >= 0", lambda v: v >= 0),
    "requests_per_user": ("requests per user must be >= 0", lambda v: v >= 0),
    "peak_factor": ("peak factor (peak / average) must be >= 1", lambda v: v >= 1),
    "fallback_rate": ("fallback rate must be within [0, 1]", lambda v: 0 <= v <= 1),
    "input_tokens": ("input tokens must be >= 1", lambda v: v >= 1),
    "output_tokens": ("output tokens must be >= 1", lambda v: v >= 1),
}


def _traffic(base: Traffic, values: Mapping[str, float | None]) -> Traffic:
    given = {k: v for k, v in values.items() if v is not None}
    for name, value in given.items():
        message, ok = _RANGES[name]
        if not ok(value):
            raise PlanError(f"{message}, got {value:g}")
    data = base.model_dump()
    data.update({k: int(v) if k.endswith("_tokens") else v for k, v in given.items()})
    try:
        return Traffic.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"traffic: {exc.errors()[0]['msg']}") from exc


def demand_from_fleet(
    fleet: Fleet,
    failover: bool = False,
    mix: Mapping[str, float] | None = None,
    **overrides: float | None,
) -> Demand:
    """The fleet's traffic with flags overriding it (None: keep the fleet's)."""
    unknown = set(overrides) - set(TRAFFIC_FLAGS)
    if unknown:
        raise PlanError(f"not traffic fields: {', '.join(sorted(unknown))}")
    if mix is not None:
        mix = _normalised_mix(fleet, mix)
    return Demand(_traffic(fleet.traffic, overrides), failover, mix)


def _normalised_mix(fleet: Fleet, mix: Mapping[str, float]) -> dict[str, float]:
    for name, share in mix.items():
        if name not in fleet.models:
            known = ", ".join(fleet.models)
            raise PlanError(f"--mix {name}: not a model of the fleet ({known})")
        if share < 0:
            raise PlanError(f"--mix {name}={share:g}: a share must be >= 0")
    total = sum(mix.values())
    if total <= 0:
        raise PlanError("--mix: the shares add up to 0")
    return {name: mix.get(name, 0.0) / total for name in fleet.models}


@dataclass(frozen=True)
class ModelDemand:
    """One planned model's requests per second at the peak."""

    model: str
    share: float  # of all requests
    rps: float  # in normal operation
    failover_rps: float = 0.0  # more, while the primary it backs up is down (--failover)

    @property
    def standby(self) -> bool:
        return self.share <= 0

    @property
    def need_rps(self) -> float:
        """What its replicas must serve within the SLO."""
        return self.rps + self.failover_rps


@dataclass(frozen=True)
class FleetDemand:
    """Every planned model's demand, and the models no route reaches (not planned)."""

    models: dict[str, ModelDemand]
    unreached: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def planned(self) -> list[str]:
        return list(self.models)

    def shares(self, members: list[str]) -> dict[str, float]:
        """The members' traffic mix among themselves (equal when none has a share)."""
        total = sum(self.models[m].share for m in members)
        if total <= 0:
            return {m: 1.0 / len(members) for m in members}
        return {m: self.models[m].share / total for m in members}


def _fleet_with(fleet: Fleet, traffic: Traffic) -> Fleet:
    return Fleet.model_validate({**fleet.model_dump(), "traffic": traffic.model_dump()})


def model_demands(fleet: Fleet, demand: Demand) -> FleetDemand:
    """Each reached model's share and peak demand (the traffic rule, or --mix)."""
    sized = _fleet_with(fleet, demand.traffic)
    shares = dict(demand.mix) if demand.mix is not None else model_shares(sized)
    reached = reached_models(sized)
    planned = [m for m in fleet.models if m in reached or shares.get(m, 0.0) > 0]
    peak = demand.peak_rps
    extra = _failover_extra(sized, shares) if demand.failover else {}
    models = {
        m: ModelDemand(m, shares.get(m, 0.0), shares.get(m, 0.0) * peak, extra.get(m, 0.0) * peak)
        for m in planned
    }
    unreached = tuple(m for m in fleet.models if m not in models)
    notes = [
        f"{m}: no route reaches it and --mix gives it no share; not planned" for m in unreached
    ]
    return FleetDemand(models, unreached, notes)


def _failover_extra(fleet: Fleet, shares: Mapping[str, float]) -> dict[str, float]:
    """Share of all requests each fallback takes over when the primary it backs up fails:
    the largest over those primaries of the primary's share sent through routes where this
    model is the first fallback (a primary's share split over its routes by route share)."""
    routes = route_shares(fleet)
    by_primary: dict[str, list[tuple[float, str | None]]] = {}
    for item in routes:
        targets = item.route.targets
        fallback = targets[1] if len(targets) > 1 else None
        by_primary.setdefault(targets[0], []).append((item.share, fallback))
    extra: dict[str, float] = {}
    for primary, own in by_primary.items():
        total = sum(share for share, _ in own)
        moved: dict[str, float] = {}
        for share, fallback in own:
            if fallback is not None:
                weight = share / total if total > 0 else 1.0 / len(own)
                moved[fallback] = moved.get(fallback, 0.0) + weight * shares.get(primary, 0.0)
        for fallback, share in moved.items():
            extra[fallback] = max(extra.get(fallback, 0.0), share)
    return extra
