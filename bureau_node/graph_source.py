"""Keeps the bureau's graph features in line with its files: computed at start (or read from
the state directory when neither the edge file nor the enterprise file changed), and
recomputed while serving when the edge file changes.

Under ``--state-dir``::

    graph/features.parquet   the last graph features, one row per enterprise row
    graph/graph.json         what they were computed from (both files' SHA-256, the flags)
    graph-rejects.csv        the refused edges of the current edge file
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from node_runtime import tables
from protocols.errors import InputDataError

from . import graph
from .edges import DEFAULT_FLAG_COLUMNS, GraphSummary, graph_columns
from .features import BureauFeatures
from .store import file_sha256

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 60.0


class GraphSource:
    def __init__(
        self,
        edge_path: str | Path,
        state_dir: str | Path,
        flag_columns: dict[str, str] | None = None,
    ) -> None:
        self.edge_path = Path(edge_path)
        self.root = Path(state_dir)
        self.flag_columns = dict(DEFAULT_FLAG_COLUMNS if flag_columns is None else flag_columns)
        self.summary: GraphSummary | None = None
        self._seen: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.edge_path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def load(
        self,
        features: BureauFeatures,
        swap: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> GraphSummary:
        """Compute (or read back) the graph features and offer them in ``features``, the
        offer itself inside ``swap()`` (a live refresh: no table sealed across it)."""
        self._seen = self._stat()
        directory = self.root / "graph"
        directory.mkdir(parents=True, exist_ok=True)
        key = {
            "edges_sha256": file_sha256(self.edge_path),
            "data_sha256": file_sha256(Path(features.data)),
            "flags": self.flag_columns,
            "hub_cap": graph.HUB_CAP,
        }
        meta_path, cached_path = directory / "graph.json", directory / "features.parquet"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        if meta is not None and meta.get("key") == key and cached_path.exists():
            columns = pq.read_table(cached_path)
            summary = GraphSummary(**{**meta["summary"], "seconds": 0.0})
            log.info("graph features unchanged since the last start (%d edges)", summary.edges)
        else:
            columns, summary = graph_columns(
                self.edge_path,
                features.table,
                features.ids,
                features.id_type,
                self.flag_columns,
                rejects_path=self.root / "graph-rejects.csv",
            )
            pq.write_table(columns, cached_path.with_suffix(".partial"))
            cached_path.with_suffix(".partial").replace(cached_path)
            tables.atomic_write_bytes(
                meta_path, json.dumps({"key": key, "summary": asdict(summary)}, indent=2).encode()
            )
        descriptions = graph.feature_descriptions(
            tuple(f for f in self.flag_columns if f"graph_share_{f}" in columns.column_names)
        )
        with swap():
            features.set_graph(columns, descriptions)
        self.summary = summary
        return summary

    def refresh_if_changed(
        self,
        features: BureauFeatures,
        swap: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> bool:
        """Recompute when the edge file changed since the last load; a file that cannot be
        read now (half copied, say) keeps the features served until it can."""
        now = self._stat()
        if now is None or now == self._seen:
            return False
        log.info("the edge file %s changed: recomputing the graph features", self.edge_path)
        try:
            self.load(features, swap)
        except InputDataError as exc:  # said in a line: the file's fault, not the node's
            log.error("graph features not refreshed (%s); still serving the previous ones", exc)
            self._seen = now
            return False
        except Exception:  # a bad new file must not stop the node serving the old features
            log.exception("graph features not refreshed; still serving the previous ones")
            self._seen = now
            return False
        return True

    def watch(
        self,
        features: BureauFeatures,
        every: float = DEFAULT_REFRESH_SECONDS,
        swap: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        """Check the edge file every ``every`` seconds in a background thread; the new
        features are offered inside ``swap()`` (the bureau's: no download across it, and
        the banks' lookup keys end before it is left: new data, as at a restart)."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(every):
                self.refresh_if_changed(features, swap)

        self._thread = threading.Thread(target=run, name="graph-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
