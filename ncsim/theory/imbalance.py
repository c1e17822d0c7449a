"""One-layer UFM with class imbalance (class counts n_1 .. n_K): global minimiser.

Objective (the package convention, N = sum_k n_k):

    f = (1/N) sum_i loss(W h_i + b, y_i) + lambda_W/2 |W|_F^2 + lambda_H/2 |H|_F^2
        + lambda_b/2 |b|^2.

Reduction (exact, theory.md 0.2): with Lambda = sqrt(lambda_W lambda_H),
min_{W H = Z} lambda_W/2 |W|^2 + lambda_H/2 |H|^2 = Lambda |Z|_*. The data term is convex and
equal across the samples of a class, and averaging the columns of Z within each class is a
contraction, so a minimiser has class-collapsed logits Z = X E, where X (K x K) holds the class
columns scaled by sqrt(n_k) and E (K x N), E[k, i] = 1/sqrt(n_k) for i in class k, has
orthonormal rows (|Z|_* = |X|_*). The problem becomes the convex program

    min_{X, b} (1/N) sum_k n_k loss(X[:, k] / sqrt(n_k) + b, e_k) + lambda_b/2 |b|^2
               + Lambda |X|_*.

- Lambda is :func:`ncsim.theory.equilibrium.geometric_mean` of the decays (exact for equal
  decays), and with balanced counts every case decides collapse as the balanced
  :func:`ncsim.theory.equilibrium.equilibrium` does, to the last ulp: iff Lambda <
  1 / (K sqrt n), the expression of :func:`ncsim.theory.critical.Lambda_crit` (the tie goes
  to the origin).
- MSE, no bias: X = SVT(diag(sqrt(n_k)), N Lambda): singular values (sqrt(n_k) - N Lambda)_+.
  Closed form. Collapse iff sqrt(max_k n_k) > N Lambda; the classes with
  sqrt(n_k) <= N Lambda collapse to zero features ("minority collapse").
- MSE, free bias (lambda_b = 0): minimising over b centres the sample-level labels, and
  Z = SVT(Y (I - 11^T/N), N Lambda) (singular-value soft-thresholding of the centred labels,
  computed by an eigen-decomposition per parameter set); b = (1/N) (Y - Z) 1.
- MSE with a regularised bias and CE (any bias): no closed form. The origin (with its best
  bias b0) is the minimiser iff |G(0, b0)|_2 <= Lambda (G = grad_X F); this is checked first,
  so the collapse flag is exact. Otherwise the convex program is solved numerically (L-BFGS on
  the balanced factorisation X = A B, then proximal-gradient steps with the exact
  soft-thresholding prox, which make the rank exact and keep the solution certifiable close to
  the threshold) and certified by its KKT condition: U^T G V = -Lambda I on the support (U, V)
  of X and |G|_2 <= Lambda (spectral norm) off it; the certificate is the largest violation
  relative to Lambda, reported as ``kkt_residual``. The value is also compared with the origin.

From X = U S V^T: W = (lambda_H/lambda_W)^(1/4) U S^(1/2), class means
mu_k = (lambda_W/lambda_H)^(1/4) S^(1/2) V^T[:, k] / sqrt(n_k) (every sample of class k sits at
its class mean), so |W|_F^2 = sqrt(lambda_H/lambda_W) |X|_* and |H|_F^2 = sqrt(lambda_W/lambda_H)
|X|_*. Needs d >= rank(X) and lambda_W, lambda_H > 0 (with a zero decay there is no minimiser).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ncsim.errors import InputError, is_finite_number, is_integer, require
from ncsim.theory.equilibrium import geometric_mean


@dataclass(frozen=True)
class ImbalancedEquilibrium:
    """Global minimiser of the imbalanced one-layer UFM (numbers in the package convention).

    Attributes
    ----------
    collapsed : the minimiser is non-zero (closed forms: exactly; numeric cases: decided by the
        origin's optimality condition, not by the size of the numeric solution).
    method : "closed_form" (MSE without / with free bias) or "certified_numeric".
    kkt_residual : largest KKT violation relative to Lambda (0 for the closed forms).
    singular_values : (K,) singular values of X (class logits scaled by sqrt(n_k)), descending.
    class_means : (K, K) class means mu_k as columns, in the K-dim. coordinates of range(H).
    class_mean_norms : (K,) |mu_k| (uncentred).
    fn_star : mean_i |h_i| = (1/N) sum_k n_k |mu_k|.
    class_mean_norm_centred : mean_k |mu_k - mu_G|, mu_G the sample mean.
    w_norm_fro : |W|_F; w_row_norms : (K,) |w_k|.
    h_norm_fro : |H|_F.
    bias : (K,) bias vector (zeros without a bias). CE with a free bias fixes it only up to a
        shift b + c 1 (softmax is blind to it): the one of zero sum is reported, the bias a
        gradient flow from a zero-sum bias keeps.
    logits : (K, K) class logits Z[:, k] = W mu_k + b.
    loss_star : mean data loss; objective_star : f at the minimiser; objective_zero : f at W = H
        = 0 with the best bias.
    """

    collapsed: bool
    method: str
    kkt_residual: float
    singular_values: np.ndarray
    class_means: np.ndarray
    class_mean_norms: np.ndarray
    fn_star: float
    class_mean_norm_centred: float
    w_norm_fro: float
    w_row_norms: np.ndarray
    h_norm_fro: float
    bias: np.ndarray
    logits: np.ndarray
    loss_star: float
    objective_star: float
    objective_zero: float


def _data_loss(loss: str, counts: np.ndarray, logits: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean data loss of class logits (K, K) (column k = class k) and its gradient."""
    N = counts.sum()
    K = counts.size
    eye = np.eye(K)
    if loss == "mse":
        R = logits - eye
        return float(0.5 * np.sum(counts * np.sum(R ** 2, axis=0)) / N), R * counts / N
    Zs = logits - logits.max(axis=0)
    logp = Zs - np.log(np.exp(Zs).sum(axis=0))
    val = -float(np.sum(counts * np.diag(logp)) / N)
    return val, (np.exp(logp) - eye) * counts / N


def _smooth(loss: str, counts: np.ndarray, lb: float, X: np.ndarray, b: np.ndarray):
    """F(X, b) = data + lambda_b/2 |b|^2 and its gradients (X scaled by sqrt(n_k))."""
    sq = np.sqrt(counts)
    val, G = _data_loss(loss, counts, X / sq + b[:, None])
    return val + lb / 2 * float(b @ b), G / sq, G.sum(axis=1) + lb * b


def _summary(loss: str, counts: np.ndarray, lw: float, lh: float, lb: float, X: np.ndarray,
             b: np.ndarray, method: str, kkt: float, obj0: float,
             collapsed: bool) -> ImbalancedEquilibrium:
    N = counts.sum()
    if loss == "ce" and lb == 0:  # softmax is blind to b + c 1: report the zero-sum bias
        b = b - b.mean()
    U, S, Vt = np.linalg.svd(X)
    # (lambda_W / lambda_H)^(1/4) as a quotient of fourth roots: lambda_W / lambda_H itself
    # overflows or underflows for decays ~1e308 apart (1e-300 and 1e290 gave W = inf * 0 =
    # NaN and fn* 0 instead of 2.4e-148)
    ratio = lw ** 0.25 / lh ** 0.25
    means = ratio * (np.sqrt(S)[:, None] * Vt) / np.sqrt(counts)[None, :]
    W = (U * np.sqrt(S)[None, :]) / ratio
    norms = np.linalg.norm(means, axis=0)
    mu_g = means @ counts / N
    logits = X / np.sqrt(counts) + b[:, None]
    data, _ = _data_loss(loss, counts, logits)
    nuc = float(S.sum())
    obj = data + math.sqrt(lw) * math.sqrt(lh) * nuc + lb / 2 * float(b @ b)
    return ImbalancedEquilibrium(
        collapsed=collapsed,
        method=method,
        kkt_residual=kkt,
        singular_values=S,
        class_means=means,
        class_mean_norms=norms,
        fn_star=float(norms @ counts / N),
        class_mean_norm_centred=float(np.mean(np.linalg.norm(means - mu_g[:, None], axis=0))),
        w_norm_fro=float(np.linalg.norm(W)),
        w_row_norms=np.linalg.norm(W, axis=1),
        h_norm_fro=ratio * math.sqrt(nuc),
        bias=b,
        logits=logits,
        loss_star=data,
        objective_star=obj,
        objective_zero=obj0,
    )


def label_singular_values(bias: str, counts: Sequence[int]) -> np.ndarray:
    """Singular values of the labels Y (bias "none") or of the centred labels (bias "free").

    MSE collapse threshold: the mode with singular value s survives iff s > N Lambda, so the
    collapse threshold is Lambda_c = max(s) / N.
    """
    require(bias in ("none", "free"),
            f"label_singular_values: bias must be 'none' or 'free' (a regularised bias has no "
            f"closed-form threshold), got {bias!r}")
    cnt = np.asarray(counts, dtype=np.float64)
    if bias == "none":
        return np.sort(np.sqrt(cnt))[::-1]
    N = cnt.sum()
    sq = np.sqrt(cnt)
    return np.linalg.svd(np.diag(sq) - np.outer(cnt, sq) / N, compute_uv=False)


def _balanced(counts: np.ndarray) -> bool:
    """Whether every class has the same count (then the thresholds are those of the balanced
    :func:`ncsim.theory.equilibrium.equilibrium`, to the last ulp)."""
    return bool(np.all(counts == counts[0]))


def _balanced_threshold(counts: np.ndarray) -> float:
    """Lambda_crit = 1 / (K sqrt n) of balanced counts, the float expression of
    :func:`ncsim.theory.critical.Lambda_crit` (and of :mod:`ncsim.theory.modes`)."""
    return float(1 / (counts.size * np.sqrt(counts[0])))


def _shrink(s: np.ndarray, lam_c: np.ndarray, Lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft-thresholded singular values s (1 - Lambda / Lambda_c) = s - N Lambda where Lambda
    < Lambda_c (= s / N), else 0; and where they live. As in :mod:`ncsim.theory.modes`: > 0
    wherever Lambda < Lambda_c, to the last ulp (s - N Lambda rounds to 0 there)."""
    live = Lam < lam_c
    safe = np.where(live, lam_c, 1.0)
    return np.where(live, s * (1 - Lam / safe), 0.0), live


def _mse_closed_form(bias: str, counts: np.ndarray, Lam: float
                     ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(X, b, collapsed) of the MSE problem without bias or with a free bias
    (soft-thresholding at N Lambda). A mode of label singular value s lives iff Lambda < s / N,
    written as 1 / ((N / n_k) sqrt(n_k)) for the class modes without bias and as 1 / (K sqrt n)
    for the centred modes of balanced counts: at balanced counts the expression of
    Lambda_crit, so that collapse is decided as in the balanced equilibrium (a decay set to
    lambda_crit is not collapsed; sqrt(n) - N Lambda rounded above 0 there for K = 50, n = 7)."""
    K, N = counts.size, counts.sum()
    sq = np.sqrt(counts)
    if bias == "none":
        sv, live = _shrink(sq, 1 / ((N / counts) * sq), Lam)
        return np.diag(sv), np.zeros(K), bool(np.any(live))
    # centred labels Y (I - 11^T/N) = C E in class coordinates (E has orthonormal rows):
    # C[j, k] = sqrt(n_k) [j = k] - n_j sqrt(n_k) / N; the optimal Z has no part along 1.
    C = np.diag(sq) - np.outer(counts, sq) / N
    if _balanced(counts):
        # C = sqrt(n) (I - 11^T / K): K - 1 singular values sqrt(n) and 0, so the
        # soft-thresholded C is C (1 - Lambda / Lambda_c) (no SVD: its singular values round
        # to either side of sqrt(n))
        lam_c = np.array(_balanced_threshold(counts))
        frac, live = _shrink(np.array(1.0), lam_c, Lam)
        X = float(frac) * C
        collapsed = bool(live)
    else:
        U, S, Vt = np.linalg.svd(C)
        sv, live = _shrink(S, S / N, Lam)
        X = (U * sv[None, :]) @ Vt
        collapsed = bool(np.any(live))
    # b = (1/N)(Y - Z) 1 = (1/N) (n_j - sum_k X[j, k] sqrt(n_k))
    b = (counts - X @ sq) / N
    return X, b, collapsed


def _origin(loss: str, bias: str, counts: np.ndarray, lb: float) -> tuple[float, np.ndarray]:
    """f at W = H = 0 with the optimal bias, and that bias."""
    K = counts.size
    if bias == "none":
        return _data_loss(loss, counts, np.zeros((K, K)))[0], np.zeros(K)
    res = minimize(lambda b: _smooth(loss, counts, lb, np.zeros((K, K)), b)[::2],
                   np.zeros(K), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 10000})
    return float(res.fun), res.x


def kkt_residual(loss: str, counts: np.ndarray, Lam: float, lb: float, X: np.ndarray,
                 b: np.ndarray, bias: str) -> float:
    """Largest violation of the optimality conditions of the convex program, relative to Lambda.

    Conditions: U_r^T G V_r = -Lambda I_r on the support of X (rank r), the part of G off the
    support has spectral norm <= Lambda (G = grad_X F), and grad_b F = 0 when b is trained.
    """
    _, G, gb = _smooth(loss, counts, lb, X, b)
    U, S, Vt = np.linalg.svd(X)
    tol = 1e-9 * max(1.0, float(S[0]) if S.size else 1.0)
    r = int(np.sum(np.greater(S, tol)))
    Ur, Vr = U[:, :r], Vt[:r].T
    on = np.max(np.abs(Ur.T @ G @ Vr + Lam * np.eye(r))) if r else 0.0
    Pu = np.eye(X.shape[0]) - Ur @ Ur.T
    Pv = np.eye(X.shape[1]) - Vr @ Vr.T
    off = max(np.linalg.norm(Pu @ G @ Pv, 2) - Lam, 0.0)
    cross = np.max(np.abs(Ur.T @ G @ Pv)) if r else 0.0
    cross = max(cross, np.max(np.abs(Pu @ G @ Vr)) if r else 0.0)
    viol = max(on, off, cross) / Lam
    if bias != "none":
        viol = max(viol, float(np.max(np.abs(gb))) / Lam)
    return float(viol)


def _numeric(loss: str, bias: str, counts: np.ndarray, Lam: float, lb: float,
             restarts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Solve the convex program through X = A B with penalty Lambda/2 (|A|^2 + |B|^2)."""
    K = counts.size
    nb = K if bias != "none" else 0

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        A = theta[:K * K].reshape(K, K)
        B = theta[K * K:2 * K * K].reshape(K, K)
        b = theta[2 * K * K:] if nb else np.zeros(K)
        val, G, gb = _smooth(loss, counts, lb, A @ B, b)
        val += Lam / 2 * (np.sum(A ** 2) + np.sum(B ** 2))
        grads = [(G @ B.T + Lam * A).ravel(), (A.T @ G + Lam * B).ravel()]
        if nb:
            grads.append(gb)
        return val, np.concatenate(grads)

    rng = np.random.default_rng(seed)
    best = None
    for k in range(restarts):
        scale = math.sqrt(counts.max()) * (0.3 + 0.7 * k / max(restarts - 1, 1))
        x0 = rng.normal(0.0, scale / math.sqrt(K), 2 * K * K + nb)
        res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 50000, "maxcor": 30, "ftol": 1e-16, "gtol": 1e-13})
        if best is None or res.fun < best.fun:
            best = res
    theta = best.x
    A = theta[:K * K].reshape(K, K)
    B = theta[K * K:2 * K * K].reshape(K, K)
    b = theta[2 * K * K:] if nb else np.zeros(K)
    return A @ B, b


def _number(value: object, name: str) -> float:
    """``value`` as a float, or :class:`InputError` when it is not one real number."""
    if (np.ndim(value) != 0 or isinstance(value, (str, bytes))
            or np.asarray(value).dtype.kind == "b"):  # Python, numpy or 0-d array booleans
        raise InputError(f"{name} must be one number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be one number, got {value!r}") from None


def _polish(loss: str, bias: str, counts: np.ndarray, Lam: float, lb: float, X: np.ndarray,
            b: np.ndarray, iters: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Proximal-gradient steps on the convex program from (X, b); returns the point of smallest
    KKT residual seen (checked every 50 steps; stops below 1e-12, when a check improves less
    than 10%, or after ``iters`` steps). One step per block, 1 over its curvature bound
    (h = 1 for MSE, 1/2 for CE, the loss's largest second derivative): the smooth part's
    Hessian is at most h/N on X without a bias, and at most 2h/N on X and 2h + lambda_b on b
    with one ((a + c)^2 <= 2 a^2 + 2 c^2 for the logit X[:, k] / sqrt(n_k) + b). A single step
    1 / (2h + lambda_b) for both blocks was N times too short on X: at N = 300, lambda 1e-5
    the KKT residual stalled at 6e-6 after 5000 steps."""
    h = 1.0 if loss == "mse" else 0.5
    N = float(counts.sum())
    step_x = N / h if bias == "none" else N / (2 * h)
    step_b = 1.0 / (2 * h + lb)
    best = (kkt_residual(loss, counts, Lam, lb, X, b, bias), X, b)
    for i in range(1, iters + 1):
        _, G, gb = _smooth(loss, counts, lb, X, b)
        U, S, Vt = np.linalg.svd(X - step_x * G)
        X = (U * np.maximum(S - step_x * Lam, 0.0)[None, :]) @ Vt
        if bias != "none":
            b = b - step_b * gb
        if i % 50 == 0:
            kkt = kkt_residual(loss, counts, Lam, lb, X, b, bias)
            previous = best[0]
            if kkt < previous:
                best = (kkt, X, b)
            if best[0] <= 1e-12 or kkt > 0.9 * previous:
                break
    return best[1], best[2]


def imbalanced_equilibrium(loss: str, bias: str, counts: Sequence[int], lambda_w: float,
                           lambda_h: float, lambda_b: float = 0.0, *, kkt_tol: float = 1e-6,
                           restarts: int = 3, seed: int = 0) -> ImbalancedEquilibrium:
    """Global minimiser of the one-layer UFM with class counts ``counts``.

    Parameters
    ----------
    loss : "mse" or "ce".
    bias : "none", "free" or "reg" (``lambda_b`` > 0 for "reg").
    counts : (K,) samples per class n_k >= 1.
    lambda_w, lambda_h : weight and feature decay, both > 0.
    lambda_b : bias decay (bias "reg").
    kkt_tol : numeric cases: the solution is accepted only when its KKT residual (relative to
        Lambda) is below this; otherwise :class:`ArithmeticError` is raised.
    restarts, seed : L-BFGS restarts of the numeric cases.

    Returns
    -------
    ImbalancedEquilibrium. MSE with no or a free bias is a closed form (soft-thresholding);
    the other cases are certified numeric solutions (``kkt_residual`` <= ``kkt_tol`` and
    ``objective_star`` <= ``objective_zero`` to rounding, 1e-12 relative: just below the
    threshold the true gain, ~(1 - Lambda/Lambda_c)^2, is below one ulp): the origin with its
    best bias when it meets the optimality condition |grad_X F(0, b0)|_2 <= Lambda (balanced
    counts: Lambda >= 1 / (K sqrt n), the exact value of that norm; then
    ``collapsed`` is False and every norm exactly 0), else the polished L-BFGS solution
    (``collapsed`` True).

    Raises
    ------
    InputError : unknown loss / bias, counts that are not K >= 2 integers >= 1, decays that are
        not single finite numbers > 0 (lambda_b only for bias "reg"), restarts not an integer
        >= 1, seed not an integer >= 0, kkt_tol not a finite number >= 0.
    ArithmeticError : a numeric solution that cannot be certified.
    """
    require(loss in ("mse", "ce"), f"unknown loss {loss!r}; allowed: mse, ce")
    require(bias in ("none", "free", "reg"), f"unknown bias {bias!r}; allowed: none, free, reg")
    for value, name, low in ((restarts, "restarts", 1), (seed, "seed", 0)):
        require(is_integer(value) and value >= low,
                f"{name} must be an integer >= {low}, got {value!r}")
    require(is_finite_number(kkt_tol) and kkt_tol >= 0,
            f"kkt_tol must be a finite number >= 0, got {kkt_tol!r}")
    try:
        flags = any(isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(counts,
                                                                               dtype=object)))
        cnt = np.zeros(0) if flags else np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        cnt = np.zeros(0)
    require(cnt.ndim == 1 and cnt.size >= 2 and bool(np.all(np.isfinite(cnt)))
            and bool(np.all(cnt >= 1)) and bool(np.all(cnt % 1 == 0)),
            f"counts must list K >= 2 integer class sizes >= 1, got {counts!r}")
    lambda_w, lambda_h = _number(lambda_w, "lambda_w"), _number(lambda_h, "lambda_h")
    if not (0 < lambda_w < math.inf and 0 < lambda_h < math.inf):
        raise InputError("imbalanced equilibrium needs finite lambda_w > 0 and lambda_h > 0 "
                         "(with a zero decay the objective has no minimiser)")
    lb = _number(lambda_b, "lambda_b") if bias == "reg" else 0.0
    require(bias != "reg" or 0 < lb < math.inf, "bias 'reg' needs a finite lambda_b > 0")
    # Lambda as the balanced equilibrium takes it (exact for equal decays; sqrt(l) sqrt(l)
    # is not l: K = 10, n = 3 at lambda_crit gave one ulp below Lambda_crit)
    Lam = float(geometric_mean(np, [np.asarray(lambda_w), np.asarray(lambda_h)]))
    obj0, b0 = _origin(loss, bias, cnt, lb)
    if loss == "mse" and bias in ("none", "free"):
        X, b, collapsed = _mse_closed_form(bias, cnt, Lam)
        return _summary(loss, cnt, lambda_w, lambda_h, lb, X, b, "closed_form", 0.0, obj0,
                        collapsed)
    zero = np.zeros((cnt.size, cnt.size))
    if _balanced(cnt):
        # balanced counts: |G(0, b0)|_2 = 1 / (K sqrt n) exactly (MSE, regularised bias: G =
        # (b0 1^T - I) / (K sqrt n) with b0 = 1 / (K (1 + lambda_b)) per entry, singular values
        # 1 / (K sqrt n) and lambda_b / (1 + lambda_b) / (K sqrt n); CE, any bias: b0 = 0 up to
        # a shift and G = (11^T / K - I) / (K sqrt n)), so the origin wins iff Lambda >=
        # Lambda_crit, the balanced rule to the last ulp (the computed spectral norm rounds to
        # either side: CE K = 10, n = 3 was collapsed at lambda_crit)
        origin = Lam >= _balanced_threshold(cnt)
    else:
        origin = bool(np.linalg.norm(_smooth(loss, cnt, lb, zero, b0)[1], 2) <= Lam)
    if origin:
        # the origin (with its best bias) meets the optimality condition |G|_2 <= Lambda: it is
        # the minimiser (decided exactly, not from the size of a numeric solution)
        kkt = kkt_residual(loss, cnt, Lam, lb, zero, b0, bias)
        eq = _summary(loss, cnt, lambda_w, lambda_h, lb, zero, b0, "certified_numeric", kkt,
                      obj0, False)
    else:
        eq = None
    for k in range(restarts if eq is None else 0):  # benign factorisation: one start certifies
        X, b = _polish(loss, bias, cnt, Lam, lb, *_numeric(loss, bias, cnt, Lam, lb, 1, seed + k))
        kkt = kkt_residual(loss, cnt, Lam, lb, X, b, bias)
        cand = _summary(loss, cnt, lambda_w, lambda_h, lb, X, b, "certified_numeric", kkt, obj0,
                        True)
        if eq is None or cand.kkt_residual < eq.kkt_residual:
            eq = cand
        if eq.kkt_residual <= kkt_tol:
            break
    if not (eq.kkt_residual <= kkt_tol
            and eq.objective_star <= obj0 + 1e-12 * max(1.0, abs(obj0))):
        raise ArithmeticError(f"imbalanced {loss} minimiser not certified: KKT residual "
                              f"{eq.kkt_residual:.2e} (tol {kkt_tol:.0e}), f = "
                              f"{eq.objective_star:.12g} vs origin {obj0:.12g}")
    return eq


def imbalanced_mse(counts: Sequence[int], lambda_w: float, lambda_h: float, bias: str = "none",
                   lambda_b: float = 0.0) -> ImbalancedEquilibrium:
    """MSE shortcut of :func:`imbalanced_equilibrium` (closed form for bias none / free)."""
    return imbalanced_equilibrium("mse", bias, counts, lambda_w, lambda_h, lambda_b)
