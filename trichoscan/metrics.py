"""Metrics: hair table + analysed field + scale -> the numbers a dermatologist reads.

Counting rules decide which hairs belong to the field:

``"exit"`` (default)
    the hair's exit point (follicle end) lies in the field. Stubs entering from outside
    are not counted, so density does not depend on hair length. An exit end that stops
    against the side of another hair's shaft (:func:`hidden_end_flags`: a crossing the
    counting core did not resolve) is treated like one cut by the field's edge.
``"inside"``
    the whole visible hair lies in the field (the FDU labels' convention).
``"visible"``
    every visible hair.

Without a scale every µm and cm² quantity is ``None``: widths are never split into
classes by pixel width and density is never guessed.

Widths of hairs that run along the field's edge (:func:`width_cut_flags`) are not
measurable: only a sliver of the shaft is visible. They are left out of the width
statistics (mean, median, SD, histogram) and, for their class, cumulative thickness and
the 40 µm split, take the larger of their visible width and the median measured width of
the photo's counted hairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from ._version import __version__
from .calibration import Calibration
from .counting import HairTable
from .errors import InputError

__all__ = [
    "SCHEMA_VERSION",
    "VELLUS_MAX_UM",
    "TERMINAL_MIN_UM",
    "TRICHOSCAN_CUT_UM",
    "COUNT_RULES",
    "WidthCutoffs",
    "SegmenterInfo",
    "Analysis",
    "SUMMARY_COLUMNS",
    "end_cut_flags",
    "hidden_end_flags",
    "width_cut_flags",
    "counted_by_rule",
    "summarize",
    "classify_widths",
]

SCHEMA_VERSION = "1.3"
COUNT_RULES = ("exit", "inside", "visible")
CountRule = Literal["exit", "inside", "visible"]
HairClass = Literal["vellus", "intermediate", "terminal"]

#: Default hair-width class cut-offs (µm); the renderer derives its true classes from these.
VELLUS_MAX_UM = 30.0
TERMINAL_MIN_UM = 60.0
TRICHOSCAN_CUT_UM = 40.0

#: Width histogram bin edges in µm (10 µm bins up to 150 µm).
WIDTH_BINS_UM = np.arange(0.0, 160.0, 10.0)


@dataclass(frozen=True)
class WidthCutoffs:
    """Hair-width class cut-offs in µm.

    Vellus < ``vellus_max_um`` <= intermediate < ``terminal_min_um`` <= terminal; TrichoScan
    reports a single cut at ``trichoscan_cut_um`` (thin < cut <= thick).
    """

    vellus_max_um: float = VELLUS_MAX_UM
    terminal_min_um: float = TERMINAL_MIN_UM
    trichoscan_cut_um: float = TRICHOSCAN_CUT_UM

    def __post_init__(self) -> None:
        if not (0 < self.vellus_max_um <= self.terminal_min_um):
            raise InputError(
                "width cut-offs must satisfy 0 < vellus_max_um <= terminal_min_um, got "
                f"{self.vellus_max_um} and {self.terminal_min_um}"
            )
        if self.trichoscan_cut_um <= 0:
            raise InputError("trichoscan_cut_um must be positive")

    def to_dict(self) -> dict[str, float]:
        return {
            "vellus_max_um": self.vellus_max_um,
            "terminal_min_um": self.terminal_min_um,
            "trichoscan_cut_um": self.trichoscan_cut_um,
        }


def classify_widths(width_um: np.ndarray, cutoffs: WidthCutoffs | None = None) -> np.ndarray:
    """Class name per width: 'vellus', 'intermediate' or 'terminal'.

    Parameters
    ----------
    width_um : array of float
        Hair widths in µm.
    cutoffs : WidthCutoffs, optional
        Class boundaries; defaults to 30 / 60 µm.
    """
    cutoffs = cutoffs or WidthCutoffs()
    width_um = np.asarray(width_um, dtype=float)
    out = np.full(width_um.shape, "intermediate", dtype="<U12")
    out[width_um < cutoffs.vellus_max_um] = "vellus"
    out[width_um >= cutoffs.terminal_min_um] = "terminal"
    return out


@dataclass(frozen=True)
class SegmenterInfo:
    """Which segmenter produced the mask."""

    name: str
    weights_sha256: str | None = None
    requested: str = "auto"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "requested": self.requested,
            "note": self.note,
        }


def end_cut_flags(hairs: HairTable, field: np.ndarray, margin_px: float = 2.0) -> np.ndarray:
    """Whether each end of each hair is cut by the edge of the analysed field.

    An end is cut when it lies within half the hair's width plus ``margin_px`` of the
    field's edge (the image border counts as edge): there the hair may continue unseen.

    Returns
    -------
    (n, 2) bool
        Column 0 for end a, column 1 for end b.
    """
    n = len(hairs)
    if n == 0:
        return np.zeros((0, 2), dtype=bool)
    # Pad with background so the image border is an edge of the field too.
    padded = np.pad(field.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    h, w = field.shape
    limit = hairs.edge_width_px / 2.0 + margin_px
    cut = np.zeros((n, 2), dtype=bool)
    for col, ends in enumerate((hairs.end_a_xy, hairs.end_b_xy)):
        x = np.clip(np.rint(ends[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.rint(ends[:, 1]).astype(int), 0, h - 1)
        cut[:, col] = dist[y, x] <= limit
    return cut


def _end_directions(hairs: HairTable) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit vector (n, 2, 2) at both ends, and whether it is defined (n, 2).

    The direction runs from the centre-line point about one width in from the end to the
    end itself, so the last pixel's wobble does not set it.
    """
    n = len(hairs)
    out = np.zeros((n, 2, 2))
    for i, path in enumerate(hairs.paths):
        if path.shape[0] < 2:
            continue
        k = int(min(path.shape[0] - 1, max(2, round(float(hairs.edge_width_px[i])))))
        out[i, 0] = path[0] - path[k]
        out[i, 1] = path[-1] - path[-1 - k]
    norm = np.hypot(out[..., 0], out[..., 1])
    ok = norm > 1e-6
    out[ok] /= norm[ok][:, None]
    return out, ok


