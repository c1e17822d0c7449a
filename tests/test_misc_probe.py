"""Mutation probe of stacked training, the one-layer UFM forms, the theory's array backend, the
heap thresholds and the thread bounds: what the other tests left open (a stacked log's flow
time, lr and run ids, the seeds check's own refusals, a_H^2, the optimal per-mode objective and
the sign of the one-layer stationarity, bisection's precision and NaN outside a bracket, float
conversion of integers, glibc's mallopt parameters, a refused trim threshold, malloc_trim's
argument, torch's thread count after an error and in set_threads)."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pandas as pd
import pytest
import torch
from thread_helpers import torch_threads

from ncsim import heap
from ncsim.errors import InputError
from ncsim.threads import bounded_threads
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import check_seeds, train_stacked
from ncsim.validate.train import Phase, TrainConfig, train


def _tiny() -> tuple[TrainConfig, object]:
    """Two short phases on 12 Gaussian samples; a warm-up and the cosine schedule make the lr
    of every record, and the flow time, differ from the phase's lr."""
    data = load_dataset("gaussian", per_class=4, classes=3, dim=4)
    phases = (Phase("ce", 2, "sgd", 0.1, 1e-3, batch_size=8, warmup=1),
              Phase("mse", 2, "sgd", 0.05, 1e-3, batch_size=8))
    return TrainConfig(depth=1, width=8, phases=phases, nc_every=1), data


def test_stacked_log_is_the_sequential_seeds_log_column_for_column():
    """The vectorised loop's log equals the one-seed-after-another log in every column: the
    run ids ``run_s<seed>``, the lr of each record (the warm-up's at epoch 0, not the phase's),
    the flow time (the sum of the scheduled lrs, not epochs x the phase's lr) and the steps."""
    config, data = _tiny()
    stacked = train_stacked(config, data, [2, 0])
    sequential = train(config, data, seeds=[2, 0]).runs
    for run, alone in zip(stacked, sequential, strict=True):
        pd.testing.assert_frame_equal(run.log, alone.log, check_exact=False, rtol=1e-4,
                                      atol=1e-6)
    log = stacked[0].log
    assert set(log.run_id) == {"run_s2"} and stacked[1].config.run_id == "run_s0"
    assert log.lr.iloc[0] == pytest.approx(0.05)  # the warm-up halves epoch 1's lr
    # flow time: 2 steps per epoch at 0.05 (warm-up), then cosine 0.1 * 0.5 in epoch 2
    assert log.flow_time.tolist()[:3] == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize(("change", "seeds", "match"), [
    ({}, [], "distinct seeds"),
    ({"intervention_epoch": 1}, [0, 1], "no intervention, checkpoints or mixed precision"),
    ({"checkpoint_dir": "ckpt"}, [0, 1], "no intervention, checkpoints or mixed precision"),
    ({"amp": True}, [0, 1], "no intervention, checkpoints or mixed precision"),
])
def test_check_seeds_refuses_what_stacking_lacks(change, seeds, match):
    """The Python entry refuses no seeds and an intervention, checkpoints or mixed precision
    itself (the command line checks its options before, so its tests do not reach these)."""
    config = dataclasses.replace(TrainConfig(), **change)
    with pytest.raises(InputError, match=match):
        check_seeds(config, seeds)


def test_mallopt_parameters_are_glibcs():
    """malloc.h numbers the parameters M_TRIM_THRESHOLD -1 and M_MMAP_THRESHOLD -3 (-2 is
    M_TOP_PAD, which glibc accepts too, so a wrong number would pass silently)."""
    assert (heap._M_TRIM_THRESHOLD, heap._M_MMAP_THRESHOLD) == (-1, -3)


def test_a_refused_trim_threshold_is_reported(monkeypatch):
    """A mallopt that takes the mmap threshold but refuses the trim threshold: not kept as a
    whole (False), while the mmap threshold it took is recorded."""
    monkeypatch.setattr(heap, "_mallopt", lambda: lambda param, value:
                        int(param == heap._M_MMAP_THRESHOLD))
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is False
    assert heap.mmap_threshold() == heap.MMAP_THRESHOLD_BYTES


def test_a_refused_small_threshold_never_falls_back_to_a_larger_one(monkeypatch):
    """The fallback is min(asked, 32 MiB): a refused 1 MiB threshold is not replaced by the
    larger 32 MiB one, and when every threshold is refused nothing counts as kept."""
    calls = []

    def refuse_mmap(param, value):
        calls.append((param, value))
        return int(param != heap._M_MMAP_THRESHOLD)

    monkeypatch.setattr(heap, "_mallopt", lambda: refuse_mmap)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory(mmap_threshold=2**20, trim_threshold=2**21) is False
    assert not heap.kept() and heap.mmap_threshold() == 0
    assert calls == [(heap._M_TRIM_THRESHOLD, 2**21), (heap._M_MMAP_THRESHOLD, 2**20),
                     (heap._M_MMAP_THRESHOLD, 2**20)]


def test_release_runs_malloc_trim_with_no_padding(monkeypatch):
    """release_freed_memory calls glibc's malloc_trim(0) (pad 0: everything free goes back)."""
    calls = []

    def malloc_trim(pad):  # a function takes ctypes' argtypes / restype, as a CDLL one does
        calls.append(pad)
        return 1

    monkeypatch.setattr(heap, "_mallopt", lambda: object())
    monkeypatch.setattr(heap, "_glibc", lambda: types.SimpleNamespace(malloc_trim=malloc_trim))
    assert heap.release_freed_memory() is True
    assert calls == [0]


def test_bounded_threads_restores_torch_threads_after_an_error():
    """An exception inside the block still gives torch back its thread count."""
    with torch_threads(2):
        with pytest.raises(RuntimeError, match="inside"), bounded_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2


def test_bounded_threads_loads_the_blas_libraries_first(monkeypatch):
    """A bound loads numpy's and scipy's BLAS before limiting (threadpoolctl reaches only
    loaded libraries); no bound (None) loads nothing."""
    import ncsim.threads as threads

    loaded = []
    monkeypatch.setattr(threads, "_load_blas", lambda: loaded.append(1))
    with bounded_threads(None):
        pass
    assert loaded == []
    with bounded_threads(1):
        assert loaded == [1]


# one-layer UFM at K = 4, n = 5, lambda_W = 0.008, lambda_H = 0.0125 (Lambda = 0.01): per mode
# g = (sigma - sqrt n)^2 / (2 K n) + Lambda sigma, sigma* = sqrt n - K n Lambda
_AT = {"K": 4, "n": 5, "lambda_W": 0.008, "lambda_H": 0.0125, "Lambda": 0.01}


def _value(expr, **extra):
    """``expr`` at :data:`_AT` (and ``extra``), as a float."""
    values = {**_AT, **extra}
    return float(expr.subs({sym: values[sym.name] for sym in expr.free_symbols}))


def test_one_layer_mse_factor_norms_and_optimal_mode_objective():
    """a_W^2 = sigma sqrt(lambda_H / lambda_W) and a_H^2 = sigma sqrt(lambda_W / lambda_H)
    (not the same form twice), and the optimal per-mode objective is
    Lambda sqrt n - K n Lambda^2 / 2 (one mode, the K-mode total divided by K)."""
    from ncsim.theory import ufm

    d = ufm.derive_mse()
    assert _value(d["a_w2"], sigma=2.0) == pytest.approx(2.0 * 1.25, rel=1e-12)
    assert _value(d["a_h2"], sigma=2.0) == pytest.approx(2.0 * 0.8, rel=1e-12)
    per_mode = 0.01 * 5**0.5 - 20 * 0.01**2 / 2
    assert _value(d["objective_star_per_mode"]) == pytest.approx(per_mode, rel=1e-12)
    assert _value(d["objective_star_none"]) == pytest.approx(4 * per_mode, rel=1e-12)


def test_one_layer_stationarity_is_the_objectives_derivative():
    """The printed stationarity of both one-layer models is +g'(sigma): MSE
    c (sigma - sqrt n) / (K n) + Lambda, CE (K - 1) Lambda - (K - 1) e^-m / (sqrt n
    (1 + (K - 1) e^-m)) with m = sigma / sqrt n."""
    from ncsim.theory import ufm

    mse = ufm.derive_mse()["stationarity"]
    assert _value(mse, sigma=1.0, c=1.0) == pytest.approx((1 - 5**0.5) / 20 + 0.01, rel=1e-12)
    e = 3 * math.exp(-1.0 / 5**0.5)
    want = 3 * 0.01 - e / (5**0.5 * (1 + e))
    assert _value(ufm.derive_ce()["stationarity"], sigma=1.0) == pytest.approx(want, rel=1e-12)


def test_bisect_resolves_a_root_far_below_the_bracket_width():
    """200 halvings of [0, 1] pin a root at 1e-30 to a few ulps (60 would stop at ~1e-18);
    a root near pi in [0, 1e6] comes to one ulp."""
    from ncsim.theory._backend import bisect

    root = bisect(lambda x: x - 1e-30, np.array([0.0]), np.array([1.0]))
    assert root[0] == pytest.approx(1e-30, rel=1e-14)
    big = bisect(lambda x: x - np.pi, np.array([0.0]), np.array([1e6]))
    assert abs(big[0] - np.pi) <= 4.5e-16


def test_bisect_is_nan_where_no_sign_change_is_bracketed():
    """No sign change between f(lo) and f(hi): NaN there (numpy and torch), the root elsewhere;
    two tiny same-sign values (their product underflows to 0) are no sign change."""
    from ncsim.theory._backend import bisect

    got = bisect(lambda x: x - np.array([0.25, 5.0]), np.zeros(2), np.ones(2))
    assert got[0] == pytest.approx(0.25, rel=1e-15) and np.isnan(got[1])
    t = bisect(lambda x: x - torch.tensor([5.0, 0.5], dtype=torch.float64),
               torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert torch.isnan(t[0]) and t[1].item() == pytest.approx(0.5, rel=1e-15)
    assert np.isnan(bisect(lambda x: x * 0 + 1e-200, np.zeros(1), np.ones(1))[0])


def test_broadcast_gives_floats_beside_integers():
    """broadcast turns integer inputs into float64 (numpy and torch) and keeps a python decay
    of 0.01 beside an integer tensor (its int64 dtype would truncate it to 0)."""
    from ncsim.theory._backend import broadcast

    k, lam = broadcast(torch.tensor([3, 4]), 0.01)
    assert k.dtype == torch.float64 and lam.dtype == torch.float64
    assert lam.tolist() == [0.01, 0.01] and k.tolist() == [3.0, 4.0]
    kn, lamn = broadcast(np.array([3, 4]), 0.01)
    assert kn.dtype == np.float64 and lamn.tolist() == [0.01, 0.01]
    half = broadcast(torch.tensor([1.0], dtype=torch.float32), 2)[1]
    assert half.dtype == torch.float32  # a float tensor's dtype is kept


def test_set_threads_sets_torchs_count():
    """set_threads (a worker's initialiser) sets torch's thread count, not only BLAS's."""
    from ncsim.threads import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        set_threads(before)
