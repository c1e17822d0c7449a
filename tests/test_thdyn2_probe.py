"""Second mutation probe of ncsim.theory.dynamics: edge cases of escape_time and
aligned_fate / aligned_basin_root that the other tests leave open, checked against
documented values and independent references written here."""

from __future__ import annotations

import math

import pytest

from ncsim.theory import dynamics

K4, N5 = 4, 5


def _mse_rate(a, lam, M=3, K=K4, n=N5):
    """da/dt of the balanced deep MSE mode (module docstring), written out here."""
    return (math.sqrt(n) - a**M) * a ** (M - 1) / (K * n) - lam * a


def test_escape_time_with_equal_ends_is_zero_also_where_the_flow_falls():
    """a_end == a0 is no travel: 0.0, even at an amplitude below the basin root where
    da/dt < 0 (the flow would never rise there)."""
    a, lam = 0.01, 0.01
    assert _mse_rate(a, lam) < 0
    assert dynamics.escape_time(K4, N5, a, a, 2, lam) == 0.0
    assert dynamics.escape_time(K4, N5, a, a, 2, lam, "ce") == 0.0


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_escape_time_from_the_origin_is_inf(loss, lam):
    """a0 = 0 is a fixed point of the deep mode flow (da/dt = 0 there): the flow never
    leaves it, so the escape time is inf (not an error from the quadrature)."""
    assert dynamics.escape_time(K4, N5, 0.0, 1.0, 2, lam, loss) == math.inf


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_fate_without_a_nonzero_critical_point_is_origin(loss):
    """Decays (2, 0.5, 1) (geometric mean 1, far above lambda_crit): the mode problem has no
    non-zero critical point (sigma_local NaN), so even a large init a0 = 5 goes to the
    origin, and the basin root is NaN, as documented."""
    decays = (2.0, 0.5, 1.0)
    assert dynamics.aligned_fate(loss, K4, N5, 5.0, decays) == "origin"
    assert math.isnan(dynamics.aligned_basin_root(loss, K4, N5, decays))


@pytest.mark.parametrize("decays", [(1.0, 0.001, 0.001), (0.001, 1.0, 0.001)])
def test_aligned_fate_waits_for_the_slowest_factor(decays):
    """Decays spread over three decades: the slow factors relax at rate ~1e-3, so the flow
    needs far longer than 1000 / max(decays) to settle; the documented horizon
    1000 / min(decays) lets it reach the collapsed point: "collapse", not "undecided"."""
    assert dynamics.aligned_fate("mse", K4, N5, 1.0, decays) == "collapse"


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_basin_root_beyond_twice_the_equal_decay_root(loss):
    """Decays (5e-4, 5e-4, 0.1): the aligned basin root lies above 2 a_u(Lambda) (outside
    the first bracket), and it separates the fates to the documented accuracy: 1 - 1e-6 of
    it goes to the origin, 1 + 1e-6 of it collapses."""
    from ncsim.theory.critical import basin_threshold

    decays = (5e-4, 5e-4, 0.1)
    lam = math.prod(decays) ** (1 / 3)
    root = dynamics.aligned_basin_root(loss, K4, N5, decays)
    assert root > 2 * float(basin_threshold(loss, K4, N5, lam, 2))
    assert dynamics.aligned_fate(loss, K4, N5, root * (1 - 1e-6), decays) == "origin"
    assert dynamics.aligned_fate(loss, K4, N5, root * (1 + 1e-6), decays) == "collapse"


@pytest.mark.parametrize("decays", [(0.01,), ()])
def test_aligned_fate_refuses_fewer_than_two_factors(decays):
    """A mode has M >= 2 factors: one decay (or none) is an InputError naming the rule."""
    from ncsim.errors import InputError

    with pytest.raises(InputError, match=r"decays must be at least 2 finite numbers > 0"):
        dynamics.aligned_fate("mse", K4, N5, 1.0, decays)


def test_aligned_fate_refuses_an_unknown_loss():
    """aligned_fate checks the loss itself: "mae" is an InputError listing the losses."""
    from ncsim.errors import InputError

    with pytest.raises(InputError, match=r"unknown loss 'mae'; allowed: "):
        dynamics.aligned_fate("mae", K4, N5, 1.0, (0.01, 0.01, 0.01))


def test_one_layer_growth_rate_is_exactly_zero_at_a_threshold_tie():
    """lambda_W != lambda_H whose geometric mean (equilibrium.geometric_mean, the threshold
    test's Lambda) equals 1/(K sqrt n) exactly, while sqrt(lW lH) is one ulp below it: the
    growth rate is 0.0 exactly, as documented (mu = 0 where the threshold test is a tie)."""
    import numpy as np

    from ncsim.theory.equilibrium import geometric_mean

    lw, lh = 0.1318605915374876, 0.09479708724381296
    g = 1 / (K4 * math.sqrt(N5))
    assert float(geometric_mean(np, [np.asarray(lw), np.asarray(lh)])) == g
    assert math.sqrt(lw * lh) != g
    assert float(dynamics.growth_rate(K4, N5, lw, lh)) == 0.0


@pytest.mark.parametrize("a0", [0.0, -0.1, math.nan])
def test_aligned_fate_refuses_an_init_amplitude_that_is_not_positive(a0):
    """a0 must be a finite number > 0 (a zero init has no fate to integrate): InputError."""
    from ncsim.errors import InputError

    with pytest.raises(InputError, match=r"amplitude a0 must be a finite number > 0"):
        dynamics.aligned_fate("mse", K4, N5, a0, (0.01, 0.01, 0.01))
