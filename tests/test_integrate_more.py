"""The integrator (``ncsim.flow.integrate``) and its tableaus on ODEs with known solutions.

References, each independent of the code under test:

- closed-form solutions: linear decay y' = -lam y, the harmonic oscillator, the logistic
  y' = r y (1 - y), the blow-up y' = y^2 (y = 1 / (1/y0 - t)), and piecewise-linear flows;
- hand-written textbook loops in numpy (explicit Euler, classic RK4) that share no code with
  the integrator's stage buffer, stage sums or dense output;
- the published Butcher coefficients of Dormand & Prince and of the classic RK4, written here
  as exact rationals, and the Runge-Kutta order conditions (rooted trees, elementary weights,
  densities) built here in exact rational arithmetic.

Fixed-step records and states are compared to the bit where the hand loop performs the same
floating-point operations (Euler with steps that are powers of two, so that dt f(y) is exact
and a fused multiply-add rounds as the plain update); RK4 forms its stage sum with one
product over the stacked stages, so it is compared to rounding.
"""

from __future__ import annotations

import importlib
import math
from fractions import Fraction as Fr

import numpy as np
import pytest
import torch

from ncsim.flow import integrate, simulate
from ncsim.flow.integrate import DIVERGED, DONE, MAX_STEPS, STALLED, STEADY
from ncsim.flow.tableau import tableau
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")


# --------------------------------------------------------------------------------------------
# helpers


def _spec(**fields) -> SolverSpec:
    """A validated SolverSpec."""
    spec = SolverSpec(**fields)
    spec.validate()
    return spec


def _states(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
    """Recorder that records the state itself."""
    return states


class _Counting:
    """Recorder of the state that counts how many states it was given for each run."""

    def __init__(self, runs: int) -> None:
        self.calls = np.zeros(runs, dtype=int)

    def __call__(self, states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        np.add.at(self.calls, runs.numpy(), 1)
        return states


def _emulate_accelerator(monkeypatch) -> None:
    """Run the accelerator's loop on the CPU (steps cut at record times, records through the
    masked queue, termination tests only at chunk ends)."""
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


def _use_loop(monkeypatch, loop: str) -> None:
    if loop == "device":
        _emulate_accelerator(monkeypatch)


def _assert_recorded_exactly_up_to_t_final(result, run: int) -> None:
    """Records of ``run`` are finite at every record time <= t_final and NaN after it."""
    finite = np.isfinite(result.records[run]).all(axis=1)
    reached = result.times <= result.t_final[run]
    np.testing.assert_array_equal(finite, reached)


def _oscillator(omega: float):
    """y = (x, v), x'' = -omega^2 x, x(0) = 1, v(0) = 0: the velocity and the exact solution."""

    def velocity(y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], -omega**2 * y[:, 0]], dim=1)

    def exact(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return np.stack([np.cos(omega * t), -omega * np.sin(omega * t)], axis=-1)

    return velocity, exact


def _logistic_exact(t: np.ndarray, y0: float, rate: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + (1.0 / y0 - 1.0) * np.exp(-rate * np.asarray(t, dtype=float)))


def _observed_orders(errors: list[float]) -> np.ndarray:
    """log2 of successive error ratios (each step or tolerance halved)."""
    errors = np.asarray(errors)
    return np.log2(errors[:-1] / errors[1:])


# --------------------------------------------------------------------------------------------
# 5. tableaus, in exact rational arithmetic

# Dormand & Prince (1980), as printed in Hairer, Norsett & Wanner, Solving ODEs I, table II.5.2;
# the dense output is Shampine's (HNW II.6, the coefficients of their code DOPRI5).
_DP_C = [Fr(0), Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), Fr(1), Fr(1)]
_DP_A = [
    [],
    [Fr(1, 5)],
    [Fr(3, 40), Fr(9, 40)],
    [Fr(44, 45), Fr(-56, 15), Fr(32, 9)],
    [Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)],
    [Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)],
    [Fr(35, 384), Fr(0), Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84)],
]
_DP_B = [Fr(35, 384), Fr(0), Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84), Fr(0)]
_DP_BHAT = [Fr(5179, 57600), Fr(0), Fr(7571, 16695), Fr(393, 640), Fr(-92097, 339200),
            Fr(187, 2100), Fr(1, 40)]
_DP_P = [
    [Fr(1), Fr(-8048581381, 2820520608), Fr(8663915743, 2820520608),
     Fr(-12715105075, 11282082432)],
    [Fr(0)] * 4,
    [Fr(0), Fr(131558114200, 32700410799), Fr(-68118460800, 10900136933),
     Fr(87487479700, 32700410799)],
    [Fr(0), Fr(-1754552775, 470086768), Fr(14199869525, 1410260304),
     Fr(-10690763975, 1880347072)],
    [Fr(0), Fr(127303824393, 49829197408), Fr(-318862633887, 49829197408),
     Fr(701980252875, 199316789632)],
    [Fr(0), Fr(-282668133, 205662961), Fr(2019193451, 616988883),
     Fr(-1453857185, 822651844)],
    [Fr(0), Fr(40617522, 29380423), Fr(-110615467, 29380423), Fr(69997945, 29380423)],
]
# classic RK4 and its continuous extension (HNW II.6): b1 = th - 3th^2/2 + 2th^3/3,
# b2 = b3 = th^2 - 2th^3/3, b4 = -th^2/2 + 2th^3/3
_RK4_C = [Fr(0), Fr(1, 2), Fr(1, 2), Fr(1)]
_RK4_A = [[], [Fr(1, 2)], [Fr(0), Fr(1, 2)], [Fr(0), Fr(0), Fr(1)]]
_RK4_B = [Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)]
_RK4_P = [[Fr(1), Fr(-3, 2), Fr(2, 3)], [Fr(0), Fr(1), Fr(-2, 3)], [Fr(0), Fr(1), Fr(-2, 3)],
          [Fr(0), Fr(-1, 2), Fr(2, 3)]]
_EULER = ([Fr(0)], [[]], [Fr(1)], [[Fr(1)]])


def _square(rows: list[list[Fr]], size: int) -> list[list[Fr]]:
    return [row + [Fr(0)] * (size - len(row)) for row in rows]


