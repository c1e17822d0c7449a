"""Mutation probe (second pass) of ncsim.theory.imbalance: hand KKT residuals, the kkt_tol and
objective guards, the restart loop (seeds, keeping the best candidate), the proximal polish,
balanced reduction with a bias, perturbation optimality and a long d-space simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncsim.flow import simulate
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import equilibrium
from ncsim.theory import imbalance as im
from ncsim.theory.critical import Lambda_crit
from ncsim.theory.imbalance import imbalanced_equilibrium, kkt_residual


def _X_of(eq, counts) -> np.ndarray:
    """The scaled class logits X (column k times sqrt(n_k)) of an equilibrium."""
    return (eq.logits - eq.bias[:, None]) * np.sqrt(np.asarray(counts, dtype=float))[None, :]


# ------------------------------------------------------------------------------- KKT by hand

def test_kkt_residual_at_the_origin_is_gradient_norm_over_lambda_minus_one():
    """MSE no bias, counts (1, 2, 4), N = 7: G(0) = -diag(sqrt n)/7, |G|_2 = 2/7; with
    Lambda = 0.2/7 the origin's residual is (2/7 - Lambda)/Lambda = 9 exactly."""
    cnt = np.array([1.0, 2.0, 4.0])
    got = kkt_residual("mse", cnt, 0.2 / 7, 0.0, np.zeros((3, 3)), np.zeros(3), "none")
    assert got == pytest.approx(9.0, rel=1e-12)


def test_kkt_residual_off_support_part_by_hand():
    """MSE no bias, counts (1, 2, 4), Lambda = 1.2/7, X = diag(0, 0, 0.8): the support condition
    holds exactly, the off-support gradient diag(-1, -sqrt 2)/7 has norm sqrt(2)/7 > Lambda,
    so the residual is (sqrt 2 - 1.2)/1.2; the true minimiser diag(0, sqrt 2 - 1.2, 0.8) has 0."""
    cnt = np.array([1.0, 2.0, 4.0])
    lam = 1.2 / 7
    got = kkt_residual("mse", cnt, lam, 0.0, np.diag([0.0, 0.0, 0.8]), np.zeros(3), "none")
    assert got == pytest.approx((math.sqrt(2) - 1.2) / 1.2, rel=1e-10)
    best = np.diag([0.0, math.sqrt(2) - 1.2, 0.8])
    assert kkt_residual("mse", cnt, lam, 0.0, best, np.zeros(3), "none") < 1e-13


# ------------------------------------------------------------------------------- guards

def test_kkt_tol_zero_accepts_an_exactly_certified_origin():
    """CE no bias, counts (3, 1), decays 1 (far above the threshold): the origin's residual is
    exactly 0, so kkt_tol = 0 is met (residual <= tol, not <) and no error is raised."""
    eq = imbalanced_equilibrium("ce", "none", [3, 1], 1.0, 1.0, kkt_tol=0.0)
    assert eq.kkt_residual == 0.0
    assert not eq.collapsed and eq.fn_star == 0.0
    assert eq.objective_star == pytest.approx(math.log(2), rel=1e-14)


def test_a_certified_point_worse_than_the_origin_is_refused(monkeypatch):
    """Even with a zero KKT residual, a numeric solution whose objective exceeds f(0) raises
    ArithmeticError (CE no bias, counts (1, 2, 4), below the threshold; the solver is replaced
    by one returning X = 100 I, f ~ 4.2, and the certificate by 0)."""
    monkeypatch.setattr(im, "_numeric", lambda *a: (100 * np.eye(3), np.zeros(3)))
    monkeypatch.setattr(im, "_polish", lambda loss, bias, cnt, Lam, lb, X, b: (X, b))
    monkeypatch.setattr(im, "kkt_residual", lambda *a: 0.0)
    with pytest.raises(ArithmeticError, match=r"^imbalanced ce minimiser not certified: KKT "
                                              r"residual 0\.00e\+00 \(tol 1e-06\), f = .* vs "
                                              r"origin 1\.09861228867"):
        imbalanced_equilibrium("ce", "none", (1, 2, 4), 0.01, 0.02)


def test_restarts_use_successive_seeds_and_keep_the_best_candidate(monkeypatch):
    """Restart k uses seed + k; a bad first candidate is replaced by a certified later one. The
    fake solver returns a poor point for seed 5 and the true minimiser for seed 6 (polish off):
    the result is the minimiser, found at the second restart."""
    counts, lw, lh, lb = (1, 2, 4), 0.01, 0.01, 1.0
    good = imbalanced_equilibrium("ce", "reg", counts, lw, lh, lb)
    Xg, bg = _X_of(good, counts), good.bias.copy()
    seeds = []

    def fake(loss, bias, cnt, Lam, lb_, restarts, seed):
        seeds.append(seed)
        return (Xg, bg) if seed == 6 else (0.5 * Xg, bg + 0.1)

    monkeypatch.setattr(im, "_numeric", fake)
    monkeypatch.setattr(im, "_polish", lambda loss, bias, cnt, Lam, lb_, X, b: (X, b))
    eq = imbalanced_equilibrium("ce", "reg", counts, lw, lh, lb, seed=5, restarts=3)
    assert seeds == [5, 6]
    assert eq.kkt_residual <= 1e-6 and eq.collapsed
    np.testing.assert_allclose(eq.logits, good.logits, rtol=1e-14, atol=1e-14)


