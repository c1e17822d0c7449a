"""Sympy symbols and the scalar per-mode objectives every derivation starts from.

Reduction (theory.md 0.2): for a product of M factors A_M ... A_1 = Z with penalties
lambda_j/2 |A_j|_F^2, the minimum over factorisations is (M/2) Lambda sum_i sigma_i(Z)^(2/M),
Lambda = (prod_j lambda_j)^(1/M). For balanced classes the label matrix Y has K equal singular
values s = sqrt(n) (K - 1 after centring), so the matrix objective splits into scalar problems
in the singular value sigma of the logit matrix Z on each label mode:

    MSE, per mode:     g(sigma) = c/(2N) (sigma - s)^2 + (M/2) Lambda sigma^(2/M)
    CE, all K-1 modes: g(sigma) = log(1 + (K-1) exp(-sigma/sqrt(n))) + (K-1)(M/2) Lambda sigma^(2/M)

where c = 1 for an ordinary mode and c = lambda_b/(1 + lambda_b) for the mean mode of a model
with a regularised bias (the bias absorbs the rest of that mode). On the CE ray the logits are
Z = sigma Y_c / sqrt(n), so the logit margin is sigma / sqrt(n).
"""

from __future__ import annotations

import sympy as sp

K, n = sp.symbols("K n", positive=True)
lam_w, lam_h, lam_b = sp.symbols("lambda_W lambda_H lambda_b", positive=True)
Lam = sp.Symbol("Lambda", positive=True)
M = sp.Symbol("M", positive=True)
sigma = sp.Symbol("sigma", positive=True)
x = sp.Symbol("x", positive=True)
c = sp.Symbol("c", positive=True)
s = sp.Symbol("s", positive=True)
rho = sp.Symbol("rho", positive=True)
lam = sp.Symbol("lambda", positive=True)
t = sp.Symbol("t", nonnegative=True)
z0, z = sp.symbols("z_0 z", positive=True)
N = K * n


def g_mse(m: sp.Expr = M) -> sp.Expr:
    """Per-mode MSE objective g(sigma) with data weight ``c`` and ``m`` factors."""
    m = sp.sympify(m)
    return c / (2 * N) * (sigma - sp.sqrt(n)) ** 2 + m / 2 * Lam * sigma ** (2 / m)


def ce_data(margin: sp.Expr) -> sp.Expr:
    """Softmax cross-entropy of one sample on the ETF ray with logit margin ``margin``."""
    return sp.log(1 + (K - 1) * sp.exp(-margin))


def g_ce(m: sp.Expr = M) -> sp.Expr:
    """CE objective on the ETF ray (all K - 1 modes together) with ``m`` factors."""
    m = sp.sympify(m)
    return ce_data(sigma / sp.sqrt(n)) + (K - 1) * m / 2 * Lam * sigma ** (2 / m)

