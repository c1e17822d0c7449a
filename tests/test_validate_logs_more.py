"""Log reading (ncsim schema, errors), analysis rules on hand-computed tables, dataset loaders.

Every table here is synthetic and small; the expected values are worked out by hand.
"""

from __future__ import annotations

import gzip
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.errors import InputError
from ncsim.io import write_table
from ncsim.validate.analysis import (
    OnsetRule,
    analyze,
    condition_number,
    fit_thresholds,
    group_table,
    lead_summary,
    lead_table,
    run_onset,
    run_table,
)
from ncsim.validate.data import load_dataset, read_cifar10, read_idx
from ncsim.validate.logs import read_log, read_logs

# Student t quantile t_{0.975} with 2 degrees of freedom, closed form: the t(2) CDF is
# 1/2 + t / (2 sqrt(2 + t^2)), so t / sqrt(2 + t^2) = 0.95
T_975_2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
NCSIM_COLUMNS = ["run_id", "time", "time_unit", "phase", "fn", "nc1_trace", "accuracy",
                 "model", "dataset", "condition", "seed"]


def ncsim_log() -> pd.DataFrame:
    """Two runs in the ncsim schema, rows deliberately out of order."""
    return pd.DataFrame({
        "run_id": ["r1", "r1", "r0", "r0"],
        "time": [10.0, 0.0, 5.0, 0.0],
        "time_unit": "epoch",
        "phase": [2, 1, 1, 1],
        "fn": [1.0, 2.0, 3.0, 4.0],
        "nc1_trace": [0.1, np.nan, 0.3, 0.4],
        "accuracy": [1.0, 0.5, 0.9, 0.2],
        "model": "mlp", "dataset": "digits", "condition": "w", "seed": [1, 1, 0, 0],
    })


# ----------------------------------------------------------------------------- ncsim logs
@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_ncsim_log_reads_back_sorted_with_exact_values(tmp_path, ext):
    """An ncsim log written by write_table reads back with its columns, dtypes and values,
    sorted by run id then time, phase as nullable Int64."""
    path = write_table(ncsim_log(), tmp_path / f"log.{ext}")
    got = read_log(path)
    assert list(got.columns) == NCSIM_COLUMNS
    assert got["run_id"].tolist() == ["r0", "r0", "r1", "r1"]
    assert got["time"].tolist() == [0.0, 5.0, 0.0, 10.0]
    assert got["fn"].tolist() == [4.0, 3.0, 2.0, 1.0]
    assert got["nc1_trace"].tolist()[:2] == [0.4, 0.3] and math.isnan(got["nc1_trace"][2])
    assert got["nc1_trace"][3] == 0.1
    assert got["accuracy"].tolist() == [0.2, 0.9, 0.5, 1.0]
    assert str(got["phase"].dtype) == "Int64" and got["phase"].tolist() == [1, 1, 1, 2]
    assert got["seed"].tolist() == [0, 0, 1, 1] and got["seed"].dtype == np.int64
    assert got["time"].dtype == np.float64 and got["fn"].dtype == np.float64
    assert set(got["time_unit"]) == {"epoch"} and set(got["dataset"]) == {"digits"}
    assert got.index.tolist() == [0, 1, 2, 3]


def test_ncsim_log_csv_and_parquet_read_back_equal(tmp_path):
    """The same ncsim table written as CSV and as Parquet gives equal trajectory tables."""
    csv = read_log(write_table(ncsim_log(), tmp_path / "log.csv"))
    parquet = read_log(write_table(ncsim_log(), tmp_path / "log.parquet"))
    pd.testing.assert_frame_equal(csv, parquet, check_exact=True)


