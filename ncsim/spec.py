"""Parameter dataclasses of a simulated run, and their validation.

A run is a :class:`RunSpec`: the model (:class:`ModelSpec`), the regularisation
(:class:`Regularization`), the initialisation (:class:`InitSpec`), the per-block time-scale
factors (:class:`TimeScale`), the solver (:class:`SolverSpec`) and the onset rule
(:class:`OnsetSpec`). Runs that share ``model``, ``solver`` and ``onset`` can be integrated in
one batch; ``reg``, ``init`` and ``time_scale`` may differ from run to run.

Conventions (see the package README): the objective is

    f = (1/N) sum_i loss(z_i, y_i) + lambda_W/2 sum_l |W_l|_F^2 + lambda_H/2 |H|_F^2
        + lambda_b/2 |b|^2

with N the number of samples, MSE loss 1/2 |z - y|^2 and softmax cross-entropy; gradient flow
``d theta / dt = -eta_theta grad f``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncsim.errors import InputError, is_finite_number, is_integer, require, short_repr

MODELS = ("ufm", "deep")
ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "silu")
LOSSES = ("ce", "mse")
BIASES = ("none", "free", "reg")
INITS = ("gaussian", "spectral", "etf", "arrays")
#: seeds of drawn inits lie in [0, SEED_LIMIT): torch's CPU generator (mt19937) keeps only the
#: low 32 bits of its seed, so seeds s and s + 2^32 would draw the same start
SEED_LIMIT = 2**32
# The most record times of a run (its (T, quantities) float64 record table: 1e7 x 16 x 8 bytes
# = 1.3 GB a run).
RECORDS_MAX = 10**7
# The most classes (a run holds K x K blocks) and layers of a model.
CLASSES_MAX = 10**6
DEPTH_MAX = 10**4
SOLVERS = ("gd", "rk4", "dopri5", "tsit5")
#: the bias decay lambda_b the command lines take for bias "reg" when none is given
DEFAULT_REG_LAMBDA_B = 1e-3
DTYPES = ("float64", "float32")
#: usual (rtol, atol) of each dtype (the command line's defaults)
DEFAULT_TOLERANCES = {"float64": (1e-8, 1e-10), "float32": (1e-5, 1e-7)}
#: an adaptive step's rounding, about eps |y|, may take at most 1/8 of its error budget
RTOL_FLOOR_EPS = 8
REDUCTIONS = ("auto", "none", "gram", "classes")
GRAM_MIN_DIM_RULE = "N + K for MSE, K - 1 for CE"


def gram_min_dim(model: ModelSpec) -> int:
    """Smallest width d at which the Gram form follows the parameter flow.

    Every column of X = [H^T; W] obeys dx/dt = L(t) x with L = -[[eta_H lambda_H, eta_H G^T],
    [eta_W G, eta_W lambda_W]], G = dLoss/dZ (K, N). The Gram flow of X X^T is that of any
    number of columns: a rounding error outside the span of X's d columns grows along every
    eigenvalue of L > 0 that those columns do not hold. L has at most rank G of them, and
    rank G <= K (K - 1 for CE, whose G has columns summing to 0). That count is not enough for
    the span to hold them: measured, CE from d = K - 1 follows the parameters (to 2e-11 with
    both decays > 0 and eta_W = eta_H, :func:`gram_full_rank_dim`), MSE at d = K does not
    (decays 1e-3, t = 500: fn 5.8e-2 off; at d = 2K, 3e-6), so MSE needs the full rank N + K.
    """
    return model.classes - 1 if model.loss == "ce" else gram_full_rank_dim(model)


def gram_full_rank_dim(model: ModelSpec) -> int:
    """N + K: from this width X = [H^T; W] has full row rank, so every Gram is a state of the
    parameter flow and the Gram form is exact whatever the decays and time scales.

    Below it (CE only, :func:`gram_min_dim`) directions outside the span of X must decay: with
    a zero decay they are neutral, and eta_W != eta_H makes L unsymmetric. Measured (CE, K = 3,
    n = 3, decays 0.01, eta_W = 5, t = 40): fn 1.1e-2 off at d = 3. :meth:`RunSpec.validate`
    refuses a zero decay or unequal time scales there.
    """
    return model.num_samples + model.classes
ONSET_METRICS = (
    "nc1_trace", "nc1", "nc2_etf", "nc2_angle", "nc3", "nc3_paper", "cdnv",
)


def _one_of(value: str, allowed: Sequence[str], name: str) -> None:
    require(value in allowed, f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _finite_nonneg(value: float, name: str) -> None:
    require(
        is_finite_number(value) and value >= 0,
        f"{name} must be a finite number >= 0, got {value!r}",
    )


def _plain_value(value: Any, kind: str) -> Any:
    """``value`` with numpy scalars as the Python numbers they hold and, for ``kind``
    "float", an int as a float; tuples element by element. Anything else stays as it is,
    for ``validate`` to judge (a float for an integer field, a bool, text)."""
    if isinstance(value, tuple):
        return tuple(_plain_value(v, kind) for v in value)
    if isinstance(value, np.generic):  # numpy scalar: the Python number it holds
        value = value.item()
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _plain_fields(spec: Any) -> None:
    """Give a spec dataclass's numeric fields plain Python values, in place (frozen).

    A numpy integer for ``dim``, an int for ``lambda_h`` or a list or array of class counts is
    the same parameter as the plain value; normalised here, it compares equal, validates the
    same way and gives the same run id (the run id hashes the fields' JSON text)."""
    for item in dataclasses.fields(spec):
        kind = str(item.type).split(" ")[0].split("[")[0]
        value = getattr(spec, item.name)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()  # a 0-d array is the number it holds
        if "tuple" in str(item.type) and isinstance(value, (list, np.ndarray)):
            value = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        if kind in ("float", "int", "bool"):
            value = _plain_value(value, kind)
        object.__setattr__(spec, item.name, value)


@dataclass(frozen=True)
class ModelSpec:
    """Structure of the model; every run of a batch shares it.

    Parameters
    ----------
    kind : "ufm" (one-layer: Z = W H + b) or "deep" (H feeds an L-layer head).
    loss : "ce" (softmax cross-entropy) or "mse" (1/2 |z - y|^2).
    bias : "none" (b = 0), "free" (trained, lambda_b = 0) or "reg" (trained, lambda_b > 0).
    classes : K >= 2.
    per_class : n, samples per class, or a tuple of K class counts (imbalance).
    dim : d, dimension of the free features H.
    depth : L, number of weight matrices including the classifier (1 for "ufm").
    width : hidden width of the deep head (default: d).
    activation : nonlinearity between the layers of the deep head.
    leaky_slope : negative slope of "leaky_relu".
    """

    kind: str = "ufm"
    loss: str = "ce"
    bias: str = "none"
    classes: int = 10
    per_class: int | tuple[int, ...] = 20
    dim: int = 32
    depth: int = 1
    width: int | None = None
    activation: str = "linear"
    leaky_slope: float = 0.01

    def __post_init__(self) -> None:
        _plain_fields(self)
        if self.kind == "ufm" and self.depth != 1:
            raise InputError(f"model 'ufm' has depth 1, got depth {self.depth}; use kind='deep' "
                             "(--model deep)")

    def validate(self) -> None:
        _one_of(self.kind, MODELS, "model")
        _one_of(self.loss, LOSSES, "loss")
        _one_of(self.bias, BIASES, "bias")
        _one_of(self.activation, ACTIVATIONS, "activation")
        require(is_integer(self.classes) and self.classes >= 2,
                f"classes K must be an integer >= 2, got {self.classes!r}")
        require(self.classes <= CLASSES_MAX, f"classes K must be at most {CLASSES_MAX:.0e} (a run "
                f"holds K x K blocks), got {self.classes!r}")
        given = self.per_class if isinstance(self.per_class, tuple) else (self.per_class,)
        require(all(is_integer(c) and c >= 1 for c in given),
                f"samples per class (per_class; --class-counts on the command line) must be "
                f"integers >= 1, got {self.per_class!r}")
        counts = self.class_counts
        require(len(counts) == self.classes,
                f"per_class gives {len(counts)} class counts but K = {self.classes}")
        require(sum(counts) < 2**53, f"the samples N = {sum(counts)} (all classes) must be "
                "below 2^53 (where whole numbers stop being exact floats)")
        require(is_integer(self.dim) and self.dim >= 1,
                f"dim d must be an integer >= 1, got {self.dim!r}")
        require(self.dim < 2**53, f"dim d must be below 2^53 (where whole numbers stop being "
                                  f"exact floats; the Gram form's cost does not grow with d), "
                                  f"got {self.dim!r}")
        require(is_integer(self.depth) and self.depth >= 1,
                f"depth must be an integer >= 1, got {self.depth!r}")
        require(self.depth <= DEPTH_MAX,
                f"depth must be at most {DEPTH_MAX:.0e} layers, got {self.depth!r}")
        require(self.kind == "deep" or self.depth == 1, "model 'ufm' has depth 1")
        require(self.width is None or (is_integer(self.width) and self.width >= 1),
                f"width must be an integer >= 1, got {self.width!r}")
        require(self.width is None or self.width < 2**53,
                f"width must be below 2^53, got {self.width!r}")
        require(self.kind == "deep" or self.activation == "linear",
                "an activation needs kind='deep' (--model deep; the one-layer UFM has none)")
        require(self.depth >= 2 or self.activation == "linear",
                f"activation {self.activation!r} acts on hidden layers: it needs depth >= 2 "
                f"(--depth 2 or more), got depth {self.depth}")
        require(self.depth >= 2 or self.width is None,
                f"width {self.width} sets the hidden layers of a deep head: it needs "
                f"kind='deep' with depth >= 2 (--model deep --depth 2 or more), got depth "
                f"{self.depth}; drop the width")
        _finite_nonneg(self.leaky_slope, "leaky_slope")
        require(self.activation == "leaky_relu" or self.leaky_slope == 0.01,
                f"leaky_slope {self.leaky_slope} sets the 'leaky_relu' activation, got "
                f"activation {self.activation!r}; drop the slope or use leaky_relu")

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Samples per class, length K."""
        if isinstance(self.per_class, tuple):
            return tuple(int(c) for c in self.per_class)
        return (int(self.per_class),) * self.classes

    @property
    def num_samples(self) -> int:
        """N = sum of the class counts."""
        return sum(self.class_counts)

    @property
    def hidden_width(self) -> int:
        """Width of the hidden layers of the deep head (d when not given)."""
        return self.width if self.width is not None else self.dim

    @property
    def balanced(self) -> bool:
        return len(set(self.class_counts)) == 1

    @property
    def has_bias(self) -> bool:
        return self.bias != "none"

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) shape of each weight matrix W_1 .. W_L; W_L is the classifier."""
        if self.depth == 1:
            return [(self.classes, self.dim)]
        m = self.hidden_width
        shapes = [(m, self.dim)] + [(m, m)] * (self.depth - 2) + [(self.classes, m)]
        return shapes

    @property
    def penultimate_dim(self) -> int:
        """Dimension of the penultimate features (input of the classifier)."""
        return self.dim if self.depth == 1 else self.hidden_width


@dataclass(frozen=True)
class Regularization:
    """Weight decays; ``lambda_w`` is one value or one per layer (W_1 .. W_L)."""

    lambda_w: float | tuple[float, ...] = 5e-4
    lambda_h: float = 5e-4
    lambda_b: float = 0.0

    def __post_init__(self) -> None:
        _plain_fields(self)

    def per_layer(self, depth: int) -> tuple[float, ...]:
        """lambda_W for each of the ``depth`` weight matrices."""
        if isinstance(self.lambda_w, tuple):
            require(len(self.lambda_w) == depth,
                    f"lambda_w lists {len(self.lambda_w)} values but depth is {depth}")
            return tuple(float(v) for v in self.lambda_w)
        return (float(self.lambda_w),) * depth

    def validate(self, model: ModelSpec) -> None:
        for v in self.lambda_w if isinstance(self.lambda_w, tuple) else (self.lambda_w,):
            _finite_nonneg(v, "lambda_w")
        self.per_layer(model.depth)
        _finite_nonneg(self.lambda_h, "lambda_h")
        _finite_nonneg(self.lambda_b, "lambda_b")
        if model.bias == "reg":
            require(self.lambda_b > 0, "bias 'reg' needs lambda_b > 0 (use bias 'free' for 0)")
        elif self.lambda_b != 0:
            require(False, f"lambda_b = {self.lambda_b} needs bias='reg' (--bias reg), got bias "
                    f"{model.bias!r}")


@dataclass(frozen=True)
class InitSpec:
    """Initial point.

    kind : "gaussian" (i.i.d. N(0, scale^2) entries), "spectral" (balanced and aligned with the
        label modes of the model: K modes for MSE without bias, else the K-1 centred modes; every
        factor has singular value ``scale`` on those modes), "etf" (spectral on the K-1 centred
        modes: the class means form a scaled simplex ETF when the classes are balanced; with
        class counts n_c mean c is scaled by 1/sqrt(n_c), see :mod:`ncsim.models.init`), or
        "arrays" (explicit arrays, e.g. real features).
    scale : standard deviation (gaussian) or per-factor singular value (spectral, etf).
    seed : random seed of this run (gaussian entries, random rotations of spectral inits), an
        integer in [0, 2^32) (:data:`SEED_LIMIT`).
    arrays : for kind "arrays": {"H": (d, N), "W": [(out, in) per layer], "b": (K,)} as numpy.
    """

    kind: str = "gaussian"
    scale: float = 0.1
    seed: int = 0
    arrays: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        _plain_fields(self)

    def validate(self, model: ModelSpec) -> None:
        _one_of(self.kind, INITS, "init")
        require(is_finite_number(self.scale) and self.scale > 0,
                f"init scale must be a finite number > 0, got {self.scale!r}")
        require(is_integer(self.seed) and 0 <= self.seed < SEED_LIMIT,
                f"seed must be an integer in [0, 2^32), got {self.seed!r} (torch's generator "
                "keeps only the low 32 bits of a seed: a larger one would alias a smaller one)")
        modes = spectral_rank(model) if self.kind == "spectral" else model.classes - 1
        if self.kind in ("spectral", "etf"):
            dims = [model.dim] + ([model.hidden_width] if model.depth > 1 else [])
            require(min(dims) >= modes,
                    f"init {self.kind!r} needs d (and width) >= {modes} for K = {model.classes}, "
                    f"got d = {model.dim}" + (f", width = {model.hidden_width}"
                                               if model.depth > 1 else ""))
        if self.kind == "arrays":
            require(self.arrays is not None and "H" in self.arrays,
                    "init 'arrays' needs arrays={'H': ..., 'W': [...], 'b': ...}")
        else:
            require(self.arrays is None,
                    f"init {self.kind!r} draws its own start and would ignore the arrays given; "
                    f"use kind 'arrays' to start from them, or drop arrays=")


def spectral_rank(model: ModelSpec) -> int:
    """Number of label modes a spectral init fills: K (MSE, no bias) or K - 1."""
    return model.classes if (model.loss == "mse" and model.bias == "none") else model.classes - 1


@dataclass(frozen=True)
class TimeScale:
    """Per-block time-scale factors eta (gradient flow d theta/dt = -eta grad f)."""

    eta_h: float = 1.0
    eta_w: float | tuple[float, ...] = 1.0
    eta_b: float = 1.0

    def __post_init__(self) -> None:
        _plain_fields(self)

    def per_layer(self, depth: int) -> tuple[float, ...]:
        if isinstance(self.eta_w, tuple):
            require(len(self.eta_w) == depth,
                    f"eta_w lists {len(self.eta_w)} values but depth is {depth}")
            return tuple(float(v) for v in self.eta_w)
        return (float(self.eta_w),) * depth

    def validate(self, model: ModelSpec) -> None:
        layers = self.eta_w if isinstance(self.eta_w, tuple) else (self.eta_w,)
        named = [("eta_h", self.eta_h), ("eta_b", self.eta_b), *(("eta_w", v) for v in layers)]
        for name, v in named:
            require(is_finite_number(v) and v > 0,
                    f"time-scale factors must be > 0, got {name} = {v!r}")
        self.per_layer(model.depth)
        require(model.has_bias or self.eta_b == 1.0,
                f"eta_b = {self.eta_b} scales the bias's flow but the model has no bias "
                f"(bias 'none'); drop eta_b or use bias 'free' or 'reg'")


@dataclass(frozen=True)
class SolverSpec:
    """Integrator and stopping rules (shared by a batch).

    method : "gd" (explicit Euler, i.e. gradient descent with learning rate dt), "rk4"
        (fixed step dt), "dopri5" or "tsit5" (adaptive, one step size per run).
    dt : fixed step (gd, rk4); the first step is chosen automatically when None (adaptive).
        A t_end that is not a multiple of dt ends with one shorter step, and a record time
        between two fixed steps is read from the method's dense output (for gd the straight
        line between two iterates), so gd's records are gradient-descent iterates only at
        multiples of dt.
    rtol, atol : local error tolerances of the adaptive methods; rtol >= 8 eps of the dtype
        (9.5e-7 in float32; :data:`DEFAULT_TOLERANCES` are the usual pairs).
    t_end : final time (> 0), in gradient-flow time units (t = lr x steps).
    records : number of recorded times: t = 0 and records - 1 log-spaced times in
        [t_first, t_end].
    t_first : first non-zero record time (default min(1e-2, t_end / 10)).
    max_steps : cap on the step attempts of a run (accepted and rejected alike); status
        "max_steps" when it is reached before t_end.
    gtol : steady state: a run stops when |grad f|_2 <= gtol at a point the flow does not
        leave before t_end. A point at rest is tested for a saddle
        (:mod:`ncsim.flow.saddle`: the largest growth rate mu of the linearised flow, by
        Arnoldi's method on the velocity): where mu x (t_end - t) >= 1 the run goes on, so an
        init at scale ~1e-10 next to the origin's saddle leaves it and collapses as with
        gtol = 0; a saddle left too slowly, or a minimum, stops the run (``not_collapsed``
        without an onset; ``ncsim.flow.stopped_at_rest`` finds such runs in a run table and
        ``ncsim simulate`` notes them). A start exactly at a stationary point (|grad f| = 0)
        cannot leave it and stops there (at the origin fn is 0 throughout: ``vanishing``).
        Give gtol = 0 to follow every run to t_end. At rest an explicit
        method's steps sit at its stability limit, so |grad f| settles on a noise floor of
        about rtol x (largest curvature) x |theta| (1e-10 .. 4e-9 for small UFMs at rtol
        1e-8); a gtol below that floor never stops a run early (it then runs to t_end).
    check_every : steps between two host synchronisations (termination checks). On an
        accelerator a batch whose record queue holds fewer states per run (very large
        batches: a 1 GiB cap) synchronises after that many steps.
    vanish_tol : a run whose final fn is below vanish_tol x its largest fn is "vanishing"
        (0 turns the rule off).
    dtype, device : torch dtype name and device of the integration.
    reduction : state the one-layer UFM is integrated in: "none" (the parameters H, W, b),
        "gram" (the exact Gram-space form Z = W H, W W^T, H^T H, b, whose cost does not depend
        on d; one-layer UFM with d >= N + K for MSE, d >= K - 1 for CE: :func:`gram_min_dim`),
        "classes" (the exact class-means form: class means,
        deviation propagator, W, b, whose cost does not depend on n; one-layer UFM with MSE
        loss only) or "auto" (gram for the one-layer UFM when its state is smaller and
        d >= N + K; else classes for the one-layer MSE UFM when cheaper, 4 d + 3 K < 3 N; none
        otherwise; see :func:`ncsim.models.reduction.state_form`).
    cuda_graphs : capture each chunk of ``check_every`` steps, and the metrics calls of the
        records, as CUDA graphs and replay them (adaptive methods on a CUDA device only): one
        launch per chunk or call instead of one per kernel. The same steps as without, and
        results to rounding.
    """

    method: str = "dopri5"
    dt: float | None = None
    rtol: float = 1e-8
    atol: float = 1e-10
    t_end: float = 2e4
    records: int = 200
    t_first: float | None = None
    max_steps: int = 1_000_000
    gtol: float = 1e-10
    check_every: int = 16
    vanish_tol: float = 1e-3
    dtype: str = "float64"
    device: str = "cpu"
    reduction: str = "auto"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        _plain_fields(self)

    @property
    def adaptive(self) -> bool:
        return self.method in ("dopri5", "tsit5")

    @property
    def first_record(self) -> float:
        return self.t_first if self.t_first is not None else min(1e-2, self.t_end / 10)

    def record_times(self) -> np.ndarray:
        """Record times, shape (records,): 0 then log-spaced in [t_first, t_end] (one record:
        t_end; two: 0 and t_end)."""
        if self.records == 1:
            return np.array([self.t_end])
        if self.records == 2:
            return np.array([0.0, self.t_end])
        rest = np.geomspace(self.first_record, self.t_end, self.records - 1)
        return np.concatenate([[0.0], rest])

    def validate(self) -> None:
        _one_of(self.method, SOLVERS, "solver")
        _one_of(self.dtype, DTYPES, "dtype")
        _one_of(self.reduction, REDUCTIONS, "reduction")
        require(is_finite_number(self.t_end) and self.t_end > 0,
                f"t_end must be a finite number > 0, got {self.t_end!r}")
        if not self.adaptive:
            require(is_finite_number(self.dt) and self.dt > 0,
                    f"solver {self.method!r} needs a step dt > 0 (e.g. dt=0.1, --dt 0.1)")
            require(self.t_end / self.dt < 2**53,
                    f"dt {self.dt!r} makes t_end / dt = {self.t_end / self.dt:.3g} steps, past "
                    f"2^53 (where step counts stop being exact); use dt >= t_end / 2^53")
        elif self.dt is not None:
            require(is_finite_number(self.dt) and self.dt > 0, f"dt must be > 0, got {self.dt!r}")
        require(is_finite_number(self.rtol) and self.rtol > 0,
                f"rtol must be a finite number > 0, got {self.rtol!r}")
        if self.adaptive:
            floor = RTOL_FLOOR_EPS * float(np.finfo(self.dtype).eps)
            require(self.rtol >= floor,
                    f"rtol {self.rtol:g} is below what {self.dtype} resolves ({RTOL_FLOOR_EPS} "
                    f"eps = {floor:.2g}): the step control would chase rounding errors "
                    f"(rejections, 'stalled'); give rtol >= {floor:.2g} (usual in {self.dtype}: "
                    f"{DEFAULT_TOLERANCES[self.dtype][0]:g})"
                    + ("" if self.dtype == "float64" else " or dtype float64"))
        require(is_finite_number(self.atol) and self.atol >= 0,
                f"atol must be a finite number >= 0, got {self.atol!r}")
        if self.cuda_graphs:
            require(self.adaptive and self.device.startswith("cuda"),
                    f"cuda_graphs needs an adaptive solver (dopri5, tsit5) on a CUDA device, "
                    f"got {self.method!r} on {self.device!r}: use device='cuda' (--device cuda) "
                    f"or drop cuda_graphs (--cuda-graphs)")
        require(is_integer(self.records) and self.records >= 2,
                f"records must be an integer >= 2, got {self.records!r}")
        require(self.records <= RECORDS_MAX,
                f"records must be at most {RECORDS_MAX:.0e} (each run keeps every quantity at "
                f"every record time), got {self.records!r}")
        require(self.t_first is None or is_finite_number(self.t_first),
                f"t_first must be a finite number, got {self.t_first!r}")
        if self.t_first is None:  # the default t_end / 10 underflows below ~5e-323
            require(self.first_record > 0, f"t_end {self.t_end!r} is too small for records "
                    f"(its default first record t_end / 10 is 0); use t_end >= 1e-300")
        require(0 < self.first_record < self.t_end,
                f"t_first must lie in (0, t_end), got {self.first_record}")
        require(is_integer(self.max_steps) and self.max_steps >= 1,
                f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        require(is_finite_number(self.gtol) and self.gtol >= 0,
                f"gtol must be a finite number >= 0, got {self.gtol!r}")
        require(is_integer(self.check_every) and self.check_every >= 1,
                f"check_every must be an integer >= 1, got {self.check_every!r}")
        require(is_finite_number(self.vanish_tol) and 0 <= self.vanish_tol < 1,
                f"vanish_tol must lie in [0, 1), got {self.vanish_tol!r}")
        dev = str(self.device)
        require_device(dev)


def require_device(device: str) -> None:
    """Raise :class:`InputError` when ``device`` is not a device name (cpu, cuda, cuda:N, mps)
    or torch cannot use it on this machine."""
    import torch

    require(re.fullmatch(r"cpu|mps|cuda(:\d+)?", device) is not None,
            f"unknown device {device!r}; allowed: cpu, cuda, cuda:N, mps")
    if device.startswith("cuda"):
        require(torch.cuda.is_available(),
                f"device {device!r} is not available (torch sees no CUDA device); use "
                f"device='cpu' (--device cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        require(index < torch.cuda.device_count(),
                f"device {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps":
        require(torch.backends.mps.is_available(),
                "device 'mps' is not available on this machine; use device='cpu' (--device cpu)")


@dataclass(frozen=True)
class OnsetSpec:
    """Onset rule: first time ``metric`` < ``threshold`` (for ``stay`` consecutive records).

    interpolate : interpolate the crossing time linearly in (log time, log metric).
    """

    metric: str = "nc1_trace"
    threshold: float = 0.01
    stay: int = 1
    interpolate: bool = True

    def __post_init__(self) -> None:
        _plain_fields(self)

    def validate(self) -> None:
        _one_of(self.metric, ONSET_METRICS, "onset metric")
        require(is_finite_number(self.threshold) and self.threshold > 0,
                f"onset threshold must be a finite number > 0, got {self.threshold!r}")
        require(is_integer(self.stay) and self.stay >= 1,
                f"onset 'stay' must be an integer >= 1, got {self.stay!r}")
        require(isinstance(self.interpolate, (bool, np.bool_)),
                f"onset 'interpolate' must be True or False, got {self.interpolate!r}")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """Field names of a spec dataclass for the run table (init arrays left out)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "arrays")


@functools.cache
def _row_keys(part: str, cls: type) -> tuple[tuple[str, str], ...]:
    """(field name, run-table column) of each field of the part ``part`` of class ``cls``:
    model and reg fields keep their names, the others get the part's name in front."""
    return tuple((name, name if part in ("model", "reg") else f"{part}_{name}")
                 for name in _field_names(cls))


@dataclass(frozen=True)
class RunSpec:
    """One simulated run."""

    model: ModelSpec = field(default_factory=ModelSpec)
    reg: Regularization = field(default_factory=Regularization)
    init: InitSpec = field(default_factory=InitSpec)
    time_scale: TimeScale = field(default_factory=TimeScale)
    solver: SolverSpec = field(default_factory=SolverSpec)
    onset: OnsetSpec = field(default_factory=OnsetSpec)

    def validate(self, checked: set[tuple[int, ...]] | None = None) -> RunSpec:
        """Check every field; raise :class:`InputError` with one clear line. Returns self.

        checked : for a pass over many specs that share part objects (one ``ModelSpec`` for
            a whole grid): the identities of the parts already checked in the pass. A part
            found there is not checked again; the parts checked here are added. The caller
            keeps the specs alive during the pass, so that an identity names one object.
        """
        self._check_parts()
        model = self.model
        for key, check in (((id(model),), model.validate),
                           ((id(self.reg), id(model)), lambda: self.reg.validate(model)),
                           ((id(self.init), id(model)), lambda: self.init.validate(model)),
                           ((id(self.time_scale), id(model)),
                            lambda: self.time_scale.validate(model)),
                           ((id(self.solver),), self.solver.validate),
                           ((id(self.onset),), self.onset.validate)):
            if checked is None or key not in checked:
                check()
                if checked is not None:
                    checked.add(key)
        require(self.solver.reduction != "gram" or self.model.kind == "ufm",
                "reduction 'gram' needs the one-layer UFM (model 'ufm')")
        if self.solver.reduction == "gram":
            need = gram_min_dim(self.model)
            require(self.model.dim >= need,
                    f"reduction 'gram' needs d >= {need} ({GRAM_MIN_DIM_RULE}), got "
                    f"d = {self.model.dim}: with fewer dimensions than growing directions the "
                    "Gram flow leaves rank d and drifts to a wider model's optimum; use "
                    "reduction 'none' or 'auto'")
            self._check_gram_below_full_rank()
        require(self.solver.reduction != "classes" or (
            self.model.kind == "ufm" and self.model.loss == "mse"),
            "reduction 'classes' needs the one-layer UFM with MSE loss (model 'ufm', loss "
            "'mse'); use 'auto' or 'none'")
        return self

    def _check_gram_below_full_rank(self) -> None:
        """Below d = N + K a forced Gram form needs both decays > 0 and eta_W = eta_H
        (:func:`gram_full_rank_dim`)."""
        full = gram_full_rank_dim(self.model)
        if self.model.dim >= full:
            return
        lw, lh = self.reg.per_layer(1)[0], float(self.reg.lambda_h)
        eta_w, eta_h = self.time_scale.per_layer(1)[0], float(self.time_scale.eta_h)
        require(lw > 0 and lh > 0 and eta_w == eta_h,
                f"reduction 'gram' below d = N + K = {full} needs lambda_w > 0, lambda_h > 0 "
                f"and eta_w = eta_h, got lambda_w = {lw:g}, lambda_h = {lh:g}, eta_w = "
                f"{eta_w:g}, eta_h = {eta_h:g}: otherwise directions outside rank d do not "
                f"decay and the Gram flow follows a wider model; use reduction 'none' or "
                f"'auto', or d >= {full}")

    def _check_parts(self) -> None:
        """:class:`InputError` unless every part is an instance of its spec class (a dict of
        fields, e.g. ``model={"classes": 3}``, is not one)."""
        for item in dataclasses.fields(self):
            value, kind = getattr(self, item.name), _PART_TYPES[item.name]
            if not isinstance(value, kind):
                raise InputError(f"RunSpec {item.name} must be a {kind.__name__}, got "
                                 f"{type(value).__name__} {short_repr(value)}; build it as "
                                 f"{kind.__name__}(...), e.g. RunSpec({item.name}="
                                 f"{kind.__name__}())")

    def batch_key(self) -> tuple:
        """Runs with equal keys can share one batch."""
        return (self.model, self.solver, self.onset, self.init.kind == "arrays")

    def to_row(self) -> dict[str, Any]:
        """Flat dict of every spec field (for the run table)."""
        row: dict[str, Any] = {}
        for part in ("model", "reg", "init", "time_scale", "solver", "onset"):
            value = getattr(self, part)
            for name, column in _row_keys(part, type(value)):
                entry = getattr(value, name)
                if isinstance(entry, tuple):
                    entry = ",".join(str(v) for v in entry)
                row[column] = entry
        return row

    def replace(self, **parts: Any) -> RunSpec:
        """Copy with some parts replaced: ``spec.replace(reg=Regularization(...))``."""
        return dataclasses.replace(self, **parts)


#: the class of each part of a :class:`RunSpec`
_PART_TYPES: dict[str, type] = {"model": ModelSpec, "reg": Regularization, "init": InitSpec,
                                "time_scale": TimeScale, "solver": SolverSpec,
                                "onset": OnsetSpec}
