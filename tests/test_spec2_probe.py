"""Strict checks of ncsim.spec found by a second mutation probe: the exact refusal at each
boundary of a field, the derived shapes and counts, the run-table row and the batch key."""

from __future__ import annotations

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
    gram_min_dim,
    spectral_rank,
)

DEEP = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4)


def _refused(spec: RunSpec, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        spec.validate()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- model


def test_ufm_of_depth_zero_is_refused_when_built():
    """A one-layer UFM of any depth but 1 (0 included) is refused by the constructor."""
    for depth in (0, -1, 3):
        with pytest.raises(InputError, match=rf"^model 'ufm' has depth 1, got depth {depth}; "):
            ModelSpec(depth=depth)
    assert ModelSpec(depth=1).depth == 1


def test_one_class_is_refused():
    """K = 1 is refused (K >= 2), K = 2 passes."""
    _refused(RunSpec(model=ModelSpec(classes=1, per_class=2, dim=4)),
             r"^classes K must be an integer >= 2, got 1$")
    RunSpec(model=ModelSpec(classes=2, per_class=2, dim=4)).validate()


@pytest.mark.parametrize("per_class", [0, (2, 0, 2), -1])
def test_empty_class_is_refused(per_class):
    """A class count of 0 (or below), alone or in a tuple, is refused."""
    _refused(RunSpec(model=ModelSpec(classes=3, per_class=per_class, dim=4)),
             r"^samples per class \(per_class; --class-counts on the command line\) must be "
             r"integers >= 1, got ")


def test_more_class_counts_than_classes_is_refused():
    """Three class counts for K = 2 are refused as two counts for K = 3 are."""
    _refused(RunSpec(model=ModelSpec(classes=2, per_class=(2, 3, 4), dim=4)),
             r"^per_class gives 3 class counts but K = 2$")


def test_deep_head_of_depth_zero_is_refused():
    """A deep head needs depth >= 1: depth 0 is refused with the depth message."""
    _refused(RunSpec(model=ModelSpec(kind="deep", depth=0, classes=3, per_class=2, dim=4)),
             r"^depth must be an integer >= 1, got 0$")


def test_hidden_width_zero_is_refused():
    """width 0 of a deep head is refused (width >= 1)."""
    _refused(RunSpec(model=ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4,
                                     width=0)),
             r"^width must be an integer >= 1, got 0$")


def test_activation_on_the_ufm_names_the_deep_model():
    """An activation on the one-layer UFM is refused saying it needs kind='deep'."""
    _refused(RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4, activation="relu")),
             r"^an activation needs kind='deep' \(--model deep; the one-layer UFM has none\)$")


@pytest.mark.parametrize("slope", [-0.1, float("nan"), float("inf"), "0.1"])
def test_bad_leaky_slope_is_refused(slope):
    """leaky_relu's slope must be a finite number >= 0."""
    model = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4,
                      activation="leaky_relu", leaky_slope=slope)
    _refused(RunSpec(model=model), r"^leaky_slope must be a finite number >= 0, got ")


def test_leaky_slope_is_refused_beside_every_other_activation():
    """A slope other than 0.01 is refused with 'linear' and 'tanh' too; with leaky_relu, 0 and
    0.3 pass."""
    for act in ("linear", "tanh"):
        model = ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4, activation=act,
                          leaky_slope=0.3)
        _refused(RunSpec(model=model),
                 rf"^leaky_slope 0\.3 sets the 'leaky_relu' activation, got activation '{act}'")
    for slope in (0.0, 0.3):
        RunSpec(model=ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4,
                                activation="leaky_relu", leaky_slope=slope)).validate()


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_layer_shapes_chain_from_d_to_k(depth):
    """A depth-L head has L matrices: (m, d), L-2 of (m, m), then (K, m); the penultimate
    features have the hidden width."""
    model = ModelSpec(kind="deep", depth=depth, classes=3, per_class=2, dim=4, width=7)
    shapes = model.layer_shapes
    assert shapes == [(7, 4)] + [(7, 7)] * (depth - 2) + [(3, 7)]
    assert len(shapes) == depth
    assert all(a[1] == b[0] for a, b in zip(shapes[1:], shapes[:-1], strict=True))
    assert model.penultimate_dim == 7
    assert ModelSpec(kind="deep", depth=depth, classes=3, per_class=2, dim=4).penultimate_dim == 4
    assert ModelSpec(classes=3, per_class=2, dim=4).penultimate_dim == 4
    assert ModelSpec(classes=3, per_class=2, dim=4).layer_shapes == [(3, 4)]


