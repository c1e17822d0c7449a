"""Extreme-parameter scan of ncsim.models: losses, activations, velocities, reduced forms, inits.

References are written here: CE from an exact logsumexp, activation derivatives from torch's
autograd, the objective of DESIGN.md section 2 through autograd, and the parameter-space metrics
(:func:`ncsim.metrics.nc_metrics`) for the Gram and class-means forms. Fixed findings: the
Gram form's nc2_etf at tiny / huge features (the Gram normalised by a norm of |h|^4 terms:
inf at scale 1e-12 in float32 at t = 0), a CE loss NaN at an overflowing logit gap of a wrong
class (0 x -inf), init arrays with negative strides, an integer past float range, a tensor
that requires grad. Known limits (strict xfail): a CE mean near max float overflowing in the
sum, the class-means loss NaN where the parameter form's overflows to inf.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim.errors import InputError
from ncsim.metrics import nc_metrics
from ncsim.models import Penalties, UFMObjective, initial_parts, initial_state
from ncsim.models.activations import activation
from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective
from ncsim.models.losses import logit_gradient, loss_value
from ncsim.models.ufm import labels_for, state_layout
from ncsim.spec import InitSpec, ModelSpec

F64 = torch.float64


def _onehot(labels: list[int], k: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), k).T.to(dtype)


def _logits(columns: list[list[float]], dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(columns, dtype=dtype).T.unsqueeze(0)  # (1, K, N)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize(("dtype", "big"), [(F64, 1e308), (torch.float32, 2e38)])
def test_ce_loss_with_an_overflowing_gap_at_a_wrong_class_is_its_finite_value(dtype, big):
    """CE of logits (big, -big) with label 0 is log(1 + e^(-2 big)) = 0, not NaN."""
    value = loss_value("ce", _logits([[big, -big]], dtype), _onehot([0], 2, dtype))
    assert value.item() == 0.0


def test_ce_loss_that_overflows_is_inf_not_nan():
    """CE of logits (-1e308, 1e308, -1e308), label 0, is 2e308 > max float: inf, never NaN."""
    value = loss_value("ce", _logits([[-1e308, 1e308, -1e308]]), _onehot([0], 3))
    assert value.item() == math.inf


@pytest.mark.xfail(strict=True, reason="known limit: the per-sample losses are summed before "
                   "the division by N, so a finite mean near max float overflows")
def test_ce_loss_mean_below_max_float_is_finite():
    """Two samples of CE loss 1e308 each (logits (0, 1e308), label 0) have mean 1e308."""
    value = loss_value("ce", _logits([[0.0, 1e308], [0.0, 1e308]]), _onehot([0, 0], 2))
    assert value.item() == pytest.approx(1e308, rel=1e-12)


@pytest.mark.parametrize("big", [1e4, 1e30, 1e150, 1e300])
def test_ce_loss_and_gradient_at_huge_logits_equal_the_exact_logsumexp(big):
    """Up to 1e300 the CE loss and gradient equal an exact logsumexp, with no NaN or inf."""
    columns = [[big, -big, 0.0], [-big, big, 0.5 * big], [0.0, 0.0, -big]]
    z, y = _logits(columns), _onehot([0, 1, 2], 3)
    value = loss_value("ce", z, y).item()
    grad = logit_gradient("ce", z.clone(), y)[0]
    # samples 0 and 1: the true logit is the max by >= 1e4, loss 0; sample 2: big + log 2
    assert value == pytest.approx((big + math.log(2.0)) / 3, rel=1e-15)
    expected = torch.zeros(3, 3, dtype=F64)
    expected[:, 2] = torch.tensor([0.5, 0.5, -1.0], dtype=F64)
    torch.testing.assert_close(grad, expected / 3, rtol=0, atol=1e-300)


def test_mse_loss_that_overflows_is_inf_with_a_finite_gradient():
    """MSE at logits +-1e200 overflows to inf (not NaN); its gradient (Z - Y)/N stays exact."""
    z, y = _logits([[1e200, -1e200]]), _onehot([0], 2)
    assert loss_value("mse", z, y).item() == math.inf
    torch.testing.assert_close(logit_gradient("mse", z.clone(), y)[0, :, 0],
                               torch.tensor([1e200, -1e200], dtype=F64), rtol=0, atol=0)


# ----------------------------------------------------------------------------- activations

POINTS = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.0, -3.0, 40.0, -40.0, 800.0, -800.0, 1e300,
          -1e300]


@pytest.mark.parametrize(("name", "slope"), [
    ("linear", 0.01), ("relu", 0.01), ("leaky_relu", 0.0), ("leaky_relu", 1.0),
    ("leaky_relu", 1e-300), ("leaky_relu", 0.01), ("tanh", 0.01), ("gelu", 0.01),
    ("silu", 0.01)])
def test_activation_derivative_is_autograds_at_extreme_points(name, slope):
    """sigma' equals torch autograd of sigma at 0, +-1e-300, subnormals and +-1e300, finite."""
    sigma, grad = activation(name, slope)
    u = torch.tensor(POINTS, dtype=F64, requires_grad=True)
    (want,) = torch.autograd.grad(sigma(u).sum(), u)
    got = grad(u.detach())
    assert bool(torch.isfinite(got).all()) and bool(torch.isfinite(sigma(u.detach())).all())
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-300)


