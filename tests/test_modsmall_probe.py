"""Mutation probe of the small model modules and the results writer: activations in their far
tails and in float32, the exact refusal messages, cross-entropy with logits far beyond exp's
range against a float64 reference written here, per-block values given in any order, the
grid axes of a run table in the command line's grid order, and the run table written after
the figure."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from ncsim.models.activations import activation
from ncsim.models.layout import StateLayout
from ncsim.models.losses import logit_gradient, loss_value
from ncsim.results import varying_columns

F64 = torch.float64
NAMES = ["linear", "relu", "leaky_relu", "tanh", "gelu", "silu"]

# ----------------------------------------------------------------------------- activations

TAILS = [-800.0, -40.0, 40.0, 800.0]


def _silu_grad(x: float) -> float:
    """silu'(x) = s (1 + x (1 - s)), s the logistic function, written without overflow."""
    s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return s * (1.0 + x * (1.0 - s))


def test_smooth_derivatives_in_the_far_tails_are_the_closed_forms():
    """At u = -800, -40, 40, 800: tanh' = 0, gelu' = 0, 0, 1, 1 exactly (Phi and u phi
    underflow), silu' equals its closed form (no exp overflow, no NaN) and all equal
    autograd."""
    u = torch.tensor(TAILS, dtype=F64)
    for name in ("tanh", "gelu", "silu"):
        sigma, grad = activation(name)
        got = grad(u)
        assert torch.isfinite(got).all(), name
        x = u.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(sigma(x).sum(), x)
        torch.testing.assert_close(got, auto, rtol=1e-14, atol=0)
    assert activation("tanh")[1](u).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert activation("gelu")[1](u).tolist() == [0.0, 0.0, 1.0, 1.0]
    want = [_silu_grad(x) for x in TAILS]
    assert activation("silu")[1](u).tolist() == pytest.approx(want, rel=1e-14, abs=0)
    assert want[1] < 0 and want[0] == 0.0 and want[3] == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_activation_and_derivative_keep_a_float32_input_float32(name):
    """sigma and sigma' of a float32 tensor are float32 (no float64 result), with the values
    of the float64 computation rounded."""
    sigma, grad = activation(name, 0.3)
    u64 = torch.tensor([-2.5, -0.5, 0.0, 0.75, 3.0], dtype=F64)
    u32 = u64.float()
    assert sigma(u32).dtype == torch.float32 and grad(u32).dtype == torch.float32
    torch.testing.assert_close(grad(u32), grad(u64).float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sigma(u32), sigma(u64).float(), rtol=1e-6, atol=1e-7)


def test_unknown_activation_message_quotes_the_name():
    """An unknown activation is refused with exactly "unknown activation 'softplus'"."""
    with pytest.raises(ValueError, match=r"^unknown activation 'softplus'$"):
        activation("softplus")


# ----------------------------------------------------------------------------- losses


def _naive_ce(z: list[list[float]], labels: list[int]) -> tuple[float, list[list[float]]]:
    """Mean CE over the columns of z (K x N) and its gradient (softmax - e_y)/N, float64 with
    the max shifted out (exact for any logit size)."""
    k, n = len(z), len(z[0])
    loss, grad = 0.0, [[0.0] * n for _ in range(k)]
    for i in range(n):
        col = [z[j][i] for j in range(k)]
        m = max(col)
        tot = sum(math.exp(c - m) for c in col)
        loss += m + math.log(tot) - col[labels[i]]
        for j in range(k):
            grad[j][i] = (math.exp(col[j] - m) / tot - (j == labels[i])) / n
    return loss / n, grad


def test_cross_entropy_with_logits_far_beyond_exps_range():
    """Logits of +-1000 (exp overflows / underflows): the CE value and its gradient are finite
    and equal a max-shifted float64 reference, per run, for a sample classified right (loss
    0), wrong by 1700 and tied."""
    runs = [[[1000.0, -700.0, 0.0, 5.0], [-700.0, 1000.0, 0.0, 5.0], [300.0, 0.0, 0.0, -3.0]],
            [[-1000.0, 900.0, 2.0, 1000.0], [1000.0, -900.0, 1.0, 999.0], [0.0, 0.0, 0.0, 0.0]]]
    labels = [0, 0, 2, 1]
    z = torch.tensor(runs, dtype=F64)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), 3).T.to(F64)
    value = loss_value("ce", z, onehot)
    grad = logit_gradient("ce", z.clone(), onehot)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    for r, zr in enumerate(runs):
        want_value, want_grad = _naive_ce(zr, labels)
        assert float(value[r]) == pytest.approx(want_value, rel=1e-15)
        torch.testing.assert_close(grad[r], torch.tensor(want_grad, dtype=F64), rtol=1e-14,
                                   atol=1e-300)
    assert float(value[0]) > 400.0


