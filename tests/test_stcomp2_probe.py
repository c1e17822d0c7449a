"""Mutation probes (second round) of the study computation (ncsim.study.compute) and the
resumable runner (ncsim.study.runner): a run's row against a direct simulate of its spec,
the intervention's segments, statuses and onsets (alpha = 1 gives the plain run), trained
readings at the phase switch, error texts of failed runs, and the runner's chunks."""

from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest
from study_helpers import computed_alone, same_value

from ncsim.onset import onset_and_fn
from ncsim.study.compute import run_chunk
from ncsim.study.spec import RunDesc, parse_study, run_spec

TINY = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 300.0, "records": 24,
        "rtol": 1e-10, "atol": 1e-12, "lambda": 1e-2}


# ----------------------------------------------------------------------------- simulated
def test_a_plain_run_row_is_the_direct_simulate_row_without_its_run_id():
    """A plain run's row holds every column of ncsim.flow.simulate's row of the same spec
    (same values), its run id as sim_run_id and no run_id of its own; the trajectory is
    simulate's without the run_id column."""
    from ncsim.flow.simulate import simulate

    params = {**TINY, "t_end": 100.0, "seed": 4}
    row, traj = computed_alone(params)
    direct = simulate(run_spec(params))
    want = direct.runs.iloc[0].to_dict()
    sim_id = want.pop("run_id")
    assert "run_id" not in row
    assert row["sim_run_id"] == sim_id
    assert [k for k in want if not same_value(row[k], want[k])] == []
    expected = direct.trajectories.drop(columns="run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(traj, expected)


@pytest.mark.parametrize(("message", "recorded"), [
    ("first line\nsecond line", "ValueError: first line\nsecond line"),
    ("", "ValueError"),
])
def test_a_failed_run_records_the_whole_error_message(monkeypatch, message, recorded):
    """A run whose simulation raises is a failed row whose error is "Type: message", the whole
    message (both lines of a two-line one), or the type alone for an empty message."""
    import importlib

    sim_module = importlib.import_module("ncsim.flow.simulate")

    def boom(specs):
        raise ValueError(message)

    monkeypatch.setattr(sim_module, "simulate", boom)
    row, traj = computed_alone({**TINY, "seed": 1})
    assert traj is None
    assert (row["status"], row["error"]) == ("failed", recorded)


def test_an_intervention_splits_its_records_at_the_rounded_log_time_fraction():
    """t1 = 6 of (t_end 300, 24 records, first record 0.01): 24 * ln(600) / ln(30000) = 14.89
    rounds to 15 records in the first segment (between the floor 8 and the cap 16) and
    24 - 15 + 1 = 10 in the second."""
    _, traj = computed_alone({**TINY, "intervene_time": 6.0, "intervene_alpha": 0.5})
    assert 24 * math.log(600) / math.log(30000) == pytest.approx(14.89, abs=5e-3)
    assert int((traj["phase"] == 1).sum()) == 15
    assert int((traj["phase"] == 2).sum()) == 10


def test_a_first_segment_out_of_steps_without_onset_is_the_run_alone():
    """max_steps = 100 stops the first segment (to t1 = 250) at t ~ 18 before any onset: the
    run is that segment alone, status max_steps, 100 steps, with the run's own t_end and
    records in its row (not those of the segment) and no onset before the intervention."""
    params = {**TINY, "intervene_time": 250.0, "intervene_alpha": 0.5, "max_steps": 100}
    row, traj = computed_alone(params)
    assert set(traj["phase"]) == {1}
    assert (row["status"], row["stop"], row["steps"]) == ("max_steps", "max_steps", 100)
    assert row["t_final"] < 250.0
    assert (row["solver_t_end"], row["solver_records"]) == (300.0, 24)
    assert row["onset_before_intervention"] is False
    assert math.isnan(row["fn_before_intervention"]) and math.isnan(row["onset_time"])


def test_a_first_segment_out_of_steps_after_its_onset_is_the_run_alone():
    """max_steps = 132 stops the first segment (to t1 = 250) after its onset (~20) but
    before t1: the run is that segment alone (documented: out of steps before t1), with an
    onset before the intervention, not a second segment glued on at t1."""
    params = {**TINY, "intervene_time": 250.0, "intervene_alpha": 0.5, "max_steps": 132}
    row, traj = computed_alone(params)
    assert set(traj["phase"]) == {1}
    assert row["t_final"] < 250.0 and row["stop"] == "max_steps"
    assert row["onset_before_intervention"] is True


def test_alpha_one_keeps_the_bias_of_the_first_segment():
    """bias = "free" and alpha = 1 at t1 = 10: the run's final values are the plain run's
    (the bias goes on into the second segment with H and W)."""
    params = {**TINY, "t_end": 100.0, "bias": "free"}
    plain, _ = computed_alone(params, "p")
    kick, _ = computed_alone({**params, "intervene_time": 10.0, "intervene_alpha": 1.0})
    for key in ("final_fn", "final_nc1_trace", "final_loss"):
        assert kick[key] == pytest.approx(plain[key], rel=1e-8), key


def test_a_short_second_segment_records_from_a_tenth_of_its_length():
    """t_end - t1 = 0.05 (< 0.1): the second segment's first record after its start is at
    t1 + 0.005 (a tenth of its length), not t1 + 0.01."""
    _, traj = computed_alone({**TINY, "t_end": 1.0, "records": 12, "intervene_time": 0.95,
                    "intervene_alpha": 2.0})
    times = traj.loc[traj["phase"] == 2, "time"].to_numpy()
    assert times[0] == 0.95
    assert times[1] == pytest.approx(0.955, abs=1e-12)


def test_alpha_one_gives_the_plain_status_when_only_the_first_segment_crosses():
    """Threshold 1.885 on nc1_trace (1.881 at t = 0, above 1.9 from t ~ 0.07 to t_end = 1):
    the onset is at t = 0, in the first segment; with alpha = 1 at t1 = 0.5 the run is "ok"
    with that onset, as the plain run, though its second segment has no crossing."""
    params = {**TINY, "t_end": 1.0, "records": 12, "onset_threshold": 1.885}
    plain, _ = computed_alone(params, "p")
    kick, traj = computed_alone({**params, "intervene_time": 0.5, "intervene_alpha": 1.0})
    phase2 = traj.loc[traj["phase"] == 2, "nc1_trace"].to_numpy()
    assert (phase2 > 1.885).all()
    assert (plain["status"], plain["onset_time"]) == ("ok", 0.0)
    assert (kick["status"], kick["onset_time"]) == ("ok", 0.0)
    assert kick["fn_at_onset"] == pytest.approx(plain["fn_at_onset"], rel=1e-12)


def test_a_vanishing_intervention_run_has_no_onset_though_its_metric_crosses():
    """lambda = 0.3 makes the norms vanish: with alpha = 1 at t1 = 10 the run is "vanishing"
    with NaN onset and fn at onset, as the plain run, although nc1_trace crosses 0.01 on the
    joined trajectory (t ~ 13.6)."""
    params = {**TINY, "t_end": 100.0, "lambda": 0.3}
    plain, _ = computed_alone(params, "p")
    kick, traj = computed_alone({**params, "intervene_time": 10.0, "intervene_alpha": 1.0})
    when, _ = onset_and_fn(traj["time"].to_numpy(np.float64),
                           traj["nc1_trace"].to_numpy(np.float64),
                           traj["fn"].to_numpy(np.float64), 0.01, 1, True)
    assert 10.0 < when < 20.0
    assert plain["status"] == kick["status"] == "vanishing"
    assert math.isnan(kick["onset_time"]) and math.isnan(kick["fn_at_onset"])
    assert kick["onset_before_intervention"] is False


# ----------------------------------------------------------------------------- trained
def _trained(monkeypatch, log):
    """(row, trajectory) of a trained run whose training returns ``log``."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", lambda config, data: types.SimpleNamespace(
        log=log, fn_before_intervention=1.0))
    desc = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [3, 2]})
    ((_, row, traj),) = run_chunk([desc])
    return row, traj


def _log(nc1):
    """A log of epochs 0..4, phase 1 for 0..2 and 2 for 3..4, with nc1_trace ``nc1``."""
    return pd.DataFrame({"run_id": "net", "time": [0.0, 1.0, 2.0, 3.0, 4.0],
                         "phase": [1, 1, 1, 2, 2], "fn": [0.1, 0.2, 0.3, 0.4, 0.5],
                         "nc1_trace": nc1, "accuracy": [0.5] * 5, "steps": [0, 1, 2, 3, 4]})


def test_an_inherited_onset_reads_the_last_measured_phase_one_record(monkeypatch):
    """Phase 1 ends with an unmeasured nc1_trace (NaN) after 0.005: the onset at the first
    phase-2 epoch is inherited (the last measured phase-1 value is below 0.01)."""
    row, _ = _trained(monkeypatch, _log([1.0, 0.005, math.nan, 0.004, 0.003]))
    assert (row["status"], row["onset_time"]) == ("ok", 3.0)
    assert row["onset_at_phase_start"] is True


def test_an_onset_after_an_unmeasured_phase_one_is_not_inherited(monkeypatch):
    """nc1_trace unmeasured in all of phase 1 and below 0.01 at the first phase-2 epoch: an
    ok run with its onset there, not inherited (and no failure)."""
    row, _ = _trained(monkeypatch, _log([math.nan, math.nan, math.nan, 0.004, 0.003]))
    assert (row["status"], row["onset_time"]) == ("ok", 3.0)
    assert row["onset_at_phase_start"] is False


# ----------------------------------------------------------------------------- runner
def _study(parts):
    raw = {"name": "s", "title": "S", "question": "q?", "claim": "c.",
           "analysis": "invariance",
           "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 20.0,
                         "records": 6},
           "parts": parts}
    return parse_study(raw, "s.toml")


def test_runs_of_different_batch_structures_are_chunked_apart():
    """Part a (K = 3) and part b (K = 2), chunk 8: two chunks, one per batch structure, in
    spec order, though all three runs would fit in one chunk."""
    from ncsim.study.runner import chunk_runs

    study = _study([{"name": "a", "model": "simulated", "grid": {"seed": [0, 1]}},
                    {"name": "b", "model": "simulated", "classes": 2,
                     "grid": {"seed": [0]}}])
    chunks = chunk_runs(study.runs())
    assert [[d.part for d in c] for c in chunks] == [["a", "a"], ["b"]]


def test_a_plain_row_without_simulator_id_is_kept_even_of_a_wide_gaussian_start(tmp_path):
    """A finished plain run row stored without sim_run_id is not stale (only an intervention
    row is, when its gaussian start is drawn through the Gram factor: d = 20 > N + K = 9)."""
    from ncsim.study.runner import stale_runs
    from ncsim.study.store import Store

    params = {"classes": 3, "per_class": 2, "dim": 20, "t_end": 20.0, "records": 6}
    plain = RunDesc("a", "simulated", params)
    kick = RunDesc("b", "simulated", {**params, "intervene_time": 5.0})
    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    traj = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 1.0]})
    for desc in (plain, kick):
        store.write_run(desc.run_id, {"status": "ok"}, traj)
    assert stale_runs(store, [plain, kick]) == {kick.run_id}


def test_a_part_selection_still_counts_and_tables_the_other_parts_runs(tmp_path):
    """A failed trained run (MNIST without --data-root) computed by one call, then the
    simulated part alone: the second summary counts the earlier failure (failed = 1) and
    the run table holds both runs."""
    from ncsim.study.runner import run_study

    study = _study([{"name": "a", "model": "simulated", "grid": {"seed": [0]}},
                    {"name": "broken", "model": "trained", "dataset": "mnist",
                     "epochs": [1, 1]}])
    out = tmp_path / "out"
    first = run_study(study, out, progress=False, report=False, parts=["broken"])
    assert (first.computed, first.failed) == (1, 1)
    second = run_study(study, out, progress=False, report=False, parts=["a"])
    assert (second.total, second.selected, second.computed, second.skipped,
            second.failed) == (2, 1, 1, 0, 1)
    runs = pd.read_parquet(out / "runs.parquet")
    assert sorted(runs["run_id"]) == sorted(d.run_id for d in study.runs())
    assert sorted(runs["status"]) == ["failed", "not_collapsed"]  # t_end 20: no onset yet


def test_the_progress_bar_starts_at_the_finished_runs_and_counts_each_run(tmp_path,
                                                                          monkeypatch):
    """Part b (one run) finished, then the whole study with a progress bar: it starts at
    1 of 3 and the chunk of part a's two runs advances it by 2, to 3."""
    import tqdm as tqdm_module

    from ncsim.study.runner import run_study

    bars = []

    class Bar:
        def __init__(self, total, initial, **kwargs):
            self.total, self.n, self.start, self.steps = total, initial, initial, []
            bars.append(self)

        def update(self, k):
            self.steps.append(k)
            self.n += k

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    study = _study([{"name": "a", "model": "simulated", "grid": {"seed": [0, 1]}},
                    {"name": "b", "model": "simulated", "classes": 2,
                     "grid": {"seed": [0]}}])
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False, parts=["b"])
    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    summary = run_study(study, out, progress=True, report=False)
    assert (summary.computed, summary.skipped) == (2, 1)
    ((bar,),) = [bars]
    assert (bar.total, bar.start, bar.steps, bar.n) == (3, 1, [2], 3)


