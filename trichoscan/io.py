"""Reading photos: any path, bytes or array in, RGB float32 in [0, 1] out.

Every failure is an :class:`~trichoscan.errors.ImageReadError` (could not decode) or an
:class:`~trichoscan.errors.InputError` (decoded but unusable) whose message says what was
wrong and what to do. Nothing is returned silently wrong: format is taken from the content,
never the extension; EXIF orientation is applied; huge images are refused from the header
before any pixel is decoded. Metadata (EXIF, GPS, ICC) is dropped, never propagated.
"""

from __future__ import annotations

import io as _io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, InputError

__all__ = [
    "FORMATS",
    "MAX_PIXELS",
    "MAX_PIXELS_PER_BYTE",
    "MIN_SIDE",
    "ImageMetadata",
    "ImageSource",
    "image_metadata",
    "read_image",
]

logger = logging.getLogger(__name__)

#: Largest image accepted, in pixels (width × height), checked from the header before any
#: decoding. Dermatoscope cameras give ≤ 20 MP; 30 MP as float32 RGB is already 360 MB.
MAX_PIXELS = 30_000_000

#: Decompression-bomb guard: above :data:`BOMB_MIN_PIXELS`, a file may not claim more than
#: this many pixels per byte. Real photos (JPEG, PNG of skin) hold well under 10; a 70 KB
#: PNG claiming 9000×9000 pixels holds ~1200.
MAX_PIXELS_PER_BYTE = 500
BOMB_MIN_PIXELS = 4_000_000

#: Formats Pillow may open. Anything else (PostScript/EPS, which Pillow would hand to
#: Ghostscript, PDF, ICO, ...) is refused, whatever the file's name.
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP")  # JPEG also opens MPO files

#: Smallest accepted side in pixels: below this there is no field to analyse.
MIN_SIDE = 16

#: Maximum ratio of long to short side; a 5×5000 strip is not a trichoscopy photo.
MAX_ASPECT = 20.0

#: EXIF tag of the orientation.
_EXIF_ORIENTATION = 0x0112

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class ImageMetadata:
    """What the file header says, read without decoding pixels.

    Attributes
    ----------
    width, height : int
        Size as stored in the file (before EXIF rotation).
    format : str
        Container format detected from content (``"JPEG"``, ``"PNG"``, ...).
    mode : str
        Pillow mode (``"RGB"``, ``"L"``, ``"I;16"``, ``"CMYK"``, ``"F"``, ...).
    bit_depth : int
        Bits per channel (8, 16 or 32).
    exif_orientation : int
        EXIF orientation tag (1 = upright, 6/8 = rotated 90°), 1 if absent.
    """

    width: int
    height: int
    format: str
    mode: str
    bit_depth: int
    exif_orientation: int

    @property
    def rotated(self) -> bool:
        """Whether the EXIF orientation changes the pixel layout."""
        return self.exif_orientation not in (0, 1)

    @property
    def oriented_size(self) -> tuple[int, int]:
        """``(width, height)`` after applying the EXIF orientation."""
        if self.exif_orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "mode": self.mode,
            "bit_depth": self.bit_depth,
            "exif_orientation": self.exif_orientation,
        }


def _pil():
    # Pillow is imported lazily so that `import trichoscan` stays fast.
    from PIL import Image

    # Register every plugin once, so that ``formats=FORMATS`` can name MPO, WEBP, ...
    Image.init()
    return Image


