"""Two-party vertical logistic regression in which the bureau never sees a value that depends
on the bank's labels: the bureau's weights are additively secret-shared for the whole job.

The design notes, section 4, "Secret-shared bureau weights", after CAESAR (Chen et al.,
"When Homomorphic Encryption Marries Secret Sharing: Secure Large-Scale Sparse Logistic
Regression and Applications in Risk Control", KDD 2021, arXiv:2008.08753), which FATE ships
as SSHE-LR. Each party holds its own Paillier key; ``[[v]]_A`` is under the bank's key,
``[[v]]_B`` under the bureau's. The bank keeps its own weights ``w_A`` in clear (it may learn
its own gradient and the loss); the bureau's weights are ``w_B = s1 + s2``, integers at scale
2^40, ``s1`` at the bank and ``s2`` at the bureau, both starting at 0 (the known start).
With the Taylor sigmoid everything is linear in shares; times 4 it stays integral:

  bank -> bureau   [[s1]]_A (k_B values) and [[e]]_A = [[2 + u_A - 4y]]_A per row
  bureau           [[u_B]]_A = X_B [[s1]]_A + X_B s2   (s1 bases shared by every row)
                   [[4d]]_A = [[e]]_A [[u_B]]_A        (the residual, under the bank's key)
  bureau -> bank   [[u_B + r]]_A packed   -> the bank's share v = u_B + r, the bureau's -r
                   [[-r]]_B per row       (for the bank's own gradient)
                   [[X_B^T 4d + q]]_A packed -> the bank's gradient share; the bureau's is -q
                   [[sum (4d)^2 - sum (e + v)^2]]_A -> with its own part, the loss
  bank -> bureau   [[X_A^T (-r) + t]]_B packed; the bureau decrypts, the bank removes t:
                   its gradient is X_A^T (e + v) + X_A^T (-r) = X_A^T 4d (over 4|I|)
  each             steps its share of w_B with the same linear optimiser (``ShareSgd``:
                   momentum SGD with L2; it commutes with the sum of the shares); the bank
                   steps w_A with its own optimiser (Adam allowed: those weights are its own).
  finish           the bank sends s1 of the chosen epoch: the bureau learns its final w_B.

A variant of the notes' order: the bank encrypts e before it holds a share of u_B, and the
bureau forms ``[[4d]]`` itself, so the bank encrypts one vector per step (not a second
``[[e + v]]``) and a step is two round trips.

The bureau's view is ciphertexts under the bank's key, the bank's masked vector ``X_A^T (-r)
+ t`` (a fresh mask 40 bits above the bound of a value the bureau could compute itself), and
values it drew itself; its share s2 is a function of its own masks only, and it learns w_B
once, at the end. The bank's view: its share v (u_B under a fresh mask), its gradient share
of w_B (under a fresh mask), the loss and its own gradient (the allowed leakage). Every
ciphertext one party decrypts was re-randomised by the other with a textbook ``r^n``.
docs/protocol-training.md states each view step by step and why the rest is simulatable.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol, TypeVar, cast

import gmpy2
import numpy as np

from . import binning, moments
from . import paillier as he
from .errors import PolicyViolation, ProtocolViolation, WrongStage
from .optim import (
    Optimizer,
    OptimizerConfig,
    ShareSgd,
    epoch_batches,
    fixed_batches,
    largest_batch,
    split_rows,
)

# Fixed point. Features multiply ciphertexts as integers at 2^-6 (the cost of an encrypted
# inner product grows with the scalars' length: 10 bits with the sign shift for |x| < 4.5,
# against 12 at 2^-8; a step of 1/64 on a standardised feature is far below the noise of
# credit data, and the test AUCs of benchmarks/accuracy.py do not move in the 4th decimal).
# The bureau's weights enter u_B at 2^-12, so u_B, e and d are at 2^-18; the shares
# themselves are kept at 2^-40, so the optimiser's arithmetic is exact to far below what the
# updates are.
EXPONENT_BITS = 6
SCORE_WEIGHT_BITS = 12
SCALE_BITS = EXPONENT_BITS + SCORE_WEIGHT_BITS  # u_B, e, 4d
SHARE_BITS = 40  # the shares of w_B
GRADIENT_BITS = SCALE_BITS + EXPONENT_BITS  # X^T 4d
SCORE_BOUND = 64.0  # |u_A| is clipped here, and the bureau's final scores
SCORE_QUANTUM = 2.0**-8  # served scores are multiples of this (0.004 in log-odds)
# Bounds of what is masked (a mask is 40 bits above them): |u_B| < 2^10 (a score beyond 64
# already saturates the sigmoid; 2^10 is slack for early steps) ...
SCORE_VALUE_BITS = 10 + SCALE_BITS
# ... |X^T 4d| < 2^10 (features |x| <= 16) x 2^13 (rows: a batch has at most twice
# MAX_BATCH less one) x 2^29 (|4d| < 2^11) ...
BATCH_ROW_BITS = 13
VALUE_BITS = 4 + EXPONENT_BITS + BATCH_ROW_BITS + 11 + SCALE_BITS
# ... |X_A^T r| < 2^10 x 2^13 x 2^70 (a score mask with its offset).
CROSS_VALUE_BITS = (
    4 + EXPONENT_BITS + BATCH_ROW_BITS + SCORE_VALUE_BITS + he.STATISTICAL_SECURITY + 3
)
WEIGHT_BOUND = 2.0**10  # |w_B| at the finish: beyond it the bank sent a corrupt share
MAX_SHARE_BITS = 512  # a share of the bank's is refused beyond this
MAX_ROWS = 1 << 24
MAX_BATCH = 4096  # batches have fewer than twice this many rows
# a step's message carries a ciphertext per row of the batch and per column of either party;
# the transport takes 8 MiB a message (node_runtime.transport): these stay under it, with
# room for the message's framing
MAX_STEP_BYTES = (8 << 20) - (64 << 10)
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
    # information value: bins of the whole table below it are merged
    min_bin_count: int = binning.BUREAU_MIN_BIN_COUNT
    # (binning.BUREAU_MIN_BIN_COUNT is the same floor, applied by the bank to its own bins)
    # a model is refused when, on more than this share of the bureau's enterprises, its
    # score would be an affine function of one feature (FeatureRecipe.exposure)
    max_feature_exposure: float = 0.05
    # a model is refused when the scores of the bank's models together would read one
    # feature's level beyond this share, and beyond what the best of them reads alone
    # (protocols.score_span)
    max_readable_share: float = 0.5


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
    # that bank_public_key is a Paillier modulus (he.prove_key): the bureau refuses without
    bank_key_proof: he.KeyProof = ()

    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        return split_rows(self.rows, self.validation_fraction, self.seed)

    def by_moments(self, bureau_columns: int) -> bool:
        """Whether the job's steps go from cross moments (``protocols.moments``): both
        parties decide alike from the plan and the bureau's column count."""
        return moments.pays(
            self.bank_columns, bureau_columns, self.batch_size, _key_bits(self.bank_public_key)
        )

    def batches(self, train_rows: np.ndarray, epoch: int, fixed: bool) -> list[np.ndarray]:
        schedule = fixed_batches if fixed else epoch_batches
        return schedule(train_rows, self.batch_size, self.seed, epoch)


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
    largest = largest_batch(len(train), plan.batch_size)
    columns = plan.bank_columns + (bureau_columns or 0)
    each = 2 * -(-_key_bits(plan.bank_public_key) // 8)  # a ciphertext mod n^2
    if (largest + columns) * each > MAX_STEP_BYTES:
        fits = (MAX_STEP_BYTES // each - columns) // 2  # batches run to twice the size
        advice = (
            f"use a batch size of at most {fits}"
            if fits >= floor
            else "use a 2048-bit key or fewer features"
        )
        raise PolicyViolation(
            f"batch size {plan.batch_size} makes batches of up to {largest} rows here: with "
            f"{columns} columns, {(largest + columns) * each / 2**20:.1f} MiB of ciphertexts a "
            f"step with this key, more than one message takes; {advice}"
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
    bureau_key_proof: he.KeyProof = ()  # he.prove_key: the bank refuses the key without


@dataclass(frozen=True)
class Step:
    job_id: str
    epoch: int
    batch: int  # -1 - i for part i of the epoch's validation rows


@dataclass(frozen=True)
class EncryptedResiduals:
    """The bank's half of a step: its share of the bureau's weights and the residual's own
    part, both under the bank's key."""

    step: Step
    weight_share: bytes  # [[s1]]_A at 2^-12, one per bureau column
    # per row: [[2 + u_A - 4y]]_A at 2^-SCALE_BITS; from cross moments: the batch's packed
    # rows [[y', x_A]]_A the first time it comes (else empty)
    residuals: bytes
    bank_weights: bytes = b""  # from cross moments: [[w_A]]_A at 2^-12


@dataclass(frozen=True)
class StepShares:
    """The bureau's answer: shares for the bank, under the bank's key (packed, masked and
    re-randomised) except the bureau's own masks, under the bureau's key."""

    step: Step
    score_shares: bytes  # packed [[u_B + r]]_A
    bureau_masks: bytes  # [[-r]]_B per row (training steps only)
    gradient_share: bytes  # packed [[X_B^T 4d + q]]_A (training steps only)
    loss_term: bytes  # [[sum (4d)^2 - sum (e + v)^2]]_A, one ciphertext
    # from cross moments (``protocols.moments``): M the first time a batch comes, P, the
    # W_l, Z and the bound of the shares; gradient_share is then D and loss_term the rest
    # of the loss
    cross_moments: bytes = b""
    gram_share: bytes = b""
    share_moments: bytes = b""
    bank_gradient: bytes = b""
    share_bits: int = 0


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


def _layout(bits: int, key: he.PublicKey) -> he.SlotLayout:
    return he.SlotLayout(bits, key.n.bit_length())


def _fixed_matrix(x: np.ndarray) -> np.ndarray:
    return np.rint(x * float(1 << EXPONENT_BITS)).astype(np.int64)


def _scores(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.clip(x @ w, -SCORE_BOUND, SCORE_BOUND)


def served_scores(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The bureau's part of a kept model's score as it leaves the bureau (lookup tables,
    scoring): clipped, and on a grid of ``SCORE_QUANTUM``. Exact floats let two models that
    differ in the last bits (a job resumed, a retrain on the same rows) give the bank their
    difference, a further projection of each enterprise's features: a check of what a
    bank's models read together found one feature read at 96% from two models whose
    weights differed by 1e-9 (protocols.score_span)."""
    return np.round(_scores(x, w) / SCORE_QUANTUM) * SCORE_QUANTUM


def _check_step(got: Step, expected: Step | None, what: str) -> None:
    if expected is None or got != expected:
        raise WrongStage(f"{what} for {got} arrived, but the job expects {expected}")


def validation_parts(rows: np.ndarray) -> list[np.ndarray]:
    """The validation rows in steps of at most MAX_BATCH (each one message)."""
    if len(rows) == 0:
        return []
    return list(np.array_split(rows, -(-len(rows) // MAX_BATCH)))


def exact_products(matrix: np.ndarray, values: Sequence[int]) -> list[int]:
    """``matrix @ values`` exactly, for a small int64 matrix and arbitrarily large integers:
    the values are cut into 24-bit limbs so that numpy never overflows (|entries| < 2^13,
    at most 2^13 terms: each limb product sum stays below 2^50)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.shape[1] != len(values):
        raise ValueError("one value per matrix column")
    if not len(values):
        return [0] * matrix.shape[0]
    shift = max(abs(int(v)) for v in values).bit_length() + 1
    offset = 1 << shift  # values + offset >= 0
    shifted = [int(v) + offset for v in values]
    limbs = -(-(shift + 1) // 24)
    digits = np.array(
        [[(v >> (24 * i)) & 0xFFFFFF for i in range(limbs)] for v in shifted], dtype=np.int64
    )
    partial = (matrix @ digits).tolist()  # rows x limbs
    sums = matrix.sum(axis=1).tolist()
    return [
        sum(int(p) << (24 * i) for i, p in enumerate(row)) - offset * int(s)
        for row, s in zip(partial, sums, strict=True)
    ]


def _row_chunk(nsquare: int, bases: list[gmpy2.mpz], matrix: np.ndarray) -> list[gmpy2.mpz]:
    return he.inner_products_counted(bases, matrix, nsquare)[0]


def row_combinations(
    bases: Sequence[gmpy2.mpz],
    x: np.ndarray,
    key: he.PublicKey,
    executor: Executor | None,
    counts: he.OpCounts,
) -> list[gmpy2.mpz]:
    """``[[x_j . s]]`` for every row j of an integer matrix, from ``[[s]]``: the k bases are
    shared by all rows (bit-sliced tables of 8 bases each), rows in chunks over the
    executor."""
    rows = x.shape[0]
    size = 2 * he.CHUNK_ROWS
    chunks = [(a, min(rows, a + size)) for a in range(0, rows, size)] or [(0, 0)]
    nsquare = int(key.nsquare)
    if executor is None or len(chunks) == 1:
        parts = [_row_chunk(nsquare, list(bases), x[a:b].T) for a, b in chunks]
    else:
        futures = [executor.submit(_row_chunk, nsquare, list(bases), x[a:b].T) for a, b in chunks]
        parts = [f.result() for f in futures]
    counts.inner_product_terms += x.size
    return [c for part in parts for c in part]


def _power_product(
    bases: Sequence[gmpy2.mpz],
    exponents: Sequence[int],
    key: he.PublicKey,
    executor: Executor | None,
    counts: he.OpCounts,
) -> gmpy2.mpz:
    """``prod bases^exponents`` for non-negative exponents of up to 2^72: two 36-bit halves,
    each an inner product over the executor."""
    low = np.array([e & ((1 << 36) - 1) for e in exponents], dtype=np.int64)
    high = np.array([e >> 36 for e in exponents], dtype=np.int64)
    if high.size and int(high.max()) >= 1 << 36:
        raise ValueError("exponent beyond 2^72")
    lo, hi = he.inner_products(bases, np.stack([low, high], axis=1), key, executor, counts)
    nsquare = he.mpz(key.nsquare)
    return lo * gmpy2.powmod(hi, 1 << 36, nsquare) % nsquare


def _taylor_loss(parts: Sequence[int], from_bureau: int) -> float:
    """The batch's Taylor loss, log 2 - 1/2 + (4d)^2 / 8 per row: sum (4d)^2 (at 2^-2
    SCALE_BITS) is the sum of the bank's parts squared plus the term the bureau's answer
    opened to; outside its range the bureau computed something else."""
    squares = sum(t * t for t in parts) + from_bureau
    if not 0 <= squares < len(parts) << (2 * (SCORE_VALUE_BITS + 1)):
        raise ProtocolViolation(
            "the bureau's loss term gives a sum of squared residuals outside its range: "
            "it computed something else"
        )
    mean = squares / float(1 << (2 * SCALE_BITS)) / len(parts)
    return LN2 - 0.5 + mean / 8.0


def _signed(value: int, key: he.PublicKey) -> int:
    return he.from_residue(int(value), key.n)


# -- the bureau ----------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A step's masks of the bureau's scores, drawn ahead, and their encryption under the
    bureau's key (its share -r, for the bank's gradient), under way."""

    step: Step
    masks: list[int]
    encrypted: Callable[[], list[gmpy2.mpz]] | None


class BureauStage(Enum):
    READY = "ready"  # waiting for the bank's half of the next step
    SHARED = "shared"  # answered a training step; waiting for the bank's values to decrypt
    FINISHED = "finished"
    FAILED = "failed"  # a malformed message ended the job: nothing more is answered


def _fails_the_job(method: Callable[..., T]) -> Callable[..., T]:
    """A malformed message ends the job for good: no retrying a rejected decryption or
    step to probe what the bureau accepts."""

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
    step = getattr(msg, "step")  # noqa: B009 - every step message has one
    content = b"".join(
        v if isinstance(v, bytes) else str(v).encode()
        for k, v in sorted(vars(msg).items())
        if k != "step"
    )
    return step, hashlib.sha256(content).hexdigest()


def _replayable(method: Callable[..., T]) -> Callable[..., T]:
    """A request that arrives again, identical, after it was answered (a retry after a lost
    reply) gets the recorded answer; it is never applied twice (no second decryption, no
    second step of the shares). A different request for the same step is refused by the
    stage checks as before."""

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
    preprocessed), its own key, and its share s2 of its own weights (never the weights)."""

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
        # the bureau computes on the bank's ciphertexts and sends what the bank decrypts
        he.public_key_from_n(plan.bank_public_key.n, limits.allow_test_keys, plan.bank_key_proof)
        self.plan = plan
        self.x = features
        self.x8 = _fixed_matrix(features)
        self.private_key = private_key
        self.key_proof = he.prove_key(private_key)
        self.encryptor = he.OwnerEncryptor(private_key)
        self.bank_key = plan.bank_public_key
        self.train_rows, self.validation_rows = plan.schedule()
        self.validation = validation_parts(self.validation_rows)
        self.shares = ShareSgd(plan.optimizer, features.shape[1], SHARE_BITS)
        self.snapshots: dict[int, list[int]] = {}  # s2 at the end of each epoch
        self.stage = BureauStage.READY
        self.failure = ""
        self._replies: dict[str, tuple[object, object]] = {}
        self._epoch, self._batch = 0, 0
        # from cross moments: what the bureau keeps of each batch, by its first row (a
        # validation part by its step number)
        self.by_moments = plan.by_moments(features.shape[1])
        self._moments: dict[int, moments.BatchMoments] = {}
        self._batches = plan.batches(self.train_rows, 0, self.by_moments)
        self._step: Step | None = None
        self.counts = he.OpCounts()
        self.executor = executor
        self.epoch_counts: dict[int, dict[str, int]] = {}
        self._counts_at_epoch_start = self.counts.as_dict()
        # the state at the start of each epoch, for resuming after a crash (either side)
        self.checkpoints: dict[int, dict[str, object]] = {0: self._state()}
        # randomness of a coming step, drawn and encrypted while the bank computes
        self.noise = he.NoisePool(self.bank_key, executor)
        self._prepared: _Prepared | None = None
        self._prepare(Step(plan.job_id, 0, 0))
        # None: by shifted copies of [[s1]] when they cost less than a ciphertext per row
        self.by_copies: bool | None = None

    @property
    def at_epoch_start(self) -> bool:
        """Between epochs (or before the first): no step of the coming epoch answered, so
        the job can be resumed from its latest checkpoint."""
        return self._batch == 0 and self.stage is BureauStage.READY

    @property
    def epoch(self) -> int:
        return self._epoch

    def accepted(self) -> TrainingAccepted:
        return TrainingAccepted(
            self.plan.job_id, self.private_key.public_key, self.x.shape[1], self.key_proof
        )

    def _rows_of(self, step: Step) -> np.ndarray:
        if step.batch >= 0:
            return self._batches[step.batch]
        return self.validation[-1 - step.batch]

    @_fails_the_job
    @_replayable
    def step(self, msg: EncryptedResiduals) -> StepShares:
        """The bureau's half of a step (a batch, or a part of the validation rows)."""
        if self._epoch >= self.plan.max_epochs:
            raise WrongStage(f"the job has run all its {self.plan.max_epochs} epochs: finish it")
        if self.stage is not BureauStage.READY:
            raise WrongStage(f"a step {msg.step} arrived while the job is {self.stage.value}")
        _check_step(msg.step, Step(self.plan.job_id, self._epoch, self._batch), "a step")
        rows = self._rows_of(msg.step)
        training = msg.step.batch >= 0
        if self.by_moments:
            return self._from_moments(msg, rows, training)
        key, columns = self.bank_key, self.x.shape[1]
        s1 = he.ciphertexts_from_bytes(msg.weight_share, key, columns)
        e = he.ciphertexts_from_bytes(msg.residuals, key, len(rows))
        x8 = self.x8[rows]
        n, nsquare = he.mpz(key.n), he.mpz(key.nsquare)
        s2 = [s >> (SHARE_BITS - SCORE_WEIGHT_BITS) for s in self.shares.share]
        prepared = self._take_prepared(msg.step, len(rows))
        layout = _layout(SCORE_VALUE_BITS, key)
        by_copies = self.by_copies
        if by_copies is None:
            by_copies = he.copies_pay(len(rows), columns, layout.slots_per_plaintext)
        linear = self._by_copies if by_copies else self._by_rows
        score_shares, scores, gradient_sum, power = linear(s1, e, x8, s2, prepared.masks, training)
        gradient_share, masks = b"", b""
        if training:
            packed, gradient = he.pack_masked(
                gradient_sum, _layout(VALUE_BITS, key), key, None, None, self.noise
            )
            gradient_share = he.ciphertexts_to_bytes(packed, key)
            own_key = self.private_key.public_key
            assert prepared.encrypted is not None
            masks = he.ciphertexts_to_bytes(prepared.encrypted(), own_key)
            self.counts.encryptions += len(rows)
            self.counts.peer_encryptions += len(packed)
            # the bureau's share of X_B^T 4d is -q: its step never sees the gradient
            self.shares.step(
                [-q for q in gradient.masks], GRADIENT_BITS, 4 * len(rows), self._epoch
            )
        # sum (4d)^2 - sum (e + v)^2 = sum (2 sigma 4d - sigma^2), sigma = -r
        squares = sum(r * r for r in scores.masks)
        loss = gmpy2.invert(power, nsquare) * (1 + (-squares % n) * n) % nsquare
        (noise,) = self.noise.take(1)
        self.counts.peer_encryptions += len(score_shares) + 1
        self._step = msg.step
        answer = StepShares(
            msg.step,
            he.ciphertexts_to_bytes(score_shares, key),
            masks,
            gradient_share,
            he.ciphertexts_to_bytes([loss * noise % nsquare], key),
        )
        if training:
            self.stage = BureauStage.SHARED
        else:
            self._next_validation_part()
        self._prepare(self._following(msg.step))
        return answer

    def _from_moments(
        self, msg: EncryptedResiduals, rows: np.ndarray, training: bool
    ) -> StepShares:
        """A step from the batch's cross moments (``protocols.moments``); the bank's rows
        come with the batch's first step in the job and are kept as ``[[C]]``."""
        key, columns, bank_columns = self.bank_key, self.x.shape[1], self.plan.bank_columns
        share = he.ciphertexts_from_bytes(msg.weight_share, key, columns)
        weights = he.ciphertexts_from_bytes(msg.bank_weights, key, bank_columns)
        batch = msg.step.batch if msg.step.batch < 0 else int(rows[0])
        sent = b""
        if msg.residuals:
            if batch in self._moments:  # each would be a fresh masking and a pass over rows
                raise ProtocolViolation(
                    f"the rows of step {msg.step}'s batch came again: the bureau keeps a "
                    "batch's moments for the whole run"
                )
            packed = he.ciphertexts_from_bytes(msg.residuals, key, len(rows))
            layout = moments.row_layout(columns, _key_bits(key))
            self._moments[batch], cross = moments.batch_moments(
                packed,
                self.x8[rows],
                bank_columns,
                layout,
                key,
                self.executor,
                self.counts,
                self.noise,
            )
            sent = he.ciphertexts_to_bytes(cross, key)
        held = self._moments.get(batch)
        if held is None:
            raise ProtocolViolation(
                f"step {msg.step} came without its rows, and the bureau holds no moments of "
                "that batch in this run"
            )
        s2 = [s >> (SHARE_BITS - SCORE_WEIGHT_BITS) for s in self.shares.share]
        answer = moments.step_answer(
            held, share, weights, s2, training, key, self.executor, self.counts, self.noise
        )
        if training:  # the bureau's share of X_B^T 4d is -q, as by rows
            self.shares.step([-q for q in answer.masks], GRADIENT_BITS, 4 * len(rows), self._epoch)
        self._step = msg.step
        out = StepShares(
            msg.step,
            b"",
            b"",
            he.ciphertexts_to_bytes(answer.gradient, key),
            he.ciphertexts_to_bytes([answer.loss_term], key),
            cross_moments=sent,
            gram_share=he.ciphertexts_to_bytes(answer.gram, key),
            share_moments=he.ciphertexts_to_bytes(answer.limbs, key),
            bank_gradient=he.ciphertexts_to_bytes(answer.cross, key),
            share_bits=answer.share_bits,
        )
        if training:
            self._end_of_batch()  # nothing for the bureau to decrypt on this route
        else:
            self._next_validation_part()
        self._prepare(self._following(msg.step))
        return out

    def _by_rows(
        self,
        s1: list[gmpy2.mpz],
        e: list[gmpy2.mpz],
        x8: np.ndarray,
        s2: list[int],
        masks: list[int],
        training: bool,
    ) -> tuple[list[gmpy2.mpz], he.MaskedPacking, list[gmpy2.mpz], gmpy2.mpz]:
        """The step's linear parts through a ciphertext per row (wide bureaus):
        ``[[u_B]]`` and ``[[4d]]`` per row, the shares packed by Horner. Returns the packed
        shares of ``u_B``, their masks, ``[[X_B^T 4d]]`` (training) and ``[[sum 2 r 4d]]``."""
        key = self.bank_key
        n, nsquare = he.mpz(key.n), he.mpz(key.nsquare)
        own = exact_products(x8, s2)
        shared = row_combinations(s1, x8, key, self.executor, self.counts)
        u = [c * (1 + (t % n) * n) % nsquare for c, t in zip(shared, own, strict=True)]
        d4 = [a * b % nsquare for a, b in zip(e, u, strict=True)]
        layout = _layout(SCORE_VALUE_BITS, key)
        score_shares, scores = he.pack_masked(u, layout, key, self.executor, masks, self.noise)
        gradient = he.inner_products(d4, x8, key, self.executor, self.counts) if training else []
        power = _power_product(d4, [2 * r for r in masks], key, self.executor, self.counts)
        return score_shares, scores, gradient, power

    def _by_copies(
        self,
        s1: list[gmpy2.mpz],
        e: list[gmpy2.mpz],
        x8: np.ndarray,
        s2: list[int],
        masks: list[int],
        training: bool,
    ) -> tuple[list[gmpy2.mpz], he.MaskedPacking, list[gmpy2.mpz], gmpy2.mpz]:
        """The same plaintexts as ``_by_rows`` without a ciphertext per row (narrow
        bureaus): everything is linear in s1, and with u_B = X_B s1 + X_B s2,
          packed u_B        from shifted copies of [[s1]] (``he.packed_combinations``)
          X_B^T 4d          = X_B^T e + G s1 + G s2, with the Gram matrix G = X_B^T X_B
          sum 2 r 4d        = sum 2 r e + (2 r^T X_B) s1 + 2 r^T X_B s2
        The bank decrypts the same integers, masked and re-randomised the same way."""
        key = self.bank_key
        n, nsquare = he.mpz(key.n), he.mpz(key.nsquare)
        own = exact_products(x8, s2)
        layout = _layout(SCORE_VALUE_BITS, key)
        packed = he.packed_combinations(
            s1, x8, layout.slot_bits, layout.slots_per_plaintext, key, self.executor
        )
        score_shares, scores = he.mask_packed(packed, own, layout, key, masks, self.noise)
        gradient: list[gmpy2.mpz] = []
        if training:
            gram = x8.T @ x8  # |entries| < 2^10 x 2^10 x 2^13 rows: exact in int64
            from_e = he.inner_products(e, x8, key, self.executor, self.counts)
            from_s1 = he.inner_products(s1, gram, key, None, self.counts)
            # k x k products of 2^33 entries with shares: Python integers (numpy limbs overflow)
            from_s2 = [sum(g * t for g, t in zip(row, s2, strict=True)) for row in gram.tolist()]
            gradient = [
                a * b % nsquare * (1 + (t % n) * n) % nsquare
                for a, b, t in zip(from_e, from_s1, from_s2, strict=True)
            ]
        twice = [2 * r for r in masks]
        power = _power_product(e, twice, key, self.executor, self.counts)
        for c, k in zip(s1, exact_products(x8.T, twice), strict=True):
            power = power * gmpy2.powmod(c, k, nsquare) % nsquare  # k < 0: an inverse
        cross = sum(r * t for r, t in zip(twice, own, strict=True))
        power = power * (1 + (cross % n) * n) % nsquare
        return score_shares, scores, gradient, power

    def _following(self, step: Step) -> Step | None:
        """The step after ``step`` (None after the last)."""
        epoch, batch = step.epoch, step.batch
        if 0 <= batch < len(self._batches) - 1:
            return Step(step.job_id, epoch, batch + 1)
        if batch >= 0 and self.validation:
            return Step(step.job_id, epoch, VALIDATION)
        if batch < 0 and -1 - batch + 1 < len(self.validation):
            return Step(step.job_id, epoch, batch - 1)
        if epoch + 1 < self.plan.max_epochs:
            return Step(step.job_id, epoch + 1, 0)
        return None

    def _rows_in(self, step: Step) -> int:
        if step.batch < 0:
            return len(self.validation[-1 - step.batch])
        if step.epoch == self._epoch:
            return len(self._batches[step.batch])
        return len(self.plan.batches(self.train_rows, step.epoch, self.by_moments)[step.batch])

    def _prepare(self, step: Step | None) -> None:
        """Draw the masks of ``step`` and start encrypting the bureau's shares and the
        textbook randomisers it will need, on the executor (nothing waits for them here)."""
        self._prepared = None
        if step is None or self.executor is None:
            return
        if self.by_moments:  # about ten textbook randomisers a step, k_B more for new rows
            self.noise.fill(8 + self.x.shape[1])
            return
        rows = self._rows_in(step)
        layout = _layout(SCORE_VALUE_BITS, self.bank_key)
        masks = he.draw_masks(layout, rows)
        training = step.batch >= 0
        encrypted = self.encryptor.encrypt_later([-r for r in masks], self.executor)
        self._prepared = _Prepared(step, masks, encrypted if training else None)
        gradient = _layout(VALUE_BITS, self.bank_key).plaintexts_for(self.x.shape[1])
        self.noise.fill(layout.plaintexts_for(rows) + (gradient if training else 0) + 1)

    def _take_prepared(self, step: Step, rows: int) -> _Prepared:
        """The randomness drawn for this step, or fresh randomness (each used once)."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared.step == step and len(prepared.masks) == rows:
            return prepared
        masks = he.draw_masks(_layout(SCORE_VALUE_BITS, self.bank_key), rows)
        sigma = [-r for r in masks]
        return _Prepared(step, masks, (lambda: self.encryptor.encrypt_many(sigma, self.executor)))

    def _next_validation_part(self) -> None:
        part = -1 - self._batch
        if part + 1 < len(self.validation):
            self._batch -= 1
        else:
            self._advance()

    @_fails_the_job
    @_replayable
    def decrypt(self, msg: MaskedValues) -> DecryptedValues:
        """Decrypt the bank's masked values: once per training step, exactly its columns."""
        if self.stage is not BureauStage.SHARED:
            raise WrongStage(f"a decryption for {msg.step} is not expected now")
        _check_step(msg.step, self._step, "values to decrypt")
        expected = self.plan.bank_columns
        if msg.count != expected:
            raise ProtocolViolation(f"expected {expected} values to decrypt, got {msg.count}")
        own = self.private_key.public_key
        layout = _layout(CROSS_VALUE_BITS, own)
        ciphertexts = he.ciphertexts_from_bytes(
            msg.ciphertexts, own, layout.plaintexts_for(expected)
        )
        # each plaintext is the bank's values plus a pad uniform in Z_n (``he.pack_padded``):
        # nothing in it to check or to read
        plaintexts = he.decrypt_many(ciphertexts, self.private_key)
        self.counts.decryptions += len(plaintexts)
        self._end_of_batch()
        return DecryptedValues(msg.step, he.plaintexts_to_bytes(plaintexts, own))

    def _end_of_batch(self) -> None:
        self._batch += 1
        self.stage = BureauStage.READY
        if self._batch < len(self._batches):
            return
        self.snapshots[self._epoch] = list(self.shares.share)
        self.epoch_counts[self._epoch] = self.counts.minus(self._counts_at_epoch_start)
        self._counts_at_epoch_start = self.counts.as_dict()
        if self.validation:
            self._batch = VALIDATION
        else:
            self._advance()

    def _state(self) -> dict[str, object]:
        return {
            "shares": self.shares.state(),
            "snapshots": {str(e): [str(v) for v in s] for e, s in self.snapshots.items()},
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
        state: dict[str, Any] = self.checkpoints[epoch]
        self.shares.load_state(state["shares"])
        self.snapshots = {int(e): [int(v) for v in s] for e, s in state["snapshots"].items()}
        self.counts = he.OpCounts(**state["counts"])
        self.epoch_counts = {int(e): c for e, c in state["epoch_counts"].items()}
        self.checkpoints = {e: s for e, s in self.checkpoints.items() if e <= epoch}
        self._epoch, self._batch = epoch, 0
        self._batches = self.plan.batches(self.train_rows, epoch, self.by_moments)
        self._moments.clear()  # the bank sends its rows again after a resume
        self._replies.clear()
        self._step = None
        self.stage = BureauStage.READY
        self._counts_at_epoch_start = self.counts.as_dict()
        self._prepare(Step(self.plan.job_id, epoch, 0))

    def _advance(self) -> None:
        self._epoch += 1
        self.checkpoints[self._epoch] = self._state()
        self._batch = 0
        self._batches = self.plan.batches(self.train_rows, self._epoch, self.by_moments)
        self.stage = BureauStage.READY

    @_fails_the_job
    def finish(self, epoch: int, bank_share: Sequence[int]) -> tuple[np.ndarray, TrainingFinished]:
        """The bank's share of the chosen epoch (its best by validation loss): the bureau
        learns its final weights, and only now."""
        if self.stage is BureauStage.SHARED:
            raise WrongStage("a step is still open: finish after its decryption")
        if epoch not in self.snapshots:
            raise WrongStage(f"epoch {epoch} has not finished; finished: {sorted(self.snapshots)}")
        own = self.snapshots[epoch]
        if len(bank_share) != len(own):
            raise ProtocolViolation(f"expected {len(own)} weight shares, got {len(bank_share)}")
        if any(abs(int(s)).bit_length() > MAX_SHARE_BITS for s in bank_share):
            raise ProtocolViolation("a weight share is larger than any share of this protocol")
        weights = np.array(
            [(int(a) + b) / float(1 << SHARE_BITS) for a, b in zip(bank_share, own, strict=True)]
        )
        if not np.all(np.abs(weights) < WEIGHT_BOUND):
            raise ProtocolViolation(
                "the weights from the bank's share are outside any trained model's range: the "
                "share is not the one of this job's chosen epoch"
            )
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


@dataclass
class _Opened:
    """What the bank decrypted of a step: its shares and the loss."""

    v: list[int]  # its share of u_B per row (at 2^-SCALE_BITS)
    gradient: list[int]  # its share of X_B^T 4d (at 2^-GRADIENT_BITS)
    loss_term: int


class BankTrainer:
    """The bank's side: its model columns (intercept first), labels, own key, own weights in
    clear, and its share s1 of the bureau's weights."""

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
        self.x8 = _fixed_matrix(features)
        self.private_key = private_key
        self.encryptor = encryptor or he.OwnerEncryptor(private_key)
        self.train_rows, self.validation_rows = plan.schedule()
        self.validation = validation_parts(self.validation_rows)
        penalised = np.ones(plan.bank_columns, dtype=bool)
        penalised[0] = False  # the intercept
        self.optimizer = Optimizer(plan.optimizer, plan.bank_columns, penalised)
        self.shares: ShareSgd | None = None  # of the bureau's weights, once it announced them
        self.early_stopping = early_stopping or EarlyStopping()
        self.snapshots: dict[int, np.ndarray] = {}
        self.share_snapshots: dict[int, list[int]] = {}
        self.bureau_key: he.PublicKey | None = None
        self.bureau_columns = 0
        self._rows = np.zeros(0, dtype=np.int64)
        self._e: list[int] = []
        # randomisers of the next step's residuals, under way on the workers (rows, collect)
        self._randomisers: tuple[int, Callable[[], list[gmpy2.mpz]]] | None = None
        self._packing: he.PaddedPacking | None = None
        self._opened: _Opened | None = None
        self._step: Step | None = None
        self.counts = he.OpCounts()
        self.executor = executor
        # from cross moments: M of each batch (by its first row; a validation part by its
        # step number), this step's batch, weights and share at 2^-12, rows encrypted ahead
        self.by_moments = False
        self._cross: dict[int, list[list[int]]] = {}
        self._moment_step: tuple[int, bool, list[int], list[int]] | None = None
        self._rows_ahead: tuple[int, Callable[[], list[gmpy2.mpz]]] | None = None

    def checkpoint(self, history: list[EpochRecord]) -> dict[str, object]:
        """The bank's state after an epoch: enough to go on exactly where it was."""
        assert self.shares is not None
        return {
            "optimizer": self.optimizer.state(),
            "shares": self.shares.state(),
            "snapshots": {str(e): w.tolist() for e, w in self.snapshots.items()},
            "share_snapshots": {
                str(e): [str(v) for v in s] for e, s in self.share_snapshots.items()
            },
            "early_stopping": vars(self.early_stopping).copy(),
            "counts": self.counts.as_dict(),
            "history": [vars(r) for r in history],
        }

    def restore(self, state: dict[str, Any]) -> list[EpochRecord]:
        """After ``accept``: the state ``checkpoint`` wrote."""
        if self.shares is None:
            raise WrongStage("restore a bank's state after the bureau accepted the job")
        self.optimizer.load_state(state["optimizer"])
        self.shares.load_state(state["shares"])
        self.snapshots = {int(e): np.asarray(w) for e, w in state["snapshots"].items()}
        self.share_snapshots = {
            int(e): [int(v) for v in s] for e, s in state["share_snapshots"].items()
        }
        self.early_stopping = EarlyStopping(**state["early_stopping"])
        self.counts = he.OpCounts(**state["counts"])
        return [EpochRecord(**r) for r in state["history"]]

    def accept(self, msg: TrainingAccepted) -> None:
        if msg.job_id != self.plan.job_id:
            raise ProtocolViolation("the bureau accepted another job")
        if not 1 <= msg.bureau_columns <= 10_000:
            raise ProtocolViolation(f"the bureau announced {msg.bureau_columns} model columns")
        self.bureau_key = he.public_key_from_n(
            msg.bureau_public_key.n, self.limits.allow_test_keys, msg.bureau_key_proof
        )
        self.bureau_columns = msg.bureau_columns
        check_plan(self.plan, self.limits, msg.bureau_columns)
        self.shares = ShareSgd(self.plan.optimizer, msg.bureau_columns, SHARE_BITS)
        self.by_moments = self.plan.by_moments(msg.bureau_columns)
        self._cross.clear()  # a resumed job's bureau holds no moments: send the rows again

    def batches(self, epoch: int) -> list[np.ndarray]:
        return self.plan.batches(self.train_rows, epoch, self.by_moments)

    @staticmethod
    def _batch_key(step: Step, rows: np.ndarray) -> int:
        return step.batch if step.batch < 0 else int(rows[0])

    def _packed_rows(self, rows: np.ndarray) -> list[int]:
        layout = moments.row_layout(self.bureau_columns, _key_bits(self.private_key.public_key))
        return moments.packed_rows(self.x8[rows], self.y[rows], layout)

    def residuals(self, step: Step, rows: np.ndarray) -> EncryptedResiduals:
        """[[s1]] and [[2 + u_A - 4y]] for the rows of a step, under the bank's own key (from
        cross moments: [[s1]], [[w_A]] and the batch's packed rows if the bureau has none)."""
        assert self.shares is not None
        if self.by_moments:
            return self._moment_residuals(step, rows)
        self._step, self._rows, self._opened = step, rows, None
        u = _scores(self.x[rows], self.optimizer.weights)
        self._e = he.encode(2.0 + u - 4.0 * self.y[rows], SCALE_BITS)
        own = self.private_key.public_key
        share = [s >> (SHARE_BITS - SCORE_WEIGHT_BITS) for s in self.shares.share]
        ahead, self._randomisers = self._randomisers, None
        if ahead is not None and ahead[0] == len(rows):
            residuals = self.encryptor.encrypt_with(self._e, ahead[1]())
            self.counts.encryptions += len(rows)
        else:
            residuals = self.encryptor.encrypt_many(self._e, self.executor, self.counts)
        return EncryptedResiduals(
            step,
            he.ciphertexts_to_bytes(self.encryptor.encrypt_many(share, None, self.counts), own),
            he.ciphertexts_to_bytes(residuals, own),
        )

    def _moment_residuals(self, step: Step, rows: np.ndarray) -> EncryptedResiduals:
        assert self.shares is not None
        weights = self.optimizer.weights
        if not np.all(np.abs(weights) < WEIGHT_BOUND):
            raise PolicyViolation(
                f"the bank's own weights left +-{WEIGHT_BOUND:g}: training diverged; lower the "
                "learning rate"
            )
        own = self.private_key.public_key
        fixed = [int(w) for w in np.rint(weights * float(1 << SCORE_WEIGHT_BITS)).tolist()]
        share = [s >> (SHARE_BITS - SCORE_WEIGHT_BITS) for s in self.shares.share]
        key = self._batch_key(step, rows)
        packed: list[gmpy2.mpz] = []
        if key not in self._cross:
            ahead, self._rows_ahead = self._rows_ahead, None
            if ahead is not None and ahead[0] == key:
                packed = ahead[1]()
                self.counts.encryptions += len(packed)
            else:
                packed = self.encryptor.encrypt_many(
                    self._packed_rows(rows), self.executor, self.counts
                )
        self._step, self._rows, self._opened = step, rows, None
        self._moment_step = (key, bool(packed), fixed, share)
        return EncryptedResiduals(
            step,
            he.ciphertexts_to_bytes(self.encryptor.encrypt_many(share, None, self.counts), own),
            he.ciphertexts_to_bytes(packed, own),
            he.ciphertexts_to_bytes(self.encryptor.encrypt_many(fixed, None, self.counts), own),
        )

    def prepare(self, step: Step, rows: np.ndarray) -> None:
        """Start the next step's encryptions on the workers while the bureau computes (they
        would otherwise wait for it), each used once by the next ``residuals``: per row, the
        randomisers of its residuals (they depend on nothing but the key); from cross
        moments, its packed rows if the bureau will need them (a batch's first step)."""
        if self.executor is None:
            return
        if not self.by_moments:
            count = len(rows)
            self._randomisers = (count, self.encryptor.randomisers_later(count, self.executor))
            return
        key = self._batch_key(step, rows)
        if key not in self._cross:
            self._rows_ahead = (
                key,
                self.encryptor.encrypt_later(self._packed_rows(rows), self.executor),
            )

    def _open_moments(self, msg: StepShares) -> tuple[float, moments.Opened, list[int]]:
        """Decrypt a step's answer from cross moments: the loss, what was opened, and the
        bank's own part of each row's residual."""
        assert self._moment_step is not None
        _check_step(msg.step, self._step, "the bureau's shares")
        key, sent_rows, fixed, share = self._moment_step
        own = self.private_key.public_key
        if not moments.WEIGHT_BITS <= msg.share_bits <= moments.MAX_SHARE_BITS:
            raise ProtocolViolation(f"the bureau stated a share bound of {msg.share_bits} bits")
        if any(abs(s) >> msg.share_bits for s in share):
            raise ProtocolViolation(
                "the bureau's bound on the shares does not cover the bank's own share"
            )
        kb, ka = self.bureau_columns, self.plan.bank_columns
        try:
            lay = moments.Layouts.of(_key_bits(own), ka, kb, msg.share_bits)
        except ValueError as exc:  # a slot wider than the key
            raise ProtocolViolation(
                f"the bureau's share bound does not fit the key: {exc}"
            ) from exc
        training = msg.step.batch >= 0
        cross = he.ciphertexts_from_bytes(msg.cross_moments, own, kb if sent_rows else 0)
        received = [
            *he.ciphertexts_from_bytes(msg.gradient_share, own, lay.gradient.plaintexts_for(kb)),
            *he.ciphertexts_from_bytes(msg.gram_share, own, lay.gram.plaintexts_for(kb)),
            *he.ciphertexts_from_bytes(msg.share_moments, own, lay.limbs),
            *he.ciphertexts_from_bytes(
                msg.bank_gradient, own, lay.cross.plaintexts_for(ka) if training else 0
            ),
            *he.ciphertexts_from_bytes(msg.loss_term, own, 1),
        ]
        if msg.score_shares or msg.bureau_masks:
            raise ProtocolViolation("the bureau sent per-row shares to a step from moments")
        plain = he.decrypt_many([*cross, *received], self.private_key, self.executor)
        self.counts.decryptions += len(plain)
        if sent_rows:
            self._cross[key] = [
                he.unpack_slots([m], lay.rows, ka + 1, bounded=False) for m in plain[:kb]
            ]
        held = self._cross.get(key)
        if held is None:
            raise ProtocolViolation("the bureau sent no moments for a batch's first step")
        opened = moments.open_step(
            plain[len(cross) :],
            held,
            share,
            [1 << SCORE_WEIGHT_BITS, *fixed],
            lay,
            kb,
            training,
            int(own.n),
        )
        parts = moments.row_parts(self.x8[self._rows], self.y[self._rows], fixed)
        if max(abs(t) for t in parts) >> (SCORE_VALUE_BITS + 1):  # |2 + u_A - 4y| >= 2^11
            raise PolicyViolation(
                "the bank's own scores left +-2048: training diverged; lower the learning rate"
            )
        return _taylor_loss(parts, opened.interaction), opened, parts

    def update_from_moments(self, msg: StepShares, epoch: int) -> float:
        """A training step from cross moments: open, step w_A and s1; the batch's loss."""
        assert self.shares is not None
        loss, opened, parts = self._open_moments(msg)
        own = exact_products(self.x8[self._rows].T, parts)
        scale = float(1 << GRADIENT_BITS) * 4.0 * len(self._rows)
        gradient = np.array(
            [(a + b) / scale for a, b in zip(own, opened.cross_gradient, strict=True)]
        )
        self.optimizer.step(gradient, epoch)
        self.shares.step(opened.gradient_share, GRADIENT_BITS, 4 * len(self._rows), epoch)
        self._moment_step = None
        return loss

    def masked_gradient(self, msg: StepShares) -> MaskedValues:
        """X_A^T [[-r]]_B: the bureau's part of the bank's gradient, masked for it to
        decrypt."""
        assert self.bureau_key is not None
        _check_step(msg.step, self._step, "the bureau's shares")
        masks = he.ciphertexts_from_bytes(msg.bureau_masks, self.bureau_key, len(self._rows))
        products = he.inner_products(
            masks, self.x8[self._rows], self.bureau_key, self.executor, self.counts
        )
        packed, self._packing = he.pack_padded(
            products, _layout(CROSS_VALUE_BITS, self.bureau_key), self.bureau_key
        )
        self.counts.peer_encryptions += len(packed)
        return MaskedValues(
            msg.step, len(products), he.ciphertexts_to_bytes(packed, self.bureau_key)
        )

    def open_shares(self, msg: StepShares) -> None:
        """Decrypt the bureau's packed shares (while it decrypts the bank's values)."""
        _check_step(msg.step, self._step, "the bureau's shares")
        if self._opened is not None:
            return
        own = self.private_key.public_key
        training = msg.step.batch >= 0
        score_layout = _layout(SCORE_VALUE_BITS, own)
        rows = len(self._rows)
        scores = he.ciphertexts_from_bytes(msg.score_shares, own, score_layout.plaintexts_for(rows))
        columns = self.bureau_columns if training else 0
        gradient_layout = _layout(VALUE_BITS, own)
        gradient = he.ciphertexts_from_bytes(
            msg.gradient_share, own, gradient_layout.plaintexts_for(columns)
        )
        (loss,) = he.ciphertexts_from_bytes(msg.loss_term, own, 1)
        plain = he.decrypt_many([*scores, *gradient, loss], self.private_key, self.executor)
        self.counts.decryptions += len(plain)
        v = he.unpack_slots(plain[: len(scores)], score_layout, rows)
        g = he.unpack_slots(plain[len(scores) : -1], gradient_layout, columns)
        self._opened = _Opened(v, g, _signed(plain[-1], own))

    def _loss(self, opened: _Opened) -> tuple[float, list[int]]:
        """The batch's Taylor loss and e + v."""
        ev = [a + b for a, b in zip(self._e, opened.v, strict=True)]
        return _taylor_loss(ev, opened.loss_term), ev

    def update(self, msg: DecryptedValues, epoch: int) -> float:
        """Unmask X_A^T (-r); step the own weights and the share; returns the batch's loss."""
        assert self.bureau_key is not None and self._packing is not None
        assert self.shares is not None and self._opened is not None
        _check_step(msg.step, self._step, "decrypted values")
        plain = he.plaintexts_from_bytes(msg.plaintexts, self.bureau_key, len(self._packing.pads))
        cross = he.unpack_padded(plain, self._packing)
        self._packing = None
        loss, ev = self._loss(self._opened)
        own = exact_products(self.x8[self._rows].T, ev)
        scale = float(1 << GRADIENT_BITS) * 4.0 * len(self._rows)
        gradient = np.array([(a + b) / scale for a, b in zip(own, cross, strict=True)])
        self.optimizer.step(gradient, epoch)
        self.shares.step(self._opened.gradient, GRADIENT_BITS, 4 * len(self._rows), epoch)
        self._opened = None
        return loss

    def validation_loss(self, msg: StepShares) -> float:
        if self.by_moments:
            loss, _, _ = self._open_moments(msg)
            self._moment_step = None
            return loss
        self.open_shares(msg)
        assert self._opened is not None
        loss, _ = self._loss(self._opened)
        self._opened = None
        return loss

    def end_epoch(self, epoch: int) -> None:
        assert self.shares is not None
        self.snapshots[epoch] = self.optimizer.weights.copy()
        self.share_snapshots[epoch] = list(self.shares.share)


class Pending(Protocol[T_co]):
    """A call under way (a ``concurrent.futures.Future``, or a gRPC call)."""

    def result(self) -> T_co: ...


class TrainingPeer(Protocol):
    """The bureau as the bank's driver sees it: each call returns at once, pending."""

    def step(self, msg: EncryptedResiduals) -> Pending[StepShares]: ...

    def decrypt(self, msg: MaskedValues) -> Pending[DecryptedValues]: ...


OnBatch = Callable[[int, int, int], None]  # epoch, batches done, batches in the epoch


@dataclass
class TrainingResult:
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bureau_share: list[int] = field(default_factory=list)  # s1 of the best epoch


def drive_training(
    bank: BankTrainer,
    peer: TrainingPeer,
    on_batch: OnBatch | None = None,
    clock: Callable[[], float] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    start_epoch: int = 0,
    history: list[EpochRecord] | None = None,
) -> TrainingResult:
    """The bank's schedule: epochs of batches, the validation rows after each epoch, early
    stopping on the validation loss (the training loss without a validation split). The
    bank decrypts its shares while the bureau decrypts the bank's values."""
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
        # the epoch's steps in order: each prepares the next while the bureau computes
        steps = [(Step(job, epoch, i), r) for i, r in enumerate(batches)]
        steps += [(Step(job, epoch, VALIDATION - i), r) for i, r in enumerate(bank.validation)]
        following = steps[1:]
        for number, rows in enumerate(batches):
            step = Step(job, epoch, number)
            pending = peer.step(bank.residuals(step, rows))
            if number < len(following):
                bank.prepare(*following[number])
            shares = pending.result()
            if bank.by_moments:
                losses.append(bank.update_from_moments(shares, epoch))
            else:
                decrypted_f = peer.decrypt(bank.masked_gradient(shares))
                bank.open_shares(shares)
                losses.append(bank.update(decrypted_f.result(), epoch))
            weights_of.append(len(rows))
            if on_batch:
                on_batch(epoch, number + 1, len(batches))
        bank.end_epoch(epoch)
        train_loss = float(np.average(losses, weights=weights_of))
        validation_loss = None
        if bank.validation:
            parts = []
            for part, rows in enumerate(bank.validation):
                step = Step(job, epoch, VALIDATION - part)
                pending = peer.step(bank.residuals(step, rows))
                if len(batches) + part < len(following):
                    bank.prepare(*following[len(batches) + part])
                shares = pending.result()
                parts.append(bank.validation_loss(shares))
            validation_loss = float(np.average(parts, weights=[len(r) for r in bank.validation]))
        history.append(
            EpochRecord(
                epoch,
                train_loss,
                validation_loss,
                round(clock() - started, 3),
                bank.counts.minus(counts_before),
            )
        )
        monitored = train_loss if validation_loss is None else validation_loss
        # observed before the epoch is reported (and checkpointed): a job resumed after
        # its last epoch (its finish refused a moment) had lost that epoch's observation,
        # and with one epoch no epoch was best (a review's KeyError)
        stop = bank.early_stopping.observe(epoch, monitored)
        if on_epoch:
            on_epoch(history[-1])
        if stop:
            break
    best = bank.early_stopping.best_epoch
    return TrainingResult(best, history, bank.snapshots[best], bank.share_snapshots[best])
