"""Closed-form values of the bias flow of the one-layer UFM-MSE, in every state form.

From H = 0 and W = 0 the features and the classifier stay 0 (their gradients W^T G and
G H^T vanish), so the logits are b 1^T and the bias follows the linear flow

    db/dt = -eta_b (G 1 + lambda_b b),   G 1 = sum_i (b - y_i) / N = b - p,   p_c = n_c / N,

i.e. b(t) = b* (1 - exp(-eta_b (1 + lambda_b) t)) with b* = p / (1 + lambda_b), and the loss
is (1/2N) sum_i |b - y_i|^2 = (|b|^2 - 2 b.p + 1) / 2. The parameter form, the Gram form and
the class-means form must all give these values, with the bias's own time scale eta_b.
Gradient descent (explicit Euler, step dt) on the same flow is the linear recursion
b_{k+1} - b* = (1 - dt eta_b (1 + lambda_b)) (b_k - b*), stable for dt eta_b (1 + lambda_b) < 2.

The collapsed optimum of the bias-free UFM-MSE with one sample per class (Y = I, N = K) and
equal decays lambda is also closed-form: W = a Q^T, H = a Q (Q (d, K) orthonormal columns)
with a^2 = 1 - N lambda makes W H = a^2 I, G = (a^2 - 1) I / N = -lambda I, and both gradients
G H^T + lambda W and W^T G + lambda H vanish.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.flow import simulate
from ncsim.models import Penalties, UFMObjective
from ncsim.models.gram import GramObjective
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec, TimeScale

COUNTS = (1, 3, 2)


def _bias_only_run(reduction: str, eta_b: float, lambda_b: float,
                   solver: SolverSpec | None = None) -> RunSpec:
    n, k = sum(COUNTS), len(COUNTS)
    d = n + k  # the Gram form needs d >= N + K for MSE
    model = ModelSpec(loss="mse", bias="reg" if lambda_b > 0 else "free", classes=k,
                      per_class=COUNTS, dim=d)
    zeros = {"H": np.zeros((d, n)), "W": [np.zeros((k, d))]}
    return RunSpec(model=model,
                   reg=Regularization(lambda_w=0.1, lambda_h=0.2, lambda_b=lambda_b),
                   init=InitSpec(kind="arrays", arrays=zeros),
                   time_scale=TimeScale(eta_b=eta_b),
                   solver=solver or SolverSpec(t_end=4.0, records=6, rtol=1e-11, atol=1e-13,
                                               reduction=reduction))


@pytest.mark.parametrize("reduction", ["none", "gram", "classes"])
@pytest.mark.parametrize(("eta_b", "lambda_b"), [(0.3, 0.5), (2.0, 0.0)])
def test_bias_flow_from_zero_features_is_the_closed_form(reduction, eta_b, lambda_b):
    """b(t) and the loss at every record equal the closed form of the module docstring
    (rtol 1e-11 over a few time constants: agreement to 1e-8 relative); the features stay
    0, so fn and w_norm are 0 at every record."""
    result = simulate(_bias_only_run(reduction, eta_b, lambda_b), theory=False)
    p = np.array(COUNTS, dtype=float) / sum(COUNTS)
    rate = eta_b * (1.0 + lambda_b)

    def bias(t):
        return np.outer(1.0 - np.exp(-rate * np.asarray(t)), p / (1.0 + lambda_b))

    rid = result.runs["run_id"].iloc[0]
    t_end = float(result.runs["t_final"].iloc[0])
    assert t_end == 4.0
    np.testing.assert_allclose(result.final_state(rid)["b"], bias(t_end)[0], rtol=1e-8)
    traj = result.trajectories
    b_t = bias(traj["time"].to_numpy())
    loss = 0.5 * ((b_t**2).sum(1) - 2.0 * b_t @ p + 1.0)
    np.testing.assert_allclose(traj["loss"].to_numpy(), loss, rtol=1e-8)
    assert (traj["fn"] == 0).all() and (traj["w_norm"] == 0).all()


@pytest.mark.parametrize("reduction", ["none", "gram", "classes"])
@pytest.mark.parametrize("dt", [1.98, 2.02])
def test_gradient_descent_on_the_bias_flow_and_its_stability_limit(reduction, dt):
    """Three gd steps (eta_b = 1, lambda_b = 0: limit dt < 2) give b* (1 - (1 - dt)^3),
    to rounding. At dt = 2.02 the error grows by 1.02 per step, so the objective rises from
    1/2 by (1.02^6 - 1) |p|^2 / 2 (4.9% of it): no gradient flow raises its objective by
    more than 1e-3 of it, so the run is `diverged`. At dt = 1.98 the error shrinks by 0.98 per
    step, the objective falls and the run is not diverged; its fn is 0 throughout, which the
    vanishing rule counts as vanishing (a largest fn that is not above 0)."""
    solver = SolverSpec(method="gd", dt=dt, t_end=3 * dt, records=4, reduction=reduction)
    result = simulate(_bias_only_run(reduction, 1.0, 0.0, solver), theory=False)
    p = np.array(COUNTS, dtype=float) / sum(COUNTS)
    row = result.runs.iloc[0]
    assert row["steps"] == 3
    b = p * (1.0 - (1.0 - dt) ** 3)
    np.testing.assert_allclose(result.final_state(row["run_id"])["b"], b, rtol=1e-12)
    objective = 0.5 * (b @ b - 2.0 * b @ p + 1.0)
    assert row["final_objective"] == pytest.approx(objective, rel=1e-12)
    rise = objective / 0.5 - 1.0
    if dt > 2:
        assert rise == pytest.approx((1.02**6 - 1) * (p @ p), rel=1e-9)
        assert 0.04 < rise < 0.06 and row["status"] == "diverged"
    else:
        assert rise < 0 and row["status"] == "vanishing"


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("lam", [0.03, 0.05, 0.07, 0.1, 0.11])
def test_gram_gradient_norm_at_an_exact_optimum_is_not_a_rounded_number(k, lam):
    """At the closed-form optimum (module docstring) the parameter-space gradient is 0 to
    rounding (|grad f| < 1e-14), while the Gram form's |grad f|^2 is a sum of terms of size
    ~lambda^2 that cancel: its rounding residue (~1e-18, of either sign) is not resolved, so
    the Gram gradient norm is NaN there (a rounded ~1e-9 would pass for a small gradient)."""
    model = ModelSpec(loss="mse", classes=k, per_class=1, dim=2 * k)
    q = torch.linalg.qr(torch.randn(2 * k, k, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(k)))[0]
    a = math.sqrt(1.0 - k * lam)
    h, w = (a * q)[None], (a * q.T)[None]
    pen = Penalties(w=torch.tensor([[lam]], dtype=torch.float64),
                    h=torch.tensor([lam], dtype=torch.float64),
                    b=torch.zeros(1, dtype=torch.float64))
    ufm = UFMObjective(model, "cpu", torch.float64)
    grad = ufm.gradient(ufm.layout.pack({"H": h, "W1": w}), pen)
    assert float(grad.norm()) < 1e-14
    gram = GramObjective(model, "cpu", torch.float64)
    state = gram.from_parameters(h, w, None)
    np.testing.assert_allclose(gram.layout.view(state, "Z")[0].numpy(),
                               (1.0 - k * lam) * np.eye(k), atol=1e-15)
    assert math.isnan(float(gram.grad_norm(state, pen)[0]))


@pytest.mark.parametrize("H", [[["0.5"] * 6] * 4, [[True] * 6] * 4,
                               np.array([[1, "0.5"] * 3] * 4, dtype=object)])
def test_init_arrays_of_text_or_flags_are_refused(H):
    """An init array of digits as text ("0.5") ran as 0.5, one of flags as 1.0: both are
    refused, as other text is (a spec holds numbers)."""
    from ncsim.errors import InputError
    from ncsim.models.init import float_array

    with pytest.raises(InputError, match=r"init array H must be an array of numbers"):
        float_array("H", H)
    assert float_array("H", [[0.5, None]]).tolist()[0][0] == 0.5
