"""Third mutation probe of the study analyses (ncsim.study.analyses): verdict limits hit
exactly in binary floating point, NaN and zero-mean inputs of the statistics helpers, which
rows count (a part without a collapsed control, a trained part's alpha column, a grid cell
outside the full rectangle, replicates of one seed), the numbers and notes reported, and the
interaction F test against an independent least-squares fit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_study_values import rising_traj, run_frame

from ncsim.study.analyses import (
    _group_stats,
    _lambda_series,
    _reduction_gap,
    collapsed,
    cv,
    grid,
    intervention,
    invariance,
    lead,
    weight_decay,
    width,
)
from ncsim.study.spec import Study

# Welch's test on arms of equal fn* (chosen so that means are exact) warns of lost precision
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")


def study_of(analysis, model="simulated", **axes_by_part):
    """A study of parts (all of ``model``) named by the keywords, each with the axes given."""
    parts = [{"name": name, "model": model, "fixed": {},
              "grid": {axis: [0] for axis in axes}} for name, axes in axes_by_part.items()]
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], parts=parts, source="test")


# ----------------------------------------------------------------------------- helpers
def test_cv_of_values_with_zero_mean_is_nan():
    """A CV is undefined for a zero mean: -1, 1 gives NaN, not an infinity."""
    assert math.isnan(cv([-1.0, 1.0]))
    assert math.isnan(cv([0.0, 0.0, 0.0]))


def test_cv_leaves_out_values_that_are_not_finite():
    """NaN and infinite values are dropped before the CV: 1, 3, NaN, inf is CV(1, 3) =
    sqrt(2) / 2; one finite value left gives NaN."""
    assert cv([1.0, 3.0, math.nan, math.inf]) == pytest.approx(math.sqrt(2) / 2, rel=1e-15)
    assert math.isnan(cv([2.0, math.nan]))


def test_collapsed_leaves_out_infinite_onsets_and_fn_star():
    """An ok run with an infinite onset time or an infinite fn at onset has no onset in
    view: only the run with both finite counts as collapsed."""
    runs = pd.DataFrame({"run_id": list("abcd"), "status": "ok",
                         "onset_time": [1.0, math.inf, -math.inf, 2.0],
                         "fn_at_onset": [1.0, 1.0, 1.0, math.inf]})
    assert list(collapsed(runs)["run_id"]) == ["a"]


def test_group_stats_gives_means_not_medians_and_counts_the_collapsed():
    """A group of fn* 1, 1, 4 (onsets 10, 10, 40) and a not-collapsed run: 4 runs, 3
    collapsed, fn* mean 2 and onset mean 20 (the medians would be 1 and 10), and the sample
    CVs of those three values."""
    runs = run_frame("p", activation="relu", status=["ok", "ok", "ok", "not_collapsed"],
                     fn_at_onset=[1.0, 1.0, 4.0, np.nan], onset_time=[10.0, 10.0, 40.0, np.nan])
    row = _group_stats(runs, ["activation"]).iloc[0]
    assert (row["n_runs"], row["n_collapsed"]) == (4, 3)
    assert (row["fn_star_mean"], row["onset_mean"]) == (2.0, 20.0)
    expected = np.std([1.0, 1.0, 4.0], ddof=1) / 2.0
    assert row["fn_star_cv"] == pytest.approx(expected, rel=1e-14)
    assert row["onset_cv"] == pytest.approx(expected, rel=1e-14)


# ----------------------------------------------------------------------------- invariance
def test_invariance_reports_the_mean_theory_fn_star_and_the_exact_reason(tmp_path,
                                                                          no_figures):
    """Three collapsed seeds (fn* 24, 25, 26; theory 1, 1, 4) and one that diverged: the row
    counts 4 runs, 3 collapsed, theory mean 2 (not the median 1), and the reason lists the
    part's CV to one decimal."""
    study = study_of("invariance", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3], status=["ok", "ok", "ok", "diverged"],
                     onset_time=[10.0, 11.0, 12.0, np.nan],
                     fn_at_onset=[24.0, 25.0, 26.0, np.nan],
                     fn_star_theory=[1.0, 1.0, 4.0, 9.0])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    row = sec.tables[0][1].iloc[0]
    assert (row["n_runs"], row["n_collapsed"]) == (4, 3)
    assert row["fn_star_theory_mean"] == 2.0
    assert row["fn_star_mean"] == 25.0
    assert row["onset_cv"] == pytest.approx(1.0 / 11.0, rel=1e-14)
    assert sec.verdict == "supports"
    assert sec.reason == "fn* CV < 8% in every part: seeds: CV 4.0% (n=3)"


