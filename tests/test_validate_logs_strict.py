"""Numbers a user reads from training logs, each computed by hand from small built logs.

Covered: the default onset rule; the end-of-log values of a run (they span every phase, not
only the searched one) and the unit of its times; the group counts of collapsed,
not-collapsed and vanishing runs; the leave-one-seed-out power fit of the lead-time
threshold; onsets and crossings of tables whose rows are not in time order; logs that are
cut short (one field missing, bz2 and xz files) or hold no records, tables with both an
``epoch`` and a ``time`` column, and names that merely begin with a documented paper log
name; the surrogate's default size and integration horizon.
"""

from __future__ import annotations

import bz2
import lzma
import math
import re

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate.analysis import (
    OnsetRule,
    analyze,
    group_table,
    lead_table,
    run_onset,
    run_table,
)
from ncsim.validate.logs import read_log, read_logs, run_labels


def one_run(times, phases, nc1, fn, run_id="r", condition="c", seed=0):
    """A trajectory table of one run of the MNIST MLP (labels fixed)."""
    return pd.DataFrame({"run_id": run_id, "time": np.asarray(times, float),
                         "phase": pd.array(phases, dtype="Int64"),
                         "nc1_trace": np.asarray(nc1, float), "fn": np.asarray(fn, float),
                         "model": "mlp", "dataset": "mnist", "condition": condition,
                         "seed": seed})


# ----------------------------------------------------------------------------- onset rule
def test_default_rule_is_the_phase_two_first_record_rule():
    """``OnsetRule()`` without arguments reads the onset as the paper did: the first phase-2
    record below 0.01. nc1 dips to 0.005 at epoch 10 in the cross-entropy phase, which is not
    an onset; the first phase-2 record below 0.01 is epoch 30 (nc1 0.008, fn 2.0), not the
    interpolated crossing between epochs 20 and 30."""
    log = one_run([0, 10, 20, 30, 40], [1, 1, 2, 2, 2], [0.5, 0.005, 0.05, 0.008, 0.002],
                  [5.0, 4.0, 3.0, 2.0, 1.5])
    out = run_onset(log, OnsetRule())
    assert (out["onset_epoch"], out["fn_star"], out["status"]) == (30.0, 2.0, "collapsed")


# ----------------------------------------------------------------------------- run summary
def test_final_values_and_last_epoch_span_every_phase():
    """Phases 1, 2, 3; the onset is searched in phase 2 only (epoch 30, fn 2.0), but the end
    of the log is the last record of any phase: last_epoch is 50 (the largest time),
    final_metric is the last finite nc1 (0.02 at epoch 40; epoch 50 is blank), final_fn the
    last finite fn (2.5 at epoch 40: neither the smallest fn, 1.0 at epoch 10, nor a phase-2
    value). min_metric is the smallest nc1 of the whole log (0.004 in phase 1) and
    min_metric_searched that of phase 2 (0.008)."""
    log = one_run([0, 10, 20, 30, 40, 50], [1, 1, 2, 2, 3, 3],
                  [0.5, 0.004, 0.05, 0.008, 0.02, np.nan], [4.0, 1.0, 3.0, 2.0, 2.5, np.nan])
    out = run_onset(log, OnsetRule.preset("rupa2026"))
    assert (out["onset_epoch"], out["fn_star"]) == (30.0, 2.0)
    assert out["last_epoch"] == 50.0
    assert out["final_metric"] == 0.02
    assert out["final_fn"] == 2.5
    assert (out["min_metric"], out["min_metric_searched"]) == (0.004, 0.008)


def test_time_unit_of_a_run_is_its_one_unit_or_missing_when_mixed():
    """A run whose records all carry one time unit reports it; a run whose records carry two
    units has no single unit of its onset time, so its time_unit is <NA> (not the first
    record's)."""
    one = one_run([0, 10, 20], [2, 2, 2], [0.5, 0.05, 0.005], [3.0, 2.0, 1.0], run_id="a")
    one["time_unit"] = "epoch"
    mixed = one_run([0, 10, 20], [2, 2, 2], [0.5, 0.05, 0.005], [3.0, 2.0, 1.0], run_id="b")
    mixed["time_unit"] = ["epoch", "epoch", "t"]
    runs = run_table(pd.concat([one, mixed], ignore_index=True),
                     OnsetRule.preset("rupa2026")).set_index("run")
    assert runs.loc["a", "time_unit"] == "epoch"
    assert pd.isna(runs.loc["b", "time_unit"])
    assert runs["onset_epoch"].tolist() == [20.0, 20.0]