def test_training_log_round_trip_csv_and_parquet(tmp_path):
    """A real (tiny) training log written as CSV and as Parquet reads back equal to the log in
    memory, up to phase becoming Int64; the analysis of the read log is unchanged."""
    from ncsim.validate.train import Phase, TrainConfig, train

    data = load_dataset("gaussian", per_class=4, classes=3, dim=5, seed=0)
    config = TrainConfig(arch="mlp", depth=1, width=8, nc_every=1, run_id="tiny_s0",
                         phases=(Phase("ce", 2, "adam", 1e-2, 0.0, batch_size=12),
                                 Phase("mse", 1, "adam", 1e-2, 0.0, batch_size=12)),
                         labels={"model": "mlp", "dataset": "gaussian", "condition": "tiny"})
    log = train(config, data).log
    expected = log.assign(phase=pd.array(log["phase"], dtype="Int64"))
    csv = read_log(write_table(log, tmp_path / "log.csv"))
    parquet = read_log(write_table(log, tmp_path / "log.parquet"))
    pd.testing.assert_frame_equal(parquet, expected, check_exact=True)
    pd.testing.assert_frame_equal(csv, expected, check_exact=True)
    assert parquet["time"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert parquet["phase"].tolist() == [1, 1, 1, 2]
    assert list(parquet[["model", "dataset", "condition"]].iloc[0]) == ["mlp", "gaussian", "tiny"]
    rule = OnsetRule.preset("ncsim", threshold=10.0)  # every record is below: onset at time 0
    runs = run_table(csv, rule)
    assert runs["onset_epoch"].tolist() == [0.0]
    assert runs["fn_star"][0] == pytest.approx(log["fn"][0], rel=1e-15)


def test_ncsim_log_without_labels_gets_labels_from_the_file_name(tmp_path):
    """A bare ncsim log (time, fn, nc1_trace) gets run id, time unit, phase <NA> and the
    model/dataset/condition/seed read from its file name; rows are sorted by time."""
    frame = pd.DataFrame({"time": [20, 0, 10], "fn": [1.0, 3.0, 2.0], "nc1_trace": [0.001, 1, 0.1]})
    frame.to_csv(tmp_path / "cifar10_s2.csv", index=False)
    got = read_log(tmp_path / "cifar10_s2.csv")
    assert list(got.columns) == ["run_id", "time", "fn", "nc1_trace", "time_unit", "phase",
                                 "model", "dataset", "condition", "seed"]
    assert got["run_id"].tolist() == ["cifar10_s2"] * 3
    assert got["time"].tolist() == [0, 10, 20] and got["fn"].tolist() == [3.0, 2.0, 1.0]
    assert got["time_unit"].tolist() == ["epoch"] * 3
    assert str(got["phase"].dtype) == "Int64" and got["phase"].isna().all()
    assert got[["model", "dataset", "condition"]].iloc[0].tolist() == \
        ["resnet20", "cifar10", "cifar10"]
    assert got["seed"].tolist() == [2, 2, 2]


def test_ncsim_log_with_another_name_is_unlabelled_and_each_run_its_own_condition(tmp_path):
    """A label-less ncsim table whose file name is no paper log's (a simulation's
    trajectories.parquet) is never taken for the paper's MNIST MLP: model and dataset are
    'unlabelled' and each run is its own condition, so runs of a grid never share a group."""
    from ncsim.validate.analysis import OnsetRule, run_table

    frame = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "time": [0.0, 1.0, 0.0, 1.0],
                          "fn": [1.0, 2.0, 1.0, 3.0], "nc1_trace": [1.0, 1e-3, 1.0, 1e-3]})
    frame.to_parquet(tmp_path / "trajectories.parquet", index=False)
    got = read_log(tmp_path / "trajectories.parquet")
    assert set(got["model"]) == {"unlabelled"} and set(got["dataset"]) == {"unlabelled"}
    assert got["condition"].tolist() == ["a", "a", "b", "b"]
    assert got["seed"].isna().all()
    runs = run_table(got, OnsetRule.preset("ncsim"))
    assert runs["condition"].tolist() == ["a", "b"]
    single = frame[frame["run_id"] == "a"].drop(columns="run_id")
    single.to_csv(tmp_path / "log.csv", index=False)
    got = read_log(tmp_path / "log.csv")
    assert got["run_id"].tolist() == ["log", "log"] and got["condition"].tolist() == ["log"] * 2
    assert set(got["model"]) == {"unlabelled"}


def test_ncsim_log_keeps_its_own_labels_and_fills_only_missing_ones(tmp_path):
    """Labels and run id present in an ncsim log win over the file name; absent ones are filled
    (here model/dataset from the name width64_s7 -> mlp, mnist)."""
    frame = pd.DataFrame({"run_id": "mine", "time": [1.0, 0.0], "fn": [1.0, 2.0],
                          "nc1_trace": [0.1, 0.2], "condition": "cond", "seed": 3,
                          "time_unit": "step"})
    frame.to_parquet(tmp_path / "width64_s7.parquet", index=False)
    got = read_log(tmp_path / "width64_s7.parquet")
    assert got["run_id"].tolist() == ["mine", "mine"]
    assert got["time_unit"].tolist() == ["step", "step"]
    assert got["condition"].tolist() == ["cond", "cond"] and got["seed"].tolist() == [3, 3]
    assert got["model"].tolist() == ["mlp", "mlp"] and got["dataset"].tolist() == ["mnist"] * 2
    assert got["time"].tolist() == [0.0, 1.0]


def test_ncsim_log_phase_is_coerced_to_nullable_integers(tmp_path):
    """Phase values that are numbers (also as text or float) become Int64; a phase that is no
    number ('x') is refused, since it would switch the phase-2 rule off without a word."""
    frame = pd.DataFrame({"time": [0.0, 1.0, 2.0], "fn": [1.0] * 3,
                          "nc1_trace": [0.5] * 3, "phase": ["1", "2.0", "2"]})
    frame.to_csv(tmp_path / "p_s0.csv", index=False)
    got = read_log(tmp_path / "p_s0.csv")
    assert str(got["phase"].dtype) == "Int64"
    assert got["phase"].tolist() == [1, 2, 2]
    frame.assign(phase=["1", "2.0", "x"]).to_csv(tmp_path / "q_s0.csv", index=False)
    with pytest.raises(InputError, match="'x' (is|are) not (a )?phase number"):
        read_log(tmp_path / "q_s0.csv")


@pytest.mark.parametrize(("columns", "missing"), [
    (["time", "nc1_trace"], "fn"),
    (["time", "fn"], "nc1_trace"),
    (["time", "loss"], "fn, nc1_trace"),
])
def test_ncsim_log_missing_columns(tmp_path, columns, missing):
    """An ncsim log without fn or nc1_trace is refused; the message names the log, the missing
    columns and the columns an ncsim log needs."""
    pd.DataFrame({c: [1.0] for c in columns}).to_csv(tmp_path / "short_s0.csv", index=False)
    with pytest.raises(InputError) as err:
        read_log(tmp_path / "short_s0.csv")
    assert type(err.value) is InputError
    msg = str(err.value)
    assert f"log short_s0 lacks column(s) {missing};" in msg
    assert "an ncsim log needs time, fn and nc1_trace" in msg and "\n" not in msg


