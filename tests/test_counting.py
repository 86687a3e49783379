"""Counting core (trichoscan.counting): literal fixtures with stated answers and properties."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trichoscan.counting import HairTable, count_hairs
from trichoscan.errors import CalibrationError, InputError

SHAPE = (200, 200)


def _line(m: np.ndarray, p: tuple[int, int], q: tuple[int, int], width: int) -> np.ndarray:
    cv2.line(m, p, q, 1, width)
    return m


def _canvas(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return np.zeros(shape, np.uint8)


def _bar(
    shape: tuple[int, int], centre: tuple[float, float], length: float, width: float, angle: float
) -> np.ndarray:
    """A rectangle (square-cut bar) rasterised by pixel centres: exact, known geometry.

    Half-open in both directions, so an axis-aligned bar of integer size covers exactly
    length x width pixels wherever it lies.
    """
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (-length / 2 <= u) & (u < length / 2) & (-width / 2 <= v) & (v < width / 2)


def _x(angle_deg: float, width: int = 7) -> np.ndarray:
    m = _canvas()
    a = math.radians(angle_deg / 2)
    for s in (1, -1):
        dx, dy = 80 * math.cos(a), 80 * math.sin(a) * s
        _line(m, (int(100 - dx), int(100 - dy)), (int(100 + dx), int(100 + dy)), width)
    return m


def _v(angle_deg: float, width: int = 7) -> np.ndarray:
    m = _canvas()
    a = math.radians(angle_deg / 2)
    for s in (1, -1):
        tip = (int(100 + 120 * math.sin(a) * s), int(180 - 120 * math.cos(a)))
        _line(m, (100, 180), tip, width)
    return m


def _check_table(t: HairTable, shape: tuple[int, int]) -> None:
    """Schema invariants every table must satisfy."""
    n = len(t)
    assert t.hair_id.dtype == np.int32 and np.array_equal(t.hair_id, np.arange(1, n + 1))
    for col in (t.length_px, t.width_px, t.width_sd_px):
        assert col.shape == (n,) and col.dtype == np.float64 and np.isfinite(col).all()
    assert t.end_a_xy.shape == (n, 2) and t.end_b_xy.shape == (n, 2)
    assert t.exit_end.dtype == np.dtype("<U1") and (t.exit_end == "?").all()
    assert t.unit_id.dtype == np.int32 and t.bundle_size.dtype == np.int32
    assert t.labels.shape == shape and t.labels.dtype == np.int32
    assert len(t.paths) == n
    for i, p in enumerate(t.paths):
        assert p.ndim == 2 and p.shape[1] == 2
        np.testing.assert_array_equal(p[0], t.end_a_xy[i])
        np.testing.assert_array_equal(p[-1], t.end_b_xy[i])
    if n:
        assert set(np.unique(t.labels)) <= set(range(n + 1))
        # ids follow end a in raster order (row, then column)
        keys = [(p[0, 1], p[0, 0]) for p in t.paths]
        assert keys == sorted(keys)
        # unit ids are 1..U, numbered in order of first appearance
        seen = list(dict.fromkeys(t.unit_id.tolist()))
        assert seen == list(range(1, len(seen) + 1))


# -- literal fixtures -----------------------------------------------------------------


def test_straight_bar_is_one_hair():
    m = _line(_canvas(), (20, 100), (180, 100), 7)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 1
    assert t.unit_id.tolist() == [1] and t.bundle_size.tolist() == [1]
    # cv2 draws thickness 7 as a 9 px wide band with round caps: 160 + 9 px long
    assert t.length_px[0] == pytest.approx(169, abs=2)
    assert t.width_px[0] == pytest.approx(m.sum() / t.length_px[0], rel=0.02)
    assert (t.labels[m > 0] == 1).all() and (t.labels[m == 0] == 0).all()


@pytest.mark.parametrize("angle", [90, 60, 40, 25])
def test_x_crossing_is_two_hairs_two_units(angle):
    t = count_hairs(_x(angle))
    _check_table(t, SHAPE)
    assert len(t) == 2
    assert sorted(t.unit_id.tolist()) == [1, 2]
    np.testing.assert_allclose(t.length_px, 169, atol=3)


@pytest.mark.parametrize("angle", [30, 45, 60, 90])
def test_v_from_one_point_is_two_hairs_one_unit(angle):
    t = count_hairs(_v(angle))
    _check_table(t, SHAPE)
    assert len(t) == 2
    assert t.unit_id.tolist() == [1, 1]
    np.testing.assert_allclose(t.length_px, 120, rtol=0.1)


def test_y_short_stem_is_two_hairs_one_unit():
    m = _canvas()
    _line(m, (100, 180), (100, 150), 9)
    _line(m, (100, 150), (60, 30), 7)
    _line(m, (100, 150), (140, 30), 7)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 2
    assert t.unit_id.tolist() == [1, 1]


def test_t_is_two_hairs_two_units():
    m = _canvas()
    _line(m, (20, 60), (180, 60), 7)
    _line(m, (100, 60), (100, 180), 7)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 2
    assert sorted(t.unit_id.tolist()) == [1, 2]
    # the through hair keeps its full length; the other ends on its centre line
    assert sorted(np.round(t.length_px).tolist()) == pytest.approx([124, 169], abs=3)


def test_touching_parallel_bars_are_one_bundle_of_two():
    m = _canvas()
    for y in (20, 50, 80, 110):  # single hairs set the typical terminal width
        _line(m, (20, y), (180, y), 6)
    _line(m, (20, 150), (180, 150), 6)
    _line(m, (20, 156), (180, 156), 6)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 5
    assert t.bundle_size.tolist() == [1, 1, 1, 1, 2]
    assert t.width_px[4] == pytest.approx(2 * np.median(t.width_px[:4]), rel=0.1)


def test_bundle_needs_enough_hairs_for_a_typical_width():
    m = _canvas()
    _line(m, (20, 150), (180, 150), 6)
    _line(m, (20, 156), (180, 156), 6)
    t = count_hairs(m)
    assert len(t) == 1 and t.bundle_size.tolist() == [1]


def _field(widths: list[float], shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Horizontal square-cut bars 160 px long, one per width, top to bottom (ids follow)."""
    m = np.zeros(shape, bool)
    y = 10.0
    for w in widths:
        y += w / 2
        m |= _bar(shape, (100.0, y), 160.0, w, 0.0)
        y += w / 2 + 8
    return m


