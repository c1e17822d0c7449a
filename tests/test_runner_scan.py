"""Scan of the study execution layer (ncsim.study.runner, executors, compute) over odd
executor arguments, odd scheduler addresses, interruptions and completion orders.

Invariants checked: a study interrupted inside a chunk and resumed with another executor, the
process pool (spawned workers) and Dask give the uninterrupted local executor's run and
trajectory tables bit for bit, every column (seeds are per run: a run gives the same bits in
any process and any batch); so do chunks that complete in reverse order (process pool and
Dask); a chunk that raises fails its own runs only (labels kept, the executor and the error
named), and after --retry-failed the tables are those of a run without failure; a refused
scheduler port is one InputError after the connect timeout.

Fixed findings: --workers 2**31 (or more) with --executor process ended in an OverflowError
traceback from the pool's queue after study.json was written, and any count went to the Dask
LocalCluster, which starts every worker at once (--workers 1000000: a million processes); a
count above MAX_WORKERS (1024) is now an InputError before anything starts. A scheduler
address served by something that takes the connection and stays silent (an HTTP server, a
plain listener) held `study run` forever (the Dask client's handshake has no time limit,
whatever its timeout="20s"); an SSH-like banner raised MemoryError (2.8 EiB frame from the
banner's bytes) and a Dask worker's address a TypeError, both tracebacks: each is now one
InputError (within 20 + 10 s for silence). Ctrl-C (or an error in writing a result) while
the process pool computed waited for every chunk still queued to be computed, their results
thrown away (8 chunks of 0.4 s on one worker: all 8 run before the interrupt left); now the
queued chunks are cancelled and the workers ended. Two trainings at once in threads of one
process (a Dask worker with several threads, `dask worker`'s default; the in-process
LocalCluster) drew their networks from torch's global generator, which each seeds: the
trained rows differed from the local executor's (final_fn 9.526 against 8.716 for the same
seed); trainings in one process now run one at a time. An intervention whose
intervene_time is not after the spec's t_first failed with 't_first must lie in (0, t_end),
got 10.0' (from its first segment, whose t_end is the intervention time: t_first 10 lies
within the run's t_end 100); it now says which times clash and what to change.

Fixed finding: a simulated spec repeated in one batch stored the simulator id with the
batch suffix ('<id>-1'), so after a resume that computed the copy alone its row's sim_run_id
was '<id>' and the tables differed from the uninterrupted run's in that column (each row now
stores its spec's own id).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import threading
import time
import types
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import error_line, invoke
from deadline import deadline
from tiny_study import KICK_PART, MORE_PART, NET_PART, write_tiny_study

import ncsim.study.executors as executors
from ncsim.errors import InputError
from ncsim.study.compute import run_chunk
from ncsim.study.runner import chunk_runs, run_study
from ncsim.study.spec import RunDesc, load_study
from ncsim.study.store import Store


def _study(tmp_path: Path, seeds: int = 3, chunk: int = 2, extra: str = MORE_PART + KICK_PART):
    """The tiny study (K = 3, n = 4, d = 8): part "ufm" over ``seeds`` seeds, part "more"
    (seeds 10, 11) and an intervention part "kick", 12 records to t = 100."""
    return load_study(write_tiny_study(tmp_path, seeds=seeds, chunk=chunk, t_end=100.0,
                                       records=12, extra=extra))


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs.parquet and trajectories.parquet as written (row order included)."""
    return pd.read_parquet(out / "runs.parquet"), pd.read_parquet(out / "trajectories.parquet")


def _assert_same_tables(out: Path, want: Path) -> None:
    """Both tables of ``out`` equal those of ``want``: every column, every bit, same order."""
    for got, expected in zip(_tables(out), _tables(want)):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def _dask_in_process(patch: pytest.MonkeyPatch):
    """Make Dask's LocalCluster start its workers in this process (threads), the worker
    set-up (one thread, kept heap, end with the parent) left out: this process has the first
    two. Returns ``dask.distributed``."""
    distributed = pytest.importorskip("dask.distributed")
    real = distributed.LocalCluster
    patch.setattr(distributed, "LocalCluster",
                  lambda **kwargs: real(**{**kwargs, "processes": False}))
    patch.setattr(executors, "_init_worker", lambda: None)
    return distributed


@pytest.fixture
def in_process_dask(monkeypatch):
    return _dask_in_process(monkeypatch)


