"""Values of the vanishing rule and of level crossings on hand-made series.

The expected values follow from the conventions of ``ncsim.onset`` (module docstring): a run is
vanishing when its *final* fn is below ``vanish_tol`` times its largest fn; ``vanish_tol = 0``
turns the rule off in :func:`is_vanishing`, :func:`onset_table` and the simulator; a crossing
"below" is the first value ``<= level`` and "above" the first value ``>= level``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.onset import crossing_time, is_vanishing, lead_time, onset_table, value_at


def test_small_init_growth_is_not_vanishing():
    """fn of a small-init run grows from 1e-6 to 1: its final fn is the largest, so it is
    not vanishing, although its first values lie far below 1e-3 of the peak."""
    growing = np.geomspace(1e-6, 1.0, 13)
    assert not is_vanishing(growing)
    assert not is_vanishing(growing, vanish_tol=0.5)


def test_a_dip_that_recovers_is_not_vanishing_but_a_final_fall_is():
    """Only the last finite fn counts: a dip to 1e-5 of the peak followed by a recovery to
    half of it is not vanishing; the same series ending at 1e-4 of the peak is (the trailing
    NaN gap is skipped)."""
    dip = np.array([1.0, 2.0, 2e-5, 1.0, np.nan])
    assert not is_vanishing(dip)
    fall = np.array([1.0, 2.0, 1.0, 2e-4, np.nan])
    assert is_vanishing(fall)
    # the boundary: final = tol x peak is not below it
    assert not is_vanishing(np.array([2.0, 2e-3]), vanish_tol=1e-3)
    assert is_vanishing(np.array([2.0, 1.999e-3]), vanish_tol=1e-3)


def test_onset_table_keeps_the_onset_of_a_growing_run():
    """A small-init run whose fn grows (1e-6 -> 1) while nc1 falls as t^-2 keeps its onset
    sqrt(1e3) (exact in log-log interpolation) and is not vanishing."""
    t = np.geomspace(1.0, 1000.0, 13)
    frame = pd.DataFrame({"run_id": "g", "time": t, "nc1_trace": t**-2.0,
                          "fn": np.geomspace(1e-6, 1.0, 13)})
    row = onset_table(frame, threshold=1e-3).loc["g"]
    assert not row["vanishing"]
    assert row["onset_time"] == pytest.approx(math.sqrt(1e3), rel=1e-12)


def test_vanish_tol_zero_turns_the_rule_off():
    """With ``vanish_tol = 0`` no run is vanishing, even one whose fn is 0 throughout (which
    the default rule calls vanishing: its peak is not above 0); the onset is then kept."""
    t = np.geomspace(1.0, 1000.0, 13)
    frame = pd.DataFrame({"run_id": "z", "time": t, "nc1_trace": t**-2.0, "fn": 0.0 * t})
    default = onset_table(frame, threshold=1e-3).loc["z"]
    assert default["vanishing"] and math.isnan(default["onset_time"])
    off = onset_table(frame, threshold=1e-3, vanish_tol=0).loc["z"]
    assert not off["vanishing"]
    assert off["onset_time"] == pytest.approx(math.sqrt(1e3), rel=1e-12)
    assert off["fn_at_onset"] == 0.0
    assert not is_vanishing(0.0 * t, vanish_tol=0) and is_vanishing(0.0 * t)


def test_simulator_and_onset_table_agree_on_vanish_tol_zero():
    """A run that starts and stays at H = W = 0 (CE, no bias: a critical point) has fn 0
    throughout: the simulator calls it vanishing under the default rule and not vanishing with
    ``SolverSpec(vanish_tol=0)``, as :func:`onset_table` does on its own trajectories."""
    from ncsim.flow import simulate
    from ncsim.spec import InitSpec, ModelSpec, RunSpec, SolverSpec

    zeros = {"H": np.zeros((4, 6)), "W": [np.zeros((3, 4))]}
    for tol, expected in ((1e-3, True), (0.0, False)):
        spec = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                       init=InitSpec(kind="arrays", arrays=zeros),
                       solver=SolverSpec(t_end=10.0, records=5, vanish_tol=tol))
        result = simulate(spec, theory=False)
        assert (result.runs["status"].iloc[0] == "vanishing") is expected
        table = onset_table(result.trajectories, vanish_tol=tol)
        assert bool(table["vanishing"].iloc[0]) is expected


@pytest.mark.parametrize("interpolate", [True, False])
def test_a_record_exactly_at_the_level_is_the_crossing(interpolate):
    """"below" crosses at the first value <= level and "above" at the first value >= level:
    a record equal to the level is the crossing, at its own time (the segment ends on the
    level, so the interpolation gives that time too)."""
    t = np.array([1.0, 2.0, 4.0, 8.0])
    falling = np.array([8.0, 4.0, 2.0, 1.0])
    assert crossing_time(t, falling, 4.0, "below", interpolate) == 2.0
    assert crossing_time(t, falling, 4.0, "auto", interpolate) == 2.0
    rising = falling[::-1].copy()
    assert crossing_time(t, rising, 2.0, "above", interpolate) == 2.0
    # the lead time uses the same crossing: onset 6 - crossing 2
    assert lead_time(t, falling, onset=6.0, level=4.0, interpolate=interpolate) == 4.0


@pytest.mark.parametrize("seed", range(3))
def test_value_at_a_record_time_is_that_record_exactly(seed):
    """At a record's own time value_at returns the record's value bit for bit (no log/exp
    round trip), whatever the signs; a time between records is interpolated strictly
    between their values for a monotone segment."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.1, 2.0, 40))
    v = rng.lognormal(0.0, 2.0, 40) * np.where(rng.random(40) < 0.2, -1.0, 1.0)
    for j in range(40):
        assert value_at(t, v, float(t[j])) == v[j]
    mid = float(np.sqrt(t[4] * t[5]))
    lo, hi = sorted((v[4], v[5]))
    assert lo < value_at(t, v, mid) < hi


