"""The end-to-end pipeline: photo -> preprocess -> segment -> count -> exit ends -> metrics.

:class:`Pipeline` resolves the segmenter (and loads a model) once, so a clinic app or a
batch reuses it across photos; :func:`analyze` and :func:`segment` are one-shot helpers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import Calibration, read_scale_bar, resolve_calibration
from .counting import HairTable, count_hairs
from .errors import InputError
from .follicles import assign_exit_ends
from .io import read_image
from .metrics import COUNT_RULES, Analysis, SegmenterInfo, WidthCutoffs, summarize
from .preprocess import (
    OVERLAY_GAP_PX,
    Bubble,
    Prepared,
    bridge_field_gaps,
    fill_slits,
    local_skin_colour,
    prepare,
)
from .profiles import profile_widths
from .segmentation import resolve_segmenter_name, segment_classical

__all__ = ["PipelineConfig", "Pipeline", "analyze", "segment"]

logger = logging.getLogger(__name__)

ImageInput = str | Path | bytes | np.ndarray
CalibrationInput = float | str | Calibration | None


#: Window (in the photo's typical hair widths) of the local skin colour around a shaft.
_SKIN_WINDOW_WIDTHS = 6.0


def shaft_contrast(
    hairs: HairTable, rgb: np.ndarray, field: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Colour contrast of each hair shaft against the skin around it.

    The mean RGB distance between a shaft's own pixels and the local skin colour (a
    normalised box average of the field's non-hair pixels), so dark, light and grey hairs
    all score by how much they differ from their skin.

    Parameters
    ----------
    hairs : HairTable
    rgb : (H, W, 3) float array in [0, 1]
        The illumination-flattened photo.
    field, mask : (H, W) bool arrays
        The analysed field and the hair mask (left out of the skin average).

    Returns
    -------
    numpy.ndarray
        (n,) float contrast per hair, 0 for a hair without pixels.
    """
    n = len(hairs)
    if n == 0:
        return np.zeros(0)
    widths = hairs.width_px[hairs.width_px > 0]
    typical = float(np.median(widths)) if widths.size else 3.0
    img = np.ascontiguousarray(rgb, dtype=np.float32)
    skin = field & ~mask
    fallback = np.median(img[skin], axis=0) if skin.any() else img.reshape(-1, 3).mean(0)
    local = local_skin_colour(img, skin, _SKIN_WINDOW_WIDTHS * typical, fallback, min_share=0.05)
    dist = np.sqrt(np.sum(np.square(img - local), axis=2))
    lab = hairs.labels.ravel()
    own = lab > 0
    top = int(hairs.labels.max(initial=0)) + 1
    total = np.bincount(lab[own], weights=dist.ravel()[own], minlength=top)
    count = np.bincount(lab[own], minlength=top)
    per_id = total / np.maximum(count, 1)
    return per_id[hairs.hair_id]


def sliver_rows(
    hairs: HairTable, *, width_fraction: float = 0.5, max_length_widths: float = 4.0
) -> np.ndarray:
    """Bool per row: a thin, short shaft touching a much wider one.

    A row is a sliver when some row whose pixels touch its own (8-neighbours) is at least
    ``1 / width_fraction`` times as wide and the row is shorter than
    ``max_length_widths`` of that neighbour's width: the ragged edge of a segmented shaft
    or the wedge of skin and shadow where two hairs meet, cut off as a hair of its own.
    A vellus hair beside a terminal one is long for its width and stays.

    Parameters
    ----------
    hairs : HairTable
        With its instance label image.
    width_fraction, max_length_widths : float
    """
    n = len(hairs)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    lab = hairs.labels
    row_of = np.full(int(lab.max(initial=0)) + 1, -1, dtype=np.int64)
    row_of[hairs.hair_id] = np.arange(n)
    # Touching pairs from the label image shifted by one pixel in 4 directions.
    pairs = []
    for a, b in (
        (lab[:, :-1], lab[:, 1:]),
        (lab[:-1, :], lab[1:, :]),
        (lab[:-1, :-1], lab[1:, 1:]),
        (lab[:-1, 1:], lab[1:, :-1]),
    ):
        hit = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[hit], b[hit]], axis=1))
    edges = np.unique(np.concatenate(pairs), axis=0)
    if edges.size == 0:
        return out
    edges = np.concatenate([edges, edges[:, ::-1]])
    i, j = row_of[edges[:, 0]], row_of[edges[:, 1]]
    ok = (i >= 0) & (j >= 0)
    i, j = i[ok], j[ok]
    w, length = hairs.width_px, hairs.length_px
    thin = (w[i] < width_fraction * w[j]) & (length[i] < max_length_widths * w[j])
    out[i[thin]] = True
    return out


