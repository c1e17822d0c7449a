"""Probes for lines the fast suite left unexecuted (one test per line or group of lines)."""

from __future__ import annotations

import json
import math
import pickle
import signal
import sys
import threading
import types
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from test_study_values import run_frame as _runs
from test_study_values import study_of as _study

from ncsim.errors import InputError
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec


# ----------------------------------------------------------------------------- ncsim/onset.py
def test_crossing_time_of_a_series_without_finite_records_is_nan():
    """crossing_time on records that are all NaN (no finite time/value pair) is NaN."""
    from ncsim.onset import crossing_time

    assert math.isnan(crossing_time(np.array([0.0, 1.0]), np.array([np.nan, np.nan]), 0.5))
    assert math.isnan(crossing_time(np.array([]), np.array([]), 0.5, direction="below"))


# ----------------------------------------------------------------------------- ncsim/spec.py
def test_penultimate_dim_is_d_for_one_layer_and_the_width_for_a_deep_head():
    """penultimate_dim: d for the one-layer UFM, the hidden width for a deep head."""
    assert ModelSpec(dim=7).penultimate_dim == 7
    assert ModelSpec(kind="deep", depth=3, dim=7, width=5).penultimate_dim == 5
    assert ModelSpec(kind="deep", depth=2, dim=7).penultimate_dim == 7  # width defaults to d


def test_cuda_index_beyond_the_device_count_is_refused(monkeypatch):
    """require_device('cuda:3') on a machine with 1 CUDA device names the count."""
    from ncsim.spec import require_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError) as err:
        require_device("cuda:3")
    assert str(err.value) == ("device 'cuda:3' does not exist; this machine has 1 CUDA "
                              "device(s)")
    require_device("cuda")  # index 0 < 1: accepted
    require_device("cuda:0")


def test_mps_without_mps_support_is_refused(monkeypatch):
    """require_device('mps') where torch has no MPS backend is an InputError."""
    from ncsim.spec import require_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InputError) as err:
        require_device("mps")
    assert str(err.value) == ("device 'mps' is not available on this machine; use "
                              "device='cpu' (--device cpu)")


# ----------------------------------------------------------------------------- study/analyses


def _empty_traj():
    return pd.DataFrame({"run_id": pd.Series([], dtype=str), "time": [], "fn": [],
                         "nc1_trace": []})


def test_part_axes_of_an_unknown_part_is_empty():
    """part_axes of a part the study does not have is []."""
    from ncsim.study.analyses import part_axes

    study = _study("invariance", a=["seed", "lambda"])
    assert part_axes(study, "a") == ["seed", "lambda"]
    assert part_axes(study, "nope") == []


def test_trajectory_figure_drops_a_text_label(tmp_path, monkeypatch):
    """_trajectory_fig colours by a label column only when it is numeric (text: no label)."""
    import ncsim.plots
    import ncsim.study.analyses as analyses

    seen = {}

    def fake_figure(sub, info, label_column=None, time_label=None):
        seen["label"] = label_column
        return "fig"

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", fake_figure)
    monkeypatch.setattr(analyses, "_figure", lambda fig, figdir, name: f"figures/{name}.png")
    study = _study("intervention", p=["seed"])
    runs = _runs("p", tag=["x", "y"])
    traj = pd.DataFrame({"run_id": ["p-0", "p-1"], "time": [1.0, 1.0], "fn": [1.0, 2.0],
                         "nc1_trace": [0.5, 0.5]})
    item = analyses._trajectory_fig(study, runs, traj, tmp_path, "p", "tag")
    assert seen["label"] is None
    assert item == ("p: fn and NC1 (trace) over time; dots mark onsets",
                    "figures/trajectories_p.png")
    runs["num"] = [1.0, 2.0]
    analyses._trajectory_fig(study, runs, traj, tmp_path, "p", "num")
    assert seen["label"] == "num"