def test_kink_derivatives_take_the_left_piece():
    """At u = 0 (and -0) relu' is 0 and leaky_relu' is the slope, even a slope of 1e-300."""
    u = torch.tensor([0.0, -0.0], dtype=F64)
    assert activation("relu")[1](u).tolist() == [0.0, 0.0]
    assert activation("leaky_relu", 1e-300)[1](u).tolist() == [1e-300, 1e-300]


# ----------------------------------------------------------------------------- velocity


def _autograd_gradient(model: ModelSpec, theta: torch.Tensor, lw: list[float], lh: float,
                       lb: float) -> torch.Tensor:
    """grad f of DESIGN.md's objective by autograd (f written out naively)."""
    theta = theta.clone().requires_grad_(True)
    lay = state_layout(model)
    h = theta[lay["H"].start:lay["H"].stop].view(lay["H"].shape)
    ws = [theta[lay[f"W{i + 1}"].start:lay[f"W{i + 1}"].stop].view(lay[f"W{i + 1}"].shape)
          for i in range(model.depth)]
    b = theta[lay["b"].start:lay["b"].stop] if model.has_bias else None
    sigma = activation(model.activation, model.leaky_slope)[0]
    a = h
    for w in ws[:-1]:
        a = sigma(w @ a)
    z = ws[-1] @ a + (b[:, None] if b is not None else 0.0)
    y = labels_for(model)
    n = model.num_samples
    if model.loss == "ce":
        data = torch.nn.functional.cross_entropy(z.T, y, reduction="sum") / n
    else:
        data = 0.5 * (z - _onehot(y.tolist(), model.classes)).square().sum() / n
    f = data + lh / 2 * h.square().sum() + sum(l / 2 * w.square().sum()
                                               for l, w in zip(lw, ws, strict=True))
    if b is not None:
        f = f + lb / 2 * b.square().sum()
    return torch.autograd.grad(f, theta)[0]


VELOCITY_MODELS = [
    ModelSpec(loss="ce", classes=200, per_class=1, dim=3),
    ModelSpec(loss="mse", bias="reg", classes=200, per_class=1, dim=2),
    ModelSpec(loss="ce", bias="free", classes=2, per_class=(1, 9), dim=1),
    ModelSpec(kind="deep", loss="ce", bias="reg", classes=3, per_class=(1, 4, 2), dim=3,
              depth=4, width=2, activation="leaky_relu", leaky_slope=1e-300),
    ModelSpec(kind="deep", loss="mse", bias="free", classes=2, per_class=1, dim=2, depth=3,
              activation="relu"),
]


@pytest.mark.parametrize("model", VELOCITY_MODELS, ids=lambda m: f"{m.kind}-{m.loss}-{m.bias}")
def test_velocity_is_minus_the_autograd_gradient_at_odd_shapes(model):
    """velocity = -eta grad f of the naive objective (K = 200 with n = 1, imbalance, depth 4,
    relu kinks hit exactly, decays 0 and large), for scalar and per-entry eta."""
    model.validate()
    obj = UFMObjective(model, "cpu", F64)
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(2, obj.layout.size, generator=gen, dtype=F64)
    state[1] = state[1].round()  # exact zeros: relu kinks
    lw = torch.tensor([[0.0, 3.0]] * model.depth, dtype=F64)
    lh = torch.tensor([1e-9, 10.0], dtype=F64)
    lb = torch.tensor([1e-3, 2.0] if model.bias == "reg" else [0.0, 0.0], dtype=F64)
    pen = Penalties(lw, lh, lb)
    eta = 0.5 + torch.rand(2, obj.layout.size, generator=gen, dtype=F64)
    v_scalar = obj.velocity(state.clone(), pen, eta=2.0)
    v_tensor = obj.velocity(state.clone(), pen, eta=eta)
    for r in range(2):
        g = _autograd_gradient(model, state[r], lw[:, r].tolist(), lh[r].item(), lb[r].item())
        scale = g.abs().max().item()
        torch.testing.assert_close(v_scalar[r], -2.0 * g, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(v_tensor[r], -eta[r] * g, rtol=0, atol=1e-12 * scale)


# ----------------------------------------------------------------------------- reduced forms


def _state(model: ModelSpec, scale: float, seed: int = 3) -> torch.Tensor:
    obj = UFMObjective(model, "cpu", F64)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, obj.layout.size, generator=gen, dtype=F64) * scale


