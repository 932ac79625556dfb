"""Where the heavy chunks run: a process pool sized to the machine by default, or a Dask
distributed cluster (``dask://HOST:PORT``), through the same ``concurrent.futures`` API.

Chunks are plain functions of picklable arguments (``protocols``), so the same code
runs in-process, in a local pool or on a cluster. A party's chunks may carry its own key
material (the key owner's fast encryption uses the factors of its modulus): a Dask cluster
must be the party's own, inside its trust boundary, never shared with the other party.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any

from protocols.errors import InputDataError

from .workers import start as start_worker
from .workers import track

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


# The chunks are functions of ``protocols`` and the modules they need, never of the caller's
# ``__main__``: the workers import these up front and nothing else.
PRELOAD = ["protocols.paillier", "protocols.psi", "node_runtime.forkserver_stop"]
# This library's own fork server, so that the process-wide one (and its preload list, which
# a caller's own pools may rely on) is left alone.
_FORK_SERVER = forkserver.ForkServer()
_FORK_SERVER.set_forkserver_preload(PRELOAD)


class _WorkerPopen(popen_forkserver.Popen):
    """Starts a worker through this library's fork server without the caller's main module.

    multiprocessing re-imports ``__main__`` in every child (by path or by name) so that
    functions defined there unpickle; from a script without an ``if __name__ ==
    "__main__"`` guard that re-runs the script in each worker, whose own pool start then
    fails (BrokenProcessPool). Our chunks never live in ``__main__``, so the child is told
    nothing about it. The body is CPython's ``popen_forkserver.Popen._launch`` with those
    two keys dropped and our fork server in place of the global one."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        # typeshed lacks these two private names of CPython's multiprocessing
        self.sentinel, w = _FORK_SERVER.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        parent_w = os.dup(w)  # the child's sentinel of its parent, as in CPython
        close = util.close_fds  # type: ignore[attr-defined]
        self.finalizer = util.Finalize(self, close, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _WorkerPopen:
        return _WorkerPopen(process_obj)


class _WorkerContext(context.ForkServerContext):
    Process = _WorkerProcess


def make_executor(workers: int | None = None, spec: str | None = None) -> Executor | None:
    """The executor for a node's heavy work.

    ``spec``: None or ``"local"`` -- a process pool of ``workers`` processes (default: one
    per core; ``0`` runs every chunk in the calling thread, which suits small jobs and
    tests); ``"dask://HOST:PORT"`` -- the Dask scheduler at that address.

    Local processes start through a fork server: forking a process that already runs gRPC
    threads is unsafe. They never import the caller's main module, so a plain script
    without a ``__main__`` guard (or a notebook) can run a job.
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
    workers_context = _WorkerContext()
    generation = workers_context.Value("Q", 0)
    pool = ProcessPoolExecutor(
        max_workers=count,
        mp_context=workers_context,
        initializer=start_worker,  # die with this node; drop keys when a job ends
        initargs=(os.getpid(), generation),
    )
    track(pool, generation)
    # Start the workers now, not in the middle of the first session.
    for future in [pool.submit(os.getpid) for _ in range(count)]:
        future.result()
    return pool
