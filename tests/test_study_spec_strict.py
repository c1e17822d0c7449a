"""Study verdicts at the edges of their limits, and study files resolved into runs.

The analyses' run tables are built by hand (a few rows with the columns each analysis reads),
so every expected number follows from the values put in: fn = t trajectories cross a level
at t = level, onsets are chosen, fn* values are chosen so that a ratio or a relative step is
exactly the limit in binary floating point where the test is about the edge.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_study_values import rising_traj, run_frame, study_of

from ncsim.study.analyses import (
    RETURN_TOL,
    collapsed,
    depth,
    intervention,
    invariance,
    lead,
)
from ncsim.study.spec import Study


# ----------------------------------------------------------------------------- counted runs
def test_a_run_without_the_phase_start_flag_is_observed():
    """Only trained runs carry ``onset_at_phase_start``; in a table that mixes them with
    simulated runs the simulated rows have no value there (NaN). Such a run was observed
    from its start, so it counts as collapsed; only a run flagged True is left out."""
    runs = run_frame("p", onset_time=[10.0, 12.0, 11.0], fn_at_onset=[2.0, 3.0, 4.0],
                     onset_at_phase_start=[np.nan, False, True])
    assert collapsed(runs)["run_id"].tolist() == ["p-0", "p-1"]


def test_invariance_counts_simulated_runs_beside_trained_ones(tmp_path, no_figures):
    """A simulated part (no phase-start flag, NaN after concatenation) beside a trained part:
    the simulated part's three runs are all collapsed and evaluated (fn* 24, 25, 26: CV
    exactly 4%; onsets 10, 11, 12: sample std 1, CV 1/11). The trained part's one run came
    into view already collapsed: 1 run, 0 collapsed."""
    study = study_of("invariance", sim=["seed"], net=["seed"])
    sim = run_frame("sim", seed=[0, 1, 2], onset_time=[10.0, 11.0, 12.0],
                    fn_at_onset=[24.0, 25.0, 26.0])
    net = run_frame("net", seed=[0], onset_time=[3.0], fn_at_onset=[1.0],
                    onset_at_phase_start=[True])
    runs = pd.concat([sim, net], ignore_index=True)
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers == {"sim": {"cv": pytest.approx(0.04, rel=1e-15), "n": 3}}
    assert sec.verdict == "supports"
    table = sec.tables[0][1].set_index("part")
    assert table.loc["sim", "onset_cv"] == pytest.approx(1 / 11, rel=1e-14)
    assert table.loc["sim", "fn_star_mean"] == 25.0
    assert (table.loc["net", "n_runs"], table.loc["net", "n_collapsed"]) == (1, 0)


# ----------------------------------------------------------------------------- lead time
def test_a_crossing_at_the_onset_itself_is_not_a_lead(tmp_path, no_figures):
    """Five seeds with fn* 10 each (held-out fn_pred 10, crossed by fn = t at t = 10, a
    record): onsets 11, 11, 11, 10, 10 give leads 1, 1, 1, 0, 0. A lead of 0 means fn reached
    fn_pred only when the run collapsed, so it does not come first: ordering 3 of 5 (60%),
    between the limits, inconclusive."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=[10.0] * 5,
                     onset_time=[11.0, 11.0, 11.0, 10.0, 10.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    leads = sec.tables[1][1]
    assert list(leads["lead_held_out"]) == pytest.approx([1.0, 1.0, 1.0, 0.0, 0.0], abs=1e-12)
    held = sec.numbers["seeds/held_out"]
    assert held["ordering_accuracy"] == 0.6 and held["n_crossed"] == 5
    assert sec.verdict == "inconclusive"


def test_lead_with_fn_first_in_exactly_eighty_percent_supports(tmp_path, no_figures):
    """Five seeds, fn* 10 each, onsets 20, 20, 20, 20, 9: held-out leads 10, 10, 10, 10, -1,
    fn first in 4 of 5 runs (80%, the limit, which counts: "at least 80%") and mean lead
    39 / 5 = 7.8 > 0: the claim is supported."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=[10.0] * 5,
                     onset_time=[20.0, 20.0, 20.0, 20.0, 9.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    held = sec.numbers["seeds/held_out"]
    assert held["ordering_accuracy"] == 0.8
    assert held["lead_mean"] == pytest.approx(7.8, abs=1e-12)
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- intervention
def test_intervention_onset_shift_is_arm_minus_control(tmp_path, no_figures):
    """Control (alpha = 1) onsets 50 and 52 (mean 51), the alpha = 2 arm 80 and 82 (mean
    81): the rescaled runs collapse 30 later, an onset shift of +30 in the table and the
    reason; fn* 10 in both returns exactly (ratio 1), so the verdict supports."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = run_frame("rescale", intervene_alpha=[1.0, 1.0, 2.0, 2.0], seed=[0, 1, 0, 1],
                     fn_at_onset=[9.5, 10.5, 9.5, 10.5], onset_time=[50.0, 52.0, 80.0, 82.0])
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    arm = sec.tables[0][1].set_index("alpha").loc[2.0]
    assert arm["onset_shift"] == 30.0 and arm["fn_star_ratio"] == 1.0
    assert "onset shift 30" in sec.reason
    assert sec.verdict == "supports"


