"""Initial states of a batch of runs.

Each run draws its random numbers from its own generator seeded with its own seed, in
float64 on the CPU, so a run starts from the same point whatever batch, device or dtype it
is solved in. The bias starts at 0.

- gaussian: every entry of H and W_l is N(0, scale^2). For the one-layer UFM with
  d > N + K the draw goes through the Gram factor of M = [H^T; W] ((N + K), d):
  M = scale L F^T, with L (N + K, N + K) lower triangular with Bartlett entries (N(0, 1)
  below the diagonal, sqrt(chi^2 with d - i degrees of freedom) on it at row i = 0, 1, ...)
  and F (d, N + K) a Haar-random orthonormal frame. That is the LQ decomposition of a
  Gaussian matrix, so M has exactly the distribution of iid N(0, scale^2) entries; but the
  inner products M M^T = L L^T need only L, so the Gram form (:mod:`ncsim.models.gram`)
  starts without anything of size d and its cost does not depend on d. These draws come
  from numpy's PCG64 generator (``numpy.random.default_rng(seed)``: the strict lower
  triangle of L row by row, its diagonal, then the (d, N + K) Gaussian whose QR gives F);
  all other draws from torch's CPU generator. The frame costs O(d (N + K)^2) once per run in
  the d-space and class-means forms (60 ms at d = 4096, N + K = 210; 2.5 s at N + K = 2010),
  against O(d (N + K)) for entry-by-entry draws; and LAPACK's QR may round differently on
  another number of threads, so these starts agree across thread counts to rounding
  (2e-14 of their size at N + K = 210), not bit for bit (the Gram starts too: their
  products change library with the thread count, :mod:`ncsim.products`).
- spectral: balanced and aligned with the label modes: with r modes (K for MSE without bias,
  else the K-1 centred modes), H = a U_0 V^T, W_l = a U_l U_{l-1}^T, W_L = a U_K U_{L-1}^T with
  orthonormal U (random rotations from the run's seed) and V the label modes, so every factor
  has singular value a = scale on those modes and, for a linear head, Z = a^(L+1) U_K V^T.
  Every sample of a class has the same features.
- etf: spectral on the K-1 centred modes. With n samples per class the class means of H form a
  scaled simplex ETF (Gram a^2/n (I - 11^T/K)); with class counts n_c, mean c is scaled by
  1/sqrt(n_c) instead (Gram a^2 D^(-1/2) (I - 11^T/K) D^(-1/2), D = diag(n_c)), which keeps
  the singular values of H at a but is not an ETF.
- arrays: explicit arrays (e.g. real features) given in the spec.

Seeds are integers in [0, 2^32) (:data:`SEED_LIMIT`): torch's CPU generator keeps only the low
32 bits of its seed, so seeds s and s + 2^32 would draw the same start; a larger seed is
refused (:class:`InputError`) rather than silently aliased.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ncsim.errors import InputError, is_integer
from ncsim.models.layout import StateLayout
from ncsim.models.ufm import state_layout
from ncsim.spec import SEED_LIMIT, InitSpec, ModelSpec, spectral_rank

_RUNS_PER_THREAD = 16  # fewer runs per thread are drawn on the calling thread alone
# More drawing threads than this contend for the GIL (each run's draw holds it ~0.1 ms around
# ~0.15 ms without it): 4096 W1 runs took 1.23 s on 1 thread, 0.44 s on 4, 0.85 s on 16 (an
# H200's 16-core host).
_DRAW_THREADS_MAX = 4


def run_seed(init: InitSpec) -> int:
    """The seed of ``init`` as a Python int; :class:`InputError` when it is not below
    :data:`SEED_LIMIT` (a larger seed would start from the same point as its low 32 bits)."""
    if not is_integer(init.seed):
        raise InputError(f"seed must be an integer, got {init.seed!r}")
    seed = int(init.seed)
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"seed {seed} is out of range: seeds of the initial state are integers "
                         f"in [0, 2^32) (below {SEED_LIMIT}); torch's generator keeps only the "
                         f"low 32 bits of a seed, so a larger one would draw what a smaller one "
                         f"draws; give a seed below 2^32")
    return seed


def _haar_columns(gaussian: torch.Tensor) -> torch.Tensor:
    """The Haar-random orthonormal columns (rows, cols) of a (rows, cols) float64 Gaussian
    matrix (rows >= cols): its QR factor Q with the signs that make diag(R) positive."""
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Random (rows, cols) matrix with orthonormal columns (rows >= cols), float64."""
    return _haar_columns(torch.randn(rows, cols, generator=gen, dtype=torch.float64))


def _centred_basis(k: int) -> torch.Tensor:
    """(K, K-1) orthonormal basis of the vectors orthogonal to the all-ones vector."""
    helmert = torch.zeros(k, k - 1, dtype=torch.float64)
    for j in range(1, k):
        helmert[:j, j - 1] = 1.0 / np.sqrt(j * (j + 1))
        helmert[j, j - 1] = -j / np.sqrt(j * (j + 1))
    return helmert


def label_modes(model: ModelSpec, centred: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left (K, r) and right (N, r) orthonormal label modes, float64.

    Uncentred: U = I_K and V = class indicators / sqrt(n_k). Centred: both multiplied by an
    orthonormal basis of the complement of the ones vector (exact label modes when balanced).
    """
    counts = torch.tensor(model.class_counts, dtype=torch.float64)
    labels = torch.repeat_interleave(torch.arange(model.classes), torch.tensor(model.class_counts))
    indicators = torch.nn.functional.one_hot(labels, model.classes).to(torch.float64)
    v = indicators / counts.sqrt()
    u = torch.eye(model.classes, dtype=torch.float64)
    if centred:
        q = _centred_basis(model.classes)
        u, v = u @ q, v @ q
    return u, v


def draws_gram_factor(model: ModelSpec) -> bool:
    """Whether a gaussian init of ``model`` is drawn through its Gram factor (the one-layer
    UFM with d > N + K, see the module docstring)."""
    return model.kind == "ufm" and model.dim > model.num_samples + model.classes


def gram_factor(model: ModelSpec, init: InitSpec) -> tuple[torch.Tensor, np.random.Generator]:
    """The Gram factor L (N + K, N + K) of a gaussian init with :func:`draws_gram_factor`,
    float64 and lower triangular, already times ``scale``; and the run's generator after it
    (the frame F is drawn from it next).

    Rows 0..N-1 of L belong to h_1..h_N, rows N..N+K-1 to w_1..w_K: H^T H = L_H L_H^T,
    W H = L_W L_H^T and W W^T = L_W L_W^T.
    """
    p = model.num_samples + model.classes
    rng = np.random.default_rng(run_seed(init))
    factor = np.zeros((p, p))
    rows, cols = np.tril_indices(p, -1)
    factor[rows, cols] = rng.standard_normal(rows.size)
    factor[np.arange(p), np.arange(p)] = np.sqrt(rng.chisquare(model.dim - np.arange(p)))
    return torch.from_numpy(factor * init.scale), rng


def _gaussian_through_factor(model: ModelSpec, init: InitSpec) -> dict[str, torch.Tensor]:
    """H (d, N) and W1 (K, d) of a gaussian init with :func:`draws_gram_factor`: M = L F^T."""
    factor, rng = gram_factor(model, init)
    frame = _haar_columns(torch.from_numpy(rng.standard_normal((model.dim, factor.shape[0]))))
    m = factor @ frame.T
    n = model.num_samples
    return {"H": m[:n].T.contiguous(), "W1": m[n:].contiguous()}


def _draw_gaussian(model: ModelSpec, init: InitSpec, blocks: dict[str, torch.Tensor]) -> None:
    """Fill the contiguous float64 blocks H, W1..WL (fresh tensors or views of a state row)
    with N(0, scale^2) entries from the run's generator, in that order (``normal_`` on a
    contiguous block draws what ``randn`` of its shape draws)."""
    gen = torch.Generator().manual_seed(run_seed(init))
    for name in ["H", *(f"W{l + 1}" for l in range(model.depth))]:
        blocks[name].normal_(0.0, init.scale, generator=gen)  # scale x the N(0, 1) draw


def _gaussian(model: ModelSpec, init: InitSpec) -> dict[str, torch.Tensor]:
    if draws_gram_factor(model):
        return _gaussian_through_factor(model, init)
    parts = {"H": torch.empty(model.dim, model.num_samples, dtype=torch.float64)}
    for l, shape in enumerate(model.layer_shapes):
        parts[f"W{l + 1}"] = torch.empty(*shape, dtype=torch.float64)
    _draw_gaussian(model, init, parts)
    return parts


def _spectral(model: ModelSpec, init: InitSpec, centred: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(run_seed(init))
    u_k, v = label_modes(model, centred)
    r = u_k.shape[1]
    a = init.scale
    bases = [_orthonormal(model.dim, r, gen)]
    bases += [_orthonormal(model.hidden_width, r, gen) for _ in range(model.depth - 1)]
    bases.append(u_k)
    parts = {"H": a * bases[0] @ v.T}
    for l in range(model.depth):
        parts[f"W{l + 1}"] = a * bases[l + 1] @ bases[l].T
    return parts


def float_array(name: str, value: Any) -> np.ndarray:
    """An init array as float64 numpy (None becomes NaN); :class:`InputError` when it is not
    real and numeric (text, digits as text included, flags, ragged nested lists, complex
    numbers)."""
    if isinstance(value, torch.Tensor):  # values only: a tensor that requires grad, on a device
        value = value.detach().cpu()
    try:
        raw = np.asarray(value)
        if raw.dtype.kind in "USb" or (raw.dtype.kind == "O" and any(
                isinstance(v, (str, bytes, bool, np.bool_)) for v in raw.flat)):
            raise TypeError(raw.dtype)
        # a fresh C-ordered copy: views with negative strides (H[:, ::-1]) convert to tensors
        real = None if np.iscomplexobj(raw) else np.array(raw, dtype=np.float64, order="C")
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float range
        raise InputError(f"init array {name} must be an array of numbers, got "
                         f"{type(value).__name__} {value!r:.60}") from None
    if real is None:
        raise InputError(f"init array {name} is complex ({raw.dtype}); features and weights "
                         f"are real: pass its real part (numpy.real) if that is what you mean")
    return real


def _arrays(model: ModelSpec, init: InitSpec) -> dict[str, torch.Tensor]:
    """The given blocks, checked: the shapes of the model's blocks, finite entries, and a
    bias only for a model that has one (it would otherwise be dropped)."""
    arrays = init.arrays or {}
    unknown = sorted(set(arrays) - {"H", "W", "b"})
    if unknown:
        raise InputError(f"init arrays have unknown keys {unknown}; the keys are 'H', 'W' "
                         f"(a list of W_1..W_L) and 'b'")
    parts = {"H": torch.as_tensor(float_array("H", arrays["H"]))}
    weights = arrays.get("W")
    if weights is None or len(weights) != model.depth:
        raise InputError(f"init arrays need 'W' with {model.depth} matrices W_1..W_L")
    for l, w in enumerate(weights):
        parts[f"W{l + 1}"] = torch.as_tensor(float_array(f"W{l + 1}", w))
    if arrays.get("b") is not None:
        if not model.has_bias:
            raise InputError("init array b is given but the model has no bias (bias 'none'): "
                             "drop 'b' or use bias 'free' or 'reg'")
        parts["b"] = torch.as_tensor(float_array("b", arrays["b"]))
    expected = {b.name: b.shape for b in state_layout(model).blocks}
    for name, tensor in parts.items():
        if tuple(tensor.shape) != expected[name]:
            raise InputError(f"init array {name} has shape {tuple(tensor.shape)}, "
                             f"expected {expected[name]}")
        if not bool(torch.isfinite(tensor).all()):
            raise InputError(f"init array {name} has non-finite entries (NaN or inf); give "
                             f"finite values")
    return parts


def initial_parts(model: ModelSpec, init: InitSpec) -> dict[str, torch.Tensor]:
    """Blocks {name: float64 tensor of the block's shape} of one run's initial state."""
    if init.kind == "gaussian":
        parts = _gaussian(model, init)
    elif init.kind == "spectral":
        parts = _spectral(model, init, centred=spectral_rank(model) < model.classes)
    elif init.kind == "etf":
        parts = _spectral(model, init, centred=True)
    elif init.kind == "arrays":
        parts = _arrays(model, init)
    else:
        raise InputError(f"unknown init {init.kind!r}")
    if model.has_bias and "b" not in parts:
        parts["b"] = torch.zeros(model.classes, dtype=torch.float64)
    return parts


def _write_initial(model: ModelSpec, init: InitSpec, layout: StateLayout, row: torch.Tensor
                   ) -> None:
    """Write one run's initial state into ``row`` (1, P), float64 on the CPU: a Gaussian draw
    straight into the row's blocks (:func:`_draw_gaussian`, as :func:`initial_parts` draws
    it), the other kinds (and a gaussian init drawn through its Gram factor) built by
    :func:`initial_parts` and copied in."""
    if init.kind != "gaussian" or draws_gram_factor(model):
        layout.write({k: v.unsqueeze(0) for k, v in initial_parts(model, init).items()}, row)
        return
    _draw_gaussian(model, init, {b.name: layout.view(row, b.name)[0] for b in layout.blocks})
    if model.has_bias:
        layout.view(row, "b").zero_()


def initial_state(
    model: ModelSpec, inits: list[InitSpec], device: str | torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Flat initial states (R, P) of the runs ``inits`` (one per run).

    With at least 16 runs per thread, the runs are split over up to
    ``torch.get_num_threads()`` Python threads (torch releases the GIL while it draws); each
    run draws from its own generator into its own row, so the values do not depend on the
    number of Python threads (a wide one-layer UFM's frame F is a QR, equal across torch's
    thread counts to rounding only: see the module docstring).
    """
    layout = state_layout(model)
    out = torch.empty(len(inits), layout.size, dtype=torch.float64)

    def fill(rows: range) -> None:
        for i in rows:
            _write_initial(model, inits[i], layout, out[i:i + 1])

    threads = min(torch.get_num_threads(), _DRAW_THREADS_MAX, len(inits) // _RUNS_PER_THREAD)
    if threads > 1:
        step = -(-len(inits) // threads)
        with ThreadPoolExecutor(threads) as pool:  # torch releases the GIL while it draws
            list(pool.map(fill, [range(a, min(a + step, len(inits)))
                                 for a in range(0, len(inits), step)]))
    else:
        fill(range(len(inits)))
    return out.to(device=device, dtype=dtype)
