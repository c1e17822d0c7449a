"""Deep UFM heads, activations, losses, layouts and tableaus against values known in advance.

The expected values here are closed forms (a zero classifier leaves only the decays on the
hidden factors; a constant logit gives a known loss and bias gradient), the activations'
formulas and torch's autograd of them, the published Runge-Kutta interpolants, and hand
loops over samples, written without the package's model code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_models_deep_flows import _act, _blocks

from ncsim.flow.simulate import _Batch
from ncsim.flow.tableau import tableau
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models.activations import activation
from ncsim.models.losses import logit_gradient, loss_value
from ncsim.models.reduction import state_form
from ncsim.models.ufm import state_layout
from ncsim.spec import (
    ACTIVATIONS,
    InitSpec,
    ModelSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------

def _formula(name: str, u: torch.Tensor, slope: float) -> torch.Tensor:
    """The activation from its formula, tanh as torch.tanh: the autograd derivative of the
    deep-flow tests' sinh/cosh cancels where |u| > 5, that of torch.tanh is 1 - tanh^2."""
    return torch.tanh(u) if name == "tanh" else _act(name, u, slope)


GRID = torch.tensor([-40.0, -8.0, -3.0, -1.3, -0.5, -1e-3, 1e-3, 0.25, 0.9, 2.0, 5.5, 9.0,
                     40.0], dtype=F64)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_and_its_derivative_equal_the_formula_and_autograd(name):
    """sigma equals its textbook formula and sigma' equals torch's autograd of that formula on a
    grid from -40 to 40 (tails of gelu and silu included; no point at a kink), to a few units
    in the last place of 1 (1 - tanh^2 loses its relative precision where it is tiny);
    leaky_relu with the non-default slope 0.3."""
    slope = 0.3
    sigma, sigma_grad = activation(name, slope)
    u = GRID.clone().requires_grad_(True)
    want = _formula(name, u, slope)
    (want_grad,) = torch.autograd.grad(want.sum(), u)
    torch.testing.assert_close(sigma(GRID), want.detach(), rtol=1e-15, atol=1e-300)
    torch.testing.assert_close(sigma_grad(GRID), want_grad, rtol=4e-15, atol=2e-16)


def test_gelu_and_silu_derivatives_at_known_points():
    """gelu'(0) = 1/2, gelu'(1) = Phi(1) + phi(1), silu'(0) = 1/2 and
    silu'(u) = s (1 + u (1 - s)) with s = 1/(1 + e^-u): values computed here with math."""
    _, gelu_grad = activation("gelu")
    _, silu_grad = activation("silu")
    u = torch.tensor([0.0, 1.0, -2.0], dtype=F64)
    phi = [math.exp(-x * x / 2) / math.sqrt(2 * math.pi) for x in (0.0, 1.0, -2.0)]
    cdf = [0.5 * math.erfc(-x / math.sqrt(2)) for x in (0.0, 1.0, -2.0)]
    want = [c + x * p for c, x, p in zip(cdf, (0.0, 1.0, -2.0), phi, strict=True)]
    assert gelu_grad(u).tolist() == pytest.approx(want, rel=1e-15, abs=1e-17)
    assert want[0] == 0.5 and abs(want[1] - 1.0833154705876864) < 1e-15
    s = [1 / (1 + math.exp(-x)) for x in (0.0, 1.0, -2.0)]
    want = [si * (1 + x * (1 - si)) for si, x in zip(s, (0.0, 1.0, -2.0), strict=True)]
    assert silu_grad(u).tolist() == pytest.approx(want, rel=1e-15)
    assert want[0] == 0.5


def test_leaky_relu_default_slope_is_torchs():
    """Without a slope, leaky_relu uses 0.01 (the documented default, torch's too): on u = -2
    the value is -0.02 and the derivative 0.01; an unknown name is refused."""
    sigma, sigma_grad = activation("leaky_relu")
    u = torch.tensor([-2.0, 3.0], dtype=F64)
    assert sigma(u).tolist() == [-0.02, 3.0]
    assert sigma_grad(u).tolist() == [0.01, 1.0]
    assert torch.equal(sigma(u), torch.nn.functional.leaky_relu(u))
    with pytest.raises(ValueError, match="unknown activation"):
        activation("softplus")