def test_balanced_means_all_counts_equal():
    """Counts with two distinct values are not balanced; one value (or an int) is."""
    assert ModelSpec(classes=3, per_class=(2, 2, 2)).balanced
    assert ModelSpec(classes=3, per_class=2).balanced
    assert not ModelSpec(classes=3, per_class=(2, 3, 2)).balanced
    assert not ModelSpec(classes=3, per_class=(2, 3, 4)).balanced
    model = ModelSpec(classes=3, per_class=(2, 3, 4))
    assert model.class_counts == (2, 3, 4) and model.num_samples == 9


# ----------------------------------------------------------------------------- reg, init, eta


def test_regularised_bias_needs_a_positive_decay():
    """bias 'reg' with lambda_b = 0 is refused; a decay > 0 passes."""
    model = ModelSpec(bias="reg", classes=3, per_class=2, dim=4)
    _refused(RunSpec(model=model, reg=Regularization(lambda_b=0.0)),
             r"^bias 'reg' needs lambda_b > 0 \(use bias 'free' for 0\)$")
    RunSpec(model=model, reg=Regularization(lambda_b=1e-3)).validate()


@pytest.mark.parametrize("bias", ["none", "free"])
def test_bias_decay_without_a_regularised_bias_is_refused(bias):
    """lambda_b > 0 with bias 'none' or 'free' would be ignored: refused naming the bias."""
    model = ModelSpec(bias=bias, classes=3, per_class=2, dim=4)
    _refused(RunSpec(model=model, reg=Regularization(lambda_b=0.5)),
             rf"^lambda_b = 0\.5 needs bias='reg' \(--bias reg\), got bias '{bias}'$")


def test_init_scale_zero_and_negative_seed_are_refused():
    """Init scale 0 and seed -1 are refused; seed 2^32 - 1 passes."""
    _refused(RunSpec(init=InitSpec(scale=0.0)),
             r"^init scale must be a finite number > 0, got 0\.0$")
    _refused(RunSpec(init=InitSpec(seed=-1)), r"^seed must be an integer in \[0, 2\^32\), got -1 ")
    RunSpec(init=InitSpec(seed=2**32 - 1)).validate()


def test_spectral_rank_counts_k_modes_only_for_mse_without_bias():
    """K modes for MSE without bias; K - 1 for CE and for MSE with a bias."""
    for loss, bias, modes in (("mse", "none", 4), ("mse", "free", 3), ("mse", "reg", 3),
                              ("ce", "none", 3), ("ce", "free", 3)):
        assert spectral_rank(ModelSpec(loss=loss, bias=bias, classes=4, per_class=2)) == modes


def test_spectral_init_of_mse_without_bias_needs_k_dimensions():
    """MSE without bias: a spectral init needs d >= K (the etf init only K - 1)."""
    model = ModelSpec(loss="mse", classes=3, per_class=2, dim=2)
    _refused(RunSpec(model=model, init=InitSpec(kind="spectral")),
             r"^init 'spectral' needs d \(and width\) >= 3 for K = 3, got d = 2$")
    RunSpec(model=model, init=InitSpec(kind="etf")).validate()
    RunSpec(model=ModelSpec(loss="mse", bias="free", classes=3, per_class=2, dim=2),
            init=InitSpec(kind="spectral")).validate()


