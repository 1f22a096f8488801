"""The `modelyard` command. One thin command per capability; the logic lives in the package."""

from modelyard.cli import (  # noqa: F401  (each registers its commands)
    deploy,
    engines,
    fleet,
    gateway,
    measure,
    plan,
    sim,
)
from modelyard.cli.common import app
from modelyard.cli.entry import main

__all__ = ["app", "main"]
