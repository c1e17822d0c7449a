"""Third probe of ncsim.onset: hand-built series with hand-worked answers."""

import math

import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.onset import (
    is_vanishing,
    onset_and_fn,
    onset_table,
    onset_time,
    onsets_and_fn,
    value_at,
)


def test_onset_table_keeps_two_records_at_one_time_in_order_in_a_shuffled_table():
    """20 shuffled rows, two at t = 0 (below with fn 9, then above with fn 3, as written), the
    rest below: in written order the first 2 consecutive records below start at t = 2 (stay
    2), so onset 2 with fn 2; the pair swapped would give onset 0 with fn 9."""
    times = [7.0, 11.0, 19.0, 10.0, 5.0, 8.0, 4.0, 14.0, 12.0, 9.0, 18.0, 16.0, 13.0, 2.0,
             6.0, 3.0, 0.0, 17.0, 15.0, 0.0]
    metric = [1e-3] * 20
    fn = list(times)
    fn[16] = 9.0                 # first record at t = 0: below
    metric[19], fn[19] = 1.0, 3.0  # second record at t = 0: above
    frame = pd.DataFrame({"run_id": "r", "time": times, "m": metric, "fn": fn})
    table = onset_table(frame, metric="m", stay=2, interpolate=False)
    assert table.loc["r", "onset_time"] == 2.0
    assert table.loc["r", "fn_at_onset"] == 2.0


def test_is_vanishing_compares_with_the_largest_fn_not_the_largest_magnitude():
    """fn = [-10, 1, 0.005]: the largest fn is 1 and 0.005 >= 1e-3 x 1: not vanishing (a peak
    of |fn| = 10 would say vanishing); a final 5e-4 < 1e-3 x 1 is vanishing."""
    assert not is_vanishing([-10.0, 1.0, 0.005], 1e-3)
    assert is_vanishing([-10.0, 1.0, 0.0005], 1e-3)


def test_batch_run_of_exactly_stay_records():
    """As many records as ``stay``, all below: the batch onset is the first record."""
    when, fn_on = onsets_and_fn([1.0, 2.0], [[1e-3, 1e-4]], [[5.0, 6.0]], threshold=0.01, stay=2)
    assert when[0] == 1.0 and fn_on[0] == 5.0


def test_value_at_skips_an_infinite_value():
    """An inf record is skipped: at t = 2 the value comes from (1, 1) and (4, 16): 4."""
    assert value_at([1.0, 2.0, 4.0], [1.0, math.inf, 16.0], 2.0) == pytest.approx(4.0, rel=1e-12)


def test_onset_table_checks_vanish_tol_even_without_runs():
    """A bad vanish_tol is refused even for a table with no records."""
    empty = pd.DataFrame({"run_id": [], "time": [], "nc1_trace": [], "fn": []})
    with pytest.raises(InputError, match="vanish_tol"):
        onset_table(empty, vanish_tol=1.5)


def test_crossing_from_a_negative_time_is_linear_in_time():
    """t -2 -> 6, metric 1 -> 1e-4, threshold 1e-2: half way in log value, linear in time from a
    record at t <= 0: t = -2 + 0.5 * 8 = 2."""
    assert onset_time([-2.0, 6.0], [1.0, 1e-4], threshold=1e-2) == pytest.approx(2.0, rel=1e-12)


def test_value_at_from_a_negative_time_is_linear_in_time():
    """fn 1 -> 100 over t -2 -> 6: at t = 2 (half way in time) the log-value midpoint 10; the
    onset of the previous test takes fn 10 there."""
    assert value_at([-2.0, 6.0], [1.0, 100.0], 2.0) == pytest.approx(10.0, rel=1e-12)
    when, fn_on = onset_and_fn([-2.0, 6.0], [1.0, 1e-4], [1.0, 100.0], threshold=1e-2)
    assert when == pytest.approx(2.0, rel=1e-12) and fn_on == pytest.approx(10.0, rel=1e-12)
