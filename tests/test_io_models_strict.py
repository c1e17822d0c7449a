"""Strict checks of the I/O, spec, parameter and class-means layers where a wrong answer would
pass silently: CSV text columns, the simulation sidecar, spec validation limits and defaults,
run ids of explicit start arrays, integer option parsing, the class-means form with
rank-deficient deviations and the surrogate calibration without weight decay."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from thread_helpers import torch_threads

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.flow.simulate import run_id
from ncsim.io import read_table, write_table
from ncsim.models.classmeans import ClassMeansObjective, class_means_cheaper
from ncsim.models.reduction import state_form
from ncsim.params import COUNTS, INT_LIMIT, parse_ints, parse_values
from ncsim.spec import (
    RTOL_FLOOR_EPS,
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

# ----------------------------------------------------------------------------- CSV tables


def test_csv_text_column_with_a_number_keeps_its_missing_value_texts(tmp_path):
    """A column of labels that holds one number-like label ("3") is still a text column:
    "NA", "None" and "nan" come back as written, "3" as the text "3", and only the empty
    field (what write_table writes for None) is missing. A numeric column with "NA" written
    for a missing value, in the same file, is read as float64."""
    path = tmp_path / "t.csv"
    path.write_text("run_id,label,fn\nr0,NA,1.5\nr1,3,NA\nr2,x,2.0\nr3,None,0.25\nr4,nan,4\n"
                    "r5,,8\n")
    back = read_table(path)
    assert back["label"].iloc[:5].tolist() == ["NA", "3", "x", "None", "nan"]
    assert pd.isna(back["label"].iloc[5])
    assert back["fn"].dtype == np.float64
    np.testing.assert_array_equal(back["fn"].to_numpy(), [1.5, np.nan, 2.0, 0.25, 4.0, 8.0])


def test_csv_round_trip_of_mixed_label_column_written_by_write_table(tmp_path):
    """The same through write_table: every column comes back exactly (text stays text, the
    integer column stays int64, NaN stays NaN)."""
    frame = pd.DataFrame({"run_id": ["a", "b", "c"], "label": ["NA", "7", "x"],
                          "steps": np.array([1, 2, 3], dtype=np.int64),
                          "onset_time": [np.nan, 1.25, np.inf]})
    back = read_table(write_table(frame, tmp_path / "runs.csv"))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


# ----------------------------------------------------------------------------- sidecar


def test_simulation_sidecar_records_the_dtype_the_runs_used(tmp_path, monkeypatch):
    """spec.json's provenance names the dtype of the runs: float32 runs say float32 (the
    dtype column of the run table says so too). The figure is left out (not checked here)."""
    import ncsim.plots
    from ncsim.results import write_simulation

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure", lambda fig, path: None)

    model = ModelSpec(classes=2, per_class=2, dim=3)
    specs = [RunSpec(model=model, solver=SolverSpec(t_end=2.0, records=3, dtype="float32",
                                                     rtol=1e-5, atol=1e-7)).validate()]
    result = simulate(specs, theory=False)
    write_simulation(result, tmp_path / "out", "csv", specs)
    side = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert side["provenance"]["dtype"] == "float32"
    assert side["runs"][0]["solver_dtype"] == "float32"


def test_provenance_records_torch_threads():
    """The provenance names torch's intra-op thread count at the time it is taken (a trained
    network's bits depend on it), as an int."""

    from ncsim.io import provenance

    for count in (1, 2):
        with torch_threads(count):
            assert provenance()["torch_threads"] == count


