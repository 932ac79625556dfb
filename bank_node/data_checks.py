"""Checks on the bank's own file before anything leaves the bank (before PSI, before keys).

A run that cannot succeed must fail here, on the bank's machine, with one line the analyst
can act on, and not after the bureau has spent quota on PSI and key generation. What can
be repaired without changing the meaning of the data (a constant column, a column of
company names) is dropped with a warning instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protocols.errors import InputDataError
from protocols.features import column_kind
from protocols.ids import (
    EXCEL_NUMBER_HINT,
    IdType,
    PreparedIds,
    normalise_column,
    prepare_ids,
    valid_mask,
)

# Fewest rows of each class among the bank's distinct IDs: below this no AUC, KS or
# calibration means anything, and the bureau's bins (at least 30 rows) cannot form.
MIN_CLASS_COUNT = 30
# A text column whose values are this unique (and that has this many rows) names entities
# rather than grouping them: a model learns nothing general from it.
ID_LIKE_DISTINCT_SHARE = 0.9
ID_LIKE_MIN_ROWS = 50
# Column names that hold identities, not characteristics (Chinese and English exports).
ID_LIKE_NAME = re.compile(
    r"(企业名称|公司名称|客户名称|单位名称|^名称$|姓名|地址|电话|手机|邮箱|身份证|证件号|账号"
    r"|帐号|客户号|信用代码|^(company|enterprise|firm|client|customer)?_?name$|address"
    r"|phone|e-?mail|account_?(no|number|id)$|^id$)",
    re.IGNORECASE,
)


@dataclass
class CheckedBankData:
    """What the checks found: the labels, the features to use, what was dropped and why."""

    labels: np.ndarray  # 0/1 per row of the table
    bank_features: list[str]
    warnings: list[str] = field(default_factory=list)
    identical_duplicates: int = 0  # rows repeating an earlier row's ID and label

    def as_dict(self) -> dict[str, object]:
        return {
            "bank_features": self.bank_features,
            "warnings": self.warnings,
            "identical_duplicates": self.identical_duplicates,
        }


def read_labels(
    table: pa.Table,
    label: str,
    positive_label: str | None = None,
    where: Callable[[Sequence[int]], str] = lambda rows: "",
) -> np.ndarray:
    """0/1 labels. Without ``positive_label``: 0/1, true/false, "0.0"/"1.0". With it: that
    value is a default (1) and the one other value in the column is not (0), so labels
    written as 是/否 or bad/good train as they are. ``where`` says where data rows stand in
    their file (``tables.Whereabouts``)."""
    if label not in table.column_names:
        raise InputDataError(
            f"no label column {label!r}; the file has: {', '.join(table.column_names[:20])}"
            + suggestion(label, table.column_names)
        )
    raw = pc.cast(table.column(label), pa.string()).to_pylist()
    text = ["" if v is None else str(v).strip() for v in raw]
    missing = [i + 1 for i, v in enumerate(text) if not v]
    if missing:
        raise InputDataError(
            f"label column {label!r} is empty (or a missing mark such as 未知 or --) on "
            f"{len(missing)} rows (data rows "
            f"{_rows(missing)}{where(missing)}); drop those rows or fill in their labels"
        )
    if positive_label is not None:
        return _labels_by_positive(text, label, positive_label.strip())
    mapping = {"0": 0, "false": 0, "0.0": 0, "1": 1, "true": 1, "1.0": 1}
    values = [mapping.get(v.lower(), -1) for v in text]
    bad = [i + 1 for i, v in enumerate(values) if v < 0]
    if bad:
        seen = sorted({text[i - 1] for i in bad[:1000]})[:5]
        hint = "; name the value that means default with --positive-label (e.g. 是 or bad)"
        raise InputDataError(
            f"label column {label!r} must hold 0 or 1 on every row; {len(bad)} rows do not "
            f"(data rows {_rows(bad)}{where(bad)}; values {', '.join(map(repr, seen))}){hint}"
        )
    return np.array(values, dtype=np.int64)


def _labels_by_positive(text: list[str], label: str, positive: str) -> np.ndarray:
    distinct = sorted(set(text))
    if positive not in distinct:
        raise InputDataError(
            f"--positive-label {positive!r} never occurs in label column {label!r}; its "
            f"values are {', '.join(map(repr, distinct[:10]))}"
        )
    if len(distinct) > 2:
        raise InputDataError(
            f"label column {label!r} has {len(distinct)} different values "
            f"({', '.join(map(repr, distinct[:10]))}); with --positive-label it must have two"
        )
    return np.array([1 if v == positive else 0 for v in text], dtype=np.int64)


def check_bank_data(
    table: pa.Table,
    id_column: str,
    id_type: IdType,
    labels: np.ndarray,
    bank_features: list[str] | None,
    label: str,
    min_class_count: int = MIN_CLASS_COUNT,
    say: Callable[[str], None] | None = None,
) -> CheckedBankData:
    """Duplicates, classes and columns of the bank's file, before PSI. Errors
    (:class:`InputDataError`) for what no run could repair; warnings for what was dropped."""
    first, repeats = _first_rows(table, id_column, id_type, labels)
    if table.num_rows and not len(first):  # said as such, not as "one class only"
        refuse_without_usable_ids(prepare_ids(table.column(id_column), id_type))
    _check_classes(labels[first], label, min_class_count)
    named = bool(bank_features)  # [] names none: --min-iv kept no bank feature
    candidates = (
        list(bank_features)
        if bank_features is not None
        else [c for c in table.column_names if c not in (id_column, label)]
    )
    for name in candidates:
        if name not in table.column_names:
            raise InputDataError(
                f"no bank column named {name!r}" + suggestion(name, table.column_names)
            )
        if name in (id_column, label):
            raise InputDataError(f"{name!r} is the ID or label column, not a feature")
        column_kind(table.schema.field(name).type)  # unsupported types fail now
    subset = table.take(pa.array(first))
    kept, warnings = [], []
    for name in candidates:
        why = unusable_column(subset.column(name), name)
        if why is None:
            kept.append(name)
        else:
            warnings.append(f"bank column {name!r} dropped: {why}")
    identical = len(repeats.rows)
    if identical:
        warnings.append(_repeats_warning(table, kept, repeats))
    for text in warnings:
        (say or (lambda _: None))(f"warning: {text}")
    if not kept and named:
        raise InputDataError("none of the bank features named can be used (see warnings)")
    return CheckedBankData(labels, kept, warnings, identical)


def refuse_without_usable_ids(prepared: PreparedIds, rejects: str = "") -> None:
    """No row with a usable ID: refused here, before the bureau is asked anything (a
    review's first PSI on the public data sets, integer IDs read as USCCs, got only the
    bureau's "a PSI session needs at least one of the bank's IDs" for 4,000 IDs)."""
    if prepared.ids or not prepared.rows:
        return
    first = prepared.rejects[0] if prepared.rejects else None
    example = f" (the first, {first.raw!r}: {first.reason})" if first else ""
    digits = first is not None and str(first.raw).strip().isdigit()
    raise InputDataError(
        f"none of the {prepared.rows:,} rows has a usable ID{example}"
        + (f"; they are listed in {rejects}" if rejects else "")
        + (
            ": they look like numbers, not Unified Social Credit Codes; if the file and the "
            "bureau use other identifiers, pass --id-type text (the bureau serves the same)"
            if digits
            else ""
        )
    )


def warn_rejected_ids(
    prepared: PreparedIds,
    say: Callable[[str], None],
    where: Callable[[Sequence[int]], str] = lambda rows: "",
) -> None:
    """Rows whose ID cannot be matched are left out of PSI: said, with the first of them
    (`bank-node psi` writes them all to a rejects file)."""
    refuse_without_usable_ids(prepared)
    if prepared.rejects:
        first = prepared.rejects[0]
        excel = sum(EXCEL_NUMBER_HINT in r.reason for r in prepared.rejects)
        said = (
            f"; {excel:,} of them are numbers in E notation, stored by Excel as numbers "
            "(format the column as text and export the IDs again)"
            if excel and EXCEL_NUMBER_HINT not in first.reason
            else ""
        )
        say(
            f"warning: {len(prepared.rejects):,} of {prepared.rows:,} rows have no usable ID "
            f"and are left out (data row {first.row}{where([first.row])}: {first.raw!r}, "
            f"{first.reason}){said}; "
            "`bank-node psi` lists them all in its rejects file"
        )


@dataclass
class _Repeats:
    """Rows whose ID (and label) an earlier row has, and that earlier row of each."""

    rows: np.ndarray
    first: np.ndarray


def _first_rows(
    table: pa.Table, id_column: str, id_type: IdType, labels: np.ndarray
) -> tuple[np.ndarray, _Repeats]:
    """The first row of each distinct valid ID, and the later rows that repeat an ID with
    the same label. Conflicting labels for one ID are an error naming the IDs. Invalid IDs
    are left out, as PSI leaves them out (README: they never abort a run): Excel's
    "9.13501E+17" stands for many clients, whose labels differ."""
    ids = normalise_column(table.column(id_column), id_type)
    present = np.flatnonzero(valid_mask(ids, id_type))
    codes = np.asarray(ids.take(pa.array(present)).to_pylist(), dtype=object)
    if not len(codes):
        return present, _Repeats(present, present)
    _, first_index, inverse = np.unique(codes, return_index=True, return_inverse=True)
    first_label = labels[present[first_index]][inverse]
    conflicts = np.flatnonzero(labels[present] != first_label)
    if conflicts.size:
        names = sorted({str(codes[i]) for i in conflicts})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise InputDataError(
            f"{len(names)} IDs appear on several rows with different labels ({shown}); "
            "keep one row per ID with its true label"
        )
    first_of_row = present[first_index][inverse]
    later = first_of_row != present
    return np.sort(present[first_index]), _Repeats(present[later], first_of_row[later])


def _repeats_warning(table: pa.Table, features: list[str], repeats: _Repeats) -> str:
    """Rows repeating an ID and its label: kept once, the first; said with the features in
    which they differ from it (one row per loan: the features of whichever came first)."""
    count = len(repeats.rows)
    rows = "row repeats" if count == 1 else "rows repeat"
    differ = np.zeros(count, dtype=bool)
    differing = []
    for name in features:
        column = table.column(name)
        later, first = column.take(pa.array(repeats.rows)), column.take(pa.array(repeats.first))
        same = pc.or_(
            pc.fill_null(pc.equal(later, first), False),
            pc.and_(pc.is_null(later, nan_is_null=True), pc.is_null(first, nan_is_null=True)),
        )
        other = ~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
        if other.any():
            differing.append(name)
            differ |= other
    if not differing:
        return f"{count:,} {rows} an earlier row's ID, label and features; kept once"
    shown = ", ".join(map(repr, differing[:5])) + (" ..." if len(differing) > 5 else "")
    which = "" if differ.all() else f"{int(differ.sum()):,} of them "
    return (
        f"{count:,} {rows} an earlier row's ID and label, {which}with other values in "
        f"{shown} (one row per loan?): the first row of each ID is kept; remove the repeats, "
        "or order the file so that the row to use comes first"
    )


def _check_classes(y: np.ndarray, label: str, min_count: int) -> None:
    defaults, others = int(y.sum()), int(len(y) - y.sum())
    if defaults == 0 or others == 0:
        only = "1 (default)" if defaults else "0 (no default)"
        raise InputDataError(
            f"label column {label!r} has one class only: all {len(y):,} clients are {only}; "
            "a model needs both defaults and non-defaults"
        )
    if min(defaults, others) < min_count:
        raise InputDataError(
            f"label column {label!r} has {defaults:,} defaults and {others:,} non-defaults; "
            f"a model needs at least {min_count} of each"
        )


def unusable_column(column: pa.ChunkedArray, name: str) -> str | None:
    """Why a column cannot help a model (all missing, constant, an identity), or None."""
    kind = column_kind(column.type)
    values = column if kind == "numeric" else pc.cast(column, pa.string())
    if kind == "category":
        values = pc.if_else(pc.equal(pc.utf8_trim_whitespace(values), ""), None, values)
    present = len(values) - values.null_count
    if present == 0:
        return "every value is missing"
    distinct = len(pc.unique(values.drop_null()))
    if distinct == 1 and values.null_count == 0:
        return f"every value is {values.drop_null()[0].as_py()!r}"
    if ID_LIKE_NAME.search(name):
        return "its name says it identifies clients (a name, code or address), not a trait"
    if kind == "category" and present >= ID_LIKE_MIN_ROWS:
        if distinct >= ID_LIKE_DISTINCT_SHARE * present:
            return f"{distinct:,} different texts in {present:,} rows: it names, not groups"
    return None


def check_bureau_features(requested: Iterable[str] | None, catalogue: list[str]) -> None:
    """Every bureau feature the bank asks for is in the bureau's catalogue (from
    ``ListFeatures``, which costs no quota): a typo fails before PSI and before keys."""
    unknown = [name for name in requested or () if name not in catalogue]
    if unknown:
        raise InputDataError(
            f"the bureau offers no feature named {unknown[0]!r}"
            + suggestion(unknown[0], catalogue)
            + (f" ({len(unknown) - 1} more unknown)" if len(unknown) > 1 else "")
            + "; `bank-node features` lists them"
        )


def suggestion(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