def test_array_init_needs_the_features():
    """kind 'arrays' without arrays or without 'H' is refused; a drawn init with arrays too."""
    for arrays in (None, {"W": [np.zeros((3, 4))]}):
        _refused(RunSpec(init=InitSpec(kind="arrays", arrays=arrays)),
                 r"^init 'arrays' needs arrays=\{'H': \.\.\., 'W': \[\.\.\.\], 'b': \.\.\.\}$")
    _refused(RunSpec(init=InitSpec(kind="etf", arrays={"H": np.zeros((4, 6))})),
             r"^init 'etf' draws its own start and would ignore the arrays given; use kind "
             r"'arrays' to start from them, or drop arrays=$")


def test_per_layer_values_follow_the_depth():
    """per_layer repeats one value or returns the list as floats, refusing a wrong length."""
    assert Regularization(lambda_w=0.5).per_layer(3) == (0.5, 0.5, 0.5)
    assert Regularization(lambda_w=(1, 2)).per_layer(2) == (1.0, 2.0)
    assert TimeScale(eta_w=(1.0, 2.0, 3.0)).per_layer(3) == (1.0, 2.0, 3.0)
    with pytest.raises(InputError, match=r"^lambda_w lists 2 values but depth is 3$"):
        Regularization(lambda_w=(1, 2)).per_layer(3)
    with pytest.raises(InputError, match=r"^eta_w lists 1 values but depth is 2$"):
        TimeScale(eta_w=(1.0,)).per_layer(2)


# ----------------------------------------------------------------------------- solver, onset


def test_default_first_record_is_a_tenth_of_a_short_horizon():
    """t_first defaults to min(1e-2, t_end / 10): 5e-3 for t_end = 0.05, 1e-2 for t_end = 10."""
    assert SolverSpec(t_end=0.05).first_record == pytest.approx(5e-3, rel=1e-15)
    assert SolverSpec(t_end=10.0).first_record == 1e-2
    assert SolverSpec(t_end=10.0, t_first=0.5).first_record == 0.5


def test_record_times_of_one_two_and_five_records():
    """One record is t_end, two are 0 and t_end, five are 0 and four log-spaced times."""
    np.testing.assert_array_equal(SolverSpec(t_end=8.0, records=1).record_times(), [8.0])
    np.testing.assert_array_equal(SolverSpec(t_end=8.0, records=2).record_times(), [0.0, 8.0])
    times = SolverSpec(t_end=8.0, t_first=1.0, records=5).record_times()
    np.testing.assert_allclose(times, [0.0, 1.0, 2.0, 4.0, 8.0], rtol=1e-14)


def test_tsit5_is_adaptive():
    """tsit5 and dopri5 need no dt; gd and rk4 do."""
    assert SolverSpec(method="tsit5").adaptive and SolverSpec(method="dopri5").adaptive
    assert not SolverSpec(method="gd", dt=0.1).adaptive
    RunSpec(solver=SolverSpec(method="tsit5")).validate()


def test_rtol_floor_is_eight_epsilons():
    """float64: rtol 5 eps is refused, 8 eps passes (the floor is 8 eps, not fewer)."""
    eps = float(np.finfo("float64").eps)
    _refused(RunSpec(solver=SolverSpec(rtol=5 * eps)), r"below what float64 resolves")
    RunSpec(solver=SolverSpec(rtol=8 * eps)).validate()


def test_zero_tolerances_that_mean_off_pass():
    """atol 0, gtol 0 and vanish_tol 0 are allowed (0 turns the rule off)."""
    RunSpec(solver=SolverSpec(atol=0.0, gtol=0.0, vanish_tol=0.0)).validate()


def test_cuda_graphs_with_a_fixed_step_is_refused_before_the_device():
    """cuda_graphs with rk4 on 'cuda' is refused for the method, whatever the machine has."""
    _refused(RunSpec(solver=SolverSpec(method="rk4", dt=0.1, device="cuda", cuda_graphs=True)),
             r"^cuda_graphs needs an adaptive solver \(dopri5, tsit5\) on a CUDA device, got "
             r"'rk4' on 'cuda'")


def test_first_record_at_zero_is_refused():
    """t_first = 0 (the record at 0 is always there) is refused."""
    _refused(RunSpec(solver=SolverSpec(t_first=0.0)),
             r"^t_first must lie in \(0, t_end\), got 0\.0$")