class _ThreadPool(concurrent.futures.ThreadPoolExecutor):
    """The process pool's interface on threads of this process."""

    def __init__(self, count, mp_context=None, initializer=None):
        super().__init__(count)


# ----------------------------------------------------------------------------- resume, executors
def test_a_resume_inside_a_chunk_and_every_executor_give_the_same_bits(tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) after the first run of the first chunk of two, then resumed with
    Dask (so the rest of that chunk is computed in another batch and another executor); and
    the whole study on a pool of 2 spawned processes: runs.parquet and trajectories.parquet
    equal the uninterrupted local run's, every column bit for bit, rows in spec order."""
    study = _study(tmp_path)
    whole = tmp_path / "whole"
    run_study(study, whole, progress=False, report=False)

    calls: list[int] = []

    def first_run_then_interrupt(chunk):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_chunk(chunk[:1])  # the chunk's first run only: cut inside the chunk

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", first_run_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_study(study, resumed, progress=False, report=False)
    assert calls == [2, 2]
    with monkeypatch.context() as patch:
        _dask_in_process(patch)
        summary = run_study(study, resumed, executor="dask", progress=False, report=False)
    assert (summary.total, summary.computed, summary.skipped, summary.failed) == (6, 5, 1, 0)
    _assert_same_tables(resumed, whole)
    assert list(_tables(whole)[0]["run_id"]) == [d.run_id for d in study.runs()]

    spawned = tmp_path / "spawned"
    run_study(study, spawned, executor="process", workers=2, progress=False, report=False)
    _assert_same_tables(spawned, whole)


def _reversed_completion(wait):
    """An as_completed that waits for every future (with ``wait``), then yields them last
    submitted first."""
    def as_completed(futures):
        futures = list(futures)
        wait(futures)
        yield from reversed(futures)
    return as_completed


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_chunks_completing_in_reverse_order_give_the_same_tables(tmp_path, monkeypatch,
                                                                 executor, in_process_dask):
    """The chunks' results handed over last chunk first (each chunk one run): both tables
    equal the local executor's, rows in spec order."""
    study = _study(tmp_path, chunk=1)
    run_study(study, tmp_path / "local", progress=False, report=False)
    if executor == "process":
        monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
        monkeypatch.setattr(concurrent.futures, "as_completed",
                            _reversed_completion(concurrent.futures.wait))
    else:
        monkeypatch.setattr(in_process_dask, "as_completed",
                            _reversed_completion(in_process_dask.wait))
    seen: list[str] = []
    real_write_run = Store.write_run

    def write_run(self, run_id, row, traj):
        seen.append(run_id)
        real_write_run(self, run_id, row, traj)

    monkeypatch.setattr(Store, "write_run", write_run)
    run_study(study, tmp_path / executor, executor=executor, progress=False, report=False)
    parallel_order = [d.run_id for c in chunk_runs(study.runs(), cheap_first=False)
                      for d in c]
    assert seen == parallel_order[::-1]  # written last chunk first
    _assert_same_tables(tmp_path / executor, tmp_path / "local")


# ----------------------------------------------------------------------------- worker exceptions
def _fails_on_seed(seed: int):
    """A chunk function that raises for the chunk holding ``seed``, computes the others."""
    def work(chunk):
        if any(d.params.get("seed") == seed for d in chunk):
            raise ValueError(f"no room for seed {seed}")
        return run_chunk(chunk)
    return work


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_a_raising_chunk_fails_its_runs_alone_and_a_retry_restores_the_tables(
        tmp_path, monkeypatch, executor, in_process_dask):
    """A chunk that raises (seed 10 of part "more", chunks of one run): that run's row is
    failed, keeps its part and parameters and says which executor and what error; the 5
    other runs are whole. A rerun keeps it; --retry-failed computes it alone, and then both
    tables equal a run without failure, every column (no 'error' column left behind)."""
    study = _study(tmp_path, chunk=1)
    run_study(study, tmp_path / "whole", progress=False, report=False)
    out = tmp_path / "out"
    if executor == "process":
        monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", _fails_on_seed(10))
        summary = run_study(study, out, executor=executor, progress=False, report=False)
    assert (summary.computed, summary.failed) == (6, 1)
    runs = _tables(out)[0]
    bad = runs[runs["status"] == "failed"]
    assert list(bad["part"]) == ["more"] and list(bad["seed"]) == [10]
    assert list(bad["error"]) == [f"{executor} executor: ValueError: no room for seed 10"]
    assert (runs["status"] == "ok").sum() == 5
    assert run_study(study, out, executor=executor, progress=False, report=False).computed == 0
    retried = run_study(study, out, executor=executor, retry_failed=True, progress=False,
                        report=False)
    assert (retried.computed, retried.skipped, retried.failed) == (1, 5, 0)
    _assert_same_tables(out, tmp_path / "whole")


