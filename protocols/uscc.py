"""Unified Social Credit Codes (统一社会信用代码, GB 32100-2015).

An USCC is 18 characters from a 31-symbol alphabet (digits and upper-case letters without
I, O, S, V, Z). The last character is a check character over the first 17: weights
``3**i mod 31`` for i = 0..16, check value ``31 - (sum mod 31)``, with 31 written as ``0``.

The scalar functions here are the reference; :func:`check_many` is the vectorised form used
on whole files and is tested against the scalar one.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
LENGTH = 18
WEIGHTS = tuple(pow(3, i, 31) for i in range(LENGTH - 1))
_VALUE = {c: i for i, c in enumerate(ALPHABET)}

# Byte -> alphabet value, -1 for bytes outside the alphabet (used by the vectorised check).
_BYTE_VALUE = np.full(256, -1, dtype=np.int16)
for _c, _v in _VALUE.items():
    _BYTE_VALUE[ord(_c)] = _v
_WEIGHT_VECTOR = np.array(WEIGHTS, dtype=np.int32)
_BLOCK = 1 << 16


def check_character(first17: str) -> str:
    """The check character for the first 17 characters of a code.

    Raises ``ValueError`` if the prefix has the wrong length or a character outside the
    USCC alphabet.
    """
    if len(first17) != LENGTH - 1:
        raise ValueError(f"need {LENGTH - 1} characters, got {len(first17)}")
    total = 0
    for weight, char in zip(WEIGHTS, first17):
        value = _VALUE.get(char)
        if value is None:
            raise ValueError(f"{char!r} is not a USCC character")
        total += weight * value
    return ALPHABET[(31 - total % 31) % 31]


# Characters dropped anywhere in a code: every character Python calls white space (that
# includes vertical tab, U+001C-U+001F, U+0085, U+2028, the ideographic space), the
# zero-width ones pasted from web pages and documents, and hyphens and dashes (some systems
# print "91350100-M000100Y43").
DROPPED = frozenset(
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
DROPPED |= frozenset(
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
    + [
        "-",
        "\uff0d",
        "\u2010",
        "\u2011",
        "\u2012",
        "\u2013",
        "\u2014",
        "\u2015",
        "\u2212",
        "\ufe63",
    ]
)
# Width folding only (full-width ASCII forms U+FF01..U+FF5E to ASCII), then ASCII upper case.
# Not NFKC: NFKC also turns look-alikes such as "①" or "²" into digits, and a code with
# them was not typed as the code it would become.
_TRANSLATION: dict[int, str | None] = {ord(c): None for c in DROPPED}
_TRANSLATION.update({c: chr(c - 0xFEE0).upper() for c in range(0xFF01, 0xFF5F) if c != 0xFF0D})
_TRANSLATION.update({c: chr(c).upper() for c in range(ord("a"), ord("z") + 1)})


def normalise(raw: str) -> str:
    """Canonical form of a code as typed: full-width forms to ASCII, no white space or
    hyphens anywhere, ASCII upper case. Other characters are left for :func:`problem`."""
    return raw.translate(_TRANSLATION)


def problem(code: str) -> str | None:
    """Why a *normalised* code is not a valid USCC, or ``None`` if it is valid."""
    if not code:
        return "empty"
    if len(code) != LENGTH:
        return f"wrong length: {len(code)} characters, expected {LENGTH}"
    for position, char in enumerate(code, start=1):
        if char not in _VALUE:
            return f"character {char!r} at position {position} is not in the USCC alphabet"
    expected = check_character(code[:-1])
    if code[-1] != expected:
        return f"check character is {code[-1]!r}, expected {expected!r}"
    return None


# Registration authority (position 1) and the categories (position 2) each may issue, as
# listed in GB 32100-2015 and its later additions (N: agriculture, A: the military).
AUTHORITY_CATEGORIES = {
    "1": "1239",
    "2": "19",
    "3": "123459",
    "4": "19",
    "5": "1239",
    "6": "129",
    "7": "1239",
    "8": "19",
    "9": "123",
    "A": "19",
    "N": "1239",
    "Y": "1",
}
# GB 11714 organisation code (positions 9-17): weights of its 8 body characters; a letter's
# value is 10 + its place in A-Z; check 11 - (sum mod 11), 10 written "X" and 11 "0".
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def organisation_check_value(remainder: int) -> str:
    """The check character for a weighted sum whose remainder mod 11 is ``remainder``."""
    value = 11 - remainder
    return "X" if value == 10 else "0" if value == 11 else str(value)


def organisation_check(body: str) -> str:
    """The GB 11714 check character for an 8-character organisation-code body."""
    total = sum(w * int(c, 36) for w, c in zip(ORG_WEIGHTS, body, strict=True))
    return organisation_check_value(total % 11)


def structure_warnings(code: str) -> list[str]:
    """What a *valid* code breaks of the structure rules. Warnings, not rejections: codes
    issued in early pilot regions break them and are real."""
    found = []
    authority, category = code[0], code[1]
    if category not in AUTHORITY_CATEGORIES.get(authority, ""):
        found.append(f"unknown registration authority and category {code[:2]!r}")
    if not code[2:8].isdigit():
        found.append(f"region code {code[2:8]!r} is not 6 digits")
    if organisation_check(code[8:16]) != code[16]:
        found.append(
            f"organisation code {code[8:17]!r} fails its GB 11714 check "
            f"(expected {organisation_check(code[8:16])!r})"
        )
    return found


def is_valid(code: str) -> bool:
    return problem(code) is None


def check_many(codes: np.ndarray) -> np.ndarray:
    """Validity of many normalised codes at once.

    ``codes`` is a numpy array of ASCII byte strings (dtype ``S18`` or narrower/wider; codes
    that are not exactly 18 bytes are invalid). Returns a boolean array.
    """
    codes = np.asarray(codes)
    shape = codes.shape
    if codes.size == 0:
        return np.zeros(shape, dtype=bool)
    if codes.dtype.kind != "S":
        raise TypeError("check_many needs an array of byte strings (dtype 'S')")
    codes = codes.reshape(-1)
    if codes.dtype.itemsize < LENGTH:
        return np.zeros(shape, dtype=bool)
    valid = np.char.str_len(codes) == LENGTH
    fixed = codes.astype(f"S{LENGTH}").view(np.uint8).reshape(-1, LENGTH)
    for start in range(0, fixed.shape[0], _BLOCK):  # blocks keep the temporaries small
        values = _BYTE_VALUE[fixed[start : start + _BLOCK]]
        block = valid[start : start + _BLOCK]
        block &= (values >= 0).all(axis=1)
        body = values[:, : LENGTH - 1].astype(np.int32) @ _WEIGHT_VECTOR
        block &= values[:, LENGTH - 1] == (31 - body % 31) % 31
    return valid.reshape(shape)


# Byte lookups for the vectorised structure check.
_PAIR_KNOWN = np.zeros((256, 256), dtype=bool)
for _a, _cats in AUTHORITY_CATEGORIES.items():
    for _cat in _cats:
        _PAIR_KNOWN[ord(_a), ord(_cat)] = True
_BASE36 = np.zeros(256, dtype=np.int32)
for _c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _BASE36[ord(_c)] = int(_c, 36)
_ORG_CHECK_BYTE = np.array([ord(organisation_check_value(v)) for v in range(11)], dtype=np.uint8)


def structure_suspect_many(codes: np.ndarray) -> np.ndarray:
    """Which of many *valid* codes (``S18`` byte strings) have a structure warning; the
    vectorised form of ``bool(structure_warnings(code))``."""
    codes = np.asarray(codes)
    if codes.size == 0:
        return np.zeros(codes.shape, dtype=bool)
    fixed = codes.reshape(-1).astype(f"S{LENGTH}").view(np.uint8).reshape(-1, LENGTH)
    suspect = ~_PAIR_KNOWN[fixed[:, 0], fixed[:, 1]]
    region = fixed[:, 2:8]
    suspect |= ((region < ord("0")) | (region > ord("9"))).any(axis=1)
    total = _BASE36[fixed[:, 8:16]] @ np.array(ORG_WEIGHTS, dtype=np.int32)
    suspect |= _ORG_CHECK_BYTE[total % 11] != fixed[:, 16]
    return suspect.reshape(codes.shape)
