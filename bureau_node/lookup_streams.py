"""The bureau's open ``EvaluateStream`` calls, kept within what its thread pool can spare.

gRPC Python's server gives every call one thread from a fixed pool for as long as the call
lasts, so a stream an online-decision service keeps open holds a thread all day. Without a
bound, a few banks holding streams (or one bank opening many) would starve PSI, training
and everyone else's lookups. Hence: at most ``max_lookup_streams`` streams per bank (its
configuration; 4 by default) and ``total`` in all (refused with RESOURCE_EXHAUSTED: the
bank's client falls back to unary ``Evaluate``); a stream that carried nothing for
``idle_seconds`` is cancelled (the client opens a new one for its next decision); and one
older than ``max_age_seconds`` is ended after its next answer: the certificate checks
(revocation) run when a call starts, so no stream outlives them by long. The server's pool
is sized for ``total`` streams on top of the threads unary calls need (``BureauNode``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from protocols.errors import QuotaExceeded

TOTAL = 16
IDLE_SECONDS = 30.0
MAX_AGE_SECONDS = 300.0


@dataclass(eq=False)
class OpenStream:
    bank_id: str
    context: grpc.ServicerContext
    last_used: float
    opened: float


class LookupStreams:
    def __init__(
        self,
        total: int = TOTAL,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.idle_seconds = total, idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open: list[OpenStream] = []
        self._reaper: threading.Thread | None = None
        self._stopping = threading.Event()

    def open(self, bank_id: str, context: grpc.ServicerContext, cap: int) -> OpenStream:
        """Register a stream; ``cap`` is this bank's own (its ``max_lookup_streams``)."""
        with self._lock:
            mine = sum(1 for s in self._open if s.bank_id == bank_id)
            if mine >= cap:
                raise QuotaExceeded(
                    f"bank {bank_id} already holds {mine} lookup streams, the most the bureau "
                    f"allows it (max_lookup_streams {cap}); close one, or use Evaluate"
                )
            if len(self._open) >= self.total:
                raise QuotaExceeded(
                    f"the bureau holds {len(self._open)} lookup streams, all it can spare "
                    "threads for; use Evaluate, or try a stream again later"
                )
            now = self._clock()
            stream = OpenStream(bank_id, context, now, now)
            self._open.append(stream)
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap_forever, name="lookup-stream-reaper", daemon=True
                )
                self._reaper.start()
            return stream

    def used(self, stream: OpenStream) -> None:
        stream.last_used = self._clock()

    def expired(self, stream: OpenStream) -> bool:
        """Old enough to end after this answer (the client opens a new one, checked anew)."""
        return self._clock() - stream.opened >= self.max_age_seconds

    def close(self, stream: OpenStream) -> None:
        with self._lock:
            if stream in self._open:
                self._open.remove(stream)

    def count(self, bank_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._open if bank_id is None or s.bank_id == bank_id)

    def reap(self) -> int:
        """Cancel the streams idle for ``idle_seconds``; returns how many."""
        now = self._clock()
        with self._lock:
            idle = [s for s in self._open if now - s.last_used >= self.idle_seconds]
            for s in idle:
                self._open.remove(s)
        for s in idle:
            s.context.cancel()  # its thread leaves the request iterator and is free again
        return len(idle)

    def _reap_forever(self) -> None:
        while not self._stopping.wait(max(self.idle_seconds / 4, 0.05)):
            self.reap()

    def stop(self) -> None:
        self._stopping.set()