# --------------------------------------------------------------------------------------------
# losses: normalisation by N
# --------------------------------------------------------------------------------------------


def test_losses_of_constant_logits_are_the_closed_forms():
    """Every sample with the same logits z = c (K = 3, counts (1, 2, 3), N = 6): CE is
    log sum_j e^{c_j} - sum_k (n_k / N) c_k and its gradient column (softmax(c) - e_y)/N;
    MSE is (1/2N) sum_i |c - e_{y_i}|^2 and its gradient (c - e_y)/N. Dividing by K or
    dropping 1/2 would change every value."""
    c = np.array([0.3, -1.1, 0.7])
    counts = np.array([1, 2, 3])
    n = int(counts.sum())
    labels = np.repeat(np.arange(3), counts)
    onehot = torch.from_numpy(np.eye(3)[:, labels])
    z = torch.from_numpy(np.repeat(c[:, None], n, axis=1))[None]
    lse = math.log(sum(math.exp(x) for x in c))
    assert float(loss_value("ce", z, onehot)[0]) == pytest.approx(
        lse - float(counts @ c) / n, rel=1e-15)
    mse = sum(0.5 * float(((c - np.eye(3)[y]) ** 2).sum()) for y in labels) / n
    assert float(loss_value("mse", z, onehot)[0]) == pytest.approx(mse, rel=1e-15)
    p = np.exp(c - lse)
    want_ce = (p[:, None] - np.eye(3)[:, labels]) / n
    np.testing.assert_allclose(logit_gradient("ce", z.clone(), onehot)[0].numpy(), want_ce,
                               rtol=1e-14, atol=1e-17)
    want_mse = (c[:, None] - np.eye(3)[:, labels]) / n
    np.testing.assert_allclose(logit_gradient("mse", z.clone(), onehot)[0].numpy(), want_mse,
                               rtol=1e-14, atol=1e-17)


# --------------------------------------------------------------------------------------------
# the deep objective at a zero classifier
# --------------------------------------------------------------------------------------------

ZERO_CASES = [(depth, act, loss) for depth, act in [(2, "relu"), (3, "gelu"), (4, "linear"),
                                                    (3, "leaky_relu"), (2, "silu"),
                                                    (3, "tanh")]
              for loss in ("ce", "mse")]


