"""Values of the theory package checked against independent references, closed forms and
invariances: the imbalanced KKT certificate and threshold column, the onset model (regularised
bias, late onsets, delta = 0, deep escape times), deep thresholds and basin roots, regime
columns, the lower-rank search and the derivation cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from ncsim.errors import InputError
from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec
from ncsim.theory import cache, equilibrium
from ncsim.theory.columns import theory_columns
from ncsim.theory.imbalance import kkt_residual
from ncsim.theory.prediction import predicted_onset


def test_kkt_residual_counts_the_gradient_between_support_and_complement():
    """MSE without bias, counts (1, 2, 4): the gradient of the smooth part in the scaled
    coordinates is G = (X - diag(sqrt n_k)) / N. At X = x u v^T with u = e_3 and
    v = (0, sin t, cos t), Lambda = (2 cos t - x) / N makes u^T G v = -Lambda (support
    condition exact) and |P_u G P_v|_2 <= sqrt(2) / N < Lambda (off-support condition met), but
    u^T G P_v = -(2/N) e_3^T P_v = -(2/N)(0, -sin t cos t, sin^2 t) and
    P_u G v = -(0, sqrt(2) sin t, 0)/N do not vanish: the point is not optimal, and its
    residual is the largest of those entries over Lambda, 2 sin t cos t / (2 cos t - x)."""
    counts = np.array([1.0, 2.0, 4.0])
    N, t, x = 7.0, 0.3, 0.2
    X = x * np.outer([0.0, 0.0, 1.0], [0.0, math.sin(t), math.cos(t)])
    Lam = (2 * math.cos(t) - x) / N
    got = kkt_residual("mse", counts, Lam, 0.0, X, np.zeros(3), "none")
    want = 2 * math.sin(t) * math.cos(t) / (2 * math.cos(t) - x)
    assert got == pytest.approx(want, rel=1e-12)


def _reg_bias_onset_reference(K, n, d, lw, lh, lb, a, threshold):
    """(onset, fn crossing, delta) of the onset model with a regularised bias, written here
    from the model (prediction's module docstring): K - 1 centred modes (w, h) with the MSE mode
    ODE and the mean mode (w0, h0) with the bias component beta = u0^T b along u0 = 1/sqrt(K):
    its logit on the mode is w0 h0 + sqrt(N) beta against the target sqrt(n), so with the
    residual r = sqrt(n) - w0 h0 - sqrt(N) beta, dw0/dt = r h0 / N - lW w0,
    dh0/dt = r w0 / N - lH h0, dbeta/dt = r / sqrt(N) - lb beta. Each mode starts at sqrt(d) a
    along the growing eigenvector of its Jacobian at 0, [[-lW, g c], [g c, -lH]] with
    g = 1/(K sqrt n) and c = 1 (centred) or lb/(1 + lb) (the mean mode once the bias has
    settled); the decaying part is linear. Within-class energy: a^2 d (N - K) e^(-2 lH t) times
    the fraction outside range(W) plus the K - 1 centred directions decaying with int w^2/N and
    the mean direction with int w0^2/N. Eigenvectors in closed form, DOP853 at rtol 1e-12."""
    N, s, sqN = K * n, math.sqrt(n), math.sqrt(K * n)

    def split(g):
        root = math.sqrt(((lw - lh) / 2) ** 2 + g * g)
        mu_p, mu_m = -(lw + lh) / 2 + root, -(lw + lh) / 2 - root
        e_p = np.array([g, mu_p + lw]) / math.hypot(g, mu_p + lw)
        return e_p, (mu_m + lw) ** 2 / (g * g + (mu_m + lw) ** 2), mu_m

    g = 1.0 / (K * s)
    e_p, e_mh2, mu_m = split(g)
    m_p, m_mh2, mu0_m = split(g * lb / (1 + lb))

    def rhs(t, y):
        w, h, _, w0, h0, _, beta = y
        r = s - w0 * h0 - sqN * beta
        return [(s - w * h) * h / N - lw * w, (s - w * h) * w / N - lh * h, w * w / N,
                r * h0 / N - lw * w0, r * w0 / N - lh * h0, w0 * w0 / N, r / sqN - lb * beta]

    def curves(t, y):
        h, integ, h0, integ0 = y[1], y[2], y[4], y[5]
        between = (K - 1) * (h * h + d * a * a * e_mh2 * np.exp(2 * mu_m * t))
        kept = (d - K) / d + (K - 1) / d * np.exp(-2 * integ) + np.exp(-2 * integ0) / d
        within = a * a * d * (N - K) * np.exp(-2 * lh * t) * kept
        mean = h0 * h0 + d * a * a * m_mh2 * np.exp(2 * mu0_m * t)
        return within / between, np.sqrt((between + within + mean) / N)

    t_max = 1e4
    y0 = [*(math.sqrt(d) * a * e_p), 0.0, *(math.sqrt(d) * a * m_p), 0.0, 0.0]
    sol = solve_ivp(rhs, (0.0, t_max), y0, method="DOP853", rtol=1e-12, atol=1e-15,
                    dense_output=True)
    assert sol.success
    grid = np.concatenate([[0.0], np.geomspace(1e-3, t_max, 20000)])
    nc1, fn = curves(grid, sol.sol(grid))
    fn_star = float(equilibrium("mse", "reg", K, n, lw, lh, lb).fn_star)
    delta = -0.05 if fn[0] <= fn_star else 0.05

    def first(values, level, which, falling):
        above = values - level if not falling else level - values
        i = int(np.flatnonzero((above[:-1] < 0) & (above[1:] >= 0))[0])
        return brentq(lambda t: curves(t, sol.sol(t))[which] - level, grid[i], grid[i + 1],
                      xtol=1e-13, rtol=1e-13)

    return (first(nc1, threshold, 0, True), first(fn, (1 + delta) * fn_star, 1, delta > 0),
            delta)


@pytest.mark.parametrize(("lw", "lh", "lb", "a"), [(0.03, 0.005, 1.0, 0.2),
                                                   (0.005, 0.02, 0.5, 0.05)])
def test_reg_bias_onset_equals_an_independent_solve_for_unequal_decays(lw, lh, lb, a):
    """MSE with a regularised bias and lambda_W != lambda_H (the mean mode's w0 and h0 then
    differ, and its eigen-split depends on the settled data weight lambda_b/(1 + lambda_b)):
    onset and fn crossing against the model solved independently here."""
    K, n, d, thr = 4, 5, 20, 0.01
    onset, cross, delta = _reg_bias_onset_reference(K, n, d, lw, lh, lb, a, thr)
    pred = predicted_onset("mse", "reg", K, n, d, lw, lh, a, thr, lambda_b=lb)
    assert pred.regime == "ok"
    assert pred.delta == delta
    assert pred.onset_time == pytest.approx(onset, rel=1e-7)
    assert pred.fn_cross_time == pytest.approx(cross, rel=1e-7)


def test_fn_crossing_at_delta_zero_is_taken_from_the_side_fn_starts_on():
    """delta = 0 with fn starting below fn* (K = 4, n = 5, d = 20, lambda = 0.01, init 0.1):
    the crossing is the first rise to fn* itself, so it lies just after the rise to
    (1 - 1e-4) fn* (fn rises with a non-zero slope there: 20.773 vs 20.780), not at a later
    fall back to fn* after an overshoot."""
    below = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 0.1, delta=-1e-4)
    at = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 0.1, delta=0.0)
    assert at.delta == 0.0
    assert below.fn_cross_time < at.fn_cross_time < below.fn_cross_time * (1 + 1e-3)
    assert at.lead_time == pytest.approx(at.onset_time - at.fn_cross_time, rel=1e-12)


def test_deep_escape_time_depends_on_the_decays_through_their_geometric_mean_only():
    """Deep MSE (L = 2) with lambda_W = 0.02, lambda_H = 0.005: the equilibrium and the balanced
    mode flow depend on the decays only through Lambda = (lambda_H lambda_W^2)^(1/3), so the
    mode escape time from an init above the basin band equals that of equal decays Lambda."""
    lw, lh = 0.02, 0.005
    lam = (lh * lw * lw) ** (1.0 / 3.0)
    unequal = predicted_onset("mse", "none", 4, 5, 20, lw, lh, 0.3, depth=2)
    equal = predicted_onset("mse", "none", 4, 5, 20, lam, lam, 0.3, depth=2)
    assert unequal.regime == equal.regime == "escape_time_only"
    assert math.isfinite(equal.onset_time)
    assert unequal.onset_time == pytest.approx(equal.onset_time, rel=1e-9)


def _run_spec(loss: str = "mse", bias: str = "none", K: int = 4, n: int = 5, d: int = 20,
              depth: int = 1, lw=0.01, lh: float = 0.01, lb: float = 0.0,
              init: str = "gaussian", scale: float = 1e-3, metric: str = "nc1_trace",
              per_class=None, width=None) -> RunSpec:
    return RunSpec(model=ModelSpec(kind="deep" if depth > 1 else "ufm", loss=loss, bias=bias,
                                   classes=K,
                                   per_class=n if per_class is None else per_class, dim=d,
                                   depth=depth, width=width),
                   reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=init, scale=scale),
                   onset=OnsetSpec(metric=metric)).validate()


def test_zero_decay_onset_column_is_given_for_nc1_trace_only():
    """lambda_H = 0 (no minimiser): the early-phase onset is still predicted for the onset
    metric nc1_trace (the only one the onset model describes), and is NaN for another metric
    such as nc1, like every other onset column."""
    trace = theory_columns(_run_spec(lh=0.0))
    other = theory_columns(_run_spec(lh=0.0, metric="nc1"))
    assert trace["theory_regime"].startswith("no_minimiser")
    assert other["theory_regime"].startswith("no_minimiser")
    assert 0.0 < trace["onset_time_theory"] < math.inf
    assert math.isnan(other["onset_time_theory"])


def test_lower_rank_witness_is_limited_to_the_hidden_width():
    """Deep CE, K = 4, n = 2, L = 2, decays 1.02 Lambda_crit: the ETF state is above the origin,
    yet states of rank 1 and 2 lie below it (rank 2 lower still). A hidden width of 1 can hold
    only rank-1 logits, so the regime names the best rank-1 state, not the rank-2 one."""
    from ncsim.theory.critical import Lambda_crit
    from ncsim.theory.lowrank import lower_rank_check

    lam = 1.02 * float(Lambda_crit("ce", 4, 2, 2))
    lr = lower_rank_check(4, 2, lam, 2)
    assert lr.objectives[1] < lr.objectives[0] < math.log(4) - 1e-3  # both beat the origin
    row = theory_columns(_run_spec(loss="ce", K=4, n=2, depth=2, lw=lam, lh=lam, width=1))
    assert row["theory_regime"].startswith(
        f"lower_rank: the origin (f = {math.log(4):.6g}; the ETF state is above it) is not the "
        f"minimiser; a rank-1 state has f = {lr.objectives[0]:.6g}, "
        f"fn = {lr.state(1, lam).fn:.6g} ")
    assert row["collapsed_theory"] is True
    # the columns search at (lam^3)^(1/3), one ulp from lam: its own numeric search, whose
    # optimum agrees to the search's tolerance (a few 1e-9), not bit for bit
    assert row["fn_lower_rank_theory"] == pytest.approx(lr.state(1, lam).fn, rel=1e-7)
    assert abs(lr.state(2, lam).fn - lr.state(1, lam).fn) > 1e-3  # the rank-2 state differs


def test_deep_spectral_init_in_a_metastable_basin_is_flagged():
    """Deep MSE (K = 4, n = 5, L = 2) at the decay halfway (geometrically) between Lambda_glob
    and Lambda_stat: the origin is the global minimiser, yet a collapsed local minimum exists,
    and a spectral init at 3 a_u (above its basin root) flows to it. The row keeps the global
    minimiser's columns (not collapsed, fn* = 0), the onset 0 (the init starts collapsed and
    stays so), and says so in the regime."""
    from ncsim.theory.critical import basin_threshold, deep_thresholds

    th = deep_thresholds(4, 5, 0.01, 2)
    lam = math.sqrt(float(th.Lambda_glob) * float(th.Lambda_stat))
    a_u = float(basin_threshold("mse", 4, 5, lam, 2))
    row = theory_columns(_run_spec(K=4, n=5, depth=2, lw=lam, lh=lam, init="spectral",
                                   scale=3 * a_u))
    assert row["theory_regime"].startswith("metastable: the init is in the basin of a collapsed "
                                           "local minimum")
    assert row["onset_time_theory"] == 0.0
    assert row["collapsed_theory"] is False
    assert row["fn_star_theory"] == 0.0


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("lb", [0.25, 3.0])
def test_reg_bias_objective_at_the_origin_includes_the_optimal_bias(depth, lb):
    """f at W = H = 0 with a regularised bias is min over b of
    (1/(2K)) sum_k |b - e_k|^2 + lambda_b/2 |b|^2 (balanced classes), minimised by
    b = 1/(K (1 + lambda_b)) on every entry (gradient (1/K) sum_k (b - e_k) + lambda_b b = 0);
    it does not depend on the decays or the depth. Evaluated here entry by entry."""
    K, n = 4, 5
    b = np.full(K, 1.0 / (K * (1 + lb)))
    want = (sum(np.sum((b - np.eye(K)[k]) ** 2) for k in range(K)) / (2 * K)
            + lb / 2 * float(b @ b))
    eq = equilibrium("mse", "reg", K, n, 0.01, 0.02, lb, depth)
    assert float(eq.objective_zero) == pytest.approx(want, rel=1e-13)


def test_deep_ce_sigma_jump_is_the_equal_objective_state_at_lambda_crit():
    """critical_table's sigma_jump (deep CE, K = 4, n = 5, L = 2) is the collapsed state at
    Lambda_crit: non-zero, and its objective log(1 + (K-1) e^(-sigma/sqrt n)) + (K-1)(M/2)
    Lambda sigma^(2/M), written here, equals the origin's log K there (the definition of the
    global threshold) to the accuracy of the bisected threshold."""
    from ncsim.theory.critical import critical_table

    K, n, M = 4, 5, 3
    tab = critical_table("ce", "none", K, n, 2)
    sig, lam = tab["sigma_jump"], tab["Lambda_crit"]
    assert sig > 1.0
    g = math.log1p((K - 1) * math.exp(-sig / math.sqrt(n))) + (K - 1) * M / 2 * lam * sig ** (
        2 / M)
    assert g == pytest.approx(math.log(K), rel=1e-8)


@pytest.mark.parametrize(("factor", "fate"), [(0.8, "origin"), (2.0, "collapse")])
def test_aligned_fate_with_a_data_weight_equals_the_fate_with_scaled_decays(factor, fate):
    """An MSE mode with data weight c flows as da_j/dt = c (s - u)/N prod_(i != j) a_i -
    lambda_j a_j; in the time c t this is the flow with weight 1 and decays lambda_j / c, so
    both reach the same end state. Unequal decays (0.02, 0.02, 0.005), c = 0.5 (the weight of
    a mean label mode with lambda_b = 1), inits at multiples of the equal-decay basin root of
    the scaled decays' geometric mean, K = 4, n = 5."""
    from ncsim.theory.critical import basin_threshold
    from ncsim.theory.dynamics import aligned_fate

    decays, c = (0.02, 0.02, 0.005), 0.5
    scaled = tuple(v / c for v in decays)
    a_u = float(basin_threshold("mse", 4, 5, math.prod(decays) ** (1 / 3) / c, 2))
    assert aligned_fate("mse", 4, 5, factor * a_u, scaled) == fate
    assert aligned_fate("mse", 4, 5, factor * a_u, decays, c) == fate


