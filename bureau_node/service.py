"""The bureau's gRPC servicer: decode, call the protocol, encode. Nothing else lives here."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import NoReturn

import grpc

from node_runtime.transport import codec
from node_runtime.transport.errors import abort_with, status_for
from protocols import psi
from protocols.errors import PolicyViolation, ProtocolViolation, UnknownSession
from xinrong.v1 import psi_pb2 as pb
from xinrong.v1 import psi_pb2_grpc

from .audit import AuditLog
from .config import Access
from .store import BureauStore

log = logging.getLogger(__name__)

READ_AHEAD = 8  # chunks being exponentiated at once per stream
PROGRESS_EVERY = 0.5  # seconds between preparation progress messages
# The bureau's whole tag table goes out with every fetch (80 MB at 10,000,000 enterprises):
# once per session, and once more for a bank whose first download broke off.
MAX_TAG_FETCHES = 2


@dataclass
class _Entry:
    bank_id: str
    session: psi.BureauPsiSession
    opened: float
    exponentiated: bool = False
    tags_sent: bool = False
    tag_fetches: int = 0  # a session's tags are sent at most MAX_TAG_FETCHES times


class SessionRegistry:
    """Open sessions by id; a bank sees only its own, and stale ones expire."""

    def __init__(self, ttl_seconds: float = 3600.0, max_per_bank: int = 8) -> None:
        self.ttl = ttl_seconds
        self.max_per_bank = max_per_bank
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def add(self, bank_id: str, session: psi.BureauPsiSession) -> None:
        now = time.monotonic()
        with self._lock:
            for key in [k for k, e in self._entries.items() if now - e.opened > self.ttl]:
                del self._entries[key]
            mine = [k for k, e in self._entries.items() if e.bank_id == bank_id]
            if len(mine) >= self.max_per_bank:  # the oldest gives way
                del self._entries[min(mine, key=lambda k: self._entries[k].opened)]
            self._entries[session.session_id] = _Entry(bank_id, session, now)

    def get(self, bank_id: str, session_id: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(session_id)
        if entry is None or entry.bank_id != bank_id:
            raise UnknownSession(
                f"no open PSI session {session_id!r} for bank {bank_id!r} (finished, expired "
                "or never opened)"
            )
        return entry

    def same_stream(self, entry: _Entry | None, bank_id: str, session_id: str, rpc: str) -> _Entry:
        """The session a streamed message names: looked up on the first message, and the
        same one on every later message of the stream."""
        if entry is None:
            return self.get(bank_id, session_id)
        if session_id != entry.session.session_id:
            raise ProtocolViolation(f"one {rpc} stream serves one session")
        return entry

    def close(self, session_id: str) -> bool:
        """Whether this call closed the session (False: it was closed already)."""
        with self._lock:
            return self._entries.pop(session_id, None) is not None

    def __len__(self) -> int:
        return len(self._entries)


class PsiServicer(psi_pb2_grpc.PrivateSetIntersectionServicer):
    def __init__(
        self,
        store: BureauStore,
        executor: Executor | None = None,
        limits: psi.PsiLimits = psi.PsiLimits(),
        sessions: SessionRegistry | None = None,
        access: Access | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.access = access or Access(store.root)
        self.audit = audit
        self.store = store
        self.executor = executor
        self.limits = limits
        self.sessions = sessions or SessionRegistry()

    def OpenSession(
        self, request: pb.OpenSessionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.OpenSessionUpdate]:
        charged = False
        try:
            bank_id = self.access.bank(context)
            psi_request = codec.psi_request_from_proto(request)
            psi.check_request(psi_request, self.limits)
            if psi_request.bank_set_size == 0:  # it would only fetch the bureau's tags
                raise ProtocolViolation("a PSI session needs at least one of the bank's IDs")
            amounts: dict[str, float] = {
                "daily_psi_ids": psi_request.bank_set_size,
                "daily_psi_sessions": 1,
            }
            self.access.charge_all(bank_id, amounts)
            charged = True
            table = None
            last = 0.0
            try:
                for item in self.store.prepare_bank(bank_id, self.executor):
                    if isinstance(item, psi.BureauTagTable):
                        table = item
                    elif time.monotonic() - last > PROGRESS_EVERY:
                        last = time.monotonic()
                        done, total = item
                        yield pb.OpenSessionUpdate(
                            progress=pb.PreparationProgress(done=done, total=total)
                        )
            except GeneratorExit:  # the bank hung up while the bureau prepared: charged
                self._note(bank_id, "psi_opened", "CANCELLED", bank_ids=psi_request.bank_set_size)
                raise
            assert table is not None
            floor = max(self.limits.min_intersection, self.access.policy(bank_id).min_intersection)
            limits = dataclasses.replace(self.limits, min_intersection=floor)
            session = psi.BureauPsiSession(table, psi_request, limits)
            self.sessions.add(bank_id, session)
            # on record before the bank holds a session id: every query that can reach the
            # bank's key is counted, whatever the session does next
            self._note(
                bank_id,
                "psi_opened",
                "OK",
                session_id=session.session_id,
                reveal=psi_request.reveal.value,
                bank_ids=psi_request.bank_set_size,
                bureau_ids=table.size,
                key_epoch=table.key_epoch,
            )
            log.info(
                "PSI session %s opened: bank=%s bank_ids=%d bureau_ids=%d reveal=%s epoch=%d",
                session.session_id,
                bank_id,
                psi_request.bank_set_size,
                table.size,
                psi_request.reveal.value,
                table.key_epoch,
            )
            yield pb.OpenSessionUpdate(opened=codec.psi_params_to_proto(session.params))
        except Exception as exc:  # noqa: BLE001 - every error leaves through the catalogue
            # what was charged is always on record; a refusal that charged nothing is
            # within the caller's refusal budget (a review's 400 in half a second were not)
            self._refused(context, exc, **({"bank_ids": request.bank_set_size} if charged else {}))

    def Exponentiate(
        self, request_iterator: Iterator[pb.BlindedIds], context: grpc.ServicerContext
    ) -> Iterator[pb.ExponentiatedIds]:
        pending: deque[Future[psi.ExponentiatedIds]] = deque()
        entry = None
        noted = False
        try:
            bank_id = self.access.bank(context)
            for message in request_iterator:
                blinded = codec.blinded_from_proto(message)
                entry = self.sessions.same_stream(
                    entry, bank_id, blinded.session_id, "Exponentiate"
                )
                pending.append(entry.session.exponentiate(blinded, self.executor))
                while pending and (len(pending) > READ_AHEAD or pending[0].done()):
                    yield codec.exponentiated_to_proto(pending.popleft().result())
            if entry is None:
                raise ProtocolViolation("the stream of blinded IDs was empty")
            entry.session.blinded_stream_ended()
            self._note_exponentiated(entry, "OK")  # before the last answers leave
            noted = True
            while pending:
                yield codec.exponentiated_to_proto(pending.popleft().result())
            entry.exponentiated = True
            self._finish_if_bank_only(entry)
        except Exception as exc:  # noqa: BLE001
            for future in pending:
                future.cancel()
            if entry is not None:
                self.sessions.close(entry.session.session_id)
                if not noted:
                    self._note_exponentiated(entry, status_for(exc).name)
                    noted = True
            self._refused(context, exc)
        finally:  # the bank hung up mid-stream: what it was sent is still on record
            if entry is not None and not noted:
                self._note_exponentiated(entry, "CANCELLED")

    def FetchTags(
        self, request: pb.FetchTagsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BureauTags]:
        try:
            bank_id = self.access.bank(context)
            entry = self.sessions.get(bank_id, request.session_id)
            chunks = entry.session.tags(self.limits.max_chunk)  # refused before it counts
            entry.tag_fetches += 1
            if entry.tag_fetches > MAX_TAG_FETCHES:
                raise PolicyViolation(
                    f"the tags of session {request.session_id} were sent {MAX_TAG_FETCHES} "
                    "times already: open a new session"
                )
            for chunk in chunks:
                yield codec.tags_to_proto(chunk)
            entry.tags_sent = True
            self._finish_if_bank_only(entry)
        except Exception as exc:  # noqa: BLE001
            self._refused(context, exc)

    def RevealIntersection(
        self, request_iterator: Iterator[pb.MatchedTags], context: grpc.ServicerContext
    ) -> pb.RevealSummary:
        entry = None
        try:
            bank_id = self.access.bank(context)
            for message in request_iterator:
                matched = codec.matched_from_proto(message)
                entry = self.sessions.same_stream(
                    entry, bank_id, matched.session_id, "RevealIntersection"
                )
                entry.session.receive_matched(matched)
            if entry is None:
                raise ProtocolViolation("the stream of matched tags was empty")
            summary = entry.session.finish_reveal()
            self._record(entry, summary.matched, entry.session.matched_ids)
            return codec.summary_to_proto(summary)
        except Exception as exc:  # noqa: BLE001
            if entry is not None:
                self.sessions.close(entry.session.session_id)
            self._refused(context, exc)

    def _refused(
        self, context: grpc.ServicerContext, exc: BaseException, **details: object
    ) -> NoReturn:
        """A session ended by an error: on record (before the answer leaves), then answered."""
        recorded = self.audit.refusal(context, "psi", exc, **details) if self.audit else True
        abort_with(context, exc, quiet=not recorded)

    def _note(self, bank_id: str, event: str, outcome: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.append(bank_id, event, outcome, **details)

    def _note_exponentiated(self, entry: _Entry, outcome: str) -> None:
        """How many of the bank's blinded IDs met the bureau's key in this session."""
        session = entry.session
        self._note(
            entry.bank_id,
            "psi_exponentiated",
            outcome,
            session_id=session.session_id,
            exponentiated=session.received,
            key_epoch=session.table.key_epoch,
        )

    def _finish_if_bank_only(self, entry: _Entry) -> None:
        if (
            entry.session.request.reveal is psi.Reveal.BANK
            and entry.exponentiated
            and entry.tags_sent
        ):
            self._record(entry, None, None)

    def _record(self, entry: _Entry, matched: int | None, matched_ids: list[str] | None) -> None:
        """The session on record, once: it is closed first, and a second finisher (the
        tags' and the exponentiation's streams of a bank-mode session ending together, or
        two reveal streams) finds it closed and records nothing."""
        session = entry.session
        if not self.sessions.close(session.session_id):
            return
        record = {
            "session_id": session.session_id,
            "bank_id": entry.bank_id,
            "reveal": session.request.reveal.value,
            "bank_ids": session.request.bank_set_size,
            "bureau_ids": session.table.size,
            "key_epoch": session.table.key_epoch,
            "matched": matched,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.store.record_session(record, matched_ids)
        if self.audit is not None:  # sizes and counts, never the IDs
            self.audit.append(
                entry.bank_id,
                "psi",
                "OK",
                **{k: v for k, v in record.items() if k not in ("bank_id", "finished_at")},
            )
        log.info(
            "PSI session %s finished: bank=%s bank_ids=%d bureau_ids=%d matched=%s",
            session.session_id,
            entry.bank_id,
            session.request.bank_set_size,
            session.table.size,
            "not revealed" if matched is None else matched,
        )
