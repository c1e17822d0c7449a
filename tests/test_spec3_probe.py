"""Strict checks of ncsim.spec found by a third mutation probe: per-element checks of tuple
fields, the zero and sign boundaries of the solver fields, the exact refusals of the forced
reductions, of cuda_graphs and of CUDA devices, equality of array inits, and the defaults."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.spec import (
    DEFAULT_REG_LAMBDA_B,
    DEFAULT_TOLERANCES,
    ONSET_METRICS,
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
    require_device,
)

DEEP = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4)


def _refused(spec: RunSpec, message: str) -> None:
    """``spec.validate()`` raises InputError whose whole one-line text is ``message``."""
    with pytest.raises(InputError) as err:
        spec.validate()
    assert str(err.value) == message


# ----------------------------------------------------------------------------- tuple fields


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf")])
def test_every_layer_decay_of_a_tuple_is_checked(bad):
    """A bad lambda_w in the second place of a per-layer tuple is refused, naming the value."""
    spec = RunSpec(model=DEEP, reg=Regularization(lambda_w=(1e-3, bad)))
    _refused(spec, f"lambda_w must be a finite number >= 0, got {bad!r}")
    RunSpec(model=DEEP, reg=Regularization(lambda_w=(1e-3, 0.0))).validate()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_every_layer_time_scale_of_a_tuple_is_checked(bad):
    """A bad eta_w in the second place of a per-layer tuple is refused, naming the value."""
    spec = RunSpec(model=DEEP, time_scale=TimeScale(eta_w=(1.0, bad)))
    _refused(spec, f"time-scale factors must be > 0, got eta_w = {bad!r}")
    RunSpec(model=DEEP, time_scale=TimeScale(eta_w=(1.0, 1e-6))).validate()


# ----------------------------------------------------------------------------- leaky slope


@pytest.mark.parametrize("slope", [0.0, 0.005])
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_a_slope_below_the_default_is_refused_without_leaky_relu(slope, activation):
    """leaky_slope 0 or 0.005 beside another activation would be ignored: refused exactly."""
    model = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4,
                      activation=activation, leaky_slope=slope)
    _refused(RunSpec(model=model),
             f"leaky_slope {slope} sets the 'leaky_relu' activation, got activation "
             f"'{activation}'; drop the slope or use leaky_relu")


# ----------------------------------------------------------------------------- solver bounds


@pytest.mark.parametrize("t_end", [0.0, 0, -0.0, True, float("nan")])
def test_zero_or_non_number_horizon_is_refused_as_a_horizon(t_end):
    """t_end 0 (or a bool, NaN) is refused by the t_end check, not by the record check."""
    _refused(RunSpec(solver=SolverSpec(t_end=t_end)),
             f"t_end must be a finite number > 0, got {SolverSpec(t_end=t_end).t_end!r}")


@pytest.mark.parametrize("method", ["gd", "rk4"])
@pytest.mark.parametrize("dt", [0.0, 0, float("inf"), float("nan"), True, None])
def test_fixed_step_solver_needs_a_positive_finite_step(method, dt):
    """gd and rk4 refuse dt 0, inf, NaN, a bool and None with the step message."""
    _refused(RunSpec(solver=SolverSpec(method=method, dt=dt)),
             f"solver '{method}' needs a step dt > 0 (e.g. dt=0.1, --dt 0.1)")
    RunSpec(solver=SolverSpec(method=method, dt=np.float32(0.5))).validate()


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
@pytest.mark.parametrize("dt", [0.0, -0.0, float("inf"), True])
def test_adaptive_first_step_must_be_positive_when_given(method, dt):
    """An adaptive method's optional first step dt = 0 (or inf, a bool) is refused."""
    _refused(RunSpec(solver=SolverSpec(method=method, dt=dt)),
             f"dt must be > 0, got {SolverSpec(dt=dt).dt!r}")
    RunSpec(solver=SolverSpec(method=method, dt=1e-12)).validate()


