"""Figures from the result tables (matplotlib, non-interactive backend)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ncsim.errors import InputError, is_integer, require  # noqa: E402
from ncsim.io import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` atomically (format from the extension) and close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120,
                                                   bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _positive(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[(frame["time"] > 0) & np.isfinite(frame[column]) & (frame[column] > 0)]


def _label_colors(values: list, cmap) -> tuple[list, matplotlib.colors.Normalize | None]:
    """Colours of the runs by their label ``values`` (numbers: by value, on a log scale when
    all are positive and span more than a factor 10; otherwise by order) and the norm of a
    colour bar (None when the colours follow the order)."""
    numeric = [isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values]
    v = np.asarray([float(x) if ok else np.nan for x, ok in zip(values, numeric)])
    if values and all(numeric) and np.isfinite(v).all() and v.min() < v.max():
        if v.min() > 0 and v.max() > 10 * v.min():
            norm = matplotlib.colors.LogNorm(v.min(), v.max())
        else:
            norm = matplotlib.colors.Normalize(v.min(), v.max())
        return [cmap(norm(x)) for x in v], norm
    return [cmap(k / max(len(values) - 1, 1)) for k in range(len(values))], None


def trajectory_figure(
    trajectories: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    metrics: Sequence[str] = ("fn", "nc1_trace"),
    label_column: str | None = None,
    max_runs: int = 64,
    time_label: str = "t (gradient-flow time)",
) -> plt.Figure:
    """One log-log panel per metric, one line per run, onset times marked with a dot.

    Parameters
    ----------
    trajectories : long table with ``run_id, time`` and the ``metrics`` columns.
    runs : run table (``run_id``; ``onset_time, fn_at_onset`` to mark the onsets), optional.
    label_column : run-table column used to colour and label the lines: a legend (one entry
        per value) up to 12 runs, a colour bar of its values beyond (numbers; other values
        colour by order).
    max_runs : the first ``max_runs`` runs are drawn (a whole number >= 1); the title then
        says how many of all. An onset dot sits on its run's line (on the fn panel at
        ``fn_at_onset`` when finite); an onset outside the drawn records' times gets none.

    Nothing is dropped silently: a panel says how many records with t > 0 it cannot show
    on its log axes (a value that is 0, negative or NaN), and one without any record to
    show says so.
    """
    require(is_integer(max_runs) and max_runs >= 1,
            f"max_runs must be a whole number >= 1 (the first runs drawn), got {max_runs!r}")
    all_ids = list(dict.fromkeys(trajectories["run_id"])) if "run_id" in trajectories else []
    ids = all_ids[:max_runs]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    cmap = plt.get_cmap("viridis")
    info = runs.set_index("run_id") if runs is not None and "run_id" in runs else None
    labelled = (info is not None and label_column is not None
                and label_column in info.columns)
    values = [info.at[rid, label_column] if labelled and rid in info.index else None
              for rid in ids]
    colors, norm = _label_colors(values, cmap)  # values are all None when not labelled
    hidden = dict.fromkeys(metrics, 0)
    shown = dict.fromkeys(metrics, 0)
    seen: set[str] = set()
    for k, rid in enumerate(ids):
        part = trajectories[trajectories["run_id"] == rid]
        color = colors[k]
        label = None
        if labelled and rid in info.index:
            value = values[k]
            label = (f"{label_column}={value:.3g}" if isinstance(value, numbers.Real)
                     and not isinstance(value, bool) else f"{label_column}={value}")
            if label in seen:  # one legend entry per value
                label = None
            else:
                seen.add(label)
        for ax, metric in zip(axes[0], metrics):
            if metric not in part:
                continue
            data = _positive(part, metric)
            hidden[metric] += int((part["time"] > 0).sum()) - len(data)
            shown[metric] += len(data)
            ax.loglog(data["time"], data[metric], color=color, lw=1.0, label=label)
            onset = (info.at[rid, "onset_time"] if info is not None and rid in info.index
                     and "onset_time" in info.columns else np.nan)
            y = _onset_value(info, rid, metric, onset, data)
            if np.isfinite(y):
                ax.plot([onset], [y], "o", color=color, ms=3)
    for ax, metric in zip(axes[0], metrics):
        ax.set_xlabel(time_label)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
        if not shown[metric]:
            ax.text(0.5, 0.5, f"no positive finite {metric} at t > 0 to show",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9)
        elif hidden[metric]:
            ax.set_title(f"{hidden[metric]} record(s) with {metric} <= 0 or NaN not shown "
                         "(log axis)", fontsize=8)
    if len(all_ids) > len(ids):
        fig.suptitle(f"first {len(ids)} of {len(all_ids)} runs shown", fontsize=9)
    fig.tight_layout()
    if labelled and 0 < len(ids) <= 12:
        axes[0][0].legend(fontsize=7)
    elif labelled and norm is not None:
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=axes[0].tolist(), label=label_column, fraction=0.03, pad=0.02)
    return fig


def _onset_value(info: pd.DataFrame | None, rid: str, metric: str, onset: float,
                 data: pd.DataFrame) -> float:
    """Where a run's onset dot sits on a panel: ``fn_at_onset`` on the fn panel when it is
    finite, else on the line as drawn (straight between records on the log-log axes); NaN
    (no dot) without a finite onset > 0 or when the onset lies outside the drawn records'
    times (a line cut short by values the log axis cannot show)."""
    onset = _as_float(onset)
    if not (np.isfinite(onset) and onset > 0 and len(data)):
        return math.nan
    if metric == "fn" and "fn_at_onset" in info.columns:
        value = _as_float(info.at[rid, "fn_at_onset"])
        if np.isfinite(value):
            return value
    times = data["time"].to_numpy(float)
    if not times.min() <= onset <= times.max():
        return math.nan
    return float(np.exp(np.interp(np.log(onset), np.log(times),
                                  np.log(data[metric].to_numpy(float)))))


def _as_float(value: object) -> float:
    """A table cell as a float: NaN for a missing value (None, pd.NA) or one that is not a
    number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def heatmap_figure(
    table: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str = "",
    log_value: bool = True,
    boundary: tuple[np.ndarray, np.ndarray] | None = None,
    log_x: bool | None = True,
    log_y: bool | None = True,
) -> plt.Figure:
    """Heat map of ``value`` (the mean of each cell's rows) over a grid of (``x``, ``y``).

    Each cell is centred on its grid point (in log space on a log axis) and shown whole; a
    cell without a finite (with ``log_value``, positive) mean is blank.

    log_x, log_y : True: a log axis (every coordinate must be positive); False: linear, with
        a tick at each grid value when they are at most 20 whole numbers (depth, K); None: log
        when every coordinate is positive, else linear (e.g. a decay grid holding 0).
    boundary : optional curve (xs, ys) drawn over the map (e.g. a theoretical threshold).
    """
    missing = [c for c in (x, y, value) if c not in table.columns]
    if missing:
        raise InputError(f"heat map: no column {', '.join(map(repr, missing))} in the table; "
                         f"columns: {', '.join(map(str, table.columns))}")
    if not len(table):
        raise InputError(f"heat map of {value!r}: the table has no rows; nothing to draw")
    logs = {x: log_x, y: log_y} if x != y else {x: log_x}
    for column, log in logs.items():
        keys = pd.to_numeric(table[column], errors="coerce").to_numpy(float)  # text -> NaN
        good = np.isfinite(keys) & (keys > 0)
        if log is None:
            logs[column] = log = bool(good.all())
        if not log:
            good = np.isfinite(keys)
        if not good.all():
            raise InputError(f"heat map: column {column!r} needs "
                             f"{'positive ' if log else ''}finite values on its "
                             f"{'log' if log else 'linear'} axis; got {keys[~good][0]}")
    if not pd.api.types.is_numeric_dtype(table[value]):
        raise InputError(f"heat map: column {value!r} holds {table[value].dtype} values, not "
                         "numbers; give a numeric column (a cell shows the mean of its rows)")
    grid = table.pivot_table(index=y, columns=x, values=value, aggfunc="mean", dropna=False)
    data = grid.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.8, 4.6))
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log10(data) if log_value else data
    xs, ys = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    x_edges, y_edges = cell_edges(xs, log=logs[x]), cell_edges(ys, log=logs[y])
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(shown), shading="flat",
                         cmap="magma")
    fig.colorbar(mesh, ax=ax, label=f"log10 {value}" if log_value else value)
    for values, log, scale, ticks in ((xs, logs[x], ax.set_xscale, ax.set_xticks),
                                      (ys, logs[y], ax.set_yscale, ax.set_yticks)):
        if log:
            scale("log")
        elif len(values) <= 20 and np.all(values == np.round(values)):
            ticks(values)  # a count axis (depth, K): one tick per row or column
    if boundary is not None:
        ax.plot(boundary[0], boundary[1], "c-", lw=2, label="theory threshold")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or value)
    fig.tight_layout()
    return fig


