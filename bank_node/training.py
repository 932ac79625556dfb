"""The bank's joint-model jobs: train, predict, and the bureau's feature catalogue.

Each job is a function the CLI, the demo and the tests call alike. The protocol lives in
``protocols.vertical_lr``; this module reads files, runs PSI, carries messages
over gRPC and writes the bank's half of the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bank_node.metrics import convergence_warning, evaluate, mean_preserving_part, sigmoid
from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from node_runtime.transport import certs
from node_runtime.transport import model_codec as codec
from node_runtime.transport.errors import raise_from_rpc
from protocols import explain, psi, scorecard
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, PeerError, ProtocolViolation
from protocols.features import (
    FEATURE_KINDS,
    FORMULA_STARTS,
    MISSING,
    FeatureRecipe,
    check_peer_names,
)
from protocols.ids import IdType, PreparedIds, normalise_column, prepare_ids
from protocols.lookup import MODEL_ID
from protocols.optim import OptimizerConfig, split_rows
from xinrong.v1 import model_pb2 as pb

from .client import BureauConnection, run_psi
from .data_checks import (
    check_bank_data,
    check_bureau_features,
    read_labels,
    warn_rejected_ids,
)
from .frames import as_table

log = logging.getLogger(__name__)
MODEL_FILE = "model.json"
# the bank's own per-row results on the matched rows: ID, split, y, joint (and bank_only)
EVALUATION_FILE = "evaluation.csv"
MODEL_FORMAT = "xinrong-bank-model/1"
T = TypeVar("T")
Say = Callable[[str], None]

# Per-call deadlines: a 4096-row batch at 4096-bit keys takes well under a minute.
STEP_DEADLINE = 300.0
START_DEADLINE = 600.0  # the bureau generates a key and prepares its columns


def _call(doing: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as err:
        raise_from_rpc(err, doing)


class _Pending(Generic[T]):
    """A call in flight to the bureau: ``result()`` waits for it and turns its protobuf
    into the protocol's message (or a gRPC error into a PeerError); ``cancel()`` stops it."""

    def __init__(self, doing: str, wait: Callable[[], T], cancel: Callable[[], object]) -> None:
        self._doing, self._wait, self._cancel = doing, wait, cancel

    def result(self) -> T:
        return _call(self._doing, self._wait)

    def cancel(self) -> None:
        self._cancel()


class GrpcTrainingPeer:
    """The bureau as a ``TrainingPeer``: every call is started at once and awaited later
    (gRPC's own futures), so the bank computes while the bureau does. Nothing waits for a
    call after ``close()``: if the bureau dies, the bank stops at once."""

    def __init__(self, connection: BureauConnection, allow_test_keys: bool) -> None:
        self.stub, self.metadata = connection.training, connection.metadata
        self.allow_test_keys = allow_test_keys
        self.width = 0  # bytes per bureau ciphertext, known after StartTraining
        self.max_rows = 0
        # calls sent since the last checkpoint: once one has, the bureau may have decrypted
        # a step of the new epoch, and it decrypts each step once, so no resume can redo it
        self.sent_since_checkpoint = 0
        # a resumed run must have an epoch answered before another resume is accepted
        self.resume_pending = False
        self._calls: list[Any] = []

    def _unary(
        self, doing: str, method: Any, request: Any, convert: Callable[[Any], T]
    ) -> _Pending[T]:
        call = method.future(request, timeout=STEP_DEADLINE, metadata=self.metadata)
        self.sent_since_checkpoint += 1
        self._calls = [c for c in self._calls if not c.done()] + [call]
        return _Pending(doing, lambda: convert(call.result()), call.cancel)

    def step(self, msg: vlr.EncryptedResiduals) -> _Pending[vlr.StepShares]:
        call = self.stub.TrainingStep(
            codec.residuals_to_proto(msg), timeout=STEP_DEADLINE, metadata=self.metadata
        )
        self.sent_since_checkpoint += 1
        self._calls = [c for c in self._calls if not c.done()] + [call]
        return _Pending(
            "exchanging a training step's shares with the bureau",
            lambda: codec.shares_from_proto(call, self.width, self.max_rows),
            call.cancel,
        )

    def decrypt(self, msg: vlr.MaskedValues) -> _Pending[vlr.DecryptedValues]:
        return self._unary(
            "asking the bureau to decrypt",
            self.stub.Decrypt,
            codec.masked_to_proto(msg),
            codec.decrypted_from_proto,
        )

    def close(self) -> None:
        for call in self._calls:
            call.cancel()
        self._calls.clear()


# -- reading the bank's data ---------------------------------------------------------------


def _id_positions(table: pa.Table, id_column: str, id_type: IdType, ids: list[str]) -> np.ndarray:
    """The first row of each matched ID in the bank's table."""
    normalised = normalise_column(table.column(id_column).combine_chunks(), id_type)
    positions = pc.index_in(pa.array(ids, pa.string()), value_set=normalised)
    if positions.null_count:
        raise ProtocolViolation("PSI returned an ID that is not in the bank's file")
    return positions.to_numpy(zero_copy_only=False).astype(np.int64)


SMALL_VALIDATION = 1000  # rows: below this the validation loss is too noisy for patience 2


def default_patience(validation_rows: int) -> int:
    """Epochs without improvement before stopping: 2, or 4 when fewer than 1,000 rows are
    held back. On a few hundred rows the validation loss moves by noise alone (its standard
    error is about 0.03 on 200 rows), and a patience of 2 stops small sets while the model
    is still improving (on the 1,000-row UCI split, 1 run in 4: BENCHMARKS.md)."""
    return 4 if 0 < validation_rows < SMALL_VALIDATION else 2