def test_check_every_zero_is_refused():
    """check_every 0 is refused (>= 1)."""
    _refused(RunSpec(solver=SolverSpec(check_every=0)),
             r"^check_every must be an integer >= 1, got 0$")


@pytest.mark.parametrize("device", ["cuda:", "cpu:0", "CPU", " cpu"])
def test_malformed_device_names_are_refused(device):
    """'cuda:' without an index and other spellings are not device names."""
    _refused(RunSpec(solver=SolverSpec(device=device)), r"^unknown device .*; allowed: cpu, cuda, "
             r"cuda:N, mps$")


def test_onset_threshold_zero_and_a_text_flag_are_refused():
    """Threshold 0 can never be crossed: refused; interpolate must be a bool."""
    _refused(RunSpec(onset=OnsetSpec(threshold=0.0)),
             r"^onset threshold must be a finite number > 0, got 0\.0$")
    _refused(RunSpec(onset=OnsetSpec(interpolate="yes")),
             r"^onset 'interpolate' must be True or False, got 'yes'$")
    _refused(RunSpec(onset=OnsetSpec(interpolate=1)),
             r"^onset 'interpolate' must be True or False, got 1$")


# ----------------------------------------------------------------------------- run spec


def test_row_names_every_field_once_with_the_part_prefixes():
    """Model and reg columns keep their names, the others carry their part's prefix; init
    arrays are left out; tuples are comma-joined text."""
    spec = RunSpec(model=DEEP, reg=Regularization(lambda_w=(1e-3, 2e-3)),
                   time_scale=TimeScale(eta_w=(1.0, 0.5)))
    row = spec.to_row()
    assert list(row)[:13] == ["kind", "loss", "bias", "classes", "per_class", "dim", "depth",
                              "width", "activation", "leaky_slope", "lambda_w", "lambda_h",
                              "lambda_b"]
    assert list(row)[13:16] == ["init_kind", "init_scale", "init_seed"]
    assert list(row)[16:19] == ["time_scale_eta_h", "time_scale_eta_w", "time_scale_eta_b"]
    assert [c for c in row if c.startswith("onset_")] == [
        "onset_metric", "onset_threshold", "onset_stay", "onset_interpolate"]
    assert len([c for c in row if c.startswith("solver_")]) == 15 and len(row) == 38
    assert row["lambda_w"] == "0.001,0.002" and row["time_scale_eta_w"] == "1.0,0.5"
    assert "init_arrays" not in row


def test_batch_key_separates_array_starts():
    """Runs that differ only in starting from arrays or from a draw do not share a batch;
    runs differing in reg, init seed or time scale do."""
    base = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4))
    arrays = base.replace(init=InitSpec(kind="arrays", arrays={"H": np.zeros((4, 6))}))
    assert base.batch_key() != arrays.batch_key()
    other = base.replace(reg=Regularization(lambda_h=0.1), init=InitSpec(seed=5),
                         time_scale=TimeScale(eta_h=2.0))
    assert base.batch_key() == other.batch_key()
    assert base.batch_key() != base.replace(solver=SolverSpec(t_end=5.0)).batch_key()
    assert base.batch_key() != base.replace(onset=OnsetSpec(threshold=0.5)).batch_key()


def test_a_part_given_as_a_dict_is_refused_naming_the_class():
    """RunSpec(model={...}) is one InputError line saying how to build the part."""
    _refused(RunSpec(model={"classes": 3}),
             r"^RunSpec model must be a ModelSpec, got dict \{'classes': 3\}; build it as "
             r"ModelSpec\(\.\.\.\), e\.g\. RunSpec\(model=ModelSpec\(\)\)$")


def _gram(model, **kw) -> RunSpec:
    return RunSpec(model=model, solver=SolverSpec(reduction="gram"), **kw)


def test_gram_min_dim_is_k_minus_one_for_ce_and_n_plus_k_for_mse():
    """CE: K - 1; MSE: N + K (N the sum of the class counts)."""
    assert gram_min_dim(ModelSpec(loss="ce", classes=4, per_class=(1, 2, 3, 4))) == 3
    assert gram_min_dim(ModelSpec(loss="mse", classes=4, per_class=(1, 2, 3, 4))) == 14


