"""Mutation probe of the low-level modules: params, tableau, theory.deep (new strict pins)."""

import click
import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.flow.tableau import Tableau, tableau
from ncsim.params import COUNTS, INT_LIMIT, INTEGERS, NUMBERS, parse_ints, parse_values
from ncsim.theory import deep
from ncsim.theory import symbols as S

# Tsitouras 5(4) (Ch. Tsitouras, Comput. Math. Appl. 62 (2011) 770-775) to double precision,
# as common ODE libraries carry it (e.g. OrdinaryDiffEq.jl); btilde = b - bhat
_TSIT5_C = [0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1]
_TSIT5_A = {
    1: [0.161],
    2: [-0.008480655492356989, 0.335480655492357],
    3: [2.897153057105493, -6.359448489975075, 4.3622954328695815],
    4: [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
    5: [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
        -0.028269050394068383],
}
_TSIT5_B = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
            -3.290069515436081, 2.324710524099774, 0.0]
_TSIT5_BTILDE = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995,
                 -0.1447110071732629, 0.5823571654525552, -0.45808210592918697,
                 0.015151515151515152]


def test_tsit5_coefficients_are_the_published_values():
    """Every tsit5 node, stage coefficient and solution weight is the published value to
    1e-15 relative (a41 is stored one ulp apart from that literal)."""
    tab = tableau("tsit5")
    assert tab.c.tolist() == _TSIT5_C
    for i, row in _TSIT5_A.items():
        np.testing.assert_allclose(tab.a[i, :i], row, rtol=1e-15, atol=0, err_msg=str(i))
        assert not tab.a[i, i:].any()
    assert tab.a[6, :6].tolist() == _TSIT5_B[:6]
    assert tab.b.tolist() == _TSIT5_B


def test_tsit5_error_weights_are_minus_the_published_btilde():
    """tsit5's e (local error = h sum e_i k_i, sign as dopri5's) is -btilde to 1e-15 relative."""
    np.testing.assert_allclose(tableau("tsit5").e, -np.array(_TSIT5_BTILDE), rtol=1e-15, atol=0)


def test_stability_boundary_is_infinite_for_a_method_that_never_leaves_the_unit_disc():
    """|R(-s)| <= 1 everywhere (b = 0, R = 1): the boundary is inf, not the grid's end."""
    tab = Tableau("still", np.zeros(1), np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)))
    assert tab.real_stability_boundary() == float("inf")


def test_unknown_method_names_the_allowed_ones():
    """tableau() refuses an unknown method and lists the four allowed ones in order."""
    with pytest.raises(ValueError, match=r"unknown method 'rk45'; allowed: gd, rk4, dopri5, tsit5"):
        tableau("rk45")


@pytest.mark.parametrize("text", ["0..1:3", "1..0:3", "-1..1:3"])
def test_log_range_refuses_a_zero_or_negative_end(text):
    """A log range needs lo > 0 and hi > 0 (0 would give a NaN/0 geometric grid)."""
    with pytest.raises(InputError, match=r"needs lo > 0, hi > 0"):
        parse_values(text, "--x")


def test_integers_of_magnitude_two_to_the_63_are_refused_and_one_less_accepted():
    """int64 range: +-(2^63 - 1) pass exactly, +-2^63 are out of range."""
    assert parse_ints(str(INT_LIMIT - 1)) == [INT_LIMIT - 1]
    assert parse_ints(str(-(INT_LIMIT - 1))) == [-(INT_LIMIT - 1)]
    for text in (str(INT_LIMIT), str(-INT_LIMIT)):
        with pytest.raises(InputError, match=r"out of range"):
            parse_ints(text, "--seed")
    with pytest.raises(InputError, match=r"out of range"):
        parse_ints(INT_LIMIT, "--seed")


@pytest.mark.parametrize("text", ["inf", "-inf", "1,inf", "nan"])
def test_non_finite_numbers_are_refused(text):
    """inf and nan are not option values (only finite numbers)."""
    with pytest.raises(InputError, match=r"is not a finite number"):
        parse_values(text, "--x")


@pytest.mark.parametrize("text", ["1,,2", "1,", ",1", " , "])
def test_empty_items_of_an_integer_list_are_refused(text):
    """parse_ints refuses an empty item of a comma list (as parse_values does)."""
    with pytest.raises(InputError, match=r"empty value"):
        parse_ints(text, "--seed")
    with pytest.raises(InputError, match=r"empty value"):
        parse_values(text, "--x")


def test_click_types_drop_repeats_unless_counts():
    """NUMBERS and INTEGERS drop repeated values (keeping order); COUNTS keeps them."""
    assert NUMBERS.convert("2,1,2,1e0", None, None) == [2.0, 1.0]
    assert INTEGERS.convert("3,3,1", None, None) == [3, 1]
    assert COUNTS.convert("3,3,1", None, None) == [3, 3, 1]


def test_click_error_names_the_option_once():
    """A bad value's message is click's 'Invalid value for --lam' without a second '--lam:'."""

    @click.command()
    @click.option("--lam", type=NUMBERS)
    def cmd(lam):
        click.echo(lam)

    result = CliRunner().invoke(cmd, ["--lam", "abc"])
    assert result.exit_code == 2
    assert "'abc' is not a number" in result.output
    assert "--lam: " not in result.output


def test_invert_for_s_refuses_a_root_that_is_negative_at_the_probe():
    """Lambda = (s + 2)^2 has the one root sqrt(Lambda) - 2, real but negative at the probe
    (Lambda = 1/20): it is no threshold, so the inversion refuses it."""
    with pytest.raises(RuntimeError, match=r"expected one real positive root"):
        deep._invert_for_s((S.s + 2) ** 2)


def test_invert_for_s_keeps_the_positive_root():
    """Lambda = s^2 / N gives s = sqrt(N Lambda) (sympy's positive s drops -sqrt)."""
    root = deep._invert_for_s(S.s**2 / deep.N_sym)
    assert sp.simplify(root - sp.sqrt(deep.N_sym * S.Lam)) == 0


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_python_numbers_are_refused_too(value):
    """A float given directly (a spec file's number) is checked like text: finite only."""
    with pytest.raises(InputError, match=r"is not a finite number"):
        parse_values(value, "--x")
    assert parse_values(3, "--x") == [3.0]


def test_a_boolean_is_not_an_integer_value():
    """parse_ints(True) is refused (bool is an int subclass, but no seed or count)."""
    with pytest.raises(InputError, match=r"'True' is not a number"):
        parse_ints(True, "--seed")
    assert parse_ints(7, "--seed") == [7]
