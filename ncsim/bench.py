"""``ncsim bench``: time ncsim against peer ODE solvers (W1-W3) and a plain training loop (V1).

Every solver runs in this one process, one after the other, with the same number of torch
threads; each time is the median of ``repeats`` runs (fewer than 3 are flagged by a
``warning`` in the results). The result of every repeat of every solver must reach the stated
accuracy (W1: fn(T) within 1e-6 (float64) or 1e-3 (float32) of a float64 reference, see
:func:`bench_w1`; W2: the Gram form equals the d-space form to 1e-9; V1: the peer's training
log equals ncsim's, see :func:`_check_training`) or the benchmark fails with an
AssertionError. A peer's failure, and that of an ncsim variant of W1 (tsit5, CUDA graphs), is
reported in its row so that the other measurements survive; a failed ncsim row still makes
``ncsim bench`` exit with status 1 once the JSON is written. Results are printed and written
as JSON (machine, versions, timings, ratios, peak memory). ncsim's rows also give
``phases_s``, the last repeat's split of ``simulate`` into preparation (initial states),
integration and summary (tables) from :attr:`ncsim.flow.simulate.SimulationResult.timings`:
the peers are timed from prepared tensors, so their times compare with ``integrate_s``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from ncsim import __version__ as ncsim_version
from ncsim import heap
from ncsim import products as cpu_products
from ncsim.cli_errors import OutPath, check_out_folder, handle_errors
from ncsim.errors import InputError, is_integer
from ncsim.io import atomic_write, to_jsonable
from ncsim.spec import require_device
from ncsim.threads import THREADS_MAX, bounded_threads

ROOT = Path(__file__).resolve().parents[1]


def _benchmarks():
    """The ``benchmarks`` package of the source tree (workloads and ODE peers)."""
    try:
        import benchmarks.peers  # noqa: F401
    except ImportError:
        if not (ROOT / "benchmarks" / "workloads.py").is_file():
            raise InputError("ncsim bench needs the benchmarks/ folder of ncsim's source tree "
                             "(workloads and peers are not installed with the package); run "
                             "it from a checkout installed with pip install -e") from None
        sys.path.insert(0, str(ROOT))
    import benchmarks.peers as peers
    import benchmarks.workloads as workloads

    return workloads, peers


# ------------------------------------------------------------------------------ measurement


def machine(device: str = "cpu") -> dict[str, Any]:
    """Machine, library versions, thread settings and whether freed heap is kept
    (:mod:`ncsim.heap`; the command line keeps it); ``gpu``: the name of the CUDA device
    ``device`` (of the current one when ``device`` is not a CUDA device)."""
    import scipy

    cpu = cpu_products.cpuinfo_field("model name") or platform.processor()
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "blas_threads": _blas_threads(), "heap_kept": heap.kept(),
        "cpu_float64_products": "numpy" if cpu_products.HOST_BLAS else "torch",
        "ncsim": ncsim_version, "ncsim_commit": _commit(),
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    for name in ("torchdiffeq", "torchode"):
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            info[name] = None
    if torch.cuda.is_available():
        cuda = torch.device(device).type == "cuda"
        info["gpu"] = torch.cuda.get_device_name(torch.device(device) if cuda else None)
    return info


def _commit() -> str | None:
    """The git commit of the source checkout that is timed (None outside a checkout), with
    ``+dirty`` when it has uncommitted changes to tracked files."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PeakMemory:
    """Peak memory of a block: CUDA peak allocation, or peak resident-set growth on the CPU
    (sampled every 2 ms from /proc/self/statm).

    Attributes
    ----------
    peak : bytes above the level at entry.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the device measured, not the current one
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = _rss()
        self._stop = threading.Event()
        self._max = self.base

        def sample() -> None:
            while not self._stop.is_set():
                self._max = max(self._max, _rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._max, _rss()) - self.base


def _check_repeats(count: Any, name: str) -> None:
    """Refuse a repeat count that is not an integer >= 1 (a median needs a sample)."""
    if not (is_integer(count) and count >= 1):
        raise InputError(f"{name} must be an integer >= 1 (timed runs per measurement), got "
                         f"{count!r}")


def timed(fn: Callable[[], Any], repeats: int, device: str = "cpu", warmup: bool = False,
          check: Callable[[Any], Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Run ``fn`` ``repeats`` times; ({median_s, times_s, peak_mem_mb}, last result).

    ``warmup``: one untimed call first (first-call costs and the allocator's growth are then
    nobody's, whichever solver runs first). ``check``: called on every repeat's result,
    outside the timed region and the memory measurement (an accuracy check that raises
    AssertionError), so that no repeat goes unchecked."""
    _check_repeats(repeats, "repeats")
    times, out, peak = [], None, 0
    if warmup:
        fn()
    if torch.device(device).type == "cpu":
        # memory kept from earlier solvers (ncsim.heap) would hide this one's growth: give
        # it back first, so the first repeat's growth is this solver's own peak (that repeat
        # pages its memory in; the median of the repeats is what is reported)
        heap.release_freed_memory()
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            out = fn()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)  # cuda:N waits for device N's kernels
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.peak)
        if check is not None:
            check(out)
    return {"median_s": statistics.median(times), "times_s": times,
            "peak_mem_mb": peak / 2**20}, out


def _with_solver(specs: list, **changes: Any) -> list:
    """``specs`` with their solver's fields ``changes`` replaced."""
    import dataclasses

    return [s.replace(solver=dataclasses.replace(s.solver, **changes)) for s in specs]


