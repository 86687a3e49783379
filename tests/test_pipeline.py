"""End to end: rendered photos through the public API, against the renderer's truth."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import trichoscan
from trichoscan import synth
from trichoscan.errors import CalibrationError, InputError, ModelError

#: A plain shaved scene: dark hair on light skin at 4 µm/px, dense enough for ~15 hairs.
PLAIN = synth.SynthConfig(
    height=512,
    width=640,
    um_per_px=(4.0, 4.0),
    density_per_cm2=(300.0, 300.0),
    hair_colours=("black",),
    hair_colour_weights=(1.0,),
    skin_tones=("light",),
    skin_tone_weights=(1.0,),
    p_unshaved=0.0,
)


@pytest.fixture(scope="module")
def render() -> synth.Render:
    return synth.render(7, PLAIN)


@pytest.fixture(scope="module")
def result(render) -> trichoscan.Analysis:
    return trichoscan.analyze(render.image, calibration=render.um_per_px, segmenter="classical")


def test_counts_and_widths_match_truth():
    """On three plain renders the classical pipeline's exit counts are off by at most 16
    hairs in all (per photo, summed), pooled within 25-30 %, and the mean width within 6 µm.

    Tolerances document today's accuracy on easy scenes (renderer 1.1.0, measured: exit
    14/13, 13/19, 10/17, so 14 hairs off per photo and 37 of 49 pooled; 63 of 79 visible:
    the hairs of a unit lie side by side, and a mask cannot show a hair hidden along
    another; widths 2.5 µm narrow, measured on the photo's cross-profiles where clean, 4.1 µm
    narrow from the mask alone). The README's benchmark has the full picture.
    History: before exit ends stopping against another hair's side were treated as unseen
    (``metrics.hidden_end_flags``), seed 8's crossing long hairs gave 18/13, and the pooled
    42 of 49 hid 17 hairs off per photo; earlier, 43/49 and 66/79 before the colour pass
    measured against the skin without the dark hairs (40/49, 64/79) and slivers were
    dropped (42/49, 63/79).
    """
    true_exit = found_exit = true_visible = found_visible = per_photo_off = 0
    true_widths, found_widths, true_area, found_area = [], [], 0.0, 0.0
    for seed in (8, 9, 10):
        render = synth.render(seed, PLAIN)
        result = trichoscan.analyze(render.image, calibration=4.0, segmenter="classical")
        photo_true = sum(h.counted_exit for h in render.hairs)
        per_photo_off += abs(result.hair_count - photo_true)
        true_exit += photo_true
        true_visible += sum(h.counted_visible for h in render.hairs)
        found_exit += result.hair_count
        found_visible += result.visible_hair_count
        true_widths += [h.width_um for h in render.hairs if h.counted_exit]
        found_widths.append(result.mean_width_um)
        true_area += render.truth_dict()["field_area_cm2"]
        found_area += result.field_area_cm2
    assert true_exit >= 40
    assert per_photo_off <= 16
    assert found_exit == pytest.approx(true_exit, rel=0.25)
    assert found_visible == pytest.approx(true_visible, rel=0.25)
    assert found_exit / found_area == pytest.approx(true_exit / true_area, rel=0.3)
    assert np.mean(found_widths) == pytest.approx(np.mean(true_widths), abs=6.0)


def test_result_records_scale_segmenter_and_quality(result):
    assert result.calibration.um_per_px == 4.0
    assert result.calibration.source == "given"
    assert result.segmenter_used.name == "classical"
    assert result.mask.shape == (512, 640)
    assert result.mask.dtype == bool
    assert 0.5 < result.quality.field_coverage <= 1.0
    data = json.loads(result.to_json())
    assert data["quality"]["field_coverage"] == pytest.approx(result.quality.field_coverage)
    assert len(data["hairs"]) == len(result.hairs)


def test_widths_come_from_the_photo_where_measured(render):
    """Most hairs of a plain render get a cross-profile width; turning it off keeps the
    mask's width for every hair, and the config records the choice."""
    on = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    off = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical", photo_widths=False))
    with_photo = on.analyze(render.image, calibration=4.0)
    mask_only = off.analyze(render.image, calibration=4.0)
    sources = [h["width_source"] for h in with_photo.to_dict()["hairs"]]
    assert set(sources) <= {"photo", "mask"}
    assert sources.count("photo") >= len(sources) / 2
    assert {h["width_source"] for h in mask_only.to_dict()["hairs"]} == {"mask"}
    assert on.config.to_dict()["photo_widths"] is True
    assert off.config.to_dict()["photo_widths"] is False
    # Only the measured hairs' widths change.
    assert len(with_photo.hairs) == len(mask_only.hairs)
    changed = with_photo.hairs.width_px != mask_only.hairs.width_px
    assert not (changed & ~with_photo.width_from_photo).any()
    assert changed.any()
    # The mask's geometry (cut and hidden ends, so every count) still uses the mask width.
    np.testing.assert_array_equal(with_photo.hairs.edge_width_px, mask_only.hairs.width_px)
    assert mask_only.hairs.mask_width_px is None
    np.testing.assert_array_equal(with_photo.end_cut, mask_only.end_cut)
    np.testing.assert_array_equal(with_photo.counted, mask_only.counted)
    kept = with_photo.hairs.select(with_photo.width_from_photo)
    np.testing.assert_array_equal(
        kept.edge_width_px, mask_only.hairs.width_px[with_photo.width_from_photo]
    )


