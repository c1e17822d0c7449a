"""Second mutation probe of ncsim.theory.modes and ncsim.theory.phase: the per-mode minimisers
against the balanced (Saxe-type) gradient flow of the factors solved with scipy's solve_ivp,
rounding at the M = 2 threshold, spurious warnings at a zero decay, returned types, and the
phase classification / phase diagram inputs."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from theory_helpers import deep_mse_lam_glob, deep_mse_lam_stat

from ncsim.theory import modes


def _flow_limit(rhs, a0, t_end=1e7):
    """Limit of the scalar flow a' = rhs(a) from a0 (Radau, tight tolerances)."""
    sol = solve_ivp(lambda t, y: [rhs(y[0])], (0.0, t_end), [a0], method="Radau",
                    rtol=1e-12, atol=1e-14)
    assert sol.success
    return float(sol.y[0, -1])


def _mse_rhs(K, n, lam, M, c):
    """Balanced factor flow of c/(2N)(a^M - sqrt n)^2 + (M/2) Lambda a^2 (per factor)."""
    N, s = K * n, math.sqrt(n)
    return lambda a: -(c / N * (a**M - s) * a ** (M - 1) + lam * a)


def _ce_rhs(K, n, lam, M):
    """Balanced factor flow (per factor) of the CE ray objective at sigma = a^M."""
    s = math.sqrt(n)

    def rhs(a):
        sig = a**M
        dg = -(K - 1) * math.exp(-sig / s) / (s * (1 + (K - 1) * math.exp(-sig / s)))
        return -(dg * M * a ** (M - 1) / M + (K - 1) * lam * a)

    return rhs


def _f(v):
    return np.array(float(v))


# ------------------------------------------------------------------ Saxe-type flows (ODE)
@pytest.mark.parametrize(("K", "n", "c", "frac"), [(3, 4, 1.0, 0.4), (5, 7, 0.7, 0.9)])
def test_two_factor_mse_mode_is_the_limit_of_the_balanced_flow(K, n, c, frac):
    """M = 2: the balanced flow from a small a0 > 0 converges to a^2 = sigma (closed form)."""
    lam = frac * c / (K * math.sqrt(n))
    sol = modes.mse_mode(_f(K), _f(n), _f(lam), 2, _f(c))
    a = _flow_limit(_mse_rhs(K, n, lam, 2, c), 1e-3)
    assert a**2 == pytest.approx(float(sol.sigma), rel=1e-8)
    assert float(sol.sigma) == pytest.approx(math.sqrt(n) - K * n * lam / c, rel=1e-13)


@pytest.mark.parametrize(("K", "n", "M", "c"), [(4, 5, 3, 1.0), (3, 6, 4, 1.6)])
def test_deep_mse_bistable_window_matches_the_balanced_flow(K, n, M, c):
    """Between Lambda_glob and Lambda_stat the flow from a large a0 ends at sigma_local and
    from a small a0 at the origin, which mse_mode reports as the global minimiser."""
    lam = 0.5 * (deep_mse_lam_glob(K, n, M, c) + deep_mse_lam_stat(K, n, M, c))
    sol = modes.mse_mode(_f(K), _f(n), _f(lam), M, _f(c))
    rhs = _mse_rhs(K, n, lam, M, c)
    hi = _flow_limit(rhs, (2 * math.sqrt(n)) ** (1 / M))
    assert hi**M == pytest.approx(float(sol.sigma_local), rel=1e-8)
    assert _flow_limit(rhs, 1e-2) < 1e-6
    assert float(sol.sigma) == 0.0 and not bool(sol.collapsed)
    assert float(sol.objective) == pytest.approx(float(sol.objective_zero), rel=1e-14)


@pytest.mark.parametrize(("K", "n", "M", "c"), [(4, 5, 3, 1.0), (2, 9, 5, 0.5)])
def test_deep_mse_global_state_is_the_limit_from_above(K, n, M, c):
    """Below Lambda_glob the flow from a large a0 ends at sigma = sigma_local, with a lower
    objective than the origin."""
    lam = 0.6 * deep_mse_lam_glob(K, n, M, c)
    sol = modes.mse_mode(_f(K), _f(n), _f(lam), M, _f(c))
    a = _flow_limit(_mse_rhs(K, n, lam, M, c), (2 * math.sqrt(n)) ** (1 / M))
    assert a**M == pytest.approx(float(sol.sigma), rel=1e-8)
    assert float(sol.sigma) == float(sol.sigma_local)
    assert float(sol.objective) < float(sol.objective_zero)


