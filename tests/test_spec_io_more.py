"""The specification, parameter and I/O layer as a demanding user exercises it: round trips of
the spec dataclasses, study files and result tables; bad input refused with one clear line;
atomic writes that survive an interruption; a study store that resumes without recomputing
and never reuses the results of a changed spec."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import interrupt_chunk
from tiny_study import write_tiny_study

import ncsim.io as io_module
import ncsim.study.store as store_module
from ncsim.errors import InputError
from ncsim.io import read_table, table_path, to_jsonable, write_json, write_table
from ncsim.params import parse_ints, parse_values
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)
from ncsim.study.runner import run_study
from ncsim.study.spec import Study, load_study, parse_study, shipped_studies, tomllib
from ncsim.study.store import Store

# ----------------------------------------------------------------------------- helpers


def _toml_value(value) -> str:
    """A scalar or a list of scalars in TOML syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _to_toml(table: dict) -> str:
    """A flat table as TOML text (None values left out: TOML has no null)."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items() if v is not None)


def _fields(obj) -> dict:
    """The dataclass fields of a spec part (init arrays left out)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "arrays"}


def _types(obj) -> dict:
    """The type of every field value (an int and an equal float give different run ids)."""
    out = {}
    for name, value in _fields(obj).items():
        out[name] = (type(value), tuple(type(v) for v in value)
                     if isinstance(value, tuple) else None)
    return out


SPEC_PARTS = [
    ModelSpec(),
    ModelSpec(kind="ufm", loss="mse", bias="free", classes=3, per_class=(2, 5, 3), dim=7),
    ModelSpec(kind="deep", loss="ce", bias="reg", classes=4, per_class=6, dim=9, depth=3,
              width=11, activation="leaky_relu", leaky_slope=0.2),
    Regularization(),
    Regularization(lambda_w=(1e-3, 2.5e-3, 4e-3), lambda_h=0.0, lambda_b=1e-2),
    InitSpec(kind="spectral", scale=0.75, seed=12),
    TimeScale(eta_h=0.5, eta_w=(1.0, 2.0, 4.0), eta_b=3.0),
    SolverSpec(),
    SolverSpec(method="rk4", dt=0.25, t_end=300, records=17, t_first=0.5, max_steps=999,
               gtol=0.0, check_every=3, vanish_tol=0.0, dtype="float32", reduction="none"),
    OnsetSpec(metric="nc2_etf", threshold=0.05, stay=3, interpolate=False),
]


@pytest.mark.parametrize("part", SPEC_PARTS, ids=lambda p: type(p).__name__)
def test_spec_parts_round_trip_through_dict_json_and_toml(part):
    """Every spec dataclass, written as a dict, as JSON and as TOML and read back, is an equal
    spec with the same hash and the same value types (tuples stay tuples, ints stay ints)."""
    cls = type(part)
    as_dict = dataclasses.asdict(part)
    as_dict.pop("arrays", None)
    from_json = cls(**json.loads(json.dumps(as_dict)))
    from_toml = cls(**tomllib.loads(_to_toml(as_dict)))
    for back in (cls(**as_dict), from_json, from_toml):
        assert back == part
        assert hash(back) == hash(part)
        assert _types(back) == _types(part)


def test_run_spec_round_trip_keeps_its_row_and_run_id():
    """A whole RunSpec rebuilt from the JSON of its parts is equal, has the same run-table row
    and the same run id (the id hashes the row, so a type change would show)."""
    from ncsim.flow.simulate import run_id

    spec = RunSpec(model=SPEC_PARTS[2], reg=SPEC_PARTS[4], init=SPEC_PARTS[5],
                   time_scale=SPEC_PARTS[6], solver=SPEC_PARTS[8], onset=SPEC_PARTS[9])
    spec.validate()
    text = json.dumps({name: dataclasses.asdict(getattr(spec, name))
                       for name in ("model", "reg", "init", "time_scale", "solver", "onset")})
    data = json.loads(text)
    back = RunSpec(model=ModelSpec(**data["model"]), reg=Regularization(**data["reg"]),
                   init=InitSpec(**data["init"]), time_scale=TimeScale(**data["time_scale"]),
                   solver=SolverSpec(**data["solver"]), onset=OnsetSpec(**data["onset"]))
    assert back == spec
    assert back.to_row() == spec.to_row()
    assert run_id(back) == run_id(spec)
    # t_end written as an int is the float 300.0 (one parameter, one id: 300 and 300.0 alike)
    assert back.to_row()["per_class"] == 6 and type(back.to_row()["solver_t_end"]) is float
    assert back.to_row()["lambda_w"] == "0.001,0.0025,0.004"


# ----------------------------------------------------------------------------- shipped studies

