"""Second probe of the reduced one-layer UFM forms (Gram space, class means): odd shapes
(K = 2, n = 1, d < K, unbalanced counts, bias none/free/reg, CE and MSE, per-block time
scales) against the plain d-space model in float64, the factoring of states that are not an
exact Gram, the resolution floor of the Gram |grad f|, the unresolved nc1 and with_dtype
before any runs are set."""

from __future__ import annotations

import math

import pytest
import torch
from test_reduced_probe import _params as _point

from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective
from ncsim.models.ufm import Penalties, UFMObjective
from ncsim.spec import ModelSpec

F64 = torch.float64
R = 3

# (classes, per_class, dim): K = 2, n = 1, d = 1 < K, d < K - 1, unbalanced, one class of 1
SHAPES = [(2, 1, 1), (2, (1, 3), 2), (2, (4, 1), 7), (3, (1, 2, 4), 1), (4, (2, 1, 1, 3), 3),
          (5, 1, 2)]
MODELS = [ModelSpec(loss=loss, bias=bias, classes=k, per_class=pc, dim=d)
          for loss in ("ce", "mse") for bias in ("none", "free", "reg") for k, pc, d in SHAPES]


def _name(model: ModelSpec) -> str:
    return f"{model.loss}-{model.bias}-K{model.classes}-{model.class_counts}-d{model.dim}"


def _same_metrics(got: dict, ref: dict) -> None:
    """Every NC metric of a reduced form equals nc_metrics of the d-space point."""
    for name in METRIC_NAMES:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-9, atol=1e-11,
                                   equal_nan=True, msg=name)


def _flat(obj: UFMObjective, h, w, b) -> torch.Tensor:
    parts = {"H": h, "W1": w}
    if b is not None:
        parts["b"] = b
    return obj.layout.pack(parts)


ETA_W = torch.tensor([0.5, 2.0, 1.0], dtype=F64)
ETA_H = torch.tensor([3.0, 0.25, 1.5], dtype=F64)
ETA_B = torch.tensor([7.0, 0.1, 2.0], dtype=F64)


def _d_space_velocity(plain: UFMObjective, y, pen):
    """(dH, dW, db or None) of the d-space flow with the per-block time scales above."""
    grad = plain.gradient(y, pen)
    lay = plain.layout
    d_h = -ETA_H.view(-1, 1, 1) * lay.view(grad, "H")
    d_w = -ETA_W.view(-1, 1, 1) * lay.view(grad, "W1")
    d_b = -ETA_B.view(-1, 1) * lay.view(grad, "b") if "b" in lay else None
    return d_h, d_w, d_b


@pytest.mark.parametrize("model", MODELS, ids=_name)
def test_gram_form_equals_the_d_space_model_at_odd_shapes(model):
    """Gram velocity (per-block (R,) time scales), loss, objective, |grad f| and every metric
    equal the float64 d-space UFM and nc_metrics at K = 2, n = 1, d < K, unbalanced counts."""
    h, w, b, pen = _point(model)
    plain = UFMObjective(model, "cpu", F64)
    gram = GramObjective(model, "cpu", F64)
    y = _flat(plain, h, w, b)
    state = gram.from_parameters(h, w, b)
    d_h, d_w, d_b = _d_space_velocity(plain, y, pen)
    want = {"Z": d_w @ h + w @ d_h, "A": d_w @ w.mT + w @ d_w.mT, "B": d_h.mT @ h + h.mT @ d_h}
    if d_b is not None:
        want["b"] = d_b
    torch.testing.assert_close(gram.velocity(state, pen, ETA_W, ETA_H, ETA_B),
                               gram.layout.pack(want), rtol=1e-12, atol=1e-13)
    for got, ref in zip(gram.value(state, pen), plain.value(y, pen)):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gram.grad_norm(state, pen), plain.gradient(y, pen).norm(dim=1),
                               rtol=1e-10, atol=0)
    _same_metrics(gram.metrics(state), nc_metrics(h.mT, plain.labels, model.classes, w, b))


