"""Values of ``simulate``'s run and trajectory tables against independent references.

- order: runs of several batch structures given interleaved come back in input order, each
  row with its own spec columns, trajectory rows and final state;
- batch independence: a run integrated among other runs (other decays, time scales, seeds)
  follows the same path as the run integrated alone;
- explicit Euler (``method="gd"``) against a numpy loop over the reference objective's
  gradient (``tests/reference_objective.py``), for per-layer decays and time scales, a bias and
  the class-means form;
- record times, the status rules and their precedence, the summary columns against
  :mod:`ncsim.onset` and :mod:`ncsim.metrics` applied to the tables and final states;
- run ids (every init array hashed, repeated specs), bad input, the figure's label column.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.onset import is_vanishing, onset_and_fn
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

sys.path.insert(0, str(Path(__file__).parent))
from reference_objective import Objective  # noqa: E402

sim = importlib.import_module("ncsim.flow.simulate")


def _ufm(loss: str = "ce", classes: int = 3, per_class: int = 4, dim: int = 6,
         bias: str = "none") -> ModelSpec:
    return ModelSpec(kind="ufm", loss=loss, bias=bias, classes=classes, per_class=per_class,
                     dim=dim)


def _spec(model: ModelSpec, seed: int = 0, lambda_w: float = 1e-2, lambda_h: float = 1e-2,
          time_scale: TimeScale | None = None, onset: OnsetSpec | None = None,
          **solver) -> RunSpec:
    solver = {"t_end": 40.0, "records": 25, **solver}
    return RunSpec(model=model, reg=Regularization(lambda_w=lambda_w, lambda_h=lambda_h),
                   init=InitSpec(scale=0.3, seed=seed), time_scale=time_scale or TimeScale(),
                   solver=SolverSpec(**solver), onset=onset or OnsetSpec())


def _same(a: object, b: object) -> bool:
    """Equal values, None and NaN equal (a table cell of a None field)."""
    if a is None or b is None:
        return (a is None or (isinstance(a, float) and math.isnan(a))) and \
            (b is None or (isinstance(b, float) and math.isnan(b)))
    return a == b


def _rows_of(table: pd.DataFrame, rid: str) -> pd.DataFrame:
    return table[table["run_id"] == rid].drop(columns="run_id").reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# order of the runs, their own columns and rows
# ------------------------------------------------------------------------------------------


def _mixed_specs() -> list[RunSpec]:
    """Three batch structures (CE, MSE in the class-means form, a float32 CE of another shape)
    given interleaved, one spec repeated; with ``max_batch=2`` the CE group is split in two."""
    ce, mse, small = _ufm("ce"), _ufm("mse"), _ufm("ce", classes=4, per_class=2, dim=3)
    slow_w = TimeScale(eta_h=2.0, eta_w=0.5)
    return [
        _spec(ce, seed=0),
        _spec(mse, seed=1, lambda_w=3e-2),
        _spec(small, seed=2, dtype="float32", rtol=1e-6, atol=1e-8),
        _spec(ce, seed=3, lambda_w=3e-2, time_scale=slow_w),
        _spec(ce, seed=0),  # the first spec again
        _spec(mse, seed=4, lambda_h=2e-2, time_scale=TimeScale(eta_w=3.0)),
        _spec(ce, seed=5, lambda_h=5e-3),
        _spec(small, seed=6, dtype="float32", rtol=1e-6, atol=1e-8),
    ]


@pytest.fixture(scope="module")
def mixed():
    specs = _mixed_specs()
    return specs, sim.simulate(specs, max_batch=2, theory=False)


def test_runs_of_interleaved_batches_keep_the_input_order_and_their_own_columns(mixed):
    """Row i of the run table is spec i: its run id (a repeated spec gets ``-1``), every
    field of its spec and the dtype it ran in; the trajectory table holds each run's rows
    contiguously, run by run in input order; each final state has its own spec's shapes."""
    specs, result = mixed
    ids = sim.unique_run_ids(specs)
    assert list(result.runs["run_id"]) == ids
    assert ids[4] == f"{ids[0]}-1" and len(set(ids)) == len(ids)
    for i, spec in enumerate(specs):
        row = result.runs.iloc[i]
        for name, value in spec.to_row().items():
            assert _same(row[name], value), (i, name, row[name], value)
        assert row["dtype"] == spec.solver.dtype
    table = result.trajectories
    blocks = [rid for k, rid in enumerate(table["run_id"]) if k == 0
              or rid != table["run_id"].iloc[k - 1]]
    assert blocks == ids  # contiguous, input order, each run once
    for spec, rid in zip(specs, ids):
        state = result.final_state(rid)
        model = spec.model
        assert state["H"].shape == (model.dim, model.num_samples)
        assert state["W"][0].shape == (model.classes, model.dim)
        assert state["H"].dtype == np.float64


