"""Run a study: resolve it into runs, skip finished ones, execute the rest, write the report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ncsim.study.executors import check_executor, check_scheduler, execute
from ncsim.study.spec import RunDesc, Study, build, run_spec
from ncsim.study.store import FAILED, Store

DEFAULT_CHUNK = 8


@dataclass
class RunSummary:
    """What a call of :func:`run_study` did.

    ``failed`` counts the study's failed runs in the folder after the call: those of this call
    and those of earlier calls that were not retried.
    """

    total: int
    skipped: int
    computed: int
    failed: int
    seconds: float
    out: Path


def chunk_runs(descs: list[RunDesc], cheap_first: bool = True) -> list[list[RunDesc]]:
    """Chunks of work: simulated runs of one batch structure together (``chunk`` at most,
    default 8); an intervention or a training is a chunk of its own.

    ``cheap_first`` (one chunk after the other, the ``local`` executor): simulated batches,
    then interventions, then trainings, so that an interrupted study has kept the cheap runs.
    Otherwise (workers in parallel) the long chunks go first, trainings then interventions
    then batches, so that they do not start last and leave the other workers idle."""
    groups: dict[tuple, list[RunDesc]] = {}
    interventions: list[list[RunDesc]] = []
    trainings: list[list[RunDesc]] = []
    for desc in descs:
        if desc.model != "simulated":
            trainings.append([desc])
        elif "intervene_time" in desc.params:
            interventions.append([desc])
        else:
            key = (build(desc).batch_key(), desc.params.get("chunk", DEFAULT_CHUNK))
            groups.setdefault(key, []).append(desc)
    chunks = [members[k:k + size] for (_, size), members in groups.items()
              for k in range(0, len(members), size)]
    if cheap_first:
        return chunks + interventions + trainings
    return trainings + interventions + chunks


def run_study(study: Study, out: str | Path, executor: str = "local", address: str | None = None,
              force: bool = False, retry_failed: bool = False, progress: bool = True,
              workers: int | None = None, report: bool = True) -> RunSummary:
    """Compute every unfinished run of ``study`` into ``out`` and write tables and report.

    Finished runs (their part files) are not recomputed unless ``force``, or unless they are
    stale (:func:`stale_runs`: simulated runs whose stored simulator id differs from the
    one their parameters give now); failed runs are retried with ``retry_failed`` (or
    ``force``).
    """
    check_executor(executor, address, workers)
    store = Store(out)
    if not store.study_path.exists():  # a new folder: an unreachable scheduler leaves none
        check_scheduler(executor, address)
    start = time.perf_counter()
    with store.lock():
        computed, failed, total = _compute(study, store, out, executor, address, force,
                                           retry_failed, progress, workers, report)
    return RunSummary(total=total, skipped=total - computed, computed=computed, failed=failed,
                      seconds=time.perf_counter() - start, out=Path(out))


def stale_runs(store: Store, descs: list[RunDesc]) -> set[str]:
    """Finished simulated runs whose stored simulator id (``sim_run_id``) is not the one their
    parameters give now: the simulator computes something else for them (e.g. a new draw of
    the initial state), so they are computed again. A spec repeated in one batch is stored
    with a ``-k`` suffix (:func:`ncsim.flow.simulate.unique_run_ids`), which is not compared.
    A finished intervention row without ``sim_run_id`` (stored before it was written) is
    stale when its init is drawn through the Gram factor
    (:func:`ncsim.models.init.draws_gram_factor`): it came from the entry-by-entry draw.
    Trained and failed rows are kept."""
    from ncsim.flow.simulate import run_id
    from ncsim.models.init import draws_gram_factor

    rows = store.rows(["status", "sim_run_id"])  # one read of each run file
    stale = set()
    for d in descs:
        row = rows.get(d.run_id, {})
        if d.model != "simulated" or row.get("status", FAILED) == FAILED:
            continue
        spec = run_spec(d.params)
        sim_id = row.get("sim_run_id")
        if isinstance(sim_id, str):
            if sim_id.split("-")[0] != run_id(spec):
                stale.add(d.run_id)
        elif ("intervene_time" in d.params and spec.init.kind == "gaussian"
              and draws_gram_factor(spec.model)):
            stale.add(d.run_id)
    return stale


def _compute(study: Study, store: Store, out: str | Path, executor: str, address: str | None,
             force: bool, retry_failed: bool, progress: bool, workers: int | None,
             report: bool) -> tuple[int, int, int]:
    """The body of :func:`run_study` (under the folder's lock): (computed, failed, total),
    ``failed`` counting every failed run of the study in the folder."""
    from ncsim.io import provenance

    descs = study.runs()
    ids = [d.run_id for d in descs]
    store.bind({**study.to_dict(), "run_ids": ids, "provenance": provenance()}, force=force)
    todo = set(store.pending(ids, force, retry_failed)) | stale_runs(store, descs)
    pending = [d for d in descs if d.run_id in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), initial=len(ids) - len(pending), unit="run",
                   desc=study.name, file=sys.stderr, leave=False)

    def on_done(results) -> None:
        for rid, row, traj in results:
            store.write_run(rid, row, traj)
        if bar is not None:
            bar.update(len(results))
            bar.set_postfix(left=bar.total - bar.n)

    try:
        execute(chunk_runs(pending, cheap_first=executor == "local"), executor, on_done,
                address, workers)
    finally:
        if bar is not None:
            bar.close()
    runs, _ = store.consolidate(ids)
    failed = int((runs["status"] == FAILED).sum()) if "status" in runs else 0
    if report:
        from ncsim.study.report import write_report

        write_report(out, nested=False)  # this study's report; `study report` covers all
    return len(pending), failed, len(ids)