def test_double_width_shafts_among_singles_are_bundles_of_two():
    t = count_hairs(_field([6] * 6 + [12, 12]))
    _check_table(t, SHAPE)
    assert t.bundle_size.tolist() == [1] * 6 + [2, 2]
    # triple width: 3 hairs (w / W >= 3)
    t = count_hairs(_field([6] * 6 + [12, 18]))
    assert t.bundle_size.tolist() == [1] * 6 + [2, 3]


def test_wide_shaft_with_scale_is_a_bundle_by_physical_width():
    m = _field([10])
    # 10 px at 30 µm/px = 300 µm: no single hair is that wide -> 3 hairs
    assert count_hairs(m, um_per_px=30.0).bundle_size.tolist() == [3]
    # 10 px at 12 µm/px = 120 µm: at least 2 hairs
    assert count_hairs(m, um_per_px=12.0).bundle_size.tolist() == [2]
    # 10 px at 8 µm/px = 80 µm: a single terminal hair
    assert count_hairs(m, um_per_px=8.0).bundle_size.tolist() == [1]
    # no scale and too few hairs for a typical width: 1
    assert count_hairs(m).bundle_size.tolist() == [1]


def test_field_of_only_bundles_needs_the_scale():
    m = _field([14] * 6)
    # 14 px at 10 µm/px = 140 µm each: every shaft is a bundle although the typical
    # (median) width is itself a bundle width
    assert count_hairs(m, um_per_px=10.0).bundle_size.tolist() == [2] * 6
    # without a scale the mask alone cannot tell them from single hairs
    assert count_hairs(m).bundle_size.tolist() == [1] * 6


