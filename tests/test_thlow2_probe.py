"""Second probe of the lower-rank search (ncsim.theory.lowrank) and the deep derivations
(ncsim.theory.deep): input checks with their exact messages, the rank choice at its edges, the
spread of the random starts, a rank whose search overflows, the Python types of the results,
and the root selection of _invert_for_s."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import sympy as sp
from theory_helpers import lowrank_search_starts

from ncsim.errors import InputError
from ncsim.theory import deep, lowrank
from ncsim.theory import symbols as S
from ncsim.theory.lowrank import LowRankResult, LowRankState, lower_rank_check

# ---------------------------------------------------------------------------------------------
# lower_rank_check: input checks


@pytest.mark.parametrize(("Lam", "shown"), [
    (math.inf, "inf"),
    (np.float64(np.inf), "inf"),
    (True, "True"),
    ("0.1", "'0.1'"),
    (None, "None"),
])
def test_lower_rank_check_refuses_a_lam_that_is_no_finite_real_number(Lam, shown):
    """Lam = inf (Python or numpy), True, a string or None is refused with an InputError naming
    the value (not an overflow ArithmeticError, nor a search run at Lam = 1 for True)."""
    with pytest.raises(InputError, match=rf"^Lam must be a finite number > 0, got {shown} "
                                         r"\(with a zero decay there is no minimiser"):
        lower_rank_check(3, 2, Lam, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, "n must be an integer >= 1, got 0"),
    ({"K": True}, "K must be an integer >= 2, got True"),
    ({"n": True}, "n must be an integer >= 1, got True"),
    ({"depth": True}, "depth must be an integer >= 1, got True"),
    ({"restarts": True}, "restarts must be an integer >= 1, got True"),
    ({"seed": False}, "seed must be an integer >= 0, got False"),
    ({"K": 3.0}, r"K must be an integer >= 2, got 3\.0"),
    ({"seed": 1.5}, r"seed must be an integer >= 0, got 1\.5"),
])
def test_lower_rank_check_refuses_bools_floats_and_n_zero(kwargs, message):
    """n = 0 and a bool or float for an integer argument are refused, the message naming it."""
    args = {"K": 3, "n": 2, "Lam": 0.05, "depth": 2}
    args.update(kwargs)
    with pytest.raises(InputError, match=rf"^{message}$"):
        lower_rank_check(**args)


# ---------------------------------------------------------------------------------------------
# rank choice


def test_best_rank_counts_itself_at_a_zero_objective():
    """The best rank is within the tie of itself even where the best objective is 0 (the
    tolerance RANK_TIE_RTOL |best| is then 0): (1, 0.0), not a StopIteration."""
    assert LowRankResult((0.0, 0.0), 1, 0.0).best_up_to(2) == (1, 0.0)
    assert LowRankResult((1.0, 0.0), 2, 0.0).best_up_to(2) == (2, 0.0)


def _forced(monkeypatch, rank_one_fun: float) -> LowRankResult:
    """lower_rank_check(K = 4, n = 3, Lam = 0.02, depth 2, 2 restarts) whose rank-1 L-BFGS
    runs all report ``rank_one_fun`` (the rank-2 runs are left alone)."""
    K, M = 4, 3
    rank1_size = 1 * K * 2 + 1 * (M - 2)
    real = scipy.optimize.minimize

    def fake(fun, x0, *args, **kwargs):
        res = real(fun, x0, *args, **kwargs)
        if x0.size == rank1_size:
            res.fun = rank_one_fun
        return res

    monkeypatch.setattr(lowrank, "minimize", fake)
    return lower_rank_check.uncached(K, 3, 0.02, 2, restarts=2, seed=3)


def test_a_rank_one_search_that_overflows_alone_is_no_error(monkeypatch):
    """Only the rank-1 runs overflow (forced): the search still returns, with objective inf and
    NaN state at rank 1 and the finite rank-2 state as the best (rank 2); the ArithmeticError
    is for a search without any finite objective."""
    lr = _forced(monkeypatch, math.inf)
    assert lr.objectives[0] == math.inf and math.isfinite(lr.objectives[1])
    assert lr.best_rank == 2 and lr.best_objective == lr.objectives[1]
    assert math.isnan(lr.feature_norms[0]) and math.isnan(lr.last_factor_sq_norms[0])
    assert math.isnan(lr.data_losses[0])
    assert all(math.isfinite(v) for v in (lr.feature_norms[1], lr.data_losses[1]))
    assert lr.beats(lr.objectives[1] + 0.1)


def test_a_rank_with_an_infinite_objective_beats_nothing():
    """A result whose only allowed rank has objective inf (its search overflowed) names no
    rank, reports an infinite best objective, beats no objective and has a NaN state, instead
    of raising StopIteration (inf - inf is nan, within no tie)."""
    lr = LowRankResult((math.inf, 0.5), 2, 0.5, (1.0, 2.0), (3.0, 4.0), (0.1, 0.2), 0.5)
    assert lr.best_up_to(1) == (0, math.inf)
    assert not lr.beats(10.0, 1)
    assert not lr.beats(math.inf, 1)
    state = lr.state(1, 0.5)
    assert (state.rank, state.objective) == (0, math.inf)
    assert all(math.isnan(v) for v in (state.fn, state.w_norm, state.loss))
    assert lr.best_up_to(2) == (2, 0.5)
    assert lr.beats(10.0)


# ---------------------------------------------------------------------------------------------
# random starts


def test_search_start_spreads_run_evenly_from_half_to_two(monkeypatch):
    """The restarts of a rank start at N(0, s^2) draws from default_rng(seed), one generator
    for all, with spreads s evenly from 0.5 to 2.0 (3 restarts: 0.5, 1.25, 2.0; 1 restart:
    0.5); K = 3, depth 2: rank 1 only, 7 parameters."""
    starts, _ = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=3, seed=5)
    rng = np.random.default_rng(5)
    want = [rng.normal(0.0, s, 7) for s in (0.5, 1.25, 2.0)]
    assert len(starts) == 3
    for got, ref in zip(starts, want, strict=True):
        np.testing.assert_array_equal(got, ref)
    starts, _ = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=1, seed=5)
    assert len(starts) == 1
    np.testing.assert_array_equal(starts[0], np.random.default_rng(5).normal(0.0, 0.5, 7))


# ---------------------------------------------------------------------------------------------
# returned types


def test_lower_rank_results_are_plain_python_numbers():
    """Every number of a LowRankResult (objectives, best objective, states, factor decay) is
    a Python float and best_rank a Python int, not numpy scalars; beats is a Python bool
    also for a numpy objective; state gives a LowRankState of Python numbers."""
    lr = lower_rank_check.uncached(4, 3, 0.05, 2, restarts=2)
    assert type(lr.best_rank) is int and type(lr.best_objective) is float
    assert type(lr.factor_decay) is float
    for field in (lr.objectives, lr.feature_norms, lr.last_factor_sq_norms, lr.data_losses):
        assert isinstance(field, tuple) and len(field) == 2
        assert all(type(v) is float for v in field), field
    for objective in (np.float64(lr.best_objective + 1.0), np.float64(lr.best_objective)):
        assert type(lr.beats(objective)) is bool
    assert lr.beats(np.float64(lr.best_objective + 1.0))
    st = lr.state(2, 0.05)
    assert isinstance(st, LowRankState) and type(st.rank) is int
    assert all(type(v) is float for v in (st.objective, st.fn, st.w_norm, st.loss))


# ---------------------------------------------------------------------------------------------
# deep: root selection and the thresholds' symbols


def test_invert_for_s_refuses_a_root_that_is_zero_at_the_probe():
    """Lambda = s + 1/20 has the one root Lambda - 1/20, exactly 0 at the probe (Lambda =
    1/20): zero is not positive, so it is refused."""
    with pytest.raises(RuntimeError, match=r"^expected one real positive root of Lambda"):
        deep._invert_for_s(S.s + sp.Rational(1, 20))


def test_invert_for_s_refuses_a_complex_root_with_a_positive_real_part():
    """Lambda = (i s)^M has the one root (Lambda / i^M)^(1/M), 0.319 + 0.184i at the probe
    (M = 3, Lambda = 1/20): its real part is positive, but it is not real, so it is refused."""
    with pytest.raises(RuntimeError, match=r"^expected one real positive root of Lambda"):
        deep._invert_for_s((sp.I * S.s) ** S.M)


def test_deep_mse_thresholds_in_s_are_for_unit_data_weight():
    """tau_glob and tau_stat of derive_mse are functions of N, M and Lambda only (taken at data
    weight c = 1), while Lambda_glob and Lambda_stat keep c."""
    d = deep.derive_mse()
    for key in ("tau_glob", "tau_stat"):
        assert d[key].free_symbols == {deep.N_sym, S.M, S.Lam}, key
    for key in ("Lambda_glob", "Lambda_stat"):
        assert d[key].free_symbols == {deep.N_sym, S.M, S.s, S.c}, key