# ----------------------------------------------------------------------------- groups
def test_group_counts_collapsed_not_collapsed_and_vanishing_runs_apart():
    """One group of three runs: seed 0 collapses (epoch 20, fn* 1.0), seed 1 never goes below
    0.01 (not_collapsed), seed 2 has its fn fall to 5e-4 x its peak (vanishing). The group has
    3 runs, 1 collapsed and 1 vanishing (the run that did not collapse is not vanishing), and
    its onset and fn* means are those of the collapsed run alone."""
    runs = pd.concat([
        one_run([0, 10, 20], [2, 2, 2], [0.5, 0.05, 0.005], [3.0, 2.0, 1.0], "s0", seed=0),
        one_run([0, 10, 20], [2, 2, 2], [0.5, 0.05, 0.02], [3.0, 2.0, 1.0], "s1", seed=1),
        one_run([0, 10, 20], [2, 2, 2], [0.5, 0.05, 0.005], [4.0, 1.0, 0.002], "s2", seed=2),
    ], ignore_index=True)
    table = run_table(runs, OnsetRule.preset("rupa2026"))
    assert table["status"].tolist() == ["collapsed", "not_collapsed", "vanishing"]
    (group,) = group_table(table).to_dict("records")
    assert (group["n_runs"], group["n_collapsed"], group["n_vanishing"]) == (3, 1, 1)
    assert (group["onset_mean"], group["fn_star_mean"]) == (20.0, 1.0)
    assert math.isnan(group["onset_std"]) and math.isnan(group["fn_star_cv"])


# ----------------------------------------------------------------------------- lead time
def test_held_out_power_fit_leaves_the_seed_out_of_every_group():
    """Widths 100, 400, 1600 with seeds 0 and 1; seed 1 has fn* 1, 2, 4 (exactly 0.1 x
    width^(1/2)), seed 0 has fn* 1, 2, 16. Leaving seed 0 out of every group, the log-log line
    through the seed-1 runs is exact, so each seed-0 run gets fn_pred 0.1 x width^(1/2) = 1, 2,
    4. Leaving seed 1 out, the line is fitted to (100, 1), (400, 2), (1600, 16): with
    u = log_4(width / 400) = -1, 0, 1 and log2 fn* = 0, 1, 4 the least-squares slope is
    (4 - 0) / 2 = 2 per u and the value at u = 0 the mean 5/3, so fn_pred = 2^(-1/3),
    2^(5/3), 2^(11/3). (Keeping the other widths' seed-1 runs would move these.) Tolerance:
    a least-squares fit and exponentials, a few ulps."""
    widths, seeds = [100, 400, 1600] * 2, [0, 0, 0, 1, 1, 1]
    runs = pd.DataFrame({
        "run": [f"w{w}_s{s}" for w, s in zip(widths, seeds, strict=True)],
        "model": "mlp", "dataset": "mnist", "condition": [f"width{w}" for w in widths],
        "seed": seeds, "onset_epoch": 50.0, "fn_star": [1.0, 2.0, 16.0, 1.0, 2.0, 4.0]})
    traj = pd.DataFrame({"run_id": runs["run"], "time": 10.0, "fn": 100.0})
    leads = lead_table(traj, runs, fit="power").set_index("run")
    expected = {"w100_s0": 1.0, "w400_s0": 2.0, "w1600_s0": 4.0, "w100_s1": 2 ** (-1 / 3),
                "w400_s1": 2 ** (5 / 3), "w1600_s1": 2 ** (11 / 3)}
    for run, value in expected.items():
        assert leads.loc[run, "fn_pred_held_out"] == pytest.approx(value, rel=1e-12), run