def test_inputs_as_path_bytes_and_array_agree(render, tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
    by_array = trichoscan.analyze(render.image, calibration=4.0, segmenter="classical")
    by_path = trichoscan.analyze(path, calibration=4.0, segmenter="classical")
    by_bytes = trichoscan.analyze(path.read_bytes(), calibration=4.0, segmenter="classical")
    by_float = trichoscan.analyze(
        render.image.astype(np.float32) / 255.0, calibration=4.0, segmenter="classical"
    )
    counts = {r.hair_count for r in (by_array, by_path, by_bytes, by_float)}
    assert len(counts) == 1
    assert by_path.source == str(path)


def test_rules_order(result):
    assert result.inside_hair_count <= result.exit_hair_count <= result.visible_hair_count
    assert result.hair_count == result.exit_hair_count


def test_segment_returns_input_shaped_bool_mask(render):
    mask = trichoscan.segment(render.image, segmenter="classical")
    assert mask.shape == render.image.shape[:2]
    assert mask.dtype == bool
    overlap = (mask & render.mask).sum() / max(render.mask.sum(), 1)
    assert overlap > 0.6


def test_pipeline_reuse_is_deterministic(render):
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    first = pipe.analyze(render.image, calibration=4.0)
    second = pipe.analyze(render.image, calibration=4.0)
    assert first.to_json() == second.to_json()


def test_bad_arguments_raise_typed_errors(render):
    with pytest.raises(InputError):
        trichoscan.analyze(render.image, count_rule="everything")
    with pytest.raises(InputError):
        trichoscan.analyze(render.image, segmenter="magic")
    with pytest.raises(CalibrationError):
        trichoscan.analyze(render.image, calibration=-3)
    with pytest.raises(CalibrationError):
        trichoscan.analyze(render.image, calibration="no-such-device")


def test_unet_without_weights_is_a_model_error(tmp_path):
    config = trichoscan.PipelineConfig(segmenter="unet", model_dir=tmp_path)
    with pytest.raises(ModelError, match="weights"):
        trichoscan.Pipeline(config)


def test_no_hairs_gives_zero_not_garbage():
    rng = np.random.default_rng(0)
    skin = np.empty((256, 256, 3), np.float32)
    skin[:] = (0.85, 0.68, 0.6)
    skin += rng.normal(0, 0.01, skin.shape).astype(np.float32)
    result = trichoscan.analyze(np.clip(skin, 0, 1), calibration=5.0, segmenter="classical")
    assert result.hair_count == 0
    assert result.density_per_cm2 == 0.0
    assert result.mean_width_um is None


def test_auto_follows_the_model_cards_auto_block(tmp_path):
    """A card marked not for automatic use keeps 'auto' on the classical segmenter."""
    import json

    from trichoscan.segmentation import unet

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"not loaded by auto_choice")
    card = {"format": "trichoscan-unet"}
    (folder / "model_card.json").write_text(json.dumps(card))
    assert unet.auto_choice(folder) == (True, "")
    card["auto"] = {"eligible": False, "reason": "loses on real photos"}
    (folder / "model_card.json").write_text(json.dumps(card))
    assert unet.auto_choice(folder) == (False, "loses on real photos")
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="auto", model_dir=folder))
    assert pipe.segmenter_info.name == "classical"
    assert pipe.segmenter_info.note.startswith("loses on real photos")
    assert unet.auto_choice(tmp_path / "nothing") == (False, "")


