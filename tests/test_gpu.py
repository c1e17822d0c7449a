"""The CUDA paths against the CPU ones (skipped without a CUDA device).

- ``simulate`` on a CUDA device follows the CPU's trajectories in float64 (every state form:
  parameters, Gram, class means, deep heads with activations and biases) to the solver's
  tolerance: the two devices round products differently, so the adaptive steps differ slightly;
- CUDA graphs (captured chunks of steps and metrics calls) replay the eager CUDA loop's steps
  (same step counts, same records to rounding), in both adaptive methods and both dtypes, and
  in every state form;
- float32 on the GPU stays within the W1 benchmark's float32 bound (1e-3) of float64;
- training: a CUDA run starts from the CPU run's parameters and batch order (its first records
  match the CPU's), and the stacked (vmap) loop that ``train(seeds=...)`` runs on an
  accelerator follows each seed's separate CUDA training.

The CI machine has no GPU; these run wherever ``torch.cuda.is_available()``
(``benchmarks/device_check.sh`` runs them first on the device machine).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.flow.simulate import simulate
from ncsim.metrics import METRIC_NAMES
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import Phase, TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

COMPARED = ("loss", "objective", *METRIC_NAMES)
RECORDS = 40
T_END = 1000.0
# the record times of every run here (a run that stopped early has NaN after its last)
RECORD_TIMES = SolverSpec(t_end=T_END, records=RECORDS).record_times()

MODELS = {
    "ufm_ce_params": (ModelSpec(kind="ufm", loss="ce", classes=3, per_class=4, dim=6), "none"),
    "ufm_ce_bias_gram": (ModelSpec(kind="ufm", loss="ce", bias="free", classes=3, per_class=4,
                                   dim=20), "gram"),
    "ufm_mse_classes": (ModelSpec(kind="ufm", loss="mse", classes=4, per_class=8, dim=5),
                        "classes"),
    "deep_tanh": (ModelSpec(kind="deep", loss="ce", classes=3, per_class=4, dim=6, depth=3,
                            activation="tanh"), "none"),
    "deep_linear_mse_bias": (ModelSpec(kind="deep", loss="mse", bias="reg", classes=3,
                                       per_class=4, dim=6, depth=2, width=8), "none"),
}


def _specs(model: ModelSpec, reduction: str, device: str, dtype: str = "float64",
           method: str = "dopri5", cuda_graphs: bool = False, dt: float | None = None
           ) -> list[RunSpec]:
    """Four runs of one structure (two decays, two seeds) on ``device``."""
    rtol, atol = (1e-8, 1e-10) if dtype == "float64" else (1e-6, 1e-8)
    solver = SolverSpec(method=method, dt=dt, t_end=T_END, records=RECORDS, rtol=rtol, atol=atol,
                        dtype=dtype, device=device, reduction=reduction, cuda_graphs=cuda_graphs)
    lam_b = 1e-2 if model.bias == "reg" else 0.0
    return [RunSpec(model=model, reg=Regularization(lambda_w=lam, lambda_h=lam, lambda_b=lam_b),
                    init=InitSpec(scale=0.3, seed=seed), solver=solver)
            for lam in (5e-3, 2e-2) for seed in (0, 1)]


def _records(result) -> np.ndarray:
    """(runs, records, quantities) of a result, in input order (NaN where not reached)."""
    out = []
    for rid in result.runs["run_id"]:
        rows = result.trajectories[result.trajectories["run_id"] == rid].set_index("time")
        out.append(rows[list(COMPARED)].reindex(RECORD_TIMES).to_numpy())
    return np.stack(out)


def _largest_relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| over each continuous quantity's largest |a| (NaN where both are NaN);
    nc4, a count of samples, is left to :func:`_check_nc4`."""
    assert np.array_equal(np.isnan(a), np.isnan(b)), "the runs reached different record times"
    keep = [q for q, name in enumerate(COMPARED) if name != "nc4"]
    a, b = a[:, :, keep], b[:, :, keep]
    scale = np.nanmax(np.abs(a), axis=(0, 1))
    gap = np.nanmax(np.abs(a - b), axis=(0, 1)) / np.where(scale > 0, scale, 1.0)
    worst = int(np.argmax(gap))
    print(f"  largest gap in {COMPARED[keep[worst]]}")
    return float(np.max(gap))


