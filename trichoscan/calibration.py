"""Image scale (µm per pixel): given, from a device profile, or read from the photo.

Scale is never guessed. Every result records the scale it used and where it came from, and
with no scale every µm or cm² quantity is ``None``.
"""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np

from .errors import CalibrationError

__all__ = [
    "Calibration",
    "DeviceProfile",
    "MIN_UM_PER_PX",
    "MAX_UM_PER_PX",
    "ScaleBar",
    "device_profiles",
    "find_scale_bar",
    "find_scale_bar_gray",
    "scan_overlays",
    "read_scale_bar",
    "resolve_calibration",
    "RulerMeasurement",
    "measure_ruler_scale",
]

logger = logging.getLogger(__name__)

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


# --- Reading a burned-in scale bar -------------------------------------------------------

#: Scale-bar styles recognised in photos, with the physical length their label states.
#: Labels cannot be read without OCR, so each style's length is a documented assumption:
#:
#: ``"l-corner"``: two thin perpendicular lines of equal length meeting at a corner (an "L"),
#: with a dark label box holding light text just past the free end of the horizontal arm,
#: as the FDU/BSRL trichoscope software draws it in the bottom-left corner of its photos; its
#: label reads "1.0 mm" in every FDU image inspected, so the arms are taken as 1.0 mm.
#:
#: A red measuring circle (FDU) states its *area* in mm² in a label; without OCR it gives no
#: scale, so it is only masked out of the field (see ``trichoscan.preprocess``), never read.
SCALE_BAR_STYLES: dict[str, float] = {"l-corner": 1.0}

_LINE_OFFSET = 3  # px above/below (left/right of) a line pixel that must be background
_LINE_CONTRAST = 0.12  # line vs both sides, in 0..1 brightness
_LINE_MAX_THICK = 6  # px; drawn lines are 1-3 px (2x upsampled: 2-4)
_LINE_MAX_DEV = 0.06  # drawn lines have one colour (±this); hairs and skin do not
_PIECE_MIN_LEN = 12  # px; shorter pieces of line are not trusted
_ARM_RATIO_TOL = 0.015  # equal arms within 1.5 % (FDU: 360 vs 362 px); a hidden end differs more
_CORNER_TOL = 6  # px between the two arms' ends at the corner
_END_REFINE_PX = 4  # the free end is moved at most this far (JPEG blur), never onto a hair


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar found in a photo.

    Attributes
    ----------
    style : str
        Key of :data:`SCALE_BAR_STYLES`.
    length_px : float
        Length of the bar in pixels (mean of both arms of an "L").
    length_mm : float
        Physical length the style's label states.
    horizontal_px, vertical_px : float
        Lengths of the two arms (equal within 1.5 %; a check on square pixels).
    regions : tuple of (y0, y1, x0, x1)
        Rectangles (half-open) covering the bar and its label, to mask from the field.
    """

    style: str
    length_px: float
    length_mm: float
    horizontal_px: float
    vertical_px: float
    regions: tuple[tuple[int, int, int, int], ...]

    @property
    def um_per_px(self) -> float:
        """Micrometres per pixel implied by the bar."""
        return 1000.0 * self.length_mm / self.length_px

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Bool mask of ``shape`` covering the bar and its label."""
        out = np.zeros(shape, bool)
        for y0, y1, x0, x1 in self.regions:
            out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        return out


@dataclass(frozen=True)
class _Line:
    """A thin straight one-colour line: row (col) ``pos``, extent ``lo..hi`` inclusive."""

    pos: float
    lo: int
    hi: int
    thick: int
    level: float  # mean brightness of the line in the analysed image

    @property
    def length(self) -> int:
        return self.hi - self.lo + 1