# runs per part, counted from the grids of each file: (full, quick)
SHIPPED_COUNTS = {
    "activation": (
        {"deep_ufm": 6 * 3, "mlp_real": 5 * 3},  # activations x seeds
        {"deep_ufm": 6 * 1, "mlp_real": 3 * 1},  # quick keeps the 6 activations, seed [0]
    ),
    "arch_dataset": (
        {"fashion_mnist": 2 * 3, "mnist1d": 2 * 3, "digits": 2 * 3},  # presets x seeds
        {"fashion_mnist": 1 * 2 * 2, "mnist1d": 1 * 2 * 2},  # preset x depth x seed; no digits
    ),
    "depth": (
        {"deep_linear": 5 * 3, "deep_relu": 4 * 3, "mlp_real": 4 * 3},  # depths x scales/seeds
        {"deep_linear": 4 * 2, "deep_relu": 3 * 2, "mlp_real": 3 * 1},
    ),
    "fn_star_invariance": (
        {"ufm_conditions": 3 * 3 * 3, "ufm_weight_decay": 4 * 3, "mlp_real": 3 * 3},
        {"ufm_conditions": 2 * 2 * 2, "ufm_weight_decay": 3 * 1, "mlp_real": 1 * 3},
    ),
    "intervention": (
        {"ufm": 3 * 3, "mlp_real": 3 * 3},  # alphas x seeds
        {"ufm": 3 * 2, "mlp_real": 3 * 1},  # quick keeps the 3 alphas
    ),
    "lead_time": ({"ufm": 8, "mlp_real": 5}, {"ufm": 6, "mlp_real": 3}),
    "weight_decay": (
        {"ufm_2d": 12 * 12, "deep_linear": 12 * 4, "mlp_real": 5 * 3},
        {"ufm_2d": 6 * 6, "deep_linear": 5 * 2, "mlp_real": 3 * 1},
    ),
    "width": (
        {"ufm_dim": 8 * 2 * 3, "deep_relu_width": 4 * 3, "mlp_real": 4 * 3},
        {"ufm_dim": 3 * 2 * 2, "deep_relu_width": 3 * 1, "mlp_real": 4 * 1},
    ),
}


def test_every_shipped_study_is_counted_here():
    """The table of hand counts covers exactly the shipped studies."""
    assert sorted(SHIPPED_COUNTS) == sorted(p.stem for p in shipped_studies())


@pytest.mark.parametrize("name", sorted(SHIPPED_COUNTS))
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_shipped_study_expands_to_the_hand_counted_runs(name, quick):
    """Each shipped study (full and quick) validates and resolves to the number of runs its
    grids give per part, each run with its own id and a part name of the file."""
    study = load_study(name, quick=quick)
    expected = SHIPPED_COUNTS[name][quick]
    runs = study.runs()
    per_part = {}
    for desc in runs:
        per_part[desc.part] = per_part.get(desc.part, 0) + 1
    assert per_part == expected
    assert len({d.run_id for d in runs}) == sum(expected.values())
    assert study.quick is quick and study.name == name


def test_shipped_quick_variants_merge_defaults_and_replace_named_axes_only():
    """Spot checks of resolved parameters: quick defaults merged over the full ones, quick part
    values over both, a quick grid replacing only the axes it names."""
    depth = {(d.part, d.params.get("depth"), d.params.get("init_scale")): d.params
             for d in load_study("depth", quick=True).runs()}
    relu = depth[("deep_relu", 3, 0.2)]
    assert (relu["dt"], relu["solver"], relu["activation"]) == (2.5, "rk4", "relu")
    assert (relu["classes"], relu["per_class"], relu["dim"], relu["t_end"]) == (4, 10, 16, 5e3)
    assert relu["lambda"] == 1e-3  # from the full [simulated], kept by the quick one
    activation = load_study("activation", quick=True).runs()
    assert sorted({d.params["activation"] for d in activation if d.part == "deep_ufm"}) == [
        "gelu", "leaky_relu", "linear", "relu", "silu", "tanh"]
    grid = load_study("weight_decay", quick=True).runs()
    lambdas = sorted({d.params["lambda_w"] for d in grid if d.part == "ufm_2d"})
    np.testing.assert_allclose(lambdas, np.geomspace(1e-3, 0.3, 6), rtol=1e-15)
    arch = {d.part: d.params for d in load_study("arch_dataset", quick=True).runs()}
    assert (arch["mnist1d"]["dataset"], arch["mnist1d"]["separation"],
            arch["mnist1d"]["data_dim"]) == ("gaussian", 10.0, 8)
    assert arch["fashion_mnist"]["separation"] == 8.0


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_study_record_round_trips_through_json_with_the_same_run_ids(tmp_path, quick):
    """What a study folder records (to_dict, written by write_json) rebuilds a study with the
    same runs, ids and order, for every shipped study; a second round trip is a fixed point."""
    for path in shipped_studies():
        study = load_study(path, quick=quick)
        record = tmp_path / f"{path.stem}.json"
        write_json(study.to_dict(), record)
        back = Study.from_dict(json.loads(record.read_text()))
        assert [d.run_id for d in back.runs()] == [d.run_id for d in study.runs()]
        assert [d.params for d in back.runs()] == [d.params for d in study.runs()]
        assert back.to_dict() == json.loads(record.read_text())


TINY = """
name = "t"
title = "T"
question = "q?"
claim = "c."
analysis = "invariance"

[simulated]
classes = 3
per_class = 4
dim = 8
t_end = {t_end}
lambda = 1e-2

[[parts]]
name = "a"
model = "simulated"
[parts.grid]
{grid}

[quick]
[quick.parts.a.grid]
seed = [0]
"""


def _parse(grid: str = "seed = [0, 1]", t_end: str = "200.0", quick: bool = False) -> Study:
    return parse_study(tomllib.loads(TINY.format(grid=grid, t_end=t_end)), "t.toml", quick)


def test_grid_is_the_cartesian_product_in_file_order_last_axis_fastest():
    """Two axes give every pair, the last axis fastest; a quick grid replaces only the axes it
    names (here seed), the others stay; an integer range is rounded to integers."""
    study = _parse('init_scale = [0.1, 0.2, 0.3]\nseed = "0,1"')
    points = [(d.params["init_scale"], d.params["seed"]) for d in study.runs()]
    assert points == [(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1), (0.3, 0), (0.3, 1)]
    quick = _parse('init_scale = [0.1, 0.2, 0.3]\nseed = "0,1"', quick=True)
    assert [(d.params["init_scale"], d.params["seed"]) for d in quick.runs()] == [
        (0.1, 0), (0.2, 0), (0.3, 0)]
    assert [d.params["seed"] for d in _parse('seed = "1..4:3"').runs()] == [1, 2, 4]


