"""Regenerate sample_images/: rendered 70x photos with exact truth, in the session layout.

PATIENT/SITE/YYYY-MM-DD/*.jpg, plus the renderer's truth beside each photo (NAME.json,
NAME_mask.png). Two sessions of one site: a baseline and a follow-up rendered with a higher
hair density. They are independent renders (not re-photographs of one follicle map), so they
show the session layout and a density change, not registration.

Run:  python sample_images/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

from trichoscan import synth

HERE = Path(__file__).resolve().parent
UM_PER_PX = 2.8  # the README's main command passes this scale

SESSIONS = {
    "2026-03-02": {"seeds": (9001, 9002), "density": (115.0, 135.0)},
    "2026-06-01": {"seeds": (9003, 9004), "density": (165.0, 185.0)},
}


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
    for date, spec in SESSIONS.items():
        folder = HERE / "P001" / "vertex" / date
        folder.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(spec["seeds"], start=1):
            render = synth.render(seed, config(spec["density"]))
            paths = synth.write_render(render, folder, f"photo_{i}")
            # Keep the sample light: photo, truth JSON and hair mask only.
            for key in ("field", "subsurface"):
                paths[key].unlink(missing_ok=True)


if __name__ == "__main__":
    main()
