"""The bank's own evidence of what the bureau recorded about its calls: the receipts the
bureau sends back with every answer its audit log covers (trailing metadata
``x-xinrong-receipt-bin``), kept as JSON lines under the receipts directory, one file per
bureau audit log (named by the log's id, the hash of its public key).

``verify`` checks every receipt's signature (against the bureau's audit public key when
given, as ``bureau-node audit key`` exports it) and, given the bureau's export of its log
(``bureau-node audit export``), that every receipt's record is still there, in its place,
under a later head the bureau signed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node_runtime.cli_common import print_result
from node_runtime.transport.channels import RECEIPT_METADATA
from protocols import merkle
from protocols.errors import InputDataError
from protocols.transparency import (
    MAX_RECEIPT_BYTES,
    RECORD_FIELDS,
    Receipt,
    SignedHead,
    check_log,
    leaf_bytes,
    log_id,
)

log = logging.getLogger(__name__)

RECEIPTS_ENV = "XINRONG_RECEIPTS_DIR"
MAX_RECEIPTS_PER_CALL = 64
SYNC_SECONDS = 0.5  # receipts of online decisions reach the disk at least this often
VERIFIED_HEADS = 64  # heads remembered as checked (the records of a commit share one)


def default_receipts_dir() -> Path:
    return Path(os.environ.get(RECEIPTS_ENV) or Path.home() / ".xinrong" / "receipts")


BANK_FILE = "bank-id"  # whose receipts a directory keeps: what `verify` checks them against


class ReceiptStore:
    def __init__(self, directory: str | Path | None = None, bank_id: str | None = None) -> None:
        self.directory = Path(directory) if directory else default_receipts_dir()
        self.bank_id = bank_id
        self._lock = threading.Lock()
        self._made = False
        # the files of online decisions' receipts stay open between writes (an open and a
        # close each would cost a decision more than its write); closed at sync()
        self._open: dict[Path, TextIO] = {}
        self._unsynced: set[Path] = set()
        self._synced = time.monotonic()

    def add(self, receipts: list[Receipt], sync: bool = True) -> None:
        """Append (one write per audit log). ``sync``: on disk before this returns (one
        fsync per log). Without it, in the operating system's hands at once (a crash of
        this process loses nothing), and on disk with the first write ``SYNC_SECONDS``
        later, or at ``sync()`` (the connection's close):
        the receipts of online decisions, where an fsync each would cost more than the
        decision (a machine crash can lose the last second's; the bureau's log keeps
        their records)."""
        lines: dict[str, list[str]] = {}
        for r in receipts:
            lines.setdefault(r.head.log_id, []).append(json.dumps(r.to_dict()) + "\n")
        with self._lock:
            if not self._made:  # once, not per decision
                # private: the receipts say when the bank called and for what
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.directory.chmod(0o700)
                self._remember_bank()
                self._made = True
            for log_id, text in lines.items():
                path = self.directory / self._file_name(log_id)
                handle = self._open.get(path)
                if handle is None:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    handle = self._open[path] = os.fdopen(fd, "a")
                handle.write("".join(text))
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
                else:
                    self._unsynced.add(path)
            if sync or (self._unsynced and time.monotonic() - self._synced >= SYNC_SECONDS):
                self._sync_locked()

    def _file_name(self, log_id: str) -> str:
        """A file per audit log and bank: a machine running two banks kept both's receipts
        in one file, and `verify --bank` then named the other's BROKEN (a review)."""
        return f"{log_id}.{self.bank_id}.jsonl" if self.bank_id else f"{log_id}.jsonl"

    def _remember_bank(self) -> None:
        """The banks that kept receipts here, one a line (a machine may run several)."""
        if self.bank_id is None or self.bank_id in self._banks():
            return
        fd = os.open(self.directory / BANK_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(self.bank_id + "\n")

    def _banks(self) -> list[str]:
        try:
            return (self.directory / BANK_FILE).read_text().split()
        except OSError:
            return []

    def stored_bank(self) -> str | None:
        """The bank whose receipts this directory keeps; None when not said (older files) or
        several banks kept theirs here (then ``verify --bank`` names it)."""
        banks = self._banks()
        return banks[0] if len(banks) == 1 else None

    def sync(self) -> None:
        """Every receipt written so far, on disk; the files closed."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        for path, handle in self._open.items():
            try:
                if path in self._unsynced:
                    os.fsync(handle.fileno())
            except OSError as exc:  # evidence-keeping never breaks a call
                log.warning("the bank's audit receipts in %s were not synced: %s", path, exc)
            finally:
                handle.close()
        self._open.clear()
        self._unsynced.clear()
        self._synced = time.monotonic()

    def load(self, bank_id: str | None = None) -> list[Receipt]:
        """The receipts kept here; with ``bank_id``, that bank's (and those of files from
        before a file per bank, which name no bank)."""
        out: list[Receipt] = []
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.jsonl")):
            owner = path.name.removesuffix(".jsonl").partition(".")[2]
            if bank_id is not None and owner not in ("", bank_id):
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    out.append(Receipt.from_dict(json.loads(line)))
                except (json.JSONDecodeError, InputDataError) as exc:
                    raise InputDataError(f"{path}:{number}: not a receipt ({exc})") from None
        return out


def parse_receipts(
    value: bytes, verified: set[tuple[str, SignedHead]] | None = None
) -> list[Receipt]:
    """The receipts of one call, from the bureau (untrusted: sizes, shapes, signatures).
    ``verified``: heads whose signatures were checked already (the records the bureau
    commits together share a head), updated with the ones checked here."""
    if len(value) > MAX_RECEIPT_BYTES * MAX_RECEIPTS_PER_CALL:
        raise InputDataError("the bureau's receipts are too large")
    items = json.loads(value)
    if not isinstance(items, list) or len(items) > MAX_RECEIPTS_PER_CALL:
        raise InputDataError("the bureau's receipts are not a list")
    receipts = [Receipt.from_dict(item) for item in items]
    checked = set() if verified is None else verified
    for r in receipts:
        signed = (r.public_key, r.head)  # every field the signature covers, and the key
        if signed not in checked:
            r.verify()
            checked.add(signed)
    return receipts


@dataclass
class ReceiptCollector(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A client interceptor that keeps every receipt the bureau sends, when the call ends."""

    store: ReceiptStore
    kept: int = 0  # how many (a count, not the receipts: a decision service runs for months)
    # heads already checked: the latest few (a commit's records share one)
    _verified: set[tuple[str, SignedHead]] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # the bureau's audit log, as its first receipt on this connection names it: a bureau
    # keeps one log, and a hostile one signing each receipt with a fresh key made the bank
    # open a file per receipt (3,841 in 3 s) until its own open() failed (EMFILE)
    log_id: str | None = field(default=None, init=False)

    def keep(self, value: bytes, sync: bool = True) -> None:
        """Check and keep receipts as the bureau encodes them (trailing metadata, or a
        stream's answer: ``sync`` False, see ``ReceiptStore.add``); a bad one is logged,
        never raised: evidence-keeping does not break a call."""
        try:
            with self._lock:
                if len(self._verified) > VERIFIED_HEADS:
                    self._verified.clear()
                receipts = parse_receipts(value, self._verified)
                self.log_id = self.log_id or (receipts[0].head.log_id if receipts else None)
                other = {r.head.log_id for r in receipts} - {self.log_id}
                if other:
                    raise InputDataError(
                        f"receipts of audit log {min(other)[:16]}, where this connection's "
                        f"are of {str(self.log_id)[:16]}: a bureau keeps one log (if its "
                        "operator rebuilt its state, connect again)"
                    )
                self.kept += len(receipts)
            self.store.add(receipts, sync)
        except Exception as exc:  # noqa: BLE001
            log.warning("an audit receipt from the bureau was not kept: %s", exc)

    def _collect(self, call: Any) -> None:
        try:
            metadata = call.trailing_metadata() or ()
        except Exception as exc:  # noqa: BLE001
            log.warning("an audit receipt from the bureau was not kept: %s", exc)
            return
        for key, value in metadata:
            if key == RECEIPT_METADATA:
                self.keep(value)

    def _intercept(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        call = continuation(details, request)
        call.add_done_callback(self._collect)
        return call

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._intercept(continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._intercept(continuation, details, requests)


def load_public_key(path: str | Path) -> bytes:
    """The bureau's audit public key (PEM, from ``bureau-node audit key``), raw bytes."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: not the bureau's audit public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputDataError(f"{path}: not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def read_export(path: str | Path) -> tuple[list[bytes], SignedHead, bytes, list[str]]:
    """The leaf hashes of a full export (recomputed from the records), its head, its key,
    and the bank of each record."""
    leaves: list[bytes] = []
    banks: list[str] = []
    head: SignedHead | None = None
    key = b""
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        item = json.loads(line)
        if "signed_head" in item:
            head = SignedHead.from_dict(item["signed_head"])
            key = bytes.fromhex(item["public_key"])
            continue
        if item.get("seq") != len(leaves) + 1:
            raise InputDataError(
                f"{path}:{number}: records are not numbered from 1 without gaps: an export "
                "made with --since cannot check receipts; export the whole log"
            )
        leaves.append(merkle.leaf_hash(leaf_bytes(*(item[f] for f in RECORD_FIELDS))))
        banks.append(item["bank_id"])
    if head is None:
        raise InputDataError(f"{path}: no signed head in it (an export of `bureau-node audit`)")
    return leaves, head, key, banks


def _one_bank(owners: dict[int, str | None], bank_id: str | None) -> list[str]:
    """A bank's receipts are for its own calls: every record they name is this bank's
    (``bank_id``; when not known, at least all the same bank's). ``None``: the bureau said
    it is another bank's. Without the check on whose, a bureau that recorded none of this
    bank's calls could answer each with a receipt of one record of another bank's."""
    problems = [
        f"record {index + 1} is another bank's: its receipt was not for a call of this bank"
        for index, bank in sorted(owners.items())
        if bank is None or (bank_id is not None and bank != bank_id)
    ]
    banks = {bank for bank in owners.values() if bank is not None}
    if len(banks) > 1:
        problems.append(
            f"the receipts name records of {len(banks)} banks ({', '.join(sorted(banks))}): "
            "a bank's receipts are for its own calls"
        )
    return problems


def _other_logs(receipts: list[Receipt], log_id: str, what: str) -> list[str]:
    """Receipts of another audit log than the one shown are not checked by it: said, so
    that a proof or an export of a second log (another key) does not pass for this one."""
    return [
        f"the receipt for record {r.index + 1} is of audit log {r.head.log_id[:16]}, not "
        f"{log_id[:16]} of the {what}: the {what} does not cover it"
        for r in receipts
        if r.head.log_id != log_id
    ]


def verify_proof(
    receipts: list[Receipt],
    path: str | Path,
    public_key: bytes | None,
    bank_id: str | None = None,
) -> list[str]:
    """Problems with the bureau's log shown by its proof (``bureau-node audit prove``): every
    receipt's record must be in the latest signed head's tree, and every receipt's head a
    prefix of that tree."""
    try:
        data = json.loads(Path(path).read_text())
        head = SignedHead.from_dict(data["signed_head"])
        head.verify(public_key or bytes.fromhex(data["public_key"]))
        proofs = {(int(p["index"]), int(p["head_size"])): p for p in data["proofs"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputDataError(f"{path}: not a proof of `bureau-node audit prove` ({exc})") from None
    problems = _other_logs(receipts, head.log_id, "proof")
    owners: dict[int, str | None] = {}
    for r in receipts:
        if r.head.log_id != head.log_id:
            continue
        number = r.index + 1
        if r.head.size > head.size:
            problems.append(
                f"the log was truncated: the bureau's latest head covers {head.size} records, "
                f"but the receipt for record {number} shows {r.head.size}"
            )
            continue
        proof = proofs.get((r.index, r.head.size))
        if proof is None:
            problems.append(f"the bureau gave no proof for record {number}")
            continue
        record = proof.get("record")
        if record is None:
            owners[r.index] = None
        elif not (isinstance(record, list) and len(record) == len(RECORD_FIELDS)) or (
            merkle.leaf_hash(leaf_bytes(*(str(v) for v in record))).hex() != r.leaf_hash
        ):
            problems.append(f"record {number} as the bureau shows it is not what its receipt names")
        else:
            owners[r.index] = str(record[1])
        try:
            merkle.verify_consistency(
                r.head.size,
                head.size,
                bytes.fromhex(r.head.root),
                bytes.fromhex(head.root),
                [bytes.fromhex(h) for h in proof["consistency"]],
            )
            merkle.verify_inclusion(
                r.index,
                head.size,
                bytes.fromhex(r.leaf_hash),
                [bytes.fromhex(h) for h in proof["inclusion"]],
                bytes.fromhex(head.root),
            )
        except (merkle.ProofError, ValueError) as exc:
            problems.append(
                f"record {number} is not in the bureau's log as its receipt says: {exc}"
            )
    return problems + _one_bank(owners, bank_id)


def verify(
    receipts: list[Receipt],
    public_key: bytes | None = None,
    export: str | Path | None = None,
    proof: str | Path | None = None,
    bank_id: str | None = None,
) -> list[str]:
    """Problems with the receipts and, given an export or a proof, with the bureau's log;
    with ``bank_id``, every record the receipts name must be that bank's."""
    problems: list[str] = []
    good: list[Receipt] = []
    for r in receipts:
        try:
            r.verify(public_key)
            good.append(r)
        except InputDataError as exc:
            problems.append(str(exc))
    roots: dict[tuple[str, int], set[str]] = {}
    for r in good:
        roots.setdefault((r.head.log_id, r.head.size), set()).add(r.head.root)
    for (_, size), found in roots.items():
        if len(found) > 1:  # proof on its own: the bureau contradicted itself
            problems.append(f"the bureau signed {len(found)} different logs of {size} records")
    calls: dict[tuple[str, int], int] = {}
    for r in good:
        calls[(r.head.log_id, r.index)] = calls.get((r.head.log_id, r.index), 0) + 1
    problems += [
        f"record {index + 1} was given as the receipt of {count} calls: a record is one "
        "call's, so the bureau answered a call without recording it"
        for (_, index), count in sorted(calls.items())
        if count > 1
    ]
    if public_key is None and len({r.public_key for r in good}) > 1:
        problems.append(
            f"the receipts are signed with {len({r.public_key for r in good})} different audit "
            "keys: check them against the bureau's (--bureau-key)"
        )
    if proof is not None:
        problems.extend(verify_proof(good, proof, public_key, bank_id))
    if export is None:
        return problems
    leaves, head, key, banks = read_export(export)
    try:
        head.verify(public_key or key)
    except InputDataError as exc:
        return [*problems, f"the export's {exc}"]
    mine = [r for r in good if r.head.log_id == head.log_id]
    problems.extend(_other_logs(good, head.log_id, "export"))
    if head.size != len(leaves):
        problems.append(f"the export holds {len(leaves)} records but its head signs {head.size}")
    problems.extend(check_log(leaves, [head], mine))
    owners: dict[int, str | None] = {r.index: banks[r.index] for r in mine if r.index < len(banks)}
    problems.extend(_one_bank(owners, bank_id))
    return problems


def of_log(receipts: list[Receipt], public_key: bytes) -> tuple[list[Receipt], dict[str, int]]:
    """The receipts that name the log of ``public_key``, and how many name each other log.
    A receipts directory can hold another bureau's (a test bureau's, or this one's before
    its state was rebuilt): checked against this key they all read as forged, and a review's
    ``receipts verify`` reported 12,057 BROKEN lines. One that names this log but is signed
    by another key is kept here, and named as forged by ``verify``."""
    mine_id = log_id(public_key)
    mine = [r for r in receipts if r.head.log_id == mine_id]
    aside = Counter(r.head.log_id for r in receipts if r.head.log_id != mine_id)
    return mine, dict(aside)


def cmd_receipts(args: argparse.Namespace) -> int:
    store = ReceiptStore(args.receipts_dir)
    receipts = store.load(getattr(args, "bank", None) or store.stored_bank())
    if args.receipts_command == "list":
        for r in receipts:
            print(
                f"record {r.index + 1:<8} head {r.head.size:<8} {r.head.time}  "
                f"log {r.head.log_id[:16]}  leaf {r.leaf_hash[:16]}",
                file=sys.stderr,
            )
        print_result({"receipts": len(receipts), "dir": str(store.directory)})
        return 0
    if not receipts:
        raise InputDataError(f"no receipts in {store.directory}")
    key = load_public_key(args.bureau_key) if args.bureau_key else None
    aside: dict[str, int] = {}
    if key is not None:
        receipts, aside = of_log(receipts, key)
        for other, count in aside.items():
            print(
                f"note: {count} receipts of another audit log ({other[:16]}: another bureau, "
                "or one whose state was rebuilt) are not checked against this key",
                file=sys.stderr,
            )
        if not receipts:
            raise InputDataError(
                f"no receipts of this bureau's audit log in {store.directory} (only of "
                f"{len(aside)} other logs): is --bureau-key the right bureau's?"
            )
    bank_id = args.bank or store.stored_bank()
    problems = verify(receipts, key, args.export, args.proof, bank_id)
    for problem in problems:
        print(f"BROKEN: {problem}", file=sys.stderr)
    print_result(
        {
            "receipts": len(receipts),
            "receipts_of_other_logs": sum(aside.values()),
            "signatures_checked_against": "bureau key" if key else "each receipt's own key",
            "log_checked": bool(args.export or args.proof),
            "records_checked_as_of_bank": bank_id,
            "intact": not problems,
            "problems": problems,
        }
    )
    return 0 if not problems else 1


def add_receipts_parser(sub: Any) -> None:
    """``bank-node receipts list|verify`` (kept here, self-contained)."""
    receipts = sub.add_parser("receipts", help="the bureau's audit receipts this bank holds")
    receipts_sub = receipts.add_subparsers(dest="receipts_command", required=True)
    listing = receipts_sub.add_parser("list", help="one line per receipt")
    checking = receipts_sub.add_parser(
        "verify",
        help="check the receipts' signatures and, given the bureau's export, that every "
        "record is still in its log (exit status 1 if not)",
    )
    checking.add_argument(
        "--bureau-key", default=None, help="the bureau's audit public key (bureau-node audit key)"
    )
    checking.add_argument(
        "--export", default=None, help="the bureau's full export (bureau-node audit export)"
    )
    checking.add_argument(
        "--bank",
        default=None,
        help="the bank whose receipts these are: every record they name must be its own "
        "(default: the bank the receipts directory was kept for)",
    )
    checking.add_argument(
        "--proof",
        default=None,
        help="the bureau's proof for these receipts (bureau-node audit prove): checks the "
        "records without seeing other banks'",
    )
    for p in (listing, checking):
        p.add_argument(
            "--receipts-dir",
            default=None,
            help=f"where the receipts are kept (default: ${RECEIPTS_ENV} or ~/.xinrong/receipts)",
        )
        p.set_defaults(func=cmd_receipts, quiet=False, log_level="WARNING")
