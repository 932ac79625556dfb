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
FAST = settings(max_examples=50, deadline=None)
prefixes = st.text(alphabet=uscc.ALPHABET, min_size=17, max_size=17)

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
    assert uscc.normalise("9①350100M000100Y43") == "9①350100M000100Y43"
    assert uscc.normalise("") == ""
    assert uscc.normalise(" \t\u3000 ") == ""
    assert uscc.problem(uscc.normalise(" \u3000 ")) == "empty"


@pytest.mark.parametrize(
    "raw",
    [
        "91350100-M000100Y43",  # as some systems print it
        "9135-0100-M000-100Y-43",
        "91350100\u2014M000100Y43",
        "91350100\uff0dM000100Y43",
        "\ufeff91350100M000100Y43",
        "91350100M000100Y43\u200b",
        "9135\x0b0100M000100Y43",
        "9135\u20280100M000100Y43",
        "9135\x850100M000100Y43",
        "9135\x1f0100M000100Y43",
        "\x1c91350100M000100Y43\u2029",
    ],
)
def test_normalise_drops_hyphens_and_every_white_space(raw):
    assert uscc.normalise(raw) == VALID


def test_normalise_drops_all_python_white_space():
    every = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert every <= uscc.DROPPED


@pytest.mark.parametrize(
    "raw",
    [
        "9①350100M000100Y43",
        "9\u2460350100M000100Y43",
        "91350100M000100Y4\u00b3",
        "913501００M000100Y4③",
    ],
)
def test_look_alike_digits_are_not_folded(raw):
    """Width folding only: NFKC would turn circled or superscript digits into digits and
    accept a code that was not typed as one."""
    code = uscc.normalise(raw)
    assert uscc.problem(code) is not None
    assert "is not in the USCC alphabet" in uscc.problem(code)


# ============================================================================================
# Structure (warnings, never rejections)
# ============================================================================================


def with_check(first17: str) -> str:
    return first17 + ref_check(first17)


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_codes_have_no_structure_warning(code):
    assert uscc.structure_warnings(code) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (with_check("00350100M000100Y4"), "unknown registration authority and category '00'"),
        (with_check("94350100M000100Y4"), "unknown registration authority and category '94'"),
        (with_check("91AB0100M000100Y4"), "region code 'AB0100' is not 6 digits"),
        (with_check("91350100M000100Y5"), "fails its GB 11714 check (expected '4')"),
    ],
)
def test_structure_warnings(code, expected):
    assert uscc.is_valid(code)  # the check character passes: kept, only flagged
    warnings = uscc.structure_warnings(code)
    assert len(warnings) == 1 and expected in warnings[0]
    assert uscc.structure_suspect_many(np.array([code.encode()], dtype="S18")).tolist() == [True]


def test_organisation_check_character_x_and_zero():
    # sums with remainder 1 and 0 mod 11 give check values 10 ("X") and 11 ("0")
    assert uscc.organisation_check_value(1) == "X"
    assert uscc.organisation_check_value(0) == "0"
    assert uscc.organisation_check("71526726") == "X"  # from 9144030071526726XG


@FAST
@given(prefix=prefixes)
def test_structure_vectorised_agrees(prefix):
    code = prefix + uscc.check_character(prefix)
    got = uscc.structure_suspect_many(np.array([code.encode()], dtype="S18")).tolist()
    assert got == [bool(uscc.structure_warnings(code))]


@pytest.mark.parametrize(
    "raw", ["\u0390", "\u03b0", "A \u0301"], ids=["U+0390", "U+03B0", "A-space-acute"]
)
def test_normalise_idempotent_outside_the_typed_domain(raw):
    once = uscc.normalise(raw)
    assert uscc.normalise(once) == once


# ============================================================================================
# Properties
# ============================================================================================


# Characters someone could plausibly type or paste into a code field.
_ASCII_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_TYPED = (
    _ASCII_PRINTABLE
    + full_width(_ASCII_PRINTABLE.replace(" ", ""))
    + "\t\n\r\u3000\u00a0\u2002\u2003\u202f\x0b\x1f\x85\u2028-\u2014\uff0d\u2460\u00b3\u00e9"
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
    assert not any(c.isspace() or c == "-" for c in once)
    assert not any("a" <= c <= "z" or "\uff01" <= c <= "\uff5e" for c in once)


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


@FAST
@given(items=st.lists(typed_text, max_size=20))
def test_column_normaliser_is_the_scalar_one(items):
    """Whole files (prepare_ids) and single codes agree on every input, including the
    white space Arrow's regular expressions do not know (vertical tab, U+2028, U+0085)."""
    import pyarrow as pa

    from protocols.ids import IdType, normalise_column

    got = normalise_column(pa.array(items, pa.string()), IdType.USCC).to_pylist()
    assert got == [uscc.normalise(x) for x in items]


@pytest.mark.parametrize("sep", ["\x0b", "\u2028", "\x85", "\x1f", "-", "\u3000"])
def test_prepare_ids_accepts_what_normalise_accepts(sep):
    import pyarrow as pa

    from protocols.ids import IdType, prepare_ids

    raw = "9135" + sep + "0100M000100Y43"
    prepared = prepare_ids(pa.array([raw, "9①350100M000100Y43"]), IdType.USCC)
    assert prepared.ids == [VALID]
    assert [r.row for r in prepared.rejects] == [2]
    assert "not in the USCC alphabet" in prepared.rejects[0].reason


def test_structure_warnings_are_kept_and_reported(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from node_runtime.tables import write_rejects
    from protocols.ids import IdType, prepare_ids

    odd = with_check("00AB0100M000100Y5")
    prepared = prepare_ids(pa.array([VALID, odd, "bad"]), IdType.USCC)
    assert prepared.ids == [VALID, odd]  # kept
    assert [w.row for w in prepared.warnings] == [2]
    assert "'00'" in prepared.warnings[0].warning and "GB 11714" in prepared.warnings[0].warning
    write_rejects(prepared.rejects, tmp_path / "r.csv", prepared.warnings)
    table = pacsv.read_csv(tmp_path / "r.csv").to_pylist()
    assert [(r["row"], r["reason"] or "") for r in table] == [(2, ""), (3, table[1]["reason"])]
    assert table[0]["warnings"].startswith("unknown registration authority")
    assert table[1]["reason"].startswith("wrong length")
