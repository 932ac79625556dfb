"""Unbalanced ECDH private set intersection over Ristretto255 (design notes, section 3).

The bureau holds a large, slowly changing set Y and a secret scalar ``b`` per (bank, key
epoch); it precomputes tags ``T = {trunc(SHA-256(H(y)^b))}``. A bank session:

1. bank -> bureau  :class:`PsiRequest`       its set size and reveal mode
2. bureau -> bank  :class:`PsiParams`        session id, bureau set size, tag length
3. bank -> bureau  :class:`BlindedIds`       ``H(x)^a`` in a shuffled order, in chunks
4. bureau -> bank  :class:`ExponentiatedIds` ``(H(x)^a)^b`` in the same order
5. bureau -> bank  :class:`BureauTags`       ``T``, sorted, in chunks
6. bank            unblinds ``H(x)^b = ((H(x)^a)^b)^(1/a)``, tags and looks each up in ``T``
7. bank -> bureau  :class:`MatchedTags`      only in reveal mode BOTH: the matched tags,
                                             which the bureau maps back to its own IDs

This is the DH-based PSI of Meadows (1986) / Huberman, Franklin and Hogg (1999) in the
unbalanced, precomputed-server-set form (as in Kiss et al., "Private Set Intersection for
Unequal Set Sizes with Mobile Applications", PETS 2017), secure against semi-honest parties
under the DDH assumption in the random-oracle model.

Each party is a small state machine; messages are plain dataclasses and the caller moves
them (tests run both in one process, the nodes move them over gRPC). Heavy work is handed
to an optional :class:`concurrent.futures.Executor` in chunks.
"""

from __future__ import annotations

import enum
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from . import group
from .errors import PolicyViolation, ProtocolViolation, WrongStage

PROTOCOL = "xinrong/psi/ecdh-ristretto255/v1"
TAG_DTYPE = np.dtype("<u8")  # a tag's 8 bytes read as one number, the same on both sides
DEFAULT_CHUNK = 4096  # points per message: 128 KiB, far below gRPC's message limits
MAX_CHUNK = 65536  # points (2 MiB) or tags (512 KiB) per message, at most

T = TypeVar("T")


class Reveal(enum.Enum):
    BOTH = "both"  # both parties learn the intersection (needed for training)
    BANK = "bank"  # only the bank learns it; the bureau learns the set sizes


@dataclass(frozen=True)
class PsiRequest:
    bank_set_size: int
    reveal: Reveal
    protocol: str = PROTOCOL


@dataclass(frozen=True)
class PsiParams:
    session_id: str
    bureau_set_size: int
    key_epoch: int
    tag_bytes: int = group.TAG_BYTES
    max_chunk: int = MAX_CHUNK
    protocol: str = PROTOCOL


@dataclass(frozen=True)
class BlindedIds:
    session_id: str
    offset: int
    points: bytes


@dataclass(frozen=True)
class ExponentiatedIds:
    session_id: str
    offset: int
    points: bytes


@dataclass(frozen=True)
class BureauTags:
    session_id: str
    offset: int
    tags: bytes


@dataclass(frozen=True)
class MatchedTags:
    session_id: str
    tags: bytes


@dataclass(frozen=True)
class RevealSummary:
    session_id: str
    matched: int


@dataclass(frozen=True)
class PsiLimits:
    """The bureau's guards on a session."""

    max_bank_set_size: int = 10_000_000
    max_chunk: int = MAX_CHUNK
    min_intersection: int = 0  # below it, reveal mode BOTH is refused


@dataclass(frozen=True)
class BureauTagTable:
    """The bureau's prepared tags for one (bank, key epoch), with the IDs behind them.

    ``sorted_tags`` is ascending; ``ids[i]`` is the ID whose tag is ``sorted_tags[i]``
    (``str``, or UTF-8 ``bytes`` as a bureau stores them).
    """

    key_epoch: int
    scalar: bytes = field(repr=False)
    sorted_tags: np.ndarray
    ids: Sequence[str] | np.ndarray

    @property
    def size(self) -> int:
        return int(self.sorted_tags.size)


