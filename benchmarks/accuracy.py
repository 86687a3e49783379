"""Accuracy benchmark: the pipeline against exact ground truth and against real FDU labels.

Renders a fresh test set from the reserved ``accuracy`` seed range (benchmarks/seeds.toml;
no test, tuning or training run uses it) and prints Markdown tables: overall and per stratum
(hair colour, skin tone, scale, density band) count error per counting rule, density error,
mean-width bias, class-count errors and exit-end accuracy. When ../shared/data/fdu is
present it scores the FDU val split with ``count_rule="inside"``, and prints realism
statistics of renders at 2.78 µm/px beside FDU val photos.

Several segmenters are scored side by side (``--segmenter classical,unet``); the renders
also give each segmenter's Dice and clDice against the true masks. ``--change`` adds the
before/after section (``accuracy_change.py``: same-site pairs from the reserved change range).

Run by hand:  python benchmarks/accuracy.py [--n 200] [--segmenter classical,unet] [--change]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, fmt, machine, print_table, seed_range  # noqa: E402

import trichoscan  # noqa: E402
from trichoscan import synth  # noqa: E402

FDU_UM_PER_PX = "fdu-70x-quadrant"
#: Workers are spawned, not forked: a fork after torch has started its threads can hang.
SPAWN = multiprocessing.get_context("spawn")
HAIR_CLASSES = ("vellus", "intermediate", "terminal")


# --------------------------------------------------------------------------- renders
def rasterise_truth(render: synth.Render) -> np.ndarray:
    """Label image of the truth hairs' visible shafts (hair index + 1), for matching."""
    labels = np.zeros(render.mask.shape, dtype=np.int32)
    for i, hair in enumerate(render.hairs):
        pts = np.rint(hair.polyline_xy * 4).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(1, int(round(hair.width_px)))
        cv2.polylines(labels, [pts], False, i + 1, thickness, cv2.LINE_8, shift=2)
    labels[~render.mask] = 0
    return labels


def exit_end_scores(result: trichoscan.Analysis, render: synth.Render) -> dict[str, int]:
    """Match detected hairs to truth hairs by overlap and score their exit-end decision."""
    hairs = result.hairs
    truth_labels = rasterise_truth(render)
    both = (hairs.labels > 0) & (truth_labels > 0)
    n_det, n_true = len(hairs) + 1, len(render.hairs) + 1
    pairs = np.bincount(
        hairs.labels[both].astype(np.int64) * n_true + truth_labels[both], minlength=n_det * n_true
    ).reshape(n_det, n_true)
    scores = {"matched": 0, "exit_right": 0, "one_cut": 0, "one_cut_right": 0}
    for i in range(len(hairs)):
        row = pairs[hairs.hair_id[i]]
        j = int(np.argmax(row))
        if j == 0 or row[j] < 3 or hairs.exit_end[i] not in ("a", "b"):
            continue
        truth = render.hairs[j - 1]
        exit_xy = np.asarray(truth.exit_xy, dtype=float)
        tip_xy = truth.polyline_xy[-1]
        ends = (hairs.end_a_xy[i], hairs.end_b_xy[i])
        # The end nearer the true exit (relative to the tip) is the true exit end.
        d_a = np.hypot(*(ends[0] - exit_xy)) - np.hypot(*(ends[0] - tip_xy))
        d_b = np.hypot(*(ends[1] - exit_xy)) - np.hypot(*(ends[1] - tip_xy))
        true_end = "a" if d_a < d_b else "b"
        right = hairs.exit_end[i] == true_end
        scores["matched"] += 1
        scores["exit_right"] += int(right)
        if result.end_cut[i].sum() == 1:
            scores["one_cut"] += 1
            scores["one_cut_right"] += int(right)
    return scores


def pct_error(found: float, true: float) -> float:
    return 100.0 * (found - true) / true if true > 0 else (0.0 if found == 0 else np.nan)


