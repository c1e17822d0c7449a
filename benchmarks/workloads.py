"""Canonical benchmark workloads W1-W3 (DESIGN.md section 5) as lists of run specs.

- W1 phase diagram: UFM-CE, K = 10, n = 20, d = 32, no bias, init N(0, 0.1^2), a grid of
  (lambda_W, lambda_H) log-spaced in [1e-4, 3e-2]^2, 200 log-spaced records; CPU 8x8, T = 2e4;
  GPU 64x64, T = 5e3, in float32 and float64.
- W2 wide: UFM-MSE and UFM-CE, K = 10, n = 20, d in (32, 256, 1024, 4096), init scale
  0.1 sqrt(32/d): the Gram form against the d-space form (MSE from d = N + K = 210 on, where
  the Gram form is allowed for MSE: ``ncsim.spec.gram_min_dim``).
- W2n many samples: UFM-MSE, K = 10, d = 32, n per class in (20, 100, 500, 2000): the
  class-means form against the d-space form.
- W3 large: K = 100, n = 50, d = 512, 16 runs: throughput of the right-hand side.
- V1 training: MLP-5 (width 512) and ResNet-20 on Fashion-MNIST, the paper's two-phase
  protocols shortened to a few epochs, an NC record every epoch; and MLP-5 with several seeds
  (one stacked loop on an accelerator). ncsim's ``train`` against a plain ``DataLoader`` loop.

``scale`` shrinks a workload for smoke tests (fewer runs, shorter horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.validate.train import TrainConfig, preset

LAMBDA_RANGE = (1e-4, 3e-2)


@dataclass
class Workload:
    """A named list of runs and the accuracy its solvers must reach.

    Attributes
    ----------
    name : "W1", "W2-ce-d4096", ...
    specs : the runs.
    fn_tol : largest |fn(T) - fn_ref(T)| allowed (absolute, feature units).
    params : description written to the JSON results.
    """

    name: str
    specs: list[RunSpec]
    fn_tol: float
    params: dict = field(default_factory=dict)


# W1's tolerances per dtype, for ncsim and the peers alike: (rtol, atol). A float32 solver
# cannot resolve a relative error of 1e-8 (its unit roundoff is 6e-8).
W1_TOLERANCES = {"float64": (1e-8, 1e-10), "float32": (1e-5, 1e-7)}


def w1(grid: int = 8, t_end: float = 2e4, records: int = 200, rtol: float | None = None,
       atol: float | None = None, dtype: str = "float64", reduction: str = "auto") -> Workload:
    """W1: grid x grid (lambda_W, lambda_H) phase diagram of the bias-free UFM-CE.

    ``rtol``/``atol`` default to :data:`W1_TOLERANCES` of ``dtype``; the accuracy asked of
    fn(T) is 1e-6 in float64 and 1e-3 in float32.
    """
    rtol = W1_TOLERANCES[dtype][0] if rtol is None else rtol
    atol = W1_TOLERANCES[dtype][1] if atol is None else atol
    lams = np.geomspace(*LAMBDA_RANGE, grid)
    model = ModelSpec(kind="ufm", loss="ce", bias="none", classes=10, per_class=20, dim=32)
    solver = SolverSpec(method="dopri5", rtol=rtol, atol=atol, t_end=t_end, records=records,
                        dtype=dtype, reduction=reduction)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=float(a), lambda_h=float(b)),
                     init=InitSpec(kind="gaussian", scale=0.1, seed=i * grid + j),
                     solver=solver)
             for i, a in enumerate(lams) for j, b in enumerate(lams)]
    return Workload("W1", specs, fn_tol=1e-6 if dtype == "float64" else 1e-3,
                    params={"grid": grid, "t_end": t_end, "records": records, "K": 10, "n": 20,
                            "d": 32, "loss": "ce", "rtol": rtol, "atol": atol, "dtype": dtype})


def w2(loss: str = "mse", dim: int = 4096, runs: int = 4, t_end: float = 1e3,
       records: int = 50, rtol: float = 1e-10, atol: float = 1e-12,
       reduction: str = "gram") -> Workload:
    """W2: the wide one-layer UFM (K = 10, n = 20) at width ``dim``; ``runs`` lambda pairs.

    The init is N(0, s^2) with s = 0.1 sqrt(32 / d): the feature and classifier norms of W1 at
    every width, so the flow's time scales (and step counts) do not change with d and the
    cost of a form against d is seen directly.
    """
    lams = np.geomspace(*LAMBDA_RANGE, runs)
    model = ModelSpec(kind="ufm", loss=loss, bias="none", classes=10, per_class=20, dim=dim)
    solver = SolverSpec(method="dopri5", rtol=rtol, atol=atol, t_end=t_end, records=records,
                        reduction=reduction)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=float(lams[i]),
                                                     lambda_h=float(lams[-1 - i])),
                     init=InitSpec(kind="gaussian", scale=0.1 * (32 / dim) ** 0.5, seed=i),
                     solver=solver)
             for i in range(runs)]
    return Workload(f"W2-{loss}-d{dim}", specs, fn_tol=1e-9,
                    params={"K": 10, "n": 20, "d": dim, "loss": loss, "runs": runs,
                            "t_end": t_end, "records": records, "rtol": rtol, "atol": atol})


def w2n(per_class: int = 2000, runs: int = 2, t_end: float = 20.0, records: int = 20,
        rtol: float = 1e-11, atol: float = 1e-13, reduction: str = "classes") -> Workload:
    """W2n: the one-layer UFM-MSE (K = 10, d = 32) with ``per_class`` samples per class.

    The init is N(0, 0.1^2) at every n, so the flow's time scales do not change with n (the
    loss is a mean over samples) and the cost of a form against n is seen directly.
    """
    lams = np.geomspace(*LAMBDA_RANGE, runs)
    model = ModelSpec(kind="ufm", loss="mse", bias="none", classes=10, per_class=per_class,
                      dim=32)
    solver = SolverSpec(method="dopri5", rtol=rtol, atol=atol, t_end=t_end, records=records,
                        reduction=reduction)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=float(lams[i]),
                                                     lambda_h=float(lams[-1 - i])),
                     init=InitSpec(kind="gaussian", scale=0.1, seed=i), solver=solver)
             for i in range(runs)]
    return Workload(f"W2n-n{per_class}", specs, fn_tol=1e-9,
                    params={"K": 10, "n": per_class, "d": 32, "loss": "mse", "runs": runs,
                            "t_end": t_end, "records": records, "rtol": rtol, "atol": atol})


def w3(runs: int = 16, classes: int = 100, per_class: int = 50, dim: int = 512,
       dtype: str = "float32") -> Workload:
    """W3: the large one-layer UFM-CE (K = 100, n = 50, d = 512, 16 runs), RHS throughput."""
    model = ModelSpec(kind="ufm", loss="ce", bias="none", classes=classes, per_class=per_class,
                      dim=dim)
    solver = SolverSpec(method="dopri5", t_end=10.0, records=10, dtype=dtype, reduction="none")
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=5e-4, lambda_h=5e-4),
                     init=InitSpec(kind="gaussian", scale=0.1, seed=i), solver=solver)
             for i in range(runs)]
    return Workload("W3", specs, fn_tol=float("nan"),
                    params={"K": classes, "n": per_class, "d": dim, "runs": runs,
                            "dtype": dtype})


@dataclass
class TrainingCase:
    """One V1 training: a configuration, its data and how many seeds train at once.

    Attributes
    ----------
    name : "mlp5", "resnet20", "mlp5_seeds4", ...
    config : the two-phase training (``nc_every`` 1: every epoch is recorded).
    per_class : training samples per class of Fashion-MNIST (None: all 6000).
    test_per_class : test samples per class (None: all 1000).
    seeds : seeds trained by ``train(..., seeds=...)``, or None for one run.
    log_tol : largest relative difference allowed between an entry of ncsim's log and the
        peer's (on the CPU: every record; on an accelerator: the epoch-0 record, see
        ``accuracy_tol``).
    accuracy_tol : on an accelerator: largest difference of the final training accuracy.
        There the kernels are not deterministic, and stacked seeds follow their separate
        trainings only up to float32 rounding of the batched products; Adam's first steps
        (sign-like for tiny gradients) amplify such rounding: after 2 epochs on 10,000
        samples the NC metrics of a stacked copy and its separate training differ by up to
        ~10%, the training accuracy by ~1% (measured on the CPU). So only the start is
        compared closely (and the record times, step counts and learning rates exactly).
    trend_tol : on an accelerator: largest relative difference of every record's loss, fn
        and training accuracy (fn differed by 2.5% in the case above; a loop without weight
        decay differs by ~80%).
    """

    name: str
    config: TrainConfig
    per_class: int | None
    test_per_class: int | None
    seeds: tuple[int, ...] | None = None
    log_tol: float = 1e-3
    trend_tol: float = 0.1
    accuracy_tol: float = 0.05


# size -> {arch: (per_class, epochs per phase)}, seeds of the seeds case, test per class.
# "full" on the CPU is a reduced V1 (an epoch of ResNet-20 over 60,000 images takes ~10 min
# on one core); "full-gpu" trains on the whole training set.
V1_SIZES = {
    "full": ({"mlp": (1000, (2, 2)), "resnet20": (100, (1, 1))}, 4, 100),
    "full-gpu": ({"mlp": (None, (1, 1)), "resnet20": (None, (1, 1))}, 8, None),
    "small": ({"mlp": (200, (1, 1)), "resnet20": (30, (1, 1))}, 2, 20),
    "tiny": ({"mlp": (20, (1, 1)), "resnet20": (5, (1, 1))}, 2, 5),
}


def v1(size: str = "full", device: str = "cpu") -> list[TrainingCase]:
    """V1: MLP-5 and ResNet-20 (the paper's presets ``mlp`` and ``resnet20``, with fewer
    epochs: the schedules and milestones shrink with them) and MLP-5 with several seeds;
    ``size`` in ``V1_SIZES`` ("full" means "full-gpu" on a GPU)."""
    gpu = device.split(":")[0] != "cpu"
    archs, seeds, test = V1_SIZES["full-gpu" if size == "full" and gpu else size]
    cases = []
    for arch, (per_class, epochs) in archs.items():
        config = preset(arch, epochs=epochs, nc_every=1, device=device, run_id=arch)
        name = "mlp5" if arch == "mlp" else arch
        cases.append(TrainingCase(name, config, per_class, test))
    mlp_per_class, mlp_epochs = archs["mlp"]
    config = preset("mlp", epochs=mlp_epochs, nc_every=1, device=device, run_id="mlp")
    cases.append(TrainingCase(f"mlp5_seeds{seeds}", config, mlp_per_class, test,
                              tuple(range(seeds))))
    return cases