def _with_device(specs: list, device: str) -> list:
    return _with_solver(specs, device=device)


def _simulate(specs: list) -> Any:
    from ncsim.flow.simulate import simulate

    return simulate(specs, theory=False)


# ------------------------------------------------------------------------------ workloads


W1_SHAPES = {"full": (8, 2e4, 200), "full-gpu": (64, 5e3, 200), "small": (4, 2e3, 100),
             "tiny": (2, 50.0, 10)}  # (grid, T, records); "full" on a GPU is "full-gpu"
W1_TIMED = {  # what each W1 row's time covers (the JSON says it with the numbers)
    "ncsim": "the whole simulate(theory=False) call: initial states drawn, integration, every "
             "metric at every record, result tables (split in phases_s)",
    "peers": "from initial states prepared outside the timed region: integration to T with "
             "the states at the record times, and their NC metrics"}
REFERENCE_LOOP_MAX = 256  # runs: above, the reference is ncsim (see _w1_reference)


def _w1_reference(specs: list, device: str, log: Callable[[str], None],
                  loop_max: int = REFERENCE_LOOP_MAX) -> tuple[np.ndarray, str]:
    """Reference fn(T) (R,) of W1's runs and how it was obtained.

    Up to ``loop_max`` runs: scipy DOP853 at rtol 1e-10 on every run. Above (the 4096 runs of
    the GPU grid would take the loop half an hour): ncsim's float64 dopri5 at rtol 1e-11 on
    ``device``, itself checked against DOP853 rtol 1e-10 on 16 runs (to 1e-8, or
    AssertionError): a 4 x 4 sub-grid with the four corners, where the stiffest runs are.
    """

    _, peer_mod = _benchmarks()
    problem = peer_mod.Problem.from_specs(specs)
    if len(specs) <= loop_max:
        log(f"W1 ({len(specs)} runs): reference DOP853 rtol 1e-10 ...")
        return peer_mod.reference_fn(problem), "scipy DOP853 rtol 1e-10, every run"
    log(f"W1 ({len(specs)} runs): reference ncsim float64 rtol 1e-11, checked on 16 runs ...")
    tight = _with_solver(specs, rtol=1e-11, atol=1e-13, records=2, device=device)
    ref = _simulate(tight).runs["final_fn"].to_numpy()
    grid = math.isqrt(len(specs))  # W1's runs are a grid x grid square, row by row
    if grid * grid != len(specs):
        raise ValueError(f"W1 expects a square grid of runs, got {len(specs)}")
    axis = np.unique(np.linspace(0, grid - 1, 4).round().astype(int))
    sample = [int(i * grid + j) for i in axis for j in axis]
    check = peer_mod.reference_fn(problem.subset(sample))
    peer_mod.check_accuracy("ncsim reference (rtol 1e-11) against DOP853", ref[sample], check,
                            1e-8)
    return ref, "ncsim dopri5 float64 rtol 1e-11 (checked against DOP853 on 16 runs)"


def bench_w1(size: str, repeats: int, device: str, peers: bool, log: Callable[[str], None],
             peer_repeats: int | None = None, skip: tuple[str, ...] = (),
             dtypes: tuple[str, ...] | None = None,
             reference_loop_max: int = REFERENCE_LOOP_MAX) -> dict[str, Any]:
    """W1 phase diagram: ncsim against the peers, fn(T) checked against a reference.

    On the CPU the grid is 8 x 8 with T = 2e4 in float64; on a GPU 64 x 64 with T = 5e3, in
    float32 and float64 (``dtypes`` overrides). Each dtype runs at its tolerances
    (``W1_TOLERANCES``) and must reach fn(T) within 1e-6 (float64) or 1e-3 (float32) of the
    float64 reference. Solvers in float32 are named ``<solver>_float32`` and compared with
    ncsim in float32. The scipy loop is a CPU float64 peer: it runs only there.

    ncsim missing its accuracy raises AssertionError; a peer missing it, or failing in any
    other way (an exception, its package not installed), is reported in its row (``error``)
    and left out of the ratios, so one peer cannot cost the other measurements.
    """
    workloads, peer_mod = _benchmarks()
    gpu = torch.device(device).type == "cuda"
    grid, t_end, records = W1_SHAPES["full-gpu" if size == "full" and gpu else size]
    dtypes = dtypes or (("float32", "float64") if gpu else ("float64",))
    base = workloads.w1(grid=grid, t_end=t_end, records=records)
    ref, how = _w1_reference(base.specs, device, log, reference_loop_max)
    rows: dict[str, Any] = {}
    skipped = list(skip)
    for dtype in dtypes:
        wl = workloads.w1(grid=grid, t_end=t_end, records=records, dtype=dtype)
        suffix = "" if dtype == "float64" else f"_{dtype}"
        specs = _with_device(wl.specs, device)
        rows[f"ncsim_dopri5{suffix}"] = _ncsim_w1_row(f"ncsim_dopri5{suffix}", specs, ref, wl,
                                                      repeats, device, log)
        variants = {"ncsim_tsit5": {"method": "tsit5"}}
        if gpu:  # the same runs with every chunk of steps replayed as a CUDA graph
            variants["ncsim_dopri5_graphs"] = {"cuda_graphs": True}
        for variant, changes in variants.items():
            name = variant + suffix
            try:  # a variant that fails is reported in its row, as a peer's failure is
                rows[name] = _ncsim_w1_row(name, _with_solver(specs, **changes), ref, wl,
                                           repeats, device, log)
            except (AssertionError, RuntimeError) as exc:
                rows[name] = _failed_row(name, dtype, exc, log)
        if not peers:
            continue
        problem = peer_mod.Problem.from_specs(wl.specs, device, getattr(torch, dtype))
        tol = {"rtol": wl.params["rtol"], "atol": wl.params["atol"]}
        for peer, run in peer_mod.PEERS.items():
            if peer in skip:
                continue
            if peer == "scipy_dop853_loop" and (gpu or dtype != "float64"):
                skipped.append(f"{peer}{suffix} (a CPU float64 peer)")
                continue
            errors: list[float] = []
            try:
                stats, out = timed(lambda run=run, problem=problem, tol=tol: run(problem, **tol),
                                   peer_repeats or repeats, device,
                                   check=_fn_check(peer + suffix, ref, wl.fn_tol, errors,
                                                   lambda out: out["fn"]))
                err = max(errors)
            except InputError:  # a repeat count refused: the caller's error, not the peer's
                raise
            except Exception as exc:  # a missing package (torchdiffeq and torchode are the
                # optional ``bench`` extra), scipy's ValueError, a result off its accuracy:
                # the peer's row says it, and the other measurements survive
                rows[peer + suffix] = _failed_row(peer + suffix, dtype, exc, log)
                continue
            rows[peer + suffix] = {**stats, "dtype": dtype, "fn_error": err,
                                   "nfev_total": int(np.sum(out["nfev"]))}
            log(f"  {peer}{suffix}: {stats['median_s']:.3f} s (fn error {err:.1e})")
    params = {k: v for k, v in base.params.items() if k not in ("dtype", "rtol", "atol")}
    params |= {"dtypes": list(dtypes),
              "tolerances": {d: list(workloads.W1_TOLERANCES[d]) for d in dtypes}}
    entry = {"workload": "W1", "size": size, "device": device, "params": params,
             "reference": how, "solvers": rows, "peer_repeats": peer_repeats or repeats,
             "skipped": skipped, "timed": W1_TIMED}
    return _with_ratios(entry, dtypes)


