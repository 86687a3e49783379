"""Batch processing of a study: every photo, every session, every change.

:func:`run_batch` reads a folder (``PATIENT/SITE/YYYY-MM-DD/*.jpg``) or a manifest CSV and
writes to ``out_dir``:

``images.csv``
    one row per photo, sorted by path, no timings (so two runs can be diffed);
``sessions.csv``
    per patient/site/session: pooled metrics with 95 % CIs (:mod:`trichoscan.comparison`);
``changes.csv``
    each session vs the baseline and, from the third session on, vs the previous session
    (for the second they are the same comparison), on the registered overlap
    when registration succeeds (flagged fallback to whole fields otherwise), with CIs,
    MDC verdicts and per-hair fate;
``errors.csv``
    one row per failure (photo or comparison); always written, header only when clean;
``batch.json``
    settings, model and trichoscan version used, and each analysed photo's cache key
    (``photos``: path -> key), through which :mod:`trichoscan.report` finds the photo's
    analysis and overlay.

Each analysed photo also leaves an overlay JPEG in its cache entry (hairs by class,
exit ends, field; drawn from the pixels while they are at hand), so that
``trichoscan report`` can show the photos without going back to them.

Resumable: each photo's result is cached under ``out_dir/.cache`` keyed by the file's
content hash, the settings, the model version and the trichoscan version (and the scale
used), so a re-run reprocesses nothing unchanged; registrations are cached per pair of
photo hashes. One bad photo never stops the batch. Workers are processes with one thread
each, so the results do not depend on the number of workers. Every file, cache entries
included, is written atomically (temporary file + rename): a batch killed at any moment
leaves only complete files, and a re-run finishes the work.

Privacy
-------
Nothing read from a photo's metadata (EXIF, GPS, device serials, ICC) reaches an output:
photos are decoded to pixels only. The cache is keyed by content and holds no file path.
With ``anonymise=True`` (``trichoscan batch --anonymise``) every patient id is replaced
by a stable pseudonym, ``anon-`` followed by 12 hex digits of
HMAC-SHA256(key, patient id), in every table (the ``patient`` column, the ``path``
column, which becomes ``PSEUDONYM/SITE/DATE/FILE``, and error messages). The key is 32
random bytes created on the first anonymised run and stored in
``out_dir/.trichoscan-pseudonym-key`` (:data:`PSEUDONYM_KEY_FILE`), so re-runs into the
same folder keep the same pseudonyms; copy the key file into another output folder to
share pseudonyms across folders. Whoever holds the key can re-identify patients by
hashing candidate names: do not share it with the tables, and delete it when links
back to patients must become impossible. Site names, dates and the photos' file names
are kept (a patient id inside a file name is replaced too), so keep other identifiers
out of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ._version import __version__
from .calibration import Calibration, resolve_calibration
from .comparison import (
    METRICS,
    Comparison,
    MeasuredPhoto,
    Registration,
    estimate_session,
    photo_stats,
    register_photos,
)
from .errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, InputError, TrichoscanError
from .metrics import SUMMARY_COLUMNS, Analysis
from .report import overlay_jpeg, write_atomic, write_csv
from .sessions import Photo, Session, Study, group_photos, read_study, share_session_scale

__all__ = [
    "CACHE_VERSION",
    "PSEUDONYM_KEY_FILE",
    "IMAGE_COLUMNS",
    "SESSION_COLUMNS",
    "CHANGE_COLUMNS",
    "ERROR_COLUMNS",
    "BatchResult",
    "run_batch",
    "pseudonym",
    "load_cached_analysis",
    "cached_overlay_path",
]

logger = logging.getLogger(__name__)

#: Bump when the cached payload's layout changes (2: no file paths in cache entries).
CACHE_VERSION = "2"
#: Per-study secret key of the pseudonyms, in the output folder (see the module notes).
PSEUDONYM_KEY_FILE = ".trichoscan-pseudonym-key"
#: Stands for the photo's path in cached error messages: the cache is keyed by content,
#: so one entry may serve several paths (and must not hold a patient's name).
_PHOTO = "<photo>"
CLASSES = ("vellus", "intermediate", "terminal")

IMAGE_COLUMNS = (
    "path",
    "patient",
    "site",
    "date",
    "sha256",
    *(c for c in SUMMARY_COLUMNS if c != "source"),
    "calibration_detail",
    "quality_warnings",
)
SESSION_COLUMNS = (
    "patient",
    "site",
    "date",
    "n_photos",
    "n_failed",
    "hair_count",
    "area_cm2",
    *(f"{m}_{s}" for m in METRICS for s in ("value", "low", "high", "se")),
)
_FATE_COLUMNS = tuple(f"fate_{a}_to_{b}" for a in CLASSES for b in CLASSES if a != b)
CHANGE_COLUMNS = (
    "patient",
    "site",
    "date",
    "reference",
    "reference_date",
    "days",
    "registered",
    "n_pairs",
    "overlap_fraction",
    "registration_quality",
    "hairs_before",
    "hairs_after",
    *(
        f"{m}_{s}"
        for m in METRICS
        for s in (
            "before",
            "after",
            "diff",
            "diff_low",
            "diff_high",
            "pct",
            "pct_low",
            "pct_high",
            "significant",
            "exceeds_mdc",
        )
    ),
    "fate_persisted",
    "fate_new",
    "fate_lost",
    *_FATE_COLUMNS,
    "notes",
)
ERROR_COLUMNS = ("path", "stage", "error")


@dataclass(frozen=True)
class BatchResult:
    """What :func:`run_batch` did.

    ``n_analysed`` counts photos analysed in this run (0 on an unchanged re-run),
    ``n_cached`` those taken from the cache; ``n_failed`` photos that could not be analysed.
    """

    out_dir: Path
    n_photos: int
    n_analysed: int
    n_cached: int
    n_failed: int
    n_registered_now: int
    n_registrations_cached: int
    n_errors: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """CLI exit code: 0 all done, 3 some failed (rest written), 4 nothing processed."""
        if self.n_failed >= self.n_photos:
            return EXIT_FAILED
        return EXIT_PARTIAL if self.n_errors else EXIT_OK


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class _Task:
    """One photo to analyse: everything the worker needs, all picklable."""

    key: str
    path: str
    calibration: Any  # float, device name, Calibration or None
    config: Any  # PipelineConfig
    cache_dir: str


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _calibration_token(calibration: Any) -> Any:
    if isinstance(calibration, Calibration):
        return calibration.to_dict()
    return calibration


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_paths(cache_dir: str | Path, key: str) -> tuple[Path, Path]:
    base = Path(cache_dir) / key[:2] / key
    return base.with_suffix(".json"), base.with_suffix(".analysis")


def _read_outcome(cache_dir: Path, key: str) -> dict[str, Any] | None:
    meta, _ = _cache_paths(cache_dir, key)
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_analysis(cache_dir: Path, key: str) -> Analysis:
    _, blob = _cache_paths(cache_dir, key)
    # The cache is written by this module only, in the user's own output folder.
    return pickle.loads(zlib.decompress(blob.read_bytes()))  # noqa: S301


def _overlay_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.overlay.jpg"


def load_cached_analysis(out_dir: str | Path, key: str) -> Analysis:
    """The cached :class:`Analysis` of the photo with cache key ``key`` (``batch.json``).

    Raises
    ------
    OSError, ValueError, pickle.UnpicklingError
        If the entry is missing or unreadable.
    """
    return _load_analysis(Path(out_dir) / ".cache", key)


def cached_overlay_path(out_dir: str | Path, key: str) -> Path:
    """Where the batch keeps the overlay JPEG of the photo with cache key ``key``."""
    return _overlay_path(Path(out_dir) / ".cache", key)


def _write_overlay(cache_dir: str | Path, key: str, path: str, result: Analysis) -> None:
    """Draw a photo's overlay into its cache entry; a failure costs the picture only."""
    from .io import read_image

    try:
        # Read again: the pipeline was handed the path, not the pixels.
        write_atomic(_overlay_path(cache_dir, key), overlay_jpeg(read_image(path), result))
    except Exception as exc:  # noqa: BLE001 - the overlay is an extra, never a failure
        logger.warning("could not draw the overlay of %s: %s", key[:12], exc)


