"""The verifiable audit log over real nodes: a bank's receipts and a regulator's export of
signed heads expose a truncated log, a rewritten record and reordered records, even when
the attacker holds the bureau's audit key and recomputed every hash and signature."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bank_node import receipts as bank_receipts
from bank_node.jobs import psi_job
from bureau_node.audit import (
    AuditLog,
    _leaf_hash,
    collecting_receipts,
    load_or_create_key,
    read_evidence,
)
from bureau_node.server import BureauNode
from protocols import merkle
from protocols.transparency import leaf_bytes, sign_head
from xinrong.synthetic import generate_city, write_city


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Seven PSI sessions of bank-a (RECORDS records, a receipt each: every session is on
    record when it opens, when its IDs were exponentiated and when it ends), a regulator's
    export after the fourth session and after the seventh."""
    root = tmp_path_factory.mktemp("auditlog")
    city = write_city(generate_city(1200, 300, seed=7), root / "city")
    mp = pytest.MonkeyPatch()
    mp.setenv("XINRONG_RECEIPTS_DIR", str(root / "receipts"))
    state = root / "state"
    with BureauNode(city["bureau"], "uscc", state, workers=0) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        for i in range(7):
            psi_job(address, city["bank"], "uscc", root / f"m{i}.csv", "bank-a", workers=0)
            if i == 3:
                AuditLog(state).export(root / "early.jsonl")
    AuditLog(state).export(root / "late.jsonl")
    mp.undo()
    return root


SESSIONS = 7
RECORDS = 3 * SESSIONS
EARLY = 3 * 4  # the records in the export after the fourth session


def _receipts(root: Path) -> list:
    return bank_receipts.ReceiptStore(root / "receipts").load()


def _tampered(root: Path, tmp_path: Path, mutate) -> Path:
    """A copy of the bureau's state rewritten by an attacker holding the audit key: the
    records changed by ``mutate``, then every leaf hash and every head recomputed."""
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    key = load_or_create_key(state)
    log = AuditLog(state)
    with sqlite3.connect(state / "audit.sqlite3") as db:
        rows = db.execute(
            "SELECT time, bank_id, event, outcome, details FROM records ORDER BY seq"
        ).fetchall()
        rows = mutate([list(r) for r in rows])
        db.execute("DELETE FROM records")
        db.execute("DELETE FROM heads")
        tree = merkle.CompactRange()
        for seq, row in enumerate(rows, start=1):
            leaf = merkle.leaf_hash(leaf_bytes(*row))
            tree.append(leaf)
            db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (seq, *row, leaf.hex()))
            head = sign_head(key, log.public_key, seq, tree.root(), row[0])
            db.execute("INSERT INTO heads VALUES (?, ?)", (seq, json.dumps(head.to_dict())))
    assert AuditLog(state).verify()[1] == []  # on its own, the rewritten log looks intact
    return state


def _problems(state: Path, *evidence: Path) -> list[str]:
    items = [item for path in evidence for item in read_evidence(path)]
    return [p.what for p in AuditLog(state).verify(items)[1]]


def _receipts_file(root: Path) -> Path:
    (found,) = (root / "receipts").glob("*.jsonl")
    return found


def test_every_answer_carried_a_receipt_that_verifies(logged):
    key = logged / "state" / "audit-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    receipts = _receipts(logged)
    assert [r.index for r in receipts] == list(range(RECORDS))
    assert stat.S_IMODE((logged / "receipts").stat().st_mode) == 0o700
    assert stat.S_IMODE(_receipts_file(logged).stat().st_mode) == 0o600
    assert bank_receipts.verify(receipts, export=logged / "late.jsonl") == []
    count, problems = AuditLog(logged / "state").verify(read_evidence(_receipts_file(logged)))
    assert count == RECORDS and problems == []


