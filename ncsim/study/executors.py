"""Executors: where the chunks of a study run.

- ``local``: in this process, one chunk after the other (simulated runs of one structure are
  integrated together, chunk by chunk, so the batching pays off);
- ``process``: a :class:`concurrent.futures.ProcessPoolExecutor` on this machine;
- ``dask``: a ``distributed`` client on ``address`` (``tcp://host:8786``) or, without an
  address, a ``LocalCluster`` of 2 single-threaded workers. Dask is imported only here, only
  when asked for.

Every executor calls ``on_done(results)`` in this process as each chunk finishes, so results are
written by one process only. A chunk whose work raises, or whose worker or executor is lost (a
worker process killed, e.g. for memory: ``BrokenProcessPool``, ``KilledWorker``; the Dask
scheduler gone: ``FutureCancelledError``), gives its runs as failed with that error, so the
study goes on (or ends with every run recorded) and ``--retry-failed`` computes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ncsim.errors import InputError, is_integer
from ncsim.heap import keep_freed_memory
from ncsim.study.compute import Result, failed_results, run_chunk
from ncsim.study.spec import RunDesc
from ncsim.threads import bounded_threads, set_threads

EXECUTORS = ("local", "process", "dask")
Done = Callable[[list[Result]], None]
# the most worker processes --workers may start on this machine: each holds open files of
# the study process (whose limit is often 1024), a Dask LocalCluster starts them all at once,
# and the process pool's queue refuses 2**31 - 1 or more (OverflowError)
MAX_WORKERS = 1024
CONNECT_TIMEOUT_S = 20  # to reach the scheduler (the Dask client's own retries)
ANSWER_GRACE_S = 10  # then for its answer: a server that takes the connection and stays
# silent (an HTTP server, a plain listener) held the Dask client forever
NO_WORKERS_WAIT_S = 5.0  # after this long without a worker, --address says so (and waits on)
# what the errors of a lost chunk mean, for its runs' error text
LOST_HINTS = {
    "BrokenProcessPool": "a worker process died (killed, e.g. for memory, or crashed); the "
                         "chunks still in the pool were lost with it",
    "KilledWorker": "every worker that ran it died (killed, e.g. for memory)",
    "FutureCancelledError": "the Dask scheduler or the connection to it was lost",
    "CancelledError": "the executor cancelled it (its scheduler or pool was lost)",
}


def execute(chunks: list[list[RunDesc]], executor: str = "local", on_done: Done | None = None,
            address: str | None = None, workers: int | None = None) -> None:
    """Run every chunk with ``executor``; ``on_done`` receives each chunk's results."""
    check_executor(executor, address, workers)
    done = on_done or (lambda _results: None)
    if not chunks:
        return
    if executor == "local":
        _local(chunks, done)
    elif executor == "process":
        _process(chunks, done, workers)
    else:
        _dask(chunks, done, address, workers)


