"""The bureau's feature table: loaded once from its data file, looked up by matched IDs."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from node_runtime import tables
from protocols.binning import BinRule, fit_bins
from protocols.errors import InputDataError, PolicyViolation, UnknownSession
from protocols.features import ColumnLayout, column_kind, column_layout
from protocols.ids import IdType, normalise_column

from .store import file_sha256, ids_as_strings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    kind: str
    description: str
    public: bool = False  # anyone can look it up (the business registry, court records)


def descriptions_path_for(data: Path) -> Path:
    """``bureau.parquet`` -> ``bureau.features.json`` (optional: name -> description, or
    name -> {"description": ..., "public": true})."""
    return data.with_name(data.name.split(".")[0] + ".features.json")


def read_catalogue(path: Path) -> tuple[dict[str, str], frozenset[str]]:
    """A features sidecar: each name's description, and the names marked ``"public": true``
    (values anyone can look up for any enterprise: registry fields, court judgements, the
    abnormal-operation list). The model policy neither protects public features nor lets
    them hide the others (SECURITY.md, "Model policy")."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: not a readable JSON object of features ({exc})") from None
    if not isinstance(raw, dict):
        raise InputDataError(f"{path}: expected a JSON object, feature name -> description")
    descriptions: dict[str, str] = {}
    public = set()
    for name, entry in raw.items():
        if isinstance(entry, str):
            descriptions[name] = entry
            continue
        unknown = set(entry) - {"description", "public"} if isinstance(entry, dict) else None
        if unknown is None or unknown or not isinstance(entry.get("public", False), bool):
            raise InputDataError(
                f"{path}: {name!r}: expected a description, or an object with "
                '"description" (text) and "public" (true or false)'
            )
        descriptions[name] = str(entry.get("description", ""))
        if entry.get("public"):
            public.add(name)
    return descriptions, frozenset(public)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _PerVersion(Generic[K, V]):
    """Values decided from the whole table, kept until the data change: the version and its
    values are one attribute, swapped whole, so a cache never meets another version."""

    def __init__(self) -> None:
        self._held: tuple[str, dict[K, V]] = ("", {})

    def get(self, version: str, keys: list[K], compute: Callable[[K], V]) -> list[V]:
        cached, cache = self._held
        if cached != version:
            cache = {}
        for key in keys:
            if key not in cache:
                cache[key] = compute(key)
        self._held = (version, cache)
        return [cache[key] for key in keys]