def _parts(model: ModelSpec, state: torch.Tensor):
    lay = state_layout(model)
    return lay.view(state, "H"), lay.view(state, "W1"), (lay.view(state, "b")
                                                         if "b" in lay else None)


@pytest.mark.parametrize(("classes", "per_class", "dim"), [(5, 3, 1), (200, 1, 3), (4, 2, 3),
                                                           (3, (1, 2, 3), 3000)])
def test_gram_value_and_metrics_equal_the_parameters_at_d_below_k_and_large(classes, per_class,
                                                                            dim):
    """Gram form at d < K, d = K - 1 and d = 3000: same f and metrics as the parameters."""
    model = ModelSpec(loss="ce", bias="reg", classes=classes, per_class=per_class, dim=dim)
    obj, gram = UFMObjective(model, "cpu", F64), GramObjective(model, "cpu", F64)
    state = _state(model, 0.7)
    h, w, b = _parts(model, state)
    pen = Penalties(torch.tensor([[1e-3]], dtype=F64), torch.tensor([2.0], dtype=F64),
                    torch.tensor([0.5], dtype=F64))
    g_state = gram.from_parameters(h, w, b)
    torch.testing.assert_close(torch.stack(gram.value(g_state, pen)),
                               torch.stack(obj.value(state, pen)), rtol=1e-12, atol=0)
    want = nc_metrics(h.transpose(1, 2), labels_for(model), classes, w, b)
    got = gram.metrics(g_state)
    for key in ("fn", "nc1_trace", "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc3", "nc4",
                "within_energy", "w_norm"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-8, atol=1e-10, equal_nan=True,
                                   msg=key)


@pytest.mark.parametrize(("scale", "dtype"), [(1e-90, F64), (1e90, F64),
                                              (1e-12, torch.float32), (1e10, torch.float32)])
