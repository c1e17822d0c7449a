"""Mutation probe (third pass) of ncsim.theory.imbalance: the bias part of the KKT certificate
for a free bias, the polish stopping rule, the best-of-restarts choice in the L-BFGS solver, the
objective tolerance just below the threshold, the overflow-safe softmax, the lambda_b pass-through
of imbalanced_mse and the validation of bytes, bools and infinite tolerances."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.theory import imbalance as im
from ncsim.theory.imbalance import imbalanced_equilibrium, imbalanced_mse, kkt_residual

# ------------------------------------------------------------------------------- KKT certificate


def test_kkt_residual_counts_the_bias_gradient_for_a_free_bias():
    """MSE, counts (1, 3), Lambda 1, X = 0, b = 0: |G|_2 = sqrt(3)/4 < Lambda, but the bias
    gradient -(1/4, 3/4) is not 0, so a free (like a regularised) bias gives residual 3/4; with
    no bias, or at the best bias b = (1/4, 3/4), the residual is 0."""
    cnt = np.array([1.0, 3.0])
    zero = np.zeros((2, 2))
    for bias in ("free", "reg"):
        assert kkt_residual("mse", cnt, 1.0, 0.0, zero, np.zeros(2), bias) == pytest.approx(
            0.75, rel=1e-15)
        assert kkt_residual("mse", cnt, 1.0, 0.0, zero, np.array([0.25, 0.75]), bias) < 1e-15
    assert kkt_residual("mse", cnt, 1.0, 0.0, zero, np.zeros(2), "none") == 0.0


def test_kkt_residual_is_overflow_safe_for_huge_ce_logits():
    """CE, counts (1, 2, 4), X = 2000 diag(sqrt n) (logits 2000 I): the softmax is exactly the
    identity, so G = 0 and the only violation is the support condition |0 + Lambda I| / Lambda
    = 1 exactly (an unshifted exp(2000) would overflow to NaN)."""
    cnt = np.array([1.0, 2.0, 4.0])
    X = 2000.0 * np.diag(np.sqrt(cnt))
    got = kkt_residual("ce", cnt, 0.05, 0.0, X, np.zeros(3), "none")
    assert got == 1.0


# ------------------------------------------------------------------------------- numeric solver


def test_polish_stops_when_a_check_improves_less_than_ten_percent(monkeypatch):
    """With a residual that never improves (constant 1), the polish checks once at step 50,
    sees no 10% gain and stops (two residual evaluations, not 101), returning its start."""
    calls = []

    def flat(*args):
        calls.append(1)
        return 1.0

    monkeypatch.setattr(im, "kkt_residual", flat)
    cnt = np.array([1.0, 2.0, 4.0])
    X0, b0 = 0.3 * np.eye(3), np.zeros(3)
    X, b = im._polish("ce", "none", cnt, 0.01, 0.0, X0, b0)
    assert len(calls) == 2
    assert X is X0 and b is b0


def test_numeric_keeps_the_restart_of_smallest_objective(monkeypatch):
    """_numeric with 3 restarts returns the L-BFGS point of least objective (here the second
    one, fun 0.5, over 2.0 and 1.0), read as X = A B."""
    K = 2
    funs = iter([2.0, 0.5, 1.0])
    points = []

    def fake_minimize(fun, x0, **kwargs):
        x = np.full(x0.size, float(len(points) + 1))
        points.append(x)
        return SimpleNamespace(fun=next(funs), x=x)

    monkeypatch.setattr(im, "minimize", fake_minimize)
    X, b = im._numeric("ce", "none", np.array([1.0, 2.0]), 0.01, 0.0, 3, 0)
    assert len(points) == 3
    np.testing.assert_array_equal(X, np.full((K, K), 2.0) @ np.full((K, K), 2.0))
    np.testing.assert_array_equal(b, np.zeros(K))


def test_just_below_the_threshold_a_rounding_tie_with_the_origin_is_accepted():
    """CE with a regularised bias (lambda_b 1), counts (1, 2, 4), decays (1 - eps) Lambda_c with
    eps down to 1e-10: the true gain over the origin (~eps^2) is below one ulp, so
    objective_star may exceed objective_zero by rounding; it is accepted (1e-12 relative) and
    the minimiser is reported as collapsed, not refused with ArithmeticError."""
    cnt = np.array([1.0, 2.0, 4.0])
    obj0, b0 = im._origin("ce", "reg", cnt, 1.0)
    # the threshold: |grad_X F(0, b0)|_2 at the origin's best bias b0
    lc = float(np.linalg.norm(im._smooth("ce", cnt, 1.0, np.zeros((3, 3)), b0)[1], 2))
    for eps in (1e-8, 3e-9, 1e-9, 3e-10, 1e-10):
        lam = lc * (1 - eps)
        eq = imbalanced_equilibrium("ce", "reg", (1, 2, 4), lam, lam, 1.0)
        assert eq.collapsed and eq.kkt_residual <= 1e-6
        assert eq.objective_star <= obj0 + 1e-12 * abs(obj0)


# ------------------------------------------------------------------------------- shortcut


def test_imbalanced_mse_passes_lambda_b_for_a_regularised_bias():
    """imbalanced_mse(counts, lw, lh, "reg", 0.5) is imbalanced_equilibrium("mse", "reg", ...,
    0.5): same bias, logits and objective (the shortcut must forward lambda_b)."""
    got = imbalanced_mse((1, 2, 4), 0.01, 0.02, "reg", 0.5)
    want = imbalanced_equilibrium("mse", "reg", (1, 2, 4), 0.01, 0.02, 0.5)
    np.testing.assert_array_equal(got.bias, want.bias)
    np.testing.assert_array_equal(got.logits, want.logits)
    assert got.objective_star == want.objective_star
    assert got.method == "certified_numeric" and np.all(got.bias != 0)


# ------------------------------------------------------------------------------- validation


def test_decay_given_as_bytes_is_refused():
    """lambda_w = b"0.01" is not one number (float() would read bytes as 0.01)."""
    with pytest.raises(InputError, match=r"^lambda_w must be one number, got b'0\.01'$"):
        imbalanced_equilibrium("mse", "none", (1, 2), b"0.01", 0.01)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("kkt_tol", math.inf, r"^kkt_tol must be a finite number >= 0, got inf$"),
    ("kkt_tol", True, r"^kkt_tol must be a finite number >= 0, got True$"),
    ("restarts", True, r"^restarts must be an integer >= 1, got True$"),
    ("seed", False, r"^seed must be an integer >= 0, got False$")])
def test_infinite_tolerance_and_boolean_options_are_refused(option, value, message):
    """kkt_tol = inf (which would certify anything) and bools for kkt_tol / restarts / seed are
    refused with InputError naming the option."""
    with pytest.raises(InputError, match=message):
        imbalanced_equilibrium("ce", "none", [3, 1], 1e-3, 1e-3, **{option: value})


def test_numpy_integer_options_are_accepted():
    """numpy integers are integers: restarts np.int64(2), seed np.int64(1) are accepted."""
    eq = imbalanced_equilibrium("ce", "none", [3, 1], 1.0, 1.0, restarts=np.int64(2),
                                seed=np.int64(1))
    assert not eq.collapsed and eq.kkt_residual == 0.0


@pytest.mark.parametrize("flag", [True, np.True_, np.array(True), torch.tensor(True)],
                         ids=["python", "numpy", "array0d", "tensor0d"])
def test_boolean_decay_is_refused(flag):
    """A boolean decay, Python, numpy or a 0-d array, is not one number (as in equilibrium)."""
    with pytest.raises(InputError, match=r"^lambda_w must be one number"):
        imbalanced_equilibrium("mse", "none", (1, 2), flag, 1.0)


@pytest.mark.parametrize("bias", ["reg", "Free", ""])
def test_label_singular_values_refuses_a_bias_without_closed_form(bias):
    """Only 'none' and 'free' have label singular values; 'reg' or a typo is refused."""
    with pytest.raises(InputError, match=r"^label_singular_values: bias must be 'none' or 'free'"):
        im.label_singular_values(bias, (1, 2, 3))
