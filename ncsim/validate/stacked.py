"""Several seeds of one network trained at once (``torch.func`` model ensembling).

The S copies of the network are stacked with :func:`torch.func.stack_module_state` into
parameters of shape (S, *shape); one training step evaluates all copies with
``torch.vmap(functional_call)`` on their own batches, and one optimiser (the phase's, see
:func:`ncsim.validate.train.make_optimizer`) updates the stacked tensors. SGD, Adam and AdamW act
element-wise, the copies do not share any parameter and the loss is the sum of the per-copy
losses, so every copy follows exactly the trajectory of its separate training (same seed: same
initialisation, same batch order), up to float rounding of the batched matrix products.

Limitations: networks without BatchNorm (MLP, CNN), no intervention, no checkpoints, no mixed
precision. ``train(config, data, seeds=...)`` uses it on accelerators; on the CPU, where the
batched products measured slower than separate ones, it trains the seeds one after another
(same limitations, so that a configuration behaves alike on every device).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from ncsim.errors import is_integer, require
from ncsim.validate.data import Dataset
from ncsim.validate.train import (
    BATCH_ORDER_OFFSET,
    TRAIN_SEED_LIMIT,
    Phase,
    TrainConfig,
    TrainResult,
    build_model,
    decayed_names,
    log_row,
    loss_fn,
    make_optimizer,
    make_scheduler,
    nc_record,
    require_trainable,
)


def _unstack(base: nn.Module, params: dict[str, torch.Tensor], i: int) -> nn.Module:
    """Copy of ``base`` holding copy ``i`` of the stacked parameters."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name][i])
    return model


def check_seeds(config: TrainConfig, seeds: Sequence[int]) -> list[int]:
    """Validate ``config`` for a training of several ``seeds`` (what stacking supports, on
    every device, so that a run that works on the CPU works on a GPU); returns the seeds."""
    config.validate()
    require(not isinstance(seeds, (str, bytes)) and np.iterable(seeds),
            f"seeds must be a list of integers (several seeds), got {seeds!r}; for one seed "
            "give [seed]")
    seeds = list(seeds)
    require(all(is_integer(s) and 0 <= s < TRAIN_SEED_LIMIT for s in seeds),
            f"seeds must be integers in [0, 2^31), got {seeds!r}")
    seeds = [int(s) for s in seeds]
    require(len(seeds) >= 1 and len(set(seeds)) == len(seeds),
            f"give distinct seeds, got {seeds}")
    require(config.arch in ("mlp", "cnn"),
            f"stacked training supports the mlp and cnn networks, not {config.arch!r}")
    require(config.intervention_epoch is None and config.checkpoint_dir is None and not config.amp,
            "stacked training has no intervention, checkpoints or mixed precision")
    return seeds


def train_stacked(config: TrainConfig, data: Dataset, seeds: Sequence[int],
                  progress: bool = False) -> list[TrainResult]:
    """Train ``config`` once per seed in ``seeds``, all seeds in one vectorised loop.

    Parameters
    ----------
    config : the run (its ``seed`` is replaced by each of ``seeds``; ``run_id`` gets ``_s{seed}``;
        a ``reference_train_size`` is resolved for ``data`` as :func:`~ncsim.validate.train.train`
        does).
    data : training data (shared by the seeds; each seed has its own batch order).
    seeds : S >= 1 distinct seeds.

    Returns
    -------
    list of S :class:`TrainResult`, in the order of ``seeds``; each log is the one that
    :func:`ncsim.validate.train.train` writes for that seed.
    """
    import dataclasses

    from tqdm.auto import tqdm

    seeds = check_seeds(config, seeds)
    config = config.for_train_size(int(data.x_train.shape[0]))
    require_trainable(config, data)
    device = torch.device(config.device)
    data = data.to(device)
    configs = [dataclasses.replace(config, seed=s, run_id=f"{config.run_id}_s{s}")
               for s in seeds]
    models = [build_model(c, data) for c in configs]
    base = copy.deepcopy(models[0]).to("meta")
    params, buffers = stack_module_state(models)
    gens = [torch.Generator().manual_seed(s + BATCH_ORDER_OFFSET) for s in seeds]
    n = data.x_train.shape[0]
    S = len(seeds)
    rows: list[list[dict[str, Any]]] = [[] for _ in seeds]
    epoch, steps, flow_time = 0, 0, 0.0

    def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor
                ) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched = torch.vmap(forward)

    def record(phase_no: int, phase: Phase, lr: float) -> None:
        for i, c in enumerate(configs):
            model = _unstack(models[i], params, i)
            values = nc_record(model, data, phase.loss, config.record_batch, config.eval_test)
            rows[i].append(log_row(c, epoch, phase_no, phase, steps, flow_time, lr, values))

    bar = tqdm(total=config.total_epochs, disable=not progress, file=sys.stderr,
               desc=f"{config.run_id} x{S}", leave=False)
    for phase_no, phase in enumerate(config.phases, start=1):
        opt = make_optimizer(list(params.items()), phase,
                             decayed_names(models[0], phase.decay_last))
        sched = make_scheduler(opt, phase)
        if epoch == 0:
            record(phase_no, phase, opt.param_groups[0]["lr"])  # the lr of epoch 1
        for _ in range(phase.epochs):
            lr = opt.param_groups[0]["lr"]
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
            for start in range(0, n, phase.batch_size):
                idx = perms[:, start:start + phase.batch_size]  # (S, B)
                out = batched(params, buffers, data.x_train[idx])  # (S, B, K)
                y = data.y_train[idx]
                loss = sum(loss_fn(out[i].float(), y[i], phase.loss) for i in range(S))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                flow_time += lr
            sched.step()
            epoch += 1
            bar.update(1)
            if config.records_epoch(epoch):
                record(phase_no, phase, opt.param_groups[0]["lr"])
    bar.close()
    out: list[TrainResult] = []
    for i, c in enumerate(configs):
        out.append(TrainResult(pd.DataFrame(rows[i]), _unstack(models[i], params, i), c, []))
    return out
