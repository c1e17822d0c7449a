"""What limits W1's step sizes: stability on the runs with unequal weight decays.

For each selected run of the W1 grid (K = 10, n = 20, d = 32, CE, no bias, T = 2e4) this
measures, in float64 on the CPU:

- ``ncsim_steps``: ncsim's dopri5 steps (rtol 1e-8, atol 1e-10, the benchmark's setting),
  and the whole grid's steps at rtol 1e-5, 1e-8 and 1e-10 (atol = rtol / 100);
- ``rk45_nfev`` and ``rk45_steps`` at rtol 1e-5, 1e-8 and 1e-10 (atol = rtol / 100) with scipy's
  RK45 (the same Dormand-Prince pair): a step count that hardly changes over five decades of
  tolerance means that stability, not accuracy, sets the step;
- ``mu_max``: the largest |eigenvalue| of the flow's Jacobian (minus the Hessian of the
  objective) at the final state, by power iteration on central differences of the velocity;
- ``h_mu``: the mean of the last 50 RK45 steps (rtol 1e-8) times ``mu_max``, against the
  method's real stability boundary (3.307 for Dormand-Prince): a stability-limited step
  controller hovers at that product.

Usage: ``python benchmarks/stiffness.py [--grid 8] [--t-end 2e4] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import Problem  # noqa: E402
from benchmarks.workloads import w1  # noqa: E402
from ncsim.bench import machine  # noqa: E402
from ncsim.flow.tableau import tableau  # noqa: E402

RTOLS = (1e-5, 1e-8, 1e-10)


def largest_curvature(velocity, y: np.ndarray, iterations: int = 300, seed: int = 0
                      ) -> tuple[float, float]:
    """(largest |eigenvalue|, its relative change over the last 10 iterations) of the
    Jacobian of ``velocity`` (t, y (P,)) -> (P,) at ``y``.

    Power iteration on J v = (f(y + e v) - f(y - e v)) / (2 e), e = 1e-6 (1 + |y|_inf); the
    Jacobian of a gradient flow is symmetric, so the iteration converges to the eigenvalue of
    largest magnitude."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(y.shape)
    v /= np.linalg.norm(v)
    eps = 1e-6 * (1.0 + np.abs(y).max())
    estimates = []
    for _ in range(iterations):
        jv = (velocity(0.0, y + eps * v) - velocity(0.0, y - eps * v)) / (2 * eps)
        estimates.append(float(np.linalg.norm(jv)))
        v = jv / estimates[-1]
    return estimates[-1], abs(estimates[-1] - estimates[-11]) / estimates[-1]


def measure_run(problem: Problem, i: int, ncsim_steps: int, boundary: float) -> dict:
    """Step counts over tolerances, the stiff eigenvalue at T and h * mu for run ``i``."""
    from scipy.integrate import solve_ivp

    f, y0 = problem.numpy_velocity(i), problem.y0[i].numpy()
    row = {"run": i, "lambda_w": float(problem.lambda_w[i]),
           "lambda_h": float(problem.lambda_h[i]), "ncsim_steps": ncsim_steps,
           "rk45_nfev": {}, "rk45_steps": {}}
    final = None
    for rtol in RTOLS:
        sol = solve_ivp(f, (0.0, problem.t_end), y0, method="RK45", rtol=rtol,
                        atol=rtol / 100)
        if not sol.success:
            raise RuntimeError(f"RK45 failed on run {i} at rtol {rtol}: {sol.message}")
        row["rk45_nfev"][str(rtol)] = int(sol.nfev)
        row["rk45_steps"][str(rtol)] = len(sol.t) - 1
        if rtol == 1e-8:
            final, last_steps = sol.y[:, -1], np.diff(sol.t)[-51:-1]  # the last one is cut
    mu, drift = largest_curvature(f, final)
    row.update(mu_max=mu, mu_drift=drift, h_end=float(last_steps.mean()),
               h_mu=float(last_steps.mean() * mu), boundary=boundary)
    return row


def stiffness_report(grid: int = 8, t_end: float = 2e4) -> dict:
    """The measurements of the module docstring for the corners and the centre of a
    ``grid`` x ``grid`` W1 grid with horizon ``t_end``; prints a line per run."""
    from ncsim.flow import simulate

    steps_by_rtol = {}
    for rtol in RTOLS:  # the grid's steps at each tolerance (ncsim dopri5)
        specs = w1(grid=grid, t_end=t_end, rtol=rtol, atol=rtol / 100).specs
        steps_by_rtol[str(rtol)] = simulate(specs, theory=False).runs["steps"].to_numpy()
    totals = {rtol: int(s.sum()) for rtol, s in steps_by_rtol.items()}
    workload = w1(grid=grid, t_end=t_end)
    solver = workload.specs[0].solver
    steps = steps_by_rtol[str(solver.rtol)]  # the benchmark's own tolerances, run above
    assert solver.atol == solver.rtol / 100, "W1's atol is no longer rtol / 100"
    centre = ((grid - 1) // 2) * grid + (grid - 1) // 2  # 35 on the 8 x 8 grid
    chosen = sorted({0, grid - 1, centre, grid * (grid - 1), grid * grid - 1})
    problem = Problem.from_specs(workload.specs)
    boundary = tableau("dopri5").real_stability_boundary()
    rows = []
    for i in chosen:
        rows.append(measure_run(problem, i, int(steps[i]), boundary))
        r = rows[-1]
        print(f"run {i:3d}  lambda_w {r['lambda_w']:.2e}  lambda_h {r['lambda_h']:.2e}  "
              f"ncsim {r['ncsim_steps']:5d}  RK45 steps "
              + " / ".join(f"{r['rk45_steps'][str(t)]}" for t in RTOLS)
              + f" (rtol {' / '.join(f'{t:g}' for t in RTOLS)})  mu_max {r['mu_max']:.4g}"
              f"  h_end {r['h_end']:.4g}  h*mu {r['h_mu']:.3f} (boundary {boundary:.3f})",
              flush=True)
    return {"machine": machine(), "date": datetime.date.today().isoformat(), "grid": grid,
            "t_end": t_end, "total_ncsim_steps": int(steps.sum()),
            "total_ncsim_steps_by_rtol": totals,
            "ncsim_steps_grid": steps.reshape(grid, grid).tolist(), "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--t-end", type=float, default=2e4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = stiffness_report(args.grid, args.t_end)
    print(f"ncsim dopri5 steps over the grid: {out['total_ncsim_steps']} (rtol 1e-8, atol 1e-10;"
          " at rtol " + ", ".join(f"{t}: {n}" for t, n in
                                  out["total_ncsim_steps_by_rtol"].items())
          + " with atol = rtol / 100)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