def _skin(h: int, w: int) -> np.ndarray:
    """Light skin with a fine texture (a flat synthetic photo would read as a drawn bar)."""
    noise = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 1, (h, w)), (0, 0), 2)
    return np.repeat((0.8 + 0.03 * noise / noise.std())[..., None], 3, axis=2).astype(np.float32)


def _bars_photo(levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Skin with one horizontal dark bar per level (its grey value); the bar mask too."""
    h, w = 40 + 60 * len(levels), 400
    rgb = np.full((h, w, 3), 0.8, np.float32)
    mask = np.zeros((h, w), bool)
    for k, level in enumerate(levels):
        y = 40 + 60 * k
        rgb[y : y + 8, 40:360] = level
        mask[y : y + 8, 40:360] = True
    return rgb, mask


def test_shaft_contrast_is_the_colour_distance_to_the_skin():
    from trichoscan.counting import count_hairs
    from trichoscan.pipeline import shaft_contrast

    rgb, mask = _bars_photo((0.2, 0.7))
    hairs = count_hairs(mask)
    assert len(hairs) == 2
    c = shaft_contrast(hairs, rgb, np.ones(mask.shape, bool), mask)
    order = np.argsort([p[:, 1].mean() for p in hairs.paths])  # top bar first
    assert c[order] == pytest.approx([0.6 * np.sqrt(3), 0.1 * np.sqrt(3)], rel=1e-3)


def test_faint_ragged_shafts_are_dropped_before_counting():
    """Two dark hairs, a faint even hair and a faint ragged streak: only the streak goes."""
    h, w = 280, 400
    mask = np.zeros((h, w), np.uint8)
    level = np.ones((h, w), np.float32)
    # Slightly tilted, textured shafts: axis-aligned flat bars would read as drawn lines.
    for y, grey in ((40, 0.15), (100, 0.2), (160, 0.6)):
        cv2.line(mask, (40, y), (360, y + 20), 1, 8)
        level[mask.astype(bool) & (level == 1)] = grey / 0.8
    for k, x in enumerate(range(40, 360, 40)):  # the streak's width steps between 4 and 14 px
        cv2.line(mask, (x, 220 + x // 16), (x + 40, 220 + (x + 40) // 16), 1, 4 if k % 2 else 14)
    level[mask.astype(bool) & (level == 1)] = 0.6 / 0.8
    mask = mask.astype(bool)
    rgb = _skin(h, w) * level[..., None]
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    found = pipe.analyze(rgb, calibration=5.0, count_rule="visible", mask=mask)
    assert found.segmenter_used.name == "given mask"
    kept = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical", faint_fraction=0))
    assert (
        kept.analyze(rgb, calibration=5.0, count_rule="visible", mask=mask).visible_hair_count == 4
    )
    assert found.visible_hair_count == 3
    assert found.mask[160:175].sum() > 0.9 * mask[160:175].sum()  # the faint even hair stays
    assert not found.mask[215:250].any()  # the streak's pixels left the mask


def _sliver_fixture() -> np.ndarray:
    """A 20 px wide hair with a short 6 px sliver and a long 6 px hair leaving its edge,
    and a short 6 px stub standing alone."""
    mask = np.zeros((200, 400), np.uint8)
    cv2.line(mask, (30, 60), (370, 60), 1, 20)  # wide hair
    cv2.line(mask, (100, 66), (150, 96), 1, 6)  # short sliver off its lower edge
    cv2.line(mask, (200, 66), (380, 150), 1, 6)  # long thin hair leaving its edge
    cv2.line(mask, (60, 160), (110, 160), 1, 6)  # short thin stub on its own
    return mask.astype(bool)


def test_sliver_rows_are_thin_short_shafts_touching_a_wider_one():
    from trichoscan.counting import count_hairs
    from trichoscan.pipeline import sliver_rows

    hairs = count_hairs(_sliver_fixture())
    assert len(hairs) == 4
    sliver = sliver_rows(hairs)
    centre_y = np.array([p[:, 1].mean() for p in hairs.paths])
    centre_x = np.array([p[:, 0].mean() for p in hairs.paths])
    wide = np.argmax(hairs.width_px)
    short_touching = np.flatnonzero((centre_y > 70) & (centre_y < 120) & (centre_x < 160))
    assert short_touching.size == 1
    assert sliver.tolist() == [i == short_touching[0] for i in range(4)]
    assert not sliver[wide]
    # Without the wide hair nothing is a sliver: the rule needs a wider neighbour.
    assert not sliver_rows(count_hairs(_sliver_fixture() & (np.arange(200)[:, None] > 72))).any()


def test_slivers_are_dropped_before_counting():
    mask = _sliver_fixture()
    rgb = _skin(*mask.shape) * np.where(mask, 0.25, 1.0)[..., None].astype(np.float32)
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    found = pipe.analyze(rgb, calibration=5.0, count_rule="visible", mask=mask)
    kept = trichoscan.Pipeline(
        trichoscan.PipelineConfig(segmenter="classical", sliver_width_fraction=0)
    ).analyze(rgb, calibration=5.0, count_rule="visible", mask=mask)
    assert kept.visible_hair_count == 4
    assert found.visible_hair_count == 3
    assert not found.mask[80:96, 125:150].any()  # the sliver's pixels left the mask


def test_a_given_mask_must_match_the_photo():
    rgb, mask = _bars_photo((0.15,))
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    with pytest.raises(InputError, match="mask"):
        pipe.analyze(rgb, calibration=5.0, mask=mask[:-1])
    with pytest.raises(InputError, match="mask"):
        pipe.analyze(rgb, calibration=5.0, mask=mask.astype(np.uint8))


def test_hair_crossing_a_measuring_circle_is_one_hair():
    rgb = _skin(300, 400)
    cv2.line(rgb, (40, 120), (360, 180), (0.15, 0.15, 0.15), 8, cv2.LINE_AA)
    cv2.circle(rgb, (200, 150), 90, (0.95, 0.05, 0.05), 3, cv2.LINE_AA)
    default = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    off = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical", bridge_gap_px=0))
    assert off.analyze(rgb, calibration=5.0, count_rule="visible").visible_hair_count == 3
    result = default.analyze(rgb, calibration=5.0, count_rule="visible")
    assert result.visible_hair_count == 1
    assert result.hairs.length_px[0] == pytest.approx(np.hypot(320, 60), abs=12)


def test_a_given_mask_runs_the_same_chain_as_the_segmenter(render):
    """analyze(mask=segment(...)) gives the pipeline's own result: one chain after the mask."""
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    own = pipe.analyze(render.image, calibration=render.um_per_px)
    mask = pipe.segment(render.image, calibration=render.um_per_px)
    given = pipe.analyze(render.image, calibration=render.um_per_px, mask=mask)
    assert given.hair_count == own.hair_count > 5
    assert given.visible_hair_count == own.visible_hair_count
    assert np.array_equal(given.hairs.labels, own.hairs.labels)
    assert given.segmenter_used.name == "given mask" and own.segmenter_used.name == "classical"


def _stub_pair_photo() -> tuple[np.ndarray, np.ndarray]:
    """Five single hairs 8 px wide, and a short stub of two clipped hairs side by side.

    The stub's two 8 px shafts (42 px long) touch across a 1 px slit that their edges close
    every fourth row, as a side-by-side pair looks in a mask: a ladder, not one bar.
    """
    h, w = 360, 420
    mask = np.zeros((h, w), bool)
    for k in range(5):
        y = 30 + 50 * k
        mask[y : y + 8, 40 + 10 * k : 220 + 10 * k] = True
    mask[40:82, 300:308] = True
    mask[40:82, 309:317] = True
    mask[40:82:4, 308] = True  # the bridges across the slit
    rgb = _skin(h, w)
    rgb[mask] = 0.2
    return rgb, mask


def test_a_short_stub_of_two_hairs_side_by_side_counts_two():
    """The stub is as wide as it is long: judged by one hair's width it is a hair pair."""
    rgb, mask = _stub_pair_photo()
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    found = pipe.analyze(rgb, calibration=5.0, count_rule="visible", mask=mask)
    assert found.visible_hair_count == 7
    stub = found.hairs.labels[40:82, 300:317]
    assert np.unique(stub[stub > 0]).size == 1  # one shaft ...
    row = int(np.flatnonzero(found.hairs.hair_id == stub.max())[0])
    assert found.hairs.bundle_size[row] == 2  # ... of two hairs
    assert found.hairs.length_px[row] == pytest.approx(42, abs=4)
    # Judged by the whole shaft's width (the earlier rule) the stub was dropped as a blob,
    # and with the slit left open its ladder skeleton fell into fragments.
    old = trichoscan.PipelineConfig(segmenter="classical", min_shaft_length_widths=3.0)
    assert (
        trichoscan.Pipeline(old)
        .analyze(rgb, calibration=5.0, count_rule="visible", mask=mask)
        .visible_hair_count
        == 5
    )


def test_round_blobs_are_still_not_hairs():
    rgb, mask = _stub_pair_photo()
    mask[40:82, 300:317] = False
    cv2.circle(mask.view(np.uint8), (330, 200), 12, 1, -1)  # a dot as wide as a hair pair
    pipe = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="classical"))
    assert (
        pipe.analyze(rgb, calibration=5.0, count_rule="visible", mask=mask).visible_hair_count == 5
    )


