"""Adapters for real serving engines and the local launcher (`modelyard up` / `down`)."""

from modelyard.engines.adapters import ADAPTERS, adapter_for
from modelyard.engines.base import EngineAdapter, EngineMetrics, LaunchSpec

__all__ = ["ADAPTERS", "EngineAdapter", "EngineMetrics", "LaunchSpec", "adapter_for"]
