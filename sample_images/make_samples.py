"""Regenerate sample_images/: rendered 70x photos with exact truth, in the session layout.

PATIENT/SITE/YYYY-MM-DD/*.jpg, plus the renderer's truth beside each photo (NAME.json,
NAME_mask.png). Two sessions of one site, two photo fields each: every field is one scalp
area photographed at both sessions (``synth.render_pair``: the follow-up camera is moved
and rotated, re-lit and re-focused) and the follow-up scene has gained hairs (a known
density change, in ``changes.json``), so the batch registers the two visits of each field
and measures the change on their overlap.

Run:  python sample_images/make_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

from trichoscan import synth

HERE = Path(__file__).resolve().parent
UM_PER_PX = 2.8  # the README's main command passes this scale

BASELINE, FOLLOW_UP = "2026-03-02", "2026-06-01"
#: (pair seed, density change %) per photo field; seeds from the development range.
FIELDS = {"photo_1": (9001, 25.0), "photo_2": (9002, 25.0)}
DENSITY = (120.0, 140.0)


def config(density: tuple[float, float]) -> synth.SynthConfig:
    """A shaved vertex photographed at 70x (1280x1024, 2.8 µm/px) with a burned-in header."""
    return synth.SynthConfig(
        height=1024,
        width=1280,
        um_per_px=(UM_PER_PX, UM_PER_PX),
        density_per_cm2=density,
        hair_colours=("black", "dark_brown"),
        hair_colour_weights=(0.7, 0.3),
        skin_tones=("very_light", "light"),
        skin_tone_weights=(0.5, 0.5),
        p_unshaved=0.0,
        p_header=1.0,
        p_footer=0.0,
        p_scale_bar=0.0,
        p_vignette=0.0,
        p_measuring_circle=0.0,
        p_jpeg=1.0,
        jpeg_quality=(88, 92),
    )


def main() -> None:
    changes = {}
    for name, (seed, change) in FIELDS.items():
        pair_config = synth.PairConfig(
            scene=config(DENSITY), kind="density", max_shift_frac=0.12, max_rotation_deg=6.0
        )
        pair = synth.render_pair(seed, pair_config, change_pct=change)
        for date, render in ((BASELINE, pair.before), (FOLLOW_UP, pair.after)):
            folder = HERE / "P001" / "vertex" / date
            folder.mkdir(parents=True, exist_ok=True)
            paths = synth.write_render(render, folder, name)
            # Keep the sample light: photo, truth JSON and hair mask only.
            for key in ("field", "subsurface"):
                paths[key].unlink(missing_ok=True)
        changes[name] = pair.overlap_truth()
    (HERE / "P001" / "vertex" / "changes.json").write_text(
        json.dumps(synth._jsonable(changes), indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
