"""The vectorised counting core against the plain-Python reference (benchmarks/).

Both follow the same exactly specified algorithm, so on random masks they must agree on the
topology (hairs, their order, units, bundles, labels) and on every float within 1e-6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from trichoscan.counting import count_hairs

_REF = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_count.py"


def _reference():
    spec = importlib.util.spec_from_file_location("reference_count", _REF)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.reference_count


def random_mask(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A few random strokes (lines and arcs), often touching or crossing."""
    rng = np.random.default_rng(seed)
    h, w = shape
    m = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(1, 5)):
        p0 = rng.uniform((0, 0), (w, h))
        p2 = rng.uniform((0, 0), (w, h))
        p1 = (p0 + p2) / 2 + rng.normal(0, 8, 2)
        t = np.linspace(0, 1, 20)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(2, 7)))
    if rng.random() < 0.3:
        cv2.circle(m, (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))), 9, 1, 3)
    return m.astype(bool)


def _compare(mask: np.ndarray, um_per_px: float | None = None) -> None:
    ref = _reference()(mask, um_per_px)
    got = count_hairs(mask, um_per_px=um_per_px)
    hairs = ref["hairs"]
    assert len(got) == len(hairs)
    for i, rh in enumerate(hairs):
        np.testing.assert_allclose(got.paths[i], np.array(rh["path"]), atol=1e-6)
        assert got.length_px[i] == pytest.approx(rh["length"], abs=1e-6)
        assert got.width_px[i] == pytest.approx(rh["width"], abs=1e-6)
        assert got.width_sd_px[i] == pytest.approx(rh["width_sd"], abs=1e-6)
    assert got.unit_id.tolist() == [h["unit"] for h in hairs]
    assert got.bundle_size.tolist() == [h["bundle"] for h in hairs]
    labels = np.zeros(mask.shape, np.int32)
    for (y, x), v in ref["labels"].items():
        labels[y, x] = v
    np.testing.assert_array_equal(got.labels, labels)


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_masks(seed):
    _compare(random_mask(seed))


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_with_scale(seed):
    # 2-7 px strokes at 12-37 µm/px: 25-260 µm wide, so the physical-width and
    # uneven-width bundle rules both come into play.
    _compare(random_mask(100 + seed), um_per_px=12.0 + 5.0 * seed)


def test_matches_reference_on_fixtures():
    m = np.zeros((60, 60), np.uint8)
    cv2.line(m, (5, 30), (55, 30), 1, 4)  # X
    cv2.line(m, (30, 5), (30, 55), 1, 4)
    _compare(m.astype(bool))
    v = np.zeros((60, 60), np.uint8)
    cv2.line(v, (30, 55), (10, 8), 1, 4)
    cv2.line(v, (30, 55), (50, 8), 1, 4)
    _compare(v.astype(bool))


def _bars(shape: tuple[int, int], bars: list[tuple[float, float, float, float]]) -> np.ndarray:
    """Horizontal square-cut bars (centre x, centre y, length, width)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, bool)
    for cx, cy, length, width in bars:
        m |= (np.abs(xx - cx) * 2 < length) & (np.abs(yy - cy) * 2 < width)
    return m


@pytest.mark.parametrize("um_per_px", [None, 8.0, 25.0])
def test_matches_reference_on_a_bundle_field(um_per_px):
    # four singles, a double-width shaft, a triple-width one and an uneven one (two
    # hairs side by side, one ending halfway): every bundle rule has its say
    rows = [(50, 6 + 9 * i, 80, 4) for i in range(4)]
    rows += [(50, 44, 80, 8), (50, 60, 80, 12), (50, 76, 80, 4), (30, 79, 40, 4)]
    _compare(_bars((90, 100), rows), um_per_px)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 60))
def test_matches_reference_many(seed):
    _compare(random_mask(seed))
