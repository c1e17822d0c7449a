"""Theory columns of a simulated run row (prediction next to measurement)."""

from __future__ import annotations

import math
from typing import Any

from ncsim.spec import RunSpec
from ncsim.theory.critical import lambda_crit
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.prediction import predicted_onset

COLUMNS = ("fn_star_theory", "onset_time_theory", "collapsed_theory", "lambda_crit_theory",
           "w_norm_star_theory", "loss_star_theory", "theory_regime")


def _empty(regime: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row["collapsed_theory"] = None
    row["theory_regime"] = regime
    return row


def theory_columns(spec: RunSpec) -> dict[str, Any]:
    """Closed-form equilibrium and predicted onset for the run ``spec``.

    Returns
    -------
    dict with ``fn_star_theory`` (fn* at the global minimiser), ``onset_time_theory``
    (predicted nc1_trace onset for a Gaussian init; 0 for spectral / etf inits, which start
    collapsed; inf where the flow vanishes or is trapped), ``collapsed_theory`` (bool),
    ``lambda_crit_theory``, ``w_norm_star_theory``, ``loss_star_theory`` and ``theory_regime``.
    NaN / None where the theory does not apply (imbalanced classes, non-linear deep heads, a
    width other than d, per-layer decays in the onset model); never raises for a valid spec.
    """
    m = spec.model
    if not m.balanced:
        return _empty("not_applicable: imbalanced classes")
    if m.depth > 1 and m.activation != "linear":
        return _empty(f"not_applicable: activation {m.activation}")
    if spec.time_scale.eta_h != 1 or spec.time_scale.per_layer(m.depth) != (1.0,) * m.depth:
        return _empty("not_applicable: time-scale factors")
    try:
        lw = spec.reg.per_layer(m.depth)
        lw_arg: Any = lw[0] if len(set(lw)) == 1 else tuple(lw)
        K, n = m.classes, m.class_counts[0]
        eq = equilibrium(m.loss, m.bias, K, n, lw_arg, spec.reg.lambda_h, spec.reg.lambda_b,
                         m.depth)
        row = _empty("ok")
        row["fn_star_theory"] = float(eq.fn_star)
        row["w_norm_star_theory"] = float(eq.w_norm_star)
        row["loss_star_theory"] = float(eq.loss_star)
        row["collapsed_theory"] = bool(eq.collapsed)
        lh, lw0 = spec.reg.lambda_h, lw[0]
        if lw0 > 0 and lh > 0:
            row["lambda_crit_theory"] = float(
                lambda_crit(m.loss, m.bias, K, n, m.depth, lh / lw0))
        if spec.onset.metric != "nc1_trace":
            row["theory_regime"] = "onset predicted for nc1_trace only"
        elif spec.init.kind in ("spectral", "etf"):
            row["onset_time_theory"] = 0.0 if eq.collapsed else math.inf
        elif spec.init.kind == "gaussian" and isinstance(lw_arg, float) and (
                m.depth == 1 or m.hidden_width == m.dim):
            pred = predicted_onset(m.loss, m.bias, K, n, m.dim, lw0, lh, spec.init.scale,
                                   spec.onset.threshold, spec.reg.lambda_b, m.depth)
            row["onset_time_theory"] = pred.onset_time
            row["theory_regime"] = pred.regime
        return row
    except (ValueError, ArithmeticError) as err:  # numerical trouble: report, never raise
        return _empty(f"error: {err}")
