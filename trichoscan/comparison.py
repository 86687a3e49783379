"""Before/after comparison: session estimates with 95 % CIs, registration, per-hair fate.

Statistics
----------
(Written to be pasted into the README.)

*Session estimate.* A session's photos are pooled: density = Σ hairs / Σ field area, mean
width = Σ widths / Σ hairs, terminal/vellus ratio = Σ terminal / Σ vellus, cumulative
thickness = Σ widths / Σ field area (mm per cm²). Pooling weights each photo by what it
measured (hairs, area) instead of averaging per-photo ratios.

*Counting error.* Counting N hairs from a site is a Poisson sample of its follicles, so
var(density) = N / A²; the mean width's error is s / √N (s: SD of the hair widths);
cumulative thickness is a compound Poisson sum, var = Σ w² / A²; the ratio T/V has
var(log T/V) = 1/T + 1/V. With one or two photos this is the only error term.

*Photo-to-photo error.* With three or more photos the pooled estimate is also bootstrapped
over photos (resampled with replacement, 2000 replicates, fixed seed so results are
deterministic); its bootstrap SE captures placement, focus and lighting variation. The two
terms are added as independent variances, SE² = SE²_bootstrap + SE²_counting — conservative,
since the photo spread already contains part of the counting noise. CI = estimate ± 1.96 SE,
cut at 0 (for the T/V ratio on the log scale). One hair gives a mean width but no CI.

*Change.* Sessions are independent: Δ = after − before, SE(Δ) = √(SE²_before + SE²_after),
CI = Δ ± 1.96 SE(Δ); the % change uses the log ratio, SE = √((SE_b/b)² + (SE_a/a)²), CI =
100·(exp(log(a/b) ± 1.96 SE) − 1). A change is *significant* when its CI excludes zero.

*Minimal detectable change.* MDC95 = 1.96 × √(mean d²) over the % differences d of
zero-change pairs (the same site re-photographed: moved, rotated, re-lit, re-focused); it
equals 1.96·√2·SEM with SEM = RMS(d)/√2, and a systematic difference between shots
inflates it, as it should. A change *exceeds the MDC* when |Δ %| > MDC95.

*Same field.* Two photos of a site are registered (SIFT features, ratio test, RANSAC
similarity transform, then a check against matched follicle exit points) and both are
measured on the overlapping field only, by re-running the metrics with the overlap mapped
into each photo. When registration fails the comparison falls back to the whole fields and
is flagged (``registered=False``). The overlap is one piece of skin, so its physical area
is the same in both photos: when both photos carry the same scale (one device, given or
from its profile) but the registration finds a magnification ratio ``s`` between them
(contact pressure, focus), the scales are corrected symmetrically (before ``× √s``,
after ``÷ √s``; their geometric mean stays the device scale), so a magnification drift
of 2 % does not read as a 4 % density change.

*Per-hair fate.* With a registration, each hair's exit point (follicle) is mapped into the
other photo and matched one-to-one (Hungarian assignment, within ``match_tol_um``): matched
hairs persisted, unmatched hairs of the before photo were lost, of the after photo are new;
matched hairs whose width class changed are conversions (e.g. vellus → terminal).

*Phototrichogram.* Two photos of one clipped site ``days`` apart are registered and their
hairs matched by the root end (the end that stays put: the mapped before end within
``match_tol_um`` of an after end, the shafts within 20° of one direction, one-to-one by
Hungarian assignment). Hairs counted (exit rule) in the before photo's overlap, single
shafts (not bundles) and uncut at both ends in both photos are measured: growth = after
length − before length. Lengths are followed on the hair masks from the root (re-centred
across the shaft, straight on through crossings), not taken from the hair instances,
which crossings can cut short. A hair grew (anagen) when its growth exceeds
``GROWTH_THRESHOLD_UM`` (200 µm: a third of the least growth in two days at 0.3 mm/day,
and about twice the typical length change of non-growing hairs on development renders;
``benchmarks/accuracy_change.py`` reports that noise); otherwise it is telogen. The
anagen fraction, the anagen/telogen ratio and the growth rate (mean growth of the anagen
hairs / days, mm/day) get 95 % CIs from a bootstrap over the measured hairs (2000
replicates, percentile intervals, fixed seed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .calibration import Calibration
from .errors import InputError
from .metrics import Analysis, summarize

__all__ = [
    "METRICS",
    "Z95",
    "MDC95_PCT",
    "PhotoStats",
    "Estimate",
    "SessionEstimate",
    "Change",
    "Registration",
    "HairFate",
    "MeasuredPhoto",
    "Comparison",
    "photo_stats",
    "estimate_session",
    "change",
    "mdc95",
    "register_photos",
    "overlap_fields",
    "hair_fate",
    "compare_measured",
    "compare",
    "GROWTH_THRESHOLD_UM",
    "TrichogramHair",
    "Phototrichogram",
    "phototrichogram_measured",
    "phototrichogram",
]

logger = logging.getLogger(__name__)

Z95 = 1.959963984540054
METRICS = (
    "density_per_cm2",
    "mean_width_um",
    "terminal_vellus_ratio",
    "cumulative_thickness_mm_per_cm2",
)
#: MDC95 in % per metric, from the zero-change pairs of ``benchmarks/accuracy_change.py``
#: (one photo per visit); ``None`` until measured (then ``exceeds_mdc`` is ``None``).
#: Density: 27.1 % from 10 rendered zero-change pairs, classical segmenter with the
#: faint-shaft filter, the one-hair-width stub rule, bubble-rim removal, same-component
#: pixel assignment, sliver removal, the colour pass measured off the dark hairs, hidden
#: exit ends and short-armed scale bars masked, renderer 1.1.0 (1280x1024 at 7-9 µm/px,
#: >= 150 counted hairs in the overlap; 27.2 % in the previous release, 21.8 % before it,
#: 18.9 % before that, 28.1 % before the stub rule, 47.2 % before the filter: ten pairs
#: make it a noisy estimate, one defocused pair, +40 %, dominates it); the counting noise
#: of the classical masks between two photos of the same hairs, not the Poisson floor.
MDC95_PCT: dict[str, float | None] = {**dict.fromkeys(METRICS), "density_per_cm2": 27.1}

N_BOOTSTRAP = 2000
MIN_PHOTOS_BOOTSTRAP = 3


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class PhotoStats:
    """Sufficient statistics of one photo (or one photo's overlap field).

    Widths are per hair in µm; all µm/cm² fields are ``None`` without a scale.
    """

    hair_count: int
    area_cm2: float | None
    width_sum_um: float | None
    width_sq_sum_um2: float | None
    vellus_count: int | None
    terminal_count: int | None
    source: str | None = None


def photo_stats(result: Analysis | dict[str, Any]) -> PhotoStats:
    """Sufficient statistics from an :class:`Analysis` or its ``summary()`` dict (CSV row).

    The width sums are rebuilt from the count, mean and SD (ddof=1) the metrics report.
    """
    s = result.summary() if isinstance(result, Analysis) else result

    def num(key: str) -> float | None:
        v = s.get(key)
        return None if v is None or v == "" else float(v)

    n = int(float(s["hair_count"]))
    mean, sd, area = num("mean_width_um"), num("width_sd_um"), num("field_area_cm2")
    w1 = w2 = None
    if mean is not None:
        w1 = mean * n
        w2 = (sd**2 * (n - 1) if sd is not None else 0.0) + n * mean**2
    elif n == 0 and area is not None:
        w1 = w2 = 0.0
    vellus, terminal = num("vellus_count"), num("terminal_count")
    return PhotoStats(
        hair_count=n,
        area_cm2=area,
        width_sum_um=w1,
        width_sq_sum_um2=w2,
        vellus_count=None if vellus is None else int(vellus),
        terminal_count=None if terminal is None else int(terminal),
        source=s.get("source"),
    )


@dataclass(frozen=True)
class Estimate:
    """A pooled session value with its 95 % CI and the two SE terms it combines."""

    value: float | None
    low: float | None = None
    high: float | None = None
    se: float | None = None
    se_counting: float | None = None
    se_bootstrap: float | None = None
    log_se: float | None = None  # SE of log(value): relative error, for % changes

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "se": self.se,
            "se_counting": self.se_counting,
            "se_bootstrap": self.se_bootstrap,
        }


@dataclass(frozen=True)
class SessionEstimate:
    """Estimates of every metric in :data:`METRICS` for one session (or one side)."""

    n_photos: int
    hair_count: int
    area_cm2: float | None
    estimates: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_photos": self.n_photos,
            "hair_count": self.hair_count,
            "area_cm2": self.area_cm2,
            **{k: v.to_dict() for k, v in self.estimates.items()},
        }


def _stack(stats: Sequence[PhotoStats]) -> dict[str, np.ndarray | None]:
    def col(name: str) -> np.ndarray | None:
        values = [getattr(s, name) for s in stats]
        return None if any(v is None for v in values) else np.asarray(values, float)

    return {
        "n": np.asarray([s.hair_count for s in stats], float),
        "a": col("area_cm2"),
        "w1": col("width_sum_um"),
        "w2": col("width_sq_sum_um2"),
        "t": col("terminal_count"),
        "v": col("vellus_count"),
    }


def _pooled(metric: str, sums: dict[str, np.ndarray]) -> np.ndarray:
    """Pooled estimator from column sums (arrays: one value per bootstrap replicate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "density_per_cm2":
            return sums["n"] / sums["a"]
        if metric == "mean_width_um":
            return sums["w1"] / sums["n"]
        if metric == "terminal_vellus_ratio":
            return np.log(sums["t"] / sums["v"])  # log scale: the CI is built there
        return sums["w1"] * 1e-3 / sums["a"]


def _needs(metric: str) -> tuple[str, ...]:
    return {
        "density_per_cm2": ("n", "a"),
        "mean_width_um": ("n", "w1", "w2"),
        "terminal_vellus_ratio": ("t", "v"),
        "cumulative_thickness_mm_per_cm2": ("a", "w1", "w2"),
    }[metric]


def _counting_var(metric: str, tot: dict[str, float]) -> float:
    """Poisson (counting) variance of the pooled estimator; log scale for the ratio."""
    n = tot.get("n", 0.0)
    if metric == "density_per_cm2":
        return n / tot["a"] ** 2
    if metric == "mean_width_um":
        if n < 2:
            return math.nan
        var_w = max(0.0, (tot["w2"] - tot["w1"] ** 2 / n) / (n - 1))
        return var_w / n
    if metric == "terminal_vellus_ratio":
        return 1.0 / tot["t"] + 1.0 / tot["v"]
    return tot["w2"] * 1e-6 / tot["a"] ** 2  # compound Poisson: var(Σw) = Σw²


def _bootstrap_sd(metric: str, cols: dict[str, np.ndarray], idx: np.ndarray) -> float:
    reps = _pooled(metric, {k: cols[k][idx].sum(axis=1) for k in _needs(metric) + ("n",)})
    reps = reps[np.isfinite(reps)]
    return float(np.std(reps, ddof=1)) if reps.size > 1 else math.nan


def _estimate(metric: str, cols: dict[str, np.ndarray | None], idx: np.ndarray | None) -> Estimate:
    if any(cols[k] is None for k in _needs(metric)):
        return Estimate(None)
    tot = {k: float(v.sum()) for k, v in cols.items() if v is not None}
    if (
        ("a" in _needs(metric) and tot["a"] <= 0)
        or (metric == "mean_width_um" and tot["n"] <= 0)
        or (metric == "terminal_vellus_ratio" and tot["v"] <= 0)
    ):
        return Estimate(None)
    if metric == "terminal_vellus_ratio" and tot["t"] <= 0:
        return Estimate(0.0)  # no terminal hair: ratio 0, no log-scale CI
    centre = float(_pooled(metric, {k: np.asarray(v) for k, v in tot.items()}))
    var_c = _counting_var(metric, tot)
    sd_b = _bootstrap_sd(metric, cols, idx) if idx is not None else 0.0
    if math.isnan(var_c) and (idx is None or math.isnan(sd_b)):
        return Estimate(float(np.exp(centre)) if metric == "terminal_vellus_ratio" else centre)
    var = (0.0 if math.isnan(var_c) else var_c) + (0.0 if math.isnan(sd_b) else sd_b**2)
    se = math.sqrt(var)
    if metric == "terminal_vellus_ratio":  # centre, se are on the log scale
        value = math.exp(centre)
        return Estimate(
            value=value,
            low=math.exp(centre - Z95 * se),
            high=math.exp(centre + Z95 * se),
            se=value * se,
            se_counting=value * math.sqrt(var_c),
            se_bootstrap=None if idx is None else value * sd_b,
            log_se=se,
        )
    return Estimate(
        value=centre,
        low=max(0.0, centre - Z95 * se),  # every metric here is non-negative
        high=centre + Z95 * se,
        se=se,
        se_counting=None if math.isnan(var_c) else math.sqrt(var_c),
        se_bootstrap=None if idx is None else sd_b,
        log_se=se / centre if centre > 0 else None,
    )


def estimate_session(
    stats: Sequence[PhotoStats], *, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP
) -> SessionEstimate:
    """Pooled estimate and 95 % CI of every metric over the photos of one session.

    Parameters
    ----------
    stats : sequence of PhotoStats
        One entry per photo (or per registered overlap field).
    seed : int
        Seed of the bootstrap over photos (used with >= 3 photos); fixed so that the
        same photos always give the same CI.
    n_bootstrap : int
        Bootstrap replicates.
    """
    if not stats:
        raise InputError("a session needs at least one photo")
    cols = _stack(stats)
    idx = None
    if len(stats) >= MIN_PHOTOS_BOOTSTRAP:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(stats), size=(n_bootstrap, len(stats)))
    area = None if cols["a"] is None else float(cols["a"].sum())
    return SessionEstimate(
        n_photos=len(stats),
        hair_count=int(cols["n"].sum()),
        area_cm2=area,
        estimates={m: _estimate(m, cols, idx) for m in METRICS},
    )


@dataclass(frozen=True)
class Change:
    """Change of one metric between two sessions, with 95 % CIs."""

    before: float | None
    after: float | None
    diff: float | None
    diff_low: float | None
    diff_high: float | None
    pct: float | None
    pct_low: float | None
    pct_high: float | None
    significant: bool | None
    mdc95_pct: float | None
    exceeds_mdc: bool | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def change(before: Estimate, after: Estimate, mdc95_pct: float | None = None) -> Change:
    """Difference and % change ``after`` vs ``before`` with CIs (independent sessions)."""
    b, a = before.value, after.value
    if b is None or a is None or before.se is None or after.se is None:
        return Change(b, a, None, None, None, None, None, None, None, mdc95_pct, None)
    diff = a - b
    se = math.hypot(before.se, after.se)
    lo, hi = diff - Z95 * se, diff + Z95 * se
    pct = pct_lo = pct_hi = None
    if b > 0 and a > 0 and before.log_se is not None and after.log_se is not None:
        log_ratio = math.log(a / b)
        se_log = math.hypot(before.log_se, after.log_se)
        pct = 100.0 * (a / b - 1.0)
        pct_lo = 100.0 * math.expm1(log_ratio - Z95 * se_log)
        pct_hi = 100.0 * math.expm1(log_ratio + Z95 * se_log)
    elif b > 0:
        pct = 100.0 * (a / b - 1.0)
    exceeds = None if mdc95_pct is None or pct is None else abs(pct) > mdc95_pct
    return Change(
        b, a, diff, lo, hi, pct, pct_lo, pct_hi, bool(lo > 0 or hi < 0), mdc95_pct, exceeds
    )


def mdc95(pair_differences: Sequence[float] | np.ndarray) -> float:
    """Minimal detectable change (95 %) from zero-change pair differences.

    ``MDC95 = 1.96 * sqrt(mean(d**2))`` (= 1.96·√2·SEM with SEM = RMS(d)/√2). Give the
    differences in the unit the MDC is wanted in (e.g. % of the first measurement).
    """
    d = np.asarray(pair_differences, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        raise InputError("MDC95 needs at least two zero-change pairs")
    return float(Z95 * math.sqrt(float(np.mean(d**2))))


# --------------------------------------------------------------------------- registration


@dataclass(frozen=True, eq=False)
class Registration:
    """Similarity transform mapping before-photo pixels (x, y) into the after photo.

    Attributes
    ----------
    ok : bool
        Whether the registration is trusted; else compare whole fields (flagged).
    matrix : (2, 3) float array or None
        ``[x_after, y_after] = matrix @ [x_before, y_before, 1]``.
    quality : float
        0–1: normalised cross-correlation of the two (equalised, high-passed) photos over
        the overlap after warping, times the square root of the RANSAC inlier ratio.
    overlap_fraction : float
        Fraction of the before photo's field that the after photo covers too.
    follicle_match_fraction : float or None
        Fraction of before exit points landing on an after exit point (when given).
    """

    ok: bool
    matrix: np.ndarray | None = None
    method: str = "none"
    n_matches: int = 0
    n_inliers: int = 0
    quality: float = 0.0
    overlap_fraction: float = 0.0
    follicle_match_fraction: float | None = None
    reason: str = ""

    @property
    def rotation_deg(self) -> float | None:
        """Rotation in the image frame (x right, y down): positive turns clockwise on screen."""
        if self.matrix is None:
            return None
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    @property
    def scale(self) -> float | None:
        if self.matrix is None:
            return None
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "method": self.method,
            "matrix": None if self.matrix is None else np.round(self.matrix, 6).tolist(),
            "rotation_deg": self.rotation_deg,
            "scale": self.scale,
            "n_matches": self.n_matches,
            "n_inliers": self.n_inliers,
            "quality": self.quality,
            "overlap_fraction": self.overlap_fraction,
            "follicle_match_fraction": self.follicle_match_fraction,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Registration:
        m = d.get("matrix")
        return cls(
            ok=bool(d["ok"]),
            matrix=None if m is None else np.asarray(m, float),
            method=d.get("method", "none"),
            n_matches=int(d.get("n_matches", 0)),
            n_inliers=int(d.get("n_inliers", 0)),
            quality=float(d.get("quality", 0.0)),
            overlap_fraction=float(d.get("overlap_fraction", 0.0)),
            follicle_match_fraction=d.get("follicle_match_fraction"),
            reason=d.get("reason", ""),
        )


MIN_INLIERS = 12
MIN_QUALITY = 0.15
MIN_OVERLAP = 0.2
SCALE_RANGE = (0.8, 1.25)


def _gray_u8(image: np.ndarray) -> np.ndarray:
    """Contrast-equalised 8-bit grey: lighting changes between visits must not matter."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    return clahe.apply(img)


#: Features are found on photos shrunk to at most this many pixels on the long side: a
#: 20 MP photo would take seconds and gain nothing (the least-squares fit is sub-pixel).
FEATURE_MAX_SIDE = 800


def _features(gray: np.ndarray, field: np.ndarray | None):
    """Keypoint coordinates (in full-resolution pixels) and descriptors."""
    mask = None
    if field is not None:
        # Keep features off the field's edge (vignette, header bars are not skin).
        mask = cv2.erode(field.astype(np.uint8) * 255, np.ones((9, 9), np.uint8))
    shrink = min(1.0, FEATURE_MAX_SIDE / max(gray.shape))
    if shrink < 1.0:
        size = (round(gray.shape[1] * shrink), round(gray.shape[0] * shrink))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    kp, desc = _detector().detectAndCompute(gray, mask)
    # Pixel centres: (x + 0.5) / shrink - 0.5 maps a shrunk pixel back to the original.
    xy = np.float32([k.pt for k in kp]).reshape(-1, 2)
    return (xy + 0.5) / shrink - 0.5, desc


def _detector():
    # SIFT is in OpenCV's main module since 4.4 (AKAZE left it in 5.0); ORB is the fallback.
    if hasattr(cv2, "SIFT_create"):
        return cv2.SIFT_create(nfeatures=2000, contrastThreshold=0.02)
    return cv2.ORB_create(nfeatures=2000)


def _high_pass(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), 4.0)


def _ncc(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    if where.sum() < 100:
        return 0.0
    x, y = a[where], b[where]
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def _ones(shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape[:2], bool)


def overlap_fields(
    matrix: np.ndarray,
    before_field: np.ndarray,
    after_field: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping field, as a mask in the before photo and in the after photo."""
    hb, wb = before_field.shape
    ha, wa = after_field.shape
    warped = cv2.warpAffine(
        before_field.astype(np.uint8), matrix, (wa, ha), flags=cv2.INTER_NEAREST, borderValue=0
    )
    over_after = (warped > 0) & after_field
    back = cv2.warpAffine(
        over_after.astype(np.uint8),
        matrix,
        (wb, hb),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderValue=0,
    )
    return (back > 0) & before_field, over_after


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:, :2].T + matrix[:, 2]


def _follicle_fraction(
    matrix: np.ndarray, before_xy: np.ndarray, after_xy: np.ndarray, tol_px: float
) -> float | None:
    """Fraction of before exit points landing within ``tol_px`` of an after exit point."""
    from scipy.spatial import cKDTree

    before_xy = before_xy[np.isfinite(before_xy).all(axis=1)]
    after_xy = after_xy[np.isfinite(after_xy).all(axis=1)]
    if len(before_xy) < 5 or len(after_xy) < 5:
        return None
    dist, _ = cKDTree(after_xy).query(_apply(matrix, before_xy))
    return float(np.mean(dist <= tol_px))


def register_photos(
    before: np.ndarray,
    after: np.ndarray,
    *,
    before_field: np.ndarray | None = None,
    after_field: np.ndarray | None = None,
    before_exits: np.ndarray | None = None,
    after_exits: np.ndarray | None = None,
    follicle_tol_px: float = 4.0,
) -> Registration:
    """Register two photos of one site with a similarity transform (before -> after).

    SIFT features (ORB where SIFT is missing) on contrast-equalised grey images, Lowe
    ratio test, RANSAC (``cv2.estimateAffinePartial2D``), then an LMedS +
    Levenberg–Marquardt re-fit on the inliers. When exit points
    are given, the fraction of follicles that land on a follicle of the other photo is
    reported (the follicle map of a site is stable across visits).

    Parameters
    ----------
    before, after : array
        RGB or grey photos (uint8, or float in [0, 1]).
    before_field, after_field : (H, W) bool, optional
        Analysable fields; features outside them (bars, vignette) are ignored.
    before_exits, after_exits : (n, 2) float, optional
        Follicle exit points (x, y), NaN rows allowed.

    Returns
    -------
    Registration
        ``ok=False`` with a ``reason`` when it fails (too few matches, implausible scale,
        small overlap, low quality).
    """
    gb, ga = _gray_u8(before), _gray_u8(after)
    fb = _ones(gb.shape) if before_field is None else np.asarray(before_field, bool)
    fa = _ones(ga.shape) if after_field is None else np.asarray(after_field, bool)
    kb, db = _features(gb, fb)
    ka, da = _features(ga, fa)
    if db is None or da is None or len(kb) < MIN_INLIERS or len(ka) < MIN_INLIERS:
        return Registration(False, reason="too few image features")
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if db.dtype == np.uint8 else cv2.NORM_L2)
    pairs = matcher.knnMatch(db, da, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < MIN_INLIERS:
        return Registration(False, n_matches=len(good), reason="too few feature matches")
    src = kb[[m.queryIdx for m in good]]
    dst = ka[[m.trainIdx for m in good]]
    matrix, inliers = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=2.0,
        maxIters=5000,
        confidence=0.999,
        refineIters=20,
    )
    n_in = 0 if inliers is None else int(inliers.sum())
    base = {"n_matches": len(good), "n_inliers": n_in, "method": "features"}
    if matrix is None or n_in < MIN_INLIERS:
        return Registration(False, **base, reason="no consistent transform (RANSAC)")
    # Re-fit on the inliers only (LMedS + Levenberg-Marquardt), for sub-pixel accuracy.
    sel = inliers.ravel().astype(bool)
    refit, _ = cv2.estimateAffinePartial2D(src[sel], dst[sel], method=cv2.LMEDS)
    if refit is not None:
        matrix = refit
    reg = Registration(True, matrix.astype(float), **base)
    scale = reg.scale or 0.0
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return Registration(False, matrix, **base, reason=f"implausible scale {scale:.2f}")
    over_b, over_a = overlap_fields(reg.matrix, fb, fa)
    overlap = float(over_b.sum()) / max(1.0, float(fb.sum()))
    warped = cv2.warpAffine(_high_pass(gb), reg.matrix, (ga.shape[1], ga.shape[0]))
    inner = cv2.erode(over_a.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ncc = max(0.0, _ncc(warped, _high_pass(ga), inner))
    quality = float(ncc * math.sqrt(n_in / len(good)))
    follicles = None
    if before_exits is not None and after_exits is not None:
        follicles = _follicle_fraction(reg.matrix, before_exits, after_exits, follicle_tol_px)
        base["method"] = "features+follicles"
    reason = ""
    if overlap < MIN_OVERLAP:
        reason = f"overlap {overlap:.0%} is below {MIN_OVERLAP:.0%}"
    elif quality < MIN_QUALITY:
        reason = f"registration quality {quality:.2f} is below {MIN_QUALITY}"
    return Registration(
        ok=not reason,
        matrix=reg.matrix,
        **base,
        quality=quality,
        overlap_fraction=overlap,
        follicle_match_fraction=follicles,
        reason=reason,
    )


# --------------------------------------------------------------------------- per-hair fate


@dataclass(frozen=True)
class HairFate:
    """What happened to each hair between two registered photos (counts summed over pairs)."""

    persisted: int = 0
    new: int = 0
    lost: int = 0
    transitions: dict[str, int] = field(default_factory=dict)  # 'vellus->terminal': n

    def to_dict(self) -> dict[str, Any]:
        return {
            "persisted": self.persisted,
            "new": self.new,
            "lost": self.lost,
            "transitions": dict(sorted(self.transitions.items())),
        }

    def __add__(self, other: HairFate) -> HairFate:
        tr = dict(self.transitions)
        for k, v in other.transitions.items():
            tr[k] = tr.get(k, 0) + v
        return HairFate(
            self.persisted + other.persisted, self.new + other.new, self.lost + other.lost, tr
        )


def _hair_distance(before, after, matrix: np.ndarray) -> np.ndarray:
    """(n_before, n_after) distance between hairs, before mapped into the after photo.

    The smaller of the exit-point distance (stable when a hair grew or was clipped) and
    the mean distance of the two ends, ends paired either way (stable when the exit end
    was decided differently in the two photos); the end distance also breaks the tie
    between hairs of one follicular unit, which share an exit point.
    """
    ba, bb = _apply(matrix, before.end_a_xy), _apply(matrix, before.end_b_xy)
    aa, ab = after.end_a_xy, after.end_b_xy

    def d(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.linalg.norm(p[:, None, :] - q[None, :, :], axis=2)

    seg = np.minimum(d(ba, aa) + d(bb, ab), d(ba, ab) + d(bb, aa)) / 2.0
    exits = d(_apply(matrix, before.exit_xy), after.exit_xy)
    exits = np.where(np.isfinite(exits), exits, np.inf)
    return np.minimum(exits, seg) + 0.1 * seg


def hair_fate(
    before: Analysis,
    after: Analysis,
    matrix: np.ndarray,
    before_overlap: np.ndarray,
    after_overlap: np.ndarray,
    *,
    tol_px: float,
) -> HairFate:
    """Match follicles (exit points) one-to-one between two registered photos.

    Hairs counted (by the exit rule) in the overlap of either photo take part; a counted
    hair matched to any hair of the other photo persisted (its partner may sit on the
    overlap's edge), otherwise it was lost (before) or is new (after). Matching is a
    one-to-one (Hungarian) assignment on the distance of :func:`_hair_distance`.
    """
    from scipy.optimize import linear_sum_assignment

    counted_b = summarize(before.hairs, before_overlap, before.calibration).counted
    counted_a = summarize(after.hairs, after_overlap, after.calibration).counted
    pairs: list[tuple[int, int]] = []
    if len(before.hairs) and len(after.hairs):
        cost = _hair_distance(before.hairs, after.hairs, matrix)
        big = 1e6
        cost = np.where(cost <= tol_px, cost, big)
        rows, cols = linear_sum_assignment(cost)
        keep = cost[rows, cols] < big
        pairs = [(int(r), int(c)) for r, c in zip(rows[keep], cols[keep], strict=True)]
    matched_b = {p[0] for p in pairs}
    matched_a = {p[1] for p in pairs}
    cls_b, cls_a = before.hair_classes(), after.hair_classes()
    persisted = 0
    transitions: dict[str, int] = {}
    for i, j in pairs:
        if not (counted_b[i] or counted_a[j]):
            continue
        persisted += 1
        if cls_b is not None and cls_a is not None and cls_b[i] != cls_a[j]:
            key = f"{cls_b[i]}->{cls_a[j]}"
            transitions[key] = transitions.get(key, 0) + 1
    lost = sum(1 for i in np.flatnonzero(counted_b) if i not in matched_b)
    new = sum(1 for j in np.flatnonzero(counted_a) if j not in matched_a)
    return HairFate(persisted, new, lost, transitions)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True, eq=False)
class MeasuredPhoto:
    """A photo with its analysis (``image`` is needed only for registration)."""

    analysis: Analysis
    image: np.ndarray | None = field(default=None, repr=False)
    key: str = ""


@dataclass(frozen=True, eq=False)
class Comparison:
    """Before vs after, measured on the same (overlapping) field when registered.

    Attributes
    ----------
    before, after : SessionEstimate
        Pooled estimates with CIs, on the overlap fields (or whole fields if fallback).
    changes : dict metric -> Change
    registered : bool
        Every pair used was registered; ``False`` means whole-field fallback (flagged).
    registrations : tuple of (before key, after key, Registration)
    fate : HairFate or None
        Per-hair fate, when registered.
    notes : tuple of str
        Everything a reader should know (fallback, photos left out, ...).
    """

    before: SessionEstimate
    after: SessionEstimate
    changes: dict[str, Change]
    registered: bool
    registrations: tuple[tuple[str, str, Registration], ...]
    fate: HairFate | None
    notes: tuple[str, ...] = ()

    @property
    def fallback_whole_field(self) -> bool:
        return not self.registered

    @property
    def overlap_fraction(self) -> float | None:
        used = [r.overlap_fraction for _, _, r in self.registrations if r.ok]
        return float(np.mean(used)) if used and self.registered else None

    @property
    def registration_quality(self) -> float | None:
        used = [r.quality for _, _, r in self.registrations if r.ok]
        return float(np.mean(used)) if used and self.registered else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "fallback_whole_field": self.fallback_whole_field,
            "overlap_fraction": self.overlap_fraction,
            "registration_quality": self.registration_quality,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "changes": {k: v.to_dict() for k, v in self.changes.items()},
            "fate": None if self.fate is None else self.fate.to_dict(),
            "registrations": [
                {"before": b, "after": a, **r.to_dict()} for b, a, r in self.registrations
            ],
            "notes": list(self.notes),
        }


