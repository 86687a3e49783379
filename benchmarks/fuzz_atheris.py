"""Coverage-guided fuzzing of the decoder path and the manifest reader with atheris.

The test suite runs a few seconds of hypothesis (``tests/test_fuzz.py``); this script is
for long local runs (hours), which find what a short run cannot. It is not run by CI and
atheris is not a dependency.

Set-up (Linux or macOS, CPython 3.11+, a clang with libFuzzer for atheris' wheel build
where no wheel exists)::

    .venv/bin/pip install atheris

Runs::

    # images: corpus seeded with small valid files of every decoder path
    .venv/bin/python benchmarks/fuzz_atheris.py image --seed-corpus fuzz/image
    .venv/bin/python benchmarks/fuzz_atheris.py image fuzz/image -max_total_time=3600 \\
        -rss_limit_mb=3000 -timeout=20

    # manifests
    .venv/bin/python benchmarks/fuzz_atheris.py manifest --seed-corpus fuzz/manifest
    .venv/bin/python benchmarks/fuzz_atheris.py manifest fuzz/manifest -max_total_time=1800

Arguments after the target are libFuzzer's (``-jobs=N -workers=N`` for parallel runs,
``-max_len=65536`` for bigger inputs). A crash, i.e. any exception that is not a
:class:`trichoscan.TrichoscanError`, or a returned array that is not float32 RGB in
[0, 1], stops the run and writes ``crash-<sha1>`` in the working folder; replay it with
``... image crash-<sha1>`` and add the input to ``tests/test_bad_inputs.py`` as a case
once fixed. ``-rss_limit_mb`` and ``-timeout`` also catch decompression bombs: an input
of a few KB must never need GBs or seconds.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import warnings
from pathlib import Path


def _seed_images() -> dict[str, bytes]:
    """Small valid files of each decoder path (Pillow 8-bit, OpenCV 16-bit colour, TIFF)."""
    import cv2
    import numpy as np
    from PIL import Image

    from trichoscan import synth

    rgb = synth.render(4343, synth.SynthConfig(height=128, width=160)).image[:48, :64]
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {}
    for name, image, fmt, kw in [
        ("rgb.png", Image.fromarray(rgb), "PNG", {}),
        ("grey.png", Image.fromarray(rgb).convert("L"), "PNG", {}),
        ("palette.png", Image.fromarray(rgb).convert("P"), "PNG", {}),
        ("exif.jpg", Image.fromarray(rgb), "JPEG", {"quality": 90, "exif": exif}),
        ("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "JPEG", {}),
        ("grey16.tif", Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "TIFF", {}),
        ("float.tif", Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF", {}),
        ("rgb.bmp", Image.fromarray(rgb), "BMP", {}),
    ]:
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        out[name] = buf.getvalue()
    out["rgb16.png"] = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    return out


def _seed_manifests() -> dict[str, bytes]:
    header = "path,patient,site,date,um_per_px,device\n"
    texts = {
        "ok.csv": header + "a.jpg,P1,vertex,2026-01-05,5,\nb.jpg,P1,vertex,2026-03-05,,x\n",
        "quoted.csv": header + '"a, b.jpg","P 1",vertex,2026-01-05,2.8,\n',
        "bom.csv": "\ufeff" + header + "a.jpg,P1,vertex,2026-01-05,,dino-lite\n",
    }
    return {name: text.encode("utf-8") for name, text in texts.items()}


def fuzz_image(data: bytes) -> None:
    """One input of the image target: a typed error or a valid array, nothing else."""
    import numpy as np

    from trichoscan.errors import TrichoscanError
    from trichoscan.io import read_image

    try:
        rgb = read_image(data)
    except TrichoscanError:
        return
    if not (rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise AssertionError(f"bad array {rgb.dtype} {rgb.shape}")
    if not (np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0):
        raise AssertionError("values outside [0, 1] or not finite")


_MANIFEST_DIR = Path(tempfile.mkdtemp(prefix="trichoscan-fuzz-"))


def fuzz_manifest(data: bytes) -> None:
    """One input of the manifest target: a typed error or a non-empty study."""
    from trichoscan.errors import TrichoscanError
    from trichoscan.sessions import read_manifest

    path = _MANIFEST_DIR / "study.csv"
    path.write_bytes(data)
    try:
        study = read_manifest(path)
    except TrichoscanError:
        return
    if not study.photos():
        raise AssertionError("a study without photos was returned")


TARGETS = {
    "image": (fuzz_image, _seed_images),
    "manifest": (fuzz_manifest, _seed_manifests),
}


def main(argv: list[str] | None = None) -> None:
    """Write a seed corpus, or run atheris on one target."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seed-corpus", type=Path, help="write seed inputs here and exit")
    args, libfuzzer_args = parser.parse_known_args(argv)
    target, seeds = TARGETS[args.target]
    if args.seed_corpus is not None:
        args.seed_corpus.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (args.seed_corpus / name).write_bytes(data)
        print(f"{len(seeds())} seeds written to {args.seed_corpus}")
        return

    try:
        import atheris  # only here: not a dependency
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris (see --help)")

    warnings.simplefilter("ignore")  # Pillow warns on every corrupt EXIF block
    with atheris.instrument_imports():
        import trichoscan.io  # noqa: F401
        import trichoscan.sessions  # noqa: F401
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
