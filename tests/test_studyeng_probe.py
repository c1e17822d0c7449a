"""Mutation probes of the study engine: spec expansion, defaults and validation, the results
store's notion of a finished run, chunking and executors."""

from __future__ import annotations

import pandas as pd
import pytest
from study_helpers import part, study_raw

from ncsim.errors import InputError


# ----------------------------------------------------------------------------- spec
def test_grid_is_the_cartesian_product_in_order_last_axis_fastest():
    """Two axes of 3 and 2 values give 6 runs, first axis slowest, fixed keys in every run."""
    from ncsim.study.spec import parse_study

    raw = study_raw({"name": "a", "model": "simulated", "init_scale": 0.2,
                     "grid": {"seed": [0, 1, 2], "lambda": [1e-3, 1e-2]}})
    runs = parse_study(raw, "s.toml").runs()
    assert [(d.params["seed"], d.params["lambda"]) for d in runs] == [
        (0, 1e-3), (0, 1e-2), (1, 1e-3), (1, 1e-2), (2, 1e-3), (2, 1e-2)]
    assert all(d.params["init_scale"] == 0.2 and d.part == "a" for d in runs)
    assert len({d.run_id for d in runs}) == 6


def test_run_spec_applies_the_documented_study_defaults():
    """A simulated run with no parameter takes the study defaults: rtol 1e-6, atol 1e-9,
    100 records, t_end 2e4, K = 10, n = 20, d = 32, CE, lambda 5e-4, init scale 0.1."""
    from ncsim.study.spec import run_spec

    spec = run_spec({})
    assert (spec.solver.rtol, spec.solver.atol, spec.solver.records) == (1e-6, 1e-9, 100)
    assert (spec.solver.t_end, spec.solver.method, spec.solver.max_steps) == (
        2e4, "dopri5", 1_000_000)
    assert (spec.model.classes, spec.model.per_class, spec.model.dim) == (10, 20, 32)
    assert (spec.model.loss, spec.model.bias, spec.model.depth) == ("ce", "none", 1)
    assert (spec.reg.lambda_w, spec.reg.lambda_h, spec.reg.lambda_b) == (5e-4, 5e-4, 0.0)
    assert (spec.init.kind, spec.init.scale, spec.init.seed) == ("gaussian", 0.1, 0)
    assert (spec.onset.metric, spec.onset.threshold, spec.onset.stay) == ("nc1_trace", 0.01, 1)


def test_lambda_sets_both_decays_unless_one_is_given():
    """``lambda`` is the default of lambda_w and lambda_h; an explicit decay wins over it."""
    from ncsim.study.spec import run_spec

    spec = run_spec({"lambda": 1e-2, "lambda_h": 3e-3})
    assert (spec.reg.lambda_w, spec.reg.lambda_h) == (1e-2, 3e-3)


@pytest.mark.parametrize("edit, key", [
    ({"seed": True, "grid": {"init_scale": [0.1, 0.2]}}, "parts.a.seed"),
    ({"grid": {"seed": [0, True]}}, r"parts.a.grid.seed\[1\]"),
])
def test_a_flag_for_an_integer_parameter_is_refused_naming_the_key(edit, key):
    """``seed = true`` is not the integer 1 (a TOML flag is refused where a number is due)."""
    from ncsim.study.spec import parse_study

    with pytest.raises(InputError, match=rf"key '{key}': expected an integer"):
        parse_study(study_raw(part(**edit)), "s.toml")


def test_a_zero_epoch_phase_is_refused_naming_the_key():
    """A trained part's epochs must be integers >= 1: a phase of 0 epochs is refused."""
    from ncsim.study.spec import parse_study

    trained = {"name": "t", "model": "trained", "dataset": "gaussian", "epochs": [1, 0],
               "grid": {"seed": [0]}}
    with pytest.raises(InputError, match=r"key 'parts.t.epochs': expected a list of "
                                         r"integers >= 1, got \[1, 0\]"):
        parse_study(study_raw(trained), "s.toml")


