"""Probe tests of ncsim.flow.simulate: dtype honoured, Gram final bias, batching invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ncsim.flow import simulate
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec


def _spec(seed=0, lambda_w=1e-2, lambda_h=1e-2, bias="none", dim=6, per_class=2, **solver):
    model = ModelSpec(kind="ufm", loss="ce", bias=bias, classes=3, per_class=per_class, dim=dim)
    solver = {"t_end": 10.0, "records": 6, **solver}
    return RunSpec(
        model=model,
        reg=Regularization(lambda_w=lambda_w, lambda_h=lambda_h),
        init=InitSpec(scale=0.3, seed=seed),
        solver=SolverSpec(**solver),
    )


def _float32_exact(a):
    return np.array_equal(np.asarray(a, dtype=np.float32).astype(np.float64), a)


def test_a_float32_run_is_integrated_in_float32():
    """A run with dtype float32 ends on float32 numbers; the same run in float64 does not."""
    specs = [_spec(dtype="float32", rtol=1e-5), _spec(dtype="float64", rtol=1e-5)]
    result = simulate(specs, theory=False)
    ids = list(result.runs["run_id"])
    single, double = result.final_state(ids[0]), result.final_state(ids[1])
    assert _float32_exact(single["H"]) and _float32_exact(single["W"][0])
    assert not _float32_exact(double["H"])
    assert list(result.runs["solver_dtype"]) == ["float32", "float64"]
    np.testing.assert_allclose(single["H"], double["H"], atol=1e-4)


def test_gram_final_state_gives_each_run_its_own_bias():
    """A run integrated in the Gram form returns its own trained bias b, equal to the same
    run integrated on the parameters."""
    kw = {"bias": "free", "dim": 10, "rtol": 1e-11, "atol": 1e-13}
    specs = [_spec(seed=s, reduction=form, **kw) for form in ("gram", "none") for s in (0, 1)]
    result = simulate(specs, theory=False)
    ids = list(result.runs["run_id"])
    for k in (0, 1):
        gram, plain = result.final_state(ids[k]), result.final_state(ids[k + 2])
        assert gram["b"] is not None and gram["b"].shape == (3,)
        np.testing.assert_allclose(gram["b"], plain["b"], atol=1e-8)
        assert np.abs(plain["b"]).max() > 1e-3
    assert not np.allclose(result.final_state(ids[0])["b"], result.final_state(ids[1])["b"])


def test_every_max_batch_gives_the_same_tables_run_for_run():
    """Runs of two structures, interleaved, give the same run and trajectory tables
    whatever max_batch cuts their batches to (to rounding: 1e-12), and as each run alone."""
    specs = [
        _spec(seed=s, lambda_w=lw, lambda_h=2 * lw, per_class=pc)
        for s, lw, pc in ((0, 1e-2, 2), (1, 3e-2, 3), (2, 2e-2, 2), (3, 1e-2, 3), (4, 5e-3, 2))
    ]

    def close(got, want):  # equal to rounding (the provenance columns are equal in-process)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-15)

    reference = simulate(specs, theory=False, max_batch=1)
    ref_runs, ref_traj = reference.runs, reference.trajectories
    for max_batch in (2, 3, 4096):
        result = simulate(specs, theory=False, max_batch=max_batch)
        close(result.runs, ref_runs)
        close(result.trajectories, ref_traj)
    for i, spec in enumerate(specs):
        alone = simulate(spec, theory=False)
        rid = ref_runs["run_id"][i]
        assert alone.runs["run_id"][0] == rid
        close(alone.runs, ref_runs.iloc[[i]].reset_index(drop=True))
        close(alone.trajectories, ref_traj[ref_traj["run_id"] == rid].reset_index(drop=True))
    assert list(ref_traj["run_id"].drop_duplicates()) == list(ref_runs["run_id"])
