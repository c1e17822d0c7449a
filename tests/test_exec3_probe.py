"""Probe tests of the study executors: which errors become failed rows and which leave
execute (Ctrl-C, an on_done error, a pool that cannot take work for another reason), the
results handed over as each chunk finishes, option checks made by execute itself, the exact
refusals of a scheduler address, and the parent-death request without prctl."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import signal
import sys
import threading
import types

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


def _rows(chunk: list[RunDesc]) -> list:
    """Rows of status ok for a chunk, each holding its own seed, in place of computing it."""
    return [(d.run_id, {"status": "ok", "seed": d.params["seed"]}, None) for d in chunk]


def _seeds(results: list) -> list:
    return [row["seed"] for _, row, _ in results]


class _Pool(concurrent.futures.ThreadPoolExecutor):
    """The process pool's interface on threads of this process."""

    def __init__(self, count, mp_context=None, initializer=None):
        super().__init__(count)


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(executors, "run_chunk", _rows)
    return _Pool


# ----------------------------------------------------------------------------- interrupts
def test_ctrl_c_in_a_local_chunk_leaves_execute_and_restores_threads(monkeypatch):
    """Local: KeyboardInterrupt from a chunk's work is no failed row: it leaves execute at
    once (no later chunk runs, on_done not called for it) and the thread count is restored."""
    started: list[int] = []

    def work(chunk):
        started.append(chunk[0].params["seed"])
        if chunk[0].params["seed"] == 1:
            raise KeyboardInterrupt
        return _rows(chunk)

    monkeypatch.setattr(executors, "run_chunk", work)
    with torch_threads(2):
        got: list = []
        with pytest.raises(KeyboardInterrupt):
            executors.execute([[d] for d in _runs(3)], "local", got.append)
        assert started == [0, 1]
        assert [_seeds(r) for r in got] == [[0]]
        assert torch.get_num_threads() == 2


