"""Report writers: per-photo JSON, summary CSV, overlay PNG, an HTML index, patient reports.

Every file is written atomically (temporary file + rename), so an interrupted run never
leaves a half-written result behind.

Patient reports
---------------
:func:`write_patient_reports` turns a ``trichoscan batch`` output folder into one
self-contained HTML file per patient: per site, the sessions with 95 % CIs, the changes
vs baseline and vs previous with their significance, metric trends with CI bands and
per-session width histograms (matplotlib, imported only here, drawn off-screen with the
Agg canvas and never through ``pyplot``, so no global backend is touched), and the
overlays of the baseline and latest sessions side by side, with the settings, model and
scale used. Everything is embedded (``data:`` URIs, inline CSS, no script); a
Content-Security-Policy forbids the page any network access.

The overlays come from the batch's cache, where each photo's overlay was drawn from its
pixels when it was analysed (the batch folder does not know where the photos are, and
photos may have moved since). A cache entry without an overlay (a batch run by an older
version) is drawn from the cached analysis on a grey background instead: the hair mask,
classes and exit ends, without the skin.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import itertools
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._version import __version__
from .errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, InputError, TrichoscanError
from .metrics import SCHEMA_VERSION, Analysis

__all__ = [
    "CLASS_COLOURS",
    "write_atomic",
    "render_overlay",
    "write_png",
    "write_json",
    "write_csv",
    "write_html_index",
    "encode_jpeg",
    "overlay_jpeg",
    "PatientReports",
    "write_patient_reports",
]

#: Overlay colours (RGB), distinguishable with the common colour-vision deficiencies.
CLASS_COLOURS = {
    "vellus": (86, 180, 233),  # sky blue
    "intermediate": (240, 228, 66),  # yellow
    "terminal": (213, 94, 0),  # vermillion
    "counted": (0, 158, 115),  # green: counted, no scale so no class
    "not_counted": (150, 150, 150),  # grey: visible but outside the counting rule
}
EXIT_COLOUR = (255, 255, 255)
FIELD_COLOUR = (0, 114, 178)
#: Longest side (px) of the overlay JPEG a batch keeps per photo for the reports.
OVERLAY_MAX_SIDE = 1024

logger = logging.getLogger(__name__)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def render_overlay(image: np.ndarray, analysis: Analysis, alpha: float = 0.75) -> np.ndarray:
    """Draw the analysis over the photo: hairs by class, exit ends, field edge, counts.

    Parameters
    ----------
    image : (H, W, 3) array
        The photo (uint8, or float in [0, 1]).
    analysis : Analysis
        Result for this photo.

    Returns
    -------
    (H, W, 3) uint8 RGB overlay.
    """
    out = _to_uint8_rgb(image).copy()
    hairs = analysis.hairs
    classes = analysis.hair_classes()
    labels = hairs.labels
    if len(hairs):
        # One colour per hair id (index 0 = background), painted through the label image.
        lut = np.zeros((len(hairs) + 1, 3), dtype=np.float32)
        for i in range(len(hairs)):
            if not analysis.counted[i]:
                key = "not_counted"
            elif classes is None:
                key = "counted"
            else:
                key = str(classes[i])
            lut[hairs.hair_id[i]] = CLASS_COLOURS[key]
        painted = labels > 0
        colour = lut[labels[painted]]
        out[painted] = np.rint((1 - alpha) * out[painted] + alpha * colour).astype(np.uint8)
        # Mask pixels that no hair owns (junction zones) in the counted colour.
        orphan = analysis.mask & ~painted
        out[orphan] = CLASS_COLOURS["counted"]
    contours, _ = cv2.findContours(
        analysis.field_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(out, contours, -1, FIELD_COLOUR, 1, lineType=cv2.LINE_AA)
    radius = max(3, int(round(min(out.shape[:2]) / 200)))
    for xy in hairs.exit_xy:
        if np.isfinite(xy).all():
            centre = (int(round(xy[0])), int(round(xy[1])))
            cv2.circle(out, centre, radius, EXIT_COLOUR, 1, lineType=cv2.LINE_AA)
    _draw_caption(out, _caption(analysis))
    return out


def _caption(analysis: Analysis) -> str:
    text = (
        f"{analysis.hair_count} hairs ({analysis.count_rule} rule), "
        f"{analysis.visible_hair_count} visible"
    )
    if analysis.density_per_cm2 is not None:
        text += f", {analysis.density_per_cm2:.0f}/cm2"
    if analysis.mean_width_um is not None:
        text += f", mean width {analysis.mean_width_um:.0f} um"
    return text


def _draw_caption(out: np.ndarray, text: str) -> None:
    scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, int(round(scale * 1.5)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    room = out.shape[1] - 16
    # Small photos: shrink the caption to fit rather than cut it off. Text width is not
    # exactly proportional to the scale (OpenCV rounds glyph sizes), so shrink until it fits.
    for _ in range(8):
        if not w > room > 0:
            break
        scale *= 0.98 * room / w
        thickness = max(1, int(round(scale * 1.5)))
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y0 = out.shape[0] - 8
    cv2.rectangle(out, (4, y0 - h - base - 4), (12 + w, y0 + 2), (0, 0, 0), -1)
    cv2.putText(
        out,
        text,
        (8, y0 - base),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB image (no metadata carried over from any input)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(_to_uint8_rgb(rgb), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, *, max_side: int | None = None, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB image, shrunk to ``max_side`` pixels if larger (no metadata)."""
    image = _to_uint8_rgb(rgb)
    if max_side is not None and max(image.shape[:2]) > max_side:
        f = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def overlay_jpeg(image: np.ndarray, analysis: Analysis, max_side: int = OVERLAY_MAX_SIDE) -> bytes:
    """The overlay of :func:`render_overlay` as a JPEG of at most ``max_side`` pixels.

    What a batch keeps per photo for the patient reports: a JPEG, not a PNG, because
    an overlay is mostly photo and a PNG of it costs ten times the bytes.
    """
    return encode_jpeg(render_overlay(image, analysis), max_side=max_side, quality=88)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG, atomically."""
    return write_atomic(path, encode_png(rgb))


def write_json(path: str | Path, analysis: Analysis) -> Path:
    """Write ``analysis.to_json()`` atomically."""
    return write_atomic(path, analysis.to_json().encode("utf-8"))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write dict rows as CSV (columns in the given order), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return write_atomic(path, buffer.getvalue().encode("utf-8"))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_html_index(
    path: str | Path,
    rows: Iterable[dict[str, Any]],
    overlays: dict[str, bytes],
    errors: Sequence[dict[str, str]] = (),
    settings: dict[str, Any] | None = None,
) -> Path:
    """A self-contained HTML page: summary table, overlays (embedded) and failures.

    Parameters
    ----------
    rows : iterable of dict
        One summary row per photo (``Analysis.summary()`` plus ``source``).
    overlays : dict
        PNG bytes per source, embedded as data URIs (no network assets).
    errors : sequence of dict
        ``{'source': ..., 'error': ...}`` per failed photo.
    """
    rows = list(rows)
    columns = [
        ("source", "Photo"),
        ("hair_count", "Hairs"),
        ("visible_hair_count", "Visible"),
        ("density_per_cm2", "Density /cm²"),
        ("mean_width_um", "Mean width µm"),
        ("vellus_count", "Vellus"),
        ("intermediate_count", "Intermediate"),
        ("terminal_count", "Terminal"),
        ("follicular_unit_count", "Units"),
        ("hairs_per_unit", "Hairs/unit"),
        ("cumulative_thickness_mm_per_cm2", "Cum. thickness mm/cm²"),
        ("um_per_px", "µm/px"),
        ("calibration_source", "Scale source"),
    ]
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>trichoscan report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;font-size:14px}",
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}",
        "td:first-child,th:first-child{text-align:left}",
        "figure{display:inline-block;margin:1em 1em 0 0;max-width:48%}",
        "img{max-width:100%}.err{color:#a00}",
        "</style></head><body><h1>trichoscan report</h1>",
        "<h2>Summary</h2><table><tr>",
        *(f"<th>{esc(label)}</th>" for _, label in columns),
        "</tr>",
    ]
    for row in rows:
        parts.append("<tr>")
        for key, _ in columns:
            value = row.get(key)
            if value is None or value == "":
                text = "–"
            elif isinstance(value, float):
                text = f"{value:.3g}" if key != "density_per_cm2" else f"{value:.0f}"
            else:
                text = str(value)
            parts.append(f"<td>{esc(text)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    if errors:
        parts.append("<h2>Photos that could not be analysed</h2><ul>")
        parts += [f"<li class='err'>{esc(e['source'])}: {esc(e['error'])}</li>" for e in errors]
        parts.append("</ul>")
    parts.append(
        "<h2>Overlays</h2><p>Colours: vellus sky blue, intermediate yellow, terminal "
        "vermillion, counted without scale green, visible but not counted grey; white "
        "circles mark exit points; the blue line is the analysed field.</p>"
    )
    for source, png in overlays.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(source)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(source)}</figcaption></figure>"
        )
    if settings:
        parts.append("<h2>Settings</h2><pre>")
        parts.append(esc("\n".join(f"{k}: {v}" for k, v in settings.items())))
        parts.append("</pre>")
    parts.append("</body></html>")
    return write_atomic(path, "".join(parts).encode("utf-8"))


# --------------------------------------------------------------------------- patient reports

#: What the reports show per metric: label, unit and number format.
_METRICS = {
    "density_per_cm2": ("Density", "hairs/cm²", "{:.1f}"),
    "mean_width_um": ("Mean width", "µm", "{:.1f}"),
    "terminal_vellus_ratio": ("Terminal/vellus ratio", "", "{:.2f}"),
    "cumulative_thickness_mm_per_cm2": ("Cumulative thickness", "mm/cm²", "{:.2f}"),
}
_REQUIRED_TABLES = ("images.csv", "sessions.csv")
#: Longest side of a thumbnail in the all-sessions gallery (px).
_THUMB_MAX_SIDE = 480
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em 2em;color:#222;line-height:1.4}
h1{margin:.2em 0}h2{border-bottom:2px solid #0072b2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}.meta{color:#555;font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 7px;text-align:right;vertical-align:top}
th{background:#f2f5f8}td.l,th.l{text-align:left}
small{color:#555}.na{color:#999}.nw{white-space:nowrap}
.badge{display:inline-block;border-radius:3px;padding:0 4px;font-size:11px;margin:1px 0}
.sig{background:#0072b2;color:#fff}.ns{background:#e4e4e4;color:#333}
.mdc{background:#d55e00;color:#fff}.nomdc{border:1px solid #bbb;color:#555}
.delta{font-weight:600;font-size:14px}
tr.note td{text-align:left;color:#8a4b00;background:#fff8ec;font-size:12px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px;align-items:start}
.pair h4{margin:.2em 0}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0 0 10px 0}figure img{width:100%;display:block;border:1px solid #ccc}
.gallery figure{width:31%}figcaption{font-size:12px;color:#444}
img.plot{width:100%;max-width:1100px;display:block}
.missing{border:1px dashed #aaa;padding:2em;color:#777;text-align:center;font-size:13px}
.err{color:#a00}
.legend span{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;
margin:0 .25em 0 .8em;border:1px solid #888}
dl.settings{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;font-size:13px}
dl.settings dt{font-weight:600}dl.settings dd{margin:0;word-break:break-all}
footer{margin-top:3em;font-size:12px;color:#777}
"""


