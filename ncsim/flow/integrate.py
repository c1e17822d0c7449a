"""Batched integration of a gradient flow with per-run step sizes and per-run stopping.

The state of R runs is one tensor (R, P). Every run has its own time, step size, step count
and status; a run that finishes (t_end, steady state, step cap) or fails (NaN/inf, divergence)
is frozen while the others go on. The loop never synchronises with the host inside a chunk of
``check_every`` steps: termination and records are checked between chunks.

Records: the flow is recorded at fixed times (R share them). On a GPU, adaptive methods limit
each step so that it crosses at most ``_DEVICE_CROSSINGS`` (2) record times and evaluate the
records with the method's dense output inside the step (W1-GPU's slowest run: 371 steps with
one crossing a step, 297 with two, 238 unlimited); on the CPU, where asking how many record
times a step crossed costs no device synchronisation, steps are not limited and every crossed
record is evaluated by dense output. The recorded states wait in a small buffer and their
metrics are computed at the next synchronisation, for all waiting runs at once, in calls of as
many states as a byte budget holds on a device (each call launches some 200 kernels).
Fixed-step methods share one time for every run, so the host knows which records a step
crosses without asking the device.

CUDA graphs (``SolverSpec.cuda_graphs``): since a chunk holds no host synchronisation on a
device, each batch's chunk is captured once as a CUDA graph and replayed, one launch per chunk
of steps instead of one per kernel; the chunk works in place on static state tensors, so the
replay takes the same steps as the eager loop (its numbers agree to rounding: the eager loop
sheds finished runs sooner, and a stage sum over another number of runs may round otherwise).

Cost: the stages of a step live in one (S, R, P) buffer, so each stage sum is one matrix-vector
product over the stacked stages; and when the caller can evaluate the velocity of a subset of
runs (``select``), finished runs leave the batch at each synchronisation, so the work follows
the sum of the runs' steps rather than R times the slowest run. On the CPU, where a host test is
free, a chunk also ends at the step where a run finishes, and the runs that reject a step copy
their rows back into the new state (an accelerator takes every state through a masked update).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ncsim.flow.saddle import saddle_escapes
from ncsim.flow.tableau import Tableau, tableau
from ncsim.products import bmm
from ncsim.spec import SolverSpec

RUNNING, DONE, STEADY, MAX_STEPS, DIVERGED, STALLED = 0, 1, 2, 3, 4, 5
# An adaptive step below STEP_FLOOR x max(t, 1) marks the run diverged (a flow far too stiff);
# the automatic first step is at least FIRST_STEP_MIN, ten times that floor at t = 0.
STEP_FLOOR = 1e-13
FIRST_STEP_MIN = 10 * STEP_FLOOR
STATUS_NAMES = {RUNNING: "running", DONE: "t_end", STEADY: "steady", MAX_STEPS: "max_steps",
                STALLED: "stalled",
                DIVERGED: "diverged"}

Velocity = Callable[..., torch.Tensor]  # f(y) or f(y, out=buffer)
Recorder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradNorm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Step-size control: dt x clamp(0.9 err^(-1/order), 0.2, 10) after an accepted step, at most
# dt x 1 after a rejected one. The step after a rejection may grow (Hairer's DOPRI5 and scipy's
# RK45 forbid that): at the stability boundary, where W1's flows end, forbidding it keeps the
# controller bouncing off the boundary (y' = -diag(1, 30, 500) y to t = 50, rtol 1e-6: 1236
# rejections against 190, for the same 7,620 accepted steps; tests/test_integrate_more.py).
_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0
# Recorded states per metrics call: on the CPU blocks that stay in cache (W1: 371 us/state at
# 1024, 227 at 64); on an accelerator as many states as _RECORD_BLOCK_BYTES_DEVICE holds
# (at least _RECORD_CHUNK_DEVICE, at most _RECORD_CHUNK_DEVICE_MAX): a metrics call launches
# ~200 kernels whatever its size, so small calls are launch-bound (W1-GPU on an H200, float32:
# 7.19 s with 1,024 states a call, 5.15 s with 128 MiB). The metrics' temporaries take ~4.2x
# the block's bytes (W1, both dtypes, measured on the CPU).
_RECORD_CHUNK = 128
_RECORD_CHUNK_DEVICE = 1024
_RECORD_CHUNK_DEVICE_MAX = 65536
_RECORD_BLOCK_BYTES_DEVICE = 128 * 2**20
# Bytes of queued record states (R x slots x P) a batch may hold, on the CPU and on an
# accelerator (4096 W1 runs in float64 took 3.5 GB with 16 slots; 1 GiB keeps 4 slots there,
# 9 in float32).
_RECORD_BUFFER_BYTES = 256 * 2**20
_RECORD_BUFFER_BYTES_DEVICE = 2**30
_DIVERGE_ABS = 1e100
# A fixed-step run whose largest |entry| passes this factor times (1 + its largest |entry| at
# t = 0) has blown up: no gradient flow of these objectives grows so (with decay it is bounded
# by f(0); without, CE norms grow like log t). Adaptive steps cannot blow up by instability:
# their error test rejects such steps.
_DIVERGE_GROWTH = 1e6
_STALL_REJECTIONS = 1000  # smooth flows reject a few percent of their steps
# Record times a device step may cross (a longer step is cut): each costs the step one masked
# update of the record queue, and each cut step costs a whole step (W1-GPU on an H200,
# float32: 5.15 s with 1, 4.48 s with 2, 4.95 s with 3).
_DEVICE_CROSSINGS = 2
_GRAPH_SHRINK = 4  # with CUDA graphs, a batch shrinks when <= 1/4 of it still runs
# Dense output of some runs: their stages are gathered (written once, read twice) when fewer
# than 1/3 of the batch's runs record; otherwise one product reads every run's stages once.
_GATHER_BELOW = 3


@dataclass
class FlowResult:
    """Outcome of :func:`integrate` for R runs.

    records : (R, T, Q) recorded quantities at the record times (NaN where not reached).
    times : (T,) record times.
    t_final : (R,) time reached. steps : (R,) accepted steps. rejected : (R,) rejected steps.
    code : (R,) stop reason (DONE, STEADY, MAX_STEPS, DIVERGED, STALLED).
    final_state : (R, P) state at ``t_final``. grad_norm : (R,) |grad f| at the final state.
    """

    records: np.ndarray
    times: np.ndarray
    t_final: np.ndarray
    steps: np.ndarray
    rejected: np.ndarray
    code: np.ndarray
    final_state: torch.Tensor
    grad_norm: np.ndarray


def _takes_out(f: Velocity) -> bool:
    """Whether the velocity ``f`` accepts ``out=`` (writes its result into a given tensor)."""
    try:
        return "out" in inspect.signature(f).parameters
    except (TypeError, ValueError):
        return False


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(dim=1).sqrt()


def _error_scale(solver: SolverSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """The error scale atol + rtol |y| (R, P) of a state y (R, P), entry by entry."""
    def scale(y: torch.Tensor) -> torch.Tensor:
        return y.abs().mul_(solver.rtol).add_(solver.atol)
    return scale


def _peak(x: torch.Tensor) -> torch.Tensor:
    """max_i |x_i| per run (R,) of ``x`` (R, P); NaN when a row holds a NaN, inf when it holds
    an inf. Two reductions without a temporary: on the CPU ``isfinite(x).all(1)`` takes ~8x
    longer than this at W1's batch."""
    return torch.maximum(x.amax(dim=1), x.amin(dim=1).neg())