@pytest.mark.parametrize("index", range(8))
def test_a_run_follows_the_same_path_inside_a_mixed_batch_as_alone(mixed, index):
    """Each run's trajectory rows, run-table values and final state are those of the same
    spec simulated alone: a batch keeps every run's decays, time scales, init, step sizes and
    status apart. float64 runs agree to 1e-12 relative (the same steps; only the order of
    reductions over the batch may differ, a few ulps per step); float32 runs to 1e-6 (a few
    of their ulps)."""
    specs, result = mixed
    spec, rid = specs[index], result.runs["run_id"].iloc[index]
    columns = ["status", "steps", "rejected_steps", "t_final", "onset_time",
               *[f"final_{q}" for q in sim.RECORDED], "grad_norm_final"]
    alone = sim.simulate(spec, theory=False)
    rtol = 1e-12 if spec.solver.dtype == "float64" else 1e-6
    mine = _rows_of(result.trajectories, rid)
    assert len(mine) == spec.solver.records
    pd.testing.assert_frame_equal(mine, alone.trajectories.drop(columns="run_id"),
                                  check_exact=False, rtol=rtol, atol=1e-300)
    row = result.runs.set_index("run_id").loc[rid, columns]
    ref = alone.runs.iloc[0][columns]
    assert row["status"] == ref["status"]
    assert (row["steps"], row["rejected_steps"]) == (ref["steps"], ref["rejected_steps"])
    np.testing.assert_allclose(row.drop("status").to_numpy(float),
                               ref.drop("status").to_numpy(float), rtol=rtol, atol=0)
    for key in ("H", "b"):
        a, b = result.final_state(rid)[key], alone.final_state(alone.runs["run_id"][0])[key]
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-14)
    np.testing.assert_allclose(result.final_state(rid)["W"][0],
                               alone.final_state(alone.runs["run_id"][0])["W"][0],
                               rtol=rtol, atol=1e-14)


# ------------------------------------------------------------------------------------------
# explicit Euler against the reference objective
# ------------------------------------------------------------------------------------------


def _euler(obj: Objective, theta: np.ndarray, eta: np.ndarray, dt: float, steps: int
           ) -> np.ndarray:
    """``steps`` steps theta <- theta - dt eta * grad f(theta) of the reference objective."""
    for _ in range(steps):
        theta = theta - dt * eta * obj(theta)[1]
    return theta


def _flat(state: dict) -> np.ndarray:
    parts = [state["H"].ravel(), *(w.ravel() for w in state["W"])]
    return np.concatenate(parts + ([state["b"]] if state["b"] is not None else []))


DEEP_SCALES = [TimeScale(eta_h=2.0, eta_w=(1.5, 0.5), eta_b=3.0),
               TimeScale(eta_w=(2.0, 1.0)), TimeScale(eta_b=4.0)]


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("scale", DEEP_SCALES, ids=["all", "w-only", "b-only"])
def test_gd_on_a_deep_model_is_euler_on_the_reference_objective(loss, scale):
    """``method="gd"`` with step dt takes explicit Euler steps theta <- theta - dt eta grad f:
    a two-layer linear model with a regularised bias, decays that differ by layer and time
    scales that differ by block, integrated in one batch with a run of other decays and time
    scales, ends where 20 numpy Euler steps on the reference objective (its own gradient)
    end, to rounding (1e-13 on entries of order 1). Its final objective, data loss, fn and
    |grad f| (the unscaled gradient) are the reference's at that point."""
    K, n, d, m = 3, 2, 4, 5
    rng = np.random.default_rng(1)
    H, W1 = 0.5 * rng.normal(size=(d, K * n)), 0.5 * rng.normal(size=(m, d))
    W2, b = 0.5 * rng.normal(size=(K, m)), 0.3 * rng.normal(size=K)
    lams, lh, lb, dt, steps = (0.02, 0.07), 0.03, 0.05, 0.05, 20
    model = ModelSpec(kind="deep", loss=loss, bias="reg", classes=K, per_class=n, dim=d,
                      depth=2, width=m, activation="linear")
    target = RunSpec(model=model, reg=Regularization(lambda_w=lams, lambda_h=lh, lambda_b=lb),
                     init=InitSpec(kind="arrays", arrays={"H": H, "W": [W1, W2], "b": b}),
                     time_scale=scale,
                     solver=SolverSpec(method="gd", dt=dt, t_end=dt * steps, records=5, gtol=0))
    other = target.replace(reg=Regularization(lambda_w=(0.1, 0.0), lambda_h=0.2, lambda_b=0.1),
                           init=InitSpec(kind="arrays",
                                         arrays={"H": -H, "W": [W1, 2 * W2], "b": 0 * b}),
                           time_scale=TimeScale(eta_h=0.5, eta_w=(1.0, 3.0), eta_b=1.0))
    result = sim.simulate([other, target], theory=False)
    obj = Objective(loss, "reg", (n,) * K, d, lams, lh, lb, width=m)
    theta0 = np.concatenate([H.ravel(), W1.ravel(), W2.ravel(), b])
    eta = np.concatenate([np.full(H.size, scale.eta_h), np.full(W1.size, scale.per_layer(2)[0]),
                          np.full(W2.size, scale.per_layer(2)[1]), np.full(K, scale.eta_b)])
    want = _euler(obj, theta0, eta, dt, steps)
    rid = result.runs["run_id"].iloc[1]
    np.testing.assert_allclose(_flat(result.final_state(rid)), want, rtol=0, atol=1e-13)
    row = result.runs.iloc[1]
    f, grad = obj(want)
    stats = obj.stats(want)
    assert row["steps"] == steps and row["t_final"] == dt * steps
    np.testing.assert_allclose([row["final_objective"], row["final_loss"], row["final_fn"],
                                row["grad_norm_final"]],
                               [f, stats["loss"], stats["fn"], np.linalg.norm(grad)],
                               rtol=1e-13)
    start = result.trajectories[result.trajectories["run_id"] == rid].iloc[0]
    assert start["time"] == 0.0
    np.testing.assert_allclose(start["objective"], obj(theta0)[0], rtol=1e-14)


