"""Count-based evaluation on Pascal VOC box annotations (``training.evaluate_boxes``).

A tiny VOC set is written from renders (development seeds): one box per hair the renderer
counts under the ``inside`` rule (the FDU labels' convention), with some corners swapped
and one box flattened to zero width, as in the real FDU files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from trichoscan import synth, training
from trichoscan.cli import app
from trichoscan.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    CalibrationError,
    InputError,
)
from trichoscan.pipeline import Pipeline, PipelineConfig

runner = CliRunner()
SEEDS = (31, 32, 33)  # development range (benchmarks/seeds.toml)
UM_PER_PX = 4.0  # given to every analysis, so no scale bar is read from the photos
CLASSICAL = training.CLASSICAL  # the word that selects the classical segmenter
FDU = Path(__file__).resolve().parents[2] / "shared" / "data" / "fdu"


def _voc_xml(filename: str, size: tuple[int, int], boxes: list[tuple], tag: str) -> str:
    """A VOC annotation; ``boxes`` are ``(x0, y0, x1, y1)`` written as given."""
    objects = "".join(
        f"<object><{tag}>hair</{tag}><pose>None</pose><difficult>0</difficult><bndbox>"
        f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
        "</bndbox></object>"
        for x0, y0, x1, y1 in boxes
    )
    h, w = size
    return (
        f"<annotation><folder>data</folder><filename>{filename}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"{objects}</annotation>"
    )


def _truth_boxes(render: synth.Render) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the hairs the renderer counts under the inside rule."""
    h, w = render.image.shape[:2]
    boxes = []
    for hair in render.hairs:
        if not hair.counted_inside:
            continue
        xy = np.asarray(hair.polyline_xy, float)
        x0, y0 = np.clip(np.floor(xy.min(axis=0)), 0, [w - 1, h - 1]).astype(int)
        x1, y1 = np.clip(np.ceil(xy.max(axis=0)), 0, [w - 1, h - 1]).astype(int)
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    return boxes


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory) -> tuple[Path, dict]:
    """``images/`` + ``annotations/`` + ``list.txt`` from three renders, and what was written."""
    root = tmp_path_factory.mktemp("voc")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    written: dict[str, dict] = {}
    config = synth.SynthConfig(height=256, width=320)
    for k, seed in enumerate(SEEDS):
        name = f"r{seed}"
        render = synth.render(seed, config)
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), render.image[:, :, ::-1])
        boxes = _truth_boxes(render)
        assert boxes, f"seed {seed} has no inside hair; pick another development seed"
        # every other box with its corners swapped, as ~15 % of the FDU boxes are
        written_boxes = [(b[2], b[3], b[0], b[1]) if i % 2 else b for i, b in enumerate(boxes)]
        swapped = sum(1 for x0, y0, x1, y1 in written_boxes if x0 > x1 or y0 > y1)
        degenerate = 0
        if k == 0:  # a zero-width box is still one hair
            x0, y0, _, y1 = written_boxes[0]
            written_boxes[0] = (x0, y0, x0, y1)
            degenerate = 1
        tag = "class" if k % 2 == 0 else "name"  # FDU uses <class>, standard VOC <name>
        xml = _voc_xml(f"{name}.jpg", render.image.shape[:2], written_boxes, tag)
        (root / "annotations" / f"{name}.xml").write_text(xml)
        written[name] = {
            "true": len(boxes),
            "swapped": swapped,
            "degenerate": degenerate,
            "path": root / "images" / f"{name}.jpg",
        }
    # list.txt fixes the order (reversed here) and names one image that is not there
    names = list(reversed(written))
    (root / "list.txt").write_text("\n".join([*names, "not_there"]) + "\n")
    return root, written


@pytest.fixture(scope="module")
def classical_result(voc_dir) -> training.BoxEvaluation:
    root, _ = voc_dir
    return training.evaluate_boxes(CLASSICAL, root, calibration=UM_PER_PX)


# ----------------------------------------------------------------------------- reading


