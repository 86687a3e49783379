"""Change benchmark: rendered same-site pairs with known change, through ``compare``.

Renders pairs of photos of one scalp site (``trichoscan.synth.render_pair``) from the
reserved ``change`` seed range of ``benchmarks/seeds.toml`` (no test, tuning or training
run renders them) and measures:

* density-change pairs (known change from -15 % to +35 %, spread evenly): the error of
  the measured % change in percentage points, beside the counting-noise floor (the
  Poisson SE of the % change given the true counts);
* zero-change pairs (the same hairs re-photographed: moved, rotated, re-lit, re-focused):
  each measured change (target: within ±2 %), and their MDC95;
* registration: success and the largest error (px) of the found transform at the photo's
  corners against the true camera transform;
* phototrichogram pairs (a clipped site 2-3 days apart): growth-rate error (target
  within 10 %) and anagen-fraction error.

Only pairs whose overlap holds >= 150 counted hairs on both photos enter the density and
zero-change tables (others are skipped and counted). ``--segmenter truth`` runs the same
chain on the renderer's true hair masks (registration, counting, exit ends, overlap,
statistics): what the rest of the chain gives with a perfect segmenter.

Usage::

    python benchmarks/accuracy_change.py --pairs 30 --zero 10 --trichogram 10
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, seed_range  # noqa: E402

from trichoscan import __version__  # noqa: E402
from trichoscan.comparison import (  # noqa: E402
    MeasuredPhoto,
    compare_measured,
    mdc95,
    phototrichogram_measured,
)
from trichoscan.pipeline import Pipeline, PipelineConfig  # noqa: E402
from trichoscan.synth import RENDERER_VERSION, PairConfig, RenderPair, SynthConfig, render_pair  # noqa: E402

logger = logging.getLogger("accuracy_change")

#: Photos of a whole clinic field: 1280x1024 at 7-9 µm/px (about 1 cm²), clipped scalp.
SCENE = SynthConfig(
    height=1024,
    width=1280,
    um_per_px=(7.0, 9.0),
    density_per_cm2=(230.0, 320.0),
    p_unshaved=0.0,
)
#: Trichogram sites: fewer hairs (they grow long and cross), same field.
TRICHOGRAM_SCENE = replace(SCENE, density_per_cm2=(150.0, 250.0))
MIN_COUNTED = 150
CHANGE_RANGE = (-15.0, 35.0)
# Sub-ranges of the reserved ``change`` seeds, one per pair kind.
OFFSETS = {"density": 0, "zero": 30_000, "trichogram": 60_000}
MAX_TRIES = 4  # renders per wanted pair before giving up on the >= 150 hairs condition
#: ``--dev`` smoke runs render development seeds instead (never the reserved ones).
DEV_SEEDS = 0


_PIPELINES: dict[str, Pipeline] = {}


def _pipeline(segmenter: str) -> Pipeline:
    if segmenter not in _PIPELINES:
        # 'truth': the renderer's true masks are passed to analyze(mask=...).
        name = "classical" if segmenter == "truth" else segmenter
        _PIPELINES[segmenter] = Pipeline(PipelineConfig(segmenter=name))
    return _PIPELINES[segmenter]


def _measure(pair: RenderPair, segmenter: str) -> tuple[MeasuredPhoto, MeasuredPhoto]:
    pipe = _pipeline(segmenter)
    out = []
    for side, r in (("before", pair.before), ("after", pair.after)):
        # The device's nominal scale for both photos, as a clinic would give it.
        analysis = pipe.analyze(
            r.image,
            calibration=pair.nominal_um_per_px,
            mask=r.mask if segmenter == "truth" else None,
        )
        out.append(MeasuredPhoto(analysis, r.image, f"{pair.seed}-{side}"))
    return out[0], out[1]


def _corner_error(found: np.ndarray | None, true: np.ndarray, h: int, w: int) -> float | None:
    """Largest distance (px) between the found and true transforms at the photo corners."""
    if found is None:
        return None
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    a = corners @ found[:, :2].T + found[:, 2]
    b = corners @ true[:, :2].T + true[:, 2]
    return float(np.hypot(*(a - b).T).max())


@dataclass
class _Job:
    kind: str
    index: int
    change_pct: float | None
    segmenter: str
    dev: bool = False


def _run_job(job: _Job) -> dict[str, Any]:
    """Render (retrying seeds until the overlap holds enough hairs) and measure one pair."""
    base = DEV_SEEDS if job.dev else seed_range("change").start
    first = base + OFFSETS[job.kind] + job.index * MAX_TRIES
    scene = TRICHOGRAM_SCENE if job.kind == "trichogram" else SCENE
    config = PairConfig(scene=scene, kind=job.kind)
    pair = None
    skipped = 0
    for seed in range(first, first + MAX_TRIES):
        pair = render_pair(seed, config, change_pct=job.change_pct)
        truth = pair.overlap_truth()
        if job.kind == "trichogram" or min(truth["before_count"], truth["after_count"]) >= (
            MIN_COUNTED
        ):
            break
        skipped += 1
    assert pair is not None
    t0 = time.perf_counter()
    before, after = _measure(pair, job.segmenter)
    h, w = pair.before.image.shape[:2]
    row: dict[str, Any] = {
        "kind": job.kind,
        "seed": pair.seed,
        "skipped": skipped,
        "truth": pair.overlap_truth(),
        "asked": pair.asked_change_pct,
        "days": pair.days,
        "scale_ratio": pair.after.um_per_px / pair.before.um_per_px,
    }
    if job.kind == "trichogram":
        tg = phototrichogram_measured(before, after, days=float(pair.days))
        reg = tg.registration
        row["tri_truth"] = pair.trichogram_truth()
        row["tri"] = tg
        row["per_hair"] = _per_hair_growth(pair, tg, before)
    else:
        cmp = compare_measured([before], [after])
        reg = cmp.registrations[0][2]
        d = cmp.changes["density_per_cm2"]
        row.update(
            registered=cmp.registered,
            count_before=cmp.before.hair_count,
            count_after=cmp.after.hair_count,
            pct=d.pct,
            pct_low=d.pct_low,
            pct_high=d.pct_high,
        )
    row["reg_ok"] = reg.ok
    row["reg_err_px"] = _corner_error(reg.matrix, pair.matrix, h, w) if reg.ok else None
    row["seconds"] = time.perf_counter() - t0
    return row


def _per_hair_growth(pair: RenderPair, tg: Any, before: Any) -> list[tuple[float, float, bool]]:
    """(measured growth, true growth, truly anagen) of each measured hair.

    A measured hair is the true hair whose exit lies near its root and whose tip lies
    near its other end on the before photo (hairs of one unit share an opening): the
    smallest sum of the two distances, the exit within 80 µm.
    """
    hairs = pair.before.hairs
    exits = np.array([h.exit_xy for h in hairs], float).reshape(-1, 2)
    tips = np.array([h.polyline_xy[-1] for h in hairs], float).reshape(-1, 2)
    where = {i: j for i, j in pair.matches()}
    tol = 80.0 / pair.before.um_per_px
    table = before.analysis.hairs
    out = []
    for r in tg.hairs:
        if not r.measured or r.growth_um is None or not len(exits):
            continue
        root = np.asarray(r.root_xy)
        ends = (table.end_a_xy[r.before_index], table.end_b_xy[r.before_index])
        tip = ends[1] if np.allclose(ends[0], root) else ends[0]
        d_exit = np.hypot(*(exits - root).T)
        d = d_exit + np.hypot(*(tips - tip).T)
        k = int(np.argmin(d))
        if d_exit[k] > tol or k not in where:
            continue
        j = where[k]
        out.append((float(r.growth_um), float(pair.growth_um[j]), bool(pair.anagen[j])))
    return out


# --------------------------------------------------------------------------- tables


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _f(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _poisson_se_pct(n_b: int, n_a: int) -> float:
    """Poisson SE (pp) of the % change from ``n_b`` to ``n_a`` counted hairs."""
    if n_b <= 0 or n_a <= 0:
        return math.nan
    return 100.0 * (n_a / n_b) * math.sqrt(1.0 / n_a + 1.0 / n_b)


def _density_section(rows: list[dict[str, Any]]) -> str:
    out = []
    err = np.array([r["pct"] - r["truth"]["change_pct"] for r in rows if r["pct"] is not None])
    floor = np.array(
        [_poisson_se_pct(r["truth"]["before_count"], r["truth"]["after_count"]) for r in rows]
    )
    mae = float(np.mean(np.abs(err))) if err.size else math.nan
    bias = float(np.mean(err)) if err.size else math.nan
    sd = float(np.std(err, ddof=1)) if err.size > 1 else math.nan
    loa = (bias - 1.96 * sd, bias + 1.96 * sd)
    n_reg = sum(bool(r["registered"]) for r in rows)
    out.append(
        _table(
            [
                "pairs",
                "registered",
                "true change range %",
                "density-change error pp: mean abs",
                "bias",
                "95 % limits of agreement",
                "counting-noise floor: Poisson SE pp (mean)",
                "floor as mean abs pp",
                "target",
            ],
            [
                [
                    str(len(rows)),
                    f"{n_reg}/{len(rows)}",
                    f"{min(r['truth']['change_pct'] for r in rows):+.1f} to "
                    f"{max(r['truth']['change_pct'] for r in rows):+.1f}",
                    _f(mae, ".2f"),
                    _f(bias, "+.2f"),
                    f"{_f(loa[0], '+.1f')} to {_f(loa[1], '+.1f')}",
                    _f(float(np.nanmean(floor)), ".2f"),
                    _f(float(np.nanmean(floor)) * math.sqrt(2 / math.pi), ".2f"),
                    "mean abs ≤ 2 pp " + ("**met**" if mae <= 2 else "**missed**"),
                ]
            ],
        )
    )
    out.append("")
    detail = []
    for r in rows:
        t = r["truth"]
        detail.append(
            [
                str(r["seed"]),
                _f(r["asked"], "+.1f"),
                _f(t["change_pct"], "+.1f"),
                f"{t['before_count']} → {t['after_count']}",
                f"{r['count_before']} → {r['count_after']}",
                _f(r["pct"], "+.1f"),
                f"[{_f(r['pct_low'], '+.1f')}, {_f(r['pct_high'], '+.1f')}]",
                _f(None if r["pct"] is None else r["pct"] - t["change_pct"], "+.1f"),
                "yes" if r["registered"] else "**no**",
                _f(r["reg_err_px"], ".2f"),
            ]
        )
    out.append(
        _table(
            [
                "seed",
                "asked %",
                "true %",
                "true count b → a",
                "measured count b → a",
                "measured %",
                "95 % CI",
                "error pp",
                "registered",
                "reg. error px",
            ],
            detail,
        )
    )
    return "\n".join(out)


def _zero_section(rows: list[dict[str, Any]]) -> str:
    detail = []
    pcts = []
    for r in rows:
        t = r["truth"]
        pct = r["pct"]
        if pct is not None:
            pcts.append(pct)
        ok = pct is not None and abs(pct) <= 2.0
        detail.append(
            [
                str(r["seed"]),
                str(t["before_count"]),
                f"{r['count_before']} → {r['count_after']}",
                _f(pct, "+.2f"),
                f"[{_f(r['pct_low'], '+.1f')}, {_f(r['pct_high'], '+.1f')}]",
                "yes" if ok else "**no**",
                _f(100 * (r["scale_ratio"] - 1), "+.1f"),
                "yes" if r["registered"] else "**no**",
                _f(r["reg_err_px"], ".2f"),
            ]
        )
    within = sum(1 for p in pcts if abs(p) <= 2.0)
    mdc = mdc95(pcts) if len(pcts) >= 2 else math.nan
    table = _table(
        [
            "seed",
            "true count",
            "measured count b → a",
            "measured change %",
            "95 % CI",
            "within ±2 %",
            "magnification change %",
            "registered",
            "reg. error px",
        ],
        detail,
    )
    summary = (
        f"\nZero-change pairs within ±2 %: {within}/{len(rows)} "
        f"(target: all, {'**met**' if within == len(rows) else '**missed**'}); "
        f"measured MDC95 of density: {_f(mdc, '.1f')} %."
    )
    return table + "\n" + summary


def _registration_section(rows: list[dict[str, Any]]) -> str:
    out = []
    for kind in ("density", "zero", "trichogram"):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        errs = np.array([r["reg_err_px"] for r in sel if r["reg_err_px"] is not None])
        out.append(
            [
                kind,
                f"{sum(bool(r['reg_ok']) for r in sel)}/{len(sel)}",
                _f(float(np.median(errs)) if errs.size else None, ".2f"),
                _f(float(errs.max()) if errs.size else None, ".2f"),
            ]
        )
    return _table(["pairs", "registered", "corner error px (median)", "corner error px (max)"], out)


def _trichogram_section(rows: list[dict[str, Any]]) -> str:
    detail = []
    rate_err, frac_err, telogen = [], [], []
    for r in rows:
        t, tg = r["tri_truth"], r["tri"]
        rate = tg.growth_rate_mm_per_day
        frac = tg.anagen_fraction
        e_rate = None
        if rate.value is not None and t["growth_rate_mm_per_day"]:
            e_rate = 100.0 * (rate.value / t["growth_rate_mm_per_day"] - 1.0)
            rate_err.append(e_rate)
        e_frac = None
        if frac.value is not None and t["anagen_fraction"] is not None:
            e_frac = 100.0 * (frac.value - t["anagen_fraction"])
            frac_err.append(e_frac)
        telogen += [m - g for m, g, ana in r["per_hair"] if not ana]
        detail.append(
            [
                str(r["seed"]),
                _f(r["days"], ".2f"),
                f"{t['n_hairs']} / {tg.n_measured}",
                _f(t["growth_rate_mm_per_day"], ".3f"),
                f"{_f(rate.value, '.3f')} [{_f(rate.low, '.3f')}, {_f(rate.high, '.3f')}]",
                _f(e_rate, "+.1f"),
                _f(100 * t["anagen_fraction"], ".1f"),
                f"{_f(None if frac.value is None else 100 * frac.value, '.1f')} "
                f"[{_f(None if frac.low is None else 100 * frac.low, '.0f')}, "
                f"{_f(None if frac.high is None else 100 * frac.high, '.0f')}]",
                _f(e_frac, "+.1f"),
                "yes" if r["reg_ok"] else "**no**",
            ]
        )
    table = _table(
        [
            "seed",
            "days",
            "hairs: true / measured",
            "true rate mm/day",
            "measured rate [95 % CI]",
            "rate error %",
            "true anagen %",
            "measured anagen % [95 % CI]",
            "anagen error pp",
            "registered",
        ],
        detail,
    )
    re = np.abs(np.array(rate_err)) if rate_err else np.array([np.nan])
    fe = np.abs(np.array(frac_err)) if frac_err else np.array([np.nan])
    within = int(np.sum(re <= 10.0))
    noise = float(np.std(telogen, ddof=1)) if len(telogen) > 1 else math.nan
    summary = (
        f"\nGrowth rate within 10 %: {within}/{len(rows)} pairs "
        f"({'**met**' if within == len(rows) else '**missed**'}); mean abs rate error "
        f"{_f(float(np.nanmean(re)), '.1f')} %, max {_f(float(np.nanmax(re)), '.1f')} %. "
        f"Anagen fraction: mean abs error {_f(float(np.nanmean(fe)), '.1f')} pp. "
        f"Measured length change of truly telogen hairs (the length noise): SD "
        f"{_f(noise, '.0f')} µm over {len(telogen)} hairs (anagen threshold 200 µm)."
    )
    return table + "\n" + summary


def run(
    n_pairs: int,
    n_zero: int,
    n_trichogram: int,
    segmenter: str,
    workers: int,
    *,
    dev: bool = False,
) -> str:
    """Render and measure the change benchmark; return its Markdown report.

    Parameters
    ----------
    n_pairs : int
        Density-change pairs (known change spread evenly over -15 % .. +35 %).
    n_zero : int
        Zero-change pairs.
    n_trichogram : int
        Phototrichogram pairs.
    segmenter : {'classical', 'unet', 'auto', 'truth'}
        ``'truth'``: the renderer's true hair masks.
    workers : int
        Processes (1: in this process).
    dev : bool
        Render development seeds (0-99999) instead of the reserved ``change`` range: for
        smoke runs while developing, never for reported numbers.
    """
    changes = np.linspace(*CHANGE_RANGE, n_pairs) if n_pairs > 1 else np.array([10.0])
    jobs = [_Job("density", k, float(changes[k]), segmenter, dev) for k in range(n_pairs)]
    jobs += [_Job("zero", k, None, segmenter, dev) for k in range(n_zero)]
    jobs += [_Job("trichogram", k, None, segmenter, dev) for k in range(n_trichogram)]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_run_job, jobs))
    else:
        rows = []
        for job in jobs:
            rows.append(_run_job(job))
            logger.info("%s %d done (%.0f s)", job.kind, job.index, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    dens = [r for r in rows if r["kind"] == "density"]
    zero = [r for r in rows if r["kind"] == "zero"]
    tri = [r for r in rows if r["kind"] == "trichogram"]
    skipped = sum(r["skipped"] for r in dens + zero)
    parts = [
        ("DEVELOPMENT SEEDS (smoke run, not a result)\n\n" if dev else "")
        + f"# change benchmark | renderer {RENDERER_VERSION}, trichoscan {__version__}, "
        f"segmenter {segmenter} | {machine()}",
        "",
        f"Same-site pairs from the reserved `change` seeds, {SCENE.width}x{SCENE.height} px at "
        f"{SCENE.um_per_px[0]:g}-{SCENE.um_per_px[1]:g} µm/px, the after photo shifted up to "
        f"20 % per axis, rotated up to 10°, magnification ±2 % per photo, re-lit and re-focused; "
        f"both photos analysed with the nominal scale. {skipped} rendered site(s) with fewer "
        f"than {MIN_COUNTED} counted hairs in the overlap were skipped. {wall:.0f} s in all.",
        "",
    ]
    if dens:
        parts += ["## Density change", "", _density_section(dens), ""]
    if zero:
        parts += ["## Zero-change pairs", "", _zero_section(zero), ""]
    if tri:
        parts += ["## Phototrichogram", "", _trichogram_section(tri), ""]
    parts += ["## Registration", "", _registration_section(rows), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=30, help="density-change pairs")
    ap.add_argument("--zero", type=int, default=10, help="zero-change pairs")
    ap.add_argument("--trichogram", type=int, default=10, help="phototrichogram pairs")
    ap.add_argument(
        "--segmenter", default="classical", choices=["classical", "unet", "auto", "truth"]
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dev", action="store_true", help="development seeds (smoke runs)")
    ap.add_argument("--out", type=Path, help="also write the Markdown here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    text = run(args.pairs, args.zero, args.trichogram, args.segmenter, args.workers, dev=args.dev)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
