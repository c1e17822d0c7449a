"""The saddle test of a run at rest (ncsim.flow.saddle) and the steady stop built on it.

- :func:`growth_rate` finds the largest eigenvalue of a linear flow's matrix exactly when the
  matrix has a few distinct eigenvalues (symmetric, or similar to a diagonal one through a
  non-orthogonal basis, as time scales make it), whatever the state's scale, 0 included.
- At the origin of the one-layer UFM it equals the closed form of the growth rate
  (:func:`ncsim.theory.dynamics.growth_rate`), in parameter space; with time scales, the
  largest eigenvalue of the 2 x 2 mode matrix; in the Gram form, whose entries are products of
  two parameters, twice that rate.
- A tiny init next to the origin's saddle, with the default gtol, now follows the flow out
  of the saddle: the same records as with gtol = 0, in every loop (CPU, accelerator's,
  fixed-step). Where the origin is a minimum (decays above the critical one, or a deep head)
  the run still stops at rest.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from ncsim.flow import simulate
from ncsim.flow.saddle import growth_rate, saddle_escapes
from ncsim.flow.simulate import _Batch
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec, TimeScale
from ncsim.theory.dynamics import growth_rate as theory_growth_rate

INTEGRATE = importlib.import_module("ncsim.flow.integrate")


def _linear(matrix: np.ndarray):
    a = torch.as_tensor(matrix)
    return lambda y: y @ a.T


def _spectrum_matrix(values: list[float], p: int, symmetric: bool, seed: int = 3) -> np.ndarray:
    """A (p, p) matrix with the eigenvalues ``values`` (each repeated) in a random basis:
    orthogonal when symmetric, else a well-conditioned non-orthogonal one."""
    rng = np.random.default_rng(seed)
    diag = np.resize(np.asarray(values, dtype=float), p)
    if symmetric:
        q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        return q @ np.diag(diag) @ q.T
    basis = np.eye(p) + 0.3 * rng.standard_normal((p, p)) / math.sqrt(p)
    return basis @ np.diag(diag) @ np.linalg.inv(basis)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("top", [3e-3, -2e-4])
def test_growth_rate_of_a_linear_flow_with_few_distinct_eigenvalues(symmetric, top):
    """Five distinct eigenvalues: the Krylov space is invariant after five steps, so the
    largest Ritz real part is the largest eigenvalue to rounding (the difference quotient of a
    linear map is exact up to rounding), and the largest modulus the spectral radius. Rows at
    scale 1, 1e-10 and exactly 0 give the same numbers (the step follows the state's scale,
    with a floor at 0)."""
    values = [top, -1e-3, -0.02, -0.1, -0.3]
    f = _linear(_spectrum_matrix(values, 60, symmetric))
    y = torch.randn(3, 60, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = y * torch.tensor([[1.0], [1e-10], [0.0]], dtype=torch.float64)
    rate, radius = growth_rate(f, y, torch.arange(3))
    np.testing.assert_allclose(rate, top, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(radius, 0.3, rtol=1e-6)


def test_saddle_escapes_needs_growth_by_e_before_t_end_and_above_the_noise():
    """mu = 3e-3: with 400 time units left the direction grows by e^1.2 (escapes), with 300
    by e^0.9 (does not). A flat direction (largest eigenvalue exactly 0, as the rotations of a
    UFM's minimum give) never counts as growth, however long the horizon."""
    y = torch.randn(2, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows = torch.arange(2)
    saddle = _linear(_spectrum_matrix([3e-3, -0.05, -0.2], 40, symmetric=True))
    escapes, mu = saddle_escapes(saddle, y, rows, torch.tensor([400.0, 300.0],
                                                               dtype=torch.float64))
    assert escapes.tolist() == [True, False]
    np.testing.assert_allclose(mu.numpy(), 3e-3, rtol=1e-7)
    flat = _linear(_spectrum_matrix([0.0, -0.05, -0.2], 40, symmetric=True))
    escapes, mu = saddle_escapes(flat, y, rows, torch.tensor([1e15, 1e15], dtype=torch.float64))
    assert escapes.tolist() == [False, False]
    assert np.all(np.abs(mu.numpy()) < 1e-12)


def _ufm(loss: str = "ce", lambda_w: float = 1e-3, lambda_h: float = 2e-3, dim: int = 8,
         scale: float = 1e-12, eta: TimeScale | None = None, depth: int = 1,
         **solver) -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, classes=4, per_class=3,
                      dim=dim, depth=depth)
    spec = RunSpec(model=model,
                   reg=Regularization(lambda_w=lambda_w, lambda_h=lambda_h),
                   init=InitSpec(scale=scale, seed=5),
                   solver=SolverSpec(**{"t_end": 2000.0, "records": 30, **solver}))
    return spec if eta is None else spec.replace(time_scale=eta)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_growth_rate_at_the_ufm_origin_is_the_closed_form(loss):
    """At an init of scale 1e-12 the velocity is linear to 1e-12 relative; its largest
    eigenvalue is the closed form -(lW + lH)/2 + sqrt(((lW - lH)/2)^2 + 1/(K^2 n)) of the
    theory module (K = 4, n = 3: 0.14284...)."""
    batch = _Batch([_ufm(loss)])
    rate, _ = growth_rate(batch.velocity, batch.y0, torch.arange(1))
    want = float(theory_growth_rate(4, 3, 1e-3, 2e-3))
    assert want == pytest.approx(-1.5e-3 + math.sqrt(0.5e-3 ** 2 + 1 / 48), rel=1e-14)
    assert rate[0] == pytest.approx(want, rel=1e-7)


def test_growth_rate_at_the_origin_with_time_scales():
    """eta_W = 2, eta_H = 0.5: the modes (a, c) of W = a u e^T, H = c e v^T follow
    a' = -eta_W (lW a + s c), c' = -eta_H (s a + lH c) with s = 1 / (K sqrt(n)), so the rate
    is the largest eigenvalue of that 2 x 2 matrix."""
    batch = _Batch([_ufm(eta=TimeScale(eta_w=2.0, eta_h=0.5))])
    rate, _ = growth_rate(batch.velocity, batch.y0, torch.arange(1))
    s = 1 / (4 * math.sqrt(3))
    modes = np.array([[-2.0 * 1e-3, -2.0 * s], [-0.5 * s, -0.5 * 2e-3]])
    assert rate[0] == pytest.approx(np.linalg.eigvals(modes).real.max(), rel=1e-7)


def test_growth_rate_of_the_gram_form_at_the_origin_is_twice_the_parameters_rate():
    """The Gram state (W H, W W^T, H^T H) holds products of two parameters, so near the
    origin it grows at 2 mu, mu the parameters' rate (d = 40 >= K - 1 for CE's Gram form)."""
    spec = _ufm(dim=40, reduction="gram")
    batch = _Batch([spec])
    assert batch.form == "gram"
    rate, _ = growth_rate(batch.velocity, batch.y0, torch.arange(1))
    assert rate[0] == pytest.approx(2 * float(theory_growth_rate(4, 3, 1e-3, 2e-3)), rel=1e-6)


def _use_loop(monkeypatch, loop: str) -> None:
    if loop == "device":
        monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
        monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


def _count_saddle_tests(monkeypatch) -> list[tuple[float, bool]]:
    """Wrap the integrator's saddle test; the list gets (time left, escapes) of each tested
    run."""
    calls: list[tuple[float, bool]] = []
    real = INTEGRATE.saddle_escapes

    def counted(f, y, rows, time_left):
        escapes, mu = real(f, y, rows, time_left)
        calls.extend(zip(time_left.tolist(), escapes.tolist(), strict=True))
        return escapes, mu

    monkeypatch.setattr(INTEGRATE, "saddle_escapes", counted)
    return calls


@pytest.mark.parametrize(("loop", "loss", "solver"), [
    ("cpu", "ce", {}), ("device", "ce", {"check_every": 4}), ("cpu", "ce", {"method": "tsit5"}),
    ("cpu", "ce", {"method": "rk4", "dt": 2.0, "check_every": 4}),
    ("cpu", "ce", {"reduction": "gram"}),
    ("device", "ce", {"reduction": "gram", "check_every": 4}),
    ("cpu", "mse", {"reduction": "classes"}), ("cpu", "mse", {"reduction": "none"}),
])
def test_a_tiny_init_follows_the_flow_out_of_the_origin_saddle(monkeypatch, loop, loss, solver):
    """Scale 1e-12, |grad f| ~ 2e-12 <= gtol = 1e-10 from the start. The origin is a saddle
    (mu = 0.143, lambda below the critical decay), so the run is not steady: it collapses with
    the very records and step count of gtol = 0 (and the saddle test did run: the device loop
    tests at chunk ends, so its chunks are short enough to end while the run is at rest)."""
    _use_loop(monkeypatch, loop)
    calls = _count_saddle_tests(monkeypatch)
    default = simulate(_ufm(loss, dim=16, **solver), theory=False)
    assert calls and all(escapes for _, escapes in calls)
    followed = simulate(_ufm(loss, dim=16, gtol=0.0, **solver), theory=False)
    run, ref = default.runs.iloc[0], followed.runs.iloc[0]
    assert run["status"] == ref["status"] == "ok"
    assert run["steps"] == ref["steps"] and run["t_final"] == ref["t_final"] == 2000.0
    cols = ["fn", "nc1_trace", "objective"]
    np.testing.assert_array_equal(default.trajectories[cols].to_numpy(),
                                  followed.trajectories[cols].to_numpy())


def test_the_saddle_test_runs_once_per_growth_time_not_once_per_step(monkeypatch):
    """The CPU loop tests rest at every step; after a saddle is found a run is not tested
    again before t + 1 / mu (mu = 0.143: every 7 time units), so the steps it takes at rest
    near the origin cost one test per 7 time units, not one per step."""
    calls = _count_saddle_tests(monkeypatch)
    run = simulate(_ufm(dim=16), theory=False).runs.iloc[0]
    assert run["status"] == "ok"
    times = [2000.0 - left for left, _ in calls]
    assert len(times) >= 2
    mu = float(theory_growth_rate(4, 3, 1e-3, 2e-3))
    assert min(np.diff(times)) >= 1 / mu * (1 - 1e-6)


@pytest.mark.parametrize(("depth", "lambdas"), [(1, (0.2, 0.2)), (3, (1e-3, 1e-3))])
def test_a_tiny_init_still_stops_where_the_origin_is_a_minimum(depth, lambdas):
    """lambda = 0.2 > 1 / (K sqrt(n)) = 0.144: the origin is the minimum (mu < 0), and a deep
    head's data gradient is of second order at 0 (mu = -min lambda): the tiny init stops at
    rest long before t_end, as before the saddle test."""
    spec = _ufm(lambda_w=lambdas[0], lambda_h=lambdas[1], depth=depth)
    assert float(theory_growth_rate(4, 3, *lambdas, depth=depth)) < 0
    run = simulate(spec, theory=False).runs.iloc[0]
    assert run["t_final"] < 100.0
    assert run["status"] in ("not_collapsed", "vanishing")
