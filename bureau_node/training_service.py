"""The bureau's side of joint training: decode, call the training state machine, encode.

Jobs live in memory (:class:`TrainingJobs`) and, after every epoch, in a checkpoint under
the state directory (0600: it holds the job's key), so a restarted bureau can resume them.

A job ends for good: when it fails (a malformed message) or expires (idle too long), its
checkpoint, with the key's factors, is deleted and its ledger (``JOB_ID.ledger.json``, no
key) says so; a resume is refused. The ledger also records every step the bureau decrypted,
over the job's whole life: a decryption request for a step already answered is refused
unless it is the identical request again (a retry after a lost reply), so a resumed or
rewound job is never a second decryption oracle. A job resumes only from its latest
checkpoint, only if no step of that epoch was decrypted yet (a re-run would need a second
decryption), and only once per interruption (some step answered since the last resume). On
the route from cross moments the bureau decrypts nothing; the ledger then records each
training step it answered, and the same rules hold with "answered" for "decrypted".
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from node_runtime import tables
from node_runtime.transport import model_codec as codec
from node_runtime.workers import forget_keys
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import (
    JobEnded,
    ModelRefused,
    NotAuthorised,
    PolicyViolation,
    ProtocolViolation,
    QuotaExceeded,
    ShuttingDown,
    UnknownSession,
)
from protocols.features import FeatureRecipe
from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc

from .context import BureauContext

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
T = TypeVar("T")


@dataclass
class _Job:
    bank_id: str
    trainer: vlr.BureauTrainer
    recipe: FeatureRecipe
    started: float
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    plan_bytes: bytes = b""
    saved_epoch: int = -1
    ledger: dict[str, Any] = field(default_factory=dict)
    paused: bool = False  # told, while the bureau stops, that it pauses after its epoch


class TrainingJobs:
    """Running jobs by id; a bank sees only its own; idle ones expire."""

    def __init__(self, idle_seconds: float = 3600.0, max_per_bank: int = 2) -> None:
        self.idle = idle_seconds
        self.max_per_bank = max_per_bank
        self._jobs: dict[str, _Job] = {}
        self._reserved: dict[str, str] = {}  # job id -> bank id, for starts under way
        self._lock = threading.Lock()
        self.on_end: Callable[[], None] = lambda: None  # a job ended: workers drop its key
        # told of every job that expired, so that it ends for good (checkpoint deleted)
        self.on_expired: Callable[[str, _Job], None] = lambda job_id, job: None

    def _sweep(self) -> list[tuple[str, _Job]]:
        """Drop idle jobs (under the lock); the caller ends them outside it."""
        now = time.monotonic()
        gone = [(k, j) for k, j in self._jobs.items() if now - j.last_used > self.idle]
        for key, _ in gone:
            del self._jobs[key]
        return gone

    def expire_idle(self) -> None:
        with self._lock:
            gone = self._sweep()
        for job_id, job in gone:
            self.on_expired(job_id, job)
        if gone:
            self.on_end()

    def add(self, job_id: str, job: _Job) -> None:
        """Register a job; a start takes the place ``reserve`` held for it."""
        self.expire_idle()
        with self._lock:
            if self._reserved.get(job_id) == job.bank_id:
                del self._reserved[job_id]
            else:
                self._check_free(job_id, job.bank_id)
            self._jobs[job_id] = job

    def reserve(self, bank_id: str, job_id: str) -> None:
        """Hold a place for a job about to start, before its heavy work (features, key
        generation): concurrent starts beyond the bank's limit, or with an id in use, are
        refused before they cost the bureau anything. ``release`` gives it back."""
        self.expire_idle()
        with self._lock:
            self._check_free(job_id, bank_id)
            self._reserved[job_id] = bank_id

    def release(self, job_id: str) -> None:
        with self._lock:
            self._reserved.pop(job_id, None)

    def _check_free(self, job_id: str, bank_id: str) -> None:
        """(Under the lock.) The id is free and the bank below its limit of jobs."""
        if job_id in self._jobs or job_id in self._reserved:
            raise PolicyViolation(f"a training job {job_id} is already running")
        mine = sum(1 for j in self._jobs.values() if j.bank_id == bank_id)
        mine += sum(1 for b in self._reserved.values() if b == bank_id)
        if mine >= self.max_per_bank:
            raise PolicyViolation(
                f"bank {bank_id} already runs {mine} training jobs; the limit is "
                f"{self.max_per_bank}: wait for one to finish or for it to expire"
            )

    def get(self, bank_id: str, job_id: str) -> _Job:
        self.expire_idle()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.bank_id != bank_id:
            raise UnknownSession(f"no running training job {job_id!r} for bank {bank_id!r}")
        job.last_used = time.monotonic()
        return job

    def peek(self, bank_id: str, job_id: str) -> _Job | None:
        """The running job of that id and bank, if any (without touching it)."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.bank_id == bank_id else None

    def running(self, bank_id: str) -> int:
        """How many jobs of this bank are running or starting."""
        with self._lock:
            jobs = sum(1 for j in self._jobs.values() if j.bank_id == bank_id)
            return jobs + sum(1 for b in self._reserved.values() if b == bank_id)

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
        self.on_end()

    def all(self) -> list[tuple[str, _Job]]:
        with self._lock:
            return list(self._jobs.items())

    def __len__(self) -> int:
        return len(self._jobs)


