"""Shared helpers of the benchmark scripts (not part of the package)."""

from __future__ import annotations

import platform
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def seed_range(name: str) -> range:
    """The seed range ``name`` from benchmarks/seeds.toml."""
    seeds = tomllib.loads((ROOT / "benchmarks" / "seeds.toml").read_text())
    entry = seeds[name]
    return range(entry["first"], entry["last"] + 1)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return format(value, spec)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table (pasteable into the README)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