def test_deleting_the_newest_records_is_named(logged, tmp_path):
    state = _tampered(logged, tmp_path, lambda rows: rows[: EARLY + 1])
    for evidence in (_receipts_file(logged), logged / "late.jsonl"):
        problems = _problems(state, evidence)
        removed = f"records {EARLY + 2}-{RECORDS} were removed"
        assert any("truncated" in p and removed in p for p in problems)
    assert _problems(state, logged / "early.jsonl") == []  # the first records are untouched


def test_rewriting_a_middle_record_and_every_hash_after_it_is_named(logged, tmp_path):
    def rewrite(rows):
        details = json.loads(rows[1][4])
        details["matched"] = 0
        rows[1][4] = json.dumps(details, sort_keys=True)
        return rows

    state = _tampered(logged, tmp_path, rewrite)
    problems = _problems(state, _receipts_file(logged))
    assert any("record 2 was rewritten" in p for p in problems)
    for export in ("early.jsonl", "late.jsonl"):
        problems = _problems(state, logged / export)
        assert any("records 1-" in p and "were rewritten" in p for p in problems)


def test_reordering_two_records_is_named(logged, tmp_path):
    def swap(rows):
        rows[2], rows[3] = rows[3], rows[2]
        return rows

    state = _tampered(logged, tmp_path, swap)
    problems = _problems(state, _receipts_file(logged))
    assert any("record 3 was moved to position 4: records reordered" in p for p in problems)
    assert any("no longer matches the head" in p for p in _problems(state, logged / "early.jsonl"))


def test_the_command_lines_fail_naming_the_problem(logged, tmp_path):
    state = _tampered(logged, tmp_path, lambda rows: rows[:6])

    def run(module, *args):
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    broken = run(
        "bureau_node",
        "audit",
        "verify",
        "--state-dir",
        str(state),
        "--evidence",
        str(_receipts_file(logged)),
    )
    assert broken.returncode == 1
    assert "BROKEN: the log was truncated" in broken.stderr and "7-" in broken.stderr
    intact = run(
        "bureau_node",
        "audit",
        "verify",
        "--state-dir",
        str(logged / "state"),
        "--evidence",
        str(_receipts_file(logged)),
        "--evidence",
        str(logged / "late.jsonl"),
    )
    assert intact.returncode == 0 and json.loads(intact.stdout)["evidence"] == RECORDS + 1

    key = tmp_path / "bureau-audit.pem"
    assert (
        run("bureau_node", "audit", "key", "--state-dir", str(state), "--out", str(key)).returncode
        == 0
    )
    new_export = tmp_path / "now.jsonl"
    assert (
        run(
            "bureau_node", "audit", "export", "--state-dir", str(state), "--out", str(new_export)
        ).returncode
        == 0
    )
    bank = run(
        "bank_node",
        "receipts",
        "verify",
        "--receipts-dir",
        str(logged / "receipts"),
        "--bureau-key",
        str(key),
        "--export",
        str(new_export),
    )
    assert bank.returncode == 1 and f"records 7-{RECORDS} were removed" in bank.stderr
    listed = run("bank_node", "receipts", "list", "--receipts-dir", str(logged / "receipts"))
    assert (
        listed.returncode == 0 and json.loads(listed.stdout.splitlines()[-1])["receipts"] == RECORDS
    )


def test_a_forged_receipt_is_refused(logged):
    (receipt, *_) = _receipts(logged)
    data = receipt.to_dict()
    data["head"]["root"] = "00" * 32
    with pytest.raises(Exception, match="bad signature"):
        bank_receipts.parse_receipts(json.dumps([data]).encode())


def test_a_head_checked_once_does_not_vouch_for_an_altered_copy(logged):
    """The bank checks a head shared by several receipts once; a copy with any signed field
    changed (the time, the size) is checked afresh and refused."""
    (receipt, *_) = _receipts(logged)
    checked: set = set()
    genuine = json.dumps([receipt.to_dict()]).encode()
    assert bank_receipts.parse_receipts(genuine, checked) == [receipt] and len(checked) == 1
    for field, value in (("time", "2020-01-01T00:00:00Z"), ("size", receipt.head.size + 1)):
        data = receipt.to_dict()
        data["head"][field] = value
        with pytest.raises(Exception, match="bad signature"):
            bank_receipts.parse_receipts(json.dumps([data]).encode(), checked)


