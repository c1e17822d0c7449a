"""The onset prediction's numerics: the mode ODE solved once on the grid (LSODA with output
at the grid times) and refined per crossing, against a plain dense solve of the whole horizon
with brentq on it; the prediction is cached per parameter point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec
from ncsim.theory import equilibrium, predicted_onset, theory_columns
from ncsim.theory import prediction as pred_mod


def _reference_crossings(loss, bias, K, n, d, lw, lh, a, threshold=0.01):
    """(onset, fn crossing) from one dense LSODA solution over the horizon and brentq on the
    first sign change of each curve on the same grid."""
    pred = predicted_onset(loss, bias, K, n, d, lw, lh, a, threshold)
    grid = np.concatenate([[0.0], np.geomspace(1e-3, _t_max(K, n, lw, lh), 4000)])
    curves = pred_mod._curves(loss, bias, K, n, d, lw, lh, a, grid)  # constants only
    w0h0 = curves.states[0]
    dense = solve_ivp(curves.rhs, (0.0, grid[-1]), w0h0, method="LSODA", rtol=1e-10,
                      atol=1e-14, dense_output=True).sol

    def crossing(name, level):
        def f(t):
            t = np.atleast_1d(np.asarray(t, dtype=float))
            return getattr(curves, name)(t, dense(t).T) - level
        v = f(grid)
        changes = np.nonzero(np.sign(v[1:]) != np.sign(v[:-1]))[0]
        if changes.size == 0:
            return math.inf
        i = int(changes[0])
        return brentq(lambda t: float(f(t)[0]), grid[i], grid[i + 1], xtol=1e-12, rtol=1e-12)

    fn_star = float(equilibrium(loss, bias, K, n, lw, lh).fn_star)
    return crossing("nc1", threshold), crossing("fn", (1 + pred.delta) * fn_star), pred


def _t_max(K, n, lw, lh):
    from ncsim.theory import dynamics

    mu = float(dynamics.growth_rate(K, n, lw, lh))
    return float(np.clip(40.0 / min(x for x in (lw, lh, mu) if x > 0), 1e3, 1e8))


# (onset time, fn crossing time) at K = 10, n = 20, d = 64 from the earlier implementation
# (one dense LSODA solve over the horizon, its dense output on the grid; commit 27bd1be):
# anchors the energy formulas, which the reference below shares with the module.
EARLIER = {
    ("mse", "none", 0.01, 0.01, 0.001): (186.6939801391213, 545.2839453924936),
    ("mse", "free", 0.03, 0.0001, 0.1): (13958.44246830682, 3631.568213471191),
    ("ce", "none", 0.001, 0.003, 0.1): (747.3009265430516, 7.422385661093206),
    ("ce", "free", 0.001, 0.03, 1.0): (174.8097584044928, 278.33123730810473),
    # fn crosses in the slow lambda_W phase: beyond the earlier horizon 40 / min(lambda_H, mu)
    # (inf then), found since the horizon includes lambda_W (the same with t_max = 1e8)
    ("ce", "free", 0.0001, 0.03, 1.0): (176.32858132110687, 4616.502715054075),
}


@pytest.mark.parametrize(("loss", "bias", "lw", "lh", "a"), list(EARLIER))
def test_grid_solve_equals_one_dense_solve(loss, bias, lw, lh, a):
    onset, cross, pred = _reference_crossings(loss, bias, 10, 20, 64, lw, lh, a)
    assert pred.regime == "ok"
    assert (pred.onset_time, pred.fn_cross_time) == pytest.approx(
        EARLIER[(loss, bias, lw, lh, a)], rel=1e-8)
    assert pred.onset_time == pytest.approx(onset, rel=1e-7)
    assert pred.fn_cross_time == pytest.approx(cross, rel=1e-7)
    if math.isfinite(cross):
        assert pred.lead_time == pytest.approx(onset - cross, rel=1e-6, abs=1e-6 * onset)
    else:  # fn never reaches the level within the horizon: no lead (as onset.lead_time)
        assert math.isnan(pred.lead_time)


def test_prediction_is_computed_once_per_parameter_point():
    """Runs that differ only by their seed share one prediction (the cache)."""
    model = ModelSpec(loss="ce", classes=4, per_class=5, dim=20)
    specs = [RunSpec(model=model, reg=Regularization(1e-2, 2e-2), init=InitSpec(seed=s,
                                                                                scale=0.05))
             for s in range(3)]
    predicted_onset.cache_clear()
    rows = [theory_columns(s) for s in specs]
    info = predicted_onset.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert rows[0] == rows[1] == rows[2] and math.isfinite(rows[0]["onset_time_theory"])


def test_a_failed_mode_solve_is_reported_not_raised(monkeypatch):
    """LSODA refusing its tolerances: the theory columns report it (no warning printed, none
    raised under warnings-as-errors) and leave the numbers NaN."""
    import warnings

    monkeypatch.setattr(pred_mod, "_RTOL", 1e-30)
    monkeypatch.setattr(pred_mod, "_ATOL", 0.0)
    predicted_onset.cache_clear()
    spec = RunSpec(model=ModelSpec(loss="mse", classes=4, per_class=5, dim=20),
                   reg=Regularization(1.1e-2, 1e-2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = theory_columns(spec)
    predicted_onset.cache_clear()
    assert row["theory_regime"] == "error: the mode ODE failed: LSODA: Illegal input detected"
    assert math.isnan(row["onset_time_theory"]) and math.isnan(row["fn_star_theory"])