def test_sidecar_names_every_dtype_of_a_mixed_call(tmp_path, monkeypatch):
    """A call with float64 and float32 runs records both dtypes (in order of first use),
    not the first run's alone."""
    import ncsim.plots
    from ncsim.results import write_simulation

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure", lambda fig, path: None)
    model = ModelSpec(classes=2, per_class=2, dim=3)
    specs = [RunSpec(model=model, solver=SolverSpec(t_end=2.0, records=3, dtype=dtype,
                                                     rtol=1e-5, atol=1e-7)).validate()
             for dtype in ("float64", "float32", "float64")]
    write_simulation(simulate(specs, theory=False), tmp_path / "out", "csv", specs)
    side = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert side["provenance"]["dtype"] == "float64,float32"
    assert side["provenance"]["device"] == "cpu"


def test_run_table_mixing_scalar_and_per_layer_decays_is_written_as_parquet(tmp_path,
                                                                            monkeypatch):
    """simulate() takes runs with a scalar lambda_w next to runs with per-layer decays, and
    per_class as a count next to per-class counts; the run table then mixes numbers and text
    ("0.001,0.002") in one column. The Parquet writer keeps each value's text, so the folder
    gets its run table and a read gives every other column back unchanged."""
    import ncsim.plots
    from ncsim.results import write_simulation

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure", lambda fig, path: None)
    model = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=lw),
                     solver=SolverSpec(t_end=2.0, records=3)).validate()
             for lw in (5e-4, (1e-3, 2e-3))]
    result = simulate(specs, theory=False)
    write_simulation(result, tmp_path / "out", "parquet", specs)
    back = read_table(tmp_path / "out" / "runs.parquet")
    assert list(back["lambda_w"]) == ["0.0005", "0.001,0.002"]
    pd.testing.assert_series_equal(back["final_fn"], result.runs["final_fn"])
    counts = [RunSpec(model=ModelSpec(classes=3, per_class=pc, dim=4),
                      solver=SolverSpec(t_end=2.0, records=3)).validate()
              for pc in (4, (2, 3, 2))]
    runs = simulate(counts, theory=False).runs
    back = read_table(write_table(runs, tmp_path / "counts.parquet"))
    assert list(back["per_class"]) == ["4", "2,3,2"]


def test_parquet_columns_mixing_integers_and_floats_stay_numbers(tmp_path):
    """An object column of integers, floats and a missing value is written as floats (not
    text); flags next to numbers, and text next to numbers, become text with the missing
    value kept missing; columns of one kind are untouched."""
    frame = pd.DataFrame({"n": pd.Series([1, 2.5, None], dtype=object),
                          "mixed": pd.Series([True, 2, None], dtype=object),
                          "label": pd.Series(["a", 3, float("nan")], dtype=object),
                          "plain": [1, 2, 3]})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["n"].dtype == np.float64
    np.testing.assert_array_equal(back["n"].to_numpy(), [1.0, 2.5, np.nan])
    assert list(back["mixed"][:2]) == ["True", "2"] and pd.isna(back["mixed"][2])
    assert list(back["label"][:2]) == ["a", "3"] and pd.isna(back["label"][2])
    assert back["plain"].dtype == np.int64 and list(back["plain"]) == [1, 2, 3]


def test_categorical_columns_mixing_kinds_are_written_by_the_object_rule(tmp_path):
    """A categorical column whose categories mix text and numbers (pyarrow refuses it) is
    written as text, one mixing integers and floats as floats, missing values kept; a
    categorical of one kind stays categorical, and one whose unused category is the only
    other kind keeps its values' kind."""
    frame = pd.DataFrame({
        "label": pd.Categorical([1, "x", 2.5, None]),
        "number": pd.Categorical(pd.Series([1, 2.5, 1, None], dtype=object)),
        "text": pd.Categorical(["u", "v", "u", "v"]),
        "unused": pd.Categorical([1, 2, 1, 2], categories=[1, 2, "x"]),
    })
    assert list(frame["number"].cat.categories) == [1, 2.5]
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert list(back["label"][:3]) == ["1", "x", "2.5"] and pd.isna(back["label"][3])
    assert back["number"].dtype == np.float64
    np.testing.assert_array_equal(back["number"].to_numpy(), [1.0, 2.5, 1.0, np.nan])
    assert isinstance(back["text"].dtype, pd.CategoricalDtype)
    assert list(back["text"]) == ["u", "v", "u", "v"]
    assert list(back["unused"]) == [1, 2, 1, 2]
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype)  # the caller's frame stays


