"""The public API's namespaces match their docstrings, the READMEs quote what the code gives,
and bad input to the library functions raises :class:`ncsim.InputError` (one line: what is
wrong and what to give), never a raw TypeError, KeyError or AttributeError."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ncsim
from ncsim import InitSpec, InputError, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.onset import onset_and_fn, onset_table, onset_time
from ncsim.validate.analysis import OnsetRule

ROOT = Path(__file__).resolve().parent.parent


def small_spec(lam: float = 0.02) -> RunSpec:
    """A one-layer MSE run small enough to simulate in well under a second."""
    return RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=6),
                   reg=Regularization(lambda_w=lam, lambda_h=lam),
                   init=InitSpec(scale=0.1, seed=0), solver=SolverSpec(t_end=2000, records=60))


# ---------------------------------------------------------------------------------------------
# 1. namespaces and docstrings

def test_ncsim_simulate_is_the_flow_simulator():
    """The package docstring names simulate as public API: ncsim.simulate is it."""
    from ncsim.flow import simulate

    assert "simulate" in ncsim.__all__
    assert ncsim.simulate is simulate
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ncsim.nope  # noqa: B018


def test_import_ncsim_stays_light():
    """``import ncsim`` pulls in neither torch, sympy, pandas nor the flow modules (the
    simulator is imported on first use of ncsim.simulate)."""
    heavy = ["torch", "sympy", "pandas", "scipy", "ncsim.flow", "ncsim.theory"]
    code = f"import sys, ncsim; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def _theory_public_names() -> list[str]:
    """The names listed under "Public API" in ncsim.theory's docstring."""
    import ncsim.theory

    block = ncsim.theory.__doc__.split("Public API")[1].split("-" * 10)[1]
    names = []
    for line in block.strip().splitlines():
        for piece in line.split(";"):
            match = re.match(r"\s*([A-Za-z_]\w*)", piece)
            if match:
                names.append(match.group(1))
    return names


def test_theory_docstring_names_import_from_the_package():
    """Every name the "Public API" of ncsim.theory lists imports from ncsim.theory (it listed
    lower_rank_check and phase_diagram, which did not)."""
    import ncsim.theory
    from ncsim.theory.lowrank import lower_rank_check
    from ncsim.theory.phase import phase_diagram

    names = _theory_public_names()
    assert {"lower_rank_check", "phase_diagram", "predicted_onset"} <= set(names)
    for name in names:
        assert name in ncsim.theory.__all__, name
        assert hasattr(ncsim.theory, name), name
    assert ncsim.theory.lower_rank_check is lower_rank_check
    assert ncsim.theory.phase_diagram is phase_diagram


# ---------------------------------------------------------------------------------------------
# 2. the theory README quotes what predicted_onset gives for the parameters it prints

def test_theory_readme_horizon_crossings():
    """ncsim/theory/README.md prints CE reg K=2 ... init 3 and MSE free K=6 ... init 1 (rounded
    parameters) and the crossing times predicted_onset gives for exactly those calls."""
    from ncsim.theory import predicted_onset

    text = (ROOT / "ncsim" / "theory" / "README.md").read_text()
    ce = float(re.search(r"init 3 crosses at (\d+)", text).group(1))
    mse = float(re.search(r"λ_H = 0\.01055, init 1 at (\d+)", text).group(1))
    later_mse = float(re.search(r"predicts a crossing at (\d+)", text).group(1))
    later_ce = float(re.search(r"(\d+) predicted; simulated fn", text).group(1))
    got_ce = predicted_onset("ce", "reg", 2, 28, 11, 1.43e-5, 1.96e-3, 3.0,
                             lambda_b=3.9).fn_cross_time
    got_mse = predicted_onset("mse", "free", 6, 3, 35, 2.25e-5, 0.01055, 1.0).fn_cross_time
    assert round(got_ce) == ce == later_ce
    assert round(got_mse) == mse == later_mse


# ---------------------------------------------------------------------------------------------
# 3. equilibrium and Lambda_crit refuse text and booleans

@pytest.mark.parametrize("bad", [
    {"lambda_w": "0.01"}, {"K": "3"}, {"lambda_h": True}, {"n": np.True_},
    {"lambda_h": np.array([True, False])}, {"lambda_w": torch.tensor(True)},
])
def test_equilibrium_refuses_text_and_booleans(bad):
    from ncsim.theory import equilibrium

    args = {"K": 3, "n": 2, "lambda_w": 0.01, "lambda_h": 0.01, **bad}
    name = next(iter(bad))
    with pytest.raises(InputError, match=rf"{name} must be a number or an array of numbers"):
        equilibrium("mse", "none", **args)


