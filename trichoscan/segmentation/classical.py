"""Classical hair segmentation: multi-scale ridge detection, hysteresis, half-depth edges.

The honest baseline the U-Net must beat. Steps, on a working copy of the photo resampled
so that the thinnest expected hair is still about 2.5 px wide:

1. **Channels.** Dark hairs are found in ``max(R, G)``: a hair shaft is dark in red and
   green, while a vessel keeps its red channel bright and so barely shows there (blue is
   left out: on white-balanced dark skin a black shaft is hardly darker in blue).
   ``polarity="light"`` looks for hairs brighter than the skin in the channels' mean.
   ``polarity="auto"`` adds a *colour* pass: the RGB distance to the local skin colour,
   which shows grey and white hairs whole (a rendered or real grey shaft is darker than
   the skin at its edges and brighter at its centre, so neither brightness polarity
   covers it); its components that dark hairs already explain are dropped.
2. **Background.** A block quantile of each channel (70th percentile for dark hairs, so
   that it stays on the skin even where hairs cover most of a block) estimates the local
   skin level; a pixel's *depth* is how much darker (or lighter) than the skin it is.
3. **Ridge response.** At each scale σ (σ = w/2 peaks on a bar of width w) the Hessian's
   eigenvalues give ``σ²(λ₁ − |λ₂|)``: about half the bar's depth on a line, zero on a
   round dot (λ₁ = λ₂), a quarter on a step edge. Large scales run on a Gaussian pyramid.
4. **Hysteresis** on the response, thresholds relative to a robust noise estimate
   (median + k·MAD over the field's skin-like pixels), gives the hair *cores*.
5. **Edges at half depth.** A pixel near a core is hair when its depth is at least half
   the core's depth (the half-maximum of a blurred bar lies on its true edge), so the
   mask's width is unbiased instead of depending on the filter scale.
6. **Cleanup.** Components that are not elongated (dots, follicle openings, flakes), too
   short (in µm with a known scale, and in their own widths), lying along the field's
   edge (vignette rim), or redder than hair (vessels; yellow blond shafts excepted) are
   dropped; small holes (specular glints on a shaft) and deep enclosed gaps (the lighter
   middle of a wide multi-hair shaft) are filled. The continuous edge margin is
   upsampled, not the binary mask, so widths stay unbiased at full resolution.
7. **Edges at half contrast, in colour.** A shaded shaft is darker than the skin at its
   rims and often lighter or just differently coloured along its axis (highlight, blond,
   grey), so one polarity's depth keeps only part of it. Each kept component's peak
   contrast (RGB distance to the local skin colour, measured with the hairs left out)
   sets a level, and the mask grows into adjacent pixels whose contrast reaches half of
   it (full width at half maximum).
8. **Bridging** (optional, off by default). Pieces of one hair cut apart by glare or a
   faint stretch are joined by closings with lines along the pieces' own direction;
   fills between hairs lying side by side, and fills that join nothing, are left out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from ..preprocess import local_skin_colour

__all__ = ["segment_classical", "ClassicalParams", "HAIR_WIDTH_UM", "DEFAULT_WIDTH_PX"]

log = logging.getLogger(__name__)

#: Physical range of hair-shaft widths (µm): thinnest vellus to thickest terminal hair.
HAIR_WIDTH_UM = (10.0, 120.0)
#: Hair widths (px) searched when the scale is unknown: broad, from fine 2 px lines to
#: terminal hairs on a 70x photo.
DEFAULT_WIDTH_PX = (2.0, 48.0)

_POLARITIES = ("dark", "light", "auto")
#: Quantile of a block taken as the skin level for dark hairs.
_SKIN_QUANTILE = 0.7
#: For light hairs the median: a lower quantile would sit on the dark hairs of a densely
#: dark-haired scalp and make its skin look like light hair.
_LIGHT_SKIN_QUANTILE = 0.5


@dataclass(frozen=True)
class ClassicalParams:
    """Tunable constants of :func:`segment_classical` (defaults are the calibrated ones).

    Attributes
    ----------
    min_width_work_px
        The working copy is downsampled until the thinnest expected hair is this wide.
    scale_ratio
        Ratio between successive ridge-filter scales.
    k_high, k_low
        Hysteresis thresholds in robust noise units (MAD × 1.4826) above the median.
    skin_depth
        Pixels less deep than this are skin for the noise estimate.
    min_depth
        Minimum depth (fraction of full scale) of a hair core below the skin level.
    edge_fraction
        A pixel is hair when its depth is at least this fraction of the nearby core's.
    min_elongation
        Minimum moment-based length / width of a kept component.
    min_crossing_elongation, max_roughness
        A component less elongated by its moments (an X of crossing hairs) is kept when
        its area-based length / width reaches ``min_crossing_elongation`` and its edge is
        smooth: a (Crofton) perimeter at most ``max_roughness`` times that of a bar of the
        same length and width.
    min_length_widths
        Minimum component length in units of the thinnest expected hair width.
    max_red_ratio
        Components whose red-channel depth is below this fraction of their green-channel
        depth are vessels, not hair.
    max_enclosed_share
        A second-pass (light or colour) component whose outline runs along dark hairs for
        more than this share is skin seen between dark hairs, not a hair.
    light_keep_ratio
        With ``polarity="auto"``, a pass is kept only when its contrast-weighted hair
        length is at least this fraction of the other's.
    auto_second
        The second pass of ``polarity="auto"``: ``"colour"`` (default) or ``"light"``.
    max_dark_overlap
        Colour-pass components lying on dark hairs for more than this share of their area
        are those dark hairs again and are dropped.
    max_red_shift, min_yellow
        Colour-pass components whose red rises above green by more than ``max_red_shift``
        (against the skin) are vessels, unless their blue falls below green by at least
        ``min_yellow`` (yellow: blond hair; a vessel is red to magenta, never yellow).
    red_green_dark
        The dark channel is ``max(R, G)`` rather than ``max(R, G, B)``: after white
        balance on dark skin (little blue) a black shaft is barely darker than the skin in
        blue, so requiring it to be dark in every channel loses it. Vessels stay out
        (bright red; see ``max_red_ratio``).
    min_length_um, min_own_widths
        With a known scale, components shorter than ``min_length_um`` (half the shortest
        clipped stub, 200 µm, so that hairs cut short by the field's edge stay) are
        dropped; any component shorter than ``min_own_widths`` of its own widths is a
        fleck, dot or opening, not a hair.
    max_edge_share, edge_band_widths
        With a known scale, components with more than ``max_edge_share`` of their area
        within ``edge_band_widths`` maximum hair widths of the field's outer edge, and
        reaching no further than twice that into the field, are the dark rim of a
        vignetted field.
    max_hole_widths, hole_depth_fraction
        Holes in the kept hair up to ``(max_hole_widths × max width)²`` whose mean depth
        is at least ``hole_depth_fraction`` of the surrounding hair's are filled: the
        lighter middle of a wide shaft of two or three hairs lying side by side.
    half_contrast, contrast_quantile, grow_widths
        The mask grows into pixels, at most ``grow_widths`` maximum hair widths from the
        found hair, whose colour contrast reaches ``half_contrast`` of the component's
        peak contrast (its ``contrast_quantile``); ``half_contrast=0`` turns it off.
    second_skin_without_dark
        The second pass measures colour against a skin colour averaged with the dark hairs
        it found left out: on a densely dark-haired scalp the block medians sit partly on
        hair, so the skin seen between the hairs looks lighter than "skin" and was found
        as light hair.
    bridge_widths, bridge_directions
        Gaps along a hair are bridged with line closings ``bridge_widths`` maximum hair
        widths long in ``bridge_directions`` orientations; ``bridge_widths=0`` (default)
        turns it off: at 0.75 it joins fragments on renders but did not improve counts or
        widths end to end and raised the count error on real FDU train photos.
    """

    min_width_work_px: float = 2.5
    scale_ratio: float = 2.0
    k_high: float = 10.0
    k_low: float = 5.0
    min_depth: float = 0.04
    skin_depth: float = 0.08
    edge_fraction: float = 0.5
    min_elongation: float = 2.0
    min_crossing_elongation: float = 5.0
    max_roughness: float = 1.45
    min_length_widths: float = 4.0
    max_red_ratio: float = 0.6
    light_keep_ratio: float = 0.3
    auto_second: str = "colour"
    max_dark_overlap: float = 0.3
    max_red_shift: float = 0.08
    min_yellow: float = 0.04
    max_enclosed_share: float = 0.5
    red_green_dark: bool = True
    min_length_um: float = 100.0
    min_own_widths: float = 3.0
    max_edge_share: float = 0.5
    edge_band_widths: float = 0.5
    max_hole_widths: float = 3.0
    hole_depth_fraction: float = 0.4
    half_contrast: float = 0.5
    contrast_quantile: float = 0.9
    grow_widths: float = 0.5
    bridge_widths: float = 0.0
    bridge_directions: int = 16
    second_skin_without_dark: bool = True


def segment_classical(
    rgb: np.ndarray,
    field: np.ndarray | None = None,
    *,
    um_per_px: float | None = None,
    polarity: str = "auto",
    params: ClassicalParams | None = None,
) -> np.ndarray:
    """Segment hair shafts in an illumination-flattened trichoscopy photo.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` float image in [0, 1] (a ``(H, W)`` grey image is accepted too),
        already illumination-flattened.
    field : numpy.ndarray, optional
        ``(H, W)`` bool mask of the analysable field; pixels outside it are never hair and
        do not influence the noise estimate. Default: the whole image.
    um_per_px : float, optional
        Scale. When given, the filter scales cover hairs 10-120 µm wide and the photo is
        processed at reduced resolution when its pixels are much finer than needed;
        otherwise a broad default width range (2-48 px) is searched at full resolution.
    polarity : {"auto", "dark", "light"}
        Hairs darker than the skin, lighter (blond, grey, white hair on dark skin), or
        decided per image: dark hairs and hairs that differ from the skin in colour are
        both searched, and the colour pass is kept when it adds a substantial share of the
        hair found (contrast-weighted length), so that flakes and glints on a dark-haired
        scalp do not get in.
    params : ClassicalParams, optional
        Tuning constants; the defaults are calibrated.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool hair mask.

    Raises
    ------
    InputError
        Wrong shape, a field of another size, a non-positive scale or unknown polarity.
    """
    p = params or ClassicalParams()
    img = _check_image(rgb)
    h, w = img.shape[:2]
    fld = _check_field(field, (h, w))
    if polarity not in _POLARITIES:
        raise InputError(f"polarity must be one of {_POLARITIES}, got {polarity!r}")
    if um_per_px is not None and not _positive_number(um_per_px):
        raise InputError(f"um_per_px must be a positive number, got {um_per_px!r}")
    if not fld.any():
        return np.zeros((h, w), dtype=bool)

    widths = _width_range_px(um_per_px)
    factor = min(1.0, p.min_width_work_px / widths[0])
    work_widths = (widths[0] * factor, widths[1] * factor)
    small, fld_s = _resample(img, fld, factor)

    chans = _Channels.build(small, fld_s, work_widths[1], p.red_green_dark)
    pols = ("dark", p.auto_second) if polarity == "auto" else (polarity,)
    margins: dict[str, tuple[np.ndarray, float]] = {}
    dark_hair = None
    # Shortest kept component (working px): a hair stub is >= ~200 µm long.
    min_length = 0.0 if um_per_px is None else p.min_length_um / float(um_per_px) * factor
    for pol in pols:
        margins[pol] = _polarity_margin(
            chans, fld_s, work_widths, pol, p, dark_hair, min_length=min_length
        )
        if pol == "dark":
            dark_hair = margins[pol][0] > 0
            if p.second_skin_without_dark and dark_hair.any():
                chans = _without_dark_hair(chans, fld_s, dark_hair, work_widths)
    if polarity == "auto":
        margins = _choose_polarities(margins, p)

    margin = np.maximum.reduce([m for m, _ in margins.values()])
    if p.half_contrast > 0:
        margin = _half_contrast_margin(chans, margin, fld_s, work_widths, p)
    if p.bridge_widths > 0:
        margin = _bridge_gaps(margin, fld_s, work_widths, p)
    if factor < 1.0:
        margin = cv2.resize(margin, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = (margin > 0) & fld
    return _fill_small_holes(mask, max_area=(0.6 * widths[1]) ** 2) & fld


# --------------------------------------------------------------------------- inputs


def _without_dark_hair(
    ch: _Channels, fld: np.ndarray, dark_hair: np.ndarray, widths: tuple[float, float]
) -> _Channels:
    """The channels with the second pass's skin levels re-estimated off the dark hairs.

    The dark hairs (grown by a quarter of the widest hair, so their soft edges go too) are
    filled with a normalised box average of the field's other pixels around them, and the
    skin level is the block median of that, as for the first pass.
    """
    grow = max(1, math.ceil(0.25 * widths[1]))
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    near = cv2.dilate(dark_hair.astype(np.uint8), se).astype(bool)
    window = max(32.0, 4.0 * widths[1])
    # Dark-hair pixels take the box average of the skin around them; the block median
    # then stays robust to the light hairs that the average includes.
    around = local_skin_colour(ch.rgb, fld & ~near, window, ch.bg_rgb, min_share=0.05)
    filled = np.where(near[..., None], around, ch.rgb)
    bg_rgb = cv2.merge([_skin_level(c, window, 0.5) for c in cv2.split(filled)])
    diff = ch.rgb - bg_rgb
    colour = cv2.sqrt((diff * diff).sum(axis=2, dtype=np.float32))
    bg_light = (bg_rgb[..., 0] + bg_rgb[..., 1] + bg_rgb[..., 2]) * np.float32(1.0 / 3.0)
    return dataclasses.replace(
        ch,
        bg_rgb=bg_rgb,
        bg_light=np.ascontiguousarray(bg_light),
        colour=colour,
        bg_colour=_skin_level(colour, window, 0.5),
    )


def _positive_number(value: object) -> bool:
    """True for a finite number > 0."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def _check_image(rgb: np.ndarray) -> np.ndarray:
    """Return the image as float32 ``(H, W, 3)`` in [0, 1]; grey input is replicated.

    Integer images (uint8/uint16) are scaled by their type's maximum.
    """
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise InputError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)).copy()
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"expected a numeric image, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_field(field: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Return the field as a bool array of ``shape`` (all True when absent)."""
    if field is None:
        return np.ones(shape, dtype=bool)
    fld = np.asarray(field, dtype=bool)
    if fld.shape != shape:
        raise InputError(f"field has shape {fld.shape}, the image {shape}")
    return fld


def _width_range_px(um_per_px: float | None) -> tuple[float, float]:
    """Expected hair widths in pixels of the input."""
    if um_per_px is None:
        return DEFAULT_WIDTH_PX
    return (HAIR_WIDTH_UM[0] / um_per_px, HAIR_WIDTH_UM[1] / um_per_px)


def _resample(img: np.ndarray, fld: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Downsample image and field by ``factor`` (area averaging; no-op at 1)."""
    if factor >= 1.0:
        return img, fld
    h, w = fld.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    fld_s = cv2.resize(fld.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return small, fld_s


# --------------------------------------------------------------------------- channels


def _skin_level(chan: np.ndarray, window: float, quantile: float) -> np.ndarray:
    """Local skin level of ``chan``: a quantile over blocks, smoothed across blocks.

    A quantile instead of the median keeps the estimate on the skin even where hairs cover
    most of the window (dense or unshaved scalp): the 70th percentile of a block is skin as
    long as 30 % of it is. A 3 × 3 median across blocks then removes blocks that are hair
    throughout, and bilinear upsampling gives a smooth level.
    """
    h, w = chan.shape
    stride = max(1, round(window / 32.0))  # about 8 x 8 samples per block are plenty
    b = stride * max(1, round(window / 4.0 / stride))
    nby, nbx = -(-h // b), -(-w // b)
    padded = cv2.copyMakeBorder(chan, 0, nby * b - h, 0, nbx * b - w, cv2.BORDER_REFLECT)
    bs = b // stride
    sub = padded[::stride, ::stride]
    blocks = sub.reshape(nby, bs, nbx, bs).transpose(0, 2, 1, 3).reshape(nby, nbx, bs * bs)
    k = min(bs * bs - 1, int(quantile * bs * bs))
    level = np.partition(blocks, k, axis=2)[:, :, k].astype(np.float32)
    if min(nby, nbx) >= 3:
        level = cv2.medianBlur(level, 3)
    # Upsample so that each block's value sits at the block's centre.
    big = cv2.resize(level, (nbx * b, nby * b), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[:h, :w])


@dataclass
class _Channels:
    """Working channels and their skin-level backgrounds."""

    rgb: np.ndarray
    bg_rgb: np.ndarray
    dark: np.ndarray
    light: np.ndarray
    bg_dark: np.ndarray
    bg_light: np.ndarray
    colour: np.ndarray
    bg_colour: np.ndarray
    edge_dist: np.ndarray | None = None  # distance to the field's edge (partial field)

    @classmethod
    def build(
        cls, rgb: np.ndarray, fld: np.ndarray, max_width: float, red_green_dark: bool = False
    ) -> _Channels:
        """Fill outside the field with the skin level, then compute the skin levels.

        ``red_green_dark``: the dark channel is ``max(R, G)`` instead of ``max(R, G, B)``.
        """
        partial = not fld.all()
        outside = (~fld).astype(np.uint8)
        if partial:
            step = max(1, int(math.sqrt(fld.size / 20_000)))  # a sample is enough
            inside = rgb[::step, ::step][fld[::step, ::step]]
            if inside.size == 0:
                inside = rgb[fld]
            fill = np.median(inside, axis=0).astype(np.float32)
            rgb = rgb.copy()
            cv2.copyTo(np.full_like(rgb, fill), outside, rgb)
        window = max(32.0, 4.0 * max_width)
        planes = cv2.split(rgb)
        bg_rgb = cv2.merge([_skin_level(c, window, 0.5) for c in planes])
        if partial:
            # Outside the field, continue the skin level so no edge shows at its border.
            cv2.copyTo(bg_rgb, outside, rgb)
            planes = cv2.split(rgb)
        dark = cv2.max(planes[0], planes[1])
        if not red_green_dark:
            dark = cv2.max(dark, planes[2])
        light = (planes[0] + planes[1] + planes[2]) * np.float32(1.0 / 3.0)
        diff = rgb - bg_rgb
        colour = cv2.sqrt((diff * diff).sum(axis=2, dtype=np.float32))
        return cls(
            rgb=rgb,
            bg_rgb=bg_rgb,
            dark=dark,
            light=light,
            # Dark hairs pull low quantiles down, light hairs pull high ones up.
            bg_dark=_skin_level(dark, window, _SKIN_QUANTILE),
            bg_light=_skin_level(light, window, _LIGHT_SKIN_QUANTILE),
            colour=colour,
            bg_colour=_skin_level(colour, window, 0.5),
            edge_dist=_edge_distance(fld) if partial else None,
        )


def _edge_distance(fld: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel to the field's outer edge (image border not).

    Holes in the field (overlays inside it, or a wide dark shaft that field detection
    took for a dark region) do not count: only the rim of a vignetted or barred field.
    """
    outside = (~fld).astype(np.uint8)
    n, labels = cv2.connectedComponents(outside, connectivity=8)
    rim = np.zeros(n, dtype=bool)
    for border in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        rim[np.unique(border)] = True
    rim[0] = False
    inside = (~rim[labels]).astype(np.uint8)
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


# --------------------------------------------------------------------------- ridge filter


def _hessian_ridge(img: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalised dark-ridge response ``σ²(λ₁ − |λ₂|)`` at scale ``sigma``.

    Computed on a pyramid level where the remaining blur is at least ~1.2 px, then
    upsampled to ``img``'s size.
    """
    h, w = img.shape
    level_img, level, acc = img, 0, 0.0  # acc: blur variance already applied, in input px²
    # cv2.pyrDown blurs with σ ≈ 1 level px; keep ≥ 1.2 px of own blur at the level used.
    while sigma / 2 ** (level + 1) >= 1.2 and min(level_img.shape) >= 16:
        acc += (2.0**level) ** 2
        level_img = cv2.pyrDown(level_img)
        level += 1
    scale = 2.0**level
    rem = math.sqrt(max(sigma**2 - acc, 0.25)) / scale
    g = cv2.GaussianBlur(level_img, (0, 0), rem, borderType=cv2.BORDER_REFLECT)
    k2 = np.array([1.0, -2.0, 1.0], dtype=np.float32)
    k1 = np.array([-0.5, 0.0, 0.5], dtype=np.float32)
    k0 = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    dxx = cv2.sepFilter2D(g, -1, k2, k0, borderType=cv2.BORDER_REFLECT)
    dyy = cv2.sepFilter2D(g, -1, k0, k2, borderType=cv2.BORDER_REFLECT)
    dxy = cv2.sepFilter2D(g, -1, k1, k1, borderType=cv2.BORDER_REFLECT)
    half_tr = 0.5 * (dxx + dyy)
    disc = cv2.sqrt(0.25 * (dxx - dyy) ** 2 + dxy**2)
    # λ₁ − |λ₂| with λ = half_tr ± disc equals 2·min(half_tr, disc).
    # Level pixels: σ_level² λ_level = σ² λ, so normalise with the level's own σ.
    resp = cv2.min(half_tr, disc) * np.float32(2.0 * (sigma / scale) ** 2)
    if level:
        resp = cv2.resize(resp, (w, h), interpolation=cv2.INTER_LINEAR)
    return resp


def _ridge_response(img: np.ndarray, widths: tuple[float, float], ratio: float) -> np.ndarray:
    """Maximum over scales of the dark-ridge response for bar widths in ``widths``."""
    lo, hi = widths[0] / 2.0, widths[1] / 2.0
    n = max(1, math.ceil(math.log(hi / lo) / math.log(ratio)) + 1)
    sigmas = np.geomspace(lo, hi, n) if n > 1 else [lo]
    best = _hessian_ridge(img, float(sigmas[0]))
    for s in sigmas[1:]:
        np.maximum(best, _hessian_ridge(img, float(s)), out=best)
    return best


# --------------------------------------------------------------------------- per polarity


def _robust_thresholds(
    resp: np.ndarray, skin: np.ndarray, p: ClassicalParams
) -> tuple[float, float]:
    """Hysteresis thresholds: median + k·σ̂ (1.4826 × MAD) of the response on skin.

    ``skin`` excludes the field's clearly hair-dark pixels, so that a scalp that is half
    hair does not inflate its own noise estimate.
    """
    vals = resp[skin]
    if vals.size < 64:
        vals = resp.ravel()
    if vals.size > 200_000:  # a strided subsample estimates the median just as well
        vals = vals[:: vals.size // 200_000]
    med = float(np.median(vals))
    sigma = 1.4826 * float(np.median(np.abs(vals - med))) + 1e-6
    return med + p.k_low * sigma, med + p.k_high * sigma


def _hysteresis(resp: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above ``low`` that are connected to a pixel above ``high``."""
    weak = (resp > low).astype(np.uint8)
    n, labels = cv2.connectedComponents(weak, connectivity=8)
    if n <= 1:
        return np.zeros(resp.shape, dtype=bool)
    strong = np.zeros(n, dtype=bool)
    strong[np.unique(labels[resp > high])] = True
    strong[0] = False
    return strong[labels]


def _polarity_margin(
    ch: _Channels,
    fld: np.ndarray,
    widths: tuple[float, float],
    polarity: str,
    p: ClassicalParams,
    dark_hair: np.ndarray | None = None,
    *,
    min_length: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Edge margin (> 0 inside hair) of one pass and its contrast-weighted length.

    ``polarity`` is ``"dark"``, ``"light"`` or ``"colour"``. ``dark_hair`` (second
    pass): dark hairs already found; skin showing between dense dark hairs differs from
    its surroundings but is not a hair.

    The margin is ``depth − edge_fraction · core depth`` on kept components and −1
    elsewhere, so that a linear upsampling followed by ``> 0`` keeps the half-depth edge.
    """
    sign = 1.0 if polarity == "dark" else -1.0
    img, bg = {
        "dark": (ch.dark, ch.bg_dark),
        "light": (ch.light, ch.bg_light),
        "colour": (ch.colour, ch.bg_colour),
    }[polarity]
    depth = sign * (bg - img)
    resp = _ridge_response(sign * img, widths, p.scale_ratio)
    low, high = _robust_thresholds(resp, fld & (depth < p.skin_depth), p)
    core = _hysteresis(resp, low, high) & (depth > p.min_depth) & fld

    # Core depth carried to the neighbourhood a hair's half-width can reach.
    radius = max(1, math.ceil(widths[1] / 2.0))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    core_depth = cv2.dilate(np.where(core, depth, 0.0).astype(np.float32), kernel)
    margin = depth - p.edge_fraction * core_depth
    cand = (margin > 0) & (core_depth > 0) & fld

    keep, length = _clean_components(
        cand, core, depth, ch, polarity, widths, p, dark_hair, min_length=min_length
    )
    holes = _shaft_holes(keep, depth, widths, p)
    margin = np.where(keep, margin, -1.0).astype(np.float32)
    if holes.any():
        margin[holes] = np.maximum(margin[holes], 0.05)
        keep = keep | holes
    # Let the upsampled edge fall between a kept pixel and its neighbour.
    ring = cv2.dilate(keep.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~keep
    margin[ring] = np.minimum(depth - p.edge_fraction * core_depth, 0.0)[ring]
    return margin, length


def _shaft_holes(
    keep: np.ndarray, depth: np.ndarray, widths: tuple[float, float], p: ClassicalParams
) -> np.ndarray:
    """Enclosed gaps of kept hair that are themselves hair: the hollow of a wide shaft.

    A unit of two or three hairs lying side by side is one dark shaft up to ~3 widths
    across whose centre (highlights, the hairs' lighter axes) can fall below half the
    depth of its dark edges, leaving a ring. A hole no larger than a few widths squared
    whose mean depth reaches ``hole_depth_fraction`` of the depth of the hair around it
    is filled; skin enclosed between crossing hairs is not deep enough.
    """
    inv = (~keep).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 2:
        return np.zeros(keep.shape, dtype=bool)
    h, w = keep.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    area = stats[:, cv2.CC_STAT_AREA]
    inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    cand = inner & (area <= (p.max_hole_widths * widths[1]) ** 2)
    cand[0] = False
    cand[labels[0, 0]] = False
    if not cand.any():
        return np.zeros(keep.shape, dtype=bool)
    lab = np.where(cand[labels], labels, 0).astype(np.int32)
    # The ring of hair around each hole: its pixels next to the hole.
    grown = cv2.dilate(lab.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int64)
    ring = keep & (grown > 0)
    d64 = depth.astype(np.float64)
    ring_depth = np.bincount(grown[ring], weights=d64[ring], minlength=n)
    ring_n = np.bincount(grown[ring], minlength=n)
    inside = lab > 0
    hole_depth = np.bincount(lab[inside], weights=d64[inside], minlength=n)
    ok = cand & (
        hole_depth / np.maximum(area, 1)
        >= p.hole_depth_fraction * ring_depth / np.maximum(ring_n, 1)
    )
    ok[0] = False
    return ok[lab] & inside


def _clean_components(
    cand: np.ndarray,
    core: np.ndarray,
    depth: np.ndarray,
    ch: _Channels,
    polarity: str,
    widths: tuple[float, float],
    p: ClassicalParams,
    dark_hair: np.ndarray | None = None,
    *,
    min_length: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Keep elongated, smooth, long enough, hair-coloured components that contain a core.

    Returns the kept mask and the kept components' total length (px).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(cand.shape, dtype=bool), 0.0
    shape = _component_shape(cand, labels, n)
    has_core = np.bincount(labels[core], minlength=n)[1:] > 0
    ok = has_core & (shape.length >= max(p.min_length_widths * widths[0], min_length))
    # A hair is several of its own widths long; shorter bits are flecks and dots.
    ok &= shape.length >= p.min_own_widths * shape.width
    if ch.edge_dist is not None and min_length > 0 and p.max_edge_share < 1.0:
        # The dark falloff at a vignetted field's rim is not a hair lying along it (only
        # with a known scale: without one the band would be as wide as a small photo).
        # A hair cut by the edge runs into the field; the rim stays within the band.
        band = max(2.0, p.edge_band_widths * widths[1])
        dist = ch.edge_dist[cand]
        lab = labels[cand]
        share = np.bincount(lab[dist < band], minlength=n)[1:] / np.maximum(shape.area, 1.0)
        reach = np.zeros(n, dtype=np.float32)
        np.maximum.at(reach, lab, dist)
        ok &= (share <= p.max_edge_share) | (reach[1:] >= 2.0 * band)
    # Straight or gently curved hairs are elongated by their second moments; an X of two
    # crossing hairs is not, but it is long for its width and has smooth edges, unlike
    # a ragged flake.
    ok &= (shape.moment_elongation >= p.min_elongation) | (
        (shape.length >= p.min_crossing_elongation * shape.width)
        & (shape.roughness <= p.max_roughness)
    )
    if polarity == "dark":
        ok &= _hair_coloured(labels, n, ch, p)
    elif dark_hair is not None and dark_hair.any():
        ok &= _enclosed_share(labels, n, dark_hair) <= p.max_enclosed_share
        if polarity == "colour":
            # Dark hairs stand out in colour too: leave them to the dark polarity.
            on_dark = np.bincount(labels[dark_hair], minlength=n)[1:]
            ok &= on_dark <= p.max_dark_overlap * shape.area
    if polarity == "colour":
        red_shift, yellow = _red_shift(labels, n, ch)
        # A vessel is red or magenta; a blond shaft loses red less than green too, but
        # blue most of all (yellow), which a vessel never does.
        ok &= (red_shift <= p.max_red_shift) | (yellow >= p.min_yellow)
    keep_lab = np.concatenate([[False], ok])
    log.debug("%s: %d candidate components, %d kept", polarity, n - 1, int(np.count_nonzero(ok)))
    # Score: length weighted by mean depth, so faint ragged flakes weigh little.
    lab = labels[cand]
    depth_sum = np.bincount(lab, weights=depth[cand].astype(np.float64), minlength=n)[1:]
    mean_depth = depth_sum / np.maximum(shape.area, 1.0)
    return keep_lab[labels], float((shape.length * mean_depth)[ok].sum())


@dataclass
class _Shape:
    """Per-component shape measures (index i is label i + 1)."""

    area: np.ndarray
    width: np.ndarray  # 4 × mean inner distance: exact for a straight bar
    length: np.ndarray  # area / width
    moment_elongation: np.ndarray  # sqrt of the covariance eigenvalue ratio: L/W of a bar
    roughness: np.ndarray  # perimeter / perimeter of the equivalent bar


def _crofton_perimeter_density(mask: np.ndarray) -> np.ndarray:
    """Per-pixel share of the perimeter (Crofton formula on 4 directions).

    Each foreground pixel is charged with its transitions to background along the
    horizontal, vertical and both diagonal directions; summed over a component, the
    weighted count estimates the Euclidean perimeter almost independently of the edge's
    orientation (unlike counting boundary pixels).
    """
    m = np.pad(mask, 1).astype(np.float32)
    inner = m[1:-1, 1:-1]
    axial = (
        (inner - m[1:-1, :-2]).clip(0)
        + (inner - m[1:-1, 2:]).clip(0)
        + (inner - m[:-2, 1:-1]).clip(0)
        + (inner - m[2:, 1:-1]).clip(0)
    )
    diagonal = (
        (inner - m[:-2, :-2]).clip(0)
        + (inner - m[2:, 2:]).clip(0)
        + (inner - m[:-2, 2:]).clip(0)
        + (inner - m[2:, :-2]).clip(0)
    )
    # Crofton: P ≈ π/4 · (n_0 + n_90 + (n_45 + n_135)/√2), with n counting edge crossings
    # (each transition seen once from the foreground side).
    return (np.pi / 8.0) * (axial + diagonal / math.sqrt(2.0))


def _component_shape(mask: np.ndarray, labels: np.ndarray, n: int) -> _Shape:
    """Vectorised shape measures of every labelled component of ``mask``."""
    ys, xs = np.nonzero(mask)
    lab = labels[ys, xs]

    def per_label(values: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=values, minlength=n)[1:]

    area = per_label(np.ones(lab.size))
    safe = np.maximum(area, 1.0)
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    # Mean distance to the edge over a bar's cross-section is W/4 (a pixel centre on the
    # edge is 1 from the background in the distance transform, half a pixel in reality).
    width = np.maximum(4.0 * (per_label(dist[ys, xs].astype(np.float64)) / safe - 0.5), 1.0)
    length = area / width
    xf, yf = xs.astype(np.float64), ys.astype(np.float64)
    mx, my = per_label(xf) / safe, per_label(yf) / safe
    sxx = per_label(xf * xf) / safe - mx**2 + 1.0 / 12.0
    syy = per_label(yf * yf) / safe - my**2 + 1.0 / 12.0
    sxy = per_label(xf * yf) / safe - mx * my
    half_tr = 0.5 * (sxx + syy)
    disc = np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)
    elong = np.sqrt((half_tr + disc) / np.maximum(half_tr - disc, 1e-6))
    perimeter = per_label(_crofton_perimeter_density(mask)[ys, xs])
    roughness = perimeter / (2.0 * (length + width))
    return _Shape(area, width, length, elong, roughness)


def _enclosed_share(labels: np.ndarray, n: int, other: np.ndarray) -> np.ndarray:
    """Per component: share of its outer boundary that lies on ``other``'s pixels."""
    grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int64)
    ring = (labels == 0) & (grown > 0)
    lab = grown[ring]
    total = np.bincount(lab, minlength=n)[1:]
    on_other = np.bincount(lab[other[ring]], minlength=n)[1:]
    return on_other / np.maximum(total, 1)


def _red_shift(labels: np.ndarray, n: int, ch: _Channels) -> tuple[np.ndarray, np.ndarray]:
    """Per component: mean (ΔR − ΔG) and mean (ΔG − ΔB) against the skin.

    The first is large for red vessels (and blond hair), the second for yellow (blond)
    hair only.
    """
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    d = (ch.rgb[ys, xs] - ch.bg_rgb[ys, xs]).astype(np.float64)
    count = np.maximum(np.bincount(lab, minlength=n)[1:], 1)
    red = np.bincount(lab, weights=d[:, 0] - d[:, 1], minlength=n)[1:] / count
    yellow = np.bincount(lab, weights=d[:, 1] - d[:, 2], minlength=n)[1:] / count
    return red, yellow


def _hair_coloured(labels: np.ndarray, n: int, ch: _Channels, p: ClassicalParams) -> np.ndarray:
    """Per component: is it darker in red than a vessel would be?

    A hair shaft of any colour loses red about as much as green against the skin; a blood
    vessel keeps its red, losing mostly green and blue.
    """
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    depth = (ch.bg_rgb[ys, xs] - ch.rgb[ys, xs]).astype(np.float64)
    d_red = np.bincount(lab, weights=depth[:, 0], minlength=n)[1:]
    d_green = np.bincount(lab, weights=depth[:, 1], minlength=n)[1:]
    return d_red >= p.max_red_ratio * np.maximum(d_green, 0.0)


def _choose_polarities(
    margins: dict[str, tuple[np.ndarray, float]], p: ClassicalParams
) -> dict[str, tuple[np.ndarray, float]]:
    """Keep a pass only when its contrast-weighted length is a fair share of the other's.

    Light and colour ridges also appear on dark-haired scalps (glints, flakes, skin
    folds); they are dropped unless they make up a substantial part of what was found.
    """
    total = max(length for _, length in margins.values())
    kept = {k: v for k, v in margins.items() if v[1] >= p.light_keep_ratio * total}
    log.debug("polarity lengths %s", {k: round(v[1]) for k, v in margins.items()})
    return kept or margins


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill background components smaller than ``max_area`` that do not touch the border."""
    inv = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 1:
        return mask
    h, w = mask.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    small = (stats[:, cv2.CC_STAT_AREA] <= max_area) & inner
    small[0] = False
    return mask | small[labels]


# --------------------------------------------------------------------------- edges


def _half_contrast_margin(
    ch: _Channels,
    margin: np.ndarray,
    fld: np.ndarray,
    widths: tuple[float, float],
    p: ClassicalParams,
) -> np.ndarray:
    """Move the hair's edges to half its contrast against the skin, in colour.

    The passes find a hair by one polarity, but a shaded shaft is not one: its rims are
    darker than the skin and its axis can be lighter (highlight, blond or grey hair), so a
    single-polarity depth keeps only part of it. Here the contrast is the RGB distance to
    the local skin colour; each found component's peak contrast (a high quantile over its
    pixels) sets the level, and the mask grows into adjacent pixels, up to
    ``grow_widths`` maximum hair widths away, whose contrast reaches ``half_contrast`` of
    it: the half-maximum of a blurred bar lies on its true edge.
    """
    keep = margin > 0
    if not keep.any():
        return margin
    reach = max(1.0, p.grow_widths * widths[1])
    r = math.ceil(reach)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near = cv2.dilate(keep.astype(np.uint8), disk).astype(bool)
    skin = local_skin_colour(ch.rgb, fld & ~near, max(32.0, 4.0 * widths[1]), ch.bg_rgb)
    diff = ch.rgb - skin
    contrast = cv2.sqrt((diff * diff).sum(axis=2, dtype=np.float32))

    n, labels = cv2.connectedComponents(keep.astype(np.uint8), connectivity=8)
    ys, xs = np.nonzero(keep)
    lab = labels[ys, xs]
    vals = contrast[ys, xs]
    order = np.lexsort((vals, lab))
    counts = np.bincount(lab, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = starts + np.floor(p.contrast_quantile * np.maximum(counts - 1, 0)).astype(np.int64)
    peak = np.zeros(n, np.float32)
    peak[1:] = vals[order][pick[1:]]

    # Each pixel takes the level of the nearest found pixel's component.
    dist, idx = cv2.distanceTransformWithLabels(
        (~keep).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    comp_of = np.concatenate([[0], lab]).astype(np.int32)  # raster order, as OpenCV labels
    level = p.half_contrast * peak[comp_of[idx]]
    edge = contrast - level
    grow = keep | (fld & (dist <= reach) & (edge >= 0))
    # Only grown pixels connected to a found hair.
    m, glab = cv2.connectedComponents(grow.astype(np.uint8), connectivity=8)
    seeded = np.zeros(m, dtype=bool)
    seeded[np.unique(glab[keep])] = True
    seeded[0] = False
    hair = seeded[glab]
    out = np.where(hair, np.maximum(np.maximum(margin, edge), 1e-3), -1.0).astype(np.float32)
    ring = cv2.dilate(hair.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~hair
    out[ring] = np.minimum(edge, 0.0)[ring]
    return out


def _line_kernel(length: int, angle: float) -> np.ndarray:
    """A one-pixel line structuring element of ``length`` (odd) px at ``angle`` rad."""
    k = np.zeros((length, length), np.uint8)
    c = (length - 1) / 2.0
    dx, dy = c * math.cos(angle), c * math.sin(angle)
    p0 = (round(c - dx), round(c - dy))
    p1 = (round(c + dx), round(c + dy))
    cv2.line(k, p0, p1, 1, 1)
    return k


def _ray_kernel(length: int, angle: float) -> np.ndarray:
    """A kernel whose dilation looks up to ``length`` px from each pixel towards ``angle``."""
    k = np.zeros((2 * length + 1, 2 * length + 1), np.uint8)
    end = (round(length + length * math.cos(angle)), round(length + length * math.sin(angle)))
    cv2.line(k, (length, length), end, 1, 1)
    return k


def _bridge_gaps(
    margin: np.ndarray, fld: np.ndarray, widths: tuple[float, float], p: ClassicalParams
) -> np.ndarray:
    """Join pieces of one hair across short gaps along the hair's own direction.

    Glare, a crossing or a faint stretch can cut a hair's mask into pieces that are then
    counted as several hairs. For each of ``bridge_directions`` orientations, an opening
    with a line ``bridge_widths`` maximum widths long keeps the hair parts that run along
    it (not hairs lying side by side, across which the line does not fit), and a closing
    with the same line fills gaps between such parts that lie on one line: so a gap is
    bridged only in the direction the pieces on both sides of it run.
    """
    keep = (margin > 0).astype(np.uint8)
    length = 2 * max(1, round(p.bridge_widths * widths[1] / 2.0)) + 1
    if length < 5 or not keep.any():
        return margin
    half = length // 2
    bridge = np.zeros(keep.shape, dtype=bool)
    for k in range(p.bridge_directions):  # a loop over orientations, not pixels
        angle = math.pi * k / p.bridge_directions
        se = _line_kernel(length, angle)
        along = cv2.morphologyEx(keep, cv2.MORPH_OPEN, se)
        if not along.any():
            continue
        fill = cv2.morphologyEx(along, cv2.MORPH_CLOSE, se).astype(bool) & (keep == 0)
        if not fill.any():
            continue
        # A line at a shallow angle to two hairs lying side by side also fills the skin
        # between them: drop fill that has hair on both sides across the line direction.
        side_a = cv2.dilate(keep, _ray_kernel(half, angle + math.pi / 2))
        side_b = cv2.dilate(keep, _ray_kernel(half, angle - math.pi / 2))
        bridge |= fill & ~((side_a > 0) & (side_b > 0))
    bridge &= fld
    if not bridge.any():
        return margin
    # Only fills that join two or more pieces; the rest would just smooth the outline.
    n_keep, keep_lab = cv2.connectedComponents(keep, connectivity=8)
    n_br, br_lab = cv2.connectedComponents(bridge.astype(np.uint8), connectivity=8)
    touch = cv2.dilate(br_lab.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int64)
    on = (touch > 0) & (keep_lab > 0)
    pairs = np.unique(touch[on] * n_keep + keep_lab[on])
    joins = np.bincount(pairs // n_keep, minlength=n_br) >= 2
    joins[0] = False
    bridge = joins[br_lab]
    if not bridge.any():
        return margin
    out = margin.copy()
    out[bridge] = np.maximum(out[bridge], 1e-3)
    return out
