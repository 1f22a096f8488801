"""The catalog: model architectures, GPUs and quantization profiles, each sourced and dated.

`Catalog.load()` reads the built-in YAML files next to this module and, optionally, user files
that add or replace entries by name (a user entry replaces the built-in one whole).
"""

from modelyard.catalog.catalog import Catalog
from modelyard.catalog.entries import (
    Alias,
    GpuSpec,
    ModelSpec,
    MoeSpec,
    Price,
    QuantProfile,
    SlidingWindow,
)

__all__ = [
    "Alias",
    "Catalog",
    "GpuSpec",
    "ModelSpec",
    "MoeSpec",
    "Price",
    "QuantProfile",
    "SlidingWindow",
]
