"""Nothing lost, nothing different: kill-and-resume, atomic writes, determinism.

A batch killed with SIGKILL in the middle and restarted ends with exactly the tables of
an uninterrupted run; the files a killed run leaves behind are complete; every output is
written atomically; and the same photo with the same settings gives bit-identical
results run after run and with one or two workers.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import trichoscan
from trichoscan import synth
from trichoscan.batch import run_batch
from trichoscan.cli import app
from trichoscan.pipeline import PipelineConfig

CONFIG = PipelineConfig(segmenter="classical")
PHOTO = synth.SynthConfig(height=192, width=240, um_per_px=(5.0, 5.0))
SEEDS = range(5301, 5309)  # 8 photos; renderer seeds 0-99999 are free for tests
TABLES = ("images.csv", "sessions.csv", "changes.csv", "errors.csv", "batch.json")
BATCH_ARGS = ["--um-per-px", "5", "--segmenter", "classical", "-j", "1"]
REPO = Path(trichoscan.__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """8 small photos: one patient, one site, two sessions of four."""
    root = tmp_path_factory.mktemp("resume") / "study"
    for k, seed in enumerate(SEEDS):
        folder = root / "P1" / "vertex" / ("2026-01-05" if k < 4 else "2026-03-05")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synth.render(seed, PHOTO).image).save(folder / f"p{k}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> Path:
    """An uninterrupted run, one worker, in this process."""
    out = tmp_path_factory.mktemp("reference")
    result = run_batch(study, out, config=CONFIG, calibration=5.0, workers=1)
    assert result.n_failed == 0 and result.n_analysed == len(SEEDS)
    return out


def _batch_command(study: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trichoscan", "batch", str(study), "--out", str(out), *extra]


def _env() -> dict[str, str]:
    # The child imports exactly the code under test, installed or not.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _cache_entries(out: Path) -> list[Path]:
    cache = out / ".cache"
    return (
        sorted(p for p in cache.rglob("*.json") if not p.name.startswith("."))
        if cache.is_dir()
        else []
    )


def _kill_after(command: list[str], out: Path, entries: int, timeout: float = 120.0) -> None:
    """Start ``command`` and SIGKILL it as soon as ``entries`` cache entries exist."""
    proc = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    try:
        while len(_cache_entries(out)) < entries:
            if proc.poll() is not None:
                pytest.fail(f"the batch ended before it could be killed: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no cache entry appeared in time")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _assert_cache_complete(out: Path) -> int:
    """Every cache entry a killed run left is whole; returns the number of photo entries."""
    n_photos = 0
    for meta in _cache_entries(out):
        outcome = json.loads(meta.read_text(encoding="utf-8"))  # complete JSON
        if meta.name.endswith(".registration.json"):
            continue  # a registration: one JSON file, nothing more to check
        n_photos += 1
        if outcome.get("ok"):  # its analysis was written (atomically) before it
            blob = meta.with_suffix(".analysis")
            analysis = pickle.loads(zlib.decompress(blob.read_bytes()))  # noqa: S301
            assert isinstance(analysis, trichoscan.Analysis)
    # Temporary files of an interrupted write never pass for entries.
    for tmp in (out / ".cache").rglob("*.tmp"):
        assert tmp.name.startswith(".")
    return n_photos


def test_killed_batch_resumes_to_identical_tables(study, reference, tmp_path):
    out = tmp_path / "out"
    _kill_after(_batch_command(study, out, *BATCH_ARGS), out, entries=2)
    assert not (out / "images.csv").exists()  # tables are written at the end only
    n_left = _assert_cache_complete(out)
    assert 2 <= n_left < len(SEEDS)

    done = subprocess.run(
        _batch_command(study, out, *BATCH_ARGS), env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{len(SEEDS) - n_left} now, {n_left} from cache" in done.stdout
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name

    # A later run killed midway (other settings: every photo is new work) leaves the
    # finished tables exactly as they were: they are only ever replaced whole.
    before = {name: (out / name).read_bytes() for name in TABLES}
    n_before = len(_cache_entries(out))
    other = [*BATCH_ARGS, "--count-rule", "visible"]
    _kill_after(_batch_command(study, out, *other), out, entries=n_before + 1)
    _assert_cache_complete(out)
    for name in TABLES:
        assert (out / name).read_bytes() == before[name], name


def test_every_output_is_written_atomically(study, tmp_path, monkeypatch):
    """No file under OUT is opened for writing in place: all go through temp + rename."""
    out = tmp_path / "out"
    in_place = []
    real_open = io.open

    def spy(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax+"):
            if Path(file).resolve().is_relative_to(out.resolve()):
                in_place.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy)
    monkeypatch.setattr(builtins, "open", spy)
    result = run_batch(study, out, config=CONFIG, calibration=5.0, workers=1, anonymise=True)
    assert result.n_failed == 0
    assert in_place == []
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_two_workers_give_bit_identical_results(study, reference, tmp_path):
    out = tmp_path / "out"
    result = run_batch(study, out, config=CONFIG, calibration=5.0, workers=2)
    assert result.n_analysed == len(SEEDS)
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    # The per-photo cache entries too: same keys, same bytes.
    ours = {p.relative_to(out): p.read_bytes() for p in _cache_entries(out)}
    theirs = {p.relative_to(reference): p.read_bytes() for p in _cache_entries(reference)}
    assert ours == theirs


def test_same_photo_gives_bit_identical_json(study, tmp_path):
    photo = sorted(study.rglob("*.jpg"))[0]
    runs = [trichoscan.analyze(photo, calibration=5.0, segmenter="classical") for _ in range(2)]
    assert runs[0].to_json() == runs[1].to_json()
    assert np.array_equal(runs[0].mask, runs[1].mask)
    # Through the CLI, into two folders: JSON and overlay byte for byte.
    runner = CliRunner()
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        args = ["analyze", str(photo), "--out", str(out), "--um-per-px", "5"]
        result = runner.invoke(app, [*args, "--segmenter", "classical"])
        assert result.exit_code == 0, result.stderr
    for name in ("p0.json", "p0_overlay.png", "summary.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    # No timings or dates of the run in the results, which would break the comparison.
    data = json.loads((outs[0] / "p0.json").read_text(encoding="utf-8"))
    assert not [k for k in data["metrics"] if "time" in k or "date" in k]
