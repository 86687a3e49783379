"""Exit-end assignment (trichoscan.follicles): drawn fixtures and rendered photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trichoscan.counting import HairTable
from trichoscan.follicles import ExitEstimate, assign_exit_ends

SKIN = (0.86, 0.72, 0.66)
HAIR = (0.12, 0.10, 0.09)
SUBSURFACE = (0.55, 0.58, 0.68)  # fainter blue-grey shaft under the skin


def _table(
    polylines: list[np.ndarray],
    widths: list[float],
    shape: tuple[int, int],
    unit_ids: list[int] | None = None,
    reverse: list[bool] | None = None,
) -> HairTable:
    """A HairTable built from exit->tip polylines, as the counting core would give it.

    Each polyline is rasterised into ``labels``; ``reverse[i]`` makes end ``a`` the tip, so
    the right answer is not always 'a'.
    """
    n = len(polylines)
    reverse = reverse or [False] * n
    unit_ids = unit_ids or list(range(1, n + 1))
    labels = np.zeros(shape, dtype=np.int32)
    paths = []
    for i, (pl, w) in enumerate(zip(polylines, widths, strict=True)):
        pl = np.asarray(pl, dtype=np.float64)
        cv2.polylines(
            labels, [np.rint(pl).astype(np.int32)], False, i + 1, max(1, round(w)), cv2.LINE_8
        )
        paths.append(pl[::-1].copy() if reverse[i] else pl)
    return _table_from_paths(paths, widths, unit_ids, labels)


def _table_from_paths(
    paths: list[np.ndarray], widths: list[float], unit_ids: list[int], labels: np.ndarray
) -> HairTable:
    """A HairTable of hairs with these centre lines (end a = first point), exit unknown."""
    n = len(paths)
    return HairTable(
        hair_id=np.arange(1, n + 1, dtype=np.int32),
        length_px=np.array([np.hypot(*np.diff(p, axis=0).T).sum() for p in paths]),
        width_px=np.asarray(widths, dtype=np.float64),
        width_sd_px=np.zeros(n),
        end_a_xy=np.array([p[0] for p in paths]).reshape(n, 2),
        end_b_xy=np.array([p[-1] for p in paths]).reshape(n, 2),
        exit_end=np.full(n, "?", dtype="<U1"),
        unit_id=np.asarray(unit_ids, dtype=np.int32),
        bundle_size=np.ones(n, dtype=np.int32),
        labels=labels,
        paths=tuple(paths),
    )


def _draw(
    shape: tuple[int, int],
    polylines: list[np.ndarray],
    widths: list[float],
    subsurface: list[bool],
    seed: int = 0,
) -> np.ndarray:
    """A flat skin photo with dark hairs; a blue-grey continuation behind exits that have it."""
    img = np.empty((*shape, 3), np.float32)
    img[:] = SKIN
    for pl, w, sub in zip(polylines, widths, subsurface, strict=True):
        pl = np.asarray(pl, dtype=np.float64)
        if sub:
            d = pl[0] - pl[1]
            d /= np.hypot(*d)
            far = pl[0] + 6.0 * w * d
            seg = np.rint([far, pl[0]]).astype(np.int32)
            cv2.polylines(img, [seg], False, SUBSURFACE, max(1, round(0.8 * w)), cv2.LINE_AA)
        cv2.polylines(img, [np.rint(pl).astype(np.int32)], False, HAIR, max(1, round(w)))
    rng = np.random.default_rng(seed)
    img += rng.normal(0.0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def _bar(x0: float, y0: float, angle_deg: float, length: float, steps: int = 8) -> np.ndarray:
    """A straight polyline from (x0, y0) (the exit) along ``angle_deg``."""
    t = np.linspace(0.0, length, steps)
    a = np.deg2rad(angle_deg)
    return np.stack([x0 + t * np.cos(a), y0 + t * np.sin(a)], axis=1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0, 200.0])
def test_continuation_cue_finds_the_exit(reverse: bool, angle: float) -> None:
    shape = (200, 200)
    pl = _bar(100 - 40 * np.cos(np.deg2rad(angle)), 100 - 40 * np.sin(np.deg2rad(angle)), angle, 80)
    hairs = _table([pl], [7.0], shape, reverse=[reverse])
    rgb = _draw(shape, [pl], [7.0], [True])
    est = assign_exit_ends(hairs, rgb)
    assert est.hairs.exit_end[0] == ("b" if reverse else "a")
    assert est.continuation[0] * (-1 if reverse else 1) > 0
    assert est.confidence[0] > 0.7


def test_v_shaped_unit_exits_at_the_shared_end() -> None:
    shape = (200, 200)
    # Two hairs leaving one opening at (100, 60) in a V, no subsurface drawn: only the unit cue.
    pls = [_bar(100, 60, 60, 90), _bar(100, 60, 120, 90)]
    hairs = _table(pls, [6.0, 6.0], shape, unit_ids=[1, 1], reverse=[True, False])
    rgb = _draw(shape, pls, [6.0, 6.0], [False, False])
    est = assign_exit_ends(hairs, rgb)
    assert list(est.hairs.exit_end) == ["b", "a"]
    assert est.unit[0] < 0 < est.unit[1]


def test_flow_consensus_fixes_an_ambiguous_hair() -> None:
    shape = (400, 400)
    # A field of parallel hairs growing down-right with visible subsurface shafts, and one
    # hair in the middle with no evidence at either end.
    pls, subs = [], []
    for gx in range(4):
        for gy in range(4):
            pls.append(_bar(40 + 90 * gx, 30 + 90 * gy, 60, 50))
            subs.append(True)
    mid = len(pls)
    pls.append(_bar(180, 170, 60, 50))
    subs.append(False)
    rev = [i % 3 == 0 for i in range(len(pls))]
    rev[mid] = True
    hairs = _table(pls, [5.0] * len(pls), shape, reverse=rev)
    rgb = _draw(shape, pls, [5.0] * len(pls), subs)
    est = assign_exit_ends(hairs, rgb)
    want = np.where(rev, "b", "a")
    assert (est.hairs.exit_end == want).all()
    assert abs(est.continuation[mid]) < 0.5 * np.abs(est.continuation[:mid]).min()
    assert est.flow[mid] < 0  # neighbours vote for end b


def test_outputs_shapes_and_ranges() -> None:
    shape = (160, 240)
    pls = [_bar(30, 40, 10, 60), _bar(150, 100, 200, 70), np.array([[5.0, 5.0]])]
    hairs = _table(pls, [6.0, 4.0, 3.0], shape)
    rgb = _draw(shape, pls, [6.0, 4.0, 3.0], [True, True, False])
    est = assign_exit_ends(hairs, rgb)
    assert isinstance(est, ExitEstimate)
    n = len(hairs)
    for arr in (est.confidence, est.score, est.continuation, est.opening, est.unit, est.taper):
        assert arr.shape == (n,)
        assert np.isfinite(arr).all()
    assert ((est.confidence >= 0.5) & (est.confidence <= 1.0)).all()
    assert est.hairs.exit_end[2] == "?"  # a single-point path is degenerate
    assert set(est.hairs.exit_end[:2]) <= {"a", "b"}
    assert est.hairs.labels is hairs.labels


def test_empty_table() -> None:
    hairs = HairTable.empty((50, 60))
    est = assign_exit_ends(hairs, np.zeros((50, 60, 3), np.float32))
    assert len(est.hairs) == 0
    assert est.confidence.shape == (0,)


def test_shape_mismatch_is_rejected() -> None:
    hairs = HairTable.empty((50, 60))
    with pytest.raises(ValueError):
        assign_exit_ends(hairs, np.zeros((50, 61, 3), np.float32))
    with pytest.raises(ValueError):
        assign_exit_ends(hairs, np.zeros((50, 60, 3), np.float32), field=np.ones((5, 5), bool))


def test_field_border_end_reads_neutral() -> None:
    # A hair whose exit end lies outside the field: the inner end (a tip, plain skin beyond)
    # must not be taken for the exit.
    shape = (200, 200)
    pl = _bar(20, 100, 0, 120)
    field = np.zeros(shape, bool)
    field[:, 40:] = True
    hairs = _table([pl], [6.0], shape, reverse=[True])
    rgb = _draw(shape, [pl], [6.0], [True])
    est = assign_exit_ends(hairs, rgb, field)
    assert est.hairs.exit_end[0] == "b"


def test_deterministic() -> None:
    shape = (200, 200)
    pls = [_bar(30, 30, 45, 60), _bar(150, 40, 100, 80)]
    hairs = _table(pls, [6.0, 5.0], shape, reverse=[False, True])
    rgb = _draw(shape, pls, [6.0, 5.0], [True, False])
    e1, e2 = assign_exit_ends(hairs, rgb), assign_exit_ends(hairs, rgb)
    assert (e1.hairs.exit_end == e2.hairs.exit_end).all()
    assert np.array_equal(e1.score, e2.score)


def _truth_table(render, rng: np.random.Generator) -> tuple[HairTable, np.ndarray]:
    """HairTable of a render's visible hairs from its truth, and the right exit end of each.

    Each hair's centre line is cut to its longest run inside the field (what a detector
    could see), rasterised into ``labels`` (restricted to the truth mask), and reversed at
    random so that end ``a`` is the exit only about half the time.
    """
    field = render.field_mask
    h, w = field.shape
    labels = np.zeros((h, w), np.int32)
    paths, widths, units, want = [], [], [], []
    for t in render.hairs:
        if not t.counted_visible:
            continue
        poly = np.asarray(t.polyline_xy, dtype=np.float64)
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(poly, axis=0).T))])
        s = np.arange(0.0, arc[-1], 1.0)
        pts = np.stack([np.interp(s, arc, poly[:, 0]), np.interp(s, arc, poly[:, 1])], 1)
        xi, yi = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        ok = np.zeros(len(pts), bool)
        ok[inside] = field[yi[inside], xi[inside]]
        edges = np.diff(np.concatenate([[0], ok.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts.size == 0:
            continue
        k = int(np.argmax(ends - starts))
        p = pts[starts[k] : ends[k]]
        if len(p) < 3:
            continue
        tmp = np.zeros((h, w), np.uint8)
        cv2.polylines(tmp, [np.rint(p).astype(np.int32)], False, 1, max(1, round(t.width_px)))
        labels[(tmp > 0) & render.mask] = len(paths) + 1
        rev = bool(rng.uniform() < 0.5)
        paths.append(p[::-1].copy() if rev else p)
        widths.append(max(t.width_px, 1.0))
        units.append(t.unit_id)
        want.append("b" if rev else "a")
    return _table_from_paths(paths, widths, units, labels), np.array(want, dtype="<U1")


def test_exit_accuracy_on_renders() -> None:
    # Development seeds only (the benchmark's reserved range is never used in tests).
    synth = pytest.importorskip("trichoscan.synth")
    preprocess = pytest.importorskip("trichoscan.preprocess")
    cfg = synth.SynthConfig(height=384, width=480)
    right, total = 0, 0
    for seed in range(4, 10):
        render = synth.render(seed, cfg)
        prepared = preprocess.prepare(render.image)
        hairs, want = _truth_table(render, np.random.default_rng(seed))
        est = assign_exit_ends(hairs, prepared.rgb, prepared.field)
        right += int((est.hairs.exit_end == want).sum())
        total += len(hairs)
    assert total >= 80
    # Measured 100 % on these seeds (137 hairs) and 94-96 % over 400 full-size development
    # renders; photos with few hairs can flip as a whole, hence the margin.
    assert right / total >= 0.85


def test_many_samples_beyond_remap_limit() -> None:
    # cv2.remap refuses maps of 32767 rows or more: sampling must lay points out in blocks.
    from scipy.ndimage import map_coordinates

    from trichoscan.follicles import _sample

    rng = np.random.default_rng(1)
    img = rng.random((50, 60, 3)).astype(np.float32)
    xy = rng.random((40000, 2)) * [59, 49]
    got = _sample(img, xy)
    want = np.stack(
        [map_coordinates(img[..., c], [xy[:, 1], xy[:, 0]], order=1) for c in range(3)], axis=1
    )
    assert got.shape == (40000, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.isnan(_sample(img, np.array([[-5.0, 3.0]]))).all()
