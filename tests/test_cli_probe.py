"""Mutation probe of the command line: behaviours of ``ncsim simulate | theory | validate |
study`` that no other test pinned (found by deliberate changes to the CLI modules)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from cli_helpers import error_line, invoke

import ncsim.study.runner as study_runner
import ncsim.study.spec as study_spec
from ncsim.validate.cli import _remove_old_checkpoints

TINY = ["-K", "3", "-n", "2", "-d", "4", "--t-end", "50", "--records", "10", "--no-progress",
        "--no-theory"]


# ------------------------------------------------------------------ validate train


def test_old_checkpoint_removal_keeps_other_pt_files(tmp_path, capsys):
    """Only the names a training writes (phase{j}_end.pt, epoch{k}.pt) are removed: a user's
    own .pt file in the folder stays, and the note counts the removed files alone."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("phase1_end.pt", "epoch12.pt", "mine.pt", "phase1_end.pt.bak", "epochX.pt"):
        (folder / name).write_text("x")
    _remove_old_checkpoints(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["epochX.pt", "mine.pt",
                                                        "phase1_end.pt.bak"]
    assert "note: removed 2 checkpoint(s) of an earlier training" in capsys.readouterr().err


# ------------------------------------------------------------------ study run


def _fake_study(monkeypatch, failed: int = 0) -> list:
    """Replace the study loader and runner by recorders; returns the list of calls."""
    calls = []

    def load(spec, quick=False):
        calls.append(("load", spec, quick))
        return SimpleNamespace(name="fake")

    def run(loaded, out, **kwargs):
        calls.append(("run", Path(out)))
        return study_runner.RunSummary(total=4, skipped=1, computed=3, failed=failed,
                                       seconds=0.25, out=Path(out))

    monkeypatch.setattr(study_spec, "load_study", load)
    monkeypatch.setattr(study_runner, "run_study", run)
    monkeypatch.setattr(study_runner, "select_parts", lambda study, parts, model: None)
    return calls


def test_study_run_without_spec_is_the_quick_weight_decay_study(tmp_path, monkeypatch):
    """``ncsim study run`` alone runs the quick weight_decay study into ncsim-out/."""
    monkeypatch.chdir(tmp_path)
    calls = _fake_study(monkeypatch)
    result = invoke(["study", "run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert calls == [("load", "weight_decay", True), ("run", Path("ncsim-out"))]
    assert result.stdout.splitlines() == [
        "study fake (quick): 4 runs, 3 computed, 1 already done, 0 failed, 0.2 s",
        f"table: {Path('ncsim-out') / 'runs.parquet'}",
        f"report: {Path('ncsim-out') / 'report.md'}"]


@pytest.mark.parametrize(("quick", "folder"), [([], "fake"), (["--quick"], "fake-quick")])
def test_study_run_default_out_is_named_by_study_and_variant(tmp_path, monkeypatch, quick,
                                                              folder):
    """A SPEC without --out writes to ncsim-out/NAME, or ncsim-out/NAME-quick with --quick."""
    monkeypatch.chdir(tmp_path)
    calls = _fake_study(monkeypatch)
    result = invoke(["study", "run", "some.toml", *quick, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert calls == [("load", "some.toml", bool(quick)), ("run", Path("ncsim-out") / folder)]


def test_study_run_with_failed_runs_exits_1_after_the_summary(tmp_path, monkeypatch):
    """Failed runs: the summary and paths are printed, a note on stderr, exit status 1."""
    _fake_study(monkeypatch, failed=2)
    result = invoke(["study", "run", "x.toml", "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "2 failed" in result.stdout.splitlines()[0]
    assert "note: 2 run(s) failed" in result.stderr


# ------------------------------------------------------------------ validate analyze


def _paper_log(path: Path) -> Path:
    """A paper-style log: phase 1 at epochs 10, 20; phase 2 at 30, 40, 50 (nc1 0.1, 1e-3, 5e-4)."""
    pd.DataFrame({"epoch": [10, 20, 30, 40, 50], "phase": [1, 1, 2, 2, 2],
                  "train": [0.9, 0.95, 1.0, 1.0, 1.0], "test": [0.8, 0.85, 0.9, 0.9, 0.9],
                  "nc1": [0.5, 0.04, 0.1, 1e-3, 5e-4], "nc2": [0.5, 0.4, 0.2, 0.04, 0.005],
                  "nc3": [0.5, 0.4, 0.3, 0.2, 0.1],
                  "feat_norm": [1.0, 1.5, 2.0, 3.0, 3.5]}).to_csv(path, index=False)
    return path


def test_analyze_given_threshold_overrides_the_papers_per_condition_one(tmp_path):
    """depth2's paper threshold is 0.05 (onset epoch 40 in phase 2); an explicit
    --onset-threshold 0.0008 holds for the run instead (onset 50) and the json rule says so."""
    log = _paper_log(tmp_path / "depth2_s0.csv")
    paper = json.loads(invoke(["validate", "analyze", str(log), "--format", "json"]).stdout)
    assert (paper["runs"][0]["onset_epoch"], paper["runs"][0]["threshold"]) == (40, 0.05)
    result = invoke(["validate", "analyze", str(log), "--onset-threshold", "0.0008",
                     "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (run,) = data["runs"]
    assert (run["onset_epoch"], run["threshold"]) == (50, 0.0008)
    assert data["rule"]["threshold"] == 0.0008
    assert "per_condition_threshold" not in data["rule"]


def test_analyze_ncsim_preset_searches_the_whole_log(tmp_path):
    """--preset ncsim: whole log at 0.01 (nc1 0.04 at epoch 20 is above it, so epoch 40);
    rupa2026 at 0.05 for depth2 in phase 2 alone (40, not the phase-1 record at 20)."""
    log = _paper_log(tmp_path / "depth2_s0.csv")
    whole = json.loads(invoke(["validate", "analyze", str(log), "--preset", "ncsim",
                               "--onset-threshold", "0.05", "--format", "json"]).stdout)
    assert whole["runs"][0]["onset_epoch"] == 20
    assert whole["rule"]["phase"] is None
    paper = json.loads(invoke(["validate", "analyze", str(log), "--format", "json"]).stdout)
    assert paper["runs"][0]["onset_epoch"] == 40
    assert paper["rule"]["phase"] == 2


def test_analyze_out_suffix_is_case_insensitive(tmp_path):
    """--out runs.CSV is a CSV run table (the suffix check ignores case); runs.txt and an
    existing folder t.csv are refused with one line that says what to give."""
    log = _paper_log(tmp_path / "baseline_s0.csv")
    out = tmp_path / "runs.CSV"
    result = invoke(["validate", "analyze", str(log), "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table["run"]) == ["baseline_s0"] and list(table["onset_epoch"]) == [40]
    line = error_line(invoke(["validate", "analyze", str(log), "--out",
                              str(tmp_path / "runs.txt")]))
    assert line == f"Error: --out {tmp_path / 'runs.txt'}: name the run table .csv or .parquet"
    assert not (tmp_path / "runs.txt").exists()
    folder = tmp_path / "t.csv"
    folder.mkdir()
    line = error_line(invoke(["validate", "analyze", str(log), "--out", str(folder)]))
    assert line == (f"Error: --out {folder} is a folder; give a file name ending in .csv or "
                    ".parquet")


# ------------------------------------------------------------------ simulate


@pytest.mark.parametrize(("flag", "value"), [([], True), (["--no-interpolate"], False),
                                             (["--interpolate"], True)])
def test_simulate_interpolate_flag_reaches_the_run(flag, value):
    """--interpolate/--no-interpolate sets the run's onset rule (default: interpolate)."""
    result = invoke(["simulate", *TINY, *flag, "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["onset_interpolate"] is value


# ------------------------------------------------------------------ theory


def _theory_row(*args):
    result = invoke(["theory", "threshold", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    return row


@pytest.mark.parametrize(("decays", "ratio"), [(["--lambda-w", "0", "--lambda-h", "1e-3"], 1.0),
                                               (["--lambda-w", "1e-3", "--lambda-h", "0"], 1.0),
                                               (["--lambda-w", "1e-3", "--lambda-h", "4e-3"],
                                                4.0)])
def test_theory_default_ratio_is_the_decay_ratio_or_one_where_a_decay_is_zero(decays, ratio):
    """Without --ratio, lambda_crit uses lambda_H / lambda_W, or 1 where a decay is 0: the row
    equals the one computed with that --ratio given."""
    row = _theory_row("-K", "4", "-n", "3", *decays)
    assert row["ratio"] == pytest.approx(ratio, rel=1e-15)
    given = _theory_row("-K", "4", "-n", "3", *decays, "--ratio", repr(ratio))
    assert row == given
