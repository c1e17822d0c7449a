"""Dense records at the start of every phase (``TrainConfig.nc_dense``): the transient after a
phase switch recorded at every epoch, on top of the ``nc_every`` grid."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from cli_helpers import error_line, invoke, tiny_train_args

from ncsim.errors import InputError
from ncsim.io import read_table
from ncsim.study.spec import RunDesc, train_config
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import Phase, TrainConfig, preset, train


def _recorded(phases: list[int], nc_every: int, nc_dense: int,
              intervention: int | None = None) -> list[int]:
    """The recorded epochs, listed phase by phase: 0, the grid, each phase's end and its first
    ``nc_dense`` epochs (capped at the phase), and the intervention epoch."""
    epochs = {0, *range(nc_every, sum(phases) + 1, nc_every)}
    start = 0
    for length in phases:
        epochs |= set(range(start + 1, start + min(nc_dense, length) + 1))
        epochs.add(start + length)
        start += length
    if intervention is not None:
        epochs.add(intervention)
    return sorted(epochs)


@pytest.mark.parametrize(("phases", "nc_every", "nc_dense", "intervention"), [
    ([10, 20], 7, 3, None), ([10, 20], 7, 0, None), ([2, 5], 50, 4, None),
    ([10, 20], 7, 3, 15), ([5, 5, 5], 4, 1, None), ([30], 10, 30, None),
])
def test_records_epoch_is_the_grid_the_phase_ends_and_each_phase_start(phases, nc_every,
                                                                        nc_dense, intervention):
    """Phases of 10 and 20 epochs, a record every 7, the first 3 of each phase dense: epochs
    1-3, 7, 10 (end), 11-13, 14, 21, 28, 30 (end); a dense window longer than its phase stops
    at the phase's end; the intervention epoch is recorded too."""
    config = TrainConfig(phases=tuple(Phase(epochs=e) for e in phases), nc_every=nc_every,
                         nc_dense=nc_dense, intervention_epoch=intervention,
                         intervention_alpha=1.0).validate()
    got = [0] + [e for e in range(1, sum(phases) + 1) if config.records_epoch(e)]
    assert got == _recorded(phases, nc_every, nc_dense, intervention)
    if (phases, nc_every, nc_dense) == ([10, 20], 7, 3):
        want = [0, 1, 2, 3, 7, 10, 11, 12, 13, 14, 21, 28, 30]
        assert got == sorted({*want, *([intervention] if intervention else [])})


def _gaussian():
    return load_dataset("gaussian", per_class=10, test_per_class=2, classes=3, dim=4, seed=0)


def test_training_logs_the_dense_epochs_and_the_same_numbers_at_the_others():
    """A 3 + 4 epoch training with a record every 3 epochs and the first 2 of each phase dense
    logs epochs 0, 1, 2, 3, 4, 5, 6, 7; the records it shares with the plain grid (0, 3, 6, 7)
    are the very numbers of a training without dense records (a record does not touch the
    network, the optimiser or the batch order)."""
    phases = (Phase("ce", 3, batch_size=8), Phase("mse", 4, batch_size=8))
    config = TrainConfig(depth=1, width=8, phases=phases, nc_every=3, nc_dense=2,
                         eval_test=False)
    dense = train(config, _gaussian()).log
    assert list(dense["time"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert list(dense["phase"]) == [1, 1, 1, 1, 2, 2, 2, 2]
    plain = train(dataclasses.replace(config, nc_dense=0), _gaussian()).log
    assert list(plain["time"]) == [0.0, 3.0, 6.0, 7.0]
    shared = dense[dense["time"].isin(plain["time"])].reset_index(drop=True)
    numeric = [c for c in plain.columns if plain[c].dtype.kind == "f"]
    np.testing.assert_array_equal(shared[numeric].to_numpy(), plain[numeric].to_numpy())


def test_stacked_training_records_the_same_epochs():
    """The stacked trainer (several seeds at once) follows the same record rule."""
    phases = (Phase("ce", 3, batch_size=8), Phase("mse", 4, batch_size=8))
    config = TrainConfig(depth=1, width=8, phases=phases, nc_every=3, nc_dense=2,
                         eval_test=False)
    for result in train_stacked(config, _gaussian(), [0, 1]):
        assert list(result.log["time"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_step_matching_scales_the_dense_window_with_the_grid():
    """On the digits the mlp protocol's 300 MSE epochs become 11750 (x 39.17): a dense window
    of 5 epochs becomes round(5 x 11750 / 300) = 196, the same steps; 0 stays 0."""
    config = preset("mlp", reference_train_size=60_000, nc_dense=5).validate()
    assert config.for_train_size(1438).nc_dense == 196
    assert preset("mlp", reference_train_size=60_000).for_train_size(1438).nc_dense == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_bad_dense_window_is_refused_by_name(bad):
    with pytest.raises(InputError, match="nc_dense must be an integer >= 0"):
        TrainConfig(nc_dense=bad).validate()


def test_a_study_passes_the_dense_window_and_keeps_older_ids():
    """A trained run's ``nc_dense`` reaches its configuration and changes its id; 0 (or none
    given) keeps the ids of stores written before the setting (the paper's MLP on the
    digits, seed 0: 85139d9083cd)."""
    params = {"dataset": "digits", "preset": "mlp", "seed": 0}
    assert RunDesc("digits", "trained", {**params, "nc_dense": 0}).run_id == "85139d9083cd"
    dense = {**params, "nc_dense": 20}
    assert train_config(dense).nc_dense == 20
    assert RunDesc("digits", "trained", dense).run_id != "85139d9083cd"


def test_the_train_command_takes_the_dense_window(tmp_path, no_figures):
    """``--nc-dense 2`` with ``--nc-every 3`` over epochs 3,4: the log holds every epoch and
    run.json the setting; a negative window is refused in one line that names it."""
    out = tmp_path / "run"
    args = tiny_train_args(out, "3,4", 3)
    result = invoke([*args, "--nc-dense", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["config"]["nc_dense"] == 2
    assert list(read_table(out / "log.parquet")["time"]) == [0.0, 1, 2, 3, 4, 5, 6, 7]
    line = error_line(invoke([*args[:-1], str(tmp_path / "bad"), "--nc-dense", "-1"]))
    assert "nc_dense must be an integer >= 0" in line