def test_paper_log_missing_columns_names_log_and_needed_columns(tmp_path):
    """A paper log lacking nc1 and feat_norm is refused with the columns a paper log needs."""
    pd.DataFrame({"epoch": [1, 2], "train": [0.5, 0.6]}).to_csv(tmp_path / "x_s1.csv",
                                                                index=False)
    with pytest.raises(InputError, match=r"log x_s1 lacks column\(s\) nc1, feat_norm; a paper "
                       r"log needs epoch, nc1 and feat_norm"):
        read_log(tmp_path / "x_s1.csv")


def test_file_with_neither_epoch_nor_time(tmp_path):
    """A table with neither 'epoch' nor 'time' is refused; the message names the file and both
    accepted schemas."""
    path = tmp_path / "steps.csv"
    pd.DataFrame({"step": [1, 2], "loss": [0.3, 0.2]}).to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        read_log(path)
    assert str(err.value) == (f"log {path} has neither an 'epoch' (paper schema) nor a 'time' "
                              "column (ncsim schema)")


def test_unreadable_and_absent_files(tmp_path):
    """Absent, empty, corrupt and binary files and a folder are InputErrors naming the path."""
    absent = tmp_path / "absent.csv"
    with pytest.raises(InputError, match=f"^log file {absent} does not exist; check the path$"):
        read_log(absent)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "bad.parquet").write_text("epoch,nc1\n1,2\n")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage\n")
    (tmp_path / "folder.csv").mkdir()
    for name in ("empty.csv", "bad.parquet", "bin.csv", "folder.csv"):
        with pytest.raises(InputError) as err:
            read_log(tmp_path / name)
        assert type(err.value) is InputError
        assert str(err.value).startswith(f"cannot read log {tmp_path / name}: "), name
        assert str(err.value).endswith("a log is a CSV file or a Parquet file (.parquet)")
        assert "\n" not in str(err.value)


def test_read_logs_refuses_an_empty_list():
    """read_logs with no paths raises InputError 'no log files given'."""
    with pytest.raises(InputError, match="^no log files given; pass one or more CSV or "
                                         "Parquet logs$"):
        read_logs([])


def test_read_logs_refuses_duplicate_run_ids(tmp_path):
    """The same run id in two files (same stem as CSV and Parquet, or the same run_id column
    in differently named ncsim logs) is refused; the message lists the ids, sorted."""
    bare = pd.DataFrame({"time": [0.0, 1.0], "fn": [2.0, 1.0], "nc1_trace": [0.5, 0.005]})
    bare.to_csv(tmp_path / "depth3_s4.csv", index=False)
    bare.to_parquet(tmp_path / "depth3_s4.parquet", index=False)
    with pytest.raises(InputError) as err:
        read_logs([tmp_path / "depth3_s4.csv", tmp_path / "depth3_s4.parquet"])
    csv, parquet = tmp_path / "depth3_s4.csv", tmp_path / "depth3_s4.parquet"
    assert str(err.value) == (
        f"run id(s) appear in several logs: depth3_s4 in {csv}, {parquet}; each run needs its "
        "own id (a paper log's is its file name, an ncsim log's its run_id column)")
    (tmp_path / "other").mkdir()  # the same file name in two folders: the folders are named
    bare.to_csv(tmp_path / "other" / "depth3_s4.csv", index=False)
    with pytest.raises(InputError, match=f"depth3_s4 in {csv}, {tmp_path / 'other'}/"):
        read_logs([csv, tmp_path / "other" / "depth3_s4.csv"])
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    write_table(ncsim_log(), a)
    write_table(ncsim_log(), b)
    with pytest.raises(InputError, match=f"^run id\\(s\\) appear in several logs: r0 in {a}, "
                                         f"{b}; r1 in {a}, {b}; "):
        read_logs([a, b])


def test_read_logs_joins_paper_and_ncsim_logs(tmp_path):
    """A paper CSV and an ncsim Parquet log join into one table in the given order, with the
    union of columns (absent ones empty) and a fresh index."""
    paper = pd.DataFrame({"epoch": [20, 10], "phase": [2, 1], "train_acc": [1.0, 0.9],
                          "test_acc": [0.8, 0.7], "nc1": [0.005, np.nan],
                          "feat_norm": [1.5, np.nan]})
    paper.to_csv(tmp_path / "width128_s1.csv", index=False)
    write_table(ncsim_log(), tmp_path / "mine.parquet")
    table = read_logs([tmp_path / "width128_s1.csv", tmp_path / "mine.parquet"])
    assert table.index.tolist() == list(range(6))
    assert table["run_id"].tolist() == ["width128_s1"] * 2 + ["r0", "r0", "r1", "r1"]
    assert table["time"].tolist() == [10.0, 20.0, 0.0, 5.0, 0.0, 10.0]
    assert table["phase"].tolist() == [1, 2, 1, 1, 1, 2]
    assert table["accuracy"].tolist() == [0.9, 1.0, 0.2, 0.9, 0.5, 1.0]
    assert table["test_accuracy"].tolist()[:2] == [0.7, 0.8]
    assert table["test_accuracy"][2:].isna().all()
    assert table["condition"].tolist() == ["width128"] * 2 + ["w"] * 4
    assert table["seed"].tolist() == [1, 1, 0, 0, 1, 1]
    assert table["dataset"].tolist() == ["mnist"] * 2 + ["digits"] * 4