def test_uneven_shaft_is_a_bundle():
    # Two 6 px hairs side by side, one ending halfway: the shaft is 12 px wide over one
    # half and 6 px over the other (mean 9 px = 1.5 W, below BUNDLE_RATIO_2), but its
    # width steps along it (SD 3 px = 0.33 of its width).
    m = _field([6] * 4)
    m |= _bar(SHAPE, (100.0, 150.0), 160.0, 6, 0.0)
    m |= _bar(SHAPE, (60.0, 156.0), 80.0, 6, 0.0)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 5
    assert t.width_sd_px[4] >= 0.12 * t.width_px[4]
    assert t.bundle_size.tolist() == [1, 1, 1, 1, 2]
    # with a scale: 9 px at 8 µm/px = 72 µm >= 60 µm -> 2; at 5 µm/px = 45 µm -> 1 (a
    # thin hair whose width varies, e.g. a tapered vellus hair)
    assert count_hairs(m, um_per_px=8.0).bundle_size.tolist() == [1, 1, 1, 1, 2]
    assert count_hairs(m, um_per_px=5.0).bundle_size.tolist() == [1] * 5


def test_closed_loop_is_one_hair():
    m = _canvas()
    cv2.circle(m, (100, 100), 60, 1, 7)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 1
    # centre-line circumference 2 pi 60 = 377
    assert t.length_px[0] == pytest.approx(2 * math.pi * 60, rel=0.015)


def test_bar_cut_by_border_is_one_hair_measured_to_the_border():
    m = _line(_canvas(), (-20, 100), (120, 100), 7)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 1
    assert t.length_px[0] == pytest.approx(125, abs=1.5)  # 0 .. 120 + round cap
    assert t.width_px[0] == pytest.approx(9, abs=0.3)
    assert min(t.end_a_xy[0, 0], t.end_b_xy[0, 0]) < 5


def test_empty_mask_is_an_empty_table():
    t = count_hairs(np.zeros(SHAPE, bool), um_per_px=4.0)
    _check_table(t, SHAPE)
    assert len(t) == 0 and t.um_per_px == 4.0
    assert t.length_um is not None and t.length_um.shape == (0,)


def test_full_mask_is_a_typed_error():
    with pytest.raises(InputError, match="entirely foreground"):
        count_hairs(np.ones(SHAPE, bool))


def test_separate_hairs_get_separate_units_and_labels():
    m = _canvas()
    _line(m, (20, 30), (180, 30), 5)
    _line(m, (20, 100), (180, 140), 5)
    _line(m, (30, 170), (60, 190), 5)
    t = count_hairs(m)
    _check_table(t, SHAPE)
    assert len(t) == 3 and t.unit_id.tolist() == [1, 2, 3]
    assert t.end_a_xy[0, 1] < t.end_a_xy[1, 1] < t.end_a_xy[2, 1]
    for i in range(3):
        assert (t.labels == i + 1).sum() > 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((5, 5, 3), bool),
        np.zeros(5, bool),
        np.array([[0, 2], [1, 0]]),
        np.array([[0.0, 0.5], [1.0, 0.0]]),
        np.array([["a", "b"]]),
        [[0, 1], [1, 0]],
        np.zeros((0, 4), bool),
    ],
)
def test_bad_masks_raise_input_error(bad):
    with pytest.raises(InputError):
        count_hairs(bad)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_binary_dtypes_are_accepted(dtype):
    m = _line(_canvas(), (20, 100), (180, 100), 7).astype(dtype)
    assert len(count_hairs(m)) == 1


def test_bad_scale_is_a_calibration_error():
    m = _line(_canvas(), (20, 100), (180, 100), 7)
    with pytest.raises(CalibrationError):
        count_hairs(m, um_per_px=1000.0)
    with pytest.raises(CalibrationError):
        count_hairs(m, um_per_px=-1.0)


def test_deterministic():
    m = _x(50)
    a, b = count_hairs(m), count_hairs(m.copy())
    for f in ("length_px", "width_px", "width_sd_px", "end_a_xy", "unit_id", "labels"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_fixture_topology_survives_rotations_and_flips(k, flip):
    for make, n, units in ((lambda: _x(60), 2, 2), (lambda: _v(60), 2, 1)):
        m = np.rot90(make(), k)
        m = np.ascontiguousarray(m[:, ::-1] if flip else m)
        t = count_hairs(m)
        assert len(t) == n and t.unit_id.max() == units


# -- properties ---------------------------------------------------------------------


@st.composite
def bars(draw):
    """A square-cut bar 3-20 px wide at any angle and sub-pixel position."""
    width = draw(st.floats(3.0, 20.0))
    length = draw(st.floats(max(80.0, 6 * width), 220.0))
    angle = draw(st.floats(0.0, math.pi))
    cx, cy = draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))
    return width, length, angle, (130 + cx, 130 + cy)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars())