# (c, a, b, dense p, embedded weights or None) per method; tsit5's coefficients exist only as
# decimals, so its exact rationals are those of the stored floats
def _published(method: str):
    if method == "dopri5":
        return _DP_C, _square(_DP_A, 7), _DP_B, _DP_P, _DP_BHAT
    if method == "rk4":
        return _RK4_C, _square(_RK4_A, 4), _RK4_B, _RK4_P, None
    if method == "gd":
        c, a, b, p = _EULER
        return c, _square(a, 1), b, p, None
    tab = tableau(method)
    exact = [[Fr(float(x)) for x in row] for row in tab.a]
    bhat = [Fr(float(b)) - Fr(float(e)) for b, e in zip(tab.b, tab.e, strict=True)]
    return ([Fr(float(x)) for x in tab.c], exact, [Fr(float(x)) for x in tab.b],
            [[Fr(float(x)) for x in row] for row in tab.p], bhat)


# method: (order, embedded order, dense-output order, first same as last), as the tableau
# module's docstring states them
CLAIMS = {"dopri5": (5, 4, 4, True), "tsit5": (5, 4, 4, True), "rk4": (4, None, 3, False),
          "gd": (1, None, 1, False)}
# residual allowed in the conditions: 0 for exact rationals; tsit5's stored decimals carry
# about 16 digits on coefficients up to ~50
TOLERANCE = {"dopri5": 0, "rk4": 0, "gd": 0, "tsit5": 1e-12}

_TREES: dict[int, list[tuple]] = {1: [()]}


def _trees(order: int) -> list[tuple]:
    """Rooted trees with ``order`` vertices, each a sorted tuple of its subtrees written as
    (order, tree)."""
    if order not in _TREES:
        found = set()

        def children(rest: int, largest, chosen: list) -> None:
            if rest == 0:
                found.add(tuple(sorted(chosen)))
                return
            for k in range(1, rest + 1):
                for sub in _trees(k):
                    if largest is None or (k, sub) <= largest:
                        children(rest - k, (k, sub), [*chosen, (k, sub)])

        children(order - 1, None, [])
        _TREES[order] = sorted(found)
    return _TREES[order]


def _density(tree: tuple) -> int:
    """gamma(t) = |t| prod gamma(children)."""
    value = 1 + sum(k for k, _ in tree)
    for _, sub in tree:
        value *= _density(sub)
    return value


def _elementary(a: list[list[Fr]], tree: tuple) -> list[Fr]:
    """Phi_i(t) = prod over children u of (A Phi(u))_i; Phi_i(leaf) = 1."""
    stages = len(a)
    phi = [Fr(1)] * stages
    for _, sub in tree:
        inner = _elementary(a, sub)
        phi = [phi[i] * sum((a[i][j] * inner[j] for j in range(stages)), Fr(0))
               for i in range(stages)]
    return phi


def _order_residual(a, b, order: int) -> float:
    """max over trees t with |t| = order of |b . Phi(t) - 1 / gamma(t)|."""
    return max(abs(float(sum((bi * pi for bi, pi in zip(b, _elementary(a, t), strict=True)),
                             Fr(0)) - Fr(1, _density(t)))) for t in _trees(order))


def _dense_residual(a, p, order: int) -> float:
    """max over trees t with |t| = order and powers j of the theta^j coefficient of
    sum_i b_i(theta) Phi_i(t) - theta^|t| / gamma(t), b_i(theta) = sum_j p[i][j] theta^(j+1)."""
    powers = max(len(p[0]), order)
    worst = 0.0
    for t in _trees(order):
        phi = _elementary(a, t)
        for j in range(powers):
            got = sum((row[j] * f for row, f in zip(p, phi, strict=True) if j < len(row)),
                      Fr(0))
            want = Fr(1, _density(t)) if j + 1 == order else Fr(0)
            worst = max(worst, abs(float(got - want)))
    return worst


