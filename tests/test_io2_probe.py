"""Second probe of ncsim.io and ncsim.results: where the temporary file of an atomic write
lives and what mode the result gets, table names and formats given apart from the extension,
refusals and their exact messages, Parquet columns of mixed kinds, the JSON file's layout, the
provenance's values, and the files an earlier simulation leaves in its folder."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.io import (
    atomic_write,
    parquet_columns,
    provenance,
    read_table,
    table_path,
    write_json,
    write_table,
)
from ncsim.results import varying_columns

_ADVICE = "(write it again, or remove it to start afresh)"


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    """A table written two folders below a missing folder creates every folder on the way."""
    path = write_table(pd.DataFrame({"x": [1]}), tmp_path / "a" / "b" / "t.csv")
    assert path == tmp_path / "a" / "b" / "t.csv"
    assert path.read_text() == "x\n1\n"


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path):
    """The writer gets a temporary file in the target's folder named '.<name>.*.tmp' (what
    clean_temporary looks for; the same folder makes the rename atomic)."""
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("{}")

    target = tmp_path / "sub" / "t.json"
    assert atomic_write(target, write) == target
    (tmp,) = seen
    assert tmp.parent == target.parent
    assert tmp.name.startswith(".t.json.") and tmp.name.endswith(".tmp")
    assert not tmp.exists() and target.read_text() == "{}"


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_the_written_file_mode_follows_the_umask(tmp_path, mask):
    """The result's mode is 0o666 less the process umask (0o664 under 0o002, 0o640 under
    0o027), not mkstemp's 0o600 nor a fixed 0o644."""
    before = os.umask(mask)
    try:
        path = write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# ----------------------------------------------------------------------------- names and formats


def test_table_path_replaces_an_extension_already_there(tmp_path):
    """table_path gives the stem the format's extension, replacing a table extension it has
    (runs.parquet as CSV is runs.csv, not runs.parquet.csv)."""
    assert table_path(tmp_path / "runs", "parquet") == tmp_path / "runs.parquet"
    assert table_path(tmp_path / "runs.parquet", "csv") == tmp_path / "runs.csv"
    assert table_path("runs.csv", "parquet") == Path("runs.parquet")


def test_a_format_given_writes_a_file_of_any_other_extension(tmp_path):
    """With the format named, a name without a table extension is written in that format
    (only .csv / .parquet names must agree with it); read_table then refuses the name."""
    frame = pd.DataFrame({"run_id": ["a"], "fn": [1.5]})
    csv = write_table(frame, tmp_path / "t.dat", fmt="csv")
    assert csv == tmp_path / "t.dat" and csv.read_text() == "run_id,fn\na,1.5\n"
    pq = write_table(frame, tmp_path / "t.bin", fmt="parquet")
    assert pq.read_bytes()[:4] == b"PAR1"
    pd.testing.assert_frame_equal(pd.read_parquet(pq), frame)
    with pytest.raises(InputError, match=r"cannot tell its format from the extension \.dat"):
        read_table(csv)


def test_read_table_refuses_a_name_without_a_table_extension_exactly(tmp_path):
    """An existing file without extension is refused naming '(none)', one with .txt naming
    '.txt'; a missing file is reported missing first, whatever its name."""
    for name, shown in (("runs", "(none)"), ("runs.txt", ".txt")):
        path = tmp_path / name
        path.write_text("x\n1\n")
        with pytest.raises(InputError) as err:
            read_table(path)
        assert str(err.value) == (f"table {path}: cannot tell its format from the extension "
                                  f"{shown}; name it .csv or .parquet")
    with pytest.raises(InputError, match=r"^table .*nothing\.txt does not exist$"):
        read_table(tmp_path / "nothing.txt")


@pytest.mark.parametrize(("error", "said"), [
    (ValueError("Bad footer. \nsecond line of the reason"), "Bad footer"),
    (ValueError(), "ValueError"),
])
def test_a_reader_error_becomes_one_clean_line(tmp_path, monkeypatch, error, said):
    """The reader's reason is cut to its first line, trailing dots and spaces dropped (an
    empty reason gives the error's type), and the InputError hides the reader's traceback
    (no cause, context suppressed)."""
    path = tmp_path / "runs.parquet"
    path.write_bytes(b"PAR1")

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pd, "read_parquet", broken)
    with pytest.raises(InputError) as err:
        read_table(path)
    assert str(err.value) == (f"cannot read table {path}: {said}; it is damaged or not a "
                              f"Parquet file {_ADVICE}")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_only_columns_ending_in_underscore_run_id_are_read_as_text(tmp_path):
    """In CSV, 'rerun_id' (ending in 'run_id' but not '_run_id') is an ordinary column:
    its numbers read back as int64, while 'base_run_id' stays text."""
    frame = pd.DataFrame({"rerun_id": [1, 2], "base_run_id": ["1", "2"]})
    back = read_table(write_table(frame, tmp_path / "t.csv"))
    assert back["rerun_id"].dtype == np.int64 and back["rerun_id"].tolist() == [1, 2]
    assert back["base_run_id"].tolist() == ["1", "2"]


# ----------------------------------------------------------------------------- Parquet columns


