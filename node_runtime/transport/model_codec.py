"""Joint-model messages (dataclasses of ``protocols.vertical_lr``) to protobuf and back.

Keys travel as the modulus n; the receiving protocol object checks them. Sizes of
ciphertext vectors are checked by the protocol objects, which know what to expect."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import ProtocolViolation
from protocols.optim import OptimizerConfig
from xinrong.v1 import model_pb2 as pb

SCORES_PER_CHUNK = 4096
_DECIMAL = re.compile(r"^-?[0-9]+$")


def key_to_bytes(key: he.PublicKey) -> bytes:
    return key.n.to_bytes((key.n.bit_length() + 7) // 8, "big")


def key_proof_to_bytes(proof: he.KeyProof, key: he.PublicKey) -> list[bytes]:
    width = (key.n.bit_length() + 7) // 8
    return [root.to_bytes(width, "big") for root in proof]


def key_proof_from_bytes(roots: Sequence[bytes], key_bytes: int) -> he.KeyProof:
    if len(roots) > he.KEY_PROOF_ROOTS or any(len(r) > key_bytes for r in roots):
        raise ProtocolViolation(
            f"a key proof of {len(roots)} roots, each at most {key_bytes} bytes, is expected"
        )
    return tuple(int.from_bytes(r, "big") for r in roots)


def key_from_bytes(data: bytes, allow_test_keys: bool, proof: Sequence[bytes]) -> he.PublicKey:
    """The other party's public key, with its proof of being a Paillier modulus, checked."""
    if not data or len(data) > he.MAX_KEY_BITS // 8:
        raise ProtocolViolation(f"a public key of {len(data)} bytes is not acceptable")
    roots = key_proof_from_bytes(proof, len(data))
    return he.public_key_from_n(int.from_bytes(data, "big"), allow_test_keys, roots)


def step_to_proto(step: vlr.Step) -> pb.Step:
    return pb.Step(job_id=step.job_id, epoch=step.epoch, batch=step.batch)


def step_from_proto(msg: pb.Step) -> vlr.Step:
    # validation parts are -1, -2, ...: never more than the largest validation set needs
    if msg.batch < vlr.VALIDATION - vlr.MAX_ROWS // vlr.MAX_BATCH:
        raise ProtocolViolation(f"batch number {msg.batch} is out of range")
    return vlr.Step(msg.job_id, msg.epoch, msg.batch)


def plan_to_proto(plan: vlr.TrainingPlan) -> pb.TrainingPlan:
    return pb.TrainingPlan(
        job_id=plan.job_id,
        psi_session_id=plan.psi_session_id,
        rows=plan.rows,
        bank_columns=plan.bank_columns,
        validation_fraction=plan.validation_fraction,
        seed=plan.seed,
        batch_size=plan.batch_size,
        max_epochs=plan.max_epochs,
        optimizer=pb.OptimizerSettings(**plan.optimizer.as_dict()),
        bureau_features=list(plan.bureau_features),
        bank_public_key=key_to_bytes(plan.bank_public_key),
        batch_size_adjustable=plan.batch_size_adjustable,
        bank_key_proof=key_proof_to_bytes(plan.bank_key_proof, plan.bank_public_key),
    )


def plan_from_proto(msg: pb.TrainingPlan, allow_test_keys: bool) -> vlr.TrainingPlan:
    if not msg.HasField("optimizer"):
        raise ProtocolViolation("the training plan has no optimizer settings")
    o = msg.optimizer
    bank_key = key_from_bytes(msg.bank_public_key, allow_test_keys, msg.bank_key_proof)
    return vlr.TrainingPlan(
        job_id=msg.job_id,
        psi_session_id=msg.psi_session_id,
        rows=msg.rows,
        bank_columns=msg.bank_columns,
        validation_fraction=msg.validation_fraction,
        seed=msg.seed,
        batch_size=msg.batch_size,
        max_epochs=msg.max_epochs,
        optimizer=OptimizerConfig(
            **{name: getattr(o, name) for name in OptimizerConfig.__dataclass_fields__}
        ),
        bureau_features=tuple(msg.bureau_features),
        bank_public_key=bank_key,
        batch_size_adjustable=msg.batch_size_adjustable,
        bank_key_proof=key_proof_from_bytes(msg.bank_key_proof, len(msg.bank_public_key)),
    )


def accepted_to_proto(msg: vlr.TrainingAccepted) -> pb.TrainingAccepted:
    return pb.TrainingAccepted(
        job_id=msg.job_id,
        bureau_public_key=key_to_bytes(msg.bureau_public_key),
        bureau_columns=msg.bureau_columns,
        bureau_key_proof=key_proof_to_bytes(msg.bureau_key_proof, msg.bureau_public_key),
    )