@pytest.mark.parametrize("scale", [TimeScale(eta_h=2.0, eta_w=0.5, eta_b=3.0),
                                   TimeScale(eta_b=3.0), TimeScale(eta_w=0.5),
                                   TimeScale(eta_h=2.0)], ids=["all", "b", "w", "h"])
def test_gd_in_the_class_means_form_is_euler_on_the_parameters(scale):
    """The class-means form of the one-layer MSE UFM is linear in the deviations from the
    class means, so its Euler steps are those of the parameters exactly: with time scales
    on any block, alone or in a batch with a run of other time scales, both forms end where
    numpy Euler steps on the reference objective end, to rounding."""
    K, n, d = 3, 10, 2
    rng = np.random.default_rng(2)
    H, W, b = 0.5 * rng.normal(size=(d, K * n)), 0.5 * rng.normal(size=(K, d)), \
        0.3 * rng.normal(size=K)
    lw, lh, lb, dt, steps = 0.02, 0.03, 0.05, 0.05, 20
    model = _ufm("mse", classes=K, per_class=n, dim=d, bias="reg")

    def spec(reduction: str, ts: TimeScale, sign: float = 1.0) -> RunSpec:
        return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                       init=InitSpec(kind="arrays",
                                     arrays={"H": sign * H, "W": [W], "b": b}),
                       time_scale=ts, solver=SolverSpec(method="gd", dt=dt, t_end=dt * steps,
                                                        records=5, gtol=0,
                                                        reduction=reduction))

    other = TimeScale(eta_h=0.7, eta_w=1.3, eta_b=1.0)
    mixed = sim.simulate([spec("classes", other, -1.0), spec("classes", scale),
                          spec("none", scale)], theory=False)
    alone = sim.simulate(spec("classes", scale), theory=False)
    obj = Objective("mse", "reg", (n,) * K, d, (lw,), lh, lb)
    eta = np.concatenate([np.full(H.size, scale.eta_h), np.full(W.size, scale.eta_w),
                          np.full(K, scale.eta_b)])
    want = _euler(obj, np.concatenate([H.ravel(), W.ravel(), b]), eta, dt, steps)
    for result, i in ((mixed, 1), (mixed, 2), (alone, 0)):
        rid = result.runs["run_id"].iloc[i]
        np.testing.assert_allclose(_flat(result.final_state(rid)), want, rtol=0, atol=1e-14)
        np.testing.assert_allclose(result.runs["grad_norm_final"].iloc[i],
                                   np.linalg.norm(obj(want)[1]), rtol=1e-13)


# ------------------------------------------------------------------------------------------
# record times
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_first", [None, 0.5])
def test_record_times_run_from_zero_to_t_end_log_spaced(t_first):
    """A run that reaches t_end has one row per record: t = 0, then ``records - 1`` times with
    a constant ratio from t_first (default min(1e-2, t_end / 10)) to t_end, the last exactly
    t_end (the run's t_final); the same times for both runs of a batch of other steps."""
    t_end, records = 40.0, 12
    first = 1e-2 if t_first is None else t_first
    specs = [_spec(_ufm("ce"), seed=s, t_end=t_end, records=records, t_first=t_first)
             for s in (0, 1)]
    result = sim.simulate(specs, theory=False)
    ratio = (t_end / first) ** (1.0 / (records - 2))
    for rid in result.runs["run_id"]:
        times = _rows_of(result.trajectories, rid)["time"].to_numpy()
        assert len(times) == records and times[0] == 0.0
        assert times[1] == pytest.approx(first, rel=1e-14)
        assert times[-1] == t_end
        np.testing.assert_allclose(times[2:] / times[1:-1], ratio, rtol=1e-12)
    assert list(result.runs["t_final"]) == [t_end, t_end]
    assert list(result.runs["steps"]) != [0, 0]


