"""Preprocessing: the analysable field, flat illumination, normalised colour, quality flags.

A trichoscopy photo is more than scalp: devices burn in header/footer bars with text, scale
bars and measuring circles, and a circular lit field leaves dark corners. :func:`find_field`
masks all of that; :func:`flatten_illumination` divides out the lighting so a hair is judged
against the skin next to it; :func:`assess_quality` says whether the photo can be trusted.
:func:`prepare` does it all and is what the pipeline calls.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, NamedTuple

import cv2
import numpy as np

from .calibration import scan_overlays
from .errors import InputError
from .io import ImageSource, read_image

__all__ = [
    "FIELD_ERODE_PX",
    "OVERLAY_GAP_PX",
    "FOCUS_THRESHOLD",
    "Prepared",
    "QualityFlags",
    "assess_quality",
    "bridge_field_gaps",
    "find_field",
    "flatten_illumination",
    "Bubble",
    "find_bubbles",
    "glare_mask",
    "local_skin_colour",
    "overlay_mask",
    "prepare",
]

logger = logging.getLogger(__name__)

#: The field is eroded by this many pixels so that a hair reaching the border of the
#: analysable area touches the field edge and is recognisable as cut.
FIELD_ERODE_PX = 3

#: Thin exclusions inside the field (a measuring circle's stroke, a drawn line, with the
#: field's erosion on both sides) are at most this wide; hairs cut apart by one are rejoined
#: across it (:func:`bridge_field_gaps`). Measured: FDU circles leave gaps up to ~20 px, the
#: renderer's ~26 px at its 99th percentile.
OVERLAY_GAP_PX = 25

#: Strips along the border are searched for burned-in bars within this fraction of the side.
BORDER_BAND_FRACTION = 0.12

#: A row (column) is a bar edge when this fraction of it steps in brightness the same way
#: at once; skin and hair never line up over most of the width like a drawn rectangle does.
#: (FDU: header box edges cover ~0.85 of the width, footers 1.0; long straight hairs lying
#: along the border reach ~0.5.)
BAR_EDGE_FRACTION = 0.6
BAR_EDGE_STEP = 0.2  # brightness jump, relative to the brighter side, counted as a step
BAR_EDGE_STEP_MIN = 0.03  # ... and never below this absolute jump (0..1)

#: Pure-colour overlay (red measuring circle, blue label text): the dominant channel exceeds
#: the middle one by more than this. On FDU train, skin stays below ~0.5 even in strongly
#: blue-cast photos (99.99th percentile); the red circle's and the label text's cores reach
#: 0.6-0.95.
OVERLAY_DOMINANCE = 0.55
#: Red measuring tools are caught lower: skin redness (R - max(G, B)) stays ≤ 0.29 on FDU.
OVERLAY_RED = 0.33
OVERLAY_MIN_EXTENT = 30  # px; a joined group of pure-colour fragments this long is drawn
TEXT_MIN_GLYPHS = 6  # coloured glyph-sized strokes that make a text label
TEXT_MIN_FILL = 0.06  # share of a label's box covered by its strokes

#: Vignette: the lit field is where the smoothed brightness (hairs closed away) is above
#: this fraction of the brightness most of the photo reaches: below half the light, the
#: photo is too dim to trust (the renderer's truth uses the same convention).
VIGNETTE_FRACTION = 0.5

#: Focus threshold on :func:`focus_score`. The FDU train+val photos (clinical, 2x upsampled)
#: score ≥ 0.0054 (median 0.018); a 6 px Gaussian blur cuts a sharp photo's score > 5x.
FOCUS_THRESHOLD = 0.004

#: Air bubbles (:func:`find_bubbles`): circles of at least this radius (px, at the working
#: scale, long side at most ``BUBBLE_WORK_SIDE``) whose thin bright rim shows over this
#: share of their circumference. On development renders, bubbles score 0.55-1.0 and the
#: circles that light hairs' edges suggest 0.0-0.27 (one pair of crossing blond hairs, 0.64).
BUBBLE_MIN_RADIUS_PX = 8
BUBBLE_MIN_RIM_FRACTION = 0.5
BUBBLE_WORK_SIDE = 1000

#: Glare: all channels this bright in the input photo count as specular reflection.
GLARE_LEVEL = 0.96

#: Flattened images map skin to this level, so light hairs (brighter than skin) stay < 1.
SKIN_LEVEL = 0.7

#: Minimum field coverage; below it there is nothing to analyse.
MIN_FIELD_COVERAGE = 0.05

#: Coverage below which a warning is raised.
WARN_FIELD_COVERAGE = 0.5

#: Median field brightness below which the photo is called too dark.
TOO_DARK_LEVEL = 0.12


def _as_rgb(image: ImageSource | np.ndarray) -> np.ndarray:
    """Float32 RGB (H, W, 3) in [0, 1]; pass-through when already so."""
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.float32
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        return image
    return read_image(image)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class _Planes(NamedTuple):
    """Per-pixel planes used by several stages, computed once per photo."""

    gray: np.ndarray  # luminance
    cmax: np.ndarray  # max over channels
    cmin: np.ndarray  # min over channels
    dominance: np.ndarray  # max channel minus the middle one: high only for pure colours
    red: np.ndarray  # dominance where red is the top channel, else 0


def _planes(rgb: np.ndarray) -> _Planes:
    # HSV gives V = max and S = (max - min) / max in one fast pass; channel reductions
    # (np.max(axis=2), cv2.split) are 3-10x slower on interleaved float32.
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    v = np.ascontiguousarray(hsv[:, :, 2])
    vmin = v * (1.0 - hsv[:, :, 1])
    total = cv2.transform(rgb, np.ones((1, 3), np.float32))
    dominance = v - (total - v - vmin)
    red = np.where(cv2.extractChannel(rgb, 0) >= v, dominance, 0).astype(np.float32)
    return _Planes(_luma(rgb), v, vmin, dominance, red)


def _work_scale(shape: tuple[int, ...]) -> int:
    """Integer downsampling factor so the long side is about 200 px for smooth estimates."""
    return max(1, int(round(max(shape[:2]) / 200)))


def _step_fraction(g: np.ndarray, axis: int) -> np.ndarray:
    """Per line (row if ``axis`` is 0), the fraction of pixels on a brightness step.

    A step at line ``i`` shows in the same direction between lines ``i ± 4`` *and*
    ``i ± 8``; a thin drawn line (≤ 3 px, e.g. a scale bar's arm) can sit under only one of
    those four samples, so it is not taken for the edge of a bar. Lines 8..n-9 are returned.
    """
    if axis == 1:
        g = g.T
    n = g.shape[0]
    near = g[12 : n - 4] - g[4 : n - 12]  # g[i+4] - g[i-4] for i in 8..n-9
    far = g[16:n] - g[0 : n - 16]  # g[i+8] - g[i-8]
    # Relative to the brighter side, so a black bar on dark skin still counts as a step.
    t = np.maximum(BAR_EDGE_STEP_MIN, BAR_EDGE_STEP * np.maximum(g[16:n], g[0 : n - 16]))
    # One sign per line: a bar's edge goes one way along its whole length, whereas the
    # two edges of a hair lying along the line go opposite ways.
    up = ((near > t) & (far > t)).mean(axis=1)
    down = ((near < -t) & (far < -t)).mean(axis=1)
    return np.maximum(up, down)


def _border_bars(gray: np.ndarray) -> np.ndarray:
    """Mask of burned-in bars along the image border (header, footer, side strips).

    A bar is found by its inner edge: a row (or column) near the border where most pixels
    step in brightness the same way at once, as only a drawn rectangle does. Everything
    between that edge and the border is masked. Uniform rows/columns touching the border
    are masked too. Only the bands within :data:`BORDER_BAND_FRACTION` are examined.
    """
    h, w = gray.shape
    mask = np.zeros((h, w), bool)
    bh = max(2, int(h * BORDER_BAND_FRACTION))
    bw = max(2, int(w * BORDER_BAND_FRACTION))
    top = _bar_depth(gray[: bh + 8])
    bottom = _bar_depth(gray[::-1][: bh + 8])
    left = _bar_depth(gray.T[: bw + 8])
    right = _bar_depth(gray.T[::-1][: bw + 8])
    mask[: min(top, bh)] = True
    mask[h - min(bottom, bh) :] = True
    mask[:, : min(left, bw)] = True
    mask[:, w - min(right, bw) :] = True
    return mask


def _bar_depth(band: np.ndarray) -> int:
    """How many lines from the border (row 0 of ``band``) belong to a bar; 0 if none."""
    n = band.shape[0] - 8  # lines examined; the last 8 only serve the step test
    if n <= 8:
        return 0
    edge = np.zeros(n, bool)
    edge[8:] = _step_fraction(band, axis=0)[: n - 8] > BAR_EDGE_FRACTION
    cut = int(np.flatnonzero(edge).max()) + 2 if edge.any() else 0
    # Uniform lines touching the border (flat strips with no inner edge in the band).
    # A flat bar holds one colour (plus a little text); textured skin never does.
    med = np.median(band[:n], axis=1, keepdims=True)
    # The tolerance shrinks on dark lines: very dark skin varies by less than 0.01 too
    # (85 % of a border column of a very dark render fell within it), a drawn bar does not
    # vary at all.
    tol = 0.01 * np.clip(med / 0.3, 0.3, 1.0)
    uniform = (np.abs(band[:n] - med) < tol).mean(axis=1) > 0.75
    k = int(np.argmin(uniform)) if not uniform.all() else n
    return max(cut, k)


def overlay_mask(rgb: np.ndarray) -> np.ndarray:
    """Mask of drawn overlays inside the image: pure-colour strokes and text, straight
    drawn lines of any style, and a recognised scale bar with its label.

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1].

    Returns
    -------
    numpy.ndarray
        Bool (H, W), True on overlay pixels (slightly dilated).
    """
    return _overlay_mask(_planes(rgb))


def _overlay_mask(pl: _Planes) -> np.ndarray:
    return _colour_overlays(pl) | scan_overlays(pl.gray)[1]


def _colour_overlays(pl: _Planes) -> np.ndarray:
    """Drawn colour: pure red (measuring circles), or any very pure colour (label text)."""
    pure = (pl.red > OVERLAY_RED) | (pl.dominance > OVERLAY_DOMINANCE)
    seeds = (pure & (pl.cmax > 0.45)).view(np.uint8)
    if not seeds.any():
        return np.zeros(seeds.shape, bool)
    # JPEG breaks thin strokes into fragments: join them, then keep only groups long
    # enough to be drawn strokes; scattered pure-colour skin pixels are dropped.
    grown = cv2.dilate(seeds, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = extent >= OVERLAY_MIN_EXTENT
    keep[0] = False
    out = keep[labels]
    # Text labels (many glyphs close together) are masked as whole rectangles, since the
    # box behind the text is part of the overlay too.
    return out | _text_boxes(seeds)


def _text_boxes(strokes: np.ndarray) -> np.ndarray:
    """Padded bounding boxes of dense clusters of glyph-sized coloured strokes (text)."""
    h, w = strokes.shape
    out = np.zeros((h, w), bool)
    n, _, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    stats = stats[1:]
    ext = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    glyph = (ext >= 6) & (ext <= 60)
    if np.count_nonzero(glyph) < TEXT_MIN_GLYPHS:
        return out
    # Cluster glyphs by closing the gaps between letters and lines of text.
    boxes = np.zeros((h, w), np.uint8)
    for x, y, bw, bh, _ in stats[glyph]:
        boxes[y : y + bh, x : x + bw] = 1
    # Wide enough to join letters and words, tall enough to join lines of a label.
    boxes = cv2.dilate(boxes, cv2.getStructuringElement(cv2.MORPH_RECT, (31, 61)))
    m, _, st, _ = cv2.connectedComponentsWithStats(boxes, connectivity=8)
    gx, gy = stats[glyph, 0], stats[glyph, 1]
    for x, y, bw, bh, _ in st[1:]:
        inside = (gx >= x) & (gy >= y) & (gx < x + bw) & (gy < y + bh)
        if np.count_nonzero(inside) < TEXT_MIN_GLYPHS:
            continue
        # Text strokes fill a good share of their box; fragments of a drawn arc do not.
        if np.count_nonzero(strokes[y : y + bh, x : x + bw]) < TEXT_MIN_FILL * bw * bh:
            continue
        out[y : y + bh, x : x + bw] = True  # the dilation already pads 15-30 px
    return out


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background components of ``mask`` and which of them are holes.

    Returns the label image of the background (0 on the mask) and a bool per label: the
    component does not reach the image border. The background is 4-connected where the
    mask is 8-connected, so a diagonal step between two mask pixels closes a hole.
    """
    n, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    hole = np.ones(n, dtype=bool)
    hole[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
    hole[0] = False
    return labels, hole


def _fill_interior_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every hole not connected to the image border filled.

    Vignetting darkens the periphery; a dark region enclosed by the lit field is a wide
    hair bundle or a dark lesion, never unlit, and must stay in the field.
    """
    labels, hole = _holes(mask)
    return mask | hole[labels]


def _lit_field(gray: np.ndarray) -> np.ndarray:
    """Mask of the illuminated field (excludes dark vignette corners)."""
    h, w = gray.shape
    f = _work_scale(gray.shape)
    small = cv2.resize(gray, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    # Closing first: dark hairs and bundles are not "unlit", only large dark areas are.
    k = max(3, (min(small.shape) // 10) | 1)
    small = cv2.morphologyEx(
        small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    )
    smooth = cv2.GaussianBlur(small, (0, 0), max(1.0, min(small.shape) / 40))
    # Reference: the brightness most of the photo reaches (dark corners are a minority; a
    # centre-only reference would call a photo dark where hair covers the centre).
    ref = float(np.percentile(smooth, 75))
    if ref <= 0.02:
        return np.zeros((h, w), bool)
    lit = (smooth > VIGNETTE_FRACTION * ref).astype(np.uint8)
    # Keep the largest lit region (the field), dropping lit specks in the dark corners.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if n > 2:
        lit = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    lit = _fill_interior_holes(lit.astype(bool)).astype(np.uint8)
    if lit.all():
        return np.ones((h, w), bool)
    # Smooth boundary at full resolution: threshold the upsampled brightness, within the
    # (slightly grown) kept region.
    full = cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR) > VIGNETTE_FRACTION * ref
    grown = cv2.dilate(lit, np.ones((3, 3), np.uint8))
    region = cv2.resize(grown, (w, h), interpolation=cv2.INTER_NEAREST)
    return _fill_interior_holes(full & region.astype(bool))


def find_field(rgb: np.ndarray, *, erode_px: int = FIELD_ERODE_PX) -> np.ndarray:
    """Mask of the analysable scalp field.

    Excludes burned-in header/footer/side bars, pure-colour overlays (measuring circles,
    lines), a detected scale bar with its label, and dark vignette corners; then erodes by
    ``erode_px`` so a hair reaching an excluded area touches the field edge (is "cut").

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1] (as from :func:`trichoscan.io.read_image`).
    erode_px : int
        Erosion of the field, in pixels.

    Returns
    -------
    numpy.ndarray
        Bool mask (H, W); may be empty (all False) for a blank photo.
    """
    return _find_field(_planes(_as_rgb(rgb)), erode_px)


def _find_field(pl: _Planes, erode_px: int = FIELD_ERODE_PX) -> np.ndarray:
    excluded = _border_bars(pl.gray) | _overlay_mask(pl)
    field = _lit_field(pl.gray) & ~excluded
    if erode_px > 0 and field.any():
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * erode_px + 1, 2 * erode_px + 1))
        # Pad with "outside" so the image border also counts as a field edge.
        padded = cv2.copyMakeBorder(
            field.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0
        )
        field = cv2.erode(padded, k)[1:-1, 1:-1].astype(bool)
    return field


def bridge_field_gaps(
    mask: np.ndarray, field: np.ndarray, *, max_gap_px: int = OVERLAY_GAP_PX
) -> np.ndarray:
    """Rejoin hair pieces that a thin exclusion inside the field cut apart.

    A measuring circle or drawn line is excluded from the field, so a hair crossing it
    falls into two pieces, each with an end "cut" at the stroke: counted as two hairs (one
    of them a tip) under the ``"visible"`` rule and as none under ``"inside"``. Each piece
    that touches a thin gap is extended along its own direction (a line fitted to its
    pixels), at its own width, across the gap; an extension is kept only where it joins two
    pieces. The gap pixels stay outside the field (they add no area and no ends).

    Parameters
    ----------
    mask : numpy.ndarray
        Bool (H, W) hair mask, already restricted to ``field``.
    field : numpy.ndarray
        Bool (H, W) analysable field.
    max_gap_px : int
        Widest gap bridged, in pixels; wider exclusions (bars, dark corners) are left.

    Returns
    -------
    numpy.ndarray
        Bool (H, W): ``mask`` plus the bridging pixels inside thin gaps.
    """
    if max_gap_px <= 0 or not mask.any() or field.all():
        return mask
    size = 2 * (max_gap_px // 2) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    # Pad with "outside": the strip the field's erosion leaves along the image border is not
    # a gap between two parts of the field.
    pad = size
    padded = cv2.copyMakeBorder(field.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    closed_field = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, disc)[pad:-pad, pad:-pad]
    gap = closed_field.astype(bool) & ~field
    if not gap.any():
        return mask
    m8 = mask.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    near_gap = cv2.dilate(gap.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    touching = np.unique(labels[near_gap & mask])
    touching = touching[touching > 0]
    if touching.size == 0:
        return mask
    h, w = mask.shape
    ext = np.zeros((h, w), np.uint8)
    for k in touching:
        x0, y0, bw, bh = (int(v) for v in stats[k, :4])
        piece = labels[y0 : y0 + bh, x0 : x0 + bw] == k
        ys, xs = np.nonzero(piece)
        pts = np.column_stack([xs + x0, ys + y0]).astype(np.float32)
        if pts.shape[0] < 3:
            continue
        vx, vy, _, _ = cv2.fitLine(pts, cv2.DIST_L2, 0, 0.01, 0.01).ravel()
        along = pts @ np.array([vx, vy], np.float32)
        width = pts.shape[0] / max(float(along.max() - along.min()) + 1.0, 1.0)
        # The piece's end at the gap: the centre of its pixels next to the gap.
        at_gap = near_gap[y0 : y0 + bh, x0 : x0 + bw][ys, xs]
        ex, ey = pts[at_gap].mean(axis=0)
        reach = max_gap_px + width
        a = (int(round(ex - vx * reach)), int(round(ey - vy * reach)))
        b = (int(round(ex + vx * reach)), int(round(ey + vy * reach)))
        cv2.line(ext, a, b, 1, max(1, int(round(width))))
    bridge = ext.astype(bool) & gap & ~mask
    if not bridge.any():
        return mask
    # Keep only the bridges that join two or more pieces.
    joined = mask | bridge
    n2, labels2 = cv2.connectedComponents(joined.astype(np.uint8), connectivity=8)
    pairs = np.unique(labels2[mask].astype(np.int64) * (n + 1) + labels[mask])
    pieces_per = np.bincount(pairs // (n + 1), minlength=n2)
    keep = pieces_per[labels2] >= 2
    return mask | (bridge & keep)


def fill_slits(mask: np.ndarray, *, max_gap_px: float = 2.0) -> np.ndarray:
    """Fill the thin holes that a hair mask shows between touching hairs.

    Two hairs lying side by side leave a gap of a pixel or two between them that their
    touching edges close every few pixels; the mask's skeleton becomes a ladder of short
    rungs and the counting falls apart into fragments. Filling those holes leaves one
    shaft of the pair's width, which the counting's bundle rule then resolves. Holes wider
    than ``max_gap_px`` (the loop between two crossing hairs, skin seen between hairs)
    stay open.

    Parameters
    ----------
    mask : numpy.ndarray
        Bool (H, W) hair mask.
    max_gap_px : float
        Widest hole filled, in pixels (a hole whose every pixel is within
        ``max_gap_px / 2`` of the mask).

    Returns
    -------
    numpy.ndarray
        Bool (H, W): ``mask`` with its thin enclosed holes filled.
    """
    if not mask.any():
        return mask
    labels, thin = _holes(mask)
    if not thin.any():
        return mask
    depth = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    thin[labels[depth > max_gap_px / 2.0]] = False
    return mask | thin[labels]


def local_skin_colour(
    rgb: np.ndarray,
    skin: np.ndarray,
    window_px: float,
    fallback: np.ndarray,
    *,
    min_share: float = 0.1,
) -> np.ndarray:
    """Local skin colour: a normalised box average of the ``skin`` pixels around each pixel.

    Unlike a block median it is not pulled towards the hair colour where hairs cover much
    of the window, as long as the hairs are left out of ``skin``.

    Parameters
    ----------
    rgb : (H, W, 3) float32 array
    skin : (H, W) bool array
        The pixels to average (the field minus the hairs).
    window_px : float
        Side of the averaging window (made odd, at least 3).
    fallback : array broadcastable to (H, W, 3)
        The colour where less than ``min_share`` of the window is skin.
    min_share : float
        Share of skin pixels a window needs.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) float32.
    """
    weight = skin.astype(np.float32)
    k = max(3, int(window_px) | 1)
    wsum = cv2.blur(weight, (k, k), borderType=cv2.BORDER_REFLECT)
    acc = cv2.blur(rgb * weight[..., None], (k, k), borderType=cv2.BORDER_REFLECT)
    enough = wsum > min_share
    out = np.broadcast_to(np.asarray(fallback, dtype=np.float32), rgb.shape).copy()
    out[enough] = acc[enough] / wsum[enough, None]
    return out


def _background(small: np.ndarray, field_small: np.ndarray) -> np.ndarray:
    """Large-scale background of a downsampled RGB image, ignoring hairs and the non-field."""
    fill = np.median(small[field_small], axis=0).astype(np.float32)  # (3,)
    work = np.where(field_small[:, :, None], small, fill).astype(np.float32)
    # Closing (max then min) wider than any hair removes dark hairs; a median then removes
    # light hairs and specks. Both at ~1/8 of the image side: wider than a bundle of two or
    # three hairs lying side by side (up to ~360 µm), which a narrower closing would lighten.
    k = max(3, (min(work.shape[:2]) // 14) | 1)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(work, cv2.MORPH_CLOSE, se)
    med = cv2.medianBlur(closed, 5) if min(closed.shape[:2]) >= 5 else closed
    # Normalised convolution: average over field pixels only, so the masked-out bars and
    # corners do not drag the estimate.
    wgt = field_small.astype(np.float32)
    sigma = max(1.0, min(work.shape[:2]) / 20)
    num = cv2.GaussianBlur(med * wgt[:, :, None], (0, 0), sigma)
    den = cv2.GaussianBlur(wgt, (0, 0), sigma)[:, :, None]
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), fill).astype(np.float32)


def flatten_illumination(rgb: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Divide out the lighting and white-balance on the skin.

    Each channel is divided by its own large-scale background (estimated on a downsampled
    copy, with hairs removed by a morphological closing, over the field only), then scaled
    so skin sits at :data:`SKIN_LEVEL`. The skin therefore becomes neutral grey and even,
    while a hair keeps its contrast *relative to the skin next to it* — dark hairs below,
    light hairs above, the bluish subsurface shaft still bluish.

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1].
    field : numpy.ndarray
        Bool (H, W) analysable field.

    Returns
    -------
    numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1]; pixels outside the field are set to the skin level.
    """
    h, w = rgb.shape[:2]
    f = _work_scale(rgb.shape)
    sw, sh = max(1, w // f), max(1, h // f)
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    # Only blocks wholly inside the field: bars and dark corners must not leak in.
    field_small = (
        cv2.resize(field.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.99
    )
    if field_small.sum() < 4:
        field_small = np.ones((sh, sw), bool)
    bg = cv2.resize(_background(small, field_small), (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.divide(rgb, np.maximum(bg, 1e-3), scale=SKIN_LEVEL)
    np.clip(out, 0.0, 1.0, out=out)
    np.copyto(out, np.float32(SKIN_LEVEL), where=~field[:, :, None])
    return out


def glare_mask(rgb: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Specular reflections (and the bright halo around them) inside the field.

    A glare spot is seeded by pixels saturated in every channel (≥ :data:`GLARE_LEVEL`) and
    grown into its surrounding bright halo; isolated light hairs are not seeded (they do not
    saturate), so they are not removed. The pipeline drops these pixels from the counted area.

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1] (the input photo, not the flattened one).
    field : numpy.ndarray
        Bool (H, W) field mask.

    Returns
    -------
    numpy.ndarray
        Bool (H, W).
    """
    return _glare_mask(_planes(rgb), field)


def _glare_mask(pl: _Planes, field: np.ndarray) -> np.ndarray:
    seed = (pl.cmin >= GLARE_LEVEL) & field
    if not seed.any():
        return np.zeros(field.shape, bool)
    seed8 = cv2.morphologyEx(seed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    if not seed8.any():
        return np.zeros(field.shape, bool)
    gray = pl.gray
    ref = _field_median(gray, field)
    # Halo: bright pixels connected to a seed (hysteresis growth), but only close to it,
    # so an overexposed but readable area of skin is not all thrown away.
    near = cv2.dilate(seed8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21)))
    halo = ((gray > max(0.9, ref + 0.6 * (1 - ref))) & field).view(np.uint8) & near
    halo |= seed8
    n, labels = cv2.connectedComponents(halo, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[seed8.astype(bool)])] = True
    keep[0] = False
    out = keep[labels].astype(np.uint8)
    out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return out.astype(bool) & field


class Bubble(NamedTuple):
    """An air bubble in the immersion fluid: a thin bright ring (pixel units)."""

    x: float
    y: float
    radius_px: float
    rim_fraction: float  # share of the visible circumference where the rim is seen


def find_bubbles(gray: np.ndarray, field: np.ndarray) -> list[Bubble]:
    """Air bubbles in the immersion fluid: thin bright rings in the field.

    Candidate circles come from OpenCV's Hough transform (``HOUGH_GRADIENT_ALT``) on the
    white top-hat of the luminance, which keeps thin bright structures only. A candidate
    is kept when, over at least :data:`BUBBLE_MIN_RIM_FRACTION` of its circumference inside
    the image, the ring (radius refined by up to ±4 px) is brighter than the band 6-9 px
    inside and outside it by more than four robust SDs of the field's top-hat: a bubble's
    rim is a closed ring, while the bright edges of light hairs that a circle happens to
    touch line up with it over short stretches only.

    Parameters
    ----------
    gray : numpy.ndarray
        Float32 (H, W) luminance in [0, 1] (of the input photo).
    field : numpy.ndarray
        Bool (H, W) field mask.

    Returns
    -------
    list of Bubble
    """
    scale = max(1, int(math.ceil(max(gray.shape) / BUBBLE_WORK_SIDE)))
    g8 = np.clip(gray * 255.0, 0, 255).astype(np.uint8)
    f8 = field.astype(np.uint8)
    if scale > 1:
        size = (gray.shape[1] // scale, gray.shape[0] // scale)
        g8 = cv2.resize(g8, size, interpolation=cv2.INTER_AREA)
        f8 = cv2.resize(f8, size, interpolation=cv2.INTER_NEAREST)
    tophat = cv2.morphologyEx(
        g8, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    )
    tophat[f8 == 0] = 0
    inside = tophat[f8 > 0].astype(np.float32)
    if inside.size < 100:
        return []
    level = float(np.median(inside))
    sd = 1.4826 * float(np.median(np.abs(inside - level)))
    # the skin's faint texture would give the circle search most of its edges: keep only
    # what stands out
    bright = np.where(tophat > level + 3.0 * sd, tophat, 0).astype(np.uint8)
    found = cv2.HoughCircles(
        cv2.GaussianBlur(bright, (0, 0), 1.5),
        cv2.HOUGH_GRADIENT_ALT,
        dp=1.5,
        minDist=20,
        param1=60,
        param2=0.7,
        minRadius=BUBBLE_MIN_RADIUS_PX,
        maxRadius=max(tophat.shape) // 2,
    )
    if found is None:
        return []
    th = tophat.astype(np.float32)
    out = []
    for x, y, r in found[0].tolist():
        frac = _rim_fraction(th, x, y, r, max(sd, 1.0))
        if frac >= BUBBLE_MIN_RIM_FRACTION:
            out.append(Bubble(x * scale, y * scale, r * scale, frac))
    return out


def _rim_fraction(th: np.ndarray, x: float, y: float, r: float, sd: float) -> float:
    """Share of the circle's in-image angles where a thin bright rim stands out."""
    angles = np.linspace(0.0, 2.0 * np.pi, 360, endpoint=False)
    cos, sin = np.cos(angles), np.sin(angles)
    h, w = th.shape

    def ring(dr: range) -> np.ndarray:  # (len(dr), 360) samples, NaN outside the image
        rr = r + np.asarray(dr, dtype=np.float64)[:, None]
        xs = np.rint(x + rr * cos).astype(np.int64)
        ys = np.rint(y + rr * sin).astype(np.int64)
        ok = (xs >= 0) & (ys >= 0) & (xs < w) & (ys < h)
        v = np.full(xs.shape, np.nan, dtype=np.float32)
        v[ok] = th[ys[ok], xs[ok]]
        return v

    profile = ring(range(-4, 5))
    seen = np.isfinite(profile).all(axis=0)
    if seen.sum() < 36:
        return 0.0
    best = int(np.argmax(np.median(profile[:, seen], axis=1))) - 4
    on = ring(range(best - 2, best + 3)).max(axis=0)
    off = np.concatenate([ring(range(best - 9, best - 5)), ring(range(best + 6, best + 10))])
    seen &= np.isfinite(on) & np.isfinite(off).all(axis=0)
    if seen.sum() < 36:
        return 0.0
    hit = on[seen] > off[:, seen].max(axis=0) + 4.0 * sd
    return float(hit.mean())


def focus_score(gray: np.ndarray, field: np.ndarray) -> float:
    """Focus measure: variance of the Laplacian in the field over the squared mean brightness.

    Dividing by brightness² makes it independent of exposure. Computed at half resolution
    when the image is large, so that it measures detail at the optics' scale rather than
    sensor noise.
    """
    g, m = gray, field
    if max(gray.shape) > 1600:
        g = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)
        m = cv2.resize(field.astype(np.uint8), (g.shape[1], g.shape[0])) > 0
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=3)
    inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if inner.sum() < 16:
        return 0.0
    vals = lap[inner]
    mean = float(g[inner].mean())
    return float(vals.var() / max(mean, 1e-3) ** 2)


@dataclass(frozen=True)
class QualityFlags:
    """Image-quality flags of one photo.

    Attributes
    ----------
    focus_score : float
        Normalised variance of the Laplacian in the field (higher = sharper).
    in_focus : bool
        ``focus_score >= FOCUS_THRESHOLD``.
    glare_fraction : float
        Fraction of the field covered by glare.
    field_coverage : float
        Field area / image area.
    too_dark : bool
        Median field brightness below :data:`TOO_DARK_LEVEL`.
    warnings : tuple of str
        Human-readable warnings (empty when all is well).
    """

    focus_score: float
    in_focus: bool
    glare_fraction: float
    field_coverage: float
    too_dark: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "focus_score": round(self.focus_score, 6),
            "in_focus": self.in_focus,
            "glare_fraction": round(self.glare_fraction, 6),
            "field_coverage": round(self.field_coverage, 6),
            "too_dark": self.too_dark,
            "warnings": list(self.warnings),
        }


def assess_quality(
    rgb: np.ndarray, field: np.ndarray, *, glare: np.ndarray | None = None
) -> QualityFlags:
    """Quality flags of a photo.

    Parameters
    ----------
    rgb : numpy.ndarray
        Float32 RGB (H, W, 3) in [0, 1], the input photo.
    field : numpy.ndarray
        Bool (H, W) analysable field.
    glare : numpy.ndarray, optional
        Precomputed :func:`glare_mask`.

    Returns
    -------
    QualityFlags
    """
    pl = _planes(_as_rgb(rgb))
    return _assess(pl, field, _glare_mask(pl, field) if glare is None else glare)


def _field_median(gray: np.ndarray, field: np.ndarray) -> float:
    """Median of ``gray`` over ``field``, on a subsample (exact enough, 10x faster)."""
    step = max(1, int(np.sqrt(gray.size / 250_000)))
    vals = gray[::step, ::step][field[::step, ::step]]
    if vals.size == 0:
        vals = gray[field]
    return float(np.median(vals)) if vals.size else 0.0


def _assess(pl: _Planes, field: np.ndarray, glare: np.ndarray) -> QualityFlags:
    gray = pl.gray
    n_field = int(np.count_nonzero(field))
    coverage = n_field / field.size
    glare_fraction = float(np.count_nonzero(glare) / n_field) if n_field else 0.0
    score = focus_score(gray, field) if n_field else 0.0
    median = _field_median(gray, field) if n_field else 0.0
    in_focus = score >= FOCUS_THRESHOLD
    too_dark = median < TOO_DARK_LEVEL
    warnings: list[str] = []
    if not in_focus:
        warnings.append(
            f"photo looks out of focus (focus score {score:.4f} < {FOCUS_THRESHOLD}); "
            "counts and widths may be unreliable"
        )
    if too_dark:
        warnings.append(f"photo is too dark (median field brightness {median:.2f})")
    if glare_fraction > 0.05:
        warnings.append(f"glare covers {glare_fraction:.0%} of the field; it is not counted")
    if coverage < WARN_FIELD_COVERAGE:
        warnings.append(f"the analysable field covers only {coverage:.0%} of the photo")
    return QualityFlags(
        focus_score=score,
        in_focus=bool(in_focus),
        glare_fraction=glare_fraction,
        field_coverage=float(coverage),
        too_dark=bool(too_dark),
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Prepared:
    """A photo ready for segmentation.

    Attributes
    ----------
    rgb : numpy.ndarray
        Float32 (H, W, 3) illumination-flattened, skin-white-balanced RGB in [0, 1].
    gray : numpy.ndarray
        Float32 (H, W) luminance of ``rgb``.
    field : numpy.ndarray
        Bool (H, W) analysable field (overlays, bars and dark corners excluded).
    glare : numpy.ndarray
        Bool (H, W) glare inside the field; not counted.
    quality : QualityFlags
    original : numpy.ndarray
        Float32 (H, W, 3) input RGB as read (for colour-based stages and overlays).
    bubbles : tuple of Bubble
        Air bubbles found in the field (:func:`find_bubbles`); their rims are not hairs.
    """

    rgb: np.ndarray
    gray: np.ndarray
    field: np.ndarray
    glare: np.ndarray
    quality: QualityFlags
    original: np.ndarray = dc_field(repr=False, default=None)  # type: ignore[assignment]
    bubbles: tuple[Bubble, ...] = ()

    @property
    def counted_area(self) -> np.ndarray:
        """Field minus glare: the pixels whose area counts for density."""
        return self.field & ~self.glare


def _check_blank(gray: np.ndarray) -> None:
    """Refuse photos with nothing to see (black, white, or one flat colour)."""
    usable = (gray > 0.03) & (gray < 0.97)
    if usable.mean() < MIN_FIELD_COVERAGE:
        kind = "black (underexposed or lens cap on)" if gray.mean() < 0.5 else "white (overexposed)"
        raise InputError(
            f"the photo is almost entirely {kind}; nothing to analyse — retake it with the "
            "dermatoscope on the scalp and correct exposure"
        )
    if float(gray.std()) < 0.002:
        raise InputError(
            "the photo is one uniform colour; nothing to analyse — check that the right file "
            "was given"
        )


def prepare(image: ImageSource | np.ndarray) -> Prepared:
    """Read (if needed) and prepare a photo: field, flattened colour, glare, quality.

    Parameters
    ----------
    image : path, bytes or numpy.ndarray
        Anything :func:`trichoscan.io.read_image` accepts.

    Returns
    -------
    Prepared

    Raises
    ------
    ImageReadError, InputError
        Unreadable input; blank (black/white/uniform) photo; empty analysable field.
    """
    rgb = read_image(image)  # validates arrays too (NaN, range, shape), and copies
    pl = _planes(rgb)
    _check_blank(pl.gray)
    field = _find_field(pl)
    coverage = float(np.count_nonzero(field) / field.size)
    if coverage < MIN_FIELD_COVERAGE:
        raise InputError(
            f"the analysable scalp field covers only {coverage:.1%} of the photo (bars, "
            "overlays or dark corners cover the rest); nothing to analyse"
        )
    flat = flatten_illumination(rgb, field)
    gray = _luma(flat)
    glare = _glare_mask(pl, field)
    quality = _assess(pl, field, glare)
    for w in quality.warnings:
        logger.info("quality: %s", w)
    bubbles = tuple(find_bubbles(pl.gray, field))
    if bubbles:
        logger.info("%d air bubble(s) in the field; their rims are not counted", len(bubbles))
    return Prepared(
        rgb=flat,
        gray=gray,
        field=field,
        glare=glare,
        quality=quality,
        original=rgb,
        bubbles=bubbles,
    )
