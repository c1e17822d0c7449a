"""Theory-test helpers: the deep MSE mode's decay thresholds by hand, and the start points of
the lower-rank search."""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize

from ncsim.theory import lowrank


def deep_mse_lam_glob(K: int, n: int, M: int, c: float) -> float:
    """Lambda_glob of the deep MSE mode (theory.md 3.1: s = tau_glob) with data weight c."""
    N, s = K * n, math.sqrt(n)
    return c * (s * (M - 2) / (M - 1)) ** (2 * (M - 1) / M) / ((M - 2) * N)


def deep_mse_lam_stat(K: int, n: int, M: int, c: float) -> float:
    """Lambda_stat of the deep MSE mode (theory.md 3.1: s = tau_stat) with data weight c."""
    N, s = K * n, math.sqrt(n)
    return c * M * (s * (M - 2) / (2 * (M - 1))) ** (2 * (M - 1) / M) / ((M - 2) * N)


def lowrank_search_starts(monkeypatch, *args, **kwargs
                          ) -> tuple[list[np.ndarray], lowrank.LowRankResult]:
    """The start points of the L-BFGS runs of ``lower_rank_check.uncached(*args, **kwargs)``
    and its result."""
    starts: list[np.ndarray] = []
    real = scipy.optimize.minimize

    def recorded(fun, x0, *a, **kw):
        starts.append(np.array(x0))
        return real(fun, x0, *a, **kw)

    monkeypatch.setattr(lowrank, "minimize", recorded)
    return starts, lowrank.lower_rank_check.uncached(*args, **kwargs)
