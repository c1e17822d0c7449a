"""Mutation probes (second pass) of the saddle test's growth rate (ncsim.flow.saddle) and of the
lower-rank search's bookkeeping (ncsim.theory.lowrank): nonlinear and large-scale flows,
subsets of a batch, float32 states, complex spectra, a full-dimension Krylov space; the
log-softmax at extreme logits, the exact margins of ``beats`` and of the rank tie, rank 0,
and the seeds and restarts of the search."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from theory_helpers import lowrank_search_starts

from ncsim.flow.saddle import KRYLOV_DIM, growth_rate
from ncsim.theory import lowrank
from ncsim.theory.lowrank import BEAT_RTOL, RANK_TIE_RTOL, LowRankResult


def _symmetric(values, p: int, dtype=torch.float64, seed: int = 3) -> torch.Tensor:
    """A symmetric (p, p) matrix with the eigenvalues ``values`` (each repeated)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    a = q @ np.diag(np.resize(np.asarray(values, dtype=float), p)) @ q.T
    return torch.as_tensor(a, dtype=dtype)


def _cubic(y: torch.Tensor) -> torch.Tensor:
    """A nonlinear, row-wise, diagonal flow: v = y (0.2 + 0.5 y - y^2), J = 0.2 + y - 3 y^2."""
    return y * (0.2 + 0.5 * y - y * y)


