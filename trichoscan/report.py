"""Report writers: per-photo JSON, summary CSV, overlay PNG and an HTML index.

Every file is written atomically (temporary file + rename), so an interrupted run never
leaves a half-written result behind.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .metrics import Analysis

__all__ = [
    "CLASS_COLOURS",
    "write_atomic",
    "render_overlay",
    "write_png",
    "write_json",
    "write_csv",
    "write_html_index",
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
