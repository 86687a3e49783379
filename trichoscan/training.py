"""Training, evaluation and export of the U-Net hair segmenter.

Training data are renders of :mod:`trichoscan.synth` generated on the fly (seeds from the
reserved *training* range only, see ``benchmarks/seeds.toml``) and/or a folder of
annotated photos laid out as::

    DATA/images/NAME.jpg   (any format trichoscan.io reads)
    DATA/masks/NAME.png    (hair = white; a mask that is mostly white is read inverted)

Every image goes through :func:`trichoscan.preprocess.prepare`, exactly as at inference,
and is resampled to the working scale (µm per pixel) when its scale is known. Random
crops (256² by default) are augmented jointly with :mod:`torchvision.transforms.v2`
(flips, 90° rotations, small affine, colour jitter, blur, noise); the loss is BCE + soft
Dice; AdamW with linear warm-up and cosine decay. Seeds are fixed, a checkpoint is written
after every epoch (``resume=True`` continues from the last one), one JSON line per epoch
goes to ``train_log.jsonl``, and progress is reported through a callback — the library
never prints. The result is a model folder (:func:`trichoscan.segmentation.unet.save_model`)
whose card records the recipe, seeds, versions, data provenance and licences.

Evaluation: :func:`evaluate_masks` (Dice/clDice on ``images/`` + ``masks/``),
:func:`evaluate_renders` (Dice/clDice on renders), :func:`evaluate_boxes` (hair counts
against Pascal VOC box annotations, one box per hair, ``images/`` + ``annotations/``) and
:func:`fixture_evaluation` (the small rendered fixture set every model card records, so a
test can check that installed weights still reproduce their card).

torch and torchvision are imported inside the functions that need them; evaluating the
classical segmenter never imports them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import InputError, TrichoscanError
from .segmentation import unet

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = [
    "TRAINING_SEEDS",
    "DEV_SEEDS",
    "TrainConfig",
    "TrainProgress",
    "train",
    "FIXTURE_SEEDS",
    "FIXTURE_SIZE",
    "CARD_TOLERANCE",
    "CLASSICAL",
    "evaluate_masks",
    "evaluate_renders",
    "fixture_evaluation",
    "record_fixture_evaluation",
    "VocBox",
    "VocAnnotation",
    "read_voc",
    "detect_layout",
    "count_errors",
    "BoxImageScore",
    "BoxEvaluation",
    "evaluate_boxes",
    "export_onnx",
]

log = logging.getLogger(__name__)

#: Renderer seeds training may use (``benchmarks/seeds.toml``, section ``training``).
TRAINING_SEEDS = (100_000, 899_999)
#: Development seeds for held-out dev renders (section ``development``).
DEV_SEEDS = (0, 99_999)
#: Licence of the rendered training data (ours).
RENDER_LICENCE = "BSD-3-Clause"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"
#: The small rendered fixture set (development seeds, inclusive range, height x width)
#: whose Dice/clDice every card records, so installed weights can be re-checked in seconds.
FIXTURE_SEEDS = (99_900, 99_907)
FIXTURE_SIZE = (512, 640)
FIXTURE_UM_PER_PX = (2.5, 9.0)
#: How far a re-run may differ from a card's Dice/clDice (other torch thread counts, BLAS
#: or CPU vs CUDA flip a few pixels right at the threshold); written into every card.
CARD_TOLERANCE = 0.02
#: ``model_dir`` value that selects the classical segmenter in the evaluations.
CLASSICAL = "classical"


@dataclass
class TrainConfig:
    """A training run; every field is recorded in the model card.

    Attributes
    ----------
    out_dir : Path
        Model folder to write (weights, card, checkpoints, log).
    data_dir : Path, optional
        Annotated photos (``images/`` + ``masks/``).
    data_um_per_px : float, optional
        Scale of the photos in ``data_dir`` (resampled to the working scale); ``None``
        uses them as they are.
    data_licence, data_description : str
        What the user declares about ``data_dir``; copied into the card. Weights trained on
        data of unknown licence must not be redistributed.
    synthetic : int
        Number of renders generated on the fly (seeds ``synthetic_seed`` onwards).
    synthetic_seed : int
        First render seed; all seeds must lie in :data:`TRAINING_SEEDS`.
    render_um_per_px : (float, float)
        Scale range of the renders (drawn log-uniformly per render).
    render_size : (int, int)
        Height and width of each render *at the working scale*.
    dev_synthetic, dev_seed : int
        Held-out dev renders (seeds in :data:`DEV_SEEDS`) scored after every epoch.
    init_model_dir : Path, optional
        Fine-tune from this model folder (its architecture and working scale are kept).
    working_um_per_px : float, optional
        Working scale; default the init model's, else 5 µm/px.
    base_channels, depth, norm : int, int, str
        Architecture of a new model.
    epochs, batch_size, crop_size, crops_per_image : int
        An epoch draws ``crops_per_image`` random crops from every image.
    lr, weight_decay, warmup_fraction, dice_weight : float
        AdamW learning rate and weight decay; share of steps with linear warm-up; weight
        of the soft-Dice term next to BCE.
    seed : int
        Seed of torch and NumPy (augmentation, crop positions, initialisation).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    num_threads : int, optional
        Torch threads (default as at inference).
    resume : bool
        Continue from ``out_dir/checkpoints/last.pt`` when it exists.
    keep_checkpoints : int
        Epoch checkpoints kept besides ``last.pt``.
    name : str
        Model name for the card.
    """

    out_dir: Path
    data_dir: Path | None = None
    data_um_per_px: float | None = None
    data_licence: str = ""
    data_description: str = ""
    synthetic: int = 0
    synthetic_seed: int = TRAINING_SEEDS[0]
    render_um_per_px: tuple[float, float] = (2.5, 9.0)
    render_size: tuple[int, int] = (416, 512)
    dev_synthetic: int = 0
    dev_seed: int = 50_000
    init_model_dir: Path | None = None
    working_um_per_px: float | None = None
    base_channels: int = 16
    depth: int = 4
    norm: str = "batch"
    epochs: int = 10
    batch_size: int = 8
    crop_size: int = 256
    crops_per_image: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    dice_weight: float = 1.0
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    resume: bool = False
    keep_checkpoints: int = 2
    name: str = "trichoscan-unet"

    def __post_init__(self) -> None:
        for key in ("out_dir", "data_dir", "init_model_dir"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, Path(value).expanduser())
        self.render_um_per_px = tuple(float(v) for v in self.render_um_per_px)  # type: ignore[assignment]
        self.render_size = tuple(int(v) for v in self.render_size)  # type: ignore[assignment]

    @classmethod
    def from_toml(cls, path: Path | str, **overrides: Any) -> TrainConfig:
        """Read a run file (keys as the attributes, top level or under ``[train]``).

        Relative paths in the file are taken relative to the file's folder; ``overrides``
        (e.g. from command-line flags; ``None`` values are ignored) win over the file.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"cannot read training config {path}: {exc}") from exc
        raw = dict(raw.get("train", raw))
        for key in ("out_dir", "data_dir", "init_model_dir"):
            if raw.get(key) is not None:
                raw[key] = path.parent / Path(raw[key]).expanduser()
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"unknown training option(s) in {path}: {', '.join(unknown)}")
        if "out_dir" not in raw:
            raise InputError(f"{path} sets no out_dir (the model folder to write)")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (paths as strings)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out

    def validate(self) -> None:
        """Raise :class:`InputError` for an unusable configuration."""
        if self.synthetic <= 0 and self.data_dir is None:
            raise InputError("nothing to train on: give data_dir and/or synthetic > 0")
        if self.synthetic > 0:
            last = self.synthetic_seed + self.synthetic - 1
            if self.synthetic_seed < TRAINING_SEEDS[0] or last > TRAINING_SEEDS[1]:
                raise InputError(
                    f"render seeds {self.synthetic_seed}..{last} leave the training range "
                    f"{TRAINING_SEEDS[0]}..{TRAINING_SEEDS[1]} (benchmarks/seeds.toml)"
                )
        if self.dev_synthetic > 0:
            last = self.dev_seed + self.dev_synthetic - 1
            if self.dev_seed < DEV_SEEDS[0] or last > DEV_SEEDS[1]:
                raise InputError(f"dev seeds {self.dev_seed}..{last} leave {DEV_SEEDS}")
        if self.data_dir is not None and not (self.data_dir / "images").is_dir():
            raise InputError(f"{self.data_dir} has no images/ folder (and masks/ beside it)")
        positive = ("epochs", "batch_size", "crop_size", "crops_per_image", "lr")
        for key in positive:
            if not getattr(self, key) > 0:
                raise InputError(f"{key} must be positive, got {getattr(self, key)!r}")
        if self.crop_size % 16:
            raise InputError(f"crop_size must be a multiple of 16, got {self.crop_size}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise InputError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")


