"""The training peer of V1: a plain PyTorch ``DataLoader`` loop with NC tracking.

It trains what :func:`ncsim.validate.train.train` trains (the same network from the same
seed, the same phases, optimisers, schedules and losses) the way a plain training script
does: a ``DataLoader`` over a host ``TensorDataset`` collates every batch sample by sample and
moves it to the device; an NC record passes the training set through a second ``DataLoader``
in eval mode, keeps the features, and computes every metric with
:func:`ncsim.metrics.nc_metrics` on the whole feature matrix in float64.

The sampler draws one ``torch.randperm`` per epoch from a generator seeded as ncsim's loop
seeds its own (``seed + BATCH_ORDER_OFFSET``), so both loops see the same batches in the same order.
On the CPU the two trainings are then the same computation and their logs agree to float
rounding of the metric sums; that is what lets the benchmark check the peer's results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.validate.data import Dataset
from ncsim.validate.networks import build_network
from ncsim.validate.train import BATCH_ORDER_OFFSET, Phase, TrainConfig

# The measured columns of a record that the benchmark compares between the loops, and the
# columns of the protocol (when, after how many steps, at which learning rate) that must be
# equal.
COMPARED = ("loss", "accuracy", "test_accuracy", *METRIC_NAMES)
PROTOCOL = ("time", "phase", "steps", "lr")
# The columns of the loose whole-log check (runs that cannot agree to rounding).
TREND = ("loss", "fn", "accuracy")
# Entries are compared relative to max(|value|, this): values that are 0 compare absolutely.
_FLOOR = 1e-9


class EpochPermutations(Sampler[int]):
    """Indices 0..n-1 in a fresh ``torch.randperm(n, generator)`` order at every epoch.

    (``RandomSampler`` draws one extra permutation per epoch, so its orders differ from
    ncsim's loop after the first epoch.)
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def _optimizer(model: nn.Module, phase: Phase) -> torch.optim.Optimizer:
    if phase.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=phase.lr, weight_decay=phase.weight_decay)
    if phase.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=phase.lr, momentum=phase.momentum,
                               nesterov=phase.nesterov and phase.momentum > 0,
                               weight_decay=phase.weight_decay)
    raise ValueError(f"the DataLoader peer trains with adam or sgd, not {phase.optimizer!r}")


def _scheduler(opt: torch.optim.Optimizer, phase: Phase):
    if phase.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=phase.epochs)
    if phase.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, list(phase.milestones), phase.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    return F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