def test_intervention_skips_a_part_without_an_alpha_column(tmp_path, no_figures):
    """intervention: a part whose runs have no alpha column gives no row (inconclusive)."""
    from ncsim.study.analyses import intervention

    study = _study("intervention", p=["seed"])
    runs = _runs("p", seed=[0, 1], onset_time=[5.0, 6.0], fn_at_onset=[1.0, 1.0])
    sec = intervention(study, runs, _empty_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.reason == ("no rescaled arm with an observed outcome beside a collapsed control "
                          "(alpha = 1)")
    assert sec.tables[0][1].empty


def test_series_threshold_along_an_axis_that_is_no_decay_is_nan():
    """series_threshold along x = 'weight_decay' (not lambda, lambda_w, lambda_h) is NaN."""
    from ncsim.study.analyses import series_threshold

    sub = pd.DataFrame({"lambda_w": [0.01], "lambda_h": [0.01], "depth": [1],
                        "lambda_crit_theory": [0.05], "weight_decay": [1e-3]})
    # Lambda_crit = 0.05; along lambda_W with lambda_H = 0.01 fixed: 0.05^2 / 0.01
    assert series_threshold(sub, "lambda_w") == pytest.approx(0.25, rel=1e-12)
    assert math.isnan(series_threshold(sub, "weight_decay"))


def test_boundary_2d_is_none_when_lambda_crit_cannot_be_computed():
    """_boundary_2d: no curve when the runs lack 'loss' or have K = 1; else xs = lc^2 / ys."""
    from ncsim.study.analyses import _boundary_2d

    sub = pd.DataFrame({"loss": ["mse", "mse"], "classes": [4, 4], "per_class": [9, 9],
                        "depth": [1, 1], "lambda_h": [1e-3, 1e-1]})
    assert _boundary_2d(sub.drop(columns="loss")) is None
    assert _boundary_2d(sub.assign(classes=1)) is None
    xs, ys = _boundary_2d(sub)
    lc = 1 / (4 * 3)  # 1 / (K sqrt(n))
    assert ys[0] == pytest.approx(5e-4) and ys[-1] == pytest.approx(0.2) and len(ys) == 64
    np.testing.assert_allclose(xs, lc ** 2 / ys, rtol=1e-12)


def test_weight_decay_skips_a_part_with_no_decay_axis(tmp_path, no_figures):
    """weight_decay: a part varying only the seed has no lambda series (no row, no figure)."""
    from ncsim.study.analyses import weight_decay

    study = _study("weight_decay", p=["seed"])
    runs = _runs("p", seed=[0, 1], onset_time=[5.0, 6.0], fn_at_onset=[1.0, 1.0])
    sec = weight_decay(study, runs, _empty_traj(), tmp_path)
    assert sec.numbers["series"] == []
    assert sec.figures == []
    assert sec.tables[0][1].empty


# ----------------------------------------------------------------------------- theory/columns
def _deep(loss="mse", bias="none", classes=3, per_class=2, dim=4, depth=2, width=None,
          lambda_w=1e-3, lambda_h=1e-3, lambda_b=0.0, init="gaussian", scale=1.0):
    return RunSpec(model=ModelSpec(kind="deep", loss=loss, bias=bias, classes=classes,
                                   per_class=per_class, dim=dim, depth=depth, width=width),
                   reg=Regularization(lambda_w=lambda_w, lambda_h=lambda_h, lambda_b=lambda_b),
                   init=InitSpec(kind=init, scale=scale))


def test_deep_gaussian_other_width_reg_bias_names_the_mean_mode_assumption():
    """Deep MSE reg-bias gaussian init, width != d: the regime notes the mean mode's basin."""
    from ncsim.theory.columns import theory_columns
    from ncsim.theory.equilibrium import equilibrium

    spec = _deep(bias="reg", lambda_b=1.0, width=6)  # a costly bias: the mean mode is on
    assert float(equilibrium("mse", "reg", 3, 2, 1e-3, 1e-3, 1.0, 2).sigma_mean) > 0
    row = theory_columns(spec)
    assert row["theory_regime"] == (
        "onset not predicted for deep gaussian inits with a width other than d; the "
        "equilibrium columns assume that the mean label mode escapes the origin (its basin "
        "is modelled for the width d only)")
    assert math.isnan(row["onset_time_theory"])


def test_deep_ce_with_two_classes_has_no_lower_rank_to_check(monkeypatch):
    """Deep CE with K = 2: max rank K - 2 = 0, the lower-rank search is not run."""
    import ncsim.theory.lowrank as lowrank
    from ncsim.theory.columns import theory_columns

    def boom(*args, **kwargs):
        raise AssertionError("lower_rank_check must not run for K = 2")

    monkeypatch.setattr(lowrank, "lower_rank_check", boom)
    row = theory_columns(_deep(loss="ce", classes=2, per_class=3, init="spectral"))
    assert "lower_rank" not in str(row["theory_regime"])
    assert math.isfinite(row["lambda_crit_theory"])


def test_lower_rank_state_makes_a_vanishing_onset_nan(monkeypatch):
    """A lower-rank state beating the closed form on a 'vanishing' gaussian run: onset NaN."""
    import ncsim.theory.columns as columns
    import ncsim.theory.lowrank as lowrank

    class Lower:
        rank, objective, fn = 1, -1.0, 0.25

    class Check:
        def beats(self, f, max_rank):
            return True

        def state(self, max_rank, lw_last):
            return Lower()

    monkeypatch.setattr(lowrank, "lower_rank_check", lambda *a, **k: Check())
    eq = types.SimpleNamespace(objective_star=0.5, collapsed=False)
    row = {"theory_regime": "vanishing: x", "onset_time_theory": math.inf,
           "lambda_crit_theory": 0.1}
    columns._lower_rank(_deep(loss="ce", classes=3, dim=4), eq, row, (1e-3, 1e-3), 1e-3)
    assert math.isnan(row["onset_time_theory"])
    assert math.isnan(row["lambda_crit_theory"]) and row["collapsed_theory"] is True
    assert row["theory_regime"].endswith("equilibrium columns NaN; vanishing: x")


def test_aligned_init_on_the_basin_edge_is_reported(monkeypatch):
    """A deep spectral init whose aligned fate is 'undecided': onset NaN, regime basin_edge."""
    import ncsim.theory.columns as columns

    monkeypatch.setattr(columns, "_aligned_fate", lambda *a, **k: "undecided")
    row = columns.theory_columns(_deep(init="spectral", scale=0.5))
    assert math.isnan(row["onset_time_theory"])
    assert row["theory_regime"].startswith(
        "basin_edge: the aligned init lies on the boundary of the origin's basin (the mode "
        "flow settles neither at 0 nor collapsed)")


def _imbalanced_spec(lambda_h=1e-3, bias="reg", lambda_b=1e-3):
    return RunSpec(model=ModelSpec(loss="mse", bias=bias, classes=2, per_class=(3, 1), dim=4),
                   reg=Regularization(lambda_w=1e-3, lambda_h=lambda_h, lambda_b=lambda_b))


def test_imbalanced_run_with_a_zero_feature_decay_has_no_minimiser():
    """Imbalanced one-layer MSE with lambda_H = 0: 'no_minimiser' and no fn*."""
    from ncsim.theory.columns import theory_columns

    row = theory_columns(_imbalanced_spec(lambda_h=0.0))
    assert row["theory_regime"] == "no_minimiser: a zero weight or feature decay"
    assert math.isnan(row["fn_star_theory"])


def test_imbalanced_equilibrium_failure_is_reported_not_raised(monkeypatch):
    """An uncertified imbalanced minimiser (ArithmeticError) becomes an 'error: ...' row."""
    import ncsim.theory.imbalance as imbalance
    from ncsim.theory.columns import theory_columns

    def fail(*args, **kwargs):
        raise ArithmeticError("not certified")

    monkeypatch.setattr(imbalance, "imbalanced_equilibrium", fail)
    row = theory_columns(_imbalanced_spec())
    assert row["theory_regime"] == "error: not certified"
    assert math.isnan(row["fn_star_theory"])


# ----------------------------------------------------------------------------- theory/dynamics
def test_aligned_fate_ode_failure_is_an_arithmetic_error(monkeypatch):
    """aligned_fate: an ODE solve that fails (status -1) raises ArithmeticError naming it."""
    import ncsim.theory.dynamics as dynamics

    monkeypatch.setattr(dynamics, "solve_ivp", lambda *a, **k: types.SimpleNamespace(
        status=-1, message="step size too small", y=np.ones((3, 1))))
    with pytest.raises(ArithmeticError) as err:
        dynamics.aligned_fate("mse", 4, 5, 0.5, (0.04, 0.04, 0.005))
    assert str(err.value) == "the aligned mode ODE failed: step size too small"


def test_aligned_fate_neither_vanished_nor_settled_is_undecided(monkeypatch):
    """aligned_fate: a flow that ends at u = sigma_local / 2 (no event) is 'undecided'."""
    import ncsim.theory.dynamics as dynamics
    from ncsim.theory import modes

    target = float(modes.mse_mode(4, 5, (0.04 * 0.04 * 0.005) ** (1 / 3), 3, 1.0).sigma_local)
    end = np.full((3, 1), (target / 2) ** (1 / 3))
    monkeypatch.setattr(dynamics, "solve_ivp",
                        lambda *a, **k: types.SimpleNamespace(status=0, message="", y=end))
    assert dynamics.aligned_fate("mse", 4, 5, 0.5, (0.04, 0.04, 0.005)) == "undecided"


def test_bracket_widens_down_and_fails_when_nothing_collapses(monkeypatch):
    """_bracket divides lo by 4 until 'origin'; no 'collapse' up to a0 x 2 x 4^29 raises."""
    import ncsim.theory.dynamics as dynamics

    calls = []

    def fate(loss, K, n, a, decays):
        calls.append(a)
        return "origin" if a <= 1 / 32 else "undecided"

    monkeypatch.setattr(dynamics, "aligned_fate", fate)
    with pytest.raises(ArithmeticError) as err:
        dynamics._bracket("mse", 4, 5, (0.1, 0.2), 1.0)
    # lo: 1/2, 1/8, 1/32 (origin); hi: 2 x 4^k for k = 0..29, then once more x 4
    assert calls[:3] == [0.5, 0.125, 0.03125]
    assert len(calls) == 3 + 30
    assert str(err.value) == (f"no aligned init amplitude up to {2.0 * 4 ** 30:g} collapses "
                              "(decays (0.1, 0.2))")


# ----------------------------------------------------------------------------- theory/equilibrium
def test_ragged_input_is_an_input_error_naming_it():
    """broadcast_inputs refuses a ragged nested list, naming the input."""
    from ncsim.theory.equilibrium import _holds_numbers, broadcast_inputs

    assert _holds_numbers([1.0, [2.0, 3.0]]) is True  # left to the broadcast
    with pytest.raises(InputError) as err:
        broadcast_inputs(["K", "n"], [[1.0, [2.0, 3.0]], 2.0])
    assert str(err.value) == "K must be a number or an array of numbers, got [1.0, [2.0, 3.0]]"


# ----------------------------------------------------------------------------- theory/imbalance
def test_uncertified_imbalanced_minimiser_raises():
    """imbalanced_equilibrium with kkt_tol 0 cannot certify a numeric CE solution."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    with pytest.raises(ArithmeticError, match=r"^imbalanced ce minimiser not certified: KKT "
                                              r"residual \S+ \(tol 0e\+00\), f = "):
        imbalanced_equilibrium("ce", "none", [3, 1], 1e-3, 1e-3, kkt_tol=0.0, restarts=1)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("restarts", 0, r"^restarts must be an integer >= 1, got 0$"),
    ("restarts", 1.5, r"^restarts must be an integer >= 1, got 1\.5$"),
    ("seed", -1, r"^seed must be an integer >= 0, got -1$"),
    ("kkt_tol", -1e-6, r"^kkt_tol must be a finite number >= 0, got -1e-06$"),
    ("kkt_tol", math.nan, r"^kkt_tol must be a finite number >= 0, got nan$")])
def test_numeric_options_of_the_imbalanced_equilibrium_are_checked(option, value, message):
    """imbalanced_equilibrium refuses restarts < 1 (which left no numeric solution to read:
    an AttributeError), a negative seed and a negative or NaN kkt_tol, naming the option."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    with pytest.raises(InputError, match=message):
        imbalanced_equilibrium("ce", "none", [3, 1], 1e-3, 1e-3, **{option: value})


# ----------------------------------------------------------------------------- validate/surrogate
def test_closed_form_fn_star_reports_missing_or_failing_theory(monkeypatch):
    """closed_form_fn_star: NaN and a reason when the theory is absent or raises."""
    import ncsim.theory.columns as columns
    from ncsim.validate.surrogate import closed_form_fn_star

    def fail(spec):
        raise RuntimeError("boom")

    monkeypatch.setattr(columns, "theory_columns", fail)
    fn, why = closed_form_fn_star(RunSpec())
    assert math.isnan(fn) and why == "theory failed: boom"
    monkeypatch.setitem(sys.modules, "ncsim.theory.columns", None)
    fn, why = closed_form_fn_star(RunSpec())
    assert math.isnan(fn) and why == "ncsim.theory not available"


# ----------------------------------------------------------------------------- models/classmeans
def test_class_means_form_needs_from_parameters_first():
    """parameters() and value() before from_parameters raise RuntimeError."""
    from ncsim.models import Penalties
    from ncsim.models.classmeans import ClassMeansObjective

    model = ModelSpec(loss="mse", classes=2, per_class=2, dim=3)
    done = ClassMeansObjective(model, "cpu", torch.float64)
    torch.manual_seed(0)
    state = done.from_parameters(torch.randn(1, 3, 4, dtype=torch.float64),
                                 torch.randn(1, 2, 3, dtype=torch.float64), None)
    fresh = ClassMeansObjective(model, "cpu", torch.float64)
    msg = "call from_parameters first: the runs' deviations are not set"
    with pytest.raises(RuntimeError) as err:
        fresh.parameters(state)
    assert str(err.value) == msg
    pen = Penalties(torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                    torch.zeros(1, dtype=torch.float64))
    with pytest.raises(RuntimeError) as err:
        fresh.value(state, pen)
    assert str(err.value) == msg


# ----------------------------------------------------------------------------- study/executors
def test_end_with_parent_is_a_no_op_off_linux(monkeypatch):
    """_end_with_parent off Linux loads no libc."""
    import ctypes

    from ncsim.study import executors

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: pytest.fail("CDLL loaded"))
    assert executors._end_with_parent() is None


