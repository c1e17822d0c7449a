"""Third probe of :func:`ncsim.theory.columns.theory_columns`: column names and order, the
no-minimiser onset (which inits and metrics get one), the rank check at d equal to the rank,
the fate of trapped deep inits with a regularised bias, the width note of per-layer decays,
the lower-rank search bounded by d, a "vanishing" onset under a lower-rank state, decays
whose product is subnormal, the aligned basin root itself, time-scale factors per layer, and
the one-layer threshold against its closed form (theory.md 1.2)."""

from __future__ import annotations

import math

import pytest
from columns_helpers import EQ_COLUMNS
from columns_helpers import TIME_SCALE_NOTE as _NOTE
from columns_helpers import WIDTH_NOTE as _WIDTH
from columns_helpers import column_spec as _spec
from columns_helpers import same_equilibrium as _same_equilibrium

from ncsim.spec import TimeScale
from ncsim.theory import equilibrium, lambda_crit, theory_columns
from ncsim.theory.columns import COLUMNS
from ncsim.theory.critical import basin_threshold
from ncsim.theory.prediction import predicted_onset

_NO_MIN = ("no_minimiser: a zero weight or feature decay (norms grow without bound); no fn*, "
           "no equilibrium")


# ---------------------------------------------------------------------------------------------
# column names and order


@pytest.mark.parametrize("kw", [{}, {"K": 4, "d": 3, "width": 2, "depth": 2}, {"lh": 0.0}])
def test_column_names_and_order(kw):
    """COLUMNS is the eight names in this order, and every row (ok, not_applicable,
    no_minimiser) has exactly these keys in this order (the run table's column order)."""
    assert COLUMNS == ("fn_star_theory", "onset_time_theory", "collapsed_theory",
                       "lambda_crit_theory", "w_norm_star_theory", "loss_star_theory",
                       "fn_lower_rank_theory", "theory_regime")
    assert list(theory_columns(_spec(**kw))) == list(COLUMNS)


# ---------------------------------------------------------------------------------------------
# no minimiser: which runs get the early-phase onset


@pytest.mark.parametrize("kind", ["spectral", "etf"])
def test_no_minimiser_aligned_init_has_no_onset(kind):
    """One layer, lambda_H = 0, a spectral / etf init: the early-phase onset (for Gaussian
    inits) is not given: onset NaN, the no_minimiser text, collapsed None."""
    row = theory_columns(_spec(d=15, lh=0.0, kind=kind, scale=0.1))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == _NO_MIN and row["collapsed_theory"] is None


def test_no_minimiser_other_metric_has_no_onset():
    """One layer, lambda_H = 0, Gaussian init, onset metric nc1: onset NaN (the early-phase
    onset is for nc1_trace); the regime is the no_minimiser text alone."""
    row = theory_columns(_spec(d=15, lh=0.0, scale=0.1, metric="nc1"))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == _NO_MIN


def test_no_minimiser_onset_uses_the_init_scale():
    """One layer, lambda_H = 0, Gaussian init of scale 0.3: the onset is predicted_onset at
    scale 0.3 (about 1.65e5), not at another scale (0.1 gives about 2130)."""
    row = theory_columns(_spec(d=15, lh=0.0, scale=0.3))
    want = predicted_onset("mse", "none", 3, 2, 15, 0.02, 0.0, 0.3, 0.01, 0.0, 1).onset_time
    other = predicted_onset("mse", "none", 3, 2, 15, 0.02, 0.0, 0.1, 0.01, 0.0, 1).onset_time
    assert want > 10 * other
    assert row["onset_time_theory"] == pytest.approx(want, rel=1e-12)


def test_no_minimiser_onset_late_in_flow_time_scales_as_the_fourth_power_of_the_init():
    """One layer MSE, lambda_H = 0, Gaussian init of scale 1 (onset ~2e7, where the
    crossing's refinement restarts the stiff mode ODE far out in time): the columns come
    back, and the onset is ~16x that of scale 0.5 (the class means grow as h^4 ~ t, and the
    h^2 that brings nc1_trace to the threshold grows as the init's energy, scale^2). The
    refinement's solver once stalled on this point (LSODA restarted at t ~ 2e7)."""
    row = theory_columns(_spec(d=15, lh=0.0, scale=1.0))
    assert row["theory_regime"] == _NO_MIN
    half = predicted_onset("mse", "none", 3, 2, 15, 0.02, 0.0, 0.5, 0.01, 0.0, 1).onset_time
    assert math.isfinite(half) and half > 1e4
    assert row["onset_time_theory"] == pytest.approx(16 * half, rel=0.02)


# ---------------------------------------------------------------------------------------------
# rank of the minimiser against d and the hidden width