def test_growth_rate_of_a_nonlinear_flow_per_run_of_a_subset():
    """A diagonal cubic flow in 10 dimensions (the Krylov space is the whole space): the rate
    and radius of the runs ``rows = [2, 0, 1]`` of a batch of states of scales 1, 30, 0.3 are
    the largest entry and largest |entry| of each run's own Jacobian diagonal, in the order of
    ``rows``, to 1e-9 of the radius (a central difference is exact for the quadratic part; a
    one-sided one is off by ~1e-5, a step set by the batch's norm by ~1e-6)."""
    y = torch.randn(3, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = y * torch.tensor([[1.0], [30.0], [0.3]], dtype=torch.float64)
    jac = (0.2 + y - 3 * y ** 2)[[2, 0, 1]]
    rate, radius = growth_rate(_cubic, y, torch.tensor([2, 0, 1]))
    want_rate, want_radius = jac.max(dim=1).values.numpy(), jac.abs().max(dim=1).values.numpy()
    assert want_radius[1] > 2 * want_radius[0]  # the order is visible
    assert np.all(np.abs(rate - want_rate) <= 1e-9 * want_radius), rate - want_rate
    np.testing.assert_allclose(radius, want_radius, rtol=1e-9)


def test_growth_rate_leaves_the_batch_state_untouched():
    """growth_rate perturbs copies of y: the state tensor is bit-for-bit the same afterwards."""
    y = torch.randn(3, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    before = y.clone()
    growth_rate(_cubic, y, torch.tensor([0, 2]))
    assert torch.equal(y, before)


def test_growth_rate_of_a_state_of_large_scale():
    """The difference step follows the state's scale: at |y| ~ 1e8 and 1e12 a linear flow's
    rate (3e-3 beside decays to 0.3) is found to 1e-8 relative (a fixed step of eps^(1/3)
    would be lost in the rounding of y: ~4e-3 relative at 1e8)."""
    a = _symmetric([3e-3, -1e-3, -0.02, -0.1, -0.3], 30)
    y = torch.randn(2, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = y * torch.tensor([[1e8], [1e12]], dtype=torch.float64)
    rate, radius = growth_rate(lambda v: v @ a.T, y, torch.arange(2))
    np.testing.assert_allclose(rate, 3e-3, rtol=1e-8)
    np.testing.assert_allclose(radius, 0.3, rtol=1e-8)


@pytest.mark.parametrize("top", [0.01, -0.05])
def test_growth_rate_of_a_float32_state(top):
    """A float32 state and velocity (symmetric flow, eigenvalues top, -0.1, -0.2, -0.3): the
    rate is the top eigenvalue to 1e-4 of the radius, the float32 noise 2.4e-5 with margin
    (the step and the breakdown floor follow float32's eps, not float64's)."""
    a = _symmetric([top, -0.1, -0.2, -0.3], 30, dtype=torch.float32)
    y = torch.randn(2, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    rate, radius = growth_rate(lambda v: v @ a.T, y, torch.arange(2))
    np.testing.assert_allclose(rate, top, rtol=0, atol=1e-4 * 0.3)
    np.testing.assert_allclose(radius, 0.3, rtol=1e-4)


def test_growth_rate_radius_is_the_modulus_of_a_complex_pair():
    """A flow with the complex pair -0.1 +- 2i (in a non-orthogonal basis) beside real
    eigenvalues 0.02 .. -1.5: the rate is 0.02 (largest real part) and the radius the pair's
    modulus sqrt(0.1^2 + 2^2) = 2.0025, not the largest |real part| 1.5."""
    block = np.zeros((6, 6))
    block[0, 0] = block[1, 1] = -0.1
    block[0, 1], block[1, 0] = 2.0, -2.0
    block[2:, 2:] = np.diag([-0.5, -1.0, 0.02, -1.5])
    basis = np.eye(6) + 0.2 * np.random.default_rng(5).standard_normal((6, 6))
    a = torch.as_tensor(basis @ block @ np.linalg.inv(basis))
    rate, radius = growth_rate(lambda v: v @ a.T, torch.zeros(1, 6, dtype=torch.float64),
                               torch.arange(1))
    assert rate[0] == pytest.approx(0.02, rel=1e-8)
    assert radius[0] == pytest.approx(math.hypot(0.1, 2.0), rel=1e-8)


def test_growth_rate_resolves_24_distinct_eigenvalues():
    """KRYLOV_DIM = 24 steps span a 24-dimensional space whole: 24 evenly spaced eigenvalues
    -1 .. 0.05 give the rate 0.05 to 1e-8 (a shorter Krylov space leaves the top eigenvalue of
    so crowded a spectrum unresolved)."""
    assert KRYLOV_DIM == 24
    a = _symmetric(np.linspace(-1.0, 0.05, 24), 24)
    y = torch.randn(1, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rate, radius = growth_rate(lambda v: v @ a.T, y, torch.arange(1))
    assert rate[0] == pytest.approx(0.05, rel=1e-8)
    assert radius[0] == pytest.approx(1.0, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# lowrank


def test_log_softmax_is_column_wise_stable_at_extreme_logits():
    """_log_softmax of logits whose columns sit 2000 apart (+-1000) equals scipy's column-wise
    log_softmax, finite everywhere (each column is shifted by its own maximum)."""
    rng = np.random.default_rng(0)
    Z = rng.normal(0.0, 1.0, (4, 4)) + np.array([1000.0, -1000.0, 0.0, 500.0])
    got = lowrank._log_softmax(Z)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, log_softmax(Z, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("objective", [0.5, 3.0])
def test_beats_needs_strictly_more_than_the_margin(objective):
    """A state exactly BEAT_RTOL max(1, |f|) below f (the margin itself) does not beat f."""
    best = objective - BEAT_RTOL * max(1.0, abs(objective))
    assert not LowRankResult((best,), 1, best).beats(objective)


def test_rank_tie_is_a_relative_1e9():
    """best_up_to reports the smaller rank when it lies within 1e-9 relative of the best
    (5e-10 above: rank 1), the larger one when it lies 2e-9 above (rank 2)."""
    assert RANK_TIE_RTOL == 1e-9
    assert LowRankResult((0.5 * (1 + 5e-10), 0.5), 2, 0.5).best_up_to(2) == (1, 0.5)
    assert LowRankResult((0.5 * (1 + 2e-9), 0.5), 2, 0.5).best_up_to(2) == (2, 0.5)


def test_rank_zero_has_no_state_even_with_described_ranks():
    """best_up_to(0) is (0, inf) and state(0, ...) a NaN state of rank 0, also for a result
    that describes its ranks (no state of rank <= 0 exists)."""
    lr = LowRankResult((1.0, 0.5), 2, 0.5, (3.0, 5.0), (8.0, 16.0), (0.25, 0.125), 0.02)
    assert lr.best_up_to(0) == (0, math.inf)
    st = lr.state(0, 0.08)
    assert st.rank == 0 and st.objective == math.inf
    assert math.isnan(st.fn) and math.isnan(st.w_norm) and math.isnan(st.loss)
    assert not lr.beats(10.0, 0)


def test_search_starts_follow_the_seed_and_a_single_restart_works(monkeypatch):
    """restarts random starts per rank drawn from ``seed``: the same seed repeats them, another
    seed draws others (and reaches the same minimum to 1e-9); restarts = 1 runs one start."""
    a, res_a = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=3, seed=0)
    b, _ = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=3, seed=0)
    c, res_c = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=3, seed=1)
    assert len(a) == len(c) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert res_c.best_objective == pytest.approx(res_a.best_objective, rel=1e-9)
    one, res_one = lowrank_search_starts(monkeypatch, 3, 2, 0.05, 2, restarts=1, seed=0)
    assert len(one) == 1 and math.isfinite(res_one.best_objective)