def test_a_float32_number_beside_text_is_written_as_its_text(tmp_path):
    """A numpy float32 that is a number (not a NaN) in a text column is kept as its text, not
    turned into a missing value as a float32 NaN is."""
    frame = pd.DataFrame({"v": pd.Series(["a", np.float32(0.5), np.float32("nan")],
                                         dtype=object)})
    plain = parquet_columns(frame)
    assert plain["v"].iloc[:2].tolist() == ["a", "0.5"] and pd.isna(plain["v"].iloc[2])
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["v"].iloc[:2].tolist() == ["a", "0.5"] and pd.isna(back["v"].iloc[2])


def test_a_column_of_python_and_numpy_flags_stays_boolean(tmp_path):
    """An object column of flags, some Python bools and some numpy bools, reads back as a
    boolean column from Parquet (pyarrow writes it so), not as the texts 'True' and 'False'
    (a bug until session 30: two types counted as two kinds)."""
    frame = pd.DataFrame({"ok": pd.Series([True, np.bool_(False)], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["ok"].dtype == bool
    assert back["ok"].tolist() == [True, False]


def test_flags_beside_integers_still_become_text(tmp_path):
    """A numpy flag beside a numpy integer is two kinds: the column is written as text."""
    frame = pd.DataFrame({"v": pd.Series([np.bool_(True), np.int64(2)], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["v"].tolist() == ["True", "2"]


def test_numpy_floats_beside_python_integers_become_floats(tmp_path):
    """A numpy float32 beside a Python int is the integer-and-float mix: a float column."""
    frame = pd.DataFrame({"v": pd.Series([3, np.float32(0.5)], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["v"].dtype == np.float64 and back["v"].tolist() == [3.0, 0.5]


def test_a_column_of_python_and_numpy_integers_stays_exact(tmp_path):
    """An object column of integers only, some numpy int64, keeps every integer exactly
    (2^60 + 1 included), as pyarrow alone writes it (a bug until session 30: cast to
    float64)."""
    big = 2**60 + 1
    frame = pd.DataFrame({"seed": pd.Series([big, np.int64(1)], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert [int(v) for v in back["seed"]] == [big, 1]


# ----------------------------------------------------------------------------- JSON, provenance


def test_write_json_indents_by_two_and_ends_with_a_newline(tmp_path):
    """The JSON file is indented by two spaces, one value a line, and ends with a newline."""
    path = write_json({"a": [1, 2], "b": {"c": None}}, tmp_path / "x.json")
    assert path.read_text() == ('{\n  "a": [\n    1,\n    2\n  ],\n  "b": {\n    "c": null\n'
                                '  }\n}\n')


def test_provenance_records_the_versions_and_machine_it_runs_on():
    """provenance() gives ncsim's, torch's, numpy's and Python's versions and the machine,
    device 'cpu' and dtype 'float64' by default, the arguments otherwise."""
    import torch

    import ncsim

    got = provenance()
    assert got == {"ncsim_version": ncsim.__version__, "torch_version": torch.__version__,
                   "numpy_version": np.__version__,
                   "python_version": platform.python_version(),
                   "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
                   "device": "cpu", "dtype": "float64"}
    other = provenance("cuda,cpu", "float32")
    assert (other["device"], other["dtype"]) == ("cuda,cpu", "float32")


# ----------------------------------------------------------------------------- results


def test_varying_columns_follow_the_candidates_order_not_the_tables():
    """Axes come in the order of the candidates (AXIS_COLUMNS by default: classes before
    init_seed), whatever the table's column order; a column that is no candidate is left
    out."""
    runs = pd.DataFrame({"other": [1, 2], "init_seed": [0, 1], "classes": [3, 4],
                         "dim": [5, 5]})
    assert varying_columns(runs) == ["classes", "init_seed"]
    assert varying_columns(runs, ("other", "dim", "classes")) == ["other", "classes"]


def test_a_new_simulation_removes_the_earlier_ones_tables_of_the_other_format(tmp_path,
                                                                            monkeypatch):
    """A simulation written as Parquet over one written as CSV leaves only its own files:
    the earlier runs.csv and trajectories.csv are removed."""
    import ncsim.plots
    from ncsim.results import write_simulation
    from ncsim.spec import ModelSpec, RunSpec

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure",
                        lambda fig, path: Path(path).write_bytes(b"png"))
    runs = pd.DataFrame({"run_id": ["r0"], "final_fn": [0.5]})
    traj = pd.DataFrame({"run_id": ["r0"], "time": [0.0], "fn": [1.0]})
    result = SimpleNamespace(runs=runs, trajectories=traj)
    specs = [RunSpec(model=ModelSpec(classes=2, per_class=2, dim=3))]
    write_simulation(result, tmp_path, "csv", specs)
    write_simulation(result, tmp_path, "parquet", specs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "runs.parquet", "spec.json", "trajectories.parquet", "trajectories.png"]
    pd.testing.assert_frame_equal(read_table(tmp_path / "trajectories.parquet"), traj)


@pytest.mark.parametrize("name", ["runs.csv", "runs.parquet"])
def test_a_folder_named_like_a_table_is_an_input_error(tmp_path, name):
    """A folder named like a table is refused with an InputError naming it (a bug until
    session 30: a raw IsADirectoryError for .csv)."""
    (tmp_path / name).mkdir()
    with pytest.raises(InputError, match=rf"table .*{name} is a folder, not a table file"):
        read_table(tmp_path / name)
