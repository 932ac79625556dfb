"""Enterprise identifiers as they arrive in files: normalise, validate, de-duplicate.

Works on whole columns (pyarrow arrays) so that millions of IDs take seconds, not minutes.
Invalid values never abort: each is reported as an :class:`IdReject` with its row and reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class PreparedIds:
    """The distinct valid IDs of a column, in order of first appearance."""

    ids: list[str]
    rows: int
    rejects: list[IdReject]
    duplicates: int  # valid rows whose ID appeared on an earlier row

    @property
    def valid_rows(self) -> int:
        return self.rows - len(self.rejects)


def normalise_column(values: pa.Array | pa.ChunkedArray, id_type: IdType) -> pa.Array:
    """Normalised strings (nulls stay null). USCC: NFKC (full-width to half-width), no
    white space anywhere, upper case. Text: trimmed."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    if id_type is IdType.USCC:
        values = pc.utf8_normalize(values, form="NFKC")
        values = pc.replace_substring_regex(values, pattern=r"\s+", replacement="")
        return pc.utf8_upper(values)
    return pc.utf8_trim_whitespace(values)


def _valid_mask(normalised: pa.Array, id_type: IdType) -> np.ndarray:
    present = pc.fill_null(pc.greater(pc.utf8_length(normalised), 0), False)
    mask = present.to_numpy(zero_copy_only=False)
    if id_type is IdType.TEXT:
        return mask
    ascii_ok = pc.fill_null(pc.string_is_ascii(normalised), False).to_numpy(zero_copy_only=False)
    mask &= ascii_ok
    candidates = np.flatnonzero(mask)
    if candidates.size:
        chosen = normalised.take(pa.array(candidates)).to_numpy(zero_copy_only=False)
        codes = chosen.astype("S")  # ASCII only here, so this cannot fail
        mask[candidates] = uscc.check_many(codes)
    return mask


def _reason(raw: str | None, normalised: str | None, id_type: IdType) -> str:
    if raw is None or not normalised:
        return "empty"
    if id_type is IdType.USCC:
        return uscc.problem(normalised) or "invalid"
    return "invalid"


def prepare_ids(values: pa.Array | pa.ChunkedArray, id_type: IdType = IdType.USCC) -> PreparedIds:
    """Normalise, validate and de-duplicate a column of IDs."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    normalised = normalise_column(values, id_type)
    mask = _valid_mask(normalised, id_type)
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
        ids=distinct.to_pylist(),
        rows=len(values),
        rejects=rejects,
        duplicates=len(valid) - len(distinct),
    )
