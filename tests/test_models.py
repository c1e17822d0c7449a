"""Objective, gradient and initial states of the UFM family."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim.errors import InputError
from ncsim.models import Penalties, UFMObjective, initial_state, label_modes
from ncsim.spec import InitSpec, ModelSpec, RunSpec

CASES = list(itertools.product(
    [("ufm", 1, "linear"), ("deep", 2, "relu"), ("deep", 3, "gelu"), ("deep", 2, "tanh"),
     ("deep", 3, "silu"), ("deep", 2, "leaky_relu"), ("deep", 4, "linear")],
    ["ce", "mse"], ["none", "free", "reg"],
))


def _random_penalties(depth: int, runs: int, seed: int) -> Penalties:
    gen = torch.Generator().manual_seed(seed)
    return Penalties(torch.rand(depth, runs, generator=gen, dtype=torch.float64),
                     torch.rand(runs, generator=gen, dtype=torch.float64),
                     torch.rand(runs, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize(("arch", "loss", "bias"), CASES)
def test_gradient_equals_autograd(arch, loss, bias):
    kind, depth, act = arch
    model = ModelSpec(kind=kind, depth=depth, activation=act, loss=loss, bias=bias, classes=4,
                      per_class=(3, 2, 4, 3), dim=5, width=6)
    obj = UFMObjective(model, "cpu", torch.float64)
    y = initial_state(model, [InitSpec(seed=i, scale=0.8) for i in range(3)], "cpu",
                      torch.float64)
    if bias != "none":
        y[:, -4:] = torch.randn(3, 4, dtype=torch.float64)
    pen = _random_penalties(depth, 3, 1)
    y.requires_grad_(True)
    _, f = obj.value(y, pen)
    (expected,) = torch.autograd.grad(f.sum(), y)
    got = obj.gradient(y.detach(), pen)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_objective_equals_naive_loop():
    model = ModelSpec(loss="ce", bias="reg", classes=3, per_class=(2, 3, 1), dim=4)
    obj = UFMObjective(model, "cpu", torch.float64)
    y = initial_state(model, [InitSpec(seed=3, scale=1.0)], "cpu", torch.float64)
    y[:, -3:] = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    pen = Penalties(torch.tensor([[0.1]], dtype=torch.float64),
                    torch.tensor([0.2], dtype=torch.float64),
                    torch.tensor([0.3], dtype=torch.float64))
    h = y[0, :24].view(4, 6).numpy()
    w = y[0, 24:36].view(3, 4).numpy()
    b = y[0, 36:].numpy()
    labels = [0, 0, 1, 1, 1, 2]
    total = 0.0
    for i, c in enumerate(labels):
        z = w @ h[:, i] + b
        total += -(z[c] - np.log(np.exp(z).sum()))
    expected = total / 6 + 0.05 * (w**2).sum() + 0.1 * (h**2).sum() + 0.15 * (b**2).sum()
    _, f = obj.value(y, pen)
    assert abs(float(f[0]) - expected) < 1e-13


@pytest.mark.parametrize(("loss", "bias", "modes"), [("mse", "none", 4), ("mse", "free", 3),
                                                     ("ce", "none", 3)])
def test_spectral_init_is_balanced_and_aligned(loss, bias, modes):
    model = ModelSpec(kind="deep", depth=3, loss=loss, bias=bias, classes=4, per_class=5, dim=7,
                      width=6)
    obj = UFMObjective(model, "cpu", torch.float64)
    a = 0.7
    y = initial_state(model, [InitSpec(kind="spectral", scale=a, seed=2)], "cpu",
                      torch.float64)
    for block in obj.layout.blocks:
        if block.name == "b":
            continue
        sv = torch.linalg.svdvals(obj.layout.view(y, block.name)[0])
        torch.testing.assert_close(sv[:modes], torch.full((modes,), a, dtype=torch.float64))
        assert float(sv[modes:].abs().sum()) < 1e-12
    z, _, _ = obj.forward(y)
    u, v = label_modes(model, centred=modes < 4)
    expected = a**4 * u @ v.T
    torch.testing.assert_close(z[0], expected)


def test_gaussian_init_independent_of_batch_and_dtype():
    model = ModelSpec(classes=3, per_class=2, dim=4)
    alone = initial_state(model, [InitSpec(seed=5)], "cpu", torch.float64)
    batch = initial_state(model, [InitSpec(seed=s) for s in (1, 5, 9)], "cpu", torch.float64)
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=0)
    f32 = initial_state(model, [InitSpec(seed=5)], "cpu", torch.float32)
    torch.testing.assert_close(f32.double(), alone, rtol=1e-7, atol=0)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(("kind", "depth", "bias"), [("ufm", 1, "none"), ("ufm", 1, "free"),
                                                     ("deep", 3, "reg")])
def test_initial_state_equals_per_run_draws_on_any_number_of_threads(kind, depth, bias,
                                                                     threads):
    """The batch's states, drawn in place (on several threads above 16 runs per thread),
    are bit for bit the per-run ``randn`` draws of :func:`initial_parts` stacked; a spectral
    and an explicit init go through the same path."""
    from ncsim.models import initial_parts
    from ncsim.models.ufm import state_layout

    model = ModelSpec(kind=kind, depth=depth, activation="tanh", bias=bias, classes=3,
                      per_class=(2, 3, 2), dim=5, width=4)
    inits = [InitSpec(seed=s, scale=0.1 + 0.01 * s) for s in range(60)]
    inits[7] = InitSpec(kind="spectral", scale=0.5, seed=7)
    layout = state_layout(model)
    expected = torch.cat([layout.pack({k: v.unsqueeze(0) for k, v in
                                       initial_parts(model, i).items()}) for i in inits])
    with torch_threads(threads):
        got = initial_state(model, inits, "cpu", torch.float64)
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], got[1])


def test_etf_init_needs_enough_dimensions():
    spec = RunSpec(model=ModelSpec(classes=10, dim=8), init=InitSpec(kind="etf"))
    with pytest.raises(InputError, match="needs d"):
        spec.validate()
    RunSpec(model=ModelSpec(classes=10, dim=9), init=InitSpec(kind="etf")).validate()


def test_arrays_init_round_trip():
    model = ModelSpec(loss="mse", bias="free", classes=3, per_class=2, dim=4)
    rng = np.random.default_rng(0)
    arrays = {"H": rng.normal(size=(4, 6)), "W": [rng.normal(size=(3, 4))], "b": rng.normal(size=3)}
    y = initial_state(model, [InitSpec(kind="arrays", arrays=arrays)], "cpu", torch.float64)
    obj = UFMObjective(model, "cpu", torch.float64)
    np.testing.assert_array_equal(obj.layout.view(y, "H")[0].numpy(), arrays["H"])
    np.testing.assert_array_equal(obj.layout.view(y, "b")[0].numpy(), arrays["b"])
    bad = {"H": rng.normal(size=(5, 6)), "W": [rng.normal(size=(3, 4))]}
    with pytest.raises(InputError, match="shape"):
        initial_state(model, [InitSpec(kind="arrays", arrays=bad)], "cpu", torch.float64)


@pytest.mark.parametrize(("arch", "bias"), [(("ufm", 1, "linear"), "reg"),
                                            (("ufm", 1, "linear"), "none"),
                                            (("deep", 2, "tanh"), "free")])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_velocity_into_a_stage_buffer_is_minus_eta_gradient(arch, loss, bias):
    """velocity(out=) writes -eta grad f into a slice of an (S, R, P) buffer, scalar or per-entry
    eta, and leaves the other slices alone."""
    kind, depth, act = arch
    model = ModelSpec(kind=kind, depth=depth, activation=act, loss=loss, bias=bias, classes=3,
                      per_class=(2, 3, 2), dim=4, width=5)
    obj = UFMObjective(model, "cpu", torch.float64)
    y = initial_state(model, [InitSpec(seed=i, scale=0.8) for i in range(3)], "cpu",
                      torch.float64)
    pen = _random_penalties(depth, 3, 2)
    grad = obj.gradient(y, pen)
    per_entry = torch.rand(y.shape, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64) + 0.5
    for eta in (1.0, 2.5, per_entry):
        buf = torch.full((3, *y.shape), 9.0, dtype=torch.float64)
        out = obj.velocity(y, pen, eta, out=buf[1])
        assert out.data_ptr() == buf[1].data_ptr()
        torch.testing.assert_close(buf[1], -eta * grad, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(obj.velocity(y, pen, eta), -eta * grad, rtol=1e-13,
                                   atol=1e-15)
        assert (buf[0] == 9.0).all() and (buf[2] == 9.0).all()


def test_layout_pack_into_a_buffer_equals_concatenation():
    from ncsim.models.ufm import state_layout

    model = ModelSpec(loss="mse", bias="reg", classes=3, per_class=2, dim=4)
    lay = state_layout(model)
    gen = torch.Generator().manual_seed(1)
    parts = {b.name: torch.randn(2, *b.shape, generator=gen) for b in lay.blocks}
    buf = torch.zeros(3, 2, lay.size)
    lay.pack(parts, out=buf[2])
    torch.testing.assert_close(buf[2], lay.pack(parts), rtol=0, atol=0)
    assert (buf[:2] == 0).all()


@pytest.mark.parametrize("name", ["mse", "ce"])
def test_loss_value_and_logit_gradient_against_torch(name):
    """loss_value equals torch's cross-entropy / the MSE formula, and logit_gradient equals
    autograd's gradient of loss_value (without touching its input for CE)."""
    from ncsim.models.losses import logit_gradient, loss_value

    gen = torch.Generator().manual_seed(2)
    logits = 3.0 * torch.randn(4, 5, 7, generator=gen, dtype=torch.float64)
    labels = torch.arange(7) % 5
    onehot = torch.nn.functional.one_hot(labels, 5).T.double()
    if name == "ce":
        want = torch.stack([torch.nn.functional.cross_entropy(z.T, labels) for z in logits])
    else:
        want = 0.5 * ((logits - onehot) ** 2).sum((1, 2)) / 7
    torch.testing.assert_close(loss_value(name, logits, onehot), want, rtol=1e-14, atol=0)
    z = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_value(name, z, onehot).sum(), z)
    given = logits.clone()
    torch.testing.assert_close(logit_gradient(name, given, onehot), grad, rtol=1e-13,
                               atol=1e-16)
    if name == "ce":
        assert torch.equal(given, logits)
    with pytest.raises(ValueError, match="unknown loss"):
        loss_value("hinge", logits, onehot)