# matplotlib's log axes overflow (ticks, margins) on spans like 1e-250 .. 1e250: grid values
# on a log axis lie within 10^+-LOG10_VALUES, the cells' mirrored outer edges within
# 10^+-LOG10_EDGES
LOG10_VALUES = 150.0
LOG10_EDGES = 200.0


def cell_edges(values: Sequence[float], log: bool) -> np.ndarray:
    """Edges (M + 1,) of the cells of a heat map centred on sorted grid values (M,).

    On a log axis (``log``, positive values within 1e+-150, else an :class:`InputError`) the
    inner edges are geometric midpoints and a single value gets half a decade either side; on a
    linear axis they are arithmetic midpoints and a single value gets +-0.5. The outer edges
    mirror the nearest inner ones, so the edge cells are whole (on a log axis up to 1e+-200).
    """
    v = np.asarray(values, dtype=float)
    if log:
        exponents = np.log10(v)
        require(bool(np.all(np.abs(exponents) <= LOG10_VALUES)),
                f"a log axis of a figure takes values within 1e-{LOG10_VALUES:.0f} .. "
                f"1e+{LOG10_VALUES:.0f}, got {v.min():.3g} .. {v.max():.3g}; plot a narrower "
                "range")
        edges = cell_edges(exponents, log=False)
        return 10.0 ** np.clip(edges, -LOG10_EDGES, LOG10_EDGES)
    if len(v) == 1:
        return v[0] + np.array([-0.5, 0.5])
    mids = 0.5 * (v[1:] + v[:-1])
    return np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])