def test_two_trainings_at_once_in_one_process_give_their_own_results(tmp_path, monkeypatch):
    """Two trained parts computed at once in two threads of one process (as a Dask worker
    with two threads does; here the process pool's stand-in on threads), both having seeded
    torch's global generator before either draws its network: the tables equal the local
    executor's (the second training's seed no longer draws the first one's weights)."""
    import ncsim.validate.train as train

    second = NET_PART.replace('name = "net"', 'name = "net2"').replace(
        'dataset = "gaussian"', 'dataset = "gaussian"\nseed = 7')
    study = _study(tmp_path, seeds=1, extra=NET_PART + second)
    run_study(study, tmp_path / "local", progress=False, report=False)
    both_seeded = threading.Barrier(2)
    real_build = train.build_network

    def build_network(*args, **kwargs):
        with contextlib.suppress(threading.BrokenBarrierError):  # alone: go on after 2 s
            both_seeded.wait(timeout=2.0)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(train, "build_network", build_network)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
    run_study(study, tmp_path / "threads", executor="process", workers=2, progress=False,
              report=False)
    runs = _tables(tmp_path / "threads")[0]
    assert list(runs["part"]) == ["ufm", "net", "net2"]
    _assert_same_tables(tmp_path / "threads", tmp_path / "local")


def test_an_intervention_before_t_first_fails_saying_so():
    """intervene_time 5 with t_first 10 (and 5 with 5): the run fails with an error naming
    both times and what to change (was 't_first must lie in (0, t_end), got 10.0', from the
    first segment, whose t_end is the intervention time); t_first 4 runs."""
    base = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0, "records": 12,
            "lambda": 1e-2, "intervene_time": 5.0}
    for t_first in (10.0, 5.0):
        (_, row, traj), = run_chunk([RunDesc("k", "simulated", {**base, "t_first": t_first})])
        assert (row["status"], row["part"], traj) == ("failed", "k", None)
        assert row["error"] == (f"InputError: intervene_time 5 is not after t_first = "
                                f"{t_first:g} (the first record time, from which the segment "
                                "before the intervention is recorded); give a t_first below "
                                "intervene_time, or none")
    (_, row, traj), = run_chunk([RunDesc("k", "simulated", {**base, "t_first": 4.0})])
    assert row["status"] != "failed" and set(traj["phase"]) == {1, 2}


def test_a_study_with_an_intervention_before_t_first_is_refused_at_load(tmp_path):
    """The same clash in a study spec is refused when the study loads, before any run."""
    kick = KICK_PART.replace("intervene_time = 20.0", "intervene_time = 20.0\nt_first = 30.0")
    with pytest.raises(InputError) as err:
        _study(tmp_path, seeds=1, extra=kick)
    assert "intervene_time 20 is not after t_first = 30" in str(err.value)
    _study(tmp_path, seeds=1, extra=kick.replace("t_first = 30.0", "t_first = 10.0"))


# ----------------------------------------------------------------------------- worker counts
def test_the_largest_worker_count_is_taken_and_one_more_refused():
    """check_executor takes MAX_WORKERS (1024) workers and refuses 1025 with one message
    saying the bound and the way to more workers."""
    executors.check_executor("process", None, executors.MAX_WORKERS)
    with pytest.raises(InputError) as err:
        executors.check_executor("process", None, executors.MAX_WORKERS + 1)
    assert str(err.value) == ("workers must be at most 1024 (worker processes on this "
                              "machine), got 1025; for more, start a Dask scheduler and its "
                              "workers and give --address")


@pytest.mark.parametrize("workers", [2**31 - 1, 2**31, 10**100],
                         ids=["2^31-1", "2^31", "10^100"])