def test_equilibrium_refuses_a_boolean_bias_decay_and_a_text_layer_decay():
    from ncsim.theory import equilibrium

    with pytest.raises(InputError, match="lambda_b must be a number"):
        equilibrium("mse", "reg", 3, 2, 0.01, 0.01, lambda_b=True)
    with pytest.raises(InputError, match=r"lambda_w\[1\] must be a number"):
        equilibrium("mse", "none", 3, 2, (0.01, "0.02"), 0.01, depth=2)


def test_lambda_crit_refuses_text_and_booleans():
    from ncsim.theory import Lambda_crit, lambda_crit

    with pytest.raises(InputError, match="n must be a number or an array of numbers"):
        Lambda_crit("mse", 3, "2")
    with pytest.raises(InputError, match="K must be a number or an array of numbers"):
        Lambda_crit("mse", True, 2)
    with pytest.raises(InputError, match="ratio must be a number or an array of numbers"):
        lambda_crit("mse", "none", 3, 2, ratio="1")


def test_predicted_onset_refuses_a_boolean_decay():
    """predicted_onset refused text already; a boolean decay now stops in equilibrium."""
    from ncsim.theory import predicted_onset

    predicted_onset.cache_clear()
    with pytest.raises(InputError, match="lambda_h must be a number"):
        predicted_onset("mse", "none", 4, 5, 20, 0.01, True, 1e-3)


def test_theory_numbers_and_arrays_still_accepted():
    """Numbers of every kind and numeric arrays (numpy, torch, lists) keep working."""
    from ncsim.theory import Lambda_crit, equilibrium

    ref = float(equilibrium("mse", "none", 3, 2, 0.01, 0.01).fn_star)
    assert float(equilibrium("mse", "none", np.int64(3), np.float32(2), np.float64(0.01),
                             0.01).fn_star) == pytest.approx(ref, rel=1e-12)
    grid = equilibrium("mse", "none", 3, 2, np.array([0.01, 0.02]), [0.01, 0.01]).fn_star
    assert grid.shape == (2,) and grid[0] == pytest.approx(ref, rel=1e-12)
    on_torch = equilibrium("mse", "none", torch.tensor([3, 3]), 2, 0.01, 0.01).fn_star
    assert isinstance(on_torch, torch.Tensor) and float(on_torch[0]) == pytest.approx(ref)
    assert float(Lambda_crit("mse", 3, 2)) == pytest.approx(1 / (3 * math.sqrt(2)))


# ---------------------------------------------------------------------------------------------
# 4. simulate and RunSpec validate their input

@pytest.mark.parametrize(("specs", "message"), [
    ([], "empty list of runs"),
    ([ModelSpec()], "item 0 of the list is a ModelSpec"),
    ("x", "takes a RunSpec or a list of RunSpecs, got str"),
    (None, "takes a RunSpec or a list of RunSpecs, got NoneType"),
    ({"model": ModelSpec()}, "got dict"),
])
def test_simulate_refuses_what_is_not_a_list_of_run_specs(specs, message):
    from ncsim.flow import simulate

    with pytest.raises(InputError, match=message):
        simulate(specs)


@pytest.mark.parametrize("max_batch", [0, -1, 2.5, True])
def test_simulate_refuses_a_bad_max_batch(max_batch):
    from ncsim.flow import simulate

    with pytest.raises(InputError, match="max_batch must be an integer >= 1"):
        simulate(small_spec(), max_batch=max_batch)


@pytest.mark.parametrize("part", ["model", "reg", "init", "time_scale", "solver", "onset"])
def test_run_spec_part_must_be_its_spec_class(part):
    with pytest.raises(InputError, match=rf"RunSpec {part} must be a \w+, got dict"):
        RunSpec(**{part: {"classes": 3}}).validate()


def test_final_state_of_an_unknown_run():
    from ncsim.flow import simulate

    result = simulate(small_spec().replace(solver=SolverSpec(t_end=10, records=5)),
                      theory=False)
    rid = result.runs["run_id"].iloc[0]
    assert set(result.final_state(rid)) >= {"H", "W", "b"}
    with pytest.raises(InputError, match=rf"no run 'nope' in this result.*{rid}"):
        result.final_state("nope")


