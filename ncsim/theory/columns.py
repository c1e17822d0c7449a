"""Theory columns of a simulated run row (prediction next to measurement)."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from typing import Any

import numpy as np

from ncsim.spec import RunSpec, TimeScale, spectral_rank
from ncsim.theory import dynamics
from ncsim.theory.critical import Lambda_crit, basin_threshold, lambda_crit
from ncsim.theory.equilibrium import equilibrium, minimiser_rank
from ncsim.theory.prediction import METASTABLE, predicted_onset

COLUMNS = ("fn_star_theory", "onset_time_theory", "collapsed_theory", "lambda_crit_theory",
           "w_norm_star_theory", "loss_star_theory", "fn_lower_rank_theory", "theory_regime")


_METASTABLE_NOTE = ("metastable: the init is in the basin of a collapsed local minimum; the "
                    "global minimiser (fn* column) is the origin")


_OTHER_METRIC = "onset predicted for nc1_trace only"


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
    collapsed, when the flow ends collapsed; inf where the flow vanishes or is trapped),
    ``collapsed_theory`` (bool), ``lambda_crit_theory`` (the critical lambda_W of the first
    layer when every decay is scaled by one factor, so that collapsed_theory holds iff lambda_W1
    < lambda_crit_theory; with equal layer decays this is :func:`lambda_crit` at ratio
    lambda_H / lambda_W), ``w_norm_star_theory`` (the RMS classifier row norm
    |W_L|_F / sqrt(K), the row norm |w_k| when the rows are equinorm; the measured
    ``final_w_norm`` is |W_L|_F), ``loss_star_theory`` (mean data loss),
    ``fn_lower_rank_theory`` (deep CE: fn of the best lower-rank state found where one beats
    the closed form, NaN elsewhere) and ``theory_regime``.
    Deep CE: the closed form minimises over the ETF ray and the origin; a state of lower rank
    can have a lower objective (theory.md 3.2). :func:`ncsim.theory.lowrank.lower_rank_check`
    (numeric, cached per (K, n, Lambda, L) in the process and on disk; 0.06-4 s per point at
    K = 10, depths 2-4, 5-7 s at depth 5) decides;
    where it finds a lower state the regime starts with "lower_rank: ..." (see
    :func:`_lower_rank`): the equilibrium columns and ``lambda_crit_theory`` are NaN and
    ``collapsed_theory`` True (Gaussian / arrays inits, whose fn* depends on the init), or kept
    for spectral / etf inits, which stay on the ETF ray. NaN / None where the theory does not
    apply (non-linear deep heads, d or the hidden width below the rank of the minimiser, a
    width other than d or per-layer decays in the onset model, an "arrays" init in the onset
    model, imbalanced CE or deep imbalanced models),
    with the reason in ``theory_regime``; never raises for a valid spec. Time-scale factors
    (``spec.time_scale``) leave the equilibrium columns unchanged (the minimiser does not
    depend on them); those of W or H make the onset NaN. The bias's eta_b keeps the
    predicted onset: the mode model has no bias dynamics (a free bias is undriven on the
    centred modes), and simulated one-layer free-bias MSE and CE onsets moved by at most
    0.2% for eta_b in 0.1..10.

    Regimes (``theory_regime``): "ok"; "approximate: d < 5K" (onset model less accurate);
    "no_minimiser: ..." (a zero decay: fn* etc. NaN, the early-phase onset is still given);
    "not_applicable: d below the rank of the minimiser" (or "the hidden width below ..." for a
    deep head narrower than that rank; the minimiser is then not the closed form and not
    unique: all columns NaN / None);
    deep gaussian inits: onset NaN (only the mode escape time is known, named in the text;
    followed by "; metastable: ..." where the flow goes to a collapsed local minimum while the
    origin is global); "basin_edge: ..." (deep gaussian init within the band around the basin
    root where runs go either way, :func:`ncsim.theory.prediction.basin_band`; deep aligned
    init on the boundary of the basin: onset NaN); "vanishing" / "trapped" (onset inf);
    "metastable: ..." (deep spectral / etf init in the basin of a collapsed local minimum while
    the origin is global: onset 0, fn* of the origin); "mean_mode_unseeded: ..." (an etf init,
    or a spectral init with a regularised bias, where the minimiser has a mean label mode the
    init does not seed: depth >= 2, the equilibrium columns describe the end state without
    the mean mode; one layer, they are NaN, the text gives both candidate fn values);
    "mean_mode_trapped: ..." / "mean_mode_basin_edge: ..." (deep MSE with a regularised bias
    and a Gaussian init whose amplitude lies below / within the band around the basin root of
    the mean label mode, whose data weight lambda_b/(1 + lambda_b) puts that root above the
    centred modes': below, the equilibrium columns describe the end state without the mean
    mode; within, they are NaN and the text gives both candidate fn values). Deep Gaussian
    inits with per-layer decays: "trapped" / "basin_edge: ..." against the basin root of the
    aligned flow with those decays, else onset NaN with the reason.
    "lower_rank: ..." (deep CE: a lower-rank state beats the closed form; the earlier regime
    follows after "; ").
    Imbalanced one-layer MSE: the equilibrium columns come
    from :mod:`ncsim.theory.imbalance` (``w_norm_star_theory`` is then the RMS classifier row
    norm |W|_F / sqrt(K), which is the row norm when balanced); the onset is not predicted (NaN).
    """
    m = spec.model
    if not m.balanced:
        return _imbalanced(spec)
    if m.depth > 1 and m.activation != "linear":
        return _empty(f"not_applicable: activation {m.activation}")
    if spec.time_scale.eta_h != 1 or spec.time_scale.per_layer(m.depth) != (1.0,) * m.depth:
        # the minimiser does not depend on the time scales; the onset prediction does
        row = theory_columns(dataclasses.replace(spec, time_scale=TimeScale()))
        row["onset_time_theory"] = math.nan
        note = "equilibrium only: the onset is predicted for unit time-scale factors"
        regime = str(row["theory_regime"])
        row["theory_regime"] = note if regime == "ok" else f"{regime}; {note}"
        return row
    try:
        lw = spec.reg.per_layer(m.depth)
        lw_arg: Any = lw[0] if len(set(lw)) == 1 else tuple(lw)
        K, n = m.classes, m.class_counts[0]
        if min(*lw, spec.reg.lambda_h) <= 0:
            row = _empty("no_minimiser: a zero weight or feature decay (norms grow without "
                         "bound); no fn*, no equilibrium")
            if m.depth == 1 and spec.init.kind == "gaussian" and spec.onset.metric == "nc1_trace":
                pred = predicted_onset(m.loss, m.bias, K, n, m.dim, lw[0], spec.reg.lambda_h,
                                       spec.init.scale, spec.onset.threshold,
                                       spec.reg.lambda_b, 1)
                row["onset_time_theory"] = pred.onset_time
            return row
        eq = equilibrium(m.loss, m.bias, K, n, lw_arg, spec.reg.lambda_h, spec.reg.lambda_b,
                         m.depth)
        rank = minimiser_rank(eq, K)
        if rank > min(m.dim, m.hidden_width):  # name the narrower of the two
            narrow = "d" if m.dim < rank else "the hidden width"
            return _empty(f"not_applicable: {narrow} below the rank of the minimiser")
        row = _empty("ok")
        row["fn_star_theory"] = float(eq.fn_star)
        row["w_norm_star_theory"] = float(eq.w_norm_star)
        row["loss_star_theory"] = float(eq.loss_star)
        row["collapsed_theory"] = bool(eq.collapsed)
        lh, lw0 = spec.reg.lambda_h, lw[0]
        if len(set(lw)) == 1:
            row["lambda_crit_theory"] = float(
                lambda_crit(m.loss, m.bias, K, n, m.depth, lh / lw0))
        else:  # per-layer decays, all scaled together: collapse iff Lambda < Lambda_crit
            row["lambda_crit_theory"] = (lw0 * float(Lambda_crit(m.loss, K, n, m.depth))
                                         / _geometric_decay(lw, lh))
        if spec.init.kind in ("spectral", "etf"):
            onset, regime = _aligned_onset(spec, eq, lw, lh)
            row["onset_time_theory"] = onset
            row["theory_regime"] = regime
            if regime == "ok":
                _unseeded_mean_mode(spec, eq, row, lw_arg)
        elif spec.init.kind == "gaussian" and isinstance(lw_arg, float) and (
                m.depth == 1 or m.hidden_width == m.dim):
            pred = predicted_onset(m.loss, m.bias, K, n, m.dim, lw0, lh, spec.init.scale,
                                   spec.onset.threshold, spec.reg.lambda_b, m.depth)
            row["theory_regime"] = pred.regime
            if pred.regime.startswith("escape_time_only"):  # not an nc1_trace onset: not reported
                row["onset_time_theory"] = math.nan
                row["theory_regime"] = (f"onset not predicted for deep gaussian inits (mode "
                                        f"escape time {pred.onset_time:.4g} only)")
                if pred.regime == METASTABLE:
                    row["theory_regime"] += "; " + _METASTABLE_NOTE
            else:
                row["onset_time_theory"] = pred.onset_time
            if not pred.regime.startswith(("trapped", "vanishing")):
                _gaussian_mean_mode(spec, eq, row, lw, lh, lw_arg)
        elif spec.init.kind == "gaussian" and m.hidden_width == m.dim:  # per-layer decays
            onset, regime = _unequal_decays_fate(spec, eq, lw, lh)
            row["onset_time_theory"] = onset
            row["theory_regime"] = regime
            if not regime.startswith(("trapped", "vanishing")):
                _gaussian_mean_mode(spec, eq, row, lw, lh, lw_arg)
        elif spec.init.kind == "gaussian":
            row["theory_regime"] = ("onset not predicted for deep gaussian inits with a width "
                                    "other than d")
            if m.loss == "mse" and m.bias == "reg" and float(eq.sigma_mean) > 0:
                row["theory_regime"] += (
                    "; the equilibrium columns assume that the mean label mode escapes the "
                    "origin (its basin is modelled for the width d only)")
        else:  # init "arrays": an arbitrary start
            row["theory_regime"] = ("onset not predicted for an 'arrays' init; the equilibrium "
                                    "columns are the global minimiser, which a start of that "
                                    "kind need not reach")
        if spec.onset.metric != "nc1_trace":  # the fate (trapped, ...) holds for every metric
            row["onset_time_theory"] = math.nan
            regime = str(row["theory_regime"])
            onset_only = regime == "ok" or regime.startswith("approximate") or (
                regime.startswith("onset not predicted") and "; " not in regime)
            row["theory_regime"] = (_OTHER_METRIC if onset_only
                                    else f"{regime}; {_OTHER_METRIC}")
        if m.loss == "ce" and m.depth > 1:
            _lower_rank(spec, eq, row, lw, lh)
        return row
    except (ValueError, ArithmeticError) as err:  # numerical trouble: report, never raise
        return _empty(f"error: {err}")


