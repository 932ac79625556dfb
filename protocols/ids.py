"""Enterprise identifiers as they arrive in files: normalise, validate, de-duplicate.

Works on whole columns (pyarrow arrays) so that millions of IDs take seconds, not minutes.
Invalid values never abort: each is reported as an :class:`IdReject` with its row and reason.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import uscc


class IdType(enum.Enum):
    USCC = "uscc"  # Unified Social Credit Code, checked
    TEXT = "text"  # any non-empty string after trimming (public data sets with integer ids)


@dataclass(frozen=True)
class IdReject:
    row: int  # 1-based data row (the header is not counted)
    raw: str
    reason: str


@dataclass(frozen=True)
class IdWarning:
    """A valid ID that was kept but looks wrong (a structure rule of GB 32100 broken)."""

    row: int  # 1-based data row
    raw: str
    warning: str


@dataclass(frozen=True)
class PreparedIds:
    """The distinct valid IDs of a column, in order of first appearance."""

    distinct: pa.Array  # strings
    rows: int
    rejects: list[IdReject]
    duplicates: int  # valid rows whose ID appeared on an earlier row
    warnings: list[IdWarning] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.distinct.to_pylist()

    def __len__(self) -> int:
        return len(self.distinct)

    def as_bytes(self) -> np.ndarray:
        """The IDs as a numpy array of UTF-8 byte strings (compact, for millions of IDs)."""
        lengths = pc.binary_length(self.distinct).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths == lengths[0]).all():
            return fixed_width_bytes(self.distinct, int(lengths[0]))
        return np.array([x.encode() for x in self.distinct.to_pylist()], dtype=bytes)


# The ASCII characters uscc.normalise drops, as an RE2 class for whole columns.
_ASCII_DROPPED = "[" + "".join(f"\\x{ord(c):02x}" for c in sorted(uscc.DROPPED) if c < "\x80") + "]"


def normalise_column(values: pa.Array | pa.ChunkedArray, id_type: IdType) -> pa.Array:
    """Normalised strings (nulls stay null). USCC: exactly :func:`uscc.normalise` on every
    value (ASCII values in Arrow, the rare others in Python). Text: trimmed."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    if id_type is IdType.TEXT:
        return pc.utf8_trim_whitespace(values)
    ascii_only = pc.fill_null(pc.string_is_ascii(values), True)
    folded = pc.ascii_upper(pc.replace_substring_regex(values, _ASCII_DROPPED, ""))
    others = np.flatnonzero(~ascii_only.to_numpy(zero_copy_only=False))
    if others.size:
        fixed = [uscc.normalise(v) for v in values.take(pa.array(others)).to_pylist()]
        folded = pc.replace_with_mask(folded, pc.invert(ascii_only), pa.array(fixed, folded.type))
    return folded


def fixed_width_bytes(values: pa.Array, width: int) -> np.ndarray:
    """A string array whose values are all exactly ``width`` bytes, as a numpy ``S{width}``
    array, without making a Python object per value."""
    if len(values) == 0:
        return np.zeros(0, dtype=f"S{width}")
    values = pc.cast(values, pa.binary())
    if values.null_count:
        raise ValueError("fixed_width_bytes needs an array without nulls")
    fixed = pc.cast(values, pa.binary(width))  # raises if a value has another length
    data = fixed.buffers()[1]
    start = fixed.offset * width
    # A read-only view on Arrow's buffer (which it keeps alive): no copy of millions of IDs.
    return np.frombuffer(data, dtype=f"S{width}", count=len(fixed), offset=start)


def valid_mask(normalised: pa.Array, id_type: IdType) -> np.ndarray:
    """Which of the normalised IDs (``normalise_column``) are valid: a boolean per value."""
    lengths = pc.fill_null(pc.utf8_length(normalised), 0).to_numpy(zero_copy_only=False)
    if id_type is IdType.TEXT:
        return lengths > 0
    ascii_ok = pc.fill_null(pc.string_is_ascii(normalised), False).to_numpy(zero_copy_only=False)
    mask = ascii_ok & (lengths == uscc.LENGTH)
    candidates = np.flatnonzero(mask)
    if candidates.size:
        chosen = normalised if candidates.size == len(normalised) else normalised.take(candidates)
        codes = fixed_width_bytes(chosen, uscc.LENGTH)
        mask[candidates] = uscc.check_many(codes)
    return mask


# A number as Excel writes one it shows in scientific format ("9.13501E+17"): a USCC column
# opened in Excel and saved again as CSV, the commonest way such a column breaks.
_E_NOTATION = re.compile(r"^\s*[-+]?\d+(\.\d+)?[eE][-+]?\d+\s*$")
EXCEL_NUMBER_HINT = (
    "a number in E notation: the IDs were stored by Excel as numbers, which keep 15 "
    "significant digits, so their last digits are lost; format the column as text and "
    "export the IDs again from where they were typed"
)


def _reason(raw: str | None, normalised: str | None, id_type: IdType) -> str:
    if raw is None or not normalised:
        return "empty"
    if id_type is IdType.USCC:
        reason = uscc.problem(normalised) or "invalid"
        return f"{reason}; {EXCEL_NUMBER_HINT}" if _E_NOTATION.match(str(raw)) else reason
    return "invalid"


def prepare_ids(values: pa.Array | pa.ChunkedArray, id_type: IdType = IdType.USCC) -> PreparedIds:
    """Normalise, validate and de-duplicate a column of IDs."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    normalised = normalise_column(values, id_type)
    mask = valid_mask(normalised, id_type)
    rejects = []
    bad = np.flatnonzero(~mask)
    if bad.size:
        raw_bad = values.take(pa.array(bad)).to_pylist()
        norm_bad = normalised.take(pa.array(bad)).to_pylist()
        for row, raw, norm in zip(bad.tolist(), raw_bad, norm_bad):
            raw_text = "" if raw is None else str(raw)
            rejects.append(IdReject(row + 1, raw_text, _reason(raw, norm, id_type)))
    valid = normalised.filter(pa.array(mask)) if bad.size else normalised
    distinct = pc.unique(valid)  # keeps the order of first appearance
    return PreparedIds(
        distinct=distinct,
        rows=len(values),
        rejects=rejects,
        duplicates=len(valid) - len(distinct),
        warnings=_structure_warnings(values, valid, np.flatnonzero(mask), id_type),
    )


def _structure_warnings(
    raw: pa.Array, valid: pa.Array, rows: np.ndarray, id_type: IdType
) -> list[IdWarning]:
    """Valid USCCs that break a structure rule: kept, and listed for the rejects report."""
    if id_type is not IdType.USCC or not len(valid):
        return []
    suspect = np.flatnonzero(uscc.structure_suspect_many(fixed_width_bytes(valid, uscc.LENGTH)))
    if not suspect.size:
        return []
    codes = valid.take(pa.array(suspect)).to_pylist()
    raws = raw.take(pa.array(rows[suspect])).to_pylist()
    return [
        IdWarning(int(row) + 1, str(r), "; ".join(uscc.structure_warnings(code)))
        for row, r, code in zip(rows[suspect].tolist(), raws, codes)
    ]