def test_layout_view_is_the_sliced_view_of_any_state():
    """``StateLayout.view`` gives ``state[:, start:stop].view(R, *shape)``: same values, same
    memory (a write through it lands in the state), for a contiguous state, a row subset (a
    storage offset) and a state with a column stride; a state of another width is refused."""
    from ncsim.models.layout import StateLayout

    lay = StateLayout([("Z", (3, 4)), ("A", (3, 3)), ("B", (4, 4)), ("b", (3,))])
    base = torch.randn(lay.size, 6, dtype=torch.float64)
    states = {"contiguous": torch.randn(3, lay.size, dtype=torch.float64),
              "rows 1..2": torch.randn(3, lay.size, dtype=torch.float64)[1:],
              "column stride 6": base.T[2:4]}
    for label, state in states.items():
        for block in lay.blocks:
            got = lay.view(state, block.name)
            want = state[:, block.start:block.stop].view(state.shape[0], *block.shape)
            assert torch.equal(got, want), (label, block.name)
            assert got.stride() == want.stride() and got.data_ptr() == want.data_ptr()
        lay.view(state, "B")[:, 1, 2] = 7.0
        assert torch.all(state[:, lay["B"].start + 6] == 7.0), label
    with pytest.raises(ValueError, match=f"state must be \\(R, {lay.size}\\)"):
        lay.view(torch.zeros(2, lay.size - 1, dtype=torch.float64), "Z")
    with pytest.raises(ValueError, match="state must be"):
        lay.view(torch.zeros(lay.size, dtype=torch.float64), "Z")