def test_an_unknown_metric_is_refused_naming_its_index():
    """``metrics`` holds run-table columns the analyses know; a typo is refused by index."""
    from ncsim.study.spec import parse_study

    with pytest.raises(InputError, match=r"key 'metrics\[1\]': unknown value 'onset_tme'"):
        parse_study(study_raw(part(), metrics=["onset_time", "onset_tme"]), "s.toml")
    study = parse_study(study_raw(part(), metrics=["onset_time", "final_fn"]), "s.toml")
    assert study.metrics == ["onset_time", "final_fn"]


def test_a_quick_variant_that_skips_every_part_is_refused():
    """A quick variant whose parts are all skipped resolves to no run: refused (both variants
    are checked, so loading the full one refuses it too)."""
    from ncsim.study.spec import parse_study

    raw = study_raw(part(), quick={"parts": {"a": {"skip": True}}})
    for quick in (True, False):
        with pytest.raises(InputError, match=r"key 'quick.parts': the study resolves to no run"):
            parse_study(raw, "s.toml", quick=quick)


def test_a_quick_grid_replaces_only_the_axes_it_names():
    """The quick grid replaces the seed axis and keeps the full part's lambda axis."""
    from ncsim.study.spec import parse_study

    raw = study_raw({"name": "a", "model": "simulated",
                     "grid": {"seed": [0, 1, 2], "lambda": [1e-3, 1e-2]}},
                    quick={"parts": {"a": {"grid": {"seed": [5]}}}})
    runs = parse_study(raw, "s.toml", quick=True).runs()
    assert [(d.params["seed"], d.params["lambda"]) for d in runs] == [(5, 1e-3), (5, 1e-2)]


# ----------------------------------------------------------------------------- store
def traj(values):
    """A small trajectory table (one row per value)."""
    return pd.DataFrame({"time": [float(i) for i in range(len(values))], "fn": values})


def test_pending_keeps_failed_runs_unless_retried_and_force_takes_all(tmp_path):
    """pending: finished and failed runs are done; retry_failed adds the failed ones only;
    force gives every run, in the order asked."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    store.write_run("ok", {"status": "ok"}, traj([1.0, 2.0]))
    store.write_run("bad", {"status": "failed", "error": "boom"}, None)
    ids = ["new", "bad", "ok"]
    assert store.pending(ids) == ["new"]
    assert store.pending(ids, retry_failed=True) == ["new", "bad"]
    assert store.pending(ids, force=True) == ids
    assert store.statuses() == {"ok": "ok", "bad": "failed"}


def test_a_row_without_status_or_a_missing_trajectory_is_not_finished(tmp_path):
    """A run row that has no status, or whose recorded trajectory file is gone, is pending;
    a run stored without trajectory (0 rows) is finished."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    store.write_run("nostatus", {"onset_time": 1.0}, traj([1.0]))
    store.write_run("lost", {"status": "ok"}, traj([1.0, 2.0, 3.0]))
    store.traj_file("lost").unlink()
    store.write_run("empty", {"status": "ok"}, None)
    assert store.pending(["nostatus", "lost", "empty"]) == ["nostatus", "lost"]


def test_a_cut_run_file_is_not_finished(tmp_path):
    """A run file cut short (a damaged Parquet file) counts as not finished."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    store.write_run("r", {"status": "ok"}, traj([1.0, 2.0]))
    data = store.run_file("r").read_bytes()
    store.run_file("r").write_bytes(data[: len(data) // 2])
    assert store.pending(["r"]) == ["r"]


def test_a_rewrite_interrupted_before_its_row_leaves_the_run_unfinished(tmp_path, monkeypatch):
    """A run computed again whose new row cannot be written is unfinished: the old row never
    stands beside the new trajectory (even one of the same length)."""
    import ncsim.study.store as store_module
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    store.write_run("r", {"status": "ok", "final_fn": 1.0}, traj([1.0, 2.0]))
    real = store_module.write_table

    def fail_on_run_row(frame, path, *args, **kwargs):
        if str(path).endswith(".run.parquet"):
            raise OSError("disk full")
        return real(frame, path, *args, **kwargs)

    monkeypatch.setattr(store_module, "write_table", fail_on_run_row)
    with pytest.raises(OSError, match="disk full"):
        store.write_run("r", {"status": "ok", "final_fn": 9.0}, traj([5.0, 6.0]))
    assert store.pending(["r"]) == ["r"]
    assert store.stored("final_fn") == {}


def test_a_folder_of_the_full_variant_refuses_the_quick_one(tmp_path):
    """bind: a folder holding one variant of a study refuses the other (and another study),
    takes the same one again, and anything with force."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.bind({"name": "s", "quick": False})
    store.bind({"name": "s", "quick": False})
    with pytest.raises(InputError, match="holds the full variant of study 's'"):
        store.bind({"name": "s", "quick": True})
    with pytest.raises(InputError, match="holds the full variant of study 's'"):
        store.bind({"name": "t", "quick": False})
    store.bind({"name": "s", "quick": True}, force=True)
    assert store.study() == {"name": "s", "quick": True}


