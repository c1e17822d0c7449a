"""Boundary scan of ncsim.theory at the critical weight decay: equilibrium,
imbalanced_equilibrium (balanced counts), critical.lambda_crit and phase.classify within three
ulps of lambda_crit, and the accuracy of sigma and fn* there against mpmath.

Invariants checked (references written here: the comparison with critical.lambda_crit, the
closed forms of reference/theory.md at 50 digits):

- one layer, MSE (bias none, free, reg) and CE (none, free), equal decays lambda_W = lambda_H
  = lambda at -3 .. +3 ulps of lambda_crit, 899 (K, n) (K = 2 .. 1000, n = 1 .. 1e5):
  ``equilibrium`` is collapsed iff lambda < lambda_crit (strict: the tie goes to the origin),
  and then sigma > 0, fn* > 0 and sigma_local = sigma; otherwise sigma = fn* = 0 and
  sigma_local NaN. The same with torch inputs.
- deep MSE (L = 2, 3, 5): collapsed iff Lambda < Lambda_crit (the jump form), sigma > 0 iff
  collapsed. Deep CE (L = 2, 3): the documented tie window (modes.CE_TIE): not collapsed at
  and above Lambda_crit and within three ulps below it, collapsed at (1 - 1e-12) Lambda_crit.
- phase.classify, one layer: "collapse" iff collapsed_global iff lambda < lambda_crit, else
  "vanishing"; fn_star > 0 iff collapsed.
- imbalanced_equilibrium with balanced counts [n] * K: collapsed equals the balanced
  equilibrium's (and lambda < lambda_crit) at every one of these decays: MSE none / free
  (closed forms, K up to 1000, their singular values and fn* equal the balanced sigma and
  fn* to 1e-13), CE none / free / reg and MSE reg (numeric, K up to 10); also for unequal
  decays lambda_H = r lambda_W (r = 1e-3, 4, 1e6) at lambda_crit(ratio=r) +- 3 ulps, where both
  decide by the geometric mean Lambda against Lambda_crit.
- accuracy near the boundary (1 .. 3 ulps below, 1 - 1e-12 .. 1 - 1e-1, 0.5, 1e-3, 1e-9
  times lambda_crit; r = 1, 1e-3, 4): sigma and fn* against mpmath at 50 digits of the closed
  forms at the float inputs (one layer: sigma = sqrt(n) - N Lambda (MSE), sqrt(n) log(1 /
  (Lambda sqrt n) - K + 1) (CE), fn*^2 = F sigma with F = sqrt(lambda_W / lambda_H) / n (MSE
  none), (K - 1)/K of that (MSE free, CE); deep MSE: the upper root of (sqrt(n) - sigma)
  sigma^(1 - 2/M) = N Lambda, fn* = sigma^(1 - 1/M) / sqrt(n)). Bound: the error is at most
  C eps (|x| + |Lambda dx/dLambda|), i.e. relative error <= C eps (1 + kappa), kappa =
  |Lambda x'(Lambda) / x| the condition number of x in the decay, which any evaluation from
  rounded inputs meets (kappa = N Lambda / sigma for MSE, sqrt(n) / ((1 - (K - 1) sqrt(n)
  Lambda) sigma) for CE, (sqrt(n) - sigma) / |q sqrt(n) - (1 + q) sigma|, q = 1 - 2/M, deep;
  kappa / 2 for fn* = sqrt(F sigma), (1 - 1/M) kappa deep). C = 4 for one-layer sigma and
  fn*, 8 for fn*^2 (also where the float threshold lies an ulp beyond the real one and the
  reference sigma is <= 0), 2M for deep (sigma = a^M from a bisected amplitude a). Measured
  maxima of the error over eps (1 + kappa): one layer 1.6 (sigma), 1.9 (fn*), 3.7 (fn*^2);
  deep 0.9 M (sigma), 0.7 M (fn*).

Fixed findings (each test marked "finding" failed before the fix):

1. modes.mse_mode / modes.ce_ray, one layer: sigma was evaluated as sqrt(n) - N Lambda / c
   (CE: sqrt(n) log(1 / (Lambda sqrt n) - K + 1)), which rounds to 0 within 1 - 3 ulps below
   lambda_crit, so ``equilibrium`` said "not collapsed" (fn* 0) although lambda <
   lambda_crit: MSE 387 of 1488 (K, n) at one ulp below (K = 2, n = 3), 63 at two, 2 at three
   (K = 31, n = 18); CE 363 at one ulp (K = 3, n = 5; sigma_local 0.0), 19 at two. And
   phase.classify called those points "vanishing". Now collapse is decided by lambda <
   Lambda_c (the expression of critical.Lambda_crit) and sigma is evaluated as sqrt(n)
   (1 - Lambda / Lambda_c) (MSE) and sqrt(n) log1p(K (Lambda_c - Lambda) / Lambda) (CE), > 0
   wherever Lambda < Lambda_c (modes.one_layer_forms asserts both equal the derived
   sigma_star).
2. imbalance.imbalanced_equilibrium, balanced counts: lambda = lambda_crit itself was
   "collapsed" for MSE K = 50, n = 7 (sqrt(n) - N Lambda rounded above 0) and CE K = 10,
   n = 3 (Lambda = sqrt(l) sqrt(l) one ulp below l, and the computed spectral norm of the
   gradient at the origin rounded above Lambda), and one ulp below it was "not collapsed"
   where the balanced equilibrium (now) is. Now Lambda is the equilibrium's geometric mean,
   the closed forms threshold each mode as modes does (1 / ((N / n_k) sqrt(n_k)), the centred
   modes of balanced counts at 1 / (K sqrt n) without an SVD), and the numeric cases decide
   the origin of balanced counts by Lambda >= 1 / (K sqrt n), the exact norm of that gradient.
3. equilibrium.geometric_mean: a decay more than ~1e308 below the largest underflowed the
   ratio, giving Lambda = 0: lambda_W = 1e300, lambda_H = 1e-300 (Lambda = 1, far above
   lambda_crit = 0.289 for K = 2, n = 3) was "collapsed" with sigma = sqrt(3), fn* = 1. Now
   the product of the M-th roots is taken there.
4. imbalance.imbalanced_equilibrium: (lambda_W / lambda_H)^(1/4) overflowed or underflowed
   for decays ~1e300 apart: lambda_W = 1e-300, lambda_H = 1e290 (counts [3, 3]) gave fn* 0
   and |W| NaN (the balanced fn* is 2.40e-148), 1e300, 1e-300 gave fn* NaN. Now it is a
   quotient of fourth roots.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import torch

from ncsim.theory import critical, modes
from ncsim.theory.equilibrium import equilibrium, geometric_mean
from ncsim.theory.imbalance import imbalanced_equilibrium
from ncsim.theory.phase import classify

EPS = float(np.finfo(float).eps)
ULPS = range(-3, 4)
K_GRID = list(range(2, 21)) + [25, 31, 50, 64, 100, 128, 257, 500, 999, 1000]
N_GRID = list(range(1, 21)) + [25, 49, 50, 99, 128, 1000, 4096, 12345, 65536, 99991, 100000]
KK, NN = (a.ravel().astype(float) for a in np.meshgrid(K_GRID, N_GRID))
# a sparser grid for the per-point calls (classify, imbalanced_equilibrium, mpmath)
K_FEW = [2, 3, 5, 10, 50, 333, 1000]
N_FEW = [1, 2, 3, 7, 50, 1000, 12345, 100000]
LAMBDA_B = 0.5  # bias "reg"


def _ulps(x, k):
    """x moved k floats up (k > 0) or down (k < 0), elementwise."""
    x = np.asarray(x, dtype=float)
    for _ in range(abs(k)):
        x = np.nextafter(x, math.inf if k > 0 else 0.0)
    return x


def _models_one_layer():
    return [("mse", "none"), ("mse", "free"), ("mse", "reg"), ("ce", "none"), ("ce", "free")]


def _check_state(eq, want, where):
    """collapsed == want, and the state's sigma, fn*, sigma_local say the same."""
    coll = np.asarray(eq.collapsed)
    bad = coll != want
    assert not bad.any(), f"{where}: {int(bad.sum())} of {bad.size} disagree with lambda < " \
                          f"lambda_crit, first K={KK[bad][0]:g} n={NN[bad][0]:g}"
    sig, fn, loc = (np.asarray(v) for v in (eq.sigma, eq.fn_star, eq.sigma_local))
    np.testing.assert_array_equal(sig > 0, want, err_msg=where)
    np.testing.assert_array_equal(fn > 0, want, err_msg=where)
    np.testing.assert_array_equal(sig[~want], 0.0, err_msg=where)
    np.testing.assert_array_equal(fn[~want], 0.0, err_msg=where)
    np.testing.assert_array_equal(loc[want], sig[want], err_msg=where)
    assert np.isnan(loc[~want]).all(), where


