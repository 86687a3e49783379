"""Short property-based fuzzing of the decoder path and the manifest reader.

A few seconds in the suite: :func:`~trichoscan.io.read_image` on random and mutated bytes
of valid PNG/JPEG/TIFF files, and :func:`~trichoscan.sessions.read_manifest` on random
CSV text, may only return a valid image / study or raise a typed
:class:`~trichoscan.errors.TrichoscanError`. Runs are derandomised so that the suite is
reproducible; longer, coverage-guided runs are described in ``benchmarks/fuzz_atheris.py``.
"""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from trichoscan import synth
from trichoscan.errors import TrichoscanError
from trichoscan.io import read_image
from trichoscan.sessions import Study, read_manifest

# Pillow warns (UserWarning) about the corrupt EXIF and TIFF tags it meets here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.cache
def _seed_files() -> tuple[bytes, ...]:
    """Small valid files of each decoder path: PNG 8/16-bit, grey, JPEG (+EXIF), TIFF."""
    rgb = synth.render(4343, synth.SynthConfig(height=128, width=160)).image[:32, :40]
    exif = Image.Exif()
    exif[0x0112] = 6
    files = []
    for image, fmt, kw in [
        (Image.fromarray(rgb), "PNG", {}),
        (Image.fromarray(rgb).convert("L"), "PNG", {}),
        (Image.fromarray(rgb).convert("P"), "PNG", {}),
        (Image.fromarray(rgb), "JPEG", {"quality": 90, "exif": exif}),
        (Image.fromarray(rgb).convert("CMYK"), "JPEG", {}),
        (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "TIFF", {}),
        (Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF", {}),
        (Image.fromarray(rgb), "BMP", {}),
    ]:
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        files.append(buf.getvalue())
    import cv2  # 16-bit colour PNG goes through OpenCV, not Pillow

    files.append(cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes())
    return tuple(files)


def _check_read(data: bytes) -> None:
    try:
        rgb = read_image(data)
    except TrichoscanError as exc:
        assert str(exc)  # a message for the user, never empty
        return
    assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert np.isfinite(rgb).all() and float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check_read(data)


@FUZZ
@given(
    st.integers(0, 8),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_images(which: int, flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(_seed_files()[which])
    # Mutations favour the first 64 bytes, where the headers (and their sizes) are.
    for pos, value in flips:
        data[pos % (64 if pos % 2 else len(data))] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _check_read(bytes(data))


_CELL = st.one_of(
    st.sampled_from(
        ["a.jpg", "P1", "vertex", "2026-01-05", "5", "0", "nan", "1e400", "-3", "dino-lite", ""]
    ),
    st.text(max_size=12),
)
_COLUMNS = st.lists(
    st.sampled_from(["path", "patient", "site", "date", "um_per_px", "device", "extra"]),
    min_size=1,
    max_size=7,
)


@settings(FUZZ, max_examples=60)
@given(_COLUMNS, st.lists(st.lists(_CELL, max_size=8), max_size=5), st.text(max_size=40))
def test_manifest_reader(columns: list[str], rows: list[list[str]], junk: str) -> None:
    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text

    lines = [",".join(columns)] + [",".join(cell(c) for c in row) for row in rows] + [junk]
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "study.csv"
        manifest.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        try:
            study = read_manifest(manifest)
        except TrichoscanError as exc:
            assert str(exc)
            return
        assert isinstance(study, Study) and study.photos()