# --------------------------------------------------------------------------- workers


@contextlib.contextmanager
def _fixed_threads() -> Iterator[None]:
    """One OpenCV (and torch) thread while analysing, restored afterwards."""
    import cv2

    before = cv2.getNumThreads()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
        if torch is not None and torch_before is not None:
            torch.set_num_threads(torch_before)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


@functools.lru_cache(maxsize=2)
def _pipeline(config: Any) -> Any:
    # One pipeline (one model load) per worker process and settings.
    from .pipeline import Pipeline

    return Pipeline(config)


def _run_task(task: _Task) -> dict[str, Any]:
    """Analyse one photo and write its cache entry; never raises for a bad photo."""
    meta, blob = _cache_paths(task.cache_dir, task.key)
    try:
        with _fixed_threads():
            result = _pipeline(task.config).analyze(task.path, calibration=task.calibration)
    except TrichoscanError as exc:
        outcome = {"ok": False, "error": str(exc).replace(task.path, _PHOTO)}
        _write_cache(meta, None, outcome)  # a bad input stays bad: cache it too
        return outcome
    except Exception as exc:  # noqa: BLE001 - one bad photo must never stop a batch
        logger.debug("unexpected failure on %s", task.path, exc_info=True)
        error = f"internal error: {type(exc).__name__}: {exc}"
        return {"ok": False, "error": error.replace(task.path, _PHOTO)}
    # The cache is keyed by content: it must not remember which path (patient) it came from.
    result = dataclasses.replace(result, source=None)
    summary = result.summary()
    summary.pop("source", None)
    quality = result.quality
    warnings = "; ".join(getattr(quality, "warnings", ()) or ())
    outcome = {
        "ok": True,
        "summary": summary,
        "calibration": result.calibration.to_dict(),
        "quality_warnings": warnings,
    }
    _write_overlay(task.cache_dir, task.key, task.path, result)  # before meta: entry whole
    _write_cache(meta, blob, outcome, result)
    return outcome