def test_tree_enumeration_and_densities():
    """The rooted-tree generator used below: 1, 1, 2, 4, 9, 20 trees of orders 1..6 (OEIS
    A000081); the tall tree of order n has density n!, the bushy one n."""
    assert [len(_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    tall, bushy = (), ()
    for n in range(2, 7):
        tall = ((n - 1, tall),)
        bushy = ((1, ()),) * (n - 1)
        assert tall in _trees(n) and bushy in _trees(n)
        assert _density(tall) == math.factorial(n) and _density(bushy) == n


@pytest.mark.parametrize("method", ["dopri5", "rk4", "gd"])
def test_stored_coefficients_are_the_published_rationals(method):
    """Every stored coefficient is the double nearest to the published rational (the error
    weights are b - b_hat of the published embedded pair)."""
    c, a, b, p, bhat = _published(method)
    tab = tableau(method)
    np.testing.assert_array_equal(tab.c, [float(x) for x in c])
    np.testing.assert_array_equal(tab.a, [[float(x) for x in row] for row in a])
    np.testing.assert_array_equal(tab.b, [float(x) for x in b])
    np.testing.assert_array_equal(tab.p, [[float(x) for x in row] for row in p])
    if bhat is None:
        assert tab.e is None
    else:
        np.testing.assert_array_equal(tab.e, [float(x - y) for x, y in zip(b, bhat,
                                                                           strict=True)])


@pytest.mark.parametrize("method", list(CLAIMS))
def test_nodes_are_the_row_sums(method):
    """c_i = sum_j a_ij (exactly for the rationals), an explicit (strictly lower) stage
    matrix, and c_1 = 0."""
    c, a, _, _, _ = _published(method)
    for i, (ci, row) in enumerate(zip(c, a, strict=True)):
        assert all(x == 0 for x in row[i:])
        assert abs(float(ci - sum(row, Fr(0)))) <= TOLERANCE[method]
    assert c[0] == 0


@pytest.mark.parametrize("method", list(CLAIMS))
def test_order_conditions_hold_to_the_claimed_order_and_fail_beyond(method):
    """b . Phi(t) = 1 / gamma(t) for every tree up to the method's order (17 trees for order
    5), and some tree of the next order breaks it: the stated order is the true one."""
    order = CLAIMS[method][0]
    assert tableau(method).order == order
    _, a, b, _, _ = _published(method)
    for n in range(1, order + 1):
        assert _order_residual(a, b, n) <= TOLERANCE[method], n
    assert _order_residual(a, b, order + 1) > 1e-4


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_embedded_pair_is_one_order_lower(method):
    """The embedded weights b_hat = b - e satisfy the order conditions to order 4 and not 5
    (so h sum e_i k_i estimates the local error of the 4th-order solution), and sum e_i = 0."""
    _, a, _, _, bhat = _published(method)
    tab = tableau(method)
    embedded = [Fr(float(b)) - Fr(float(e)) for b, e in zip(tab.b, tab.e, strict=True)]
    for n in range(1, CLAIMS[method][1] + 1):
        assert _order_residual(a, bhat, n) <= TOLERANCE[method], n
        assert _order_residual(a, embedded, n) <= 1e-12, n
    assert _order_residual(a, bhat, CLAIMS[method][1] + 1) > 1e-4
    assert abs(float(sum((Fr(float(e)) for e in tab.e), Fr(0)))) <= 1e-15


@pytest.mark.parametrize("method", list(CLAIMS))
def test_dense_output_conditions_to_the_claimed_order(method):
    """The interpolant b_i(theta) = sum_j p_ij theta^(j+1) satisfies the order conditions as
    polynomials in theta, sum_i b_i(theta) Phi_i(t) = theta^|t| / gamma(t), for every tree up
    to its stated order and not beyond; it passes through the step's end (b(1) = b) and
    starts with the slope of the first stage (b'(0) = e_1)."""
    _, a, b, p, _ = _published(method)
    q = CLAIMS[method][2]
    for n in range(1, q + 1):
        assert _dense_residual(a, p, n) <= TOLERANCE[method], n
    assert _dense_residual(a, p, q + 1) > 1e-4
    for row, bi in zip(p, b, strict=True):
        assert abs(float(sum(row, Fr(0)) - bi)) <= TOLERANCE[method]
    first = [1] + [0] * (len(p) - 1)
    assert all(abs(float(row[0] - w)) <= TOLERANCE[method]
               for row, w in zip(p, first, strict=True))


@pytest.mark.parametrize("method", list(CLAIMS))
def test_first_same_as_last_where_claimed(method):
    """FSAL methods: the last stage is evaluated at y_new (c = 1, its row of a is b, its
    weight 0), so it is f(y_new), the next step's first stage; and their interpolant ends
    with that slope (b'(1) = e_last): records are continuously differentiable across steps.
    The other methods do not claim it."""
    c, a, b, p, _ = _published(method)
    fsal = CLAIMS[method][3]
    tol = TOLERANCE[method]
    assert tableau(method).fsal is fsal
    if not fsal:
        assert not (c[-1] == 1 and a[-1][:-1] == b[:-1] and b[-1] == 0)
        return
    assert c[-1] == 1 and b[-1] == 0
    assert all(abs(float(x - y)) <= tol for x, y in zip(a[-1], b, strict=True))
    slope = [sum((Fr(j + 1) * row[j] for j in range(len(row))), Fr(0)) for row in p]
    want = [0] * (len(p) - 1) + [1]
    assert all(abs(float(s - w)) <= tol for s, w in zip(slope, want, strict=True))


# --------------------------------------------------------------------------------------------
# 4. fixed-step methods against hand loops


def _duffing_np(y: np.ndarray) -> np.ndarray:
    """Damped Duffing oscillator x'' = -x - x^3 - 0.1 x' (only + - x: numpy and torch round
    it alike)."""
    x, v = y[:, 0], y[:, 1]
    return np.stack([v, -x - x * x * x - 0.1 * v], axis=1)


def _duffing(y: torch.Tensor) -> torch.Tensor:
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, -x - x * x * x - 0.1 * v], dim=1)


_DUFFING_Y0 = np.array([[1.0, 0.0], [2.0, 0.5], [-0.3, 1.2]])


@pytest.mark.parametrize("t_first", [0.25, 0.3125])
def test_gd_is_the_textbook_euler_loop_to_the_bit(t_first):
    """Explicit Euler y_{n+1} = y_n + dt f(y_n) on a damped Duffing oscillator against a
    numpy loop, dt = 1/8 (dt f is exact, so a fused or an unfused multiply-add rounds alike): the
    8 steps, the final state and the records to the bit, one record on a step's end
    (t_first = 2 dt) or halfway through a step (t_first = 2.5 dt: the linear interpolant
    y_n + (f(y_n) / 2) dt)."""
    dt = 0.125
    solver = _spec(method="gd", dt=dt, t_end=1.0, records=3, t_first=t_first, gtol=0)
    y0 = torch.tensor(_DUFFING_Y0, dtype=F64)
    counter = _Counting(3)
    result = integrate(_duffing, y0, solver, counter, 2)
    history = [_DUFFING_Y0.copy()]
    for _ in range(8):
        history.append(history[-1] + dt * _duffing_np(history[-1]))
    assert list(result.steps) == [8] * 3
    np.testing.assert_array_equal(result.t_final, [1.0] * 3)
    assert (result.code == DONE).all()
    np.testing.assert_array_equal(result.final_state.numpy(), history[-1])
    np.testing.assert_array_equal(result.records[:, 0], _DUFFING_Y0)
    np.testing.assert_array_equal(result.records[:, 2], history[-1])
    n, theta = divmod(t_first / dt, 1.0)
    by_hand = history[int(n)] + (theta * _duffing_np(history[int(n)])) * dt
    np.testing.assert_array_equal(result.records[:, 1], by_hand)
    assert list(counter.calls) == [3] * 3


def test_gd_takes_t_end_over_dt_steps_of_one_tenth():
    """dt = 0.1 to t_end = 1: ten steps (ten additions of 0.1 make 1 - 1e-16, which must not
    cost an eleventh step of 1e-16), ending at t = 1 with the hand loop's state (to rounding:
    0.1 f is not exact) and a record at t = 0.1 after the first step."""
    solver = _spec(method="gd", dt=0.1, t_end=1.0, records=3, t_first=0.1, gtol=0)
    y0 = torch.tensor(_DUFFING_Y0, dtype=F64)
    counter = _Counting(3)
    result = integrate(_duffing, y0, solver, counter, 2)
    history = [_DUFFING_Y0.copy()]
    for _ in range(10):
        history.append(history[-1] + 0.1 * _duffing_np(history[-1]))
    assert list(result.steps) == [10] * 3
    np.testing.assert_array_equal(result.t_final, [1.0] * 3)
    np.testing.assert_allclose(result.final_state.numpy(), history[-1], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(result.records[:, 1], history[1], rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(result.records[:, 2], history[-1], rtol=1e-14, atol=1e-15)
    assert list(counter.calls) == [3] * 3


def test_gd_through_simulate_counts_t_end_over_dt_steps():
    """Through the simulator: gd with dt = 0.1 to t_end = 1 takes 10 steps and ends at 1."""
    spec = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=3),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   init=InitSpec(scale=0.5, seed=0),
                   solver=SolverSpec(method="gd", dt=0.1, t_end=1.0, records=3, gtol=0))
    row = simulate(spec, theory=False).runs.iloc[0]
    assert row["steps"] == 10 and row["t_final"] == 1.0