def _fn_check(name: str, ref: np.ndarray, tol: float, errors: list[float],
              final_fn: Callable[[Any], np.ndarray]) -> Callable[[Any], None]:
    """The accuracy check of one repeat's result: its fn(T) (R,), ``final_fn(result)``, within
    ``tol`` of ``ref`` (R,) (AssertionError), the error appended to ``errors``."""
    _, peer_mod = _benchmarks()

    def check(result: Any) -> None:
        errors.append(peer_mod.check_accuracy(name, final_fn(result), ref, tol))

    return check


def _failed_row(name: str, dtype: str, exc: Exception, log: Callable[[str], None]
                ) -> dict[str, Any]:
    """The W1 row of a solver that failed or missed its accuracy (no time, no ratio)."""
    log(f"  {name}: FAILED: {exc}")
    return {"dtype": dtype, "error": str(exc)}


def _ncsim_w1_row(name: str, specs: list, ref: np.ndarray, wl: Any, repeats: int,
                  device: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Time ncsim on W1's ``specs``; the fn(T) of every repeat must reach ``wl.fn_tol``
    (AssertionError). ``stopped_before_t_end``: runs that ncsim ended before T (a steady
    state; the peers integrate every run to T)."""
    _, peer_mod = _benchmarks()
    errors: list[float] = []
    stats, res = timed(lambda: _simulate(specs), repeats, device,
                       check=_fn_check(name, ref, wl.fn_tol, errors,
                                       lambda res: res.runs["final_fn"].to_numpy()))
    err = max(errors)
    log(f"  {name}: {stats['median_s']:.3f} s (fn error {err:.1e})")
    t_end = specs[0].solver.t_end
    return {**stats, "dtype": specs[0].solver.dtype, "fn_error": err,
            "steps_total": int(res.runs.steps.sum()), "steps_max": int(res.runs.steps.max()),
            "stopped_before_t_end": int((res.runs.t_final < t_end).sum()),
            "phases_s": res.timings}


def _with_ratios(entry: dict[str, Any], dtypes: tuple[str, ...]) -> dict[str, Any]:
    """Ratios of one dtype (keys with ``_float32`` for float32; rows that failed are left out):

    - ``ratios``: each peer's time / ncsim's with the same method (tsit5 peers against ncsim
      tsit5 where it ran, the others against ncsim dopri5);
    - ``speedup_vs_fastest_peer``: the fastest peer's time (``fastest_peer`` names it) / the
      fastest ncsim row's (``fastest_ncsim`` names it: dopri5, tsit5 or dopri5 with CUDA
      graphs);
    - ``cuda_graphs_gain``: ncsim dopri5 eager / with CUDA graphs, where both ran, and
      ``speedup_vs_fastest_peer_graphs``: the fastest peer's time / ncsim's with graphs.
    """
    entry["ratios"] = {}
    for dtype in dtypes:
        suffix = "" if dtype == "float64" else f"_{dtype}"
        done = {name: row["median_s"] for name, row in entry["solvers"].items()
                if row["dtype"] == dtype and "error" not in row}
        ours = {name: t for name, t in done.items() if name.startswith("ncsim")}
        peers = {name: t for name, t in done.items() if not name.startswith("ncsim")}
        plain = ours[f"ncsim_dopri5{suffix}"]
        for name, t in peers.items():
            same = ours.get(f"ncsim_tsit5{suffix}") if "_tsit5" in name else None
            entry["ratios"][name] = t / (same or plain)
        graphs = ours.get(f"ncsim_dopri5_graphs{suffix}")
        if graphs is not None:
            entry[f"cuda_graphs_gain{suffix}"] = plain / graphs
            if peers:
                entry[f"speedup_vs_fastest_peer_graphs{suffix}"] = min(peers.values()) / graphs
        fastest = min(ours, key=ours.get)
        entry[f"fastest_ncsim{suffix}"] = fastest
        if peers:
            entry[f"fastest_peer{suffix}"] = min(peers, key=peers.get)
            entry[f"speedup_vs_fastest_peer{suffix}"] = min(peers.values()) / ours[fastest]
    return entry


def write_unused(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` if no file is there, else to the first free
    ``<stem>_2<suffix>``, ``<stem>_3<suffix>``, ... beside it; return the path written.

    A default output never overwrites a result: each name is claimed by an exclusive
    operation, so two benchmarks that finish at once cannot both take the same one. The text
    is written whole (and synced) to a temporary file first, which is then hard-linked to the
    free name: a write that fails (a full disk) leaves no truncated result under a result's
    name. Where the file system refuses hard links, the name is claimed by an exclusive
    create and written in place (removed again if that write fails)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp_path, 0o666 & ~mask)  # mkstemp makes 0600; results are shared files
        candidate, k = path, 1
        while True:
            try:
                os.link(tmp_path, candidate)
                return candidate
            except FileExistsError:
                pass
            except OSError:  # no hard links here: claim the name, then write it
                try:
                    _write_exclusive(candidate, text)
                    return candidate
                except FileExistsError:
                    pass
            k += 1
            candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    finally:
        tmp_path.unlink(missing_ok=True)


def _write_exclusive(path: Path, text: str) -> None:
    """Create ``path`` (FileExistsError if it exists) holding ``text``; a write that fails
    removes the file it created."""
    with path.open("x", encoding="utf-8") as handle:
        try:
            handle.write(text)
            handle.flush()
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def failed_ncsim_rows(results: dict[str, Any]) -> list[str]:
    """Names of the ncsim rows of W1 that failed (their ``error``): a variant (tsit5, CUDA
    graphs) is reported in its row so that the other measurements survive, but the command
    must still fail."""
    solvers = results["workloads"].get("W1", {}).get("solvers", {})
    return [name for name, row in solvers.items()
            if name.startswith("ncsim") and "error" in row]


def _compare_forms(make: Callable[[str], Any], forms: tuple[str, str], row: dict[str, Any],
                   repeats: int, device: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Time the workload ``make(form)`` in the reduced form ``forms[0]`` and the parameter form
    ``forms[1]``; check that their trajectories agree to the workload's tolerance: every
    repeat of each form against the last repeat of the other."""
    kept: dict[str, list[Any]] = {form: [] for form in forms}  # each repeat's trajectories
    for form in forms:
        wl = make(form)
        stats, res = timed(lambda wl=wl: _simulate(_with_device(wl.specs, device)), repeats,
                           device, check=lambda res, form=form: kept[form].append(
                               res.trajectories[["time", *W2_COLUMNS]].copy()))
        row[form] = {**stats, "steps_total": int(res.runs.steps.sum()), "phases_s": res.timings}
    fast, plain = forms
    row["max_rel_diff"] = max([w2_difference(t, kept[plain][-1]) for t in kept[fast]]
                              + [w2_difference(kept[fast][-1], t) for t in kept[plain]])
    label = ", ".join(f"{k}={v}" for k, v in row.items() if k in ("loss", "d", "n", "records"))
    if not row["max_rel_diff"] <= wl.fn_tol:
        raise AssertionError(f"{row['workload']} {label}: {fast} and d-space trajectories differ "
                             f"by {row['max_rel_diff']:.2e} > {wl.fn_tol:.0e}")
    row["speedup"] = row[plain]["median_s"] / row[fast]["median_s"]
    log(f"{row['workload']} {label}: {fast} {row[fast]['median_s']:.3f} s, d-space "
        f"{row[plain]['median_s']:.3f} s, x{row['speedup']:.1f}, "
        f"rel diff {row['max_rel_diff']:.1e}")
    return row