def test_invariance_with_two_collapsed_runs_is_inconclusive(tmp_path, no_figures):
    """A part with 2 collapsed runs (the third not collapsed) is not evaluated: inconclusive
    with the exact reason and no numbers."""
    study = study_of("invariance", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2], status=["ok", "ok", "not_collapsed"],
                     onset_time=[10.0, 11.0, np.nan], fn_at_onset=[24.0, 30.0, np.nan])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert (sec.verdict, sec.reason) == (
        "inconclusive", "no part has 3 or more collapsed runs with a finite fn* CV")
    assert sec.numbers == {}


def test_invariance_reason_gives_each_axis_s_mean_cv_over_the_settings(tmp_path,
                                                                        no_figures):
    """fn* 1, 3, 2, 2 at (a, b) = (0, 0), (1, 0), (0, 1), (1, 1): across a the CVs are
    sqrt(2) / 2 and 0 (mean 35.4%, not the largest 70.7%), across b (1 / sqrt(2)) / 1.5 and
    (1 / sqrt(2)) / 2.5 (mean 37.7%); the part's CV over all four runs is over the limit."""
    study = study_of("invariance", p=["a", "b"])
    runs = run_frame("p", a=[0, 1, 0, 1], b=[0, 0, 1, 1], onset_time=[5.0, 6.0, 7.0, 8.0],
                     fn_at_onset=[1.0, 3.0, 2.0, 2.0])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    cv_all = np.std([1.0, 3.0, 2.0, 2.0], ddof=1) / 2.0
    cv_a = (math.sqrt(2) / 2 + 0.0) / 2
    cv_b = ((1 / math.sqrt(2)) / 1.5 + (1 / math.sqrt(2)) / 2.5) / 2
    assert sec.verdict == "contradicts"
    assert sec.reason == (f"fn* CV >= 8% in p: p: CV {100 * cv_all:.1f}% (n=4; across a "
                          f"{100 * cv_a:.1f}%, b {100 * cv_b:.1f}% with the other axes fixed)")
    assert sec.numbers["p"]["cv_by_axis"] == pytest.approx({"a": cv_a, "b": cv_b}, rel=1e-14)


# ----------------------------------------------------------------------------- lead
def test_lead_of_exactly_zero_does_not_count_as_fn_first(tmp_path, no_figures):
    """fn = t, fn* 10 in every run (held-out fn_pred 10, crossed at t = 10); onsets 20, 20,
    20, 20, 10: leads 10, 10, 10, 10, 0. A lead of 0 is no ordering: accuracy 4 / 5."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=10.0,
                     onset_time=[20.0, 20.0, 20.0, 20.0, 10.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    held = sec.numbers["seeds/held_out"]
    assert held["n_crossed"] == 5
    assert held["ordering_accuracy"] == 0.8
    assert held["lead_mean"] == pytest.approx(8.0, rel=1e-12)
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- intervention
def _arm_runs(arm_fn_star, control=(1.0, 1.0), alpha_col="intervene_alpha", part="rescale"):
    """alpha = 1 (the control, fn* ``control``) and alpha = 2 (fn* ``arm_fn_star``), onsets
    50 and 60."""
    n_c, n_a = len(control), len(arm_fn_star)
    return run_frame(part, **{alpha_col: [1.0] * n_c + [2.0] * n_a},
                     seed=list(range(n_c)) + list(range(n_a)),
                     fn_at_onset=[*control, *arm_fn_star],
                     onset_time=[50.0] * n_c + [60.0] * n_a)


def test_intervention_deviation_of_exactly_three_tolerances_is_not_beyond(tmp_path,
                                                                           no_figures):
    """Control fn* 1, arm fn* 1 - 3 x 0.05 (exactly 3 x 0.05 below in binary floating point):
    the arm is not *more* than 15% away, so the verdict is inconclusive; one ulp further is
    contradicts."""
    at = 1.0 - 3 * 0.05
    assert abs(at - 1.0) == 3 * 0.05  # the limit is hit exactly
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = _arm_runs((at, at))
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["max_fn_star_deviation"] == 3 * 0.05
    assert (sec.verdict, sec.reason) == (
        "inconclusive", "rescale alpha=2: fn nan -> nan, fn*/fn*(1) = 0.85, onset shift 10")
    beyond = np.nextafter(at, 0.0)
    runs = _arm_runs((beyond, beyond))
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.verdict == "contradicts"
    assert sec.reason.startswith("an arm ends more than 15% away from fn*: rescale alpha=2")


def test_intervention_ratio_is_against_the_mean_control_fn_star(tmp_path, no_figures):
    """Control fn* 1, 1, 4 (mean 2, median 1), arm fn* 2, 2: the ratio is 2 / 2 = 1 and the
    arm returns to fn*: supports."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = _arm_runs((2.0, 2.0), control=(1.0, 1.0, 4.0))
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    arm = sec.tables[0][1].set_index("alpha").loc[2.0]
    assert arm["fn_star_ratio"] == 1.0
    assert sec.verdict == "supports"
    assert sec.numbers == {"max_fn_star_deviation": 0.0, "arms_without_collapse": 0,
                           "arms_in_part_collapsed": 0}