@pytest.mark.parametrize("text", ["object", "str"])
def test_a_trained_trajectory_keeps_numbers_flags_and_its_two_text_columns(monkeypatch, text):
    """A trained run's trajectory keeps the log's numeric and flag columns and the text
    columns time_unit and phase_loss, and drops run_id and any other text column, whether
    pandas holds text as object (before pandas 3) or as str."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    log = pd.DataFrame({
        "run_id": ["net"] * 4, "time": [0.0, 1.0, 2.0, 3.0], "phase": [1, 1, 2, 2],
        "fn": [0.1, 0.2, 0.3, 0.4], "nc1_trace": [1.0, 0.5, 0.005, 0.004],
        "accuracy": [0.5, 0.9, 0.95, 0.99], "steps": [0, 3, 6, 9],
        "time_unit": ["epoch"] * 4, "phase_loss": ["ce", "ce", "mse", "mse"],
        "stable": [False, False, True, True], "note": ["a", "b", "c", "d"]})
    for column in ("run_id", "time_unit", "phase_loss", "note"):
        log[column] = log[column].astype(text)
    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", lambda config, data: types.SimpleNamespace(
        log=log, fn_before_intervention=math.nan))
    ((_, _, traj),) = run_chunk([RunDesc("net", "trained", {"dataset": "gaussian",
                                                            "epochs": [2, 2]})])
    assert list(traj.columns) == ["time", "phase", "fn", "nc1_trace", "accuracy", "steps",
                                  "time_unit", "phase_loss", "stable"]
    assert list(traj["phase_loss"]) == ["ce", "ce", "mse", "mse"]
