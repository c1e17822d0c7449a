"""Second probe of ncsim.models: the deep objective and fused velocity against autograd of a
plain objective written out here, block positions of the layout, and the seeds of the inits."""

from __future__ import annotations

import pytest
import torch

from ncsim.errors import InputError
from ncsim.models.init import initial_state
from ncsim.models.ufm import Penalties, UFMObjective, state_layout
from ncsim.spec import SEED_LIMIT, InitSpec, ModelSpec

F64 = torch.float64


def _leaky(u, slope):
    return torch.where(u > 0, u, slope * u)


def _plain_objective(h, w1, w2, b, labels, lam_w, lam_h, lam_b, slope):
    """f of a depth-2 leaky-relu head with CE, written out sample by sample."""
    n = h.shape[1]
    total = 0.0
    for i in range(n):
        z = w2 @ _leaky(w1 @ h[:, i], slope) + b
        total = total - (z[labels[i]] - torch.logsumexp(z, dim=0))
    return (total / n + lam_w[0] / 2 * (w1**2).sum() + lam_w[1] / 2 * (w2**2).sum()
            + lam_h / 2 * (h**2).sum() + lam_b / 2 * (b**2).sum())


def test_deep_leaky_value_and_per_block_velocity_equal_the_plain_objective():
    """value and -eta grad f (per-block eta) of a depth-2 leaky head equal the plain f."""
    model = ModelSpec(kind="deep", depth=2, activation="leaky_relu", leaky_slope=0.3, loss="ce",
                      bias="reg", classes=3, per_class=(2, 1, 2), dim=3, width=4)
    obj = UFMObjective(model, "cpu", F64)
    lay = obj.layout
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(1, lay.size, generator=gen, dtype=F64)
    lam_w, lam_h, lam_b = (0.11, 0.23), 0.37, 0.53
    pen = Penalties(torch.tensor([[lam_w[0]], [lam_w[1]]], dtype=F64),
                    torch.tensor([lam_h], dtype=F64), torch.tensor([lam_b], dtype=F64))
    etas = {"H": 0.5, "W1": 1.5, "W2": 2.5, "b": 4.0}
    eta = lay.expand_per_block({k: torch.tensor([v], dtype=F64) for k, v in etas.items()})
    parts = {k: lay.view(y, k)[0].clone().requires_grad_(True) for k in etas}
    f = _plain_objective(parts["H"], parts["W1"], parts["W2"], parts["b"], [0, 0, 1, 2, 2],
                         lam_w, lam_h, lam_b, 0.3)
    grads = torch.autograd.grad(f, [parts[k] for k in etas])
    expected = torch.cat([-etas[k] * g.reshape(-1) for k, g in zip(etas, grads, strict=True)])
    assert [b.name for b in lay.blocks] == ["H", "W1", "W2", "b"]
    _, value = obj.value(y, pen)
    assert abs(float(value[0]) - float(f.detach())) < 1e-12
    torch.testing.assert_close(obj.velocity(y, pen, eta)[0], expected, rtol=1e-12, atol=1e-14)
    out = torch.full_like(y, float("nan"))
    obj.velocity(y, pen, eta, out=out)
    torch.testing.assert_close(out[0], expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(obj.velocity(y, pen, 3.0)[0] * eta[0] / 3.0, expected,
                               rtol=1e-12, atol=1e-14)


def test_one_layer_mse_value_and_fused_velocity_by_hand():
    """d = 1, K = N = 2: f = (1/2N)|Z - Y|^2 + lambda/2 penalties and -eta grad f by hand."""
    model = ModelSpec(loss="mse", bias="reg", classes=2, per_class=1, dim=1)
    obj = UFMObjective(model, "cpu", F64)
    y = torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.5, -0.5]], dtype=F64)  # H, W, b
    pen = Penalties(torch.tensor([[0.2]], dtype=F64), torch.tensor([0.4], dtype=F64),
                    torch.tensor([0.6], dtype=F64))
    loss, f = obj.value(y, pen)
    assert abs(float(loss[0]) - 15.75) < 1e-13
    assert abs(float(f[0]) - 17.9) < 1e-13
    grad = torch.tensor([4.9, 12.3, 8.35, -4.45, 4.8, -2.8], dtype=F64)
    torch.testing.assert_close(obj.gradient(y, pen)[0], grad, rtol=1e-14, atol=1e-13)
    torch.testing.assert_close(obj.velocity(y, pen, 2.0)[0], -2.0 * grad, rtol=1e-14,
                               atol=1e-13)
    out = torch.full_like(y, float("nan"))
    obj.velocity(y, pen, 0.5, out=out)
    torch.testing.assert_close(out[0], -0.5 * grad, rtol=1e-14, atol=1e-13)