# ----------------------------------------------------------------------------- chunks
def sim_runs(n, chunk=None, part_name="a"):
    """n simulated runs of one batch structure (seeds 0 .. n-1), ``chunk`` per batch."""
    from ncsim.study.spec import RunDesc

    extra = {} if chunk is None else {"chunk": chunk}
    return [RunDesc(part_name, "simulated", {"classes": 3, "per_class": 2, "dim": 4,
                                             "t_end": 100.0, "seed": s, **extra})
            for s in range(n)]


@pytest.mark.parametrize("n, chunk, sizes", [
    (5, 2, [2, 2, 1]), (4, 2, [2, 2]), (1, 3, [1]), (9, None, [8, 1]), (8, None, [8]),
])
def test_chunks_cover_every_run_once_in_order(n, chunk, sizes):
    """Runs of one structure go in chunks of ``chunk`` (default 8), the last chunk holding
    the rest; every run once, in the order given."""
    from ncsim.study.runner import chunk_runs

    descs = sim_runs(n, chunk)
    chunks = chunk_runs(descs)
    assert [len(c) for c in chunks] == sizes
    assert [d for c in chunks for d in c] == descs


def test_chunk_order_cheap_first_or_long_first():
    """Local: batches, then interventions, then trainings; parallel: the reverse kinds."""
    from ncsim.study.runner import chunk_runs
    from ncsim.study.spec import RunDesc

    batch = sim_runs(3, chunk=2)
    inter = RunDesc("i", "simulated", {**batch[0].params, "intervene_time": 10.0})
    net = RunDesc("t", "trained", {"dataset": "gaussian", "epochs": [1, 1]})
    descs = [net, inter, *batch]
    assert chunk_runs(descs) == [batch[:2], batch[2:], [inter], [net]]
    assert chunk_runs(descs, cheap_first=False) == [[net], [inter], batch[:2], batch[2:]]


def test_select_parts_follows_the_spec_order_and_names_unknown_parts():
    """select_parts gives the named parts in spec order; an unknown name is refused by name."""
    from ncsim.study.runner import select_parts
    from ncsim.study.spec import parse_study

    study = parse_study(study_raw(part(), {**part(), "name": "b"}, {**part(), "name": "c"}),
                        "s.toml")
    assert select_parts(study, ["c", "a"]) == ["a", "c"]
    assert select_parts(study, "b") == ["b"]
    assert select_parts(study, None) is None
    with pytest.raises(InputError, match="has no part 'z'; its parts: a, b, c"):
        select_parts(study, ["a", "z"])
    with pytest.raises(InputError, match="no part selected"):
        select_parts(study, [])


# ----------------------------------------------------------------------------- executors
@pytest.mark.parametrize("executor, address, workers, match", [
    ("threads", None, None, "unknown executor 'threads'; allowed: local, process, dask"),
    ("local", "tcp://h:1", None, "--address needs --executor dask"),
    ("local", None, 2, "--workers sets the workers"),
])
def test_check_executor_refuses_bad_combinations(executor, address, workers, match):
    """An unknown executor, an address without Dask, workers for the local executor."""
    from ncsim.study.executors import check_executor

    with pytest.raises(InputError, match=match):
        check_executor(executor, address, workers)
    check_executor("process", None, 2)