def test_gd_last_step_is_the_remainder_to_t_end():
    """t_end not a multiple of dt: floor(t_end / dt) steps of dt and one of the remainder
    (dt = 1/4, t_end = 7/8: three steps and one of 1/8), to the bit; the run ends at t_end."""
    solver = _spec(method="gd", dt=0.25, t_end=0.875, records=3, t_first=0.25, gtol=0)
    y0 = torch.tensor(_DUFFING_Y0, dtype=F64)
    result = integrate(_duffing, y0, solver, _states, 2)
    y = _DUFFING_Y0.copy()
    for h in (0.25, 0.25, 0.25, 0.125):
        y = y + h * _duffing_np(y)
    assert list(result.steps) == [4] * 3
    np.testing.assert_array_equal(result.t_final, [0.875] * 3)
    np.testing.assert_array_equal(result.final_state.numpy(), y)
    np.testing.assert_array_equal(result.records[:, -1], y)


def _rk4_np(y: np.ndarray, h: float) -> np.ndarray:
    k1 = _duffing_np(y)
    k2 = _duffing_np(y + h / 2 * k1)
    k3 = _duffing_np(y + h / 2 * k2)
    k4 = _duffing_np(y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_rk4_is_the_textbook_loop():
    """Classic RK4 on the damped Duffing oscillator against the textbook formula in numpy,
    every step (records at each step's end: t_first = dt, and the log-spaced times
    0.25 * 2^k are step ends). The stage sum is one product over the stacked stages, so the
    match is to rounding (32 steps, 1e-14); a wrong stage or weight moves the state by
    ~dt^2."""
    dt = 0.25
    solver = _spec(method="rk4", dt=dt, t_end=8.0, records=7, t_first=0.25, gtol=0)
    np.testing.assert_allclose(solver.record_times()[1:], 0.25 * 2.0 ** np.arange(6),
                               rtol=1e-15)
    y0 = torch.tensor(_DUFFING_Y0, dtype=F64)
    counter = _Counting(3)
    result = integrate(_duffing, y0, solver, counter, 2)
    history = [_DUFFING_Y0.copy()]
    for _ in range(32):
        history.append(_rk4_np(history[-1], dt))
    assert list(result.steps) == [32] * 3
    np.testing.assert_allclose(result.final_state.numpy(), history[-1], rtol=1e-14, atol=1e-14)
    for j, t in enumerate(result.times):
        np.testing.assert_allclose(result.records[:, j], history[round(t / dt)], rtol=1e-14,
                                   atol=1e-14)
    assert list(counter.calls) == [7] * 3  # each record once


@pytest.mark.parametrize(("method", "order", "dts"), [
    ("gd", 1, [0.02, 0.01, 0.005, 0.0025]),
    ("rk4", 4, [0.1, 0.05, 0.025, 0.0125]),
])
def test_fixed_step_global_error_order(method, order, dts):
    """Global error of the oscillator x'' = -4 x at t = 4 and at records between steps
    (log-spaced times, mostly inside steps) falls by 2^order when dt is halved."""
    velocity, exact = _oscillator(2.0)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    end_errors, record_errors = [], []
    for dt in dts:
        solver = _spec(method=method, dt=dt, t_end=4.0, records=12, t_first=0.33, gtol=0)
        result = integrate(velocity, y0, solver, _states, 2)
        end_errors.append(np.abs(result.final_state.numpy()[0] - exact(4.0)).max())
        record_errors.append(np.abs(result.records[0] - exact(result.times)).max())
    assert np.abs(_observed_orders(end_errors) - order).max() < 0.15
    assert _observed_orders(record_errors).min() > order - 0.2


@pytest.mark.parametrize(("method", "local_order"), [("gd", 2), ("rk4", 4), ("dopri5", 5),
                                                     ("tsit5", 5)])
def test_interpolant_local_error_order_within_one_step(method, local_order):
    """One step of size h on the logistic y' = y (1 - y) with records at theta = 1/4 ..
    1 of the step: the records inside the step have the interpolant's local error
    O(h^(q + 1)) (q = 1 linear, 3 RK4's extension, 4 Shampine's / Tsitouras' interpolant),
    the record at the step's end the method's O(h^(order + 1)). h = 0.4 .. 0.05 (through
    ``integrate``: dt = t_end = h, tolerances loose enough that the step is accepted)."""
    y0 = torch.full((1, 1), 0.2, dtype=F64)
    inside, end = [], []
    for h in (0.4, 0.2, 0.1, 0.05):
        solver = _spec(method=method, dt=h, t_end=h, t_first=h / 4, records=5, rtol=1.0,
                       atol=1.0, gtol=0)
        result = integrate(lambda y: y * (1 - y), y0, solver, _states, 1)
        assert result.steps[0] == 1 and result.rejected[0] == 0
        np.testing.assert_allclose(result.times[1:] / h, [0.25, 0.25 ** (2 / 3), 0.25 ** (1 / 3),
                                                          1.0], rtol=1e-14)
        errors = np.abs(result.records[0, :, 0] - _logistic_exact(result.times, 0.2))
        inside.append(errors[1:-1].max())
        end.append(errors[-1])
    assert _observed_orders(inside)[-2:].min() > local_order - 0.35
    method_order = tableau(method).order
    assert _observed_orders(end)[-2:].min() > method_order + 1 - 0.35


# --------------------------------------------------------------------------------------------
# 1. dense output of the adaptive methods


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_dense_records_are_as_accurate_as_the_steps(monkeypatch, method, loop):
    """Records of the oscillator (41 log-spaced times, almost all between steps on the CPU
    loop) have errors <= 30 x tol and fall in proportion to tol (observed order 1 in tol, as
    the global error of the steps): an interpolant of too low an order would leave errors
    ~h^2 >> tol. Record times are SolverSpec.record_times()."""
    _use_loop(monkeypatch, loop)
    velocity, exact = _oscillator(2.0)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    tols = [1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    errors = []
    for tol in tols:
        solver = _spec(method=method, t_end=10.0, records=41, t_first=0.1, rtol=tol, atol=tol,
                       gtol=0)
        result = integrate(velocity, y0, solver, _states, 2)
        np.testing.assert_array_equal(result.times, solver.record_times())
        assert result.times[1] == 0.1 and result.times[-1] == 10.0
        error = np.abs(result.records[0] - exact(result.times)).max()
        assert error <= 30 * tol, (tol, error)
        errors.append(error)
    slope = np.diff(np.log(errors)) / np.diff(np.log(tols))
    assert 0.8 < slope.mean() < 1.3


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_records_at_t_first_at_t_end_and_at_a_step_end(monkeypatch, method, loop):
    """Decay y' = -y with a given first step dt = t_first = 0.01 (it lands exactly on the
    first record time; the step is accepted): the record at t_first, every later one, and the
    one at t_end equal exp(-t); the record at t_end is the final state; each record time is
    recorded once per run."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    solver = _spec(method=method, dt=0.01, t_first=0.01, t_end=5.0, records=9, rtol=1e-10,
                   atol=1e-12, gtol=0)
    counter = _Counting(2)
    result = integrate(lambda y: -y, y0, solver, counter, 2)
    expected = y0.numpy()[:, None, :] * np.exp(-result.times)[None, :, None]
    assert result.times[1] == 0.01 and result.times[-1] == 5.0
    np.testing.assert_allclose(result.records, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(result.records[:, 1], y0.numpy() * math.exp(-0.01), rtol=1e-13)
    np.testing.assert_allclose(result.records[:, -1], result.final_state.numpy(), rtol=1e-14)
    np.testing.assert_array_equal(result.t_final, [5.0, 5.0])
    assert (result.code == DONE).all()
    assert list(counter.calls) == [9, 9]


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_many_records_inside_one_step_each_once(monkeypatch, loop):
    """200 records in [1e-3, 50] of a slow logistic (rate 0.1, few and long steps, so that
    many record times fall in one step on the CPU loop): every record once, in place (each
    equals the exact solution), none skipped."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[0.2], [0.7]], dtype=F64)
    solver = _spec(t_end=50.0, records=200, t_first=1e-3, rtol=1e-9, atol=1e-12, gtol=0)
    counter = _Counting(2)
    result = integrate(lambda y: 0.1 * y * (1 - y), y0, solver, counter, 1)
    expected = np.stack([_logistic_exact(result.times, y, 0.1) for y in (0.2, 0.7)])
    np.testing.assert_allclose(result.records[:, :, 0], expected, rtol=1e-8)
    assert list(counter.calls) == [200, 200]
    if loop == "cpu":
        assert result.steps.max() < 100  # so the steps do hold several records each


# --------------------------------------------------------------------------------------------
# 3. status codes


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_steady_run_stops_where_the_gradient_is_small(monkeypatch, method, loop):
    """y' = -y from 1 with gtol = 1e-6: the run stops STEADY once |y| <= 1e-6 (not before
    t = ln 1e6 = 13.8), long before t_end = 100; its final state is exp(-t_final), its
    gradient norm <= gtol, and its records are those reached: exp(-t) up to t_final, NaN
    after."""
    _use_loop(monkeypatch, loop)
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method=method, t_end=100.0, records=25, gtol=1e-6, rtol=1e-9, atol=1e-12)
    result = integrate(lambda y: -y, y0, solver, _states, 1)
    assert result.code[0] == STEADY
    assert math.log(1e6) * (1 - 1e-6) <= result.t_final[0] < 30
    assert result.grad_norm[0] <= 1e-6
    assert float(result.final_state[0, 0]) == pytest.approx(math.exp(-result.t_final[0]),
                                                            rel=1e-7)
    _assert_recorded_exactly_up_to_t_final(result, 0)
    reached = result.times <= result.t_final[0]
    np.testing.assert_allclose(result.records[0, reached, 0], np.exp(-result.times[reached]),
                               rtol=1e-7)


@pytest.mark.parametrize("method", ["gd", "rk4"])
def test_fixed_step_steady_run_ends_by_t_end(method):
    """A fixed-step run already at rest (|grad f| <= gtol from the start) whose last step is
    shorter than dt (dt = 0.3, t_end = 1): it ends at t_end (not at steps x dt = 1.2), and as
    the adaptive methods report a run that reached t_end, with status t_end."""
    y0 = torch.full((2, 1), 1e-3, dtype=F64)
    solver = _spec(method=method, dt=0.3, t_end=1.0, records=4, gtol=1.0)
    result = integrate(lambda y: -y, y0, solver, _states, 1)
    assert list(result.steps) == [4, 4]
    np.testing.assert_array_equal(result.t_final, [1.0, 1.0])
    assert (result.code == DONE).all()
    _assert_recorded_exactly_up_to_t_final(result, 0)


def test_fixed_step_steady_run_stops_at_a_chunk_end():
    """gd on y' = -y (dt = 0.5: y halves each step) with gtol = 1e-3 and check_every = 4: the
    steady test runs every 4 steps, so the run stops STEADY after 12 steps (2^-12 <= 1e-3 <
    2^-8) at t = 6, with records up to there: y_n (1 - theta / 2), y_n = 2^-n, at the time
    (n + theta) dt."""
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method="gd", dt=0.5, t_end=100.0, records=5, t_first=1.0, gtol=1e-3,
                   check_every=4)
    result = integrate(lambda y: -y, y0, solver, _states, 1)
    assert result.code[0] == STEADY and result.steps[0] == 12
    assert result.t_final[0] == 6.0 and float(result.final_state[0, 0]) == 2.0**-12
    _assert_recorded_exactly_up_to_t_final(result, 0)
    reached = result.times <= 6.0
    n, theta = np.divmod(result.times[reached] / 0.5, 1.0)
    np.testing.assert_allclose(result.records[0, reached, 0], 0.5**n * (1 - theta / 2),
                               rtol=1e-14)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_max_steps_counts_every_attempt(monkeypatch, method, loop):
    """max_steps = 7 on decay: the run stops MAX_STEPS after 7 step attempts (accepted plus
    rejected), at the time of its last accepted step, with exp(-t) recorded up to there."""
    _use_loop(monkeypatch, loop)
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method=method, t_end=100.0, records=25, gtol=0, max_steps=7)
    result = integrate(lambda y: -y, y0, solver, _states, 1)
    assert result.code[0] == MAX_STEPS
    assert result.steps[0] + result.rejected[0] == 7 and result.steps[0] >= 1
    assert 0 < result.t_final[0] < 100
    assert float(result.final_state[0, 0]) == pytest.approx(math.exp(-result.t_final[0]),
                                                            rel=1e-7)
    _assert_recorded_exactly_up_to_t_final(result, 0)