def test_penultimate_features_of_a_nonlinear_head_pass_through_the_activation():
    """penultimate() of a depth-3 tanh head is tanh(W2 tanh(W1 H)) as rows."""
    model = ModelSpec(kind="deep", depth=3, activation="tanh", loss="mse", bias="none",
                      classes=2, per_class=2, dim=3, width=4)
    obj = UFMObjective(model, "cpu", F64)
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(1, obj.layout.size, generator=gen, dtype=F64)
    h, w1, w2, w3 = (obj.layout.view(y, k)[0] for k in ("H", "W1", "W2", "W3"))
    feats, classifier, bias = obj.penultimate(y)
    torch.testing.assert_close(feats[0], torch.tanh(w2 @ torch.tanh(w1 @ h)).T)
    torch.testing.assert_close(classifier[0], w3)
    assert bias is None


def test_layout_blocks_land_where_documented_and_pack_round_trips():
    """H, W1..WL, b sit back to back in that order; pack of the views gives the state back."""
    model = ModelSpec(kind="deep", depth=2, loss="mse", bias="free", classes=3, per_class=2,
                      dim=4, width=5)
    lay = state_layout(model)
    n = 6
    spans = [(b.name, b.shape, b.start, b.stop) for b in lay.blocks]
    assert spans == [("H", (4, n), 0, 24), ("W1", (5, 4), 24, 44), ("W2", (3, 5), 44, 59),
                     ("b", (3,), 59, 62)]
    assert lay.size == 62
    y = torch.arange(2 * 62, dtype=F64).view(2, 62)
    assert lay.view(y, "W2")[1, 0, 0] == 62 + 44
    assert lay.view(y, "b")[0].tolist() == [59.0, 60.0, 61.0]
    parts = {b.name: lay.view(y, b.name) for b in lay.blocks}
    assert torch.equal(lay.pack(parts), y)
    assert torch.equal(lay.pack(parts, out=torch.zeros_like(y)), y)


@pytest.mark.parametrize("kind", ["gaussian", "spectral"])
def test_seed_two_to_the_32_is_refused_and_the_largest_seed_drawn(kind):
    """initial_state refuses seed 2^32 (it would alias seed 0) and draws seed 2^32 - 1."""
    model = ModelSpec(loss="mse", classes=2, per_class=2, dim=3)
    ok = initial_state(model, [InitSpec(kind=kind, seed=SEED_LIMIT - 1)], "cpu", F64)
    assert bool(torch.isfinite(ok).all())
    with pytest.raises(InputError, match=r"seed 4294967296 is out of range"):
        initial_state(model, [InitSpec(kind=kind, seed=SEED_LIMIT)], "cpu", F64)


def test_each_gaussian_run_is_drawn_from_its_own_seed():
    """Runs with seeds 0 and 5 are torch's N(0, scale^2) draws of H then W from that seed."""
    model = ModelSpec(kind="deep", depth=2, loss="mse", classes=2, per_class=2, dim=3, width=3)
    y = initial_state(model, [InitSpec(seed=0, scale=0.5), InitSpec(seed=5, scale=0.5)],
                      "cpu", F64)
    for row, seed in zip(y, (0, 5), strict=True):
        gen = torch.Generator().manual_seed(seed)
        blocks = [0.5 * torch.randn(n, generator=gen, dtype=F64) for n in (12, 9, 6)]
        torch.testing.assert_close(row, torch.cat(blocks), rtol=1e-15, atol=1e-15)