def evaluate_seed(args: tuple[int, str, dict]) -> dict:
    seed, segmenter, config_kwargs = args
    render = synth.render(seed, synth.SynthConfig(**config_kwargs))
    t0 = time.perf_counter()
    result = trichoscan.analyze(
        render.image, calibration=render.um_per_px, segmenter=segmenter, count_rule="exit"
    )
    seconds = time.perf_counter() - t0
    from trichoscan.segmentation.scoring import cldice, dice

    # Mask scores inside the true field, on the mask the counting used.
    pred, true_mask = result.mask & render.field_mask, render.mask & render.field_mask
    truth = render.truth_dict()
    hairs = render.hairs
    true_counts = {
        "exit": sum(h.counted_exit for h in hairs),
        "inside": sum(h.counted_inside for h in hairs),
        "visible": sum(h.counted_visible for h in hairs),
    }
    found_counts = {
        "exit": result.exit_hair_count,
        "inside": result.inside_hair_count,
        "visible": result.visible_hair_count,
    }
    counted = [h for h in hairs if h.counted_exit]
    true_width = float(np.mean([h.width_um for h in counted])) if counted else None
    true_classes = {c: sum(h.hair_class == c for h in counted) for c in HAIR_CLASSES}
    found_classes = {
        "vellus": result.vellus_count,
        "intermediate": result.intermediate_count,
        "terminal": result.terminal_count,
    }
    true_density = true_counts["exit"] / truth["field_area_cm2"]
    params = render.params
    return {
        "seed": seed,
        "seconds": seconds,
        "stratum": {
            "hair colour": params["hair_colour"],
            "skin tone": params["skin_tone"],
            "scale": scale_band(render.um_per_px),
            "density": density_band(params["density_per_cm2"]),
        },
        "count_err_pct": {r: pct_error(found_counts[r], true_counts[r]) for r in true_counts},
        "density_err_pct": pct_error(result.density_per_cm2 or 0.0, true_density),
        "width_bias_um": (
            None
            if true_width is None or result.mean_width_um is None
            else result.mean_width_um - true_width
        ),
        "class_abs_err": {c: abs(found_classes[c] - true_classes[c]) for c in true_classes},
        "true_exit_count": true_counts["exit"],
        "dice": float(dice(pred, true_mask)),
        "cldice": float(cldice(pred, true_mask)),
        **exit_end_scores(result, render),
    }


def scale_band(um_per_px: float) -> str:
    return "2.5–4 µm/px" if um_per_px < 4 else ("4–6 µm/px" if um_per_px < 6 else "6–9 µm/px")


def density_band(density: float) -> str:
    if density < 140:
        return "60–140 /cm²"
    return "140–220 /cm²" if density < 220 else "220–320 /cm²"


def summarise_rows(records: list[dict]) -> list[str]:
    med = {
        r: float(np.nanmedian([abs(x["count_err_pct"][r]) for x in records]))
        for r in ("exit", "inside", "visible")
    }
    bias = float(np.nanmean([x["count_err_pct"]["exit"] for x in records]))
    dens = float(np.nanmedian([abs(x["density_err_pct"]) for x in records]))
    widths = [x["width_bias_um"] for x in records if x["width_bias_um"] is not None]
    cls = {
        c: float(np.mean([x["class_abs_err"][c] for x in records]))
        for c in ("vellus", "intermediate", "terminal")
    }
    matched = sum(x["matched"] for x in records)
    right = sum(x["exit_right"] for x in records)
    one_cut = sum(x["one_cut"] for x in records)
    one_cut_right = sum(x["one_cut_right"] for x in records)
    return [
        str(len(records)),
        f"{np.mean([x['dice'] for x in records]):.3f} / "
        f"{np.mean([x['cldice'] for x in records]):.3f}",
        fmt(med["exit"]),
        fmt(bias, "+.1f"),
        fmt(med["inside"]),
        fmt(med["visible"]),
        fmt(dens),
        fmt(float(np.mean(widths)) if widths else None, "+.1f"),
        f"{fmt(cls['vellus'])} / {fmt(cls['intermediate'])} / {fmt(cls['terminal'])}",
        fmt(100.0 * right / matched if matched else None),
        fmt(100.0 * one_cut_right / one_cut if one_cut else None),
    ]


RENDER_HEADERS = [
    "stratum",
    "photos",
    "Dice / clDice",
    "count err % (exit, median abs)",
    "count bias % (exit)",
    "count err % (inside)",
    "count err % (visible)",
    "density err % (median abs)",
    "mean-width bias µm",
    "class abs err V / I / T",
    "exit end right %",
    "exit right %, one end cut",
]


def run_renders(n: int, segmenter: str, workers: int) -> list[dict]:
    seeds = list(seed_range("accuracy"))[:n]
    config = {"height": 512, "width": 640}
    with ProcessPoolExecutor(workers, mp_context=SPAWN) as pool:
        return list(pool.map(evaluate_seed, [(s, segmenter, config) for s in seeds]))


