"""Preprocessing: field detection, illumination flattening, glare, quality flags."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from trichoscan.errors import InputError
from trichoscan.preprocess import (
    FIELD_ERODE_PX,
    FOCUS_THRESHOLD,
    Prepared,
    QualityFlags,
    assess_quality,
    bridge_field_gaps,
    fill_slits,
    find_bubbles,
    find_field,
    flatten_illumination,
    glare_mask,
    overlay_mask,
    prepare,
)

FDU = Path(__file__).resolve().parents[2] / "shared" / "data" / "fdu"


def _scalp(h: int = 480, w: int = 640, seed: int = 0, hairs: int = 12) -> np.ndarray:
    """Float32 RGB: textured skin with dark hairs and a mild illumination gradient."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2)
    base = 0.62 + 0.03 * noise / noise.std()
    img = np.dstack([base * 1.06, base * 0.96, base * 0.98]).astype(np.float32)
    for _ in range(hairs):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(40, 140)
        x1, y1 = int(x0 + length * np.cos(ang)), int(y0 + length * np.sin(ang))
        cv2.line(img, (x0, y0), (x1, y1), (0.12, 0.1, 0.1), int(rng.integers(4, 10)))
    return np.clip(img, 0, 1)


def _vignette(img: np.ndarray, radius_frac: float = 0.55) -> np.ndarray:
    """Circular lit field: black outside a circle of ``radius_frac`` × the diagonal / 2."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (np.hypot(h, w) / 2)
    fall = np.clip((radius_frac + 0.03 - r) / 0.06, 0, 1).astype(np.float32)
    return img * fall[:, :, None]


def _header(img: np.ndarray, rows: int, level: float = 0.1) -> None:
    """Burn in a dark header bar with light text across the top ``rows`` rows."""
    img[:rows] = level
    text = np.zeros(img.shape[:2], np.uint8)
    cv2.putText(text, "A095 1280x1024 2022/01/05 70x", (6, rows - 8), 0, 0.6, 255, 1)
    a = (text[:rows].astype(np.float32) / 255)[:, :, None]
    img[:rows] = img[:rows] * (1 - a) + 0.95 * a


# --- field ---------------------------------------------------------------------------------


def test_plain_field_is_everything_but_the_eroded_border():
    img = _scalp()
    f = find_field(img)
    e = FIELD_ERODE_PX
    assert f.dtype == bool and f.shape == img.shape[:2]
    assert f[e:-e, e:-e].all()
    assert not f[:e].any() and not f[:, -e:].any()


def test_header_and_footer_bars_excluded():
    img = _scalp(seed=1)
    _header(img, 30)
    img[-24:] = 0.86  # uniform light footer, as FDU's bottom quadrants have
    f = find_field(img)
    assert not f[:30].any()
    assert not f[-24:].any()
    # Only a small margin is lost besides the bars.
    assert f[45:-40, 10:-10].all()
    expected = (480 - 30 - 24) * 640
    assert 0.9 * expected <= f.sum() <= expected


def test_header_not_touching_the_border():
    img = _scalp(seed=2)
    _header(img[6:], 30)  # FDU: a few rows of scalp above the header boxes
    f = find_field(img)
    assert not f[:36].any()
    assert f[60:-10, 10:-10].all()


def test_side_strip_excluded():
    img = _scalp(seed=3)
    img[:, :40] = 0.0
    f = find_field(img)
    assert not f[:, :40].any()
    assert f[10:-10, 60:-10].all()


def test_very_dark_skin_is_not_a_flat_border_strip():
    # Very dark skin (grey level ~0.15) varies by less than 1 % of full scale, the old
    # flatness tolerance: whole border columns read as a drawn strip and were cut away.
    img = _scalp(seed=6) * 0.24
    img[:, -30:] = 0.02  # a real flat strip on the same photo still goes
    f = find_field(img)
    e = FIELD_ERODE_PX
    assert f[e:-e, e:-40].all()
    assert not f[:, -30:].any()


def test_vignette_corners_excluded():
    img = _vignette(_scalp(seed=4))
    f = find_field(img)
    h, w = f.shape
    assert not f[:20, :20].any() and not f[-20:, -20:].any()
    assert f[h // 2 - 100 : h // 2 + 100, w // 2 - 100 : w // 2 + 100].all()
    # Expected area: the lit disc (radius 0.55 of the half-diagonal), give or take the ramp.
    r = 0.55 * np.hypot(h, w) / 2
    yy, xx = np.mgrid[:h, :w]
    disc = (np.hypot(yy - h / 2, xx - w / 2) <= r).sum()
    assert 0.85 * disc <= f.sum() <= 1.05 * disc


def test_red_circle_overlay_excluded():
    img = _scalp(seed=5)
    cv2.circle(img, (320, 240), 150, (0.93, 0.08, 0.08), 2, cv2.LINE_AA)
    om = overlay_mask(img)
    assert om[240, 170] and om[90, 320]  # on the circle
    assert not om[240, 320]  # centre is scalp
    f = find_field(img)
    assert not f[240, 168:173].any()
    assert f[240, 300:340].all()
    assert om.mean() < 0.05


def test_hair_cut_by_a_thin_excluded_stroke_is_rejoined():
    field = np.ones((120, 200), bool)
    field[:, 95:110] = False  # a 15 px stroke (circle line + erosion) across the field
    mask = np.zeros_like(field)
    mask[55:63, 20:180] = True
    mask &= field
    bridged = bridge_field_gaps(mask, field)
    assert bridged[55:63, 95:110].all()  # the gap under the hair is filled
    assert not bridged[:50, 95:110].any() and not bridged[70:, 95:110].any()  # nothing else
    assert (bridged & field).sum() == mask.sum()  # no new pixels inside the field
    assert cv2.connectedComponents(bridged.astype(np.uint8))[0] == 2  # background + 1 hair
    assert np.array_equal(bridge_field_gaps(mask, field, max_gap_px=0), mask)


def test_wide_exclusions_and_the_image_border_are_not_bridged():
    field = np.zeros((120, 200), bool)
    field[3:-3, 3:-3] = True  # the eroded image border
    field[:, 80:130] = False  # a 50 px exclusion: a bar, not a stroke
    mask = np.zeros_like(field)
    mask[55:63, 10:190] = True
    mask &= field
    bridged = bridge_field_gaps(mask, field)
    assert np.array_equal(bridged, mask)
    # A hair running into the border strip is not extended into it.
    mask2 = np.zeros_like(field)
    mask2[55:63, 3:60] = True
    assert np.array_equal(bridge_field_gaps(mask2, field), mask2)


def test_blue_label_text_boxed():
    img = _scalp(seed=6, hairs=0)
    text = np.zeros(img.shape[:2], np.uint8)
    for i, line in enumerate(["RC0", "C=15.827 mm", "A=19.934 mm^2", "r=2.519 mm"]):
        cv2.putText(text, line, (400, 60 + 30 * i), 0, 0.8, 255, 2)
    a = (text.astype(np.float32) / 255)[:, :, None]
    img[:] = img * (1 - a) + np.array([0.1, 0.05, 0.85], np.float32) * a
    om = overlay_mask(img)
    ys, xs = np.nonzero(text)
    assert om[ys, xs].all()
    assert om[75, 420]  # between text lines: the label box, not just the strokes
    assert not om[400, 100]


def test_strongly_colour_cast_skin_is_not_an_overlay():
    img = _scalp(seed=7)
    img = np.clip(img * np.array([0.75, 0.65, 1.35], np.float32), 0, 1)  # blue cast
    assert overlay_mask(img).mean() < 0.001


def test_scale_bar_masked_from_field():
    img = _scalp(h=700, w=900, seed=8, hairs=0)
    col = 0.19
    img[620:622, 40:340] = col
    img[322:622, 40:42] = col
    img[600:630, 352:454] = img[600:630, 352:454] * 0.35 + 0.11
    text = np.zeros(img.shape[:2], np.uint8)
    cv2.putText(text, "1.0 mm", (356, 624), 0, 0.75, 255, 2, cv2.LINE_AA)
    a = (text.astype(np.float32) / 255)[:, :, None]
    img[:] = img * (1 - a) + 0.95 * a
    f = find_field(img)
    assert not f[620, 40:340].any()
    assert not f[330:620, 40].any()
    assert not f[610, 360:440].any()
    assert f[300, 450]


def _draw_renderer_bar(
    img: np.ndarray,
    corner: tuple[int, int],
    length: int,
    v_arm: int,
    level: float,
    *,
    label: tuple[slice, slice],
) -> None:
    """The renderer's scale bar style: a 1-px L (horizontal arm ``length``, vertical arm
    ``v_arm`` going up from ``corner``), dark or light, and a dark label box."""
    x, y = corner
    cv2.line(img, (x, y), (x + length, y), (level,) * 3, 1, cv2.LINE_AA)
    cv2.line(img, (x, y), (x, y - v_arm), (level,) * 3, 1, cv2.LINE_AA)
    img[label] = 0.16


@pytest.mark.parametrize("level", [0.15, 0.97])
def test_unknown_style_bar_masked_but_not_read(level):
    from trichoscan.calibration import read_scale_bar

    img = _scalp(h=600, w=800, seed=22, hairs=0)
    _draw_renderer_bar(img, (60, 520), 300, 105, level, label=(slice(505, 530), slice(366, 420)))
    f = find_field(img)
    assert not f[520, 60:360].any()
    assert not f[420:520, 60].any()
    assert not f[515, 370:415].any()  # label region past the free end
    assert f[300, 400]
    assert read_scale_bar(img) is None


@pytest.mark.parametrize("level", [0.15, 0.97])
def test_short_armed_bar_at_a_coarse_scale_masked_with_its_label(level):
    """A 1 mm bar at 8 µm/px: 125 px long, its vertical arm 44 px, shorter than a lone
    drawn line must be (a tenth of the short side, 51 px); as the arm of an L it counts,
    and the label box past the free end leaves the field too."""
    img = _scalp(h=512, w=640, seed=24, hairs=0)
    _draw_renderer_bar(img, (60, 440), 125, 44, level, label=(slice(432, 446), slice(190, 240)))
    f = find_field(img)
    assert not f[440, 60:185].any()
    assert not f[400:440, 60].any()
    assert not f[434:444, 192:238].any()  # label box
    assert f[300, 400] and f[400:430, 100:180].all()  # inside the L is scalp


def test_short_lone_straight_line_stays_in_the_field():
    img = _scalp(h=512, w=640, seed=25, hairs=0)
    cv2.line(img, (300, 200), (300, 245), (0.15,) * 3, 1, cv2.LINE_AA)  # 45 px, no L
    assert find_field(img)[200:246, 298:303].all()


def test_axis_aligned_hair_is_not_a_drawn_line():
    img = _scalp(h=600, w=800, seed=23, hairs=0)
    cv2.line(img, (100, 300), (500, 300), (0.12, 0.1, 0.1), 9)  # a thick straight hair
    f = find_field(img)
    assert f[296:305, 120:480].all()


def test_find_field_accepts_uint8():
    img = (_scalp(seed=9) * 255).astype(np.uint8)
    assert find_field(img).mean() > 0.9


# --- flattening ----------------------------------------------------------------------------


def test_flatten_removes_gradient_keeps_hair_contrast():
    img = _scalp(seed=10)
    h, w = img.shape[:2]
    ramp = np.linspace(0.55, 1.0, w, dtype=np.float32)[None, :, None]
    lit = img * ramp
    f = find_field(lit)
    flat = flatten_illumination(lit, f)
    assert flat.dtype == np.float32 and flat.shape == img.shape
    skin = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) > 0.4
    g = cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY)
    left = np.median(g[:, 40:120][skin[:, 40:120]])
    right = np.median(g[:, -120:-40][skin[:, -120:-40]])
    assert abs(left - right) < 0.03  # was ~0.45x apart before
    hair = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) < 0.2) & f
    ratio = np.median(g[hair]) / np.median(g[skin & f])
    assert ratio < 0.35  # hairs stay dark relative to skin
    # Skin is neutral after white balance.
    rgb_skin = np.median(flat[skin & f], axis=0)
    assert np.ptp(rgb_skin) < 0.04


def test_flatten_outside_field_is_neutral():
    img = _vignette(_scalp(seed=11))
    f = find_field(img)
    flat = flatten_illumination(img, f)
    assert np.allclose(flat[~f], flat[~f][0])
    assert 0 <= flat.min() and flat.max() <= 1


# --- glare and quality -------------------------------------------------------------------


def test_glare_spot_found_light_skin_not():
    img = _scalp(seed=12)
    cv2.circle(img, (200, 200), 18, (1.0, 1.0, 1.0), -1)
    f = find_field(img)
    g = glare_mask(img, f)
    assert g[200, 200] and g[200, 217]
    assert not g[400, 500]
    assert g.mean() < 0.01


def test_quality_flags_sharp_vs_blurred():
    img = _scalp(seed=13, hairs=30)
    f = find_field(img)
    q = assess_quality(img, f)
    assert isinstance(q, QualityFlags)
    assert q.in_focus and q.focus_score >= FOCUS_THRESHOLD
    assert not q.too_dark and q.warnings == ()
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    qb = assess_quality(blurred, find_field(blurred))
    assert qb.focus_score < q.focus_score / 5
    assert not qb.in_focus
    assert any("focus" in w for w in qb.warnings)
    d = q.to_dict()
    assert set(d) == {
        "focus_score",
        "in_focus",
        "glare_fraction",
        "field_coverage",
        "too_dark",
        "warnings",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.in_focus = False  # type: ignore[misc]


def test_too_dark_flag():
    img = _scalp(seed=14) * 0.12
    q = prepare(img).quality
    assert q.too_dark and any("dark" in w for w in q.warnings)


def test_glare_fraction_reported():
    img = _scalp(seed=15)
    img[100:260, 100:300] = 1.0
    q = prepare(img).quality
    assert 0.08 < q.glare_fraction < 0.2
    assert any("glare" in w for w in q.warnings)


# --- prepare -------------------------------------------------------------------------------


def test_prepare_outputs():
    img = _scalp(seed=16)
    _header(img, 30)
    p = prepare(img)
    assert isinstance(p, Prepared)
    assert p.rgb.dtype == np.float32 and p.rgb.shape == img.shape
    assert p.gray.dtype == np.float32 and p.gray.shape == img.shape[:2]
    assert p.field.dtype == bool and p.glare.dtype == bool
    assert not p.field[:30].any()
    assert p.quality.field_coverage == pytest.approx(p.field.mean())
    assert (p.counted_area == (p.field & ~p.glare)).all()
    np.testing.assert_array_equal(p.original, img)


def test_prepare_reads_paths_and_bytes(tmp_path):
    img8 = (_scalp(seed=17) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img8).save(buf, format="PNG")
    path = tmp_path / "scalp photo é.png"
    path.write_bytes(buf.getvalue())
    a, b = prepare(path), prepare(buf.getvalue())
    np.testing.assert_array_equal(a.rgb, b.rgb)


def test_prepare_is_deterministic():
    img = _scalp(seed=18)
    a, b = prepare(img), prepare(img.copy())
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.field, b.field)
    assert a.quality == b.quality


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.zeros((200, 300, 3), np.float32), "black"),
        (np.ones((200, 300, 3), np.float32), "white"),
        (np.full((200, 300, 3), 0.5, np.float32), "uniform"),
        (np.zeros((200, 300), np.uint8), "black"),
        (np.full((200, 300, 3), 255, np.uint8), "white"),
        (np.full((200, 300, 3), np.nan, np.float32), "NaN"),
        (np.full((200, 300, 3), 2.0, np.float32), r"in \[0, 1\]"),
    ],
)
def test_blank_photos_refused(img, match):
    with pytest.raises(InputError, match=match):
        prepare(img)


def test_empty_field_refused():
    img = _scalp(seed=19)
    img[:, :] = 0.0
    img[200:210, 300:310] = 0.6  # a tiny lit spot in a black frame
    with pytest.raises(InputError, match="nothing to analyse"):
        prepare(img)


def test_no_hair_photo_is_fine():
    p = prepare(_scalp(seed=20, hairs=0))
    assert p.quality.field_coverage > 0.95


def test_dense_hair_photo_is_fine():
    p = prepare(_scalp(h=300, w=400, seed=24, hairs=150))
    assert p.quality.field_coverage > 0.9


def test_hair_mat_is_processed_with_warnings():
    # A mat of hair hiding nearly all skin: analysed, but flagged, never an exception.
    p = prepare(_scalp(h=300, w=400, seed=24, hairs=400))
    assert p.quality.field_coverage > 0.3
    assert p.quality.too_dark
    assert p.quality.warnings


@pytest.mark.slow
def test_prepare_speed_1280x1024():
    img = cv2.resize(_scalp(seed=21, hairs=40), (1280, 1024))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        prepare(img)
        times.append(time.perf_counter() - t)
    # ~80 ms on the 2-core dev box when idle; wall-clock tests are flaky on loaded
    # machines, hence "slow" (run with -m slow) and a generous bound on the best of three.
    assert min(times) < 0.5


# --- real FDU photos ----------------------------------------------------------------------

needs_fdu = pytest.mark.skipif(not FDU.is_dir(), reason="../shared/data/fdu not present")


def _fdu(name: str) -> Path:
    path = FDU / "train" / "images" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@needs_fdu
def test_fdu_header_quadrant():
    p = prepare(_fdu("220105_A095_1"))
    # The burned-in header (boxes on rows ~6-37) is out; the scalp below is in.
    assert not p.field[:38].any()
    assert p.field[60:-10, 10:-10].mean() > 0.99
    assert p.quality.in_focus


@needs_fdu
def test_fdu_footer_quadrant():
    p = prepare(_fdu("220105_A095_4"))
    assert not p.field[-32:].any()
    assert p.field[10:-45, 10:-10].mean() > 0.99


@needs_fdu
def test_fdu_scale_bar_and_circle_quadrant():
    p = prepare(_fdu("220905_A036_3"))
    assert not p.field[924, 44:400].any()  # bar's horizontal arm
    assert not p.field[600:920, 44].any()  # bar's vertical arm
    assert 0.8 < p.quality.field_coverage < 0.95


def test_thin_slits_between_touching_hairs_are_filled_and_real_holes_stay():
    mask = np.zeros((100, 160), bool)
    mask[20:60, 20:28] = mask[20:60, 29:37] = True  # two hairs with a 1 px slit ...
    mask[20:60:5, 28] = mask[59, 28] = True  # ... closed every fifth row and at the end
    mask[10:90, 70:78] = mask[10:90, 100:108] = True  # a loop: two hairs joined at both ends
    mask[10:18, 70:108] = mask[82:90, 70:108] = True
    # two hairs whose slit runs out through the image border: not enclosed, not filled
    mask[40:48, 140:160] = mask[50:58, 140:160] = True
    mask[48:50, 145] = True
    filled = fill_slits(mask)
    assert filled[20:60, 28].all()  # the slit is gone
    assert not filled[48:50, 146:160].any()  # the slit open to the border stays open
    assert not filled[18:82, 78:100].any()  # the loop's hole (22 px wide) stays open
    assert (filled & ~mask).sum() == 31  # exactly the slit's 40 - 9 pixels
    assert np.array_equal(fill_slits(mask, max_gap_px=0), mask)
    wide = np.zeros((60, 60), bool)
    wide[10:50, 10:20] = wide[10:50, 23:33] = True  # a 3 px gap, closed at both ends
    wide[10:13, 10:33] = wide[47:50, 10:33] = True
    assert np.array_equal(fill_slits(wide), wide)  # wider than 2 px: skin between hairs
    assert fill_slits(wide, max_gap_px=4)[20:40, 20:23].all()


# --- air bubbles ----------------------------------------------------------------------------


def _bubble(img: np.ndarray, centre: tuple[int, int], radius: int) -> np.ndarray:
    """Draw an air bubble as the renderer does: a bright rim with a dark line inside it."""
    out = img.copy()
    rim = np.zeros(img.shape[:2], np.float32)
    cv2.circle(rim, centre, radius, 1.0, 3, cv2.LINE_AA)
    inner = np.zeros(img.shape[:2], np.float32)
    cv2.circle(inner, centre, radius - 4, 1.0, 1, cv2.LINE_AA)
    out = out + 0.25 * cv2.GaussianBlur(rim, (0, 0), 0.8)[..., None]
    out = out * (1.0 - 0.25 * cv2.GaussianBlur(inner, (0, 0), 1.0))[..., None]
    return np.clip(out, 0, 1).astype(np.float32)


def test_bubbles_are_found_whole_and_cut_by_the_border():
    img = _bubble(_bubble(_scalp(seed=3), (250, 200), 70), (630, 300), 60)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    found = sorted(find_bubbles(gray, np.ones(gray.shape, bool)))
    assert len(found) == 2
    for b, (x, y, r) in zip(found, ((250, 200, 70), (630, 300, 60)), strict=True):
        assert abs(b.x - x) <= 3 and abs(b.y - y) <= 3 and abs(b.radius_px - r) <= 3
        assert b.rim_fraction > 0.8  # the cut one is scored on its visible half only
    assert len(prepare(img).bubbles) == 2


def test_no_bubbles_on_hairs_alone_even_light_crossing_ones():
    img = _scalp(seed=4, hairs=20)
    for (x0, y0), (x1, y1) in (((100, 100), (400, 300)), ((120, 320), (420, 90))):
        cv2.line(img, (x0, y0), (x1, y1), (0.95, 0.9, 0.8), 6)  # white hairs, brighter than skin
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert find_bubbles(gray, np.ones(gray.shape, bool)) == []
    assert prepare(img).bubbles == ()