def test_a_run_stopped_early_has_the_record_times_before_its_stop_only():
    """A run stopped by ``max_steps`` keeps the records up to its final time and no row
    after it; its final_* columns are the metrics at its final state (not NaN, not the last
    record's)."""
    specs = [_spec(_ufm("ce"), seed=0, records=30),
             _spec(_ufm("ce"), seed=0, records=30, max_steps=12)]
    result = sim.simulate(specs, theory=False)
    full = _rows_of(result.trajectories, result.runs["run_id"].iloc[0])
    cut = _rows_of(result.trajectories, result.runs["run_id"].iloc[1])
    row = result.runs.iloc[1]
    assert row["status"] == "max_steps" and row["t_final"] < 40.0
    assert list(cut["time"]) == [t for t in full["time"] if t <= row["t_final"]]
    assert 1 < len(cut) < len(full)
    state = result.final_state(row["run_id"])
    values = _metrics_of(state, specs[1].model)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(row[f"final_{name}"], values[name], rtol=1e-12)
    assert row["final_fn"] != cut["fn"].iloc[-1]


def _metrics_of(state: dict, model: ModelSpec) -> dict[str, float]:
    """Every NC metric of a final state, from :func:`ncsim.metrics.nc_metrics` on (H, W, b)."""
    labels = torch.repeat_interleave(torch.arange(model.classes), model.per_class)
    feats = torch.from_numpy(state["H"].T.copy())[None]
    weights = torch.from_numpy(state["W"][-1].copy())[None]
    bias = None if state["b"] is None else torch.from_numpy(state["b"].copy())[None]
    out = nc_metrics(feats, labels, model.classes, weights, bias)
    return {k: float(v[0]) for k, v in out.items()}


# ------------------------------------------------------------------------------------------
# summary columns against ncsim.onset and ncsim.metrics
# ------------------------------------------------------------------------------------------


ONSETS = [OnsetSpec(), OnsetSpec(metric="nc1", threshold=0.05, stay=3, interpolate=False),
          OnsetSpec(metric="cdnv", threshold=0.05, stay=2)]


@pytest.fixture(scope="module")
def collapsing():
    """CE runs that collapse before t_end, each with its own onset rule (one batch each),
    in one call."""
    model = _ufm("ce", classes=3, per_class=4, dim=6)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=1e-2, lambda_h=1e-2),
                     init=InitSpec(scale=0.5, seed=i), onset=onset,
                     solver=SolverSpec(t_end=300.0, records=20))
             for i, onset in enumerate(ONSETS)]
    return specs, sim.simulate(specs, theory=False)


def test_onset_columns_are_the_onset_rule_applied_to_the_trajectory(collapsing):
    """onset_time and fn_at_onset of each run equal :func:`ncsim.onset.onset_and_fn` on its
    own trajectory rows, with its own onset metric, threshold, stay and interpolation; the
    rules differ enough that the onsets differ."""
    specs, result = collapsing
    for spec, (_, row) in zip(specs, result.runs.iterrows()):
        rows = _rows_of(result.trajectories, row["run_id"])
        o = spec.onset
        when, fn = onset_and_fn(rows["time"].to_numpy(), rows[o.metric].to_numpy(),
                                rows["fn"].to_numpy(), o.threshold, o.stay, o.interpolate)
        assert row["status"] == "ok" and math.isfinite(when)
        assert (row["onset_time"], row["fn_at_onset"]) == (when, fn)
        if not o.interpolate:
            assert when in set(rows["time"])
    assert result.runs["onset_time"].nunique() == len(specs)


def test_final_columns_are_the_metrics_of_the_final_state(collapsing):
    """final_<metric> is :func:`ncsim.metrics.nc_metrics` of the run's final (H, W); final_loss
    and final_objective the reference objective's; at t_end they are the last trajectory
    row's values."""
    specs, result = collapsing
    for spec, (_, row) in zip(specs, result.runs.iterrows()):
        state = result.final_state(row["run_id"])
        values = _metrics_of(state, spec.model)
        got = [row[f"final_{name}"] for name in METRIC_NAMES]
        np.testing.assert_allclose(got, [values[name] for name in METRIC_NAMES], rtol=1e-12)
        obj = Objective("ce", "none", (4,) * 3, 6, (spec.reg.lambda_w,), spec.reg.lambda_h)
        f = obj(_flat(state))[0]
        np.testing.assert_allclose([row["final_objective"], row["final_loss"]],
                                   [f, obj.stats(_flat(state))["loss"]], rtol=1e-12)
        last = _rows_of(result.trajectories, row["run_id"]).iloc[-1]
        assert last["time"] == row["t_final"] == spec.solver.t_end
        # two evaluations of one state: metrics near collapse are differences of O(1) terms,
        # so their rounding is ~1e-16 absolute, whatever their size
        np.testing.assert_allclose(last[list(sim.RECORDED)].to_numpy(float),
                                   [row[f"final_{q}"] for q in sim.RECORDED], rtol=1e-12,
                                   atol=1e-15)


# ------------------------------------------------------------------------------------------
# status rules
# ------------------------------------------------------------------------------------------


