"""Engine errors.

ModelyardError
└── EngineError                  an engine cannot be launched, found or stopped
    ├── EngineNotInstalledError  its binary or environment is missing (names the make target)
    └── EngineStartupError       it exited or never became ready during start
"""

from __future__ import annotations

from modelyard.errors import ModelyardError


class EngineError(ModelyardError):
    """An engine cannot be launched, found or stopped."""


class EngineNotInstalledError(EngineError):
    """The engine's binary, environment or model files are missing."""


class EngineStartupError(EngineError):
    """The engine exited or never became ready during start."""