def auto_batch_size(train_rows: int, columns: int, limits: vlr.TrainingLimits) -> int:
    """About twenty batches an epoch (enough optimiser steps in ten epochs), never fewer
    rows than the floor, at most 1,024 rows."""
    floor = max(limits.min_batch_size, 2 * columns)
    return int(min(vlr.MAX_BATCH, max(floor, min(1024, train_rows // 20))))


def bureau_catalogue(connection: BureauConnection) -> list[str]:
    """The names of the bureau features this bank may use (``ListFeatures``: no quota)."""
    return [f["name"] for f in bureau_features(connection)]


def _design(recipe: FeatureRecipe, table: pa.Table) -> np.ndarray:
    """The bank's model columns: the intercept, then its prepared features."""
    x = recipe.transform(table)
    return np.hstack([np.ones((table.num_rows, 1)), x])


def calibrate(u: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Platt scaling of the joint log-odds on the training rows: the Taylor loss fits the
    ranking well but stretches the log-odds, so the probabilities come out miscalibrated.
    One slope and one intercept, fitted by the bank on what it already sees; the ranking
    (AUC, KS) is unchanged."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return {"slope": 1.0, "intercept": 0.0}
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(u.reshape(-1, 1), y)
    slope = float(fit.coef_[0, 0])
    if not np.isfinite(slope) or slope <= 0:  # a useless fit: keep the model as it is
        return {"slope": 1.0, "intercept": 0.0}
    return {"slope": slope, "intercept": float(fit.intercept_[0])}


def bank_only_model(x_train: np.ndarray, y_train: np.ndarray) -> Any:
    """The plaintext comparison: an exact logistic regression on the bank's columns alone."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(x_train, y_train)


# -- train: the steps (read, prepare, PSI, plan, train, evaluate, save) ----------------------


@dataclass
class TrainingJob:
    """One training job's settings, as the caller gave them or as its checkpoint recorded
    them (a resumed job keeps the settings it was started with)."""

    bureau: str
    bank_id: str
    id_column: str
    label: str
    model_dir: Path  # the checkpoint goes here after every epoch
    data: str | Path | None = None  # the bank's file; None for a table in memory
    id_type: IdType = IdType.USCC
    bank_features: list[str] | None = None
    bureau_features: list[str] | None = None
    validation_fraction: float = 0.2
    epochs: int = 10
    batch_size: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    seed: int | None = None
    key_bits: int = he.DEFAULT_KEY_BITS
    allow_test_keys: bool = False
    compare_bank_only: bool = False
    patience: int | None = None  # None: default_patience of the validation rows
    quiet: bool = False
    say: Say = field(default=lambda text: log.info("%s", text))
    on_epoch: Callable[[vlr.EpochRecord], None] | None = None
    saved: dict[str, Any] | None = None  # the checkpoint of the job being resumed
    read_options: tables.ReadOptions | None = None
    positive_label: str | None = None
    job_id: str | None = None  # a new job's ID, chosen by the caller (default: a fresh one)
    # told the job's ID once the bank's data passed its checks and the job starts
    on_start: Callable[[str], None] | None = None
    # a first Ctrl-C finishes the epoch and stops where `--resume` continues: only for a
    # job whose checkpoint outlives the call (train_job), not the API's temporary one
    pause_on_interrupt: bool = False
    # an IV table written for this job (train --min-iv) stays beside the model it replaces
    keep_iv_table: bool = False

    def __post_init__(self) -> None:
        he.check_key_bits(self.key_bits, self.allow_test_keys)
        self.optimizer.check()
        self.model_dir = Path(self.model_dir)
        self.seed = secrets.randbits(32) if self.seed is None else self.seed
        if self.saved is not None:
            self.job_id = self.saved["job_id"]
        elif self.job_id is None:
            self.job_id = secrets.token_hex(16)

    @classmethod
    def resumed(
        cls,
        model_dir: str | Path,
        job_id: str,
        bureau: str | None,
        tls_dir: str | Path | None,
        allow_test_keys: bool = False,
    ) -> TrainingJob:
        """The job ``job_id`` as its checkpoint in ``model_dir`` recorded it."""
        saved = _load_checkpoint(model_dir, job_id)
        if saved["data"] is None:
            raise InputDataError(
                f"the job {job_id} was trained from a table in memory: train it again "
                "(resuming reads the bank's file named in the checkpoint)"
            )
        digest = saved.get("data_sha256")  # absent from checkpoints of older versions
        if digest is not None and _file_digest(saved["data"]) != digest:
            raise InputDataError(
                f"{saved['data']} has changed since job {job_id} started (its SHA-256 "
                "differs): a resume must read the same rows; put the original file back, or "
                "start a new job"
            )
        certified = certs.certified_bank_id(tls_dir) if tls_dir is not None else saved["bank_id"]
        if certified != saved["bank_id"]:
            raise InputDataError(
                f"the job {job_id} was started by bank {saved['bank_id']!r}, but the "
                f"certificate in {tls_dir} is bank {certified!r}: resume it with "
                f"{saved['bank_id']}'s TLS directory"
            )
        names = ("bank_features", "bureau_features", "validation_fraction", "seed")
        return cls(
            bureau=bureau or saved["bureau"],
            bank_id=saved["bank_id"],
            id_column=saved["id_column"],
            label=saved["label"],
            model_dir=Path(model_dir),
            data=saved["data"],
            id_type=IdType(saved["id_type"]),
            batch_size=saved["batch_size"],
            epochs=saved["epochs"],
            patience=saved["patience"],
            optimizer=OptimizerConfig(**saved["optimizer"]),
            key_bits=saved["key_bits"],
            compare_bank_only=saved["compare_bank_only"],
            allow_test_keys=allow_test_keys,
            saved=saved,
            positive_label=saved.get("positive_label"),
            read_options=tables.ReadOptions(**saved.get("read_options", {})),
            **{name: saved[name] for name in names},
        )


@dataclass
class Matched:
    """The bank's rows the bureau knows (in the PSI session's order) and their labels."""

    result: psi.BankPsiResult
    table: pa.Table
    y: np.ndarray


@dataclass
class Planned:
    """What both sides agree on before the first batch, and the bank's design matrix."""

    plan: vlr.TrainingPlan
    x: np.ndarray
    recipe: FeatureRecipe
    train_rows: np.ndarray
    validation_rows: np.ndarray
    private_key: he.PrivateKey
    encryptor: he.OwnerEncryptor
    limits: vlr.TrainingLimits


@dataclass
class Trained:
    """The training outcome: the bank's weights and history, the bureau's model id, its
    features and its scores on the matched rows."""

    outcome: vlr.TrainingResult
    model_id: str
    neutral_score: float
    bureau_features: list[str]
    bureau_columns: int
    bureau_scores: np.ndarray
    counts: dict[str, int]


@dataclass
class Fitted:
    """A trained model as the bank keeps it: its half (``model.json``), its per-row results
    on the matched rows (``evaluation.csv``) and the job's summary."""

    bank_half: dict[str, Any]
    evaluation: pa.Table
    summary: dict[str, Any]


def read(
    data: Any,
    id_column: str,
    label: str,
    options: tables.ReadOptions | None = None,
    positive_label: str | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """The bank's table (a CSV, TSV, Excel or Parquet file, or a pyarrow Table or pandas
    DataFrame in memory) and its 0/1 labels (``positive_label`` names the value meaning
    default, such as ``是`` or ``bad``)."""
    table = as_table(data, id_column, options)
    return table, read_labels(table, label, positive_label, whereabouts(data, table, options))


def whereabouts(
    data: Any, table: pa.Table, options: tables.ReadOptions | None
) -> Callable[[Sequence[int]], str]:
    """Where data rows stand in the bank's file, for messages (nothing for a table in
    memory)."""
    if isinstance(data, str | Path):
        return tables.Whereabouts(data, table.num_rows, options)
    return lambda rows: ""


def prepare(table: pa.Table, labels: np.ndarray, job: TrainingJob) -> PreparedIds:
    """The bank's data checked before anything leaves the bank (classes, duplicates, unusable
    columns, see ``data_checks``), and the IDs to match (normalised, checked, each once); the
    bank's columns default to all usable ones but the ID and the label."""
    if job.saved is None:  # a resumed job was checked when it started
        checked = check_bank_data(
            table, job.id_column, job.id_type, labels, job.bank_features, job.label, say=job.say
        )
        job.bank_features = checked.bank_features
    elif job.bank_features is None:
        job.bank_features = [c for c in table.column_names if c not in (job.id_column, job.label)]
    prepared = prepare_ids(table.column(job.id_column), job.id_type)
    warn_rejected_ids(prepared, job.say, whereabouts(job.data, table, job.read_options))
    return prepared


def intersect(
    connection: BureauConnection,
    executor: Executor | None,
    table: pa.Table,
    labels: np.ndarray,
    prepared: PreparedIds,
    job: TrainingJob,
) -> Matched:
    """PSI with reveal mode ``both`` (the bureau trains on the same rows), or, for a resumed
    job, the rows the bureau recorded; then the bank's matched rows in the session's order."""
    say, saved = job.say, job.saved
    bars = ProgressBars(enabled=False if job.quiet else None)
    if saved is None:
        say(f"private set intersection on {len(prepared.ids):,} IDs")
        result = run_psi(connection, prepared.ids, psi.Reveal.BOTH, executor, bars)
    else:  # the rows of the job being resumed, as the bureau recorded them
        result = psi.BankPsiResult(
            saved["matched_ids"], len(prepared.ids), 0, saved["psi_session_id"], 0
        )
    bars.close()
    say(f"the bureau knows {len(result.matched_ids):,} of them")
    positions = _id_positions(table, job.id_column, job.id_type, result.matched_ids)
    return Matched(result, table.take(pa.array(positions)), labels[positions])


def plan_training(connection: BureauConnection, matched: Matched, job: TrainingJob) -> Planned:
    """The split, the bank's prepared columns, the batch size, the job's Paillier key and
    the plan the bureau is asked to accept."""
    result, saved, seed = matched.result, job.saved, job.seed
    assert seed is not None  # set in TrainingJob.__post_init__
    rows, say, key_bits = len(result.matched_ids), job.say, job.key_bits
    limits = vlr.TrainingLimits(allow_test_keys=job.allow_test_keys)
    train_rows, validation_rows = split_rows(rows, job.validation_fraction, seed)
    recipe = FeatureRecipe.fit(matched.table.take(pa.array(train_rows)), job.bank_features or [])
    x = _design(recipe, matched.table)
    if job.patience is None:
        job.patience = default_patience(len(validation_rows))
    # the bureau raises an automatic batch to its floor once it knows its columns
    batch = job.batch_size or auto_batch_size(len(train_rows), x.shape[1], limits)
    if saved is None:
        say(f"generating a {key_bits}-bit Paillier key")
        public_key, private_key = he.generate_keypair(key_bits, job.allow_test_keys)
    else:
        p, q = int(saved["p"]), int(saved["q"])
        public_key = he.PublicKey(p * q)
        private_key = he.PrivateKey(public_key, p, q)
    encryptor = he.OwnerEncryptor(private_key)
    plan = vlr.TrainingPlan(
        job_id=str(job.job_id),
        psi_session_id=result.session_id,
        rows=rows,
        bank_columns=x.shape[1],
        validation_fraction=job.validation_fraction,
        seed=seed,
        batch_size=batch,
        max_epochs=job.epochs,
        optimizer=job.optimizer,
        bureau_features=tuple(job.bureau_features or ()),
        bank_public_key=public_key,
        batch_size_adjustable=job.batch_size is None and saved is None,
        bank_key_proof=he.prove_key(private_key),
    )
    return Planned(plan, x, recipe, train_rows, validation_rows, private_key, encryptor, limits)


def train(
    connection: BureauConnection,
    executor: Executor | None,
    matched: Matched,
    planned: Planned,
    job: TrainingJob,
) -> Trained:
    """The joint training with the bureau, epoch by epoch, with a checkpoint after each;
    then the bureau's scores on the matched rows."""
    # the job's names, as the training block below has always used them
    plan, x, y, private_key = planned.plan, planned.x, matched.y, planned.private_key
    limits, encryptor, result, saved = planned.limits, planned.encryptor, matched.result, job.saved
    train_rows, validation_rows = planned.train_rows, planned.validation_rows
    bureau, bank_id, data, id_column, label = (
        job.bureau,
        job.bank_id,
        job.data,
        job.id_column,
        job.label,
    )
    id_type, bank_features, bureau_features = job.id_type, job.bank_features, job.bureau_features
    validation_fraction, seed, batch = job.validation_fraction, job.seed, plan.batch_size
    epochs, patience, optimizer, key_bits = job.epochs, job.patience, job.optimizer, job.key_bits
    compare_bank_only, allow_test_keys, quiet = (
        job.compare_bank_only,
        job.allow_test_keys,
        job.quiet,
    )
    say, on_epoch, model_dir, rows = job.say, job.on_epoch, job.model_dir, plan.rows
    assert patience is not None  # set in plan_training

    def new_trainer(plan: vlr.TrainingPlan) -> vlr.BankTrainer:
        stopping = vlr.EarlyStopping(patience=patience)
        return vlr.BankTrainer(plan, x, y, private_key, limits, stopping, executor, encryptor)

    if saved is not None and saved.get("finished"):
        # the bureau finished the job, the bank had not yet its scores: only they remain
        say(f"job {plan.job_id} finished at the bureau; fetching its scores")
        return _scored(connection, saved["finished"], result.session_id, rows)
    trainer = new_trainer(plan)
    start_epoch, history = 0, list[vlr.EpochRecord]()
    if saved is None:
        accepted_pb = _call(
            "starting the training job",
            lambda: connection.training.StartTraining(
                codec.plan_to_proto(plan), timeout=START_DEADLINE, metadata=connection.metadata
            ),
        )
        adopted = vlr.adopt_batch_size(plan, accepted_pb.batch_size)
        if adopted is not plan:  # raised to twice the bureau's prepared columns
            plan, batch, trainer = adopted, adopted.batch_size, new_trainer(adopted)
            planned.plan = adopted
    else:
        start_epoch = int(saved["epoch"])
        say(f"resuming job {plan.job_id} at epoch {start_epoch + 1}")
        with _ends_with_the_bureau(model_dir, plan.job_id):
            accepted_pb = _call(
                "resuming the training job",
                lambda: connection.training.ResumeTraining(
                    pb.ResumeRequest(job_id=plan.job_id, epoch=start_epoch),
                    timeout=START_DEADLINE,
                    metadata=connection.metadata,
                ),
            )
    checkpoint = {
        "job_id": plan.job_id,
        "bureau": bureau,
        "bank_id": bank_id,
        "data": None if data is None else str(Path(data).resolve()),
        "data_sha256": saved.get("data_sha256") if saved else _file_digest(data),
        "id_column": id_column,
        "id_type": id_type.value,
        "label": label,
        "bank_features": bank_features,
        "bureau_features": bureau_features,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "batch_size": batch,
        "epochs": epochs,
        "patience": patience,
        "optimizer": optimizer.as_dict(),
        "key_bits": key_bits,
        "compare_bank_only": compare_bank_only,
        "positive_label": job.positive_label,
        "read_options": vars(job.read_options or tables.ReadOptions()),
        "psi_session_id": result.session_id,
        "matched_ids": result.matched_ids,
        "p": str(private_key.p),
        "q": str(private_key.q),
    }
    done: list[vlr.EpochRecord] = list(history)
    trainer.accept(codec.accepted_from_proto(accepted_pb, allow_test_keys))
    if saved is not None:  # after accept: the share of the bureau's weights has its size
        history = trainer.restore(saved["state"])
        done.extend(history)
    chosen = check_peer_names(accepted_pb.bureau_features, "the bureau's model features")
    say(
        f"training on {len(train_rows):,} rows ({len(validation_rows):,} held back): "
        f"{x.shape[1] - 1} bank columns, {trainer.bureau_columns} bureau columns from "
        f"{len(chosen)} bureau features; batches of {batch}"
    )

    peer = GrpcTrainingPeer(connection, allow_test_keys)
    peer.resume_pending = saved is not None  # the bureau takes one resume per interruption
    assert trainer.bureau_key is not None
    peer.width = he.ciphertext_bytes(trainer.bureau_key)
    peer.max_rows = 2 * batch  # the rows of a batch; validation steps carry no masks
    epoch_bars = ProgressBars(enabled=False if quiet else None, unit="batch")

    def on_batch(epoch: int, done: int, total: int) -> None:
        epoch_bars(f"epoch {epoch + 1}/{epochs}", done, total)

    def report_epoch(record: vlr.EpochRecord) -> None:
        validation = (
            f", validation loss {record.validation_loss:.5f}"
            if record.validation_loss is not None
            else ""
        )
        say(
            f"epoch {record.epoch + 1}: training loss {record.train_loss:.5f}{validation} "
            f"({record.seconds:.1f} s)"
        )
        log.info("epoch %d: bank operations %s", record.epoch + 1, record.counts)
        done.append(record)
        _save_checkpoint(
            model_dir,
            {**checkpoint, "epoch": record.epoch + 1, "state": trainer.checkpoint(done)},
        )
        peer.sent_since_checkpoint = 0
        peer.resume_pending = False
        if on_epoch is not None:
            on_epoch(record)
        if pause.requested and record.epoch + 1 < epochs:
            log.warning("stopped after epoch %d, as asked: it can be resumed", record.epoch + 1)
            raise KeyboardInterrupt

    try:
        with (
            _ends_with_the_bureau(model_dir, plan.job_id),
            _pause_on_interrupt(job.pause_on_interrupt) as pause,
        ):
            outcome = vlr.drive_training(
                trainer,
                peer,
                on_batch,
                on_epoch=report_epoch,
                start_epoch=start_epoch,
                history=history,
            )
    except BaseException as exc:  # an interruption too: the job is given up unless resumable
        peer.close()
        _give_up_unless_resumable(connection, model_dir, plan.job_id, peer, exc)
        raise
    finally:
        peer.close()
        epoch_bars.close()
    try:
        finished = _call(
            "finishing the training job",
            lambda: connection.training.FinishTraining(
                pb.FinishRequest(
                    job_id=plan.job_id,
                    epoch=outcome.best_epoch,
                    weight_share=codec.share_to_proto(outcome.bureau_share),
                ),
                timeout=STEP_DEADLINE,
                metadata=connection.metadata,
            ),
        )
    except PeerError as exc:
        if exc.job_ended:
            # the bureau refused the model by policy and ended the job for good: its
            # checkpoint (the job's key) resumes nothing, and it blocked the next run in
            # this directory, --overwrite or not (a review). Another refusal (a bank taken
            # out of the configuration a moment) leaves the job, and the checkpoint, alive.
            (Path(model_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
        raise
    if not MODEL_ID.match(finished.model_id):  # it names files and tables at the bank
        raise ProtocolViolation(
            f"the bureau named its model {finished.model_id[:40]!r}, not a model id"
        )
    # the bureau part of every applicant it does not hold: bounded as its other scores are
    # (NaN would go into model.json, +-1e6 would refuse or approve them all)
    if not (np.isfinite(finished.neutral_score) and abs(finished.neutral_score) <= vlr.SCORE_BOUND):
        # the job has ended at the bureau: its checkpoint (the job's key) is of no more use
        (Path(model_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
        raise ProtocolViolation(
            f"the bureau's neutral score {finished.neutral_score!r} for model "
            f"{finished.model_id} is not a score (finite, at most {vlr.SCORE_BOUND:g} in size); "
            f"the model is not saved: delete it at the bureau with `bank-node models delete "
            f"{finished.model_id}` and ask the bureau's operator"
        )
    # On disk before the scores are fetched: the job has ended at the bureau, so if the
    # scores fail (a quota, the network) a resume starts from here, not from a job the
    # bureau no longer has. (The checkpoint still holds the job's key until the model is
    # saved.)
    ended = {
        "model_id": finished.model_id,
        "neutral_score": finished.neutral_score,
        "bureau_features": chosen,
        "bureau_columns": trainer.bureau_columns,
        "counts": trainer.counts.as_dict(),
        "best_epoch": outcome.best_epoch,
        "weights": outcome.weights.tolist(),
        "history": [vars(r) for r in outcome.history],
    }
    _save_checkpoint(model_dir, {**checkpoint, "epoch": len(done), "finished": ended})
    return _scored(connection, ended, result.session_id, rows)


def _scored(
    connection: BureauConnection, ended: dict[str, Any], session_id: str, rows: int
) -> Trained:
    """The finished job with the bureau's scores of its matched rows."""
    outcome = vlr.TrainingResult(
        best_epoch=int(ended["best_epoch"]),
        history=[vlr.EpochRecord(**r) for r in ended["history"]],
        weights=np.asarray(ended["weights"], dtype=np.float64),
    )
    return Trained(
        outcome=outcome,
        model_id=ended["model_id"],
        neutral_score=float(ended["neutral_score"]),
        bureau_features=list(ended["bureau_features"]),
        bureau_columns=int(ended["bureau_columns"]),
        bureau_scores=fetch_bureau_scores(connection, ended["model_id"], session_id, rows),
        counts=dict(ended["counts"]),
    )


def evaluate_model(
    matched: Matched, planned: Planned, trained: Trained, job: TrainingJob
) -> Fitted:
    """Calibration, metrics (and the bank-only comparison), the bank's half of the model
    and its per-row results on the matched rows."""
    result, y, x, recipe = matched.result, matched.y, planned.x, planned.recipe
    train_rows, validation_rows = planned.train_rows, planned.validation_rows
    outcome, rows = trained.outcome, len(result.matched_ids)
    losses = [
        r.validation_loss if r.validation_loss is not None else r.train_loss
        for r in outcome.history
    ]
    not_converged = convergence_warning(losses, job.epochs)
    if not_converged:
        job.say(f"warning: {not_converged}")
    weights = outcome.weights
    u = x @ weights + trained.bureau_scores
    calibration = calibrate(u[train_rows], y[train_rows])
    # the bureau part of applicants it does not hold: one that keeps the training rows' mean
    # probability (the bureau's mean score would lower it), else the bureau's
    neutral = mean_preserving_part(
        (x @ weights)[train_rows],
        trained.bureau_scores[train_rows],
        float(calibration["slope"]),
        float(calibration["intercept"]),
        vlr.SCORE_BOUND,
    )
    probabilities = sigmoid(calibration["slope"] * u + calibration["intercept"])
    metrics: dict[str, dict[str, Any]] = {
        "train": evaluate(y[train_rows], probabilities[train_rows]),
        "validation": evaluate(y[validation_rows], probabilities[validation_rows]),
    }
    bank_only = None
    if job.compare_bank_only:
        model = bank_only_model(x[train_rows, 1:], y[train_rows])
        bank_only = model.predict_proba(x[:, 1:])[:, 1]
        held = validation_rows if len(validation_rows) else train_rows
        metrics["bank_only"] = evaluate(y[held], bank_only[held])
        metrics["bank_only"]["evaluated_on"] = "validation" if len(validation_rows) else "train"
    bank_half = {
        "format": MODEL_FORMAT,
        "model_id": trained.model_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bureau": job.bureau,
        "bank_id": job.bank_id,
        "id_column": job.id_column,
        "id_type": job.id_type.value,
        "label": job.label,
        "positive_label": job.positive_label,
        "psi_session_id": result.session_id,
        "columns": ["(intercept)", *recipe.outputs],
        "weights": weights.tolist(),
        "recipe": recipe.to_json(),
        "bureau_features": trained.bureau_features,
        "neutral_bureau_score": trained.neutral_score if neutral is None else neutral,
        "bureau_mean_score": trained.neutral_score,
        "calibration": calibration,
        "converged": not_converged is None,
        "epoch": outcome.best_epoch,
        "history": [vars(r) for r in outcome.history],
        "metrics": metrics,
        "settings": {
            "seed": job.seed,
            "batch_size": planned.plan.batch_size,
            "max_epochs": job.epochs,
            "validation_fraction": job.validation_fraction,
            "key_bits": job.key_bits,
            "optimizer": job.optimizer.as_dict(),
            "patience": job.patience,
        },
        "counts": trained.counts,
    }
    split = np.full(rows, "train", dtype=object)
    split[validation_rows] = "validation"
    evaluation = {
        job.id_column: pa.array(result.matched_ids, pa.string()),
        "split": pa.array(split.tolist(), pa.string()),
        "y": pa.array(y, pa.int8()),
        "joint": pa.array(probabilities, pa.float64()),
    }
    if bank_only is not None:
        evaluation["bank_only"] = pa.array(bank_only, pa.float64())
    epochs_run = len(outcome.history)
    summary = {
        "model_id": trained.model_id,
        "model_dir": str(job.model_dir),
        "rows": rows,
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "bank_features": len(recipe.names),
        "bank_columns": x.shape[1] - 1,
        "bureau_features": len(trained.bureau_features),
        "bureau_columns": trained.bureau_columns,
        "epochs": epochs_run,
        "best_epoch": outcome.best_epoch + 1,
        "batch_size": planned.plan.batch_size,
        "train_auc": metrics["train"]["auc"],
        "validation_auc": metrics["validation"]["auc"],
        "validation_ks": metrics["validation"]["ks"],
        "validation_log_loss": metrics["validation"]["log_loss"],
        "converged": not_converged is None,
        "seconds_per_epoch": round(sum(r.seconds for r in outcome.history) / epochs_run, 3),
        "psi_session_id": result.session_id,
    }
    if job.compare_bank_only:
        summary["bank_only_auc"] = metrics["bank_only"]["auc"]
        summary["bank_only_ks"] = metrics["bank_only"]["ks"]
    return Fitted(bank_half, pa.table(evaluation), summary)


def save(model_dir: str | Path, fitted: Fitted, keep_iv_table: bool = False) -> None:
    """The bank's half (``model.json``) and its per-row results (``evaluation.csv``); the
    finished job's checkpoint, which held its key, is removed."""
    model_dir = Path(model_dir)
    model_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # files in it are 0600
    drop_stale_companions(model_dir, fitted.bank_half, keep_iv_table)
    tables.atomic_write_bytes(
        model_dir / MODEL_FILE, json.dumps(fitted.bank_half, indent=2).encode()
    )
    tables.write_csv(fitted.evaluation, model_dir / EVALUATION_FILE)
    (model_dir / CHECKPOINT_FILE).unlink(missing_ok=True)


def drop_stale_companions(model_dir: Path, model: dict[str, Any], keep_iv_table: bool) -> None:
    """Before ``model`` replaces another one ``model_dir`` holds: the old one's scorecard,
    and its IV table (a review's report showed the old job's IV beside the new model),
    unless this job's features were chosen from it (``keep_iv_table``). A model saved again
    over itself keeps both."""
    old = model_dir / MODEL_FILE
    try:
        before = json.loads(old.read_text()).get("model_id") if old.exists() else None
    except (OSError, ValueError, AttributeError):
        before = "?"
    if before is None or before == model.get("model_id"):
        return
    if "scorecard" not in model:
        (model_dir / "scorecard.csv").unlink(missing_ok=True)
    if keep_iv_table:
        return
    made = old.stat().st_mtime_ns
    for name in ("iv.csv", "iv.bins.json"):
        path = model_dir / name
        if path.exists() and path.stat().st_mtime_ns <= made:
            path.unlink()


def fit(
    connection: BureauConnection,
    executor: Executor | None,
    table: pa.Table,
    labels: np.ndarray,
    job: TrainingJob,
) -> Fitted:
    """The steps after reading, top-down: prepare, PSI, plan, train, evaluate."""
    prepared = prepare(table, labels, job)
    check_bureau_features(job.bureau_features, bureau_catalogue(connection))  # before PSI
    if job.on_start is not None:
        job.on_start(str(job.job_id))
    matched = intersect(connection, executor, table, labels, prepared, job)
    planned = plan_training(connection, matched, job)
    trained = train(connection, executor, matched, planned, job)
    return evaluate_model(matched, planned, trained, job)


def train_job(
    bureau: str,
    data: str | Path,
    id_column: str,
    label: str,
    model_dir: str | Path,
    bank_id: str,
    id_type: IdType = IdType.USCC,
    bank_features: list[str] | None = None,
    bureau_features: list[str] | None = None,
    validation_fraction: float = 0.2,
    epochs: int = 10,
    batch_size: int | None = None,
    optimizer: OptimizerConfig = OptimizerConfig(),
    seed: int | None = None,
    key_bits: int = he.DEFAULT_KEY_BITS,
    allow_test_keys: bool = False,
    compare_bank_only: bool = False,
    patience: int | None = None,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    on_epoch: Callable[[vlr.EpochRecord], None] | None = None,
    tls_dir: str | Path | None = None,
    resume: str | None = None,
    read_options: tables.ReadOptions | None = None,
    positive_label: str | None = None,
    job_id: str | None = None,
    on_start: Callable[[str], None] | None = None,
    overwrite: bool = False,
    keep_iv_table: bool = False,
) -> dict[str, Any]:
    """PSI, then joint training, then evaluation, from the bank's file; writes
    ``model_dir/model.json`` and ``model_dir/evaluation.csv`` and returns the summary.
    ``job_id``: the new job's ID (default: a fresh one); ``on_start`` is told it once the
    bank's data passed its checks, before anything is sent to the bureau. A ``model_dir``
    that holds a model is refused unless ``overwrite`` (then that model's files go once the
    new one is trained).

    After every epoch the bank's state goes to ``model_dir/checkpoint.json`` (0600: it holds
    the job's key); ``resume=JOB_ID`` continues that job from there, with the settings it
    was started with, after either side restarted."""
    started = time.perf_counter()
    # from before the checks until the model is saved: a second run into the directory is
    # refused at once (a review's two runs both succeeded, the second's model replacing the
    # first's unsaid)
    with hold_directory(model_dir, "training job", "--model-dir"):
        if resume is not None:
            job = TrainingJob.resumed(model_dir, resume, bureau, tls_dir, allow_test_keys)
        else:
            _refuse_a_held_checkpoint(model_dir)
            refuse_a_kept_model(model_dir, overwrite)
            job = TrainingJob(
                bureau=bureau,
                bank_id=bank_id,
                id_column=id_column,
                label=label,
                model_dir=Path(model_dir),
                data=data,
                id_type=id_type,
                bank_features=bank_features,
                bureau_features=bureau_features,
                validation_fraction=validation_fraction,
                epochs=epochs,
                batch_size=batch_size,
                optimizer=optimizer,
                seed=seed,
                key_bits=key_bits,
                allow_test_keys=allow_test_keys,
                compare_bank_only=compare_bank_only,
                patience=patience,
                read_options=read_options,
                positive_label=positive_label,
                job_id=job_id,
            )
        job.quiet, job.on_epoch, job.on_start = quiet, on_epoch, on_start
        job.pause_on_interrupt, job.keep_iv_table = True, keep_iv_table
        if say is not None:
            job.say = say
        assert job.data is not None  # a resumed job from memory is refused in resumed()
        table, labels = read(
            job.data, job.id_column, job.label, job.read_options, job.positive_label
        )
        with contextlib.ExitStack() as stack:
            executor = make_executor(workers, executor_spec)
            if executor is not None:
                stack.callback(executor.shutdown, cancel_futures=True)
            connection = stack.enter_context(
                BureauConnection(job.bureau, job.bank_id, tls_dir=tls_dir)
            )
            fitted = fit(connection, executor, table, labels, job)
            replaced = _kept_model_id(job.model_dir)
            save(job.model_dir, fitted, job.keep_iv_table)
            if replaced not in (None, fitted.bank_half["model_id"]):
                _delete_replaced(connection, str(replaced), job.say)
        return {**fitted.summary, "seconds": round(time.perf_counter() - started, 3)}


def _kept_model_id(model_dir: Path) -> str | None:
    try:
        kept = json.loads((model_dir / MODEL_FILE).read_text()).get("model_id")
    except (OSError, ValueError, AttributeError):
        return None
    return kept if isinstance(kept, str) and MODEL_ID.fullmatch(kept) else None


def _delete_replaced(connection: BureauConnection, model_id: str, say: Say) -> None:
    """The model a ``--overwrite`` replaced, deleted at the bureau too: its bank half is gone,
    so the bureau's could never score again, and it held one of the bank's ``max_models``
    (a review's monthly retraining piled them up unsaid)."""
    try:
        connection.scoring.DeleteModel(
            pb.DeleteModelRequest(model_id=model_id), timeout=60, metadata=connection.metadata
        )
        say(f"the replaced model {model_id} was deleted at the bureau too")
    except grpc.RpcError as err:
        if err.code() is grpc.StatusCode.NOT_FOUND:
            return  # deleted already (or kept by another bureau)
        say(
            f"warning: the replaced model {model_id} is still kept at the bureau "
            f"({err.code().name}): `bank-node models delete {model_id}` deletes it"
        )


CHECKPOINT_FILE = "checkpoint.json"


def _save_checkpoint(model_dir: str | Path, state: dict[str, Any]) -> None:
    directory = Path(model_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tables.atomic_write_bytes(directory / CHECKPOINT_FILE, json.dumps(state).encode(), mode=0o600)


# the bureau's answers that end a job for good there (it deleted its checkpoint and key)
JOB_ENDING_STATUSES = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND"}


@dataclass
class _Pause:
    requested: bool = False


@contextlib.contextmanager
def _pause_on_interrupt(wanted: bool) -> Iterator[_Pause]:
    """The first Ctrl-C finishes the epoch under way and stops after its checkpoint, where
    `--resume` continues; a second stops at once. A review's Ctrl-C one second after an
    epoch line lost the whole job: the bureau answers each step once, so a run stopped
    inside an epoch cannot be resumed. (Only in the main thread, where signals arrive.)"""
    pause = _Pause()
    previous = signal.getsignal(signal.SIGINT) if wanted else None
    own_handler = threading.current_thread() is threading.main_thread() and callable(previous)
    if not own_handler:  # not asked, another thread, SIGINT ignored, or a handler from C
        yield pause
        return

    def interrupted(signum: int, frame: object) -> None:
        if pause.requested:
            raise KeyboardInterrupt
        pause.requested = True
        log.warning(  # a warning: said even with --quiet
            "interrupt: finishing this epoch, then stopping where the job can be resumed; "
            "press Ctrl-C again to stop at once (the job then ends)"
        )

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield pause
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _ends_with_the_bureau(model_dir: str | Path, job_id: str) -> Iterator[None]:
    """When the bureau ends the job (a failure, an expiry, a refused resume), the bank's
    checkpoint goes too: it holds the job's key, and the job cannot be resumed."""
    try:
        yield
    except PeerError as exc:
        if exc.status not in JOB_ENDING_STATUSES or held_job(model_dir) != job_id:
            raise
        path = Path(model_dir) / CHECKPOINT_FILE
        path.unlink()
        ended = PeerError(
            f"{exc}; the job has ended, so the bank deleted its checkpoint {path} too (it "
            "held the job's key): start a new job"
        )
        ended.status = exc.status
        raise ended from None


def _give_up_unless_resumable(
    connection: BureauConnection,
    model_dir: str | Path,
    job_id: str,
    peer: GrpcTrainingPeer,
    exc: BaseException,
) -> None:
    """A run that stopped where no resume can continue it (no epoch finished, steps of the
    next epoch went out: the bureau decrypts each step once, or a resumed run stopped
    before an epoch was answered: the bureau takes one resume per interruption) ends its
    job at the bureau at once and deletes its checkpoint (the job's key); otherwise it
    would hold one of the bank's job slots until it expired, and a new run could be
    refused meanwhile."""
    held = held_job(model_dir) == job_id
    # a stopping bureau refuses an epoch's first step before doing any of it
    unanswered = 1 if isinstance(exc, PeerError) and exc.nothing_done else 0
    # a bureau that stops refused the epoch's first step: resumable, a resumed run too
    # (its stop is a new interruption to it)
    pending = peer.resume_pending and not unanswered
    if held and peer.sent_since_checkpoint <= unanswered and not pending:
        return  # stopped between epochs: `--resume` continues from the checkpoint
    if isinstance(exc, PeerError) and exc.status in JOB_ENDING_STATUSES:
        return  # the bureau ended it already (and _ends_with_the_bureau said so)
    # the kind of stop only: the message could carry the bank's paths or data
    reason = type(exc).__name__
    try:
        connection.training.AbandonTraining(
            pb.AbandonRequest(job_id=job_id, reason=reason),
            timeout=10,
            metadata=connection.metadata,
        )
    except grpc.RpcError as err:
        # the bureau gone: the checkpoint stays, and a `--resume` then ends the job on both
        # sides (refused, as it cannot be resumed) or it expires at the bureau
        code = err.code().name if hasattr(err, "code") else "unreachable"
        log.warning(
            "training job %s stopped inside an epoch and the bureau could not be told (%s): "
            "a --resume continues it only if the bureau had not answered that epoch's steps; "
            "else the bureau ends it then",
            job_id,
            code,
        )
        return
    if not held:
        why = "before its first epoch had finished: there is nothing to resume from"
    elif peer.resume_pending:
        why = (
            "before the bureau had answered the resumed run's first step: it takes one resume "
            "per interruption"
        )
    else:
        why = (
            f"after {peer.sent_since_checkpoint} step(s) of an epoch had gone to the bureau, "
            "which answers each step once in a job's life: the finished epochs cannot be run "
            "on from (stop a run between epochs, after an epoch line, to resume it)"
        )
    log.warning("training job %s stopped %s; it was ended at the bureau", job_id, why)
    if held:
        (Path(model_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)


def held_job(model_dir: str | Path) -> str | None:
    """The job whose checkpoint ``model_dir`` holds (None: none, or not readable)."""
    try:
        job_id = json.loads((Path(model_dir) / CHECKPOINT_FILE).read_text()).get("job_id")
    except (OSError, ValueError, AttributeError):
        return None
    return job_id if isinstance(job_id, str) else None


def _refuse_a_held_checkpoint(model_dir: str | Path) -> None:
    """A new job would overwrite the checkpoint of an interrupted one (its key, its epochs):
    the bank says so instead, with the command that resumes it."""
    path = Path(model_dir) / CHECKPOINT_FILE
    if not path.exists():
        return
    held = held_job(model_dir) or "?"
    raise InputDataError(
        f"{model_dir} holds the checkpoint of the interrupted job {held}: resume it with "
        f"`bank-node train --resume {held} --model-dir {model_dir}` and the same --bureau "
        f"and --tls-dir (or --insecure), or delete {path} (it "
        "holds that job's key) or choose another --model-dir to start a new job"
    )


def refuse_a_kept_model(model_dir: str | Path, overwrite: bool) -> None:
    """A model directory in use (a review's second `train` replaced the production model,
    left the old scorecard beside it, and the next batch run switched models unsaid)."""
    path = Path(model_dir) / MODEL_FILE
    if overwrite or not path.exists():
        return
    try:
        kept = json.loads(path.read_text())
        what = f"model {kept['model_id']} (made {kept.get('created', '?')})"
    except (OSError, ValueError, TypeError, KeyError):
        what = "a model file"
    raise InputDataError(
        f"{model_dir} already holds {what}: choose another --model-dir, or add --overwrite "
        "to replace it once the new one is trained (its evaluation, scorecard and IV table "
        "go with it)"
    )


LOCK_FILE = ".xinrong.lock"
# directories this process holds, and the thread holding each: a command holds its directory
# across its steps (a restarted bureau's wait, an IV request) and the job inside it again
_held: dict[Path, int] = {}


@contextlib.contextmanager
def hold_directory(directory: str | Path, what: str, option: str) -> Iterator[None]:
    """One run at a time writes ``directory``: an exclusive lock on a file in it, held until
    the block ends (and by the kernel only as long as the process lives, so a killed run
    leaves none behind); another run, in this process or any other, is refused at once. A
    directory made here and left empty is removed again (a refused run leaves nothing)."""
    path = Path(directory)
    key = path.resolve()
    if _held.get(key) == threading.get_ident():
        yield
        return
    made = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = path / LOCK_FILE
    try:
        fd = tables.take_lock(lock)
    except tables.LockHeld as held:
        raise InputDataError(
            f"{directory} is in use by another {what} ({held.holder}), which writes its files "
            f"there: wait for it to finish, or choose another {option}"
        ) from None
    _held[key] = threading.get_ident()
    try:
        yield
    finally:
        del _held[key]
        if made and [p.name for p in path.iterdir()] == [LOCK_FILE]:
            # unlinked while still held: a run that opened it meanwhile is refused
            with contextlib.suppress(OSError):
                lock.unlink()
                path.rmdir()
        os.close(fd)


def _file_digest(path: str | Path | None) -> str | None:
    """SHA-256 of the bank's data file (None for a table in memory): a resume checks it."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read the bank's data file ({exc})") from None


def _load_checkpoint(model_dir: str | Path, job_id: str) -> dict[str, Any]:
    path = Path(model_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise InputDataError(f"{path}: no checkpoint to resume (it is written after each epoch)")
    state = json.loads(path.read_text())
    if state.get("job_id") != job_id:
        raise InputDataError(f"{path} belongs to job {state.get('job_id')}, not {job_id}")
    return state


def fetch_bureau_scores(
    connection: BureauConnection, model_id: str, session_id: str, rows: int
) -> np.ndarray:
    """The bureau's u_B for the matched rows of a PSI session, in the session's order."""
    return fetch_bureau_answer(connection, model_id, session_id, rows)[0]


BureauReasons = tuple[list[str], np.ndarray]  # feature names; rows x k codes, 1 + index


def fetch_bureau_answer(
    connection: BureauConnection,
    model_id: str,
    session_id: str,
    rows: int,
    reasons: int = 0,
    bureau_features: Sequence[str] = (),
) -> tuple[np.ndarray, BureauReasons]:
    """u_B and up to ``reasons`` reason codes per row (names among ``bureau_features``, the
    model's own) for the matched rows. Scorecard points are the bank's to compute, from the
    same calibrated log-odds as the probability, so the bureau's own points are not asked."""

    def run() -> tuple[np.ndarray, BureauReasons]:
        parts, codes, received = [], [], 0
        names: list[str] = []
        for chunk in connection.scoring.ScoreApplicants(
            pb.ScoreRequest(model_id=model_id, psi_session_id=session_id, reasons=reasons),
            timeout=STEP_DEADLINE,
            metadata=connection.metadata,
        ):
            if chunk.offset != received or chunk.total != rows or len(chunk.scores) % 8:
                raise ProtocolViolation("the bureau's scores arrived out of order or cut")
            if received + len(chunk.scores) // 8 > rows:
                raise ProtocolViolation("the bureau's scores run past the matched rows")
            values = np.frombuffer(chunk.scores, dtype="<f8")
            if not np.all(np.isfinite(values)) or np.any(np.abs(values) > vlr.SCORE_BOUND):
                raise ProtocolViolation("the bureau sent a score outside its bound")
            if received == 0 and chunk.reason_features:
                names = _check_reason_names(list(chunk.reason_features), bureau_features)
            codes.append(_check_reason_codes(chunk.reasons, len(values), reasons, len(names)))
            parts.append(values)
            received += len(values)
        if received != rows:
            raise ProtocolViolation(f"the bureau sent {received} scores for {rows} rows")
        scores = np.concatenate(parts) if parts else np.zeros(0)
        width = codes[0].shape[1] if codes else 0
        reason_rows = np.vstack(codes) if codes else np.zeros((0, width), np.uint8)
        return scores, (names, reason_rows)

    return _call("fetching the bureau's scores", run)


def _check_reason_names(names: list[str], expected: Sequence[str]) -> list[str]:
    if len(set(names)) != len(names) or not set(names) <= set(expected):
        raise ProtocolViolation("the bureau's reason codes name features its model does not use")
    return names


def _check_reason_codes(raw: bytes, rows: int, asked: int, names: int) -> np.ndarray:
    """Rows x k codes (0: none, else 1 + index into the names); k is what was asked, or 0
    from a bureau that gives none."""
    if not raw:
        return np.zeros((rows, 0), dtype=np.uint8)
    k = min(asked, explain.MAX_REASONS)
    if not k or len(raw) != rows * k:
        raise ProtocolViolation("the bureau's reason codes do not match its scores")
    codes = np.frombuffer(raw, dtype=np.uint8).reshape(rows, k)
    if codes.size and int(codes.max()) > names:
        raise ProtocolViolation("the bureau's reason codes point past its feature names")
    return codes


# -- predict -------------------------------------------------------------------------------


def load_model(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise InputDataError(f"{path}: no model here; train one with `bank-node train`")
    try:
        model = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise InputDataError(
            f"{path}: not a Xinrong bank model (not JSON: overwritten by another file?); "
            "train again into this directory with --overwrite, or use another model"
        ) from None
    if not isinstance(model, dict) or model.get("format") != MODEL_FORMAT:
        found = model.get("format") if isinstance(model, dict) else type(model).__name__
        raise InputDataError(f"{path}: not a Xinrong bank model ({found!r})")
    return model


# Asks the bureau about the applicants' valid IDs: the matched IDs (in the order sent), the
# bureau's scores for them and its reason codes.
BureauLookup = Callable[[list[str]], tuple[list[str], np.ndarray, BureauReasons]]


def bureau_lookup(
    connection: BureauConnection,
    executor: Executor | None,
    model: dict[str, Any],
    quiet: bool,
    say: Say,
) -> BureauLookup:
    """A ``BureauLookup`` over an open connection: PSI on the applicants' IDs, then the
    bureau's half of the model on the matched ones."""

    def lookup(ids: list[str]) -> tuple[list[str], np.ndarray, BureauReasons]:
        say(f"private set intersection on {len(ids):,} applicant IDs")
        with ProgressBars(enabled=False if quiet else None) as bars:
            result = run_psi(connection, ids, psi.Reveal.BOTH, executor, bars)
        scores, reasons = fetch_bureau_answer(
            connection,
            model["model_id"],
            result.session_id,
            len(result.matched_ids),
            reasons=explain.MAX_REASONS,
            bureau_features=model.get("bureau_features", []),
        )
        return result.matched_ids, scores, reasons

    return lookup


@dataclass
class Scored:
    """Every applicant's score, in the input's order, and how many the bureau knew."""

    table: pa.Table  # ID (as given), score, bureau_matched (id_problem, points), reasons
    bureau_matched: int
    invalid_ids: int


def as_trained(options: tables.ReadOptions | None, recipe: FeatureRecipe) -> tables.ReadOptions:
    """How to read a file to score with a model: its category columns as text whatever they
    hold, as when it was trained (a later reader reading "３" or 未知 as a number or a missing
    value would move such rows to another level, without a word)."""
    categories = tuple(c.name for c in recipe.columns if c.kind == "category")
    return replace(options or tables.ReadOptions(), text_columns=categories)


def warn_unlike_training(recipe: FeatureRecipe, table: pa.Table, say: Say) -> list[str]:
    """Said (and returned): columns missing on far more rows than in training (a column
    left empty in the export), columns whose values mostly lie beyond the training
    range, as a file in another unit would have them, and category columns whose levels the
    model mostly never saw; their scores are computed all the same."""
    out = []
    empty = set()
    for column, missing, rows, before in recipe.missing_more_than_training(table):
        empty.add(column.name)
        if column.kind == "numeric":
            fill = f"the training median, {column.fill:,.6g}"
        elif MISSING in column.levels:
            fill = "the level of the training rows without a value"
        else:
            fill = "the pooled other levels"
        out.append(
            f"column {column.name!r}: {missing:,} of {rows:,} values are missing ({before:.0%} "
            "of the training rows were); is the column left empty in the export? Those rows "
            f"are scored with the training fill value ({fill})"
        )
    for name, outside, present, low, high in recipe.outside_training_range(table):
        out.append(
            f"column {name!r}: {outside:,} of {present:,} values lie outside the range the "
            f"model was trained on ({low:,.6g} to {high:,.6g}); is the file in another unit "
            "(%, 万元) than the training file? Their scores are clipped to that range"
        )
    for name, unseen, rows, before, commonest in recipe.unseen_levels(table):
        if name in empty:  # its "unseen level" is the empty cell, said above
            continue
        shown = ", ".join(repr(v) for v in commonest)
        out.append(
            f"column {name!r}: {unseen:,} of {rows:,} values are levels the model never saw "
            f"in training (commonest {shown}; {before:.0%} of the training rows were in its "
            "pooled other levels); does the file spell its levels otherwise than the training "
            "file? They are scored as the other levels"
        )
    for text in out:
        say(f"warning: {text}")
    return out


def score(
    model: dict[str, Any],
    table: pa.Table,
    id_column: str,
    id_type: IdType,
    points: bool,
    lookup: BureauLookup,
    id_problems: bool = False,
) -> Scored:
    """Score applicants: the bank's half here, the bureau's half for those it knows. Those it
    does not know (or whose IDs are invalid) get the model's neutral bureau part instead and
    ``bureau_matched = false``; no row is dropped. ``id_problems`` adds ``id_problem``, why
    an ID is invalid (empty for a valid one): a mistyped ID otherwise reads as an
    enterprise the bureau does not know. ``lookup`` is called only if some ID is valid."""
    recipe = FeatureRecipe.from_json(model["recipe"])
    x = _design(recipe, table)
    u = x @ np.asarray(model["weights"])
    prepared = prepare_ids(table.column(id_column), id_type)
    bureau_part = np.full(table.num_rows, float(model["neutral_bureau_score"]))
    matched_rows = np.zeros(table.num_rows, dtype=bool)
    card: dict[str, Any] = model.get("scorecard") or {}
    if points and not card:
        raise InputDataError(
            f"model {model['model_id']} has no scorecard yet; make one with `bank-node "
            "scorecard` (or model.scorecard() in Python)"
        )
    bureau_codes = np.zeros((table.num_rows, explain.MAX_REASONS), dtype=np.uint8)
    reason_names: list[str] = []
    if prepared.ids:
        matched_ids, scores, (reason_names, codes) = lookup(prepared.ids)
        normalised = normalise_column(table.column(id_column).combine_chunks(), id_type)
        where = pc.index_in(normalised, value_set=pa.array(matched_ids, pa.string()))
        known = ~np.asarray(where.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        index = where.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(matched_ids):
            bureau_part[known] = scores[index[known]]
            bureau_codes[known, : codes.shape[1]] = codes[index[known]]
        matched_rows = known
    calibration = model.get("calibration", {"slope": 1.0, "intercept": 0.0})
    # one calibrated log-odds for the probability and the points, so the two always agree
    log_odds = calibration["slope"] * (u + bureau_part) + calibration["intercept"]
    probabilities = sigmoid(log_odds)
    columns = {
        id_column: table.column(id_column),
        "score": pa.array(probabilities, pa.float64()),
        "bureau_matched": pa.array(matched_rows, pa.bool_()),
    }
    if id_problems:
        problem = np.full(table.num_rows, None, dtype=object)
        for reject in prepared.rejects:
            problem[reject.row - 1] = reject.reason
        columns["id_problem"] = pa.array(problem.tolist(), pa.string())
    if points:
        scaling = scorecard.Scaling(card["base_score"], card["pdo"], card["base_odds"])
        columns["points"] = pa.array(scorecard.points_of(log_odds, scaling), pa.float64())
    columns |= reason_columns(x, model, recipe, reason_names, bureau_codes)
    return Scored(pa.table(columns), int(matched_rows.sum()), len(prepared.rejects))


def reason_columns(
    x: np.ndarray,
    model: dict[str, Any],
    recipe: FeatureRecipe,
    bureau_names: list[str],
    bureau_codes: np.ndarray,
) -> dict[str, pa.Array]:
    """``reason_1..3``: the bank's features pushing each score most towards default;
    ``bureau_reason_1..3``: the names the bureau returned (empty for applicants it does
    not know, or where fewer features push towards default)."""
    weights = np.asarray(model["weights"])[1:]
    widths = [len(c.outputs) for c in recipe.columns]
    bank = explain.top_reasons(explain.contributions(x[:, 1:], weights, widths))
    bank_names = np.array([c.name for c in recipe.columns] + [""], dtype=object)
    bureau_lookup = np.array(["", *bureau_names], dtype=object)
    out: dict[str, pa.Array] = {}
    for i in range(explain.MAX_REASONS):
        out[f"reason_{i + 1}"] = pa.array(bank_names[bank[:, i]].tolist(), pa.string())
    for i in range(explain.MAX_REASONS):
        codes = bureau_codes[:, i] if i < bureau_codes.shape[1] else np.zeros(len(x), np.int64)
        out[f"bureau_reason_{i + 1}"] = pa.array(bureau_lookup[codes].tolist(), pa.string())
    return out


SCORING_MODES = ("private", "reveal-both")
UNREACHABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def predict_job(
    bureau: str | None,
    model_dir: str | Path,
    data: str | Path,
    id_column: str,
    out: str | Path,
    bank_id: str,
    id_type: IdType | None = None,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    points: bool = False,
    tls_dir: str | Path | None = None,
    read_options: tables.ReadOptions | None = None,
    scoring: str = "private",
    fallback: str | None = None,
    id_problems: bool = False,
) -> dict[str, Any]:
    """Score the applicants in a file (see ``score``; ``id_problems``, as `bank-node predict`
    asks, adds the ``id_problem`` column) and write ``out`` (CSV).

    ``scoring``: ``private`` (default) looks the bureau's half up in the model's table, so
    the bureau learns only how many applicants were scored; ``reveal-both`` runs PSI in
    reveal mode BOTH and tells the bureau who they are (the old path, for banks whose own
    rules ask for it). ``fallback="bank-only"``: if the bureau cannot be reached, score with
    the model's neutral bureau contribution and flag every row (``bureau_fallback``)."""
    if scoring not in SCORING_MODES:
        raise InputDataError(f"scoring {scoring!r}: choose one of {', '.join(SCORING_MODES)}")
    if fallback not in (None, "bank-only"):
        raise InputDataError(f"fallback {fallback!r}: the only fallback is bank-only")
    started = time.perf_counter()
    say = say or (lambda text: log.info("%s", text))
    model = load_model(model_dir)
    if points and not model.get("scorecard"):
        raise InputDataError(
            f"{Path(model_dir) / MODEL_FILE}: no scorecard yet; make one with `bank-node scorecard`"
        )
    recipe = FeatureRecipe.from_json(model["recipe"])
    options = as_trained(read_options, recipe)
    table = tables.read_table(data, id_column, columns=recipe.names, options=options)
    warnings = warn_unlike_training(recipe, table, say)
    fell_back: list[str] = []

    def lookup(ids: list[str]) -> tuple[list[str], np.ndarray, BureauReasons]:
        executor = make_executor(workers, executor_spec)
        try:
            with BureauConnection(bureau or model["bureau"], bank_id, tls_dir=tls_dir) as link:
                if scoring == "private":
                    from .lookup import LookupClient, private_bureau_lookup

                    client = LookupClient(link, say=say, executor=executor)
                    return private_bureau_lookup(link, model, client=client)(ids)
                return bureau_lookup(link, executor, model, quiet, say)(ids)
        except PeerError as exc:
            if fallback is None or exc.status not in UNREACHABLE:
                raise
            say(f"warning: the bureau cannot be reached ({exc}); scoring with the bank's half only")
            fell_back.append(str(exc))
            return [], np.zeros(0), ([], np.zeros((0, explain.MAX_REASONS), np.uint8))
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)

    kind = id_type or IdType(model["id_type"])
    scored = score(model, table, id_column, kind, points, lookup, id_problems)
    result = scored.table
    if fallback is not None:
        flag = pa.array(np.full(result.num_rows, bool(fell_back)), pa.bool_())
        result = result.append_column("bureau_fallback", flag)
    tables.write_csv(result, out)
    return {
        "model_id": model["model_id"],
        "rows": table.num_rows,
        "bureau_matched": scored.bureau_matched,
        "not_matched": table.num_rows - scored.bureau_matched,
        "invalid_ids": scored.invalid_ids,
        "scoring": scoring,
        "bureau_fallback": bool(fell_back),
        "warnings": warnings,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }


def bureau_features(connection: BureauConnection) -> list[dict[str, Any]]:
    """The bureau's catalogue: names, kinds, descriptions and whether anyone can look the
    feature up (public: it does not count towards a model's minimum), never values."""
    catalogue = _call(
        "listing the bureau's features",
        lambda: connection.catalogue.ListFeatures(
            pb.ListFeaturesRequest(), timeout=60, metadata=connection.metadata
        ),
    )
    check_peer_names([f.name for f in catalogue.features], "the bureau's catalogue")
    return [
        {
            "name": f.name,
            "kind": f.kind,
            "description": _check_catalogue_entry(f.name, f.kind, f.description),
            "public": f.public,
        }
        for f in catalogue.features
    ]


def list_features(
    bureau: str, bank_id: str, tls_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
        return bureau_features(connection)


MAX_DESCRIPTION_LENGTH = 500


def _check_catalogue_entry(name: str, kind: str, description: str) -> str:
    """A feature's kind (one of two, or the catalogue is refused) and its description made
    safe to show: before `bank-node features` prints it on the operator's terminal (a
    control sequence there could rewrite what it shows) and it reaches the bank's files (a
    spreadsheet runs a cell starting with = or +). A description is the bureau's prose, so it
    is cleaned, not refused: a line break is a space, a very long one is cut, a formula's
    first character is quoted (refused, one bureau description with a line break had
    stopped every bank's training; a review)."""
    if kind not in FEATURE_KINDS:
        raise ProtocolViolation(
            f"the bureau's catalogue: feature {name!r} is of kind {kind[:40]!r}, not one of "
            f"{', '.join(FEATURE_KINDS)}"
        )
    text = "".join(c if c.isprintable() else " " for c in description)
    if len(text) > MAX_DESCRIPTION_LENGTH:
        text = text[: MAX_DESCRIPTION_LENGTH - 1] + "…"
    formula = tuple(c for c in FORMULA_STARTS if c != "-")  # "-1 if unknown" is prose
    return "'" + text if text.startswith(formula) else text
