"""Stacked (vmap) training of several seeds equals separate trainings."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.io import read_table
from ncsim.validate.cli import validate
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import Phase, TrainConfig, train


def _config() -> TrainConfig:
    phases = (Phase("ce", 2, "adam", 1e-3, 1e-3, batch_size=32),
              Phase("mse", 2, "sgd", 0.05, 1e-3, batch_size=32, decay_last=2))
    return TrainConfig(depth=2, width=32, phases=phases, nc_every=1)


def test_stacked_equals_separate_trainings():
    """The vectorised loop (what ``train(seeds=...)`` runs on an accelerator) follows each
    seed's separate training up to the rounding of the batched products."""
    data = load_dataset("digits", per_class=10, seed=0)
    config = _config()
    seeds = [0, 1, 2]
    runs = train_stacked(config, data, seeds)
    assert len(runs) == 3 and [r.config.seed for r in runs] == seeds
    for seed, run in zip(seeds, runs, strict=True):
        alone = train(dataclasses.replace(config, seed=seed), data)
        for (name, p), (name2, q) in zip(alone.model.named_parameters(),
                                         run.model.named_parameters(), strict=True):
            assert name == name2
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        for col in ("loss", "fn", "nc1_trace", "accuracy"):
            assert run.log[col].tolist() == pytest.approx(alone.log[col].tolist(), rel=1e-4)
    assert runs[0].log.fn.iloc[0] != runs[1].log.fn.iloc[0]


def test_seeds_on_the_cpu_train_one_after_another_exactly():
    """On the CPU ``train(seeds=...)`` runs the seeds one after another: each seed's log is
    its separate training's, bit for bit (the vectorised loop is slower there)."""
    data = load_dataset("digits", per_class=10, seed=0)
    config = _config()
    result = train(config, data, seeds=[3, 1])
    assert [r.config.run_id for r in result.runs] == ["run_s3", "run_s1"]
    assert list(result.log.run_id.unique()) == ["run_s3", "run_s1"]
    for seed, run in zip((3, 1), result.runs, strict=True):
        alone = train(dataclasses.replace(config, seed=seed, run_id=f"run_s{seed}"), data)
        pd.testing.assert_frame_equal(run.log, alone.log)
    assert result.model is result.runs[0].model


def test_stacked_training_takes_the_reference_steps():
    """With ``reference_train_size`` the vectorised loop trains the rescaled protocol, as
    ``train`` does: 100 digits at batch 32 (4 steps per epoch) against a reference of 200 (7
    steps): 2 epochs become round(14 / 4) = 4 (rounded half to even from 3.5) in both phases,
    8 epochs and 32 steps in all, a record every round(1 x 4 / 2) = 2 epochs."""
    data = load_dataset("digits", per_class=10, seed=0)
    config = dataclasses.replace(_config(), reference_train_size=200)
    (run,) = train_stacked(config, data, [0])
    assert [p.epochs for p in run.config.phases] == [4, 4]
    assert run.config.reference_train_size is None
    assert list(run.log["time"]) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert int(run.log["steps"].iloc[-1]) == 32


def test_stacked_rejects_batchnorm_and_duplicates():
    data = load_dataset("gaussian", per_class=4, classes=3, dim=4)
    config = TrainConfig(depth=1, width=8, phases=(Phase("ce", 1, batch_size=4),))
    with pytest.raises(InputError, match="distinct"):
        train(config, data, seeds=[1, 1])
    with pytest.raises(InputError, match="resnet20"):
        train(dataclasses.replace(config, arch="resnet20"), data, seeds=[0, 1])


def test_cli_train_seeds_writes_one_log(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "gaussian", "--per-class", "6", "--epochs", "2,2",
            "--depth", "1", "--width", "8", "--batch-size", "16", "--nc-every", "2",
            "--out", str(out), "--no-progress", "--format", "json"]
    res = CliRunner().invoke(validate, args + ["--seeds", "0,1,2"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2]
    log = read_table(out / "log.parquet")
    assert sorted(set(log.run_id)) == ["mlp_gaussian_s0", "mlp_gaussian_s1", "mlp_gaussian_s2"]
    assert sorted(set(log.seed)) == [0, 1, 2] and len(log) == 3 * 3
    assert (out / "training.png").exists() and not (out / "checkpoints").exists()
    single = CliRunner().invoke(validate, args + ["--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    one = read_table(tmp_path / "one" / "log.parquet")
    assert one.fn.tolist() == pytest.approx(log[log.seed == 0].fn.tolist(), rel=1e-4)
    for bad, word in ((["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "distinct"),
                      (["--seeds", "0,1", "--amp"], "--amp")):
        res = CliRunner().invoke(validate, args + bad)
        assert res.exit_code == 2 and word in res.stderr, res.output