# ============================================================== findings


@pytest.mark.parametrize("loss, bias", _models_one_layer())
def test_finding_one_layer_collapse_is_lambda_below_lambda_crit_to_the_last_ulp(loss, bias):
    """899 (K, n), -3 .. +3 ulps of lambda_crit: collapsed iff lambda < lambda_crit, with
    sigma > 0 and fn* > 0 there. Before: MSE K = 2, n = 3 (CE K = 3, n = 5) one ulp below had
    sigma = 0, collapsed False."""
    lc = critical.lambda_crit(loss, bias, KK, NN, 1)
    for k in ULPS:
        lam = _ulps(lc, k)
        eq = equilibrium(loss, bias, KK, NN, lam, lam, LAMBDA_B if bias == "reg" else 0.0)
        _check_state(eq, lam < lc, f"{loss} {bias} {k:+d} ulps")
        assert (lam < lc).all() if k < 0 else not (lam < lc).any()


@pytest.mark.parametrize("loss, K, n", [("mse", 2, 3), ("mse", 31, 18), ("ce", 3, 5),
                                        ("ce", 3, 12345)])
def test_finding_examples_one_to_three_ulps_below_are_collapsed(loss, K, n):
    """The scan's examples: collapsed with sigma > 0 one, two and three ulps below; the
    sigma is the closed form's at those inputs within the bound of the accuracy tests."""
    lc = float(critical.lambda_crit(loss, "none", K, n, 1))
    for k in (-1, -2, -3):
        lam = float(_ulps(lc, k))
        eq = equilibrium(loss, "none", K, n, lam, lam)
        assert bool(eq.collapsed) and float(eq.sigma) > 0 and float(eq.fn_star) > 0, k
        ref, dref = _ref_sigma(loss, K, n, lam, lam)
        assert abs(float(eq.sigma) - ref) <= 4 * EPS * (abs(ref) + dref), k
        row = classify(loss, "none", K, n, 2 * K, 1, lam, lam, 0.0, 0.1)
        assert row["phase"] == "collapse" and row["collapsed_global"] is True, k


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9, 1e-9])
def test_finding_mse_mode_with_a_data_weight_lives_iff_lambda_below_c_over_k_sqrt_n(c):
    """modes.mse_mode at data weight c (the mean mode of a regularised bias has c = lambda_b
    / (1 + lambda_b)), -3 .. +3 ulps of c / (K sqrt n): collapsed iff Lambda below it, sigma
    > 0 there and within 4 eps (|sigma| + N Lambda / c) of sqrt(n) - N Lambda / c. Before:
    sigma rounded to 0 up to three ulps below."""
    K, n = KK[::7], NN[::7]
    cc = np.full_like(K, c)
    lc = cc / (K * np.sqrt(n))
    with mp.workdps(50):
        for k in ULPS:
            lam = _ulps(lc, k)
            sol = modes.mse_mode(K, n, lam, 2, cc)
            np.testing.assert_array_equal(sol.collapsed, lam < lc, err_msg=f"{k:+d}")
            np.testing.assert_array_equal(sol.sigma > 0, lam < lc)
            for Ki, ni, li, si in zip(K, n, lam, sol.sigma, strict=True):
                drop = Ki * ni * mp.mpf(li) / mp.mpf(c)
                ref = mp.sqrt(ni) - drop
                if si > 0:
                    assert abs(si - ref) <= 4 * EPS * (abs(ref) + drop), (Ki, ni, k)


