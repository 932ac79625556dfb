"""Two-party vertical logistic regression under Paillier, with no third party.

The protocol of the design notes, section 4 (after Yang, Fan, et al., "Parallel Distributed
Logistic Regression for Vertical Federated Learning without Third-Party Coordinator",
arXiv:1911.09824, 2019): each party holds its own key; the bank holds the labels and the
intercept. Per batch, with the Taylor sigmoid ``s(z) ~ 0.5 + z/4`` and everything times 4 so
it stays integral:

  bank:   [[4e]]_A = [[2 + u_A - 4y]]_A                       -> bureau
  bureau: [[u_B]]_B, [[sum u_B^2]]_B                          -> bank
  bureau: [[4d]]_A = [[4e]]_A + u_B; X_B^T [[4d]]_A, masked, packed  -> bank decrypts
  bank:   X_A^T [[u_B]]_B and the loss cross term, masked, packed    -> bureau decrypts
  each:   removes its masks, g = (X^T 4d) / (4|I|), its own optimiser step.

Two state machines, ``BankTrainer`` and ``BureauTrainer``, map messages to messages; the
gRPC servicer and client only carry them. ``drive_training`` is the bank's schedule over any
``TrainingPeer`` (in-process in tests, gRPC in the node), with the two parties' heavy steps
overlapping.

What each side sees (beyond the allowed leakage: the intersection, its own per-batch
gradient, and the training loss to the bank): only ciphertexts under the other party's key,
and plaintexts it decrypts for the other party that are statistically masked (40 bits).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from . import paillier as he
from .errors import PolicyViolation, ProtocolViolation, WrongStage
from .optim import Optimizer, OptimizerConfig, epoch_batches, split_rows

SCALE_BITS = 16  # fixed point of every encrypted value (scores, residuals)
# Fixed point of the plaintext scalars that multiply ciphertexts (feature values, loss
# coefficients): the cost of an encrypted inner product grows with their bit length, and
# 2^-8 on a standardised feature is far below the noise of any credit data.
EXPONENT_BITS = 8
PRODUCT_SCALE = 1 << (SCALE_BITS + EXPONENT_BITS)
SCORE_BOUND = 64.0  # |u_A|, |u_B| are clipped here; beyond it the Taylor sigmoid is meaningless
# Bound of every packed value: rows (2^24) x scalars (features |x| <= 16: 2^12; loss
# coefficients < 2^16) x encrypted values (scores 2^22, residuals 2^24): below 2^64.
VALUE_BITS = 64
MAX_ROWS = 1 << 24
MAX_BATCH = 4096  # a batch of 2048-bit (4096-bit) ciphertexts stays under 2 (4) MiB
VALIDATION = -1  # the batch number of an epoch's validation step
LN2 = math.log(2.0)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class TrainingLimits:
    """The bureau's policy (and the bank's own floor) for training jobs."""

    min_batch_size: int = 64
    min_rows: int = 100
    allow_test_keys: bool = False
    max_epochs: int = 200
    min_bin_count: int = 30  # information value: smaller bins are merged, never reported
    # (binning.BUREAU_MIN_BIN_COUNT is the same floor, applied by the bank to its own bins)


@dataclass(frozen=True)
class TrainingPlan:
    """Proposed by the bank, checked and accepted by the bureau."""

    job_id: str
    psi_session_id: str
    rows: int
    bank_columns: int  # with the intercept
    validation_fraction: float
    seed: int
    batch_size: int
    max_epochs: int
    optimizer: OptimizerConfig
    bureau_features: tuple[str, ...]  # empty: all
    bank_public_key: he.PublicKey
    # The bureau may raise batch_size to its floor once it knows its own column count.
    batch_size_adjustable: bool = False

    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        return split_rows(self.rows, self.validation_fraction, self.seed)


def check_plan(
    plan: TrainingPlan, limits: TrainingLimits, bureau_columns: int | None = None
) -> None:
    """The checks both parties make before a byte of data is touched."""
    if not 0 < plan.rows <= MAX_ROWS:
        raise PolicyViolation(f"{plan.rows} rows: a training set has 1 to {MAX_ROWS} rows")
    if plan.rows < limits.min_rows:
        raise PolicyViolation(
            f"only {plan.rows} shared rows; training needs at least {limits.min_rows}"
        )
    if not 0.0 <= plan.validation_fraction <= 0.5:
        raise PolicyViolation("the validation fraction must be from 0 to 0.5")
    if not 1 <= plan.max_epochs <= limits.max_epochs:
        raise PolicyViolation(f"epochs must be from 1 to {limits.max_epochs}")
    if not 1 <= plan.bank_columns <= 10_000:
        raise PolicyViolation("the bank must have 1 to 10,000 model columns")
    widest = max(plan.bank_columns, bureau_columns or 0)
    floor = max(limits.min_batch_size, 2 * widest)
    if not floor <= plan.batch_size <= MAX_BATCH:
        raise PolicyViolation(
            f"batch size {plan.batch_size} is not allowed: use {floor} to {MAX_BATCH} (at "
            f"least {limits.min_batch_size} and twice the widest party's {widest} columns, so "
            "a batch's gradient cannot be solved for single rows)"
        )
    train, validation = plan.schedule()
    if len(train) < plan.batch_size:
        raise PolicyViolation(
            f"{len(train)} training rows are fewer than one batch of {plan.batch_size}"
        )
    if plan.validation_fraction and len(validation) < limits.min_batch_size:
        raise PolicyViolation(
            f"{len(validation)} validation rows are fewer than the minimum batch size "
            f"{limits.min_batch_size}; lower --validation-fraction to 0 or use more rows"
        )
    plan.optimizer.check()
    he.check_key_bits(_key_bits(plan.bank_public_key), limits.allow_test_keys)


def raise_batch_to_floor(
    plan: TrainingPlan, limits: TrainingLimits, bureau_columns: int
) -> TrainingPlan:
    """The bureau's side of an adjustable batch size: the bank proposed a batch from its own
    columns; the bureau raises it to twice its prepared columns (capped at MAX_BATCH)."""
    if not plan.batch_size_adjustable:
        return plan
    floor = max(limits.min_batch_size, 2 * max(plan.bank_columns, bureau_columns))
    wanted = min(MAX_BATCH, max(plan.batch_size, floor))
    return plan if wanted == plan.batch_size else replace(plan, batch_size=wanted)


def adopt_batch_size(plan: TrainingPlan, stated: int) -> TrainingPlan:
    """The bank's side: the batch size the bureau says is in force. Only a plan that allowed
    it may change, and only upwards (a larger batch hides single rows better); the floors
    are checked again when the bureau's columns are accepted."""
    if stated in (0, plan.batch_size):
        return plan
    if not plan.batch_size_adjustable or not plan.batch_size < stated <= MAX_BATCH:
        raise ProtocolViolation(
            f"the bureau answered batch size {stated} to a plan of {plan.batch_size}"
            + ("" if plan.batch_size_adjustable else " that was not adjustable")
        )
    return replace(plan, batch_size=stated)