@pytest.mark.parametrize("value", ["no", "False", 0, None])
def test_an_interpolate_flag_that_is_not_true_or_false_is_refused(value):
    """OnsetSpec and OnsetRule take interpolate as True or False: the text "no" (truthy)
    switched interpolation on, the opposite of what it says; 0 and None are refused too."""
    from ncsim.errors import InputError
    from ncsim.spec import OnsetSpec
    from ncsim.validate.analysis import OnsetRule

    with pytest.raises(InputError, match=r"onset 'interpolate' must be True or False"):
        OnsetSpec(interpolate=value).validate()
    with pytest.raises(InputError, match=r"interpolate must be True or False"):
        OnsetRule(interpolate=value)
    OnsetSpec(interpolate=np.bool_(False)).validate()
    assert OnsetRule(interpolate=True).interpolate is True


@pytest.mark.parametrize("big", [1e308, 1.7976931348623157e308])
def test_crossings_between_values_near_the_float_limit_are_interpolated(big):
    """A segment from +big to -big (its span overflows) meets 0 half way, and a level of
    big/10 at the fraction 0.45, in log time from t = 1 (sqrt(3) and 3**0.45 for 1..3), as a
    segment of a hundredth of the size does; never at its first record."""
    times = np.array([1.0, 3.0])
    for level, frac in ((0.0, 0.5), (big / 10, 0.45)):
        for scale in (1.0, 1e-2):
            when = crossing_time(times, np.array([big, -big]) * scale, level * scale)
            assert when == pytest.approx(3.0 ** frac, rel=1e-14), (level, scale)
    rising = crossing_time(np.array([0.0, 2.0]), np.array([-big, big]), 0.0)
    assert rising == pytest.approx(1.0, rel=1e-15)  # from t = 0: linear in time


@pytest.mark.parametrize("big", [1e308, 1.7976931348623157e308])
def test_value_at_between_values_near_the_float_limit_stays_finite(big):
    """value_at between -big and +big (their difference overflows) is the linear blend in
    time: 0 half way, +-0.9 big at the 5% and 95% times, the records at their own times."""
    import warnings

    times, values = np.array([0.0, 2.0]), np.array([-big, big])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        assert value_at(times, values, 1.0) == 0.0
        assert value_at(times, values, 0.1) == pytest.approx(-0.9 * big, rel=1e-14)
        assert value_at(times, values, 1.9) == pytest.approx(0.9 * big, rel=1e-14)
        assert value_at(times, values, 0.0) == -big and value_at(times, values, 2.0) == big
        mid_log = value_at(np.array([1.0, 4.0]), values, 2.0)  # log-time half way
    assert mid_log == pytest.approx(0.0, abs=1e-14 * big)