def test_equal_specs_written_differently_share_run_ids_and_others_do_not():
    """t_end = 200 and 200.0, a list and a range string of the same seeds give the same ids;
    any changed value gives new ids."""
    ids = [d.run_id for d in _parse().runs()]
    assert [d.run_id for d in _parse(t_end="200").runs()] == ids
    assert [d.run_id for d in _parse('seed = "0,1"').runs()] == ids
    assert not set(d.run_id for d in _parse(t_end="300.0").runs()) & set(ids)
    assert [d.run_id for d in _parse("seed = [0, 2]").runs()][0] == ids[0]
    assert [d.run_id for d in _parse("seed = [0, 2]").runs()][1] not in ids


# ----------------------------------------------------------------------------- tables


def _table() -> pd.DataFrame:
    frame = pd.DataFrame({
        "run_id": ["012345678901", "1234e5678901", "abcdef012345"],
        "status": ["ok", "vanishing", "not_collapsed"],
        "onset_time": [1.5, np.nan, np.inf],
        "lowest": [-np.inf, 0.0, 2.5e-300],
        "steps": np.array([3, 40, 5_000_000_000], dtype=np.int64),
        "collapsed": [True, False, True],
        "fn32": np.array([0.5, 1.25, 3.0], dtype=np.float32),
        "per_class": ["2,3,2", "4", "5"],
    })
    frame.attrs["spec"] = {"name": "t", "values": [1, 2]}
    return frame


def test_parquet_round_trip_keeps_dtypes_nan_inf_and_attrs(tmp_path):
    """A Parquet table reads back identical: every dtype (float32 included), NaN, +-inf,
    tiny floats, 64-bit integers, text ids and the frame's attrs."""
    frame = _table()
    back = read_table(write_table(frame, tmp_path / "runs.parquet"))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back.attrs == frame.attrs
    assert np.isnan(back["onset_time"][1]) and back["onset_time"][2] == np.inf
    assert back["lowest"][0] == -np.inf and back["fn32"].dtype == np.float32


def test_csv_round_trip_keeps_values_and_run_ids_as_text(tmp_path):
    """A CSV table reads back with the same values; run ids that look like numbers
    ('012345678901', '1234e5678901') stay text, also alone in their column."""
    frame = _table()
    back = read_table(write_table(frame, tmp_path / "runs.csv"))
    assert list(back["run_id"]) == list(frame["run_id"])
    pd.testing.assert_frame_equal(back.drop(columns="fn32"), frame.drop(columns="fn32"),
                                  check_exact=True)
    np.testing.assert_array_equal(back["fn32"].to_numpy(), frame["fn32"].to_numpy())
    for rid in ("012345678901", "1234e5678901", "000000000000"):
        one = pd.DataFrame({"run_id": [rid], "sim_run_id": [rid], "time": [0.0]})
        back = read_table(write_table(one, tmp_path / "one.csv"))
        assert back["run_id"].tolist() == [rid]
        assert back["sim_run_id"].tolist() == [rid]


def test_table_format_must_match_the_extension(tmp_path):
    """A format that contradicts the file's extension is refused before anything is
    written (read_table picks the reader by extension); table_path gives the right name."""
    frame = pd.DataFrame({"x": [1.0]})
    with pytest.raises(InputError, match=r"extension \.parquet but the format is 'csv'; name "
                                         r"the file \.csv"):
        write_table(frame, tmp_path / "runs.parquet", fmt="csv")
    with pytest.raises(InputError, match=r"extension \.csv but the format is 'parquet'"):
        write_table(frame, tmp_path / "runs.csv", fmt="parquet")
    assert list(tmp_path.iterdir()) == []
    for fmt in ("csv", "parquet"):
        path = write_table(frame, table_path(tmp_path / "runs", fmt), fmt)
        pd.testing.assert_frame_equal(read_table(path), frame)
    with pytest.raises(InputError, match="unknown table format 'xlsx'; allowed: parquet, csv"):
        table_path(tmp_path / "runs", "xlsx")


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["error", "interrupt"])
def test_write_interrupted_mid_file_keeps_the_old_table_and_no_temporary(tmp_path, monkeypatch,
                                                                       error):
    """A writer that dies half way (bytes already written, then an error or Ctrl-C) leaves
    the previous table whole and readable and no temporary file; without a previous table
    no file appears at all."""
    old = pd.DataFrame({"run_id": ["a"], "fn": [1.0]})
    path = write_table(old, tmp_path / "runs.parquet")

    def half_then_fail(self, target, *args, **kwargs):
        Path(target).write_bytes(b"PAR1 half a table")
        raise error

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_fail)
    with pytest.raises(type(error)):
        write_table(pd.DataFrame({"run_id": ["b"], "fn": [2.0]}), path)
    with pytest.raises(type(error)):
        write_table(old, tmp_path / "new.parquet")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.parquet"]
    pd.testing.assert_frame_equal(read_table(path), old)


