"""Validation against real training: datasets, networks, training with NC tracking, log import
and analysis, and the comparison of trained networks with a simulated UFM surrogate.

Submodules are imported lazily by their users; importing :mod:`ncsim.validate` loads nothing
heavy.
"""

from __future__ import annotations

__all__ = ["analysis", "compare", "data", "logs", "networks", "surrogate", "train"]