@pytest.mark.parametrize(("depth", "act", "loss"), ZERO_CASES)
def test_zero_classifier_leaves_the_decays_and_the_bias_closed_form(depth, act, loss):
    """With W_L = 0 the logits are b for every sample and no data gradient reaches H or
    W_1 .. W_{L-1}: their velocity is exactly -eta_block lambda_block times the block (each
    layer its own decay and time scale). The bias moves by -eta_b (softmax(b) - n/N +
    lambda_b b) for CE, -eta_b (b - n/N + lambda_b b) for MSE (n the class counts), W_L by
    -eta_L (1/N) sum_i g_i a_i^T, and f is the loss of the constant logit b plus the decays."""
    counts = (1, 3, 2)
    model = ModelSpec(kind="deep", depth=depth, activation=act, loss=loss, bias="reg",
                      classes=3, per_class=counts, dim=3, width=4, leaky_slope=0.2)
    lws = tuple(0.05 * (l + 1) for l in range(depth))
    etas = tuple(0.5 + 0.25 * l for l in range(depth))
    spec = RunSpec(model=model, reg=Regularization(lambda_w=lws, lambda_h=0.07, lambda_b=0.3),
                   time_scale=TimeScale(eta_h=1.7, eta_w=etas, eta_b=0.6),
                   solver=SolverSpec(reduction="none"))
    batch = _Batch([spec])
    state = torch.randn(batch.y0.shape, generator=torch.Generator().manual_seed(depth),
                        dtype=F64)
    h, ws, b = _blocks(model, state[0])
    ws[-1].zero_()
    vel_h, vel_ws, vel_b = _blocks(model, batch.velocity(state)[0])
    torch.testing.assert_close(vel_h, -1.7 * 0.07 * h, rtol=1e-15, atol=0)
    for l in range(depth - 1):
        torch.testing.assert_close(vel_ws[l], -etas[l] * lws[l] * ws[l], rtol=1e-15, atol=0)
    n = sum(counts)
    share = torch.tensor(counts, dtype=F64) / n
    bb = b.clone()
    if loss == "ce":
        want_b = torch.softmax(bb, 0) - share
        data = float(torch.logsumexp(bb, 0) - (share * bb).sum())
    else:
        want_b = bb - share
        data = sum(0.5 * float(((bb - torch.eye(3, dtype=F64)[c]) ** 2).sum())
                   for c, k in enumerate(counts) for _ in range(k)) / n
    torch.testing.assert_close(vel_b, -0.6 * (want_b + 0.3 * bb), rtol=1e-13, atol=1e-16)
    # W_L: (1/N) sum_i g_i a_i^T, a_i the penultimate feature of sample i, by a sample loop
    labels = [c for c, k in enumerate(counts) for _ in range(k)]
    grad_wl = torch.zeros_like(ws[-1])
    for i, c in enumerate(labels):
        a = h[:, i]
        for w in ws[:-1]:
            a = _act(act, w @ a, 0.2)
        g = (torch.softmax(bb, 0) if loss == "ce" else bb.clone())
        g[c] -= 1.0
        grad_wl += torch.outer(g, a) / n
    torch.testing.assert_close(vel_ws[-1], -etas[-1] * grad_wl, rtol=1e-13, atol=1e-16)
    loss_got, f_got = batch.objective.value(state, batch.penalties)
    decay = 0.07 / 2 * float((h ** 2).sum()) + 0.3 / 2 * float((bb ** 2).sum())
    decay += sum(lam / 2 * float((w ** 2).sum()) for lam, w in zip(lws, ws, strict=True))
    assert float(loss_got[0]) == pytest.approx(data, rel=1e-14)
    assert float(f_got[0]) == pytest.approx(data + decay, rel=1e-14)


# --------------------------------------------------------------------------------------------
# penultimate features, classifier and bias of a deep head, and the records built on them
# --------------------------------------------------------------------------------------------

HEADS = [(2, "relu"), (3, "tanh"), (2, "gelu"), (3, "leaky_relu"), (4, "linear"), (1, "linear")]


@pytest.mark.parametrize(("depth", "act"), HEADS)
def test_penultimate_is_the_classifier_input_with_the_stored_classifier_and_bias(depth, act):
    """``penultimate`` returns sigma(W_{L-1} ... sigma(W_1 h_i)) for each sample (H itself at
    depth 1) as rows, and the classifier W_L and bias b exactly as stored in the state; the
    records' metrics of that state are nc_metrics of exactly these (the same numbers as
    computed from a sample loop here)."""
    kind = "ufm" if depth == 1 else "deep"
    model = ModelSpec(kind=kind, depth=depth, activation=act, loss="ce", bias="free",
                      classes=3, per_class=(2, 3, 2), dim=4,
                      width=None if depth == 1 else 5, leaky_slope=0.2 if act == "leaky_relu"
                      else 0.01)
    batch = _Batch([RunSpec(model=model, init=InitSpec(seed=s, scale=0.9),
                            solver=SolverSpec(reduction="none")) for s in (1, 2)])
    state = batch.y0.clone()
    state[:, -3:] = torch.tensor([[0.4, -0.3, 0.1], [-0.2, 0.5, 0.0]], dtype=F64)
    feats, weights, bias = batch.objective.penultimate(state)
    labels = [c for c, k in enumerate((2, 3, 2)) for _ in range(k)]
    for r in range(2):
        h, ws, b = _blocks(model, state[r])
        for i in range(len(labels)):
            a = h[:, i]
            for w in ws[:-1]:
                a = _act(act, w @ a, model.leaky_slope)
            torch.testing.assert_close(feats[r, i], a, rtol=1e-13, atol=1e-14)
        assert torch.equal(weights[r], ws[-1]) and torch.equal(bias[r], b)
    records = batch.record(state, torch.arange(2))
    want = nc_metrics(feats.clone(), torch.tensor(labels), 3, weights.clone(), bias.clone())
    names = list(METRIC_NAMES)
    got = records[:, 2:2 + len(names)]
    for j, name in enumerate(names):
        torch.testing.assert_close(got[:, j], want[name], rtol=1e-12, atol=1e-14, msg=name)