def test_gram_at_exactly_its_minimum_width_passes():
    """CE at d = K - 1 with both decays > 0 and equal time scales passes; d = K - 2 does not."""
    _gram(ModelSpec(loss="ce", classes=4, per_class=2, dim=3)).validate()
    _refused(_gram(ModelSpec(loss="ce", classes=4, per_class=2, dim=2)),
             r"^reduction 'gram' needs d >= 3 \(N \+ K for MSE, K - 1 for CE\), got d = 2")
    _gram(ModelSpec(loss="mse", classes=3, per_class=2, dim=9)).validate()


def test_gram_below_full_rank_needs_equal_time_scales_and_both_decays():
    """Below d = N + K: eta_w != eta_h, lambda_w = 0 or lambda_h = 0 are refused; from d = N + K
    exactly all pass."""
    low = ModelSpec(loss="ce", classes=3, per_class=2, dim=4)
    for kw in ({"time_scale": TimeScale(eta_w=2.0)}, {"reg": Regularization(lambda_w=0.0)},
               {"reg": Regularization(lambda_h=0.0)}):
        _refused(_gram(low, **kw), r"^reduction 'gram' below d = N \+ K = 9 needs lambda_w > 0, "
                                   r"lambda_h > 0 and eta_w = eta_h, got ")
    full = ModelSpec(loss="ce", classes=3, per_class=2, dim=9)
    _gram(full, time_scale=TimeScale(eta_w=2.0), reg=Regularization(lambda_w=0.0)).validate()


def test_forced_reductions_need_their_model():
    """gram needs the one-layer UFM; classes the one-layer MSE UFM (CE refused)."""
    deep = ModelSpec(kind="deep", depth=2, loss="ce", classes=3, per_class=2, dim=16)
    _refused(_gram(deep), r"^reduction 'gram' needs the one-layer UFM \(model 'ufm'\)$")
    _refused(RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                     solver=SolverSpec(reduction="classes")),
             r"^reduction 'classes' needs the one-layer UFM with MSE loss")
    RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=4),
            solver=SolverSpec(reduction="classes")).validate()


def test_numpy_scalars_inside_tuples_become_plain_numbers():
    """Tuple fields are normalised element by element: numpy scalars and ints for floats."""
    reg = Regularization(lambda_w=(np.float32(0.5), 1))
    assert reg.lambda_w == (0.5, 1.0) and [type(v) for v in reg.lambda_w] == [float, float]
    model = ModelSpec(classes=2, per_class=(np.int64(3), 4))
    assert [type(v) for v in model.per_class] == [int, int]
    spec = RunSpec(model=ModelSpec(kind="deep", depth=2, classes=2, per_class=2, dim=4), reg=reg)
    assert spec.to_row()["lambda_w"] == "0.5,1.0"


def test_a_shared_init_is_checked_against_each_model():
    """One spectral InitSpec in a pass: fine at d = 8, refused beside d = 2 (K = 4)."""
    init = InitSpec(kind="spectral")
    specs = [RunSpec(model=ModelSpec(classes=4, per_class=2, dim=d), init=init) for d in (8, 2)]
    checked: set = set()  # the specs stay alive during the pass (ids name one object)
    specs[0].validate(checked)
    with pytest.raises(InputError, match=r"init 'spectral' needs d \(and width\) >= 3"):
        specs[1].validate(checked)


def test_a_shared_time_scale_is_checked_against_each_model():
    """One TimeScale with eta_b = 2 in a pass: fine with a free bias, refused without one."""
    eta = TimeScale(eta_b=2.0)
    specs = [RunSpec(model=ModelSpec(bias=b, classes=3, per_class=2, dim=4), time_scale=eta)
             for b in ("free", "none")]
    checked: set = set()  # the specs stay alive during the pass (ids name one object)
    specs[0].validate(checked)
    with pytest.raises(InputError, match=r"eta_b = 2\.0 scales the bias's flow"):
        specs[1].validate(checked)