@pytest.mark.parametrize(("bias", "rank"), [("none", 3), ("free", 2)])
def test_imbalanced_columns_need_d_at_least_the_rank_of_the_minimiser(bias, rank):
    """Imbalanced MSE, counts (2, 3, 5), lambda = 0.01: every label mode is alive, so the
    minimiser has rank K = 3 without bias and K - 1 = 2 with a free bias (the centred labels).
    A feature dimension equal to that rank holds it (the columns are given); one less does not
    (not applicable)."""
    fits = theory_columns(_run_spec(bias=bias, K=3, per_class=(2, 3, 5), d=rank))
    short = theory_columns(_run_spec(bias=bias, K=3, per_class=(2, 3, 5), d=rank - 1))
    assert fits["theory_regime"].startswith("ok: imbalanced equilibrium")
    assert fits["fn_star_theory"] > 0
    assert short["theory_regime"] == "not_applicable: d below the rank of the minimiser"
    assert math.isnan(short["fn_star_theory"])


def test_source_key_follows_the_bytes_of_the_sources(monkeypatch, tmp_path):
    """The key of the derivation cache covers the contents of the package's source files, not
    only their names: editing a file (same name, new bytes) gives a new key, and restoring it
    gives the old key back."""
    (tmp_path / "cache.py").write_text("a = 1\n")
    (tmp_path / "other.py").write_text("b = 2\n")
    monkeypatch.setattr(cache, "__file__", str(tmp_path / "cache.py"))
    key = cache.source_key.__wrapped__()
    (tmp_path / "other.py").write_text("b = 3\n")
    edited = cache.source_key.__wrapped__()
    (tmp_path / "other.py").write_text("b = 2\n")
    assert edited != key
    assert cache.source_key.__wrapped__() == key