def test_a_huge_worker_count_is_refused_before_any_file(tmp_path, workers):
    """--workers 2**31 - 1 and more: one InputError before the study folder is made (was an
    OverflowError from the process pool's queue, after study.json was written)."""
    study = _study(tmp_path, seeds=1, extra="")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rf"^workers must be at most 1024 .* got {workers};"):
        run_study(study, out, executor="process", workers=workers, progress=False,
                  report=False)
    assert not out.exists()


def test_a_huge_worker_count_on_the_command_line_is_one_line_and_no_folder(tmp_path):
    """`study run --executor process --workers 2147483648`: exit status 2, one line, no
    folder (was a traceback, exit status 1, and a study folder left behind)."""
    spec = write_tiny_study(tmp_path, seeds=1, records=12)
    out = tmp_path / "out"
    result = invoke(["study", "run", str(spec), "--out", str(out), "--executor", "process",
                     "--workers", "2147483648", "--no-progress"])
    assert "workers must be at most 1024" in error_line(result)
    assert not out.exists()


def test_a_huge_worker_count_starts_no_dask_cluster(monkeypatch):
    """--executor dask --workers 1000000 is refused by execute itself: no LocalCluster is
    made (it started every worker at once) and no chunk runs."""
    def never(*args, **kwargs):
        raise AssertionError("a cluster or a client was made")

    fake = types.SimpleNamespace(LocalCluster=never, Client=never, WorkerPlugin=object,
                                 as_completed=never)
    monkeypatch.setattr(executors, "_distributed", lambda: fake)
    monkeypatch.setattr(executors, "run_chunk", never)
    desc = RunDesc("a", "simulated", {"classes": 3, "per_class": 2, "dim": 4, "seed": 0})
    with pytest.raises(InputError, match=r"^workers must be at most 1024 .* got 1000000;"):
        executors.execute([[desc]], "dask", lambda results: None, workers=10**6)


# ----------------------------------------------------------------------------- Ctrl-C in a pool
def slow_chunk(chunk):
    """A chunk of 0.4 s of work (top-level: the spawned workers import it from here)."""
    time.sleep(0.4)
    return [(d.run_id, {"status": "ok", "seed": d.params["seed"]}, None) for d in chunk]


class _RecordingPool(concurrent.futures.ProcessPoolExecutor):
    """The real process pool, its futures and worker processes recorded."""

    futures: list = []
    processes: dict = {}

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        _RecordingPool.futures.append(future)
        _RecordingPool.processes.update(self._processes or {})
        return future


def test_ctrl_c_in_the_process_pool_cancels_the_queued_chunks_and_ends_the_workers(
        monkeypatch):
    """Eight chunks of 0.4 s on one spawned worker, Ctrl-C while the first result is written:
    execute leaves with KeyboardInterrupt, the last four chunks never start (cancelled), and
    the worker process is ended. (The pool used to compute all eight first, results thrown
    away.)"""
    _RecordingPool.futures, _RecordingPool.processes = [], {}
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _RecordingPool)
    monkeypatch.setattr(executors, "run_chunk", slow_chunk)
    chunks = [[RunDesc("a", "simulated", {"classes": 3, "per_class": 2, "dim": 4, "seed": s})]
              for s in range(8)]
    handed: list = []

    def interrupt(results):
        handed.append(results)
        raise KeyboardInterrupt

    with deadline(60), pytest.raises(KeyboardInterrupt):
        executors.execute(chunks, "process", interrupt, workers=1)
    futures = _RecordingPool.futures
    assert len(handed) == 1 and len(futures) == 8
    assert all(f.cancelled() for f in futures[4:])
    assert sum(f.done() and not f.cancelled() and f.exception() is None
               for f in futures) <= 3
    assert _RecordingPool.processes
    assert not any(p.is_alive() for p in _RecordingPool.processes.values())


# ----------------------------------------------------------------------------- scheduler address
class _Listener:
    """TCP listeners on 127.0.0.1 that accept every connection and then send a greeting
    (or nothing: silence); :meth:`close` closes them and their connections."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def start(self, greeting: bytes = b"") -> str:
        """A new listener; its tcp:// address."""
        server = socket.create_server(("127.0.0.1", 0))
        self.sockets.append(server)

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed
                    return
                self.sockets.append(conn)
                if greeting:
                    conn.sendall(greeting)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets = []


@pytest.fixture
def listener():
    box = _Listener()
    yield box
    box.close()


