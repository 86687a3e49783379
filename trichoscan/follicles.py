"""Exit ends: which end of each hair is the follicle end, decided from the photo.

The default counting rule counts a hair when its *exit point* (where the shaft leaves the
skin) lies in the analysed field, so every hair needs its exit end. The mask cannot tell
the two ends apart; the photo can. Cues, each a small pure function returning a signed
score per hair (positive favours end ``a``):

``continuation``
    Beyond the exit the shaft goes on under the skin as a fainter blue-grey streak along the
    same direction; beyond a cut or tapered tip lies plain skin.
``opening``
    The follicle opening: a darker (often pinkish) pit right at the exit.
``unit``
    Hairs of one follicular unit leave one opening in a V or Y: their shared end is the exit.
``taper``
    A hair is thickest where it leaves the skin; vellus hairs thin toward the tip.
    Measured, but given no weight (see ``_W_TAPER``).
``flow``
    Hairs of a region grow in a common direction, so the exit-to-tip vectors of neighbours
    agree. Used last, to settle hairs whose own evidence is weak.

The photo cues are combined into one logit per hair with weights fitted by logistic
regression on rendered photos (development seeds only), then the flow consensus adds the
neighbours' vote. Every hair gets a decision; ``'?'`` only for degenerate hairs (fewer than
two path points or no length).

An end cut by the field or image border cannot be probed: it reads as a typical end
(``_NEUTRAL_*``), so a hair with one end cut is decided by whether its inner end looks like
an exit, by its unit and by the flow — exactly the decision the ``"exit"`` counting rule
needs for hairs crossing the border.

All sampling is vectorised over every end at once (``cv2.remap`` on a half-size copy of the
photo, nearest-pixel lookups in the label and field masks); the only O(n²) step is the
flow kernel, cheap for the few hundred hairs of a photo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .counting import HairTable
from .errors import InputError

__all__ = ["ExitEstimate", "assign_exit_ends"]

log = logging.getLogger(__name__)

# Distances beyond an end (in units of the hair's width ``u``) at which the continuation is
# sampled, and the lateral offset (same units) of the skin reference on either side.
_CONT_STEPS = np.array([0.25, 0.75, 1.25, 1.75, 2.25, 3.0, 4.0, 5.0])
_NEAR_COUNT = 3  # usable points per end that count
_LATERAL = 4.0
_UNIT_MEET = 3.0  # ends of one unit closer than this many widths share an opening
# A point beyond an end darker than this fraction of the hair's own darkness is more shaft,
# not subsurface (checked only for hairs at least _SHAFT_MIN_DARK darker than skin).
_SHAFT_FRACTION = 0.6
_SHAFT_MIN_DARK = 0.25
_MIN_U = 2.0  # px: the unit of distance never drops below this (thin vellus hairs)

# Combination weights (logit per unit score). The photo cues' weights come from a logistic
# regression on 300 development renders (seeds 0-299, exact hair geometry). The unit and
# flow weights were then chosen by grid search on count_hairs output for development
# renders (seeds 0-99): units from mask junctions are far noisier than true units (6.5 on
# true geometry cost 12 points of accuracy there). The renderer's hair flow is nearly
# uniform across a photo, as in real 70x fields away from a whorl, and the flow weight is
# correspondingly strong.
_W_DARK = 4.2  # continuation darker than skin
_W_BLUE = 12.7  # continuation blue-grey
_W_OPEN = 0.35  # opening: darkness right at the end
_W_UNIT = 1.0  # shared end within a unit
# Taper is measured and reported but not used: on renders it helped the hair's own score
# yet cost final accuracy (0.949 -> 0.942 on true geometry, 0.943 -> 0.941 on count_hairs
# output), and on real FDU photos the visible exit end often looks *thinner* (the shaft
# dives obliquely into the skin), agreeing with the photo's flow on only 34 % of hairs.
_W_TAPER = 0.0  # thicker end
_W_FLOW = 7.0  # neighbours' consensus
# Flow neighbourhood: Gaussian sigma as a fraction of the photo's larger side (hair flow on
# the scalp turns over centimetres; a 70x field is a few millimetres), and vote rounds.
_FLOW_SIGMA = 0.6
_FLOW_ROUNDS = 3
# Per-end values assumed where an end cannot be probed (cut by the field or image border,
# or its continuation covered by other hairs): midway between tips and exits on renders,
# so a lone probed end is judged against what a typical end looks like.
_NEUTRAL_DARK = 0.083
_NEUTRAL_BLUE = 0.038
_NEUTRAL_OPEN = 0.104


@dataclass(frozen=True)
class ExitEstimate:
    """Exit-end decision per hair, with its confidence and the per-cue scores.

    Attributes
    ----------
    hairs : HairTable
        The input table with ``exit_end`` filled ('a' or 'b'; '?' for degenerate hairs).
    confidence : (n,) float64
        ``sigmoid(|score|)`` in [0.5, 1], read as the probability that the decision is
        right. On renders with exact hair geometry it is roughly calibrated above 0.99 and
        somewhat overconfident below (0.9-0.99 -> 87 % right); on detected hairs it is
        optimistic. 0.5 for degenerate hairs.
    score : (n,) float64
        Final logit; positive means end ``a`` is the exit. It is the sum of the photo cues'
        contributions below plus ``_W_FLOW * flow``.
    continuation, opening, unit : (n,) float64
        Each cue's contribution to the logit (positive favours end ``a``; 0 where the cue
        has no evidence), for diagnostics.
    taper : (n,) float64
        Relative width difference of the two end thirds in [-1, 1] (positive: end ``a``
        thicker). Reported for diagnostics only; it does not enter the decision.
    flow : (n,) float64
        The neighbours' consensus in [-1, 1] (positive: they say end ``a``).
    """

    hairs: HairTable
    confidence: np.ndarray
    score: np.ndarray
    continuation: np.ndarray
    opening: np.ndarray
    unit: np.ndarray
    taper: np.ndarray
    flow: np.ndarray


@dataclass(frozen=True)
class _Ends:
    """Geometry of both ends of every hair, stacked as rows [a_0..a_{n-1}, b_0..b_{n-1}]."""

    xy: np.ndarray  # (2n, 2) end point
    out: np.ndarray  # (2n, 2) unit vector pointing away from the hair
    u: np.ndarray  # (2n,) distance unit (px): the hair's width, at least _MIN_U
    valid: np.ndarray  # (n,) hair is not degenerate
    length: np.ndarray  # (n,) centre-line length (px)
    # All centre lines concatenated, with owner index and arc length from end a.
    pts: np.ndarray  # (N, 2)
    owner: np.ndarray  # (N,)
    arc: np.ndarray  # (N,)


def _concat_paths(paths: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All paths stacked: points (N, 2), owner hair index (N,), arc length from end a (N,)."""
    n = len(paths)
    arrs = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in paths]
    lens = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    if n == 0 or lens.sum() == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0)
    pts = np.concatenate(arrs)
    owner = np.repeat(np.arange(n), lens)
    seg = np.zeros(pts.shape[0])
    seg[1:] = np.hypot(*np.diff(pts, axis=0).T)
    starts = np.cumsum(lens) - lens
    seg[starts[lens > 0]] = 0.0  # no step across two hairs
    arc = np.cumsum(seg)
    arc -= arc[starts[owner]]
    return pts, owner, arc


