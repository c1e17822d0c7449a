"""Step-matched training: ``reference_train_size`` rescales a protocol counted in epochs of one
training-set size to the optimiser steps it takes there, on the data actually given."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from cli_helpers import error_line, invoke, tiny_train_args

from ncsim.errors import InputError
from ncsim.io import read_table
from ncsim.study.spec import RunDesc, load_study, train_config
from ncsim.validate.data import load_dataset
from ncsim.validate.train import Phase, TrainConfig, preset, train

MNIST_TRAIN = 60_000


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimiser steps of one epoch: the last batch may be partial."""
    return -(-n // batch)


def test_paper_mlp_protocol_on_the_digits_takes_mnists_steps():
    """The digits keep 1,438 training samples: 6 steps per epoch at batch 256, against 235 on
    60,000 samples. 200 CE epochs become round(200 x 235 / 6) = 7833 (46,998 steps against
    47,000), 300 MSE epochs round(300 x 235 / 6) = 11750 (70,500 steps, exactly); nc_every 10
    becomes round(10 x 11750 / 300) = 392 (the same ~50 records per phase)."""
    config = preset("mlp", reference_train_size=MNIST_TRAIN).validate()
    out = config.for_train_size(1438)
    assert [p.epochs for p in out.phases] == [7833, 11750]
    assert out.nc_every == 392
    assert out.reference_train_size is None
    # everything else of the protocol is untouched
    for before, after in zip(config.phases, out.phases, strict=True):
        assert dataclasses.replace(after, epochs=before.epochs) == before
    assert dataclasses.replace(out, phases=config.phases, nc_every=10,
                               reference_train_size=MNIST_TRAIN) == config


@pytest.mark.parametrize("n_train", [1, 100, 1438, 4000, 59_999, 60_000, 60_001, 250_000])
@pytest.mark.parametrize("name", ["mlp", "resnet20"])
def test_every_phase_takes_the_reference_steps_to_within_half_an_epoch(name, n_train):
    """e' x ceil(n / b) lies within half an epoch's steps of e x ceil(n_ref / b) (rounding to
    the nearest whole epoch), and a training set of the reference size is left unchanged."""
    config = preset(name, reference_train_size=MNIST_TRAIN)
    out = config.for_train_size(n_train)
    for before, after in zip(config.phases, out.phases, strict=True):
        target = before.epochs * steps_per_epoch(MNIST_TRAIN, before.batch_size)
        per_epoch = steps_per_epoch(n_train, after.batch_size)
        assert abs(after.epochs * per_epoch - target) <= per_epoch / 2
        scale = after.epochs / before.epochs
        # step milestones stay at the same fraction of the phase, to the nearest epoch
        assert len(after.milestones) == len(before.milestones)
        for m_before, m_after in zip(before.milestones, after.milestones, strict=True):
            assert abs(m_after - m_before * scale) <= 0.5
    if n_train == MNIST_TRAIN:
        assert out == dataclasses.replace(config, reference_train_size=None)


def test_a_step_schedule_keeps_its_milestones_in_steps():
    """ResNet-20's phase 2 (600 epochs, x0.1 at 300 and 450, batch 128) on 8,000 samples
    (63 steps per epoch against 469): round(600 x 469 / 63) = 4467 epochs, milestones
    round(300 x 4467 / 600) = 2234 and round(450 x 4467 / 600) = 3350; in steps 140,742 and
    211,050 against 140,700 and 211,050 on 60,000 samples."""
    config = preset("resnet20", reference_train_size=MNIST_TRAIN).for_train_size(8000)
    phase2 = config.phases[1]
    assert phase2.epochs == 4467 and phase2.milestones == (2234, 3350)
    assert [m * 63 for m in phase2.milestones] == [140_742, 211_050]


def test_warmup_and_checkpoints_and_intervention_move_with_the_phases():
    """Two phases of 2 and 3 epochs, batch 10: on 100 samples (10 steps per epoch) with a
    reference of 1000 (100 steps) every phase is 10x longer. The warm-up of 1 epoch becomes
    10, checkpoint_every 3 becomes 30, nc_every 1 becomes 10, and the intervention epoch 3
    (one epoch into phase 2) becomes 20 + 10 = 30; a phase end stays a phase end."""
    phases = (Phase("ce", 2, batch_size=10, warmup=1), Phase("mse", 3, batch_size=10))
    base = TrainConfig(phases=phases, nc_every=1, checkpoint_every=3, intervention_epoch=3,
                       intervention_alpha=2.0, reference_train_size=1000).validate()
    out = base.for_train_size(100)
    assert [p.epochs for p in out.phases] == [20, 30]
    assert [p.warmup for p in out.phases] == [10, 0]
    assert (out.nc_every, out.checkpoint_every, out.intervention_epoch) == (10, 30, 30)
    for epoch, moved in [(0, 0), (1, 10), (2, 20), (4, 40), (5, 50)]:
        config = dataclasses.replace(base, intervention_epoch=epoch)
        assert config.for_train_size(100).intervention_epoch == moved
    no_checkpoints = dataclasses.replace(base, checkpoint_every=0).for_train_size(100)
    assert no_checkpoints.checkpoint_every == 0


def test_a_larger_training_set_takes_fewer_epochs_but_never_none():
    """On 10x the reference's samples a 30-epoch phase takes 3 epochs; a 1-epoch phase keeps
    one epoch (it cannot take 0), and nc_every never falls below 1."""
    phases = (Phase("ce", 1, batch_size=10), Phase("mse", 30, batch_size=10))
    config = TrainConfig(phases=phases, nc_every=2, reference_train_size=100)
    out = config.for_train_size(1000)
    assert [p.epochs for p in out.phases] == [1, 3]
    assert out.nc_every == 1


def test_without_a_reference_the_configuration_is_returned_as_it_is():
    config = preset("mlp")
    assert config.for_train_size(17) is config
    resolved = preset("mlp", reference_train_size=MNIST_TRAIN).for_train_size(1438)
    assert resolved.for_train_size(1438) is resolved  # resolved once: never rescaled twice
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved


@pytest.mark.parametrize("bad", [0, -5, 2.5, "60000", True])
def test_a_bad_reference_size_is_refused_by_name(bad):
    with pytest.raises(InputError, match="reference_train_size must be an integer >= 1"):
        preset("mlp", reference_train_size=bad).validate()


@pytest.mark.parametrize("bad", [0, -1, 3.5])
def test_an_empty_training_set_is_refused(bad):
    config = preset("mlp", reference_train_size=MNIST_TRAIN)
    with pytest.raises(InputError, match="at least one sample"):
        config.for_train_size(bad)


def test_training_takes_the_rescaled_epochs_and_steps():
    """A Gaussian mixture of 3 x 10 = 30 training samples at batch 8 (4 steps per epoch) with a
    reference of 120 samples (15 steps): 1 epoch becomes round(15 / 4) = 4 and 2 become
    round(30 / 4) = 8 (rounded half to even from 7.5); the log's last record is at epoch 12
    after 48 steps, its records every round(1 x 8 / 2) = 4 epochs, and the result holds the
    rescaled configuration."""
    data = load_dataset("gaussian", per_class=10, test_per_class=2, classes=3, dim=4, seed=0)
    phases = (Phase("ce", 1, batch_size=8), Phase("mse", 2, batch_size=8))
    config = TrainConfig(depth=1, width=8, phases=phases, nc_every=1, eval_test=False,
                         reference_train_size=120)
    result = train(config, data)
    assert [p.epochs for p in result.config.phases] == [4, 8]
    assert result.config.reference_train_size is None
    assert list(result.log["time"]) == [0.0, 4.0, 8.0, 12.0]
    assert list(result.log["steps"]) == [0, 16, 32, 48]
    assert list(result.log["phase"]) == [1, 1, 2, 2]
    # the same training, written out by hand, gives the same log
    by_hand = dataclasses.replace(config, phases=(dataclasses.replace(phases[0], epochs=4),
                                                  dataclasses.replace(phases[1], epochs=8)),
                                  nc_every=4, reference_train_size=None)
    plain = train(by_hand, data).log
    numeric = [c for c in plain.columns if plain[c].dtype.kind == "f"]
    assert torch.allclose(torch.tensor(plain[numeric].to_numpy()),
                          torch.tensor(result.log[numeric].to_numpy()), rtol=0, atol=0,
                          equal_nan=True)


def test_a_study_passes_the_reference_size_and_keeps_older_ids():
    """A trained run's parameter ``reference_train_size`` reaches its training configuration and
    changes its id; without it the ids are those that stores written before the setting hold
    (the paper's MLP on the digits, seed 0: 85139d9083cd)."""
    params = {"dataset": "digits", "preset": "mlp", "seed": 0}
    assert RunDesc("digits", "trained", params).run_id == "85139d9083cd"
    matched = {**params, "reference_train_size": MNIST_TRAIN}
    assert train_config(matched).reference_train_size == MNIST_TRAIN
    assert RunDesc("digits", "trained", matched).run_id != "85139d9083cd"


STUDY = """
name = "steps"
title = "Steps"
question = "q?"
claim = "c."
analysis = "invariance"

[trained]
dataset = "digits"
preset = "mlp"
reference_train_size = {size}

[[parts]]
name = "digits"
model = "trained"
[parts.grid]
seed = [0, 1]
"""


def test_a_study_file_declares_step_matching(tmp_path):
    path = tmp_path / "steps.toml"
    path.write_text(STUDY.format(size=60000))
    runs = load_study(path).runs()
    assert [r.params["reference_train_size"] for r in runs] == [60000, 60000]
    assert train_config(runs[0].params).for_train_size(1438).phases[1].epochs == 11750
    path.write_text(STUDY.format(size='"many"'))
    with pytest.raises(InputError, match="reference_train_size"):
        load_study(path)


def test_the_train_command_writes_the_rescaled_protocol(tmp_path, no_figures):
    """``--reference-train-size``: 10 classes x 3 Gaussian training samples at batch 8 (4 steps per
    epoch), reference 120 (15 steps): epochs 1,2 become 4,8 (as in the training test above);
    run.json holds the rescaled phases and the log ends at epoch 12 after 48 steps. A size of
    0 is refused in one line that names the setting."""
    out = tmp_path / "run"
    args = tiny_train_args(out, "1,2", 1)
    result = invoke([*args, "--reference-train-size", "120"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "run.json").read_text())["config"]
    assert [p["epochs"] for p in saved["phases"]] == [4, 8]
    assert saved["nc_every"] == 4 and saved["reference_train_size"] is None
    log = read_table(out / "log.parquet")
    assert (log["time"].iloc[-1], log["steps"].iloc[-1]) == (12.0, 48)
    line = error_line(invoke([*args[:-1], str(tmp_path / "bad"), "--reference-train-size",
                              "0"]))
    assert "reference_train_size must be an integer >= 1" in line