class TrainingServicer(model_pb2_grpc.JointTrainingServicer):
    def __init__(self, ctx: BureauContext, jobs: TrainingJobs | None = None) -> None:
        self.ctx = ctx
        self.jobs = jobs or TrainingJobs()
        self.jobs.on_end = lambda: forget_keys(ctx.executor)
        self.jobs.on_expired = lambda job_id, job: self._end(
            job.bank_id, job_id, "expired", f"idle for more than {self.jobs.idle:.0f} s"
        )
        # a resume, a give-up and an expiry of one stored job run one at a time: without
        # this, a give-up could end a job between a resume's reading of its checkpoint and
        # its registration, and the resumed job then ran on with a ledger marked running
        self._transitions = [threading.Lock() for _ in range(64)]
        self._expire_stored()  # jobs a stopped bureau left behind, key and all
        # set when the operator stops the bureau: jobs run to the end of their epoch and
        # pause there (``pausing_jobs``), where they can be resumed once it is back
        self.stopping = threading.Event()

    def _refuse_while_stopping(self, what: str) -> None:
        if self.stopping.is_set():
            raise ShuttingDown(
                f"the bureau is restarting (its operator stopped it): {what} when it is back"
            )

    def pausing_jobs(self, recent: float = 60.0, between: float = 30.0) -> list[str]:
        """What a stopping bureau waits for: jobs inside an epoch whose bank was heard from
        in the last ``recent`` seconds (one that went quiet mid-epoch would never reach its
        end), and jobs between epochs not yet told that they pause, heard from in the last
        ``between`` seconds (the bank's next step, refused, tells it so; a bank that
        finished its last epoch sends none)."""
        now = time.monotonic()
        return [
            job_id
            for job_id, job in self.jobs.all()
            if job.trainer.stage is not vlr.BureauStage.FAILED
            and (
                now - job.last_used < recent
                if not job.trainer.at_epoch_start
                else not job.paused and now - job.last_used < between
            )
        ]

    def _transition(self, bank_id: str, job_id: str) -> threading.Lock:
        """The lock of one job's resume, give-up and expiry (striped: bounded memory)."""
        return self._transitions[hash((bank_id, job_id)) % len(self._transitions)]

    def StartTraining(
        self, request: pb.TrainingPlan, context: grpc.ServicerContext
    ) -> pb.TrainingAccepted:
        try:
            bank_id = self.ctx.access.bank(context)
            self._refuse_while_stopping("start the job")
            # the cheap checks first: the key's proof costs the bureau 0.15 s at 4,096 bits,
            # and a review's bank sent one valid plan naming a session that does not exist
            # again and again, refused for free, 140 times its own CPU at the bureau
            if not JOB_ID.match(request.job_id):
                raise ProtocolViolation("a job id is 32 lower-case hex digits")
            matched = self.ctx.store.session_size(bank_id, request.psi_session_id)
            if matched != request.rows:
                raise ProtocolViolation(
                    f"the plan names {request.rows} rows; PSI session "
                    f"{request.psi_session_id} matched {matched}"
                )
            if self._ledger_path(bank_id, request.job_id).exists():
                raise PolicyViolation(
                    f"job id {request.job_id} was used before: a job id names one job for good"
                )
            self.ctx.check_feature_count(request.bureau_features)
            plan = codec.plan_from_proto(request, self.ctx.limits.allow_test_keys)
            ids = self.ctx.store.session_matched_ids(bank_id, plan.psi_session_id)
            limits = self.ctx.limits_for(bank_id)
            vlr.check_plan(plan, limits)
            # a give-up of this job id waits until the job is registered and on disk: landing
            # in between, it recorded the job abandoned, and the start then wrote it running
            with self._transition(bank_id, plan.job_id):
                self.jobs.reserve(bank_id, plan.job_id)  # before any heavy work
                try:
                    job = self._start(bank_id, plan, request, ids, limits)
                finally:
                    self.jobs.release(plan.job_id)  # taken by the job, or given back
                plan = job.trainer.plan
                job.ledger = {"state": "running", "decrypted": {}, "resumed_at": None}
                try:
                    self._save_ledger(job.bank_id, plan.job_id, job.ledger)
                    self._checkpoint(job)
                except BaseException:
                    self.jobs.remove(plan.job_id)  # a job that cannot be resumed is not started
                    raise
            names = job.recipe.names
            log.info(
                "training job %s for bank %s: %d rows, %d bureau columns from %d features",
                plan.job_id,
                bank_id,
                plan.rows,
                job.trainer.x.shape[1],
                len(names),
            )
            self.ctx.record(
                bank_id,
                "training_started",
                "OK",
                job_id=plan.job_id,
                psi_session_id=plan.psi_session_id,
                rows=plan.rows,
                features=names,
                epochs=plan.max_epochs,
                batch_size=plan.batch_size,
            )
            return self._accepted(job)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_started", exc)

    def _start(
        self,
        bank_id: str,
        plan: vlr.TrainingPlan,
        request: pb.TrainingPlan,
        ids: list[str],
        limits: vlr.TrainingLimits,
    ) -> _Job:
        """The heavy part of a start (features, the bureau's key, its trainer). The plan is
        checked against the bureau's columns, which follow its whole table (never the
        session's rows: their count is told to the bank); then the session's model count is
        charged, before the session's rows are read, since what can still fail after that
        (values too large to standardise) depends on them, and a free refusal would be a
        free question."""
        names = self.ctx.choose_for_model(bank_id, plan.bureau_features)
        layouts = self.ctx.features.layouts(names)
        columns = sum(layouts[n].outputs for n in names)
        raised = vlr.raise_batch_to_floor(plan, limits, columns)
        if raised is not plan:  # the plan kept for resuming is the one in force
            plan, request = raised, codec.plan_to_proto(raised)
        vlr.check_plan(plan, limits, columns)  # before the charge, and before a key
        self._check_room_for_a_model(bank_id)
        try:  # the bank scores the session's rows once trained: today's quota must hold them
            self.ctx.access.charge_all(bank_id, {"daily_scored": plan.rows}, dry_run=True)
        except QuotaExceeded as exc:
            whole = plan.rows > self.ctx.access.policy(bank_id).daily_scored
            raise QuotaExceeded(
                f"{exc}: a trained model's evaluation scores its {plan.rows:,} rows, and the "
                "job would fail at its end; "
                + ("more than a whole day's: ask" if whole else "train tomorrow (UTC) or ask")
                + " the bureau's operator to raise daily_scored"
            ) from None
        self.ctx.store.count_session_use(
            bank_id,
            plan.psi_session_id,
            "models",
            self.ctx.access.policy(bank_id).max_models_per_session,
        )
        rows = self.ctx.features.rows_of(ids)
        train_rows, _ = plan.schedule()
        recipe = FeatureRecipe.fit(rows.take(train_rows), names, layouts)
        self.ctx.check_exposure(recipe, limits.max_feature_exposure, bank_id)  # after the charge
        x = recipe.transform(rows)
        if x.shape[1] != columns:
            raise RuntimeError(f"{x.shape[1]} prepared columns against {columns} laid out")
        bits = plan.bank_public_key.n.bit_length()
        _, private_key = he.generate_keypair(bits + (-bits % 8), limits.allow_test_keys)
        trainer = vlr.BureauTrainer(plan, x, private_key, limits, self.ctx.executor)
        return self._register(bank_id, trainer, recipe, request.SerializeToString())

    def _check_room_for_a_model(self, bank_id: str, resuming: bool = False) -> None:
        """Refused, before anything is charged, when the bank keeps its limit of models: each
        model's lookup table covers every enterprise the bureau holds, on its disk. A resume
        is checked too (a review started a second job after a restart, when the first was
        on disk only, then resumed the first: two models under a limit of one)."""
        limit = self.ctx.access.policy(bank_id).max_models
        kept = self.ctx.models.count(bank_id)
        running = self.jobs.running(bank_id) - 1  # not this one (its place reserved already)
        if kept + running >= limit:
            raise QuotaExceeded(
                f"bank {bank_id} keeps {kept} models at the bureau"
                + (f" and trains {running} more" if running else "")
                + f", its limit (max_models, {limit}): delete the models it no longer needs "
                "(`bank-node models delete MODEL_ID`; `bank-node models list` shows them), "
                + ("then resume the job" if resuming else "then train again")
            )

    def _register(
        self,
        bank_id: str,
        trainer: vlr.BureauTrainer,
        recipe: FeatureRecipe,
        plan_bytes: bytes,
        saved_epoch: int = -1,
    ) -> _Job:
        """A started or resumed job, under its id (refused if that id is running)."""
        now = time.monotonic()
        job = _Job(
            bank_id, trainer, recipe, now, now, plan_bytes=plan_bytes, saved_epoch=saved_epoch
        )
        self.jobs.add(trainer.plan.job_id, job)
        return job

    @staticmethod
    def _accepted(job: _Job) -> pb.TrainingAccepted:
        accepted = codec.accepted_to_proto(job.trainer.accepted())
        accepted.bureau_features.extend(job.recipe.names)
        accepted.batch_size = job.trainer.plan.batch_size
        return accepted

    def _job_path(self, bank_id: str, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise UnknownSession(f"{job_id[:40]!r} is not a job id")
        return self.ctx.store.root / "jobs" / bank_id / f"{job_id}.json"

    def _ledger_path(self, bank_id: str, job_id: str) -> Path:
        return self._job_path(bank_id, job_id).with_suffix(".ledger.json")

    def _load_ledger(self, bank_id: str, job_id: str) -> dict[str, Any] | None:
        path = self._ledger_path(bank_id, job_id)
        return json.loads(path.read_text()) if path.exists() else None

    def _save_ledger(self, bank_id: str, job_id: str, ledger: dict[str, Any]) -> None:
        """Durably, before any answer it records leaves."""
        path = self._ledger_path(bank_id, job_id)
        tables.private_dir(path.parent)
        ledger["last_active"] = time.time()  # wall clock: it must survive a restart
        tables.atomic_write_bytes(path, json.dumps(ledger).encode())

    def _end(self, bank_id: str, job_id: str, state: str, reason: str) -> None:
        """The job is over for good: out of memory, its checkpoint (with the key's factors)
        deleted, its ledger marked, on record."""
        self.jobs.remove(job_id)
        self._job_path(bank_id, job_id).unlink(missing_ok=True)
        ledger = self._load_ledger(bank_id, job_id) or {"decrypted": {}}
        if ledger.get("state") not in (None, "running"):
            return
        ledger.update(state=state, reason=reason[:300])
        self._save_ledger(bank_id, job_id, ledger)
        if state != "finished":  # a finished job has its own record
            self.ctx.record(
                bank_id, f"training_{state}", "ENDED", job_id=job_id, reason=reason[:300]
            )
        log.log(
            logging.INFO if state == "finished" else logging.WARNING,
            "training job %s of bank %s ended (%s): %s",
            job_id,
            bank_id,
            state,
            reason,
        )

    def _expire_stored(self) -> None:
        """End the stored jobs that have been idle too long (e.g. across a restart)."""
        for path in (self.ctx.store.root / "jobs").glob("*/*.ledger.json"):
            try:
                ledger = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            idle = time.time() - float(ledger.get("last_active", 0))
            job_id = path.name.removesuffix(".ledger.json")
            if ledger.get("state") == "running" and idle > self.jobs.idle and JOB_ID.match(job_id):
                with self._transition(path.parent.name, job_id):
                    self._end(path.parent.name, job_id, "expired", f"idle for {idle:.0f} s")

    def _checkpoint(self, job: _Job) -> None:
        """The job's plan, key and per-epoch states, written (0600, atomically) whenever an
        epoch has ended, so that a restarted bureau can resume it."""
        latest = max(job.trainer.checkpoints)
        if latest <= job.saved_epoch or job.trainer.stage is vlr.BureauStage.FAILED:
            return
        key = job.trainer.private_key
        record = {
            "plan": base64.b64encode(job.plan_bytes).decode(),
            "p": str(key.p),
            "q": str(key.q),
            "recipe": job.recipe.to_json(),
            "checkpoints": {str(e): s for e, s in job.trainer.checkpoints.items()},
        }
        path = self._job_path(job.bank_id, job.trainer.plan.job_id)
        tables.private_dir(path.parent)
        tables.atomic_write_bytes(path, json.dumps(record).encode(), mode=0o600)
        job.saved_epoch = latest

    def ResumeTraining(
        self, request: pb.ResumeRequest, context: grpc.ServicerContext
    ) -> pb.TrainingAccepted:
        try:
            bank_id = self.ctx.access.bank(context)
            self._refuse_while_stopping("resume the job")
            with self._transition(bank_id, request.job_id):
                # the interrupted run, if the bureau still has it: its lock is held for the
                # whole resume and it leaves the registry at once, so that none of its steps
                # or decryptions runs beside the resume or after it (its ledger would
                # overwrite the resumed job's)
                interrupted = self.jobs.peek(bank_id, request.job_id)
                with interrupted.lock if interrupted is not None else contextlib.nullcontext():
                    if interrupted is not None:
                        self.jobs.remove(request.job_id)
                    job = self._resume(bank_id, request)
            return self._accepted(job)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_resumed", exc)

    def AbandonTraining(
        self, request: pb.AbandonRequest, context: grpc.ServicerContext
    ) -> pb.TrainingAbandoned:
        """The bank gives its job up: ended for good at once, as a failure would end it, so
        that an interrupted run does not hold one of the bank's job slots for an hour."""
        try:
            bank_id = self.ctx.access.bank(context)
            reason = "given up by the bank: " + "".join(
                c for c in request.reason[:300] if c.isprintable()
            )
            with self._transition(bank_id, request.job_id):
                running = self.jobs.peek(bank_id, request.job_id)
                ledger = self._load_ledger(bank_id, request.job_id)
                if running is None and (ledger is None or ledger.get("state") != "running"):
                    raise UnknownSession(
                        f"no running training job {request.job_id} of bank {bank_id} to end"
                    )
                with running.lock if running is not None else contextlib.nullcontext():
                    self._end(bank_id, request.job_id, "abandoned", reason)
            return pb.TrainingAbandoned(job_id=request.job_id)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_abandoned", exc)

    def _resume(self, bank_id: str, request: pb.ResumeRequest) -> _Job:
        """The job rebuilt from its latest checkpoint, after `_check_resume`."""
        path = self._job_path(bank_id, request.job_id)
        ledger = self._load_ledger(bank_id, request.job_id)
        if ledger is not None and ledger.get("state") != "running":
            raise JobEnded(
                f"training job {request.job_id} has ended for good ({ledger['state']}: "
                f"{ledger.get('reason', '')}); start a new job"
            )
        if ledger is None or not path.exists():
            raise UnknownSession(f"no training job {request.job_id} of bank {bank_id} to resume")
        # a place held, as a start holds one, before the room is counted: a start beside the
        # rebuild saw neither (a review: two models under a limit of one)
        self.jobs.reserve(bank_id, request.job_id)
        try:
            self._check_room_for_a_model(bank_id, resuming=True)  # refused: stays resumable
            return self._rebuild(bank_id, request, path, ledger)
        finally:
            self.jobs.release(request.job_id)  # taken by the job, or given back

    def _rebuild(
        self, bank_id: str, request: pb.ResumeRequest, path: Path, ledger: dict[str, Any]
    ) -> _Job:
        record = json.loads(path.read_text())
        checkpoints = {int(e): s for e, s in record["checkpoints"].items()}
        self._check_resume(bank_id, request.job_id, request.epoch, checkpoints, ledger)
        plan_bytes = base64.b64decode(record["plan"])
        proto = pb.TrainingPlan.FromString(plan_bytes)
        plan = codec.plan_from_proto(proto, self.ctx.limits.allow_test_keys)
        ids = self.ctx.store.session_matched_ids(bank_id, plan.psi_session_id)
        recipe = FeatureRecipe.from_json(record["recipe"])
        x = recipe.transform(self.ctx.features.rows_of(ids))
        n = int(record["p"]) * int(record["q"])
        private_key = he.PrivateKey(he.PublicKey(n), int(record["p"]), int(record["q"]))
        trainer = vlr.BureauTrainer(
            plan, x, private_key, self.ctx.limits_for(bank_id), self.ctx.executor
        )
        trainer.checkpoints = checkpoints
        trainer.restore(request.epoch)
        job = self._register(bank_id, trainer, recipe, plan_bytes, max(trainer.checkpoints))
        ledger["resumed_at"] = _progress(ledger)
        job.ledger = ledger
        self._save_ledger(bank_id, plan.job_id, ledger)
        self.ctx.record(bank_id, "training_resumed", "OK", job_id=plan.job_id, epoch=request.epoch)
        log.info(
            "training job %s of bank %s resumed at epoch %d",
            plan.job_id,
            bank_id,
            request.epoch + 1,
        )
        return job

    def _check_resume(
        self,
        bank_id: str,
        job_id: str,
        epoch: int,
        checkpoints: dict[int, Any],
        ledger: dict[str, Any],
    ) -> None:
        """A resume is refused, and the job then ends for good (the bank could only try
        again to rewind it), unless it is from the latest checkpoint, before any step of
        that epoch was decrypted, and the first since the job last made progress."""
        latest = max(checkpoints)
        since = [k for k in ledger["decrypted"] if int(k.split(":")[0]) >= latest]
        since += [
            e for e, count in ledger.get("answered", {}).items() if int(e) >= latest and count
        ]
        idle = time.time() - float(ledger.get("last_active", 0))
        if idle > self.jobs.idle:
            reason = f"idle for {idle:.0f} s, more than the bureau's {self.jobs.idle:.0f} s"
            state = "expired"
        elif epoch != latest:
            reason = f"a resume from epoch {epoch + 1} asked; only the latest, {latest + 1}, is"
            state = "refused"
        elif since:
            reason = (
                f"interrupted in epoch {latest + 1} after the bureau had answered steps of "
                "it; it answers each step once in a job's life"
            )
            state = "refused"
        elif ledger.get("resumed_at") == _progress(ledger):
            reason = "resumed already, and no step was answered since"
            state = "refused"
        else:
            return
        self._end(bank_id, job_id, state, reason)
        raise JobEnded(f"training job {job_id} cannot be resumed ({reason}): start a new job")

    def _with_job(
        self, context: grpc.ServicerContext, job_id: str, action: Callable[[_Job], T]
    ) -> T:
        bank_id = self.ctx.access.bank(context)
        job = self.jobs.get(bank_id, job_id)
        with job.lock:
            if self.jobs.peek(bank_id, job_id) is not job:  # resumed or ended meanwhile
                raise UnknownSession(
                    f"training job {job_id} was resumed or has ended while this call waited"
                )
            try:
                answer = action(job)
                self._checkpoint(job)  # durably, before the answer leaves
                return answer
            finally:
                # heard from until its answer: a stopping bureau counts the bank's time
                # between epochs from there (a review's bank, 12 s between two epochs,
                # found the bureau gone)
                job.last_used = time.monotonic()
                if job.trainer.stage is vlr.BureauStage.FAILED:
                    self._end(bank_id, job_id, "failed", job.trainer.failure)

    def TrainingStep(
        self, request: pb.EncryptedResiduals, context: grpc.ServicerContext
    ) -> Iterator[pb.StepShares]:
        try:
            msg = codec.residuals_from_proto(request)
            out, width = self._with_job(
                context,
                msg.step.job_id,
                lambda j: (
                    self._step_once(j, msg),
                    he.ciphertext_bytes(j.trainer.private_key.public_key),
                ),
            )
            yield from codec.shares_to_proto(out, width)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_step", exc)

    def _step_once(self, job: _Job, msg: vlr.EncryptedResiduals) -> vlr.StepShares:
        """A step; from cross moments a training step is the one the bureau answers with
        the bank's shares (nothing to decrypt after it), so it goes on the ledger before
        its answer leaves, as a decryption does on the per-row route. While the bureau
        stops, an epoch's first step is refused before any of it is done: the job pauses
        after its last whole epoch, where the bank can resume it."""
        if msg.step.batch == 0 and job.trainer.at_epoch_start:
            finished = job.trainer.epoch
            job.paused = self.stopping.is_set()
            if job.paused and job.ledger.get("resumed_at") is not None:
                # the bureau's own stop is a new interruption: the bank may resume once
                # more (it had resumed, and no step of it was answered; a review's job was
                # lost to a second stop right after its resume)
                job.ledger["resumed_at"] = None
                self._save_ledger(job.bank_id, job.trainer.plan.job_id, job.ledger)
            self._refuse_while_stopping(
                f"training job {msg.step.job_id} paused after epoch {finished}; resume it"
                if finished
                else f"training job {msg.step.job_id} had not begun; start a new job"
            )
        out = self._step(job, msg)
        if job.trainer.by_moments and msg.step.batch >= 0:
            # steps answered per epoch: the ledger stays small however long the job; an
            # epoch's first answer is on disk before it leaves, which is what refuses a
            # resume into that epoch (and marks progress since the last resume)
            answered = job.ledger.setdefault("answered", {})
            epoch = str(msg.step.epoch)
            first = epoch not in answered
            answered[epoch] = answered.get(epoch, 0) + 1
            stale = time.time() - float(job.ledger.get("last_active", 0)) > 60  # idle clock
            if first or stale:
                self._save_ledger(job.bank_id, job.trainer.plan.job_id, job.ledger)
        return out

    @staticmethod
    def _step(job: _Job, msg: vlr.EncryptedResiduals) -> vlr.StepShares:
        finished = len(job.trainer.checkpoints)
        out = job.trainer.step(msg)
        if len(job.trainer.checkpoints) > finished and job.trainer.epoch_counts:
            epoch = max(job.trainer.epoch_counts)
            log.info(
                "job %s epoch %d: bureau operations %s",
                job.trainer.plan.job_id,
                epoch + 1,
                job.trainer.epoch_counts[epoch],
            )
        return out

    def Decrypt(
        self, request: pb.MaskedValues, context: grpc.ServicerContext
    ) -> pb.DecryptedValues:
        try:
            msg = codec.masked_from_proto(request)
            digest = hashlib.sha256(request.SerializeToString()).hexdigest()
            out = self._with_job(
                context, msg.step.job_id, lambda j: self._decrypt_once(j, msg, digest)
            )
            return codec.decrypted_to_proto(out)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_decrypt", exc)

    def _decrypt_once(self, job: _Job, msg: vlr.MaskedValues, digest: str) -> vlr.DecryptedValues:
        """Decrypt a step's values once in the job's life: the same request again (a retry
        after a lost reply) is answered alike; anything else for that step ends the job."""
        step = f"{msg.step.epoch}:{msg.step.batch}"
        answered = job.ledger["decrypted"].get(step)
        if answered is not None and answered != digest:
            job_id = job.trainer.plan.job_id
            reason = f"a second, different decryption request for step {msg.step}"
            self._end(job.bank_id, job_id, "failed", reason)
            raise JobEnded(
                f"training job {job_id} has ended: the bureau decrypts each step once over a "
                f"job's life, and {reason} arrived; start a new job"
            )
        out = job.trainer.decrypt(msg)
        job.ledger["decrypted"][step] = digest
        self._save_ledger(job.bank_id, job.trainer.plan.job_id, job.ledger)  # before it leaves
        return out

    def FinishTraining(
        self, request: pb.FinishRequest, context: grpc.ServicerContext
    ) -> pb.TrainingFinished:
        try:
            bank_id = self.ctx.access.bank(context)

            def finish(job: _Job) -> pb.TrainingFinished:
                share = codec.share_from_proto(request.weight_share, job.trainer.x.shape[1])
                weights, finished = job.trainer.finish(request.epoch, share)
                plan = job.trainer.plan
                with self.ctx.keeping_models(bank_id):
                    try:
                        training = job.trainer.x[job.trainer.train_rows]
                        self.ctx.check_model_features(bank_id, job.recipe, weights, training)
                        limit = self.ctx.limits_for(bank_id).max_readable_share
                        model = {"recipe": job.recipe.to_json(), "weights": weights.tolist()}
                        self.ctx.check_models_together(bank_id, model, limit)
                    except NotAuthorised as exc:  # after the charge at start: not free
                        self._end(bank_id, plan.job_id, "refused", str(exc))
                        raise ModelRefused(str(exc)) from exc  # said: the job has ended
                    model_id = self._keep(bank_id, job, weights, finished)
                self.ctx.record(
                    bank_id,
                    "training_finished",
                    "OK",
                    job_id=plan.job_id,
                    model_id=model_id,
                    epoch=finished.epoch,
                    counts=job.trainer.counts.as_dict(),
                )
                log.info(
                    "training job %s finished: model %s (epoch %d) for bank %s",
                    plan.job_id,
                    model_id,
                    finished.epoch,
                    bank_id,
                )
                return pb.TrainingFinished(
                    job_id=plan.job_id,
                    model_id=model_id,
                    epoch=finished.epoch,
                    neutral_score=finished.neutral_score,
                )

            out = self._with_job(context, request.job_id, finish)
            self._end(bank_id, request.job_id, "finished", f"model {out.model_id}")
            return out
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "training_finished", exc)

    def _keep(
        self, bank_id: str, job: _Job, weights: np.ndarray, finished: vlr.TrainingFinished
    ) -> str:
        """Save a finished model; its new id."""
        plan = job.trainer.plan
        model_id = secrets.token_hex(16)
        self.ctx.models.save(
            bank_id,
            {
                "format": "xinrong-bureau-model/1",
                "model_id": model_id,
                "bank_id": bank_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "job_id": plan.job_id,
                "psi_session_id": plan.psi_session_id,
                "epoch": finished.epoch,
                "features": job.recipe.names,
                "columns": job.recipe.outputs,
                "recipe": job.recipe.to_json(),
                "weights": weights.tolist(),
                "neutral_score": finished.neutral_score,
                "counts": job.trainer.counts.as_dict(),
                "epoch_counts": job.trainer.epoch_counts,
            },
        )
        return model_id


def _progress(ledger: dict[str, Any]) -> int:
    """How many steps the bureau answered with a job's shares: decrypted (per row) or
    answered from cross moments."""
    return len(ledger["decrypted"]) + sum(ledger.get("answered", {}).values())
