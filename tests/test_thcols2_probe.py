"""Second probe of :func:`ncsim.theory.columns.theory_columns`: exact regime texts and the
columns of branches the first probe left open, each against the theory function it comes
from (equilibrium, lambda_crit, predicted_onset, basin_position, imbalanced_equilibrium)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from columns_helpers import EQ_COLUMNS
from columns_helpers import TIME_SCALE_NOTE as _NOTE
from columns_helpers import WIDTH_NOTE as _WIDTH
from columns_helpers import column_spec as _spec
from columns_helpers import same_equilibrium as _same_equilibrium

from ncsim.spec import ModelSpec, Regularization, RunSpec, TimeScale
from ncsim.theory import equilibrium, lambda_crit, theory_columns
from ncsim.theory.prediction import predicted_onset

_OTHER = "onset predicted for nc1_trace only"


# ---------------------------------------------------------------------------------------------
# time-scale factors


def test_time_scale_regime_is_the_note_alone_when_the_base_regime_is_ok():
    """eta_H = 2, d = 15 >= 5K (base regime "ok"): the regime is the note alone, not
    "ok; <note>"; the equilibrium columns are the unit-time-scale ones, the onset NaN."""
    row = theory_columns(_spec(d=15, time_scale=TimeScale(eta_h=2.0)))
    assert row["theory_regime"] == _NOTE
    assert math.isnan(row["onset_time_theory"])
    _same_equilibrium(row, equilibrium("mse", "none", 3, 2, 0.02, 0.03))


def test_time_scale_regime_keeps_a_non_ok_base_regime_in_front():
    """eta_W = 0.5, d = 5 < 5K: the base regime "approximate: d < 5K" comes first, then the
    note after "; "."""
    row = theory_columns(_spec(d=5, time_scale=TimeScale(eta_w=0.5)))
    assert row["theory_regime"] == "approximate: d < 5K; " + _NOTE


# ---------------------------------------------------------------------------------------------
# no minimiser


def test_no_minimiser_onset_passes_the_bias_decay():
    """lambda_H = 0, bias reg with lambda_b = 0.01, one layer, Gaussian init: the onset column
    is predicted_onset with that lambda_b (2147.29), not the bias-free value (2130.22)."""
    row = theory_columns(_spec(bias="reg", lb=0.01, d=15, lh=0.0, scale=0.1))
    want = predicted_onset("mse", "reg", 3, 2, 15, 0.02, 0.0, 0.1, 0.01, 0.01, 1).onset_time
    free = predicted_onset("mse", "none", 3, 2, 15, 0.02, 0.0, 0.1, 0.01, 0.0, 1).onset_time
    assert abs(want - free) > 1.0
    assert row["onset_time_theory"] == pytest.approx(want, rel=1e-12)
    assert row["theory_regime"] == ("no_minimiser: a zero weight or feature decay (norms grow "
                                    "without bound); no fn*, no equilibrium")


# ---------------------------------------------------------------------------------------------
# not applicable


@pytest.mark.parametrize(("d", "width", "narrow"), [(4, 2, "the hidden width"), (2, 4, "d"),
                                                    (3, 3, "d")])
def test_not_applicable_names_the_narrower_dimension(d, width, narrow):
    """MSE without bias, K = 4 (minimiser rank 4), depth 2: d = 4 (equal to the rank) with
    width 2 names the hidden width; d below the rank names d (also when the width is equally
    narrow); every column NaN, collapsed None."""
    row = theory_columns(_spec(K=4, d=d, width=width, depth=2))
    assert row["theory_regime"] == f"not_applicable: {narrow} below the rank of the minimiser"
    assert row["collapsed_theory"] is None
    for key in (*EQ_COLUMNS, "onset_time_theory", "lambda_crit_theory",
                "fn_lower_rank_theory"):
        assert math.isnan(row[key]), key


# ---------------------------------------------------------------------------------------------
# deep gaussian, width other than d


@pytest.mark.parametrize(("bias", "lb", "suffix"), [
    ("none", 0.0, ""),
    ("reg", 1.0, "; the equilibrium columns assume that the mean label mode escapes the origin "
                 "(its basin is modelled for the width d only)")])
def test_width_other_than_d_regime_text(bias, lb, suffix):
    """Deep MSE, width 6 != d = 4, Gaussian init: the regime is the width note; the mean-mode
    remark follows only with a regularised bias (MSE without bias also has a mean label mode,
    sigma_mean > 0, but no remark); the equilibrium columns are the closed form's."""
    row = theory_columns(_spec(bias=bias, lb=lb, d=4, width=6, depth=2, lw=0.01, lh=0.01))
    eq = equilibrium("mse", bias, 3, 2, 0.01, 0.01, lb, 2)
    assert float(eq.sigma_mean) > 0
    assert row["theory_regime"] == _WIDTH + suffix
    assert math.isnan(row["onset_time_theory"])
    _same_equilibrium(row, eq)
    assert row["lambda_crit_theory"] == pytest.approx(
        float(lambda_crit("mse", bias, 3, 2, 2, 1.0)), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# onset metric other than nc1_trace


@pytest.mark.parametrize(("kw", "want"), [
    ({"d": 5}, _OTHER),  # "approximate: d < 5K" is about the onset only: replaced
    ({"d": 15}, _OTHER),
    ({"d": 4, "width": 6, "depth": 2, "lw": 0.01, "lh": 0.01}, _OTHER),
    ({"d": 4, "width": 6, "depth": 2, "lw": 0.01, "lh": 0.01, "bias": "reg", "lb": 1.0},
     _WIDTH + "; the equilibrium columns assume that the mean label mode escapes the origin "
              "(its basin is modelled for the width d only); " + _OTHER),
])
def test_other_metric_replaces_onset_only_regimes_and_appends_to_the_rest(kw, want):
    """Onset metric nc1: regimes that only qualify the onset ("ok", "approximate: ...", the
    bare "onset not predicted ...") become "onset predicted for nc1_trace only"; one with a
    further remark after "; " keeps it and gets that text appended. Onset NaN."""
    row = theory_columns(_spec(metric="nc1", **kw))
    assert row["theory_regime"] == want
    assert math.isnan(row["onset_time_theory"])
    assert row["collapsed_theory"] is True


# ---------------------------------------------------------------------------------------------
# deep aligned inits and deep gaussian inits with per-layer decays


@pytest.mark.parametrize("kind", ["spectral", "etf"])
def test_deep_aligned_init_without_a_critical_point_is_vanishing(kind):
    """Depth 2, MSE, lambda = 0.2 (above Lambda_stat = 0.125: no non-zero critical point,
    sigma_local NaN): an aligned init of scale 1 vanishes: onset inf, regime "vanishing" (not
    "trapped", which is for a flow below a basin root), the origin's columns."""
    eq = equilibrium("mse", "none", 3, 2, 0.2, 0.2, 0.0, 2)
    assert math.isnan(float(eq.sigma_local)) and not bool(eq.collapsed)
    row = theory_columns(_spec(d=4, depth=2, lw=0.2, lh=0.2, kind=kind, scale=1.0))
    assert row["theory_regime"] == "vanishing"
    assert row["onset_time_theory"] == math.inf
    assert row["collapsed_theory"] is False and row["fn_star_theory"] == 0.0


def test_per_layer_decays_in_the_metastable_window():
    """Depth 2, decays (0.08, 0.16), lambda_H = 0.12 (geometric mean above Lambda_crit, so the
    origin is global, but a non-zero critical point exists), Gaussian init of scale 1: not
    "vanishing"; onset NaN with the per-layer note and the metastable note."""
    row = theory_columns(_spec(d=4, depth=2, lw=(0.08, 0.16), lh=0.12, scale=1.0))
    assert row["theory_regime"] == (
        "onset not predicted for deep gaussian inits with per-layer weight decays; metastable: "
        "the init is in the basin of a collapsed local minimum; the global minimiser (fn* "
        "column) is the origin")
    assert math.isnan(row["onset_time_theory"])
    assert row["collapsed_theory"] is False and row["fn_star_theory"] == 0.0


@pytest.mark.parametrize(("scale", "onset", "regime"), [
    (0.03, math.inf, "trapped"),
    (0.1, math.nan, "basin_edge: init amplitude a sqrt(d/2) = 0.141, within the band [0.4, 1.3] "
                    "a_u around the basin root a_u of the aligned flow with these decays, "
                    "where runs are trapped or collapse by seed"),
    (0.2, math.nan, "onset not predicted for deep gaussian inits with per-layer weight decays"),
])
def test_per_layer_decays_place_a_sqrt_half_d_against_the_band(scale, onset, regime):
    """Depth 2, d = 4, decays (0.02, 0.04), lambda_H = 0.03 (collapsed minimiser): the init
    amplitude a sqrt(d/2) (not a sqrt(d)) is placed against the band: scale 0.03 below it
    (trapped, onset inf; a sqrt(d) would be within), 0.1 within it (a sqrt(d) above), 0.2 above."""
    row = theory_columns(_spec(d=4, depth=2, lw=(0.02, 0.04), lh=0.03, scale=scale))
    assert row["theory_regime"] == regime
    if math.isnan(onset):
        assert math.isnan(row["onset_time_theory"])
    else:
        assert row["onset_time_theory"] == onset
    assert row["collapsed_theory"] is True


# ---------------------------------------------------------------------------------------------
# mean label mode


def _escape_note(spec: RunSpec) -> str:
    m, r = spec.model, spec.reg
    pred = predicted_onset(m.loss, m.bias, m.classes, 2, m.dim, r.lambda_w, r.lambda_h,
                           spec.init.scale, spec.onset.threshold, r.lambda_b, m.depth)
    return (f"onset not predicted for deep gaussian inits (mode escape time "
            f"{pred.onset_time:.4g} only)")


def test_gaussian_mean_mode_below_the_band_ends_without_the_mean_mode():
    """Deep MSE, bias reg, lambda_b = 0.3 (data weight c0 = 0.3 / 1.3), d = 4, scale 0.05:
    a sqrt(d/2) = 0.0707 lies below the band of the mean mode's root (decays / c0; with
    decays / lambda_b or a sqrt(d) it would be within): the equilibrium columns are those of
    equilibrium(..., mean_mode=False), the regime names both fn values."""
    spec = _spec(bias="reg", lb=0.3, d=4, depth=2, lw=0.01, lh=0.01, scale=0.05)
    row = theory_columns(spec)
    end = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2, mean_mode=False)
    eq = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2)
    assert float(end.fn_star) < float(eq.fn_star)
    _same_equilibrium(row, end)
    assert row["collapsed_theory"] is True and math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == (
        f"mean_mode_trapped: the init amplitude a sqrt(d/2) = 0.07071 lies below the band "
        f"around the basin root of the mean label mode (data weight lambda_b/(1 + lambda_b) = "
        f"0.2308), which returns to 0: the flow ends at fn = {float(end.fn_star):.6g} (the fn* "
        f"column and the other equilibrium columns describe that state), not at the global "
        f"minimiser, fn* = {float(eq.fn_star):.6g}; {_escape_note(spec)}")