@pytest.mark.parametrize(("depth", "d", "width"), [(1, 3, None), (2, 4, 3), (2, 3, 5)])
def test_width_equal_to_the_rank_is_enough(depth, d, width):
    """MSE without bias, K = 3 (minimiser rank 3): d or the hidden width equal to the rank
    (not above it) is enough: the closed form's columns, not "not_applicable"."""
    row = theory_columns(_spec(d=d, width=width, depth=depth, lw=0.01, lh=0.01))
    assert not row["theory_regime"].startswith("not_applicable")
    _same_equilibrium(row, equilibrium("mse", "none", 3, 2, 0.01, 0.01, 0.0, depth))
    assert row["collapsed_theory"] is True


def test_not_applicable_names_d_when_both_are_below_and_the_width_is_narrower():
    """K = 4 (rank 4), d = 3, hidden width 2: d is below the rank, so the text names d
    (the dimension below the rank), even though the width is narrower still."""
    row = theory_columns(_spec(K=4, d=3, width=2, depth=2))
    assert row["theory_regime"] == "not_applicable: d below the rank of the minimiser"


# ---------------------------------------------------------------------------------------------
# trapped deep inits with a regularised bias: no mean-mode rewrite


def test_trapped_deep_gaussian_with_regularised_bias_keeps_the_minimiser():
    """Deep MSE, bias reg (lambda_b = 0.3), equal decays 0.01, Gaussian init of scale 1e-3
    (below the centred modes' basin root): regime "trapped", onset inf, the global
    minimiser's columns (the mean-mode rewrite is for runs whose centred modes collapse)."""
    row = theory_columns(_spec(bias="reg", lb=0.3, d=4, depth=2, lw=0.01, lh=0.01,
                               scale=1e-3))
    assert row["theory_regime"] == "trapped" and row["onset_time_theory"] == math.inf
    _same_equilibrium(row, equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.3, 2))


def test_trapped_per_layer_decays_with_regularised_bias_keeps_the_minimiser():
    """As above with per-layer decays (0.005, 0.01), lambda_H = 0.01 (the minimiser has a mean
    label mode, sigma_mean > 0), scale 0.003 (below the band of the aligned flow): "trapped",
    onset inf, the global minimiser's columns."""
    eq = equilibrium("mse", "reg", 3, 2, (0.005, 0.01), 0.01, 0.3, 2)
    assert float(eq.sigma_mean) > 0
    row = theory_columns(_spec(bias="reg", lb=0.3, d=4, depth=2, lw=(0.005, 0.01), lh=0.01,
                               scale=0.003))
    assert row["theory_regime"] == "trapped" and row["onset_time_theory"] == math.inf
    _same_equilibrium(row, eq)


def test_width_note_without_a_mean_mode_has_no_remark():
    """Deep MSE, bias reg with lambda_b = 1e-4 (below its threshold: sigma_mean = 0), width
    6 != d = 4: the plain width note, without the mean-mode remark."""
    eq = equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 1e-4, 2)
    assert float(eq.sigma_mean) == 0.0
    row = theory_columns(_spec(bias="reg", lb=1e-4, d=4, width=6, depth=2, lw=0.01, lh=0.01))
    assert row["theory_regime"] == _WIDTH
    _same_equilibrium(row, eq)


# ---------------------------------------------------------------------------------------------
# deep CE: lower-rank states


def test_lower_rank_search_is_bounded_by_d():
    """CE, K = 4, n = 2, L = 2 at 1.02 lambda_crit (origin global, best state rank 2),
    d = 1 with hidden width 4: the witness is the rank-1 state (rank 2 does not fit d)."""
    from ncsim.theory import lower_rank_check

    lam = 1.02 * float(lambda_crit("ce", "none", 4, 2, 2, 1.0))
    row = theory_columns(_spec(loss="ce", K=4, d=1, width=4, depth=2, lw=lam, lh=lam,
                               scale=1.0))
    lr = lower_rank_check(4, 2, lam, 2)
    assert lr.state(2, lam).rank == 2
    assert row["fn_lower_rank_theory"] == pytest.approx(lr.state(1, lam).fn, rel=1e-12)
    assert "a rank-1 state" in row["theory_regime"]


def test_lower_rank_turns_a_vanishing_onset_into_nan():
    """CE, K = 10, n = 2, L = 3, decays just above the ETF ray's Lambda_stat (no non-zero
    critical point there: "vanishing") where a rank-4 state beats the origin: the onset
    (derived on the ETF ray) is NaN, not inf; the regime ends with "; vanishing"."""
    lam = 1.4655 * float(lambda_crit("ce", "none", 10, 2, 3, 1.0))
    assert math.isnan(float(equilibrium("ce", "none", 10, 2, lam, lam, 0.0, 3).sigma_local))
    row = theory_columns(_spec(loss="ce", K=10, d=11, depth=3, lw=lam, lh=lam, scale=1.0))
    assert row["theory_regime"].startswith("lower_rank: the origin")
    assert row["theory_regime"].endswith("equilibrium columns NaN; vanishing")
    assert math.isnan(row["onset_time_theory"])
    assert row["collapsed_theory"] is True