def test_polish_improves_the_residual_within_one_hundred_steps():
    """The proximal polish checks its residual every 50 steps: from the L-BFGS point of CE with
    a free bias, counts (2, 3, 5), 100 steps give a strictly smaller residual (about 0.75x)."""
    cnt = np.array([2.0, 3.0, 5.0])
    lam = math.sqrt(0.005 * 0.01)
    X0, b0 = im._numeric("ce", "free", cnt, lam, 0.0, 1, 0)
    k0 = kkt_residual("ce", cnt, lam, 0.0, X0, b0, "free")
    X, b = im._polish("ce", "free", cnt, lam, 0.0, X0, b0, iters=100)
    assert kkt_residual("ce", cnt, lam, 0.0, X, b, "free") < 0.9 * k0


# ------------------------------------------------------------------------------- references

@pytest.mark.parametrize(("loss", "bias", "lb"), [("mse", "reg", 0.5), ("ce", "free", 0.0),
                                                  ("ce", "reg", 0.3)])
def test_equal_counts_reduce_to_the_balanced_equilibrium_with_a_bias(loss, bias, lb):
    """Counts (3, 3, 3): fn*, |w_k|, the bias (CE free: the zero-sum one), the loss and f
    match the balanced closed forms of ncsim.theory.equilibrium (the older test has no bias)."""
    lw, lh = 0.01, 0.02
    eq = imbalanced_equilibrium(loss, bias, (3, 3, 3), lw, lh, lb)
    bal = equilibrium(loss, bias, 3, 3, lw, lh, lb)
    np.testing.assert_allclose(eq.fn_star, float(bal.fn_star), rtol=1e-7)
    np.testing.assert_allclose(eq.w_row_norms, float(bal.w_norm_star), rtol=1e-7)
    # CE with a free bias: the zero-sum representative of b + c 1, the balanced form's 0
    np.testing.assert_allclose(eq.bias, float(bal.bias_star), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(eq.loss_star, float(bal.loss_star), rtol=1e-9)
    np.testing.assert_allclose(eq.objective_star, float(bal.objective_star), rtol=1e-10)
    np.testing.assert_allclose(eq.objective_zero, float(bal.objective_zero), rtol=1e-12)


@pytest.mark.parametrize("bias", ["none", "free"])
def test_equal_counts_mse_threshold_is_the_balanced_critical_decay(bias):
    """Counts (4, 4, 4): the largest label singular value over N is 1/(K sqrt n) =
    Lambda_crit; just below it the minimiser is collapsed, just above it is the origin."""
    s = im.label_singular_values(bias, (4, 4, 4))
    lc = float(Lambda_crit("mse", 3, 4))
    assert s[0] / 12 == pytest.approx(lc, rel=1e-14)
    assert imbalanced_equilibrium("mse", bias, (4, 4, 4), lc * 0.999, lc * 0.999).collapsed
    assert not imbalanced_equilibrium("mse", bias, (4, 4, 4), lc * 1.001, lc * 1.001).collapsed


def _full_objective(loss, counts, lw, lh, lb, W, H, b):
    """f(W, H, b) on the sample level, written out from the module docstring."""
    K = len(counts)
    y = np.repeat(np.arange(K), counts)
    Z = W @ H + b[:, None]
    if loss == "mse":
        data = 0.5 * np.mean(np.sum((Z - np.eye(K)[:, y]) ** 2, axis=0))
    else:
        m = Z.max(axis=0)
        lse = m + np.log(np.exp(Z - m).sum(axis=0))
        data = np.mean(lse - Z[y, np.arange(y.size)])
    return data + lw / 2 * np.sum(W ** 2) + lh / 2 * np.sum(H ** 2) + lb / 2 * float(b @ b)


@pytest.mark.parametrize(("loss", "bias", "counts", "lb"), [
    ("mse", "none", (1, 3, 6), 0.0), ("mse", "free", (2, 3, 5), 0.0),
    ("mse", "reg", (1, 2, 4), 0.5), ("ce", "none", (1, 2, 4), 0.0),
    ("ce", "free", (2, 5), 0.0), ("ce", "reg", (1, 2, 4), 1.0)])
def test_equilibrium_beats_random_perturbations_of_w_h_b(loss, bias, counts, lb):
    """W = (lh/lw)^(1/4) U S^(1/2), H = class means repeated: f(W, H, b) equals objective_star
    (1e-12) and random perturbations of size 1e-3 in W, H (and b when trained) never lower it."""
    lw, lh = 0.01, 0.02
    eq = imbalanced_equilibrium(loss, bias, counts, lw, lh, lb)
    X = _X_of(eq, counts)
    U, S, _ = np.linalg.svd(X)
    W = (lh / lw) ** 0.25 * U * np.sqrt(S)[None, :]
    H = np.repeat(eq.class_means, counts, axis=1)
    np.testing.assert_allclose(np.linalg.norm(W), eq.w_norm_fro, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(H), eq.h_norm_fro, rtol=1e-12)
    np.testing.assert_allclose(W @ eq.class_means + eq.bias[:, None], eq.logits, atol=1e-12)
    lbb = lb if bias == "reg" else 0.0
    f0 = _full_objective(loss, counts, lw, lh, lbb, W, H, eq.bias)
    np.testing.assert_allclose(f0, eq.objective_star, rtol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(20):
        dW, dH = rng.normal(size=W.shape), rng.normal(size=H.shape)
        db = rng.normal(size=len(counts)) if bias != "none" else 0.0
        f = _full_objective(loss, counts, lw, lh, lbb, W + 1e-3 * dW, H + 1e-3 * dH,
                            eq.bias + 1e-3 * db)
        assert f >= f0 - 1e-13


def test_long_simulation_with_a_regularised_bias_lands_on_the_equilibrium():
    """d-space UFM with counts (2, 3, 5), d = 5, float64, rtol 1e-11, t_end 4000, bias "reg"
    (MSE and CE): final fn, |W|_F, loss and objective equal the certified numeric minimiser
    to 1e-6 relative (the older test covers bias none / free only)."""
    counts, lw, lh, lb = (2, 3, 5), 0.02, 0.02, 0.5
    specs = [RunSpec(model=ModelSpec(loss=loss, bias="reg", classes=3, per_class=counts, dim=5),
                     reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                     init=InitSpec(scale=0.3, seed=2),
                     solver=SolverSpec(t_end=4000, rtol=1e-11, atol=1e-13, gtol=0, records=30))
             for loss in ("mse", "ce")]
    runs = simulate(specs).runs
    for spec, (_, row) in zip(specs, runs.iterrows(), strict=True):
        eq = imbalanced_equilibrium(spec.model.loss, "reg", counts, lw, lh, lb)
        assert row["status"] == "ok"
        for sim, want in ((row["final_fn"], eq.fn_star), (row["final_w_norm"], eq.w_norm_fro),
                          (row["final_loss"], eq.loss_star),
                          (row["final_objective"], eq.objective_star)):
            np.testing.assert_allclose(sim, want, rtol=1e-6)


def test_ce_free_bias_is_the_zero_sum_bias_a_flow_from_zero_keeps():
    """CE with a free bias is blind to b + c 1: the reported bias sums to 0 (to rounding) at
    counts (2, 3, 5) above and below the threshold, and equals the final bias of a d-space flow
    from b = 0 (whose velocity sums to 0) to 1e-5; the shift leaves the KKT residual and the
    objective unchanged."""
    counts, lw, lh = (2, 3, 5), 0.02, 0.02
    for scale in (1.0, 40.0):  # collapsed, then the origin (certified)
        eq = imbalanced_equilibrium("ce", "free", counts, lw * scale, lh * scale)
        assert abs(eq.bias.sum()) <= 1e-12 * max(1.0, np.abs(eq.bias).max())
        assert eq.collapsed == (scale == 1.0)
        shifted = eq.bias + 0.7
        X = _X_of(eq, counts)
        Lam = math.sqrt(lw * lh) * scale
        cnt = np.asarray(counts, dtype=float)
        assert im.kkt_residual("ce", cnt, Lam, 0.0, X, shifted, "free") == pytest.approx(
            im.kkt_residual("ce", cnt, Lam, 0.0, X, eq.bias, "free"), rel=1e-9, abs=1e-12)
    spec = RunSpec(model=ModelSpec(loss="ce", bias="free", classes=3, per_class=counts, dim=5),
                   reg=Regularization(lambda_w=lw, lambda_h=lh), init=InitSpec(scale=0.3, seed=2),
                   solver=SolverSpec(t_end=4000, rtol=1e-11, atol=1e-13, gtol=0, records=30))
    result = simulate([spec])
    b_sim = result.final_state(result.runs["run_id"].iloc[0])["b"]
    eq = imbalanced_equilibrium("ce", "free", counts, lw, lh)
    np.testing.assert_allclose(b_sim, eq.bias, atol=1e-5)