def bench_w2(size: str, repeats: int, device: str, log: Callable[[str], None]
             ) -> list[dict[str, Any]]:
    """W2: Gram form against the d-space form over d, for MSE and CE (MSE from d = N + K = 210
    on, where the Gram form is allowed: :func:`ncsim.spec.gram_min_dim`)."""
    from ncsim.spec import gram_min_dim

    workloads, _ = _benchmarks()
    dims = {"full": (32, 256, 1024, 4096), "small": (32, 256, 1024), "tiny": (32, 256)}[size]
    t_end = {"full": 20.0, "small": 10.0, "tiny": 5.0}[size]

    def allowed(loss: str, dim: int) -> bool:
        return dim >= gram_min_dim(workloads.w2(loss=loss, dim=dim, runs=1).specs[0].model)

    return [_compare_forms(
        lambda red, loss=loss, dim=dim: workloads.w2(loss=loss, dim=dim, runs=2, t_end=t_end,
                                                     records=20, reduction=red),
        ("gram", "none"), {"workload": "W2", "loss": loss, "d": dim, "size": size}, repeats,
        device, log) for loss in ("mse", "ce") for dim in dims if allowed(loss, dim)]


def bench_w2n(size: str, repeats: int, device: str, log: Callable[[str], None]
              ) -> list[dict[str, Any]]:
    """W2n: class-means form against the d-space form over n (UFM-MSE, d = 32), with 20
    records and with 2 (t = 0 and T: the cost of the flow alone, since every record rebuilds
    the N features for fn and nc4)."""
    workloads, _ = _benchmarks()
    sizes = {"full": (20, 100, 500, 2000), "small": (20, 100, 500), "tiny": (20, 50)}[size]
    t_end = {"full": 20.0, "small": 10.0, "tiny": 5.0}[size]
    return [_compare_forms(
        lambda red, n=n, rec=rec: workloads.w2n(per_class=n, t_end=t_end, records=rec,
                                                reduction=red),
        ("classes", "none"), {"workload": "W2n", "n": n, "records": rec, "size": size},
        repeats, device, log) for rec in (20, 2) for n in sizes]