def test_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    """When the final rename fails the temporary file is removed and the old file stays."""
    path = write_json({"a": 1}, tmp_path / "spec.json")

    def refuse(src, dst):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(io_module.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_json({"a": 2}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]
    assert json.loads(path.read_text()) == {"a": 1}


def test_write_json_writes_plain_json_with_null_for_non_finite(tmp_path):
    """NaN and +-inf become null, numpy scalars and arrays plain numbers, tuples lists, keys
    text in the order given; the file parses with the strict JSON parser."""
    data = {"b": (1, np.int64(2)), "a": {"nan": float("nan"), "inf": np.float32("inf"),
                                         "arr": np.array([1.5, -np.inf]), 3: np.bool_(True),
                                         "na": pd.NA}}
    path = write_json(data, tmp_path / "x.json")

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    back = json.loads(path.read_text(), parse_constant=no_constants)
    assert back == {"a": {"3": True, "arr": [1.5, "-inf"], "inf": "inf", "na": None,
                          "nan": None},
                    "b": [1, 2]}
    assert list(back) == ["b", "a"] and list(back["a"]) == ["nan", "inf", "arr", "3", "na"]
    assert to_jsonable(np.float64(0.25)) == 0.25 and type(to_jsonable(np.int32(4))) is int


def test_simulation_folder_holds_tables_and_a_sidecar_that_match(tmp_path):
    """write_simulation: the run table read back equals the result's, and spec.json holds one
    row per spec (its to_row under the run id of its row in the run table; a repeated spec
    gets the table's suffixed id) and the provenance of the runs."""
    from ncsim.flow import simulate
    from ncsim.results import write_simulation

    model = ModelSpec(classes=3, per_class=(2, 3, 2), dim=4)
    specs = [RunSpec(model=model, init=InitSpec(seed=s),
                     solver=SolverSpec(t_end=5.0, records=4)).validate() for s in (0, 1, 0)]
    result = simulate(specs, theory=False)
    write_simulation(result, tmp_path / "out", "csv", specs)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "spec.json",
                                                     "trajectories.csv", "trajectories.png"]
    runs = read_table(out / "runs.csv")
    assert list(runs["run_id"]) == list(result.runs["run_id"])
    assert list(runs["init_seed"]) == [0, 1, 0] and list(runs["per_class"]) == ["2,3,2"] * 3
    assert runs["run_id"][2] == runs["run_id"][0] + "-1"
    side = json.loads((out / "spec.json").read_text())
    assert side["runs"] == [{"run_id": rid, **to_jsonable(s.to_row())}
                            for rid, s in zip(runs["run_id"], specs)]
    assert (side["provenance"]["device"], side["provenance"]["dtype"]) == ("cpu", "float64")
    assert "ncsim_version" in side["provenance"]


def test_an_interrupted_simulation_write_never_mixes_two_simulations(tmp_path, monkeypatch):
    """A write interrupted after the trajectories (here: in spec.json) leaves no run table and
    none of the earlier simulation's files; the run table is written last."""
    import ncsim.io
    from ncsim.flow import simulate
    from ncsim.results import write_simulation

    model = ModelSpec(classes=3, per_class=2, dim=4)
    specs = [RunSpec(model=model, solver=SolverSpec(t_end=5.0, records=4)).validate()]
    result = simulate(specs, theory=False)
    out = tmp_path / "out"
    write_simulation(result, out, "parquet", specs)
    (out / "runs.csv").write_text("run_id\nold\n")  # an earlier simulation's table in CSV

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ncsim.io, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(result, out, "parquet", specs)
    assert sorted(p.name for p in out.iterdir()) == ["trajectories.parquet"]


# ----------------------------------------------------------------------------- bad spec input

DEEP = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4)