def test_gram_nc2_etf_is_scale_invariant_as_in_the_parameters(scale, dtype):
    """nc2_etf and nc2_etf_w of the Gram form equal the parameters' at tiny and huge scales."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=4)
    h, w, _ = _parts(model, _state(model, 1.0))
    want = nc_metrics(h.transpose(1, 2), labels_for(model), 3, w)
    gram = GramObjective(model, "cpu", dtype)
    got = gram.metrics(gram.from_parameters(h * scale, w * scale, None).to(dtype))
    for key in ("nc2_etf", "nc2_etf_w"):
        assert got[key].item() == pytest.approx(want[key].item(), rel=1e-3), key


@pytest.mark.xfail(strict=True, reason="known limit: W S = W Phi S0 Phi^T sums products of "
                   "mixed sign that overflow to +inf and -inf: the class-means loss is NaN "
                   "where the parameter form's overflows to inf")
def test_class_means_value_that_overflows_is_inf_like_the_parameters():
    """MSE, K = 2, n = 2, d = 2 at entries ~1e100: f overflows; both forms report inf."""
    model = ModelSpec(loss="mse", classes=2, per_class=2, dim=2)
    state = _state(model, 1e100, seed=0)
    pen = Penalties(torch.tensor([[1e-3]], dtype=F64), torch.tensor([1e-3], dtype=F64),
                    torch.zeros(1, dtype=F64))
    assert torch.stack(UFMObjective(model, "cpu", F64).value(state, pen)).isinf().all()
    cm = ClassMeansObjective(model, "cpu", F64)
    loss, total = cm.value(cm.from_parameters(*_parts(model, state)), pen)
    assert loss.item() == math.inf and total.item() == math.inf


# ----------------------------------------------------------------------------- inits

INIT_MODELS = [ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
               ModelSpec(loss="mse", classes=3, per_class=(1, 2, 3), dim=20),
               ModelSpec(kind="deep", loss="mse", bias="free", classes=2, per_class=1, dim=3,
                         depth=3, width=2, activation="relu")]


@pytest.mark.parametrize("model", INIT_MODELS, ids=["ufm-narrow", "ufm-wide", "deep"])
@pytest.mark.parametrize("kind", ["gaussian", "spectral", "etf"])
@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_init_scales_linearly_to_the_float_bounds(model, kind, scale):
    """Every drawn block at scale 1e+-300 is scale x the scale-1 draw, finite and non-zero."""
    for seed in (0, 2**32 - 1):
        got = initial_parts(model, InitSpec(kind=kind, scale=scale, seed=seed))
        unit = initial_parts(model, InitSpec(kind=kind, scale=1.0, seed=seed))
        for name, block in got.items():
            if name == "b":
                continue
            assert bool(torch.isfinite(block).all()) and block.abs().max() > 0
            torch.testing.assert_close(block / scale, unit[name], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("model", INIT_MODELS, ids=["ufm-narrow", "ufm-wide", "deep"])
def test_batch_of_40_on_4_threads_equals_one_by_one(model):
    """40 mixed inits drawn as one threaded batch equal the runs drawn alone, bit for bit."""
    inits = [InitSpec(kind=("gaussian", "spectral", "etf")[i % 3], scale=0.5, seed=i * 7919)
             for i in range(40)]
    with torch_threads(4):
        batch = initial_state(model, inits, "cpu", F64)
    with torch_threads(1):
        alone = torch.cat([initial_state(model, [i], "cpu", F64) for i in inits])
    assert torch.equal(batch, alone)
    assert torch.equal(initial_state(model, inits, "cpu", torch.float32), batch.float())


def _arrays_init(h, w=None, b=None) -> InitSpec:
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((3, 4))] if w is None else w
    b = rng.standard_normal(3) if b is None else b
    return InitSpec(kind="arrays", arrays={"H": h, "W": w, "b": b})


ARRAYS_MODEL = ModelSpec(loss="ce", bias="free", classes=3, per_class=2, dim=4)
H0 = np.random.default_rng(1).standard_normal((4, 6))


@pytest.mark.parametrize("given", [
    H0.astype(np.float32), (H0 * 10).astype(np.int64), np.asfortranarray(H0),
    np.ascontiguousarray(H0.T).T, torch.tensor(H0.T, dtype=torch.float32).T, H0.tolist()],
    ids=["float32", "int64", "fortran", "transposed-view", "torch-f32-view", "list"])
def test_init_arrays_of_other_dtypes_and_layouts_are_converted_exactly(given):
    """float32, int, Fortran-ordered, transposed views and lists become exact float64 H."""
    y = initial_state(ARRAYS_MODEL, [_arrays_init(given)], "cpu", F64)
    want = np.asarray(given, dtype=np.float64)
    np.testing.assert_array_equal(state_layout(ARRAYS_MODEL).view(y, "H")[0].numpy(), want)


@pytest.mark.parametrize("flip", [(slice(None), slice(None, None, -1)), (slice(None, None, -1),)])
def test_init_arrays_with_negative_strides_are_converted(flip):
    """A reversed view H[:, ::-1] (or H[::-1]) is taken as its values."""
    given = H0[flip]
    y = initial_state(ARRAYS_MODEL, [_arrays_init(given)], "cpu", F64)
    np.testing.assert_array_equal(state_layout(ARRAYS_MODEL).view(y, "H")[0].numpy(), given)


def test_init_array_with_an_integer_beyond_float_range_is_an_input_error():
    """An entry 10**400 (a Python int) is refused with InputError, not OverflowError."""
    given = [[10**400] * 6] * 4
    with pytest.raises(InputError):
        initial_state(ARRAYS_MODEL, [_arrays_init(given)], "cpu", F64)


def test_init_array_tensor_requiring_grad_is_converted_or_refused_clearly():
    """A torch tensor with requires_grad=True is taken as its values (or refused by InputError)."""
    given = torch.tensor(H0, requires_grad=True)
    try:
        y = initial_state(ARRAYS_MODEL, [_arrays_init(given)], "cpu", F64)
    except InputError:
        return
    np.testing.assert_array_equal(state_layout(ARRAYS_MODEL).view(y, "H")[0].numpy(), H0)


@pytest.mark.parametrize("given", [np.where(np.eye(4, 6) > 0, np.nan, H0),
                                   np.full((4, 6), np.inf), H0.T.copy(), H0[None],
                                   np.ones((4, 6), bool)],
                         ids=["nan", "inf", "transposed", "3d", "bool"])
def test_init_arrays_that_would_be_silently_wrong_are_refused(given):
    """NaN, inf, a wrong shape and a boolean H are refused with InputError."""
    with pytest.raises(InputError):
        initial_state(ARRAYS_MODEL, [_arrays_init(given)], "cpu", F64)