def test_nc4_of_a_deep_head_counts_the_bias_by_a_sample_loop():
    """NC4 recorded for a deep relu head with a large bias on class 0 (every logit argmax is
    class 0 through the bias alone) equals the share of samples whose nearest class mean
    (of the penultimate features, by a loop here) is not class 0; without the bias the
    classifier alone would decide, and the state is chosen so the two counts differ."""
    model = ModelSpec(kind="deep", depth=2, activation="relu", loss="ce", bias="free",
                      classes=3, per_class=(2, 2, 3), dim=3, width=4)
    batch = _Batch([RunSpec(model=model, init=InitSpec(seed=1, scale=1.0),
                            solver=SolverSpec(reduction="none"))])
    state = batch.y0.clone()
    state[0, -3:] = torch.tensor([50.0, 0.0, 0.0], dtype=F64)
    h, ws, b = _blocks(model, state[0])
    labels = [0, 0, 1, 1, 2, 2, 2]
    feats = [torch.relu(ws[0] @ h[:, i]) for i in range(7)]
    means = [sum(feats[i] for i in range(7) if labels[i] == c) / labels.count(c)
             for c in range(3)]
    nearest = [min(range(3), key=lambda c, f=f: float((f - means[c]).norm())) for f in feats]
    plain = [int(torch.argmax(ws[1] @ f)) for f in feats]
    with_bias = [int(torch.argmax(ws[1] @ f + b)) for f in feats]
    assert with_bias == [0] * 7
    want = sum(n != 0 for n in nearest) / 7
    assert want != sum(p != n for p, n in zip(plain, nearest, strict=True)) / 7
    records = batch.record(state, torch.arange(1))
    got = float(records[0, 2 + list(METRIC_NAMES).index("nc4")])
    assert got == pytest.approx(want, abs=1e-15)


# --------------------------------------------------------------------------------------------
# state layout of a deep head
# --------------------------------------------------------------------------------------------


