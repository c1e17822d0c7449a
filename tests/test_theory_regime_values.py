"""Regime logic of the theory columns and the phase classification at parameter points whose
answer follows from the thresholds alone (no flow needs integrating to know it)."""

from __future__ import annotations

import math

import pytest

from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory.columns import theory_columns
from ncsim.theory.critical import deep_thresholds
from ncsim.theory.phase import classify


def _spec(loss: str = "mse", bias: str = "none", K: int = 4, n: int = 5, d: int = 20,
          depth: int = 2, lw: float | tuple[float, ...] = 0.01, lh: float = 0.01,
          lb: float = 0.0, kind: str = "spectral", scale: float = 1.0) -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=1),
                   solver=SolverSpec(t_end=10.0, rtol=1e-9, atol=1e-12, gtol=0, records=10),
                   onset=OnsetSpec(metric="nc1_trace")).validate()


@pytest.mark.parametrize("kind", ["spectral", "etf"])
@pytest.mark.parametrize("lw,lh", [(0.08, 0.08), ((0.075, 0.09), 0.085)])
def test_deep_aligned_init_above_lambda_stat_is_vanishing(kind, lw, lh):
    """Deep MSE (K = 4, n = 5, L = 2): Lambda_stat = 0.0691 (no non-zero critical point above
    it). With every decay above it (equal, or per layer with geometric mean ~0.083) an aligned
    init of any scale flows to the origin because no collapsed state exists at all: the
    regime is "vanishing" (not "trapped", which names an init below the basin root of an
    existing collapsed state), the onset inf, nothing collapsed, fn* 0; phase.classify (equal
    decays) says "vanishing" too."""
    lam_stat = float(deep_thresholds(4, 5, 0.01, 2).Lambda_stat)
    assert lam_stat == pytest.approx(0.0690756, rel=1e-5)
    layers = lw if isinstance(lw, tuple) else (lw, lw)
    assert math.prod((*layers, lh)) ** (1 / 3) > lam_stat
    row = theory_columns(_spec(kind=kind, lw=lw, lh=lh, scale=1.0))
    assert row["theory_regime"] == "vanishing"
    assert row["onset_time_theory"] == math.inf
    assert row["collapsed_theory"] is False
    assert row["fn_star_theory"] == 0.0
    if not isinstance(lw, tuple):
        phase = classify("mse", "none", 4, 5, 20, 2, lw, lh, 0.0, 1.0)
        assert phase["phase"] == "vanishing" and phase["collapsed_global"] is False
