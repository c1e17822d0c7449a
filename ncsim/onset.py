"""Onset of collapse, fn at onset, lead time: one implementation for every time series.

The same functions serve simulated trajectories, training logs and imported logs. A series is
a pair of 1-D arrays ``times`` (T,) and ``values`` (T,). Times must be in order (non-decreasing;
two records at one time, e.g. the two sides of an intervention, are allowed); records without a
finite time are dropped. NaN values are gaps (e.g. training logs leave NC metrics empty before
99% accuracy) and are skipped.

Conventions
-----------
- Onset time: first time at which ``metric < threshold`` holds, for ``stay`` consecutive
  records that are not gaps. A metric at +inf (nc1 with no between-class spread) is a record
  above every threshold, not a gap. With ``interpolate=True`` the crossing time is
  interpolated between the record before and the first record below, linearly in (log time,
  log value); when the earlier record is at t <= 0 the interpolation is linear in time, when a
  value is <= 0 (nc1 of exactly collapsed features) linear in value, and from a record at +inf
  the crossing is at the later record.
- fn at onset: fn interpolated at the onset time by the same rule as a crossing (linear in
  (log time, log value); in value when a value is <= 0, in time from a record at t <= 0), or
  taken at the onset record when ``interpolate=False``. So ``value_at`` at the time
  ``crossing_time`` finds for a level gives that level back. An onset at a record's own time
  takes that record's fn: of two records at one time (the two sides of an intervention), the
  one whose metric crossed (:func:`onset_and_fn`).
- Lead time: onset time minus the first time fn crosses ``level``. The crossing direction is
  "below" (fn falls to the level, as in trained networks), "above" (fn grows to it, as in a
  small-init UFM) or "auto" (from the side of the first finite fn value).
- Vanishing: the final fn is below ``vanish_tol`` times the largest fn of the run
  (:func:`is_vanishing`). Such a run is reported as ``vanishing``, never as collapsed (above
  the weight-decay threshold NC1 still goes to 0 while every norm goes to 0 too): it has no
  onset and no fn at onset. The run-level functions apply the rule: the simulator's run table
  (``ncsim.flow.simulate``, with each run's ``SolverSpec.vanish_tol``), :func:`onset_table`
  (``vanish_tol``, default the simulator's 1e-3) and ``ncsim.validate.analysis.run_onset``.
  The series functions (:func:`onset_time`, :func:`onset_and_fn`, ...) read one metric series
  and do not: a caller that has fn checks :func:`is_vanishing` itself.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from ncsim.errors import InputError, is_finite_number, is_integer
from ncsim.spec import SolverSpec

#: the columns of :func:`onset_table`'s result
ONSET_COLUMNS = ("onset_time", "fn_at_onset", "vanishing")


def _kept(times: np.ndarray, values: np.ndarray, keep_inf: bool = False) -> np.ndarray:
    """Mask of the records with a finite time and a finite value (``keep_inf``: a non-NaN
    value), after checking the shapes and the order of the times."""
    if times.shape != values.shape or times.ndim != 1:
        raise InputError(f"times and values must be 1-D of equal length, got {times.shape} "
                         f"and {values.shape}")
    timed = np.isfinite(times)
    if np.any(np.diff(times[timed]) < 0):
        raise InputError("record times must be in order (non-decreasing); sort the records by "
                         "time first")
    return timed & (~np.isnan(values) if keep_inf else np.isfinite(values))


def _finite_series(times: np.ndarray, values: np.ndarray, keep_inf: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The records with a finite time and a finite value (``keep_inf``: a non-NaN value);
    :class:`InputError` naming the argument for a series that holds anything but numbers."""
    times = _float_series("times", times)
    values = _float_series("values", values)
    keep = _kept(times, values, keep_inf)
    return times[keep], values[keep]


