"""Mutation probes (third round) of the study computation (ncsim.study.compute): a batch of
runs of mixed structure, dtype and repeated specs gives each run its own row, parameters and
trajectory (the same as the run computed alone), an intervention row describes its own spec
(spec columns, simulator id, no segment run id, steps summed, alpha 1 by default), a first
segment that stalls or diverges is the run alone, the records split at small record counts,
and a trained row reads its training's last record and run id."""

from __future__ import annotations

import importlib
import math
import types

import pandas as pd
import pytest
from study_helpers import computed_alone, same_value

from ncsim.flow.simulate import run_id
from ncsim.study.compute import run_chunk
from ncsim.study.spec import RunDesc, run_spec

TINY = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 50.0, "records": 8, "lambda": 1e-2}


def _spy_simulate(monkeypatch, edit):
    """Patch ncsim.flow.simulate.simulate so that ``edit(call_number, runs)`` may change the
    runs table of each call (numbered from 1); returns the list of call numbers made."""
    module = importlib.import_module("ncsim.flow.simulate")
    real = module.simulate
    calls: list[int] = []

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(len(calls) + 1)
        edit(calls[-1], result.runs)
        return result

    monkeypatch.setattr(module, "simulate", spy)
    return calls


# ----------------------------------------------------------------------------- batches
def test_a_mixed_batch_gives_each_run_its_own_parameters_row_and_trajectory():
    """Plain runs of different dtype, K and seed in one chunk: each row carries its own
    parameters, dtype and simulator id, and its row and trajectory (index included) are
    those of the run computed alone."""
    descs = [RunDesc("a", "simulated", {**TINY, "seed": 0}),
             RunDesc("a", "simulated", {**TINY, "dtype": "float32", "seed": 1}),
             RunDesc("b", "simulated", {**TINY, "classes": 2, "seed": 2})]
    batch = run_chunk(descs)
    assert [rid for rid, _, _ in batch] == [d.run_id for d in descs]
    for desc, (_, row, traj) in zip(descs, batch):
        alone, traj_alone = computed_alone(desc.params, desc.part)
        assert row["part"] == desc.part and row["seed"] == desc.params["seed"]
        assert row["solver_dtype"] == desc.params.get("dtype", "float64")
        assert row["classes"] == desc.params["classes"]
        assert row["sim_run_id"] == run_id(run_spec(desc.params))
        timing = {k for k in alone if k.endswith("_s")}
        assert set(row) == set(alone)
        assert [k for k in set(row) - timing if not same_value(row[k], alone[k])] == []
        pd.testing.assert_frame_equal(traj, traj_alone)


def test_a_spec_repeated_in_a_batch_gives_each_run_its_own_trajectory():
    """Two parts with the same parameters in one chunk: two runs (ids and parts of their
    own), each with the trajectory of the spec computed alone (not both runs' records), and
    simulator ids that are the spec's (the repeat with a -k suffix)."""
    descs = [RunDesc("a", "simulated", TINY), RunDesc("b", "simulated", TINY)]
    batch = run_chunk(descs)
    _, traj_alone = computed_alone(TINY, "a")
    assert [rid for rid, _, _ in batch] == [d.run_id for d in descs]
    assert descs[0].run_id != descs[1].run_id
    assert [row["part"] for _, row, _ in batch] == ["a", "b"]
    for _, row, traj in batch:
        assert row["sim_run_id"].split("-")[0] == run_id(run_spec(TINY))
        pd.testing.assert_frame_equal(traj, traj_alone)


def test_a_bad_intervention_run_fails_alone_in_a_chunk_with_its_error():
    """An intervention run at t1 past t_end in a chunk with a plain run: a failed row with the
    InputError text and no trajectory; the plain run is computed."""
    bad = RunDesc("k", "simulated", {**TINY, "intervene_time": 60.0})
    plain = RunDesc("a", "simulated", TINY)
    results = {rid: (row, traj) for rid, row, traj in run_chunk([bad, plain])}
    row, traj = results[bad.run_id]
    assert traj is None and row["status"] == "failed"
    assert row["error"] == "InputError: intervene_time must lie in (0, t_end = 50.0), got 60.0"
    assert row["intervene_time"] == 60.0 and row["part"] == "k"
    assert results[plain.run_id][0]["status"] != "failed"


# ----------------------------------------------------------------------------- interventions
def test_an_intervention_row_carries_its_own_spec_columns_and_simulator_id():
    """A two-segment run's row holds every spec column of the run's own spec (t_end, records,
    init and t_first of the run, not of its second segment), the run's simulator id and no
    run_id of a segment."""
    params = {**TINY, "intervene_time": 10.0, "intervene_alpha": 0.5}
    row, traj = computed_alone(params)
    assert set(traj["phase"]) == {1, 2}
    spec = run_spec(params)
    want = spec.to_row()
    assert [k for k in want if not same_value(row[k], want[k])] == []
    assert (row["solver_t_end"], row["solver_records"], row["init_kind"]) == (50.0, 8,
                                                                             "gaussian")
    assert row["sim_run_id"] == run_id(spec)
    assert "run_id" not in row