def test_intervention_part_without_a_collapsed_control_decides_nothing(tmp_path, no_figures):
    """Part "good": control collapses, the arm returns exactly. Part "lost": nothing
    collapses, the control included, so its arm without collapse is no evidence: supports
    (not contradicts), and the table still lists both parts."""
    study = study_of("intervention", good=["intervene_alpha", "seed"],
                     lost=["intervene_alpha", "seed"])
    good = _arm_runs((1.0, 1.0), part="good")
    lost = _arm_runs((np.nan, np.nan), control=(np.nan, np.nan), part="lost").assign(
        status="not_collapsed", onset_time=np.nan)
    runs = pd.concat([good, lost], ignore_index=True)
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.verdict == "supports"
    assert sec.numbers["arms_without_collapse"] == 0
    table = sec.tables[0][1]
    assert list(table["part"]) == ["good", "good", "lost", "lost"]
    assert list(table["n_without_collapse"]) == [0, 0, 2, 2]


def test_intervention_reads_a_trained_part_s_intervention_alpha(tmp_path, no_figures):
    """A trained part's factor column is intervention_alpha (intervene_alpha absent or all
    NaN): its arms are read from it, with a 4% deviation: supports."""
    study = study_of("intervention", model="trained", net=["intervention_alpha", "seed"])
    runs = _arm_runs((1.04, 1.04), alpha_col="intervention_alpha", part="net")
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert list(sec.tables[0][1]["alpha"]) == [1.0, 2.0]
    assert sec.verdict == "supports"
    assert sec.numbers["max_fn_star_deviation"] == pytest.approx(0.04, rel=1e-12)
    sec = intervention(study, runs.assign(intervene_alpha=np.nan), rising_traj(runs["run_id"]),
                       tmp_path)
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- weight decay
def test_open_ended_series_with_lambda_crit_at_the_last_collapsed_is_not_above_it():
    """Nothing prevented; the theory's lambda_crit (ratio 1, so lambda_crit_theory itself)
    equals the last collapsed lambda 1e-2: it does not lie above it (False); a lambda_crit of
    2e-2 does (True)."""
    def series(crit):
        rows = pd.DataFrame({"lambda": [1e-3, 1e-2], "lambda_w": 1.0, "lambda_h": 1.0,
                             "lambda_crit_theory": crit, "is_collapsed": True,
                             "onset_collapsed": [100.0, 80.0]})
        (out,) = _lambda_series(rows, "lambda", [])
        return out

    at = series(1e-2)
    assert at["lambda_crit_theory"] == 1e-2 and math.isnan(at["first_prevented"])
    assert at["theory_in_bracket"] is False
    assert series(2e-2)["theory_in_bracket"] is True


