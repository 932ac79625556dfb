"""Unified Social Credit Codes (GB 32100-2015): check character, normalisation, reasons and
the vectorised check, against an independent reference written out from the standard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import uscc

# GB 32100-2015: 31 symbols (no I, O, S, V, Z), values 0..30 in this order; weights of
# positions 1..17 as tabulated in the standard; check value 31 - (sum mod 31), 31 -> "0".
REF_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
REF_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def ref_check(first17: str) -> str:
    total = sum(w * REF_ALPHABET.index(c) for w, c in zip(REF_WEIGHTS, first17, strict=True))
    value = 31 - total % 31
    return "0" if value == 31 else REF_ALPHABET[value]


VALID = "91350100M000100Y43"

# Codes of the real format that satisfy the check (taken from public registration records;
# a random 18-character string passes with probability 1/31).
REAL_CODES = [
    VALID,
    "91440300708461136T",
    "9144030071526726XG",
    "91330100716105852F",
    "91110000802100433B",
    "91110108551385082Q",
]

# Constructed with the reference: check value 31 (written "0") and a letter check character.
CONSTRUCTED = ["91350100M000100Y30", "911100007109300250", "91350100M000100YDY"]


def full_width(text: str) -> str:
    """ASCII -> full-width forms (U+FF01..U+FF5E); the space -> ideographic space U+3000."""
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) for c in text)


# ============================================================================================
# Constants and known answers
# ============================================================================================


def test_constants_match_the_standard():
    assert uscc.ALPHABET == REF_ALPHABET
    assert len(uscc.ALPHABET) == 31
    assert not set("IOSVZ") & set(uscc.ALPHABET)
    assert uscc.LENGTH == 18
    assert uscc.WEIGHTS == REF_WEIGHTS
    assert all(w % 31 for w in uscc.WEIGHTS)


@pytest.mark.parametrize("code", REAL_CODES + CONSTRUCTED)
def test_known_valid_codes(code):
    assert ref_check(code[:17]) == code[17]
    assert uscc.check_character(code[:17]) == code[17]
    assert uscc.problem(code) is None
    assert uscc.is_valid(code)


def test_check_value_31_is_written_zero():
    code = "91350100M000100Y30"
    total = sum(w * REF_ALPHABET.index(c) for w, c in zip(REF_WEIGHTS, code[:17], strict=True))
    assert total % 31 == 0
    assert uscc.check_character(code[:17]) == "0"


@pytest.mark.parametrize("code", REAL_CODES + CONSTRUCTED)
def test_every_single_substitution_is_detected(code):
    """Weights are non-zero mod the prime 31 and the 31 symbols have distinct values, so any
    single substitution at positions 1-17 changes the sum mod 31 and the check fails; any
    other check character at position 18 fails too."""
    mutants = []
    for position in range(uscc.LENGTH):
        for char in uscc.ALPHABET:
            if char != code[position]:
                mutants.append(code[:position] + char + code[position + 1 :])
    assert len(mutants) == 18 * 30
    for mutant in mutants:
        assert not uscc.is_valid(mutant), mutant
        assert uscc.problem(mutant).startswith("check character is ")
    got = uscc.check_many(np.array([m.encode() for m in mutants], dtype="S18"))
    assert not got.any()


def test_check_character_rejects_bad_input():
    with pytest.raises(ValueError, match="need 17 characters, got 16"):
        uscc.check_character(VALID[:16])
    with pytest.raises(ValueError, match="need 17 characters, got 18"):
        uscc.check_character(VALID)
    with pytest.raises(ValueError, match="'I' is not a USCC character"):
        uscc.check_character("9135010IM000100Y4")
    with pytest.raises(ValueError, match="not a USCC character"):
        uscc.check_character(VALID[:17].lower())


# ============================================================================================
# problem() reasons
# ============================================================================================


def test_problem_empty():
    assert uscc.problem("") == "empty"


@pytest.mark.parametrize("length", [1, 15, 17, 19, 36])
def test_problem_wrong_length(length):
    code = (VALID * 3)[:length]
    assert uscc.problem(code) == f"wrong length: {length} characters, expected 18"
    assert not uscc.is_valid(code)


@pytest.mark.parametrize(
    ("code", "char", "position"),
    [
        ("I1350100M000100Y43", "I", 1),
        ("91350100O000100Y43", "O", 9),
        ("91350100M000100S43", "S", 16),
        ("91350100M000100Y4V", "V", 18),
        ("91350100m000100Y43", "m", 9),
        ("9135 100M000100Y43", " ", 5),
        ("91350100M000100Y4-", "-", 18),
        ("９1350100M000100Y43", "９", 1),
        ("91350100Z000100I43", "Z", 9),  # the first bad character is reported
    ],
)
def test_problem_bad_character(code, char, position):
    assert len(code) == 18
    assert uscc.problem(code) == (
        f"character {char!r} at position {position} is not in the USCC alphabet"
    )


def test_problem_wrong_check_character_names_the_expected_one():
    assert uscc.problem("91350100M000100Y44") == "check character is '4', expected '3'"
    assert uscc.problem("91350100M000100Y3Y") == "check character is 'Y', expected '0'"
    assert uscc.problem("9144030071526726X0") == "check character is '0', expected 'G'"


# ============================================================================================
# Normalisation
# ============================================================================================


@pytest.mark.parametrize("code", REAL_CODES + CONSTRUCTED)
def test_normalise_full_width(code):
    wide = full_width(code)
    assert all(0xFF01 <= ord(c) <= 0xFF5E for c in wide)
    assert uscc.normalise(wide) == code
    assert uscc.normalise(full_width(code.lower())) == code
    assert uscc.is_valid(uscc.normalise(wide))


@pytest.mark.parametrize(
    "raw",
    [
        VALID,
        " 91350100M000100Y43 ",
        "\t91350100M000100Y43\n",
        "\u300091350100M000100Y43\u3000",
        "9135 0100 M000 100Y 43",
        "9135\u30000100\u3000M000100Y43",
        "91350100\tM000100Y43",
        "9135\u00a00100M000100Y43",
        "91350100m000100y43",
        " 91350100m000100y43\r\n",
        "９１３５０１００Ｍ０００１００Ｙ４３",
        "９１３５０１００ｍ０００１００ｙ４３",
        "\u3000９１３５\u3000０１００\u3000ｍ０００\u3000１００ｙ\u3000４３\u3000",
        "9135０１００m000\u3000100Ｙ43",
    ],
)
def test_normalise_typed_forms(raw):
    assert uscc.normalise(raw) == VALID
    assert uscc.is_valid(uscc.normalise(raw))


def test_normalise_leaves_other_characters_for_problem_to_report():
    assert uscc.normalise("91350100-M000100Y43") == "91350100-M000100Y43"
    assert uscc.normalise("") == ""
    assert uscc.normalise(" \t\u3000 ") == ""
    assert uscc.problem(uscc.normalise(" \u3000 ")) == "empty"


@pytest.mark.parametrize(
    "raw", ["\u0390", "\u03b0", "A \u0301"], ids=["U+0390", "U+03B0", "A-space-acute"]
)
def test_normalise_idempotent_outside_the_typed_domain(raw):
    once = uscc.normalise(raw)
    assert uscc.normalise(once) == once


# ============================================================================================
# Properties
# ============================================================================================

FAST = settings(max_examples=50, deadline=None)
prefixes = st.text(alphabet=uscc.ALPHABET, min_size=17, max_size=17)

# Characters someone could plausibly type or paste into a code field.
_ASCII_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_TYPED = (
    _ASCII_PRINTABLE
    + full_width(_ASCII_PRINTABLE.replace(" ", ""))
    + "\t\n\r\u3000\u00a0\u2002\u2003\u202f"
)
typed_text = st.text(alphabet=_TYPED, max_size=30)


@FAST
@given(prefix=prefixes)
def test_prefix_plus_check_character_is_valid(prefix):
    check = uscc.check_character(prefix)
    assert check == ref_check(prefix)
    code = prefix + check
    assert uscc.is_valid(code)
    assert uscc.check_many(np.array([code.encode()])).tolist() == [True]
    for other in uscc.ALPHABET.replace(check, ""):
        assert not uscc.is_valid(prefix + other)


@FAST
@given(prefix=prefixes, data=st.data())
def test_messy_typing_normalises_to_the_code(prefix, data):
    code = prefix + uscc.check_character(prefix)
    pieces = []
    for c in code:
        form = data.draw(st.sampled_from(["plain", "lower", "wide", "wide-lower"]))
        c = c.lower() if "lower" in form else c
        c = full_width(c) if "wide" in form else c
        pieces.append(c + data.draw(st.sampled_from(["", "", " ", "\t", "\u3000", "\u00a0"])))
    raw = data.draw(st.sampled_from(["", " ", "\u3000"])) + "".join(pieces)
    assert uscc.normalise(raw) == code
    assert uscc.is_valid(uscc.normalise(raw))


@FAST
@given(raw=typed_text)
def test_normalise_is_idempotent(raw):
    once = uscc.normalise(raw)
    assert uscc.normalise(once) == once
    assert not any(c.isspace() for c in once)
    assert once == once.upper()


def _near_codes() -> st.SearchStrategy[bytes]:
    valid = prefixes.map(lambda p: (p + uscc.check_character(p)).encode())
    mutated = st.tuples(valid, st.integers(0, 17), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
    )
    alphabet_bytes = st.binary(min_size=0, max_size=25).map(
        lambda b: bytes(uscc.ALPHABET.encode()[x % 31] for x in b)
    )
    return st.one_of(
        valid,
        mutated,
        valid.map(lambda b: b[:-1]),  # 17 bytes
        valid.map(lambda b: b + b"0"),  # 19 bytes
        valid.map(lambda b: b.lower()),
        alphabet_bytes,
        st.binary(max_size=25),  # anything, including non-ASCII and NUL bytes
    )


@FAST
@given(
    items=st.lists(_near_codes(), max_size=20),
    width=st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
)
def test_check_many_agrees_with_is_valid(items, width):
    if width is None:
        array = np.array(items, dtype="S") if items else np.array([], dtype="S18")
    else:
        array = np.array(items, dtype=f"S{width}")
    got = uscc.check_many(array)
    assert got.dtype == np.bool_
    assert got.shape == array.shape
    # Compare with the element as numpy stores it (truncated to the width, trailing NULs
    # dropped); latin-1 maps every byte to one character, non-ASCII ones outside the alphabet.
    expected = [uscc.is_valid(element.decode("latin-1")) for element in array]
    assert got.tolist() == expected


def test_check_many_edge_cases():
    assert uscc.check_many(np.array([], dtype="S18")).shape == (0,)
    assert uscc.check_many(np.array([], dtype="U18")).shape == (0,)
    codes = np.array([VALID.encode(), b"", b"x", VALID.lower().encode()], dtype="S18")
    assert uscc.check_many(codes).tolist() == [True, False, False, False]
    narrow = np.array([VALID[:10].encode()], dtype="S10")
    assert uscc.check_many(narrow).tolist() == [False]
    wide = np.array([VALID.encode(), (VALID + "0").encode(), VALID.encode() + b" "], dtype="S40")
    assert uscc.check_many(wide).tolist() == [True, False, False]
    # a non-contiguous view
    strided = np.array([VALID.encode(), b"x"] * 3, dtype="S18")[::2]
    assert uscc.check_many(strided).tolist() == [True, True, True]
    with pytest.raises(TypeError, match="dtype 'S'"):
        uscc.check_many(np.array([VALID]))


def test_check_many_two_dimensional():
    codes = np.array([[VALID.encode(), b"x"], [b"91350100M000100Y44", VALID.encode()]])
    assert uscc.check_many(codes).tolist() == [[True, False], [False, True]]
