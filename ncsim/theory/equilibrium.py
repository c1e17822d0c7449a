"""Equilibria at the global minimiser: norms, fn*, logits, loss, for one-layer and deep linear UFMs.

The global minimiser is assembled from the per-mode solutions (:mod:`ncsim.theory.modes`):

- factor singular values on a mode with logit singular value sigma: lambda-balancing
  (lambda_j a_j^2 equal across the M factors) gives a_j = sqrt(Lambda/lambda_j) sigma^(1/M);
- penultimate features (input of the classifier W_L): singular value p = sigma / a_L on the mode;
- label modes: K - 1 centred modes (singular value sqrt(n) of the centred labels), plus the
  mean mode: for MSE without bias it is an ordinary mode, with a free bias the bias absorbs it
  (sigma_0 = 0, b = 1/K), with a regularised bias it has data weight lambda_b/(1 + lambda_b);
  for CE the mean mode is useless (softmax is shift invariant) and the bias is 0.
- balanced collapse: every sample of class k has the same feature, so fn* = |h| = |mu_k|
  (uncentred class mean) with |h|^2 = (K-1)/(K n) p^2 + p_0^2 / N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ncsim.errors import InputError, is_integer, require
from ncsim.theory import modes
from ncsim.theory._backend import Array, broadcast, namespace

LOSSES = ("mse", "ce")
BIASES = ("none", "free", "reg")


@dataclass(frozen=True)
class Equilibrium:
    """Global minimiser of the (deep linear) UFM; every field is an array of the grid shape.

    Attributes
    ----------
    collapsed : bool, the global minimiser is non-zero (neural collapse). Deep CE: the
        minimiser on the ETF ray beats the origin; a lower-rank state can beat both (see
        ``lower_rank_better``), and then the fields describe the best ETF-ray state, not the
        global minimiser.
    sigma, sigma_mean : singular value of the logits Z = W_L ... W_1 H on each centred label
        mode and on the mean mode.
    fn_star : mean penultimate feature norm |h| at the minimiser (uncentred).
    class_mean_norm_star, class_mean_norm_centred : |mu_k| and |mu_k - mu_G|.
    w_norm_star : classifier row norm |w_k| (last layer).
    factor_norms : Frobenius norms, keys "H", "W1", ..., "WL".
    margin_star : true logit minus any other logit.
    logit_true, logit_other : logits of the true and of any other class.
    bias_star : entry of the bias vector (b = bias_star 1).
    loss_star : mean data loss (1/N) sum_i loss(z_i, y_i).
    objective_star, objective_zero : objective f at the minimiser and at the origin.
    sigma_local : non-zero local minimiser of the mode problem (NaN if none; deep: may be a
        metastable state when the origin is global; exactly at Lambda_stat the double root,
        an inflection point).
    lower_rank_better : whether a lower-rank configuration beats the collapsed one
        (False where proven; None where not checked, see :func:`ncsim.theory.lowrank`).
    """

    collapsed: Array
    sigma: Array
    sigma_mean: Array
    fn_star: Array
    class_mean_norm_star: Array
    class_mean_norm_centred: Array
    w_norm_star: Array
    factor_norms: dict[str, Array]
    margin_star: Array
    logit_true: Array
    logit_other: Array
    bias_star: Array
    loss_star: Array
    objective_star: Array
    objective_zero: Array
    sigma_local: Array
    lower_rank_better: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with numpy arrays (factor norms flattened as ``norm_H``, ``norm_W1`` ...)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("factor_norms", "meta")}
        for k, v in self.factor_norms.items():
            out[f"norm_{k}"] = v
        return out


def minimiser_rank(eq: Equilibrium, K: int) -> int:
    """Rank of the minimiser of a scalar :class:`Equilibrium` of K classes: the K - 1 centred
    label modes, plus the mean mode where it lives (``sigma_mean`` > 0: MSE without bias, or
    with a regularised bias above its threshold); 0 at the origin. A model whose width d is
    below it cannot hold that state."""
    return (int(K) - 1 + int(bool(eq.sigma_mean > 0))) if bool(eq.collapsed) else 0


def check_model(loss: str, bias: str, depth: int) -> None:
    """Raise :class:`InputError` for an unknown loss / bias or a bad depth."""
    require(loss in LOSSES, f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    require(bias in BIASES, f"unknown bias {bias!r}; allowed: {', '.join(BIASES)}")
    require(is_integer(depth) and depth >= 1,
            f"depth must be an integer >= 1, got {depth!r}")


def _first_bad(v: Array, bad: Array) -> str:
    """The first offending entry of ``v`` (where ``bad`` holds) as a short string."""
    return f"{float(v[bad].reshape(-1)[0]):g}"


def check_classes(K: Array, n: Array) -> None:
    """Raise :class:`InputError` unless every K is an integer >= 2 and every n an integer >= 1
    (float arrays from :func:`broadcast_inputs`)."""
    xp = namespace(K, n)
    for v, name, low in ((K, "classes K", 2), (n, "samples per class n", 1)):
        bad = ~(v >= low) | ~xp.isfinite(v)
        bad = bad | (xp.where(bad, xp.full_like(v, 0.0), v) % 1 != 0)  # inf % 1 would warn
        if xp.any(bad):
            raise InputError(f"{name} must be an integer >= {low}, got {_first_bad(v, bad)}")


def check_finite_numbers(xp: Any, *values: Array, name: str, positive: bool = False) -> None:
    """Raise :class:`InputError` unless every entry of ``values`` is a finite number >= 0
    (> 0 when ``positive``)."""
    for v in values:
        bad = ~(v > 0 if positive else v >= 0) | ~xp.isfinite(v)
        if xp.any(bad):
            bound = "> 0" if positive else ">= 0"
            raise InputError(f"{name} must be a finite number {bound}, got {_first_bad(v, bad)}")


def check_decays(xp: Any, *decays: Array, name: str = "weight decays") -> None:
    """Raise :class:`InputError` unless every decay is a finite number >= 0."""
    check_finite_numbers(xp, *decays, name=name)


def _holds_numbers(value: Any) -> bool:
    """Whether ``value`` is a number or an array of numbers (numpy, torch, nested lists): not
    text, not a bool and not an array of them (a float conversion would accept "0.01" and take
    True for 1.0). Anything else is left to the float conversion."""
    if isinstance(value, torch.Tensor):
        return not (value.dtype == torch.bool or value.is_complex())
    if isinstance(value, (str, bytes, bool, np.bool_)):
        return False
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):  # ragged nesting: the broadcast below reports it
        return True
    return kind not in "bUSc"


def broadcast_inputs(names: list[str], values: list[Any]) -> tuple[Array, ...]:
    """:func:`ncsim.theory._backend.broadcast` of ``values`` with an :class:`InputError` (naming
    the input by ``names``) for a value that is not a number (text and booleans included, also
    in an array) or shapes that do not broadcast."""
    for name, v in zip(names, values, strict=True):
        if not _holds_numbers(v):
            raise InputError(f"{name} must be a number or an array of numbers, got {v!r}")
    try:
        return broadcast(*values)
    except (TypeError, ValueError, RuntimeError):
        pass
    for name, v in zip(names, values, strict=True):
        try:
            broadcast(v)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{name} must be a number or an array of numbers, got {v!r}"
                             ) from None
    shapes = dict.fromkeys(f"{name} {tuple(np.shape(v))}" for name, v in zip(names, values,
                                                                              strict=True))
    raise InputError("the parameters must be numbers or arrays that broadcast to one shape, got "
                     "shapes " + ", ".join(shapes))


def _lambdas(lambda_w: Any, lambda_h: Array, depth: int) -> list[Array]:
    """[lambda_W1, ..., lambda_WL, lambda_H] (lambda_w: scalar/array or per-layer tuple)."""
    if isinstance(lambda_w, (tuple, list)):
        if len(lambda_w) != depth:
            raise InputError(f"lambda_w lists {len(lambda_w)} values but depth is {depth}")
        return [*lambda_w, lambda_h]
    return [lambda_w] * depth + [lambda_h]


# smallest normal float64: a ratio of decays below it has lost digits (or underflowed to 0)
TINY_NORMAL = 2.2250738585072014e-308


def geometric_mean(xp: Any, lams: list[Array]) -> Array:
    """Lambda = (prod_j lambda_j)^(1/M), written as m prod_j (lambda_j / m)^(1/M) with m the
    largest decay: exact (Lambda == lambda) when every decay equals lambda, so that a decay set
    to the critical value gives exactly Lambda_crit; 0 where a decay is 0. Where a decay is
    more than ~1e308 times below the largest (lambda_W = 1e300, lambda_H = 1e-300), the ratio
    underflows (it gave Lambda = 0, a collapsed state for a decay of geometric mean 1): there
    the product of the M-th roots, prod_j lambda_j^(1/M), which neither overflows nor
    underflows for decays in the float range."""
    M = len(lams)
    top = lams[0]
    for v in lams[1:]:
        top = xp.maximum(top, v)
    safe = xp.where(top > 0, top, xp.full_like(top, 1.0))
    out = top
    roots = xp.full_like(top, 1.0)
    wide = top < 0  # all False
    for v in lams:
        ratio = v / safe
        out = out * ratio ** (1.0 / M)
        roots = roots * v ** (1.0 / M)
        wide = wide | ((v > 0) & (ratio < TINY_NORMAL))
    out = xp.where(wide, roots, out)
    return xp.where(top > 0, out, xp.full_like(top, 0.0))


def _factor(xp: Any, sigma: Array, lam_j: Array, lam_geo: Array, zeros: Array, M: int) -> Array:
    """Singular value of the factor with decay ``lam_j`` on a mode with logit singular value
    ``sigma`` (0 where sigma = 0). Every decay > 0: lambda-balancing sqrt(Lambda/lambda_j)
    sigma^(1/M). A zero decay (no minimiser): the limit along every minimising sequence, 0 for a
    factor with a decay > 0; for the zero-decay factor inf (without bound) when it is the only
    zero decay and NaN when several are zero (then the limit depends on how they vanish)."""
    safe = xp.where(lam_j > 0, lam_j, xp.full_like(lam_j, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = xp.sqrt(lam_geo / safe) * sigma ** (1.0 / M)
    limit = xp.where(lam_j > 0, xp.full_like(sigma, 0.0),
                     xp.where(zeros == 1, xp.full_like(sigma, float("inf")),
                              xp.full_like(sigma, float("nan"))))
    value = xp.where(zeros > 0, limit, balanced)
    return xp.where(sigma > 0, value, xp.full_like(sigma, 0.0))


def _features(xp: Any, sigma: Array, a_last: Array, lam_last: Array, zeros: Array) -> Array:
    """Singular value p = sigma / a_L of the penultimate features (input of W_L) on a mode.

    A zero decay (no minimiser), the limit along every minimising sequence: inf where the
    classifier decay lambda_WL > 0 (then W_L -> 0 while the logits stay finite); 0 where
    lambda_WL = 0 is the only zero decay (the features' own decays push them to 0); NaN where
    lambda_WL and another decay are 0 (the limit depends on how they vanish)."""
    safe = xp.where(a_last > 0, a_last, xp.full_like(a_last, 1.0))
    limit = xp.where(lam_last > 0, xp.full_like(sigma, float("inf")),
                     xp.where(zeros == 1, xp.full_like(sigma, 0.0),
                              xp.full_like(sigma, float("nan"))))
    with np.errstate(invalid="ignore"):  # inf / inf (CE at a zero decay): replaced by the limit
        value = xp.where(zeros > 0, limit, sigma / safe)
    return xp.where(sigma > 0, value, xp.full_like(sigma, 0.0))


def equilibrium(loss: str, bias: str, K: Array, n: Array, lambda_w: Any, lambda_h: Array,
                lambda_b: Array = 0.0, depth: int = 1,
                check_lower_rank: bool = False, mean_mode: bool = True) -> Equilibrium:
    """Global minimiser of the UFM (depth 1) or the deep linear UFM (depth L >= 2).

    Parameters
    ----------
    loss : "mse" or "ce".
    bias : "none", "free" or "reg" (last-layer bias; ``lambda_b`` > 0 for "reg").
    K, n : classes and samples per class (balanced), arrays broadcast with the decays.
    lambda_w : weight decay of every W_l (array), or a tuple with one array per layer.
    lambda_h : feature decay. lambda_b : bias decay (bias "reg").
    depth : L, the number of weight matrices (M = L + 1 factors).
    check_lower_rank : deep CE only: run :func:`ncsim.theory.lowrank.lower_rank_check` (numeric,
        restarts; scalar parameters) and set ``lower_rank_better``; otherwise it is None there.
        ``meta`` then holds the best lower-rank state found: ``lower_rank`` (its rank),
        ``lower_rank_objective``, ``lower_rank_fn``, ``lower_rank_w_norm`` (RMS row norm of
        W_L) and ``lower_rank_loss`` (mean data loss).
    mean_mode : False: the state with the mean label mode held at 0 (MSE without bias or with
        a regularised bias; the other cases have none): the end state of an init that does not
        seed it (an etf init, or a spectral init with a regularised bias). For depth >= 2 that
        state is a local minimum (the origin of the mean-mode problem is a strict local
        minimum); for one layer the mean mode at 0 is invariant but unstable, so rounding
        errors can seed it. The regularised bias still takes its value for the mean mode at 0.

    Returns
    -------
    Equilibrium with arrays of the broadcast shape (numpy, or torch if any input is torch).

    Raises
    ------
    InputError : unknown loss / bias, depth not an integer >= 1, K not an integer >= 2, n not an
        integer >= 1, a decay that is negative, NaN or infinite, lambda_b not > 0 with bias
        "reg", or values that are not numbers (text such as "0.01" and booleans included, also
        inside an array) or do not broadcast.

    Notes
    -----
    A zero decay is allowed. There is no minimiser then; the norms are the limits along every
    minimising sequence (equal to lambda_j -> 0 of the closed forms): a factor with a decay > 0
    goes to 0, the only zero-decay factor grows without bound (inf); the penultimate features
    (fn_star, class-mean norms) go to inf where the classifier decay lambda_WL > 0 and to 0
    where lambda_WL is the only zero decay. Where several decays are zero the limit depends on
    how they vanish: NaN for the zero-decay factors (and for fn_star if lambda_WL is one).
    The collapse threshold is strict at every depth: at Lambda equal to :func:`Lambda_crit`
    (equal decays set to :func:`lambda_crit`) ``collapsed`` is False (deep heads jump there
    between two states of equal objective; the origin is returned, as just above the
    threshold; deep CE counts an objective gap within 1e-13 relative as that tie, which makes
    it not collapsed within 1e-12 relative below Lambda_crit, see :mod:`ncsim.theory.modes`).
    Below the threshold the state is collapsed to the last ulp (one layer and deep MSE:
    ``collapsed`` iff Lambda < Lambda_crit, and then sigma > 0 and fn_star > 0; one layer
    evaluates sigma from Lambda / Lambda_crit, see :mod:`ncsim.theory.modes`). Unequal decays
    whose geometric mean is Lambda_crit (``lambda_crit(..., ratio=r)``) round to within a few
    ulps of it, on either side; the computed Lambda (:func:`geometric_mean`) decides.
    """
    check_model(loss, bias, depth)
    M = depth + 1
    lams = _lambdas(lambda_w, lambda_h, depth)
    names = ["K", "n", "lambda_b"] + (
        [f"lambda_w[{i}]" for i in range(depth)] if isinstance(lambda_w, (tuple, list))
        else ["lambda_w"] * depth) + ["lambda_h"]
    K, n, lambda_b, *lams = broadcast_inputs(names, [K, n, lambda_b, *lams])
    xp = namespace(K)
    check_classes(K, n)
    check_decays(xp, *lams)
    check_decays(xp, lambda_b, name="lambda_b")  # a decay whatever the bias (used with "reg")
    lam_geo = geometric_mean(xp, lams)
    zero = xp.full_like(K, 0.0)
    N = K * n
    sqn = xp.sqrt(n)
    if loss == "mse":
        main = modes.mse_mode(K, n, lam_geo, M)
        if bias == "none":
            mean_sol, c0 = main, None
        elif bias == "free":
            mean_sol, c0 = None, None
        else:
            bad = ~(lambda_b > 0) | ~xp.isfinite(lambda_b)
            if xp.any(bad):
                raise InputError(f"bias 'reg' needs lambda_b > 0 (a finite number), got "
                                 f"{_first_bad(lambda_b, bad)}")
            c0 = lambda_b / (1 + lambda_b)
            mean_sol = modes.mse_mode(K, n, lam_geo, M, c0)
    else:
        main = modes.ce_ray(K, n, lam_geo, M)
        mean_sol, c0 = None, None
    sig = main.sigma
    if not mean_mode:  # the mean mode held at 0 (its objective is then the origin's)
        mean_sol = None if mean_sol is None else modes.ModeSolution(
            zero, mean_sol.sigma_local, zero > 0, mean_sol.objective_zero,
            mean_sol.objective_zero)
    sig0 = mean_sol.sigma if mean_sol is not None else zero

    zeros = sum((v == 0) * 1.0 for v in lams)  # how many decays are zero (no minimiser)

    def factor(sigma_: Array, lam_j: Array) -> Array:
        return _factor(xp, sigma_, lam_j, lam_geo, zeros, M)

    a_last, a_last0 = factor(sig, lams[depth - 1]), factor(sig0, lams[depth - 1])
    p = _features(xp, sig, a_last, lams[depth - 1], zeros)
    p0 = _features(xp, sig0, a_last0, lams[depth - 1], zeros)
    frac = (K - 1) / K
    fn = xp.sqrt(frac / n * p ** 2 + p0 ** 2 / N)
    fn_centred = xp.sqrt(frac / n) * p
    w_row = xp.sqrt(frac * a_last ** 2 + a_last0 ** 2 / K)
    names = [f"W{i + 1}" for i in range(depth)] + ["H"]
    norms = {name: xp.sqrt((K - 1) * factor(sig, lam) ** 2 + factor(sig0, lam) ** 2)
             for name, lam in zip(names, lams, strict=True)}

    def shortfall(sigma_: Array, c_: Array) -> Array:
        """sqrt(n) - sigma of an MSE mode without cancellation: a non-zero sigma is stationary,
        g'(sigma) = 0, so sqrt(n) - sigma = N Lambda sigma^(2/M - 1) / c (tiny decays kept)."""
        safe = xp.where(sigma_ > 0, sigma_, xp.full_like(sigma_, 1.0))
        return xp.where(sigma_ > 0, N * lam_geo * safe ** (2.0 / M - 1) / c_, sqn + zero)

    # logits: centred part sigma/sqrt(n) (e_k - 1/K); mean part m0 on every entry
    if loss == "mse" and bias == "free":
        b_entry = 1 / K + zero
        resid0 = zero
    elif loss == "mse" and bias == "reg":
        b_entry = shortfall(sig0, c0) / (K * sqn * (1 + lambda_b))
        resid0 = shortfall(sig0, c0) * c0
    elif loss == "mse":
        b_entry, resid0 = zero, shortfall(sig0, 1.0)
    else:
        b_entry, resid0 = zero, zero
    m0 = sig0 / (K * sqn) + b_entry
    margin = sig / sqn
    logit_true = frac * margin + m0
    if loss == "mse":
        # logit_other = m0 - sigma/(K sqrt(n)) = (P(sigma) - P0) / (K sqrt(n)), P(sigma) = sqrt(n)
        # - sigma = N Lambda sigma^q (stationary form, q = 2/M - 1) and P0 = c0 (sqrt(n) -
        # sigma_0) with the mean mode's data weight c0 (1 without bias, lambda_b/(1 + lambda_b)
        # with a regularised one; a free bias, b = 1/K, absorbs the mean mode: P0 = 0). Where
        # the mean mode lives, P0 = N Lambda sigma_0^q and the difference is taken as
        # N Lambda sigma_0^q expm1(q log1p((sigma - sigma_0)/sigma_0)), with sigma - sigma_0
        # = shortfall(sigma_0) - shortfall(sigma): no cancellation at tiny decays, exactly 0
        # for one layer (q = 0) and without bias (sigma_0 = sigma)
        c_mean = {"none": 1.0, "free": 0.0, "reg": c0}[bias]
        q = 2.0 / M - 1
        pull = shortfall(sig, 1.0)
        live0 = (sig0 > 0) & (c_mean * sqn > 0)
        safe0 = xp.where(live0, sig0, xp.full_like(sig0, 1.0))
        c_safe = xp.where(live0, c_mean + zero, xp.full_like(sig0, 1.0))
        gap = shortfall(safe0, c_safe) - shortfall(xp.where(live0, sig, safe0), 1.0)
        both = N * lam_geo * safe0 ** q * xp.expm1(q * xp.log1p(gap / safe0))
        logit_other = xp.where(live0, both, pull - c_mean * sqn) / (K * sqn)
        logit_other = logit_other + 0 * (sig + sig0)  # NaN stays NaN
    else:
        logit_other = -margin / K + m0
    if loss == "mse":
        loss_star = ((K - 1) * shortfall(sig, 1.0) ** 2 + resid0 ** 2) / (2 * N)
        obj = (K - 1) * main.objective
        obj0 = (K - 1) * main.objective_zero
        if mean_sol is not None:
            obj = obj + mean_sol.objective
            obj0 = obj0 + mean_sol.objective_zero
    else:
        finite = xp.isfinite(margin)
        safe = xp.where(finite, margin, zero)
        loss_star = xp.where(finite, xp.log1p((K - 1) * xp.exp(-safe)), zero)
        obj, obj0 = main.objective, main.objective_zero
    lower: Any = False if (loss == "mse" or depth == 1) else None
    meta: dict[str, Any] = {"loss": loss, "bias": bias, "depth": depth, "M": M}
    if lower is None and check_lower_rank:
        from ncsim.theory.lowrank import lower_rank_check

        require(np.size(K) == 1, "check_lower_rank needs scalar parameters")
        lr = lower_rank_check(int(K), int(n), float(lam_geo), depth)
        lower = lr.beats(float(obj))
        last = float(lambda_w[-1] if isinstance(lambda_w, (tuple, list)) else lambda_w)
        state = lr.state(len(lr.objectives), last)
        meta.update(lower_rank_objective=lr.best_objective, lower_rank=lr.best_rank,
                    lower_rank_fn=state.fn, lower_rank_w_norm=state.w_norm,
                    lower_rank_loss=state.loss)
    return Equilibrium(
        collapsed=main.collapsed,
        sigma=sig,
        sigma_mean=sig0,
        fn_star=fn,
        class_mean_norm_star=fn,
        class_mean_norm_centred=fn_centred,
        w_norm_star=w_row,
        factor_norms=norms,
        margin_star=margin,
        logit_true=logit_true,
        logit_other=logit_other,
        bias_star=b_entry,
        loss_star=loss_star,
        objective_star=obj,
        objective_zero=obj0,
        sigma_local=main.sigma_local,
        lower_rank_better=lower,
        meta=meta,
    )