def test_weight_decay_counts_the_undecided_runs_in_numbers_and_a_note(tmp_path, no_figures):
    """Two diverged runs and one out of steps beside decided ones: numbers count 3 undecided
    runs, and the note names them by status, most frequent first."""
    study = study_of("weight_decay", p=["lambda", "seed"])
    lam = [1e-4, 1e-3, 1e-2, 1e-1, 1e-4, 1e-3, 1e-2]
    status = ["ok", "ok", "ok", "vanishing", "diverged", "diverged", "max_steps"]
    onset = [1000.0, 200.0, 100.0, np.nan, np.nan, np.nan, np.nan]
    runs = run_frame("p", **{"lambda": lam}, seed=[0, 0, 0, 0, 1, 1, 1], status=status,
                     onset_time=onset, fn_at_onset=[1.0, 1.0, 1.0] + [np.nan] * 4)
    sec = weight_decay(study, runs, rising_traj([]), tmp_path)
    assert sec.numbers["undecided_runs"] == {"p": 3}
    assert sec.notes == ["p: 3 run(s) stopped before deciding (2 diverged, 1 max_steps); they "
                         "count neither as collapsed nor as prevented and are left out."]
    (series,) = sec.numbers["series"]
    assert series["regimes"] == ["slow", "optimal", "optimal", "prevents"]
    assert sec.verdict == "supports"


def test_weight_decay_counts_open_series_with_lambda_crit_not_above(tmp_path, no_figures):
    """Two series (dim 16, 32) that collapse at every lambda: lambda_crit 0.05 lies above
    the last collapsed 1e-2 in the first, 5e-3 lies below it in the second: 1 of 2 series
    without a prevented lambda, and no prevents regime: inconclusive."""
    study = study_of("weight_decay", p=["lambda", "dim", "seed"])
    lam = [1e-3, 1e-2] * 2
    runs = run_frame("p", **{"lambda": lam}, lambda_w=lam, lambda_h=lam, dim=[16, 16, 32, 32],
                     seed=0, onset_time=[100.0, 90.0, 100.0, 90.0], fn_at_onset=1.0,
                     lambda_crit_theory=[0.05, 0.05, 5e-3, 5e-3])
    sec = weight_decay(study, runs, rising_traj([]), tmp_path)
    assert [s["theory_in_bracket"] for s in sec.numbers["series"]] == [True, False]
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith(
        "0 of 2 lambda series show slow, optimal and prevents in order; lambda_crit (theory) "
        "lies between the last collapsed and the first prevented lambda in 0 of 0 series "
        "with a prevented lambda, above the last collapsed lambda in 1 of 2 series without "
        "one.")
    assert sec.reason.endswith(" (no series reaches the prevents regime)")


# ----------------------------------------------------------------------------- width
def test_reduction_gap_pairs_runs_of_one_seed_only():
    """Seeds 0 and 1 at one dim, each with equal Gram and parameter forms but different from
    each other (onset 100 vs 50): the forms agree exactly (gap 0); mixing seeds would give
    a gap of 0.5."""
    runs = pd.DataFrame({"part": "p", "dim": 16, "seed": [0, 0, 1, 1],
                         "reduction": ["none", "gram"] * 2, "status": "ok",
                         "onset_time": [100.0, 100.0, 50.0, 50.0],
                         "fn_at_onset": [2.0, 2.0, 1.0, 1.0]})
    assert _reduction_gap(runs) == 0.0


def test_width_theory_column_is_the_mean_per_width(tmp_path, no_figures):
    """fn_star_theory per width is the mean over its runs (1 and 3 at width 16: 2)."""
    study = study_of("width", relu=["width", "seed"])
    runs = run_frame("relu", width=[16, 16, 32, 32, 64, 64], seed=[0, 1] * 3,
                     onset_time=[300.0, 300.0, 200.0, 200.0, 100.0, 100.0], fn_at_onset=1.0,
                     fn_star_theory=[1.0, 3.0, 5.0, 5.0, 0.5, 1.5])
    sec = width(study, runs, rising_traj([]), tmp_path)
    table = sec.tables[0][1]
    assert list(table["width_or_dim"]) == [16, 32, 64]
    assert list(table["fn_star_theory"]) == [2.0, 5.0, 1.0]
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- grid
def _cells(values):
    """Runs of a grid: values maps (arch, dataset) to the fn* of its seeds."""
    rows = [{"arch": a, "dataset": d, "seed": s, "onset_time": 10.0, "fn_at_onset": f}
            for (a, d), fns in values.items() for s, f in enumerate(fns)]
    frame = pd.DataFrame(rows)
    return run_frame("cells", **{c: frame[c] for c in frame})


