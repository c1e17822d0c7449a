"""Neural-collapse metrics: batched over runs, and a streaming accumulator for large data.

Layout and shapes
-----------------
Features are rows. For ``R`` runs that share one labelled sample set:

- ``features`` : (R, N, p) penultimate features h_i (input of the last linear layer),
- ``labels`` : (N,) integer classes in [0, K), shared by all runs,
- ``weights`` : (R, K, p) classifier W (rows w_c), ``bias`` : (R, K) or None.

Every metric returns an (R,) tensor, computed in the input dtype (except the small Gram solve of
``nc1``, done in float64) without host syncs: the functions run on a GPU as they are.
:class:`StreamingNC` accumulates one run (R = 1) in float64 over batches and calls the same
formula functions at the end (it may sync: it checks label values and returns floats).

Conventions (README, "What ncsim computes")
---------------------------------
- fn = mean_i |h_i|_2 of the uncentred features.
- Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
  Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T, Mbar = [mu_c - mu_G]_c (K x p).
- mu_G is the sample mean over all N samples (``global_mean="sample"``, default) or the
  unweighted average of the class means (``global_mean="class_average"``); they agree for
  balanced classes.
- ``nc1`` = tr(Sigma_W Sigma_B^+)/K (Papyan et al., with the 1/K of Zhu et al.),
  ``nc1_trace`` = tr(Sigma_W)/tr(Sigma_B) (the paper's form).
- ``nc2_etf`` = || G/|G|_F - (I - 11^T/K)/sqrt(K-1) ||_F with G = Mbar Mbar^T;
  ``nc2_etf_w`` the same on the class-centred classifier Wc = W - mean_c w_c (Zhou et al. 2022).
  Centring makes one target fit every case: for a bias-free MSE UFM the optimal W is an orthogonal
  frame (W W^T = c I), and its centred version is a simplex ETF.
- ``nc2_equinorm`` = std_c |mu_c - mu_G| / mean_c |mu_c - mu_G| (unbiased std, ddof = 1, as the
  Papyan notebook); ``nc2_equinorm_w`` the same on the raw row norms |w_c|.
- ``nc2_angle`` = mean over ordered pairs c != c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(K-1)|.
- ``nc3`` = || Wc/|Wc|_F - Mbar/|Mbar|_F ||_F^2 (self-duality, class-centred W);
  ``nc3_paper`` = 1 - mean_c cos(w_c, mu_c - mu_G) with the raw W (the paper's form).
- ``nc4`` = fraction of samples where argmax_c (W h + b)_c != argmin_c |h - mu_c|
  (ties: the first index, as ``torch.argmax``/``argmin``).
- ``cdnv`` = mean over pairs c < c' of (Var_c + Var_c') / (2 |mu_c - mu_c'|^2),
  Var_c = mean over class c of |h - mu_c|^2 (Galanti et al. 2022).
- ``class_mean_norm`` = mean_c |mu_c - mu_G|_2; ``within_energy`` = tr(Sigma_W);
  ``w_norm`` = |W|_F.

Pseudo-inverse (sync-free). Mbar always has a structural null combination: z^T Mbar = 0 with z
the weights of mu_G (counts/N, or 1/K). Rather than cut that numerically zero singular value by a
tolerance (fragile when |mu_G| >> |Mbar|, where its rounding level is not small), ``nc1``
projects it out exactly: with Q (K, K-1) an orthonormal basis of z-perp, B = Q^T Mbar satisfies
B^T B = Mbar^T Mbar, and tr(Sigma_W Sigma_B^+)/K = |F B^+|_F^2 for any factor F with
F^T F = Sigma_W (F = centred features / sqrt(N) in the batched path: no p x p matrix is formed;
``nc_metrics`` takes nc1 and nc4 from one product of the centred features, see
:func:`_sample_metrics`).
``torch.linalg.pinv``/``svd``/``eigh`` synchronise a CUDA device with the host, so B^+ is a
filtered pseudo-inverse from one small complex solve (``inv_ex``, no sync): with G = B B^T (or
B^T B when p < K-1, whichever is smaller) in float64 and T = Re[(G - i delta I)^{-1}]
= G (G^2 + delta^2 I)^{-1}, B^+ ~ B^T T. Each singular value s of B is inverted with the filter
factor s^4 / (s^4 + delta^2): a soft cut at s ~ sqrt(delta). Above the cut the relative error
is (delta/s^2)^2, <= (delta_rel (K-1) cond(B)^2)^2 while delta is its first term below, e.g.
1e-13 for K = 10, cond 30 in float64.
Below it a component is damped as s^3/delta^2, so nc1 does not jump when a singular value
crosses a threshold, and rounding-level singular values of rank-deficient means add only
(s/s_max)^6 / c^8 relative (c = sqrt(delta)/s_max). delta = max(delta_rel tr G,
10 s_n^(3/2) (tr G)^(1/4)), delta_rel = 1e-10 for float64 features and 1e-7 for lower
precision, s_n the rounding level of Mbar (``ClassStats.mean_noise``): the second term keeps
that share below 1e-4 when the means sit on a large common offset, even if s_n were the
rounding's exact size (measured, it is ~10x above it: then 1e-10).

Resolution. The class means carry rounding errors of about s_n = 8 eps (sqrt(K) + sqrt(p))
max|h| (eps of the features' dtype). Centred means with |Mbar|_F <= 4 s_n are not resolved and
count as exact zeros (``ClassStats.means_centred``): identical features are no collapse.
Likewise the centred classifier Wc = W - mean_c w_c is an exact zero where |Wc|_F <= 4 sqrt(K)
eps max_c |w_c| (equal rows: nc2_etf_w and nc3 are then NaN, not a rounding residue).

Degenerate values (IEEE conventions, no clamping, never an exception):
- exactly collapsed features (Sigma_W = 0, distinct class means): nc1 = nc1_trace = cdnv = 0;
- no between-class spread (tr Sigma_B = 0 to resolution, e.g. all features zero or all equal):
  ``nc1`` and ``nc1_trace`` are tr(Sigma_W)/0, i.e. NaN when Sigma_W = 0 too (tr Sigma_W <= s_n^2)
  and +inf otherwise; every scale-free metric
  that divides by a zero norm (nc2_*, nc3*, cdnv for coincident means) is NaN or inf likewise.
  fn, within_energy, class_mean_norm, w_norm and nc4 stay finite. The simulator flags vanishing
  runs from fn; a NaN never passes an onset test ``metric < threshold``.
- Magnitudes whose squares overflow the dtype (|h| or |w| past ~1.8e19 in float32, ~1.3e154
  in float64): the norms and energies formed from them are inf, and every scale-free metric
  that divides by one of them is NaN (a ratio finite / inf would read as an exact collapse);
  nc4 is NaN where a sample's largest logit or smallest mean distance is not finite. fn,
  class_mean_norm, within_energy and w_norm are then inf.
- A class without samples has undefined mean. Inputs on the CPU are checked (labels in range,
  every class present) and raise :class:`~ncsim.errors.InputError`; on other devices that check
  would need a host sync, so it is skipped and such a class yields NaN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ncsim.errors import is_integer, require
from ncsim.products import matmul

__all__ = [
    "GLOBAL_MEANS",
    "METRIC_NAMES",
    "ClassStats",
    "StreamingNC",
    "cdnv",
    "cdnv_from_stats",
    "cdnv_of_pairs",
    "class_mean_norm",
    "class_statistics",
    "feature_norm",
    "mean_noise",
    "nc1",
    "nc1_from_stats",
    "nc1_trace",
    "nc1_trace_from_stats",
    "nc2_angle",
    "nc2_equinorm",
    "nc2_equinorm_w",
    "nc2_etf",
    "nc2_etf_w",
    "nc3",
    "nc3_paper",
    "nc4",
    "nc_metrics",
]

GLOBAL_MEANS = ("sample", "class_average")

METRIC_NAMES: tuple[str, ...] = (
    "fn",
    "nc1",
    "nc1_trace",
    "nc2_etf",
    "nc2_etf_w",
    "nc2_equinorm",
    "nc2_equinorm_w",
    "nc2_angle",
    "nc3",
    "nc3_paper",
    "nc4",
    "cdnv",
    "class_mean_norm",
    "within_energy",
    "w_norm",
)

# --------------------------------------------------------------------------------------------
# class statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClassStats:
    """Per-class statistics of R runs that share the labels.

    Attributes
    ----------
    counts : (K,) int64, samples per class.
    means : (R, K, p), class means mu_c.
    global_mean : (R, p), mu_G (see ``mean_weights``).
    within_factor : (R, m, p), any F with s^2 F^T F = Sigma_W, s = ``within_scale`` (the
        centred features h_i - mu_{y_i} in the batched path, m = N, s = 1/sqrt(N); a symmetric
        square root in the streaming path, m = p, s = 1).
    within_energy : (R,), tr(Sigma_W) (squared feature units).
    feature_norm : (R,), fn = mean_i |h_i|_2 (feature units).
    class_var : (R, K), Var_c = mean over class c of |h - mu_c|^2.
    mean_weights : (K,), z with mu_G = sum_c z_c mu_c (counts/N or 1/K), in the means' dtype.
    mean_noise : (R,), rounding level s_n of the centred class means (feature units, see
        :func:`mean_noise`); spreads below it are not resolved.
    within_scale : s of ``within_factor`` (1 / sqrt(N) when its rows are the samples).
    """

    counts: Tensor
    means: Tensor
    global_mean: Tensor
    within_factor: Tensor
    within_energy: Tensor
    feature_norm: Tensor
    class_var: Tensor
    mean_weights: Tensor
    mean_noise: Tensor
    within_scale: float = 1.0

    @property
    def K(self) -> int:
        """Number of classes."""
        return self.means.shape[-2]

    @functools.cached_property
    def means_centred(self) -> Tensor:
        """(R, K, p) centred class means Mbar = mu_c - mu_G; exact zeros for a run whose
        |Mbar|_F is not above 4 ``mean_noise`` (no between-class spread resolved). Computed
        once per statistics object."""
        m = self.means - self.global_mean.unsqueeze(-2)
        resolved = (m * m).sum((-2, -1)) > (4.0 * self.mean_noise) ** 2
        return m * resolved.to(m.dtype).unsqueeze(-1).unsqueeze(-1)  # NaN stays NaN

    @property
    def sigma_w(self) -> Tensor:
        """(R, p, p) within-class covariance Sigma_W (formed on demand: O(m p^2))."""
        f = self.within_factor
        return (f.transpose(-1, -2) @ f) * self.within_scale**2

    @property
    def sigma_b(self) -> Tensor:
        """(R, p, p) between-class covariance Sigma_B = Mbar^T Mbar / K."""
        m = self.means_centred
        return m.transpose(-1, -2) @ m / self.K


def _one_hot(labels: Tensor, K: int, dtype: torch.dtype) -> Tensor:
    """(N, K) one-hot matrix; built by comparison (no sync, unlike ``F.one_hot``)."""
    return (labels.unsqueeze(-1) == torch.arange(K, device=labels.device)).to(dtype)


def _mean_weights(counts: Tensor, global_mean: str, dtype: torch.dtype) -> Tensor:
    """(K,) weights z of the class means in mu_G."""
    c = counts.to(dtype)
    if global_mean == "sample":
        return c / c.sum()
    return torch.full_like(c, 1.0 / c.shape[0])


def _abs_max(x: Tensor) -> Tensor:
    """(R,) largest |entry| of x (R, N, p), from its max and min (no |x| temporary; 13x faster
    than the inf-norm reduction on the CPU)."""
    return torch.maximum(x.amax((-2, -1)), -x.amin((-2, -1)))


def mean_noise(scale: Tensor, K: int, p: int, dtype: torch.dtype) -> Tensor:
    """Rounding level s_n = 8 eps (sqrt(K) + sqrt(p)) scale of centred class means.

    Parameters
    ----------
    scale : (R,) largest |entry| of the features (or of the means), feature units.
    K, p : classes and feature dimension. dtype : the dtype the means were computed in.

    Returns
    -------
    Tensor
        (R,) in feature units: about the largest singular value of the means' rounding error.
    """
    return 8.0 * torch.finfo(dtype).eps * (K ** 0.5 + p ** 0.5) * scale


def class_statistics(
    features: Tensor, labels: Tensor, K: int, global_mean: str = "sample"
) -> ClassStats:
    """Class counts, means, global mean and within-class statistics, batched over runs.

    Parameters
    ----------
    features : (R, N, p) float tensor, rows are samples.
    labels : (N,) integer tensor with values in [0, K), shared by all runs.
    K : number of classes (>= 2).
    global_mean : "sample" (mu_G = mean of all N samples) or "class_average" (unweighted mean
        of the class means).

    Returns
    -------
    ClassStats
        Batched statistics in the dtype of ``features`` (counts are int64).
    """
    labels = _check_features(features, labels, K)
    _check_global_mean(global_mean)
    dtype = features.dtype
    n = features.shape[-2]
    member = labels.unsqueeze(-1) == torch.arange(K, device=labels.device)  # (N, K) bool
    onehot = member.to(dtype)
    counts = member.sum(0)  # int64
    counts_f = counts.to(dtype)
    means = matmul(onehot.transpose(0, 1), features) / counts_f.unsqueeze(-1)  # (R, K, p)
    z = _mean_weights(counts, global_mean, dtype)
    mu_g = (means * z.unsqueeze(-1)).sum(-2)  # sum_c z_c mu_c: no pass over the samples
    centred = features - means.index_select(-2, labels)  # (R, N, p)
    sq = torch.linalg.vector_norm(centred, dim=-1).square()  # (R, N), one pass, no temporary
    return ClassStats(
        counts=counts,
        means=means,
        global_mean=mu_g,
        within_factor=centred,
        within_energy=sq.sum(-1) / n,
        feature_norm=feature_norm(features),
        class_var=(sq @ onehot) / counts_f,
        mean_weights=z,
        mean_noise=mean_noise(_abs_max(features), K, features.shape[-1], dtype),
        within_scale=n**-0.5,
    )


# --------------------------------------------------------------------------------------------
# formulas on class statistics (shared by the batched and the streaming paths)
# --------------------------------------------------------------------------------------------


def _complement_basis(z: Tensor) -> Tensor:
    """(K, K-1) orthonormal basis of the complement of z (Householder reflector, no sync)."""
    K = z.shape[0]
    u = z / torch.linalg.vector_norm(z)
    e1 = (torch.arange(K, device=z.device) == 0).to(u.dtype)  # no host scalar: capturable
    v = u + e1  # u[0] >= 0, so no cancellation
    h = torch.eye(K, dtype=z.dtype, device=z.device) - 2.0 * torch.outer(v, v) / (v @ v)
    return h[:, 1:]


def _filtered_inverse(gram: Tensor, delta_rel: float, noise: Tensor | None = None) -> Tensor:
    """(R, m, m) T = Re[(G - i delta I)^{-1}] = G (G^2 + delta^2 I)^{-1} of a PSD Gram G.

    ``gram`` (R, m, m) float64; ``noise`` (R,) rounding level s_n of the factor whose Gram it
    is (same units as its singular values), or None for no rounding floor. delta as in the
    module docstring; no host sync.
    """
    m = gram.shape[-1]
    delta_rel = max(delta_rel, 16.0 * m * torch.finfo(torch.float64).eps)
    tr = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    delta = delta_rel * tr
    if noise is not None:
        delta = torch.maximum(delta, 10.0 * noise.to(tr.dtype) ** 1.5 * tr.clamp_min(0.0) ** 0.25)
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    shifted = torch.complex(gram, -delta.unsqueeze(-1).unsqueeze(-1) * eye)
    inverse, _ = torch.linalg.inv_ex(shifted)  # info unread: no sync
    return inverse.real


def _soft_pinv(b: Tensor, delta_rel: float, noise: Tensor) -> Tensor:
    """(R, p, k) filtered pseudo-inverse B^T T (or T B^T) of b (R, k, p), float64, no sync."""
    b64 = b.to(torch.float64)
    bt = b64.transpose(-1, -2)
    if b.shape[-1] >= b.shape[-2]:
        return bt @ _filtered_inverse(b64 @ bt, delta_rel, noise)
    return _filtered_inverse(bt @ b64, delta_rel, noise) @ bt


def _where_finite(value: Tensor, *parts: Tensor) -> Tensor:
    """``value`` where every one of ``parts`` (same shape) is finite, else NaN: a ratio whose
    energies or norms overflowed the dtype (|h| past ~1.8e19 in float32, ~1.3e154 in float64)
    has no digits left, and would otherwise read as an exact 0 (finite / inf) or 1."""
    finite = torch.ones_like(value, dtype=torch.bool)
    for part in parts:
        finite = finite & torch.isfinite(part)
    return torch.where(finite, value, torch.full_like(value, math.nan))


def _over_zero_spread(within: Tensor, noise: Tensor) -> Tensor:
    """within / 0 for a spread zero to resolution: NaN if ``within`` <= noise^2, else inf."""
    return torch.where(within > noise * noise, torch.full_like(within, math.inf),
                       torch.full_like(within, math.nan))


def nc1_from_stats(stats: ClassStats) -> Tensor:
    """NC1 = tr(Sigma_W Sigma_B^+)/K from class statistics; see :func:`nc1`.

    Returns
    -------
    Tensor
        (R,) dimensionless, in the dtype of the statistics.
    """
    return _nc1_of_product(matmul(stats.within_factor, _nc1_pinv(stats)), stats)


def _nc1_pinv(stats: ClassStats) -> Tensor:
    """(R, p, K-1) filtered pseudo-inverse B^+ of B = Q^T Mbar (module docstring), in the
    statistics' dtype."""
    mbar = stats.means_centred
    q = _complement_basis(stats.mean_weights)  # (K, K-1)
    b = q.transpose(0, 1) @ mbar  # (R, K-1, p), B^T B = Mbar^T Mbar
    return _soft_pinv(b, _nc1_delta_rel(mbar.dtype), stats.mean_noise).to(mbar.dtype)