def test_read_voc_orders_swapped_corners_and_keeps_degenerate_boxes(tmp_path):
    boxes = [(10, 20, 30, 40), (30, 40, 10, 20), (50, 5, 45, 60), (7, 8, 7, 30)]
    path = tmp_path / "a.xml"
    path.write_text(_voc_xml("a.jpg", (100, 120), boxes, "class"))
    ann = training.read_voc(path)
    assert ann.count == 4 and ann.filename == "a.jpg" and ann.size == (100, 120)
    b = ann.boxes
    assert (b[0].xmin, b[0].ymin, b[0].xmax, b[0].ymax) == (10, 20, 30, 40)
    assert (b[1].xmin, b[1].ymin, b[1].xmax, b[1].ymax) == (10, 20, 30, 40)
    assert (b[2].xmin, b[2].ymin, b[2].xmax, b[2].ymax) == (45, 5, 50, 60)
    assert [x.swapped for x in b] == [False, True, True, False]
    assert [x.degenerate for x in b] == [False, False, False, True]
    assert ann.n_swapped == 2 and ann.n_degenerate == 1
    assert {x.label for x in b} == {"hair"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<annotation><object><name>h</name>", "not valid XML"),
        ("<html></html>", "not a Pascal VOC"),
        ("<annotation><object><name>h</name></object></annotation>", "no <bndbox>"),
        (
            "<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax>"
            "<ymax>3</ymax></bndbox></object></annotation>",
            "numeric <xmin>",
        ),
    ],
)
def test_read_voc_refuses_corrupt_files(tmp_path, text, match):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        training.read_voc(path)
    with pytest.raises(InputError, match="cannot read"):
        training.read_voc(tmp_path / "missing.xml")


# ----------------------------------------------------------------------------- maths


def test_count_errors_match_hand_computed_values():
    s = training.count_errors([10, 4, 0, 5], [12, 3, 1, 5])
    # errors 2, -1, 1, 0
    assert s["n"] == 4
    assert s["mae"] == pytest.approx(1.0)
    assert s["bias"] == pytest.approx(0.5)
    assert s["rmse"] == pytest.approx(math.sqrt(6 / 4))
    # % over the images with true > 0: 20 %, 25 %, 0 %
    assert s["mean_abs_pct_error"] == pytest.approx(15.0) and s["n_pct"] == 3
    assert s["mean_true"] == pytest.approx(4.75) and s["mean_predicted"] == pytest.approx(5.25)
    empty = training.count_errors([], [])
    assert empty["n"] == 0 and math.isnan(empty["mae"])
    with pytest.raises(InputError):
        training.count_errors([1, 2], [1])


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_boxes_counts_and_summary(voc_dir, classical_result):
    root, written = voc_dir
    r = classical_result
    # list.txt order; its missing name is reported, not fatal
    assert [s.name for s in r.per_image] == list(reversed(written))
    assert r.missing == ["not_there"]
    # the same pipeline run independently gives the same predictions
    pipe = Pipeline(PipelineConfig(segmenter="classical", count_rule="inside"))
    for s in r.per_image:
        w = written[s.name]
        assert s.true_count == w["true"]
        assert (s.n_swapped, s.n_degenerate) == (w["swapped"], w["degenerate"])
        expected = pipe.analyze(w["path"], calibration=UM_PER_PX).hair_count
        assert s.predicted_count == expected and s.error is None
        assert s.count_error == expected - w["true"] and s.um_per_px == UM_PER_PX
    err = np.array([s.predicted_count - s.true_count for s in r.per_image], float)
    true = np.array([s.true_count for s in r.per_image], float)
    assert r.n == 3 and r.n_failed == 0
    assert r.mae == pytest.approx(np.abs(err).mean())
    assert r.bias == pytest.approx(err.mean())
    assert r.rmse == pytest.approx(np.sqrt((err**2).mean()))
    assert r.mean_abs_pct_error == pytest.approx((100 * np.abs(err) / true).mean())
    assert r.mean_true == pytest.approx(true.mean())
    assert (r.segmenter, r.model_sha256, r.count_rule) == ("classical", "", "inside")
    assert "4 µm/px" in r.calibration
    d = r.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["per_image"][0]["count_error"] == r.per_image[0].count_error


