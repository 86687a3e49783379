"""Patient reports from a batch folder: one self-contained HTML file per patient.

The browser test (``test_report_browser.py``) looks at a report in Chromium; these tests
check the files themselves, the CLI's exit codes and the fallbacks, without a browser.
"""

from __future__ import annotations

import base64
import csv
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from trichoscan import report as report_module
from trichoscan import synth
from trichoscan.batch import run_batch
from trichoscan.cli import app
from trichoscan.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, InputError, TrichoscanError
from trichoscan.metrics import SCHEMA_VERSION
from trichoscan.pipeline import PipelineConfig
from trichoscan.report import write_patient_reports

CONFIG = PipelineConfig(segmenter="classical")
# Small but with hairs enough for CIs: 2 x 1.6 mm at 8 µm/px.
SMALL = synth.SynthConfig(
    height=200, width=256, um_per_px=(8.0, 8.0), density_per_cm2=(280.0, 320.0), p_unshaved=0.0
)
DATES = ("2026-01-05", "2026-03-05", "2026-05-05")
DATA_URI = re.compile(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)")
runner = CliRunner()


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def _shifted(rgb: np.ndarray, dx: int) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory) -> Path:
    """P1: one site, three sessions of two photos (the same skin, moved); P2: one session
    with one good and one broken photo."""
    root = tmp_path_factory.mktemp("report") / "study"
    for k, seed in enumerate((5611, 5612)):
        rgb = synth.render(seed, SMALL).image
        for j, date in enumerate(DATES):
            _save(root / "P1" / "vertex" / date / f"p{k}.jpg", _shifted(rgb, 3 * j))
    _save(root / "P2" / "frontal" / DATES[0] / "a.jpg", synth.render(5613, SMALL).image)
    (root / "P2" / "frontal" / DATES[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = root.parent / "batch"
    result = run_batch(root, out, config=CONFIG, calibration=8.0)
    assert result.n_failed == 1
    return out


@pytest.fixture(scope="module")
def reports(batch_dir, tmp_path_factory) -> dict[str, str]:
    """The real reports (plots included) of both patients: patient -> HTML text."""
    result = write_patient_reports(batch_dir, tmp_path_factory.mktemp("reports"))
    assert result.failed == {} and result.exit_code == EXIT_OK
    assert [p.name for p in result.paths] == ["P1.html", "P2.html"]
    return {p: path.read_text(encoding="utf-8") for p, path in result.written.items()}


@pytest.fixture
def fast_plots(monkeypatch):
    """Plots replaced by a 1-pixel PNG: for the tests of files and exit codes only."""
    png = report_module.encode_png(np.zeros((1, 1, 3), np.uint8))
    monkeypatch.setattr(report_module, "_trend_png", lambda *a, **k: png)
    monkeypatch.setattr(report_module, "_histogram_png", lambda *a, **k: png)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_self_contained_file_per_patient(reports):
    assert sorted(reports) == ["P1", "P2"]
    for page in reports.values():
        assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
        # No network asset of any kind, no script; the CSP forbids loads anyway.
        assert "http://" not in page and "https://" not in page
        assert not re.search(r"""(src|href)\s*=\s*['"]?\s*//""", page)
        assert "<script" not in page.lower() and "<link" not in page.lower()
        assert "default-src 'none'" in page
        # Every embedded image decodes.
        images = DATA_URI.findall(page)
        assert images
        for _, data in images:
            pixels = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), 1)
            assert pixels is not None and pixels.size > 0


def test_report_shows_the_batch_numbers(batch_dir, reports):
    page = reports["P1"]
    assert "Patient P1" in page and "3 sessions" in page
    # 6 overlays side by side (baseline vs latest: 2 + 2) and the gallery of 3 sessions (6);
    # trends and histograms as PNG.
    kinds = [kind for kind, _ in DATA_URI.findall(page)]
    assert kinds.count("jpeg") == 4 + 6 and kinds.count("png") == 2
    sessions = [r for r in _rows(batch_dir / "sessions.csv") if r["patient"] == "P1"]
    assert len(sessions) == 3
    for row in sessions:
        assert f"{float(row['density_per_cm2_value']):.1f}" in page
        assert f"{float(row['mean_width_um_value']):.1f}" in page
    changes = [r for r in _rows(batch_dir / "changes.csv") if r["patient"] == "P1"]
    assert len(changes) == 3  # two vs baseline, one vs previous
    assert page.count("<td class='l nw'>baseline<br>") == 2
    assert page.count("<td class='l nw'>previous<br>") == 1
    for row in changes:
        pct = float(row["density_per_cm2_pct"])
        assert f"{report_module._fmt_signed(pct)} %" in page
    # One significance badge per defined change (a ratio with no vellus hair after is
    # undefined and gets none).
    metrics = ("density_per_cm2", "mean_width_um", "terminal_vellus_ratio")
    metrics += ("cumulative_thickness_mm_per_cm2",)
    defined = sum(row[f"{m}_significant"] != "" for row in changes for m in metrics)
    assert defined >= 3 * 3
    badges = page.count("<span class='badge sig'>") + page.count("<span class='badge ns'>")
    assert badges == defined + 1  # + the legend's example badge
    # Settings, model and scale.
    assert "classical" in page and "none (the classical segmenter has no weights)" in page
    assert "8 µm/px (given)" in page
    assert f"<dd>{SCHEMA_VERSION}</dd>" in page
    assert "P2/frontal" not in page  # one patient per file