def _nc1_of_product(x: Tensor, stats: ClassStats) -> Tensor:
    """(R,) NC1 = s^2 |F B^+|_F^2 from x = F B^+ (R, m, K-1), F = ``stats.within_factor``;
    tr(Sigma_W)/0 (inf or NaN) where no between-class spread is resolved."""
    mbar = stats.means_centred
    value = (x * x).sum((-2, -1)) * stats.within_scale**2
    tr_b = (mbar * mbar).sum((-2, -1)) / stats.K
    nc1 = torch.where(tr_b > 0, value, _over_zero_spread(stats.within_energy, stats.mean_noise))
    return _where_finite(nc1, tr_b, stats.within_energy)


def _nc1_delta_rel(dtype: torch.dtype) -> float:
    """Relative Tikhonov level of ``nc1``'s pseudo-inverse for features of ``dtype``."""
    return 1e-10 if dtype == torch.float64 else 1e-7


def nc1_trace_from_stats(stats: ClassStats) -> Tensor:
    """NC1 (trace form) = tr(Sigma_W)/tr(Sigma_B); 0/0 gives NaN. Returns (R,)."""
    mbar = stats.means_centred
    tr_b = (mbar * mbar).sum((-2, -1)) / stats.K
    within = stats.within_energy
    ratio = torch.where(tr_b > 0, within / tr_b, _over_zero_spread(within, stats.mean_noise))
    return _where_finite(ratio, tr_b, within)


