"""Worker processes that die with their node and drop key material when a job ends.

A node's pool workers may hold its secrets (the key owner's fast encryption caches its
Paillier key's factors). ``start`` runs first in each worker (the pool's initializer): on
Linux the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``; the parent is
the fork server, which exits with the node), and a watchdog thread also watches the node's
pid, whatever the start method, and drops the worker's cached keys when the node says a
job ended (``forget_keys``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import weakref
from concurrent.futures import Executor
from typing import Any

_PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.2

# each pool's shared counter, raised when one of the node's jobs ends
_GENERATIONS: weakref.WeakKeyDictionary[Executor, Any] = weakref.WeakKeyDictionary()


def track(pool: Executor, generation: Any) -> None:
    _GENERATIONS[pool] = generation


def forget_keys(executor: Executor | None) -> None:
    """A job ended: the pool's workers drop the keys they cached (within a watchdog tick);
    the keys of jobs still running are rebuilt on their next chunk."""
    generation = _GENERATIONS.get(executor) if executor is not None else None
    if generation is not None:
        with generation.get_lock():
            generation.value += 1


# A worker told to stop (SIGTERM) stays this long for the node, which may be finishing its
# banks' training epochs (its --stop-seconds), then exits; it dies with the node anyway.
TERM_GRACE_SECONDS = 120.0


def _stop_later(signum: int, frame: object) -> None:
    timer = threading.Timer(TERM_GRACE_SECONDS, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


def start(node_pid: int, generation: Any) -> None:
    """The pool's initializer: die with the node, whatever kills it; and leave Ctrl-C and
    a stop to the node: a terminal sends Ctrl-C to the whole process group, and systemd's
    stop SIGTERM to every process of the unit (workers dying of either broke the training
    epochs the node was finishing; a review). A worker told to stop exits after
    ``TERM_GRACE_SECONDS`` if the node has not ended first (a pool the executor tears down
    after a crash of one worker waits that long for the others)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_later)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.getppid()
    if not _alive(node_pid):  # it died before prctl took effect
        os._exit(1)
    thread = threading.Thread(
        target=_watch, args=(node_pid, parent, generation), name="xinrong-watchdog", daemon=True
    )
    thread.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid is another user's now
        return False
    return True


def _watch(node_pid: int, parent: int, generation: Any) -> None:
    seen = generation.value
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != parent or not _alive(node_pid):
            os._exit(1)  # orphaned: no one will ever read our results
        if generation.value != seen:
            seen = generation.value
            from protocols import paillier

            paillier.forget_worker_keys()