def _source_name(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _open_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> bytes:
    """Return the raw file content, with clear errors for missing or empty files."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageReadError(f"{path}: file not found; check the path")
        if path.is_dir():
            raise ImageReadError(f"{path}: is a folder, not an image file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if len(data) == 0:
        raise ImageReadError(
            f"{_source_name(source)}: the file is empty (0 bytes); re-export or re-copy the photo"
        )
    return data


def _bit_depth(mode: str) -> int:
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 16
    if mode in ("I", "F"):
        return 32
    if mode == "1":
        return 1
    return 8


def _header(data: bytes, name: str):
    """Open ``data`` with Pillow (header only) and check its size; return the lazy image."""
    Image = _pil()
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) on decompression bombs; we enforce our own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(_io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{name}: image dimensions are too large to be a photo ({exc}); "
            f"the limit is {MAX_PIXELS:,} pixels"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for junk input
        raise ImageReadError(
            f"{name}: not a readable image (JPEG, PNG, TIFF or BMP expected); "
            "the file may be corrupt, truncated, of another format or not an image at all"
        ) from exc
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageReadError(
            f"{name}: image is {w}×{h} = {w * h:,} pixels, above the limit of "
            f"{MAX_PIXELS:,}; downscale it or crop the region of interest "
            "(trichoscan.io.MAX_PIXELS)"
        )
    if w * h > BOMB_MIN_PIXELS and w * h > MAX_PIXELS_PER_BYTE * len(data):
        raise ImageReadError(
            f"{name}: a {len(data):,}-byte file claims {w}×{h} pixels; that is a "
            "decompression bomb or a blank image, not a photo — refused before decoding"
        )
    return img


def _exif_orientation(img) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF must not stop reading
        return 1
    return value if 1 <= value <= 8 else 1


def image_metadata(source: str | os.PathLike | bytes) -> ImageMetadata:
    """Read size, format, bit depth and EXIF orientation without decoding pixels.

    Parameters
    ----------
    source : str, path-like or bytes
        Image file or its content.

    Returns
    -------
    ImageMetadata

    Raises
    ------
    ImageReadError
        If the file is missing, empty, not an image, or larger than :data:`MAX_PIXELS`.
    """
    if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
        raise InputError(f"image metadata needs a path or bytes, got {type(source).__name__}")
    name = _source_name(source)
    data = _open_bytes(source)
    img = _header(data, name)
    w, h = img.size
    return ImageMetadata(
        width=w,
        height=h,
        format=img.format or "unknown",
        mode=img.mode,
        bit_depth=16 if _is_16bit_colour(img, data) else _bit_depth(img.mode),
        exif_orientation=_exif_orientation(img),
    )


def _pil_to_array(img) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to an array for :func:`_normalise`."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        # 32-bit integer images from 16-bit PNGs carry 0..65535; anything else is scaled.
        top = 65535 if arr.size and arr.max() <= 65535 and arr.min() >= 0 else None
        if top is None:
            raise ImageReadError(
                "32-bit integer image with values outside 0..65535 is not supported; "
                "save it as 8- or 16-bit"
            )
        return arr.astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if mode == "LA":
        return np.asarray(img.convert("RGBA"))
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in img.info or mode == "PA"
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    # CMYK, YCbCr, LAB, HSV, RGBX, ...: Pillow knows how to get to RGB.
    return np.asarray(img.convert("RGB"))


def _is_16bit_colour(img, data: bytes) -> bool:
    """Whether the file holds 16-bit colour, which Pillow would silently cut to 8 bits."""
    if img.format == "PNG" and len(data) > 25:
        # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
        return data[24] == 16 and data[25] in (2, 6)
    if img.format == "TIFF":
        try:
            bps = img.tag_v2.get(258)
        except Exception:  # noqa: BLE001
            return False
        if isinstance(bps, tuple) and len(bps) >= 3:
            return max(bps) == 16
    return False


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an (H, W[, C]) array, as Pillow's exif_transpose does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _decode_16bit_colour(data: bytes, name: str, orientation: int) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        raise ImageReadError(
            f"{name}: the 16-bit colour data is truncated or corrupt and cannot be decoded; "
            "re-export or re-copy the photo"
        )
    code = cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return _orient(cv2.cvtColor(arr, code), orientation)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a classic TIFF's first IFD, without decoding; else None."""
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    size: dict[int, int] = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, typ = struct.unpack(end + "HH", entry[:4])
        if tag in (256, 257):
            fmt = end + ("H" if typ == 3 else "I")
            size[tag] = struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 in size and 257 in size:
        return size[256], size[257]
    return None


def _decode_tiff_fallback(data: bytes, name: str) -> np.ndarray | None:
    """Decode a TIFF Pillow cannot open (e.g. 32-bit float RGB) with OpenCV; else None."""
    import cv2

    size = _tiff_size(data)
    if size is None:
        return None
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageReadError(
            f"{name}: image is {w}×{h} = {w * h:,} pixels, above the limit of "
            f"{MAX_PIXELS:,}; downscale it or crop the region of interest"
        )
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        code = cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
        arr = cv2.cvtColor(arr, code)
    return arr


def _decode(data: bytes, name: str) -> np.ndarray:
    Image = _pil()
    from PIL import ImageOps

    try:
        img = _header(data, name)
    except ImageReadError:
        # Pillow cannot open some valid TIFFs (32-bit float RGB, as OpenCV writes them).
        arr = _decode_tiff_fallback(data, name)
        if arr is None:
            raise
        return arr
    fmt = img.format or "unknown"
    try:
        # Counting frames parses every IFD of a TIFF: a corrupt later one must not escape.
        n_frames = int(getattr(img, "n_frames", 1))
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(
            f"{name}: the {fmt} file structure is corrupt (unreadable page/frame list); "
            "re-export or re-copy the photo"
        ) from exc
    if n_frames > 1:
        logger.info("%s: %s has %d frames; reading the first", name, fmt, n_frames)
    if _is_16bit_colour(img, data):
        # Pillow has no 16-bit RGB mode; OpenCV keeps the full depth.
        return _decode_16bit_colour(data, name, _exif_orientation(img))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt data raises OSError, SyntaxError...
        raise ImageReadError(
            f"{name}: the {fmt} data is truncated or corrupt and cannot be decoded; "
            "re-export or re-copy the photo"
        ) from exc
    try:
        arr = _pil_to_array(img)
    except ImageReadError as exc:
        raise ImageReadError(f"{name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(
            f"{name}: unsupported {fmt} image mode {img.mode!r}; save it as 8-bit RGB"
        ) from exc
    return arr


def _check_shape(h: int, w: int, name: str) -> None:
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"{name}: image is {w}×{h} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed "
            "to analyse anything"
        )
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise InputError(
            f"{name}: image is {w}×{h} pixels, an aspect ratio above {MAX_ASPECT:g}:1; "
            "this is not a trichoscopy photo (crop or re-export it)"
        )
    if h * w > MAX_PIXELS:
        raise InputError(
            f"{name}: image is {w}×{h} = {w * h:,} pixels, above the limit of {MAX_PIXELS:,}"
        )


