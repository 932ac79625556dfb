"""Where the heavy chunks run: a process pool sized to the machine by default, or a Dask
distributed cluster (``dask://HOST:PORT``), through the same ``concurrent.futures`` API.

Chunks are plain functions of picklable arguments (``protocols``), so the same code
runs in-process, in a local pool or on a cluster. A party's chunks may carry its own key
material (the key owner's fast encryption uses the factors of its modulus): a Dask cluster
must be the party's own, inside its trust boundary, never shared with the other party.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from protocols.errors import InputDataError

DASK_SCHEME = "dask://"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DaskExecutor(Executor):
    """A Dask cluster as an Executor; shutting it down closes the client, not the cluster."""

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - depends on the installation
            raise InputDataError(
                "--executor dask://... needs Dask: pip install 'xinrong[dask]'"
            ) from None
        try:
            self.client = Client(address, timeout="20s", set_as_default=False)
        except OSError as exc:
            raise InputDataError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self._executor = self.client.get_executor(pure=False)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)
        self.client.close()


class _Pool(ProcessPoolExecutor):
    generation: Any = None  # a shared counter: raised when the node's jobs end


def forget_keys(executor: Executor | None) -> None:
    """A job ended: the node's workers drop the key material they cached (within a
    watchdog tick, ~0.2 s); running jobs' keys are rebuilt on their next chunk."""
    generation = getattr(executor, "generation", None)
    if generation is not None:
        with generation.get_lock():
            generation.value += 1


_PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.2


def _worker_start(node_pid: int, generation: Any) -> None:
    """In each worker, first: die with the node, whatever kills it. The kernel signals
    the worker when its parent dies (on Linux; the parent is the fork server, which exits
    when the node does); a watchdog thread also checks the node itself, and drops cached
    keys when the node says a job ended."""
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
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: the pid was reused
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


def make_executor(workers: int | None = None, spec: str | None = None) -> Executor | None:
    """The executor for a node's heavy work.

    ``spec``: None or ``"local"`` -- a process pool of ``workers`` processes (default: one
    per core; ``0`` runs every chunk in the calling thread, which suits small jobs and
    tests); ``"dask://HOST:PORT"`` -- the Dask scheduler at that address.

    Local processes start through a fork server: forking a process that already runs gRPC
    threads is unsafe.
    """
    if spec and spec.startswith(DASK_SCHEME):
        address = spec[len(DASK_SCHEME) :]
        if not address:
            raise InputDataError("--executor dask:// needs the scheduler's HOST:PORT")
        return DaskExecutor("tcp://" + address if "://" not in address else address)
    if spec not in (None, "", "local"):
        raise InputDataError(f"unknown executor {spec!r}: use 'local' or 'dask://HOST:PORT'")
    count = default_workers() if workers is None else workers
    if count < 0:
        raise ValueError("workers must be 0 or more")
    if count == 0:
        return None
    context = multiprocessing.get_context("forkserver")
    generation = context.Value("Q", 0)
    pool = _Pool(
        max_workers=count,
        mp_context=context,
        initializer=_worker_start,
        initargs=(os.getpid(), generation),
    )
    pool.generation = generation
    # Start the workers now, not in the middle of the first session.
    for future in [pool.submit(os.getpid) for _ in range(count)]:
        future.result()
    return pool