@dataclass(frozen=True)
class PatientReports:
    """What :func:`write_patient_reports` wrote.

    Attributes
    ----------
    out_dir : Path
        Folder of the reports.
    written : dict
        Patient id -> HTML file, for every report written.
    failed : dict
        Patient id -> reason, for every report that could not be written.
    """

    out_dir: Path
    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        """The HTML files written, in patient order."""
        return list(self.written.values())

    @property
    def exit_code(self) -> int:
        """CLI exit code: 0 all written, 3 some patients failed, 4 nothing written."""
        if not self.written:
            return EXIT_FAILED
        return EXIT_PARTIAL if self.failed else EXIT_OK


@dataclass(frozen=True)
class _BatchFolder:
    """The tables of a batch output folder, as read from its files (strings)."""

    path: Path
    images: list[dict[str, str]]
    sessions: list[dict[str, str]]
    changes: list[dict[str, str]]
    errors: list[dict[str, str]]
    settings: dict[str, Any]

    def patients(self) -> list[str]:
        return sorted({r["patient"] for r in self.sessions} | {r["patient"] for r in self.images})


@dataclass
class _Photo:
    """One analysed photo of a patient report: its row, cached analysis and overlay."""

    row: dict[str, str]
    analysis: Analysis | None = None
    overlay: bytes | None = None  # JPEG
    overlay_note: str = ""

    @property
    def rel(self) -> str:
        return self.row["path"]

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _read_batch_folder(batch_dir: Path) -> _BatchFolder:
    """Read a batch output folder; :class:`InputError` names what is missing."""
    hint = "give the --out folder of `trichoscan batch`"
    if not batch_dir.exists():
        raise InputError(f"{batch_dir}: no such folder; {hint}")
    if not batch_dir.is_dir():
        raise InputError(f"{batch_dir} is not a folder; {hint}")
    missing = [name for name in _REQUIRED_TABLES if not (batch_dir / name).is_file()]
    if missing:
        raise InputError(
            f"{batch_dir} is not a trichoscan batch output folder (no {', '.join(missing)}); "
            f"{hint}, or run `trichoscan batch STUDY --out {batch_dir}` first"
        )
    tables: dict[str, list[dict[str, str]]] = {}
    for name in ("images", "sessions", "changes", "errors"):
        path = batch_dir / f"{name}.csv"
        try:
            tables[name] = _read_rows(path) if path.is_file() else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{path} cannot be read ({exc}); re-run `trichoscan batch`") from None
    for name in ("images", "sessions"):
        if tables[name] and not {"patient", "site", "date"} <= set(tables[name][0]):
            raise InputError(
                f"{batch_dir / (name + '.csv')} lacks the patient/site/date columns; "
                "re-run `trichoscan batch`"
            )
    settings: dict[str, Any] = {}
    try:
        settings = json.loads((batch_dir / "batch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.info("no readable batch.json in %s: settings unknown", batch_dir)
    if not isinstance(settings, dict):
        settings = {}
    return _BatchFolder(batch_dir, **tables, settings=settings)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TrichoscanError(
            "the report needs matplotlib: pip install 'trichoscan[report]'"
        ) from None


def _safe_filename(name: str) -> str:
    """A file name for a patient id: letters, digits, '.', '-' and '_' only."""
    safe = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")
    return safe or "patient"


def write_patient_reports(
    batch_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    patients: Iterable[str] | None = None,
) -> PatientReports:
    """Write one self-contained HTML report per patient of a batch output folder.

    Parameters
    ----------
    batch_dir : path
        The ``--out`` folder of ``trichoscan batch`` (``images.csv``, ``sessions.csv``,
        ``changes.csv``, ``errors.csv``, ``batch.json`` and the ``.cache``).
    out_dir : path, optional
        Where the reports go (created); default ``batch_dir/report``. Each report is
        ``PATIENT.html`` (the id with characters unsafe in file names replaced by ``_``).
    patients : iterable of str, optional
        Only these patients (default: every patient of ``sessions.csv``/``images.csv``).

    Returns
    -------
    PatientReports
        The files written and the patients whose report failed (one failure never stops
        the others).

    Raises
    ------
    InputError
        If ``batch_dir`` is not a batch output folder, holds no patient (or none of
        ``patients``), or ``out_dir`` cannot be created.
    TrichoscanError
        If matplotlib is not installed.
    """
    batch_dir = Path(batch_dir)
    folder = _read_batch_folder(batch_dir)
    _require_matplotlib()
    everyone = folder.patients()
    chosen = None if patients is None else set(patients)
    wanted = everyone if chosen is None else [p for p in everyone if p in chosen]
    if not wanted:
        raise InputError(
            f"{batch_dir} holds no patient to report on"
            + ("" if chosen is None else f" among {', '.join(sorted(chosen))}")
        )
    out = batch_dir / "report" if out_dir is None else Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the report folder {out}: {exc.strerror or exc}; choose another"
        ) from None
    written: dict[str, Path] = {}
    failed: dict[str, str] = {}
    names: set[str] = set()
    for patient in wanted:
        name = _safe_filename(patient)
        for k in itertools.count(2):  # two ids that differ only in unsafe characters
            if name.lower() not in names:
                break
            name = f"{_safe_filename(patient)}-{k}"
        names.add(name.lower())
        try:
            page = _patient_html(folder, patient)
            written[patient] = write_atomic(out / f"{name}.html", page.encode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - one patient's failure must not stop the rest
            logger.debug("report of %s failed", patient, exc_info=True)
            reason = str(exc) if isinstance(exc, TrichoscanError | OSError) else repr(exc)
            failed[patient] = reason
    return PatientReports(out, written, failed)


# ------------------------------------------------------------------ values from the tables


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _flag(value: Any) -> bool | None:
    if value in (True, "True", "true", "1"):
        return True
    if value in (False, "False", "false", "0"):
        return False
    return None


def _fmt(metric: str, value: Any) -> str:
    x = _num(value)
    return "–" if x is None else _METRICS[metric][2].format(x)


def _fmt_signed(value: float | None, spec: str = "{:+.1f}") -> str:
    """Signed number with a true minus sign; no sign on a value that rounds to 0."""
    if value is None:
        return "–"
    text = spec.format(value)
    if float(text) == 0:
        text = text.lstrip("+-")
    return text.replace("-", "−")


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# ------------------------------------------------------------------ cached photos


def _load_photos(folder: _BatchFolder, rows: list[dict[str, str]]) -> list[_Photo]:
    """Rows of one session's photos, with their cached analyses and overlays."""
    from .batch import cached_overlay_path, load_cached_analysis

    keys = folder.settings.get("photos")
    keys = keys if isinstance(keys, dict) else {}
    photos = []
    for row in sorted(rows, key=lambda r: r["path"]):
        photo = _Photo(row)
        key = keys.get(photo.rel)
        if not isinstance(key, str):
            photo.overlay_note = "not in the batch's cache index: re-run `trichoscan batch`"
            photos.append(photo)
            continue
        try:
            photo.analysis = load_cached_analysis(folder.path, key)
        except Exception as exc:  # noqa: BLE001 - a damaged entry costs its picture only
            logger.info("cached analysis of %s unreadable: %s", photo.rel, exc)
        try:
            photo.overlay = cached_overlay_path(folder.path, key).read_bytes()
        except OSError:
            if photo.analysis is not None:
                # No pixels at hand: draw the hairs on grey rather than show nothing.
                grey = np.full((*photo.analysis.image_shape, 3), 0.82, np.float32)
                photo.overlay = overlay_jpeg(grey, photo.analysis)
                photo.overlay_note = "photo not in the cache: hairs drawn on grey"
            else:
                photo.overlay_note = "not in the batch's cache: re-run `trichoscan batch`"
        photos.append(photo)
    return photos


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail(jpeg: bytes) -> bytes:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return jpeg
    return encode_jpeg(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), max_side=_THUMB_MAX_SIDE)


# ------------------------------------------------------------------ plots


def _new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib figure on its own Agg canvas (pyplot's global state stays untouched).

    Margins are set by hand: a layout engine draws every figure twice.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Any, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    # No 'Software' chunk: the bytes depend on the data only.
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def _trend_png(sessions: list[dict[str, str]]) -> bytes:
    """Each metric over the sessions: value, 95 % CI band and the baseline level."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    fig = _new_figure(10.0, 6.4)
    axes = fig.subplots(2, 2).ravel()
    fig.subplots_adjust(left=0.07, right=0.985, top=0.95, bottom=0.14, hspace=0.42, wspace=0.17)
    dates = [_date(r["date"]) for r in sessions]
    pad_days = dt.timedelta(days=max(5.0, 0.05 * (dates[-1] - dates[0]).days))
    colour = _rgb(FIELD_COLOUR)
    for ax, (metric, (label, unit, _)) in zip(axes, _METRICS.items(), strict=True):
        ax.set_title(f"{label} ({unit})" if unit else label, fontsize=11)
        ax.grid(alpha=0.3)

        def col(suffix: str, metric: str = metric) -> np.ndarray:
            values = [_num(r.get(f"{metric}_{suffix}")) for r in sessions]
            return np.array([np.nan if v is None else v for v in values], float)

        value, low, high = col("value"), col("low"), col("high")
        if np.isnan(value).all():
            ax.text(
                0.5,
                0.5,
                "not available (no scale?)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.5",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        has_ci = ~np.isnan(low) & ~np.isnan(high)
        if has_ci.sum() >= 2:
            ax.fill_between(
                dates,
                low,
                high,
                where=has_ci,
                color=colour,
                alpha=0.18,
                linewidth=0,
                label="95 % CI",
            )
        err = np.vstack([np.where(has_ci, value - low, 0), np.where(has_ci, high - value, 0)])
        ax.errorbar(
            dates,
            value,
            yerr=err,
            fmt="-o",
            color=colour,
            ecolor=colour,
            capsize=4,
            markersize=6,
            linewidth=1.8,
            label="session estimate",
        )
        if not np.isnan(value[0]):
            ax.axhline(value[0], color="0.45", linestyle=":", linewidth=1, label="baseline")
        locator = mdates.AutoDateLocator(minticks=2, maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        # Every panel spans every session, also where a metric has fewer values.
        ax.set_xlim(dates[0] - pad_days, dates[-1] + pad_days)
        lo = np.nanmin(np.where(has_ci, low, value))
        hi = np.nanmax(np.where(has_ci, high, value))
        if metric == "terminal_vellus_ratio" and lo > 0:
            # Its CI is built on the log scale: symmetric there, and a ratio reads so.
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.25, hi * 1.25)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            continue
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-3)
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncols=3, frameon=False)
    return _figure_png(fig)


def _histogram_png(
    sessions: list[tuple[str, list[float], np.ndarray, float | None]],
    cutoffs: dict[str, float],
) -> bytes:
    """Width distribution of the measured hairs, one panel per session (% of hairs)."""
    n = len(sessions)
    height = 1.0 + 1.55 * n
    fig = _new_figure(10.0, height)
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, squeeze=False).ravel())
    fig.subplots_adjust(left=0.075, right=0.985, top=1 - 0.4 / height, bottom=0.6 / height)
    vellus_max = cutoffs.get("vellus_max_um", 30.0)
    terminal_min = cutoffs.get("terminal_min_um", 60.0)
    for ax, (date, edges, counts, mean) in zip(axes, sessions, strict=True):
        e = np.asarray(edges, float)
        total = counts.sum()
        pct = 100.0 * counts / total if total else counts
        centres = (e[:-1] + e[1:]) / 2
        colours = [
            _rgb(CLASS_COLOURS["vellus"])
            if c < vellus_max
            else _rgb(CLASS_COLOURS["terminal"])
            if c >= terminal_min
            else _rgb(CLASS_COLOURS["intermediate"])
            for c in centres
        ]
        ax.bar(
            e[:-1],
            pct,
            width=np.diff(e),
            align="edge",
            color=colours,
            edgecolor="white",
            linewidth=0.8,
        )
        for cut in (vellus_max, terminal_min):
            ax.axvline(cut, color="0.35", linestyle="--", linewidth=1)
        if mean is not None:
            ax.axvline(mean, color="black", linewidth=1.5)
        text = f"{date}\n{int(total)} widths measured" + (
            "" if mean is None else f", mean {mean:.1f} µm"
        )
        ax.text(0.99, 0.92, text, transform=ax.transAxes, ha="right", va="top", fontsize=9)
        ax.set_ylabel("% of hairs", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(e[0], e[-1])
    axes[0].set_title(
        f"vellus < {vellus_max:g} µm ≤ intermediate < {terminal_min:g} µm ≤ terminal "
        "(dashed); session mean (solid)",
        fontsize=10,
    )
    axes[-1].set_xlabel("hair width (µm; the last bin holds every wider hair)")
    return _figure_png(fig)


def _session_histogram(photos: list[_Photo]) -> tuple[list[float], np.ndarray] | None:
    """Pooled width histogram of a session's photos (same bins everywhere), or None."""
    edges: list[float] | None = None
    total: np.ndarray | None = None
    for photo in photos:
        hist = getattr(photo.analysis, "width_histogram", None)
        if not hist:
            continue
        counts = np.asarray(hist["counts"], float)
        if edges is None:
            edges, total = list(hist["edges_um"]), counts.copy()
        elif list(hist["edges_um"]) == edges:
            total = total + counts
    return None if edges is None else (edges, total)


# ------------------------------------------------------------------ HTML pieces


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scale_text(rows: list[dict[str, str]]) -> str:
    """The scale(s) of a session's photos: '2.8 µm/px (given)'."""
    seen = []
    for row in rows:
        um = _num(row.get("um_per_px"))
        source = row.get("calibration_source") or "none"
        text = f"{um:g} µm/px ({source})" if um is not None else "none"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "–"


def _sessions_table(sessions: list[dict[str, str]], images: list[dict[str, str]]) -> str:
    head = "".join(
        f"<th>{_esc(label)}{'<br><small>' + _esc(unit) + '</small>' if unit else ''}"
        "<br><small>95 % CI</small></th>"
        for label, unit, _ in _METRICS.values()
    )
    parts = [
        "<table class='sessions'><tr><th class='l'>Session</th><th>Photos</th><th>Hairs</th>"
        f"<th>Area<br><small>cm²</small></th>{head}<th class='l'>Scale</th></tr>"
    ]
    for k, row in enumerate(sessions):
        days = (_date(row["date"]) - _date(sessions[0]["date"])).days
        label = "baseline" if k == 0 else f"day {days}"
        failed = int(_num(row.get("n_failed")) or 0)
        photos = _esc(row.get("n_photos", "")) + (
            f" <small class='err'>({failed} failed)</small>" if failed else ""
        )
        area = _num(row.get("area_cm2"))
        cells = []
        for metric in _METRICS:
            value = _fmt(metric, row.get(f"{metric}_value"))
            low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
            ci = (
                f"<br><small>{_fmt(metric, low)} – {_fmt(metric, high)}</small>"
                if _num(low) is not None and _num(high) is not None
                else ""
            )
            cells.append(f"<td>{value}{ci}</td>")
        scale = _scale_text([r for r in images if r["date"] == row["date"]])
        parts.append(
            f"<tr><td class='l nw'><b>{_esc(row['date'])}</b><br><small>{label}</small></td>"
            f"<td>{photos}</td><td>{_esc(row.get('hair_count') or '–')}</td>"
            f"<td>{'–' if area is None else f'{area:.3f}'}</td>{''.join(cells)}"
            f"<td class='l'><small>{_esc(scale)}</small></td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _change_cell(row: dict[str, str], metric: str) -> str:
    before, after = row.get(f"{metric}_before"), row.get(f"{metric}_after")
    diff = _num(row.get(f"{metric}_diff"))
    if diff is None:
        return (
            f"<td><span class='na'>n/a</span><br><small>{_fmt(metric, before)} → "
            f"{_fmt(metric, after)}</small></td>"
        )
    pct = _num(row.get(f"{metric}_pct"))
    lo, hi = _num(row.get(f"{metric}_pct_low")), _num(row.get(f"{metric}_pct_high"))
    if pct is not None:
        headline = f"{_fmt_signed(pct)} %"
        ci = f"CI {_fmt_signed(lo)} to {_fmt_signed(hi)} %" if lo is not None else ""
    else:
        spec = _METRICS[metric][2].replace("{:", "{:+")
        headline = _fmt_signed(diff, spec)
        dlo, dhi = _num(row.get(f"{metric}_diff_low")), _num(row.get(f"{metric}_diff_high"))
        ci = f"CI {_fmt_signed(dlo, spec)} to {_fmt_signed(dhi, spec)}"
    significant = _flag(row.get(f"{metric}_significant"))
    exceeds = _flag(row.get(f"{metric}_exceeds_mdc"))
    badges = (
        "<span class='badge sig'>significant</span>"
        if significant
        else "<span class='badge ns'>not significant</span>"
        if significant is False
        else ""
    )
    badges += (
        " <span class='badge mdc'>exceeds MDC</span>"
        if exceeds
        else " <span class='badge nomdc'>within MDC</span>"
        if exceeds is False
        else " <span class='badge nomdc'>MDC not measured</span>"
    )
    return (
        f"<td><span class='delta'>{headline}</span><br><small>{ci}</small><br>"
        f"<small>{_fmt(metric, before)} → {_fmt(metric, after)}</small><br>{badges}</td>"
    )


def _fate_text(row: dict[str, str]) -> str:
    persisted = _num(row.get("fate_persisted"))
    if persisted is None:
        return "<span class='na'>no per-hair fate<br>(needs registration)</span>"
    parts = [
        f"{int(persisted)} persisted",
        f"{int(_num(row.get('fate_new')) or 0)} new",
        f"{int(_num(row.get('fate_lost')) or 0)} lost",
    ]
    for key, value in row.items():
        if key.startswith("fate_") and "_to_" in key and (_num(value) or 0) > 0:
            a, b = key.removeprefix("fate_").split("_to_")
            parts.append(f"{int(_num(value))} {a} → {b}")
    return "<br>".join(_esc(p) for p in parts)


def _changes_table(changes: list[dict[str, str]]) -> str:
    if not changes:
        return "<p class='na'>No change to show: one session only, or comparisons were off.</p>"
    head = "".join(f"<th>{_esc(label)}</th>" for label, _, _ in _METRICS.values())
    parts = [
        "<table class='changes'><tr><th class='l'>Session</th><th class='l'>Compared with</th>"
        f"<th class='l'>Same field?</th>{head}<th class='l'>Hairs (per-hair fate)</th></tr>"
    ]
    for row in changes:
        days = row.get("days", "")
        registered = _flag(row.get("registered"))
        overlap, quality = _num(row.get("overlap_fraction")), _num(row.get("registration_quality"))
        if registered:
            same = "registered"
            if overlap is not None:
                same += f"<br><small>overlap {overlap:.0%}</small>"
            if quality is not None:
                same += f"<br><small>quality {quality:.2f}</small>"
        else:
            same = "<span class='err'>not registered</span><br><small>whole fields</small>"
        hairs = f"{_esc(row.get('hairs_before', ''))} → {_esc(row.get('hairs_after', ''))}"
        parts.append(
            f"<tr><td class='l nw'><b>{_esc(row['date'])}</b></td>"
            f"<td class='l nw'>{_esc(row.get('reference', ''))}<br>"
            f"{_esc(row.get('reference_date', ''))}"
            f"<br><small>{_esc(days)} days</small></td><td class='l'>{same}</td>"
            + "".join(_change_cell(row, m) for m in _METRICS)
            + f"<td class='l'>{hairs}<br><small>{_fate_text(row)}</small></td></tr>"
        )
        if row.get("notes"):
            parts.append(
                f"<tr class='note'><td colspan='{4 + len(_METRICS)}'>{_esc(row['notes'])}</td></tr>"
            )
    parts.append("</table>")
    return "".join(parts)


def _figure_html(photo: _Photo, thumbnail: bool = False) -> str:
    row = photo.row
    density = _num(row.get("density_per_cm2"))
    caption = f"{photo.name}: {row.get('hair_count', '?')} hairs"
    if density is not None:
        caption += f", {density:.1f}/cm²"
    width = _num(row.get("mean_width_um"))
    if width is not None:
        caption += f", mean width {width:.1f} µm"
    extra = "; ".join(x for x in (row.get("quality_warnings", ""), photo.overlay_note) if x)
    note = f"<br><small class='err'>{_esc(extra)}</small>" if extra else ""
    if photo.overlay is None:
        body = "<div class='missing'>overlay not available</div>"
    else:
        data = _thumbnail(photo.overlay) if thumbnail else photo.overlay
        body = f"<img alt='overlay of {_esc(photo.rel)}' src='{_data_uri(data, 'image/jpeg')}'>"
    return f"<figure>{body}<figcaption>{_esc(caption)}{note}</figcaption></figure>"


def _photos_table(photos: list[_Photo]) -> str:
    columns = [
        ("hair_count", "Hairs", "{:.0f}"),
        ("visible_hair_count", "Visible", "{:.0f}"),
        ("density_per_cm2", "Density /cm²", "{:.1f}"),
        ("mean_width_um", "Mean width µm", "{:.1f}"),
        ("vellus_count", "Vellus", "{:.0f}"),
        ("intermediate_count", "Interm.", "{:.0f}"),
        ("terminal_count", "Terminal", "{:.0f}"),
        ("follicular_unit_count", "Units", "{:.0f}"),
        ("cumulative_thickness_mm_per_cm2", "Cum. thickness mm/cm²", "{:.2f}"),
    ]
    parts = [
        "<table class='photos'><tr><th class='l'>Photo</th>",
        *(f"<th>{_esc(label)}</th>" for _, label, _ in columns),
        "<th class='l'>Quality</th></tr>",
    ]
    for photo in photos:
        cells = []
        for key, _, spec in columns:
            x = _num(photo.row.get(key))
            cells.append(f"<td>{'–' if x is None else spec.format(x)}</td>")
        quality = photo.row.get("quality_warnings") or "ok"
        parts.append(
            f"<tr><td class='l'>{_esc(photo.rel)}</td>{''.join(cells)}"
            f"<td class='l'><small>{_esc(quality)}</small></td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


_LEGEND = (
    "<p class='legend'><small>Overlay colours:"
    + "".join(
        f"<span style='background:rgb{CLASS_COLOURS[k]}'></span>{label}"
        for k, label in (
            ("vellus", "vellus"),
            ("intermediate", "intermediate"),
            ("terminal", "terminal"),
            ("counted", "counted (no scale)"),
            ("not_counted", "visible, not counted"),
        )
    )
    + "; white circles: exit ends (follicles); blue line: analysed field.</small></p>"
)


def _site_html(folder: _BatchFolder, patient: str, site: str, anchor: str) -> tuple[str, set[str]]:
    """One site's section, and the schema versions of the analyses it showed."""
    sessions = sorted(
        (r for r in folder.sessions if r["patient"] == patient and r["site"] == site),
        key=lambda r: r["date"],
    )
    images = [r for r in folder.images if r["patient"] == patient and r["site"] == site]
    changes = sorted(
        (r for r in folder.changes if r["patient"] == patient and r["site"] == site),
        key=lambda r: (r["date"], r.get("reference") != "baseline"),
    )
    photos = {
        r["date"]: _load_photos(folder, [i for i in images if i["date"] == r["date"]])
        for r in sessions
    }
    schemas = {
        getattr(p.analysis, "schema_version", SCHEMA_VERSION)
        for ps in photos.values()
        for p in ps
        if p.analysis is not None
    }
    n_photos = sum(int(_num(r.get("n_photos")) or 0) for r in sessions)
    parts = [
        f"<section id='{anchor}'><h2>Site: {_esc(site)}</h2>",
        f"<p class='meta'>{len(sessions)} session{'s' if len(sessions) != 1 else ''}, "
        f"{n_photos} photo{'s' if n_photos != 1 else ''}",
    ]
    if len(sessions) == 1:
        parts.append(f", on {_esc(sessions[0]['date'])}")
    elif sessions:
        parts.append(f", {_esc(sessions[0]['date'])} to {_esc(sessions[-1]['date'])}")
    parts.append("</p><h3>Sessions (pooled photos, 95 % CI)</h3>")
    parts.append(_sessions_table(sessions, images))
    parts.append("<h3>Changes vs baseline and vs previous session</h3>")
    if changes:
        parts.append(
            "<p><small>Δ % with its 95 % CI; "
            "<span class='badge sig'>significant</span> the CI excludes 0; "
            "<span class='badge mdc'>exceeds MDC</span> |Δ %| is larger than the minimal "
            "detectable change (MDC95, re-photographing noise). Before → after are measured on "
            "the registered overlap of the two sessions' photos (whole fields when not "
            "registered), so they can differ from the session values above.</small></p>"
        )
    parts.append(_changes_table(changes))
    with_values = [r for r in sessions if _num(r.get("density_per_cm2_value")) is not None]
    if sessions:
        parts.append("<h3>Trends</h3>")
        if with_values or any(_num(r.get("mean_width_um_value")) is not None for r in sessions):
            png = _trend_png(sessions)
            parts.append(
                f"<img class='plot' alt='metric trends of {_esc(site)}' "
                f"src='{_data_uri(png, 'image/png')}'>"
            )
        else:
            parts.append(
                "<p class='na'>No session has a value to plot (densities and widths need "
                "a scale).</p>"
            )
    hists = []
    for r in sessions:
        pooled = _session_histogram(photos[r["date"]])
        if pooled is not None:
            hists.append((r["date"], pooled[0], pooled[1], _num(r.get("mean_width_um_value"))))
    parts.append("<h3>Hair width distribution per session</h3>")
    if hists:
        cutoffs = (folder.settings.get("config") or {}).get("cutoffs") or {}
        png = _histogram_png(hists, cutoffs)
        parts.append(
            f"<img class='plot' alt='width histograms of {_esc(site)}' "
            f"src='{_data_uri(png, 'image/png')}'>"
        )
    else:
        parts.append("<p class='na'>No widths in µm (no scale, or no cached analysis).</p>")

    if sessions:
        first, last = sessions[0]["date"], sessions[-1]["date"]
        title = "Overlays: baseline vs latest" if first != last else "Overlays"
        parts.append(f"<h3>{title}</h3>{_LEGEND}")
        if first == last:
            parts.append("<p class='na'>One session only: nothing to compare yet.</p>")
            parts.append("<div class='gallery'>")
            parts += [_figure_html(p) for p in photos[first]]
            parts.append("</div>")
        else:
            parts.append(
                f"<div class='pair'><h4>Baseline {_esc(first)}</h4><h4>Latest {_esc(last)}</h4>"
            )
            for b, a in itertools.zip_longest(photos[first], photos[last]):
                parts.append(_figure_html(b) if b else "<div></div>")
                parts.append(_figure_html(a) if a else "<div></div>")
            parts.append("</div>")
        if len(sessions) > 2:
            parts.append("<h3>Every session</h3>")
            for r in sessions:
                parts.append(f"<h4>{_esc(r['date'])}</h4><div class='gallery'>")
                parts += [_figure_html(p, thumbnail=True) for p in photos[r["date"]]]
                parts.append("</div>")
        parts.append("<h3>Photos</h3>")
        parts.append(_photos_table([p for r in sessions for p in photos[r["date"]]]))
    parts.append("</section>")
    return "".join(parts), schemas


def _settings_html(folder: _BatchFolder, patient: str, schemas: set[str]) -> str:
    from .comparison import MDC95_PCT

    s = folder.settings
    seg = s.get("segmenter") or {}
    config = s.get("config") or {}
    cal = s.get("calibration")
    rows = [r for r in folder.images if r["patient"] == patient]
    weights = sorted({r.get("weights_sha256") or "" for r in rows} - {""})
    weights_text = (
        ", ".join(weights)
        or seg.get("weights_sha256")
        or (
            "none (the classical segmenter has no weights)"
            if seg.get("name") == "classical"
            else "unknown"
        )
    )
    segmenter = str(seg.get("name", "unknown"))
    if seg.get("requested") and seg.get("requested") != seg.get("name"):
        segmenter += f" (requested: {seg['requested']})"
    if seg.get("note"):
        segmenter += f"; {seg['note']}"
    if isinstance(cal, dict):
        default = (
            f"{cal.get('um_per_px'):g} µm/px ({cal.get('source')})"
            if cal.get("um_per_px") is not None
            else f"none ({cal.get('source')})"
        )
        if cal.get("device"):
            default += f", device {cal['device']}"
    else:
        default = "none given: per photo (manifest, scale bar or device profile)"
    by_session: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        by_session.setdefault((r["site"], r["date"]), []).append(r)
    scales = "<br>".join(
        f"{_esc(site)} {_esc(date)}: {_esc(_scale_text(rs))}"
        + "".join(
            f" <small>{_esc(d)}</small>"
            for d in sorted({x.get("calibration_detail") or "" for x in rs} - {""})
        )
        for (site, date), rs in sorted(by_session.items())
    )
    cutoffs = config.get("cutoffs") or {}
    cut_text = (
        f"vellus < {cutoffs.get('vellus_max_um', '?')} µm ≤ intermediate < "
        f"{cutoffs.get('terminal_min_um', '?')} µm ≤ terminal; TrichoScan cut "
        f"{cutoffs.get('trichoscan_cut_um', '?')} µm"
    )
    mdc = ", ".join(
        f"{_METRICS[m][0]} {v:g} %" if v is not None else f"{_METRICS[m][0]} not measured"
        for m, v in MDC95_PCT.items()
    )
    items = [
        ("Segmenter", segmenter),
        ("Model weights SHA-256", weights_text),
        ("Count rule", config.get("count_rule", "unknown")),
        ("Width classes", cut_text),
        (
            "Shortest hair kept",
            f"{config.get('min_hair_length_widths', '?')} widths and "
            f"{config.get('min_hair_length_um', '?')} µm",
        ),
        ("Scale given to the batch", default),
        ("Scale per session", None),  # HTML, filled below
        (
            "Scale bar read when no scale is given",
            {True: "yes", False: "no"}.get(config.get("read_scale_from_photo"), "unknown"),
        ),
        ("MDC95 used", mdc),
        ("trichoscan version (batch)", s.get("trichoscan_version", "unknown")),
        ("Result schema", ", ".join(sorted(schemas)) or f"{SCHEMA_VERSION} (this version)"),
        ("Cache version", s.get("cache_version", "unknown")),
        ("Patient ids pseudonymised", "yes" if s.get("anonymised") else "no"),
        ("Report written by", f"trichoscan {__version__}"),
    ]
    parts = ["<dl class='settings'>"]
    for label, value in items:
        text = scales if value is None else _esc(value)
        parts.append(f"<dt>{_esc(label)}</dt><dd>{text or '–'}</dd>")
    parts.append("</dl>")
    parts.append(
        "<p><small>Session CIs combine the Poisson counting error of the hairs counted with "
        "a bootstrap over photos (3 or more photos); a change's CI adds the two sessions' "
        "errors as independent. See the README's <i>Statistics for before/after</i>."
        "</small></p>"
    )
    return "".join(parts)


def _patient_html(folder: _BatchFolder, patient: str) -> str:
    """The complete HTML page of one patient."""
    sites = sorted(
        {r["site"] for r in folder.sessions if r["patient"] == patient}
        | {r["site"] for r in folder.images if r["patient"] == patient}
    )
    sessions = [r for r in folder.sessions if r["patient"] == patient]
    n_sessions = len({(r["site"], r["date"]) for r in sessions})
    n_photos = sum(int(_num(r.get("n_photos")) or 0) for r in sessions)
    n_failed = sum(int(_num(r.get("n_failed")) or 0) for r in sessions)
    errors = [e for e in folder.errors if e.get("path", "").split("/", 1)[0] == patient]
    anchors = {site: f"site-{k}" for k, site in enumerate(sites)}
    sections, schemas = [], set()
    for site in sites:
        text, found = _site_html(folder, patient, site, anchors[site])
        sections.append(text)
        schemas |= found
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>trichoscan report: {_esc(patient)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>Patient {_esc(patient)}</h1><p class='meta' id='summary'>"
        f"{len(sites)} site{'s' if len(sites) != 1 else ''} · "
        f"{n_sessions} session{'s' if n_sessions != 1 else ''} · "
        f"{n_photos} photo{'s' if n_photos != 1 else ''}"
        + (f" · <span class='err'>{n_failed} could not be analysed</span>" if n_failed else "")
        + "</p>",
    ]
    if len(sites) > 1:
        parts.append(
            "<p>Sites: "
            + " · ".join(f"<a href='#{anchors[s]}'>{_esc(s)}</a>" for s in sites)
            + "</p>"
        )
    parts.append("</header>")
    parts += sections
    if errors:
        parts.append(
            "<section><h2>Problems</h2><table><tr><th class='l'>Photo or session</th>"
            "<th class='l'>Stage</th><th class='l'>Error</th></tr>"
        )
        parts += [
            f"<tr><td class='l'>{_esc(e.get('path', ''))}</td><td class='l'>"
            f"{_esc(e.get('stage', ''))}</td><td class='l err'>{_esc(e.get('error', ''))}</td></tr>"
            for e in errors
        ]
        parts.append("</table></section>")
    parts.append("<section><h2>Settings, model and calibration</h2>")
    parts.append(_settings_html(folder, patient, schemas))
    parts.append(
        f"</section><footer>trichoscan {_esc(__version__)} · measured, never assumed: "
        "every number above comes from the batch's tables.</footer></body></html>"
    )
    return "".join(parts)
