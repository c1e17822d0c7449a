"""Mutation probes of the study computation (ncsim.study.compute) and the study specs
(ncsim.study.spec): onsets read with the run's own onset rule, rows and trajectories of the
right run in a batch, trained-run readings, and refused grid values named as such."""

from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.onset import onset_and_fn
from ncsim.study.compute import run_chunk
from ncsim.study.spec import RunDesc, parse_study

BASE = {"classes": 3, "per_class": 4, "dim": 8, "t_end": 300.0, "records": 24, "rtol": 1e-6,
        "atol": 1e-9, "lambda": 1e-2}


def _onset(traj, metric, threshold, stay):
    """Reference onset (interpolated, as the study runs use) on the joined trajectory."""
    return onset_and_fn(traj["time"].to_numpy(np.float64), traj[metric].to_numpy(np.float64),
                        traj["fn"].to_numpy(np.float64), threshold, stay, True)


@pytest.mark.parametrize(("metric", "threshold", "stay"),
                         [("nc3", 0.05, 1), ("nc1_trace", 0.1, 1), ("nc2_etf", 0.05, 2)])
def test_an_intervention_onset_uses_the_runs_own_metric_threshold_and_stay(metric, threshold,
                                                                           stay):
    """An intervention run's onset is read on its onset_metric, threshold and stay."""
    params = {**BASE, "intervene_time": 20.0, "intervene_alpha": 0.5, "onset_metric": metric,
              "onset_threshold": threshold, "onset_stay": stay}
    ((_, row, traj),) = run_chunk([RunDesc("k", "simulated", params)])
    when, fn_on = _onset(traj, metric, threshold, stay)
    default_when, _ = _onset(traj, "nc1_trace", 0.01, 1)
    assert math.isfinite(when) and when != pytest.approx(default_when, rel=1e-3)
    assert row["status"] == "ok"
    assert row["onset_time"] == pytest.approx(when, rel=1e-12)
    assert row["fn_at_onset"] == pytest.approx(fn_on, rel=1e-12)


def test_an_intervention_onset_needs_the_runs_stay():
    """nc2_etf below 0.02 for one record but not three at the end: stay = 3 gives no onset
    (as the reference rule on the joined trajectory), stay = 1 the crossing."""
    params = {**BASE, "intervene_time": 20.0, "intervene_alpha": 0.5,
              "onset_metric": "nc2_etf", "onset_threshold": 0.02}
    ((_, row1, traj),) = run_chunk([RunDesc("k", "simulated", {**params, "onset_stay": 1})])
    ((_, row3, _),) = run_chunk([RunDesc("k", "simulated", {**params, "onset_stay": 3})])
    assert math.isfinite(_onset(traj, "nc2_etf", 0.02, 1)[0])
    assert math.isnan(_onset(traj, "nc2_etf", 0.02, 3)[0])
    assert row1["onset_time"] == pytest.approx(_onset(traj, "nc2_etf", 0.02, 1)[0], rel=1e-12)
    assert math.isnan(row3["onset_time"]) and math.isnan(row3["fn_at_onset"])


def test_an_onset_before_a_late_intervention_makes_the_run_ok():
    """Onset in the first segment (t ~ 64) and H scaled at t1 = 250: the run is "ok" with
    that onset, although its second segment has no crossing of its own."""
    params = {**BASE, "intervene_time": 250.0, "intervene_alpha": 0.5}
    ((_, row, traj),) = run_chunk([RunDesc("k", "simulated", params)])
    when, _ = _onset(traj, "nc1_trace", 0.01, 1)
    assert math.isfinite(when) and when < 250.0
    assert row["status"] == "ok" and row["onset_before_intervention"] is True
    assert row["onset_time"] == pytest.approx(when, rel=1e-12)


def test_an_intervention_row_carries_the_closed_forms_of_its_own_spec():
    """The theory columns of an intervention run are those of the plain run of its spec."""
    plain = {**BASE, "init_scale": 0.3}
    kick = {**plain, "intervene_time": 20.0, "intervene_alpha": 3.0}
    ((_, row_plain, _),) = run_chunk([RunDesc("p", "simulated", plain)])
    ((_, row_kick, _),) = run_chunk([RunDesc("k", "simulated", kick)])
    keys = sorted(k for k in row_plain if k.endswith("_theory") or k == "theory_regime")
    assert keys
    for key in keys:
        a, b = row_plain[key], row_kick[key]
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), key