def test_gaussian_mean_mode_within_the_band_has_nan_columns():
    """Same point, scale 0.1: a sqrt(d/2) = 0.766 a_u0 of the mean mode's root (within the
    band): fn*, |w|*, the loss NaN, collapsed True, lambda_crit kept; the text gives both fn
    values and the position."""
    spec = _spec(bias="reg", lb=0.3, d=4, depth=2, lw=0.01, lh=0.01, scale=0.1)
    row = theory_columns(spec)
    end = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2, mean_mode=False)
    eq = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2)
    for key in EQ_COLUMNS:
        assert math.isnan(row[key]), key
    assert row["collapsed_theory"] is True
    assert row["lambda_crit_theory"] == pytest.approx(
        float(lambda_crit("mse", "reg", 3, 2, 2, 1.0)), rel=1e-12)
    assert row["theory_regime"] == (
        f"mean_mode_basin_edge: the init amplitude a sqrt(d/2) = 0.766 a_u0, within the band "
        f"around the basin root a_u0 of the mean label mode (data weight lambda_b/(1 + "
        f"lambda_b) = 0.2308): the run ends at fn = {float(end.fn_star):.6g} (mean mode back "
        f"at 0) or at the global minimiser, fn* = {float(eq.fn_star):.6g}, by seed: "
        f"equilibrium columns NaN; {_escape_note(spec)}")


