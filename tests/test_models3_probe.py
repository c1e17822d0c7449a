"""Third probe of ncsim.models: the seed range of the draws, the spectral init as the documented
draw from the run's own generator, unknown init kinds, and -eta grad f for any scalar eta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.models.init import float_array, initial_parts, initial_state, label_modes
from ncsim.models.ufm import Penalties, UFMObjective
from ncsim.spec import InitSpec, ModelSpec

F64 = torch.float64


def _gram_schmidt(g: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns of ``g`` by modified Gram-Schmidt (the Q of the QR with diag R > 0)."""
    cols = []
    for j in range(g.shape[1]):
        v = g[:, j].clone()
        for q in cols:
            v = v - (q @ v) * q
        cols.append(v / v.norm())
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("kind", ["gaussian", "spectral"])
def test_negative_seed_is_refused_rather_than_aliased(kind):
    """Seed -1 is refused with the out-of-range error (torch would take it as 2^64 - 1, whose
    low 32 bits are seed 2^32 - 1's)."""
    model = ModelSpec(kind="deep", depth=2, loss="mse", classes=2, per_class=2, dim=3, width=3)
    with pytest.raises(InputError, match=r"^seed -1 is out of range: seeds of the initial state "
                                         r"are integers in \[0, 2\^32\)"):
        initial_state(model, [InitSpec(kind=kind, seed=-1)], "cpu", F64)


@pytest.mark.parametrize(("seed", "loss", "bias", "centred"),
                         [(3, "mse", "none", False), (11, "ce", "free", True)])
def test_deep_spectral_init_is_the_documented_draw_of_the_runs_seed(seed, loss, bias, centred):
    """Spectral depth 3: U_0 (d, r), U_1, U_2 (width, r) are the Haar columns of successive
    randn draws of the run's generator; H = a U_0 V^T, W_1 = a U_1 U_0^T, W_2 = a U_2 U_1^T,
    W_3 = a U_K U_2^T (reference: Gram-Schmidt of the same draws)."""
    model = ModelSpec(kind="deep", depth=3, activation="tanh", loss=loss, bias=bias, classes=3,
                      per_class=(2, 1, 3), dim=5, width=4)
    a = 0.6
    u_k, v = label_modes(model, centred)
    r = u_k.shape[1]
    gen = torch.Generator().manual_seed(seed)
    bases = [_gram_schmidt(torch.randn(rows, r, generator=gen, dtype=F64)) for rows in (5, 4, 4)]
    bases.append(u_k)
    want = {"H": a * bases[0] @ v.T}
    for l in range(3):
        want[f"W{l + 1}"] = a * bases[l + 1] @ bases[l].T
    got = initial_parts(model, InitSpec(kind="spectral", scale=a, seed=seed))
    assert sorted(got) == sorted(want) + (["b"] if bias != "none" else [])
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-13, msg=name)
    if bias != "none":
        assert torch.equal(got["b"], torch.zeros(3, dtype=F64))


def test_unknown_init_kind_is_refused_with_its_name():
    """An init kind outside gaussian/spectral/etf/arrays is an InputError naming it (no draw)."""
    model = ModelSpec(loss="ce", classes=2, per_class=1, dim=2)
    with pytest.raises(InputError, match=r"^unknown init 'orthogonal'$"):
        initial_parts(model, InitSpec(kind="orthogonal"))
    with pytest.raises(InputError, match=r"^unknown init 'orthogonal'$"):
        initial_state(model, [InitSpec(kind="orthogonal")], "cpu", F64)


@pytest.mark.parametrize(("kind", "depth"), [("ufm", 1), ("deep", 2)])
@pytest.mark.parametrize("eta", [-0.5, 0.0, 2.0])
def test_velocity_is_minus_eta_gradient_for_any_scalar_eta(kind, depth, eta):
    """velocity(eta) = -eta grad f for a scalar eta of either sign (one-layer fused path and the
    deep path), into a fresh tensor and into ``out``."""
    model = ModelSpec(kind=kind, depth=depth, activation="linear", loss="ce", bias="reg",
                      classes=2, per_class=(1, 2), dim=2, width=3 if depth > 1 else None)
    obj = UFMObjective(model, "cpu", F64)
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(2, obj.layout.size, generator=gen, dtype=F64)
    pen = Penalties(torch.full((depth, 2), 0.3, dtype=F64), torch.tensor([0.2, 0.1], dtype=F64),
                    torch.tensor([0.4, 0.7], dtype=F64))
    grad = obj.gradient(y, pen)
    assert float(grad.abs().max()) > 0.1
    torch.testing.assert_close(obj.velocity(y, pen, eta), -eta * grad, rtol=1e-14, atol=1e-15)
    out = torch.full_like(y, float("nan"))
    obj.velocity(y, pen, eta, out=out)
    torch.testing.assert_close(out, -eta * grad, rtol=1e-14, atol=1e-15)


def test_wide_deep_head_of_depth_one_keeps_the_entry_by_entry_torch_draw():
    """kind 'deep' with depth 1 and d > N + K is not the one-layer UFM of the Gram-factor draw:
    its gaussian start is torch's randn of H then W1 from the seed, times scale."""
    model = ModelSpec(kind="deep", depth=1, loss="mse", classes=2, per_class=1, dim=6)
    got = initial_parts(model, InitSpec(seed=9, scale=0.3))
    gen = torch.Generator().manual_seed(9)
    h = 0.3 * torch.randn(6, 2, generator=gen, dtype=F64)
    w = 0.3 * torch.randn(2, 6, generator=gen, dtype=F64)
    torch.testing.assert_close(got["H"], h, rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(got["W1"], w, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("value", [np.array([[0.5, True]], dtype=object), [[True, None]],
                                   np.array([[1.0, np.bool_(False)]], dtype=object)])
def test_init_array_of_objects_holding_a_flag_is_refused(value):
    """An object array that mixes numbers (or None) with a flag is refused, not read as 1/0."""
    with pytest.raises(InputError, match=r"^init array W1 must be an array of numbers, got "):
        float_array("W1", value)
