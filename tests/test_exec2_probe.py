"""Probe tests of the study executors: exact messages of bad executor options, the worker
count of the process pool at chunk-count boundaries, each chunk's results matched to its own
runs (a raising chunk anywhere), the SIGTERM guard around the pool, and the Dask executor's
cluster options, key mapping and cleanup (a stand-in ``distributed`` module and an in-process
cluster)."""

from __future__ import annotations

import concurrent.futures
import signal
import types

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

import ncsim.study.executors as executors
from ncsim.errors import InputError
from ncsim.study.spec import RunDesc


def _runs(n: int) -> list[RunDesc]:
    """n simulated runs of one structure (seeds 0 .. n-1)."""
    return [RunDesc("a", "simulated", {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0,
                                       "seed": s}) for s in range(n)]


def _split(descs: list[RunDesc], size: int) -> list[list[RunDesc]]:
    return [descs[k:k + size] for k in range(0, len(descs), size)]


def _rows(chunk: list[RunDesc]) -> list:
    """Rows of status ok for a chunk, each holding its own seed, in place of computing it."""
    return [(d.run_id, {"status": "ok", "seed": d.params["seed"]}, None) for d in chunk]


def _raising_on(seed: int, error: Exception):
    def work(chunk):
        if any(d.params["seed"] == seed for d in chunk):
            raise error
        return _rows(chunk)
    return work


def _by_run(got: list) -> dict:
    return {rid: (row["status"], row.get("error"), row.get("seed")) for rid, row, _ in got}


# ----------------------------------------------------------------------------- option checks
WORKERS_WHERE = ("--workers sets the workers of --executor process or of the Dask LocalCluster "
                 "(--executor dask without --address); the local executor runs in this "
                 "process, and a scheduler's workers are started with it")


@pytest.mark.parametrize(("executor", "address", "workers", "message"), [
    ("threads", "tcp://h:1", 0, "unknown executor 'threads'; allowed: local, process, dask"),
    ("process", "tcp://h:1", 0, "--address needs --executor dask"),
    ("process", None, "3", "workers must be an integer >= 1 (worker processes), got '3'; leave "
                           "it out for the executor's default"),
    ("process", None, True, "workers must be an integer >= 1 (worker processes), got True; "
                            "leave it out for the executor's default"),
    ("local", None, 0, "workers must be an integer >= 1 (worker processes), got 0; leave it "
                       "out for the executor's default"),
    ("local", None, 2, WORKERS_WHERE),
])
def test_bad_executor_options_have_their_exact_message(executor, address, workers, message):
    """check_executor: the whole message of each refusal, the first failing check winning
    (the worker count's repr, so text '3' is quoted)."""
    with pytest.raises(InputError) as err:
        executors.check_executor(executor, address, workers)
    assert str(err.value) == message


def test_a_numpy_worker_count_is_taken():
    """check_executor: a numpy integer worker count >= 1 is an integer."""
    executors.check_executor("process", None, np.int64(1))


# ----------------------------------------------------------------------------- local
def test_local_chunks_run_on_one_thread_and_the_count_is_restored(monkeypatch):
    """The local executor runs every chunk with torch on one thread, and gives the thread
    count back afterwards."""
    seen: list[int] = []

    def work(chunk):
        seen.append(torch.get_num_threads())
        return _rows(chunk)

    monkeypatch.setattr(executors, "run_chunk", work)
    with torch_threads(2):
        got: list = []
        executors.execute(_split(_runs(3), 2), "local", got.append)
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
        assert [len(r) for r in got] == [2, 1]


def test_local_on_done_error_propagates_once(monkeypatch):
    """An error of on_done (writing the results) is not a chunk failure: it leaves execute at
    once, on_done called once, no failed rows made."""
    monkeypatch.setattr(executors, "run_chunk", _rows)
    calls: list = []

    def done(results):
        calls.append(results)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        executors.execute(_split(_runs(2), 1), "local", done)
    assert len(calls) == 1 and calls[0][0][1]["status"] == "ok"


@pytest.mark.parametrize(("n", "size", "bad"), [(1, 1, 0), (4, 2, 2), (5, 2, 4), (5, 3, 1)])
def test_local_raising_chunk_fails_its_own_runs(monkeypatch, n, size, bad):
    """Chunks that divide the runs or not, one run: the chunk holding seed ``bad`` fails all
    its runs and no other; results come in chunk order."""
    monkeypatch.setattr(executors, "run_chunk", _raising_on(bad, ValueError("x")))
    descs = _runs(n)
    chunks = _split(descs, size)
    got: list = []
    executors.execute(chunks, "local", got.append)
    assert [[rid for rid, _, _ in r] for r in got] == [[d.run_id for d in c] for c in chunks]
    bad_chunk = next(c for c in chunks if any(d.params["seed"] == bad for d in c))
    for chunk, results in zip(chunks, got):
        for d, (_, row, _) in zip(chunk, results):
            if chunk is bad_chunk:
                assert (row["status"], row["error"]) == ("failed",
                                                         "local executor: ValueError: x")
            else:
                assert (row["status"], row["seed"]) == ("ok", d.params["seed"])


