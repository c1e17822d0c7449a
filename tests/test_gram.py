"""The Gram-space form of the one-layer UFM against the plain float64 d-space path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.flow.simulate import RECORDED, simulate
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models import Penalties, UFMObjective, initial_state
from ncsim.models.gram import GramObjective, use_gram
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

CASES = [("ce", "none"), ("ce", "reg"), ("mse", "none"), ("mse", "free")]


def _point(loss: str, bias: str, dim: int = 7, runs: int = 3):
    per_class = (3, 5, 4, 2) if bias != "none" else 3
    model = ModelSpec(loss=loss, bias=bias, classes=4, per_class=per_class, dim=dim)
    obj = UFMObjective(model, "cpu", torch.float64)
    gram = GramObjective(model, "cpu", torch.float64)
    y = initial_state(model, [InitSpec(scale=0.7, seed=s) for s in range(runs)], "cpu",
                      torch.float64)
    lay = obj.layout
    gen = torch.Generator().manual_seed(0)
    if "b" in lay:
        y[:, lay["b"].start:] = torch.randn(runs, 4, generator=gen, dtype=torch.float64)
    pen = Penalties(w=torch.tensor([[1e-2, 2e-3, 3e-2]], dtype=torch.float64)[:, :runs],
                    h=torch.tensor([2e-2, 1e-3, 5e-3], dtype=torch.float64)[:runs],
                    b=torch.tensor([1e-2, 2e-2, 3e-2] if bias == "reg" else [0.0] * 3,
                                   dtype=torch.float64)[:runs])
    return model, obj, gram, y, pen


def _gram_of(obj, gram, y):
    lay = obj.layout
    b = lay.view(y, "b") if "b" in lay else None
    return gram.from_parameters(lay.view(y, "H"), lay.view(y, "W1"), b)


@pytest.mark.parametrize(("loss", "bias"), CASES)
def test_gram_velocity_is_the_chain_rule_of_the_flow(loss, bias):
    _, obj, gram, y, pen = _point(loss, bias)
    lay = obj.layout
    v = -obj.gradient(y, pen)
    h, w, dh, dw = lay.view(y, "H"), lay.view(y, "W1"), lay.view(v, "H"), lay.view(v, "W1")
    expected = {"Z": dw @ h + w @ dh, "A": dw @ w.transpose(1, 2) + w @ dw.transpose(1, 2),
                "B": dh.transpose(1, 2) @ h + h.transpose(1, 2) @ dh}
    if "b" in lay:
        expected["b"] = lay.view(v, "b")
    state = _gram_of(obj, gram, y)
    before = state.clone()
    got = gram.velocity(state, pen)
    torch.testing.assert_close(got, gram.layout.pack(expected), rtol=1e-12, atol=1e-14)
    gram.grad_norm(state, pen)
    assert torch.equal(state, before)  # the MSE gradient is formed in place, not in the state


@pytest.mark.parametrize(("loss", "bias"), CASES)
def test_gram_value_grad_norm_and_metrics_equal_d_space(loss, bias):
    model, obj, gram, y, pen = _point(loss, bias)
    s = _gram_of(obj, gram, y)
    for a, b in zip(obj.value(y, pen), gram.value(s, pen)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gram.grad_norm(s, pen), obj.gradient(y, pen).norm(dim=1),
                               rtol=1e-10, atol=1e-14)
    lay = obj.layout
    b = lay.view(y, "b") if "b" in lay else None
    ref = nc_metrics(lay.view(y, "H").transpose(1, 2), obj.labels, model.classes,
                     lay.view(y, "W1"), b)
    got = gram.metrics(s)
    assert list(got) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-10, atol=1e-10, msg=name)


def test_factor_is_an_isometric_representative():
    _, obj, gram, y, _ = _point("ce", "reg")
    s = _gram_of(obj, gram, y)
    h, w = gram.factor(s)
    assert h.shape == (3, 7, 14) and w.shape == (3, 4, 7)
    b = gram.layout.view(s, "b")
    torch.testing.assert_close(gram.from_parameters(h, w, b), s, rtol=0, atol=1e-12)


def test_auto_reduction_picks_gram_only_where_it_is_smaller():
    assert not use_gram(ModelSpec(dim=32), "auto")  # N + K = 210 > d
    assert use_gram(ModelSpec(dim=4096), "auto")
    assert use_gram(ModelSpec(dim=4), "gram")
    assert not use_gram(ModelSpec(dim=4096), "none")
    deep = ModelSpec(kind="deep", depth=2, dim=4096)
    assert not use_gram(deep, "auto")
    with pytest.raises(InputError, match="reduction"):
        RunSpec(model=deep, solver=SolverSpec(reduction="gram")).validate()
    with pytest.raises(InputError, match="reduction"):
        RunSpec(solver=SolverSpec(reduction="fast")).validate()


@pytest.mark.parametrize(("loss", "bias", "need"), [("mse", "none", 12), ("mse", "free", 12),
                                                    ("ce", "none", 3), ("ce", "free", 3)])
def test_gram_below_its_width_is_refused_and_from_it_follows_the_parameters(loss, bias, need):
    """K = 4, n = 2 over t = 1000: a forced Gram form with d below gram_min_dim (N + K for
    MSE, K - 1 for CE) is refused (its flow left rank d and found a wider model's optimum: fn
    0.814 against 0.564 at MSE d = 2); at d = gram_min_dim it ends where the parameter flow
    does."""
    from ncsim.spec import gram_min_dim

    def spec(d, reduction):
        return RunSpec(model=ModelSpec(loss=loss, bias=bias, classes=4, per_class=2, dim=d),
                       reg=Regularization(lambda_w=0.011, lambda_h=0.011),
                       init=InitSpec(scale=0.5, seed=0),
                       solver=SolverSpec(t_end=1000.0, records=10, reduction=reduction))

    assert gram_min_dim(spec(need, "gram").model) == need
    with pytest.raises(InputError, match=rf"^reduction 'gram' needs d >= {need} \(N \+ K for "
                                         rf"MSE, K - 1 for CE\), got d = {need - 1}: .* use "
                                         r"reduction 'none' or 'auto'$"):
        spec(need - 1, "gram").validate()
    gram = simulate(spec(need, "gram").validate(), theory=False).runs.iloc[0]
    plain = simulate(spec(need, "none").validate(), theory=False).runs.iloc[0]
    assert gram["final_fn"] == pytest.approx(plain["final_fn"], rel=1e-8)
    assert gram["final_objective"] == pytest.approx(plain["final_objective"], rel=1e-8)


@pytest.mark.parametrize(("lw", "lh", "eta_w", "refused"), [
    (0.0, 0.01, 1.0, True), (0.01, 0.0, 1.0, True), (0.01, 0.01, 5.0, True),
    (0.01, 0.01, 1.0, False)])
def test_ce_gram_below_full_rank_needs_decays_and_equal_time_scales(lw, lh, eta_w, refused):
    """CE, K = 3, n = 3 (N + K = 12), d = 3: with a zero decay or eta_W != eta_H the forced
    Gram form is refused (eta_W = 5 at decays 0.01 ended 1.1e-2 off in fn at t = 40); with
    both decays and equal time scales it follows the parameters; at d = N + K anything goes."""
    from ncsim.spec import TimeScale

    def spec(d):
        return RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=3, dim=d),
                       reg=Regularization(lambda_w=lw, lambda_h=lh),
                       time_scale=TimeScale(eta_w=eta_w),
                       solver=SolverSpec(reduction="gram"))

    if refused:
        with pytest.raises(InputError, match=r"below d = N \+ K = 12 needs lambda_w > 0, "
                                             r"lambda_h > 0 and eta_w = eta_h"):
            spec(3).validate()
    else:
        spec(3).validate()
    spec(12).validate()


def test_auto_never_takes_gram_below_its_width():
    """'auto' picks the Gram form only where its state is smaller and d >= N + K, which is at
    least gram_min_dim for every K, n and loss."""
    from ncsim.spec import gram_min_dim

    for loss in ("mse", "ce"):
        for k in range(2, 13):
            for n in range(1, 6):
                for d in range(1, 3 * k * (n + 1)):
                    model = ModelSpec(loss=loss, classes=k, per_class=n, dim=d)
                    if use_gram(model, "auto"):
                        assert d >= gram_min_dim(model), (loss, k, n, d)


def _pair(loss, bias, dtype="float64", reduction="gram", **solver):
    model = ModelSpec(loss=loss, bias=bias, classes=3, per_class=(2, 3, 2), dim=10)  # N + K
    settings = {"t_end": 40.0, "records": 15, "rtol": 1e-11, "atol": 1e-13, "gtol": 0.0,
                **solver}
    specs = [RunSpec(model=model,
                     reg=Regularization(lambda_w=lw, lambda_h=lh,
                                        lambda_b=0.03 if bias == "reg" else 0.0),
                     init=InitSpec(scale=0.4, seed=i),
                     time_scale=TimeScale(eta_h=1.0 + 0.5 * i),
                     solver=SolverSpec(reduction=reduction, dtype=dtype, **settings))
             for i, (lw, lh) in enumerate([(1e-2, 2e-2), (3e-3, 1e-3)])]
    return simulate(specs, theory=False)


@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("ce", "reg"), ("mse", "none"),
                                            ("mse", "reg")])
def test_gram_trajectories_equal_d_space(loss, bias):
    gram, plain = _pair(loss, bias, reduction="gram"), _pair(loss, bias, reduction="none")
    cols = ["loss", "objective", "fn", "w_norm", "within_energy", "class_mean_norm", "nc1_trace",
            "nc2_etf", "nc3"]
    np.testing.assert_allclose(gram.trajectories[cols].to_numpy(),
                               plain.trajectories[cols].to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gram.runs["grad_norm_final"], plain.runs["grad_norm_final"],
                               rtol=1e-6, atol=1e-12)
    rid = gram.runs["run_id"].iloc[0]
    state = gram.final_state(rid)
    assert {"Z", "A", "B"} <= set(state)
    w, h = state["W"][0], state["H"]
    np.testing.assert_allclose(w @ h, state["Z"], atol=1e-12)
    plain_state = plain.final_state(plain.runs["run_id"].iloc[0])
    np.testing.assert_allclose(state["B"], plain_state["H"].T @ plain_state["H"], rtol=1e-8,
                               atol=1e-12)


def test_gram_float32_agrees_with_float64():
    f32 = _pair("ce", "none", dtype="float32", rtol=1e-6, atol=1e-8)
    f64 = _pair("ce", "none", dtype="float64", rtol=1e-10, atol=1e-12)
    for col in ("loss", "fn", "w_norm"):
        np.testing.assert_allclose(f32.trajectories[col], f64.trajectories[col], rtol=1e-4)
    assert set(RECORDED) <= set(f32.trajectories.columns)


@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("mse", "free")])
@pytest.mark.parametrize(("rtol", "atol"), [(1e-8, 1e-10), (1e-6, 0.0), (1e-3, 1e-2)])
def test_error_scale_judges_each_inner_product_by_its_factors(loss, bias, rtol, atol):
    """The error scale of x . y is rtol |x| |y| + atol (|x| + |y|) + atol^2 (the norms from
    the parameters themselves), that of b atol + rtol |b|; the Cauchy-Schwarz part bounds
    every entry."""
    model, obj, gram, y, _ = _point(loss, bias)
    state = _gram_of(obj, gram, y)
    scale = gram.error_scale(state, rtol, atol)
    lay = obj.layout
    h, w = lay.view(y, "H"), lay.view(y, "W1")
    hn, wn = h.norm(dim=1), w.norm(dim=2)  # (R, N) feature norms, (R, K) row norms
    factors = {"Z": (wn, hn), "A": (wn, wn), "B": (hn, hn)}
    for name, (x, z) in factors.items():
        x, z = x[:, :, None], z[:, None, :]
        expected = rtol * x * z + atol * (x + z) + atol**2
        torch.testing.assert_close(gram.layout.view(scale, name), expected, rtol=1e-12,
                                   atol=1e-300)
        bound = gram.layout.view(state, name).abs()
        assert bool((bound <= (x * z) * (1 + 1e-12)).all())
    if bias != "none":
        torch.testing.assert_close(gram.layout.view(scale, "b"),
                                   atol + rtol * lay.view(y, "b").abs())


# ----------------------------------------------------------------------------- small features


def _small_run(reduction: str, scale: float, lam: float, dim: int, t_end: float,
               records: int, **solver):
    spec = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=3, dim=dim),
                   reg=Regularization(lam, lam), init=InitSpec(seed=1, scale=scale),
                   solver=SolverSpec(t_end=t_end, records=records, reduction=reduction,
                                     **solver))
    return simulate(spec, theory=False)


@pytest.mark.parametrize("scale", [1e-5, 1e-6])
def test_small_init_onset_matches_the_parameter_space_at_default_tolerances(scale):
    """|h|^2 ~ scale^2 d falls far below atol = 1e-10: the Gram blocks are squares, so their
    error test judges them by their factors (atol |h| and atol^2, not atol). The onset then
    agrees with the parameter space at the default tolerances as closely as that agrees
    with a tight reference (it was 2.4% late at scale 1e-6: 16.204 against 15.822)."""
    tight = _small_run("none", scale, 1e-3, 20, 100.0, 60, rtol=1e-12, atol=1e-300)
    plain = _small_run("none", scale, 1e-3, 20, 100.0, 60)
    gram = _small_run("gram", scale, 1e-3, 20, 100.0, 60)
    want = float(tight.runs["onset_time"].iloc[0])
    assert want == pytest.approx(15.8217, abs=1e-4)
    for result in (plain, gram):
        assert float(result.runs["onset_time"].iloc[0]) == pytest.approx(want, rel=1e-5)
        assert float(result.runs["fn_at_onset"].iloc[0]) == pytest.approx(
            float(tight.runs["fn_at_onset"].iloc[0]), rel=1e-6)


def test_vanishing_run_never_records_a_negative_nc1_nor_a_false_steady_state():
    """A vanishing run (decays 0.3, fn -> 1e-10): nc1 is a ratio of sums of squares, never
    below 0; where the Gram state cannot resolve |grad f| (its quadratic form < 0) the norm
    is NaN, not 0, so the run is not stopped as steady where it is not at rest (it was, at
    t = 105 with a true |grad f| of 8e-7 and gtol 1e-10). Whether the Gram state resolves
    |grad f| once the true one falls below gtol (t ~ 183 here) depends on the BLAS's
    rounding: a stop at rest must then be a true one, the parameter-space flow's |grad f|
    below gtol at that time (t = 193.0 on one machine, 3.9e-11); else the run reaches
    t_end. The recorded fn follows the parameter space while the features are above the
    tolerance."""
    plain = _small_run("none", 0.2, 0.3, 4, 200.0, 12)
    gram = _small_run("gram", 0.2, 0.3, 4, 200.0, 12)
    row = gram.runs.iloc[0]
    gtol = SolverSpec().gtol
    assert row["status"] == "vanishing"
    if row["stop"] == "steady":
        assert row["grad_norm_final"] <= gtol
        at_stop = _small_run("none", 0.2, 0.3, 4, float(row["t_final"]), 12, rtol=1e-12,
                             atol=1e-300, gtol=0.0)
        assert at_stop.runs["grad_norm_final"].iloc[0] <= gtol
    else:
        assert row["stop"] == "t_end" and row["t_final"] == 200.0
        assert np.isnan(row["grad_norm_final"]) or row["grad_norm_final"] > gtol
    traj = gram.trajectories
    assert bool((traj["nc1_trace"] >= 0).all()) and bool((traj["within_energy"] >= 0).all())
    both = traj.merge(plain.trajectories, on="time", suffixes=("_gram", "_plain"))
    resolved = both[both["fn_plain"] > 1e-4]
    assert len(resolved) >= 9
    np.testing.assert_allclose(resolved["fn_gram"], resolved["fn_plain"], rtol=1e-6)


def test_grad_norm_below_its_rounding_is_not_a_zero():
    """|grad f| from Gram quantities is a difference of terms: where it cannot be told from
    their rounding (here the origin of the CE UFM, all terms 0; a vanishing or steady run
    near it) it is NaN, never a rounded 0 that would pass any gtol; at an ordinary point it
    is the parameter-space norm."""
    _, obj, gram, y, pen = _point("ce", "none")
    state = _gram_of(obj, gram, y)
    torch.testing.assert_close(gram.grad_norm(state, pen), obj.gradient(y, pen).norm(dim=1),
                               rtol=1e-10, atol=0)
    origin = _gram_of(obj, gram, torch.zeros_like(y))
    assert bool(torch.isnan(gram.grad_norm(origin, pen)).all())
    assert float(obj.gradient(torch.zeros_like(y), pen).norm()) == 0.0
