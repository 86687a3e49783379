"""Calibration: resolving the user's scale, device profiles, and reading burned-in scale bars."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from trichoscan.calibration import (
    MAX_UM_PER_PX,
    MIN_UM_PER_PX,
    SCALE_BAR_STYLES,
    Calibration,
    device_profiles,
    find_scale_bar,
    read_scale_bar,
    resolve_calibration,
)
from trichoscan.errors import CalibrationError, InputError, TrichoscanError

FDU = Path(__file__).resolve().parents[2] / "shared" / "data" / "fdu"

# --- resolve_calibration ------------------------------------------------------------------


def test_none_is_unknown_never_a_default():
    cal = resolve_calibration(None)
    assert cal.um_per_px is None and cal.source == "none" and not cal.known
    assert cal.mm2_per_px is None


def test_number_is_given():
    cal = resolve_calibration(2.5)
    assert (cal.um_per_px, cal.source, cal.known) == (2.5, "given", True)
    assert math.isclose(cal.mm2_per_px, 6.25e-6)
    assert resolve_calibration(np.float32(3.0)).um_per_px == 3.0
    assert resolve_calibration(4).um_per_px == 4.0


def test_profile_name():
    cal = resolve_calibration("fdu-70x-quadrant")
    assert cal.source == "profile" and cal.device == "fdu-70x-quadrant"
    # Measured from the FDU scale bars: 361 px per mm.
    assert cal.um_per_px == pytest.approx(1000 / 361, rel=0.005)
    assert cal.to_dict()["device"] == "fdu-70x-quadrant"


def test_calibration_object_passes_through():
    cal = Calibration(3.1, "photo", detail="scale bar")
    assert resolve_calibration(cal) is cal


@pytest.mark.parametrize("bad", [0.1, 0.0, -2.0, 100.0, math.nan, math.inf, -math.inf])
def test_implausible_numbers(bad):
    with pytest.raises(CalibrationError, match="plausible"):
        resolve_calibration(bad)


@pytest.mark.parametrize("bad", [True, False])
def test_bool_rejected(bad):
    with pytest.raises(CalibrationError):
        resolve_calibration(bad)


def test_unknown_profile_lists_known():
    with pytest.raises(CalibrationError, match="fdu-70x-quadrant"):
        resolve_calibration("no-such-scope")


def test_non_number_rejected():
    with pytest.raises(CalibrationError, match="number"):
        resolve_calibration([2.5])  # type: ignore[arg-type]


def test_errors_are_typed():
    with pytest.raises(TrichoscanError):
        resolve_calibration(1e6)
    assert issubclass(CalibrationError, InputError)


def test_calibration_needs_value_unless_none():
    with pytest.raises(CalibrationError):
        Calibration(None, "given")
    assert Calibration(None, "none").to_dict()["um_per_px"] is None


def test_range_constants():
    assert MIN_UM_PER_PX == 0.5 and MAX_UM_PER_PX == 50.0
    for p in device_profiles().values():
        assert MIN_UM_PER_PX <= p.um_per_px <= MAX_UM_PER_PX


# --- synthetic scale bars -------------------------------------------------------------------


def _skin(
    h: int = 700, w: int = 900, seed: int = 0, hairs: int = 6, clear: bool = True
) -> np.ndarray:
    """Float32 RGB skin-like texture with a few thick dark 'hairs'.

    With ``clear``, hairs keep off the bottom-left where the tests draw the bar: a hair
    hiding a bar's free end makes it unmeasurable, and the detector rightly gives up then.
    """
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3)
    base = 0.58 + 0.04 * noise / noise.std()
    img = np.dstack([base * 1.05, base * 0.95, base]).clip(0, 1).astype(np.float32)
    for _ in range(hairs):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(80, 250)
        x1, y1 = int(x0 + length * np.cos(ang)), int(y0 + length * np.sin(ang))
        if clear and min(y0, y1) > 0.3 * h - 40 and min(x0, x1) < 0.65 * w + 40:
            continue
        cv2.line(img, (int(x0), int(y0)), (x1, y1), (0.12, 0.1, 0.1), int(rng.integers(12, 30)))
    return img


def _draw_l_bar(
    img: np.ndarray,
    corner: tuple[int, int],
    arm: int,
    *,
    label: bool = True,
    flip: bool = False,
    v_arm: int | None = None,
    thick: int = 2,
    level: float = 0.19,
) -> None:
    """Draw an FDU-style L scale bar: corner at ``corner`` (x, y), arms of ``arm`` px.

    Arm lengths are counted in pixels including the corner, as the detector measures them.
    The label (dark box with light text) sits past the free end of the horizontal arm.
    """
    x, y = corner
    v_arm = arm if v_arm is None else v_arm
    col = (level, level, level)
    if not flip:
        img[y - v_arm + thick : y + thick, x : x + thick] = col  # vertical arm, going up
        img[y : y + thick, x : x + arm] = col  # horizontal arm, going right
        x_free = x + arm
        bx0, bx1 = x_free + int(0.04 * arm), x_free + int(0.38 * arm)
    else:
        img[y - v_arm + thick : y + thick, x - thick + 1 : x + 1] = col
        img[y : y + thick, x - arm + 1 : x + 1] = col  # going left
        x_free = x - arm
        bx0, bx1 = x_free - int(0.38 * arm), x_free - int(0.04 * arm)
    if label:
        by0, by1 = y - int(0.067 * arm), y + int(0.03 * arm)
        img[by0:by1, bx0:bx1] = img[by0:by1, bx0:bx1] * 0.35 + 0.17 * 0.65
        scale = arm / 360 * 0.9
        text = np.zeros(img.shape[:2], np.uint8)  # OpenCV draws text on 8-bit images only
        cv2.putText(
            text,
            "1.0 mm",
            (bx0 + 4, by1 - max(2, int(0.01 * arm))),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            255,
            max(1, int(round(2 * scale))),
            cv2.LINE_AA,
        )
        a = (text.astype(np.float32) / 255)[:, :, None]
        img[:] = img * (1 - a) + 0.95 * a


@pytest.mark.parametrize(("arm", "seed"), [(360, 0), (300, 1), (220, 2), (180, 3)])
def test_l_bar_known_length(arm, seed):
    img = _skin(seed=seed)
    _draw_l_bar(img, (40, 620), arm)
    cal = read_scale_bar(img)
    assert cal is not None
    assert cal.source == "photo"
    assert "1.0 mm" in cal.detail
    assert cal.um_per_px == pytest.approx(1000 / arm, rel=0.01)
    bar = find_scale_bar(img)
    assert bar.style == "l-corner" and bar.length_mm == SCALE_BAR_STYLES["l-corner"]
    assert bar.horizontal_px == pytest.approx(arm, abs=2)
    assert bar.vertical_px == pytest.approx(arm, abs=2)


def test_l_bar_mask_covers_bar_and_label():
    img = _skin(seed=4)
    _draw_l_bar(img, (40, 620), 300)
    m = find_scale_bar(img).mask(img.shape[:2])
    assert m[620, 40:340].all()  # horizontal arm
    assert m[330:620, 40].all()  # vertical arm
    assert m[610, 360:440].all()  # label box
    assert m.mean() < 0.1


def test_l_bar_mirrored():
    img = _skin(seed=5)
    _draw_l_bar(img, (860, 620), 300, flip=True)
    cal = read_scale_bar(img)
    assert cal is not None and cal.um_per_px == pytest.approx(1000 / 300, rel=0.01)


def test_l_bar_crossed_by_a_hair():
    img = _skin(seed=6, hairs=0)
    # A dark hair lying across the vertical arm; the bar is drawn over it.
    cv2.line(img, (10, 450), (80, 420), (0.1, 0.09, 0.09), 24)
    _draw_l_bar(img, (40, 620), 300)
    cal = read_scale_bar(img)
    assert cal is not None and cal.um_per_px == pytest.approx(1000 / 300, rel=0.01)


def test_light_l_bar_is_unknown_style():
    img = _skin(seed=7) * 0.4
    _draw_l_bar(img, (40, 620), 300, level=0.85)
    assert read_scale_bar(img) is None


@pytest.mark.parametrize("seed", range(6))
def test_no_bar_no_false_positive(seed):
    assert read_scale_bar(_skin(seed=seed, hairs=25, clear=False)) is None


def test_l_without_label_is_not_read():
    img = _skin(seed=8)
    _draw_l_bar(img, (40, 620), 300, label=False)
    assert read_scale_bar(img) is None


def test_unequal_arms_are_not_read():
    img = _skin(seed=9)
    _draw_l_bar(img, (40, 620), 300, v_arm=240)
    assert read_scale_bar(img) is None


def test_drawn_frame_is_not_a_bar():
    img = _skin(seed=10)
    _draw_l_bar(img, (40, 620), 300)
    # Close the L into a square frame: a region of interest, not a scale bar.
    img[320:622, 338:340] = 0.19
    img[320:322, 40:340] = 0.19
    assert read_scale_bar(img) is None


def test_straight_bar_with_label_is_unknown_style():
    img = _skin(seed=11)
    img[620:622, 40:340] = 0.19
    assert read_scale_bar(img) is None


def test_implausible_bar_is_ignored():
    # A 1.0 mm bar only 15 px long would mean 67 µm/px: outside the plausible range.
    img = _skin(h=300, w=400, seed=12, hairs=0)
    _draw_l_bar(img, (40, 250), 15)
    assert read_scale_bar(img) is None


def test_tiny_or_grey_input():
    assert find_scale_bar(np.zeros((32, 32, 3), np.float32)) is None
    assert find_scale_bar(np.zeros((100, 100), np.float32)) is None


# --- real FDU photos (skipped when ../shared/data is absent) -------------------------------

needs_fdu = pytest.mark.skipif(not FDU.is_dir(), reason="../shared/data/fdu not present")


@needs_fdu
@pytest.mark.parametrize("name", ["220905_A036_3", "220110_A359_3"])
def test_fdu_bar_read(name):
    from trichoscan.io import read_image

    path = FDU / "train" / "images" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"{path} missing")
    cal = read_scale_bar(read_image(path))
    assert cal is not None
    assert cal.um_per_px == pytest.approx(
        resolve_calibration("fdu-70x-quadrant").um_per_px, rel=0.01
    )


@needs_fdu
@pytest.mark.parametrize(
    "name", ["220105_A095_1", "220105_A095_2", "220105_A095_4", "230219_A001_3", "220907_A269_4"]
)
def test_fdu_no_bar(name):
    from trichoscan.io import read_image

    path = FDU / "train" / "images" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"{path} missing")
    assert read_scale_bar(read_image(path)) is None