def hidden_end_flags(
    hairs: HairTable, reach_px: float = 10.0, end_gap_widths: float = 2.0
) -> np.ndarray:
    """Whether each end of each hair stops against the side of another hair's shaft.

    Such an end is usually no end at all: the hair goes on under (or over) the other one
    and the counting core did not pair its two sides across the crossing, so the piece's
    true exit may lie anywhere along the hidden rest. For the ``"exit"`` rule it is
    treated like an end cut by the field's edge. An end is hidden when, walking out of it
    along its direction from half its width plus 1 px to ``reach_px`` beyond that, the
    first pixel of another hair belongs to a hair none of whose ends lies within
    ``end_gap_widths * (w_i + w_j) + 3`` px (``w``: widths) of it. Ends that meet other
    hairs' ends (the V of one follicular unit, whose shared end is a real exit) stay
    visible.

    Returns
    -------
    (n, 2) bool
        Column 0 for end a, column 1 for end b.
    """
    n = len(hairs)
    hidden = np.zeros((n, 2), dtype=bool)
    if n < 2:
        return hidden
    labels = np.asarray(hairs.labels)
    h, w = labels.shape
    width = np.maximum(np.asarray(hairs.edge_width_px, dtype=float), 1.0)
    ends = np.stack([hairs.end_a_xy, hairs.end_b_xy], axis=1)  # (n, 2, 2)
    out, ok = _end_directions(hairs)
    # Probe points: (n, 2 ends, k steps).
    steps = np.arange(1.0, reach_px + 1.0)
    dist = 0.5 * width[:, None, None] + steps[None, None, :]
    px = np.rint(ends[..., 0, None] + out[..., 0, None] * dist).astype(int)
    py = np.rint(ends[..., 1, None] + out[..., 1, None] * dist).astype(int)
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    hit = np.where(inside, labels[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)], 0)
    # Off the image, the walk stops: nothing beyond counts.
    hit[np.cumsum(~inside, axis=-1) > 0] = 0
    own = np.asarray(hairs.hair_id)[:, None, None]
    other = (hit > 0) & (hit != own)
    first = np.argmax(other, axis=-1)
    found = other.any(axis=-1) & ok
    row = np.searchsorted(
        np.asarray(hairs.hair_id), np.take_along_axis(hit, first[..., None], -1)[..., 0]
    )
    row = np.clip(row, 0, n - 1)
    gap = np.hypot(*(ends[row] - ends[:, :, None, :]).transpose(3, 0, 1, 2)).min(axis=-1)
    allowed = end_gap_widths * (width[:, None] + width[row]) + 3.0
    hidden[found] = gap[found] > allowed[found]
    return hidden