def test_one_layer_collapse_with_torch_inputs():
    """The same rule with torch tensors (the modes evaluate through torch), against
    lambda_crit evaluated in torch: torch's float64 sqrt is not always correctly rounded
    (torch 2.13 CPU: 28 of 350 sqrt(n) one ulp off numpy's), so the torch threshold can be an
    ulp from the numpy one; each is consistent with itself."""
    tK, tN = torch.tensor(KK), torch.tensor(NN)
    for loss in ("mse", "ce"):
        lc = critical.lambda_crit(loss, "none", tK, tN, 1).numpy()
        for k in (-1, 0):
            lam = _ulps(lc, k)
            eq = equilibrium(loss, "none", tK, tN, torch.tensor(lam), torch.tensor(lam))
            np.testing.assert_array_equal(eq.collapsed.numpy(), lam < lc)
            np.testing.assert_array_equal(eq.sigma.numpy() > 0, lam < lc)


@pytest.mark.parametrize("loss, K, n", [("mse", 50, 7), ("ce", 10, 3)])
def test_finding_imbalanced_balanced_counts_tie_goes_to_the_origin(loss, K, n):
    """lambda = lambda_crit exactly, counts [n] * K: not collapsed, as the balanced
    equilibrium. Before: collapsed (MSE: sqrt(n) - N Lambda rounded above 0; CE: Lambda =
    sqrt(l) sqrt(l) one ulp below l)."""
    lc = float(critical.lambda_crit(loss, "none", K, n, 1))
    eq = imbalanced_equilibrium(loss, "none", [n] * K, lc, lc)
    assert eq.collapsed is False and eq.fn_star == 0.0
    assert not bool(equilibrium(loss, "none", K, n, lc, lc).collapsed)