def test_onsets_and_crossings_do_not_depend_on_the_row_order():
    """Two runs of one group, their records given latest first. Run a (seed 0): nc1 first
    below 0.01 at epoch 30 (fn* 2.0); run b (seed 1): at epoch 20 (fn* 3.0). In-sample
    fn_pred is the group mean 2.5: fn first <= 2.5 at epoch 20 for a (lead 10) and 30 for b
    (lead -10). Held out, a's fn_pred is b's fn* 3.0 (first fn <= 3 at epoch 10, lead 20) and
    b's is 2.0, which b's fn (down to 2.2) never reaches. Every time is the record's own
    epoch, read in time order whatever the order of the rows."""
    times = [0, 10, 20, 30, 40]
    a = one_run(times, [2] * 5, [0.5, 0.1, 0.05, 0.008, 0.004], [4.0, 3.0, 2.5, 2.0, 1.8],
                "a", seed=0)
    b = one_run(times, [2] * 5, [0.5, 0.2, 0.008, 0.006, 0.002], [5.0, 3.5, 3.0, 2.4, 2.2],
                "b", seed=1)
    traj = pd.concat([a, b], ignore_index=True).iloc[::-1].reset_index(drop=True)
    out = analyze(traj, OnsetRule.preset("rupa2026"))
    runs = out["runs"].set_index("run")
    assert runs.loc[["a", "b"], "onset_epoch"].tolist() == [30.0, 20.0]
    assert runs.loc[["a", "b"], "fn_star"].tolist() == [2.0, 3.0]
    leads = out["leads"].set_index("run").loc[["a", "b"]]
    assert leads["fn_pred_in_sample"].tolist() == [2.5, 2.5]
    assert leads["t_cross_in_sample"].tolist() == [20.0, 30.0]
    assert leads["lead_in_sample"].tolist() == [10.0, -10.0]
    assert leads["fn_pred_held_out"].tolist() == [3.0, 2.0]
    assert leads.loc["a", "t_cross_held_out"] == 10.0
    assert math.isnan(leads.loc["b", "t_cross_held_out"])


# ----------------------------------------------------------------------------- reading logs
def test_a_record_missing_only_its_last_field_is_refused(tmp_path):
    """A paper log whose second record ends after nc3, without its feat_norm (7 of the 8 header
    fields, with a line end), would read that feat_norm as blank; the record is refused naming
    its line (line 3), as a record missing several fields is. The same file with the field
    written reads as written."""
    head = ("epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
            "380,2,0.998,0.983,0.0131,0.2,0.3,1.15\n")
    tail = "400,2,0.999,0.983,0.009,0.2,0.3,1.12\n"
    (tmp_path / "short_s0.csv").write_text(head + "390,2,0.998,0.983,0.0102,0.2,0.3\n" + tail)
    with pytest.raises(InputError, match="line 3 has 7 of the 8 fields of the header"):
        read_log(tmp_path / "short_s0.csv")
    (tmp_path / "whole_s0.csv").write_text(head + "390,2,0.998,0.983,0.0102,0.2,0.3,1.14\n"
                                           + tail)
    assert read_log(tmp_path / "whole_s0.csv")["fn"].tolist() == [1.15, 1.14, 1.12]


def test_a_table_with_time_and_epoch_columns_is_an_ncsim_log(tmp_path):
    """A table with a ``time`` column is read in ncsim's schema even when it also carries an
    ``epoch`` column (here the epoch of each flow-time record): time, fn and nc1_trace are its
    own columns, read unchanged, and ``epoch`` stays an extra column."""
    path = tmp_path / "flow_s0.csv"
    pd.DataFrame({"run_id": "flow_s0", "time": [0.5, 1.0, 1.5], "epoch": [1, 2, 3],
                  "phase": [2, 2, 2], "fn": [3.0, 2.0, 1.5],
                  "nc1_trace": [0.5, 0.008, 0.004]}).to_csv(path, index=False)
    log = read_log(path)
    assert log["time"].tolist() == [0.5, 1.0, 1.5]
    assert log["epoch"].tolist() == [1, 2, 3]
    assert log["fn"].tolist() == [3.0, 2.0, 1.5]
    assert log["nc1_trace"].tolist() == [0.5, 0.008, 0.004]


def test_a_log_without_records_among_others_is_refused_naming_it(tmp_path):
    """Of two logs, one holds only its header: reading both is refused and the message names
    that file (a run without records would otherwise vanish from the tables unseen); the
    other log alone reads as its two records."""
    full, empty = tmp_path / "width128_s0.csv", tmp_path / "width128_s1.csv"
    pd.DataFrame({"epoch": [10, 20], "phase": [2, 2], "nc1": [0.02, 0.008],
                  "feat_norm": [1.3, 1.2]}).to_csv(full, index=False)
    empty.write_text("epoch,phase,nc1,feat_norm\n")
    with pytest.raises(InputError, match=re.escape(f"log(s) without records: {empty}")):
        read_logs([full, empty])
    assert read_logs([full])["time"].tolist() == [10.0, 20.0]


