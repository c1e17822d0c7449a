"""Where W1's time goes on a device: right-hand side, steps, records, host work.

Prints (and writes as JSON with ``--out``):

- one right-hand-side evaluation of the whole W1 batch (median of ``--calls`` calls);
- ``simulate`` on W1 with its 200 records and with 2 (the difference is the records' cost:
  dense output, queue, NC metrics), its phases, steps and the time per batch step;
- the host preparation in parts (run specs, run ids, the batch with its initial draws);
- the records' share: ``simulate`` once more with every flush of the record queue timed
  between two device synchronisations, and the number of metrics calls and states;
- ``simulate`` under each loop variant of ``--variants``: the record times a device step may
  cross (``crossings``), the byte budget of a metrics call (``block_bytes``; 0 gives the
  fixed 1024 states a call of earlier versions) and CUDA graphs;
- a ``torch.profiler`` table of a short W1 run: the operators with the most device time, and
  the CPU time against the device time (a launch-bound loop has CPU time >= device time).

    python benchmarks/device_profile.py --device cuda --dtype float32 [--grid 64] [--out F]
        [--variants c1_b0,c1,c2,c3,c2_graphs]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import workloads  # noqa: E402
from ncsim.bench import _with_device, _with_solver  # noqa: E402
from ncsim.flow.simulate import _Batch, _run_specs, simulate, unique_run_ids  # noqa: E402

INTEGRATE = importlib.import_module("ncsim.flow.integrate")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _specs(grid: int, t_end: float, records: int, dtype: str, device: str) -> list:
    return _with_device(workloads.w1(grid=grid, t_end=t_end, records=records,
                                     dtype=dtype).specs, device)


def rhs_time(specs: list, device: str, calls: int) -> float:
    """Median seconds of one velocity evaluation of the whole batch."""
    batch = _Batch(specs)
    y, out = batch.y0, torch.empty_like(batch.y0)
    batch.velocity(y, out=out)
    times = []
    for _ in range(calls):
        _sync(device)
        start = time.perf_counter()
        batch.velocity(y, out=out)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def simulate_row(specs: list, device: str) -> dict:
    """One timed ``simulate`` call (after the caller's warm-up): seconds, phases, steps."""
    _sync(device)
    start = time.perf_counter()
    res = simulate(specs, theory=False)
    _sync(device)
    seconds = time.perf_counter() - start
    steps_max = int(res.runs.steps.max())
    return {"seconds": seconds, "phases_s": res.timings, "steps_max": steps_max,
            "steps_total": int(res.runs.steps.sum()),
            "integrate_s_per_batch_step": res.timings["integrate_s"] / steps_max}


def prepare_parts(specs: list, device: str) -> dict:
    """Seconds of the host preparation's parts for ``specs`` (one batch)."""
    times, start = {}, time.perf_counter()
    runs = _run_specs(specs)
    times["run_specs_s"] = time.perf_counter() - start
    start = time.perf_counter()
    unique_run_ids(runs)
    times["run_ids_s"] = time.perf_counter() - start
    start = time.perf_counter()
    _Batch(runs)
    _sync(device)
    times["batch_s"] = time.perf_counter() - start
    return times


def records_share(specs: list, device: str) -> dict:
    """``simulate`` with each flush of the record queue timed between synchronisations (which
    the timing adds: the total is above an untimed run's); metrics calls and their states."""
    flush_s, calls, states = [0.0], [0], [0]
    real_flush, real_record = INTEGRATE._Recorder.flush, _Batch.record

    def flush(self) -> None:
        _sync(device)
        start = time.perf_counter()
        real_flush(self)
        _sync(device)
        flush_s[0] += time.perf_counter() - start

    def record(self, states_: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        states[0] += states_.shape[0]
        return real_record(self, states_, runs)

    INTEGRATE._Recorder.flush, _Batch.record = flush, record
    try:
        row = simulate_row(specs, device)
    finally:
        INTEGRATE._Recorder.flush, _Batch.record = real_flush, real_record
    row.update(flush_s=flush_s[0], metrics_calls=calls[0], metrics_states=states[0])
    return row


def _variant(name: str) -> tuple[int, int | None, bool]:
    """(crossings, block bytes or None for the default, graphs) of a name like c2, c1_b0,
    c2_graphs."""
    parts = name.split("_")
    crossings = int(parts[0].removeprefix("c"))
    block = next((int(p.removeprefix("b")) for p in parts[1:] if p.startswith("b")), None)
    return crossings, block, "graphs" in parts[1:]


def variant_row(specs: list, device: str, name: str) -> dict:
    """One timed ``simulate`` under the loop variant ``name`` (see :func:`_variant`)."""
    crossings, block, graphs = _variant(name)
    saved = INTEGRATE._DEVICE_CROSSINGS, INTEGRATE._RECORD_BLOCK_BYTES_DEVICE
    INTEGRATE._DEVICE_CROSSINGS = crossings
    if block is not None:
        INTEGRATE._RECORD_BLOCK_BYTES_DEVICE = block
    try:
        return simulate_row(_with_solver(specs, cuda_graphs=graphs), device)
    finally:
        INTEGRATE._DEVICE_CROSSINGS, INTEGRATE._RECORD_BLOCK_BYTES_DEVICE = saved


def profile_table(specs: list, device: str, rows: int) -> dict:
    """The profiler's top operators by device (or CPU) self time, and the totals."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        simulate(specs, theory=False)
        _sync(device)
    events = prof.key_averages()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = events.table(sort_by=key, row_limit=rows)
    cpu_total = sum(e.self_cpu_time_total for e in events) / 1e6
    # the kernels' own events: an operator's self device time is its kernels' again (the
    # table's footer, "Self CUDA time total", is this sum)
    device_total = sum(e.self_device_time_total for e in events
                       if e.device_type == DeviceType.CUDA) / 1e6
    launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel",
                                                                 "cuLaunchKernel")))
    return {"table": table, "cpu_self_s": cpu_total, "device_self_s": device_total,
            "kernel_launches": launches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--t-end", type=float, default=5e3)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--profile-t-end", type=float, default=50.0)
    parser.add_argument("--variants", default="",
                        help="comma-separated loop variants (c<crossings>[_b<bytes>][_graphs])")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out: dict = {"device": args.device, "dtype": args.dtype, "grid": args.grid,
                 "t_end": args.t_end, "torch": torch.__version__}
    full = _specs(args.grid, args.t_end, 200, args.dtype, args.device)
    out["rhs_s"] = rhs_time(full, args.device, args.calls)
    print(f"rhs: {out['rhs_s'] * 1e3:.3f} ms per evaluation of {len(full)} runs", flush=True)
    simulate(_specs(args.grid, 10.0, 20, args.dtype, args.device), theory=False)  # warm-up
    for records in (200, 2):
        row = simulate_row(_specs(args.grid, args.t_end, records, args.dtype, args.device),
                           args.device)
        out[f"simulate_records_{records}"] = row
        print(f"simulate, {records} records: {row['seconds']:.3f} s, phases "
              f"{ {k: round(v, 3) for k, v in row['phases_s'].items()} }, steps max "
              f"{row['steps_max']}, {row['integrate_s_per_batch_step'] * 1e3:.2f} ms per "
              "batch step", flush=True)
    out["prepare_parts"] = prepare_parts(full, args.device)
    print(f"prepare parts: { {k: round(v, 3) for k, v in out['prepare_parts'].items()} }",
          flush=True)
    row = records_share(full, args.device)
    out["records_share"] = row
    print(f"records: {row['flush_s']:.3f} s in flushes of {row['seconds']:.3f} s, "
          f"{row['metrics_calls']} metrics calls of {row['metrics_states']} states", flush=True)
    for name in filter(None, args.variants.split(",")):
        row = variant_row(full, args.device, name)
        out[f"variant_{name}"] = row
        print(f"variant {name}: {row['seconds']:.3f} s, phases "
              f"{ {k: round(v, 3) for k, v in row['phases_s'].items()} }, steps max "
              f"{row['steps_max']}", flush=True)
    prof = profile_table(_specs(args.grid, args.profile_t_end, 20, args.dtype, args.device),
                         args.device, rows=25)
    print(prof["table"])
    print(f"profile (t_end {args.profile_t_end}): CPU self {prof['cpu_self_s']:.3f} s, "
          f"device self {prof['device_self_s']:.3f} s, kernel launches "
          f"{prof['kernel_launches']}", flush=True)
    out["profile"] = prof
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