def _drop_rows(
    hairs: HairTable, mask: np.ndarray, keep: np.ndarray
) -> tuple[HairTable, np.ndarray]:
    """The rows where ``keep`` holds; the dropped rows' pixels leave the mask too."""
    if keep.all():
        return hairs, mask
    dropped = np.isin(hairs.labels, hairs.hair_id[~keep])
    return hairs.select(keep), mask & ~dropped


#: A shaft is a bubble's rim when this share of its centre line lies within
#: ``max(BUBBLE_RIM_TOL_PX, BUBBLE_RIM_TOL_FRACTION * radius)`` of the ring and it runs
#: along at least ``BUBBLE_RIM_MIN_ARC_DEG`` of it: a straight hair only grazes a circle,
#: and rendered hairs never turn by more than 70 degrees (99.9 % below 54).
BUBBLE_RIM_SHARE = 0.8
BUBBLE_RIM_TOL_PX = 4.0
BUBBLE_RIM_TOL_FRACTION = 0.06
BUBBLE_RIM_MIN_ARC_DEG = 30.0


def bubble_rim_rows(hairs: HairTable, bubbles: Sequence[Bubble]) -> np.ndarray:
    """Bool per row: does the shaft run along an air bubble's rim?

    Parameters
    ----------
    hairs : HairTable
        Hairs with their smoothed centre lines (``paths``, x/y in pixels).
    bubbles : sequence of Bubble
        From :func:`trichoscan.preprocess.find_bubbles`.
    """
    rim = np.zeros(len(hairs), dtype=bool)
    for b in bubbles:
        tol = max(BUBBLE_RIM_TOL_PX, BUBBLE_RIM_TOL_FRACTION * b.radius_px)
        for i, path in enumerate(hairs.paths):
            dx, dy = path[:, 0] - b.x, path[:, 1] - b.y
            on = np.abs(np.hypot(dx, dy) - b.radius_px) <= tol
            if on.mean() < BUBBLE_RIM_SHARE:
                continue
            angle = np.unwrap(np.arctan2(dy[on], dx[on]))
            rim[i] |= np.degrees(np.ptp(angle)) >= BUBBLE_RIM_MIN_ARC_DEG
    return rim