def test_end_with_parent_without_prctl_returns(monkeypatch):
    """_end_with_parent: a libc that cannot be loaded is no error (and no exit)."""
    import ctypes
    import os

    from ncsim.study import executors

    def no_libc(*args, **kwargs):
        raise OSError("no libc")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail("exited"))
    assert executors._end_with_parent() is None


def test_end_with_parent_exits_when_the_parent_already_died(monkeypatch):
    """_end_with_parent: a parent pid that changed around prctl ends the worker (status 1)."""
    import ctypes
    import os

    from ncsim.study import executors

    requests, exits = [], []
    libc = types.SimpleNamespace(prctl=lambda *args: requests.append(args))
    pids = iter([100, 1])
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    monkeypatch.setattr(os, "getppid", lambda: next(pids))
    monkeypatch.setattr(os, "_exit", exits.append)
    executors._end_with_parent()
    assert requests == [(1, int(signal.SIGTERM))]
    assert exits == [1]


def test_sigterm_handler_is_not_set_outside_the_main_thread():
    """_workers_end_on_sigterm in a worker thread leaves the SIGTERM handler alone."""
    from ncsim.study.executors import _workers_end_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with _workers_end_on_sigterm():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


def test_dask_worker_plugin_runs_the_worker_setup(monkeypatch):
    """The Dask worker plugin's setup() calls _init_worker."""
    from ncsim.study import executors

    calls = []
    monkeypatch.setattr(executors, "_init_worker", lambda: calls.append(1))
    fake = types.SimpleNamespace(WorkerPlugin=object)
    plugin = executors._worker_setup(fake)
    plugin.setup(worker=None)
    assert calls == [1]