def test_deep_layout_offsets_and_per_block_values():
    """The flat state of a depth-3 head with width 5 and a bias is H (d N = 4 x 7), W_1 (5 x 4),
    W_2 (5 x 5), W_3 (3 x 5), b (3): offsets 0, 28, 48, 73, 88, size 91; per-block scalars
    expand onto exactly those spans, in that order, also for eleven layers."""
    model = ModelSpec(kind="deep", depth=3, activation="tanh", bias="reg", classes=3,
                      per_class=(2, 2, 3), dim=4, width=5)
    lay = state_layout(model)
    assert [(b.name, b.shape, b.start, b.stop) for b in lay.blocks] == [
        ("H", (4, 7), 0, 28), ("W1", (5, 4), 28, 48), ("W2", (5, 5), 48, 73),
        ("W3", (3, 5), 73, 88), ("b", (3,), 88, 91)]
    assert lay.size == 91
    values = {name: torch.tensor([float(i + 1), -float(i + 1)], dtype=F64)
              for i, name in enumerate(["H", "W1", "W2", "W3", "b"])}
    flat = lay.expand_per_block(values)
    want = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], [28, 20, 25, 15, 3])
    np.testing.assert_array_equal(flat[0].numpy(), want)
    np.testing.assert_array_equal(flat[1].numpy(), -want)
    state = torch.arange(2 * 91, dtype=F64).reshape(2, 91)
    assert float(lay.view(state, "W2")[1, 2, 3]) == 91 + 48 + 2 * 5 + 3
    assert float(lay.view(state, "b")[0, 2]) == 90
    # eleven layers: W10 and W11 come after W9 (layer order, not the order of the names)
    deep = ModelSpec(kind="deep", depth=11, activation="relu", bias="free", classes=2,
                     per_class=1, dim=2, width=3)
    lay = state_layout(deep)
    names = ["H"] + [f"W{l}" for l in range(1, 12)] + ["b"]
    assert [b.name for b in lay.blocks] == names
    sizes = [4, 6] + [9] * 9 + [6, 2]
    assert [b.start for b in lay.blocks] == list(np.cumsum([0, *sizes[:-1]]))
    flat = lay.expand_per_block({name: torch.tensor([float(i)], dtype=F64)
                                 for i, name in enumerate(names)})
    np.testing.assert_array_equal(flat[0].numpy(), np.repeat(np.arange(13.0), sizes))


# --------------------------------------------------------------------------------------------
# state forms
# --------------------------------------------------------------------------------------------


def test_auto_state_form_at_the_cost_boundary_and_explicit_forms():
    """"auto" takes the class-means form only where it costs strictly fewer multiply-adds,
    4 d + 3 K < 3 N: with K = 2 and N = 6 that is d = 2 (14 < 18), not d = 3 (18 = 18, a tie
    keeps the parameters); CE never takes it; an explicit form is returned as asked."""
    def mse(d: int, loss: str = "mse") -> ModelSpec:
        return ModelSpec(loss=loss, classes=2, per_class=3, dim=d)

    assert state_form(mse(2), "auto") == "classes"
    assert state_form(mse(3), "auto") == "none"
    assert state_form(mse(2, "ce"), "auto") == "none"
    deep = ModelSpec(kind="deep", depth=2, activation="relu", loss="mse", classes=2,
                     per_class=3, dim=2)
    assert state_form(deep, "auto") == "none"
    for form in ("none", "gram", "classes"):
        assert state_form(mse(3), form) == form


# --------------------------------------------------------------------------------------------
# tableaus: dense output and stability
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gd", "rk4", "dopri5", "tsit5"])
def test_dense_weights_start_at_zero_and_end_at_the_solution_weights(method):
    """dense_weights(theta) gives b_i(theta): 0 at theta = 0, the solution weights b at
    theta = 1 (the interpolant ends at the step's solution), and their sum is theta (a
    constant slope is followed exactly)."""
    tab = tableau(method)
    theta = np.array([0.0, 0.37, 1.0])
    w = tab.dense_weights(theta)
    assert w.shape == (3, tab.stages)
    np.testing.assert_array_equal(w[0], np.zeros(tab.stages))
    # tsit5's interpolant is built from 16-digit decimals: b(1) = b to about 1e-14
    tol = 1e-13 if method == "tsit5" else 1e-15
    np.testing.assert_allclose(w[2], tab.b, rtol=0, atol=tol)
    np.testing.assert_allclose(w.sum(axis=1), theta, rtol=0, atol=1e-14)


def test_rk4_dense_weights_are_the_published_polynomials():
    """RK4's continuous extension (Hairer, Norsett & Wanner II.6): b1 = t - 3t^2/2 + 2t^3/3,
    b2 = b3 = t^2 - 2t^3/3, b4 = -t^2/2 + 2t^3/3, at t = 0.3 and 0.8; Euler's is t."""
    for t in (0.3, 0.8):
        want = [t - 1.5 * t**2 + 2 * t**3 / 3, t**2 - 2 * t**3 / 3, t**2 - 2 * t**3 / 3,
                -0.5 * t**2 + 2 * t**3 / 3]
        np.testing.assert_allclose(tableau("rk4").dense_weights([t])[0], want, rtol=1e-14)
        assert tableau("gd").dense_weights([t])[0, 0] == t