def _f_test_by_lstsq(values):
    """The interaction F test on log fn*, computed independently: residual sums of squares of
    the additive and the cell-means least-squares fits, each from numpy.linalg.lstsq."""
    keys = list(values)
    archs = sorted({a for a, _ in keys})
    datas = sorted({d for _, d in keys})
    y, add, full = [], [], []
    for a, d in keys:
        for f in values[(a, d)]:
            y.append(math.log(f))
            add.append([1.0] + [float(a == x) for x in archs[1:]]
                       + [float(d == x) for x in datas[1:]])
            full.append([float((a, d) == k) for k in keys])
    y = np.array(y)

    def rss(x):
        x = np.array(x)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return float(((y - x @ coef) ** 2).sum())

    rss_add, rss_full = rss(add), rss(full)
    df_inter = (len(archs) - 1) * (len(datas) - 1)
    df_within = len(y) - len(keys)
    f_stat = ((rss_add - rss_full) / df_inter) / (rss_full / df_within)
    return f_stat, float(stats.f.sf(f_stat, df_inter, df_within))


def test_grid_f_test_with_unequal_noise_matches_a_least_squares_fit(tmp_path, no_figures):
    """2 x 2 cells of 3 seeds with skewed offsets (cell mean and median of log fn* differ):
    F and p equal the F test of the additive against the cell-means least-squares fit."""
    e = [0.0, 0.02, 0.3]
    values = {("a1", "d1"): [math.exp(0.0 + x) for x in e],
              ("a1", "d2"): [math.exp(0.5 + x) for x in e[::-1]],
              ("a2", "d1"): [math.exp(0.2 + x) for x in (0.0, 0.1, 0.05)],
              ("a2", "d2"): [math.exp(1.4 + x) for x in (0.0, 0.01, 0.2)]}
    f_stat, p = _f_test_by_lstsq(values)
    sec = grid(study_of("grid", cells=["arch", "dataset", "seed"]), _cells(values),
               rising_traj([]), tmp_path)
    assert sec.numbers["interaction_F"] == pytest.approx(f_stat, rel=1e-9)
    assert sec.numbers["interaction_p"] == pytest.approx(p, rel=1e-9)


def test_grid_f_test_uses_only_the_full_rectangle_of_cells(tmp_path, no_figures):
    """3 architectures x 2 datasets, one cell (a3 x d2) without collapse: the test runs on
    the 2 x 2 rectangle of a1, a2 (the a3 runs left out), F as a least-squares fit of those
    cells alone."""
    e = (0.0, 0.05, 0.2)
    values = {("a1", "d1"): [math.exp(0.0 + x) for x in e],
              ("a1", "d2"): [math.exp(0.7 + x) for x in e[::-1]],
              ("a2", "d1"): [math.exp(0.3 + x) for x in (0.0, 0.1, 0.02)],
              ("a2", "d2"): [math.exp(0.4 + x) for x in (0.0, 0.01, 0.1)]}
    f_stat, p = _f_test_by_lstsq(values)
    runs = _cells({**values, ("a3", "d1"): [5.0, 9.0, 30.0], ("a3", "d2"): [1.0, 1.0, 1.0]})
    runs.loc[(runs["arch"] == "a3") & (runs["dataset"] == "d2"),
             ["status", "onset_time", "fn_at_onset"]] = ["not_collapsed", np.nan, np.nan]
    sec = grid(study_of("grid", cells=["arch", "dataset", "seed"]), runs, rising_traj([]),
               tmp_path)
    assert sec.numbers["interaction_F"] == pytest.approx(f_stat, rel=1e-9)
    assert sec.numbers["interaction_p"] == pytest.approx(p, rel=1e-9)
    assert set(sec.numbers["architecture_effect"]) == {"d1", "d2"}


def test_grid_with_a_single_dataset_is_inconclusive(tmp_path, no_figures):
    """3 architectures x 1 dataset, every cell collapsed: no 2 x 2 rectangle, inconclusive
    with the exact reason (3 of 3 cells collapsed, none empty)."""
    values = {(a, "d1"): [1.0, 1.1] for a in ("a1", "a2", "a3")}
    sec = grid(study_of("grid", cells=["arch", "seed"]), _cells(values), rising_traj([]),
               tmp_path)
    assert (sec.verdict, sec.reason) == (
        "inconclusive", "3 of 3 cells collapsed; the non-additivity test needs 2 "
        "architectures x 2 datasets with collapsed runs in every cell")
    assert sec.numbers == {}
