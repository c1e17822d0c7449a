"""Small builders shared by the theory-column tests: a validated run spec from a few
parameters, and the check that a row's equilibrium columns are those of an equilibrium."""

from __future__ import annotations

from typing import Any

import pytest

from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, TimeScale

EQ_COLUMNS = ("fn_star_theory", "w_norm_star_theory", "loss_star_theory")
"""The equilibrium columns of a theory row."""
TIME_SCALE_NOTE = "equilibrium only: the onset is predicted for unit time-scale factors"
WIDTH_NOTE = "onset not predicted for deep gaussian inits with a width other than d"


def column_spec(loss: str = "mse", bias: str = "none", K: int = 3, n: int = 2, d: int = 5,
                depth: int = 1, lw: Any = 0.02, lh: float = 0.03, lb: float = 0.0,
                kind: str = "gaussian", scale: float = 0.3, threshold: float = 0.01,
                width: int | None = None, metric: str = "nc1_trace",
                time_scale: TimeScale | None = None) -> RunSpec:
    """A validated RunSpec: one-layer UFM at depth 1, else a deep head; init seed 1."""
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth, width=width)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=1),
                   time_scale=time_scale or TimeScale(),
                   onset=OnsetSpec(metric=metric, threshold=threshold)).validate()


def same_equilibrium(row: dict[str, Any], eq: Any) -> None:
    """The row's fn*, |w|* and loss* columns equal ``eq``'s fields to 1e-12 relative."""
    for key, field in zip(EQ_COLUMNS, ("fn_star", "w_norm_star", "loss_star"), strict=True):
        assert row[key] == pytest.approx(float(getattr(eq, field)), rel=1e-12), key
