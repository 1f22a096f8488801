"""modelyard's exception tree.

    ModelyardError                 root: the CLI prints its message as one line, exit code 1
    ├── ConfigError                a fleet or catalog file is wrong; carries one line per problem
    │   ├── FleetError             the fleet file
    │   └── CatalogError           a catalog file (built-in or the user's)
    ├── UnknownNameError           a model, GPU, quantization or engine name the catalog lacks
    ├── PlacementError             models a placement cannot put where it is asked to
    └── UnsupportedError           a valid request this profile/engine cannot do

Subpackages add their own errors below ModelyardError in their own errors.py.
"""

from __future__ import annotations


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose."""


class ConfigError(ModelyardError):
    """A configuration file has one or more problems, each already formatted as a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class FleetError(ConfigError):
    """The fleet file is invalid."""


class CatalogError(ConfigError):
    """A catalog file is invalid."""


class UnknownNameError(ModelyardError):
    """A name is not in the catalog; the message lists what is."""


class PlacementError(ModelyardError):
    """Models a placement cannot put where asked (e.g. a group whose members name other GPUs)."""


class UnsupportedError(ModelyardError):
    """The request is valid but cannot be done (e.g. no llm-compressor recipe for GGUF)."""