def test_a_documented_name_with_more_after_it_is_not_a_paper_log():
    """Model and dataset come from a file name only when its condition is one of the paper's
    documented names as a whole: ``cifar10_aug``, ``width128x`` and ``depth5_relu6`` begin
    with documented names (ResNet-20 on CIFAR-10, the MNIST MLP) but are other runs, so they
    are ``unlabelled`` and keep their condition and seed; ``cifar10_s0`` itself is labelled."""
    for name, condition, seed in (("cifar10_aug_s0", "cifar10_aug", 0),
                                  ("width128x_s1", "width128x", 1),
                                  ("depth5_relu6_s2", "depth5_relu6", 2)):
        assert run_labels(name) == {"model": "unlabelled", "dataset": "unlabelled",
                                    "condition": condition, "seed": seed}, name
    assert run_labels("cifar10_s0") == {"model": "resnet20", "dataset": "cifar10",
                                        "condition": "cifar10", "seed": 0}


@pytest.mark.parametrize("suffix, opener", [(".csv.bz2", bz2.open), (".csv.xz", lzma.open)],
                         ids=["bz2", "xz"])
def test_a_compressed_log_cut_short_is_refused(tmp_path, suffix, opener):
    """bz2 and xz logs are checked for whole records as plain ones are: a record of 5 of the 8
    header fields (cut in its nc1, 0.01026 -> 0.0, which would read as a collapse) and a last
    line without a line end are refused, naming the line; the whole file reads as written."""
    head = ("epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
            "380,2,0.998,0.983,0.0131,0.2,0.3,1.15\n")
    cases = {"fields": head + "390,2,0.998,0.983,0.0\n400,2,0.999,0.983,0.009,0.2,0.3,1.1\n",
             "cut": head + "390,2,0.998,0.983,0.01026,0.2,0.3,1",
             "whole": head + "390,2,0.998,0.983,0.01026,0.2,0.3,1.14\n"}
    for name, text in cases.items():
        with opener(tmp_path / f"{name}_s0{suffix}", "wt") as handle:
            handle.write(text)
    with pytest.raises(InputError, match="line 3 has 5 of the 8 fields of the header"):
        read_log(tmp_path / f"fields_s0{suffix}")
    with pytest.raises(InputError, match="has no line end, so the file may be cut short"):
        read_log(tmp_path / f"cut_s0{suffix}")
    log = read_log(tmp_path / f"whole_s0{suffix}")
    assert log["nc1_trace"].tolist() == [0.0131, 0.01026]
    assert log["run_id"].iloc[0] == "whole_s0"