def width_cut_flags(hairs: HairTable, field: np.ndarray) -> np.ndarray:
    """Whether each hair's width is unmeasurable because it runs along the field's edge.

    A hair cut square by the edge touches it over about one width; one that runs along
    the edge (only a sliver of the shaft visible) touches it over much of its length,
    and its mask width is a fraction of the true one. A hair whose pixels touch the edge
    (the image border counts) over more than ``1.5 * width + 2`` pixels is flagged.

    Returns
    -------
    (n,) bool
    """
    n = len(hairs)
    if n == 0:
        return np.zeros(0, dtype=bool)
    padded = np.pad(np.asarray(field, dtype=np.uint8), 1)
    # Field pixels with an outside pixel among their 8 neighbours.
    inner = cv2.erode(padded, np.ones((3, 3), np.uint8))[1:-1, 1:-1].astype(bool)
    edge = np.asarray(field, dtype=bool) & ~inner
    labels = hairs.labels[edge]
    contact = np.bincount(labels[labels > 0], minlength=int(hairs.labels.max()) + 1)
    contact_per_hair = contact[hairs.hair_id]
    return contact_per_hair > 1.5 * hairs.edge_width_px + 2.0


def counted_by_rule(
    hairs: HairTable, end_cut: np.ndarray, rule: str, end_hidden: np.ndarray | None = None
) -> np.ndarray:
    """Boolean per hair: does the counting ``rule`` count it in this field?

    With the ``"exit"`` rule a hair counts when its exit end is neither cut by the field's
    edge nor hidden against another hair (``end_hidden``, see :func:`hidden_end_flags`);
    a hair whose exit end is unknown counts unless both ends are cut or hidden (the exit
    stage normally decides every hair). The other rules ignore ``end_hidden``.
    """
    if rule not in COUNT_RULES:
        raise InputError(f"count_rule must be one of {COUNT_RULES}, got {rule!r}")
    n = len(hairs)
    if rule == "visible":
        return np.ones(n, dtype=bool)
    if rule == "inside":
        return ~end_cut.any(axis=1)
    unseen = end_cut if end_hidden is None else end_cut | end_hidden
    exit_end = hairs.exit_end
    exit_cut = np.where(exit_end == "a", unseen[:, 0], unseen[:, 1])
    unknown = exit_end == "?"
    exit_cut[unknown] = unseen[unknown].all(axis=1)
    return ~exit_cut


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of analysing one photo. Every µm/cm² field is ``None`` without a scale.

    Scalars follow ``count_rule``: hair counts, density, width statistics, class counts,
    cumulative thickness and follicular units are computed over the *counted* hairs.
    ``hairs`` holds every visible hair; ``counted`` marks those the rule counts.
    """

    count_rule: str
    hair_count: int
    visible_hair_count: int
    inside_hair_count: int
    exit_hair_count: int
    density_per_cm2: float | None
    mean_width_px: float | None
    mean_width_um: float | None
    median_width_um: float | None
    width_sd_um: float | None
    vellus_count: int | None
    intermediate_count: int | None
    terminal_count: int | None
    thin_count: int | None
    thick_count: int | None
    cumulative_thickness_mm_per_cm2: float | None
    follicular_unit_count: int
    hairs_per_unit: float | None
    single_hair_unit_pct: float | None
    width_histogram: dict[str, list[float]] | None
    field_area_px: int
    field_area_cm2: float | None
    calibration: Calibration
    segmenter_used: SegmenterInfo
    cutoffs: WidthCutoffs
    quality: Any
    hairs: HairTable = field(repr=False)
    counted: np.ndarray = field(repr=False)
    end_cut: np.ndarray = field(repr=False)
    end_hidden: np.ndarray = field(repr=False)
    width_from_photo: np.ndarray = field(repr=False)
    width_cut: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    field_mask: np.ndarray = field(repr=False)
    image_shape: tuple[int, int] = (0, 0)
    source: str | None = None
    schema_version: str = SCHEMA_VERSION
    trichoscan_version: str = __version__

    def hair_classes(self) -> np.ndarray | None:
        """Class per hair row ('vellus'/'intermediate'/'terminal'), ``None`` without scale.

        Hairs whose width is cut by the field edge are classed by their estimated width
        (see the module docstring).
        """
        per_hair = _per_hair_width_um(self.hairs)
        if per_hair is None:
            return None
        estimated = _impute_cut_widths(per_hair, self.width_cut, self.counted)
        return classify_widths(estimated, self.cutoffs)

    def summary(self) -> dict[str, Any]:
        """The scalar metrics only (one CSV row, keys as :data:`SUMMARY_COLUMNS`)."""
        return {
            "source": self.source,
            "count_rule": self.count_rule,
            "hair_count": self.hair_count,
            "visible_hair_count": self.visible_hair_count,
            "inside_hair_count": self.inside_hair_count,
            "exit_hair_count": self.exit_hair_count,
            "density_per_cm2": self.density_per_cm2,
            "mean_width_um": self.mean_width_um,
            "median_width_um": self.median_width_um,
            "width_sd_um": self.width_sd_um,
            "mean_width_px": self.mean_width_px,
            "vellus_count": self.vellus_count,
            "intermediate_count": self.intermediate_count,
            "terminal_count": self.terminal_count,
            "thin_count": self.thin_count,
            "thick_count": self.thick_count,
            "cumulative_thickness_mm_per_cm2": self.cumulative_thickness_mm_per_cm2,
            "follicular_unit_count": self.follicular_unit_count,
            "hairs_per_unit": self.hairs_per_unit,
            "single_hair_unit_pct": self.single_hair_unit_pct,
            "field_area_px": self.field_area_px,
            "field_area_cm2": self.field_area_cm2,
            "um_per_px": self.calibration.um_per_px,
            "calibration_source": self.calibration.source,
            "segmenter": self.segmenter_used.name,
            "weights_sha256": self.segmenter_used.weights_sha256,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict following schema ``schema_version`` (no image arrays)."""
        classes = self.hair_classes()
        records = self.hairs.to_records()
        for i, rec in enumerate(records):
            rec["counted"] = bool(self.counted[i])
            rec["end_a_cut"] = bool(self.end_cut[i, 0])
            rec["end_b_cut"] = bool(self.end_cut[i, 1])
            rec["end_a_hidden"] = bool(self.end_hidden[i, 0])
            rec["end_b_hidden"] = bool(self.end_hidden[i, 1])
            rec["width_source"] = "photo" if self.width_from_photo[i] else "mask"
            rec["width_cut"] = bool(self.width_cut[i])
            rec["hair_class"] = None if classes is None else str(classes[i])
        metrics = self.summary()
        metrics.pop("source")
        return {
            "schema_version": self.schema_version,
            "trichoscan_version": self.trichoscan_version,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "metrics": metrics,
            "width_histogram": self.width_histogram,
            "cutoffs": self.cutoffs.to_dict(),
            "calibration": self.calibration.to_dict(),
            "segmenter": self.segmenter_used.to_dict(),
            "quality": self.quality.to_dict() if hasattr(self.quality, "to_dict") else None,
            "hairs": records,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


#: Columns of :meth:`Analysis.summary`, in order (the summary CSV's header).
SUMMARY_COLUMNS = (
    "source",
    "count_rule",
    "hair_count",
    "visible_hair_count",
    "inside_hair_count",
    "exit_hair_count",
    "density_per_cm2",
    "mean_width_um",
    "median_width_um",
    "width_sd_um",
    "mean_width_px",
    "vellus_count",
    "intermediate_count",
    "terminal_count",
    "thin_count",
    "thick_count",
    "cumulative_thickness_mm_per_cm2",
    "follicular_unit_count",
    "hairs_per_unit",
    "single_hair_unit_pct",
    "field_area_px",
    "field_area_cm2",
    "um_per_px",
    "calibration_source",
    "segmenter",
    "weights_sha256",
)


def _per_hair_width_um(hairs: HairTable) -> np.ndarray | None:
    """Width of each hair of a row: a bundle of k hairs shares the shaft's width."""
    if hairs.width_um is None:
        return None
    return hairs.width_um / np.maximum(hairs.bundle_size, 1)


def _impute_cut_widths(width: np.ndarray, width_cut: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Per-row widths with edge-cut rows raised to the median measured counted width."""
    measured = width[counted & ~width_cut]
    if not measured.size:
        measured = width[~width_cut]
    if not measured.size or not width_cut.any():
        return width
    return np.where(width_cut, np.maximum(width, np.median(measured)), width)


def _none_if_empty(values: np.ndarray, fn) -> float | None:
    return float(fn(values)) if values.size else None


def summarize(
    hairs: HairTable,
    field_mask: np.ndarray,
    calibration: Calibration,
    *,
    mask: np.ndarray | None = None,
    width_from_photo: np.ndarray | None = None,
    count_rule: str = "exit",
    cutoffs: WidthCutoffs | None = None,
    segmenter: SegmenterInfo | None = None,
    quality: Any = None,
    source: str | None = None,
) -> Analysis:
    """Compute every metric of one photo from its hair table and analysed field.

    Parameters
    ----------
    hairs : HairTable
        Hair instances with exit ends assigned (``'?'`` is tolerated).
    field_mask : (H, W) bool
        The analysed field; its area is the density's denominator.
    calibration : Calibration
        Scale; unknown scale leaves µm/cm² metrics ``None``.
    width_from_photo : (n,) bool, optional
        Which hairs' ``width_px`` was measured on the photo rather than the mask (recorded
        per hair as ``width_source``); none when omitted.
    count_rule : {'exit', 'inside', 'visible'}
        Which hairs count (see module docstring).
    """
    if count_rule not in COUNT_RULES:
        raise InputError(f"count_rule must be one of {COUNT_RULES}, got {count_rule!r}")
    cutoffs = cutoffs or WidthCutoffs()
    field_mask = np.asarray(field_mask, dtype=bool)
    hairs = hairs.with_scale(calibration.um_per_px)
    end_cut = end_cut_flags(hairs, field_mask)
    end_hidden = hidden_end_flags(hairs)
    width_cut = width_cut_flags(hairs, field_mask)
    bundle = np.maximum(hairs.bundle_size, 1).astype(int)
    by_rule = {rule: counted_by_rule(hairs, end_cut, rule, end_hidden) for rule in COUNT_RULES}
    counted = by_rule[count_rule]
    hair_count = int(bundle[counted].sum())

    field_area_px = int(field_mask.sum())
    mm2 = calibration.mm2_per_px
    field_area_cm2 = None if mm2 is None else field_area_px * mm2 / 100.0
    density = None
    if field_area_cm2:
        density = hair_count / field_area_cm2

    # One width per hair (a bundle row stands for bundle_size hairs of equal width);
    # statistics over the measurable widths, classes over the estimated ones.
    measured = counted & ~width_cut
    width_px_rows = hairs.width_px / bundle
    width_px = np.repeat(width_px_rows[measured], bundle[measured])
    mean_width_px = _none_if_empty(width_px, np.mean)
    width_um_rows = _per_hair_width_um(hairs)

    mean_um = median_um = sd_um = cumulative = None
    vellus = intermediate = terminal = thin = thick = None
    histogram = None
    if width_um_rows is not None:
        width_um = np.repeat(width_um_rows[measured], bundle[measured])
        mean_um = _none_if_empty(width_um, np.mean)
        median_um = _none_if_empty(width_um, np.median)
        sd_um = float(np.std(width_um, ddof=1)) if width_um.size > 1 else None
        counts, edges = np.histogram(np.clip(width_um, 0, WIDTH_BINS_UM[-1] - 1e-9), WIDTH_BINS_UM)
        histogram = {"edges_um": edges.tolist(), "counts": counts.astype(float).tolist()}
        estimated_rows = _impute_cut_widths(width_um_rows, width_cut, counted)
        estimated = np.repeat(estimated_rows[counted], bundle[counted])
        classes = classify_widths(estimated, cutoffs)
        vellus = int((classes == "vellus").sum())
        intermediate = int((classes == "intermediate").sum())
        terminal = int((classes == "terminal").sum())
        thin = int((estimated < cutoffs.trichoscan_cut_um).sum())
        thick = int(estimated.size - thin)
        if field_area_cm2:
            cumulative = float(estimated.sum() * 1e-3 / field_area_cm2)

    # Hairs per unit from the counted rows, each row weighted by its bundle size.
    units, inverse = np.unique(hairs.unit_id[counted], return_inverse=True)
    unit_sizes = np.bincount(inverse, weights=bundle[counted]) if units.size else None
    unit_count = int(units.size)
    hairs_per_unit = float(unit_sizes.mean()) if unit_sizes is not None else None
    single_pct = float(100.0 * np.mean(unit_sizes == 1)) if unit_sizes is not None else None

    return Analysis(
        count_rule=count_rule,
        hair_count=hair_count,
        visible_hair_count=int(bundle[by_rule["visible"]].sum()),
        inside_hair_count=int(bundle[by_rule["inside"]].sum()),
        exit_hair_count=int(bundle[by_rule["exit"]].sum()),
        density_per_cm2=density,
        mean_width_px=mean_width_px,
        mean_width_um=mean_um,
        median_width_um=median_um,
        width_sd_um=sd_um,
        vellus_count=vellus,
        intermediate_count=intermediate,
        terminal_count=terminal,
        thin_count=thin,
        thick_count=thick,
        cumulative_thickness_mm_per_cm2=cumulative,
        follicular_unit_count=unit_count,
        hairs_per_unit=hairs_per_unit,
        single_hair_unit_pct=single_pct,
        width_histogram=histogram,
        field_area_px=field_area_px,
        field_area_cm2=field_area_cm2,
        calibration=calibration,
        segmenter_used=segmenter or SegmenterInfo("unknown"),
        cutoffs=cutoffs,
        quality=quality,
        hairs=hairs,
        counted=counted,
        end_cut=end_cut,
        end_hidden=end_hidden,
        width_from_photo=(
            np.zeros(len(hairs), dtype=bool)
            if width_from_photo is None
            else np.asarray(width_from_photo, dtype=bool)
        ),
        width_cut=width_cut,
        mask=np.zeros(field_mask.shape, bool) if mask is None else np.asarray(mask, bool),
        field_mask=field_mask,
        image_shape=(int(field_mask.shape[0]), int(field_mask.shape[1])),
        source=source,
    )