BAD_FIELDS = [
    # model: sizes, class counts, depth / width / activation combinations
    (ModelSpec(per_class=2.5), r"^samples per class .* must be integers >= 1, got 2\.5$"),
    (ModelSpec(per_class="3"), r"must be integers >= 1, got '3'"),
    (ModelSpec(classes=2, per_class=(2.5, 3)), r"must be integers >= 1, got \(2\.5, 3\)"),
    (ModelSpec(classes=2, per_class=(3, "a")), r"must be integers >= 1, got \(3, 'a'\)"),
    (ModelSpec(per_class=None), r"must be integers >= 1, got None"),
    (ModelSpec(classes=True, per_class=2), r"classes K must be an integer >= 2, got True"),
    (ModelSpec(dim=True), r"dim d must be an integer >= 1, got True"),
    (ModelSpec(width=64), r"width 64 sets the hidden layers of a deep head: it needs kind='deep' "
                          r"with depth >= 2 \(--model deep --depth 2 or more\), got depth 1"),
    (ModelSpec(kind="deep", depth=1, width=8), r"width 8 .* needs kind='deep' with depth >= 2"),
    (ModelSpec(kind="deep", depth=1, activation="relu"),
     r"activation 'relu' acts on hidden layers: it needs depth >= 2 \(--depth 2 or more\), "
     r"got depth 1"),
    (ModelSpec(kind="deep", depth=2, width=2.5), r"width must be an integer >= 1, got 2\.5"),
    (ModelSpec(kind="deep", depth=2.0), r"depth must be an integer >= 1, got 2\.0"),
    # regularisation, init and time scales
    (Regularization(lambda_w="1e-3"), r"lambda_w must be a finite number >= 0, got '1e-3'"),
    (Regularization(lambda_w=float("inf")), r"lambda_w must be a finite number >= 0, got inf"),
    (Regularization(lambda_h=True), r"lambda_h must be a finite number >= 0, got True"),
    (InitSpec(scale=None), r"init scale must be a finite number > 0, got None"),
    (InitSpec(scale="0.1"), r"init scale must be a finite number > 0, got '0\.1'"),
    (InitSpec(scale=float("inf")), r"init scale must be a finite number > 0, got inf"),
    (InitSpec(seed=True), r"seed must be an integer in \[0, 2\^32\), got True"),
    (InitSpec(seed=1.5), r"seed must be an integer in \[0, 2\^32\), got 1\.5"),
    (InitSpec(seed=2**32), r"seed must be an integer in \[0, 2\^32\), got 4294967296 "),
    (TimeScale(eta_h="x"), r"time-scale factors must be > 0, got eta_h = 'x'"),
    (TimeScale(eta_b=float("nan")), r"time-scale factors must be > 0, got eta_b = nan"),
    (TimeScale(eta_w=0.0), r"time-scale factors must be > 0, got eta_w = 0\.0"),
    # options that would change nothing but the run id
    (TimeScale(eta_b=2.0), r"eta_b = 2\.0 scales the bias's flow but the model has no bias "
                           r"\(bias 'none'\); drop eta_b"),
    (ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4, activation="relu",
               leaky_slope=0.2),
     r"leaky_slope 0\.2 sets the 'leaky_relu' activation, got activation 'relu'"),
    # solver: methods, tolerances, horizons, record counts, steps, device
    (SolverSpec(method="euler"), r"unknown solver 'euler'; allowed: gd, rk4, dopri5, tsit5"),
    (SolverSpec(dtype="float16"), r"unknown dtype 'float16'; allowed: float64, float32"),
    (SolverSpec(reduction="fast"), r"unknown reduction 'fast'; allowed: auto, none, gram"),
    (SolverSpec(t_end=None), r"t_end must be a finite number > 0, got None"),
    (SolverSpec(t_end=float("inf")), r"t_end must be a finite number > 0, got inf"),
    (SolverSpec(t_end=-1.0), r"t_end must be a finite number > 0, got -1\.0"),
    (SolverSpec(method="rk4"), r"solver 'rk4' needs a step dt > 0 \(e\.g\. dt=0\.1, --dt 0\.1\)"),
    (SolverSpec(method="gd", dt="0.1"), r"solver 'gd' needs a step dt > 0"),
    (SolverSpec(dt=-0.1), r"dt must be > 0, got -0\.1"),
    (SolverSpec(rtol=float("inf")), r"rtol must be a finite number > 0, got inf"),
    (SolverSpec(rtol="1e-8"), r"rtol must be a finite number > 0, got '1e-8'"),
    (SolverSpec(rtol=0.0), r"rtol must be a finite number > 0, got 0\.0"),
    (SolverSpec(rtol=1e-8, dtype="float32"),
     r"rtol 1e-08 is below what float32 resolves \(8 eps = 9\.5e-07\): the step control "
     r"would chase rounding errors \(rejections, 'stalled'\); give rtol >= 9\.5e-07 \(usual "
     r"in float32: 1e-05\) or dtype float64"),
    (SolverSpec(rtol=1e-16), r"rtol 1e-16 is below what float64 resolves \(8 eps = 1\.8e-15\)"
     r".*\(usual in float64: 1e-08\)$"),  # no advice to switch to the dtype it has
    (SolverSpec(atol=float("nan")), r"atol must be a finite number >= 0, got nan"),
    (SolverSpec(atol=-1e-9), r"atol must be a finite number >= 0, got -1e-09"),
    (SolverSpec(records=1), r"records must be an integer >= 2, got 1"),
    (SolverSpec(records=2.5), r"records must be an integer >= 2, got 2\.5"),
    (SolverSpec(records=True), r"records must be an integer >= 2, got True"),
    (SolverSpec(t_first="1"), r"t_first must be a finite number, got '1'"),
    (SolverSpec(t_end=1.0, t_first=1.0), r"t_first must lie in \(0, t_end\), got 1\.0"),
    (SolverSpec(max_steps=2.5), r"max_steps must be an integer >= 1, got 2\.5"),
    (SolverSpec(max_steps=0), r"max_steps must be an integer >= 1, got 0"),
    (SolverSpec(check_every=1.5), r"check_every must be an integer >= 1, got 1\.5"),
    (SolverSpec(gtol=float("inf")), r"gtol must be a finite number >= 0, got inf"),
    (SolverSpec(gtol=-1.0), r"gtol must be a finite number >= 0, got -1\.0"),
    (SolverSpec(vanish_tol=1.0), r"vanish_tol must lie in \[0, 1\), got 1\.0"),
    (SolverSpec(device="tpu"), r"unknown device 'tpu'; allowed: cpu, cuda, cuda:N, mps"),
    (SolverSpec(device="cudafoo"), r"unknown device 'cudafoo'; allowed: cpu, cuda, cuda:N"),
    (SolverSpec(device="cuda:x"), r"unknown device 'cuda:x'; allowed"),
    (SolverSpec(cuda_graphs=True, method="rk4", dt=0.1),
     r"cuda_graphs needs an adaptive solver .* use device='cuda' \(--device cuda\) or drop "
     r"cuda_graphs"),
    # onset
    (OnsetSpec(metric="nc4"), r"unknown onset metric 'nc4'; allowed: nc1_trace, nc1"),
    (OnsetSpec(threshold="0.1"), r"onset threshold must be a finite number > 0, got '0\.1'"),
    (OnsetSpec(threshold=float("inf")), r"onset threshold must be a finite number > 0, got inf"),
    (OnsetSpec(stay=0), r"onset 'stay' must be an integer >= 1, got 0"),
    (OnsetSpec(stay=1.5), r"onset 'stay' must be an integer >= 1, got 1\.5"),
]


def _with(part) -> RunSpec:
    """A valid run with one part replaced (a deep head for the deep-only model fields)."""
    name = {ModelSpec: "model", Regularization: "reg", InitSpec: "init", TimeScale: "time_scale",
            SolverSpec: "solver", OnsetSpec: "onset"}[type(part)]
    return RunSpec(model=DEEP).replace(**{name: part})


@pytest.mark.parametrize(("part", "message"), BAD_FIELDS,
                         ids=[f"{type(p).__name__}-{i}" for i, (p, _) in enumerate(BAD_FIELDS)])
def test_bad_field_is_refused_with_one_line_naming_it(part, message):
    """A field outside its constraint (wrong type, non-finite, out of range, unknown name, a
    combination that would be ignored) raises InputError, one line, naming the field and the
    value or what to give; never a TypeError or ValueError from deeper down."""
    with pytest.raises(InputError, match=message) as err:
        _with(part).validate()
    assert "\n" not in str(err.value)


