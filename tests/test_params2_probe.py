"""Second mutation probe of ``ncsim.params`` (option values, ranges, grids) and
``ncsim.flow.tableau`` (Butcher tableaus, stability boundary): each test pins a behaviour whose
change no earlier test caught."""

from __future__ import annotations

import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.flow.tableau import Tableau, tableau
from ncsim.params import INTEGERS, NUMBERS, grid, parse_ints, parse_values

_HINT = "write lo..hi:count, e.g. 1e-4..1e-1:16"
_NOT_A_NUMBER = "is not a number; give a value, a comma list or a log range like 1e-4..1e-1:16"
_OUT_OF_RANGE = "is out of range; give integers of magnitude below 2^63 (9223372036854775808)"


def _raises_exactly(message: str):
    return pytest.raises(InputError, match="^" + re.escape(message) + "$")


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize("text", ["1..2:", " 1..2: ", "\t1..2:\n"])
def test_a_range_without_a_count_is_malformed_and_named_stripped(text):
    """'lo..hi:' (no count digits) is a malformed range, named without surrounding blanks."""
    with _raises_exactly(f"--x: malformed range '1..2:'; {_HINT}"):
        parse_values(text, "--x")


@pytest.mark.parametrize("text", [":1..2:3", ".a..2:3"])
def test_lo_must_start_like_a_number_or_the_range_is_malformed(text):
    """lo may not start with ':' or a '.' not followed by a digit: the whole range is
    malformed (not a bad number)."""
    with _raises_exactly(f"--x: malformed range {text!r}; {_HINT}"):
        parse_values(text, "--x")


def test_a_bad_list_item_is_named_without_its_blanks():
    """In '1, abc ' the bad item is quoted as 'abc' (stripped), not ' abc '."""
    with _raises_exactly(f"--x: 'abc' {_NOT_A_NUMBER}"):
        parse_values("1, abc ", "--x")


@pytest.mark.parametrize(("text", "shown"),
                         [("1, ,2", "1, ,2"), (" 1, ,2 ", "1, ,2"), ("1,\t,2", "1,\\t,2")])
def test_a_blank_item_is_an_empty_value_not_a_bad_number(text, shown):
    """An item of only blanks is an empty value (message quotes the stripped text)."""
    with _raises_exactly(f"--x: empty value in '{shown}'"):
        parse_values(text, "--x")
    with pytest.raises(InputError, match=r"^--seed: empty value in "):
        parse_ints(text, "--seed")


@pytest.mark.parametrize("text", ["1e-3..1:4", "1,2.5", "0.5"])
def test_parsed_values_are_python_floats(text):
    """Every value is a plain Python float (not numpy.float64), ranges included."""
    values = parse_values(text)
    assert values and all(type(v) is float for v in values)


def test_parsed_python_number_is_a_python_float():
    """A number given directly (int or numpy float) comes back as a plain float."""
    assert [type(v) for v in parse_values(np.float64(0.25))] == [float]
    assert [type(v) for v in parse_values(4)] == [float]


@pytest.mark.parametrize("text", ["1..1e19:2", "1e19..1:2"])
def test_an_integer_range_beyond_int64_is_refused(text):
    """A rounded range value of magnitude >= 2^63 is refused with the int64 rule."""
    with _raises_exactly(f"--seed: 10000000000000000000 {_OUT_OF_RANGE}"):
        parse_ints(text, "--seed")


def test_out_of_range_message_is_exact():
    """A too large integer is refused naming it and 2^63 in digits."""
    with _raises_exactly(f"--seed: {2**63} {_OUT_OF_RANGE}"):
        parse_ints(str(2**63), "--seed")


def test_a_zero_limit_refuses_every_grid():
    """limit = 0 is a limit (not 'no limit'): a one-point grid exceeds it."""
    with pytest.raises(InputError, match=r"^the grid has 1 points \(\); at most 0 in one call"):
        grid({"a": [1.0]}, limit=0)
    assert grid({"a": [1.0]}, limit=None) == [{"a": 1.0}]


def _cmd():
    @click.command()
    @click.option("-K", "--classes", type=INTEGERS)
    @click.option("--lam", type=NUMBERS)
    def cmd(classes, lam):
        click.echo(repr((classes, lam)))

    return cmd


def test_click_help_shows_the_numbers_metavar():
    """The type's name gives the help metavar NUMBERS."""
    out = CliRunner().invoke(_cmd(), ["--help"]).output
    assert "-K, --classes NUMBERS" in out and "--lam NUMBERS" in out


# ----------------------------------------------------------------------------- tableau


def _polynomial(tab: Tableau) -> np.polynomial.Polynomial:
    return np.polynomial.Polynomial(tab.stability_polynomial())