# ----------------------------------------------------------------------------- surrogate
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny two-phase run (Gaussian mixture, K = 3, 25 samples per class, input dimension
    4; ReLU MLP of one hidden layer of width 5; one CE epoch with Adam, then two MSE epochs
    with plain SGD, lr 0.05, weight decay 1e-2), written as 'ncsim validate train' writes it."""
    from ncsim.io import write_table
    from ncsim.validate.data import load_dataset
    from ncsim.validate.train import Phase, TrainConfig, train

    out = tmp_path_factory.mktemp("small") / "run"
    data_args = {"name": "gaussian", "per_class": 25, "seed": 0, "classes": 3, "dim": 4}
    config = TrainConfig(
        arch="mlp", depth=1, width=5, activation="relu",
        phases=(Phase("ce", 1, "adam", 1e-2, 0.0, schedule="constant", batch_size=100),
                Phase("mse", 2, "sgd", 0.05, 1e-2, schedule="constant", batch_size=100)),
        nc_every=1, checkpoint_dir=str(out / "checkpoints"), run_id="small",
        data_args=data_args, eval_test=False)
    write_table(train(config, load_dataset(**data_args)).log, out / "log.parquet")
    return out


def test_surrogate_size_and_horizon_defaults(small_run, monkeypatch):
    """Without --per-class the surrogate takes min(20, smallest class) = 20 samples per class
    of the 25. With a horizon of 1e-3 MSE phases, the integration runs to the surrogate's own
    collapse time scale: t_end = wd_horizon / (2 eta_H lambda_H) in ncsim time (the features'
    variance decays at the rate 2 eta_H lambda_H), here 0.03 / (2 x about 0.015) = about 1,
    and the simulated curve ends there (tolerance: the solver's last step lands on t_end up
    to rounding). The closed-form fn* columns play no part here and are left out (NaN) to
    keep the test fast."""
    import importlib

    from ncsim.validate import surrogate
    from ncsim.validate.compare import compare_run

    no_theory = {"fn_star_theory": math.nan, "onset_time_theory": math.nan,
                 "collapsed_theory": None}
    monkeypatch.setattr(importlib.import_module("ncsim.flow.simulate"), "_theory_columns",
                        lambda spec: dict(no_theory))
    monkeypatch.setattr(surrogate, "closed_form_fn_star", lambda spec: (math.nan, "left out"))
    res = compare_run(small_run, horizon=1e-3, wd_horizon=0.03, max_steps=2000)
    row = res["table"].iloc[0]
    assert row["n_per_class"] == 20
    rate = row["eta_h"] * row["lambda_h"]
    assert row["surrogate_t_end"] == pytest.approx(0.03 / (2 * rate), rel=1e-12)
    assert 0.5 < row["surrogate_t_end"] < 2.0
    assert res["simulated"]["time"].iloc[-1] == pytest.approx(row["surrogate_t_end"], rel=1e-9)


# ----------------------------------------------------------------------------- fn* record
@pytest.mark.parametrize("preset", ["ncsim", "rupa2026"])
def test_fn_star_is_the_onset_records_own_fn_even_beside_a_record_of_the_same_epoch(preset):
    """Epoch 10 logged twice, as the end of phase 1 (fn 3.0) and the start of phase 2 (NC1
    0.008 below 0.01, fn blank): the onset is epoch 10 and fn* is NaN under both presets,
    not the phase-1 record's 3.0 (in an intervention log that record holds the norm before
    the rescaling)."""
    log = one_run([5.0, 10.0, 10.0, 15.0], [1, 1, 2, 2], [0.7, 0.5, 0.008, 0.002],
                  [4.0, 3.0, np.nan, 1.5])
    out = run_onset(log, OnsetRule.preset(preset))
    assert out["onset_epoch"] == 10.0
    assert math.isnan(out["fn_star"])
    assert out["status"] == "collapsed"


def test_onset_record_is_the_record_that_crossed():
    """onset_record: the index of the crossing record in the arrays given (gaps in the metric
    skipped); of two records at t = 20 the second, whose metric is below 0.01; with stay 2
    the first of two records below in a row; None without a crossing."""
    from ncsim.onset import onset_record

    assert onset_record([10.0, 20.0, 30.0], [0.5, 0.005, 0.001], 0.01) == 1
    assert onset_record([10.0, 20.0, 20.0], [0.5, 0.5, 0.005], 0.01) == 2
    assert onset_record([1.0, 2.0, 3.0, 4.0], [0.5, np.nan, 0.005, 0.001], 0.01) == 2
    assert onset_record([1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 0.005, 0.5, 0.005, 0.001], 0.01,
                        stay=2) == 3
    assert onset_record([1.0, 2.0], [0.5, 0.2], 0.01) is None


def test_a_seed_column_with_a_blank_cell_gives_the_file_names_seed():
    """A paper log whose seed column has a blank cell is parsed as floats (0.0); the run's
    seed label is the integer 0, the same seed as a file named ..._s0, so the
    leave-one-seed-out fit counts it once. A seed 2.5 (not whole) stays as it is."""
    from ncsim.validate.logs import from_paper

    frame = pd.DataFrame({"epoch": [1.0, 2.0], "nc1": [0.5, 0.1], "feat_norm": [1.0, 2.0],
                          "seed": [0.0, np.nan]})
    out = from_paper(frame, "width128_s0")
    assert out["seed"].tolist() == [0, 0]
    assert type(out["seed"].iloc[0]) in (int, np.int64)
    assert str(out["seed"].iloc[0]) == "0"
    odd = from_paper(frame.assign(seed=[2.5, np.nan]), "width128_s0")
    assert odd["seed"].tolist() == [2.5, 2.5]