def test_gaussian_mean_mode_above_the_band_keeps_the_minimiser():
    """Same point, scale 0.2 (above the band of the mean mode): the global minimiser's
    columns and the bare escape-time regime."""
    spec = _spec(bias="reg", lb=0.3, d=4, depth=2, lw=0.01, lh=0.01, scale=0.2)
    row = theory_columns(spec)
    _same_equilibrium(row, equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2))
    assert row["theory_regime"] == _escape_note(spec)


@pytest.mark.parametrize("kind", ["etf", "spectral"])
def test_deep_aligned_init_without_the_mean_mode_ends_at_the_mean_free_state(kind):
    """Deep MSE, bias reg (lambda_b = 0.3), d = 4, scale 1: neither an etf nor a spectral
    init (K - 1 centred modes with a bias) seeds the mean mode: onset 0, the three equilibrium
    columns (the loss included) are those of equilibrium(..., mean_mode=False)."""
    row = theory_columns(_spec(bias="reg", lb=0.3, d=4, depth=2, lw=0.01, lh=0.01, kind=kind,
                               scale=1.0))
    end = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2, mean_mode=False)
    eq = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2)
    _same_equilibrium(row, end)
    assert row["onset_time_theory"] == 0.0 and row["collapsed_theory"] is True
    assert row["theory_regime"] == (
        f"mean_mode_unseeded: the {kind} init has no mean label mode, which stays 0 (a strict "
        f"local minimum for depth >= 2): the flow ends at fn = {float(end.fn_star):.6g} (the "
        f"fn* column and the other equilibrium columns describe that state), not at the global "
        f"minimiser, fn* = {float(eq.fn_star):.6g}")


