"""Admission of the calls that hold a server thread at the bank's pace.

gRPC Python's server gives every call one thread from a fixed pool for as long as the call
lasts. A call that streams requests waits in that thread for the bank's next message; a call
that streams responses waits there while the bank does not read them (HTTP/2 flow control).
Unbounded, one bank opening calls and sending (or reading) nothing holds every thread, and
every bank's calls wait (the review's ``Exponentiate`` attack). So every streaming call of
every bureau service (client-, server- and bidirectional-streaming; the interceptor admits
them before the servicer runs, ``METHODS`` names each) is admitted into one of two pools:

- lookup streams (``EvaluateStream``, an online-decision service's long-lived call): at most
  ``max_lookup_streams`` per bank (its configuration; 4 by default) and 16 in all, cancelled
  after 30 s idle, and ended after its next answer once 5 minutes old (the certificate checks
  run when a call starts, so no stream outlives a revocation by long);
- every other streaming call (PSI, binning, training steps, scoring, table downloads): at
  most ``max_streams`` per bank (8 by default) and 32 in all, cancelled after 300 s idle, no
  age limit (PSI on 10 million IDs streams for minutes, busy all along).

Beyond a bound the call is refused at once, RESOURCE_EXHAUSTED, on record, before its
servicer runs: nothing is charged to a quota or budget. The server's pool has
``UNARY_THREADS`` on top of both totals (``BureauNode``), so whatever banks hold, unary
calls (which run at the bureau's pace once their request is in) always find threads.

A call whose single request message has not arrived yet (every unary and server-streaming
method: gRPC Python would wait for that message in a pool thread before any of the bureau's
code ran, so a bank could send a call's headers and nothing more, unadmitted and unbounded;
a review's 70 such calls took all 64 threads) is taken as a streaming one by the
interceptor, so that it is identified and admitted before it waits (``RequestWaits``): at
most ``REQUEST_WAITS_PER_BANK`` of a bank's calls may have waited
``REQUEST_WAIT_GRACE_SECONDS`` or more; a wait is cancelled after ``REQUEST_WAIT_SECONDS``.
An honest client sends the message with the headers: its calls never wait that long.

Idle means waiting on the bank: for its next request message, or for it to take a response
message. The bureau's own work (preparing tags, exponentiating, scoring) never counts. 300 s
is well above the longest honest wait, the bank's own work between two messages of one call:
blinding or unblinding 4,096 IDs of a PSI session or storing a chunk of a table takes about
a second, and encrypting the next training batch while the bureau's answer to this step
waits at most a training step (about 80 s in BENCHMARKS.md's FATE-shaped run: 1,400 s an
epoch of 17 batches of 1,200 rows, on a loaded two-core machine). A silent bank's calls give
their threads back within minutes; what keeps other banks served meanwhile is the bounds,
not the reaper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from node_runtime.transport.errors import CallEnded
from protocols.errors import QuotaExceeded

from .audit import AuditLog
from .config import Access, BankPolicy

log = logging.getLogger(__name__)

LOOKUP_TOTAL = 16
LOOKUP_IDLE_SECONDS = 30.0
LOOKUP_MAX_AGE_SECONDS = 300.0
STREAMS_TOTAL = 32
STREAM_IDLE_SECONDS = 300.0
REQUEST_WAITS_PER_BANK = 4  # waits of one bank older than the grace below
# waits of one bank of any age: above an honest bank's peak (a review's 32 threads of unary
# calls had 21 in the window at once), so that a bank cancelling each call inside the grace
# and opening another holds no more threads than this
REQUEST_WAITS_ANY_AGE_PER_BANK = 32
REQUEST_WAITS_TOTAL = 32  # threads the pool keeps for such waits (not a refusal)
REQUEST_WAIT_GRACE_SECONDS = 2.0
REQUEST_WAIT_SECONDS = 120.0

# every streaming method of the bureau's services: its pool and the event its refusal is
# recorded under (the servicer's own). A streaming method not named here is admitted into
# the general pool all the same, its refusal recorded as "call".
LOOKUP, STREAMS = "lookup streams", "streaming calls"
REQUESTS = "calls awaiting their request"
METHODS: dict[str, tuple[str, str]] = {
    "/xinrong.v1.PrivateLookup/EvaluateStream": (LOOKUP, "lookup"),
    "/xinrong.v1.PrivateLookup/FetchTable": (STREAMS, "lookup_table"),
    "/xinrong.v1.PrivateSetIntersection/OpenSession": (STREAMS, "psi"),
    "/xinrong.v1.PrivateSetIntersection/Exponentiate": (STREAMS, "psi"),
    "/xinrong.v1.PrivateSetIntersection/FetchTags": (STREAMS, "psi"),
    "/xinrong.v1.PrivateSetIntersection/RevealIntersection": (STREAMS, "psi"),
    "/xinrong.v1.JointTraining/TrainingStep": (STREAMS, "training_step"),
    "/xinrong.v1.Binning/BinLabels": (STREAMS, "information_value"),
    "/xinrong.v1.Scoring/ScoreApplicants": (STREAMS, "scoring"),
}


@dataclass(eq=False)
class HeldCall:
    bank_id: str
    method: str
    context: grpc.ServicerContext
    opened: float
    pool: CallPool
    # on the bank since then (for a request, or for it to take a response); None: working
    waiting_since: float | None = None
    reaped: str | None = None  # why the bureau cancelled it

    def waiting(self) -> None:
        self.waiting_since = self.pool.clock()

    def working(self) -> None:
        self.waiting_since = None

    def expired(self) -> bool:
        """Old enough to end after this answer (the client opens a new call, checked anew)."""
        age = self.pool.max_age_seconds
        return age is not None and self.pool.clock() - self.opened >= age

    def requests(self, requests: Iterator[Any]) -> Iterator[Any]:
        """The bank's request messages, the time spent waiting for each counted as idle."""
        while True:
            self.waiting()
            try:
                message = next(requests)
            except StopIteration:
                # a cancelled call's requests can also just end: not the bank's half-close
                if self.reaped is not None or not self.context.is_active():
                    raise CallEnded(self.reaped or "the bank cancelled the call") from None
                return
            except grpc.RpcError:  # gRPC's request iterator on a cancelled call
                raise CallEnded(self.reaped or "the bank cancelled the call") from None
            finally:
                self.working()
            yield message

    def close(self) -> None:
        self.pool.close(self)