@pytest.mark.parametrize("name", ["runs.txt", "runs", "runs.pq"])
def test_read_table_refuses_an_extension_that_names_no_format(tmp_path, name):
    """A table named other than .csv or .parquet is refused with what to name it, before
    any reader is tried (a Parquet file renamed .txt is not guessed at)."""
    path = tmp_path / name
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(InputError, match=r"name it \.csv or \.parquet"):
        read_table(path)


# ----------------------------------------------------------------------------- spec checks


def test_regularised_bias_needs_a_positive_bias_decay():
    """bias 'reg' with lambda_b = 0 is refused (it would be the 'free' bias under another
    name, with another run id); lambda_b > 0 passes."""
    model = ModelSpec(bias="reg", classes=3, per_class=2, dim=4)
    with pytest.raises(InputError, match="bias 'reg' needs lambda_b > 0"):
        RunSpec(model=model, reg=Regularization(lambda_b=0.0)).validate()
    RunSpec(model=model, reg=Regularization(lambda_b=1e-3)).validate()


@pytest.mark.parametrize("value", ["false", 0, 1, None, "yes"])
def test_onset_interpolate_must_be_a_bool(value):
    """A text "false" is truthy and 0 / 1 are not flags: each is refused, not taken as a
    silent True or False."""
    with pytest.raises(InputError, match="onset 'interpolate' must be True or False"):
        OnsetSpec(interpolate=value).validate()
    OnsetSpec(interpolate=np.bool_(False)).validate()


@pytest.mark.parametrize("t_end, first", [(0.05, 0.005), (0.1, 0.01), (2e4, 0.01)])
def test_default_first_record_is_min_of_1e2_and_a_tenth_of_t_end(t_end, first):
    """Without t_first the first non-zero record time is min(1e-2, t_end / 10), and the
    records are 0 then log-spaced from there to t_end (geometric ratio constant)."""
    solver = SolverSpec(t_end=t_end, records=5)
    assert solver.first_record == pytest.approx(first, rel=1e-15)
    times = solver.record_times()
    assert times[0] == 0.0 and times[1] == pytest.approx(first, rel=1e-15)
    assert times[-1] == pytest.approx(t_end, rel=1e-15)
    ratios = times[2:] / times[1:-1]
    np.testing.assert_allclose(ratios, (t_end / first) ** (1 / 3), rtol=1e-12)


def test_two_records_are_the_start_and_the_end():
    """records = 2 (the smallest allowed) gives t = 0 and t_end, not t_first."""
    solver = SolverSpec(t_end=7.0, records=2)
    solver.validate()
    np.testing.assert_array_equal(solver.record_times(), [0.0, 7.0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rtol_exactly_at_its_floor_is_accepted(dtype):
    """The floor is rtol >= 8 eps of the dtype: the floor itself passes, one ulp below it
    is refused."""
    floor = RTOL_FLOOR_EPS * float(np.finfo(dtype).eps)
    SolverSpec(rtol=floor, dtype=dtype).validate()
    with pytest.raises(InputError, match="is below what"):
        SolverSpec(rtol=float(np.nextafter(floor, 0.0)), dtype=dtype).validate()


# ----------------------------------------------------------------------------- run ids


def _arrays_spec(model: ModelSpec, arrays: dict) -> RunSpec:
    return RunSpec(model=model, init=InitSpec(kind="arrays", arrays=arrays)).validate()


def test_run_id_of_start_arrays_changes_with_the_bias_array():
    """Two starts that differ only in b are different runs: their ids differ; the same
    arrays (copies) give the same id."""
    model = ModelSpec(loss="mse", bias="free", classes=2, per_class=2, dim=3)
    rng = np.random.default_rng(0)
    h, w, b = rng.normal(size=(3, 4)), rng.normal(size=(2, 3)), rng.normal(size=2)
    base = _arrays_spec(model, {"H": h, "W": [w], "b": b})
    same = _arrays_spec(model, {"H": h.copy(), "W": [w.copy()], "b": b.copy()})
    other = _arrays_spec(model, {"H": h, "W": [w], "b": b + 1e-3})
    assert run_id(base) == run_id(same)
    assert run_id(other) != run_id(base)


def test_run_id_of_start_arrays_changes_with_every_layer_of_a_deep_head():
    """A change in the last layer of a deep head's start changes the run id (every matrix
    of the W list counts, not only the first)."""
    model = ModelSpec(kind="deep", depth=3, classes=2, per_class=2, dim=3, width=4)
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 4))
    ws = [rng.normal(size=shape) for shape in model.layer_shapes]
    base = _arrays_spec(model, {"H": h, "W": ws})
    for layer in range(3):
        changed = [w.copy() for w in ws]
        changed[layer][0, 0] += 1e-6
        assert run_id(_arrays_spec(model, {"H": h, "W": changed})) != run_id(base), layer


