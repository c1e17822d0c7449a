"""Second mutation probe of the study report: whole-part detection, long tables cut, number
format, per-part missing counts and their order, the summary cell, inherited runs, quick
caveat, statistics helpers of the analyses."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_study_report_strict import _bound_folder, _finish

from ncsim.study import analyses, report
from ncsim.study.analyses import Section
from ncsim.study.report import INCOMPLETE, Progress, write_report


def _verdict(folder):
    return json.loads((folder / "verdict.json").read_text())


@pytest.fixture
def supported(monkeypatch):
    """The tiny study's analysis replaced by one that supports without looking at the runs."""
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))


# ----------------------------------------------------------------------------- progress
def test_whole_parts_needs_every_missing_part_missing_whole():
    """A part with some of its runs finished is not a whole finished part."""
    assert Progress(2, 4, {"more": (2, 2)}).whole_parts
    assert not Progress(3, 4, {"more": (1, 2)}).whole_parts
    assert not Progress(2, 4, {"ufm": (1, 2), "more": (1, 2)}).whole_parts


def test_whole_parts_needs_some_finished_run():
    """A study with no run finished has no finished parts to analyse alone."""
    assert not Progress(0, 4, {"ufm": (2, 2), "more": (2, 2)}).whole_parts
    assert not Progress(0, 4, {"ufm": (2, 2), "more": (2, 2)}).complete


def test_partly_finished_part_quotes_no_verdict_of_finished_parts(tmp_path, supported):
    """"ufm" whole and one run of "more": incomplete, 3 of 4, no finished-parts verdict."""
    folder, store, descs = _bound_folder(tmp_path)
    _finish(store, [d for d in descs if d.part == "ufm"] + [d for d in descs
                                                            if d.part == "more"][:1])
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert verdict["verdict"] == INCOMPLETE
    assert (verdict["runs_finished"], verdict["runs_total"]) == (3, 4)
    assert verdict["runs_missing"] == {"more": 1}
    assert "finished_parts" not in verdict["numbers"]
    assert verdict["reason"].startswith("3 of 4 runs finished (missing: more 1 of 2)")


def test_whole_finished_part_quotes_its_verdict_and_names_only_finished_parts(tmp_path,
                                                                             supported):
    """"ufm" whole, "more" not started: finished_parts names "ufm" alone; summary cell."""
    folder, store, descs = _bound_folder(tmp_path)
    _finish(store, [d for d in descs if d.part == "ufm"])
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert verdict["verdict"] == INCOMPLETE
    assert verdict["numbers"]["finished_parts"] == {"parts": ["ufm"], "verdict": "supported",
                                                    "reason": "fine"}
    assert report._summary_verdict(verdict) == "incomplete (finished parts: supported)"
    assert report.unfinished_studies(folder) == [(folder, 2, 4)]


def test_missing_parts_follow_the_study_order_with_unknown_runs_last(tmp_path):
    """Missing runs are counted per part in the study's part order, "?" last."""
    folder, store, descs = _bound_folder(tmp_path, foreign=["0123456789ab"])
    study = report._load_study(store)
    missing = report._missing_by_part(study, ["0123456789ab"] + [d.run_id for d in descs])
    assert list(missing.items()) == [("ufm", (2, 2)), ("more", (2, 2)), ("?", (1, 1))]