def test_counts_and_lengths_are_checked_before_use():
    """Class counts must match K, per-layer lists the depth; a valid deep head and an
    imbalanced UFM with numpy counts pass."""
    with pytest.raises(InputError, match=r"per_class gives 2 class counts but K = 3"):
        ModelSpec(classes=3, per_class=(2, 2)).validate()
    with pytest.raises(InputError, match=r"eta_w lists 3 values but depth is 2"):
        RunSpec(model=DEEP, time_scale=TimeScale(eta_w=(1.0, 1.0, 1.0))).validate()
    with pytest.raises(InputError, match=r"model 'ufm' has depth 1, got depth 2; use "
                                         r"kind='deep' \(--model deep\)"):
        ModelSpec(depth=2)
    RunSpec(model=ModelSpec(kind="deep", depth=2, width=5, activation="gelu", classes=3,
                            per_class=2, dim=4)).validate()
    RunSpec(model=ModelSpec(classes=2, per_class=(np.int64(3), 4), dim=4)).validate()
    RunSpec(model=DEEP, reg=Regularization(lambda_w=(np.float32(1e-3), 0)),
            solver=SolverSpec(t_end=np.int64(10))).validate()


def test_cli_refuses_an_ignored_activation_or_width(tmp_path):
    """On the command line an activation or a width without a hidden layer (depth 1) is one
    line, exit status 2, and no output folder."""
    from click.testing import CliRunner

    from ncsim.cli import cli

    for args, text in ((["--model", "deep", "--activation", "relu"], "needs depth >= 2"),
                       (["--width", "16"], "width 16 sets the hidden layers")):
        out = tmp_path / "never"
        result = CliRunner().invoke(cli, ["simulate", *args, "--out", str(out)])
        assert result.exit_code == 2
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and text in lines[0], result.stderr
        assert not out.exists()


# ----------------------------------------------------------------------------- option values


def test_numbers_given_as_numbers_must_be_finite_like_text():
    """parse_values refuses a NaN or infinite number as it refuses the text 'nan'."""
    for value in (float("nan"), float("inf"), -np.inf):
        with pytest.raises(InputError, match=r"--lambda-w: '-?(nan|inf)' is not a finite number"):
            parse_values(value, "--lambda-w")
    assert parse_values(2.5e-3) == [2.5e-3] and parse_values(7) == [7.0]


def test_log_range_accepts_every_float_spelling():
    """lo and hi take every float spelling ('.5', '5e-1', '0.5'); a range without lo or
    hi, a non-integer count and a non-positive end are refused with what to write."""
    assert parse_values(".5..2:3") == pytest.approx([0.5, 1.0, 2.0], rel=1e-15)
    assert parse_values("5e-1..2e0:3") == parse_values(".5..2:3")
    assert parse_values(" 0.5 .. 2 : 3 ") == parse_values(".5..2:3")
    assert parse_values("1e-2..1e-2:1") == [1e-2]
    for text in ("..1:3", "1..:3", "1..2", "1..2:1.5", "1..2:-1"):
        with pytest.raises(InputError, match=r"malformed range .*; write lo\.\.hi:count"):
            parse_values(text, "--x")
    with pytest.raises(InputError, match=r"needs lo > 0, hi > 0 and count >= 1"):
        parse_values("-1..2:3", "--x")
    assert parse_ints("1..8:4") == [1, 2, 4, 8]
    with pytest.raises(InputError, match=r"--seed: 0\.5 is not an integer; give whole numbers"):
        parse_ints("0,0.5", "--seed")


# ----------------------------------------------------------------------------- bad study files

GOOD_STUDY = TINY.format(grid="seed = [0, 1]", t_end="200.0")
TRAINED = '\n[[parts]]\nname = "net"\nmodel = "trained"\ndataset = "gaussian"\n'


def _quick(text: str) -> str:
    """GOOD_STUDY with its [quick] tables replaced by ``text``."""
    return GOOD_STUDY.split("[quick]")[0] + "[quick]\n" + text


