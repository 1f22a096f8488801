"""Errors of `modelyard deploy`."""

from __future__ import annotations

from modelyard.errors import ModelyardError


class DeployError(ModelyardError):
    """A fleet cannot be rendered as asked, or a manifest directory cannot be read."""
