"""Probe tests (mutation-driven) of the numeric option values, the simulator's batching and
the study's per-run helpers: each pins a behaviour no other test caught a change of."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.flow.simulate import _batches
from ncsim.params import MAX_RANGE_COUNT, parse_values
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.study.compute import _below_at_switch, _fn_at, _segment_records


# ----------------------------------------------------------------------------- params
@pytest.mark.parametrize("text", ["1e-3...1e-1:3", "1...10:2", "0.1...1:4"])
def test_three_dots_are_a_malformed_range_not_a_decimal_point(text):
    """``lo...hi:n`` is refused (not read as lo .. .hi)."""
    with pytest.raises(InputError, match=r"--x: malformed range .*lo\.\.hi:count"):
        parse_values(text, "--x")


def test_a_log_range_of_more_than_the_maximum_count_is_refused():
    """A range with count = MAX_RANGE_COUNT + 1 is refused before it is built."""
    with pytest.raises(InputError, match=rf"count >= 1 \(at most {MAX_RANGE_COUNT}\)"):
        parse_values(f"1..10:{MAX_RANGE_COUNT + 1}", "--x")


def test_a_log_range_of_exactly_the_maximum_count_is_accepted():
    """count = MAX_RANGE_COUNT itself is allowed and gives that many values."""
    values = parse_values(f"1..10:{MAX_RANGE_COUNT}", "--x")
    assert len(values) == MAX_RANGE_COUNT
    assert values[0] == 1.0 and values[-1] == pytest.approx(10.0, rel=1e-14)


# ----------------------------------------------------------------------------- batching
def _spec(loss: str, seed: int) -> RunSpec:
    model = ModelSpec(kind="ufm", loss=loss, bias="none", classes=2, per_class=2, dim=3)
    return RunSpec(model=model, reg=Regularization(lambda_w=1e-2, lambda_h=1e-2),
                   init=InitSpec(scale=0.3, seed=seed), solver=SolverSpec(t_end=1.0, records=4))


def test_batches_group_by_structure_and_cut_each_group_to_max_batch():
    """Runs of one batch key are grouped in input order and cut into chunks of max_batch."""
    losses = ["mse", "ce", "mse", "mse", "ce", "mse", "mse"]
    specs = [_spec(loss, i) for i, loss in enumerate(losses)]
    assert _batches(specs, 2) == [[0, 2], [3, 5], [6], [1, 4]]
    assert _batches(specs, 1) == [[i] for i in (0, 2, 3, 5, 6, 1, 4)]
    assert _batches(specs, 4096) == [[0, 2, 3, 5, 6], [1, 4]]


# ----------------------------------------------------------------------------- study helpers
def _solver_spec(records: int) -> SimpleNamespace:
    return SimpleNamespace(solver=SolverSpec(t_end=1e4, records=records, t_first=1.0))


def test_segment_records_rounds_the_log_time_share_to_the_nearest_record():
    """n1 = round(records * frac): 20 records, frac = 0.53 gives 11 (not 10)."""
    assert _segment_records(_solver_spec(20), 10 ** 2.12) == 11
    assert _segment_records(_solver_spec(20), 10 ** 1.88) == 9  # 9.4 -> 9


def test_segment_records_keeps_its_floor_and_cap():
    """At least min(8, records // 2) in the first segment and as many left for the second."""
    assert _segment_records(_solver_spec(20), 1.5) == 8
    assert _segment_records(_solver_spec(20), 9e3) == 12
    assert _segment_records(_solver_spec(3), 100.0) == 2
    assert _segment_records(_solver_spec(10), 1.5) == 5
    assert _segment_records(_solver_spec(10), 9e3) == 5


def _log(phase1_last: float) -> pd.DataFrame:
    return pd.DataFrame({"time": [1.0, 2.0, 3.0, 4.0], "phase": [1, 1, 2, 2],
                         "nc1": [5.0, phase1_last, 0.05, 0.01]})


def test_below_at_switch_needs_phase_one_strictly_below_the_threshold():
    """Phase 1 ending at the threshold itself is not 'already below' (strict <)."""
    assert _below_at_switch(_log(0.09), "nc1", 0.1, 3.0) is True
    assert _below_at_switch(_log(0.1), "nc1", 0.1, 3.0) is False
    assert _below_at_switch(_log(0.09), "nc1", 0.1, 4.0) is False  # onset later in phase 2


def test_below_at_switch_reads_the_last_finite_phase_one_record():
    """A NaN last phase-1 record is skipped: the last finite one decides."""
    log = pd.DataFrame({"time": [1.0, 2.0, 3.0, 4.0], "phase": [1, 1, 1, 2],
                        "nc1": [5.0, 0.05, math.nan, 0.01]})
    assert _below_at_switch(log, "nc1", 0.1, 4.0) is True
    assert _below_at_switch(log.iloc[:3], "nc1", 0.1, 4.0) is False  # no phase 2


def test_fn_at_takes_the_record_after_the_rescaling_at_that_epoch():
    """Two records at the intervention epoch (before, after the rescale): the last one."""
    log = pd.DataFrame({"time": [1.0, 2.0, 2.0, 3.0], "fn": [1.0, 4.0, 9.0, 2.0]})
    assert _fn_at(log, 2) == 9.0
    assert _fn_at(log, 3) == 2.0
    assert math.isnan(_fn_at(log, 5))
    assert math.isnan(_fn_at(log, None))
