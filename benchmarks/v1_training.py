"""Benchmark V1 (reduced CPU size): training-loop speed and the cost of NC tracking.

Workload: MLP-5 (width 512, ReLU) on a class-balanced Fashion-MNIST subset, MSE-free CE epochs
with Adam (lr 1e-3), batch 256, float32.

(a) NC tracking cost: time of one NC record (:func:`ncsim.validate.train.nc_record`, the
    record that ``train`` takes every ``nc_every`` epochs: one forward pass over the training
    set, without the optional test-set pass) as a fraction of one training epoch of the ncsim
    loop, and the amortised overhead ``record / (nc_every x epoch)`` at the paper's
    ``nc_every`` = 10 (target <= 15%).
(b) Loop speed: the ncsim loop (data as tensors on the device, batches indexed from a seeded
    permutation) against a plain ``torch.utils.data.DataLoader(TensorDataset, batch_size=256,
    shuffle=True)`` loop; the same network, optimiser and number of steps.

Torch runs with 2 intra-op threads (``--threads``). Medians of ``--repeats`` repeats, measured
in the same process; the result goes to ``benchmarks/results/v1_<device>.json``. Usage:
``python benchmarks/v1_training.py [--samples 10000] [--device cuda] [--root FOLDER]``.

On a GPU (``--device cuda``) the ncsim loop keeps the data on the device, as ``train`` does;
the DataLoader loop keeps it on the host and moves each batch (``pin_memory``,
``non_blocking``), as a plain training script does. Every timed block ends with a device
synchronisation. ``--root`` is a folder holding the Fashion-MNIST IDX files (default: the
Debian package folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ncsim.validate.data import load_dataset
from ncsim.validate.networks import build_network
from ncsim.validate.train import nc_record

RESULTS = Path(__file__).parent / "results"
CPU = torch.device("cpu")


def _model(seed: int, device: torch.device = CPU) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("mlp", (1, 28, 28), 10, depth=5, width=512).to(device)


def epoch_ncsim(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
                gen: torch.Generator) -> None:
    """One epoch of the ncsim loop: x (N, 1, 28, 28), y (N,) tensors, permutation indexing."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    for start in range(0, x.shape[0], batch):
        idx = perm[start:start + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def epoch_dataloader(model: torch.nn.Module, loader: DataLoader,
                     device: torch.device = CPU) -> None:
    """One epoch of a plain DataLoader loop over a TensorDataset (batches moved to ``device``)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo ("" when unavailable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def timed(fn: Callable[[], object], device: torch.device = CPU) -> float:
    """Wall time of ``fn()`` in seconds (the device synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="training samples (balanced)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default results/v1_<device>.json)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST IDX files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or RESULTS / f"v1_{device.type}.json"

    host = load_dataset("fashion_mnist", per_class=args.samples // 10, test_per_class=100,
                        root=args.root)
    data = host.to(device)
    x, y = data.x_train, data.y_train
    loader = DataLoader(TensorDataset(host.x_train, host.y_train), batch_size=args.batch,
                        shuffle=True, generator=torch.Generator().manual_seed(0),
                        pin_memory=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    model = _model(0, device)
    epoch_ncsim(model, x, y, args.batch, gen)  # warm-up
    epoch_dataloader(model, loader, device)
    t_ncsim, t_loader, t_nc, t_nc_test = [], [], [], []
    for rep in range(args.repeats):
        m = _model(rep, device)
        t_ncsim.append(timed(lambda m=m: epoch_ncsim(m, x, y, args.batch, gen), device))
        m = _model(rep, device)
        t_loader.append(timed(lambda m=m: epoch_dataloader(m, loader, device), device))
        t_nc.append(timed(lambda m=m: nc_record(m, data, "ce", test=False), device))
        t_nc_test.append(timed(lambda m=m: nc_record(m, data, "ce", test=True), device))
    med = {k: statistics.median(v) for k, v in
           (("epoch_ncsim_s", t_ncsim), ("epoch_dataloader_s", t_loader), ("nc_record_s", t_nc),
            ("nc_record_with_test_s", t_nc_test))}
    frac = med["nc_record_s"] / med["epoch_ncsim_s"]
    result = {
        "workload": (f"V1 reduced: MLP-5 width 512 on Fashion-MNIST, {x.shape[0]} training "
                     f"samples, batch {args.batch}, Adam, one epoch per repeat; NC record on the "
                     f"training set, test-set pass ({data.x_test.shape[0]} samples) timed "
                     "separately"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": {
                    "platform": platform.platform(), "processor": platform.processor(),
                    "cpu_model": cpu_model(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch_interop_threads": torch.get_num_interop_threads()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "repeats": args.repeats,
        "times_s": {"epoch_ncsim": t_ncsim, "epoch_dataloader": t_loader, "nc_record": t_nc,
                    "nc_record_with_test": t_nc_test},
        "medians_s": med,
        "ratios": {
            "nc_record_over_epoch": frac,
            "nc_overhead_amortised_nc_every_10": frac / 10,
            "nc_tracking_target": 0.15,
            "dataloader_over_ncsim": med["epoch_dataloader_s"] / med["epoch_ncsim_s"],
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["medians_s"]), json.dumps(result["ratios"]))


if __name__ == "__main__":
    main()