Registrar = Callable[[MeasuredPhoto, MeasuredPhoto], Registration]


def _default_registrar(b: MeasuredPhoto, a: MeasuredPhoto) -> Registration:
    if b.image is None or a.image is None:
        return Registration(False, reason="photo not available for registration")
    return register_photos(
        b.image,
        a.image,
        before_field=b.analysis.field_mask,
        after_field=a.analysis.field_mask,
        before_exits=b.analysis.hairs.exit_xy,
        after_exits=a.analysis.hairs.exit_xy,
    )


#: A registered magnification ratio further than this from 1 is noted in the comparison.
SCALE_NOTE = 0.005


def _reconciled_scales(
    before: Analysis, after: Analysis, reg: Registration
) -> tuple[Calibration, Calibration, str]:
    """Scales of a registered pair, corrected for the magnification ratio between them.

    Only when both photos carry the same scale: a registered scale ``s`` (after pixels per
    before pixel) means the two magnifications differ, and since the overlap is one piece
    of skin the scales are split symmetrically (before ``× √s``, after ``÷ √s``). Photos
    with their own scales (e.g. each read from its scale bar) keep them.
    """
    cb, ca = before.calibration, after.calibration
    s = reg.scale
    if cb.um_per_px is None or ca.um_per_px is None or s is None or not s > 0:
        return cb, ca, ""
    if not math.isclose(cb.um_per_px, ca.um_per_px, rel_tol=1e-9):
        return cb, ca, ""
    root = math.sqrt(s)
    cal_b = replace(cb, um_per_px=cb.um_per_px * root)
    cal_a = replace(ca, um_per_px=ca.um_per_px / root)
    note = ""
    if abs(s - 1.0) > SCALE_NOTE:
        note = (
            f"magnification differs by {100 * (s - 1):+.1f} % between the photos; "
            "scales corrected so the overlap has one area"
        )
    return cal_b, cal_a, note