@pytest.mark.parametrize("model", [m for m in MODELS if m.loss == "mse"], ids=_name)
def test_class_means_form_equals_the_d_space_model_at_odd_shapes(model):
    """Class-means velocity (per-block (R,) time scales), loss, objective, |grad f| and every
    metric equal the float64 d-space UFM on the rebuilt features, with a general Phi."""
    h0, w, b, pen = _point(model, seed=1)
    form = ClassMeansObjective(model, "cpu", F64)
    state = form.from_parameters(h0, w, b)
    gen = torch.Generator().manual_seed(7)
    form.layout.view(state, "Phi").copy_(torch.randn(R, model.dim, model.dim, generator=gen,
                                                     dtype=F64))
    h, _, _ = form.parameters(state)
    plain = UFMObjective(model, "cpu", F64)
    y = _flat(plain, h, w, b)
    d_h, d_w, d_b = _d_space_velocity(plain, y, pen)
    vel = form.velocity(state, pen, ETA_W, ETA_H, ETA_B)
    lay = form.layout
    d_means = d_h @ form.average
    torch.testing.assert_close(lay.view(vel, "M"), d_means, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(lay.view(vel, "Phi") @ form.e0,
                               d_h - d_means[:, :, form.labels], rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(lay.view(vel, "W1"), d_w, rtol=1e-12, atol=1e-13)
    if d_b is not None:
        torch.testing.assert_close(lay.view(vel, "b"), d_b, rtol=1e-12, atol=1e-13)
    for got, ref in zip(form.value(state, pen), plain.value(y, pen)):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    norm = plain.gradient(y, pen).norm(dim=1)
    torch.testing.assert_close(form.grad_norm(state, pen), norm, rtol=1e-10, atol=0)
    torch.testing.assert_close(form.grad_norm_from_velocity(vel, ETA_W, ETA_H, ETA_B), norm,
                               rtol=1e-10, atol=0)
    _same_metrics(form.metrics(state), nc_metrics(h.mT, plain.labels, model.classes, w, b))


def _gram_state(gram: GramObjective, s, a, bb, b=None) -> torch.Tensor:
    parts = {"Z": s, "A": a, "B": bb}
    if b is not None:
        parts["b"] = b
    return gram.layout.pack(parts)


def test_factor_of_a_state_with_a_negative_eigenvalue_keeps_its_psd_part():
    """A joint Gram [[B, S^T], [S, A]] with eigenvalue -0.5 (no Gram of any point) is factored
    with that direction dropped: the factor's Gram is the PSD part, not |M|."""
    model = ModelSpec(loss="ce", classes=2, per_class=1, dim=6)
    gram = GramObjective(model, "cpu", F64)
    s = torch.zeros(1, 2, 2, dtype=F64)
    a = torch.eye(2, dtype=F64)[None]
    bb = torch.diag(torch.tensor([1.0, -0.5], dtype=F64))[None]
    fh, fw = gram.factor(_gram_state(gram, s, a, bb))
    want = _gram_state(gram, s, a, torch.diag(torch.tensor([1.0, 0.0], dtype=F64))[None])
    torch.testing.assert_close(gram.from_parameters(fh, fw, None), want, rtol=0, atol=1e-14)


def test_factor_of_an_unsymmetric_state_uses_its_symmetric_part():
    """A and B off their symmetry (a rounded integration step) are factored as (X + X^T)/2:
    the factor's Gram is the symmetric part, not one triangle of the state."""
    model = ModelSpec(loss="ce", classes=2, per_class=1, dim=6)
    gram = GramObjective(model, "cpu", F64)
    s = torch.tensor([[[0.3, -0.2], [0.1, 0.4]]], dtype=F64)
    a = torch.tensor([[[2.0, 0.5], [0.1, 1.5]]], dtype=F64)
    bb = torch.tensor([[[1.8, -0.4], [0.2, 2.2]]], dtype=F64)
    fh, fw = gram.factor(_gram_state(gram, s, a, bb))
    want = _gram_state(gram, s, 0.5 * (a + a.mT), 0.5 * (bb + bb.mT))
    torch.testing.assert_close(gram.from_parameters(fh, fw, None), want, rtol=0, atol=1e-13)


def _floor_state(bias: str, above: float):
    """A crafted Gram state (MSE, K = 2, n = 1: S = 0, B = I, A = -alpha I) whose |grad f|^2
    is ``above`` x 64 eps x the sum of its positive terms, which the gag term cancels."""
    model = ModelSpec(loss="mse", bias=bias, classes=2, per_class=1, dim=4)
    gram = GramObjective(model, "cpu", F64)
    lw = lh = 1e-3
    lb = 0.5 if bias == "reg" else 0.0
    pen = Penalties(w=torch.tensor([[lw]], dtype=F64), h=torch.tensor([lh], dtype=F64),
                    b=torch.tensor([lb], dtype=F64))
    eye = torch.eye(2, dtype=F64)
    b = torch.tensor([3.0, -2.0], dtype=F64) if bias != "none" else torch.zeros(2, dtype=F64)
    g = (b.view(-1, 1) - eye) / 2  # dLoss/dZ at Z = b 1^T, N = 2
    gbg = float(g.square().sum())  # tr(G B G^T) with B = I
    bias_sq = float((g.sum(1) + lb * b).square().sum()) if bias != "none" else 0.0
    positive = gbg + lh * lh * 2 + bias_sq  # gs = 0 (S = 0); bias_sq > positive / 2
    # gag + lw^2 tr A = -alpha (|G|^2 + 2 lw^2) cancels all but the target: the full sum of
    # sizes is 2 positive - target, without gag (or the bias term) it is below 1.5 positive
    target = above * 64 * torch.finfo(F64).eps * positive
    alpha = (positive - target) / (gbg + 2 * lw * lw)
    state = _gram_state(gram, torch.zeros(1, 2, 2, dtype=F64), -alpha * eye[None], eye[None],
                        b[None] if bias != "none" else None)
    return gram, state, pen, target


@pytest.mark.parametrize("bias", ["none", "reg"])
def test_gram_grad_norm_floor_counts_every_term_size(bias):
    """|grad f|^2 is resolved only above 64 eps x the sum of all its terms' sizes, the gag
    term and the bias term included: a sum at 3/4 of the full floor (above the floor left
    without either term) is NaN, one at 3 x the full floor gives its square root."""
    gram, state, pen, target = _floor_state(bias, 1.5)
    assert math.isnan(float(gram.grad_norm(state, pen)[0]))
    gram, state, pen, target = _floor_state(bias, 6.0)
    assert float(gram.grad_norm(state, pen)[0]) == pytest.approx(math.sqrt(target), rel=0.05)


def test_unresolved_nc1_of_identical_features_is_nan_as_in_nc_metrics():
    """Every feature the same point: nc1, nc1_trace and cdnv of the Gram state are NaN (0/0),
    as nc_metrics gives; with a spread of 1e-12 |h| (below the Gram's half-digit resolution,
    its within energy a rounding residue ~1e-14) they stay NaN, never the inf of a resolved
    within spread over zero means."""
    model = ModelSpec(loss="ce", classes=3, per_class=(3, 7, 5), dim=20)
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(1, 20, 1, generator=gen, dtype=F64) * 3.7
    w = torch.randn(1, 3, 20, generator=gen, dtype=F64)
    gram = GramObjective(model, "cpu", F64)
    h = m.expand(1, 20, model.num_samples).clone()
    got = gram.metrics(gram.from_parameters(h, w, None))
    want = nc_metrics(h.mT, gram.labels, 3, w, None)
    for name in ("nc1", "nc1_trace", "cdnv"):
        assert torch.isnan(want[name]).all(), name
        assert torch.isnan(got[name]).all(), name
    h = m + 1e-12 * torch.randn(1, 20, model.num_samples, generator=gen, dtype=F64)
    got = gram.metrics(gram.from_parameters(h, w, None))
    assert float(got["class_mean_norm"][0]) == 0.0
    assert 0.0 < float(got["within_energy"][0]) < 1e-12  # a rounding residue, not resolved
    for name in ("nc1", "nc1_trace", "cdnv"):
        assert torch.isnan(got[name]).all(), name


def test_class_means_with_dtype_before_from_parameters_has_no_runs():
    """with_dtype on an objective without runs gives one in the new dtype, also without runs:
    its run-dependent methods refuse with the from_parameters message."""
    model = ModelSpec(loss="mse", classes=2, per_class=(1, 2), dim=3)
    low = ClassMeansObjective(model, "cpu", F64).with_dtype(torch.float32)
    assert low.e0 is None and low.s0 is None and low.root is None
    assert low.weights.dtype == torch.float32
    state = torch.zeros(1, low.layout.size, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="call from_parameters first"):
        low.parameters(state)
