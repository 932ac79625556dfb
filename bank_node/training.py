"""The bank's joint-model jobs: train, predict, and the bureau's feature catalogue.

Each job is a function the CLI, the demo and the tests call alike. The protocol lives in
``protocols.vertical_lr``; this module reads files, runs PSI, carries messages
over gRPC and writes the bank's half of the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bank_node.metrics import evaluate, sigmoid
from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from node_runtime.transport import certs
from node_runtime.transport import model_codec as codec
from node_runtime.transport.errors import raise_from_rpc
from protocols import paillier as he
from protocols import psi, scorecard
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, ProtocolViolation
from protocols.features import MAX_LEVELS, FeatureRecipe
from protocols.ids import IdType, normalise_column, prepare_ids
from protocols.optim import OptimizerConfig, split_rows
from xinrong.v1 import model_pb2 as pb

from .client import BureauConnection, run_psi

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
        self._calls: list[Any] = []

    def _unary(
        self, doing: str, method: Any, request: Any, convert: Callable[[Any], T]
    ) -> _Pending[T]:
        call = method.future(request, timeout=STEP_DEADLINE, metadata=self.metadata)
        self._calls = [c for c in self._calls if not c.done()] + [call]
        return _Pending(doing, lambda: convert(call.result()), call.cancel)

    def step(self, msg: vlr.EncryptedResiduals) -> _Pending[vlr.StepShares]:
        call = self.stub.TrainingStep(
            codec.residuals_to_proto(msg), timeout=STEP_DEADLINE, metadata=self.metadata
        )
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


def read_labels(table: pa.Table, label: str) -> np.ndarray:
    """0/1 labels (also true/false, "0"/"1"); any other value is an error naming its rows."""
    if label not in table.column_names:
        raise InputDataError(
            f"no label column {label!r}; the file has: {', '.join(table.column_names[:20])}"
        )
    column = table.column(label)
    text = pc.cast(column, pa.string()).to_pylist()
    mapping = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
    values = [mapping.get(str(v).strip().lower()) if v is not None else None for v in text]
    bad = [i + 1 for i, v in enumerate(values) if v is None]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise InputDataError(
            f"label column {label!r} must hold 0 or 1 on every row; {len(bad)} rows do not "
            f"(data rows {shown})"
        )
    return np.array(values, dtype=np.int64)


def _id_positions(table: pa.Table, id_column: str, id_type: IdType, ids: list[str]) -> np.ndarray:
    """The first row of each matched ID in the bank's table."""
    normalised = normalise_column(table.column(id_column).combine_chunks(), id_type)
    positions = pc.index_in(pa.array(ids, pa.string()), value_set=normalised)
    if positions.null_count:
        raise ProtocolViolation("PSI returned an ID that is not in the bank's file")
    return positions.to_numpy(zero_copy_only=False).astype(np.int64)


