"""The bank's side of private lookups (``protocols.lookup``): the bureau's data products and
its halves of the bank's models, for the bank's own IDs, without the bureau learning which.

A lookup is: list the tables (one small call), download each table version once per key
epoch (kept under ``XINRONG_TABLES_DIR``, default ``~/.xinrong/tables``, mode 0700), then one
OPRF call per up to ``max_points`` IDs (``Evaluate``: the bureau sees fresh random points and
their count) and open the entries locally. A second lookup with the same versions downloads
nothing: one applicant costs one round trip.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from node_runtime import tables
from protocols import lookup, psi
from protocols import vertical_lr as vlr
from protocols.errors import (
    InputDataError,
    PeerError,
    ProtocolViolation,
    QuotaExceeded,
    StaleKeyEpoch,
    UnknownSession,
)
from protocols.features import check_peer_names
from protocols.ids import IdType, normalise_column, prepare_ids
from protocols.lookup import MODEL_PAYLOAD_BYTES, MODEL_PREFIX, model_table
from xinrong.v1 import lookup_pb2 as pb

from .client import BureauConnection
from .lookup_stream import EvaluationStream, StreamClosed
from .training import _call

log = logging.getLogger(__name__)

TABLES_ENV = "XINRONG_TABLES_DIR"
BLIND_CHUNK = 8192  # IDs per Evaluate call when there are many
STREAM_POINTS = 1024  # at most this many go on the stream: for them the call is the cost
Say = Callable[[str], None]


def default_tables_dir() -> Path:
    return Path(os.environ.get(TABLES_ENV) or Path.home() / ".xinrong" / "tables")


@dataclass(frozen=True)
class TableInfo:
    product: str
    version: int
    key_epoch: int
    data_date: str
    entries: int
    payload_bytes: int
    description: str
    neutral_score: float
    reason_features: tuple[str, ...]

    @property
    def table_version(self) -> lookup.TableVersion:
        return lookup.TableVersion(self.product, self.version, self.key_epoch)


class LookupClient:
    """Lookups over one connection, with the downloaded tables kept in memory and on disk.
    Keep one for many decisions: after the first, each costs one ``Evaluate`` call."""

    def __init__(
        self,
        connection: BureauConnection,
        tables_dir: str | Path | None = None,
        say: Say | None = None,
        executor: Executor | None = None,
        stream: bool = False,
    ) -> None:
        self.connection = connection
        self.executor = executor
        # with ``stream``, small lookups (online decisions, many over the client's life) go
        # on one long-lived stream when the bureau offers it; a one-off job makes one call
        self.stream = EvaluationStream(connection) if stream else None
        self.say = say or (lambda text: log.info("%s", text))
        self.root = Path(tables_dir or default_tables_dir())
        self.directory = self.root  # set to this bureau and bank's own by catalogue()
        self._catalogue: dict[str, TableInfo] | None = None
        self._key_epoch = 0
        self._max_points = 0
        self._lookups_left: int | None = None
        self._tables: dict[str, lookup.LookupTable] = {}
        self._remembered: dict[str, bytes] | None = None

    def close(self) -> None:
        """End the stream, if one is open (the connection stays open)."""
        if self.stream is not None:
            self.stream.close()

    # -- what there is --------------------------------------------------------------------

    def catalogue(self, refresh: bool = False) -> dict[str, TableInfo]:
        if self._catalogue is None or refresh:
            answer = _call(
                "listing the bureau's lookup tables",
                lambda: self.connection.lookup.ListTables(
                    pb.ListTablesRequest(), timeout=60, metadata=self.connection.metadata
                ),
            )
            if not 0 < answer.max_points <= 1 << 20:
                raise ProtocolViolation(f"the bureau's max_points {answer.max_points} is absurd")
            self._key_epoch, self._max_points = answer.key_epoch, answer.max_points
            # what is left of the day's lookups (None: a bureau from before it said so)
            self._lookups_left = (
                answer.lookups_left_today if answer.HasField("lookups_left_today") else None
            )
            if answer.max_streams == 0:  # a bureau that offers no streams
                self.stream = None
            elif self.stream is not None:
                self.stream.max_points = answer.max_points
            # by the bureau's lasting name, not its address: a restart on another port, or
            # another address for the same bureau, finds the tables already kept
            if not re.fullmatch(r"[0-9a-f]{64}", answer.bureau_id):
                raise ProtocolViolation("the bureau's ID is not 64 hexadecimal digits")
            self.directory = self.root / f"{answer.bureau_id[:32]}-{self.connection.bank_id}"
            for t in answer.tables:  # before a download is sized or timed by these numbers
                lookup.check_table_size(
                    t.entries, t.payload_bytes, f"the bureau's {t.product!r} table"
                )
            self._catalogue = {
                t.product: TableInfo(
                    t.product,
                    t.version,
                    t.key_epoch,
                    t.data_date,
                    t.entries,
                    t.payload_bytes,
                    t.description,
                    t.neutral_score,
                    tuple(t.reason_features),
                )
                for t in answer.tables
            }
        return self._catalogue

    def info(self, product: str) -> TableInfo:
        catalogue = self.catalogue()
        if product not in catalogue:
            offered = ", ".join(p for p in catalogue if not p.startswith(MODEL_PREFIX))
            why = (
                f"data products it may look up: {offered}; ask the bureau to add it to its "
                "configuration"
                if offered
                else "it serves none to this bank: none are in its configuration for this "
                "bank, or it was started without its product files (--registry, --events)"
            )
            raise InputDataError(f"the bureau offers this bank no table {product!r} ({why})")
        return catalogue[product]

    def forget(self, product: str) -> int:
        """Remove this machine's copy of a product's table (a deleted model's): how many
        files went (0 or 1)."""
        self.catalogue(refresh=True)  # the directory is named by the bureau's lasting id
        self._tables.pop(product, None)
        path = self._path(product)
        if not path.exists():
            return 0
        path.unlink()
        return 1

    # -- tables ---------------------------------------------------------------------------

    def table(self, product: str) -> lookup.LookupTable:
        """The product's table at the version the bureau lists: from memory, from the kept
        copy, brought up to date by an update (what changed since the kept version, same
        key epoch), or downloaded whole."""
        info = self.info(product)
        cached = self._tables.get(product)
        if cached is not None and cached.version == info.table_version:
            return cached
        kept = self._load(info)
        if kept is not None and kept.version != info.table_version:
            same_epoch = kept.version.key_epoch == info.key_epoch
            kept = (
                self._update(info, kept)
                if same_epoch and kept.version.version < info.version
                else None
            )
        table = kept or self._fetch(info, None)
        self._tables[product] = table
        return table

    def _path(self, product: str) -> Path:
        return self.directory / f"{product}.npz"

    def _load(self, info: TableInfo) -> lookup.LookupTable | None:
        """The kept copy of the product's table, at whatever version it is."""
        path = self._path(info.product)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as kept:
                version = lookup.TableVersion(
                    info.product, int(kept["version"]), int(kept["key_epoch"])
                )
                table = lookup.LookupTable(
                    version,
                    int(kept["payload_bytes"]),
                    kept["tags"],
                    kept["sealed"],
                    kept["revisions"],
                )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: the kept table is unreadable (%s); downloading it again", path, exc)
            return None
        width = lookup.sealed_bytes(table.payload_bytes)
        if (
            table.tags.dtype != lookup.TAG_ORDER
            or table.sealed.shape != (table.tags.size, width)
            or table.revisions.shape != table.tags.shape
            or table.payload_bytes != info.payload_bytes
        ):
            log.warning("%s: a kept table does not match its description; downloading", path)
            return None
        return table

    def _save(self, table: lookup.LookupTable) -> None:
        tables.private_dir(self.directory)
        tables.atomic_write(
            self._path(table.version.product),
            lambda h: np.savez(
                h,
                version=np.array(table.version.version),
                key_epoch=np.array(table.version.key_epoch),
                payload_bytes=np.array(table.payload_bytes),
                tags=table.tags,
                sealed=table.sealed,
                revisions=table.revisions,
            ),
        )

    def _update(self, info: TableInfo, kept: lookup.LookupTable) -> lookup.LookupTable:
        since = kept.version.version
        self.say(
            f"updating the bureau's {info.product} table from version {since} to {info.version}"
        )
        return self._fetch(info, kept)

    def _fetch(self, info: TableInfo, kept: lookup.LookupTable | None) -> lookup.LookupTable:
        """Download the whole table (``kept`` None) or what changed since ``kept``."""
        since = 0 if kept is None else kept.version.version
        if kept is None:
            self.say(
                f"downloading the bureau's {info.product} table (version {info.version}, "
                f"{info.entries:,} enterprises, data of {info.data_date})"
            )
        request = pb.FetchTableRequest(
            product=info.product, version=info.version, key_epoch=info.key_epoch,
            since_version=since,
        )  # fmt: skip
        stream = self.connection.lookup.FetchTable(
            request, timeout=120 + info.entries * 2e-5, metadata=self.connection.metadata
        )
        removed: list[bytes] = []

        def assemble() -> lookup.LookupTable:
            answers = iter(stream)
            head = next(answers, None)
            if head is None:
                raise ProtocolViolation(f"the bureau sent no {info.product} table")
            if head.total > info.entries or head.since_version != since:
                raise ProtocolViolation(
                    f"the bureau announced {head.total:,} entries since version "
                    f"{head.since_version} for a table of {info.entries:,} enterprises asked "
                    f"since version {since}"
                )
            # an update's removed tags come spread over its chunks; only those the bank's
            # copy holds are kept (the bureau also names enterprises that came and went
            # since the bank's version, and a hostile bureau's endless stream of them would
            # fill memory)
            held = np.zeros(0, np.uint64) if kept is None else kept.tags.astype(np.uint64)

            def chunks() -> Iterator[lookup.TableChunk]:
                for chunk in itertools.chain([head], answers):
                    if chunk.total != head.total:
                        raise ProtocolViolation("the table's announced size changed mid-way")
                    if len(chunk.removed) % lookup.LOOKUP_TAG_BYTES:
                        raise ProtocolViolation("removed tags are 8 bytes each")
                    gone = np.frombuffer(chunk.removed, lookup.TAG_ORDER).astype(np.uint64)
                    removed.append(gone[np.isin(gone, held)].astype(lookup.TAG_ORDER).tobytes())
                    yield lookup.TableChunk(chunk.offset, chunk.tags, chunk.sealed, chunk.revisions)

            return lookup.LookupTable.from_chunks(
                info.table_version, info.payload_bytes, head.total, chunks()
            )

        fetched = _call(f"downloading the {info.product} table", assemble)
        table = fetched if kept is None else kept.updated(fetched, b"".join(removed))
        self._save(table)
        return table

    # -- the OPRF -------------------------------------------------------------------------

    @contextlib.contextmanager
    def reusing_points(self) -> Iterator[LookupClient]:
        """Within the block, an ID evaluated once is not sent again (a batch run scores and
        looks up the same portfolio: one ``Evaluate`` per ID, not two). The points are
        forgotten when the block ends."""
        self._remembered = {}
        try:
            yield self
        finally:
            self._remembered = None

    def points(self, ids: Sequence[str]) -> list[bytes]:
        """``H(x)^k`` for each ID (normalised), ``k`` the bureau's lookup key for this bank;
        see :meth:`reusing_points`."""
        if self._remembered is None:
            return self._evaluate_all(ids)
        missing = [x for x in dict.fromkeys(ids) if x not in self._remembered]
        self._remembered.update(zip(missing, self._evaluate_all(missing), strict=True))
        return [self._remembered[x] for x in ids]

    def _check_quota_left(self, count: int) -> None:
        """A run larger than what is left of the day's lookups is refused before its first
        chunk: a review's run of 200,000 was charged chunk by chunk until the bureau refused
        one, and ended with no output and the day's quota spent."""
        self.catalogue(refresh=True)  # what is left now, not when the catalogue was read
        left = self._lookups_left
        if left is not None and count > left:
            raise QuotaExceeded(
                f"this run looks up {count:,} enterprises and bank {self.connection.bank_id} "
                f"has {left:,} lookups left today (daily_lookup_ids, "
                "counted by UTC day): nothing was sent or charged; look up fewer at a time "
                "(split the file), wait for 00:00 UTC, or ask the bureau's operator"
            )

    def _evaluate_all(self, ids: Sequence[str]) -> list[bytes]:
        """Many IDs go in chunks: blinded on the executor's workers, evaluated by the
        bureau while the next chunks are blinded, and unblinded on the workers."""
        if not ids:
            return []
        self.catalogue()
        if len(ids) <= STREAM_POINTS:  # an online decision: no chunks, no pipeline
            query = lookup.blind([x.encode() for x in ids])
            return lookup.unblind(query, self._evaluate(query))
        self._check_quota_left(len(ids))
        size = min(self._max_points, BLIND_CHUNK) if len(ids) > BLIND_CHUNK else len(ids)
        spans = list(psi.chunk_offsets(len(ids), max(size, 1)))
        run = self.executor if len(spans) > 1 else None
        blinded = psi.ordered_map(
            run, lookup.blind, (([x.encode() for x in ids[a:b]],) for a, b in spans)
        )
        evaluated = ((query, self._evaluate(query)) for query in blinded)
        out: list[bytes] = []
        for chunk in psi.ordered_map(run, lookup.unblind, evaluated):
            out.extend(chunk)
        return out

    def _evaluate(self, query: lookup.BlindedQuery) -> bytes:
        request = pb.BlindedPoints(key_epoch=self._key_epoch, points=query.points)
        timeout = 30 + 1e-3 * query.count
        answer = None
        stream = self.stream
        extra = None
        if stream is not None and query.count <= STREAM_POINTS and stream.available():
            with contextlib.suppress(StreamClosed):
                answer = _call(
                    "looking up enterprises privately", lambda: stream.evaluate(request, timeout)
                )
            if answer is None:  # the stream broke, perhaps after sending these points
                extra, points = lookup.blind_again(query.points)
                request = pb.BlindedPoints(key_epoch=self._key_epoch, points=points)
        if answer is None:
            fallback = request
            answer = _call(
                "looking up enterprises privately",
                lambda: self.connection.lookup.Evaluate(
                    fallback, timeout=timeout, metadata=self.connection.metadata
                ),
            )
        if answer.key_epoch != self._key_epoch:
            raise StaleKeyEpoch("the bureau answered in another key epoch: look up again")
        if extra is not None:
            return lookup.unblind_again(extra, bytes(answer.points))
        return bytes(answer.points)

    def open(self, products: Sequence[str], ids: Sequence[str]) -> dict[str, list[bytes | None]]:
        """Each product's payloads for the IDs (None: the bureau holds no entry), in order.
        A key rotation between listing and evaluating is retried once."""
        for attempt in (1, 2):
            try:
                tables = {p: self.table(p) for p in products}
                points = self.points(ids) if ids else []
                opened = {}
                for product, table in tables.items():
                    opened[product], failed = table.open_counted(points, self.executor)
                    _tell_unreadable(self, product, failed, "failed authentication")
                return opened
            except (StaleKeyEpoch, PeerError) as exc:
                stale = isinstance(exc, StaleKeyEpoch) or "key epoch" in str(exc)
                if attempt == 2 or not stale:
                    raise
                self.say("the bureau rotated its key or its data: listing its tables again")
                self.catalogue(refresh=True)
        raise AssertionError("unreachable")


# ------------------------------------------------------------------------ products


def look_up(
    connection: BureauConnection,
    ids: Sequence[str],
    products: Sequence[str],
    say: Say | None = None,
    client: LookupClient | None = None,
) -> pa.Table:
    """The products' columns (``protocols.products``) for normalised IDs, in their order;
    nulls where the bureau holds no entry."""
    from protocols import products as catalogue

    unknown = [p for p in products if p not in catalogue.PRODUCTS]
    if unknown:
        raise InputDataError(
            f"no data products {unknown}; the bureau's are {', '.join(catalogue.PRODUCTS)}"
        )
    if not products:
        raise InputDataError("name at least one data product to look up")
    client = client or LookupClient(connection, say=say)
    opened = client.open(products, ids)
    columns: dict[str, list[Any]] = {}
    for product in products:
        names = catalogue.columns(product)
        values: dict[str, list[Any]] = {name: [] for name in names}
        data_date = _iso_date(client.info(product).data_date)
        unreadable = 0
        for payload in opened[product]:
            decoded: dict[str, object] = {}
            if payload is not None:
                try:
                    decoded = catalogue.decode(product, payload, data_date)
                except ProtocolViolation:
                    unreadable += 1
            for name in names:
                values[name].append(decoded.get(name))
        _tell_unreadable(client, product, unreadable)
        columns |= values
    return pa.table(columns)


def _tell_unreadable(
    client: LookupClient, table: str, count: int, why: str = "opened but could not be read"
) -> None:
    """An entry that fails authentication, or opens but does not decode, is taken as not
    held, and said, never raised: stopping at one would tell the bureau, by the calls that
    do not follow, that the bank looked up the enterprise it had made that entry bad for."""
    if count:
        client.say(
            f"warning: {count} entries of the bureau's {table} table {why}; they are taken as not "
            "held (the table kept in the tables directory was altered, or the bureau sent "
            "bad entries: ask the bureau's operator to check the table)"
        )
        log.warning("%d entries of the bureau's %s table %s", count, table, why)


def lookup_rows(
    connection: BureauConnection,
    table: pa.Table,
    id_column: str,
    id_type: IdType,
    products: Sequence[str],
    say: Say | None = None,
    client: LookupClient | None = None,
) -> tuple[pa.Table, int, int]:
    """The products for every row of ``table``, in its order: the ID column as given, then
    the products' columns (nulls for invalid IDs and IDs the bureau does not hold); how many
    distinct valid IDs were looked up (each once), and how many of them the bureau holds."""
    prepared = prepare_ids(table.column(id_column), id_type)
    found = look_up(connection, prepared.ids, products, say, client)
    normalised = normalise_column(table.column(id_column).combine_chunks(), id_type)
    where = pc.index_in(normalised, value_set=prepared.distinct)
    spread = found.take(where)
    result = pa.table({id_column: table.column(id_column)})
    for name in spread.column_names:
        result = result.append_column(name, spread.column(name))
    date = found.column(f"{products[0]}_data_date")
    return result, len(prepared), len(date) - date.null_count


def lookup_job(
    bureau: str,
    data: str | Path,
    id_column: str,
    products: Sequence[str],
    out: str | Path,
    bank_id: str,
    id_type: IdType = IdType.USCC,
    tls_dir: str | Path | None = None,
    say: Say | None = None,
    read_options: tables.ReadOptions | None = None,
) -> dict[str, Any]:
    """``bank-node lookup``: the products for every row of a file, written to ``out`` (the
    ID column as given, then the products' columns; empty where the bureau has no entry)."""
    started = time.perf_counter()
    table = tables.read_table(data, id_column, columns=[], options=read_options)
    with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
        result, valid, known = lookup_rows(connection, table, id_column, id_type, products, say)
    tables.write_csv(result, out)
    return {
        "rows": table.num_rows,
        "looked_up": valid,
        "known_to_bureau": known,
        "products": list(products),
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ProtocolViolation(f"the bureau's data date {text!r} is not an ISO date") from None


# ------------------------------------------------------------------------ private scoring


def private_bureau_lookup(
    connection: BureauConnection,
    model: dict[str, Any],
    say: Say | None = None,
    client: LookupClient | None = None,
) -> Callable[[list[str]], tuple[list[str], np.ndarray, tuple[list[str], np.ndarray]]]:
    """A ``BureauLookup`` for ``training.score`` that tells the bureau nothing of who is
    scored: the bureau's ``u_B`` and reason codes come from the model's table."""
    client = client or LookupClient(connection, say=say)
    product = model_table(model["model_id"])

    def bureau_part(ids: list[str]) -> tuple[list[str], np.ndarray, tuple[list[str], np.ndarray]]:
        if product not in client.catalogue():
            raise UnknownSession(
                f"the bureau has no model {model['model_id']} for bank "
                f"{connection.bank_id}: it was deleted there, or trained for another bank"
            )
        info = client.info(product)
        if info.payload_bytes != MODEL_PAYLOAD_BYTES:
            raise ProtocolViolation(
                f"the bureau's model table has {info.payload_bytes}-byte entries, not "
                f"{MODEL_PAYLOAD_BYTES}"
            )
        names = check_peer_names(info.reason_features, "the bureau's model table")
        if not set(names) <= set(model["bureau_features"]):
            raise ProtocolViolation("the bureau's model table names features its model lacks")
        payloads = client.open([product], ids)[product]
        known = [i for i, p in enumerate(payloads) if p is not None]
        raw = np.frombuffer(b"".join(payloads[i] for i in known), dtype=np.uint8)  # type: ignore[misc]
        raw = raw.reshape(len(known), MODEL_PAYLOAD_BYTES)
        scores = raw[:, :8].copy().view("<f8").ravel().astype(np.float64)
        codes = raw[:, 8:].copy()
        # a score beyond any model's (not finite, or past the bound the training clips the
        # bureau's scores to) or a code naming no feature: that entry is taken as not held
        readable = np.isfinite(scores) & (np.abs(scores) <= vlr.SCORE_BOUND)
        readable &= (codes <= len(names)).all(axis=1)
        _tell_unreadable(client, product, int((~readable).sum()))
        chosen = [ids[i] for i, ok in zip(known, readable, strict=True) if ok]
        return chosen, scores[readable], (names, codes[readable])

    return bureau_part