def test_status_precedence_over_every_combination():
    """The status is the first that applies of: diverged (the integrator's code, or an
    objective that ended above its start), stalled, vanishing, ok (an onset), max_steps,
    not_collapsed. Checked over every combination of code, onset, vanishing and rise."""
    integ = importlib.import_module("ncsim.flow.integrate")
    codes = [integ.DONE, integ.STEADY, integ.MAX_STEPS, integ.DIVERGED, integ.STALLED]
    for code in codes:
        for onset in (False, True):
            for vanishing in (False, True):
                for rose in (False, True):
                    if code == integ.DIVERGED or rose:
                        want = "diverged"
                    elif code == integ.STALLED:
                        want = "stalled"
                    elif vanishing:
                        want = "vanishing"
                    elif onset:
                        want = "ok"
                    elif code == integ.MAX_STEPS:
                        want = "max_steps"
                    else:
                        want = "not_collapsed"
                    assert sim._status(code, onset, vanishing, rose) == want, \
                        (code, onset, vanishing, rose)


def test_an_objective_that_rose_over_its_run_marks_it_diverged():
    """One gradient-descent step past the stability limit leaves the state finite (the
    integrator does not stop it) but the objective above its start: such a run is
    diverged exactly when its final objective exceeds the start by more than 1e-3 of it
    (a gradient flow never raises it). Steps 1.50 .. 1.56 fall and rise on either side."""
    model = _ufm("mse", classes=3, per_class=2, dim=4)
    specs = [RunSpec(model=model, init=InitSpec(scale=1.0),
                     solver=SolverSpec(method="gd", dt=dt, t_end=dt, records=2))
             for dt in (1.50, 1.51, 1.52, 1.53, 1.54, 1.56)]
    result = sim.simulate(specs, theory=False)
    start = result.trajectories.groupby("run_id", sort=False)["objective"].first()
    rose = result.runs["final_objective"].to_numpy() > 1.001 * start.to_numpy()
    assert rose.any() and not rose.all()
    assert list(result.runs["status"]) == ["diverged" if r else "not_collapsed" for r in rose]
    assert (result.runs["t_final"] == result.runs["solver_t_end"]).all()


def test_the_rise_tolerance_is_one_thousandth_of_the_start():
    assert not sim._objective_rose(2.0, 2.0 + 1.9e-3)
    assert sim._objective_rose(2.0, 2.0 + 2.1e-3)
    assert not sim._objective_rose(0.0, 1e-12) and sim._objective_rose(0.0, 2e-12)


def test_vanishing_uses_each_run_s_own_tolerance_and_drops_the_onset():
    """Above the weight-decay threshold fn decays to 0: with the default ``vanish_tol`` such
    a run is vanishing with no onset even though its onset metric crossed the threshold in
    the trajectory; the same run with ``vanish_tol=0`` in the same call is not vanishing and
    its onset is that of the trajectory. A run that stays collapsed is ok under both."""
    model = _ufm("mse", classes=3, per_class=4, dim=6)
    big = dict(lambda_w=1.0, lambda_h=1.0, t_end=40.0, records=15)
    specs = [_spec(model, seed=0, **big), _spec(model, seed=0, vanish_tol=0.0, **big)]
    result = sim.simulate(specs, theory=False)
    runs = result.runs
    first = _rows_of(result.trajectories, runs["run_id"].iloc[0])
    assert is_vanishing(first["fn"].to_numpy(), 1e-3)
    when, fn = onset_and_fn(first["time"].to_numpy(), first["nc1_trace"].to_numpy(),
                            first["fn"].to_numpy(), 0.01)
    assert math.isfinite(when)  # the metric crossed while every norm vanished
    assert runs["status"].iloc[0] == "vanishing"
    assert math.isnan(runs["onset_time"].iloc[0]) and math.isnan(runs["fn_at_onset"].iloc[0])
    assert runs["status"].iloc[1] == "ok"
    assert (runs["onset_time"].iloc[1], runs["fn_at_onset"].iloc[1]) == (when, fn)


# ------------------------------------------------------------------------------------------
# run ids, repeated specs, bad input
# ------------------------------------------------------------------------------------------


def test_an_arrays_init_id_depends_on_every_matrix_of_its_weight_list():
    """Two deep runs that start from the same H and first layer but another last layer are
    different runs: their ids differ (every matrix of a ``W`` list is hashed), while a copy
    of the same arrays gives the same id."""
    model = ModelSpec(kind="deep", loss="mse", classes=3, per_class=2, dim=4, depth=2,
                      width=5, activation="linear")
    rng = np.random.default_rng(0)
    H, W1, W2 = rng.normal(size=(4, 6)), rng.normal(size=(5, 4)), rng.normal(size=(3, 5))

    def spec(arrays: dict) -> RunSpec:
        return RunSpec(model=model, init=InitSpec(kind="arrays", arrays=arrays))

    base = sim.run_id(spec({"H": H, "W": [W1, W2]}))
    assert sim.run_id(spec({"H": H.copy(), "W": [W1.copy(), W2.copy()]})) == base
    assert sim.run_id(spec({"H": H, "W": [W1, W2 + 1e-9]})) != base
    assert sim.run_id(spec({"H": H, "W": [W1 + 1e-9, W2]})) != base
    assert sim.run_id(spec({"H": H + 1e-9, "W": [W1, W2]})) != base


def test_repeated_specs_get_numbered_ids_and_their_own_equal_rows():
    """A spec given three times (between others) gets its id, then ``-1`` and ``-2`` in input
    order; each copy has its own trajectory rows and final state, equal to the first's."""
    a, b = _spec(_ufm("ce"), seed=0, t_end=5.0, records=6), \
        _spec(_ufm("ce"), seed=1, t_end=5.0, records=6)
    result = sim.simulate([a, b, a, a], theory=False)
    ids = list(result.runs["run_id"])
    base = sim.run_id(a)
    assert ids == [base, sim.run_id(b), f"{base}-1", f"{base}-2"]
    first = _rows_of(result.trajectories, base)
    assert len(first) == 6 and len(result.trajectories) == 24
    for rid in ids[2:]:
        pd.testing.assert_frame_equal(_rows_of(result.trajectories, rid), first,
                                      check_exact=False, rtol=1e-14, atol=0)
        np.testing.assert_allclose(result.final_state(rid)["H"], result.final_state(base)["H"],
                                   rtol=1e-14)
    assert list(result.final_states) == ids


@pytest.mark.parametrize("specs", [[], ()], ids=["list", "tuple"])
def test_an_empty_list_of_runs_is_refused(specs):
    with pytest.raises(InputError, match="empty list of runs"):
        sim.simulate(specs, theory=False)


