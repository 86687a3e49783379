"""U-Net hair segmenter: a compact network, its packaging, and tiled inference.

The model folder (cellpose/stardist-like packaging) holds two files:

``weights.pt``
    The network's ``state_dict``, read with ``torch.load(..., weights_only=True)`` so a
    weights file can never run code.
``model_card.json``
    Architecture, working scale, input convention, training recipe and seeds, code and
    renderer versions, data provenance and licences, evaluation numbers, and the
    SHA-256 of ``weights.pt`` (checked on every load).

The shipped weights live in the top-level ``models/`` folder, installed as package data of
``trichoscan.models`` so a non-editable install finds them. This module is inference only:
it never imports the training code, and torch is imported lazily so
``import trichoscan.segmentation`` stays fast without it.

Working scale
-------------
When the photo's scale is known, it is resampled to the card's working scale
(:data:`WORKING_UM_PER_PX`, 5 µm/px for the shipped recipe) before inference and the
hair probability is resampled back to the photo's size before thresholding. The model
then always sees hairs at one size (a 60 µm hair is 12 px wide), and a 1280x1024 photo
at 2.78 µm/px shrinks to 712x569 — which is what makes CPU inference fast. With no scale
the photo is segmented as it is.

Threads and determinism
-----------------------
Inference runs with a fixed number of torch threads (``num_threads``; default the
``TRICHOSCAN_NUM_THREADS`` environment variable, else ``min(4, os.cpu_count())``), set
for the duration of a call and restored after. With one thread count the result is
bit-identical from run to run on one machine; another thread count may change logits by
~1e-6 (and so, rarely, a pixel right at the threshold).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "DEFAULT_MODEL_DIR",
    "WORKING_UM_PER_PX",
    "DEFAULT_ARCHITECTURE",
    "UNetSegmenter",
    "build_unet",
    "weights_available",
    "load_model",
    "save_model",
    "file_sha256",
]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.json"
#: Format tag written into every card; bump ``CARD_VERSION`` on incompatible changes.
CARD_FORMAT = "trichoscan-unet"
CARD_VERSION = 1
#: The shipped model folder (package data).


def _shipped_model_dir() -> Path:
    """The top-level ``models/`` folder, installed as the ``trichoscan.models`` package."""
    import importlib.util

    spec = importlib.util.find_spec("trichoscan.models")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    # A source checkout run without installing: models/ sits beside trichoscan/.
    return Path(__file__).resolve().parents[2] / "models"


DEFAULT_MODEL_DIR = _shipped_model_dir()
#: Working scale of the shipped recipe (µm per pixel).
WORKING_UM_PER_PX = 5.0
#: Default network configuration (about 1.96 M parameters, 7.9 MB of float32 weights).
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "name": "unet",
    "in_channels": 3,
    "base_channels": 16,
    "depth": 4,
    "norm": "batch",
    "upsampling": "bilinear",
}
#: What the network expects; recorded in the card.
INPUT_CONVENTION = (
    "float32 RGB in [0, 1] as returned by trichoscan.preprocess.prepare(image).rgb "
    "(illumination-flattened, skin white-balanced), channels first"
)
DEFAULT_TILE = 768  # working-scale pixels; a 1280x1024 photo at 2.78 µm/px is one tile
DEFAULT_OVERLAP = 64


# ----------------------------------------------------------------------------- network


@functools.cache
def _unet_class() -> type:
    """Build the torch module class on first use (keeps torch a lazy import)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def norm_layer(kind: str, channels: int) -> nn.Module:
        if kind == "batch":
            return nn.BatchNorm2d(channels)
        if kind == "group":
            return nn.GroupNorm(min(8, channels), channels)
        raise ValueError(f"unknown norm {kind!r}; use 'batch' or 'group'")

    def conv_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            norm_layer(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            norm_layer(norm, c_out),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        """Compact U-Net: max-pool down, bilinear up, concatenated skips, one logit out."""

        def __init__(
            self,
            in_channels: int = 3,
            base_channels: int = 16,
            depth: int = 4,
            norm: str = "batch",
            **_: Any,
        ) -> None:
            super().__init__()
            ch = [base_channels * 2**i for i in range(depth + 1)]
            self.config = {
                **DEFAULT_ARCHITECTURE,
                "in_channels": in_channels,
                "base_channels": base_channels,
                "depth": depth,
                "norm": norm,
            }
            self.multiple = 2**depth  # input sides must be multiples of this
            self.down = nn.ModuleList(
                [conv_block(in_channels, ch[0], norm)]
                + [conv_block(ch[i], ch[i + 1], norm) for i in range(depth)]
            )
            self.up = nn.ModuleList(
                [conv_block(ch[i + 1] + ch[i], ch[i], norm) for i in reversed(range(depth))]
            )
            self.head = nn.Conv2d(ch[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                x = block(x if i == 0 else F.max_pool2d(x, 2))
                skips.append(x)
            skips.pop()  # the bottleneck is not a skip
            for block in self.up:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = block(torch.cat([x, skips.pop()], dim=1))
            return self.head(x)

    return UNet


def build_unet(architecture: Mapping[str, Any] | None = None) -> Any:
    """Create an untrained U-Net (a ``torch.nn.Module``) from an architecture dict.

    Parameters
    ----------
    architecture : mapping, optional
        Keys of :data:`DEFAULT_ARCHITECTURE`; missing keys take their defaults.

    Returns
    -------
    torch.nn.Module
        Maps ``(N, in_channels, H, W)`` float input (sides multiples of ``2**depth``) to
        ``(N, 1, H, W)`` hair logits; its ``config`` attribute is the full architecture.
    """
    arch = {**DEFAULT_ARCHITECTURE, **dict(architecture or {})}
    if arch.get("name") != "unet" or arch.get("upsampling") != "bilinear":
        raise ValueError(f"unsupported architecture {arch!r}")
    return _unet_class()(**arch)


def _fuse_batchnorm(net: Any) -> Any:
    """Copy of ``net`` in eval mode with every Conv+BatchNorm pair folded (faster on CPU)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return net


# ----------------------------------------------------------------------------- tiling


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _axis_tiles(length: int, tile: int, overlap: int, multiple: int) -> tuple[list[int], int, int]:
    """Tile starts, tile length and padded length covering ``length`` pixels.

    Tiles are as few and as equal as possible, at most ``tile`` long (rounded up to
    ``multiple``), neighbours overlapping by at least ``overlap``.
    """
    n = 1 if length <= tile else math.ceil((length - overlap) / (tile - overlap))
    size = _round_up(math.ceil((length + (n - 1) * overlap) / n), multiple)
    padded = max(length, size)
    if n == 1:
        return [0], size, padded
    starts = [round(i * (padded - size) / (n - 1)) for i in range(n)]
    return starts, size, padded


def _ramp(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: linear ramps over ``overlap`` pixels at both ends, never 0."""
    i = np.arange(size, dtype=np.float32)
    edge = np.minimum(i + 1, size - i) / float(max(overlap, 1) + 1)
    return np.clip(edge, 1e-3, 1.0).astype(np.float32)


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average when shrinking (no aliasing of thin hairs), bilinear when enlarging."""
    import cv2

    shrink = height * width < arr.shape[0] * arr.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(arr, (width, height), interpolation=interp)


def _default_threads() -> int:
    env = os.environ.get("TRICHOSCAN_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, os.cpu_count() or 1))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, restoring the caller's setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_rgb_float(rgb: np.ndarray) -> np.ndarray:
    """Validate the segmenter input and return a float32 (H, W, 3) array in [0, 1]."""
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise InputError(f"the U-Net needs an RGB array of shape (H, W, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError("the image contains NaN or infinite values")
    return np.clip(arr, 0.0, 1.0)


# ----------------------------------------------------------------------------- segmenter


class UNetSegmenter:
    """A loaded U-Net, ready to segment photos of any size.

    Parameters
    ----------
    net : torch.nn.Module
        A network from :func:`build_unet` with its weights; a fused eval-mode copy is used.
    card : dict
        The model card (see :func:`save_model`).
    sha256 : str, optional
        SHA-256 of the weights file it was loaded from ('' for an unsaved model).
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available, else CPU).
    tile_size, overlap : int
        Tile side and minimum tile overlap, in working-scale pixels.
    threshold : float
        Probability above which a pixel is hair (default: the card's, else 0.5).
    num_threads : int, optional
        Torch threads during inference (see the module notes on determinism).

    Attributes
    ----------
    card : dict
    sha256 : str
    working_um_per_px : float or None
    device : str
    """

    def __init__(
        self,
        net: Any,
        card: Mapping[str, Any],
        *,
        sha256: str = "",
        device: str | None = None,
        tile_size: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        threshold: float | None = None,
        num_threads: int | None = None,
    ) -> None:
        import torch

        self.card = dict(card)
        self.sha256 = sha256
        self.working_um_per_px = self.card.get("working_um_per_px")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = str(device)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.threshold = float(threshold if threshold is not None else card.get("threshold", 0.5))
        self.num_threads = int(num_threads or _default_threads())
        self._multiple = int(getattr(net, "multiple", 16))
        if self.tile_size < 2 * self._multiple or not 0 <= self.overlap < self.tile_size // 2:
            raise InputError(f"bad tiling: tile_size={tile_size}, overlap={overlap}")
        net = _fuse_batchnorm(net).to(self.device)
        # channels-last convolutions are ~1.5x faster with oneDNN on CPU
        self._memory_format = (
            torch.channels_last if self.device == "cpu" else torch.contiguous_format
        )
        self._net = net.to(memory_format=self._memory_format)

    def __repr__(self) -> str:
        return (
            f"UNetSegmenter(sha256={self.sha256[:12]!r}, device={self.device!r}, "
            f"working_um_per_px={self.working_um_per_px})"
        )

    def _forward_tile(self, tile: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1))[None])
        x = x.to(self.device).contiguous(memory_format=self._memory_format)
        return self._net(x)[0, 0].float().cpu().numpy()

    def _logits(self, img: np.ndarray) -> np.ndarray:
        """Hair logits of a working-scale float32 (h, w, 3) image, by blended tiles."""
        import torch

        h, w = img.shape[:2]
        ys, th, ph = _axis_tiles(h, self.tile_size, self.overlap, self._multiple)
        xs, tw, pw = _axis_tiles(w, self.tile_size, self.overlap, self._multiple)
        # numpy's reflect handles pads longer than the image (repeated reflection)
        padded = img
        if (ph, pw) != (h, w):
            padded = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect")
        if len(ys) == 1 and len(xs) == 1:
            with torch.inference_mode(), _torch_threads(self.num_threads):
                return self._forward_tile(padded)[:h, :w]
        window = np.outer(_ramp(th, self.overlap), _ramp(tw, self.overlap))
        acc = np.zeros((ph, pw), np.float32)
        weight = np.zeros((ph, pw), np.float32)
        with torch.inference_mode(), _torch_threads(self.num_threads):
            for y in ys:
                for x in xs:
                    acc[y : y + th, x : x + tw] += window * self._forward_tile(
                        padded[y : y + th, x : x + tw]
                    )
                    weight[y : y + th, x : x + tw] += window
        return (acc / weight)[:h, :w]

    def _working_shape(self, shape: tuple[int, int], um_per_px: float | None) -> tuple[int, int]:
        h, w = shape
        if um_per_px is None or not self.working_um_per_px:
            return h, w
        if not (math.isfinite(um_per_px) and um_per_px > 0):
            raise InputError(f"um_per_px must be a positive number, got {um_per_px!r}")
        f = float(um_per_px) / float(self.working_um_per_px)
        if abs(f - 1.0) < 0.01:  # within 1 %: not worth a resampling blur
            return h, w
        return max(1, round(h * f)), max(1, round(w * f))

    def predict_proba(self, rgb: np.ndarray, *, um_per_px: float | None = None) -> np.ndarray:
        """Hair probability of every pixel.

        Parameters
        ----------
        rgb : numpy.ndarray
            Float32 (H, W, 3) in [0, 1] (uint8 and (H, W) grey are accepted too), normally
            ``prepare(image).rgb``.
        um_per_px : float, optional
            The photo's scale; when given, inference runs at the card's working scale.

        Returns
        -------
        numpy.ndarray
            Float32 (H, W) in [0, 1].
        """
        img = _as_rgb_float(rgb)
        h, w = img.shape[:2]
        wh, ww = self._working_shape((h, w), um_per_px)
        work = img if (wh, ww) == (h, w) else _resize(img, wh, ww)
        logits = self._logits(work)
        if (wh, ww) != (h, w):
            logits = _resize(logits, h, w)  # resample logits, then threshold: smooth edges
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)

    def segment(self, rgb: np.ndarray, *, um_per_px: float | None = None) -> np.ndarray:
        """Bool hair mask of the input's height x width.

        Parameters
        ----------
        rgb : numpy.ndarray
            Float32 (H, W, 3) in [0, 1], normally ``prepare(image).rgb``.
        um_per_px : float, optional
            The photo's scale; when given, inference runs at the card's working scale and
            the result is resampled back.

        Returns
        -------
        numpy.ndarray
            Bool (H, W).
        """
        return self.predict_proba(rgb, um_per_px=um_per_px) > self.threshold


# ----------------------------------------------------------------------------- files


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_dir(model_dir: Path | str | None) -> Path:
    return DEFAULT_MODEL_DIR if model_dir is None else Path(model_dir)


def weights_available(model_dir: Path | str | None = None) -> bool:
    """Whether a model folder holds a card and weights, and torch is installed.

    Cheap (no hashing, no torch import): :func:`load_model` does the full checks.

    Parameters
    ----------
    model_dir : path, optional
        Model folder; default the shipped ``models/`` (installed as ``trichoscan.models``).
    """
    folder = _model_dir(model_dir)
    return (
        (folder / CARD_FILE).is_file()
        and (folder / WEIGHTS_FILE).is_file()
        and importlib.util.find_spec("torch") is not None
    )


def auto_choice(model_dir: Path | str | None = None) -> tuple[bool, str]:
    """Whether ``segmenter="auto"`` may pick this model, and why not when it may not.

    A card may say ``"auto": {"eligible": false, "reason": ...}``: the weights work and
    ``segmenter="unet"`` runs them, but they lost to the classical segmenter where it
    matters (real photos), so ``"auto"`` keeps the classical one. Cards without the block
    (e.g. a researcher's own fine-tuned model) are eligible. Cheap: reads the card only.

    Returns
    -------
    (bool, str)
        Eligibility and the reason ('' when eligible or when there is no model at all).
    """
    if not weights_available(model_dir):
        return False, ""
    try:
        card = json.loads((_model_dir(model_dir) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True, ""  # load_model reports a broken card properly
    block = card.get("auto") if isinstance(card, dict) else None
    if isinstance(block, dict) and block.get("eligible") is False:
        return False, str(block.get("reason") or "the model card marks it not for auto use")
    return True, ""


def _read_card(folder: Path) -> dict[str, Any]:
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise ModelError(
            f"U-Net model folder {folder} does not exist; install a trichoscan release that "
            "ships the weights, train one with `trichoscan train`, or use "
            "segmenter='classical'"
        )
    if not card_path.is_file():
        raise ModelError(
            f"no {CARD_FILE} in {folder}: not a trichoscan U-Net model folder (or the "
            "weights are not installed); train one with `trichoscan train` or use "
            "segmenter='classical'"
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path} is not valid JSON ({exc}); reinstall or retrain") from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelError(
            f"{card_path} is not a trichoscan U-Net model card (format != {CARD_FORMAT!r}); "
            "reinstall or retrain the model"
        )
    if not isinstance(card.get("sha256"), str) or not isinstance(card.get("architecture"), dict):
        raise ModelError(f"{card_path} lacks 'sha256' or 'architecture'; reinstall or retrain")
    return card


def load_model(
    model_dir: Path | str | None = None,
    *,
    device: str | None = None,
    **segmenter_options: Any,
) -> UNetSegmenter:
    """Load and verify a U-Net model folder.

    Parameters
    ----------
    model_dir : path, optional
        Folder with ``model_card.json`` and ``weights.pt``; default the shipped
        ``models/`` (installed as ``trichoscan.models``).
    device : str, optional
        ``"cpu"``, ``"cuda"``; default CUDA when available, else CPU.
    **segmenter_options
        ``tile_size``, ``overlap``, ``threshold``, ``num_threads`` for :class:`UNetSegmenter`.

    Returns
    -------
    UNetSegmenter

    Raises
    ------
    ModelError
        Folder, card or weights missing; card unreadable; weights whose SHA-256 differs
        from the card's (corrupt, truncated or swapped); weights torch cannot read or that
        do not fit the card's architecture; torch not installed.
    """
    folder = _model_dir(model_dir)
    card = _read_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(
            f"{weights} is missing (the card is there); reinstall the model or retrain it"
        )
    digest = file_sha256(weights)
    if digest != card["sha256"]:
        raise ModelError(
            f"{weights} does not match its model card (SHA-256 {digest[:12]}…, card says "
            f"{card['sha256'][:12]}…): the file is corrupt, truncated or from another model; "
            "reinstall the model or retrain it"
        )
    if importlib.util.find_spec("torch") is None:
        raise ModelError("the U-Net needs torch: pip install 'trichoscan[model]'")
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = build_unet(card["architecture"])
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises many types for bad files; report them as one
        raise ModelError(
            f"cannot load {weights} into the architecture of its card ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); reinstall the model or retrain it"
        ) from exc
    log.info("loaded U-Net %s from %s", digest[:12], folder)
    return UNetSegmenter(net, card, sha256=digest, device=device, **segmenter_options)


def save_model(model: Any, card: Mapping[str, Any], model_dir: Path | str) -> Path:
    """Write ``weights.pt`` and ``model_card.json`` (with the weights' SHA-256).

    Parameters
    ----------
    model : torch.nn.Module or UNetSegmenter
        A network from :func:`build_unet` (its ``config`` becomes the card's
        ``architecture``).
    card : mapping
        Card fields (working scale, training recipe, provenance, evaluation...); ``format``,
        ``card_version``, ``architecture``, ``input`` and ``sha256`` are filled in.
    model_dir : path
        Output folder, created if missing; existing files are replaced atomically.

    Returns
    -------
    pathlib.Path
        The model folder.
    """
    import torch

    if isinstance(model, UNetSegmenter):
        raise InputError("save the training network (build_unet), not a fused UNetSegmenter")
    net = model
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    fd, tmp_name = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch.save(state, tmp)
        digest = file_sha256(tmp)
        tmp.replace(folder / WEIGHTS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    full = {
        "format": CARD_FORMAT,
        "card_version": CARD_VERSION,
        "architecture": dict(getattr(net, "config", DEFAULT_ARCHITECTURE)),
        "working_um_per_px": WORKING_UM_PER_PX,
        "input": INPUT_CONVENTION,
        "threshold": 0.5,
        **dict(card),
    }
    full["sha256"] = digest
    full["weights_file"] = WEIGHTS_FILE
    full["n_parameters"] = int(sum(p.numel() for p in net.parameters()))
    text = json.dumps(full, indent=2, ensure_ascii=False, default=str) + "\n"
    tmp_card = folder / (CARD_FILE + ".tmp")
    tmp_card.write_text(text, encoding="utf-8")
    tmp_card.replace(folder / CARD_FILE)
    log.info("saved U-Net %s to %s", digest[:12], folder)
    return folder
