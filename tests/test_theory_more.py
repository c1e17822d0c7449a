"""Regularised-bias mean mode, deep CE on the ETF ray and the derivations table.

References are independent of the package: closed forms of reference/theory.md written out by
hand, scipy minimisation / root finding of the scalar objectives, and relations between
functions (a threshold and the solver it is a threshold of).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.optimize import brentq, minimize, minimize_scalar

from ncsim.errors import InputError
from ncsim.flow.simulate import simulate
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import critical, deep, equilibrium, lambda_b_crit_mean_mode, modes, ufm
from ncsim.theory import symbols as S
from ncsim.theory.derivations import derivations


def close(a, b, tol=1e-12, atol=1e-14):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=tol, atol=atol)


def _by_name(expr: sp.Expr, name: str) -> sp.Symbol:
    (sym,) = [v for v in expr.free_symbols if v.name == name]
    return sym


# ---------------------------------------------------------------------------------------------
# MSE with a regularised bias: the mean label mode (one layer)

RB_POINTS = [  # K, n, lambda_b, m = s - sigma_0
    (3, 2, 0.5, 1.3),
    (4, 5, 2.0, 0.7),
    (10, 3, 0.01, 1.7),
    (2, 7, 40.0, 2.5),
]


@pytest.mark.parametrize("K,n,lb,m", RB_POINTS)
def test_reg_bias_elimination_matches_numeric_minimum(K, n, lb, m):
    """Eliminating the bias from (1/2N)(beta sqrt(N) - m)^2 + lambda_b/2 beta^2: the optimal
    beta (scipy), the bias entry beta/sqrt(K), the reduced value and the data weight
    lambda_b/(1 + lambda_b) all match the sympy expressions."""
    rb = ufm.derive_reg_bias_mean_mode()
    N = K * n
    m_sym = _by_name(rb["bias_norm"], "m")
    args = [m_sym, S.K, S.n, S.lam_b]

    def ev(key):
        return float(sp.lambdify(args, rb[key], "numpy")(m, K, n, lb))

    def data(beta):
        return (beta * np.sqrt(N) - m) ** 2 / (2 * N) + lb / 2 * beta ** 2

    def grad(beta):
        return (beta * np.sqrt(N) - m) / np.sqrt(N) + lb * beta

    beta_root = brentq(grad, 0.0, m * np.sqrt(N), xtol=1e-300, rtol=1e-15)
    numeric = minimize_scalar(data, bracket=(0.0, m / np.sqrt(N)), tol=1e-12)
    assert numeric.success
    close(ev("bias_norm"), beta_root)
    close(ev("bias_norm"), numeric.x, tol=1e-7)
    close(ev("bias_entry"), beta_root / np.sqrt(K))
    close(ev("reduced"), numeric.fun)
    close(ev("reduced"), data(beta_root))
    weight = float(sp.lambdify([S.lam_b], rb["mean_mode_weight"])(lb))
    close(weight, lb / (1 + lb))
    close(weight, numeric.fun / (m ** 2 / (2 * N)))
    assert rb["mean_mode_weight"].free_symbols == {S.lam_b}


@pytest.mark.parametrize("lb", [0.05, 0.3, 2.0, 50.0])
def test_reg_bias_entry_matches_theory_md(lb):
    """With m = sqrt(n) - sigma_0 at the equilibrium, the bias entry of the derivation is
    theory.md's b* = (1 - alpha_0)/(K (1 + lambda_b)), alpha_0 = (1 - K r (1+lb)/lb)_+, and it
    equals the one of ``equilibrium``."""
    K, n, lw, lh = 4, 5, 0.01, 0.02
    r = np.sqrt(n * lw * lh)
    alpha0 = max(1 - K * r * (1 + lb) / lb, 0.0)
    d = derivations("mse", 1, "reg")
    entry = d["bias_entry"]
    f = sp.lambdify([_by_name(entry, "m"), S.K, S.n, S.lam_b], entry)
    e = equilibrium("mse", "reg", K, n, lw, lh, lb)
    close(e.sigma_mean, np.sqrt(n) * alpha0)
    got = f(np.sqrt(n) - float(e.sigma_mean), K, n, lb)
    close(got, (1 - alpha0) / (K * (1 + lb)))
    close(got, e.bias_star)


CRIT_POINTS = [(3, 2, 0.02, 0.03), (4, 5, 0.01, 0.02), (10, 20, 1e-4, 3e-4), (2, 1, 0.2, 0.7)]


@pytest.mark.parametrize("K,n,lw,lh", CRIT_POINTS)
def test_lambda_b_crit_is_the_mean_mode_boundary(K, n, lw, lh):
    """At the returned lambda_b, lambda_b/(1 + lambda_b) = K r exactly (r = sqrt(n lw lh)),
    and it is q/(1 - q) with q = K r."""
    q = K * np.sqrt(n * lw * lh)
    lbc = float(lambda_b_crit_mean_mode(K, n, lw, lh))
    close(lbc / (1 + lbc), q, tol=1e-14)
    close(lbc, q / (1 - q), tol=1e-14)


@pytest.mark.parametrize("K,n,lw,lh", CRIT_POINTS[:3])
@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_lambda_b_crit_against_joint_minimisation(K, n, lw, lh, factor):
    """Joint numeric minimisation over (sigma_0 >= 0, beta) of the mean-mode objective
    (1/2N)(sigma_0 + beta sqrt(N) - s)^2 + lambda_b/2 beta^2 + sqrt(lw lh) sigma_0: the mean
    mode is zero below the critical lambda_b and equal to s - N Lam (1 + lb)/lb above it."""
    N, s, lam = K * n, np.sqrt(n), np.sqrt(lw * lh)
    lb = factor * float(lambda_b_crit_mean_mode(K, n, lw, lh))

    def f(x):
        sig0, beta = x
        res = sig0 + beta * np.sqrt(N) - s
        val = res ** 2 / (2 * N) + lb / 2 * beta ** 2 + lam * sig0
        return val, np.array([res / N + lam, res / np.sqrt(N) + lb * beta])

    opt = minimize(f, [0.5 * s, 0.0], jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None), (None, None)],
                   options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 1000})
    sig0, beta = opt.x
    want = max(s - N * lam * (1 + lb) / lb, 0.0)
    if factor < 1:
        assert sig0 == 0.0 and want == 0.0
    else:
        assert want > 1e-3 * s
        close(sig0, want, tol=1e-7)
    close(beta, (s - want) / (np.sqrt(N) * (1 + lb)), tol=1e-7)
    e = equilibrium("mse", "reg", K, n, lw, lh, lb)
    close(e.sigma_mean, want, tol=1e-12)


def test_lambda_b_crit_inf_and_broadcasting():
    """inf where K r >= 1 (including K r = 1 exactly); arrays broadcast; torch in, torch out;
    mismatched shapes raise ValueError."""
    K, n = 4, 1
    lh = 1 / K  # n = 1, lw = c^2/K: K r = c (exactly 1 for c = 1)
    got = lambda_b_crit_mean_mode(K, n, np.array([0.25, 1.0, 4.0]) / K, lh)
    close(got[0], 0.5 / (1 - 0.5), tol=1e-15)
    assert got[1] == np.inf and got[2] == np.inf
    Ks = np.array([[2.0], [3.0], [5.0]])
    lws = np.array([1e-3, 0.01, 0.6, 2.0])
    grid = lambda_b_crit_mean_mode(Ks, 4, lws, 0.02)
    assert grid.shape == (3, 4)
    q = Ks * np.sqrt(4 * lws * 0.02)
    want = np.where(q < 1, q / np.where(q < 1, 1 - q, 1.0), np.inf)
    assert np.isinf(want).sum() == 3 and np.array_equal(np.isinf(grid), np.isinf(want))
    close(grid[~np.isinf(grid)], want[~np.isinf(want)], tol=1e-14)
    tgrid = lambda_b_crit_mean_mode(torch.tensor(Ks), 4, torch.tensor(lws), 0.02)
    assert isinstance(tgrid, torch.Tensor) and tgrid.shape == (3, 4)
    assert np.array_equal(tgrid.numpy(), grid)
    with pytest.raises(ValueError):
        lambda_b_crit_mean_mode(np.array([3, 4]), 2, np.array([0.01, 0.02, 0.03]), 0.01)


def test_reg_bias_mean_mode_in_simulation():
    """Simulated one-layer MSE UFM with a regularised bias (K = 3, n = 2, d = 5,
    lw = lh = 0.1): the mean mode u0^T W H v0 and the feature mean vanish at half the
    critical lambda_b and survive at twice it, with the theory.md sizes (sigma_0 and b*)."""
    K, n, d, lam = 3, 2, 5, 0.1
    N, s = K * n, np.sqrt(n)
    lbc = float(lambda_b_crit_mean_mode(K, n, lam, lam))
    model = ModelSpec(loss="mse", bias="reg", classes=K, per_class=n, dim=d)
    solver = SolverSpec(t_end=300, rtol=1e-10, atol=1e-12, gtol=1e-10, records=10)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=lam, lambda_h=lam,
                                                     lambda_b=f * lbc),
                     init=InitSpec(scale=0.3, seed=2), solver=solver) for f in (0.5, 2.0)]
    res = simulate(specs)
    u, v = np.ones(K) / np.sqrt(K), np.ones(N) / np.sqrt(N)
    for spec, (_, row) in zip(specs, res.runs.iterrows(), strict=True):
        assert row["status"] == "ok"
        st = res.final_state(row["run_id"])
        W, H, b = st["W"][-1], st["H"], st["b"]
        lb = spec.reg.lambda_b
        sig0 = float(u @ W @ H @ v)
        alpha0 = max(1 - K * np.sqrt(n) * lam * (1 + lb) / lb, 0.0)
        close(b, np.full(K, (1 - alpha0) / (K * (1 + lb))), tol=1e-7)
        feature_mean = np.linalg.norm(H.mean(axis=1))
        if lb < lbc:
            assert alpha0 == 0.0 and abs(sig0) < 1e-8 and feature_mean < 1e-4
        else:
            assert alpha0 > 0.1
            close(sig0, s * alpha0, tol=1e-7)
            assert feature_mean > 0.1


# ---------------------------------------------------------------------------------------------
# deep CE on the ETF ray

def _psi(sigma, K, n, M):
    """Lambda at which sigma is stationary: sigma^(1-2/M) / (sqrt(n)(e^(sigma/sqrt n) + K - 1))."""
    return sigma ** (1 - 2 / M) / (np.sqrt(n) * (np.exp(sigma / np.sqrt(n)) + K - 1))


def _g_ce(sigma, K, n, Lam, M):
    return np.log1p((K - 1) * np.exp(-sigma / np.sqrt(n))) + (K - 1) * M / 2 * Lam * sigma ** (
        2 / M)


def _jump(K, n, M):
    """(sigma_J, Lambda_J): g(sigma_J) = g(0) = log K at Lambda_J = psi(sigma_J).

    With Lambda = psi(sigma) the gap depends on the margin m = sigma/sqrt(n) only:
    log(1 + (K-1) e^-m) - log K + (K-1)(M/2) m / (e^m + K - 1)."""
    def gap(m):
        return (np.log1p((K - 1) * np.exp(-m)) - np.log(K)
                + (K - 1) * M / 2 * m / (np.exp(m) + K - 1))

    assert gap(1e-3) > 0 > gap(200.0)
    m = brentq(gap, 1e-3, 200.0, xtol=1e-300, rtol=1e-15)
    sig = np.sqrt(n) * m
    return sig, _psi(sig, K, n, M)


def _compiled_deep_ce():
    d = deep.derive_ce()
    args = [S.sigma, S.K, S.n, S.M, S.Lam]
    return {k: sp.lambdify(args, v, "numpy") for k, v in d.items()}


DEEP_CE = [(3, 2, 2), (4, 5, 2), (4, 5, 3), (10, 3, 2)]


@pytest.mark.parametrize("K,n,depth", DEEP_CE)
def test_deep_ce_critical_table_is_the_jump(K, n, depth):
    """critical_table for deep CE: Lambda_crit and sigma_jump solve g(sigma) = log K and
    psi(sigma) = Lambda together (scipy root of the margin equation); lambda_crit with a
    ratio is Lambda_crit / ratio^(1/M)."""
    M = depth + 1
    sig_j, lam_j = _jump(K, n, M)
    tab = critical.critical_table("ce", "none", K, n, depth)
    close(tab["Lambda_crit"], lam_j, tol=1e-10)
    close(tab["lambda_crit"], lam_j, tol=1e-10)
    # evaluated at Lambda_crit (1 - 1e-9): sigma moves by about 1e-9 relative
    close(tab["sigma_jump"], sig_j, tol=1e-8)
    close(_g_ce(tab["sigma_jump"], K, n, tab["Lambda_crit"], M), np.log(K), tol=1e-8)
    tab4 = critical.critical_table("ce", "free", K, n, depth, ratio=4.0)
    close(tab4["Lambda_crit"], lam_j, tol=1e-10)
    close(tab4["lambda_crit"], lam_j / 4.0 ** (1 / M), tol=1e-10)
    close(tab4["sigma_jump"], tab["sigma_jump"], tol=1e-14)


def test_deep_ce_global_switch_at_lambda_crit():
    """The ETF-ray global minimiser is collapsed just below Lambda_crit (sigma near sigma_jump)
    and zero just above, while the collapsed local minimum persists (first-order jump)."""
    K, n, depth = 4, 5, 2
    M = depth + 1
    tab = critical.critical_table("ce", "none", K, n, depth)
    lc = tab["Lambda_crit"]
    sol = modes.ce_ray(K, n, np.array([lc * (1 - 1e-6), lc * (1 + 1e-6)]), M)
    assert sol.collapsed.tolist() == [True, False]
    close(sol.sigma[0], tab["sigma_jump"], tol=1e-5)
    assert np.all(np.isfinite(sol.sigma_local))
    eq = equilibrium("ce", "none", K, n, lc * (1 + 1e-6), lc * (1 + 1e-6), depth=depth)
    assert not bool(eq.collapsed)


def test_derive_ce_expressions_match_hand_forms():
    """derive_ce: the objective is log(1 + (K-1) e^(-sigma/sqrt n)) + (K-1)(M/2) Lam
    sigma^(2/M), the stationarity is its sigma-derivative (central differences), Lambda_of_sigma
    is psi and zeroes the stationarity, log_psi_slope is d log(psi)/d sigma."""
    f = _compiled_deep_ce()
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = int(rng.integers(2, 12))
        n = int(rng.integers(1, 30))
        M = int(rng.integers(2, 7))
        sig = float(rng.uniform(0.1, 5.0) * np.sqrt(n))
        lam = float(10 ** rng.uniform(-4, -1))
        close(f["objective"](sig, K, n, M, lam), _g_ce(sig, K, n, lam, M))
        h = 1e-5 * sig
        fd = (_g_ce(sig + h, K, n, lam, M) - _g_ce(sig - h, K, n, lam, M)) / (2 * h)
        close(f["stationarity"](sig, K, n, M, lam), fd, tol=1e-7, atol=1e-11)
        lam_sig = f["Lambda_of_sigma"](sig, K, n, M, 0.0)
        close(lam_sig, _psi(sig, K, n, M))
        close(f["stationarity"](sig, K, n, M, lam_sig), 0.0, atol=1e-15)
        lp = np.log(_psi(sig + h, K, n, M)) - np.log(_psi(sig - h, K, n, M))
        close(f["log_psi_slope"](sig, K, n, M, 0.0), lp / (2 * h), tol=1e-7, atol=1e-11)


@pytest.mark.parametrize("K,n", [(3, 2), (4, 5), (10, 20)])
def test_derive_ce_one_layer_limit(K, n):
    """At M = 2, Lambda_of_sigma at the theory.md optimum sigma* = sqrt(n) ln(1/r - K + 1)
    gives back Lambda = r / sqrt(n)."""
    f = _compiled_deep_ce()["Lambda_of_sigma"]
    for lam in (1e-4, 1e-3, 0.5 / (K * np.sqrt(n))):
        r = np.sqrt(n) * lam
        sig = np.sqrt(n) * np.log(1 / r - K + 1)
        close(f(sig, K, n, 2, 0.0), lam)


@pytest.mark.parametrize("K,n", [(3, 2), (4, 5), (10, 3)])
@pytest.mark.parametrize("M", [2, 3, 4])
def test_derive_ce_inverts_ce_ray(K, n, M):
    """Lambda_of_sigma from derive_ce at the non-zero stationary sigma of modes.ce_ray returns
    the Lambda that was asked for; for M >= 3 its log-slope vanishes at ce_psi_max's sigma_m,
    where psi takes the value Lambda_stat."""
    f = _compiled_deep_ce()
    if M == 2:
        top = 1 / (K * np.sqrt(n))
    else:
        sig_m, lam_stat = modes.ce_psi_max(K, n, M)
        top = float(lam_stat)
        close(f["Lambda_of_sigma"](float(sig_m), K, n, M, 0.0), lam_stat)
        scale = 1 / float(sig_m)
        assert abs(f["log_psi_slope"](float(sig_m), K, n, M, 0.0)) < 1e-10 * scale
        assert _psi(sig_m * 0.999, K, n, M) < lam_stat > _psi(sig_m * 1.001, K, n, M)
    lams = top * np.array([1e-4, 0.05, 0.3, 0.9, 0.999])
    sol = modes.ce_ray(K, n, lams, M)
    assert np.all(np.isfinite(sol.sigma_local))
    close(f["Lambda_of_sigma"](sol.sigma_local, K, n, M, 0.0), lams, tol=1e-11)


@pytest.mark.parametrize("K,n,M", [(3, 2, 3), (4, 5, 3), (4, 5, 4)])
def test_ce_ray_global_choice_against_scipy(K, n, M):
    """modes.ce_ray's global sigma on a Lambda grid around Lambda_crit is the bounded scipy
    minimiser of the hand-written objective when it beats g(0) = log K, else 0."""
    lc = float(critical.Lambda_crit("ce", K, n, M - 1))
    lams = lc * np.array([0.2, 0.7, 0.97, 1.03, 1.5])
    sol = modes.ce_ray(K, n, lams, M)
    for lam, sig in zip(lams, sol.sigma, strict=True):
        opt = minimize_scalar(lambda x, lam=lam: _g_ce(x, K, n, lam, M),
                              bounds=(1e-3 * np.sqrt(n), 40 * np.sqrt(n)), method="bounded",
                              options={"xatol": 1e-12})
        want = opt.x if opt.fun < np.log(K) else 0.0
        close(sig, want, tol=1e-6, atol=0.0)
        assert (sig > 0) == (lam < lc)


# ---------------------------------------------------------------------------------------------
# thresholds at depth 1 and input checks

def test_lambda_crit_ratio_expression():
    """The one-layer lambda_crit expression derived by sympy is 1/(K sqrt(n rho)), and matches
    lambda_crit(depth = 1, ratio = rho)."""
    from ncsim.theory import symbols as S
    from ncsim.theory import ufm
    from ncsim.theory.compile import compile_expr

    f = compile_expr(ufm.derive_mse()["lambda_crit_ratio"], [S.K, S.n, S.rho])
    K = np.array([2.0, 4.0, 10.0])
    n = np.array([1.0, 5.0, 20.0])
    rho = np.array([0.25, 1.0, 3.0])
    close(f(K, n, rho), 1 / (K * np.sqrt(n * rho)))
    close(f(K, n, rho), critical.lambda_crit("mse", "none", K, n, 1, rho))


def test_basin_threshold_depth_one():
    """Depth 1: the basin threshold is 0 while K sqrt(n) lambda < 1 and NaN at and above it."""
    K, n = 3, 4
    lc = 1 / (K * np.sqrt(n))
    got = critical.basin_threshold("ce", K, n, lc * np.array([0.1, 0.999, 1.0, 1.5]), 1)
    assert got[:2].tolist() == [0.0, 0.0] and np.all(np.isnan(got[2:]))


@pytest.mark.parametrize("depth", [0, 1])
def test_deep_thresholds_reject_depth_below_two(depth):
    """deep_thresholds needs depth >= 2."""
    with pytest.raises(ValueError, match="depth >= 2"):
        critical.deep_thresholds(4, 5, 0.01, depth)


def test_critical_table_rejects_bad_model():
    """critical_table checks loss, bias, depth, K, n and the ratio before computing (K = 1
    gave the lower end of the search range as Lambda_crit)."""
    with pytest.raises(InputError):
        critical.critical_table("ce", "none", 3, 2, 0)
    with pytest.raises(InputError):
        critical.critical_table("hinge", "none", 3, 2, 2)
    for args, message in ((("ce", "none", 1, 2, 2), "classes K must be an integer >= 2, got 1"),
                          (("mse", "none", 3, 0, 1), "samples per class n must be an integer "
                           ">= 1, got 0"),
                          (("ce", "none", 3, 2, 2, -1.0), "ratio lambda_H / lambda_W must be a "
                           "finite number > 0, got -1.0")):
        with pytest.raises(InputError, match=f"^{message}$"):
            critical.critical_table(*args)


# ---------------------------------------------------------------------------------------------
# derivations table

@pytest.mark.parametrize("loss,depth,bias", [("mse", 1, "reg"), ("mse", 1, "free"),
                                             ("mse", 1, "none"), ("ce", 1, "reg"),
                                             ("mse", 2, "reg")])
def test_derivations_reg_bias_keys(loss, depth, bias):
    """MSE with a bias lists its bias entry at every depth: 1/K for a free bias; for a
    regularised one the expressions of derive_reg_bias_mean_mode, with the mean-mode weight.
    CE and MSE without bias list neither."""
    d = derivations(loss, depth, bias)
    if loss == "mse" and bias == "reg":
        rb = ufm.derive_reg_bias_mean_mode()
        assert d["bias_entry"] == rb["bias_entry"]
        assert sp.simplify(d["mean_mode_weight"] - S.lam_b / (1 + S.lam_b)) == 0
    elif loss == "mse" and bias == "free":
        assert d["bias_entry"] == 1 / S.K and "mean_mode_weight" not in d
    else:
        assert "bias_entry" not in d and "mean_mode_weight" not in d
    if depth == 1:
        assert "sigma_star" in d and "growth_rate" in d


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("bias", ["none", "free"])
def test_derivations_deep_ce(depth, bias):
    """Deep CE lists the ETF-ray objective, its stationarity and Lambda_of_sigma (= psi, checked
    numerically) and the escape-time asymptotics; no closed-form thresholds."""
    d = derivations("ce", depth, bias)
    assert set(d) == {"objective", "stationarity", "Lambda_of_sigma", "escape_asymptotic"}
    args = [S.sigma, S.K, S.n, S.M]
    f = sp.lambdify(args, d["Lambda_of_sigma"], "numpy")
    for K, n, sig in [(3, 2, 1.7), (4, 5, 6.0), (10, 1, 0.3)]:
        close(f(sig, K, n, depth + 1), _psi(sig, K, n, depth + 1))
    assert sp.simplify(d["stationarity"] - sp.diff(d["objective"], S.sigma)) == 0
