"""Mutation probe of stacked training and the flat state layout: what the other tests left
open (check_seeds validating the whole configuration, seeds turned into Python ints, mixed
valid/invalid seeds, the progress bar's switch and label; a layout's blocks of three or more
dimensions, a layout given list shapes, a broadcast (zero-stride) state, a non-2-D state of
the right width, pack into ``out`` with missing or extra blocks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.models.layout import StateLayout
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import check_seeds, train_stacked
from ncsim.validate.train import Phase, TrainConfig

# ---------------------------------------------------------------- stacked


def _tiny() -> tuple[TrainConfig, object]:
    """One SGD epoch on 6 Gaussian samples, a depth-1 width-4 MLP."""
    data = load_dataset("gaussian", per_class=2, classes=3, dim=3)
    config = TrainConfig(depth=1, width=4, phases=(Phase("ce", 1, "sgd", 0.1, 0.0,
                                                         batch_size=6),), nc_every=1)
    return config, data


@pytest.mark.parametrize(("change", "match"), [
    ({"depth": 0}, "depth must be an integer >= 1"),
    ({"phases": ()}, "a training needs at least one phase"),
    ({"nc_every": 0}, "nc_every must be an integer >= 1"),
])
def test_check_seeds_validates_the_whole_configuration(change, match):
    """check_seeds refuses an invalid configuration with TrainConfig.validate's message,
    before looking at the seeds (valid seeds do not let a bad config through)."""
    config = dataclasses.replace(TrainConfig(), **change)
    with pytest.raises(InputError, match=match):
        check_seeds(config, [0, 1])


def test_check_seeds_refuses_one_bad_seed_among_good_ones():
    """Every seed is checked, not just one: [0, -1] and [3, 2^31] are refused."""
    for seeds in ([0, -1], [3, 2**31], [1, 0.5]):
        with pytest.raises(InputError, match=r"seeds must be integers in \[0, 2\^31\)"):
            check_seeds(TrainConfig(), seeds)


def test_numpy_seeds_become_python_ints_in_the_runs():
    """numpy integer seeds come back as Python ints from check_seeds, and each stacked run's
    config carries a Python int seed (a numpy one would not serialise to JSON)."""
    got = check_seeds(TrainConfig(), np.array([4, 1], dtype=np.int64))
    assert got == [4, 1] and all(type(s) is int for s in got)
    config, data = _tiny()
    runs = train_stacked(config, data, [np.int64(3), np.int32(0)])
    assert [r.config.seed for r in runs] == [3, 0]
    assert all(type(r.config.seed) is int for r in runs)
    assert [r.config.run_id for r in runs] == ["run_s3", "run_s0"]


def test_progress_bar_only_when_asked_and_named_after_the_run(capsys):
    """progress=False writes nothing to stderr; progress=True draws a bar labelled
    '<run_id> x<number of seeds>'."""
    config, data = _tiny()
    train_stacked(config, data, [0, 1], progress=False)
    assert capsys.readouterr().err == ""
    train_stacked(config, data, [0, 1], progress=True)
    err = capsys.readouterr().err
    assert "run x2" in err


# ---------------------------------------------------------------- layout


def _layout3() -> StateLayout:
    """A vector, a 3-D block and a scalar block: a [0, 2), T [2, 26), s [26, 27)."""
    return StateLayout([("a", (2,)), ("T", (2, 3, 4)), ("s", ())])


def test_view_of_a_three_dimensional_block_is_the_row_major_slice():
    """A block of shape (2, 3, 4) is viewed with row-major strides (12, 4, 1): the view is the
    reshaped slice, for a contiguous state and one with column stride 2, and writes land in
    the state; a () block is one entry per run."""
    lay = _layout3()
    assert lay.size == 27 and [(b.start, b.stop) for b in lay.blocks] == [(0, 2), (2, 26),
                                                                           (26, 27)]
    big = torch.arange(2 * 2 * 27, dtype=torch.float64).reshape(2, 54)
    for state in (big[:, :27].clone(), big[:, ::2]):
        got = lay.view(state, "T")
        assert got.shape == (2, 2, 3, 4)
        assert torch.equal(got, state[:, 2:26].reshape(2, 2, 3, 4))
        assert torch.equal(lay.view(state, "s"), state[:, 26])
    state = torch.zeros(2, 27)
    lay.view(state, "T")[1, 1, 2, 3] = 1.0
    assert state[1].nonzero().flatten().tolist() == [2 + 12 + 8 + 3]


def test_pack_and_write_of_a_three_dimensional_block_round_trip():
    """pack (with and without out) and write put a (R, 2, 3, 4) block row-major in the state,
    and view gives it back."""
    lay = _layout3()
    gen = torch.Generator().manual_seed(0)
    parts = {b.name: torch.randn(3, *b.shape, generator=gen) for b in lay.blocks}
    flat = lay.pack(parts)
    assert torch.equal(flat[:, 2:26], parts["T"].reshape(3, 24))
    out = torch.full((3, 27), 9.0)
    assert torch.equal(lay.pack(parts, out=out), flat)
    other = torch.zeros(3, 27)
    lay.write({"T": parts["T"]}, other)
    assert torch.equal(lay.view(other, "T"), parts["T"])
    assert torch.equal(other[:, :2], torch.zeros(3, 2)) and torch.equal(other[:, 26],
                                                                        torch.zeros(3))


def test_list_shapes_become_tuple_block_shapes():
    """Shapes given as lists are stored as tuples (Block is frozen and hashable, shapes
    compare equal to tuples)."""
    lay = StateLayout([("H", [2, 3]), ("b", [1])])
    assert lay["H"].shape == (2, 3) and lay["b"].shape == (1,)
    assert hash(lay["H"]) == hash(lay["H"]) and len(set(lay.blocks)) == 2


def test_view_of_a_broadcast_state_reads_its_single_value():
    """A state broadcast from one value (strides (0, 0)) is viewed with zero strides: every
    block holds that value (no read past the one stored entry)."""
    lay = StateLayout([("H", (2, 3)), ("W1", (3,)), ("b", (1,))])
    state = torch.tensor([[5.0]]).expand(4, 10)
    for b in lay.blocks:
        got = lay.view(state, b.name)
        assert got.shape == (4, *b.shape) and torch.equal(got, torch.full_like(got, 5.0))


@pytest.mark.parametrize("shape", [(2, 10, 1), (2, 10, 3), (1, 10, 10)])
def test_view_refuses_a_state_of_three_dimensions_with_the_right_width(shape):
    """A 3-D state whose second axis is P wide is still refused by name (not a tuple-unpack
    error)."""
    lay = StateLayout([("H", (2, 3)), ("W1", (3,)), ("b", (1,))])
    with pytest.raises(ValueError, match=r"state must be \(R, 10\), got"):
        lay.view(torch.zeros(shape), "H")


def test_pack_into_out_uses_exactly_the_layouts_blocks():
    """pack(out=...) behaves as pack without out: an extra entry in parts is ignored, and a
    missing block is a KeyError (not a silently stale block in out)."""
    lay = StateLayout([("H", (2, 3)), ("W1", (3,)), ("b", (1,))])
    parts = {"H": torch.ones(1, 2, 3), "W1": torch.full((1, 3), 2.0),
             "b": torch.full((1, 1), 3.0)}
    extra = {**parts, "W2": torch.zeros(1, 4)}
    want = lay.pack(parts)
    assert torch.equal(lay.pack(extra), want)
    assert torch.equal(lay.pack(extra, out=torch.zeros(1, 10)), want)
    missing = {"H": parts["H"], "b": parts["b"]}
    with pytest.raises(KeyError, match="W1"):
        lay.pack(missing)
    with pytest.raises(KeyError, match="W1"):
        lay.pack(missing, out=torch.zeros(1, 10))