def test_paper_log_with_condition_and_seed_columns(tmp_path):
    """Intervention-style paper logs: condition and seed columns override the file name,
    extra columns (alpha) are kept, a missing phase column becomes <NA>, rows sort by epoch."""
    frame = pd.DataFrame({"epoch": [30, 10, 20], "train": [1.0, 0.9, 0.99],
                          "nc1": [0.001, np.nan, 0.02], "feat_norm": [1.0, np.nan, 2.0],
                          "condition": "scale_up", "alpha": 3.0, "seed": 2})
    frame.to_csv(tmp_path / "intervention_scale_up_s9.csv", index=False)
    got = read_log(tmp_path / "intervention_scale_up_s9.csv")
    assert list(got.columns) == ["run_id", "time", "time_unit", "phase", "accuracy",
                                 "nc1_trace", "fn", "alpha", "model", "dataset",
                                 "condition", "seed"]
    assert got["time"].tolist() == [10.0, 20.0, 30.0]
    assert got["fn"].tolist()[1:] == [2.0, 1.0] and math.isnan(got["fn"][0])
    assert got["phase"].isna().all() and str(got["phase"].dtype) == "Int64"
    assert got["condition"].tolist() == ["scale_up"] * 3 and got["seed"].tolist() == [2] * 3
    assert got["alpha"].tolist() == [3.0] * 3
    assert run_table(got, OnsetRule.preset("rupa2026")).onset_epoch.tolist() == [30.0]


# ----------------------------------------------------------------------------- analysis
def test_presets_and_their_errors():
    """Presets set phase 2 (rupa2026) or none (ncsim); unknown presets and thresholds that are
    not finite and positive are refused with the allowed values."""
    assert OnsetRule.preset("rupa2026") == OnsetRule("nc1_trace", 0.01, 2, False, 1)
    assert OnsetRule.preset("ncsim", 0.05) == OnsetRule("nc1_trace", 0.05, None, False, 1)
    with pytest.raises(InputError, match=r"^unknown preset 'paper'; allowed: rupa2026, ncsim$"):
        OnsetRule.preset("paper")
    for bad in (0, -0.5, math.nan, math.inf):
        with pytest.raises(InputError, match="^onset threshold must be a finite number > 0, got "):
            OnsetRule.preset("rupa2026", bad)


def onset_part(**columns) -> pd.DataFrame:
    base = {"time": [0.0, 10.0, 20.0, 30.0, 40.0], "phase": [1, 1, 2, 2, 2],
            "nc1_trace": [np.nan, 0.005, 0.5, 0.008, 0.002], "fn": [np.nan, 7.0, 5.0, 3.0, 2.0]}
    base.update(columns)
    return pd.DataFrame(base)


def test_run_onset_phase_rules_and_summary_values():
    """rupa2026 searches phase 2 only (onset 30, fn* 3); the ncsim preset, a log without a
    phase column and a log whose phases are all <NA> search every record (onset 10, fn* 7)."""
    out = run_onset(onset_part(), OnsetRule.preset("rupa2026"))
    assert out == {"onset_epoch": 30.0, "fn_star": 3.0, "min_metric": 0.002,
                   "min_metric_searched": 0.002, "final_metric": 0.002, "final_fn": 2.0,
                   "last_epoch": 40.0, "status": "collapsed"}
    whole = {"onset_epoch": 10.0, "fn_star": 7.0}
    assert run_onset(onset_part(), OnsetRule.preset("ncsim")).items() >= whole.items()
    no_phase = onset_part().drop(columns="phase")
    assert run_onset(no_phase, OnsetRule.preset("rupa2026")).items() >= whole.items()
    na_phase = onset_part(phase=pd.array([pd.NA] * 5, dtype="Int64"))
    assert run_onset(na_phase, OnsetRule.preset("rupa2026")).items() >= whole.items()
    never = run_onset(onset_part(), OnsetRule.preset("rupa2026", 0.001))
    assert math.isnan(never["onset_epoch"]) and math.isnan(never["fn_star"])
    assert never["min_metric"] == 0.002


def test_run_table_status_and_missing_metric():
    """run_table marks runs without onset as not_collapsed and gives <NA> labels when the log
    has none; a missing metric column is an InputError naming the column."""
    traj = pd.concat([onset_part().assign(run_id="a"),
                      onset_part(nc1_trace=[0.5] * 5).assign(run_id="b")], ignore_index=True)
    runs = run_table(traj, OnsetRule.preset("rupa2026"))
    assert runs["run"].tolist() == ["a", "b"]
    assert runs["status"].tolist() == ["collapsed", "not_collapsed"]
    assert runs["onset_epoch"][0] == 30.0 and math.isnan(runs["onset_epoch"][1])
    assert runs["model"].isna().all() and runs["seed"].isna().all()
    with pytest.raises(InputError, match=r"^log of run \? lacks the onset metric column 'nc1'; "
                                         r"its columns: .*; choose another metric"):
        run_onset(onset_part(), OnsetRule(metric="nc1"))
    with pytest.raises(InputError, match=r"^log of run a lacks the onset metric column 'nc1'"):
        run_table(traj, OnsetRule(metric="nc1"))


@pytest.mark.parametrize(("condition", "number"), [
    ("width128", 128.0), ("wd1e-05", 1e-05), ("wd0p0005", 0.0005), ("wd5e-05", 5e-05),
    ("depth2_ext", 2.0), ("lr1.5e-3", 0.0015), ("e8_mlp", 8.0), (7, 7.0),
])
def test_condition_number(condition, number):
    """The first number in a condition name, with 'p' as decimal point and an exponent."""
    assert condition_number(condition) == number