@pytest.mark.parametrize("method", ["gd", "rk4"])
def test_fixed_step_max_steps(method):
    """gd / rk4 with max_steps = 5, dt = 0.1, t_end = 1: MAX_STEPS at t = 0.5, the state of
    five steps, records up to 0.5 and NaN after."""
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method=method, dt=0.1, t_end=1.0, records=6, t_first=0.1, gtol=0,
                   max_steps=5)
    result = integrate(lambda y: -y, y0, solver, _states, 1)
    factor = 0.9 if method == "gd" else 1 - 0.1 + 0.1**2 / 2 - 0.1**3 / 6 + 0.1**4 / 24
    assert result.code[0] == MAX_STEPS and result.steps[0] == 5
    assert result.t_final[0] == pytest.approx(0.5, rel=1e-15)
    assert float(result.final_state[0, 0]) == pytest.approx(factor**5, rel=1e-14)
    _assert_recorded_exactly_up_to_t_final(result, 0)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_finite_time_blow_up_is_diverged_at_the_blow_up_time(monkeypatch, method, loop):
    """y' = y^2 from 1 blows up at t = 1: DIVERGED with t_final = 1 (to 1e-6), a finite final
    state on the exact solution 1 / (1 - t), and records 1 / (1 - t) before 1, NaN after."""
    _use_loop(monkeypatch, loop)
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method=method, t_end=2.0, records=12, t_first=0.1, gtol=0)
    result = integrate(lambda y: y * y, y0, solver, _states, 1)
    assert result.code[0] == DIVERGED
    assert result.t_final[0] == pytest.approx(1.0, abs=1e-6)
    final = float(result.final_state[0, 0])
    assert math.isfinite(final) and final > 1e4
    _assert_recorded_exactly_up_to_t_final(result, 0)
    reached = result.times <= result.t_final[0]
    assert reached.sum() >= 9
    np.testing.assert_allclose(result.records[0, reached, 0], 1 / (1 - result.times[reached]),
                               rtol=1e-6)