def test_failed_photo_listed_in_its_patients_report(reports):
    page = reports["P2"]
    assert "1 session" in page and "1 could not be analysed" in page
    assert "P2/frontal/2026-01-05/broken.jpg" in page
    assert "One session only" in page
    assert "P1/vertex" not in page


def test_overlay_missing_from_cache_is_drawn_from_the_analysis(batch_dir, tmp_path, fast_plots):
    copy = tmp_path / "batch"
    shutil.copytree(batch_dir, copy)
    for jpg in (copy / ".cache").rglob("*.overlay.jpg"):
        jpg.unlink()
    result = write_patient_reports(copy, patients=["P2"])
    assert result.paths == [copy / "report" / "P2.html"]  # the default folder
    page = result.paths[0].read_text(encoding="utf-8")
    (jpeg,) = [data for kind, data in DATA_URI.findall(page) if kind == "jpeg"]
    assert cv2.imdecode(np.frombuffer(base64.b64decode(jpeg), np.uint8), 1).shape == (200, 256, 3)
    assert "hairs drawn on grey" in page


def test_not_a_batch_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        write_patient_reports(tmp_path / "missing")
    with pytest.raises(InputError, match="not a trichoscan batch output folder"):
        write_patient_reports(tmp_path)


def test_without_matplotlib_says_what_to_install(batch_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(TrichoscanError, match=r"trichoscan\[report\]"):
        write_patient_reports(batch_dir, tmp_path)


def test_cli_report(batch_dir, tmp_path, fast_plots):
    out = tmp_path / "html"
    result = runner.invoke(app, ["report", str(batch_dir), "--out", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    assert "2 patient reports written" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["P1.html", "P2.html"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_cli_report_bad_folder_is_one_line(tmp_path, make):
    target = tmp_path / "dir"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    result = runner.invoke(app, ["report", str(target)])
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(target) in line


def test_cli_report_some_patients_failed(batch_dir, tmp_path, monkeypatch, fast_plots):
    real = report_module._patient_html

    def fail_p2(folder, patient):
        if patient == "P2":
            raise OSError("disk full")
        return real(folder, patient)

    monkeypatch.setattr(report_module, "_patient_html", fail_p2)
    result = runner.invoke(app, ["report", str(batch_dir), "--out", str(tmp_path / "a")])
    assert result.exit_code == EXIT_PARTIAL
    assert result.stderr.strip() == "error: report of patient P2: disk full"
    assert (tmp_path / "a" / "P1.html").is_file() and not (tmp_path / "a" / "P2.html").exists()

    monkeypatch.setattr(report_module, "_patient_html", lambda folder, patient: 1 / 0)
    result = runner.invoke(app, ["report", str(batch_dir), "--out", str(tmp_path / "b")])
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 2  # one line per patient


def test_batch_report_flag(batch_dir, tmp_path, fast_plots):
    # A copy of the finished batch: the re-run takes everything from the cache.
    out = tmp_path / "batch"
    shutil.copytree(batch_dir, out)
    study = batch_dir.parent / "study"
    args = ["batch", str(study), "--out", str(out), "--um-per-px", "8", "--segmenter", "classical"]
    result = runner.invoke(app, [*args, "--report"])
    assert result.exit_code == EXIT_PARTIAL, result.output  # the broken photo
    assert "0 now" in result.stdout and "2 patient reports written" in result.stdout
    assert (out / "report" / "P1.html").is_file() and (out / "report" / "P2.html").is_file()


def test_overlay_caption_fits_a_narrow_photo():
    """The caption shrinks to the photo's width instead of running off its right edge."""
    import trichoscan
    from trichoscan.report import render_overlay

    rgb = np.full((160, 200, 3), 200, np.uint8)
    rgb[40:120, 96:104] = 30  # one dark hair
    result = trichoscan.analyze(rgb, calibration=5.0, segmenter="classical")
    out = render_overlay(rgb, result)
    black = np.all(out == 0, axis=2)  # the caption's background box
    rows = np.flatnonzero(black.any(axis=1))
    assert rows.size and rows.min() > 100  # at the bottom
    cols = np.flatnonzero(black[rows].any(axis=0))
    assert cols.max() <= 200 - 4  # inside the photo, with a margin