# ----------------------------------------------------------------------------- study/report, store
def _record(**changes):
    record = {"name": "s", "title": "S", "question": "q?", "claim": "c.",
              "analysis": "invariance", "metrics": [], "source": "s.toml", "quick": False,
              "notes": "", "quick_note": "", "run_ids": [],
              "parts": [{"name": "a", "model": "simulated", "grid": {"seed": [0]}}]}
    record.update(changes)
    return record


@pytest.mark.parametrize(("changes", "why"), [
    ({"quick": "yes"}, "'quick' is not true or false"),
    ({"parts": [1]}, "parts[0] is not a table"),
    ({"parts": [{"name": "a", "model": "simulated", "grid": {"seed": [0]}, "fixed": []}]},
     "parts[0]: 'fixed' is not a table"),
])
def test_damaged_study_json_is_named(tmp_path, changes, why):
    """A study.json with a field of the wrong kind is an InputError saying which."""
    from ncsim.study.report import _load_study
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.study_path.write_text(json.dumps(_record(**changes)), encoding="utf-8")
    with pytest.raises(InputError) as err:
        _load_study(store)
    assert str(err.value) == store.damaged_study(why)
    assert f"is damaged ({why})" in str(err.value)


def test_study_json_missing_a_required_field_is_damaged(tmp_path):
    """A study.json without 'name' (Study() lacks an argument) is a damaged study."""
    from ncsim.study.report import _load_study
    from ncsim.study.store import Store

    store = Store(tmp_path)
    record = _record()
    del record["name"]
    store.study_path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(InputError) as err:
        _load_study(store)
    assert str(err.value).startswith(f"{store.study_path} is damaged (")
    assert "name" in str(err.value)


