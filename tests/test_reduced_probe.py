"""Probe tests of the reduced one-layer UFM forms (Gram space, class means) against naive
d-space references built by hand with torch.autograd (float64, small random states)."""

from __future__ import annotations

import pytest
import torch
from ufm_helpers import RUNS, naive_gradients, naive_objective, onehot, penalties, random_point

from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective
from ncsim.spec import ModelSpec

F64 = torch.float64
R = RUNS


def _params(model: ModelSpec, seed: int = 0):
    """Random H (R, d, N), W (R, K, d) x 0.7, b (R, K) or None, and per-run penalties."""
    return (*random_point(model, seed, 0.7), penalties(model.bias))


MODELS = [ModelSpec(loss="ce", bias="reg", classes=3, per_class=(2, 4, 3), dim=13),
          ModelSpec(loss="mse", bias="reg", classes=3, per_class=(2, 4, 3), dim=13),
          ModelSpec(loss="mse", bias="none", classes=4, per_class=2, dim=12)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.loss}-{m.bias}")
def test_gram_velocity_with_per_run_time_scales_into_a_buffer_slice(model):
    """Per-run (R,) eta_W, eta_H, eta_b (all distinct) give dS = dW H + W dH, dA, dB, db of
    the autograd d-space flow, written into a strided slice of a larger buffer."""
    h, w, b, pen = _params(model)
    g_h, g_w, g_b = naive_gradients(model, h, w, b, pen)
    eta_w = torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    eta_h = torch.tensor([3.0, 0.25, 1.5], dtype=F64)
    eta_b = torch.tensor([7.0, 0.1, 2.0], dtype=F64)
    d_h, d_w = -eta_h.view(-1, 1, 1) * g_h, -eta_w.view(-1, 1, 1) * g_w
    want = {"Z": d_w @ h + w @ d_h, "A": d_w @ w.mT + w @ d_w.mT, "B": d_h.mT @ h + h.mT @ d_h}
    if b is not None:
        want["b"] = -eta_b.view(-1, 1) * g_b
    gram = GramObjective(model, "cpu", F64)
    state = gram.from_parameters(h, w, b)
    buffer = torch.full((R, 2 * gram.layout.size), torch.nan, dtype=F64)
    out = buffer[:, gram.layout.size:]
    got = gram.velocity(state, pen, eta_w, eta_h, eta_b, out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, gram.layout.pack(want), rtol=1e-12, atol=1e-13)
    assert bool(buffer[:, :gram.layout.size].isnan().all())


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.loss}-{m.bias}")
def test_gram_value_and_grad_norm_equal_the_naive_objective(model):
    """Loss, objective (with the regularised bias) and |grad f| of the Gram state equal the
    hand-written d-space objective and its autograd gradient."""
    h, w, b, pen = _params(model, seed=1)
    gram = GramObjective(model, "cpu", F64)
    state = gram.from_parameters(h, w, b)
    for got, want in zip(gram.value(state, pen), naive_objective(model, h, w, b, pen)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    grads = [g for g in naive_gradients(model, h, w, b, pen) if g is not None]
    norm = torch.sqrt(sum(g.square().sum(tuple(range(1, g.dim()))) for g in grads))
    torch.testing.assert_close(gram.grad_norm(state, pen), norm, rtol=1e-10, atol=0)


def test_gram_factor_to_a_smaller_width_keeps_the_largest_directions():
    """A state of rank d = 5 < N + K = 12 factored into dim = 5 (and 8) columns keeps its
    inner products: the truncation drops the zero eigen-directions, never the top ones."""
    model = ModelSpec(loss="ce", bias="none", classes=3, per_class=3, dim=5)
    h, w, _, _ = _params(model, seed=2)
    gram = GramObjective(model, "cpu", F64)
    state = gram.from_parameters(h, w, None)
    for dim in (5, 8, 20):
        fh, fw = gram.factor(state, dim=dim)
        assert fh.shape == (R, dim, 9) and fw.shape == (R, 3, dim)
        torch.testing.assert_close(gram.from_parameters(fh, fw, None), state, rtol=0,
                                   atol=1e-11)


@pytest.mark.parametrize("bias", ["none", "reg"])
def test_class_means_grad_norm_from_velocity_with_per_run_time_scales(bias):
    """grad_norm_from_velocity undoes per-run (R,) time scales of every block: it equals the
    autograd |grad f| of the rebuilt d-space parameters."""
    model = ModelSpec(loss="mse", bias=bias, classes=3, per_class=(2, 4, 3), dim=4)
    h, w, b, pen = _params(model, seed=3)
    form = ClassMeansObjective(model, "cpu", F64)
    state = form.from_parameters(h, w, b)
    gen = torch.Generator().manual_seed(9)
    form.layout.view(state, "Phi").copy_(torch.randn(R, 4, 4, generator=gen, dtype=F64))
    h_now, _, _ = form.parameters(state)
    eta = [torch.tensor(v, dtype=F64) for v in ([0.5, 2.0, 1.0], [3.0, 0.25, 1.5],
                                                [7.0, 0.1, 2.0])]
    vel = form.velocity(state, pen, *eta)
    grads = [g for g in naive_gradients(model, h_now, w, b, pen) if g is not None]
    norm = torch.sqrt(sum(g.square().sum(tuple(range(1, g.dim()))) for g in grads))
    torch.testing.assert_close(form.grad_norm_from_velocity(vel, *eta), norm, rtol=1e-10,
                               atol=0)
    loss, total = form.value(state, pen)
    want_loss, want_total = naive_objective(model, h_now, w, b, pen)
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(total, want_total, rtol=1e-12, atol=0)


def _naive_metrics(model: ModelSpec, h, w):
    """A few NC metrics written out by hand from H (R, d, N) and W (R, K, d)."""
    y = onehot(model)
    k = model.classes
    counts = y.sum(1)
    mu = (h @ y.T) / counts  # (R, d, K)
    mbar = (mu - h.mean(2, keepdim=True)).mT  # (R, K, d): about the sample mean
    within = (h - mu @ y).square().sum((1, 2)) / model.num_samples
    norms = mbar.norm(dim=2)
    unit = mbar / norms.unsqueeze(-1)
    cos = unit @ unit.mT
    off = ~torch.eye(k, dtype=torch.bool)
    w_rows = w.norm(dim=2)
    return {
        "fn": h.norm(dim=1).mean(1),
        "within_energy": within,
        "nc1_trace": within / (norms.square().sum(1) / k),
        "class_mean_norm": norms.mean(1),
        "nc2_equinorm": norms.std(1, correction=1) / norms.mean(1),
        "nc2_equinorm_w": w_rows.std(1, correction=1) / w_rows.mean(1),
        "nc2_angle": (cos + 1.0 / (k - 1)).abs()[:, off].mean(1),
        "nc3_paper": 1.0 - ((w / w_rows.unsqueeze(-1)) * unit).sum(2).mean(1),
        "w_norm": w.flatten(1).norm(dim=1),
    }


@pytest.mark.parametrize("form", ["gram", "classes"])
def test_reduced_metrics_equal_hand_formulas_with_unbalanced_classes(form):
    """fn, within energy, nc1_trace, class-mean norms, equinorms, nc2_angle, nc3_paper and
    |W|_F of both reduced forms equal hand formulas in d space (unbalanced classes: the
    global mean is the sample mean, not the mean of the class means)."""
    model = ModelSpec(loss="mse", bias="free", classes=4, per_class=(1, 5, 2, 3), dim=16)
    h, w, b, _ = _params(model, seed=4)
    h = h + torch.linspace(-1.0, 2.0, 16, dtype=F64).view(1, -1, 1)  # a global-mean offset
    if form == "gram":
        obj = GramObjective(model, "cpu", F64)
        state = obj.from_parameters(h, w, b)
    else:
        obj = ClassMeansObjective(model, "cpu", F64)
        state = obj.from_parameters(h, w, b)
        gen = torch.Generator().manual_seed(11)
        obj.layout.view(state, "Phi").copy_(torch.randn(R, 16, 16, generator=gen, dtype=F64))
        h, _, _ = obj.parameters(state)
    got = obj.metrics(state)
    for name, want in _naive_metrics(model, h, w).items():
        torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-12, msg=name)


def test_gram_factor_of_a_float32_state_is_float32():
    """factor works in float64 internally but returns (H, W) in the state's dtype."""
    model = ModelSpec(loss="ce", bias="none", classes=3, per_class=2, dim=9)
    h, w, _, _ = _params(model, seed=5)
    gram = GramObjective(model, "cpu", torch.float32)
    state = gram.from_parameters(h.float(), w.float(), None)
    fh, fw = gram.factor(state)
    assert fh.dtype == torch.float32 and fw.dtype == torch.float32
    assert fh.shape == (R, 9, 6) and fw.shape == (R, 3, 9)
    torch.testing.assert_close(gram.from_parameters(fh, fw, None), state, rtol=1e-5, atol=1e-5)
