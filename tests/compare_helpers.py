"""The tiny two-phase training run that the network-vs-surrogate comparison tests share.

A Gaussian mixture (K = 3, input dimension 4, 4 samples per class), an MLP with one hidden
layer of width 5; CE with Adam, then MSE with heavy-ball SGD (lr 0.05, momentum 0.9, weight
decay 1e-2). Its log is replaced by hand-built logs whose onset, fn* and times are known: three
phase-1 records, then phase-2 records at lr x steps = 1/16 ... 1/4 after the switch (flow time
0.5), i.e. network time 0.625 ... 2.5 with momentum 0.9; nc1_trace first below 0.01 at the
third phase-2 record. The surrogates use n = 2 per class.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ncsim.io import write_table
from ncsim.validate.data import load_dataset
from ncsim.validate.train import Phase, TrainConfig, train

K, WD, WIDTH, N_PER = 3, 1e-2, 5, 2
DATA_ARGS = {"name": "gaussian", "per_class": 4, "seed": 0, "classes": K, "dim": 4}
# Fast surrogate settings: a short horizon, no collapse at threshold 0.01.
QUICK = {"per_class": N_PER, "horizon": 2.0, "wd_horizon": 1e-3, "max_steps": 500}

PHASE1 = {"time": [0.0, 1.0, 2.0], "flow_time": [0.0, 0.25, 0.5], "nc1_trace": [0.9, 0.8, 0.7],
          "fn": [5.0, 4.0, 3.5]}
PHASE2_TIME = [3.0, 4.0, 5.0, 6.0]
PHASE2_FLOW = [0.5625, 0.625, 0.6875, 0.75]
NC1 = [0.5, 0.02, 0.008, 0.004]  # first below 0.01: the third record
FN = [3.0, 2.5, 2.0, 1.8]


def tiny_log(run_id: str = "tiny", nc1=NC1, fn=FN, flow=PHASE2_FLOW) -> pd.DataFrame:
    """A training log of one run: three phase-1 records, then the phase-2 records."""
    p1 = pd.DataFrame({"run_id": run_id, "phase": 1, **PHASE1})
    p2 = pd.DataFrame({"run_id": run_id, "phase": 2, "time": PHASE2_TIME,
                       "flow_time": list(flow), "nc1_trace": list(nc1), "fn": list(fn)})
    return pd.concat([p1, p2], ignore_index=True)


def train_two_phase(out: Path, data_args: dict, run_id: str, epochs: tuple[int, int],
                    momentum: float = 0.9, weight_decay: float = WD, **network) -> Path:
    """Train a two-phase run into ``out`` (checkpoints/ and log.parquet); returns ``out``.

    Phase 1: CE with Adam (lr 1e-2, no decay) for ``epochs[0]`` epochs; phase 2: MSE with
    heavy-ball SGD (lr 0.05, ``momentum``, ``weight_decay``) for ``epochs[1]``; NC records every
    epoch, full batches; ``network``: the network's TrainConfig fields (arch, depth, width)."""
    config = TrainConfig(
        activation="relu", **network,
        phases=(Phase("ce", epochs[0], "adam", 1e-2, 0.0, schedule="constant", batch_size=100),
                Phase("mse", epochs[1], "sgd", 0.05, weight_decay, momentum=momentum,
                      nesterov=False, schedule="constant", batch_size=100)),
        nc_every=1, checkpoint_dir=str(out / "checkpoints"), run_id=run_id,
        data_args=dict(data_args), eval_test=False)
    write_table(train(config, load_dataset(**data_args)).log, out / "log.parquet")
    return out


def train_tiny_run(out: Path) -> Path:
    """Train the tiny run into ``out`` (checkpoints/ and log.parquet); returns ``out``."""
    return train_two_phase(out, DATA_ARGS, "tiny", (2, 3), arch="mlp", depth=1, width=WIDTH)


def edit_checkpoint(path: Path, edit: Callable[[dict], None]) -> None:
    """Apply ``edit`` to the config recorded in the checkpoint at ``path``, in place."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    edit(state["config"])
    torch.save(state, path)


def copy_run(tiny_run: Path, dst: Path, log: pd.DataFrame | None = None,
             edit: Callable[[dict], None] | None = None) -> Path:
    """A copy of the tiny run under ``dst`` with ``log`` (default :func:`tiny_log`) as its log
    and ``edit`` applied to the start checkpoint's config."""
    run = dst / "run"
    shutil.copytree(tiny_run, run)
    write_table(tiny_log() if log is None else log, run / "log.parquet")
    if edit is not None:
        edit_checkpoint(run / "checkpoints" / "phase1_end.pt", edit)
    return run