def _point_at(pts: np.ndarray, key: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Interpolate (x, y) at monotone ``target`` keys along the concatenated centre lines."""
    return np.stack([np.interp(target, key, pts[:, 0]), np.interp(target, key, pts[:, 1])], 1)


def _end_geometry(hairs: HairTable) -> _Ends:
    """End points, outward directions and distance unit of both ends of every hair.

    The outward direction is the chord from a point about two widths inside the hair to
    the end: robust to the wobble of a skeleton's last pixels.
    """
    n = len(hairs)
    u = np.maximum(np.nan_to_num(np.asarray(hairs.width_px, dtype=np.float64)), _MIN_U)
    pts, owner, arc = _concat_paths(hairs.paths)
    counts = np.bincount(owner, minlength=n)
    length = np.zeros(n)
    np.maximum.at(length, owner, arc)
    valid = (counts >= 2) & (length > 0.5)
    xy = np.zeros((2 * n, 2))
    out = np.zeros((2 * n, 2))
    if valid.any():
        last = np.cumsum(counts) - 1
        first = last - counts + 1
        xy[:n][valid] = pts[first[valid]]
        xy[n:][valid] = pts[last[valid]]
        # Monotone key over all hairs (arc plus a per-hair offset) for one np.interp call.
        span = float(length.max()) + 1.0
        key = arc + owner * span
        reach = np.minimum(np.maximum(2.0 * u, 3.0), 0.5 * length)
        base = np.arange(n) * span
        inner_a = _point_at(pts, key, base + reach)
        inner_b = _point_at(pts, key, base + length - reach)
        out[:n] = xy[:n] - inner_a
        out[n:] = xy[n:] - inner_b
        out[:n][~valid] = 0.0
        out[n:][~valid] = 0.0
    norm = np.hypot(out[:, 0], out[:, 1])
    ok = norm > 1e-9
    out[ok] /= norm[ok, None]
    return _Ends(
        xy=xy,
        out=out,
        u=np.concatenate([u, u]),
        valid=valid,
        length=length,
        pts=pts,
        owner=owner,
        arc=arc,
    )


def _sample(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` (H, W, C) at points ``xy`` (..., 2); NaN outside."""
    shape = xy.shape[:-1]
    flat = xy.reshape(-1, 2)
    m = flat.shape[0]
    # cv2.remap wants maps under 32767 rows and columns: lay the points out in rows of 1024.
    cols = 1024
    rows = max(-(-m // cols), 1)
    maps = np.full((rows * cols, 2), -1.0, dtype=np.float32)
    maps[:m] = flat
    maps = maps.reshape(rows, cols, 2)
    vals = cv2.remap(img, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    vals = vals.reshape(rows * cols, -1)[:m].reshape(*shape, img.shape[2]).astype(np.float64)
    h, w = img.shape[:2]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)
    vals[~inside] = np.nan
    return vals


def _lookup(arr: np.ndarray, xy: np.ndarray, fill: object) -> np.ndarray:
    """Nearest-pixel lookup of a 2-D array at points ``xy``; ``fill`` outside the image."""
    h, w = arr.shape
    xi = np.rint(xy[..., 0]).astype(np.int64)
    yi = np.rint(xy[..., 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = np.full(xy.shape[:-1], fill, dtype=arr.dtype)
    out[inside] = arr[yi[inside], xi[inside]]
    return out


def _nanmean_axis1(x: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Mean over axis 1 ignoring NaN; NaN where fewer than ``min_count`` finite values."""
    ok = np.isfinite(x)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt >= min_count, tot / np.maximum(cnt, 1), np.nan)


def _hair_darkness(ends: _Ends, rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean luminance of each hair along its centre line (own-label points only), (n,)."""
    n = ends.valid.shape[0]
    out = np.full(n, np.nan)
    if ends.pts.shape[0] == 0:
        return out
    on = _lookup(labels, ends.pts, 0) == ends.owner + 1
    lum = _sample(rgb, ends.pts).mean(axis=-1)
    on &= np.isfinite(lum)
    cnt = np.bincount(ends.owner[on], minlength=n)
    tot = np.bincount(ends.owner[on], lum[on], minlength=n)
    has = cnt > 0
    out[has] = tot[has] / cnt[has]
    return out


def _end_probes(
    ends: _Ends,
    rgb_half: np.ndarray,
    labels: np.ndarray,
    field: np.ndarray,
    hair_lum: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-end photo evidence beyond each end, as (2n,) arrays (NaN where unprobed).

    Points on the centre line's extension are compared with skin ``±_LATERAL`` widths to
    the side. Points on any hair (the hair's own mask included, so the probe starts where
    the visible shaft really ends), outside the field or outside the image are dropped,
    and only the first ``_NEAR_COUNT`` usable points count: the subsurface shaft is
    darkest right at the exit and fades with depth. Colours are read from ``rgb_half``, the
    photo at half size (a 2x2 average: JPEG blocks and sensor noise otherwise dominate
    single-pixel samples); masks at full size.

    Returns
    -------
    dict
        ``dark``: luminance drop of the continuation relative to skin (~0 beyond a tip).
        ``blue``: its blue-grey tint (red and green drop more than blue), relative to skin.
        ``open``: the luminance drop at the first usable point, right at the end (the
        follicle opening).

    With ``hair_lum`` (each hair's own luminance), extension points nearly as dark as the
    hair itself are dropped as well: that is more shaft the mask missed (a gap in a
    fragmented detection), not the fainter subsurface part.
    """
    perp = np.stack([-ends.out[:, 1], ends.out[:, 0]], axis=1)
    lat = (_LATERAL * ends.u)[:, None, None] * perp[:, None, :]
    d = _CONT_STEPS[None, :, None] * ends.u[:, None, None]
    centre = ends.xy[:, None, :] + d * ends.out[:, None, :]
    pts = np.concatenate([centre, centre + lat, centre - lat], axis=1)  # (m, 3k, 2)
    vals = _sample(rgb_half, 0.5 * pts - 0.25)  # full-res (x, y) -> half-res pixel grid
    lab = _lookup(labels, pts, 0)
    fld = _lookup(field, pts, False)
    k = len(_CONT_STEPS)
    c, side = vals[:, :k], vals[:, k:]
    ok_side = (lab[:, k:] == 0) & fld[:, k:]
    # Skin: one robust reference per end from all clean lateral samples along the probe.
    skin = _nanmedian_axis1(np.where(ok_side[..., None], side, np.nan))  # (m, 3)
    # Usable extension points: off every hair, inside the field; keep the first few.
    ok = (lab[:, :k] == 0) & fld[:, :k] & np.isfinite(c[..., 0])
    skin_lum = np.maximum(skin.mean(axis=1), 1e-3)[:, None]
    if hair_lum is not None:
        hl = np.concatenate([hair_lum, hair_lum])[:, None]
        hair_dark = (skin_lum - hl) / skin_lum  # NaN for unread hairs: no filtering
        with np.errstate(invalid="ignore"):
            pt_dark = (skin_lum - c.mean(axis=2)) / skin_lum
            still_hair = (hair_dark > _SHAFT_MIN_DARK) & (pt_dark > _SHAFT_FRACTION * hair_dark)
        ok &= ~still_hair
    rank = np.cumsum(ok, axis=1)
    first = ok & (rank == 1)
    ok &= rank <= _NEAR_COUNT
    cc = np.where(ok[..., None], c - skin[:, None, :], np.nan)  # (m, k, 3)
    with np.errstate(invalid="ignore"):
        dark = -cc.mean(axis=2) / skin_lum
        blue = (cc[..., 2] - 0.5 * (cc[..., 0] + cc[..., 1])) / skin_lum
    return {
        "dark": _nanmean_axis1(dark, min_count=2),
        "blue": _nanmean_axis1(blue, min_count=2),
        "open": _nanmean_axis1(np.where(first, dark, np.nan)),
    }


def _nanmedian_axis1(x: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN, for arrays (m, k) or (m, k, c); NaN where empty."""
    srt = np.sort(x, axis=1)
    cnt = np.isfinite(srt).sum(axis=1)  # (m,) or (m, c)
    lo = np.maximum((cnt - 1) // 2, 0)
    hi = np.maximum(cnt // 2, 0)
    med = 0.5 * (
        np.take_along_axis(srt, lo[:, None], axis=1)[:, 0]
        + np.take_along_axis(srt, hi[:, None], axis=1)[:, 0]
    )
    return np.where(cnt > 0, med, np.nan)


def _pair_score(per_end: np.ndarray, n: int, neutral: float) -> np.ndarray:
    """Signed score a-minus-b from a (2n,) per-end value; unprobed ends read ``neutral``."""
    v = np.where(np.isfinite(per_end), per_end, neutral)
    both_missing = ~np.isfinite(per_end[:n]) & ~np.isfinite(per_end[n:])
    s = v[:n] - v[n:]
    s[both_missing] = 0.0
    return s


def _unit_score(ends: _Ends, unit_id: np.ndarray) -> np.ndarray:
    """V/Y cue: in a unit of several hairs, the end nearest the other hairs' ends is the exit.

    Score in [-1, 1]: (d_b - d_a) / (d_a + d_b + u), where d_e is the distance from end e to
    the nearest end of another hair of the same unit (+ u: ends within a width of each
    other are near-ties, not certainties).
    """
    n = unit_id.shape[0]
    score = np.zeros(n)
    hairs = np.flatnonzero(ends.valid)
    if hairs.size < 2:
        return score
    # Units as padded groups: (G, k) hair indices, -1 padding; pairs only inside a group.
    uid = unit_id[hairs]
    order = np.argsort(uid, kind="stable")
    hairs, uid = hairs[order], uid[order]
    _, start, size = np.unique(uid, return_index=True, return_counts=True)
    multi = size >= 2
    if not multi.any():
        return score
    start, size = start[multi], size[multi]
    k = int(size.max())
    col = np.arange(k)
    idx = start[:, None] + col[None, :]
    present = col[None, :] < size[:, None]
    grp = np.where(present, hairs[np.minimum(idx, hairs.size - 1)], -1)  # (G, k)
    safe = np.maximum(grp, 0)
    xa, xb = ends.xy[:n][safe], ends.xy[n:][safe]  # (G, k, 2)
    others = np.concatenate([xa, xb], axis=1)  # (G, 2k, 2): every end of the group
    other_hair = np.concatenate([grp, grp], axis=1)

    def nearest(e: np.ndarray) -> np.ndarray:
        d = np.hypot(*(e[:, :, None, :] - others[:, None, :, :]).transpose(3, 0, 1, 2))
        bad = (other_hair[:, None, :] == grp[:, :, None]) | (other_hair[:, None, :] < 0)
        return np.where(bad, np.inf, d).min(axis=2)

    # Ends cut by the field border stay in: hairs leaving one opening cross the border
    # side by side when their exits lie outside, so their cut ends still meet.
    da, db = nearest(xa), nearest(xb)
    uu = ends.u[:n][safe]
    val = (db - da) / (da + db + uu)
    # Only ends that really meet (within a few widths) make a shared opening.
    val[np.minimum(da, db) > _UNIT_MEET * uu] = 0.0
    score[grp[present]] = val[present]
    return score


def _taper_score(ends: _Ends, labels: np.ndarray) -> np.ndarray:
    """Taper cue: relative width difference between the two end thirds (a thicker -> +).

    Widths are read across the hair at three stations in each end third (the last width
    before each end skipped: rounded tips, skeleton end effects) by counting the hair's own
    label along a perpendicular sampled every ``u/8``.
    """
    n = ends.valid.shape[0]
    score = np.zeros(n)
    idx = np.flatnonzero(ends.valid & (ends.length > 4.0 * ends.u[:n]))
    if idx.size == 0:
        return score
    u = ends.u[idx]
    length = ends.length[idx]
    span = float(ends.length.max()) + 1.0
    key = ends.arc + ends.owner * span
    frac = np.array([0.0, 0.5, 1.0])
    lo, hi = u, np.maximum(length / 3.0, u)
    s_a = lo[:, None] + frac[None, :] * (hi - lo)[:, None]  # (h, 3) arc of the stations
    s_b = length[:, None] - s_a
    base = (idx * span)[:, None]
    station = _point_at(ends.pts, key, np.concatenate([base + s_a, base + s_b], 1).ravel())
    station = station.reshape(idx.size, 6, 2)
    axis = ends.xy[n:][idx] - ends.xy[:n][idx]
    axis /= np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-9)[:, None]
    perp = np.stack([-axis[:, 1], axis[:, 0]], 1)
    steps = np.arange(-16, 17) / 8.0  # +- 2 widths across
    off = (u[:, None] * steps[None, :])[:, None, :, None] * perp[:, None, None, :]
    probe = station[:, :, None, :] + off  # (h, 6, 33, 2)
    on = _lookup(labels, probe, 0) == (idx + 1)[:, None, None]
    width = on.sum(axis=2) * (u / 8.0)[:, None]  # (h, 6)
    wa, wb = width[:, :3].mean(axis=1), width[:, 3:].mean(axis=1)
    ok = wa + wb > 0
    score[idx[ok]] = np.clip((wa[ok] - wb[ok]) / (0.5 * (wa[ok] + wb[ok])), -1.0, 1.0)
    return score


def _flow_consensus(
    ends: _Ends, logit: np.ndarray, n: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hair-flow consensus: neighbours' exit-to-tip directions vote on each hair.

    Each hair's vote is its a->b unit vector signed and weighted by ``tanh(logit / 2)`` (how
    sure its own evidence is); the consensus at hair ``i`` is the Gaussian-weighted mean of
    the other hairs' votes projected on ``i``'s axis, in [-1, 1]. Iterated so confident
    hairs settle uncertain ones. Returns (consensus, final logit).
    """
    flow = np.zeros(n)
    if n < 2:
        return flow, logit
    va = ends.xy[n:] - ends.xy[:n]  # a -> b chord
    norm = np.hypot(va[:, 0], va[:, 1])
    axis = np.where(norm[:, None] > 1e-9, va / np.maximum(norm, 1e-9)[:, None], 0.0)
    centre = 0.5 * (ends.xy[:n] + ends.xy[n:])
    d2 = ((centre[:, None, :] - centre[None, :, :]) ** 2).sum(-1)
    kern = np.exp(-0.5 * d2 / sigma**2)
    np.fill_diagonal(kern, 0.0)
    kern *= ends.valid[None, :]
    kern /= np.maximum(kern.sum(axis=1), 1e-9)[:, None]
    own = logit.copy()
    cur = logit
    for _ in range(_FLOW_ROUNDS):
        vote = np.tanh(0.5 * cur)[:, None] * axis  # signed exit->tip direction
        flow = np.einsum("ij,ij->i", kern @ vote, axis)
        cur = own + _W_FLOW * np.clip(flow, -1.0, 1.0)
    return np.clip(flow, -1.0, 1.0), cur


def assign_exit_ends(
    hairs: HairTable, rgb: np.ndarray, field: np.ndarray | None = None
) -> ExitEstimate:
    """Decide the exit (follicle) end of every hair from the photo.

    Parameters
    ----------
    hairs : HairTable
        Hair instances (``paths``, ``width_px``, ``unit_id``, ``labels`` are used).
    rgb : (H, W, 3) float array in [0, 1]
        The illumination-flattened photo, same size as ``hairs.labels``.
    field : (H, W) bool array, optional
        The analysed field; evidence outside it (overlays, vignette) is ignored. The whole
        image when omitted.

    Returns
    -------
    ExitEstimate
        The table with ``exit_end`` filled, a confidence per hair and the per-cue scores.

    Raises
    ------
    InputError
        ``rgb`` or ``field`` does not match the size of ``hairs.labels``.
    """
    rgb = np.asarray(rgb)
    labels = np.asarray(hairs.labels)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != labels.shape:
        raise InputError(f"rgb must be (H, W, 3) matching labels {labels.shape}, got {rgb.shape}")
    if field is None:
        field = np.ones(labels.shape, dtype=bool)
    else:
        field = np.asarray(field, dtype=bool)
        if field.shape != labels.shape:
            raise InputError(f"field must have shape {labels.shape}, got {field.shape}")
    n = len(hairs)
    if n == 0:
        z = np.zeros(0)
        return ExitEstimate(hairs.with_exit_ends(np.zeros(0, dtype="<U1")), z, z, z, z, z, z, z)

    h, w = labels.shape
    img = np.ascontiguousarray(rgb, dtype=np.float32)
    half = cv2.resize(img, (max(w // 2, 1), max(h // 2, 1)), interpolation=cv2.INTER_AREA)
    ends = _end_geometry(hairs)
    probes = _end_probes(ends, half, labels, field, _hair_darkness(ends, img, labels))
    s_dark = _pair_score(probes["dark"], n, _NEUTRAL_DARK)
    s_blue = _pair_score(probes["blue"], n, _NEUTRAL_BLUE)
    s_open = _pair_score(probes["open"], n, _NEUTRAL_OPEN)
    s_unit = _unit_score(ends, np.asarray(hairs.unit_id))
    s_taper = _taper_score(ends, labels)
    continuation = _W_DARK * s_dark + _W_BLUE * s_blue
    own = continuation + _W_OPEN * s_open + _W_UNIT * s_unit + _W_TAPER * s_taper
    sigma = _FLOW_SIGMA * float(max(labels.shape))
    flow, logit = _flow_consensus(ends, own, n, sigma)

    logit[~ends.valid] = 0.0
    exit_end = np.where(logit >= 0, "a", "b").astype("<U1")
    exit_end[~ends.valid] = "?"
    conf = 1.0 / (1.0 + np.exp(-np.abs(logit)))
    conf[~ends.valid] = 0.5
    log.debug("exit ends: %d hairs, mean confidence %.2f", n, float(conf.mean()))
    return ExitEstimate(
        hairs=hairs.with_exit_ends(exit_end),
        confidence=conf,
        score=logit,
        continuation=continuation,
        opening=_W_OPEN * s_open,
        unit=_W_UNIT * s_unit,
        taper=s_taper,
        flow=flow,
    )
