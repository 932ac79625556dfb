"""An append-only, verifiable audit log of what banks asked the bureau and what it answered
(SQLite under the state directory), in the style of Certificate Transparency (RFC 9162).

Records are the leaves of a Merkle tree; with every commit (one record, or the records of
calls that arrived together) the bureau signs the tree's head (its size and root) with its
Ed25519 audit key (``STATE_DIR/audit-key.pem``, 0600) and hands the bank a receipt per
record: the record's index, its leaf hash and that signed head
(``protocols.transparency``). The bureau's own copy can be rewritten by whoever controls
its disk, hashes and all; a receipt or head held by a bank or a regulator cannot: ``verify``
given them names a truncated log, a rewritten record and reordered records.
Records hold sizes, counts and outcomes, never IDs or values.
"""

from __future__ import annotations

import contextvars
import csv
import datetime
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_runtime import tables
from node_runtime.transport.channels import bank_identity, peer_certificate
from node_runtime.transport.errors import status_for
from protocols import merkle
from protocols.errors import InputDataError
from protocols.transparency import (
    RECORD_FIELDS,
    Receipt,
    SignedHead,
    check_log,
    forks,
    leaf_bytes,
    log_id,
    sign_head,
)

FORMAT = "merkle-v1"
KEY_FILE = "audit-key.pem"
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        bank_id TEXT NOT NULL,
        event TEXT NOT NULL,
        outcome TEXT NOT NULL,
        details TEXT NOT NULL,
        leaf_hash TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS heads (
        size INTEGER PRIMARY KEY,
        head TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]
COLUMNS = ["seq", "time", "bank_id", "event", "outcome", "details", "leaf_hash"]
_SELECT = "SELECT seq, time, bank_id, event, outcome, details, leaf_hash FROM records"

# The receipts of the records appended while serving the current call (set by the
# server's interceptor, see receipts.py); None outside a call.
current_receipts: contextvars.ContextVar[list[Receipt] | None] = contextvars.ContextVar(
    "current_receipts", default=None
)


def _leaf_hash(time: str, bank_id: str, event: str, outcome: str, details: str) -> bytes:
    return merkle.leaf_hash(leaf_bytes(time, bank_id, event, outcome, details))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Problem:
    seq: int  # the first record concerned (0: the log as a whole)
    what: str


