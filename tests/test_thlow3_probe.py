"""Third probe of the lower-rank search (ncsim.theory.lowrank): every rank's objective and
state against an independent brute-force minimisation over rank-r logits U diag(s) V^T with
the Schatten-2/M penalty of reference/theory.md 3.2 (depths 1 and 3, which earlier probes left
out), where the lower-rank state beats the ETF and where it does not, K = 2 (no rank to
search), a tie between ranks, and the exact refusal of non-numeric integers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax

from ncsim.errors import InputError
from ncsim.theory import equilibrium, lowrank
from ncsim.theory.lowrank import LowRankResult, lower_rank_check


def _brute_force(K: int, n: int, Lam: float, depth: int, r: int, starts: int = 12):
    """Independent minimum of (1/K) sum_k CE(Z[:, k], k) + (M/2) Lambda n^(1/M) sum s_i^(2/M)
    over Z = U diag(s) V^T (U, V orthonormal K x r from QR, s = exp(t)), BFGS from ``starts``
    random points; returns (f, mean column norm of diag(s^((M-1)/M)) V^T, sum s^(2/M), data
    loss): the balanced factors' penultimate features, |F_M|^2 and CE in the search's units."""
    M = depth + 1
    lam = Lam * n ** (1 / M)
    rng = np.random.default_rng(0)

    def parts(x):
        U = np.linalg.qr(x[:K * r].reshape(K, r))[0]
        V = np.linalg.qr(x[K * r:2 * K * r].reshape(K, r))[0]
        return U, V, np.exp(x[2 * K * r:])

    def f(x):
        U, V, s = parts(x)
        Z = U @ np.diag(s) @ V.T
        return -np.trace(log_softmax(Z, axis=0)) / K + M / 2 * lam * np.sum(s ** (2 / M))

    best = None
    for _ in range(starts):
        x0 = np.concatenate([rng.normal(size=2 * K * r), rng.normal(0.5, 0.5, r)])
        res = minimize(f, x0, method="BFGS", options={"gtol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    U, V, s = parts(best.x)
    Z = U @ np.diag(s) @ V.T
    fn = float(np.mean(np.linalg.norm(np.diag(s ** ((M - 1) / M)) @ V.T, axis=0)))
    loss = float(-np.trace(log_softmax(Z, axis=0)) / K)
    return float(best.fun), fn, float(np.sum(s ** (2 / M))), loss


@pytest.mark.parametrize(("K", "n", "Lam", "depth"), [
    (4, 3, 0.03, 3),
    (4, 3, 0.03, 1),
    (3, 2, 0.05, 3),
])
def test_each_rank_matches_a_brute_force_svd_minimisation(K, n, Lam, depth):
    """Depths 1 and 3 (M = 2, 4), every rank r = 1 .. K - 2: objectives[r - 1] is the brute
    force minimum over rank-r logits to 1e-9, and the state (penultimate column norm, |F_M|^2,
    data loss) is the balanced one of that minimum to 1e-6."""
    lr = lower_rank_check(K, n, Lam, depth)
    assert len(lr.objectives) == K - 2
    assert lr.factor_decay == pytest.approx(Lam * n ** (1 / (depth + 1)), rel=1e-15)
    for r in range(1, K - 1):
        f, fn, last_sq, loss = _brute_force(K, n, Lam, depth, r)
        assert lr.objectives[r - 1] == pytest.approx(f, rel=1e-9), r
        assert lr.feature_norms[r - 1] == pytest.approx(fn, rel=1e-6), r
        assert lr.last_factor_sq_norms[r - 1] == pytest.approx(last_sq, rel=1e-6), r
        assert lr.data_losses[r - 1] == pytest.approx(loss, rel=1e-6), r


def test_lower_rank_beats_the_etf_at_depth_two_and_three_but_not_one():
    """K = 4, n = 3, Lambda = 0.03: the rank-2 state (f = 0.525772 at L = 2, 0.477330 at L = 3)
    lies below the ETF objective (0.535513, 0.526701) and beats it; at L = 1 (nuclear norm)
    the best lower-rank state, 0.667237, lies above the ETF's 0.604039 and beats nothing."""
    want = {1: (0.6672365294, 0.6040388174, False), 2: (0.5257720240, 0.5355125016, True),
            3: (0.4773297027, 0.5267012095, True)}
    for depth, (low, etf_ref, wins) in want.items():
        etf = float(equilibrium("ce", "none", 4, 3, 0.03, 0.03, 0.0, depth).objective_star)
        assert etf == pytest.approx(etf_ref, rel=1e-9)
        lr = lower_rank_check(4, 3, 0.03, depth)
        assert lr.best_rank == 2 and lr.best_objective == pytest.approx(low, rel=1e-9)
        assert lr.beats(etf) is wins, depth
        assert lr.beats(etf, max_rank=1) is False  # rank 1 (0.93, 0.88, 1.02) is above