def _one_step(tab, h: float, theta: float) -> tuple[float, float]:
    """(y(h), y(theta h)) of one step on dy/dt = -y from y = 1, stages by a loop here."""
    k = []
    for i in range(tab.stages):
        y_i = 1.0 + h * sum(tab.a[i, j] * k[j] for j in range(i))
        k.append(-y_i)
    end = 1.0 + h * sum(bi * ki for bi, ki in zip(tab.b, k, strict=True))
    inner = 1.0 + h * float(tab.dense_weights([theta])[0] @ np.array(k))
    return end, inner


@pytest.mark.parametrize(("method", "order", "dense_order"),
                         [("rk4", 4, 3), ("dopri5", 5, 4), ("tsit5", 5, 4)])
def test_local_errors_of_the_step_and_its_interpolant_have_the_stated_orders(
        method, order, dense_order):
    """On dy/dt = -y one step of size h errs by O(h^(p+1)) at its end and the interpolant by
    O(h^(q+1)) inside (p the order, q the dense-output order): halving h divides the errors by
    about 2^(p+1) and 2^(q+1) (measured exponents within 0.35; Tsitouras' small leading
    constant lets the next term show at h = 0.1, exponent 6.24 there, so the steps are
    small; the smallest errors are ~1e-12 to 1e-14, far above rounding)."""
    hs = [0.1, 0.05, 0.025]
    theta = 0.43
    end_err, inner_err = [], []
    for h in hs:
        end, inner = _one_step(tableau(method), h, theta)
        end_err.append(abs(end - math.exp(-h)))
        inner_err.append(abs(inner - math.exp(-theta * h)))
    end_rates = np.log2(np.array(end_err[:-1]) / np.array(end_err[1:]))
    inner_rates = np.log2(np.array(inner_err[:-1]) / np.array(inner_err[1:]))
    assert np.all(np.abs(end_rates - (order + 1)) < 0.35), end_rates
    assert np.all(np.abs(inner_rates - (dense_order + 1)) < 0.35), inner_rates


def test_tsit5_real_stability_boundary_against_independent_roots():
    """Tsitouras' method: the boundary is the smallest positive root of R(-x) = +-1 with
    R(z) = sum_j z^j b^T A^(j-1) 1 built here by matrix powers (3.50685)."""
    tab = tableau("tsit5")
    coeffs = [1.0] + [float(tab.b @ np.linalg.matrix_power(tab.a, j - 1) @ np.ones(7))
                      for j in range(1, 8)]
    poly = np.polynomial.Polynomial(coeffs)(np.polynomial.Polynomial([0.0, -1.0]))
    roots = np.concatenate([(poly - 1).roots(), (poly + 1).roots()])
    real = roots[(abs(roots.imag) < 1e-9) & (roots.real > 1e-9)].real
    boundary = tab.real_stability_boundary()
    assert boundary == pytest.approx(float(real.min()), abs=1e-9)
    assert boundary == pytest.approx(3.5068469938, abs=1e-9)


def test_tsit5_is_tsitouras_method():
    """``tableau("tsit5")`` is Tsitouras' 5(4) pair (2011), not another 7-stage FSAL pair of the
    same orders: its nodes 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1, its weights
    b_2 = 0.01 and b_1 = 0.09646076681806523 as published, and c_2 = a_21."""
    tab = tableau("tsit5")
    assert tab.name == "tsit5" and tab.stages == 7 and tab.order == 5 and tab.fsal
    np.testing.assert_array_equal(tab.c, [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0,
                                          1.0])
    assert tab.a[1, 0] == 0.161
    assert tab.b[1] == 0.01 and tab.b[0] == 0.09646076681806523 and tab.b[6] == 0.0
