"""An append-only, hash-chained audit log of what banks asked the bureau and what it answered
(SQLite under the state directory). Each record's hash covers its content and the previous
record's hash, so changing, removing or reordering a record breaks the chain from there on;
``verify`` says where. Records hold sizes, counts and outcomes, never IDs or values.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node_runtime import tables
from node_runtime.transport.channels import bank_identity
from node_runtime.transport.errors import status_for
from protocols.errors import InputDataError

GENESIS = "0" * 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    bank_id TEXT NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""
COLUMNS = ["seq", "time", "bank_id", "event", "outcome", "details", "prev_hash", "hash"]
_SELECT = "SELECT seq, time, bank_id, event, outcome, details, prev_hash, hash FROM records"
_SELECT += " ORDER BY rowid"  # storage order: a reordered record shows up as out of order


def _digest(
    prev_hash: str, seq: int, time: str, bank_id: str, event: str, outcome: str, details: str
) -> str:
    body = json.dumps(
        [prev_hash, seq, time, bank_id, event, outcome, details],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str


class AuditLog:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = tables.private_dir(state_dir) / "audit.sqlite3"
        # 0600 before SQLite opens it: its -wal and -shm files take the database's mode
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # on disk before the answer leaves
        return db

    def append(self, bank_id: str, event: str, outcome: str, **details: Any) -> int:
        """Write one record, durably; returns its sequence number."""
        time = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        text = json.dumps(details, ensure_ascii=False, sort_keys=True, default=str)
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            last = db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            digest = _digest(prev, seq, time, bank_id, event, outcome, text)
            db.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, time, bank_id, event, outcome, text, prev, digest),
            )
            db.execute("COMMIT")
        return seq

    def refusal(
        self, context: grpc.ServicerContext, event: str, exc: BaseException, **details: Any
    ) -> None:
        """Record a refused request: the caller (if it could say who it is), the status."""
        try:
            bank_id = bank_identity(context)
        except Exception:  # noqa: BLE001 - no identity is itself what is recorded
            bank_id = "(unidentified)"
        self.append(bank_id, event, status_for(exc).name, error=str(exc)[:300], **details)

    def records(self, since: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(_SELECT).fetchall()
        out = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        if since:
            out = [r for r in out if r["time"] >= since]
        return out

    def verify(self) -> tuple[int, list[Problem]]:
        """Walk the chain in storage order: the number of records and what is wrong where."""
        problems: list[Problem] = []
        prev, expected = GENESIS, 1
        records = self.records()
        for r in records:
            if r["seq"] != expected:
                what = "removed" if r["seq"] > expected else "reordered or duplicated"
                problems.append(Problem(expected, f"record {expected} {what} (found {r['seq']})"))
            if r["prev_hash"] != prev:
                problems.append(
                    Problem(
                        r["seq"],
                        f"record {r['seq']} does not follow the one "
                        "before it (removed or reordered records)",
                    )
                )
            digest = _digest(
                r["prev_hash"],
                r["seq"],
                r["time"],
                r["bank_id"],
                r["event"],
                r["outcome"],
                r["details"],
            )
            if digest != r["hash"]:
                problems.append(Problem(r["seq"], f"record {r['seq']} was changed"))
            prev, expected = r["hash"], r["seq"] + 1
        return len(records), problems

    def export(self, out: str | Path, since: str | None = None, fmt: str = "jsonl") -> int:
        records = self.records(since)
        out = Path(out)
        if fmt == "jsonl":
            out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        elif fmt == "csv":
            with out.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(records)
        else:
            raise InputDataError(f"unknown export format {fmt!r}: use csv or jsonl")
        return len(records)