def _key_bits(key: he.PublicKey) -> int:
    return int(key.n.bit_length())  # exact: a 2,041-bit modulus is not a 2,048-bit key


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingAccepted:
    job_id: str
    bureau_public_key: he.PublicKey
    bureau_columns: int


@dataclass(frozen=True)
class Step:
    job_id: str
    epoch: int
    batch: int  # VALIDATION for the validation step


@dataclass(frozen=True)
class EncryptedScores:
    step: Step
    scores: bytes  # [[u_B]]_B per row, fixed point
    square_sum: bytes  # [[sum u_B^2]]_B, one ciphertext


@dataclass(frozen=True)
class EncryptedResiduals:
    step: Step
    residuals: bytes  # [[4e]]_A per row


@dataclass(frozen=True)
class MaskedValues:
    step: Step
    count: int
    ciphertexts: bytes  # packed masked slots under the decrypting party's key


@dataclass(frozen=True)
class DecryptedValues:
    step: Step
    plaintexts: bytes


@dataclass(frozen=True)
class TrainingFinished:
    job_id: str
    epoch: int
    neutral_score: float  # the bureau's mean u_B over the training rows


def _layout(key: he.PublicKey) -> he.SlotLayout:
    return he.SlotLayout(VALUE_BITS, key.n.bit_length())