def _match_tol_px(analysis: Analysis, match_tol_um: float, fallback_px: float = 6.0) -> float:
    um = analysis.calibration.um_per_px
    return fallback_px if um is None else max(3.0, match_tol_um / um)


def _pair_up(
    before: Sequence[MeasuredPhoto], after: Sequence[MeasuredPhoto], registrar: Registrar
) -> tuple[list[tuple[int, int, Registration]], list[tuple[str, str, Registration]]]:
    """Register every before/after pair; keep the best one-to-one pairs (by quality)."""
    tried = []
    for i, b in enumerate(before):
        for j, a in enumerate(after):
            tried.append((i, j, registrar(b, a)))
    chosen: list[tuple[int, int, Registration]] = []
    used_b: set[int] = set()
    used_a: set[int] = set()
    for i, j, reg in sorted(tried, key=lambda t: (-t[2].quality, t[0], t[1])):
        if reg.ok and i not in used_b and j not in used_a:
            chosen.append((i, j, reg))
            used_b.add(i)
            used_a.add(j)
    log = [(before[i].key, after[j].key, r) for i, j, r in tried]
    return sorted(chosen), log


def compare_measured(
    before: Sequence[MeasuredPhoto],
    after: Sequence[MeasuredPhoto],
    *,
    registrar: Registrar | None = None,
    mdc: dict[str, float | None] | None = None,
    match_tol_um: float = 80.0,
    seed: int = 0,
) -> Comparison:
    """Compare two sessions of analysed photos (see :func:`compare`).

    Every before/after pair is registered; the best one-to-one registered pairs are
    measured on their overlap. Photos left unpaired are left out (noted). With no
    registered pair, whole fields are compared and the result is flagged.
    """
    if not before or not after:
        raise InputError("compare needs at least one photo before and one after")
    registrar = registrar or _default_registrar
    mdc = MDC95_PCT if mdc is None else mdc
    chosen, log = _pair_up(before, after, registrar)
    notes: list[str] = []
    fate: HairFate | None = None
    if chosen:
        stats_b, stats_a = [], []
        fate = HairFate()
        for i, j, reg in chosen:
            b, a = before[i].analysis, after[j].analysis
            over_b, over_a = overlap_fields(reg.matrix, b.field_mask, a.field_mask)
            cal_b, cal_a, note = _reconciled_scales(b, a, reg)
            if note:
                notes.append(f"{before[i].key} / {after[j].key}: {note}")
            kw_b = {"count_rule": b.count_rule, "cutoffs": b.cutoffs, "source": b.source}
            kw_a = {"count_rule": a.count_rule, "cutoffs": a.cutoffs, "source": a.source}
            stats_b.append(photo_stats(summarize(b.hairs, over_b, cal_b, **kw_b)))
            stats_a.append(photo_stats(summarize(a.hairs, over_a, cal_a, **kw_a)))
            tol = _match_tol_px(a, match_tol_um)
            fate = fate + hair_fate(b, a, reg.matrix, over_b, over_a, tol_px=tol)
        left_b = len(before) - len(chosen)
        left_a = len(after) - len(chosen)
        if left_b or left_a:
            notes.append(
                f"{left_b} before and {left_a} after photo(s) had no registered partner and "
                "were left out so that both sides cover the same skin"
            )
        registered = True
    else:
        reasons = sorted({r.reason for _, _, r in log if r.reason})
        notes.append(
            "registration failed ("
            + "; ".join(reasons)
            + "): whole fields compared, which may not be the same skin"
        )
        stats_b = [photo_stats(m.analysis) for m in before]
        stats_a = [photo_stats(m.analysis) for m in after]
        registered = False
    est_b = estimate_session(stats_b, seed=seed)
    est_a = estimate_session(stats_a, seed=seed)
    changes = {m: change(est_b.estimates[m], est_a.estimates[m], mdc.get(m)) for m in METRICS}
    return Comparison(
        before=est_b,
        after=est_a,
        changes=changes,
        registered=registered,
        registrations=tuple(log),
        fate=fate,
        notes=tuple(notes),
    )


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, list | tuple):
        if not x:
            raise InputError("an empty list of photos was given")
        return list(x)
    return [x]


