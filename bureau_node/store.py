"""The bureau's state directory: its enterprise IDs hashed to the group, and one tag table
per (bank, key epoch), kept across restarts and updated incrementally.

Layout under ``--state-dir``::

    dataset.json            source file, its SHA-256, ID column and type, counts
    ids.npy                 every ID ever seen (UTF-8, append-only)
    points.npy              H(id) for each, 32 bytes (append-only, aligned with ids.npy)
    active.npy              which of them are in the current data file
    bureau-rejects.csv      invalid rows of the current data file
    banks/<bank>/key-<epoch>        the bank's PSI scalar b (mode 0600)
    banks/<bank>/lookup-key-<epoch> the bank's lookup OPRF scalar k, independent of b (0600)
    banks/<bank>/tags-<epoch>.npy   PSI tag of H(id)^b per stored ID (a prefix of ids.npy)
    banks/<bank>/oprf-<epoch>.npy   H(id)^k per stored ID, the keys of lookup tables (0600)
    banks/<bank>/epoch              the current key epoch
    sessions/<id>.json      one finished session: bank, sizes, matched count
    sessions/<id>.matched.csv  the bureau's matched IDs (reveal mode BOTH)

Adding or removing IDs from the data file costs only the added IDs: hashes and tags are
never recomputed for an ID the store already holds.

Two scalars per bank and key epoch, because PSI and lookups are charged to different quotas:
with one scalar, ``(H(x)^a)^b`` from PSI's ``Exponentiate`` (``daily_psi_ids``) would unblind
to the ``H(x)^b`` that opens lookup tables (``daily_lookup_ids``). A state directory of an
earlier version has only ``key-<epoch>``, which served both: :meth:`BureauStore.__init__`
moves such a bank to a new key epoch (see :meth:`BureauStore._retire_shared_keys`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from node_runtime import tables
from protocols import group, lookup, psi
from protocols.errors import (
    InputDataError,
    PolicyViolation,
    QuotaExceeded,
    StaleKeyEpoch,
    UnknownSession,
)
from protocols.ids import IdReject, IdType, IdWarning, prepare_ids

log = logging.getLogger(__name__)

PREPARE_CHUNK = 8192  # IDs per task: long enough to hide the hand-off, short for progress
Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_array(path: Path, array: np.ndarray) -> None:
    tables.atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _load_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def ids_as_strings(ids: np.ndarray) -> pa.Array:
    """The store's UTF-8 ID bytes as a pyarrow string array."""
    return pa.array(ids.tolist(), pa.binary()).cast(pa.string())


@dataclass(frozen=True)
class LookupPoints:
    """What the bureau seals a lookup table with: its current enterprises and their
    ``H(id)^k`` under one bank's lookup scalar ``k`` of a key epoch."""

    key_epoch: int
    ids: np.ndarray  # the current enterprises, UTF-8 bytes
    positions: np.ndarray  # their positions in the store (stable: IDs are only appended)
    every_point: np.ndarray  # (stored IDs, 32) uint8: every ID's point, current or not


@dataclass(frozen=True)
class DatasetSummary:
    source: str
    sha256: str
    id_column: str
    id_type: str
    rows: int
    active: int  # distinct valid IDs in the current file
    rejected: int
    duplicates: int
    added: int  # IDs hashed to the group by this sync (0 when nothing changed)
    seconds: float