# ---------------------------------------------------------------------------------------------
# 5. onset

def _vanishing_table() -> pd.DataFrame:
    """Run "v": nc1_trace falls below 0.01 at t = 100 while fn goes from 1 to 1e-6."""
    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    return pd.concat([
        pd.DataFrame({"run_id": "v", "time": t, "nc1_trace": [1.0, 0.5, 0.1, 0.005, 0.001],
                      "fn": [1.0, 0.5, 0.01, 1e-4, 1e-6]}),
        pd.DataFrame({"run_id": "ok", "time": t, "nc1_trace": [1.0, 0.5, 0.1, 0.005, 0.001],
                      "fn": [0.1, 0.5, 1.0, 2.0, 2.0]}),
    ])


def test_onset_table_gives_no_onset_to_a_vanishing_run():
    table = onset_table(_vanishing_table(), interpolate=False)
    assert list(table.columns) == ["onset_time", "fn_at_onset", "vanishing"]
    assert math.isnan(table.loc["v", "onset_time"]) and math.isnan(table.loc["v", "fn_at_onset"])
    assert bool(table.loc["v", "vanishing"])
    assert (table.loc["ok", "onset_time"], table.loc["ok", "fn_at_onset"]) == (100.0, 2.0)
    assert not bool(table.loc["ok", "vanishing"])
    off = onset_table(_vanishing_table(), interpolate=False, vanish_tol=0)
    assert (off.loc["v", "onset_time"], off.loc["v", "fn_at_onset"]) == (100.0, 1e-4)
    with pytest.raises(InputError, match="vanish_tol must be a number in"):
        onset_table(_vanishing_table(), vanish_tol=1.0)


def test_onset_table_agrees_with_the_simulator_on_a_vanishing_run():
    """A decay above the threshold: the simulator says vanishing with no onset, so does
    onset_table on its trajectories; the collapsed run keeps its onset."""
    from ncsim.flow import simulate

    result = simulate([small_spec(0.02), small_spec(0.5)], theory=False)
    assert list(result.runs["status"]) == ["ok", "vanishing"]
    table = onset_table(result.trajectories).loc[result.runs["run_id"]]
    np.testing.assert_allclose(table["onset_time"], result.runs["onset_time"], rtol=1e-12)
    np.testing.assert_allclose(table["fn_at_onset"], result.runs["fn_at_onset"], rtol=1e-12)
    assert list(table["vanishing"]) == [False, True]


def test_onset_table_of_an_empty_table_is_empty():
    table = onset_table(_vanishing_table().iloc[:0])
    assert table.empty and table.index.name == "run_id"
    assert list(table.columns) == ["onset_time", "fn_at_onset", "vanishing"]


@pytest.mark.parametrize("threshold", ["0.01", True, None, float("nan")])
def test_onset_threshold_must_be_a_number(threshold):
    t, v = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.1, 0.001])
    with pytest.raises(InputError, match="onset threshold must be a finite number"):
        onset_time(t, v, threshold=threshold)
    with pytest.raises(InputError, match="onset threshold must be a finite number"):
        onset_table(_vanishing_table(), threshold=threshold)


def test_onset_threshold_as_a_numpy_number_or_0d_array():
    t, v = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.1, 0.001])
    want = onset_time(t, v, threshold=0.01)
    assert onset_time(t, v, threshold=np.float64(0.01)) == want
    assert onset_time(t, v, threshold=np.array(0.01)) == want


def test_onset_and_fn_checks_fn_without_an_onset():
    """The length of fn is checked whether or not the metric crosses."""
    t, v = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.5, 0.2])
    with pytest.raises(InputError, match="fn must have one value per record"):
        onset_and_fn(t, v, [1.0], 0.01)
    assert all(math.isnan(x) for x in onset_and_fn(t, v, [1.0, 2.0, 3.0], 0.01))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": -1}, "onset threshold must be a finite number > 0"),
    ({"threshold": 0.0}, "onset threshold must be a finite number > 0"),
    ({"threshold": "0.01"}, "onset threshold must be a finite number > 0"),
    ({"stay": 0}, "stay must be an integer >= 1"),
    ({"stay": 1.5}, "stay must be an integer >= 1"),
])
def test_onset_rule_checks_itself(kwargs, message):
    with pytest.raises(InputError, match=message):
        OnsetRule(**kwargs)


