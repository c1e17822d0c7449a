"""Probe tests of ncsim.study.spec: a run's identity (execution-only settings, dataset defaults)."""

import inspect

import pytest

from ncsim.errors import InputError
from ncsim.study.spec import RunDesc, dataset_args, parse_study, run_spec, train_config
from ncsim.validate.data import load_dataset

SIM = {"classes": 3, "per_class": 4, "dim": 8, "t_end": 300.0, "lambda": 1e-2}
TRAINED = {"dataset": "gaussian", "preset": "mlp", "seed": 0, "epochs": [1, 1]}


def test_dataset_args_defaults_are_load_dataset_defaults():
    """A trained run's data defaults (seed, classes, dim, separation) are load_dataset's own."""
    defaults = {k: p.default for k, p in inspect.signature(load_dataset).parameters.items()}
    args = dataset_args({})
    assert args["name"] == "gaussian"
    assert args["per_class"] is None and args["test_per_class"] is None
    for key in ("seed", "classes", "dim", "separation"):
        assert args[key] == defaults[key], key
    assert args["separation"] == 3.0


def test_dataset_args_maps_data_keys():
    """data_classes, data_dim and separation of a study reach load_dataset as classes/dim."""
    args = dataset_args(
        {
            "dataset": "gaussian",
            "data_classes": 4,
            "data_dim": 6,
            "separation": 1.5,
            "seed": 7,
            "per_class": 9,
            "test_per_class": 2,
        }
    )
    assert args == {
        "name": "gaussian",
        "per_class": 9,
        "test_per_class": 2,
        "seed": 7,
        "classes": 4,
        "dim": 6,
        "separation": 1.5,
    }


def _trained_ids(**fixed):
    """Run ids of a one-part trained study (seeds 0 and 1) with ``fixed`` parameters."""
    part = {"name": "a", "model": "trained", **TRAINED, **fixed, "grid": {"seed": [0, 1]}}
    part.pop("seed")
    raw = {
        "name": "s",
        "title": "t",
        "question": "q",
        "claim": "c",
        "analysis": "grid",
        "parts": [part],
    }
    return [run.run_id for run in parse_study(raw, "s.toml").runs()]


def test_gaussian_separation_default_written_out_is_the_same_run():
    """separation = 3.0 (or 3) written out is the default Gaussian run; 2.0 is another."""
    plain = RunDesc("p", "trained", TRAINED).run_id
    assert RunDesc("p", "trained", {**TRAINED, "separation": 3.0}).run_id == plain
    assert RunDesc("p", "trained", {**TRAINED, "separation": 2.0}).run_id != plain
    study = _trained_ids()
    assert _trained_ids(separation=3.0) == study
    assert _trained_ids(separation=3) == study  # checked to a float, so the same run
    assert set(_trained_ids(separation=2.0)).isdisjoint(study)


def test_separation_does_not_enter_the_id_of_a_real_dataset():
    """The Gaussian mixture's separation is not used by digits, so it leaves the id alone."""
    digits = {**TRAINED, "dataset": "digits"}
    plain = RunDesc("p", "trained", digits).run_id
    assert RunDesc("p", "trained", {**digits, "separation": 2.0}).run_id == plain


def test_invalid_simulated_params_hash_without_chunk():
    """Invalid parameters hash as written, still without chunk (how runs are batched)."""
    bad = {**SIM, "dim": 0}
    with pytest.raises(InputError, match=r"dim d must be an integer >= 1"):
        run_spec(bad)
    first = RunDesc("p", "simulated", {**bad, "chunk": 1}).run_id
    assert RunDesc("p", "simulated", {**bad, "chunk": 5}).run_id == first
    assert RunDesc("p", "simulated", bad).run_id == first
    assert RunDesc("p", "simulated", {**bad, "dim": -1}).run_id != first


def test_invalid_trained_params_hash_without_chunk_and_data_root():
    """Invalid trained parameters hash as written, without chunk and data_root."""
    bad = {**TRAINED, "lr": -1.0}
    with pytest.raises(InputError, match=r"lr must be a finite number >= 0"):
        train_config(bad)
    first = RunDesc("p", "trained", bad).run_id
    assert RunDesc("p", "trained", {**bad, "chunk": 4, "data_root": "data"}).run_id == first
    assert RunDesc("p", "trained", {**bad, "lr": -2.0}).run_id != first


def test_valid_runs_ignore_chunk_and_data_root():
    """For valid runs too, chunk and data_root never change the id (simulated and trained)."""
    sim = RunDesc("p", "simulated", SIM).run_id
    assert RunDesc("p", "simulated", {**SIM, "chunk": 3}).run_id == sim
    trained = RunDesc("p", "trained", TRAINED).run_id
    assert RunDesc("p", "trained", {**TRAINED, "chunk": 2, "data_root": "x"}).run_id == trained