def _lower_rank(spec: RunSpec, eq: Any, row: dict[str, Any], lw: tuple[float, ...],
                lh: float) -> None:
    """Rewrite ``row`` (deep CE) where a state of rank r < K - 1 beats the closed form.

    The closed form minimises over the ETF ray and the origin only; with M >= 3 factors the
    Schatten-2/M penalty can favour a lower rank (theory.md 3.2). :func:`ncsim.theory.lowrank.
    lower_rank_check` (numeric, 6 restarts per rank, cached per (K, n, Lambda, L)) searches the
    ranks 1 .. min(K - 2, d, width); a lower objective (by more than 1e-10 relative) proves the
    closed form is not the global minimiser. Then:

    - spectral / etf inits: the init is symmetric under class permutations and stays on the
      ETF ray (K = 10, n = 20, Lambda = 1e-3, L = 2, 3: the runs end at the ETF fn to the
      printed digits), so its fate is the closed form's (collapsed, trapped, ...): the columns
      are kept, the regime says that the closed form is not the minimiser;
    - other inits: the run ends at the ETF state (then a local minimum) or at one of the
      lower-rank minima, depending on the init, so fn*, |w|* and the loss are NaN,
      ``collapsed_theory`` is True (the minimiser is a non-zero, within-class collapsed
      state), ``lambda_crit_theory`` (the ETF ray's threshold, below that of the lower-rank
      state) is NaN, and a "vanishing" onset (derived on the ETF ray) is NaN; "trapped" (inf)
      is kept: it is derived from the mode flow near the origin, where every centred label
      mode has the same strength (not checked against runs in this regime).

    A witness found without bias is also feasible with a bias (b = 0), so the decision holds
    for every bias option; with a bias the search may miss states that use it.
    """
    from ncsim.theory.lowrank import lower_rank_check

    m = spec.model
    K, n = m.classes, m.class_counts[0]
    max_rank = min(K - 2, m.dim, m.hidden_width)
    if max_rank < 1:
        return
    lr = lower_rank_check(K, n, _geometric_decay(lw, lh), m.depth)
    f_closed = float(eq.objective_star)
    if not lr.beats(f_closed, max_rank):
        return
    lower = lr.state(max_rank, lw[-1])
    row["fn_lower_rank_theory"] = lower.fn
    state = (f"the ETF state (f = {f_closed:.6g}, fn = {float(eq.fn_star):.6g})" if eq.collapsed
             else f"the origin (f = {f_closed:.6g}; the ETF state is above it)")
    text = (f"lower_rank: {state} is not the minimiser; a rank-{lower.rank} state has "
            f"f = {lower.objective:.6g}, fn = {lower.fn:.6g} (numeric, ncsim.theory.lowrank)")
    regime = str(row["theory_regime"])
    if spec.init.kind in ("spectral", "etf"):
        row["theory_regime"] = (f"{text}; the {spec.init.kind} init stays on the ETF ray (it "
                                f"is symmetric under class permutations) and does not reach "
                                f"that state: the equilibrium columns are the closed form's; "
                                f"{regime}")
        return
    _end_state_columns(row, None)
    row["lambda_crit_theory"] = math.nan
    row["collapsed_theory"] = True
    if regime.startswith("vanishing"):
        row["onset_time_theory"] = math.nan
    row["theory_regime"] = (f"{text}; fn* depends on the init (runs end at the ETF state, a "
                            f"local minimum, or at a lower-rank one): equilibrium columns NaN; "
                            f"{regime}")


