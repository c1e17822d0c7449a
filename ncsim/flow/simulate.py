"""The batched simulator: run specs in, run table and trajectory table out.

Runs that share the model structure, the solver and the onset rule are integrated together in
one batch (one tensor with a leading run axis); each keeps its own weight decays, init, seed,
time scales, step size and status.

A run whose feature norms vanish has status "vanishing" and no onset (``onset_time`` and
``fn_at_onset`` NaN): its metric may cross the threshold as every norm goes to 0, but that is
not collapse (README, "What ncsim computes"); the crossing stays visible in the trajectory table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ncsim.errors import InputError, is_integer, listed, require, short_repr
from ncsim.flow.integrate import (
    DIVERGED,
    MAX_STEPS,
    STALLED,
    STATUS_NAMES,
    STEADY,
    FlowResult,
    integrate,
    record_block,
    record_in_blocks,
)
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models import Penalties, UFMObjective, initial_state
from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective, initial_gram_state
from ncsim.models.init import draws_gram_factor, float_array
from ncsim.models.layout import StateLayout
from ncsim.models.reduction import state_form
from ncsim.onset import are_vanishing, onset_and_fn, onsets_and_fn
from ncsim.spec import OnsetSpec, RunSpec

RECORDED = ("loss", "objective", *METRIC_NAMES)
STATUSES = ("ok", "vanishing", "diverged", "stalled", "max_steps", "not_collapsed")


class FinalStates(Mapping[str, dict[str, Any]]):
    """Final states by run id (see :meth:`SimulationResult.final_state`).

    Each batch's numpy blocks are built when one of its runs is first asked for (most callers
    never ask: building them costs a copy of every state, and in the Gram form an
    eigen-decomposition and d-sized arrays per run); until then the batch's final states are
    held on the CPU (see :func:`_state_builder`).
    """

    def __init__(self) -> None:
        self._batch_of: dict[str, int] = {}
        self._builders: list[Callable[[], list[dict[str, Any]]] | None] = []
        self._ids: list[list[str]] = []
        self._built: dict[str, dict[str, Any]] = {}

    def add(self, ids: list[str], build: Callable[[], list[dict[str, Any]]]) -> None:
        """Register a batch: ``build()`` returns the blocks of its runs ``ids``, in order."""
        for rid in ids:
            self._batch_of[rid] = len(self._builders)
        self._builders.append(build)
        self._ids.append(ids)

    def __getitem__(self, run: str) -> dict[str, Any]:
        if run not in self._built:
            k = self._batch_of[run]  # KeyError for an unknown run, as a dict
            self._built.update(zip(self._ids[k], self._builders[k]()))
            self._builders[k] = None  # what it held is not needed twice (kept if build failed)
        return self._built[run]

    def __contains__(self, run: object) -> bool:
        return run in self._batch_of

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with every batch built (the builders are local functions)."""
        for ids in self._ids:
            self[ids[0]]
        return {**self.__dict__, "_builders": [None] * len(self._builders)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._batch_of)

    def __len__(self) -> int:
        return len(self._batch_of)


@dataclass
class SimulationResult:
    """Run table (one row per run) and long-format trajectory table.

    ``timings`` gives the wall-clock seconds of the call's phases: ``prepare_s`` (validation,
    run ids, initial states and batch tensors), ``integrate_s`` (the flow and its records)
    and ``summarise_s`` (final records, onsets, the theory columns when asked for,
    provenance and the two tables).
    """

    runs: pd.DataFrame
    trajectories: pd.DataFrame
    final_states: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def final_state(self, run: str) -> dict[str, Any]:
        """Blocks of a run's final state as float64 numpy arrays: ``H`` (d, N), ``W``
        (list of (out, in)), ``b`` (K,) or None; ready for ``InitSpec(kind="arrays")``.

        A run integrated in Gram space (``SolverSpec.reduction``) has no (H, W) of its own:
        ``H`` and ``W`` are then an isometric representative (same inner products, so the
        same continuation of every recorded quantity; equal to the true point up to a rotation
        of R^d), and the Gram blocks are added as ``Z`` = W H (K, N), ``A`` = W W^T (K, K) and
        ``B`` = H^T H (N, N). A run integrated in the class-means form gives its exact
        (H, W, b), rebuilt from the class means and the deviation propagator.

        Raises :class:`InputError` for a run id that is not one of this result's
        (``runs["run_id"]``)."""
        if run not in self.final_states:
            raise InputError(f"no run {run!r} in this result; pass one of its run ids "
                             f"(result.runs['run_id']): {_some_ids(list(self.final_states))}")
        return self.final_states[run]