def test_study_json_that_is_not_an_object_is_damaged(tmp_path):
    """Store.study(): a JSON list in study.json is 'not a JSON object'."""
    from ncsim.study.store import Store

    store = Store(tmp_path)
    store.study_path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError) as err:
        store.study()
    assert str(err.value) == store.damaged_study("not a JSON object")


# ----------------------------------------------------------------------------- study/spec
def _raw(**changes):
    raw = {"name": "s", "title": "S", "question": "q?", "claim": "c.", "analysis": "invariance",
           "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 100.0},
           "parts": [{"name": "a", "model": "simulated", "grid": {"seed": [0]}}]}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize(("raw", "quick", "message"), [
    (_raw(parts=[{"name": "a", "model": "simulated", "grid": {"seed": 3}}]), False,
     "s.toml: key 'parts.a.grid.seed': a grid axis must be a non-empty list or a range string "
     "like '1e-4..1e-1:8', got 3"),
    (_raw(claim=None), False,
     "s.toml: key 'claim': missing; a study needs: name, title, question, claim, analysis, "
     "parts"),
    (_raw(parts=[]), False, "s.toml: key 'parts': empty; give at least one [[parts]] table"),
    (_raw(parts=[{"name": "a", "grid": {"seed": [0]}}]), False,
     "s.toml: key 'parts.a.model': missing; allowed: "),
    (_raw(), True, "s.toml: key 'quick': missing; every study needs a [quick] variant"),
])
def test_study_file_errors_name_the_key(raw, quick, message):
    """parse_study refuses a malformed study with a message naming file and key."""
    from ncsim.study.spec import parse_study

    with pytest.raises(InputError) as err:
        parse_study(raw, "s.toml", quick)
    assert str(err.value).startswith(message)