W2_COLUMNS = ("loss", "objective", "fn", "class_mean_norm", "w_norm")


def w2_difference(a: Any, b: Any) -> float:
    """Largest difference of the recorded trajectories of two results (or of their
    trajectory tables), each column relative to its largest |value| in ``b`` (loss,
    objective, fn, class-mean norm, |W|).

    inf when the record times differ, or when a NaN or an infinity of one is not in
    the other at the same place (a NaN never passes as "no difference")."""
    ta = getattr(a, "trajectories", a)
    tb = getattr(b, "trajectories", b)
    if ta.shape[0] != tb.shape[0] or not np.array_equal(ta["time"].to_numpy(float),
                                                        tb["time"].to_numpy(float)):
        return math.inf
    worst = 0.0
    for col in W2_COLUMNS:
        x, y = ta[col].to_numpy(float), tb[col].to_numpy(float)
        finite = np.isfinite(x) & np.isfinite(y)
        same = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
        if not (finite | same).all():
            return math.inf
        scale = max(float(np.abs(y[finite]).max(initial=0.0)), 1e-300)
        worst = max(worst, float(np.abs(x[finite] - y[finite]).max(initial=0.0)) / scale)
    return worst


def _matmul_rates(shape: tuple[int, int, int, int], dtype: torch.dtype, device: str,
                  calls: int, repeats: int) -> dict[str, float]:
    """FLOP/s of the batched product (R, K, d) x (R, d, N) into a held result, in ``dtype``
    on ``device``: ``torch_bmm``, and on the CPU also ``numpy_matmul`` (the library ncsim's
    CPU float64 products go through, :mod:`ncsim.products`); the device's rate is the
    larger."""
    r, k, d, n = shape
    a = torch.randn(r, k, d, dtype=dtype, device=device)
    b = torch.randn(r, d, n, dtype=dtype, device=device)
    c = torch.empty(r, k, n, dtype=dtype, device=device)  # the compute rate, no allocation
    products = {"torch_bmm": lambda: torch.bmm(a, b, out=c)}
    if torch.device(device).type == "cpu":
        a_np, b_np, c_np = a.numpy(), b.numpy(), c.numpy()
        products["numpy_matmul"] = lambda: np.matmul(a_np, b_np, out=c_np)
    rates = {}
    for lib, product in products.items():
        stats, _ = timed(lambda product=product: [product() for _ in range(calls)], repeats,
                         device)
        rates[lib] = r * 2 * k * d * n / (stats["median_s"] / calls)
    return rates


def bench_w3(size: str, repeats: int, device: str, log: Callable[[str], None]
             ) -> list[dict[str, Any]]:
    """W3: right-hand-side throughput against the device's batched matmul rate.

    ``rhs_times_s``: each repeat's time of ``calls`` right-hand sides; ``rhs_s`` is their
    median over ``calls``."""
    workloads, _ = _benchmarks()
    from ncsim.flow.simulate import _Batch

    shape = {"full": (16, 100, 50, 512), "small": (16, 100, 50, 512),
             "tiny": (4, 10, 10, 64)}[size]
    out = []
    calls = 5
    for dtype in ("float32", "float64"):
        wl = workloads.w3(*shape, dtype=dtype)
        batch = _Batch(_with_device(wl.specs, device))
        y = batch.y0
        r, k, n, d = shape[0], shape[1], shape[1] * shape[2], shape[3]
        flops = r * 3 * 2 * k * d * n  # Z = W H, G H^T, W^T G
        held = torch.empty_like(y)  # the integrator's stage buffer: no fresh pages per call
        stats, _ = timed(lambda batch=batch, y=y, held=held: [batch.velocity(y, out=held)
                                                              for _ in range(calls)],
                         repeats, device)
        rhs = stats["median_s"] / calls
        rates = _matmul_rates((r, k, d, n), getattr(torch, dtype), device, calls, repeats)
        mm_rate = max(rates.values())
        row = {"workload": "W3", "dtype": dtype, "R": r, "K": k, "N": n, "d": d,
               "rhs_s": rhs, "calls": calls, "rhs_times_s": stats.get("times_s"),
               "rhs_gflops": flops / rhs / 1e9, "matmul_gflops": mm_rate / 1e9,
               **{f"{lib}_gflops": rate / 1e9 for lib, rate in rates.items()},
               "fraction_of_matmul_rate": flops / rhs / mm_rate,
               "peak_mem_mb": stats["peak_mem_mb"], "state_mb": y.numel() * y.element_size()
               / 2**20}
        log(f"W3 {dtype}: RHS {rhs * 1e3:.1f} ms = {row['rhs_gflops']:.1f} GFLOP/s, matmul "
            f"{row['matmul_gflops']:.1f} GFLOP/s, fraction {row['fraction_of_matmul_rate']:.2f}")
        out.append(row)
    return out


