"""Photo cross-profile widths (trichoscan.profiles): drawn shafts of known width."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trichoscan.counting import count_hairs
from trichoscan.errors import InputError
from trichoscan.profiles import MIN_SECTIONS, profile_widths

SKIN = np.array([0.78, 0.58, 0.50])
HAIR = np.array([0.20, 0.14, 0.12])
SHAPE = (160, 240)


def _distance_to_segment(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def _scene(
    segments: list[tuple[float, float, float, float, float]],
    *,
    mask_shrink_px: float = 2.0,
    blur_sigma: float = 1.5,
    hair: np.ndarray = HAIR,
) -> tuple[np.ndarray, np.ndarray]:
    """An opaque shaft per (x0, y0, x1, y1, width) on flat skin, blurred like optics, and a
    mask ``mask_shrink_px`` narrower on each side (a segmenter whose edge sits inside)."""
    cover = np.zeros(SHAPE)
    mask = np.zeros(SHAPE, bool)
    for x0, y0, x1, y1, width in segments:
        d = _distance_to_segment(x0, y0, x1, y1)
        cover = np.maximum(cover, np.clip(width / 2 - d + 0.5, 0.0, 1.0))
        mask |= d <= width / 2 - mask_shrink_px
    rgb = SKIN * (1 - cover[..., None]) + hair * cover[..., None]
    rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), blur_sigma)
    return rgb, mask


def _field() -> np.ndarray:
    return np.ones(SHAPE, bool)


@pytest.mark.parametrize("angle_deg", [0.0, 33.0, 90.0, 124.0])
@pytest.mark.parametrize("width", [8.0, 16.0])
def test_width_is_the_shafts_not_the_masks(angle_deg, width):
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    seg = (120 - 60 * c, 80 - 60 * s, 120 + 60 * c, 80 + 60 * s, width)
    rgb, mask = _scene([seg])
    hairs = count_hairs(mask)
    assert len(hairs) == 1
    assert hairs.width_px[0] == pytest.approx(width - 4.0, abs=1.0)  # the narrow mask
    measured = profile_widths(hairs, rgb, _field())
    assert measured.measured[0]
    assert measured.sections[0] >= 20
    assert measured.width_px[0] == pytest.approx(width, abs=0.6)


def test_a_wider_mask_does_not_widen_the_photo_width():
    rgb, mask = _scene([(30, 80, 210, 80, 10.0)], mask_shrink_px=-2.0)
    hairs = count_hairs(mask)
    assert hairs.width_px[0] == pytest.approx(14.0, abs=1.0)
    assert profile_widths(hairs, rgb, _field()).width_px[0] == pytest.approx(10.0, abs=0.6)


def test_thin_short_and_faint_hairs_keep_their_mask_width():
    # 2 px mask: blur sets its profile. 12 px long: too few sections. Faint: the shaft
    # barely differs from the skin, so no section clears the noise.
    thin_rgb, thin_mask = _scene([(30, 80, 210, 80, 4.0)], mask_shrink_px=1.0)
    short_rgb, short_mask = _scene([(110, 80, 122, 80, 8.0)])
    faint_rgb, faint_mask = _scene([(30, 80, 210, 80, 10.0)], hair=SKIN - 0.01)
    for rgb, mask in [(thin_rgb, thin_mask), (short_rgb, short_mask), (faint_rgb, faint_mask)]:
        hairs = count_hairs(mask)
        assert len(hairs) == 1
        measured = profile_widths(hairs, rgb, _field())
        assert not measured.measured[0]
        assert np.isnan(measured.width_px[0])
    short = profile_widths(count_hairs(short_mask), short_rgb, _field())
    assert short.sections[0] < MIN_SECTIONS


def test_a_parallel_neighbour_is_not_taken_for_the_shaft():
    # Two 10 px shafts 6 px apart: each section stops short of the other hair, so the
    # width stays one shaft's, not the pair's.
    rgb, mask = _scene([(20, 70, 220, 70, 10.0), (20, 86, 220, 86, 10.0)])
    hairs = count_hairs(mask)
    assert len(hairs) == 2
    measured = profile_widths(hairs, rgb, _field())
    assert measured.measured.all()
    assert measured.width_px == pytest.approx([10.0, 10.0], abs=1.0)


def test_sections_across_a_crossing_are_not_used():
    rgb, mask = _scene([(20, 80, 220, 80, 10.0), (120, 5, 120, 155, 10.0)])
    hairs = count_hairs(mask)
    measured = profile_widths(hairs, rgb, _field())
    assert measured.measured.any()
    # Widths from the clean parts only: a section through the other hair would be
    # far wider than 10 px.
    ok = measured.measured
    assert measured.width_px[ok] == pytest.approx(np.full(ok.sum(), 10.0), abs=1.0)


def test_skin_outside_the_field_is_not_used():
    rgb, mask = _scene([(30, 80, 210, 80, 10.0)])
    hairs = count_hairs(mask)
    field = _field()
    field[:80] = False  # one side of the shaft lies outside the analysed field
    measured = profile_widths(hairs, rgb, field)
    assert not measured.measured[0]
    assert measured.sections[0] == 0


def test_no_hairs_and_mismatched_inputs():
    empty = count_hairs(np.zeros(SHAPE, bool))
    rgb = np.full((*SHAPE, 3), 0.5, np.float32)
    result = profile_widths(empty, rgb, _field())
    assert result.width_px.shape == (0,) and result.sections.shape == (0,)
    hairs = count_hairs(_scene([(30, 80, 210, 80, 10.0)])[1])
    with pytest.raises(InputError):
        profile_widths(hairs, rgb[:, :-1], _field())
    with pytest.raises(InputError):
        profile_widths(hairs, rgb[..., 0], _field())
    with pytest.raises(InputError):
        profile_widths(hairs, rgb, _field()[:-1])


def test_masked_percentile_matches_numpy():
    from trichoscan.profiles import _masked_percentile

    rng = np.random.default_rng(3)
    values = rng.normal(size=(300, 41))
    keep = rng.uniform(size=values.shape) < 0.3
    keep[:4] = False  # rows with nothing kept give NaN
    keep[4:8] = False
    keep[4:8, 7] = True  # a single kept sample is its own percentile
    has = keep.any(axis=1)
    for q in (0.0, 50.0, 90.0, 100.0):
        expected = np.full(values.shape[0], np.nan)
        expected[has] = np.nanpercentile(np.where(keep, values, np.nan)[has], q, axis=1)
        got = _masked_percentile(values, keep, q)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.isnan(got[:4]).all()
    np.testing.assert_array_equal(got[4:8], values[4:8, 7])
