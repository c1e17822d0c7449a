"""Scaling sweeps of ncsim: time against the number of runs R, the width d and the number of
samples N, for the d-space and the Gram-space forms; writes JSON and log-log PNGs.

Usage: ``python benchmarks/scaling.py [--out benchmarks/results] [--threads 1]``.
The right-hand side (one velocity evaluation of the whole batch) is timed, median of 5; the
"runs" sweep also times a whole short simulation (W1 model, T = 200, 50 records).
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

from benchmarks.workloads import w1  # noqa: E402
from ncsim.bench import machine  # noqa: E402
from ncsim.flow.simulate import _Batch, simulate  # noqa: E402
from ncsim.heap import keep_freed_memory  # noqa: E402
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402


def _median(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rhs_time(runs: int, dim: int, per_class: int, reduction: str, classes: int = 10) -> float:
    """Seconds per velocity evaluation of a batch of ``runs`` one-layer UFM-CE runs."""
    model = ModelSpec(loss="ce", classes=classes, per_class=per_class, dim=dim)
    specs = [RunSpec(model=model, reg=Regularization(1e-3, 1e-3), init=InitSpec(seed=i),
                     solver=SolverSpec(reduction=reduction)) for i in range(runs)]
    batch = _Batch(specs)
    y = batch.y0
    batch.velocity(y)
    return _median(lambda: batch.velocity(y))


def sweep() -> dict:
    out: dict = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc)
                 .isoformat(), "rhs": [], "simulate_runs": []}
    for red in ("none", "gram"):
        for r in (1, 4, 16, 64, 256):
            out["rhs"].append({"sweep": "runs", "form": red, "R": r, "d": 32, "N": 200,
                               "s": rhs_time(r, 32, 20, red)})
        for d in (32, 128, 512, 2048, 4096):
            out["rhs"].append({"sweep": "d", "form": red, "R": 4, "d": d, "N": 200,
                               "s": rhs_time(4, d, 20, red)})
        for n in (5, 10, 20, 50, 100):
            out["rhs"].append({"sweep": "N", "form": red, "R": 4, "d": 512, "N": 10 * n,
                               "s": rhs_time(4, 512, n, red)})
    for grid in (1, 2, 4, 8):
        wl = w1(grid=grid, t_end=200.0, records=50)
        out["simulate_runs"].append({"R": grid * grid, "s": _median(
            lambda wl=wl: simulate(wl.specs, theory=False), 3)})
    return out


def plot(data: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label in (("R", "runs R"), ("d", "width d"), ("N", "samples N")):
        sweep_name = {"R": "runs", "d": "d", "N": "N"}[key]
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for form, style in (("none", "o-"), ("gram", "s--")):
            rows = [r for r in data["rhs"] if r["sweep"] == sweep_name and r["form"] == form]
            ax.loglog([r[key] for r in rows], [r["s"] for r in rows], style,
                      label={"none": "d-space", "gram": "Gram space"}[form])
        if key == "R":
            rows = data["simulate_runs"]
            ax.loglog([r["R"] for r in rows], [r["s"] for r in rows], "^:",
                      label="W1 simulate (T=200)")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per RHS of the batch" if key != "R" else "seconds")
        ax.set_title(f"time against {label} (UFM-CE, K=10)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"scaling_{sweep_name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replot", default=None, help="plot a saved sweep JSON again")
    args = parser.parse_args()
    set_threads(args.threads)  # torch and the BLAS libraries (CPU float64 products)
    keep_freed_memory()  # as the command line does
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.replot:
        for path in plot(json.loads(Path(args.replot).read_text()), folder):
            print(path)
        return
    data = sweep()
    stamp = datetime.date.today().isoformat()
    (folder / f"scaling_cpu_{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")
    for path in plot(data, folder):
        print(path)
    print(json.dumps({k: v for k, v in data.items() if k != "machine"}, default=float,
                     indent=1)[:3000])


if __name__ == "__main__":
    main()
