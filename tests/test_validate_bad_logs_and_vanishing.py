"""``ncsim validate`` at its edges: fractional onset times on the command line, vanishing training
runs, records without a run id, and corrupt CIFAR-10 batches.

Every table here is synthetic and small; expected values are worked out by hand.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line, invoke

from ncsim.errors import InputError
from ncsim.onset import is_vanishing
from ncsim.spec import SolverSpec
from ncsim.validate.analysis import OnsetRule, analyze, run_onset, run_table
from ncsim.validate.data import load_dataset, read_cifar10
from ncsim.validate.logs import read_log, read_logs
from ncsim.validate.train import summarize


def _json(args: list[str]) -> dict:
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- 1. fractional time
def _flow_time_log(path: Path, run_ids: list[str] | None = None) -> Path:
    """An ncsim log in flow time: run r crosses nc1_trace < 0.01 at t = 1.25 with fn 3."""
    frame = pd.DataFrame({"run_id": "r", "time": [0.0, 0.5, 1.25, 2.5],
                          "fn": [1.0, 2.0, 3.0, 3.5], "nc1_trace": [1.0, 0.5, 0.005, 0.001]})
    if run_ids is not None:
        frame = pd.concat([frame.assign(run_id=rid) for rid in run_ids], ignore_index=True)
    frame.to_csv(path, index=False)
    return path


def test_analyze_cli_prints_a_fractional_onset_as_table_and_json(tmp_path):
    """Onset 1.25 (not a whole number) is printed in the table and given in the JSON, exit 0
    (it was a TypeError traceback: the onset column was cast to integers)."""
    log = _flow_time_log(tmp_path / "flow.csv")
    table = invoke(["validate", "analyze", str(log), "--preset", "ncsim"])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("r "))
    assert row.split()[5:8] == ["1.25", "3", "0.001"]
    (run,) = _json(["validate", "analyze", str(log), "--preset", "ncsim", "--format",
                    "json"])["runs"]
    assert (run["onset_epoch"], run["fn_star"], run["status"]) == (1.25, 3.0, "collapsed")


def test_analyze_cli_keeps_whole_epochs_as_integers_and_out_keeps_floats(tmp_path):
    """Whole-number onsets stay integers in the JSON (epochs), a fractional one makes the
    column floats; --out writes the run table's float64 onset unchanged."""
    frac = _flow_time_log(tmp_path / "flow.csv")
    whole = tmp_path / "whole.csv"
    pd.DataFrame({"run_id": "w", "time": [0.0, 10.0, 20.0], "fn": [1.0, 2.0, 4.0],
                  "nc1_trace": [1.0, 0.5, 0.005]}).to_csv(whole, index=False)
    (only_whole,) = _json(["validate", "analyze", str(whole), "--preset", "ncsim",
                           "--format", "json"])["runs"]
    assert only_whole["onset_epoch"] == 20 and isinstance(only_whole["onset_epoch"], int)
    out = tmp_path / "runs.csv"
    both = _json(["validate", "analyze", str(frac), str(whole), "--preset", "ncsim",
                  "--format", "json", "--out", str(out)])["runs"]
    assert [(r["run"], r["onset_epoch"]) for r in both] == [("r", 1.25), ("w", 20.0)]
    assert pd.read_csv(out)["onset_epoch"].tolist() == [1.25, 20.0]


# ----------------------------------------------------------------------------- 2. vanishing
EPOCHS = np.arange(10, 410, 10)
PHASE = np.where(EPOCHS <= 200, 1, 2)
NC1 = np.where(PHASE == 1, 0.1, 0.1 * np.exp(-(EPOCHS - 200) / 40))  # < 0.01 from epoch 300
FN_OK = np.where(PHASE == 1, 25 - EPOCHS / 20, 1.0 + 0.5 * np.exp(-(EPOCHS - 200) / 40))
FN_GONE = np.where(PHASE == 1, 25 - EPOCHS / 20, 15 * np.exp(-(EPOCHS - 200) / 4))


def _paper_log(path: Path, fn: np.ndarray) -> Path:
    pd.DataFrame({"epoch": EPOCHS, "phase": PHASE, "train": 1.0, "test": 0.98, "nc1": NC1,
                  "nc2": 0.1, "nc3": 0.1, "feat_norm": fn}).to_csv(path, index=False)
    return path


def _seeds(tmp_path: Path) -> list[Path]:
    """sgd_s0 vanishes (fn 24.5 -> 3e-21, nc1 still falls), sgd_s1 and sgd_s2 collapse."""
    return [_paper_log(tmp_path / "sgd_s0.csv", FN_GONE),
            _paper_log(tmp_path / "sgd_s1.csv", FN_OK),
            _paper_log(tmp_path / "sgd_s2.csv", FN_OK * 1.05)]


def test_vanishing_log_has_no_onset_and_stays_out_of_the_group_statistics(tmp_path):
    """The vanishing seed is `vanishing` with NaN onset and fn* (not `collapsed` with fn*
    2e-10); the group's fn* statistics and the lead-time fit are those of the two others."""
    assert is_vanishing(FN_GONE) and not is_vanishing(FN_OK)
    out = analyze(read_logs(_seeds(tmp_path)), OnsetRule.preset("rupa2026"))
    runs = out["runs"].set_index("run")
    assert runs["status"].tolist() == ["vanishing", "collapsed", "collapsed"]
    assert math.isnan(runs.loc["sgd_s0", "onset_epoch"])
    assert math.isnan(runs.loc["sgd_s0", "fn_star"])
    assert runs.loc["sgd_s0", "final_fn"] == FN_GONE[-1]  # summary values are kept
    fn1 = FN_OK[EPOCHS == 300][0]
    assert runs.loc["sgd_s1", "onset_epoch"] == 300 and runs.loc["sgd_s1", "fn_star"] == fn1
    (group,) = out["groups"].to_dict("records")
    assert (group["n_runs"], group["n_collapsed"], group["n_vanishing"]) == (3, 2, 1)
    fn = np.array([fn1, 1.05 * fn1])
    assert group["fn_star_mean"] == pytest.approx(fn.mean(), rel=1e-14)
    assert group["fn_star_cv"] == pytest.approx(fn.std(ddof=1) / fn.mean(), rel=1e-12)
    leads = out["leads"].set_index("run")
    assert leads["fn_pred_in_sample"].tolist() == pytest.approx([fn.mean()] * 3, rel=1e-14)
    assert math.isnan(leads.loc["sgd_s0", "lead_in_sample"])
    assert out["lead_summary"]["in_sample"]["n_runs"] == 2


def test_vanishing_rule_is_the_simulators_rule_and_tolerance():
    """Default tolerance = SolverSpec's 1e-3 (also in the presets); the status follows
    ncsim.onset.is_vanishing on the whole log: a final fn 0.99e-3 x its peak vanishes,
    1.01e-3 x its peak does not; vanish_tol 0 turns the rule off."""
    assert OnsetRule().vanish_tol == SolverSpec().vanish_tol == 1e-3
    assert OnsetRule.preset("rupa2026").vanish_tol == OnsetRule.preset("ncsim").vanish_tol == 1e-3
    part = pd.DataFrame({"time": [0.0, 1.0, 2.0], "phase": [2, 2, 2],
                         "nc1_trace": [0.5, 0.005, 0.001], "fn": [10.0, 5.0, np.nan]})
    for last, status in ((0.99e-2, "vanishing"), (1.01e-2, "collapsed")):
        part.loc[2, "fn"] = last
        assert is_vanishing(part["fn"].to_numpy(), 1e-3) == (status == "vanishing")
        out = run_onset(part, OnsetRule.preset("ncsim"))
        assert out["status"] == status
        assert math.isnan(out["onset_epoch"]) == (status == "vanishing")
    off = run_onset(part.assign(fn=[10.0, 5.0, 1e-9]), OnsetRule(phase=None, vanish_tol=0.0))
    assert (off["status"], off["onset_epoch"], off["fn_star"]) == ("collapsed", 1.0, 5.0)
    looser = run_onset(part, OnsetRule(phase=None, vanish_tol=0.01))  # 1.01e-2 < 0.01 x 10
    assert looser["status"] == "vanishing"


@pytest.mark.parametrize("tol", [1.0, -1e-3, math.nan, math.inf, "1e-3", None, True])
def test_vanish_tol_outside_zero_one_is_an_input_error(tol):
    with pytest.raises(InputError, match=r"^vanish_tol must be a number in \[0, 1\)"):
        OnsetRule(vanish_tol=tol)


def test_train_summary_reports_a_vanishing_run(tmp_path):
    """`validate train`'s summary (train.summarize) gives the same status: vanishing, no onset."""
    log = read_log(_paper_log(tmp_path / "sgd_s0.csv", FN_GONE))
    out = summarize(log, 0.01)
    assert out["status"] == "vanishing"
    assert math.isnan(out["onset_epoch"]) and math.isnan(out["fn_star"])
    ok = summarize(read_log(_paper_log(tmp_path / "sgd_s1.csv", FN_OK)), 0.01)
    assert (ok["status"], ok["onset_epoch"]) == ("collapsed", 300.0)


def test_analyze_cli_reports_vanishing(tmp_path):
    data = _json(["validate", "analyze", *map(str, _seeds(tmp_path)), "--format", "json"])
    assert [(r["run"], r["status"], r["onset_epoch"], r["fn_star"]) for r in data["runs"]][0] \
        == ("sgd_s0", "vanishing", None, None)
    (group,) = data["groups"]
    assert (group["n_collapsed"], group["n_vanishing"]) == (2, 1)
    assert data["rule"]["vanish_tol"] == 1e-3
    table = invoke(["validate", "analyze", *map(str, _seeds(tmp_path))])
    assert table.exit_code == 0 and " vanishing" in table.stdout


# ----------------------------------------------------------------------------- 3. run ids
@pytest.mark.parametrize(("text", "words"), [
    ("run_id,time,fn,nc1_trace\n,1,2,0.5\n,2,1,0.001\n",
     "log blank: the run_id column is empty; fill it in, or drop the column"),
    ("run_id,time,fn,nc1_trace\na,1,2,0.5\na,2,1.5,0.2\n,3,1,0.001\n",
     "log blank: 1 of 3 records have no run_id (the first is data row 3); give every record"),
    ("run_id,time,fn,nc1_trace\na,1,2,0.5\n  ,2,1.5,0.2\n",
     "log blank: 1 of 2 records have no run_id (the first is data row 2)"),
])
def test_blank_run_ids_are_one_line_errors(tmp_path, text, words):
    """An empty run_id column (was a KeyError traceback) and partly blank ids (their records
    were dropped silently) exit 2 with one line naming the log."""
    path = tmp_path / "blank.csv"
    path.write_text(text)
    with pytest.raises(InputError, match="^" + words.replace("(", r"\(").replace(")", r"\)")):
        read_logs([path])
    line = error_line(invoke(["validate", "analyze", str(path), "--preset", "ncsim"]))
    assert words in line


def test_blank_run_ids_in_parquet_and_without_a_run_id_column(tmp_path):
    """Parquet ids None or "" are refused too; a log without a run_id column is one run named
    after its file (unchanged)."""
    frame = pd.DataFrame({"run_id": ["a", None, ""], "time": [1.0, 2.0, 3.0],
                          "fn": [2.0, 1.0, 1.0], "nc1_trace": [0.5, 0.2, 0.001]})
    frame.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"^log p: 2 of 3 records have no run_id"):
        read_log(tmp_path / "p.parquet")
    frame.drop(columns="run_id").to_parquet(tmp_path / "named.parquet")
    assert set(read_log(tmp_path / "named.parquet")["run_id"]) == {"named"}


