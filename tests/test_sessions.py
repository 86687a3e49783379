"""Session data model: folder and manifest readers, scale shared within a session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from trichoscan.calibration import Calibration
from trichoscan.errors import InputError
from trichoscan.sessions import (
    Photo,
    Session,
    group_photos,
    read_folder,
    read_manifest,
    read_study,
    share_session_scale,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for rel in [
        "P2/vertex/2026-03-01/b.jpg",
        "P2/vertex/2026-03-01/a.png",
        "P2/vertex/2026-01-15/a.JPG",
        "P2/frontal/2026-01-15/x.tif",
        "P1/vertex/2026-02-01/1.jpeg",
        # sidecars and hidden files are not photos
        "P2/vertex/2026-03-01/a_mask.png",
        "P2/vertex/2026-03-01/a_field.png",
        "P2/vertex/2026-03-01/a_overlay.png",
        "P2/vertex/2026-03-01/a.json",
        "P2/vertex/2026-03-01/.hidden.jpg",
        ".cache/x/y/z.jpg",
        "notes.txt",
    ]:
        touch(root / rel)
    return root


def test_read_folder_builds_the_tree_sorted(tree):
    study = read_folder(tree)
    assert [p.id for p in study.patients] == ["P1", "P2"]
    p2 = study.patients[1]
    assert [s.name for s in p2.sites] == ["frontal", "vertex"]
    vertex = p2.sites[1]
    assert [s.date for s in vertex.sessions] == [dt.date(2026, 1, 15), dt.date(2026, 3, 1)]
    assert vertex.baseline.date == dt.date(2026, 1, 15)
    last = vertex.sessions[1]
    assert [p.path.name for p in last.photos] == ["a.png", "b.jpg"]
    assert last.key == ("P2", "vertex", "2026-03-01")
    assert len(study.photos()) == 5
    assert all(p.path.is_absolute() for p in study.photos())
    assert study.photos() == sorted(study.photos(), key=lambda p: p.path)
    assert read_study(tree) == study


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("P1/vertex/photo.jpg", "PATIENT/SITE/YYYY-MM-DD"),
        ("P1/vertex/2026-13-01/a.jpg", "2026-13-01"),
        ("P1/vertex/march/a.jpg", "not a YYYY-MM-DD date"),
    ],
)
def test_read_folder_rejects_layout_errors(tmp_path, rel, message):
    touch(tmp_path / rel)
    with pytest.raises(InputError, match=message):
        read_folder(tmp_path)


def test_read_folder_without_photos_or_folder(tmp_path):
    touch(tmp_path / "P1/vertex/2026-01-01/a_mask.png")
    with pytest.raises(InputError, match="no photos"):
        read_folder(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        read_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="no such folder or manifest"):
        read_study(tmp_path / "missing.csv")


def test_read_manifest_paths_relative_to_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "clinic"
    touch(folder / "img" / "a.jpg")
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "path,patient,site,date,um_per_px,device\n"
        "img/a.jpg,P1,vertex,2026-01-01,4.5,\n"
        "\n"
        f"{tmp_path / 'abs.jpg'},P1,vertex,2026-01-01,,dino-lite\n"
        "img/b.jpg,P1,vertex,2026-02-01,,\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working folder
    study = read_manifest(manifest)
    photos = {p.path.name: p for p in study.photos()}
    assert photos["a.jpg"].path == (folder / "img" / "a.jpg").resolve()
    assert photos["a.jpg"].um_per_px == 4.5
    assert photos["a.jpg"].calibration == 4.5
    assert photos["abs.jpg"].device == "dino-lite"
    assert photos["abs.jpg"].calibration == "dino-lite"
    assert photos["b.jpg"].calibration is None
    site = study.patients[0].sites[0]
    assert [len(s.photos) for s in site.sessions] == [2, 1]
    assert read_study(manifest) == study


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("path,patient,date\na.jpg,P1,2026-01-01\n", "line 1: missing column.*site"),
        (
            "path,patient,site,date\na.jpg,P1,vertex,2026-01-01\nb.jpg,P1,,2026-01-01\n",
            "line 3: empty 'site'",
        ),
        ("path,patient,site,date\na.jpg,P1,vertex,01/02/2026\n", "line 2: date '01/02/2026'"),
        (
            "path,patient,site,date,um_per_px\na.jpg,P1,vertex,2026-01-01,abc\n",
            "line 2: .*must be a number",
        ),
        (
            "path,patient,site,date,um_per_px\na.jpg,P1,vertex,2026-01-01,900\n",
            "line 2: .*plausible",
        ),
        (
            "path,patient,site,date,um_per_px,device\na.jpg,P1,vertex,2026-01-01,4,dino\n",
            "line 2: give um_per_px or device",
        ),
        ("path,patient,site,date\na.jpg,P1,vertex,2026-01-01,extra\n", "line 2: more cells"),
        (
            "path,patient,site,date\na.jpg,P1,vertex,2026-01-01\na.jpg,P1,vertex,2026-01-02\n",
            "listed twice",
        ),
        ("path,patient,site,date\n", "lists no photos"),
    ],
)
def test_malformed_manifest_names_the_line(tmp_path, body, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(body, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_manifest(manifest)


def test_unreadable_manifest(tmp_path):
    with pytest.raises(InputError, match="cannot read manifest"):
        read_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(InputError):
        read_manifest(bad)


def _session(*photos: tuple[str, str | None]) -> Session:
    day = dt.date(2026, 1, 1)
    items = [Photo("P", "vertex", day, Path(f"/x/{n}.jpg"), device=d) for n, d in photos]
    return group_photos(items).sessions()[0]


def test_scale_read_from_one_photo_applies_to_same_device_siblings():
    session = _session(("a", None), ("b", None), ("c", "other"), ("d", None), ("e", None))
    p = {ph.path.stem: ph.path for ph in session.photos}
    cals = {
        p["a"]: Calibration(4.0, "photo", detail="scale bar"),
        p["b"]: Calibration.unknown(),
        p["c"]: Calibration.unknown(),  # another device: its scale is not shared
        p["d"]: Calibration(3.0, "given"),  # a given scale is never overridden
        p["e"]: Calibration(5.0, "photo"),
    }
    shared = share_session_scale(session, cals)
    assert set(shared) == {p["b"]}
    assert shared[p["b"]].um_per_px == pytest.approx(4.5)  # median of 4.0 and 5.0
    assert shared[p["b"]].source == "photo"
    assert "a.jpg" in shared[p["b"]].detail and "e.jpg" in shared[p["b"]].detail
    assert share_session_scale(session, {p["b"]: Calibration.unknown()}) == {}