BAD_STUDIES = [
    # unknown keys at every level are refused, in the full variant too
    (GOOD_STUDY + TRAINED.replace('dataset = "gaussian"', 'dataset = "gaussian"\nlr_max = 1.0'),
     "parts.net.lr_max", "unknown key for a trained model; allowed:"),
    (GOOD_STUDY.replace('analysis = "invariance"', 'analysis = "invariance"\n[trained]\nlrr = 1'),
     "trained.lrr", "unknown key for a trained model"),
    (_quick("colour = 1\n"), "quick.colour", "unknown key; allowed: simulated, trained, parts"),
    (_quick("[quick.simulated]\nrecods = 3\n"), "quick.simulated.recods",
     "unknown key for a simulated model; allowed: activation"),
    (_quick("[quick.trained]\nepoch = [1, 2]\n"), "quick.trained.epoch", "unknown key for a "
     "trained model"),
    (_quick("[quick.parts.a]\ndimm = 4\n"), "quick.parts.a.dimm", "unknown key for a simulated"),
    (_quick("[quick.parts.a.grid]\nsed = [0]\n"), "quick.parts.a.grid.sed", "unknown grid axis"),
    (_quick("[quick.parts.b]\nskip = true\n"), "quick.parts.b", "no part of that name; parts: a"),
    (_quick("[quick.simulated]\ndim = \"8\"\n"), "quick.simulated.dim",
     "expected an integer, got '8'"),
    (_quick("note = 3\n"), "quick.note", "expected a string, got 3"),
    (_quick("parts = {a = 3}\n"), "quick.parts.a", "expected a table, got 3"),
    (_quick("[quick.parts.a]\nskip = \"yes\"\n"), "quick.parts.a.skip",
     "expected true/false, got 'yes'"),
    # values that would be ignored
    (GOOD_STUDY.replace('model = "simulated"', 'model = "simulated"\nskip = true'),
     "parts.a.skip", "only the quick variant skips a part: write [quick.parts.a] skip = true"),
    (GOOD_STUDY.replace('model = "simulated"', 'model = "simulated"\nseed = 5'),
     "parts.a.seed", "'seed' is also a grid axis of the part, so the fixed value would be "
     "ignored; give it in one place"),
    (_quick("[quick.parts.a]\nseed = 0\n"), "quick.parts.a.seed", "'seed' is a grid axis of "
     "part 'a', so a fixed value would be ignored; set it in [quick.parts.a.grid] as seed = "),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nintervene_alpha = 3.0"),
     "parts.a", "intervene_alpha needs intervene_time (the time at which H is rescaled)"),
    # values out of range
    (GOOD_STUDY.replace("seed = [0, 1]", 'seed = "0,1.5"'), "parts.a.grid.seed",
     "1.5 is not an integer; give whole numbers"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nchunk = 0"), "parts.a",
     "chunk (runs integrated in one batch) must be an integer >= 1, got 0"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nwidth = 16"), "parts.a",
     "width 16 sets the hidden layers of a deep head"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nrecords = 1"), "parts.a",
     "records must be an integer >= 2, got 1"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = -1e-2"), "parts.a",
     "lambda_w must be a finite number >= 0, got -0.01"),
    (GOOD_STUDY.replace("t_end = 200.0", "t_end = inf"), "simulated.t_end",
     "expected a number, got inf"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nrtol = 0.0"), "parts.a",
     "rtol must be a finite number > 0, got 0.0"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\nsolver = \"rk4\""), "parts.a",
     "solver 'rk4' needs a step dt > 0"),
    (GOOD_STUDY.replace("lambda = 1e-2", "lambda = 1e-2\ndtype = \"float16\""),
     "simulated.dtype", "unknown value 'float16'; allowed: float64, float32"),
    (GOOD_STUDY + TRAINED.replace('dataset = "gaussian"', 'dataset = "gaussian"\n'
                                                          'epochs = [1, 2, 3]'),
     "parts.net", "preset 'mlp' has 2 phases; give 2 epoch counts"),
]


