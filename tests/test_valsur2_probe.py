"""Second mutation probe of ncsim.validate.surrogate: feature velocities of a tiny hand-built
network against autograd's full Jacobian (cross-entropy data gradient, an unused parameter, the
ReLU homogeneity of the decay), the response fit against naive least squares for velocities
it does not explain exactly, the refusals with their values, and the surrogate's spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.data import Dataset

K, N_PER = 3, 2


class TinyNet(torch.nn.Module):
    """features(x) = tanh(A x + a) (3 inputs, 4 features); a 3-class classifier; and a
    parameter ``spare`` that no output depends on."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.body = torch.nn.Linear(3, 4)
        self.classifier = torch.nn.Linear(4, K)
        self.spare = torch.nn.Parameter(torch.ones(2))
        with torch.no_grad():
            for p in (self.body.weight, self.body.bias, self.classifier.weight,
                      self.classifier.bias):
                p.copy_(torch.randn(p.shape, generator=gen))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _tiny_data(n: int = 9) -> Dataset:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % K
    return Dataset("tiny", x, y, x.clone(), y.clone(), K)


class _Features(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.features(x)


def _jacobian_velocity(net: torch.nn.Module, xs: torch.Tensor, tangent: dict) -> np.ndarray:
    """(d, M) J_theta h . tangent from autograd's full Jacobian of the features."""
    names = list(tangent)
    params = dict(net.named_parameters())
    body = _Features(net)

    def feats(*ps):
        return torch.func.functional_call(body, {f"inner.{n}": p for n, p in zip(names, ps)},
                                          (xs,))

    jac = torch.autograd.functional.jacobian(feats, tuple(params[n].detach() for n in names))
    M, d = xs.shape[0], jac[0].shape[1]
    out = torch.zeros(M, d, dtype=torch.float64)
    for name, j in zip(names, jac):
        out += (j.reshape(M, d, -1) @ tangent[name].reshape(-1)).reshape(M, d)
    return out.numpy().T


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_velocities_of_the_named_loss_equal_the_full_jacobian(loss):
    """v_data = J (-grad of the named loss over all 9 training samples, summed in batches of 4,
    the last of one sample), cross-entropy included, and v_decay = J (-wd theta), for a net with
    a parameter no output depends on."""
    torch.manual_seed(0)
    net = TinyNet().double()
    data = _tiny_data()
    index = np.array([0, 3, 1, 4, 2, 5])
    wd = 0.07
    h, v_data, v_decay = sg.feature_velocities(net, data, index, wd, decayed=None, loss=loss,
                                               batch=4)
    logits = net(data.x_train)
    value = (F.cross_entropy(logits, data.y_train) if loss == "ce" else
             F.mse_loss(logits, F.one_hot(data.y_train, K).double()))
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(value, [p for _, p in net.named_parameters()],
                                allow_unused=True)
    data_dir = {n: (-g if g is not None else torch.zeros_like(p))
                for (n, p), g in zip(net.named_parameters(), grads)}
    decay_dir = {n: -wd * p.detach() for n, p in net.named_parameters()}
    xs = data.x_train[torch.as_tensor(index)]
    with torch.no_grad():
        np.testing.assert_allclose(h, net.features(xs).numpy().T, rtol=1e-14)
    assert "spare" in names
    np.testing.assert_allclose(v_data, _jacobian_velocity(net, xs, data_dir), rtol=1e-10,
                               atol=1e-13)
    np.testing.assert_allclose(v_decay, _jacobian_velocity(net, xs, decay_dir), rtol=1e-10,
                               atol=1e-13)


def test_cross_entropy_and_mse_velocities_differ():
    """The data velocity follows the loss asked for: cross-entropy's is not nn.MSELoss's."""
    net = TinyNet().double()
    data = _tiny_data()
    index = np.arange(6)
    _, ce, _ = sg.feature_velocities(net, data, index, 0.1, None, loss="ce")
    _, mse, _ = sg.feature_velocities(net, data, index, 0.1, None, loss="mse")
    assert np.abs(ce - mse).max() > 1e-3 * np.abs(mse).max()


# ----------------------------------------------------------------------------- decay homogeneity
def test_two_layer_relu_decay_with_zero_inner_bias_shrinks_at_twice_wd():
    """Features relu(W2 relu(W1 x + b1)) with b2 = 0 are homogeneous of degree 2 in the decayed
    body: v_decay = -2 wd H, so the fit reads rate 2 wd / (2/K) = K wd (K wd / 2 per degree) with
    r2_decay 1; decaying the last layer only gives -wd H."""
    gen = torch.Generator().manual_seed(3)
    body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4),
                               torch.nn.ReLU())
    classifier = torch.nn.Linear(4, K)
    with torch.no_grad():
        for p in list(body.parameters()) + list(classifier.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
        body[0].bias.uniform_(0.2, 0.6)
        body[2].bias.zero_()

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.classifier = body, classifier

        def features(self, x):
            return self.body(x)

        def forward(self, x):
            return self.classifier(self.body(x))

    net = Net().double()
    data = _tiny_data(12)
    wd = 0.04
    state = sg.network_state(net, data, N_PER)
    h, v_data, v_decay = sg.feature_velocities(net, data, state.index, wd, decayed=None)
    assert np.abs(h).max() > 0
    np.testing.assert_allclose(v_decay, -2 * wd * h, rtol=1e-12, atol=1e-14)
    _, _, v_last = sg.feature_velocities(net, data, state.index, wd,
                                         decayed={"body.2.weight", "body.2.bias"})
    np.testing.assert_allclose(v_last, -wd * h, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(state.b, net.classifier.bias.detach().numpy())
    np.testing.assert_allclose(state.H, h, rtol=1e-14)
    # a data velocity exactly along -G_H keeps the fit well defined whatever the net's own
    onehot = np.repeat(np.eye(K), N_PER, axis=1)
    grad_h = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / (K * N_PER)
    factor = sg.time_factor(K)
    cal = sg.calibrate_response(state, -factor * 2.5 * grad_h, v_decay, factor)
    assert cal.eta_h == pytest.approx(2.5, rel=1e-12)
    assert cal.eta_h * cal.lambda_h == pytest.approx(K * wd, rel=1e-12)
    assert cal.eta_h * cal.lambda_h == pytest.approx(2 * sg.lambda_w_ncsim(wd, K), rel=1e-12)
    assert cal.r2_decay == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- response fit
def _random_state(seed: int = 4) -> sg.SurrogateState:
    rng = np.random.default_rng(seed)
    return sg.SurrogateState(H=rng.standard_normal((5, K * N_PER)),
                             W=rng.standard_normal((K, 5)), b=rng.standard_normal(K),
                             per_class=N_PER)


def _naive_fit(v: np.ndarray, basis: np.ndarray) -> tuple[float, float]:
    """Least-squares c minimising |v - c basis|^2 over all entries, and 1 - SSR / |v|^2."""
    c, *_ = np.linalg.lstsq(basis.reshape(-1, 1), v.reshape(-1), rcond=None)
    ssr = float(((v - c[0] * basis) ** 2).sum())
    return float(c[0]), 1.0 - ssr / float((v ** 2).sum())


@pytest.mark.parametrize("mix", [0.3, 2.0])
def test_response_fit_of_velocities_it_does_not_explain_is_naive_least_squares(mix):
    """For velocities partly off -G_H and -H, eta_H, eta_H lambda_H, r2_data and r2_decay are
    numpy's least squares and uncentred R^2 (in ncsim time, factor 2/K), and the note is the
    weak-fit note of r2_data (present for the larger off-axis part)."""
    state = _random_state()
    rng = np.random.default_rng(11)
    onehot = np.repeat(np.eye(K), N_PER, axis=1)
    grad_h = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / (K * N_PER)
    noise = rng.standard_normal(state.H.shape)
    v_data = -1.7 * grad_h + mix * np.abs(grad_h).max() * noise
    v_decay = -0.2 * state.H + mix * 0.2 * rng.standard_normal(state.H.shape)
    factor = sg.time_factor(K)
    cal = sg.calibrate_response(state, v_data, v_decay, factor)
    neg_eta, r2_data = _naive_fit(v_data / factor, grad_h)
    neg_rate, r2_decay = _naive_fit(v_decay / factor, state.H)
    assert 0 < r2_data < 1 and 0 < r2_decay < 1
    assert cal.rule == "response"
    assert cal.eta_h == pytest.approx(-neg_eta, rel=1e-12)
    assert cal.lambda_h == pytest.approx(neg_rate / neg_eta, rel=1e-12)
    assert cal.r2_data == pytest.approx(r2_data, rel=1e-12)
    assert cal.r2_decay == pytest.approx(r2_decay, rel=1e-12)
    assert cal.note == sg.weak_fit_note(r2_data)
    assert (cal.note != "") is (r2_data < 0.5)


def test_response_fit_has_the_weak_note_when_r2_data_is_low():
    """A data velocity -G_H plus an orthogonal part sqrt(7) |G_H| long has eta_H 1, r2_data
    1/8 and the weak-fit note with r2_data to three digits."""
    state = _random_state()
    onehot = np.repeat(np.eye(K), N_PER, axis=1)
    grad_h = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / (K * N_PER)
    ortho = np.random.default_rng(1).standard_normal(grad_h.shape)
    ortho -= (ortho * grad_h).sum() / (grad_h ** 2).sum() * grad_h
    ortho *= math.sqrt(7.0) * np.linalg.norm(grad_h) / np.linalg.norm(ortho)
    cal = sg.calibrate_response(state, -grad_h + ortho, -state.H, 1.0)
    assert cal.eta_h == pytest.approx(1.0, rel=1e-12)
    assert cal.r2_data == pytest.approx(0.125, rel=1e-12)  # 1 / (1 + 7)
    assert cal.note.startswith("weak calibration: r2_data 0.125 < 0.5, the scalar eta_H")


def test_refusals_name_the_fitted_value():
    """A velocity along +G_H is refused with eta_H's signed value (-2), a decay velocity along +H
    with its signed rate (-0.5), exact targets and zero features each with their own message."""
    state = _random_state()
    onehot = np.repeat(np.eye(K), N_PER, axis=1)
    grad_h = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / (K * N_PER)
    msg = ("the network's features move against the loss gradient (eta_H = -2); the response "
           "calibration is undefined: use --lambda-h-rule balance")
    with pytest.raises(InputError) as err:
        sg.calibrate_response(state, 2.0 * grad_h, -state.H, 1.0)
    assert str(err.value) == msg
    with pytest.raises(InputError) as err:
        sg.calibrate_response(state, -grad_h, 0.5 * state.H, 1.0)
    assert str(err.value) == ("the network's weight decay grows its features (rate -0.5); "
                              "use --lambda-h-rule balance")
    fitted = sg.SurrogateState(H=onehot.copy(), W=np.eye(K), b=np.zeros(K), per_class=N_PER)
    with pytest.raises(InputError) as err:
        sg.calibrate_response(fitted, -onehot, -onehot, 1.0)
    assert str(err.value) == ("the surrogate's features fit the targets exactly (or are zero); "
                              "the response calibration is undefined: use --lambda-h-rule "
                              "balance")
    zero = sg.SurrogateState(H=np.zeros((2, 2)), W=np.ones((1, 2)), b=np.zeros(1), per_class=2)
    with pytest.raises(InputError) as err:
        sg.calibrate_lambda_h(zero, 0.1)
    assert str(err.value) == "the network's features are all zero; cannot calibrate lambda_H"


def test_balance_calibration_has_unit_rate_and_no_fit():
    """A balance Calibration built from the rule and lambda_H alone has eta_H = 1, r2_data and
    r2_decay NaN and no note; its lambda_H meets lambda_W |W|^2 = lambda_H |H|^2."""
    state = _random_state()
    lam_w = sg.lambda_w_ncsim(0.01, K)
    cal = sg.Calibration("balance", lambda_h=sg.calibrate_lambda_h(state, lam_w))
    assert cal.eta_h == 1.0 and cal.note == ""
    assert math.isnan(cal.r2_data) and math.isnan(cal.r2_decay)
    assert lam_w * (state.W ** 2).sum() == pytest.approx(cal.lambda_h * (state.H ** 2).sum(),
                                                          rel=1e-14)
    assert sg.CALIBRATIONS == ("response", "balance")


# ----------------------------------------------------------------------------- spec, theory
def test_surrogate_spec_solver_and_initial_arrays():
    """The surrogate integrates with dopri5 at rtol 1e-6, atol 1e-8, starting from the state's
    own H, [W] and b (a one-layer UFM with MSE loss)."""
    state = _random_state()
    spec = sg.surrogate_spec(state, 0.01, 0.002, 5.0)
    assert (spec.solver.method, spec.solver.rtol, spec.solver.atol) == ("dopri5", 1e-6, 1e-8)
    assert (spec.model.kind, spec.model.loss) == ("ufm", "mse")
    assert (spec.init.kind, sorted(spec.init.arrays)) == ("arrays", ["H", "W", "b"])
    np.testing.assert_array_equal(spec.init.arrays["H"], state.H)
    assert len(spec.init.arrays["W"]) == 1
    np.testing.assert_array_equal(spec.init.arrays["W"][0], state.W)
    np.testing.assert_array_equal(spec.init.arrays["b"], state.b)
    assert (spec.onset.metric, spec.onset.threshold) == ("nc1_trace", 0.01)
    assert (spec.solver.records, spec.solver.max_steps) == (200, 20_000)


def test_closed_form_fn_star_is_the_theory_columns_value_and_regime():
    """closed_form_fn_star returns theory_columns' fn_star_theory (finite for the MSE surrogate)
    and its theory_regime text."""
    from ncsim.theory.columns import theory_columns

    spec = sg.surrogate_spec(_random_state(), 0.01, 0.002, 5.0)
    cols = theory_columns(spec)
    fn, regime = sg.closed_form_fn_star(spec)
    assert math.isfinite(fn) and fn > 0
    assert fn == cols["fn_star_theory"]
    assert regime == cols["theory_regime"] and regime.startswith("onset not predicted")
