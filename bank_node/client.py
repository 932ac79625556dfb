"""The bank's connection to the bureau, and the PSI run over it.

The bank only ever dials out. Identity and transport are set up here, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path

import grpc

from node_runtime.transport import codec
from node_runtime.transport.certs import bank_files
from node_runtime.transport.channels import bank_metadata, open_channel, valid_bank_id
from node_runtime.transport.errors import raise_from_rpc
from node_runtime.transport.probe import BureauUnreachable, probe
from protocols import psi
from protocols.errors import ProtocolViolation
from xinrong.v1 import lookup_pb2_grpc, model_pb2_grpc, psi_pb2_grpc
from xinrong.v1 import psi_pb2 as pb

from .receipts import ReceiptCollector, ReceiptStore

log = logging.getLogger(__name__)

# The bank's name on plaintext gRPC (development), when none is given.
DEFAULT_BANK_ID = "demo-bank"

# on_progress(step, done, total): steps are "bureau preparation", "blinded", "bureau tags"
OnProgress = Callable[[str, int, int], None]


def _quiet(step: str, done: int, total: int) -> None:
    return None


class BureauConnection:
    """A channel to one bureau, with the bank's identity attached to every call."""

    def __init__(
        self,
        address: str,
        bank_id: str,
        connect_timeout: float = 10.0,
        tls_dir: str | Path | None = None,
        receipts_dir: str | Path | None = None,
    ) -> None:
        if not valid_bank_id(bank_id):
            raise ValueError(
                f"bank id {bank_id!r} must be 1-64 ASCII letters, digits, '-', '_' or '.', "
                "starting with a letter or digit"
            )
        self.address = address
        self.bank_id = bank_id
        probe(address, tls_dir)  # names why a connection cannot be made, in about a second
        self._raw_channel = open_channel(address, bank_files(tls_dir) if tls_dir else None)
        # every answer's audit receipts are kept (receipts.py): the bank's own evidence
        self.receipts = ReceiptCollector(ReceiptStore(receipts_dir, bank_id))
        self.channel = grpc.intercept_channel(self._raw_channel, self.receipts)
        self.metadata = bank_metadata(bank_id)
        self.psi = psi_pb2_grpc.PrivateSetIntersectionStub(self.channel)
        self.catalogue = model_pb2_grpc.CatalogueStub(self.channel)
        self.training = model_pb2_grpc.JointTrainingStub(self.channel)
        self.binning = model_pb2_grpc.BinningStub(self.channel)
        self.scoring = model_pb2_grpc.ScoringStub(self.channel)
        self.lookup = lookup_pb2_grpc.PrivateLookupStub(self.channel)
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            self._raw_channel.close()
            raise BureauUnreachable(
                f"cannot reach the bureau at {address} within {connect_timeout:g} s: is the "
                "bureau node running, is the address right"
                + (", and do both use TLS certificates from the same CA?" if tls_dir else "?")
            ) from None

    def close(self) -> None:
        self._raw_channel.close()
        self.receipts.store.sync()

    def __enter__(self) -> BureauConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Deadlines: generous, but every call has one. Per-ID budgets leave room for a slow bureau.
OPEN_DEADLINE = 3600.0  # may include the bureau's first-time preparation, with progress


def _deadline(base: float, items: int, per_item: float) -> float:
    return base + items * per_item


def run_psi(
    connection: BureauConnection,
    ids: Sequence[str],
    reveal: psi.Reveal = psi.Reveal.BOTH,
    executor: Executor | None = None,
    on_progress: OnProgress = _quiet,
    chunk: int = psi.DEFAULT_CHUNK,
) -> psi.BankPsiResult:
    """Run one PSI session with the bureau; returns the matched IDs sorted (the order the
    bureau has them in too)."""
    session = psi.BankPsiSession(ids, reveal=reveal, chunk=chunk)
    stub, metadata = connection.psi, connection.metadata

    try:
        request = codec.psi_request_to_proto(session.request())
        for update in stub.OpenSession(request, timeout=OPEN_DEADLINE, metadata=metadata):
            if update.HasField("progress"):
                on_progress("bureau preparation", update.progress.done, update.progress.total)
            elif update.HasField("opened"):
                session.accept_params(codec.psi_params_from_proto(update.opened))
        if session.params is None:
            raise ProtocolViolation("the bureau ended OpenSession without opening a session")
    except grpc.RpcError as err:
        raise_from_rpc(err, "opening the PSI session")

    n = len(ids)
    if n:

        def requests() -> Iterator[pb.BlindedIds]:
            for message in session.blinded_ids(executor):
                yield codec.blinded_to_proto(message)

        try:
            responses = stub.Exponentiate(
                requests(), timeout=_deadline(120, n, 0.002), metadata=metadata
            )
            done = 0
            for response in responses:
                message = codec.exponentiated_from_proto(response)
                session.receive_exponentiated(message, executor)
                done += len(message.points) // 32
                on_progress("blinded", done, n)
        except grpc.RpcError as err:
            raise_from_rpc(err, "exchanging blinded IDs")

    bureau_size = session.params.bureau_set_size
    try:
        received = 0
        tags_call = stub.FetchTags(
            pb.FetchTagsRequest(session_id=session.session_id),
            timeout=_deadline(120, bureau_size, 0.0001),
            metadata=metadata,
        )
        for response in tags_call:
            tags = codec.tags_from_proto(response)
            session.receive_bureau_tags(tags)
            received += len(tags.tags) // 8
            on_progress("bureau tags", received, bureau_size)
    except grpc.RpcError as err:
        raise_from_rpc(err, "fetching the bureau's tags")

    result = session.intersect()
    if reveal is psi.Reveal.BOTH:
        try:
            summary = stub.RevealIntersection(
                (codec.matched_to_proto(m) for m in session.matched_tags()),
                timeout=_deadline(120, len(result.matched_ids), 0.0001),
                metadata=metadata,
            )
        except grpc.RpcError as err:
            raise_from_rpc(err, "revealing the intersection to the bureau")
        session.confirm_reveal(codec.summary_from_proto(summary))
    return result