# ---------------------------------------------------------------------------------------------
# decays, thresholds and the aligned basin root


def test_decays_with_a_subnormal_product_keep_their_geometric_mean():
    """Per-layer decays (1e-107, 2e-107), lambda_H = 1e-107: their product, 2e-321, is
    subnormal (few significant bits), so Lambda goes through logarithms: lambda_crit_theory
    equals that of (1e-3, 2e-3), 1e-3 to 1e-12."""
    tiny = theory_columns(_spec(d=4, depth=2, lw=(1e-107, 2e-107), lh=1e-107))
    usual = theory_columns(_spec(d=4, depth=2, lw=(1e-3, 2e-3), lh=1e-3))
    assert tiny["lambda_crit_theory"] == pytest.approx(usual["lambda_crit_theory"], rel=1e-12)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_init_exactly_at_the_basin_root_is_trapped(loss):
    """Deep (L = 2), equal decays 0.01, etf init of scale exactly a_u (basin_threshold):
    "trapped", onset inf (collapse needs scale > a_u); the next float above collapses
    (onset 0)."""
    a_u = float(basin_threshold(loss, 3, 2, 0.01, 2))
    at = theory_columns(_spec(loss=loss, d=4, depth=2, lw=0.01, lh=0.01, kind="etf",
                              scale=a_u))
    assert at["theory_regime"] == "trapped" and at["onset_time_theory"] == math.inf
    above = theory_columns(_spec(loss=loss, d=4, depth=2, lw=0.01, lh=0.01, kind="etf",
                                 scale=math.nextafter(a_u, 1.0)))
    assert above["onset_time_theory"] == 0.0


@pytest.mark.parametrize("ratio", [0.5, 1.5])
@pytest.mark.parametrize("bias", ["none", "free", "reg"])
def test_one_layer_mse_threshold_is_the_closed_form(bias, ratio):
    """One-layer MSE: lambda_crit_theory is 1 / (K sqrt(n ratio)) (zero unstable iff
    K sqrt(n lambda_W lambda_H) < 1, theory.md 1.2) for every bias option; collapsed_theory
    holds just below it and not just above."""
    K, n = 3, 2
    want = 1.0 / (K * math.sqrt(n * ratio))
    for factor, collapsed in ((0.95, True), (1.05, False)):
        lw = factor * want
        row = theory_columns(_spec(bias=bias, lb=0.1 if bias == "reg" else 0.0, lw=lw,
                                   lh=ratio * lw))
        assert row["lambda_crit_theory"] == pytest.approx(want, rel=1e-12)
        assert row["collapsed_theory"] is collapsed


# ---------------------------------------------------------------------------------------------
# time-scale factors


def test_unit_per_layer_time_scales_are_unit():
    """Depth 2 with eta_w = (1.0, 1.0) listed per layer: unit time scales, so the row is the
    one without time-scale factors (regime and onset), not the equilibrium-only note."""
    plain = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.01, kind="etf", scale=1.0))
    listed = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.01, kind="etf", scale=1.0,
                                  time_scale=TimeScale(eta_w=(1.0, 1.0))))
    assert plain["theory_regime"].startswith("mean_mode_unseeded: the etf init")
    assert listed["theory_regime"] == plain["theory_regime"]
    assert listed["onset_time_theory"] == plain["onset_time_theory"] == 0.0


def test_non_unit_second_layer_time_scale_gives_the_note():
    """Depth 2, eta_w = (1.0, 2.0) (only the second layer scaled): the onset is NaN and the
    note follows the base regime; the equilibrium columns are unchanged."""
    base = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.01, kind="etf", scale=1.0))
    row = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.01, kind="etf", scale=1.0,
                               time_scale=TimeScale(eta_w=(1.0, 2.0))))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == f"{base['theory_regime']}; {_NOTE}"
    for key in EQ_COLUMNS:
        assert row[key] == base[key], key


def test_time_scale_on_a_no_minimiser_row_drops_its_onset():
    """One layer, lambda_H = 0, Gaussian init, eta_H = 2: the early-phase onset (for unit
    time scales) is dropped to NaN and the note follows the no_minimiser text."""
    row = theory_columns(_spec(d=15, lh=0.0, scale=0.1, time_scale=TimeScale(eta_h=2.0)))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == f"{_NO_MIN}; {_NOTE}"