def test_one_layer_etf_init_without_the_mean_mode_has_nan_columns():
    """One layer, MSE without bias (mean mode in the minimiser), etf init: the columns are
    NaN (the end state depends on rounding), onset 0, collapsed True, the text gives both
    fn values; a spectral init (K modes, seeds the mean mode) keeps the minimiser."""
    row = theory_columns(_spec(d=5, kind="etf", scale=1.0))
    end = equilibrium("mse", "none", 3, 2, 0.02, 0.03, mean_mode=False)
    eq = equilibrium("mse", "none", 3, 2, 0.02, 0.03)
    for key in EQ_COLUMNS:
        assert math.isnan(row[key]), key
    assert row["onset_time_theory"] == 0.0 and row["collapsed_theory"] is True
    assert row["theory_regime"] == (
        f"mean_mode_unseeded: the etf init has no mean label mode; one layer: 0 is invariant "
        f"but unstable there, so the run ends at fn = {float(end.fn_star):.6g} (the mean mode "
        f"stays 0) or, once rounding errors seed it, at the global minimiser, fn* = "
        f"{float(eq.fn_star):.6g}; which one depends on the run: equilibrium columns NaN")
    row = theory_columns(_spec(d=5, kind="spectral", scale=1.0))
    _same_equilibrium(row, eq)
    assert row["theory_regime"] == "ok"


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_aligned_init_without_a_mean_mode_in_the_minimiser_is_ok(loss):
    """One layer, bias free (CE and MSE: sigma_mean = 0), etf init: no mean-mode rewrite,
    regime "ok", onset 0, the minimiser's columns."""
    eq = equilibrium(loss, "free", 3, 2, 0.02, 0.03)
    assert float(eq.sigma_mean) == 0.0
    row = theory_columns(_spec(loss=loss, bias="free", d=5, kind="etf", scale=1.0))
    assert row["theory_regime"] == "ok" and row["onset_time_theory"] == 0.0
    _same_equilibrium(row, eq)