# ----------------------------------------------------------------------------- validate/*
def test_validate_analyze_without_logs_exits_2():
    """'ncsim validate analyze' with no log file is a usage error (exit 2, one line)."""
    from click.testing import CliRunner

    from ncsim.validate.cli import validate

    result = CliRunner().invoke(validate, ["analyze"])
    assert result.exit_code == 2
    assert "give at least one log file (paper CSV or ncsim log)" in result.output


def test_run_json_without_a_config_table_is_not_compared(tmp_path):
    """_same_training: a run.json whose 'config' is no table pairs with any checkpoint."""
    from ncsim.validate.compare import _same_training

    (tmp_path / "run.json").write_text(json.dumps({"config": 3}))
    assert _same_training(tmp_path, tmp_path / "c.pt", {"seed": 1}) is None
    (tmp_path / "run.json").write_text(json.dumps({"config": {"seed": 0}}))
    with pytest.raises(InputError, match="comes from another training than"):
        _same_training(tmp_path, tmp_path / "c.pt", {"seed": 1})


def test_response_calibration_of_a_batchnorm_network_says_it_is_approximate(tmp_path):
    """compare_run on a ResNet-20 (BatchNorm) run: the calibration note starts with the
    BatchNorm caveat, followed by the response fit's own note (here the weak-fit one)."""
    from compare_helpers import train_two_phase

    from ncsim.validate import surrogate as sg
    from ncsim.validate.compare import compare_run
    from ncsim.validate.train import load_checkpoint

    args = {"name": "gaussian", "per_class": 4, "seed": 0, "classes": 3, "dim": 16}
    train_two_phase(tmp_path, args, "bn", (1, 2), arch="resnet20")
    row = compare_run(tmp_path, per_class=2, horizon=2.0, wd_horizon=1e-3,
                      max_steps=500)["table"].iloc[0]
    model, _ = load_checkpoint(tmp_path / "checkpoints" / "phase1_end.pt")
    assert sg.has_batch_norm(model)
    caveat = ("BatchNorm evaluated with running statistics (training steps use batch "
              "statistics): eta_H and lambda_H are approximate")
    fit_note = sg.weak_fit_note(row["calibration_r2_data"])
    assert row["calibration_note"] == "; ".join(filter(None, (caveat, fit_note)))
    assert row["lambda_h_rule"].startswith("response")


