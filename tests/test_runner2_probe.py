"""Mutation probes (second round) of the study runner, its executors and the store's resume
logic: what retry_failed retries, the chunk order the Dask executor gets, worker counts that
are refused, and a part selection given as one name."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from tiny_study import KICK_PART, NET_PART, write_tiny_study

from ncsim.errors import InputError
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study


def _traj(n):
    """A trajectory table of ``n`` rows."""
    return pd.DataFrame({"time": [float(i) for i in range(n)], "fn": [1.0] * n})


def test_retry_failed_retries_only_failed_runs_not_stalled_or_diverged(tmp_path):
    """retry_failed adds the runs of status "failed" only: a finished run that stalled or
    diverged is a result, not a failure, and is not computed again."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    store.write_run("ok", {"status": "ok"}, _traj(2))
    store.write_run("stalled", {"status": "stalled"}, _traj(3))
    store.write_run("diverged", {"status": "diverged"}, _traj(1))
    store.write_run("bad", {"status": "failed", "error": "boom"}, None)
    ids = ["new", "ok", "stalled", "diverged", "bad"]
    assert store.pending(ids) == ["new"]
    assert store.pending(ids, retry_failed=True) == ["new", "bad"]


def test_dask_executor_gets_the_long_work_first(tmp_path, monkeypatch):
    """Like the process executor, Dask (workers in parallel) gets trainings, then
    interventions, then the simulated batches; only the local executor goes cheap first."""
    pytest.importorskip("dask.distributed")
    import ncsim.study.runner as runner
    from ncsim.study.spec import load_study

    seen = {}

    def record(chunks, executor, on_done, address, workers):
        seen[executor] = [[d.part for d in chunk] for chunk in chunks]

    monkeypatch.setattr(runner, "execute", record)
    study = load_study(write_tiny_study(tmp_path, seeds=2, chunk=2, records=12,
                                        extra=KICK_PART + NET_PART))
    for executor in ("local", "dask"):
        runner.run_study(study, tmp_path / executor, executor=executor, progress=False,
                         report=False)
    assert seen == {"local": [["ufm", "ufm"], ["kick"], ["net"]],
                    "dask": [["net"], ["kick"], ["ufm", "ufm"]]}


def test_workers_with_a_scheduler_address_are_refused():
    """--workers with --executor dask --address is refused (the scheduler's workers are
    started with it), while --workers for the Dask LocalCluster is taken."""
    pytest.importorskip("dask.distributed")
    from ncsim.study.executors import check_executor

    with pytest.raises(InputError, match="a scheduler's workers are started with it"):
        check_executor("dask", "tcp://head:8786", 2)
    check_executor("dask", None, 2)
    check_executor("dask", "tcp://head:8786", None)


def test_a_part_selection_given_as_one_name_is_that_part():
    """select_parts takes a single part name as a string (not as its letters)."""
    from ncsim.study.runner import select_parts
    from ncsim.study.spec import parse_study

    raw = {"name": "s", "title": "S", "question": "q?", "claim": "c.",
           "analysis": "invariance",
           "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0},
           "parts": [{"name": n, "model": "simulated", "grid": {"seed": [0]}}
                     for n in ("base", "more")]}
    study = parse_study(raw, "s.toml")
    assert select_parts(study, "more") == ["more"]
    assert select_parts(study, "base", model="simulated") == ["base"]


@pytest.mark.parametrize("workers", [0, -1, 2.5])
def test_a_worker_count_below_one_is_an_input_error(workers):
    """A worker count that is not an integer >= 1 is refused before anything starts, as the
    command line's IntRange does (0 no longer means the default, -1 no longer reaches the
    process pool's ValueError)."""
    from ncsim.study.executors import check_executor

    with pytest.raises(InputError, match=r"workers must be an integer >= 1 .*got "
                                         + re.escape(repr(workers))):
        check_executor("process", None, workers)


def test_run_study_with_a_negative_worker_count_writes_no_folder(tmp_path):
    """run_study refuses workers = -1 before it binds the output folder."""
    study = load_study(write_tiny_study(tmp_path, seeds=1))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="workers must be an integer >= 1"):
        run_study(study, out, executor="process", workers=-1, progress=False, report=False)
    assert not out.exists()
