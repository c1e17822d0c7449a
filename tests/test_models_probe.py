"""Probe tests of ncsim.models: scalar time scales of the Gram flow, input checks of the
reduced forms, per-run penalty selection, activation kinks and the reduction boundaries."""

from __future__ import annotations

import pytest
import torch

from ncsim.models.activations import activation
from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective
from ncsim.models.init import initial_state
from ncsim.models.losses import logit_gradient
from ncsim.models.reduction import state_form
from ncsim.models.ufm import Penalties, UFMObjective
from ncsim.spec import InitSpec, ModelSpec

F64 = torch.float64


def _point(loss: str, bias: str):
    """Two runs of a one-layer UFM (K = 3, n = 2, d = 11 >= N + K) with distinct decays."""
    model = ModelSpec(loss=loss, bias=bias, classes=3, per_class=2, dim=11)
    obj = UFMObjective(model, "cpu", F64)
    y = initial_state(model, [InitSpec(scale=0.8, seed=s) for s in (3, 4)], "cpu", F64)
    lay = obj.layout
    if "b" in lay:
        gen = torch.Generator().manual_seed(5)
        y[:, lay["b"].start:] = torch.randn(2, 3, generator=gen, dtype=F64)
    pen = Penalties(w=torch.tensor([[3e-2, 1e-2]], dtype=F64),
                    h=torch.tensor([2e-2, 5e-3], dtype=F64),
                    b=torch.tensor([4e-2, 1e-2], dtype=F64))
    return model, obj, y, pen


@pytest.mark.parametrize(("loss", "bias"), [("ce", "reg"), ("mse", "free")])
def test_gram_velocity_with_scalar_time_scales_is_the_chain_rule(loss, bias):
    """Scalar eta_W, eta_H, eta_b (all different) scale W, H and b of the d-space flow:
    dS = dW H + W dH, dA = dW W^T + W dW^T, dB = dH^T H + H^T dH, db = -eta_b grad_b f."""
    model, obj, y, pen = _point(loss, bias)
    lay = obj.layout
    eta_w, eta_h, eta_b = 0.5, 3.0, 7.0
    grad = obj.gradient(y, pen)
    h, w, b = lay.view(y, "H"), lay.view(y, "W1"), lay.view(y, "b")
    d_h, d_w = -eta_h * lay.view(grad, "H"), -eta_w * lay.view(grad, "W1")
    want = {"Z": d_w @ h + w @ d_h, "A": d_w @ w.transpose(1, 2) + w @ d_w.transpose(1, 2),
            "B": d_h.transpose(1, 2) @ h + h.transpose(1, 2) @ d_h,
            "b": -eta_b * lay.view(grad, "b")}
    gram = GramObjective(model, "cpu", F64)
    got = gram.velocity(gram.from_parameters(h, w, b), pen, eta_w, eta_h, eta_b)
    torch.testing.assert_close(got, gram.layout.pack(want), rtol=1e-12, atol=1e-13)


def test_gram_objective_refuses_a_deep_model():
    """GramObjective is for the one-layer UFM only: a deep head (or kind 'deep') is refused."""
    for depth in (1, 2):
        model = ModelSpec(kind="deep", depth=depth, classes=2, per_class=2, dim=3)
        with pytest.raises(ValueError, match="needs the one-layer UFM"):
            GramObjective(model, "cpu", F64)


def test_class_means_objective_refuses_ce_and_deep_models():
    """ClassMeansObjective needs the one-layer UFM with the MSE loss."""
    for model in (ModelSpec(loss="ce", classes=2, per_class=2, dim=3),
                  ModelSpec(kind="deep", depth=2, loss="mse", classes=2, per_class=2, dim=3)):
        with pytest.raises(ValueError, match="one-layer UFM with MSE loss"):
            ClassMeansObjective(model, "cpu", F64)


def test_penalties_select_takes_the_runs_of_every_layer():
    """Penalties.select picks the runs ``index`` of w (L, R) along its run axis, and of h, b."""
    pen = Penalties(w=torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
                    h=torch.tensor([7.0, 8.0, 9.0]), b=torch.tensor([10.0, 11.0, 12.0]))
    sel = pen.select(torch.tensor([2, 0]))
    assert torch.equal(sel.w, torch.tensor([[3.0, 1.0], [6.0, 4.0]]))
    assert torch.equal(sel.h, torch.tensor([9.0, 7.0]))
    assert torch.equal(sel.b, torch.tensor([12.0, 10.0]))


@pytest.mark.parametrize(("name", "slope", "want"),
                         [("relu", 0.3, [0.0, 0.0, 1.0]), ("leaky_relu", 0.3, [0.3, 0.3, 1.0]),
                          ("linear", 0.3, [1.0, 1.0, 1.0])])
def test_activation_derivative_at_and_around_the_kink(name, slope, want):
    """sigma'(-1), sigma'(0), sigma'(1): relu 0, 0, 1; leaky_relu slope, slope, 1 (the
    piece u < 0 at the kink); linear 1."""
    _, grad = activation(name, slope)
    u = torch.tensor([-1.0, 0.0, 1.0], dtype=F64)
    assert grad(u).tolist() == want


@pytest.mark.parametrize("name", ["tanh", "gelu", "silu", "leaky_relu"])
def test_activation_derivative_equals_autograd(name):
    """sigma' of the smooth activations (and leaky_relu off the kink) equals autograd."""
    sigma, grad = activation(name, 0.2)
    u = torch.linspace(-3.1, 2.9, 13, dtype=F64, requires_grad=True)
    (auto,) = torch.autograd.grad(sigma(u).sum(), u)
    torch.testing.assert_close(grad(u.detach()), auto, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_auto_reduction_boundaries(loss):
    """The "auto" rule (K = 2, N = 14): gram from d = N + K = 16 on, not below; classes (MSE
    only) when 4 d + 3 K < 3 N strictly: d = 8 (38 < 42) yes, d = 9 (42 = 42) no; explicit
    forms kept."""
    def form(d: int, reduction: str = "auto") -> str:
        return state_form(ModelSpec(loss=loss, classes=2, per_class=7, dim=d), reduction)

    below = "classes" if loss == "mse" else "none"
    assert [form(d) for d in (17, 16, 15, 9, 8, 2)] == ["gram", "gram", "none", "none", below,
                                                       below]
    for explicit in ("none", "gram", "classes"):
        assert form(3, explicit) == explicit


def test_logit_gradient_refuses_an_unknown_loss():
    """logit_gradient refuses an unknown loss name as loss_value does."""
    z = torch.zeros(1, 2, 2, dtype=F64)
    with pytest.raises(ValueError, match="unknown loss"):
        logit_gradient("hinge", z, torch.eye(2, dtype=F64))