# Above this many R K^2 p terms the pair distances come from a float64 Gram: the difference
# kernel runs at ~1.4 GFLOP/s on the CPU (cdnv 14 -> 120 ms at R = 64, K = 100, p = 256).
_DIRECT_PAIR_TERMS = 2**22


def _pair_sq_dist(mbar: Tensor, noise: Tensor) -> Tensor:
    """(R, K, K) squared distances |mu_c - mu_c'|^2; exact 0 where a distance is not above
    4 ``noise``. From the differences themselves up to :data:`_DIRECT_PAIR_TERMS` (close means
    keep their digits); beyond, from the Gram of the centred means in float64 (relative error
    ~1e-16 (|mu_c|^2 + |mu_c'|^2) / |mu_c - mu_c'|^2)."""
    r, k, p = mbar.shape
    if r * k * k * p <= _DIRECT_PAIR_TERMS:
        dist2 = torch.cdist(mbar, mbar, compute_mode="donot_use_mm_for_euclid_dist").square()
    else:
        m64 = mbar.to(torch.float64)
        g = m64 @ m64.transpose(-1, -2)
        d = torch.diagonal(g, dim1=-2, dim2=-1)
        dist2 = (d.unsqueeze(-1) + d.unsqueeze(-2) - 2.0 * g).clamp_min(0.0).to(mbar.dtype)
    resolved = dist2 > (4.0 * noise.unsqueeze(-1).unsqueeze(-1)) ** 2
    return dist2 * resolved.to(dist2.dtype)


