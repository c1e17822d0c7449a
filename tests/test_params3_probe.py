"""Third mutation probe of ``ncsim.params``: exact refusals, range boundaries (count 1 and 2,
equal and reversed ends, signs, exponents, blanks), rounding of integer ranges, repeats, and
the grid's order and limit; each test pins a behaviour whose change no earlier test caught."""

from __future__ import annotations

import math
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.params import (
    MAX_RANGE_COUNT,
    NUMBERS,
    NumberList,
    distinct,
    grid,
    grid_size,
    parse_ints,
    parse_values,
)

_HINT = "write lo..hi:count, e.g. 1e-4..1e-1:16"
_NOT_A_NUMBER = "is not a number; give a value, a comma list or a log range like 1e-4..1e-1:16"
_NOT_FINITE = "is not a finite number; give a finite value"
_COUNT_RULE = f"needs lo > 0, hi > 0 and count >= 1 (at most {MAX_RANGE_COUNT})"


def _raises_exactly(message: str):
    return pytest.raises(InputError, match="^" + re.escape(message) + "$")


def _naive_geometric(lo: float, hi: float, count: int) -> list[float]:
    """lo * (hi / lo)^(i / (count - 1)): the textbook geometric sequence."""
    if count == 1:
        return [lo]
    return [lo * (hi / lo) ** (i / (count - 1)) for i in range(count)]


# ----------------------------------------------------------------------------- ranges: refusals


@pytest.mark.parametrize("text", ["1..2:3:4", "1..2:3x", "1..2:3 4", "1..2:3,4"])
def test_anything_after_the_count_makes_the_range_malformed(text):
    """The count must end the text: '1..2:3:4', '1..2:3x', '1..2:3 4' are malformed, not 3
    values with the rest ignored."""
    with _raises_exactly(f"--x: malformed range {text!r}; {_HINT}"):
        parse_values(text, "--x")
    with _raises_exactly(f"--seed: malformed range {text!r}; {_HINT}"):
        parse_ints(text, "--seed")


@pytest.mark.parametrize("text", ["1..2:+3", "1..2:-3", "1..2:1.5", "1..2:1e1", "1..2:three"])
def test_a_count_that_is_not_plain_digits_is_malformed(text):
    """The count is plain digits: a sign, a decimal point, an exponent or a word is
    malformed (not a count rule)."""
    with _raises_exactly(f"--x: malformed range {text!r}; {_HINT}"):
        parse_values(text, "--x")


@pytest.mark.parametrize("text", ["1..2..3:4", "1..2 ..3:4"])
def test_a_second_range_marker_belongs_to_hi(text):
    """lo is the shortest start: in '1..2..3:4' hi is '2..3', which is named as not a
    number (not lo = '1..2')."""
    hi = text.split("..", 1)[1].rsplit(":", 1)[0].strip()
    with _raises_exactly(f"--x: {hi!r} {_NOT_A_NUMBER}"):
        parse_values(text, "--x")


@pytest.mark.parametrize(("text", "bad"), [("1 0..2:3", "1 0"), ("1..2 0:3", "2 0"),
                                           ("1,2..3:4", "1,2"), ("a..2:0", "a"),
                                           ("1..0x10:2", "0x10")])
def test_a_bad_end_is_named_before_the_count_is_checked(text, bad):
    """An end that is no number is named (stripped) as not a number, even with a bad count
    or a comma in it: a range is not an item of a comma list."""
    with _raises_exactly(f"--x: {bad!r} {_NOT_A_NUMBER}"):
        parse_values(text, "--x")


@pytest.mark.parametrize(("text", "bad"), [("1..inf:3", "inf"), ("nan..1:2", "nan"),
                                           ("infinity..2:2", "infinity"),
                                           ("1e-3.. -inf :2", "-inf"), ("1..1e999:2", "1e999")])
def test_a_non_finite_end_is_named_exactly(text, bad):
    """inf, nan, infinity and an overflowing 1e999 as an end are refused as not finite,
    before the sign rule."""
    with _raises_exactly(f"--x: {bad!r} {_NOT_FINITE}"):
        parse_values(text, "--x")


