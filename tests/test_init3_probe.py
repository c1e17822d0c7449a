"""Probe of ncsim.models.init: scale of the gaussian draws, seeds, batches drawn on several
threads, dtype, and the exact errors for bad explicit arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim.errors import InputError
from ncsim.models.init import draws_gram_factor, float_array, initial_parts, initial_state
from ncsim.models.ufm import state_layout
from ncsim.spec import SEED_LIMIT, InitSpec, ModelSpec

F64 = torch.float64
DEEP = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", bias="free", classes=3,
                 per_class=2, dim=4, width=3)
NO_BIAS = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", bias="none",
                    classes=3, per_class=2, dim=4, width=3)


def _arrays(**edit) -> dict:
    rng = np.random.default_rng(0)
    out = {"H": rng.normal(size=(4, 6)), "W": [rng.normal(size=(3, 4)), rng.normal(size=(3, 3))]}
    out.update(edit)
    return out


def _parts(model: ModelSpec, arrays: dict) -> dict:
    return initial_parts(model, InitSpec(kind="arrays", arrays=arrays))


def test_gaussian_entries_have_std_scale():
    """A large plain gaussian draw (d <= N + K) has empirical mean 0 and std = scale."""
    model = ModelSpec(kind="ufm", classes=10, per_class=40, dim=300)
    assert not draws_gram_factor(model)
    parts = initial_parts(model, InitSpec(scale=0.3, seed=4))
    for name in ("H", "W1"):
        x = parts[name]
        assert abs(float(x.mean())) < 0.3 * 5 / np.sqrt(x.numel()), name
        assert float(x.std()) == pytest.approx(0.3, rel=0.02), name


def test_gram_factor_gaussian_entries_have_std_scale():
    """The wide one-layer UFM (d > N + K, drawn through the Gram factor) also has iid entries of
    std = scale: empirical std of H and W1, and row norms^2 / d close to scale^2."""
    model = ModelSpec(kind="ufm", classes=3, per_class=3, dim=4000)
    assert draws_gram_factor(model)
    parts = initial_parts(model, InitSpec(scale=0.25, seed=7))
    for name in ("H", "W1"):
        assert float(parts[name].std()) == pytest.approx(0.25, rel=0.03), name
    sq = (parts["H"] ** 2).sum(0) / 4000
    assert torch.allclose(sq, torch.full_like(sq, 0.0625), rtol=0.1)


def test_boundary_d_equals_n_plus_k_is_drawn_entry_by_entry():
    """At d = N + K exactly the gaussian is not drawn through the Gram factor: H then W1 are
    torch.randn draws of the run's generator times scale."""
    model = ModelSpec(kind="ufm", classes=3, per_class=2, dim=9)
    assert not draws_gram_factor(model)
    assert draws_gram_factor(ModelSpec(kind="ufm", classes=3, per_class=2, dim=10))
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(9, 6, generator=gen, dtype=F64) * 0.2
    w = torch.randn(3, 9, generator=gen, dtype=F64) * 0.2
    parts = initial_parts(model, InitSpec(scale=0.2, seed=5))
    assert torch.equal(parts["H"], h) and torch.equal(parts["W1"], w)


def test_seed_at_the_limit_is_refused():
    """Seed 2^32 (= SEED_LIMIT) is refused with the out-of-range message; 2^32 - 1 is drawn."""
    model = ModelSpec(kind="ufm", classes=2, per_class=2, dim=3)
    with pytest.raises(InputError, match=rf"^seed {SEED_LIMIT} is out of range: "):
        initial_state(model, [InitSpec(seed=SEED_LIMIT)], "cpu", F64)
    initial_state(model, [InitSpec(seed=SEED_LIMIT - 1)], "cpu", F64)


@pytest.mark.parametrize("seed", [1.5, 2.0, True])
def test_non_integer_seed_is_refused(seed):
    """A float or bool seed is an InputError naming it, not silently truncated to an int."""
    model = ModelSpec(kind="ufm", classes=2, per_class=2, dim=3)
    with pytest.raises(InputError, match=rf"^seed must be an integer, got {seed!r}$"):
        initial_state(model, [InitSpec(seed=seed)], "cpu", F64)


def test_threaded_batch_draws_each_run_as_alone():
    """A batch of 70 runs drawn on up to 4 Python threads: every row (incl. the bias, zero) is
    the run drawn alone, distinct seeds give distinct rows, equal seeds equal rows."""
    seeds = [i % 35 for i in range(70)]
    inits = [InitSpec(scale=0.5, seed=s) for s in seeds]
    with torch_threads(4):
        batch = initial_state(DEEP, inits, "cpu", F64)
    layout = state_layout(DEEP)
    for i, init in enumerate(inits):
        assert torch.equal(batch[i], initial_state(DEEP, [init], "cpu", F64)[0]), i
        assert torch.equal(layout.view(batch[i:i + 1], "b"), torch.zeros(1, 3)), i
    assert torch.equal(batch[:35], batch[35:])
    assert len({tuple(r.tolist()) for r in batch[:35]}) == 35