def test_condition_number_without_digits_is_nan():
    """A condition without digits has no number (NaN)."""
    assert math.isnan(condition_number("baseline")) and math.isnan(condition_number("actGELU"))


def threshold_runs() -> pd.DataFrame:
    rows = [("a", "mlp", "mnist", "w1", 0, 0.5), ("b", "mlp", "mnist", "w1", 1, 1.5),
            ("c", "mlp", "mnist", "w10", 0, 1.0), ("d", "mlp", "mnist", "w100", 0, 4.0),
            ("e", "mlp", "mnist", "w100", 1, math.nan), ("f", "mlp", "mnist", "base", 0, 2.0),
            ("g", "resnet20", "cifar10", "w5", 0, 6.0)]
    return pd.DataFrame(rows, columns=["run", "model", "dataset", "condition", "seed",
                                       "fn_star"])


def test_fit_thresholds_group_mean():
    """The mean fit gives each run its group's mean fn* over the collapsed runs."""
    got = fit_thresholds(threshold_runs(), "mean")
    assert got == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 4.0, "e": 4.0, "f": 2.0, "g": 6.0}


def test_fit_thresholds_power_law_by_hand():
    """Group means 1, 1, 4 at x = 1, 10, 100: least squares in (ln x, ln fn) gives slope
    ln4 / (2 ln10) and intercept -ln4 / 6, i.e. 4^(-1/6), 4^(1/3), 4^(5/6); runs without a
    number or alone in their (model, dataset) get NaN."""
    got = fit_thresholds(threshold_runs(), "power")
    assert got["a"] == pytest.approx(4 ** (-1 / 6), rel=1e-12)
    assert got["b"] == pytest.approx(4 ** (-1 / 6), rel=1e-12)
    assert got["c"] == pytest.approx(4 ** (1 / 3), rel=1e-12)
    assert got["d"] == pytest.approx(4 ** (5 / 6), rel=1e-12)
    assert got["e"] == pytest.approx(4 ** (5 / 6), rel=1e-12)
    assert math.isnan(got["f"]) and math.isnan(got["g"])
    with pytest.raises(InputError, match=r"^unknown threshold fit 'linear'; allowed: mean, "
                       r"power$"):
        fit_thresholds(threshold_runs(), "linear")


def test_group_table_statistics_by_hand():
    """fn* 2, 3, 4 and onsets 50, 60, 70: mean 3 / 60, std 1 / 10, CV 1/3 / 1/6, 95% interval
    mean +- t_{0.975,2} std / sqrt 3; a non-collapsed run only counts in n_runs; a single run
    has NaN spread."""
    runs = pd.DataFrame({
        "model": "mlp", "dataset": "mnist", "condition": ["w", "w", "v", "w", "w"],
        "onset_epoch": [50.0, 60.0, 10.0, math.nan, 70.0],
        "fn_star": [2.0, 3.0, 5.0, math.nan, 4.0],
    })
    groups = group_table(runs)
    assert groups["condition"].tolist() == ["w", "v"]
    w = groups.iloc[0]
    assert (w.n_runs, w.n_collapsed) == (4, 3)
    assert (w.fn_star_mean, w.fn_star_std) == (3.0, 1.0)
    assert w.fn_star_cv == pytest.approx(1 / 3, rel=1e-15)
    assert w.fn_star_ci_low == pytest.approx(3 - T_975_2 / math.sqrt(3), rel=1e-13)
    assert w.fn_star_ci_high == pytest.approx(3 + T_975_2 / math.sqrt(3), rel=1e-13)
    assert (w.onset_mean, w.onset_std) == (60.0, 10.0)
    assert w.onset_cv == pytest.approx(1 / 6, rel=1e-15)
    assert w.onset_ci_high == pytest.approx(60 + 10 * T_975_2 / math.sqrt(3), rel=1e-13)
    v = groups.iloc[1]
    assert (v.n_runs, v.n_collapsed, v.fn_star_mean, v.onset_mean) == (1, 1, 5.0, 10.0)
    assert all(math.isnan(v[c]) for c in ("fn_star_std", "fn_star_cv", "fn_star_ci_low",
                                          "onset_ci_high"))


TIMES = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]


def lead_run(run_id: str, seed: object, condition: str, fn: list[float],
             onset: float) -> pd.DataFrame:
    nc1 = [1.0 if t < onset else 0.001 for t in TIMES]
    return pd.DataFrame({"run_id": run_id, "time": TIMES, "phase": 2, "fn": fn,
                         "nc1_trace": nc1, "model": "mlp", "dataset": "mnist",
                         "condition": condition, "seed": seed})


def lead_traj(with_unseeded: bool = False, unseeded_group: str = "base") -> pd.DataFrame:
    """Runs A, B, C (seeds 0, 1, 2) of group w: onsets 50, 60, 70 with fn* 2, 3, 4; U without
    seed: onset 40, fn* 2."""
    parts = [lead_run("A", 0, "w", [6, 5, 4, 3.5, 3, 2, 1.5, 1], 50),
             lead_run("B", 1, "w", [6, 5, 4.5, 4, 3.5, 3.2, 3, 2], 60),
             lead_run("C", 2, "w", [6, 5, 4.5, 4.2, 4.1, 4.05, 4.02, 4], 70)]
    if with_unseeded:  # a run without seed (like the paper's baseline.csv), own group
        parts.append(lead_run("U", pd.NA, unseeded_group, [6, 5, 4, 3, 2, 1, 1, 1], 40))
    return pd.concat(parts, ignore_index=True)