@pytest.mark.parametrize("method", ["gd", "rk4", "dopri5", "tsit5"])
def test_stability_boundary_is_the_last_point_within_the_slack(method):
    """|R(-x)| <= 1 + 1e-12 at the returned x, and > 1 + 1e-12 at x + 1e-11 (the stable end
    of the bisection, to 1e-11)."""
    tab = tableau(method)
    x = tab.real_stability_boundary()
    assert type(x) is float
    poly = _polynomial(tab)
    assert abs(poly(-x)) <= 1 + 1e-12
    assert abs(poly(-(x + 1e-11))) > 1 + 1e-12


def test_euler_boundary_is_two_plus_the_documented_slack():
    """Euler: |1 - x| <= 1 + 1e-12 up to x = 2 + 1e-12, so the boundary is 2 + 9.3e-13."""
    x = tableau("gd").real_stability_boundary()
    assert 2.0 + 9e-13 < x <= 2.0 + 1e-12


def test_a_boundary_far_beyond_the_classic_methods_is_found():
    """R(z) = 1 + z / 20 is stable up to x = 40 (the grid reaches 100, not 10)."""
    tab = Tableau("slow", np.zeros(1), np.zeros((1, 1)), np.array([0.05]), np.ones((1, 1)))
    assert tab.real_stability_boundary() == pytest.approx(40.0, abs=1e-9)


def _tangent(eps: float) -> Tableau:
    """R(-s) + 1 = c (s - s0)^2 - eps, s0 = 4.05 a grid point: |R| exceeds 1 by eps at s0."""
    s0 = float(np.arange(0.0, 100.0, 1e-3)[4050])
    c = (2.0 + eps) / s0**2
    alpha = 2.0 * c * s0
    return Tableau("tangent", np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, 0.0]]),
                   np.array([alpha - c, c]), np.ones((2, 1)))


def test_an_excess_within_the_rounding_slack_on_a_grid_point_is_stable():
    """|R| = 1 + 5e-13 at s0 = 4.05 (inside the 1e-12 slack) does not stop the scan: the
    boundary is the far crossing 2 s0 = 8.1; an excess of 5e-12 stops it just below s0."""
    assert _tangent(5e-13).real_stability_boundary() == pytest.approx(8.1, abs=1e-9)
    assert 4.0499 < _tangent(5e-12).real_stability_boundary() < 4.05


@pytest.mark.parametrize("method", ["gd", "rk4", "dopri5", "tsit5"])
def test_dense_weights_take_a_scalar_or_any_shape_as_a_flat_list(method):
    """dense_weights(0.5) is one row (1, S); a (2, 2) theta is read as 4 thetas in C order."""
    tab = tableau(method)
    one = tab.dense_weights(0.5)
    assert one.shape == (1, tab.stages) and one.dtype == np.float64
    np.testing.assert_array_equal(one, tab.dense_weights([0.5]))
    theta = np.array([[0.25, 0.5], [0.75, 1.0]])
    many = tab.dense_weights(theta)
    assert many.shape == (4, tab.stages)
    np.testing.assert_array_equal(many, tab.dense_weights([0.25, 0.5, 0.75, 1.0]))


def test_tableau_field_defaults():
    """A Tableau given only c, a, b, p has no error weights, order 1 and no FSAL."""
    tab = Tableau("x", np.zeros(1), np.zeros((1, 1)), np.ones(1), np.ones((1, 1)))
    assert tab.e is None and tab.order == 1 and tab.fsal is False and tab.stages == 1


@pytest.mark.parametrize(("method", "stages", "degree"),
                         [("gd", 1, 1), ("rk4", 4, 3), ("dopri5", 7, 4), ("tsit5", 7, 4)])
def test_array_shapes_and_dense_degree(method, stages, degree):
    """c, b, e are (S,), a is (S, S), p is (S, D) with D the interpolant's degree (no zero
    columns), all float64."""
    tab = tableau(method)
    assert tab.stages == stages
    assert tab.c.shape == tab.b.shape == (stages,) and tab.a.shape == (stages, stages)
    assert tab.p.shape == (stages, degree)
    assert np.abs(tab.p[:, -1]).max() > 0
    arrays = [tab.c, tab.a, tab.b, tab.p] + ([] if tab.e is None else [tab.e])
    assert all(x.dtype == np.float64 for x in arrays)
    if tab.e is not None:
        assert tab.e.shape == (stages,)


def test_tableau_is_built_once_per_method():
    """tableau() caches: the same object for the same method (tsit5's sympy expansion runs
    once)."""
    assert tableau("tsit5") is tableau("tsit5")
    assert tableau("dopri5") is tableau("dopri5")


def test_tsit5_error_weights_are_exactly_the_stored_literals():
    """tsit5's e is exactly -btilde of Tsitouras' pair as the decimal literals (no digit
    dropped), with e_7 = -1/66."""
    want = [0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
            0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66]
    assert tableau("tsit5").e.tolist() == want