def test_bar_width_and_length_are_accurate(bar):
    """Bars of known width 3-20 px at any angle: width within 0.3 px, length within 1.5 %.

    The known width is the raster's own (area / length): at axis-aligned angles a band of
    nominal width w covers floor or ceil(w) pixel rows, and no measurement can see past that.
    """
    width, length, angle, centre = bar
    m = _bar((260, 260), centre, length, width, angle)
    t = count_hairs(m)
    assert len(t) == 1
    assert t.length_px[0] == pytest.approx(length, rel=0.015)
    assert t.width_px[0] == pytest.approx(m.sum() / length, abs=0.3)
    assert t.width_px[0] == pytest.approx(width, abs=1.0)  # raster vs nominal: < 1 row


@st.composite
def scenes(draw):
    """One to three separate bars (a gap of at least 3 px between them)."""
    m = np.zeros((180, 180), bool)
    n = draw(st.integers(1, 3))
    placed = 0
    for _ in range(n):
        width = draw(st.floats(3.0, 12.0))
        length = draw(st.floats(max(50.0, 5 * width), 140.0))
        angle = draw(st.floats(0.0, math.pi))
        cx, cy = draw(st.floats(40.0, 140.0)), draw(st.floats(40.0, 140.0))
        b = _bar(m.shape, (cx, cy), length, width, angle)
        grown = cv2.dilate(b.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        if not (grown & m).any():
            m |= b
            placed += 1
    return m, placed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.integers(0, 3), st.booleans())
def test_invariant_under_rotations_and_flips(scene, k, flip):
    m, placed = scene
    t0 = count_hairs(m)
    assert len(t0) == placed
    r = np.rot90(m, k)
    r = np.ascontiguousarray(r[:, ::-1] if flip else r)
    t1 = count_hairs(r)
    assert len(t1) == len(t0)
    # tips of a rotated raster differ by a fraction of a pixel: 1.5 % or 1 px per hair
    tol = max(0.015 * t0.length_px.sum(), 1.0 * len(t0))
    assert t1.length_px.sum() == pytest.approx(t0.length_px.sum(), abs=tol)
    np.testing.assert_allclose(np.sort(t1.width_px), np.sort(t0.width_px), atol=0.3)
    assert t1.bundle_size.sum() == t0.bundle_size.sum()


@settings(max_examples=15, deadline=None)
@given(scenes(), st.floats(0.5, 50.0))
def test_micrometres_scale_linearly(scene, um_per_px):
    m, _ = scene
    t0 = count_hairs(m)
    t = count_hairs(m, um_per_px=um_per_px)
    assert t.um_per_px == um_per_px
    np.testing.assert_array_equal(t.length_px, t0.length_px)
    np.testing.assert_array_equal(t.width_px, t0.width_px)
    np.testing.assert_allclose(t.length_um, t0.length_px * um_per_px)
    np.testing.assert_allclose(t.width_um, t0.width_px * um_per_px)
    rec = t.to_records()
    assert all(r["length_um"] is not None for r in rec)
    assert t0.length_um is None and t0.width_um is None


# -- exact distances without full-image exact transforms --------------------------------