def _thin_lines(d: np.ndarray, vertical: bool, min_len: int) -> list[_Line]:
    """Thin, straight, one-colour dark lines in ``d`` (horizontal, or vertical if asked).

    Pieces of one line interrupted by something as dark as the line (a hair under the
    drawn line hides its contrast) are joined.
    """
    o = _LINE_OFFSET
    if vertical:
        d = d.T  # a view; only the candidate bands get copied
    h, w = d.shape
    if h <= 2 * o:
        return []
    centre = d[o:-o]
    resp = np.zeros((h, w), bool)
    resp[o:-o] = (d[: -2 * o] - centre > _LINE_CONTRAST) & (d[2 * o :] - centre > _LINE_CONTRAST)
    # Only rows holding enough line pixels can hold a bar: label those bands alone
    # (labelling the whole image would cost more than everything else here).
    cand = np.count_nonzero(resp, axis=1) >= 0.3 * min_len
    if not cand.any():
        return []
    band = np.convolve(cand, np.ones(2 * _LINE_MAX_THICK + 1), mode="same") > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], band.view(np.int8), [0]))))
    lines: list[_Line] = []
    for r0, r1 in zip(edges[::2], edges[1::2], strict=True):
        sub_d = np.ascontiguousarray(d[r0:r1])
        sub_r = np.ascontiguousarray(resp[r0:r1]).view(np.uint8)
        pieces = _pieces_in_band(sub_d, sub_r, int(r0))
        lines.extend(ln for ln in _join_pieces(pieces, d) if ln.length >= min_len)
    return lines


