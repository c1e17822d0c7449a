"""Executors: where the chunks of a study run.

- ``local``: in this process, one chunk after the other (simulated runs of one structure are
  integrated together, chunk by chunk, so the batching pays off);
- ``process``: a :class:`concurrent.futures.ProcessPoolExecutor` on this machine;
- ``dask``: a ``distributed`` client on ``address`` (``tcp://host:8786``) or, without an
  address, a ``LocalCluster`` of 2 single-threaded workers. Dask is imported only here, only
  when asked for.

Every executor calls ``on_done(results)`` in this process as each chunk finishes, so results are
written by one process only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator

from ncsim.errors import InputError
from ncsim.heap import keep_freed_memory
from ncsim.study.compute import Result, run_chunk
from ncsim.study.spec import RunDesc
from ncsim.threads import bounded_threads, set_threads

EXECUTORS = ("local", "process", "dask")
Done = Callable[[list[Result]], None]


def execute(chunks: list[list[RunDesc]], executor: str = "local", on_done: Done | None = None,
            address: str | None = None, workers: int | None = None) -> None:
    """Run every chunk with ``executor``; ``on_done`` receives each chunk's results."""
    check_executor(executor, address)
    done = on_done or (lambda _results: None)
    if not chunks:
        return
    if executor == "local":
        _local(chunks, done)
    elif executor == "process":
        _process(chunks, done, workers)
    else:
        _dask(chunks, done, address, workers)


def check_executor(executor: str, address: str | None) -> None:
    """Reject an unknown executor, or an address without Dask, before anything starts."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if address is not None and executor != "dask":
        raise InputError("--address needs --executor dask")
    if executor == "dask":
        _distributed()  # installed, before a study folder is written


def _local(chunks: list[list[RunDesc]], done: Done) -> None:
    """One chunk after the other, torch and the BLAS libraries on one thread (small batched
    tensors gain nothing from more, and a shared machine loses a lot)."""
    with bounded_threads(1):
        for chunk in chunks:
            done(run_chunk(chunk))


def _init_worker() -> None:
    """A worker process: one thread per library, freed heap kept (:mod:`ncsim.heap`)."""
    set_threads(1)
    keep_freed_memory()


def _process(chunks: list[list[RunDesc]], done: Done, workers: int | None) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    count = workers or min(len(chunks), os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")
    with _workers_end_on_sigterm(), ProcessPoolExecutor(count, mp_context=context,
                                                        initializer=_init_worker) as pool:
        futures = [pool.submit(run_chunk, chunk) for chunk in chunks]
        for future in as_completed(futures):
            done(future.result())


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
    address is malformed (no port, an unknown scheme) or cannot be reached within 20 s."""
    distributed = _distributed()
    from distributed.comm import resolve_address

    try:
        resolve_address(address)  # the form of the address, before a client is made
        return distributed.Client(address, timeout="20s")
    except ValueError as err:
        raise InputError(f"--address {address!r} is not a Dask scheduler address ({err}); "
                         "give one as tcp://HOST:PORT") from None
    except OSError as err:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {err}") from None


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
        client.run(_init_worker)
        futures = client.map(run_chunk, chunks, pure=False)
        for future in distributed.as_completed(_iter(futures)):
            done(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _iter(futures: Iterable) -> list:
    return list(futures)