#: cuBLAS's workspace setting under which its kernels are deterministic (read when cuBLAS
#: starts, so it is set before any device work of ``ncsim bench``)
CUBLAS_DETERMINISTIC = ":4096:8"


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Run the block with deterministic kernels and no TF32 (restored afterwards).

    On an accelerator, cuDNN picks among non-deterministic convolution kernels and reduces
    with atomics, and convolutions run in TF32: two loops that do the same computation then
    drift apart, and Adam amplifies the drift (ResNet-20's logs differed by 24% after two
    epochs on an H200). With these switches both loops of V1 run the same kernels in the
    same order. Operations without a deterministic kernel warn rather than fail
    (``warn_only``). The flags are process-wide; the CPU's kernels are deterministic anyway.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        cudnn.deterministic, cudnn.benchmark = True, False
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved[2:]


def _check_training(case: Any, logs: list, peer_logs: list, row: dict[str, Any],
                    peer_mod: Any, exact: bool) -> None:
    """Compare ncsim's logs with the peer's (one per seed); AssertionError when they differ.

    Always: the protocol columns (record times, phases, step counts, learning rates) equal.
    ``exact`` (on the CPU: the same computation, seeds one after another): every record to
    ``case.log_tol`` (``max_rel_diff``). Otherwise (an accelerator, whose kernels are not
    deterministic and whose stacked seeds round differently, both amplified by Adam): the
    epoch-0 record to ``log_tol`` (``first_record_rel_diff``), every record's loss, fn and
    training accuracy to ``case.trend_tol`` (``trend_rel_diff``) and the final training
    accuracy to ``case.accuracy_tol`` (``final_accuracy_diff``).
    """
    pairs = list(zip(logs, peer_logs, strict=True))
    for a, b in pairs:
        mismatch = peer_mod.protocol_mismatch(a, b)
        if mismatch:
            raise AssertionError(f"V1 {case.name}: the DataLoader loop's {', '.join(mismatch)} "
                                 "differ from ncsim's")

    def worst(measure: Callable[..., float], *args: Any) -> float:
        values = [measure(a, b, *args) for a, b in pairs]
        return math.inf if any(math.isnan(v) for v in values) else max(values)

    rows = None if exact else 1
    diff = worst(peer_mod.log_difference, rows)
    row["max_rel_diff" if exact else "first_record_rel_diff"] = diff
    if not diff <= case.log_tol:
        raise AssertionError(f"V1 {case.name}: the DataLoader loop's log differs from ncsim's "
                             f"by {diff:.2e} > {case.log_tol:.0e}")
    if exact:
        return
    trend = worst(peer_mod.trend_difference)
    row["trend_rel_diff"] = trend
    if not trend <= case.trend_tol:
        raise AssertionError(f"V1 {case.name}: the DataLoader loop's loss, fn or accuracy "
                             f"differ from ncsim's by {trend:.2e} > {case.trend_tol}")
    acc = worst(peer_mod.final_accuracy_difference)
    row["final_accuracy_diff"] = acc
    if not acc <= case.accuracy_tol:
        raise AssertionError(f"V1 {case.name}: final training accuracies differ by "
                             f"{acc:.3f} > {case.accuracy_tol}")


def _tracking_cost(result: Any, data: Any, repeats: int, device: str, total_s: float
                   ) -> dict[str, float]:
    """One NC record of the trained network (``nc_record_s``, median of ``repeats``), the
    epoch time that leaves in the training's ``total_s`` (``epoch_s``), and the tracking
    overhead at the paper's ``nc_every`` = 10 (record / 10 epochs). Both are NaN when the
    records, timed again here, take the whole ``total_s`` (timing noise on tiny trainings):
    the epoch time cannot be separated then."""
    from ncsim.validate.train import nc_record

    cfg, on_device = result.config, data.to(device)
    stats, _ = timed(lambda: nc_record(result.model, on_device, cfg.phases[-1].loss,
                                       cfg.record_batch, cfg.eval_test), repeats, device)
    record = stats["median_s"]
    epoch_s = (total_s - len(result.log) * record) / cfg.total_epochs
    if not epoch_s > 0:
        epoch_s = math.nan
    return {"nc_record_s": record, "epoch_s": epoch_s,
            "tracking_overhead_nc_every_10": record / (10 * epoch_s)}


def bench_v1(size: str, repeats: int, device: str, log: Callable[[str], None],
             data_root: str | None = None, peers: bool = True,
             peer_repeats: int | None = None) -> list[dict[str, Any]]:
    """V1: ncsim's ``train`` (NC record every epoch) against a plain ``DataLoader`` loop.

    For every case of ``benchmarks.workloads.v1`` both loops train the same network from the
    same seed on the same batches; the peer's log must equal ncsim's (see
    :func:`_check_training`; every repeat of each loop against the last repeat of the other),
    or its row holds the ``error`` and no ratio. The peer runs ``peer_repeats`` times
    (default ``repeats``). The seeds case
    runs ``train(config, data, seeds=...)`` (one vectorised loop on an accelerator, the seeds
    one after another on the CPU) against one peer loop per seed. Each loop gets one untimed
    warm-up call before its timed repeats. Also timed: one NC record of the trained network
    (``nc_record_s``), and from it the tracking overhead at the paper's ``nc_every`` = 10
    (record / 10 epochs). On an accelerator both loops run under
    :func:`deterministic_kernels` (``deterministic_kernels`` in each row), so that what they
    compute can be compared; the times are those of the deterministic kernels.
    """
    workloads, _ = _benchmarks()
    import benchmarks.training_peer as peer_mod

    accelerator = torch.device(device).type != "cpu"
    with deterministic_kernels() if accelerator else contextlib.nullcontext():
        return [_v1_case(case, size, repeats, device, log, data_root, peers, peer_repeats,
                         peer_mod) | {"deterministic_kernels": accelerator}
                for case in workloads.v1(size, device)]


