"""Peer solvers for the benchmarks: scipy ``solve_ivp`` (a loop over runs), torchdiffeq
``odeint`` (one coupled batch) and torchode (per-run steps).

Every peer integrates the same gradient flow of the one-layer UFM (bias-free, time scales 1) in
the parameters (H, W) from the same initial states as ncsim, returns the states at the record
times, and the benchmark computes the NC metrics of those states with
:func:`ncsim.metrics.nc_metrics` (timed as part of the peer). The torch peers run on the
problem's device and in its dtype; the scipy loop always runs on the CPU in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ncsim.flow.integrate import record_block
from ncsim.metrics import nc_metrics
from ncsim.models import UFMObjective, initial_state
from ncsim.spec import RunSpec


@dataclass
class Problem:
    """The batched flow of a list of one-layer UFM runs, in torch and in numpy.

    Attributes
    ----------
    objective : :class:`~ncsim.models.UFMObjective` on ``device`` in ``dtype``.
    y0 : (R, P) initial states (``device``, ``dtype``; drawn in float64 like ncsim's).
    lambda_w, lambda_h : (R,) weight decays (``device``, ``dtype``).
    times : (T,) record times (first is 0).
    t_end : final time.
    """

    objective: UFMObjective
    y0: torch.Tensor
    lambda_w: torch.Tensor
    lambda_h: torch.Tensor
    times: np.ndarray
    t_end: float

    @classmethod
    def from_specs(cls, specs: list[RunSpec], device: str = "cpu",
                   dtype: torch.dtype = torch.float64) -> Problem:
        model, solver = specs[0].model, specs[0].solver
        if model.kind != "ufm" or model.has_bias:
            raise ValueError("the peers integrate the bias-free one-layer UFM")
        for s in specs:  # what the peers' flow leaves out must be what the runs leave out
            if s.model != model or not np.array_equal(s.solver.record_times(),
                                                      solver.record_times()):
                raise ValueError("the peers integrate runs of one model and one set of "
                                 "record times (up to t_end); split the runs by model and solver")
            scales = (*s.time_scale.per_layer(1), s.time_scale.eta_h)
            if any(float(eta) != 1.0 for eta in scales):
                raise ValueError(f"the peers integrate the flow with time scales 1, got "
                                 f"eta_w, eta_h = {scales}; use the default TimeScale")
        obj = UFMObjective(model, device, dtype)
        y0 = initial_state(model, [s.init for s in specs], "cpu", torch.float64)
        lw = torch.tensor([s.reg.per_layer(1)[0] for s in specs], dtype=torch.float64)
        lh = torch.tensor([s.reg.lambda_h for s in specs], dtype=torch.float64)
        move = {"device": device, "dtype": dtype}
        return cls(obj, y0.to(**move), lw.to(**move), lh.to(**move), solver.record_times(),
                   float(solver.t_end))

    def subset(self, runs: list[int]) -> Problem:
        """The problem of the runs ``runs`` alone."""
        index = torch.tensor(runs, device=self.y0.device)
        return Problem(self.objective, self.y0[index], self.lambda_w[index],
                       self.lambda_h[index], self.times, self.t_end)

    @property
    def device(self) -> torch.device:
        return self.y0.device

    def torch_velocity(self, lw: torch.Tensor, lh: torch.Tensor
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
        """(M, P) -> (M, P) velocity -grad f for runs with weight decays ``lw``, ``lh`` (M,)."""
        from ncsim.models import Penalties

        pen = Penalties(w=lw.view(1, -1), h=lh, b=torch.zeros_like(lh))
        obj = self.objective
        return lambda y: -obj.gradient(y, pen)

    def numpy_velocity(self, i: int) -> Callable[[float, np.ndarray], np.ndarray]:
        """Velocity of run ``i`` as a numpy function (t, y (P,)) -> (P,) for scipy."""
        lay = self.objective.layout
        hb, wb = lay["H"], lay["W1"]
        d, n = hb.shape
        k = wb.shape[0]
        onehot = self.objective.onehot.double().cpu().numpy()
        lw, lh = float(self.lambda_w[i]), float(self.lambda_h[i])
        ce = self.objective.model.loss == "ce"

        def f(t: float, y: np.ndarray) -> np.ndarray:
            h = y[hb.start:hb.stop].reshape(d, n)
            w = y[wb.start:wb.stop].reshape(k, d)
            z = w @ h
            if ce:
                e = np.exp(z - z.max(axis=0))
                g = (e / e.sum(axis=0) - onehot) / n
            else:
                g = (z - onehot) / n
            out = np.empty_like(y)
            out[hb.start:hb.stop] = (-(w.T @ g) - lh * h).ravel()
            out[wb.start:wb.stop] = (-(g @ h.T) - lw * w).ravel()
            return out

        return f

    def metrics(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """NC metrics of states (M, P) (in their dtype, on their device), computed in blocks
        of as many states as ncsim's own records use (cache-sized on the CPU: one call on
        W1's 12,800 states took 3.4-5 s, blocks of 128 about 1.5 s)."""
        lay = self.objective.layout
        block = record_block(states.device, states.shape[1] * states.element_size())
        parts = []
        for lo in range(0, max(states.shape[0], 1), block):  # no states: one empty call
            chunk = states[lo:lo + block]
            h, w = lay.view(chunk, "H"), lay.view(chunk, "W1")
            parts.append(nc_metrics(h.transpose(1, 2), self.objective.labels,
                                    self.objective.model.classes, w))
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def fn(self, states: torch.Tensor) -> np.ndarray:
        """fn (M,) of states (M, P)."""
        h = self.objective.layout.view(states, "H")
        return h.norm(dim=1).mean(1).double().cpu().numpy()


def scipy_loop(problem: Problem, method: str = "DOP853", rtol: float = 1e-8,
               atol: float = 1e-10, records: bool = True) -> dict:
    """scipy ``solve_ivp`` run by run (CPU, float64); returns final fn (R,) and f-evals (R,)."""
    from scipy.integrate import solve_ivp

    r = problem.y0.shape[0]
    y0 = problem.y0.double().cpu()
    finals, nfev, recorded = [], [], []
    t_eval = problem.times if records else None
    for i in range(r):
        sol = solve_ivp(problem.numpy_velocity(i), (0.0, problem.t_end),
                        y0[i].numpy(), method=method, rtol=rtol, atol=atol,
                        t_eval=t_eval)
        if not sol.success:
            raise RuntimeError(f"scipy {method} failed on run {i}: {sol.message}")
        finals.append(sol.y[:, -1])
        nfev.append(sol.nfev)
        if records:
            recorded.append(torch.from_numpy(sol.y.T.copy()))
    final = torch.from_numpy(np.stack(finals))
    if records:
        problem.metrics(torch.cat(recorded).to(problem.y0))
    return {"fn": problem.fn(final), "nfev": np.array(nfev)}


def torchdiffeq_batch(problem: Problem, rtol: float = 1e-8, atol: float = 1e-10) -> dict:
    """torchdiffeq ``odeint`` dopri5 on the whole batch (one coupled step size)."""
    from torchdiffeq import odeint

    f = problem.torch_velocity(problem.lambda_w, problem.lambda_h)
    nfev = [0]

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nfev[0] += 1
        return f(y)

    t = torch.as_tensor(problem.times, dtype=problem.y0.dtype, device=problem.device)
    with torch.no_grad():
        ys = odeint(func, problem.y0.clone(), t, rtol=rtol, atol=atol, method="dopri5")
    problem.metrics(ys.reshape(-1, ys.shape[-1]))
    return {"fn": problem.fn(ys[-1]), "nfev": np.full(problem.y0.shape[0], nfev[0])}


def torchode_batch(problem: Problem, rtol: float = 1e-8, atol: float = 1e-10,
                   method: str = "dopri5") -> dict:
    """torchode ``method`` (Dopri5 or Tsit5) with an integral controller: per-run steps, t_eval
    at the records."""
    import torchode as to

    f = problem.torch_velocity(problem.lambda_w, problem.lambda_h)
    r = problem.y0.shape[0]
    term = to.ODETerm(lambda t, y: f(y))
    step = {"dopri5": to.Dopri5, "tsit5": to.Tsit5}[method](term=term)
    ctrl = to.IntegralController(atol=atol, rtol=rtol, term=term)
    solver = to.AutoDiffAdjoint(step, ctrl, max_steps=1_000_000)
    # times stay float64 (as ncsim's): float32 times are ~5e-4 apart near t = 5e3
    t_eval = torch.as_tensor(problem.times, dtype=torch.float64,
                             device=problem.device).repeat(r, 1)
    problem_ivp = to.InitialValueProblem(y0=problem.y0.clone(), t_eval=t_eval)
    with torch.no_grad():
        sol = solver.solve(problem_ivp)
    if not bool((sol.status == 0).all()):
        raise RuntimeError(f"torchode failed: status {sol.status.tolist()}")
    problem.metrics(sol.ys.reshape(-1, sol.ys.shape[-1]))
    return {"fn": problem.fn(sol.ys[:, -1]), "nfev": sol.stats["n_f_evals"].cpu().numpy()}


def reference_fn(problem: Problem, rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """Reference fn(T) (R,): scipy DOP853 at rtol 1e-10, final time only."""
    out = scipy_loop(problem, method="DOP853", rtol=rtol, atol=atol, records=False)
    return out["fn"]


PEERS: dict[str, Callable[..., dict]] = {
    "scipy_dop853_loop": scipy_loop,
    "torchdiffeq_dopri5": torchdiffeq_batch,
    "torchode_dopri5": torchode_batch,
    "torchode_tsit5": lambda problem, **tol: torchode_batch(problem, method="tsit5", **tol),
}


def check_accuracy(name: str, fn: np.ndarray, ref: np.ndarray, tol: float) -> float:
    """Largest |fn - ref| over the runs (``fn`` and ``ref`` (R,)); raises AssertionError when
    it exceeds ``tol`` (NaN fails) or when ``fn`` does not hold one value per run of ``ref``."""
    fn, ref = np.asarray(fn), np.asarray(ref)
    if fn.shape != ref.shape:
        raise AssertionError(f"{name}: fn(T) has shape {fn.shape}, the reference "
                             f"{ref.shape}: one value per run is needed")
    err = float(np.max(np.abs(fn - ref)))
    if not (err <= tol) or not math.isfinite(err):
        raise AssertionError(f"{name}: fn(T) error {err:.3e} exceeds the stated accuracy "
                             f"{tol:.1e}")
    return err
