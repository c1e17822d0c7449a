"""Training loop with NC tracking: the paper's two-phase protocol and free configurations.

Protocol presets (arXiv 2604.00230):

- ``mlp``: phase 1 cross-entropy, phase 2 MSE against one-hot targets; each phase a fresh Adam
  (lr 1e-3, coupled L2 ``weight_decay`` 1e-4) with a cosine schedule over that phase
  (200 + 300 epochs, batch 256).
- ``resnet20``: the same two phases with SGD (Nesterov, momentum 0.9, lr 0.1, weight decay 1e-3)
  and a step schedule (x0.1 at epochs 100, 150 of phase 1 and 300, 450 of phase 2; 200 + 600
  epochs, batch 128).

Loss conventions: ``ce`` is ``nn.CrossEntropyLoss`` (mean over the batch); ``mse`` is
``nn.MSELoss`` against one-hot targets (mean over the B x K entries, no 1/2), as the paper's code.

Tracking: every ``nc_every`` epochs, at epoch 0, at the end of every phase and at each of the
first ``nc_dense`` epochs of every phase (:meth:`TrainConfig.records_epoch`), the network is put
in eval mode and the training set is passed in batches through :class:`ncsim.metrics.StreamingNC`
(float64; a second pass gives NC4). One row of the log (trajectory schema, in this order)
holds ``run_id, time (epoch), time_unit, phase, loss``, every NC metric of ``ncsim.metrics``,
``accuracy, test_accuracy, weight_norm, phase_loss, steps, flow_time`` (the sum of the
scheduled lr over all steps so far, i.e. lr x steps at a constant lr, counted from the start of
training, whatever the optimizer. It is not the gradient-flow time when there is momentum: over
a phase trained by SGD with momentum m, the gradient-flow time elapsed is the increase of
flow_time divided by (1 - m) (heavy ball; 10 x at m = 0.9), the time ``ncsim validate compare``
reports from the start of the MSE phase (:func:`flow_time_factor`); Adam steps have none),
``lr, seed`` and the label columns (see :func:`log_row`).
``loss`` is the phase's data loss (no weight decay) and ``accuracy`` the training accuracy, both
from the record's eval-mode pass; ``weight_norm`` is the Euclidean norm of all parameters
together (weights, biases, BatchNorm scales and shifts; no buffers).
``lr`` is the scheduler's learning rate after the record's epoch, the one the next epoch
trains with (at epoch 0 the first epoch's; at the end of a phase the schedule's next value,
0 for a finished cosine). With ``nc_min_accuracy`` the metric columns of
:data:`ncsim.metrics.METRIC_NAMES` (fn included) are left empty (NaN) while the training
accuracy is below it, as in the paper's logs (0.99).

Speed: the data stay as tensors on the device; batches are indexed from a seeded permutation.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError, first_line, is_finite_number, is_integer, require
from ncsim.spec import require_device
from ncsim.validate.data import CORRUPT_PICKLE_ERRORS, Dataset
from ncsim.validate.networks import ACTIVATIONS, ARCHS, HOMOGENEOUS, build_network

LOSSES = ("ce", "mse")
# Default samples per forward pass of an NC record. On the CPU, batches above ~256 run
# convolutions out of cache: one eval pass of ResNet-20 over 1000 Fashion-MNIST images took
# 2.40 s at 4096 and 1.11 s at 256 (MLP-5: 0.33 s and 0.32 s over 10,000 images); an
# accelerator wants large batches.
EVAL_BATCH = {"cpu": 256, "accelerator": 4096}
# The batch order of seed s is drawn from a generator seeded s + BATCH_ORDER_OFFSET (apart from
# the initialisation's seed s).
BATCH_ORDER_OFFSET = 1_000_003
# Training seeds lie in [0, 2^31): torch seeds its generators with the low 32 bits only, so the
# initialisation's seed s and the batch order's s + BATCH_ORDER_OFFSET stay distinct and unaliased.
TRAIN_SEED_LIMIT = 2**31
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
PRESETS = ("mlp", "resnet20", "cpu-small")
# The largest learning rate a schedule may reach and the largest weight decay: torch's
# optimisers convert them to float32 (at most 3.4e38), and Adam scales the learning rate by up
# to 1 / (1 - beta1) = 10 on its first step (1e38 already overflows there).
OPTIMIZER_VALUE_MAX = 1e30
# The most epochs of a phase (1e7 epochs of one step of 1 ms each take 3 hours).
EPOCHS_MAX = 10**7


@dataclass(frozen=True)
class Phase:
    """One training phase.

    loss : "ce" or "mse". epochs : >= 1. optimizer : "adam" (coupled L2), "adamw" or "sgd".
    lr : learning rate. weight_decay : the optimiser's ``weight_decay``.
    schedule : "cosine" (to 0 over the phase), "step" (x ``gamma`` at ``milestones``, epochs
    counted from the phase start) or "constant". batch_size : samples per step.
    decay_last : apply ``weight_decay`` only to the last ``decay_last`` Linear layers (the
    classifier counts as one); 0 = every parameter.
    warmup : epochs of linear warm-up at the phase start (lr x (e + 1) / (warmup + 1) in epoch
    e < warmup, times the schedule); 0 = none.
    """

    loss: str = "ce"
    epochs: int = 200
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    batch_size: int = 256
    decay_last: int = 0
    warmup: int = 0

    def validate(self) -> None:
        require(self.loss in LOSSES, f"unknown loss {self.loss!r}; allowed: {', '.join(LOSSES)}")
        require(self.optimizer in OPTIMIZERS,
                f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        require(self.schedule in SCHEDULES,
                f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        require(is_integer(self.epochs) and self.epochs >= 1,
                f"epochs per phase must be an integer >= 1, got {self.epochs!r}")
        require(self.epochs <= EPOCHS_MAX, f"epochs per phase must be at most {EPOCHS_MAX:.0e} "
                f"(a phase of more would not end), got {self.epochs!r}")
        require(is_finite_number(self.lr) and self.lr >= 0,
                f"lr must be a finite number >= 0, got {self.lr!r}")
        require(is_finite_number(self.weight_decay) and self.weight_decay >= 0,
                f"weight decay must be a finite number >= 0, got {self.weight_decay!r}")
        require(is_integer(self.batch_size) and self.batch_size >= 1,
                f"batch size must be an integer >= 1, got {self.batch_size!r}")
        require(is_finite_number(self.gamma) and self.gamma > 0,
                f"step-schedule gamma must be a finite number > 0, got {self.gamma!r}")
        require(isinstance(self.milestones, (tuple, list))
                and all(is_integer(m) and m >= 0 for m in self.milestones),
                "step-schedule milestones must be integers >= 0 (epochs from the phase start), "
                f"got {self.milestones!r}")
        require(is_integer(self.decay_last) and self.decay_last >= 0,
                f"decay_last must be an integer >= 0, got {self.decay_last}")
        require(is_integer(self.warmup) and 0 <= self.warmup < self.epochs,
                f"warmup must be an integer in [0, epochs), got {self.warmup}")
        require(is_finite_number(self.momentum) and 0 <= self.momentum < 1,
                f"momentum must be in [0, 1), got {self.momentum!r} "
                "(the flow time lr x steps / (1 - momentum) needs momentum < 1)")
        require(self.weight_decay <= OPTIMIZER_VALUE_MAX,
                f"weight decay must be at most {OPTIMIZER_VALUE_MAX:.0e} (torch's optimisers "
                f"hold it as float32), got {self.weight_decay!r}")
        require(self._log10_peak_lr() <= math.log10(OPTIMIZER_VALUE_MAX),
                f"the learning rate (lr, times gamma at each step milestone when gamma > 1) "
                f"reaches 10^{self._log10_peak_lr():.3g} in this phase; it must stay at most "
                f"{OPTIMIZER_VALUE_MAX:.0e} (torch's optimisers hold it as float32)")

    def _log10_peak_lr(self) -> float:
        """log10 of the largest learning rate the schedule can reach (-inf for lr 0)."""
        if self.lr == 0:
            return -math.inf
        steps = len(self.milestones) if self.schedule == "step" else 0
        return math.log10(self.lr) + steps * max(0.0, math.log10(self.gamma))


@dataclass(frozen=True)
class TrainConfig:
    """A training run: network, phases, tracking, intervention, checkpoints.

    arch, depth, width, activation : the network (see :mod:`ncsim.validate.networks`).
    phases : the training phases in order (phase numbers 1, 2, ...).
    nc_every : epochs between two NC records (also epoch 0 and every phase end).
    nc_dense : the first ``nc_dense`` epochs of every phase are recorded too, each of them (0:
        none): the transient after a phase switch (the ``mlp`` protocol's fresh Adam on the
        MSE loss knocks the network over for a few hundred steps) at every epoch.
    nc_min_accuracy : NC columns empty while train accuracy < this (paper: 0.99; 0 = always).
    eval_batch : samples per forward pass of a record; None: :data:`EVAL_BATCH` of the device
        (see :attr:`record_batch`).
    eval_test : also pass the test set at every record (``test_accuracy``; NaN when False).
    intervention_epoch, intervention_alpha : after that many epochs the last hidden layer is
        rescaled by alpha (features x alpha); the record at that epoch is taken after it.
        Only with a positively homogeneous activation (``HOMOGENEOUS``: linear, relu,
        leaky_relu), for which scaling the layer's weight and bias scales its output.
    seed : seeds the initialisation and the batch order. device : "cpu", "cuda", ...
    amp : mixed precision in the training steps (bfloat16 on CPU, float16 on CUDA).
    checkpoint_dir, checkpoint_every : save model + optimiser state every k epochs and at
        every phase end (``phase{j}_end.pt``); None = no checkpoints.
    run_id, labels : the log's run id and label columns (model, dataset, condition).
    reference_train_size : None, or a number of training samples (60000: MNIST and
        Fashion-MNIST) whose optimiser steps every phase takes on the data given: :func:`train`
        rescales the phases' epochs, and with them the step milestones, warm-ups, ``nc_every``,
        ``checkpoint_every`` and the intervention epoch, to the actual training set (see
        :meth:`for_train_size`). The paper's protocols count epochs of 60,000 samples; on the
        digits (1,438 training samples) they take 40x fewer steps.
    data_args : keyword arguments of :func:`ncsim.validate.data.load_dataset` (stored in
        checkpoints so that a checkpoint can rebuild its training set).
    """

    arch: str = "mlp"
    depth: int = 5
    width: int = 512
    activation: str = "relu"
    phases: tuple[Phase, ...] = (Phase(), Phase(loss="mse", epochs=300))
    nc_every: int = 10
    nc_dense: int = 0
    nc_min_accuracy: float = 0.0
    eval_batch: int | None = None
    eval_test: bool = True
    intervention_epoch: int | None = None
    intervention_alpha: float = 1.0
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    run_id: str = "run"
    reference_train_size: int | None = None
    data_args: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    labels: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def validate(self) -> TrainConfig:
        require(len(self.phases) >= 1, "a training needs at least one phase")
        for phase in self.phases:
            phase.validate()
        require(self.arch in ARCHS, f"unknown network {self.arch!r}; allowed: {', '.join(ARCHS)}")
        require(self.activation in ACTIVATIONS,
                f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        require(self.arch != "resnet20" or self.activation == "relu",
                f"ResNet-20's blocks use ReLU; activation {self.activation!r} is not available "
                "for it (allowed: relu)")
        require(is_integer(self.depth) and self.depth >= 1,
                f"depth must be an integer >= 1, got {self.depth}")
        require(is_integer(self.width) and self.width >= 1,
                f"width must be an integer >= 1, got {self.width}")
        require(is_integer(self.nc_every) and self.nc_every >= 1,
                f"nc_every must be an integer >= 1, got {self.nc_every!r}")
        require(is_integer(self.nc_dense) and self.nc_dense >= 0,
                f"nc_dense must be an integer >= 0 (epochs recorded one by one at the start of "
                f"every phase; 0: none), got {self.nc_dense!r}")
        require(is_finite_number(self.nc_min_accuracy) and 0 <= self.nc_min_accuracy <= 1,
                f"nc_min_accuracy must be a fraction in [0, 1] (the paper: 0.99), got "
                f"{self.nc_min_accuracy!r}")
        require(self.eval_batch is None or (is_integer(self.eval_batch) and self.eval_batch >= 1),
                f"eval_batch must be an integer >= 1 (or None for the device's default), got "
                f"{self.eval_batch!r}")
        require(is_integer(self.seed) and 0 <= self.seed < TRAIN_SEED_LIMIT,
                f"seed must be an integer in [0, 2^31), got {self.seed!r} (torch's generator "
                "keeps only the low 32 bits of a seed, and the batch order uses seed + "
                f"{BATCH_ORDER_OFFSET})")
        require(self.reference_train_size is None
                or (is_integer(self.reference_train_size) and self.reference_train_size >= 1),
                f"reference_train_size must be an integer >= 1 (the training-set size whose "
                f"steps each phase takes, e.g. 60000) or None, got {self.reference_train_size!r}")
        require(is_integer(self.checkpoint_every) and self.checkpoint_every >= 0,
                f"checkpoint_every must be an integer >= 0 (0: only at phase ends), got "
                f"{self.checkpoint_every!r}")
        require_device(str(self.device))
        total = sum(p.epochs for p in self.phases)
        if self.intervention_epoch is not None:
            require(is_integer(self.intervention_epoch) and 0 <= self.intervention_epoch <= total,
                    f"intervention epoch must be an integer in [0, {total}], got "
                    f"{self.intervention_epoch!r}")
            require(is_finite_number(self.intervention_alpha) and self.intervention_alpha > 0,
                    f"intervention alpha must be a finite number > 0, got "
                    f"{self.intervention_alpha!r}")
            require(self.activation in HOMOGENEOUS,
                    f"the intervention multiplies the last hidden layer's weight and bias by "
                    f"alpha, which multiplies the features by alpha only for a positively "
                    f"homogeneous activation ({', '.join(HOMOGENEOUS)}); with activation "
                    f"{self.activation!r} the features would change by another factor. Train "
                    f"with one of those activations, or without the intervention")
        else:
            require(self.intervention_alpha == 1.0,
                    "the intervention alpha rescales the last hidden layer at the intervention "
                    "epoch (--alpha at --intervene-epoch); give the epoch too, or drop alpha")
        return self

    @property
    def record_batch(self) -> int:
        """Samples per forward pass of a record: ``eval_batch``, or :data:`EVAL_BATCH` of the
        device type when it is None."""
        if self.eval_batch is not None:
            return self.eval_batch
        return EVAL_BATCH.get(torch.device(self.device).type, EVAL_BATCH["accelerator"])

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def records_epoch(self, epoch: int) -> bool:
        """Whether the NC record follows epoch ``epoch`` (>= 1, counted from the start of
        training): every ``nc_every``-th epoch, the last epoch of every phase, the intervention
        epoch and the first ``nc_dense`` epochs of every phase. (Epoch 0 is always recorded.)"""
        if epoch % self.nc_every == 0 or epoch == self.intervention_epoch:
            return True
        start = 0
        for phase in self.phases:
            if start < epoch <= start + phase.epochs:
                return epoch == start + phase.epochs or epoch - start <= self.nc_dense
            start += phase.epochs
        return False

    def for_train_size(self, n_train: int) -> TrainConfig:
        """This configuration for a training set of ``n_train`` samples, step-matched to
        ``reference_train_size`` (returned as it is when that is None).

        A phase of ``e`` epochs at batch size ``b`` takes ``e x ceil(n_ref / b)`` optimiser steps
        on ``n_ref`` samples. On ``n_train`` samples it gets
        ``e' = max(1, round(e x ceil(n_ref / b) / ceil(n_train / b)))`` epochs, the same steps to
        within half an epoch's; its step milestones and warm-up scale with ``e' / e``.
        ``nc_every``, ``nc_dense`` and ``checkpoint_every`` scale with the last phase's ``e' / e``
        (the phase whose records give the onset), at least 1 (0 stays 0). An intervention
        epoch inside phase j moves to the same fraction of the rescaled phase j. The result has
        ``reference_train_size`` None, so it is not rescaled twice (checkpoints store it).
        """
        require(is_integer(n_train) and n_train >= 1,
                f"the training set must hold at least one sample, got {n_train!r}")
        if self.reference_train_size is None:
            return self
        ref = int(self.reference_train_size)
        phases = tuple(
            _rescaled(p, max(1, round(p.epochs * math.ceil(ref / p.batch_size)
                                      / math.ceil(n_train / p.batch_size))))
            for p in self.phases)
        scale = phases[-1].epochs / self.phases[-1].epochs

        def scaled(epochs: int) -> int:
            return max(1, round(epochs * scale)) if epochs else 0

        return dataclasses.replace(
            self, phases=phases, nc_every=scaled(self.nc_every), nc_dense=scaled(self.nc_dense),
            checkpoint_every=scaled(self.checkpoint_every),
            intervention_epoch=_moved_epoch(self.intervention_epoch, self.phases, phases),
            reference_train_size=None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["phases"] = [dataclasses.asdict(p) for p in self.phases]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["phases"] = tuple(Phase(**{**p, "milestones": tuple(p.get("milestones", ()))})
                               for p in data["phases"])
        return cls(**data)


def _rescaled(phase: Phase, epochs: int) -> Phase:
    """``phase`` stretched to ``epochs``: step milestones and the warm-up scale with it."""
    scale = epochs / phase.epochs
    return dataclasses.replace(
        phase, epochs=epochs, milestones=tuple(int(round(m * scale)) for m in phase.milestones),
        warmup=min(int(round(phase.warmup * scale)), max(epochs - 1, 0)))


def _moved_epoch(epoch: int | None, old: tuple[Phase, ...], new: tuple[Phase, ...]
                 ) -> int | None:
    """``epoch`` of the phases ``old`` at the same fraction of its phase in ``new`` (rounded);
    a phase end stays that phase's end, epoch 0 stays 0, None stays None."""
    if epoch is None:
        return None
    start, new_start = 0, 0
    for before, after in zip(old, new, strict=True):
        if epoch <= start + before.epochs:
            return new_start + round((epoch - start) * after.epochs / before.epochs)
        start += before.epochs
        new_start += after.epochs
    return new_start + (epoch - start)