def test_air_bubble_rims_are_not_counted_as_hairs():
    """A bubble's bright rim and dark inner line look like a curved hair to the segmenter."""
    h, w = 360, 480
    rgb = _skin(h, w)
    for y in (60, 150, 290):  # three dark hairs, one crossing the bubble
        cv2.line(rgb, (40, y), (440, y + 30), (0.15, 0.12, 0.1), 7)
    plain = trichoscan.analyze(rgb.copy(), calibration=5.0, segmenter="classical")
    rim = np.zeros((h, w), np.float32)
    cv2.circle(rim, (240, 180), 90, 1.0, 3, cv2.LINE_AA)
    inner = np.zeros((h, w), np.float32)
    cv2.circle(inner, (240, 180), 86, 1.0, 2, cv2.LINE_AA)
    bubbled = np.clip(rgb + 0.2 * rim[..., None], 0, 1) * (1 - 0.5 * inner)[..., None]
    result = trichoscan.analyze(bubbled.astype(np.float32), calibration=5.0, segmenter="classical")
    assert plain.visible_hair_count == 3
    assert result.visible_hair_count == 3


def test_bubble_rim_rows_follow_the_ring_not_a_grazing_hair():
    from trichoscan.counting import count_hairs
    from trichoscan.pipeline import bubble_rim_rows
    from trichoscan.preprocess import Bubble

    mask = np.zeros((300, 400), np.uint8)
    cv2.ellipse(mask, (200, 150), (100, 100), 0, 200, 320, 1, 3)  # 120 degrees of the ring
    cv2.line(mask, (90, 255), (310, 255), 1, 6)  # a straight hair grazing the ring's bottom
    cv2.line(mask, (20, 20), (120, 40), 1, 6)  # a hair far away
    hairs = count_hairs(mask.astype(bool))
    assert len(hairs) == 3
    rim = bubble_rim_rows(hairs, [Bubble(200.0, 150.0, 100.0, 1.0)])
    arc = np.argmax([np.ptp(p[:, 1]) for p in hairs.paths])  # the arc spans the most rows
    assert rim.tolist() == [i == arc for i in range(3)]
    assert not bubble_rim_rows(hairs, []).any()
