"""Shared test settings: reproducible, deadline-free Hypothesis runs.

``derandomize=True`` makes every Hypothesis run draw the same examples (and ``database=None``
stops earlier failures from being replayed), so the whole suite is deterministic. Set
HYPOTHESIS_PROFILE=thorough for a longer, still reproducible, search.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "typicalnets",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("typicalnets"),
    max_examples=300,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "typicalnets"))

# pytest runs two workers on two cores; one torch thread each avoids oversubscription slowdowns.
torch.set_num_threads(1)