def test_count_rule_and_device_profile_are_used(voc_dir):
    root, written = voc_dir
    r = training.evaluate_boxes(
        CLASSICAL, root, calibration="fdu-70x-quadrant", count_rule="visible"
    )
    pipe = Pipeline(PipelineConfig(segmenter="classical", count_rule="visible"))
    name = r.per_image[0].name
    expected = pipe.analyze(written[name]["path"], calibration="fdu-70x-quadrant").hair_count
    assert r.per_image[0].predicted_count == expected
    assert r.count_rule == "visible" and "fdu-70x-quadrant" in r.calibration


def _copy_dataset(root, dest) -> None:
    """Copy a VOC folder's images and annotations into ``dest`` (to spoil one file there)."""
    for sub in ("images", "annotations"):
        (dest / sub).mkdir()
        for f in (root / sub).iterdir():
            (dest / sub / f.name).write_bytes(f.read_bytes())


def test_a_failed_image_is_reported_and_left_out_of_the_summary(voc_dir, tmp_path):
    root, written = voc_dir
    _copy_dataset(root, tmp_path)
    name = next(iter(written))
    (tmp_path / "images" / f"{name}.jpg").write_bytes(b"not a photo")
    r = training.evaluate_boxes(CLASSICAL, tmp_path, calibration=UM_PER_PX)
    bad = [s for s in r.per_image if s.name == name][0]
    assert bad.predicted_count is None and bad.error and bad.count_error is None
    assert r.n == 2 and r.n_failed == 1


