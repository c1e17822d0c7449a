"""Study analyses and study resolution: thresholds, regimes, verdict limits, run identity.

The run tables are built by hand, so each expected number follows from the values put in:
the theory's collapse condition (lambda_H lambda_W^L)^(1/(L+1)) < Lambda_crit solved for one
decay, the regime of each decay from its onset against the fastest one, and the verdicts at
the limits the module states (CV 8%, return within 5%, fn* spread 13%, F-test p 0.05).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.study.analyses import (
    _critical,
    _lambda_series,
    _non_monotonic,
    activation,
    collapsed,
    grid,
    intervention,
    invariance,
    lead,
    regimes,
    series_threshold,
)
from ncsim.study.spec import Study, parse_study, run_spec


def study_of(analysis, **axes_by_part):
    """A study of simulated parts named by the keywords, each with the grid axes given."""
    parts = [{"name": name, "model": "simulated", "fixed": {},
              "grid": {axis: [0] for axis in axes}} for name, axes in axes_by_part.items()]
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], parts=parts, source="test")


def run_frame(part, **columns):
    """A run table of one part: status ok unless given, run ids part-0, part-1, ..."""
    out = pd.DataFrame({"status": "ok", **columns})
    out.insert(0, "part", part)
    out.insert(0, "run_id", [f"{part}-{i}" for i in range(len(out))])
    return out


def rising_traj(run_ids, t_max=100):
    """fn = t and NC1 = 1 / t at t = 1, ..., t_max for each run (no rows without runs)."""
    t = np.arange(1.0, t_max + 1)
    empty = pd.DataFrame({"run_id": pd.Series([], dtype=str), "time": [], "fn": [],
                          "nc1_trace": []})
    return pd.concat([empty, *(pd.DataFrame({"run_id": rid, "time": t, "fn": t,
                                             "nc1_trace": 1.0 / t}) for rid in run_ids)],
                     ignore_index=True)


LAMBDA_CRIT = 0.05


def decay_rows(lambda_w, lambda_h, depth):
    """Rows of a decay series whose ``lambda_crit_theory`` is the theory's critical lambda_W
    at each point's ratio r = lambda_H / lambda_W: Lambda_crit / r^(1/(L+1))
    (:func:`ncsim.theory.critical.lambda_crit`), with Lambda_crit = 0.05."""
    return pd.DataFrame({"lambda_w": lambda_w, "lambda_h": lambda_h, "depth": depth,
                         "lambda_crit_theory": [LAMBDA_CRIT / (h / w) ** (1 / (depth + 1))
                                                for w, h in zip(lambda_w, lambda_h)]})


# ----------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_critical_decay_along_each_axis_meets_the_collapse_condition(depth):
    """Along lambda_W (lambda_H fixed) the threshold is the lambda_W where
    (lambda_H lambda_W^L)^(1/(L+1)) equals Lambda_crit, and along lambda_H (lambda_W fixed)
    the lambda_H where it does; the common Lambda_crit is recovered from the points of the
    series. Checked by putting the threshold back into the condition (relative tolerance
    1e-12: powers of a few numbers)."""
    along_w = decay_rows([1e-3, 1e-2, 1e-1], [0.2] * 3, depth)
    assert _critical(along_w) == pytest.approx(LAMBDA_CRIT, rel=1e-12)
    lw_star = series_threshold(along_w, "lambda_w")
    assert (0.2 * lw_star ** depth) ** (1 / (depth + 1)) == pytest.approx(LAMBDA_CRIT,
                                                                          rel=1e-12)
    along_h = decay_rows([0.01] * 3, [1e-3, 1e-2, 1e-1], depth)
    lh_star = series_threshold(along_h, "lambda_h")
    assert (lh_star * 0.01 ** depth) ** (1 / (depth + 1)) == pytest.approx(LAMBDA_CRIT,
                                                                           rel=1e-12)
    equal = decay_rows([1e-3, 1e-2], [1e-3, 1e-2], depth)
    assert series_threshold(equal, "lambda") == pytest.approx(LAMBDA_CRIT, rel=1e-12)


def test_depth_two_thresholds_by_hand():
    """Depth 2, Lambda_crit = 0.05: along lambda_W at lambda_H = 0.2 the threshold is
    sqrt(0.05^3 / 0.2) = 0.025, along lambda_H at lambda_W = 0.01 it is 0.05^3 / 0.01^2 =
    1.25; without the theory's column there is none."""
    along_w = decay_rows([1e-3, 1e-2], [0.2, 0.2], 2)
    assert series_threshold(along_w, "lambda_w") == pytest.approx(0.025, rel=1e-12)
    along_h = decay_rows([0.01, 0.01], [1e-3, 1e-2], 2)
    assert series_threshold(along_h, "lambda_h") == pytest.approx(1.25, rel=1e-12)
    assert math.isnan(series_threshold(along_w.drop(columns="lambda_crit_theory"),
                                       "lambda_w"))


