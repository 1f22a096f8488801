"""Which models may answer a request, in which order, and which replica of each.

Resolution: a task (`X-Modelyard-Task` header or `metadata.task`) that a route matches wins;
else `model` naming a route alias (`default` is the route without a match); else `model`
naming a fleet model: the route where it is the primary, or that model alone; else, with no
`model`, the default route. An unknown `model` is a 404.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from modelyard.fleet import Fleet, Route


class RouteNotFoundError(LookupError):
    """The request names a model that is neither a model nor a route alias."""


@dataclass(frozen=True)
class Resolution:
    route: str
    models: tuple[str, ...]


class Router:
    def __init__(self, fleet: Fleet) -> None:
        self._by_task = {r.match.task: r for r in fleet.routes if r.match is not None}
        self._aliases = {r.name: r for r in fleet.routes if r.name is not None}
        default = fleet.default_route()
        self._default = tuple(default.targets) if default else tuple(fleet.models)
        self._default_name = default.name if default and default.name else "default"
        self._by_primary: dict[str, Route] = {}
        for route in fleet.routes:
            self._by_primary.setdefault(route.targets[0], route)
        self._models = set(fleet.models)

    def names(self) -> list[str]:
        """Everything a client may send as `model`."""
        return sorted({*self._aliases, "default", *self._models})

    def routes(self) -> list[Resolution]:
        """Every route a request can take: by task, by alias, and the default."""
        routes = [Resolution(f"task:{task}", tuple(r.targets)) for task, r in self._by_task.items()]
        routes += [Resolution(name, tuple(r.targets)) for name, r in self._aliases.items()]
        return [*routes, Resolution(self._default_name, self._default)]

    def resolve(self, model: str | None, task: str | None) -> Resolution:
        if task is not None and task in self._by_task:
            route = self._by_task[task]
            return Resolution(f"task:{task}", tuple(route.targets))
        if model is None or model == "default":
            return Resolution(self._default_name, self._default)
        if model in self._aliases:
            return Resolution(model, tuple(self._aliases[model].targets))
        if model in self._models:
            primary_of = self._by_primary.get(model)
            targets = tuple(primary_of.targets) if primary_of is not None else (model,)
            return Resolution(model, targets)
        raise RouteNotFoundError(model)


def pick_replica(
    replicas: list[str], outstanding: dict[str, float], rng: random.Random
) -> str | None:
    """Least outstanding requests of two random replicas (power of two choices); the caller
    leaves out replicas it may not use (tried already, backing off, breaker open)."""
    if not replicas:
        return None
    if len(replicas) == 1:
        return replicas[0]
    first, second = rng.sample(replicas, 2)
    return first if outstanding.get(first, 0) <= outstanding.get(second, 0) else second