def test_lead_table_in_sample_and_held_out_by_hand():
    """In-sample threshold 3 (group mean): A crosses at 40 (lead 10), B at 60 (lead 0), C never.
    Held out: A 3.5 (cross 30, lead 20), B 3 (lead 0), C 2.5 (never)."""
    traj = lead_traj()
    runs = run_table(traj, OnsetRule.preset("rupa2026"))
    assert runs["onset_epoch"].tolist() == [50.0, 60.0, 70.0]
    assert runs["fn_star"].tolist() == [2.0, 3.0, 4.0]
    leads = lead_table(traj, runs).set_index("run")
    assert leads["fn_pred_in_sample"].tolist() == [3.0, 3.0, 3.0]
    assert leads["t_cross_in_sample"].tolist()[:2] == [40.0, 60.0]
    assert leads["lead_in_sample"].tolist()[:2] == [10.0, 0.0]
    assert leads["fn_pred_held_out"].tolist() == [3.5, 3.0, 2.5]
    assert leads["t_cross_held_out"].tolist()[:2] == [30.0, 60.0]
    assert leads["lead_held_out"].tolist()[:2] == [20.0, 0.0]
    for col in ("t_cross_in_sample", "lead_in_sample", "t_cross_held_out", "lead_held_out"):
        assert math.isnan(leads.loc["C", col]), col


def test_lead_summary_by_hand():
    """Leads 10, 0 (in-sample): mean 5, std sqrt 50, half ahead, MAE 5; held out 20, 0: each
    run is predicted by the other seed's lead, MAE 20."""
    traj = lead_traj()
    summary = lead_summary(lead_table(traj, run_table(traj, OnsetRule.preset("rupa2026"))))
    ins, held = summary["in_sample"], summary["held_out"]
    assert (ins["n_crossed"], ins["n_runs"], ins["lead_mean"]) == (2, 3, 5.0)
    assert ins["lead_std"] == pytest.approx(math.sqrt(50), rel=1e-15)
    assert (ins["ordering_accuracy"], ins["mae"]) == (0.5, 5.0)
    assert (held["n_crossed"], held["n_runs"], held["lead_mean"]) == (2, 3, 10.0)
    assert held["lead_std"] == pytest.approx(math.sqrt(200), rel=1e-15)
    assert (held["ordering_accuracy"], held["mae"]) == (0.5, 20.0)


def test_analysis_with_a_run_without_seed():
    """A run without seed (U, own group base, like the paper's baseline.csv) next to seeded
    runs: in-sample leads 10, 0, 0 (mean 10/3, std sqrt(100/3), MAE 40/9); held out, U has no
    fit from other seeds (NaN) and A, B keep MAE 20."""
    out = analyze(lead_traj(with_unseeded=True), OnsetRule.preset("rupa2026"))
    leads = out["leads"].set_index("run")
    assert leads.loc["U", "lead_in_sample"] == 0.0
    assert math.isnan(leads.loc["U", "fn_pred_held_out"])
    assert leads["fn_pred_held_out"].tolist()[:3] == [3.5, 3.0, 2.5]
    ins, held = out["lead_summary"]["in_sample"], out["lead_summary"]["held_out"]
    assert (ins["n_crossed"], ins["n_runs"]) == (3, 4)
    assert ins["lead_mean"] == pytest.approx(10 / 3, rel=1e-15)
    assert ins["lead_std"] == pytest.approx(math.sqrt(100 / 3), rel=1e-15)
    assert ins["ordering_accuracy"] == pytest.approx(1 / 3, rel=1e-15)
    assert ins["mae"] == pytest.approx(40 / 9, rel=1e-15)
    assert (held["n_crossed"], held["lead_mean"], held["mae"]) == (2, 10.0, 20.0)


# ----------------------------------------------------------------------------- datasets
def idx_bytes(array: np.ndarray, code: int, dtype: str) -> bytes:
    header = bytes([0, 0, code, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def test_read_idx_element_types_and_gzip(tmp_path):
    """read_idx returns the stored shape and values for uint8, big-endian int32 and float64,
    plain or gzip-compressed."""
    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "u8").write_bytes(idx_bytes(u8, 0x08, "u1"))
    i4 = np.array([-5, 70000, 3])
    with gzip.open(tmp_path / "i4.gz", "wb") as handle:
        handle.write(idx_bytes(i4, 0x0C, ">i4"))
    f8 = np.array([[0.5, -1.25]])
    (tmp_path / "f8").write_bytes(idx_bytes(f8, 0x0E, ">f8"))
    assert np.array_equal(read_idx(tmp_path / "u8"), u8) and read_idx(tmp_path / "u8").shape \
        == (2, 3, 4)
    assert read_idx(tmp_path / "i4.gz").tolist() == [-5, 70000, 3]
    assert read_idx(tmp_path / "f8").tolist() == [[0.5, -1.25]]


def test_read_idx_errors_name_the_file(tmp_path):
    """Non-IDX, unknown element type and truncated files are InputErrors naming the file."""
    (tmp_path / "text").write_bytes(b"hello world")
    (tmp_path / "kind").write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]))
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros(4), 0x08, "u1")[:-1])
    with pytest.raises(InputError, match=f"^{tmp_path / 'text'} is not an IDX file$"):
        read_idx(tmp_path / "text")
    with pytest.raises(InputError, match=f"^{tmp_path / 'kind'}: unknown IDX element type 0xa$"):
        read_idx(tmp_path / "kind")
    with pytest.raises(InputError, match=f"^{tmp_path / 'short'}: IDX file is truncated$"):
        read_idx(tmp_path / "short")