def test_onset_rule_valid_values_unchanged():
    assert OnsetRule(threshold=0.05, stay=2).threshold == 0.05
    assert OnsetRule.preset("rupa2026") == OnsetRule("nc1_trace", 0.01, 2, False, 1)


# ---------------------------------------------------------------------------------------------
# 6. validate: datasets and training-log summaries

@pytest.mark.parametrize(("name", "kwargs", "field"), [
    ("digits", {"per_class": 2.5}, "per_class"),
    ("digits", {"per_class": "5"}, "per_class"),
    ("digits", {"per_class": True}, "per_class"),
    ("gaussian", {"per_class": 2.5}, "per_class"),
    ("digits", {"test_per_class": 2.5}, "test_per_class"),
    ("gaussian", {"test_per_class": 0}, "test_per_class"),
])
def test_load_dataset_refuses_a_bad_sample_count(name, kwargs, field):
    from ncsim.validate.data import load_dataset

    with pytest.raises(InputError, match=rf"^{field} must be an integer >= 1"):
        load_dataset(name, **kwargs)


def test_load_dataset_gaussian_checks_its_shape_parameters():
    from ncsim.validate.data import load_dataset

    with pytest.raises(InputError, match="classes must be an integer >= 2"):
        load_dataset("gaussian", classes=3.0)
    with pytest.raises(InputError, match="separation must be a finite number > 0"):
        load_dataset("gaussian", separation="3")
    data = load_dataset("gaussian", per_class=4, classes=3, dim=5)
    assert tuple(data.x_train.shape) == (12, 1, 5)


def _training_log() -> pd.DataFrame:
    """A two-phase training log in the layout train() writes (the columns summarize reads)."""
    return pd.DataFrame({
        "run_id": "r", "time": [1.0, 2.0, 3.0, 4.0], "phase": [1, 1, 2, 2],
        "fn": [1.0, 2.0, 3.0, 3.0], "accuracy": [0.5, 0.9, 1.0, 1.0],
        "nc1_trace": [1.0, 0.1, 0.02, 0.005],
    })


def test_summarize_refuses_a_log_without_its_columns():
    from ncsim.validate.train import summarize

    assert summarize(_training_log())["onset_epoch"] == 4.0
    with pytest.raises(InputError, match="training log lacks column.s. fn;"):
        summarize(_training_log().drop(columns="fn"))
    with pytest.raises(InputError, match="lacks column.s. accuracy, nc1"):
        summarize(_training_log().drop(columns="accuracy"), metric="nc1")
    with pytest.raises(InputError, match="no records"):
        summarize(_training_log().iloc[:0])


def test_predicted_onset_refuses_a_boolean_even_after_a_cached_number():
    """The cache of predicted_onset holds True and 1.0 as one key; the check runs first."""
    from ncsim.theory.prediction import predicted_onset

    args = dict(loss="mse", bias="none", K=3, n=4, d=6, lambda_w=1e-3, init_scale=0.1)
    predicted_onset(lambda_h=1.0, **args)
    with pytest.raises(InputError, match="lambda_h must be a number"):
        predicted_onset(lambda_h=True, **args)


def test_onset_time_refuses_text_series():
    with pytest.raises(InputError, match="values must be a sequence of numbers"):
        onset_time([0.0, 1.0], ["a", "b"])
    with pytest.raises(InputError, match="times must be a sequence of numbers"):
        onset_time("0 1", [1.0, 0.001])


def test_train_refuses_what_is_not_a_config_or_a_dataset():
    from ncsim.validate.data import load_dataset
    from ncsim.validate.train import preset, train

    with pytest.raises(InputError, match="train takes a Dataset"):
        train(preset("cpu-small"), None)
    with pytest.raises(InputError, match="train takes a TrainConfig"):
        train({"arch": "mlp"}, load_dataset("gaussian", per_class=2))


def test_init_arrays_with_a_drawn_kind_are_refused():
    """arrays= with kind 'gaussian' would be ignored without a word."""
    init = InitSpec(kind="gaussian", arrays={"H": np.zeros((2, 2))})
    with pytest.raises(InputError, match="would ignore the arrays given"):
        init.validate(ModelSpec(classes=2, per_class=1, dim=2))