def preset(name: str, epochs: tuple[int, ...] | None = None, **overrides: Any) -> TrainConfig:
    """A named protocol; ``epochs`` overrides the phase lengths (step milestones scale with them).

    ``mlp`` and ``resnet20`` are the paper's protocols (see the module docstring).
    ``cpu-small`` is a CPU-sized run that collapses (nc1_trace < 0.01 in the MSE phase within a
    few thousand full-batch steps) on a small balanced subset (``CPU_SMALL_DATA``: digits, 10
    per class): MLP depth 4, width 128; phase 1 CE, Adam lr 1e-3, no weight decay, 50 steps;
    phase 2 MSE, heavy-ball SGD (lr 0.1, momentum 0.9, constant after a linear warm-up over
    100 steps) with weight decay 2e-3 on the last two Linear layers (last hidden +
    classifier), 4000 steps. The warm-up matters: the CE phase leaves features of norm ~25,
    so the classifier's curvature (2/K) fn^2 ~ 130 makes lr 0.1 unstable at the MSE start
    (without it, seeds 2 and 3 on digits end at chance accuracy with a NaN loss, and seed 1
    reaches nc1_trace < 0.01 only at its last record); ramped over 100 steps, digits collapses
    for seeds 0-3 (onset 2000-2450 epochs, fn* 3.0-3.4). Weight decay drives the
    features at the rate ``wd x lr / (1 - momentum)`` per step: 4000 steps give
    ``wd x t = 8`` with ``t = lr x steps / (1 - momentum)``. (Weight decay on every layer
    stalls at nc1_trace ~ 0.02-0.03 on this data; a larger decay, 5e-3 or 1e-2, collapses
    more slowly.)
    """
    if name == "mlp":
        phases = (Phase("ce", 200, "adam", 1e-3, 1e-4, schedule="cosine", batch_size=256),
                  Phase("mse", 300, "adam", 1e-3, 1e-4, schedule="cosine", batch_size=256))
        base: dict[str, Any] = {"arch": "mlp", "depth": 5, "width": 512}
    elif name == "resnet20":
        sgd = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-3, "momentum": 0.9,
               "nesterov": True, "schedule": "step", "batch_size": 128}
        phases = (Phase("ce", 200, milestones=(100, 150), **sgd),
                  Phase("mse", 600, milestones=(300, 450), **sgd))
        base = {"arch": "resnet20"}
    elif name == "cpu-small":
        full = 2**31 - 1  # one batch of the whole training set, whatever its size
        phases = (Phase("ce", 50, "adam", 1e-3, 0.0, schedule="constant", batch_size=full),
                  Phase("mse", 4000, "sgd", 0.1, 2e-3, momentum=0.9, nesterov=False,
                        schedule="constant", batch_size=full, decay_last=2, warmup=100))
        base = {"arch": "mlp", "depth": 4, "width": 128, "nc_every": 50}
    else:
        raise InputError(f"unknown training preset {name!r}; allowed: {', '.join(PRESETS)}")
    if epochs is not None:
        require(len(epochs) == len(phases),
                f"preset {name!r} has {len(phases)} phases; give {len(phases)} epoch counts")
        phases = tuple(_rescaled(p, int(e)) for p, e in zip(phases, epochs, strict=False))
    return TrainConfig(phases=phases, **{**base, **overrides})


