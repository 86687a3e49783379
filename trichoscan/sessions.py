"""Session data model: patient -> site -> session (date) -> photos.

Photos come either from the folder convention ``PATIENT/SITE/YYYY-MM-DD/*.jpg`` (as
``sample_images/`` is laid out) or from a manifest CSV with the columns ``path``,
``patient``, ``site``, ``date`` and optionally ``um_per_px`` or ``device``.

Everything here is a frozen dataclass or a pure function; nothing is read except the
folder listing and the manifest text (photos are not decoded).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .calibration import Calibration, validate_um_per_px
from .errors import CalibrationError, InputError

__all__ = [
    "PHOTO_SUFFIXES",
    "SIDECAR_SUFFIXES",
    "Photo",
    "Session",
    "Site",
    "Patient",
    "Study",
    "is_photo_file",
    "group_photos",
    "read_folder",
    "read_manifest",
    "read_study",
    "share_session_scale",
]

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
#: Files next to photos that are not photos: renderer truth and our own outputs.
SIDECAR_SUFFIXES = ("_mask", "_field", "_overlay", "_subsurface")
MANIFEST_REQUIRED = ("path", "patient", "site", "date")


@dataclass(frozen=True, order=True)
class Photo:
    """One photo of one site at one session.

    Attributes
    ----------
    path : Path
        Absolute path of the photo.
    patient, site : str
        Patient id and scalp site (``vertex``, ``frontal``, ...).
    date : datetime.date
        Session date.
    um_per_px : float, optional
        Scale given for this photo (manifest), in µm per pixel.
    device : str, optional
        Device-profile name (manifest); photos of one session share a scale read from
        the photo only when they come from the same device.
    """

    patient: str
    site: str
    date: dt.date
    path: Path
    um_per_px: float | None = None
    device: str | None = None

    @property
    def calibration(self) -> float | str | None:
        """The ``calibration`` argument for :func:`trichoscan.analyze` (scale, device or None)."""
        return self.um_per_px if self.um_per_px is not None else self.device


@dataclass(frozen=True)
class Session:
    """The photos of one site taken on one date, sorted by path."""

    patient: str
    site: str
    date: dt.date
    photos: tuple[Photo, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        """``(patient, site, 'YYYY-MM-DD')``."""
        return (self.patient, self.site, self.date.isoformat())


@dataclass(frozen=True)
class Site:
    """One scalp site of one patient, sessions sorted by date (the first is the baseline)."""

    patient: str
    name: str
    sessions: tuple[Session, ...]

    @property
    def baseline(self) -> Session:
        return self.sessions[0]


@dataclass(frozen=True)
class Patient:
    """A patient and their sites, sorted by name."""

    id: str
    sites: tuple[Site, ...]


@dataclass(frozen=True)
class Study:
    """Every patient of a folder or manifest, sorted by id."""

    patients: tuple[Patient, ...]

    def sites(self) -> list[Site]:
        return [site for patient in self.patients for site in patient.sites]

    def sessions(self) -> list[Session]:
        return [s for site in self.sites() for s in site.sessions]

    def photos(self) -> list[Photo]:
        """Every photo, sorted by path."""
        return sorted((p for s in self.sessions() for p in s.photos), key=lambda p: p.path)


def is_photo_file(path: Path) -> bool:
    """Whether ``path`` names a photo (not a sidecar mask/field/overlay, JSON or hidden file)."""
    return (
        path.suffix.lower() in PHOTO_SUFFIXES
        and not path.stem.endswith(SIDECAR_SUFFIXES)
        and not path.name.startswith(".")
    )


def group_photos(photos: Iterable[Photo]) -> Study:
    """Build the patient -> site -> session tree from a flat list of photos.

    Raises
    ------
    InputError
        If one path is listed twice.
    """
    photos = list(photos)
    seen: dict[Path, Photo] = {}
    for photo in photos:
        if photo.path in seen:
            raise InputError(f"photo {photo.path} is listed twice")
        seen[photo.path] = photo
    tree: dict[str, dict[str, dict[dt.date, list[Photo]]]] = {}
    for photo in photos:
        tree.setdefault(photo.patient, {}).setdefault(photo.site, {}).setdefault(
            photo.date, []
        ).append(photo)
    patients = []
    for pid in sorted(tree):
        sites = []
        for site in sorted(tree[pid]):
            sessions = tuple(
                Session(pid, site, date, tuple(sorted(ps, key=lambda p: p.path)))
                for date, ps in sorted(tree[pid][site].items())
            )
            sites.append(Site(pid, site, sessions))
        patients.append(Patient(pid, tuple(sites)))
    return Study(tuple(patients))


def _parse_date(text: str, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{where}: date {text!r} is not a YYYY-MM-DD date") from None


def read_folder(root: str | Path) -> Study:
    """Read the folder convention ``ROOT/PATIENT/SITE/YYYY-MM-DD/*.jpg|png|tif``.

    Sidecar files (``*_mask.*``, ``*_field.*``, ``*_overlay.*``, ``*.json``) and hidden
    files are ignored.

    Raises
    ------
    InputError
        If ``root`` is not a folder, a photo lies outside the ``PATIENT/SITE/DATE/`` layout,
        a session folder is not a date, or no photo is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    root = root.resolve()
    photos = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if not is_photo_file(path):
            continue
        if len(rel.parts) != 4:
            raise InputError(
                f"photo {rel} is not in the PATIENT/SITE/YYYY-MM-DD/ layout; move it or "
                "list the photos in a manifest CSV"
            )
        patient, site, date_text, _ = rel.parts
        date = _parse_date(date_text, f"folder {Path(patient, site, date_text)}")
        photos.append(Photo(patient, site, date, path))
    if not photos:
        raise InputError(f"no photos found under {root} (PATIENT/SITE/YYYY-MM-DD/*.jpg)")
    return group_photos(photos)


def _manifest_row(row: dict[str, str], line: int, name: str, base: Path) -> Photo:
    where = f"{name} line {line}"
    values = {k: (row.get(k) or "").strip() for k in row if k is not None}
    if None in row:  # more cells than header columns
        raise InputError(f"{where}: more cells than columns in the header")
    for column in MANIFEST_REQUIRED:
        if not values.get(column):
            raise InputError(f"{where}: empty {column!r}")
    try:
        path = Path(values["path"])
        if not path.is_absolute():
            path = base / path  # relative to the manifest, not to the working folder
        path = path.resolve()
    except (OSError, ValueError) as exc:  # NUL bytes, names the OS cannot take
        raise InputError(f"{where}: unusable path {values['path'][:80]!r} ({exc})") from None
    um = values.get("um_per_px") or None
    device = values.get("device") or None
    um_per_px = None
    if um is not None:
        if device is not None:
            raise InputError(f"{where}: give um_per_px or device, not both")
        try:
            um_per_px = validate_um_per_px(um)
        except CalibrationError as exc:
            raise InputError(f"{where}: {exc}") from None
    return Photo(
        values["patient"],
        values["site"],
        _parse_date(values["date"], where),
        path,
        um_per_px,
        device,
    )


def read_manifest(csv_path: str | Path) -> Study:
    """Read a manifest CSV: ``path, patient, site, date[, um_per_px | device]``.

    Relative paths are relative to the manifest's folder. Photos are not opened here: a
    missing photo is reported when the batch reaches it, so it cannot stop the others.

    Raises
    ------
    InputError
        Unreadable file, missing column, or a malformed line (the message names the line).
    """
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {csv_path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in MANIFEST_REQUIRED if c not in header]
        if missing:
            raise InputError(
                f"{csv_path.name} line 1: missing column(s) {', '.join(missing)} (needs "
                f"{', '.join(MANIFEST_REQUIRED)}; optional um_per_px or device)"
            )
        twice = sorted({h for h in header if h and header.count(h) > 1})
        if twice:  # DictReader would silently keep the last one
            raise InputError(f"{csv_path.name} line 1: column(s) {', '.join(twice)} given twice")
        reader.fieldnames = header
        base = csv_path.resolve().parent
        photos = []
        for row in reader:
            if not any((v or "").strip() for k, v in row.items() if k is not None):
                continue  # blank line
            # reader.line_num counts physical lines read so far: the current row's line.
            photos.append(_manifest_row(row, reader.line_num, csv_path.name, base))
    except csv.Error as exc:  # e.g. a field above the csv module's size limit
        raise InputError(
            f"{csv_path.name} line {reader.line_num}: not a readable CSV line ({exc})"
        ) from None
    if not photos:
        raise InputError(f"{csv_path.name}: the manifest lists no photos")
    try:
        return group_photos(photos)
    except InputError as exc:
        raise InputError(f"{csv_path.name}: {exc}") from None


def read_study(root_or_manifest: str | Path) -> Study:
    """A folder (folder convention) or a ``.csv`` manifest."""
    path = Path(root_or_manifest)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    if path.is_dir():
        return read_folder(path)
    raise InputError(f"{path}: no such folder or manifest CSV")


def share_session_scale(
    session: Session, calibrations: Mapping[Path, Calibration]
) -> dict[Path, Calibration]:
    """Apply a scale read from one photo of a session to its other photos of the same device.

    A photo whose calibration is unknown (``source='none'``) takes the scale read from a
    sibling photo (``source='photo'``, e.g. a burned-in scale bar) of the same session and
    the same device (``Photo.device``; photos without a device count as one device, as in
    the folder layout). When several siblings give a scale the median is used. Given and
    profile scales are never overridden.

    Parameters
    ----------
    session : Session
    calibrations : mapping Path -> Calibration
        The calibration each photo's analysis used; photos missing here are skipped.

    Returns
    -------
    dict Path -> Calibration
        Only the photos whose calibration changes.
    """
    by_device: dict[str | None, list[tuple[Path, float]]] = {}
    for photo in session.photos:
        cal = calibrations.get(photo.path)
        if cal is not None and cal.source == "photo" and cal.um_per_px is not None:
            by_device.setdefault(photo.device, []).append((photo.path, cal.um_per_px))
    out: dict[Path, Calibration] = {}
    for photo in session.photos:
        cal = calibrations.get(photo.path)
        read = by_device.get(photo.device)
        if cal is None or cal.known or not read:
            continue
        um = float(statistics.median(v for _, v in read))
        names = ", ".join(p.name for p, _ in read)
        out[photo.path] = replace(
            Calibration(um, "photo", device=photo.device),
            detail=f"scale read from {names} (same session and device)",
        )
    return out