def test_records_committed_together_share_one_signed_head_that_proves_each(tmp_path):
    """Calls that arrive while a commit is on disk go together: one transaction, one
    signature. Each record's receipt (its place and leaf hash under that shared head) still
    verifies, and still names its record when the log is rewritten."""
    log = AuditLog(tmp_path)
    kept: list = []

    def call(i: int) -> None:
        with collecting_receipts() as receipts:
            log.append("bank-a", "lookup", "OK", points=i)
        kept.extend(receipts)

    with log._lock:  # the first call's commit waits on the disk; four more arrive meanwhile
        threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        while len(log._queue) < 4:
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert sorted(r.index for r in kept) == [0, 1, 2, 3, 4]
    assert len(log.heads()) == 2  # the first record's head, then one for the other four
    shared = {r.head for r in kept if r.index > 0}
    assert len(shared) == 1 and next(iter(shared)).size == 5
    for r in kept:
        r.verify(log.public_key)
    assert log.verify(kept) == (5, [])
    with sqlite3.connect(log.path) as db:  # the third record rewritten, its hash too
        db.execute("UPDATE records SET details = '{\"points\": 9}' WHERE seq = 3")
        row = db.execute(
            "SELECT time, bank_id, event, outcome, details FROM records WHERE seq = 3"
        ).fetchone()
        db.execute("UPDATE records SET leaf_hash = ? WHERE seq = 3", (_leaf_hash(*row).hex(),))
    _, problems = AuditLog(tmp_path).verify(kept)
    assert any("record 3 was rewritten" in p.what for p in problems), problems


class _Unsynced(AuditLog):
    def _connect(self, check_same_thread=True):  # only to write thousands of records quickly
        db = super()._connect(check_same_thread)
        db.execute("PRAGMA synchronous=OFF")
        return db


def test_thousands_of_untouched_records_verify_in_under_a_second(tmp_path):
    log = _Unsynced(tmp_path)
    for i in range(3000):
        log.append(f"bank-{i % 7}", "psi", "OK", bank_ids=i, matched=i // 3)
    head = AuditLog(tmp_path).latest_head()
    started = time.perf_counter()
    count, problems = AuditLog(tmp_path).verify([head])
    elapsed = time.perf_counter() - started
    assert count == 3000 and problems == []
    assert elapsed < 1.0, f"verify took {elapsed:.2f} s"


def test_an_old_hash_chained_log_is_migrated_or_refused(tmp_path):
    import hashlib

    def old_log(path: Path, break_at: int | None) -> None:
        path.mkdir()
        with sqlite3.connect(path / "audit.sqlite3") as db:
            db.execute(
                "CREATE TABLE records (seq INTEGER PRIMARY KEY, time TEXT, bank_id TEXT, "
                "event TEXT, outcome TEXT, details TEXT, prev_hash TEXT, hash TEXT)"
            )
            prev = "0" * 64
            for seq in range(1, 4):
                row = [prev, seq, f"2026-01-0{seq}", "bank-a", "psi", "OK", "{}"]
                body = json.dumps(row, separators=(",", ":")).encode()
                digest = hashlib.sha256(body).hexdigest()
                if seq == break_at:
                    row[6] = '{"matched": 1}'
                db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row[1:], prev, digest)
                )
                prev = digest

    old_log(tmp_path / "good", None)
    log = AuditLog(tmp_path / "good")
    records = log.records()
    assert [r["event"] for r in records] == ["psi"] * 3 + ["audit_log_migrated"]
    assert json.loads(records[-1]["details"])["old_records"] == 3
    assert log.verify()[1] == []
    old_log(tmp_path / "bad", 2)
    with pytest.raises(Exception, match="chain breaks at record 2"):
        AuditLog(tmp_path / "bad")