CPU_SMALL_DATA: dict[str, Any] = {"name": "digits", "per_class": 10, "seed": 0}


# ----------------------------------------------------------------------------- pieces
def decayed_names(model: nn.Module, last: int) -> set[str] | None:
    """Names of the parameters of the last ``last`` Linear layers (None when ``last`` = 0: all)."""
    if last == 0:
        return None
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    require(last <= len(linears),
            f"decay_last = {last} but the network has only {len(linears)} Linear layers")
    keep = linears[-last:]
    return {name for name, _ in model.named_parameters()
            if any(name.startswith(prefix + ".") for prefix in keep)}


def make_optimizer(params, phase: Phase, decayed: set[str] | None = None
                   ) -> torch.optim.Optimizer:
    """The phase's optimiser over ``params``.

    ``params`` : an iterable of tensors, or of ``(name, tensor)`` pairs; with ``decayed`` (a set
    of names, see :func:`decayed_names`) only those parameters get ``weight_decay``.
    """
    params = list(params)
    if params and isinstance(params[0], tuple):
        if decayed is None:
            params = [p for _, p in params]
        else:
            params = [{"params": [p for n, p in params if n in decayed]},
                      {"params": [p for n, p in params if n not in decayed], "weight_decay": 0.0}]
    if phase.optimizer == "adam":
        return torch.optim.Adam(params, lr=phase.lr, weight_decay=phase.weight_decay)
    if phase.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)
    return torch.optim.SGD(params, lr=phase.lr, momentum=phase.momentum,
                           nesterov=phase.nesterov and phase.momentum > 0,
                           weight_decay=phase.weight_decay)


