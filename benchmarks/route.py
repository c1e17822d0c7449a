"""Whole simulations with CPU float64 products through numpy and through torch.

Usage: ``python benchmarks/route.py [--repeats 3] [--workload W1 --workload W2] [--out F]``.
Runs W1 (8 x 8 grid, T = 2e4) and W2 in d space (K = 10, n = 20, d = 4096, 4 runs) on one
thread with :data:`ncsim.products.HOST_BLAS` on and off, the two routes interleaved in each
repeat, and prints (and with ``--out`` writes as JSON) the medians and their ratio with the
machine (CPU model and vendor, BLAS libraries) they came from. This is the measurement behind
:func:`ncsim.products.host_route_default`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workloads import w1, w2  # noqa: E402
from ncsim import heap, products  # noqa: E402
from ncsim.bench import machine  # noqa: E402
from ncsim.flow.simulate import simulate  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402

WORKLOADS = {"W1": w1, "W2": lambda: w2(reduction="none")}


def time_routes(name: str, repeats: int) -> dict:
    """Seconds of the whole simulation of workload ``name`` by each route, per repeat."""
    specs = WORKLOADS[name]().specs
    simulate(specs[:1], theory=False)  # warm-up: imports, allocator
    seconds: dict[str, list[float]] = {"numpy": [], "torch": []}
    for _ in range(repeats):
        for route in seconds:
            products.HOST_BLAS = route == "numpy"
            start = time.perf_counter()
            simulate(specs, theory=False)
            seconds[route].append(time.perf_counter() - start)
            print(f"{name} {route}: {seconds[route][-1]:.2f} s", flush=True)
    medians = {route: statistics.median(v) for route, v in seconds.items()}
    return {"seconds": seconds, "median_s": medians,
            "numpy_time_over_torch_time": medians["numpy"] / medians["torch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    set_threads(1)
    heap.keep_freed_memory()
    default = products.HOST_BLAS
    try:
        results = {name: time_routes(name, args.repeats)
                   for name in args.workload or sorted(WORKLOADS)}
    finally:
        products.HOST_BLAS = default
    out = {"machine": machine(), "cpu_vendor": products.cpu_vendor(),
           "numpy_blas": products.numpy_blas(), "default_route_here":
           "numpy" if default else "torch", "workloads": results}
    for name, row in results.items():
        ratio = row["numpy_time_over_torch_time"]
        print(f"{name}: numpy {row['median_s']['numpy']:.2f} s, torch "
              f"{row['median_s']['torch']:.2f} s (numpy takes {ratio:.2f}x torch's time)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