def print_render_tables(by_segmenter: dict[str, list[dict]]) -> None:
    """One row per segmenter overall, then per stratum (segmenters side by side)."""
    headers = ["segmenter", *RENDER_HEADERS]
    rows = [[name, "all", *summarise_rows(recs)] for name, recs in by_segmenter.items()]
    for key in ("hair colour", "skin tone", "scale", "density"):
        values = sorted({rec["stratum"][key] for recs in by_segmenter.values() for rec in recs})
        for value in values:
            for name, recs in by_segmenter.items():
                group = [rec for rec in recs if rec["stratum"][key] == value]
                rows.append([name, f"{key}: {value}", *summarise_rows(group)])
    print_table(headers, rows)


# --------------------------------------------------------------------------- FDU val
def fdu_count(xml_path: Path) -> int:
    return len(ET.parse(xml_path).getroot().findall("object"))


def evaluate_fdu_image(args: tuple[Path, str]) -> dict:
    image_path, segmenter = args
    xml_path = image_path.parents[1] / "annotations" / f"{image_path.stem}.xml"
    true = fdu_count(xml_path)
    try:
        result = trichoscan.analyze(
            str(image_path), calibration=FDU_UM_PER_PX, segmenter=segmenter, count_rule="inside"
        )
        found, error = result.hair_count, None
    except trichoscan.TrichoscanError as exc:
        found, error = None, str(exc)
    return {"name": image_path.stem, "true": true, "found": found, "error": error}


def run_fdu(segmenter: str, workers: int) -> list[dict] | None:
    val = SHARED_DATA / "fdu" / "val"
    if not val.is_dir():
        return None
    images = [val / "images" / f"{name}.jpg" for name in (val / "list.txt").read_text().split()]
    with ProcessPoolExecutor(workers, mp_context=SPAWN) as pool:
        return list(pool.map(evaluate_fdu_image, [(p, segmenter) for p in images]))


def fdu_row(records: list[dict], segmenter: str) -> list[str]:
    ok = [r for r in records if r["found"] is not None]
    err = np.array([r["found"] - r["true"] for r in ok], dtype=float)
    true = np.array([r["true"] for r in ok], dtype=float)
    pct = 100.0 * err[true > 0] / true[true > 0]
    return [
        segmenter,
        str(len(ok)),
        str(len(records) - len(ok)),
        fmt(float(np.mean(np.abs(err))), ".2f"),
        fmt(float(np.mean(np.abs(pct))), ".1f"),
        fmt(float(np.mean(err)), "+.2f"),
        fmt(float(np.mean(true)), ".1f"),
    ]


def print_fdu_table(by_segmenter: dict[str, list[dict]]) -> None:
    print_table(
        [
            "segmenter",
            "photos",
            "failed",
            "MAE / photo",
            "mean abs err %",
            "bias / photo",
            "mean true count",
        ],
        [fdu_row(recs, name) for name, recs in by_segmenter.items()],
    )


# --------------------------------------------------------------------------- real patches
def run_patches(segmenter: str) -> list[tuple[float, float]] | None:
    """Dice and clDice of ``trichoscan.segment`` on the 80 hand-traced real scalp patches."""
    from trichoscan.segmentation.scoring import cldice, dice

    root = SHARED_DATA / "scalp_patches"
    if not root.is_dir():
        return None
    scores = []
    for image_path in sorted((root / "images").glob("*.jpg")):
        truth = cv2.imread(str(root / "masks" / image_path.name), cv2.IMREAD_GRAYSCALE) < 128
        pred = trichoscan.segment(str(image_path), segmenter=segmenter)
        scores.append((dice(pred, truth), cldice(pred, truth)))
    return scores


def print_patch_table(by_segmenter: dict[str, list[tuple[float, float]]]) -> None:
    rows = []
    for name, scores in by_segmenter.items():
        d, c = np.array(scores).T
        dice_mean, cldice_mean = fmt(float(d.mean()), ".3f"), fmt(float(c.mean()), ".3f")
        rows.append([name, str(len(scores)), dice_mean, cldice_mean])
    print_table(["segmenter", "patches", "Dice (mean)", "clDice (mean)"], rows)