@pytest.mark.parametrize("call", [loss_value, logit_gradient])
def test_unknown_loss_message_quotes_the_name(call):
    """loss_value and logit_gradient refuse an unknown loss with exactly "unknown loss
    'hinge'"."""
    z = torch.zeros(1, 2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"^unknown loss 'hinge'$"):
        call("hinge", z, torch.eye(2, dtype=F64))


# ----------------------------------------------------------------------------- layout


def test_per_block_values_land_on_their_blocks_in_any_dict_order():
    """expand_per_block places each block's value on that block's span whatever the order of
    the dict's keys (here the reverse of the layout's)."""
    lay = StateLayout([("H", (2, 3)), ("W1", (1, 2)), ("b", (2,))])
    values = {"b": torch.tensor([3.0, 30.0]), "W1": torch.tensor([2.0, 20.0]),
              "H": torch.tensor([1.0, 10.0])}
    flat = lay.expand_per_block(values)
    want = torch.tensor([1.0] * 6 + [2.0] * 2 + [3.0] * 2)
    assert torch.equal(flat, torch.stack([want, 10.0 * want]))


def test_view_refusal_names_the_expected_and_given_shapes():
    """A state of the wrong width is refused with exactly "state must be (R, 2), got
    (3, 5)" (a plain tuple, not torch.Size)."""
    lay = StateLayout([("a", (2,))])
    with pytest.raises(ValueError, match=r"^state must be \(R, 2\), got \(3, 5\)$"):
        lay.view(torch.zeros(3, 5), "a")


# ----------------------------------------------------------------------------- results


def _column(option: str) -> str:
    """The run-table column of a simulate grid option."""
    from ncsim.cli import ONSET_AXES, SOLVER_AXES

    if option == "seed":
        return "init_seed"
    if option.startswith("eta_"):
        return f"time_scale_{option}"
    if option in SOLVER_AXES or option in ("rtol", "atol"):
        return f"solver_{option}"
    assert option not in ONSET_AXES or option.startswith("onset_")
    return option


def test_every_grid_option_is_an_axis_in_the_grids_order():
    """A run table in which every spec column differs between two runs has as its axes the
    run-table columns of all the command line's grid options, in the grid's order."""
    from ncsim.cli import GRID_OPTIONS
    from ncsim.spec import ModelSpec, RunSpec

    columns = list(RunSpec(model=ModelSpec()).to_row())
    runs = pd.DataFrame({c: [f"{c}-0", f"{c}-1"] for c in reversed(columns)})
    want = [_column(o) for o in GRID_OPTIONS]
    assert set(want) <= set(columns)
    assert varying_columns(runs) == want


def test_a_failing_figure_leaves_no_run_table(tmp_path, monkeypatch):
    """The run table is written after the figure: a figure whose save fails leaves the
    trajectories and spec.json but no run table (the mark of a finished write)."""
    import ncsim.plots
    from ncsim.results import write_simulation
    from ncsim.spec import ModelSpec, RunSpec

    def fail(fig, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(ncsim.plots, "trajectory_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ncsim.plots, "save_figure", fail)
    runs = pd.DataFrame({"run_id": ["r0"], "final_fn": [0.5]})
    traj = pd.DataFrame({"run_id": ["r0"], "time": [0.0], "fn": [1.0]})
    specs = [RunSpec(model=ModelSpec(classes=2, per_class=2, dim=3))]
    with pytest.raises(KeyboardInterrupt):
        write_simulation(SimpleNamespace(runs=runs, trajectories=traj), tmp_path, "csv", specs)
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["spec.json",
                                                                "trajectories.csv"]