@pytest.mark.parametrize("tol", [-1e-3, -0.0 - 1e-300, float("nan"), float("-inf"), True])
def test_negative_or_non_number_vanish_tol_is_refused(tol):
    """vanish_tol below 0 (or NaN, -inf, a bool) is refused with the [0, 1) message."""
    _refused(RunSpec(solver=SolverSpec(vanish_tol=tol)),
             f"vanish_tol must lie in [0, 1), got {tol!r}")
    RunSpec(solver=SolverSpec(vanish_tol=0.999)).validate()


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_cuda_graphs_on_the_cpu_is_refused_for_adaptive_methods_too(method):
    """cuda_graphs with an adaptive method on the CPU is refused naming method and device."""
    _refused(RunSpec(solver=SolverSpec(method=method, cuda_graphs=True)),
             f"cuda_graphs needs an adaptive solver (dopri5, tsit5) on a CUDA device, got "
             f"'{method}' on 'cpu': use device='cuda' (--device cuda) or drop cuda_graphs "
             f"(--cuda-graphs)")


# ----------------------------------------------------------------------------- devices


def test_cuda_index_equal_to_the_device_count_is_refused(monkeypatch):
    """With 2 CUDA devices, cuda:1 exists and cuda:2 (index = count) does not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    require_device("cuda:1")
    with pytest.raises(InputError) as err:
        require_device("cuda:2")
    assert str(err.value) == "device 'cuda:2' does not exist; this machine has 2 CUDA device(s)"


def test_cuda_without_a_cuda_device_is_refused_as_unavailable(monkeypatch):
    """Where torch sees no CUDA device, 'cuda' is refused as unavailable, pointing to the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    _refused(RunSpec(solver=SolverSpec(device="cuda")),
             "device 'cuda' is not available (torch sees no CUDA device); use device='cpu' "
             "(--device cpu)")


# ----------------------------------------------------------------------------- reductions


def test_classes_reduction_of_a_deep_mse_head_is_refused():
    """The class-means form needs the one-layer UFM: a deep MSE head is refused exactly."""
    model = ModelSpec(kind="deep", depth=2, loss="mse", classes=3, per_class=2, dim=4)
    _refused(RunSpec(model=model, solver=SolverSpec(reduction="classes")),
             "reduction 'classes' needs the one-layer UFM with MSE loss (model 'ufm', loss "
             "'mse'); use 'auto' or 'none'")


def test_gram_below_full_rank_message_names_each_value_in_its_place():
    """The below-N+K refusal lists lambda_w, lambda_h, eta_w and eta_h each with its own value."""
    spec = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.0, lambda_h=2e-3),
                   time_scale=TimeScale(eta_w=2.0, eta_h=0.5),
                   solver=SolverSpec(reduction="gram"))
    _refused(spec, "reduction 'gram' below d = N + K = 9 needs lambda_w > 0, lambda_h > 0 and "
                   "eta_w = eta_h, got lambda_w = 0, lambda_h = 0.002, eta_w = 2, eta_h = 0.5: "
                   "otherwise directions outside rank d do not decay and the Gram flow follows "
                   "a wider model; use reduction 'none' or 'auto', or d >= 9")


# ----------------------------------------------------------------------------- onset


@pytest.mark.parametrize("metric", ["nc1_trace", "nc1", "nc2_etf", "nc2_angle", "nc3",
                                    "nc3_paper", "cdnv"])
def test_every_documented_onset_metric_is_accepted(metric):
    """Each of the seven onset metrics validates."""
    RunSpec(onset=OnsetSpec(metric=metric)).validate()


