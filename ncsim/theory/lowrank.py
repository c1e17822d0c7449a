"""Lower-rank competitors of the collapsed (ETF) state for deep CE (theory.md 3.2).

With M >= 3 factors the Schatten-2/M penalty favours low rank, so for CE (which couples the
modes) a configuration whose class-mean logits have rank r < K - 1 can beat the ETF. With
within-class collapse the objective reduces to the K x K class-mean logits Zbar:

    (1/K) sum_k CE(Zbar[:, k], k) + (M/2) Lambda n^(1/M) sum_i sigma_i(Zbar)^(2/M),

minimised here for each rank r = 1 .. K - 2 through a balanced M-factor parametrisation
Zbar = F_M ... F_1 (inner width r) with penalties (Lambda n^(1/M) / 2) |F_j|_F^2, by L-BFGS
from several random starts; the best start is then polished by Newton steps on the gradient
(:func:`_polish`), since L-BFGS stops where the objective stops decreasing in float64, with a
gradient near 1e-8 and the state (its fn) good to only ~1e-8 (a one-ulp change of Lambda moved
fn by 8e-9); polished, the gradient is ~1e-16 and fn is reproducible to ~1e-15. A numeric
witness, not a proof: a lower value proves the ETF is not global; no lower value found is
evidence only.

A rank-r parametrisation also holds every state of rank below r, so several ranks can reach
the same best state (at K = 10, n = 20, Lambda = 1e-3, L = 2 the ranks 5 .. 8 all reach
f = 0.1245081345 to 6e-16): the reported rank is the smallest one whose objective lies within
a relative 1e-9 of the best. Cost: 6 restarts per rank, 0.6-11 s per call at K = 10,
n = 20, depths 2-4, Lambda = 1e-4 .. 1e-1 (one CPU thread; slowest at small Lambda and depth
3-4; the polish adds 0.2-2.4 s of it), milliseconds at K <= 4, 12 s at depth 5, Lambda =
1e-3 (measured 2026-12 on a 2-core x86 machine); the result is cached per argument tuple, in the
process and on disk (:func:`ncsim.theory.cache.numeric`), so each parameter point is searched
once per installation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ncsim.errors import is_finite_number, is_integer, require
from ncsim.theory.cache import numeric


@dataclass(frozen=True)
class LowRankResult:
    """Best objective per rank (index r - 1) and the overall best lower-rank objective, with
    what the best state found at each rank looks like (index r - 1, in the factor units of the
    search, where every factor carries the decay ``factor_decay``; see :meth:`state`)."""

    objectives: tuple[float, ...]
    best_rank: int
    best_objective: float
    feature_norms: tuple[float, ...] = ()
    last_factor_sq_norms: tuple[float, ...] = ()
    data_losses: tuple[float, ...] = ()
    factor_decay: float = float("nan")

    def best_up_to(self, max_rank: int) -> tuple[int, float]:
        """(rank, objective) of the best state of rank <= ``max_rank``: the smallest rank
        within a relative :data:`RANK_TIE_RTOL` of the best; (0, inf) without a rank of finite
        objective."""
        return _best(self.objectives[:max_rank])

    def beats(self, objective: float, max_rank: int | None = None) -> bool:
        """Whether a state of rank <= ``max_rank`` (default: any) lies below ``objective`` by
        more than :data:`BEAT_RTOL` relative, which proves ``objective`` is not the minimum."""
        best = self.best_up_to(len(self.objectives) if max_rank is None else max_rank)[1]
        return bool(best < objective - BEAT_RTOL * max(1.0, abs(objective)))

    def state(self, max_rank: int, lambda_last: float) -> LowRankState:
        """The best state of rank <= ``max_rank`` (the rank :meth:`best_up_to` reports) in the
        units of the model whose last layer W_L has the decay ``lambda_last``.

        The search's factors F_1 .. F_M all carry the decay c = ``factor_decay`` = Lambda
        n^(1/M); the model's are H-bar = c_0 F_1 (class means), W_l = c_l F_(l+1) with
        lambda_H n c_0^2 = lambda_l c_l^2 = c and prod c_j = 1 (same logits, same objective).
        So W_L = sqrt(c / lambda_L) F_M, and the penultimate class means W_(L-1) .. W_1 H-bar
        = F_(M-1) .. F_1 / sqrt(c / lambda_L): fn = feature_norm sqrt(lambda_L / c), and the
        RMS classifier row norm |W_L|_F / sqrt(K) = sqrt(c |F_M|^2 / (lambda_L K)).
        """
        rank, objective = self.best_up_to(max_rank)
        if rank == 0 or not self.feature_norms:
            nan = float("nan")
            return LowRankState(rank, objective, nan, nan, nan)
        K = len(self.objectives) + 2
        scale = math.sqrt(lambda_last / self.factor_decay)
        return LowRankState(rank, objective, self.feature_norms[rank - 1] * scale,
                            math.sqrt(self.last_factor_sq_norms[rank - 1] / K) / scale,
                            self.data_losses[rank - 1])


@dataclass(frozen=True)
class LowRankState:
    """A lower-rank state of a deep CE head in the model's units (:meth:`LowRankResult.state`):
    its rank, objective f, fn (mean norm of the penultimate features, the input of W_L),
    RMS classifier row norm |W_L|_F / sqrt(K) and mean data loss; NaN without a state."""

    rank: int
    objective: float
    fn: float
    w_norm: float
    loss: float


def _factors(theta: np.ndarray, K: int, r: int, M: int) -> list[np.ndarray]:
    """F_1 (r, K), F_2 .. F_(M-1) (r, r), F_M (K, r) from the flat parameter vector."""
    shapes = [(r, K)] + [(r, r)] * (M - 2) + [(K, r)]
    mats, i = [], 0
    for a, b in shapes:
        mats.append(theta[i:i + a * b].reshape(a, b))
        i += a * b
    return mats


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    """Column-wise log-softmax of the (K, K) class-mean logits."""
    Zs = Z - Z.max(axis=0)
    return Zs - np.log(np.exp(Zs).sum(axis=0))


def _objective(theta: np.ndarray, K: int, r: int, M: int, lam: float):
    mats = _factors(theta, K, r, M)
    acts = [mats[0]]
    for F in mats[1:]:
        acts.append(F @ acts[-1])
    logp = _log_softmax(acts[-1])
    f = -np.trace(logp) / K + sum(lam / 2 * np.sum(F ** 2) for F in mats)
    G = (np.exp(logp) - np.eye(K)) / K
    grads = [None] * M
    delta = G
    for j in range(M - 1, 0, -1):
        grads[j] = delta @ acts[j - 1].T + lam * mats[j]
        delta = mats[j].T @ delta
    grads[0] = delta + lam * mats[0]
    return f, np.concatenate([g.ravel() for g in grads])


def _describe(theta: np.ndarray, K: int, r: int, M: int) -> tuple[float, float, float]:
    """(mean column norm of F_(M-1) .. F_1, |F_M|_F^2, mean data loss) of a found state."""
    mats = _factors(theta, K, r, M)
    penultimate = mats[0]
    for F in mats[1:-1]:
        penultimate = F @ penultimate
    loss = -float(np.trace(_log_softmax(mats[-1] @ penultimate))) / K
    return (float(np.linalg.norm(penultimate, axis=0).mean()), float(np.sum(mats[-1] ** 2)),
            loss)


def _polish(theta: np.ndarray, K: int, r: int, M: int, lam: float,
            max_steps: int = 6) -> np.ndarray:
    """Newton steps on the gradient of :func:`_objective` from a minimiser found by L-BFGS.

    The Hessian is the central finite difference of the analytic gradient (step 1e-5 of the
    largest entry), symmetrised; the step is its least-squares solution (the factorisation's
    gauge directions, F_(j+1) Q and Q^T F_j, make it singular). A step is kept while it lowers
    the largest gradient entry without raising the objective past rounding; the polish stops
    at a gradient of 1e-15 or after ``max_steps``. Returns the polished flat parameters."""
    def gradient(x: np.ndarray) -> np.ndarray:
        return _objective(x, K, r, M, lam)[1]

    value, grad = _objective(theta, K, r, M, lam)
    for _ in range(max_steps):
        if not np.all(np.isfinite(grad)) or np.abs(grad).max() <= 1e-15:
            break
        h = 1e-5 * max(1.0, float(np.abs(theta).max()))
        hessian = np.empty((theta.size, theta.size))
        for i in range(theta.size):
            shift = np.zeros_like(theta)
            shift[i] = h
            hessian[:, i] = (gradient(theta + shift) - gradient(theta - shift)) / (2 * h)
        hessian = (hessian + hessian.T) / 2
        step = np.linalg.lstsq(hessian, -grad, rcond=1e-9)[0]
        new_value, new_grad = _objective(theta + step, K, r, M, lam)
        if not (np.abs(new_grad).max() < np.abs(grad).max()
                and new_value <= value + 1e-13 * max(1.0, abs(value))):
            break
        theta, value, grad = theta + step, new_value, new_grad
    return theta


# relative gap within which two ranks reach the same state (the smaller rank is reported)
RANK_TIE_RTOL = 1e-9
# relative margin by which a lower-rank state must lie below an objective to beat it
BEAT_RTOL = 1e-10


def _best(objectives: tuple[float, ...]) -> tuple[int, float]:
    """(smallest rank within RANK_TIE_RTOL of the best, best objective); (0, inf) if empty or
    if no rank has a finite objective (every search overflowed: there is no state to name)."""
    if not objectives:
        return 0, np.inf
    best = min(objectives)
    if not math.isfinite(best):
        return 0, math.inf
    rank = next(r for r, value in enumerate(objectives, start=1)
                if value - best <= RANK_TIE_RTOL * abs(best))
    return rank, best


@numeric(LowRankResult)
def lower_rank_check(K: int, n: int, Lam: float, depth: int, restarts: int = 6,
                     seed: int = 0) -> LowRankResult:
    """Best objective of rank-r class-mean logits, r = 1 .. K - 2 (deep CE, M = depth + 1).

    Parameters
    ----------
    K, n : classes and samples per class (balanced).
    Lam : geometric mean of all decays, (lambda_W1 ... lambda_WL lambda_H)^(1/(L+1)).
    depth : L, the number of weight matrices (M = L + 1 factors with H).
    restarts, seed : random starts per rank and the seed of their draws.

    Returns
    -------
    LowRankResult with ``objectives[r - 1]`` the best objective found at rank <= r,
    ``best_rank`` the smallest rank whose objective is within a relative ``RANK_TIE_RTOL``
    of the best (0 and ``best_objective`` inf where K < 3: no rank below K - 1), and per
    rank the found state's penultimate norm, last factor and data loss in the search's units
    (:meth:`LowRankResult.state` converts them to the model's).

    Raises
    ------
    InputError : K, n, depth, restarts or seed not an integer (>= 2, 1, 1, 1, 0), or Lam not a
        finite number > 0.
    ArithmeticError : no start reached a finite objective (a Lam so large that it overflows).
    """
    for value, name, low in ((K, "K", 2), (n, "n", 1), (depth, "depth", 1),
                             (restarts, "restarts", 1), (seed, "seed", 0)):
        require(is_integer(value) and value >= low,
                f"{name} must be an integer >= {low}, got {value!r}")
    require(is_finite_number(Lam) and Lam > 0,
            f"Lam must be a finite number > 0, got {Lam!r} (with a zero decay there is no "
            "minimiser to compare)")
    M = depth + 1
    lam = Lam * n ** (1.0 / M)
    rng = np.random.default_rng(seed)
    best_per_rank: list[float] = []
    described: list[tuple[float, float, float]] = []
    for r in range(1, K - 1):
        size = r * K * 2 + r * r * (M - 2)
        best, best_theta = np.inf, None
        for k in range(restarts):
            scale = 0.5 + 1.5 * k / max(restarts - 1, 1)
            x0 = rng.normal(0.0, scale, size)
            res = minimize(_objective, x0, args=(K, r, M, lam), jac=True, method="L-BFGS-B",
                           options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
            if float(res.fun) < best:
                best, best_theta = float(res.fun), res.x
        if best_theta is not None and math.isfinite(best):
            best_theta = _polish(best_theta, K, r, M, lam)
            best = float(_objective(best_theta, K, r, M, lam)[0])
        # a rank-r factorisation holds every lower-rank state: a search that ends in a local
        # minimum above the best of a lower rank still has that one at rank <= r
        if best_per_rank and best_per_rank[-1] <= best:
            best_per_rank.append(best_per_rank[-1])
            described.append(described[-1])
        else:
            best_per_rank.append(best)
            described.append(_describe(best_theta, K, r, M) if best_theta is not None
                             else (math.nan, math.nan, math.nan))
    if best_per_rank and not math.isfinite(best_per_rank[-1]):
        raise ArithmeticError(f"the lower-rank search found no finite objective at Lam = "
                              f"{Lam:.3g} (its objective overflows there)")
    rank, best_value = _best(tuple(best_per_rank))
    norms, last_sq, losses = (tuple(v) for v in zip(*described)) if described else ((), (), ())
    return LowRankResult(tuple(best_per_rank), rank, best_value, norms, last_sq, losses, lam)
