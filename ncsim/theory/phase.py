"""Analytic phase diagram: collapse / no collapse / trapped at the origin / vanishing / the
band around the basin root where the outcome depends on the seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ncsim.errors import is_finite_number, is_integer, require
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.prediction import basin_position

PHASES = ("collapse", "no_collapse", "trapped", "vanishing", "basin_edge")
AXES = ("lambda_w", "lambda_h", "lambda", "lambda_b", "init_scale", "depth", "K", "n")


def classify(loss: str, bias: str, K: int, n: int, d: int, depth: int, lambda_w: float,
             lambda_h: float, lambda_b: float, init_scale: float) -> dict[str, Any]:
    """Phase of one parameter point.

    - vanishing: no non-zero stable critical point; every norm goes to 0 (NC1 may still fall).
    - trapped: a collapsed state exists (deep, M >= 3) but the init amplitude
      a0 = init_scale sqrt(d/2) lies below the band around the basin root a_u
      (:func:`ncsim.theory.prediction.basin_band`), so the flow returns to 0.
    - basin_edge: deep, a0 within that band, where Gaussian inits are trapped or collapse
      depending on the seed.
    - no_collapse: lambda_H = 0: within-class variability in null(W) never decays, so NC1
      fails in absolute terms. The relative metrics still fall as the class means grow without
      bound (polynomially, theory.md 1.2), so a simulated run there reaches the nc1_trace
      threshold and reports an onset (K=4, n=5, d=20, lambda_W = 0.02, init 1e-3: onset 32.6
      for MSE and CE alike, status ok).
    - collapse: the flow reaches the collapsed state (``collapsed_global`` says whether it is
      the global minimiser or only metastable). Deep CE: the collapsed (ETF) state; a
      lower-rank state can have a lower objective (:mod:`ncsim.theory.lowrank`).

    The phase is that of the K - 1 centred label modes. With a regularised bias the mean label
    mode of a deep head has its own, higher basin root (``theory_columns`` reports it as
    "mean_mode_trapped" / "mean_mode_basin_edge"); the phase does not depend on it.

    Raises :class:`InputError` for a bad model or decay (see :func:`equilibrium`), a dimension d
    that is not an integer >= 1 or an init scale that is not a finite number > 0.
    """
    require(is_integer(d) and d >= 1,
            f"dimension d must be an integer >= 1, got {d!r}")
    require(is_finite_number(init_scale) and init_scale > 0,
            f"init_scale must be a finite number > 0, got {init_scale!r}")
    eq = equilibrium(loss, bias, K, n, lambda_w, lambda_h, lambda_b, depth)
    glob = bool(eq.collapsed)
    # a non-zero critical point: sigma_local > 0 (NaN where there is none; a one-layer CE
    # decay within an ulp or two below lambda_crit rounds it to 0, with sigma = 0 and
    # fn_star = 0, which is no collapsed state)
    exists = glob or bool(eq.sigma_local > 0)
    row = {"collapsed_global": glob, "fn_star": float(eq.fn_star)}
    if not exists:
        return {**row, "phase": "vanishing"}
    if depth > 1 and lambda_w > 0 and lambda_h > 0:  # a zero decay leaves the origin no basin
        decays = (float(lambda_w),) * depth + (float(lambda_h),)
        where = basin_position(loss, K, n, init_scale * math.sqrt(d / 2), decays, d)
        if where == "below":
            return {**row, "phase": "trapped"}
        if where != "above":
            return {**row, "phase": "basin_edge"}
    if lambda_h == 0:
        return {**row, "phase": "no_collapse"}
    return {**row, "phase": "collapse"}


BASE_KEYS = ("loss", "bias", "K", "n", "d", "depth", "lambda_w", "lambda_h", "lambda_b",
             "init_scale")


def _axis_keys(x: str, y: str) -> set[str]:
    """Parameters that the axes x and y set (axis "lambda" sets lambda_w and lambda_h)."""
    keys = {x, y}
    if "lambda" in keys:
        keys |= {"lambda_w", "lambda_h"}
    return keys


def check_axes(x: str, y: str, bias: str | None) -> None:
    """Refuse a pair of phase axes that cannot make a diagram: two different names of
    :data:`AXES`; "lambda" (which sets lambda_w = lambda_h) not beside lambda_w or lambda_h;
    "lambda_b" only for a regularised bias."""
    require(x in AXES and y in AXES, f"phase axes must be two of: {', '.join(AXES)}")
    require(x != y, "phase axes must differ")
    require(not ("lambda" in (x, y) and {x, y} & {"lambda_w", "lambda_h"}),
            "the axis lambda sets lambda_w = lambda_h; the other axis must be another parameter")
    require("lambda_b" not in (x, y) or bias == "reg",
            f"the axis lambda_b needs --bias reg, got bias {bias!r}")


def phase_diagram(x: str, xs: Sequence[float], y: str, ys: Sequence[float],
                  base: dict[str, Any]) -> list[dict[str, Any]]:
    """Classify every (x, y) point; ``base`` holds the other parameters (as in :func:`classify`).

    Axis "lambda" sets lambda_w = lambda_h together.
    """
    check_axes(x, y, base.get("bias"))
    missing = [k for k in BASE_KEYS if k not in base and k not in _axis_keys(x, y)]
    require(not missing, f"phase diagram base parameters missing: {', '.join(missing)} "
                         f"(give {', '.join(BASE_KEYS)} except the two axes)")
    unknown = sorted(set(base) - set(BASE_KEYS))
    require(not unknown, f"unknown phase diagram base parameters: {', '.join(unknown)}; "
                         f"allowed: {', '.join(BASE_KEYS)}")
    rows = []
    for yv in ys:
        for xv in xs:
            p = dict(base)
            for name, v in ((x, xv), (y, yv)):
                if name in ("depth", "K", "n"):  # 4.0 from a float grid is 4; classify
                    # checks the rest, as it checks every value (bool, text, None refused)
                    whole = is_integer(v) or (is_finite_number(v) and float(v).is_integer())
                    require(whole, f"phase axis {name} takes integers, got {v!r}")
                    v = int(v)
                for key in ("lambda_w", "lambda_h") if name == "lambda" else (name,):
                    p[key] = v
            rows.append({x: xv, y: yv, **classify(**p)})
    return rows


def plot_phase(rows: list[dict[str, Any]], x: str, y: str, path: str) -> None:
    """Save the phase diagram as a figure (categorical colours, log axes for decays/scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(r[y]), xs.index(r[x])] = PHASES.index(r["phase"])
    from ncsim.plots import cell_edges, save_figure

    cmap = ListedColormap(["#2a9d8f", "#e9c46a", "#f4a261", "#8d99ae", "#b5838d"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    log = {name: name not in ("depth", "K", "n") and min(axis) > 0
           for name, axis in ((x, xs), (y, ys))}
    ax.pcolormesh(cell_edges(xs, log[x]), cell_edges(ys, log[y]), grid, cmap=cmap, vmin=-0.5,
                  vmax=len(PHASES) - 0.5)
    for name, set_scale in ((x, ax.set_xscale), (y, ax.set_yscale)):
        if log[name]:
            set_scale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(PHASES))]
    ax.legend(handles, PHASES, loc="upper left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    save_figure(fig, path)
