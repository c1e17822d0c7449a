"""Probe tests of the reduced one-layer UFM forms (Gram space, class means): the auto form's
cost boundary, an explicit initial bias carried into each reduced form, and the dtype of the
Gram metrics of a float32 batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim.flow import simulate
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models.classmeans import ClassMeansObjective, class_means_cheaper
from ncsim.models.gram import GramObjective, initial_gram_state
from ncsim.models.reduction import state_form
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec


def test_class_means_cheaper_is_strict_at_equal_cost():
    """4 d + 3 K == 3 N (K = 2, n = 3, d = 3: 18 = 18) is not cheaper, so auto keeps "none";
    one width less (d = 2: 14 < 18) takes "classes"."""
    equal = ModelSpec(loss="mse", classes=2, per_class=3, dim=3)
    below = ModelSpec(loss="mse", classes=2, per_class=3, dim=2)
    assert 4 * equal.dim + 3 * equal.classes == 3 * equal.num_samples
    assert not class_means_cheaper(equal)
    assert state_form(equal, "auto") == "none"
    assert class_means_cheaper(below)
    assert state_form(below, "auto") == "classes"


def _arrays_with_bias(model: ModelSpec) -> dict:
    """Explicit H (d, N), W (K, d) and a nonzero bias b (K,)."""
    rng = np.random.default_rng(3)
    return {
        "H": rng.normal(size=(model.dim, model.num_samples)),
        "W": [0.5 * rng.normal(size=(model.classes, model.dim))],
        "b": np.array([0.7, -0.4, 0.25])[: model.classes],
    }


def test_initial_gram_state_keeps_an_explicit_bias():
    """An arrays init with b: the Gram start's b block is that b, and the whole row is the
    projection (W H, W W^T, H^T H, b) of the given arrays."""
    model = ModelSpec(loss="ce", bias="free", classes=3, per_class=2, dim=12)
    arrays = _arrays_with_bias(model)
    got = initial_gram_state(model, [InitSpec(kind="arrays", arrays=arrays)])
    h = torch.as_tensor(arrays["H"])[None]
    w = torch.as_tensor(arrays["W"][0])[None]
    b = torch.as_tensor(arrays["b"])[None]
    exact = GramObjective(model, "cpu", torch.float64)
    torch.testing.assert_close(exact.layout.view(got, "b"), b, rtol=0, atol=0)
    torch.testing.assert_close(got, exact.from_parameters(h, w, b), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(("loss", "reduction", "dim"), [("ce", "gram", 12), ("mse", "classes", 3)])
def test_reduced_form_follows_the_d_space_from_an_explicit_bias(loss, reduction, dim):
    """A run started from arrays with a nonzero bias ends where the d-space run ends in the
    Gram form (CE, d >= N + K) and in the class-means form (MSE)."""
    model = ModelSpec(loss=loss, bias="free", classes=3, per_class=2, dim=dim)
    init = InitSpec(kind="arrays", arrays=_arrays_with_bias(model))

    def final(red):
        spec = RunSpec(
            model=model,
            reg=Regularization(lambda_w=0.05, lambda_h=0.05),
            init=init,
            solver=SolverSpec(t_end=3.0, records=4, reduction=red),
        )
        return simulate(spec.validate(), theory=False).runs.iloc[0]

    got, want = final(reduction), final("none")
    for col in ("final_objective", "final_fn", "final_w_norm"):
        assert got[col] == pytest.approx(want[col], rel=1e-7), col


def test_gram_metrics_of_a_float32_state_are_float32():
    """Every Gram metric of a float32 state is float32 (nc1 is computed in float64 inside)
    and equals the float64 metric to float32 rounding."""
    model = ModelSpec(loss="ce", bias="free", classes=3, per_class=2, dim=12)
    arrays = _arrays_with_bias(model)
    state = initial_gram_state(model, [InitSpec(kind="arrays", arrays=arrays)])
    m64 = GramObjective(model, "cpu", torch.float64).metrics(state)
    m32 = GramObjective(model, "cpu", torch.float32).metrics(state.float())
    assert list(m32) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert m32[name].dtype == torch.float32, name
        assert m32[name].shape == (1,), name
    torch.testing.assert_close(m32["nc1"].double(), m64["nc1"], rtol=1e-4, atol=1e-6)


def test_class_means_metrics_of_a_float32_objective_are_float32():
    """A class-means objective moved to float32 (with_dtype) gives float32 metrics that equal
    the float64 ones to float32 rounding."""
    model = ModelSpec(loss="mse", bias="free", classes=3, per_class=2, dim=3)
    arrays = _arrays_with_bias(model)
    h = torch.as_tensor(arrays["H"])[None]
    w = torch.as_tensor(arrays["W"][0])[None]
    b = torch.as_tensor(arrays["b"])[None]
    exact = ClassMeansObjective(model, "cpu", torch.float64)
    state = exact.from_parameters(h, w, b)
    m64 = exact.metrics(state)
    m32 = exact.with_dtype(torch.float32).metrics(state.float())
    for name in METRIC_NAMES:
        assert m32[name].dtype == torch.float32, name
    for name in ("fn", "nc1", "within_energy", "w_norm"):
        torch.testing.assert_close(m32[name].double(), m64[name], rtol=1e-4, atol=1e-6)


def test_gram_metrics_with_coinciding_class_means_match_the_d_space():
    """Features m +- e_c (every class mean is m): the Gram metrics treat the rounding residue
    of the centred means as 0, as nc_metrics on the features does (norm 0, NaN ETF, inf nc1)."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=12)
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(12, 1, generator=gen, dtype=torch.float64)
    e = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    h = torch.cat([torch.cat([m + e[:, c : c + 1], m - e[:, c : c + 1]], 1) for c in range(3)], 1)
    w = torch.randn(1, 3, 12, generator=gen, dtype=torch.float64)
    obj = GramObjective(model, "cpu", torch.float64)
    got = obj.metrics(obj.from_parameters(h[None], w, None))
    want = nc_metrics(h.T[None], obj.labels, 3, w, None)
    assert got["class_mean_norm"].item() == 0.0 == want["class_mean_norm"].item()
    for name in ("nc2_etf", "nc2_equinorm", "nc3"):
        assert torch.isnan(got[name]).all() and torch.isnan(want[name]).all(), name
    assert torch.isinf(got["nc1"]).all() and torch.isinf(want["nc1"]).all()