def _geometric_decay(lw: tuple[float, ...], lh: float) -> float:
    """Lambda = (lambda_W1 ... lambda_WL lambda_H)^(1/(L+1)), the decay the thresholds use;
    through logarithms where the product leaves float64's normal range (decays near 1e-110 or
    1e300, each of which has a well-defined Lambda)."""
    decays = (*lw, lh)
    product = math.prod(decays)
    if sys.float_info.min <= product < math.inf or min(decays) == 0:
        return product ** (1.0 / len(decays))
    return math.exp(math.fsum(map(math.log, decays)) / len(decays))


def _aligned_onset(spec: RunSpec, eq: Any, lw: tuple[float, ...], lh: float
                   ) -> tuple[float, str]:
    """(onset, regime) of a spectral / etf init: it starts collapsed (nc1_trace = 0), so the
    onset is 0 when the flow ends in a collapsed state and inf when it goes to the origin.

    One layer: collapsed iff the global minimiser is (else every norm vanishes). Deep: the
    init is aligned with per-factor amplitude ``scale`` on its modes, so it ends collapsed
    iff a non-zero critical point exists and the aligned mode flow from ``scale`` collapses
    (:func:`_aligned_fate`), whether the collapsed state is global or metastable.
    """
    m = spec.model
    if m.depth == 1 or not math.isfinite(float(eq.sigma_local)):
        return (0.0, "ok") if eq.collapsed else (math.inf, "vanishing")
    fate = _aligned_fate(m.loss, m.classes, m.class_counts[0], spec.init.scale, (*lw, lh))
    if fate == "origin":
        return math.inf, "trapped"
    if fate == "undecided":
        return math.nan, ("basin_edge: the aligned init lies on the boundary of the origin's "
                          "basin (the mode flow settles neither at 0 nor collapsed)")
    if not eq.collapsed:
        return 0.0, _METASTABLE_NOTE
    return 0.0, "ok"