def _v1_case(case: Any, size: str, repeats: int, device: str, log: Callable[[str], None],
             data_root: str | None, peers: bool, peer_repeats: int | None, peer_mod: Any
             ) -> dict[str, Any]:
    """One V1 case's row (see :func:`bench_v1`)."""
    import dataclasses

    from ncsim.validate.data import load_dataset
    from ncsim.validate.train import train

    cfg = case.config
    data = load_dataset("fashion_mnist", per_class=case.per_class,
                        test_per_class=case.test_per_class, root=data_root)
    seeds = case.seeds
    epochs = cfg.total_epochs
    row: dict[str, Any] = {
        "workload": "V1", "case": case.name, "size": size, "arch": cfg.arch,
        "depth": cfg.depth if cfg.arch == "mlp" else 20, "width": cfg.width,
        "train_samples": int(data.x_train.shape[0]),
        "test_samples": int(data.x_test.shape[0]),
        "epochs": [p.epochs for p in cfg.phases],
        "phases": [f"{p.loss} {p.optimizer} lr {p.lr:g} batch {p.batch_size}"
                   for p in cfg.phases],
        "seeds": len(seeds) if seeds else 1, "nc_every": cfg.nc_every}
    log(f"V1 {case.name}: {row['train_samples']} samples, {epochs} epochs ...")
    ncsim_logs: list[list] = []  # each repeat's logs (one per seed)
    stats, result = timed(lambda: train(cfg, data, seeds=list(seeds) if seeds else None),
                          repeats, device, warmup=True,
                          check=lambda res: ncsim_logs.append(
                              [r.log for r in res.runs] if seeds else [res.log]))
    row["ncsim"] = stats
    configs = ([dataclasses.replace(cfg, seed=s) for s in seeds] if seeds else [cfg])

    def peer() -> list:
        return [peer_mod.dataloader_training(c, data) for c in configs]

    try:
        if not peers:
            raise RuntimeError("not run (--no-peers)")
        peer_kept: list[list] = []
        stats, _ = timed(peer, peer_repeats or repeats, device, warmup=True,
                         check=peer_kept.append)
        exact = torch.device(device).type == "cpu"  # seeds run one by one there
        pairs = ([(logs, peer_kept[-1]) for logs in ncsim_logs]
                 + [(ncsim_logs[-1], logs) for logs in peer_kept])
        for logs, peer_logs in pairs:  # the row keeps the worst difference
            checked: dict[str, Any] = {}
            _check_training(case, logs, peer_logs, checked, peer_mod, exact)
            for key, value in checked.items():
                row[key] = max(row.get(key, value), value)
        row["dataloader"] = stats
        row["speedup"] = stats["median_s"] / row["ncsim"]["median_s"]
    except (AssertionError, RuntimeError) as exc:
        row["dataloader"] = {"error": str(exc)}
        log(f"  dataloader: FAILED: {exc}")
    if not seeds:
        row |= _tracking_cost(result, data, repeats, device, row["ncsim"]["median_s"])
    diff = row.get("max_rel_diff", row.get("first_record_rel_diff", math.nan))
    log(f"  ncsim {row['ncsim']['median_s']:.2f} s, dataloader "
        f"{row['dataloader'].get('median_s', math.nan):.2f} s, "
        f"x{row.get('speedup', math.nan):.2f}, log difference {diff:.1e}")
    return row


def _blas_threads() -> dict[str, int]:
    """Threads of each BLAS library loaded in this process that threadpoolctl sees (numpy's
    and scipy's OpenBLAS; torch's MKL is linked into torch and is bounded through torch),
    keyed by the library's file name."""
    from threadpoolctl import threadpool_info

    return {os.path.basename(pool["filepath"]): pool["num_threads"]
            for pool in threadpool_info() if pool["user_api"] == "blas"}


