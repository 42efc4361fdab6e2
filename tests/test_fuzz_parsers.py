"""Property-based fuzzing of the --lengths and --depths parsers (diffbench.lengths).

Whatever the text, the parsers either return what they promise (lengths: whole token counts in
1..MAX_LENGTH, ascending, without repeats, at most MAX_GRID of them; depths: finite percentages in
0..100, ascending, without repeats) or raise ``UsageError`` with a one-line message naming the
option; never any other exception. Near-valid text is generated from the grammar together with the
value it must parse to (or the knowledge that it must be refused), so valid input is also checked
for the right answer, not only for a well-formed one.

Hypothesis runs derandomized, without an example database and with fixed example counts, so every
run (and CI) checks the same inputs; ``EXAMPLES`` below adds up to the cases run per session.
"""

from __future__ import annotations

import itertools
import math
import string
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffbench.errors import UsageError
from diffbench.lengths import MAX_GRID, MAX_LENGTH, parse_depths, parse_lengths

EXAMPLES = {
    "lengths_any_text": 1000,
    "lengths_grammar_text": 500,
    "lengths_valid_grids": 300,
    "lengths_unicode_digits": 200,
    "depths_any_text": 1000,
    "depths_grammar_text": 500,
    "depths_valid_grids": 300,
    "depths_unicode_digits": 200,
}
ran: Counter[str] = Counter()


