"""Mutation probe of the study report, the executors and the simulation result folder: what
a wrong report count, error text or sidecar order would get past the other tests."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pandas as pd
import pytest
from test_study_report_strict import _bound_folder, _finish

from ncsim.study import executors, report
from ncsim.study.analyses import Section
from ncsim.study.report import write_report
from ncsim.study.store import Store


@pytest.fixture
def supported(monkeypatch):
    """The tiny study's analysis replaced by one that supports without looking at the runs."""
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))


# ----------------------------------------------------------------------------- executors
def test_chunk_error_of_an_exception_without_a_message_ends_at_its_name():
    """An error without text gives "EXECUTOR executor: NAME", no dangling ": "."""
    assert executors.chunk_error("local", MemoryError()) == "local executor: MemoryError"
    assert executors.chunk_error("dask", asyncio.CancelledError()) == (
        "dask executor: CancelledError (the executor cancelled it (its scheduler or pool was "
        "lost))")


# ----------------------------------------------------------------------------- report
def test_empty_table_is_written_as_empty():
    """A table without rows reads "(empty)" in the report, not nothing."""
    assert report.markdown_table(pd.DataFrame()) == "(empty)\n"
    assert report.markdown_table(pd.DataFrame({"a": []})) == "(empty)\n"


@pytest.mark.parametrize("reason", ["fine.", "fine"])
def test_incomplete_reason_quotes_finished_parts_with_one_full_stop(reason):
    """The quoted verdict of whole finished parts ends with exactly one full stop."""
    progress = report.Progress(finished=2, total=4, missing={"more": (2, 2)})
    alone = {"parts": ["ufm"], "verdict": "supported", "reason": reason + "  "}
    assert report._incomplete_reason(progress, alone) == (
        "2 of 4 runs finished (missing: more 2 of 2): no verdict until every run has "
        "finished. The finished parts alone (ufm) give 'supported': fine. Run 'ncsim study "
        "run' on this folder again to compute the rest (finished runs are kept).")


def test_report_without_nesting_on_a_parent_reports_its_sub_studies(tmp_path, supported):
    """``nested=False`` on a folder that holds no study itself still reports the study in
    its sub-folder (write_report: "or when root holds none")."""
    _bound_folder(tmp_path / "a")  # the study in a/out
    path = write_report(tmp_path / "a", nested=False)
    assert path == tmp_path / "a" / "report.md"
    assert json.loads((tmp_path / "a" / "out" / "verdict.json").read_text())["verdict"] \
        == report.INCOMPLETE
    assert "(`tiny`, full variant, folder `out/`)" in path.read_text()


def test_report_without_nesting_on_a_study_leaves_its_sub_studies_out(tmp_path, supported):
    """``nested=False`` on a study folder reports that study alone, not one inside it."""
    folder, store, descs = _bound_folder(tmp_path)
    _finish(store, descs)
    inner = Store(folder / "inner")
    inner.bind(store.study())
    assert report.study_dirs(folder, nested=False) == [folder]
    assert report.study_dirs(folder) == [folder, folder / "inner"]
    write_report(folder, nested=False)
    assert not (folder / "inner" / "verdict.json").exists()
    assert (folder / "report.md").read_text().count("## ") == 1


def test_study_dirs_of_a_folder_without_study_is_an_input_error(tmp_path):
    """A folder with no study.json in it or a sub-folder is refused, naming it."""
    from ncsim.errors import InputError

    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="holds no study"):
        report.study_dirs(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        report.study_dirs(tmp_path / "nope")


# ----------------------------------------------------------------------------- results
def _fake_result(n):
    """A simulation result of ``n`` runs with one-record trajectories (nothing integrated)."""
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "final_fn": [0.5] * n})
    traj = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "time": [0.0] * n,
                         "fn": [1.0] * n})
    return SimpleNamespace(runs=runs, trajectories=traj)


@pytest.fixture
def no_plot(monkeypatch):
    import ncsim.plots

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure", lambda fig, path: None)


def test_sidecar_rows_follow_the_specs_in_order(tmp_path, no_plot):
    """spec.json lists each spec's row, in the order of the specs, under its run id."""
    from ncsim.flow.simulate import unique_run_ids
    from ncsim.results import write_simulation
    from ncsim.spec import InitSpec, ModelSpec, RunSpec

    specs = [RunSpec(model=ModelSpec(classes=2, per_class=2, dim=3), init=InitSpec(seed=s))
             for s in (3, 1, 2)]
    write_simulation(_fake_result(3), tmp_path, "csv", specs)
    side = json.loads((tmp_path / "spec.json").read_text())
    assert [r["init_seed"] for r in side["runs"]] == [3, 1, 2]
    assert [r["run_id"] for r in side["runs"]] == unique_run_ids(specs)


@pytest.mark.parametrize("devices", [("cuda", "cpu", "cuda"), ("cpu", "cuda", "cpu")])
def test_sidecar_devices_are_in_order_of_first_use(tmp_path, no_plot, devices):
    """Mixed devices are recorded distinct, comma-separated, in order of first use."""
    from ncsim.results import write_simulation
    from ncsim.spec import ModelSpec, RunSpec, SolverSpec

    specs = [RunSpec(model=ModelSpec(classes=2, per_class=2, dim=3),
                     solver=SolverSpec(device=d)) for d in devices]
    write_simulation(_fake_result(3), tmp_path, "csv", specs)
    side = json.loads((tmp_path / "spec.json").read_text())
    assert side["provenance"]["device"] == ",".join(devices[:2])

