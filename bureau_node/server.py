"""A running bureau node: its store, its worker pool and its gRPC server, in one object
that the CLI, the demo and the tests start the same way."""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path

import grpc

from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.transport.certs import bureau_files
from node_runtime.transport.channels import create_server
from protocols import psi
from protocols import vertical_lr as vlr
from protocols.ids import IdType
from xinrong.v1 import model_pb2_grpc, psi_pb2_grpc

from .audit import AuditLog
from .binning_service import BinningServicer
from .catalogue_service import CatalogueServicer
from .config import Access, load_config
from .context import BureauContext
from .features import BureauFeatures
from .models import ModelStore
from .scoring_service import ScoringServicer
from .service import PsiServicer
from .store import BureauStore, DatasetSummary, Progress
from .training_service import TrainingServicer

log = logging.getLogger(__name__)


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
    ) -> None:
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
        self.config = Path(config) if config else None
        self.executor: Executor | None = None
        self.server: grpc.Server | None = None
        self.port: int | None = None

    def prepare(self, progress: Progress | None = None) -> DatasetSummary:
        """Load the data file into the store (hashing only new IDs)."""
        if self.executor is None and (self._workers != 0 or self._executor_spec):
            self.executor = make_executor(self._workers, self._executor_spec)
        kwargs = {"progress": progress} if progress else {}
        self.features = BureauFeatures(
            self.data, self.id_column, self.id_type, read_options=self.read_options
        )
        return self.store.sync_dataset(
            self.data,
            self.id_column,
            self.id_type,
            self.executor,
            read_options=self.read_options,
            **kwargs,
        )

    def start(self, address: str = "127.0.0.1:0") -> int:
        if self.store.summary is None:
            self.prepare()
        if self.features is None:
            self.features = BureauFeatures(
                self.data, self.id_column, self.id_type, read_options=self.read_options
            )
        # the configuration is checked before the port opens: a bad file is a clear error
        policies = load_config(self.config, self.features.names) if self.config else None
        access = Access(self.store.root, policies)
        audit = AuditLog(self.store.root)
        self.server, self.port = create_server(address, tls=self.tls)
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
        model_pb2_grpc.add_JointTrainingServicer_to_server(TrainingServicer(context), self.server)
        model_pb2_grpc.add_BinningServicer_to_server(BinningServicer(context), self.server)
        model_pb2_grpc.add_ScoringServicer_to_server(ScoringServicer(context), self.server)
        self.server.start()
        log.info("bureau node listening on %s (port %d)", address, self.port)
        return self.port

    def stop(self, grace: float | None = 1.0) -> None:
        if self.server is not None:
            self.server.stop(grace).wait()
            self.server = None
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def __enter__(self) -> BureauNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