def _normalise(arr: np.ndarray, name: str) -> np.ndarray:
    """Array of any supported dtype/shape → contiguous float32 (H, W, 3) in [0, 1]."""
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{name}: expected a NumPy array, got {type(arr).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(
            f"{name}: image array has shape {arr.shape}; expected H×W, H×W×3 (RGB) or H×W×4 (RGBA)"
        )
    _check_shape(arr.shape[0], arr.shape[1], name)

    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) * np.float32(1 / 255)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) * np.float32(1 / 65535)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32, copy=True)
        if not np.isfinite(out).all():
            raise InputError(
                f"{name}: image contains NaN or infinite values; fix the export or "
                "replace them before analysis"
            )
        lo, hi = float(out.min()), float(out.max())
        # A small tolerance absorbs rounding from float pipelines; beyond it the range is
        # probably 0..255 or 0..65535, and guessing which would be silently wrong.
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(
                f"{name}: float image values span {lo:g}..{hi:g}; float images must be "
                "in [0, 1] (divide by 255 or 65535, or pass the integer array)"
            )
        np.clip(out, 0.0, 1.0, out=out)
    else:
        raise InputError(
            f"{name}: unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]"
        )

    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        # Composite over white: transparent regions become blank, never black "hair".
        alpha = out[:, :, 3:4]
        out = out[:, :, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(out, dtype=np.float32)


def read_image(source: ImageSource) -> np.ndarray:
    """Read a photo as RGB float32 in [0, 1].

    Parameters
    ----------
    source : str, path-like, bytes or numpy.ndarray
        A JPEG/PNG/TIFF/BMP file (format detected from content, not extension; 8- or 16-bit;
        grey, RGB, RGBA, palette or CMYK; EXIF orientation applied), its bytes, or an array
        H×W or H×W×3/4 (RGB order, not BGR) of uint8, uint16 or float in [0, 1].
        Transparency is composited over white.

    Returns
    -------
    numpy.ndarray
        Float32 array of shape (H, W, 3) with values in [0, 1]. Always a new array; no
        metadata is carried.

    Raises
    ------
    ImageReadError
        Missing, empty, truncated, corrupt or non-image file; dimensions above
        :data:`MAX_PIXELS` (refused from the header, before decoding).
    InputError
        Decoded but unusable: smaller than :data:`MIN_SIDE` pixels, aspect ratio above
        :data:`MAX_ASPECT`, NaN/inf or out-of-range floats, unsupported shape or dtype.
    """
    if isinstance(source, np.ndarray):
        return _normalise(source, "image array")
    if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
        raise InputError(
            f"image must be a path, bytes or a NumPy array, got {type(source).__name__}"
        )
    name = _source_name(source)
    data = _open_bytes(source)
    arr = _decode(data, name)
    return _normalise(arr, name)
