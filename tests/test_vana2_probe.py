"""Second mutation probe of :mod:`ncsim.validate.analysis`: branches the other tests leave free.

Hand-made logs and run tables with known answers pin: the model-and-dataset match of the paper's
relaxed cells, records without a phase, text and blank entries in the onset metric, ``stay``
under interpolation, a zero mean in the CV, conditions numbered 0 in the power fit, group tables
without a status column, the held-out MAE of a run with no other seed, a single crossed run in
the lead summary, and blank time units.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.onset import onset_and_fn
from ncsim.validate.analysis import (
    OnsetRule,
    fit_thresholds,
    group_table,
    lead_summary,
    paper_threshold,
    run_onset,
    run_table,
)


def _log(metric, fn, phase=2, run="r", time=None):
    n = len(metric)
    return pd.DataFrame({"run_id": run,
                         "time": np.arange(1.0, n + 1) if time is None else time,
                         "phase": phase, "nc1_trace": metric, "fn": fn})


@pytest.mark.parametrize("model, dataset, condition", [
    ("resnet20", "mnist", "depth2"), ("mlp5", "mnist", "actGELU"),
    ("mlp", "cifar10", "mlp5_cifar10"), ("resnet20", "cifar10", "mlp5_cifar10"),
])
def test_relaxed_cell_needs_both_its_model_and_its_dataset(model, dataset, condition):
    """A relaxed condition name under another model (same dataset) is scored at 0.01."""
    assert paper_threshold(model, dataset, condition) == 0.01


def test_records_without_a_phase_are_outside_the_phase_two_search():
    """A record with a blank phase is not a phase-2 record: its dip below the threshold is no
    onset; the onset is the first phase-2 record below, while min_metric still sees the dip."""
    part = _log([0.5, 0.001, 0.5, 0.005], [1.0, 2.0, 3.0, 4.0],
                phase=[1.0, math.nan, 2.0, 2.0])
    out = run_onset(part, OnsetRule())
    assert (out["onset_epoch"], out["fn_star"]) == (4.0, 4.0)
    assert (out["min_metric"], out["min_metric_searched"]) == (0.001, 0.005)


def test_text_in_the_onset_metric_is_an_input_error_naming_run_and_value():
    """A metric entry such as ``CE`` is refused (never read as a blank record)."""
    part = _log(["0.5", "CE", "0.001"], [1.0, 1.0, 1.0], run="width128_s0")
    with pytest.raises(InputError, match=r"log of run width128_s0: the onset metric column "
                                         r"'nc1_trace' holds 'CE', not a number"):
        run_onset(part, OnsetRule())


def test_metric_written_as_text_with_blanks_is_read_as_numbers():
    """Metric entries as text ("0.5", "", "0.005") are numbers, the blank one a skipped record."""
    part = _log(["0.5", "", "0.005", "0.002"], [1.0, 2.0, 3.0, 4.0])
    out = run_onset(part, OnsetRule())
    assert (out["onset_epoch"], out["fn_star"]) == (3.0, 3.0)
    assert (out["min_metric"], out["final_metric"]) == (0.002, 0.002)
    assert out["status"] == "collapsed"


def test_stay_counts_under_interpolation_too():
    """With interpolation and ``stay = 2`` a single dip is no onset: the crossing falls between
    the third and fourth records, as :func:`ncsim.onset.onset_and_fn` with stay 2 gives."""
    metric = [0.5, 0.005, 0.5, 0.005, 0.004]
    fn = [1.0, 2.0, 3.0, 4.0, 5.0]
    part = _log(metric, fn)
    out = run_onset(part, OnsetRule(interpolate=True, stay=2))
    when, fn_star = onset_and_fn(np.arange(1.0, 6.0), np.array(metric), np.array(fn), 0.01, 2)
    assert 3.0 < out["onset_epoch"] < 4.0
    assert out["onset_epoch"] == pytest.approx(when, rel=1e-12)
    assert out["fn_star"] == pytest.approx(fn_star, rel=1e-12)
    one = run_onset(part, OnsetRule(interpolate=True, stay=1))
    assert 1.0 < one["onset_epoch"] < 2.0


def test_zero_mean_onset_has_nan_cv_not_an_error():
    """Two runs collapsing at flow time 0: onset mean 0 and std 0, so the CV is NaN (no
    division by zero); fn* 1 and 3 still give CV sqrt(2) / 2."""
    frames = [_log([0.001, 0.001], [f, f], run=f"s{i}", time=[0.0, 1.0])
              .assign(model="sim", dataset="ufm", condition="c", seed=i)
              for i, f in enumerate((1.0, 3.0))]
    runs = run_table(pd.concat(frames, ignore_index=True), OnsetRule(phase=None))
    assert list(runs["onset_epoch"]) == [0.0, 0.0]
    row = group_table(runs).iloc[0]
    assert (row["onset_mean"], row["onset_std"]) == (0.0, 0.0)
    assert math.isnan(row["onset_cv"])
    assert row["fn_star_cv"] == pytest.approx(math.sqrt(2) / 2, rel=1e-12)


def test_power_fit_leaves_out_conditions_numbered_zero():
    """Conditions wd0, wd1, wd2: the log-log fit uses wd1 and wd2 only (log 0 is undefined), so
    it passes exactly through them; a run of wd0 gets no fn_pred (NaN)."""
    runs = pd.DataFrame({
        "run": ["a", "b", "c"], "model": "mlp", "dataset": "mnist",
        "condition": ["wd0", "wd1", "wd2"], "seed": 0,
        "onset_epoch": [10.0, 20.0, 30.0], "fn_star": [5.0, 2.0, 2.0 * 2.0 ** -0.5]})
    out = fit_thresholds(runs, "power")
    assert math.isnan(out["a"])
    assert out["b"] == pytest.approx(2.0, rel=1e-12)
    assert out["c"] == pytest.approx(2.0 * 2.0 ** -0.5, rel=1e-12)


def test_group_table_without_a_status_column_counts_no_vanishing_run():
    """A run table without ``status`` (built by hand) has n_vanishing 0 in every group."""
    runs = pd.DataFrame({"run": ["a", "b"], "model": "m", "dataset": "d", "condition": "c",
                         "seed": [0, 1], "onset_epoch": [1.0, math.nan],
                         "fn_star": [2.0, math.nan]})
    row = group_table(runs).iloc[0]
    assert (row["n_runs"], row["n_collapsed"], row["n_vanishing"]) == (2, 1, 0)


def test_held_out_mae_skips_a_run_without_another_seed():
    """Seeds <NA> and 0: the seedless run is predicted by seed 0 (error |10 - 4|), the seed-0
    run has no run of another seed and is left out of the MAE (which stays 6, not NaN)."""
    leads = pd.DataFrame({"seed": pd.array([pd.NA, 0], dtype="Int64"),
                          "onset_epoch": [50.0, 50.0],
                          "lead_in_sample": [10.0, 4.0], "lead_held_out": [10.0, 4.0]})
    out = lead_summary(leads)
    assert out["held_out"]["mae"] == pytest.approx(6.0, rel=1e-12)
    assert out["in_sample"]["mae"] == pytest.approx(3.0, rel=1e-12)


def test_lead_summary_of_one_crossed_run_is_quiet():
    """One crossed run: lead_std is NaN and the summary raises no numpy warning."""
    leads = pd.DataFrame({"seed": [0, 1], "onset_epoch": [50.0, 60.0],
                          "lead_in_sample": [10.0, math.nan],
                          "lead_held_out": [10.0, math.nan]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lead_summary(leads)
    for name in ("in_sample", "held_out"):
        assert out[name]["n_crossed"] == 1 and out[name]["n_runs"] == 2
        assert out[name]["lead_mean"] == 10.0 and math.isnan(out[name]["lead_std"])
    assert out["in_sample"]["mae"] == 0.0 and math.isnan(out["held_out"]["mae"])


def test_blank_time_units_do_not_make_a_run_mixed():
    """Time units epoch, <blank>, epoch are one unit (epoch); epoch and t are mixed (<NA>)."""
    one = _log([0.5, 0.5, 0.005], [1.0] * 3, run="a").assign(
        time_unit=["epoch", None, "epoch"])
    two = _log([0.5, 0.5, 0.005], [1.0] * 3, run="b").assign(time_unit=["epoch", "t", "t"])
    runs = run_table(pd.concat([one, two], ignore_index=True), OnsetRule()).set_index("run")
    assert runs.loc["a", "time_unit"] == "epoch"
    assert pd.isna(runs.loc["b", "time_unit"])
