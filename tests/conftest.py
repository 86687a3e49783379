"""Shared test settings.

Property tests (hypothesis) are derandomised by default, so the suite gives the same
answer on every run and a red CI always points at a change, not at a lucky draw. Set
``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples when hunting for new
failures; a failure it finds becomes a fixture with a stated answer.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repro", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))
