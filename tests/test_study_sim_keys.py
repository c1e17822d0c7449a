"""The simulated keys of a study that set the leaky slope, the steady-state and vanishing
tolerances and the onset's interpolation: each reaches the run's spec, a key left out keeps
the spec's default (and the run id of a study that does not give it), and bad values are
refused naming the key."""

from __future__ import annotations

import pytest
from tiny_study import write_tiny_study

from ncsim.errors import InputError
from ncsim.flow.simulate import run_id
from ncsim.spec import ModelSpec, OnsetSpec, SolverSpec
from ncsim.study.spec import build, load_study, run_spec

BASE = {"classes": 3, "per_class": 4, "dim": 8, "lambda": 1e-2, "t_end": 10.0}


def test_each_key_reaches_its_spec_field():
    """leaky_slope, gtol, vanish_tol and onset_interpolate set ModelSpec.leaky_slope,
    SolverSpec.gtol, SolverSpec.vanish_tol and OnsetSpec.interpolate."""
    spec = run_spec({**BASE, "depth": 2, "activation": "leaky_relu", "leaky_slope": 0.2,
                     "gtol": 0.0, "vanish_tol": 0.05, "onset_interpolate": False})
    assert spec.model.leaky_slope == 0.2
    assert (spec.solver.gtol, spec.solver.vanish_tol) == (0.0, 0.05)
    assert spec.onset.interpolate is False


def test_keys_left_out_keep_the_spec_defaults_and_the_run_id():
    """Without the keys every field is the spec class's default, and writing a default out
    gives the same run id (the same run)."""
    plain = run_spec(dict(BASE))
    assert plain.model.leaky_slope == ModelSpec().leaky_slope
    assert (plain.solver.gtol, plain.solver.vanish_tol) == (SolverSpec().gtol,
                                                             SolverSpec().vanish_tol)
    assert plain.onset.interpolate is OnsetSpec().interpolate
    written = run_spec({**BASE, "gtol": SolverSpec().gtol, "vanish_tol": SolverSpec().vanish_tol,
                        "onset_interpolate": OnsetSpec().interpolate})
    assert run_id(written) == run_id(plain)
    assert run_id(run_spec({**BASE, "gtol": 0.0})) != run_id(plain)


def test_a_study_grid_over_the_leaky_slope(tmp_path):
    """A study can vary leaky_slope on a grid axis: one run per slope, each built with it."""
    extra = """
[[parts]]
name = "leaky"
model = "simulated"
depth = 2
activation = "leaky_relu"
[parts.grid]
leaky_slope = [0.05, 0.3]
"""
    study = load_study(write_tiny_study(tmp_path, seeds=1, extra=extra))
    leaky = [d for d in study.runs() if d.part == "leaky"]
    assert [build(d).model.leaky_slope for d in leaky] == [0.05, 0.3]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("onset_interpolate", '"yes"', "expected true/false"),
    ("gtol", '"small"', "expected a number"),
    ("leaky_slope", "-0.1", "leaky_slope"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, message):
    """A wrong type, or a value the spec refuses, is an InputError that names the key."""
    path = write_tiny_study(tmp_path, seeds=1)
    text = path.read_text().replace("chunk = 2", f"chunk = 2\n{key} = {value}")
    if key == "leaky_slope":
        text = text.replace("dim = 8", 'dim = 8\ndepth = 2\nactivation = "leaky_relu"')
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_study(path)
