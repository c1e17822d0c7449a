"""Validating many runs that share part objects: each shared part is checked once, and
nothing else is skipped (``RunSpec.validate(checked)``, as ``simulate`` calls it)."""

import importlib

import pytest

from ncsim.errors import InputError
from ncsim.spec import ModelSpec, Regularization, RunSpec, SolverSpec

simulate_module = importlib.import_module("ncsim.flow.simulate")


def _grid(model, solver, count=6):
    return [RunSpec(model=model, reg=Regularization(lambda_w=0.01 * (i + 1), lambda_h=0.01),
                    solver=solver) for i in range(count)]


def test_a_shared_model_and_solver_are_checked_once(monkeypatch):
    """Six runs of one ModelSpec and one SolverSpec: one check each; the per-run parts (the
    regularisations) are each checked."""
    calls = {"model": 0, "solver": 0, "reg": 0}
    for cls, name in ((ModelSpec, "model"), (SolverSpec, "solver"), (Regularization, "reg")):
        original = cls.validate

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(cls, "validate", counted)
    specs = _grid(ModelSpec(classes=3, per_class=2, dim=4), SolverSpec(t_end=1.0))
    assert simulate_module._run_specs(specs) == specs
    assert calls == {"model": 1, "solver": 1, "reg": 6}
    for spec in specs:  # without a pass, every part every time
        spec.validate()
    assert calls == {"model": 7, "solver": 7, "reg": 12}


def test_a_bad_run_among_runs_that_share_parts_is_refused():
    """A bad regularisation in the fourth run of a shared model is still found."""
    specs = _grid(ModelSpec(classes=3, per_class=2, dim=4), SolverSpec(t_end=1.0))
    specs[3] = specs[3].replace(reg=Regularization(lambda_w=-1.0))
    with pytest.raises(InputError, match="lambda_w"):
        simulate_module._run_specs(specs)


def test_an_equal_but_distinct_part_is_checked_on_its_own():
    """``ModelSpec(classes=3.0)`` equals ``ModelSpec(classes=3)`` (and hashes alike) but is
    refused: the pass knows parts by identity, not by value."""
    good, bad = ModelSpec(classes=3), ModelSpec(classes=3.0)
    assert good == bad and hash(good) == hash(bad)
    checked: set = set()
    RunSpec(model=good).validate(checked)
    with pytest.raises(InputError, match="classes K must be an integer >= 2, got 3.0"):
        RunSpec(model=bad).validate(checked)


def test_a_shared_part_is_checked_against_each_model_it_meets():
    """One Regularization with two per-layer decays: fine beside a depth-2 head, refused
    beside the one-layer model in the same pass."""
    reg = Regularization(lambda_w=(0.01, 0.02), lambda_h=0.01)
    deep = RunSpec(model=ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4),
                   reg=reg)
    flat = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4), reg=reg)
    with pytest.raises(InputError, match="lambda_w lists 2 values but depth is 1"):
        simulate_module._run_specs([deep, flat])
