"""Strict probes of the deep-theory derivations (deep.py, derivations.py, symbols.py) and of
the lower-rank search (lowrank.py): closed forms of reference/theory.md 3.1 evaluated at
hand-chosen points with mpmath, and the search's bookkeeping on hand-made inputs."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import scipy.optimize
import sympy as sp
from scipy.special import log_softmax

from ncsim.errors import InputError
from ncsim.theory import deep, lowrank
from ncsim.theory import symbols as S
from ncsim.theory.derivations import derivations
from ncsim.theory.lowrank import LowRankResult, lower_rank_check


@pytest.fixture(autouse=True)
def forty_digits():
    """mpmath at 40 digits inside these tests only (the setting is global to mpmath)."""
    with mp.workdps(40):
        yield


# a hand-chosen point of the deep MSE per-mode problem (M = L + 1 factors)
M_, N_, S_, LAM_ = 4, 20, mp.sqrt(5), mp.mpf("0.013")


def _at(expr: sp.Expr, **extra) -> mp.mpf:
    """expr at M = 4, N = 20, s = sqrt(5), Lambda = 0.013, c = 1 (and ``extra``), 30 digits."""
    subs = {S.M: M_, deep.N_sym: N_, S.s: sp.sqrt(5), S.Lam: sp.Rational(13, 1000), S.c: 1}
    subs.update({getattr(S, k): sp.nsimplify(v) for k, v in extra.items()})
    return mp.mpf(str(sp.N(sp.sympify(expr).subs(subs), 30)))


def _close(a, b, rel=1e-12):
    assert abs(a - b) <= rel * abs(b), (a, b)


def test_deep_mse_thresholds_match_theory_md_closed_forms():
    """tau_glob, tau_stat, sigma_jump, Lambda_glob, Lambda_stat, x_max of derive_mse equal the
    theory.md 3.1 formulas (and their inverses in Lambda) at M = 4, N = 20, s = sqrt 5."""
    d = deep.derive_mse()
    M, N, s, lam = M_, N_, S_, LAM_
    e = mp.mpf(M) / (2 * (M - 1))
    _close(_at(d["tau_glob"]), (M - 1) / mp.mpf(M - 2) * ((M - 2) * N * lam) ** e)
    _close(_at(d["tau_stat"]), 2 * (M - 1) / mp.mpf(M - 2) * ((M - 2) * N * lam / M) ** e)
    _close(_at(d["sigma_jump"]), s * (M - 2) / (M - 1))
    _close(_at(d["Lambda_glob"]), (s * (M - 2) / (M - 1)) ** (1 / e) / ((M - 2) * N))
    _close(_at(d["Lambda_stat"]), M * (s * (M - 2) / (2 * (M - 1))) ** (1 / e) / ((M - 2) * N))
    _close(_at(d["x_max"]), (s * (M - 2) / (2 * (M - 1))) ** (mp.mpf(1) / M))


def test_deep_mse_per_mode_objective_phi_and_stationarity_by_hand():
    """g, g', Lambda(sigma) and phi(x) of derive_mse at sigma = 1.3, x = 1.1 (data weight c = 0.7)
    equal the per-mode formulas of theory.md 3.1 written out with mpmath."""
    d = deep.derive_mse()
    M, N, s, lam, c = M_, N_, S_, LAM_, mp.mpf("0.7")
    sig, x = mp.mpf("1.3"), mp.mpf("1.1")
    _close(
        _at(d["objective"], sigma="1.3", c="0.7"),
        c / (2 * N) * (sig - s) ** 2 + mp.mpf(M) / 2 * lam * sig ** (mp.mpf(2) / M),
    )
    _close(
        _at(d["stationarity"], sigma="1.3", c="0.7"),
        c / N * (sig - s) + lam * sig ** (mp.mpf(2) / M - 1),
    )
    _close(
        _at(d["Lambda_of_sigma"], sigma="1.3", c="0.7"),
        c * (s - sig) * sig ** (1 - mp.mpf(2) / M) / N,
    )
    _close(_at(d["phi"], x="1.1", c="0.7"), c * x ** (M - 2) * (s - x**M) / N)


def test_deep_ce_ray_psi_and_its_log_slope_by_hand():
    """derive_ce at K = 5, n = 7, M = 3, sigma = 2.2, Lambda = 0.01: the objective, psi(sigma) =
    sigma^(1-2/M) / (sqrt n (exp(sigma/sqrt n) + K - 1)) and d log psi / d sigma by hand."""
    d = deep.derive_ce()
    K, n, M, sig, lam = 5, 7, 3, mp.mpf("2.2"), mp.mpf("0.01")
    subs = {S.K: K, S.n: n, S.M: M, S.sigma: sp.Rational(11, 5), S.Lam: sp.Rational(1, 100)}

    def at(key):
        return mp.mpf(str(sp.N(d[key].subs(subs), 30)))

    m = sig / mp.sqrt(n)
    _close(
        at("objective"),
        mp.log(1 + (K - 1) * mp.exp(-m)) + (K - 1) * mp.mpf(M) / 2 * lam * sig ** (mp.mpf(2) / M),
    )
    _close(at("Lambda_of_sigma"), sig ** (1 - mp.mpf(2) / M) / (mp.sqrt(n) * (mp.exp(m) + K - 1)))
    _close(
        at("log_psi_slope"),
        (1 - mp.mpf(2) / M) / sig - mp.exp(m) / (mp.sqrt(n) * (mp.exp(m) + K - 1)),
    )
    grad = (K - 1) * (
        lam * sig ** (mp.mpf(2) / M - 1) - mp.exp(-m) / (mp.sqrt(n) * (1 + (K - 1) * mp.exp(-m)))
    )
    _close(at("stationarity"), grad)


def test_invert_for_s_refuses_two_positive_roots():
    """_invert_for_s: Lambda = (s - 2)^2 has two positive roots 2 -+ sqrt(Lambda) at the probe
    point, which is an error (not a silent pick of one); Lambda = s^2/4 gives s = 2 sqrt(Lambda)."""
    with pytest.raises(RuntimeError, match=r"expected one real positive root of Lambda"):
        deep._invert_for_s((S.s - 2) ** 2)
    assert sp.simplify(deep._invert_for_s(S.s**2 / 4) - 2 * sp.sqrt(S.Lam)) == 0


def test_derivations_deep_keys_and_values():
    """derivations(): the deep MSE model lists every threshold (tau_stat included) with the same
    expressions as derive_mse, the label modes (K, K - 1 with b = 1/K for a free bias) and the
    escape asymptote; deep CE lists objective, stationarity and Lambda_of_sigma."""
    mse = derivations("mse", depth=3, bias="none")
    assert set(mse) == {
        "objective",
        "stationarity",
        "phi",
        "x_max",
        "Lambda_stat",
        "tau_stat",
        "sigma_jump",
        "Lambda_glob",
        "tau_glob",
        "label_modes",
        "escape_asymptotic",
    }
    d = deep.derive_mse()
    for key in ("tau_stat", "tau_glob", "Lambda_stat", "Lambda_glob", "sigma_jump", "x_max"):
        assert mse[key] == d[key], key
    assert mse["label_modes"] == S.K
    free = derivations("mse", depth=2, bias="free")
    assert free["label_modes"] == S.K - 1 and free["bias_entry"] == 1 / S.K
    ce = derivations("ce", depth=2, bias="none")
    assert set(ce) == {"objective", "stationarity", "Lambda_of_sigma", "escape_asymptotic"}
    assert ce["Lambda_of_sigma"] == deep.derive_ce()["Lambda_of_sigma"]


def test_beats_margin_is_relative_to_at_least_one():
    """LowRankResult.beats: the margin is 1e-10 max(1, |objective|): at f = 0.5 a state
    7e-11 below does not beat it (the margin is 1e-10, not 5e-11), 2e-10 below does; at f = 10
    a state 5e-10 below does not (margin 1e-9), 2e-9 below does."""

    def result(value):
        return LowRankResult((value,), 1, value)

    assert not result(0.5 - 7e-11).beats(0.5)
    assert result(0.5 - 2e-10).beats(0.5)
    assert not result(10.0 - 5e-10).beats(10.0)
    assert result(10.0 - 2e-9).beats(10.0)


def test_state_converts_a_hand_made_result_to_model_units():
    """LowRankResult.state on hand-made numbers (K = 4, factor decay c = 0.02, lambda_L =
    0.08): fn = feature_norm sqrt(lambda_L / c), w_norm = sqrt(|F_M|^2 / K) / sqrt(lambda_L / c),
    for the smallest rank within 1e-9 of the best; no rank gives a NaN state of rank 0."""
    lr = LowRankResult((1.0, 0.5), 2, 0.5, (3.0, 5.0), (8.0, 16.0), (0.25, 0.125), 0.02)
    st = lr.state(2, 0.08)
    assert (st.rank, st.objective, st.loss) == (2, 0.5, 0.125)
    assert st.fn == pytest.approx(5.0 * 2.0, rel=1e-15)
    assert st.w_norm == pytest.approx(math.sqrt(16.0 / 4) / 2.0, rel=1e-15)
    st1 = lr.state(1, 0.08)
    assert (st1.rank, st1.objective, st1.loss) == (1, 1.0, 0.25)
    assert st1.fn == pytest.approx(6.0, rel=1e-15)
    none = LowRankResult((), 0, math.inf).state(0, 0.1)
    assert none.rank == 0 and none.objective == math.inf and math.isnan(none.fn)


def test_lower_rank_objective_and_gradient_against_naive_reference():
    """_objective (K = 4, r = 2, M = 3, lam = 0.07) at a random point: f = mean column CE of
    F_3 F_2 F_1 + lam/2 sum |F_j|^2 (scipy log_softmax), and the gradient is the central
    difference of f to 1e-7."""
    K, r, M, lam = 4, 2, 3, 0.07
    theta = np.random.default_rng(3).normal(0.0, 0.8, r * K * 2 + r * r * (M - 2))
    f, grad = lowrank._objective(theta, K, r, M, lam)
    F1, F2, F3 = lowrank._factors(theta, K, r, M)
    Z = F3 @ F2 @ F1
    ref = -np.trace(log_softmax(Z, axis=0)) / K + lam / 2 * sum(np.sum(F**2) for F in (F1, F2, F3))
    assert f == pytest.approx(ref, rel=1e-13)
    h = 1e-6
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fd = (
            lowrank._objective(theta + e, K, r, M, lam)[0]
            - lowrank._objective(theta - e, K, r, M, lam)[0]
        ) / (2 * h)
        assert grad[i] == pytest.approx(fd, abs=1e-7)


def test_lower_rank_check_refuses_a_negative_seed():
    """A negative seed is refused with an InputError naming it (not numpy's ValueError)."""
    with pytest.raises(InputError, match=r"seed must be an integer >= 0, got -1"):
        lower_rank_check(4, 2, 0.05, 2, seed=-1)


def test_a_rank_whose_search_ends_higher_keeps_the_lower_rank_state(monkeypatch):
    """When the rank-2 search ends above the rank-1 best (forced here: its L-BFGS runs stop
    at their random starts, and the polish leaves them there), rank 2 keeps the rank-1
    objective AND the rank-1 state (norms, data loss), not the description of the worse
    rank-2 search."""
    K, n, Lam, depth = 4, 3, 0.02, 2
    M = depth + 1
    rank2_size = 2 * K * 2 + 4 * (M - 2)
    real, real_polish = scipy.optimize.minimize, lowrank._polish
    stuck = []

    def fake(fun, x0, *args, **kwargs):
        res = real(fun, x0, *args, **kwargs)
        if x0.size == rank2_size:
            res.x, res.fun = x0, fun(x0, *kwargs["args"])[0]
            stuck.append(res.fun)
        return res

    def polish(theta, *args, **kwargs):
        return theta if theta.size == rank2_size else real_polish(theta, *args, **kwargs)

    monkeypatch.setattr(lowrank, "minimize", fake)
    monkeypatch.setattr(lowrank, "_polish", polish)
    lr = lower_rank_check.uncached(K, n, Lam, depth, restarts=2, seed=7)
    assert len(stuck) == 2 and min(stuck) > lr.objectives[0]
    assert lr.objectives[1] == lr.objectives[0]
    assert lr.feature_norms[1] == lr.feature_norms[0]
    assert lr.last_factor_sq_norms[1] == lr.last_factor_sq_norms[0]
    assert lr.data_losses[1] == lr.data_losses[0]
    assert lr.best_rank == 1


def test_state_of_a_result_without_described_states_is_nan():
    """A LowRankResult built with objectives only (no per-rank states) gives the rank and
    objective of its best state with NaN fn, w_norm and loss, not an IndexError."""
    st = LowRankResult((1.0, 0.5), 2, 0.5).state(2, 0.1)
    assert (st.rank, st.objective) == (2, 0.5)
    assert math.isnan(st.fn) and math.isnan(st.w_norm) and math.isnan(st.loss)