@functools.lru_cache(maxsize=4096)  # seeds of one parameter point share one answer
def _aligned_fate(loss: str, K: int, n: int, scale: float, decays: tuple[float, ...]) -> str:
    """"collapse", "origin" or "undecided" for an aligned init of per-factor amplitude
    ``scale`` with the factor decays ``decays`` (deep, all > 0). Equal decays: the balanced
    flow stays balanced, so it collapses iff scale > a_u (:func:`basin_threshold`). Unequal
    decays: the factors drift apart and a_u of the geometric-mean decay is not the boundary
    (MSE, K=4, n=5, L=2, lambda_W = 0.04, lambda_H = 0.005: 1.1 a_u(Lambda) vanishes), so the
    per-factor mode flow is integrated (:func:`ncsim.theory.dynamics.aligned_fate`)."""
    if len(set(decays)) == 1:
        a_u = float(basin_threshold(loss, K, n, decays[0], len(decays) - 1))
        return "collapse" if scale > a_u else "origin"
    return dynamics.aligned_fate(loss, K, n, scale, decays)


def _seeds_mean_mode(spec: RunSpec) -> bool:
    """Whether an aligned init puts an amplitude on the mean label mode: only a spectral init
    of MSE without bias (K modes); etf inits and every other spectral init fill the K - 1
    centred modes only."""
    return spec.init.kind == "spectral" and spectral_rank(spec.model) == spec.model.classes


