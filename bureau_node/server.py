"""A running bureau node: its store, its worker pool and its gRPC server, in one object
that the CLI, the demo and the tests start the same way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path

import grpc

from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.transport.certs import RevocationList, bureau_files
from node_runtime.transport.channels import create_server
from protocols import psi
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, NotAuthorised
from protocols.ids import IdType
from protocols.products import PRODUCTS
from xinrong.v1 import lookup_pb2_grpc, model_pb2_grpc, psi_pb2_grpc

from .admission import STREAM_IDLE_SECONDS, STREAMS_TOTAL, Admission
from .audit import AuditLog
from .binning_service import BinningServicer
from .catalogue_service import CatalogueServicer
from .config import Access, load_config
from .context import BureauContext
from .features import BureauFeatures
from .graph_source import DEFAULT_REFRESH_SECONDS, GraphSource
from .interceptors import BureauInterceptor
from .lookup_service import PrivateLookupServicer
from .lookup_tables import LOOKUP_DIR, LookupTables, TableSource, product_source
from .models import ModelStore
from .products import ProductData
from .scoring_service import ScoringServicer
from .service import PsiServicer
from .store import BureauStore, DatasetSummary, Progress
from .training_service import TrainingServicer

log = logging.getLogger(__name__)
SERVING_POLICY = "serving-policy"  # per bank: the digests its key epoch began under


def _digest(what: object) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


# the server's threads for unary calls, on top of those the admitted streaming calls may hold
# (bureau_node.admission): whatever banks hold open, unary calls find threads
UNARY_THREADS = 16


class BureauNode:
    def __init__(
        self,
        data: str | Path,
        id_column: str,
        state_dir: str | Path,
        id_type: IdType = IdType.USCC,
        workers: int | None = None,
        limits: psi.PsiLimits = psi.PsiLimits(),
        training_limits: vlr.TrainingLimits = vlr.TrainingLimits(),
        executor: str | None = None,
        tls_dir: str | Path | None = None,
        config: str | Path | None = None,
        read_options: tables.ReadOptions | None = None,
        graph: str | Path | None = None,
        graph_flags: dict[str, str] | None = None,
        graph_refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        registry: str | Path | None = None,
        events: str | Path | None = None,
        streams_total: int = STREAMS_TOTAL,
        stream_idle_seconds: float = STREAM_IDLE_SECONDS,
    ) -> None:
        if streams_total < 1 or not stream_idle_seconds > 0:
            raise InputDataError(
                "the bureau needs room for at least 1 streaming call and a positive idle time "
                f"(got {streams_total} and {stream_idle_seconds} s)"
            )
        self.streams_total = streams_total
        self.stream_idle_seconds = stream_idle_seconds
        self.data = Path(data)
        self.read_options = read_options
        self.id_column = id_column
        self.id_type = id_type
        self.store = BureauStore(state_dir)
        self.limits = limits
        self.training_limits = training_limits
        self.models = ModelStore(state_dir)
        self.features: BureauFeatures | None = None
        self._workers = workers
        self._executor_spec = executor
        self.tls = bureau_files(tls_dir) if tls_dir else None
        self.revocations = RevocationList(tls_dir) if tls_dir else None
        self.config = Path(config) if config else None
        self.executor: Executor | None = None
        self.server: grpc.Server | None = None
        self._state_lock: int | None = None  # the lock file's descriptor
        self.audit: AuditLog | None = None
        self.access: Access | None = None
        self.port: int | None = None
        self.graph = GraphSource(graph, state_dir, graph_flags) if graph else None
        self._rotation = threading.Lock()
        self.graph_refresh_seconds = graph_refresh_seconds
        if events is not None and registry is None:
            raise InputDataError("--events needs --registry: watch events belong to registry rows")
        self.products_files = (
            (Path(registry), Path(events) if events else None) if registry else None
        )
        self.products: ProductData | None = None

    def prepare(self, progress: Progress | None = None) -> DatasetSummary:
        """Load the data file into the store (hashing only new IDs), holding the state
        directory's lock first: a second node refused on it had already rewritten the
        running node's dataset files (a review)."""
        self._lock_state_dir()
        if self.executor is None and (self._workers != 0 or self._executor_spec):
            self.executor = make_executor(self._workers, self._executor_spec)
        kwargs = {"progress": progress} if progress else {}
        self._load_features()
        self._load_products()
        return self.store.sync_dataset(
            self.data,
            self.id_column,
            self.id_type,
            self.executor,
            read_options=self.read_options,
            **kwargs,
        )

    def start(self, address: str = "127.0.0.1:0") -> int:
        self._lock_state_dir()
        if self.store.summary is None:
            self.prepare()
        if self.features is None:
            self._load_features()
            self._load_products()
        assert self.features is not None
        # the configuration is checked before the port opens: a bad file is a clear error
        policies = load_config(self.config, self.features.names) if self.config else None
        access = Access(self.store.root, policies)
        self.access = access
        audit = AuditLog(self.store.root)
        self.audit = audit
        self.admission = Admission(access, audit, self.streams_total, self.stream_idle_seconds)
        self.lookup_streams = self.admission.lookup  # the EvaluateStream calls, for tests
        threads = UNARY_THREADS + self.admission.threads
        self.server, self.port = create_server(
            address,
            max_workers=threads,
            # calls beyond the threads wait for one (unary calls, milliseconds each); beyond
            # as many again they are refused at once rather than queued without bound
            maximum_concurrent_rpcs=2 * threads,
            tls=self.tls,
            interceptors=[BureauInterceptor(audit, self.revocations, self.admission)],
        )
        servicer = PsiServicer(self.store, self.executor, self.limits, access=access, audit=audit)
        psi_pb2_grpc.add_PrivateSetIntersectionServicer_to_server(servicer, self.server)
        context = BureauContext(
            self.features,
            self.store,
            self.models,
            self.training_limits,
            access,
            audit,
            self.executor,
        )
        model_pb2_grpc.add_CatalogueServicer_to_server(CatalogueServicer(context), self.server)
        self.training = TrainingServicer(context)  # its jobs, for operators and tests
        model_pb2_grpc.add_JointTrainingServicer_to_server(self.training, self.server)
        model_pb2_grpc.add_BinningServicer_to_server(BinningServicer(context), self.server)
        model_pb2_grpc.add_ScoringServicer_to_server(ScoringServicer(context), self.server)
        self.lookup_tables = LookupTables(
            self.store, self.models, self.features, self._product_sources, self.executor
        )
        lookup_pb2_grpc.add_PrivateLookupServicer_to_server(
            PrivateLookupServicer(context, self.lookup_tables), self.server
        )
        self._rotate_keys_where_serving_changed()
        self.store.on_new_key_epoch = self._note_serving_policy
        self.server.start()
        self.admission.start()
        if self.graph is not None and self.graph_refresh_seconds > 0:
            # new edges are new data: as at a restart, a bank's lookup key ends (a review
            # opened the refreshed tables with its kept points, in the same epoch)
            self.graph.watch(self.features, self.graph_refresh_seconds, self._data_swap)
        log.info("bureau node listening on %s (port %d)", address, self.port)
        return self.port

    def reload(self) -> dict[str, list[str]]:
        """Re-read the configuration file (``serve`` does on SIGHUP): which banks were added,
        removed or changed. A bad file raises InputDataError and the old one stays in
        force. (The revocation list needs no reload: it is re-read when it changes.)"""
        if self.config is None or self.access is None or self.features is None:
            return {}
        new = load_config(self.config, self.features.names)
        old = self.access.policies or {}
        changes = {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(k for k in new.keys() & old.keys() if new[k] != old[k]),
        }
        self.access.policies = new  # one reference swap: a call sees the old or the new
        if self.audit is not None:
            self.audit.append("(bureau)", "configuration_reloaded", "OK", **changes)
        self._rotate_keys_where_serving_changed()
        return changes

    def _serving_policy(self, bank_id: str) -> str:
        """What decides which models and products a bank may open: its configuration, the
        features marked public and the model policy's limits (a digest)."""
        assert self.access is not None and self.features is not None
        try:
            policy = self.access.policy(bank_id)
            # its features, products and minimum; not its quotas (raising one ends nothing)
            served: list[object] | None = [
                policy.features,
                policy.products,
                policy.min_bureau_features,
            ]
        except NotAuthorised:
            served = None  # no longer served at all
        limits = self.training_limits
        what = [served, sorted(self.features.public), limits.max_feature_exposure]
        return _digest(what)

    def _data_versions(self) -> str:
        """What the entries of a bank's tables hold: the versions of the bureau's data file,
        graph and products (a digest)."""
        assert self.features is not None
        return _digest([self.features.version, self.products.version if self.products else None])

    def _served_tables(self, bank_id: str) -> bool:
        """Whether a table was sealed for the bank in its current key epoch (downloaded)."""
        epoch = self.store.key_epoch(bank_id)
        return any((self.store.root / LOOKUP_DIR / bank_id).glob(f"*-e{epoch}.npz"))

    @contextlib.contextmanager
    def _data_swap(self) -> Iterator[None]:
        """A live swap of the bureau's data: no table download across it, and the banks'
        lookup keys ended before any download sees the new data."""
        assert self.lookup_tables is not None
        with self.lookup_tables.gate.swapping():
            yield
            self._rotate_keys_where_serving_changed()

    def _rotate_keys_where_serving_changed(self) -> None:
        """A bank keeps the lookup tables it downloaded, and ``Evaluate`` opens any of them:
        a model or product the bureau stopped serving it (a feature taken out of its
        configuration, features marked public, a tighter exposure limit) still opened from
        its kept copy (a review, for 4,000 of 4,000 enterprises). When what decides that
        changed since the bank's key epoch began, the epoch ends: its kept tables no longer
        open, and a new download is checked against today's policy.

        New data (a month on) ends the lookup key only, and keeps the PSI key and its tags
        (each month's new IDs are all PSI prepares again): a review opened the next version
        of a model's table with last month's points, for free, and read from each
        enterprise's change of score the events of its month (newly on the abnormal-
        operation list, a new judgement). Each re-read is a lookup now."""
        with self._rotation:  # at start, on a reload and after a live graph refresh
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        data = self._data_versions()  # the same for every bank
        for directory in sorted((self.store.root / "banks").glob("*")):
            if not directory.is_dir():
                continue
            bank_id, path = directory.name, directory / SERVING_POLICY
            policy = self._serving_policy(bank_id)
            before = path.read_text().split() if path.exists() else []
            if before == [policy, data]:
                continue
            served = self._served_tables(bank_id)
            # no record: keys made by `bureau-node prepare` or an earlier version; adopted
            # under today's policy unless a table was downloaded in the epoch (it could have
            # been served under an older policy: a review, after an upgrade)
            cause = None
            if not before:
                cause = "upgrade" if served else None
            elif before[0] != policy:
                cause = "policy"
            elif served:
                cause = "data"
            if cause == "data":
                epoch = self.store.rotate_lookup_key(bank_id)
            elif cause is not None:
                epoch = self.store.rotate_key(bank_id)
            if cause is not None:
                log.info("bank %s: key epoch %d (%s changed)", bank_id, epoch, cause)
                if self.audit is not None:
                    self.audit.append(bank_id, "key_rotated", "OK", epoch=epoch, cause=cause)
            tables.atomic_write_bytes(path, f"{policy}\n{data}\n".encode())

    def _note_serving_policy(self, bank_id: str) -> None:
        """A bank's key epoch began (its lookup key made): under today's serving policy."""
        path = self.store.root / "banks" / bank_id / SERVING_POLICY
        text = f"{self._serving_policy(bank_id)}\n{self._data_versions()}\n"
        tables.atomic_write_bytes(path, text.encode())

    def _load_products(self) -> None:
        if self.products_files is not None:
            self.products = ProductData.load(*self.products_files)
            log.info(
                "data products of %s for %d enterprises (version %d)",
                self.products.data_date, len(self.products.ids), self.products.version,
            )  # fmt: skip

    def _load_features(self) -> None:
        features = BureauFeatures(
            self.data, self.id_column, self.id_type, read_options=self.read_options
        )
        if self.graph is not None:
            self.graph.load(features)
        self.features = features

    def _product_sources(self) -> list[TableSource]:
        data = self.products
        if data is None:
            return []
        return [product_source(data, product) for product in PRODUCTS]

    def _lock_state_dir(self) -> None:
        """One serving node per state directory: two would keep two audit logs' heads,
        quotas and key epochs apart in one place (the lock goes with the process)."""
        if self._state_lock is not None:
            return
        try:
            self._state_lock = tables.take_lock(self.store.root / "serve.lock")
        except tables.LockHeld as held:
            raise InputDataError(
                f"{self.store.root} is in use by another bureau node ({held.holder}): one "
                "`bureau-node serve` per state directory; stop the other one first"
            ) from None

    def stop(self, grace: float | None = 1.0) -> None:
        if self.graph is not None:
            self.graph.close()
        if self.server is not None:
            self.server.stop(grace).wait()
            self.server = None
            self.admission.stop()
        if self.access is not None:
            self.access.flush()
        if self.audit is not None:
            self.audit.flush_refusals()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        if self._state_lock is not None:  # last: the calls in their grace period are done
            os.close(self._state_lock)  # releases the lock
            self._state_lock = None

    def __enter__(self) -> BureauNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
