"""Strict checks found by mutation probing of the spec, init, cache, phase and modes modules."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from ncsim.errors import InputError
from ncsim.models.init import float_array
from ncsim.spec import InitSpec, ModelSpec, RunSpec
from ncsim.theory import cache
from ncsim.theory.critical import Lambda_crit
from ncsim.theory.modes import ce_ray, mse_mode
from ncsim.theory.phase import check_axes, phase_diagram


@pytest.mark.parametrize("kind", ["spectral", "etf"])
def test_spectral_init_needs_the_hidden_width_to_hold_the_modes(kind):
    """A deep head whose hidden width is below the K - 1 modes is refused, naming the width."""
    model = ModelSpec(kind="deep", loss="ce", classes=4, per_class=2, dim=8, depth=2, width=2)
    spec = RunSpec(model=model, init=InitSpec(kind=kind))
    with pytest.raises(InputError, match=r"needs d \(and width\) >= 3 .* width = 2"):
        spec.validate()
    RunSpec(
        model=ModelSpec(kind="deep", loss="ce", classes=4, per_class=2, dim=8, depth=2, width=3),
        init=InitSpec(kind=kind),
    ).validate()


def test_init_array_holding_a_flag_among_numbers_is_refused():
    """An object array mixing a bool with numbers is not an array of numbers."""
    with pytest.raises(InputError, match="init array b must be an array of numbers"):
        float_array("b", np.array([True, 2.0], dtype=object))
    assert float_array("b", np.array([1, 2.0], dtype=object)).tolist() == [1.0, 2.0]


def test_numeric_cache_file_of_another_type_is_a_miss(monkeypatch, tmp_path):
    """A numeric cache file that does not hold the result type is computed afresh."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    calls = []

    @cache.numeric(float)
    def twice(x: int) -> float:
        calls.append(x)
        return 2.0 * x

    assert twice(3) == 6.0
    (path,) = tmp_path.glob("*twice*.pickle")
    cache._write(path, "not a float")
    twice.cache_clear()
    assert twice(3) == 6.0
    assert calls == [3, 3]
    assert cache._load(path) == 6.0  # the bad file is rewritten


def test_source_key_changes_with_the_sympy_version(monkeypatch):
    """The derivation cache key names sympy's version (pickles of another sympy are misses)."""
    here = cache.source_key.__wrapped__()
    assert here == cache.source_key()
    monkeypatch.setattr(sp, "__version__", sp.__version__ + ".other")
    assert cache.source_key.__wrapped__() != here


@pytest.mark.parametrize("bias", ["none", "free", None])
def test_lambda_b_axis_needs_a_regularised_bias(bias):
    """A phase diagram over lambda_b is refused unless the bias is 'reg'."""
    with pytest.raises(InputError, match="the axis lambda_b needs --bias reg"):
        check_axes("lambda_b", "lambda_w", bias)
    base = {
        "loss": "mse",
        "bias": bias,
        "K": 3,
        "n": 2,
        "d": 8,
        "depth": 1,
        "lambda_h": 1e-3,
        "init_scale": 0.1,
    }
    with pytest.raises(InputError, match="lambda_b needs --bias reg"):
        phase_diagram("lambda_b", [0.1], "lambda_w", [1e-3], base)
    check_axes("lambda_b", "lambda_w", "reg")


@pytest.mark.parametrize(("K", "n"), [(2, 1), (3, 4), (4, 9), (10, 25), (7, 3), (5, 2)])
def test_one_layer_mse_at_lambda_crit_is_not_collapsed(K, n):
    """M = 2 MSE: Lambda = 1/(K sqrt n) exactly is not collapsed (the origin wins the tie)."""
    lam = 1.0 / (K * np.sqrt(n))
    sol = mse_mode(np.array([K * 1.0]), np.array([n * 1.0]), np.array([lam]), 2)
    assert not bool(sol.collapsed[0])
    assert sol.sigma[0] == 0.0
    assert np.isnan(sol.sigma_local[0])
    below = mse_mode(np.array([K * 1.0]), np.array([n * 1.0]), np.array([lam * 0.5]), 2)
    assert bool(below.collapsed[0])


@pytest.mark.parametrize(("K", "n", "depth"), [(3, 2, 2), (4, 5, 2), (10, 20, 3), (2, 1, 2)])
def test_deep_ce_at_lambda_crit_is_not_collapsed(K, n, depth):
    """Deep CE: at its (numeric) Lambda_crit the ETF ray is not collapsed; just below it is."""
    lam = float(np.asarray(Lambda_crit("ce", np.array([K * 1.0]), np.array([n * 1.0]), depth))[0])
    at = ce_ray(np.array([K * 1.0]), np.array([n * 1.0]), np.array([lam]), depth + 1)
    assert not bool(at.collapsed[0])
    assert at.sigma[0] == 0.0
    below = ce_ray(
        np.array([K * 1.0]), np.array([n * 1.0]), np.array([lam * (1 - 1e-9)]), depth + 1
    )
    assert bool(below.collapsed[0])