class BureauStore:
    def __init__(self, state_dir: str | Path) -> None:
        # 0700 whatever the umask: it holds keys, tag tables and matched IDs
        self.root = tables.private_dir(state_dir)
        tables.private_dir(self.root / "banks")
        tables.private_dir(self.root / "sessions")
        self._ids = np.zeros(0, dtype="S1")
        self._points = np.zeros((0, group.POINT_BYTES), dtype=np.uint8)
        self._active = np.zeros(0, dtype=bool)
        self._version = 0  # bumps whenever the active set changes
        self._bank_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._tables: dict[str, tuple[int, psi.BureauTagTable]] = {}
        self._made_dirs: set[str] = set()
        self._scalars: dict[tuple[str, int], bytes] = {}
        # told when a bank's key epoch begins (its lookup key made): the node records the
        # serving policy it began under
        self.on_new_key_epoch: Callable[[str], None] | None = None
        self._epoch_paths: dict[str, str] = {}
        self._epochs: dict[str, tuple[tuple[int, int, int], int]] = {}
        self.summary: DatasetSummary | None = None
        self._retire_shared_keys()

    # -- the dataset ------------------------------------------------------------------

    def sync_dataset(
        self,
        data_path: str | Path,
        id_column: str,
        id_type: IdType = IdType.USCC,
        executor: Executor | None = None,
        progress: Progress = _no_progress,
        read_options: tables.ReadOptions | None = None,
    ) -> DatasetSummary:
        """Bring the store in line with the data file; hash only IDs not seen before."""
        started = time.perf_counter()
        data_path = Path(data_path)
        if not data_path.exists():
            raise InputDataError(f"{data_path}: no such file")
        digest = file_sha256(data_path)
        meta_path = self.root / "dataset.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        same_universe = meta is not None and (meta["id_type"], meta["id_column"]) == (
            id_type.value,
            id_column,
        )
        if same_universe and meta is not None:
            loaded = self._load_arrays()
            if loaded and meta["sha256"] == digest:
                self.summary = DatasetSummary(
                    **{**meta, "added": 0, "seconds": time.perf_counter() - started}
                )
                log.info("dataset unchanged since last start: %d IDs", self.summary.active)
                return self.summary
            log.info("the data file changed since the last start; updating the store")
        elif meta is not None:
            log.info("ID column or type changed: starting a new store")
            self._reset()

        table = tables.read_table(data_path, id_column, columns=[], options=read_options)
        prepared = prepare_ids(table.column(id_column), id_type)
        where = tables.Whereabouts(data_path, table.num_rows, read_options)
        self._write_rejects(prepared.rejects, prepared.warnings, where)
        current = prepared.as_bytes()
        known_positions, is_known = self._positions_of(current)
        added = current[~is_known]
        if added.size:
            self._append(added, executor, progress)
        positions = known_positions
        positions[~is_known] = np.arange(self._ids.size - added.size, self._ids.size)
        active = np.zeros(self._ids.size, dtype=bool)
        active[positions] = True
        self._active = active
        self._version += 1
        _save_array(self.root / "active.npy", active)
        self.summary = DatasetSummary(
            source=str(data_path.resolve()),
            sha256=digest,
            id_column=id_column,
            id_type=id_type.value,
            rows=prepared.rows,
            active=int(active.sum()),
            rejected=len(prepared.rejects),
            duplicates=prepared.duplicates,
            added=int(added.size),
            seconds=time.perf_counter() - started,
        )
        fields = {k: v for k, v in self.summary.__dict__.items() if k not in ("added", "seconds")}
        tables.atomic_write_bytes(meta_path, json.dumps(fields, indent=2).encode())
        self._tables.clear()
        return self.summary

    def _reset(self) -> None:
        for name in ("ids.npy", "points.npy", "active.npy", "dataset.json"):
            (self.root / name).unlink(missing_ok=True)
        for bank_dir in (self.root / "banks").iterdir():
            for f in [*bank_dir.glob("tags-*.npy"), *bank_dir.glob("oprf-*.npy")]:
                f.unlink()
        self._ids = np.zeros(0, dtype="S1")
        self._points = np.zeros((0, group.POINT_BYTES), dtype=np.uint8)
        self._active = np.zeros(0, dtype=bool)

    def _load_arrays(self) -> bool:
        try:
            self._ids = _load_array(self.root / "ids.npy")
            self._points = _load_array(self.root / "points.npy")
            self._active = _load_array(self.root / "active.npy")
            if self._points.shape != (self._ids.size, group.POINT_BYTES):
                raise ValueError("points.npy does not match ids.npy")
            if self._active.shape != (self._ids.size,) or self._active.dtype != bool:
                raise ValueError("active.npy does not match ids.npy")
        except (OSError, ValueError) as exc:
            log.warning("state directory is incomplete (%s); rebuilding it", exc)
            self._reset()
            return False
        self._version += 1
        return True

    def _positions_of(self, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store positions of ``current`` IDs, and which are in the store at all."""
        positions = np.zeros(current.size, dtype=np.int64)
        if self._ids.size == 0 or current.size == 0:
            return positions, np.zeros(current.size, dtype=bool)
        order = np.argsort(self._ids, kind="stable")
        sorted_ids = self._ids[order]
        where = np.searchsorted(sorted_ids, current)
        inside = where < sorted_ids.size
        found = np.zeros(current.size, dtype=bool)
        found[inside] = sorted_ids[where[inside]] == current[inside]
        positions[found] = order[where[found]]
        return positions, found

    def _append(self, added: np.ndarray, executor: Executor | None, progress: Progress) -> None:
        total = int(added.size)
        log.info("hashing %d new IDs to the group", total)
        spans = list(psi.chunk_offsets(total, PREPARE_CHUNK))
        chunks = (([bytes(x) for x in added[a:b]],) for a, b in spans)
        out = np.empty((total, group.POINT_BYTES), dtype=np.uint8)
        done = 0
        for (a, b), points in zip(spans, psi.ordered_map(executor, group.hash_ids, chunks, 16)):
            out[a:b] = np.frombuffer(points, dtype=np.uint8).reshape(-1, group.POINT_BYTES)
            done = b
            progress(done, total)
        width = max(self._ids.dtype.itemsize, added.dtype.itemsize)
        self._ids = np.concatenate([self._ids.astype(f"S{width}"), added.astype(f"S{width}")])
        self._points = np.concatenate([self._points, out])
        _save_array(self.root / "points.npy", self._points)
        _save_array(self.root / "ids.npy", self._ids)

    def _write_rejects(
        self, rejects: list[IdReject], warnings: list[IdWarning], where: tables.Whereabouts
    ) -> None:
        tables.write_rejects(rejects, self.root / "bureau-rejects.csv", warnings, where)
        if rejects:
            log.warning(
                "%d rows of the bureau's data file have invalid IDs; see %s",
                len(rejects),
                self.root / "bureau-rejects.csv",
            )

    # -- per-bank tag tables ------------------------------------------------------------

    def _bank_dir(self, bank_id: str) -> Path:
        path = self.root / "banks" / bank_id
        if bank_id not in self._made_dirs:  # made (0700) once per process, not per call
            tables.private_dir(path)
            self._made_dirs.add(bank_id)
        return path

    def _lock(self, bank_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._bank_locks.setdefault(bank_id, threading.Lock())

    def key_epoch(self, bank_id: str) -> int:
        """The bank's current key epoch. Asked on every lookup, and ``bureau-node
        rotate-key`` may change it from another process: re-read only when the file was
        replaced (one stat a call, not an open and a read)."""
        path = self._epoch_paths.get(bank_id)
        if path is None:
            path = self._epoch_paths[bank_id] = str(self._bank_dir(bank_id) / "epoch")
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return 1
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._epochs.get(bank_id)
        if cached is not None and cached[0] == seen:
            return cached[1]
        with open(path) as handle:
            epoch = int(handle.read())
        self._epochs[bank_id] = (seen, epoch)
        return epoch

    def _keys(self, bank_id: str, epoch: int) -> tuple[bytes, bytes]:
        """The bank's PSI scalar and lookup scalar of ``epoch``, both made on first use
        (with the bank's lock held). The lookup key is written first, so a PSI key without
        one is only ever a key epoch of an earlier version, whose one scalar served both."""
        directory = self._bank_dir(bank_id)
        psi_path, lookup_path = directory / f"key-{epoch}", directory / f"lookup-key-{epoch}"
        if not (psi_path.exists() and lookup_path.exists()):
            current = self.key_epoch(bank_id)
            if epoch != current:  # rotated by another process since the caller asked
                raise StaleKeyEpoch(
                    f"key epoch {epoch} of bank {bank_id} has ended; the bureau's is now "
                    f"{current}: list the tables again"
                )
        if not lookup_path.exists():
            if psi_path.exists():  # not retired at start: another process wrote it since
                now = self._rotate(bank_id)
                raise StaleKeyEpoch(
                    f"bank {bank_id}'s key epoch {epoch} had one scalar for PSI and lookups "
                    f"(an earlier version's state); it is now key epoch {now} with separate "
                    "keys: list the tables again and download their new versions"
                )
            tables.atomic_write_bytes(lookup_path, group.random_scalar(), mode=0o600)
            if self.on_new_key_epoch is not None:
                self.on_new_key_epoch(bank_id)
        if not psi_path.exists():
            tables.atomic_write_bytes(psi_path, group.random_scalar(), mode=0o600)
            tables.atomic_write_bytes(directory / "epoch", str(epoch).encode())
        keys = psi_path.read_bytes(), lookup_path.read_bytes()
        for key in keys:
            group.check_scalar(key)
        if keys[0] == keys[1]:  # only a hand-copied file could do this: refuse to serve it
            raise ValueError(f"{lookup_path} is the PSI key {psi_path}; rotate the bank's key")
        return keys

    def lookup_scalar(self, bank_id: str, epoch: int) -> bytes:
        """The bank's lookup OPRF key of ``epoch`` (never its PSI scalar: PSI's cheaper
        quota would otherwise open lookup tables); a key never changes within its epoch,
        so it is read from disk once."""
        cached = self._scalars.get((bank_id, epoch))
        if cached is not None:
            return cached
        with self._lock(bank_id):
            scalar = self._keys(bank_id, epoch)[1]
        self._scalars[(bank_id, epoch)] = scalar
        return scalar

    def rotate_key(self, bank_id: str) -> int:
        """Start a new key epoch for a bank: new secret scalars, tags and OPRF points
        recomputed on use."""
        with self._lock(bank_id):
            return self._rotate(bank_id)

    def rotate_lookup_key(self, bank_id: str) -> int:
        """A new key epoch with a new lookup key that keeps the PSI key and its tags (the
        bureau's data changed: what a bank's kept points open must end, while a PSI tag of
        an ID does not change and a big bureau's tags take minutes to make)."""
        with self._lock(bank_id):
            return self._rotate(bank_id, keep_psi_key=True)

    def _rotate(self, bank_id: str, keep_psi_key: bool = False) -> int:
        """The next key epoch, written before the old one's files go: a failure half way
        leaves the old epoch whole (a review's full disk left it without its PSI key, and
        the next use made a new one inside the epoch)."""
        old = self.key_epoch(bank_id)
        new = old + 1
        directory = self._bank_dir(bank_id)
        if keep_psi_key:
            # the lookup key first: a PSI key without one is an earlier version's epoch
            tables.atomic_write_bytes(
                directory / f"lookup-key-{new}", group.random_scalar(), mode=0o600
            )
            for name in ("key-{}", "tags-{}.npy"):  # linked, not moved
                if (directory / name.format(old)).exists():
                    (directory / name.format(new)).unlink(missing_ok=True)
                    os.link(directory / name.format(old), directory / name.format(new))
        tables.atomic_write_bytes(directory / "epoch", str(new).encode())
        for name in (f"key-{old}", f"lookup-key-{old}", f"tags-{old}.npy", f"oprf-{old}.npy"):
            (directory / name).unlink(missing_ok=True)
        self._tables.pop(bank_id, None)
        self._scalars.pop((bank_id, old), None)
        return new

    def _retire_shared_keys(self) -> None:
        """Move every bank whose current key epoch has a PSI key and no lookup key (written
        by a version whose one scalar served both PSI and lookups) to a new key epoch. Its
        lookup tables, sealed under the old scalar, are rebuilt under the new lookup key;
        a bank's kept copies name the old epoch, so it downloads them anew instead of
        opening nothing, and its points of the old epoch are refused as stale. The old
        scalar is deleted: a bank may hold PSI answers under it for any number of IDs."""
        for directory in sorted((self.root / "banks").iterdir()):
            if not directory.is_dir():
                continue
            bank_id = directory.name
            epoch = self.key_epoch(bank_id)
            if (directory / f"key-{epoch}").exists() and not (
                directory / f"lookup-key-{epoch}"
            ).exists():
                now = self.rotate_key(bank_id)
                log.warning(
                    "bank %s: key epoch %d used one scalar for PSI and lookups (a state "
                    "directory of an earlier version); moved to key epoch %d with a lookup "
                    "key of its own: its lookup tables are rebuilt and downloaded anew",
                    bank_id,
                    epoch,
                    now,
                )

    def prepare_bank(
        self, bank_id: str, executor: Executor | None = None
    ) -> Iterator[tuple[int, int] | psi.BureauTagTable]:
        """Yield progress ``(done, total)`` while tags for this bank's key epoch are computed
        (only for IDs without one yet), then the ready :class:`BureauTagTable`."""
        with self._lock(bank_id):
            cached = self._tables.get(bank_id)
            epoch = self.key_epoch(bank_id)  # `bureau-node rotate-key` is another process
            if cached is not None and cached[0] == self._version and cached[1].key_epoch == epoch:
                yield cached[1]
                return
            scalar = self._keys(bank_id, epoch)[0]
            tags = yield from self._prepare_tags(bank_id, epoch, scalar, executor)
            active_tags = tags[self._active]
            order = np.argsort(active_tags, kind="stable")
            table = psi.BureauTagTable(
                key_epoch=epoch,
                scalar=scalar,
                sorted_tags=active_tags[order],
                ids=self._ids[self._active][order],
            )
            self._tables[bank_id] = (self._version, table)
            yield table

    def _prepare_tags(
        self, bank_id: str, epoch: int, scalar: bytes, executor: Executor | None
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Bring the epoch's PSI tags (of ``H(id)^b``) up to the store's IDs, yielding
        progress; only IDs without a tag are computed."""
        path = self._bank_dir(bank_id) / f"tags-{epoch}.npy"
        tags = _load_array(path) if path.exists() else np.zeros(0, psi.TAG_DTYPE)
        first = tags.size if tags.size <= self._ids.size else 0  # 0: the store was rebuilt
        missing = self._ids.size - first
        if missing:
            log.info("bank %s, key epoch %d: preparing tags for %d IDs", bank_id, epoch, missing)
            spans = list(psi.chunk_offsets(missing, PREPARE_CHUNK))
            chunks = (self._points[first + a : first + b].tobytes() for a, b in spans)
            fresh = np.empty(missing, dtype=psi.TAG_DTYPE)
            for (a, b), done in zip(spans, psi.prepare_tags(scalar, chunks, executor)):
                fresh[a:b] = np.frombuffer(done, dtype=psi.TAG_DTYPE)
                yield (b, missing)
            tags = np.concatenate([tags[:first], fresh])
            _save_array(path, tags)
        return tags

    def lookup_points(
        self, bank_id: str, executor: Executor | None = None, progress: Progress = _no_progress
    ) -> LookupPoints:
        """The bureau's current enterprises and their OPRF points ``H(id)^k`` under this
        bank's lookup scalar of its key epoch, in store order; only IDs without a point are
        computed (one scalar multiplication each, with the worker pool)."""
        with self._lock(bank_id):
            epoch = self.key_epoch(bank_id)
            scalar = self._keys(bank_id, epoch)[1]
            path = self._bank_dir(bank_id) / f"oprf-{epoch}.npy"
            points = (
                _load_array(path) if path.exists() else np.zeros((0, group.POINT_BYTES), np.uint8)
            )
            first = points.shape[0] if points.shape[0] <= self._ids.size else 0
            missing = self._ids.size - first
            if missing:
                log.info(
                    "bank %s, key epoch %d: preparing lookup points for %d IDs",
                    bank_id,
                    epoch,
                    missing,
                )
                spans = list(psi.chunk_offsets(missing, PREPARE_CHUNK))
                chunks = (self._points[first + a : first + b].tobytes() for a, b in spans)
                fresh = np.empty((missing, group.POINT_BYTES), dtype=np.uint8)
                for (a, b), done in zip(spans, lookup.oprf_points(scalar, chunks, executor)):
                    fresh[a:b] = np.frombuffer(done, np.uint8).reshape(b - a, group.POINT_BYTES)
                    progress(b, missing)
                points = np.concatenate([points[:first], fresh])
                _save_array(path, points)
            return LookupPoints(
                key_epoch=epoch,
                ids=self._ids[self._active],
                positions=np.flatnonzero(self._active),
                every_point=points[: self._ids.size],
            )

    def tag_table(self, bank_id: str, executor: Executor | None = None) -> psi.BureauTagTable:
        for item in self.prepare_bank(bank_id, executor):
            if isinstance(item, psi.BureauTagTable):
                return item
        raise AssertionError("prepare_bank ended without a table")

    # -- finished sessions --------------------------------------------------------------

    def record_session(self, record: dict[str, Any], matched_ids: list[str] | None) -> None:
        directory = self.root / "sessions"
        session_id = record["session_id"]
        if matched_ids is not None:
            id_column = self.summary.id_column if self.summary else "id"
            tables.write_csv(
                pa.table({id_column: pa.array(matched_ids, pa.string())}),
                directory / f"{session_id}.matched.csv",
            )
        tables.atomic_write_bytes(
            directory / f"{session_id}.json", json.dumps(record, indent=2).encode()
        )

    def use_session_once(self, bank_id: str, session_id: str, purpose: str) -> None:
        """Refuse a second use of a PSI session for ``purpose``: binning the same rows twice
        with different labels would let a bank single rows out of the bins."""
        self.session_size(bank_id, session_id)  # exists, is this bank's, revealed
        marker = self.root / "sessions" / f"{session_id}.{purpose}"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise PolicyViolation(
                f"PSI session {session_id} was already used for {purpose}: run PSI again"
            ) from None
        os.close(fd)

    def release_session_use(self, session_id: str, purpose: str) -> None:
        """Undo ``use_session_once`` for a request refused before it used the session (a
        quota): a review's refused IV request had burnt its PSI session for good."""
        (self.root / "sessions" / f"{session_id}.{purpose}").unlink(missing_ok=True)

    def count_session_use(self, bank_id: str, session_id: str, purpose: str, limit: int) -> int:
        """Count one more use of a PSI session for ``purpose`` (a trained model), refused
        beyond ``limit``: each model on the same rows gives the bank another view of them."""
        self.session_size(bank_id, session_id)  # exists, is this bank's, revealed
        path = self.root / "sessions" / f"{session_id}.{purpose}"
        with self._lock(bank_id):
            used = int(path.read_text()) if path.exists() else 0
            if used >= limit:
                raise QuotaExceeded(
                    f"PSI session {session_id} was already used for {used} {purpose}, the "
                    f"bureau's limit per session (max_models_per_session): run PSI again"
                )
            tables.atomic_write_bytes(path, str(used + 1).encode())
        return used + 1

    def session_size(self, bank_id: str, session_id: str) -> int:
        """How many IDs a finished PSI session of this bank (reveal mode BOTH) matched, from
        its small record: checked before its IDs are read (a review's bank named its own
        session of 1,000,000 IDs in 70-byte requests refused on their row count, each after
        the bureau had read the whole file: 0.11 s of its CPU and 400 MB)."""
        directory = self.root / "sessions"
        record_path = directory / f"{session_id}.json"
        if not session_id.isalnum() or not record_path.exists():
            raise UnknownSession(f"no finished PSI session {session_id!r}")
        record = json.loads(record_path.read_text())
        if record.get("bank_id") != bank_id:
            raise UnknownSession(f"no finished PSI session {session_id!r} for bank {bank_id}")
        if not (directory / f"{session_id}.matched.csv").exists():
            raise PolicyViolation(
                f"PSI session {session_id} was run in reveal mode 'bank': the bureau does not "
                "know its matched IDs; run PSI with --reveal both to train or score"
            )
        return int(record.get("matched") or 0)

    def session_matched_ids(self, bank_id: str, session_id: str) -> list[str]:
        """The matched IDs of a finished PSI session of this bank (reveal mode BOTH), sorted
        (the order both parties hold the rows in)."""
        self.session_size(bank_id, session_id)  # this bank's, and revealed to the bureau
        matched_path = self.root / "sessions" / f"{session_id}.matched.csv"
        id_column = self.summary.id_column if self.summary else "id"
        try:
            table = tables.read_table(matched_path, id_column)
        except InputDataError:  # an empty intersection: a header and no rows
            return []
        return [str(v) for v in table.column(id_column).to_pylist()]
