"""Log import and analysis against the paper's released logs (exact values of sweep_width.csv)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.validate.analysis import (
    OnsetRule,
    analyze,
    crossing_epochs,
    group_table,
    run_table,
)
from ncsim.validate.cli import validate
from ncsim.validate.logs import read_log, read_logs, run_labels

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "rupa2026-logs"
needs_logs = pytest.mark.skipif(not LOGS.is_dir(), reason=f"reference logs not found at {LOGS}")


def width_logs() -> list[Path]:
    return sorted(LOGS.glob("width*_s*.csv"))


@needs_logs
def test_reproduces_every_width_run_of_sweep_width():
    sweep = pd.read_csv(LOGS / "sweep_width.csv")
    runs = run_table(read_logs(width_logs()), OnsetRule.preset("rupa2026")).set_index("run")
    assert len(runs) == len(width_logs()) >= 7
    checked = 0
    for _, row in sweep.iterrows():
        name = f"width{int(row.width)}_s{int(row.seed)}"
        if name not in runs.index:
            continue
        assert runs.loc[name, "onset_epoch"] == row.T_NC
        assert runs.loc[name, "fn_star"] == pytest.approx(row.fn, abs=0, rel=1e-15)
        checked += 1
    assert checked == len(runs)


@needs_logs
def test_group_table_matches_paper_width_rows():
    runs = run_table(read_logs(width_logs()), OnsetRule.preset("rupa2026"))
    groups = group_table(runs).set_index("condition")
    sweep = pd.read_csv(LOGS / "sweep_width.csv")
    for width, mean, std in ((128, 1.241, 0.105), (256, 1.125, 0.041)):
        g = groups.loc[f"width{width}"]
        fn = sweep.loc[sweep.width == width, "fn"].to_numpy()
        assert g.fn_star_mean == pytest.approx(fn.mean(), rel=1e-12)
        assert g.fn_star_std == pytest.approx(fn.std(ddof=1), rel=1e-12)
        assert round(g.fn_star_mean, 3) == mean and round(g.fn_star_std, 3) == std
        half = 4.302652729911275 * fn.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
        assert g.fn_star_ci_low == pytest.approx(fn.mean() - half, rel=1e-9)
        assert g.fn_star_cv == pytest.approx(fn.std(ddof=1) / fn.mean(), rel=1e-12)
    assert round(groups.loc["width128", "onset_mean"]) == 383


@needs_logs
def test_lead_crossings_reproduce_prediction_analysis():
    # thresholds of the paper's log-log fit of the group-mean fn* over all 12 sweep runs
    sweep = pd.read_csv(LOGS / "sweep_width.csv")
    means = sweep.groupby("width").fn.mean()
    slope, icpt = np.polyfit(np.log(means.index), np.log(means.to_numpy()), 1)
    traj = read_logs(width_logs())
    levels = {rid: float(np.exp(icpt + slope * np.log(int(rid[5:rid.index("_")]))))
              for rid in traj.run_id.unique()}
    cross = crossing_epochs(traj, levels)
    pred = pd.read_csv(LOGS / "prediction_analysis.csv")
    seen = 0
    for _, row in pred.iterrows():
        rid = f"width{int(row.width)}_s{int(row.seed)}"
        if rid in cross:
            assert cross[rid] == row.ep_cross
            seen += 1
    assert seen >= 5
    missing = set(cross) - {f"width{w}_s{s}" for w, s in zip(pred.width, pred.seed, strict=False)}
    assert all(math.isnan(cross[r]) for r in missing)  # the runs the paper found never crossing


@needs_logs
def test_intervention_logs_without_phase_column():
    runs = run_table(read_logs(sorted(LOGS.glob("intervention_*_s*.csv"))),
                     OnsetRule.preset("rupa2026")).set_index("run")
    summary = pd.read_csv(LOGS / "intervention_summary.csv")
    for _, row in summary.iterrows():
        rid = f"intervention_{row.condition}_s{row.seed}"
        assert runs.loc[rid, "condition"] == row.condition
        assert runs.loc[rid, "onset_epoch"] == row.T_NC
        assert runs.loc[rid, "fn_star"] == pytest.approx(row.fn_at_TNC, rel=1e-12)


@needs_logs
def test_cli_analyze_json_and_table():
    args = ["analyze", *map(str, width_logs()), "--preset", "rupa2026", "--format", "json"]
    result = CliRunner().invoke(validate, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    runs = {r["run"]: r for r in data["runs"]}
    assert runs["width128_s0"]["onset_epoch"] == 400
    assert isinstance(runs["width128_s0"]["onset_epoch"], int)
    assert runs["width128_s0"]["fn_star"] == pytest.approx(1.1433424949645996, rel=1e-15)
    assert {"in_sample", "held_out"} <= set(data["lead_summary"])
    table = CliRunner().invoke(validate, args[:-2] + ["--format", "table"])
    assert table.exit_code == 0 and "width128" in table.stdout


def test_gaps_are_skipped_and_phase_two_rule(tmp_path):
    log = pd.DataFrame({
        "epoch": [10, 20, 30, 40, 50, 60],
        "phase": [1, 1, 1, 2, 2, 2],
        "train": [0.9, 0.995, 1.0, 0.99, 1.0, 1.0],
        "test": [0.9] * 6,
        "nc1": [np.nan, 0.5, 0.005, 0.02, 0.009, 0.001],  # CE phase dips below: not counted
        "nc2": [np.nan] * 6, "nc3": [np.nan] * 6,
        "feat_norm": [np.nan, 9.0, 8.0, 2.0, 1.5, 1.2],
    })
    path = tmp_path / "toy_s3.csv"
    log.to_csv(path, index=False)
    runs = run_table(read_log(path), OnsetRule.preset("rupa2026"))
    assert runs.onset_epoch[0] == 50 and runs.fn_star[0] == 1.5 and runs.seed[0] == 3
    no_phase2 = log[log.phase == 1]
    no_phase2.to_csv(path, index=False)
    runs = run_table(read_log(path), OnsetRule.preset("rupa2026"))
    assert runs.onset_epoch[0] == 30 and runs.fn_star[0] == 8.0
    relaxed = run_table(read_log(path), OnsetRule.preset("rupa2026", 0.6))
    assert relaxed.onset_epoch[0] == 20


def test_missing_columns_exit_2(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"epoch": [1, 2], "nc1": [0.1, 0.01]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="feat_norm"):
        read_log(path)
    result = CliRunner().invoke(validate, ["analyze", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "feat_norm" in result.stderr
    result = CliRunner().invoke(validate, ["analyze", str(tmp_path / "absent.csv")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_run_labels_from_file_names():
    assert run_labels("width128_s0") == {"model": "mlp", "dataset": "mnist",
                                         "condition": "width128", "seed": 0}
    assert run_labels("depth2_s1_ext")["condition"] == "depth2_ext"
    assert run_labels("cifar10_s2")["model"] == "resnet20"
    assert run_labels("mlp5_cifar10_s0")["dataset"] == "cifar10"


def test_analyze_ncsim_log_schema():
    times = np.arange(0, 60, 10.0)
    traj = pd.DataFrame({"run_id": "a", "time": times, "phase": [1, 1, 2, 2, 2, 2],
                         "fn": [5, 4, 3, 2, 1, 1.0], "nc1_trace": [1, 0.5, 0.2, 0.05, 0.005, 0.001],
                         "model": "mlp", "dataset": "digits", "condition": "c", "seed": 0})
    out = analyze(traj, OnsetRule.preset("rupa2026"))
    assert out["runs"].onset_epoch[0] == 40 and out["runs"].fn_star[0] == 1.0


def test_run_table_refuses_a_table_without_records():
    """An empty trajectory table (columns, no rows) is refused with a message, not tabulated
    into a table without columns that the group statistics then trip over."""
    empty = pd.DataFrame(columns=["run_id", "time", "fn", "nc1", "phase"])
    with pytest.raises(InputError, match="no records"):
        run_table(empty, OnsetRule.preset("rupa2026"))