def test_an_arm_exactly_three_return_limits_below_fn_star_is_not_beyond_them(tmp_path,
                                                                              no_figures):
    """Control fn* 0.75 and 1.25 (mean exactly 1), the alpha = 0.5 arm r -+ 1/8 with
    r = 1 - 3 x RETURN_TOL (mean exactly r, every sum exact in binary): the arm lies exactly
    3 x 5% from fn*, which is not "more than" that, so the verdict is inconclusive; a ratio
    one unit of the last place lower is beyond and contradicts."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    r = 1.0 - 3 * RETURN_TOL
    assert 1.0 - r == 3 * RETURN_TOL  # exact: Sterbenz, r in [0.5, 1)
    runs = run_frame("rescale", intervene_alpha=[1.0, 1.0, 0.5, 0.5], seed=[0, 1, 0, 1],
                     fn_at_onset=[0.75, 1.25, r - 0.125, r + 0.125], onset_time=50.0)
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["max_fn_star_deviation"] == 3 * RETURN_TOL
    assert sec.verdict == "inconclusive"
    r = np.nextafter(r, 0.0)
    runs["fn_at_onset"] = [0.75, 1.25, r - 0.125, r + 0.125]
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.numbers["max_fn_star_deviation"] > 3 * RETURN_TOL
    assert sec.verdict == "contradicts"


# ----------------------------------------------------------------------------- depth
def depth_frame(onsets):
    """One seed per depth 1, 2, 3, ... with the given onsets, fn* 1."""
    return run_frame("deep", depth=list(range(1, len(onsets) + 1)), seed=0,
                     onset_time=onsets, fn_at_onset=1.0)


def test_depth_steps_of_exactly_five_percent_are_within_the_tolerance(tmp_path, no_figures):
    """Onsets 100, 105, 99.75: a rise of 5/100 and a fall of 5.25/105, each exactly 0.05 in
    floating point (correctly rounded divisions of exact differences). A change counts only
    beyond 5%, so the series is monotonic within its tolerance: contradicts. Onsets 100, 106,
    99.75 rise by 6% and fall by 5.9%: non-monotonic, supports."""
    study = study_of("depth", deep=["depth"])
    sec = depth(study, depth_frame([100.0, 105.0, 99.75]), rising_traj([]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["non_monotonic"] is False and series["fastest_depth"] == 3
    assert sec.verdict == "contradicts"
    sec = depth(study, depth_frame([100.0, 106.0, 99.75]), rising_traj([]), tmp_path)
    assert sec.verdict == "supports"


def test_depth_step_is_relative_to_the_shallower_depth(tmp_path, no_figures):
    """Onsets 100, 80, 84.2: the rise from depth 2 to 3 is 4.2 / 80 = 5.25% of the shallower
    depth's onset (beyond 5%: the series falls then rises, non-monotonic, supports), though
    only 4.99% of the deeper one's."""
    study = study_of("depth", deep=["depth"])
    sec = depth(study, depth_frame([100.0, 80.0, 84.2]), rising_traj([]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["non_monotonic"] is True and series["fastest_depth"] == 2
    assert sec.verdict == "supports"


# ----------------------------------------------------------------------------- weight decay
def decay_frame(onsets, crit):
    """One part "wd" over lambda (lambda_w = lambda_h = lambda), two seeds per lambda with
    onset 0.9 x and 1.1 x the given one (None: the runs vanish), and the theory's
    lambda_crit ``crit`` on every row."""
    rows = []
    for lam, t in onsets.items():
        rows += [{"lambda": lam, "lambda_w": lam, "lambda_h": lam, "seed": s,
                  "status": "ok" if t is not None else "vanishing",
                  "onset_time": t * k if t is not None else np.nan,
                  "fn_at_onset": 1.0 if t is not None else np.nan,
                  "lambda_crit_theory": crit} for s, k in ((0, 0.9), (1, 1.1))]
    runs = pd.DataFrame(rows)
    return run_frame("wd", **{c: runs[c] for c in runs})


@pytest.mark.parametrize("crit, above", [(1e-2, False), (1.5e-2, True), (1e-3, False)])
def test_theory_threshold_of_a_series_without_prevention_must_lie_above_its_last_collapse(
        tmp_path, no_figures, crit, above):
    """Every lambda (1e-3, 1e-2) collapses, nothing is prevented. The theory predicts collapse
    iff lambda < lambda_crit, so it agrees only with lambda_crit strictly above the last
    collapsed lambda 1e-2: a lambda_crit equal to it would have forbidden that collapse. The
    reason counts the agreeing series among those without a prevented lambda."""
    from ncsim.study.analyses import weight_decay

    study = study_of("weight_decay", wd=["lambda", "seed"])
    runs = decay_frame({1e-3: 100.0, 1e-2: 120.0}, crit)
    sec = weight_decay(study, runs, rising_traj(runs["run_id"]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["last_collapsed"] == 1e-2 and math.isnan(series["first_prevented"])
    assert series["lambda_crit_theory"] == crit
    assert series["theory_in_bracket"] is above
    assert (f"above the last collapsed lambda in {int(above)} of 1 series without one"
            in sec.reason)
    assert sec.verdict == "inconclusive"  # no series reaches the prevents regime


def test_critical_decay_of_a_one_layer_table_without_a_depth_column():
    """A UFM run table has no ``depth`` column: the collapse condition is then
    sqrt(lambda_H lambda_W) < Lambda_crit (M = 2). Rows along lambda_W at lambda_H = 0.04
    with Lambda_crit = 0.05 carry lambda_crit_theory = 0.05 / sqrt(0.04 / lambda_W); the
    threshold along lambda_W is 0.05^2 / 0.04 = 0.0625 and along lambda_H at lambda_W = 0.01
    it is 0.05^2 / 0.01 = 0.25 (relative tolerance 1e-12: a few powers)."""
    from ncsim.study.analyses import _critical, series_threshold

    lw = np.array([1e-3, 1e-2, 1e-1])
    along_w = pd.DataFrame({"lambda_w": lw, "lambda_h": 0.04,
                            "lambda_crit_theory": 0.05 / np.sqrt(0.04 / lw)})
    assert _critical(along_w) == pytest.approx(0.05, rel=1e-12)
    assert series_threshold(along_w, "lambda_w") == pytest.approx(0.0625, rel=1e-12)
    lh = np.array([1e-3, 1e-2, 1e-1])
    along_h = pd.DataFrame({"lambda_w": 0.01, "lambda_h": lh,
                            "lambda_crit_theory": 0.05 / np.sqrt(lh / 0.01)})
    assert series_threshold(along_h, "lambda_h") == pytest.approx(0.25, rel=1e-12)


def test_one_series_out_of_order_does_not_contradict(tmp_path, no_figures):
    """A single lambda series that reaches prevents out of order (optimal at 1e-3, slow at
    1e-2 with onset 5x the fastest, prevents at 1e-1) is one setting, not enough to contradict
    the three-regime claim: inconclusive. Two such series contradict it."""
    from ncsim.study.analyses import weight_decay

    onsets = {1e-3: 100.0, 1e-2: 500.0, 1e-1: None}
    study = study_of("weight_decay", wd=["lambda", "seed"])
    runs = decay_frame(onsets, 0.05)
    sec = weight_decay(study, runs, rising_traj(runs["run_id"]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["regimes"] == ["optimal", "slow", "prevents"]
    assert series["three_regimes"] is False
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("0 of 1 lambda series show slow, optimal and prevents")
    study = study_of("weight_decay", wd=["lambda", "dim", "seed"])
    runs = pd.concat([decay_frame(onsets, 0.05).assign(dim=d) for d in (8, 16)],
                     ignore_index=True).assign(run_id=lambda f: [f"wd-{i}" for i in
                                                                range(len(f))])
    sec = weight_decay(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert [s["setting"] for s in sec.numbers["series"]] == [{"dim": "8"}, {"dim": "16"}]
    assert sec.verdict == "contradicts"


@pytest.mark.parametrize("crit, inside", [(0.05, 1), (0.5, 0), (1e-2, 0)])
def test_the_reason_counts_the_series_whose_bracket_holds_lambda_crit(tmp_path, no_figures,
                                                                      crit, inside):
    """Collapse at 1e-3 and 1e-2, none at 1e-1: the bracket is (1e-2, 1e-1]. lambda_crit 0.05
    lies in it; 0.5 lies above the first prevented decay and 1e-2 on the last collapsed one,
    both outside. The reason counts only the series whose bracket holds it."""
    from ncsim.study.analyses import weight_decay

    study = study_of("weight_decay", wd=["lambda", "seed"])
    runs = decay_frame({1e-3: 400.0, 1e-2: 100.0, 1e-1: None}, crit)
    sec = weight_decay(study, runs, rising_traj(runs["run_id"]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["theory_in_bracket"] is bool(inside)
    assert (f"lambda_crit (theory) lies between the last collapsed and the first prevented "
            f"lambda in {inside} of 1 series with a prevented lambda" in sec.reason)
    assert sec.verdict == "supports"  # slow, optimal, prevents in order, whatever the theory


# ----------------------------------------------------------------------------- run ids
def test_a_whole_rescaling_factor_is_the_same_run_as_its_float():
    """intervene_alpha = 2 and 2.0 rescale H alike, so they are one run (one id), while 3.0
    is another; the rescaling time is read the same way."""
    from ncsim.study.spec import RunDesc

    base = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0, "intervene_time": 10.0}

    def run_id(**extra):
        return RunDesc("p", "simulated", {**base, **extra}).run_id

    assert run_id(intervene_alpha=2) == run_id(intervene_alpha=2.0)
    assert run_id(intervene_alpha=2.0) != run_id(intervene_alpha=3.0)
    assert run_id(intervene_alpha=2, intervene_time=10) == run_id(intervene_alpha=2.0)


def test_a_whole_number_for_a_decimal_parameter_is_the_same_run():
    """TOML reads ``weight_decay = 0`` as an integer; the parameter is a number, so the study
    holds it as 0.0 and the trained runs have the same ids as with ``weight_decay = 0.0``
    (the trained run's identity hashes its configuration as JSON, where 0 and 0.0 differ)."""
    from ncsim.study.spec import parse_study

    def study(decay):
        return parse_study({"name": "s", "title": "S", "question": "q?", "claim": "c.",
                            "analysis": "invariance",
                            "parts": [{"name": "a", "model": "trained", "dataset": "digits",
                                       "weight_decay": decay, "grid": {"seed": [0, 1]}}]},
                           "s.toml")

    whole, decimal = study(0).runs(), study(0.0).runs()
    assert [d.run_id for d in whole] == [d.run_id for d in decimal]
    assert len({d.run_id for d in whole}) == 2
    value = whole[0].params["weight_decay"]
    assert value == 0.0 and isinstance(value, float)


# ----------------------------------------------------------------------------- study files
def study_raw(part, **top):
    """A parsed study document with one [[parts]] table (small, cheap runs)."""
    return {"name": "s", "title": "S", "question": "q?", "claim": "c.",
            "analysis": "weight_decay",
            "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0},
            "parts": [part], **top}


def test_a_quick_fixed_decay_beside_a_lambda_axis_sets_that_decay_only():
    """The full part varies lambda (both decays) over 1e-3 and 1e-2; its quick variant fixes
    lambda_w = 0.5. The quick runs take lambda_w = 0.5 and keep the lambda axis for lambda_h
    alone: two runs, (0.5, 1e-3) and (0.5, 1e-2), not a lambda_w axis that would override the
    quick value and double the grid."""
    from ncsim.study.spec import build, parse_study

    raw = study_raw({"name": "a", "model": "simulated", "grid": {"lambda": [1e-3, 1e-2]}},
                    quick={"parts": {"a": {"lambda_w": 0.5}}})
    runs = parse_study(raw, "s.toml", quick=True).runs()
    assert [(build(d).reg.lambda_w, build(d).reg.lambda_h) for d in runs] == [
        (0.5, 1e-3), (0.5, 1e-2)]
    assert all("lambda" not in d.params for d in runs)
    full = parse_study(raw, "s.toml").runs()
    assert [(build(d).reg.lambda_w, build(d).reg.lambda_h) for d in full] == [
        (1e-3, 1e-3), (1e-2, 1e-2)]


def test_an_intervention_run_needs_three_records():
    """The rescaling splits a run in two segments sharing one record, each of at least two
    records: records = 2 is refused, records = 3 is the least that is accepted."""
    from ncsim.errors import InputError
    from ncsim.study.spec import run_spec

    p = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0, "intervene_time": 10.0}
    with pytest.raises(InputError, match=r"an intervention run needs records >= 3 .*got 2"):
        run_spec({**p, "records": 2})
    assert run_spec({**p, "records": 3}).solver.records == 3
    assert run_spec({k: v for k, v in p.items() if k != "intervene_time"}
                    | {"records": 2}).solver.records == 2  # without an intervention: fine


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_a_rescaling_factor_must_be_positive(alpha):
    """H is multiplied by alpha at the intervention: alpha = 0 would erase the features and a
    negative alpha flip them, neither a rescaling; both are refused, a small positive alpha
    is accepted."""
    from ncsim.errors import InputError
    from ncsim.study.spec import run_spec

    p = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0, "intervene_time": 10.0}
    with pytest.raises(InputError, match="intervene_alpha must be > 0"):
        run_spec({**p, "intervene_alpha": alpha})
    assert run_spec({**p, "intervene_alpha": 1e-3}).solver.t_end == 100.0


# ----------------------------------------------------------------------------- run specs
@pytest.mark.parametrize("t_end, first", [(0.05, 0.005), (0.1, 0.01), (1.0, 0.01),
                                          (2e4, 0.01)])
def test_the_first_record_defaults_to_a_tenth_of_a_short_run(t_end, first):
    """Without t_first the first non-zero record is at min(1e-2, t_end / 10): a run shorter
    than 0.1 starts recording at a tenth of its length, a longer one at 1e-2. records = 3
    gives 0, that time and t_end."""
    from ncsim.spec import SolverSpec

    solver = SolverSpec(t_end=t_end, records=3)
    assert solver.first_record == pytest.approx(first, rel=1e-15)
    assert solver.record_times() == pytest.approx([0.0, first, t_end], rel=1e-14)


def test_a_spectral_start_fills_k_modes_only_for_mse_without_bias():
    """The spectral init fills the label modes of the model: K of them for MSE without bias
    (the targets' mean mode included), K - 1 centred ones when a bias takes the mean mode or
    for CE. With K = 4 and d = 3 the MSE model with a free bias is accepted, the one without
    bias is refused (it needs d >= 4)."""
    from ncsim.errors import InputError
    from ncsim.study.spec import run_spec

    base = {"loss": "mse", "classes": 4, "per_class": 2, "dim": 3, "init": "spectral"}
    assert run_spec({**base, "bias": "free"}).model.dim == 3
    assert run_spec({**base, "loss": "ce"}).model.dim == 3
    with pytest.raises(InputError, match=r"init 'spectral' needs d \(and width\) >= 4 for K = 4"):
        run_spec(base)


def test_the_gram_form_at_full_rank_needs_no_decay():
    """From d = N + K (here K = 3, n = 2: N + K = 9) every Gram is a state of the parameter
    flow, so the forced Gram form is exact with a zero decay; one dimension less it needs both
    decays > 0 (and equal time scales) and lambda_w = 0 is refused."""
    from ncsim.errors import InputError
    from ncsim.study.spec import run_spec

    p = {"classes": 3, "per_class": 2, "reduction": "gram", "lambda_w": 0.0, "lambda_h": 1e-3}
    assert run_spec({**p, "dim": 9}).solver.reduction == "gram"
    with pytest.raises(InputError, match=r"reduction 'gram' below d = N \+ K = 9 needs"):
        run_spec({**p, "dim": 8})


# ----------------------------------------------------------------------------- value lists
def test_a_log_range_of_zero_points_is_refused():
    """"lo..hi:count" needs count >= 1: a range of 0 points would be an empty axis, i.e. a
    grid without runs. count = 1 gives lo alone, and 12 points from 1e-4 to 1e-1 include
    both ends, each a factor 10^(3/11) from the last (relative tolerance: geomspace
    rounding)."""
    from ncsim.errors import InputError
    from ncsim.params import parse_values

    with pytest.raises(InputError, match=r"needs lo > 0, hi > 0 and count >= 1"):
        parse_values("1e-4..1e-1:0", "--lambda")
    assert parse_values("1e-4..1e-1:1") == [1e-4]
    values = parse_values("1e-4..1e-1:12")
    assert len(values) == 12 and (values[0], values[-1]) == (1e-4, 1e-1)
    assert np.diff(np.log10(values)) == pytest.approx([3 / 11] * 11, rel=1e-12)


# ----------------------------------------------------------------------------- grid, unbalanced
def test_grid_interaction_with_unequal_seeds_per_cell_is_the_contrast_over_its_variance(
        tmp_path, no_figures):
    """Cells a1 x d1, a1 x d2, a2 x d1 with 2 seeds (log fn* = -0.02, 0.02) and a2 x d2 with 6
    (log fn* = 0.063 + (-0.03, -0.01, 0, 0.01, 0.02, 0.01)). In a 2 x 2 design the exact
    interaction sum of squares is c^2 / sum(1 / n_ij), c = m22 - m21 - m12 + m11 the contrast
    of the cell means (here m22 = 0.063, the others 0): 0.063^2 / (3/2 + 1/6). The within-cell
    sum is 3 x 2 x 0.02^2 plus the six values' squared deviations from their mean 0 (offsets
    summing to 0): 0.0024 + 0.0016 = 0.004 on 12 - 4 = 8 degrees of freedom. F = 4.7628,
    p = 0.061 (inconclusive); a mean cell size (3) would give F = 5.95, p = 0.041."""
    from scipy import stats

    from ncsim.study.analyses import grid

    offsets = {("a1", "d1"): (-0.02, 0.02), ("a1", "d2"): (-0.02, 0.02),
               ("a2", "d1"): (-0.02, 0.02), ("a2", "d2"): (-0.03, -0.01, 0.0, 0.01, 0.02, 0.01)}
    rows = [{"arch": a, "dataset": d, "seed": k, "onset_time": 10.0,
             "fn_at_onset": math.exp((0.063 if (a, d) == ("a2", "d2") else 0.0) + e)}
            for (a, d), es in offsets.items() for k, e in enumerate(es)]
    frame = pd.DataFrame(rows)
    runs = frame.assign(status="ok", part="cells", run_id=[f"c-{i}" for i in range(len(rows))])
    study = Study(name="s", title="S", question="q?", claim="c.", analysis="grid", metrics=[],
                  parts=[{"name": "cells", "model": "trained", "fixed": {},
                          "grid": {"arch": [0], "dataset": [0], "seed": [0]}}], source="test")
    sec = grid(study, runs, pd.DataFrame({"run_id": [], "time": [], "fn": [], "nc1_trace": []}),
               tmp_path)
    ss_inter = 0.063 ** 2 / (3 / 2 + 1 / 6)
    offsets_22 = np.array(offsets[("a2", "d2")])
    within = 3 * 2 * 0.02 ** 2 + float(((offsets_22 - offsets_22.mean()) ** 2).sum())
    f_stat = ss_inter / (within / 8)
    assert sec.numbers["interaction_F"] == pytest.approx(f_stat, rel=1e-9)
    assert sec.numbers["interaction_p"] == pytest.approx(stats.f.sf(f_stat, 1, 8), rel=1e-9)
    assert sec.verdict == "inconclusive"


# ----------------------------------------------------------------------------- undecided runs
def test_weight_decay_leaves_out_runs_that_stopped_before_deciding(tmp_path, no_figures):
    """lambda 1e-3 and 1e-2 collapse (onsets 500, 100), 3e-2 stops at max_steps without an
    onset, 0.1 vanishes. The max_steps runs decide nothing: the series is 1e-3, 1e-2, 0.1
    (slow, optimal, prevents), the first prevented lambda is 0.1, lambda_crit 0.05 lies in
    the bracket (0.01, 0.1], and a note counts the two left-out runs."""
    from ncsim.study.analyses import weight_decay

    rows = []
    for lam, status, onset in ((1e-3, "ok", 500.0), (1e-2, "ok", 100.0),
                               (3e-2, "max_steps", np.nan), (1e-1, "vanishing", np.nan)):
        rows += [{"run_id": f"{lam}-{seed}", "part": "wd", "lambda": lam, "lambda_w": lam,
                  "lambda_h": lam, "seed": seed, "status": status, "onset_time": onset,
                  "fn_at_onset": 1.0 if onset == onset else np.nan,
                  "lambda_crit_theory": 0.05} for seed in (0, 1)]
    study = Study(name="s", title="S", question="q?", claim="c.", analysis="weight_decay",
                  metrics=[], parts=[{"name": "wd", "model": "simulated", "fixed": {},
                                      "grid": {"lambda": [0], "seed": [0]}}], source="test")
    traj = pd.DataFrame({"run_id": pd.Series([], dtype=str), "time": [], "fn": [],
                         "nc1_trace": []})
    sec = weight_decay(study, pd.DataFrame(rows), traj, tmp_path)
    (series,) = sec.numbers["series"]
    assert series["lambdas"] == [1e-3, 1e-2, 1e-1]
    assert series["regimes"] == ["slow", "optimal", "prevents"]
    assert series["first_prevented"] == 0.1 and series["theory_in_bracket"] is True
    assert sec.verdict == "supports"
    assert sec.numbers["undecided_runs"] == {"wd": 2}
    assert sec.notes == ["wd: 2 run(s) stopped before deciding (2 max_steps); they count "
                         "neither as collapsed nor as prevented and are left out."]


# ----------------------------------------------------------------------------- both variants
def _raw_with(parts_fixed: dict, quick: dict) -> dict:
    return {"name": "s", "title": "S", "question": "q?", "claim": "c.", "analysis": "invariance",
            "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0},
            "parts": [{"name": "a", "model": "simulated", **parts_fixed,
                       "grid": {"seed": [0, 1]}}],
            "quick": quick}


def test_a_full_variant_that_cannot_run_is_refused_when_the_quick_one_is_loaded():
    """intervene_time 150 beyond the full variant's t_end = 100 (the quick variant's t_end is
    1000): loading either variant refuses the file, naming the part and the reason."""
    from ncsim.errors import InputError
    from ncsim.study.spec import parse_study

    raw = _raw_with({"intervene_time": 150.0}, {"simulated": {"t_end": 1000.0}})
    for quick in (True, False):
        with pytest.raises(InputError, match=r"key 'parts\.a': run .*intervene_time must lie "
                                             r"in \(0, t_end = 100\.0\), got 150\.0"):
            parse_study(raw, "s.toml", quick=quick)


def test_a_quick_variant_that_cannot_run_is_refused_when_the_full_one_is_loaded():
    """The quick variant shortens t_end to 50, below intervene_time 80: the full variant
    (t_end 100) alone would run, but the file is refused naming the quick part."""
    from ncsim.errors import InputError
    from ncsim.study.spec import parse_study

    raw = _raw_with({"intervene_time": 80.0}, {"simulated": {"t_end": 50.0}})
    with pytest.raises(InputError, match=r"key 'quick\.parts\.a': run .*t_end = 50\.0"):
        parse_study(raw, "s.toml", quick=False)
    ok = _raw_with({"intervene_time": 80.0}, {"simulated": {"t_end": 500.0}})
    assert len(parse_study(ok, "s.toml", quick=False).runs()) == 2
    assert parse_study(ok, "s.toml", quick=True).quick is True
