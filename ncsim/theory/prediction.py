"""Predicted NC1 onset time and lead time of the one-layer UFM from a small Gaussian init.

Model (balanced classes, i.i.d. N(0, a^2) entries in W and H, small a, lambda_H > 0):

- Between-class energy |H P_c|^2 = N tr(Sigma_B). Each of the K - 1 centred label modes is a
  pair of d-vectors (x, y) = (u_j^T W, H v_j) with the linear dynamics of the mode Jacobian
  [[-lambda_W, g], [g, -lambda_H]], g = 1/(K sqrt n). Its symmetric eigenvectors e_+ (growing,
  rate mu) and e_- split the initial (x0, y0): E|p_+|^2 = E|p_-|^2 = d a^2. The growing part
  follows the non-linear mode ODE (:mod:`ncsim.theory.dynamics`) from (w0, h0) = sqrt(d) a e_+;
  the other decays linearly. So B(t) = (K-1) [h(t)^2 + d a^2 e_-,h^2 e^(2 mu_- t)].
- Within-class energy |H P_perp|^2 = N tr(Sigma_W) obeys d/dt(H P_perp) = -(W^T J W / N +
  lambda_H) H P_perp (J = I for MSE, the softmax Hessian for CE, replaced by its mean eigenvalue
  on the centred space). Of its initial value a^2 d (N - K) a fraction r_W/d lies in range(W)
  (r_W = K for MSE without bias, K - 1 otherwise) and also decays with int kappa w^2 / N.
- nc1_trace(t) = tr(Sigma_W)/tr(Sigma_B) = E(t)/B(t); the onset is its first crossing of the
  threshold (bracketed on a log-time grid, refined by brentq on a dense solution of the
  bracketing grid interval).
- fn(t) is approximated by the root mean square feature norm sqrt((B + E + mean part)/N).
  The mean part |H v0|^2 (v0 = 1/sqrt(N)): MSE without bias, the K-th label mode (same ODE);
  free bias and CE, undriven (decays at lambda_H); regularised bias, its own mode ODE together
  with the bias (settled data weight lambda_b / (1 + lambda_b)), split into e_+ and e_- as a
  centred mode.

Holds: balanced classes, d well above K (isotropic split of the within-class noise), one
layer, lambda_W, lambda_H > 0; init from 1e-4 to 1 (entry std) was checked (see
:func:`predicted_onset`). Fails for d close to K and for deep models, where
:func:`predicted_onset` flags the regime ("approximate: d < 5K", "escape_time_only",
"basin_edge"). Measured limits (K = 2, lead times): ncsim/theory/README.md.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import ODEintWarning, odeint, solve_ivp
from scipy.optimize import brentq

from ncsim.errors import is_finite_number, is_integer, require
from ncsim.theory import dynamics
from ncsim.theory.equilibrium import equilibrium

_RTOL, _ATOL = 1e-10, 1e-14  # of the mode ODE (_ATOL: for states of size 1, see _mode_atol)


@dataclass(frozen=True)
class OnsetPrediction:
    """Predicted onset for one parameter point (times in gradient-flow units).

    onset_time : first time nc1_trace < threshold (inf if never, NaN if not predicted).
    lead_time : onset_time minus the first time fn crosses (1 + delta) fn*; NaN when either
        never happens (as the simulator's lead time).
    fn_cross_time : that crossing time (inf if never). delta : the delta used.
    regime : "ok", "approximate: d < 5K", "no_minimiser", "escape_time_only",
        "escape_time_only: metastable", "trapped", "vanishing" or "no_onset" (see
        :func:`predicted_onset`).
    """

    onset_time: float
    lead_time: float
    fn_cross_time: float
    delta: float
    regime: str


def _mode_rhs(loss: str, K: int, n: int, lw: float, lh: float, lb: float | None = None):
    """Right-hand side of the mode ODE: state (w, h, int kappa w^2 / N) of a centred label
    mode; with ``lb`` (MSE, regularised bias) also (w0, h0, int w0^2 / N, beta) of the mean
    mode and the bias beta = u0^T b along it (u0 = 1/sqrt(K), v0 = 1/sqrt(N): target sqrt(n),
    bias logits sqrt(N) beta)."""
    s, N = math.sqrt(n), K * n
    sqrt_N = math.sqrt(N)

    def rhs(t: float, y: np.ndarray) -> list[float]:
        w, h = y[0], y[1]
        if loss == "mse":
            drive = (s - w * h) / N
            kappa = 1.0
        else:
            m = w * h / s
            em = math.exp(-m) if m > -700 else math.inf
            drive = em / (s * (1 + (K - 1) * em))
            p = 1.0 / (1.0 + (K - 1) * em)
            q = (1.0 - p) / (K - 1)
            kappa = (1.0 - p * p - (K - 1) * q * q) / (K - 1)
        out = [drive * h - lw * w, drive * w - lh * h, kappa * w * w / N]
        if lb is not None:
            w0, h0, beta = y[3], y[4], y[6]
            r = s - w0 * h0 - sqrt_N * beta
            out += [r * h0 / N - lw * w0, r * w0 / N - lh * h0, w0 * w0 / N, r / sqrt_N - lb * beta]
        return out

    return rhs


def _split(lw: float, lh: float, g: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Eigenvectors (growing e_+ with e_+[0] >= 0, decaying e_-) of the mode Jacobian
    [[-lw, g], [g, -lh]] and the eigenvalue mu_- of e_-."""
    vals, vecs = np.linalg.eigh(np.array([[-lw, g], [g, -lh]]))
    e_plus = vecs[:, 1] if vecs[0, 1] >= 0 else -vecs[:, 1]
    return e_plus, vecs[:, 0], float(vals[0])


Energies = Callable[[np.ndarray, np.ndarray],
                    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _ModeCurves:
    """The mode ODE of one parameter point solved on a time grid, and nc1(t), fn(t) from it.

    ``rhs`` is the mode ODE (w, h, int kappa w^2 / N); ``grid`` (G,) the times and ``states``
    (G, 3) its solution there; ``energies(t, states)`` gives the (between, within, mean)
    energies at times ``t`` (M,) of mode states (M, 3) (module docstring) in units of
    ``unit**2``, and ``unit`` (M,), a per-time scale of the features (the largest of the init
    scale and the modes' amplitudes) that keeps the energies finite at init scales near the
    float limits (1e300 squared overflows, 1e-200 squared underflows); ``samples`` is N;
    ``atol`` the solve's absolute tolerances, which the refinement of a crossing keeps.
    """

    rhs: Callable[[float, np.ndarray], list[float]]
    grid: np.ndarray
    states: np.ndarray
    energies: Energies
    samples: int
    atol: np.ndarray | float = _ATOL  # absolute tolerances of the state (_mode_atol)

    def nc1(self, t: np.ndarray, states: np.ndarray) -> np.ndarray:
        between, within, _, _ = self.energies(t, states)
        return within / between

    def fn(self, t: np.ndarray, states: np.ndarray) -> np.ndarray:
        between, within, mean, unit = self.energies(t, states)
        return unit * np.sqrt((between + within + mean) / self.samples)

    def first_crossing(self, curve: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       level: float, direction: str) -> float:
        """First time ``curve`` (:meth:`nc1` or :meth:`fn`) crosses ``level`` in ``direction``:
        "up" (from below the level to at or above it) or "down" (from above to at or below).

        The first such sign change on the grid, refined by brentq on a dense (Radau)
        solution of that one grid interval. A curve that starts at the level crosses at
        t = 0 (the grid's first time); one that starts on the far side crosses only after it has
        come back to the near side (e.g. fn starting just above 0.95 fn*, dipping and rising
        to fn*: the rise), so inf if it never comes back, as when a curve never reaches the
        level. Where the curve only grazes the level (fn tending to fn* with delta = 0), the
        dense solution may put the interval's ends on one side, within the solvers'
        tolerances of the level: then the crossing is the end where the dense solution is on
        the level's far side or at it (t0), else the grid's own crossing time (t1).
        """
        side = _side(curve(self.grid, self.states) - level, direction)
        if side[0] == 0:
            return float(self.grid[0])
        i = _first_crossing_interval(side)
        if i is None:
            return math.inf
        t0, t1 = float(self.grid[i]), float(self.grid[i + 1])
        # Radau: restarted late in flow time the mode ODE is stiff (lambda_H = 0: the residual
        # relaxes at ~h^2 / N while h grows), and LSODA's first steps from there can stall
        cell = solve_ivp(self.rhs, (t0, t1), self.states[i], method="Radau", rtol=_RTOL,
                         atol=self.atol, dense_output=True).sol

        def near_side(t: float) -> float:  # < 0 before the crossing, >= 0 at or past it
            value = float(curve(np.array([t]), cell(t)[None, :])[0]) - level
            return value if direction == "up" else -value

        if near_side(t0) >= 0:
            return t0
        if near_side(t1) < 0:
            return t1
        return float(brentq(near_side, t0, t1, xtol=1e-12, rtol=1e-12))


def _side(v: np.ndarray, direction: str) -> np.ndarray:
    """``v`` = curve - level (G,) signed so that the near side (before a crossing in
    ``direction``) is negative: v for "up", -v for "down"."""
    if direction not in ("up", "down"):
        raise ValueError(f"crossing direction must be 'up' or 'down', got {direction!r}")
    return v if direction == "up" else -v


def _first_crossing_interval(side: np.ndarray) -> int | None:
    """Index i of the first grid interval with side[i] < 0 <= side[i + 1] (a crossing from the
    near side to the level or beyond), None when there is none."""
    idx = np.nonzero((side[:-1] < 0) & (side[1:] >= 0))[0]
    return int(idx[0]) if idx.size else None


_LSODA_BUDGET = 200_000  # right-hand sides; past it the grid solve goes to BDF


class _OverBudget(Exception):
    """LSODA spent :data:`_LSODA_BUDGET` right-hand sides on one grid solve."""


def _mode_atol(y0: list[float], amplitudes: list[int]) -> np.ndarray:
    """Absolute tolerances of the mode ODE's state: :data:`_ATOL` times the largest initial
    amplitude (at most 1) for the amplitude components, so that a 1e-12 init is solved to
    the same relative accuracy as a 0.1 init; :data:`_ATOL` for the others."""
    scale = min(1.0, max(abs(y0[i]) for i in amplitudes))
    atol = np.full(len(y0), _ATOL)
    if scale > 0:
        atol[amplitudes] = _ATOL * scale
    return atol


def _solve_on_grid(rhs: Callable[[float, np.ndarray], list[float]], y0: list[float],
                   grid: np.ndarray, atol: np.ndarray) -> np.ndarray:
    """States (G, len(y0)) of the mode ODE on ``grid``: LSODA (odeint) in one call; where it
    fails at run time or spends more than :data:`_LSODA_BUDGET` right-hand sides (a
    regularised bias with lambda_W << lambda_H: 3e6 for lambda_W = 1e-7, lambda_H = 1e-3),
    BDF on the same grid (8e3 there). Raises ArithmeticError when both fail, or when LSODA
    refuses its input."""
    calls = 0

    def budgeted(t: float, y: np.ndarray) -> list[float]:
        nonlocal calls
        calls += 1
        if calls > _LSODA_BUDGET:
            raise _OverBudget
        return rhs(t, y)

    try:  # a failure is raised below, not printed; an overflowing state fails that way too
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", ODEintWarning)
            states, info = odeint(budgeted, y0, grid, rtol=_RTOL, atol=atol, tfirst=True,
                                  mxstep=100_000, full_output=True)
        if info["message"] == "Integration successful.":
            return states
        reason = info["message"].split(" (")[0].rstrip(".")  # without scipy's Dfun hint
        if reason.startswith("Illegal input"):
            raise ArithmeticError(f"the mode ODE failed: LSODA: {reason}")
    except _OverBudget:
        reason = f"more than {_LSODA_BUDGET} right-hand sides"
    with np.errstate(over="ignore", invalid="ignore"):  # BDF's difference Jacobian probes
        sol = solve_ivp(rhs, (float(grid[0]), float(grid[-1])), y0, method="BDF", t_eval=grid,
                        rtol=_RTOL, atol=atol)
    if sol.status != 0 or sol.y.shape[1] != grid.size:
        raise ArithmeticError(f"the mode ODE failed: LSODA: {reason}; BDF: {sol.message}")
    return sol.y.T
_SLOW_HORIZON = 1e10  # longest default search with lambda_H = 0 (flow time)


def _curves(loss: str, bias: str, K: int, n: int, d: int, lw: float, lh: float, a: float,
            grid: np.ndarray, lb: float = 0.0) -> _ModeCurves:
    """The mode ODE from the growing eigen-direction of the init, solved on ``grid`` (G,)
    (starting at t = 0) by LSODA in one call (the solver interpolates at the grid times), or
    by BDF where LSODA fails or is too costly (:func:`_solve_on_grid`).

    The mean label mode: for MSE without bias an ordinary mode (the centred solution); with a
    free bias, and for CE, undriven (it decays at lambda_H); with a regularised bias its own
    mode ODE with the bias (data weight lambda_b / (1 + lambda_b) once the bias has settled),
    split like a centred mode, the bias starting at 0."""
    g = 1.0 / (K * math.sqrt(n))
    e_plus, e_minus, mu_minus = _split(lw, lh, g)
    y0 = [*(math.sqrt(d) * a * e_plus), 0.0]
    reg = loss == "mse" and bias == "reg"
    if reg:
        m_plus, m_minus, mu0_minus = _split(lw, lh, g * lb / (1 + lb))
        y0 += [*(math.sqrt(d) * a * m_plus), 0.0, 0.0]
    rhs = _mode_rhs(loss, K, n, lw, lh, lb if reg else None)
    atol = _mode_atol(y0, [0, 1, 3, 4] if reg else [0, 1])
    states = _solve_on_grid(rhs, y0, grid, atol)
    N = K * n
    # directions of range(W) on which the within-class energy also decays: the K - 1 centred
    # modes (int kappa w^2 / N), the mean mode for MSE without bias (the same integral) or with
    # a regularised bias (its own integral int w0^2 / N)
    r_w = min(K if (loss == "mse" and bias == "none") else K - 1, d)
    r_0 = 1 if (reg and d > r_w) else 0
    decay_h = e_minus[1] ** 2

    def energies(t: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        h, integ = y[:, 1], y[:, 2]
        unit = np.maximum(a, np.abs(h))
        if reg:
            unit = np.maximum(unit, np.abs(y[:, 4]))
        h_u, a2_u = h / unit, (a / unit) ** 2  # h and a^2 in units of unit, unit^2
        mode = h_u * h_u + d * a2_u * decay_h * np.exp(2 * mu_minus * t)  # growing + decaying
        between = (K - 1) * mode
        kept = (d - r_w - r_0) / d + r_w / d * np.exp(-2 * integ)
        if reg:
            kept = kept + r_0 / d * np.exp(-2 * y[:, 5])
            mean = (y[:, 4] / unit) ** 2 + d * a2_u * m_minus[1] ** 2 * np.exp(2 * mu0_minus * t)
        elif loss == "mse" and bias == "none":
            mean = mode
        else:
            mean = d * a2_u * np.exp(-2 * lh * t)
        within = a2_u * d * (N - K) * np.exp(-2 * lh * t) * kept
        return between, within, mean, unit

    return _ModeCurves(rhs, grid, states, energies, N, atol)


def _horizon(loss: str, bias: str, K: int, n: int, d: int, lw: float, lh: float, a: float,
             threshold: float) -> float:
    """Default search horizon: 40 / (slowest rate of lambda_W, lambda_H and mu, the positive
    ones), capped to [1e3, 1e8].

    lambda_W belongs there: the mode (w, h) settles on fn* only once lambda_W w^2 and
    lambda_H h^2 balance, which takes ~1 / min(lambda_W, lambda_H) (CE, regularised bias,
    K=2, n=28, d=11, lambda_W = 1.43e-5, lambda_H = 1.96e-3, init 3: fn crosses 1.05 fn* at
    t = 32268, after 40 / min(lambda_H, mu) = 20371).

    With lambda_H = 0 < lambda_W no rate sets it: the within-class energy in null(W) never
    decays, and NC1 falls only as the class means grow without bound, polynomially (MSE:
    h^4 ~ 4 lambda_W n t on a mode once w h ~ sqrt(n); CE faster). The horizon then also covers
    100 x the time at which that growth brings nc1_trace below the threshold, capped at 1e10
    (flow times no simulation reaches; the mode ODE's solve beyond it took minutes).
    """
    mu = float(dynamics.growth_rate(K, n, lw, lh))
    rates = [x for x in (lw, lh, mu) if x > 0]
    slow = min(rates) if rates else 1e-6
    t_max = float(np.clip(40.0 / slow, 1e3, 1e8))
    if lh == 0 and lw > 0:
        r_w = min(K if (loss == "mse" and bias == "none") else K - 1, d)
        kept = a * a * (K * n - K) * max(d - r_w, 0)  # within-class energy that never decays
        h2 = kept / ((K - 1) * threshold)  # mode energy h^2 that brings nc1_trace to threshold
        t_max = float(np.clip(100.0 * h2 * h2 / (4.0 * lw * n), t_max, _SLOW_HORIZON))
    return t_max


def predicted_onset(loss: str, bias: str, K: int, n: int, d: int, lambda_w: float,
                    lambda_h: float, init_scale: float, threshold: float = 0.01,
                    lambda_b: float = 0.0, depth: int = 1, delta: float | None = None,
                    t_max: float | None = None) -> OnsetPrediction:
    """Predicted onset time (nc1_trace < threshold) and lead time from a Gaussian init.

    Parameters
    ----------
    loss, bias, K, n, d, depth : model. lambda_w, lambda_h, lambda_b : decays (numbers: one
        parameter point per call; :func:`equilibrium` takes arrays).
    init_scale : std a of the i.i.d. Gaussian init entries (> 0).
    threshold : NC1 (trace form) onset threshold (> 0). Where the model's nc1_trace starts
        below it ((N - K)/(K - 1) at t = 0; 0 for n = 1), the onset is t = 0.
    delta : fn crossing level (1 + delta) fn*, a finite number > -1. delta < 0: the time fn
        rises to the level (the first crossing from below); delta > 0: the time it falls to it
        (from above); delta = 0: from the side fn starts on (fn tends to fn*, so the time is
        where it meets fn* to the mode ODE's accuracy, 1e-10 relative: ill-conditioned, e.g.
        1863 for CE K = 4, n = 5, d = 20, lambda 0.01, init 1, against 1124 at delta = 1e-9).
        See :meth:`_ModeCurves.first_crossing` for a start on the far side of the level.
        Default -0.05 when the model's fn starts at or below fn*, +0.05 when above.
    t_max : search horizon (default: 40 / min(lambda_W, lambda_H, mu) capped to [1e3, 1e8];
        with lambda_H = 0 < lambda_W at least 100 x the estimated time of the slow polynomial
        decay of NC1, capped at 1e10, see :func:`_horizon`).

    Returns
    -------
    OnsetPrediction. ``regime`` is "ok" only where the model below was checked against the
    simulator; otherwise it names the failure: "approximate: d < 5K", "no_minimiser"
    (lambda_W or lambda_H = 0: the onset is kept, fn* and the lead time are NaN),
    "escape_time_only" (deep: the time is the mode escape time, not the nc1_trace onset),
    "escape_time_only: metastable" (deep, Lambda_glob < Lambda < Lambda_stat with the init
    above the basin band: the flow goes to a collapsed local minimum while the origin is the
    global minimiser; the time is the escape time towards that local minimum), "trapped"
    (deep, init amplitude below the basin band: onset inf), :data:`NEAR_BASIN` (deep, init
    amplitude within the band around the basin root where Gaussian runs go either way: onset
    NaN), "vanishing" (no non-zero stable state) or "no_onset". The regime does not flag an
    ill-conditioned lead time (fn crossing the level near-tangentially): see
    ncsim/theory/README.md for the measured limits.

    Raises
    ------
    InputError : a bad model or decay (see :func:`equilibrium`), a parameter that is not a
        number (e.g. a list or an array of decays), d not an integer >= 1, a threshold or
        init_scale that is not a finite number > 0, delta not a finite number > -1, or t_max
        not a finite number > 0.

    Notes
    -----
    Regime of the onset and lead-time prediction (measured against ``ncsim.flow.simulate`` and
    :func:`ncsim.onset.lead_time` on the simulated fn trajectory, K = 4, n = 5, d = 20,
    lambda_W = lambda_H in {0.01, 0.03}, init std 1e-3 .. 1, MSE (no / free bias) and CE):

    - one layer, balanced, d >= 5K, lambda_W, lambda_H > 0: onset within 2.1% for init std
      1e-4 .. 1 (seed 1), worst 4.9% over seeds 1-2 at d = 5K, 1.3% at d = 10K; the lead time
      is within 5% of max(onset, fn crossing time) (largest measured 3.0%, seed 1); over
      random parameter points see ncsim/theory/README.md (K = 2: single seeds up to 29% off);
    - small init (a sqrt(d) well below fn*): NC1 reaches the threshold in the linear phase,
      where nc1_trace decays at the lambda-independent rate 2 / (K sqrt(n)) (lambda_W =
      lambda_H), before fn reaches fn*: the lead time is negative (onset precedes the fn
      crossing);
    - init comparable to fn* (a sqrt(d) ~ fn*): fn crosses (1 - 0.05) fn* first and the onset
      follows (positive lead, the order reported for trained networks); a large init
      (fn starting above fn*) uses delta = +0.05;
    - fails for d close to K (d = K + 1: 15% off; single seeds scatter by up to 11% for
      d < 4K, 7.5% at d = 4K; d = K can be off by 10x), for deep heads (not modelled: NaN in
      the theory columns) and for a zero decay (no fn*).
    """
    _check_scalars(loss=loss, bias=bias, K=K, n=n, d=d, lambda_w=lambda_w, lambda_h=lambda_h,
                   init_scale=init_scale, threshold=threshold, lambda_b=lambda_b, depth=depth,
                   delta=delta, t_max=t_max)
    _check_onset_inputs(d, threshold, init_scale, delta, t_max)
    return _predicted_onset(loss, bias, K, n, d, lambda_w, lambda_h, init_scale, threshold,
                            lambda_b, depth, delta, t_max)


def _check_scalars(**params: object) -> None:
    """:class:`InputError` for a parameter of :func:`predicted_onset` that is not a single
    value (text for loss and bias, a number or None otherwise): a list or an array of decays
    would otherwise fail as an unhashable cache key."""
    for name, value in params.items():
        if name in ("loss", "bias"):
            require(isinstance(value, str), f"{name} must be text, got {value!r}")
        else:
            require(value is None or (isinstance(value, numbers.Real)
                                      and not isinstance(value, bool)),
                    f"{name} must be a number (predicted_onset takes one parameter point; "
                    f"call it once per point), got {value!r}")


@functools.lru_cache(maxsize=4096)  # a pure function of its arguments: seeds share one call
def _predicted_onset(loss: str, bias: str, K: int, n: int, d: int, lambda_w: float,
                     lambda_h: float, init_scale: float, threshold: float, lambda_b: float,
                     depth: int, delta: float | None, t_max: float | None) -> OnsetPrediction:
    """:func:`predicted_onset` after its input checks (cached per parameter point)."""
    eq = equilibrium(loss, bias, K, n, lambda_w, lambda_h, lambda_b, depth)
    fn_star = float(eq.fn_star)
    nan = math.nan
    if depth > 1:  # before the collapse test: a metastable collapsed state can be reached
        return _deep_onset(loss, K, n, d, lambda_w, lambda_h, init_scale, depth, eq)
    if not bool(eq.collapsed):
        return OnsetPrediction(math.inf, nan, nan, nan, "vanishing")
    if not (lambda_w > 0 and lambda_h > 0):
        # no minimiser (norms grow without bound): fn* and the lead time are undefined; the
        # early NC1 phase is still linear, so the onset itself is kept but flagged
        fn_star = math.nan
    if t_max is None:
        t_max = _horizon(loss, bias, K, n, d, lambda_w, lambda_h, init_scale, threshold)
    grid = np.concatenate([[0.0], np.geomspace(1e-3, t_max, 4000)])
    curves = _curves(loss, bias, K, n, d, lambda_w, lambda_h, init_scale, grid, lambda_b)
    if float(curves.nc1(grid[:1], curves.states[:1])[0]) < threshold:
        onset = 0.0  # below from the start: the first time nc1_trace < threshold is t = 0
    else:
        onset = curves.first_crossing(curves.nc1, threshold, "down")
    fn0 = float(curves.fn(grid[:1], curves.states[:1])[0])
    if delta is None:
        delta = -0.05 if not fn0 > fn_star else 0.05
    if not math.isfinite(fn_star):
        return OnsetPrediction(onset, nan, nan, nan, "no_minimiser")
    level = (1 + delta) * fn_star
    direction = "up" if delta < 0 or (delta == 0 and not fn0 > fn_star) else "down"
    t_cross = curves.first_crossing(curves.fn, level, direction)
    if not math.isfinite(onset):
        regime = "no_onset"
    elif d < 5 * K:
        regime = "approximate: d < 5K"
    else:
        regime = "ok"
    lead = onset - t_cross if math.isfinite(onset) and math.isfinite(t_cross) else nan
    return OnsetPrediction(onset, lead, t_cross, delta, regime)


# the cache's controls, as on an lru_cache-wrapped function (benchmarks clear it)
predicted_onset.cache_clear = _predicted_onset.cache_clear  # type: ignore[attr-defined]
predicted_onset.cache_info = _predicted_onset.cache_info  # type: ignore[attr-defined]


def _check_onset_inputs(d: int, threshold: float, init_scale: float, delta: float | None,
                        t_max: float | None) -> None:
    """:class:`InputError` for a bad dimension, threshold, init scale, delta or horizon (the
    model itself is checked by :func:`equilibrium`)."""
    require(is_integer(d) and d >= 1, f"dimension d must be an integer >= 1, got {d!r}")
    for name, value in (("threshold", threshold), ("init_scale", init_scale)):
        require(is_finite_number(value) and value > 0,
                f"{name} must be a finite number > 0, got {value!r}")
    require(delta is None or (is_finite_number(delta) and delta > -1),
            f"delta must be a finite number > -1 (the fn level (1 + delta) fn* must be > 0), "
            f"got {delta!r}")
    require(t_max is None or (is_finite_number(t_max) and t_max > 0),
            f"t_max must be a finite number > 0 (or None for the default), got {t_max!r}")


METASTABLE = "escape_time_only: metastable"
NEAR_BASIN = "basin_edge"
BASIN_BAND_LOW = 0.4  # below this many a_u every Gaussian run measured was trapped


def basin_band(d: int) -> tuple[float, float]:
    """(low, high) edges, as multiples of the basin root a_u, of the band of init amplitudes
    a0 = a sqrt(d/2) where deep Gaussian runs go either way: (0.4, 1 + 0.6 / sqrt(d)).

    The per-mode amplitudes of a Gaussian init are random (chi-distributed, more so for small
    d), so a0 = a_u does not separate the outcomes. Measured (ncsim.flow.simulate, 6-8 seeds
    per point, a0 / a_u from 0.2 to 2; K = 2..16, d = K..20K, L = 2..4, MSE and CE, equal and
    unequal decays: 22 configurations, 1760 runs): every run with a0 < 0.4 a_u vanished and
    every run with a0 > (1 + 0.6 / sqrt(d)) a_u collapsed; mixed outcomes were seen from
    0.45 a_u (CE, K = d = 6) up to 1.2 a_u (MSE, K = d = 2); for K=4, n=5, d=20, L=2,
    lambda=0.01: none of 6 seeds collapsed at 0.6 a_u, 3 at 0.7, 5 at 0.8, all at 0.9.
    """
    return BASIN_BAND_LOW, 1.0 + 0.6 / math.sqrt(d)


def basin_position(loss: str, K: int, n: int, a0: float, decays: tuple[float, ...], d: int
                    ) -> str:
    """Where the init amplitude a0 lies against the band :func:`basin_band` around the basin
    root a_u of the aligned flow with the factor decays ``decays``: "below", "above", or
    within it, as text for the regime ("= 0.85 a_u"; unequal decays "= 0.0241").

    Equal decays: a_u in closed form (:func:`ncsim.theory.critical.basin_threshold`).
    Unequal decays: the aligned flow's fate from a0 / low and a0 / high
    (:func:`ncsim.theory.dynamics.aligned_fate`; a0 < low a_u iff a0 / low < a_u, i.e. the
    flow from a0 / low goes to the origin), two ODE solves instead of the bisection of a_u."""
    from ncsim.theory.critical import basin_threshold

    low, high = basin_band(d)
    if len(set(decays)) == 1:
        a_u = float(basin_threshold(loss, K, n, decays[0], len(decays) - 1))
        if a0 < low * a_u:
            return "below"
        return "above" if a0 > high * a_u else f"= {a0 / a_u:.3g} a_u"
    if dynamics.aligned_fate(loss, K, n, a0 / low, decays) == "origin":
        return "below"
    if dynamics.aligned_fate(loss, K, n, a0 / high, decays) == "collapse":
        return "above"
    return f"= {a0:.3g}"


def _deep_onset(loss: str, K: int, n: int, d: int, lw: float, lh: float, a: float, depth: int,
                eq) -> OnsetPrediction:
    """Deep linear: onset ~ time for the balanced mode to reach half the sigma of the collapsed
    state it flows to: the global minimiser, or, where the origin is global but a non-zero
    local minimiser exists (Lambda_glob < Lambda < Lambda_stat), that metastable state (regime
    :data:`METASTABLE`); "vanishing" where no non-zero critical point exists; "trapped" where
    the init amplitude a0 = a sqrt(d/2) is below the band around the basin root a_u
    (:func:`basin_band`; a_u of the aligned balanced flow with these decays,
    :func:`basin_position`), :data:`NEAR_BASIN` (onset NaN) within it; "no_minimiser" (onset
    NaN) where a decay is 0."""
    nan = math.nan
    if not (lw > 0 and lh > 0):  # norms without bound: no state to escape towards
        return OnsetPrediction(nan, nan, nan, nan, "no_minimiser")
    target = float(eq.sigma) if bool(eq.collapsed) else float(eq.sigma_local)
    if not math.isfinite(target) or target <= 0:
        return OnsetPrediction(math.inf, nan, nan, nan, "vanishing")
    M = depth + 1
    lam = (lh * lw ** depth) ** (1.0 / M)
    a0 = a * math.sqrt(d / 2)
    where = basin_position(loss, K, n, a0, (float(lw),) * depth + (float(lh),), d)
    if where == "below":
        return OnsetPrediction(math.inf, nan, nan, nan, "trapped")
    if where != "above":
        low, high = basin_band(d)
        return OnsetPrediction(nan, nan, nan, nan, (
            f"{NEAR_BASIN}: init amplitude a sqrt(d/2) {where}, within the band "
            f"[{low:.3g}, {high:.3g}] a_u where Gaussian runs are trapped or collapse "
            f"depending on the seed; no onset predicted"))
    a_half = (0.5 * target) ** (1.0 / M)
    t = dynamics.escape_time(K, n, a0, a_half, depth, lam, loss)
    # the within-class decay of the deep head is not modelled: this is the time the balanced
    # mode needs to reach half its equilibrium, not the nc1_trace onset (measured: 27 vs 40 at
    # init 0.1, 1.2 vs 153 at init 0.3 for K=4, n=5, d=20, L=2, lambda=0.01)
    regime = "escape_time_only" if bool(eq.collapsed) else METASTABLE
    return OnsetPrediction(t, nan, nan, nan, regime)
