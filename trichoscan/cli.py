"""Command-line interface: ``trichoscan analyze``, ``trichoscan synth``, ...

Exit codes, shared by every command: 0 all done; 2 usage error; 3 some inputs failed (the
others were written); 4 nothing could be processed. A bad input gives one clear line on
stderr, never a traceback (``--verbose`` logs details).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, TrichoscanError
from .sessions import PHOTO_SUFFIXES, is_photo_file

__all__ = ["app", "main", "collect_images"]

logger = logging.getLogger("trichoscan")

app = typer.Typer(
    name="trichoscan",
    help="Hair count, density and thickness from trichoscopy photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line(message: object) -> str:
    """Collapse a message to one line: some (e.g. torch's) span several."""
    return " ".join(str(message).split())


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {_one_line(message)}", err=True)
    return typer.Exit(code)


def _scale_input(um_per_px: float | None, device: str | None) -> float | str | None:
    """The calibration a command was given: --um-per-px, --device or neither (both: usage)."""
    if um_per_px is not None and device is not None:
        raise _fail("give either --um-per-px or --device, not both", EXIT_USAGE)
    return um_per_px if device is None else device


def _check_count_rule(count_rule: str) -> None:
    from .metrics import COUNT_RULES

    if count_rule not in COUNT_RULES:
        raise _fail(f"--count-rule must be one of {', '.join(COUNT_RULES)}", EXIT_USAGE)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically; a clear failure instead of a traceback."""
    import json

    from .report import write_atomic

    try:
        write_atomic(path, json.dumps(data, indent=2).encode("utf-8"))
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def collect_images(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively) into photo paths, sorted.

    Sidecar files (renderer truth ``*_mask.*``, ``*_field.*``, our ``*_overlay.*``) and
    hidden files are not photos (:func:`trichoscan.sessions.is_photo_file`).

    Returns the photos and ``(path, reason)`` for inputs that do not exist.
    """
    found: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in candidate.relative_to(path).parts)
                if candidate.is_file() and not hidden and is_photo_file(candidate):
                    found.append(candidate)
        elif path.is_file():
            found.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return sorted(dict.fromkeys(found)), missing