def test_deep_trapped_etf_init_keeps_the_minimiser_columns():
    """Deep MSE without bias (mean mode in the minimiser), etf init of scale 0.01 (below the
    basin root): regime "trapped", onset inf; the mean-mode rewrite is for inits that end
    collapsed only, so the columns stay the global minimiser's."""
    row = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.01, kind="etf", scale=0.01))
    eq = equilibrium("mse", "none", 3, 2, 0.01, 0.01, 0.0, 2)
    assert float(eq.sigma_mean) > 0
    assert row["theory_regime"] == "trapped" and row["onset_time_theory"] == math.inf
    _same_equilibrium(row, eq)
    assert row["collapsed_theory"] is True


# ---------------------------------------------------------------------------------------------
# deep CE: lower-rank states

_LR = ("; fn* depends on the init (runs end at the ETF state, a local minimum, or at a "
       "lower-rank one): equilibrium columns NaN; ")


def _lam_ce(K, n, factor=1.02):
    return factor * float(lambda_crit("ce", "none", K, n, 2, 1.0))


def test_lower_rank_keeps_a_trapped_onset():
    """CE, K = 3, n = 2, L = 2 at 1.02 lambda_crit (a rank-1 state beats the origin),
    Gaussian init of scale 0.01 (trapped): the onset stays inf, collapsed True, the
    equilibrium columns and lambda_crit NaN, the regime ends with "; trapped"."""
    from ncsim.theory import lower_rank_check

    lam = _lam_ce(3, 2)
    row = theory_columns(_spec(loss="ce", d=4, depth=2, lw=lam, lh=lam, scale=0.01))
    state = lower_rank_check(3, 2, lam, 2).state(1, lam)
    assert row["onset_time_theory"] == math.inf
    assert row["collapsed_theory"] is True
    for key in (*EQ_COLUMNS, "lambda_crit_theory"):
        assert math.isnan(row[key]), key
    assert row["fn_lower_rank_theory"] == pytest.approx(state.fn, rel=1e-12)
    assert row["theory_regime"] == (
        f"lower_rank: the origin (f = {math.log(3):.6g}; the ETF state is above it) is not "
        f"the minimiser; a rank-1 state has f = {state.objective:.6g}, fn = {state.fn:.6g} "
        f"(numeric, ncsim.theory.lowrank)" + _LR + "trapped")


def test_lower_rank_state_is_searched_up_to_the_hidden_width():
    """CE, K = 4, n = 2, L = 2 at 1.02 lambda_crit (best state rank 2), hidden width 1: the
    witness is the rank-1 state (a rank-2 one does not fit the width), its fn in the column."""
    from ncsim.theory import lower_rank_check

    lam = _lam_ce(4, 2)
    row = theory_columns(_spec(loss="ce", K=4, d=4, width=1, depth=2, lw=lam, lh=lam,
                               scale=1.0))
    lr = lower_rank_check(4, 2, lam, 2)
    assert lr.state(2, lam).rank == 2 and lr.state(1, lam).rank == 1
    assert row["fn_lower_rank_theory"] == pytest.approx(lr.state(1, lam).fn, rel=1e-12)
    assert "a rank-1 state" in row["theory_regime"]
    assert row["theory_regime"].endswith(_LR + _WIDTH)


def test_lower_rank_state_uses_the_last_layer_decay():
    """CE, K = 3, per-layer decays (0.8 Lam, 1.25 Lam), lambda_H = Lam (geometric mean Lam =
    1.02 lambda_crit): fn_lower_rank_theory is the witness in the units of the last layer's
    decay (0.69748), not the first's (0.55799)."""
    from ncsim.theory import lower_rank_check

    lam = _lam_ce(3, 2)
    lw = (0.8 * lam, 1.25 * lam)
    row = theory_columns(_spec(loss="ce", d=4, depth=2, lw=lw, lh=lam, scale=1.0))
    lr = lower_rank_check(3, 2, lam, 2)
    assert row["fn_lower_rank_theory"] == pytest.approx(lr.state(1, lw[1]).fn, rel=1e-12)
    assert row["fn_lower_rank_theory"] == pytest.approx(0.6974839190647921, rel=1e-12)
    assert math.isnan(row["lambda_crit_theory"]) and row["collapsed_theory"] is True