def test_a_first_segment_out_of_steps_row_has_the_runs_simulator_id():
    """max_steps = 20 stops the first segment before t1: the row has the run's simulator id
    (not the first segment's) and no run_id of the segment."""
    params = {**TINY, "intervene_time": 40.0, "intervene_alpha": 0.5, "max_steps": 20}
    row, traj = computed_alone(params)
    assert set(traj["phase"]) == {1} and row["stop"] == "max_steps"
    assert row["sim_run_id"] == run_id(run_spec(params))
    assert "run_id" not in row


def test_an_intervention_without_alpha_scales_by_one():
    """intervene_time without intervene_alpha: H is not scaled (alpha 1), fn just after t1
    is fn just before it, and the run ends where the run with alpha = 1 does."""
    params = {**TINY, "intervene_time": 10.0}
    row, _ = computed_alone(params)
    one, _ = computed_alone({**params, "intervene_alpha": 1.0})
    assert row["fn_after_intervention"] == pytest.approx(row["fn_before_intervention"],
                                                         rel=1e-12)
    assert row["final_fn"] == pytest.approx(one["final_fn"], rel=1e-12)


def test_intervention_rejected_steps_are_summed_over_both_segments(monkeypatch):
    """Segments reporting 3 and 5 rejected steps (and 11 and 13 steps): the run's row has 8
    rejected steps and 24 steps."""
    counts = {1: (11, 3), 2: (13, 5)}

    def edit(call, runs):
        runs.loc[runs.index[0], ["steps", "rejected_steps"]] = counts[call]

    calls = _spy_simulate(monkeypatch, edit)
    row, _ = computed_alone({**TINY, "intervene_time": 10.0, "intervene_alpha": 0.5})
    assert calls == [1, 2]
    assert (row["steps"], row["rejected_steps"]) == (24, 8)


@pytest.mark.parametrize("status", ["stalled", "diverged"])
def test_a_first_segment_that_stalls_or_diverges_is_the_run_alone(monkeypatch, status):
    """A first segment whose row says stalled or diverged: no second segment is simulated;
    the run is the first segment with that status and NaN fn around the intervention."""
    def edit(call, runs):
        if call == 1:
            runs.loc[runs.index[0], "status"] = status

    calls = _spy_simulate(monkeypatch, edit)
    row, traj = computed_alone({**TINY, "intervene_time": 10.0, "intervene_alpha": 0.5})
    assert calls == [1]
    assert row["status"] == status and set(traj["phase"]) == {1}
    assert math.isnan(row["fn_before_intervention"])
    assert math.isnan(row["fn_after_intervention"])


@pytest.mark.parametrize(("records", "t1", "first"), [(3, 0.05, 2), (4, 250.0, 2)])
def test_few_records_keep_the_floor_in_the_first_and_floor_plus_one_in_the_second(
        records, t1, first):
    """records = 3 split early (t1 = 0.05, log-time share 0.47 records): two records in each
    segment, not one in the first; records = 4 split late (t1 = 250 of 300, share 3.9): two in
    the first and three in the second (the floor of 2 plus its start)."""
    params = {**TINY, "t_end": 300.0, "records": records, "intervene_time": t1,
              "intervene_alpha": 0.5}
    row, traj = computed_alone(params)
    assert row["status"] != "failed", row.get("error")
    assert traj["phase"].value_counts().to_dict() == {1: first, 2: records - first + 1}


# ----------------------------------------------------------------------------- trained
def test_a_trained_run_is_trained_under_its_run_id_and_reads_the_last_accuracy(monkeypatch):
    """A trained run hands its own run id to the training, and its row's final accuracy is
    that of the last record (0.7), not the best (0.9)."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    log = pd.DataFrame({"run_id": "net", "time": [0.0, 1.0, 2.0, 3.0], "phase": [1, 1, 2, 2],
                        "fn": [0.1, 0.2, 0.3, 0.4], "nc1_trace": [1.0, 0.5, 0.005, 0.004],
                        "accuracy": [0.5, 0.6, 0.9, 0.7], "steps": [0, 1, 2, 3]})
    seen = []

    def train(config, data):
        seen.append(config.run_id)
        return types.SimpleNamespace(log=log, fn_before_intervention=math.nan)

    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", train)
    desc = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [2, 2]})
    ((rid, row, _),) = run_chunk([desc])
    assert seen == [desc.run_id] == [rid]
    assert row["final_accuracy"] == 0.7