@pytest.fixture
def short_connect(monkeypatch):
    """The scheduler's connect timeout 1 s and the grace for its answer 1 s."""
    pytest.importorskip("dask.distributed")
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1, raising=False)
    monkeypatch.setattr(executors, "ANSWER_GRACE_S", 1, raising=False)


def test_a_silent_server_at_the_address_is_an_input_error_not_a_hang(tmp_path, listener,
                                                                     short_connect):
    """A listener that takes the connection and says nothing (as an HTTP server does to the
    Dask handshake): run_study raises one InputError after connect timeout + grace (2 s
    here), before the study folder is made; it used to wait forever."""
    address = listener.start()
    study = _study(tmp_path, seeds=1, extra="")
    out = tmp_path / "out"
    start = time.perf_counter()
    with deadline(30), pytest.raises(InputError) as err:
        run_study(study, out, executor="dask", address=address, progress=False, report=False)
    assert time.perf_counter() - start < 15
    assert str(err.value) == (
        f"{address} took the connection but gave no answer of a Dask scheduler within 2 s; "
        "give the address the scheduler prints ('Scheduler at: tcp://HOST:PORT'), not a "
        "worker's or another service's")
    assert err.value.__cause__ is None
    assert not out.exists()


def test_the_connect_helper_ends_when_the_silent_server_closes(listener, short_connect):
    """After the InputError of a silent server, closing its connections ends the helper
    thread (no thread left behind for good)."""
    address = listener.start()
    with deadline(30), pytest.raises(InputError, match="gave no answer"):
        executors.connect(address)
    helpers = [t for t in threading.enumerate() if t.name == "ncsim-dask-connect"]
    assert helpers
    listener.close()
    for helper in helpers:
        helper.join(15)
    assert not any(helper.is_alive() for helper in helpers)


def test_a_server_with_a_banner_is_an_input_error(listener, short_connect):
    """An SSH server's banner read as a Dask frame asked for exabytes (MemoryError, a
    traceback): now one InputError saying the address does not answer as a scheduler."""
    address = listener.start(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    with deadline(30), pytest.raises(InputError) as err:
        executors.connect(address)
    assert str(err.value).startswith(f"{address} does not answer as a Dask scheduler (")
    assert str(err.value).endswith("); give the address the scheduler prints ('Scheduler "
                                   "at: tcp://HOST:PORT'), not a worker's or another "
                                   "service's")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_dask_workers_address_is_an_input_error(short_connect):
    """The address of a Dask worker, not of its scheduler: one InputError naming the
    worker's refusal (was a TypeError traceback: Worker.identity() got 'n_workers')."""
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        worker = next(iter(cluster.scheduler_info["workers"]))
        with deadline(30), pytest.raises(InputError) as err:
            executors.connect(worker)
        client = executors.connect(cluster.scheduler_address)  # the scheduler's: taken
        client.close()
    assert str(err.value).startswith(f"{worker} does not answer as a Dask scheduler "
                                     "(TypeError: ")
    assert "n_workers" in str(err.value)


def test_a_refused_port_is_cannot_reach_after_the_connect_timeout(short_connect):
    """A port nobody listens on: 'cannot reach' once the connect timeout (1 s here) has
    passed, not the grace for a silent server."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed
    start = time.perf_counter()
    with deadline(30), pytest.raises(InputError) as err:
        executors.connect(f"tcp://127.0.0.1:{port}")
    assert str(err.value).startswith(f"cannot reach the Dask scheduler at tcp://127.0.0.1:"
                                     f"{port}: Timed out trying to connect")
    assert 0.9 < time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- open finding
def test_a_repeated_spec_resumed_alone_gives_the_uninterrupted_tables(tmp_path, monkeypatch):
    """Parts "ufm" and "copy" hold the same simulated spec (one batch of 2): interrupted
    after the first, then resumed, the tables equal the uninterrupted run's."""
    copy = '\n[[parts]]\nname = "copy"\nmodel = "simulated"\n[parts.grid]\nseed = [0]\n'
    study = _study(tmp_path, seeds=1, chunk=4, extra=copy)
    run_study(study, tmp_path / "whole", progress=False, report=False)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", lambda chunk: run_chunk(chunk[:1]))
        run_study(study, out, progress=False, report=False)
    assert run_study(study, out, progress=False, report=False).computed == 1
    _assert_same_tables(out, tmp_path / "whole")
