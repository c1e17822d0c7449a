"""Strict probes of the deep-linear derivations (theory/deep.py) and of the phase of a point
(theory/phase.py): the root selection's tolerance for rounding, the one N symbol of the deep
derivations, the unequal-decay basin of classify against a hand-written aligned flow, depth 1
with unequal decays, zero decays, and the phase diagram's messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from ncsim.errors import InputError
from ncsim.theory import deep
from ncsim.theory import symbols as S
from ncsim.theory.derivations import derivations
from ncsim.theory.phase import BASE_KEYS, classify, phase_diagram

# ---------------------------------------------------------------------------- deep.py


def test_invert_for_s_accepts_a_real_root_with_a_rounding_imaginary_part():
    """Lambda = s^3 - s: sympy writes its one positive root with I (three real roots), which
    evaluates with an imaginary residue ~1e-21; it is kept, as the real root 1.02412..."""
    root = deep._invert_for_s(S.s**3 - S.s)
    v = complex(sp.N(root.subs(deep._PROBE), 30))
    want = brentq(lambda t: t**3 - t - 0.05, 0.5, 2.0, xtol=1e-15)
    assert v.real == pytest.approx(want, rel=1e-13)
    assert abs(v.imag) <= 1e-15


def test_invert_for_s_refuses_a_root_a_millionth_off_the_real_axis():
    """Lambda = (i^(1e-6) s)^M has one root 0.3684 - 5.8e-7 i at the probe point: relative
    imaginary part 1.6e-6, far above rounding, so it is not taken for a real root."""
    expr = (sp.I ** sp.Rational(1, 10**6) * S.s) ** S.M
    with pytest.raises(RuntimeError, match=r"^expected one real positive root of Lambda"):
        deep._invert_for_s(expr)


def test_deep_derivations_share_one_positive_n_symbol():
    """deep.N_sym is Symbol('N', positive=True), the very N of escape_asymptotic: every
    expression of derivations('mse', depth=3) holds one symbol named N, so one subs sets it."""
    assert deep.N_sym == sp.Symbol("N", positive=True)
    d = derivations("mse", depth=3, bias="none")
    ns = {s for v in d.values() for s in sp.sympify(v).free_symbols if s.name == "N"}
    assert ns == {deep.N_sym}
    assert deep.N_sym in d["tau_glob"].free_symbols
    assert deep.N_sym in d["escape_asymptotic"].free_symbols


# ---------------------------------------------------------------------------- phase.py
K, N_PER, D = 4, 5, 20
LW, LH = 0.04, 0.005  # unequal decays: the basin boundary is not a_u of the geometric mean
LOW, HIGH = 0.4, 1 + 0.6 / math.sqrt(D)  # basin_band(d): the band in units of the root


def _aligned_u_end(a0: float, decays: tuple[float, ...]) -> float:
    """u = prod a at t = 2e4 of the gradient flow of (1/2N)(prod a - sqrt n)^2 +
    sum lambda_j a_j^2 / 2 from a_j = a0 on every factor (hand-written, LSODA)."""
    N, s = K * N_PER, math.sqrt(N_PER)
    lams = np.array(decays)

    def rhs(t, a):
        u = np.prod(a)
        return -(u - s) * u / a / N - lams * a

    sol = solve_ivp(rhs, (0.0, 2e4), np.full(lams.size, a0), method="LSODA", rtol=1e-10,
                    atol=1e-14)
    return float(np.prod(sol.y[:, -1]))


@pytest.mark.parametrize(("a0", "phase"), [(0.06, "trapped"), (0.1, "basin_edge"),
                                           (0.3, "collapse")])
def test_classify_unequal_decays_basin_uses_lambda_h_for_the_h_factor(a0, phase):
    """Depth 2, lambda_W = 0.04, lambda_H = 0.005 (K=4, n=5, d=20): the phase follows the fate
    of the aligned flow with decays (lw, lw, lh) from a0/0.4 and a0/(1 + 0.6/sqrt d)."""
    decays = (LW, LW, LH)
    u_low, u_high = _aligned_u_end(a0 / LOW, decays), _aligned_u_end(a0 / HIGH, decays)
    want = ("trapped" if abs(u_low) < 1e-6 else "collapse" if u_high > 1.0 else "basin_edge")
    assert want == phase
    row = classify("mse", "none", K, N_PER, D, 2, LW, LH, 0.0, a0 / math.sqrt(D / 2))
    assert row["phase"] == phase


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_classify_depth_one_unequal_decays_collapses_from_a_tiny_init(loss):
    """Depth 1 (M = 2): the origin is a saddle, so no basin test applies: lambda_W = 0.01,
    lambda_H = 0.02 and init 1e-9 is 'collapse', not 'trapped'."""
    row = classify(loss, "none", 3, 4, 8, 1, 0.01, 0.02, 0.0, 1e-9)
    assert row["phase"] == "collapse" and row["collapsed_global"] is True


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("depth", [1, 3])
def test_classify_both_decays_zero_is_no_collapse(loss, depth):
    """lambda_W = lambda_H = 0: within-class variability never decays: 'no_collapse'."""
    row = classify(loss, "none", 3, 4, 8, depth, 0.0, 0.0, 0.0, 0.1)
    assert row["phase"] == "no_collapse"


BASE = {"loss": "mse", "bias": "none", "K": 3, "n": 4, "d": 8, "depth": 2, "lambda_b": 0.0,
        "init_scale": 0.1}


def test_phase_diagram_lists_unknown_base_keys_sorted():
    """Two unknown base keys are named in sorted order, then the allowed keys in order."""
    with pytest.raises(InputError) as err:
        phase_diagram("lambda_w", [0.01], "lambda_h", [0.01], {**BASE, "zeta": 1, "alpha": 2})
    assert str(err.value) == ("unknown phase diagram base parameters: alpha, zeta; allowed: "
                              + ", ".join(BASE_KEYS))


def test_phase_diagram_reports_a_missing_dimension():
    """A base without d is refused with the full 'missing: d' message (not a TypeError)."""
    base = {k: v for k, v in BASE.items() if k != "d"}
    with pytest.raises(InputError) as err:
        phase_diagram("lambda_w", [0.01], "lambda_h", [0.01], base)
    assert str(err.value) == ("phase diagram base parameters missing: d (give "
                              + ", ".join(BASE_KEYS) + " except the two axes)")
