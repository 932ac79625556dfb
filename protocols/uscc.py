"""Unified Social Credit Codes (统一社会信用代码, GB 32100-2015).

An USCC is 18 characters from a 31-symbol alphabet (digits and upper-case letters without
I, O, S, V, Z). The last character is a check character over the first 17: weights
``3**i mod 31`` for i = 0..16, check value ``31 - (sum mod 31)``, with 31 written as ``0``.

The scalar functions here are the reference; :func:`check_many` is the vectorised form used
on whole files and is tested against the scalar one.
"""

from __future__ import annotations

import unicodedata

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


def normalise(raw: str) -> str:
    """Canonical form of a code as typed: full-width to half-width, no spaces, upper case."""
    # NFKC folds full-width letters, digits and the ideographic space to ASCII.
    folded = unicodedata.normalize("NFKC", raw)
    folded = "".join(folded.split()).upper()
    # Again: removing spaces or upper-casing can leave combinable sequences behind.
    return unicodedata.normalize("NFKC", folded)


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