def cdnv_from_stats(stats: ClassStats) -> Tensor:
    """CDNV averaged over the K(K-1)/2 class pairs; see :func:`cdnv`. Returns (R,)."""
    dist2 = _pair_sq_dist(stats.means_centred, stats.mean_noise)
    return cdnv_of_pairs(stats.class_var, dist2, stats.mean_noise)


def cdnv_of_pairs(class_var: Tensor, dist2: Tensor, noise: Tensor) -> Tensor:
    """(R,) mean over pairs c < c' of (Var_c + Var_c') / (2 dist2_cc'), from the per-class
    variances (R, K) and squared mean distances (R, K, K) (0 where not resolved: then inf, or
    NaN when the variances are at the rounding level ``noise`` (R,) too)."""
    k = class_var.shape[-1]
    num = 0.5 * (class_var.unsqueeze(-1) + class_var.unsqueeze(-2))
    iu = torch.triu_indices(k, k, offset=1, device=class_var.device)
    num, dist2 = num[..., iu[0], iu[1]], dist2[..., iu[0], iu[1]]
    ratio = torch.where(dist2 > 0, num / dist2, _over_zero_spread(num, noise.unsqueeze(-1)))
    return _where_finite(ratio, num, dist2).mean(-1)


def _stats_metrics(stats: ClassStats, weights: Tensor | None) -> dict[str, Tensor]:
    """Every metric of :data:`METRIC_NAMES` except ``nc1`` and ``nc4`` (and the W ones
    without W)."""
    mbar = stats.means_centred
    out = {
        "fn": stats.feature_norm,
        "nc1_trace": nc1_trace_from_stats(stats),
        "nc2_etf": nc2_etf(mbar),
        "nc2_equinorm": nc2_equinorm(mbar),
        "nc2_angle": nc2_angle(mbar),
        "cdnv": cdnv_from_stats(stats),
        "class_mean_norm": class_mean_norm(mbar),
        "within_energy": stats.within_energy,
    }
    if weights is not None:
        out["nc2_etf_w"] = nc2_etf_w(weights)
        out["nc2_equinorm_w"] = nc2_equinorm_w(weights)
        out["nc3"] = nc3(weights, mbar)
        out["nc3_paper"] = nc3_paper(weights, mbar)
        out["w_norm"] = torch.linalg.vector_norm(weights, dim=(-2, -1))
    return out


# --------------------------------------------------------------------------------------------
# public metrics
# --------------------------------------------------------------------------------------------


def feature_norm(features: Tensor) -> Tensor:
    """fn = mean_i |h_i|_2 of the uncentred features.

    Parameters
    ----------
    features : (R, N, p).

    Returns
    -------
    Tensor
        (R,) in feature units.
    """
    if features.dtype == torch.float64:
        return torch.linalg.vector_norm(features, dim=-1).mean(-1)
    # lower precision: squares accumulated in float64, so that features of 1e-24 (squares
    # below float32's range) or 1e20 (above it) keep their norm instead of 0 or inf
    wide = torch.linalg.vector_norm(features, dim=-1, dtype=torch.float64).mean(-1)
    return wide.to(features.dtype)


def nc1(features: Tensor, labels: Tensor, K: int, global_mean: str = "sample") -> Tensor:
    """NC1 = tr(Sigma_W Sigma_B^+)/K (Papyan et al.; sync-free pinv, see the module docstring).

    Parameters
    ----------
    features : (R, N, p). labels : (N,) in [0, K). K : classes.
    global_mean : "sample" or "class_average" (definition of mu_G in Sigma_B).

    Returns
    -------
    Tensor
        (R,) dimensionless; 0 for exactly collapsed features, NaN/inf when Sigma_B = 0.
    """
    return nc1_from_stats(class_statistics(features, labels, K, global_mean))


def nc1_trace(features: Tensor, labels: Tensor, K: int, global_mean: str = "sample") -> Tensor:
    """NC1 (trace form) = tr(Sigma_W)/tr(Sigma_B), the paper's metric.

    No clamping: tr(Sigma_B) = 0 gives NaN when tr(Sigma_W) = 0 (e.g. all features zero) and
    +inf otherwise.

    Parameters
    ----------
    features : (R, N, p). labels : (N,) in [0, K). K : classes.
    global_mean : "sample" or "class_average".

    Returns
    -------
    Tensor
        (R,) dimensionless.
    """
    return nc1_trace_from_stats(class_statistics(features, labels, K, global_mean))


def _etf_distance(x: Tensor) -> Tensor:
    """|| G/|G|_F - (I - 11^T/K)/sqrt(K-1) ||_F with G = x x^T, x (R, K, p).

    x is scaled to unit Frobenius norm first, so G does not over- or underflow (x^4)."""
    K = x.shape[-2]
    x = x / _finite_norm(x, (-2, -1))
    g = x @ x.transpose(-1, -2)
    g = g / torch.linalg.vector_norm(g, dim=(-2, -1)).unsqueeze(-1).unsqueeze(-1)
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    target = (eye - 1.0 / K) / (K - 1) ** 0.5
    return torch.linalg.vector_norm(g - target, dim=(-2, -1))


def _centre_classes(weights: Tensor) -> Tensor:
    """(R, K, p) W minus its mean row; exactly 0 where |Wc|_F is not above the rounding of the
    subtraction, 4 sqrt(K) eps max_c |w_c| (identical rows have no centred part: the
    normalised metrics are then 0/0 = NaN, not a rounding residue). NaN stays NaN."""
    wc = weights - weights.mean(-2, keepdim=True)
    k = weights.shape[-2]
    level = (4.0 * k ** 0.5 * torch.finfo(weights.dtype).eps
             * torch.linalg.vector_norm(weights, dim=-1).amax(-1))
    resolved = torch.linalg.vector_norm(wc, dim=(-2, -1)) > level
    return wc * resolved.to(wc.dtype).unsqueeze(-1).unsqueeze(-1)


