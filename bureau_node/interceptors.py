"""What the bureau does around every call, whatever the service:

- a client certificate that was revoked (``bureau-node certs revoke``) is refused,
  UNAUTHENTICATED, and the refusal is on record with the peer's address and the
  certificate's subject and serial (gRPC Python cannot check a revocation list during the
  handshake, so it is checked on every call; the list is re-read when it changes);
- a streaming call is admitted into its pool (``bureau_node.admission``: per bank and in
  all, RESOURCE_EXHAUSTED on record beyond, before its servicer charges anything), and its
  time waiting on the bank (for a request, or to take an answer) is tracked for the reaper;
- the receipts of the audit records a call appended go back to the bank in its trailing
  metadata (``x-xinrong-receipt-bin``, a JSON list of receipts), whether the call succeeded
  or was refused.

What a bank learns from a receipt: its own record's index in the bureau's log (so how many
records, of all banks, came before it), its leaf hash (a hash of a record it could mostly
write itself: time, its id, event, outcome, sizes) and the signed root. The index and head
size tell a curious bank how busy the bureau is (records between two of its calls); it
cannot read other banks' records from hashes of records whose content it does not know.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from node_runtime.transport.certs import RevocationList
from node_runtime.transport.channels import RECEIPT_METADATA, check_protocol, peer_certificate
from node_runtime.transport.errors import (
    CallEnded,
    IdentityError,
    IncompatibleRelease,
    abort_with,
)
from protocols.errors import InputDataError, ProtocolViolation, QuotaExceeded
from protocols.transparency import Receipt

from .admission import Admission, HeldCall
from .audit import AuditLog, current_receipts

log = logging.getLogger(__name__)


# gRPC refuses more than 8 KiB of metadata by default; a receipt is ~600 bytes and a call
# appends one record (two at most), so this cap is never reached in practice
MAX_RECEIPTS_PER_CALL = 8


def encode_receipts(receipts: list[Receipt]) -> bytes:
    """The receipts as the bank reads them (``bank_node.receipts.parse_receipts``); empty
    for none. Only the last ``MAX_RECEIPTS_PER_CALL`` when a call appended more."""
    if len(receipts) > MAX_RECEIPTS_PER_CALL:
        log.warning("a call appended %d records; only the last receipts go back", len(receipts))
        receipts = receipts[-MAX_RECEIPTS_PER_CALL:]
    return json.dumps([r.to_dict() for r in receipts]).encode() if receipts else b""


def _attach(context: grpc.ServicerContext, receipts: list[Receipt]) -> None:
    value = encode_receipts(receipts)
    if value:  # beside what the servicer set (a stopping bureau's "nothing done")
        kept = getattr(context, "trailing_metadata", lambda: None)() or ()
        context.set_trailing_metadata(
            (*(m for m in kept if m[0] != RECEIPT_METADATA), (RECEIPT_METADATA, value))
        )


Admit = Callable[[grpc.ServicerContext], None]
# admits a streaming call into its pool (None: not held, its servicer refuses the caller)
Hold = Callable[[grpc.ServicerContext], HeldCall | None]
# a unary-request call taken as streaming: its one request message, awaited as admitted
Receive = Callable[[Iterator[Any], grpc.ServicerContext], Any]


def _unary_response(
    behaviour: Callable[..., Any],
    admit: Admit,
    hold: Hold | None,
    streaming: bool,
    receive: Receive | None = None,
) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        receipts: list[Receipt] = []
        token = current_receipts.set(receipts)
        call = None
        try:
            admit(context)
            if receive is not None:
                request = receive(request, context)
            call = hold(context) if hold is not None else None
            if call is not None and streaming:
                request = call.requests(request)
            return behaviour(request, context)
        except CallEnded as exc:  # the call is gone: its status is nobody's to read
            abort_with(context, exc)
        finally:
            if call is not None:
                call.close()
            current_receipts.reset(token)
            _attach(context, receipts)  # read by gRPC when it sends the status, even an abort

    return wrapped


def _stream_response(
    behaviour: Callable[..., Any],
    admit: Admit,
    hold: Hold | None,
    streaming: bool,
    receive: Receive | None = None,
) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        receipts: list[Receipt] = []
        call = None

        def step(fn: Callable[[], Any]) -> Any:
            # a generator's body runs at each next(): collect around each step
            token = current_receipts.set(receipts)
            try:
                return fn()
            finally:
                current_receipts.reset(token)

        try:
            step(lambda: admit(context))
            if receive is not None:  # it answers every call it does not return from
                request = step(lambda: receive(request, context))
            call = step(lambda: hold(context)) if hold is not None else None
            if call is not None and streaming:
                request = call.requests(request)
            responses = step(lambda: iter(behaviour(request, context)))
            while True:
                try:
                    item = step(lambda: next(responses))
                except StopIteration:
                    return
                except CallEnded as exc:
                    abort_with(context, exc)
                if call is None:
                    yield item
                    continue
                call.waiting()  # gRPC asks for the next answer once the bank took this one
                yield item
                call.working()
                if call.expired():  # what the bank sent since is not read (nor charged)
                    step(getattr(responses, "close", lambda: None))
                    return
        finally:
            if call is not None:
                call.close()
            _attach(context, receipts)

    return wrapped


class BureauInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        audit: AuditLog | None = None,
        revocations: RevocationList | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.audit = audit
        self.revocations = revocations
        self.admission = admission

    def _holder(self, method: str) -> Hold | None:
        admission = self.admission
        if admission is None:
            return None
        pool, event = admission.place(method)

        def hold(context: grpc.ServicerContext) -> HeldCall | None:
            try:
                bank_id = admission.access.bank(context)
                cap = pool.cap(admission.access.policy(bank_id))
            except Exception:  # noqa: BLE001 - not a bank it serves: its servicer refuses it
                return None
            try:
                return pool.open(bank_id, method, context, cap)
            except QuotaExceeded as exc:  # before the servicer: nothing is charged
                audit = self.audit
                recorded = audit.refusal(context, event, exc, method=method) if audit else True
                abort_with(context, exc, quiet=not recorded)

        return hold

    def _receiver(self, method: str) -> Receive | None:
        """The one request message of a unary-request call, awaited only once the caller is
        known and within its bank's bound of calls awaiting theirs (``admission``)."""
        admission = self.admission
        if admission is None:
            return None
        pool = admission.requests

        def receive(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            try:  # identified before it waits: a caller the bureau does not serve waits not
                bank_id = admission.access.bank(context)
                call = pool.open(
                    bank_id, method, context, pool.cap(admission.access.policy(bank_id))
                )
            except Exception as exc:  # noqa: BLE001 - refused, on record, before any wait
                audit = self.audit
                recorded = audit.refusal(context, "call", exc, method=method) if audit else True
                abort_with(context, exc, quiet=not recorded)
            ended: Exception
            try:
                for message in call.requests(requests):
                    return message
                ended = ProtocolViolation(f"{method}: the call ended before its request message")
            except CallEnded as exc:  # cancelled, by the bank or the reaper
                ended = exc
            finally:
                call.close()
            # on record within the caller's refusal budget (the reaper records its own): a
            # second review's bank cancelled each call just before the grace and opened
            # another, and left no trace
            audit = self.audit if call.reaped is None else None
            recorded = audit.refusal(context, "call", ended, method=method) if audit else True
            abort_with(context, ended, quiet=not recorded)

        return receive

    def _admitter(self, method: str) -> Admit:
        def admit(context: grpc.ServicerContext) -> None:
            self._check_revocation(context, method)
            try:
                check_protocol(context)
            except IncompatibleRelease as exc:
                audit = self.audit
                recorded = (
                    audit.refusal(context, "call_refused", exc, method=method) if audit else True
                )
                abort_with(context, exc, quiet=not recorded)

        return admit

    def _check_revocation(self, context: grpc.ServicerContext, method: str) -> None:
        if self.revocations is None:
            return
        certificate = peer_certificate(context)
        if certificate is None:
            return
        try:
            when = self.revocations.revoked(certificate.serial_number)
        except InputDataError as exc:  # fail closed: no call while the list is unreadable
            log.error("the revocation list cannot be read: %s", exc)
            abort_with(context, exc)
        if when is None:
            return
        serial = format(certificate.serial_number, "x")
        subject = certificate.subject.rfc4514_string()
        refused = IdentityError(
            f"the bureau refused your certificate (serial {serial}, {subject}): it was "
            f"revoked on {when:%Y-%m-%d %H:%M} UTC; ask the bureau for a new one"
        )
        recorded = True  # within the caller's budget of refusals on record, as any other
        if self.audit is not None:
            recorded = self.audit.refusal(
                context,
                "call_refused",
                refused,
                reason="certificate revoked",
                method=method,
                serial=serial,
            )
        if recorded:
            peer = context.peer()
            log.warning("refused revoked certificate %s (%s) from %s", serial, subject, peer)
        abort_with(context, refused, quiet=True)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        admit = self._admitter(method)
        # every streaming call can hold its thread at the bank's pace: admitted (bureau_node.
        # admission); a unary one runs at the bureau's pace once its request is in
        hold = self._holder(method)
        # a unary-request call is served as a request stream when calls are admitted, so
        # that its wait for the message is admitted too (``admission``); on the wire the two
        # are the same
        receive = self._receiver(method)
        one_in = (
            grpc.stream_unary_rpc_method_handler if receive else grpc.unary_unary_rpc_method_handler
        )
        one_in_many_out = (
            grpc.stream_stream_rpc_method_handler
            if receive
            else grpc.unary_stream_rpc_method_handler
        )
        kinds = {
            "unary_unary": (one_in, _unary_response, None, False, receive),
            "stream_unary": (
                grpc.stream_unary_rpc_method_handler,
                _unary_response,
                hold,
                True,
                None,
            ),
            "unary_stream": (one_in_many_out, _stream_response, hold, False, receive),
            "stream_stream": (
                grpc.stream_stream_rpc_method_handler,
                _stream_response,
                hold,
                True,
                None,
            ),
        }
        for attribute, (make, wrap, held, streaming, received) in kinds.items():
            behaviour = getattr(handler, attribute)
            if behaviour is not None:
                return make(  # type: ignore[operator]
                    wrap(behaviour, admit, held, streaming, received),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler
