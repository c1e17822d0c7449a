"""The run and trajectory tables of ``simulate`` and its lazily built final states: the
vectorised table against a per-run reference, input order across batches, and final states
built once per batch, only when asked for."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pandas as pd
import pytest

from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

sim = importlib.import_module("ncsim.flow.simulate")
Q = len(sim.RECORDED)


def _reference_frame(ids, times, records) -> pd.DataFrame:
    """The trajectory table built run by run, as a plain loop would."""
    frames = []
    for rid, series in zip(ids, records):
        keep = np.isfinite(series).any(axis=1)
        frame = pd.DataFrame(series[keep], columns=list(sim.RECORDED))
        frame.insert(0, "run_id", rid)
        frame.insert(1, "time", times[keep])
        frame.insert(2, "time_unit", "t")
        frame.insert(3, "phase", 0)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_trajectory_frame_equals_the_per_run_reference():
    rng = np.random.default_rng(0)
    runs, count = 7, 30
    times = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, count - 1)])
    records = rng.standard_normal((runs, count, Q))
    records[1, 12:] = np.nan  # a run that stopped early
    records[3, 5, :4] = np.nan  # a row with some quantities missing is kept
    records[4, 7] = np.nan  # a gap
    records[6] = np.nan  # a run with no row at all
    ids = [f"run{i}" for i in range(runs)]
    got, _ = sim._trajectory_frame(ids, times, records)
    pd.testing.assert_frame_equal(got, _reference_frame(ids, times, records), check_exact=True)
    assert len(got) == 5 * count + 12 - 1
    assert "run6" not in set(got["run_id"])


def test_batches_come_back_in_input_order():
    tables = [pd.DataFrame({"run_id": ["b", "b", "d"], "time": [0.0, 1.0, 0.0]}),
              pd.DataFrame({"run_id": ["a", "c", "c"], "time": [0.0, 0.0, 1.0]})]
    positions = [np.array([1, 1, 3]), np.array([0, 2, 2])]
    got = sim._in_input_order(tables, positions)
    assert list(got["run_id"]) == ["a", "b", "b", "c", "c", "d"]
    assert list(got["time"]) == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert list(got.index) == list(range(6))


def _spec(loss: str, seed: int, **solver) -> RunSpec:
    model = ModelSpec(kind="ufm", loss=loss, bias="none", classes=3, per_class=4, dim=6)
    return RunSpec(model=model, reg=Regularization(lambda_w=1e-2 * (seed + 1), lambda_h=1e-2),
                   init=InitSpec(scale=0.3, seed=seed),
                   solver=SolverSpec(t_end=40.0, records=25, **solver))


def test_interleaved_batches_give_each_run_its_own_rows_in_input_order():
    """Runs of two structures (two batches) given alternately, one of them stopped early:
    each run's rows are those of the run simulated alone, and the table is in input order."""
    specs = [_spec("ce" if i % 2 else "mse", i) for i in range(5)]
    specs[3] = dataclasses.replace(specs[3], solver=dataclasses.replace(specs[3].solver,
                                                                        max_steps=12))
    result = sim.simulate(specs, theory=False)
    table = result.trajectories
    ids = list(result.runs["run_id"])
    counts = [int((table["run_id"] == rid).sum()) for rid in ids]
    assert list(table["run_id"]) == list(np.repeat(ids, counts))  # contiguous, input order
    assert result.runs["status"].iloc[3] == "max_steps"
    for spec, rid in zip(specs, ids):
        mine = table[table["run_id"] == rid].drop(columns="run_id").reset_index(drop=True)
        alone = sim.simulate(spec, theory=False).trajectories.drop(columns="run_id")
        assert np.all(np.diff(mine["time"].to_numpy()) > 0)
        pd.testing.assert_frame_equal(mine, alone, check_exact=False, rtol=1e-12, atol=0)
    assert table["run_id"].iloc[-1] == ids[-1]
    assert (table["run_id"] == ids[3]).sum() < 25


def test_final_states_are_built_once_per_batch_when_asked_for():
    calls = []

    def builder(name, ids):
        def build():
            calls.append(name)
            return [{"H": np.full(2, k)} for k in range(len(ids))]
        return build

    states = sim.FinalStates()
    states.add(["a", "b"], builder("first", ["a", "b"]))
    states.add(["c"], builder("second", ["c"]))
    assert calls == [] and len(states) == 3 and list(states) == ["a", "b", "c"]
    assert "a" in states and "unknown" not in states and calls == []
    assert states["b"]["H"][0] == 1 and calls == ["first"]
    assert states._builders[0] is None  # what the builder held is released
    assert states["a"]["H"][0] == 0 and calls == ["first"]
    assert states["c"]["H"][0] == 0 and calls == ["first", "second"]
    with pytest.raises(KeyError):
        states["unknown"]


def test_final_state_of_a_batch_is_its_flat_state():
    """The lazily built blocks are the integrated states, per run."""
    specs = [_spec("ce", i) for i in range(3)]
    result = sim.simulate(specs, theory=False)
    batch = sim._Batch(specs)
    flow = sim.integrate(batch.velocity, batch.y0, batch.solver, batch.record,
                         len(sim.RECORDED), eta=batch.eta, grad_norm=batch.grad_norm,
                         select=batch.select, error_scale=batch.error_scale)
    lay = batch.objective.layout
    for i, rid in enumerate(result.runs["run_id"]):
        blocks = result.final_state(rid)
        np.testing.assert_array_equal(blocks["H"], lay.view(flow.final_state, "H")[i].numpy())
        np.testing.assert_array_equal(blocks["W"][0],
                                      lay.view(flow.final_state, "W1")[i].numpy())
        assert blocks["b"] is None


def _reference_row(spec: RunSpec) -> dict:
    row = {}
    for part in ("model", "reg", "init", "time_scale", "solver", "onset"):
        value = getattr(spec, part)
        for f in dataclasses.fields(value):
            if f.name == "arrays":
                continue
            entry = getattr(value, f.name)
            if isinstance(entry, tuple):
                entry = ",".join(str(v) for v in entry)
            row[f.name if part in ("model", "reg") else f"{part}_{f.name}"] = entry
    return row


def test_run_table_row_equals_the_field_by_field_reference():
    """``to_row`` gives every field once, in order, tuples joined, init arrays left out;
    each spec its own values, of their own types."""
    from ncsim.spec import TimeScale

    model = ModelSpec(kind="deep", depth=2, activation="relu", classes=3, per_class=(2, 3, 2),
                      dim=4, width=5)
    arrays = {"H": np.zeros((4, 7)), "W": [np.zeros((5, 4)), np.zeros((3, 5))]}
    first = RunSpec(model=model, time_scale=TimeScale(eta_w=(1.0, 2.0)),
                    init=InitSpec(kind="arrays", arrays=arrays))
    second = first.replace(reg=Regularization(lambda_w=3e-3, lambda_h=4e-3),
                           init=InitSpec(seed=9, scale=0.2),
                           solver=dataclasses.replace(first.solver, t_end=1000),
                           time_scale=TimeScale(eta_h=2.0, eta_w=(1.0, 2.0)))
    third = second.replace(solver=dataclasses.replace(first.solver, t_end=1000.0))
    third_id = sim.run_id(third)  # before the int-valued spec below is seen
    for spec in (first, second, third, first):
        row = spec.to_row()
        assert row == _reference_row(spec)
        assert list(row) == list(_reference_row(spec))
    assert first.to_row()["per_class"] == "2,3,2"
    assert first.to_row()["time_scale_eta_w"] == "1.0,2.0"
    assert "init_arrays" not in first.to_row()
    assert (second.to_row()["lambda_w"], second.to_row()["init_seed"]) == (3e-3, 9)
    assert second.to_row()["time_scale_eta_h"] == 2.0
    # an int written for a float field is that float: equal specs, one row, one run id
    assert type(second.to_row()["solver_t_end"]) is float and second == third
    assert second.to_row() == third.to_row()
    assert sim.run_id(second) == sim.run_id(third) == third_id


def test_timings_split_the_call_into_its_phases():
    import time

    start = time.perf_counter()
    result = sim.simulate([_spec("ce", i) for i in range(3)], theory=False)
    wall = time.perf_counter() - start
    assert set(result.timings) == {"prepare_s", "integrate_s", "summarise_s"}
    assert all(v > 0 for v in result.timings.values())
    assert sum(result.timings.values()) <= wall
    assert result.timings["integrate_s"] > result.timings["prepare_s"]



def test_a_result_pickles_with_its_final_states():
    import pickle

    specs = [_spec("ce", i) for i in range(2)] + [_spec("mse", 5)]
    result = sim.simulate(specs, theory=False)
    copy = pickle.loads(pickle.dumps(result))
    pd.testing.assert_frame_equal(copy.runs, result.runs)
    pd.testing.assert_frame_equal(copy.trajectories, result.trajectories)
    assert copy.timings == result.timings and list(copy.final_states) == list(result.runs.run_id)
    for rid in result.runs["run_id"]:
        np.testing.assert_array_equal(copy.final_state(rid)["H"], result.final_state(rid)["H"])
        np.testing.assert_array_equal(copy.final_state(rid)["W"][0],
                                      result.final_state(rid)["W"][0])