def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    path = state_dir / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InputDataError(f"{path} is not an Ed25519 audit key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tables.atomic_write_bytes(path, pem, mode=0o600)
    return key


@dataclass
class _Pending:
    """A record waiting for its group commit; ``seq`` and ``head`` once durable."""

    time: str
    bank_id: str
    event: str
    outcome: str
    text: str
    digest: bytes
    seq: int = 0
    head: SignedHead | None = None
    error: BaseException | None = None


# Refusals each caller may have on record one by one: a burst, then one a second. A review's
# bank had 5,712 refusals in 10 s written (8.5 MB of signed log from one thread; about 73 GB a
# day). Beyond the budget a refusal is still answered, counted, and the count goes on record
# once a minute and with the caller's next recorded refusal.
REFUSAL_BURST = 120
REFUSALS_PER_SECOND = 1.0
SUPPRESSED_RECORD_SECONDS = 60.0


class RefusalBudget:
    """A token bucket per caller (a bank's id, or an unidentified caller's host)."""

    def __init__(self, burst: int = REFUSAL_BURST, per_second: float = REFUSALS_PER_SECOND) -> None:
        self.burst, self.per_second = burst, per_second
        self._lock = threading.Lock()
        # caller -> (tokens, last refill, refusals not recorded, when that count last went
        # on record)
        self._callers: dict[str, list[float]] = {}

    def admit(self, caller: str, now: float) -> tuple[bool, int]:
        """Whether this refusal goes on record, and how many earlier ones did not (to be
        recorded now: with it, or alone once a minute); the count is then reset."""
        with self._lock:
            if len(self._callers) > 10_000:  # bounded: forget callers with nothing pending
                self._callers = {k: v for k, v in self._callers.items() if v[2]}
                if len(self._callers) > 100_000:
                    self._callers.clear()  # a flood from that many hosts: counts are lost
            state = self._callers.setdefault(caller, [float(self.burst), now, 0.0, now])
            state[0] = min(self.burst, state[0] + (now - state[1]) * self.per_second)
            state[1] = now
            if state[0] >= 1:
                state[0] -= 1
                skipped, state[2], state[3] = int(state[2]), 0.0, now
                return True, skipped
            state[2] += 1
            if now - state[3] >= SUPPRESSED_RECORD_SECONDS:
                skipped, state[2], state[3] = int(state[2]), 0.0, now
                return False, skipped
            return False, 0

    def pending(self) -> dict[str, int]:
        """The counts not yet on record, per caller (taken: reset to 0)."""
        with self._lock:
            out = {k: int(v[2]) for k, v in self._callers.items() if v[2]}
            for key in out:
                self._callers[key][2] = 0.0
            return out


class AuditLog:
    def __init__(self, state_dir: str | Path) -> None:
        root = tables.private_dir(state_dir)
        self.path = root / "audit.sqlite3"
        # 0600 before SQLite opens it: its -wal and -shm files take the database's mode
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        self._lock = threading.Lock()
        self.refusals = RefusalBudget()
        self._turn = threading.Condition()  # group commit: who commits, who waits
        self._queue: list[_Pending] = []
        self._committing = False
        self._writer: sqlite3.Connection | None = None
        self._key = load_or_create_key(root)
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.log_id = log_id(self.public_key)
        self._tree = merkle.CompactRange()
        with self._connect() as db:
            migrated = _migrate(db)
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
        if migrated:  # on record, under the first head of the new log
            self.append("(bureau)", "audit_log_migrated", "OK", **migrated)

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=check_same_thread
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # on disk before the answer leaves
        return db

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _tree_at(self, db: sqlite3.Connection, size: int) -> merkle.CompactRange:
        """The tree of the first ``size`` records; rebuilt when another process appended."""
        if self._tree.size != size:
            rows = db.execute("SELECT leaf_hash FROM records ORDER BY seq").fetchall()
            self._tree = merkle.CompactRange([bytes.fromhex(r[0]) for r in rows[:size]])
        return self._tree

    def append(self, bank_id: str, event: str, outcome: str, **details: Any) -> int:
        """Write one record and a head signed over it, durably; returns its number. Inside
        a served call, the record's receipt goes back to the bank with the answer.

        Group commit: records appended while another thread commits wait for it, then go
        to disk together in one transaction under one signed head (one fsync and one
        signature for all of them), so concurrent calls do not queue behind one each."""
        time = _now()
        text = json.dumps(details, ensure_ascii=False, sort_keys=True, default=str)
        item = _Pending(
            time, bank_id, event, outcome, text, _leaf_hash(time, bank_id, event, outcome, text)
        )
        with self._turn:
            self._queue.append(item)
            while item.seq == 0 and item.error is None:
                if not self._committing:
                    self._committing = True
                    batch, self._queue = self._queue, []
                    break
                self._turn.wait()
            else:
                return self._finish(item)
        try:
            self._commit(batch)
        except BaseException as exc:  # noqa: BLE001 - every waiter of the batch gets it
            for pending in batch:
                pending.error = exc
        finally:
            with self._turn:
                self._committing = False
                self._turn.notify_all()
        return self._finish(item)

    def _commit(self, batch: list[_Pending]) -> None:
        with self._lock:
            if self._writer is None:  # one connection for every commit (one at a time)
                self._writer = self._connect(check_same_thread=False)
            self._commit_on(self._writer, batch)

    def _commit_on(self, db: sqlite3.Connection, batch: list[_Pending]) -> None:
        """The batch's records and one head signed over all of them: each record's
        receipt is its place and leaf hash under that head, which is as good evidence as a
        head of its own (``check_log`` finds the leaf at its index under any head that
        covers it) and costs one signature, one head row and one check at the bank per
        commit instead of per record."""
        db.execute("BEGIN IMMEDIATE")
        try:
            first = (db.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0) + 1
            tree = self._tree_at(db, first - 1)
            db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (seq, p.time, p.bank_id, p.event, p.outcome, p.text, p.digest.hex())
                    for seq, p in enumerate(batch, start=first)
                ],
            )
            for pending in batch:
                tree.append(pending.digest)
            last = first + len(batch) - 1
            head = sign_head(self._key, self.public_key, last, tree.root(), batch[-1].time)
            db.execute("INSERT INTO heads VALUES (?, ?)", (last, json.dumps(head.to_dict())))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._tree = merkle.CompactRange()  # rebuilt from the database next time
            raise
        for seq, pending in enumerate(batch, start=first):
            pending.seq, pending.head = seq, head

    def _finish(self, item: _Pending) -> int:
        if item.error is not None:
            raise item.error
        assert item.head is not None
        collected = current_receipts.get()
        if collected is not None:
            collected.append(
                Receipt(item.seq - 1, item.digest.hex(), item.head, self.public_key.hex())
            )
        return item.seq

    def flush_refusals(self) -> None:
        """The refusal counts not yet on record (at the node's stop)."""
        for caller, count in self.refusals.pending().items():
            self.append("(bureau)", "refusals_not_recorded", "RESOURCE_EXHAUSTED",
                        count=count, caller=caller)  # fmt: skip

    def refusal(
        self, context: grpc.ServicerContext, event: str, exc: BaseException, **details: Any
    ) -> bool:
        """Record a refused request: the caller (if it could say who it is), its address,
        the status; within the caller's ``RefusalBudget`` (returns whether it was recorded:
        beyond it, the count goes on record, ``refusals_not_recorded``)."""
        try:
            bank_id = bank_identity(context)
        except Exception:  # noqa: BLE001 - no identity is itself what is recorded
            bank_id = "(unidentified)"
        certificate = peer_certificate(context)
        # whose budget: the certificate's (a bank cannot shed it by naming another id), else
        # the bank's, else the unidentified caller's host
        caller = (
            f"certificate {certificate.serial_number:x}"
            if certificate is not None
            else bank_id
            if bank_id != "(unidentified)"
            else _peer(context).rsplit(":", 1)[0]
        )
        # a refusal that carries what was charged or decided is always recorded
        decided = set(details) - {"method", "reason", "serial"}
        recorded, skipped = (True, 0) if decided else self.refusals.admit(caller, monotonic())
        if skipped:
            self.append(
                bank_id, "refusals_not_recorded", "RESOURCE_EXHAUSTED", count=skipped,
                peer=_peer(context),
            )  # fmt: skip
        if not recorded:
            return False
        if certificate is not None:
            details["subject"] = certificate.subject.rfc4514_string()
        self.append(
            bank_id,
            event,
            status_for(exc).name,
            error=str(exc)[:300],
            peer=_peer(context),
            **details,
        )
        return True

    def records(self, since: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(_SELECT + " ORDER BY seq").fetchall()
        out = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        if since:
            out = [r for r in out if r["time"] >= since]
        return out

    def heads(self) -> list[SignedHead]:
        with self._connect() as db:
            rows = db.execute("SELECT head FROM heads ORDER BY size").fetchall()
        return [SignedHead.from_dict(json.loads(r[0])) for r in rows]

    def latest_head(self) -> SignedHead | None:
        with self._connect() as db:
            row = db.execute("SELECT head FROM heads ORDER BY size DESC LIMIT 1").fetchone()
        return SignedHead.from_dict(json.loads(row[0])) if row else None

    def verify(self, evidence: Iterable[SignedHead | Receipt] = ()) -> tuple[int, list[Problem]]:
        """Check every record against its leaf hash, the records' order and numbering, the
        log against every head the bureau stored and every head or receipt given (from a
        bank or a regulator): the number of records and what is wrong where."""
        records = self.records()
        problems: list[Problem] = []
        leaves: list[bytes] = []
        for expected, r in enumerate(records, start=1):
            if r["seq"] != expected:
                problems.append(
                    Problem(expected, f"record {expected} removed (numbering jumps to {r['seq']})")
                )
            digest = _leaf_hash(r["time"], r["bank_id"], r["event"], r["outcome"], r["details"])
            if digest.hex() != r["leaf_hash"]:
                problems.append(
                    Problem(
                        r["seq"],
                        f"record {r['seq']} was changed (its content no longer matches "
                        "its leaf hash)",
                    )
                )
            leaves.append(digest)
        stored = self._stored_heads_checked(problems)
        heads: list[SignedHead] = []
        receipts: list[Receipt] = []
        for item in evidence:
            try:
                if isinstance(item, Receipt):
                    item.verify(self.public_key)
                    receipts.append(item)
                else:
                    item.verify(self.public_key)
                    heads.append(item)
            except InputDataError as exc:
                problems.append(Problem(0, f"evidence not usable: {exc}"))
        # the bureau's own heads and those held by others apart: where the others' heads
        # disagree, the bureau's may have been re-signed to fit a rewritten log
        found = check_log(leaves, stored)
        if heads or receipts:
            found += check_log(leaves, heads, receipts)
            found += forks(stored, [*heads, *(r.head for r in receipts)])
        problems.extend(Problem(0, what) for what in dict.fromkeys(found))
        return len(records), problems

    def _stored_heads_checked(self, problems: list[Problem]) -> list[SignedHead]:
        """The heads the bureau stored. Their roots are all compared with the records; only
        the latest signature is checked, which keeps a long log's check fast: the stored
        heads are the bureau's own copy, evidence only against accidents, since whoever can
        rewrite them may hold the key too (the heads held by others are what count)."""
        heads = self.heads()
        if heads:
            try:
                heads[-1].verify(self.public_key)
            except InputDataError as exc:
                problems.append(Problem(heads[-1].size, f"stored head: {exc}"))
                heads.pop()
        return heads

    def prove(self, receipts: Iterable[Receipt], bank_id: str) -> dict[str, Any]:
        """For a bank's receipts: the latest signed head and, per receipt, the proof that
        its record is in that head's tree (inclusion) and that the receipt's head is a
        prefix of it (consistency), with the record itself when it is ``bank_id``'s (the
        bank recomputes its leaf hash: a receipt given for a call that was never recorded,
        another call's or another bank's, shows); another bank's record is only said to
        be one. Lets a bank check its records without seeing anyone else's (an export
        would show it every bank's records)."""
        records = self.records()
        leaves = [
            _leaf_hash(r["time"], r["bank_id"], r["event"], r["outcome"], r["details"])
            for r in records
        ]
        head = self.latest_head()
        if head is None or head.size != len(leaves):
            raise InputDataError("the audit log's latest head does not cover its records")
        proofs = []
        for r in receipts:
            if r.head.log_id != self.log_id or r.head.size > head.size:
                continue  # another log's, or beyond this one: the bank's check names it
            record = records[r.index]
            mine = record["bank_id"] == bank_id
            proofs.append(
                {
                    "index": r.index,
                    "head_size": r.head.size,
                    "inclusion": [h.hex() for h in merkle.inclusion_proof(r.index, leaves)],
                    "consistency": [h.hex() for h in merkle.consistency_proof(r.head.size, leaves)],
                    "record": [record[c] for c in RECORD_FIELDS] if mine else None,
                }
            )
        return {
            "signed_head": head.to_dict(),
            "public_key": self.public_key.hex(),
            "proofs": proofs,
        }

    def export(self, out: str | Path, since: str | None = None, fmt: str = "jsonl") -> int:
        """The records (with their leaf hashes) and the latest signed head, for a regulator:
        ``audit verify --evidence`` on a later log proves it still holds them. JSON lines
        end with the head and the public key; a CSV gets them beside it (OUT.head.json)."""
        records = self.records(since)
        head = self.latest_head()
        trailer = {
            "signed_head": head.to_dict() if head else None,
            "public_key": self.public_key.hex(),
        }
        out = Path(out)
        if fmt == "jsonl":
            lines = [json.dumps(r, ensure_ascii=False) for r in records]
            out.write_text("".join(line + "\n" for line in [*lines, json.dumps(trailer)]))
        elif fmt == "csv":
            with out.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(records)
            out.with_name(out.name + ".head.json").write_text(json.dumps(trailer) + "\n")
        else:
            raise InputDataError(f"unknown export format {fmt!r}: use csv or jsonl")
        return len(records)


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # noqa: BLE001 - a context without a peer (tests)
        return "(unknown)"


def read_evidence(path: str | Path) -> list[SignedHead | Receipt]:
    """Heads and receipts from a file: a bank's receipts (JSON lines), an export (its
    signed head), a single head or receipt (JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read ({exc.strerror})") from None
    found: list[SignedHead | Receipt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise InputDataError(f"{path}:{number}: not JSON") from None
        if isinstance(item, dict) and "leaf_hash" in item and "head" in item:
            found.append(Receipt.from_dict(item))
        elif isinstance(item, dict) and item.get("signed_head"):
            found.append(SignedHead.from_dict(item["signed_head"]))
        elif isinstance(item, dict) and "signature" in item and "root" in item:
            found.append(SignedHead.from_dict(item))
    if not found:
        raise InputDataError(f"{path}: no signed head or receipt in it")
    return found


# -- the old format: an unkeyed hash chain (before the Merkle log) --------------------------

_OLD_GENESIS = "0" * 64


def _old_digest(prev: str, seq: int, time: str, bank: str, event: str, out: str, det: str) -> str:
    body = json.dumps(
        [prev, seq, time, bank, event, out, det], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _migrate(db: sqlite3.Connection) -> dict[str, Any] | None:
    """Carry an intact hash-chained log over into the Merkle log, or refuse a broken one
    (it is evidence: left untouched)."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(records)")]
    if "prev_hash" not in columns:
        return None
    rows = db.execute(
        "SELECT seq, time, bank_id, event, outcome, details, prev_hash, hash FROM records "
        "ORDER BY rowid"
    ).fetchall()
    prev, expected = _OLD_GENESIS, 1
    for seq, time, bank, event, outcome, details, prev_hash, digest in rows:
        if (
            seq != expected
            or prev_hash != prev
            or _old_digest(prev_hash, seq, time, bank, event, outcome, details) != digest
        ):
            path = db.execute("PRAGMA database_list").fetchone()[2]
            raise InputDataError(
                f"{path}: an audit log of the old hash-chained format whose chain breaks at "
                f"record {expected}; it was left untouched: keep it as evidence, move it "
                "aside and start a new log"
            )
        prev, expected = digest, expected + 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("ALTER TABLE records RENAME TO records_hash_chain")
    db.execute(_SCHEMA[0])
    for seq, time, bank, event, outcome, details, _, _ in rows:
        leaf = _leaf_hash(time, bank, event, outcome, details).hex()
        db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, time, bank, event, outcome, details, leaf),
        )
    db.execute("DROP TABLE records_hash_chain")
    db.execute("COMMIT")
    return {"old_records": len(rows), "old_chain_head": prev}


@contextmanager
def collecting_receipts() -> Iterator[list[Receipt]]:
    """Collect the receipts of records appended in this context (one served call)."""
    collected: list[Receipt] = []
    token = current_receipts.set(collected)
    try:
        yield collected
    finally:
        current_receipts.reset(token)