# ----------------------------------------------------------------------------- chunk_error
@pytest.mark.parametrize(("name", "hint"), [
    ("KilledWorker", "every worker that ran it died (killed, e.g. for memory)"),
    ("FutureCancelledError", "the Dask scheduler or the connection to it was lost"),
])
def test_dask_losses_are_explained(name, hint):
    """chunk_error: a KilledWorker or FutureCancelledError (matched by class name) gets its
    meaning in parentheses."""
    error = type(name, (Exception,), {})("run_chunk-ab12-3 lost")
    assert executors.chunk_error("dask", error) == f"dask executor: {name}: run_chunk lost ({hint})"


# ----------------------------------------------------------------------------- process
class _Pool(concurrent.futures.ThreadPoolExecutor):
    """The process pool's interface on threads; records the worker counts asked for."""

    counts: list[int] = []

    def __init__(self, count, mp_context=None, initializer=None):
        _Pool.counts.append(count)
        super().__init__(count)


@pytest.fixture
def pool(monkeypatch):
    _Pool.counts = []
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(executors, "run_chunk", _rows)
    return _Pool


@pytest.mark.parametrize(("chunks", "cpus", "workers", "want"), [
    (5, 2, None, 2),      # more chunks than CPUs: one worker per CPU
    (2, 8, None, 2),      # fewer chunks: one worker per chunk
    (1, 8, None, 1),      # one run
    (3, None, None, 1),   # CPU count unknown: one worker
    (2, 8, 4, 4),         # --workers is taken as given, even above the chunk count
])
def test_process_pool_size(pool, monkeypatch, chunks, cpus, workers, want):
    """The pool has min(chunks, CPUs) workers (1 CPU when unknown), or --workers; every run
    of every chunk is handed over once."""
    monkeypatch.setattr(executors.os, "cpu_count", lambda: cpus)
    descs = _runs(chunks)
    got: list = []
    executors.execute(_split(descs, 1), "process", got.extend, workers=workers)
    assert pool.counts == [want]
    assert sorted(rid for rid, _, _ in got) == sorted(d.run_id for d in descs)


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_process_raising_chunk_fails_its_own_runs(pool, monkeypatch, bad):
    """A raising chunk first, in the middle or last (chunks of 2, 2, 1): its runs, and only
    they, are failed with the process executor's error; the others keep their rows."""
    monkeypatch.setattr(executors, "run_chunk", _raising_on(bad, RuntimeError("boom")))
    descs = _runs(5)
    chunks = _split(descs, 2)
    got: list = []
    executors.execute(chunks, "process", got.extend, workers=1)
    bad_ids = {d.run_id for c in chunks if any(d.params["seed"] == bad for d in c) for d in c}
    want = {d.run_id: (("failed", "process executor: RuntimeError: boom", d.params["seed"])
                       if d.run_id in bad_ids else ("ok", None, d.params["seed"]))
            for d in descs}
    assert _by_run(got) == want and len(got) == 5


