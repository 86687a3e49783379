"""Comparison: CI maths against hand-computed cases, registration, per-hair fate."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from trichoscan import synth
from trichoscan.calibration import Calibration
from trichoscan.comparison import (
    Z95,
    MeasuredPhoto,
    PhotoStats,
    Registration,
    change,
    compare,
    compare_measured,
    estimate_session,
    hair_fate,
    mdc95,
    overlap_fields,
    photo_stats,
    register_photos,
)
from trichoscan.counting import HairTable
from trichoscan.errors import InputError
from trichoscan.metrics import summarize

SHAPE = (100, 200)


def make_table(ends, widths, shape=SHAPE) -> HairTable:
    """Straight hairs between (x0, y0, x1, y1); the exit is end a."""
    ends = np.asarray(ends, dtype=float).reshape(-1, 4)
    n = len(ends)
    # Each hair owns the pixels of its drawn line in the label image (as the counting
    # core's labels), so edge-contact statistics see real hairs.
    labels = np.zeros(shape, np.int32)
    for k, (x0, y0, x1, y1) in enumerate(ends):
        thick = max(1, int(round(float(np.asarray(widths, float)[k]))))
        cv2.line(labels, (round(x0), round(y0)), (round(x1), round(y1)), k + 1, thick)
    return HairTable(
        hair_id=np.arange(1, n + 1, dtype=np.int32),
        length_px=np.hypot(ends[:, 2] - ends[:, 0], ends[:, 3] - ends[:, 1]),
        width_px=np.asarray(widths, dtype=float),
        width_sd_px=np.zeros(n),
        end_a_xy=ends[:, :2].copy(),
        end_b_xy=ends[:, 2:].copy(),
        exit_end=np.full(n, "a", dtype="<U1"),
        unit_id=np.arange(1, n + 1, dtype=np.int32),
        bundle_size=np.ones(n, np.int32),
        labels=labels,
        paths=tuple(np.array([e[:2], e[2:]]) for e in ends),
    )


def stats(n, area, w1=None, w2=None, t=None, v=None) -> PhotoStats:
    return PhotoStats(n, area, w1, w2, v, t)


# --------------------------------------------------------------------------- CI maths


def test_one_photo_density_ci_is_poisson_by_hand():
    # 100 hairs on 0.5 cm²: 200 /cm², SE = sqrt(100) / 0.5 = 20.
    est = estimate_session([stats(100, 0.5)]).estimates["density_per_cm2"]
    assert est.value == pytest.approx(200.0)
    assert est.se == pytest.approx(20.0)
    assert est.se_bootstrap is None
    assert (est.low, est.high) == pytest.approx((160.80072, 239.19928))


def test_width_ratio_and_thickness_counting_errors_by_hand():
    # Hairs 40, 50, 60, 50 µm: mean 50, SD sqrt(200/3), SE = SD / 2.
    w = np.array([40.0, 50.0, 60.0, 50.0])
    s = stats(4, 0.01, w.sum(), (w**2).sum(), t=40, v=10)
    est = estimate_session([s]).estimates
    assert est["mean_width_um"].value == pytest.approx(50.0)
    assert est["mean_width_um"].se == pytest.approx(math.sqrt(200 / 3) / 2)
    # T/V = 4, SE(log) = sqrt(1/40 + 1/10); the CI is symmetric on the log scale.
    ratio = est["terminal_vellus_ratio"]
    log_se = math.sqrt(1 / 40 + 1 / 10)
    assert ratio.value == pytest.approx(4.0)
    assert ratio.low == pytest.approx(4.0 * math.exp(-Z95 * log_se))
    assert ratio.high == pytest.approx(4.0 * math.exp(Z95 * log_se))
    # Cumulative thickness 200 µm / 0.01 cm² = 20 mm/cm²; compound Poisson SE =
    # sqrt(sum w²) µm / area = sqrt(10200) * 1e-3 / 0.01.
    cum = est["cumulative_thickness_mm_per_cm2"]
    assert cum.value == pytest.approx(20.0)
    assert cum.se == pytest.approx(math.sqrt(10200) * 1e-3 / 0.01)


def test_change_between_sessions_by_hand():
    # 200 ± 20 (SE) before, 250 ± sqrt(500) after: diff 50, SE(diff) = 30.
    before = estimate_session([stats(100, 0.5)]).estimates["density_per_cm2"]
    after = estimate_session([stats(125, 0.5)]).estimates["density_per_cm2"]
    c = change(before, after, mdc95_pct=10.0)
    assert c.diff == pytest.approx(50.0)
    assert (c.diff_low, c.diff_high) == pytest.approx((50 - Z95 * 30, 50 + Z95 * 30))
    assert c.pct == pytest.approx(25.0)
    se_log = math.sqrt(1 / 100 + 1 / 125)  # (SE/value)² = 1/N per side
    assert c.pct_low == pytest.approx(100 * (1.25 * math.exp(-Z95 * se_log) - 1))
    assert c.pct_high == pytest.approx(100 * (1.25 * math.exp(Z95 * se_log) - 1))
    assert c.significant is False  # CI of the difference includes 0
    assert c.exceeds_mdc is True
    big = change(before, estimate_session([stats(400, 0.5)]).estimates["density_per_cm2"])
    assert big.significant is True and big.exceeds_mdc is None


def test_bootstrap_over_three_or_more_photos_adds_to_counting_error():
    same = estimate_session([stats(50, 0.25)] * 3).estimates["density_per_cm2"]
    assert same.se_bootstrap == pytest.approx(0.0)
    assert same.se == pytest.approx(math.sqrt(150) / 0.75)  # pooled Poisson only
    spread = [stats(30, 0.25), stats(50, 0.25), stats(80, 0.25)]
    est = estimate_session(spread, seed=3).estimates["density_per_cm2"]
    assert est.value == pytest.approx(160 / 0.75)
    assert est.se_bootstrap > 0
    assert est.se**2 == pytest.approx(est.se_bootstrap**2 + est.se_counting**2)
    again = estimate_session(spread, seed=3).estimates["density_per_cm2"]
    assert again == est  # seeded: deterministic
    # Two photos: counting error only.
    two = estimate_session(spread[:2]).estimates["density_per_cm2"]
    assert two.se_bootstrap is None and two.se == pytest.approx(math.sqrt(80) / 0.5)


def test_estimates_without_scale_or_hairs_are_none():
    est = estimate_session([stats(10, None)]).estimates
    assert all(e.value is None for e in est.values())
    one = estimate_session([stats(1, 0.1, 50.0, 2500.0, t=0, v=1)]).estimates
    assert one["mean_width_um"].value == 50.0 and one["mean_width_um"].low is None
    assert one["terminal_vellus_ratio"].value == 0.0
    with pytest.raises(InputError):
        estimate_session([])


def test_mdc95_by_hand():
    assert mdc95([1.0, -1.0, 2.0, -2.0]) == pytest.approx(Z95 * math.sqrt(2.5))
    with pytest.raises(InputError):
        mdc95([1.0])


def test_photo_stats_from_analysis_and_from_its_summary_agree():
    table = make_table([(20, 20, 60, 20), (80, 50, 120, 60), (150, 40, 160, 80)], [6, 10, 14])
    result = summarize(table, np.ones(SHAPE, bool), Calibration(5.0))
    a, b = photo_stats(result), photo_stats({k: str(v) for k, v in result.summary().items()})
    assert a.hair_count == b.hair_count == 3
    assert a.width_sum_um == pytest.approx(150.0)
    assert a.width_sq_sum_um2 == pytest.approx(30**2 + 50**2 + 70**2)
    assert b.width_sq_sum_um2 == pytest.approx(a.width_sq_sum_um2, rel=1e-4)
    assert (a.vellus_count, a.terminal_count) == (0, 1)


# --------------------------------------------------------------------------- registration


def _warp(img: np.ndarray, dx: float, dy: float, deg: float, gain: float, blur: float):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    m[:, 2] += (dx, dy)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    field = cv2.warpAffine(np.ones((h, w), np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = np.clip(out.astype(np.float32) * gain, 0, 255)
    out = cv2.GaussianBlur(out, (0, 0), blur).astype(np.uint8)
    return out, field, m


def _angle(m: np.ndarray) -> float:
    return math.degrees(math.atan2(m[1, 0], m[0, 0]))


@pytest.mark.parametrize(
    ("seed", "dx", "dy", "deg"), [(2001, 12.4, -7.7, 3.5), (2002, -20, 9.3, -6)]
)
def test_registration_recovers_a_known_shift_and_rotation(seed, dx, dy, deg):
    # A same-site re-photograph: moved, rotated, brighter, slightly defocused.
    img = synth.render(seed, synth.SynthConfig(height=256, width=320)).image
    moved, field, truth = _warp(img, dx, dy, deg, gain=1.15, blur=0.7)
    reg = register_photos(img, moved, after_field=field)
    assert reg.ok, reg.reason
    h, w = img.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    err = np.abs(
        corners @ reg.matrix[:, :2].T + reg.matrix[:, 2] - corners @ truth[:, :2].T - truth[:, 2]
    )
    assert err.max() < 1.0  # px, at the image corners (the worst place)
    assert abs(reg.rotation_deg - _angle(truth)) < 0.5
    assert reg.scale == pytest.approx(1.0, abs=0.01)
    assert reg.quality > 0.5
    assert 0.8 < reg.overlap_fraction <= 1.0


def test_registration_of_different_sites_fails_cleanly():
    a = synth.render(2003, synth.SynthConfig(height=192, width=240)).image
    b = synth.render(2004, synth.SynthConfig(height=192, width=240)).image
    reg = register_photos(a, b)
    assert not reg.ok and reg.reason
    assert Registration.from_dict(reg.to_dict()).reason == reg.reason


def test_overlap_fields_of_a_pure_shift():
    m = np.array([[1.0, 0, 50], [0, 1, 0]])
    before, after = overlap_fields(m, np.ones(SHAPE, bool), np.ones(SHAPE, bool))
    assert before.sum() == after.sum() == 100 * 150
    assert before[:, :150].all() and after[:, 50:].all()


# --------------------------------------------------------------------------- fate, compare


SHIFT = np.array([[1.0, 0, 5], [0, 1, 3]])


@pytest.fixture
def pair() -> tuple:
    # Before: 4 hairs; after (shifted by (5, 3)): hair 0 persisted, hair 1 thickened from
    # vellus to terminal, hair 2 lost, hair 3 persisted with its tip grown, plus one new.
    cal = Calibration(5.0)
    before = make_table(
        [(20, 20, 50, 20), (60, 40, 80, 70), (120, 30, 140, 30), (160, 60, 170, 80)],
        [10, 4, 10, 10],
    )
    after = make_table(
        [(25, 23, 55, 23), (65, 43, 85, 73), (165, 63, 178, 90), (100, 80, 130, 85)],
        [10, 14, 10, 10],
    )
    field = np.ones(SHAPE, bool)
    return summarize(before, field, cal), summarize(after, field, cal)


def test_hair_fate_by_hand(pair):
    before, after = pair
    over_b, over_a = overlap_fields(SHIFT, before.field_mask, after.field_mask)
    fate = hair_fate(before, after, SHIFT, over_b, over_a, tol_px=4.0)
    assert (fate.persisted, fate.new, fate.lost) == (3, 1, 1)
    assert fate.transitions == {"vellus->terminal": 1}


def test_compare_measures_only_the_overlap_and_flags_the_fallback(pair):
    before, after = pair
    shift = np.array([[1.0, 0, 100], [0, 1, 0]])  # the after photo sees the right half

    def registrar(b, a):
        return Registration(True, shift, "test", 50, 50, 0.9, 0.5)

    mb, ma = MeasuredPhoto(before, key="b"), MeasuredPhoto(after, key="a")
    cmp = compare_measured([mb], [ma], registrar=registrar)
    assert cmp.registered and cmp.overlap_fraction == 0.5
    assert cmp.before.area_cm2 == pytest.approx(before.field_area_cm2 / 2)
    assert cmp.before.hair_count == 2  # exits at x >= 100 only
    assert cmp.to_dict()["changes"]["density_per_cm2"]["diff"] is not None

    def failing(b, a):
        return Registration(False, reason="too few feature matches")

    fallback = compare_measured([mb], [ma], registrar=failing)
    assert not fallback.registered and fallback.fallback_whole_field
    assert fallback.fate is None
    assert "too few feature matches" in fallback.notes[0]
    assert fallback.before.hair_count == before.hair_count


def test_compare_rendered_zero_change_pair():
    # 480x640 (about 60 counted hairs): at 320x400 the classical segmenter's ~20 hairs swing
    # by half between the sharp and the re-blurred photo (slivers that the faint-shaft
    # filter drops in one photo only), too few for the zero-change check to be stable.
    config = synth.SynthConfig(
        height=480, width=640, um_per_px=(8.0, 8.0), density_per_cm2=(280.0, 300.0), p_unshaved=0.0
    )
    r = synth.render(2006, config)
    assert sum(h.counted_exit for h in r.hairs) >= 50
    moved, _, _ = _warp(r.image, 9.0, -6.0, 2.0, gain=1.1, blur=0.5)
    cmp = compare(r.image, moved, calibration=r.um_per_px, segmenter="classical")
    assert cmp.registered, cmp.notes
    assert cmp.overlap_fraction > 0.8 and cmp.registration_quality > 0.5
    assert min(cmp.before.hair_count, cmp.after.hair_count) >= 5
    d = cmp.changes["density_per_cm2"]
    assert d.pct_low < 0 < d.pct_high  # no significant change
    assert cmp.fate.persisted > 0
    data = cmp.to_dict()
    assert data["registrations"][0]["ok"] is True
    assert set(data["changes"]) == {
        "density_per_cm2",
        "mean_width_um",
        "terminal_vellus_ratio",
        "cumulative_thickness_mm_per_cm2",
    }


# --------------------------------------------------------------------------- magnification


def test_a_magnification_change_between_photos_does_not_read_as_a_density_change(pair):
    # The after photo is magnified 4 % (one device, one given scale): the same skin covers
    # 1.04² more pixels. The overlap is one piece of skin, so the density change must be
    # the count change alone.
    before, after = pair
    zoom = np.array([[1.04, 0, 0], [0, 1.04, 0]])

    def registrar(b, a):
        return Registration(True, zoom, "test", 50, 50, 0.9, 0.9)

    cmp = compare_measured([MeasuredPhoto(before)], [MeasuredPhoto(after)], registrar=registrar)
    assert cmp.before.area_cm2 == pytest.approx(cmp.after.area_cm2, rel=0.01)
    n_b, n_a = cmp.before.hair_count, cmp.after.hair_count
    d = cmp.changes["density_per_cm2"]
    assert d.pct == pytest.approx(100 * (n_a / n_b - 1), abs=1.5)
    assert any("magnification" in n for n in cmp.notes)


# --------------------------------------------------------------------------- phototrichogram

from trichoscan.comparison import (  # noqa: E402
    GROWTH_THRESHOLD_UM,
    Phototrichogram,
    phototrichogram,
    phototrichogram_measured,
)

TRI_SHAPE = (160, 320)
TRI_SHIFT = np.array([[1.0, 0, 6], [0, 1, 4]])


def _drawn(ends: list[tuple[float, float, float, float]], width: int = 5):
    """A hair table and its mask: straight hairs, exit at end a."""
    mask = np.zeros(TRI_SHAPE, np.uint8)
    for x0, y0, x1, y1 in ends:
        cv2.line(mask, (round(x0), round(y0)), (round(x1), round(y1)), 1, width)
    table = make_table(ends, [width] * len(ends), shape=TRI_SHAPE)
    return table, mask.astype(bool)


@pytest.fixture
def trichogram_pair() -> tuple[MeasuredPhoto, MeasuredPhoto]:
    # Four clipped hairs (30-40 px = 150-200 µm at 5 µm/px); on the after photo (shifted by
    # (6, 4)) hairs 0 and 1 grew by 80 px (400 µm) along their shafts, 2 and 3 did not.
    cal = Calibration(5.0)
    before_ends = [(40, 40, 70, 40), (40, 100, 70, 110), (180, 60, 180, 100), (250, 120, 280, 90)]
    grow = [80, 80, 0, 0]
    after_ends = []
    for (x0, y0, x1, y1), g in zip(before_ends, grow, strict=True):
        d = np.array([x1 - x0, y1 - y0], float)
        tip = np.array([x1, y1]) + g * d / np.hypot(*d)
        after_ends.append((x0 + 6, y0 + 4, tip[0] + 6, tip[1] + 4))
    field = np.ones(TRI_SHAPE, bool)
    tb, mb = _drawn(before_ends)
    ta, ma = _drawn(after_ends)
    before = summarize(tb, field, cal, mask=mb)
    after = summarize(ta, field, cal, mask=ma)
    return MeasuredPhoto(before, key="b"), MeasuredPhoto(after, key="a")


def test_phototrichogram_by_hand(trichogram_pair):
    b, a = trichogram_pair
    reg = Registration(True, TRI_SHIFT, "test", 50, 50, 0.9, 0.9)
    tg = phototrichogram_measured(b, a, days=2.0, registration=reg)
    assert isinstance(tg, Phototrichogram) and tg.registered
    assert tg.n_counted == 4 and tg.n_measured == 4
    growth = {h.before_index: h.growth_um for h in tg.hairs}
    assert growth[0] == pytest.approx(400, abs=15) and growth[1] == pytest.approx(400, abs=15)
    assert abs(growth[2]) < 15 and abs(growth[3]) < 15
    assert [h.anagen for h in sorted(tg.hairs, key=lambda h: h.before_index)] == [
        True,
        True,
        False,
        False,
    ]
    assert {h.after_index for h in tg.hairs} == {0, 1, 2, 3}
    assert (tg.n_anagen, tg.n_telogen) == (2, 2)
    assert tg.anagen_fraction.value == 0.5
    assert tg.anagen_telogen_ratio.value == 1.0
    assert tg.growth_rate_mm_per_day.value == pytest.approx(0.2, abs=0.01)  # 400 µm / 2 days
    rate = tg.growth_rate_mm_per_day
    assert rate.low <= rate.value <= rate.high
    assert 0.0 <= tg.anagen_fraction.low <= 0.5 <= tg.anagen_fraction.high <= 1.0
    data = tg.to_dict()
    assert data["n_measured"] == 4 and len(data["hairs"]) == 4
    assert data["threshold_um"] == GROWTH_THRESHOLD_UM
    again = phototrichogram_measured(b, a, days=2.0, registration=reg)
    assert again.to_dict() == data  # fixed bootstrap seed


def test_phototrichogram_threshold_and_unregistered_and_bad_days(trichogram_pair):
    b, a = trichogram_pair
    reg = Registration(True, TRI_SHIFT, "test", 50, 50, 0.9, 0.9)
    strict = phototrichogram_measured(b, a, days=2.0, registration=reg, growth_threshold_um=500)
    assert strict.n_anagen == 0 and strict.anagen_telogen_ratio.value == 0.0
    assert strict.growth_rate_mm_per_day.value is None  # no anagen hair
    failed = phototrichogram_measured(
        b, a, days=2.0, registration=Registration(False, reason="too few image features")
    )
    assert not failed.registered and failed.hairs == ()
    assert failed.anagen_fraction.value is None and "too few" in failed.notes[0]
    with pytest.raises(InputError):
        phototrichogram_measured(b, a, days=0.0, registration=reg)


@pytest.mark.slow
def test_phototrichogram_of_a_rendered_pair():
    # Clipped stubs leave many bundles and edge-cut hairs unmeasured: a larger field.
    from trichoscan.synth import PairConfig, render_pair

    scene = synth.SynthConfig(
        height=640,
        width=800,
        um_per_px=(8.0, 8.0),
        density_per_cm2=(180.0, 200.0),
        p_unshaved=0.0,
        hair_colours=("black",),
        hair_colour_weights=(1.0,),
    )
    pair = render_pair(5, PairConfig(scene=scene, kind="trichogram"))
    truth = pair.trichogram_truth()
    tg = phototrichogram(
        pair.before.image,
        pair.after.image,
        days=pair.days,
        calibration=pair.nominal_um_per_px,
        segmenter="classical",
    )
    assert tg.registered, tg.notes
    assert tg.n_measured >= 8
    rate = tg.growth_rate_mm_per_day.value
    assert rate == pytest.approx(truth["growth_rate_mm_per_day"], rel=0.25)
    # Classical masks fragment grown hairs, so some are followed short and called telogen
    # (the change benchmark: anagen fraction 12-43 points low); on the true masks below the
    # trichogram logic itself must get the anagen fraction right.
    assert tg.anagen_fraction.value < truth["anagen_fraction"] + 0.1

    import trichoscan

    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    measured = []
    for side, render in (("before", pair.before), ("after", pair.after)):
        analysis = pipe.analyze(render.image, calibration=pair.nominal_um_per_px, mask=render.mask)
        measured.append(MeasuredPhoto(analysis, render.image, side))
    exact = phototrichogram_measured(measured[0], measured[1], days=pair.days)
    assert exact.registered and exact.n_measured >= 8
    assert exact.anagen_fraction.value == pytest.approx(truth["anagen_fraction"], abs=0.15)
    assert exact.growth_rate_mm_per_day.value == pytest.approx(
        truth["growth_rate_mm_per_day"], rel=0.15
    )
