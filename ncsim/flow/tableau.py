"""Butcher tableaux with error weights and dense-output polynomials.

A tableau gives the stage nodes ``c`` (S,), the stage matrix ``a`` (S, S), the solution weights
``b`` (S,), the error weights ``e`` (S,) (adaptive methods: local error = h sum_i e_i k_i) and
the dense output matrix ``p`` (S, D): the solution inside a step is

    y(t + theta h) = y + h sum_i k_i sum_j p[i, j] theta^(j+1),   0 <= theta <= 1.

Coefficients: Dormand & Prince (1980) with Shampine's 4th-order dense output (Hairer, Norsett &
Wanner, Solving ODEs I, section II.6); Tsitouras (2011) with his 4th-order interpolant; the
classic RK4 with its 3rd-order continuous extension; explicit Euler with linear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method (see the module docstring for the fields)."""

    name: str
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    p: np.ndarray
    e: np.ndarray | None = None
    order: int = 1
    fsal: bool = False

    @property
    def stages(self) -> int:
        return len(self.c)

    def dense_weights(self, theta: np.ndarray) -> np.ndarray:
        """Stage weights sum_j p[i, j] theta^(j+1) for each theta: shape (len(theta), S)."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
        powers = theta ** np.arange(1, self.p.shape[1] + 1)
        return powers @ self.p.T

    def stability_polynomial(self) -> np.ndarray:
        """Coefficients (S + 1,) of the stability function R(z) = sum_j r_j z^j, lowest first:
        a step of size h multiplies a mode dy/dt = mu y by R(h mu). For an explicit method
        r_0 = 1 and r_j = b^T A^(j-1) 1."""
        coeffs, power = [1.0], np.ones(self.stages)
        for _ in range(self.stages):
            coeffs.append(float(self.b @ power))
            power = self.a @ power
        return np.array(coeffs)

    def real_stability_boundary(self) -> float:
        """Largest x with |R(-s)| <= 1 for every 0 <= s <= x: the longest stable step
        h = x / |mu| on a decaying mode mu < 0 (Euler 2, RK4 2.785, Dormand-Prince 3.307).
        Found on a grid of step 1e-3 up to 100, then by bisection to 1e-12; |R| may exceed 1
        by 1e-12 (rounding slack), so the value can lie up to ~1e-12 above the exact boundary
        (Euler: 2 + 9.3e-13)."""
        poly = np.polynomial.Polynomial(self.stability_polynomial())
        grid = np.arange(0.0, 100.0, 1e-3)
        unstable = np.abs(poly(-grid)) > 1 + 1e-12
        if not unstable.any():
            return float("inf")
        first = int(np.argmax(unstable))
        lo, hi = float(grid[first - 1]), float(grid[first])
        while hi - lo > 1e-12:
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if abs(poly(-mid)) > 1 + 1e-12 else (mid, hi)
        return lo


def _euler() -> Tableau:
    return Tableau("gd", np.zeros(1), np.zeros((1, 1)), np.ones(1), np.ones((1, 1)), order=1)


def _rk4() -> Tableau:
    a = np.zeros((4, 4))
    a[1, 0], a[2, 1], a[3, 2] = 0.5, 0.5, 1.0
    # continuous extension: b1 = th - 3th^2/2 + 2th^3/3, b2 = b3 = th^2 - 2th^3/3,
    # b4 = -th^2/2 + 2th^3/3
    p = np.array([[1.0, -1.5, 2 / 3], [0.0, 1.0, -2 / 3], [0.0, 1.0, -2 / 3], [0.0, -0.5, 2 / 3]])
    return Tableau("rk4", np.array([0, 0.5, 0.5, 1.0]), a, np.array([1, 2, 2, 1]) / 6, p, order=4)


def _dopri5() -> Tableau:
    c = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1])
    a = np.zeros((7, 7))
    a[1, :1] = [1 / 5]
    a[2, :2] = [3 / 40, 9 / 40]
    a[3, :3] = [44 / 45, -56 / 15, 32 / 9]
    a[4, :4] = [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729]
    a[5, :5] = [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]
    b = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
    a[6, :6] = b[:6]
    e = np.array([71 / 57600, 0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])
    p = np.array([
        [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0, 0, 0, 0],
        [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
        [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [0, 127303824393 / 49829197408, -318862633887 / 49829197408,
         701980252875 / 199316789632],
        [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ])
    return Tableau("dopri5", c, a, b, p, e=e, order=5, fsal=True)


def _tsit5_dense() -> np.ndarray:
    """Tsitouras' interpolant (7 basis polynomials) expanded into powers of theta."""
    t = sp.Symbol("t")
    basis = [
        -1.0530884977290216 * t * (t - 1.3299890189751412)
        * (t**2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t**2 * (t**2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t**2 * (t**2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t**2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t**2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t**2,
        2.5 * (t - 1) * (t - 0.6) * t**2,
    ]
    return np.array([[float(sp.Poly(q, t).coeff_monomial(t**j)) for j in range(1, 5)]
                     for q in basis])


def _tsit5() -> Tableau:
    c = np.array([0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1])
    a = np.zeros((7, 7))
    a[1, :1] = [0.161]
    a[2, :2] = [-0.008480655492356989, 0.335480655492357]
    a[3, :3] = [2.8971530571054935, -6.359448489975075, 4.3622954328695815]
    a[4, :4] = [5.325864828439257, -11.748883564062828, 7.4955393428898365,
                -0.09249506636175525]
    a[5, :5] = [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
                -0.02826905039406838]
    b = np.array([0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
                  -3.290069515436081, 2.324710524099774, 0.0])
    a[6, :6] = b[:6]
    e = np.array([0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
                  0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66])
    return Tableau("tsit5", c, a, b, _tsit5_dense(), e=e, order=5, fsal=True)


@cache
def tableau(method: str) -> Tableau:
    """The tableau of ``method`` in ("gd", "rk4", "dopri5", "tsit5")."""
    makers = {"gd": _euler, "rk4": _rk4, "dopri5": _dopri5, "tsit5": _tsit5}
    if method not in makers:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(makers)}")
    return makers[method]()