_FIELD_CHANGES = [
    ("model", dict(classes=4)), ("model", dict(per_class=3)), ("model", dict(dim=6)),
    ("model", dict(per_class=(2, 3, 2))), ("model", dict(loss="mse")),
    ("model", dict(bias="free")),
    ("reg", dict(lambda_w=1e-3)), ("reg", dict(lambda_h=1e-3)),
    ("init", dict(scale=0.2)), ("init", dict(seed=1)), ("init", dict(kind="spectral")),
    ("time_scale", dict(eta_h=2.0)), ("time_scale", dict(eta_w=0.5)),
    ("solver", dict(t_end=3.0)), ("solver", dict(records=6)), ("solver", dict(rtol=1e-7)),
    ("solver", dict(atol=1e-9)), ("solver", dict(t_first=0.5)), ("solver", dict(gtol=0.0)),
    ("solver", dict(max_steps=77)), ("solver", dict(vanish_tol=0.0)),
    ("solver", dict(dtype="float32", rtol=1e-5)), ("solver", dict(method="tsit5")),
    ("solver", dict(reduction="none")), ("solver", dict(check_every=4)),
    ("onset", dict(threshold=0.05)), ("onset", dict(metric="nc2_etf")),
    ("onset", dict(stay=2)), ("onset", dict(interpolate=False)),
]


def test_run_id_changes_with_every_field_that_shapes_a_result():
    """Each of these one-field changes gives a new run id (the resume key of a study): a
    change that kept the id would let a study reuse the stored result of another run."""
    base = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=5),
                   solver=SolverSpec(t_end=2.0, records=5)).validate()
    ids = {run_id(base)}
    for part, change in _FIELD_CHANGES:
        spec = base.replace(**{part: dataclasses.replace(getattr(base, part), **change)})
        spec.validate()
        rid = run_id(spec)
        assert rid not in ids, (part, change)
        ids.add(rid)


# ----------------------------------------------------------------------------- batches


def test_runs_with_different_onset_rules_in_one_call_keep_their_own_rule():
    """Two runs that differ only in the onset threshold, simulated in one call, get the
    onset times each gets alone (the onset rule is not shared across a call)."""
    model = ModelSpec(classes=3, per_class=2, dim=4)
    solver = SolverSpec(t_end=400.0, records=40, gtol=0.0)
    reg = Regularization(lambda_w=5e-3, lambda_h=5e-3)
    specs = [RunSpec(model=model, reg=reg, init=InitSpec(scale=0.3), solver=solver,
                     onset=OnsetSpec(threshold=th)).validate() for th in (0.5, 0.01)]
    together = simulate(specs, theory=False).runs["onset_time"].to_numpy()
    alone = [simulate([s], theory=False).runs["onset_time"].iloc[0] for s in specs]
    assert np.isfinite(alone).all() and alone[0] < alone[1]
    np.testing.assert_array_equal(together, alone)