def test_bias_of_a_gaussian_start_is_zero_over_garbage():
    """The bias block of a gaussian start is 0 even where the row's memory held other values
    (many batches allocated after freeing non-zero ones)."""
    for _ in range(20):
        junk = torch.full((400, state_layout(DEEP).size), 7.0, dtype=F64)
        del junk
        out = initial_state(DEEP, [InitSpec(seed=s) for s in range(400)], "cpu", F64)
        assert torch.equal(state_layout(DEEP).view(out, "b"), torch.zeros(400, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_initial_state_has_the_requested_dtype(dtype):
    """initial_state returns the requested dtype: the float64 draw rounded to it."""
    inits = [InitSpec(seed=1), InitSpec(kind="spectral", seed=2)]
    out = initial_state(DEEP, inits, "cpu", dtype)
    assert out.dtype == dtype and out.device.type == "cpu"
    assert torch.equal(out, initial_state(DEEP, inits, "cpu", F64).to(dtype))


def test_bool_array_is_refused():
    """A numpy bool array is not numbers: InputError naming the block and type."""
    with pytest.raises(InputError, match=r"^init array H must be an array of numbers, got "
                                         r"ndarray array\(\[ True, False\]\)$"):
        float_array("H", np.array([True, False]))


def test_bytes_in_an_object_array_are_refused():
    """Bytes among numbers (object array) are refused, not parsed as a number."""
    with pytest.raises(InputError, match=r"^init array W1 must be an array of numbers, got list"):
        float_array("W1", [1.0, b"2"])


def test_error_shows_the_first_60_characters_of_the_value():
    """The bad-value message shows exactly the first 60 characters of the value's repr."""
    value = "x" * 100
    with pytest.raises(InputError) as err:
        float_array("H", value)
    assert str(err.value) == "init array H must be an array of numbers, got str " + repr(value)[:60]


def test_complex_array_is_refused_with_its_dtype():
    """A complex array is refused naming its dtype, not cut to its real part."""
    with pytest.raises(InputError, match=r"^init array b is complex \(complex128\); features and "
                                         r"weights are real: pass its real part"):
        float_array("b", np.array([1.0 + 0j, 2.0]))


def test_too_many_weight_matrices_are_refused():
    """Three W for a two-layer head is refused with the count message (not an unknown block)."""
    arrays = _arrays()
    arrays["W"] = [*arrays["W"], np.zeros((3, 3))]
    with pytest.raises(InputError, match=r"^init arrays need 'W' with 2 matrices W_1\.\.W_L$"):
        _parts(DEEP, arrays)


def test_unknown_key_is_refused_with_the_sorted_list():
    """Unknown keys are refused, listed sorted, before anything else is checked."""
    with pytest.raises(InputError, match=re.escape(
            "init arrays have unknown keys ['X', 'bias']; the keys are 'H', 'W' (a list of "
            "W_1..W_L) and 'b'")):
        _parts(DEEP, _arrays(bias=np.zeros(3), X=1))


def test_infinite_entry_is_refused():
    """+inf in H is refused as non-finite (not only NaN)."""
    h = _arrays()["H"]
    h[0, 0] = np.inf
    with pytest.raises(InputError, match=r"^init array H has non-finite entries \(NaN or inf\)"):
        _parts(DEEP, _arrays(H=h))


def test_shape_error_names_actual_and_expected_shapes():
    """The shape error states the given shape and the model's expected shape, both exact."""
    with pytest.raises(InputError, match=r"^init array W2 has shape \(3, 4\), expected \(3, 3\)$"):
        _parts(DEEP, _arrays(W=[np.zeros((3, 4)), np.zeros((3, 4))]))


def test_bias_for_a_model_without_bias_is_refused():
    """A b array for a bias 'none' model is refused (it would be dropped silently)."""
    with pytest.raises(InputError, match=r"^init array b is given but the model has no bias "
                                         r"\(bias 'none'\)"):
        _parts(NO_BIAS, _arrays(b=np.zeros(3)))


def test_explicit_arrays_land_unchanged_and_b_defaults_to_zero():
    """Explicit arrays are kept as float64 values (ints converted); b absent is zeros."""
    arrays = _arrays(H=np.arange(24).reshape(4, 6))
    parts = _parts(DEEP, arrays)
    assert parts["H"].dtype == F64 and torch.equal(parts["H"], torch.arange(24.0,
                                                                           dtype=F64).view(4, 6))
    assert torch.equal(parts["W2"], torch.as_tensor(arrays["W"][1]))
    assert torch.equal(parts["b"], torch.zeros(3, dtype=F64))