def test_two_classes_have_no_rank_to_search():
    """K = 2: there is no rank below K - 1 = 1, so the result is empty (best rank 0,
    objective inf, factor decay Lambda n^(1/M)), beats nothing and has a NaN state; no
    IndexError and no ArithmeticError."""
    lr = lower_rank_check.uncached(2, 3, 0.05, 2)
    assert lr.objectives == () and lr.feature_norms == () and lr.data_losses == ()
    assert lr.best_rank == 0 and lr.best_objective == math.inf
    assert lr.factor_decay == pytest.approx(0.05 * 3 ** (1 / 3), rel=1e-15)
    assert not lr.beats(10.0)
    st = lr.state(1, 0.05)
    assert st.rank == 0 and st.objective == math.inf
    assert math.isnan(st.fn) and math.isnan(st.w_norm) and math.isnan(st.loss)


def test_a_rank_whose_search_ties_the_lower_rank_keeps_the_lower_rank_state(monkeypatch):
    """K = 4, n = 3, Lambda = 0.03, L = 2: when the rank-2 search ends at exactly the rank-1
    best objective (forced: its polished end point is valued at the polished rank-1 best),
    rank 2 keeps the rank-1 state (the smaller rank of a tie), not the description of the
    rank-2 search's own end point (fn 2.33 against rank 1's 1.70)."""
    K, M = 4, 3
    rank1_size = 1 * K * 2 + 1 * (M - 2)
    real_polish, real_objective = lowrank._polish, lowrank._objective
    rank1_best: list[float] = []
    rank2_end: list[np.ndarray] = []

    def polish(theta, *args, **kwargs):
        if theta.size == rank1_size:
            polished = real_polish(theta, *args, **kwargs)
            rank1_best.append(float(real_objective(polished, *args[:4])[0]))
            return polished
        rank2_end.append(theta)  # kept as found; valued below at the rank-1 best
        return theta

    def objective(theta, *args):
        value, grad = real_objective(theta, *args)
        if rank2_end and theta is rank2_end[-1]:
            return rank1_best[-1], grad
        return value, grad

    monkeypatch.setattr(lowrank, "_polish", polish)
    monkeypatch.setattr(lowrank, "_objective", objective)
    lr = lower_rank_check.uncached(K, 3, 0.03, 2, restarts=3)
    assert len(rank1_best) == 1 and len(rank2_end) == 1
    assert lr.objectives[1] == lr.objectives[0] == rank1_best[0]
    assert lr.feature_norms[0] == pytest.approx(1.69737990, rel=1e-6)
    own_end = lowrank._describe(rank2_end[0], K, 2, M)
    assert own_end[0] == pytest.approx(2.33, abs=0.01)  # the state a wrong choice would name
    assert lr.feature_norms[1] == lr.feature_norms[0]
    assert lr.last_factor_sq_norms[1] == lr.last_factor_sq_norms[0]
    assert lr.data_losses[1] == lr.data_losses[0]
    assert lr.best_rank == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"K": "3"}, "K must be an integer >= 2, got '3'"),
    ({"depth": "2"}, "depth must be an integer >= 1, got '2'"),
    ({"restarts": "6"}, "restarts must be an integer >= 1, got '6'"),
])
def test_a_string_for_an_integer_is_refused_with_its_repr(kwargs, message):
    """An integer argument given as a string is refused with an InputError that shows the
    value's repr (quoted), so '3' is not mistaken for the number 3."""
    args = {"K": 3, "n": 2, "Lam": 0.05, "depth": 2}
    args.update(kwargs)
    with pytest.raises(InputError, match=rf"^{message}$"):
        lower_rank_check(**args)


def test_best_up_to_reports_the_cut_off_rank_and_the_full_result_the_tie():
    """A hand-made result with objectives (0.9, 0.5, 0.5 (1 + 5e-10)) reports rank 2 for any
    max_rank >= 2 (rank 3 ties within 1e-9), rank 1 for max_rank 1, and beats 0.6 only with
    rank 2 allowed."""
    lr = LowRankResult((0.9, 0.5, 0.5 * (1 + 5e-10)), 2, 0.5)
    assert lr.best_up_to(3) == (2, 0.5) and lr.best_up_to(2) == (2, 0.5)
    assert lr.best_up_to(1) == (1, 0.9)
    assert lr.beats(0.6) and lr.beats(0.6, 2) and not lr.beats(0.6, 1)