def accepted_from_proto(msg: pb.TrainingAccepted, allow_test_keys: bool) -> vlr.TrainingAccepted:
    key = key_from_bytes(msg.bureau_public_key, allow_test_keys, msg.bureau_key_proof)
    proof = key_proof_from_bytes(msg.bureau_key_proof, len(msg.bureau_public_key))
    return vlr.TrainingAccepted(msg.job_id, key, msg.bureau_columns, proof)


# what only the first chunk of a step's answer carries
_FIRST_CHUNK_ONLY = (
    "score_shares",
    "gradient_share",
    "loss_term",
    "cross_moments",
    "gram_share",
    "share_moments",
    "bank_gradient",
    "share_bits",
)


def shares_to_proto(msg: vlr.StepShares, width: int) -> Iterator[pb.StepShares]:
    """The bureau's answer in chunks of its per-row masks; the packed parts in the first."""
    total = len(msg.bureau_masks) // width
    step = step_to_proto(msg.step)
    chunk = SCORES_PER_CHUNK * width
    packed = {name: getattr(msg, name) for name in _FIRST_CHUNK_ONLY}
    for offset in range(0, max(len(msg.bureau_masks), 1), chunk):
        yield pb.StepShares(
            step=step,
            offset=offset // width,
            total=total,
            bureau_masks=msg.bureau_masks[offset : offset + chunk],
            **(packed if offset == 0 else {}),
        )


def shares_from_proto(
    chunks: Iterable[pb.StepShares], width: int, max_total: int
) -> vlr.StepShares:
    parts: list[bytes] = []
    first: pb.StepShares | None = None
    step = None
    received = 0
    for chunk in chunks:
        this = step_from_proto(chunk.step)
        if first is None:
            first, step = chunk, this
            if chunk.total > max_total:
                raise ProtocolViolation(
                    f"{chunk.total} masks announced; at most {max_total} expected"
                )
        elif this != step or chunk.total != first.total:
            raise ProtocolViolation("a chunk of shares belongs to another step")
        elif any(getattr(chunk, name) for name in _FIRST_CHUNK_ONLY):
            raise ProtocolViolation("packed shares arrived after the first chunk")
        if chunk.offset != received or len(chunk.bureau_masks) % width:
            raise ProtocolViolation("chunks of shares arrived out of order or cut")
        if received + len(chunk.bureau_masks) // width > first.total:
            raise ProtocolViolation("the masks run past the count announced")
        parts.append(chunk.bureau_masks)
        received += len(chunk.bureau_masks) // width
    if first is None or step is None or received != first.total:
        raise ProtocolViolation("the shares ended before all announced chunks arrived")
    return vlr.StepShares(
        step=step,
        bureau_masks=b"".join(parts),
        **{name: getattr(first, name) for name in _FIRST_CHUNK_ONLY},
    )


def residuals_to_proto(msg: vlr.EncryptedResiduals) -> pb.EncryptedResiduals:
    return pb.EncryptedResiduals(
        step=step_to_proto(msg.step),
        residuals=msg.residuals,
        weight_share=msg.weight_share,
        bank_weights=msg.bank_weights,
    )


def residuals_from_proto(msg: pb.EncryptedResiduals) -> vlr.EncryptedResiduals:
    return vlr.EncryptedResiduals(
        step_from_proto(msg.step), msg.weight_share, msg.residuals, msg.bank_weights
    )


def share_to_proto(values: list[int]) -> list[str]:
    return [str(int(v)) for v in values]


def share_from_proto(values: Iterable[str], expected: int) -> list[int]:
    """The bank's weight share: decimal integers, each within a share's size."""
    values = list(values)
    if len(values) != expected:
        raise ProtocolViolation(f"expected {expected} weight shares, got {len(values)}")
    digits = vlr.MAX_SHARE_BITS // 3 + 2
    out = []
    for v in values:
        if len(v) > digits or not _DECIMAL.match(v):
            raise ProtocolViolation("a weight share is not a decimal integer of its size")
        out.append(int(v))
    return out


def masked_to_proto(msg: vlr.MaskedValues) -> pb.MaskedValues:
    return pb.MaskedValues(
        step=step_to_proto(msg.step), count=msg.count, ciphertexts=msg.ciphertexts
    )


def masked_from_proto(msg: pb.MaskedValues) -> vlr.MaskedValues:
    return vlr.MaskedValues(step_from_proto(msg.step), msg.count, msg.ciphertexts)


def decrypted_to_proto(msg: vlr.DecryptedValues) -> pb.DecryptedValues:
    return pb.DecryptedValues(step=step_to_proto(msg.step), plaintexts=msg.plaintexts)


def decrypted_from_proto(msg: pb.DecryptedValues) -> vlr.DecryptedValues:
    return vlr.DecryptedValues(step_from_proto(msg.step), msg.plaintexts)