def fuzz(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Deterministic settings with this test's example count; every example run is counted."""
    return settings(
        max_examples=EXAMPLES[name],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ----------------------------------------------------------------------------- what the parsers promise

MULTIPLIER = {"": 1, "k": 1024, "K": 1024, "m": 1024 * 1024, "M": 1024 * 1024}


def one_line_usage_error(error: UsageError, option: str) -> None:
    message = str(error)
    assert message and message.strip() == message, repr(message)
    assert len(message.splitlines()) == 1, f"a multi-line message: {message!r}"
    assert option in message, f"the message does not name {option}: {message!r}"


def lengths_or_usage_error(text: str) -> list[int] | None:
    """parse_lengths(text) checked against its promises; None when it (correctly) refused the text."""
    try:
        values = parse_lengths(text)
    except UsageError as error:
        one_line_usage_error(error, "length")
        return None
    assert values, text
    assert all(type(v) is int and 1 <= v <= MAX_LENGTH for v in values), (text, values)
    assert all(a < b for a, b in itertools.pairwise(values)), (text, values)
    assert len(values) <= MAX_GRID, (text, len(values))
    return values


def depths_or_usage_error(text: str) -> list[float] | None:
    try:
        values = parse_depths(text)
    except UsageError as error:
        one_line_usage_error(error, "depth")
        return None
    assert values, text
    assert all(type(v) is float and math.isfinite(v) and 0.0 <= v <= 100.0 for v in values), (text, values)
    assert all(math.copysign(1.0, v) > 0 for v in values), f"a negative zero from {text!r}: {values}"
    assert all(a < b for a, b in itertools.pairwise(values)), (text, values)
    return values


# ----------------------------------------------------------------------------- arbitrary text

GRAMMAR_CHARACTERS = string.digits + "kKmM.,:-% \t" + "xe+_"
anything = st.one_of(
    st.text(max_size=40),  # any unicode, surrogates excluded
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40),
    st.text(alphabet=GRAMMAR_CHARACTERS, max_size=30),
    st.binary(max_size=30).map(lambda raw: raw.decode("latin-1")),
)


@fuzz("lengths_any_text")
@given(anything)
@example("")
@example(" \n ")
@example("9" * 400)
@example("1:" + "9" * 30 + ":1")
@example("1-" + "9" * 30)
@example("nan")
@example("infk")
@example("1e3")
@example("[/x]")
@example("\x00")
@example("1k\n2k")
def test_lengths_from_any_text(text: str) -> None:
    ran["lengths_any_text"] += 1
    lengths_or_usage_error(text)


@fuzz("depths_any_text")
@given(anything)
@example("")
@example("-0%")
@example("0,-0")
@example("nan%")
@example("inf,1")
@example("1e400%")
@example("²")
@example("5" * 400)
@example("1_0,50")
@example("%")
@example(",")
def test_depths_from_any_text(text: str) -> None:
    ran["depths_any_text"] += 1
    depths_or_usage_error(text)


# ----------------------------------------------------------------------------- near-valid text

SPACE = st.sampled_from(["", "", "", " ", "  ", "\t"])
# Fractional digits whose value times a power of two is exact in binary floating point, so whether
# "1.5k" is a whole number of tokens has one right answer.
EXACT_FRACTIONS = ["0", "5", "25", "75", "125", "375", "0625", "5625"]


@st.composite
def token_count(draw: st.DrawFn) -> tuple[str, int | None]:
    """One length: its text and the token count it stands for (None: it must be refused)."""
    kind = draw(st.sampled_from(["int", "int", "big", "decimal", "negative", "junk"]))
    unit = draw(st.sampled_from(list(MULTIPLIER)))
    if kind == "int":
        number = draw(st.integers(min_value=0, max_value=5000))
        digits, value = str(number), Fraction(number)
    elif kind == "big":
        number = draw(st.integers(min_value=0, max_value=10**30))
        digits, value = str(number), Fraction(number)
    elif kind == "decimal":
        whole = draw(st.integers(min_value=0, max_value=300))
        fraction = draw(st.sampled_from(EXACT_FRACTIONS))
        digits, value = f"{whole}.{fraction}", Fraction(f"{whole}.{fraction}")
    elif kind == "negative":
        number = draw(st.integers(min_value=1, max_value=5000))
        return f"-{number}{unit}", None
    else:
        junk = draw(st.sampled_from(["", "x", "1e3", "k", "1.", ".5", "1..2", "+1", "0x10", "1 2"]))
        return junk + unit, None
    tokens = value * MULTIPLIER[unit]
    valid = tokens.denominator == 1 and 1 <= tokens <= MAX_LENGTH
    text = f"{draw(SPACE)}{digits}{draw(SPACE)}{unit}{draw(SPACE)}"
    return text, int(tokens) if valid else None


def doubling(start: int, stop: int) -> list[int]:
    values, value = [], start
    while value <= stop:
        values.append(value)
        value *= 2
    if values[-1] != stop:
        values.append(stop)
    return values


@st.composite
def length_grid(draw: st.DrawFn) -> tuple[str, Any]:
    """A --lengths value from the grammar (list, doubling range, linear range) and its parse."""
    form = draw(st.sampled_from(["list", "list", "doubling", "linear", "broken"]))
    if form == "list":
        items = draw(st.lists(token_count(), min_size=1, max_size=8))
        text = ",".join(t for t, _ in items)
        values = [v for _, v in items]
        if "-" in text or any(v is None for v in values):
            return text, None  # a '-' makes it a range; a bad item spoils the list
        return text, sorted(set(v for v in values if v is not None))
    if form == "doubling":
        (a, start), (b, stop) = draw(token_count()), draw(token_count())
        text = f"{a}-{b}"
        if start is None or stop is None or stop < start or "-" in a + b:
            return text, None
        return text, doubling(start, stop)
    if form == "linear":
        (a, start), (b, stop), (c, step) = draw(token_count()), draw(token_count()), draw(token_count())
        text = f"{a}:{b}:{c}"
        if start is None or stop is None or step is None or stop < start:
            return text, None
        values = list(range(start, stop + 1, step))
        return text, values if len(values) <= MAX_GRID else None
    parts = draw(st.lists(token_count(), min_size=1, max_size=4))
    separators = draw(st.lists(st.sampled_from([",", "-", ":", ",,", "--", "::", ":-", " "]), min_size=3))
    text = "".join(t + s for (t, _), s in zip(parts, separators, strict=False))
    return text, "unknown"


@fuzz("lengths_grammar_text")
@given(length_grid())
def test_lengths_from_grammar_text_parse_to_the_right_grid(case: tuple[str, Any]) -> None:
    ran["lengths_grammar_text"] += 1
    text, expected = case
    values = lengths_or_usage_error(text)
    if expected == "unknown":
        return
    assert values == expected, (text, values, expected)


@st.composite
def valid_count(draw: st.DrawFn, low: int = 1, high: int = MAX_LENGTH) -> tuple[str, int]:
    """A valid length in [low, high], written plainly or with a k/K/m/M unit where it divides."""
    tokens = draw(st.integers(min_value=low, max_value=high))
    spellings = [str(tokens)]
    if tokens % 512 == 0:
        spellings += [f"{tokens / 1024:g}k", f"{tokens / 1024:g}K"]
    if tokens % 2**19 == 0:
        spellings += [f"{tokens / 2**20:g}m", f"{tokens / 2**20:g}M"]
    return f"{draw(SPACE)}{draw(st.sampled_from(spellings))}{draw(SPACE)}", tokens


@st.composite
def valid_length_grid(draw: st.DrawFn) -> tuple[str, list[int]]:
    """Only valid --lengths values, built from the grammar, so none may be refused."""
    form = draw(st.sampled_from(["list", "doubling", "linear"]))
    if form == "list":
        items = draw(st.lists(valid_count(), min_size=1, max_size=8))
        return ",".join(t for t, _ in items), sorted({v for _, v in items})
    a, start = draw(valid_count())
    b, stop = draw(valid_count(low=start))
    if form == "doubling":
        return f"{a}-{b}", doubling(start, stop)
    c, step = draw(valid_count(low=(stop - start) // MAX_GRID + 1))
    return f"{a}:{b}:{c}", list(range(start, stop + 1, step))


@fuzz("lengths_valid_grids")
@given(valid_length_grid())
def test_valid_lengths_always_parse(case: tuple[str, list[int]]) -> None:
    ran["lengths_valid_grids"] += 1
    text, expected = case
    assert lengths_or_usage_error(text) == expected, text


@st.composite
def depth_grid(draw: st.DrawFn) -> tuple[str, Any]:
    """A --depths value: a count, or a list of percentages (with '%', decimals, spaces), and its parse."""
    if draw(st.booleans()):
        count = draw(st.integers(min_value=0, max_value=150))
        text = f"{draw(SPACE)}{count}{draw(SPACE)}"
        if not 1 <= count <= 101:
            return text, None
        return text, [50.0] if count == 1 else [round(100.0 * i / (count - 1), 6) for i in range(count)]
    items = draw(
        st.lists(
            st.one_of(
                st.integers(min_value=-20, max_value=130).map(str),
                st.tuples(st.integers(min_value=0, max_value=120), st.sampled_from(EXACT_FRACTIONS)).map(
                    lambda p: f"{p[0]}.{p[1]}"
                ),
                st.sampled_from(["x", "", "nan", "inf", "1e1", "-0", "+5", "5 5"]),
            ),
            min_size=1,
            max_size=6,
        )
    )
    percent = draw(st.booleans())
    texts = [f"{draw(SPACE)}{item}{'%' if percent else ''}{draw(SPACE)}" for item in items]
    text = ",".join(texts)
    if len(items) == 1 and not percent and "." not in items[0]:
        return text, "unknown"  # one item without '%' or '.' is a count, covered above
    try:
        numbers = [float(item) for item in items]
    except ValueError:
        return text, None
    if not all(0.0 <= n <= 100.0 for n in numbers):
        return text, None
    return text, sorted({n + 0.0 for n in numbers})


@fuzz("depths_grammar_text")
@given(depth_grid())
def test_depths_from_grammar_text_parse_to_the_right_grid(case: tuple[str, Any]) -> None:
    ran["depths_grammar_text"] += 1
    text, expected = case
    values = depths_or_usage_error(text)
    if expected == "unknown":
        return
    assert values == expected, (text, values, expected)


@st.composite
def valid_depth_grid(draw: st.DrawFn) -> tuple[str, list[float]]:
    """Only valid --depths values: a count in 1..101, or percentages with '%' or a decimal point."""
    if draw(st.booleans()):
        count = draw(st.integers(min_value=1, max_value=101))
        expected = [50.0] if count == 1 else [round(100.0 * i / (count - 1), 6) for i in range(count)]
        return f"{draw(SPACE)}{count}{draw(SPACE)}", expected
    quarters = draw(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=8))
    values = [q / 4 for q in quarters]
    texts = [f"{draw(SPACE)}{v:g}{draw(st.sampled_from(['%', '%', '']))}{draw(SPACE)}" for v in values]
    if len(texts) == 1 and "%" not in texts[0] and "." not in texts[0]:
        texts[0] += "%"  # a single plain number is a count
    return ",".join(texts), sorted(set(values))


@fuzz("depths_valid_grids")
@given(valid_depth_grid())
def test_valid_depths_always_parse(case: tuple[str, list[float]]) -> None:
    ran["depths_valid_grids"] += 1
    text, expected = case
    assert depths_or_usage_error(text) == expected, text


# ----------------------------------------------------------------------------- unicode digits

# Decimal digits of other scripts (fullwidth, Arabic-Indic, Devanagari, Bengali, Thai, mathematical
# bold), and look-alikes that are no decimal digits (superscripts, circled, Roman numerals).
DIGIT_ZEROS = [0xFF10, 0x0660, 0x0966, 0x09E6, 0x0E50, 0x1D7CE]
NOT_DIGITS = "²³¹①②ⅠⅡ½"


@st.composite
def foreign_number(draw: st.DrawFn) -> tuple[str, str]:
    """A number written with digits of another script (or look-alikes) and its ASCII spelling."""
    ascii_text = str(draw(st.integers(min_value=0, max_value=5000)))
    zero = draw(st.sampled_from(DIGIT_ZEROS))
    text = "".join(chr(zero + int(d)) if draw(st.booleans()) else d for d in ascii_text)
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        text += draw(st.sampled_from(NOT_DIGITS))
        return text, ""
    return text, ascii_text


@fuzz("lengths_unicode_digits")
@given(foreign_number(), st.sampled_from(["", "k", "-8k", ",1k"]))
def test_lengths_in_other_scripts_mean_their_ascii_value_or_are_refused(
    number: tuple[str, str], suffix: str
) -> None:
    """Python reads any script's decimal digits as numbers; if the parser accepts them, the result
    must be the one the ASCII spelling gives."""
    ran["lengths_unicode_digits"] += 1
    text, ascii_text = number
    values = lengths_or_usage_error(text + suffix)
    if values is not None:
        assert ascii_text, f"{text!r} holds a character that is no decimal digit, yet parsed to {values}"
        assert values == parse_lengths(ascii_text + suffix), text


@fuzz("depths_unicode_digits")
@given(foreign_number(), st.sampled_from(["", "%", ",50", ".5%"]))
def test_depths_in_other_scripts_mean_their_ascii_value_or_are_refused(
    number: tuple[str, str], suffix: str
) -> None:
    ran["depths_unicode_digits"] += 1
    text, ascii_text = number
    values = depths_or_usage_error(text + suffix)
    if values is not None:
        assert ascii_text, f"{text!r} holds a character that is no decimal digit, yet parsed to {values}"
        assert values == parse_depths(ascii_text + suffix), text


def test_zz_report_how_many_cases_ran(capsys: pytest.CaptureFixture[str]) -> None:
    """Last in this module: print the cases run above (the closing note of issue 9 quotes the sum).

    Hypothesis adds the explicit @example cases to each count; shrinking never runs on a pass.
    """
    parts = ", ".join(f"{name} {count}" for name, count in sorted(ran.items()))
    with capsys.disabled():
        print(f"\nfuzz_parsers: {sum(ran.values())} cases ran ({parts or 'none selected'})")
    for name, count in ran.items():
        assert count >= EXAMPLES[name], (name, count)
