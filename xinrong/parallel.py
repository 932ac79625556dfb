"""Where the heavy chunks run: a process pool sized to the machine by default."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(workers: int | None = None) -> Executor | None:
    """A process pool of ``workers`` processes (default: one per core); ``0`` runs every
    chunk in the calling thread, which suits small jobs and tests.

    Processes start through a fork server: forking a process that already runs gRPC
    threads is unsafe.
    """
    count = default_workers() if workers is None else workers
    if count < 0:
        raise ValueError("workers must be 0 or more")
    if count == 0:
        return None
    pool = ProcessPoolExecutor(
        max_workers=count, mp_context=multiprocessing.get_context("forkserver")
    )
    # Start the workers now, not in the middle of the first session.
    for future in [pool.submit(os.getpid) for _ in range(count)]:
        future.result()
    return pool