def test_a_generator_of_specs_and_a_single_spec_are_accepted():
    spec = _spec(_ufm("ce"), seed=0, t_end=2.0, records=3)
    one = sim.simulate(spec, theory=False)
    many = sim.simulate((s for s in [spec, spec]), theory=False)
    assert list(one.runs["run_id"]) == [sim.run_id(spec)]
    assert list(many.runs["run_id"]) == [sim.run_id(spec), f"{sim.run_id(spec)}-1"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_on_a_missing_device_refuses_the_whole_call(monkeypatch):
    """A list that mixes a CPU run with a run on an absent CUDA device is refused with an
    InputError before anything is integrated."""
    calls = []
    monkeypatch.setattr(sim, "integrate", lambda *a, **k: calls.append(1))
    good = _spec(_ufm("ce"), seed=0, t_end=2.0, records=3)
    bad = dataclasses.replace(good, solver=dataclasses.replace(good.solver, device="cuda"))
    with pytest.raises(InputError, match="cuda"):
        sim.simulate([good, bad], theory=False)
    assert calls == []


# ------------------------------------------------------------------------------------------
# final states
# ------------------------------------------------------------------------------------------


def test_final_states_of_interleaved_batches_belong_to_their_runs():
    """Runs of two structures given alternately (two batches): each run's final state is the
    one it reaches alone (its own shapes and values)."""
    specs = [_spec(_ufm("ce" if i % 2 else "mse", dim=6 + i % 2), seed=i, t_end=5.0,
                   records=4) for i in range(4)]
    result = sim.simulate(specs, theory=False)
    for spec, rid in zip(specs, result.runs["run_id"]):
        alone = sim.simulate(spec, theory=False)
        want = alone.final_state(alone.runs["run_id"][0])
        got = result.final_state(rid)
        assert got["H"].shape == (spec.model.dim, 12)
        np.testing.assert_allclose(got["H"], want["H"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got["W"][0], want["W"][0], rtol=1e-12, atol=1e-14)


def test_gram_final_states_hold_each_run_s_own_inner_products():
    """In the Gram form each run's blocks satisfy Z = W H, A = W W^T, B = H^T H for its own
    representative (H, W), and agree with the same runs integrated on the parameters."""
    model = _ufm("ce", classes=3, per_class=2, dim=10)
    specs = [_spec(model, seed=s, lambda_w=lw, t_end=10.0, records=4, rtol=1e-11, atol=1e-13,
                   reduction=form) for form in ("gram", "none") for s, lw in ((0, 1e-2),
                                                                               (1, 3e-2))]
    result = sim.simulate(specs, theory=False)
    ids = list(result.runs["run_id"])
    for k in (0, 1):
        gram, plain = result.final_state(ids[k]), result.final_state(ids[k + 2])
        h, w = gram["H"], gram["W"][0]
        np.testing.assert_allclose(gram["Z"], w @ h, atol=1e-12)
        np.testing.assert_allclose(gram["A"], w @ w.T, atol=1e-12)
        np.testing.assert_allclose(gram["B"], h.T @ h, atol=1e-12)
        hp, wp = plain["H"], plain["W"][0]
        np.testing.assert_allclose(gram["Z"], wp @ hp, atol=1e-8)
        np.testing.assert_allclose(gram["B"], hp.T @ hp, atol=1e-8)
    assert not np.allclose(result.final_state(ids[0])["Z"], result.final_state(ids[1])["Z"])


def test_deep_final_states_give_every_layer():
    """A deep run's final state lists every layer (shapes (m, d) and (K, m)); continuing it
    from that state for t more equals running it for t more at once (to 1e-9)."""
    model = ModelSpec(kind="deep", loss="mse", classes=3, per_class=2, dim=4, depth=2,
                      width=5, activation="linear")
    spec = RunSpec(model=model, reg=Regularization(lambda_w=(1e-2, 2e-2), lambda_h=1e-2),
                   init=InitSpec(scale=0.5, seed=3),
                   solver=SolverSpec(method="gd", dt=0.1, t_end=2.0, records=3, gtol=0))
    longer = spec.replace(solver=dataclasses.replace(spec.solver, t_end=4.0))
    half = sim.simulate(spec, theory=False)
    state = half.final_state(half.runs["run_id"][0])
    assert [w.shape for w in state["W"]] == [(5, 4), (3, 5)]
    again = sim.simulate(spec.replace(init=InitSpec(kind="arrays", arrays=state)),
                         theory=False)
    whole = sim.simulate(longer, theory=False)
    a = again.final_state(again.runs["run_id"][0])
    b = whole.final_state(whole.runs["run_id"][0])
    for x, y in zip([a["H"], *a["W"]], [b["H"], *b["W"]]):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# rows with missing quantities, stops between records, step counts, the theory hook
# ------------------------------------------------------------------------------------------


def test_a_start_at_the_origin_keeps_its_row_with_undefined_metrics():
    """An MSE UFM started at H = 0, W = 0 sits at a stationary point: its t = 0 row has the
    loss of zero logits, (1/2N) sum |y_i|^2 = 1/2, fn = 0 and NaN for the metrics that divide
    by a spread; the row is kept (a row is dropped only when every quantity is missing)."""
    model = _ufm("mse", classes=3, per_class=2, dim=4)
    spec = RunSpec(model=model, init=InitSpec(kind="arrays", arrays={
        "H": np.zeros((4, 6)), "W": [np.zeros((3, 4))]}), solver=SolverSpec(t_end=5.0,
                                                                              records=4))
    result = sim.simulate(spec, theory=False)
    rows = result.trajectories
    assert len(rows) >= 1 and rows["time"].iloc[0] == 0.0
    assert rows["loss"].iloc[0] == 0.5 and rows["fn"].iloc[0] == 0.0
    assert rows[["nc1", "nc1_trace"]].iloc[0].isna().all()
    assert result.runs["final_loss"].iloc[0] == 0.5


def test_a_run_stopped_between_records_is_judged_vanishing_by_its_final_state():
    """Records at t = 0, 0.01 and t_end only: a run above the weight-decay threshold stopped
    by ``max_steps`` long after the second record has no record of its vanished norms, but
    its final fn (below 1e-3 of the largest) makes it vanishing, as the rule reads the final
    state with the records."""
    model = _ufm("mse", classes=3, per_class=4, dim=6)
    spec = RunSpec(model=model, reg=Regularization(lambda_w=1.0, lambda_h=1.0),
                   init=InitSpec(scale=0.3, seed=0),
                   solver=SolverSpec(t_end=40.0, records=3, max_steps=80))
    result = sim.simulate(spec, theory=False)
    row, rows = result.runs.iloc[0], result.trajectories
    assert row["t_final"] < 40.0 and len(rows) == 2
    assert not is_vanishing(rows["fn"].to_numpy())
    assert row["final_fn"] < 1e-3 * rows["fn"].max()
    assert row["status"] == "vanishing"


def test_a_run_cut_by_max_steps_counts_every_attempt_once():
    """``max_steps`` caps the step attempts, accepted and rejected alike: a run cut there
    after some rejected steps has steps + rejected_steps == max_steps."""
    model = _ufm("ce", classes=3, per_class=4, dim=6)
    spec = RunSpec(model=model, reg=Regularization(lambda_w=1.0, lambda_h=1.0),
                   init=InitSpec(scale=0.3, seed=3),
                   solver=SolverSpec(t_end=200.0, records=3, max_steps=100))
    row = sim.simulate(spec, theory=False).runs.iloc[0]
    assert row["t_final"] < 200.0 and row["rejected_steps"] > 0
    assert row["steps"] + row["rejected_steps"] == 100


def test_theory_columns_are_each_run_s_own(monkeypatch):
    """The theory hook is called with each run's own spec (here a stand-in that returns the
    run's lambda_w and seed), in every batch; without ``theory`` no such column appears."""
    seen = []

    def columns(spec: RunSpec) -> dict:
        seen.append(spec)
        return {"fn_star_theory": spec.reg.lambda_w, "onset_time_theory": spec.init.seed}

    monkeypatch.setattr(sim, "_theory_columns", columns)
    specs = [_spec(_ufm("ce" if i % 2 else "mse"), seed=i, lambda_w=1e-3 * (i + 1),
                   t_end=1.0, records=3) for i in range(4)]
    runs = sim.simulate(specs).runs
    assert list(runs["fn_star_theory"]) == [1e-3 * (i + 1) for i in range(4)]
    assert list(runs["onset_time_theory"]) == [0, 1, 2, 3]
    assert sorted(seen, key=lambda s: s.init.seed) == specs
    assert "fn_star_theory" not in sim.simulate(specs[0], theory=False).runs


# ------------------------------------------------------------------------------------------
# the grid axes of a run table and the written figure
# ------------------------------------------------------------------------------------------


def test_the_written_figure_is_labelled_by_the_first_varying_axis(tmp_path, monkeypatch):
    """``write_simulation`` colours the figure by the first grid axis that varies, in the
    order of AXIS_COLUMNS (README: K, n, d, ..., lambda_w, lambda_h, ..., seed, ...): here
    lambda_w, before the seed that varies too."""
    plots = importlib.import_module("ncsim.plots")
    from ncsim.results import write_simulation

    labels = []
    original = plots.trajectory_figure

    def capture(*args, **kwargs):
        labels.append(kwargs.get("label_column"))
        return original(*args, **kwargs)

    def save(fig, path):  # the figure's pixels are not what is checked here
        plots.plt.close(fig)
        Path(path).touch()

    monkeypatch.setattr(plots, "trajectory_figure", capture)
    monkeypatch.setattr(plots, "save_figure", save)
    specs = [_spec(_ufm("ce"), seed=s, lambda_w=lw, t_end=1.0, records=3)
             for s, lw in ((0, 1e-2), (1, 2e-2))]
    write_simulation(sim.simulate(specs, theory=False), tmp_path, "csv", specs)
    assert labels == ["lambda_w"]
    assert (tmp_path / "trajectories.png").is_file()


# ------------------------------------------------------------------------------------------
# the onset rule's stay
# ------------------------------------------------------------------------------------------


def test_an_onset_needs_stay_records_below_the_threshold():
    """nc1 of this run falls monotonically; with the threshold just above its second-to-last
    record only the last two records are below it: ``stay=2`` finds the onset at the
    second-to-last record (no interpolation), ``stay=3`` finds none (not_collapsed), as
    :func:`ncsim.onset.onset_and_fn` on the trajectory does. The onset rule does not change
    the trajectory."""
    base = _spec(_ufm("ce"), seed=0, t_end=40.0, records=10)
    first = sim.simulate(base, theory=False).trajectories
    nc1 = first["nc1"].to_numpy()
    assert np.all(np.diff(nc1) < 0)
    threshold = 1.01 * nc1[-2]
    assert nc1[-3] > threshold
    specs = [base.replace(onset=OnsetSpec(metric="nc1", threshold=threshold, stay=stay,
                                          interpolate=False)) for stay in (2, 3)]
    result = sim.simulate(specs, theory=False)
    runs = result.runs
    assert runs["onset_time"].iloc[0] == first["time"].iloc[-2]
    assert runs["fn_at_onset"].iloc[0] == first["fn"].iloc[-2]
    assert list(runs["status"]) == ["ok", "not_collapsed"]
    assert math.isnan(runs["onset_time"].iloc[1])
    whens = []
    for rid, stay in zip(runs["run_id"], (2, 3)):
        rows = _rows_of(result.trajectories, rid)
        pd.testing.assert_frame_equal(rows, first.drop(columns="run_id"))
        whens.append(onset_and_fn(rows["time"], rows["nc1"], rows["fn"], threshold, stay,
                                  False)[0])
    assert whens[0] == runs["onset_time"].iloc[0] and math.isnan(whens[1])


def test_an_axis_unset_for_some_runs_is_varying():
    """t_first given for one run and left unset (None) for another: the column varies (pandas
    3 keeps None missing under astype(str), and nunique left it out, so no axis was found and
    the figure had no label column); unset for both, it does not vary."""
    from ncsim.results import varying_columns

    base = _spec(_ufm())
    other = base.replace(solver=dataclasses.replace(base.solver, t_first=0.5))
    runs = pd.DataFrame([base.to_row(), other.to_row()])
    assert varying_columns(runs) == ["solver_t_first"]
    assert varying_columns(pd.DataFrame([base.to_row(), base.to_row()])) == []


def test_an_arrays_init_with_b_none_is_the_same_run_as_one_without_b():
    """final_state() of a model without bias gives "b": None, documented as ready for an
    arrays init: that init is the same run as the one without the key (one run id, so one
    resume key), while another bias would be a different one."""
    spec = _spec(_ufm())
    state = sim.simulate([spec]).final_state(sim.run_id(spec))
    assert state["b"] is None
    with_b = spec.replace(init=InitSpec(kind="arrays", arrays=dict(state)))
    without = spec.replace(init=InitSpec(kind="arrays", arrays={"H": state["H"],
                                                                  "W": state["W"]}))
    assert sim.run_id(with_b) == sim.run_id(without)
    assert sim.run_id(without) != sim.run_id(spec)


def test_a_final_state_build_that_failed_raises_its_own_error_again():
    """A batch whose final-state build fails raises that error again on the next access (the
    builder was dropped before it finished, and the next access raised "'NoneType' object is
    not callable"); once it succeeds it is built once."""
    states = sim.FinalStates()
    calls: list[str] = []
    failing = [True]

    def build() -> list[dict]:
        calls.append("build")
        if failing[0]:
            raise MemoryError("no room for the blocks")
        return [{"H": np.zeros(1)}]

    states.add(["r"], build)
    for _ in range(2):
        with pytest.raises(MemoryError, match="no room"):
            states["r"]
    failing[0] = False
    assert states["r"]["H"].tolist() == [0.0] and states["r"]["H"].tolist() == [0.0]
    assert len(calls) == 3
