"""The one place where protocol messages (dataclasses) meet their protobuf twins.

Decoding checks what protobuf cannot: enum values in range, required fields present. Sizes
and group membership are checked by the protocol objects, which see the whole session.
"""

from __future__ import annotations

from protocols import psi
from protocols.errors import ProtocolViolation
from xinrong.v1 import psi_pb2 as pb

_REVEAL_TO_PROTO = {psi.Reveal.BOTH: pb.REVEAL_MODE_BOTH, psi.Reveal.BANK: pb.REVEAL_MODE_BANK}
_REVEAL_FROM_PROTO = {v: k for k, v in _REVEAL_TO_PROTO.items()}


def psi_request_to_proto(msg: psi.PsiRequest) -> pb.OpenSessionRequest:
    return pb.OpenSessionRequest(
        protocol=msg.protocol, bank_set_size=msg.bank_set_size, reveal=_REVEAL_TO_PROTO[msg.reveal]
    )


def psi_request_from_proto(msg: pb.OpenSessionRequest) -> psi.PsiRequest:
    reveal = _REVEAL_FROM_PROTO.get(msg.reveal)
    if reveal is None:
        raise ProtocolViolation(f"reveal mode {msg.reveal} is not one of BOTH (1) or BANK (2)")
    return psi.PsiRequest(bank_set_size=msg.bank_set_size, reveal=reveal, protocol=msg.protocol)


def psi_params_to_proto(msg: psi.PsiParams) -> pb.SessionOpened:
    return pb.SessionOpened(
        session_id=msg.session_id,
        bureau_set_size=msg.bureau_set_size,
        key_epoch=msg.key_epoch,
        tag_bytes=msg.tag_bytes,
        max_chunk=msg.max_chunk,
        protocol=msg.protocol,
    )


def psi_params_from_proto(msg: pb.SessionOpened) -> psi.PsiParams:
    if not msg.session_id:
        raise ProtocolViolation("the bureau opened a session without an id")
    return psi.PsiParams(
        session_id=msg.session_id,
        bureau_set_size=msg.bureau_set_size,
        key_epoch=msg.key_epoch,
        tag_bytes=msg.tag_bytes,
        max_chunk=msg.max_chunk,
        protocol=msg.protocol,
    )


def blinded_to_proto(msg: psi.BlindedIds) -> pb.BlindedIds:
    return pb.BlindedIds(session_id=msg.session_id, offset=msg.offset, points=msg.points)


def blinded_from_proto(msg: pb.BlindedIds) -> psi.BlindedIds:
    return psi.BlindedIds(msg.session_id, msg.offset, msg.points)


def exponentiated_to_proto(msg: psi.ExponentiatedIds) -> pb.ExponentiatedIds:
    return pb.ExponentiatedIds(session_id=msg.session_id, offset=msg.offset, points=msg.points)


def exponentiated_from_proto(msg: pb.ExponentiatedIds) -> psi.ExponentiatedIds:
    return psi.ExponentiatedIds(msg.session_id, msg.offset, msg.points)


def tags_to_proto(msg: psi.BureauTags) -> pb.BureauTags:
    return pb.BureauTags(session_id=msg.session_id, offset=msg.offset, tags=msg.tags)


def tags_from_proto(msg: pb.BureauTags) -> psi.BureauTags:
    return psi.BureauTags(msg.session_id, msg.offset, msg.tags)


def matched_to_proto(msg: psi.MatchedTags) -> pb.MatchedTags:
    return pb.MatchedTags(session_id=msg.session_id, tags=msg.tags)


def matched_from_proto(msg: pb.MatchedTags) -> psi.MatchedTags:
    return psi.MatchedTags(msg.session_id, msg.tags)


def summary_to_proto(msg: psi.RevealSummary) -> pb.RevealSummary:
    return pb.RevealSummary(session_id=msg.session_id, matched=msg.matched)


def summary_from_proto(msg: pb.RevealSummary) -> psi.RevealSummary:
    return psi.RevealSummary(msg.session_id, msg.matched)