def _pieces_in_band(d: np.ndarray, resp: np.ndarray, r0: int) -> list[_Line]:
    """Thin one-colour horizontal pieces of line in a band of rows starting at ``r0``."""
    import cv2

    # Bridge a few missing pixels (JPEG) along the line.
    resp = cv2.morphologyEx(resp, cv2.MORPH_CLOSE, np.ones((1, 7), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(resp, connectivity=8)
    pieces = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if bw < _PIECE_MIN_LEN or bh > _LINE_MAX_THICK or area < 0.9 * bw:
            continue
        sel = labels[y : y + bh, x : x + bw] == i
        # The line's core is the darkest pixel of each column; anti-aliased fringe rows
        # would otherwise make a uniform line look mottled.
        sub = np.where(sel, d[y : y + bh, x : x + bw], np.inf)
        core_row = np.argmin(sub, axis=0)
        core = sub[core_row, np.arange(bw)]
        ok = np.isfinite(core)
        vals = core[ok]
        if vals.size < 0.9 * bw:
            continue
        level = float(np.median(vals))
        # One colour along (nearly) all of it; a few odd pixels (a speck, the corner of
        # an "L") are tolerated.
        if np.mean(np.abs(vals - level) <= _LINE_MAX_DEV) < 0.9:
            continue
        pos = float(r0 + y + core_row[ok].mean())
        # Thickness: rows covering most of the length (not the odd fringe pixel).
        thick = max(1, int(np.count_nonzero(sel.sum(axis=1) >= 0.5 * bw)))
        pieces.append(_Line(pos, int(x), int(x + bw - 1), thick, level))
    return pieces


def _join_pieces(pieces: list[_Line], d: np.ndarray) -> list[_Line]:
    """Join collinear pieces of one drawn line across gaps where it lost its contrast.

    A line drawn over a dark hair keeps its own colour there but loses the contrast that
    detects it; so a gap is bridged when (nearly) every pixel along it has the line's colour.
    """
    out: list[_Line] = []
    for p in sorted(pieces, key=lambda p: p.lo):
        for k, prev in enumerate(out):
            if (
                abs(prev.pos - p.pos) > 1.5
                or abs(prev.level - p.level) > _LINE_CONTRAST / 2
                or p.lo <= prev.hi
            ):
                continue
            row = d[int(round(prev.pos)), prev.hi + 1 : p.lo]
            same = np.abs(row - (prev.level + p.level) / 2) <= _LINE_CONTRAST * 0.6
            if row.size and float(np.mean(same)) < 0.9:
                continue
            n0, n1 = prev.length, p.length
            out[k] = _Line(
                (prev.pos * n0 + p.pos * n1) / (n0 + n1),
                prev.lo,
                p.hi,
                max(prev.thick, p.thick),
                (prev.level * n0 + p.level * n1) / (n0 + n1),
            )
            break
        else:
            out.append(p)
    return out


def _refine_end(d: np.ndarray, line: _Line, start: int, step: int, vertical: bool) -> int:
    """Move a free end outwards over the line's JPEG-softened last pixels (a few px at most)."""
    idx = int(round(line.pos))
    prof = d[:, idx] if vertical else d[idx]
    i, n = start, prof.shape[0]
    for _ in range(_END_REFINE_PX):
        if 0 <= i + step < n and prof[i + step] <= line.level + _LINE_CONTRAST / 2:
            i += step
        else:
            break
    return i


def _has_label(gray: np.ndarray, y: float, x_free: int, direction: int, length: float):
    """Rectangle of a label (dark box with light text) just past a bar's free end, or None.

    Checked, not read: the strip past the end must be darker than the skin above it (the
    box) and hold a moderate share of pixels much brighter than both (the text).
    """
    h, w = gray.shape
    y0, y1 = int(y - 0.09 * length), int(y + 0.04 * length)
    if direction > 0:
        x0, x1 = int(x_free + 0.05 * length), int(x_free + 0.35 * length)
    else:
        x0, x1 = int(x_free - 0.35 * length), int(x_free - 0.05 * length)
    sy0 = int(y - 0.25 * length)  # skin reference above the box
    if min(y0, x0, sy0) < 0 or y1 > h or x1 > w or y1 - y0 < 6 or x1 - x0 < 10:
        return None
    box = gray[y0:y1, x0:x1]
    skin = float(np.median(gray[sy0:y0, x0:x1]))
    box_level = float(np.median(box))
    if box_level > skin - 0.08:
        return None
    text = np.mean(box > max(box_level + 0.35, min(0.8, skin + 0.2)))
    if not 0.03 <= text <= 0.45:
        return None
    pad = int(0.04 * length) + 2
    return (y0 - pad, y1 + pad, x0 - pad, x1 + pad)


def find_scale_bar(rgb: np.ndarray) -> ScaleBar | None:
    """Locate a recognised burned-in scale bar (see :data:`SCALE_BAR_STYLES`).

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1].

    Returns
    -------
    ScaleBar or None
        ``None`` when no bar of a known style is found. Built to avoid false positives: a
        bar needs two thin, straight, one-colour lines of equal length meeting at a corner,
        free ends that continue into nothing (not a drawn rectangle), and a label box with
        text at the free end of the horizontal arm.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        return None
    gray = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return find_scale_bar_gray(gray)


def find_scale_bar_gray(gray: np.ndarray) -> ScaleBar | None:
    """:func:`find_scale_bar` on a float32 luminance image in [0, 1]."""
    if gray.ndim != 2 or min(gray.shape) < 64:
        return None
    min_len = _bar_min_len(gray.shape)
    # Only the documented style: dark lines. (Light bars exist on other devices, but without
    # a known label convention they could not be given a length anyway.)
    horiz = _thin_lines(gray, False, min_len)
    if not horiz:
        return None
    return _bar_from_lines(gray, horiz, _thin_lines(gray, True, min_len))


def _bar_min_len(shape: tuple[int, ...]) -> int:
    return max(40, int(0.05 * min(shape[:2])))


def _bar_from_lines(gray: np.ndarray, horiz: list[_Line], vert: list[_Line]) -> ScaleBar | None:
    for hl in horiz:
        for vl in vert:
            bar = _match_l(gray, gray, hl, vl)
            if bar is not None:
                return bar
    return None


def _match_l(gray: np.ndarray, d: np.ndarray, hl: _Line, vl: _Line) -> ScaleBar | None:
    """An "L" scale bar from a horizontal and a vertical line, or None."""
    if abs(hl.level - vl.level) > _LINE_CONTRAST / 2:
        return None  # drawn in one colour
    # Corner: one end of the vertical arm on the horizontal arm's row, and one end of the
    # horizontal arm on the vertical arm's column.
    at_bottom = _reaches(d, vl, vl.hi, hl.pos, True)
    at_top = _reaches(d, vl, vl.lo, hl.pos, True)
    at_left = _reaches(d, hl, hl.lo, vl.pos, False)
    at_right = _reaches(d, hl, hl.hi, vl.pos, False)
    if not ((at_bottom or at_top) and (at_left or at_right)):
        return None
    # Each arm runs from the outer edge of the other arm to its own free end.
    outer = max(hl.thick, vl.thick) / 2
    if at_left:
        x_free = _refine_end(d, hl, hl.hi, +1, False)
        h_len = x_free + 0.5 - (vl.pos - outer)
        direction = +1
    else:
        x_free = _refine_end(d, hl, hl.lo, -1, False)
        h_len = (vl.pos + outer) - (x_free - 0.5)
        direction = -1
    if at_top:
        y_free = _refine_end(d, vl, vl.hi, +1, True)
        v_len = y_free + 0.5 - (hl.pos - outer)
    else:
        y_free = _refine_end(d, vl, vl.lo, -1, True)
        v_len = (hl.pos + outer) - (y_free - 0.5)
    if h_len <= 0 or v_len <= 0 or abs(h_len / v_len - 1) > _ARM_RATIO_TOL:
        return None
    if _continues(d, hl, x_free, True) or _continues(d, vl, y_free, False):
        return None  # a free end turning into another line: a drawn frame, not a bar
    label = _has_label(gray, hl.pos, x_free, direction, h_len)
    if label is None:
        return None
    pad = 4
    regions = (
        (
            int(hl.pos) - pad - hl.thick,
            int(hl.pos) + pad + hl.thick + 1,
            min(hl.lo, x_free) - pad,
            max(hl.hi, x_free) + pad + 1,
        ),
        (
            min(vl.lo, y_free) - pad,
            max(vl.hi, y_free) + pad + 1,
            int(vl.pos) - pad - vl.thick,
            int(vl.pos) + pad + vl.thick + 1,
        ),
        label,
    )
    length_px = round((h_len + v_len) / 2, 1)
    logger.debug("scale bar: L %.1f x %.1f px, label %s", h_len, v_len, label)
    return ScaleBar(
        "l-corner",
        length_px,
        SCALE_BAR_STYLES["l-corner"],
        round(h_len, 1),
        round(v_len, 1),
        regions,
    )


def _reaches(d: np.ndarray, line: _Line, end: int, target: float, vertical: bool) -> bool:
    """Whether ``line``'s ``end`` reaches ``target`` (the other arm): directly, or through
    pixels of the line's own colour (the line drawn over a dark hair that hid its contrast).
    """
    gap = target - end
    if abs(gap) <= _CORNER_TOL:
        return True
    if abs(gap) > 0.3 * line.length:
        return False
    lo, hi = sorted((end, int(round(target))))
    idx = int(round(line.pos))
    run = d[lo:hi, idx] if vertical else d[idx, lo:hi]
    if run.size == 0:
        return False
    return float(np.mean(np.abs(run - line.level) <= _LINE_CONTRAST * 0.6)) >= 0.9


def _continues(d: np.ndarray, line: _Line, free: int, horizontal: bool) -> bool:
    """Whether a perpendicular line of the same colour leaves the free end (a frame)."""
    o = _LINE_OFFSET + 6
    if horizontal:
        idx, lo, hi = int(round(line.pos)), free - 1, free + 2
        above = d[max(0, idx - 4 * o) : max(0, idx - o), max(0, lo) : hi]
        below = d[idx + o : idx + 4 * o, max(0, lo) : hi]
    else:
        idx, lo, hi = int(round(line.pos)), free - 1, free + 2
        above = d[max(0, lo) : hi, max(0, idx - 4 * o) : max(0, idx - o)].T
        below = d[max(0, lo) : hi, idx + o : idx + 4 * o].T
    for side in (above, below):
        if side.size and np.all(side.min(axis=1) <= line.level + _LINE_CONTRAST / 2):
            return True
    return False


def scan_overlays(gray: np.ndarray) -> tuple[ScaleBar | None, np.ndarray]:
    """A recognised scale bar and the mask of every drawn line, from one line search.

    A drawn line is dark or light, one colour, 1-4 px thick (anti-aliasing included),
    exactly horizontal or vertical and at least a tenth of the short image side long — a
    combination hairs practically never show. Masking all of them keeps scale bars of
    unknown style (whose label cannot be read) out of the analysed field. Where two such
    lines form an "L", the region past the horizontal arm's free end (where bars put their
    label) is masked too; an arm of an L may be as short as a scale bar's shortest arm
    (``_bar_min_len``), since a 1 mm bar at a coarse scale (8 µm/px) has a vertical arm of
    only ~45 px.

    Parameters
    ----------
    gray : numpy.ndarray
        Float32 luminance (H, W) in [0, 1].

    Returns
    -------
    bar : ScaleBar or None
        As :func:`find_scale_bar_gray`.
    mask : numpy.ndarray
        Bool (H, W): drawn lines, L labels, and the recognised bar with its label.
    """
    h, w = gray.shape
    out = np.zeros((h, w), bool)
    if min(h, w) < 64:
        return None, out
    bar_len = _bar_min_len(gray.shape)
    dark_h, dark_v = _thin_lines(gray, False, bar_len), _thin_lines(gray, True, bar_len)
    bar = _bar_from_lines(gray, dark_h, dark_v) if dark_h and dark_v else None
    light = 1.0 - gray
    min_len = max(40, int(0.1 * min(h, w)))
    for d, horiz, vert in (
        (gray, dark_h, dark_v),
        (light, _thin_lines(light, False, bar_len), _thin_lines(light, True, bar_len)),
    ):
        horiz = [ln for ln in horiz if ln.thick <= 4]
        vert = [ln for ln in vert if ln.thick <= 4]
        _mask_lines(out, d, horiz, vert, min_len)
    if bar is not None:
        out |= bar.mask((h, w))
    return bar, out


def _mask_lines(
    out: np.ndarray, d: np.ndarray, horiz: list[_Line], vert: list[_Line], min_len: int
) -> None:
    """Mark drawn lines (padded) and the label region of any "L" they form in ``out``.

    Lines of at least ``min_len`` are masked on their own; shorter ones only as an arm of
    an "L" (a lone short straight line may be a hair).
    """
    pad = 3

    def mark_h(ln: _Line) -> None:
        y = int(round(ln.pos))
        out[max(0, y - pad - 1) : y + pad + 2, max(0, ln.lo - pad) : ln.hi + pad + 1] = True

    def mark_v(ln: _Line) -> None:
        x = int(round(ln.pos))
        out[max(0, ln.lo - pad) : ln.hi + pad + 1, max(0, x - pad - 1) : x + pad + 2] = True

    for ln in horiz:
        if ln.length >= min_len:
            mark_h(ln)
    for ln in vert:
        if ln.length >= min_len:
            mark_v(ln)
    for hl in horiz:
        for vl in vert:
            if max(hl.length, vl.length) < min_len:
                continue
            left = _reaches(d, hl, hl.lo, vl.pos, False)
            right = _reaches(d, hl, hl.hi, vl.pos, False)
            corner = _reaches(d, vl, vl.hi, hl.pos, True) or _reaches(d, vl, vl.lo, hl.pos, True)
            if not (left or right) or not corner:
                continue
            mark_h(hl)
            mark_v(vl)
            n = hl.length
            y0, y1 = int(hl.pos - 0.12 * n), int(hl.pos + 0.06 * n) + 1
            if left:
                x0, x1 = hl.hi, int(hl.hi + 0.45 * n) + 1
            else:
                x0, x1 = int(hl.lo - 0.45 * n), hl.lo + 1
            out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True


def read_scale_bar(rgb: np.ndarray) -> Calibration | None:
    """Read the image scale from a burned-in scale bar, if the photo carries one.

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1] (as from :func:`trichoscan.io.read_image`).

    Returns
    -------
    Calibration or None
        ``Calibration(um_per_px, source="photo", detail="scale bar 1.0 mm = N px")``, or
        ``None`` when no bar of a recognised style is found (the caller then needs a given
        scale or a device profile; the scale is never guessed). A bar implying a scale
        outside the plausible range also gives ``None`` (logged).
    """
    bar = find_scale_bar(rgb)
    if bar is None:
        return None
    try:
        um = validate_um_per_px(bar.um_per_px)
    except CalibrationError:
        logger.warning("scale bar found but implies %.3f µm/px; ignored", bar.um_per_px)
        return None
    detail = f"scale bar {bar.length_mm:.1f} mm = {bar.length_px:.1f} px ({bar.style})"
    return Calibration(round(um, 4), "photo", detail=detail)


# --------------------------------------------------------------------------- ruler / micrometer


@dataclass(frozen=True)
class RulerMeasurement:
    """Scale measured from a photo of a stage micrometer or ruler.

    Attributes
    ----------
    um_per_px : float
        Measured scale.
    period_px : float
        Distance between neighbouring ticks, in pixels.
    angle_deg : float
        Direction across the ticks (0° = ticks are vertical lines along the image's x axis).
    n_periods : float
        How many tick spacings the measurement spans (more is more precise).
    peak_ratio : float
        Strength of the tick frequency against the spectrum's background (noise alone
        gives about 15).
    """

    um_per_px: float
    period_px: float
    angle_deg: float
    n_periods: float
    peak_ratio: float

    def calibration(self, spacing_um: float) -> Calibration:
        detail = (
            f"ruler: {spacing_um:g} µm ticks every {self.period_px:.3f} px "
            f"over {self.n_periods:.0f} spacings"
        )
        return Calibration(round(self.um_per_px, 5), "given", detail=detail)


#: The tick peak must stand this far above the median of the spectrum around it.
MIN_PEAK_RATIO = 100.0
#: At least this many tick spacings must be visible for a measurement.
MIN_PERIODS = 5.0


def measure_ruler_scale(rgb: np.ndarray, spacing_um: float) -> RulerMeasurement:
    """Measure µm per pixel from a photo of regularly spaced ticks (micrometer, ruler).

    The ticks' period is found as the strongest peak of the photo's 2-D power spectrum,
    then refined on a 1-D projection across the ticks by maximising the periodogram over a
    fine grid of periods (sub-pixel precise over many periods).

    Parameters
    ----------
    rgb : numpy.ndarray
        Photo as from :func:`trichoscan.io.read_image` (H, W, 3) float in [0, 1], or grey.
    spacing_um : float
        Distance between neighbouring ticks of the finest regular division (e.g. 10 µm for
        a 1 mm / 100 stage micrometer, 1000 µm for a millimetre ruler).

    Raises
    ------
    CalibrationError
        When no regular ticks are found, too few are visible, or the result is implausible.
    """
    import cv2

    if not (isinstance(spacing_um, int | float) and math.isfinite(spacing_um) and spacing_um > 0):
        raise CalibrationError(f"tick spacing must be a positive number of µm, got {spacing_um!r}")
    img = np.asarray(rgb, dtype=np.float32)
    gray = img.mean(axis=2) if img.ndim == 3 else img
    h, w = gray.shape
    # Remove illumination (large blur) so the spectrum is dominated by the ticks.
    sigma = max(h, w) / 16.0
    flat = gray - cv2.GaussianBlur(gray, (0, 0), sigma)
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(flat * window))) ** 2
    cy, cx = h // 2, w // 2
    fy = (np.arange(h) - cy) / h
    fx = (np.arange(w) - cx) / w
    radius = np.hypot(fy[:, None], fx[None, :])
    # Ignore frequencies below ~MIN_PERIODS cycles across the photo, and the upper half-plane
    # duplicate (the spectrum of a real image is symmetric).
    band = (radius > MIN_PERIODS / min(h, w)) & (radius < 0.45)
    band[:cy] = False
    band[cy, :cx] = False
    if not band.any():
        raise CalibrationError("photo too small to measure a ruler")
    score = np.where(band, power, 0.0)
    py, px = np.unravel_index(int(np.argmax(score)), score.shape)
    ring = band & (np.abs(radius - radius[py, px]) < 0.02)
    peak_ratio = float(power[py, px] / max(np.median(power[ring]), 1e-12))
    if peak_ratio < MIN_PEAK_RATIO:
        raise CalibrationError(
            "no regular ruler or micrometer ticks found in the photo (tick peak "
            f"{peak_ratio:.1f}x the background, need {MIN_PEAK_RATIO:g}x); photograph the "
            "ticks in focus, filling the field"
        )
    freq = np.array([fx[px], fy[py]], dtype=float)
    period0 = 1.0 / float(np.hypot(*freq))
    angle0 = math.atan2(freq[1], freq[0])
    angle_rad, period = _refine_ticks(flat, angle0, period0)
    direction = np.array([math.cos(angle_rad), math.sin(angle_rad)])
    extent = _extent_along(h, w, direction)
    n_periods = extent / period
    if n_periods < MIN_PERIODS:
        raise CalibrationError(
            f"only {n_periods:.1f} tick spacings visible; need {MIN_PERIODS:g} or more"
        )
    um = spacing_um / period
    validate_um_per_px(um)
    angle = math.degrees(angle_rad) % 180.0
    return RulerMeasurement(um, period, angle, n_periods, peak_ratio)


def _extent_along(h: int, w: int, direction: np.ndarray) -> float:
    """Length of the image's projection on ``direction``."""
    return abs(direction[0]) * (w - 1) + abs(direction[1]) * (h - 1)