def test_process_pool_runs_under_the_sigterm_guard(pool, monkeypatch):
    """While the pool computes, SIGTERM has the executor's handler (ending the workers); the
    previous handler is back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    seen: list = []

    def work(chunk):
        seen.append(signal.getsignal(signal.SIGTERM))
        return _rows(chunk)

    monkeypatch.setattr(executors, "run_chunk", work)
    executors.execute(_split(_runs(2), 1), "process", lambda r: None)
    assert len(seen) == 2 and all(h is not before and callable(h) for h in seen)
    assert signal.getsignal(signal.SIGTERM) is before


def test_process_on_done_error_propagates_once(pool):
    """An error of on_done in the process executor leaves execute; it is not recorded as a
    failed chunk (on_done called once)."""
    calls: list = []

    def done(results):
        calls.append(results)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        executors.execute(_split(_runs(1), 1), "process", done)
    assert len(calls) == 1 and calls[0][0][1]["status"] == "ok"


# ----------------------------------------------------------------------------- dask (stand-in)
class _Future:
    def __init__(self, key, value, error):
        self.key, self._value, self._error = key, value, error

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


class _FakeDask:
    """A stand-in ``distributed``: records the cluster's options and what was closed;
    futures complete in reverse order."""

    def __init__(self):
        self.log: list = []
        fake = self

        class LocalCluster:
            def __init__(self, **kwargs):
                fake.log.append(("cluster", kwargs))

            def close(self):
                fake.log.append("cluster closed")

        class Client:
            def __init__(self, target=None, timeout=None):
                fake.log.append("client")

            def register_plugin(self, plugin, name):
                fake.log.append(("plugin", name))

            def map(self, fn, chunks, pure):
                fake.log.append(("map", pure))
                futures = []
                for k, chunk in enumerate(chunks):
                    try:
                        value, error = fn(chunk), None
                    except Exception as err:
                        value, error = None, err
                    futures.append(_Future(f"run_chunk-{k}", value, error))
                return futures

            def close(self):
                fake.log.append("client closed")

        self.module = types.SimpleNamespace(
            LocalCluster=LocalCluster, Client=Client, WorkerPlugin=object,
            as_completed=lambda futures: list(reversed(futures)))


@pytest.fixture
def fake_dask(monkeypatch):
    fake = _FakeDask()
    monkeypatch.setattr(executors, "_distributed", lambda: fake.module)
    monkeypatch.setattr(executors, "run_chunk", _rows)
    return fake


@pytest.mark.parametrize(("workers", "n_workers"), [(None, 2), (5, 5)])
def test_dask_local_cluster_options_and_cleanup(fake_dask, workers, n_workers):
    """Without --address: a LocalCluster of single-threaded process workers, no dashboard,
    logs below ERROR silenced, 2 workers or --workers (even above the chunk count); tasks
    impure; client then cluster closed."""
    import logging

    executors.execute(_split(_runs(2), 1), "dask", lambda r: None, workers=workers)
    assert fake_dask.log == [
        ("cluster", {"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                     "dashboard_address": None, "silence_logs": logging.ERROR}),
        "client", ("plugin", executors.WORKER_PLUGIN), ("map", False), "client closed",
        "cluster closed"]


def test_dask_closes_client_and_cluster_when_on_done_raises(fake_dask):
    """An error while the results are handed over still closes the client and the
    cluster."""
    def done(results):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        executors.execute(_split(_runs(2), 1), "dask", done)
    assert fake_dask.log[-2:] == ["client closed", "cluster closed"]


def test_dask_with_an_address_closes_its_client_and_makes_no_cluster(fake_dask, monkeypatch):
    """--address: the client of connect() is used and closed; no LocalCluster."""
    monkeypatch.setattr(executors, "connect", lambda address: fake_dask.module.Client())
    monkeypatch.setattr(executors, "note_no_workers", lambda client, address: False)
    executors.execute(_split(_runs(1), 1), "dask", lambda r: None, address="tcp://h:1")
    assert fake_dask.log == ["client", ("plugin", executors.WORKER_PLUGIN), ("map", False),
                             "client closed"]


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_dask_results_are_matched_to_their_chunk_by_key(fake_dask, monkeypatch, bad):
    """Futures completing out of order: a raising chunk's runs (first, middle or last of
    chunks of 2, 2, 1) are failed with the dask executor's error, every other run keeps its
    own row."""
    monkeypatch.setattr(executors, "run_chunk", _raising_on(bad, MemoryError("no room")))
    descs = _runs(5)
    chunks = _split(descs, 2)
    got: list = []
    executors.execute(chunks, "dask", got.extend)
    bad_ids = {d.run_id for c in chunks if any(d.params["seed"] == bad for d in c) for d in c}
    assert _by_run(got) == {
        d.run_id: (("failed", "dask executor: MemoryError: no room", d.params["seed"])
                   if d.run_id in bad_ids else ("ok", None, d.params["seed"])) for d in descs}
    assert len(got) == 5


def test_dask_in_process_cluster_with_more_workers_than_runs(monkeypatch):
    """A real in-process LocalCluster of 3 workers for one run of one chunk: that run's row
    comes back once."""
    distributed = pytest.importorskip("dask.distributed")
    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster",
                        lambda **kwargs: real(**{**kwargs, "processes": False}))
    monkeypatch.setattr(executors, "_init_worker", lambda: None)
    monkeypatch.setattr(executors, "run_chunk", _rows)
    (desc,) = _runs(1)
    got: list = []
    executors.execute([[desc]], "dask", got.extend, workers=3)
    assert _by_run(got) == {desc.run_id: ("ok", None, 0)}


# ----------------------------------------------------------------------------- scheduler
def test_waiting_for_workers_asks_for_one_for_five_seconds():
    """note_no_workers: waits for 1 worker, 5 s unless told."""
    asked: list = []

    class Client:
        def wait_for_workers(self, n_workers, timeout):
            asked.append((n_workers, timeout))

    assert executors.note_no_workers(Client(), "tcp://h:1") is False
    assert asked == [(1, 5.0)]