def _interp_time(
    t0: float, t1: float, v0: float, v1: float, level: float, log_value: bool
) -> float:
    """Time in [t0, t1] where a segment from v0 to v1 meets ``level``."""
    if math.isinf(v0) or math.isinf(v1):
        # from +inf, or down to -inf: the segment has no value between its ends to
        # interpolate, and t1 is the first time it is known to be below the level
        return t1
    if log_value and v0 > 0 and v1 > 0 and level > 0:
        a, b, c = math.log(v0), math.log(v1), math.log(level)
    else:
        a, b, c = v0, v1, level
    if a == b or t0 == t1:  # flat, or a jump between two records at one time
        return t1
    frac = min(max(_fraction(a, b, c), 0.0), 1.0)
    if frac in (0.0, 1.0):  # on a record: its time exactly (exp(log t) need not be t)
        return t0 if frac == 0.0 else t1
    if t0 > 0:
        when = math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0)))
    else:
        when = t0 + frac * (t1 - t0)
    return min(max(when, t0), t1)  # exp(log t0 + a few ulps) may round below t0


def _fraction(a: float, b: float, c: float) -> float:
    """(c - a) / (b - a) for finite a != b, also where b - a overflows (values near +-1e308)."""
    a, b, c = float(a), float(b), float(c)  # Python floats: an overflow gives inf, no warning
    span = b - a
    if math.isinf(span):
        return (c / 2 - a / 2) / (b / 2 - a / 2)
    return (c - a) / span


def _between(v0: float, v1: float, frac: float) -> float:
    """The value a fraction ``frac`` in [0, 1] of the way from v0 to v1 (finite ends)."""
    v0, v1 = float(v0), float(v1)
    span = v1 - v0
    if math.isinf(span):  # ends of opposite signs near +-1e308: the weighted sum stays finite
        return (1.0 - frac) * v0 + frac * v1
    return v0 + frac * span


