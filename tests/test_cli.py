"""CLI: exit codes, files written, one clear line per bad input, never a traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from trichoscan import synth
from trichoscan.cli import app
from trichoscan.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL

runner = CliRunner()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Two small rendered photos in a session-like folder tree."""
    root = tmp_path_factory.mktemp("photos")
    config = synth.SynthConfig(height=256, width=320)
    for i, seed in enumerate((11, 12)):
        render = synth.render(seed, config)
        folder = root / "P1" / "vertex" / f"2026-01-0{i + 1}"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
    return root


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("analyze", "synth", "devices"):
        assert command in result.output


def test_analyze_writes_json_overlay_csv_and_report(photo_dir, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(photo_dir), "--out", str(out), "--um-per-px", "5"])
    assert result.exit_code == EXIT_OK, result.output
    jsons = sorted(out.rglob("*.json"))
    assert [p.relative_to(out).as_posix() for p in jsons] == [
        "P1/vertex/2026-01-01/a.json",
        "P1/vertex/2026-01-02/a.json",
    ]
    data = json.loads(jsons[0].read_text())
    assert data["schema_version"] == "1.3"
    assert data["calibration"]["um_per_px"] == 5.0
    assert data["metrics"]["density_per_cm2"] is not None
    assert len(list(out.rglob("*_overlay.png"))) == 2
    overlay = cv2.imread(str(out / "P1" / "vertex" / "2026-01-01" / "a_overlay.png"))
    assert overlay.shape == (256, 320, 3)
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert rows[0]["hair_count"] == str(data["metrics"]["hair_count"])
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    assert not (out / "errors.csv").exists()


def test_one_bad_photo_gives_exit_3_and_keeps_the_others(photo_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a JPEG")
    good = next(photo_dir.rglob("*.png"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(good), str(bad), "--out", str(out)])
    assert result.exit_code == EXIT_PARTIAL
    assert "Traceback" not in result.output
    assert "bad.jpg" in result.stderr
    with open(out / "summary.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 1
    with open(out / "errors.csv", newline="") as handle:
        errors = list(csv.DictReader(handle))
    assert [Path(e["source"]).name for e in errors] == ["bad.jpg"]


def test_nothing_processed_gives_exit_4(tmp_path):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    result = runner.invoke(app, ["analyze", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert result.exit_code == EXIT_FAILED
    assert "no such file" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--um-per-px", "5000"], "plausible"),
        (["--device", "no-such-scope"], "unknown device profile"),
    ],
)
def test_bad_calibration_is_a_clear_error(photo_dir, tmp_path, args, needle):
    result = runner.invoke(app, ["analyze", str(photo_dir), "--out", str(tmp_path), *args])
    assert result.exit_code == EXIT_FAILED
    assert needle in result.stderr
    assert "Traceback" not in result.output


def test_usage_errors_exit_2(photo_dir, tmp_path):
    result = runner.invoke(app, ["analyze", str(photo_dir), "--count-rule", "all"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["analyze", str(photo_dir), "--um-per-px", "5", "--device", "x"])
    assert result.exit_code == 2


def test_no_scale_means_no_density(photo_dir, tmp_path):
    out = tmp_path / "out"
    photo = next(photo_dir.rglob("*.png"))
    result = runner.invoke(app, ["analyze", str(photo), "--out", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(next(out.glob("*.json")).read_text())
    assert data["calibration"]["source"] == "none"
    assert data["metrics"]["density_per_cm2"] is None
    assert data["metrics"]["hair_count"] >= 1


def test_synth_command_writes_truth(tmp_path):
    result = runner.invoke(
        app,
        ["synth", str(tmp_path), "--n", "2", "--seed", "5", "--height", "128", "--width", "160"],
    )
    assert result.exit_code == EXIT_OK, result.output
    truth = json.loads((tmp_path / "synth_000005.json").read_text())
    assert truth["seed"] == 5
    img = cv2.imread(str(tmp_path / "synth_000005.jpg"))
    assert img.shape == (128, 160, 3)
    mask = cv2.imread(str(tmp_path / "synth_000005_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (128, 160)
    assert np.unique(mask).size <= 2


def test_trichogram_command_reports_growth(tmp_path):
    """A rendered clipped site 2-3 days apart: growth rate and anagen counts printed."""
    from trichoscan import synth

    scene = synth.SynthConfig(
        height=480,
        width=600,
        um_per_px=(8.0, 8.0),
        density_per_cm2=(180.0, 200.0),
        hair_colours=("black",),
        hair_colour_weights=(1.0,),
        p_unshaved=0.0,
    )
    pair = synth.render_pair(5, synth.PairConfig(scene=scene, kind="trichogram"))
    paths = synth.write_pair(pair, tmp_path, "site", fmt="png")
    days = float(pair.truth_dict()["days"])
    out_json = tmp_path / "tg.json"
    args = ["trichogram", str(paths["before"]), str(paths["after"]), "--days", str(days)]
    result = runner.invoke(
        app, [*args, "--um-per-px", "8", "--segmenter", "classical", "--json", str(out_json)]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "growth rate:" in result.output and "mm/day" in result.output
    data = json.loads(out_json.read_text())
    assert data["n_measured"] >= 1
    assert data["n_anagen"] + data["n_telogen"] == data["n_measured"]
    # No scale: refused with a usage error, not a guess.
    no_scale = runner.invoke(app, args)
    assert no_scale.exit_code == 2