def _proof_problems(state: Path, root: Path, tmp_path: Path) -> list[str]:
    receipts = _receipts(root)
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(AuditLog(state).prove(receipts, "bank-a")))
    return bank_receipts.verify(receipts, AuditLog(root / "state").public_key, proof=proof)


def test_a_bank_checks_its_records_with_proofs_without_seeing_others(logged, tmp_path):
    assert _proof_problems(logged / "state", logged, tmp_path) == []

    truncated = _tampered(logged, tmp_path / "a", lambda rows: rows[:5])
    found = _proof_problems(truncated, logged, tmp_path)
    assert sum("the log was truncated" in p for p in found) == RECORDS - 5  # records 6-

    def rewrite(rows):
        rows[1][3] = "REWRITTEN"  # the outcome of record 2
        return rows

    rewritten = _tampered(logged, tmp_path / "b", rewrite)
    found = _proof_problems(rewritten, logged, tmp_path)
    assert any(p.startswith("record 2 is not in the bureau's log") for p in found)

    def swap(rows):
        rows[2], rows[3] = rows[3], rows[2]
        return rows

    swapped = _tampered(logged, tmp_path / "c", swap)
    found = _proof_problems(swapped, logged, tmp_path)
    assert any(p.startswith("record 3 is not in the bureau's log") for p in found)
    assert any(p.startswith("record 4 is not in the bureau's log") for p in found)


def test_a_replayed_receipt_or_another_banks_record_is_named(logged, tmp_path):
    """A bureau that answers a call without recording it can only hand back a receipt of
    some other record: an earlier one of the bank's (the same record for two calls), or
    another bank's. The proof carries the bank's own records, so both show."""
    state = tmp_path / "state"
    shutil.copytree(logged / "state", state)
    log = AuditLog(state)
    with collecting_receipts() as got:
        log.append("bank-b", "psi_opened", "OK", ids=5)
    receipts = _receipts(logged)
    replayed = [*receipts, receipts[3]]
    foreign = [*receipts, *got]
    for given, expected in (
        (replayed, "record 4 was given as the receipt of 2 calls"),
        (foreign, f"record {got[0].index + 1} is another bank's"),
    ):
        proof = tmp_path / "proof.json"
        proof.write_text(json.dumps(log.prove(given, "bank-a")))
        found = bank_receipts.verify(given, log.public_key, proof=proof)
        assert any(p.startswith(expected) for p in found), found
        assert "bank-b" not in proof.read_text()  # nothing of the other bank's record
    log.export(tmp_path / "all.jsonl")
    found = bank_receipts.verify(foreign, export=tmp_path / "all.jsonl")
    assert any("records of 2 banks" in p for p in found), found
    assert bank_receipts.verify(receipts, export=tmp_path / "all.jsonl") == []


def test_receipts_of_another_banks_records_or_another_log_are_named(logged, tmp_path):
    """A review's two ways past the checks above: a bureau that recorded none of bank-b's
    calls answered each with a receipt of one of bank-a's records (all the same bank's, so
    no mix showed), and a proof of a second audit log under another key covered none of
    the receipts and was reported intact."""
    receipts = _receipts(logged)
    log = AuditLog(logged / "state")
    assert bank_receipts.ReceiptStore(logged / "receipts").stored_bank() == "bank-a"
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(log.prove(receipts, "bank-a")))
    for evidence in ({"proof": proof}, {"export": logged / "late.jsonl"}):
        assert bank_receipts.verify(receipts, log.public_key, bank_id="bank-a", **evidence) == []
        found = bank_receipts.verify(receipts, log.public_key, bank_id="bank-b", **evidence)
        assert sum("is another bank's" in p for p in found) == RECORDS, found
    other = AuditLog(tmp_path / "other")  # a second log: another key, none of these records
    other.append("bank-z", "psi_opened", "OK", ids=5)
    proof.write_text(json.dumps(other.prove(receipts, "bank-a")))
    found = bank_receipts.verify(receipts, proof=proof)
    assert sum("the proof does not cover it" in p for p in found) == RECORDS, found
    other.export(tmp_path / "other.jsonl")
    found = bank_receipts.verify(receipts, export=tmp_path / "other.jsonl")
    assert sum("the export does not cover it" in p for p in found) == RECORDS, found