def test_ragged_cifar_batch_is_an_input_error(tmp_path):
    """A CIFAR batch whose labels are ragged lists is refused naming the file."""
    from ncsim.validate.data import CIFAR_HINT, _cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                   b"labels": [[0], [1, 2]]}))
    with pytest.raises(InputError) as err:
        _cifar_batch(path)
    assert str(err.value) == (f"{path} is not a CIFAR-10 python batch (its data or labels are "
                              f"no arrays); {CIFAR_HINT}")


def test_zip_log_is_read_without_the_record_check(tmp_path):
    """A .zip CSV log skips the whole-record check and is read by pandas."""
    from ncsim.validate import logs

    header = "epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
    path = tmp_path / "width128_s0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("width128_s0.csv", header + "0,1,0.5,0.45,,,,1.5\n10,2,0.99,0.97,0.004,"
                    "0.02,0.3,2.5")  # no final line end: refused for a plain CSV
    assert logs._check_whole_records(path) is False  # not checked
    out = logs.read_log(path)
    assert list(out["time"]) == [0.0, 10.0]
    assert out["nc1_trace"].iloc[1] == 0.004 and out["fn"].iloc[1] == 2.5


def test_small_cnn_last_hidden_is_its_hidden_layer():
    """SmallCNN.last_hidden is the Linear layer before the classifier."""
    from ncsim.validate.networks import SmallCNN

    net = SmallCNN(input_shape=(1, 8, 8), classes=3, width=5)
    assert net.last_hidden is net.hidden
    assert net.last_hidden.out_features == 5


def test_records_epoch_beyond_the_training_is_false():
    """records_epoch of an epoch after the last phase (not a multiple of nc_every) is False."""
    from ncsim.validate.train import preset

    config = preset("mlp", epochs=(3, 4), nc_every=100, nc_dense=1)
    assert config.records_epoch(7) is True  # the last epoch of the last phase
    assert config.records_epoch(8) is False


def test_moved_epoch_beyond_the_phases_keeps_its_offset():
    """_moved_epoch: an epoch past the old phases lies as far past the new ones."""
    from ncsim.validate.train import Phase, _moved_epoch

    old = (Phase("ce", 10), Phase("mse", 10))
    new = (Phase("ce", 5), Phase("mse", 20))
    assert _moved_epoch(23, old, new) == 25 + 3
    assert _moved_epoch(15, old, new) == 5 + 10


def test_unknown_training_preset_is_an_input_error():
    """preset('bogus') names the allowed presets."""
    from ncsim.validate.train import preset

    with pytest.raises(InputError) as err:
        preset("bogus")
    assert str(err.value) == "unknown training preset 'bogus'; allowed: mlp, resnet20, cpu-small"


def test_missing_checkpoint_is_an_input_error(tmp_path):
    """load_checkpoint of a missing file says it does not exist."""
    from ncsim.validate.train import load_checkpoint

    path = tmp_path / "none.pt"
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"checkpoint {path} does not exist"


# ----------------------------------------------------------------------------- cli_errors
def test_check_out_file_of_none_is_a_no_op():
    """check_out_file(None): no output file, nothing to check."""
    from ncsim.cli_errors import check_out_file

    assert check_out_file(None) is None
    with pytest.raises(InputError, match=r"^--out: empty path; give a file name$"):
        check_out_file("  ")
