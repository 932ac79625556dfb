"""The bureau's feature table: loaded once from its data file, looked up by matched IDs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from node_runtime import tables
from protocols.errors import InputDataError, PolicyViolation, UnknownSession
from protocols.features import column_kind
from protocols.ids import IdType, normalise_column

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    kind: str
    description: str


def descriptions_path_for(data: Path) -> Path:
    """``bureau.parquet`` -> ``bureau.features.json`` (optional: name -> description)."""
    return data.with_name(data.name.split(".")[0] + ".features.json")


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
        if descriptions is None:
            sidecar = descriptions_path_for(data)
            descriptions = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        self.descriptions = descriptions
        self.table = table.drop_columns([id_column])
        self._ids = normalise_column(table.column(id_column).combine_chunks(), id_type)

    def catalogue(self) -> list[FeatureInfo]:
        return [FeatureInfo(n, self.kinds[n], self.descriptions.get(n, "")) for n in self.names]

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

    def rows_of(self, ids: list[str]) -> pa.Table:
        """The bureau's rows for matched IDs, in their order."""
        positions = pc.index_in(pa.array(ids, pa.string()), value_set=self._ids)
        if positions.null_count:
            raise UnknownSession("the session's matched IDs are no longer in the bureau's data")
        return self.table.take(positions)