def _equinorm(x: Tensor) -> Tensor:
    """std_c |x_c| / mean_c |x_c| (ddof = 1) for x (R, K, p)."""
    return spread_over_mean(torch.linalg.vector_norm(x, dim=-1))


def spread_over_mean(values: Tensor) -> Tensor:
    """std / mean (ddof = 1) along the last axis of ``values`` (R, K): (R,).

    Two passes (mean, then the centred squares' sum), each a plain sum per row, so that a
    row's value does not depend on how many rows share the call: ``Tensor.std`` takes
    another path for R > 1 at small K (K = 3: the last bit differs between a run alone and
    in a batch)."""
    mean = values.mean(-1, keepdim=True)
    spread = (values - mean).square().sum(-1).div(values.shape[-1] - 1).sqrt()
    return spread / mean.squeeze(-1)


def nc2_etf(means_centred: Tensor) -> Tensor:
    """NC2: distance of the normalised Gram of centred means to the simplex ETF.

    Parameters
    ----------
    means_centred : (R, K, p), Mbar = mu_c - mu_G.

    Returns
    -------
    Tensor
        (R,) in [0, 2]; scale-invariant, penalises unequal norms and angles; NaN if Mbar = 0.
    """
    _check_blocks(means_centred=means_centred)
    return _etf_distance(means_centred)


def nc2_etf_w(weights: Tensor) -> Tensor:
    """NC2 on the classifier: ETF distance of Wc Wc^T, Wc = W - mean_c w_c.

    Centring makes both the CE/biased optimum (an ETF) and the bias-free MSE optimum (an
    orthogonal frame, whose centred version is an ETF) score 0.

    Parameters
    ----------
    weights : (R, K, p).

    Returns
    -------
    Tensor
        (R,) in [0, 2].
    """
    _check_blocks(weights=weights)
    return _etf_distance(_centre_classes(weights))


def nc2_equinorm(means_centred: Tensor) -> Tensor:
    """NC2 equinorm: std_c |mu_c - mu_G| / mean_c |mu_c - mu_G| (unbiased std).

    Parameters
    ----------
    means_centred : (R, K, p).

    Returns
    -------
    Tensor
        (R,) coefficient of variation; NaN if every centred mean is zero.
    """
    _check_blocks(means_centred=means_centred)
    return _equinorm(means_centred)


def nc2_equinorm_w(weights: Tensor) -> Tensor:
    """NC2 equinorm of the classifier rows: std_c |w_c| / mean_c |w_c| (raw W, ddof = 1).

    Parameters
    ----------
    weights : (R, K, p).

    Returns
    -------
    Tensor
        (R,).
    """
    _check_blocks(weights=weights)
    return _equinorm(weights)


