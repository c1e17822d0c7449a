"""Mutation probes of the study analyses and the study report: summary numbers of small
hand-built run tables worked out by hand (onset shift and Welch p of an intervention arm,
collapsed fraction and fastest depth, interaction RMS and architecture effect of a grid,
the first prevented decay of a series), verdict limits at their exact boundary, and what the
report writes from the analysis (table cut, inherited runs, quick caveat, missing runs,
summary table)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_study_values import rising_traj, run_frame
from tiny_study import MORE_PART, write_tiny_study

from ncsim.study import report
from ncsim.study.analyses import (
    Section,
    _lambda_series,
    _non_monotonic,
    depth,
    grid,
    intervention,
    lead,
    series_threshold,
)
from ncsim.study.report import INCOMPLETE, markdown_table, section_markdown, write_report
from ncsim.study.spec import Study, load_study
from ncsim.study.store import Store


def study_of(analysis, quick=False, **axes_by_part):
    """A study of simulated parts named by the keywords, each with the grid axes given."""
    parts = [{"name": name, "model": "simulated", "fixed": {},
              "grid": {axis: [0] for axis in axes}} for name, axes in axes_by_part.items()]
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], parts=parts, source="test", quick=quick)


# ----------------------------------------------------------------------------- intervention
def test_intervention_onset_shift_and_welch_p_by_hand(tmp_path, no_figures):
    """Control fn* 10, 10.2 (onsets 50, 52); arm alpha = 2 fn* 10, 11 (onsets 60, 64): the
    shift is the arm's mean onset minus the control's (62 - 51 = +11), the p value is Welch's
    (unequal variances 0.02 and 0.5: df 1.08, not the pooled test's 2)."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = run_frame("rescale", intervene_alpha=[1.0, 1.0, 2.0, 2.0], seed=[0, 1, 0, 1],
                     fn_before_intervention=[1.0, 1.0, 1.0, 3.0],
                     fn_after_intervention=[1.0, 1.0, 2.0, 6.0],
                     fn_at_onset=[10.0, 10.2, 10.0, 11.0], onset_time=[50.0, 52.0, 60.0, 64.0])
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    arm = sec.tables[0][1].set_index("alpha").loc[2.0]
    assert arm["onset_shift"] == pytest.approx(11.0)
    assert arm["fn_star_ratio"] == pytest.approx(10.5 / 10.1)
    assert (arm["fn_before"], arm["fn_after"]) == (2.0, 4.0)
    t = (10.5 - 10.1) / math.sqrt(0.02 / 2 + 0.5 / 2)
    df = 0.26 ** 2 / (0.01 ** 2 + 0.25 ** 2)
    assert arm["p_fn_star"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
    control = sec.tables[0][1].set_index("alpha").loc[1.0]
    assert math.isnan(control["p_fn_star"]) and control["onset_shift"] == 0.0
    assert sec.verdict == "supports"
    assert sec.reason.endswith("rescale alpha=2: fn 2 -> 4, fn*/fn*(1) = 1.04, onset shift 11")


# ----------------------------------------------------------------------------- lead
def test_lead_ordering_accuracy_of_exactly_80_percent_supports(tmp_path, no_figures):
    """fn crosses first in 4 of 5 held-out runs (accuracy 0.8, the limit, inclusive) with a
    positive mean lead: supports."""
    study = study_of("lead_time", seeds=["seed"])
    # fn = t, fn* 10 in every run: fn crosses fn_pred = 10 at t = 10, leads onset - 10
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=10.0,
                     onset_time=[20.0, 30.0, 40.0, 50.0, 5.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    held = sec.numbers["seeds/held_out"]
    assert held["ordering_accuracy"] == 0.8
    assert held["lead_mean"] == pytest.approx((10 + 20 + 30 + 40 - 5) / 5)
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- depth
def test_depth_collapsed_fraction_and_fastest_depth(tmp_path, no_figures):
    """Depths 1..4, two seeds each: 2 + 2 + 1 + 0 of 8 collapse (fraction 0.625); mean onsets
    300, 100, 200 over depths 1, 2, 3: the fastest depth is 2 and the series turns."""
    study = study_of("depth", deep=["depth", "seed"])
    status = ["ok"] * 5 + ["not_collapsed"] * 3
    onset = [300.0, 300.0, 90.0, 110.0, 200.0, np.nan, np.nan, np.nan]
    runs = run_frame("deep", depth=[1, 1, 2, 2, 3, 3, 4, 4], seed=[0, 1] * 4, status=status,
                     onset_time=onset, fn_at_onset=[1.0 if t == t else np.nan for t in onset])
    sec = depth(study, runs, rising_traj([]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["collapsed_fraction"] == pytest.approx(0.625)
    assert series["fastest_depth"] == 2
    assert series["depths"] == [1, 2, 3] and series["onsets"] == [300.0, 100.0, 200.0]
    assert sec.verdict == "supports"


def test_a_change_is_relative_to_the_earlier_onset():
    """2 -> 1 -> 1.0525: the rise is 5.25% of the earlier onset (beyond the 5% tolerance, a
    turn) though only 4.99% of the later one."""
    assert _non_monotonic(np.array([2.0, 1.0, 1.0525])) is True
    assert _non_monotonic(np.array([2.0, 1.0, 1.0475])) is False


# ----------------------------------------------------------------------------- weight decay
def test_first_prevented_lies_above_the_last_collapsed_decay():
    """A small decay that did not collapse (below the collapsing ones) is not the first
    prevented one: that is the smallest non-collapsing decay above the last collapsed."""
    rows = [{"lambda": lam, "seed": 0, "is_collapsed": ok,
             "onset_collapsed": onset if ok else np.nan}
            for lam, ok, onset in [(1e-4, False, 0), (1e-3, True, 100.0), (1e-2, True, 120.0),
                                   (1e-1, False, 0), (1.0, False, 0)]]
    (series,) = _lambda_series(pd.DataFrame(rows), "lambda", [])
    assert series["last_collapsed"] == 1e-2
    assert series["first_prevented"] == 1e-1
    assert series["regimes"] == ["prevents", "optimal", "optimal", "prevents", "prevents"]
    assert series["three_regimes"] is False


def test_threshold_of_a_one_point_series_off_the_diagonal_axis():
    """Along lambda_w at lambda_h = 0.02 (depth 1, Lambda_crit 0.05) collapse needs
    sqrt(lambda_w 0.02) < 0.05, i.e. lambda_w < 0.125, also when the series holds only its
    point lambda_w = 0.02 (the others undecided or not in the grid)."""
    one = pd.DataFrame({"lambda_w": [0.02], "lambda_h": [0.02], "depth": [1],
                        "lambda_crit_theory": [0.05]})
    two = pd.DataFrame({"lambda_w": [0.02, 0.2], "lambda_h": [0.02, 0.02], "depth": [1, 1],
                        "lambda_crit_theory": [0.05, 0.05 / 0.1 ** 0.5]})
    assert series_threshold(two, "lambda_w") == pytest.approx(0.125)
    assert series_threshold(one, "lambda_w") == pytest.approx(0.125)
    # the diagonal says so: both decays move together, the threshold is Lambda_crit itself
    assert series_threshold(one, "lambda_w", tied=True) == pytest.approx(0.05)


# ----------------------------------------------------------------------------- grid
def test_grid_interaction_rms_and_architecture_effect_by_hand(tmp_path, no_figures):
    """2 x 2 cells, log fn* = 0 +- 0.01 except c = 0.3 in cell (a2, d2): the interaction of
    the cell means of log fn* is +-c/4 in every cell (RMS c/4 = 0.075); the architecture
    effect per dataset is fn*(a2) / fn*(a1) - 1: 0 on d1, e^c - 1 on d2."""
    c, s = 0.3, 0.01
    rows = [{"arch": a, "dataset": d, "seed": k, "onset_time": 10.0,
             "fn_at_onset": math.exp((c if (a, d) == ("a2", "d2") else 0.0) + sign * s)}
            for a in ("a1", "a2") for d in ("d1", "d2") for k, sign in enumerate((-1, 1))]
    frame = pd.DataFrame(rows)
    runs = run_frame("cells", **{col: frame[col] for col in frame})
    sec = grid(study_of("grid", cells=["arch", "dataset", "seed"]), runs,
               rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["interaction_rms_log"] == pytest.approx(c / 4, rel=1e-9)
    effect = sec.numbers["architecture_effect"]
    assert effect["d1"] == pytest.approx(0.0, abs=1e-12)
    assert effect["d2"] == pytest.approx(math.exp(c) - 1, rel=1e-9)
    assert "architecture effect d1: +0%, d2: +35%" in sec.reason
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- report
def test_markdown_table_cuts_after_max_rows_and_counts_the_rest():
    """A table of 5 rows with max_rows 3: the header, rule and 3 rows, then the count of the
    2 rows left out."""
    lines = markdown_table(pd.DataFrame({"x": range(5)}), max_rows=3).strip().splitlines()
    assert lines[2:5] == ["| 0 |", "| 1 |", "| 2 |"]
    assert lines[5:] == ["", "(2 more rows in the run table)"]
    assert "more rows" not in markdown_table(pd.DataFrame({"x": range(3)}), max_rows=3)


def test_section_counts_the_runs_inherited_below_the_threshold():
    """Two of four runs were already below the threshold at phase 2 (one flag missing counts
    as observed): the report says 2, and the run line counts all 4."""
    runs = pd.DataFrame({"run_id": list("abcd"), "part": "p", "status": "ok",
                         "onset_at_phase_start": [True, False, None, True]})
    text = section_markdown(study_of("invariance", p=["seed"]), Section("supports", "r"), runs)
    assert "2 trained run(s) were already below the onset threshold" in text
    assert "Runs: 4 (ok: 4)." in text
    plain = section_markdown(study_of("invariance", p=["seed"]), Section("supports", "r"),
                             runs.drop(columns="onset_at_phase_start"))
    assert "already below the onset threshold" not in plain


@pytest.mark.parametrize("quick", [True, False])
def test_quick_caveat_follows_the_verdict_of_a_quick_study_only(quick):
    """The verdict line of a quick variant ends with the caveat that it is no evidence; a
    full study's does not carry it."""
    runs = pd.DataFrame({"run_id": ["a"], "part": "p", "status": "ok"})
    text = section_markdown(study_of("invariance", quick=quick, p=["seed"]),
                            Section("supports", "why."), runs)
    line = next(x for x in text.splitlines() if x.startswith("**Verdict"))
    assert line == "**Verdict: supports.** why." + (report.QUICK_CAVEAT if quick else "")
    assert ("quick variant)" in text) is quick


def test_part_missing_some_of_its_runs_is_not_a_whole_part():
    """A part that misses 1 of its 2 runs was not left out by a part selection: the
    finished runs are not whole parts; missing all of them they are."""
    assert report.Progress(3, 4, {"ufm": (1, 2)}).whole_parts is False
    assert report.Progress(2, 4, {"ufm": (2, 2)}).whole_parts is True
    assert report.Progress(0, 2, {"ufm": (2, 2)}).whole_parts is False
    assert report.Progress(4, 4).complete and not report.Progress(4, 4).whole_parts


def _bound(folder, extra=MORE_PART, out="out"):
    """A store at ``folder / out`` bound to the tiny study (part "ufm": seeds 0, 1;
    ``extra``: more parts)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = load_study(write_tiny_study(folder, seeds=2, t_end=10.0, records=5, extra=extra))
    store = Store(folder / out)
    store.bind({**study.to_dict(), "run_ids": [d.run_id for d in study.runs()]})
    return store, study.runs()


def _finish(store, descs):
    traj = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 0.5]})
    for d in descs:
        store.write_run(d.run_id, {"part": d.part, "status": "ok", "onset_time": 1.0,
                                   "fn_at_onset": 0.5, "final_fn": 0.5, "error": None}, traj)


def test_verdict_json_counts_the_missing_runs_of_a_part(tmp_path, monkeypatch):
    """One of the two runs of "ufm" and one of the two of "more" finished: verdict.json
    counts 2 of 4, each part missing 1 (not its size 2), and the study is unfinished."""
    store, descs = _bound(tmp_path)
    _finish(store, [descs[0], descs[2]])
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supports", "fine"))
    write_report(store.root, nested=False)
    verdict = json.loads((store.root / "verdict.json").read_text())
    assert verdict["verdict"] == INCOMPLETE
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 4)
    assert verdict["runs_missing"] == {"ufm": 1, "more": 1}
    assert "finished_parts" not in verdict["numbers"]
    assert verdict["reason"].startswith("2 of 4 runs finished (missing: ufm 1 of 2, more 1 of 2)")
    assert report.unfinished_studies(store.root) == [(store.root, 2, 4)]


def test_report_over_two_studies_has_a_summary_table(tmp_path, monkeypatch):
    """Two finished study folders under one root: the report opens with a summary table, one
    row per study; each verdict.json counts its runs; none is unfinished (an inconclusive
    verdict is not an unfinished study)."""
    calls = []

    def analysis(study, runs, traj, figures):
        calls.append(len(runs))
        return Section("inconclusive", "fine")

    monkeypatch.setitem(report.ANALYSES, "invariance", analysis)
    for name in ("one", "two"):
        store, descs = _bound(tmp_path, extra="", out=name)
        _finish(store, descs)
    write_report(tmp_path, nested=True)
    text = (tmp_path / "report.md").read_text()
    assert "| folder | study | variant | verdict |" in text
    for name in ("one", "two"):  # each row and section names its folder
        assert text.count(f"| `{name}/` | tiny | full | inconclusive |") == 1
        assert text.count(f"(`tiny`, full variant, folder `{name}/`)") == 1
    assert calls == [2, 2]
    for name in ("one", "two"):
        verdict = json.loads((tmp_path / name / "verdict.json").read_text())
        assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 2)
    assert report.unfinished_studies(tmp_path) == []


def test_diagonal_series_threshold_is_lambda_crit():
    """A grid's diagonal (lambda_h = lambda_w at every point, depth 1, Lambda_crit 0.05), asked
    for as tied, has threshold Lambda_crit; the same points read as a series along lambda_w
    at fixed lambda_h would put it at Lambda_crit^2 / lambda_h of the first point."""
    lams = [0.01, 0.03, 0.1]
    diag = pd.DataFrame({"lambda_w": lams, "lambda_h": lams, "depth": [1] * 3,
                         "lambda_crit_theory": [0.05] * 3, "is_collapsed": [True, True, False],
                         "onset_collapsed": [50.0, 30.0, np.nan]})
    (tied,) = _lambda_series(diag, "lambda_w", [], tied=True)
    assert tied["lambda_crit_theory"] == pytest.approx(0.05, rel=1e-12)
    assert tied["theory_in_bracket"] is True
    (fixed,) = _lambda_series(diag, "lambda_w", [])
    assert fixed["lambda_crit_theory"] == pytest.approx(0.05 ** 2 / 0.01, rel=1e-12)