def test_a_future_raising_ctrl_c_is_not_a_failed_chunk():
    """_finish: a future whose result raises KeyboardInterrupt (a BaseException) lets it
    through; on_done is not called with failed rows."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(KeyboardInterrupt())
    got: list = []
    with pytest.raises(KeyboardInterrupt):
        executors._finish(future, _runs(2), got.append, "dask")
    assert got == []


def test_ctrl_c_in_on_done_of_the_process_pool_restores_the_sigterm_handler(pool):
    """Process: KeyboardInterrupt while the results are written leaves execute, and the
    SIGTERM handler set for the pool is the previous one again."""
    before = signal.getsignal(signal.SIGTERM)

    def done(results):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executors.execute([[d] for d in _runs(2)], "process", done, workers=1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_submit_error_other_than_a_broken_pool_leaves_execute(monkeypatch):
    """Process: only a broken pool (BrokenExecutor) at submit gives failed rows; another
    error of submit (here RuntimeError) is raised from execute, nothing handed over."""
    class Refusing(_Pool):
        def submit(self, fn, *args):
            raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Refusing)
    monkeypatch.setattr(executors, "run_chunk", _rows)
    got: list = []
    with pytest.raises(RuntimeError, match="cannot schedule new futures"):
        executors.execute([[d] for d in _runs(2)], "process", got.append, workers=1)
    assert got == []


# ----------------------------------------------------------------------------- ordering
def test_process_results_are_handed_over_as_each_chunk_finishes(pool, monkeypatch):
    """Process: on_done gets a chunk's results when it finishes, not in submission order:
    the first chunk waits for on_done of the second, and both come back computed."""
    second_written = threading.Event()

    def work(chunk):
        if chunk[0].params["seed"] == 0 and not second_written.wait(10):
            raise RuntimeError("the second chunk's results were not handed over first")
        return _rows(chunk)

    def done(results):
        order.append(_seeds(results))
        if _seeds(results) == [1]:
            second_written.set()

    monkeypatch.setattr(executors, "run_chunk", work)
    order: list = []
    executors.execute([[d] for d in _runs(2)], "process", done, workers=2)
    assert order == [[1], [0]]


def test_execute_without_on_done_runs_every_chunk(pool, monkeypatch):
    """execute without on_done: the chunks run (local and process) and nothing is raised."""
    seen: list = []
    monkeypatch.setattr(executors, "run_chunk", lambda chunk: seen.append(len(chunk)) or
                        _rows(chunk))
    runs = _runs(3)
    assert executors.execute([runs[:2], runs[2:]], "local") is None
    assert executors.execute([runs[:1]], "process") is None
    assert seen == [2, 1, 1]


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(("executor", "workers", "message"), [
    ("local", 2, "--workers sets the workers of --executor process or of the Dask "
                 "LocalCluster (--executor dask without --address); the local executor runs "
                 "in this process, and a scheduler's workers are started with it"),
    ("process", 0, "workers must be an integer >= 1 (worker processes), got 0; leave it out "
                   "for the executor's default"),
    ("process", 1.5, "workers must be an integer >= 1 (worker processes), got 1.5; leave it "
                     "out for the executor's default"),
])
def test_execute_checks_the_worker_count_itself(monkeypatch, executor, workers, message):
    """execute refuses a worker count its executor would not take, before any chunk runs."""
    monkeypatch.setattr(executors, "run_chunk", lambda chunk: pytest.fail("a chunk ran"))
    with pytest.raises(InputError) as err:
        executors.execute([_runs(1)], executor, lambda r: None, workers=workers)
    assert str(err.value) == message


# ----------------------------------------------------------------------------- error text
def test_only_a_whole_task_key_word_is_shortened():
    """chunk_error: 'run_chunk-<key>' becomes 'run_chunk' where it starts a word, and is kept
    inside a longer name (my_run_chunk-7)."""
    error = RuntimeError("task my_run_chunk-7 lost;\trun_chunk-ab12-3 too (run_chunk-x)")
    assert executors.chunk_error("local", error) == (
        "local executor: RuntimeError: task my_run_chunk-7 lost; run_chunk too (run_chunk)")


# ----------------------------------------------------------------------------- scheduler address
@pytest.mark.parametrize("address", ["nonsense", "foo://x:1"])
def test_a_malformed_address_has_the_exact_refusal_without_a_chain(monkeypatch, address):
    """connect: a malformed address is one InputError, with the parser's reason in
    parentheses, raised from None (no chained ValueError), before a client is made."""
    distributed = pytest.importorskip("dask.distributed")
    from distributed.comm import resolve_address

    with pytest.raises(ValueError) as parsed:
        resolve_address(address)
    monkeypatch.setattr(distributed, "Client",
                        lambda *a, **k: pytest.fail("a client for a malformed address"))
    with pytest.raises(InputError) as err:
        executors.connect(address)
    assert str(err.value) == (f"--address {address!r} is not a Dask scheduler address "
                              f"({parsed.value}); give one as tcp://HOST:PORT")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_an_unreachable_scheduler_has_the_exact_refusal_without_a_chain(monkeypatch):
    """connect: a client that cannot connect (OSError) is one InputError with the address
    and the error, raised from None; the client was asked with a 20 s timeout."""
    distributed = pytest.importorskip("dask.distributed")
    asked: list = []

    def refuse(address, timeout):
        asked.append((address, timeout))
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(distributed, "Client", refuse)
    with pytest.raises(InputError) as err:
        executors.connect("tcp://127.0.0.1:8786")
    assert str(err.value) == "cannot reach the Dask scheduler at tcp://127.0.0.1:8786: refused"
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert asked == [("tcp://127.0.0.1:8786", "20s")]


def test_dask_missing_is_refused_without_a_chained_import_error(monkeypatch):
    """_distributed: without dask.distributed, the InputError says how to install it and
    does not chain the ImportError."""
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(InputError) as err:
        executors._distributed()
    assert str(err.value) == ("--executor dask needs dask[distributed]: pip install "
                              "'ncsim[dask]'")
    assert err.value.__cause__ is None and err.value.__suppress_context__


# ----------------------------------------------------------------------------- worker set-up
def test_end_with_parent_without_a_prctl_function_returns(monkeypatch):
    """_end_with_parent: a libc without prctl (AttributeError) is no error and no exit."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: types.SimpleNamespace())
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail("exited"))
    assert executors._end_with_parent() is None


@pytest.mark.parametrize(("pids", "exits"), [
    ([100, 57], [1]),  # the parent died: the worker was handed to a subreaper, not to init
    ([1, 1], []),      # the study process is pid 1 (a container's first process), alive
])
def test_end_with_parent_compares_with_its_own_parent(monkeypatch, pids, exits):
    """_end_with_parent: the worker ends when its parent pid changed around the request,
    whatever the new parent; a parent that is pid 1 from the start is no death."""
    ppids = iter(pids)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: types.SimpleNamespace(
        prctl=lambda *args: 0))
    monkeypatch.setattr(os, "getppid", lambda: next(ppids))
    ended: list = []
    monkeypatch.setattr(os, "_exit", ended.append)
    executors._end_with_parent()
    assert ended == exits
