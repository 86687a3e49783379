"""Tests of the synthetic trichoscopy renderer and its ground truth."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest

from trichoscan import synth
from trichoscan.synth import (
    RENDERER_VERSION,
    TERMINAL_MIN_UM,
    VELLUS_MAX_UM,
    SynthConfig,
    hair_class_from_width,
    realism_stats,
    render,
    write_render,
)

SMALL = SynthConfig(height=192, width=256)
# Dense, varied small scenes; seeds fixed so failures reproduce.
SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)


@pytest.fixture(scope="module")
def renders() -> list[synth.Render]:
    cfg = replace(SMALL, p_header=0.5, p_scale_bar=0.5, p_vignette=0.5)
    return [render(s, cfg) for s in SEEDS]


def _seg_distance(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of each (x, y) point to a polyline (round caps; an upper bound on flat)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(poly[:-1], poly[1:], strict=True):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        d = np.hypot(*(points - (a + t[:, None] * ab)).T)
        best = np.minimum(best, d)
    return best


def test_version_and_cutoffs_are_literal() -> None:
    assert RENDERER_VERSION.count(".") == 2
    assert VELLUS_MAX_UM == 30.0
    assert TERMINAL_MIN_UM == 60.0


@pytest.mark.parametrize(
    ("width", "cls"),
    [
        (10.0, "vellus"),
        (29.99, "vellus"),
        (30.0, "intermediate"),
        (59.9, "intermediate"),
        (60.0, "terminal"),
        (120.0, "terminal"),
    ],
)
def test_class_from_width(width: float, cls: str) -> None:
    assert hair_class_from_width(width) == cls


def test_same_seed_is_bit_identical() -> None:
    a = render(11, SMALL)
    b = render(11, SMALL)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.field_mask, b.field_mask)
    assert a.truth_dict() == b.truth_dict()
    c = render(12, SMALL)
    assert not np.array_equal(a.image, c.image)


def test_output_types_and_shapes() -> None:
    r = render(3, replace(SMALL, um_per_px=(5.0, 5.0)))
    assert r.image.shape == (192, 256, 3)
    assert r.image.dtype == np.uint8
    for m in (r.mask, r.subsurface_mask, r.field_mask):
        assert m.shape == (192, 256)
        assert m.dtype == bool
    assert r.um_per_px == 5.0
    assert r.seed == 3
    for key in ("hair_colour", "skin_tone", "density_per_cm2", "um_per_px"):
        assert key in r.params
    assert r.params["skin_tone"] in ("very_light", "light", "medium", "dark", "very_dark")


def test_hair_geometry_fields(renders: list[synth.Render]) -> None:
    n = 0
    for r in renders:
        for hr in r.hairs:
            n += 1
            assert hr.polyline_xy.shape[1] == 2 and len(hr.polyline_xy) >= 2
            assert hr.exit_xy == (hr.polyline_xy[0, 0], hr.polyline_xy[0, 1])
            # The subsurface part ends at the exit point.
            assert np.allclose(hr.subsurface_xy[-1], hr.polyline_xy[0])
            chords = np.hypot(*np.diff(hr.polyline_xy, axis=0).T).sum()
            assert hr.length_px == pytest.approx(chords, rel=1e-9)
            assert hr.length_um == pytest.approx(hr.length_px * r.um_per_px)
            assert hr.width_px == pytest.approx(hr.width_um / r.um_per_px)
            assert 10.0 <= hr.width_um <= 120.0
            assert hr.hair_class == hair_class_from_width(hr.width_um)
            assert hr.tip_width_um <= hr.width_um <= hr.base_width_um
            if hr.clipped:
                assert 200.0 - 1e-6 <= hr.length_um <= 2000.0 + 1e-6
    assert n > 50


def test_unit_sizes_between_one_and_four(renders: list[synth.Render]) -> None:
    sizes: Counter[int] = Counter()
    for r in renders:
        per_unit = Counter(h.unit_id for h in r.hairs)
        assert all(1 <= k <= 4 for k in per_unit.values())
        sizes.update(per_unit.values())
        # Hairs of one unit leave one opening: their exits lie within a few widths.
        by_unit: dict[int, list[synth.HairTruth]] = {}
        for h in r.hairs:
            by_unit.setdefault(h.unit_id, []).append(h)
        for hs in by_unit.values():
            ex = np.array([h.exit_xy for h in hs])
            spread = np.hypot(*(ex - ex.mean(axis=0)).T).max()
            assert spread <= 2.0 * max(h.base_width_um for h in hs) / r.um_per_px + 1e-6
    assert sizes[2] > 0 and sizes[3] > 0


def test_centre_line_pixels_in_field_are_mask(renders: list[synth.Render]) -> None:
    for r in renders:
        h, w = r.mask.shape
        for hr in r.hairs:
            pts = synth._centre_pixels(hr.polyline_xy)
            ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            pts = pts[ok]
            in_field = r.field_mask[pts[:, 1], pts[:, 0]]
            assert r.mask[pts[in_field, 1], pts[in_field, 0]].all()


def test_mask_pixels_lie_on_some_hair(renders: list[synth.Render]) -> None:
    for r in renders:
        ys, xs = np.nonzero(r.mask)
        pts = np.stack([xs, ys], axis=1).astype(float)
        ok = np.zeros(len(pts), bool)
        for hr in r.hairs:
            tol = hr.base_width_um / r.um_per_px / 2 + 1.0
            ok |= _seg_distance(pts, hr.polyline_xy) <= tol
        assert ok.all(), f"seed {r.seed}: {(~ok).sum()} mask pixels off every hair"
        assert not (r.mask & ~r.field_mask).any()


def test_subsurface_mask_disjoint_and_present(renders: list[synth.Render]) -> None:
    total = 0
    for r in renders:
        assert not (r.mask & r.subsurface_mask).any()
        total += int(r.subsurface_mask.sum())
    assert total > 100


def test_counting_flag_implications(renders: list[synth.Render]) -> None:
    n_exit_only = 0
    for r in renders:
        h, w = r.mask.shape
        for hr in r.hairs:
            if hr.counted_inside:
                assert hr.counted_exit
            if hr.counted_exit:
                assert hr.counted_visible
                x, y = np.rint(hr.exit_xy).astype(int)
                assert 0 <= x < w and 0 <= y < h and r.field_mask[y, x]
            n_exit_only += hr.counted_exit and not hr.counted_inside
        counts = r.counts()
        assert counts["inside"] <= counts["exit"] <= counts["visible"] <= len(r.hairs)
    # Hairs leaving the field through its edge exist: the rules really differ.
    assert n_exit_only > 0


def test_header_and_scale_bar_are_outside_field() -> None:
    cfg = replace(SMALL, p_header=1.0, p_footer=1.0, p_scale_bar=1.0, p_vignette=0.0)
    r = render(5, cfg)
    assert not r.field_mask[0].any()
    assert not r.field_mask[-1].any()
    assert r.field_mask[96, 128]
    # The header strip is dark; its text is bright.
    assert np.median(r.image[:4]) < 40
    assert r.params["header"] and r.params["scale_bar"]


def test_vignette_masks_dark_corners() -> None:
    cfg = replace(SMALL, p_vignette=1.0, p_header=0.0, p_footer=0.0, p_scale_bar=0.0)
    r = render(8, cfg)
    assert not r.field_mask[0, 0] and not r.field_mask[-1, -1]
    assert r.field_mask[96, 128]
    assert r.image[0, 0].mean() < r.image[96, 128].mean()


def test_density_truth_matches_drawn_density() -> None:
    cfg = replace(
        SMALL, density_per_cm2=(200.0, 200.0), um_per_px=(9.0, 9.0), p_vignette=0.0, p_unshaved=0.0
    )
    hairs = 0
    area = 0.0
    for seed in range(8):
        r = render(seed, cfg)
        assert r.params["density_per_cm2"] == 200.0
        t = r.truth_dict()
        assert t["field_area_cm2"] == pytest.approx(int(r.field_mask.sum()) * 0.0009**2)
        hairs += t["counts"]["exit"]
        area += t["field_area_cm2"]
    # 8 fields of about 0.04 cm² at 200/cm²: about 64 hairs; Poisson over units of
    # about 2.2 hairs (E[k²]/E[k] = 2.5) gives an SD near 13.
    assert 35 <= hairs <= 95
    assert hairs / area == pytest.approx(200.0, rel=0.35)


def test_write_render_round_trip(tmp_path) -> None:
    r = render(2, SMALL)
    paths = write_render(r, tmp_path, "x")
    for key in ("image", "mask", "field", "truth"):
        assert paths[key].exists()
    assert paths["image"].name == "x.jpg"
    assert paths["mask"].name == "x_mask.png"
    truth = json.loads(paths["truth"].read_text())
    assert truth["renderer_version"] == RENDERER_VERSION
    assert truth["seed"] == 2
    assert len(truth["hairs"]) == len(r.hairs)
    assert truth["counts"] == r.counts()
    assert truth["field_area_px"] == int(r.field_mask.sum())
    h0 = truth["hairs"][0]
    assert np.allclose(h0["polyline_xy"], r.hairs[0].polyline_xy, atol=1e-3)
    mask = cv2.imread(str(paths["mask"]), cv2.IMREAD_GRAYSCALE) > 127
    assert np.array_equal(mask, r.mask)
    img = cv2.imread(str(paths["image"]))[:, :, ::-1]
    if r.jpeg_bytes is not None:
        assert np.array_equal(img, r.image)  # the render's own JPEG, not re-encoded
    png = write_render(r, tmp_path, "y", fmt="png")
    assert np.array_equal(cv2.imread(str(png["image"]))[:, :, ::-1], r.image)


def test_render_dataset_names(tmp_path) -> None:
    out = synth.render_dataset(tmp_path, 2, seed=40, config=SMALL)
    assert [p.name for p in out] == ["synth_000040.jpg", "synth_000041.jpg"]


def test_realism_stats_on_literal_image() -> None:
    img = np.full((40, 60, 3), 200, np.uint8)
    img[10:16, :] = 50  # a 6 px wide dark band
    mask = np.zeros((40, 60), bool)
    mask[10:16, :] = True
    st = realism_stats(img, mask)
    assert st["hair_skin_contrast"] == pytest.approx(150.0)
    assert st["mean_r"] == pytest.approx((200 * 34 + 50 * 6) / 40)
    assert st["hair_fraction"] == pytest.approx(0.15)
    assert 5.0 <= st["median_hair_width_px"] <= 7.0
    assert st["dark_fraction"] == pytest.approx(0.15)


def _straight_hair(width_um: float, um: float) -> synth._Hair:
    hr = synth._Hair(
        unit_id=1,
        exit=np.array([10.0, 20.0]),
        angle=0.0,
        length_px=40.0,
        curvature=0.0,
        base_w_um=width_um,
        tip_w_um=width_um,
        colour="black",
        rgb=np.array(synth.HAIR_COLOURS["black"]),
        clipped=True,
        sub_len_px=10.0,
    )
    hr.poly = np.array([[10.0, 20.0], [50.0, 20.0]])
    hr.sub = np.array([[0.0, 20.0], [10.0, 20.0]])
    return hr


def test_straight_hair_mask_is_exact() -> None:
    # 8 px wide horizontal hair from x=10 to x=50 on row 20: flat caps, so rows 16..24
    # (distance <= 4) and columns 10..50.
    canvas = np.full((40, 64, 3), 0.8, np.float32)
    mask = np.zeros((40, 64), bool)
    bb, own = synth._draw_hair(
        np.random.default_rng(0), canvas, _straight_hair(40.0, 5.0), 5.0, mask
    )
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 24, 10, 50)
    assert mask.sum() == 9 * 41
    # Dark hair drawn where the mask is; the skin left alone two pixels away.
    assert canvas[20, 30].mean() < 0.3
    assert np.allclose(canvas[27, 30], 0.8)


def test_subpixel_hair_mask_stays_connected() -> None:
    # 10 µm at 9 µm/px is 1.1 px wide: the mask is still one unbroken line of pixels.
    canvas = np.full((40, 64, 3), 0.8, np.float32)
    mask = np.zeros((40, 64), bool)
    hr = _straight_hair(10.0, 9.0)
    hr.poly = np.array([[10.0, 20.3], [50.0, 31.7]])
    synth._draw_hair(np.random.default_rng(0), canvas, hr, 9.0, mask)
    n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert n == 2  # background + one hair
    assert set(np.nonzero(mask)[1]) == set(range(10, 51))


def test_measuring_circle_is_outside_field() -> None:
    cfg = replace(SMALL, p_measuring_circle=1.0, p_header=0.0, p_footer=0.0, p_scale_bar=0.0)
    cfg = replace(cfg, p_vignette=0.0)
    r = render(4, cfg)
    red = (r.image[..., 0] > 150) & (r.image[..., 1] < 90) & (r.image[..., 2] < 90)
    assert red.sum() > 100
    assert not (red & r.field_mask).any()
