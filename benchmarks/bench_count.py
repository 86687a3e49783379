"""Speed benchmark of the counting core (issue: counting core, "Speed").

Prints a table: for each reference mask, the median wall time of the whole core (mask ->
HairTable) split by stage, time per megapixel, peak traced memory per pixel, and side by
side the peer chain ``skimage.morphology.skeletonize`` + ``scipy.ndimage.distance_transform_edt``
+ ``skan.Skeleton(skeleton * edt)`` + ``skan.summarize`` (when skan is installed; skan is a
benchmark extra, never a runtime dependency), then the plain-Python reference on a crop, and
the cold ``import trichoscan`` time.

Masks: 2000 x 1500 px with 300 quadratic-Bezier strokes 150-700 px long and 3-12 px wide
drawn with ``cv2.polylines`` from ``numpy.random.default_rng(0)`` (about 28 % foreground);
a sparse variant with 60 strokes; and the same stroke density at about 1 and 12 megapixels.

Usage::

    python benchmarks/bench_count.py [--repeat 5] [--no-peer] [--no-12mp]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trichoscan.counting import _count_hairs_staged  # noqa: E402

STAGES = ("skeleton", "distance", "graph", "topology", "measure")


def make_mask(width: int, height: int, strokes: int, seed: int = 0) -> np.ndarray:
    """Random quadratic-Bezier strokes, 150-700 px long and 3-12 px wide (bool mask)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((height, width), np.uint8)
    t = np.linspace(0.0, 1.0, 50)[:, None]
    for _ in range(strokes):
        length = rng.uniform(150, 700)
        p0 = rng.uniform((0, 0), (width, height))
        ang = rng.uniform(0, 2 * np.pi)
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, length / 4, 2)
        pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(3, 13)))
    return m.astype(bool)


def time_core(mask: np.ndarray, repeat: int) -> tuple[dict[str, float], int]:
    """Median total and per-stage times (s) of the counting core, and the hair count."""
    runs = []
    n = 0
    for _ in range(repeat):
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        table = _count_hairs_staged(mask, None, stages)
        stages["total"] = time.perf_counter() - t0
        runs.append(stages)
        n = len(table)
    return {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "total")}, n


