"""Bad-input corpus: every unusual or broken input gets an exact, typed answer.

Each case is generated here (in ``tmp_path``) and asserts the exact outcome twice: through
the library (:func:`trichoscan.analyze` returns a sane result or raises exactly the
expected :class:`~trichoscan.errors.TrichoscanError` subclass) and through the CLI (exit
code 0 or 4, and one ``error:`` line on stderr, never a traceback). Model files, manifests,
scales, arrays and output folders have their own tests below.

A case that exposes a known bug carries ``bug="file: what"`` and is a strict xfail: it
fails loudly once the bug is fixed, so that the mark is removed and the case guards the fix.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import trichoscan
from trichoscan import synth
from trichoscan.cli import app
from trichoscan.errors import (
    EXIT_FAILED,
    EXIT_OK,
    CalibrationError,
    ImageReadError,
    InputError,
    ModelError,
    TrichoscanError,
)
from trichoscan.io import MAX_PIXELS, read_image
from trichoscan.sessions import read_manifest

runner = CliRunner()
SEED = 4242  # renderer seeds 0-99999 are free for tests (benchmarks/seeds.toml)
SKIN = (224, 176, 152)


@functools.cache
def _photo() -> np.ndarray:
    """A small rendered photo (uint8 RGB), rendered once per test session."""
    image = synth.render(SEED, synth.SynthConfig(height=128, width=160)).image
    image.setflags(write=False)
    return image


def _save(path: Path, array: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kw)
    return path


def _jpeg_bytes(array: np.ndarray | None = None, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(_photo() if array is None else array).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _png_bytes(array: np.ndarray | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(_photo() if array is None else array).save(buf, "PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB but holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


@functools.cache
def _png_bomb(side: int) -> bytes:
    """A valid all-black 8-bit grey PNG of ``side`` x ``side``: tiny file, huge image."""
    row = b"\x00" * (side + 1)  # filter byte + pixels
    n, rest = divmod(side, 256)
    block = row * 256
    # Deflate one block after a full flush, then repeat its bytes: identical blocks give
    # identical output, so the file is built in milliseconds instead of compressing 110 MB.
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(row * rest) + comp.flush()
    adler = 1
    for _ in range(n):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\xda" + chunk * n + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The rendered photo as JPEG with its SOF header patched to claim another size."""
    data = bytearray(_jpeg_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_bad_second_ifd() -> bytes:
    """A valid TIFF whose 'next IFD' pointer leads to an empty, size-less directory."""
    import io

    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    data[ifd + 2 + 12 * n : ifd + 6 + 12 * n] = struct.pack("<I", len(data))
    return bytes(data + b"\0" * 6)


def _exif_jpeg(path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(path, _photo(), "JPEG", quality=95, exif=exif)


def _with_alpha(alpha: int) -> np.ndarray:
    a = np.full(_photo().shape[:2] + (1,), alpha, np.uint8)
    return np.concatenate([_photo(), a], axis=2)


def _uniform(value: tuple[int, int, int], noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    img = np.empty((128, 160, 3), np.float32)
    img[:] = value
    if noise:
        img += rng.normal(0.0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _all_hair() -> np.ndarray:
    """Dense dark hairs side by side: the hair mask covers (almost) the whole field."""
    img = _uniform(SKIN)
    for x in range(2, 160, 7):
        img[:, x : x + 5] = (40, 28, 22)
    return img


def _glare() -> np.ndarray:
    img = _photo().copy()
    cv2.circle(img, (80, 64), 40, (255, 255, 255), -1)
    return img


def _float_tiff(path: Path, poison: float | None = None, scale: float = 1.0) -> Path:
    grey = _photo().mean(axis=2).astype(np.float32) / 255.0 * scale
    if poison is not None:
        grey[10:20, 10:20] = poison
    return _save(path, grey, "TIFF")


def _save_mode(path: Path, mode: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(_photo())
    img = img.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else img.convert(mode)
    img.save(path, **kw)
    return path


def _with_nan(array: np.ndarray) -> np.ndarray:
    array[5:9, 5:9] = np.nan
    return array


def _cv2_write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)
    return path


# --------------------------------------------------------------------------- checks


def _close_to_photo(tol: float) -> Callable[[np.ndarray], None]:
    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == _photo().shape
        assert float(np.abs(rgb - _photo() / 255.0).mean()) < tol

    return check


def _grey_of_photo(tol: float) -> Callable[[np.ndarray], None]:
    def check(rgb: np.ndarray) -> None:
        grey = _photo().mean(axis=2) / 255.0
        assert np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2])
        assert float(np.abs(rgb[..., 0] - grey).mean()) < tol

    return check


def _white(rgb: np.ndarray) -> None:
    assert float(rgb.min()) > 0.99  # transparent composited over white, never black


def _oriented(orientation: int) -> Callable[[np.ndarray], None]:
    # The EXIF spec's display transforms, written out independently of Pillow.
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }

    def check(rgb: np.ndarray) -> None:
        expected = transforms[orientation](_photo() / 255.0)
        assert rgb.shape == expected.shape
        assert float(np.abs(rgb - expected).mean()) < 0.02  # JPEG loss only

    return check


@dataclass(frozen=True)
class Case:
    """One generated input and its exact expected outcome.

    ``expect`` is ``None`` when the photo must be analysed, else the exact error class.
    ``pixels`` checks what :func:`read_image` returns; ``result`` checks the analysis.
    """

    id: str
    make: Callable[[Path], Path]
    expect: type[TrichoscanError] | None = None
    pixels: Callable[[np.ndarray], None] | None = None
    result: Callable[[trichoscan.Analysis], None] | None = None
    named: bool = True  # the library's message names the file (read errors do)
    bug: str | None = None  # a known bug (file: what); the case is a strict xfail until fixed
    bug_in_cli: bool = True  # whether the bug also shows through the CLI


def _no_hairs(result: trichoscan.Analysis) -> None:
    assert result.hair_count == 0 and result.visible_hair_count == 0


def _glare_flagged(result: trichoscan.Analysis) -> None:
    assert result.quality.glare_fraction > 0.2
    assert any("glare" in w for w in result.quality.warnings)


CASES = [
    # --- empty, truncated, not an image
    Case("zero-byte.jpg", lambda d: _write(d / "a.jpg", b""), ImageReadError),
    Case("zero-byte.png", lambda d: _write(d / "a.png", b""), ImageReadError),
    Case("zero-byte.tif", lambda d: _write(d / "a.tif", b""), ImageReadError),
    Case(
        "jpeg-cut-60%",
        lambda d: _write(d / "a.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) * 3 // 5]),
        ImageReadError,
    ),
    Case("jpeg-header-only", lambda d: _write(d / "a.jpg", _jpeg_bytes()[:300]), ImageReadError),
    Case(
        "png-cut-60%",
        lambda d: _write(d / "a.png", _png_bytes()[: len(_png_bytes()) * 3 // 5]),
        ImageReadError,
    ),
    Case("png-signature-only", lambda d: _write(d / "a.png", _png_bytes()[:8]), ImageReadError),
    Case("png-no-idat", lambda d: _write(d / "a.png", _png_header_only(160, 128)), ImageReadError),
    Case(
        "png-bad-crc",
        lambda d: _write(d / "a.png", _png_bytes()[:-20] + b"\0" * 8 + _png_bytes()[-12:]),
        ImageReadError,
    ),
    Case(
        "text-named.jpg",
        lambda d: _write(d / "a.jpg", b"patient notes, not a photo\n" * 20),
        ImageReadError,
    ),
    Case(
        "html-named.png",
        lambda d: _write(d / "a.png", b"<!DOCTYPE html><html>404</html>"),
        ImageReadError,
    ),
    Case(
        "random-bytes.tif",
        lambda d: _write(d / "a.tif", np.random.default_rng(1).bytes(4096)),
        ImageReadError,
    ),
    Case(
        "tiff-bad-second-ifd",
        lambda d: _write(d / "a.tif", _tiff_bad_second_ifd()),
        ImageReadError,
    ),
    Case("missing-file", lambda d: d / "nowhere" / "a.jpg", ImageReadError),
    # --- wrong extension: the format comes from the content
    Case(
        "png-named.jpg", lambda d: _write(d / "a.jpg", _png_bytes()), pixels=_close_to_photo(1e-6)
    ),
    Case(
        "jpeg-named.png", lambda d: _write(d / "a.png", _jpeg_bytes()), pixels=_close_to_photo(0.03)
    ),
    Case(
        "jpeg-named.tif", lambda d: _write(d / "a.tif", _jpeg_bytes()), pixels=_close_to_photo(0.03)
    ),
    Case(
        "jpeg-no-suffix", lambda d: _write(d / "photo", _jpeg_bytes()), pixels=_close_to_photo(0.03)
    ),
    Case(
        "jpeg-trailing-junk",
        lambda d: _write(d / "a.jpg", _jpeg_bytes() + b"\0junk" * 50),
        pixels=_close_to_photo(0.03),
    ),
    # --- sizes
    Case("1x1", lambda d: _save(d / "a.png", _photo()[:1, :1]), InputError),
    Case("15x15", lambda d: _save(d / "a.png", _photo()[:15, :15]), InputError),
    Case("16x16", lambda d: _save(d / "a.png", _photo()[:16, :16])),
    Case("5x5000", lambda d: _save(d / "a.png", np.full((5000, 5, 3), 200, np.uint8)), InputError),
    Case("5000x5", lambda d: _save(d / "a.png", np.full((5, 5000, 3), 200, np.uint8)), InputError),
    Case("20x400-aspect-limit", lambda d: _save(d / "a.png", np.resize(_photo(), (20, 400, 3)))),
    Case(
        "png-header-100000x100000",
        lambda d: _write(d / "a.png", _png_header_only(100_000, 100_000)),
        ImageReadError,
    ),
    Case(
        "png-header-above-limit",
        lambda d: _write(d / "a.png", _png_header_only(12_000, 9_000)),
        ImageReadError,
    ),
    Case(
        "jpeg-header-60000x60000",
        lambda d: _write(d / "a.jpg", _jpeg_claiming(60_000, 60_000)),
        ImageReadError,
    ),
    Case("png-bomb-10500x10500", lambda d: _write(d / "a.png", _png_bomb(10_500)), ImageReadError),
    # --- bit depths and modes
    Case(
        "grey-8bit.jpg",
        lambda d: _save(d / "a.jpg", _photo().mean(axis=2).astype(np.uint8), quality=95),
        pixels=_grey_of_photo(0.02),
    ),
    Case(
        "grey-16bit.png",
        lambda d: _cv2_write(d / "a.png", (_photo().mean(axis=2) * 257).astype(np.uint16)),
        pixels=_grey_of_photo(0.005),
    ),
    Case(
        "grey-16bit.tif",
        lambda d: _cv2_write(d / "a.tif", (_photo().mean(axis=2) * 257).astype(np.uint16)),
        pixels=_grey_of_photo(0.005),
    ),
    Case(
        "rgb-16bit.png",
        lambda d: _cv2_write(d / "a.png", _photo().astype(np.uint16) * 257),
        pixels=_close_to_photo(1e-6),
    ),
    Case(
        "rgb-16bit.tif",
        lambda d: _cv2_write(d / "a.tif", _photo().astype(np.uint16) * 257),
        pixels=_close_to_photo(1e-6),
    ),
    Case("float.tif", lambda d: _float_tiff(d / "a.tif"), pixels=_grey_of_photo(0.005)),
    Case(
        "float-rgb.tif",
        lambda d: _cv2_write(d / "a.tif", _photo().astype(np.float32) / 255),
        pixels=_close_to_photo(1e-6),
    ),
    Case(
        "float-rgb-nan.tif",
        lambda d: _cv2_write(d / "a.tif", _with_nan(_photo().astype(np.float32) / 255)),
        InputError,
    ),
    Case("float-nan.tif", lambda d: _float_tiff(d / "a.tif", np.nan), InputError),
    Case("float-inf.tif", lambda d: _float_tiff(d / "a.tif", np.inf), InputError),
    Case("float-0..255.tif", lambda d: _float_tiff(d / "a.tif", scale=255.0), InputError),
    Case(
        "rgba-opaque.png",
        lambda d: _save(d / "a.png", _with_alpha(255)),
        pixels=_close_to_photo(1e-6),
    ),
    Case(
        "rgba-transparent.png",
        lambda d: _save(d / "a.png", _with_alpha(0)),
        InputError,  # composited over white: a blank photo
        pixels=_white,
        named=False,
    ),
    Case("palette.png", lambda d: _save_mode(d / "a.png", "P"), pixels=_close_to_photo(0.03)),
    Case(
        "palette-transparent.png",
        lambda d: _save_mode(d / "a.png", "P", transparency=0),
        pixels=_close_to_photo(0.05),
    ),
    Case("grey-alpha.png", lambda d: _save_mode(d / "a.png", "LA"), pixels=_grey_of_photo(0.01)),
    Case(
        "cmyk.jpg",
        lambda d: _save_mode(d / "a.jpg", "CMYK", quality=95),
        pixels=_close_to_photo(0.03),
    ),
    # Only pure black and white pixels: nothing in the usable grey range.
    Case("bilevel.png", lambda d: _save_mode(d / "a.png", "1"), InputError, named=False),
    Case("bmp", lambda d: _save(d / "a.bmp", _photo()), pixels=_close_to_photo(1e-6)),
    # --- EXIF orientations
    *(
        Case(
            f"exif-orientation-{k}",
            functools.partial(lambda d, k: _exif_jpeg(d / "a.jpg", k), k=k),
            pixels=_oriented(k),
        )
        for k in range(1, 9)
    ),
    # --- content extremes
    Case("all-black", lambda d: _save(d / "a.png", _uniform((0, 0, 0))), InputError, named=False),
    Case(
        "all-white",
        lambda d: _save(d / "a.png", _uniform((255, 255, 255))),
        InputError,
        named=False,
    ),
    Case("no-hair-skin", lambda d: _save(d / "a.png", _uniform(SKIN, noise=3.0)), result=_no_hairs),
    # No skin visible: refused as having no analysable field (see the module notes).
    Case("all-hair", lambda d: _save(d / "a.png", _all_hair()), InputError, named=False),
    Case("saturated-glare", lambda d: _save(d / "a.png", _glare()), result=_glare_flagged),
    # --- paths
    Case("non-ascii-path", lambda d: _save(d / "Pätiënt Ünïcødé 頭皮" / "föto_ß.jpg", _photo())),
    Case("spaces-in-path", lambda d: _save(d / "my scalp photos" / "visit 1 photo.jpg", _photo())),
    Case(
        "folder-named.jpg",
        lambda d: (d / "a.jpg").mkdir(parents=True) or d / "a.jpg",
        ImageReadError,
    ),
]


def _params(cases: list[Case], cli: bool = False) -> list:
    params = []
    for c in cases:
        bug = c.bug if c.bug and (c.bug_in_cli or not cli) else None
        marks = pytest.mark.xfail(strict=True, reason=bug) if bug else ()
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _params(CASES))
def test_library(case: Case, tmp_path: Path) -> None:
    path = case.make(tmp_path)
    if case.pixels is not None:
        rgb = read_image(path)
        assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0
        case.pixels(rgb)
    if case.expect is not None:
        with pytest.raises(TrichoscanError) as info:
            trichoscan.analyze(path, segmenter="classical")
        assert type(info.value) is case.expect, repr(info.value)
        message = str(info.value)
        assert "\n" not in message and len(message) < 400
        if case.named:
            assert str(path) in message
        return
    rgb = read_image(path)
    result = trichoscan.analyze(path, segmenter="classical")
    assert result.mask.shape == rgb.shape[:2]
    assert 0 <= result.hair_count <= result.visible_hair_count
    # No scale was given: it is read from the photo or left unknown, never guessed.
    assert result.calibration.source in ("none", "photo")
    if result.calibration.source == "none":
        assert result.density_per_cm2 is None and result.mean_width_um is None
    json.loads(result.to_json(), parse_constant=_reject_constant)
    if case.result is not None:
        case.result(result)


def _reject_constant(name: str) -> None:
    raise AssertionError(f"JSON holds {name}: not standard JSON")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _assert_clean(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


@pytest.mark.parametrize("case", _params(CASES, cli=True))
def test_cli(case: Case, tmp_path: Path) -> None:
    path = case.make(tmp_path / "in")
    out = tmp_path / "out"
    args = ["analyze", str(path), "--out", str(out), "--um-per-px", "5", "--segmenter", "classical"]
    result = runner.invoke(app, args)
    _assert_clean(result)
    if case.expect is None:
        assert result.exit_code == EXIT_OK, result.stderr
        assert _error_lines(result.stderr) == []
        assert len(list(out.rglob("*.json"))) == 1
        assert len(list(out.rglob("*_overlay.png"))) == 1
    else:
        assert result.exit_code == EXIT_FAILED, result.stderr
        lines = _error_lines(result.stderr)
        assert len(lines) == 1, result.stderr
        assert path.name in lines[0]


# --------------------------------------------------------------------------- memory


def test_huge_images_are_refused_before_decoding(tmp_path: Path) -> None:
    """Header bombs and a real decompression bomb are refused with little memory used."""
    header = _write(tmp_path / "header.png", _png_header_only(100_000, 100_000))
    bomb = _write(tmp_path / "bomb.png", _png_bomb(10_500))
    assert bomb.stat().st_size < 200_000 and 10_500**2 > MAX_PIXELS
    # A fresh interpreter, so that its peak RSS measures only these reads.
    script = textwrap.dedent(
        """
        import resource, sys
        from trichoscan.errors import ImageReadError
        from trichoscan.io import read_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in sys.argv[1:]:
            try:
                read_image(path)
            except ImageReadError:
                pass
            else:
                raise SystemExit(f"{path} was decoded")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(before, after)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(header), str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    before_kb, after_kb = map(int, proc.stdout.split())
    # Decoding the bomb would take 110 MB as grey and 1.3 GB as float RGB.
    assert after_kb - before_kb < 40_000, (before_kb, after_kb)


def test_bomb_under_the_pixel_limit_is_not_decoded(tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        if self.size[0] * self.size[1] > 50_000_000:
            decoded.append(self.size)
            raise OSError("decoding blocked by the test")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    path = _write(tmp_path / "bomb.png", _png_bomb(9_000))
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageReadError):
        read_image(path)
    assert decoded == []


def test_postscript_is_never_handed_to_ghostscript(tmp_path: Path, monkeypatch) -> None:
    import PIL.EpsImagePlugin as eps

    calls = []

    def fake_ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("Ghostscript blocked by the test")

    monkeypatch.setattr(eps, "Ghostscript", fake_ghostscript)
    eps_file = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    path = _write(tmp_path / "a.jpg", eps_file)
    with pytest.raises(ImageReadError):
        read_image(path)
    assert calls == []


def test_missing_model_via_cli(tmp_path: Path) -> None:
    """``--segmenter unet`` with a model folder without weights: one line, exit 4."""
    empty = tmp_path / "no-model"
    empty.mkdir()
    photo = _save(tmp_path / "a.png", _photo())
    args = ["analyze", str(photo), "--out", str(tmp_path / "o"), "--segmenter", "unet"]
    result = runner.invoke(app, [*args, "--model", str(empty)])
    _assert_clean(result)
    assert result.exit_code == EXIT_FAILED and len(_error_lines(result.stderr)) == 1
    assert "weights" in result.stderr.lower()
    with pytest.raises(ModelError):
        trichoscan.Pipeline(trichoscan.PipelineConfig(segmenter="unet", model_dir=empty))


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(
    ("calibration", "flag"),
    [
        (0.01, ["--um-per-px", "0.01"]),
        (500.0, ["--um-per-px", "500"]),
        (-5.0, ["--um-per-px", "-5"]),
        (float("nan"), ["--um-per-px", "nan"]),
        ("no-such-scope", ["--device", "no-such-scope"]),
    ],
    ids=["0.01um", "500um", "negative", "nan", "unknown-device"],
)
def test_bad_calibration(calibration, flag, tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", _photo())
    with pytest.raises(CalibrationError) as info:
        trichoscan.analyze(path, calibration=calibration, segmenter="classical")
    assert type(info.value) is CalibrationError
    result = runner.invoke(app, ["analyze", str(path), "--out", str(tmp_path / "o"), *flag])
    _assert_clean(result)
    assert result.exit_code == EXIT_FAILED and len(_error_lines(result.stderr)) == 1


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.int32),
        np.zeros((64, 64, 5), np.uint8),
        np.zeros(64, np.uint8),
        np.full((64, 64, 3), 200.0, np.float32),
        [[0, 1], [1, 0]],
        "",
    ],
    ids=["int32", "5-channels", "1-d", "float-0..255", "list", "empty-path"],
)
def test_bad_arrays(image) -> None:
    with pytest.raises(InputError):
        trichoscan.analyze(image, segmenter="classical")


# --------------------------------------------------------------------------- output folder


def _chmod_is_effective(folder: Path) -> bool:
    """False when running as root (or on a file system where modes are not enforced)."""
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").write_bytes(b"")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_unwritable_output_folder(tmp_path: Path) -> None:
    photo = _save(tmp_path / "in" / "a.png", _photo())
    if _chmod_is_effective(tmp_path):
        out = tmp_path / "readonly"
        out.mkdir()
        out.chmod(0o555)
    else:  # root ignores modes: a folder that cannot exist (under a regular file) instead
        blocker = _write(tmp_path / "a-file", b"x")
        out = blocker / "out"
    try:
        args = ["analyze", str(photo), "--out", str(out), "--um-per-px", "5"]
        result = runner.invoke(app, [*args, "--segmenter", "classical"])
        _assert_clean(result)
        assert result.exit_code == EXIT_FAILED
        assert len(_error_lines(result.stderr)) == 1, result.stderr
        batch = runner.invoke(app, ["batch", str(tmp_path / "in"), "--out", str(out)])
        _assert_clean(batch)
        assert batch.exit_code == EXIT_FAILED
        assert len(_error_lines(batch.stderr)) == 1, batch.stderr
    finally:
        if out.parent.is_dir():
            out.parent.chmod(0o755)
        if out.is_dir():
            out.chmod(0o755)


def test_output_folder_without_write_permission(tmp_path: Path, monkeypatch) -> None:
    """As a non-root user sees a read-only folder (simulated: root ignores modes)."""
    from trichoscan.batch import run_batch

    photo = _save(tmp_path / "study" / "P1" / "vertex" / "2026-01-01" / "a.png", _photo())
    out = tmp_path / "out"
    out.mkdir()
    real_access = os.access

    def access(path, mode, **kw) -> bool:
        if Path(path) == out and mode & os.W_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    result = runner.invoke(app, ["analyze", str(photo), "--out", str(out), "--um-per-px", "5"])
    _assert_clean(result)
    assert result.exit_code == EXIT_FAILED and len(_error_lines(result.stderr)) == 1
    with pytest.raises(InputError, match="not writable"):
        run_batch(tmp_path / "study", out, calibration=5.0)


def test_unwritable_output_folder_library(tmp_path: Path) -> None:
    from trichoscan.batch import run_batch

    study = tmp_path / "study"
    _save(study / "P1" / "vertex" / "2026-01-01" / "a.png", _photo())
    blocker = _write(tmp_path / "a-file", b"x")
    with pytest.raises(InputError):
        run_batch(study, blocker / "out", calibration=5.0)


# --------------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from trichoscan.segmentation import unet

    folder = tmp_path_factory.mktemp("model")
    net = unet.build_unet({"base_channels": 4, "depth": 2})
    return unet.save_model(net, {"note": "test model"}, folder)


def _model_copy(good: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("weights.pt", "model_card.json"):
        (dest / name).write_bytes((good / name).read_bytes())
    return dest


def _set_card(folder: Path, **changes) -> None:
    card = json.loads((folder / "model_card.json").read_text())
    card.update(changes)
    (folder / "model_card.json").write_text(json.dumps(card))


def _truncate_weights(folder: Path) -> None:
    data = (folder / "weights.pt").read_bytes()
    (folder / "weights.pt").write_bytes(data[: len(data) // 2])


def _garbage_weights_matching_card(folder: Path) -> None:
    import hashlib

    junk = np.random.default_rng(3).bytes(5000)
    (folder / "weights.pt").write_bytes(junk)
    _set_card(folder, sha256=hashlib.sha256(junk).hexdigest())


def _truncated_weights_matching_card(folder: Path) -> None:
    import hashlib

    _truncate_weights(folder)
    _set_card(folder, sha256=hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest())


def _other_architecture(folder: Path) -> None:
    _set_card(folder, architecture={"name": "unet", "base_channels": 8, "depth": 2})


MODEL_CASES = {
    "truncated-weights": _truncate_weights,
    "checksum-mismatch": lambda f: _set_card(f, sha256="0" * 64),
    "corrupt-weights-checksum-ok": _garbage_weights_matching_card,
    "truncated-weights-checksum-ok": _truncated_weights_matching_card,
    "card-not-json": lambda f: (f / "model_card.json").write_text("{not json"),
    "card-wrong-format": lambda f: _set_card(f, format="keras"),
    "card-missing": lambda f: (f / "model_card.json").unlink(),
    "weights-missing": lambda f: (f / "weights.pt").unlink(),
    "weights-other-architecture": _other_architecture,
}


def test_good_model_loads(good_model: Path) -> None:
    from trichoscan.segmentation import unet

    model = unet.load_model(good_model, device="cpu")
    assert len(model.sha256) == 64


@pytest.mark.parametrize(
    "damage",
    [k for k in MODEL_CASES],
)
def test_bad_model(damage: str, good_model: Path, tmp_path: Path) -> None:
    from trichoscan.pipeline import Pipeline, PipelineConfig
    from trichoscan.segmentation import unet

    folder = _model_copy(good_model, tmp_path / "model")
    MODEL_CASES[damage](folder)
    with pytest.raises(ModelError) as info:
        unet.load_model(folder, device="cpu")
    assert type(info.value) is ModelError and "\n" not in str(info.value)
    with pytest.raises(ModelError):
        Pipeline(PipelineConfig(segmenter="unet", model_dir=folder))


# --------------------------------------------------------------------------- manifests

_HEADER = "path,patient,site,date,um_per_px,device\n"
MANIFESTS = {
    "missing-column": "path,patient,date\na.png,P1,2026-01-01\n",
    "bad-date": _HEADER + "a.png,P1,vertex,2026-13-45,5,\n",
    "date-not-iso": _HEADER + "a.png,P1,vertex,01/02/2026,5,\n",
    "scale-not-a-number": _HEADER + "a.png,P1,vertex,2026-01-01,five,\n",
    "scale-implausible": _HEADER + "a.png,P1,vertex,2026-01-01,0.01,\n",
    "scale-and-device": _HEADER + "a.png,P1,vertex,2026-01-01,5,dino-lite\n",
    "extra-cells": _HEADER + "a.png,P1,vertex,2026-01-01,5,,surplus\n",
    "empty-patient": _HEADER + "a.png,,vertex,2026-01-01,5,\n",
    "header-only": _HEADER,
    "empty-file": "",
    "listed-twice": _HEADER + "a.png,P1,vertex,2026-01-01,5,\na.png,P1,vertex,2026-01-01,5,\n",
    "column-twice": "path,patient,site,date,path\na.png,P1,vertex,2026-01-01,b.png\n",
    "nul-in-path": _HEADER + "a\x00.png,P1,vertex,2026-01-01,5,\n",
    "huge-field": _HEADER + "a.png,P1,vertex,2026-01-01,5," + "x" * 200_000 + "\n",
}


@pytest.mark.parametrize("name", [*MANIFESTS, "not-utf8"], ids=[*MANIFESTS, "not-utf8"])
def test_malformed_manifest(name: str, tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _photo())
    manifest = tmp_path / "study.csv"
    if name == "not-utf8":
        manifest.write_bytes(_HEADER.encode() + b"a.png,P\xe9\xff1,vertex,2026-01-01,5,\n")
    else:
        manifest.write_text(MANIFESTS[name], encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_manifest(manifest)
    assert type(info.value) is InputError and "study.csv" in str(info.value)
    result = runner.invoke(app, ["batch", str(manifest), "--out", str(tmp_path / "o")])
    _assert_clean(result)
    assert result.exit_code == EXIT_FAILED
    assert len(_error_lines(result.stderr)) == 1, result.stderr


@pytest.mark.parametrize(
    "row",
    ["missing.png,P1,vertex,2026-01-01,5,", "a.png,P1,vertex,2026-01-01,,no-such-scope"],
    ids=["photo-missing", "unknown-device"],
)
def test_manifest_row_failing_at_batch_time(row: str, tmp_path: Path) -> None:
    """Readable manifest, unusable photo: the batch reports it in errors.csv, exit 4."""
    _save(tmp_path / "a.png", _photo())
    manifest = tmp_path / "study.csv"
    manifest.write_text(_HEADER + row + "\n", encoding="utf-8")
    assert len(read_manifest(manifest).photos()) == 1
    out = tmp_path / "o"
    result = runner.invoke(app, ["batch", str(manifest), "--out", str(out), "--no-compare"])
    _assert_clean(result)
    assert result.exit_code == EXIT_FAILED
    errors = (out / "errors.csv").read_text(encoding="utf-8").splitlines()
    assert len(errors) == 2 and errors[1].startswith(row.split(",")[0])
    assert os.path.getsize(out / "images.csv") > 0


# --------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("before", "after", "expect"),
    [
        ("bad.jpg", "a.png", ImageReadError),
        ("missing.png", "a.png", ImageReadError),
        ("black.png", "a.png", InputError),
        ([], ["a.png"], InputError),
        (None, "a.png", InputError),
    ],
    ids=["corrupt", "missing", "blank", "empty-list", "none"],
)
def test_compare_bad_inputs(before, after, expect, tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _photo())
    _save(tmp_path / "black.png", _uniform((0, 0, 0)))
    _write(tmp_path / "bad.jpg", b"not a photo")

    def where(x):
        return [str(tmp_path / p) for p in x] if isinstance(x, list) else x and str(tmp_path / x)

    with pytest.raises(TrichoscanError) as info:
        trichoscan.compare(where(before), where(after), calibration=5.0, segmenter="classical")
    assert type(info.value) is expect
    if isinstance(before, str):
        args = ["compare", where(before), where(after), "--um-per-px", "5"]
        result = runner.invoke(app, [*args, "--segmenter", "classical"])
        _assert_clean(result)
        assert result.exit_code == EXIT_FAILED and len(_error_lines(result.stderr)) == 1
