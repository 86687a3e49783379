"""Counting core: a binary hair mask -> hair instances with length and width.

mask -> skeleton -> junctions/endpoints -> branches -> hairs (crossings resolved)
-> per-hair length and width. Takes any mask and knows no model or photo.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .calibration import validate_um_per_px
from .errors import InputError

__all__ = ["HairTable", "count_hairs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class HairTable:
    """Per-hair columns, one row per hair. Schema frozen: sessions and reports rely on it.

    Attributes
    ----------
    hair_id : (n,) int32
        1-based id; equals the hair's value in ``labels``.
    length_px, width_px, width_sd_px : (n,) float64
        Centre-line length including tip offsets, mean width (mask area / length, junction
        zones excluded) and the SD of the width along the hair, in pixels. The pipeline
        replaces the mask width by the photo's cross-profile width where it can measure
        one (:mod:`trichoscan.profiles`; ``Analysis.width_from_photo`` says where).
    end_a_xy, end_b_xy : (n, 2) float64
        The two ends of the hair's centre line, (x, y) in pixels.
    exit_end : (n,) <U1
        'a' or 'b' for the end where the shaft leaves the skin (the follicle end), '?' when
        unknown. The counting core leaves '?'; the photo-aware stage fills it in.
    unit_id : (n,) int32
        Follicular unit: hairs leaving one opening (V, Y, bundles) share a unit id.
    bundle_size : (n,) int32
        Number of hairs this mask shaft stands for (1 normally; 2-3 for a bundle of hairs
        lying side by side that looks like one thick shaft).
    labels : (H, W) int32
        Instance label image: the hair_id owning each mask pixel, 0 for background.
    paths : tuple of (k, 2) float64 arrays
        Ordered centre line of each hair from end a to end b, (x, y) in pixels.
    um_per_px : float or None
        Scale, when known; enables the µm columns.
    mask_width_px : (n,) float64 or None
        The mask width, kept when ``width_px`` was replaced (:meth:`with_widths`); ``None``
        while ``width_px`` is the mask width. Rules about the mask's geometry (cut ends,
        hidden ends, tracing a shaft on the mask) use :attr:`edge_width_px`.
    """

    hair_id: np.ndarray
    length_px: np.ndarray
    width_px: np.ndarray
    width_sd_px: np.ndarray
    end_a_xy: np.ndarray
    end_b_xy: np.ndarray
    exit_end: np.ndarray
    unit_id: np.ndarray
    bundle_size: np.ndarray
    labels: np.ndarray = field(repr=False)
    paths: tuple[np.ndarray, ...] = field(repr=False)
    um_per_px: float | None = None
    mask_width_px: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.hair_id.shape[0])

    @property
    def length_um(self) -> np.ndarray | None:
        """Length in µm, or ``None`` without scale."""
        return None if self.um_per_px is None else self.length_px * self.um_per_px

    @property
    def width_um(self) -> np.ndarray | None:
        """Mean width in µm, or ``None`` without scale."""
        return None if self.um_per_px is None else self.width_px * self.um_per_px

    @property
    def edge_width_px(self) -> np.ndarray:
        """(n,) width of each hair's mask: the geometry of the mask and centre line."""
        return self.width_px if self.mask_width_px is None else self.mask_width_px

    @property
    def exit_xy(self) -> np.ndarray:
        """(n, 2) exit point of each hair; NaN where the exit end is unknown."""
        out = np.full((len(self), 2), np.nan)
        is_a = self.exit_end == "a"
        is_b = self.exit_end == "b"
        out[is_a] = self.end_a_xy[is_a]
        out[is_b] = self.end_b_xy[is_b]
        return out

    def with_exit_ends(self, exit_end: np.ndarray) -> HairTable:
        """Return a copy with ``exit_end`` replaced (values 'a', 'b' or '?')."""
        exit_end = np.asarray(exit_end, dtype="<U1")
        if exit_end.shape != (len(self),) or not np.isin(exit_end, ["a", "b", "?"]).all():
            raise ValueError("exit_end must be one of 'a', 'b', '?' per hair")
        return replace(self, exit_end=exit_end)

    def with_widths(self, width_px: np.ndarray) -> HairTable:
        """Return a copy with ``width_px`` replaced (e.g. by widths measured on the photo)."""
        width_px = np.asarray(width_px, dtype=np.float64)
        if width_px.shape != (len(self),) or not np.isfinite(width_px).all():
            raise ValueError("width_px must hold one finite width per hair")
        return replace(self, width_px=width_px, mask_width_px=self.edge_width_px)

    def select(self, keep: np.ndarray) -> HairTable:
        """Return a table of the rows where ``keep`` is True, ids renumbered 1..k.

        Pixels of dropped hairs become background in ``labels``.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError("keep must hold one bool per hair")
        top = int(max(self.hair_id.max(initial=0), self.labels.max(initial=0)))
        lut = np.zeros(top + 1, dtype=np.int32)
        # Row i owns label hair_id[i]; map kept ids to 1..k in row order.
        lut[self.hair_id[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        return replace(
            self,
            hair_id=np.arange(1, int(keep.sum()) + 1, dtype=np.int32),
            length_px=self.length_px[keep],
            width_px=self.width_px[keep],
            width_sd_px=self.width_sd_px[keep],
            end_a_xy=self.end_a_xy[keep],
            end_b_xy=self.end_b_xy[keep],
            exit_end=self.exit_end[keep],
            unit_id=self.unit_id[keep],
            bundle_size=self.bundle_size[keep],
            mask_width_px=None if self.mask_width_px is None else self.mask_width_px[keep],
            labels=lut[self.labels],
            paths=tuple(p for p, k in zip(self.paths, keep, strict=True) if k),
        )

    def with_scale(self, um_per_px: float | None) -> HairTable:
        """Return a copy with the scale set (``None`` removes it)."""
        return replace(self, um_per_px=um_per_px)

    def to_records(self) -> list[dict]:
        """One plain dict per hair (JSON-ready), with µm columns when the scale is known."""
        length_um, width_um = self.length_um, self.width_um
        rows = []
        for i in range(len(self)):
            row = {
                "hair_id": int(self.hair_id[i]),
                "length_px": float(self.length_px[i]),
                "width_px": float(self.width_px[i]),
                "width_sd_px": float(self.width_sd_px[i]),
                "end_a_xy": [float(v) for v in self.end_a_xy[i]],
                "end_b_xy": [float(v) for v in self.end_b_xy[i]],
                "exit_end": str(self.exit_end[i]),
                "unit_id": int(self.unit_id[i]),
                "bundle_size": int(self.bundle_size[i]),
                "length_um": None if length_um is None else float(length_um[i]),
                "width_um": None if width_um is None else float(width_um[i]),
            }
            rows.append(row)
        return rows

    @classmethod
    def empty(cls, shape: tuple[int, int], um_per_px: float | None = None) -> HairTable:
        """A table with no hairs for a mask of ``shape``."""
        f = np.zeros(0, dtype=np.float64)
        i = np.zeros(0, dtype=np.int32)
        xy = np.zeros((0, 2), dtype=np.float64)
        return cls(
            hair_id=i,
            length_px=f,
            width_px=f.copy(),
            width_sd_px=f.copy(),
            end_a_xy=xy,
            end_b_xy=xy.copy(),
            exit_end=np.zeros(0, dtype="<U1"),
            unit_id=i.copy(),
            bundle_size=i.copy(),
            labels=np.zeros(shape, dtype=np.int32),
            paths=(),
            um_per_px=um_per_px,
        )


# --------------------------------------------------------------------------------------
# Algorithm constants (the plain-Python reference in benchmarks/reference_count.py uses
# the same values; change both together).
# --------------------------------------------------------------------------------------

#: Branches are paired across a junction only when their directions deviate from a straight
#: continuation by at most this many degrees.
PAIR_MAX_DEVIATION_DEG = 45.0
#: Weight of the relative width difference in the pairing cost, in degrees per unit.
PAIR_WIDTH_WEIGHT_DEG = 30.0
#: An internal branch joins its two junction clusters when its pixel count is at most this
#: factor times the sum of the clusters' radii (their inscribed discs overlap).
MERGE_FACTOR = 1.0
#: ... or, for the bridge between the two halves of a shallow X crossing, at most this factor
#: when the other two ends of each cluster continue straight (<= 45 deg) and in line (lateral
#: offset <= the larger radius) into the other cluster's ends.
BRIDGE_MAX_FACTOR = 8.0
#: A terminal branch is a spur when its pixel count is below this factor times the radius
#: of its junction zone (i.e. shorter than about one local width).
SPUR_FACTOR = 2.0
#: A path without a junction is split where it turns by more than this (a V's apex).
SPLIT_TURN_DEG = 45.0
#: Half-window (points) of the moving average that smooths centre lines before measuring.
SMOOTH_HALF_WINDOW = 3
#: A hair ending on another hair joins that hair's unit when the other hair's stretch from
#: the junction to its nearer end is at most this many of its widths (a Y's short stem).
STEM_MAX_WIDTHS = 6.0
#: Bundles: ratio cut-offs of width / typical width for 2 and 3 hairs.
BUNDLE_RATIO_2 = 1.8
BUNDLE_RATIO_3 = 3.0
#: Fewest hairs (length >= BUNDLE_MIN_ELONGATION widths) needed to estimate the typical width.
BUNDLE_MIN_HAIRS = 4
BUNDLE_MIN_ELONGATION = 3.0
#: Bundles, with a known scale: a shaft at least this wide (µm) is >= 2 hairs / 3 hairs
#: (single terminal hairs are 60-120 µm, most of them 60-90).
BUNDLE_MIN_UM_2 = 100.0
BUNDLE_MIN_UM_3 = 200.0
#: Bundles: a shaft whose width varies along it (width SD >= this fraction of its width:
#: hairs of a bundle that drift apart or end at different lengths) and that is at least
#: BUNDLE_UNEVEN_MIN_UM wide (with a scale; else at least the typical width) is >= 2 hairs.
BUNDLE_UNEVEN_SD = 0.12
BUNDLE_UNEVEN_MIN_UM = 60.0
#: Tip offsets: step (px) of the ray cast from a free end to the hair's tip.
#: A component whose skeleton has fewer pixels than this share of its bounding-box
#: diagonal is thinned again turned by 90 degrees (see ``_rethin_collapsed``).
RETHIN_FRACTION = 0.25
TIP_STEP = 1.0
TIP_FINE = 4

_OFFSETS8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def count_hairs(mask: np.ndarray, *, um_per_px: float | None = None) -> HairTable:
    """Find hair instances in a binary mask and measure their length and width.

    Parameters
    ----------
    mask : (H, W) array of bool or 0/1 numbers
        Hair mask, foreground = hair.
    um_per_px : float, optional
        Scale; when given, the table's µm columns are available.

    Returns
    -------
    HairTable
        One row per hair, sorted by end a (row, then column).

    Raises
    ------
    InputError
        If the mask is not 2-D, not binary, or has no background pixel at all.

    Notes
    -----
    The algorithm, exactly (``benchmarks/reference_count.py`` implements the same text in
    plain Python; the constants are the module's upper-case names):

    1. Skeleton: :func:`skimage.morphology.skeletonize`; an 8-connected mask component whose
       skeleton has fewer pixels than ``RETHIN_FRACTION`` of its bounding-box diagonal is
       thinned again turned by 90 degrees (its box, other components blanked), and that
       skeleton replaces the first when it has at least twice as many pixels (Zhang-Suen
       erases a staircase bar running down to the right). ``D``: exact Euclidean distance of
       each pixel centre to the nearest background pixel in the image (the image border is
       not background, so hairs cut by the border keep their width).
    2. Skeleton pixels with >= 3 skeleton 8-neighbours are junction pixels; their
       8-connected groups are junction clusters. The other skeleton pixels form branches
       (8-connected; each is a simple path or an isolated cycle), ordered from the end pixel
       of smaller raster index (a cycle: from its first pixel towards its smaller-index
       neighbour). Branch and cluster ids follow the raster order of their first pixel.
    3. A branch end attaches to the cluster of an adjacent junction pixel. Cluster radius
       ``R`` = max ``D`` over its pixels. An internal branch (both ends attached) is
       absorbed and its clusters merged (one union-find pass on the original radii) when it
       has at most ``MERGE_FACTOR * (R1 + R2)`` pixels, or at most ``BRIDGE_MAX_FACTOR *
       (R1 + R2)`` when it is the bridge of a shallow X: both clusters have exactly two other
       non-spur ends that continue straight and in line across it (see
       ``_is_crossing_bridge``). Merged centre = mean of the member junction pixels.
    4. A terminal branch (one end attached) with fewer than ``SPUR_FACTOR * R`` pixels is a
       spur and pruned (shorter than about one local width); a cluster that would lose all
       its branches keeps its longest.
    5. Pairing: at each cluster, ends are paired greedily by the cost ``deviation +
       PAIR_WIDTH_WEIGHT_DEG * |r1 - r2| / max(r1, r2)`` (rounded to 1e-6; ties by end
       order), only when ``deviation`` — the angle between one end's outward tangent and
       the reverse of the other's — is at most ``PAIR_MAX_DEVIATION_DEG``. Tangents come
       from about the last two widths of each branch (``_EndFrames``).
    6. Chains of paired branches are hairs; a path passing or ending at a cluster includes
       the cluster's centre. A path without a junction that turns by more than
       ``SPLIT_TURN_DEG`` is split at its sharpest turn (a V apex; ``_split_corners``).
       End a is the end first in raster order (row, column); ids sort by end a, end b.
    7. Length: the path smoothed by a moving average (``SMOOTH_HALF_WINDOW``, shrinking
       symmetrically at open ends), with each free end's last half width replaced by a ray
       cast to the mask's edge (``_tip_offsets``); the raw chain code is about 5 % long and
       angle dependent.
    8. Width: every mask pixel goes to its nearest skeleton pixel of its own 8-connected
       mask component (ties: smallest raster index). The pixels of a cluster that two or
       more hairs touch (with its absorbed branches and spurs) are the junction zone and
       count for no hair. Width = assigned area / the length share of the hair's owned
       path points. Width SD: population SD of ``2 D`` at the hair's skeleton points more
       than ``ceil(width / 2)`` points from its ends and junction centres (0 with fewer
       than 2 such points).
    9. Units: hairs ending at one cluster share a unit (V); a hair ending on another hair
       whose nearer end is at most ``STEM_MAX_WIDTHS`` of its widths away (a Y's stem) joins
       it; the two parts of a split V share one; other hairs (X, T) have their own.
    10. Bundles (hairs leaving one opening side by side that never separate in the mask;
        those that do separate are already split into hairs of one unit by steps 5-9). Per
        hair of width ``w``, width SD ``sd`` and, with a scale, ``u = w * um_per_px``;
        ``bundle_size`` is the largest of:

        a. Relative width: the typical terminal width ``W`` is the median width of the
           upper half (width >= their median) of the elongated hairs (width > 0, length >=
           ``BUNDLE_MIN_ELONGATION`` widths), when there are at least ``BUNDLE_MIN_HAIRS``
           of them (else there is no ``W`` and this gives 1): 3 when
           ``w / W >= BUNDLE_RATIO_3``, 2 when ``w / W >= BUNDLE_RATIO_2``, else 1.
        b. Physical width (scale known): 3 when ``u >= BUNDLE_MIN_UM_3``, 2 when
           ``u >= BUNDLE_MIN_UM_2`` (100 µm: wider than nearly all single terminal hairs),
           else 1. This holds when most shafts are bundles and ``W`` is itself a bundle
           width.
        c. Uneven width: 2 when ``w > 0`` and ``sd >= BUNDLE_UNEVEN_SD * w`` (the hairs of a
           bundle drift apart or end at different lengths, so its width steps or wedges
           along it) and the shaft is not thin: ``u >= BUNDLE_UNEVEN_MIN_UM`` with a scale,
           else ``W`` exists and ``w >= W``; else 1.

        Without a scale, a mask of nothing but bundles cannot be told from one of thick
        single hairs (``W`` is then a bundle width): only (c) can still find them. On the
        true masks of renders (seeds 200-299, scale known) the bundle size is right for
        70 % of the shafts that hold a hair (65 % with (a) alone at the former 1.6 / 2.5
        cut-offs) and the visible-hair count is off by a median 11.5 % (20.8 %).
    """
    return _count_hairs_staged(mask, um_per_px, None)


def _count_hairs_staged(
    mask: np.ndarray, um_per_px: float | None, stages: dict[str, float] | None
) -> HairTable:
    """:func:`count_hairs`, recording each stage's wall time (s) in ``stages`` when given.

    Stages: ``skeleton`` (with the mask-only work done meanwhile: the mask's pixel list and
    its chamfer transform), ``distance`` (the exact ``D`` at the skeleton pixels, and the wait
    for the chamfer bounds of the nearest-skeleton search, which a worker thread makes during
    ``graph`` and ``topology``), ``graph`` (junctions, branches, ordering), ``topology``
    (merging, spurs, pairing, chains) and ``measure`` (including the exact nearest-skeleton
    search over the mask pixels).
    """
    clock = time.perf_counter
    t0 = clock()
    m = _validate_mask(mask)
    if um_per_px is not None:
        um_per_px = validate_um_per_px(um_per_px)
    if not m.any():
        return HairTable.empty(m.shape, um_per_px)
    if m.all():
        raise InputError(
            "the mask is entirely foreground: no hair shapes can be separated; "
            "check the segmentation (is the mask inverted?)"
        )
    skel, skel_pix, mask_pix, chamfer = _skeleton_and_mask_scan(m)
    t1 = clock()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # OpenCV releases the GIL: the chamfer bounds of the nearest-skeleton search are
        # made in a worker thread while this one builds the graph
        near_job = pool.submit(_skeleton_distance2, skel, m, mask_pix)
        dist = _ExactDistance(m, skel_pix, chamfer)
        del chamfer
        t2 = clock()
        graph = _skeleton_graph(skel, skel_pix)
        t3 = clock()
        topo = _resolve_topology(graph, dist)
        hairs = _build_hairs(graph, topo)
        t4 = clock()
        near_d2 = near_job.result()
    t5 = clock()
    table = _measure(m, skel, dist, near_d2, graph, topo, hairs, um_per_px)
    t6 = clock()
    if stages is not None:
        stages.update(
            skeleton=t1 - t0,
            distance=(t2 - t1) + (t5 - t4),
            graph=t3 - t2,
            topology=t4 - t3,
            measure=t6 - t5,
        )
    logger.debug("count_hairs: %d hairs on a %dx%d mask", len(table), *m.shape)
    return table


def _skeleton_and_mask_scan(
    m: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton of ``m`` (uint8 0/1), its flat pixels, the mask's flat pixels, chamfer image.

    skimage's thinning releases the GIL, so it runs in a worker thread while this thread
    does the work that needs only the mask (see :func:`_mask_pixels`, :class:`_ExactDistance`).
    """
    import cv2
    from skimage.morphology import skeletonize  # heavy import, only when counting

    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(skeletonize, m.view(bool))
        pix = _mask_pixels(m)
        chamfer = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_5)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_32S)
        skel = job.result().view(np.uint8)
    skel_pix = _rethin_collapsed(skel, comp, stats)
    return skel, skel_pix, pix, chamfer


