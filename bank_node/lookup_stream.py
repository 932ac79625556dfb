"""One long-lived ``EvaluateStream`` to the bureau, for online decisions.

A unary ``Evaluate`` per applicant pays for a whole call each time: on two cores that setup
(headers, the bureau's checks, TLS record framing, thread hand-offs) costs more than the
OPRF itself. On one open stream a decision costs one message each way. The bureau sees the
same thing it sees of ``Evaluate`` (fresh random points and how many), plus that consecutive
messages came on one call; it charges and records each message before answering it, and
sends that record's receipts in the answer.

The stream is shared by every thread that uses the ``LookupClient`` (a decision service
answers many applicants at once). One message is in flight at a time; requests that arrive
meanwhile are queued, each with a future, and go together in the next message, so under load
the bureau's cost of a message is shared by several decisions, while a lone decision still
goes at once. A reader thread splits each answer among the requests it answers.

Whenever the stream cannot answer (the bureau refused to open one at its cap, ended an idle
one, restarted, or is an older version without streams), the caller falls back to the unary
call, so a decision never fails for want of a stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import grpc

from protocols import lookup
from protocols.errors import PeerError, ProtocolViolation
from xinrong.v1 import lookup_pb2 as pb

from .client import BureauConnection

log = logging.getLogger(__name__)

# A stream idle this long is closed and a fresh one opened: the bureau ends streams idle for
# 30 s (bureau_node.admission), and a request must not race its cancellation.
REOPEN_AFTER = 20.0
# After the bureau refused a stream (all it allows are open), unary calls for this long.
REFUSED_FOR = 60.0
# The stream's failures after which the unary call is tried: the stream, not the request,
# was refused or ended. Any other status is the bureau's answer to the request itself.
_FALL_BACK = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}
# Points in one stream message: requests queued together share a message up to this many.
MESSAGE_POINTS = 4096


class StreamClosed(Exception):
    """The stream ended without answering this request: use the unary call."""


@dataclass
class _Request:
    key_epoch: int
    points: bytes
    future: Future[pb.EvaluatedPoints]


class _Stream:
    """One call: requests waiting to go, and the batches sent and not yet answered."""

    def __init__(self) -> None:
        self.turn = threading.Condition()
        self.queued: list[_Request] = []
        self.sent: deque[list[_Request]] = deque()
        self.last_used = time.monotonic()
        self.open = True
        self.call: grpc.Call | None = None

    def outgoing(self, limit: int) -> Iterator[pb.BlindedPoints]:
        """What gRPC sends: everything queued since the last answer, as one message.
        One message in flight at a time, so requests that arrive while it is out (other
        threads' decisions) share the next one: the bureau's cost of a message (its call
        handling, its audit record, a receipt) is paid once for all of them."""
        while True:
            with self.turn:
                while self.open and (not self.queued or self.sent):
                    self.turn.wait()
                if not self.open:
                    return
                batch = _take_batch(self.queued, limit)
                self.sent.append(batch)
            yield pb.BlindedPoints(
                key_epoch=batch[0].key_epoch, points=b"".join(r.points for r in batch)
            )


def _take_batch(queued: list[_Request], limit: int) -> list[_Request]:
    """The oldest requests of one key epoch, at most ``limit`` points (the first always);
    removed from ``queued``."""
    batch, points = [queued[0]], len(queued[0].points) // lookup.POINT_BYTES
    for r in queued[1:]:
        count = len(r.points) // lookup.POINT_BYTES
        if r.key_epoch != batch[0].key_epoch or points + count > limit:
            break
        batch.append(r)
        points += count
    del queued[: len(batch)]
    return batch


class EvaluationStream:
    def __init__(self, connection: BureauConnection) -> None:
        self._connection = connection
        self._lock = threading.Lock()  # which stream is current; taken before a stream's turn
        self._stream: _Stream | None = None
        self._refused_until = 0.0
        self.max_points = MESSAGE_POINTS  # lowered to the bureau's max_points if smaller

    def available(self) -> bool:
        return time.monotonic() >= self._refused_until

    def evaluate(self, request: pb.BlindedPoints, timeout: float) -> pb.EvaluatedPoints:
        """The bureau's answer; a gRPC error as the unary call raises it, or
        :class:`StreamClosed` when the unary call should be tried instead."""
        future: Future[pb.EvaluatedPoints] = Future()
        item = _Request(request.key_epoch, request.points, future)
        with self._lock:
            while True:
                stream, now, fresh = self._stream, time.monotonic(), False
                if stream is None or now - stream.last_used > REOPEN_AFTER:
                    if stream is not None:
                        self._end(stream, cancel=False)
                    stream = self._stream = self._start()
                    fresh = True
                with stream.turn:
                    # open is read under the stream's own lock: once its reader has failed
                    # what was waiting, nothing more may be queued on it
                    if stream.open:
                        stream.queued.append(item)
                        stream.last_used = now
                        stream.turn.notify_all()
                        break
                self._stream = None
                if fresh:  # refused before it carried anything (_read noted why)
                    raise StreamClosed("the bureau ended the lookup stream at once")
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._end(stream, cancel=True)
            raise PeerError(
                "looking up enterprises privately: the bureau did not answer in time"
            ) from None

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            self._end(stream, cancel=False)

    def _start(self) -> _Stream:
        stream = _Stream()
        outgoing = stream.outgoing(min(self.max_points, MESSAGE_POINTS))
        stream.call = self._connection.lookup.EvaluateStream(
            outgoing, metadata=self._connection.metadata
        )
        threading.Thread(
            target=self._read, args=(stream,), name="lookup-stream", daemon=True
        ).start()
        return stream

    @staticmethod
    def _end(stream: _Stream, cancel: bool) -> None:
        """Half-close (the bureau answers what it has and ends the call), or cancel
        (whatever waits on the stream fails over to the unary call at once)."""
        with stream.turn:
            stream.open = False
            stream.turn.notify_all()
        if cancel and stream.call is not None:
            stream.call.cancel()

    def _read(self, stream: _Stream) -> None:
        error: BaseException = StreamClosed("the bureau ended the lookup stream")
        try:
            for answer in stream.call:  # type: ignore[union-attr]
                if answer.receipts:  # written now, synced with later ones: not an fsync each
                    self._connection.receipts.keep(answer.receipts, sync=False)
                with stream.turn:
                    batch = stream.sent.popleft() if stream.sent else None
                    stream.turn.notify_all()  # the next message may go
                if batch is None:
                    raise ProtocolViolation("the bureau answered a lookup nobody asked for")
                _hand_out(answer, batch)
        except grpc.RpcError as exc:
            error = self._classify(exc)
        except Exception as exc:  # noqa: BLE001 - a bad answer, or a fault here: no one waits on
            error = exc
            stream.call.cancel()  # type: ignore[union-attr]
        with stream.turn:
            stream.open = False
            waiting = [r for batch in stream.sent for r in batch] + stream.queued
            stream.sent.clear()
            stream.queued.clear()
            stream.turn.notify_all()  # the request iterator ends too
        with self._lock:
            if self._stream is stream:
                self._stream = None
        for r in waiting:
            r.future.set_exception(error)

    def _classify(self, exc: grpc.RpcError) -> BaseException:
        code = exc.code() if hasattr(exc, "code") else None
        if code not in _FALL_BACK:
            return exc
        if code is grpc.StatusCode.UNIMPLEMENTED:  # a bureau without streams: never again
            self._refused_until = float("inf")
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._refused_until = time.monotonic() + REFUSED_FOR
        log.debug("the lookup stream ended (%s); using unary calls", code)
        return StreamClosed(str(code))


def _hand_out(answer: pb.EvaluatedPoints, batch: list[_Request]) -> None:
    """Each request's own points of a shared answer, in the order they were sent."""
    sizes = [len(r.points) for r in batch]
    if len(answer.points) != sum(sizes):
        error = ProtocolViolation(
            f"the bureau answered {len(answer.points)} bytes of points for {sum(sizes)}"
        )
        for r in batch:
            r.future.set_exception(error)
        return
    offset = 0
    for r, size in zip(batch, sizes, strict=True):
        r.future.set_result(
            pb.EvaluatedPoints(
                key_epoch=answer.key_epoch, points=answer.points[offset : offset + size]
            )
        )
        offset += size
