"""Reading what ``bank-node train`` wrote: model.json, evaluation.csv and an IV table."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from protocols.errors import InputDataError

MODEL_FILE = "model.json"  # as in bank_node.training
EVALUATION_FILE = "evaluation.csv"


@dataclass
class Scores:
    """The evaluated rows: labels, the joint probability and (maybe) the bank-only one."""

    y: np.ndarray
    joint: np.ndarray
    bank_only: np.ndarray | None

    def subset(self, mask: np.ndarray) -> Scores:
        return Scores(
            self.y[mask], self.joint[mask], None if self.bank_only is None else self.bank_only[mask]
        )


def read_model(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_FILE
    if not model_dir.is_dir():
        raise InputDataError(f"{model_dir}: no such model directory")
    if not path.is_file():
        raise InputDataError(
            f"{path}: no such file; is {model_dir} a model directory written by 'bank-node train'?"
        )
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read the model: {exc}") from None
    if not isinstance(model, dict):
        raise InputDataError(f"{path}: not a model file (expected a JSON object)")
    return model


def _read_csv(path: Path, what: str, text_columns: Iterable[str] = ()) -> pa.Table:
    if not path.is_file():
        raise InputDataError(f"{path}: no such file ({what})")
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in text_columns}
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{path}: cannot read {what} as CSV: {exc}") from None
    if table.num_rows == 0:
        raise InputDataError(f"{path}: {what} has a header but no data rows")
    return table


def _require(table: pa.Table, path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: no column {missing[0]!r}; the file has: {', '.join(table.column_names)}"
        )


def _probabilities(table: pa.Table, path: Path, column: str) -> np.ndarray:
    try:
        values = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"{path}: column {column!r} must hold probabilities") from None
    if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise InputDataError(
            f"{path}: column {column!r} must hold probabilities in [0, 1] on every row"
        )
    return values


def read_evaluation(model_dir: Path, id_column: str | None) -> tuple[np.ndarray, Scores]:
    path = model_dir / EVALUATION_FILE
    if not path.is_file():
        raise InputDataError(
            f"{path}: no such file; 'bank-node train' writes it next to {MODEL_FILE} "
            "(the per-row labels and scores the report is built from)"
        )
    table = _read_csv(path, "the evaluation rows", [id_column, "split"] if id_column else ["split"])
    _require(table, path, ["split", "y", "joint"])
    split = np.array(table.column("split").to_pylist(), dtype=object)
    try:
        y = pc.cast(table.column("y"), pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"{path}: column 'y' must hold 0 or 1 on every row") from None
    if table.column("y").null_count or not np.isin(y, (0, 1)).all():
        raise InputDataError(f"{path}: column 'y' must hold 0 or 1 on every row")
    joint = _probabilities(table, path, "joint")
    bank_only = (
        _probabilities(table, path, "bank_only") if "bank_only" in table.column_names else None
    )
    return split, Scores(y.astype(np.int64), joint, bank_only)


def read_iv(path: Path) -> list[dict[str, Any]]:
    table = _read_csv(path, "the information-value table", ["feature", "party", "kind", "strength"])
    _require(table, path, ["feature", "iv"])
    rows = table.to_pylist()
    for row in rows:
        try:
            row["iv"] = float(row["iv"]) if row["iv"] is not None else math.nan
        except (TypeError, ValueError):
            raise InputDataError(f"{path}: column 'iv' must be numeric") from None
    rows.sort(key=lambda r: -r["iv"] if not math.isnan(r["iv"]) else math.inf)
    return rows