def test_run_table_refuses_records_without_a_run_id():
    """A trajectory table built by hand (not read by read_logs) with a NaN id or no run_id
    column is an InputError, not a silently smaller or empty run table."""
    traj = pd.DataFrame({"run_id": ["a", "a", np.nan], "time": [1.0, 2.0, 3.0],
                         "fn": [2.0, 1.5, 1.0], "nc1_trace": [0.5, 0.2, 0.001]})
    with pytest.raises(InputError, match=r"^1 of 3 records of the trajectory table have no "
                                         r"run_id"):
        run_table(traj, OnsetRule.preset("ncsim"))
    with pytest.raises(InputError, match="has no run_id column"):
        analyze(traj.drop(columns="run_id"), OnsetRule.preset("ncsim"))


# ----------------------------------------------------------------------------- 4. CIFAR-10
def _cifar_folder(folder: Path, bad: bytes, name: str = "data_batch_3") -> Path:
    """Six valid tiny batches, then ``name`` overwritten with ``bad``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((2, 3072), dtype=np.uint8)
    for batch in [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]:
        (folder / batch).write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}))
    (folder / name).write_bytes(bad)
    return folder / name


GOOD = pickle.dumps({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]})
CORRUPT = {
    "text": (b"garbage\n", "unpickling failed: invalid literal for int()"),
    "empty": (b"", "unpickling failed: Ran out of input"),
    "truncated": (GOOD[: len(GOOD) // 2], "unpickling failed"),
    "gzip": (b"\x1f\x8b\x08\x00", "unpickling failed: invalid load key"),
    "unknown module": (b"cno_such_module_ncsim\nx\n.", "unpickling failed: No module named"),
    "not a dict": (pickle.dumps([1, 2]), "a batch is a dict with the keys b'data' and"),
    "wrong shape": (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}),
                    "not integer rows of 3072 pixels"),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_cifar_batch_is_an_input_error_naming_the_file(tmp_path, kind):
    bad, words = CORRUPT[kind]
    path = _cifar_folder(tmp_path, bad)
    with pytest.raises(InputError) as err:
        read_cifar10(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path} ") and words in message
    assert "\n" not in message and "cifar-10-python.tar.gz" in message
    with pytest.raises(InputError):
        load_dataset("cifar10", root=tmp_path)


def test_corrupt_cifar_batch_cli_exit_2_one_line(tmp_path, monkeypatch):
    """`validate train --dataset cifar10` on a corrupt batch: one Error line, exit 2 (was a
    ValueError traceback, exit 1)."""
    monkeypatch.chdir(tmp_path)
    path = _cifar_folder(tmp_path / "cifar", b"garbage\n", "data_batch_1")
    line = error_line(invoke(["validate", "train", "--dataset", "cifar10", "--data-root",
                              str(tmp_path / "cifar"), "--out", str(tmp_path / "run"),
                              "--no-progress"]))
    assert line.startswith(f"Error: {path} is not a readable CIFAR-10 python batch")
    assert "fresh extract of cifar-10-python.tar.gz" in line


def test_cifar_pixels_are_integers_in_0_255_and_labels_match(tmp_path):
    """Integer pixels in 0..255 of any integer type are read as uint8 (as before); a pixel
    outside 0..255 (was wrapped round silently: 300 -> 44) and a label count that differs from
    the image count are InputErrors naming the file."""
    _cifar_folder(tmp_path, pickle.dumps({b"data": np.full((2, 3072), 255, np.int64),
                                          b"labels": [1, 0]}))
    x_tr, y_tr, _, _ = read_cifar10(tmp_path)
    assert x_tr.dtype == np.uint8 and x_tr.shape == (10, 3, 32, 32)
    assert x_tr[4:6].min() == 255 and y_tr[4:6].tolist() == [1, 0]
    for data, labels, words in ((np.full((2, 3072), 300), [0, 1], "pixel values leave 0..255"),
                                (np.zeros((2, 3072), np.uint8), [0], "holds 2 images but 1 "
                                 "labels")):
        path = _cifar_folder(tmp_path, pickle.dumps({b"data": data, b"labels": labels}))
        with pytest.raises(InputError, match=f"^{path} .*{words}.*cifar-10-python.tar.gz"):
            read_cifar10(tmp_path)


# ----------------------------------------------------------------------------- study rows


@pytest.mark.parametrize(("fn_end", "nc1_end", "status"), [
    (1e-6, 1e-4, "vanishing"),  # NC1 falls below 0.01 while fn vanishes: no onset
    (2.0, 1e-4, "ok"),
    (2.0, 0.5, "not_collapsed"),
])
def test_study_trained_row_reads_the_status_of_run_onset(monkeypatch, fn_end, nc1_end, status):
    """A study's trained run takes its status from the validation rule (simulate's names: ok
    for collapsed), so a run whose features vanish is "vanishing" with no onset or fn*, as
    in `validate analyze` and `simulate`. The training itself is replaced by a fixed log."""
    from types import SimpleNamespace

    import ncsim.validate.train as train_module
    from ncsim.study.compute import _train
    from ncsim.study.spec import RunDesc

    epochs = np.arange(6.0)
    log = pd.DataFrame({
        "time": epochs, "phase": [1, 1, 1, 2, 2, 2],
        "nc1_trace": [2.0, 1.0, 0.5, 0.1, 0.05, nc1_end],
        "fn": [1.0, 1.5, 2.0, 2.0, 2.0, fn_end], "accuracy": [0.5, 0.9, 1.0, 1.0, 1.0, 1.0],
        "steps": 3 * epochs.astype(int)})
    monkeypatch.setattr(train_module, "train", lambda config, data: SimpleNamespace(
        log=log, fn_before_intervention=math.nan))
    desc = RunDesc("part", "train", {"dataset": "gaussian", "per_class": 4,
                                     "test_per_class": 2, "data_dim": 8, "data_classes": 3,
                                     "preset": "mlp", "epochs": [1, 1], "seed": 0})
    _, row, _ = _train(desc)
    assert row["status"] == status
    if status == "ok":
        assert row["onset_time"] == 5.0 and row["fn_at_onset"] == 2.0
    else:
        assert math.isnan(row["onset_time"]) and math.isnan(row["fn_at_onset"])


def test_compare_measures_no_onset_on_a_vanishing_log():
    """`validate compare`'s measured side follows the same rule as `analyze`: a log whose fn
    vanishes (1 -> 1e-5 in the MSE phase) has no onset and no fn*, though its nc1 falls below
    the threshold; the same log with fn held at 1 has its onset at the first record below."""
    from ncsim.validate.compare import _measured

    epochs = np.arange(1, 41, dtype=float)
    phase = np.where(epochs <= 10, 1, 2)
    nc1 = np.where(epochs <= 10, 0.5, 0.5 * 10.0 ** (-(epochs - 10) / 8))
    fn = np.where(epochs <= 10, 1.0, 10.0 ** (-(epochs - 10) / 6))
    log = pd.DataFrame({"run_id": "r", "time": epochs, "phase": phase,
                        "flow_time": epochs * 0.1, "fn": fn, "nc1_trace": nc1})
    _, onset, fn_star = _measured(log, 0.01)
    assert math.isnan(onset) and math.isnan(fn_star)
    assert run_onset(log, OnsetRule(threshold=0.01))["status"] == "vanishing"
    _, onset, fn_star = _measured(log.assign(fn=1.0), 0.01)
    # nc1 < 0.01 first at epoch 24 (0.5 x 10^(-14/8) = 0.0089); t counts from epoch 10's
    # flow time 1.0: 2.4 - 1.0
    assert onset == pytest.approx(1.4, rel=1e-12) and fn_star == 1.0


@pytest.mark.parametrize("column", ["run_id", "time_unit"])
def test_paper_log_with_run_id_or_time_unit_column_is_an_input_error(tmp_path, column):
    """A paper log (epoch, nc1, feat_norm) that also carries run_id or time_unit was a
    'cannot insert run_id, already exists' traceback; it is one line, exit 2."""
    path = tmp_path / "mylog.csv"
    path.write_text(f"{column},epoch,phase,nc1,feat_norm\na,0,1,1.0,1\na,10,2,0.001,2\n")
    result = invoke(["validate", "analyze", str(path)])
    assert result.exit_code == 2
    line = error_line(result)
    assert f"has column(s) {column}, which a paper log" in line and "Traceback" not in line