@pytest.mark.parametrize("text", ["0..1:3", "-0..1:3", "1..-0:2", "-1..-2:2", "1..0:1",
                                  "0..0:1", "1..2:0", "1..2:00",
                                  f"1..2:{MAX_RANGE_COUNT + 1}", "1..2:99999999999999999999"])
def test_range_rule_refusals_are_exact(text):
    """Zero (also -0) or negative ends, count 0 and too large a
    count are refused with the one rule, even where count = 1 would ignore hi."""
    with _raises_exactly(f"--x: log range {text!r} {_COUNT_RULE}"):
        parse_values(text, "--x")
    with _raises_exactly(f"--seed: log range {text!r} {_COUNT_RULE}"):
        parse_ints(text, "--seed")


# ----------------------------------------------------------------------------- ranges: values


@pytest.mark.parametrize(("text", "lo", "hi", "count"), [
    ("+1..+10:2", 1.0, 10.0, 2), ("1E2..1e+3:2", 100.0, 1000.0, 2),
    ("1e-3..1e-1: 03", 1e-3, 1e-1, 3), ("\t3 ..7 : 5\n", 3.0, 7.0, 5),
    ("7..3:5", 7.0, 3.0, 5), ("1e-150..1e150:3", 1e-150, 1e150, 3), ("2..2:3", 2.0, 2.0, 3),
    ("0.1..0.1:2", 0.1, 0.1, 2), ("5..1e-9:1", 5.0, 1e-9, 1), ("1..1e300:7", 1.0, 1e300, 7),
])
def test_log_range_is_the_geometric_sequence_with_exact_ends(text, lo, hi, count):
    """Signs, exponents, blanks and leading zeros in the count are read; the values match the
    naive lo * (hi/lo)^(i/(n-1)) to 1e-12 and the first and last are lo and hi exactly."""
    values = parse_values(text, "--x")
    assert len(values) == count and all(type(v) is float for v in values)
    assert values == pytest.approx(_naive_geometric(lo, hi, count), rel=1e-12, abs=0)
    assert values[0] == lo
    assert values[-1] == (hi if count > 1 else lo)


def test_equal_ends_repeat_in_parse_values_and_count_once_in_the_types():
    """lo == hi gives count equal values from parse_values; NUMBERS and an integer range keep
    one."""
    assert parse_values("2.5..2.5:4") == [2.5] * 4
    assert NUMBERS.convert("2.5..2.5:4", None, None) == [2.5]
    assert parse_ints("3..3:4") == [3]
    assert parse_ints("3..3:4", unique=False) == [3, 3, 3, 3]


@pytest.mark.parametrize("text", ["1..6.25:3", "0.5..2:3", "1..3:5", "1..100:4", "10..1:4",
                                  "1..1000:9", "1e-3..1:2"])
def test_integer_range_is_pythons_round_of_each_value(text):
    """An integer range is round() of each geometric value (ties to even: 1..6.25:3 has the
    exact middle 2.5, giving 2; 0.5 gives 0), repeats kept only with unique=False."""
    values = parse_values(text)
    rounded = [round(v) for v in values]
    assert parse_ints(text, unique=False) == rounded
    assert parse_ints(text) == list(dict.fromkeys(rounded))
    assert all(type(v) is int for v in parse_ints(text))


def test_integer_range_ties_and_repeats_spelled_out():
    """1..6.25:3 is 1, 2.5, 6.25 -> 1, 2, 6; 1..3:5 is 1, 1.32, 1.73, 2.28, 3 -> 1, 1, 2, 2, 3
    (unique: 1, 2, 3)."""
    assert parse_values("1..6.25:3") == [1.0, 2.5, 6.25]
    assert parse_ints("1..6.25:3") == [1, 2, 6]
    assert parse_ints("1..3:5", unique=False) == [1, 1, 2, 2, 3]
    assert parse_ints("1..3:5") == [1, 2, 3]


# ----------------------------------------------------------------------------- integers