def write_mnist_like(root: Path) -> tuple[np.ndarray, ...]:
    """Tiny MNIST-style IDX files: 6 train (3 classes x 2) and 3 test images of 2 x 3 pixels,
    under both file-name styles and with and without gzip."""
    root.mkdir(parents=True, exist_ok=True)
    x_tr = (np.arange(36) * 7 % 256).astype(np.uint8).reshape(6, 2, 3)
    y_tr = np.array([2, 0, 1, 0, 2, 1], dtype=np.uint8)
    x_te = (np.arange(18) * 5 % 256).astype(np.uint8).reshape(3, 2, 3)
    y_te = np.array([1, 2, 0], dtype=np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(x_tr, 0x08, "u1"))
    with gzip.open(root / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(idx_bytes(y_tr, 0x08, "u1"))
    (root / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(x_te, 0x08, "u1"))
    with gzip.open(root / "t10k-labels.idx1-ubyte.gz", "wb") as handle:
        handle.write(idx_bytes(y_te, 0x08, "u1"))
    return x_tr, y_tr, x_te, y_te


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_from_a_folder(tmp_path, name):
    """mnist and fashion_mnist read the four IDX files of --data-root (any naming style), keep
    the raw pixels without normalisation, and a class-balanced subset in class order."""
    x_tr, y_tr, x_te, y_te = write_mnist_like(tmp_path / "idx")
    data = load_dataset(name, root=tmp_path / "idx", normalize=False)
    assert data.name == name and data.classes == 3 and data.input_shape == (1, 2, 3)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.y_train.tolist() == y_tr.tolist() and data.y_test.tolist() == y_te.tolist()
    assert np.array_equal(data.x_train[:, 0].numpy(), x_tr.astype(np.float32))
    assert np.array_equal(data.x_test[:, 0].numpy(), x_te.astype(np.float32))
    sub = load_dataset(name, per_class=1, root=tmp_path / "idx", normalize=False)
    assert sub.y_train.tolist() == [0, 1, 2]


def write_cifar(folder: Path, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Five tiny training batches and a test batch in the CIFAR-10 python pickle format."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(0)
    xs, ys = [], []
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = gen.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 2 for j in range(per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels))
    return np.concatenate(xs), np.concatenate(ys)


def test_cifar10_batches_in_the_python_subfolder(tmp_path):
    """CIFAR-10 batches under root/cifar-10-batches-py are read in batch order; the training
    set is normalised per channel with its own mean and std, the test set with the same."""
    x, y = write_cifar(tmp_path / "cifar-10-batches-py")
    x_tr, y_tr, x_te, y_te = read_cifar10(tmp_path)
    assert x_tr.shape == (10, 3, 32, 32) and x_tr.dtype == np.uint8
    assert np.array_equal(x_tr, x[:10]) and np.array_equal(x_te, x[10:])
    assert y_tr.tolist() == [0, 1, 1, 0, 0, 1, 1, 0, 0, 1] and y_te.tolist() == [1, 0]
    assert y_tr.dtype == np.int64
    raw = load_dataset("cifar10", root=tmp_path, normalize=False)
    assert raw.classes == 2 and raw.input_shape == (3, 32, 32)
    assert np.array_equal(raw.x_train.numpy(), x[:10].astype(np.float32))
    data = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py")
    train64 = x[:10].astype(np.float64)
    mean = train64.mean(axis=(0, 2, 3), keepdims=True)
    std = train64.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    assert np.allclose(data.x_train.numpy(), (train64 - mean) / std, rtol=0, atol=1e-5)
    assert np.allclose(data.x_test.numpy(), (x[10:] - mean) / std, rtol=0, atol=1e-5)
    assert data.y_test.tolist() == [1, 0]


def test_cifar10_missing_batch_says_what_is_needed(tmp_path):
    """Without test_batch the error names the missing file and the expected archive."""
    write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"missing {tmp_path / 'test_batch'}; ")
    assert "cifar-10-python.tar.gz extracted in --data-root" in msg


