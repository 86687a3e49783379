"""Batch throughput: a rendered study with a few corrupt photos, first run and re-run.

Renders N photos (development seeds 20000+, 640x512) into PATIENT/SITE/DATE folders
(10 patients x 2 sites x sessions of several photos), corrupts a few, and times
``run_batch`` cold (1 and 2 workers) and the re-run that should take everything from the
cache. Prints a Markdown table.

Run by hand:  python benchmarks/bench_batch.py [--n 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402

import trichoscan  # noqa: E402
from trichoscan import synth  # noqa: E402
from trichoscan.batch import run_batch  # noqa: E402
from trichoscan.pipeline import PipelineConfig  # noqa: E402

FIRST_SEED = 20_000
DATES = ("2026-01-10", "2026-03-10", "2026-05-10", "2026-07-10", "2026-09-10")


def make_study(root: Path, n: int, n_corrupt: int) -> list[Path]:
    config = synth.SynthConfig(height=512, width=640, um_per_px=(3.0, 3.0))
    paths = []
    for i in range(n):
        patient, site = f"P{i % 10:03d}", ("vertex", "frontal")[(i // 10) % 2]
        date = DATES[(i // 20) % len(DATES)]
        folder = root / patient / site / date
        folder.mkdir(parents=True, exist_ok=True)
        render = synth.render(FIRST_SEED + i, config)
        path = folder / f"photo_{i:04d}.jpg"
        if render.jpeg_bytes is None:  # the render was not JPEG-compressed: encode it here
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
            path.write_bytes(buf.tobytes())
        else:
            path.write_bytes(render.jpeg_bytes)
        paths.append(path)
    for path in paths[:: max(1, n // max(n_corrupt, 1))][:n_corrupt]:
        path.write_bytes(path.read_bytes()[:2000])  # truncated JPEG
    return paths


def timed_run(root: Path, out: Path, workers: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = run_batch(
        root, out, config=PipelineConfig(segmenter="classical"), calibration=3.0, workers=workers
    )
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--corrupt", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"# trichoscan {trichoscan.__version__} batch benchmark; {machine()}\n")
    tmp = Path(tempfile.mkdtemp(prefix="trichoscan-bench-"))
    try:
        root = tmp / "study"
        t0 = time.perf_counter()
        make_study(root, args.n, args.corrupt)
        print(f"rendered {args.n} photos in {time.perf_counter() - t0:.0f} s\n")
        rows = []
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            cold, result = timed_run(root, out, workers)
            warm, again = timed_run(root, out, workers)
            rows.append(
                [
                    str(workers),
                    f"{cold:.1f}",
                    f"{args.n / cold:.2f}",
                    f"{result.n_failed}",
                    f"{warm:.2f}",
                    f"{again.n_analysed}",
                ]
            )
        print_table(
            ["workers", "first run s", "photos/s", "failed", "re-run s", "re-analysed"], rows
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
