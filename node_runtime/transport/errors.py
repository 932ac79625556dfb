"""One catalogue from Xinrong's typed errors to gRPC status codes, and back.

Servicers call :func:`abort_with` for any exception: typed errors become a precise status
with their message; anything else becomes INTERNAL with a cleaned message, the detail going
to the log. Clients call :func:`raise_from_rpc` to turn a status back into a typed error.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from protocols.errors import (
    InputDataError,
    ModelRefused,
    NotAuthorised,
    PeerError,
    PolicyViolation,
    ProtocolViolation,
    QuotaExceeded,
    ShuttingDown,
    UnknownSession,
    WrongStage,
    XinrongError,
)

log = logging.getLogger(__name__)


class IdentityError(XinrongError):
    """The caller did not say who it is, or said it badly."""


class IncompatibleRelease(WrongStage):
    """The bank node speaks another wire protocol than the bureau (another release).
    FAILED_PRECONDITION."""


class CallEnded(XinrongError):
    """The call ended under its servicer: the peer cancelled it, or the server did (idle)."""


STATUS_OF: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (ProtocolViolation, grpc.StatusCode.INVALID_ARGUMENT),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),  # before PolicyViolation, its base
    (NotAuthorised, grpc.StatusCode.PERMISSION_DENIED),
    (WrongStage, grpc.StatusCode.FAILED_PRECONDITION),
    (PolicyViolation, grpc.StatusCode.FAILED_PRECONDITION),
    # the bureau's own data or stored model cannot serve the request (e.g. a model trained
    # before a feature existed): a precondition, not an internal fault
    (InputDataError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownSession, grpc.StatusCode.NOT_FOUND),
    (IdentityError, grpc.StatusCode.UNAUTHENTICATED),
    (CallEnded, grpc.StatusCode.CANCELLED),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
]
# Trailing metadata of a call refused by a stopping bureau before it did any of it: a bare
# UNAVAILABLE (a server gone mid-call) says nothing of what was done.
NOTHING_DONE = ("x-xinrong-nothing-done", "1")
# ... and of a finished model refused by policy, whose job the bureau ended for good
JOB_ENDED = ("x-xinrong-job-ended", "1")
# A refusal's message goes to the log and into the status's trailer (gRPC's 8 KiB of metadata)
MAX_MESSAGE_CHARS = 2000


def status_for(exc: BaseException) -> grpc.StatusCode:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def abort_with(context: grpc.ServicerContext, exc: BaseException, quiet: bool = False) -> NoReturn:
    """Answer with the error's status; logged unless ``quiet`` (a refusal beyond its caller's
    budget: counted on the audit log instead, not a line each)."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error while serving a request", exc_info=exc)
        context.abort(code, "internal error in the bureau node; see its log")
    message = str(exc)
    if len(message) > MAX_MESSAGE_CHARS:  # a message echoing a huge field: the log, the wire
        message = message[:MAX_MESSAGE_CHARS] + " [...]"
    if not quiet:
        log.warning("request refused (%s): %s", code.name, message)
    if isinstance(exc, ShuttingDown):  # and no retry by gRPC's policy: the bank waits
        context.set_trailing_metadata((NOTHING_DONE, ("grpc-retry-pushback-ms", "-1")))
    if isinstance(exc, ModelRefused):
        context.set_trailing_metadata((JOB_ENDED,))
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


def raise_from_rpc(err: grpc.RpcError, doing: str) -> NoReturn:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    name = code.name if code is not None else "UNKNOWN"
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    if code is grpc.StatusCode.UNAVAILABLE and NOTHING_DONE in tuple(trailing or ()):
        stopping = PeerError(f"{doing}: {details}")
        stopping.status, stopping.nothing_done = name, True
        raise stopping from None
    if code is grpc.StatusCode.UNAVAILABLE:
        raise PeerError(f"{doing}: the bureau is unreachable ({details})") from None
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        raise PeerError(f"{doing}: the bureau did not answer in time") from None
    exc = PeerError(f"{doing}: the bureau answered {name}: {details}")
    exc.status = name
    exc.job_ended = JOB_ENDED in tuple(trailing or ())
    raise exc from None


__all__ = [
    "JOB_ENDED",
    "NOTHING_DONE",
    "IdentityError",
    "IncompatibleRelease",
    "abort_with",
    "raise_from_rpc",
    "status_for",
]
