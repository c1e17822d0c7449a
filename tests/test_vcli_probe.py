"""Mutation probe of ``ncsim validate`` (ncsim/validate/cli.py): the printed analyze tables and
their titles, the fn* note, the run-table file, option parsing of ``train`` (zero overrides,
integer lists, config checks), train's run.json and json output, old-checkpoint names, and
``compare``'s files, notes and --out (its library call replaced by a stub)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import error_line, invoke, tiny_train_args

import ncsim.validate.compare as compare_mod
import ncsim.validate.plots as plots_mod
from ncsim.validate.cli import _remove_old_checkpoints, _train_config

PHASE_OVERRIDES = {"optimizer": None, "lr": None, "weight_decay": None, "schedule": None,
                   "batch_size": None, "warmup": None}


def _log(path: Path, fn: list[float]) -> str:
    """A paper-style depth2 log: phase 1 at epochs 10, 20, phase 2 at 30, 40, 50; nc1 falls
    below the paper's 0.05 at epoch 40 (phase 2), nc2 stays at 0.1."""
    pd.DataFrame({"epoch": [10, 20, 30, 40, 50], "phase": [1, 1, 2, 2, 2], "train": 1.0,
                  "test": 0.9, "nc1": [0.5, 0.04, 0.1, 1e-3, 5e-4], "nc2": 0.1, "nc3": 0.1,
                  "feat_norm": fn}).to_csv(path, index=False)
    return str(path)


def _two_seeds(tmp_path: Path) -> list[str]:
    return [_log(tmp_path / "depth2_s0.csv", [1.0, 1.5, 2.0, 3.0, 3.5]),
            _log(tmp_path / "depth2_s1.csv", [1.0, 1.5, 2.0, 4.0, 4.5])]


ANALYZE_TABLE = """\
# runs (onset: nc1_trace < the paper's threshold per condition, first record below, preset \
rupa2026; min_metric: whole log, min_searched: the records searched)
      run model dataset condition  seed  onset_epoch  fn_star  min_metric  min_searched  \
threshold    status
depth2_s0   mlp   mnist    depth2     0           40        3      0.0005        0.0005       \
0.05 collapsed
depth2_s1   mlp   mnist    depth2     1           40        4      0.0005        0.0005       \
0.05 collapsed

# groups (fn* mean, sample std, CV, 95% Student-t interval)
model dataset condition  n_runs  n_collapsed  n_vanishing  fn_star_mean  fn_star_std  \
fn_star_cv  fn_star_ci_low  fn_star_ci_high  onset_mean  onset_std
  mlp   mnist    depth2       2            2            0           3.5     0.707107    \
0.202031         -2.8531           9.8531          40          0

# lead time (threshold fit: mean)
      run  onset_epoch  fn_pred_in_sample  lead_in_sample  fn_pred_held_out  lead_held_out
depth2_s0           40                3.5              30                 4             30
depth2_s1           40                3.5              30                 3             30

# lead-time predictor: in-sample vs leave-one-seed-out
   method  n_crossed  n_runs  lead_mean  lead_std  ordering_accuracy  mae
in_sample          2       2         30         0                  1    0
 held_out          2       2         30         0                  1    0

"""