def test_finding_geometric_mean_of_decays_far_apart():
    """lambda_W = 1e300, lambda_H = 1e-300: Lambda = 1 (> lambda_crit = 0.289 for K = 2,
    n = 3), not collapsed; the reverse order likewise; 1e-300 with 1e290 gives Lambda = 1e-5,
    collapsed with sigma = sqrt(3) - 6e-5. Before: the ratio 1e-600 underflowed, Lambda = 0,
    collapsed with sigma = sqrt(3), fn* = 1."""
    for lw, lh in ((1e300, 1e-300), (1e-300, 1e300)):
        assert float(geometric_mean(np, [np.asarray(lw), np.asarray(lh)])) == \
            pytest.approx(1.0, rel=4 * EPS)
        for loss in ("mse", "ce"):
            eq = equilibrium(loss, "none", 2, 3, lw, lh)
            assert not bool(eq.collapsed) and float(eq.fn_star) == 0.0
            assert imbalanced_equilibrium(loss, "none", [3, 3], lw, lh).collapsed is False
    lw, lh = 1e-300, 1e290
    eq = equilibrium("mse", "none", 2, 3, lw, lh)
    ref, dref = _ref_sigma("mse", 2, 3, lw, lh)
    assert abs(float(eq.sigma) - ref) <= 4 * EPS * (abs(ref) + dref)
    assert float(eq.sigma) == pytest.approx(math.sqrt(3) - 6e-5, rel=1e-14)
    # a wide deep set: 3 factors (1e308, 1e300, 1e-300) have geometric mean 4.64e102 (to
    # 1e-13: the exponent 1/3 is rounded, by 1.9e-17, which moves v^(1/3) by 1.9e-17 |ln v|,
    # 1.3e-14 at v = 1e308, as in the ratio form)
    three = geometric_mean(np, [np.asarray(1e308), np.asarray(1e300), np.asarray(1e-300)])
    assert float(three) == pytest.approx(float(mp.cbrt(mp.mpf(1e308) * mp.mpf(1e300)
                                                        * mp.mpf(1e-300))), rel=1e-13)