def _output_stems(images: list[Path], inputs: list[Path]) -> dict[Path, Path]:
    """Relative output path (without suffix) per photo, mirroring the input folders.

    Paths are relative to the folders given (or the folders of the files given), so
    ``analyze sample_images`` writes ``P001/vertex/2026-03-02/photo_1.json``.
    """
    if not images:
        return {}
    roots = [p.resolve() if p.is_dir() else p.resolve().parent for p in inputs if p.exists()]
    base = Path(os.path.commonpath([str(p) for p in roots]))
    return {p: p.resolve().relative_to(base).with_suffix("") for p in images}


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "trichoscan_out"
    ),
    um_per_px: Annotated[
        float | None, typer.Option("--um-per-px", help="Scale in µm per pixel.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Device profile name (see `devices`).")
    ] = None,
    segmenter: Annotated[str, typer.Option(help="auto, classical or unet.")] = "auto",
    model: Annotated[
        Path | None,
        typer.Option(help="U-Net model folder (weights.pt + model_card.json); default: shipped."),
    ] = None,
    count_rule: Annotated[str, typer.Option(help="exit, inside or visible.")] = "exit",
    overlay: Annotated[bool, typer.Option(help="Write an overlay PNG per photo.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Analyse photos: per-photo JSON, overlay PNG, summary.csv and report.html in OUT."""
    _setup_logging(verbose)
    from .calibration import resolve_calibration
    from .io import read_image
    from .pipeline import Pipeline, PipelineConfig
    from .report import encode_png, render_overlay, write_atomic

    scale = _scale_input(um_per_px, device)
    _check_count_rule(count_rule)
    try:
        calibration = resolve_calibration(scale)
        pipeline = Pipeline(
            PipelineConfig(segmenter=segmenter, count_rule=count_rule, model_dir=model)
        )
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None

    images, missing = _collect_or_fail(paths)
    stems = _output_stems(images, paths)
    rows: list[dict] = []
    errors: list[dict[str, str]] = [{"source": str(p), "error": why} for p, why in missing]
    overlays: dict[str, bytes] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):  # else every photo would fail, one by one
        raise _fail(f"output folder {out} is not writable; choose another with --out")

    with typer.progressbar(images, label="analysing", file=sys.stderr) as bar:
        for image_path in bar:
            try:
                # Read once: the same pixels feed the analysis and the overlay.
                rgb = read_image(str(image_path))
                result = pipeline.analyze(rgb, calibration=calibration, source=str(image_path))
                stem = out / stems[image_path]
                write_atomic(stem.with_suffix(".json"), result.to_json().encode("utf-8"))
                if overlay:
                    png = encode_png(render_overlay(rgb, result))
                    write_atomic(stem.parent / f"{stem.name}_overlay.png", png)
                    overlays[str(stems[image_path])] = png
                rows.append({**result.summary(), "source": str(image_path)})
            except TrichoscanError as exc:
                errors.append({"source": str(image_path), "error": str(exc)})
                typer.echo(f"error: {image_path}: {_one_line(exc)}", err=True)
            except OSError as exc:
                errors.append({"source": str(image_path), "error": f"cannot write: {exc}"})
                typer.echo(f"error: {image_path}: cannot write output: {exc}", err=True)
            except Exception as exc:  # noqa: BLE001 - one bad photo must never stop a batch
                logger.debug("unexpected failure on %s", image_path, exc_info=True)
                errors.append({"source": str(image_path), "error": f"internal error: {exc!r}"})
                typer.echo(
                    f"error: {image_path}: internal error "
                    f"({type(exc).__name__}: {_one_line(exc)}); "
                    "please report it with --verbose output",
                    err=True,
                )

    settings = {**pipeline.config.to_dict(), "segmenter_used": pipeline.segmenter_info.name}
    try:
        _write_summaries(out, rows, errors, overlays, settings)
    except OSError as exc:
        raise _fail(f"cannot write the summary files in {out}: {exc.strerror or exc}") from None
    typer.echo(f"{len(rows)} of {len(rows) + len(errors)} photos analysed; results in {out}")
    if not rows:
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_PARTIAL if errors else EXIT_OK)


