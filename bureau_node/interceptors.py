"""What the bureau does around every call, whatever the service: the receipts of the audit
records a call appended go back to the bank in its trailing metadata
(``x-xinrong-receipt-bin``, a JSON list of receipts), whether the call succeeded or was
refused.

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

from node_runtime.transport.channels import RECEIPT_METADATA
from protocols.transparency import Receipt

from .audit import current_receipts

log = logging.getLogger(__name__)


def _attach(context: grpc.ServicerContext, receipts: list[Receipt]) -> None:
    if receipts:
        value = json.dumps([r.to_dict() for r in receipts]).encode()
        context.set_trailing_metadata(((RECEIPT_METADATA, value),))


def _unary_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        receipts: list[Receipt] = []
        token = current_receipts.set(receipts)
        try:
            return behaviour(request, context)
        finally:
            current_receipts.reset(token)
            _attach(context, receipts)  # read by gRPC when it sends the status, even an abort

    return wrapped


def _stream_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        receipts: list[Receipt] = []

        def step(fn: Callable[[], Any]) -> Any:
            # a generator's body runs at each next(): collect around each step
            token = current_receipts.set(receipts)
            try:
                return fn()
            finally:
                current_receipts.reset(token)

        try:
            responses = step(lambda: iter(behaviour(request, context)))
            while True:
                try:
                    item = step(lambda: next(responses))
                except StopIteration:
                    return
                yield item
        finally:
            _attach(context, receipts)

    return wrapped


class ReceiptInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        kinds = {
            "unary_unary": (grpc.unary_unary_rpc_method_handler, _unary_response),
            "stream_unary": (grpc.stream_unary_rpc_method_handler, _unary_response),
            "unary_stream": (grpc.unary_stream_rpc_method_handler, _stream_response),
            "stream_stream": (grpc.stream_stream_rpc_method_handler, _stream_response),
        }
        for attribute, (make, wrap) in kinds.items():
            behaviour = getattr(handler, attribute)
            if behaviour is not None:
                return make(  # type: ignore[operator]
                    wrap(behaviour),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler
