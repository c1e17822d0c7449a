"""Strict values of the onset rule and of the simulator's run table where a wrong answer would
reach a user without any error.

- Onset (``ncsim.onset``, module docstring): the crossing is interpolated linearly in
  (log time, log value) whenever the earlier record is at t > 0, including the simulator's
  early records at 0 < t < 1; an onset at the first record of a series is that record's time.
  A naive onset finder
  written here (a plain loop over the records, power-law interpolation written as
  t0 (t1/t0)^s) is the reference on random series with gaps, records at +inf, t = 0 and
  stay windows.
- Simulator (``ncsim.flow.simulate``): each run of a batch is judged "diverged" against its
  own starting objective, a float32 run is integrated in float32 next to a float64 run of the
  same call, and an arrays init has one run id whatever the order of its keys.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncsim.flow.simulate import cut_short, run_id, simulate
from ncsim.onset import (
    crossing_time,
    onset_and_fn,
    onset_record,
    onset_time,
    value_at,
)
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

# =============================================================================================
# onset rule
# =============================================================================================


def test_log_time_interpolation_holds_for_records_before_t_one():
    """The simulator's first records lie at 0 < t < 1 (t_first = 1e-2 by default); the
    crossing between two of them is still in log time. From (0.01, 0.04) to (0.1, 0.0025) the
    threshold 0.01 is half way in log value (ln 4 of ln 16), so the onset is the geometric
    mean sqrt(0.01 x 0.1) = sqrt(1e-3) = 0.0316..., not the arithmetic 0.055. The same
    fraction gives fn the geometric mean of its two records and the same fn crossing time."""
    half = math.sqrt(1e-3)
    assert onset_time([0.01, 0.1], [0.04, 0.0025], 0.01) == pytest.approx(half, rel=1e-14)
    times = [0.0, 0.01, 0.1, 1.0]
    when, fn = onset_and_fn(times, [1.0, 0.04, 0.0025, 1e-4], [1.0, 2.0, 8.0, 9.0], 0.01)
    assert when == pytest.approx(half, rel=1e-14)
    assert fn == pytest.approx(math.sqrt(2.0 * 8.0), rel=1e-14)
    # value_at at the log-time midpoint 0.1 of [0.01, 1]: sqrt(3 x 5)
    assert value_at([0.01, 1.0], [3.0, 5.0], 0.1) == pytest.approx(math.sqrt(15.0), rel=1e-14)
    # fn falling 8 -> 2 crosses 4 half way in log value: the same log-time midpoint
    assert crossing_time([0.01, 0.1], [8.0, 2.0], 4.0) == pytest.approx(half, rel=1e-14)


@pytest.mark.parametrize("interpolate", [True, False])
def test_an_onset_at_the_first_record_is_its_time_even_if_the_series_rises_later(interpolate):
    """A metric already below the threshold at the first record has its onset there, t = 1,
    whatever follows (there is no earlier record to interpolate from); fn at onset is that
    record's fn. With stay = 2 the first two records are below: again t = 1."""
    times, metric, fn = [1.0, 2.0, 4.0], [0.001, 0.5, 0.6], [3.0, 5.0, 7.0]
    assert onset_time(times, metric, 0.01, interpolate=interpolate) == 1.0
    assert onset_and_fn(times, metric, fn, 0.01, interpolate=interpolate) == (1.0, 3.0)
    assert onset_time(times, [0.001, 0.002, 0.5], 0.01, stay=2, interpolate=interpolate) == 1.0


def _naive_onset(times, values, threshold, stay, interpolate):
    """(onset time, index of the crossing record) by a plain loop: keep the records with a
    finite time and a non-NaN value, find the first ``stay`` in a row below the threshold,
    interpolate from the record before it (from +inf: the later record's time; power law
    t0 (t1/t0)^s in time when t0 > 0, linear from t0 = 0; log value when both are > 0)."""
    recs = [(t, v, i) for i, (t, v) in enumerate(zip(times, values))
            if math.isfinite(t) and not math.isnan(v)]
    for k in range(len(recs) - stay + 1):
        if not all(recs[k + j][1] < threshold for j in range(stay)):
            continue
        t1, v1, i1 = recs[k]
        if not interpolate or k == 0:
            return t1, i1
        t0, v0, _ = recs[k - 1]
        if v0 == math.inf:
            return t1, i1
        if v0 > 0 and v1 > 0:
            s = math.log(v0 / threshold) / math.log(v0 / v1)
        else:
            s = (v0 - threshold) / (v0 - v1)
        s = min(max(s, 0.0), 1.0)
        return (t0 * (t1 / t0) ** s if t0 > 0 else t0 + s * (t1 - t0)), i1
    return math.nan, None


@pytest.mark.parametrize("seed", range(12))
def test_onset_equals_a_naive_record_loop_on_random_series(seed):
    """Random series of 30 records from t = 0 over 1e-3 .. 1e3 (so early records lie below
    t = 1), a metric that wanders down and up with NaN gaps, records at +inf and sometimes a
    start below the threshold; thresholds at several quantiles, stay 1 .. 3, with and without
    interpolation. The onset time equals the naive loop's to 1e-12 relative (two ways of
    writing one power law differ by a few ulps) and the crossing record is the same one."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([[0.0], np.sort(rng.uniform(np.log(1e-3), np.log(1e3), 29))])
    times[1:] = np.exp(times[1:])
    metric = np.exp(np.cumsum(rng.normal(-0.25, 0.9, times.size)) + rng.normal(0.0, 2.0))
    metric[rng.choice(times.size, 4, replace=False)] = np.nan
    metric[rng.choice(times.size, 2, replace=False)] = np.inf
    checked = 0
    for q in (0.1, 0.3, 0.6, 0.9):
        threshold = float(np.nanquantile(metric[np.isfinite(metric)], q))
        for stay in (1, 2, 3):
            for interpolate in (True, False):
                want, row = _naive_onset(list(times), list(metric), threshold, stay, interpolate)
                got = onset_time(times, metric, threshold, stay, interpolate)
                if row is None:
                    assert math.isnan(got) and onset_record(times, metric, threshold,
                                                            stay) is None
                    continue
                assert got == pytest.approx(want, rel=1e-12, abs=0), (q, stay, interpolate)
                assert onset_record(times, metric, threshold, stay) == row
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("interpolate", [False, True])
def test_fn_at_an_onset_on_the_far_side_of_a_jump_without_fn_is_not_the_near_sides(interpolate):
    """Two records at t = 2 (an intervention: fn 7 before, none recorded after), the metric
    crossing at the second. fn at onset must not be the pre-jump record's 7: without
    interpolation it is the next finite record's (60, as without a jump); with it, the
    power law through the finite records around t = 2 on the far side, (t = 1, fn 1) and
    (t = 3, fn 60): 60^(log 2 / log 3)."""
    times, nc1 = [1.0, 2.0, 2.0, 3.0], [0.5, 0.5, 0.001, 0.0005]
    when, fn = onset_and_fn(times, nc1, [1.0, 7.0, np.nan, 60.0], 0.01, interpolate=interpolate)
    assert when == 2.0 and type(when) is float
    want = 60.0 ** (math.log(2.0) / math.log(3.0)) if interpolate else 60.0
    assert fn == pytest.approx(want, rel=1e-14)
    # the same records without the jump: the same fn
    assert onset_and_fn([1.0, 2.0, 3.0], [0.5, 0.001, 0.0005], [1.0, np.nan, 60.0], 0.01,
                        interpolate=False) == (2.0, 60.0)


# =============================================================================================
# simulator run table
# =============================================================================================


def _mse_model() -> ModelSpec:
    return ModelSpec(kind="ufm", loss="mse", bias="none", classes=3, per_class=2, dim=4)


def test_each_run_of_a_batch_is_judged_against_its_own_starting_objective():
    """Two runs of one batch (same model and solver): a tiny init that starts at the MSE loss
    of zero logits (about 1/2) and a large init that starts near 170 and falls to about 1.5
    by t = 0.5. Neither objective rose over its own run, so neither is diverged (both are
    not_collapsed: no onset yet); compared with the other run's start the second would look
    risen. Each run's start is its first trajectory row's objective."""
    specs = [RunSpec(model=_mse_model(), init=InitSpec(scale=scale, seed=seed),
                     solver=SolverSpec(t_end=0.5, records=3))
             for seed, scale in ((0, 0.01), (1, 3.0))]
    assert specs[0].batch_key() == specs[1].batch_key()
    result = simulate(specs, theory=False)
    start = result.trajectories.groupby("run_id", sort=False)["objective"].first().to_numpy()
    final = result.runs["final_objective"].to_numpy()
    assert np.all(final < start)  # both fell over their own run
    assert final[1] > 1.001 * start[0]  # the second ends above the first's start
    assert list(result.runs["status"]) == ["not_collapsed", "not_collapsed"]


def test_a_float32_run_is_integrated_in_float32_beside_a_float64_run():
    """A float32 run and a float64 run in one call: every recorded value of the float32 run
    (and its final state) is a float32 number written as float64, while the float64 run's
    values are not all float32 numbers (a float64 computation leaves bits a float32 cannot
    hold). So the float32 run is computed in its own dtype, not in the other run's."""
    specs = [RunSpec(model=ModelSpec(kind="ufm", loss="ce", bias="none", classes=3, per_class=4,
                                     dim=6),
                     init=InitSpec(scale=0.3, seed=seed),
                     solver=SolverSpec(t_end=5.0, records=6, dtype=dtype, rtol=1e-6, atol=1e-8))
             for seed, dtype in ((0, "float32"), (1, "float64"))]
    result = simulate(specs, theory=False)
    columns = ["loss", "objective", "fn", "nc1_trace"]
    for rid, dtype in zip(result.runs["run_id"], ("float32", "float64")):
        values = result.trajectories.loc[result.trajectories["run_id"] == rid, columns]
        values = values.to_numpy(np.float64)
        h = result.final_state(rid)["H"]
        single = bool((values.astype(np.float32).astype(np.float64) == values).all()
                      and (h.astype(np.float32).astype(np.float64) == h).all())
        assert single is (dtype == "float32"), dtype
    assert list(result.runs["solver_dtype"]) == ["float32", "float64"]


def test_an_arrays_init_has_one_run_id_whatever_the_order_of_its_keys():
    """The same H, W and b given as {H, W, b} or {b, W, H} are the same start, so the same run
    (one id, one resume key); changing one entry of b makes another run."""
    model = ModelSpec(kind="ufm", loss="mse", bias="free", classes=3, per_class=2, dim=4)
    rng = np.random.default_rng(0)
    h, w, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 4)), rng.normal(size=3)

    def spec(arrays: dict) -> RunSpec:
        return RunSpec(model=model, init=InitSpec(kind="arrays", arrays=arrays))

    first = run_id(spec({"H": h, "W": [w], "b": b}))
    assert run_id(spec({"b": b, "W": [w], "H": h})) == first
    assert run_id(spec({"W": [w], "H": h, "b": b})) == first
    assert run_id(spec({"H": h, "W": [w], "b": b + np.array([0.0, 0.0, 1e-9])})) != first


def _stop_spec(lam: float = 1e-3, scale: float = 0.5, **solver) -> RunSpec:
    return RunSpec(model=ModelSpec(loss="ce", classes=4, per_class=3, dim=8),
                   reg=Regularization(lambda_w=lam, lambda_h=lam),
                   init=InitSpec(scale=scale, seed=1),
                   solver=SolverSpec(**{"t_end": 2000.0, "records": 30, **solver}))


def test_the_stop_column_says_why_the_integration_ended():
    """``stop`` is the integrator's reason, next to the status it feeds: a run to t_end; a
    run out of steps before its onset (max_steps / max_steps) and one out of steps after its
    onset, which is ``ok`` but must still say it was cut short (t_final < t_end); a tiny init
    where the origin is the minimum (lambda 0.2 > 1 / (K sqrt(n)) = 0.144) at rest; gradient
    descent far past its stability limit."""
    cases = {
        "t_end": _stop_spec(),
        "cut_before_onset": _stop_spec(max_steps=40),
        "cut_after_onset": _stop_spec(scale=1e-10, max_steps=60),
        "at_rest": _stop_spec(lam=0.2, scale=1e-12),
        "blown_up": _stop_spec(method="gd", dt=500.0),
    }
    runs = simulate(list(cases.values()), theory=False).runs
    got = dict(zip(cases, zip(runs["status"], runs["stop"], strict=True), strict=True))
    assert got == {"t_end": ("ok", "t_end"), "cut_before_onset": ("max_steps", "max_steps"),
                   "cut_after_onset": ("ok", "max_steps"), "at_rest": ("not_collapsed", "steady"),
                   "blown_up": ("diverged", "diverged")}
    assert list(cut_short(runs)) == [False, False, True, False, False]
    cut = runs.iloc[2]
    assert cut["t_final"] < 2000.0 and cut["steps"] + cut["rejected_steps"] == 60
    assert math.isfinite(cut["onset_time"]) and cut["onset_time"] < cut["t_final"]


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_the_integrators_dense_output_is_the_tableaus_dense_weights(method):
    """The integrator's dense output (integrate._dense) and ``Tableau.dense_weights`` are two
    codings of one interpolant: y + h sum_i b_i(theta) k_i must agree to rounding at every
    theta of every run, with the subset path (``rows``) too; at theta = 1 it is the step's
    own y_new (to rounding) and at theta = 0 exactly y."""
    import torch

    from ncsim.flow.integrate import _dense, _stages
    from ncsim.flow.tableau import tableau

    tab = tableau(method)
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(6, 6, generator=gen, dtype=torch.float64) * 0.3
    def f(y):
        return torch.tanh(y @ a.T)
    y = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    h = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64)
    y_new, ks = _stages(tab, f, y, f(y), h)
    theta = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    weights = tab.dense_weights(theta.numpy())  # (3, S)
    stages = ks.buf.numpy()  # (S, R, P)
    want = y.numpy() + h.numpy()[:, None] * np.einsum("rs,srp->rp", weights, stages)
    np.testing.assert_allclose(_dense(tab, y, h, ks, theta).numpy(), want, rtol=1e-14,
                               atol=1e-15)
    rows = torch.tensor([2, 0])
    np.testing.assert_allclose(_dense(tab, y, h, ks, theta[rows], rows).numpy(), want[[2, 0]],
                               rtol=1e-14, atol=1e-15)
    # tsit5's interpolant reproduces b at theta = 1 to its coefficients' rounding (~1e-15)
    np.testing.assert_allclose(want[2], y_new.numpy()[2], rtol=0, atol=1e-13)
    np.testing.assert_array_equal(want[0], y.numpy()[0])