def _collect_or_fail(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    images, missing = collect_images(paths)
    for path, why in missing:
        typer.echo(f"error: {path}: {why}", err=True)
    if not images:
        if missing and len(missing) == len(paths):  # each input already has its error line
            raise typer.Exit(EXIT_FAILED)
        where = ", ".join(str(p) for p in paths)
        raise _fail(f"no photos found in {where} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
    return images, missing


def _write_summaries(
    out: Path,
    rows: list[dict],
    errors: list[dict[str, str]],
    overlays: dict[str, bytes],
    settings: dict,
) -> None:
    from .metrics import SUMMARY_COLUMNS
    from .report import write_csv, write_html_index

    rows = sorted(rows, key=lambda r: r["source"])
    errors = sorted(errors, key=lambda r: r["source"])
    write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)
    if errors:
        write_csv(out / "errors.csv", errors, ["source", "error"])
    else:
        (out / "errors.csv").unlink(missing_ok=True)
    write_html_index(out / "report.html", rows, overlays, errors, settings)


@app.command()
def batch(
    root_or_manifest: Annotated[
        Path, typer.Argument(help="Folder PATIENT/SITE/YYYY-MM-DD/*.jpg or a manifest CSV.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "trichoscan_batch"
    ),
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Processes.")] = 1,
    um_per_px: Annotated[
        float | None, typer.Option("--um-per-px", help="Scale for photos without one.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Device profile for photos without a scale.")
    ] = None,
    segmenter: Annotated[str, typer.Option(help="auto, classical or unet.")] = "auto",
    model: Annotated[
        Path | None,
        typer.Option(help="U-Net model folder (weights.pt + model_card.json); default: shipped."),
    ] = None,
    count_rule: Annotated[str, typer.Option(help="exit, inside or visible.")] = "exit",
    compare_sessions: Annotated[
        bool, typer.Option("--compare/--no-compare", help="Write changes.csv.")
    ] = True,
    anonymise: Annotated[
        bool,
        typer.Option(
            "--anonymise",
            help="Replace patient ids with stable pseudonyms (secret key kept in "
            "OUT/.trichoscan-pseudonym-key: do not share it with the tables).",
        ),
    ] = False,
    report: Annotated[
        bool, typer.Option("--report", help="Also write OUT/report/PATIENT.html (see `report`).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Analyse a study: images.csv, sessions.csv (95 % CIs), changes.csv, errors.csv in OUT.

    Resumable: a re-run reprocesses only new or changed photos (cache in OUT/.cache).
    """
    _setup_logging(verbose)
    from .batch import run_batch
    from .pipeline import PipelineConfig

    scale = _scale_input(um_per_px, device)
    _check_count_rule(count_rule)
    if not root_or_manifest.exists():
        raise _fail(f"{root_or_manifest}: no such folder or manifest CSV")
    try:
        config = PipelineConfig(segmenter=segmenter, count_rule=count_rule, model_dir=model)
        with typer.progressbar(length=1, label="analysing", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = total  # known once the study is read
                bar.update(done - bar.pos)

            result = run_batch(
                root_or_manifest,
                out,
                config=config,
                calibration=scale,
                workers=workers,
                progress=progress,
                compare_sessions=compare_sessions,
                anonymise=anonymise,
            )
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    if result.n_errors:
        typer.echo(f"error: {result.n_errors} failure(s), see {out / 'errors.csv'}", err=True)
    typer.echo(
        f"{result.n_photos - result.n_failed} of {result.n_photos} photos analysed "
        f"({result.n_analysed} now, {result.n_cached} from cache); results in {out}"
    )
    code = result.exit_code
    if report and code != EXIT_FAILED:
        # A report failure never hides the batch's own result: at worst "some failed".
        report_code = _write_reports(out, None)
        code = EXIT_PARTIAL if report_code != EXIT_OK else code
    raise typer.Exit(code)


def _write_reports(batch_dir: Path, out: Path | None) -> int:
    """Write the patient reports of a batch folder; print what happened; exit code."""
    from .report import write_patient_reports

    try:
        reports = write_patient_reports(batch_dir, out)
    except TrichoscanError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return EXIT_FAILED
    for patient, why in reports.failed.items():
        typer.echo(f"error: report of patient {patient}: {_one_line(why)}", err=True)
    n = len(reports.written)
    typer.echo(f"{n} patient report{'s' if n != 1 else ''} written to {reports.out_dir}")
    return reports.exit_code


@app.command()
def report(
    batch_dir: Annotated[Path, typer.Argument(help="Output folder of `trichoscan batch`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: DIR/report).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """One self-contained HTML report per patient from a batch folder: PATIENT.html.

    Per site: sessions with 95 % CIs, changes vs baseline and previous with significance,
    metric trends, width histograms, overlays of baseline and latest side by side, and
    the settings, model and scale used.
    """
    _setup_logging(verbose)
    raise typer.Exit(_write_reports(batch_dir, out))


@app.command()
def compare(
    before: Annotated[Path, typer.Argument(help="Before: a photo, or a session folder.")],
    after: Annotated[Path, typer.Argument(help="After: a photo, or a session folder.")],
    um_per_px: Annotated[float | None, typer.Option("--um-per-px")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    segmenter: Annotated[str, typer.Option(help="auto, classical or unet.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full comparison as JSON.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Compare photos of one scalp site before and after: change with 95 % CIs."""
    _setup_logging(verbose)

    from .comparison import compare as compare_photos

    scale = _scale_input(um_per_px, device)
    sides = []
    for path in (before, after):
        photos, missing = collect_images([path])  # a folder is a session
        if missing or not photos:
            raise _fail(f"{path}: no such file, or no photos in the folder")
        sides.append([str(p) for p in photos])
    try:
        result = compare_photos(
            sides[0],
            sides[1],
            calibration=scale,
            segmenter=segmenter,
        )
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    if not result.registered:
        typer.echo("warning: " + "; ".join(result.notes), err=True)
    else:
        typer.echo(
            f"registered: overlap {result.overlap_fraction:.0%}, "
            f"quality {result.registration_quality:.2f}"
        )
    for name, c in result.changes.items():
        if c.diff is None:
            typer.echo(f"{name}: n/a (no scale, or too few hairs)")
            continue
        pct = "" if c.pct is None else f" ({c.pct:+.1f} %"
        if c.pct_low is not None:
            pct += f", 95 % CI {c.pct_low:+.1f} to {c.pct_high:+.1f} %"
        pct += ")" if pct else ""
        flag = "significant" if c.significant else "not significant"
        typer.echo(f"{name}: {c.before:.4g} -> {c.after:.4g}{pct}, {flag}")
    if result.fate is not None:
        f = result.fate
        typer.echo(f"hairs: {f.persisted} persisted, {f.new} new, {f.lost} lost")
    if json_out is not None:
        _write_json(json_out, result.to_dict())
    raise typer.Exit(EXIT_OK)


@app.command()
def trichogram(
    before: Annotated[Path, typer.Argument(help="Photo of the clipped site, day 0.")],
    after: Annotated[Path, typer.Argument(help="The same site DAYS later.")],
    days: Annotated[float, typer.Option(help="Days between the photos (typically 2-3).")],
    um_per_px: Annotated[float | None, typer.Option("--um-per-px")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    segmenter: Annotated[str, typer.Option(help="auto, classical or unet.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the per-hair result as JSON.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Phototrichogram: per-hair growth, anagen/telogen ratio and growth rate (95 % CIs)."""
    _setup_logging(verbose)

    from .comparison import phototrichogram

    scale = _scale_input(um_per_px, device)
    if scale is None:
        raise _fail("a phototrichogram needs a scale: give --um-per-px or --device", EXIT_USAGE)
    for path in (before, after):
        if not path.is_file():
            raise _fail(f"{path}: no such photo")
    try:
        result = phototrichogram(
            str(before),
            str(after),
            days=days,
            calibration=scale,
            segmenter=segmenter,
        )
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)

    def show(label: str, e, unit: str, fmt: str) -> None:
        if e.value is None:
            typer.echo(f"{label}: n/a")
            return
        ci = "" if e.low is None else f" (95 % CI {e.low:{fmt}} to {e.high:{fmt}})"
        typer.echo(f"{label}: {e.value:{fmt}}{unit}{ci}")

    typer.echo(
        f"{result.n_measured} of {result.n_counted} counted hairs measured: "
        f"{result.n_anagen} anagen, {result.n_telogen} telogen"
    )
    show("anagen fraction", result.anagen_fraction, "", ".2f")
    show("anagen/telogen ratio", result.anagen_telogen_ratio, "", ".2f")
    show("growth rate", result.growth_rate_mm_per_day, " mm/day", ".3f")
    if json_out is not None:
        _write_json(json_out, result.to_dict())
    raise typer.Exit(EXIT_OK if result.n_measured else EXIT_FAILED)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of photos.")] = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed.")] = 0,
    height: Annotated[int, typer.Option(min=64, help="Height in pixels.")] = 512,
    width: Annotated[int, typer.Option(min=64, help="Width in pixels.")] = 640,
) -> None:
    """Render synthetic trichoscopy photos with exact ground truth (photo, mask, JSON)."""
    from . import synth as synth_module

    config = synth_module.SynthConfig(height=height, width=width)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create output folder {out}: {exc.strerror}") from None
    with typer.progressbar(range(seed, seed + n), label="rendering", file=sys.stderr) as bar:
        for s in bar:
            render = synth_module.render(s, config)
            synth_module.write_render(render, out, f"synth_{s:06d}")
    typer.echo(f"{n} renders written to {out}")


class _TrainBars:
    """Progress bars for trichoscan.training.train: one per stage, on stderr."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = ""
        self._done = 0

    def __call__(self, event) -> None:  # trichoscan.training.TrainProgress
        if event.stage == "epoch":
            m = event.metrics
            dev = (
                f" dev Dice {m['dev_dice']:.3f} clDice {m['dev_cldice']:.3f}"
                if "dev_dice" in m
                else ""
            )
            typer.echo(f"\nepoch {event.done}/{event.total}: loss {m['loss']:.4f}{dev}", err=True)
            return
        if event.stage != self._stage:
            self.close()
            label = {"render": "preparing data", "train": "training"}.get(event.stage, event.stage)
            self._bar = typer.progressbar(length=event.total, label=label, file=sys.stderr)
            self._bar.__enter__()
            self._stage, self._done = event.stage, event.done - 1
        self._bar.update(event.done - self._done)
        self._done = event.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="Run file (TOML); flags override it.")] = None,
    out: Annotated[Path | None, typer.Option(help="Model folder to write.")] = None,
    data: Annotated[Path | None, typer.Option(help="Folder with images/ and masks/.")] = None,
    data_um_per_px: Annotated[float | None, typer.Option(help="Scale of --data photos.")] = None,
    data_licence: Annotated[
        str | None, typer.Option(help="Licence of --data (model card).")
    ] = None,
    synthetic: Annotated[int | None, typer.Option(help="Renders generated on the fly.")] = None,
    init: Annotated[Path | None, typer.Option(help="Fine-tune from this model folder.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train (or fine-tune) the U-Net hair segmenter; writes weights + model card."""
    _setup_logging(verbose)
    from .training import TrainConfig
    from .training import train as run_training

    flags = {
        "out_dir": out,
        "data_dir": data,
        "data_um_per_px": data_um_per_px,
        "data_licence": data_licence,
        "synthetic": synthetic,
        "init_model_dir": init,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "resume": resume or None,
    }
    bars = _TrainBars()
    try:
        if config is not None:
            cfg = TrainConfig.from_toml(config, **flags)
        elif out is None:
            raise _fail("give --config RUN.toml or --out MODEL_DIR", EXIT_USAGE)
        else:
            cfg = TrainConfig(**{k: v for k, v in flags.items() if v is not None})
        folder = run_training(cfg, progress=bars)
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    except ImportError as exc:
        raise _fail(f"{exc}; training needs torch: pip install 'trichoscan[model]'") from None
    finally:
        bars.close()
    typer.echo(str(folder))


@app.command()
def evaluate(
    model: Annotated[
        Path | None,
        typer.Option(help="U-Net model folder (default: shipped), or the word 'classical'."),
    ] = None,
    data: Annotated[
        Path,
        typer.Option(
            help="Folder with images/ plus masks/ (Dice, clDice) or annotations/ "
            "(Pascal VOC boxes, one per hair: count errors)."
        ),
    ] = ...,
    layout: Annotated[str, typer.Option(help="auto (from the folders), masks or boxes.")] = "auto",
    um_per_px: Annotated[float | None, typer.Option(help="Scale of the photos.")] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="Device profile of the photos (see `devices`)."),
    ] = None,
    count_rule: Annotated[
        str, typer.Option(help="Boxes: inside (the labels' convention), exit or visible.")
    ] = "inside",
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Boxes: write per-image counts here.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all scores here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Score a segmenter on annotated photos: Dice/clDice on masks, count errors on boxes."""
    _setup_logging(verbose)
    import json

    from .training import detect_layout, evaluate_boxes, evaluate_masks

    scale = _scale_input(um_per_px, device)
    _check_count_rule(count_rule)
    if layout not in ("auto", "masks", "boxes"):
        raise _fail("--layout must be auto, masks or boxes", EXIT_USAGE)
    try:
        kind = detect_layout(data) if layout == "auto" else layout
        if kind == "masks":
            from .calibration import resolve_calibration

            mask_scale = resolve_calibration(scale).um_per_px
            scores = evaluate_masks(model, data, um_per_px=mask_scale)
        else:
            with typer.progressbar(length=1, label="evaluating", file=sys.stderr) as bar:

                def progress(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                result = evaluate_boxes(
                    model,
                    data,
                    calibration=scale,
                    count_rule=count_rule,
                    progress=progress,
                )
            scores = result.to_dict()
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    try:
        if json_out is not None:
            json_out.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        if csv_out is not None and kind == "boxes":
            result.write_csv(csv_out)
    except OSError as exc:
        raise _fail(f"cannot write the scores: {exc.strerror or exc}") from None
    if kind == "masks":
        sha = scores["model_sha256"][:12] or scores["segmenter"]
        typer.echo(
            f"{scores['n_images']} images: Dice {scores['mean_dice']:.3f}, "
            f"clDice {scores['mean_cldice']:.3f} (model {sha})"
        )
        raise typer.Exit(EXIT_OK)
    for row in result.per_image:
        if row.error is not None:
            typer.echo(f"error: {row.name}: {row.error}", err=True)
    who = result.segmenter + (f" {result.model_sha256[:12]}" if result.model_sha256 else "")
    if result.n == 0:
        raise _fail(f"none of the {result.n_failed} images could be analysed ({who})")
    typer.echo(
        f"{result.n} images ({result.n_failed} failed), count rule {result.count_rule}, {who}: "
        f"MAE {result.mae:.2f} hairs/image, mean abs error {result.mean_abs_pct_error:.1f} %, "
        f"bias {result.bias:+.2f}, RMSE {result.rmse:.2f} (mean true count "
        f"{result.mean_true:.1f}; scale {result.calibration})"
    )
    raise typer.Exit(EXIT_PARTIAL if result.n_failed else EXIT_OK)


@app.command("export-onnx")
def export_onnx_cmd(
    out: Annotated[Path, typer.Argument(help="ONNX file to write.")],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: shipped).")] = None,
    opset: Annotated[int, typer.Option()] = 17,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Export a U-Net model folder to ONNX."""
    _setup_logging(verbose)
    from .training import export_onnx

    try:
        path = export_onnx(model, out, opset=opset)
    except TrichoscanError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(path))


@app.command()
def calibrate(
    photo: Annotated[Path, typer.Argument(help="Photo of a stage micrometer or ruler.")],
    spacing_um: Annotated[
        float,
        typer.Option(
            "--spacing-um",
            help="Distance between neighbouring ticks in µm (10 for a 1 mm/100 micrometer).",
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="Print a device-profile entry under this name.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure µm per pixel from a photo of regularly spaced ticks (micrometer or ruler)."""
    _setup_logging(verbose)
    from .calibration import measure_ruler_scale
    from .io import read_image

    try:
        result = measure_ruler_scale(read_image(str(photo)), spacing_um)
    except TrichoscanError as exc:
        raise _fail(f"{photo}: {exc}") from None
    typer.echo(
        f"{result.um_per_px:.4f} µm/px ({spacing_um:g} µm ticks every {result.period_px:.3f} px, "
        f"{result.n_periods:.0f} spacings measured, ticks at {result.angle_deg:.1f}°)"
    )
    if name is not None:
        typer.echo(f"\n[device.{name}]\num_per_px = {result.um_per_px:.4f}")
        typer.echo(f'description = "measured from {photo.name} with trichoscan calibrate"')


@app.command()
def devices() -> None:
    """List the device profiles (name, µm per pixel, description)."""
    from .calibration import device_profiles

    for profile in device_profiles().values():
        typer.echo(f"{profile.name}\t{profile.um_per_px:g} µm/px\t{profile.description}")


@app.command()
def version() -> None:
    """Print the trichoscan version."""
    from ._version import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point; turns any escaped error into a clear line and code 4."""
    try:
        app()
    except TrichoscanError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
