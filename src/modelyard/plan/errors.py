"""Errors of `modelyard plan`."""

from __future__ import annotations

from modelyard.errors import ModelyardError


class PlanError(ModelyardError):
    """Planner input that cannot be planned (one line each)."""
