"""trichoscan: hair count, density, thickness and change from trichoscopy photos.

The public API is imported lazily so that ``import trichoscan`` stays fast and torch is
never imported unless the U-Net segmenter runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CalibrationError,
    ImageReadError,
    InputError,
    ModelError,
    TrichoscanError,
)

if TYPE_CHECKING:  # pragma: no cover
    from .calibration import Calibration
    from .comparison import Comparison, Phototrichogram, compare, phototrichogram
    from .counting import HairTable, count_hairs
    from .metrics import Analysis, WidthCutoffs
    from .pipeline import Pipeline, PipelineConfig, analyze, segment

__all__ = [
    "__version__",
    "analyze",
    "segment",
    "count_hairs",
    "compare",
    "Comparison",
    "phototrichogram",
    "Phototrichogram",
    "Pipeline",
    "PipelineConfig",
    "Analysis",
    "HairTable",
    "Calibration",
    "WidthCutoffs",
    "TrichoscanError",
    "InputError",
    "ImageReadError",
    "CalibrationError",
    "ModelError",
]

_LAZY = {
    "analyze": "pipeline",
    "segment": "pipeline",
    "Pipeline": "pipeline",
    "PipelineConfig": "pipeline",
    "count_hairs": "counting",
    "HairTable": "counting",
    "Analysis": "metrics",
    "WidthCutoffs": "metrics",
    "Calibration": "calibration",
    "compare": "comparison",
    "Comparison": "comparison",
    "phototrichogram": "comparison",
    "Phototrichogram": "comparison",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trichoscan' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