def peak_bytes(fn) -> int:
    """Peak memory traced by tracemalloc (NumPy and OpenCV outputs) while ``fn`` runs."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def peer_chain(mask: np.ndarray):
    """skimage skeleton + scipy EDT + skan graph and branch summary."""
    from scipy.ndimage import distance_transform_edt
    from skan import Skeleton, summarize
    from skimage.morphology import skeletonize

    skel = skeletonize(mask)
    edt = distance_transform_edt(mask)
    return summarize(Skeleton(skel * edt), separator="_")


def median_time(run, repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``run()``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_peer(mask: np.ndarray, repeat: int) -> float | None:
    try:
        import skan  # noqa: F401
    except ImportError:
        return None
    return median_time(lambda: peer_chain(mask), repeat)


def time_skimage_skeleton(mask: np.ndarray, repeat: int) -> float:
    from skimage.morphology import skeletonize

    return median_time(lambda: skeletonize(mask), repeat)


def time_reference(mask: np.ndarray) -> float:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from reference_count import reference_count

    t0 = time.perf_counter()
    reference_count(mask)
    return time.perf_counter() - t0


def import_time(repeat: int = 5) -> float:
    """Median wall time of a fresh ``python -c 'import trichoscan'``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import trichoscan"], check=True, cwd=ROOT, capture_output=True
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def analyze_process_time(repeat: int = 3) -> float:
    """Median wall time of a fresh ``trichoscan analyze`` process on one 1280x1024 render."""
    import tempfile

    from trichoscan import synth

    with tempfile.TemporaryDirectory() as tmp:
        render = synth.render(7, synth.SynthConfig(height=1024, width=1280, um_per_px=(3.0, 3.0)))
        photo = Path(tmp) / "photo.png"
        cv2.imwrite(str(photo), cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
        command = [sys.executable, "-m", "trichoscan", "analyze", str(photo), "--um-per-px", "3"]
        times = []
        for i in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(
                [*command, "--out", str(Path(tmp) / f"out{i}")], check=True, capture_output=True
            )
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-peer", action="store_true", help="skip the skan peer chain")
    ap.add_argument("--no-12mp", action="store_true", help="skip the 12-megapixel masks")
    args = ap.parse_args()

    import platform

    import scipy
    import skimage

    print(
        f"# counting-core benchmark | {platform.machine()}, {__import__('os').cpu_count()} cores,"
        f" Python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__},"
        f" scikit-image {skimage.__version__}, scipy {scipy.__version__}"
    )
    cases = [
        ("dense 3MP", 2000, 1500, 300),
        ("sparse 3MP", 2000, 1500, 60),
        ("dense 1MP", 1155, 866, 100),
        ("sparse 1MP", 1155, 866, 20),
    ]
    if not args.no_12mp:
        cases += [("dense 12MP", 4000, 3000, 1200), ("sparse 12MP", 4000, 3000, 240)]
    peer_ok = not args.no_peer
    if peer_ok:
        try:
            peer_chain(make_mask(300, 200, 5))  # numba JIT warm-up, not timed
        except ImportError:
            peer_ok = False
    head = (
        f"{'mask':12s} {'fg%':>5s} {'hairs':>5s} "
        + " ".join(f"{s:>8s}" for s in STAGES)
        + f" {'core':>8s} {'ms/MP':>6s} {'B/px':>5s} {'skimage':>8s} {'peer':>8s} {'speedup':>7s}"
    )
    print("\n" + head)
    print("-" * len(head))
    per_mp = {}
    for name, w, h, strokes in cases:
        mask = make_mask(w, h, strokes)
        _count_hairs_staged(mask, None, None)  # warm caches and imports
        rep = args.repeat if w * h <= 4e6 else max(1, args.repeat // 2)
        t, n = time_core(mask, rep)
        peak = peak_bytes(lambda mask=mask: _count_hairs_staged(mask, None, None))
        sk = time_skimage_skeleton(mask, rep)
        peer = time_peer(mask, max(1, rep // 2)) if peer_ok else None
        mp = w * h / 1e6
        per_mp[name] = t["total"] * 1e3 / mp
        row = (
            f"{name:12s} {100 * mask.mean():5.1f} {n:5d} "
            + " ".join(f"{1e3 * t[s]:8.1f}" for s in STAGES)
            + f" {1e3 * t['total']:8.1f} {per_mp[name]:6.1f} {peak / (w * h):5.1f}"
            + f" {1e3 * sk:8.1f}"
            + (f" {1e3 * peer:8.1f} {peer / t['total']:6.2f}x" if peer else f" {'–':>8s} {'–':>7s}")
        )
        print(row, flush=True)
    print("\n(times in ms, medians; 'skimage' = skimage.morphology.skeletonize alone;")
    print(" 'after skeleton' = graph + topology + measure; B/px = tracemalloc peak / pixels)")

    crop = make_mask(2000, 1500, 300)[:120, :160]
    t_ref = time_reference(crop)
    t_core, _ = time_core(crop, 5)
    print(
        f"\nplain-Python reference on a 160x120 crop of the dense mask: {1e3 * t_ref:.0f} ms"
        f" (core {1e3 * t_core['total']:.1f} ms, {t_ref / t_core['total']:.0f}x);"
        " too slow for the full masks (brute-force nearest-pixel search)"
    )
    print(f"cold `python -c 'import trichoscan'`: {1e3 * import_time():.0f} ms")
    print(
        "cold `trichoscan analyze` process, one 1280x1024 photo (all stages, JSON, overlay, "
        f"report): {analyze_process_time():.2f} s"
    )
    for kind in ("dense", "sparse"):
        vals = [v for k, v in per_mp.items() if k.startswith(kind)]
        if len(vals) > 1:
            spread = max(vals) / min(vals) - 1
            print(f"time per MP spread ({kind}, 1-12 MP): {100 * spread:.0f} %")


if __name__ == "__main__":
    main()