def _check_nc4(a: np.ndarray, b: np.ndarray, samples: int) -> None:
    """nc4 counts the samples whose classifier and nearest-mean decisions differ: a sample at
    a tie (a ReLU feature at 0 scores every class 0) may flip with the rounding, so the two
    devices may differ by one sample at a few records, no more."""
    q = COMPARED.index("nc4")
    flips = np.abs(a[:, :, q] - b[:, :, q]) * samples
    flips = flips[np.isfinite(flips)]
    assert np.all(flips <= 1 + 1e-9), f"nc4 differs by more than one sample: {flips.max()}"
    assert np.count_nonzero(flips > 0.5) <= 0.05 * flips.size


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_follows_the_cpu_trajectories_in_float64(name):
    model, reduction = MODELS[name]
    cpu = simulate(_specs(model, reduction, "cpu"), theory=False)
    gpu = simulate(_specs(model, reduction, "cuda"), theory=False)
    _same_runs(cpu, gpu, name, model.num_samples)


def test_cuda_follows_the_cpu_with_relu_and_fixed_steps():
    """ReLU's kinks stall the adaptive methods; gradient descent (fixed steps) runs there."""
    model = ModelSpec(kind="deep", loss="ce", classes=3, per_class=4, dim=6, depth=3,
                      activation="relu")
    cpu = simulate(_specs(model, "none", "cpu", method="gd", dt=0.5), theory=False)
    gpu = simulate(_specs(model, "none", "cuda", method="gd", dt=0.5), theory=False)
    _same_runs(cpu, gpu, "deep_relu_gd", model.num_samples)


def _same_runs(cpu, gpu, name: str, samples: int) -> None:
    """Same statuses, trajectories to 1e-6 of each quantity's scale (nc4: :func:`_check_nc4`),
    onsets to 1e-5; the same steps with a fixed step, up to one more per record time with an
    adaptive one (on a device a step crosses two record times at most, and rounds otherwise:
    at most one step fewer)."""
    assert gpu.runs["status"].tolist() == cpu.runs["status"].tolist()
    records_gpu, records_cpu = _records(gpu), _records(cpu)
    gap = _largest_relative_gap(records_gpu, records_cpu)
    print(f"{name}: largest relative gap cuda vs cpu {gap:.2e}")
    assert gap <= 1e-6
    _check_nc4(records_gpu, records_cpu, samples)
    onset_cpu, onset_gpu = cpu.runs["onset_time"].to_numpy(), gpu.runs["onset_time"].to_numpy()
    np.testing.assert_allclose(onset_gpu, onset_cpu, rtol=1e-5, equal_nan=True)
    steps_cpu, steps_gpu = cpu.runs["steps"].to_numpy(), gpu.runs["steps"].to_numpy()
    if cpu.runs["solver_method"].iloc[0] == "gd":
        assert np.array_equal(steps_gpu, steps_cpu)
    else:  # on a device an adaptive step crosses two record times at most: a few more steps
        print(f"  extra steps on the device: {(steps_gpu - steps_cpu).tolist()}")
        assert np.all((steps_gpu >= steps_cpu - 1) & (steps_gpu <= steps_cpu + RECORDS))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_cuda_graphs_replay_the_eager_steps(method, dtype):
    model, reduction = MODELS["ufm_ce_params"]
    eager = simulate(_specs(model, reduction, "cuda", dtype, method), theory=False)
    graphed = simulate(_specs(model, reduction, "cuda", dtype, method, cuda_graphs=True),
                       theory=False)
    assert graphed.runs["steps"].tolist() == eager.runs["steps"].tolist()
    assert graphed.runs["status"].tolist() == eager.runs["status"].tolist()
    records_graphed, records_eager = _records(graphed), _records(eager)
    gap = _largest_relative_gap(records_graphed, records_eager)
    print(f"{method} {dtype}: largest relative gap graphs vs eager {gap:.2e}")
    assert gap <= (1e-12 if dtype == "float64" else 1e-5)
    _check_nc4(records_graphed, records_eager, model.num_samples)