def test_analyze_table_output_is_pinned_in_full(tmp_path):
    """Two depth2 seeds (fn* 3 and 4 at epoch 40): the four titled tables, their columns, the
    values, the 'method' column of the summary and a blank line after each table."""
    result = invoke(["validate", "analyze", *_two_seeds(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ANALYZE_TABLE
    assert result.stderr == ""


def test_analyze_titles_name_metric_threshold_rule_preset_and_fit(tmp_path):
    """--preset ncsim --interpolate --metric nc2_angle --threshold-fit power: the titles say
    nc2_angle < 0.01, interpolated, preset ncsim and threshold fit power; runs that never
    cross (no fn*, status not_collapsed) give no fn* note on stderr."""
    result = invoke(["validate", "analyze", *_two_seeds(tmp_path), "--preset", "ncsim",
                     "--interpolate", "--metric", "nc2_angle", "--threshold-fit", "power"])
    assert result.exit_code == 0, result.output
    titles = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert titles == [
        "# runs (onset: nc2_angle < 0.01, interpolated, preset ncsim; min_metric: whole log, "
        "min_searched: the records searched)",
        "# groups (fn* mean, sample std, CV, 95% Student-t interval)",
        "# lead time (threshold fit: power)",
        "# lead-time predictor: in-sample vs leave-one-seed-out"]
    assert "not_collapsed" in result.stdout
    assert result.stderr == ""


def test_analyze_given_threshold_is_shown_in_the_title(tmp_path):
    """--onset-threshold 0.002 under rupa2026: the title shows 0.002 and first record below."""
    result = invoke(["validate", "analyze", *_two_seeds(tmp_path), "--onset-threshold",
                     "0.002"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "# runs (onset: nc1_trace < 0.002, first record below, preset rupa2026; min_metric: "
        "whole log, min_searched: the records searched)")


def test_analyze_out_parquet_keeps_float_onsets(tmp_path):
    """--out runs.parquet holds the library's run table: onset_epoch stays float64 (40.0),
    not the nullable integers the printed table uses."""
    out = tmp_path / "runs.parquet"
    result = invoke(["validate", "analyze", *_two_seeds(tmp_path), "--out", str(out),
                     "--format", "json"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert str(table["onset_epoch"].dtype) == "float64"
    assert table["onset_epoch"].tolist() == [40.0, 40.0]
    assert [r["onset_epoch"] for r in json.loads(result.stdout)["runs"]] == [40, 40]


@pytest.mark.parametrize("option", ["--epochs", "--seeds"])
def test_train_integer_lists_refuse_text_with_the_exact_message(tmp_path, option):
    """--epochs 1,x or --seeds 0,x is one error line naming the option and the text given."""
    args = ["validate", "train", "--out", str(tmp_path / "run"), "--no-progress", option, "1,x"]
    line = error_line(invoke(args))
    assert line == f"Error: {option}: give integers separated by commas, got '1,x'"
    assert not (tmp_path / "run").exists()


def test_train_config_zero_overrides_replace_the_presets_values():
    """Weight decay 0, lr 0 and warm-up 0 are overrides too (only None keeps the preset's
    1e-4 and 1e-3): every phase gets them; the other fields stay the preset's."""
    config = _train_config("mlp", "3,4", None, None, None, None,
                           {**PHASE_OVERRIDES, "lr": 0.0, "weight_decay": 0.0, "warmup": 0})
    assert [(p.epochs, p.lr, p.weight_decay, p.warmup, p.optimizer) for p in config.phases] == [
        (3, 0.0, 0.0, 0, "adam"), (4, 0.0, 0.0, 0, "adam")]
    kept = _train_config("mlp", "3,4", None, None, None, None, PHASE_OVERRIDES)
    assert [(p.lr, p.weight_decay) for p in kept.phases] == [(1e-3, 1e-4), (1e-3, 1e-4)]


@pytest.mark.parametrize(("extra", "message"), [
    (["--nc-every", "0"], "Error: nc_every must be an integer >= 1, got 0"),
    (["--nc-min-accuracy", "1.5"],
     "Error: nc_min_accuracy must be a fraction in [0, 1] (the paper: 0.99), got 1.5"),
])
def test_train_record_options_reach_the_config_check(tmp_path, extra, message):
    """--nc-every 0 and --nc-min-accuracy 1.5 reach the config and are refused there (not
    replaced by the defaults), before any data is read or the out folder made."""
    out = tmp_path / "run"
    line = error_line(invoke([*tiny_train_args(out, "1,1", 1), *extra]))
    assert line == message
    assert not out.exists()


def test_train_json_run_json_and_onset_threshold(tmp_path):
    """A tiny single-seed run at --onset-threshold 3 (nc1 stays near 2.1): the summary uses
    that threshold (collapsed, an onset), the json names the out folder, and run.json holds
    the one summary as an object with seeds [0]."""
    out = tmp_path / "run"
    result = invoke([*tiny_train_args(out, "2,2", 1), "--onset-threshold", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["out"] == str(out)
    (summary,) = data["runs"]
    assert summary["status"] == "collapsed" and summary["onset_epoch"] is not None
    assert summary["min_metric"] < 3
    run = json.loads((out / "run.json").read_text())
    assert run["seeds"] == [0]
    assert isinstance(run["summary"], dict)
    assert run["summary"]["onset_epoch"] == summary["onset_epoch"]
    assert run["summary"]["status"] == "collapsed"


def test_train_seeds_run_json_lists_every_seed(tmp_path):
    """--seeds 0,1 (one after another on the CPU): run.json has seeds [0, 1] and a list of
    two summaries with run ids mlp_gaussian_s0 and mlp_gaussian_s1."""
    out = tmp_path / "run"
    result = invoke([*tiny_train_args(out, "1,1", 1), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["seeds"] == [0, 1]
    assert [s["run"] for s in run["summary"]] == ["mlp_gaussian_s0", "mlp_gaussian_s1"]
    assert [s["seed"] for s in run["summary"]] == [0, 1]


def test_old_checkpoint_removal_needs_the_exact_names_with_numbers(tmp_path, capsys):
    """phase_end.pt and epoch.pt (no number), epoch1.pt.pt and old_epoch1.pt are not a
    training's checkpoint names and stay; phase2_end.pt and epoch3.pt go."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    names = ["phase_end.pt", "epoch.pt", "epoch1.pt.pt", "old_epoch1.pt", "phase2_end.pt",
             "epoch3.pt"]
    for name in names:
        (folder / name).write_text("x")
    _remove_old_checkpoints(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[:4])
    assert capsys.readouterr().err == (
        f"note: removed 2 checkpoint(s) of an earlier training in {folder}\n")


def _fake_compare(monkeypatch, calibration_note: str = "") -> dict:
    """Replace compare_run and plot_overlay by stubs; returns what the stubs were given."""
    seen: dict = {}
    table = pd.DataFrame({"onset_measured": [2.5], "onset_simulated": [3.25],
                          "fn_star_measured": [1.5], "time_mapping": ["t = lr x steps"],
                          "lambda_h_rule": ["response"], "calibration_note": [calibration_note],
                          "theory_note": ["closed form"]})
    simulated = pd.DataFrame({"time": [0.0, 1.0], "nc1_trace": [1.0, 0.5]})
    measured = pd.DataFrame({"time": [0.0, 2.0], "nc1_trace": [1.0, 0.25]})

    def compare_run(run_dir, per_class, threshold, horizon, **kwargs):
        seen["run"] = (Path(run_dir), per_class, threshold, horizon)
        kwargs["report"]("step one")
        return {"table": table, "simulated": simulated, "measured": measured}

    def plot_overlay(meas, sim, path, onsets):
        seen["plot"] = (Path(path), onsets)
        Path(path).write_text("png")

    monkeypatch.setattr(compare_mod, "compare_run", compare_run)
    monkeypatch.setattr(plots_mod, "plot_overlay", plot_overlay)
    return seen


def test_compare_writes_to_out_and_prints_nonempty_notes(tmp_path, monkeypatch):
    """--out elsewhere: compare.csv, surrogate_trajectory.parquet and compare.png go there (not
    to the run folder); the plot gets both onsets; the table lists the numbers and the notes
    section only the non-empty text columns."""
    seen = _fake_compare(monkeypatch)
    run, out = tmp_path / "run", tmp_path / "cmp"
    run.mkdir()
    result = invoke(["validate", "compare", "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.png",
                                                     "surrogate_trajectory.parquet"]
    assert list(run.iterdir()) == []
    assert pd.read_parquet(out / "surrogate_trajectory.parquet")["nc1_trace"].tolist() == [
        1.0, 0.5]
    assert pd.read_csv(out / "compare.csv")["onset_simulated"].tolist() == [3.25]
    assert seen["run"] == (run, None, 0.01, 10.0)
    assert seen["plot"] == (out / "compare.png", {"network": 2.5, "surrogate": 3.25})
    assert result.stderr == "compare: step one\n"
    assert result.stdout == (
        "# network vs UFM surrogate (time: t = lr x steps)\n"
        "        quantity  value\n"
        "  onset_measured    2.5\n"
        " onset_simulated   3.25\n"
        "fn_star_measured    1.5\n"
        "\n"
        "# notes\n"
        "time_mapping: t = lr x steps\n"
        "lambda_h_rule: response\n"
        "theory_note: closed form\n")


def test_compare_default_out_is_the_run_folder(tmp_path, monkeypatch):
    """Without --out the files go into the run folder."""
    _fake_compare(monkeypatch, calibration_note="fitted")
    run = tmp_path / "run"
    run.mkdir()
    result = invoke(["validate", "compare", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == ["compare.csv", "compare.png",
                                                     "surrogate_trajectory.parquet"]
    assert "calibration_note: fitted\n" in result.stdout


def test_an_empty_table_prints_none_under_its_title(capsys):
    """A table without rows prints '(none)' under its title (not pandas' empty-frame text),
    then a blank line."""
    from ncsim.validate.cli import _print_table

    _print_table("leads", pd.DataFrame({"run": [], "lead": []}))
    assert capsys.readouterr().out == "# leads\n(none)\n\n"
