"""Counting core: a binary hair mask -> hair instances with length and width.

mask -> skeleton -> junctions/endpoints -> branches -> hairs (crossings resolved)
-> per-hair length and width. Takes any mask and knows no model or photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["HairTable", "count_hairs"]


@dataclass(frozen=True, eq=False)
class HairTable:
    """Per-hair columns, one row per hair. Schema frozen: sessions and reports rely on it.

    Attributes
    ----------
    hair_id : (n,) int32
        1-based id; equals the hair's value in ``labels``.
    length_px, width_px, width_sd_px : (n,) float64
        Centre-line length including tip offsets, mean width (mask area / length, junction
        zones excluded) and the SD of the width along the hair, in pixels.
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


def count_hairs(mask: np.ndarray, *, um_per_px: float | None = None) -> HairTable:
    """Find hair instances in a binary mask and measure their length and width.

    (Implementation in progress by the counting-core work.)
    """
    raise NotImplementedError