def _rethin_collapsed(skel: np.ndarray, comp: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Re-thin, in place, components whose skeleton the thinning all but erased.

    Zhang-Suen thinning erodes a straight staircase bar running down to the right (a 45
    degree hair rasterised without jitter) to a single pixel; the same bar turned by 90
    degrees thins correctly. A component whose skeleton has fewer pixels than
    ``RETHIN_FRACTION`` of its bounding-box diagonal is thinned again turned by 90 degrees
    (its crop, other components blanked), and that skeleton, turned back, replaces the
    first when it has at least twice as many pixels. Returns the skeleton's flat pixels.
    """
    from skimage.morphology import skeletonize

    sk_pix = _nonzero_flat(skel)
    n = stats.shape[0]
    if n <= 1:
        return sk_pix
    changed = False
    counts = np.bincount(comp.ravel()[sk_pix], minlength=n)
    diag = np.hypot(stats[:, 2], stats[:, 3])  # columns: x, y, width, height, area
    for c in np.flatnonzero(counts < RETHIN_FRACTION * diag).tolist():
        if c == 0:
            continue
        x, y, bw, bh = (int(v) for v in stats[c, :4])
        own = comp[y : y + bh, x : x + bw] == c
        turned = skeletonize(np.ascontiguousarray(np.rot90(own)))
        back = np.rot90(turned, -1)
        if int(back.sum()) >= 2 * int(counts[c]):
            box = skel[y : y + bh, x : x + bw]
            box[own] = back[own]
            changed = True
    return _nonzero_flat(skel) if changed else sk_pix


def _validate_mask(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` as a C-contiguous uint8 0/1 array, or raise :class:`InputError`."""
    if not isinstance(mask, np.ndarray):
        raise InputError(f"mask must be a NumPy array, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise InputError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.shape[0] < 1 or mask.shape[1] < 1:
        raise InputError(f"mask must not be empty, got shape {mask.shape}")
    if mask.dtype == bool:
        return np.ascontiguousarray(mask, dtype=np.uint8)
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise InputError(f"mask must be bool or 0/1 numbers, got dtype {mask.dtype}")
    if np.issubdtype(mask.dtype, np.integer):
        binary = mask.size == 0 or (mask.min() >= 0 and mask.max() <= 1)
    else:
        binary = bool(((mask == 0) | (mask == 1)).all())
    if not binary:
        raise InputError("mask must be binary: bool or numbers that are all 0 or 1")
    return np.ascontiguousarray(mask, dtype=np.uint8)


class _ExactDistance:
    """Exact Euclidean distance to the background, kept only at the skeleton pixels.

    Every later reading of ``D`` is at a skeleton pixel, so no full-image exact transform is
    made: a cheap chamfer transform bounds ``D**2`` from below and a lattice-circle search
    (:func:`_first_on_circles`) finds the exact integer ``D**2`` at the skeleton pixels only.
    """

    def __init__(
        self, m: np.ndarray, skel_pix: np.ndarray, chamfer: np.ndarray | None = None
    ) -> None:
        import cv2

        h, w = m.shape
        self._keys = skel_pix
        if chamfer is None:  # the 5x5 chamfer transform of ``m``, unless already made
            chamfer = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_5)
        cd = chamfer.ravel()[skel_pix]
        klo, pad = _chamfer_bounds(cd)
        # padded copy: outside the image is not background (hairs cut by the border)
        padded = cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=1)
        wp = w + 2 * pad
        q = (skel_pix // w + pad) * wp + (skel_pix % w + pad)
        k, _ = _first_on_circles(padded.ravel() == 0, q, klo, wp, w, want_offset=False)
        self._vals = np.sqrt(k.astype(np.float64))
        self._img = None
        top = int(k.max(initial=0))
        if top < 2**16:
            # a uint16 image of D**2 makes each reading one gather instead of a search
            self._img = np.zeros(h * w, dtype=np.uint16)
            self._img[skel_pix] = k
            self._root = np.sqrt(np.arange(top + 1, dtype=np.float64))

    def __getitem__(self, idx):
        """``D`` at skeleton pixel(s) ``idx`` (flat indices)."""
        if self._img is not None:
            return self._root[self._img[idx]]
        return self._vals[np.searchsorted(self._keys, idx)]


#: Bounds of OpenCV's 5x5 chamfer norm (1, 1.4, 2.1969) over the Euclidean norm (0.98247
#: and 1.01920), widened a little for its 16-bit fixed point and float32 output.
_CHAMFER5_LO = 0.98
_CHAMFER5_HI = 1.0193


def _chamfer_bounds(cd: np.ndarray) -> tuple[np.ndarray, int]:
    """Lower bound of the exact squared distance from 5x5 chamfer distances, and a pad.

    The chamfer distance ``c`` of a pixel is within [0.9825, 1.0192] times its Euclidean
    distance ``d`` (the transform is exact for the chamfer norm on the unobstructed image),
    so the integer ``d**2 >= ceil((c / 1.0193)**2)``; the pad covers ``d <= c / 0.98``.
    """
    c = cd.astype(np.float32)
    lo = np.ceil(np.square(c * np.float32(1.0 / _CHAMFER5_HI)) - np.float32(1e-4))
    top = float(c.max(initial=0.0))
    pad = int(math.ceil(top / _CHAMFER5_LO + 0.01)) + 2
    return lo.astype(np.int32), pad


def _first_on_circles(
    feat: np.ndarray,
    q: np.ndarray,
    klo: np.ndarray,
    wp: int,
    w: int,
    *,
    want_offset: bool,
    target: np.ndarray | None = None,
    kmax: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest feature pixel of each query pixel: exact squared distance and offset.

    Parameters
    ----------
    feat : 1-D bool array
        Feature pixels of an image padded so that every search stays inside it.
    q : 1-D int array
        Query pixels (flat indices into ``feat``).
    klo : 1-D int array
        A lower bound of each query's squared distance to the nearest feature.
    wp, w : int
        Row pitch of the padded image and width of the unpadded one.
    want_offset : bool
        Whether to return the offset of the nearest feature pixel.
    target : 1-D int array, optional
        Per query, the feature value that counts as a hit (``feat`` is then an int image);
        without it every nonzero ``feat`` pixel is a feature.
    kmax : int, optional
        Largest squared radius the padding covers; a search past it raises
        ``RuntimeError`` (default: half the padded image's height, squared).

    Returns
    -------
    k : ndarray of int32 or None
        The exact squared distance: the smallest ``k >= klo`` with a feature pixel on the
        lattice circle ``dy**2 + dx**2 = k`` (``None`` when the offset is asked for).
    offset : ndarray of int32 or None
        ``dy * w + dx`` (unpadded flat offset) of the first such feature pixel in raster
        order (ties: smallest raster index), when asked for.
    """
    n = q.shape[0]
    # only what is asked for is kept (memory: one int32 per query each)
    k_s = None if want_offset else np.empty(n, dtype=np.int32)
    off_s = np.empty(n, dtype=np.int32) if want_offset else None
    if n == 0:
        return np.zeros(0, dtype=np.int32), off_s
    # small integer keys: a stable sort of int16 is a radix sort
    key = klo.astype(np.int16) if klo.max() < 2**15 else klo
    order = np.argsort(key, kind="stable")
    del key
    if n < 2**31:
        order = order.astype(np.int32)
    qs = q[order]
    ts = None if target is None else target[order]
    counts = np.bincount(klo)
    bounds = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    groups = np.flatnonzero(counts).tolist()[::-1]  # a stack, smallest k on top
    # leftovers: queries whose lower bound was too low, carried to the next radius
    left_pos = np.zeros(0, dtype=np.int64)
    left_q = qs[:0]
    k = groups[-1]
    if kmax is None:
        kmax = ((feat.shape[0] // wp) // 2) ** 2  # the pad must cover every search
    while groups or left_pos.size:
        if not left_pos.size and groups[-1] > k:
            k = groups[-1]
        if k > kmax:
            raise RuntimeError("lattice-circle search ran past its padded image")
        circle = _circle_offsets(k)
        batches = []
        if groups and groups[-1] == k:
            groups.pop()
            a, b = int(bounds[k]), int(bounds[k + 1])
            batches.append((slice(a, b), qs[a:b], np.arange(a, b) if not circle else None))
        if left_pos.size:
            batches.append((left_pos, left_q, left_pos))
        new_pos, new_q = [], []
        for where, qb, pos in batches:
            if not circle:  # no lattice point at this radius: all carry over
                new_pos.append(pos)
                new_q.append(qb)
                continue
            tb = None if ts is None else ts[where]
            hit = _hits_on_circle(feat, qb, circle, wp, want_offset, tb)
            if want_offset:
                offs = np.array([dy * w + dx for dy, dx in circle] + [0], dtype=np.int32)
                off_s[where] = offs[hit]  # hit == -1 picks the sentinel; rewritten later
                miss = hit < 0
            else:
                miss = ~hit
                k_s[where] = k
            if miss.any():
                idx = np.flatnonzero(miss)
                base = where.start if isinstance(where, slice) else None
                new_pos.append(idx + base if base is not None else pos[idx])
                new_q.append(qb[idx])
        if new_pos:
            left_pos = np.concatenate(new_pos)
            left_q = np.concatenate(new_q)
        else:
            left_pos = left_pos[:0]
            left_q = left_q[:0]
        k += 1
    k_out = None
    if not want_offset:
        k_out = np.empty(n, dtype=np.int32)
        k_out[order] = k_s
    off_out = None
    if want_offset:
        off_out = np.empty(n, dtype=np.int32)
        off_out[order] = off_s
    return k_out, off_out


def _hits_on_circle(
    feat: np.ndarray,
    qb: np.ndarray,
    circle: tuple,
    wp: int,
    want_offset: bool,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Feature pixels on one lattice circle around each query.

    Returns the index of the first feature offset in raster order (-1 when none, int16)
    when ``want_offset``, else whether there is one (bool). With ``target`` a hit is a
    ``feat`` value equal to the query's target.
    """
    lo = min(dy * wp + dx for dy, dx in circle)
    qb = qb.astype(np.intp) + lo  # intp indices gather fastest; shifted views need no adds
    views = [feat[dy * wp + dx - lo :] for dy, dx in circle]

    def gather(v: np.ndarray) -> np.ndarray:  # bool: a feature pixel at each query's offset
        return v[qb] if target is None else v[qb] == target

    if not want_offset:
        found = gather(views[0])
        for v in views[1:]:
            np.logical_or(found, gather(v), out=found)
        return found
    best = np.full(qb.shape[0], -1, dtype=np.int16)
    ctz = _lowest_bit_table()
    # hits of up to 16 offsets packed into bits; the lowest set bit is the raster-first hit
    for c0 in range(0, len(circle), 16):
        acc = np.zeros(qb.shape[0], dtype=np.uint16)
        for j, v in enumerate(views[c0 : c0 + 16]):
            hit = gather(v).view(np.uint8).astype(np.uint16)
            acc |= hit << np.uint16(j)
        first = ctz[acc]
        if c0 == 0:
            best = first
            if len(circle) <= 16:
                break
        else:
            sel = (best < 0) & (first >= 0)
            best[sel] = first[sel] + c0
    return best


@functools.cache
def _lowest_bit_table() -> np.ndarray:
    """Index of the lowest set bit of every uint16 value (-1 for 0), int16."""
    v = np.arange(2**16, dtype=np.int64)
    low = v & -v
    out = np.full(2**16, -1, dtype=np.int16)
    out[1:] = np.log2(low[1:]).astype(np.int16)
    return out


@dataclass
class _Graph:
    """Skeleton graph: branches (ordered pixel runs) and junction clusters."""

    shape: tuple[int, int]
    order: np.ndarray  # flat pixel indices of all branches, each branch in path order
    offsets: np.ndarray  # (nb + 1,) start of each branch in ``order``
    is_cycle: np.ndarray  # (nb,) bool
    end_cluster: np.ndarray  # (nb, 2) cluster id attached to end 0 / end 1, -1 if free
    cluster_pixels: np.ndarray  # flat indices of junction pixels, grouped by cluster
    cluster_offsets: np.ndarray  # (nc + 1,)

    @property
    def n_branches(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_offsets.shape[0] - 1)


def _neighbour_count(skel: np.ndarray) -> np.ndarray:
    """Number of skeleton 8-neighbours of every pixel (uint8)."""
    import cv2

    # an unnormalised 3x3 box sum (separable, much faster than a general filter) minus
    # the pixel itself; sums <= 9 are exact in uint8
    box = cv2.boxFilter(skel, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return cv2.subtract(box, skel, dst=box)


def _relabel_by_first_pixel(
    flat: np.ndarray, labels: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort pixels by component so that ids follow each component's first raster pixel.

    ``flat``: the labelled pixels (flat indices, raster order); ``labels``: label image.

    Returns
    -------
    grouped : ndarray
        Flat indices of all labelled pixels grouped by the new id, raster order inside.
    offsets : (n + 1,) ndarray
        Start of each component in ``flat``.
    ids : ndarray
        New id of each input pixel (input order).
    """
    lab = labels.ravel()[flat.astype(np.intp)]
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    # flat ascends: the reversed assignment leaves each label's first pixel
    first[lab[::-1]] = flat[::-1]
    rank = np.empty(n + 1, dtype=np.int64)
    rank[np.argsort(first[1:], kind="stable") + 1] = np.arange(n)
    new = rank[lab]
    srt = np.argsort(new, kind="stable")
    counts = np.bincount(new, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat[srt], offsets, new


def _skeleton_graph(skel: np.ndarray, skel_pix: np.ndarray) -> _Graph:
    """Split the skeleton (pixels ``skel_pix``, raster order) into clusters and branches."""
    import cv2

    h, w = skel.shape
    deg = _neighbour_count(skel)
    is_junc = deg.ravel()[skel_pix.astype(np.intp)] >= 3  # pixel lists, not image scans
    junc = ((deg >= 3) & (skel > 0)).view(np.uint8)
    bran = skel - junc
    nj, lab = cv2.connectedComponents(junc, connectivity=8, ltype=cv2.CV_32S)
    jflat = skel_pix[is_junc].astype(np.int64)
    cpix, coff, jid = _relabel_by_first_pixel(jflat, lab, nj - 1)
    nbr, lab = cv2.connectedComponents(bran, connectivity=8, ltype=cv2.CV_32S)
    bflat = skel_pix[~is_junc].astype(np.int64)
    bpix, boff, brid = _relabel_by_first_pixel(bflat, lab, nbr - 1)
    # a branch pixel (<= 2 skeleton neighbours) is a branch end when it has <= 1 of them,
    # or when one is a junction pixel: no second full-image neighbour count needed
    near_junc = cv2.dilate(junc, np.ones((3, 3), np.uint8)).ravel()[bpix]
    is_end = (deg.ravel()[bpix] <= 1) | (near_junc > 0)
    del lab, deg, near_junc
    nb = nbr - 1
    # id look-ups by binary search in the raster-sorted pixel lists: no full-image id maps
    bids = _PixelIds(bflat, brid, (h, w))
    cids = _PixelIds(jflat, jid, (h, w))
    order, is_cycle = _order_branches(bran, bpix, boff, is_end, bids, w)
    end_cluster = _attach_ends(order, boff, cids, nb)
    return _Graph(
        shape=(h, w),
        order=order,
        offsets=boff,
        is_cycle=is_cycle,
        end_cluster=end_cluster,
        cluster_pixels=cpix,
        cluster_offsets=coff,
    )


class _PixelIds:
    """Component id of skeleton pixels, found by binary search in a raster-sorted list."""

    def __init__(self, flat: np.ndarray, ids: np.ndarray, shape: tuple[int, int]) -> None:
        self.flat = flat  # ascending flat indices
        self.ids = ids.astype(np.int64)
        self.shape = shape

    def at(self, flat: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
        """Id of the pixel at offset (dy, dx) from each pixel ``flat``; -1 where none."""
        h, w = self.shape
        y = flat // w + dy
        x = flat % w + dx
        q = y * w + x
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        n = self.flat.shape[0]
        if n == 0:
            return np.full(flat.shape[0], -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.flat, q), n - 1)
        hit = inside & (self.flat[pos] == q)
        return np.where(hit, self.ids[pos], -1)


def _pad_index(flat: np.ndarray, w: int) -> np.ndarray:
    """Flat indices of an (H, W) image -> flat indices of the image padded by one pixel."""
    return flat + 2 * (flat // w) + (w + 2) + 1


def _order_branches(
    bran: np.ndarray,
    bpix: np.ndarray,
    boff: np.ndarray,
    is_end: np.ndarray,
    bids: _PixelIds,
    w: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Order the pixels of each branch along its path.

    OpenCV's border following walks a one-pixel-wide path from one end to the other and
    back, so the ``n`` contour points after the path's start are the path in order. A path
    starts at its end pixel with the smaller raster index; a cycle at its first raster pixel,
    heading to its neighbour with the smaller raster index.
    """
    import cv2

    nb = boff.shape[0] - 1
    counts = np.diff(boff)
    branch_of_pix = np.repeat(np.arange(nb), counts)
    is_cycle = np.ones(nb, dtype=bool)
    is_cycle[branch_of_pix[is_end]] = False
    # start pixel: the first end pixel (pixels are in raster order inside a branch)
    start = bpix[boff[:-1]].copy()
    end_idx = np.flatnonzero(is_end)
    first_end = np.full(nb, -1, dtype=np.int64)
    # reversed assignment leaves the first (smallest raster) end pixel of each branch
    first_end[branch_of_pix[end_idx[::-1]]] = end_idx[::-1]
    has_end = first_end >= 0
    start[has_end] = bpix[first_end[has_end]]

    contours, hier = cv2.findContours(bran, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    outer = [c for c, hh in zip(contours, hier[0], strict=True) if hh[3] < 0]
    lens = np.array([c.shape[0] for c in outer], dtype=np.int64)
    pts = np.concatenate(outer).reshape(-1, 2).astype(np.int64)
    flat = pts[:, 1] * w + pts[:, 0]
    coff = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=coff[1:])
    cont_branch = bids.at(flat[coff[:-1]])
    point_contour = np.repeat(np.arange(lens.shape[0]), lens)
    hit = np.flatnonzero(flat == start[cont_branch[point_contour]])
    cont_of_hit = point_contour[hit]
    first_hit = np.full(lens.shape[0], -1, dtype=np.int64)
    first_hit[cont_of_hit[::-1]] = hit[::-1]
    # gather: branch b -> contour c, positions (first_hit + j) mod len for j < n_b
    branch_contour = np.empty(nb, dtype=np.int64)
    branch_contour[cont_branch] = np.arange(lens.shape[0])
    bc = branch_contour
    n_b = counts
    j = np.arange(bpix.shape[0]) - np.repeat(boff[:-1], n_b)
    pos = np.repeat(first_hit[bc] - coff[bc], n_b) + j
    pos = coff[bc].repeat(n_b) + pos % lens[bc].repeat(n_b)
    order = flat[pos]
    # cycles: make the second pixel the start's neighbour with the smaller raster index
    for b in np.flatnonzero(is_cycle & (n_b > 2)):
        s, e = boff[b], boff[b + 1]
        if order[s + 1] > order[e - 1]:
            order[s + 1 : e] = order[s + 1 : e][::-1].copy()
    return order, is_cycle


def _attach_ends(
    order: np.ndarray,
    boff: np.ndarray,
    cids: _PixelIds,
    nb: int,
) -> np.ndarray:
    """Cluster attached to each branch end (-1 when the end is a free tip).

    A one-pixel branch touching two junction pixels attaches end 0 to the junction pixel with
    the smaller raster index and end 1 to the other.
    """
    end_cluster = np.full((nb, 2), -1, dtype=np.int64)
    if nb == 0:
        return end_cluster
    first = order[boff[:-1]]
    last = order[boff[1:] - 1]
    single = (boff[1:] - boff[:-1]) == 1
    for dy, dx in _OFFSETS8:  # offsets ascend in raster order
        cf = cids.at(first, dy, dx)
        cl = cids.at(last, dy, dx)
        multi = ~single
        sel = multi & (cf >= 0)
        end_cluster[sel, 0] = cf[sel]
        sel = multi & (cl >= 0)
        end_cluster[sel, 1] = cl[sel]
        # single pixel: first junction neighbour -> end 0, second -> end 1
        sel0 = single & (cf >= 0) & (end_cluster[:, 0] < 0)
        sel1 = single & (cf >= 0) & (end_cluster[:, 0] >= 0) & (end_cluster[:, 1] < 0)
        end_cluster[sel1, 1] = cf[sel1]
        end_cluster[sel0, 0] = cf[sel0]
    return end_cluster


@dataclass
class _Topology:
    """Decisions on the skeleton graph: merges, spurs, pairing."""

    root: np.ndarray  # (nc,) merged cluster id (smallest member id) of each cluster
    radius: np.ndarray  # (nc,) radius of each merged cluster (valid at roots)
    centre: np.ndarray  # (nc, 2) (x, y) centre of each merged cluster (valid at roots)
    branch_r: np.ndarray  # (nb,) mean distance D over the branch pixels
    absorbed: np.ndarray  # (nb,) bool: internal branch absorbed into a junction zone
    pruned: np.ndarray  # (nb,) bool: spur
    end_root: np.ndarray  # (nb, 2) merged cluster at each end, -1 when free
    partner: dict  # (b, e) -> (b2, e2) paired ends
    n_ends: np.ndarray  # (nc,) number of kept branch ends at each merged cluster


def _find(parent: list[int], i: int) -> int:
    """Union-find root with path halving."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent: list[int], i: int, j: int) -> None:
    """Union keeping the smaller id as root (deterministic)."""
    ri, rj = _find(parent, i), _find(parent, j)
    if ri != rj:
        parent[max(ri, rj)] = min(ri, rj)


def _resolve_topology(g: _Graph, dist: _ExactDistance) -> _Topology:
    """Merge junction clusters, prune spurs and pair branch ends across junctions."""
    nb, nc = g.n_branches, g.n_clusters
    h, w = g.shape
    dflat = dist
    n_b = np.diff(g.offsets)
    branch_r = np.zeros(nb)
    if nb:
        branch_r = np.add.reduceat(dflat[g.order], g.offsets[:-1]) / n_b
    radius0 = np.zeros(nc)
    centre0 = np.zeros((nc, 2))
    n_c = np.diff(g.cluster_offsets)
    if nc:
        radius0 = np.maximum.reduceat(dflat[g.cluster_pixels], g.cluster_offsets[:-1])
    # 1. merge clusters joined by short internal branches, or by the bridge of a shallow X
    if nc:
        member0 = np.repeat(np.arange(nc), n_c)
        cp = g.cluster_pixels
        cnt0 = np.maximum(n_c, 1)
        centre_orig = np.stack(
            [
                np.bincount(member0, weights=(cp % w).astype(np.float64), minlength=nc) / cnt0,
                np.bincount(member0, weights=(cp // w).astype(np.float64), minlength=nc) / cnt0,
            ],
            axis=1,
        )
    else:
        centre_orig = np.zeros((0, 2))
    ef = _EndFrames(g, branch_r)
    ec = g.end_cluster
    short_terminal = ((ec[:, 0] >= 0) != (ec[:, 1] >= 0)) & (
        n_b < SPUR_FACTOR * np.append(radius0, 0.0)[np.max(ec, axis=1)]
    )
    # the non-spur ends at each original cluster, grouped by cluster in (branch, end) order
    b0, e0, _, cnt0 = _ends_by_cluster(ec, ~short_terminal, nc)
    b0, e0 = b0.tolist(), e0.tolist()
    off0 = np.concatenate([[0], np.cumsum(cnt0)]).tolist()

    def ends_at0(c: int) -> list[tuple[int, int]]:
        return list(zip(b0[off0[c] : off0[c + 1]], e0[off0[c] : off0[c + 1]], strict=True))

    internal = np.flatnonzero((ec[:, 0] >= 0) & (ec[:, 1] >= 0))
    c1s, c2s = ec[internal, 0], ec[internal, 1]
    rsum = radius0[c1s] + radius0[c2s]
    merge = n_b[internal] <= MERGE_FACTOR * rsum
    # cheap pre-checks (the three-ends condition among them) before the full bridge test
    maybe = (
        ~merge
        & (c1s != c2s)
        & (n_b[internal] <= BRIDGE_MAX_FACTOR * rsum)
        & (cnt0[c1s] == 3)
        & (cnt0[c2s] == 3)
    )
    centre_l = centre_orig.tolist()
    for k in np.flatnonzero(maybe).tolist():
        c1, c2 = int(c1s[k]), int(c2s[k])
        merge[k] = _is_crossing_bridge(
            g, ef, int(internal[k]), ends_at0(c1), ends_at0(c2), centre_l, radius0
        )
    absorbed = np.zeros(nb, dtype=bool)
    absorbed[internal[merge]] = True
    parent = list(range(nc))
    for c1, c2 in zip(c1s[merge].tolist(), c2s[merge].tolist(), strict=True):
        _union(parent, c1, c2)
    root = np.array([_find(parent, i) for i in range(nc)], dtype=np.int64)
    radius = np.zeros(nc)
    if nc:
        np.maximum.at(radius, root, radius0)
        # centre: mean of all junction pixels of the merged cluster
        cp = g.cluster_pixels
        member = np.repeat(root, n_c)
        sx = np.bincount(member, weights=(cp % w).astype(np.float64), minlength=nc)
        sy = np.bincount(member, weights=(cp // w).astype(np.float64), minlength=nc)
        cnt = np.bincount(member, minlength=nc)
        ok = cnt > 0
        centre0[ok, 0] = sx[ok] / cnt[ok]
        centre0[ok, 1] = sy[ok] / cnt[ok]
    end_root = np.where(ec >= 0, root[np.maximum(ec, 0)] if nc else -1, -1)
    # 2. prune spurs: terminal branches shorter than about one local width
    pruned = np.zeros(nb, dtype=bool)
    terminal = (~absorbed) & (~g.is_cycle) & ((end_root[:, 0] >= 0) != (end_root[:, 1] >= 0))
    term_c = np.where(end_root[:, 0] >= 0, end_root[:, 0], end_root[:, 1])
    spur = terminal & (n_b < SPUR_FACTOR * np.append(radius, 0.0)[term_c])
    pruned[spur] = True
    # a cluster keeps at least one branch: revive its longest spur if all were pruned
    kept_at = np.zeros(nc, dtype=np.int64)
    alive = ~absorbed & ~pruned
    for e in (0, 1):
        sel = alive & (end_root[:, e] >= 0)
        np.add.at(kept_at, end_root[sel, e], 1)
    best: dict[int, int] = {}
    for b in np.flatnonzero(spur).tolist():
        c = int(term_c[b])
        if kept_at[c] == 0 and (c not in best or n_b[b] > n_b[best[c]]):
            best[c] = b
    for b in best.values():
        pruned[b] = False
    alive = ~absorbed & ~pruned
    # 3. pair ends across each cluster
    n_ends, partner = _pair_ends(ef, end_root, alive, centre0, branch_r)
    return _Topology(
        root=root,
        radius=radius,
        centre=centre0,
        branch_r=branch_r,
        absorbed=absorbed,
        pruned=pruned,
        end_root=end_root,
        partner=partner,
        n_ends=n_ends,
    )


def _ends_by_cluster(
    end_cluster: np.ndarray, keep: np.ndarray, nc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Branch ends at clusters, grouped by cluster, in (branch, end) order inside each.

    Parameters
    ----------
    end_cluster : (nb, 2) int array
        Cluster at each end of each branch, -1 for a free end.
    keep : (nb,) bool array
        Branches taking part.
    nc : int
        Number of clusters.

    Returns
    -------
    branch, end, cluster : (m,) int arrays
        The ends, sorted by cluster (stable).
    count : (nc,) int64
        Ends per cluster.
    """
    b, e = np.nonzero(keep[:, None] & (end_cluster >= 0))
    c = end_cluster[b, e]
    srt = np.argsort(c, kind="stable")
    return b[srt], e[srt], c[srt], np.bincount(c, minlength=nc).astype(np.int64)


def _pair_ends(
    ef: _EndFrames,
    end_root: np.ndarray,
    alive: np.ndarray,
    centre: np.ndarray,
    branch_r: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """Pair the kept branch ends at each merged cluster (step 5 of :func:`count_hairs`).

    The deviation of every candidate pair is first computed at once with NumPy, with a
    margin, only to drop pairs that are clearly too bent; the pairs left get the exact
    scalar arithmetic of the definition, so ties and rounding are unchanged.

    Returns
    -------
    n_ends : (nc,) int64
        Number of kept ends at each cluster.
    partner : dict
        ``(b, e) -> (b2, e2)`` for both ends of every pair.
    """
    nc = centre.shape[0]
    # all kept ends at clusters, grouped by cluster, in (branch, end) order inside
    bi, ei, ci, n_ends = _ends_by_cluster(end_root, alive, nc)
    partner: dict[tuple[int, int], tuple[int, int]] = {}
    m = bi.shape[0]
    if m < 2:
        return n_ends, partner
    dx, dy, ok = ef.dx[ei, bi], ef.dy[ei, bi], ef.ok[ei, bi]
    for k in np.flatnonzero(ef.single_arr[bi]).tolist():  # one-pixel branches: scalar maths
        f = ef.get(int(bi[k]), int(ei[k]), centre[ci[k]])
        ok[k] = f is not None
        dx[k], dy[k] = f[1] if f is not None else (0.0, 0.0)
    # every pair (i, j), i < j, of ends at one cluster
    grp_end = np.cumsum(n_ends)[ci]
    later = grp_end - np.arange(m) - 1
    i = np.repeat(np.arange(m), later)
    first = np.cumsum(later) - later
    j = i + 1 + (np.arange(i.shape[0]) - np.repeat(first, later))
    dot = -(dx[i] * dx[j] + dy[i] * dy[j])
    rough = np.degrees(np.arccos(np.clip(dot, -1.0, 1.0)))
    keep = ok[i] & ok[j] & (rough <= PAIR_MAX_DEVIATION_DEG + 1e-6)
    i, j, dot = i[keep].tolist(), j[keep].tolist(), dot[keep].tolist()
    ends = list(zip(bi.tolist(), ei.tolist(), strict=True))
    cl = ci.tolist()
    rlist = branch_r.tolist()
    by_cluster: dict[int, list[tuple[float, int, int]]] = {}
    for a, z, d in zip(i, j, dot, strict=True):
        dev = math.degrees(math.acos(min(1.0, max(-1.0, d))))
        if dev > PAIR_MAX_DEVIATION_DEG:
            continue
        ra, rz = rlist[ends[a][0]], rlist[ends[z][0]]
        wdiff = abs(ra - rz) / max(ra, rz) if max(ra, rz) > 0 else 0.0
        cost = round(dev + PAIR_WIDTH_WEIGHT_DEG * wdiff, 6)
        by_cluster.setdefault(cl[a], []).append((cost, a, z))
    for pairs in by_cluster.values():
        pairs.sort()  # ties by end order: global indices keep the in-cluster order
        taken = set()
        for _, a, z in pairs:
            if a in taken or z in taken:
                continue
            taken.update((a, z))
            partner[ends[a]] = ends[z]
            partner[ends[z]] = ends[a]
    return n_ends, partner


def _is_crossing_bridge(
    g: _Graph,
    ef: _EndFrames,
    bridge: int,
    ends1: list[tuple[int, int]],
    ends2: list[tuple[int, int]],
    centre: list,
    radius: np.ndarray,
) -> bool:
    """Whether ``bridge`` joins the two three-way halves of one X crossing.

    True when each cluster has exactly two other (non-spur) ends and they pair one-to-one
    across the bridge, each pair straight (deviation <= ``PAIR_MAX_DEVIATION_DEG``) and in line
    (each tangent base point within the larger radius of the other end's tangent line).
    """
    o1 = [x for x in ends1 if x[0] != bridge]
    o2 = [x for x in ends2 if x[0] != bridge]
    if len(o1) != 2 or len(o2) != 2 or len(ends1) != 3 or len(ends2) != 3:
        return False
    c1 = int(g.end_cluster[o1[0][0], o1[0][1]])
    c2 = int(g.end_cluster[o2[0][0], o2[0][1]])
    tol = max(radius[c1], radius[c2])
    info1 = [ef.get(b, e, centre[c1]) for b, e in o1]
    info2 = [ef.get(b, e, centre[c2]) for b, e in o2]

    def ok(a: tuple | None, z: tuple | None) -> bool:
        if a is None or z is None:
            return False
        (pa, da), (pz, dz) = a, z
        dot = -(da[0] * dz[0] + da[1] * dz[1])
        if math.degrees(math.acos(min(1.0, max(-1.0, dot)))) > PAIR_MAX_DEVIATION_DEG:
            return False
        vx, vy = pz[0] - pa[0], pz[1] - pa[1]
        lat_a = abs(da[0] * vy - da[1] * vx)
        lat_z = abs(dz[0] * vy - dz[1] * vx)
        return max(lat_a, lat_z) <= tol

    straight = ok(info1[0], info2[0]) and ok(info1[1], info2[1])
    crossed = ok(info1[0], info2[1]) and ok(info1[1], info2[0])
    return straight or crossed


class _EndFrames:
    """Tangent base point and outward unit tangent of every branch end, precomputed.

    An end's tangent runs from branch point ``k0 = ceil(r)`` to point ``k1 = k0 + ceil(4 r)``
    counted from the end (clipped to the branch; ``k0 = 0`` when they coincide), ``r`` the
    branch's mean ``D``: about the last two widths, skipping the half width bent by the
    junction. A one-pixel branch points away from the junction centre it is measured from.
    """

    def __init__(self, g: _Graph, branch_r: np.ndarray) -> None:
        w = g.shape[1]
        n = np.diff(g.offsets)
        s, t = g.offsets[:-1], g.offsets[1:]
        k0 = np.minimum(n - 1, np.ceil(branch_r).astype(np.int64))
        k1 = np.minimum(n - 1, k0 + np.ceil(4 * branch_r).astype(np.int64))
        k0 = np.where(k1 == k0, 0, k0)
        self.single_arr = k1 == k0
        self.single = self.single_arr.tolist()
        xs = (g.order % w).astype(np.float64)
        ys = (g.order // w).astype(np.float64)
        nb = n.shape[0]
        # (2, nb) arrays, end 0 then end 1; direction (0, 0) and ok False where undefined
        self.dx, self.dy = np.zeros((2, nb)), np.zeros((2, nb))
        self.ok = np.zeros((2, nb), dtype=bool)
        bx, by = np.zeros((2, nb)), np.zeros((2, nb))
        for e in (0, 1):
            i0 = s + k0 if e == 0 else t - 1 - k0
            i1 = s + k1 if e == 0 else t - 1 - k1
            vx, vy = xs[i1] - xs[i0], ys[i1] - ys[i0]
            norm = np.hypot(vx, vy)
            ok = norm > 0
            np.divide(vx, norm, out=self.dx[e], where=ok)
            np.divide(vy, norm, out=self.dy[e], where=ok)
            self.ok[e] = ok
            bx[e], by[e] = xs[i0], ys[i0]
        # plain lists for the scalar look-ups of :meth:`get`
        self._lists = (bx.tolist(), by.tolist(), self.dx.tolist(), self.dy.tolist())
        self._ok = self.ok.tolist()

    def get(self, b: int, e: int, centre: Sequence[float]) -> tuple | None:
        """(base point, direction) of branch ``b`` at end ``e``, or ``None`` if undefined."""
        bx, by, dx, dy = self._lists
        p = (bx[e][b], by[e][b])
        if not self.single[b]:
            return (p, (dx[e][b], dy[e][b])) if self._ok[e][b] else None
        vx, vy = p[0] - float(centre[0]), p[1] - float(centre[1])
        norm = math.hypot(vx, vy)
        return None if norm == 0 else (p, (vx / norm, vy / norm))


@dataclass
class _Hair:
    """One hair before measuring: its path elements and how each end finishes."""

    elems: list  # ('b', branch, reversed) or ('c', cluster root)
    ends: list  # kind of end a and end b: ('free', flat pixel), ('tip', c), ('term', c)
    closed: bool


def _build_hairs(g: _Graph, t: _Topology) -> list[_Hair]:
    """Follow chains of paired branches into hairs."""
    nb = g.n_branches
    alive = (~t.absorbed) & (~t.pruned)
    used = np.zeros(nb, dtype=bool)
    hairs: list[_Hair] = []

    def end_kind(b: int, e: int) -> tuple:
        c = int(t.end_root[b, e])
        if c < 0:
            i = g.offsets[b] if e == 0 else g.offsets[b + 1] - 1
            return ("free", int(g.order[i]))
        return ("tip", c) if t.n_ends[c] == 1 else ("term", c)

    def walk(b: int, e_in: int, closed: bool = False) -> _Hair:
        start = end_kind(b, e_in)
        elems: list = [] if start[0] == "free" or closed else [("c", start[1])]
        b0, e0 = b, e_in
        while True:
            used[b] = True
            elems.append(("b", b, e_in == 1))
            e_out = 1 - e_in
            nxt = t.partner.get((b, e_out))
            if nxt is None:
                end = end_kind(b, e_out)
                if end[0] != "free":
                    elems.append(("c", end[1]))
                return _Hair(elems, [start, end], False)
            elems.append(("c", int(t.end_root[b, e_out])))
            if nxt == (b0, e0):
                return _Hair(elems, [None, None], True)
            b, e_in = nxt

    for b in np.flatnonzero(alive).tolist():
        if used[b]:
            continue
        if g.is_cycle[b]:
            used[b] = True
            hairs.append(_Hair([("b", b, False)], [None, None], True))
            continue
        for e in (0, 1):
            if (b, e) not in t.partner:
                hairs.append(walk(b, e))
                break
    for b in np.flatnonzero(alive & ~used).tolist():
        if not used[b]:
            # a chain closed on itself through junctions
            hairs.append(walk(b, 0, closed=True))
    # clusters left without any branch (a tiny blob) become a dot hair
    nc = g.n_clusters
    for c in range(nc):
        if t.root[c] == c and t.n_ends[c] == 0:
            hairs.append(_Hair([("c", c)], [("tip", c), ("tip", c)], False))
    return hairs


def _split_corners(
    xy: np.ndarray, src: np.ndarray, ends: list, closed: bool, dflat: _ExactDistance
) -> list[tuple[np.ndarray, np.ndarray, list]]:
    """Split an open path at sharp corners: a V whose skeleton has no junction at its apex.

    The turn at point ``i`` is the angle between ``P[i] - P[i-s]`` and ``P[i+s] - P[i]`` with
    ``s = max(2, ceil(4 r))`` (about two widths; ``r`` the mean ``D`` of the path's skeleton
    pixels). While the largest turn (the first point within 1e-9 deg of it) exceeds
    ``SPLIT_TURN_DEG``, the path is split there; both parts keep the corner point, whose ends
    are of kind ``('corner', pixel)``. Closed paths are not split.
    """
    if closed:
        return [(xy, src, ends)]
    pix = src[src >= 0]
    if pix.size == 0:
        return [(xy, src, ends)]
    r = float(dflat[pix].mean())
    step = max(2, math.ceil(4 * r))
    out = []
    stack = [(xy, src, ends)]
    while stack:
        pxy, psrc, pends = stack.pop()
        i = _sharpest_turn(pxy, step)
        if i < 0 or psrc[i] < 0:
            out.append((pxy, psrc, pends))
            continue
        corner = ("corner", int(psrc[i]))
        # push the second part first so parts come out in path order
        stack.append((pxy[i:], psrc[i:], [corner, pends[1]]))
        stack.append((pxy[: i + 1], psrc[: i + 1], [pends[0], corner]))
    return out


def _sharpest_turn(xy: np.ndarray, s: int) -> int:
    """Index of the sharpest turn above ``SPLIT_TURN_DEG``, or -1."""
    k = xy.shape[0]
    if k < 2 * s + 1:
        return -1
    mid = xy[s : k - s]
    v1 = mid - xy[: k - 2 * s]
    v2 = xy[2 * s :] - mid
    cross = np.abs(v1[:, 0] * v2[:, 1] - v1[:, 1] * v2[:, 0])
    dot = v1[:, 0] * v2[:, 0] + v1[:, 1] * v2[:, 1]
    turn = np.degrees(np.arctan2(cross, dot))
    top = float(turn.max())
    if top <= SPLIT_TURN_DEG:
        return -1
    return int(np.flatnonzero(turn >= top - 1e-9)[0]) + s


def _raw_points(g: _Graph, t: _Topology, hair: _Hair) -> tuple[np.ndarray, np.ndarray]:
    """Raw (x, y) points of a hair path and the source of each point.

    Returns
    -------
    xy : (k, 2) float64
    src : (k,) int64
        Flat pixel index for a skeleton pixel, ``-1 - c`` for the centre of cluster ``c``.
    """
    w = g.shape[1]
    parts = []
    for el in hair.elems:
        if el[0] == "b":
            seg = g.order[g.offsets[el[1]] : g.offsets[el[1] + 1]]
            parts.append(seg[::-1] if el[2] else seg)
        else:
            parts.append(np.array([-1 - el[1]], dtype=np.int64))
    src = np.concatenate(parts)
    xy = np.empty((src.shape[0], 2))
    pix = src >= 0
    xy[pix, 0] = src[pix] % w
    xy[pix, 1] = src[pix] // w
    cl = -1 - src[~pix]
    xy[~pix] = t.centre[cl]
    return xy, src


def _all_raw_points(
    g: _Graph, t: _Topology, hairs: list[_Hair]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw points of all hair paths at once (see :func:`_raw_points`), concatenated.

    One gather over all path elements replaces many small per-hair array operations.

    Returns
    -------
    xy : (k, 2) float64
    src : (k,) int64
        As :func:`_raw_points`, all hairs concatenated in order.
    hoff : (n + 1,) int64
        Start of each hair in ``xy`` and ``src``.
    """
    w = g.shape[1]
    eid, erev, nel = [], [], []
    for hair in hairs:
        nel.append(len(hair.elems))
        for el in hair.elems:
            if el[0] == "b":
                eid.append(el[1])
                erev.append(el[2])
            else:
                eid.append(-1 - el[1])  # a cluster centre: one point
                erev.append(False)
    eid = np.array(eid, dtype=np.int64)
    erev = np.array(erev, dtype=bool)
    is_b = eid >= 0
    bb = np.minimum(np.maximum(eid, 0), max(g.n_branches - 1, 0))
    ob = np.append(g.offsets, g.offsets[-1])  # safe to index even with no branches
    elen = np.where(is_b, ob[bb + 1] - ob[bb], 1)
    estart = np.zeros(eid.shape[0] + 1, dtype=np.int64)
    np.cumsum(elen, out=estart[1:])
    el_of = np.repeat(np.arange(eid.shape[0]), elen)
    j = np.arange(int(estart[-1])) - estart[:-1][el_of]
    j = np.where(erev[el_of], elen[el_of] - 1 - j, j)
    src = eid[el_of]
    on_b = is_b[el_of]
    src[on_b] = g.order[g.offsets[bb[el_of[on_b]]] + j[on_b]]
    xy = np.empty((src.shape[0], 2))
    pix = src >= 0
    xy[pix, 0] = src[pix] % w
    xy[pix, 1] = src[pix] // w
    xy[~pix] = t.centre[-1 - src[~pix]]
    hel = np.zeros(len(hairs) + 1, dtype=np.int64)
    np.cumsum(nel, out=hel[1:])
    hoff = estart[hel]
    return xy, src, hoff


def _corner_free(
    xy: np.ndarray, src: np.ndarray, hoff: np.ndarray, closed: list, dflat: _ExactDistance
) -> list[bool]:
    """Whether each hair path certainly needs no split in :func:`_split_corners`.

    All paths' turns are computed at once with the same arithmetic as
    :func:`_sharpest_turn`. A path counts as corner-free only with a clear margin (its step
    ``ceil(4 r)`` not near a rounding edge of the summed ``r``, its largest turn not near
    ``SPLIT_TURN_DEG``); every other path goes through the exact per-path search.
    """
    n = hoff.shape[0] - 1
    if n == 0:
        return []
    total = src.shape[0]
    lens = np.diff(hoff)
    hair_of = np.repeat(np.arange(n), lens)
    pix = src >= 0
    cnt = np.bincount(hair_of[pix], minlength=n)
    tot = np.bincount(hair_of[pix], weights=dflat[src[pix]], minlength=n)
    r4 = 4.0 * np.divide(tot, cnt, out=np.zeros(n), where=cnt > 0)
    sure = np.abs(r4 - np.round(r4)) > 1e-6  # ceil(4 r) cannot differ from the exact mean's
    s = np.maximum(2, np.ceil(r4)).astype(np.int64)
    s_pt = s[hair_of]
    local = np.arange(total) - hoff[:-1][hair_of]
    valid = (local >= s_pt) & (local < lens[hair_of] - s_pt)
    i0 = np.clip(np.arange(total) - s_pt, 0, total - 1)
    i2 = np.clip(np.arange(total) + s_pt, 0, total - 1)
    v1 = xy - xy[i0]
    v2 = xy[i2] - xy
    cross = np.abs(v1[:, 0] * v2[:, 1] - v1[:, 1] * v2[:, 0])
    dot = v1[:, 0] * v2[:, 0] + v1[:, 1] * v2[:, 1]
    turn = np.where(valid, np.degrees(np.arctan2(cross, dot)), -1.0)
    top = np.maximum.reduceat(turn, hoff[:-1])
    free = (top <= SPLIT_TURN_DEG - 1e-6) & sure
    free |= cnt == 0
    free |= np.array(closed, dtype=bool)
    return free.tolist()


def _smooth_open(xy: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Moving average of concatenated open paths; the window shrinks symmetrically at ends."""
    n = xy.shape[0]
    i = np.arange(n) - np.repeat(starts, lens)
    k = np.repeat(lens, lens)
    hw = np.minimum(np.minimum(i, k - 1 - i), SMOOTH_HALF_WINDOW)
    acc = xy.copy()
    for d in range(1, SMOOTH_HALF_WINDOW + 1):
        if n <= 2 * d:
            break
        sel = (hw[d:-d] >= d)[:, None]  # same summation order as a per-point loop
        mid = acc[d:-d]
        mid[...] = np.where(sel, mid + xy[: -2 * d], mid)
        mid[...] = np.where(sel, mid + xy[2 * d :], mid)
    acc /= (2 * hw + 1)[:, None]
    return acc


def _smooth_closed(xy: np.ndarray) -> np.ndarray:
    """Circular moving average of one closed path."""
    k = xy.shape[0]
    hw = min(SMOOTH_HALF_WINDOW, (k - 1) // 2)
    acc = xy.copy()
    for d in range(1, hw + 1):
        acc += np.roll(xy, d, axis=0)
        acc += np.roll(xy, -d, axis=0)
    return acc / (2 * hw + 1)


def _nonzero_flat(img: np.ndarray) -> np.ndarray:
    """Flat indices (int32 when they fit, else int64) of the nonzero pixels, raster order."""
    import cv2

    h, w = img.shape
    pts = cv2.findNonZero(img)  # faster than np.flatnonzero on uint8 images
    dt = np.int32 if h * w < 2**31 else np.int64
    if pts is None:
        return np.zeros(0, dtype=dt)
    pts = pts.reshape(-1, 2)
    return pts[:, 1].astype(dt) * w + pts[:, 0]


def _mask_pixels(m: np.ndarray) -> np.ndarray:
    """Flat indices (int32 when they fit) of the mask pixels, raster order.

    On a dense mask NumPy's scan beats ``cv2.findNonZero`` (which :func:`_nonzero_flat` uses
    for the sparse skeleton).
    """
    pix = np.flatnonzero(m)
    return pix.astype(np.int32) if m.size < 2**31 else pix


def _skeleton_distance2(
    skel: np.ndarray, m: np.ndarray, pix: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mask pixels (flat), a lower bound of their squared distance to the skeleton, a pad.

    ``pix``: the mask pixels when already listed (:func:`_mask_pixels`). See
    :func:`_chamfer_bounds`; the exact value comes from :func:`_nearest_skeleton`.
    """
    import cv2

    if pix is None:
        pix = _mask_pixels(m)
    cd = cv2.distanceTransform(1 - skel, cv2.DIST_L2, cv2.DIST_MASK_5).ravel()[pix]
    klo, pad = _chamfer_bounds(cd)
    return pix, klo, pad


def _nearest_skeleton(
    m: np.ndarray, skel: np.ndarray, near_d2: tuple[np.ndarray, np.ndarray, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest skeleton pixel of every mask pixel (ties: smallest raster index).

    Exact: lattice circles of growing squared radius, from the chamfer lower bound up, are
    tried in raster order (:func:`_first_on_circles`), vectorised over the mask pixels.

    Returns
    -------
    pix : ndarray
        Flat indices of the mask pixels.
    near : ndarray
        Flat index of the nearest skeleton pixel of each.
    """
    import cv2

    h, w = m.shape
    pix, klo, pad = near_d2
    sk = cv2.copyMakeBorder(skel, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    wp = w + 2 * pad
    q = (pix // w + pad) * wp + (pix % w + pad)
    _, off = _first_on_circles(sk.ravel().view(bool), q, klo, wp, w, want_offset=True)
    return pix, pix + off


def _within_component(
    m: np.ndarray, skel: np.ndarray, pix: np.ndarray, near: np.ndarray
) -> np.ndarray:
    """Nearest skeleton pixel of each mask pixel within its own 8-connected mask component.

    The nearest skeleton pixel of a hair's square-cut tip can belong to another hair a few
    pixels away (thinning ends the skeleton up to a width short of the tip); such pixels
    are searched again among the skeleton pixels of their own component (thinning keeps
    one skeleton per component), from their unrestricted distance up (ties: smallest
    raster index, as in :func:`_nearest_skeleton`).
    """
    import cv2

    h, w = m.shape
    n, comp = cv2.connectedComponents(m, connectivity=8, ltype=cv2.CV_32S)
    flat = comp.ravel()
    stray = np.flatnonzero(flat[pix] != flat[near])
    if stray.size == 0:
        return near
    q = pix[stray]
    target = flat[q]
    dy = q // w - near[stray] // w
    dx = q % w - near[stray] % w
    klo = (dy * dy + dx * dx).astype(np.int32)  # the unrestricted distance bounds it below
    comp *= skel  # in place: the component label at skeleton pixels, 0 elsewhere
    feat = comp.astype(np.uint16) if n < 2**16 else comp  # 2 bytes per pixel when it fits
    del comp, flat
    pad = math.isqrt(int(klo.max())) + 8
    while True:
        padded = cv2.copyMakeBorder(feat, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        wp = w + 2 * pad
        qp = (q // w + pad) * wp + (q % w + pad)
        try:
            _, off = _first_on_circles(
                padded.ravel(), qp, klo, wp, w, want_offset=True, target=target, kmax=pad * pad
            )
            break
        except RuntimeError:  # the component's skeleton is farther than the pad: widen it
            if pad > h + w:
                raise
            pad *= 2
    near[stray] = q + off  # in place: ``near`` is the caller's fresh array
    return near


@functools.lru_cache(maxsize=4096)
def _circle_offsets(k: int) -> tuple[tuple[int, int], ...]:
    """Lattice offsets (dy, dx) with dy**2 + dx**2 == k, in raster order."""
    out: list[tuple[int, int]] = []
    r = math.isqrt(k)
    for dy in range(-r, r + 1):
        rest = k - dy * dy
        dx = math.isqrt(rest)
        if dx * dx == rest:
            out.extend([(dy, -dx), (dy, dx)] if dx else [(dy, 0)])
    return tuple(out)


def _measure(
    m: np.ndarray,
    skel: np.ndarray,
    dist: _ExactDistance,
    near_d2: tuple[np.ndarray, np.ndarray],
    g: _Graph,
    t: _Topology,
    hairs: list[_Hair],
    um_per_px: float | None,
) -> HairTable:
    """Order, smooth and measure the hairs; assign mask pixels; build the table."""
    h, w = g.shape
    dflat = dist
    # -- raw paths, canonical direction (end a first in raster order) and order
    raws = []
    xy_all, src_all, hoff = _all_raw_points(g, t, hairs)
    plain = _corner_free(xy_all, src_all, hoff, [hr.closed for hr in hairs], dflat)
    bounds = hoff.tolist()
    for origin, hair in enumerate(hairs):
        xy = xy_all[bounds[origin] : bounds[origin + 1]]
        src = src_all[bounds[origin] : bounds[origin + 1]]
        if plain[origin]:  # most paths have no sharp corner: skip the per-path search
            parts = [(xy, src, list(hair.ends))]
        else:
            parts = _split_corners(xy, src, list(hair.ends), hair.closed, dflat)
        for xy_p, src_p, ends_p in parts:
            if not hair.closed and (xy_p[-1, 1], xy_p[-1, 0]) < (xy_p[0, 1], xy_p[0, 0]):
                xy_p, src_p, ends_p = xy_p[::-1].copy(), src_p[::-1].copy(), ends_p[::-1]
            raws.append((xy_p, src_p, ends_p, hair.closed, origin))
    keys = [
        (r[0][0, 1], r[0][0, 0], r[0][-1, 1], r[0][-1, 0], r[0].shape[0], int(r[1][0]))
        for r in raws
    ]
    order = sorted(range(len(raws)), key=keys.__getitem__)
    raws = [raws[i] for i in order]
    n = len(raws)
    lens = np.array([r[0].shape[0] for r in raws], dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.cumsum(lens)[:-1]
    closed = np.array([r[3] for r in raws], dtype=bool)
    xy = np.concatenate([r[0] for r in raws])
    src = np.concatenate([r[1] for r in raws])
    hair_of = np.repeat(np.arange(n), lens)
    # -- smoothing and lengths
    sm = _smooth_open(xy, starts, lens)
    for i in np.flatnonzero(closed).tolist():
        s, e = starts[i], starts[i] + lens[i]
        sm[s:e] = _smooth_closed(xy[s:e])
    step = np.zeros(xy.shape[0])  # length of the segment from point i to point i+1
    if xy.shape[0] > 1:
        step[:-1] = np.hypot(*(sm[1:] - sm[:-1]).T)
    last = starts + lens - 1
    step[last] = 0.0
    for i in np.flatnonzero(closed).tolist():
        step[last[i]] = float(np.hypot(*(sm[starts[i]] - sm[last[i]])))
    weight = 0.5 * step
    weight[1:] += 0.5 * step[:-1]
    weight[starts] -= 0.5 * np.r_[0.0, step][starts]  # drop the previous hair's share
    for i in np.flatnonzero(closed).tolist():
        weight[starts[i]] += 0.5 * step[last[i]]
    tip, trim = _tip_offsets(m, raws, sm, starts, dflat, t.radius)
    local = np.arange(xy.shape[0]) - np.repeat(starts, lens)
    dropped = (local < np.repeat(trim[:, 0], lens)) | (
        local > np.repeat(lens - 1 - trim[:, 1], lens)
    )
    weight[dropped] = 0.0
    # the kept end point keeps only its inward half segment, plus the offset
    ka = starts + trim[:, 0]
    kb = last - trim[:, 1]
    weight[ka] = np.where(trim[:, 0] > 0, 0.5 * step[ka], weight[ka]) + tip[:, 0]
    weight[kb] = np.where(trim[:, 1] > 0, 0.5 * step[kb - 1], weight[kb]) + tip[:, 1]
    length = np.bincount(hair_of, weights=weight, minlength=n)
    # -- ownership of skeleton pixels
    hair_id = np.arange(1, n + 1, dtype=np.int32)
    is_pix = src >= 0
    touching: dict[int, set[int]] = {}
    for c, hid in zip((-1 - src[~is_pix]).tolist(), hair_of[~is_pix].tolist(), strict=True):
        touching.setdefault(c, set()).add(hid + 1)
    nc = g.n_clusters
    zone_area = np.zeros(nc, dtype=np.int32)
    zone_label = np.zeros(nc, dtype=np.int32)
    for c, hs in touching.items():
        zone_label[c] = min(hs)
        zone_area[c] = min(hs) if len(hs) == 1 else 0
    # one int32 image: hair id, or -(label) for junction-zone pixels that count for no width
    zone_code = np.where(zone_area > 0, zone_area, -zone_label)
    own = np.zeros(h * w, dtype=np.int32)
    own[src[is_pix]] = hair_of[is_pix] + 1
    if nc:
        own[g.cluster_pixels] = zone_code[np.repeat(t.root, np.diff(g.cluster_offsets))]
        gone = np.repeat(t.absorbed | t.pruned, np.diff(g.offsets))
        if gone.any():
            zroot = np.where(t.end_root[:, 0] >= 0, t.end_root[:, 0], t.end_root[:, 1])
            own[g.order[gone]] = zone_code[np.repeat(zroot, np.diff(g.offsets))[gone]]
    # -- nearest skeleton pixel of every mask pixel: area and labels
    pix, near = _nearest_skeleton(m, skel, near_d2)
    near = _within_component(m, skel, pix, near)
    code = own[near]
    del own, near
    area = np.bincount(np.maximum(code, 0), minlength=n + 1)[1:].astype(np.float64)
    labels = np.zeros(h * w, dtype=np.int32)
    labels[pix] = np.abs(code)
    labels = labels.reshape(h, w)
    # -- width: area over the length share of the owned path points
    owned = is_pix.copy()
    cpts = np.flatnonzero(~is_pix)
    owned[cpts] = zone_area[-1 - src[cpts]] == hair_of[cpts] + 1
    l_eff = np.bincount(hair_of[owned], weights=weight[owned], minlength=n)
    width = np.divide(area, l_eff, out=np.zeros(n), where=l_eff > 0)
    # -- width SD from the distance profile, away from ends and junctions
    width_sd = _width_sd(src, starts, lens, closed, hair_of, width, dflat)
    # -- units and bundles
    unit = _units(raws, src, starts, lens, closed, hair_of, step, tip, width)
    bundle = _bundles(length, width, width_sd, um_per_px)
    end_a = sm[starts]
    end_b = sm[last]
    paths = tuple(sm[s : s + k] for s, k in zip(starts.tolist(), lens.tolist(), strict=True))
    return HairTable(
        hair_id=hair_id,
        length_px=length,
        width_px=width,
        width_sd_px=width_sd,
        end_a_xy=end_a,
        end_b_xy=end_b,
        exit_end=np.full(n, "?", dtype="<U1"),
        unit_id=unit,
        bundle_size=bundle,
        labels=labels,
        paths=paths,
        um_per_px=um_per_px,
    )


def _tip_offsets(
    m: np.ndarray,
    raws: list,
    sm: np.ndarray,
    starts: np.ndarray,
    dflat: _ExactDistance,
    radius: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Tip offsets of each hair end and how many end points they replace.

    The skeleton's last half width is unreliable: it stops short of the tip, or hooks into
    a corner of a square-cut end. So at a free end (a tip, or a junction cluster only this
    hair touches) the first ``k0 = ceil(r)`` points are dropped (``r``: mean ``D`` over the
    hair's skeleton pixels; no drop unless ``2 k0 + 1`` segments remain) and a ray is cast
    from smoothed point ``k0`` along the direction from point ``k1 = k0 + ceil(4 r)`` (clipped
    to the path) to point ``k0``. The mask is sampled along the ray every ``TIP_STEP`` px by
    bilinear interpolation (0 outside the image); at the first sample below 0.5 the last step
    is resampled at ``TIP_FINE`` equal sub-steps, and the offset is the 0.5 crossing
    interpolated linearly between the first sub-sample below 0.5 and the one before it (at
    most ``32 r + 16`` px; 0 when the start itself is below 0.5). A one-point hair gets
    ``max(D - 0.5, 0)`` per end. Ends on a junction shared with other hairs get neither.

    Returns
    -------
    tip : (n, 2) float64
        Offset at end a and end b.
    trim : (n, 2) int64
        Number of points dropped at end a and end b.
    """
    n = len(raws)
    tip = np.zeros((n, 2))
    trim = np.zeros((n, 2), dtype=np.int64)
    px, py, dx, dy, cap, who = [], [], [], [], [], []
    # r per hair: mean D over its skeleton pixels (a dot hair: its cluster's radius)
    allsrc = np.concatenate([r[1] for r in raws])
    hair_of = np.repeat(np.arange(n), [r[1].shape[0] for r in raws])
    is_pix = allsrc >= 0
    cnt = np.bincount(hair_of[is_pix], minlength=n)
    tot = np.bincount(hair_of[is_pix], weights=dflat[allsrc[is_pix]], minlength=n)
    rs = np.divide(tot, cnt, out=np.zeros(n), where=cnt > 0).tolist()
    cnts = cnt.tolist()
    for i, (xy, src, ends, closed, _origin) in enumerate(raws):
        if closed:
            continue
        r = rs[i] if cnts[i] else float(radius[-1 - src[0]])
        last = xy.shape[0] - 1
        free = [e is not None and e[0] != "term" for e in ends]
        k0 = math.ceil(r)
        if last < 2 * k0 + 1:
            k0 = 0
        k1 = min(last, k0 + math.ceil(4 * r))
        for j, end in enumerate(ends):
            if not free[j]:
                continue
            if k1 == k0:  # a single point: the inscribed radius is all we know
                val = radius[end[1]] if end[0] == "tip" else dflat[end[1]]
                tip[i, j] = max(val - 0.5, 0.0)
                continue
            g0 = starts[i] + (k0 if j == 0 else last - k0)
            g1 = starts[i] + (k1 if j == 0 else last - k1)
            vx, vy = float(sm[g0, 0] - sm[g1, 0]), float(sm[g0, 1] - sm[g1, 1])
            norm = math.hypot(vx, vy)
            trim[i, j] = k0
            if norm == 0:
                continue
            px.append(float(sm[g0, 0]))
            py.append(float(sm[g0, 1]))
            dx.append(vx / norm)
            dy.append(vy / norm)
            cap.append(32.0 * r + 16.0)
            who.append((i, j))
    if not who:
        return tip, trim
    px, py, dx, dy, cap = (np.array(v) for v in (px, py, dx, dy, cap))
    found = _cast_rays(m, px, py, dx, dy, cap)
    for (i, j), f in zip(who, found.tolist(), strict=True):
        tip[i, j] = f
    return tip, trim


def _cast_rays(
    m: np.ndarray, px: np.ndarray, py: np.ndarray, dx: np.ndarray, dy: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """Distance along each ray to the mask's 0.5 crossing (see :func:`_tip_offsets`).

    Samples several steps of all live rays per call (blocks of growing length) instead of one
    step at a time; each sample is computed exactly as a step-by-step walk would.
    """
    found = np.zeros(px.shape[0])
    prev = _bilinear(m, px, py)
    active = np.flatnonzero(prev >= 0.5)
    prev = prev[active]
    step = 1  # next step to sample
    block = 4
    sub = TIP_STEP / TIP_FINE
    while active.size:
        tts = np.arange(step, step + block) * TIP_STEP
        xs = (px[active, None] + tts * dx[active, None]).ravel()
        ys = (py[active, None] + tts * dy[active, None]).ravel()
        vals = _bilinear(m, xs, ys).reshape(active.size, block)
        below = vals < 0.5
        ex = np.where(below.any(axis=1), below.argmax(axis=1), block)
        capped = tts[None, :] >= cap[active, None]
        cp = np.where(capped.any(axis=1), capped.argmax(axis=1), block)
        # a step first checks the crossing, then the cap
        out = np.flatnonzero(ex <= cp)
        out = out[ex[out] < block]
        over = np.flatnonzero((cp < ex) & (cp < block))
        found[active[over]] = cap[active[over]]
        if out.size:
            j = ex[out]
            tt = tts[j]
            lo = np.where(j > 0, vals[out, np.maximum(j - 1, 0)], prev[out])
            ids = active[out]
            # resample the last step finely; interpolate the first 0.5 crossing
            tq = (tt - TIP_STEP)[:, None] + np.arange(1, TIP_FINE + 1) * sub
            fq = _bilinear(
                m,
                (px[ids, None] + tq * dx[ids, None]).ravel(),
                (py[ids, None] + tq * dy[ids, None]).ravel(),
            ).reshape(ids.size, TIP_FINE)
            lo_q = np.concatenate([lo[:, None], fq[:, :-1]], axis=1)
            hitq = fq < 0.5
            qi = hitq.argmax(axis=1)
            r = np.arange(ids.size)
            lq, fqq = lo_q[r, qi], fq[r, qi]
            res = tq[r, qi] - sub + sub * (lq - 0.5) / (lq - fqq)
            found[ids] = np.where(hitq.any(axis=1), res, np.nan)
        keep = np.ones(active.size, dtype=bool)
        keep[out] = False
        keep[over] = False
        active = active[keep]
        prev = vals[keep, -1]
        step += block
        block = min(2 * block, 64)
    return found


def _bilinear(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a 0/1 mask at points (x, y); outside the image is 0."""
    h, w = m.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = x - x0
    fy = y - y0
    out = np.zeros(x.shape[0])
    for oy, ox, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        yy, xx = y0 + oy, x0 + ox
        ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        v = np.zeros(x.shape[0])
        v[ok] = m[yy[ok], xx[ok]]
        out += wt * v
    return out


def _width_sd(
    src: np.ndarray,
    starts: np.ndarray,
    lens: np.ndarray,
    closed: np.ndarray,
    hair_of: np.ndarray,
    width: np.ndarray,
    dflat: _ExactDistance,
) -> np.ndarray:
    """SD of ``2 D`` along each hair, skipping points near its ends and junction centres.

    A point is skipped when it lies within ``ceil(width / 2)`` points (index distance, no
    wrap-around) of an open end or of a junction centre in the path.
    """
    n = starts.shape[0]
    total = src.shape[0]
    idx = np.arange(total)
    barrier = src < 0
    last = starts + lens - 1
    barrier[starts[~closed]] = True
    barrier[last[~closed]] = True
    prev_b = np.maximum.accumulate(np.where(barrier, idx, -1))
    nxt = np.where(barrier, idx, total)
    next_b = np.minimum.accumulate(nxt[::-1])[::-1]
    hs = np.repeat(starts, lens)
    he = np.repeat(last, lens)
    gap_prev = np.where(prev_b >= hs, idx - prev_b, total)
    gap_next = np.where(next_b <= he, next_b - idx, total)
    margin = np.ceil(width / 2.0)[hair_of]
    keep = (src >= 0) & (np.minimum(gap_prev, gap_next) > margin)
    val = 2.0 * dflat[np.maximum(src, 0)]
    cnt = np.bincount(hair_of[keep], minlength=n)
    s1 = np.bincount(hair_of[keep], weights=val[keep], minlength=n)
    mean = np.divide(s1, cnt, out=np.zeros(n), where=cnt > 0)
    dev = (val - mean[hair_of]) ** 2
    s2 = np.bincount(hair_of[keep], weights=dev[keep], minlength=n)
    sd = np.sqrt(np.divide(s2, cnt, out=np.zeros(n), where=cnt > 0))
    sd[cnt < 2] = 0.0
    return sd


def _units(
    raws: list,
    src: np.ndarray,
    starts: np.ndarray,
    lens: np.ndarray,
    closed: np.ndarray,
    hair_of: np.ndarray,
    step: np.ndarray,
    tip: np.ndarray,
    width: np.ndarray,
) -> np.ndarray:
    """Follicular units: hairs ending at one junction, or on a Y's short stem, share one.

    ``src``, ``starts``, ``lens``, ``closed`` and ``hair_of`` describe the concatenated
    paths of ``raws`` (see :func:`_measure`).
    """
    n = len(raws)
    parent = list(range(n))
    ending: dict[int, list[int]] = {}
    for i, r in enumerate(raws):
        for end in r[2]:
            if end is not None and end[0] == "term":
                ending.setdefault(end[1], []).append(i)
    # junction centres inside open paths, found at once over the concatenated paths
    # (closed paths are never a stem, so they are left out here)
    inner = np.flatnonzero(src < 0)
    hi = hair_of[inner]
    p = inner - starts[hi]
    sel = ~closed[hi] & (p > 0) & (p < lens[hi] - 1)
    cl = -1 - src[inner[sel]]
    hi, p = hi[sel], p[sel]
    if ending:
        want = np.isin(cl, np.fromiter(ending, dtype=np.int64))
        cl, hi, p = cl[want], hi[want], p[want]
    passing: dict[int, list[tuple[int, int]]] = {}
    for c, i, q in zip(cl.tolist(), hi.tolist(), p.tolist(), strict=True):
        passing.setdefault(c, []).append((i, q))
    by_origin: dict[int, int] = {}
    for i, r in enumerate(raws):  # the parts of a hair split at a corner: one V
        _union(parent, by_origin.setdefault(r[4], i), i)
    for c, hs in ending.items():
        for j in hs[1:]:
            _union(parent, hs[0], j)
        for b, q in passing.get(c, []):
            s = starts[b]
            k = lens[b]
            before = float(step[s : s + q].sum()) + tip[b, 0]
            after = float(step[s + q : s + k - 1].sum()) + tip[b, 1]
            if min(before, after) <= STEM_MAX_WIDTHS * width[b]:
                _union(parent, hs[0], b)
    roots = [_find(parent, i) for i in range(n)]
    ids: dict[int, int] = {}
    out = np.empty(n, dtype=np.int32)
    for i, r in enumerate(roots):
        out[i] = ids.setdefault(r, len(ids) + 1)
    return out


def _bundles(
    length: np.ndarray, width: np.ndarray, width_sd: np.ndarray, um_per_px: float | None
) -> np.ndarray:
    """Hairs per shaft: relative width, physical width and uneven width (see count_hairs)."""
    n = length.shape[0]
    out = np.ones(n, dtype=np.int32)
    elong = width[(width > 0) & (length >= BUNDLE_MIN_ELONGATION * width)]
    typical = 0.0
    if elong.shape[0] >= BUNDLE_MIN_HAIRS:
        typical = float(np.median(elong[elong >= np.median(elong)]))
    if typical > 0:
        ratio = width / typical
        out[ratio >= BUNDLE_RATIO_2] = 2
        out[ratio >= BUNDLE_RATIO_3] = 3
    uneven = (width > 0) & (width_sd >= BUNDLE_UNEVEN_SD * width)
    if um_per_px is not None:
        w_um = width * um_per_px
        out[(w_um >= BUNDLE_MIN_UM_2) & (out < 2)] = 2
        out[w_um >= BUNDLE_MIN_UM_3] = 3
        uneven &= w_um >= BUNDLE_UNEVEN_MIN_UM
    elif typical > 0:
        uneven &= width >= typical
    else:
        uneven[:] = False
    out[uneven & (out < 2)] = 2
    return out
