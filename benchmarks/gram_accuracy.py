"""Accuracy per step of the Gram form against the d-space form (W2's one-layer UFM).

The Gram form takes more steps than the d-space form at the same tolerance (its error test
judges each inner product against the Cauchy-Schwarz bound of its factors). This checks
whether that test is stricter than it needs to be: for each loss and horizon, both forms run at
rtol 1e-10, 2e-10 and 4e-10 (atol = rtol / 100) and their recorded trajectories (loss,
objective, fn, class-mean norm, |W|; each column relative to its largest value) are compared
with a Gram-form reference at rtol 1e-13. The two references agree to ``ref_difference``.

Usage: ``python benchmarks/gram_accuracy.py [--dim 1024] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workloads import w2  # noqa: E402
from ncsim.bench import machine, w2_difference  # noqa: E402

RTOLS = (1e-10, 2e-10, 4e-10)
CASES = (("mse", 20.0, 2), ("mse", 1000.0, 4), ("ce", 20.0, 2), ("ce", 1000.0, 4))


def errors_per_form(loss: str, t_end: float, runs: int, dim: int,
                    rtols: tuple[float, ...] = RTOLS) -> dict:
    """Trajectory error against an rtol 1e-13 reference and total steps, per form and rtol."""
    from ncsim.flow import simulate

    def run(reduction: str, rtol: float):
        specs = w2(loss=loss, dim=dim, runs=runs, t_end=t_end, records=20, rtol=rtol,
                   atol=rtol / 100, reduction=reduction).specs
        return simulate(specs, theory=False)

    ref = run("gram", 1e-13)
    out = {"loss": loss, "t_end": t_end, "runs": runs, "dim": dim,
           "ref_difference": w2_difference(run("none", 1e-13), ref), "forms": {}}
    for reduction in ("gram", "none"):
        rows = {}
        for rtol in rtols:
            result = run(reduction, rtol)
            rows[str(rtol)] = {"error": w2_difference(result, ref),
                               "steps": int(result.runs["steps"].sum())}
        out["forms"][reduction] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cases = []
    for loss, t_end, runs in CASES:
        case = errors_per_form(loss, t_end, runs, args.dim)
        cases.append(case)
        print(f"{loss} T = {t_end:g} ({runs} runs, d = {args.dim}; references differ by "
              f"{case['ref_difference']:.1e})")
        for reduction, rows in case["forms"].items():
            print(f"  {reduction:5s} " + "  ".join(
                f"rtol {rtol}: error {row['error']:.2e}, {row['steps']} steps"
                for rtol, row in rows.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(),
                                        "date": datetime.date.today().isoformat(),
                                        "cases": cases}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