def crossing_index(values: np.ndarray, threshold: float, stay: int = 1) -> int | None:
    """Index of the first entry of the first run of ``stay`` entries below ``threshold``."""
    threshold = _checked_rule(threshold, stay)
    below = np.asarray(values) < threshold
    if below.size < stay:  # too few records for a run of ``stay`` (none at all included)
        return None
    if stay == 1:
        hits = np.flatnonzero(below)
        return int(hits[0]) if hits.size else None
    window = np.convolve(below.astype(np.int64), np.ones(stay, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(window == stay)
    return int(hits[0]) if hits.size else None


def _checked_rule(threshold: float, stay: int) -> float:
    """``threshold`` as a number, after :class:`InputError` for a threshold that is not a
    finite number or a ``stay`` that is not an integer >= 1."""
    if not (is_integer(stay) and stay >= 1):
        raise InputError(f"stay must be an integer >= 1 (the number of consecutive records "
                         f"below the threshold), got {stay!r}")
    if isinstance(threshold, np.ndarray) and threshold.ndim == 0:
        threshold = threshold.item()  # a 0-d array is the number it holds
    if not is_finite_number(threshold):
        raise InputError(f"onset threshold must be a finite number (not text or a bool), got "
                         f"{threshold!r}")
    return threshold


def _checked_flag(name: str, value: object) -> bool:
    """``value`` as a bool, after :class:`InputError` for anything but True or False (the text
    "no" is truthy and would switch interpolation on, None would switch it off)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _real(name: str, value: object, meaning: str) -> float:
    """``value`` (a real number, or a 0-d array holding one; NaN and inf pass) as a float,
    after :class:`InputError` for text, a bool, None or anything else."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        try:
            return float(value)
        except OverflowError:  # an int beyond float64
            pass
    raise InputError(f"{name} must be a number ({meaning}), not text or a bool, got "
                     f"{value!r}")


def onset_time(
    times: np.ndarray,
    values: np.ndarray,
    threshold: float = 0.01,
    stay: int = 1,
    interpolate: bool = True,
) -> float:
    """Onset time of a metric series (NaN if it never falls below ``threshold``).

    Parameters
    ----------
    times : (T,) record times (non-decreasing), any unit.
    values : (T,) metric values (NaN = gap; +inf = above every threshold, -inf = below every
        threshold: a crossing at a record next to an infinite one is that record's time).
    threshold : onset when ``values < threshold`` (a finite number).
    stay : number of consecutive records (gaps skipped) that must stay below, >= 1.
    interpolate : interpolate the crossing in (log time, log value).
    """
    return _onset(times, values, threshold, stay, interpolate)[0]


def onset_record(times: np.ndarray, values: np.ndarray, threshold: float = 0.01,
                 stay: int = 1) -> int | None:
    """Index in ``times`` of the record whose metric crossed (the onset record of
    :func:`onset_time`; None without an onset). Of two records at one time it tells which
    one crossed."""
    return _onset(times, values, threshold, stay, interpolate=False)[1]


def _float_series(name: str, series: object) -> np.ndarray:
    """``series`` as a float64 array; :class:`InputError` if it holds anything but numbers."""
    try:
        return np.asarray(series, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a sequence of numbers, got "
                         f"{type(series).__name__}: {err}") from None


def _onset(times: np.ndarray, values: np.ndarray, threshold: float, stay: int,
           interpolate: bool) -> tuple[float, int | None, int | None]:
    """Onset time (NaN if none), the index in ``times`` of the record that crossed, and the
    index of the kept record before it, which starts the crossing segment (None without an
    onset, at the first kept record or without interpolation)."""
    interpolate = _checked_flag("interpolate", interpolate)
    times, values = _float_series("times", times), _float_series("values", values)
    rows = np.flatnonzero(_kept(times, values, keep_inf=True))
    t, v = times[rows], values[rows]
    idx = crossing_index(v, threshold, stay)
    if idx is None:
        return math.nan, None, None
    if not interpolate or idx == 0:
        return float(t[idx]), int(rows[idx]), None
    when = _interp_time(t[idx - 1], t[idx], v[idx - 1], v[idx], threshold, log_value=True)
    return when, int(rows[idx]), int(rows[idx - 1])


def onset_and_fn(
    times: np.ndarray,
    values: np.ndarray,
    fn: np.ndarray,
    threshold: float = 0.01,
    stay: int = 1,
    interpolate: bool = True,
) -> tuple[float, float]:
    """Onset time of a metric series and fn at onset (both NaN if there is no onset).

    times, values : as for :func:`onset_time`; fn : (T,) fn at the same records (NaN = gap).

    fn at onset is fn at the onset time (:func:`value_at`), except when the onset is the
    own time of the record whose metric crossed, or of the record that starts the crossing
    segment (the metric there exactly at the threshold): then it is that record's fn. The
    difference shows at two records with one time (the two sides of an intervention that
    rescales the features): fn at onset is the crossing side's, not the first record's;
    where the crossing record has no fn, the nearest finite records give it as
    :func:`value_at` does, without the records before the crossing one at the same time.
    """
    fn = _float_series("fn", fn)
    when, row, prev = _onset(times, values, threshold, stay, interpolate)
    if fn.shape != np.shape(times):  # checked with or without an onset
        raise InputError(f"fn must have one value per record: {fn.shape} against "
                         f"{np.shape(times)} times")
    if row is None:
        return math.nan, math.nan
    t = np.asarray(times, dtype=np.float64)
    when = float(when)
    return when, _fn_at_onset(t, fn, np.isfinite(t) & np.isfinite(fn), when, row, prev,
                              interpolate)


def onsets_and_fn(
    times: np.ndarray,
    values: np.ndarray,
    fn: np.ndarray,
    threshold: float = 0.01,
    stay: int = 1,
    interpolate: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`onset_and_fn` of R series that share their record times, bit for bit.

    times : (T,) record times (non-decreasing where finite).
    values, fn : (R, T) metric and fn series (NaN = gap, as for :func:`onset_and_fn`).

    Returns ``(when, fn_on)``, each (R,) (NaN where a series has no onset). The search for the
    crossing record runs on the whole batch at once; the interpolation of the crossing rows
    goes through the same scalar rules as :func:`onset_and_fn`.
    """
    times = _float_series("times", times)
    values, fn = _float_series("values", values), _float_series("fn", fn)
    if times.ndim != 1 or values.ndim != 2 or values.shape[1] != times.size:
        raise InputError(f"onsets_and_fn takes times (T,) and values (R, T), got "
                         f"{times.shape} and {values.shape}")
    if fn.shape != values.shape:
        raise InputError(f"fn must have one value per record of each series: {fn.shape} "
                         f"against values {values.shape}")
    threshold = _checked_rule(threshold, stay)
    interpolate = _checked_flag("interpolate", interpolate)
    timed = np.isfinite(times)
    if np.any(np.diff(times[timed]) < 0):
        raise InputError("record times must be in order (non-decreasing); sort the records by "
                         "time first")
    rank, column = _first_run_below(timed & ~np.isnan(values), values < threshold, stay)
    when = np.full(values.shape[0], math.nan)
    fn_on = np.full(values.shape[0], math.nan)
    fn_kept = timed & np.isfinite(fn)
    for i in np.flatnonzero(rank >= 0):
        row = int(column[i, rank[i]])
        prev = None
        if not interpolate or rank[i] == 0:
            when[i] = times[row]
        else:
            prev = int(column[i, rank[i] - 1])
            when[i] = _interp_time(times[prev], times[row], values[i, prev], values[i, row],
                                   threshold, log_value=True)
        fn_on[i] = _fn_at_onset(times, fn[i], fn_kept[i], float(when[i]), row, prev,
                                interpolate)
    return when, fn_on


def _first_run_below(kept: np.ndarray, below: np.ndarray, stay: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per series, the rank among its kept records of the first of ``stay`` consecutive kept
    records below the threshold (-1 if none), and the columns of the kept records in order.

    kept, below : (R, T) masks. Returns ``rank`` (R,) and ``column`` (R, T): ``column[i, k]``
    is the column of series i's k-th kept record (the columns after its last kept record
    are the others, in order).
    """
    column = np.argsort(~kept, axis=1, kind="stable")
    hit = np.take_along_axis(below & kept, column, axis=1).astype(np.int64)
    if hit.shape[1] < stay:
        return np.full(hit.shape[0], -1), column
    ones = np.concatenate([np.zeros((hit.shape[0], 1), np.int64), np.cumsum(hit, axis=1)], 1)
    # kept records below among ranks k .. k + stay - 1 (a window past the last kept record
    # holds fewer than ``stay``: the columns there count as not below)
    full = ones[:, stay:] - ones[:, :-stay] == stay  # (R, T - stay + 1)
    return np.where(full.any(axis=1), full.argmax(axis=1), -1), column


def _fn_at_onset(times: np.ndarray, fn: np.ndarray, fn_kept: np.ndarray, when: float, row: int,
                 prev: int | None, interpolate: bool) -> float:
    """fn at an onset at ``when`` whose crossing record is ``row`` and whose crossing segment
    starts at record ``prev`` (None: no segment) (:func:`onset_and_fn`'s rule); ``fn_kept``
    marks the records with a finite time and a finite fn."""
    if (prev is not None and when == float(times[prev]) and when != float(times[row])
            and math.isfinite(fn[prev])):
        return float(fn[prev])  # at the segment's start: its record, not one before a jump
    if when != float(times[row]):
        if fn_kept.all():  # no gap: the records as they are (no copy)
            return _value_at_finite(times, fn, when, interpolate)
        return _value_at_finite(times[fn_kept], fn[fn_kept], when, interpolate)
    if math.isfinite(fn[row]):
        return float(fn[row])
    # no fn at the crossing record: the nearest finite ones, without the records before it
    # at its own time (the other side of a jump)
    keep = fn_kept & ((np.arange(times.size) >= row) | (times != times[row]))
    return _value_at_finite(times[keep], fn[keep], when, interpolate)


def value_at(times: np.ndarray, values: np.ndarray, when: float, interpolate: bool = True) -> float:
    """Series value at time ``when``: interpolated, or the record at/after ``when``.

    The interpolation is the inverse of the crossings': linear in (log time, log value) when
    both records are > 0, linear in value when one is <= 0, and linear in time (not log time)
    from a record at t <= 0. A power law between two records is therefore exact, and
    ``value_at(t, v, crossing_time(t, v, level))`` is ``level``.

    Non-finite records are skipped, so the value comes from the nearest finite records: the
    first at or after ``when`` (interpolated with the one before it), or the last finite one
    when none follows; NaN when ``when`` is not finite or no record is.
    """
    when = _real("when", when, "the time to read the series at")
    interpolate = _checked_flag("interpolate", interpolate)
    series = _finite_series(times, values)  # checked whatever the time
    if not math.isfinite(when):
        return math.nan
    return _value_at_finite(*series, when, interpolate)


def _value_at_finite(t: np.ndarray, v: np.ndarray, when: float, interpolate: bool) -> float:
    """:func:`value_at` at a finite ``when`` on records that all have a finite time and value
    (t in order)."""
    if t.size == 0:
        return math.nan
    j = int(np.searchsorted(t, when, side="left"))
    if j >= t.size:
        return float(v[-1])
    if not interpolate or j == 0 or t[j] == when:
        return float(v[j])
    t0, t1, v0, v1 = t[j - 1], t[j], v[j - 1], v[j]
    if t0 > 0:
        frac = (math.log(when) - math.log(t0)) / (math.log(t1) - math.log(t0))
    else:
        frac = (when - t0) / (t1 - t0)
    if v0 > 0 and v1 > 0:
        return float(math.exp(math.log(v0) + frac * (math.log(v1) - math.log(v0))))
    return float(_between(v0, v1, frac))


def crossing_time(
    times: np.ndarray,
    values: np.ndarray,
    level: float,
    direction: str = "auto",
    interpolate: bool = True,
) -> float:
    """First time the series crosses ``level`` (NaN if never).

    direction : "below" (first value <= level), "above" (first value >= level) or "auto"
        ("below" when the first finite value is above the level, else "above").
    """
    if not (isinstance(direction, str) and direction in ("below", "above", "auto")):
        raise InputError(f"unknown crossing direction {direction!r}; allowed: below, above, auto")
    level = _real("level", level, "the crossing level, NaN for none")
    interpolate = _checked_flag("interpolate", interpolate)
    t, v = _finite_series(times, values)
    if t.size == 0:
        return math.nan
    if direction == "auto":
        direction = "below" if v[0] > level else "above"
    hits = np.flatnonzero(v <= level if direction == "below" else v >= level)
    if hits.size == 0:
        return math.nan
    j = int(hits[0])
    if not interpolate or j == 0:
        return float(t[j])
    return _interp_time(t[j - 1], t[j], v[j - 1], v[j], level, log_value=True)


def lead_time(
    times: np.ndarray,
    fn: np.ndarray,
    onset: float,
    level: float,
    direction: str = "auto",
    interpolate: bool = True,
) -> float:
    """Onset time minus the first time fn crosses ``level`` (NaN if either is missing)."""
    onset = _real("onset", onset, "the onset time, NaN or inf for none")
    cross = crossing_time(times, fn, level, direction, interpolate)
    return onset - cross if math.isfinite(onset) and math.isfinite(cross) else math.nan


def _check_vanish_tol(vanish_tol: float) -> None:
    """Refuse a vanishing tolerance that is not a number in [0, 1)."""
    if not (is_finite_number(vanish_tol) and 0 <= vanish_tol < 1):
        raise InputError(f"vanish_tol must be a number in [0, 1) (a run is vanishing when its "
                         f"final fn < vanish_tol x its largest fn; 0 turns the rule off), "
                         f"got {vanish_tol!r}")


def is_vanishing(fn: np.ndarray, vanish_tol: float = 1e-3) -> bool:
    """True when the last finite fn is below ``vanish_tol`` times the largest fn, or when fn is
    0 throughout; ``vanish_tol`` = 0 turns the rule off (always False)."""
    _check_vanish_tol(vanish_tol)
    if vanish_tol <= 0:
        return False
    series = _float_series("fn", fn).reshape(1, -1)
    return bool(are_vanishing(series, vanish_tol)[0])  # one rule for one series and many


def are_vanishing(fn: np.ndarray, vanish_tol: float = 1e-3) -> np.ndarray:
    """:func:`is_vanishing` of each series of ``fn`` (R, T); returns (R,) bools."""
    _check_vanish_tol(vanish_tol)
    fn = _float_series("fn", fn)
    if fn.ndim != 2:
        raise InputError(f"are_vanishing takes fn series as an (R, T) array, got shape "
                         f"{fn.shape}")
    finite = np.isfinite(fn)
    if vanish_tol <= 0 or fn.shape[1] == 0:
        return np.zeros(fn.shape[0], dtype=bool)
    peak = np.where(finite, fn, -np.inf).max(axis=1)
    last = fn[np.arange(fn.shape[0]), fn.shape[1] - 1 - finite[:, ::-1].argmax(axis=1)]
    return finite.any(axis=1) & ((peak <= 0) | (last < vanish_tol * peak))


def onset_table(
    trajectories: pd.DataFrame,
    metric: str = "nc1_trace",
    threshold: float = 0.01,
    stay: int = 1,
    interpolate: bool = True,
    fn_column: str = "fn",
    time_column: str = "time",
    group: str = "run_id",
    vanish_tol: float = SolverSpec.vanish_tol,
) -> pd.DataFrame:
    """Onset time and fn at onset for each run of a long-format trajectory table.

    A run whose fn vanishes (its last finite fn below ``vanish_tol`` x its largest fn over
    the table's records, :func:`is_vanishing`) has no onset: ``onset_time`` and
    ``fn_at_onset`` are NaN and ``vanishing`` is True, as in the simulator's run table.
    ``vanish_tol`` defaults to the simulator's (``SolverSpec.vanish_tol``); pass a run's own
    value if it was changed, or 0 to turn the rule off. The simulator also counts the final
    state, which is the last record of a run that reached ``t_end``; a run that stopped early
    (``max_steps``, ``diverged``, ``stalled``) may differ, and the simulator keeps the onset
    of a diverged or stalled run: its run table is the reference for those.

    Returns a frame indexed by ``group`` with columns ``onset_time``, ``fn_at_onset`` and
    ``vanishing``, one row per run in the order of the runs' first records (the run table's
    order for a table from ``simulate``; no rows for a table without records).
    """
    missing = [c for c in (group, time_column, metric, fn_column) if c not in trajectories]
    if missing:
        raise InputError(f"trajectory table lacks column(s) {', '.join(missing)}")
    _check_vanish_tol(vanish_tol)
    threshold = _checked_rule(threshold, stay)  # checked also for a table without runs
    interpolate = _checked_flag("interpolate", interpolate)
    for name in dict.fromkeys((time_column, metric, fn_column)):
        _column(trajectories, name)
    rows = []
    for run_id, part in trajectories.groupby(group, sort=False):
        part = part.sort_values(time_column, kind="stable")  # keeps equal times in order
        fn = _column(part, fn_column)
        when, fn_on = onset_and_fn(_column(part, time_column), _column(part, metric), fn,
                                   threshold, stay, interpolate)
        vanishing = is_vanishing(fn, vanish_tol)
        if vanishing:  # a crossing while every norm vanishes is no onset
            when = fn_on = math.nan
        rows.append({group: run_id, "onset_time": when, "fn_at_onset": fn_on,
                     "vanishing": vanishing})
    return pd.DataFrame(rows, columns=[group, *ONSET_COLUMNS]).set_index(group)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` of a trajectory table as float64; :class:`InputError` naming it if it
    holds anything but numbers (text, say)."""
    try:
        return table[name].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"trajectory column {name!r} must hold numbers (NaN for a missing "
                         f"value), got {table[name].dtype}: {err}") from None