def test_a_derivation_filed_under_other_sources_is_not_reused(monkeypatch, tmp_path):
    """A derivation cached under one source key is read back under that key only: after the
    sources change (another key) the derivation runs again and gives its new value, and the
    old sources' file still serves the old key."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "REGISTERED", list(cache.REGISTERED))  # keep the package's list
    value = [sp.Integer(1)]

    def derived() -> dict[str, sp.Expr]:
        return {"v": value[0]}

    monkeypatch.setattr(cache, "source_key", lambda: "old-sources")
    assert cache.derivation(derived)()["v"] == 1
    value[0] = sp.Integer(2)
    monkeypatch.setattr(cache, "source_key", lambda: "new-sources")
    assert cache.derivation(derived)()["v"] == 2
    monkeypatch.setattr(cache, "source_key", lambda: "old-sources")
    assert cache.derivation(derived)()["v"] == 1
    assert len(list(tmp_path.glob("*.pickle"))) == 2


@dataclass(frozen=True)
class _Doubled:
    value: float


def test_a_numeric_cache_file_of_another_type_is_recomputed(monkeypatch, tmp_path):
    """A numeric cache file that does not hold the declared result type (damaged, or another
    program's) is a miss: the function runs again and returns its own result."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    calls = []

    @cache.numeric(_Doubled)
    def doubled(x: float) -> _Doubled:
        calls.append(x)
        return _Doubled(2 * x)

    assert doubled(1.5) == _Doubled(3.0)
    (path,) = tmp_path.glob("*.pickle")
    cache._write(path, {"value": 99.0})
    doubled.cache_clear()
    assert doubled(1.5) == _Doubled(3.0)
    assert calls == [1.5, 1.5]
    assert cache._load(path) == _Doubled(3.0)  # rewritten


def test_imbalanced_reg_bias_has_no_threshold_column():
    """Imbalanced MSE with a regularised bias: the minimiser is certified numerically and no
    closed-form threshold is derived (the largest label singular value rule holds without or
    with a free bias only), so lambda_crit_theory is NaN while the equilibrium columns are
    given."""
    reg = theory_columns(_run_spec(bias="reg", lb=0.5, K=3, per_class=(2, 3, 5), d=5))
    assert reg["theory_regime"].startswith("ok: imbalanced equilibrium (certified_numeric)")
    assert reg["fn_star_theory"] > 0
    assert math.isnan(reg["lambda_crit_theory"])


@pytest.mark.parametrize(("K", "n", "depth"), [(4, 5, 2), (3, 2, 3), (10, 20, 2)])
def test_deep_ce_threshold_separates_collapse_to_1e_10(K, n, depth):
    """Deep CE: Lambda_crit is the root of g(sigma*(Lambda)) - g(0) (a bisection): equal decays
    a relative 1e-10 below it give the collapsed ETF state, 1e-10 above it the origin (the
    tie rule of the equilibrium acts only within 1e-12 relative, see ncsim.theory.modes)."""
    from ncsim.theory.critical import Lambda_crit

    lc = float(Lambda_crit("ce", K, n, depth))
    below = equilibrium("ce", "none", K, n, lc * (1 - 1e-10), lc * (1 - 1e-10), 0.0, depth)
    above = equilibrium("ce", "none", K, n, lc * (1 + 1e-10), lc * (1 + 1e-10), 0.0, depth)
    assert bool(below.collapsed) and not bool(above.collapsed)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("fraction", [0.5, 1 - 1e-6])
def test_mse_basin_root_solves_the_stationarity_up_to_lambda_stat(depth, fraction):
    """Deep MSE (K = 4, n = 5): the basin root a_u is the lower root of
    phi(a) = a^(M-2) (sqrt(n) - a^M) / N = lambda, below the maximiser
    x_m = (sqrt(n) (M-2) / (2(M-1)))^(1/M) of phi (d phi/da = 0 there, written here). Checked
    halfway up and just below Lambda_stat = phi(x_m), where both roots close in on x_m."""
    from ncsim.theory.critical import basin_threshold

    K, n, M = 4, 5, depth + 1
    s, N = math.sqrt(n), K * n
    x_m = (s * (M - 2) / (2 * (M - 1))) ** (1 / M)
    lam = fraction * x_m ** (M - 2) * (s - x_m ** M) / N
    a_u = float(basin_threshold("mse", K, n, lam, depth))
    assert a_u < x_m
    assert a_u ** (M - 2) * (s - a_u ** M) / N == pytest.approx(lam, rel=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_mse_exact_critical_decay_is_not_collapsed(depth):
    """Deep MSE: at equal decays set to lambda_crit the collapsed state and the origin have equal
    objectives (a first-order jump) and the origin wins the tie, for every (K, n) of
    2..12 x 1..20; a relative 1e-12 below it every point is collapsed."""
    from ncsim.theory.critical import lambda_crit

    K, n = (v.ravel() * 1.0 for v in np.meshgrid(np.arange(2, 13), np.arange(1, 21)))
    lc = lambda_crit("mse", "none", K, n, depth)
    at = equilibrium("mse", "none", K, n, lc, lc, 0.0, depth)
    assert not np.any(at.collapsed) and np.all(at.sigma == 0)
    below = equilibrium("mse", "none", K, n, lc * (1 - 1e-12), lc * (1 - 1e-12), 0.0, depth)
    assert np.all(below.collapsed)


def test_lower_rank_search_covers_ranks_below_k_minus_1_only():
    """The lower-rank search covers the ranks 1 .. K - 2 below the ETF's rank K - 1: one
    objective per rank, none for K = 2 (rank 0 and an infinite best objective, so nothing
    beats any state)."""
    from ncsim.theory.lowrank import lower_rank_check

    assert len(lower_rank_check(4, 2, 0.05, 2).objectives) == 2
    two = lower_rank_check(2, 3, 0.05, 2)
    assert two.objectives == () and two.best_rank == 0 and two.best_objective == math.inf
    assert not two.beats(0.0)


def test_lower_rank_objectives_never_rise_with_the_rank():
    """objectives[r - 1] is the best state of rank <= r, so it cannot rise with r. At K = 5,
    n = 1, depth 2 and Lambda = 1.19 Lambda_crit the rank-2 searches end in a local minimum
    0.0278 above the origin (objective ln 5), which the rank-1 search already reaches: the
    rank-2 entry is the origin's objective too."""
    from ncsim.theory.critical import Lambda_crit
    from ncsim.theory.lowrank import lower_rank_check

    lam = 1.19 * float(Lambda_crit("ce", 5, 1, 2))
    result = lower_rank_check(5, 1, lam, 2)
    objectives = np.array(result.objectives)
    assert np.all(np.diff(objectives) <= 0)
    np.testing.assert_allclose(objectives[:2], math.log(5), rtol=1e-12)
    assert result.best_rank == 1


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_imbalanced_free_bias_ignores_a_bias_decay(loss):
    """lambda_b is the decay of a regularised bias only: with a free bias (trained without a
    penalty) a lambda_b passed along, as the run table passes its field for every bias,
    changes nothing."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    free = imbalanced_equilibrium(loss, "free", (2, 3, 5), 0.01, 0.02)
    given = imbalanced_equilibrium(loss, "free", (2, 3, 5), 0.01, 0.02, 0.5)
    assert given.objective_star == pytest.approx(free.objective_star, rel=1e-9)
    assert given.objective_zero == pytest.approx(free.objective_zero, rel=1e-9)
    np.testing.assert_allclose(given.bias, free.bias, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_derived_escape_asymptotic_matches_the_evaluated_escape_time(depth):
    """The escape time shown by ``ncsim theory derive`` (sympy: (N/M) int_{a0^M}^inf
    u^(2/M - 2) / s du, from du/dt = M u^(2 - 2/M) s / N near the origin) equals
    :func:`escape_time_asymptotic` N a0^(2-M) / ((M-2) s) at K = 4, n = 5, a0 = 0.05."""
    from ncsim.theory.dynamics import derive, escape_time_asymptotic

    K, n, a0 = 4, 5, 0.05
    expr = derive()["escape_asymptotic"]
    values = {"N": K * n, "s": math.sqrt(n), "M": depth + 1, "a_0": a0}
    got = float(expr.subs({sym: values[sym.name] for sym in expr.free_symbols}))
    assert got == pytest.approx(float(escape_time_asymptotic(K, n, a0, depth)), rel=1e-12)


def test_derived_ce_norms_match_the_equilibrium():
    """The CE one-layer norms shown by ``ncsim theory derive`` as functions of sigma, the
    row norm w_row2 = (K-1)/K sigma sqrt(lambda_H/lambda_W) and the feature norm
    h2 = (K-1)/(K n) sigma sqrt(lambda_W/lambda_H), at the equilibrium's sigma give its
    |w_k|^2 and fn*^2 (K = 4, n = 5, lambda_W = 0.01, lambda_H = 0.02)."""
    from ncsim.theory import symbols as S
    from ncsim.theory.derivations import derivations

    K, n, lw, lh = 4, 5, 0.01, 0.02
    eq = equilibrium("ce", "none", K, n, lw, lh)
    d = derivations("ce", 1, "none")
    at = {S.K: K, S.n: n, S.lam_w: lw, S.lam_h: lh, S.sigma: float(eq.sigma)}
    assert float(d["w_row2"].subs(at)) == pytest.approx(float(eq.w_norm_star) ** 2, rel=1e-12)
    assert float(d["h2"].subs(at)) == pytest.approx(float(eq.fn_star) ** 2, rel=1e-12)


def test_late_onset_of_a_large_init_matches_the_within_class_decay():
    """MSE, K = 4, n = 5, d = 20, lambda_W = lambda_H = 0.001, init 1: long after the modes have
    settled (h^2 = w h = sqrt(n) - N lambda), NC1 falls only with the within-class energy
    outside range(W), a^2 d (N - K) (d - K)/d e^(-2 lambda t), against the between-class
    energy (K - 1) h^2, so the onset is
    ln((d - K) a^2 (N - K) / ((K - 1) h^2 threshold)) / (2 lambda) = 4128.0 (the other terms
    are below e^-800 by then). It lies beyond 4 / lambda: the default search horizon must
    reach it."""
    K, n, d, lam, a, thr = 4, 5, 20, 0.001, 1.0, 0.01
    N = K * n
    h2 = math.sqrt(n) - N * lam
    want = math.log((d - K) * a * a * (N - K) / ((K - 1) * h2 * thr)) / (2 * lam)
    pred = predicted_onset("mse", "none", K, n, d, lam, lam, a, thr)
    assert want > 4 / lam
    assert pred.regime == "ok"
    assert pred.onset_time == pytest.approx(want, rel=1e-9)


def test_imbalanced_threshold_column_without_bias_is_set_by_the_largest_class():
    """Imbalanced MSE without bias, counts (2, 3, 5): the label singular values are
    sqrt(n_k), the largest class's mode dies last, at N Lambda = sqrt(5); with
    lambda_H = 4 lambda_W that is lambda_W = sqrt(5) / (2 N). Just below it the minimiser is
    collapsed, just above it is not."""
    from ncsim.theory.imbalance import imbalanced_mse, label_singular_values

    counts = (2, 3, 5)
    np.testing.assert_allclose(label_singular_values("none", counts),
                               np.sqrt([5.0, 3.0, 2.0]), rtol=1e-15)
    lc = theory_columns(_run_spec(K=3, per_class=counts, d=5, lw=0.01, lh=0.04))[
        "lambda_crit_theory"]
    assert lc == pytest.approx(math.sqrt(5) / 20, rel=1e-14)
    assert imbalanced_mse(counts, 0.99 * lc, 4 * 0.99 * lc).collapsed
    assert not imbalanced_mse(counts, 1.01 * lc, 4 * 1.01 * lc).collapsed


@pytest.mark.parametrize("call", [
    lambda lb: equilibrium("mse", "free", 4, 5, 1e-3, 1e-3, lambda_b=lb),
    lambda lb: equilibrium("ce", "none", 4, 5, 1e-3, 1e-3, lambda_b=lb),
    lambda lb: predicted_onset("ce", "none", 4, 5, 20, 0.01, 0.01, 0.01, lambda_b=lb),
])
def test_a_bad_lambda_b_is_refused_whatever_the_bias(call):
    """lambda_b is a decay: negative or NaN is refused even where the bias does not use it
    (as RunSpec does), instead of being silently ignored."""
    for bad in (-3.0, float("nan")):
        with pytest.raises(InputError, match=r"lambda_b must be a finite number >= 0"):
            call(bad)


def test_logistic_mode_refuses_a_start_that_is_no_singular_value():
    """z0 = sigma(WH) at t = 0: a negative, NaN or text value is refused by logistic,
    logistic_integral and logistic_half_time alike (half_time raised a bare TypeError on
    text and read True as 1)."""
    from ncsim.theory import logistic, logistic_half_time, logistic_integral

    for z0, words in ((-1e-3, "z0 must be a finite number >= 0"),
                      (float("nan"), "z0 must be a finite number >= 0"),
                      ("x", "z0 must be a number or an array of numbers"),
                      (True, "z0 must be a number or an array of numbers")):
        for call, args in ((logistic, (1.0, z0, 4, 5, 0.01)),
                           (logistic_integral, (1.0, z0, 4, 5, 0.01)),
                           (logistic_half_time, (z0, 4, 5, 0.01))):
            with pytest.raises(InputError, match=words):
                call(*args)
    assert float(logistic(0.0, 1e-3, 4, 5, 0.01)) == pytest.approx(1e-3, rel=1e-15)