def test_bad_data_folders_raise_input_error(voc_dir, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        training.evaluate_boxes(CLASSICAL, tmp_path / "missing")
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    with pytest.raises(InputError, match="no image with a matching annotation"):
        training.evaluate_boxes(CLASSICAL, tmp_path)
    root, _ = voc_dir
    with pytest.raises(InputError, match="count_rule"):
        training.evaluate_boxes(CLASSICAL, root, count_rule="bogus")
    with pytest.raises(CalibrationError):
        training.evaluate_boxes(CLASSICAL, root, calibration="no-such-scope")


def test_corrupt_annotation_fails_before_any_analysis(voc_dir, tmp_path):
    root, written = voc_dir
    _copy_dataset(root, tmp_path)
    name = next(iter(written))
    (tmp_path / "annotations" / f"{name}.xml").write_text("<annotation><object>")
    calls = []
    with pytest.raises(InputError, match="not valid XML"):
        training.evaluate_boxes(CLASSICAL, tmp_path, progress=lambda d, t: calls.append(d))
    assert calls == []


def test_detect_layout(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        training.detect_layout(tmp_path / "missing")
    with pytest.raises(InputError, match="no images/"):
        training.detect_layout(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="neither"):
        training.detect_layout(tmp_path)
    (tmp_path / "annotations").mkdir()
    assert training.detect_layout(tmp_path) == "boxes"
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="both"):
        training.detect_layout(tmp_path)
    (tmp_path / "annotations").rmdir()
    assert training.detect_layout(tmp_path) == "masks"


def test_classical_evaluation_never_imports_torch(voc_dir):
    root, _ = voc_dir
    code = (
        "import sys; from trichoscan import training; "
        f"r = training.evaluate_boxes('classical', {str(root)!r}, calibration=4.0); "
        "assert r.n == 3, r; assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_unet_model_folder_is_evaluated_the_same_way(voc_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from trichoscan.segmentation import unet

    torch.manual_seed(0)
    folder = unet.save_model(
        unet.build_unet({"base_channels": 4, "depth": 2}).eval(), {}, tmp_path / "m"
    )
    root, written = voc_dir
    r = training.evaluate_boxes(folder, root, calibration=UM_PER_PX)
    assert r.segmenter == "unet" and r.model_sha256 == unet.file_sha256(folder / "weights.pt")
    assert r.n == 3 and [s.true_count for s in r.per_image] == [
        written[s.name]["true"] for s in r.per_image
    ]


@pytest.mark.skipif(not FDU.is_dir(), reason="FDU data not present (../shared/data/fdu)")
def test_reads_every_fdu_val_annotation():
    import xml.etree.ElementTree as ET

    files = sorted((FDU / "val" / "annotations").glob("*.xml"))
    anns = [training.read_voc(p) for p in files]
    assert sum(a.count for a in anns) == sum(
        len(ET.parse(p).getroot().findall("object")) for p in files
    )
    assert sum(a.n_swapped for a in anns) > 0 and sum(a.n_degenerate for a in anns) > 0
    assert all(b.xmin <= b.xmax and b.ymin <= b.ymax for a in anns for b in a.boxes)


# ----------------------------------------------------------------------------- command line


def test_cli_evaluate_boxes_writes_summary_csv_and_json(voc_dir, classical_result, tmp_path):
    root, _ = voc_dir
    csv_path, json_path = tmp_path / "per_image.csv", tmp_path / "scores.json"
    args = ["evaluate", "--model", "classical", "--data", str(root), "--um-per-px", "4"]
    result = runner.invoke(app, [*args, "--csv", str(csv_path), "--json", str(json_path)])
    assert result.exit_code == EXIT_OK, result.output
    assert f"MAE {classical_result.mae:.2f}" in result.stdout
    assert "3 images (0 failed)" in result.stdout
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("name,true_count,predicted_count,count_error") and len(lines) == 4
    assert json.loads(json_path.read_text())["mae"] == pytest.approx(classical_result.mae)


def test_cli_evaluate_exit_codes(voc_dir, tmp_path):
    root, written = voc_dir
    base = ["evaluate", "--model", "classical"]

    def run(*extra: str):
        return runner.invoke(app, [*base, *extra])

    # usage errors: 2
    assert run("--data", str(root), "--um-per-px", "4", "--device", "x").exit_code == EXIT_USAGE
    assert run("--data", str(root), "--count-rule", "most").exit_code == EXIT_USAGE
    assert run("--data", str(root), "--layout", "polygons").exit_code == EXIT_USAGE
    # nothing can be evaluated: 4, one error line, no traceback
    for data in (tmp_path / "missing", tmp_path):
        result = run("--data", str(data))
        assert result.exit_code == EXIT_FAILED
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr
    assert run("--data", str(root), "--device", "no-such-scope").exit_code == EXIT_FAILED
    bad = tmp_path / "bad"
    for sub in ("images", "annotations"):
        (bad / sub).mkdir(parents=True)
        for f in (root / sub).iterdir():
            (bad / sub / f.name).write_bytes(f.read_bytes())
    name = next(iter(written))
    xml = bad / "annotations" / f"{name}.xml"
    xml.write_text("<annotation><object>")
    result = run("--data", str(bad))
    assert result.exit_code == EXIT_FAILED and "not valid XML" in result.stderr
    # one photo unreadable, the others evaluated: 3
    xml.write_text((root / "annotations" / f"{name}.xml").read_text())
    (bad / "images" / f"{name}.jpg").write_bytes(b"garbage")
    result = run("--data", str(bad), "--um-per-px", "4")
    assert result.exit_code == EXIT_PARTIAL and f"error: {name}:" in result.stderr
    assert "2 images (1 failed)" in result.stdout


def test_cli_evaluate_masks_with_the_classical_segmenter(voc_dir, tmp_path):
    root, written = voc_dir
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    config = synth.SynthConfig(height=256, width=320)
    render = synth.render(SEEDS[0], config)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), render.image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), render.mask.astype(np.uint8) * 255)
    result = runner.invoke(
        app, ["evaluate", "--model", "classical", "--data", str(tmp_path), "--um-per-px", "4"]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "1 images: Dice" in result.stdout and "classical" in result.stdout
    # both annotation folders: the layout must be chosen
    (tmp_path / "annotations").mkdir()
    result = runner.invoke(app, ["evaluate", "--model", "classical", "--data", str(tmp_path)])
    assert result.exit_code == EXIT_FAILED and "--layout" in result.stderr
    result = runner.invoke(
        app, ["evaluate", "--model", "classical", "--data", str(tmp_path), "--layout", "masks"]
    )
    assert result.exit_code == EXIT_OK
