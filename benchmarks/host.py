"""Host-side cost of a large batch: what ``simulate`` spends besides the flow.

On an accelerator the flow of W1's 4096 runs takes a fraction of a second, so the host's
share (validating and hashing the specs, drawing the initial states, building the tables,
the theory columns) decides the wall time. This times each part on W1's GPU grid (64 x 64
runs, K = 10, n = 20, d = 32, 200 records) on the CPU:

- ``validate_s`` and ``run_ids_s``: validating the specs (as ``simulate`` does: a part shared
  by several specs is checked once) and their run ids;
- ``initial_state_s``: the float64 Gaussian draws of every run, on 1 thread and on
  ``--threads`` (the draws are the same on any number of threads);
- ``trajectory_table_s``: the long trajectory table of R x 200 records (NaN-free);
- ``onsets_s`` and ``onsets_per_run_loop_s``: the onset times and fn at onset of the batch
  in one call (``onsets_and_fn``, what ``simulate`` uses) and run by run (``onset_and_fn``),
  on W1 trajectories (the records of a real 4 x 4 grid, repeated to fill the batch);
- ``summary_host_s``: the run and trajectory tables of the batch from those records
  (``simulate``'s summary with its device work, the metrics of the final states and the
  objective at the start, replaced by constants);
- ``theory_per_run_ms``: the closed-form theory columns of one run (mean over 128 runs of the
  grid, each a different parameter point; runs that share one, e.g. seeds, share the call).

Usage: ``python benchmarks/host.py [--grid 64] [--records 200] [--threads 2] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workloads import w1  # noqa: E402
from ncsim.bench import machine, timed  # noqa: E402
from ncsim.flow.integrate import FlowResult  # noqa: E402
from ncsim.flow.simulate import (  # noqa: E402
    RECORDED,
    _Batch,
    _run_specs,
    _summarise,
    _theory_columns,
    _trajectory_frame,
    simulate,
    unique_run_ids,
)
from ncsim.heap import keep_freed_memory  # noqa: E402
from ncsim.models import initial_state  # noqa: E402
from ncsim.onset import onset_and_fn, onsets_and_fn  # noqa: E402
from ncsim.theory import predicted_onset  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402


def _median(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``."""
    return timed(fn, repeats)[0]["median_s"]


def host_costs(grid: int, records: int, threads: int, repeats: int = 3,
               theory_runs: int = 128, real_grid: int = 4) -> dict:
    """Seconds of each host-side part of ``simulate`` for a ``grid`` x ``grid`` W1 batch."""
    specs = w1(grid=grid, t_end=5e3, records=records, dtype="float32").specs
    model, inits = specs[0].model, [s.init for s in specs]
    out: dict = {"runs": len(specs), "records": records, "threads": threads}

    out["validate_s"] = _median(lambda: _run_specs(specs), repeats)
    out["run_ids_s"] = _median(lambda: unique_run_ids(specs), repeats)
    before = torch.get_num_threads()
    try:
        for count in sorted({1, threads}):
            set_threads(count)
            out[f"initial_state_s_threads{count}"] = _median(
                lambda: initial_state(model, inits, "cpu", torch.float32), repeats)
    finally:
        set_threads(before)
    ids = unique_run_ids(specs)
    times = np.concatenate([[0.0], np.geomspace(1e-2, 5e3, records - 1)])
    table = np.random.default_rng(0).random((len(specs), records, len(RECORDED)))
    out["trajectory_table_s"] = _median(lambda: _trajectory_frame(ids, times, table), repeats)
    out.update(summary_costs(specs, ids, records, repeats, real_grid))
    sample = specs[:: max(1, len(specs) // theory_runs)][:theory_runs]
    _theory_columns(sample[0])
    predicted_onset.cache_clear()  # every point computed, none taken from earlier calls
    start = time.perf_counter()
    for s in sample[1:]:
        _theory_columns(s)
    out["theory_per_run_ms"] = (time.perf_counter() - start) / max(1, len(sample) - 1) * 1e3
    return out


def w1_flow(runs: int, records: int, real_grid: int = 4) -> FlowResult:
    """A stand-in flow of ``runs`` W1 runs: the records of a real ``real_grid`` x
    ``real_grid`` W1 grid (T = 5e3), repeated to fill the batch; no final states (the
    summary's device work is left out)."""
    real = simulate(w1(grid=real_grid, t_end=5e3, records=records).specs, theory=False)
    frame = real.trajectories
    series = np.stack([frame[frame["run_id"] == rid][list(RECORDED)].to_numpy()
                       for rid in real.runs["run_id"]])  # (G^2, T, Q): every run reached T
    take = np.arange(runs) % len(series)
    return FlowResult(records=series[take], times=frame["time"].to_numpy()[:records],
                      t_final=np.full(runs, 5e3), steps=real.runs["steps"].to_numpy()[take],
                      rejected=np.zeros(runs, np.int64), code=np.zeros(runs, np.int64),
                      final_state=torch.zeros(runs, 1), grad_norm=np.zeros(runs))


def summary_costs(specs: list, ids: list[str], records: int, repeats: int,
                  real_grid: int = 4) -> dict:
    """Seconds of the onsets (batched and run by run) and of the host part of the summary."""
    flow = w1_flow(len(specs), records, real_grid)
    batch = _Batch(specs)
    batch.record = lambda states, runs: torch.ones(len(runs), len(RECORDED),
                                                   dtype=torch.float64)
    batch.objective_values = lambda y: np.ones(y.shape[0])
    onset, q = specs[0].onset, {name: i for i, name in enumerate(RECORDED)}
    metric, fn = flow.records[:, :, q[onset.metric]], flow.records[:, :, q["fn"]]
    rule = (onset.threshold, onset.stay, onset.interpolate)
    return {
        "onsets_s": _median(lambda: onsets_and_fn(flow.times, metric, fn, *rule), repeats),
        "onsets_per_run_loop_s": _median(
            lambda: [onset_and_fn(flow.times, metric[i], fn[i], *rule)
                     for i in range(len(specs))], repeats),
        "onsets_found": int(np.isfinite(onsets_and_fn(flow.times, metric, fn, *rule)[0]).sum()),
        "summary_host_s": _median(lambda: _summarise(batch, flow, ids), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    keep_freed_memory()
    result = {"machine": machine(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              **host_costs(args.grid, args.records, args.threads, args.repeats)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