class CallPool:
    """Open calls of one kind: a bound per bank (its policy's ``cap_key``), ``total`` in all,
    cancelled after ``idle_seconds`` waiting on the bank, ended after ``max_age_seconds``."""

    def __init__(
        self,
        name: str,
        cap_key: str,
        total: int,
        idle_seconds: float,
        max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.cap_key, self.total = name, cap_key, total
        self.idle_seconds, self.max_age_seconds = idle_seconds, max_age_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._open: list[HeldCall] = []

    @property
    def reap_every(self) -> float:
        """How often the reaper looks at this pool."""
        return self.idle_seconds / 4

    def cap(self, policy: BankPolicy) -> int:
        return int(getattr(policy, self.cap_key))

    def open(self, bank_id: str, method: str, context: grpc.ServicerContext, cap: int) -> HeldCall:
        """Register a call; ``cap`` is this bank's own bound. Raises QuotaExceeded beyond it
        or beyond ``total``."""
        with self._lock:
            mine = sum(1 for c in self._open if c.bank_id == bank_id)
            if mine >= cap:
                raise QuotaExceeded(
                    f"bank {bank_id} already holds {mine} {self.name} open at the bureau, the "
                    f"most it allows it ({self.cap_key} {cap}); finish or cancel one first"
                    + (", or use Evaluate" if self.cap_key == "max_lookup_streams" else "")
                )
            if len(self._open) >= self.total:
                raise QuotaExceeded(
                    f"the bureau holds {len(self._open)} {self.name} of all banks, all it can "
                    "spare threads for; try again in a minute"
                    + (", or use Evaluate" if self.cap_key == "max_lookup_streams" else "")
                )
            now = self.clock()
            call = HeldCall(bank_id, method, context, now, self)
            self._open.append(call)
            return call

    def close(self, call: HeldCall) -> None:
        with self._lock:
            if call in self._open:
                self._open.remove(call)

    def count(self, bank_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self._open if bank_id is None or c.bank_id == bank_id)

    def reap(self) -> list[HeldCall]:
        """Cancel the calls waiting on their bank for ``idle_seconds``; returns them."""
        now = self.clock()
        idle: list[HeldCall] = []
        with self._lock:
            for c in list(self._open):
                since = c.waiting_since
                if since is None or now - since < self.idle_seconds:
                    continue
                self._open.remove(c)
                c.reaped = (
                    f"the bureau ended this call: it waited {now - since:.0f} s for the bank "
                    f"(a request message, or to take an answer); {self.name} idle for "
                    f"{self.idle_seconds:g} s are ended"
                )
                idle.append(c)
        return self._cancel(idle)

    @staticmethod
    def _cancel(calls: list[HeldCall]) -> list[HeldCall]:
        """End calls taken out of the pool, each with its ``reaped`` reason."""
        for c in calls:
            log.warning("%s of bank %s: %s", c.method, c.bank_id, c.reaped)
            c.context.cancel()  # its thread leaves the request iterator or the send
        return calls


class RequestWaits(CallPool):
    """Unary-request calls waiting for their one message. A wait counts against its bank's
    bound only once it is ``grace_seconds`` old: an honest call's message comes with its
    headers, but a bank's many concurrent calls are each in the window for a moment, and a
    bound on calls in the window refused a review's honest concurrent calls (399 of 640 at
    32 threads). Beyond the bound a new call is refused, and the reaper cancels a bank's
    old waits beyond it (a burst opened inside the grace). No bound in all: with one, eight
    banks' certificates refused every other bank's calls for as long as they reopened
    theirs; without, each holds at most its bound of threads."""

    def __init__(
        self, name: str, per_bank: int, any_age: int, total: int, grace: float, idle: float
    ) -> None:
        super().__init__(name, "the bureau's bound", total, idle)
        self.per_bank, self.grace, self.any_age = per_bank, grace, any_age

    def cap(self, policy: BankPolicy) -> int:
        return self.per_bank  # the same for every bank

    def _old(self, bank_id: str, now: float) -> list[HeldCall]:
        return [
            c
            for c in self._open
            if c.bank_id == bank_id
            and c.waiting_since is not None
            and now - c.waiting_since >= self.grace
        ]

    def open(self, bank_id: str, method: str, context: grpc.ServicerContext, cap: int) -> HeldCall:
        with self._lock:
            now = self.clock()
            old = len(self._old(bank_id, now))
            if old >= cap:
                raise QuotaExceeded(
                    f"bank {bank_id} already holds {old} calls whose request message has not "
                    f"come for {self.grace:g} s or more, the most the bureau allows a bank; "
                    "send each call's request, or cancel those calls"
                )
            # a second review: calls cancelled just inside the grace and opened again were
            # never old, and one bank's 250 of them took every thread the bureau has
            waiting = sum(1 for c in self._open if c.bank_id == bank_id)
            if waiting >= self.any_age:
                raise QuotaExceeded(
                    f"bank {bank_id} already holds {waiting} calls whose request message has "
                    "not come, the most the bureau allows a bank; try again in a moment"
                )
            call = HeldCall(bank_id, method, context, now, self)
            call.waiting_since = now
            self._open.append(call)
            return call

    def reap(self) -> list[HeldCall]:
        """The idle waits (``idle_seconds``), and each bank's old waits beyond its bound."""
        ended = super().reap()
        now = self.clock()
        beyond: list[HeldCall] = []
        with self._lock:
            for bank_id in {c.bank_id for c in self._open}:
                old = sorted(self._old(bank_id, now), key=lambda c: c.opened)
                for c in old[self.per_bank :]:
                    self._open.remove(c)
                    c.reaped = (
                        f"the bureau ended this call: its request message had not come after "
                        f"{now - c.opened:.0f} s, and bank {c.bank_id} held "
                        f"{self.per_bank} such calls already"
                    )
                    beyond.append(c)
        return ended + self._cancel(beyond)

    @property
    def reap_every(self) -> float:
        return self.grace / 2


class Admission:
    """The bureau's pools of streaming calls and the one thread that reaps idle calls."""

    def __init__(
        self,
        access: Access,
        audit: AuditLog | None = None,
        streams_total: int = STREAMS_TOTAL,
        stream_idle_seconds: float = STREAM_IDLE_SECONDS,
        lookup_total: int = LOOKUP_TOTAL,
    ) -> None:
        self.access, self.audit = access, audit
        self.lookup = CallPool(
            LOOKUP, "max_lookup_streams", lookup_total, LOOKUP_IDLE_SECONDS, LOOKUP_MAX_AGE_SECONDS
        )
        self.streams = CallPool(STREAMS, "max_streams", streams_total, stream_idle_seconds)
        self.requests = RequestWaits(
            REQUESTS,
            REQUEST_WAITS_PER_BANK,
            REQUEST_WAITS_ANY_AGE_PER_BANK,
            REQUEST_WAITS_TOTAL,
            REQUEST_WAIT_GRACE_SECONDS,
            REQUEST_WAIT_SECONDS,
        )
        self.pools = {LOOKUP: self.lookup, STREAMS: self.streams, REQUESTS: self.requests}
        self._reaper: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def threads(self) -> int:
        """The most threads the admitted calls can hold at once."""
        return sum(p.total for p in self.pools.values())

    def place(self, method: str) -> tuple[CallPool, str]:
        """The pool a streaming method is admitted into, and its refusals' event."""
        pool, event = METHODS.get(method, (STREAMS, "call"))
        return self.pools[pool], event

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_forever, name="call-reaper", daemon=True
            )
            self._reaper.start()

    def reap(self) -> int:
        """Cancel the idle calls of every pool, each on record; returns how many."""
        reaped = [c for p in self.pools.values() for c in p.reap()]
        if self.audit is not None:
            for c in reaped:  # whether or not its servicer records its own end too
                self.audit.append(
                    c.bank_id, "call_ended", "CANCELLED", method=c.method, reason=c.reaped
                )
        return len(reaped)

    def _reap_forever(self) -> None:
        # each pool as often as it asks (a quarter of its idle time: a call is ended at most
        # 25% after it; a request's wait beyond its bank's bound within a second)
        while not self._stopping.wait(
            min(max(min(p.reap_every for p in self.pools.values()), 0.05), 5.0)
        ):
            try:
                self.reap()
            except Exception:  # a record that cannot be written must not end the reaper
                log.exception("reaping idle calls")

    def stop(self) -> None:
        self._stopping.set()
