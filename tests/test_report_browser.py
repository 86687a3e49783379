"""A patient report in a real browser: headless Chromium loads it, and it shows its content.

Chromium parses the page (``--dump-dom``: the tables and numbers are in the DOM it built)
and paints it (``--screenshot``: the embedded photos and plots decoded and drawn). The test
skips only when no Chromium is installed and ``TRICHOSCAN_REQUIRE_BROWSER`` is unset;
``.ci/run`` installs Chromium and sets the variable, so in CI a missing browser fails.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from trichoscan import synth
from trichoscan.batch import run_batch
from trichoscan.pipeline import PipelineConfig
from trichoscan.report import CLASS_COLOURS, write_patient_reports

SMALL = synth.SynthConfig(
    height=200, width=256, um_per_px=(8.0, 8.0), density_per_cm2=(280.0, 320.0), p_unshaved=0.0
)
WINDOW = (1280, 3600)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    """The Chromium binary: $TRICHOSCAN_CHROMIUM, else the first of BROWSERS on PATH."""
    for name in (os.environ.get("TRICHOSCAN_CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    path = _browser()
    if path is None:
        message = (
            f"no Chromium found (looked for {', '.join(BROWSERS)}; or set TRICHOSCAN_CHROMIUM)"
        )
        if os.environ.get("TRICHOSCAN_REQUIRE_BROWSER"):
            pytest.fail(message + "; TRICHOSCAN_REQUIRE_BROWSER is set")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    """A two-session batch of one patient (the same skin, moved) and its report."""
    root = tmp_path_factory.mktemp("browser") / "study"
    rgb = synth.render(5621, SMALL).image
    for j, date in enumerate(("2026-02-01", "2026-04-01")):
        folder = root / "PT-42" / "vertex" / date
        folder.mkdir(parents=True)
        moved = np.roll(rgb, 4 * j, axis=1)
        cv2.imwrite(str(folder / "a.jpg"), cv2.cvtColor(moved, cv2.COLOR_RGB2BGR))
    batch = root.parent / "batch"
    result = run_batch(root, batch, config=PipelineConfig(segmenter="classical"), calibration=8.0)
    assert result.n_failed == 0
    (path,) = write_patient_reports(batch).paths
    return batch, path


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Tables(HTMLParser):
    """Text of every table cell, by the table's class; and the text of id'd elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._id: list[str | None] = []
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if a.get("id"):
            self._id.append(a["id"])
            self._text = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._id:
            self.ids[self._id.pop()] = " ".join("".join(self._text).split())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._id:
            self._text.append(data)


def test_report_in_headless_chromium(browser, report, tmp_path):
    batch, path = report
    url = path.resolve().as_uri()
    profile = tmp_path / "profile"

    # The DOM Chromium built: header, sessions and changes tables with the batch's numbers.
    dom = _chromium(browser, profile, "--dump-dom", url).stdout
    parsed = _Tables()
    parsed.feed(dom)
    assert "<h1>Patient PT-42</h1>" in dom
    assert parsed.ids["summary"] == "1 site · 2 sessions · 2 photos"
    with (batch / "sessions.csv").open(newline="", encoding="utf-8") as handle:
        sessions = list(csv.DictReader(handle))
    rows = parsed.tables["sessions"][1:]  # below the header
    assert [r[0].split()[0] for r in rows] == [s["date"] for s in sessions]
    for row, session in zip(rows, sessions, strict=True):
        density = f"{float(session['density_per_cm2_value']):.1f}"
        assert row[4].startswith(density), (row, density)  # value, then its CI
        assert row[2] == session["hair_count"]
    changes = parsed.tables["changes"][1:]
    assert len(changes) == 1 and changes[0][0] == "2026-04-01"
    assert "significant" in changes[0][3]
    assert dom.count("data:image/jpeg;base64,") == 2 and dom.count("data:image/png;base64,") == 2

    # The painted page: the photos and plots decoded and drawn, not blank or broken.
    shot = tmp_path / "report.png"
    _chromium(
        browser, profile, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url
    )
    image = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (WINDOW[1], WINDOW[0])
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    non_white = (rgb < 245).any(axis=1).mean()
    assert non_white > 0.15, non_white  # text and tables alone cover a few %
    # Photos: tens of thousands of distinct colours (text, tables and plots have far fewer).
    distinct = len(np.unique(rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]))
    assert distinct > 20000, distinct
    # Histogram bars in the class colours (far more pixels than the legend's CSS swatches)
    # for every class the photos' measured widths fall in, and only for those.
    present = _classes_in_histograms(batch)
    assert len(present) >= 2, present
    for name in ("vellus", "intermediate", "terminal"):
        near = (np.abs(rgb - np.array(CLASS_COLOURS[name])).max(axis=1) <= 6).sum()
        if name in present:
            assert near > 3000, (name, near)
        else:
            assert near < 1500, (name, near)  # the legend swatch and overlay dots only


def _classes_in_histograms(batch: Path) -> set[str]:
    """Width classes counted in any photo of the batch (its cached per-photo summaries)."""
    present = set()
    for path in batch.glob(".cache/*/*.json"):
        summary = json.loads(path.read_text(encoding="utf-8")).get("summary") or {}
        for name in ("vellus", "intermediate", "terminal"):
            if (summary.get(f"{name}_count") or 0) > 0:
                present.add(name)
    return present
