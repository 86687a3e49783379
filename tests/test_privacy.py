"""Privacy: no metadata of the input photos in any output; stable pseudonyms on request."""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
import unicodedata
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from trichoscan import synth
from trichoscan.batch import PSEUDONYM_KEY_FILE, pseudonym, run_batch
from trichoscan.cli import app
from trichoscan.errors import EXIT_OK, EXIT_PARTIAL, InputError
from trichoscan.pipeline import PipelineConfig

CONFIG = PipelineConfig(segmenter="classical")
PHOTO = synth.SynthConfig(height=160, width=200, um_per_px=(5.0, 5.0))
JANE = "Jane Privacy-Doe"
ZOE = "Zoë Ünicode"
#: What the photos' metadata carry; none of it may reach an output.
SECRETS = {
    "make": "AcmeDermCorp",
    "model": "DermaScope-X1000",
    "description": "Scalp of Jane Privacy-Doe",
    "body serial": "SN-PRIV-98765",
    "lens serial": "LSN-4455",
    "owner": "Dr Owner-Secret",
    "comment": "COMMENT-PRIVATE-77",
    "gps ref": "GPSPRIVATE",
}
GPS = ((48.0, 51.0, 29.6), (2.0, 17.0, 40.2))


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = SECRETS["make"]
    exif[0x0110] = SECRETS["model"]
    exif[0x010E] = SECRETS["description"]
    exif[0x8769] = {  # Exif IFD: serial numbers and owner
        0xA431: SECRETS["body serial"],
        0xA435: SECRETS["lens serial"],
        0xA430: SECRETS["owner"],
    }
    exif[0x8825] = {  # GPS IFD
        1: "N",
        2: GPS[0],
        3: "E",
        4: GPS[1],
        0x12: SECRETS["gps ref"],  # GPSMapDatum
    }
    return exif