@pytest.mark.parametrize("name", ["ufm_ce_bias_gram", "ufm_mse_classes", "deep_tanh",
                                  "deep_linear_mse_bias"])
def test_cuda_graphs_in_every_state_form(name):
    """The captured chunks and metrics calls (static, padded blocks) of every state form give
    the eager steps and records (float64, dopri5)."""
    model, reduction = MODELS[name]
    eager = simulate(_specs(model, reduction, "cuda"), theory=False)
    graphed = simulate(_specs(model, reduction, "cuda", cuda_graphs=True), theory=False)
    assert graphed.runs["steps"].tolist() == eager.runs["steps"].tolist()
    assert graphed.runs["status"].tolist() == eager.runs["status"].tolist()
    records_graphed, records_eager = _records(graphed), _records(eager)
    gap = _largest_relative_gap(records_graphed, records_eager)
    print(f"{name}: largest relative gap graphs vs eager {gap:.2e}")
    assert gap <= 1e-10
    _check_nc4(records_graphed, records_eager, model.num_samples)


def test_float32_on_cuda_stays_within_the_benchmark_bound_of_float64():
    model, reduction = MODELS["ufm_ce_params"]
    wide = simulate(_specs(model, reduction, "cuda"), theory=False)
    narrow = simulate(_specs(model, reduction, "cuda", "float32"), theory=False)
    fn64, fn32 = wide.runs["final_fn"].to_numpy(), narrow.runs["final_fn"].to_numpy()
    gap = np.max(np.abs(fn32 / fn64 - 1))
    print(f"float32 vs float64 final fn: largest relative gap {gap:.2e}")
    np.testing.assert_allclose(fn32, fn64, rtol=1e-3)


def _train_config(**kw) -> TrainConfig:
    phases = (Phase("ce", 2, "adam", 1e-3, 1e-3, batch_size=32),
              Phase("mse", 2, "sgd", 0.05, 1e-3, batch_size=32, decay_last=2))
    return TrainConfig(depth=2, width=32, phases=phases, nc_every=1, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", per_class=10, seed=0)


def test_training_on_cuda_starts_where_the_cpu_run_starts(digits):
    cpu = train(_train_config(), digits).log
    gpu = train(_train_config(device="cuda"), digits).log
    assert len(gpu) == len(cpu)
    first = cpu.index[cpu["time"] <= 1]
    for col in ("loss", "fn", "nc1_trace", "accuracy"):
        assert gpu.loc[first, col].tolist() == pytest.approx(cpu.loc[first, col].tolist(),
                                                             rel=1e-4), col


def test_stacked_seeds_on_cuda_follow_separate_cuda_trainings(digits):
    config = _train_config(device="cuda")
    runs = train_stacked(config, digits, [0, 1])
    for seed, run in zip((0, 1), runs, strict=True):
        alone = train(dataclasses.replace(config, seed=seed), digits)
        for col in ("loss", "fn", "nc1_trace", "accuracy"):
            assert run.log[col].tolist() == pytest.approx(alone.log[col].tolist(), rel=1e-3), col
    combined = train(config, digits, seeds=[0, 1])
    pd.testing.assert_frame_equal(combined.log.drop(columns="run_id").reset_index(drop=True),
                                  pd.concat([r.log for r in runs]).drop(columns="run_id")
                                  .reset_index(drop=True), rtol=1e-6)
