"""U-Net segmenter: forward pass, packaging, tiling, resampling, training, bad weights,
and the shipped weights against their model card.

Tiny networks (4 base channels, depth 2) and tiny images keep the whole file fast. The
shipped-weights check re-scores the card's ``evaluation.fixture`` (eight 512x640 renders,
seconds); a card without it is checked on its 50 dev renders (about a minute).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from trichoscan.errors import InputError, ModelError, TrichoscanError  # noqa: E402
from trichoscan.segmentation import unet  # noqa: E402

TINY = {"base_channels": 4, "depth": 2}


def _lines_image(h: int = 64, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Skin-grey image with a few dark straight 'hairs', and their mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), bool)
    for _ in range(4):
        a = rng.uniform(0, np.pi)
        c = rng.uniform(0, min(h, w))
        dist = np.abs(np.cos(a) * yy - np.sin(a) * xx + c - (w - h) / 2)
        mask |= dist < rng.uniform(1.0, 3.0)
    rgb = np.full((h, w, 3), 0.7, np.float32)
    rgb[mask] = 0.15
    rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 1), mask


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One thread: faster than two on a shared 2-core machine for these tiny nets."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return unet.build_unet(TINY).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    return unet.save_model(_net(), {"name": "tiny-test"}, folder)


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (unet.CARD_FILE, unet.WEIGHTS_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (5, 7), (1, 33)])
def test_forward_pass_on_odd_sizes(shape):
    seg = unet.UNetSegmenter(_net(), {"working_um_per_px": 5.0}, device="cpu")
    rng = np.random.default_rng(1)
    mask = seg.segment(rng.random((*shape, 3), dtype=np.float32))
    assert mask.shape == shape and mask.dtype == bool


def test_grey_and_uint8_inputs_accepted():
    seg = unet.UNetSegmenter(_net(), {}, device="cpu")
    rgb, _ = _lines_image()
    as_u8 = (rgb * 255).round().astype(np.uint8)
    assert seg.segment(as_u8).shape == rgb.shape[:2]
    assert seg.segment(rgb[:, :, 0]).shape == rgb.shape[:2]
    with pytest.raises(InputError):
        seg.segment(np.zeros((4, 4, 2), np.float32))


@pytest.mark.parametrize("um_per_px", [2.5, 4.97, 9.0])
def test_resampling_to_working_scale_returns_input_shape(um_per_px):
    seg = unet.UNetSegmenter(_net(), {"working_um_per_px": 5.0}, device="cpu")
    rgb, _ = _lines_image(51, 77)
    assert seg.predict_proba(rgb, um_per_px=um_per_px).shape == (51, 77)
    assert seg._working_shape((51, 77), um_per_px) != (51, 77) or um_per_px == 4.97
    with pytest.raises(InputError):
        seg.segment(rgb, um_per_px=-1.0)


def test_tiled_and_whole_image_inference_agree():
    net = _net(3)
    whole = unet.UNetSegmenter(net, {}, device="cpu", tile_size=512)
    tiled = unet.UNetSegmenter(net, {}, device="cpu", tile_size=48, overlap=16)
    rgb, _ = _lines_image(100, 130)
    p_whole, p_tiled = whole.predict_proba(rgb), tiled.predict_proba(rgb)
    assert np.abs(p_whole - p_tiled).mean() < 2e-3
    agree = np.mean(whole.segment(rgb) == tiled.segment(rgb))
    assert agree >= 0.995


@pytest.mark.parametrize("length", [1, 15, 16, 100, 767, 768, 769, 2000])
def test_tiles_cover_every_pixel(length):
    starts, size, padded = unet._axis_tiles(length, 768, 64, 16)
    assert size % 16 == 0 and size <= 768 and padded >= length
    covered = np.zeros(padded, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all() and starts[-1] + size == padded


def test_batchnorm_fusion_keeps_output():
    net = _net(4)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = net(x)
        fused = unet._fuse_batchnorm(net)(x)
    assert torch.allclose(ref, fused, atol=1e-5)


def test_parameter_budget_of_default_architecture():
    net = unet.build_unet()
    n = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= n and n * 4 <= 10 * 1024**2


# ----------------------------------------------------------------------------- packaging


def test_save_load_round_trip_gives_identical_output(model_dir):
    rgb, _ = _lines_image()
    before = unet.UNetSegmenter(_net(), {"working_um_per_px": 5.0}, device="cpu")
    loaded = unet.load_model(model_dir, device="cpu")
    assert np.array_equal(before.predict_proba(rgb), loaded.predict_proba(rgb))
    card = json.loads((model_dir / unet.CARD_FILE).read_text())
    assert card["sha256"] == loaded.sha256 == unet.file_sha256(model_dir / unet.WEIGHTS_FILE)
    assert card["architecture"]["base_channels"] == 4 and card["name"] == "tiny-test"
    assert loaded.working_um_per_px == unet.WORKING_UM_PER_PX


def test_weights_available(model_dir, tmp_path):
    assert unet.weights_available(model_dir)
    assert not unet.weights_available(tmp_path)
    assert not unet.weights_available(tmp_path / "missing")


def test_missing_folder_or_files_raise_model_error(model_dir, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        unet.load_model(tmp_path / "missing")
    with pytest.raises(ModelError, match="model_card.json"):
        unet.load_model(tmp_path)
    folder = _copy_model(model_dir, tmp_path / "no_weights")
    (folder / unet.WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        unet.load_model(folder)


def test_truncated_weights_raise_model_error(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "m")
    data = (folder / unet.WEIGHTS_FILE).read_bytes()
    (folder / unet.WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match"):
        unet.load_model(folder)


def test_checksum_mismatch_raises_model_error(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "m")
    card = json.loads((folder / unet.CARD_FILE).read_text())
    card["sha256"] = "0" * 64
    (folder / unet.CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="SHA-256"):
        unet.load_model(folder)


def test_corrupt_files_raise_model_error(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "card")
    (folder / unet.CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        unet.load_model(folder)
    # garbage weights whose checksum the card does match: torch cannot read them
    folder = _copy_model(model_dir, tmp_path / "weights")
    (folder / unet.WEIGHTS_FILE).write_bytes(b"not a torch file" * 10)
    card = json.loads((folder / unet.CARD_FILE).read_text())
    card["sha256"] = unet.file_sha256(folder / unet.WEIGHTS_FILE)
    (folder / unet.CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot load"):
        unet.load_model(folder)


def test_weights_of_another_architecture_raise_model_error(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "m")
    card = json.loads((folder / unet.CARD_FILE).read_text())
    card["architecture"]["base_channels"] = 8
    (folder / unet.CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="architecture"):
        unet.load_model(folder)


# ----------------------------------------------------------------------------- training


def test_a_few_training_steps_lower_the_loss():
    from trichoscan import training

    torch.manual_seed(0)
    net = unet.build_unet(TINY).train()
    rgb, mask = _lines_image(48, 48)
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None]
    y = torch.from_numpy(mask[None, None].astype(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = training._loss(net(x), y, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def _data_dir(root: Path, n: int = 2) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        rgb, mask = _lines_image(72, 88, seed=i)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "images" / f"p{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"p{i}.png")
    return root


def test_train_writes_a_loadable_model_and_resumes(tmp_path):
    from trichoscan import training

    data = _data_dir(tmp_path / "data")
    cfg = training.TrainConfig(
        out_dir=tmp_path / "out",
        data_dir=data,
        data_licence="CC0-1.0 (test fixture)",
        synthetic=1,
        render_size=(48, 48),
        epochs=1,
        batch_size=2,
        crop_size=32,
        crops_per_image=2,
        num_threads=1,
        **TINY,
    )
    events = []
    out = training.train(cfg, progress=events.append)
    model = unet.load_model(out, device="cpu")
    card = model.card
    assert card["renderer_version"] and card["code_version"]
    licences = {d["licence"] for d in card["data"]}
    assert {"BSD-3-Clause", "CC0-1.0 (test fixture)"} <= licences
    assert card["training"]["seeds"]["render_seeds"] == [100_000, 100_000]
    assert {e.stage for e in events} == {"render", "train", "epoch"}
    assert (out / "checkpoints" / "last.pt").is_file()

    cfg.epochs, cfg.resume = 2, True
    training.train(cfg)
    lines = (out / training.LOG_FILE).read_text().splitlines()
    epochs = [json.loads(line).get("epoch") for line in lines]
    assert epochs == [None, 0, None, 1]  # data record, epoch 0; resumed: data, epoch 1

    scores = training.evaluate_masks(out, data)
    assert scores["n_images"] == 2 and 0.0 <= scores["mean_dice"] <= 1.0


def test_training_seeds_must_stay_in_the_training_range(tmp_path):
    from trichoscan import training

    for seed in (50_000, 1_000_000, 899_999):
        cfg = training.TrainConfig(out_dir=tmp_path, synthetic=5, synthetic_seed=seed)
        with pytest.raises(InputError, match="training range"):
            cfg.validate()
    with pytest.raises(InputError, match="nothing to train"):
        training.TrainConfig(out_dir=tmp_path).validate()


def test_train_config_from_toml(tmp_path):
    from trichoscan import training

    run = tmp_path / "run.toml"
    run.write_text('[train]\nout_dir = "m"\nsynthetic = 10\nepochs = 3\n')
    cfg = training.TrainConfig.from_toml(run, epochs=5, lr=None)
    assert cfg.out_dir == tmp_path / "m" and cfg.synthetic == 10 and cfg.epochs == 5
    run.write_text('out_dir = "m"\nbogus = 1\n')
    with pytest.raises(InputError, match="bogus"):
        training.TrainConfig.from_toml(run)


def test_export_onnx_needs_onnx(model_dir, tmp_path):
    import importlib.util

    from trichoscan import training

    if importlib.util.find_spec("onnx") is not None:
        pytest.skip("onnx installed")
    with pytest.raises(TrichoscanError, match="pip install onnx"):
        training.export_onnx(model_dir, tmp_path / "m.onnx")


# ----------------------------------------------------------------------------- model cards


def _card_reproduced(model_dir: Path) -> tuple[float, float, float, float, float]:
    """Re-score a model as its card says; ``(dice, card dice, cldice, card cldice, tol)``.

    Uses the card's ``evaluation.fixture`` (eight 512x640 renders: seconds) when it has
    one, else its dev renders (``evaluation.dev_renders``, seeds from the card: slower).
    The tolerance is the card's; cards written before cards stated one fall back to the
    recipe's ±0.02 (``benchmarks/train_shipped_model.toml``).
    """
    from trichoscan import training

    card = json.loads((model_dir / unet.CARD_FILE).read_text(encoding="utf-8"))
    evaluation = card.get("evaluation") or {}
    fixture = evaluation.get("fixture")
    if fixture:
        first, last = fixture["seeds"]
        size, um = fixture["size"], fixture["um_per_px"]
        want_dice, want_cldice = fixture["dice"], fixture["cldice"]
        tolerance = fixture["tolerance"]
    else:
        dev = evaluation.get("dev_renders") or {}
        if "dev_dice" not in dev:
            pytest.fail(f"{model_dir}: the model card records no fixture or dev Dice")
        first, last = dev.get("seeds") or card["training"]["seeds"]["dev_seeds"]
        size = dev.get("size")  # older cards: the renderer's default size
        um = dev.get("um_per_px") or card["training"]["recipe"]["render_um_per_px"]
        want_dice, want_cldice = dev["dev_dice"], dev["dev_cldice"]
        tolerance = dev.get("tolerance", training.CARD_TOLERANCE)
    got = training.evaluate_renders(
        model_dir,
        range(first, last + 1),
        um_per_px=tuple(um),
        size=None if size is None else tuple(size),
        device="cpu",
    )
    return got["mean_dice"], want_dice, got["mean_cldice"], want_cldice, tolerance


def test_trained_model_card_records_scores_it_reproduces(tmp_path, monkeypatch):
    from trichoscan import training

    monkeypatch.setattr(training, "FIXTURE_SEEDS", (99_900, 99_901))  # 2 renders: fast
    cfg = training.TrainConfig(
        out_dir=tmp_path / "out",
        data_dir=_data_dir(tmp_path / "data"),
        dev_synthetic=1,
        epochs=1,
        batch_size=2,
        crop_size=32,
        crops_per_image=1,
        num_threads=1,
        **TINY,
    )
    out = training.train(cfg)
    card = json.loads((out / unet.CARD_FILE).read_text())
    fixture = card["evaluation"]["fixture"]
    assert fixture["seeds"] == list(training.FIXTURE_SEEDS)
    assert fixture["tolerance"] == training.CARD_TOLERANCE
    assert card["evaluation"]["dev_renders"]["seeds"] == [50_000, 50_000]
    dice, want, cl, want_cl, tol = _card_reproduced(out)
    assert abs(dice - want) <= 1e-6 and abs(cl - want_cl) <= 1e-6  # same machine: exact
    # a card without the fixture block is checked on its dev renders instead
    del card["evaluation"]["fixture"]
    (out / unet.CARD_FILE).write_text(json.dumps(card))
    dice, want, cl, want_cl, tol = _card_reproduced(out)
    assert abs(dice - want) <= tol and abs(cl - want_cl) <= tol
    # ... and record_fixture_evaluation puts the block back, weights untouched
    assert training.record_fixture_evaluation(out) == fixture
    assert unet.load_model(out).sha256 == card["sha256"]


def _installed_model_dir() -> Path | None:
    """The shipped model folder, when its weights are installed."""
    candidates = [unet.DEFAULT_MODEL_DIR]
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("trichoscan.models"))))
    except (ModuleNotFoundError, TypeError):
        pass
    for folder in candidates:
        if (folder / unet.WEIGHTS_FILE).is_file():
            return folder
    return None


def test_shipped_weights_reproduce_their_model_card():
    folder = _installed_model_dir()
    if folder is None:
        pytest.skip("no shipped U-Net weights installed (models/weights.pt)")
    dice, want, cl, want_cl, tol = _card_reproduced(folder)
    assert abs(dice - want) <= tol, f"Dice {dice:.4f} vs card {want:.4f} (±{tol})"
    assert abs(cl - want_cl) <= tol, f"clDice {cl:.4f} vs card {want_cl:.4f} (±{tol})"