def run_bench(workloads: tuple[str, ...], device: str = "cpu", repeats: int = 3,
              size: str = "full", peers: bool = True, threads: int | None = None,
              log: Callable[[str], None] = print, peer_repeats: int | None = None,
              skip: tuple[str, ...] = (), dtypes: tuple[str, ...] | None = None,
              data_root: str | None = None) -> dict[str, Any]:
    """Run the workloads and return the JSON-ready results (``dtypes``: W1's, see
    :func:`bench_w1`; ``data_root``: the Fashion-MNIST folder of V1). V1's data is read
    first, so that missing or damaged files stop the run before any workload is timed.
    ``repeats`` and ``peer_repeats`` (None: ``repeats``) are integers >= 1."""
    _check_repeats(repeats, "repeats")
    if peer_repeats is not None:
        _check_repeats(peer_repeats, "peer_repeats")
    if "V1" in workloads:
        from ncsim.validate.data import load_dataset

        if torch.device(device).type != "cpu":  # before cuBLAS starts (W1 would start it)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)

        load_dataset("fashion_mnist", per_class=1, test_per_class=1, root=data_root)
    with bounded_threads(threads):  # numpy's BLAS too: ncsim's products and the peers'
        results: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                   "device": device, "repeats": repeats,
                                   "peer_repeats": peer_repeats or repeats,  # None: repeats
                                   "machine": machine(device), "workloads": {}}
        # peers run in W1 and V1 only: --peer-repeats counts where one of them is timed
        timed_peers = peers and any(w in ("W1", "V1") for w in workloads)
        fewest = min(repeats, peer_repeats or repeats) if timed_peers else repeats
        if fewest < 3:  # said in the JSON and on stderr: one or two samples are no median
            results["warning"] = (f"{fewest} timed repeat(s): a time is a single sample "
                                  "(or the mean of two), not a median of 3 or more")
            log(f"warning: {results['warning']}")
        if "W1" in workloads:
            results["workloads"]["W1"] = bench_w1(size, repeats, device, peers, log, peer_repeats,
                                                  skip, dtypes)
        if "W2" in workloads:
            results["workloads"]["W2"] = bench_w2(size, repeats, device, log)
        if "W2n" in workloads:
            results["workloads"]["W2n"] = bench_w2n(size, repeats, device, log)
        if "W3" in workloads:
            results["workloads"]["W3"] = bench_w3(size, repeats, device, log)
        if "V1" in workloads:
            results["workloads"]["V1"] = bench_v1(size, repeats, device, log, data_root, peers,
                                                  peer_repeats)
        return results


@click.command("bench")
@click.option("--workload", "workload", multiple=True, default=("W1", "W2", "W2n", "W3"),
              type=click.Choice(["W1", "W2", "W2n", "W3", "V1"]), show_default=True,
              help="Workload(s) to run (repeat the option for several; V1, the training "
                   "loop, needs Fashion-MNIST).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1),
              help="Timed repeats per solver (the median is reported; below 3 the JSON "
                   "carries a 'warning').")
@click.option("--size", default="full", show_default=True,
              type=click.Choice(["full", "small", "tiny"]),
              help="Workload size ('full' on a GPU: W1's 64 x 64 grid at T = 5e3 and V1 on "
                   "the whole training set; 'tiny' is a smoke test of seconds).")
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Also time scipy (on the CPU in float64 only), torchdiffeq and torchode "
                   "on W1, and the DataLoader loop on V1.")
@click.option("--threads", default=None, type=click.IntRange(1, THREADS_MAX),
              help="torch and BLAS threads for every solver (default: the libraries' own "
                   "settings).")
@click.option("--peer-repeats", default=None, type=click.IntRange(1),
              help="Timed repeats of each peer: W1's ODE solvers and V1's DataLoader loop "
                   "(default: --repeats).")
@click.option("--skip-peer", "skip", multiple=True,
              type=click.Choice(["scipy_dop853_loop", "torchdiffeq_dopri5", "torchode_dopri5",
                                 "torchode_tsit5"]),
              help="Leave out a peer (repeat the option for several).")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["float64", "float32"]),
              help="W1's dtype(s) (repeat for both; default: float64 on the CPU, both on a "
                   "GPU).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Folder of the Fashion-MNIST IDX files for V1 (default: the Debian package "
                   "dataset-fashion-mnist).")
@click.option("--out", "out", default=None, type=OutPath(dir_okay=False),
              help="JSON output (default: benchmarks/results/<device>_<date>.json in the "
                   "source checkout, with _2, _3, ... when that file exists).")
@handle_errors
def bench(workload: tuple[str, ...], device: str, repeats: int, size: str, peers: bool,
          threads: int | None, peer_repeats: int | None, skip: tuple[str, ...],
          dtypes: tuple[str, ...], data_root: str | None, out: str | None) -> None:
    """Time ncsim and the peer solvers on the benchmark workloads; write JSON."""
    require_device(device)
    if out is not None:  # before the (long) measurements, not after them
        check_out_folder(Path(out).parent, "--out")
        if Path(out).exists():
            click.echo(f"warning: --out {out} exists; it will be replaced by this run's "
                       "results", err=True)
    results = run_bench(workload, device, repeats, size, peers, threads,
                        log=lambda m: click.echo(m, err=True), peer_repeats=peer_repeats,
                        skip=skip, dtypes=dtypes or None, data_root=data_root)
    # NaN (not measured) as null; allow_nan=False: the file is strict JSON or nothing
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    click.echo(text)  # first: the measurements survive a file that cannot be written
    target = out or str(ROOT / "benchmarks" / "results"
                        / f"{device.split(':')[0]}_{datetime.date.today().isoformat()}.json")
    try:
        if out is None:
            out = str(write_unused(Path(target), text + "\n"))
        else:  # replaced whole or not at all: a failed write keeps the earlier file
            atomic_write(out, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    except OSError as err:
        if err.filename is not None:
            raise
        # a failed write names no file (a full disk): name it, for a one-line error
        raise OSError(err.errno, err.strerror or str(err), target) from err
    click.echo(f"written {out}", err=True)
    failed = failed_ncsim_rows(results)
    if failed:
        click.echo(f"Error: ncsim failed in {', '.join(failed)} (see their 'error' in {out})",
                   err=True)
        sys.exit(1)