@pytest.mark.parametrize("variant", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize(("text", "key", "message"), BAD_STUDIES,
                         ids=[b[1] + f"-{i}" for i, b in enumerate(BAD_STUDIES)])
def test_bad_study_file_is_refused_naming_file_key_and_remedy(tmp_path, text, key, message,
                                                              variant):
    """A study file with an unknown key, a value that would be silently ignored or a value out
    of range is refused (full and quick variant alike) with one line naming the file, the key
    and what is allowed or what to write."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_study(path, quick=variant)
    line = str(err.value)
    assert line.startswith(f"{path}: key '{key}': "), line
    assert message in line
    assert "\n" not in line


def test_the_good_study_of_the_bad_cases_loads():
    """The base file of the bad cases is valid in both variants (each bad case is one edit)."""
    assert len(parse_study(tomllib.loads(GOOD_STUDY), "t.toml").runs()) == 2
    assert len(parse_study(tomllib.loads(GOOD_STUDY), "t.toml", quick=True).runs()) == 1
    assert len(parse_study(tomllib.loads(_quick("[quick.parts.a]\nskip = false\n")),
                           "t.toml", quick=True).runs()) == 2


# ----------------------------------------------------------------------------- store


def _row(value, status: str = "ok") -> dict:
    return {"status": status, "final_fn": value, "part": "p"}


def test_consolidation_interrupted_between_the_tables_is_redone(tmp_path, monkeypatch):
    """A consolidation that dies after one of its two tables never leaves a new run table with
    old trajectories: tables() then gives both tables with every finished run."""
    store = Store(tmp_path)
    store.write_run("a", _row(1.0), pd.DataFrame({"time": [1.0], "fn": [1.0]}))
    store.consolidate()
    past = store.runs_path.stat().st_mtime_ns - 10 * 10**9  # consolidated 10 s ago
    os.utime(store.runs_path, ns=(past, past))
    store.write_run("b", _row(2.0), pd.DataFrame({"time": [1.0], "fn": [2.0]}))
    real = store_module.write_table
    written = []

    def dies_after_one(frame, path, *args):
        if written:
            raise KeyboardInterrupt
        written.append(Path(path).name)
        return real(frame, path, *args)

    monkeypatch.setattr(store_module, "write_table", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        store.consolidate()
    monkeypatch.undo()
    runs, traj = store.tables()
    assert list(runs["run_id"]) == ["a", "b"]
    assert sorted(set(traj["run_id"])) == ["a", "b"]
    assert list(traj["fn"]) == [1.0, 2.0]


def test_consolidated_numbers_stay_numbers(tmp_path):
    """A column holding integers for some runs, floats for others and nothing for a third is
    written as floats (not as text); text mixed with numbers still becomes text."""
    store = Store(tmp_path)
    store.write_run("a", {**_row(1.0), "t_final": 10, "width": 3}, None)
    store.write_run("b", {**_row(2.0), "t_final": 2.5, "width": "3,4"}, None)
    store.write_run("c", {**_row(3.0), "t_final": None, "width": None}, None)
    runs, _ = store.consolidate()
    back = pd.read_parquet(store.runs_path)
    assert back["t_final"].dtype == np.float64
    np.testing.assert_array_equal(back["t_final"].to_numpy(), [10.0, 2.5, np.nan])
    assert list(back["width"])[:2] == ["3", "3,4"]
    pd.testing.assert_frame_equal(runs, back)


def _tiny(folder: Path, seeds: int, t_end: float = 100.0) -> Study:
    folder.mkdir(exist_ok=True)
    return load_study(write_tiny_study(folder, seeds=seeds, chunk=2, t_end=t_end, records=12))


def _without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame if c.endswith("_s")]).reset_index(drop=True)


def test_interrupted_study_resumes_to_the_uninterrupted_tables(tmp_path, monkeypatch):
    """Ctrl-C after the first of two chunks keeps that chunk's runs; the resumed study computes
    only the other chunk and ends with the same run and trajectory tables as a study run
    without interruption (same rows, same order, same values)."""
    study = _tiny(tmp_path / "spec", seeds=4)
    whole = run_study(study, tmp_path / "whole", progress=False, report=False)
    assert (whole.total, whole.computed) == (4, 4)

    calls = interrupt_chunk(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "cut", progress=False, report=False)
    assert calls == [2, 2]
    monkeypatch.undo()
    store = Store(tmp_path / "cut")
    assert len(store.statuses()) == 2 and not store.runs_path.exists()
    assert not list((tmp_path / "cut").rglob("*.tmp"))
    kept = {p.name: p.stat().st_mtime_ns for p in store.parts.glob("*.run.parquet")}

    resumed = run_study(study, tmp_path / "cut", progress=False, report=False)
    assert (resumed.total, resumed.computed, resumed.skipped) == (4, 2, 2)
    after = {p.name: p.stat().st_mtime_ns for p in store.parts.glob("*.run.parquet")}
    assert len(after) == 4 and {name: after[name] for name in kept} == kept
    for name in ("runs.parquet", "trajectories.parquet"):
        a = _without_timing(pd.read_parquet(tmp_path / "whole" / name))
        b = _without_timing(pd.read_parquet(tmp_path / "cut" / name))
        pd.testing.assert_frame_equal(b, a, check_exact=True)
    assert list(pd.read_parquet(tmp_path / "cut" / "runs.parquet")["run_id"]) == [
        d.run_id for d in study.runs()]


def test_changed_spec_never_reuses_stale_results(tmp_path):
    """Editing a parameter recomputes every run it changes and the table holds only the new
    values; adding a seed computes that seed alone; going back to the first spec reuses its
    runs, which are still the right ones."""
    out = tmp_path / "out"
    first = _tiny(tmp_path / "v1", seeds=2, t_end=100.0)
    assert run_study(first, out, progress=False, report=False).computed == 2
    changed = _tiny(tmp_path / "v2", seeds=2, t_end=60.0)
    summary = run_study(changed, out, progress=False, report=False)
    assert (summary.computed, summary.skipped) == (2, 0)
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["solver_t_end"]) == [60.0, 60.0] and list(runs["t_final"]) == [60.0, 60.0]
    traj = pd.read_parquet(out / "trajectories.parquet")
    assert traj["time"].max() == 60.0 and set(traj["run_id"]) == set(runs["run_id"])

    more = _tiny(tmp_path / "v3", seeds=3, t_end=60.0)
    summary = run_study(more, out, progress=False, report=False)
    assert (summary.computed, summary.skipped) == (1, 2)
    assert list(pd.read_parquet(out / "runs.parquet")["seed"]) == [0, 1, 2]

    back = run_study(first, out, progress=False, report=False)
    assert (back.computed, back.skipped) == (0, 2)
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["solver_t_end"]) == [100.0, 100.0]
    assert list(runs["run_id"]) == [d.run_id for d in first.runs()]
    assert all(math.isfinite(v) for v in runs["final_fn"])


@pytest.mark.parametrize("key", ["figures", "outputs"])
def test_keys_that_were_never_acted_on_are_refused_with_what_to_do(tmp_path, key):
    """'figures' and 'outputs' were validated and then ignored (a study wrote every table,
    figure and report whatever they said); a file that sets them is told so."""
    from ncsim.study.spec import load_study, spec_dir

    text = (spec_dir() / "width.toml").read_text()
    path = tmp_path / "width.toml"
    path.write_text(f'{key} = ["runs"]\n' + text)
    with pytest.raises(InputError, match=f"key '{key}': not read: .*remove the key"):
        load_study(path)


def test_write_json_writes_paths_as_text(tmp_path):
    """A path among the values (an output folder in a record) is written as its text; it
    raised a TypeError."""
    path = write_json({"out": tmp_path / "a" / "b.csv", "list": [Path("x")]}, tmp_path / "p.json")
    assert json.loads(path.read_text()) == {"out": str(tmp_path / "a" / "b.csv"), "list": ["x"]}


def test_rtol_floor_holds_for_adaptive_methods_only():
    """float32 resolves rtol 1e-6 (above 8 eps = 9.5e-7) and its usual 1e-5; fixed-step
    methods do not use rtol, so any value passes there."""
    for rtol in (1e-6, 1e-5):
        _with(SolverSpec(rtol=rtol, dtype="float32")).validate()
    _with(SolverSpec(method="rk4", dt=0.1, rtol=1e-12, dtype="float32")).validate()
    _with(SolverSpec(rtol=2e-15)).validate()


def test_simulation_figure_is_keyed_by_a_solver_grid_axis(tmp_path, monkeypatch):
    """A grid over solver options only (t_end) keys the figure by that axis, as the text
    table does (the figure looked at the model and decay columns only)."""
    import ncsim.plots
    from ncsim.flow import simulate
    from ncsim.results import write_simulation

    model = ModelSpec(classes=3, per_class=2, dim=4)
    specs = [RunSpec(model=model, solver=SolverSpec(t_end=t, records=4)).validate()
             for t in (5.0, 10.0)]
    seen = {}

    def figure(trajectories, runs, label_column=None):
        seen["label"] = label_column
        raise KeyboardInterrupt  # stop before writing: the label is what is checked

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", figure)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(simulate(specs, theory=False), tmp_path / "out", "parquet", specs)
    assert seen["label"] == "solver_t_end"