def check_executor(executor: str, address: str | None, workers: int | None = None) -> None:
    """Reject an unknown executor, an address without Dask, a worker count that is not an
    integer >= 1, or one that no worker pool of this process would take (the local executor,
    or a scheduler given by address), before anything starts."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if address is not None and executor != "dask":
        raise InputError("--address needs --executor dask")
    if workers is not None and not (is_integer(workers) and workers >= 1):
        raise InputError(f"workers must be an integer >= 1 (worker processes), got {workers!r}; "
                         "leave it out for the executor's default")
    if workers is not None and workers > MAX_WORKERS:
        raise InputError(f"workers must be at most {MAX_WORKERS} (worker processes on this "
                         f"machine), got {workers!r}; for more, start a Dask scheduler and "
                         "its workers and give --address")
    if workers is not None and (executor == "local" or address is not None):
        raise InputError("--workers sets the workers of --executor process or of the Dask "
                         "LocalCluster (--executor dask without --address); the local executor "
                         "runs in this process, and a scheduler's workers are started with it")
    if executor == "dask":
        _distributed()  # installed, before a study folder is written


def _local(chunks: list[list[RunDesc]], done: Done) -> None:
    """One chunk after the other, torch and the BLAS libraries on one thread (small batched
    tensors gain nothing from more, and a shared machine loses a lot)."""
    with bounded_threads(1):
        for chunk in chunks:
            try:
                results = run_chunk(chunk)
            except Exception as err:  # run_chunk records its runs' errors; this is a safety net
                results = failed_results(chunk, chunk_error("local", err))
            done(results)


def chunk_error(executor: str, err: BaseException) -> str:
    """The error text (one line) of the runs of a chunk that ``executor`` did not return:
    the exception, and what it means where that is known."""
    name = type(err).__name__
    text = re.sub(r"\brun_chunk-[\w-]+", "run_chunk", " ".join(str(err).split()))
    hint = LOST_HINTS.get(name)
    return f"{executor} executor: {name}" + (f": {text}" if text else "") + (
        f" ({hint})" if hint else "")


def _finish(future: Any, chunk: list[RunDesc], done: Done, executor: str) -> None:
    """Hand a chunk's results to ``done``; a future that failed (the work raised, its worker
    died, its executor is gone) gives the chunk's runs as failed with the error."""
    try:
        results = future.result()
    except Exception as err:
        results = failed_results(chunk, chunk_error(executor, err))
    done(results)