def test_local_executor_hands_every_chunk_and_records_a_raising_one(monkeypatch):
    """The local executor gives on_done the results of each chunk, the last included; a chunk
    whose work raises gives its runs as failed with the error."""
    import ncsim.study.executors as executors

    def fake(chunk):
        if chunk[0].params["seed"] == 2:
            raise ValueError("bad chunk")
        return [(d.run_id, {"status": "ok"}, None) for d in chunk]

    monkeypatch.setattr(executors, "run_chunk", fake)
    descs = sim_runs(5)
    got = []
    executors.execute([descs[:2], descs[2:4], descs[4:]], "local", got.append)
    assert [[rid for rid, _, _ in results] for results in got] == [
        [d.run_id for d in descs[:2]], [d.run_id for d in descs[2:4]], [descs[4].run_id]]
    failed = got[1]
    assert all(row["status"] == "failed" for _, row, _ in failed)
    assert failed[0][1]["error"] == "local executor: ValueError: bad chunk"
    assert got[2][0][1] == {"status": "ok"}


def test_chunk_error_names_the_lost_worker():
    """A lost process pool's error says what it means."""
    from concurrent.futures.process import BrokenProcessPool

    from ncsim.study.executors import LOST_HINTS, chunk_error

    text = chunk_error("process", BrokenProcessPool("pool\n broke"))
    hint = LOST_HINTS["BrokenProcessPool"]
    assert text == f"process executor: BrokenProcessPool: pool broke ({hint})"


# ----------------------------------------------------------------------------- compute
def test_a_failing_batch_is_retried_run_by_run(monkeypatch):
    """When the batch fails, each run is retried alone: one bad run fails, the others not."""
    import ncsim.study.compute as compute

    def fake(descs):
        if any(d.params["seed"] == 1 for d in descs):
            raise RuntimeError("seed 1 diverges")
        return [(d.run_id, {"status": "ok"}, None) for d in descs]

    monkeypatch.setattr(compute, "_simulate", fake)
    descs = sim_runs(3)
    out = compute.run_chunk(descs)
    assert [rid for rid, _, _ in out] == [d.run_id for d in descs]
    assert [row["status"] for _, row, _ in out] == ["ok", "failed", "ok"]
    assert out[1][1]["error"] == "RuntimeError: seed 1 diverges"


def test_failed_rows_carry_the_labels_and_a_list_as_text():
    """A failed run's row: part, model, its parameters (a list written "3,2"), status, error."""
    from ncsim.study.compute import failed_results
    from ncsim.study.spec import RunDesc

    desc = RunDesc("t", "trained", {"dataset": "gaussian", "epochs": [3, 2], "seed": 4})
    [(rid, row, trajectory)] = failed_results([desc], "boom")
    assert rid == desc.run_id and trajectory is None
    assert row == {"part": "t", "model": "trained", "dataset": "gaussian", "epochs": "3,2",
                   "seed": 4, "status": "failed", "error": "boom"}


# ----------------------------------------------------------------------------- real bugs
def test_an_epochs_grid_value_that_is_not_whole_is_refused_naming_the_axis():
    """A grid axis of epoch lists is checked like a fixed epochs list, naming the axis value
    (2.7 epochs passed and the training ran 2)."""
    from ncsim.study.spec import parse_study

    trained = {"name": "t", "model": "trained", "dataset": "gaussian",
               "grid": {"epochs": [[1, 2.7]]}}
    with pytest.raises(InputError, match=r"key 'parts.t.grid.epochs\[0\]': expected a list "
                                         r"of integers >= 1"):
        parse_study(study_raw(trained), "s.toml")


def test_a_quick_override_cannot_rename_a_part_onto_another():
    """[quick.parts.a] name = "b" beside a part "b" would mix two parts under one name."""
    from ncsim.study.spec import parse_study

    raw = study_raw(part(), {**part(), "name": "b"}, quick={"parts": {"a": {"name": "b"}}})
    with pytest.raises(InputError, match=r"quick.parts.a.name.*cannot change a part's name"):
        parse_study(raw, "s.toml", quick=True)


def test_a_quick_override_cannot_change_the_model_of_a_part():
    """[quick.parts.a] model = "trained" turns the simulated part into trainings: refused."""
    from ncsim.study.spec import parse_study

    raw = study_raw(part(), quick={"parts": {"a": {"model": "trained"}}})
    with pytest.raises(InputError, match=r"quick.parts.a.model.*cannot change a part's model"):
        parse_study(raw, "s.toml", quick=True)
