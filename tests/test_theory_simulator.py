"""Theory against the simulator: equilibria = long-time end states, predicted onset and lead time.

Every number here is a simulated run (``ncsim.flow.simulate``), not a formula. Runs that share
a ModelSpec and a SolverSpec are integrated in one batch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncsim.flow import simulate
from ncsim.onset import lead_time
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import equilibrium, predicted_onset, theory_columns

EQ_SOLVER = SolverSpec(t_end=3000, rtol=1e-11, atol=1e-13, gtol=1e-10, records=30)

# (loss, bias, K, n, depth, lambda_w, lambda_h, lambda_b, init kind, init scale)
EQ_CASES = [
    ("mse", "none", 3, 2, 1, 0.02, 0.03, 0.0, "gaussian", 0.3),
    ("mse", "free", 3, 2, 1, 0.02, 0.03, 0.0, "gaussian", 0.3),
    ("mse", "reg", 3, 2, 1, 0.02, 0.03, 0.5, "gaussian", 0.3),
    ("ce", "none", 4, 3, 1, 0.02, 0.03, 0.0, "gaussian", 0.3),
    ("ce", "free", 4, 3, 1, 0.02, 0.03, 0.0, "gaussian", 0.3),
    ("mse", "none", 3, 2, 2, 0.02, 0.02, 0.0, "spectral", 1.0),
    ("mse", "none", 3, 3, 3, 0.01, 0.01, 0.0, "spectral", 1.0),
    ("ce", "none", 3, 2, 2, 0.01, 0.01, 0.0, "spectral", 1.5),
]


def _eq_spec(case) -> RunSpec:
    loss, bias, K, n, depth, lw, lh, lb, kind, scale = case
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=K + 2, depth=depth)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=3), solver=EQ_SOLVER)


@pytest.fixture(scope="module")
def eq_runs():
    specs = [_eq_spec(c) for c in EQ_CASES]
    return specs, simulate(specs).runs


@pytest.mark.parametrize("i", range(len(EQ_CASES)),
                         ids=[f"{c[0]}-{c[1]}-K{c[2]}n{c[3]}L{c[4]}" for c in EQ_CASES])
def test_equilibrium_is_simulated_end_state(eq_runs, i):
    specs, runs = eq_runs
    loss, bias, K, n, depth, lw, lh, lb, *_ = EQ_CASES[i]
    row = runs.iloc[i]
    eq = equilibrium(loss, bias, K, n, lw, lh, lb, depth)
    assert row["status"] == "ok" and bool(eq.collapsed)
    pairs = {
        "fn": (row["final_fn"], eq.fn_star),
        "class_mean_norm": (row["final_class_mean_norm"], eq.class_mean_norm_centred),
        "classifier_norm": (row["final_w_norm"], eq.factor_norms[f"W{depth}"]),
        "loss": (row["final_loss"], eq.loss_star),
        "objective": (row["final_objective"], eq.objective_star),
        "fn_star_theory": (row["fn_star_theory"], eq.fn_star),
    }
    for name, (sim, want) in pairs.items():
        np.testing.assert_allclose(sim, float(want), rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------------------------
# onset: one layer, small gaussian init, balanced, lambda_W = lambda_H, d = 5 K

ONSET_TOL = 0.05
K_ON, N_ON, D_ON = 4, 5, 20
ONSET_SOLVER = SolverSpec(t_end=120, rtol=1e-8, atol=1e-12, gtol=0, records=200)


@pytest.fixture(scope="module")
def onset_runs():
    specs = []
    for loss, bias in (("mse", "free"), ("ce", "none")):
        model = ModelSpec(loss=loss, bias=bias, classes=K_ON, per_class=N_ON, dim=D_ON)
        for lam, scale in ((0.03, 1e-3), (0.03, 0.1)):
            specs.append(RunSpec(model=model, reg=Regularization(lambda_w=lam, lambda_h=lam),
                                 init=InitSpec(scale=scale, seed=1), solver=ONSET_SOLVER))
    res = simulate(specs)
    return specs, res.runs, res.trajectories


def test_predicted_onset_matches_simulation(onset_runs):
    _, runs, _ = onset_runs
    rel = []
    for _, row in runs.iterrows():
        assert row["status"] == "ok" and row["theory_regime"] == "ok"
        rel.append(row["onset_time_theory"] / row["onset_time"] - 1)
    assert max(abs(r) for r in rel) < ONSET_TOL, rel


def test_predicted_lead_time_matches_simulation(onset_runs):
    """Lead = onset - first time fn crosses (1 + delta) fn*; error < 5% of the larger time."""
    specs, runs, traj = onset_runs
    signs = []
    for spec, (_, row) in zip(specs, runs.iterrows(), strict=True):
        m = spec.model
        pred = predicted_onset(m.loss, m.bias, K_ON, N_ON, D_ON, spec.reg.lambda_w,
                               spec.reg.lambda_h, spec.init.scale)
        part = traj[traj["run_id"] == row["run_id"]]
        level = (1 + pred.delta) * row["fn_star_theory"]
        sim = lead_time(part["time"].to_numpy(), part["fn"].to_numpy(), row["onset_time"], level)
        scale = max(row["onset_time"], pred.fn_cross_time)
        assert abs(pred.lead_time - sim) < ONSET_TOL * scale, (spec.init.scale, pred, sim)
        signs.append(np.sign(sim))
    # small init: NC1 onset comes before fn reaches fn* (negative lead); init 0.1: after
    assert signs == [-1, 1] * 2


# ---------------------------------------------------------------------------------------------
# where the onset prediction fails: it must say so

def test_onset_failures_are_reported():
    solver = SolverSpec(t_end=60, rtol=1e-8, atol=1e-12, gtol=0, records=100)
    deep = ModelSpec(kind="deep", loss="mse", bias="none", classes=4, per_class=5, dim=20,
                     depth=2)
    specs = [
        # deep linear head: only the mode escape time is known (1.2 vs a measured 153)
        RunSpec(model=deep, reg=Regularization(0.01, 0.01), init=InitSpec(scale=0.3, seed=1),
                solver=SolverSpec(t_end=200, rtol=1e-8, atol=1e-12, gtol=0, records=100)),
        # d = K + 1: the isotropic within-class split fails (31.2 vs a measured 27.1)
        RunSpec(model=ModelSpec(loss="mse", bias="none", classes=4, per_class=5, dim=5),
                reg=Regularization(0.02, 0.02), init=InitSpec(scale=1e-3, seed=1),
                solver=solver),
        # lambda_H = 0: no minimiser, fn* undefined (the early-phase onset is still given)
        RunSpec(model=ModelSpec(loss="mse", bias="none", classes=4, per_class=5, dim=20),
                reg=Regularization(0.02, 0.0), init=InitSpec(scale=1e-3, seed=1),
                solver=solver),
    ]
    runs = simulate(specs).runs
    deep_row, narrow, no_decay = (runs.iloc[i] for i in range(3))
    assert deep_row["status"] == "ok" and math.isfinite(deep_row["onset_time"])
    assert math.isnan(deep_row["onset_time_theory"])
    assert "not predicted" in deep_row["theory_regime"]
    assert narrow["theory_regime"] == "approximate: d < 5K"
    assert abs(narrow["onset_time_theory"] / narrow["onset_time"] - 1) > ONSET_TOL
    assert no_decay["theory_regime"].startswith("no_minimiser")
    assert math.isnan(no_decay["fn_star_theory"]) and math.isnan(no_decay["loss_star_theory"])
    assert abs(no_decay["onset_time_theory"] / no_decay["onset_time"] - 1) < ONSET_TOL
    pred = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 0.3, depth=2)
    assert pred.regime == "escape_time_only"
    cols = theory_columns(specs[0])
    assert math.isnan(cols["onset_time_theory"])