def compare(
    before: Any,
    after: Any,
    *,
    calibration: Any = None,
    segmenter: str = "auto",
    count_rule: str = "exit",
) -> Comparison:
    """Compare two photos (or two sessions, as lists of photos) of one scalp site.

    Parameters
    ----------
    before, after : path, bytes, array, or list of them
        Photos as :func:`trichoscan.analyze` accepts; a list is a session.
    calibration : float, str or Calibration, optional
        Scale for both sides (µm per pixel, device profile or Calibration). Without it
        each photo's burned-in scale bar is used if found, else µm/cm² changes are ``None``.
    segmenter : {'auto', 'classical', 'unet'}
    count_rule : {'exit', 'inside', 'visible'}

    Returns
    -------
    Comparison
        Change in density (per cm² and %), mean width, terminal/vellus ratio and
        cumulative thickness with 95 % CIs, registration quality, overlap fraction and the
        per-hair fate; ``registered=False`` flags a whole-field fallback.
    """
    from .io import read_image
    from .pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline(PipelineConfig(segmenter=segmenter, count_rule=count_rule))

    def measure(items: list[Any], side: str) -> list[MeasuredPhoto]:
        out = []
        for k, item in enumerate(items):
            rgb = read_image(item)
            key = str(item) if isinstance(item, str | Path) else f"{side}[{k}]"
            out.append(MeasuredPhoto(pipeline.analyze(rgb, calibration=calibration), rgb, key))
        return out

    return compare_measured(measure(_as_list(before), "before"), measure(_as_list(after), "after"))