@pytest.mark.parametrize(("given", "want"), [(3.0, [3]), (-2.0, [-2]), (" 12 ", [12]),
                                             ("+5", [5]), ("-0", [0]), ("1e3,1.0", [1000, 1]),
                                             (np.float64(4.0), [4])])
def test_whole_numbers_in_any_spelling_are_integers(given, want):
    """A whole float (given as a number or text, with blanks or a sign) is read as an int."""
    got = parse_ints(given, "--seed")
    assert got == want and all(type(v) is int for v in got)


@pytest.mark.parametrize(("given", "shown"), [(3.5, "3.5"), ("2,-0.25", "-0.25"),
                                              ("1e-1", "0.1")])
def test_a_fraction_is_refused_naming_the_number_read(given, shown):
    """A non-whole number is refused naming the float read (0.1 for '1e-1')."""
    with _raises_exactly(f"--seed: {shown} is not an integer; give whole numbers"):
        parse_ints(given, "--seed")


@pytest.mark.parametrize(("text", "shown"), [("1e30", str(10**30)), ("-1e19", "-" + str(10**19)),
                                             (str(-(2**63)), str(-(2**63)))])
def test_an_integer_beyond_int64_names_the_integer_read(text, shown):
    """A float spelling too large is refused naming the integer it spells, exactly."""
    with _raises_exactly(f"--seed: {shown} is out of range; give integers of magnitude below "
                         "2^63 (9223372036854775808)"):
        parse_ints(text, "--seed")


@pytest.mark.parametrize(("text", "shown"), [("inf", "inf"), ("1, nan", "nan"), ("0x10", None)])
def test_integer_refusals_reuse_the_number_messages(text, shown):
    """inf and nan are not finite; '0x10' is not a number (no base prefixes)."""
    if shown is None:
        message = f"--seed: '0x10' {_NOT_A_NUMBER}"
    else:
        message = f"--seed: {shown!r} {_NOT_FINITE}"
    with _raises_exactly(message):
        parse_ints(text, "--seed")


# ----------------------------------------------------------------------------- repeats


def test_distinct_keeps_the_first_spelling_of_equal_values():
    """Equal values (1, 1.0, True; 0.0, -0.0) count once, as the first one given."""
    got = distinct([2.0, 1, 1.0, True, 2, -0.0, 0.0])
    assert got == [2.0, 1, -0.0]
    assert [type(v) for v in got] == [float, int, float]
    assert math.copysign(1.0, got[2]) == -1.0
    assert distinct(()) == [] and type(distinct((3, 3))) is list


def test_a_float_type_that_keeps_repeats_keeps_them():
    """NumberList(unique=False) returns a float list as given; the default drops repeats."""
    assert NumberList(unique=False).convert("1,1e0,2,1", None, None) == [1.0, 1.0, 2.0, 1.0]
    assert NumberList().convert("1,1e0,2,1", None, None) == [1.0, 2.0]