def auto_batch_size(train_rows: int, columns: int, limits: vlr.TrainingLimits) -> int:
    """About twenty batches an epoch (enough optimiser steps in ten epochs), never fewer
    rows than the floor, at most 1,024 rows."""
    floor = max(limits.min_batch_size, 2 * columns)
    return int(min(vlr.MAX_BATCH, max(floor, min(1024, train_rows // 20))))


def _bureau_columns_bound(connection: BureauConnection, chosen: list[str] | None) -> int:
    """At most how many model columns the bureau's chosen features become (a number: the
    value and a missing flag; a category: its kept levels and "other"), from its catalogue:
    the batch size must be at least twice the wider party's columns."""
    catalogue = _call(
        "listing the bureau's features",
        lambda: connection.catalogue.ListFeatures(
            pb.ListFeaturesRequest(), timeout=60, metadata=connection.metadata
        ),
    )
    wanted = set(chosen) if chosen else None
    return sum(
        (MAX_LEVELS + 1) if f.kind == "category" else 2
        for f in catalogue.features
        if wanted is None or f.name in wanted
    )


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


# -- train ---------------------------------------------------------------------------------


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
    patience: int = 2,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    on_epoch: Callable[[vlr.EpochRecord], None] | None = None,
    tls_dir: str | Path | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """PSI, then joint training, then evaluation; writes ``model_dir/model.json``.

    After every epoch the bank's state goes to ``model_dir/checkpoint.json`` (0600: it holds
    the job's key); ``resume=JOB_ID`` continues that job from there, with the settings it
    was started with, after either side restarted."""
    saved: dict[str, Any] | None = None
    if resume is not None:
        saved = _load_checkpoint(model_dir, resume)
        data, id_column, label = saved["data"], saved["id_column"], saved["label"]
        id_type, bank_id = IdType(saved["id_type"]), saved["bank_id"]
        bank_features, bureau_features = saved["bank_features"], saved["bureau_features"]
        validation_fraction, seed = saved["validation_fraction"], saved["seed"]
        batch_size, epochs, patience = saved["batch_size"], saved["epochs"], saved["patience"]
        optimizer = OptimizerConfig(**saved["optimizer"])
        key_bits, compare_bank_only = saved["key_bits"], saved["compare_bank_only"]
        bureau = bureau or saved["bureau"]
        certified = certs.certified_bank_id(tls_dir) if tls_dir is not None else bank_id
        if certified != bank_id:
            raise InputDataError(
                f"the job {resume} was started by bank {bank_id!r}, but the certificate in "
                f"{tls_dir} is bank {certified!r}: resume it with {bank_id}'s TLS directory"
            )
    started = time.perf_counter()
    say = say or (lambda text: log.info("%s", text))
    limits = vlr.TrainingLimits(allow_test_keys=allow_test_keys)
    he.check_key_bits(key_bits, allow_test_keys)
    optimizer.check()
    model_dir = Path(model_dir)
    seed = secrets.randbits(32) if seed is None else seed

    table = tables.read_table(data, id_column)
    labels_all = read_labels(table, label)
    if bank_features is None:
        bank_features = [c for c in table.column_names if c not in (id_column, label)]
    prepared = prepare_ids(table.column(id_column), id_type)
    bars = ProgressBars(enabled=False if quiet else None)
    with contextlib.ExitStack() as stack:
        executor = make_executor(workers, executor_spec)
        if executor is not None:
            stack.callback(executor.shutdown, cancel_futures=True)
        connection = stack.enter_context(BureauConnection(bureau, bank_id, tls_dir=tls_dir))
        if saved is None:
            say(f"private set intersection on {len(prepared.ids):,} IDs")
            result = run_psi(connection, prepared.ids, psi.Reveal.BOTH, executor, bars)
        else:  # the rows of the job being resumed, as the bureau recorded them
            result = psi.BankPsiResult(
                saved["matched_ids"], len(prepared.ids), 0, saved["psi_session_id"], 0
            )
        bars.close()
        rows = len(result.matched_ids)
        say(f"the bureau knows {rows:,} of them")
        positions = _id_positions(table, id_column, id_type, result.matched_ids)
        matched = table.take(pa.array(positions))
        y = labels_all[positions]

        train_rows, validation_rows = split_rows(rows, validation_fraction, seed)
        recipe = FeatureRecipe.fit(matched.take(pa.array(train_rows)), bank_features)
        x = _design(recipe, matched)
        batch = batch_size or auto_batch_size(
            len(train_rows),
            max(x.shape[1], _bureau_columns_bound(connection, bureau_features)),
            limits,
        )
        if saved is None:
            say(f"generating a {key_bits}-bit Paillier key")
            public_key, private_key = he.generate_keypair(key_bits, allow_test_keys)
        else:
            p, q = int(saved["p"]), int(saved["q"])
            public_key = he.PublicKey(p * q)
            private_key = he.PrivateKey(public_key, p, q)
        encryptor = he.OwnerEncryptor(private_key)
        plan = vlr.TrainingPlan(
            job_id=secrets.token_hex(16) if saved is None else saved["job_id"],
            psi_session_id=result.session_id,
            rows=rows,
            bank_columns=x.shape[1],
            validation_fraction=validation_fraction,
            seed=seed,
            batch_size=batch,
            max_epochs=epochs,
            optimizer=optimizer,
            bureau_features=tuple(bureau_features or ()),
            bank_public_key=public_key,
        )
        trainer = vlr.BankTrainer(
            plan,
            x,
            y,
            private_key,
            limits,
            vlr.EarlyStopping(patience=patience),
            executor,
            encryptor,
        )
        start_epoch, history = 0, list[vlr.EpochRecord]()
        if saved is None:
            accepted_pb = _call(
                "starting the training job",
                lambda: connection.training.StartTraining(
                    codec.plan_to_proto(plan), timeout=START_DEADLINE, metadata=connection.metadata
                ),
            )
        else:
            start_epoch = int(saved["epoch"])
            say(f"resuming job {plan.job_id} at epoch {start_epoch + 1}")
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
            "data": str(Path(data).resolve()),
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
        chosen = list(accepted_pb.bureau_features)
        say(
            f"training on {len(train_rows):,} rows ({len(validation_rows):,} held back): "
            f"{x.shape[1] - 1} bank columns, {trainer.bureau_columns} bureau columns from "
            f"{len(chosen)} bureau features; batches of {batch}"
        )

        peer = GrpcTrainingPeer(connection, allow_test_keys)
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
            if on_epoch is not None:
                on_epoch(record)

        try:
            outcome = vlr.drive_training(
                trainer,
                peer,
                on_batch,
                on_epoch=report_epoch,
                start_epoch=start_epoch,
                history=history,
            )
        finally:
            peer.close()
            epoch_bars.close()
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
        bureau_scores = fetch_bureau_scores(connection, finished.model_id, result.session_id, rows)

    weights = outcome.weights
    u = x @ weights + bureau_scores
    calibration = calibrate(u[train_rows], y[train_rows])
    probabilities = sigmoid(calibration["slope"] * u + calibration["intercept"])
    metrics: dict[str, dict[str, Any]] = {
        "train": evaluate(y[train_rows], probabilities[train_rows]),
        "validation": evaluate(y[validation_rows], probabilities[validation_rows]),
    }
    bank_only = None
    if compare_bank_only:
        model = bank_only_model(x[train_rows, 1:], y[train_rows])
        bank_only = model.predict_proba(x[:, 1:])[:, 1]
        held = validation_rows if len(validation_rows) else train_rows
        metrics["bank_only"] = evaluate(y[held], bank_only[held])
        metrics["bank_only"]["evaluated_on"] = "validation" if len(validation_rows) else "train"
    counts = trainer.counts.as_dict()
    bank_half = {
        "format": MODEL_FORMAT,
        "model_id": finished.model_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bureau": bureau,
        "bank_id": bank_id,
        "id_column": id_column,
        "id_type": id_type.value,
        "label": label,
        "psi_session_id": result.session_id,
        "columns": ["(intercept)", *recipe.outputs],
        "weights": weights.tolist(),
        "recipe": recipe.to_json(),
        "bureau_features": chosen,
        "neutral_bureau_score": finished.neutral_score,
        "calibration": calibration,
        "epoch": outcome.best_epoch,
        "history": [vars(r) for r in outcome.history],
        "metrics": metrics,
        "settings": {
            "seed": seed,
            "batch_size": batch,
            "max_epochs": epochs,
            "validation_fraction": validation_fraction,
            "key_bits": key_bits,
            "optimizer": optimizer.as_dict(),
            "patience": patience,
        },
        "counts": counts,
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    tables.atomic_write_bytes(model_dir / MODEL_FILE, json.dumps(bank_half, indent=2).encode())
    split = np.full(rows, "train", dtype=object)
    split[validation_rows] = "validation"
    evaluation = {
        id_column: pa.array(result.matched_ids, pa.string()),
        "split": pa.array(split.tolist(), pa.string()),
        "y": pa.array(y, pa.int8()),
        "joint": pa.array(probabilities, pa.float64()),
    }
    if bank_only is not None:
        evaluation["bank_only"] = pa.array(bank_only, pa.float64())
    tables.write_csv(pa.table(evaluation), model_dir / EVALUATION_FILE)
    (model_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the job is done; it held a key
    seconds = time.perf_counter() - started
    epochs_run = len(outcome.history)
    summary = {
        "model_id": finished.model_id,
        "model_dir": str(model_dir),
        "rows": rows,
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "bank_features": len(recipe.names),
        "bank_columns": x.shape[1] - 1,
        "bureau_features": len(chosen),
        "bureau_columns": trainer.bureau_columns,
        "epochs": epochs_run,
        "best_epoch": outcome.best_epoch + 1,
        "batch_size": batch,
        "train_auc": metrics["train"]["auc"],
        "validation_auc": metrics["validation"]["auc"],
        "validation_ks": metrics["validation"]["ks"],
        "validation_log_loss": metrics["validation"]["log_loss"],
        "seconds": round(seconds, 3),
        "seconds_per_epoch": round(sum(r.seconds for r in outcome.history) / epochs_run, 3),
        "psi_session_id": result.session_id,
    }
    if compare_bank_only:
        summary["bank_only_auc"] = metrics["bank_only"]["auc"]
        summary["bank_only_ks"] = metrics["bank_only"]["ks"]
    return summary


CHECKPOINT_FILE = "checkpoint.json"


def _save_checkpoint(model_dir: str | Path, state: dict[str, Any]) -> None:
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tables.atomic_write_bytes(directory / CHECKPOINT_FILE, json.dumps(state).encode(), mode=0o600)


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
    return fetch_bureau_parts(connection, model_id, session_id, rows, points=False)[0]


def fetch_bureau_parts(
    connection: BureauConnection, model_id: str, session_id: str, rows: int, points: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """u_B (and the bureau's scorecard points, if asked) for the matched rows."""

    def run() -> tuple[np.ndarray, np.ndarray | None]:
        parts, point_parts, received = [], [], 0
        for chunk in connection.scoring.ScoreApplicants(
            pb.ScoreRequest(model_id=model_id, psi_session_id=session_id, points=points),
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
            if points:
                if len(chunk.points) != len(chunk.scores):
                    raise ProtocolViolation("the bureau's points do not match its scores")
                extra = np.frombuffer(chunk.points, dtype="<f8")
                if not np.all(np.isfinite(extra)) or np.any(np.abs(extra) > 1e7):
                    raise ProtocolViolation("the bureau's points do not match its scores")
                point_parts.append(extra)
            parts.append(values)
            received += len(values)
        if received != rows:
            raise ProtocolViolation(f"the bureau sent {received} scores for {rows} rows")
        scores = np.concatenate(parts) if parts else np.zeros(0)
        if not points:
            return scores, None
        return scores, (np.concatenate(point_parts) if point_parts else np.zeros(0))

    return _call("fetching the bureau's scores", run)


# -- predict -------------------------------------------------------------------------------


def load_model(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise InputDataError(f"{path}: no model here; train one with `bank-node train`")
    model = json.loads(path.read_text())
    if model.get("format") != MODEL_FORMAT:
        raise InputDataError(f"{path}: not a Xinrong bank model ({model.get('format')!r})")
    return model


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
) -> dict[str, Any]:
    """Score applicants: the bank's half here, the bureau's half for those it knows. Those it
    does not know (or whose IDs are invalid) get the bureau's mean training score instead and
    ``bureau_matched = false``; no row is dropped."""
    started = time.perf_counter()
    say = say or (lambda text: log.info("%s", text))
    model = load_model(model_dir)
    bureau = bureau or model["bureau"]
    id_type = id_type or IdType(model["id_type"])
    recipe = FeatureRecipe.from_json(model["recipe"])
    table = tables.read_table(data, id_column, columns=recipe.names)
    x = _design(recipe, table)
    u = x @ np.asarray(model["weights"])
    prepared = prepare_ids(table.column(id_column), id_type)
    bureau_part = np.full(table.num_rows, float(model["neutral_bureau_score"]))
    matched_rows = np.zeros(table.num_rows, dtype=bool)
    card: dict[str, Any] = model.get("scorecard") or {}
    if points and not card:
        raise InputDataError(
            f"{Path(model_dir) / MODEL_FILE}: no scorecard yet; make one with `bank-node scorecard`"
        )
    bureau_points = None
    if points:  # the documented rule for the unknown: the bureau's mean contribution
        bureau_points = np.full(
            table.num_rows,
            -card["factor"]
            * model.get("calibration", {"slope": 1.0})["slope"]
            * float(model["neutral_bureau_score"]),
        )
    bars = ProgressBars(enabled=False if quiet else None)
    if prepared.ids:
        executor = make_executor(workers, executor_spec)
        try:
            with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
                say(f"private set intersection on {len(prepared.ids):,} applicant IDs")
                result = run_psi(connection, prepared.ids, psi.Reveal.BOTH, executor, bars)
                bars.close()
                scores, matched_points = fetch_bureau_parts(
                    connection,
                    model["model_id"],
                    result.session_id,
                    len(result.matched_ids),
                    points,
                )
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        normalised = normalise_column(table.column(id_column).combine_chunks(), id_type)
        where = pc.index_in(normalised, value_set=pa.array(result.matched_ids, pa.string()))
        known = ~np.asarray(where.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        index = where.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(result.matched_ids):
            bureau_part[known] = scores[index[known]]
            if bureau_points is not None and matched_points is not None:
                bureau_points[known] = matched_points[index[known]]
        matched_rows = known
    calibration = model.get("calibration", {"slope": 1.0, "intercept": 0.0})
    probabilities = sigmoid(calibration["slope"] * (u + bureau_part) + calibration["intercept"])
    columns = {
        id_column: table.column(id_column),
        "score": pa.array(probabilities, pa.float64()),
        "bureau_matched": pa.array(matched_rows, pa.bool_()),
    }
    if bureau_points is not None:
        bank_points = card["base_points"] + scorecard.row_points(table, recipe, card["points"])
        columns["points"] = pa.array(np.round(bank_points + bureau_points, 1), pa.float64())
    tables.write_csv(pa.table(columns), out)
    return {
        "model_id": model["model_id"],
        "rows": table.num_rows,
        "bureau_matched": int(matched_rows.sum()),
        "not_matched": int((~matched_rows).sum()),
        "invalid_ids": len(prepared.rejects),
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }


def list_features(
    bureau: str, bank_id: str, tls_dir: str | Path | None = None
) -> list[dict[str, str]]:
    with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
        catalogue = _call(
            "listing the bureau's features",
            lambda: connection.catalogue.ListFeatures(
                pb.ListFeaturesRequest(), timeout=60, metadata=connection.metadata
            ),
        )
    return [
        {"name": f.name, "kind": f.kind, "description": f.description} for f in catalogue.features
    ]
