"""Bad-input corpus and format coverage for :mod:`trichoscan.io` (all fixtures generated)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import trichoscan.io as tio
from trichoscan.errors import ImageReadError, InputError, TrichoscanError
from trichoscan.io import image_metadata, read_image

# --- helpers ---------------------------------------------------------------------------


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """Asymmetric uint8 RGB pattern: a red block in the top-left corner, a gradient elsewhere."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 200, h, dtype=np.uint8)[:, None]
    img[:8, :8] = (255, 0, 0)
    return img


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_claiming(width: int, height: int) -> bytes:
    """A syntactically valid PNG header claiming ``width`` × ``height`` pixels, tiny data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# --- files that must be refused ----------------------------------------------------------


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.jpg")


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(tmp_path, keep):
    data = _jpeg_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(p)


def test_truncated_png(tmp_path):
    data = _png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(p)


def test_jpeg_header_only(tmp_path):
    p = tmp_path / "header.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises(ImageReadError):
        read_image(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n", encoding="utf-8")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(p)


def test_corrupt_png_body(tmp_path):
    data = bytearray(_png_bytes(np.full((32, 32, 3), 128, np.uint8)))
    data[40:60] = b"\x00" * 20  # smash IDAT
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageReadError):
        read_image(p)


def test_huge_header_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(200_000, 200_000))
    with pytest.raises(ImageReadError, match="too large|above the limit"):
        read_image(p)
    with pytest.raises(ImageReadError):
        image_metadata(p)


def test_bomb_ratio_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(5_000, 1_000))  # 5 MP in a few hundred bytes
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(p)


def test_postscript_refused(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(p)


def test_float_rgb_tiff_from_opencv(tmp_path):
    import cv2

    f = np.random.default_rng(3).random((20, 30, 3)).astype(np.float32)
    p = tmp_path / "f3.tif"
    assert cv2.imwrite(str(p), f[:, :, ::-1])
    np.testing.assert_allclose(read_image(p), f, atol=1e-6)
    f[2, 3, 1] = np.nan
    assert cv2.imwrite(str(p), f[:, :, ::-1])
    with pytest.raises(InputError, match="NaN"):
        read_image(p)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    p = _save(Image.fromarray(_pattern(100, 100)), tmp_path / "a.png", "PNG")
    monkeypatch.setattr(tio, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageReadError, match="above the limit"):
        read_image(p)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 5000), (15, 100), (100, 15), (16, 400)])
def test_degenerate_sizes(tmp_path, h, w):
    p = _save(Image.fromarray(np.full((h, w, 3), 120, np.uint8)), tmp_path / "x.png", "PNG")
    with pytest.raises(InputError) as info:
        read_image(p)
    assert not isinstance(info.value, ImageReadError)  # decoded fine, unusable


def test_smallest_accepted_size(tmp_path):
    p = _save(Image.fromarray(np.full((16, 16, 3), 120, np.uint8)), tmp_path / "x.png", "PNG")
    assert read_image(p).shape == (16, 16, 3)


# --- formats that must be read correctly ---------------------------------------------------


def _check_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.float32
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_exact(tmp_path, fmt):
    arr = _pattern()
    p = _save(Image.fromarray(arr), tmp_path / f"a.{fmt.lower()}", fmt)
    out = read_image(p)
    _check_rgb(out, arr.shape[:2])
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), arr)


def test_jpeg_close(tmp_path):
    arr = _pattern()
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg_bytes(arr))
    out = read_image(p)
    _check_rgb(out, arr.shape[:2])
    assert np.abs(out * 255 - arr).mean() < 6


def test_png_named_jpg_decoded_by_content(tmp_path):
    arr = _pattern()
    p = tmp_path / "really_a_png.jpg"
    p.write_bytes(_png_bytes(arr))
    np.testing.assert_array_equal(np.rint(read_image(p) * 255).astype(np.uint8), arr)
    assert image_metadata(p).format == "PNG"


def test_jpeg_named_png_decoded_by_content(tmp_path):
    p = tmp_path / "really_a_jpeg.png"
    p.write_bytes(_jpeg_bytes(_pattern()))
    assert read_image(p).shape == (24, 40, 3)
    assert image_metadata(p).format == "JPEG"


def test_extensionless(tmp_path):
    p = tmp_path / "photo"
    p.write_bytes(_png_bytes(_pattern()))
    assert read_image(p).shape == (24, 40, 3)


def test_grey_8bit(tmp_path):
    g = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))
    p = _save(Image.fromarray(g, "L"), tmp_path / "g.png", "PNG")
    out = read_image(p)
    _check_rgb(out, g.shape)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[..., 1], g / 255, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_grey_16bit(tmp_path, fmt):
    g = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 100).astype(np.uint16)
    p = _save(Image.fromarray(g), tmp_path / f"g16.{fmt.lower()}", fmt)
    out = read_image(p)
    _check_rgb(out, g.shape)
    np.testing.assert_allclose(out[..., 0], g / 65535, atol=1e-6)
    assert image_metadata(p).bit_depth == 16


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_rgb_16bit_keeps_depth(tmp_path, ext):
    import cv2

    rng = np.random.default_rng(2)
    a = rng.integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    p = tmp_path / f"c16.{ext}"
    assert cv2.imwrite(str(p), a[:, :, ::-1])  # OpenCV writes BGR
    out = read_image(p)
    _check_rgb(out, (20, 30))
    # Full 16-bit precision, not Pillow's 8-bit cut.
    np.testing.assert_allclose(out * 65535, a, atol=0.05)
    assert image_metadata(p).bit_depth == 16


def test_rgba_composited_over_white(tmp_path):
    a = np.zeros((20, 20, 4), np.uint8)
    a[..., 0] = 200
    a[:, :10, 3] = 255  # left opaque red-ish, right transparent
    p = _save(Image.fromarray(a, "RGBA"), tmp_path / "a.png", "PNG")
    out = read_image(p)
    np.testing.assert_allclose(out[0, 0], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[0, 15], [1, 1, 1], atol=1e-6)


def test_grey_alpha(tmp_path):
    a = np.zeros((20, 20, 2), np.uint8)
    a[..., 0] = 50
    a[..., 1] = 255
    p = _save(Image.fromarray(a, "LA"), tmp_path / "la.png", "PNG")
    np.testing.assert_allclose(read_image(p)[5, 5], [50 / 255] * 3, atol=1e-6)


def test_palette(tmp_path):
    arr = _pattern()
    pal = Image.fromarray(arr).quantize(colors=16)
    p = _save(pal, tmp_path / "p.png", "PNG")
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(np.rint(read_image(p) * 255).astype(np.uint8), expected)


def test_bilevel(tmp_path):
    b = Image.fromarray((np.indices((20, 20)).sum(0) % 2 * 255).astype(np.uint8)).convert("1")
    p = _save(b, tmp_path / "b.png", "PNG")
    out = read_image(p)
    assert set(np.unique(out)) == {0.0, 1.0}


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:] = (200, 60, 30)
    p = _save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert image_metadata(p).mode == "CMYK"
    out = read_image(p)
    _check_rgb(out, (20, 20))
    np.testing.assert_allclose(out[10, 10] * 255, (200, 60, 30), atol=12)


def test_float_tiff_in_range(tmp_path):
    f = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    p = _save(Image.fromarray(f, "F"), tmp_path / "f.tif", "TIFF")
    np.testing.assert_allclose(read_image(p)[..., 1], f, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_nan_inf(tmp_path, bad):
    f = np.full((20, 30), 0.5, np.float32)
    f[3, 4] = bad
    p = _save(Image.fromarray(f, "F"), tmp_path / "f.tif", "TIFF")
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(p)


def test_float_tiff_out_of_range(tmp_path):
    f = np.full((20, 30), 200.0, np.float32)
    p = _save(Image.fromarray(f, "F"), tmp_path / "f.tif", "TIFF")
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        read_image(p)


def test_multipage_tiff_reads_first(tmp_path):
    a, b = _pattern(), np.zeros((24, 40, 3), np.uint8)
    p = tmp_path / "multi.tif"
    Image.fromarray(a).save(p, save_all=True, append_images=[Image.fromarray(b)])
    np.testing.assert_array_equal(np.rint(read_image(p) * 255).astype(np.uint8), a)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation(tmp_path, orientation):
    from PIL import ImageOps

    arr = _pattern()
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    p = _save(img, tmp_path / f"o{orientation}.jpg", "JPEG", quality=95, exif=exif)
    out = read_image(p)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    assert out.shape == expected.shape
    assert np.abs(out * 255 - expected).max() < 1
    meta = image_metadata(p)
    assert meta.exif_orientation == orientation
    assert meta.rotated == (orientation != 1)


def test_exif_orientation_6_and_8_by_hand(tmp_path):
    """The red block (stored top-left) must land top-right for 6, bottom-left for 8."""
    arr = _pattern(24, 40)
    for orientation, corner in ((6, (0, -1)), (8, (-1, 0))):
        img = Image.fromarray(arr)
        exif = img.getexif()
        exif[0x0112] = orientation
        p = _save(img, tmp_path / f"r{orientation}.jpg", "JPEG", quality=95, exif=exif)
        out = read_image(p)
        assert out.shape == (40, 24, 3)
        y, x = corner
        assert out[y, x, 0] > 0.9 and out[y, x, 1] < 0.15
        assert out[0, 0, 0] < 0.5  # the stored corner moved away


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_16bit_colour(tmp_path, orientation):
    """The OpenCV path for 16-bit colour applies orientation like Pillow does."""
    a = (_pattern().astype(np.uint16) * 257)[:, :, ::-1]  # BGR for OpenCV
    img8 = Image.fromarray(_pattern())
    exif = img8.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.tif"
    import cv2

    assert cv2.imwrite(str(p), a)
    # Re-save the orientation tag with Pillow into an 8-bit twin to get the expected layout.
    twin = _save(img8, tmp_path / "twin.tif", "TIFF", exif=exif)
    from PIL import ImageOps

    expected = np.asarray(ImageOps.exif_transpose(Image.open(twin)).convert("RGB")) / 255
    got = tio._orient(tio._decode_16bit_colour(p.read_bytes(), "x", 1), orientation) / 65535
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["photo with spaces.jpg", "头皮 ñandú.jpg", "Ünïcødé/dir é/x.png"])
def test_non_ascii_and_space_paths(tmp_path, name):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(_png_bytes(_pattern()))
    assert read_image(p).shape == (24, 40, 3)
    assert read_image(str(p)).shape == (24, 40, 3)


def test_bytes_bytearray_memoryview():
    data = _png_bytes(_pattern())
    for src in (data, bytearray(data), memoryview(data)):
        assert read_image(src).shape == (24, 40, 3)
    with pytest.raises(ImageReadError, match="empty"):
        read_image(b"")


# --- arrays ---------------------------------------------------------------------------------


def test_array_uint8_rgb_is_copied():
    a = _pattern()
    out = read_image(a)
    np.testing.assert_allclose(out, a / 255, atol=1e-6)
    out[:] = 0
    assert a.max() > 0


def test_array_float_is_copied():
    a = np.full((20, 20, 3), 0.5, np.float32)
    out = read_image(a)
    out[:] = 0
    assert a[0, 0, 0] == 0.5


@pytest.mark.parametrize(
    ("arr", "value"),
    [
        (np.full((20, 20), 128, np.uint8), 128 / 255),
        (np.full((20, 20, 1), 128, np.uint8), 128 / 255),
        (np.full((20, 20, 3), 32768, np.uint16), 32768 / 65535),
        (np.full((20, 20), 0.25, np.float64), 0.25),
        (np.full((20, 20, 3), 1.0000001, np.float32), 1.0),  # rounding tolerance, clipped
    ],
)
def test_array_dtypes(arr, value):
    out = read_image(arr)
    assert out.shape == (20, 20, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, value, atol=1e-6)


def test_array_rgba():
    a = np.zeros((20, 20, 4), np.uint8)
    a[..., 3] = 0
    np.testing.assert_allclose(read_image(a), 1.0)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
        (np.full((20, 20, 3), 255.0), r"in \[0, 1\]"),
        (np.full((20, 20, 3), -0.5), r"in \[0, 1\]"),
        (np.zeros((20, 20, 3), np.int32), "dtype"),
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (np.zeros((20,), np.uint8), "shape"),
        (np.zeros((2, 20, 20, 3), np.uint8), "shape"),
        (np.zeros((1, 1, 3), np.uint8), "at least"),
        (np.zeros((5, 5000), np.uint8), "at least"),
        (np.zeros((20, 1000), np.uint8), "aspect"),
        (np.zeros((20, 20, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(arr, match):
    with pytest.raises(InputError, match=match):
        read_image(arr)


@pytest.mark.parametrize("obj", [None, 3.5, [[0, 1], [1, 0]], {"a": 1}])
def test_bad_source_types(obj):
    with pytest.raises(InputError, match="path, bytes or a NumPy array"):
        read_image(obj)


def test_metadata_without_decoding(tmp_path):
    p = tmp_path / "m.png"
    p.write_bytes(_png_claiming(3_000, 1_000))  # 3 MP claimed, data tiny: header only
    meta = image_metadata(p)
    assert (meta.width, meta.height, meta.format, meta.bit_depth) == (3_000, 1_000, "PNG", 8)
    assert meta.oriented_size == (3_000, 1_000)
    assert meta.to_dict()["exif_orientation"] == 1


def test_metadata_of_an_array_is_refused():
    with pytest.raises(InputError, match="path or bytes"):
        image_metadata(np.zeros((20, 20, 3), np.uint8))  # type: ignore[arg-type]


def test_result_carries_no_metadata(tmp_path):
    img = Image.fromarray(_pattern())
    exif = img.getexif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N"}  # GPS IFD
    p = _save(img, tmp_path / "e.jpg", "JPEG", exif=exif)
    out = read_image(p)
    assert type(out) is np.ndarray  # a bare array: nothing to carry EXIF


# --- fuzzing ------------------------------------------------------------------------------

_SEED_FILES = [_png_bytes(_pattern()), _jpeg_bytes(_pattern())]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 1),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
)
def test_fuzz_decoder_raises_only_typed_errors(which, cut, flips):
    data = bytearray(_SEED_FILES[which])
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = bytes(data[: max(0, len(data) - cut)])
    try:
        out = read_image(data)
    except TrichoscanError:
        return
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data):
    try:
        read_image(data)
    except TrichoscanError:
        pass