def test_finding_imbalanced_norms_of_decays_far_apart():
    """Balanced counts [3, 3], MSE without bias: the norms equal the balanced equilibrium's
    (to 1e-14, no warning) for decays ~1e300 apart, also where the state is the origin.
    Before: (lambda_W / lambda_H)^(1/4) overflowed or underflowed: 1e300, 1e-300 gave fn* =
    h_norm = NaN; 1e-300, 1e290 gave fn* 0 (should be 2.40e-148) and w_norm NaN."""
    for lw, lh in ((1e300, 1e-300), (1e-300, 1e290), (1e290, 1e-300), (1e-5, 1e5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            imb = imbalanced_equilibrium("mse", "none", [3, 3], lw, lh)
            bal = equilibrium("mse", "none", 2, 3, lw, lh)
        assert imb.collapsed is bool(bal.collapsed)
        for got, want in ((imb.fn_star, bal.fn_star), (imb.w_norm_fro, bal.factor_norms["W1"]),
                          (imb.h_norm_fro, bal.factor_norms["H"])):
            assert got == pytest.approx(float(want), rel=1e-14, abs=0), (lw, lh)
    assert imbalanced_equilibrium("mse", "none", [3, 3], 1e-300, 1e290).fn_star == \
        pytest.approx(2.4027697958598235e-148, rel=1e-14)


# ============================================================== deep


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_deep_mse_collapse_is_lambda_below_lambda_crit(depth):
    """Deep MSE, 899 (K, n), -3 .. +3 ulps of Lambda_crit (the jump form): collapsed iff
    Lambda < Lambda_crit, sigma > 0 and fn* > 0 iff collapsed; a state (sigma_local) on
    both sides (the metastable one above)."""
    lc = critical.lambda_crit("mse", "none", KK, NN, depth)
    for k in ULPS:
        lam = _ulps(lc, k)
        eq = equilibrium("mse", "none", KK, NN, lam, lam, 0.0, depth)
        want = lam < lc
        np.testing.assert_array_equal(np.asarray(eq.collapsed), want, err_msg=f"{k:+d}")
        np.testing.assert_array_equal(np.asarray(eq.sigma) > 0, want)
        np.testing.assert_array_equal(np.asarray(eq.fn_star) > 0, want)
        assert (np.asarray(eq.sigma_local) > 0).all()


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_ce_tie_window(depth):
    """Deep CE: Lambda_crit is a bisected root of the objective gap, and a gap within
    modes.CE_TIE counts as a tie: not collapsed at and above Lambda_crit and 1 .. 3 ulps
    below, collapsed at (1 - 1e-12) Lambda_crit; sigma > 0 iff collapsed."""
    K = np.array([2.0, 3.0, 5.0, 10.0, 50.0, 1000.0])[:, None] + 0 * np.array(N_FEW)[None, :]
    n = np.array(N_FEW, dtype=float)[None, :] + 0 * K
    K, n = K.ravel(), n.ravel()
    lc = critical.lambda_crit("ce", "none", K, n, depth)
    for k in ULPS:
        lam = _ulps(lc, k)
        eq = equilibrium("ce", "none", K, n, lam, lam, 0.0, depth)
        assert not np.asarray(eq.collapsed).any(), k
        np.testing.assert_array_equal(np.asarray(eq.sigma), 0.0)
    lam = lc * (1 - 1e-12)
    eq = equilibrium("ce", "none", K, n, lam, lam, 0.0, depth)
    assert np.asarray(eq.collapsed).all() and (np.asarray(eq.sigma) > 0).all()


# ============================================================== phase.classify


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_classify_one_layer_agrees_with_lambda_crit(loss):
    """One layer, 56 (K, n), -3 .. +3 ulps: "collapse" iff collapsed_global iff lambda <
    lambda_crit, else "vanishing"; fn_star > 0 iff collapsed."""
    for K in K_FEW:
        for n in N_FEW:
            lc = float(critical.lambda_crit(loss, "none", K, n, 1))
            for k in ULPS:
                lam = float(_ulps(lc, k))
                row = classify(loss, "none", K, n, 2 * K, 1, lam, lam, 0.0, 0.1)
                below = lam < lc
                assert row["collapsed_global"] is below, (K, n, k)
                assert row["phase"] == ("collapse" if below else "vanishing"), (K, n, k)
                assert (row["fn_star"] > 0) is below, (K, n, k)


# ============================================================== imbalanced, balanced counts


@pytest.mark.parametrize("bias", ["none", "free"])
def test_imbalanced_mse_closed_forms_match_the_balanced_equilibrium(bias):
    """MSE closed forms, counts [n] * K, -3 .. +3 ulps of lambda_crit: collapsed equals the
    balanced equilibrium's (and lambda < lambda_crit); the K (none) or K - 1 (free) singular
    values equal sigma, and fn* the balanced fn*, to 1e-13."""
    for K in (2, 3, 5, 10, 50, 200):
        for n in N_FEW:
            lc = float(critical.lambda_crit("mse", bias, K, n, 1))
            for k in ULPS:
                lam = float(_ulps(lc, k))
                imb = imbalanced_equilibrium("mse", bias, [n] * K, lam, lam)
                bal = equilibrium("mse", bias, K, n, lam, lam)
                assert imb.collapsed is bool(bal.collapsed) is (lam < lc), (K, n, k)
                sv = imb.singular_values[:K if bias == "none" else K - 1]
                np.testing.assert_allclose(sv, float(bal.sigma), rtol=1e-13, atol=0)
                assert imb.fn_star == pytest.approx(float(bal.fn_star), rel=1e-13, abs=0)
    # K = 1000 (one SVD of 1000 x 1000 per call): the tie and one ulp below
    K, n = 1000, 7
    lc = float(critical.lambda_crit("mse", bias, K, n, 1))
    for k in (-1, 0):
        lam = float(_ulps(lc, k))
        imb = imbalanced_equilibrium("mse", bias, [n] * K, lam, lam)
        assert imb.collapsed is (k < 0) is bool(equilibrium("mse", bias, K, n, lam, lam).collapsed)


@pytest.mark.parametrize("loss, bias", [("ce", "none"), ("ce", "free"), ("ce", "reg"),
                                        ("mse", "reg")])
def test_imbalanced_numeric_cases_match_the_balanced_equilibrium(loss, bias):
    """Numeric cases, counts [n] * K (K = 2, 3, 10; n = 1, 5, 13), -3 .. +3 ulps: collapsed
    equals the balanced equilibrium's and lambda < lambda_crit (the certified solution is
    found below it)."""
    lb = 0.3 if bias == "reg" else 0.0
    for K in (2, 3, 10):
        for n in (1, 5, 13):
            lc = float(critical.lambda_crit(loss, bias, K, n, 1))
            for k in ULPS:
                lam = float(_ulps(lc, k))
                imb = imbalanced_equilibrium(loss, bias, [n] * K, lam, lam, lb)
                bal = equilibrium(loss, bias, K, n, lam, lam, lb)
                assert imb.collapsed is bool(bal.collapsed) is (lam < lc), (K, n, k)


@pytest.mark.parametrize("ratio", [1e-3, 4.0, 1e6])
def test_unequal_decays_decide_by_the_geometric_mean(ratio):
    """lambda_W = lambda_crit(ratio=r) +- 3 ulps, lambda_H = r lambda_W: equilibrium and
    imbalanced_equilibrium (balanced counts, MSE none / free and CE none) agree, and both
    are collapsed iff the geometric mean Lambda < Lambda_crit."""
    for loss, bias in (("mse", "none"), ("mse", "free"), ("ce", "none")):
        for K in (2, 3, 10, 50):
            for n in (1, 3, 7, 1000):
                lwc = float(critical.lambda_crit(loss, bias, K, n, 1, ratio))
                Lc = float(critical.Lambda_crit(loss, K, n, 1))
                for k in ULPS:
                    lw = float(_ulps(lwc, k))
                    lh = ratio * lw
                    Lam = float(geometric_mean(np, [np.asarray(lw), np.asarray(lh)]))
                    bal = bool(equilibrium(loss, bias, K, n, lw, lh).collapsed)
                    imb = imbalanced_equilibrium(loss, bias, [n] * K, lw, lh).collapsed
                    assert imb is bal is (Lam < Lc), (loss, bias, K, n, k)


# ============================================================== accuracy against mpmath


def _ref_sigma(loss, K, n, lw, lh):
    """(sigma, |Lambda dsigma/dLambda|) of the one-layer closed form at the float inputs, 50
    digits (sigma may be <= 0 where the float threshold lies beyond the real one)."""
    with mp.workdps(50):
        lam = mp.sqrt(mp.mpf(lw) * mp.mpf(lh))
        s = mp.sqrt(n)
        if loss == "mse":
            return s - K * n * lam, K * n * lam
        return s * mp.log(1 / (lam * s) - K + 1), s / (1 - (K - 1) * s * lam)


def _near(lc):
    """Decays near (and below) the threshold lc: 1 .. 3 ulps below, 1 - 1e-12 .. 1 - 1e-1,
    and 0.5, 1e-3, 1e-9 times."""
    return ([float(_ulps(lc, -k)) for k in (1, 2, 3)]
            + [lc * (1 - 10.0 ** -j) for j in (12, 8, 4, 1)] + [lc * f for f in (0.5, 1e-3, 1e-9)])


@pytest.mark.mpmath_digits(50)
@pytest.mark.parametrize("loss, bias", [("mse", "none"), ("mse", "free"), ("ce", "none")])
def test_one_layer_sigma_and_fn_accuracy_near_the_boundary(loss, bias):
    """sigma within 4 eps (|sigma| + |Lambda sigma'|); fn* within 4 eps fn* (1 + kappa / 2)
    where the reference sigma is > 0, and fn*^2 within 8 eps F (|sigma| + |Lambda sigma'|)
    everywhere (F = fn*^2 / sigma of theory.md); lambda_H / lambda_W = 1, 1e-3, 4."""
    worst = [0.0, 0.0, 0.0]
    for ratio in (1.0, 1e-3, 4.0):
        for K in K_FEW:
            for n in N_FEW:
                lc = float(critical.lambda_crit(loss, bias, K, n, 1, ratio))
                for lw in _near(lc):
                    lh = ratio * lw
                    eq = equilibrium(loss, bias, K, n, lw, lh)
                    ref, dref = _ref_sigma(loss, K, n, lw, lh)
                    frac = 1 if (loss, bias) == ("mse", "none") else mp.mpf(K - 1) / K
                    F = frac * mp.sqrt(mp.mpf(lw) / mp.mpf(lh)) / n
                    sig, fn = float(eq.sigma), float(eq.fn_star)
                    errs = [abs(sig - ref) / (4 * EPS * (abs(ref) + dref)),
                            abs(fn * fn - F * ref) / (8 * EPS * F * (abs(ref) + dref)), 0.0]
                    if ref > 0:
                        fr = mp.sqrt(F * ref)
                        errs[2] = abs(fn - fr) / (4 * EPS * fr * (1 + dref / ref / 2))
                    worst = [max(w, float(e)) for w, e in zip(worst, errs, strict=True)]
                    assert max(errs) <= 1, (K, n, ratio, lw / lc, errs)
    assert max(worst) > 0.05  # the bound is not vacuous: the worst point uses ~0.4 of it


@pytest.mark.mpmath_digits(50)
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_deep_mse_sigma_and_fn_accuracy_near_the_boundary(depth):
    """Deep MSE, equal decays just below Lambda_crit: sigma (upper root of (sqrt(n) - sigma)
    sigma^q = N Lambda, q = 1 - 2/M, mpmath findroot) within 2M eps sigma (1 + kappa), fn* =
    sigma^(1 - 1/M) / sqrt(n) within 2M eps fn* (1 + (1 - 1/M) kappa)."""
    M = depth + 1
    q = mp.mpf(1) - mp.mpf(2) / M
    for K in K_FEW:
        for n in N_FEW:
            lc = float(critical.lambda_crit("mse", "none", K, n, depth))
            for lam in _near(lc)[:8]:
                eq = equilibrium("mse", "none", K, n, lam, lam, 0.0, depth)
                s, N, L = mp.sqrt(n), K * n, mp.mpf(lam)
                ref = mp.findroot(lambda x, s=s, N=N, L=L: (s - x) * x ** q - N * L,
                                  mp.mpf(float(eq.sigma)))
                # the upper (stable) root lies above the maximiser q s / (1 + q)
                assert ref > q * s / (1 + q)
                kappa = (s - ref) / abs(q * s - (1 + q) * ref)
                assert abs(float(eq.sigma) - ref) <= 2 * M * EPS * ref * (1 + kappa), (K, n)
                fr = ref ** (1 - mp.mpf(1) / M) / s
                bound = 2 * M * EPS * fr * (1 + (1 - mp.mpf(1) / M) * kappa)
                assert abs(float(eq.fn_star) - fr) <= bound, (K, n)