def _some_ids(ids: list[str]) -> str:
    """The first run ids, comma separated, with how many more there are."""
    return listed(ids) if ids else "none (the result holds no final states)"


def _canonical_row(spec: RunSpec) -> dict[str, Any]:
    """``spec.to_row()`` with each setting written out at the value of its short form, so that
    one run has one identifier: equal class counts (5, 5, 5) as 5, equal per-layer decays or
    time scales as one number, a hidden width equal to d and a first record time equal to
    its default as None (the forms give the same numbers to the bit). The short forms are
    the ones the identifiers were made of before."""
    row = spec.to_row()
    for key, value in (("per_class", spec.model.per_class), ("lambda_w", spec.reg.lambda_w),
                       ("time_scale_eta_w", spec.time_scale.eta_w)):
        if isinstance(value, tuple) and len(set(value)) == 1:
            row[key] = value[0]
    if spec.model.width == spec.model.dim:
        row["width"] = None
    if spec.solver.t_first is not None and spec.solver.t_first == dataclasses.replace(
            spec.solver, t_first=None).first_record:
        row["solver_t_first"] = None
    return row


def run_id(spec: RunSpec) -> str:
    """Stable 12-hex identifier of a run spec (hash of every field that shapes the result;
    ``cuda_graphs`` only changes how the same steps are launched, so it is left out, which
    also keeps the identifiers of runs made before it existed). A gaussian init drawn
    through its Gram factor (:func:`ncsim.models.init.draws_gram_factor`) is marked
    ``init_draw``: such runs once drew (H, W) entry by entry, so their stored results are
    not those of the same spec now (a study computes a run again when its stored
    ``sim_run_id`` is not the current one: :func:`ncsim.study.runner.stale_runs`)."""
    row = _canonical_row(spec)
    if spec.init.kind == "gaussian" and draws_gram_factor(spec.model):
        row["init_draw"] = "gram_factor"
    row.pop("solver_cuda_graphs", None)
    if row.get("solver_reduction") == "auto":  # the default keeps the identifiers it had,
        if state_form(spec.model, "auto") == "classes":  # except where auto now integrates
            row["solver_reduction"] = "auto:classes"  # in the class-means form
        else:
            del row["solver_reduction"]
    if spec.init.kind == "arrays" and spec.init.arrays is not None:
        digest = hashlib.sha1()
        for key in sorted(spec.init.arrays):
            # a list of matrices (W) is hashed matrix by matrix: numpy cannot make one array
            # of matrices with equal row counts and different column counts
            value = spec.init.arrays[key]
            if value is None:  # "b": None (a final state without bias) is no bias given
                continue
            for arr in value if isinstance(value, (list, tuple)) else [value]:
                digest.update(np.ascontiguousarray(float_array(key, arr)).tobytes())
        row["init_arrays"] = digest.hexdigest()
    text = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class _Batch:
    """Tensors of one batch: objective, penalties, time scales, initial state.

    With a reduction (``reduced`` is a :class:`GramObjective` or a
    :class:`ClassMeansObjective`, see :func:`ncsim.models.reduction.state_form`) the state is
    the reduced state and ``velocity``, ``record`` and ``grad_norm`` work on it.
    """

    def __init__(self, specs: Sequence[RunSpec]) -> None:
        first = specs[0]
        self.specs = list(specs)
        self.model, self.solver, self.onset = first.model, first.solver, first.onset
        self.device = torch.device(self.solver.device)
        self.dtype = getattr(torch, self.solver.dtype)
        self.objective = UFMObjective(self.model, self.device, self.dtype)
        depth = self.model.depth

        def tensor(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=self.dtype, device=self.device)

        self.penalties = Penalties(
            w=tensor([list(s.reg.per_layer(depth)) for s in specs]).T.contiguous(),
            h=tensor([s.reg.lambda_h for s in specs]),
            b=tensor([s.reg.lambda_b for s in specs]),
        )
        self.eta = self._time_scales(tensor)
        self.form = state_form(self.model, self.solver.reduction)
        inits = [s.init for s in specs]
        if self.form == "gram":
            self.y0 = initial_gram_state(self.model, inits).to(self.device, self.dtype)
        else:
            self.y0 = initial_state(self.model, inits, self.device, self.dtype)
        self.reduced: GramObjective | ClassMeansObjective | None = None
        if self.form != "none":
            self._reduce(specs, tensor)

    def _reduce(self, specs: Sequence[RunSpec], tensor: Callable[[list[float]], torch.Tensor]
                ) -> None:
        """Set the reduced objective; replace a class-means batch's initial state by its
        reduced form (built in float64; a Gram batch starts in Gram space already)."""
        if self.form == "gram":
            self.reduced = GramObjective(self.model, self.device, self.dtype)
        else:
            lay = self.objective.layout
            y64 = self.y0.double()
            h, w = lay.view(y64, "H"), lay.view(y64, "W1")
            b = lay.view(y64, "b") if "b" in lay else None
            exact = ClassMeansObjective(self.model, self.device, torch.float64)
            self.y0 = exact.from_parameters(h, w, b).to(self.dtype)
            self.reduced = exact.with_dtype(self.dtype)
        ts = [s.time_scale for s in specs]
        uniform = all(t.eta_h == 1.0 and t.eta_b == 1.0 and t.per_layer(1) == (1.0,)
                      for t in ts)
        self.reduced_eta = ((1.0, 1.0, 1.0) if uniform else
                            (tensor([t.per_layer(1)[0] for t in ts]),
                             tensor([t.eta_h for t in ts]), tensor([t.eta_b for t in ts])))

    def _time_scales(self, tensor: Callable[[list[float]], torch.Tensor]) -> torch.Tensor | float:
        depth = self.model.depth
        per_block = {"H": [s.time_scale.eta_h for s in self.specs],
                     "b": [s.time_scale.eta_b for s in self.specs]}
        for l in range(depth):
            per_block[f"W{l + 1}"] = [s.time_scale.per_layer(depth)[l] for s in self.specs]
        if all(v == 1.0 for values in per_block.values() for v in values):
            return 1.0
        layout = self.objective.layout
        return layout.expand_per_block({b.name: tensor(per_block[b.name]) for b in layout.blocks})

    @property
    def error_scale(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Error scale of the adaptive step test for the Gram form (its inner products judged
        by the norms of their factors), or None for the default atol + rtol |y|."""
        if not isinstance(self.reduced, GramObjective):
            return None
        reduced, solver = self.reduced, self.solver
        return lambda state: reduced.error_scale(state, solver.rtol, solver.atol)

    def velocity(self, state: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """d state/dt (R, P) of every run, written into ``out`` when given."""
        if self.reduced is not None:
            return self.reduced.velocity(state, self.penalties, *self.reduced_eta, out=out)
        return self.objective.velocity(state, self.penalties, self.eta, out)

    def select(self, runs: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                  Callable[[torch.Tensor, torch.Tensor],
                                                           torch.Tensor]]:
        """(velocity, grad_norm) of the runs ``runs`` (M,) alone (states (M, P))."""
        pen = self.penalties.select(runs)
        if self.reduced is not None:
            reduced = self.reduced
            eta = tuple(e[runs] if isinstance(e, torch.Tensor) else e for e in self.reduced_eta)
            if isinstance(reduced, ClassMeansObjective):
                return (lambda y, out=None: reduced.velocity(y, pen, *eta, runs=runs, out=out),
                        lambda y, k: reduced.grad_norm_from_velocity(k, *eta, runs=runs))
            return (lambda y, out=None: reduced.velocity(y, pen, *eta, runs=runs, out=out),
                    lambda y, k: reduced.grad_norm(y, pen, runs=runs))
        objective = self.objective
        eta = self.eta[runs] if isinstance(self.eta, torch.Tensor) else self.eta

        def velocity(y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            return objective.velocity(y, pen, eta, out)

        return velocity, lambda y, k: (k / eta).double().norm(dim=1)

    def grad_norm(self, state: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """|grad f|_2 (R,) at ``state`` whose velocity is ``velocity``, float64."""
        if isinstance(self.reduced, ClassMeansObjective):
            return self.reduced.grad_norm_from_velocity(velocity, *self.reduced_eta)
        if self.reduced is not None:
            return self.reduced.grad_norm(state, self.penalties)
        return (velocity / self.eta).double().norm(dim=1)

    def _value(self, states: torch.Tensor, runs: torch.Tensor) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        """(data loss (M,), objective f (M,)) of states (M, P) belonging to runs (M,)."""
        pen = self.penalties.select(runs)
        if self.reduced is not None:
            return self.reduced.value(states, pen, runs)
        return self.objective.value(states, pen)

    def objective_values(self, states: torch.Tensor) -> np.ndarray:
        """Objective f (R,) of one state per run of the batch (R, P), float64 on the host."""
        runs = torch.arange(states.shape[0], device=states.device)
        return self._value(states, runs)[1].double().cpu().numpy()

    def record(self, states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        """Recorded quantities (M, Q) of states (M, P) belonging to runs (M,)."""
        loss, objective = self._value(states, runs)
        if self.reduced is not None:
            values = self.reduced.metrics(states, runs)
        else:
            feats, weights, bias = self.objective.penultimate(states)
            values = nc_metrics(feats, self.objective.labels, self.model.classes, weights, bias)
        return torch.stack([loss, objective, *(values[k] for k in METRIC_NAMES)], dim=1)


def stopped_at_rest(runs: pd.DataFrame) -> pd.Series:
    """(runs,) bool of a run table: `not_collapsed` runs that stopped before t_end because
    |grad f| <= gtol, at a minimum or at a saddle the flow would not leave before t_end
    (``SolverSpec.gtol``; ``SolverSpec(gtol=0)`` follows such runs to t_end)."""
    early = runs["t_final"] < runs["solver_t_end"] * (1.0 - 1e-12)
    return (runs["status"] == "not_collapsed") & early


def cut_short(runs: pd.DataFrame) -> pd.Series:
    """(runs,) bool of a run table: collapsed (``ok``) runs whose integration ran out of steps
    (``stop`` max_steps) before t_end, so that their final columns are at t_final."""
    return (runs["stop"] == STATUS_NAMES[MAX_STEPS]) & (runs["status"] == "ok")


def _status(code: int, has_onset: bool, vanishing: bool, rose: bool = False) -> str:
    """Run status from the integrator's stop code, the onset, the vanishing rule and whether
    the objective ended above its start (``rose``: no gradient flow does that)."""
    if code == DIVERGED or rose:
        return "diverged"
    if code == STALLED:
        return "stalled"
    if vanishing:
        return "vanishing"
    if has_onset:
        return "ok"
    if code == MAX_STEPS:
        return "max_steps"
    return "not_collapsed"


def _objective_rose(start: float, end: float) -> bool:
    """Whether the objective ended above its start beyond integration error (1e-3 relative):
    a gradient flow never raises it (df/dt = -sum eta |grad f|^2), so such a run was
    integrated unstably (gradient descent past its stability limit, a far too loose
    tolerance)."""
    return end > start + 1e-3 * abs(start) + 1e-12


def _in_input_order(frames: list[pd.DataFrame], positions: list[np.ndarray]) -> pd.DataFrame:
    """One trajectory table of the batches' tables, run by run in input order.

    ``positions[k]`` gives, for each row of ``frames[k]``, its run's position in the input;
    a stable sort keeps every run's rows in time order.
    """
    table = pd.concat(frames, ignore_index=True)
    if len(frames) == 1 and np.all(positions[0][1:] >= positions[0][:-1]):
        return table
    order = np.argsort(np.concatenate(positions), kind="stable")
    return table.take(order).reset_index(drop=True)


def _trajectory_frame(ids: Sequence[str], times: np.ndarray, records: np.ndarray
                      ) -> tuple[pd.DataFrame, np.ndarray]:
    """Long trajectory table of R runs: one row per run and record time at which any recorded
    quantity is finite, run by run (in the order of ``ids``), each in time order.

    Parameters
    ----------
    ids : (R,) run identifiers.
    times : (T,) record times.
    records : (R, T, Q) recorded quantities, Q = len(RECORDED) (NaN where not reached).

    Returns
    -------
    (table, run_of_row): the table and, for each of its M rows, its run's index into ``ids``.
    """
    keep = np.isfinite(records).any(axis=2).ravel()
    rows = np.flatnonzero(keep)  # (M,) into the (R * T) run-time pairs
    values = np.take(records.reshape(-1, records.shape[2]), rows, axis=0)
    frame = pd.DataFrame(values, columns=list(RECORDED), copy=False)  # one block, no copy
    run_of_row = rows // records.shape[1]
    frame.insert(0, "run_id", pd.array(list(ids), dtype="str").take(run_of_row))
    frame.insert(1, "time", times[rows % records.shape[1]])
    frame.insert(2, "time_unit", "t")
    frame.insert(3, "phase", 0)
    return frame, run_of_row


def _onsets_at_the_stop(flow: FlowResult, metric: np.ndarray, fn: np.ndarray,
                        final_metric: np.ndarray, final_fn: np.ndarray, onset: OnsetSpec,
                        when: np.ndarray, fn_on: np.ndarray) -> None:
    """Onsets of runs that stopped early at a state of the flow, in place.

    A run that stops at rest (``steady``) or out of steps (``max_steps``) before t_end ends
    between two record times; the records alone miss a crossing after the last record reached
    (a collapse of 1e-13 read as ``not_collapsed``). Each such run without an onset is searched
    again in its records up to the stop plus its final state at ``t_final``.

    metric, fn : (R, T) recorded series. final_metric, final_fn : (R,) at the final states.
    when, fn_on : (R,) onsets and fn at onset from the records, completed here.
    """
    early = np.isin(flow.code, (STEADY, MAX_STEPS)) & np.isnan(when)
    for i in np.flatnonzero(early):
        reached = flow.times < flow.t_final[i]
        if reached.all() or not np.isfinite(final_metric[i]):
            continue  # no record time after the stop, or nothing to read at it
        times = np.append(flow.times[reached], flow.t_final[i])
        when[i], fn_on[i] = onset_and_fn(
            times, np.append(metric[i, reached], final_metric[i]),
            np.append(fn[i, reached], final_fn[i]), onset.threshold, onset.stay,
            onset.interpolate)


def _summarise(batch: _Batch, flow: FlowResult, ids: list[str]
               ) -> tuple[list[dict], pd.DataFrame, np.ndarray]:
    """Run rows and trajectory rows of one integrated batch, and the index into ``ids`` of
    each trajectory row's run."""
    q_index = {name: i for i, name in enumerate(RECORDED)}
    all_runs = torch.arange(len(ids), device=batch.device)
    state = flow.final_state
    final = record_in_blocks(batch.record, state, all_runs,
                             record_block(batch.device, state.shape[1] * state.element_size())
                             ).cpu().numpy()
    f_index, fn_index = q_index["objective"], q_index["fn"]
    f_start = batch.objective_values(batch.y0)
    onset = batch.onset
    fn_series = flow.records[:, :, fn_index]  # (R, T)
    metric_series = flow.records[:, :, q_index[onset.metric]]
    onset_times, fn_at_onset = onsets_and_fn(
        flow.times, metric_series, fn_series, onset.threshold, onset.stay, onset.interpolate)
    _onsets_at_the_stop(flow, metric_series, fn_series, final[:, q_index[onset.metric]],
                        final[:, fn_index], onset, onset_times, fn_at_onset)
    vanishing = are_vanishing(np.concatenate([fn_series, final[:, fn_index, None]], axis=1),
                              batch.solver.vanish_tol)
    final_columns = [f"final_{name}" for name in RECORDED]
    # Python numbers of the per-run arrays, converted once (float(a[i]) run by run cost
    # ~0.1 s at 4096 runs)
    per_run = zip(batch.specs, ids, onset_times.tolist(), fn_at_onset.tolist(),
                  flow.code.tolist(), vanishing.tolist(), final.tolist(), flow.steps.tolist(),
                  flow.rejected.tolist(), flow.t_final.tolist(), flow.grad_norm.tolist())
    rows = []
    for i, (spec, rid, when, fn_on, code, vanish, final_row, steps, rejected, t_final,
            grad_norm) in enumerate(per_run):
        status = _status(int(code), math.isfinite(when), bool(vanish),
                         _objective_rose(f_start[i], final_row[f_index]))
        if status == "vanishing":  # a crossing while every norm vanishes is no onset
            when = fn_on = math.nan
        row = {"run_id": rid, **spec.to_row(), "status": status,
               "stop": STATUS_NAMES[int(code)], "steps": int(steps),
               "rejected_steps": int(rejected), "t_final": float(t_final),
               "grad_norm_final": float(grad_norm), "onset_time": float(when),
               "fn_at_onset": float(fn_on)}
        row.update(zip(final_columns, map(float, final_row)))
        rows.append(row)
    return rows, *_trajectory_frame(ids, flow.times, flow.records)


def _state_builder(batch: _Batch, state: torch.Tensor) -> Callable[[], list[dict[str, Any]]]:
    """A function that returns the per-run blocks of the batch's final states (R, P).

    It holds the states on the CPU (an accelerator's memory is not kept for them) and the
    little it needs of the batch: the layout, or the Gram form (whose factoring needs only the
    state). The class-means form's blocks are built at once: its objective holds (R, d, N)
    tensors that are not to outlive the batch.
    """
    reduced, layout, depth = batch.reduced, batch.objective.layout, batch.model.depth
    if isinstance(reduced, ClassMeansObjective):
        blocks = _state_blocks(reduced, layout, depth, state.detach())
        return lambda: blocks
    held = state.detach().cpu()
    return lambda: _state_blocks(reduced, layout, depth, held)


def _state_blocks(reduced: GramObjective | ClassMeansObjective | None, layout: StateLayout,
                  depth: int, state: torch.Tensor) -> list[dict[str, Any]]:
    """Per-run blocks of the flat states (R, P) as float64 numpy arrays: the parameter
    ``layout`` of depth ``depth``, or the reduced form ``reduced``."""
    if isinstance(reduced, ClassMeansObjective):
        h, w, b = reduced.parameters(state)
        return [{"H": h[i].double().cpu().numpy().copy(), "W": [w[i].double().cpu().numpy().copy()],
                 "b": None if b is None else b[i].double().cpu().numpy().copy()}
                for i in range(state.shape[0])]
    if isinstance(reduced, GramObjective):
        h, w = reduced.factor(state.double())
        blocks = []
        for i in range(state.shape[0]):
            row = state[i:i + 1].double().cpu()
            parts = {name: reduced.layout.view(row, name)[0].numpy().copy()
                     for name in ("Z", "A", "B")}
            b = reduced.layout.view(row, "b")[0].numpy().copy() if "b" in reduced.layout else None
            blocks.append({"H": h[i].cpu().numpy().copy(), "W": [w[i].cpu().numpy().copy()],
                           "b": b, **parts})
        return blocks
    host = state.double().cpu()
    blocks = []
    for i in range(host.shape[0]):
        row = host[i:i + 1]
        blocks.append({
            "H": layout.view(row, "H")[0].numpy().copy(),
            "W": [layout.view(row, f"W{l + 1}")[0].numpy().copy()
                  for l in range(depth)],
            "b": layout.view(row, "b")[0].numpy().copy() if "b" in layout else None,
        })
    return blocks


def _theory_columns(spec: RunSpec) -> dict[str, Any]:
    try:
        from ncsim.theory.columns import theory_columns
    except ImportError:  # the theory module is optional at import time
        return {"fn_star_theory": math.nan, "onset_time_theory": math.nan,
                "collapsed_theory": None}
    return theory_columns(spec)


def _batches(specs: Sequence[RunSpec], max_batch: int) -> list[list[int]]:
    """Indices of ``specs`` grouped by batch key, each group cut to ``max_batch`` runs."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(spec.batch_key(), []).append(i)
    out = []
    for members in groups.values():
        out += [members[k:k + max_batch] for k in range(0, len(members), max_batch)]
    return out


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] += time.perf_counter() - start


def unique_run_ids(specs: Sequence[RunSpec]) -> list[str]:
    """Run ids of ``specs``; a repeated spec gets ``-1``, ``-2``, ... after its id."""
    ids = [run_id(s) for s in specs]
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            ids[i] = f"{rid}-{seen[rid] - 1}"
    return ids


def _run_specs(specs: object) -> list[RunSpec]:
    """``specs`` (one :class:`RunSpec` or an iterable of them) as a validated, non-empty list;
    :class:`InputError` for anything else."""
    if isinstance(specs, RunSpec):
        specs = [specs]
    elif isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Iterable):
        raise InputError(f"simulate takes a RunSpec or a list of RunSpecs, got "
                         f"{type(specs).__name__} {short_repr(specs)}; build each run as "
                         "RunSpec(model=ModelSpec(...), reg=Regularization(...), ...)")
    runs = list(specs)
    require(len(runs) > 0, "simulate got an empty list of runs; give a RunSpec or a list of at "
            "least one RunSpec")
    checked: set[tuple[int, ...]] = set()  # parts shared by several runs are checked once
    for i, spec in enumerate(runs):
        if not isinstance(spec, RunSpec):
            raise InputError(f"simulate takes RunSpecs, but item {i} of the list is a "
                             f"{type(spec).__name__} {short_repr(spec)}; wrap it in a RunSpec, "
                             "e.g. RunSpec(model=ModelSpec(...))")
        spec.validate(checked)
    return runs


def simulate(
    specs: RunSpec | Sequence[RunSpec],
    progress: bool = False,
    max_batch: int = 4096,
    theory: bool = True,
) -> SimulationResult:
    """Integrate every run and summarise it.

    Parameters
    ----------
    specs : one run or a list of runs (validated here: :class:`InputError` for an empty list,
        an item that is not a :class:`RunSpec` or a spec that does not validate).
    progress : show a progress bar (stderr) of finished runs.
    max_batch : largest number of runs integrated in one batch (an integer >= 1).
    theory : add the closed-form prediction columns (``fn_star_theory``, ...); benchmarks
        switch them off to time the simulation alone.

    Returns
    -------
    SimulationResult with ``runs`` (one row per run, input order), ``trajectories``, the
    final states and the phases' ``timings``.
    """
    from ncsim.io import provenance

    timings = {"prepare_s": 0.0, "integrate_s": 0.0, "summarise_s": 0.0}
    with _phase(timings, "prepare_s"):
        require(is_integer(max_batch) and max_batch >= 1,
                f"max_batch must be an integer >= 1 (the most runs integrated in one batch), "
                f"got {max_batch!r}")
        specs = _run_specs(specs)
        ids = unique_run_ids(specs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), unit="run", desc="simulate", leave=False)
    rows: dict[int, dict] = {}
    frames, positions = [], []
    states = FinalStates()
    for members in _batches(specs, max_batch):
        with _phase(timings, "prepare_s"):
            batch = _Batch([specs[i] for i in members])
        with _phase(timings, "integrate_s"):
            flow = integrate(batch.velocity, batch.y0, batch.solver, batch.record,
                             len(RECORDED), eta=batch.eta,
                             progress=bar.update if bar is not None else None,
                             grad_norm=batch.grad_norm, select=batch.select,
                             error_scale=batch.error_scale)
        with _phase(timings, "summarise_s"):
            batch_rows, frame, run_of_row = _summarise(batch, flow, [ids[i] for i in members])
            states.add([ids[i] for i in members], _state_builder(batch, flow.final_state))
            for i, row in zip(members, batch_rows):
                if theory:
                    row.update(_theory_columns(specs[i]))
                row.update(provenance(specs[i].solver.device, specs[i].solver.dtype))
                rows[i] = row
            frames.append(frame)
            positions.append(np.asarray(members)[run_of_row])
    if bar is not None:
        bar.close()
    with _phase(timings, "summarise_s"):
        runs = pd.DataFrame([rows[i] for i in range(len(specs))])
        trajectories = _in_input_order(frames, positions)
    return SimulationResult(runs=runs, trajectories=trajectories, final_states=states,
                            timings=timings)