def _fixed_matrix(x: np.ndarray) -> np.ndarray:
    return np.rint(x * float(1 << EXPONENT_BITS)).astype(np.int64)


def _scores(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.clip(x @ w, -SCORE_BOUND, SCORE_BOUND)


def _check_step(got: Step, expected: Step | None, what: str) -> None:
    if expected is None or got != expected:
        raise WrongStage(f"{what} for {got} arrived, but the job expects {expected}")


# -- the bureau ----------------------------------------------------------------------------


class BureauStage(Enum):
    READY = "ready"  # waiting for the scores request of the next step
    SCORED = "scored"
    FINISHED = "finished"
    FAILED = "failed"  # a malformed message ended the job: nothing more is answered


def _fails_the_job(method: Callable[..., T]) -> Callable[..., T]:
    """A malformed message ends the job for good: no retrying a rejected decryption or
    update to probe what the bureau accepts."""

    @functools.wraps(method)
    def guarded(self: BureauTrainer, *args: object) -> T:
        if self.stage is BureauStage.FAILED:
            raise WrongStage(
                f"training job {self.plan.job_id} has failed ({self.failure}); start a new job"
            )
        try:
            return method(self, *args)
        except ProtocolViolation as exc:
            self.stage = BureauStage.FAILED
            self.failure = str(exc)
            raise

    return guarded


def _request_key(msg: object) -> tuple[object, str]:
    """What identifies a request: its step and a digest of its content."""
    if isinstance(msg, Step):
        return msg, ""
    step = getattr(msg, "step")  # noqa: B009 - every step message has one
    content = b"".join(
        v if isinstance(v, bytes) else str(v).encode()
        for k, v in sorted(vars(msg).items())
        if k != "step"
    )
    return step, hashlib.sha256(content).hexdigest()


def _replayable(method: Callable[..., T]) -> Callable[..., T]:
    """A request that arrives again, identical, after it was answered (a retry after a lost
    reply) gets the recorded answer; it is never applied twice. A different request for the
    same step is refused by the stage checks as before."""

    @functools.wraps(method)
    def replay(self: BureauTrainer, msg: object) -> T:
        key = (method.__name__, *_request_key(msg))
        recorded = self._replies.get(method.__name__)
        if recorded is not None and recorded[0] == key:
            return cast(T, recorded[1])
        answer = method(self, msg)
        self._replies[method.__name__] = (key, answer)
        return answer

    return replay


class BureauTrainer:
    """The bureau's side of one training job: its features (rows in the PSI order, already
    preprocessed), its own key and weights."""

    def __init__(
        self,
        plan: TrainingPlan,
        features: np.ndarray,
        private_key: he.PrivateKey,
        limits: TrainingLimits = TrainingLimits(),
        executor: Executor | None = None,
    ) -> None:
        if features.shape[0] != plan.rows:
            raise ProtocolViolation(
                f"the plan names {plan.rows} rows; the PSI session has {features.shape[0]}"
            )
        check_plan(plan, limits, features.shape[1])
        self.plan = plan
        self.x = features
        self.private_key = private_key
        self.encryptor = he.OwnerEncryptor(private_key)
        self.bank_key = plan.bank_public_key
        self.bank_encryptor = he.PeerEncryptor(self.bank_key)
        self.train_rows, self.validation_rows = plan.schedule()
        self.optimizer = Optimizer(plan.optimizer, features.shape[1])
        self.snapshots: dict[int, np.ndarray] = {}
        self.stage = BureauStage.READY
        self.failure = ""
        self._replies: dict[str, tuple[object, object]] = {}
        self._epoch, self._batch = 0, 0
        self._batches = epoch_batches(self.train_rows, plan.batch_size, plan.seed, 0)
        self._step: Step | None = None
        self._rows = np.zeros(0, dtype=np.int64)
        self._fixed_scores: list[int] = []
        self._gradient_sent = False
        self._decrypted = False
        self._packing: he.MaskedPacking | None = None
        self.counts = he.OpCounts()
        self.executor = executor
        self.epoch_counts: dict[int, dict[str, int]] = {}
        self._counts_at_epoch_start = self.counts.as_dict()
        # the state at the start of each epoch, for resuming after a crash (either side)
        self.checkpoints: dict[int, dict[str, object]] = {0: self._state()}

    def accepted(self) -> TrainingAccepted:
        return TrainingAccepted(self.plan.job_id, self.private_key.public_key, self.x.shape[1])

    def _next_step(self) -> Step:
        return Step(self.plan.job_id, self._epoch, self._batch)

    @_fails_the_job
    @_replayable
    def scores(self, step: Step) -> EncryptedScores:
        """[[u_B]] for the rows of the next step (a batch, or the validation rows)."""
        if self._epoch >= self.plan.max_epochs:
            raise WrongStage(f"the job has run all its {self.plan.max_epochs} epochs: finish it")
        if self.stage is not BureauStage.READY:
            raise WrongStage(f"scores for {step} asked while the job is {self.stage.value}")
        _check_step(step, self._next_step(), "a scores request")
        rows = self._batches[step.batch] if step.batch != VALIDATION else self.validation_rows
        weights = self.optimizer.weights if step.batch != VALIDATION else self.snapshots[step.epoch]
        scores = _scores(self.x[rows], weights)
        fixed = he.encode(scores, SCALE_BITS)
        ciphertexts = self.encryptor.encrypt_many(fixed, self.executor, self.counts)
        square = self.encryptor.encrypt_many(
            he.encode(np.array([np.sum(scores * scores)]), SCALE_BITS + EXPONENT_BITS),
            None,
            self.counts,
        )
        self._rows, self._fixed_scores, self._step = rows, fixed, step
        self._gradient_sent = step.batch == VALIDATION  # no bureau gradient at validation
        self._decrypted = False
        self.stage = BureauStage.SCORED
        return EncryptedScores(
            step,
            he.ciphertexts_to_bytes(ciphertexts, self.private_key.public_key),
            he.ciphertexts_to_bytes(square, self.private_key.public_key),
        )

    @_fails_the_job
    @_replayable
    def gradient(self, msg: EncryptedResiduals) -> MaskedValues:
        """X_B^T [[4d]]_A, masked and packed for the bank to decrypt."""
        if self.stage is not BureauStage.SCORED or self._gradient_sent:
            raise WrongStage(f"residuals for {msg.step} are not expected now")
        _check_step(msg.step, self._step, "residuals")
        residuals = he.ciphertexts_from_bytes(msg.residuals, self.bank_key, len(self._rows))
        d4 = he.add_plain(residuals, self._fixed_scores, self.bank_key)
        products = he.inner_products(
            d4, _fixed_matrix(self.x[self._rows]), self.bank_key, self.executor, self.counts
        )
        packed, self._packing = he.pack_masked(
            products, _layout(self.bank_key), self.bank_encryptor
        )
        self.counts.peer_encryptions += len(packed)
        self._gradient_sent = True
        return MaskedValues(msg.step, len(products), he.ciphertexts_to_bytes(packed, self.bank_key))

    @_fails_the_job
    @_replayable
    def decrypt(self, msg: MaskedValues) -> DecryptedValues:
        """Decrypt the bank's masked values: once per step, exactly the expected count."""
        if self.stage is not BureauStage.SCORED or self._decrypted:
            raise WrongStage(f"a decryption for {msg.step} is not expected now")
        _check_step(msg.step, self._step, "values to decrypt")
        expected = 1 if msg.step.batch == VALIDATION else self.plan.bank_columns + 1
        if msg.count != expected:
            raise ProtocolViolation(f"expected {expected} values to decrypt, got {msg.count}")
        own = self.private_key.public_key
        layout = _layout(own)
        ciphertexts = he.ciphertexts_from_bytes(
            msg.ciphertexts, own, layout.plaintexts_for(expected)
        )
        plaintexts = he.decrypt_packed(ciphertexts, self.private_key, layout, expected)
        self.counts.decryptions += len(plaintexts)
        self._decrypted = True
        if msg.step.batch == VALIDATION:
            self._advance()
        return DecryptedValues(msg.step, he.plaintexts_to_bytes(plaintexts, own))

    @_fails_the_job
    @_replayable
    def update(self, msg: DecryptedValues) -> None:
        """Unmask the own gradient and take the optimiser step."""
        if (
            self.stage is not BureauStage.SCORED
            or not self._gradient_sent
            or self._packing is None
            or not self._decrypted
        ):
            raise WrongStage(f"an update for {msg.step} is not expected now")
        _check_step(msg.step, self._step, "the decrypted gradient")
        count = len(self._packing.masks)
        plain = he.plaintexts_from_bytes(
            msg.plaintexts, self.bank_key, self._packing.layout.plaintexts_for(count)
        )
        values = np.array(he.unpack_masked(plain, self._packing), dtype=np.float64)
        self._packing = None
        gradient = values / PRODUCT_SCALE / (4.0 * len(self._rows))
        self.optimizer.step(gradient, self._epoch)
        self._batch += 1
        if self._batch == len(self._batches):
            self.snapshots[self._epoch] = self.optimizer.weights.copy()
            self.epoch_counts[self._epoch] = self.counts.minus(self._counts_at_epoch_start)
            self._counts_at_epoch_start = self.counts.as_dict()
            if self.plan.validation_fraction > 0:
                self._batch = VALIDATION
                self.stage = BureauStage.READY
                return
            self._batch = 0
            self._advance()
            return
        self.stage = BureauStage.READY

    def _state(self) -> dict[str, object]:
        return {
            "optimizer": self.optimizer.state(),
            "snapshots": {str(e): w.tolist() for e, w in self.snapshots.items()},
            "counts": self.counts.as_dict(),
            "epoch_counts": {str(e): c for e, c in self.epoch_counts.items()},
        }

    def restore(self, epoch: int) -> None:
        """Go back to the start of ``epoch`` (a recorded checkpoint), e.g. after a restart."""
        if epoch not in self.checkpoints:
            raise WrongStage(
                f"job {self.plan.job_id} has no checkpoint at epoch {epoch}; it has "
                f"{sorted(self.checkpoints)}"
            )
        state = self.checkpoints[epoch]
        self.optimizer.load_state(state["optimizer"])  # type: ignore[arg-type]
        self.snapshots = {
            int(e): np.asarray(w)
            for e, w in state["snapshots"].items()  # type: ignore[attr-defined]
        }
        self.counts = he.OpCounts(**state["counts"])  # type: ignore[arg-type]
        self.epoch_counts = {
            int(e): c
            for e, c in state["epoch_counts"].items()  # type: ignore[attr-defined]
        }
        self.checkpoints = {e: s for e, s in self.checkpoints.items() if e <= epoch}
        self._epoch, self._batch = epoch, 0
        self._batches = epoch_batches(self.train_rows, self.plan.batch_size, self.plan.seed, epoch)
        self._replies.clear()
        self._packing = None
        self.stage = BureauStage.READY
        self._counts_at_epoch_start = self.counts.as_dict()

    def _advance(self) -> None:
        self._epoch += 1
        self.checkpoints[self._epoch] = self._state()
        self._batch = 0
        self._batches = epoch_batches(
            self.train_rows, self.plan.batch_size, self.plan.seed, self._epoch
        )
        self.stage = BureauStage.READY

    @_fails_the_job
    def finish(self, epoch: int) -> tuple[np.ndarray, TrainingFinished]:
        """Keep the weights of the epoch the bank chose (its best by validation loss)."""
        if epoch not in self.snapshots:
            raise WrongStage(f"epoch {epoch} has not finished; finished: {sorted(self.snapshots)}")
        weights = self.snapshots[epoch]
        neutral = float(np.mean(_scores(self.x[self.train_rows], weights)))
        self.stage = BureauStage.FINISHED
        return weights, TrainingFinished(self.plan.job_id, epoch, neutral)


# -- the bank ------------------------------------------------------------------------------


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    validation_loss: float | None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # the bank's operations


@dataclass
class EarlyStopping:
    patience: int = 2
    tolerance: float = 1e-4
    best_epoch: int = -1
    best_loss: float = math.inf
    waited: int = 0

    def observe(self, epoch: int, loss: float) -> bool:
        """True when training should stop."""
        if loss < self.best_loss - self.tolerance:
            self.best_epoch, self.best_loss, self.waited = epoch, loss, 0
            return False
        if self.best_epoch < 0:
            self.best_epoch, self.best_loss = epoch, loss
        self.waited += 1
        return self.waited >= self.patience


class BankTrainer:
    """The bank's side: its model columns (intercept first), labels, own key and weights."""

    def __init__(
        self,
        plan: TrainingPlan,
        features: np.ndarray,
        labels: np.ndarray,
        private_key: he.PrivateKey,
        limits: TrainingLimits = TrainingLimits(),
        early_stopping: EarlyStopping | None = None,
        executor: Executor | None = None,
        encryptor: he.OwnerEncryptor | None = None,
    ) -> None:
        if features.shape != (plan.rows, plan.bank_columns) or labels.shape != (plan.rows,):
            raise ValueError("features and labels do not match the plan")
        check_plan(plan, limits)
        self.plan, self.limits = plan, limits
        self.x, self.y = features, labels.astype(np.float64)
        self.private_key = private_key
        self.encryptor = encryptor or he.OwnerEncryptor(private_key)
        self.bureau_encryptor: he.PeerEncryptor | None = None
        self.train_rows, self.validation_rows = plan.schedule()
        penalised = np.ones(plan.bank_columns, dtype=bool)
        penalised[0] = False  # the intercept
        self.optimizer = Optimizer(plan.optimizer, plan.bank_columns, penalised)
        self.early_stopping = early_stopping or EarlyStopping()
        self.snapshots: dict[int, np.ndarray] = {}
        self.bureau_key: he.PublicKey | None = None
        self.bureau_columns = 0
        self._rows = np.zeros(0, dtype=np.int64)
        self._u = np.zeros(0)
        self._e4 = np.zeros(0)
        self._packing: he.MaskedPacking | None = None
        self._step: Step | None = None
        self.counts = he.OpCounts()
        self.executor = executor

    def checkpoint(self, history: list[EpochRecord]) -> dict[str, object]:
        """The bank's state after an epoch: enough to go on exactly where it was."""
        return {
            "optimizer": self.optimizer.state(),
            "snapshots": {str(e): w.tolist() for e, w in self.snapshots.items()},
            "early_stopping": vars(self.early_stopping).copy(),
            "counts": self.counts.as_dict(),
            "history": [vars(r) for r in history],
        }

    def restore(self, state: dict[str, Any]) -> list[EpochRecord]:
        self.optimizer.load_state(state["optimizer"])
        self.snapshots = {int(e): np.asarray(w) for e, w in state["snapshots"].items()}
        self.early_stopping = EarlyStopping(**state["early_stopping"])
        self.counts = he.OpCounts(**state["counts"])
        return [EpochRecord(**r) for r in state["history"]]

    def accept(self, msg: TrainingAccepted) -> None:
        if msg.job_id != self.plan.job_id:
            raise ProtocolViolation("the bureau accepted another job")
        if not 1 <= msg.bureau_columns <= 10_000:
            raise ProtocolViolation(f"the bureau announced {msg.bureau_columns} model columns")
        self.bureau_key = he.public_key_from_n(msg.bureau_public_key.n, self.limits.allow_test_keys)
        self.bureau_encryptor = he.PeerEncryptor(self.bureau_key)
        self.bureau_columns = msg.bureau_columns
        check_plan(self.plan, self.limits, msg.bureau_columns)

    def batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(self.train_rows, self.plan.batch_size, self.plan.seed, epoch)

    def residuals(self, step: Step, rows: np.ndarray) -> EncryptedResiduals:
        """[[2 + u_A - 4y]] for the batch, under the bank's own key."""
        self._step, self._rows = step, rows
        self._u = _scores(self.x[rows], self.optimizer.weights)
        self._e4 = 2.0 + self._u - 4.0 * self.y[rows]
        ciphertexts = self.encryptor.encrypt_many(
            he.encode(self._e4, SCALE_BITS), self.executor, self.counts
        )
        return EncryptedResiduals(
            step, he.ciphertexts_to_bytes(ciphertexts, self.private_key.public_key)
        )

    def _cross_terms(
        self, msg: EncryptedScores, rows: np.ndarray, u: np.ndarray, columns: np.ndarray | None
    ) -> MaskedValues:
        assert self.bureau_key is not None
        scores = he.ciphertexts_from_bytes(msg.scores, self.bureau_key, len(rows))
        (square,) = he.ciphertexts_from_bytes(msg.square_sum, self.bureau_key, 1)
        y_signed = 2.0 * self.y[rows] - 1.0
        # 8 x the loss cross term: sum (-4y' + 2u_A) u_B + sum u_B^2, at scale 2^(16 + 8)
        loss_coefficients = _fixed_matrix((-4.0 * y_signed + 2.0 * u)[:, None])
        matrix = (
            loss_coefficients
            if columns is None
            else np.hstack([_fixed_matrix(columns), loss_coefficients])
        )
        products = he.inner_products(scores, matrix, self.bureau_key, self.executor, self.counts)
        products[-1] = products[-1] * square % self.bureau_key.nsquare
        assert self.bureau_encryptor is not None
        packed, self._packing = he.pack_masked(
            products, _layout(self.bureau_key), self.bureau_encryptor
        )
        self.counts.peer_encryptions += len(packed)
        return MaskedValues(
            msg.step, len(products), he.ciphertexts_to_bytes(packed, self.bureau_key)
        )

    def masked_gradient(self, msg: EncryptedScores) -> MaskedValues:
        """X_A^T [[u_B]] and the loss cross term, masked and packed for the bureau."""
        _check_step(msg.step, self._step, "the bureau's scores")
        return self._cross_terms(msg, self._rows, self._u, self.x[self._rows])

    def decrypt(self, msg: MaskedValues) -> DecryptedValues:
        """Decrypt the bureau's masked gradient (exactly its column count)."""
        _check_step(msg.step, self._step, "values to decrypt")
        if msg.count != self.bureau_columns:
            raise ProtocolViolation(
                f"expected {self.bureau_columns} values to decrypt, got {msg.count}"
            )
        own = self.private_key.public_key
        layout = _layout(own)
        ciphertexts = he.ciphertexts_from_bytes(
            msg.ciphertexts, own, layout.plaintexts_for(msg.count)
        )
        plaintexts = he.decrypt_packed(ciphertexts, self.private_key, layout, msg.count)
        self.counts.decryptions += len(plaintexts)
        return DecryptedValues(msg.step, he.plaintexts_to_bytes(plaintexts, own))

    def _unmask(self, msg: DecryptedValues) -> np.ndarray:
        assert self.bureau_key is not None and self._packing is not None
        _check_step(msg.step, self._step, "decrypted values")
        count = len(self._packing.masks)
        plain = he.plaintexts_from_bytes(
            msg.plaintexts, self.bureau_key, self._packing.layout.plaintexts_for(count)
        )
        values = np.array(he.unpack_masked(plain, self._packing), dtype=np.float64)
        self._packing = None
        return values / PRODUCT_SCALE

    def _own_loss(self, rows: np.ndarray, u: np.ndarray, cross8: float) -> float:
        y_signed = 2.0 * self.y[rows] - 1.0
        own = np.sum(LN2 - 0.5 * y_signed * u + 0.125 * u * u)
        return float((own + cross8 / 8.0) / len(rows))

    def update(self, msg: DecryptedValues, epoch: int) -> float:
        """Unmask h = X_A^T u_B and the loss term; step; returns the batch's Taylor loss."""
        values = self._unmask(msg)
        h, cross8 = values[:-1], values[-1]
        x = self.x[self._rows]
        gradient = (x.T @ self._e4 + h) / (4.0 * len(self._rows))
        loss = self._own_loss(self._rows, self._u, cross8)
        self.optimizer.step(gradient, epoch)
        return loss

    def validation_request(self, step: Step, msg: EncryptedScores) -> MaskedValues:
        """The validation loss's cross term with the bureau's scores, masked."""
        _check_step(msg.step, step, "the bureau's validation scores")
        self._step = step
        rows = self.validation_rows
        self._u = _scores(self.x[rows], self.optimizer.weights)
        return self._cross_terms(msg, rows, self._u, None)

    def validation_loss(self, msg: DecryptedValues) -> float:
        (cross8,) = self._unmask(msg)
        return self._own_loss(self.validation_rows, self._u, cross8)


class Pending(Protocol[T_co]):
    """A call under way (a ``concurrent.futures.Future``, or a gRPC call)."""

    def result(self) -> T_co: ...


class TrainingPeer(Protocol):
    """The bureau as the bank's driver sees it: each call returns at once, pending."""

    def scores(self, step: Step) -> Pending[EncryptedScores]: ...

    def gradient(self, msg: EncryptedResiduals) -> Pending[MaskedValues]: ...

    def decrypt(self, msg: MaskedValues) -> Pending[DecryptedValues]: ...

    def update(self, msg: DecryptedValues) -> Pending[None]: ...


OnBatch = Callable[[int, int, int], None]  # epoch, batches done, batches in the epoch


@dataclass
class TrainingResult:
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))