# --------------------------------------------------------------------------- phototrichogram

#: Growth (µm) above which a matched hair counts as growing (anagen); see the module text.
GROWTH_THRESHOLD_UM = 200.0
#: Largest angle (degrees) between a hair's shaft on the two photos for a match.
TRICHOGRAM_MAX_ANGLE_DEG = 20.0


@dataclass(frozen=True)
class TrichogramHair:
    """One hair matched between the two photos of a phototrichogram.

    Indices are rows of the two analyses' hair tables (``after_index`` is ``None`` when the
    shaft was followed on the after mask but no hair instance matched it, e.g. one cut in
    two at a crossing); ``root_xy`` is the root (follicle) end on the before photo (px).
    Lengths and growth are in µm (``None`` without a scale, then ``growth_px`` alone is
    set); ``measured`` is ``False`` for bundles and hairs cut by a field edge on either
    photo (left out of the statistics).
    """

    before_index: int
    after_index: int | None
    root_xy: tuple[float, float]
    before_length_um: float | None
    after_length_um: float | None
    growth_um: float | None
    growth_px: float
    anagen: bool
    measured: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class Phototrichogram:
    """Per-hair growth between two photos of one clipped site, and its summary with CIs.

    Attributes
    ----------
    registration : Registration
        The before -> after registration; ``registered`` is ``False`` when it failed
        (then nothing is matched and every statistic is ``None``).
    days : float
        Days between the photos.
    threshold_um : float
        Growth above which a hair is anagen.
    hairs : tuple of TrichogramHair
        Every matched hair counted in the before overlap (``measured`` or not).
    n_counted : int
        Hairs counted (exit rule) in the before photo's overlap field.
    n_measured, n_anagen, n_telogen : int
        Hairs measured, and of them grown / not grown.
    anagen_fraction, anagen_telogen_ratio, growth_rate_mm_per_day, mean_growth_um : Estimate
        Value with a 95 % bootstrap CI (``value`` ``None`` when undefined: no measured
        hair, no telogen hair for the ratio, no anagen hair for the growth).
    notes : tuple of str
    """

    registration: Registration
    days: float
    threshold_um: float
    hairs: tuple[TrichogramHair, ...]
    n_counted: int
    n_measured: int
    n_anagen: int
    n_telogen: int
    anagen_fraction: Estimate
    anagen_telogen_ratio: Estimate
    growth_rate_mm_per_day: Estimate
    mean_growth_um: Estimate
    notes: tuple[str, ...] = ()

    @property
    def registered(self) -> bool:
        return self.registration.ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary, per-hair rows included."""
        return {
            "registered": self.registered,
            "registration": self.registration.to_dict(),
            "days": self.days,
            "threshold_um": self.threshold_um,
            "n_counted": self.n_counted,
            "n_matched": len(self.hairs),
            "n_measured": self.n_measured,
            "n_anagen": self.n_anagen,
            "n_telogen": self.n_telogen,
            "anagen_fraction": self.anagen_fraction.to_dict(),
            "anagen_telogen_ratio": self.anagen_telogen_ratio.to_dict(),
            "growth_rate_mm_per_day": self.growth_rate_mm_per_day.to_dict(),
            "mean_growth_um": self.mean_growth_um.to_dict(),
            "hairs": [h.to_dict() for h in self.hairs],
            "notes": list(self.notes),
        }


def _root_pairs(before, after, matrix: np.ndarray, tol_px: float) -> tuple[np.ndarray, ...]:
    """Cost of matching each before hair to each after hair by a shared root end.

    For each of the four (before root end, after root end) choices: the distance between
    the mapped before root and the after root, plus ``tol_px`` per 20° between the two
    shafts' directions (root -> other end), plus a quarter ``tol_px`` for each root that
    contradicts a decided exit end. Returns the best cost per pair (``inf`` outside the
    gates) and which before end (0: a, 1: b) is the root.
    """
    ends_b = np.stack([_apply(matrix, before.end_a_xy), _apply(matrix, before.end_b_xy)])
    ends_a = np.stack([after.end_a_xy, after.end_b_xy])
    best = np.full((len(before), len(after)), np.inf)
    root_b = np.zeros(best.shape, np.int8)
    for rb in (0, 1):
        vb = ends_b[1 - rb] - ends_b[rb]
        vb = vb / np.maximum(np.linalg.norm(vb, axis=1, keepdims=True), 1e-9)
        exit_b = np.where(before.exit_end == "?", rb, (before.exit_end == "b").astype(int))
        for ra in (0, 1):
            va = ends_a[1 - ra] - ends_a[ra]
            va = va / np.maximum(np.linalg.norm(va, axis=1, keepdims=True), 1e-9)
            exit_a = np.where(after.exit_end == "?", ra, (after.exit_end == "b").astype(int))
            dist = np.linalg.norm(ends_b[rb][:, None, :] - ends_a[ra][None, :, :], axis=2)
            angle = np.degrees(np.arccos(np.clip(vb @ va.T, -1.0, 1.0)))
            cost = dist + tol_px * angle / TRICHOGRAM_MAX_ANGLE_DEG
            cost += 0.25 * tol_px * ((exit_b != rb)[:, None] + (exit_a != ra)[None, :])
            gate = (dist <= tol_px) & (angle <= TRICHOGRAM_MAX_ANGLE_DEG)
            cost = np.where(gate, cost, np.inf)
            better = cost < best
            best = np.where(better, cost, best)
            root_b = np.where(better, rb, root_b)
    return best, root_b


def _field_distance(field_mask: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel to the field's edge (the image border counts as edge)."""
    padded = np.pad(np.asarray(field_mask, np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _trace_shaft(
    mask: np.ndarray,
    field_dist: np.ndarray,
    root: np.ndarray,
    direction: np.ndarray,
    width_px: float,
    max_len_px: float | None,
) -> tuple[float, bool, bool]:
    """Follow one shaft on a hair mask from its root; return its length.

    Steps of 1 px along the shaft, re-centred on the mask across the shaft while the
    cross-section is about one hair wide (straight on through crossings and bundles, where
    it is wider), across gaps up to ``2 + width/2`` px (broken masks). Lengths come from
    the mask, not from the instance table, so a crossing that cuts a hair into two
    instances does not shorten it.

    Returns
    -------
    length_px : float
        From the first to the last mask pixel met.
    clean : bool
        The shaft ended inside the field (not at its edge, nor at ``max_len_px``).
    found : bool
        The mask holds a shaft at the root at all.
    """
    h, w = mask.shape
    d = np.asarray(direction, float)
    norm = math.hypot(d[0], d[1])
    if norm == 0 or not np.isfinite(norm):
        return 0.0, False, False
    dx, dy = d[0] / norm, d[1] / norm
    half = max(width_px / 2.0, 0.5)
    reach = int(math.ceil(width_px + 2))
    core = max(1, int(round(0.25 * width_px)))
    gap = 2.0 + 0.5 * width_px
    limit = (max_len_px if max_len_px is not None else 1e9) + half + 2
    # Start just behind the root, so the first mask pixel is the shaft's start.
    x, y = float(root[0]) - dx * (half + 1), float(root[1]) - dy * (half + 1)
    first = last = None
    s = 0.0
    edge = False

    def on(px: float, py: float) -> bool:
        ix, iy = int(round(px)), int(round(py))
        return 0 <= ix < w and 0 <= iy < h and bool(mask[iy, ix])

    while s < limit:
        x, y, s = x + dx, y + dy, s + 1.0
        ix, iy = int(round(x)), int(round(y))
        if not (0 <= ix < w and 0 <= iy < h) or field_dist[iy, ix] < half + 2:
            edge = last is not None or first is None
            break
        nx, ny = -dy, dx
        hits = [o for o in range(-core, core + 1) if on(x + o * nx, y + o * ny)]
        if not hits:
            if first is None and s > 2 * half + 4:
                break  # nothing at the root
            if last is not None and s - last > gap:
                break
            continue
        if first is None:
            first = s
        last = s
        # Cross-section: the run of mask pixels through the hit nearest the centre line.
        c0 = min(hits, key=abs)
        lo = c0
        while lo - 1 >= -reach and on(x + (lo - 1) * nx, y + (lo - 1) * ny):
            lo -= 1
        hi = c0
        while hi + 1 <= reach and on(x + (hi + 1) * nx, y + (hi + 1) * ny):
            hi += 1
        if hi - lo + 1 <= 1.6 * width_px + 2 and lo > -reach and hi < reach:
            shift = 0.5 * (lo + hi)
            x, y = x + 0.5 * shift * nx, y + 0.5 * shift * ny
            dx, dy = dx + 0.05 * shift * nx, dy + 0.05 * shift * ny
            norm = math.hypot(dx, dy)
            dx, dy = dx / norm, dy / norm
    else:
        edge = True  # ran to the length limit
    if first is None or last is None:
        return 0.0, False, False
    return float(last - first + 1.0), not edge, True


def _bootstrap_estimates(
    growth: np.ndarray, anagen: np.ndarray, days: float, seed: int, n_bootstrap: int
) -> dict[str, Estimate]:
    """Anagen fraction, A/T ratio, mean growth and rate with percentile bootstrap CIs."""
    n = growth.size

    def stats(g: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Rows: fraction, ratio, mean growth (µm), rate (mm/day); one column per replicate."""
        n_a = a.sum(axis=-1)
        n_t = a.shape[-1] - n_a
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = n_a / a.shape[-1]
            ratio = np.where(n_t > 0, n_a / np.maximum(n_t, 1), np.nan)
            mean_g = np.where(n_a > 0, (g * a).sum(axis=-1) / np.maximum(n_a, 1), np.nan)
        return np.stack([frac, ratio, mean_g, mean_g / 1000.0 / days])

    names = ("anagen_fraction", "anagen_telogen_ratio", "mean_growth_um", "growth_rate")
    if n == 0:
        return {k: Estimate(None) for k in names}
    centre = stats(growth[None], anagen[None])[:, 0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    reps = stats(growth[idx], anagen[idx])
    out = {}
    for k, name in enumerate(names):
        if not np.isfinite(centre[k]):
            out[name] = Estimate(None)
            continue
        r = reps[k][np.isfinite(reps[k])]
        if n < 2 or r.size < 2:
            out[name] = Estimate(float(centre[k]))
            continue
        lo, hi = np.percentile(r, [2.5, 97.5])
        out[name] = Estimate(float(centre[k]), float(lo), float(hi), float(np.std(r, ddof=1)))
    return out


def phototrichogram_measured(
    before: MeasuredPhoto,
    after: MeasuredPhoto,
    *,
    days: float,
    registration: Registration | None = None,
    growth_threshold_um: float = GROWTH_THRESHOLD_UM,
    match_tol_um: float = 80.0,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> Phototrichogram:
    """Phototrichogram of two analysed photos of one clipped site (see :func:`phototrichogram`).

    Parameters
    ----------
    before, after : MeasuredPhoto
        The two analyses (with their photos, unless ``registration`` is given).
    days : float
        Days between the photos (> 0).
    registration : Registration, optional
        A known before -> after registration; by default the photos are registered.
    growth_threshold_um : float
        Growth above which a hair is anagen (µm; pixels when the scale is unknown).
    match_tol_um : float
        Largest distance between the two root ends of one hair.
    seed, n_bootstrap : int
        Bootstrap seed (fixed: deterministic CIs) and replicates.
    """
    from scipy.optimize import linear_sum_assignment

    try:
        days = float(days)
    except (TypeError, ValueError):
        raise InputError(f"days must be a positive number, got {days!r}") from None
    if not days > 0 or not math.isfinite(days):
        raise InputError(f"days must be a positive number, got {days!r}")
    reg = registration or _default_registrar(before, after)
    b, a = before.analysis, after.analysis
    none = Estimate(None)
    if not reg.ok or reg.matrix is None:
        return Phototrichogram(
            reg, days, growth_threshold_um, (), 0, 0, 0, 0, none, none, none, none,
            (f"registration failed ({reg.reason}): no hair can be followed",),
        )  # fmt: skip
    over_b, _ = overlap_fields(reg.matrix, b.field_mask, a.field_mask)
    cal_b, cal_a, note = _reconciled_scales(b, a, reg)
    notes = [note] if note else []
    counted = summarize(b.hairs, over_b, cal_b, count_rule=b.count_rule).counted
    um_b, um_a = cal_b.um_per_px, cal_a.um_per_px
    rows: list[TrichogramHair] = []
    n_lost = 0
    if len(b.hairs):
        tol = _match_tol_px(a, match_tol_um)
        partner: dict[int, int] = {}
        root_of: dict[int, int] = {}
        if len(a.hairs):
            cost, root_b = _root_pairs(b.hairs, a.hairs, reg.matrix, tol)
            big = 1e6
            r_idx, c_idx = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
            for i, j in zip(r_idx, c_idx, strict=True):
                if cost[i, j] < big:
                    partner[int(i)] = int(j)
                    root_of[int(i)] = int(root_b[i, j])
        scale = reg.scale or 1.0
        dist_b = _field_distance(b.field_mask)
        dist_a = _field_distance(a.field_mask)
        mask_b, mask_a = np.asarray(b.mask, bool), np.asarray(a.mask, bool)
        for i in np.flatnonzero(counted):
            i = int(i)
            root = root_of.get(i)
            if root is None and b.hairs.exit_end[i] in ("a", "b"):
                root = 0 if b.hairs.exit_end[i] == "a" else 1
            if root is None:
                n_lost += 1
                continue
            ends = (b.hairs.end_a_xy[i], b.hairs.end_b_xy[i])
            r_xy, t_xy = np.asarray(ends[root], float), np.asarray(ends[1 - root], float)
            wid = float(b.hairs.edge_width_px[i])
            lb, ok_b, _ = _trace_shaft(mask_b, dist_b, r_xy, t_xy - r_xy, wid, None)
            # The follicle stays put: follow the shaft from the mapped root on the after mask.
            ra = _apply(reg.matrix, r_xy[None])[0]
            da = (t_xy - r_xy) @ reg.matrix[:, :2].T
            la, ok_a, found = _trace_shaft(mask_a, dist_a, ra, da, wid * scale, None)
            if not found:
                n_lost += 1
                continue
            g_px = la / scale - lb
            g_um = None if um_b is None or um_a is None else la * um_a - lb * um_b
            measured = bool(ok_b and ok_a and b.hairs.bundle_size[i] <= 1)
            growth = g_um if g_um is not None else g_px
            rows.append(
                TrichogramHair(
                    i,
                    partner.get(i),
                    (float(r_xy[0]), float(r_xy[1])),
                    None if um_b is None else lb * um_b,
                    None if um_a is None else la * um_a,
                    g_um,
                    g_px,
                    bool(growth > growth_threshold_um),
                    measured,
                )
            )
    rows.sort(key=lambda r: r.before_index)
    used = [r for r in rows if r.measured]
    if um_b is None or um_a is None:
        notes.append("no scale: growth and threshold in pixels, no growth rate in mm/day")
    growth = np.array(
        [r.growth_um if r.growth_um is not None else r.growth_px for r in used], float
    )
    anagen = np.array([r.anagen for r in used], bool)
    est = _bootstrap_estimates(growth, anagen, days, seed, n_bootstrap)
    if um_b is None or um_a is None:
        est["growth_rate"] = none
        est["mean_growth_um"] = none
    n_counted = int(counted.sum())
    if n_lost:
        notes.append(f"{n_lost} counted hair(s) could not be followed onto the after photo")
    if len(rows) > len(used):
        notes.append(
            f"{len(rows) - len(used)} matched hair(s) not measured "
            "(bundle, or cut by the field edge)"
        )
    return Phototrichogram(
        registration=reg,
        days=float(days),
        threshold_um=float(growth_threshold_um),
        hairs=tuple(rows),
        n_counted=n_counted,
        n_measured=len(used),
        n_anagen=int(anagen.sum()),
        n_telogen=int((~anagen).sum()),
        anagen_fraction=est["anagen_fraction"],
        anagen_telogen_ratio=est["anagen_telogen_ratio"],
        growth_rate_mm_per_day=est["growth_rate"],
        mean_growth_um=est["mean_growth_um"],
        notes=tuple(notes),
    )


def phototrichogram(
    before: Any,
    after: Any,
    *,
    days: float,
    calibration: Any = None,
    segmenter: str = "auto",
    growth_threshold_um: float = GROWTH_THRESHOLD_UM,
    match_tol_um: float = 80.0,
) -> Phototrichogram:
    """Phototrichogram: per-hair growth between two photos of one clipped site.

    The photos (taken ``days`` apart, typically 2-3) are analysed, registered
    (:func:`register_photos`) and their hairs matched by the root end that stays put;
    hairs that grew more than ``growth_threshold_um`` are anagen, the others telogen.

    Parameters
    ----------
    before, after : path, bytes or array
        The two photos, as :func:`trichoscan.analyze` accepts.
    days : float
        Days between the photos.
    calibration : float, str or Calibration, optional
        Scale of both photos (µm per pixel, device profile or Calibration).
    segmenter : {'auto', 'classical', 'unet'}
    growth_threshold_um : float
        Growth above which a hair is anagen (default :data:`GROWTH_THRESHOLD_UM`).
    match_tol_um : float
        Largest distance between the two root ends of one hair.

    Returns
    -------
    Phototrichogram
        Matched hairs with growth and anagen flags; anagen fraction, anagen/telogen
        ratio and growth rate (mm/day) with 95 % bootstrap CIs; ``registered=False`` when
        the photos could not be registered.
    """
    from .io import read_image
    from .pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline(PipelineConfig(segmenter=segmenter, count_rule="exit"))
    measured = []
    for side, item in (("before", before), ("after", after)):
        rgb = read_image(item)
        key = str(item) if isinstance(item, str | Path) else side
        measured.append(MeasuredPhoto(pipeline.analyze(rgb, calibration=calibration), rgb, key))
    return phototrichogram_measured(
        measured[0],
        measured[1],
        days=days,
        growth_threshold_um=growth_threshold_um,
        match_tol_um=match_tol_um,
    )