# ----------------------------------------------------------------------------- parameters


def test_integer_options_stop_below_2_to_the_63():
    """Integers are stored as int64: 2^63 - 1 (and its negative) are read exactly, 2^63 is
    refused."""
    top = INT_LIMIT - 1
    assert parse_ints(str(top)) == [top] and parse_ints(str(-top)) == [-top]
    assert parse_ints(top) == [top]
    for bad in (str(INT_LIMIT), INT_LIMIT, str(-INT_LIMIT)):
        with pytest.raises(InputError, match="out of range"):
            parse_ints(bad)


def test_class_counts_keep_repeated_values_in_order():
    """Class counts are a list, not a set of grid values: "5,5,3" is three classes of 5, 5
    and 3 samples (the command line's COUNTS type too); a grid option drops repeats."""
    assert parse_ints("5,5,3", unique=False) == [5, 5, 3]
    assert COUNTS.convert("5,5,3", None, None) == [5, 5, 3]
    assert parse_ints("5,5,3") == [5, 3]


@pytest.mark.parametrize("text", ["1e-3..0:3", "1e-3..-1:3", "0..1:3", "-1..1:3"])
def test_log_range_with_a_non_positive_end_is_refused(text):
    """A log range needs both ends > 0; either end 0 or negative is refused with the rule."""
    with pytest.raises(InputError, match="needs lo > 0, hi > 0"):
        parse_values(text)


# ----------------------------------------------------------------------------- class means


def test_class_means_metrics_with_more_dimensions_than_deviations():
    """d = 8 > N - K = 3: the within-class scatter S0 has rank 3 and its eigenvalues include
    rounding-size negative ones. The class-means metrics must still equal nc_metrics of the
    rebuilt features (finite, to 1e-10: float64 rounding of a few products), with
    imbalanced classes (1, 2, 3)."""
    from ncsim.metrics import nc_metrics

    model = ModelSpec(loss="mse", bias="free", classes=3, per_class=(1, 2, 3), dim=8)
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(2, 8, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state = form.from_parameters(h, w, b)
    got = form.metrics(state)
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    want = nc_metrics(h.transpose(1, 2), labels, 3, w, b)
    for name in want:
        assert torch.isfinite(got[name]).all() == torch.isfinite(want[name]).all(), name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_class_means_trajectory_with_more_dimensions_than_deviations():
    """The same rank-deficient case through simulate: the class-means form's trajectory
    equals the parameter form's (rtol 1e-7: two integrations at rtol 1e-11)."""
    model = ModelSpec(loss="mse", bias="none", classes=3, per_class=(1, 2, 3), dim=8)
    cols = ["loss", "fn", "nc1", "nc1_trace", "nc2_etf", "within_energy", "cdnv"]

    def run(reduction):
        spec = RunSpec(model=model, reg=Regularization(lambda_w=1e-2, lambda_h=2e-2),
                       init=InitSpec(scale=0.5, seed=3),
                       solver=SolverSpec(t_end=20.0, records=8, rtol=1e-11, atol=1e-13,
                                         gtol=0.0, reduction=reduction)).validate()
        return simulate([spec], theory=False).trajectories[cols].to_numpy()

    got, want = run("classes"), run("none")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-11)


def test_auto_takes_the_class_means_form_only_when_strictly_cheaper():
    """4 d + 3 K < 3 N is strict: at 4 d + 3 K = 3 N (K = 2, n = 3, d = 3: 18 = 18) auto keeps
    the parameters (and the run id is the one without the class-means mark); one sample
    more per class takes the class-means form."""
    tie = ModelSpec(loss="mse", classes=2, per_class=3, dim=3)
    assert 4 * tie.dim + 3 * tie.classes == 3 * tie.num_samples
    assert not class_means_cheaper(tie) and state_form(tie, "auto") == "none"
    more = ModelSpec(loss="mse", classes=2, per_class=4, dim=3)
    assert class_means_cheaper(more) and state_form(more, "auto") == "classes"
    spec = RunSpec(model=tie)
    row = spec.to_row()
    del row["solver_reduction"], row["solver_cuda_graphs"]
    legacy = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
    assert run_id(spec) == legacy[:12]


