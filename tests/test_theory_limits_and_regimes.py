"""Theory at its limits and in its regimes: deep metastable Gaussian inits, the
regularised-bias mean mode in the fn model, zero decays in the equilibrium, the lambda_H = 0
search horizon, the strict collapse threshold, input checks of the dynamics / onset
functions, and what the deep-CE threshold compares (two slow tests state the facts the
wording rests on)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import ncsim.theory
from ncsim.errors import InputError
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
)
from ncsim.theory import (
    Lambda_crit,
    basin_threshold,
    critical,
    deep_thresholds,
    equilibrium,
    escape_time,
    escape_time_asymptotic,
    growth_rate,
    lambda_crit,
    logistic,
    modes,
    nc1_rates,
    predicted_onset,
    prediction,
    theory_columns,
)
from ncsim.theory._backend import namespace
from ncsim.theory.cli import theory
from ncsim.theory.phase import classify


def _spec(loss="mse", bias="none", K=4, n=5, d=20, depth=1, lw=0.02, lh=0.02, lb=0.0,
          scale=1e-3, t_end=400.0, records=400) -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind="gaussian", scale=scale, seed=1),
                   solver=SolverSpec(t_end=t_end, rtol=1e-9, atol=1e-12, gtol=0,
                                     records=records),
                   onset=OnsetSpec(metric="nc1_trace")).validate()


# ---------------------------------------------------------------------------------------------
# 1. deep linear head, Gaussian init, metastable window

K1, N1, D1, L1 = 4, 5, 20, 2
PHASE_OF_REGIME = {"escape_time_only": "collapse", "escape_time_only: metastable": "collapse",
                   "trapped": "trapped", "vanishing": "vanishing"}


def test_deep_gaussian_in_the_metastable_window_is_not_vanishing():
    """Lambda_glob < lambda = 0.063 < Lambda_stat, init amplitude a sqrt(d/2) = 0.949 above the
    basin root a_u = 0.637: the flow goes to the collapsed local minimum (simulated onset 30.0,
    see the slow test). predicted_onset said 'vanishing' / inf; now the escape-time regime,
    marked metastable, as phase.classify ('collapse')."""
    lam, a = 0.063, 0.3
    th = deep_thresholds(K1, N1, lam, L1)
    assert float(th.Lambda_glob) < lam < float(th.Lambda_stat)
    assert a * math.sqrt(D1 / 2) > float(basin_threshold("mse", K1, N1, lam, L1))
    eq = equilibrium("mse", "none", K1, N1, lam, lam, 0.0, L1)
    assert not bool(eq.collapsed) and math.isfinite(float(eq.sigma_local))
    p = predicted_onset("mse", "none", K1, N1, D1, lam, lam, a, depth=L1)
    assert p.regime == "escape_time_only: metastable"
    assert math.isfinite(p.onset_time) and p.onset_time >= 0
    assert classify("mse", "none", K1, N1, D1, L1, lam, lam, 0.0, a)["phase"] == "collapse"


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_deep_gaussian_regime_agrees_with_phase_classify(loss):
    """Over a grid of decays (through the metastable window) and init scales, the regime of
    predicted_onset names the same phase as phase.classify: escape time <-> collapse, trapped,
    vanishing, and basin_edge within the band around the basin root, where Gaussian runs go
    either way. The metastable window is hit (it was reported as
    vanishing)."""
    lc = float(Lambda_crit(loss, K1, N1, L1))
    metastable = near = 0
    for fac in (0.5, 0.9, 1.03, 1.08, 1.15, 1.3, 2.0):
        lam = fac * lc
        for a in (0.02, 0.1, 0.3, 1.0):
            p = predicted_onset(loss, "none", K1, N1, D1, lam, lam, a, depth=L1)
            phase = classify(loss, "none", K1, N1, D1, L1, lam, lam, 0.0, a)["phase"]
            if p.regime.startswith(prediction.NEAR_BASIN):
                # within the band around a_u (seed-dependent outcome), in both
                assert phase == "basin_edge" and math.isnan(p.onset_time)
                near += 1
                continue
            assert PHASE_OF_REGIME[p.regime] == phase, (fac, a, p)
            assert math.isfinite(p.onset_time) == (phase == "collapse")
            metastable += p.regime == "escape_time_only: metastable"
    assert metastable > 0 and near > 0


def test_theory_columns_deep_gaussian_metastable():
    """The run table says the onset is not predicted (deep Gaussian) and that the state is
    metastable; it said 'vanishing' with onset inf."""
    row = theory_columns(_spec(K=K1, n=N1, d=D1, depth=L1, lw=0.063, lh=0.063, scale=0.3))
    assert row["collapsed_theory"] is False
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"].startswith("onset not predicted for deep gaussian inits")
    assert "metastable" in row["theory_regime"]


@pytest.mark.slow
def test_deep_gaussian_metastable_run_collapses_to_the_local_minimum():
    """The simulated flow (repro 1: onset 29.98) ends at the metastable state: fn =
    sigma_local^(2/3) / sqrt(n) (equal decays, MSE without bias) within 1e-4."""
    from ncsim.flow import simulate

    lam = 0.063
    res = simulate(_spec(K=K1, n=N1, d=D1, depth=L1, lw=lam, lh=lam, scale=0.3, t_end=3000.0,
                         records=100))
    run = res.runs.iloc[0]
    assert run["status"] == "ok" and math.isfinite(run["onset_time"])
    sig = float(equilibrium("mse", "none", K1, N1, lam, lam, 0.0, L1).sigma_local)
    fn_end = float(res.trajectories["fn"].iloc[-1])
    assert fn_end == pytest.approx(sig ** (2 / 3) / math.sqrt(N1), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# 2. MSE with a regularised bias: the mean mode in the fn model


@pytest.mark.parametrize("lb", [0.1, 0.3, 1.0, 5.0])
def test_reg_bias_fn_model_starts_at_a_sqrt_d_and_ends_at_fn_star(lb):
    """The model's fn(t) starts at a sqrt(d) and tends to fn* of the equilibrium, mean mode
    included (alive for lambda_b above lambda_b_crit = 0.218 here, dead at 0.1). The old model
    let the mean part decay to 0, so fn never reached fn*."""
    K, n, d, lam, a = 4, 5, 20, 0.02, 1e-3
    grid = np.concatenate([[0.0], np.geomspace(1e-3, 5e3, 400)])
    curves = prediction._curves("mse", "reg", K, n, d, lam, lam, a, grid, lb)
    fn = curves.fn(grid, curves.states)
    assert fn[0] == pytest.approx(a * math.sqrt(d), rel=1e-12)
    eq = equilibrium("mse", "reg", K, n, lam, lam, lb)
    assert fn[-1] == pytest.approx(float(eq.fn_star), rel=1e-6)


def test_reg_bias_lead_time_is_predicted():
    """Repro 2 (K=4, n=5, d=20, lambda=0.02, lambda_b=1, init 1e-3): the crossing time was inf
    and the lead NaN with regime 'ok'; simulated crossing 167.9, lead -137.1."""
    p = predicted_onset("mse", "reg", 4, 5, 20, 0.02, 0.02, 1e-3, 0.01, 1.0)
    assert p.regime == "ok"
    assert p.fn_cross_time == pytest.approx(167.9, rel=0.03)
    assert p.lead_time == pytest.approx(-137.1, abs=0.05 * 167.9)


def test_reg_bias_large_lambda_b_approaches_mse_without_bias():
    """lambda_b -> inf: the bias is pinned to 0, the mean mode is the K-th label mode of MSE
    without bias (up to lambda_b/(1+lambda_b) and r_w): crossing times agree within 1%."""
    none = predicted_onset("mse", "none", 4, 5, 20, 0.02, 0.02, 1e-3)
    reg = predicted_onset("mse", "reg", 4, 5, 20, 0.02, 0.02, 1e-3, 0.01, 1e6)
    assert reg.fn_cross_time == pytest.approx(none.fn_cross_time, rel=0.01)
    assert reg.onset_time == pytest.approx(none.onset_time, rel=0.01)


@pytest.mark.slow
def test_reg_bias_lead_time_matches_the_simulator():
    """Simulated fn crossing of (1 + delta) fn* and lead time against the prediction: crossing
    within 3%, lead within 5% of max(onset, crossing) (the README criterion)."""
    from ncsim.flow import simulate
    from ncsim.onset import crossing_time

    spec = _spec(bias="reg", lw=0.02, lh=0.02, lb=1.0, t_end=400.0, records=400)
    res = simulate(spec)
    run, tr = res.runs.iloc[0], res.trajectories
    p = predicted_onset("mse", "reg", 4, 5, 20, 0.02, 0.02, 1e-3, 0.01, 1.0)
    level = (1 + p.delta) * float(run["fn_star_theory"])
    sim_cross = crossing_time(tr["time"].to_numpy(), tr["fn"].to_numpy(), level)
    assert p.fn_cross_time == pytest.approx(sim_cross, rel=0.03)
    sim_lead = float(run["onset_time"]) - sim_cross
    assert abs(p.lead_time - sim_lead) <= 0.05 * max(float(run["onset_time"]), sim_cross)


# ---------------------------------------------------------------------------------------------
# 3. zero decays: fn* is the limit along minimising sequences


@pytest.mark.parametrize("loss,bias,lb", [("mse", "none", 0.0), ("mse", "free", 0.0),
                                          ("mse", "reg", 1.0), ("ce", "none", 0.0),
                                          ("ce", "free", 0.0)])
def test_zero_decay_gives_the_limits(loss, bias, lb):
    """lambda_W = 0: H -> 0 and W without bound (fn* = 0, |w| = inf); lambda_H = 0: W -> 0 and
    H without bound (fn* = inf, |w| = 0); both 0: undefined (NaN). MSE said fn* = 1.0. The
    closed forms approach the same limits as the decay goes to 0."""
    K, n = 4, 5
    no_w = equilibrium(loss, bias, K, n, 0.0, 0.01, lb)
    assert float(no_w.fn_star) == 0.0 and float(no_w.class_mean_norm_centred) == 0.0
    assert float(no_w.factor_norms["H"]) == 0.0
    assert float(no_w.factor_norms["W1"]) == math.inf and float(no_w.w_norm_star) == math.inf
    no_h = equilibrium(loss, bias, K, n, 0.01, 0.0, lb)
    assert float(no_h.fn_star) == math.inf and float(no_h.factor_norms["H"]) == math.inf
    assert float(no_h.factor_norms["W1"]) == 0.0 and float(no_h.w_norm_star) == 0.0
    both = equilibrium(loss, bias, K, n, 0.0, 0.0, lb)
    assert math.isnan(float(both.fn_star)) and math.isnan(float(both.factor_norms["H"]))
    small = [float(equilibrium(loss, bias, K, n, x, 0.01, lb).fn_star) for x in (1e-6, 1e-12)]
    large = [float(equilibrium(loss, bias, K, n, 0.01, x, lb).fn_star) for x in (1e-6, 1e-12)]
    assert small[0] > small[1] and small[1] < 1e-2
    assert large[0] < large[1] and large[1] > 1e2


@pytest.mark.parametrize("lambda_w,lambda_h,fn,norms", [
    ((0.01, 0.0), 0.01, 0.0, {"H": 0.0, "W1": 0.0, "W2": math.inf}),     # classifier only
    ((0.0, 0.01), 0.01, math.inf, {"H": 0.0, "W1": math.inf, "W2": 0.0}),
    ((0.01, 0.01), 0.0, math.inf, {"H": math.inf, "W1": 0.0, "W2": 0.0}),
    ((0.0, 0.0), 0.01, math.nan, {"H": 0.0, "W1": math.nan, "W2": math.nan}),
])
def test_zero_decay_deep_per_layer(lambda_w, lambda_h, fn, norms):
    """Deep (L = 2): the features fn* go to 0 when the classifier decay is the only zero one,
    to inf when W_L keeps a decay, NaN when the classifier and another decay are 0."""
    eq = equilibrium("mse", "none", 4, 5, lambda_w, lambda_h, 0.0, 2)
    np.testing.assert_equal(float(eq.fn_star), fn)
    for name, want in norms.items():
        np.testing.assert_equal(float(eq.factor_norms[name]), want)


def test_zero_decay_cli_and_torch():
    """The command line prints the limit (it printed fn_star 1.0), and torch inputs give the
    same values as numpy."""
    import torch

    res = CliRunner().invoke(theory, ["equilibrium", "--loss", "mse", "-K", "4", "-n", "5",
                                      "-d", "20", "--lambda-w", "0", "--lambda-h", "0.01",
                                      "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)["results"][0]
    assert row["fn_star"] == 0.0 and row["norm_H"] == 0.0 and row["w_norm_star"] == "inf"
    lw, lh = [0.0, 0.01, 0.0, 0.01], [0.01, 0.0, 0.0, 0.01]
    a = equilibrium("ce", "none", 4, 5, np.array(lw), np.array(lh))
    b = equilibrium("ce", "none", 4, 5, torch.tensor(lw, dtype=torch.float64),
                    torch.tensor(lh, dtype=torch.float64))
    np.testing.assert_allclose(b.fn_star.numpy(), a.fn_star, rtol=1e-14)
    np.testing.assert_allclose(b.w_norm_star.numpy(), a.w_norm_star, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# 4. lambda_H = 0: the default search horizon


@pytest.mark.parametrize("loss,a", [("mse", 0.1), ("mse", 0.3), ("ce", 0.3)])
def test_lambda_h_zero_default_horizon_finds_the_onset(loss, a):
    """With lambda_H = 0 NC1 falls only polynomially; the old horizon (1e3 here) reported
    'never'. The default now gives the onset of a long horizon (repro 5: 4206 for MSE, init
    0.1; simulated 2982, see the README)."""
    args = (loss, "none", 3, 2, 15, 0.01, 0.0, a)
    p = predicted_onset(*args)
    ref = predicted_onset(*args, t_max=1e11)
    assert p.regime == "no_minimiser"
    assert 1e3 < p.onset_time < math.inf
    assert p.onset_time == pytest.approx(ref.onset_time, rel=1e-6)


def test_lambda_h_zero_run_table_onset_is_finite():
    row = theory_columns(_spec(K=3, n=2, d=15, lw=0.01, lh=0.0, scale=0.1))
    assert row["theory_regime"].startswith("no_minimiser")
    assert row["onset_time_theory"] == pytest.approx(4205.85, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# 5. the collapse threshold is strict


@pytest.mark.parametrize("bias,lb", [("none", 0.0), ("free", 0.0), ("reg", 1.0)])
def test_exact_critical_decay_is_not_collapsed(bias, lb):
    """At lambda_W = lambda_H = lambda_crit (K sqrt(n lambda_W lambda_H) = 1) no (K, n) of
    2..20 x 1..50 is collapsed, for MSE and CE alike (315 of 950 MSE points were, with sigma ~
    1e-16); 1e-12 below it every point is."""
    K, n = (v.ravel() * 1.0 for v in np.meshgrid(np.arange(2, 21), np.arange(1, 51)))
    lc = lambda_crit("mse", bias, K, n)
    np.testing.assert_array_equal(lc, lambda_crit("ce", bias, K, n))
    for loss in ("mse", "ce"):
        if loss == "ce" and bias == "reg":
            continue
        at = equilibrium(loss, bias, K, n, lc, lc, lb)
        assert not np.any(at.collapsed)
        assert np.all(at.sigma == 0) and np.all(at.class_mean_norm_centred == 0)
        below = equilibrium(loss, bias, K, n, lc * (1 - 1e-12), lc * (1 - 1e-12), lb)
        assert np.all(below.collapsed)
    assert np.all(np.isnan(basin_threshold("mse", K, n, lc, 1)))


def test_mse_mode_threshold_with_data_weight():
    """The mean mode of a regularised bias (data weight c) dies at exactly Lambda = c/(K sqrt n)
    (836 of these 2850 points were collapsed) and lives 1e-12 below it."""
    K, n, c = (v.ravel() * 1.0 for v in np.meshgrid(np.arange(2, 21), np.arange(1, 51),
                                                    [0.2, 0.5, 0.9]))
    lam = c / (K * np.sqrt(n))
    at = modes.mse_mode(K, n, lam, 2, c)
    assert not np.any(at.collapsed) and np.all(at.sigma == 0) and np.all(np.isnan(at.sigma_local))
    assert np.all(modes.mse_mode(K, n, lam * (1 - 1e-12), 2, c).collapsed)


@pytest.mark.parametrize("M", [2, 3, 4, 5])
def test_geometric_mean_is_exact_for_equal_decays(M):
    """Lambda of equal decays is the decay itself, to the bit (sqrt(x) * sqrt(x) is not), and
    the usual geometric mean otherwise."""
    from ncsim.theory.equilibrium import geometric_mean

    xp = namespace(np.zeros(1))
    x = np.random.default_rng(M).uniform(1e-5, 1.0, 2000)
    np.testing.assert_array_equal(geometric_mean(xp, [x] * M), x)
    lams = [x * (j + 1) for j in range(M)]
    want = np.prod(np.stack(lams), axis=0) ** (1.0 / M)
    np.testing.assert_allclose(geometric_mean(xp, lams), want, rtol=1e-14)
    assert float(geometric_mean(xp, [np.array(0.0)] + [np.array(0.3)] * (M - 1))) == 0.0


# ---------------------------------------------------------------------------------------------
# 6. input checks


BAD_INPUTS = {
    "onset d=0": (lambda: predicted_onset("mse", "none", 3, 2, 0, 0.01, 0.01, 0.1),
                  "dimension d"),
    "onset d=-3": (lambda: predicted_onset("mse", "none", 3, 2, -3, 0.01, 0.01, 0.1),
                   "dimension d"),
    "onset d=2.5": (lambda: predicted_onset("mse", "none", 3, 2, 2.5, 0.01, 0.01, 0.1),
                    "dimension d"),
    "onset delta=-2": (lambda: predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.01, 0.1,
                                               delta=-2.0), "delta"),
    "onset delta=nan": (lambda: predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.01, 0.1,
                                                delta=math.nan), "delta"),
    "onset t_max=0": (lambda: predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.01, 0.1,
                                              t_max=0.0), "t_max"),
    "onset t_max=inf": (lambda: predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.01, 0.1,
                                                t_max=math.inf), "t_max"),
    "growth K=1": (lambda: growth_rate(1, 5, 0.01, 0.01), "classes K"),
    "growth n=0.5": (lambda: growth_rate(3, 0.5, 0.01, 0.01), "samples per class n"),
    "growth lambda_w<0": (lambda: growth_rate(3, 5, -0.5, 0.01), "lambda_w"),
    "growth lambda_h=nan": (lambda: growth_rate(3, 5, 0.01, math.nan), "lambda_h"),
    "growth depth=0": (lambda: growth_rate(3, 5, 0.01, 0.02, depth=0), "depth"),
    "growth lambda_w text": (lambda: growth_rate(3, 5, "x", 0.02), "lambda_w"),
    "nc1_rates K=0": (lambda: nc1_rates(0, 5, 0.01, 0.01), "classes K"),
    "asymptotic a0<0": (lambda: escape_time_asymptotic(3, 2, -0.1, 2), "a0"),
    "asymptotic a0=0": (lambda: escape_time_asymptotic(3, 2, 0.0, 2), "a0"),
    "asymptotic depth=1": (lambda: escape_time_asymptotic(3, 2, 0.1, 1), "depth >= 2"),
    "asymptotic K=1": (lambda: escape_time_asymptotic(1, 2, 0.1, 2), "classes K"),
    "escape a0<0": (lambda: escape_time(3, 2, -0.1, 1.0, 2), "a0"),
    "escape a_end=inf": (lambda: escape_time(3, 2, 0.1, math.inf, 2), "a_end"),
    "escape lam<0": (lambda: escape_time(3, 2, 0.1, 1.0, 2, -0.01), "lam"),
    "escape loss": (lambda: escape_time(3, 2, 0.1, 1.0, 2, 0.01, "hinge"), "unknown loss"),
    "escape depth=0": (lambda: escape_time(3, 2, 0.1, 1.0, 0), "depth"),
    "logistic lam<0": (lambda: logistic(1.0, 1e-3, 4, 5, -0.01), "lam"),
    "logistic K=2.5": (lambda: logistic(1.0, 1e-3, 2.5, 5, 0.01), "classes K"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_input_error_naming_it(case):
    call, name = BAD_INPUTS[case]
    with pytest.raises(InputError, match=name) as info:
        call()
    assert "\n" not in str(info.value)


def test_valid_dynamics_inputs_unchanged():
    """The checks accept what was valid: arrays, zero decays, depth >= 2 growth rates."""
    mu = growth_rate(np.array([3, 4]), 5, np.array([0.0, 0.01]), 0.02)
    assert mu.shape == (2,) and np.all(mu > 0)
    assert float(growth_rate(3, 5, 0.01, 0.02, depth=3)) == -0.01
    early, late = nc1_rates(3, 5, 0.0, 0.0)
    assert float(early) > 0 and float(late) == 0.0
    assert escape_time(3, 2, 0.0, 1.0, 2, 0.01) == math.inf  # the origin is a fixed point


# ---------------------------------------------------------------------------------------------
# 7. deep CE: the threshold compares the ETF with the origin only


def test_deep_ce_threshold_wording():
    """critical.py and the README no longer say that below lambda_crit the global minimiser is
    collapsed without the deep-CE exception."""
    from pathlib import Path

    doc = critical.__doc__
    assert "below it the global minimiser is collapsed, above it the origin" not in doc
    assert "lower-rank configuration can beat both" in doc and "lower_rank_better" in doc
    readme = (Path(ncsim.theory.__file__).parent / "README.md").read_text()
    assert "collapsed state global (no lower-rank winner) and reached" not in readme
    assert "rank-1 head" in readme


@pytest.mark.slow
def test_deep_ce_rank_one_beats_both_sides_of_the_threshold():
    """The fact the wording states: K = 3, n = 2, L = 2, a rank-1
    head beats the ETF at 0.98 Lambda_crit and the origin at 1.02 Lambda_crit."""
    lc = float(Lambda_crit("ce", 3, 2, 2))
    for fac, collapsed in ((0.98, True), (1.02, False)):
        eq = equilibrium("ce", "none", 3, 2, fac * lc, fac * lc, 0.0, 2, check_lower_rank=True)
        assert bool(eq.collapsed) is collapsed
        assert eq.lower_rank_better is True
        assert eq.meta["lower_rank_objective"] < float(eq.objective_star) - 1e-3


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize(("lw", "lh"), [(0.01, 0.0), (0.0, 0.01), (0.0, 0.0)])
def test_deep_zero_decay_has_no_minimiser_not_a_vanishing_run(loss, lw, lh):
    """A deep head with a zero decay has norms without bound: the prediction says
    "no_minimiser" with no onset (deep CE said "vanishing" with onset inf)."""
    p = predicted_onset(loss, "none", 4, 5, 20, lw, lh, 0.3, 0.01, 0.0, 2)
    assert p.regime == "no_minimiser" and math.isnan(p.onset_time)


def test_lambda_h_zero_horizon_is_capped():
    """With lambda_H = 0 the default search reaches at most 1e10 (flow time): a CE model whose
    slow onset lies beyond it is reported as never (inf) instead of a minutes-long solve to
    1e12."""
    assert prediction._horizon("ce", "none", 10, 20, 512, 1e-4, 0.0, 1.0, 0.01) == 1e10
    p = predicted_onset("ce", "none", 10, 20, 512, 1e-4, 0.0, 1.0)
    assert p.onset_time == math.inf and p.regime == "no_minimiser"



@pytest.mark.parametrize("M", [3, 4])
def test_deep_mse_mode_at_zero_decay_is_sqrt_n(M):
    """At Lambda = 0 the deep MSE mode's root is sigma = sqrt(n) exactly; the bisection bracket
    rounded to the wrong sign for about half of the (K, n) pairs and gave NaN."""
    from ncsim.theory.modes import mse_mode

    K, n = np.meshgrid(np.arange(2, 12, dtype=float), np.arange(1, 40, dtype=float))
    sol = mse_mode(K.ravel(), n.ravel(), np.zeros(K.size), M)
    np.testing.assert_allclose(sol.sigma, np.sqrt(n.ravel()), rtol=1e-15)
    assert np.isfinite(sol.sigma_local).all()


def test_phase_at_zero_decay_of_a_deep_mse_head():
    """K = 5, n = 23, depth 2: a zero decay was 'vanishing' with fn* 0 (the NaN mode read as
    the origin): lambda_H = 0 is no_collapse, lambda_W = 0 collapse."""
    from ncsim.theory.phase import classify

    assert classify("mse", "none", 5, 23, 20, 2, 0.01, 0.0, 0, 0.1)["phase"] == "no_collapse"
    assert classify("mse", "none", 5, 23, 20, 2, 0.0, 0.01, 0, 0.1)["phase"] == "collapse"

@pytest.mark.parametrize("M", [3, 4, 5])
@pytest.mark.parametrize("Lam", [1e-300, 1e-30, 1e-18])
def test_deep_mse_mode_at_a_tiny_decay_is_close_to_sqrt_n(M, Lam):
    """0 < Lambda << 1: the root sigma lies within a relative N Lambda / sqrt(n)^... of sqrt(n);
    the upper end of the bracket, s^(1/M), rounded to either sign and gave NaN ('vanishing')."""
    from ncsim.theory.modes import mse_mode

    K, n = np.meshgrid(np.arange(2, 12, dtype=float), np.arange(1, 40, dtype=float))
    sol = mse_mode(K.ravel(), n.ravel(), np.full(K.size, Lam), M)
    np.testing.assert_allclose(sol.sigma, np.sqrt(n.ravel()), rtol=1e-12)
    assert np.isfinite(sol.sigma_local).all()


def test_phase_of_a_deep_mse_head_at_a_tiny_weight_decay():
    """lambda_W = 1e-30 read as 'vanishing' with fn* 0 while 0 and 1e-20 collapse."""
    from ncsim.theory.phase import classify

    c = classify("mse", "none", 5, 23, 20, 2, 1e-30, 0.01, 0, 0.1)
    assert c["phase"] == "collapse" and c["fn_star"] > 0
