"""NC metrics of recorded states: ``nc_metrics`` against the same metrics one by one.

Usage: ``python benchmarks/metrics.py [--out benchmarks/results] [--threads 1] [--device cpu]``.
For blocks of R W1 states (K = 10, n = 20, d = 32; features given as the transposed view of
H (R, d, N), as the simulator hands them over) it times, one after the other in each of 15
rounds, ``nc_metrics`` (nc1 and nc4 from one product of the centred features) and the route
that computes each metric on its own (``nc_metrics_from_stats``), and reports the medians per
state and their ratio, with the largest relative difference of the two results. Writes
``metrics_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ncsim import heap  # noqa: E402
from ncsim.bench import machine  # noqa: E402
from ncsim.metrics import class_statistics, nc_metrics, nc_metrics_from_stats  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402

K, PER_CLASS, DIM = 10, 20, 32
BLOCKS = (16, 128, 1024, 4096)
ROUNDS = 15


def _states(r: int, dtype: torch.dtype, device: str):
    """Features (R, N, d) as a transposed view, labels (N,), weights (R, K, d): class means
    spread ~3 with unit within-class noise, as W1 states midway to collapse."""
    gen = torch.Generator().manual_seed(r)
    n = K * PER_CLASS
    labels = torch.arange(K).repeat_interleave(PER_CLASS)
    centres = 3.0 * torch.randn(r, DIM, K, generator=gen, dtype=torch.float64)
    h = centres[..., labels] + torch.randn(r, DIM, n, generator=gen, dtype=torch.float64)
    w = torch.randn(r, K, DIM, generator=gen, dtype=torch.float64)
    return (h.to(device, dtype).transpose(1, 2), labels.to(device), w.to(device, dtype))


def _one_by_one(feats, labels, weights):
    feats = feats.contiguous()
    return nc_metrics_from_stats(class_statistics(feats, labels, K), feats, weights)


def _timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def block_row(r: int, dtype: torch.dtype, device: str) -> dict:
    """Medians (us per state) of both routes at block size ``r``, their ratio and the largest
    relative difference of any metric."""
    feats, labels, weights = _states(r, dtype, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fused_fn = lambda: nc_metrics(feats, labels, K, weights)  # noqa: E731
    plain_fn = lambda: _one_by_one(feats, labels, weights)  # noqa: E731
    fused_fn(), plain_fn()
    fused, plain = [], []
    for _ in range(ROUNDS):
        fused.append(_timed(fused_fn, sync))
        plain.append(_timed(plain_fn, sync))
    a, b = fused_fn(), plain_fn()
    diff = max(float(((a[k] - b[k]).abs() / b[k].abs().clamp_min(1e-300)).nan_to_num().max())
               for k in a)
    fused_us, plain_us = (statistics.median(t) / r * 1e6 for t in (fused, plain))
    return {"R": r, "dtype": str(dtype).removeprefix("torch."), "fused_us_per_state": fused_us,
            "one_by_one_us_per_state": plain_us, "speedup": plain_us / fused_us,
            "max_rel_difference": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    set_threads(args.threads)
    heap.keep_freed_memory()
    rows = []
    for dtype in (torch.float64, torch.float32):
        for r in BLOCKS:
            row = block_row(r, dtype, args.device)
            rows.append(row)
            print(f"{row['dtype']} R={r:5d}: nc_metrics {row['fused_us_per_state']:7.1f} us/state,"
                  f" one by one {row['one_by_one_us_per_state']:7.1f} (x{row['speedup']:.2f}),"
                  f" max rel difference {row['max_rel_difference']:.1e}", flush=True)
    day = datetime.date.today().isoformat()
    device = args.device.split(":")[0]
    path = Path(args.out) / f"metrics_{device}_{day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"date": day, "machine": machine(args.device), "threads": args.threads,
              "device": args.device, "K": K, "n": PER_CLASS, "d": DIM, "rounds": ROUNDS,
              "blocks": rows}
    path.write_text(json.dumps(record, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