def _save(path: Path, seed: int, metadata: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(synth.render(seed, PHOTO).image)
    extra = {"exif": _exif(), "comment": SECRETS["comment"].encode()} if metadata else {}
    image.save(path, "JPEG", quality=92, **extra)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two patients named in folders (and a file name), EXIF/GPS in every photo, one broken."""
    root = tmp_path_factory.mktemp("privacy") / "study"
    _save(root / JANE / "vertex" / "2026-01-05" / f"{JANE}_01.jpg", 5401)
    _save(root / JANE / "vertex" / "2026-01-05" / "b.jpg", 5402)
    _save(root / JANE / "vertex" / "2026-03-05" / f"{JANE}_01.jpg", 5401)
    _save(root / JANE / "vertex" / "2026-03-05" / "b.jpg", 5403)
    _save(root / ZOE / "frontal" / "2026-02-01" / "c.jpg", 5404)
    broken = root / ZOE / "frontal" / "2026-02-01" / "broken.jpg"
    broken.write_bytes((root / ZOE / "frontal" / "2026-02-01" / "c.jpg").read_bytes()[:600])
    # The test is only meaningful if the secrets are really in the inputs.
    data = (root / JANE / "vertex" / "2026-01-05" / "b.jpg").read_bytes()
    assert all(s.encode() in data for s in SECRETS.values())
    return root


def _forbidden(names: tuple[str, ...] = ()) -> list[bytes]:
    texts = [*SECRETS.values(), *names]
    out = []
    for text in texts:
        for form in {text, unicodedata.normalize("NFD", text)}:
            out += [form.encode("utf-8"), json.dumps(form)[1:-1].encode("ascii")]
    # GPS coordinates as EXIF rationals (big- and little-endian) and the EXIF header.
    for deg, minute, sec in GPS:
        for order in "<>":
            out.append(
                struct.pack(f"{order}IIIIII", int(deg), 1, int(minute), 1, int(sec * 10), 10)
            )
    out.append(b"Exif\x00\x00")
    return out


def _leaks(out: Path, forbidden: list[bytes]) -> list[str]:
    found = []
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(out)}: {s!r}" for s in forbidden if s in data]
    return found


def _png_chunks(path: Path) -> set[bytes]:
    data, pos, kinds = path.read_bytes(), 8, set()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.add(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_analyze_outputs_carry_no_metadata(study, tmp_path):
    out = tmp_path / "out"
    photos = [str(p) for p in sorted(study.rglob("b.jpg"))]
    args = ["analyze", *photos, "--out", str(out), "--um-per-px", "5"]
    result = CliRunner().invoke(app, [*args, "--segmenter", "classical"])
    assert result.exit_code == EXIT_OK, result.stderr
    overlays = sorted(out.rglob("*_overlay.png"))
    assert len(overlays) == 2
    for png in overlays:  # pixels only: no eXIf, tEXt, iTXt, zTXt or iCCP chunk
        assert _png_chunks(png) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
    assert _leaks(out, _forbidden()) == []


def test_batch_outputs_carry_no_metadata(study, tmp_path):
    out = tmp_path / "out"
    result = run_batch(study, out, config=CONFIG, calibration=5.0)
    assert result.exit_code == EXIT_PARTIAL and result.n_failed == 1
    assert _leaks(out, _forbidden()) == []  # the cache included
    # Without --anonymise the patients' folder names are kept (and the search finds them).
    assert _leaks(out, _forbidden((JANE,)))


def test_anonymised_batch_names_no_patient(study, tmp_path):
    out = tmp_path / "out"
    result = run_batch(study, out, config=CONFIG, calibration=5.0, anonymise=True)
    assert result.exit_code == EXIT_PARTIAL and result.n_failed == 1
    # Not in any table, message, cache entry or settings file; nor any absolute path.
    assert _leaks(out, _forbidden((JANE, ZOE, "Privacy-Doe", "nicode", str(study)))) == []

    key = (out / PSEUDONYM_KEY_FILE).read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    jane, zoe = (pseudonym(name, bytes.fromhex(key)) for name in (JANE, ZOE))
    assert re.fullmatch(r"anon-[0-9a-f]{12}", jane) and jane != zoe
    images = _rows(out / "images.csv")
    assert {r["patient"] for r in images} == {jane, zoe}
    assert f"{jane}/vertex/2026-01-05/{jane}_01.jpg" in {r["path"] for r in images}
    assert {r["patient"] for r in _rows(out / "sessions.csv")} == {jane, zoe}
    assert {r["patient"] for r in _rows(out / "changes.csv")} == {jane}
    (error,) = _rows(out / "errors.csv")
    assert error["path"] == f"{zoe}/frontal/2026-02-01/broken.jpg"
    assert error["error"].startswith(error["path"])  # the message names the photo, not the patient

    # Re-runs keep the pseudonyms (and the tables) byte for byte.
    before = {n: (out / n).read_bytes() for n in ("images.csv", "sessions.csv", "errors.csv")}
    again = run_batch(study, out, config=CONFIG, calibration=5.0, anonymise=True)
    assert again.n_analysed == 0
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name

    # Another output folder has another key, hence other pseudonyms ...
    other = tmp_path / "other"
    run_batch(study, other, config=CONFIG, calibration=5.0, anonymise=True, compare_sessions=False)
    assert jane not in (other / "images.csv").read_text(encoding="utf-8")
    # ... unless the key is copied there.
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(out / PSEUDONYM_KEY_FILE, shared / PSEUDONYM_KEY_FILE)
    run_batch(study, shared, config=CONFIG, calibration=5.0, anonymise=True, compare_sessions=False)
    assert (shared / "images.csv").read_bytes() == before["images.csv"]


def test_pseudonym_is_stable_and_normalised():
    key = bytes(range(32))
    nfc, nfd = ZOE, unicodedata.normalize("NFD", ZOE)
    assert nfc != nfd and pseudonym(nfc, key) == pseudonym(nfd, key) == pseudonym(f" {nfc} ", key)
    assert pseudonym(ZOE, key) != pseudonym(ZOE, bytes(32))


def test_damaged_key_is_refused_not_replaced(study, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / PSEUDONYM_KEY_FILE).write_text("not a key\n")
    with pytest.raises(InputError, match="damaged"):
        run_batch(study, out, config=CONFIG, calibration=5.0, anonymise=True)
    assert (out / PSEUDONYM_KEY_FILE).read_text() == "not a key\n"


def test_cli_anonymise(study, tmp_path):
    out = tmp_path / "out"
    args = ["batch", str(study), "--out", str(out), "--um-per-px", "5", "--anonymise"]
    result = CliRunner().invoke(app, [*args, "--segmenter", "classical", "--no-compare"])
    assert result.exit_code == EXIT_PARTIAL, result.stderr
    assert "Traceback" not in result.stderr
    assert _leaks(out, _forbidden((JANE, ZOE))) == []
    assert json.loads((out / "batch.json").read_text())["anonymised"] is True