def drive_training(
    bank: BankTrainer,
    peer: TrainingPeer,
    on_batch: OnBatch | None = None,
    clock: Callable[[], float] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    start_epoch: int = 0,
    history: list[EpochRecord] | None = None,
) -> TrainingResult:
    """The bank's schedule: epochs of batches, a validation step after each epoch, early
    stopping on the validation loss (the training loss without a validation split). Each
    party's heavy step overlaps the other's."""
    import time

    clock = clock or time.perf_counter
    history = list(history or [])
    job = bank.plan.job_id
    stopped = bool(history) and bank.early_stopping.waited >= bank.early_stopping.patience
    for epoch in range(start_epoch, 0 if stopped else bank.plan.max_epochs):
        started = clock()
        counts_before = bank.counts.as_dict()
        losses, weights_of = [], []
        batches = bank.batches(epoch)
        for number, rows in enumerate(batches):
            step = Step(job, epoch, number)
            scores_f = peer.scores(step)
            residuals = bank.residuals(step, rows)  # while the bureau encrypts its scores
            scores = scores_f.result()
            gradient_f = peer.gradient(residuals)
            masked = bank.masked_gradient(scores)  # while the bureau computes its gradient
            decrypted_f = peer.decrypt(masked)
            bureau_masked = gradient_f.result()
            for_bureau = bank.decrypt(bureau_masked)
            own = decrypted_f.result()  # the bureau decrypts once per step, before it steps
            update_f = peer.update(for_bureau)
            losses.append(bank.update(own, epoch))
            weights_of.append(len(rows))
            update_f.result()
            if on_batch:
                on_batch(epoch, number + 1, len(batches))
        bank.snapshots[epoch] = bank.optimizer.weights.copy()
        train_loss = float(np.average(losses, weights=weights_of))
        validation_loss = None
        if bank.plan.validation_fraction > 0:
            step = Step(job, epoch, VALIDATION)
            scores = peer.scores(step).result()
            validation_loss = bank.validation_loss(
                peer.decrypt(bank.validation_request(step, scores)).result()
            )
        history.append(
            EpochRecord(
                epoch,
                train_loss,
                validation_loss,
                round(clock() - started, 3),
                bank.counts.minus(counts_before),
            )
        )
        if on_epoch:
            on_epoch(history[-1])
        monitored = train_loss if validation_loss is None else validation_loss
        if bank.early_stopping.observe(epoch, monitored):
            break
    best = bank.early_stopping.best_epoch
    return TrainingResult(best, history, bank.snapshots[best])