def _distance_masks() -> list[np.ndarray]:
    """Strokes of many widths, blobs and border-touching shapes."""
    rng = np.random.default_rng(7)
    masks = []
    for i in range(12):
        m = np.zeros((90, 120), np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            p = tuple(int(v) for v in rng.integers(-10, 130, 2))
            q = tuple(int(v) for v in rng.integers(-10, 130, 2))
            cv2.line(m, p, q, 1, int(rng.integers(1, 25)))
        if i % 3 == 0:
            cv2.circle(m, (60, 45), int(rng.integers(5, 40)), 1, -1)
        masks.append(m)
    masks.append((rng.random((60, 70)) < 0.6).astype(np.uint8))  # speckle
    return masks


def test_distance_at_skeleton_pixels_is_exact():
    from skimage.morphology import skeletonize

    from trichoscan.counting import _ExactDistance, _nonzero_flat

    for m in _distance_masks():
        skel = skeletonize(m.astype(bool)).view(np.uint8)
        pix = _nonzero_flat(skel)
        # the exact transform with the image border not background: pad with foreground
        big = cv2.copyMakeBorder(m, 200, 200, 200, 200, cv2.BORDER_CONSTANT, value=1)
        big[0, 0] = 0  # one far background pixel so the padded image is not all foreground
        exact = cv2.distanceTransform(big, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        exact = exact[200:-200, 200:-200].ravel()[pix].astype(np.float64)
        np.testing.assert_allclose(_ExactDistance(m, pix)[pix], exact, atol=1e-4)


def test_nearest_skeleton_pixel_is_exact_with_raster_ties():
    from skimage.morphology import skeletonize

    from trichoscan.counting import _nearest_skeleton, _skeleton_distance2

    for m in _distance_masks():
        skel = skeletonize(m.astype(bool)).view(np.uint8)
        pix, near = _nearest_skeleton(m, skel, _skeleton_distance2(skel, m))
        w = m.shape[1]
        sy, sx = np.nonzero(skel)  # raster order: argmin picks the smallest index on ties
        d2 = (pix[:, None] // w - sy) ** 2 + (pix[:, None] % w - sx) ** 2
        np.testing.assert_array_equal(near, sy[d2.argmin(1)] * w + sx[d2.argmin(1)])


def test_neighbour_count_and_branch_ends_match_direct_counts():
    from skimage.morphology import skeletonize

    from trichoscan.counting import _neighbour_count, _skeleton_graph

    for m in _distance_masks():
        skel = skeletonize(m.astype(bool)).view(np.uint8)
        padded = np.pad(skel, 1).astype(np.int64)
        h, w = skel.shape
        direct = sum(
            padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if dy or dx
        )
        np.testing.assert_array_equal(_neighbour_count(skel), direct)
        # every branch is a path or a cycle: its two ends (path) or none (cycle)
        g = _skeleton_graph(skel, np.flatnonzero(skel).astype(np.int32))
        n = np.diff(g.offsets)
        assert (n[g.is_cycle] >= 3).all() and (n > 0).all()


def test_a_45_degree_bar_down_to_the_right_is_not_thinned_away():
    """Zhang-Suen thinning erases this exact staircase to one pixel; the core re-thins it."""
    from skimage.morphology import skeletonize

    bar = _bar((120, 120), (60.5, 60.25), 50.0, 7.0, math.pi / 4)
    assert skeletonize(bar).sum() <= 2  # the thinning's own failure, which this guards
    t = count_hairs(bar)
    assert len(t) == 1
    assert t.length_px[0] == pytest.approx(50.0, rel=0.03)
    assert t.width_px[0] == pytest.approx(bar.sum() / t.length_px[0], rel=0.05)
    turned = count_hairs(np.ascontiguousarray(bar[:, ::-1]))  # the mirror thins correctly
    assert turned.length_px[0] == pytest.approx(t.length_px[0], abs=1.0)


def test_a_tip_near_another_hair_keeps_its_own_pixels():
    """A square-cut tip 3 px from another hair: its corner pixels lie nearer to the other
    hair's skeleton than to its own (thinning stops short of the tip), but belong to it."""
    m = _bar((180, 180), (69.8, 72.1), 80.4, 5.67, 1.375) | _bar(
        (180, 180), (118.1, 41.8), 81.7, 7.16, 2.356
    )
    m = np.ascontiguousarray(np.rot90(m))  # (found by the rotation property test)
    t = count_hairs(m)
    assert len(t) == 2
    n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    assert n == 3
    for c in (1, 2):
        ids = np.unique(t.labels[comp == c])
        assert ids.size == 1
        row = int(np.flatnonzero(t.hair_id == ids[0])[0])
        assert t.width_px[row] == pytest.approx((comp == c).sum() / t.length_px[row], rel=0.02)
