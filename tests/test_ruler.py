"""Scale from a photo of a stage micrometer or ruler (`trichoscan calibrate`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from trichoscan.calibration import measure_ruler_scale
from trichoscan.cli import app
from trichoscan.errors import EXIT_FAILED, EXIT_OK, CalibrationError


def ruler_photo(h: int, w: int, period: float, angle_deg: float, seed: int = 0) -> np.ndarray:
    """Dark ticks (a quarter period wide) on a lit background, drawn 4x supersampled."""
    rng = np.random.default_rng(seed)
    big = 4
    ys, xs = np.mgrid[0 : h * big, 0 : w * big] / big
    theta = np.radians(angle_deg)
    across = xs * np.cos(theta) + ys * np.sin(theta)
    ticks = ((across / period) % 1.0 < 0.25).astype(np.float32)
    img = cv2.resize(0.85 - 0.6 * ticks, (w, h), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = img * (0.8 + 0.2 * np.linspace(0, 1, w, dtype=np.float32)[None, :])
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(np.dstack([img] * 3), 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    ("period", "angle", "tolerance_pct"),
    [(20.0, 0.0, 0.2), (23.7, 7.0, 0.2), (15.3, 93.0, 0.2), (12.34, 170.0, 0.2), (40.1, 45, 1.0)],
)
def test_ruler_period_is_measured(period, angle, tolerance_pct):
    result = measure_ruler_scale(ruler_photo(480, 640, period, angle), spacing_um=100.0)
    assert result.period_px == pytest.approx(period, rel=tolerance_pct / 100)
    assert result.um_per_px == pytest.approx(100.0 / period, rel=tolerance_pct / 100)
    assert abs((result.angle_deg - angle + 90) % 180 - 90) < 1.0
    assert result.n_periods > 10


def test_noise_is_not_a_ruler():
    noise = np.random.default_rng(1).random((400, 400, 3)).astype(np.float32)
    with pytest.raises(CalibrationError, match="no regular ruler"):
        measure_ruler_scale(noise, spacing_um=10.0)


def test_implausible_result_and_bad_spacing_are_refused():
    photo = ruler_photo(240, 320, 20.0, 0.0)
    with pytest.raises(CalibrationError, match="plausible"):
        measure_ruler_scale(photo, spacing_um=2.0)  # 0.1 µm/px
    with pytest.raises(CalibrationError, match="positive"):
        measure_ruler_scale(photo, spacing_um=-5.0)


def test_calibrate_command(tmp_path):
    path = tmp_path / "micrometer.png"
    photo = ruler_photo(480, 640, 25.0, 3.0)
    cv2.imwrite(str(path), np.rint(photo * 255).astype(np.uint8))
    runner = CliRunner()
    result = runner.invoke(
        app, ["calibrate", str(path), "--spacing-um", "100", "--name", "my-scope"]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert result.output.startswith("4.00")
    assert "[device.my-scope]" in result.output
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200), 128, np.uint8))
    result = runner.invoke(app, ["calibrate", str(blank), "--spacing-um", "10"])
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" not in result.output