def flow_time_factor(phase: Phase) -> float:
    """Gradient-flow time per unit of ``lr`` for one step of ``phase``.

    Plain GD/SGD: 1 (``t = lr x steps``); heavy-ball or Nesterov momentum m: ``1 / (1 - m)``
    (the steady-state step of momentum SGD is ``lr / (1 - m)`` times the gradient). Adam and
    AdamW rescale every coordinate by its running gradient scale, so no time of the gradient
    flow of the objective corresponds to their steps: NaN.
    """
    if phase.optimizer != "sgd":
        return math.nan
    return 1.0 / (1.0 - phase.momentum)


def make_scheduler(opt: torch.optim.Optimizer, phase: Phase):
    """The phase's per-epoch schedule; with ``phase.warmup`` > 0, its lr factor times a linear
    warm-up (one LambdaLR: PyTorch's LambdaLR sets, not multiplies, so two do not chain)."""
    if phase.warmup == 0:
        if phase.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=phase.epochs)
        if phase.schedule == "step":
            return torch.optim.lr_scheduler.MultiStepLR(opt, list(phase.milestones),
                                                        phase.gamma)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def factor(epoch: int) -> float:
        ramp = min(1.0, (epoch + 1) / (phase.warmup + 1))
        if phase.schedule == "cosine":
            return ramp * 0.5 * (1.0 + math.cos(math.pi * epoch / phase.epochs))
        if phase.schedule == "step":
            return ramp * phase.gamma ** sum(epoch >= m for m in phase.milestones)
        return ramp

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean cross-entropy, or ``nn.MSELoss`` (mean over B x K) against one-hot targets."""
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.mse_loss(logits, target)


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, batch: int = 4096
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, p) and logits (N, K) in eval mode."""
    was_training = model.training
    model.eval()
    feats, logits = [], []
    for start in range(0, x.shape[0], batch):
        h = model.features(x[start:start + batch])
        feats.append(h)
        logits.append(model.classifier(h))
    model.train(was_training)
    return torch.cat(feats), torch.cat(logits)


