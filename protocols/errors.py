"""Typed errors of the protocols. The nodes map each to one gRPC status (see
``node_runtime.transport.errors``), so a message from the other party that breaks a rule ends
that session with a precise status and a message an engineer can act on."""

from __future__ import annotations


class XinrongError(Exception):
    """Base class of every error Xinrong raises on purpose."""


class InputDataError(XinrongError):
    """A local input file is missing, unreadable, empty or lacks a needed column."""


class ProtocolViolation(XinrongError):
    """A message from the other party is malformed: wrong length, out of range, not a
    group element, more elements than announced. Maps to INVALID_ARGUMENT."""


class InvalidGroupElement(ProtocolViolation):
    """A received 32-byte string is not the canonical encoding of a Ristretto255 element
    (or is the identity)."""

    def __init__(self, index: int, what: str = "point") -> None:
        super().__init__(
            f"{what} #{index} is not a valid Ristretto255 element (non-canonical encoding, "
            "not on the curve, or the identity)"
        )
        self.index = index


class InvalidCiphertext(ProtocolViolation):
    """A received value is not a Paillier ciphertext of the key it claims (not in
    Z*_(n^2)), or the vector has the wrong length."""


class WrongStage(XinrongError):
    """A message arrived at a stage of the protocol where it is not expected.
    Maps to FAILED_PRECONDITION."""


class StaleKeyEpoch(WrongStage):
    """A lookup names a key epoch or table version the bureau no longer serves (it rotated
    the bank's key or its data changed): list the tables again. FAILED_PRECONDITION."""


class UnknownSession(XinrongError):
    """The session named in a message does not exist (or belongs to another bank).
    Maps to NOT_FOUND."""


class PolicyViolation(XinrongError):
    """A request is well formed but refused by policy (too large, too small an
    intersection). Maps to FAILED_PRECONDITION or RESOURCE_EXHAUSTED."""


class NotAuthorised(XinrongError):
    """The caller is not a bank this bureau serves, or asks for what it may not use.
    Maps to PERMISSION_DENIED."""


class ModelRefused(NotAuthorised):
    """The bureau refused a finished model by policy and ended its job for good: its
    checkpoint resumes nothing. PERMISSION_DENIED, marked so that the bank can tell it from
    a refusal that leaves the job alive (a bank taken out of the configuration a moment)."""


class QuotaExceeded(PolicyViolation):
    """A bank's daily quota is used up. Maps to RESOURCE_EXHAUSTED."""


class JobEnded(WrongStage):
    """A training job failed, expired or was refused a resume: it is over for good (its
    checkpoint and key are deleted) and a new job must be started. FAILED_PRECONDITION."""


class ShuttingDown(XinrongError):
    """The bureau is stopping (its operator restarts it) and refused the call before doing
    any of it: the caller may send it again once the bureau is back. UNAVAILABLE, marked so
    that a caller can tell it from a call lost with a server that went away."""


class PeerError(XinrongError):
    """The other party ended the exchange with an error; the message says what it said,
    ``status`` the gRPC status name (None when the other party was not reached), and
    ``nothing_done`` whether the other party said it did none of the call (it is stopping),
    ``job_ended`` whether it said the call's training job has ended for good."""

    status: str | None = None
    nothing_done: bool = False
    job_ended: bool = False  # the bureau said it ended the job for good (ModelRefused)
