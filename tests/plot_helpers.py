"""Figure-test helpers: keep the figures a module would save, and runs whose lines are known."""

from __future__ import annotations

import numpy as np
import pandas as pd


def capture(monkeypatch, module) -> list:
    """Replace ``module.save_figure`` by one that keeps the figure (not closed) and writes
    nothing; return the list of kept figures."""
    kept: list = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: kept.append(fig) or path)
    return kept


def one_over_t_runs(labels, ids=None, nc1: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trajectories, runs) of one run per label, ids r00, r01, ... unless given: fn = 1/t
    (and nc1_trace = 0.5/t with ``nc1``) at t = 1, 10, no onset; runs hold ``lab``."""
    ids = ids or [f"r{k:02d}" for k in range(len(labels))]
    t = np.array([1.0, 10.0])
    frames = [pd.DataFrame({"run_id": rid, "time": t, "fn": 1.0 / t}) for rid in ids]
    if nc1:
        frames = [frame.assign(nc1_trace=0.5 / t) for frame in frames]
    return pd.concat(frames, ignore_index=True), pd.DataFrame({"run_id": ids, "lab": labels})


def solid_lines(ax) -> list:
    """The solid lines of an axes (the runs' curves)."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]


def onset_dots(ax) -> list:
    """The lines drawn as 'o' markers of an axes (the onset dots)."""
    return [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