class _Stages:
    """Stage derivatives k_1 .. k_S of one step stored in one (S, R, P) buffer.

    A stage sum y + h sum_j a_j k_j with scalar a_j is formed entry by entry (one fused
    multiply-add per non-zero a_j), so that every entry is rounded alike whatever the batch: a
    matrix-vector product over the stacked stages was 1.6x faster for this sum, but BLAS
    rounds an entry by where it falls in its blocks (OpenBLAS on an AMD EPYC: 1 ulp between
    a run alone and the same run second in a batch of two), and a run's trajectory must not
    depend on the runs that share its batch.
    """

    def __init__(self, stages: int, like: torch.Tensor) -> None:
        self.buf = torch.empty((stages, *like.shape), dtype=like.dtype, device=like.device)
        self.count = 0
        self._constants: dict[tuple[int, torch.dtype], tuple[np.ndarray, torch.Tensor]] = {}

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.buf[j]

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return (self.buf[j] for j in range(self.count))

    def set(self, j: int, k: torch.Tensor) -> None:
        self.buf[j].copy_(k)
        self.count = j + 1

    def evaluate(self, j: int, f: Velocity, y: torch.Tensor, into: bool) -> None:
        """k_j = f(y), written straight into the buffer when ``into`` (``f`` takes ``out``)."""
        if into:
            f(y, out=self.buf[j])
            self.count = j + 1
        else:
            self.set(j, f(y))

    def constant(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """``array`` as a tensor of ``dtype`` on the buffer's device, made once (no copy from
        the host inside a captured chunk)."""
        key = (id(array), dtype)
        held = self._constants.get(key)
        if held is None or held[0] is not array:  # the array is held, so its id stays its own
            held = (array, torch.as_tensor(array, dtype=dtype, device=self.buf.device))
            self._constants[key] = held
        return held[1]

    def combine(self, y: torch.Tensor | None, h: torch.Tensor, weights: np.ndarray
                ) -> torch.Tensor:
        """y + h * sum_j weights[j] k_j for scalar ``weights`` (s,), s <= stages, summed in
        the order of j over the non-zero weights (a zero weight's stage is not read: its
        0 * inf is no NaN)."""
        terms = [(j, float(w)) for j, w in enumerate(weights) if w != 0.0]
        if not terms:
            acc = torch.zeros_like(self.buf[0])
        else:
            first, weight = terms[0]
            acc = torch.mul(self.buf[first], weight)
            for j, weight in terms[1:]:
                acc.add_(self.buf[j], alpha=weight)
        if y is None:
            return acc.mul_(h.unsqueeze(1))
        return torch.addcmul(y, acc, h.unsqueeze(1))


def _stages(tab: Tableau, f: Velocity, y: torch.Tensor, k1: torch.Tensor, h: torch.Tensor,
            buf: _Stages | None = None, into: bool = False) -> tuple[torch.Tensor, _Stages]:
    """All stages of one step from ``y`` with per-run step ``h``; returns (y_new, ks).
    ``into``: ``f`` accepts ``out=`` and writes each stage into the buffer."""
    ks = _Stages(tab.stages, y) if buf is None else buf
    ks.set(0, k1)
    for s in range(1, tab.stages):
        if tab.fsal and s == tab.stages - 1:
            y_new = ks.combine(y, h, tab.b[:s])
            ks.evaluate(s, f, y_new, into)
            return y_new, ks
        ks.evaluate(s, f, ks.combine(y, h, tab.a[s, :s]), into)
    return ks.combine(y, h, tab.b), ks


def _dense_weights(tab: Tableau, ks: _Stages, theta: torch.Tensor) -> torch.Tensor:
    """Stage weights (..., S) of the dense output at step fractions ``theta`` (...):
    sum_j theta^(j+1) p[:, j], elementwise, so that a run's weights do not depend on how many
    runs share the call (a matrix product may pick another kernel for another row count)."""
    p = ks.constant(tab.p, theta.dtype)  # (S, order)
    weights = theta.unsqueeze(-1) * p[:, 0]
    for j in range(1, p.shape[1]):
        weights = weights + (theta ** (j + 1)).unsqueeze(-1) * p[:, j]
    return weights


def _dense_points(tab: Tableau, y: torch.Tensor, h: torch.Tensor, ks: _Stages,
                  theta: torch.Tensor) -> torch.Tensor:
    """Dense output (R, m, P) of every run of the batch at m fractions ``theta`` (R, m) of
    its step: one batched (m, S) x (S, P) product per run, reading its stages once."""
    weights = _dense_weights(tab, ks, theta).to(y.dtype)  # (R, m, S)
    acc = bmm(weights, ks.buf.transpose(0, 1))
    return torch.addcmul(y.unsqueeze(1), acc, h.to(y.dtype)[:, None, None])


def _dense(tab: Tableau, y: torch.Tensor, h: torch.Tensor, ks: _Stages,
           theta: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Dense output (M, P) of the runs ``rows`` (M,) of the batch (default: all R) at
    fractions ``theta`` (M,) of their step: y + h sum_j w_j(theta) k_j, the stage sum as one
    batched (1, S) x (S, P) product per run."""
    if rows is None:
        return _dense_points(tab, y, h, ks, theta.unsqueeze(1)).squeeze(1)
    weights = _dense_weights(tab, ks, theta).to(y.dtype).unsqueeze(1)  # (M, 1, S)
    y, h = y.index_select(0, rows), h.index_select(0, rows)
    if _GATHER_BELOW * rows.shape[0] < ks.buf.shape[1]:  # few runs: gather their stages
        acc = bmm(weights, ks.buf.index_select(1, rows).transpose(0, 1)).squeeze(1)
    else:  # many: one product over every run's stages, then their rows
        every = weights.new_zeros((ks.buf.shape[1], 1, weights.shape[2]))
        every[rows] = weights
        acc = bmm(every, ks.buf.transpose(0, 1)).squeeze(1).index_select(0, rows)
    return torch.addcmul(y, acc, h.to(y.dtype).unsqueeze(1))


def _initial_step(f: Velocity, y0: torch.Tensor, k0: torch.Tensor, order: int,
                  rtol: float, atol: float) -> torch.Tensor:
    """Per-run first step (Hairer, Norsett & Wanner, II.4), float64 (R,), at least
    :data:`FIRST_STEP_MIN` where the velocity is finite."""
    scale = (atol + rtol * y0.abs()).clamp(min=torch.finfo(y0.dtype).tiny)  # atol may be 0
    d0, d1 = _rms(y0 / scale).double(), _rms(k0 / scale).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    y1 = y0 + h0.to(y0.dtype).unsqueeze(1) * k0
    d2 = _rms((f(y1) - k0) / scale).double() / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / big) ** (1.0 / (order + 1)))
    h = torch.minimum(100 * h0, h1)
    # an entry at 0 that moves under pure relative control (atol 0 or tiny) makes |k0| / scale
    # overflow or dwarf the rest: h comes out 0, NaN or below the step floor, where the run
    # would read as diverged at t = 0; it starts at FIRST_STEP_MIN instead (the controller
    # grows or shrinks it). A NaN velocity keeps its NaN step: a failure at the start.
    finite = torch.isfinite(k0).all(dim=1)
    return torch.where(finite & ~(h >= FIRST_STEP_MIN), torch.full_like(h, FIRST_STEP_MIN), h)


def _host_free(device: torch.device) -> bool:
    """Whether the loop must avoid host synchronisations inside a chunk (on an accelerator;
    on the CPU a host test costs nothing)."""
    return device.type != "cpu"


def record_block(device: torch.device, state_bytes: int) -> int:
    """Recorded states per metrics call on ``device`` for states of ``state_bytes`` bytes
    each (P x itemsize): a fixed count on the CPU, a byte budget on an accelerator."""
    if not _host_free(device):
        return _RECORD_CHUNK
    fits = _RECORD_BLOCK_BYTES_DEVICE // max(1, state_bytes)
    return max(_RECORD_CHUNK_DEVICE, min(_RECORD_CHUNK_DEVICE_MAX, fits))


def record_in_blocks(record: Recorder, states: torch.Tensor, runs: torch.Tensor,
                     block: int) -> torch.Tensor:
    """``record(states, runs)`` (M, Q) as float64, computed ``block`` states at a time (on the
    CPU they stay in cache; the metrics' temporaries stay small for any M). M >= 1."""
    return torch.cat([record(states[lo:lo + block], runs[lo:lo + block]).double()
                      for lo in range(0, states.shape[0], block)])


def record_slots(r: int, p: int, itemsize: int, wanted: int, device: torch.device) -> int:
    """Slots of the record queue: ``wanted``, fewer when R x slots x P would pass the record
    budget of ``device`` (``_RECORD_BUFFER_BYTES[_DEVICE]``); at least 1."""
    budget = _RECORD_BUFFER_BYTES_DEVICE if _host_free(device) else _RECORD_BUFFER_BYTES
    return max(1, min(wanted, budget // max(1, r * p * itemsize)))


class _Recorder:
    """Buffer of recorded states waiting for their metrics; flushed at synchronisations (and
    when full, on the CPU). It holds ``capacity`` states per run (see :func:`record_slots`)."""

    def __init__(self, record: Recorder, r: int, t: int, q: int, p: int, slots: int,
                 like: torch.Tensor, graphs: bool = False) -> None:
        self.record = record
        self.values = torch.full((r, t, q), math.nan, dtype=torch.float64, device=like.device)
        self.states = torch.empty((r, slots, p), dtype=like.dtype, device=like.device)
        self.index = torch.full((r, slots), -1, dtype=torch.long, device=like.device)
        self.slot = torch.zeros(r, dtype=torch.long, device=like.device)
        self.rows = torch.arange(r, device=like.device)
        self.block = record_block(like.device, p * like.element_size())
        # with CUDA graphs the flushes' metrics calls go through one captured call
        self.metrics = (_GraphedRecord(record, min(self.block, r * slots), self.states)
                        if graphs else record)

    @property
    def capacity(self) -> int:
        return self.states.shape[1]

    def push(self, mask: torch.Tensor, states: torch.Tensor, rec_index: torch.Tensor,
             rows: torch.Tensor | None = None) -> None:
        """Queue ``states`` (M, P) as record ``rec_index`` (M,) for the runs in ``mask`` (M,);
        ``rows`` (M,) are the runs of the M states (default: all R runs)."""
        rows = self.rows if rows is None else rows
        slot = self.slot[rows].clamp(max=self.capacity - 1)
        current = self.states[rows, slot]
        self.states[rows, slot] = torch.where(mask.unsqueeze(1), states, current)
        self.index[rows, slot] = torch.where(mask, rec_index, self.index[rows, slot])
        self.slot[rows] += mask.long()

    def push_rows(self, rows: torch.Tensor, states: torch.Tensor, rec_index: torch.Tensor
                  ) -> None:
        """Queue ``states`` (M, P) as record ``rec_index`` (M,) of the runs ``rows`` (M,),
        distinct and each with a free slot (the CPU loop: only the runs that record)."""
        slot = self.slot[rows]
        self.states[rows, slot] = states
        self.index[rows, slot] = rec_index
        self.slot[rows] = slot + 1

    def flush(self) -> None:
        """Compute the metrics of every queued state and store them."""
        used = torch.arange(self.capacity, device=self.slot.device) < self.slot[:, None]
        where = used.nonzero()  # (M, 2): run, slot
        for lo in range(0, where.shape[0], self.block):  # gathered block by block
            runs, slots = where[lo:lo + self.block].unbind(1)
            values = self.metrics(self.states[runs, slots], runs).double()
            self.values[runs, self.index[runs, slots]] = values
        self.slot.zero_()
        self.index.fill_(-1)

    def now(self, mask: torch.Tensor, states: torch.Tensor, j: int) -> None:
        """Record every run of ``mask`` at record index ``j`` right away."""
        values = record_in_blocks(self.record, states, self.rows, self.block)
        self.values[:, j] = torch.where(mask.unsqueeze(1), values, self.values[:, j])


def _mark(code: torch.Tensor, mask: torch.Tensor, status: int) -> torch.Tensor:
    """``code`` (R,) with ``status`` where ``mask`` (R,) holds."""
    return torch.where(mask, torch.full_like(code, status), code)


def _report(progress: Callable[[int], None] | None, finished: int, before: int) -> int:
    """Tell ``progress`` how many runs finished since ``before``; returns ``finished``."""
    if progress is not None and finished > before:
        progress(finished - before)
    return finished


def _grad_norm(k: torch.Tensor, eta: torch.Tensor | float) -> torch.Tensor:
    return (k / eta).double().norm(dim=1)


def _steady(f: Velocity, y: torch.Tensor, t: torch.Tensor, grad: torch.Tensor,
            running: torch.Tensor, recheck: torch.Tensor, solver: SolverSpec
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(steady (M,), recheck (M,)): which running runs stop at rest, |grad f| (``grad``) <=
    gtol, as steady.

    A run at a saddle that the flow leaves before t_end (:func:`ncsim.flow.saddle.
    saddle_escapes`) goes on; it is not tested again before t + 1 / mu (``recheck``, the time
    its unstable direction takes to grow by e), so a run next to a saddle costs one test per
    1 / mu of flow time, not one per step. A run whose gradient is exactly 0 (an init exactly
    at a stationary point, such as the origin) cannot leave its point and stops whatever
    the curvature there."""
    at_rest = running & (grad <= solver.gtol)
    if not bool(at_rest.any()):  # the usual case: one test per step
        return at_rest, recheck
    candidates = at_rest & (t >= recheck) & (grad > 0)
    still = at_rest & (grad == 0)
    if not bool(candidates.any()):
        return still, recheck
    rows = candidates.nonzero().squeeze(1)
    escapes, mu = saddle_escapes(f, y, rows, float(solver.t_end) - t[rows])
    leaving = rows[escapes]
    steady = candidates.clone()
    steady[leaving] = False
    recheck = recheck.clone()
    recheck[leaving] = t[leaving] + 1.0 / mu[escapes]
    return steady | still, recheck


def integrate(
    velocity: Velocity,
    y0: torch.Tensor,
    solver: SolverSpec,
    record: Recorder,
    num_quantities: int,
    eta: torch.Tensor | float = 1.0,
    progress: Callable[[int], None] | None = None,
    grad_norm: GradNorm | None = None,
    select: Callable[[torch.Tensor], tuple[Velocity, GradNorm]] | None = None,
    error_scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FlowResult:
    """Integrate dy/dt = velocity(y) for every run of the batch ``y0`` (R, P).

    Parameters
    ----------
    velocity : (R, P) -> (R, P), equal to -eta * grad f. A velocity with an ``out`` keyword
        (``f(y, out=buffer)``) writes each stage straight into the integrator's stage buffer.
    y0 : initial states (R, P).
    solver : method, tolerances, stopping rules and record times.
    record : (states (M, P), run index (M,)) -> quantities (M, Q) at a record.
    num_quantities : Q.
    eta : time-scale factors (scalar or (R, P)), to turn velocities back into gradients for
        the steady-state test |grad f| <= gtol.
    progress : called with the number of runs that finished since the last call.
    grad_norm : (state (R, P), velocity (R, P)) -> |grad f| (R,) float64; default
        |velocity / eta|, for states that are the parameters themselves.
    select : runs (M,) -> (velocity, grad_norm) of that subset of runs. When given, the
        adaptive methods drop finished runs from the batch at each synchronisation, so the cost
        follows the sum of the runs' steps rather than R times the longest run.
    error_scale : state (R, P) -> (R, P) error scale of each entry (adaptive methods: a step
        passes when the RMS of error_i / max(error_scale(y), error_scale(y_new))_i is <= 1);
        default atol + rtol |y|. The Gram form passes its own (:meth:`GramObjective.
        error_scale`): its entries are inner products, judged against the norms of their
        factors, so that it resolves the features as finely as the parameter space does. It
        must return a fresh, writable tensor (the CPU loop copies rejected runs' rows into
        it).
    """
    if grad_norm is None:
        def grad_norm(state: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return _grad_norm(k, eta)
    if solver.adaptive:
        return _integrate_adaptive(velocity, y0, solver, record, num_quantities, grad_norm,
                                   progress, select, error_scale or _error_scale(solver))
    return _integrate_fixed(velocity, y0, solver, record, num_quantities, grad_norm, progress)


def _start(y0: torch.Tensor, solver: SolverSpec, record: Recorder, q: int, slots: int,
           per_step: int = 1) -> tuple[_Recorder, torch.Tensor, np.ndarray]:
    """The record queue (``slots`` steps of ``per_step`` states per run, fewer steps when the
    byte budget says so, never fewer than one step's states), the first record index of every
    run and the record times; records t = 0 right away."""
    times = solver.record_times()
    slots = max(per_step, record_slots(y0.shape[0], y0.shape[1], y0.element_size(),
                                       slots * per_step, y0.device))
    rec = _Recorder(record, y0.shape[0], len(times), q, y0.shape[1], slots, y0,
                    graphs=_host_free(y0.device) and solver.cuda_graphs)
    next_rec = torch.zeros(y0.shape[0], dtype=torch.long, device=y0.device)
    if times[0] == 0.0:
        rec.now(torch.ones_like(next_rec, dtype=torch.bool), y0, 0)
        next_rec += 1
    return rec, next_rec, times


def _finish(rec: _Recorder, velocity: Velocity, grad_norm: GradNorm, y, t, steps, rejected,
            code, times, next_rec) -> FlowResult:
    """Record lagging final records, build the result (one host transfer)."""
    rec.flush()
    rec_t = torch.as_tensor(np.append(times, np.inf), dtype=torch.float64, device=t.device)
    lag = (next_rec < len(times)) & (rec_t[next_rec.clamp(max=len(times))] <= t)
    if bool(lag.any()):
        rec.push(lag, y, next_rec)
        rec.flush()
    k = velocity(y)
    return FlowResult(
        records=rec.values.cpu().numpy(), times=times, t_final=t.cpu().numpy(),
        steps=steps.cpu().numpy(), rejected=rejected.cpu().numpy(), code=code.cpu().numpy(),
        final_state=y, grad_norm=grad_norm(y, k).cpu().numpy(),
    )


_STATE = ("y", "k1", "t", "dt", "code", "steps", "rejected", "next_rec", "recheck")


@dataclass
class _Chunk:
    """What a chunk of adaptive steps of one batch needs besides its state.

    ``advance`` runs ``length`` steps on a state dict (keys ``_STATE``: y, k1 (M, P); t, dt,
    recheck (M,) float64; code, steps, rejected, next_rec (M,)) and writes the result back
    into the same tensors, so that a captured chunk can be replayed on them
    (:class:`_GraphedChunk`).
    ``stop_on_finish`` (CPU, where a host test is free, and a batch that can shrink): end the
    chunk at the step where a run finishes, so that the others go on without it (a batch with
    a finished run would step it in vain and take every state through a masked update).
    ``crossings`` (on a device): the record times a step may cross; a longer step is cut at
    the next one after them, and each step queues up to ``crossings`` states per run.
    """

    tab: Tableau
    f: Velocity
    into: bool
    buf: _Stages
    rec: _Recorder
    rows: torch.Tensor
    rec_t: torch.Tensor
    solver: SolverSpec
    error_scale: Callable[[torch.Tensor], torch.Tensor]
    gnorm: GradNorm
    length: int
    host_free: bool
    stop_on_finish: bool = False
    crossings: int = 1

    def advance(self, state: dict[str, torch.Tensor]) -> None:
        tab, f, solver, rec_t = self.tab, self.f, self.solver, self.rec_t
        y, k1, t, dt, code, steps, rejected, next_rec, recheck = (state[key] for key in _STATE)
        err_exp = -1.0 / tab.order
        t_end_v = torch.full_like(t, float(solver.t_end))
        # error scale and peak of the current y, carried from step to step (an accepted y_new
        # becomes y: its error scale and peak are already known)
        mag, peak = self.error_scale(y), _peak(y)
        for _ in range(self.length):
            active = code == RUNNING
            # On a device, a step crosses at most ``crossings`` record times (no host test of
            # how many it crosses); on the CPU steps run free and record every time they cross.
            limit = (torch.minimum(rec_t[next_rec + self.crossings], t_end_v) if self.host_free
                     else t_end_v)
            capped = t + dt >= limit
            h = torch.where(capped, limit - t, dt)
            hy = h.to(y.dtype)
            y_new, ks = _stages(tab, f, y, k1, hy, self.buf, self.into)
            err = ks.combine(None, hy, tab.e)
            mag_new, peak_new = self.error_scale(y_new), _peak(y_new)
            # an entry 0 in y and y_new at atol = 0: its error 0 passes, not 0/0
            scale = torch.maximum(mag, mag_new).clamp_(min=torch.finfo(y.dtype).tiny)
            err_norm = _rms(err.div_(scale)).double()
            finite = torch.isfinite(err_norm) & torch.isfinite(peak_new)
            accept = active & finite & (err_norm <= 1.0)
            t_new = torch.where(capped, limit, t + h)
            factor = (_SAFETY * err_norm.clamp(min=1e-10) ** err_exp).clamp(_FACTOR_MIN,
                                                                            _FACTOR_MAX)
            factor = torch.where(finite, factor, torch.full_like(factor, _FACTOR_MIN))
            factor = torch.where(accept, factor, factor.clamp(max=1.0))
            proposal = h * factor
            dt = torch.where(active, torch.where(accept & capped,
                                                 torch.maximum(dt, proposal), proposal), dt)
            next_rec = self._record(y, h, t, t_new, ks, accept, next_rec)
            y, mag, peak, k1 = self._next_state(accept, (y, mag, peak), (y_new, mag_new, peak_new),
                                                ks)
            t = torch.where(accept, t_new, t)
            steps = steps + accept.long()
            rejected = rejected + (active & ~accept).long()
            code = _mark(code, accept & (t >= solver.t_end), DONE)
            if not self.host_free and solver.gtol > 0:
                # free steps grow fast: test the steady state at every step (no sync on CPU)
                steady, recheck = _steady(self.f, y, t, self.gnorm(y, k1),
                                          accept & (code == RUNNING), recheck, solver)
                code = _mark(code, steady, STEADY)
            # NaN included: a NaN step (a NaN velocity at the initial state) is a failure
            tiny = ~(dt >= STEP_FLOOR * torch.clamp(t, min=1.0))
            bad = active & (tiny | (peak > _DIVERGE_ABS))
            code = _mark(code, bad & (code == RUNNING), DIVERGED)
            capped_out = (code == RUNNING) & (steps + rejected >= solver.max_steps)
            code = _mark(code, capped_out, MAX_STEPS)
            if self.stop_on_finish and bool((code != RUNNING).any()):
                break  # the batch sheds the finished run now, not after the chunk
        for key, value in zip(_STATE, (y, k1, t, dt, code, steps, rejected, next_rec, recheck),
                              strict=True):
            state[key].copy_(value)

    def _record(self, y: torch.Tensor, h: torch.Tensor, t: torch.Tensor, t_new: torch.Tensor,
                ks: _Stages, accept: torch.Tensor, next_rec: torch.Tensor) -> torch.Tensor:
        """Queue the dense output of every record time that an accepted step from ``t`` to
        ``t_new`` (M,) crossed; returns the runs' next record indices (M,).

        On a device a step crosses at most ``crossings`` record times: the dense output at
        the next ``crossings`` record times of every run is one product, and every run goes
        through the queue's masked update once per crossing; on the CPU only the runs that
        cross, as often as they cross."""
        rec, rec_t = self.rec, self.rec_t
        if self.host_free:
            index = next_rec.unsqueeze(1) + torch.arange(self.crossings, device=next_rec.device)
            when = rec_t[index]  # (M, crossings), ascending
            theta = ((when - t.unsqueeze(1)) / h.unsqueeze(1)).clamp(0.0, 1.0)
            dense = _dense_points(self.tab, y, h, ks, theta)
            cross = accept.unsqueeze(1) & (when <= t_new.unsqueeze(1))
            for j in range(self.crossings):
                rec.push(cross[:, j], dense[:, j], index[:, j], self.rows)
            return next_rec + cross.sum(1)
        cross = accept & (rec_t[next_rec] <= t_new)
        while bool(cross.any()):  # on the CPU a test costs no sync
            if int(rec.slot.max()) >= rec.capacity:
                rec.flush()
            at = cross.nonzero().squeeze(1)  # the runs that cross a record time
            theta = ((rec_t[next_rec[at]] - t[at]) / h[at]).clamp(0.0, 1.0)
            rec.push_rows(self.rows[at], _dense(self.tab, y, h, ks, theta, at), next_rec[at])
            next_rec = next_rec + cross.long()
            cross = accept & (rec_t[next_rec] <= t_new)
        return next_rec

    def _next_state(self, accept: torch.Tensor, old: tuple[torch.Tensor, ...],
                    new: tuple[torch.Tensor, ...], ks: _Stages
                    ) -> tuple[torch.Tensor, ...]:
        """(y (M, P), error scale (M, P), peak (M,), k1 (M, P)) after a step: ``new`` (y_new,
        its error scale and peak) and the last stage for the runs that ``accept`` (M,) it,
        ``old`` and the first stage (the old k1) for the others.

        On the CPU the runs that did not step copy their rows back into ``new`` (most steps:
        none); k1 may then be a view of the last stage, which the next step copies into the
        first before it overwrites the last. On a device every state goes through a masked
        update (no host test)."""
        (y, mag, peak), (y_new, mag_new, peak_new) = old, new
        tab, f = self.tab, self.f
        if self.host_free:
            acc_col = accept.unsqueeze(1)
            y = torch.where(acc_col, y_new, y)
            return (y, torch.where(acc_col, mag_new, mag), torch.where(accept, peak_new, peak),
                    torch.where(acc_col, ks[-1] if tab.fsal else f(y), ks[0]))
        if not bool(accept.all()):
            keep = (~accept).nonzero().squeeze(1)
            y_new.index_copy_(0, keep, y.index_select(0, keep))
            mag_new.index_copy_(0, keep, mag.index_select(0, keep))
            peak_new = torch.where(accept, peak_new, peak)
            if tab.fsal:
                ks[-1].index_copy_(0, keep, ks[0].index_select(0, keep))
        return y_new, mag_new, peak_new, ks[-1] if tab.fsal else f(y_new)


class _GraphedChunk:
    """A batch's chunk captured once as a CUDA graph and replayed: one launch per chunk of
    steps instead of one per kernel (the chunk holds no host synchronisation on a device).

    A capture costs a device synchronisation, a garbage collection and an eager warm-up chunk,
    so the first chunk of a batch runs eagerly (a batch that lives one chunk is never
    captured); the second call captures (:func:`_capture_graph`); every later call replays the
    graph on the same state tensors (their addresses are frozen into the graph: the loop
    updates them in place).
    """

    def __init__(self, chunk: _Chunk, state: dict[str, torch.Tensor]) -> None:
        self.chunk, self.state = chunk, state
        self.calls = 0
        self.graph = None

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.chunk.advance(self.state)
        elif self.graph is None:
            self.graph = _capture_graph(self.chunk.advance, self.state)
        else:
            self.graph.replay()


class _CapturedRecord:
    """``record(states, runs)`` of up to ``size`` states through one captured CUDA graph on
    static buffers of ``size`` states: the first call runs eagerly on them (a size used once
    is never captured), the second captures and replays, later calls replay; a block of
    fewer states is padded with copies of its first state, whose values are dropped."""

    def __init__(self, record: Recorder, size: int, like: torch.Tensor) -> None:
        self.record = record
        self.states = like.new_empty((size, like.shape[-1]))
        self.runs = torch.zeros(size, dtype=torch.long, device=like.device)
        self.graph = None
        self.values: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        """Values (M, Q) of ``states`` (M, P) of the runs ``runs`` (M,), 1 <= M <= size; a
        view of the graph's output, valid until the next call."""
        m = states.shape[0]
        self.states[:m], self.runs[:m] = states, runs
        self.states[m:], self.runs[m:] = states[:1], runs[:1]
        self.calls += 1
        if self.calls == 1:
            return self.record(self.states, self.runs)[:m]
        if self.graph is None:
            self.graph, self.values = _capture_record(self.record, self.states, self.runs)
        self.graph.replay()
        return self.values[:m]


class _GraphedRecord:
    """``record(states, runs)`` of up to ``size`` states through captured CUDA graphs.

    A metrics call launches some 200 kernels whatever its size; a graph makes them one
    launch (W1-GPU: 220 calls of ~4-5 ms each when eager). A graph computes every state of
    its static buffers, so a block goes to the smallest of the sizes ``size``, ``size // 8``
    and ``size // 64`` that holds it (each a :class:`_CapturedRecord`, made when first
    needed): a late flush of a few states does not pay for a whole block.
    """

    def __init__(self, record: Recorder, size: int, like: torch.Tensor) -> None:
        self.record, self.like = record, like
        self.sizes = sorted({max(1, size // 64), max(1, size // 8), size})
        self.calls: dict[int, _CapturedRecord] = {}

    def __call__(self, states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        """Values (M, Q) of ``states`` (M, P) of the runs ``runs`` (M,), 1 <= M <= size; a
        view of a graph's output, valid until the next call of that size."""
        size = next(s for s in self.sizes if s >= states.shape[0])
        if size not in self.calls:
            self.calls[size] = _CapturedRecord(self.record, size, self.like)
        return self.calls[size](states, runs)


def _warm_and_capture(call: Callable[[], Any], device: torch.device
                      ) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Run ``call()`` once eagerly on a side stream (it fills the lazy caches: stage weights,
    dense-output coefficients, cuBLAS workspaces), then capture a second call, which a capture
    records without running; returns the graph and what the captured call returned (tensors
    that every replay writes again)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    return graph, out


def _capture_graph(advance: Callable[[dict[str, torch.Tensor]], None],
                   state: dict[str, torch.Tensor]) -> torch.cuda.CUDAGraph:
    """The graph of one chunk ``advance(state)`` (its warm-up advances the state once).
    (Tests stand in for it on the CPU.)"""
    return _warm_and_capture(lambda: advance(state), state["y"].device)[0]


def _capture_record(record: Recorder, states: torch.Tensor, runs: torch.Tensor
                    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """The graph of ``record(states, runs)`` on static buffers and its output (M, Q).
    (Tests stand in for it on the CPU.)"""
    return _warm_and_capture(lambda: record(states, runs), states.device)


def _integrate_adaptive(velocity, y0, solver, record, q, grad_norm, progress, select,
                        error_scale) -> FlowResult:
    tab = tableau(solver.method)
    r, dev = y0.shape[0], y0.device
    host_free = _host_free(y0.device)
    # a device step queues up to ``crossings`` states per run; a CPU step pushes as it goes
    crossings = _DEVICE_CROSSINGS if host_free else 1
    rec, next_rec, times = _start(y0, solver, record, q, solver.check_every, crossings)
    # On an accelerator the queue is flushed at the end of a chunk: a large batch's queue
    # (fewer slots) makes the chunk shorter.
    length = min(solver.check_every, rec.capacity // crossings) if host_free else solver.check_every
    rec_t = torch.as_tensor(np.append(times, [np.inf] * (crossings + 1)), dtype=torch.float64,
                            device=dev)
    y = y0.clone()
    k1 = velocity(y)
    t = torch.zeros(r, dtype=torch.float64, device=dev)
    if solver.dt is not None:
        dt = torch.full((r,), float(solver.dt), dtype=torch.float64, device=dev)
    else:
        dt = _initial_step(velocity, y, k1, tab.order, solver.rtol, solver.atol)
    code = torch.zeros(r, dtype=torch.int8, device=dev)
    steps = torch.zeros(r, dtype=torch.long, device=dev)
    rejected = torch.zeros(r, dtype=torch.long, device=dev)
    graphs = host_free and solver.cuda_graphs
    finished_before = 0
    # The chunk works on the running runs only (``rows``): finished runs leave the batch at the
    # next synchronisation when ``select`` gives the velocity of a subset of runs.
    rows = torch.arange(r, device=dev)
    gnorm = grad_norm
    full = {"y": y, "k1": k1, "t": t, "dt": dt, "code": code, "steps": steps,
            "rejected": rejected, "next_rec": next_rec, "recheck": torch.zeros_like(t)}
    sub = full

    def batch_runner(f: Velocity, gnorm: GradNorm, rows: torch.Tensor,
                     state: dict[str, torch.Tensor]) -> Callable[[], None]:
        """One chunk of the batch ``rows`` (its velocity ``f``) per call, in place on
        ``state``: eager, or through a CUDA graph."""
        chunk = _Chunk(tab, f, _takes_out(f), _Stages(tab.stages, state["y"]), rec, rows,
                       rec_t, solver, error_scale, gnorm, length, host_free,
                       stop_on_finish=not host_free and select is not None,
                       crossings=crossings)
        return _GraphedChunk(chunk, state) if graphs else (lambda: chunk.advance(state))

    f = velocity
    run_chunk = batch_runner(f, gnorm, rows, sub)
    while True:
        run_chunk()
        rec.flush()
        code = sub["code"]
        if solver.gtol > 0:  # gtol = 0 follows every run to t_end, even one at rest
            steady, recheck = _steady(f, sub["y"], sub["t"], gnorm(sub["y"], sub["k1"]),
                                      code == RUNNING, sub["recheck"], solver)
            sub["recheck"].copy_(recheck)
            code = _mark(code, steady, STEADY)
        # A step-size controller that rejects one step for every two it accepts, over a
        # thousand rejections, is chattering at a discontinuity of the velocity (a ReLU kink
        # the flow slides along): it would crawl to t_end in ever more steps. Such runs stop as
        # STALLED. (Smooth flows reject well under 1% of their steps.) The test runs at chunk
        # ends: every ``check_every`` steps, and on the CPU also when a run of the batch
        # finishes, so the step a run stalls at can depend on its batch.
        stalled = ((code == RUNNING) & (sub["rejected"] >= _STALL_REJECTIONS)
                   & (2 * sub["rejected"] >= sub["steps"]))
        sub["code"].copy_(_mark(code, stalled, STALLED))
        if sub is not full:
            for key, value in sub.items():
                full[key][rows] = value
        running = full["code"] == RUNNING
        finished = r - int(running.sum())
        finished_before = _report(progress, finished, finished_before)
        if finished == r:
            break
        # With CUDA graphs a smaller batch means a new capture: the batch shrinks only once
        # a quarter or less of it still runs (finished runs are frozen meanwhile).
        still = r - finished
        shrink = (still * _GRAPH_SHRINK <= rows.shape[0]) if graphs else still < rows.shape[0]
        if select is not None and shrink:
            rows = torch.nonzero(running).squeeze(1)
            f, gnorm = select(rows)
            sub = {key: value[rows] for key, value in full.items()}
            run_chunk = batch_runner(f, gnorm, rows, sub)
    return _finish(rec, velocity, grad_norm, full["y"], full["t"], full["steps"],
                   full["rejected"], full["code"], times, full["next_rec"])


def _fixed_steps(t_end: float, dt: float) -> tuple[int, float]:
    """(number of steps, size of the last step) of a fixed-step run to ``t_end``: t_end / dt
    steps of dt when t_end is a multiple of dt up to rounding (dt = 0.1, t_end = 1: ten
    steps, although ten additions of 0.1 make 1 - 1e-16), else floor(t_end / dt) steps of dt
    and a shorter last one to t_end."""
    ratio = t_end / dt
    whole = round(ratio)
    if whole >= 1 and abs(ratio - whole) <= 64 * np.finfo(np.float64).eps * ratio:
        return whole, dt
    full = math.floor(ratio)
    return full + 1, t_end - full * dt


def _integrate_fixed(velocity, y0, solver, record, q, grad_norm, progress) -> FlowResult:
    """Explicit fixed steps shared by every run: step n goes from n dt to (n + 1) dt (the
    last one ends at t_end, see :func:`_fixed_steps`); a run's time is that of its last step
    (a diverged run's stays at its last finite state)."""
    tab = tableau(solver.method)
    r, dev = y0.shape[0], y0.device
    rec, next_rec, times = _start(y0, solver, record, q, 1)
    t_end, dt = float(solver.t_end), float(solver.dt)
    total, last_h = _fixed_steps(t_end, dt)
    y = y0.clone()
    limit = min(_DIVERGE_ABS, torch.finfo(y0.dtype).max)  # 1e100 is no float32
    blow_up = (_DIVERGE_GROWTH * (1.0 + _peak(y0))).clamp(max=limit)  # (R,)
    t = torch.zeros(r, dtype=torch.float64, device=dev)
    code = torch.zeros(r, dtype=torch.int8, device=dev)
    steps = torch.zeros(r, dtype=torch.long, device=dev)
    recheck = torch.zeros_like(t)
    j_next = int(next_rec[0])
    buf = _Stages(tab.stages, y)
    into = _takes_out(velocity)
    n_steps = 0
    finished_before = 0
    while True:
        for _ in range(solver.check_every):
            if n_steps >= total or n_steps >= solver.max_steps:
                break
            active = code == RUNNING
            last = n_steps == total - 1
            h_host = last_h if last else dt
            t_host = n_steps * dt
            t_new_host = t_end if last else (n_steps + 1) * dt
            h = torch.full((r,), h_host, dtype=y.dtype, device=dev)
            y_new, ks = _stages(tab, velocity, y, velocity(y), h, buf, into)
            bad = active & ~(_peak(y_new) <= blow_up)  # NaN and inf included
            code = _mark(code, bad, DIVERGED)
            ok = active & ~bad
            while j_next < len(times) and times[j_next] <= t_new_host:
                theta = torch.full((r,), min(1.0, (times[j_next] - t_host) / h_host),
                                   dtype=torch.float64, device=dev)
                rec.now(ok, _dense(tab, y, h.double(), ks, theta), j_next)
                j_next += 1
            y = torch.where(ok.unsqueeze(1), y_new, y)
            t = torch.where(ok, torch.full_like(t, t_new_host), t)
            steps += ok.long()
            n_steps += 1
        # a run that reached t_end stopped there (as with the adaptive methods), even if at rest
        if n_steps >= total:
            code = _mark(code, code == RUNNING, DONE)
        if solver.gtol > 0:  # gtol = 0 follows every run to t_end, even one at rest
            k = velocity(y)
            steady, recheck = _steady(velocity, y, t, grad_norm(y, k), code == RUNNING, recheck,
                                      solver)
            code = _mark(code, steady, STEADY)
        if n_steps >= solver.max_steps:
            code = _mark(code, code == RUNNING, MAX_STEPS)
        finished = int((code != RUNNING).sum())
        finished_before = _report(progress, finished, finished_before)
        if finished == r:
            break
    next_rec = torch.full((r,), j_next, dtype=torch.long, device=dev)
    rejected = torch.zeros_like(steps)
    return _finish(rec, velocity, grad_norm, y, t, steps, rejected, code, times, next_rec)