def test_a_finished_study_is_not_listed_as_unfinished(tmp_path, supported):
    """A study with every run finished is no unfinished study."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs)
    write_report(folder, nested=False)
    assert _verdict(folder)["verdict"] == "supported"
    assert report.unfinished_studies(folder) == []


# ----------------------------------------------------------------------------- tables
def test_long_table_shows_max_rows_and_counts_the_rest():
    """45 rows: the first 40 are shown, then "(5 more rows in the run table)"."""
    text = report.markdown_table(pd.DataFrame({"i": range(45)}))
    lines = text.splitlines()
    assert lines[2] == "| 0 |" and "| 39 |" in lines and "| 40 |" not in lines
    assert len([line for line in lines if line.startswith("| ")]) == 41  # head + 40 rows
    assert lines[-1] == "(5 more rows in the run table)"
    short = report.markdown_table(pd.DataFrame({"i": range(3)}), max_rows=2)
    assert short == "| i |\n|---|\n| 0 |\n| 1 |\n\n(1 more rows in the run table)"


def test_numbers_have_four_significant_digits():
    """fmt: 4 significant digits, NaN and infinities as words, other values as text."""
    assert analyses.fmt(3.14159265) == "3.142"
    assert analyses.fmt(np.float32(0.000123456)) == "0.0001235"
    assert analyses.fmt(123456.0) == "1.235e+05"
    assert [analyses.fmt(v) for v in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]
    assert analyses.fmt(7) == "7"
    assert report.markdown_table(pd.DataFrame({"x": [2.718281828]})).splitlines()[2] == \
        "| 2.718 |"


def test_none_cell_is_written_nan():
    """A None cell reads "nan", as NaN does."""
    assert report._cell(None) == "nan"
    assert report._cell(pd.NA) == "nan"


# ----------------------------------------------------------------------------- sections
def _section_text(tmp_path, runs, quick=False):
    folder, store, descs = _bound_folder(tmp_path, extra="")
    study = report._load_study(store)
    study.quick = quick
    return report.section_markdown(study, Section("supported", "fine"), runs)


def test_inherited_runs_are_counted_in_the_report(tmp_path):
    """Two of three runs were below the threshold at phase start: "2 trained run(s)"."""
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "status": ["ok"] * 3,
                         "onset_at_phase_start": [True, True, None]})
    text = _section_text(tmp_path, runs)
    assert "2 trained run(s) were already below the onset threshold" in text


def test_three_most_common_errors_of_failed_runs_are_listed(tmp_path):
    """Failed runs: the three most frequent errors with their counts, most frequent first."""
    errors = ["e1"] * 3 + ["e2"] * 2 + ["e3"]
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(errors))],
                         "status": ["failed"] * len(errors), "error": errors})
    text = _section_text(tmp_path, runs)
    assert "Failed runs: 3 x e1; 2 x e2; 1 x e3" in text


def test_quick_caveat_only_on_a_quick_variant(tmp_path):
    """The quick caveat follows the verdict of a quick study and of no full one."""
    runs = pd.DataFrame({"run_id": ["a"], "status": ["ok"]})
    assert "Quick variant: a smoke test" not in _section_text(tmp_path / "full", runs)
    assert "Quick variant: a smoke test" in _section_text(tmp_path / "quick", runs, quick=True)


# ----------------------------------------------------------------------------- analyses
def test_observed_keeps_runs_with_unknown_phase_start():
    """A run with no onset_at_phase_start value is observed; only True rows are left out."""
    runs = pd.DataFrame({"run_id": ["a", "b", "c"],
                         "onset_at_phase_start": [True, None, False]})
    assert list(analyses.observed(runs)["run_id"]) == ["b", "c"]


def test_collapsed_needs_finite_onset_time_and_fn():
    """Collapsed runs: status ok, finite onset time and finite fn at onset."""
    runs = pd.DataFrame({"run_id": list("abcd"), "status": ["ok", "ok", "ok", "failed"],
                         "onset_time": [1.0, math.nan, 2.0, 1.0],
                         "fn_at_onset": [0.5, 0.5, math.inf, 0.5]})
    assert list(analyses.collapsed(runs)["run_id"]) == ["a"]


def test_cv_and_spread_by_hand():
    """cv uses the sample std (ddof 1); spread ignores non-positive and non-finite values."""
    assert analyses.cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    assert math.isnan(analyses.cv([1.0]))
    assert analyses.spread([2.0, 3.0, 0.0, -1.0, math.nan]) == pytest.approx(0.5)
    assert math.isnan(analyses.spread([2.0, 0.0]))


def test_an_analysis_error_on_a_finished_study_is_raised(tmp_path, monkeypatch):
    """Every run finished: an analysis that raises is an error, not an "incomplete" note."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs)

    def broken(study, runs, traj, figures):
        raise KeyError("column")

    monkeypatch.setitem(report.ANALYSES, "invariance", broken)
    with pytest.raises(KeyError, match="column"):
        write_report(folder, nested=False)
    assert not (folder / "verdict.json").exists()
