"""Synthetic trichoscopy renderer with exact ground truth.

The renderer is the project's ruler (accuracy benchmarks) and the training data of the
U-Net: it draws a dermatoscope photo of the scalp together with the geometry of every
hair, so that counts, densities, widths and classes are known exactly.

What a scene holds
------------------
* Scale 2.5-9 µm/px (log-uniform); density 60-320 hairs/cm² as a Poisson process of
  follicular units of 1-4 hairs (20/45/30/5 %) that leave one opening side by side and
  fan out in a narrow V without crossing one another (as on FDU 70x photos); a hair-flow
  field (one dominant direction, slow spatial drift, jitter).
* Same-site pairs (:func:`render_pair`): one site drawn once in world coordinates and
  photographed twice (moved, rotated, re-lit, re-focused), with no change, a known
  density change, or phototrichogram growth between the photos.
* Widths: vellus 10-30 µm (tapered), intermediate 30-60, terminal 60-120; the class is
  derived from the width with ``VELLUS_MAX_UM`` / ``TERMINAL_MIN_UM``.
* Clipped stubs 0.2-2 mm (shaved scalp) plus a few long, gently curved unclipped hairs;
  some scenes are unshaved (mostly long hairs).
* The subsurface shaft: a blue-grey (Tyndall) wedge from the exit point into the follicle
  (0.3-1 mm), drawn but not in the hair mask (``Render.subsurface_mask``).
* Skin tones very light to very dark with horny-layer texture, furrows, follicle
  openings, yellow and black dots, scale flakes, vessels, perifollicular halos and
  honeycomb pigment; optics: illumination gradient, vignetting (dark corners),
  glare, air bubbles, defocus (global and depth-of-field), half-resolution capture,
  sensor noise and JPEG; burned-in header, footer, scale bar and measuring circle.

Conventions
-----------
* Pixel ``(row i, column j)`` has its centre at ``(x, y) = (j, i)``; all coordinates are
  ``(x, y)`` floats in pixels.
* A hair is a centre line (polyline) from its **exit point** (where the shaft leaves the
  skin) to its tip, with a width profile. Its mask is every pixel whose centre lies within
  ``max(width/2, 0.5)`` pixels of the centre line (flat caps at both ends), plus the pixels
  the centre line passes through, so that even sub-pixel hairs stay 8-connected.
* Masks are restricted to ``field_mask``; counting flags are relative to it.
* Everything physical is drawn in micrometres and converted with the scene's scale.
* Only ``numpy.random.default_rng(seed)`` is used; a seed gives a bit-identical render
  (for a given ``RENDERER_VERSION`` and OpenCV/NumPy build).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# The true class of a rendered hair uses the metrics' own cut-offs (re-exported here).
from .metrics import TERMINAL_MIN_UM, VELLUS_MAX_UM

__all__ = [
    "RENDERER_VERSION",
    "VELLUS_MAX_UM",
    "TERMINAL_MIN_UM",
    "HAIR_COLOURS",
    "SKIN_TONES",
    "SynthConfig",
    "HairTruth",
    "Render",
    "hair_class_from_width",
    "render",
    "PAIR_KINDS",
    "PairConfig",
    "RenderPair",
    "render_pair",
    "write_render",
    "write_pair",
    "render_dataset",
    "realism_stats",
]

logger = logging.getLogger(__name__)

RENDERER_VERSION = "1.1.0"


# Linear-ish RGB in [0, 1] of the hair shaft (before shading).
HAIR_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.18, 0.18, 0.22),
    "dark_brown": (0.25, 0.18, 0.13),
    "brown": (0.32, 0.21, 0.12),
    "blond": (0.72, 0.58, 0.36),
    "grey": (0.55, 0.55, 0.56),
    "white": (0.90, 0.90, 0.88),
}

# Skin base colour seen through a polarised dermatoscope (RGB in [0, 1]).
SKIN_TONES: dict[str, tuple[float, float, float]] = {
    "very_light": (0.71, 0.72, 0.75),
    "light": (0.77, 0.69, 0.66),
    "medium": (0.72, 0.53, 0.41),
    "dark": (0.48, 0.32, 0.23),
    "very_dark": (0.28, 0.18, 0.13),
}

_CLASS_RANGES_UM = {"vellus": (10.0, 30.0), "intermediate": (30.0, 60.0), "terminal": (60.0, 120.0)}


def hair_class_from_width(width_um: float) -> str:
    """Return the hair class of a shaft width with the metrics' cut-offs.

    Parameters
    ----------
    width_um : float
        Shaft width in micrometres.

    Returns
    -------
    str
        ``'vellus'`` below ``VELLUS_MAX_UM``, ``'terminal'`` from ``TERMINAL_MIN_UM`` on,
        ``'intermediate'`` in between.
    """
    if width_um < VELLUS_MAX_UM:
        return "vellus"
    if width_um >= TERMINAL_MIN_UM:
        return "terminal"
    return "intermediate"


@dataclass(frozen=True)
class SynthConfig:
    """Ranges and probabilities the renderer draws each scene from.

    Ranges are ``(low, high)`` tuples sampled uniformly (scale log-uniformly); ``p_*``
    values are per-image probabilities of a feature.
    """

    height: int = 512
    width: int = 640
    um_per_px: tuple[float, float] = (2.5, 9.0)
    density_per_cm2: tuple[float, float] = (60.0, 320.0)
    hair_colours: tuple[str, ...] = ("black", "dark_brown", "brown", "blond", "grey", "white")
    hair_colour_weights: tuple[float, ...] = (0.40, 0.22, 0.14, 0.10, 0.09, 0.05)
    skin_tones: tuple[str, ...] = ("very_light", "light", "medium", "dark", "very_dark")
    skin_tone_weights: tuple[float, ...] = (0.30, 0.28, 0.20, 0.12, 0.10)
    unit_size_probs: tuple[float, float, float, float] = (0.20, 0.45, 0.30, 0.05)
    vellus_fraction: tuple[float, float] = (0.03, 0.35)
    terminal_fraction: tuple[float, float] = (0.35, 0.85)  # of the non-vellus hairs
    grey_fraction: tuple[float, float] = (0.0, 0.3)  # extra grey/white hairs, when drawn
    p_greying: float = 0.25
    stub_length_mm: tuple[float, float] = (0.2, 2.0)
    long_length_mm: tuple[float, float] = (2.5, 8.0)
    long_fraction: tuple[float, float] = (0.0, 0.02)  # unclipped hairs in a shaved scene
    p_unshaved: float = 0.15  # scene of mostly long, unclipped hairs
    subsurface_length_mm: tuple[float, float] = (0.3, 1.0)
    flow_jitter_deg: float = 14.0
    unit_spread_deg: float = 4.0  # SD of the fan angles of one unit's hairs
    p_header: float = 0.4
    p_footer: float = 0.15
    p_scale_bar: float = 0.3
    p_vignette: float = 0.35
    p_bubbles: float = 0.25
    p_glare: float = 0.4
    p_vessels: float = 0.2
    p_yellow_dots: float = 0.25
    p_black_dots: float = 0.25
    p_scales: float = 0.6
    p_halo: float = 0.25
    p_honeycomb: float = 0.8  # on dark and very dark skin only
    p_measuring_circle: float = 0.08
    p_half_resolution: float = 0.3  # photo upsampled 2x from half resolution (as FDU)
    blur_sigma_um: tuple[float, float] = (1.0, 10.0)
    defocus_extra_um: tuple[float, float] = (0.0, 20.0)
    exposure: tuple[float, float] = (0.7, 1.05)
    noise_sigma: tuple[float, float] = (0.004, 0.025)
    p_jpeg: float = 0.85
    jpeg_quality: tuple[int, int] = (70, 96)


@dataclass(frozen=True)
class HairTruth:
    """Ground truth of one hair.

    ``polyline_xy`` runs from the exit point to the tip with the full, unclipped geometry
    (points may lie outside the image). ``width_um`` is the mean width along the visible
    shaft, i.e. the width at mid-length; vellus hairs taper linearly from
    ``base_width_um`` at the exit to ``tip_width_um`` at the tip, other hairs have a
    constant width. ``hair_class`` is derived from ``width_um``.

    Counting flags, relative to ``Render.field_mask``: ``counted_exit`` when the pixel at
    the rounded exit point is in the field; ``counted_inside`` when every pixel the
    centre line passes through is in the field; ``counted_visible`` when any of the hair's
    own mask pixels is in the field. Hence inside => exit => visible.
    """

    hair_id: int
    unit_id: int
    polyline_xy: np.ndarray
    subsurface_xy: np.ndarray
    exit_xy: tuple[float, float]
    width_um: float
    width_px: float
    length_um: float
    length_px: float
    hair_class: str
    colour: str
    clipped: bool
    counted_exit: bool
    counted_inside: bool
    counted_visible: bool
    base_width_um: float = 0.0
    tip_width_um: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (arrays as nested lists)."""
        return {
            "hair_id": self.hair_id,
            "unit_id": self.unit_id,
            "polyline_xy": np.round(self.polyline_xy, 3).tolist(),
            "subsurface_xy": np.round(self.subsurface_xy, 3).tolist(),
            "exit_xy": [round(self.exit_xy[0], 3), round(self.exit_xy[1], 3)],
            "width_um": round(self.width_um, 3),
            "width_px": round(self.width_px, 4),
            "length_um": round(self.length_um, 2),
            "length_px": round(self.length_px, 3),
            "hair_class": self.hair_class,
            "colour": self.colour,
            "clipped": self.clipped,
            "counted_exit": self.counted_exit,
            "counted_inside": self.counted_inside,
            "counted_visible": self.counted_visible,
            "base_width_um": round(self.base_width_um, 3),
            "tip_width_um": round(self.tip_width_um, 3),
        }


@dataclass(frozen=True, eq=False)
class Render:
    """One rendered photo with its ground truth.

    Attributes
    ----------
    image : (H, W, 3) uint8
        RGB photo (after the JPEG round trip when the scene uses JPEG).
    mask : (H, W) bool
        Hair shafts above the skin, within ``field_mask``.
    subsurface_mask : (H, W) bool
        Centre band of the drawn subsurface shafts, minus ``mask``, within the field.
    field_mask : (H, W) bool
        The analysable field: the image minus header/footer bars, overlays and dark
        vignette corners.
    um_per_px : float
        True scale.
    seed : int
        The seed that made it.
    hairs : tuple of HairTruth
        Every hair whose shaft or subsurface part reaches into the image; ids from 1.
    params : dict
        Drawn scene parameters (skin tone, dominant hair colour, density, flags, optics).
    jpeg_bytes : bytes or None
        The encoded JPEG (so that writing it does not compress twice).
    """

    image: np.ndarray
    mask: np.ndarray
    subsurface_mask: np.ndarray
    field_mask: np.ndarray
    um_per_px: float
    seed: int
    hairs: tuple[HairTruth, ...]
    params: dict
    jpeg_bytes: bytes | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        """Hair counts under each counting rule (``exit``, ``inside``, ``visible``)."""
        return {
            "exit": sum(h.counted_exit for h in self.hairs),
            "inside": sum(h.counted_inside for h in self.hairs),
            "visible": sum(h.counted_visible for h in self.hairs),
        }

    def truth_dict(self) -> dict[str, Any]:
        """Return the JSON-ready ground truth of this render."""
        area_px = int(self.field_mask.sum())
        area_cm2 = area_px * (self.um_per_px * 1e-4) ** 2
        counts = self.counts()
        return {
            "renderer_version": RENDERER_VERSION,
            "seed": self.seed,
            "um_per_px": self.um_per_px,
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
            "field_area_px": area_px,
            "field_area_cm2": area_cm2,
            "density_exit_per_cm2": counts["exit"] / area_cm2 if area_cm2 > 0 else None,
            "counts": counts,
            "params": _jsonable(self.params),
            "hairs": [h.to_dict() for h in self.hairs],
        }


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays inside dicts and lists to plain Python."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------- scene draw


