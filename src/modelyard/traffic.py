"""How much traffic a fleet gets and how it divides between its models: THE traffic rule, read
by plan, sim, bench and compare.

Peak rate: daily_active_users x requests_per_user / 86,400 s x peak_factor.

Shares (docs/fleet.md, "How traffic is shared"):
- a fleet without routes: clients name models directly; every model gets an equal share;
- with routes: each task route gets its `traffic.tasks` share (0 when not stated); the default
  route takes the rest. With no default route, the stated task shares are scaled to add up to 1
  (equal shares when none is stated);
- within a route, its first target (the primary) serves 1 - fallback_rate of the route's
  requests and its second target (the first fallback) serves fallback_rate. The default
  fallback_rate is 0: a fallback serves only the primary's failures, so plans keep it as
  standby capacity and simulations send it nothing;
- a model no route reaches gets no share.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.fleet import Fleet, Route, Traffic

SECONDS_PER_DAY = 86_400.0


def peak_rate_rps(traffic: Traffic) -> float:
    """Requests per second at the daily peak."""
    per_day = traffic.daily_active_users * traffic.requests_per_user
    return per_day / SECONDS_PER_DAY * traffic.peak_factor


@dataclass(frozen=True)
class RouteShare:
    route: Route
    share: float  # of all requests

    @property
    def label(self) -> str:
        if self.route.match is not None:
            return f"task {self.route.match.task}"
        return self.route.name or "default route"


def route_shares(fleet: Fleet) -> list[RouteShare]:
    """Each route's share of all requests (they add up to 1 when the fleet has routes)."""
    tasks = fleet.traffic.tasks
    task_routes = [r for r in fleet.routes if r.match is not None]
    default = fleet.default_route()
    if default is not None:
        shares = [RouteShare(r, tasks.get(r.match.task, 0.0)) for r in task_routes if r.match]
        rest = max(1.0 - sum(s.share for s in shares), 0.0)
        return [*shares, RouteShare(default, rest)]
    if not task_routes:
        return []
    stated = {id(r): tasks.get(r.match.task, 0.0) for r in task_routes if r.match}
    total = sum(stated.values())
    if total <= 0:
        return [RouteShare(r, 1.0 / len(task_routes)) for r in task_routes]
    return [RouteShare(r, stated[id(r)] / total) for r in task_routes]


def model_shares(fleet: Fleet) -> dict[str, float]:
    """Each model's share of all requests, every model of the fleet included (0: none)."""
    shares = dict.fromkeys(fleet.models, 0.0)
    routes = route_shares(fleet)
    if not fleet.routes:
        return dict.fromkeys(fleet.models, 1.0 / len(fleet.models))
    fallback_rate = fleet.traffic.fallback_rate
    for item in routes:
        targets = item.route.targets
        if len(targets) == 1:
            shares[targets[0]] += item.share
            continue
        shares[targets[0]] += item.share * (1.0 - fallback_rate)
        shares[targets[1]] += item.share * fallback_rate
    return shares


def reached_models(fleet: Fleet) -> list[str]:
    """Models some route sends requests to, first or as a fallback (all, without routes)."""
    if not fleet.routes:
        return list(fleet.models)
    reached = {t for r in fleet.routes for t in r.targets}
    return [m for m in fleet.models if m in reached]