@torch.no_grad()
def _pass(model: nn.Module, loader: DataLoader, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (N, p), logits (N, K) and labels (N,) of one pass over ``loader``."""
    feats, logits, labels = [], [], []
    for xb, yb in loader:
        h = model.features(xb.to(device, non_blocking=True))
        feats.append(h)
        logits.append(model.classifier(h))
        labels.append(yb.to(device, non_blocking=True))
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def _record(model: nn.Module, train: DataLoader, test: DataLoader | None, classes: int,
            kind: str, device: torch.device) -> dict[str, float]:
    """Loss, accuracies and every NC metric (float64) on the training set, in eval mode."""
    model.eval()
    feats, logits, labels = _pass(model, train, device)
    weight = model.classifier.weight.detach().double().unsqueeze(0)
    bias = model.classifier.bias.detach().double().unsqueeze(0)
    metrics = nc_metrics(feats.double().unsqueeze(0), labels, classes, weight, bias)
    row = {name: float(value[0]) for name, value in metrics.items()}
    row["loss"] = float(_loss(logits.float(), labels, kind))
    row["accuracy"] = float((logits.argmax(1) == labels).double().mean())
    row["test_accuracy"] = math.nan
    if test is not None:
        _, test_logits, test_labels = _pass(model, test, device)
        row["test_accuracy"] = float((test_logits.argmax(1) == test_labels).double().mean())
    model.train()
    return row


def dataloader_training(config: TrainConfig, data: Dataset) -> pd.DataFrame:
    """Train ``config`` on ``data`` (host tensors) with a plain ``DataLoader`` loop.

    Returns the log: one row per record (``time`` in epochs, ``phase`` and the columns of
    :data:`COMPARED`), at epoch 0, every ``nc_every`` epochs and at every phase end, as
    :func:`ncsim.validate.train.train` records. Supports the options the benchmark uses: Adam
    or SGD with weight decay on every parameter, cosine, step or constant schedules, no
    warm-up, intervention, mixed precision or checkpoints (ValueError otherwise).
    """
    unsupported = [p for p in config.phases if p.warmup or p.decay_last]
    if unsupported or config.intervention_epoch is not None or config.amp:
        raise ValueError("the DataLoader peer trains without warm-up, decay_last, "
                         "intervention or mixed precision")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = build_network(config.arch, data.input_shape, data.classes, config.depth,
                          config.width, config.activation).to(device)
    pin = device.type == "cuda"
    dataset = TensorDataset(data.x_train, data.y_train)
    sampler = EpochPermutations(len(dataset), config.seed + BATCH_ORDER_OFFSET)
    record_train = DataLoader(dataset, batch_size=config.record_batch, pin_memory=pin)
    record_test = (DataLoader(TensorDataset(data.x_test, data.y_test),
                              batch_size=config.record_batch, pin_memory=pin)
                   if config.eval_test and data.x_test.shape[0] else None)
    rows: list[dict[str, float]] = []
    steps = 0

    def record(epoch: int, phase_no: int, phase: Phase, lr: float) -> None:
        row = _record(model, record_train, record_test, data.classes, phase.loss, device)
        rows.append({"time": float(epoch), "phase": phase_no, "steps": steps, "lr": lr, **row})

    epoch = 0
    for phase_no, phase in enumerate(config.phases, start=1):
        loader = DataLoader(dataset, batch_size=phase.batch_size, sampler=sampler,
                            pin_memory=pin)
        opt, end_epoch = _optimizer(model, phase), epoch + phase.epochs
        sched = _scheduler(opt, phase)
        if epoch == 0:
            record(epoch, phase_no, phase, opt.param_groups[0]["lr"])
        model.train()
        for _ in range(phase.epochs):
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = _loss(model(xb).float(), yb, phase.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            sched.step()
            epoch += 1
            if epoch % config.nc_every == 0 or epoch == end_epoch:
                record(epoch, phase_no, phase, opt.param_groups[0]["lr"])
    return pd.DataFrame(rows).drop_duplicates(subset=["time"], keep="last").reset_index(
        drop=True)


def log_difference(ncsim_log: pd.DataFrame, peer_log: pd.DataFrame, rows: int | None = None,
                   columns: tuple[str, ...] = COMPARED) -> float:
    """Largest relative difference between two training logs over ``columns``, entry by
    entry (``|x - y| / max(|y|, 1e-9)``); inf when the record times differ or when a NaN or
    an infinity of one log is not in the other. ``rows``: only the first that many records."""
    a = ncsim_log.sort_values("time").reset_index(drop=True).iloc[:rows]
    b = peer_log.sort_values("time").reset_index(drop=True).iloc[:rows]
    if a["time"].tolist() != b["time"].tolist():
        return math.inf
    worst = 0.0
    for col in columns:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        finite = np.isfinite(x) & np.isfinite(y)
        same = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
        if not (finite | same).all():
            return math.inf
        rel = np.abs(x - y)[finite] / np.maximum(np.abs(y[finite]), _FLOOR)
        worst = max(worst, float(rel.max(initial=0.0)))
    return worst


def protocol_mismatch(ncsim_log: pd.DataFrame, peer_log: pd.DataFrame) -> list[str]:
    """The :data:`PROTOCOL` columns (record times, phases, step counts, learning rates) in
    which two training logs differ (exact comparison)."""
    a = ncsim_log.sort_values("time").reset_index(drop=True)
    b = peer_log.sort_values("time").reset_index(drop=True)
    if len(a) != len(b):
        return ["time"]
    return [col for col in PROTOCOL if col not in a or col not in b
            or a[col].to_numpy(float).tolist() != b[col].to_numpy(float).tolist()]


def final_accuracy_difference(ncsim_log: pd.DataFrame, peer_log: pd.DataFrame) -> float:
    """|final training accuracy of ``ncsim_log`` - that of ``peer_log``| (inf when either is
    NaN)."""
    a = ncsim_log.sort_values("time")["accuracy"].iloc[-1]
    b = peer_log.sort_values("time")["accuracy"].iloc[-1]
    diff = float(abs(a - b))
    return diff if math.isfinite(diff) else math.inf


def trend_difference(ncsim_log: pd.DataFrame, peer_log: pd.DataFrame) -> float:
    """Largest relative difference over every record of the columns :data:`TREND` (loss, fn,
    training accuracy), entry by entry as :func:`log_difference`: the loose whole-log check
    for runs that cannot agree to rounding (inf when the record times differ or a NaN or
    infinity of one log is not in the other)."""
    return log_difference(ncsim_log, peer_log, columns=TREND)
