"""Analyses: regimes, non-monotonicity, the two-segment intervention, multi-study reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tiny_study import intervention_study

from ncsim.study.analyses import _non_monotonic, collapsed, cv, regimes
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study

SPEC = intervention_study("tiny_intervention", "Tiny intervention", 400.0, 40,
                          [0.5, 1.0, 2.0])


def test_regimes_and_order():
    lams = np.array([1e-3, 1e-2, 3e-2, 1e-1])
    onset = np.array([1000.0, 130.0, 60.0, np.nan])
    ok = np.array([True, True, True, False])
    assert regimes(lams, onset, ok) == ["slow", "slow", "optimal", "prevents"]


def test_non_monotonic_and_cv():
    assert _non_monotonic(np.array([3.0, 2.0, 2.5, 2.4]))
    assert not _non_monotonic(np.array([3.0, 2.0, 1.5, 1.49]))
    assert abs(cv([1.0, 1.0, 1.0])) < 1e-12
    assert np.isnan(cv([1.0]))


def test_collapsed_skips_unobserved_onsets():
    runs = pd.DataFrame({"status": ["ok", "ok", "vanishing"], "onset_time": [1.0, 2.0, 3.0],
                         "fn_at_onset": [1.0, 1.0, 1.0],
                         "onset_at_phase_start": [False, True, False]})
    assert len(collapsed(runs)) == 1


def test_intervention_two_segments_and_reports(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    study = load_study(path)
    summary = run_study(study, tmp_path / "all" / "tiny", progress=False)
    assert summary.failed == 0
    runs = pd.read_parquet(tmp_path / "all" / "tiny" / "runs.parquet")
    for _, run in runs.iterrows():
        ratio = run["fn_after_intervention"] / run["fn_before_intervention"]
        assert abs(ratio - run["intervene_alpha"]) < 1e-6 * run["intervene_alpha"]
    traj = pd.read_parquet(tmp_path / "all" / "tiny" / "trajectories.parquet")
    assert set(traj["phase"]) == {1, 2}
    assert traj.groupby("run_id")["time"].max().max() <= 400.0 + 1e-9
    text = (tmp_path / "all" / "tiny" / "report.md").read_text()
    assert "fn*/fn*(1)" in text and "Verdict:" in text
    from ncsim.study.report import write_report

    combined = write_report(tmp_path / "all").read_text()
    assert "Tiny intervention" in combined and "tiny/figures/" in combined


def test_fmt_keeps_infinities_apart_from_nan():
    from ncsim.study.analyses import fmt

    assert [fmt(float("nan")), fmt(float("inf")), fmt(-np.inf)] == ["nan", "inf", "-inf"]
    assert fmt(np.float64(1.23456e-5)) == "1.235e-05" and fmt(3) == "3"
