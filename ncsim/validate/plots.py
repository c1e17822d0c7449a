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


def plot_training(log: pd.DataFrame, path: str | Path, onset: float = math.nan) -> Path:
    """fn, NC1 (trace and pinv forms) and accuracy against epoch; onset marked if finite."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    t = log["time"].to_numpy(np.float64)
    axes[0].plot(t, log["fn"], marker=".")
    axes[0].set(xlabel="epoch", ylabel="fn (mean |h|)", yscale="log")
    for col in ("nc1_trace", "nc1"):
        if col in log:
            axes[1].plot(t, log[col], marker=".", label=col)
    axes[1].set(xlabel="epoch", ylabel="NC1", yscale="log")
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
    """Measured and simulated fn and NC1 (trace form) against matched time t = lr x steps."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for frame, label, style in ((measured, "network", "-o"), (simulated, "UFM surrogate", "-")):
        t = frame["t"].to_numpy(np.float64)
        keep = t > 0
        axes[0].plot(t[keep], frame["fn"].to_numpy()[keep], style, ms=3, label=label)
        axes[1].plot(t[keep], frame["nc1_trace"].to_numpy()[keep], style, ms=3, label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="t = lr x steps (from MSE start)", ylabel="fn")
    axes[1].set(xscale="log", yscale="log", xlabel="t = lr x steps (from MSE start)",
                ylabel="NC1 (trace)")
    for name, value in (onsets or {}).items():
        if value is not None and math.isfinite(value) and value > 0:
            for ax in axes:
                ax.axvline(value, ls="--", lw=0.8, color="k" if name == "network" else "C1")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, Path(path))