def test_unknown_onset_metric_lists_all_seven():
    """An unknown metric's refusal lists the seven metrics in order."""
    assert len(ONSET_METRICS) == 7
    _refused(RunSpec(onset=OnsetSpec(metric="nc2")),
             "unknown onset metric 'nc2'; allowed: nc1_trace, nc1, nc2_etf, nc2_angle, nc3, "
             "nc3_paper, cdnv")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": True}, "onset threshold must be a finite number > 0, got True"),
    ({"threshold": float("nan")}, "onset threshold must be a finite number > 0, got nan"),
    ({"threshold": -0.5}, "onset threshold must be a finite number > 0, got -0.5"),
    ({"stay": True}, "onset 'stay' must be an integer >= 1, got True"),
    ({"stay": -1}, "onset 'stay' must be an integer >= 1, got -1"),
    ({"interpolate": None}, "onset 'interpolate' must be True or False, got None"),
])
def test_onset_boundaries_are_refused_exactly(kwargs, message):
    """Bools for numbers, NaN, negatives and None for the flag are refused, one exact line."""
    _refused(RunSpec(onset=OnsetSpec(**kwargs)), message)


# ----------------------------------------------------------------------------- equality


def test_array_inits_compare_and_hash_without_their_arrays():
    """InitSpec equality and hash ignore the arrays (numpy contents never make == raise);
    the run id tells such runs apart, not the spec's equality."""
    a = InitSpec(kind="arrays", arrays={"H": np.zeros((4, 6)), "W": [np.ones((3, 4))]})
    b = InitSpec(kind="arrays", arrays={"H": np.ones((4, 6)), "W": [np.zeros((3, 4))]})
    assert a == b and hash(a) == hash(b)
    assert a != InitSpec(kind="arrays", seed=1, arrays=a.arrays)
    ra, rb = RunSpec(init=a), RunSpec(init=b)
    assert ra == rb and hash(ra) == hash(rb) and ra.batch_key() == rb.batch_key()
    assert len({ra, rb}) == 1


# ----------------------------------------------------------------------------- defaults


def test_defaults_are_the_documented_command_line_defaults():
    """RunSpec() holds the defaults the command line documents (K 10, n 20, d 32, decays 5e-4,
    init scale 0.1, t_end 2e4, 200 records, float64 tolerances) and validates."""
    spec = RunSpec().validate()
    m, s = spec.model, spec.solver
    assert (m.kind, m.loss, m.bias, m.classes, m.per_class, m.dim, m.depth, m.width) == (
        "ufm", "ce", "none", 10, 20, 32, 1, None)
    assert (m.activation, m.leaky_slope) == ("linear", 0.01)
    assert (spec.reg.lambda_w, spec.reg.lambda_h, spec.reg.lambda_b) == (5e-4, 5e-4, 0.0)
    assert (spec.init.kind, spec.init.scale, spec.init.seed) == ("gaussian", 0.1, 0)
    assert (s.t_end, s.records, s.t_first, s.dt) == (2e4, 200, None, None)
    assert (s.rtol, s.atol) == DEFAULT_TOLERANCES["float64"] == (1e-8, 1e-10)
    assert DEFAULT_TOLERANCES["float32"] == (1e-5, 1e-7)
    assert DEFAULT_REG_LAMBDA_B == 1e-3
    assert (spec.onset.metric, spec.onset.threshold, spec.onset.stay) == ("nc1_trace", 0.01, 1)
    times = s.record_times()
    assert times.shape == (200,) and times[0] == 0.0 and times[1] == pytest.approx(1e-2)
    assert times[-1] == pytest.approx(2e4, rel=1e-14)
    ratios = times[2:] / times[1:-1]
    np.testing.assert_allclose(ratios, (2e4 / 1e-2) ** (1 / 198), rtol=1e-12)


def test_float32_defaults_sit_above_the_float32_rtol_floor():
    """The float32 default pair validates in float32 (its rtol is above 8 eps there)."""
    rtol, atol = DEFAULT_TOLERANCES["float32"]
    RunSpec(solver=SolverSpec(dtype="float32", rtol=rtol, atol=atol)).validate()
    with pytest.raises(InputError, match=re.escape("(usual in float32: 1e-05) or dtype float64")):
        RunSpec(solver=SolverSpec(dtype="float32", rtol=rtol / 20)).validate()
