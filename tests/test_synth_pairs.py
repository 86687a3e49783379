"""Same-site pairs of the renderer: one scalp site photographed twice, with exact truth."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from trichoscan.synth import PairConfig, RenderPair, SynthConfig, render_pair, write_pair

# Small, dense, clipped scenes: fast, and enough hairs in the overlap to check counts.
SCENE = SynthConfig(
    height=288, width=360, um_per_px=(9.0, 9.0), density_per_cm2=(300.0, 320.0), p_unshaved=0.0
)


TINY = replace(SCENE, height=160, width=200)


def _pair(seed: int, kind: str, scene: SynthConfig = SCENE, **kw) -> RenderPair:
    return render_pair(seed, PairConfig(scene=scene, kind=kind), **kw)


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, float) @ m[:, :2].T + m[:, 2]


@pytest.fixture(scope="module")
def zero() -> RenderPair:
    return _pair(13, "zero")


@pytest.fixture(scope="module")
def trichogram() -> RenderPair:
    return _pair(15, "trichogram")


def test_pairs_are_deterministic_per_seed():
    first = {}
    for kind in ("zero", "density", "trichogram"):
        a, b = _pair(21, kind, TINY), _pair(21, kind, TINY)
        first[kind] = a
        assert np.array_equal(a.before.image, b.before.image)
        assert np.array_equal(a.after.image, b.after.image)
        assert np.array_equal(a.after.mask, b.after.mask)
        assert json.dumps(a.truth_dict()) == json.dumps(b.truth_dict())
    other = _pair(22, "zero", TINY)
    assert not np.array_equal(other.before.image, first["zero"].before.image)


def test_the_two_photos_differ_by_camera_not_only_by_pixels(zero):
    assert zero.before.image.shape == zero.after.image.shape == (288, 360, 3)
    assert not np.array_equal(zero.before.image, zero.after.image)
    m = zero.matrix
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    # Magnification: a physical length keeps its µm, so um_after = um_before / scale.
    assert zero.after.um_per_px == pytest.approx(zero.before.um_per_px / scale, rel=1e-9)
    assert abs(scale - 1.0) <= 0.045
    assert abs(np.degrees(np.arctan2(m[1, 0], m[0, 0]))) <= 10.0 + 1e-9


@pytest.mark.parametrize("kind", ["zero", "density", "trichogram"])
def test_known_transform_maps_exit_points_of_photo_1_onto_photo_2(kind):
    pair = _pair(13, kind)
    matches = pair.matches()
    assert len(matches) >= 10
    eb = np.array([pair.before.hairs[i].exit_xy for i, _ in matches])
    ea = np.array([pair.after.hairs[j].exit_xy for _, j in matches])
    assert np.abs(_apply(pair.matrix, eb) - ea).max() < 0.5
    # The identity is one-to-one and the ids say which hair is which.
    assert len({i for i, _ in matches}) == len({j for _, j in matches}) == len(matches)
    for i, j in matches:
        assert pair.before_ids[i] == pair.after_ids[j]


def test_zero_change_pair_has_identical_hair_truth(zero):
    matches = zero.matches()
    for i, j in matches:
        b, a = zero.before.hairs[i], zero.after.hairs[j]
        assert a.width_um == b.width_um and a.hair_class == b.hair_class
        assert a.unit_id == b.unit_id and a.colour == b.colour
        assert a.length_um == pytest.approx(b.length_um, rel=1e-9)
        # The tip maps like the exit (the whole hair is the same).
        tip = _apply(zero.matrix, b.polyline_xy[-1:])[0]
        assert np.hypot(*(tip - a.polyline_xy[-1])) < 0.5
    in_b, in_a = zero.counted_in_overlap()
    matched_b = {i for i, _ in matches}
    assert all(i in matched_b for i in np.flatnonzero(in_b))  # nothing lost
    truth = zero.overlap_truth()
    assert truth["before_count"] == truth["after_count"] >= 10
    assert abs(truth["change_pct"]) < 1.0  # only pixel rounding of the overlap area
    assert not zero.anagen.any() and np.all(zero.growth_um == 0)
    assert zero.asked_change_pct == 0.0


@pytest.mark.parametrize("asked", [-15.0, 12.0, 35.0])
def test_density_change_truth_is_what_was_asked(asked):
    pair = _pair(10, "density", change_pct=asked)
    truth = pair.overlap_truth()
    n_b, n_a = truth["before_count"], truth["after_count"]
    assert n_b >= 15
    assert pair.asked_change_pct == asked
    # Whole hairs: the count changes by the rounded amount (a hair on the overlap's edge
    # may round differently in the two photos).
    assert abs((n_a - n_b) - round(asked / 100 * n_b)) <= 1
    assert truth["change_pct"] == pytest.approx(asked, abs=100 * 1.5 / n_b + 1.0)
    # Removed hairs are missing from the after photo, added ones are new there.
    ids_b, ids_a = set(pair.before_ids.tolist()), set(pair.after_ids.tolist())
    assert (ids_a - ids_b) if asked > 0 else (ids_b - ids_a)
    # Growth is NaN exactly for hairs that did not exist on the before visit.
    seen_before = np.isin(pair.after_ids, pair.before_ids)
    assert not np.isnan(pair.growth_um[seen_before]).any()
    assert np.isnan(pair.growth_um).any() == (asked > 0)


def test_density_change_is_drawn_from_the_configured_range():
    cfg = PairConfig(scene=TINY, kind="density", change_pct=(-15.0, 35.0))
    asked = [render_pair(s, cfg).asked_change_pct for s in (30, 31, 32)]
    assert all(-15.0 <= a <= 35.0 for a in asked) and len(set(asked)) == 3


def test_trichogram_growth_truth(trichogram):
    pair = trichogram
    assert pair.days is not None and 2.0 <= pair.days <= 3.0
    grew = telogen = 0
    for i, j in pair.matches():
        b, a = pair.before.hairs[i], pair.after.hairs[j]
        growth = a.length_um - b.length_um
        assert growth == pytest.approx(pair.growth_um[j], abs=1e-6 * max(1.0, growth))
        if pair.anagen[j]:
            grew += 1
            rate = pair.growth_um[j] / 1000 / pair.days
            assert 0.3 - 1e-9 <= rate <= 0.45 + 1e-9
        else:
            telogen += 1
            assert pair.growth_um[j] == 0.0
        # The exit (follicle) stays where it was.
        assert np.hypot(*(_apply(pair.matrix, [b.exit_xy])[0] - a.exit_xy)) < 0.5
    assert grew > telogen > 0
    truth = pair.trichogram_truth()
    assert 0.6 <= truth["anagen_fraction"] <= 1.0
    assert 0.3 <= truth["growth_rate_mm_per_day"] <= 0.45
    assert truth["anagen_telogen_ratio"] == pytest.approx(
        truth["n_anagen"] / (truth["n_hairs"] - truth["n_anagen"])
    )
    # A clipped site: every hair is a short stub on the before photo.
    assert max(h.length_um for h in pair.before.hairs) <= 500.0 + 1e-6


def test_pair_truth_is_json_and_written(tmp_path, zero):
    paths = write_pair(zero, tmp_path, "site")
    assert paths["before"].exists() and paths["after"].exists()
    data = json.loads(paths["pair"].read_text())
    assert data["kind"] == "zero" and len(data["matrix"]) == 2
    assert data["overlap"]["before_count"] == zero.overlap_truth()["before_count"]
    assert len(data["after_ids"]) == len(zero.after.hairs)


def test_unknown_pair_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        render_pair(0, replace(PairConfig(scene=SCENE), kind="nope"))