def classifier_arrays(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier weight (K, p) and bias (K,)."""
    return model.classifier.weight.detach(), model.classifier.bias.detach()


@torch.no_grad()
def nc_record(model: nn.Module, data: Dataset, loss_kind: str, batch: int = 4096,
              test: bool = True) -> dict[str, float]:
    """NC metrics (float64, streaming), fn, loss and accuracies on the training set.

    Parameters
    ----------
    model : the network (put in eval mode for the record, its mode restored afterwards).
    data : the dataset; the training set is passed once (features and logits of one forward
        pass feed the NC statistics, NC4, the loss and the accuracy).
    loss_kind : "ce" or "mse" (the ``loss`` column).
    batch : samples per forward pass.
    test : also pass the test set for ``test_accuracy`` (NaN when False or without test set).

    Returns
    -------
    dict of floats: every NC metric, ``loss``, ``accuracy``, ``test_accuracy``, ``weight_norm``.
    """
    from ncsim.metrics import StreamingNC

    feats, logits = extract(model, data.x_train, batch)
    acc = StreamingNC(data.classes, feats.shape[1], feats.device)
    for start in range(0, feats.shape[0], batch):
        sl = slice(start, start + batch)
        acc.update(feats[sl], data.y_train[sl])
    acc.begin_nc4()
    for start in range(0, feats.shape[0], batch):
        sl = slice(start, start + batch)
        acc.update_nc4(feats[sl], logits[sl])
    weight, bias = classifier_arrays(model)
    row = {k: float(v) for k, v in acc.compute(weight, bias).items()}
    row["loss"] = float(loss_fn(logits.float(), data.y_train, loss_kind))
    row["accuracy"] = accuracy(logits, data.y_train)
    row["test_accuracy"] = math.nan
    if test and data.x_test.shape[0]:
        _, test_logits = extract(model, data.x_test, batch)
        row["test_accuracy"] = accuracy(test_logits, data.y_test)
    row["weight_norm"] = float(torch.sqrt(sum((p.detach().double() ** 2).sum()
                                              for p in model.parameters())))
    return row


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` (N, K) whose largest entry is at ``labels`` (N,); NaN when a
    logit is NaN (a diverged network predicts nothing: torch's argmax of a NaN row is arbitrary)."""
    if bool(torch.isnan(logits).any()):
        return math.nan
    return float((logits.argmax(1) == labels).double().mean())


def log_row(config: TrainConfig, epoch: int, phase_no: int, phase: Phase, steps: int,
            flow_time: float, lr: float, values: dict[str, float]) -> dict[str, Any]:
    """One row of the training log, columns in the trajectory table's order.

    ``run_id, time, time_unit, phase, loss`` and the NC metrics (as a simulation's table), then
    ``accuracy, test_accuracy, weight_norm, phase_loss, steps, flow_time, lr, seed`` and the
    label columns. ``values`` is :func:`nc_record`'s dict; the metrics of
    :data:`ncsim.metrics.METRIC_NAMES` are NaN while the accuracy is below
    ``config.nc_min_accuracy``.
    """
    from ncsim.metrics import METRIC_NAMES

    gap = values["accuracy"] < config.nc_min_accuracy
    row: dict[str, Any] = {"run_id": config.run_id, "time": float(epoch), "time_unit": "epoch",
                           "phase": phase_no, "loss": values["loss"]}
    for name, value in values.items():
        if name != "loss":
            row[name] = math.nan if gap and name in METRIC_NAMES else value
    row.update({"phase_loss": phase.loss, "steps": steps, "flow_time": flow_time, "lr": lr,
                "seed": config.seed, **config.labels})
    return row


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the per-epoch log, the model and facts about the run."""

    log: pd.DataFrame
    model: nn.Module
    config: TrainConfig
    checkpoints: list[Path]
    fn_before_intervention: float = math.nan
    runs: list[TrainResult] = field(default_factory=list)


def _save_checkpoint(path: Path, model: nn.Module, opt, epoch: int, phase: int,
                     config: TrainConfig, data: Dataset, steps: int, flow_time: float) -> Path:
    from ncsim.io import atomic_write

    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
             "phase": phase, "config": config.to_dict(), "steps": steps, "flow_time": flow_time,
             "dataset": data.name, "input_shape": data.input_shape, "classes": data.classes}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def build_model(config: TrainConfig, data: Dataset) -> nn.Module:
    """The configured network for ``data``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    return build_network(config.arch, data.input_shape, data.classes, config.depth,
                         config.width, config.activation).to(config.device)


def train(config: TrainConfig, data: Dataset, progress: bool = False,
          on_record: Callable[[dict[str, Any]], None] | None = None,
          seeds: list[int] | None = None) -> TrainResult:
    """Train ``config`` on ``data`` and log NC metrics.

    Returns a :class:`TrainResult` whose ``log`` has one row per record (see module docstring).
    With ``seeds`` (e.g. ``[0, 1, 2]``) every seed is trained: ``log`` holds the rows of all
    seeds (run ids ``{run_id}_s{seed}``), ``model`` is the first seed's and ``runs`` the
    per-seed results. On an accelerator the seeds train in one vectorised loop
    (:func:`ncsim.validate.stacked.train_stacked`); on the CPU one after another, where the
    vectorised products are slower than separate ones (a forward and backward pass of 4 MLP-5
    copies on 256 samples: 108-120 ms stacked against 95 ms separate; 4 copies of depth 4,
    width 128 on 100 samples: 3.1-3.7 ms against 2.8 ms), and the result is then exactly that
    of separate trainings. ``on_record`` is not called for seeds.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, TrainConfig):
        raise InputError(f"train takes a TrainConfig, got {type(config).__name__}; build one "
                         "with TrainConfig(...) or ncsim.validate.train.preset(name)")
    if not isinstance(data, Dataset):
        raise InputError(f"train takes a Dataset as data, got {type(data).__name__}; load one "
                         "with ncsim.validate.data.load_dataset(name)")
    config = config.validate().for_train_size(int(data.x_train.shape[0]))
    require_trainable(config, data)
    if seeds is not None:
        from ncsim.validate.stacked import check_seeds, train_stacked

        if torch.device(config.device).type == "cpu":
            runs = [train(dataclasses.replace(config, seed=s, run_id=f"{config.run_id}_s{s}"),
                          data, progress) for s in check_seeds(config, seeds)]
        else:
            runs = train_stacked(config, data, seeds, progress)
        log = pd.concat([r.log for r in runs], ignore_index=True)
        return TrainResult(log, runs[0].model, config, [], math.nan, runs)
    config.validate()
    device = torch.device(config.device)
    data = data.to(device)
    model = build_model(config, data)
    gen = torch.Generator().manual_seed(config.seed + BATCH_ORDER_OFFSET)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(enabled=config.amp and device.type == "cuda")
    rows: list[dict[str, Any]] = []
    checkpoints: list[Path] = []
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    epoch, steps, flow_time = 0, 0, 0.0
    fn_before = math.nan
    n = data.x_train.shape[0]

    def record(phase_no: int, phase: Phase, lr: float) -> None:
        values = nc_record(model, data, phase.loss, config.record_batch, config.eval_test)
        row = log_row(config, epoch, phase_no, phase, steps, flow_time, lr, values)
        rows.append(row)
        if on_record is not None:
            on_record(row)

    bar = tqdm(total=config.total_epochs, disable=not progress, file=sys.stderr,
               desc=config.run_id, leave=False)
    for phase_no, phase in enumerate(config.phases, start=1):
        opt = make_optimizer(model.named_parameters(), phase,
                             decayed_names(model, phase.decay_last))
        sched = make_scheduler(opt, phase)
        if epoch == 0:
            if config.intervention_epoch == 0:
                fn_before = _features_norm(model, data, config.record_batch)
                model.rescale_last_hidden(config.intervention_alpha)
            record(phase_no, phase, opt.param_groups[0]["lr"])  # the lr of epoch 1
        for _ in range(phase.epochs):
            model.train()
            lr = opt.param_groups[0]["lr"]
            perm = torch.randperm(n, generator=gen).to(device)
            for start in range(0, n, phase.batch_size):
                idx = perm[start:start + phase.batch_size]
                with torch.autocast(device.type, dtype=amp_dtype, enabled=config.amp):
                    out = model(data.x_train[idx])
                loss = loss_fn(out.float(), data.y_train[idx], phase.loss)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                steps += 1
                flow_time += lr
            sched.step()
            epoch += 1
            bar.update(1)
            if config.intervention_epoch == epoch:
                fn_before = _features_norm(model, data, config.record_batch)
                model.rescale_last_hidden(config.intervention_alpha)
            end = epoch == sum(p.epochs for p in config.phases[:phase_no])
            if config.records_epoch(epoch):
                record(phase_no, phase, opt.param_groups[0]["lr"])
            if ckpt_dir is not None and (end or (config.checkpoint_every
                                                 and epoch % config.checkpoint_every == 0)):
                name = f"phase{phase_no}_end.pt" if end else f"epoch{epoch:05d}.pt"
                checkpoints.append(_save_checkpoint(ckpt_dir / name, model, opt, epoch,
                                                    phase_no, config, data, steps, flow_time))
    bar.close()
    return TrainResult(pd.DataFrame(rows), model, config, checkpoints, fn_before)


def _resnet_last_stage_size(input_shape: tuple[int, ...]) -> int:
    """Positions per channel of ResNet-20's last stage for inputs (C, *spatial): each of the
    two stride-2 stages maps a side s to ceil(s / 2); 28x28 images are padded to 32x32."""
    sides = list(input_shape[1:])
    if sides == [28, 28]:
        sides = [32, 32]
    return math.prod(math.ceil(math.ceil(side / 2) / 2) for side in sides)


def require_trainable(config: TrainConfig, data: Dataset) -> None:
    """Refuse data on which a training cannot run or its NC metrics mean nothing.

    One sample per class makes the within-class spread 0 at every record (NC1 = 0 without
    training, a fake onset). ResNet-20's BatchNorm needs more than one value per channel in a
    training batch: with a last stage of one position (sides <= 4), a batch of one sample fails.
    """
    counts = torch.bincount(data.y_train.cpu(), minlength=data.classes)
    require(int(counts.max()) >= 2,
            "every class has at most one training sample, so the within-class spread is 0 at "
            "every record (NC1 = 0 without any training) and no onset can be measured; use at "
            "least 2 samples per class")
    n = int(data.x_train.shape[0])
    if config.arch != "resnet20" or _resnet_last_stage_size(data.input_shape) > 1:
        return
    for number, phase in enumerate(config.phases, start=1):
        b = phase.batch_size
        require(b != 1 and n % b != 1,
                f"phase {number}: a batch size of {b} on {n} samples leaves a batch of one "
                f"sample, and ResNet-20 on inputs of shape {data.input_shape} has a last stage "
                "of one position, where BatchNorm needs more than one value per channel; pick "
                "a batch size b with b > 1 and n mod b != 1, or inputs of side >= 5")


@torch.no_grad()
def _features_norm(model: nn.Module, data: Dataset, batch: int) -> float:
    feats, _ = extract(model, data.x_train, batch)
    return float(feats.double().norm(dim=1).mean())


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint; returns (model in eval mode, checkpoint dict)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    require(path.is_file(), f"checkpoint {path} is not a file; give a .pt file written by "
            "ncsim training")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, *CORRUPT_PICKLE_ERRORS) as err:
        reason = first_line(err)
        raise InputError(f"{path} is not a readable checkpoint (loading failed: {reason}); "
                         "it is damaged or truncated: train the run again") from None
    require(isinstance(state, dict) and "model" in state and "config" in state,
            f"{path} is not an ncsim training checkpoint")
    config = TrainConfig.from_dict(state["config"])
    model = build_network(config.arch, tuple(state["input_shape"]), state["classes"],
                          config.depth, config.width, config.activation)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def summarize(log: pd.DataFrame, threshold: float = 0.01, metric: str = "nc1_trace"
              ) -> dict[str, float | str]:
    """Onset epoch (the paper's rule: first phase-2 record below ``threshold``), fn* and the
    run's ``status`` (``collapsed``, ``not_collapsed``, ``vanishing`` with no onset and fn*
    when fn vanishes, or ``diverged`` when the last record's loss is NaN or infinite:
    :func:`ncsim.validate.analysis.run_onset`).

    ``log`` is one run's training log as :func:`train` writes it, its rows in any order (read
    in time order: ``final_accuracy`` is the last record's); :class:`InputError` when it
    has no records or lacks a column this needs (``time``, ``phase``, ``fn``, ``accuracy`` and
    ``metric``)."""
    from ncsim.validate.analysis import OnsetRule, run_onset

    rule = OnsetRule(metric=metric, threshold=threshold, phase=2, interpolate=False)
    missing = [c for c in ("time", "phase", "fn", "accuracy", metric) if c not in log.columns]
    require(not missing, f"the training log lacks column(s) {', '.join(missing)}; summarize "
            f"needs a log as train() writes it, with time, phase, fn, accuracy and the onset "
            f"metric {metric!r}")
    require(len(log) > 0, "the training log has no records; summarize needs at least one")
    log = log.sort_values("time", kind="stable")  # records at one time keep their order
    out = run_onset(log, rule)
    finite = log[np.isfinite(log[metric].to_numpy(np.float64))]
    out["final_accuracy"] = float(log["accuracy"].iloc[-1])
    out["nc1_start_phase2"] = (float(finite.loc[finite["phase"] == 2, metric].iloc[0])
                               if (finite["phase"] == 2).any() else math.nan)
    return out
