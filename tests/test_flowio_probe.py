"""Probes of the tableaus, the saddle test, the state form, the table I/O and ``ncsim validate``:
small cases whose answers are known by hand, each pinning one behaviour a plausible slip in
the code would change."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import error_line, invoke

from ncsim.flow.saddle import growth_rate, saddle_escapes
from ncsim.flow.tableau import Tableau
from ncsim.io import _is_missing, parquet_columns, read_table, write_table
from ncsim.validate.cli import _condition_label, _whole_as_int


def test_condition_label_is_the_architecture_with_its_width_except_resnet20():
    """A run's condition is mlp512 / cnn64 (architecture and width), but plain resnet20 (whose
    width is no parameter), as the paper's conditions name them."""
    assert _condition_label(SimpleNamespace(arch="mlp", width=512)) == "mlp512"
    assert _condition_label(SimpleNamespace(arch="cnn", width=64)) == "cnn64"
    assert _condition_label(SimpleNamespace(arch="resnet20", width=64)) == "resnet20"


def test_whole_times_print_as_integers_but_not_beyond_2_to_the_53():
    """Whole epochs become nullable integers (missing kept); flow times with a fraction, an
    infinity, or whole numbers past 2^53 (not exact as int64 from a float) stay floats."""
    whole = _whole_as_int(pd.Series([250.0, np.nan, 0.0]))
    assert str(whole.dtype) == "Int64"
    assert whole.tolist()[0] == 250 and whole.isna().tolist() == [False, True, False]
    for values in ([1.25, 2.0], [3.0, np.inf], [2.0**60, 1.0]):
        kept = _whole_as_int(pd.Series(values))
        assert kept.dtype == np.float64
        np.testing.assert_array_equal(kept.to_numpy(), values)


@pytest.mark.parametrize("nan_type", [np.float32, np.float16])
def test_parquet_text_column_keeps_a_float32_nan_missing(tmp_path, nan_type):
    """A text column whose missing value is a numpy float32 NaN (not a Python float, which
    pyarrow refused with a traceback) is written with None there, and reads back missing,
    never the text 'nan'; the frame given is left as it was."""
    frame = pd.DataFrame({"label": pd.Series(["a", nan_type("nan"), "b"], dtype=object)})
    plain = parquet_columns(frame)
    assert plain["label"].iloc[1] is None and plain["label"].iloc[0] == "a"
    assert isinstance(frame["label"].iloc[1], nan_type)
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["label"].iloc[0] == "a" and back["label"].iloc[2] == "b"
    assert pd.isna(back["label"].iloc[1])


def test_real_stability_boundary_stops_at_a_narrow_island_of_instability():
    """R(z) = 1 + alpha z + c z^2 (a two-stage tableau) with R(-s) + 1 = c (s - s0)^2 - eps:
    |R| > 1 only on an island of half-width sqrt(eps / c) ~ 0.029 around s0 = 4.05 (and again
    past alpha / c = 8.1), so the boundary is the island's left end, not 8.1."""
    s0, eps = 4.05, 1e-4
    c = (2.0 + eps) / s0**2
    alpha = 2.0 * c * s0
    tab = Tableau("island", np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, 0.0]]),
                  np.array([alpha - c, c]), np.ones((2, 1)))
    np.testing.assert_allclose(tab.stability_polynomial(), [1.0, alpha, c], rtol=1e-15)
    assert tab.real_stability_boundary() == pytest.approx(s0 - np.sqrt(eps / c), abs=1e-9)


def test_heun_real_stability_boundary_is_two():
    """Heun's method, R(z) = 1 + z + z^2 / 2: |R(-s)| <= 1 exactly for s <= 2."""
    tab = Tableau("heun", np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, 0.0]]),
                  np.array([0.5, 0.5]), np.ones((2, 1)))
    assert tab.real_stability_boundary() == pytest.approx(2.0, abs=1e-9)


def test_is_missing_knows_every_nan_and_nothing_else():
    """None, NaN of any float width, pd.NA and NaT are missing; zero, text, an empty string
    and an array (even of NaN) are values."""
    for value in (None, float("nan"), np.float64("nan"), np.float32("nan"), np.float16("nan"),
                  pd.NA, pd.NaT):
        assert _is_missing(value), value
    for value in (0.0, np.float32(0.0), "nan", "", np.array([np.nan]), np.inf):
        assert not _is_missing(value), value


def test_compare_refuses_a_step_budget_below_one_first(tmp_path):
    """``validate compare --max-steps 0`` is one error line naming the option, given before
    the run folder is even read (here it does not exist)."""
    line = error_line(invoke(["validate", "compare", "--run", str(tmp_path / "none"),
                              "--max-steps", "0"]))
    assert line == "Error: --max-steps must be >= 1, got 0"


def _linear_flow(values, p=30, seed=4):
    """The velocity y -> A y (batch rows) of a symmetric A with eigenvalues ``values``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    a = torch.as_tensor(q @ np.diag(np.resize(np.asarray(values, float), p)) @ q.T)
    return lambda y: y @ a.T


def test_growth_rate_follows_the_time_unit_of_a_slow_flow():
    """Rates are in 1 / time: the same flow run 1e8 times slower (eigenvalues 3e-11, ..., -3e-9)
    gives the largest eigenvalue 1e8 times smaller, to the same relative accuracy (the Krylov
    space ends on a relative test, not an absolute one)."""
    values = np.array([3e-3, -1e-3, -0.02, -0.1, -0.3])
    y = torch.randn(2, 30, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for scale in (1.0, 1e-8):
        rate, radius = growth_rate(_linear_flow(values * scale), y, torch.arange(2))
        np.testing.assert_allclose(rate, 3e-3 * scale, rtol=1e-7)
        np.testing.assert_allclose(radius, 0.3 * scale, rtol=1e-6)


def test_a_slow_saddle_next_to_fast_decays_still_escapes():
    """mu = 2e-7 beside decays up to 1 (ratio 2e-7, above the float64 noise 100 eps^(2/3) ~
    3.7e-9): with 1e8 time units left it grows by e^20 and escapes; with 1e6 it does not."""
    f = _linear_flow([2e-7, -0.05, -1.0])
    y = torch.randn(2, 30, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    escapes, mu = saddle_escapes(f, y, torch.arange(2), torch.tensor([1e8, 1e6],
                                                                     dtype=torch.float64))
    np.testing.assert_allclose(mu.numpy(), 2e-7, rtol=1e-4)
    assert escapes.tolist() == [True, False]
