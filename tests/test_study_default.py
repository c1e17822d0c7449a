"""``ncsim study run`` without a spec: the quick weight-decay study, table, figure, report."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from ncsim.cli import cli as main

    out = tmp_path_factory.mktemp("study") / "default"
    result = CliRunner().invoke(main, ["study", "run", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_default_run_writes_table_figure_report(default_run):
    runs = pd.read_parquet(default_run / "runs.parquet")
    assert runs["run_id"].is_unique and len(runs) > 20
    assert list((default_run / "figures").glob("*.png"))
    assert (default_run / "report.md").exists() and (default_run / "report.html").exists()


def test_weight_decay_report_shows_regimes_and_lambda_crit(default_run):
    text = (default_run / "report.md").read_text()
    assert "lambda_crit" in text
    assert "Verdict: supports" in text
    for regime in ("slow", "optimal", "prevents"):
        assert regime in text
    assert "theory" in text and "figures/wd_heatmap_ufm_2d.png" in text
    # the grid's diagonal series is named as such, the others by their lambda_h
    assert "e.g. ufm_2d (lambda_h = lambda_w): regimes slow slow slow optimal prevents" in text
    assert "| ufm_2d | lambda_h = lambda_w | slow slow slow optimal prevents prevents |" in text
    assert "| ufm_2d | lambda_h = 0.001 |" in text


def test_report_command_rewrites_the_report(default_run):
    from ncsim.cli import cli as main

    (default_run / "report.md").unlink()
    result = CliRunner().invoke(main, ["study", "report", str(default_run)])
    assert result.exit_code == 0, result.output
    assert (default_run / "report.md").exists()


def test_trained_part_crosses_the_threshold_in_phase_two(default_run):
    """The quick trained part starts uncollapsed and shows its crossing (not a blind smoke test)."""
    runs = pd.read_parquet(default_run / "runs.parquet")
    trained = runs[runs["part"] == "mlp_real"].sort_values("weight_decay")
    assert len(trained) == 3
    assert not trained["onset_at_phase_start"].astype(bool).any()
    assert list(trained["status"]) == ["ok", "ok", "vanishing"]
    phase_one_epochs = 40
    assert (trained["onset_time"].iloc[:2] > phase_one_epochs).all()
    text = (default_run / "report.md").read_text()
    assert "| mlp_real | all runs | slow optimal prevents | True |" in text


def test_quick_verdict_says_it_is_not_evidence(default_run):
    from ncsim.study.report import QUICK_CAVEAT

    text = (default_run / "report.md").read_text()
    verdict_line = next(line for line in text.splitlines() if line.startswith("**Verdict:"))
    assert verdict_line.endswith(QUICK_CAVEAT)
    assert "not evidence for or against the claim" in QUICK_CAVEAT