def _unseeded_mean_mode(spec: RunSpec, eq: Any, row: dict[str, Any], lw_arg: Any) -> None:
    """Rewrite ``row`` (an aligned init that ends collapsed) where the global minimiser has a
    mean label mode (sigma_mean > 0: MSE without bias, or with a regularised bias above its
    threshold) that the init does not seed. The mean mode then stays at 0 in exact
    arithmetic. Depth >= 2: 0 is a strict local minimum of the mean mode, so the flow ends at
    the state without it: its fn, |w| and loss replace the minimiser's. One layer: 0 is
    invariant but unstable, so whether rounding errors seed the mean mode (and the run ends at
    fn*) or not depends on the run: those columns are NaN."""
    m = spec.model
    if _seeds_mean_mode(spec) or not float(eq.sigma_mean) > 0:
        return
    K, n = m.classes, m.class_counts[0]
    end = equilibrium(m.loss, m.bias, K, n, lw_arg, spec.reg.lambda_h, spec.reg.lambda_b,
                      m.depth, mean_mode=False)
    fn_end, fn_star = float(end.fn_star), float(eq.fn_star)
    if m.depth > 1:
        _end_state_columns(row, end)
        row["theory_regime"] = (
            f"mean_mode_unseeded: the {spec.init.kind} init has no mean label mode, which "
            f"stays 0 (a strict local minimum for depth >= 2): the flow ends at fn = "
            f"{fn_end:.6g} (the fn* column and the other equilibrium columns describe that "
            f"state), not at the global minimiser, fn* = {fn_star:.6g}")
        return
    _end_state_columns(row, None)
    row["theory_regime"] = (
        f"mean_mode_unseeded: the {spec.init.kind} init has no mean label mode; one layer: 0 "
        f"is invariant but unstable there, so the run ends at fn = {fn_end:.6g} (the mean mode "
        f"stays 0) or, once rounding errors seed it, at the global minimiser, fn* = "
        f"{fn_star:.6g}; which one depends on the run: equilibrium columns NaN")


def _end_state_columns(row: dict[str, Any], end: Any) -> None:
    """Set fn*, |w|* and the loss of ``row`` to those of the equilibrium ``end`` where the
    flow ends, or to NaN (``end`` None) where the end state depends on the run."""
    for key, field in (("fn_star_theory", "fn_star"), ("w_norm_star_theory", "w_norm_star"),
                       ("loss_star_theory", "loss_star")):
        row[key] = math.nan if end is None else float(getattr(end, field))


def _unequal_decays_fate(spec: RunSpec, eq: Any, lw: tuple[float, ...], lh: float
                        ) -> tuple[float, str]:
    """(onset, regime) of a deep Gaussian init with per-layer weight decays (width d, every
    decay > 0), as :func:`ncsim.theory.prediction.predicted_onset` gives them for equal
    decays: inf and "vanishing" without a non-zero critical point; inf and "trapped" below the
    band around the basin root of the aligned flow with these decays, NaN and "basin_edge"
    within it (:func:`ncsim.theory.prediction.basin_position`); above it NaN (only the mode
    escape time of equal decays is derived), with the metastable note where the origin is
    global."""
    from ncsim.theory.prediction import basin_band, basin_position

    m = spec.model
    if not (bool(eq.collapsed) or math.isfinite(float(eq.sigma_local))):
        return math.inf, "vanishing"
    a0 = spec.init.scale * math.sqrt(m.dim / 2)
    where = basin_position(m.loss, m.classes, m.class_counts[0], a0, (*lw, lh), m.dim)
    if where == "below":
        return math.inf, "trapped"
    if where != "above":
        low, high = basin_band(m.dim)
        return math.nan, (f"basin_edge: init amplitude a sqrt(d/2) {where}, within the band "
                          f"[{low:.3g}, {high:.3g}] a_u around the basin root a_u of the "
                          f"aligned flow with these decays, where runs are trapped or "
                          f"collapse by seed")
    regime = "onset not predicted for deep gaussian inits with per-layer weight decays"
    return math.nan, regime if bool(eq.collapsed) else f"{regime}; {_METASTABLE_NOTE}"