def test_digits_without_scikit_learn(monkeypatch):
    """Without scikit-learn the digits dataset is an InputError telling how to install it."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(InputError, match=r"^dataset 'digits' needs scikit-learn \(pip install "
                       r"scikit-learn\)$"):
        load_dataset("digits")


def test_mnist1d_without_the_package(monkeypatch):
    """Without mnist1d the dataset is an InputError telling how to install it."""
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(InputError, match=r"^dataset 'mnist1d' needs the package mnist1d "
                       r"\(pip install mnist1d\)$"):
        load_dataset("mnist1d")


def test_mnist1d_is_generated_offline_with_seed_42(monkeypatch):
    """mnist1d calls make_dataset (never the downloading get_dataset) with seed 42 and shapes
    the signals as (N, 1, 40); the subset is class-balanced."""
    mnist1d_data = pytest.importorskip("mnist1d.data")
    seen = []

    def fake_make_dataset(args):
        seen.append(args.seed)
        return {"x": np.arange(12 * 40, dtype=np.float64).reshape(12, 40),
                "y": np.arange(12) % 3,
                "x_test": -np.arange(3 * 40, dtype=np.float64).reshape(3, 40),
                "y_test": np.array([2, 1, 0])}

    def no_download(*args, **kwargs):
        raise AssertionError("get_dataset downloads")

    monkeypatch.setattr(mnist1d_data, "make_dataset", fake_make_dataset)
    monkeypatch.setattr(mnist1d_data, "get_dataset", no_download, raising=False)
    data = load_dataset("mnist1d", per_class=2, normalize=False)
    assert seen == [42]
    assert data.x_train.shape == (6, 1, 40) and data.x_test.shape == (3, 1, 40)
    assert data.y_train.tolist() == [0, 0, 1, 1, 2, 2] and data.classes == 3
    rows = data.x_train[:, 0, 0] / 40  # row r of the generated set starts at 40 r, label r % 3
    assert all(int(r) % 3 == c for r, c in zip(rows.tolist(), data.y_train.tolist()))
    assert data.x_test[:, 0, 1].tolist() == [-1.0, -41.0, -81.0]


def test_held_out_lead_of_a_run_without_seed_in_a_seeded_group():
    """U without seed in group w: as in the held-out threshold fit, the seeded runs are other
    seeds for U but U is no other seed for them. Held-out thresholds A 3.5, B 3, C 2.5, U 3
    give leads 20, 0, NaN, 10; each run is predicted by the mean lead of its other seeds:
    A by B (error 20), B by A (20), U by A and B (|10 - 10| = 0): MAE 40/3. In sample the
    group mean 2.75 gives leads 0, -10, NaN, 0."""
    out = analyze(lead_traj(with_unseeded=True, unseeded_group="w"),
                  OnsetRule.preset("rupa2026"))
    leads = out["leads"].set_index("run")
    assert leads["fn_pred_in_sample"].tolist() == [2.75] * 4
    assert leads["fn_pred_held_out"].tolist() == [3.5, 3.0, 2.5, 3.0]
    assert leads.loc[["A", "B", "U"], "lead_in_sample"].tolist() == [0.0, -10.0, 0.0]
    assert leads.loc[["A", "B", "U"], "lead_held_out"].tolist() == [20.0, 0.0, 10.0]
    held = out["lead_summary"]["held_out"]
    assert (held["n_crossed"], held["n_runs"], held["lead_mean"], held["lead_std"]) == \
        (3, 4, 10.0, 10.0)
    assert held["ordering_accuracy"] == pytest.approx(2 / 3, rel=1e-15)
    assert held["mae"] == pytest.approx(40 / 3, rel=1e-15)


def test_fractional_phase_is_an_input_error_and_one_path_is_read(tmp_path):
    """A phase of 1.5 is refused with the log's name and the allowed phases (paper and ncsim
    schema); a single path given to read_logs is read as one log, not letter by letter; an
    ncsim log's integer times and fn come back as float64."""
    ncsim_log = pd.DataFrame({"time": [0, 1], "fn": [2, 1], "nc1_trace": [0.5, 0.005],
                              "phase": [1, 1.5]})
    ncsim_log.to_csv(tmp_path / "depth3_s4.csv", index=False)
    paper = pd.DataFrame({"epoch": [1, 2], "nc1": [0.5, 0.1], "feat_norm": [1.0, 2.0],
                          "phase": [1.0, 1.5]})
    paper.to_csv(tmp_path / "width128_s0.csv", index=False)
    for name in ("depth3_s4", "width128_s0"):
        with pytest.raises(InputError, match=f"^log {name}: phase 1.5 is not a whole number; "
                                             "phases are numbered 0, 1, 2, ... .paper logs: "
                                             "1 = cross-entropy, 2 = MSE.$"):
            read_log(tmp_path / f"{name}.csv")
    ncsim_log.assign(phase=[1, 2]).to_csv(tmp_path / "depth3_s4.csv", index=False)
    table = read_logs(str(tmp_path / "depth3_s4.csv"))
    assert list(table["run_id"].unique()) == ["depth3_s4"]
    assert table["time"].dtype == np.float64 and table["fn"].dtype == np.float64
    assert list(table["phase"]) == [1, 2]


_PAPER_HEAD = ("epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
               "380,2,0.998,0.983,0.0131,0.2,0.3,1.15\n")


@pytest.mark.parametrize("opener", [open, gzip.open])
def test_a_log_cut_short_is_refused_not_read_in_part(tmp_path, opener):
    """A log cut in its nc1 (0.01026 -> 0.0) would read as a collapse at epoch 390, its
    missing fields as blanks; one cut in its last number (feat_norm 1.14 -> 1) has every
    field but no line end. Both are refused, naming the line, in plain and gzip files; the
    whole log reads as written."""
    cases = {"cut": _PAPER_HEAD + "390,2,0.998,0.983,0.01026,0.2,0.3,1",
             "fields": _PAPER_HEAD + "390,2,0.998,0.983,0.0",
             "whole": _PAPER_HEAD + "390,2,0.998,0.983,0.01026,0.2,0.3,1.14\n"}
    suffix = ".csv.gz" if opener is gzip.open else ".csv"
    for name, text in cases.items():
        with opener(tmp_path / f"{name}_s0{suffix}", "wt") as handle:
            handle.write(text)
    with pytest.raises(InputError, match=r"the last line \('390,2,0.998,0.983,0.01026,0.2,0.3,"
                                         r"1'\) has no line end, so the file may be cut short"):
        read_log(tmp_path / f"cut_s0{suffix}")
    with pytest.raises(InputError, match="line 3 has 5 of the 8 fields of the header"):
        read_log(tmp_path / f"fields_s0{suffix}")
    log = read_log(tmp_path / f"whole_s0{suffix}")
    assert log["nc1_trace"].tolist() == [0.0131, 0.01026]