@pytest.mark.parametrize(("K", "n", "M", "frac"), [(3, 2, 3, 0.5), (4, 5, 4, 0.9), (6, 3, 2, 0.5)])
def test_ce_ray_local_state_is_the_limit_of_the_balanced_flow(K, n, M, frac):
    """The CE ray's sigma_local is where the balanced flow from a large a0 ends (M = 2: a
    fraction of 1/(K sqrt n); M >= 3: a fraction of psi's maximum)."""
    if M == 2:
        lam = frac / (K * math.sqrt(n))
    else:
        lam = frac * float(modes.ce_psi_max(_f(K), _f(n), M)[1])
    sol = modes.ce_ray(_f(K), _f(n), _f(lam), M)
    loc = float(sol.sigma_local)
    a = _flow_limit(_ce_rhs(K, n, lam, M), (3 * loc) ** (1 / M))
    assert a**M == pytest.approx(loc, rel=1e-8)


# ------------------------------------------------------------------ rounding and warnings
def test_two_factor_mse_sigma_is_positive_just_below_the_threshold():
    """K = 3, n = 13, Lambda one ulp below 1/(K sqrt n): collapsed, with sigma > 0 (the exact
    sigma at these float inputs is +1.96e-16; the form sqrt(n) - N Lambda rounded to -4e-16,
    which was clipped to 0, not collapsed); sigma is sqrt(n) (1 - Lambda / Lambda_c), whose
    1 - q is exact: 2^-53 sqrt(13) here."""
    lam = np.nextafter(1 / (3 * np.sqrt(13.0)), 0.0)
    assert lam < 1 / (3 * np.sqrt(13.0))
    sol = modes.mse_mode(_f(3), _f(13), np.array(lam), 2, _f(1.0))
    assert bool(sol.collapsed) and float(sol.sigma) > 0
    assert float(sol.sigma_local) == float(sol.sigma)
    q = lam / (1 / (3 * np.sqrt(13.0)))
    assert float(sol.sigma) == np.sqrt(13.0) * (1 - q)
    assert float(sol.sigma) < 1e-15
    assert float(sol.objective) == pytest.approx(1 / 6, rel=1e-15)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_ce_ray_at_zero_decay_raises_no_floating_point_warning(M):
    """Lambda = 0 on the CE ray (sigma = inf) is reached without a divide or invalid warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="warn", invalid="warn", over="ignore", under="ignore"):
            sol = modes.ce_ray(np.array([4.0, 3.0]), np.array([5.0, 2.0]), np.zeros(2), M)
    assert np.isinf(sol.sigma).all() and sol.collapsed.all()
    assert np.isinf(sol.sigma_local).all()


# ------------------------------------------------------------------ returned types
def test_mode_solution_is_frozen_with_its_five_fields():
    """ModeSolution is a frozen dataclass with fields sigma, sigma_local, collapsed,
    objective, objective_zero (in that order)."""
    names = [f.name for f in dataclasses.fields(modes.ModeSolution)]
    assert names == ["sigma", "sigma_local", "collapsed", "objective", "objective_zero"]
    sol = modes.mse_mode(_f(4), _f(5), _f(0.01), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.sigma = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("M", [2, 3])
def test_ce_ray_on_torch_matches_numpy_and_keeps_torch_types(M):
    """ce_ray on float64 torch tensors returns torch tensors (collapsed: bool) equal to the
    numpy result, broadcast to the parameter shape."""
    K = np.array([3.0, 4.0, 10.0])
    n = np.array([2.0, 5.0, 7.0])
    lam = np.array([0.01, 0.05, 0.5]) / (K * np.sqrt(n))
    a = modes.ce_ray(K, n, lam, M)
    b = modes.ce_ray(torch.tensor(K), torch.tensor(n), torch.tensor(lam), M)
    for name in ("sigma", "sigma_local", "objective", "objective_zero"):
        got = getattr(b, name)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.shape == (3,)
        np.testing.assert_allclose(got.numpy(), getattr(a, name), rtol=1e-12)
    assert b.collapsed.dtype == torch.bool and a.collapsed.dtype == np.bool_
    np.testing.assert_array_equal(b.collapsed.numpy(), a.collapsed)


def test_mse_mode_broadcasts_scalars_against_an_array():
    """mse_mode broadcasts scalar K, n, c against an array of decays (numpy in, numpy out)."""
    lam = np.array([0.0, 0.05, 0.2])
    sol = modes.mse_mode(4, 5, lam, 2, 1.0)
    assert isinstance(sol.sigma, np.ndarray) and sol.sigma.shape == (3,)
    np.testing.assert_allclose(sol.sigma, np.maximum(np.sqrt(5) - 20 * lam, 0), rtol=1e-14)
    assert sol.collapsed.tolist() == [True, True, False]
    np.testing.assert_allclose(sol.objective_zero, [1 / 8] * 3, rtol=1e-15)


# ------------------------------------------------------------------ phase: inputs
@pytest.mark.parametrize(("d", "shown"), [(0, "0"), (2.5, "2.5"), (True, "True"), ("4", "'4'"),
                                          (-3, "-3")])
def test_classify_refuses_a_bad_dimension_with_its_message(d, shown):
    """d must be an integer >= 1 (a float, bool or text is refused), checked before the
    init scale, even for one layer where d plays no part."""
    from ncsim.errors import InputError
    from ncsim.theory.phase import classify

    msg = rf"^dimension d must be an integer >= 1, got {re.escape(shown)}$"
    with pytest.raises(InputError, match=msg):
        classify("mse", "none", 4, 5, d, 1, 0.01, 0.01, 0.0, 0.1)
    with pytest.raises(InputError, match=msg):
        classify("mse", "none", 4, 5, d, 1, 0.01, 0.01, 0.0, 0.0)


def test_classify_accepts_a_numpy_integer_dimension():
    """A numpy integer d is an integer: one-layer MSE below the threshold is collapse."""
    from ncsim.theory.phase import classify

    row = classify("mse", "none", 4, 5, np.int64(3), 1, 0.01, 0.01, 0.0, 0.1)
    assert row["phase"] == "collapse" and row["collapsed_global"] is True


_PBASE = {"loss": "mse", "bias": "none", "K": 2, "n": 4, "d": 4, "lambda_b": 0.0,
          "init_scale": 0.1, "lambda_h": 0.01}


def test_phase_diagram_depth_axis_takes_integral_floats():
    """Axis depth given as 1.0, 2.0 is passed to classify as int: same rows as classify with
    depth 1 and 2, the axis value kept as given, keys ordered x, y, then classify's."""
    from ncsim.theory.phase import classify, phase_diagram

    rows = phase_diagram("depth", [1.0, 2.0], "lambda_w", [0.01], _PBASE)
    want = [classify("mse", "none", 2, 4, 4, dep, 0.01, 0.01, 0.0, 0.1) for dep in (1, 2)]
    assert rows == [{"depth": 1.0, "lambda_w": 0.01, **want[0]},
                    {"depth": 2.0, "lambda_w": 0.01, **want[1]}]
    assert [list(r) for r in rows] == [["depth", "lambda_w", "collapsed_global", "fn_star",
                                        "phase"]] * 2


def test_phase_diagram_n_axis_refuses_a_fraction_with_its_own_message():
    """Axis n is an integer axis: 2.5 is refused by phase_diagram's own message."""
    from ncsim.errors import InputError
    from ncsim.theory.phase import phase_diagram

    base = {**{k: v for k, v in _PBASE.items() if k != "n"}, "depth": 1}
    with pytest.raises(InputError, match=r"^phase axis n takes integers, got 2\.5$"):
        phase_diagram("n", [4, 2.5], "lambda_w", [0.01], base)


@pytest.mark.parametrize("bias", ["none", "free"])
def test_lambda_b_as_the_second_axis_also_needs_a_regularised_bias(bias):
    """check_axes refuses lambda_b as the y axis too (not only as x) without bias 'reg'."""
    from ncsim.errors import InputError
    from ncsim.theory.phase import check_axes

    with pytest.raises(InputError, match=rf"^the axis lambda_b needs --bias reg, got bias "
                                         rf"'{bias}'$"):
        check_axes("lambda_w", "lambda_b", bias)
    check_axes("lambda_w", "lambda_b", "reg")
