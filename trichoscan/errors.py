"""Typed errors raised by trichoscan.

The library raises only :class:`TrichoscanError` subclasses for bad input, so a caller
(the clinic app, the CLI) can catch one base class. Each message says what was wrong and
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "TrichoscanError",
    "InputError",
    "ImageReadError",
    "CalibrationError",
    "ModelError",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_PARTIAL",
    "EXIT_FAILED",
]

#: CLI exit codes, shared by every command.
EXIT_OK = 0  # everything processed
EXIT_USAGE = 2  # usage error (Click's own code)
EXIT_PARTIAL = 3  # some inputs failed, the others were written
EXIT_FAILED = 4  # nothing could be processed


class TrichoscanError(Exception):
    """Base class of every error trichoscan raises on purpose."""


class InputError(TrichoscanError, ValueError):
    """An argument or input is unusable (wrong shape, type, range, empty image, ...)."""


class ImageReadError(InputError):
    """A photo could not be read: missing, truncated, corrupt, unsupported or too large."""


class CalibrationError(InputError):
    """The scale (µm per pixel) is missing where required, implausible or unknown."""


class ModelError(TrichoscanError):
    """Segmentation model weights are missing, corrupt or do not match their model card."""
