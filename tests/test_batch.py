"""Batch: resumable cache, worker-count independence, a corrupt photo, the CSVs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from trichoscan import synth
from trichoscan.batch import CHANGE_COLUMNS, IMAGE_COLUMNS, SESSION_COLUMNS, run_batch
from trichoscan.errors import EXIT_OK, EXIT_PARTIAL, InputError
from trichoscan.pipeline import PipelineConfig

CONFIG = PipelineConfig(segmenter="classical")
TINY = synth.SynthConfig(
    height=160, width=200, um_per_px=(5.0, 5.0), density_per_cm2=(250.0, 300.0), p_unshaved=0.0
)


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def _moved(rgb: np.ndarray, dx: float, dy: float, deg: float, gain: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    m[:, 2] += (dx, dy)
    out = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """10 tiny photos: 2 patients, 2 sessions each; the later session re-photographs."""
    root = tmp_path_factory.mktemp("batch") / "study"
    for k, seed in enumerate((3101, 3102, 3103)):
        rgb = synth.render(seed, TINY).image
        _save(root / f"P1/vertex/2026-01-10/p{k}.jpg", rgb)
        _save(root / f"P1/vertex/2026-03-10/p{k}.jpg", _moved(rgb, 6 + k, -4, 3.0, 1.08))
    for k, seed in enumerate((3111, 3112)):
        rgb = synth.render(seed, TINY).image
        _save(root / f"P2/frontal/2026-02-01/p{k}.jpg", rgb)
        _save(root / f"P2/frontal/2026-04-01/p{k}.jpg", _moved(rgb, -5, 7, -2.0, 0.93))
    return root


@pytest.fixture(scope="module")
def first_run(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("out1")
    return run_batch(study, out, config=CONFIG, calibration=5.0, workers=1), out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_batch_writes_every_table(first_run):
    result, out = first_run
    assert result.n_photos == 10 and result.n_analysed == 10 and result.n_failed == 0
    assert result.exit_code == EXIT_OK
    images = _rows(out / "images.csv")
    assert [r["path"] for r in images] == sorted(r["path"] for r in images)
    assert len(images) == 10 and tuple(images[0]) == IMAGE_COLUMNS
    assert images[0]["path"] == "P1/vertex/2026-01-10/p0.jpg"
    assert {r["um_per_px"] for r in images} == {"5"}
    assert not any("time" in c for c in IMAGE_COLUMNS)  # no timings: runs can be diffed
    sessions = _rows(out / "sessions.csv")
    assert len(sessions) == 4 and tuple(sessions[0]) == SESSION_COLUMNS
    s = sessions[0]
    assert float(s["density_per_cm2_low"]) <= float(s["density_per_cm2_value"])
    assert float(s["density_per_cm2_value"]) <= float(s["density_per_cm2_high"])
    changes = _rows(out / "changes.csv")
    assert tuple(changes[0]) == CHANGE_COLUMNS
    assert [(c["patient"], c["reference"]) for c in changes] == [
        ("P1", "baseline"),
        ("P2", "baseline"),
    ]
    assert all(c["registered"] == "True" for c in changes), [c["notes"] for c in changes]
    assert _rows(out / "errors.csv") == []
    assert (out / "batch.json").is_file()


def test_rerun_reprocesses_nothing(study, first_run, tmp_path):
    result, out1 = first_run
    out = tmp_path / "out"
    shutil.copytree(out1, out)
    before = {name: (out / name).read_bytes() for name in ("images.csv", "sessions.csv")}
    again = run_batch(study, out, config=CONFIG, calibration=5.0, workers=1)
    assert again.n_analysed == 0 and again.n_cached == 10
    assert again.n_registered_now == 0 and again.n_registrations_cached > 0
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    # Other settings are another cache key: every photo is analysed again.
    visible = PipelineConfig(segmenter="classical", count_rule="visible")
    other = run_batch(study, out, config=visible, calibration=5.0, compare_sessions=False)
    assert other.n_analysed == 10


def test_one_and_two_workers_give_identical_tables(study, first_run, tmp_path):
    _, out1 = first_run
    seen = []
    result = run_batch(
        study,
        tmp_path,
        config=CONFIG,
        calibration=5.0,
        workers=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.n_analysed == 10
    assert seen[-1] == (10, 10) and len(seen) == 10
    for name in ("images.csv", "sessions.csv", "changes.csv"):
        assert (tmp_path / name).read_bytes() == (out1 / name).read_bytes(), name


def test_corrupt_photo_goes_to_errors_and_the_rest_is_written(study, first_run, tmp_path):
    _, out1 = first_run
    root = tmp_path / "study"
    shutil.copytree(study, root)
    shutil.copytree(out1, tmp_path / "out")  # reuse the cache: only new files are analysed
    (root / "P1/vertex/2026-03-10/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run_batch(root, tmp_path / "out", config=CONFIG, calibration=5.0)
    assert result.n_analysed == 1 and result.n_failed == 1
    assert result.exit_code == EXIT_PARTIAL
    errors = _rows(tmp_path / "out" / "errors.csv")
    assert [e["path"] for e in errors] == ["P1/vertex/2026-03-10/broken.jpg"]
    assert errors[0]["error"]
    assert len(_rows(tmp_path / "out" / "images.csv")) == 10
    sessions = _rows(tmp_path / "out" / "sessions.csv")
    assert sessions[1]["n_photos"] == "4" and sessions[1]["n_failed"] == "1"


def test_manifest_input_and_bad_root(study, first_run, tmp_path):
    _, out1 = first_run
    manifest = tmp_path / "m.csv"
    lines = ["path,patient,site,date,um_per_px"]
    for p in sorted(study.rglob("*.jpg"))[:2]:
        lines.append(f"{p},P9,vertex,2026-05-0{len(lines)},5.0")
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copytree(out1, tmp_path / "out")
    result = run_batch(manifest, tmp_path / "out", config=CONFIG)
    assert result.n_photos == 2 and result.n_analysed == 0  # same content, scale, settings
    with pytest.raises(InputError):
        run_batch(tmp_path / "nothing", tmp_path / "out2", config=CONFIG)


class _ScaleBarPipeline:
    """Stands in for the pipeline: photos named *bar* carry a readable scale bar."""

    def analyze(self, path, *, calibration=None):
        from trichoscan.calibration import Calibration
        from trichoscan.counting import HairTable
        from trichoscan.metrics import summarize

        if isinstance(calibration, Calibration) and calibration.known:
            cal = calibration
        elif "bar" in Path(path).name:
            cal = Calibration(4.0, "photo", detail="scale bar 1.0 mm = 250 px")
        else:
            cal = Calibration.unknown()
        return summarize(HairTable.empty((50, 60)), np.ones((50, 60), bool), cal, source=path)


def test_scale_read_from_one_photo_is_shared_within_the_session(tmp_path, monkeypatch):
    import trichoscan.batch as batch

    # Different content each: identical files would share one cache entry.
    for k, rel in enumerate(("2026-01-01/a_bar.jpg", "2026-01-01/b.jpg", "2026-02-01/c.jpg")):
        _save(tmp_path / "study/P1/vertex" / rel, np.full((8, 8, 3), 40 * k, np.uint8))
    monkeypatch.setattr(batch, "_pipeline", lambda config: _ScaleBarPipeline())
    result = run_batch(tmp_path / "study", tmp_path / "out", config=CONFIG, compare_sessions=False)
    assert result.n_analysed == 4  # 3 photos + b.jpg again with the shared scale
    images = {r["path"].split("/")[-1]: r for r in _rows(tmp_path / "out" / "images.csv")}
    assert images["b.jpg"]["um_per_px"] == "4" and images["b.jpg"]["calibration_source"] == "photo"
    assert "a_bar.jpg" in images["b.jpg"]["calibration_detail"]
    assert images["c.jpg"]["um_per_px"] == ""  # another session: not shared
    again = run_batch(tmp_path / "study", tmp_path / "out", config=CONFIG, compare_sessions=False)
    assert again.n_analysed == 0
