"""One run, one identifier: the long and short forms of a setting give the same run id, and
the forms give the same numbers, so a store computed with one form serves the other."""

from __future__ import annotations

import dataclasses

import pytest

from ncsim.flow.simulate import run_id, simulate
from ncsim.spec import ModelSpec, Regularization, RunSpec, SolverSpec, TimeScale
from ncsim.study.spec import RunDesc

BASE = RunSpec(model=ModelSpec(kind="deep", classes=3, per_class=5, dim=8, depth=3),
               solver=SolverSpec(t_end=40.0, records=5))
# the identifier of BASE as stores written before the short forms were made canonical hold it
BASE_ID = "c60c760d3f5e"


def _with(spec: RunSpec, part: str, **fields) -> RunSpec:
    return spec.replace(**{part: dataclasses.replace(getattr(spec, part), **fields)})


LONG_FORMS = [
    ("model", {"per_class": (5, 5, 5)}),
    ("reg", {"lambda_w": (5e-4, 5e-4, 5e-4)}),
    ("time_scale", {"eta_w": (1.0, 1.0, 1.0)}),
    ("model", {"width": 8}),
    ("solver", {"t_first": 1e-2}),
]


def test_the_short_forms_keep_their_identifier():
    assert run_id(BASE) == BASE_ID


@pytest.mark.parametrize(("part", "fields"), LONG_FORMS)
def test_a_long_form_has_the_short_forms_identifier_and_numbers(part, fields):
    """Equal class counts, equal per-layer decays or time scales, a width equal to d and the
    default first record time written out are the same run: same id, and the same records and
    final row to the bit (float64 on the CPU)."""
    long_form = _with(BASE, part, **fields)
    assert run_id(long_form) == BASE_ID
    short, long_ = simulate(BASE, theory=False), simulate(long_form, theory=False)
    numbers = ["fn", "nc1_trace", "nc2_etf", "loss"]
    assert (short.trajectories[numbers].to_numpy() == long_.trajectories[numbers].to_numpy()).all()
    assert short.runs["final_fn"].iloc[0] == long_.runs["final_fn"].iloc[0]
    assert short.runs["steps"].iloc[0] == long_.runs["steps"].iloc[0]


@pytest.mark.parametrize(("part", "fields"), [
    ("model", {"per_class": (5, 5, 6)}),
    ("reg", {"lambda_w": (5e-4, 5e-4, 1e-3)}),
    ("time_scale", {"eta_w": (1.0, 1.0, 2.0)}),
    ("model", {"width": 9}),
    ("solver", {"t_first": 2e-2}),
])
def test_another_value_is_another_run(part, fields):
    assert run_id(_with(BASE, part, **fields)) != BASE_ID


def test_a_one_layer_model_takes_a_one_value_tuple_as_its_number():
    """depth 1: lambda_w (1e-3,) and eta_w (2.0,) are lambda_w 1e-3 and eta_w 2.0."""
    spec = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=1e-3), time_scale=TimeScale(eta_w=2.0))
    tupled = spec.replace(reg=Regularization(lambda_w=(1e-3,)),
                          time_scale=TimeScale(eta_w=(2.0,)))
    assert run_id(tupled) == run_id(spec)


def test_a_study_run_written_in_either_form_is_the_same_run():
    """A simulated study run's id is made of its spec's id: per_class 5 and [5, 5, 5] are one
    run of the study."""
    params = {"classes": 3, "per_class": 5, "dim": 8, "t_end": 40.0}
    short = RunDesc("p", "simulated", params)
    long_ = RunDesc("p", "simulated", {**params, "per_class": [5, 5, 5]})
    assert short.run_id == long_.run_id