def _drop_bubble_rims(
    hairs: HairTable, mask: np.ndarray, bubbles: Sequence[Bubble]
) -> tuple[HairTable, np.ndarray]:
    """Drop shafts that are air-bubble rims; their pixels leave the mask."""
    if not bubbles or len(hairs) == 0:
        return hairs, mask
    return _drop_rows(hairs, mask, ~bubble_rim_rows(hairs, bubbles))


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of a :class:`Pipeline`.

    Parameters
    ----------
    segmenter : {'auto', 'classical', 'unet'}
        'auto' uses the U-Net when its weights are installed, else the classical one.
    count_rule : {'exit', 'inside', 'visible'}
        Default counting rule (see :mod:`trichoscan.metrics`).
    cutoffs : WidthCutoffs
        Vellus / terminal / TrichoScan width cut-offs in µm.
    read_scale_from_photo : bool
        When no calibration is given, look for a burned-in scale bar.
    model_dir : Path, optional
        Directory with U-Net weights and model card (default: the shipped ``models/``).
    min_hair_length_widths, min_hair_length_um, min_shaft_length_widths : float
        A detected shaft shorter than ``min_hair_length_widths`` of the width of one of its
        hairs (its width over its bundle size: a short stub of two or three clipped hairs
        side by side is nearly as wide as it is long), shorter than
        ``min_shaft_length_widths`` of its whole width, or (with a known scale) shorter than
        ``min_hair_length_um`` µm, is not identifiable as a hair (a dot, an opening, a flake
        edge) and is dropped before counting.
    faint_fraction, faint_reference, faint_uneven_sd : float
        A shaft that is both faint -- its colour contrast against the skin around it
        (:func:`shaft_contrast`) below ``faint_fraction`` of the photo's
        ``faint_reference`` percentile (0-100) of shaft contrasts -- and ragged -- its width
        SD above ``faint_uneven_sd`` of its width -- is not a hair (skin between bright
        scale flakes, a haze edge) and is dropped before counting. Faint but even shafts
        (grey, white and vellus hairs) stay. ``faint_fraction=0`` turns it off.
    sliver_width_fraction, sliver_max_length_widths : float
        A shaft narrower than ``sliver_width_fraction`` of a shaft it touches and shorter
        than ``sliver_max_length_widths`` of that shaft's width is a sliver of it (a
        ragged edge, the wedge where two hairs meet), not a hair (:func:`sliver_rows`);
        ``sliver_width_fraction=0`` turns it off.
    bridge_gap_px : int
        Hairs cut apart by a thin exclusion inside the field (a measuring circle's stroke)
        are rejoined across gaps up to this wide before counting
        (:func:`trichoscan.preprocess.bridge_field_gaps`); 0 turns it off.
    slit_gap_px : float
        Thin holes up to this wide between touching hairs are filled before counting
        (:func:`trichoscan.preprocess.fill_slits`), so that a side-by-side pair is one
        shaft of bundle size 2 rather than a ladder of fragments; 0 turns it off.
    photo_widths : bool
        Measure each hair's width on the photo, as the full width at half maximum of its
        colour contrast across the shaft (:func:`trichoscan.profiles.profile_widths`),
        where clean cross-sections allow; other hairs keep their mask width. ``False``
        keeps every mask width (the segmenter's edge placement then sets the widths).
    """

    segmenter: str = "auto"
    count_rule: str = "exit"
    cutoffs: WidthCutoffs = field(default_factory=WidthCutoffs)
    read_scale_from_photo: bool = True
    model_dir: Path | None = None
    min_hair_length_widths: float = 3.0
    min_hair_length_um: float = 80.0
    min_shaft_length_widths: float = 2.0
    faint_fraction: float = 0.5
    faint_reference: float = 75.0
    faint_uneven_sd: float = 0.2
    sliver_width_fraction: float = 0.5
    sliver_max_length_widths: float = 4.0
    bridge_gap_px: int = OVERLAY_GAP_PX
    slit_gap_px: float = 2.0
    photo_widths: bool = True

    def __post_init__(self) -> None:
        if self.count_rule not in COUNT_RULES:
            raise InputError(f"count_rule must be one of {COUNT_RULES}, got {self.count_rule!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "segmenter": self.segmenter,
            "count_rule": self.count_rule,
            "cutoffs": self.cutoffs.to_dict(),
            "read_scale_from_photo": self.read_scale_from_photo,
            "model_dir": None if self.model_dir is None else str(self.model_dir),
            "min_hair_length_widths": self.min_hair_length_widths,
            "min_hair_length_um": self.min_hair_length_um,
            "min_shaft_length_widths": self.min_shaft_length_widths,
            "faint_fraction": self.faint_fraction,
            "faint_reference": self.faint_reference,
            "faint_uneven_sd": self.faint_uneven_sd,
            "sliver_width_fraction": self.sliver_width_fraction,
            "sliver_max_length_widths": self.sliver_max_length_widths,
            "bridge_gap_px": self.bridge_gap_px,
            "slit_gap_px": self.slit_gap_px,
            "photo_widths": self.photo_widths,
        }


class Pipeline:
    """Analyse photos with fixed settings; loads the segmentation model once.

    Examples
    --------
    >>> pipe = Pipeline(PipelineConfig(segmenter="classical"))  # doctest: +SKIP
    >>> result = pipe.analyze("photo.jpg", calibration=2.8)      # doctest: +SKIP
    >>> result.density_per_cm2                                   # doctest: +SKIP
    """

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self._segmenter_name = resolve_segmenter_name(
            self.config.segmenter, model_dir=self.config.model_dir
        )
        self._model: Any = None
        self.segmenter_info = SegmenterInfo(self._segmenter_name, requested=self.config.segmenter)
        if self._segmenter_name == "unet":
            from .segmentation import unet  # torch is imported only here

            self._model = unet.load_model(self.config.model_dir)
            self.segmenter_info = SegmenterInfo(
                "unet", weights_sha256=self._model.sha256, requested=self.config.segmenter
            )
        elif self.config.segmenter.strip().lower() == "auto":
            import importlib.util

            from .segmentation import unet

            if importlib.util.find_spec("torch") is None:
                why = "torch is not installed (pip install 'trichoscan[model]')"
            else:
                why = unet.auto_choice(self.config.model_dir)[1] or "U-Net weights not installed"
            note = f"{why}; used the classical segmenter"
            logger.info(note)
            self.segmenter_info = SegmenterInfo("classical", requested="auto", note=note)

    def _calibrate(self, rgb: np.ndarray, calibration: CalibrationInput) -> Calibration:
        cal = resolve_calibration(calibration)
        if not cal.known and self.config.read_scale_from_photo:
            from_photo = read_scale_bar(rgb)
            if from_photo is not None:
                logger.info("scale read from the photo: %s", from_photo.detail)
                return from_photo
        return cal

    def _segment_prepared(self, prepared: Prepared, um_per_px: float | None) -> np.ndarray:
        if self._model is not None:
            mask = self._model.segment(prepared.rgb, um_per_px=um_per_px)
        else:
            mask = segment_classical(prepared.rgb, prepared.field, um_per_px=um_per_px)
        return mask & prepared.field

    def _drop_short(
        self, hairs: HairTable, mask: np.ndarray, um_per_px: float | None
    ) -> tuple[HairTable, np.ndarray]:
        """Drop shafts too short to be hairs; their pixels leave the mask too."""
        cfg = self.config
        per_hair_width = hairs.width_px / np.maximum(hairs.bundle_size, 1)
        min_length = np.maximum(
            cfg.min_hair_length_widths * per_hair_width,
            cfg.min_shaft_length_widths * hairs.width_px,
        )
        if um_per_px is not None:
            min_length = np.maximum(min_length, cfg.min_hair_length_um / um_per_px)
        keep = hairs.length_px >= min_length
        return _drop_rows(hairs, mask, keep)

    def _drop_faint(
        self, hairs: HairTable, mask: np.ndarray, prepared: Prepared
    ) -> tuple[HairTable, np.ndarray]:
        """Drop faint, ragged shafts (see PipelineConfig); their pixels leave the mask."""
        cfg = self.config
        if cfg.faint_fraction <= 0 or len(hairs) == 0:
            return hairs, mask
        contrast = shaft_contrast(hairs, prepared.rgb, prepared.field, mask)
        faint = contrast < cfg.faint_fraction * float(np.percentile(contrast, cfg.faint_reference))
        ragged = hairs.width_sd_px > cfg.faint_uneven_sd * hairs.width_px
        keep = ~(faint & ragged)
        return _drop_rows(hairs, mask, keep)

    def _drop_slivers(self, hairs: HairTable, mask: np.ndarray) -> tuple[HairTable, np.ndarray]:
        """Drop thin, short shafts that lean on a wider one (see PipelineConfig)."""
        cfg = self.config
        if cfg.sliver_width_fraction <= 0 or len(hairs) < 2:
            return hairs, mask
        sliver = sliver_rows(
            hairs,
            width_fraction=cfg.sliver_width_fraction,
            max_length_widths=cfg.sliver_max_length_widths,
        )
        return _drop_rows(hairs, mask, ~sliver)

    def segment(self, image: ImageInput, *, calibration: CalibrationInput = None) -> np.ndarray:
        """Bool hair mask of ``image``, the input's height x width."""
        rgb = read_image(image)
        cal = self._calibrate(rgb, calibration)
        return self._segment_prepared(prepare(rgb), cal.um_per_px)

    def analyze(
        self,
        image: ImageInput,
        *,
        calibration: CalibrationInput = None,
        count_rule: str | None = None,
        source: str | None = None,
        mask: np.ndarray | None = None,
    ) -> Analysis:
        """Analyse one photo.

        Parameters
        ----------
        image : path, bytes or array
            RGB (not BGR) array H x W or H x W x 3/4, uint8, uint16 or float in [0, 1], or
            an encoded JPEG/PNG/TIFF/BMP as a path or bytes.
        calibration : float, str or Calibration, optional
            µm per pixel, a device-profile name, or a :class:`Calibration`. Without one the
            photo's burned-in scale bar is used if found, else µm/cm² results are ``None``.
        count_rule : {'exit', 'inside', 'visible'}, optional
            Overrides the pipeline's default rule.
        source : str, optional
            Name recorded in the result (default: the path, when ``image`` is one).
        mask : (H, W) bool array, optional
            A hair mask made elsewhere (hand-traced, another model, a renderer's truth)
            to use in place of the segmenter; everything after segmentation runs as usual
            and ``segmenter_used`` says ``"given mask"``.

        Raises
        ------
        TrichoscanError
            ImageReadError, CalibrationError, InputError or ModelError for bad input.
        """
        rule = count_rule or self.config.count_rule
        if rule not in COUNT_RULES:
            raise InputError(f"count_rule must be one of {COUNT_RULES}, got {rule!r}")
        rgb = read_image(image)
        cal = self._calibrate(rgb, calibration)
        prepared = prepare(rgb)
        segmenter = self.segmenter_info
        if mask is None:
            mask = self._segment_prepared(prepared, cal.um_per_px)
        else:
            mask = np.asarray(mask)
            if mask.shape != rgb.shape[:2] or mask.dtype != bool:
                raise InputError(
                    f"mask must be a bool array of the photo's shape {rgb.shape[:2]}, got "
                    f"{mask.dtype} {mask.shape}"
                )
            mask = mask & prepared.field
            segmenter = SegmenterInfo("given mask", requested="mask", note="given by the caller")
        if self.config.slit_gap_px > 0:
            mask = fill_slits(mask, max_gap_px=self.config.slit_gap_px) & prepared.field
        mask = bridge_field_gaps(mask, prepared.field, max_gap_px=self.config.bridge_gap_px)
        hairs = count_hairs(mask, um_per_px=cal.um_per_px)
        hairs, mask = self._drop_short(hairs, mask, cal.um_per_px)
        hairs, mask = self._drop_faint(hairs, mask, prepared)
        hairs, mask = self._drop_slivers(hairs, mask)
        hairs, mask = _drop_bubble_rims(hairs, mask, prepared.bubbles)
        hairs = assign_exit_ends(hairs, prepared.rgb, prepared.field).hairs
        width_from_photo = np.zeros(len(hairs), dtype=bool)
        if self.config.photo_widths:
            photo = profile_widths(hairs, prepared.rgb, prepared.field)
            width_from_photo = photo.measured
            hairs = hairs.with_widths(np.where(width_from_photo, photo.width_px, hairs.width_px))
        if source is None and isinstance(image, str | Path):
            source = str(image)
        return summarize(
            hairs,
            prepared.field,
            cal,
            mask=mask,
            width_from_photo=width_from_photo,
            count_rule=rule,
            cutoffs=self.config.cutoffs,
            segmenter=segmenter,
            quality=prepared.quality,
            source=source,
        )


def analyze(
    image: ImageInput,
    *,
    calibration: CalibrationInput = None,
    segmenter: str = "auto",
    count_rule: str = "exit",
) -> Analysis:
    """Analyse one photo with default settings (see :meth:`Pipeline.analyze`)."""
    pipeline = Pipeline(PipelineConfig(segmenter=segmenter, count_rule=count_rule))
    return pipeline.analyze(image, calibration=calibration)


def segment(
    image: ImageInput, *, segmenter: str = "auto", calibration: CalibrationInput = None
) -> np.ndarray:
    """Bool hair mask of ``image`` (see :meth:`Pipeline.segment`)."""
    return Pipeline(PipelineConfig(segmenter=segmenter)).segment(image, calibration=calibration)
