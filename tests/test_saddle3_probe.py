"""Mutation probes (third pass) of the saddle test (ncsim.flow.saddle): growth_rate against
numpy's eigenvalues of an explicit small Jacobian (real, complex, defective spectra), the
Arnoldi breakdown floor (a start vector nearly orthogonal to the unstable direction), each
run's estimate independent of its batch, the step floor at y = 0 in float32 and for a flow
curved at a tiny scale, the number of velocity evaluations, and the exact boundaries of the
escape rule (mu x time_left >= 1, mu strictly above the noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.flow import saddle
from ncsim.flow.saddle import KRYLOV_DIM, _start_vector, growth_rate, saddle_escapes

F64 = torch.float64


def _linear(a: np.ndarray, dtype=F64):
    """The velocity y -> y @ A^T of every run of the batch."""
    at = torch.as_tensor(a, dtype=dtype).T
    return lambda y: y @ at


def _per_run(mats: list[np.ndarray]):
    """A batch velocity whose run m follows its own linear flow y_m -> A_m y_m."""
    stack = torch.as_tensor(np.stack(mats), dtype=F64)
    return lambda y: torch.einsum("mij,mj->mi", stack, y)


def _hidden(p: int, overlap: float, top: float = 0.5) -> np.ndarray:
    """A = -I + (1 + top) u u^T: eigenvalue ``top`` along the unit u, -1 elsewhere, where u
    meets the fixed Krylov start vector s only by u . s = ``overlap``."""
    s = _start_vector(p, torch.device("cpu")).numpy()
    q = np.random.default_rng(11).standard_normal(p)
    q -= (q @ s) * s
    q /= np.linalg.norm(q)
    u = overlap * s + math.sqrt(1.0 - overlap ** 2) * q
    return -np.eye(p) + (1.0 + top) * np.outer(u, u)


def _jordan_similar(p: int = 7, seed: int = 2) -> np.ndarray:
    """A defective matrix: a 3 x 3 Jordan block of 0.3 and the eigenvalues -0.2 .. -1.0, in a
    non-orthogonal basis."""
    block = np.diag([0.3, 0.3, 0.3, -0.2, -0.5, -0.7, -1.0])[:p, :p]
    block[0, 1] = block[1, 2] = 1.0
    basis = np.eye(p) + 0.2 * np.random.default_rng(seed).standard_normal((p, p))
    return basis @ block @ np.linalg.inv(basis)


@pytest.mark.parametrize("kind", ["real", "complex", "generic"])
def test_growth_rate_matches_numpy_eigenvalues_of_a_small_linear_flow(kind):
    """P = 7 < KRYLOV_DIM (the Krylov space is the whole space): the rate and radius are numpy's
    largest real part and largest modulus of the eigenvalues of A, to 1e-9 of the radius."""
    rng = np.random.default_rng(5)
    if kind == "real":
        basis = np.eye(7) + 0.3 * rng.standard_normal((7, 7))
        a = basis @ np.diag([0.04, -0.01, -0.3, -0.6, -0.9, -1.2, -2.0]) @ np.linalg.inv(basis)
    elif kind == "complex":
        block = np.diag([-0.1, -0.1, 0.05, 0.05, -0.4, -0.8, -1.1])
        block[0, 1], block[1, 0], block[2, 3], block[3, 2] = 1.5, -1.5, 0.3, -0.3
        basis = np.eye(7) + 0.3 * rng.standard_normal((7, 7))
        a = basis @ block @ np.linalg.inv(basis)
    else:
        a = rng.standard_normal((7, 7)) / math.sqrt(7)
    eig = np.linalg.eigvals(a)
    y = torch.randn(2, 7, generator=torch.Generator().manual_seed(3), dtype=F64)
    y[1] = 0.0
    rate, radius = growth_rate(_linear(a), y, torch.arange(2))
    r = np.abs(eig).max()
    np.testing.assert_allclose(rate, eig.real.max(), rtol=0, atol=1e-9 * r)
    np.testing.assert_allclose(radius, r, rtol=1e-9)


def test_growth_rate_of_a_defective_flow():
    """A 3 x 3 Jordan block of 0.3 beside -0.2 .. -1.0 (P = 7): the rate is 0.3 to the cube root
    of rounding (1e-4 here), the radius 1.0 to 1e-9; the flow grows along the block."""
    rate, radius = growth_rate(_linear(_jordan_similar()), torch.zeros(1, 7, dtype=F64),
                               torch.arange(1))
    assert abs(rate[0] - 0.3) < 1e-4
    assert radius[0] == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(("overlap", "want"), [(3e-8, 0.5), (1e-9, -1.0)])
def test_breakdown_floor_is_100_eps_two_thirds_of_the_product(overlap, want):
    """Eigenvalue 0.5 along u, -1 elsewhere (P = 10), the start vector meeting u by ``overlap``:
    the first residual is 1.5 x overlap of |J v|. At 3e-8 (above the float64 floor
    100 eps^(2/3) = 3.7e-9) the space goes on and finds 0.5; at 1e-9 (below it) the space
    ends at once, invariant to the noise, and its one Ritz value is -1."""
    a = _hidden(10, overlap)
    rate, _ = growth_rate(_linear(a), torch.zeros(1, 10, dtype=F64), torch.arange(1))
    assert rate[0] == pytest.approx(want, abs=1e-6)


def test_float32_breakdown_floor_follows_float32_noise():
    """The same flow in float32 with overlap 1e-3 (residual 1.5e-3, far above float32 rounding
    but below its floor 100 eps32^(2/3) = 2.4e-3): the space ends at once (rate -1); a float64
    floor would go on and report 0.5 from a direction float32 cannot resolve."""
    a = _hidden(10, 1e-3)
    y = torch.zeros(1, 10, dtype=torch.float32)
    rate, _ = growth_rate(_linear(a, torch.float32), y, torch.arange(1))
    assert rate[0] == pytest.approx(-1.0, abs=1e-4)


def test_each_run_is_independent_of_its_batch():
    """Runs with their own flows (a hidden unstable direction whose space ends at once, a
    flow 1e-8 times slower, a generic 10-dimensional one) give in one batch, in any subset and
    order, the very numbers each gives alone."""
    rng = np.random.default_rng(7)
    mats = [_hidden(10, 1e-9), 1e-8 * rng.standard_normal((10, 10)) / math.sqrt(10),
            rng.standard_normal((10, 10)) / math.sqrt(10)]
    y = torch.randn(3, 10, generator=torch.Generator().manual_seed(9), dtype=F64)
    y[0] = 0.0
    alone = [growth_rate(_linear(m), y[i:i + 1], torch.arange(1)) for i, m in enumerate(mats)]
    for rows in ([0, 1, 2], [2, 0], [1, 2]):
        rate, radius = growth_rate(_per_run(mats), y, torch.tensor(rows))
        for k, i in enumerate(rows):
            assert rate[k] == pytest.approx(alone[i][0][0], rel=1e-9, abs=1e-12 * alone[i][1][0])
            assert radius[k] == pytest.approx(alone[i][1][0], rel=1e-9)
    assert alone[0][0][0] == pytest.approx(-1.0, abs=1e-6)
    for i in (1, 2):
        eig = np.linalg.eigvals(mats[i])
        assert alone[i][0][0] == pytest.approx(eig.real.max(), rel=1e-7)


def test_float32_state_at_zero_uses_the_float32_step_floor():
    """A float32 state at exactly 0: the step floor is eps32^(1/3) x tiny32^(1/4) (~5e-13), so
    the shift survives the cast to float32 and the rate of a linear flow (0.01 beside -0.3) is
    found (a float64 floor, ~1e-79, rounds the shift to 0 and every product to 0)."""
    a = np.diag(np.resize([0.01, -0.1, -0.2, -0.3], 8))
    rate, radius = growth_rate(_linear(a, torch.float32), torch.zeros(2, 8, dtype=torch.float32),
                               torch.arange(2))
    np.testing.assert_allclose(rate, 0.01, rtol=0, atol=1e-4 * 0.3)
    np.testing.assert_allclose(radius, 0.3, rtol=1e-4)


def test_step_follows_a_tiny_state_scale_not_a_unit_floor():
    """v = s g(y / s) with g(x) = x (0.2 + 0.5 x - x^2) and s = 1e-9, at |y| ~ s and at 0: the
    Jacobian g'(y / s) (diagonal) is found to 1e-8 of its radius, since the step is eps^(1/3)
    x |y| (floored at tiny^(1/4), not at 1, which would step 6e-6, far outside the curvature)."""
    s = 1e-9

    def f(y):
        x = y / s
        return s * x * (0.2 + 0.5 * x - x * x)

    y = s * torch.randn(2, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    y[1] = 0.0
    x = y / s
    jac = 0.2 + x - 3 * x ** 2
    rate, radius = growth_rate(f, y, torch.arange(2))
    want_radius = jac.abs().max(dim=1).values.numpy()
    np.testing.assert_allclose(rate, jac.max(dim=1).values.numpy(), rtol=0,
                               atol=1e-8 * want_radius.max())
    np.testing.assert_allclose(radius, want_radius, rtol=1e-8)


@pytest.mark.parametrize("p", [5, 30])
def test_velocity_evaluations_are_two_per_krylov_step(p):
    """growth_rate calls f 2 x min(KRYLOV_DIM, P) times (10 for P = 5, 48 for P = 30), each
    on finite states only, also where the space breaks down exactly (J = 0)."""
    calls = []

    def f(y):
        calls.append(bool(torch.isfinite(y).all()))
        return 0.0 * y

    rate, radius = growth_rate(f, torch.zeros(2, p, dtype=F64), torch.arange(2))
    assert len(calls) == 2 * min(KRYLOV_DIM, p)
    assert all(calls)
    assert rate.tolist() == [0.0, 0.0] and radius.tolist() == [0.0, 0.0]


def test_escape_needs_mu_t_at_least_one_to_the_last_bit(monkeypatch):
    """mu = 0.5 and time left 2 escapes; time left one ulp below 2 (mu t = 1 - 1.1e-16) does
    not."""
    monkeypatch.setattr(saddle, "growth_rate",
                        lambda f, y, rows: (np.array([0.5, 0.5]), np.array([1.0, 1.0])))
    left = torch.tensor([2.0, math.nextafter(2.0, 0.0)], dtype=F64)
    escapes, mu = saddle_escapes(lambda v: v, torch.zeros(2, 3, dtype=F64), torch.arange(2),
                                 left)
    assert escapes.tolist() == [True, False]
    assert mu.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mu_exactly_at_the_noise_does_not_escape(monkeypatch, dtype):
    """mu equal to the noise 100 eps^(2/3) x radius (same rounding) is not above it: no escape,
    however long the horizon; one ulp above it escapes."""
    radius = 3.0
    noise = 100.0 * float(torch.finfo(dtype).eps) ** (2.0 / 3.0) * radius
    monkeypatch.setattr(saddle, "growth_rate", lambda f, y, rows: (
        np.array([noise, math.nextafter(noise, 1.0)]), np.array([radius, radius])))
    escapes, _ = saddle_escapes(lambda v: v, torch.zeros(2, 3, dtype=dtype), torch.arange(2),
                                torch.tensor([1e30, 1e30], dtype=F64))
    assert escapes.tolist() == [False, True]
