"""Third mutation probe of ncsim.theory.dynamics: the return type of the half time, the deep
growth rate against a finite-difference Jacobian written here, the logistic integral with a
tiny init, the escape-time quadrature near the basin root, the MSE scale c of aligned_fate,
and the input checks of aligned_fate / aligned_basin_root."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.theory import dynamics
from ncsim.theory.critical import basin_threshold

K4, N5 = 4, 5


def _mode_rhs(a, decays, K=K4, n=N5, c=1.0):
    """da_j/dt = c (s - u) / N prod_(i != j) a_i - lambda_j a_j, u = prod a (MSE mode flow)."""
    s, N = math.sqrt(n), K * n
    u = np.prod(a)
    others = np.array([np.prod(np.delete(a, j)) for j in range(a.size)])
    return c * (s - u) / N * others - np.asarray(decays) * a


def _jacobian_at_origin(decays, h=1e-6):
    """Central finite-difference Jacobian of _mode_rhs at a = 0."""
    M = len(decays)
    J = np.empty((M, M))
    for k in range(M):
        e = np.zeros(M)
        e[k] = h
        J[:, k] = (_mode_rhs(e, decays) - _mode_rhs(-e, decays)) / (2 * h)
    return J


@pytest.mark.parametrize("depth,decays", [
    (1, (0.01, 0.04)), (1, (0.3, 0.02)), (2, (0.01, 0.01, 0.04)), (2, (0.05, 0.02, 0.03)),
    (3, (0.02, 0.07, 0.01, 0.05))])
def test_growth_rate_is_the_top_eigenvalue_of_the_mode_jacobian_at_the_origin(depth, decays):
    """growth_rate is the largest eigenvalue of a finite-difference Jacobian of the mode flow
    at 0: mu of the 2x2 coupling for one layer, -min(lambda) for depth >= 2 (lambda_W of all
    weight layers equal, lambda_H last), not the one-layer form at depth 2."""
    lw, lh = decays[0], decays[-1]
    if depth >= 2:
        decays = (lw,) * depth + (lh,)
    top = float(np.max(np.linalg.eigvals(_jacobian_at_origin(decays)).real))
    got = float(dynamics.growth_rate(K4, N5, lw, lh, depth=depth))
    assert got == pytest.approx(top, rel=1e-8, abs=1e-12)
    if depth == 2:
        assert got == -min(lw, lh)


def test_logistic_half_time_of_scalars_is_not_an_array():
    """Scalar inputs give a numpy scalar (the 0-d result is unwrapped), as logistic does."""
    got = dynamics.logistic_half_time(0.1, K4, N5, 0.01)
    assert not isinstance(got, np.ndarray) and isinstance(got, np.floating)
    assert not isinstance(dynamics.logistic_half_time(0.0, K4, N5, 0.01), np.ndarray)


def _z_int_ref(t, z0, K, n, lam):
    """int_0^t z of the logistic: (z_inf / 2r) log1p(z0 (e^(2rt) - 1) / z_inf) (mpmath)."""
    t, z0, K, n, lam = map(mp.mpf, (t, z0, K, n, lam))
    r, zi = 1 / (K * mp.sqrt(n)) - lam, mp.sqrt(n) - K * lam * n
    return zi / (2 * r) * mp.log1p(z0 * mp.expm1(2 * r * t) / zi)


@pytest.mark.parametrize("t,z0", [(100.0, 1e-12), (100.0, 1e-20), (30.0, 1e-15)])
def test_logistic_integral_of_a_tiny_init_between_the_branches(t, z0):
    """2rt between 6 and 700 with z0 tiny (the integral far below 1): the log1p branch keeps
    full relative precision (no x + log(e^-x + ...) cancellation)."""
    with mp.workdps(40):
        want = _z_int_ref(t, z0, K4, N5, 0.01)
    got = float(dynamics.logistic_integral(t, z0, K4, N5, 0.01))
    assert abs(got / float(want) - 1) < 1e-13


@pytest.mark.parametrize("a_end", [1.0, 1.2])
def test_escape_time_just_above_the_basin_root_against_mpmath(a_end):
    """Deep MSE (M = 3, lambda = 0.01) from a0 = (1 + 1e-3) a_u, where 1 / (da/dt) is
    steep: the quadrature matches an mpmath integral of the mode ODE to ~1e-14."""
    K, n, lam, M = K4, N5, 0.01, 3
    with mp.workdps(30):
        s, N = mp.sqrt(n), K * n
        a_u = mp.findroot(lambda a: (s - a**M) * a ** (M - 2) - N * lam,
                          float(basin_threshold("mse", K, n, lam, 2)))
        a0 = float(a_u) * (1 + 1e-3)
        want = mp.quad(lambda a: 1 / ((s - a**M) * a ** (M - 1) / N - lam * a),
                       [a0, a0 * (1 + 1e-6), a0 * 1.001, a0 * 1.1, a_end])
    got = dynamics.escape_time(K, n, a0, a_end, 2, lam)
    assert abs(got / float(want) - 1) < 3e-14


def test_aligned_fate_uses_the_mse_scale_c_in_the_flow():
    """MSE with c = 1/2, equal decays 0.01 on M = 3 factors: the basin root is the lower root
    of c (s - a^3) a = N lambda (mpmath), which lies above that of c = 1; 1.001 of it
    collapses and 0.999 of it goes to the origin."""
    K, n, lam, c = K4, N5, 0.01, 0.5
    s, N = math.sqrt(n), K * n
    a_u = float(mp.findroot(lambda a: c * (s - a**3) * a - N * lam, 0.2))
    assert a_u > float(basin_threshold("mse", K, n, lam, 2)) * 1.5
    decays = (lam, lam, lam)
    assert dynamics.aligned_fate("mse", K, n, 1.001 * a_u, decays, c=c) == "collapse"
    assert dynamics.aligned_fate("mse", K, n, 0.999 * a_u, decays, c=c) == "origin"


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_basin_root_of_equal_decays_is_the_closed_form(loss):
    """Equal decays: aligned_basin_root returns basin_threshold itself (bit for bit), not a
    bisection near it."""
    decays = (0.01, 0.01, 0.01)
    want = float(basin_threshold(loss, K4, N5, 0.01, 2))
    assert dynamics.aligned_basin_root(loss, K4, N5, decays) == want


@pytest.mark.parametrize("K,n,msg", [
    (1, 5, "classes K must be an integer >= 2, got 1"),
    (2.5, 5, "classes K must be an integer >= 2, got 2.5"),
    (4, 0, "samples per class n must be an integer >= 1, got 0")])
def test_aligned_fate_refuses_bad_classes_and_samples(K, n, msg):
    """aligned_fate checks K and n itself: InputError with the exact message."""
    with pytest.raises(InputError) as info:
        dynamics.aligned_fate("mse", K, n, 1.0, (0.01, 0.01, 0.01))
    assert str(info.value) == msg


@pytest.mark.parametrize("loss,decays,msg", [
    ("mse", (0.01,), "decays must be at least 2 finite numbers > 0 (one per factor), "
                     "got (0.01,)"),
    ("mse", (0.01, 0.0, 0.01), "decays must be at least 2 finite numbers > 0 (one per "
                               "factor), got (0.01, 0.0, 0.01)"),
    ("mse", (0.01, math.nan, 0.01), "decays must be at least 2 finite numbers > 0 (one per "
                                    "factor), got (0.01, nan, 0.01)"),
    ("hinge", (0.01, 0.02, 0.01), "unknown loss 'hinge'; allowed: mse, ce")])
def test_aligned_basin_root_refuses_bad_decays_and_losses(loss, decays, msg):
    """aligned_basin_root checks the loss and the decays itself: InputError with the exact
    message (not one from basin_threshold or aligned_fate)."""
    with pytest.raises(InputError) as info:
        dynamics.aligned_basin_root(loss, K4, N5, decays)
    assert str(info.value) == msg
