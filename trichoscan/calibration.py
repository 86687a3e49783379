"""Image scale (µm per pixel): given, from a device profile, or read from the photo.

Scale is never guessed. Every result records the scale it used and where it came from, and
with no scale every µm or cm² quantity is ``None``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from .errors import CalibrationError

__all__ = [
    "Calibration",
    "DeviceProfile",
    "MIN_UM_PER_PX",
    "MAX_UM_PER_PX",
    "device_profiles",
    "resolve_calibration",
]

#: Plausible range of trichoscopy scales. 0.5 µm/px is beyond any dermatoscope's optics,
#: 50 µm/px would make a 60 µm terminal hair about one pixel wide.
MIN_UM_PER_PX = 0.5
MAX_UM_PER_PX = 50.0

CalibrationSource = Literal["given", "profile", "photo", "none"]


@dataclass(frozen=True)
class Calibration:
    """The scale used for one analysis and where it came from.

    Parameters
    ----------
    um_per_px : float or None
        Micrometres per pixel of the *input* image; ``None`` when unknown.
    source : {'given', 'profile', 'photo', 'none'}
        Where the scale came from.
    device : str, optional
        Device-profile name, when the scale came from a profile.
    detail : str
        Free text for people (e.g. "scale bar 1.0 mm = 361 px").
    """

    um_per_px: float | None
    source: CalibrationSource = "given"
    device: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.um_per_px is None:
            if self.source != "none":
                raise CalibrationError(
                    f"calibration source {self.source!r} needs a µm-per-pixel value"
                )
            return
        validate_um_per_px(self.um_per_px)

    @property
    def known(self) -> bool:
        """Whether a scale is known."""
        return self.um_per_px is not None

    @property
    def mm2_per_px(self) -> float | None:
        """Area of one pixel in mm², or ``None`` without scale."""
        if self.um_per_px is None:
            return None
        return (self.um_per_px * 1e-3) ** 2

    def to_dict(self) -> dict:
        return {
            "um_per_px": self.um_per_px,
            "source": self.source,
            "device": self.device,
            "detail": self.detail,
        }

    @classmethod
    def unknown(cls) -> Calibration:
        return cls(None, "none")


@dataclass(frozen=True)
class DeviceProfile:
    """A dermatoscope set-up with a fixed, measured scale."""

    name: str
    um_per_px: float
    description: str = ""
    field_width_mm: float | None = None
    field_height_mm: float | None = None


def validate_um_per_px(um_per_px: float) -> float:
    """Return ``um_per_px`` as float or raise :class:`CalibrationError` if implausible."""
    try:
        value = float(um_per_px)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"µm per pixel must be a number, got {um_per_px!r}") from exc
    if not math.isfinite(value) or not (MIN_UM_PER_PX <= value <= MAX_UM_PER_PX):
        raise CalibrationError(
            f"µm per pixel {um_per_px!r} is outside the plausible trichoscopy range "
            f"{MIN_UM_PER_PX}–{MAX_UM_PER_PX}; check the value (is it mm or pixels per µm?)"
        )
    return value


@cache
def device_profiles() -> dict[str, DeviceProfile]:
    """Device profiles shipped in ``trichoscan/devices.toml``, by name."""
    text = resources.files("trichoscan").joinpath("devices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    profiles = {}
    for name, entry in data.get("device", {}).items():
        profiles[name] = DeviceProfile(
            name=name,
            um_per_px=validate_um_per_px(entry["um_per_px"]),
            description=entry.get("description", ""),
            field_width_mm=entry.get("field_width_mm"),
            field_height_mm=entry.get("field_height_mm"),
        )
    return profiles


def resolve_calibration(calibration: float | str | Calibration | None) -> Calibration:
    """Turn the user's ``calibration`` argument into a :class:`Calibration`.

    Parameters
    ----------
    calibration : float, str, Calibration or None
        A µm-per-pixel number, a device-profile name, a :class:`Calibration`, or ``None``
        (unknown scale: no µm or cm² results, unless the photo carries a readable scale bar).

    Raises
    ------
    CalibrationError
        If the number is implausible or the profile name is unknown.
    """
    if calibration is None:
        return Calibration.unknown()
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, bool):
        raise CalibrationError("calibration must be µm per pixel, a device name or None")
    if isinstance(calibration, str):
        profiles = device_profiles()
        if calibration not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise CalibrationError(
                f"unknown device profile {calibration!r}; known profiles: {known}"
            )
        profile = profiles[calibration]
        return Calibration(profile.um_per_px, "profile", device=profile.name)
    return Calibration(validate_um_per_px(calibration), "given")