def test_a_batch_gives_each_run_its_own_labels_row_and_trajectory():
    """Plain runs integrated in one batch get their own labels, rows and trajectories: the
    same as each run computed alone."""
    descs = [RunDesc("a", "simulated", {**BASE, "seed": s, "init_scale": sc})
             for s, sc in ((0, 0.1), (1, 0.3), (2, 0.05))]
    batch = run_chunk(descs)
    assert [rid for rid, _, _ in batch] == [d.run_id for d in descs]
    for desc, (_, row, traj) in zip(descs, batch):
        ((_, alone, traj_alone),) = run_chunk([desc])
        assert (row["seed"], row["init_scale"]) == (desc.params["seed"],
                                                     desc.params["init_scale"])
        assert row["final_fn"] == pytest.approx(alone["final_fn"], rel=1e-9)
        assert traj["fn"].to_numpy() == pytest.approx(traj_alone["fn"].to_numpy(), rel=1e-9)
    fns = [row["final_fn"] for _, row, _ in batch]
    assert len({round(f, 12) for f in fns}) == 3


def _trained_row(monkeypatch, log, **params):
    """The row of a trained run whose training returns ``log`` (data loading skipped)."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", lambda config, data: types.SimpleNamespace(
        log=log, fn_before_intervention=1.0))
    desc = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [2, 3], **params})
    ((_, row, _),) = run_chunk([desc])
    return row


def _log(nc1, fn=None, time=None, phase=None):
    n = len(nc1)
    return pd.DataFrame({"run_id": "net", "time": time or [float(i) for i in range(n)],
                         "phase": phase or [1, 1] + [2] * (n - 2),
                         "fn": fn or [0.1 * (i + 1) for i in range(n)], "nc1_trace": nc1,
                         "accuracy": [0.5] * n, "steps": list(range(n))})


def test_a_trained_onset_uses_the_runs_onset_threshold(monkeypatch):
    """onset_threshold = 0.2 of a trained run moves its onset to the first phase-2 record
    below 0.2 (epoch 3), not below the default 0.01 (epoch 4)."""
    log = _log([1.0, 0.5, 0.3, 0.1, 0.005])
    assert _trained_row(monkeypatch, log)["onset_time"] == 4.0
    row = _trained_row(monkeypatch, log, onset_threshold=0.2)
    assert row["onset_time"] == 3.0 and row["fn_at_onset"] == pytest.approx(0.4)


@pytest.mark.parametrize(("last_phase1", "inherited"), [(0.01, False), (0.009, True)])
def test_an_onset_is_inherited_only_when_phase_one_ended_strictly_below(monkeypatch,
                                                                        last_phase1, inherited):
    """onset_at_phase_start: phase 1 ends at 0.009 < 0.01 (inherited), at 0.01 exactly not."""
    log = _log([1.0, last_phase1, 0.005, 0.004])
    row = _trained_row(monkeypatch, log)
    assert row["onset_time"] == 2.0
    assert row["onset_at_phase_start"] is inherited


def test_fn_after_a_trained_intervention_is_the_record_after_the_rescaling(monkeypatch):
    """Two records at the intervention epoch (before and after rescaling): fn after it is
    the later one."""
    log = _log([1.0, 0.5, 0.5, 0.3, 0.1, 0.005], fn=[0.1, 0.2, 0.8, 0.4, 0.5, 0.6],
               time=[0.0, 1.0, 2.0, 2.0, 3.0, 4.0], phase=[1, 1, 1, 2, 2, 2])
    row = _trained_row(monkeypatch, log, intervention_epoch=2, intervention_alpha=0.5)
    assert row["fn_after_intervention"] == pytest.approx(0.4)


# ----------------------------------------------------------------------------- spec
def _raw(grid):
    return {"name": "s", "title": "S", "question": "q?", "claim": "c.",
            "analysis": "invariance",
            "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0},
            "parts": [{"name": "a", "model": "simulated", "grid": grid}]}


@pytest.mark.parametrize(("grid", "words"), [
    ({"seed": [0, 0, 1]}, r"repeated grid value: 0 appears more than once"),
    ({"seed": "1..3:5"}, r"repeated grid value: the range '1..3:5' rounds two points"),
    ({"init_scale": [0.1, 0.2, 0.1]}, r"repeated grid value: 0.1 appears more than once"),
])
def test_a_repeated_grid_value_is_refused_as_such_naming_the_axis(grid, words):
    """A grid axis repeating a value is refused with the axis and the repeat named."""
    key = next(iter(grid))
    with pytest.raises(InputError, match=rf"key 'parts\.a\.grid\.{key}': {words}"):
        parse_study(_raw(grid), "s.toml")