class BureauFeatures:
    def __init__(
        self,
        data: str | Path,
        id_column: str,
        id_type: IdType,
        descriptions: dict[str, str] | None = None,
        read_options: tables.ReadOptions | None = None,
    ) -> None:
        data = Path(data)
        table = tables.read_table(data, id_column, options=read_options)
        self.id_column = id_column
        self.kinds: dict[str, str] = {}
        for name in table.column_names:
            if name == id_column:
                continue
            try:
                self.kinds[name] = column_kind(table.schema.field(name).type)
            except InputDataError as exc:
                log.warning("%s: column %r is not offered as a feature: %s", data, name, exc)
        self.names = list(self.kinds)
        public: frozenset[str] = frozenset()
        if descriptions is None:
            sidecar = descriptions_path_for(data)
            descriptions, public = read_catalogue(sidecar) if sidecar.exists() else ({}, public)
        self.descriptions = descriptions
        self._marked_public = public  # graph features, added later, may be among them
        self.data = data
        self.id_type = id_type
        self.table = table.drop_columns([id_column])
        self._own = (self.table, dict(self.kinds), dict(descriptions))
        self._ids = normalise_column(table.column(id_column).combine_chunks(), id_type)
        self.enterprises = len(pc.unique(self._ids.drop_null()))
        repeated = self.table.num_rows - self._ids.null_count - self.enterprises
        if repeated:  # a lookup or session takes the first row of an ID
            log.warning(
                "%s: %d rows repeat an earlier row's enterprise ID; the first row of each is "
                "the enterprise's (remove the repeats to say which)",
                data,
                repeated,
            )
        self.data_date = _data_date(data)
        self._own_version = file_sha256(data)
        self.version = self._own_version
        self._layouts: _PerVersion[str, ColumnLayout] = _PerVersion()
        self._bin_rules: _PerVersion[tuple[str, int, int], BinRule] = _PerVersion()

    @property
    def ids(self) -> pa.Array:
        """The normalised ID of each row (null where the file's ID is empty)."""
        return self._ids

    def set_graph(self, columns: pa.Table, descriptions: dict[str, str]) -> None:
        """Offer graph features (one row per enterprise row) beside the file's own columns,
        replacing earlier ones. Each attribute is swapped whole: a request running meanwhile
        sees the old table or the new one."""
        own_table, own_kinds, own_descriptions = self._own
        clash = [n for n in columns.column_names if n in own_kinds]
        if clash:
            raise InputDataError(
                f"{self.data}: columns {', '.join(clash)} clash with the graph features' names"
            )
        if columns.num_rows != own_table.num_rows:
            raise ValueError("graph features need one row per enterprise row")
        table = own_table
        for name in columns.column_names:
            table = table.append_column(name, columns.column(name))
        kinds = own_kinds | {n: "numeric" for n in columns.column_names}
        # the table first and the version last: a request that sees a new name or version
        # finds the new table (``layouts`` reads the version before the table)
        self.table = table
        self.descriptions = own_descriptions | descriptions
        self.kinds = kinds
        self.names = list(kinds)
        self.version = f"{self._own_version}+graph:{_content_hash(columns)}"

    @property
    def public(self) -> frozenset[str]:
        """The features offered that the catalogue marks public."""
        return self._marked_public & self.kinds.keys()

    def catalogue(self) -> list[FeatureInfo]:
        return [
            FeatureInfo(n, self.kinds[n], self.descriptions.get(n, ""), n in self.public)
            for n in self.names
        ]

    def choose(self, requested: tuple[str, ...]) -> list[str]:
        if not self.names:
            raise PolicyViolation("the bureau's data file has no feature columns to train on")
        if not requested:
            return list(self.names)
        unknown = [n for n in requested if n not in self.kinds]
        if unknown:
            raise PolicyViolation(
                f"the bureau has no features named {', '.join(unknown)}; "
                f"ask ListFeatures for its catalogue"
            )
        return list(dict.fromkeys(requested))

    def layouts(self, names: list[str]) -> dict[str, ColumnLayout]:
        """Each feature's model outputs, decided from the whole table (``protocols.features.
        ColumnLayout``: never from a session's rows), kept until the data change."""
        version = self.version  # then the table: set_graph writes them the other way round
        table = self.table
        found = self._layouts.get(version, names, lambda n: column_layout(table.column(n)))
        return dict(zip(names, found, strict=True))

    def bin_rules(self, names: list[str], max_bins: int, min_count: int) -> dict[str, BinRule]:
        """Each feature's bins for information value, fitted on the whole table (never on a
        session's rows: binning_service), kept until the data change."""
        version = self.version  # then the table, as in ``layouts``
        table = self.table
        found = self._bin_rules.get(
            version,
            [(name, max_bins, min_count) for name in names],
            lambda key: fit_bins(key[0], table.column(key[0]), key[1], key[2]),
        )
        return dict(zip(names, found, strict=True))

    def rows_of_bytes(self, ids: np.ndarray) -> pa.Table:
        """:meth:`rows_of` for IDs as the store keeps them (UTF-8 bytes)."""
        return self.rows_of(ids_as_strings(ids))

    def rows_of(self, ids: list[str] | pa.Array) -> pa.Table:
        """The bureau's rows for matched IDs, in their order."""
        wanted = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
        positions = pc.index_in(wanted, value_set=self._ids)
        if positions.null_count:
            raise UnknownSession("the session's matched IDs are no longer in the bureau's data")
        return self.table.take(positions)


def _data_date(path: Path) -> str:
    """The data's date: a Parquet file's ``xinrong.data_date`` metadata, else the day the
    file was last written (UTC)."""
    if path.suffix == ".parquet":
        metadata = pq.read_schema(path).metadata or {}
        stated = metadata.get(b"xinrong.data_date")
        if stated:
            return datetime.date.fromisoformat(stated.decode()).isoformat()
    stamp = path.stat().st_mtime
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).date().isoformat()


def _content_hash(table: pa.Table) -> str:
    digest = hashlib.sha256()
    for column in table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None:
                    digest.update(buffer)
    return digest.hexdigest()[:16]
