"""The integrator and the Gram form of the one-layer UFM against independent references.

- The adaptive Dormand-Prince loop takes the numbers of accepted and rejected steps of
  scipy's RK45 (the same pair, error norm, safety factor and growth limits), run by run in a
  batch; its first step is scipy's implementation of the Hairer-Norsett-Wanner rule (II.4)
  with the method's order; a step cut short at a record time (accelerator loop) does not
  shrink the steps after it; the default |grad f| divides the velocity by the time scales.
- Fixed steps record inside their last, shorter step by the interpolant of that step.
- The Gram velocity with three different time scales per run is the chain rule of the
  d-space flow; "auto" takes the Gram form from d = N + K on; the Gram metrics of class
  means that coincide (or nearly) are the d-space values or flagged unresolved.
- A gaussian start has fn(0) = scale x E[chi_d] (about scale sqrt(d)) over many seeds, in
  every state form.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.integrate._ivp.common import select_initial_step
from scipy.linalg import expm
from scipy.special import gammaln

from ncsim.flow import simulate
from ncsim.flow.integrate import DONE, STEADY, _initial_step, integrate
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models import Penalties, UFMObjective
from ncsim.models.gram import GramObjective, gram_size, use_gram
from ncsim.models.reduction import state_form
from ncsim.models.ufm import labels_for, state_layout
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")

# y' = A y: two damped rotations (non-stiff, every coordinate crosses zero)
_A = np.array([[-0.1, 1.0, 0.0, 0.0], [-1.0, -0.1, 0.0, 0.0],
               [0.0, 0.0, -0.5, 2.0], [0.0, 0.0, -2.0, -0.5]])
_Y0 = np.array([1.0, 0.0, 0.5, -0.3])


def _linear(y: torch.Tensor) -> torch.Tensor:
    return y @ torch.as_tensor(_A).T


def _first_value(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
    return states[:, :1]


def _rk45_steps(y0: np.ndarray, rtol: float, atol: float, t_end: float, first_step: float
                ) -> tuple[int, int, np.ndarray]:
    """(accepted steps, rejected steps, final state) of scipy's RK45 from ``first_step``.
    RK45 evaluates the velocity once at the start and six times per attempted step."""
    sol = solve_ivp(lambda t, y: _A @ y, (0.0, t_end), y0, method="RK45", rtol=rtol,
                    atol=atol, first_step=first_step)
    assert sol.success
    accepted = len(sol.t) - 1
    attempts, rest = divmod(sol.nfev - 1, 6)
    assert rest == 0
    return accepted, attempts - accepted, sol.y[:, -1]


@pytest.mark.parametrize(("rtol", "atol", "t_end", "dt"), [
    (1e-6, 1e-6, 10.0, None),   # atol as large as rtol |y|: both parts of the scale count
    (1e-8, 1e-10, 10.0, None),  # a rejection on the way
    (1e-7, 1e-9, 8.0, 1e-6),    # a tiny first step: the step grows by the factor limit 10
])
def test_dopri5_takes_the_steps_of_scipys_rk45(rtol, atol, t_end, dt):
    """The same Dormand-Prince 5(4) pair with the same controller (RMS error norm against
    atol + rtol max(|y|, |y_new|), safety 0.9, factors in [0.2, 10], exponent -1/5) takes the
    same numbers of accepted and rejected steps as scipy's RK45 from the same first step.
    A run without rejections takes the very same steps, so both end on the same state to
    rounding (1e-13 of |y0| after some hundred steps); after a rejection scipy also caps the
    next step's growth at 1, so the later steps may differ in size, not in number. Every
    run is within 1e3 (rtol |y0| + atol) of the exact solution expm(A t_end) y0.

    The batch holds y0 at three sizes (1, 1e3, 1e-3): atol weighs differently in each, so
    each run takes its own steps, those of scipy on that run alone. Without ``dt`` the first
    step is ncsim's own choice; scipy is started from scipy's Hairer-Norsett-Wanner choice
    with order 5, so equal counts also check that choice."""
    sizes = np.array([1.0, 1e3, 1e-3])
    rows = sizes[:, None] * _Y0
    solver = SolverSpec(method="dopri5", rtol=rtol, atol=atol, t_end=t_end, records=2,
                        gtol=0.0, dt=dt)
    result = integrate(_linear, torch.tensor(rows, dtype=F64), solver, _first_value, 1)
    assert list(result.code) == [DONE] * 3 and list(result.t_final) == [t_end] * 3
    counts = set()
    for i, (size, row) in enumerate(zip(sizes, rows, strict=True)):
        first = dt if dt is not None else select_initial_step(
            lambda t, y: _A @ y, 0.0, row, t_end, np.inf, _A @ row, 1, 5, rtol, atol)
        accepted, rejected, final = _rk45_steps(row, rtol, atol, t_end, first)
        assert (int(result.steps[i]), int(result.rejected[i])) == (accepted, rejected), size
        counts.add(accepted)
        got = result.final_state[i].numpy()
        if rejected == 0:
            np.testing.assert_allclose(got, final, rtol=0, atol=1e-13 * size)
        exact = expm(_A * t_end) @ row
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e3 * (rtol * size + atol))
    assert len(counts) > 1  # the runs' step sequences differ


def test_first_step_is_the_hairer_norsett_wanner_choice_per_run():
    """Each run of a batch gets scipy's ``select_initial_step`` (the II.4 rule: h0 from
    |y0| / |f0|, an explicit Euler probe for the second derivative, h1 from the order 5,
    min(100 h0, h1)) for its own row, to rounding, on y' = A y + c: ordinary rows, the rest
    point -A^-1 c and a point 1e-16 from it (|f0| below 1e-5 of the scale, |y0| not), the
    origin (|y0| = 0, |f0| = |c|): h0 = 1e-6 when either of |y0|, |f0| is that small."""
    rtol, atol = 1e-6, 1e-9
    c = np.array([0.0, 2e-3, -1e-3, 0.0])

    def f(y: np.ndarray) -> np.ndarray:
        return _A @ y + c

    rest = -np.linalg.solve(_A, c)
    rows = np.array([_Y0, 30.0 * _Y0, rest + [1e-16, 0.0, 0.0, 2e-16], [0.0] * 4, rest,
                     [3.0, -1.0, 0.2, 0.7]])
    y0 = torch.tensor(rows, dtype=F64)
    shift = torch.tensor(c, dtype=F64)

    def velocity(y: torch.Tensor) -> torch.Tensor:
        return _linear(y) + shift

    got = _initial_step(velocity, y0, velocity(y0), 5, rtol, atol).numpy()
    for row, h in zip(rows, got, strict=True):
        want = select_initial_step(lambda t, y: f(y), 0.0, row, 1e9, np.inf, f(row), 1, 5,
                                   rtol, atol)
        assert h == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("method", ["gd", "rk4"])
def test_fixed_steps_record_inside_the_last_shorter_step(method):
    """dt = 0.3 to t_end = 1: steps end at 0.3, 0.6, 0.9 and 1 (a last step of h = 0.1). On
    y' = -y a record at 0.95 is the last step's interpolant at theta = 1/2 of it, and the
    record at t_end the step's end. gd: y(0.9) = 0.7^3, linear interpolation y(0.9) (1 - h/2),
    end y(0.9) (1 - h). rk4: each step multiplies by 1 - h + h^2/2 - h^3/6 + h^4/24, and the
    continuous extension b1 = t - 3t^2/2 + 2t^3/3, b2 = b3 = t^2 - 2t^3/3,
    b4 = -t^2/2 + 2t^3/3 on the stages k1 = -y, k2 = -y (1 - h/2), k3 = -y (1 - h/2 + h^2/4),
    k4 = -y (1 - h + h^2/2 - h^3/4). Exact to rounding (1e-14)."""
    solver = SolverSpec(method=method, dt=0.3, t_end=1.0, records=3, t_first=0.95, gtol=0.0)
    y0 = torch.ones(1, 1, dtype=F64)
    result = integrate(lambda y: -y, y0, solver, _first_value, 1)
    np.testing.assert_allclose(result.times, [0.0, 0.95, 1.0], rtol=1e-15)
    assert int(result.steps[0]) == 4 and result.t_final[0] == 1.0
    if method == "gd":
        y09 = 0.7 ** 3
        want = [1.0, y09 * 0.95, y09 * 0.9]
    else:
        def step(h: float) -> float:
            return 1 - h + h ** 2 / 2 - h ** 3 / 6 + h ** 4 / 24

        y09, h, t = step(0.3) ** 3, 0.1, 0.5
        k = [-1.0, -(1 - h / 2), -(1 - h / 2 + h ** 2 / 4), -(1 - h + h ** 2 / 2 - h ** 3 / 4)]
        b = [t - 1.5 * t ** 2 + 2 * t ** 3 / 3, t ** 2 - 2 * t ** 3 / 3, t ** 2 - 2 * t ** 3 / 3,
             -t ** 2 / 2 + 2 * t ** 3 / 3]
        half = y09 * (1 + h * sum(bj * kj for bj, kj in zip(b, k, strict=True)))
        want = [1.0, half, y09 * step(h)]
    np.testing.assert_allclose(result.records[0, :, 0], want, rtol=1e-14)
    assert result.records[0, 2, 0] == pytest.approx(float(result.final_state[0, 0]), rel=1e-15)


def _ufm_point(loss: str, bias: str, dim: int, runs: int = 3, seed: int = 0):
    """A random one-layer UFM state (R, P) of K = 3 classes with counts (2, 4, 3), its model
    and per-run decays (lambda_W, lambda_H, lambda_b all different)."""
    model = ModelSpec(loss=loss, bias=bias, classes=3, per_class=(2, 4, 3), dim=dim)
    obj = UFMObjective(model, "cpu", F64)
    gen = torch.Generator().manual_seed(seed)
    y = 0.6 * torch.randn(runs, obj.layout.size, generator=gen, dtype=F64)
    pen = Penalties(w=torch.tensor([[3e-2, 1e-3, 2e-1]], dtype=F64)[:, :runs],
                    h=torch.tensor([1e-2, 5e-2, 4e-4], dtype=F64)[:runs],
                    b=torch.tensor([2e-2, 1e-1, 3e-3], dtype=F64)[:runs])
    return model, obj, y, pen


def _parts(obj: UFMObjective, y: torch.Tensor):
    lay = obj.layout
    return lay.view(y, "H"), lay.view(y, "W1"), lay.view(y, "b") if "b" in lay else None


@pytest.mark.parametrize(("loss", "bias"), [("ce", "reg"), ("mse", "free"), ("mse", "none")])
def test_gram_velocity_with_three_time_scales_is_the_chain_rule(loss, bias):
    """With per-run time scales eta_W, eta_H, eta_b all different, the Gram velocity is the
    chain rule of the d-space flow dW = -eta_W grad_W f, dH = -eta_H grad_H f,
    db = -eta_b grad_b f: dS = dW H + W dH, dA = dW W^T + W dW^T, dB = dH^T H + H^T dH
    (rtol 1e-12: a few products of order-one numbers)."""
    model, obj, y, pen = _ufm_point(loss, bias, dim=16)
    gram = GramObjective(model, "cpu", F64)
    eta_w = torch.tensor([0.5, 2.0, 1.3], dtype=F64)
    eta_h = torch.tensor([3.0, 0.25, 1.0], dtype=F64)
    eta_b = torch.tensor([7.0, 1.5, 0.1], dtype=F64)
    grad = obj.gradient(y, pen)
    h, w, b = _parts(obj, y)
    g_h, g_w, g_b = _parts(obj, grad)
    d_h, d_w = -eta_h.view(-1, 1, 1) * g_h, -eta_w.view(-1, 1, 1) * g_w
    want = {"Z": d_w @ h + w @ d_h, "A": d_w @ w.transpose(1, 2) + w @ d_w.transpose(1, 2),
            "B": d_h.transpose(1, 2) @ h + h.transpose(1, 2) @ d_h}
    if b is not None:
        want["b"] = -eta_b.view(-1, 1) * g_b
    got = gram.velocity(gram.from_parameters(h, w, b), pen, eta_w, eta_h, eta_b)
    torch.testing.assert_close(got, gram.layout.pack(want), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("mse", "reg")])
def test_auto_takes_the_gram_form_from_width_n_plus_k(loss, bias):
    """K = 2 classes of 2 samples (N + K = 6). At d = 6 the Gram state (K N + K^2 + N^2 = 28
    numbers, + K with a bias) is smaller than the parameters' (d (N + K) = 36, + K) and X has
    full row rank: "auto" takes the Gram form. At d = 5 the Gram state (28) is still smaller
    than the parameters (30) but the width is below N + K: "auto" keeps the parameters."""
    def model(d: int) -> ModelSpec:
        return ModelSpec(loss=loss, bias=bias, classes=2, per_class=2, dim=d)

    assert use_gram(model(6), "auto") and state_form(model(6), "auto") == "gram"
    assert gram_size(model(5)) < state_layout(model(5)).size
    assert not use_gram(model(5), "auto") and state_form(model(5), "auto") != "gram"


def _features(*columns: np.ndarray) -> torch.Tensor:
    """H (1, d, N) with the given columns as the features h_1 .. h_N."""
    return torch.tensor(np.stack(columns, axis=1)).unsqueeze(0)


@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("mse", "free")])
def test_gram_metrics_where_every_class_mean_is_the_same_point(loss, bias):
    """Every class holds the same two features a, b (K = 3, 2 per class), so all class means
    are (a + b) / 2: the centred class means are 0 and nc1, nc1_trace, cdnv are inf, the mean
    angles and norms undefined (NaN). The Gram form, whose class means carry rounding of
    order eps |h|^2, gives the d-space values of :func:`ncsim.metrics.nc_metrics` (to 1e-10,
    inf and NaN alike), not finite numbers made of that rounding; nc3_paper included, whose
    cosines there are a rounding residue over a zero norm (NaN, never +-inf: -inf would read
    as an onset of an nc3_paper threshold)."""
    model = ModelSpec(loss=loss, bias=bias, classes=3, per_class=2, dim=12)
    gram = GramObjective(model, "cpu", F64)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(12), rng.standard_normal(12)
    h = _features(a, b, a, b, a, b)
    w = torch.tensor(rng.standard_normal((1, 3, 12)))
    bias_value = torch.tensor(rng.standard_normal((1, 3))) if model.has_bias else None
    got = gram.metrics(gram.from_parameters(h, w, bias_value))
    want = nc_metrics(h.transpose(1, 2), labels_for(model), 3, w, bias_value)
    assert float(want["nc1"][0]) == np.inf and float(want["class_mean_norm"][0]) == 0.0
    assert torch.isnan(want["nc3_paper"]).all() and torch.isnan(got["nc3_paper"]).all()
    for name in METRIC_NAMES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10,
                                   equal_nan=True, msg=name)


@pytest.mark.parametrize("seed", range(6))
def test_gram_nc3_paper_of_coinciding_class_means_is_nan_and_gives_no_onset(seed):
    """Every class holds a and b (seeds 0-5 draw them): the Gram nc3_paper is NaN, never
    +-inf, so a run from that state with onset metric nc3_paper < 0.05 has no onset at t = 0
    in the Gram form, as in the parameter form."""
    from ncsim.flow import simulate
    from ncsim.spec import InitSpec, OnsetSpec, Regularization, RunSpec, SolverSpec

    model = ModelSpec(loss="ce", bias="none", classes=3, per_class=2, dim=12)
    gram = GramObjective(model, "cpu", F64)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(12), rng.standard_normal(12)
    w = rng.standard_normal((3, 12))
    h = _features(a, b, a, b, a, b)
    got = gram.metrics(gram.from_parameters(h, torch.tensor(w)[None], None))
    assert torch.isnan(got["nc3_paper"]).all()
    if seed != 5:
        return
    for reduction in ("none", "gram"):
        spec = RunSpec(model=model, reg=Regularization(lambda_w=1e-2, lambda_h=1e-2),
                       init=InitSpec(kind="arrays", arrays={"H": h[0].numpy(), "W": [w]}),
                       solver=SolverSpec(t_end=1.0, records=5, reduction=reduction),
                       onset=OnsetSpec(metric="nc3_paper", threshold=0.05))
        run = simulate(spec, theory=False).runs.iloc[0]
        assert np.isnan(run["onset_time"]), reduction


@pytest.mark.parametrize("gap", [1e-13, 1e-10, 1e-8, 1e-6, 1e-4])
def test_gram_cdnv_of_two_nearly_coinciding_class_means_is_flagged_or_right(gap):
    """Classes 0 and 1 hold features a, b and a + gap p, b + gap p (|a|, |b|, |p| ~ sqrt(12)),
    so their means are gap |p| apart and the cdnv is ~ 1 / gap^2. The Gram form resolves a
    squared distance only above its rounding (~eps |h|^2, about 1e-12 here): below that its
    cdnv is inf (unresolved), above it the d-space value to 10% (rounding of 1e-12 in a
    squared distance of 1e-11 and more). It is never a finite number off by a factor."""
    model = ModelSpec(loss="ce", bias="none", classes=3, per_class=2, dim=12)
    gram = GramObjective(model, "cpu", F64)
    rng = np.random.default_rng(5)
    a, b, c, e, p = (rng.standard_normal(12) for _ in range(5))
    w = torch.tensor(rng.standard_normal((1, 3, 12)))
    h = _features(a, b, a + gap * p, b + gap * p, c, e)
    got = float(gram.metrics(gram.from_parameters(h, w, None))["cdnv"][0])
    want = float(nc_metrics(h.transpose(1, 2), labels_for(model), 3, w, None)["cdnv"][0])
    assert 0.1 / gap ** 2 < want < 1e3 / gap ** 2
    assert got == np.inf or got == pytest.approx(want, rel=0.1)
    if gap >= 1e-4:
        assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize(("dim", "forms"), [(40, ("auto", "none")), (5, ("none", "classes"))])
def test_gaussian_start_has_feature_norm_scale_times_the_chi_mean(dim, forms):
    """A gaussian init of scale a has i.i.d. N(0, a^2) entries, so each |h_i| is a chi with d
    degrees of freedom times a, and fn(0) (mean |h_i| over the N = 6 samples) has mean
    a sqrt(2) Gamma((d + 1)/2) / Gamma(d/2) (about a sqrt(d)) and standard deviation
    a sqrt(d - E[chi]^2) / sqrt(6). Over 1000 seeds the recorded fn(0) is within 5 standard
    errors of that mean, in each form (d = 40: drawn through the Gram factor, Gram form under
    "auto"; d = 5: entry by entry, parameters and class means); the forms record the same
    fn(0) run by run (1e-12)."""
    a, seeds = 0.3, 1000
    model = ModelSpec(loss="mse", classes=2, per_class=3, dim=dim)
    fn0 = []
    for form in forms:
        solver = SolverSpec(method="gd", dt=1e-3, t_end=1e-3, records=2, gtol=0.0,
                            reduction=form)
        specs = [RunSpec(model=model, init=InitSpec(scale=a, seed=s), solver=solver,
                         reg=Regularization(lambda_w=1e-2, lambda_h=1e-2))
                 for s in range(seeds)]
        traj = simulate(specs, theory=False).trajectories
        fn0.append(traj[traj["time"] == 0.0]["fn"].to_numpy())
    np.testing.assert_allclose(fn0[1], fn0[0], rtol=1e-12)
    chi_mean = math.sqrt(2.0) * math.exp(gammaln((dim + 1) / 2) - gammaln(dim / 2))
    se = a * math.sqrt(dim - chi_mean ** 2) / math.sqrt(6 * seeds)
    assert len(fn0[0]) == seeds
    assert abs(fn0[0].mean() - a * chi_mean) < 5 * se
    # the a sqrt(d) of the theory: E[chi_d] = sqrt(d) (1 - 1/(4d) + O(d^-2))
    assert chi_mean / math.sqrt(dim) == pytest.approx(1 - 1 / (4 * dim), rel=5e-3)


class _ClusteredRecords(SolverSpec):
    """Record times 0, four within 3e-9 of t = 1, and t_end = 10."""

    def record_times(self) -> np.ndarray:
        return np.array([0.0, 1.0, 1.0 + 1e-9, 1.0 + 2e-9, 1.0 + 3e-9, 10.0])


@pytest.mark.parametrize("crossings", [1, 2])
def test_a_step_cut_short_by_a_record_time_does_not_shrink_the_next_steps(monkeypatch,
                                                                          crossings):
    """The accelerator's loop (run on the CPU) cuts a step so that it crosses at most
    ``crossings`` record times; with four record times within 3e-9 a cut step is some 1e-9
    long, and the step after it starts again from the step size the controller had before the
    cut. So the loop takes at most one step per cut more than the CPU loop (whose steps run
    free): 4 with one crossing a step, 2 with two; and every record is the exact solution
    expm(A t) y0 within 1e3 rtol."""
    solver = _ClusteredRecords(method="dopri5", rtol=1e-6, atol=1e-6, t_end=10.0, records=6,
                               gtol=0.0)
    y0 = torch.tensor(_Y0, dtype=F64).unsqueeze(0)
    free = integrate(_linear, y0, solver, lambda s, r: s, 4)
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    monkeypatch.setattr(INTEGRATE, "_DEVICE_CROSSINGS", crossings)
    cut = integrate(_linear, y0, solver, lambda s, r: s, 4)
    assert int(cut.rejected[0]) == 0
    if crossings == 1:
        assert int(free.steps[0]) < int(cut.steps[0]) <= int(free.steps[0]) + 4
    else:
        assert int(free.steps[0]) <= int(cut.steps[0]) <= int(free.steps[0]) + 2
    exact = np.array([expm(_A * t) @ _Y0 for t in solver.record_times()])
    for result in (free, cut):
        np.testing.assert_allclose(result.records[0], exact, rtol=0, atol=1e3 * 1e-6)


@pytest.mark.parametrize("gtol", [0.0, 1e-3])
def test_default_gradient_norm_divides_the_velocity_by_the_time_scales(gtol):
    """f = |y|^2 / 2 with per-entry time scales eta = (4, 0.5): y' = -eta y, grad f = y. The
    reported |grad f| is |y_final| (not |eta y_final|); with gtol = 1e-3 the run stops as
    steady at the first step that brings |y| = exp(-t/2) to gtol or below (the CPU loop
    tests every step), so before t = 2 ln(1/gtol) + 1 (its steps are much shorter than 1)."""
    eta = torch.tensor([[4.0, 0.5]], dtype=F64)
    y0 = torch.tensor([[0.0, 1.0]], dtype=F64)  # only the slow coordinate moves
    solver = SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12, t_end=30.0, records=2,
                        gtol=gtol)
    result = integrate(lambda y: -eta * y, y0, solver, _first_value, 1, eta=eta)
    y_final = float(result.final_state[0, 1])
    assert float(result.grad_norm[0]) == pytest.approx(abs(y_final), rel=1e-12)
    t = float(result.t_final[0])
    # global error: a few hundred local errors below rtol |y| + atol
    assert y_final == pytest.approx(np.exp(-0.5 * t), rel=1e-7, abs=1e-10)
    if gtol == 0.0:
        assert t == 30.0 and int(result.code[0]) == DONE
    else:
        assert int(result.code[0]) == STEADY
        assert abs(y_final) <= gtol
        assert t <= np.log(1 / gtol) / 0.5 + 1.0  # within one (short) step of exp(-t/2) = gtol
