"""Small builders shared by the study tests: one run computed alone, a short trajectory, an
empty run store, a small parsed study document."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ncsim.study.compute import run_chunk
from ncsim.study.spec import RunDesc
from ncsim.study.store import Store


def computed_alone(params: dict[str, Any], part: str = "k") -> tuple[dict, pd.DataFrame]:
    """(row, trajectory) of one simulated run (of part ``part``) computed alone by run_chunk."""
    desc = RunDesc(part, "simulated", params)
    ((rid, row, traj),) = run_chunk([desc])
    assert rid == desc.run_id
    return row, traj


def same_value(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def short_trajectory(rows: int) -> pd.DataFrame:
    """A trajectory of ``rows`` records: time 0, 1, ... and fn from 1 to 2."""
    return pd.DataFrame({"time": np.arange(rows, dtype=float), "fn": np.linspace(1, 2, rows)})


def parts_store(tmp_path) -> Store:
    """A Store in ``tmp_path / "study"`` with its parts folder made and nothing bound."""
    store = Store(tmp_path / "study")
    store.parts.mkdir(parents=True)
    return store


SMALL_SIMULATED = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0}
"""The [simulated] table of :func:`study_raw`: small, cheap runs."""


def study_raw(*parts: dict, **top: Any) -> dict[str, Any]:
    """A parsed study document with the given [[parts]] tables (small, cheap runs); ``top``
    keys replace or add top-level keys."""
    return {"name": "s", "title": "S", "question": "q?", "claim": "c.",
            "analysis": "invariance", "simulated": dict(SMALL_SIMULATED),
            "parts": list(parts), **top}


def part(**extra: Any) -> dict[str, Any]:
    """A simulated part "a" over two seeds, with ``extra`` keys (fixed values or a ``grid``)
    replacing or adding."""
    return {"name": "a", "model": "simulated", "grid": {"seed": [0, 1]}, **extra}
