"""Class-means form of the one-layer UFM-MSE against the parameter (d-space) form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.models import Penalties, UFMObjective
from ncsim.models.classmeans import ClassMeansObjective, class_means_cheaper
from ncsim.models.reduction import state_form
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec, TimeScale

BIASES = ("none", "free", "reg")


def _model(bias: str, counts=(3, 5, 2, 4), dim: int = 5) -> ModelSpec:
    return ModelSpec(loss="mse", bias=bias, classes=len(counts), per_class=counts, dim=dim)


def _random_point(model: ModelSpec, runs: int = 3, seed: int = 0):
    """Random class means, propagator, deviations (summing to zero per class), W and b."""
    gen = torch.Generator().manual_seed(seed)
    d, k, n = model.dim, model.classes, model.num_samples

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(model.class_counts))
    h0 = rand(runs, d, n)
    w = rand(runs, k, d)
    b = rand(runs, k) if model.has_bias else None
    pen = Penalties(w=torch.tensor([[0.03, 0.01, 0.2]]), h=torch.tensor([0.02, 0.05, 0.001]),
                    b=torch.tensor([0.04, 0.0, 0.3]) if model.bias == "reg" else torch.zeros(3))
    return h0, w, b, pen, labels, rand(runs, d, d)


def _evolved(form: ClassMeansObjective, h0, w, b, phi):
    """A class-means state with a general propagator Phi, and its exact parameters."""
    state = form.from_parameters(h0, w, b)
    form.layout.view(state, "Phi").copy_(phi)
    h, _, _ = form.parameters(state)
    return state, h


def _d_space(model: ModelSpec, h, w, b) -> torch.Tensor:
    parts = {"H": h, "W1": w}
    if b is not None:
        parts["b"] = b
    return UFMObjective(model, "cpu", torch.float64).layout.pack(parts)


@pytest.mark.parametrize("bias", BIASES)
def test_velocity_is_the_d_space_flow(bias):
    """dM = class average of dH, dPhi E0 = dH minus its class averages, dW and db equal."""
    model = _model(bias)
    h0, w, b, pen, labels, phi = _random_point(model)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state, h = _evolved(form, h0, w, b, phi)
    eta = (torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64),
           torch.tensor([3.0, 1.0, 0.25], dtype=torch.float64),
           torch.tensor([1.0, 7.0, 0.5], dtype=torch.float64))
    vel = form.velocity(state, pen, *eta)
    plain = UFMObjective(model, "cpu", torch.float64)
    grad = plain.gradient(_d_space(model, h, w, b), pen)
    lay = plain.layout
    d_h = -eta[1].view(-1, 1, 1) * lay.view(grad, "H")
    d_w = -eta[0].view(-1, 1, 1) * lay.view(grad, "W1")
    counts = torch.tensor(model.class_counts, dtype=torch.float64)
    avg = torch.nn.functional.one_hot(labels).T.double().T / counts
    d_means = d_h @ avg
    e0 = form.e0
    np.testing.assert_allclose(form.layout.view(vel, "M"), d_means, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(form.layout.view(vel, "Phi") @ e0, d_h - d_means[:, :, labels],
                               rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(form.layout.view(vel, "W1"), d_w, rtol=1e-12, atol=1e-13)
    if b is not None:
        d_b = -eta[2].view(-1, 1) * lay.view(grad, "b")
        np.testing.assert_allclose(form.layout.view(vel, "b"), d_b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("bias", BIASES)
def test_value_and_gradient_norm_equal_d_space(bias):
    model = _model(bias)
    h0, w, b, pen, _, phi = _random_point(model, seed=1)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state, h = _evolved(form, h0, w, b, phi)
    plain = UFMObjective(model, "cpu", torch.float64)
    flat = _d_space(model, h, w, b)
    loss, total = form.value(state, pen)
    ref_loss, ref_total = plain.value(flat, pen)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(total, ref_total, rtol=1e-12)
    np.testing.assert_allclose(form.grad_norm(state, pen),
                               plain.gradient(flat, pen).norm(dim=1), rtol=1e-10)


def test_subset_of_runs_uses_its_own_deviations():
    """velocity, value, gradient norm and metrics of runs (2, 0) alone equal those rows."""
    model = _model("reg")
    h0, w, b, pen, _, phi = _random_point(model, seed=3)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state, _ = _evolved(form, h0, w, b, phi)
    runs = torch.tensor([2, 0])
    sub, sub_pen = state[runs], pen.select(runs)
    np.testing.assert_allclose(form.velocity(sub, sub_pen, runs=runs),
                               form.velocity(state, pen)[runs], rtol=1e-14, atol=0)
    for full, part in zip(form.value(state, pen), form.value(sub, sub_pen, runs)):
        np.testing.assert_allclose(part, full[runs], rtol=1e-14)
    np.testing.assert_allclose(form.grad_norm(sub, sub_pen, runs),
                               form.grad_norm(state, pen)[runs], rtol=1e-14)
    full_metrics, part_metrics = form.metrics(state), form.metrics(sub, runs)
    for name, value in full_metrics.items():
        np.testing.assert_allclose(part_metrics[name], value[runs], rtol=1e-12, err_msg=name)


def _specs(reduction: str, bias: str, dtype: str = "float64", **solver):
    model = _model(bias, counts=(6, 4, 5), dim=4)
    settings = {"t_end": 60.0, "records": 20, "rtol": 1e-11, "atol": 1e-13, "gtol": 0.0,
                **solver}
    return [RunSpec(model=model,
                    reg=Regularization(lambda_w=lw, lambda_h=lh,
                                       lambda_b=0.02 if bias == "reg" else 0.0),
                    init=InitSpec(scale=0.5, seed=i), time_scale=TimeScale(eta_h=1.0 + i),
                    solver=SolverSpec(reduction=reduction, dtype=dtype, **settings))
            for i, (lw, lh) in enumerate([(1e-2, 2e-2), (3e-3, 1e-3), (0.05, 0.08)])]


@pytest.mark.parametrize("bias", BIASES)
def test_class_means_trajectories_equal_d_space(bias):
    reduced = simulate(_specs("classes", bias), theory=False)
    plain = simulate(_specs("none", bias), theory=False)
    cols = ["loss", "objective", "fn", "nc1", "nc1_trace", "nc2_etf", "nc3", "w_norm",
            "within_energy", "class_mean_norm", "cdnv"]
    np.testing.assert_allclose(reduced.trajectories[cols].to_numpy(),
                               plain.trajectories[cols].to_numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(reduced.runs["grad_norm_final"], plain.runs["grad_norm_final"],
                               rtol=1e-6, atol=1e-12)
    for rid_r, rid_p in zip(reduced.runs["run_id"], plain.runs["run_id"]):
        got, want = reduced.final_state(rid_r), plain.final_state(rid_p)
        np.testing.assert_allclose(got["H"], want["H"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got["W"][0], want["W"][0], rtol=1e-8, atol=1e-10)


def test_auto_picks_class_means_for_mse_where_cheaper():
    small_d = ModelSpec(loss="mse", classes=10, per_class=20, dim=32)
    assert class_means_cheaper(small_d) and state_form(small_d, "auto") == "classes"
    assert state_form(ModelSpec(loss="ce", classes=10, per_class=20, dim=32), "auto") == "none"
    assert state_form(ModelSpec(loss="mse", classes=10, per_class=3, dim=16), "auto") == "none"
    assert state_form(ModelSpec(loss="mse", classes=10, per_class=20, dim=4096), "auto") == "gram"
    deep = ModelSpec(kind="deep", depth=2, loss="mse", classes=10, per_class=20, dim=8)
    assert state_form(deep, "auto") == "none"
    with pytest.raises(InputError, match="classes"):
        RunSpec(model=ModelSpec(loss="ce"), solver=SolverSpec(reduction="classes")).validate()
    with pytest.raises(InputError, match="classes"):
        RunSpec(model=deep, solver=SolverSpec(reduction="classes")).validate()


def test_metrics_equal_nc_metrics_of_the_rebuilt_features():
    """Class statistics from the state (Sigma_W through the d x d factor) give the same metrics
    as nc_metrics on the rebuilt features, float64 and float32."""
    from ncsim.metrics import nc_metrics

    model = _model("free")
    h0, w, b, _, labels, phi = _random_point(model, seed=4)
    for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 2e-4)):
        form = ClassMeansObjective(model, "cpu", torch.float64)
        state64, h = _evolved(form, h0, w, b, phi)
        low = form.with_dtype(dtype)
        got = low.metrics(state64.to(dtype))
        want = nc_metrics(h.transpose(1, 2), labels, model.classes, w, b)
        for name in want:
            np.testing.assert_allclose(got[name].double(), want[name], rtol=tol, atol=tol,
                                       err_msg=f"{name} {dtype}")


def test_gradient_norm_from_the_velocity():
    model = _model("reg")
    h0, w, b, pen, _, phi = _random_point(model, seed=5)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state, _ = _evolved(form, h0, w, b, phi)
    eta = (torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64),
           torch.tensor([3.0, 1.0, 0.25], dtype=torch.float64), 4.0)
    vel = form.velocity(state, pen, *eta)
    np.testing.assert_allclose(form.grad_norm_from_velocity(vel, *eta),
                               form.grad_norm(state, pen), rtol=1e-13)


def test_velocity_written_into_a_stage_buffer_slice():
    model = _model("reg")
    h0, w, b, pen, _, phi = _random_point(model, seed=6)
    form = ClassMeansObjective(model, "cpu", torch.float64)
    state, _ = _evolved(form, h0, w, b, phi)
    buf = torch.full((3, *state.shape), 7.0, dtype=torch.float64)
    out = form.velocity(state, pen, out=buf[1])
    assert out.data_ptr() == buf[1].data_ptr()
    np.testing.assert_array_equal(buf[1], form.velocity(state, pen))
    assert (buf[0] == 7.0).all() and (buf[2] == 7.0).all()


def test_float32_class_means_follow_float64_in_every_metric():
    low = simulate(_specs("classes", "free", dtype="float32", rtol=1e-5, atol=1e-7),
                   theory=False).trajectories
    high = simulate(_specs("classes", "free"), theory=False).trajectories
    for col in ("loss", "objective", "fn", "nc1_trace", "nc2_etf", "nc3", "w_norm",
                "class_mean_norm", "within_energy"):
        np.testing.assert_allclose(low[col], high[col], rtol=2e-3, atol=1e-5, err_msg=col)


def test_run_ids_tell_the_class_means_form_apart():
    """An auto MSE run that the class-means form integrates gets an id of its own; other auto
    runs keep the id they had (the reduction key left out of the hash)."""
    import hashlib
    import json

    from ncsim.flow.simulate import run_id

    mse = _specs("auto", "none")[0]
    assert state_form(mse.model, "auto") == "classes"
    assert run_id(mse) != run_id(_specs("none", "none")[0])
    ce = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=4, dim=5))
    row = ce.to_row()
    del row["solver_reduction"]
    del row["solver_cuda_graphs"]
    legacy = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert run_id(ce) == legacy


def test_run_ids_stay_those_of_earlier_versions():
    """Identifiers are the resume keys of saved studies: these were computed before
    ``cuda_graphs`` existed, and a spec that sets it keeps its id (same steps, same result)."""
    import dataclasses

    from ncsim.flow.simulate import run_id

    ce = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=4, dim=5))
    mse = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=40, dim=5))
    assert (run_id(ce), run_id(mse), run_id(RunSpec())) == (
        "3f78215ae222", "7e38922e6a55", "927b19851355")
    graphs = ce.replace(solver=dataclasses.replace(ce.solver, cuda_graphs=True))
    assert run_id(graphs) == run_id(ce)