# ----------------------------------------------------------------------------- surrogate


def _surrogate_state():
    from ncsim.validate.surrogate import SurrogateState

    rng = np.random.default_rng(2)
    return SurrogateState(H=rng.normal(size=(4, 6)), W=rng.normal(size=(3, 4)),
                          b=rng.normal(size=3), per_class=2)


def test_response_calibration_without_weight_decay():
    """A network trained without weight decay has a zero decay velocity: the calibration
    gives lambda_H = 0 (not a refusal), eta_H from the data velocity, and r2_decay NaN (no
    velocity to explain), r2_data 1 for a velocity exactly along the gradient."""
    from ncsim.validate import surrogate as sg

    state = _surrogate_state()
    H, W, b = state.H, state.W, state.b
    onehot = np.repeat(np.eye(3), 2, axis=1)
    grad_h = W.T @ (W @ H + b[:, None] - onehot) / 6
    factor = sg.time_factor(3)
    cal = sg.calibrate_response(state, factor * (-2.5 * grad_h), np.zeros_like(H), factor)
    assert cal.lambda_h == 0.0
    assert cal.eta_h == pytest.approx(2.5, rel=1e-13)
    assert cal.r2_data == pytest.approx(1.0, abs=1e-13)
    assert math.isnan(cal.r2_decay)


@pytest.mark.parametrize("t_end, t_first", [(7.0, 7e-4), (1e3, 1e-3), (10.0, 1e-3)])
def test_surrogate_first_record_is_min_of_1e3_and_t_end_over_1e4(t_end, t_first):
    """The surrogate's first record time is min(1e-3, t_end / 1e4): a short simulation is
    resolved from t_end / 1e4 on."""
    from ncsim.validate import surrogate as sg

    spec = sg.surrogate_spec(_surrogate_state(), 0.015, 0.002, t_end)
    assert spec.solver.t_first == pytest.approx(t_first, rel=1e-15)


def test_per_layer_decays_and_time_scales_must_match_the_depth_at_validation():
    """A lambda_w or eta_w list whose length is not the depth is refused by validate itself
    (before anything is built), naming both lengths; the right length passes."""
    model = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4)
    with pytest.raises(InputError, match="lambda_w lists 3 values but depth is 2"):
        RunSpec(model=model, reg=Regularization(lambda_w=(1e-3, 2e-3, 3e-3))).validate()
    with pytest.raises(InputError, match="eta_w lists 1 values but depth is 2"):
        RunSpec(model=model, time_scale=TimeScale(eta_w=(2.0,))).validate()
    RunSpec(model=model, reg=Regularization(lambda_w=(1e-3, 2e-3)),
            time_scale=TimeScale(eta_w=(2.0, 1.0))).validate()


def test_stacked_training_seeds_lie_below_2_to_the_31():
    """Training seeds are refused from 2^31 on (as a single training's seed is); 2^31 - 1 and
    0 pass."""
    from ncsim.validate.stacked import check_seeds
    from ncsim.validate.train import TRAIN_SEED_LIMIT, TrainConfig

    config = TrainConfig(depth=2, width=8)
    assert check_seeds(config, [0, TRAIN_SEED_LIMIT - 1]) == [0, TRAIN_SEED_LIMIT - 1]
    for bad in ([TRAIN_SEED_LIMIT], [-1], [1.0]):
        with pytest.raises(InputError, match=r"seeds must be integers in \[0, 2\^31\)"):
            check_seeds(config, bad)