def ordered_map(
    executor: Executor | None,
    fn: Callable[..., T],
    args: Iterable[tuple[Any, ...]],
    window: int = 8,
) -> Iterator[T]:
    """``fn(*a)`` for each ``a``, in order, with at most ``window`` chunks in flight so that
    memory stays bounded however long the input."""
    pending: deque[Future[T]] = deque()
    try:
        for a in args:
            pending.append(run(executor, fn, *a))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def run(executor: Executor | None, fn: Callable[..., T], *args: Any) -> Future[T]:
    """Submit to the executor, or run now and return a finished future."""
    if executor is not None:
        return executor.submit(fn, *args)
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        future.set_exception(exc)
    return future


def chunk_offsets(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(total, start + chunk)


def tags_of(data: bytes) -> np.ndarray:
    if len(data) % group.TAG_BYTES:
        raise ProtocolViolation(f"tags are {group.TAG_BYTES} bytes each; got {len(data)} bytes")
    return np.frombuffer(data, dtype=TAG_DTYPE)


def prepare_tags(
    scalar: bytes, points: Iterable[bytes], executor: Executor | None = None
) -> Iterator[bytes]:
    """The bureau's one-time work per (bank, key epoch): tags of ``H(y)^b`` for chunks of
    precomputed ``H(y)``. Yields one tag chunk per point chunk, in order."""
    return ordered_map(executor, group.exponentiate_and_tag, ((scalar, c) for c in points))


def check_request(request: PsiRequest, limits: PsiLimits) -> None:
    """The bureau's checks on a session request, before any work is done for it."""
    if request.protocol != PROTOCOL:
        raise ProtocolViolation(
            f"the bank speaks {request.protocol[:40]!r}; this bureau speaks {PROTOCOL!r}"
        )
    if request.bank_set_size < 0:
        raise ProtocolViolation("bank set size is negative")
    if request.bank_set_size > limits.max_bank_set_size:
        raise PolicyViolation(
            f"the bank announced {request.bank_set_size:,} IDs; this bureau accepts at "
            f"most {limits.max_bank_set_size:,} per session"
        )


class BureauStage(enum.Enum):
    OPEN = "open"  # waiting for blinded IDs
    EXPONENTIATED = "exponentiated"  # all announced IDs exponentiated
    REVEALED = "revealed"  # matched tags received and mapped
    FAILED = "failed"


class BureauPsiSession:
    """The bureau's side of one bank session."""

    def __init__(
        self,
        table: BureauTagTable,
        request: PsiRequest,
        limits: PsiLimits = PsiLimits(),
        session_id: str | None = None,
    ) -> None:
        check_request(request, limits)
        self.table = table
        self.request = request
        self.limits = limits
        self.session_id = session_id or secrets.token_hex(16)
        self.stage = BureauStage.OPEN
        self.received = 0  # blinded IDs accepted so far
        self._matched_positions: list[np.ndarray] = []
        self._matched_count = 0
        self.matched_ids: list[str] | None = None
        if request.bank_set_size == 0:
            self.stage = BureauStage.EXPONENTIATED

    @property
    def params(self) -> PsiParams:
        return PsiParams(
            session_id=self.session_id,
            bureau_set_size=self.table.size,
            key_epoch=self.table.key_epoch,
            max_chunk=self.limits.max_chunk,
        )

    def _expect(self, *stages: BureauStage) -> None:
        if self.stage not in stages:
            wanted = " or ".join(s.value for s in stages)
            raise WrongStage(
                f"session {self.session_id} is at stage {self.stage.value!r}; this message "
                f"needs stage {wanted!r}"
            )

    def _fail(self) -> None:
        self.stage = BureauStage.FAILED

    def exponentiate(
        self, msg: BlindedIds, executor: Executor | None = None
    ) -> Future[ExponentiatedIds]:
        """Check a chunk of blinded IDs and start ``(H(x)^a)^b`` on it."""
        self._expect(BureauStage.OPEN)
        try:
            count, rest = divmod(len(msg.points), group.POINT_BYTES)
            if rest or count == 0:
                raise ProtocolViolation(
                    f"a chunk of blinded IDs must be a non-empty multiple of "
                    f"{group.POINT_BYTES} bytes; got {len(msg.points)} bytes"
                )
            if count > self.limits.max_chunk:
                raise ProtocolViolation(
                    f"chunk of {count} blinded IDs exceeds the limit of {self.limits.max_chunk}"
                )
            if msg.offset != self.received:
                raise ProtocolViolation(
                    f"chunk starts at offset {msg.offset}; expected {self.received}"
                )
            if self.received + count > self.request.bank_set_size:
                raise ProtocolViolation(
                    f"the bank sent more blinded IDs than the {self.request.bank_set_size} "
                    "it announced"
                )
        except ProtocolViolation:
            self._fail()
            raise
        self.received += count
        if self.received == self.request.bank_set_size:
            self.stage = BureauStage.EXPONENTIATED
        return run(executor, _exponentiate_message, self.table.scalar, msg)

    def blinded_stream_ended(self) -> None:
        """The bank closed its stream of blinded IDs: it must have sent all it announced."""
        if self.received != self.request.bank_set_size:
            self._fail()
            raise ProtocolViolation(
                f"the bank's stream ended after {self.received} of the "
                f"{self.request.bank_set_size} blinded IDs it announced"
            )

    def tags(self, chunk: int = MAX_CHUNK) -> Iterator[BureauTags]:
        """The bureau's sorted tag table, in chunks: once the bank's blinded IDs are all in
        (a review fetched whole tables from sessions that never sent one)."""
        self._expect(BureauStage.EXPONENTIATED, BureauStage.REVEALED)  # now, not at next()
        data = self.table.sorted_tags
        return (
            BureauTags(self.session_id, start, data[start:stop].tobytes())
            for start, stop in chunk_offsets(data.size, chunk)
        )

    def receive_matched(self, msg: MatchedTags) -> None:
        """Map a chunk of the bank's matched tags to the bureau's own IDs."""
        if self.request.reveal is not Reveal.BOTH:
            raise WrongStage(
                f"session {self.session_id} was opened with reveal mode "
                f"{self.request.reveal.value!r}: the bureau takes no matched IDs"
            )
        self._expect(BureauStage.EXPONENTIATED)
        try:
            tags = tags_of(msg.tags)
            if tags.size == 0 and self._matched_positions:
                # an empty intersection is one empty chunk; more of them only keep a stream
                # (and its server thread) open without progress
                raise ProtocolViolation("an empty chunk of matched tags after the first")
            if tags.size > self.limits.max_chunk:
                raise ProtocolViolation(
                    f"chunk of {tags.size} matched tags exceeds the limit of "
                    f"{self.limits.max_chunk}"
                )
            if self._matched_count + tags.size > self.request.bank_set_size:
                raise ProtocolViolation("the bank sent more matched tags than it has IDs")
            table = self.table.sorted_tags
            positions = np.searchsorted(table, tags)
            inside = positions < table.size
            known = np.zeros(tags.size, dtype=bool)
            known[inside] = table[positions[inside]] == tags[inside]
            if not known.all():
                first = int(np.flatnonzero(~known)[0])
                raise ProtocolViolation(
                    f"matched tag #{self._matched_count + first} is not in the bureau's table"
                )
        except ProtocolViolation:
            self._fail()
            raise
        self._matched_positions.append(positions)
        self._matched_count += int(tags.size)

    def finish_reveal(self) -> RevealSummary:
        self._expect(BureauStage.EXPONENTIATED)
        positions = (
            np.concatenate(self._matched_positions)
            if self._matched_positions
            else np.zeros(0, dtype=np.int64)
        )
        if np.unique(positions).size != positions.size:
            self._fail()
            raise ProtocolViolation("the bank sent the same matched tag twice")
        if positions.size < self.limits.min_intersection:
            self._fail()
            raise PolicyViolation(
                f"the intersection has {positions.size} IDs; the bureau reveals none below "
                f"{self.limits.min_intersection} (a joint model needs that many; to learn only "
                "which of these clients the bureau knows, run psi with --reveal bank)"
            )
        ids = self.table.ids
        # sorted by ID, as the bank sorts its own: the rows' order on both sides from here
        # on, the same for the same clients in every session (a seeded split then holds
        # back the same clients whatever the key epoch)
        self.matched_ids = sorted(_text(ids[p]) for p in positions.tolist())
        self.stage = BureauStage.REVEALED
        return RevealSummary(self.session_id, len(self.matched_ids))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _exponentiate_message(scalar: bytes, msg: BlindedIds) -> ExponentiatedIds:
    points = group.exponentiate(scalar, msg.points, "blinded ID", msg.offset)
    return ExponentiatedIds(msg.session_id, msg.offset, points)


class BankStage(enum.Enum):
    NEW = "new"
    BLINDING = "blinding"  # params accepted; exchanging blinded IDs and tags
    INTERSECTED = "intersected"
    DONE = "done"


@dataclass(frozen=True)
class BankPsiResult:
    matched_ids: list[str]  # sorted, as the bureau has them
    bank_set_size: int
    bureau_set_size: int
    session_id: str
    key_epoch: int


# The bank keeps the bureau's tags in memory (8 bytes each): a city's registry holds a few
# million enterprises, and a bureau announcing more than this is refused before they come.
MAX_BUREAU_SET_SIZE = 50_000_000


class BankPsiSession:
    """The bank's side: blinds its IDs, unblinds the bureau's answer, intersects."""

    def __init__(
        self,
        ids: Sequence[str],
        reveal: Reveal = Reveal.BOTH,
        chunk: int = DEFAULT_CHUNK,
        scalar: bytes | None = None,
        max_bureau_set_size: int = MAX_BUREAU_SET_SIZE,
    ) -> None:
        if chunk < 1 or chunk > MAX_CHUNK:
            raise ValueError(f"chunk must be between 1 and {MAX_CHUNK}")
        if len(set(ids)) != len(ids):
            raise ValueError("IDs must be distinct (prepare them with prepare_ids)")
        self.ids = list(ids)
        self.reveal = reveal
        self.chunk = chunk
        self._scalar = scalar or group.random_scalar()
        group.check_scalar(self._scalar)
        self._inverse = group.invert_scalar(self._scalar)
        # Shuffled so that the bureau cannot tie positions to the bank's file order.
        self._order = list(range(len(self.ids)))
        secrets.SystemRandom().shuffle(self._order)
        self.max_bureau_set_size = max_bureau_set_size
        self.stage = BankStage.NEW
        self.params: PsiParams | None = None
        self._own_tags: dict[int, Future[bytes]] = {}
        self._exponentiated = 0
        self._bureau_tags: list[np.ndarray] = []
        self._bureau_received = 0
        self._matched_order: list[int] | None = None
        self._tags_in_order: np.ndarray | None = None

    def request(self) -> PsiRequest:
        self._expect(BankStage.NEW)
        return PsiRequest(bank_set_size=len(self.ids), reveal=self.reveal)

    def _expect(self, *stages: BankStage) -> None:
        if self.stage not in stages:
            wanted = " or ".join(s.value for s in stages)
            raise WrongStage(f"the bank's session is at stage {self.stage.value!r}, not {wanted!r}")

    def accept_params(self, params: PsiParams) -> None:
        self._expect(BankStage.NEW)
        if params.protocol != PROTOCOL:
            raise ProtocolViolation(f"the bureau speaks {params.protocol!r}, not {PROTOCOL!r}")
        if params.tag_bytes != group.TAG_BYTES:
            raise ProtocolViolation(f"tag length {params.tag_bytes} is not {group.TAG_BYTES}")
        if not 0 <= params.bureau_set_size <= self.max_bureau_set_size:
            raise ProtocolViolation(
                f"the bureau announced {params.bureau_set_size} IDs, outside "
                f"0..{self.max_bureau_set_size}"
            )
        if params.max_chunk < 1:
            raise ProtocolViolation("the bureau's chunk limit is not positive")
        self.chunk = min(self.chunk, params.max_chunk)
        self.params = params
        self.stage = BankStage.BLINDING

    @property
    def session_id(self) -> str:
        assert self.params is not None
        return self.params.session_id

    def blinded_ids(self, executor: Executor | None = None) -> Iterator[BlindedIds]:
        """``H(x)^a`` for every ID, shuffled, in chunks (computed ahead on the executor)."""
        self._expect(BankStage.BLINDING)
        spans = list(chunk_offsets(len(self.ids), self.chunk))
        chunks = (
            (self._scalar, [self.ids[i].encode() for i in self._order[a:b]]) for a, b in spans
        )
        results = ordered_map(executor, group.hash_and_exponentiate, chunks)
        for (start, _), points in zip(spans, results):
            yield BlindedIds(self.session_id, start, points)

    def receive_exponentiated(
        self, msg: ExponentiatedIds, executor: Executor | None = None
    ) -> None:
        """Take ``(H(x)^a)^b`` for a chunk and start unblinding and tagging it."""
        self._expect(BankStage.BLINDING)
        if msg.session_id != self.session_id:
            raise ProtocolViolation("exponentiated IDs belong to another session")
        if msg.offset != self._exponentiated:
            raise ProtocolViolation(
                f"exponentiated chunk starts at {msg.offset}; expected {self._exponentiated}"
            )
        expected = min(self.chunk, len(self.ids) - msg.offset)
        if len(msg.points) != expected * group.POINT_BYTES:
            raise ProtocolViolation(
                f"exponentiated chunk at {msg.offset} has {len(msg.points)} bytes; expected "
                f"{expected * group.POINT_BYTES}"
            )
        self._own_tags[msg.offset] = run(
            executor,
            group.exponentiate_and_tag,
            self._inverse,
            msg.points,
            "exponentiated ID",
            msg.offset,
        )
        self._exponentiated += expected

    def receive_bureau_tags(self, msg: BureauTags) -> None:
        self._expect(BankStage.BLINDING)
        assert self.params is not None
        if msg.session_id != self.session_id:
            raise ProtocolViolation("bureau tags belong to another session")
        if msg.offset != self._bureau_received:
            raise ProtocolViolation(
                f"bureau tag chunk starts at {msg.offset}; expected {self._bureau_received}"
            )
        tags = tags_of(msg.tags)
        if self._bureau_received + tags.size > self.params.bureau_set_size:
            raise ProtocolViolation(
                f"the bureau sent more tags than the {self.params.bureau_set_size} it announced"
            )
        self._bureau_tags.append(tags)
        self._bureau_received += tags.size

    def intersect(self) -> BankPsiResult:
        """Look every own tag up in the bureau's table. Needs every chunk back."""
        self._expect(BankStage.BLINDING)
        assert self.params is not None
        if self._exponentiated != len(self.ids):
            raise ProtocolViolation(
                f"the bureau returned {self._exponentiated} of {len(self.ids)} exponentiated IDs"
            )
        if self._bureau_received != self.params.bureau_set_size:
            raise ProtocolViolation(
                f"the bureau sent {self._bureau_received} of the "
                f"{self.params.bureau_set_size} tags it announced"
            )
        own = b"".join(self._own_tags[o].result() for o in sorted(self._own_tags))
        shuffled_tags = tags_of(own)
        tags = np.empty_like(shuffled_tags)
        tags[np.asarray(self._order, dtype=np.int64)] = shuffled_tags
        bureau = (
            np.sort(np.concatenate(self._bureau_tags))
            if self._bureau_tags
            else np.zeros(0, dtype=TAG_DTYPE)
        )
        matched = (
            np.isin(tags, bureau, assume_unique=False)
            if bureau.size
            else np.zeros(tags.size, dtype=bool)
        )
        self._tags_in_order = tags
        # revealed in tag order, not the bank's file order: the order the bureau sees then
        # says nothing about the bank's file
        found = np.flatnonzero(matched)
        self._matched_order = found[np.argsort(tags[found], kind="stable")].tolist()
        self._own_tags.clear()
        self._bureau_tags.clear()
        self.stage = BankStage.INTERSECTED
        return BankPsiResult(
            # sorted by ID, as the bureau sorts them: the rows' order on both sides
            matched_ids=sorted(self.ids[i] for i in self._matched_order),
            bank_set_size=len(self.ids),
            bureau_set_size=self.params.bureau_set_size,
            session_id=self.session_id,
            key_epoch=self.params.key_epoch,
        )

    def matched_tags(self, chunk: int = MAX_CHUNK) -> Iterator[MatchedTags]:
        """The tags of the matched IDs, sorted (reveal mode BOTH only)."""
        self._expect(BankStage.INTERSECTED)
        if self.reveal is not Reveal.BOTH:
            raise WrongStage("reveal mode is 'bank': the bank sends no matched tags")
        assert self.params is not None
        assert self._matched_order is not None and self._tags_in_order is not None
        selected = self._tags_in_order[np.asarray(self._matched_order, dtype=np.int64)]
        if selected.size == 0:  # one message all the same: it names the session
            yield MatchedTags(self.session_id, b"")
        for start, stop in chunk_offsets(selected.size, min(chunk, self.params.max_chunk)):
            yield MatchedTags(self.session_id, selected[start:stop].tobytes())

    def confirm_reveal(self, summary: RevealSummary) -> None:
        self._expect(BankStage.INTERSECTED)
        assert self._matched_order is not None
        if summary.matched != len(self._matched_order):
            raise ProtocolViolation(
                f"the bureau recorded {summary.matched} matched IDs; the bank sent "
                f"{len(self._matched_order)}"
            )
        self.stage = BankStage.DONE