def test_a_two_name_option_is_named_once_by_click():
    """An option with a short and a long name: the message is click's, the names not repeated
    as a prefix ('-K/--classes: ')."""

    @click.command()
    @click.option("-K", "--classes", type=NumberList(integer=True))
    def cmd(classes):
        click.echo(repr(classes))

    result = CliRunner().invoke(cmd, ["-K", "2,x"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last == f"Error: Invalid value for '-K' / '--classes': 'x' {_NOT_A_NUMBER}"


# ----------------------------------------------------------------------------- grid


def test_grid_is_the_nested_loop_product_last_axis_fastest():
    """Three axes give the nested-loop order (first axis slowest), each axis in its given
    order, every point a dict with the axes in order."""
    axes = {"c": [3, 1], "a": ["x"], "b": [2.0, 0.5, 1.0]}
    want = [{"c": c, "a": a, "b": b} for c in axes["c"] for a in axes["a"] for b in axes["b"]]
    got = grid(axes)
    assert got == want and [list(p) for p in got] == [["c", "a", "b"]] * 6


def test_empty_grids():
    """No axes: one empty point (size 1); an empty axis: no point (size 0), within any limit
    >= 0."""
    assert grid({}) == [{}] and grid_size({}) == 1
    assert grid({"a": [1, 2], "b": []}, limit=0) == [] and grid_size({"a": [1], "b": []}) == 0


@pytest.mark.parametrize("limit", [4, 5, 100])
def test_a_grid_up_to_the_limit_is_built(limit):
    """2 x 1 x 2 = 4 points pass any limit >= 4."""
    assert len(grid({"a": [1, 2], "b": [3], "c": [4, 5]}, limit=limit)) == 4


@pytest.mark.parametrize("limit", [3, 1, -1])
def test_a_grid_over_the_limit_names_only_the_varying_axes(limit):
    """4 points over a limit < 4: the message counts the points and lists the axes of more
    than one value, in order, joined by ' x '."""
    with _raises_exactly(f"the grid has 4 points (2 a x 2 c); at most {limit} in one call: "
                         "give fewer values or split the grid"):
        grid({"a": [1, 2], "b": [3], "c": [4, 5]}, limit=limit)


# ----------------------------------------------------------------------------- known bug


def test_a_count_of_thousands_of_digits_is_refused_by_the_count_rule():
    """A count of 5000 digits is far above the maximum: refused by the count rule."""
    text = "1..2:" + "9" * 5000
    with pytest.raises(InputError, match=re.escape(_COUNT_RULE)):
        parse_values(text, "--x")
    with pytest.raises(InputError, match=re.escape(_COUNT_RULE)):
        parse_ints(text, "--seed")


@pytest.mark.parametrize(("digits", "values"), [
    ("0000003", [1.0, 2.0 ** 0.5, 2.0]), ("0" * 30 + "1", [1.0]),
    ("00" + str(MAX_RANGE_COUNT + 1), None), ("1" + "0" * 7, None)])
def test_a_count_is_read_by_its_significant_digits(digits, values):
    """Leading zeros do not count toward the count's size: '0000003' is 3 and 30 zeros then
    1 is 1; MAX + 1 behind zeros and 10^7 (eight digits) are refused by the count rule."""
    text = f"1..2:{digits}"
    if values is None:
        with pytest.raises(InputError, match=re.escape(_COUNT_RULE)):
            parse_values(text, "--x")
    else:
        assert parse_values(text, "--x") == pytest.approx(values, rel=1e-15)


@pytest.mark.parametrize(("text", "shown"), [
    ("9" * 5000, "9" * 20 + "... (5000 digits)"),
    ("-" + "0" * 3 + "1" * 4400, "-" + "1" * 20 + "... (4400 digits)"),
    ("+" + "0" * 10 + "1" * 20, "1" * 20), ("-" + "9" * 40, "-" + "9" * 40),
    ("1" + "0" * 19, "1" + "0" * 19)])
def test_a_whole_number_of_many_digits_is_out_of_range(text, shown):
    """A whole number with more digits than 2^63 is out of range whatever its length (not
    'not a finite number' through float, and no int() digit-limit error); it is shown by its
    sign and digits, past 40 digits by its first 20 digits and their count."""
    with _raises_exactly(f"--seed: {shown} is out of range; give integers of magnitude below "
                         "2^63 (9223372036854775808)"):
        parse_ints(text, "--seed")


@pytest.mark.parametrize("text", ["0" * 30 + "12", "+" + "0" * 25 + str(2**63 - 1),
                                  "-" + "0" * 25 + str(2**63 - 1)])
def test_leading_zeros_do_not_make_a_number_out_of_range(text):
    """Zeros before the first digit do not count: '000...012' is 12 and 2^63 - 1 behind
    zeros, either sign, is in range."""
    assert parse_ints(text, "--seed") == [int(text)]


def test_an_underflowing_end_is_refused_as_underflowing():
    """'1e-400' as a range end underflows to 0: refused saying so, not read as 0."""
    with pytest.raises(InputError, match="'1e-400' underflows to 0"):
        parse_values("1e-400..1:2", "--x")
