"""Simulator errors.

ModelyardError
└── SimError                    a simulation that cannot run as asked
    ├── CalibrationError        a calibration file is missing or invalid
    └── EngineStartError        an engine cannot start (e.g. vLLM-like out of memory)
"""

from __future__ import annotations

from modelyard.errors import ModelyardError


class SimError(ModelyardError):
    """A simulation that cannot run as asked."""


class CalibrationError(SimError):
    """A calibration file is missing or invalid."""


class EngineStartError(SimError):
    """A simulated engine fails to start, with the message the real engine would print."""
