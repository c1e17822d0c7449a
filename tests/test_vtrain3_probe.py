"""Third mutation probe of ncsim.validate.train: the seed's upper bound, a step milestone at
epoch 0, the log's time column type and summarize's default threshold and phase-2 reading."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from data_helpers import gaussian_dataset

from ncsim.errors import InputError
from ncsim.validate.train import TRAIN_SEED_LIMIT, Phase, TrainConfig, summarize, train


def test_seed_exactly_2_to_the_31_is_refused():
    """The seed range is [0, 2^31): 2^31 itself is refused, 2^31 - 1 accepted."""
    assert TRAIN_SEED_LIMIT == 2**31
    with pytest.raises(InputError,
                       match=r"seed must be an integer in \[0, 2\^31\), got 2147483648"):
        TrainConfig(seed=2**31).validate()
    assert TrainConfig(seed=2**31 - 1).validate().seed == 2**31 - 1


@pytest.mark.parametrize(("warmup", "used"), [
    (0, [0.1, 0.1, 0.05, 0.05]),
    (1, [0.05, 0.1, 0.05, 0.05]),
])
def test_a_milestone_at_epoch_zero_is_valid_and_applies_from_the_first_epoch(warmup, used):
    """Milestones are epochs >= 0 from the phase start: milestone 0 multiplies the lr by gamma
    from the first epoch on (0.2 x 0.5 = 0.1, then 0.05 from milestone 2), with or without a
    warm-up (warm-up 1: epoch 0 at half of it). lr column: the next epoch's lr; flow_time: the
    partial sums of the lrs used (one full-batch step per epoch)."""
    phase = Phase("ce", 4, "sgd", 0.2, 0.0, momentum=0.0, schedule="step", milestones=(0, 2),
                  gamma=0.5, batch_size=12, warmup=warmup)
    phase.validate()
    log = train(TrainConfig(depth=1, width=8, phases=(phase,), nc_every=1, eval_test=False),
                gaussian_dataset()).log
    np.testing.assert_allclose(log["lr"], used + [0.05], rtol=1e-12)
    np.testing.assert_allclose(log["flow_time"], [0.0, *np.cumsum(used)], rtol=1e-12)
    assert log["steps"].tolist() == [0, 1, 2, 3, 4]


def test_log_time_is_a_float_column_of_epochs():
    """The log's time column holds floats (the trajectory schema's time), time_unit 'epoch'."""
    phase = Phase("ce", 2, "adam", 1e-2, 0.0, batch_size=5)
    log = train(TrainConfig(depth=1, width=8, phases=(phase,), nc_every=1, eval_test=False),
                gaussian_dataset()).log
    assert log["time"].dtype == np.float64
    assert log["time"].tolist() == [0.0, 1.0, 2.0]
    assert log["time_unit"].tolist() == ["epoch"] * 3
    assert log["steps"].tolist() == [0, 3, 6]  # 12 samples at batch 5: 3 steps per epoch


def _log(nc1, phases):
    n = len(nc1)
    return pd.DataFrame({"time": np.arange(n, dtype=float), "phase": phases,
                         "fn": np.linspace(1.0, 2.0, n), "accuracy": np.ones(n),
                         "nc1_trace": nc1})


def test_summarize_default_threshold_is_one_hundredth():
    """The default onset threshold is 0.01: a phase-2 record at 0.015 is no onset, the next
    one at 0.009 is (threshold 0.02 would take the 0.015 record)."""
    log = _log([0.5, 0.2, 0.015, 0.009, 0.005], [1, 1, 2, 2, 2])
    out = summarize(log)
    assert out["onset_epoch"] == 3.0
    assert summarize(log, threshold=0.02)["onset_epoch"] == 2.0
    assert out["nc1_start_phase2"] == 0.015


def test_summarize_phase2_start_ignores_later_phases():
    """nc1_start_phase2 reads phase 2 only: with every phase-2 metric empty (below the
    accuracy gate) it is NaN even when a phase-3 record is finite."""
    log = _log([0.5, np.nan, np.nan, 0.3, 0.2], [1, 2, 2, 3, 3])
    out = summarize(log)
    assert math.isnan(out["nc1_start_phase2"])
    assert out["final_accuracy"] == 1.0
