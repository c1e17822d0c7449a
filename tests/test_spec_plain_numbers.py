"""Spec fields given as numpy scalars, ints for floats or arrays for tuples are the same
parameters as the plain Python values: equal specs, the same validation, the same run id and
the same trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.flow.simulate import run_id
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)


def plain_spec() -> RunSpec:
    return RunSpec(
        model=ModelSpec(kind="deep", loss="mse", classes=3, per_class=(2, 3, 2), dim=4,
                        depth=2, width=5, activation="tanh", leaky_slope=0.01),
        reg=Regularization(lambda_w=(1e-3, 2.0), lambda_h=0.0, lambda_b=0.0),
        init=InitSpec(scale=0.5, seed=3),
        time_scale=TimeScale(eta_h=2.0, eta_w=(1.0, 0.5), eta_b=1.0),
        solver=SolverSpec(t_end=5.0, records=6, max_steps=10_000, check_every=4, rtol=1e-7),
        onset=OnsetSpec(threshold=0.5, stay=2, interpolate=True),
    )


def numpy_spec() -> RunSpec:
    """The same spec written with numpy scalars, ints for floats and arrays for tuples."""
    i64, f32, f64 = np.int64, np.float32, np.float64
    return RunSpec(
        model=ModelSpec(kind="deep", loss="mse", classes=i64(3),
                        per_class=np.array([2, 3, 2], dtype=np.int32), dim=np.int16(4),
                        depth=np.uint8(2), width=i64(5), activation="tanh",
                        leaky_slope=f64(0.01)),
        reg=Regularization(lambda_w=np.array([1e-3, 2]), lambda_h=0, lambda_b=i64(0)),
        init=InitSpec(scale=f32(0.5), seed=i64(3)),
        time_scale=TimeScale(eta_h=2, eta_w=[1, f64(0.5)], eta_b=np.int8(1)),
        solver=SolverSpec(t_end=i64(5), records=i64(6), max_steps=np.int32(10_000),
                          check_every=np.uint16(4), rtol=f64(1e-7)),
        onset=OnsetSpec(threshold=f64(0.5), stay=i64(2), interpolate=np.bool_(True)),
    )


def test_numpy_and_int_values_become_plain_python_values():
    """Every numeric field ends as int, float or bool of Python itself; tuples element-wise."""
    spec = numpy_spec()
    assert spec == plain_spec()
    for part in (spec.model, spec.reg, spec.init, spec.time_scale, spec.solver, spec.onset):
        for name, value in vars(part).items():
            for item in value if isinstance(value, tuple) else (value,):
                assert type(item) in (int, float, bool, str, type(None)), (name, type(item))
    assert spec.model.per_class == (2, 3, 2) and type(spec.model.per_class[0]) is int
    assert spec.reg.lambda_w == (1e-3, 2.0) and type(spec.reg.lambda_w[1]) is float
    assert type(spec.reg.lambda_h) is float and type(spec.solver.t_end) is float
    assert spec.init.scale == float(np.float32(0.5))
    assert spec.onset.interpolate is True


def test_same_run_id_and_validation():
    """The run id hashes the fields' JSON text: np.int64(4) and 4, 0 and 0.0 must hash alike."""
    plain, numeric = plain_spec(), numpy_spec()
    assert numeric.validate() is numeric
    assert run_id(numeric) == run_id(plain)
    assert run_id(RunSpec(reg=Regularization(lambda_h=0))) == run_id(
        RunSpec(reg=Regularization(lambda_h=0.0)))
    assert run_id(RunSpec(solver=SolverSpec(t_end=200))) == run_id(
        RunSpec(solver=SolverSpec(t_end=200.0)))
    assert run_id(RunSpec(solver=SolverSpec(t_end=201.0))) != run_id(
        RunSpec(solver=SolverSpec(t_end=200.0)))


def test_same_trajectory():
    """A numpy-written spec integrates to the very same numbers as the plain one."""
    a = simulate([plain_spec()], theory=False)
    b = simulate([numpy_spec()], theory=False)
    assert list(a.runs["run_id"]) == list(b.runs["run_id"])
    cols = ["time", "fn", "nc1_trace", "loss"]
    np.testing.assert_array_equal(a.trajectories[cols].to_numpy(),
                                  b.trajectories[cols].to_numpy())


@pytest.mark.parametrize(("spec", "message"), [
    (ModelSpec(dim=np.float64(4.0)), r"dim d must be an integer >= 1, got 4\.0"),
    (ModelSpec(classes=np.bool_(True)), r"classes K must be an integer >= 2"),
    (ModelSpec(dim=np.int64(0)), r"dim d must be an integer >= 1, got 0$"),
    (ModelSpec(classes=2, per_class=np.array([2.5, 3.0])),
     r"must be integers >= 1, got \(2\.5, 3\.0\)"),
    (SolverSpec(records=np.float32(3.5)), r"records must be an integer >= 2, got 3\.5"),
    (Regularization(lambda_h=np.float64("nan")), r"lambda_h must be a finite number >= 0"),
    (Regularization(lambda_h=True), r"lambda_h must be a finite number >= 0, got True"),
])
def test_values_that_are_not_the_right_number_are_still_refused(spec, message):
    """Normalising converts only what is already the field's kind of number: a float for an
    integer field, a bool or NaN stay as they are and are refused by validate."""
    with pytest.raises(InputError, match=message):
        if isinstance(spec, ModelSpec):
            RunSpec(model=spec).validate()
        elif isinstance(spec, SolverSpec):
            RunSpec(solver=spec).validate()
        else:
            RunSpec(reg=spec).validate()


def test_zero_dimensional_arrays_are_the_numbers_they_hold():
    """np.asarray(0.01) for lambda_w, eta_w or per_class is that number (tuple fields
    included; it crashed turning the 0-d array into a tuple)."""
    spec = RunSpec(model=ModelSpec(per_class=np.asarray(20), dim=np.asarray(8)),
                   reg=Regularization(lambda_w=np.asarray(0.01), lambda_h=np.asarray(2e-3)),
                   time_scale=TimeScale(eta_w=np.asarray(2.0)))
    assert spec.validate() is spec
    assert (spec.model.per_class, spec.model.dim) == (20, 8)
    assert type(spec.model.per_class) is int
    assert (spec.reg.lambda_w, spec.time_scale.eta_w) == (0.01, 2.0)
    assert run_id(spec) == run_id(RunSpec(model=ModelSpec(per_class=20, dim=8),
                                          reg=Regularization(lambda_w=0.01, lambda_h=2e-3),
                                          time_scale=TimeScale(eta_w=2.0)))