def test_two_class_deep_ce_has_no_lower_rank_search():
    """CE, K = 2 (no rank between 0 and K - 1 = 1), depth 2: the closed form stands; the
    regime is the escape-time note, fn_lower_rank NaN."""
    spec = _spec(loss="ce", K=2, n=3, d=3, depth=2, lw=0.01, lh=0.01)
    row = theory_columns(spec)
    eq = equilibrium("ce", "none", 2, 3, 0.01, 0.01, 0.0, 2)
    _same_equilibrium(row, eq)
    assert math.isnan(row["fn_lower_rank_theory"])
    pred = predicted_onset("ce", "none", 2, 3, 3, 0.01, 0.01, 0.3, 0.01, 0.0, 2)
    assert row["theory_regime"] == (f"onset not predicted for deep gaussian inits (mode escape "
                                    f"time {pred.onset_time:.4g} only)")


# ---------------------------------------------------------------------------------------------
# imbalanced classes and non-linear heads


def _imbalanced(loss="mse", bias="none", d=5, depth=1, lw=0.01, lh=0.04) -> RunSpec:
    return RunSpec(model=ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias,
                                   classes=3, per_class=(2, 3, 5), dim=d, depth=depth),
                   reg=Regularization(lambda_w=lw, lambda_h=lh)).validate()


@pytest.mark.parametrize(("lw", "lh"), [(0.0, 0.04), (0.01, 0.0)])
def test_imbalanced_zero_decay_has_no_minimiser(lw, lh):
    """Imbalanced MSE with lambda_W = 0 or lambda_H = 0: "no_minimiser: a zero weight or
    feature decay", every column NaN, collapsed None."""
    row = theory_columns(_imbalanced(lw=lw, lh=lh))
    assert row["theory_regime"] == "no_minimiser: a zero weight or feature decay"
    assert row["collapsed_theory"] is None
    assert all(math.isnan(row[k]) for k in (*EQ_COLUMNS, "lambda_crit_theory"))


@pytest.mark.parametrize(("bias", "d", "applies"), [("none", 2, False), ("none", 3, True),
                                                    ("free", 2, True)])
