"""The fleet file: which models a team serves, where they run, how traffic reaches them.

`load_fleet()` reads YAML, validates it with the schema (`schema.py`), then cross-checks it
against the catalog (`checks.py`). Every problem comes back as `file:line: dotted.path: message`.
"""

from modelyard.fleet.checks import (
    At,
    Problem,
    check_fleet,
)
from modelyard.fleet.load import (
    LoadedFleet,
    fleet_json_schema,
    load_fleet,
    parse_fleet,
    single_model_fleet,
)
from modelyard.fleet.schema import (
    CPU_ENGINES,
    DEFAULT_MEMORY_LIMIT,
    TENSOR_PARALLEL_ENGINES,
    BreakerPolicy,
    EngineName,
    Fleet,
    FleetModel,
    Fraction,
    GatewayConfig,
    HealthPolicy,
    Policy,
    PositiveFraction,
    RateLimit,
    RetryPolicy,
    Route,
    RouteMatch,
    SharedGroup,
    SharedPlacement,
    Sharing,
    Slo,
    Timeouts,
    Traffic,
)

__all__ = [
    "CPU_ENGINES",
    "DEFAULT_MEMORY_LIMIT",
    "TENSOR_PARALLEL_ENGINES",
    "At",
    "BreakerPolicy",
    "EngineName",
    "Fleet",
    "FleetModel",
    "Fraction",
    "GatewayConfig",
    "HealthPolicy",
    "LoadedFleet",
    "Policy",
    "PositiveFraction",
    "Problem",
    "RateLimit",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "SharedGroup",
    "SharedPlacement",
    "Sharing",
    "Slo",
    "Timeouts",
    "Traffic",
    "check_fleet",
    "fleet_json_schema",
    "load_fleet",
    "parse_fleet",
    "single_model_fleet",
]