# ----------------------------------------------------------------------------- verdict limits
def test_invariance_cv_of_exactly_eight_percent_is_not_below_the_limit(tmp_path, no_figures):
    """fn* 23, 25, 27: mean 25, sample std exactly 2, CV 2/25 = 0.08 (every step exact in
    binary floating point). The claim is CV < 8%, so this part contradicts it; fn* 24, 25,
    26 (CV 4%) supports it."""
    study = study_of("invariance", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2], onset_time=[10.0, 11.0, 12.0],
                     fn_at_onset=[23.0, 25.0, 27.0])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers == {"seeds": {"cv": 0.08, "n": 3}}
    assert sec.verdict == "contradicts"
    runs["fn_at_onset"] = [24.0, 25.0, 26.0]
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["seeds"]["cv"] == pytest.approx(0.04, rel=1e-15)
    assert sec.verdict == "supports"


def test_lead_needs_a_positive_mean_lead_as_well_as_ordering(tmp_path, no_figures):
    """Five seeds with fn* 10 each: the held-out fn_pred of every run is 10, crossed by fn = t
    at t = 10. Onsets 11, 11, 11, 11, 2 give leads 1, 1, 1, 1, -8: fn crosses first in 80% of
    the runs (the ordering limit) but the mean lead is -0.8, so fn_pred does not come before
    the onset on average and the claim is not supported (nor contradicted: 80% > 50%).
    Onsets 11 each give lead 1 everywhere and support it."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=[10.0] * 5,
                     onset_time=[11.0, 11.0, 11.0, 11.0, 2.0])
    traj = rising_traj(runs["run_id"])
    sec = lead(study, runs, traj, tmp_path)
    held = sec.numbers["seeds/held_out"]
    assert held["ordering_accuracy"] == 0.8 and held["n_crossed"] == 5
    assert held["lead_mean"] == pytest.approx(-0.8, abs=1e-12)
    assert sec.verdict == "inconclusive"
    runs["onset_time"] = 11.0
    sec = lead(study, runs, traj, tmp_path)
    assert sec.numbers["seeds/held_out"]["lead_mean"] == pytest.approx(1.0, abs=1e-12)
    assert sec.verdict == "supports"


def test_lead_with_fn_first_in_half_of_the_runs_contradicts(tmp_path, no_figures):
    """Four seeds, fn* 10 each (held-out fn_pred 10, crossed at t = 10), onsets 11, 11, 2, 2:
    leads 1, 1, -8, -8, fn crosses first in exactly half of the runs, no better than chance,
    which contradicts the claim (the limit is "at most 50%")."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3], fn_at_onset=[10.0] * 4,
                     onset_time=[11.0, 11.0, 2.0, 2.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["seeds/held_out"]["ordering_accuracy"] == 0.5
    assert sec.verdict == "contradicts"


# ----------------------------------------------------------------------------- regimes
def test_onset_at_exactly_twice_the_fastest_is_still_optimal():
    """Optimal means an onset within a factor 2 of the fastest (100): 200 is optimal, 201 is
    slow, and a decay without collapse prevents it."""
    lams = np.array([1e-3, 1e-2, 3e-2, 1e-1])
    onset = np.array([200.0, 100.0, 201.0, np.nan])
    ok = np.array([True, True, True, False])
    assert regimes(lams, onset, ok) == ["optimal", "optimal", "slow", "prevents"]


def lambda_runs(collapsed_by_lambda, onsets, crit=None):
    """Two seeds per lambda with lambda_w = lambda_h = lambda; ``collapsed_by_lambda`` gives
    which seeds collapsed, ``onsets`` their onset; ``crit`` the theory's lambda_crit."""
    rows = []
    for lam, flags in collapsed_by_lambda.items():
        for seed, flag in enumerate(flags):
            rows.append({"lambda": lam, "lambda_w": lam, "lambda_h": lam, "seed": seed,
                         "is_collapsed": flag,
                         "onset_collapsed": onsets[lam] if flag else np.nan})
    out = pd.DataFrame(rows)
    if crit is not None:
        out["lambda_crit_theory"] = crit
    return out


def test_a_decay_where_half_the_seeds_collapse_counts_as_collapsing():
    """At lambda 1e-2 one of two seeds collapses (onset 150): half the seeds is enough for
    the series to count that decay as collapsing, so the last collapsed lambda is 1e-2 and
    the first prevented 1e-1."""
    runs = lambda_runs({1e-3: [True, True], 1e-2: [True, False], 1e-1: [False, False]},
                       {1e-3: 100.0, 1e-2: 150.0})
    (series,) = _lambda_series(runs, "lambda", [])
    assert series["regimes"] == ["optimal", "optimal", "prevents"]
    assert series["onsets"][:2] == [100.0, 150.0] and math.isnan(series["onsets"][2])
    assert (series["last_collapsed"], series["first_prevented"]) == (1e-2, 1e-1)


@pytest.mark.parametrize("crit, inside", [(1e-2, False), (5e-2, True), (1e-1, True),
                                          (1e-3, False)])
def test_theory_threshold_bracket_is_half_open(crit, inside):
    """Collapse at 1e-3 and 1e-2, none at 1e-1. The theory predicts collapse iff lambda <
    lambda_crit, so it agrees with the runs iff 1e-2 < lambda_crit <= 1e-1: a lambda_crit
    equal to the last collapsed decay would have forbidden that collapse, one equal to the
    first prevented decay predicts its prevention."""
    runs = lambda_runs({1e-3: [True, True], 1e-2: [True, True], 1e-1: [False, False]},
                       {1e-3: 100.0, 1e-2: 150.0}, crit=crit)
    (series,) = _lambda_series(runs, "lambda", [])
    assert series["lambda_crit_theory"] == crit
    assert series["theory_in_bracket"] is inside


# ----------------------------------------------------------------------------- intervention
@pytest.mark.parametrize("arms, verdict", [
    ({0.5: 10.2, 2.0: 9.9}, "supports"),       # within 5% of fn*(1) = 10 in every arm
    ({0.5: 11.2, 2.0: 10.2}, "inconclusive"),  # 12% away: between 5% and 15%
    ({0.5: 11.8, 2.0: 10.2}, "contradicts"),   # 18% away: beyond 3 x 5%
])
def test_intervention_verdict_from_the_return_to_fn_star(tmp_path, no_figures, arms, verdict):
    """fn* after rescaling by alpha against the control alpha = 1 (mean fn* 10, two seeds
    each, 0.1 either side of the arm's mean): the largest deviation |fn*(alpha) / fn*(1) - 1|
    decides, with limits 5% and 15%."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    alphas = [1.0, 1.0] + [a for a in arms for _ in range(2)]
    fn_star = [v + d for v in [10.0, *arms.values()] for d in (-0.1, 0.1)]
    runs = run_frame("rescale", intervene_alpha=alphas, seed=[0, 1] * (len(arms) + 1),
                     fn_at_onset=fn_star, onset_time=50.0)
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    table = sec.tables[0][1].set_index("alpha")
    for alpha, value in arms.items():
        assert table.loc[alpha, "fn_star_ratio"] == pytest.approx(value / 10.0, rel=1e-12)
    deviation = max(abs(v / 10.0 - 1) for v in arms.values())
    assert sec.numbers["max_fn_star_deviation"] == pytest.approx(deviation, rel=1e-12)
    assert sec.verdict == verdict


def _lost_arm_runs(control_collapses: bool) -> pd.DataFrame:
    """alpha = 1 (two seeds) and alpha = 4 (two seeds); the rescaled arm never collapses (its
    runs vanish); the control collapses (fn* 10, onset 50) or vanishes too."""
    status = ["ok" if control_collapses else "vanishing"] * 2 + ["vanishing"] * 2
    collapsed = [control_collapses] * 2 + [False, False]
    return run_frame("rescale", intervene_alpha=[1.0, 1.0, 4.0, 4.0], seed=[0, 1, 0, 1],
                     status=status,
                     fn_at_onset=[10.0 if c else np.nan for c in collapsed],
                     onset_time=[50.0 if c else np.nan for c in collapsed])


def test_intervention_arm_that_loses_collapse_contradicts(tmp_path, no_figures):
    """The claim is that runs pushed either way collapse again at fn*: a rescaled arm with no
    collapsed run beside a collapsed control contradicts it, and the reason names the arm
    (it used to say that no arm had a collapsed control)."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = _lost_arm_runs(control_collapses=True)
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.verdict == "contradicts"
    assert sec.reason == ("a rescaled arm does not collapse within its run while its control "
                          "does: no collapse after rescaling: rescale alpha=4 (0 of 2 runs)")
    assert sec.numbers["arms_without_collapse"] == 1
    assert math.isnan(sec.numbers["max_fn_star_deviation"])


@pytest.mark.parametrize("status, inherited", [("diverged", False), ("max_steps", False),
                                               ("ok", True)])
def test_intervention_arm_without_an_observed_outcome_decides_nothing(tmp_path, no_figures,
                                                                       status, inherited):
    """A rescaled arm whose runs failed numerically (diverged, out of steps) or collapsed
    before phase 2 (``onset_at_phase_start``: collapsed, but not in view) neither collapsed
    in view nor ended without collapse: it is not counted as lost, and with no other arm the
    verdict is inconclusive."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = run_frame("rescale", intervene_alpha=[1.0, 1.0, 3.0, 3.0], seed=[0, 1, 0, 1],
                     status=["ok", "ok", status, status],
                     onset_at_phase_start=[False, False, inherited, inherited],
                     fn_at_onset=[10.0, 10.2, 9.0 if inherited else np.nan,
                                  9.0 if inherited else np.nan],
                     onset_time=[50.0, 51.0, 1.0 if inherited else np.nan,
                                 1.0 if inherited else np.nan])
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert (sec.verdict, sec.reason) == (
        "inconclusive", "no rescaled arm with an observed outcome beside a collapsed control "
        "(alpha = 1)")
    arm = sec.tables[0][1].set_index("alpha").loc[3.0]
    assert (arm["n_collapsed"], arm["n_without_collapse"]) == (0, 0)


def test_intervention_without_a_collapsed_control_is_inconclusive(tmp_path, no_figures):
    """Nothing collapses, the control included: no evidence either way."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = _lost_arm_runs(control_collapses=False)
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert (sec.verdict, sec.reason) == ("inconclusive",
                                         "no part has a collapsed control (alpha = 1)")


# ----------------------------------------------------------------------------- depth
@pytest.mark.parametrize("onsets, turns", [
    ([3.0, 2.0, 2.2], True),     # falls 33%, then rises 10%: a turn beyond 5%
    ([3.0, 2.0, 2.08], False),   # the 4% rise is within the 5% tolerance
    ([3.0, 2.0, 1.0], False),    # falls throughout
    ([1.0, 1.5, 1.4], True),     # rises 50%, then falls 6.7%
])
def test_a_change_of_direction_counts_beyond_five_percent(onsets, turns):
    """Successive relative changes of the onset over depth; a change of sign between two
    changes larger than 5% makes the series non-monotonic."""
    assert _non_monotonic(np.array(onsets)) is turns


# ----------------------------------------------------------------------------- activation
def test_activation_fn_star_spread_must_exceed_twice_the_seed_noise(tmp_path, no_figures):
    """relu fn* 9 and 11 (mean 10, sample std sqrt 2, CV 0.1414), tanh fn* 11.5 twice: the
    spread across activations, 11.5 / 10 - 1 = 15%, is above 10% but below twice the
    within-activation CV (28.3%), so fn* is not shown to move and the claim (both speed and
    fn* move) is not supported; the onsets (100 against 150) do move. With tanh fn* 13.5
    (spread 35%) it is."""
    study = study_of("activation", acts=["activation", "seed"])
    runs = run_frame("acts", activation=["relu", "relu", "tanh", "tanh"], seed=[0, 1, 0, 1],
                     fn_at_onset=[9.0, 11.0, 11.5, 11.5], onset_time=[100.0, 100.0, 150.0, 150.0])
    sec = activation(study, runs, rising_traj(runs["run_id"]), tmp_path)
    numbers = sec.numbers["acts"]
    assert numbers["fn_star_spread"] == pytest.approx(0.15, rel=1e-12)
    assert numbers["onset_spread"] == pytest.approx(0.5, rel=1e-12)
    assert numbers["fn_star_within_cv"] == pytest.approx(math.sqrt(2) / 10, rel=1e-12)
    assert sec.verdict == "inconclusive"
    runs["fn_at_onset"] = [9.0, 11.0, 13.5, 13.5]
    assert activation(study, runs, rising_traj(runs["run_id"]), tmp_path).verdict == "supports"


# ----------------------------------------------------------------------------- grid
def grid_runs(c, s=0.01):
    """2 architectures x 2 datasets, 2 seeds per cell: log fn* = +-s around 0 in three cells
    and around c in the fourth (cell a2 x d2)."""
    rows = []
    for arch in ("a1", "a2"):
        for data in ("d1", "d2"):
            centre = c if (arch, data) == ("a2", "d2") else 0.0
            rows += [{"arch": arch, "dataset": data, "seed": k,
                      "fn_at_onset": math.exp(centre + sign * s), "onset_time": 10.0}
                     for k, sign in enumerate((-1, 1))]
    rows = pd.DataFrame(rows)
    return run_frame("cells", **{col: rows[col] for col in rows})


@pytest.mark.parametrize("c, verdict", [(0.08, "supports"), (0.05, "inconclusive"),
                                        (0.04, "inconclusive"), (0.0, "contradicts")])
def test_grid_interaction_f_test_by_the_contrast(tmp_path, no_figures, c, verdict):
    """Balanced 2 x 2 design with n = 2: the interaction contrast of the cell means of
    log fn* is c, its sum of squares n c^2 / 4 on 1 degree of freedom, the within-cell sum
    of squares 4 x 2 s^2 on 4, so F = c^2 / (4 s^2) = 2500 c^2 at s = 0.01 and p is the F(1, 4)
    tail there: c = 0.08 gives p = 0.016 (non-additive, supports), c = 0.05 p = 0.067 and
    c = 0.04 p = 0.116 (between 0.05 and 0.2: inconclusive), c = 0 p = 1 (contradicts)."""
    from scipy import stats

    study = study_of("grid", cells=["arch", "dataset", "seed"])
    runs = grid_runs(c)
    sec = grid(study, runs, rising_traj(runs["run_id"]), tmp_path)
    f_stat = c ** 2 / (4 * 0.01 ** 2)
    assert sec.numbers["interaction_F"] == pytest.approx(f_stat, rel=1e-9, abs=1e-12)
    assert sec.numbers["interaction_p"] == pytest.approx(stats.f.sf(f_stat, 1, 4), rel=1e-9)
    assert sec.verdict == verdict


# ----------------------------------------------------------------------------- run parameters
@pytest.mark.parametrize("when", [0.0, 100.0, 150.0, -1.0])
def test_an_intervention_outside_the_open_run_interval_is_refused(when):
    """The rescaling splits the run in two segments, so it must fall strictly inside
    (0, t_end): at t_end (100) the second segment would be empty, at 0 the first."""
    with pytest.raises(InputError, match=r"intervene_time must lie in \(0, t_end = 100"):
        run_spec({"t_end": 100.0, "intervene_time": when, "intervene_alpha": 2.0})
    spec = run_spec({"t_end": 100.0, "intervene_time": 99.0, "intervene_alpha": 2.0})
    assert spec.solver.t_end == 100.0


def study_raw(*parts, **top):
    """A parsed study document with the given [[parts]] tables (small, cheap runs)."""
    return {"name": "s", "title": "S", "question": "q?", "claim": "c.",
            "analysis": "invariance", "simulated": {"classes": 3, "per_class": 2, "dim": 4},
            "parts": list(parts), **top}


@pytest.mark.parametrize("part, key", [
    ({"name": "a", "model": "simulated", "intervene_time": 10.0,
      "intervene_alpha": float("inf"), "grid": {"seed": [0]}}, "parts.a.intervene_alpha"),
    ({"name": "a", "model": "simulated", "grid": {"init_scale": [0.1, float("nan")]}},
     "parts.a.grid.init_scale[1]"),
    ({"name": "a", "model": "trained", "separation": float("nan"), "grid": {"seed": [0]}},
     "parts.a.separation"),
])
def test_a_number_that_is_not_finite_is_refused_naming_its_key(part, key):
    """TOML writes inf and nan as numbers; no parameter of a run is meant to be either (a
    rescaling by inf, a data separation of nan), so the study is refused at the key."""
    with pytest.raises(InputError, match=rf"key '{re.escape(key)}': expected a number"):
        parse_study(study_raw(part), "study.toml")


def test_two_parts_of_one_name_are_refused():
    """Parts are told apart by name in the run table and the report, so a repeated name is
    refused even when the parts differ."""
    parts = [{"name": "a", "model": "simulated", "grid": {"seed": [0]}},
             {"name": "a", "model": "simulated", "grid": {"seed": [1]}}]
    with pytest.raises(InputError, match="part names must be unique"):
        parse_study(study_raw(*parts), "study.toml")
    parts[1]["name"] = "b"
    study = parse_study(study_raw(*parts), "study.toml")
    assert [d.part for d in study.runs()] == ["a", "b"]


def test_an_integer_range_axis_rounds_each_log_spaced_point():
    """per_class = "1..10:4" is 4 log-spaced points 1, 10^(1/3), 10^(2/3), 10, i.e. 1, 2.15,
    4.64, 10, rounded to the nearest integer: 1, 2, 5, 10."""
    part = {"name": "a", "model": "simulated", "grid": {"per_class": "1..10:4"}}
    study = parse_study(study_raw(part), "study.toml")
    assert [d.params["per_class"] for d in study.runs()] == [1, 2, 5, 10]


def test_a_regularised_bias_needs_a_positive_decay():
    """bias "reg" is the bias with its own decay lambda_b; lambda_b = 0 would be the free
    bias under another name (and another run id), so it is refused."""
    with pytest.raises(InputError, match="bias 'reg' needs lambda_b > 0"):
        run_spec({"bias": "reg", "lambda_b": 0.0})
    assert run_spec({"bias": "reg", "lambda_b": 1e-3}).reg.lambda_b == 1e-3


def test_record_times_are_zero_then_log_spaced_from_the_first_record():
    """records = 4 from t_first = 1 to t_end = 100: times 0, 1, 10, 100 (0 then records - 1
    log-spaced points; tolerance: np.geomspace rounding)."""
    spec = run_spec({"t_end": 100.0, "t_first": 1.0, "records": 4})
    assert spec.solver.record_times() == pytest.approx([0.0, 1.0, 10.0, 100.0], rel=1e-14)


# ----------------------------------------------------------------------------- trained runs
@pytest.mark.parametrize("phase1, inherited", [([0.5, 0.005], True), ([0.005, 0.5], False),
                                               ([0.5, np.nan], False)])
def test_an_onset_at_the_phase_switch_is_inherited_when_phase_one_ended_below(phase1,
                                                                              inherited):
    """The onset is the first phase-2 record (epoch 20, nc1 0.004 < 0.01). It was inherited
    from the cross-entropy phase when the last phase-1 record with a value was already below
    the threshold (0.005), and observed in phase 2 when that record was above it (0.5, even
    if an earlier one was below; a blank last record is skipped)."""
    from ncsim.study.compute import _below_at_switch

    log = pd.DataFrame({"time": [0.0, 10.0, 20.0, 30.0], "phase": [1, 1, 2, 2],
                        "nc1_trace": [*phase1, 0.004, 0.002]})
    assert _below_at_switch(log, "nc1_trace", 0.01, 20.0) is inherited
    assert _below_at_switch(log, "nc1_trace", 0.01, 30.0) is False


# ----------------------------------------------------------------------------- tables
def test_csv_text_column_with_a_number_keeps_its_missing_value_labels(tmp_path):
    """read_table: a column of labels that holds one number ("1", "NA", "abc") is text, in
    which only an empty field is missing, so "NA" stays the text "NA"; a column of numbers
    with "NA" written for a missing value ("1", "NA", "2.5") reads as numbers with NaN."""
    from ncsim.io import read_table

    path = tmp_path / "t.csv"
    path.write_text("run_id,label,value\nr1,1,1\nr2,NA,NA\nr3,abc,2.5\n")
    table = read_table(path)
    assert table["label"].tolist() == ["1", "NA", "abc"]
    assert table["value"].iloc[[0, 2]].tolist() == [1.0, 2.5]
    assert math.isnan(table["value"].iloc[1])


def test_a_run_with_an_onset_but_no_fn_star_is_not_counted_as_collapsed():
    """A trained run whose onset record has no fn (fn* NaN, status ok) has no fn* to average:
    of three ok runs with onsets, the one without fn* is left out, and the count of
    collapsed runs is 2; a run without onset is left out as well."""
    runs = run_frame("p", onset_time=[10.0, 12.0, 11.0, np.nan],
                     fn_at_onset=[2.0, np.nan, 3.0, np.nan])
    assert collapsed(runs)["run_id"].tolist() == ["p-0", "p-2"]


# ----------------------------------------------------------------------------- intervention runs
@pytest.mark.parametrize("lam", [0.3, 1e-3])
def test_control_arm_of_an_intervention_is_the_plain_run(lam):
    """alpha = 1 continues the flow from its own state, so its row has the plain run's
    status, onset and fn* (onset and fn* to the resolution of the records): vanishing without
    an onset above the critical decay (lambda 0.3; K sqrt(n) lambda = 1.27 > 1: the crossing
    at t ~ 16 is no onset), collapsed below it (lambda 1e-3, whose onset comes after the
    switch at t = 200)."""
    from ncsim.flow.simulate import simulate
    from ncsim.study.compute import _intervention
    from ncsim.study.spec import RunDesc

    p = {"loss": "mse", "classes": 3, "per_class": 2, "dim": 4, "lambda": lam,
         "init_scale": 1.0, "t_end": 4e3, "records": 60, "intervene_time": 200.0,
         "intervene_alpha": 1.0}
    plain = simulate(run_spec({k: v for k, v in p.items() if not k.startswith("intervene")}),
                     theory=False).runs.iloc[0]
    _, row, _ = _intervention(RunDesc("p", "simulated", p))
    assert row["status"] == plain["status"] == ("vanishing" if lam > 0.1 else "ok")
    if lam > 0.1:
        assert math.isnan(row["onset_time"]) and math.isnan(row["fn_at_onset"])
    else:
        # the two segments record at other times than the plain run, and the onset is
        # interpolated between records: the two agree within one record spacing (a factor
        # (t_end / t_first)^(1 / (records - 2)) = 1.25 in time)
        spacing = (4e3 / 1e-2) ** (1 / 58)
        assert row["onset_time"] > 200.0
        assert 1 / spacing < row["onset_time"] / plain["onset_time"] < spacing
        assert row["fn_at_onset"] == pytest.approx(plain["fn_at_onset"], rel=0.05)


# ----------------------------------------------------------------------------- trained run ids
def test_trained_run_id_follows_the_resolved_configuration(monkeypatch):
    """A trained run's id is what it computes: the preset's values written out (depth 5,
    width 512, lr 1e-3, weight decay 1e-4, epochs 200 + 300, dataset "gaussian", onset
    threshold 0.01) give the same id; a changed preset default gives another, as a changed
    code default does for a simulated run, so stored runs of the old protocol are not
    reused."""
    import dataclasses

    from ncsim.study.spec import RunDesc
    from ncsim.validate import train

    plain = {"dataset": "digits", "preset": "mlp", "seed": 0}
    written = {**plain, "depth": 5, "width": 512, "lr": 1e-3, "weight_decay": 1e-4,
               "epochs": [200, 300], "onset_threshold": 0.01, "separation": 3.0}
    base = RunDesc("p", "trained", plain).run_id
    assert RunDesc("p", "trained", written).run_id == base
    assert RunDesc("p", "trained", {**plain, "onset_threshold": 0.02}).run_id != base
    assert RunDesc("p", "trained", {**plain, "dataset": "gaussian"}).run_id != base
    original = train.preset

    def wider(name, epochs=None, **overrides):
        config = original(name, epochs=epochs, **overrides)
        return dataclasses.replace(config, width=1024) if "width" not in overrides else config

    monkeypatch.setattr(train, "preset", wider)
    assert RunDesc("p", "trained", plain).run_id != base
    assert RunDesc("p", "trained", {**plain, "width": 512}).run_id == base


def test_trained_run_id_leaves_out_what_the_run_does_not_use(monkeypatch):
    """The Gaussian mixture's default size (100 per class) written out is the same run; its
    shape (separation, dim, classes) does not touch a digits run, nor depth and width a
    ResNet-20; a device is hashed as written, so the id of a CUDA run is the same on a
    machine with CUDA and on one without (where the device would not validate)."""
    import torch

    from ncsim.study.spec import RunDesc

    def run_id(**params):
        return RunDesc("p", "trained", {"seed": 0, **params}).run_id

    assert run_id(dataset="gaussian") == run_id(dataset="gaussian", per_class=100)
    assert run_id(dataset="gaussian") != run_id(dataset="gaussian", separation=4.0)
    assert run_id(dataset="digits") == run_id(dataset="digits", separation=4.0, data_dim=8)
    assert run_id(preset="resnet20") == run_id(preset="resnet20", depth=3, width=64)
    assert run_id(preset="mlp") != run_id(preset="mlp", width=64)
    without = run_id(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert run_id(device="cuda") == without != run_id()


# ----------------------------------------------------------------------------- lead of trained runs
def test_trained_lead_uses_the_first_logged_epoch_at_or_below_fn_pred():
    """A trained run's fn falls 30, 26, ..., 2 (every 10 epochs) and its onset is a logged
    epoch: its lead is onset minus the first logged epoch with fn <= fn_pred, without
    interpolation, as ``ncsim validate analyze`` computes it (crossing_epochs). fn_pred is
    the mean fn* of the two seeds, 11 and 13 -> 12: first logged fn <= 12 is 10 at epoch 50,
    so the leads are 60 - 50 = 10 and 80 - 50 = 30 (interpolated, fn = 12 at epoch 45)."""
    from ncsim.study.analyses import _lead_rows
    from ncsim.validate.analysis import crossing_epochs

    epochs = np.arange(0.0, 80.0, 10.0)
    fn = 30.0 - 4.0 * epochs / 10.0
    traj = pd.concat([pd.DataFrame({"run_id": f"mlp-{i}", "time": epochs, "fn": fn})
                      for i in range(2)], ignore_index=True)
    runs = run_frame("mlp", seed=[0, 1], onset_time=[60.0, 80.0], fn_at_onset=[11.0, 13.0])
    trained = _lead_rows(runs, traj, ["seed"], trained=True)
    assert list(trained["lead_in_sample"]) == [10.0, 30.0]
    assert crossing_epochs(traj, {"mlp-0": 12.0, "mlp-1": 12.0}) == {"mlp-0": 50.0,
                                                                     "mlp-1": 50.0}
    simulated = _lead_rows(runs, traj, ["seed"])  # interpolated in log time between 40 and 50
    assert 40.0 < 60.0 - simulated["lead_in_sample"].iloc[0] < 50.0