# --------------------------------------------------------------------------- realism
#: Renders restricted to what the FDU photos show: shaved scalp, light skin, dark hair, a
#: 2x-upsampled capture, no vignette.
FDU_LIKE = {
    "hair_colours": ("black", "dark_brown"),
    "hair_colour_weights": (0.7, 0.3),
    "skin_tones": ("very_light", "light"),
    "skin_tone_weights": (0.5, 0.5),
    "p_unshaved": 0.0,
    "p_vignette": 0.0,
    "p_half_resolution": 1.0,
}


def _quantiles(values: list[float]) -> str:
    if not values:
        return "–"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{fmt(p50, '.3g')} [{fmt(p10, '.3g')}, {fmt(p90, '.3g')}]"


def print_realism(n: int) -> None:
    val = SHARED_DATA / "fdu" / "val" / "images"
    if not val.is_dir():
        return
    seeds = list(seed_range("accuracy"))[-n:]
    columns = {}
    for label, extra in (("all renders", {}), ("FDU-like renders", FDU_LIKE)):
        config = synth.SynthConfig(height=1024, width=1280, um_per_px=(2.78, 2.78), **extra)
        renders = (synth.render(s, config) for s in seeds)
        columns[f"{label} 2.78 µm/px (n={n})"] = [
            synth.realism_stats(r.image, r.mask) for r in renders
        ]
    all_photos = sorted(val.glob("*.jpg"))
    photos = all_photos[:: max(1, len(all_photos) // n)][:n]
    columns[f"FDU val (n={len(photos)})"] = [
        synth.realism_stats(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), None)
        for p in photos
    ]
    first = next(iter(columns.values()))[0]
    keys = [k for k in first if isinstance(first[k], int | float)]
    rows = [
        [
            key,
            *(
                _quantiles([s[key] for s in stats if s.get(key) is not None])
                for stats in columns.values()
            ),
        ]
        for key in keys
    ]
    print_table(["statistic (median [p10, p90])", *columns], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="rendered test photos")
    parser.add_argument(
        "--segmenter", default="classical", help="comma-separated, e.g. classical,unet"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-fdu", action="store_true")
    parser.add_argument("--realism-n", type=int, default=12)
    parser.add_argument("--change", action="store_true", help="add the before/after section")
    parser.add_argument("--json", type=Path, help="also write the raw records here")
    args = parser.parse_args(argv)
    segmenters = [s.strip() for s in args.segmenter.split(",") if s.strip()]

    print(f"# trichoscan {trichoscan.__version__} accuracy, renderer {synth.RENDERER_VERSION}")
    print(f"machine: {machine()}; segmenters: {', '.join(segmenters)}")
    for name in segmenters:
        info = trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter=name)).segmenter_info
        sha = f", weights sha256 {info.weights_sha256[:12]}" if info.weights_sha256 else ""
        print(f"- {name}: ran {info.name}{sha}")
    print()
    t0 = time.perf_counter()
    renders = {name: run_renders(args.n, name, args.workers) for name in segmenters}
    print(f"## Rendered test set (seeds {seed_range('accuracy').start}+, 640x512)\n")
    print_render_tables(renders)
    for name, records in renders.items():
        print(
            f"\n{name}: median analyse time per render "
            f"{np.median([r['seconds'] for r in records]):.3f} s"
        )
    print(f"({time.perf_counter() - t0:.0f} s total)\n")
    fdu = None
    if not args.no_fdu:
        fdu = {name: run_fdu(name, args.workers) for name in segmenters}
        if any(v is None for v in fdu.values()):
            fdu = None
    if fdu is not None:
        print("## FDU val (real 70x photos, count_rule='inside', device fdu-70x-quadrant)\n")
        print_fdu_table(fdu)
        patches = {name: run_patches(name) for name in segmenters}
        if all(patches.values()):
            print("\n## Real scalp patches (80 hand-traced masks, scale unknown)\n")
            print_patch_table(patches)
        print("\n## Realism: renders vs FDU val\n")
        print_realism(args.realism_n)
    if args.change:
        import accuracy_change

        print("\n## Before/after change (same-site rendered pairs)\n")
        for name in segmenters:
            print(f"### segmenter: {name}\n")
            print(accuracy_change.run(30, 10, 10, name, args.workers))
    if args.json:
        args.json.write_text(json.dumps({"renders": renders, "fdu": fdu}, indent=1))


if __name__ == "__main__":
    main()