def test_gd_blow_up_is_diverged_with_the_last_finite_state():
    """Euler on y' = y^2 (dt = 1/8) passes 1e6 (1 + |y0|) at some step: DIVERGED, t_final =
    steps x dt, and the final state is the hand loop's last state below it, to the bit."""
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method="gd", dt=0.125, t_end=10.0, records=5, gtol=0)
    result = integrate(lambda y: y * y, y0, solver, _states, 1)
    y, n = 1.0, 0
    while abs(y + 0.125 * (y * y)) <= 2e6:
        y, n = y + 0.125 * (y * y), n + 1
    assert result.code[0] == DIVERGED and result.steps[0] == n
    assert result.t_final[0] == 0.125 * n
    assert float(result.final_state[0, 0]) == y
    _assert_recorded_exactly_up_to_t_final(result, 0)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_sliding_on_a_discontinuity_is_stalled(monkeypatch, method, loop):
    """y' = 1/2 - sign(y) from 1: y = 1 - t/2 reaches 0 at t = 2, where the flow slides on
    the discontinuity (y' = -1/2 above, 3/2 below) and the controller chatters: STALLED after
    >= 1000 rejections, at least one for every two accepted steps, at t_final = 2 with
    y ~ 0, records 1 - t/2 before."""
    _use_loop(monkeypatch, loop)
    y0 = torch.ones(1, 1, dtype=F64)
    solver = _spec(method=method, t_end=10.0, records=12, t_first=0.1, gtol=0)
    result = integrate(lambda y: 0.5 - torch.sign(y), y0, solver, _states, 1)
    assert result.code[0] == STALLED
    assert result.rejected[0] >= 1000 and 2 * result.rejected[0] >= result.steps[0]
    assert result.t_final[0] == pytest.approx(2.0, abs=1e-4)
    assert abs(float(result.final_state[0, 0])) < 1e-4
    _assert_recorded_exactly_up_to_t_final(result, 0)
    reached = result.times <= result.t_final[0]
    np.testing.assert_allclose(result.records[0, reached, 0], 1 - result.times[reached] / 2,
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_nan_velocity_at_the_start_is_diverged_at_once(monkeypatch, method, loop):
    """A run whose velocity is NaN at its initial state cannot take a step: DIVERGED at
    t = 0 with no accepted step (not after a thousand rejected ones as STALLED), only the
    t = 0 record, and the state it started from."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[1.0, 0.3]], dtype=F64)
    solver = _spec(method=method, t_end=5.0, records=6, gtol=0)
    result = integrate(lambda y: torch.where(y > 0.5, -1.0, math.nan), y0, solver, _states, 2)
    assert result.code[0] == DIVERGED
    assert result.steps[0] == 0 and result.rejected[0] < 50 and result.t_final[0] == 0.0
    _assert_recorded_exactly_up_to_t_final(result, 0)
    assert torch.equal(result.final_state, y0)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_nan_initial_state_is_diverged_at_once(monkeypatch, method, loop):
    """A run that starts with a NaN entry is DIVERGED after its first attempt (a NaN peak
    counts as a blow-up), not after a string of rejected steps; its neighbour is unaffected."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[math.nan, 0.3], [1.0, 0.3]], dtype=F64)
    solver = _spec(method=method, t_end=5.0, records=6, gtol=0)
    result = integrate(lambda y: -y, y0, solver, _states, 2)
    assert result.code[0] == DIVERGED and result.code[1] == DONE
    assert result.steps[0] == 0 and result.rejected[0] <= 1 and result.t_final[0] == 0.0
    np.testing.assert_allclose(result.records[1, :, 0], np.exp(-result.times), rtol=1e-6)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_pure_relative_tolerance_with_a_zero_coordinate(monkeypatch, loop):
    """atol = 0 (allowed: pure relative error control) with a coordinate that is 0 and stays
    0 under y' = -y: its error is 0, so it constrains nothing; the run reaches t_end with
    exp(-t) on the other coordinate (rtol = 1e-9)."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    solver = _spec(t_end=10.0, records=11, atol=0.0, rtol=1e-9, gtol=0)
    result = integrate(lambda y: -y, y0, solver, _states, 2)
    assert result.code[0] == DONE and result.t_final[0] == 10.0
    assert 10 < result.steps[0] < 1000
    np.testing.assert_allclose(result.records[0, :, 0], np.exp(-result.times), rtol=1e-8)
    np.testing.assert_array_equal(result.records[0, :, 1], np.zeros(11))


# --------------------------------------------------------------------------------------------
# 2. per-run independence

# (kind, rate, y0): 0 logistic y' = rate y (1 - y); 1 blow-up y' = y^2 (at t = 1);
# 2 y' = -1 while y > 1/2, NaN below (the first coordinate reaches 1/2 at t = 0.4);
# 3 the same from a NaN start; 4 sliding y' = 1/2 - sign(y - 1/4) (stalls at t = 0.7);
# 5 decay y' = -rate y (steady by t ~ 0.4); 6 oscillator (x, v)' = rate (v, -x)
_MIXED = [(0, 1e-3, (0.2, 0.6)), (1, 1.0, (1.0, 0.5)), (0, 0.5, (0.2, 0.9)),
          (2, 1.0, (0.9, 1.0)), (3, 1.0, (0.3, 1.0)), (4, 1.0, (0.95, 0.6)),
          (5, 50.0, (1.0, -1.0)), (6, 3.0, (1.0, 0.0))]
_MIXED_STATUS = [DONE, DIVERGED, DONE, DIVERGED, DIVERGED, STALLED, STEADY, DONE]


def _mixed_velocity(kinds: torch.Tensor, rates: torch.Tensor):
    kinds, rates = kinds[:, None], rates[:, None]

    def velocity(y: torch.Tensor) -> torch.Tensor:
        out = rates * y * (1 - y)
        out = torch.where(kinds == 1, y * y, out)
        cut = torch.where(y > 0.5, -torch.ones_like(y), torch.full_like(y, math.nan))
        out = torch.where((kinds == 2) | (kinds == 3), cut, out)
        out = torch.where(kinds == 4, 0.5 - torch.sign(y - 0.25), out)
        out = torch.where(kinds == 5, -rates * y, out)
        turn = rates * torch.stack([y[:, 1], -y[:, 0]], dim=1)
        return torch.where(kinds == 6, turn, out)

    return velocity


def _gradient_norm(state: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return k.double().norm(dim=1)


def _mixed(which: list[int], method: str, shrink: bool):
    kinds = torch.tensor([_MIXED[i][0] for i in which])
    rates = torch.tensor([_MIXED[i][1] for i in which], dtype=F64)
    y0 = torch.tensor([_MIXED[i][2] for i in which], dtype=F64)
    solver = _spec(method=method, t_end=20.0, records=30, gtol=1e-6, rtol=1e-7, atol=1e-10)

    def select(rows: torch.Tensor):
        return _mixed_velocity(kinds[rows], rates[rows]), _gradient_norm

    return integrate(_mixed_velocity(kinds, rates), y0, solver, _states, 2,
                     grad_norm=_gradient_norm, select=select if shrink else None)


@pytest.mark.parametrize(("method", "loop"), [
    ("dopri5", "cpu"),
    pytest.param("tsit5", "cpu", marks=pytest.mark.slow),
    pytest.param("dopri5", "device", marks=pytest.mark.slow),
    pytest.param("tsit5", "device", marks=pytest.mark.slow),
])
def test_a_run_does_not_depend_on_its_batch(monkeypatch, method, loop):
    """Eight runs of different time scales (rates 1e-3 .. 50) and fates (t_end, steady,
    blow-up, NaN later and at the start, stall) each alone, in one batch, and in one batch
    that sheds its finished runs (``select``): the same status, accepted and rejected steps,
    and, to rounding, the same t_final, records and final state (the stage sums' BLAS product
    is not bit-stable in the batch size, and a decay at rest steps at its stability limit,
    where rounding moves the step sizes; a run mixed up with another would be off by O(1)).
    Exception (documented): on the CPU loop a shedding batch ends its chunk when a run
    finishes, which moves the chunk ends where the stall test runs, so there only the stalled
    run's status is compared."""
    _use_loop(monkeypatch, loop)
    alone = [_mixed([i], method, False) for i in range(len(_MIXED))]
    for shrink in (False, True):
        together = _mixed(list(range(len(_MIXED))), method, shrink)
        np.testing.assert_array_equal(together.code, _MIXED_STATUS)
        for i, one in enumerate(alone):
            assert one.code[0] == together.code[i], (shrink, i)
            if shrink and loop == "cpu" and _MIXED_STATUS[i] == STALLED:
                continue
            assert one.steps[0] == together.steps[i], (shrink, i)
            assert one.rejected[0] == together.rejected[i], (shrink, i)
            np.testing.assert_allclose(one.t_final[0], together.t_final[i], rtol=1e-7)
            np.testing.assert_allclose(one.records[0], together.records[i], rtol=1e-7,
                                       atol=1e-12)
            # the blow-up's last state (y ~ 1e11 at 1 - t ~ 1e-11) magnifies rounding
            loose = 1e-5 if _MIXED_STATUS[i] == DIVERGED else 1e-7
            np.testing.assert_allclose(one.final_state[0].numpy(),
                                       together.final_state[i].numpy(), rtol=loose, atol=1e-12)
            _assert_recorded_exactly_up_to_t_final(together, i)
    # the logistic runs and the oscillator are on their exact solutions
    times = together.times
    for i in (0, 2):
        rate, start = _MIXED[i][1], np.array(_MIXED[i][2])
        expected = 1 / (1 + (1 / start - 1) * np.exp(-rate * times[:, None]))
        np.testing.assert_allclose(together.records[i], expected, rtol=1e-6)
    turning = np.stack([np.cos(3 * times), -np.sin(3 * times)], axis=1)
    np.testing.assert_allclose(together.records[7], turning, rtol=0, atol=1e-5)


def test_fixed_step_run_does_not_depend_on_its_batch():
    """gd and rk4 share one time for every run: a run's status, records and state alone and
    next to runs that diverge (blow-up) or produce NaN are the same, to rounding (the stage
    sums' BLAS product is not bit-stable in the batch size: 2e-15 after 300 steps; a row
    mixed up with another's would be off by O(1))."""
    for method in ("gd", "rk4"):
        which = list(range(len(_MIXED)))
        kinds = torch.tensor([_MIXED[i][0] for i in which])
        rates = torch.tensor([_MIXED[i][1] for i in which], dtype=F64)
        rates[-1] = 5.0  # within the fixed step's stability range
        y0 = torch.tensor([_MIXED[i][2] for i in which], dtype=F64)
        solver = _spec(method=method, dt=0.01, t_end=3.0, records=10, gtol=0)
        together = integrate(_mixed_velocity(kinds, rates), y0, solver, _states, 2)
        assert together.code[1] == DIVERGED and together.code[3] == DIVERGED
        for i in (0, 2, 6, 7):
            alone = integrate(_mixed_velocity(kinds[i:i + 1], rates[i:i + 1]), y0[i:i + 1],
                              solver, _states, 2)
            assert alone.code[0] == together.code[i] == DONE
            np.testing.assert_allclose(alone.records[0], together.records[i], rtol=1e-12,
                                       atol=0)
            np.testing.assert_allclose(alone.final_state[0].numpy(),
                                       together.final_state[i].numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["gd", "dopri5"])
def test_recorder_is_told_each_states_run_and_progress_counts_every_run(monkeypatch, method,
                                                                        loop):
    """Decays y' = -rate y with rates 1 .. 40 finish (steady) one after another, and the
    adaptive batch sheds them (``select``): the recorder is given the index of each state's
    run in the whole batch (recorded here next to the state), the records follow the exact
    solution (for gd, Euler's: (1 - rate dt)^n (1 - theta rate dt) at t = (n + theta) dt),
    and ``progress`` is told of each run once (its counts add up to R)."""
    _use_loop(monkeypatch, loop)
    rates = torch.tensor([1.0, 40.0, 10.0, 20.0], dtype=F64)

    def velocity_of(r: torch.Tensor):
        return lambda y: -r[:, None] * y

    def record(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        return torch.cat([states, runs[:, None].to(states.dtype)], dim=1)

    def select(rows: torch.Tensor):
        return velocity_of(rates[rows]), _gradient_norm

    told = []
    dt = 0.02 if method == "gd" else None
    solver = _spec(method=method, dt=dt, t_end=50.0, records=20, gtol=1e-6, check_every=4)
    y0 = torch.ones(4, 1, dtype=F64)
    result = integrate(velocity_of(rates), y0, solver, record, 2, progress=told.append,
                       grad_norm=_gradient_norm, select=select)
    assert (result.code == STEADY).all()
    assert sum(told) == 4 and all(n > 0 for n in told) and len(told) >= 2
    for run in range(4):
        _assert_recorded_exactly_up_to_t_final(result, run)
        reached = result.times <= result.t_final[run]
        np.testing.assert_array_equal(result.records[run, reached, 1], run)
        t, rate = result.times[reached], float(rates[run])
        if method == "gd":
            n, theta = np.divmod(t / dt, 1.0)
            expected = (1 - rate * dt) ** n * (1 - theta * rate * dt)
        else:
            expected = np.exp(-rate * t)
        np.testing.assert_allclose(result.records[run, reached, 0], expected, rtol=1e-6,
                                   atol=1e-9)  # atol 1e-10 of the adaptive runs


def test_gradient_descent_past_its_stability_limit_is_diverged():
    """A CE UFM under gradient descent with a step far past 2/L: the iterates grow without
    bound (fn 7.8e51 at t = 3000 with dt = 50, fn 6e10 with dt = 500). Both are `diverged`,
    not `ok`; the same run at dt = 0.5 is `ok`."""
    from ncsim.flow import simulate
    from ncsim.spec import ModelSpec, Regularization, RunSpec, SolverSpec

    model = ModelSpec(kind="ufm", loss="ce", classes=4, per_class=6, dim=12)
    reg = Regularization(lambda_w=1e-3, lambda_h=1e-3)
    for dtype in ("float64", "float32"):
        status = {}
        for dt in (50.0, 500.0, 0.5):
            solver = SolverSpec(method="gd", dt=dt, t_end=3000.0, records=20, dtype=dtype)
            spec = RunSpec(model=model, reg=reg, solver=solver)
            status[dt] = simulate(spec, theory=False).runs["status"].iloc[0]
        assert status == {50.0: "diverged", 500.0: "diverged", 0.5: "ok"}, dtype


def test_a_run_whose_objective_rose_is_diverged():
    """A gradient flow never raises its objective. Gradient descent at dt = 1000 (two steps:
    the objective 1.39 -> 5.4e7, fn only 4768, below the growth limit) and dopri5 at rtol 0.5,
    atol 0.1 (the objective 1.39 -> 2e7) were `ok` and `not_collapsed`; both are `diverged`.
    The same runs at sound settings are not."""
    from ncsim.flow import simulate
    from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

    model = ModelSpec(kind="ufm", loss="ce", classes=4, per_class=3, dim=8)
    reg = Regularization(lambda_w=1e-3, lambda_h=1e-3)
    solvers = {
        "gd 1000": SolverSpec(method="gd", dt=1000.0, t_end=2000.0, records=20),
        "dopri5 loose": SolverSpec(method="dopri5", rtol=0.5, atol=0.1, t_end=1000.0,
                                   records=20),
        "gd 1": SolverSpec(method="gd", dt=1.0, t_end=2000.0, records=20),
        "dopri5": SolverSpec(method="dopri5", t_end=1000.0, records=20),
    }
    status = {}
    for name, solver in solvers.items():
        spec = RunSpec(model=model, reg=reg, init=InitSpec(scale=0.1, seed=0), solver=solver)
        run = simulate(spec, theory=False).runs.iloc[0]
        status[name] = run["status"]
    assert status == {"gd 1000": "diverged", "dopri5 loose": "diverged", "gd 1": "ok",
                      "dopri5": "ok"}


def test_few_rejections_at_the_stability_boundary():
    """y' = -diag(1, 30, 500) y from (1, 1, 1) to t = 10, dopri5, rtol 1e-6, atol 1e-12: once
    the fast modes have decayed, the step is bounded by stability (dt x 500 near
    Dormand-Prince's real boundary 3.307), not by accuracy. The accepted steps are scipy
    RK45's (the same pair and error norm: 1577) to within one, with 39 rejections (2.5%).
    scipy rejects 226 (14%): after a rejection it forbids the next step to grow, and at the
    stability boundary that keeps the controller bouncing off it (the same rule here took
    1236 rejections against 190 to t = 50; the flows of W1 end on this boundary). The slow
    mode ends at exp(-10) to the tolerance."""
    lam = torch.tensor([1.0, 30.0, 500.0], dtype=F64)
    solver = _spec(method="dopri5", t_end=10.0, records=3, rtol=1e-6, atol=1e-12, gtol=0)
    result = integrate(lambda y: -lam * y, torch.ones(1, 3, dtype=F64), solver, _states, 3)
    assert result.code[0] == DONE
    assert abs(int(result.steps[0]) - 1577) <= 1
    assert result.rejected[0] <= 0.03 * result.steps[0]
    assert float(result.final_state[0, 0]) == pytest.approx(math.exp(-10.0), rel=1e-5)
