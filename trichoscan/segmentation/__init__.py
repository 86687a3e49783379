"""Hair segmenters: the classical baseline and the U-Net, chosen by name.

``"auto"`` picks the U-Net when its weights are installed (and its model card does not
mark it unfit for automatic use) and the classical segmenter otherwise; the U-Net module
(and torch) is imported only when asked about.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from .classical import segment_classical

__all__ = ["SEGMENTERS", "resolve_segmenter_name", "segment_classical"]

log = logging.getLogger(__name__)

#: Names accepted by ``segmenter=`` besides ``"auto"``.
SEGMENTERS = ("classical", "unet")


def _unet_weights_available(model_dir: Path | str | None = None) -> bool:
    """True when the U-Net module imports and reports weights fit for ``"auto"``."""
    try:
        from . import unet
    except ImportError:
        return False
    try:
        return bool(unet.auto_choice(model_dir)[0])
    except AttributeError:
        return False


def resolve_segmenter_name(name: str, model_dir: Path | str | None = None) -> str:
    """Map a requested segmenter name to the one that will run.

    Parameters
    ----------
    name : str
        ``"auto"``, ``"classical"`` or ``"unet"`` (case-insensitive).
    model_dir : path, optional
        The U-Net model folder ``"auto"`` looks at (default: the shipped one).

    Returns
    -------
    str
        ``"unet"`` or ``"classical"``; ``"auto"`` becomes ``"unet"`` when its weights are
        installed and its card allows automatic use, and ``"classical"`` otherwise.

    Raises
    ------
    InputError
        For an unknown name.
    """
    if not isinstance(name, str):
        raise InputError(f"segmenter must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "auto":
        return "unet" if _unet_weights_available(model_dir) else "classical"
    if key not in SEGMENTERS:
        choices = ", ".join(("auto", *SEGMENTERS))
        raise InputError(f"unknown segmenter {name!r}; choose one of: {choices}")
    return key