def test_imbalanced_rank_check_against_d(bias, d, applies):
    """Imbalanced MSE, K = 3: the minimiser has rank 3 without bias (d = 2 is below it, d = 3
    is enough) and rank 2 with a free bias (d = 2 is enough)."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    row = theory_columns(_imbalanced(bias=bias, d=d))
    if not applies:
        assert row["theory_regime"] == "not_applicable: d below the rank of the minimiser"
        assert row["collapsed_theory"] is None and math.isnan(row["fn_star_theory"])
        return
    eq = imbalanced_equilibrium("mse", bias, (2, 3, 5), 0.01, 0.04)
    assert row["theory_regime"] == f"ok: imbalanced equilibrium ({eq.method}); onset not predicted"
    assert row["fn_star_theory"] == pytest.approx(eq.fn_star, rel=1e-12)


@pytest.mark.parametrize(("loss", "depth"), [("ce", 1), ("mse", 2)])
def test_imbalanced_outside_one_layer_mse_is_not_applicable(loss, depth):
    """Imbalanced CE (one layer) and imbalanced deep MSE: the exact not_applicable text,
    every column NaN, collapsed None."""
    row = theory_columns(_imbalanced(loss=loss, depth=depth))
    assert row["theory_regime"] == "not_applicable: imbalanced classes (one-layer MSE only)"
    assert row["collapsed_theory"] is None
    assert all(math.isnan(row[k]) for k in (*EQ_COLUMNS, "lambda_crit_theory",
                                             "onset_time_theory", "fn_lower_rank_theory"))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_deep_non_linear_head_is_not_applicable(activation):
    """Depth 2 with a non-linear activation: "not_applicable: activation <name>", all NaN."""
    spec = RunSpec(model=ModelSpec(kind="deep", loss="mse", classes=3, per_class=2, dim=4,
                                   depth=2, activation=activation),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01)).validate()
    row = theory_columns(spec)
    assert row["theory_regime"] == f"not_applicable: activation {activation}"
    assert row["collapsed_theory"] is None
    assert all(math.isnan(row[k]) for k in (*EQ_COLUMNS, "lambda_crit_theory",
                                             "onset_time_theory"))


# ---------------------------------------------------------------------------------------------
# numerical trouble and the simulator's run table


def test_decays_far_from_one_keep_their_geometric_mean():
    """Per-layer decays (1e-110, 2e-110), lambda_H = 1e-110: their product underflows, but
    Lambda is taken through logarithms, so lambda_crit_theory equals that of (1e-3, 2e-3),
    1e-3 (the same ratios) to 1e-12 and the row is a collapsed minimiser, not an error."""
    tiny = theory_columns(_spec(d=4, depth=2, lw=(1e-110, 2e-110), lh=1e-110))
    usual = theory_columns(_spec(d=4, depth=2, lw=(1e-3, 2e-3), lh=1e-3))
    assert not tiny["theory_regime"].startswith("error")
    assert tiny["collapsed_theory"] is True
    assert tiny["lambda_crit_theory"] == pytest.approx(usual["lambda_crit_theory"], rel=1e-12)
    assert math.isfinite(tiny["fn_star_theory"]) and tiny["fn_star_theory"] > 0


def test_arithmetic_trouble_is_reported_not_raised():
    """Deep CE with every decay 1e300: the lower-rank search overflows (no finite objective);
    theory_columns returns a full row with regime "error: ..." naming it, it does not raise."""
    from ncsim.theory.columns import COLUMNS

    row = theory_columns(_spec(loss="ce", d=4, depth=2, lw=(1e300, 1e300), lh=1e300))
    assert set(row) == set(COLUMNS)
    assert row["theory_regime"] == ("error: the lower-rank search found no finite objective "
                                    "at Lam = 1e+300 (its objective overflows there)")
    assert row["collapsed_theory"] is None


def test_lower_rank_search_that_overflows_raises_arithmetic_error():
    """lower_rank_check(K = 3, n = 2, Lam = 1e300, depth 2): every start overflows; an
    ArithmeticError, not a StopIteration out of the rank choice."""
    from ncsim.theory.lowrank import lower_rank_check

    with pytest.raises(ArithmeticError, match="no finite objective at Lam = 1e"):
        lower_rank_check(3, 2, 1e300, 2)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_simulated_run_table_carries_the_theory_columns_of_each_run():
    """simulate() on three runs of one batch (a one-layer MSE point, the same with lambda_H = 0,
    and with eta_H = 2): each row's theory columns are theory_columns of its own spec (NaN
    where NaN, the regime text verbatim)."""
    from ncsim import simulate
    from ncsim.spec import SolverSpec
    from ncsim.theory.columns import COLUMNS

    base = _spec(d=15, scale=0.1)
    specs = [base, _spec(d=15, lh=0.0, scale=0.1),
             _spec(d=15, scale=0.1, time_scale=TimeScale(eta_h=2.0))]
    specs = [dataclasses.replace(s, solver=SolverSpec(method="rk4", dt=0.5, t_end=2.0))
             for s in specs]
    runs = simulate(specs).runs
    assert len(runs) == 3
    regimes = []
    for i, spec in enumerate(specs):
        want = theory_columns(spec)
        got = runs.iloc[i]
        for key in COLUMNS:
            assert _same(float(got[key]) if isinstance(want[key], float) else got[key],
                         want[key]), (i, key)
        regimes.append(got["theory_regime"])
    assert regimes[0] == "ok" and regimes[1].startswith("no_minimiser") and regimes[2] == _NOTE


@pytest.mark.parametrize("case", ["imbalanced", "one_layer", "deep_ce"])
def test_number_columns_are_plain_floats(case):
    """Every number column is a plain float (not numpy's float64), the imbalanced path's
    lambda_crit_theory included; collapsed_theory a bool and the regime a str."""
    spec = {"imbalanced": lambda: _imbalanced(bias="free", d=3), "one_layer": _spec,
            "deep_ce": lambda: _spec(loss="ce", depth=2, d=4)}[case]()
    row = theory_columns(spec)
    for key, value in row.items():
        want = {"collapsed_theory": bool, "theory_regime": str}.get(key, float)
        assert type(value) is want, (key, type(value))
