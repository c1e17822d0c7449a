"""Run a study: resolve it into runs, skip finished ones, execute the rest, write the report."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ncsim.errors import InputError
from ncsim.study.executors import check_executor, check_scheduler, execute
from ncsim.study.spec import RunDesc, Study, build, run_spec
from ncsim.study.store import FAILED, Store

DEFAULT_CHUNK = 8


@dataclass
class RunSummary:
    """What a call of :func:`run_study` did.

    ``failed`` counts the study's failed runs in the folder after the call: those of this call
    and those of earlier calls that were not retried. ``selected`` is the number of runs of
    the parts the call was asked to compute (``total`` without a part selection).
    """

    total: int
    skipped: int
    computed: int
    failed: int
    seconds: float
    out: Path
    selected: int | None = None


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
              workers: int | None = None, report: bool = True,
              parts: Collection[str] | None = None) -> RunSummary:
    """Compute every unfinished run of ``study`` into ``out`` and write tables and report.

    Finished runs (their part files) are not recomputed unless ``force``, or unless they are
    stale (:func:`stale_runs`: simulated runs whose stored simulator id differs from the
    one their parameters give now); failed runs are retried with ``retry_failed`` (or
    ``force``). ``parts`` (names of the study's parts) computes only their runs; the folder
    still holds the whole study, so a later call without ``parts`` computes the rest, and
    until then the report's verdict is "incomplete" (with the verdict of the finished parts
    alone, :func:`ncsim.study.report.analyze_dir`).
    """
    check_executor(executor, address, workers)
    selected = select_parts(study, parts)
    selected = None if selected is None else set(selected)
    store = Store(out)
    if not store.study_path.exists():  # a new folder: an unreachable scheduler leaves none
        check_scheduler(executor, address)
    start = time.perf_counter()
    with store.lock():
        computed, failed, total, chosen = _compute(study, store, out, executor, address,
                                                   force, retry_failed, progress, workers,
                                                   report, selected)
    return RunSummary(total=total, skipped=chosen - computed, computed=computed, failed=failed,
                      seconds=time.perf_counter() - start, out=Path(out), selected=chosen)


def part_names(study: Study, model: str | None = None) -> list[str]:
    """The names of the study's parts, in spec order; ``model`` ("simulated" or "trained")
    keeps the parts of that kind."""
    return [p["name"] for p in study.parts if model is None or p["model"] == model]


def select_parts(study: Study, parts: Collection[str] | None,
                 model: str | None = None) -> list[str] | None:
    """The study's parts that ``parts`` and ``model`` ("simulated" or "trained") select, in
    spec order (both: the named parts, which must be of that kind); None when neither is
    given. :class:`InputError` for a name the study does not have, an empty selection, no
    part of that kind, or a named part of the other kind."""
    if parts is None and model is None:
        return None
    if isinstance(parts, str):
        parts = [parts]
    known = part_names(study)
    chosen = known if parts is None else list(parts)
    unknown = [p for p in chosen if p not in known]
    if unknown or not chosen:
        what = (f"study {study.name!r} has no part {', '.join(map(repr, unknown))}" if unknown
                else "no part selected")
        raise InputError(f"{what}; its parts: {', '.join(known)}")
    if model is not None:
        of_kind = part_names(study, model)
        if not of_kind:
            raise InputError(f"study {study.name!r} has no {model} part; its parts: "
                             f"{', '.join(known)}")
        wrong = [p for p in chosen if p not in of_kind]
        if wrong and parts is not None:
            raise InputError(f"part {', '.join(wrong)} of study {study.name!r} is not "
                             f"{model}; its {model} parts: {', '.join(of_kind)}")
        chosen = [p for p in chosen if p in of_kind]
    return [p for p in known if p in chosen]


def stale_runs(store: Store, descs: list[RunDesc]) -> set[str]:
    """Finished simulated runs whose stored simulator id (``sim_run_id``) is not the one their
    parameters give now: the simulator computes something else for them (e.g. a new draw of
    the initial state), so they are computed again. Rows stored before each row held its
    spec's own id have a ``-k`` suffix where a spec was repeated in one batch
    (:func:`ncsim.flow.simulate.unique_run_ids`), which is not compared.
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
             report: bool, selected: set[str] | None = None) -> tuple[int, int, int, int]:
    """The body of :func:`run_study` (under the folder's lock): (computed, failed, total,
    selected runs), ``failed`` counting every failed run of the study in the folder;
    ``selected``: the parts to compute (None: all)."""
    from ncsim.io import provenance

    descs = study.runs()
    ids = [d.run_id for d in descs]
    store.bind({**study.to_dict(), "run_ids": ids, "provenance": provenance()}, force=force)
    chosen = [d for d in descs if selected is None or d.part in selected]
    todo = (set(store.pending([d.run_id for d in chosen], force, retry_failed))
            | stale_runs(store, chosen))
    pending = [d for d in chosen if d.run_id in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chosen), initial=len(chosen) - len(pending), unit="run",
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
    return len(pending), failed, len(ids), len(chosen)