def test_prove_and_verify_on_the_command_line(logged, tmp_path):
    proof = tmp_path / "proof.json"
    made = subprocess.run(
        [sys.executable, "-m", "bureau_node", "audit", "prove", "--state-dir"]
        + [str(logged / "state"), "--receipts", str(_receipts_file(logged))]
        + ["--bank", "bank-a", "--out", str(proof)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0 and json.loads(made.stdout)["proofs"] == RECORDS
    checked = subprocess.run(
        [sys.executable, "-m", "bank_node", "receipts", "verify", "--receipts-dir"]
        + [str(logged / "receipts"), "--proof", str(proof)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0 and json.loads(checked.stdout)["intact"]


def test_a_flood_of_refused_calls_is_answered_and_counted_not_written_one_by_one(tmp_path):
    """A review's bank sent 5,712 calls in 10 s that were each refused, and each wrote a
    signed record (8.5 MB): about 73 GB a day from one thread. Beyond a burst a caller's
    refusals are still answered alike, and go on record as a count."""
    import grpc

    from bank_node.client import BureauConnection
    from bureau_node.audit import RefusalBudget
    from xinrong.v1 import model_pb2 as pb

    city = write_city(generate_city(600, 100, seed=7), tmp_path / "city")
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as node:
        node.start("127.0.0.1:0")
        assert node.audit is not None
        node.audit.refusals = RefusalBudget(burst=20, per_second=1e-9)
        codes = []
        with BureauConnection(f"127.0.0.1:{node.port}", "bank-flood") as connection:
            for _ in range(100):
                try:
                    connection.training.AbandonTraining(
                        pb.AbandonRequest(job_id="0" * 32), timeout=10, metadata=connection.metadata
                    )
                except grpc.RpcError as err:
                    codes.append(err.code())
            node.audit.refusals.per_second = 1e9  # the budget refills: the next is recorded
            with pytest.raises(grpc.RpcError):
                connection.training.AbandonTraining(
                    pb.AbandonRequest(job_id="0" * 32), timeout=10, metadata=connection.metadata
                )
            node.audit.refusals = RefusalBudget(burst=0, per_second=1e-9)
            for _ in range(5):  # a last burst, and then nothing: counted at the stop
                with pytest.raises(grpc.RpcError):
                    connection.training.AbandonTraining(
                        pb.AbandonRequest(job_id="0" * 32),
                        timeout=10,
                        metadata=connection.metadata,
                    )
        audit = node.audit
    records = [r for r in audit.records() if r["bank_id"] == "bank-flood"]
    assert codes == 100 * [grpc.StatusCode.NOT_FOUND]  # every call answered alike
    events = [r["event"] for r in records]
    assert events == 20 * ["training_abandoned"] + ["refusals_not_recorded", "training_abandoned"]
    assert json.loads(records[20]["details"])["count"] == 80
    last = audit.records()[-1]
    assert (last["bank_id"], last["event"]) == ("(bureau)", "refusals_not_recorded")
    assert json.loads(last["details"]) == {"caller": "bank-flood", "count": 5}


def test_two_banks_on_one_machine_keep_their_receipts_apart(tmp_path, monkeypatch):
    """A review ran two bank identities on one machine: their receipts went to one file per
    audit log, and `receipts verify --bank` named each of the other bank's BROKEN, on an
    intact log. A file per log and bank; `verify --bank` reads that bank's."""
    city = write_city(generate_city(600, 100, seed=7), tmp_path / "city")
    receipts_dir = tmp_path / "receipts"
    monkeypatch.setenv("XINRONG_RECEIPTS_DIR", str(receipts_dir))
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as node:
        node.start("127.0.0.1:0")
        for bank in ("bank-one", "bank-two"):
            psi_job(f"127.0.0.1:{node.port}", city["bank"], "uscc", tmp_path / f"{bank}.csv",
                    bank, workers=0)  # fmt: skip
        AuditLog(tmp_path / "state").export(tmp_path / "all.jsonl")
    names = sorted(p.name.split(".", 1)[1] for p in receipts_dir.glob("*.jsonl"))
    assert names == ["bank-one.jsonl", "bank-two.jsonl"]
    done = subprocess.run(
        [sys.executable, "-m", "bank_node", "receipts", "verify", "--receipts-dir",
         str(receipts_dir), "--bank", "bank-one", "--export", str(tmp_path / "all.jsonl")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "BROKEN" not in done.stderr, done.stderr


def _other_logs_receipts(root: Path, logs: int) -> list:
    """One receipt from each of ``logs`` fresh audit logs (a key each)."""
    out = []
    for i in range(logs):
        with collecting_receipts() as receipts:
            AuditLog(root / f"log{i}").append("bank-a", "psi", "OK", ids=i)
        out.extend(receipts)
    return out


def test_a_connection_keeps_receipts_of_one_audit_log_of_fields_of_their_size(tmp_path):
    """A review's hostile bureau padded every receipt to 4 KB (51.6 MB on the bank's disk in
    200 answers, 500 times an honest bureau's) and signed each with a fresh key: a file per
    receipt, 3,841 in 3 s, until the bank's own open() failed (EMFILE). A head's fields
    must have their sizes, and a connection keeps the receipts of the log it first saw."""
    from bank_node.receipts import ReceiptCollector, ReceiptStore

    first, *others = _other_logs_receipts(tmp_path, 6)
    collector = ReceiptCollector(ReceiptStore(tmp_path / "receipts", "bank-a"))
    collector.keep(json.dumps([first.to_dict()]).encode())
    for receipt in others:
        collector.keep(json.dumps([receipt.to_dict()]).encode())
    collector.store.sync()
    assert collector.kept == 1 and len(list((tmp_path / "receipts").glob("*.jsonl"))) == 1
    padded = first.to_dict()
    padded["head"]["time"] += " " * 3000  # signed by the bureau all the same
    with pytest.raises(Exception, match="a field of the wrong size"):
        bank_receipts.parse_receipts(json.dumps([padded]).encode())


def test_receipts_of_another_audit_log_are_set_aside_not_broken(logged, tmp_path):
    """A review's receipts directory also held a test bureau's receipts: `receipts verify
    --bureau-key` checked them all against this bureau's key and printed 35 BROKEN lines
    (12,057 with a machine's default directory), exit 1, on an intact log. They are now set
    aside and counted; one that names this log but is signed by another key is forged."""
    mixed = tmp_path / "receipts"
    shutil.copytree(logged / "receipts", mixed)
    store = bank_receipts.ReceiptStore(mixed, "bank-a")
    store.add(_other_logs_receipts(tmp_path, 2))
    store.sync()
    key = tmp_path / "bureau-audit.pem"
    done = subprocess.run(
        [sys.executable, "-m", "bureau_node", "audit", "key", "--state-dir",
         str(logged / "state"), "--out", str(key)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bank_node", "receipts", "verify", "--receipts-dir",
             str(mixed), "--bureau-key", str(key), "--export", str(logged / "late.jsonl")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    checked = verify()
    assert checked.returncode == 0 and "BROKEN" not in checked.stderr, checked.stderr
    result = json.loads(checked.stdout)
    assert result["intact"] and result["receipts"] == RECORDS
    assert result["receipts_of_other_logs"] == 2
    assert checked.stderr.count("receipts of another audit log") == 2
    # a receipt naming this log, signed by another key, is still named
    forged = _receipts(logged)[0].to_dict()
    forged["public_key"] = _other_logs_receipts(tmp_path / "forger", 1)[0].public_key
    with (mixed / next(mixed.glob(f"{_receipts(logged)[0].head.log_id}*")).name).open("a") as f:
        f.write(json.dumps(forged) + "\n")
    broken = verify()
    assert broken.returncode == 1 and "signed by another key" in broken.stderr