def _write_cache(
    meta: Path, blob: Path | None, outcome: dict[str, Any], result: Analysis | None = None
) -> None:
    """Write a cache entry (analysis first, so a meta file always has its analysis)."""
    try:
        if blob is not None and result is not None:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            write_atomic(blob, zlib.compress(data, 3))
        write_atomic(meta, json.dumps(outcome, allow_nan=False).encode("utf-8"))
    except (OSError, ValueError) as exc:  # a full disk costs the cache, not the result
        logger.warning("could not cache %s: %s", meta.name, exc)


def _run_tasks(
    tasks: Sequence[_Task],
    workers: int,
    mp_context: str,
    tick: Callable[[], None],
) -> dict[str, dict[str, Any]]:
    if not tasks:
        return {}
    out: dict[str, dict[str, Any]] = {}
    if workers <= 1:
        for task in tasks:
            out[task.key] = _run_task(task)
            tick()
        return out
    ctx = get_context(mp_context)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker
    ) as pool:
        futures = {pool.submit(_run_task, t): t for t in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                out[task.key] = future.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker fails one photo only
                out[task.key] = {"ok": False, "error": f"worker failed: {exc!r}"}
            tick()
    return out


# --------------------------------------------------------------------------- the batch


@dataclass
class _PhotoState:
    photo: Photo
    rel: str
    sha256: str | None = None
    key: str | None = None
    outcome: dict[str, Any] | None = None
    error_stage: str = "analyse"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _base_dir(root_or_manifest: Path) -> Path:
    p = root_or_manifest.resolve()
    return p if p.is_dir() else p.parent


def _calibration_of(cal: dict[str, Any]) -> Calibration:
    return Calibration(cal["um_per_px"], cal["source"], cal.get("device"), cal.get("detail", ""))


def pseudonym(patient: str, key: bytes) -> str:
    """Stable pseudonym of a patient id: ``anon-`` + 12 hex digits of HMAC-SHA256.

    Parameters
    ----------
    patient : str
        Patient id (folder name or manifest value); Unicode-normalised (NFC) and stripped
        first, so the same name copied from macOS (NFD) or typed in a manifest agrees.
    key : bytes
        The study's secret key (see :data:`PSEUDONYM_KEY_FILE`).

    Returns
    -------
    str
    """
    name = unicodedata.normalize("NFC", patient.strip()).encode("utf-8")
    return "anon-" + hmac.new(key, name, hashlib.sha256).hexdigest()[:12]


def _pseudonym_key(out: Path) -> bytes:
    """The study's pseudonym key from ``out``, created (32 random bytes, hex) if absent."""
    path = out / PSEUDONYM_KEY_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            # link, not rename: never replaces a key another run created meanwhile
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        # Never silently replaced: a new key would give every patient a new pseudonym.
        raise InputError(
            f"{path} is damaged (64 hex digits expected); restore it from a backup, or "
            "delete it to start new pseudonyms"
        )
    return key


def _anonymised(study: Study, rels: dict[Path, str], key: bytes) -> tuple[Study, dict[Path, str]]:
    """The study with pseudonyms for patients, and the photos' pseudonymous paths."""
    alias = {p.patient: pseudonym(p.patient, key) for p in study.photos()}
    if len(set(alias.values())) != len(alias):  # 48 bits: astronomically unlikely
        raise InputError("two patients share a pseudonym; delete the pseudonym key and re-run")
    photos, out, seen = [], {}, set()
    for photo in study.photos():
        anon = alias[photo.patient]
        name = photo.path.name.replace(photo.patient, anon) if photo.patient else photo.path.name
        rel = f"{anon}/{photo.site}/{photo.date.isoformat()}/{name}"
        k = 1
        while rel in seen:  # same file name in two folders of one manifest session
            k += 1
            rel = f"{anon}/{photo.site}/{photo.date.isoformat()}/{k}-{name}"
        seen.add(rel)
        out[photo.path] = rel
        photos.append(dataclasses.replace(photo, patient=anon))
    return group_photos(photos), out


def run_batch(
    root_or_manifest: str | Path,
    out_dir: str | Path,
    *,
    config: Any = None,
    calibration: float | str | Calibration | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    compare_sessions: bool = True,
    mp_context: str = "spawn",
    anonymise: bool = False,
) -> BatchResult:
    """Analyse every photo of a study and write images/sessions/changes/errors CSVs.

    Parameters
    ----------
    root_or_manifest : path
        A folder laid out ``PATIENT/SITE/YYYY-MM-DD/*.jpg`` or a manifest ``.csv``.
    out_dir : path
        Output folder (created); its ``.cache`` subfolder makes re-runs resumable.
    config : PipelineConfig, optional
        Pipeline settings (default ``PipelineConfig()``).
    calibration : float, str or Calibration, optional
        Scale for photos the manifest gives none for; else each photo's scale bar, shared
        within its session (see :func:`trichoscan.sessions.share_session_scale`).
    workers : int
        Worker processes (one thread each); results do not depend on it.
    progress : callable(done, total), optional
        Called after each photo (cached ones included).
    compare_sessions : bool
        Also write ``changes.csv`` (registration of each session pair).
    mp_context : str
        Multiprocessing start method for ``workers > 1``.
    anonymise : bool
        Replace patient ids by stable pseudonyms in every output (key in
        ``out_dir/.trichoscan-pseudonym-key``; see the module notes).

    Raises
    ------
    InputError
        If the folder/manifest cannot be read or the output folder cannot be written
        (nothing is processed then).
    """
    from .pipeline import Pipeline, PipelineConfig

    config = config or PipelineConfig()
    root = Path(root_or_manifest)
    study = read_study(root)
    base = _base_dir(root)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # Checked before any work, so a bad --out never costs a whole batch.
        raise InputError(
            f"cannot create the output folder {out}: {exc.strerror or exc}; "
            "choose a writable folder"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"the output folder {out} is not writable; choose another")
    cache_dir = out / ".cache"
    default_cal = resolve_calibration(calibration) if calibration is not None else None
    info = Pipeline(config).segmenter_info
    settings = {
        "config": config.to_dict(),
        "segmenter": info.to_dict(),
        "trichoscan_version": __version__,
        "cache_version": CACHE_VERSION,
    }
    settings_key = _digest(settings)

    rels = {p.path: _relative(p.path, base) for p in study.photos()}
    if anonymise:
        study, rels = _anonymised(study, rels, _pseudonym_key(out))
    states = {p.path: _PhotoState(p, rels[p.path]) for p in study.photos()}
    total = len(states)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def task_for(state: _PhotoState, cal: Any) -> _Task:
        key = _digest(settings_key, state.sha256, _calibration_token(cal))
        return _Task(key, str(state.photo.path), cal, config, str(cache_dir))

    # Pass 1: every photo with its own scale (manifest, batch default, or its scale bar).
    tasks: list[_Task] = []
    n_cached = 0
    for state in states.values():
        try:
            state.sha256 = _sha256_file(state.photo.path)
        except OSError as exc:
            state.outcome = {"ok": False, "error": f"cannot read file: {exc.strerror or exc}"}
            state.error_stage = "read"
            tick()
            continue
        # Resolved, so that 5.0 given here or in a manifest share one cache key.
        cal = default_cal
        if state.photo.calibration is not None:
            try:
                cal = resolve_calibration(state.photo.calibration)
            except TrichoscanError as exc:
                state.outcome = {"ok": False, "error": str(exc)}
                state.error_stage = "calibration"
                tick()
                continue
        task = task_for(state, cal)
        state.key = task.key
        cached = _read_outcome(cache_dir, task.key)
        if cached is not None:
            state.outcome = cached
            n_cached += 1
            tick()
        else:
            tasks.append(task)
    # Identical files share one key: analyse each content once.
    unique = list({t.key: t for t in tasks}.values())
    results = _run_tasks(unique, workers, mp_context, tick)
    for _ in range(len(tasks) - len(unique)):
        tick()
    n_analysed = len(unique)
    for state in states.values():
        if state.key in results:
            state.outcome = results[state.key]

    # Pass 2: a scale read from one photo applies to its session's same-device photos.
    redo: list[tuple[_PhotoState, _Task]] = []
    for session in study.sessions():
        cals = {
            p.path: _calibration_of(states[p.path].outcome["calibration"])
            for p in session.photos
            if states[p.path].outcome and states[p.path].outcome.get("ok")
        }
        for path, cal in share_session_scale(session, cals).items():
            redo.append((states[path], task_for(states[path], cal)))
    pending = []
    for state, task in redo:
        state.key = task.key
        cached = _read_outcome(cache_dir, task.key)
        if cached is not None:
            state.outcome = cached
        else:
            pending.append(task)
    pending = list({t.key: t for t in pending}.values())
    results = _run_tasks(pending, workers, mp_context, lambda: None)
    n_analysed += len(pending)
    for state, task in redo:
        if task.key in results:
            state.outcome = results[task.key]

    _ensure_overlays(cache_dir, states)
    errors = [
        {"path": s.rel, "stage": s.error_stage, "error": s.outcome["error"].replace(_PHOTO, s.rel)}
        for s in states.values()
        if not (s.outcome or {}).get("ok")
    ]
    n_failed = len(errors)
    files = {
        "images": _write_images(out, states),
        "sessions": _write_sessions(out, study, states),
    }
    reg_stats = {"now": 0, "cached": 0}
    if compare_sessions:
        rows = _change_rows(study, states, cache_dir, settings_key, errors, reg_stats)
        files["changes"] = write_csv(out / "changes.csv", rows, CHANGE_COLUMNS)
    for error in errors:  # absolute paths name the patient's folder: show the table's path
        for s in states.values():
            error["error"] = error["error"].replace(str(s.photo.path), s.rel)
    errors.sort(key=lambda e: (e["path"], e["stage"]))
    files["errors"] = write_csv(out / "errors.csv", errors, ERROR_COLUMNS)
    provenance = {
        **settings,
        "n_photos": total,
        "calibration": _calibration_token(default_cal),
        "anonymised": anonymise,
        # Path -> cache key of each analysed photo: the report's way into the cache.
        "photos": {
            s.rel: s.key
            for s in sorted(states.values(), key=lambda s: s.rel)
            if (s.outcome or {}).get("ok")
        },
    }
    files["batch"] = write_atomic(
        out / "batch.json", json.dumps(provenance, indent=2, default=str).encode("utf-8")
    )
    logger.info(
        "batch: %d photos, %d analysed, %d cached, %d failed", total, n_analysed, n_cached, n_failed
    )
    return BatchResult(
        out_dir=out,
        n_photos=total,
        n_analysed=n_analysed,
        n_cached=n_cached,
        n_failed=n_failed,
        n_registered_now=reg_stats["now"],
        n_registrations_cached=reg_stats["cached"],
        n_errors=len(errors),
        files=files,
    )


def _ensure_overlays(cache_dir: Path, states: dict[Path, _PhotoState]) -> None:
    """Draw the overlays missing from cache entries (made before overlays were cached)."""
    for s in states.values():
        if not (s.outcome or {}).get("ok") or s.key is None:
            continue
        if _overlay_path(cache_dir, s.key).exists():
            continue
        try:
            analysis = _load_analysis(cache_dir, s.key)
        except Exception as exc:  # noqa: BLE001 - the overlay is an extra, never a failure
            logger.warning("could not draw the overlay of %s: %s", s.rel, exc)
            continue
        _write_overlay(cache_dir, s.key, str(s.photo.path), analysis)


def _write_images(out: Path, states: dict[Path, _PhotoState]) -> Path:
    rows = []
    for s in states.values():
        if not (s.outcome or {}).get("ok"):
            continue
        summary = dict(s.outcome["summary"])
        summary.pop("source", None)
        rows.append(
            {
                **summary,
                "path": s.rel,
                "patient": s.photo.patient,
                "site": s.photo.site,
                "date": s.photo.date.isoformat(),
                "sha256": s.sha256,
                "calibration_detail": s.outcome["calibration"].get("detail", ""),
                "quality_warnings": s.outcome.get("quality_warnings", ""),
            }
        )
    rows.sort(key=lambda r: r["path"])
    return write_csv(out / "images.csv", rows, IMAGE_COLUMNS)


def _session_ok(session: Session, states: dict[Path, _PhotoState]) -> list[_PhotoState]:
    return [states[p.path] for p in session.photos if (states[p.path].outcome or {}).get("ok")]


def _write_sessions(out: Path, study: Study, states: dict[Path, _PhotoState]) -> Path:
    rows = []
    for session in study.sessions():
        ok = _session_ok(session, states)
        row: dict[str, Any] = {
            "patient": session.patient,
            "site": session.site,
            "date": session.date.isoformat(),
            "n_photos": len(session.photos),
            "n_failed": len(session.photos) - len(ok),
        }
        if ok:
            est = estimate_session([photo_stats(s.outcome["summary"]) for s in ok])
            row["hair_count"] = est.hair_count
            row["area_cm2"] = est.area_cm2
            for m, e in est.estimates.items():
                row.update(
                    {f"{m}_value": e.value, f"{m}_low": e.low, f"{m}_high": e.high, f"{m}_se": e.se}
                )
        rows.append(row)
    return write_csv(out / "sessions.csv", rows, SESSION_COLUMNS)


def _cached_registrar(
    cache_dir: Path, settings_key: str, states_by_key: dict[str, _PhotoState], counts: dict
) -> Callable[[MeasuredPhoto, MeasuredPhoto], Registration]:
    """Register a pair of photos once; the result is cached by both photos' hashes."""
    from .io import read_image

    def registrar(b: MeasuredPhoto, a: MeasuredPhoto) -> Registration:
        sb, sa = states_by_key[b.key], states_by_key[a.key]
        key = _digest("registration", settings_key, sb.key, sa.key)
        path = cache_dir / key[:2] / f"{key}.registration.json"
        try:
            reg = Registration.from_dict(json.loads(path.read_text(encoding="utf-8")))
            counts["cached"] += 1
            return reg
        except (OSError, ValueError, KeyError):
            pass
        reg = register_photos(
            read_image(str(sb.photo.path)),
            read_image(str(sa.photo.path)),
            before_field=b.analysis.field_mask,
            after_field=a.analysis.field_mask,
            before_exits=b.analysis.hairs.exit_xy,
            after_exits=a.analysis.hairs.exit_xy,
        )
        write_atomic(path, json.dumps(reg.to_dict()).encode("utf-8"))
        counts["now"] += 1
        return reg

    return registrar


def _change_row(session: Session, reference: Session, kind: str, cmp: Comparison) -> dict:
    row: dict[str, Any] = {
        "patient": session.patient,
        "site": session.site,
        "date": session.date.isoformat(),
        "reference": kind,
        "reference_date": reference.date.isoformat(),
        "days": (session.date - reference.date).days,
        "registered": cmp.registered,
        "n_pairs": sum(1 for _, _, r in cmp.registrations if r.ok) if cmp.registered else 0,
        "overlap_fraction": cmp.overlap_fraction,
        "registration_quality": cmp.registration_quality,
        "hairs_before": cmp.before.hair_count,
        "hairs_after": cmp.after.hair_count,
        "notes": " | ".join(cmp.notes),
    }
    for m, c in cmp.changes.items():
        for name, value in c.to_dict().items():
            if name != "mdc95_pct":
                row[f"{m}_{name}"] = value
    if cmp.fate is not None:
        row["fate_persisted"] = cmp.fate.persisted
        row["fate_new"] = cmp.fate.new
        row["fate_lost"] = cmp.fate.lost
        for col in _FATE_COLUMNS:
            a, b = col.removeprefix("fate_").split("_to_")
            row[col] = cmp.fate.transitions.get(f"{a}->{b}", 0)
    return row


def _change_rows(
    study: Study,
    states: dict[Path, _PhotoState],
    cache_dir: Path,
    settings_key: str,
    errors: list[dict[str, str]],
    reg_counts: dict[str, int],
) -> list[dict[str, Any]]:
    from .comparison import compare_measured

    by_rel = {s.rel: s for s in states.values()}
    registrar = _cached_registrar(cache_dir, settings_key, by_rel, reg_counts)

    @functools.lru_cache(maxsize=64)
    def measured(session_key: tuple[str, str, str]) -> tuple[MeasuredPhoto, ...]:
        session = sessions[session_key]
        return tuple(
            MeasuredPhoto(_load_analysis(cache_dir, s.key), None, s.rel)
            for s in _session_ok(session, states)
        )

    sessions = {s.key: s for s in study.sessions()}
    rows = []
    for site in study.sites():
        for k in range(1, len(site.sessions)):
            refs = [("baseline", site.sessions[0])]
            if k > 1:
                refs.append(("previous", site.sessions[k - 1]))
            current = site.sessions[k]
            for kind, ref in refs:
                try:
                    before, after = measured(ref.key), measured(current.key)
                    if not before or not after:
                        continue  # no photo analysed on one side: errors.csv says why
                    cmp = compare_measured(before, after, registrar=registrar)
                    rows.append(_change_row(current, ref, kind, cmp))
                except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the rest
                    logger.debug("comparison failed", exc_info=True)
                    errors.append(
                        {
                            "path": "/".join(current.key),
                            "stage": f"compare vs {kind}",
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    )
    return rows