def _init_worker() -> None:
    """A worker process: one thread per library, freed heap kept (:mod:`ncsim.heap`), and
    ended with the study process (:func:`_end_with_parent`)."""
    set_threads(1)
    keep_freed_memory()
    _end_with_parent()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent() -> None:
    """On Linux, ask the kernel to end this worker when the process that started it dies:
    a study process killed by SIGKILL (out of memory, a batch scheduler) would otherwise leave
    its idle pool workers behind. Elsewhere a no-op; Dask workers manage themselves."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request: end now
        os._exit(1)


def _process(chunks: list[list[RunDesc]], done: Done, workers: int | None) -> None:
    """A pool of spawned processes. A worker that dies breaks the pool: its chunk and the
    chunks not yet returned are recorded as failed (``BrokenProcessPool``)."""
    from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, as_completed

    count = workers or min(len(chunks), os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")
    with _workers_end_on_sigterm(), ProcessPoolExecutor(count, mp_context=context,
                                                        initializer=_init_worker) as pool:
        futures = {}
        try:
            for chunk in chunks:
                try:
                    futures[pool.submit(run_chunk, chunk)] = chunk
                except BrokenExecutor as err:  # the pool broke while chunks were submitted
                    done(failed_results(chunk, chunk_error("process", err)))
            for future in as_completed(futures):
                _finish(future, futures[future], done, "process")
        except BaseException:  # Ctrl-C, SIGTERM, or an error in writing a result
            _stop_pool(pool)
            raise


def _stop_pool(pool: Any) -> None:
    """Leave a process pool at once, its results no longer written (Ctrl-C, an error in
    writing a result): its worker processes are ended and the chunks not started dropped.
    Leaving the pool as it is (``with``) waited for every chunk still in it to be computed,
    and threw their results away."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _workers_end_on_sigterm() -> Iterator[None]:
    """While the pool runs, SIGTERM (a batch scheduler, ``timeout``, ``kill``) ends this
    process's worker processes and then the process itself, with status 128 + 15 as the
    local executor; the finished runs are on disk and a rerun resumes. SIGINT from a terminal
    already reaches the workers (one process group). Outside the main thread no handler can
    be set, and none is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, _frame: object) -> None:
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, end)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _distributed():
    """The ``dask.distributed`` module, or :class:`InputError` saying how to install it."""
    try:
        import dask.distributed
    except ImportError:
        raise InputError("--executor dask needs dask[distributed]: pip install "
                         "'ncsim[dask]'") from None
    return dask.distributed


def connect(address: str):
    """A ``distributed`` client of the scheduler at ``address``; :class:`InputError` when the
    address is malformed (no port, an unknown scheme), cannot be reached within 20 s
    (``CONNECT_TIMEOUT_S``), or is served by something that does not answer as a Dask
    scheduler: garbage (an SSH server), a Dask worker, or silence for 10 s more
    (``ANSWER_GRACE_S``; the client's handshake has no time limit of its own, so an HTTP
    server held it forever). The client is made in a helper thread; one left waiting on a
    silent server is a daemon thread, given up."""
    distributed = _distributed()
    from distributed.comm import resolve_address

    try:
        resolve_address(address)  # the form of the address, before a client is made
    except ValueError as err:
        raise InputError(f"--address {address!r} is not a Dask scheduler address ({err}); "
                         "give one as tcp://HOST:PORT") from None
    made: dict[str, Any] = {}

    def make() -> None:
        try:
            made["client"] = distributed.Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except BaseException as err:  # handed to the caller's thread
            made["error"] = err

    helper = threading.Thread(target=make, name="ncsim-dask-connect", daemon=True)
    helper.start()
    helper.join(CONNECT_TIMEOUT_S + ANSWER_GRACE_S)
    where = ("give the address the scheduler prints ('Scheduler at: tcp://HOST:PORT'), not a "
             "worker's or another service's")
    if helper.is_alive():
        raise InputError(f"{address} took the connection but gave no answer of a Dask "
                         f"scheduler within {CONNECT_TIMEOUT_S + ANSWER_GRACE_S} s; {where}")
    err = made.get("error")
    if isinstance(err, OSError):
        raise InputError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    if isinstance(err, Exception):
        text = " ".join(str(err).split())
        raise InputError(f"{address} does not answer as a Dask scheduler "
                         f"({type(err).__name__}{': ' + text if text else ''}); "
                         f"{where}") from None
    if err is not None:
        raise err
    return made["client"]


def check_scheduler(executor: str, address: str | None) -> None:
    """With ``--executor dask --address``, connect once and leave, so that an unreachable
    scheduler is reported before a study writes anything."""
    if executor == "dask" and address is not None:
        connect(address).close()


def _dask(chunks: list[list[RunDesc]], done: Done, address: str | None,
          workers: int | None) -> None:
    distributed = _distributed()
    cluster = None
    if address is None:
        import logging

        cluster = distributed.LocalCluster(n_workers=workers or 2, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    else:
        client = connect(address)
    try:
        client.register_plugin(_worker_setup(distributed), name=WORKER_PLUGIN)
        futures = client.map(run_chunk, chunks, pure=False)
        if address is not None:
            note_no_workers(client, address)
        chunk_of = {future.key: chunk for future, chunk in zip(futures, chunks)}
        for future in distributed.as_completed(futures):
            _finish(future, chunk_of[future.key], done, "dask")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


WORKER_PLUGIN = "ncsim-worker-setup"


def _worker_setup(distributed: Any) -> Any:
    """A Dask worker plugin that runs :func:`_init_worker` on every worker, those that join
    the scheduler after the study started included (``client.run`` reaches only the workers
    present when it is called, while the no-workers note invites starting them later)."""

    class WorkerSetup(distributed.WorkerPlugin):
        def setup(self, worker: Any) -> None:
            _init_worker()

    return WorkerSetup()


def note_no_workers(client: Any, address: str, wait_s: float = NO_WORKERS_WAIT_S) -> bool:
    """Wait up to ``wait_s`` for a worker of the scheduler at ``address``; without one, say so
    in one line on stderr (the study waits on: workers may join later). Whether it said so."""
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, asyncio.TimeoutError):
        print(f"note: the Dask scheduler at {address} has no workers yet; the study waits for "
              f"them (start some with: dask worker {address} --nthreads 1)", file=sys.stderr,
              flush=True)
        return True
    except OSError:  # the scheduler is gone: the chunks' futures say so, and are recorded
        return False
    return False