def _finite_norm(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """|x| over ``dim`` (kept), NaN where it overflowed to inf (x / inf would read as 0)."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return torch.where(torch.isinf(norm), torch.full_like(norm, math.nan), norm)


def _unit_rows(x: Tensor) -> Tensor:
    """Rows of x (..., K, p) scaled to unit length; NaN rows where a norm overflowed."""
    return x / _finite_norm(x, -1)


def nc2_angle(means_centred: Tensor) -> Tensor:
    """NC2 (paper): mean over ordered pairs c != c' of |cos(mu_c, mu_c') + 1/(K-1)|.

    Cosines are between centred means.

    Parameters
    ----------
    means_centred : (R, K, p).

    Returns
    -------
    Tensor
        (R,) dimensionless; 0 for a simplex ETF.
    """
    _check_blocks(means_centred=means_centred)
    K = means_centred.shape[-2]
    u = _unit_rows(means_centred)
    cos = u @ u.transpose(-1, -2)
    off = ~torch.eye(K, dtype=torch.bool, device=cos.device)
    dev = (cos + 1.0 / (K - 1)).abs() * off
    return dev.sum((-2, -1)) / (K * (K - 1))


def nc3(weights: Tensor, means_centred: Tensor) -> Tensor:
    """NC3 self-duality: || Wc/|Wc|_F - Mbar/|Mbar|_F ||_F^2, Wc = W - mean_c w_c.

    Parameters
    ----------
    weights : (R, K, p). means_centred : (R, K, p).

    Returns
    -------
    Tensor
        (R,) in [0, 4].
    """
    _check_blocks(weights=weights, means_centred=means_centred)
    wc = _centre_classes(weights)
    d = wc / _finite_norm(wc, (-2, -1)) - means_centred / _finite_norm(means_centred, (-2, -1))
    return (d * d).sum((-2, -1))


def nc3_paper(weights: Tensor, means_centred: Tensor) -> Tensor:
    """NC3 (paper): 1 - mean_c cos(w_c, mu_c - mu_G) with the raw (uncentred) W.

    Parameters
    ----------
    weights : (R, K, p). means_centred : (R, K, p).

    Returns
    -------
    Tensor
        (R,) in [0, 2].
    """
    _check_blocks(weights=weights, means_centred=means_centred)
    cos = (_unit_rows(weights) * _unit_rows(means_centred)).sum(-1)
    return 1.0 - cos.mean(-1)


def _ncc_mismatch(features: Tensor, logits: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """(R, N) bool: argmax of the logits differs from the nearest class mean; and (R,) bool:
    the run's decisions are made on finite numbers (:func:`_decided`).

    Distances are expanded about the first class mean, so a large common offset of the
    features costs no precision: argmin_c |m_c|^2 - 2 h' . m_c with h' = h - ref, m = mu - ref.
    The reference is a class mean, not their average, so that features and means on a grid
    (integers, dyadic fractions) give exactly tied scores where their distances tie, and the
    first of the tied classes is taken (an average such as 2/3 would be rounded and decide
    the tie by its rounding).
    """
    ref = means[..., :1, :]
    hc = features - ref
    mc = means - ref
    score = (mc * mc).sum(-1).unsqueeze(-2) - 2.0 * matmul(hc, mc.transpose(-1, -2))  # (R, N, K)
    # max/min's indices are argmax/argmin's (the first of ties, NaN first), ~30% faster on the CPU
    return _decided(logits.max(-1), score.min(-1))


def _decided(top: Any, nearest: Any) -> tuple[Tensor, Tensor]:
    """(R, N) mismatches of the argmax of the logits and the nearest mean, from their
    ``max(-1)`` / ``min(-1)`` results, and (R,) bool: every deciding value (largest logit,
    smallest distance) is finite. A logit or distance that overflowed to inf, or a NaN,
    decides no argmax; an inf that decides nothing (a far mean) does not count."""
    finite = (torch.isfinite(top.values) & torch.isfinite(nearest.values)).all(-1)
    return top.indices != nearest.indices, finite


def _mismatch_fraction(mismatch: Tensor, finite: Tensor, dtype: torch.dtype) -> Tensor:
    """(R,) nc4 from the (R, N) mismatches; NaN for a run whose deciding values are not all
    finite (``finite`` (R,), :func:`_decided`)."""
    fraction = mismatch.to(dtype).mean(-1)
    return torch.where(finite, fraction, torch.full_like(fraction, math.nan))


def nc4(features: Tensor, weights: Tensor, bias: Tensor | None, means: Tensor) -> Tensor:
    """NC4: fraction of samples where argmax_c (W h + b)_c != argmin_c |h - mu_c|.

    Parameters
    ----------
    features : (R, N, p). weights : (R, K, p). bias : (R, K) or None.
    means : (R, K, p) uncentred class means mu_c.

    Returns
    -------
    Tensor
        (R,) fraction in [0, 1], in the dtype of ``features``.
    """
    require(
        isinstance(features, Tensor) and features.ndim == 3,
        f"features must be an (R, N, p) tensor, got shape {_shape(features)}",
    )
    r, _, p = features.shape
    require(
        isinstance(means, Tensor)
        and means.ndim == 3
        and means.shape[0] == r
        and means.shape[2] == p,
        f"means must have shape (R, K, p) = ({r}, K, {p}), got {_shape(means)}",
    )
    if isinstance(weights, Tensor) and weights.ndim == 3:  # K from the classifier
        require(means.shape[1] == weights.shape[1],
                f"means hold {means.shape[1]} classes but the weights {weights.shape[1]}; "
                f"give one class mean per row of the weights, shape ({r}, "
                f"{weights.shape[1]}, {p})")
    _check_weights(weights, bias, r, means.shape[1], p, features.dtype)
    logits = matmul(features, weights.transpose(-1, -2))
    if bias is not None:
        logits = logits + bias.unsqueeze(-2)
    return _mismatch_fraction(*_ncc_mismatch(features, logits, means), features.dtype)


def cdnv(features: Tensor, labels: Tensor, K: int) -> Tensor:
    """Class-distance normalised variance (Galanti et al. 2022), mean over pairs c < c'.

    V(c, c') = (Var_c + Var_c') / (2 |mu_c - mu_c'|^2), Var_c = mean_{i in c} |h_i - mu_c|^2.

    Parameters
    ----------
    features : (R, N, p). labels : (N,) in [0, K). K : classes.

    Returns
    -------
    Tensor
        (R,) dimensionless; inf if two class means coincide, NaN if also Var = 0.
    """
    return cdnv_from_stats(class_statistics(features, labels, K))


def class_mean_norm(means_centred: Tensor) -> Tensor:
    """Mean norm of the centred class means, mean_c |mu_c - mu_G|_2.

    Parameters
    ----------
    means_centred : (R, K, p).

    Returns
    -------
    Tensor
        (R,) in feature units.
    """
    _check_blocks(means_centred=means_centred)
    return torch.linalg.vector_norm(means_centred, dim=-1).mean(-1)


def nc_metrics(
    features: Tensor,
    labels: Tensor,
    K: int,
    weights: Tensor,
    bias: Tensor | None = None,
    global_mean: str = "sample",
) -> dict[str, Tensor]:
    """Every metric of :data:`METRIC_NAMES`, sharing one set of class statistics.

    Parameters
    ----------
    features : (R, N, p). labels : (N,) in [0, K). K : classes.
    weights : (R, K, p) classifier. bias : (R, K) or None (used by nc4 only).
    global_mean : "sample" or "class_average".

    Returns
    -------
    dict[str, Tensor]
        Keys exactly :data:`METRIC_NAMES` in that order, each an (R,) tensor.
    """
    if isinstance(features, Tensor):  # (anything else is refused by class_statistics)
        features = features.contiguous()  # rows of a transposed view make every reduction slow
    stats = class_statistics(features, labels, K, global_mean)  # checks features and labels
    _check_weights(weights, bias, features.shape[0], K, features.shape[-1], features.dtype)
    out = _stats_metrics(stats, weights)
    out["nc1"], out["nc4"] = _sample_metrics(stats, labels.to(torch.int64), weights, bias)
    return {name: out[name] for name in METRIC_NAMES}


def _sample_metrics(stats: ClassStats, labels: Tensor, weights: Tensor,
                    bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """(nc1, nc4), each (R,), from one product of the centred features.

    ``stats`` must come from :func:`class_statistics` (its ``within_factor`` holds the centred
    features E, e_i = h_i - mu_{y_i}, (R, N, p)). One product E [B^+ | M^T | W^T] (R, N, 3K-1),
    M = mu_c - mu_0, gives both: nc1 = |E B^+|_F^2 / N, and with h_i = mu_{y_i} + e_i,

    - logits: W h_i + b = W e_i + (W mu_{y_i} + b),
    - nearest mean: |h_i - mu_c|^2 = |m_c|^2 - 2 m_{y_i} . m_c - 2 e_i . m_c + (terms of i alone),
      expanded about mu_0 as :func:`_ncc_mismatch` is (exact ties for features on a grid).

    The centred features are read once, by that product, instead of once per metric (and
    the features no more for nc4); :func:`nc1_from_stats` and :func:`nc4` are the same
    metrics computed one by one (equal to rounding; ``benchmarks/metrics.py`` times both).
    """
    centred, means, k = stats.within_factor, stats.means, stats.K
    offsets = means - means[..., :1, :]  # (R, K, p)
    rhs = torch.cat([_nc1_pinv(stats), offsets.transpose(-1, -2), weights.transpose(-1, -2)],
                    dim=-1)  # (R, p, 3K-1)
    x_pinv, x_offsets, x_weights = matmul(centred, rhs).split([k - 1, k, k], dim=-1)
    gram = offsets @ offsets.transpose(-1, -2)  # (R, K, K)
    mean_score = torch.diagonal(gram, dim1=-2, dim2=-1).unsqueeze(-2) - 2.0 * gram
    score = mean_score.index_select(-2, labels) - 2.0 * x_offsets  # (R, N, K)
    mean_logits = means @ weights.transpose(-1, -2)  # (R, K, K): row y = W mu_y
    if bias is not None:
        mean_logits = mean_logits + bias.unsqueeze(-2)
    logits = x_weights + mean_logits.index_select(-2, labels)
    nc4 = _mismatch_fraction(*_decided(logits.max(-1), score.min(-1)), centred.dtype)
    return _nc1_of_product(x_pinv, stats), nc4


def nc_metrics_from_stats(stats: ClassStats, features: Tensor, weights: Tensor,
                          bias: Tensor | None = None) -> dict[str, Tensor]:
    """Every metric of :data:`METRIC_NAMES` from class statistics already at hand (any
    ``within_factor``) and the features (R, N, p) they describe (nc4 needs every sample)."""
    _check_weights(weights, bias, features.shape[0], stats.K, features.shape[-1], features.dtype)
    out = _stats_metrics(stats, weights)
    out["nc1"] = nc1_from_stats(stats)
    out["nc4"] = nc4(features, weights, bias, stats.means)
    return {name: out[name] for name in METRIC_NAMES}


# --------------------------------------------------------------------------------------------
# streaming accumulator
# --------------------------------------------------------------------------------------------


class StreamingNC:
    """Accumulate NC statistics of one run over batches, in float64.

    Pass 1: :meth:`update` with every batch. It keeps per-class counts, per-class means and the
    pooled within-class scatter about the class means, merged batch by batch with the parallel
    update of Chan, Golub & LeVeque (no raw second moments, so a large common offset costs no
    precision), plus per-class scatter traces (for CDNV) and the sum of |h|_2 (for fn).
    Optional pass 2 for NC4, which needs the final class means: :meth:`begin_nc4`, then
    :meth:`update_nc4` with every batch and the network's logits (bias included).
    :meth:`compute` returns the metrics as floats, via the same formulas as :func:`nc_metrics`.

    Parameters
    ----------
    K : number of classes (>= 2).
    p : feature dimension.
    device : where the accumulators live.
    """

    def __init__(self, K: int, p: int, device: str | torch.device = "cpu") -> None:
        _check_K(K)
        require(
            is_integer(p) and p >= 1, f"feature dimension p must be an int >= 1, got {p!r}"
        )
        self.K = int(K)
        self.p = int(p)
        self.device = torch.device(device)
        f64 = {"dtype": torch.float64, "device": self.device}
        self._counts = torch.zeros(K, dtype=torch.int64, device=self.device)
        self._means = torch.zeros(K, p, **f64)
        self._scatter = torch.zeros(p, p, **f64)
        self._class_scatter = torch.zeros(K, **f64)
        self._norm_sum = torch.zeros((), **f64)
        self._largest_entry = torch.zeros((), **f64)
        self._nc4_means: Tensor | None = None
        self._nc4_mismatch = torch.zeros((), dtype=torch.int64, device=self.device)
        self._nc4_finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._nc4_count = 0

    @property
    def n_samples(self) -> int:
        """Samples seen in pass 1."""
        return int(self._counts.sum())

    def _batch(self, features: Tensor) -> Tensor:
        require(
            isinstance(features, Tensor) and features.ndim == 2 and features.shape[1] == self.p,
            f"features must be a (B, {self.p}) tensor, got shape {_shape(features)}",
        )
        require(features.is_floating_point(), f"features must be floating, got {features.dtype}")
        return features.to(device=self.device, dtype=torch.float64)

    def _check_logits(self, logits: Tensor, b: int) -> None:
        require(
            isinstance(logits, Tensor) and tuple(logits.shape) == (b, self.K),
            f"logits must have shape ({b}, {self.K}), got {_shape(logits)}",
        )

    def update(self, features: Tensor, labels: Tensor, logits: Tensor | None = None) -> None:
        """Add one batch to pass 1.

        Parameters
        ----------
        features : (B, p) float tensor (any float dtype and device; accumulated in float64).
        labels : (B,) integer tensor in [0, K).
        logits : (B, K) or None. Accepted so one loop can feed both passes; pass 1 only checks
            its shape (NC4 needs the final means and comes from :meth:`update_nc4`).
        """
        require(self._nc4_means is None, "update() after begin_nc4(): pass 1 is closed")
        x = self._batch(features)
        y = _check_labels_1d(labels, x.shape[0], self.K, force=True).to(self.device)
        if logits is not None:
            self._check_logits(logits, x.shape[0])
        onehot = _one_hot(y, self.K, torch.float64)  # (B, K)
        nb = onehot.sum(0)  # (K,)
        bmean = (onehot.T @ x) / nb.clamp_min(1.0).unsqueeze(-1)
        c = x - bmean.index_select(0, y)
        na = self._counts.to(torch.float64)
        n = na + nb
        frac = torch.where(n > 0, nb / n.clamp_min(1.0), torch.zeros_like(n))
        w = na * frac  # n_a n_b / n
        delta = bmean - self._means
        self._scatter += c.T @ c + (delta * w.unsqueeze(-1)).T @ delta
        self._class_scatter += onehot.T @ (c * c).sum(-1) + w * (delta * delta).sum(-1)
        self._means += delta * frac.unsqueeze(-1)
        self._counts += nb.to(torch.int64)
        self._norm_sum += torch.linalg.vector_norm(x, dim=-1).sum()
        if x.shape[0]:  # an empty batch adds nothing (and has no largest entry)
            self._largest_entry = torch.maximum(self._largest_entry,
                                                _abs_max(x.unsqueeze(0))[0])

    def begin_nc4(self) -> None:
        """Close pass 1 and start the NC4 pass with the final class means."""
        self._check_classes_present()
        self._nc4_means = self._means.clone()
        self._nc4_mismatch.zero_()
        self._nc4_finite.fill_(True)
        self._nc4_count = 0

    def update_nc4(self, features: Tensor, logits: Tensor) -> None:
        """Add one batch to the NC4 pass.

        Parameters
        ----------
        features : (B, p) float tensor.
        logits : (B, K) network output W h + b for these features.
        """
        require(self._nc4_means is not None, "update_nc4() before begin_nc4()")
        x = self._batch(features)
        self._check_logits(logits, x.shape[0])
        z = logits.to(device=self.device, dtype=torch.float64)
        mism, finite = _ncc_mismatch(x.unsqueeze(0), z.unsqueeze(0),
                                     self._nc4_means.unsqueeze(0))
        self._nc4_mismatch += mism.sum()
        self._nc4_finite &= finite[0]
        self._nc4_count += x.shape[0]

    def _check_classes_present(self) -> None:
        empty = (self._counts == 0).nonzero().flatten().tolist()
        require(not empty, f"classes {empty} have no samples; every class needs one")

    def stats(self, global_mean: str = "sample") -> ClassStats:
        """Accumulated statistics as a :class:`ClassStats` with R = 1 (float64).

        ``within_factor`` is the symmetric square root of Sigma_W (negative rounding
        eigenvalues set to 0; NaN where Sigma_W is not finite: NaN or inf features, or
        squares past the float64 range).
        """
        _check_global_mean(global_mean)
        self._check_classes_present()
        n = self._counts.sum().to(torch.float64)
        z = _mean_weights(self._counts, global_mean, torch.float64)
        mu_g = z @ self._means
        sigma_w = self._scatter / n
        if bool(torch.isfinite(sigma_w).all()):
            evals, evecs = torch.linalg.eigh(0.5 * (sigma_w + sigma_w.T))
            factor = evals.clamp_min(0.0).sqrt().unsqueeze(-1) * evecs.T
        else:  # NaN / inf features, or squares past the float64 range: NaN, never an error
            factor = torch.full_like(sigma_w, math.nan)
        return ClassStats(
            counts=self._counts.clone(),
            means=self._means.unsqueeze(0).clone(),
            global_mean=mu_g.unsqueeze(0),
            within_factor=factor.unsqueeze(0),
            within_energy=(self._class_scatter.sum() / n).reshape(1),
            feature_norm=(self._norm_sum / n).reshape(1),
            class_var=(self._class_scatter / self._counts.to(torch.float64)).unsqueeze(0),
            mean_weights=z,
            mean_noise=mean_noise(self._largest_entry.reshape(1), self.K, self.p, torch.float64),
        )

    def compute(
        self,
        weights: Tensor | None = None,
        bias: Tensor | None = None,
        global_mean: str = "sample",
    ) -> dict[str, float]:
        """Metrics of everything accumulated so far.

        Parameters
        ----------
        weights : (K, p) classifier or None (then the W metrics are left out).
        bias : (K,) or None; only checked (NC4 comes from the logits of the NC4 pass).
        global_mean : "sample" or "class_average".

        Returns
        -------
        dict[str, float]
            The keys of :data:`METRIC_NAMES` that are available, in that order: always fn,
            nc1, nc1_trace, nc2_etf, nc2_equinorm, nc2_angle, cdnv, class_mean_norm,
            within_energy; with ``weights`` also nc2_etf_w, nc2_equinorm_w, nc3, nc3_paper,
            w_norm; nc4 once the NC4 pass has seen samples, which must be as many as pass 1
            saw (:class:`InputError` otherwise: a batch left out of one pass).
        """
        w = None
        if weights is not None:
            require(
                isinstance(weights, Tensor) and tuple(weights.shape) == (self.K, self.p),
                f"weights must have shape ({self.K}, {self.p}), got {_shape(weights)}",
            )
            w = weights.to(device=self.device, dtype=torch.float64).unsqueeze(0)
        if bias is not None:
            require(
                isinstance(bias, Tensor) and tuple(bias.shape) == (self.K,),
                f"bias must have shape ({self.K},), got {_shape(bias)}",
            )
        stats = self.stats(global_mean)
        out = _stats_metrics(stats, w)
        out["nc1"] = nc1_from_stats(stats)
        if self._nc4_count > 0:
            seen = int(self._counts.sum())
            require(self._nc4_count == seen,
                    f"the NC4 pass saw {self._nc4_count} samples and pass 1 {seen}: NC4 is over "
                    "the samples of the class means; feed every batch to both passes")
            fraction = self._nc4_mismatch.to(torch.float64).reshape(1) / self._nc4_count
            out["nc4"] = torch.where(self._nc4_finite, fraction,  # NaN: a batch not finite
                                     torch.full_like(fraction, math.nan))
        return {k: float(out[k][0]) for k in METRIC_NAMES if k in out}


# --------------------------------------------------------------------------------------------
# input checks (shape checks always; value checks only where they cost no device sync)
# --------------------------------------------------------------------------------------------


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _check_blocks(**blocks: Tensor) -> None:
    """Each block an (R, K, p) float tensor with K >= 2, all of one shape."""
    shapes = set()
    for name, x in blocks.items():
        require(
            isinstance(x, Tensor) and x.ndim == 3 and x.is_floating_point() and x.shape[1] >= 2,
            f"{name} must be a float (R, K, p) tensor with K >= 2, got {_shape(x)}",
        )
        shapes.add(tuple(x.shape))
    names = ", ".join(blocks)
    require(len(shapes) == 1, f"{names} must have one shape (R, K, p), got {sorted(shapes)}")


def _check_K(K: int) -> None:
    require(
        is_integer(K) and K >= 2,
        f"number of classes K must be an int >= 2, got {K!r}",
    )


def _check_global_mean(global_mean: str) -> None:
    require(
        global_mean in GLOBAL_MEANS,
        f"unknown global_mean {global_mean!r}; allowed: {', '.join(GLOBAL_MEANS)}",
    )


def _check_labels_1d(labels: Tensor, n: int, K: int, force: bool = False) -> Tensor:
    """Check shape and dtype; values too when on the CPU (or ``force``, which may sync).
    Returns the labels as int64 (the index dtype of torch's gathers; uint8 IDX labels)."""
    require(
        isinstance(labels, Tensor) and labels.ndim == 1 and labels.shape[0] == n,
        f"labels must be a ({n},) tensor matching the features, got shape {_shape(labels)}",
    )
    require(
        not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool,
        f"labels must be an integer tensor, got {labels.dtype}",
    )
    if (force or labels.device.type == "cpu") and n > 0:
        lo, hi = int(labels.min()), int(labels.max())
        require(lo >= 0 and hi < K, f"labels must lie in [0, {K}), got values in [{lo}, {hi}]")
    return labels.to(torch.int64)


def _check_features(features: Tensor, labels: Tensor, K: int) -> Tensor:
    """Check features (R, N, p), labels (N,) and K; returns the labels as int64."""
    _check_K(K)
    require(
        isinstance(features, Tensor) and features.ndim == 3,
        f"features must be an (R, N, p) tensor, got shape {_shape(features)}",
    )
    require(features.dtype in (torch.float32, torch.float64),
            f"features must be float32 or float64, got {features.dtype}; cast them (e.g. "
            f".float()): the metrics' sums and products need at least float32")
    require(features.shape[1] > 0, "features must hold at least one sample (N >= 1)")
    require(features.shape[2] > 0, "features must have at least one dimension (p >= 1)")
    labels = _check_labels_1d(labels, features.shape[1], K)
    require(
        labels.device == features.device,
        f"labels on {labels.device} but features on {features.device}; use one device",
    )
    if labels.device.type == "cpu":
        counts = torch.bincount(labels, minlength=K)
        empty = (counts == 0).nonzero().flatten().tolist()
        require(not empty, f"classes {empty} have no samples; every class needs one")
    return labels


def _check_weights(
    weights: Tensor, bias: Tensor | None, r: int, K: int, p: int, dtype: torch.dtype
) -> None:
    require(
        isinstance(weights, Tensor) and tuple(weights.shape) == (r, K, p),
        f"weights must have shape (R, K, p) = ({r}, {K}, {p}), got {_shape(weights)}",
    )
    require(
        weights.dtype == dtype, f"weights are {weights.dtype} but features are {dtype}; cast one"
    )
    if bias is not None:
        require(
            isinstance(bias, Tensor) and tuple(bias.shape) == (r, K),
            f"bias must have shape (R, K) = ({r}, {K}), got {_shape(bias)}",
        )
        require(bias.dtype == dtype, f"bias is {bias.dtype} but features are {dtype}; cast one")