def _gaussian_mean_mode(spec: RunSpec, eq: Any, row: dict[str, Any], lw: tuple[float, ...],
                        lh: float, lw_arg: Any) -> None:
    """Rewrite ``row`` (a deep Gaussian init whose centred modes collapse) where the minimiser
    has a mean label mode with a regularised bias (MSE; sigma_mean > 0).

    With the bias at its optimum the mean mode is an MSE mode of data weight c0 = lambda_b /
    (1 + lambda_b) < 1, i.e. a mode with every decay divided by c0 (theory.md 1.1): its basin
    root lies above that of the centred modes, and for depth >= 2 the origin of the mean mode
    is a strict local minimum. The init amplitude a0 = a sqrt(d/2) is placed against the band
    around that root (:func:`ncsim.theory.prediction.basin_position`). Below the band the mean
    mode returns to 0 and the run ends at ``equilibrium(..., mean_mode=False)``: its fn, |w|
    and loss replace the minimiser's. Within the band the end state depends on the seed: those
    columns are NaN and the regime gives both values. Without bias every mode has the same
    root; a free bias absorbs the mean mode; CE has none."""
    from ncsim.theory.prediction import basin_position

    m = spec.model
    if not (m.depth > 1 and m.loss == "mse" and m.bias == "reg" and float(eq.sigma_mean) > 0):
        return
    K, n = m.classes, m.class_counts[0]
    c0 = spec.reg.lambda_b / (1.0 + spec.reg.lambda_b)
    a0 = spec.init.scale * math.sqrt(m.dim / 2)
    where = basin_position("mse", K, n, a0, tuple(v / c0 for v in (*lw, lh)), m.dim)
    if where == "above":
        return
    end = equilibrium(m.loss, m.bias, K, n, lw_arg, lh, spec.reg.lambda_b, m.depth,
                      mean_mode=False)
    fn_end, fn_star = float(end.fn_star), float(eq.fn_star)
    regime = str(row["theory_regime"])
    if where == "below":
        _end_state_columns(row, end)
        row["theory_regime"] = (
            f"mean_mode_trapped: the init amplitude a sqrt(d/2) = {a0:.4g} lies below the band "
            f"around the basin root of the mean label mode (data weight lambda_b/(1 + lambda_b)"
            f" = {c0:.4g}), which returns to 0: the flow ends at fn = {fn_end:.6g} (the fn* "
            f"column and the other equilibrium columns describe that state), not at the global "
            f"minimiser, fn* = {fn_star:.6g}; {regime}")
        return
    _end_state_columns(row, None)
    row["theory_regime"] = (
        f"mean_mode_basin_edge: the init amplitude a sqrt(d/2) {where.replace('a_u', 'a_u0')}, "
        f"within the band around the basin root a_u0 of the mean label mode (data weight "
        f"lambda_b/(1 + lambda_b) = {c0:.4g}): the run ends at fn = {fn_end:.6g} (mean mode "
        f"back at 0) or at the global minimiser, fn* = {fn_star:.6g}, by seed: equilibrium "
        f"columns NaN; {regime}")


def _imbalanced(spec: RunSpec) -> dict[str, Any]:
    """Equilibrium columns of an imbalanced one-layer MSE run (closed form / certified)."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    m = spec.model
    if m.depth != 1 or m.loss != "mse":
        return _empty("not_applicable: imbalanced classes (one-layer MSE only)")
    lw, lh = spec.reg.per_layer(1)[0], spec.reg.lambda_h
    if not (lw > 0 and lh > 0):
        return _empty("no_minimiser: a zero weight or feature decay")
    try:
        eq = imbalanced_equilibrium("mse", m.bias, m.class_counts, lw, lh, spec.reg.lambda_b)
    except (ValueError, ArithmeticError) as err:
        return _empty(f"error: {err}")
    if int(np.sum(eq.singular_values > 1e-9 * eq.singular_values[0])) > m.dim:
        return _empty("not_applicable: d below the rank of the minimiser")
    row = _empty(f"ok: imbalanced equilibrium ({eq.method}); onset not predicted")
    counts = np.asarray(m.class_counts, dtype=np.float64)
    N = float(counts.sum())
    row["fn_star_theory"] = eq.fn_star
    row["w_norm_star_theory"] = eq.w_norm_fro / math.sqrt(m.classes)
    row["loss_star_theory"] = eq.loss_star
    row["collapsed_theory"] = eq.collapsed
    if m.bias != "reg":  # the largest label mode dies last: Lambda_c = s_max / N
        from ncsim.theory.imbalance import label_singular_values

        s_max = float(label_singular_values(m.bias, m.class_counts)[0])
        row["lambda_crit_theory"] = s_max / N / math.sqrt(lh / lw)
    return row