def _choice(rng: np.random.Generator, names: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale_px: float) -> np.ndarray:
    """Smooth random field with unit SD and feature size about ``scale_px`` pixels."""
    scale_px = max(scale_px, 1.0)
    # White noise on a grid of ~2 cells per feature, smoothed there, then upsampled:
    # cheap whatever the feature size.
    cell = scale_px / 2.0
    sh = max(int(h / cell) + 4, 4)
    sw = max(int(w / cell) + 4, 4)
    small = rng.standard_normal((sh, sw), dtype=np.float32)
    small = cv2.GaussianBlur(small, (0, 0), 0.8)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    sd = float(small.std())
    return big / sd if sd > 0 else big


def _stretched_noise(
    rng: np.random.Generator, h: int, w: int, scale_px: float, angle: float, stretch: int = 5
) -> np.ndarray:
    """Smooth field whose features run along ``angle`` (``stretch`` x longer than wide)."""
    d = int(math.ceil(math.hypot(h, w))) + 2
    big = _smooth_noise(rng, max(d // stretch, 4), d, scale_px)
    big = cv2.resize(big, (d, d), interpolation=cv2.INTER_LINEAR)
    rot = cv2.getRotationMatrix2D((d / 2, d / 2), math.degrees(angle), 1.0)
    rot[:, 2] -= [(d - w) / 2, (d - h) / 2]
    return cv2.warpAffine(big, rot, (w, h), flags=cv2.INTER_LINEAR)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large kernels run on a downsampled copy (same look, far cheaper)."""
    if sigma <= 0.3:
        return img
    if sigma < 6:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    f = int(sigma // 3)
    small = cv2.resize(img, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass
class _Hair:
    """Working geometry of one hair before rendering."""

    unit_id: int
    exit: np.ndarray
    angle: float
    length_px: float
    curvature: float  # 1/px
    base_w_um: float
    tip_w_um: float
    colour: str
    rgb: np.ndarray
    clipped: bool
    sub_len_px: float
    poly: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    sub: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    uid: int = -1  # identity of the hair on its site (same-site pairs only)


def _arc_polyline(
    start: np.ndarray, angle: float, length: float, curvature: float, step: float
) -> np.ndarray:
    """Constant-curvature centre line from ``start``; chord lengths sum to ``length``."""
    if abs(curvature) * length < 1e-3:
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        return np.stack([start, end])
    n = max(int(math.ceil(length / step)), 2)
    ds = length / n
    mid_angles = angle + curvature * ds * (np.arange(n) + 0.5)
    steps = ds * np.stack([np.cos(mid_angles), np.sin(mid_angles)], axis=1)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def _draw_units(
    rng: np.random.Generator,
    cfg: SynthConfig,
    h: int,
    w: int,
    um: float,
    density: float,
    long_fraction: float,
    colour_mix: tuple[str, float],
    flow: tuple[float, float, float, float, float],
    class_mix: tuple[float, float],
) -> list[_Hair]:
    """Draw follicular units and their hairs over a padded region around the image."""
    probs = np.asarray(cfg.unit_size_probs, float)
    probs = probs / probs.sum()
    mean_size = float(np.dot(np.arange(1, 5), probs))
    unit_density_px = density / mean_size * (um * 1e-4) ** 2  # units per px²
    sub_max = cfg.subsurface_length_mm[1] * 1000 / um
    hairs: list[_Hair] = []
    unit_id = 0
    populations = (
        (False, 1.0 - long_fraction, cfg.stub_length_mm[1]),
        (True, long_fraction, cfg.long_length_mm[1]),
    )
    theta0, amp, kx, ky, phase = flow
    dom, grey_frac = colour_mix
    for is_long, frac, max_mm in populations:
        if frac <= 0:
            continue
        margin = max_mm * 1000 / um + sub_max + 10
        x0, y0, x1, y1 = -margin, -margin, w + margin, h + margin
        n_units = int(rng.poisson(unit_density_px * frac * (x1 - x0) * (y1 - y0)))
        if n_units == 0:
            continue
        ux = rng.uniform(x0, x1, n_units)
        uy = rng.uniform(y0, y1, n_units)
        sizes = rng.choice(4, size=n_units, p=probs) + 1
        uangle = (
            theta0
            + amp * np.sin(kx * ux + ky * uy + phase)
            + np.deg2rad(cfg.flow_jitter_deg) * rng.standard_normal(n_units)
        )
        if is_long:
            ulen = rng.uniform(cfg.long_length_mm[0], cfg.long_length_mm[1], n_units) * 1000
        else:
            shave = rng.uniform(0.2, 0.8)  # the scene's clipper length (mm)
            ulen = np.clip(shave * np.exp(0.35 * rng.standard_normal(n_units)), 0.2, 2.0) * 1000
        # Cheap reject: units whose hairs cannot reach the image.
        reach = ulen / um * 1.05 + sub_max + 5
        near = (ux > -reach) & (ux < w + reach) & (uy > -reach) & (uy < h + reach)
        for i in np.flatnonzero(near):
            unit_id += 1
            k = int(sizes[i])
            base_angle = float(uangle[i])
            # The hairs of a unit fan out from their shared opening: the angle offsets are
            # sorted along the across-flow offsets, so neighbours diverge and never cross
            # (independent angles made scissor crossings real units do not show).
            fan = np.sort(np.deg2rad(cfg.unit_spread_deg) * rng.standard_normal(k))
            # Vellus hairs mostly grow alone; bundles are mostly terminal.
            for j in range(k):
                hw = _draw_width(rng, class_mix, solitary=(k == 1))
                vellus = hw < VELLUS_MAX_UM
                ang = base_angle + float(fan[j])
                length_um = float(
                    np.clip(ulen[i] * math.exp(0.15 * rng.standard_normal()), 200.0, 1e5)
                )
                if not is_long:
                    length_um = float(
                        np.clip(
                            length_um, cfg.stub_length_mm[0] * 1000, cfg.stub_length_mm[1] * 1000
                        )
                    )
                # Hairs of a unit leave one opening side by side (touching or nearly):
                # offset across the flow by about one width.
                across = np.array([-math.sin(base_angle), math.cos(base_angle)])
                off = (j - (k - 1) / 2) * hw / um * rng.uniform(0.85, 1.3)
                exit_pt = np.array([ux[i], uy[i]]) + across * off
                if is_long:
                    curv = rng.normal(0.0, 1.0 / 20000.0) * um  # 1/px: gentle bends
                else:
                    curv = rng.normal(0.0, 1.0 / 20000.0) * um
                if vellus:
                    tip_frac = 0.3 if is_long else rng.uniform(0.6, 0.85)
                else:
                    tip_frac = 1.0
                base_w = 2 * hw / (1 + tip_frac)
                colour = _draw_colour(rng, dom, grey_frac)
                rgb = np.asarray(HAIR_COLOURS[colour], float)
                if vellus:
                    # Thin hairs hold less pigment.
                    rgb = rgb + (0.75 - rgb) * rng.uniform(0.2, 0.5)
                rgb = np.clip(rgb * math.exp(0.12 * rng.standard_normal()), 0, 1)
                sub_len = rng.uniform(*cfg.subsurface_length_mm) * 1000 / um
                hairs.append(
                    _Hair(
                        unit_id=unit_id,
                        exit=exit_pt,
                        angle=float(ang),
                        length_px=length_um / um,
                        curvature=float(curv),
                        base_w_um=float(base_w),
                        tip_w_um=float(base_w * tip_frac),
                        colour=colour,
                        rgb=rgb,
                        clipped=not is_long,
                        sub_len_px=float(sub_len),
                    )
                )
    kept = []
    # Anything within this margin can still shade the image (haze blur, openings).
    margin = 150.0 / um + 5
    for hr in hairs:
        step = max(8.0, 500.0 / um)  # chords of <= 0.5 mm: kinks far below a pixel
        hr.poly = _arc_polyline(hr.exit, hr.angle, hr.length_px, hr.curvature, step)
        back = np.array([math.cos(hr.angle), math.sin(hr.angle)])
        hr.sub = np.stack([hr.exit - back * hr.sub_len_px, hr.exit.copy()])
        pts = np.vstack([hr.poly, hr.sub])
        pad = margin + hr.base_w_um / um
        lo = pts.min(axis=0)
        hi = pts.max(axis=0)
        if hi[0] >= -pad and lo[0] <= w - 1 + pad and hi[1] >= -pad and lo[1] <= h - 1 + pad:
            kept.append(hr)
    return kept


def _draw_width(rng: np.random.Generator, class_mix: tuple[float, float], solitary: bool) -> float:
    fv, ft = class_mix
    if not solitary:
        fv *= 0.3
    u = rng.uniform()
    if u < fv:
        lo, hi = _CLASS_RANGES_UM["vellus"]
    elif u < fv + (1 - fv) * ft:
        lo, hi = _CLASS_RANGES_UM["terminal"]
        # Terminal widths crowd at 60-90 µm.
        return float(lo + (hi - lo) * rng.beta(1.6, 3.0))
    else:
        lo, hi = _CLASS_RANGES_UM["intermediate"]
    return float(rng.uniform(lo, hi))


def _draw_colour(rng: np.random.Generator, dominant: str, grey_frac: float) -> str:
    if grey_frac > 0 and rng.uniform() < grey_frac:
        return "white" if rng.uniform() < 0.35 else "grey"
    return dominant


# --------------------------------------------------------------------------- raster


def _segment_boxes(
    poly: np.ndarray, radius_fn: Any, pad: float, x_lo: int, x_hi: int, y_lo: int, y_hi: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per segment of a polyline, its distance field on the segment's padded box.

    Yields ``(x0, y0, d, perp, s, r)``: the box origin (clipped to ``[x_lo, x_hi) x
    [y_lo, y_hi)``), the distance to the segment, the signed perpendicular offset, the arc
    length from the polyline's first point and the local radius, each (box h, box w)
    float32. Ends are flat caps: pixels beyond the first or last point get ``inf``.
    """
    seg = np.diff(poly, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    n_seg = len(seg)
    for i in range(n_seg):
        a = poly[i]
        b = poly[i + 1]
        sx0 = max(int(math.floor(min(a[0], b[0]) - pad)), x_lo)
        sx1 = min(int(math.ceil(max(a[0], b[0]) + pad)) + 1, x_hi)
        sy0 = max(int(math.floor(min(a[1], b[1]) - pad)), y_lo)
        sy1 = min(int(math.ceil(max(a[1], b[1]) + pad)) + 1, y_hi)
        if sx1 <= sx0 or sy1 <= sy0 or seg_len[i] <= 0:
            continue
        xs = np.arange(sx0, sx1, dtype=np.float32)[None, :] - np.float32(a[0])
        ys = np.arange(sy0, sy1, dtype=np.float32)[:, None] - np.float32(a[1])
        dx, dy = np.float32(seg[i, 0] / seg_len[i]), np.float32(seg[i, 1] / seg_len[i])
        t = xs * dx + ys * dy  # along-segment coordinate (px)
        perp = xs * (-dy) + ys * dx
        tc = np.clip(t, 0.0, np.float32(seg_len[i]))
        d = np.sqrt(np.square(t - tc) + np.square(perp))
        if i == 0:
            d = np.where(t < 0, np.inf, d)
        if i == n_seg - 1:
            d = np.where(t > seg_len[i], np.inf, d)
        s = np.float32(cum[i]) + tc
        yield sx0, sy0, d, perp, s, radius_fn(s).astype(np.float32)


def _segment_fields(
    poly: np.ndarray,
    radius_fn: Any,
    x0: int,
    y0: int,
    bw: int,
    bh: int,
    pad: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distance fields of a polyline on the box ``[x0, x0+bw) x [y0, y0+bh)``.

    Returns ``edge`` (distance to the centre line minus the local radius; <= 0 inside),
    ``dist`` (distance to the centre line), ``u`` (signed offset / radius, for shading)
    ``rad`` (local radius) and ``s`` (arc length from the first point), each (bh, bw)
    float32. Ends are flat caps: pixels beyond
    the first or last point along the line get ``inf``.
    """
    edge = np.full((bh, bw), np.inf, np.float32)
    dist = np.full((bh, bw), np.inf, np.float32)
    uu = np.zeros((bh, bw), np.float32)
    rad = np.zeros((bh, bw), np.float32)
    ss = np.zeros((bh, bw), np.float32)
    for sx0, sy0, d, perp, s, r in _segment_boxes(poly, radius_fn, pad, x0, x0 + bw, y0, y0 + bh):
        sy1, sx1 = sy0 + d.shape[0], sx0 + d.shape[1]
        e = d - r
        sl = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        better = e < edge[sl]
        edge[sl] = np.where(better, e, edge[sl])
        dist[sl] = np.where(better, d, dist[sl])
        uu[sl] = np.where(better, perp / np.maximum(r, 0.3), uu[sl])
        rad[sl] = np.where(better, r, rad[sl])
        ss[sl] = np.where(better, s, ss[sl])
    return edge, dist, uu, rad, ss


def _polyline_pixels(
    poly: np.ndarray, radius_fn: Any, h: int, w: int, pad: float
) -> tuple[np.ndarray, ...]:
    """Sparse distance fields of a polyline: only pixels on or next to the shaft.

    Like :func:`_segment_fields`, but each segment is evaluated on its own box and only
    pixels with ``edge <= 0.5`` are kept (long hairs have large, mostly empty boxes).
    Where segments overlap (joins), the smallest ``edge`` wins.

    Returns
    -------
    tuple of (n,) arrays
        ``gy, gx`` (int pixel coordinates), ``edge``, ``dist``, ``u``, ``rad``, ``s``.
    """
    parts: list[tuple[np.ndarray, ...]] = []
    for sx0, sy0, d, perp, sa, r in _segment_boxes(poly, radius_fn, pad, 0, w, 0, h):
        e = d - r
        iy, ix = np.nonzero(e <= 0.5)
        if iy.size == 0:
            continue
        rr = r[iy, ix]
        parts.append(
            (
                iy + sy0,
                ix + sx0,
                e[iy, ix],
                d[iy, ix],
                perp[iy, ix] / np.maximum(rr, 0.3),
                rr,
                sa[iy, ix],
            )
        )
    if not parts:
        empty_i = np.zeros(0, np.int64)
        empty_f = np.zeros(0, np.float32)
        return empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_f
    cols = [np.concatenate([p[k] for p in parts]) for k in range(7)]
    if len(parts) > 1:
        key = cols[0].astype(np.int64) * w + cols[1]
        order = np.lexsort((cols[2], key))
        ks = key[order]
        first = np.ones(len(ks), bool)
        first[1:] = ks[1:] != ks[:-1]
        sel = order[first]
        cols = [c[sel] for c in cols]
    return tuple(cols)


def _bbox(poly: np.ndarray, pad: float, h: int, w: int) -> tuple[int, int, int, int] | None:
    x0 = max(int(math.floor(poly[:, 0].min() - pad)), 0)
    x1 = min(int(math.ceil(poly[:, 0].max() + pad)) + 1, w)
    y0 = max(int(math.floor(poly[:, 1].min() - pad)), 0)
    y1 = min(int(math.ceil(poly[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _centre_pixels(poly: np.ndarray) -> np.ndarray:
    """Integer (x, y) pixels the centre line passes through (samples every 0.25 px)."""
    seg = np.hypot(*np.diff(poly, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(math.ceil(cum[-1] / 0.25)), 1) + 1
    s = np.linspace(0.0, cum[-1], n)
    pts = np.stack([np.interp(s, cum, poly[:, 0]), np.interp(s, cum, poly[:, 1])], axis=1)
    return np.rint(pts).astype(np.int64)


def _blend(canvas: np.ndarray, sl: tuple[slice, slice], rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Alpha-composite ``rgb`` (3,) or (h,w,3) over ``canvas[sl]`` in place.

    Only the bounding box of non-zero ``alpha`` is touched (features are sparse).
    """
    nz = cv2.findNonZero((alpha > 1e-4).astype(np.uint8))
    if nz is None:
        return
    x, y, bw, bh = cv2.boundingRect(nz)
    a = alpha[y : y + bh, x : x + bw, None]
    view = canvas[sl][y : y + bh, x : x + bw]
    src = rgb if np.ndim(rgb) == 1 else rgb[y : y + bh, x : x + bw]
    view *= 1 - a
    view += src * a


# --------------------------------------------------------------------------- main render


@dataclass(frozen=True)
class _SceneParams:
    """Scene-wide draws of one render (the order of the draws is part of a seed's render)."""

    um: float
    density: float
    skin_tone: str
    dominant: str
    grey_frac: float
    unshaved: bool
    long_fraction: float
    class_mix: tuple[float, float]
    flow: tuple[float, float, float, float, float]
    flags: dict[str, bool]


def _scene_params(rng: np.random.Generator, cfg: SynthConfig) -> _SceneParams:
    """Draw the scene parameters in :func:`render`'s fixed order."""
    lo, hi = cfg.um_per_px
    um = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)
    density = float(rng.uniform(*cfg.density_per_cm2))
    skin_tone = _choice(rng, cfg.skin_tones, cfg.skin_tone_weights)
    dominant = _choice(rng, cfg.hair_colours, cfg.hair_colour_weights)
    grey_frac = float(rng.uniform(*cfg.grey_fraction)) if rng.uniform() < cfg.p_greying else 0.0
    if dominant in ("grey", "white"):
        grey_frac = 0.0
    unshaved = bool(rng.uniform() < cfg.p_unshaved)
    long_fraction = float(rng.uniform(0.6, 1.0) if unshaved else rng.uniform(*cfg.long_fraction))
    class_mix = (
        float(rng.uniform(*cfg.vellus_fraction)),
        float(rng.uniform(*cfg.terminal_fraction)),
    )
    flow = (
        float(rng.uniform(0, 2 * math.pi)),
        float(rng.uniform(0, 0.5)),
        float(rng.normal(0, 1.0 / 800.0) * um),
        float(rng.normal(0, 1.0 / 800.0) * um),
        float(rng.uniform(0, 2 * math.pi)),
    )
    flags = {
        name: bool(rng.uniform() < getattr(cfg, "p_" + name))
        for name in (
            "header",
            "footer",
            "scale_bar",
            "vignette",
            "bubbles",
            "glare",
            "vessels",
            "yellow_dots",
            "black_dots",
            "scales",
            "halo",
            "honeycomb",
            "half_resolution",
            "measuring_circle",
            "jpeg",
        )
    }
    flags["honeycomb"] = flags["honeycomb"] and skin_tone in ("dark", "very_dark")

    return _SceneParams(
        um, density, skin_tone, dominant, grey_frac, unshaved, long_fraction, class_mix, flow, flags
    )


def render(seed: int, config: SynthConfig | None = None) -> Render:
    """Render one synthetic trichoscopy photo with its ground truth.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives a bit-identical render.
    config : SynthConfig, optional
        Ranges to draw the scene from; defaults per the project spec.

    Returns
    -------
    Render
        Photo, hair / subsurface / field masks, per-hair truth and scene parameters.
    """
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    h, w = cfg.height, cfg.width

    # ---- scene parameters
    sp = _scene_params(rng, cfg)
    um, density, skin_tone, dominant = sp.um, sp.density, sp.skin_tone, sp.dominant
    grey_frac, unshaved, long_fraction = sp.grey_frac, sp.unshaved, sp.long_fraction
    class_mix, flow, flags = sp.class_mix, sp.flow, sp.flags

    hairs = _draw_units(
        rng, cfg, h, w, um, density, long_fraction, (dominant, grey_frac), flow, class_mix
    )

    # ---- skin
    canvas = _skin(rng, h, w, um, skin_tone, flags)
    skin_mean = canvas.reshape(-1, 3).mean(axis=0)
    _skin_features(rng, canvas, h, w, um, flags, hairs)

    # ---- subsurface shafts, openings, then the hairs above the skin
    sub_mask = _draw_subsurface(rng, canvas, hairs, um, skin_mean)
    _draw_openings(rng, canvas, hairs, um, flags["halo"], skin_mean)
    shaft_mask = np.zeros((h, w), bool)
    # Random stacking order: which hair lies on top varies.
    own_by_index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for idx in rng.permutation(len(hairs)):
        own_by_index[int(idx)] = _draw_hair(rng, canvas, hairs[int(idx)], um, shaft_mask)
    own_masks = [own_by_index[i] for i in range(len(hairs))]

    # ---- optics and sensor
    canvas, optics = _optics(rng, canvas, um, flags, cfg)
    vignette_ok = _vignette(rng, canvas, flags["vignette"])
    canvas = np.clip(canvas, 0.0, 1.0)
    img = (canvas * 255.0 + 0.5).astype(np.uint8)
    overlay_ok = _overlays(rng, img, um, flags)
    jpeg_bytes = None
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    optics["jpeg_quality"] = q if flags["jpeg"] else None
    if flags["jpeg"]:
        ok, enc = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            jpeg_bytes = enc.tobytes()
            img = np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1])

    field_mask = vignette_ok & overlay_ok
    mask = shaft_mask & field_mask
    sub_mask = sub_mask & ~shaft_mask & field_mask

    truths = _truths(hairs, own_masks, field_mask, um)
    # Keep hairs that reach into the image (shaft or subsurface); ids count from 1.
    kept = [t for t in truths if t.counted_visible or _touches(t, h, w)]
    kept = [replace(t, hair_id=i + 1) for i, t in enumerate(kept)]
    params = {
        "skin_tone": skin_tone,
        "hair_colour": dominant,
        "grey_fraction": grey_frac,
        "density_per_cm2": density,
        "um_per_px": um,
        "unshaved": unshaved,
        "long_fraction": long_fraction,
        "vellus_fraction": class_mix[0],
        "terminal_fraction": class_mix[1],
        "flow_deg": math.degrees(flow[0]) % 360.0,
        **flags,
        **optics,
    }
    return Render(
        image=img,
        mask=mask,
        subsurface_mask=sub_mask,
        field_mask=field_mask,
        um_per_px=um,
        seed=int(seed),
        hairs=tuple(kept),
        params=params,
        jpeg_bytes=jpeg_bytes,
    )


def _touches(t: HairTruth, h: int, w: int) -> bool:
    """Whether any part (shaft or subsurface) of a hair reaches into the image."""
    pts = np.vstack([t.polyline_xy, t.subsurface_xy])
    pad = t.width_px
    return bool(
        pts[:, 0].max() >= -pad
        and pts[:, 0].min() <= w - 1 + pad
        and pts[:, 1].max() >= -pad
        and pts[:, 1].min() <= h - 1 + pad
    )


def _truths(
    hairs: list[_Hair],
    own_masks: list[tuple[np.ndarray, np.ndarray]],
    field_mask: np.ndarray,
    um: float,
) -> list[HairTruth]:
    h, w = field_mask.shape
    out = []
    for i, (hr, (own_y, own_x)) in enumerate(zip(hairs, own_masks, strict=True)):
        cp = _centre_pixels(hr.poly)
        inside_img = (cp[:, 0] >= 0) & (cp[:, 0] < w) & (cp[:, 1] >= 0) & (cp[:, 1] < h)
        in_field = np.zeros(len(cp), bool)
        in_field[inside_img] = field_mask[cp[inside_img, 1], cp[inside_img, 0]]
        visible = bool(field_mask[own_y, own_x].any())
        width_um = 0.5 * (hr.base_w_um + hr.tip_w_um)
        length_px = float(np.hypot(*np.diff(hr.poly, axis=0).T).sum())
        out.append(
            HairTruth(
                hair_id=i + 1,
                unit_id=hr.unit_id,
                polyline_xy=hr.poly.astype(np.float64),
                subsurface_xy=hr.sub.astype(np.float64),
                exit_xy=(float(hr.poly[0, 0]), float(hr.poly[0, 1])),
                width_um=width_um,
                width_px=width_um / um,
                length_um=length_px * um,
                length_px=length_px,
                hair_class=hair_class_from_width(width_um),
                colour=hr.colour,
                clipped=hr.clipped,
                counted_exit=bool(in_field[0]),
                counted_inside=bool(in_field.all()),
                counted_visible=visible,
                base_width_um=hr.base_w_um,
                tip_width_um=hr.tip_w_um,
            )
        )
    return out


def _skin(
    rng: np.random.Generator, h: int, w: int, um: float, tone: str, flags: dict[str, bool]
) -> np.ndarray:
    """Skin base colour with texture: stratum-corneum sparkle, creases and furrows.

    At 20-70x the horny layer looks like crumpled white paper: bright whitish ridges and
    greyish creases at 10-50 µm, over a base colour that varies slowly.
    """
    base = np.asarray(SKIN_TONES[tone], np.float32)
    base = base * np.exp(0.04 * rng.standard_normal(3)).astype(np.float32)
    # Dermatoscope white balance: often a cool (bluish) light.
    wb = np.array([1.0, 1.0, 1.0 + rng.uniform(-0.06, 0.06)], np.float32)
    base = np.clip(base * wb, 0, 1)
    low = _smooth_noise(rng, h, w, 600.0 / um)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = base[None, None, :] * (1.0 + 0.05 * low)[..., None]
    # Redness blotches (capillary bed).
    red = np.clip(_smooth_noise(rng, h, w, 250.0 / um), 0, None)
    canvas[..., 1] *= 1.0 - 0.02 * red
    canvas[..., 2] *= 1.0 - 0.015 * red
    # Horny-layer texture: a multi-scale field; its highs are glossy white, its lows
    # bluish-grey creases. Stronger when scaling is marked.
    fine = _smooth_noise(rng, h, w, 12.0 / um)
    mid = _smooth_noise(rng, h, w, 45.0 / um)
    coarse = _smooth_noise(rng, h, w, 160.0 / um)
    # Glossy flecks are fine, but cluster in patches set by the coarser fields.
    patches = np.clip(0.6 * mid + 0.6 * coarse + 0.3, 0, None)
    tex = np.clip(0.8 * fine + 0.3, 0, None) * patches
    gloss = rng.uniform(0.12, 0.26) if flags["scales"] else rng.uniform(0.05, 0.15)
    crease = rng.uniform(0.02, 0.05)
    # Dark skin: the horny layer lightens it less and looks greyish, not white.
    lightness = float(np.clip(base.mean() / 0.78, 0.2, 1.0))
    gloss *= 0.3 + 0.7 * lightness
    bright = tex * gloss
    # Glitter: specular points of single cells, a few µm across.
    glit = _smooth_noise(rng, h, w, max(1.5, 7.0 / um))
    glitter = rng.uniform(0.08, 0.3) * lightness
    bright = bright + np.clip(glit - 1.6, 0, None) * patches * glitter
    # Creases: soft and sparse (dark specks read as dirt).
    dark = np.clip(-(0.7 * mid + 0.6 * coarse) - 0.6, 0, None) * crease
    white = np.array([0.97, 0.97, 1.0], np.float32)
    white = base + (white - base) * (0.35 + 0.65 * lightness)
    a = np.clip(bright, 0, 0.85)[..., None]
    canvas = canvas * (1 - a) + white * a
    canvas *= (1.0 - dark)[..., None] * np.array([1.0, 1.0, 1.02], np.float32)
    # Skin furrows: two sets of long, nearly straight lines (the rhomboid mesh of the
    # skin surface), zero crossings of fields stretched along two directions. Thin and
    # fainter than hairs, but real photos show them: a segmenter must learn to skip them.
    line_px = max(1.0, rng.uniform(12.0, 25.0) / um)
    depth = rng.uniform(0.02, 0.06)
    ang0 = rng.uniform(0, math.pi)
    for ang in (ang0, ang0 + rng.uniform(0.6, 1.2)):
        fur = _stretched_noise(rng, h, w, 300.0 / um, ang, stretch=10)
        gy, gx = np.gradient(fur)
        gmag = np.sqrt(gx * gx + gy * gy) + 1e-6
        furrow = np.exp(-np.square(fur / gmag / line_px))
        canvas *= (1.0 - depth * furrow)[..., None]
    if flags["honeycomb"]:
        # Honeycomb pigment network: brown meshes around lighter holes.
        # Mesh lines are a level set of a smooth field, so they close around the holes.
        holes = _smooth_noise(rng, h, w, 110.0 / um)
        mesh = np.exp(-np.square((holes - 0.2) / 0.3))
        strength = rng.uniform(0.1, 0.25)
        canvas *= (1.0 - strength * mesh)[..., None] * np.array([1.0, 0.97, 0.95], np.float32)
    return canvas


def _skin_features(
    rng: np.random.Generator,
    canvas: np.ndarray,
    h: int,
    w: int,
    um: float,
    flags: dict[str, bool],
    hairs: list[_Hair],
) -> None:
    """Vessels, yellow dots, black dots and scale flakes (none of them hair)."""
    area_mm2 = h * w * (um * 1e-3) ** 2
    shift = 4
    sc = float(1 << shift)
    full = (slice(None), slice(None))
    if flags["vessels"]:
        layer = np.zeros((h, w), np.float32)
        for _ in range(int(rng.poisson(0.4 * area_mm2) + 1)):
            p = rng.uniform([0, 0], [w, h])
            ang = rng.uniform(0, 2 * math.pi)
            pts = [p.copy()]
            for _ in range(int(rng.integers(4, 16))):
                ang += rng.normal(0, 0.5)
                p = p + 40.0 / um * np.array([math.cos(ang), math.sin(ang)])
                pts.append(p.copy())
            arr = np.rint(np.array(pts) * sc).astype(np.int32)
            th = max(1, int(round(rng.uniform(8, 18) / um)))
            cv2.polylines(layer, [arr], False, 1.0, th, cv2.LINE_AA, shift)
        layer = _blur(layer, max(0.7, 8.0 / um))
        a = np.clip(layer * rng.uniform(0.12, 0.3), 0, 1)
        _blend(canvas, full, np.array([0.75, 0.3, 0.35], np.float32), a)
    if flags["yellow_dots"]:
        dots = np.zeros((h, w), np.float32)
        for _ in range(int(rng.poisson(1.0 * area_mm2) + 1)):
            c = rng.uniform([0, 0], [w, h])
            r = rng.uniform(40, 110) / um
            ci = tuple(np.rint(c * sc).astype(int))
            cv2.circle(dots, ci, int(r * sc), 1.0, -1, cv2.LINE_AA, shift)
        dots = _blur(dots, max(0.6, 15.0 / um))
        col = np.array([0.86, 0.74, 0.45], np.float32)
        _blend(canvas, full, col, rng.uniform(0.25, 0.45) * dots)
    if flags["black_dots"]:
        bd = np.zeros((h, w), np.float32)
        for _ in range(int(rng.poisson(0.8 * area_mm2) + 1)):
            c = rng.uniform([0, 0], [w, h])
            r = rng.uniform(15, 45) / um
            ci = tuple(np.rint(c * sc).astype(int))
            cv2.circle(bd, ci, max(int(r * sc), 1), 1.0, -1, cv2.LINE_AA, shift)
        bd = _blur(bd, max(0.5, 6.0 / um))
        _blend(canvas, full, np.array([0.09, 0.08, 0.1], np.float32), 0.85 * bd)
    if flags["scales"]:
        # Flakes: soft whitish patches with ragged outlines (noise-thresholded).
        fl = np.zeros((h, w), np.float32)
        for _ in range(int(rng.poisson(0.8 * area_mm2) + 1)):
            c = rng.uniform([0, 0], [w, h])
            r = rng.uniform(40, 250) / um
            ci = tuple(np.rint(c * sc).astype(int))
            axes = (max(int(r * sc), 1), max(int(r * rng.uniform(0.3, 0.8) * sc), 1))
            cv2.ellipse(fl, ci, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA, shift)
        rag = _smooth_noise(rng, h, w, 60.0 / um)
        fl = np.clip(fl * (0.5 + 0.4 * rag), 0, 1)
        fl = _blur(fl, max(0.6, 10.0 / um))
        flake = np.clip(canvas.reshape(-1, 3).mean(axis=0) * 0.5 + 0.45, 0, 1)
        _blend(canvas, full, flake.astype(np.float32), fl * rng.uniform(0.25, 0.55))


def _sub_pad(r0: float) -> float:
    """Margin (px) around a subsurface shaft of base radius ``r0`` that its haze can reach."""
    return r0 * 2.2 + 3


def _sub_band(dist: np.ndarray, r0: float) -> np.ndarray:
    """The subsurface shaft's geometric mask: the centre band as wide as the hair."""
    return dist <= max(r0, 0.5)


def _draw_subsurface(
    rng: np.random.Generator,
    canvas: np.ndarray,
    hairs: list[_Hair],
    um: float,
    skin_mean: np.ndarray,
) -> np.ndarray:
    """Blue-grey, blurred shaft under the skin; returns its geometric mask.

    Pigment seen through the dermis scatters blue (Tyndall): the follicle shows as a
    diffuse blue-grey wedge, darkest at the exit and fading with depth.
    """
    h, w = canvas.shape[:2]
    sub_mask = np.zeros((h, w), bool)
    haze = np.zeros((h, w), np.float32)
    strength = rng.uniform(0.7, 1.2)
    for hr in hairs:
        r0 = hr.base_w_um / um / 2
        pad = _sub_pad(r0)
        bb = _bbox(hr.sub, pad, h, w)
        if bb is None:
            continue
        x0, y0, bw, bh = bb
        length = max(hr.sub_len_px, 1e-6)

        def radius(s: np.ndarray, r0: float = r0, length: float = length) -> np.ndarray:
            # s runs from the deep end (0) to the exit (length): the haze widens with depth.
            return r0 * (2.6 - 1.1 * s / length)

        edge, dist, _, _, s_along = _segment_fields(hr.sub, radius, x0, y0, bw, bh, pad)
        sl = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        sub_mask[sl] |= _sub_band(dist, r0)
        fade = np.clip(s_along / length, 0, 1) ** 2.2
        cov = np.clip(0.5 - edge, 0, 1) * fade
        darkness = float(np.clip(1.0 - 1.6 * hr.rgb.mean(), 0.05, 1.0))
        a = cov * darkness * strength
        haze[sl] = np.maximum(haze[sl], a)
    if not hairs:
        return sub_mask
    full = (slice(None), slice(None))
    # A wide, light blue-grey cloud with a fibrous texture, then a darker core.
    fibres = np.clip(0.7 + 0.35 * _smooth_noise(rng, h, w, 12.0 / um), 0.2, 1.3)
    wide = _blur(haze, max(0.8, 30.0 / um)) * fibres
    light = np.clip(skin_mean * np.array([0.7, 0.78, 0.92], np.float32), 0, 1)
    _blend(canvas, full, light.astype(np.float32), np.clip(wide * 1.2, 0, 0.8))
    core = _blur(haze, max(0.6, 10.0 / um))
    dark = np.clip(skin_mean * np.array([0.42, 0.5, 0.64], np.float32), 0, 1)
    _blend(canvas, full, dark.astype(np.float32), np.clip(core * rng.uniform(0.4, 0.8), 0, 0.7))
    return sub_mask


def _draw_openings(
    rng: np.random.Generator,
    canvas: np.ndarray,
    hairs: list[_Hair],
    um: float,
    halo: bool,
    skin_mean: np.ndarray,
) -> None:
    """Follicle openings (pinkish-dark pits) and perifollicular halos at unit exits."""
    h, w = canvas.shape[:2]
    pit = np.zeros((h, w), np.float32)
    ring = np.zeros((h, w), np.float32)
    shift = 4
    sc = float(1 << shift)
    seen: set[int] = set()
    for hr in hairs:
        if hr.unit_id in seen:
            continue
        seen.add(hr.unit_id)
        c = hr.exit
        if not (-50 < c[0] < w + 50 and -50 < c[1] < h + 50):
            continue
        r = (hr.base_w_um * 0.9 + 15) / um
        ci = tuple(np.rint(c * sc).astype(int))
        cv2.circle(pit, ci, max(int(r * sc), 1), 1.0, -1, cv2.LINE_AA, shift)
        if halo:
            cv2.circle(
                ring, ci, max(int(r * 2.0 * sc), 1), 1.0, max(1, int(70 / um)), cv2.LINE_AA, shift
            )
    pit = cv2.GaussianBlur(pit, (0, 0), max(0.6, 10.0 / um))
    pit_col = np.clip(skin_mean * np.array([0.72, 0.64, 0.7], np.float32), 0, 1)
    _blend(canvas, (slice(None), slice(None)), pit_col, pit * rng.uniform(0.1, 0.4))
    if halo:
        ring = _blur(ring, max(1.0, 30.0 / um))
        halo_col = np.clip(skin_mean * np.array([0.72, 0.58, 0.48], np.float32), 0, 1)
        _blend(canvas, (slice(None), slice(None)), halo_col, ring * rng.uniform(0.2, 0.45))


def _hair_pixels(
    hr: _Hair, um: float, h: int, w: int
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """A hair's pixel fields (as :func:`_polyline_pixels`) and its own mask pixels.

    The mask rule: every pixel whose centre lies within ``max(radius, 0.5)`` of the centre
    line, plus the pixels the centre line passes through (sub-pixel hairs stay connected).
    """
    r_base = hr.base_w_um / um / 2
    r_tip = hr.tip_w_um / um / 2
    length = max(hr.length_px, 1e-6)

    def radius(s: np.ndarray) -> np.ndarray:
        return r_base + (r_tip - r_base) * np.clip(s / length, 0, 1)

    fields = _polyline_pixels(hr.poly, radius, h, w, r_base + 2)
    gy, gx, _, dist, _, rad, _ = fields
    own = dist <= np.maximum(rad, 0.5)
    cp = _centre_pixels(hr.poly)
    ok = (cp[:, 0] >= 0) & (cp[:, 0] < w) & (cp[:, 1] >= 0) & (cp[:, 1] < h)
    return fields, (np.concatenate([gy[own], cp[ok, 1]]), np.concatenate([gx[own], cp[ok, 0]]))


def _draw_hair(
    rng: np.random.Generator,
    canvas: np.ndarray,
    hr: _Hair,
    um: float,
    shaft_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one shaded hair onto ``canvas``; OR its mask into ``shaft_mask``.

    Returns the hair's own mask pixels as ``(ys, xs)``.
    """
    h, w = canvas.shape[:2]
    r_base = hr.base_w_um / um / 2
    (gy, gx, edge, _, u, rad, s_along), (own_y, own_x) = _hair_pixels(hr, um, h, w)
    shaft_mask[own_y, own_x] = True
    if gy.size == 0:
        return own_y, own_x
    # Anti-aliased coverage from the signed distance to the shaft edge; a sub-pixel hair
    # cannot cover more than its width.
    cov = np.minimum(np.clip(0.5 - edge, 0, 1), np.clip(2 * rad, 0, 1))
    uc = np.clip(u, -1, 1)
    lum = float(hr.rgb.mean())
    # Cylinder: darker at the edges (light grazes them), highlight near the axis.
    edge_dark = 0.3 if lum > 0.4 else 0.5
    shade = 1.0 - edge_dark * np.square(uc)
    # Cuticle / medulla: slow brightness variation along the shaft.
    n_prof = int(hr.length_px) + 2
    prof_sigma = max(2.0, 40.0 / um)
    prof = cv2.GaussianBlur(rng.standard_normal((1, n_prof)).astype(np.float32), (0, 0), prof_sigma)
    prof = 1.0 + 0.07 * prof[0] / max(float(prof.std()), 1e-6)
    shade = shade * prof[np.clip(s_along.astype(np.int64), 0, n_prof - 1)]
    col = hr.rgb[None, :].astype(np.float32) * shade[:, None]
    spec_pos = rng.uniform(-0.4, 0.4)
    spec_amp = rng.uniform(0.05, 0.22) if lum < 0.4 else rng.uniform(0.04, 0.12)
    spec = spec_amp * np.exp(-np.square((uc - spec_pos) / 0.2))
    col = np.clip(col + spec[:, None] * np.array([0.8, 0.88, 1.0], np.float32), 0, 1)
    opacity = 0.97 if lum < 0.5 else 0.88
    # At the exit the shaft emerges through the horny layer: partly veiled for about
    # one width, so the subsurface haze shows through.
    veil = 0.55 + 0.45 * np.clip(s_along / max(2.0 * r_base, 1.0), 0, 1)
    a = (cov * opacity * veil)[:, None]
    canvas[gy, gx] = canvas[gy, gx] * (1 - a) + col * a
    return own_y, own_x


def _optics(
    rng: np.random.Generator,
    canvas: np.ndarray,
    um: float,
    flags: dict[str, bool],
    cfg: SynthConfig,
) -> tuple[np.ndarray, dict[str, float]]:
    """Illumination gradient, glare, bubbles, defocus, half resolution and sensor noise.

    Returns the new canvas and the drawn values (for stratified reporting).
    """
    h, w = canvas.shape[:2]
    # Illumination: a linear gradient plus a smooth low-frequency field.
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    g = rng.normal(0, 0.15, 2).astype(np.float32)
    illum = 1.0 + g[0] * (xx / w - 0.5) + g[1] * (yy / h - 0.5)
    illum += 0.04 * _smooth_noise(rng, h, w, max(h, w) / 2)
    exposure = float(rng.uniform(*cfg.exposure))
    canvas = canvas * (illum * exposure)[..., None]
    if flags["glare"]:
        gl = np.zeros((h, w), np.float32)
        n = int(rng.integers(3, 40))
        cx = rng.integers(0, w, n)
        cy = rng.integers(0, h, n)
        gl[cy, cx] = rng.uniform(0.5, 1.0, n).astype(np.float32)
        gl = cv2.GaussianBlur(gl, (0, 0), max(0.7, 6.0 / um))
        gl = np.clip(gl / max(float(gl.max()), 1e-6), 0, 1)
        canvas = canvas + gl[..., None] * 0.8
    if flags["bubbles"]:
        # Air bubbles in the immersion fluid: a bright rim with a dark line inside it.
        rim = np.zeros((h, w), np.float32)
        inner = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 3))):
            c = (int(rng.integers(0, w)) * 16, int(rng.integers(0, h)) * 16)
            r = rng.uniform(60, 500) / um
            t = max(1, int(round(rng.uniform(4, 12) / um)))
            cv2.circle(rim, c, int(r * 16), 1.0, t, cv2.LINE_AA, 4)
            cv2.circle(inner, c, int(max(r - t - 1, 1) * 16), 1.0, 1, cv2.LINE_AA, 4)
        rim = cv2.GaussianBlur(rim, (0, 0), 0.8)
        inner = cv2.GaussianBlur(inner, (0, 0), 1.0)
        canvas = canvas + rim[..., None] * rng.uniform(0.1, 0.3)
        canvas = canvas * (1.0 - 0.25 * inner)[..., None]
    sigma = rng.uniform(*cfg.blur_sigma_um) / um
    if sigma > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    # Shallow depth of field: part of the field is further out of focus.
    extra = rng.uniform(*cfg.defocus_extra_um) / um
    if extra > 0.5:
        far = cv2.GaussianBlur(canvas, (0, 0), extra)
        wmap = np.clip(_smooth_noise(rng, h, w, max(h, w) / 1.5) * 0.6 + 0.2, 0, 1)
        canvas = canvas + (far - canvas) * wmap[..., None]
    if flags["half_resolution"]:
        small = cv2.resize(canvas, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        canvas = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    noise_sd = rng.uniform(*cfg.noise_sigma)
    lumi = canvas.mean(axis=2, keepdims=True)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    canvas = canvas + noise * noise_sd * np.sqrt(np.clip(lumi, 0.05, 1.0))
    drawn = {
        "exposure": exposure,
        "blur_sigma_px": float(sigma),
        "defocus_extra_px": float(extra),
        "noise_sigma": float(noise_sd),
    }
    return canvas, drawn


def _vignette(rng: np.random.Generator, canvas: np.ndarray, strong: bool) -> np.ndarray:
    """Apply lens falloff in place; return where the field is usable (lit)."""
    h, w = canvas.shape[:2]
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    cx = w / 2 + rng.normal(0, 0.03) * w
    cy = h / 2 + rng.normal(0, 0.03) * h
    r = np.hypot(xx - cx, yy - cy) / (0.5 * math.hypot(w, h))
    if strong:
        # Circular lit field with dark corners, as many dermatoscopes.
        r_edge = rng.uniform(0.78, 0.95)
        soft = rng.uniform(0.02, 0.06)
        fall = 1.0 / (1.0 + np.exp((r - r_edge) / soft))
        fall = (0.04 + 0.96 * fall) * (1.0 - 0.15 * r**2)
        canvas *= fall[..., None]
        return fall > 0.5
    fall = 1.0 - rng.uniform(0.0, 0.25) * r**2
    canvas *= fall[..., None]
    return np.ones((h, w), bool)


def _overlays(
    rng: np.random.Generator, img: np.ndarray, um: float, flags: dict[str, bool]
) -> np.ndarray:
    """Burn in header/footer bars and a scale bar; return the field left usable."""
    h, w = img.shape[:2]
    ok = np.ones((h, w), bool)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if flags["header"]:
        bar = max(12, int(round(h * rng.uniform(0.022, 0.035))))
        img[:bar] = (rng.integers(0, 25),) * 3
        scale = bar / 32.0
        txt = "{}{:03d}  {}x{}  2022/{:02d}/{:02d} {:02d}:{:02d}:{:02d}  70x".format(
            "ABCDEFG"[int(rng.integers(0, 7))],
            int(rng.integers(0, 999)),
            w,
            h,
            int(rng.integers(1, 13)),
            int(rng.integers(1, 29)),
            int(rng.integers(0, 24)),
            int(rng.integers(0, 60)),
            int(rng.integers(0, 60)),
        )
        cv2.putText(img, txt, (4, int(bar * 0.75)), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
        ok[: bar + 1] = False
    if flags["footer"]:
        bar = max(10, int(round(h * rng.uniform(0.015, 0.03))))
        grey = int(rng.choice([10, 200, 220]))
        img[h - bar :] = grey
        ok[h - bar - 1 :] = False
    if flags["scale_bar"]:
        mm = 1.0 if 1000 / um < 0.6 * w else 0.5
        length = int(round(mm * 1000 / um))
        x0 = int(rng.integers(10, max(11, w - length - 80)))
        y0 = int(h - rng.integers(25, max(26, h // 4)))
        col = (40, 40, 40) if rng.uniform() < 0.5 else (250, 250, 250)
        cv2.line(img, (x0, y0), (x0 + length, y0), col, 1, cv2.LINE_AA)
        cv2.line(img, (x0, y0), (x0, y0 - int(0.35 * length)), col, 1, cv2.LINE_AA)
        label = f"{mm:.1f} mm"
        (tw, th), _ = cv2.getTextSize(label, font, 0.45, 1)
        tx, ty = x0 + length + 4, y0 + th // 2
        cv2.rectangle(img, (tx - 2, ty - th - 3), (tx + tw + 2, ty + 4), (40, 40, 40), -1)
        cv2.putText(img, label, (tx, ty), font, 0.45, (245, 245, 245), 1, cv2.LINE_AA)
        ys0 = max(y0 - int(0.35 * length) - 3, 0)
        ok[ys0 : min(y0 + 4, h), max(x0 - 3, 0) : min(x0 + 4, w)] = False
        ok[max(y0 - 3, 0) : min(y0 + 4, h), max(x0 - 3, 0) : min(x0 + length + 4, w)] = False
        ok[max(ty - th - 6, 0) : min(ty + 7, h), max(tx - 5, 0) : min(tx + tw + 5, w)] = False
    if flags["measuring_circle"]:
        # Red measuring circle with its area, as some trichoscope software burns in.
        rad = float(rng.uniform(0.25, 0.45) * min(h, w))
        c = (float(rng.uniform(rad, w - rad)), float(rng.uniform(rad, h - rad)))
        th = int(rng.integers(1, 3))
        red = (230, 30, 30)
        ci = (int(round(c[0] * 16)), int(round(c[1] * 16)))
        cv2.circle(img, ci, int(round(rad * 16)), red, th, cv2.LINE_AA, 4)
        area = math.pi * (rad * um / 1000) ** 2
        label = f"{area:.2f} mm2"
        (tw, tht), _ = cv2.getTextSize(label, font, 0.45, 1)
        tx = int(min(max(c[0] - tw / 2, 0), w - tw - 1))
        ty = int(min(c[1] + rad + tht + 6, h - 3))
        cv2.putText(img, label, (tx, ty), font, 0.45, red, 1, cv2.LINE_AA)
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        ring = np.abs(np.hypot(xx - c[0], yy - c[1]) - rad) <= th + 2.5
        ok &= ~ring
        ok[max(ty - tht - 4, 0) : min(ty + 5, h), max(tx - 4, 0) : min(tx + tw + 4, w)] = False
    return ok


# --------------------------------------------------------------------------- same-site pairs

#: Kinds of same-site pair :func:`render_pair` draws.
PAIR_KINDS = ("zero", "density", "trichogram")


@dataclass(frozen=True)
class PairConfig:
    """How a same-site pair (one scalp site photographed twice) is drawn.

    The site (skin, follicular units, hairs) is drawn once from ``scene`` in micrometre
    world coordinates; each photo sees it through its own camera: placement, rotation and
    magnification, lighting gradient, vignetting, glare, defocus, noise, overlays and JPEG
    are drawn per photo. Ranges are ``(low, high)``, sampled uniformly.

    Attributes
    ----------
    scene : SynthConfig
        The scene and optics ranges (``height``/``width`` are the photos' size).
    kind : {'zero', 'density', 'trichogram'}
        ``'zero'``: the same hairs in both photos (a re-photographed site).
        ``'density'``: the after scene gains or loses whole hairs so that the count of
        hairs exiting in the overlap changes by ``change_pct`` (rounded to a whole hair).
        ``'trichogram'``: a clipped site photographed ``days`` apart; anagen hairs grew,
        telogen hairs did not.
    max_shift_frac : float
        Largest shift of the after photo, per axis, as a fraction of the photo's size.
    max_rotation_deg : float
        Largest rotation between the two photos.
    scale_jitter : float
        Each photo's magnification differs from the nominal scale by up to this fraction.
    change_pct : (float, float)
        Density change drawn for ``'density'`` pairs (% of the before count).
    conversion_fraction : (float, float)
        Fraction of the persisting vellus hairs that thicken (``'density'`` pairs).
    anagen_fraction : (float, float)
        Fraction of growing hairs (``'trichogram'``).
    growth_mm_per_day : (float, float)
        Growth rate of each anagen hair (``'trichogram'``).
    days : (float, float)
        Days between the two photos (``'trichogram'``).
    trichogram_stub_mm : (float, float)
        Hair length right after clipping, on the before photo (``'trichogram'``).
    """

    scene: SynthConfig = field(default_factory=SynthConfig)
    kind: str = "zero"
    max_shift_frac: float = 0.2
    max_rotation_deg: float = 10.0
    scale_jitter: float = 0.02
    change_pct: tuple[float, float] = (-15.0, 35.0)
    conversion_fraction: tuple[float, float] = (0.0, 0.0)
    anagen_fraction: tuple[float, float] = (0.8, 0.9)
    growth_mm_per_day: tuple[float, float] = (0.3, 0.45)
    days: tuple[float, float] = (2.0, 3.0)
    trichogram_stub_mm: tuple[float, float] = (0.2, 0.5)


@dataclass(frozen=True, eq=False)
class RenderPair:
    """Two photos of one scalp site with the exact truth linking them.

    Attributes
    ----------
    before, after : Render
        The two photos, each with its own per-hair truth (ids from 1 in each photo) and
        true ``um_per_px`` (the magnification differs slightly between photos).
    kind : str
        One of :data:`PAIR_KINDS`.
    seed : int
        The seed that made the pair.
    matrix : (2, 3) float array
        The camera transform: ``[x_after, y_after] = matrix @ [x_before, y_before, 1]``
        (pixel centres at integer coordinates), as :class:`trichoscan.comparison.Registration`.
    before_ids, after_ids : (n,) int arrays
        Site identity of each entry of ``before.hairs`` / ``after.hairs``: one hair has
        one id on both photos.
    before_overlap, after_overlap : (H, W) bool
        The overlapping field in each photo (``comparison.overlap_fields`` of ``matrix``
        and the two field masks): what :func:`trichoscan.compare` measures on.
    nominal_um_per_px : float
        The device's nominal scale; each photo's true scale is within ``scale_jitter``.
    asked_change_pct : float or None
        The density change asked for (``'density'``; 0 for ``'zero'``).
    days : float or None
        Days between the photos (``'trichogram'``).
    growth_um : (n_after,) float array
        Growth of each after-photo hair since the before photo (0 for telogen and for
        non-trichogram pairs; NaN for hairs that did not exist before).
    anagen : (n_after,) bool array
        Whether each after-photo hair grew (``'trichogram'``).
    """

    before: Render
    after: Render
    kind: str
    seed: int
    matrix: np.ndarray
    before_ids: np.ndarray
    after_ids: np.ndarray
    before_overlap: np.ndarray = field(repr=False)
    after_overlap: np.ndarray = field(repr=False)
    nominal_um_per_px: float = 0.0
    asked_change_pct: float | None = None
    days: float | None = None
    growth_um: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    anagen: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def matches(self) -> list[tuple[int, int]]:
        """Index pairs ``(i, j)`` of ``before.hairs[i]`` and ``after.hairs[j]`` (one hair)."""
        where = {int(u): j for j, u in enumerate(self.after_ids)}
        return [(i, where[int(u)]) for i, u in enumerate(self.before_ids) if int(u) in where]

    def counted_in_overlap(self) -> tuple[np.ndarray, np.ndarray]:
        """Per hair of each photo: does its exit point's pixel lie in the overlap field?"""
        return (
            _exits_in(self.before.hairs, self.before_overlap),
            _exits_in(self.after.hairs, self.after_overlap),
        )

    def overlap_truth(self) -> dict[str, float | int | None]:
        """True counts, areas and densities (exit rule) in the overlap of each photo.

        Returns
        -------
        dict
            ``before_count``, ``after_count``, ``before_area_cm2``, ``after_area_cm2``
            (each photo's overlap with its own true scale), ``before_density_per_cm2``,
            ``after_density_per_cm2`` and ``change_pct`` (after vs before density).
        """
        in_b, in_a = self.counted_in_overlap()
        out: dict[str, float | int | None] = {}
        for side, render_, inside, over in (
            ("before", self.before, in_b, self.before_overlap),
            ("after", self.after, in_a, self.after_overlap),
        ):
            area = float(over.sum()) * (render_.um_per_px * 1e-4) ** 2
            out[f"{side}_count"] = int(inside.sum())
            out[f"{side}_area_cm2"] = area
            out[f"{side}_density_per_cm2"] = int(inside.sum()) / area if area > 0 else None
        db, da = out["before_density_per_cm2"], out["after_density_per_cm2"]
        out["change_pct"] = 100.0 * (da / db - 1.0) if db and da is not None else None
        return out

    def trichogram_truth(self) -> dict[str, float | int | None]:
        """True phototrichogram of the hairs counted in the before photo's overlap.

        Returns
        -------
        dict
            ``n_hairs``, ``n_anagen``, ``anagen_fraction``, ``anagen_telogen_ratio``,
            ``mean_growth_um`` and ``growth_rate_mm_per_day`` (mean over anagen hairs), and
            ``days``.
        """
        in_b, _ = self.counted_in_overlap()
        pairs = [(i, j) for i, j in self.matches() if in_b[i]]
        growth = np.array([self.growth_um[j] for _, j in pairs], float)
        anagen = np.array([bool(self.anagen[j]) for _, j in pairs], bool)
        n, n_ana = len(pairs), int(anagen.sum())
        days = self.days
        mean_g = float(growth[anagen].mean()) if n_ana else None
        return {
            "n_hairs": n,
            "n_anagen": n_ana,
            "anagen_fraction": n_ana / n if n else None,
            "anagen_telogen_ratio": n_ana / (n - n_ana) if n > n_ana else None,
            "mean_growth_um": mean_g,
            "growth_rate_mm_per_day": mean_g / 1000.0 / days if mean_g and days else None,
            "days": days,
        }

    def truth_dict(self) -> dict[str, Any]:
        """JSON-ready truth of the pair (each photo's own truth: ``Render.truth_dict``)."""
        return {
            "renderer_version": RENDERER_VERSION,
            "seed": self.seed,
            "kind": self.kind,
            "matrix": np.round(self.matrix, 9).tolist(),
            "nominal_um_per_px": self.nominal_um_per_px,
            "before_um_per_px": self.before.um_per_px,
            "after_um_per_px": self.after.um_per_px,
            "asked_change_pct": self.asked_change_pct,
            "days": self.days,
            "overlap": self.overlap_truth(),
            "trichogram": self.trichogram_truth() if self.kind == "trichogram" else None,
            "before_ids": [int(u) for u in self.before_ids],
            "after_ids": [int(u) for u in self.after_ids],
            "growth_um": [None if math.isnan(g) else round(float(g), 3) for g in self.growth_um],
            "anagen": [bool(a) for a in self.anagen],
        }


def _exits_in(hairs: tuple[HairTruth, ...], region: np.ndarray) -> np.ndarray:
    """Whether each hair's rounded exit pixel lies in ``region`` (the counting rule)."""
    h, w = region.shape
    out = np.zeros(len(hairs), bool)
    for k, t in enumerate(hairs):
        x, y = int(np.rint(t.exit_xy[0])), int(np.rint(t.exit_xy[1]))
        out[k] = 0 <= x < w and 0 <= y < h and bool(region[y, x])
    return out


def _affine_inverse(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def _apply_affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, float) @ m[:, :2].T + m[:, 2]


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine map ``x -> a(b(x))``."""
    out = np.empty((2, 3))
    out[:, :2] = a[:, :2] @ b[:, :2]
    out[:, 2] = a[:, :2] @ b[:, 2] + a[:, 2]
    return out


@dataclass(frozen=True)
class _Camera:
    """One photo of the site: placement (photo px -> world px), scale and drawn streams."""

    to_world: np.ndarray  # (2, 3): world = to_world @ [x, y, 1]
    um: float  # true µm per photo pixel
    flags: dict[str, bool]
    seeds: tuple[int, ...]  # seed sequence of this camera's streams


_CAMERA_FLAGS = (
    "header",
    "footer",
    "scale_bar",
    "vignette",
    "bubbles",
    "glare",
    "half_resolution",
    "measuring_circle",
    "jpeg",
)


def _draw_cameras(
    seed: int, cfg: PairConfig, um_world: float
) -> tuple[list[_Camera], tuple[int, int]]:
    """Place two cameras on a world canvas just large enough for both; return its size."""
    rng = np.random.default_rng([seed, 1])
    h, w = cfg.scene.height, cfg.scene.width
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    # The before camera looks at the site's centre, the after camera shifted and turned.
    rot1 = 0.0
    rot2 = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    shift = rng.uniform(-cfg.max_shift_frac, cfg.max_shift_frac, 2) * np.array([w, h])
    scales = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter, 2)
    mats = []
    for rot, s, t in ((rot1, scales[0], np.zeros(2)), (rot2, scales[1], shift)):
        c, si = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        lin = s * np.array([[c, -si], [si, c]])
        mats.append(np.hstack([lin, (t - lin @ centre)[:, None]]))
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    pts = np.vstack([_apply_affine(m, corners) for m in mats])
    pad = 8  # interpolation support beyond the photo's corners
    lo = np.floor(pts.min(axis=0)) - pad
    hi = np.ceil(pts.max(axis=0)) + pad
    cams = []
    for k, m in enumerate(mats):
        m = m.copy()
        m[:, 2] -= lo
        flags = {
            name: bool(rng.uniform() < getattr(cfg.scene, "p_" + name)) for name in _CAMERA_FLAGS
        }
        cams.append(_Camera(m, um_world * float(scales[k]), flags, (seed, 10 + k)))
    size = (int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1)
    return cams, size


def _camera_field(cam: _Camera, h: int, w: int, um: float) -> tuple[np.ndarray, np.ndarray]:
    """The lens falloff and the usable field of a camera (vignette and burned-in overlays).

    Both depend only on the camera's own streams, so the field is known before the photo
    is drawn (the density change is placed in the overlap).
    """
    fall = np.ones((h, w, 3), np.float32)
    vignette_ok = _vignette(np.random.default_rng([*cam.seeds, 0]), fall, cam.flags["vignette"])
    dummy = np.zeros((h, w, 3), np.uint8)
    overlay_ok = _overlays(np.random.default_rng([*cam.seeds, 2]), dummy, um, cam.flags)
    return fall, vignette_ok & overlay_ok


def _hair_in_photo(hr: _Hair, to_photo: np.ndarray, scale: float) -> _Hair:
    """A world hair's geometry in a photo (``scale``: world px per photo px)."""
    lin = to_photo[:, :2]
    d = lin @ np.array([math.cos(hr.angle), math.sin(hr.angle)])
    return replace(
        hr,
        exit=_apply_affine(to_photo, hr.exit[None])[0],
        angle=float(math.atan2(d[1], d[0])),
        length_px=hr.length_px / scale,
        curvature=hr.curvature * scale,
        sub_len_px=hr.sub_len_px / scale,
        poly=_apply_affine(to_photo, hr.poly),
        sub=_apply_affine(to_photo, hr.sub),
    )


def _sub_pixels(hr: _Hair, um: float, sub_mask: np.ndarray) -> None:
    """OR a hair's subsurface centre band into ``sub_mask`` (the rule of the renderer)."""
    h, w = sub_mask.shape
    r0 = hr.base_w_um / um / 2
    pad = _sub_pad(r0)
    bb = _bbox(hr.sub, pad, h, w)
    if bb is None:
        return
    x0, y0, bw, bh = bb
    _, dist, _, _, _ = _segment_fields(hr.sub, lambda s: np.full_like(s, r0), x0, y0, bw, bh, pad)
    sub_mask[y0 : y0 + bh, x0 : x0 + bw] |= _sub_band(dist, r0)


def _site_canvas(
    seed: int,
    skin: np.ndarray,
    skin_mean: np.ndarray,
    hairs: list[_Hair],
    um: float,
    halo: bool,
) -> np.ndarray:
    """Draw a scene's hairs on (a copy of) the site's skin, in world pixels.

    Every draw comes from a stream fixed by the seed (and the hair's identity), so a hair
    looks the same in both scenes of a pair and the stacking order does not change.
    """
    canvas = skin.copy()
    _draw_subsurface(np.random.default_rng([seed, 3]), canvas, hairs, um, skin_mean)
    _draw_openings(np.random.default_rng([seed, 4]), canvas, hairs, um, halo, skin_mean)
    dummy = np.zeros(canvas.shape[:2], bool)
    keys = [float(np.random.default_rng([seed, 6, hr.uid]).uniform()) for hr in hairs]
    for i in np.argsort(keys, kind="stable"):
        hr = hairs[int(i)]
        _draw_hair(np.random.default_rng([seed, 5, hr.uid]), canvas, hr, um, dummy)
    return canvas


def _photo(
    world: np.ndarray,
    hairs: list[_Hair],
    cam: _Camera,
    fall: np.ndarray,
    field_mask: np.ndarray,
    cfg: SynthConfig,
    seed: int,
    scene_params: dict[str, Any],
) -> tuple[Render, list[int]]:
    """Photograph the world canvas with one camera; return the render and hair uids."""
    h, w = cfg.height, cfg.width
    canvas = cv2.warpAffine(
        world,
        cam.to_world,
        (w, h),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    rng = np.random.default_rng([*cam.seeds, 1])
    canvas, optics = _optics(rng, canvas, cam.um, cam.flags, cfg)
    canvas = np.clip(canvas * fall, 0.0, 1.0)
    img = (canvas * 255.0 + 0.5).astype(np.uint8)
    _overlays(np.random.default_rng([*cam.seeds, 2]), img, cam.um, cam.flags)
    jpeg_bytes = None
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    optics["jpeg_quality"] = q if cam.flags["jpeg"] else None
    if cam.flags["jpeg"]:
        ok, enc = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            jpeg_bytes = enc.tobytes()
            img = np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1])
    to_photo = _affine_inverse(cam.to_world)
    scale = float(np.hypot(cam.to_world[0, 0], cam.to_world[1, 0]))
    local = [_hair_in_photo(hr, to_photo, scale) for hr in hairs]
    shaft = np.zeros((h, w), bool)
    sub = np.zeros((h, w), bool)
    own = []
    for hr in local:
        ys, xs = _hair_pixels(hr, cam.um, h, w)[1]
        shaft[ys, xs] = True
        own.append((ys, xs))
        _sub_pixels(hr, cam.um, sub)
    truths = _truths(local, own, field_mask, cam.um)
    keep = [k for k, t in enumerate(truths) if t.counted_visible or _touches(t, h, w)]
    kept = tuple(replace(truths[k], hair_id=n + 1) for n, k in enumerate(keep))
    params = {
        **scene_params,
        **{k: v for k, v in cam.flags.items()},
        **optics,
        "um_per_px": cam.um,
        "camera_to_site": np.round(cam.to_world, 9).tolist(),
    }
    render_ = Render(
        image=img,
        mask=shaft & field_mask,
        subsurface_mask=sub & ~shaft & field_mask,
        field_mask=field_mask,
        um_per_px=cam.um,
        seed=int(seed),
        hairs=kept,
        params=params,
        jpeg_bytes=jpeg_bytes,
    )
    return render_, [hairs[k].uid for k in keep]


def _points_in(xy: np.ndarray, to_photo: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Whether world points land, rounded, on a ``region`` pixel of a photo."""
    h, w = region.shape
    xy = np.asarray(xy, float).reshape(-1, 2)
    pix = np.rint(_apply_affine(to_photo, xy)).astype(np.int64)
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    out = np.zeros(len(xy), bool)
    out[ok] = region[pix[ok, 1], pix[ok, 0]]
    return out


def _new_hairs(
    rng: np.random.Generator,
    cfg: SynthConfig,
    world_shape: tuple[int, int],
    sp: _SceneParams,
    existing: list[_Hair],
    wanted: int,
    accept: Any,
    ids: list[int],
) -> list[_Hair]:
    """Draw ``wanted`` new hairs in whole units (the last one maybe cut short).

    Candidates come from the scene's own unit process (flow, colours, widths); a unit is
    taken when ``accept`` (world exit points -> bool) holds for its opening and it keeps
    clear of every existing opening. New hairs take the length of a random existing
    hair (the site's clipper length). ``ids`` holds the next free hair and unit ids
    (updated in place).
    """
    hw_, ww_ = world_shape
    out: list[_Hair] = []
    if wanted <= 0:
        return out
    lengths = np.array([hr.length_px for hr in existing]) if existing else None
    exits = np.array([hr.exit for hr in existing]) if existing else np.zeros((0, 2))
    min_gap = 150.0 / sp.um  # px between openings: units stay apart, as on real scalps
    step = max(8.0, 500.0 / sp.um)
    for _ in range(50):
        cand = _draw_units(
            rng,
            cfg,
            hw_,
            ww_,
            sp.um,
            sp.density,
            0.0,
            (sp.dominant, sp.grey_frac),
            sp.flow,
            sp.class_mix,
        )
        units: dict[int, list[_Hair]] = {}
        for hr in cand:
            units.setdefault(hr.unit_id, []).append(hr)
        for unit in units.values():
            take = unit[: wanted - len(out)]
            opening = np.mean([hr.exit for hr in unit], axis=0)
            if not accept(np.array([hr.exit for hr in take])).all():
                continue
            if len(exits) and np.hypot(*(exits - opening).T).min() < min_gap:
                continue
            for hr in take:
                hr.uid, hr.unit_id = ids[0], ids[1]
                ids[0] += 1
                if lengths is not None:
                    hr.length_px = float(lengths[int(rng.integers(len(lengths)))])
                    hr.poly = _arc_polyline(hr.exit, hr.angle, hr.length_px, hr.curvature, step)
                out.append(hr)
            ids[1] += 1
            exits = np.vstack([exits, opening[None]])
            if len(out) >= wanted:
                return out
    logger.warning("render_pair: placed %d of %d new hairs", len(out), wanted)
    return out


def render_pair(
    seed: int, config: PairConfig | None = None, *, change_pct: float | None = None
) -> RenderPair:
    """Render one scalp site photographed twice, with the exact truth linking the photos.

    The site (skin, follicular units, hairs) is drawn once in world coordinates, then seen
    through two cameras: the after photo is shifted (up to ``max_shift_frac`` of the
    field per axis), rotated (up to ``max_rotation_deg``) and each photo's magnification
    is off the nominal scale by up to ``scale_jitter``; lighting gradient, exposure,
    vignetting, glare, bubbles, defocus, noise, overlays and JPEG are drawn per photo.

    Parameters
    ----------
    seed : int
        Seed; the same seed and config give a bit-identical pair.
    config : PairConfig, optional
        Pair kind and ranges (default: a zero-change pair of default scenes).
    change_pct : float, optional
        For ``'density'`` pairs: the change to make (% of the count of hairs exiting in
        the before photo's overlap field), instead of drawing it from
        ``config.change_pct``. The after scene loses (random hairs) or gains (whole new
        follicular units, the last possibly cut short) ``round(change_pct / 100 * N)``
        hairs exiting in the overlap, away from its edge, and the same rate outside it.

    Returns
    -------
    RenderPair
        The two renders, the true camera transform, per-hair identity across photos,
        overlap fields and (trichogram) per-hair growth and anagen flags.
    """
    cfg = config or PairConfig()
    if cfg.kind not in PAIR_KINDS:
        raise ValueError(f"kind must be one of {PAIR_KINDS}, not {cfg.kind!r}")
    scene = cfg.scene
    if cfg.kind == "trichogram":
        # A phototrichogram site is clipped short: no long hairs.
        scene = replace(
            scene, p_unshaved=0.0, long_fraction=(0.0, 0.0), stub_length_mm=cfg.trichogram_stub_mm
        )
    rng = np.random.default_rng(seed)
    sp = _scene_params(rng, scene)
    cams, (hw_, ww_) = _draw_cameras(seed, cfg, sp.um)
    h, w = scene.height, scene.width
    hairs = _draw_units(
        rng,
        scene,
        hw_,
        ww_,
        sp.um,
        sp.density,
        sp.long_fraction,
        (sp.dominant, sp.grey_frac),
        sp.flow,
        sp.class_mix,
    )
    for uid, hr in enumerate(hairs):
        hr.uid = uid
    skin = _skin(rng, hw_, ww_, sp.um, sp.skin_tone, sp.flags)
    skin_mean = skin.reshape(-1, 3).mean(axis=0)
    _skin_features(rng, skin, hw_, ww_, sp.um, sp.flags, hairs)

    fields = [_camera_field(c, h, w, c.um) for c in cams]
    to_photo = [_affine_inverse(c.to_world) for c in cams]
    matrix = _compose(to_photo[1], cams[0].to_world)
    from .comparison import overlap_fields  # the overlap exactly as compare() measures it

    over_b, over_a = overlap_fields(matrix, fields[0][1], fields[1][1])

    edit = np.random.default_rng([seed, 2])
    after = list(hairs)
    asked: float | None = 0.0 if cfg.kind == "zero" else None
    days: float | None = None
    growth: dict[int, float] = {}
    if cfg.kind == "density":
        asked = float(edit.uniform(*cfg.change_pct)) if change_pct is None else float(change_pct)
        after = _change_density(edit, cfg, scene, sp, hairs, (hw_, ww_), to_photo[0], over_b, asked)
    elif cfg.kind == "trichogram":
        days = float(edit.uniform(*cfg.days))
        f_ana = float(edit.uniform(*cfg.anagen_fraction))
        step = max(8.0, 500.0 / sp.um)
        after = []
        for hr in hairs:
            ana = bool(edit.uniform() < f_ana)
            rate = float(edit.uniform(*cfg.growth_mm_per_day))
            g = rate * days * 1000.0 if ana else 0.0
            growth[hr.uid] = g
            if g > 0:
                length = hr.length_px + g / sp.um
                poly = _arc_polyline(hr.exit, hr.angle, length, hr.curvature, step)
                hr = replace(hr, length_px=length, poly=poly)
            after.append(hr)

    world_b = _site_canvas(seed, skin, skin_mean, hairs, sp.um, sp.flags["halo"])
    world_a = (
        world_b
        if cfg.kind == "zero"
        else _site_canvas(seed, skin, skin_mean, after, sp.um, sp.flags["halo"])
    )
    scene_params = {
        "pair_kind": cfg.kind,
        "skin_tone": sp.skin_tone,
        "hair_colour": sp.dominant,
        "grey_fraction": sp.grey_frac,
        "density_per_cm2": sp.density,
        "nominal_um_per_px": sp.um,
        "unshaved": sp.unshaved,
        "long_fraction": sp.long_fraction,
        "vellus_fraction": sp.class_mix[0],
        "terminal_fraction": sp.class_mix[1],
        "flow_deg": math.degrees(sp.flow[0]) % 360.0,
        **{k: v for k, v in sp.flags.items() if k not in _CAMERA_FLAGS},
    }
    before_r, ids_b = _photo(world_b, hairs, cams[0], *fields[0], scene, seed, scene_params)
    after_r, ids_a = _photo(world_a, after, cams[1], *fields[1], scene, seed, scene_params)
    existed = {hr.uid for hr in hairs}
    g_after = np.array([growth.get(u, 0.0) if u in existed else math.nan for u in ids_a], float)
    return RenderPair(
        before=before_r,
        after=after_r,
        kind=cfg.kind,
        seed=int(seed),
        matrix=matrix,
        before_ids=np.asarray(ids_b, np.int64),
        after_ids=np.asarray(ids_a, np.int64),
        before_overlap=over_b,
        after_overlap=over_a,
        nominal_um_per_px=sp.um,
        asked_change_pct=asked,
        days=days,
        growth_um=g_after,
        anagen=np.nan_to_num(g_after) > 0,
    )


def _change_density(
    rng: np.random.Generator,
    cfg: PairConfig,
    scene: SynthConfig,
    sp: _SceneParams,
    hairs: list[_Hair],
    world_shape: tuple[int, int],
    to_before: np.ndarray,
    over_b: np.ndarray,
    pct: float,
) -> list[_Hair]:
    """The after scene of a density pair: hairs removed or added, vellus maybe thickened.

    The count of hairs exiting in the before overlap changes by ``round(pct/100 * N)``;
    removed and added hairs keep a few pixels off the overlap's edge, where the two
    photos' rounding could disagree. Outside the overlap the same rate applies.
    """
    kernel = np.ones((7, 7), np.uint8)
    core = cv2.erode(over_b.astype(np.uint8), kernel) > 0
    near = cv2.dilate(over_b.astype(np.uint8), kernel) > 0
    exits = np.array([hr.exit for hr in hairs], float).reshape(-1, 2)
    in_over = _points_in(exits, to_before, over_b)
    in_core = _points_in(exits, to_before, core)
    outside = ~_points_in(exits, to_before, near)
    k_in = int(round(pct / 100.0 * int(in_over.sum())))
    k_out = int(round(pct / 100.0 * int((~in_over).sum())))
    keep = np.ones(len(hairs), bool)
    for k, pool in ((k_in, in_core), (k_out, outside)):
        if k < 0:
            idx = np.flatnonzero(pool)
            keep[rng.choice(idx, size=min(-k, idx.size), replace=False)] = False
    after = [hr for hr, kp in zip(hairs, keep, strict=True) if kp]
    f_conv = float(rng.uniform(*cfg.conversion_fraction))
    if f_conv > 0:
        for i, hr in enumerate(after):
            if 0.5 * (hr.base_w_um + hr.tip_w_um) < VELLUS_MAX_UM and rng.uniform() < f_conv:
                # A miniaturised hair recovering: thicker, untapered, fully pigmented.
                wid = float(rng.uniform(40.0, 90.0))
                rgb = np.asarray(HAIR_COLOURS[hr.colour], float)
                rgb = np.clip(rgb * math.exp(0.12 * rng.standard_normal()), 0, 1)
                after[i] = replace(hr, base_w_um=wid, tip_w_um=wid, rgb=rgb)
    ids = [max((hr.uid for hr in hairs), default=-1) + 1]
    ids.append(max((hr.unit_id for hr in hairs), default=0) + 1)
    new: list[_Hair] = []
    if k_in > 0:
        new += _new_hairs(
            rng,
            scene,
            world_shape,
            sp,
            after,
            k_in,
            lambda xy: _points_in(xy, to_before, core),
            ids,
        )
    if k_out > 0:
        new += _new_hairs(
            rng,
            scene,
            world_shape,
            sp,
            after + new,
            k_out,
            lambda xy: ~_points_in(xy, to_before, near),
            ids,
        )
    return after + new


# --------------------------------------------------------------------------- output


def write_render(render: Render, out_dir: Path, name: str, *, fmt: str = "jpg") -> dict[str, Path]:
    """Write a render's photo, masks and JSON truth.

    Parameters
    ----------
    render : Render
        The render to write.
    out_dir : Path
        Folder (created if missing).
    name : str
        Base file name.
    fmt : {'jpg', 'png'}
        Photo format; a JPEG render is written with its own encoded bytes (no second
        compression), otherwise at quality 95.

    Returns
    -------
    dict of str to Path
        ``image``, ``mask``, ``subsurface``, ``field`` and ``truth`` paths.
    """
    if fmt not in ("jpg", "png"):
        raise ValueError(f"fmt must be 'jpg' or 'png', not {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "image": out_dir / f"{name}.{fmt}",
        "mask": out_dir / f"{name}_mask.png",
        "subsurface": out_dir / f"{name}_subsurface.png",
        "field": out_dir / f"{name}_field.png",
        "truth": out_dir / f"{name}.json",
    }
    if fmt == "jpg" and render.jpeg_bytes is not None:
        paths["image"].write_bytes(render.jpeg_bytes)
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpg" else []
        cv2.imwrite(str(paths["image"]), render.image[:, :, ::-1], params)
    cv2.imwrite(str(paths["mask"]), render.mask.astype(np.uint8) * 255)
    cv2.imwrite(str(paths["subsurface"]), render.subsurface_mask.astype(np.uint8) * 255)
    cv2.imwrite(str(paths["field"]), render.field_mask.astype(np.uint8) * 255)
    paths["truth"].write_text(json.dumps(render.truth_dict(), indent=1))
    return paths


def write_pair(pair: RenderPair, out_dir: Path, name: str, *, fmt: str = "jpg") -> dict[str, Path]:
    """Write a same-site pair: both renders (as :func:`write_render`) and the pair truth.

    Files are ``{name}_before.*``, ``{name}_after.*`` and ``{name}_pair.json``.

    Returns
    -------
    dict of str to Path
        ``before`` and ``after`` photo paths and the ``pair`` truth path.
    """
    out_dir = Path(out_dir)
    before = write_render(pair.before, out_dir, f"{name}_before", fmt=fmt)
    after = write_render(pair.after, out_dir, f"{name}_after", fmt=fmt)
    truth = out_dir / f"{name}_pair.json"
    truth.write_text(json.dumps(_jsonable(pair.truth_dict()), indent=1))
    return {"before": before["image"], "after": after["image"], "pair": truth}


def render_dataset(
    out_dir: Path | str, n: int, seed: int, config: SynthConfig | None = None
) -> list[Path]:
    """Render and write ``n`` photos with seeds ``seed .. seed+n-1``.

    Returns
    -------
    list of Path
        The photo paths, named ``synth_{seed:06d}``.
    """
    out = []
    for s in range(seed, seed + n):
        r = render(s, config)
        out.append(write_render(r, Path(out_dir), f"synth_{s:06d}")["image"])
        logger.debug("rendered seed %d", s)
    return out


# --------------------------------------------------------------------------- realism


def _estimate_hair_mask(lum: np.ndarray) -> np.ndarray:
    """Crude dark-hair mask of an unlabelled photo: black top-hat, Otsu, cleanup."""
    h, w = lum.shape
    k = max(int(round(min(h, w) / 12)) | 1, 5)
    th = cv2.morphologyEx(
        lum, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    )
    otsu, _ = cv2.threshold(
        np.clip(th, 0, 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    hair = (th >= max(float(otsu), 20.0)).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, st, _ = cv2.connectedComponentsWithStats(hair, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = st[1:, cv2.CC_STAT_AREA] >= max(30, h * w // 20000)
    return keep[lab]


def _median_blob_width(hair: np.ndarray) -> float:
    """Median over hair blobs of twice the blob's largest inscribed radius (px).

    A blob's deepest distance-transform value is robust to ragged edges and highlight
    holes, which swamp a per-pixel medial-axis median on real photos.
    """
    from scipy import ndimage  # core dependency; imported here to keep import light

    closed = cv2.morphologyEx(
        hair.astype(np.uint8), cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    )
    n, lab = cv2.connectedComponents(closed, connectivity=8)
    if n <= 1:
        return float("nan")
    dt = cv2.distanceTransform(closed, cv2.DIST_L2, 5)
    radii = ndimage.maximum(dt, lab, index=np.arange(1, n))
    return float(2 * np.median(radii))


def realism_stats(image_rgb: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Simple statistics to compare renders with real photos.

    Rows that are mostly dark (burned-in header/footer bars, median luminance < 40) are
    left out of every statistic, so photos with and without bars compare fairly.

    Parameters
    ----------
    image_rgb : (H, W, 3) uint8
        RGB photo.
    mask : (H, W) bool, optional
        Hair mask; without it dark hair is estimated (black top-hat, Otsu threshold,
        small blobs removed), so the statistics work on unlabelled real photos too.

    Returns
    -------
    dict
        ``mean_r/g/b``, ``sd_r/g/b`` (0-255), ``hue_mean`` (degrees, circular),
        ``sat_mean``, ``sat_sd`` (0-1), ``dark_fraction`` (luminance < 60),
        ``lum_mean``, ``lum_sd``, ``hair_skin_contrast`` (median skin minus median hair
        luminance, 0-255), ``hair_fraction`` and ``median_hair_width_px`` (median over
        hair blobs of the widest inscribed disc; mask given or estimated).
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError("image_rgb must be (H, W, 3)")
    img = img[..., :3].astype(np.uint8)
    f = img.astype(np.float32)
    lum_full = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    rows = np.median(lum_full, axis=1) >= 40
    if not rows.any():
        rows[:] = True
    img = img[rows]
    f = f[rows]
    lum = lum_full[rows]
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue = hsv[..., 0] / 256.0 * 2 * math.pi
    sat = hsv[..., 1] / 255.0
    stats: dict[str, float] = {}
    for i, ch in enumerate("rgb"):
        stats[f"mean_{ch}"] = float(f[..., i].mean())
        stats[f"sd_{ch}"] = float(f[..., i].std())
    stats["hue_mean"] = float(np.degrees(np.arctan2(np.sin(hue).mean(), np.cos(hue).mean())) % 360)
    stats["sat_mean"] = float(sat.mean())
    stats["sat_sd"] = float(sat.std())
    stats["lum_mean"] = float(lum.mean())
    stats["lum_sd"] = float(lum.std())
    stats["dark_fraction"] = float((lum < 60).mean())
    if mask is None:
        hair = _estimate_hair_mask(np.ascontiguousarray(lum))
    else:
        hair = np.asarray(mask, bool)[rows]
    stats["hair_fraction"] = float(hair.mean())
    if hair.any() and (~hair).any():
        stats["hair_skin_contrast"] = float(np.median(lum[~hair]) - np.median(lum[hair]))
        stats["median_hair_width_px"] = _median_blob_width(hair)
    else:
        stats["hair_skin_contrast"] = float("nan")
        stats["median_hair_width_px"] = float("nan")
    return stats
