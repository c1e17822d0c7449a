"""Batched products on the CPU: torch.bmm against numpy's matmul at the flows' shapes.

Usage: ``python benchmarks/products.py [--out benchmarks/results] [--threads 1]``.
For every shape R x (m x k x n) and dtype it times (median of 7 repeats, one variant after the
other) the product with a fresh result (as a right-hand side makes its logits) and into a held
result (as the stage buffer is written), and the stage sum sum_j a_j k_j over (s, R P) stages
as a matrix-vector product (torch, numpy) and entry by entry, as the integrator forms it (so
that a run's bits do not depend on its batch);
it writes ``products_cpu_<date>.json`` (``_threads<N>`` added for N > 1). This is the
measurement behind the route of :mod:`ncsim.products` (CPU float64 through numpy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ncsim.bench import machine  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402

# (label, R, m, k, n, transpose the first operand)
SHAPES = [
    ("W1: W H", 64, 10, 32, 200, False),
    ("W1: W^T G", 64, 32, 10, 200, True),
    ("W1 late batch: W H", 16, 10, 32, 200, False),
    ("W2 Gram: G B", 2, 10, 200, 200, False),
    ("W2 d-space: W H", 4, 10, 4096, 200, False),
    ("W2 d-space: W^T G", 4, 4096, 10, 200, True),
    ("W3: W H", 16, 100, 512, 5000, False),
    ("deep: W_l A", 64, 32, 32, 200, False),
    ("tiny", 64, 10, 10, 10, False),
    ("square 512", 8, 512, 512, 512, False),
]
# (label, stages s, R P)
STAGE_SUMS = [("W1 stage sum, 64 runs", 6, 64 * 6720), ("W1 stage sum, 20 runs", 6, 20 * 6720),
              ("W2 Gram stage sum", 6, 2 * 42100)]


REPEAT_BUDGET_S = 0.2
"""Seconds each of the 7 repeats of a measurement lasts (about)."""


def _median_time(fn) -> float:
    """Median seconds of one call over 7 repeats, each repeating ``fn`` for about
    :data:`REPEAT_BUDGET_S`."""
    budget = REPEAT_BUDGET_S
    fn()
    start = time.perf_counter()
    fn()
    calls = max(1, int(budget / max(time.perf_counter() - start, 1e-7)))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _operands(r: int, m: int, k: int, n: int, transpose: bool, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    if transpose:  # the first operand as the transposed view of a stored (R, k, m) block
        a = torch.randn(r, k, m, generator=gen, dtype=dtype).transpose(1, 2)
    else:
        a = torch.randn(r, m, k, generator=gen, dtype=dtype)
    b = torch.randn(r, k, n, generator=gen, dtype=dtype)
    return a, b, torch.empty(r, m, n, dtype=dtype)


def product_row(label: str, r: int, m: int, k: int, n: int, transpose: bool,
                dtype: torch.dtype) -> dict:
    """GFLOP/s of torch.bmm and numpy matmul, with a fresh and with a held result."""
    a, b, held = _operands(r, m, k, n, transpose, dtype)
    a_np, b_np, held_np = a.numpy(), b.numpy(), held.numpy()
    flops = 2.0 * r * m * k * n
    times = {"torch_fresh": _median_time(lambda: torch.bmm(a, b)),
             "numpy_fresh": _median_time(lambda: np.matmul(a_np, b_np)),
             "torch_held": _median_time(lambda: torch.bmm(a, b, out=held)),
             "numpy_held": _median_time(lambda: np.matmul(a_np, b_np, out=held_np))}
    row = {"label": label, "R": r, "m": m, "k": k, "n": n, "transposed_first": transpose,
           "dtype": str(dtype).removeprefix("torch."),
           **{f"{key}_gflops": flops / t / 1e9 for key, t in times.items()}}
    row["numpy_over_torch_fresh"] = times["torch_fresh"] / times["numpy_fresh"]
    row["numpy_over_torch_held"] = times["torch_held"] / times["numpy_held"]
    return row


def stage_sum_row(label: str, stages: int, size: int, dtype: torch.dtype) -> dict:
    """Milliseconds of the stage sum (s,) @ (s, R P) with torch and numpy, and entry by entry
    (one multiply, then one fused multiply-add per further stage: the integrator's way)."""
    gen = torch.Generator().manual_seed(1)
    buffer = torch.randn(stages + 1, size, generator=gen, dtype=dtype)
    weights = torch.randn(stages, generator=gen, dtype=dtype)
    torch_s = _median_time(lambda: weights @ buffer[:stages])
    numpy_s = _median_time(lambda: np.matmul(weights.numpy(), buffer[:stages].numpy()))
    alphas = [float(w) for w in weights]

    def entrywise() -> torch.Tensor:
        acc = torch.mul(buffer[0], alphas[0])
        for j in range(1, stages):
            acc.add_(buffer[j], alpha=alphas[j])
        return acc

    entrywise_s = _median_time(entrywise)
    return {"label": label, "stages": stages, "size": size,
            "dtype": str(dtype).removeprefix("torch."), "torch_ms": torch_s * 1e3,
            "numpy_ms": numpy_s * 1e3, "entrywise_ms": entrywise_s * 1e3,
            "numpy_over_torch": torch_s / numpy_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    rows, sums = [], []
    for dtype in (torch.float64, torch.float32):
        for label, *shape in SHAPES:
            row = product_row(label, *shape, dtype)
            rows.append(row)
            print(f"{row['dtype']} {label:22s} numpy/torch fresh "
                  f"x{row['numpy_over_torch_fresh']:.2f} held x{row['numpy_over_torch_held']:.2f}",
                  flush=True)
        for label, stages, size in STAGE_SUMS:
            row = stage_sum_row(label, stages, size, dtype)
            sums.append(row)
            print(f"{row['dtype']} {label:22s} numpy/torch x{row['numpy_over_torch']:.2f}",
                  flush=True)
    day = datetime.date.today().isoformat()
    suffix = "" if args.threads == 1 else f"_threads{args.threads}"
    path = Path(args.out) / f"products_cpu_{day}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": day, "machine": machine(), "threads": args.threads,
                                "products": rows, "stage_sums": sums}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
