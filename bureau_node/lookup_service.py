"""Private lookups (labelled unbalanced PSI): the gRPC adapter over ``protocols.lookup`` and
:class:`LookupTables`.

What the bureau learns, call by call:

- ``ListTables``: that the bank asked which tables it may download.
- ``Evaluate`` (and each message of ``EvaluateStream``): how many points the bank sent, and
  when. The points are ``H(x)^a`` under a fresh secret ``a`` per request: uniformly random
  group elements, unlinkable to an ID or to another request (DDH in the random-oracle
  model). On record and charged to the bank's ``daily_lookup_ids`` before the answer
  leaves. A stream also shows that consecutive lookups came from one client process (one
  long-lived call): the TLS connection they share shows that anyway.
- ``FetchTable``: which table version the bank downloads (the same bytes whichever IDs it
  holds). On record.

What the bank learns: with ``(H(x)^a)^k`` it gets ``H(x)^k`` for the IDs it asked about and
opens exactly their entries (and learns which of them the bureau holds: that is the point of
a lookup). It learns the table's size, nothing of other enterprises' payloads (each is
encrypted under a key from a point it cannot compute without ``k``). A curious bank with
legitimate inputs: USCCs are public, so a bank could look up enterprises that are not its
clients; every point costs quota and is on record, which is how the platform bounds and bills
its products today. ``k`` is the bank's lookup scalar, not its PSI scalar ``b``: PSI's
``Exponentiate`` is charged to ``daily_psi_ids``, and its answers open no lookup entry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from protocols import group, lookup
from protocols.errors import ProtocolViolation, StaleKeyEpoch
from xinrong.v1 import lookup_pb2 as pb
from xinrong.v1 import lookup_pb2_grpc

from .audit import collecting_receipts
from .context import BureauContext
from .interceptors import encode_receipts
from .lookup_tables import LookupTables, SealedTable, TableSource

log = logging.getLogger(__name__)

MAX_POINTS = 65_536  # per Evaluate call: 2 MiB each way
ENTRIES_PER_CHUNK = 65_536  # per TableChunk: at most about 2.3 MiB for an 11-byte payload
PARALLEL_FROM = 4_096  # fewer points are exponentiated in the serving thread


class PrivateLookupServicer(lookup_pb2_grpc.PrivateLookupServicer):
    def __init__(self, ctx: BureauContext, tables: LookupTables) -> None:
        self.ctx = ctx
        self.tables = tables

    def ListTables(
        self, request: pb.ListTablesRequest, context: grpc.ServicerContext
    ) -> pb.TableCatalogue:
        try:
            bank_id = self.ctx.access.bank(context)
            allowed = self.ctx.access.policy(bank_id).products
            epoch = self.ctx.store.key_epoch(bank_id)
            infos = [self._info(source, epoch) for source in self.tables.sources(bank_id, allowed)]
            bureau_id = self.ctx.audit.log_id if self.ctx.audit is not None else ""
            return pb.TableCatalogue(
                key_epoch=epoch,
                max_points=MAX_POINTS,
                tables=infos,
                bureau_id=bureau_id,
                max_streams=self.ctx.access.policy(bank_id).max_lookup_streams,
                lookups_left_today=int(self.ctx.access.left(bank_id, "daily_lookup_ids")),
            )
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "lookup_tables", exc)

    def _info(self, source: TableSource, epoch: int) -> pb.TableInfo:
        return pb.TableInfo(
            product=source.product,
            version=self.tables.version(source),
            key_epoch=epoch,
            data_date=source.data_date,
            entries=self.ctx.store.summary.active if self.ctx.store.summary else 0,
            payload_bytes=source.payload_bytes,
            description=source.description,
            neutral_score=source.neutral_score,
            reason_features=list(source.reason_features),
        )

    def Evaluate(
        self, request: pb.BlindedPoints, context: grpc.ServicerContext
    ) -> pb.EvaluatedPoints:
        try:
            return self._answer(self.ctx.access.bank(context), request)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "lookup", exc)

    def EvaluateStream(
        self, requests: Iterator[pb.BlindedPoints], context: grpc.ServicerContext
    ) -> Iterator[pb.EvaluatedPoints]:
        """``Evaluate`` message by message on one call: what a decision costs the bureau
        is then the point, its record and its charge, not a call's setup (TLS session
        lookup, headers, the interceptor's checks). Each answer carries its own receipts."""
        # admitted by the interceptor (bureau_node.admission): at most max_lookup_streams
        # per bank, cancelled when idle, ended after an answer once old
        try:
            bank_id = self.ctx.access.bank(context)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "lookup", exc)
        for request in requests:
            try:
                with collecting_receipts() as receipts:
                    answer = self._answer(bank_id, request)
            except Exception as exc:  # noqa: BLE001 - its refusal's receipt ends the stream
                self.ctx.refuse(context, "lookup", exc)
            answer.receipts = encode_receipts(receipts)
            yield answer

    def _answer(self, bank_id: str, request: pb.BlindedPoints) -> pb.EvaluatedPoints:
        count = len(request.points) // lookup.POINT_BYTES
        if len(request.points) % lookup.POINT_BYTES or not 0 < count <= MAX_POINTS:
            raise ProtocolViolation(
                f"{len(request.points)} bytes are not 1 to {MAX_POINTS:,} points of "
                f"{lookup.POINT_BYTES} bytes"
            )
        epoch = self.ctx.store.key_epoch(bank_id)
        if request.key_epoch != epoch:
            raise StaleKeyEpoch(
                f"the bank asked for key epoch {request.key_epoch}; the bureau's is now "
                f"{epoch}: list the tables again and download their new versions"
            )
        # a malformed request is refused before it is charged (a review's three refused
        # calls had each been charged, and recorded OK beside the refusal)
        group.check_points(request.points, "blinded point")
        self.ctx.access.charge(bank_id, "daily_lookup_ids", count)
        # on record before any answer: every point that reached the key is counted
        self.ctx.record(bank_id, "lookup", "OK", points=count, key_epoch=epoch)
        scalar = self.ctx.store.lookup_scalar(bank_id, epoch)
        return pb.EvaluatedPoints(
            key_epoch=epoch, points=self._evaluate(scalar, request.points, count)
        )

    def _evaluate(self, scalar: bytes, points: bytes, count: int) -> bytes:
        if self.ctx.executor is None or count < PARALLEL_FROM:
            return lookup.evaluate(scalar, points, MAX_POINTS)
        step = PARALLEL_FROM * lookup.POINT_BYTES
        futures = [
            self.ctx.executor.submit(lookup.evaluate, scalar, points[i : i + step], MAX_POINTS)
            for i in range(0, len(points), step)
        ]
        return b"".join(f.result() for f in futures)

    def FetchTable(
        self, request: pb.FetchTableRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TableChunk]:
        try:
            bank_id = self.ctx.access.bank(context)
            allowed = self.ctx.access.policy(bank_id).products
            source = self.tables.source(bank_id, request.product, allowed)
            if source.model_features:
                # the bank's policy today, as for scoring: a model on a feature taken out
                # of its configuration is no longer served
                model_id = request.product.removeprefix(lookup.MODEL_PREFIX)
                self.ctx.check_model_served(bank_id, self.ctx.models.load(bank_id, model_id))
            table = self.tables.sealed(bank_id, source)
            self._check_current(request, table)
            if request.since_version >= table.version.version:
                raise ProtocolViolation(
                    f"an update since version {request.since_version} of a table at version "
                    f"{table.version.version}"
                )
            rows, removed = table.since(request.since_version)
            self.ctx.record(
                bank_id,
                "lookup_table",
                "OK",
                product=request.product,
                version=table.version.version,
                since_version=request.since_version,
                key_epoch=table.version.key_epoch,
                entries=int(rows.size),
            )
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "lookup_table", exc)
        for offset, tags, sealed, revisions, gone in table.chunks(rows, removed, ENTRIES_PER_CHUNK):
            yield pb.TableChunk(
                offset=offset,
                total=int(rows.size),
                tags=tags,
                sealed=sealed,
                revisions=revisions,
                since_version=request.since_version,
                removed=gone,
            )

    @staticmethod
    def _check_current(request: pb.FetchTableRequest, table: SealedTable) -> None:
        now = table.version
        if (request.version, request.key_epoch) != (now.version, now.key_epoch):
            raise StaleKeyEpoch(
                f"{request.product} version {request.version} in key epoch "
                f"{request.key_epoch} is no longer served; the current one is version "
                f"{now.version} in key epoch {now.key_epoch}: list the tables again"
            )
