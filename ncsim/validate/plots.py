"""Figures of the validation module: training curves and measured-vs-simulated overlays."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ncsim.plots import save_figure  # noqa: E402


def _on_log_axis(values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` (n,) with every entry a log axis cannot show (0, negative, NaN, inf) set
    to NaN, so that the line breaks there instead of plunging to the axis edge, and how
    many such entries there were."""
    v = np.asarray(values, dtype=np.float64)
    bad = ~(np.isfinite(v) & (v > 0))
    return np.where(bad, np.nan, v), int(bad.sum())


def _note_hidden(ax: plt.Axes, hidden: int, what: str) -> None:
    """Say on ``ax`` how many values of ``what`` its log axis leaves out."""
    if hidden:
        ax.set_title(f"{hidden} {what} value(s) <= 0 or NaN not shown (log axis)", fontsize=8)


def plot_training(log: pd.DataFrame, path: str | Path, onset: float = math.nan) -> Path:
    """fn, NC1 (trace and pinv forms) and accuracy against epoch; onset marked if finite.

    fn and NC1 are on log axes: a value that is 0, negative or NaN breaks the line and the
    panel says how many were left out."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    t = log["time"].to_numpy(np.float64)
    fn, hidden = _on_log_axis(log["fn"])
    axes[0].plot(t, fn, marker=".")
    axes[0].set(xlabel="epoch", ylabel="fn (mean |h|)", yscale="log")
    _note_hidden(axes[0], hidden, "fn")
    hidden = 0
    for col in ("nc1_trace", "nc1"):
        if col in log:
            values, n = _on_log_axis(log[col])
            hidden += n
            axes[1].plot(t, values, marker=".", label=col)
    axes[1].set(xlabel="epoch", ylabel="NC1", yscale="log")
    _note_hidden(axes[1], hidden, "NC1")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend()
    axes[2].plot(t, log["accuracy"], label="train")
    if "test_accuracy" in log:
        axes[2].plot(t, log["test_accuracy"], label="test")
    axes[2].set(xlabel="epoch", ylabel="accuracy")
    axes[2].legend()
    for ax in axes:
        if math.isfinite(onset):
            ax.axvline(onset, color="k", ls="--", lw=0.8)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def plot_overlay(measured: pd.DataFrame, simulated: pd.DataFrame, path: str | Path,
                 onsets: dict[str, float] | None = None) -> Path:
    """Measured and simulated fn and NC1 (trace form) against matched time t = lr x steps.

    All axes are logarithmic: records at t <= 0 are left out (the start of the phase), and a
    value that is 0, negative or NaN breaks its line, with a note of how many were left out;
    a panel with nothing to show on log axes says so (on linear axes).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    hidden = {"fn": 0, "nc1_trace": 0}
    shown = {"fn": 0, "nc1_trace": 0}
    for frame, label, style in ((measured, "network", "-o"), (simulated, "UFM surrogate", "-")):
        t = frame["t"].to_numpy(np.float64)
        keep = t > 0
        for ax, col in zip(axes, ("fn", "nc1_trace")):
            values, n = _on_log_axis(frame[col].to_numpy()[keep])
            hidden[col] += n
            shown[col] += values.size - n
            ax.plot(t[keep], values, style, ms=3, label=label)
    for ax, col, name in zip(axes, ("fn", "nc1_trace"), ("fn", "NC1 (trace)")):
        ax.set(xlabel="t = lr x steps (from MSE start)", ylabel=name)
        if shown[col]:
            ax.set(xscale="log", yscale="log")
            _note_hidden(ax, hidden[col], col)
        else:  # log axes without a positive value to show cannot be drawn
            ax.text(0.5, 0.5, f"no positive finite {col} at t > 0 to show",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9)
    for name, value in (onsets or {}).items():
        if value is not None and math.isfinite(value) and value > 0:
            for ax in axes:
                ax.axvline(value, ls="--", lw=0.8, color="k" if name == "network" else "C1")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, Path(path))