def _projection(flat: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Quarter-pixel profile of ``flat`` across lines perpendicular to ``angle`` (radians)."""
    h, w = flat.shape
    ys, xs = np.mgrid[0:h, 0:w]
    s = (xs * math.cos(angle) + ys * math.sin(angle)).ravel()
    step = 0.25
    idx = np.floor((s - s.min()) / step).astype(np.int64)
    sums = np.bincount(idx, weights=flat.ravel().astype(np.float64))
    counts = np.bincount(idx)
    ok = counts > 0
    profile = sums[ok] / counts[ok]
    return (np.flatnonzero(ok) + 0.5) * step, profile - profile.mean()


def _strength(pos: np.ndarray, profile: np.ndarray, period: float) -> float:
    """Periodogram magnitude of the profile at ``period``."""
    return float(np.abs(np.dot(profile, np.exp(-2j * np.pi * pos / period))))


def _refine_ticks(flat: np.ndarray, angle0: float, period0: float) -> tuple[float, float]:
    """Angle and period maximising the periodogram near the spectral estimate.

    The spectral peak is only bin-accurate; a wrong angle would stretch the period by
    1 / cos(error), so angle and period are refined together (coarse grid, then fine).
    """
    best = (-1.0, angle0, period0)
    for span, n_angles, rel in ((math.radians(6.0), 25, 0.03), (math.radians(0.5), 21, 0.004)):
        centre_angle, centre_period = best[1], best[2]
        for angle in centre_angle + np.linspace(-span, span, n_angles):
            pos, profile = _projection(flat, float(angle))
            for period in centre_period * np.linspace(1 - rel, 1 + rel, 41):
                value = _strength(pos, profile, float(period))
                if value > best[0]:
                    best = (value, float(angle), float(period))
    _, angle, period = best
    pos, profile = _projection(flat, angle)
    lo, hi = period * 0.9995, period * 1.0005
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(30):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if _strength(pos, profile, a) > _strength(pos, profile, b):
            hi = b
        else:
            lo = a
    return angle, (lo + hi) / 2.0