@dataclass(frozen=True)
class TrainProgress:
    """What :func:`train` reports to its ``progress`` callback.

    ``stage`` is ``"render"`` (building the data), ``"train"`` (one call per step) or
    ``"epoch"`` (one call per finished epoch, with ``metrics``).
    """

    stage: str
    done: int
    total: int
    epoch: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[TrainProgress], None]


# ----------------------------------------------------------------------------- data


@dataclass
class _Sample:
    name: str
    image: np.ndarray  # uint8 (H, W, 3), preprocessed, at the working scale
    mask: np.ndarray  # bool (H, W)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _prepared_rgb(rgb: np.ndarray) -> np.ndarray:
    """``prepare(rgb).rgb`` as at inference; the raw photo if prepare refuses it."""
    from .preprocess import prepare

    try:
        return prepare(rgb).rgb
    except InputError as exc:
        log.warning("preprocessing failed (%s); training on the raw image", exc)
        return rgb


def _to_working(
    rgb: np.ndarray, mask: np.ndarray, um_per_px: float | None, working: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a photo and its mask to the working scale (area / bilinear, like inference)."""
    if um_per_px is None or abs(um_per_px / working - 1.0) < 0.01:
        return rgb, mask
    f = um_per_px / working
    h, w = max(16, round(rgb.shape[0] * f)), max(16, round(rgb.shape[1] * f))
    img = unet._resize(rgb.astype(np.float32), h, w)
    soft = unet._resize(mask.astype(np.float32), h, w)
    return img, soft >= 0.5


def _render_sample(seed: int, config: TrainConfig, working: float) -> _Sample:
    """One render at a drawn scale, sized to ``render_size`` at the working scale."""
    from . import synth

    lo, hi = config.render_um_per_px
    rng = np.random.default_rng([seed, 1])  # the scale draw, independent of the scene
    um = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else lo
    f = um / working
    h, w = (max(32, round(side / f)) for side in config.render_size)
    scene = synth.SynthConfig(height=h, width=w, um_per_px=(um, um))
    r = synth.render(seed, scene)
    rgb = _prepared_rgb(r.image.astype(np.float32) / 255.0)
    img, mask = _to_working(rgb, r.mask, um, working)
    return _Sample(f"render_{seed}", _to_uint8(img), mask)


def _read_mask(path: Path) -> np.ndarray:
    """Bool hair mask from an image file; a mostly-white mask is taken as inverted."""
    from .io import read_image

    grey = read_image(path).mean(axis=2)
    mask = grey >= 0.5
    if mask.mean() > 0.5:  # hair is always the minority: black-on-white masks
        log.info("%s: hairs are dark in this mask; inverted", path.name)
        mask = ~mask
    return mask


def _mask_path(masks: Path, stem: str) -> Path | None:
    for suffix in (".png", *IMAGE_SUFFIXES):
        candidate = masks / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _iter_pairs(data_dir: Path) -> Iterable[tuple[Path, Path]]:
    """``(image, mask)`` paths of a data folder, sorted by name."""
    images, masks = data_dir / "images", data_dir / "masks"
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such folder")
    if not images.is_dir() or not masks.is_dir():
        raise InputError(f"{data_dir} needs images/ and masks/ folders")
    found = False
    for image in sorted(images.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = _mask_path(masks, image.stem)
        if mask is None:
            log.warning("%s has no mask in %s; skipped", image.name, masks)
            continue
        found = True
        yield image, mask
    if not found:
        raise InputError(f"no image with a matching mask in {data_dir}")


def _load_pair(
    image: Path, mask_path: Path, um_per_px: float | None, working: float | None
) -> _Sample:
    from .io import read_image

    rgb = _prepared_rgb(read_image(image))
    mask = _read_mask(mask_path)
    if mask.shape != rgb.shape[:2]:
        raise InputError(f"{mask_path.name}: mask {mask.shape} vs image {rgb.shape[:2]}")
    if working is not None:
        rgb, mask = _to_working(rgb, mask, um_per_px, working)
    return _Sample(image.stem, _to_uint8(rgb), mask)


def _build_pool(
    config: TrainConfig, working: float, progress: ProgressCallback | None
) -> list[_Sample]:
    """All training images, preprocessed, at the working scale."""
    pool: list[_Sample] = []
    pairs = list(_iter_pairs(config.data_dir)) if config.data_dir is not None else []
    total = len(pairs) + config.synthetic
    for image, mask in pairs:
        pool.append(_load_pair(image, mask, config.data_um_per_px, working))
        _report(progress, TrainProgress("render", len(pool), total))
    for seed in range(config.synthetic_seed, config.synthetic_seed + config.synthetic):
        pool.append(_render_sample(seed, config, working))
        _report(progress, TrainProgress("render", len(pool), total))
    return pool


def _report(progress: ProgressCallback | None, event: TrainProgress) -> None:
    if progress is not None:
        progress(event)


# ----------------------------------------------------------------------------- batches


def _augmenter(crop: int) -> Callable[[Any, Any], tuple[Any, Any]]:
    """Joint image/mask augmentation; the mask follows only the geometric transforms."""
    from torchvision.transforms import v2

    geometric = v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.RandomAffine(degrees=10, scale=(0.9, 1.1), shear=4)], p=0.5),
            v2.CenterCrop(crop),  # cut from a larger crop, so the affine never shows a fill
        ]
    )
    photometric = v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.2, 0.25, 0.25)], p=0.8),  # no hue: 15x dearer
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.2))], p=0.3),
            v2.RandomApply([v2.GaussianNoise(0.0, 0.02, clip=True)], p=0.3),
        ]
    )

    def apply(image: Any, mask: Any) -> tuple[Any, Any]:
        image, mask = geometric(image, mask)
        return photometric(image, mask)

    return apply


def _random_crop(
    sample: _Sample, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² crop (reflect-padded when the image is smaller), rotated by k·90°."""
    img, mask = sample.image, sample.mask
    ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if ph or pw:
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        img = np.pad(img, (*pads, (0, 0)), mode="reflect")
        mask = np.pad(mask, pads, mode="reflect")
    y = int(rng.integers(0, img.shape[0] - size + 1))
    x = int(rng.integers(0, img.shape[1] - size + 1))
    k = int(rng.integers(0, 4))
    return (
        np.rot90(img[y : y + size, x : x + size], k),
        np.rot90(mask[y : y + size, x : x + size], k),
    )


def _batches(pool: Sequence[_Sample], config: TrainConfig, epoch: int) -> Iterable[tuple[Any, Any]]:
    """The epoch's batches ``(images (N,3,S,S) float, masks (N,1,S,S) float)``."""
    import torch
    from torchvision import tv_tensors

    rng = np.random.default_rng([config.seed, epoch])
    torch.manual_seed(config.seed * 100_003 + epoch)  # v2 transforms draw from torch
    augment = _augmenter(config.crop_size)
    margin = config.crop_size + 2 * (config.crop_size // 8)  # room for rotation / zoom-out
    reps = max(config.crops_per_image, math.ceil(config.batch_size / len(pool)))
    order = rng.permutation(np.repeat(np.arange(len(pool)), reps))
    for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
        images, masks = [], []
        for i in order[start : start + config.batch_size]:
            img, mask = _random_crop(pool[i], margin, rng)
            t_img = tv_tensors.Image(torch.from_numpy(img.transpose(2, 0, 1).copy()).float() / 255)
            t_mask = tv_tensors.Mask(torch.from_numpy(mask[None].copy()).float())
            t_img, t_mask = augment(t_img, t_mask)
            images.append(t_img.as_subclass(torch.Tensor))
            masks.append(t_mask.as_subclass(torch.Tensor))
        yield torch.stack(images), torch.stack(masks)


def _steps_per_epoch(n_images: int, config: TrainConfig) -> int:
    reps = max(config.crops_per_image, math.ceil(config.batch_size / n_images))
    return (n_images * reps) // config.batch_size


# ----------------------------------------------------------------------------- training


def _loss(logits: Any, target: Any, dice_weight: float) -> Any:
    """BCE + ``dice_weight`` x soft Dice loss over the batch."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    inter = (prob * target).sum()
    soft_dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + dice_weight * soft_dice


def _lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' but no CUDA device is available; use 'cpu'")
    return device


def _initial_net(config: TrainConfig) -> tuple[Any, float, dict[str, Any] | None]:
    """The network to train, its working scale, and the parent model's card (fine-tuning)."""
    import torch

    if config.init_model_dir is None:
        net = unet.build_unet(
            {"base_channels": config.base_channels, "depth": config.depth, "norm": config.norm}
        )
        return net, float(config.working_um_per_px or unet.WORKING_UM_PER_PX), None
    parent = unet.load_model(config.init_model_dir, device="cpu")  # verifies the checksum
    net = unet.build_unet(parent.card["architecture"])
    state = torch.load(
        config.init_model_dir / unet.WEIGHTS_FILE, map_location="cpu", weights_only=True
    )
    net.load_state_dict(state)
    working = float(parent.card.get("working_um_per_px") or unet.WORKING_UM_PER_PX)
    if config.working_um_per_px and abs(config.working_um_per_px - working) > 1e-6:
        raise InputError(
            f"fine-tuning keeps the parent's working scale ({working} µm/px), not "
            f"{config.working_um_per_px}"
        )
    return net, working, {**parent.card, "sha256": parent.sha256}


def _save_checkpoint(folder: Path, state: dict[str, Any], epoch: int, keep: int) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{epoch:03d}.pt"
    tmp = folder / "last.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "last.pt")
    torch.save(state, path)
    for old in sorted(folder.glob("epoch_*.pt"))[:-keep] if keep > 0 else folder.glob("epoch_*.pt"):
        old.unlink()


def _load_checkpoint(folder: Path) -> dict[str, Any] | None:
    import torch

    path = folder / "last.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn file from a killed run
        raise TrichoscanError(
            f"cannot resume from {path} ({type(exc).__name__}); delete it or an older "
            f"epoch_*.pt renamed to last.pt will be used"
        ) from exc


def _segmenter_from(net: Any, working: float, device: str) -> unet.UNetSegmenter:
    """An inference copy of the network being trained (for dev scores)."""
    card = {"working_um_per_px": working}
    return unet.UNetSegmenter(net, card, device=device)


def _dev_renders(config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Held-out dev renders ``(prepared rgb, field, mask, um_per_px)``, full size."""
    from . import synth
    from .preprocess import prepare

    out = []
    scene = synth.SynthConfig(um_per_px=config.render_um_per_px)
    for seed in range(config.dev_seed, config.dev_seed + config.dev_synthetic):
        r = synth.render(seed, scene)
        p = prepare(r.image)
        out.append((p.rgb, p.field, r.mask, r.um_per_px))
    return out


def _score_dev(
    segmenter: unet.UNetSegmenter, dev: Sequence[tuple[np.ndarray, ...]]
) -> dict[str, float]:
    from .segmentation.scoring import cldice, dice

    d, c = [], []
    for rgb, fld, gt, um in dev:
        pred = segmenter.segment(rgb, um_per_px=um) & fld
        d.append(dice(pred, gt & fld))
        c.append(cldice(pred, gt & fld))
    return {"dev_dice": float(np.mean(d)), "dev_cldice": float(np.mean(c))} if dev else {}


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _card(
    config: TrainConfig,
    working: float,
    parent: dict[str, Any] | None,
    n_data: int,
    history: list[dict[str, Any]],
    seconds: float,
    device: str,
    fixture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card of a finished run (benchmark numbers are added by the benchmark)."""
    import torch

    from . import synth

    data: list[dict[str, Any]] = []
    if config.synthetic:
        data.append(
            {
                "source": "trichoscan.synth renders (generated on the fly)",
                "renderer_version": synth.RENDERER_VERSION,
                "seeds": [config.synthetic_seed, config.synthetic_seed + config.synthetic - 1],
                "n_images": config.synthetic,
                "um_per_px": list(config.render_um_per_px),
                "licence": RENDER_LICENCE,
                "owner": "the trichoscan authors",
            }
        )
    if config.data_dir is not None:
        data.append(
            {
                "source": str(config.data_dir),
                "description": config.data_description,
                "n_images": n_data,
                "um_per_px": config.data_um_per_px,
                "licence": config.data_licence or "undeclared: do not redistribute these weights",
                "owner": "declared by the user",
            }
        )
    last = history[-1] if history else {}
    return {
        "name": config.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "working_um_per_px": working,
        "code_version": __version__,
        "renderer_version": synth.RENDERER_VERSION,
        "parent_model": None
        if parent is None
        else {"name": parent.get("name"), "sha256": parent.get("sha256")},
        "training": {
            "recipe": config.to_dict(),
            "loss": f"BCE + {config.dice_weight} x soft Dice",
            "optimizer": "AdamW, linear warm-up then cosine decay to 1 % of lr",
            "augmentation": "flips, 90° rotations, affine (±10°, scale 0.9–1.1, shear 4°), "
            "colour jitter, Gaussian blur, Gaussian noise (torchvision.transforms.v2)",
            "seeds": {
                "torch_numpy": config.seed,
                "render_seeds": [
                    config.synthetic_seed,
                    config.synthetic_seed + config.synthetic - 1,
                ]
                if config.synthetic
                else None,
                "dev_seeds": [config.dev_seed, config.dev_seed + config.dev_synthetic - 1]
                if config.dev_synthetic
                else None,
            },
            "epochs_run": len(history),
            "final_loss": last.get("loss"),
            "seconds": round(seconds, 1),
            "device": device,
            "torch_version": torch.__version__,
        },
        "data": data,
        "evaluation": {
            "dev_renders": {
                **{k: v for k, v in last.items() if k.startswith("dev_")},
                "seeds": [config.dev_seed, config.dev_seed + config.dev_synthetic - 1]
                if config.dev_synthetic
                else None,
                "size": [synth.SynthConfig().height, synth.SynthConfig().width],
                "um_per_px": list(config.render_um_per_px),
                "tolerance": CARD_TOLERANCE,
            },
            "fixture": fixture,
            "benchmarks": None,  # filled by benchmarks/accuracy.py for a released model
        },
        "intended_use": "hair segmentation of trichoscopy (dermatoscope) scalp photos, "
        "research use; not a medical device",
    }


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> Path:
    """Train (or fine-tune) a U-Net and write its model folder.

    Parameters
    ----------
    config : TrainConfig
        The run.
    progress : callable, optional
        Called with a :class:`TrainProgress` while rendering, after every step and after
        every epoch.

    Returns
    -------
    pathlib.Path
        ``config.out_dir``, holding ``weights.pt`` and ``model_card.json``, plus
        ``checkpoints/`` and ``train_log.jsonl``.

    Raises
    ------
    InputError
        Bad configuration or data.
    ModelError
        The init model cannot be loaded.
    """

    config.validate()
    device = _resolve_device(config.device)
    with unet._torch_threads(config.num_threads or unet._default_threads()):
        return _train(config, device, progress)


def _train(config: TrainConfig, device: str, progress: ProgressCallback | None) -> Path:
    import torch

    torch.manual_seed(config.seed)
    started = time.perf_counter()

    net, working, parent = _initial_net(config)
    net.to(device)
    cpu_start = time.process_time()
    pool = _build_pool(config, working, progress)
    n_data = len(pool) - config.synthetic
    dev = _dev_renders(config) if config.dev_synthetic else []
    data_record = {
        "event": "data",
        "n_images": len(pool),
        "n_dev": len(dev),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
    }
    log.info("data ready: %s", data_record)
    steps = _steps_per_epoch(len(pool), config)
    total = steps * config.epochs
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, config.warmup_fraction)
    )
    config.out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = config.out_dir / CHECKPOINT_DIR
    log_path = config.out_dir / LOG_FILE
    history: list[dict[str, Any]] = []
    first_epoch = 0
    state = _load_checkpoint(ckpt_dir) if config.resume else None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        first_epoch = int(state["epoch"]) + 1
        log.info("resuming at epoch %d from %s", first_epoch, ckpt_dir)
    elif log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log
    _append_log(log_path, data_record)

    for epoch in range(first_epoch, config.epochs):
        epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
        net.train()
        losses = []
        for i, (images, masks) in enumerate(_batches(pool, config, epoch)):
            images, masks = images.to(device), masks.to(device)
            loss = _loss(net(images), masks, config.dice_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step = epoch * steps + i + 1
            _report(progress, TrainProgress("train", step, total, epoch, losses[-1]))
        record = {
            "epoch": epoch,
            "steps": len(losses),
            "loss": float(np.mean(losses)),
            "lr": float(scheduler.get_last_lr()[0]),
            "seconds": round(time.perf_counter() - epoch_start, 1),
            "cpu_seconds": round(time.process_time() - epoch_cpu, 1),
        }
        if dev:
            record.update(_score_dev(_segmenter_from(net, working, device), dev))
        history.append(record)
        _append_log(log_path, record)
        log.info("epoch %d: %s", epoch, record)
        _save_checkpoint(
            ckpt_dir,
            {
                "epoch": epoch,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "config": config.to_dict(),
            },
            epoch,
            config.keep_checkpoints,
        )
        _report(progress, TrainProgress("epoch", epoch + 1, config.epochs, epoch, metrics=record))

    net.eval().to("cpu")
    # the fixture scores let a test re-check the installed weights in seconds
    fixture = _fixture_scores(_segmenter_from(net, working, "cpu")) if dev else None
    seconds = time.perf_counter() - started
    card = _card(config, working, parent, n_data, history, seconds, device, fixture)
    return unet.save_model(net, card, config.out_dir)


# ----------------------------------------------------------------------------- evaluation


def _is_classical(model_dir: Path | str | None) -> bool:
    """Whether ``model_dir`` is the word ``classical`` (not a model folder)."""
    return model_dir is not None and str(model_dir).strip().lower() == CLASSICAL


def evaluate_masks(
    model_dir: Path | str | None,
    data_dir: Path | str,
    *,
    um_per_px: float | None = None,
    preprocess: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Dice and clDice of a model on annotated photos (``images/`` + ``masks/``).

    Parameters
    ----------
    model_dir : path, 'classical' or None
        Model folder; ``None`` for the shipped model; the word ``"classical"`` scores the
        classical segmenter (torch is then never imported).
    data_dir : path
        Folder with ``images/NAME.ext`` and ``masks/NAME.png``.
    um_per_px : float, optional
        Scale of the photos (inference then runs at the working scale).
    preprocess : bool
        Run :func:`trichoscan.preprocess.prepare` first, as the pipeline does (the
        classical segmenter always needs it).
    device : str, optional
        Inference device (``"cpu"``, ``"cuda"``) of the U-Net.

    Returns
    -------
    dict
        ``per_image`` (list of ``{"name", "dice", "cldice"}``), ``mean_dice``,
        ``mean_cldice``, ``n_images``, ``model_sha256`` ('' for the classical segmenter),
        ``segmenter``.

    Raises
    ------
    InputError
        Missing folders or no image with a mask.
    ModelError
        The model folder cannot be loaded.
    """
    from .io import read_image
    from .segmentation.scoring import cldice, dice

    classical = _is_classical(model_dir)
    pairs = list(_iter_pairs(Path(data_dir)))  # bad folders fail before a model loads
    model = None if classical else unet.load_model(model_dir, device=device)
    rows = []
    for image, mask_path in pairs:
        rgb = read_image(image)
        gt = _read_mask(mask_path)
        if classical:
            pred = _segment_classical(rgb, um_per_px)
        else:
            rgb = _prepared_rgb(rgb) if preprocess else rgb
            pred = model.segment(rgb, um_per_px=um_per_px)
        rows.append({"name": image.stem, "dice": dice(pred, gt), "cldice": cldice(pred, gt)})
    return {
        "per_image": rows,
        "mean_dice": float(np.mean([r["dice"] for r in rows])),
        "mean_cldice": float(np.mean([r["cldice"] for r in rows])),
        "n_images": len(rows),
        "model_sha256": "" if model is None else model.sha256,
        "segmenter": CLASSICAL if classical else "unet",
    }


def _segment_classical(rgb: np.ndarray, um_per_px: float | None) -> np.ndarray:
    """The classical segmenter as the pipeline runs it (prepared photo, its field)."""
    from .preprocess import prepare
    from .segmentation import segment_classical

    prepared = prepare(rgb)
    return segment_classical(prepared.rgb, prepared.field, um_per_px=um_per_px) & prepared.field


def _render_scores(
    model: unet.UNetSegmenter, seeds: Iterable[int], scene: Any
) -> list[dict[str, Any]]:
    """Dice/clDice per render, scored inside the analysable field (as ``_score_dev``)."""
    from . import synth
    from .preprocess import prepare
    from .segmentation.scoring import cldice, dice

    rows = []
    for seed in seeds:
        r = synth.render(int(seed), scene)
        p = prepare(r.image)
        pred = model.segment(p.rgb, um_per_px=r.um_per_px) & p.field
        gt = r.mask & p.field
        rows.append({"seed": int(seed), "dice": dice(pred, gt), "cldice": cldice(pred, gt)})
    return rows


def evaluate_renders(
    model_dir: Path | str | None,
    seeds: Sequence[int],
    *,
    um_per_px: tuple[float, float] = (2.5, 9.0),
    size: tuple[int, int] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Dice and clDice of a model on renders (scored inside the analysable field).

    Use development seeds (0–99 999) for tuning; the reserved ranges belong to the
    benchmarks.

    Parameters
    ----------
    model_dir : path or None
        Model folder; ``None`` for the shipped model.
    seeds : sequence of int
        Render seeds.
    um_per_px : (float, float)
        Scale range of the renders.
    size : (int, int), optional
        Height and width of the renders; default the renderer's (512 x 640), as the
        dev renders scored during training.
    device : str, optional
        Inference device.

    Returns
    -------
    dict
        ``per_image`` (``{"seed", "dice", "cldice"}``), ``mean_dice``, ``mean_cldice``,
        ``n_images``, ``model_sha256``.
    """
    from . import synth

    model = unet.load_model(model_dir, device=device)
    shape = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    rows = _render_scores(model, seeds, synth.SynthConfig(um_per_px=um_per_px, **shape))
    return {
        "per_image": rows,
        "mean_dice": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
        "mean_cldice": float(np.mean([r["cldice"] for r in rows])) if rows else float("nan"),
        "n_images": len(rows),
        "model_sha256": model.sha256,
    }


def _fixture_scores(model: unet.UNetSegmenter) -> dict[str, Any]:
    """The card's ``evaluation.fixture`` block for a loaded (or in-training) model."""
    from . import synth

    h, w = FIXTURE_SIZE
    scene = synth.SynthConfig(height=h, width=w, um_per_px=FIXTURE_UM_PER_PX)
    rows = _render_scores(model, range(FIXTURE_SEEDS[0], FIXTURE_SEEDS[1] + 1), scene)
    return {
        "seeds": list(FIXTURE_SEEDS),
        "size": list(FIXTURE_SIZE),
        "um_per_px": list(FIXTURE_UM_PER_PX),
        "dice": round(float(np.mean([r["dice"] for r in rows])), 6),
        "cldice": round(float(np.mean([r["cldice"] for r in rows])), 6),
        "tolerance": CARD_TOLERANCE,
    }


def fixture_evaluation(model_dir: Path | str | None, *, device: str | None = None) -> dict:
    """Dice and clDice of a model on the rendered fixture set (:data:`FIXTURE_SEEDS`).

    Eight 512 x 640 renders from the development seed range, scale 2.5–9 µm/px, scored
    inside the analysable field: a few seconds on a CPU. Every model trained with dev
    renders records this block as ``evaluation.fixture`` in its card, and a test checks
    that the installed weights still reproduce it within ``tolerance``.

    Parameters
    ----------
    model_dir : path or None
        Model folder; ``None`` for the shipped model.
    device : str, optional
        Inference device.

    Returns
    -------
    dict
        ``seeds`` (first, last), ``size`` (height, width), ``um_per_px`` (range),
        ``dice``, ``cldice``, ``tolerance``.
    """
    return _fixture_scores(unet.load_model(model_dir, device=device))


def record_fixture_evaluation(model_dir: Path | str) -> dict[str, Any]:
    """Score a model folder on the fixture set and write the result into its card.

    For model folders written before cards recorded the fixture. Only
    ``model_card.json`` changes (atomically); the weights and their SHA-256 do not.

    Parameters
    ----------
    model_dir : path
        Model folder.

    Returns
    -------
    dict
        The ``evaluation.fixture`` block written (see :func:`fixture_evaluation`).
    """
    folder = Path(model_dir)
    block = fixture_evaluation(folder, device="cpu")
    card_path = folder / unet.CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8"))
    evaluation = card.get("evaluation") if isinstance(card.get("evaluation"), dict) else {}
    card["evaluation"] = {**evaluation, "fixture": block}
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(card_path)
    return block


# ----------------------------------------------------------------------------- box annotations

#: Largest annotation file read (a VOC file of thousands of boxes is ~1 MB).
MAX_XML_BYTES = 16 * 1024**2


@dataclass(frozen=True)
class VocBox:
    """One annotated object: a box with ``xmin <= xmax`` and ``ymin <= ymax``.

    Attributes
    ----------
    label : str
        The object's ``<name>`` (standard VOC) or ``<class>`` (the FDU set); '' if none.
    xmin, ymin, xmax, ymax : float
        Corners in pixels, put in order.
    swapped : bool
        The file gave a corner pair the wrong way round (fixed here).
    """

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    swapped: bool = False

    @property
    def degenerate(self) -> bool:
        """Zero width or height (a hair drawn as a line); still one hair."""
        return self.xmax == self.xmin or self.ymax == self.ymin


@dataclass(frozen=True)
class VocAnnotation:
    """A Pascal VOC-like annotation file: one ``<object>`` per hair.

    Attributes
    ----------
    path : Path
    filename : str or None
        The ``<filename>`` tag.
    size : (int, int) or None
        ``(height, width)`` from ``<size>``, when given.
    boxes : tuple of VocBox
    """

    path: Path
    filename: str | None
    size: tuple[int, int] | None
    boxes: tuple[VocBox, ...]

    @property
    def count(self) -> int:
        """Number of annotated hairs."""
        return len(self.boxes)

    @property
    def n_swapped(self) -> int:
        return sum(b.swapped for b in self.boxes)

    @property
    def n_degenerate(self) -> int:
        return sum(b.degenerate for b in self.boxes)


def _xml_number(node: ET.Element, tag: str, path: Path, i: int) -> float:
    text = node.findtext(tag)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(
            f"{path}: object {i + 1} has no numeric <{tag}> in its <bndbox> (got {text!r}); "
            "fix or remove the annotation"
        ) from None
    if not math.isfinite(value):
        raise InputError(f"{path}: object {i + 1} has a non-finite <{tag}>")
    return value


def read_voc(path: Path | str) -> VocAnnotation:
    """Read a Pascal VOC-like box annotation (one ``<object>`` per hair).

    Accepts ``<name>`` or ``<class>`` as the label tag, puts swapped corners in order and
    keeps zero-width or zero-height boxes (each is still one hair).

    Parameters
    ----------
    path : path
        The ``.xml`` file.

    Returns
    -------
    VocAnnotation

    Raises
    ------
    InputError
        Missing or unreadable file, not XML, not an ``<annotation>``, or an object
        without a ``<bndbox>`` of four numbers.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            raise InputError(f"{path}: annotation larger than {MAX_XML_BYTES >> 20} MB; refused")
        root = ET.fromstring(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the annotation ({exc.strerror or exc})") from None
    except ET.ParseError as exc:
        raise InputError(f"{path}: not valid XML ({exc}); fix or remove the file") from None
    if root.tag != "annotation":
        raise InputError(f"{path}: not a Pascal VOC annotation (root <{root.tag}>)")
    size = None
    size_node = root.find("size")
    if size_node is not None:
        try:
            size = (int(size_node.findtext("height", "")), int(size_node.findtext("width", "")))
        except ValueError:
            size = None  # informative only; the boxes are what count
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        label = (obj.findtext("name") or obj.findtext("class") or "").strip()
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(f"{path}: object {i + 1} has no <bndbox>")
        x0, y0, x1, y1 = (_xml_number(bnd, t, path, i) for t in ("xmin", "ymin", "xmax", "ymax"))
        swapped = x0 > x1 or y0 > y1
        boxes.append(
            VocBox(label, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), swapped=swapped)
        )
    return VocAnnotation(path, root.findtext("filename"), size, tuple(boxes))


def detect_layout(data_dir: Path | str) -> str:
    """Which annotation layout a data folder has.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` and either ``masks/`` or ``annotations/``.

    Returns
    -------
    str
        ``"masks"`` or ``"boxes"``.

    Raises
    ------
    InputError
        No such folder, no ``images/``, neither or both annotation folders.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    if not (folder / "images").is_dir():
        raise InputError(f"{folder} has no images/ folder")
    masks, boxes = (folder / "masks").is_dir(), (folder / "annotations").is_dir()
    if masks and boxes:
        raise InputError(
            f"{folder} has both masks/ and annotations/; choose one with layout='masks' or "
            "'boxes' (--layout)"
        )
    if not (masks or boxes):
        raise InputError(
            f"{folder} has neither masks/ (hair masks: Dice) nor annotations/ (Pascal VOC "
            "boxes, one per hair: counts) beside images/"
        )
    return "masks" if masks else "boxes"


def _iter_box_pairs(data_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """``(name, image, annotation)`` triples, and the listed names that lack a file.

    Names come from ``list.txt`` when the folder has one (its order), else from
    ``annotations/*.xml`` (sorted) that have an image.
    """
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such folder")
    images_dir, ann_dir = data_dir / "images", data_dir / "annotations"
    if not images_dir.is_dir() or not ann_dir.is_dir():
        raise InputError(f"{data_dir} needs images/ and annotations/ folders")
    images = {
        p.stem: p
        for p in sorted(images_dir.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    listing = data_dir / "list.txt"
    if listing.is_file():
        names = list(dict.fromkeys(listing.read_text(encoding="utf-8").split()))
    else:
        names = sorted(p.stem for p in ann_dir.glob("*.xml"))
    pairs, missing = [], []
    for name in names:
        xml_path = ann_dir / f"{name}.xml"
        if name in images and xml_path.is_file():
            pairs.append((name, images[name], xml_path))
        else:
            what = "image" if name not in images else "annotation"
            log.warning("%s: no %s in %s; skipped", name, what, data_dir)
            missing.append(name)
    if not pairs:
        raise InputError(
            f"no image with a matching annotation in {data_dir} (images/NAME.jpg + "
            "annotations/NAME.xml)"
        )
    return pairs, missing


def count_errors(true: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Summary of per-image count errors (predicted - true).

    Parameters
    ----------
    true, predicted : sequence of numbers
        Counts per image, in the same order.

    Returns
    -------
    dict
        ``n``; ``mae`` (mean |error| per image); ``bias`` (mean error); ``rmse``;
        ``mean_abs_pct_error`` (mean of 100 |error| / true over the ``n_pct`` images with
        true > 0); ``mean_true``, ``mean_predicted``. NaN where undefined (no images).
    """
    t = np.asarray(true, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if t.shape != p.shape or t.ndim != 1:
        raise InputError(f"true and predicted counts differ in shape: {t.shape} vs {p.shape}")
    err = p - t
    nan = float("nan")
    pos = t > 0
    pct = 100.0 * np.abs(err[pos]) / t[pos]
    return {
        "n": int(t.size),
        "mae": float(np.mean(np.abs(err))) if t.size else nan,
        "bias": float(np.mean(err)) if t.size else nan,
        "rmse": float(np.sqrt(np.mean(err**2))) if t.size else nan,
        "mean_abs_pct_error": float(np.mean(pct)) if pct.size else nan,
        "n_pct": int(pct.size),
        "mean_true": float(np.mean(t)) if t.size else nan,
        "mean_predicted": float(np.mean(p)) if t.size else nan,
    }


@dataclass
class BoxImageScore:
    """One image of a box-annotated set.

    Attributes
    ----------
    name : str
    true_count : int
        Number of annotated objects (boxes).
    predicted_count : int or None
        Hairs counted by the pipeline with the evaluation's count rule; ``None`` when
        the image failed (see ``error``).
    n_swapped, n_degenerate : int
        Boxes with corners the wrong way round, and of zero width or height.
    um_per_px : float or None
        The scale the analysis used.
    error : str or None
        Why the image could not be analysed.
    """

    name: str
    true_count: int
    predicted_count: int | None
    n_swapped: int = 0
    n_degenerate: int = 0
    um_per_px: float | None = None
    error: str | None = None

    @property
    def count_error(self) -> int | None:
        """Predicted - true (``None`` for a failed image)."""
        return None if self.predicted_count is None else self.predicted_count - self.true_count


#: Columns of :meth:`BoxEvaluation.write_csv`.
BOX_CSV_COLUMNS = (
    "name",
    "true_count",
    "predicted_count",
    "count_error",
    "n_swapped",
    "n_degenerate",
    "um_per_px",
    "error",
)


@dataclass
class BoxEvaluation:
    """Count-based evaluation of a segmenter on box-annotated photos.

    The summary covers the images analysed (``n``); failed images are listed in
    ``per_image`` with their error and counted in ``n_failed``.

    Attributes
    ----------
    per_image : list of BoxImageScore
    n, n_failed : int
    mae, bias, rmse : float
        Hairs per image (error = predicted - true).
    mean_abs_pct_error : float
        Mean of 100 |error| / true over images with true > 0.
    mean_true, mean_predicted : float
    count_rule : str
    segmenter : str
        ``"unet"`` or ``"classical"``.
    model_sha256 : str
        '' for the classical segmenter.
    calibration : str
        How the scale was set (``"given 2.8 µm/px"``, ``"profile fdu-70x-quadrant"``, ...).
    missing : list of str
        Names in ``list.txt`` without an image or an annotation (skipped).
    """

    per_image: list[BoxImageScore]
    n: int
    n_failed: int
    mae: float
    bias: float
    rmse: float
    mean_abs_pct_error: float
    mean_true: float
    mean_predicted: float
    count_rule: str
    segmenter: str
    model_sha256: str
    calibration: str
    missing: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Per-image rows (the :data:`BOX_CSV_COLUMNS`)."""
        return [{**dataclasses.asdict(r), "count_error": r.count_error} for r in self.per_image]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (NaN summaries become ``None``)."""
        out = dataclasses.asdict(self)
        out["per_image"] = self.rows()
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    def write_csv(self, path: Path | str) -> Path:
        """Write the per-image rows as CSV (atomically)."""
        from .report import write_csv

        return write_csv(path, self.rows(), BOX_CSV_COLUMNS)


def _calibration_text(cal: Any) -> str:
    if cal.um_per_px is None:
        return "none (read from a scale bar in each photo, when there is one)"
    where = f"profile {cal.device}" if cal.source == "profile" else cal.source
    return f"{where}: {cal.um_per_px:g} µm/px"


def evaluate_boxes(
    model_dir: Path | str | None,
    data_dir: Path | str,
    *,
    calibration: float | str | Calibration | None = None,
    count_rule: str = "inside",
    progress: Callable[[int, int], None] | None = None,
) -> BoxEvaluation:
    """Hair counts of the full pipeline against box annotations (one box per hair).

    The data folder holds ``images/NAME.jpg`` (any format trichoscan reads) and
    ``annotations/NAME.xml`` (Pascal VOC-like, see :func:`read_voc`); a ``list.txt``
    (one name per line) selects and orders the images when present. The true count of
    an image is its number of objects; the predicted count is
    :meth:`trichoscan.Pipeline.analyze`'s ``hair_count`` under ``count_rule``.

    Parameters
    ----------
    model_dir : path, 'classical' or None
        U-Net model folder; ``None`` for the shipped model; the word ``"classical"`` for
        the classical segmenter (torch is then never imported).
    data_dir : path
        The data folder.
    calibration : float, str or Calibration, optional
        Scale of the photos: µm per pixel or a device profile (``"fdu-70x-quadrant"``
        for the FDU set). Without one each photo's burned-in scale bar is used if found.
    count_rule : {'inside', 'exit', 'visible'}
        Default ``"inside"``: hairs lying wholly inside the field, the FDU labels'
        convention.
    progress : callable, optional
        Called as ``progress(done, total)`` after each image.

    Returns
    -------
    BoxEvaluation

    Raises
    ------
    InputError
        Missing folders, no image with an annotation, a corrupt annotation file, a bad
        ``count_rule``.
    CalibrationError
        Unusable scale or unknown device profile.
    ModelError
        The U-Net cannot be loaded.
    """
    from .calibration import resolve_calibration
    from .metrics import COUNT_RULES
    from .pipeline import Pipeline, PipelineConfig

    if count_rule not in COUNT_RULES:
        raise InputError(f"count_rule must be one of {COUNT_RULES}, got {count_rule!r}")
    cal = resolve_calibration(calibration)
    pairs, missing = _iter_box_pairs(Path(data_dir))
    # every annotation is read before the (slow) analyses: a corrupt file fails at once
    truths = [read_voc(xml_path) for _, _, xml_path in pairs]
    classical = _is_classical(model_dir)
    pipeline = Pipeline(
        PipelineConfig(
            segmenter=CLASSICAL if classical else "unet",
            count_rule=count_rule,
            model_dir=None if classical or model_dir is None else Path(model_dir),
        )
    )
    scores = []
    for i, ((name, image, _), truth) in enumerate(zip(pairs, truths, strict=True)):
        score = BoxImageScore(name, truth.count, None, truth.n_swapped, truth.n_degenerate)
        try:
            result = pipeline.analyze(image, calibration=cal, source=str(image))
            score.predicted_count = int(result.hair_count)
            score.um_per_px = result.calibration.um_per_px
        except TrichoscanError as exc:  # one bad photo never stops an evaluation
            score.error = " ".join(str(exc).split())
            log.warning("%s: %s", image, score.error)
        scores.append(score)
        if progress is not None:
            progress(i + 1, len(pairs))
    ok = [s for s in scores if s.predicted_count is not None]
    summary = count_errors([s.true_count for s in ok], [s.predicted_count for s in ok])
    return BoxEvaluation(
        per_image=scores,
        n=summary["n"],
        n_failed=len(scores) - len(ok),
        mae=summary["mae"],
        bias=summary["bias"],
        rmse=summary["rmse"],
        mean_abs_pct_error=summary["mean_abs_pct_error"],
        mean_true=summary["mean_true"],
        mean_predicted=summary["mean_predicted"],
        count_rule=count_rule,
        segmenter=pipeline.segmenter_info.name,
        model_sha256=pipeline.segmenter_info.weights_sha256 or "",
        calibration=_calibration_text(cal),
        missing=missing,
    )


def export_onnx(model_dir: Path | str | None, out_path: Path | str, *, opset: int = 17) -> Path:
    """Export a model folder to ONNX (input ``image`` (N, 3, H, W), output ``logits``).

    H and W are dynamic but must be multiples of ``2**depth`` (16); the ONNX model
    expects the same preprocessed, working-scale input as :class:`UNetSegmenter` and
    returns logits (hair where > 0).

    Raises
    ------
    TrichoscanError
        ``onnx`` is not installed.
    ModelError
        The model folder cannot be loaded.
    """
    if importlib.util.find_spec("onnx") is None:
        raise TrichoscanError("ONNX export needs the onnx package: pip install onnx")
    import torch

    folder = unet.DEFAULT_MODEL_DIR if model_dir is None else Path(model_dir)
    model = unet.load_model(folder, device="cpu")  # checks the card and checksum
    net = unet.build_unet(model.card["architecture"])
    net.load_state_dict(
        torch.load(folder / unet.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    )
    net.eval()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, int(model.card["architecture"].get("in_channels", 3)), 256, 256)
    torch.onnx.export(
        net,
        (dummy,),
        str(out),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        opset_version=opset,
        dynamo=False,
    )
    return out
