"""Theory columns of the run table, the closed forms they print, and the phase labels: checked
against mpmath references, hand derivations (reference/theory.md 1.1, 3.1) and simulated runs.

A deep head with a regularised bias has a mean label mode of data weight lambda_b/(1 + lambda_b)
whose basin root lies above the centred modes': a Gaussian init below it ends without the mean
mode, and the columns describe that end state.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import derivations, equilibrium
from ncsim.theory import symbols as S
from ncsim.theory.columns import theory_columns
from ncsim.theory.critical import basin_threshold
from ncsim.theory.dynamics import aligned_basin_root

pytestmark = pytest.mark.mpmath_digits(50)


def _spec(kind: str = "ufm", loss: str = "mse", bias: str = "none", K: int = 4, n: int = 5,
          d: int = 20, depth: int = 1, lw=0.01, lh: float = 0.01, lb: float = 0.0,
          init: str = "gaussian", scale: float = 1e-3, seed: int = 0, t_end: float = 100.0,
          arrays=None, metric: str = "nc1_trace") -> RunSpec:
    return RunSpec(model=ModelSpec(kind=kind, loss=loss, bias=bias, classes=K, per_class=n,
                                   dim=d, depth=depth),
                   reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=init, scale=scale, seed=seed, arrays=arrays),
                   solver=SolverSpec(method="dopri5", t_end=t_end, rtol=1e-10, atol=1e-12,
                                     gtol=1e-11, records=60),
                   onset=OnsetSpec(metric=metric)).validate()


# ---------------------------------------------------------------------------------------------
# logit of a wrong class (MSE), against mpmath


def _logit_other_reference(bias: str, K: int, n: int, lam: float, lb: float, M: int) -> mp.mpf:
    """m0 - sigma/(K sqrt n) at 50 digits: sigma (and sigma_0 at data weight c0) the largest
    root of the stationarity c (sigma - s)/N + Lambda sigma^(2/M - 1) = 0 (theory.md 3.1;
    one layer sigma = s - N Lambda / c), every decay lam; the bias as in theory.md 1.1."""
    s, N, L = mp.sqrt(n), K * n, mp.mpf(lam)

    def sigma(c: mp.mpf) -> mp.mpf:
        if M == 2:
            return max(s - N * L / c, mp.mpf(0))
        return mp.findroot(lambda x: c * (x - s) / N + L * x ** (mp.mpf(2) / M - 1), s)

    sig = sigma(mp.mpf(1))
    if bias == "none":
        return mp.mpf(0)
    if bias == "free":
        return (1 - sig / s) / K
    c0 = mp.mpf(lb) / (1 + mp.mpf(lb))
    sig0 = sigma(c0)
    return (sig0 / s + (1 - sig0 / s) / (1 + mp.mpf(lb)) - sig / s) / K


@pytest.mark.parametrize("bias,lb", [("none", 0.0), ("free", 0.0), ("reg", 0.5), ("reg", 3.0)])
@pytest.mark.parametrize("lam", [1e-12, 1e-7, 0.01])
@pytest.mark.parametrize("depth", [1, 2])
def test_mse_logit_other_against_mpmath(bias, lb, lam, depth):
    """logit_other of the MSE minimiser: within 1e-14 relative, and exactly 0 where it is 0
    (no bias with the mean mode live; one layer with a regularised bias whose mean mode lives).
    The form 1/K - sigma/(K sqrt n) lost 2e-6 relative at lambda = 1e-12 (free bias) and gave
    2.8e-17 instead of 0 (regularised bias, lambda = 0.01)."""
    K, n = 4, 5
    got = float(equilibrium("mse", bias, K, n, lam, lam, lb, depth).logit_other)
    want = _logit_other_reference(bias, K, n, lam, lb, depth + 1)
    if abs(want) < mp.mpf(10) ** -40:
        assert got == 0.0
    else:
        assert float(abs((mp.mpf(got) - want) / want)) < 1e-14


# ---------------------------------------------------------------------------------------------
# the printed forms are the ones the numbers come from


@pytest.mark.parametrize("bias,lb", [("none", 0.0), ("free", 0.0), ("reg", 2.0)])
def test_derive_prints_the_bias_forms_of_the_numbers(bias, lb):
    """`ncsim theory derive --bias B` prints the row norm, fn*^2 and objective of bias B: at a
    point they give w_norm_star^2, fn_star^2 and objective_star of :func:`equilibrium`, and
    label_modes / bias_entry give its mode count and b. A no-bias form would be off by
    (K - 1)/K with a free bias."""
    K, n, lw, lh = 4, 5, 0.013, 0.021
    ex = derivations("mse", 1, bias)
    others = {"none", "free", "reg"} - {bias}
    assert not any(f"{kind}_{o}" in ex for o in others for kind in ("w_row2", "h2"))
    at = {S.K: K, S.n: n, S.lam_w: sp.Float(lw, 30), S.lam_h: sp.Float(lh, 30),
          S.lam_b: sp.Float(lb, 30)}
    at[S.Lam] = sp.sqrt(at[S.lam_w] * at[S.lam_h])
    eq = equilibrium("mse", bias, K, n, lw, lh, lb)
    for key, value in ((f"w_row2_{bias}", float(eq.w_norm_star) ** 2),
                       (f"h2_{bias}", float(eq.fn_star) ** 2),
                       (f"objective_star_{bias}", float(eq.objective_star))):
        want = float(ex[key].subs(at).evalf(30))
        assert value == pytest.approx(want, rel=1e-13), key
    assert int(ex["label_modes"].subs(at)) == (K if bias == "none" else K - 1)
    if bias == "none":
        assert "bias_entry" not in ex
        return
    m = math.sqrt(n) - float(eq.sigma_mean)  # residual of the mean label mode
    entry = float(ex["bias_entry"].subs({**at, sp.Symbol("m", real=True): m}).evalf(30))
    assert float(eq.bias_star) == pytest.approx(entry, rel=1e-13)
    if bias == "reg":
        assert float(eq.sigma_mean) == pytest.approx(
            float(ex["sigma_mean_reg"].subs(at).evalf(30)), rel=1e-13)


@pytest.mark.parametrize("bias", ["free", "reg"])
def test_derive_prints_the_bias_of_deep_mse(bias):
    """Deep MSE lists how its bias enters: K - 1 ordinary modes, b = 1/K (free) or the
    regularised entry with the mean-mode weight lambda_b/(1 + lambda_b); those give the
    equilibrium's bias and its mean mode (the per-mode problem at c = that weight)."""
    K, n, lam, lb, depth = 4, 5, 0.004, 1.5, 2
    ex = derivations("mse", depth, bias)
    assert ex["label_modes"] == S.K - 1
    eq = equilibrium("mse", bias, K, n, lam, lam, lb if bias == "reg" else 0.0, depth)
    at = {S.K: K, S.n: n, S.lam_b: lb, sp.Symbol("m", real=True): math.sqrt(n)
          - float(eq.sigma_mean)}
    assert float(eq.bias_star) == pytest.approx(float(ex["bias_entry"].subs(at)), rel=1e-13)
    if bias == "reg":
        c0 = float(ex["mean_mode_weight"].subs(at))
        ref = equilibrium("mse", "none", K, n, lam / c0, lam / c0, 0.0, depth)
        assert float(eq.sigma_mean) == pytest.approx(float(ref.sigma), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# deep head, regularised bias, Gaussian init: the basin of the mean label mode

K4 = dict(K=4, n=5, d=20)
LAM, LB = 0.01, 0.3  # depth 2: mean mode weight c0 = 0.3/1.3, basin root 0.3989 vs 0.0895


def _mean_root() -> float:
    return float(basin_threshold("mse", 4, 5, LAM * (1 + LB) / LB, 2))


def _deep_reg(ratio: float, seed: int = 0, t_end: float = 100.0) -> RunSpec:
    """Deep MSE, regularised bias, Gaussian init of amplitude a sqrt(d/2) = ratio x the mean
    mode's basin root."""
    return _spec(kind="deep", depth=2, bias="reg", lw=LAM, lh=LAM, lb=LB,
                 scale=ratio * _mean_root() / math.sqrt(10), seed=seed, t_end=t_end, **K4)


def test_deep_reg_bias_gaussian_mean_mode_trapped_columns():
    """Below the band around the mean mode's basin root (0.3 a_u0) the columns describe the
    state without the mean mode (equilibrium(mean_mode=False)); within it (0.9 a_u0) they are
    NaN; above it (1.6 a_u0) they are the global minimiser. The centred modes collapse in all
    three (their root is 0.22 a_u0): collapsed_theory stays True. Before, every row gave the
    global minimiser (fn* 0.694286) where the runs end at 0.630958."""
    glob = equilibrium("mse", "reg", 4, 5, LAM, LAM, LB, 2)
    end = equilibrium("mse", "reg", 4, 5, LAM, LAM, LB, 2, mean_mode=False)
    low = theory_columns(_deep_reg(0.3))
    assert low["theory_regime"].startswith("mean_mode_trapped: ")
    assert low["fn_star_theory"] == float(end.fn_star)
    assert low["w_norm_star_theory"] == float(end.w_norm_star)
    assert low["loss_star_theory"] == float(end.loss_star)
    assert low["collapsed_theory"] is True
    edge = theory_columns(_deep_reg(0.9))
    assert edge["theory_regime"].startswith("mean_mode_basin_edge: ")
    assert all(math.isnan(edge[k]) for k in ("fn_star_theory", "w_norm_star_theory",
                                             "loss_star_theory"))
    high = theory_columns(_deep_reg(1.6))
    assert high["fn_star_theory"] == float(glob.fn_star)
    assert not high["theory_regime"].startswith("mean_mode")


def test_mean_mode_check_leaves_other_models_alone():
    """No bias (every mode has one root), a free bias (it absorbs the mean mode), CE (no mean
    mode) and one layer (the origin of the mean mode is unstable): the small init that traps
    the regularised bias's mean mode leaves the global minimiser in the columns. (Deep CE at
    K = 4, n = 5, lambda = 0.01: a rank-2 state, f = 0.2414477, beats the ETF state,
    f = 0.2424975, so its columns are the lower-rank regime's, without a mean-mode note.)"""
    scale = 0.3 * _mean_root() / math.sqrt(10)
    for kw in (dict(bias="none"), dict(bias="free"), dict(loss="ce", bias="reg", lb=LB)):
        row = theory_columns(_spec(kind="deep", depth=2, lw=LAM, lh=LAM, scale=scale,
                                   **K4, **kw))
        eq = equilibrium(kw.get("loss", "mse"), kw["bias"], 4, 5, LAM, LAM, kw.get("lb", 0.0),
                         2)
        assert "mean_mode" not in row["theory_regime"]
        if kw.get("loss") == "ce":
            assert row["theory_regime"].startswith("lower_rank: the ETF state (f = 0.242497")
            assert math.isnan(row["fn_star_theory"])
        else:
            assert row["fn_star_theory"] == float(eq.fn_star)
    one = theory_columns(_spec(bias="reg", lb=LB, lw=LAM, lh=LAM, scale=1e-3, **K4))
    assert one["fn_star_theory"] == float(equilibrium("mse", "reg", 4, 5, LAM, LAM, LB).fn_star)


@pytest.mark.slow
def test_deep_reg_bias_gaussian_runs_end_where_the_columns_say():
    """Simulated (seed 0, t = 8000): below the band the run ends at the column's fn (the mean
    mode back at 0), above it at the global minimiser."""
    from ncsim.flow.simulate import simulate

    runs = simulate([_deep_reg(0.3, t_end=8000.0), _deep_reg(1.6, t_end=8000.0)]).runs
    for _, run in runs.iterrows():
        assert run["status"] == "ok"
        assert run["final_fn"] == pytest.approx(run["fn_star_theory"], rel=1e-8)


# ---------------------------------------------------------------------------------------------
# deep head, per-layer decays, Gaussian init


def test_deep_per_layer_decays_gaussian_trapped_and_edge():
    """Per-layer decays (0.02, 0.03), lambda_H = 0.01: the basin root of the aligned flow is
    0.1708. An init amplitude 0.3 a_u is trapped (onset inf; before: regime "ok", onset NaN,
    while the run vanishes), 0.7 a_u is within the band, 1.5 a_u collapses (onset NaN, only
    the equal-decay escape time is derived)."""
    a_u = aligned_basin_root("mse", 4, 5, (0.02, 0.03, 0.01))
    rows = [theory_columns(_spec(kind="deep", depth=2, lw=(0.02, 0.03), lh=0.01,
                                 scale=r * a_u / math.sqrt(10), **K4)) for r in (0.3, 0.7, 1.5)]
    assert [r["theory_regime"].split(":")[0].split(" ")[0] for r in rows] == [
        "trapped", "basin_edge", "onset"]
    assert rows[0]["onset_time_theory"] == math.inf
    assert math.isnan(rows[1]["onset_time_theory"]) and math.isnan(rows[2]["onset_time_theory"])
    assert "per-layer weight decays" in rows[2]["theory_regime"]


@pytest.mark.slow
def test_deep_per_layer_decays_gaussian_runs():
    """Simulated (seeds 0, 1): 0.3 a_u vanishes, 1.5 a_u collapses."""
    from ncsim.flow.simulate import simulate

    a_u = aligned_basin_root("mse", 4, 5, (0.02, 0.03, 0.01))
    specs = [_spec(kind="deep", depth=2, lw=(0.02, 0.03), lh=0.01, scale=r * a_u / math.sqrt(10),
                   seed=s, t_end=20000.0, **K4) for r in (0.3, 1.5) for s in (0, 1)]
    runs = simulate(specs).runs
    assert list(runs["status"]) == ["vanishing", "vanishing", "ok", "ok"]
    assert np.allclose(runs["final_fn"][2:], runs["fn_star_theory"][2:], rtol=1e-8)


def test_arrays_init_says_why_the_onset_is_nan():
    """An 'arrays' init: onset NaN with the reason in the regime (before: regime "ok")."""
    rng = np.random.default_rng(0)
    arrays = {"H": rng.normal(0, 0.1, (8, 12)), "W": [rng.normal(0, 0.1, (3, 8))]}
    row = theory_columns(_spec(K=3, n=4, d=8, init="arrays", arrays=arrays, scale=0.1))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"].startswith("onset not predicted for an 'arrays' init")
    assert row["fn_star_theory"] == float(equilibrium("mse", "none", 3, 4, 0.01, 0.01).fn_star)


def test_other_onset_metric_keeps_the_fate():
    """An onset metric other than nc1_trace leaves the onset NaN but not the fate: a deep
    init far below the basin root stays "trapped", and a trapped mean mode still gives the
    end state's columns (before: regime "onset predicted for nc1_trace only" and the global
    minimiser's fn*)."""
    def row(metric: str, **kw) -> dict:
        return theory_columns(_spec(kind="deep", depth=2, metric=metric, **K4, **kw))

    trapped = row("nc1", lw=0.02, lh=0.02, scale=1e-3)
    assert trapped["theory_regime"] == "trapped; onset predicted for nc1_trace only"
    assert math.isnan(trapped["onset_time_theory"])
    assert row("nc1_trace", lw=0.02, lh=0.02, scale=1e-3)["onset_time_theory"] == math.inf
    low = row("nc2_etf", bias="reg", lw=LAM, lh=LAM, lb=LB,
              scale=0.3 * _mean_root() / math.sqrt(10))
    assert low["theory_regime"].startswith("mean_mode_trapped: ")
    assert low["theory_regime"].endswith("; onset predicted for nc1_trace only")
    end = equilibrium("mse", "reg", 4, 5, LAM, LAM, LB, 2, mean_mode=False)
    assert low["fn_star_theory"] == float(end.fn_star)
    ok = row("nc1", lw=0.02, lh=0.02, scale=0.3)
    assert ok["theory_regime"] == "onset predicted for nc1_trace only"
