"""The bureau's feature catalogue: names, kinds and descriptions a bank may use."""

from __future__ import annotations

import grpc

from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc

from .context import BureauContext


class CatalogueServicer(model_pb2_grpc.CatalogueServicer):
    def __init__(self, ctx: BureauContext) -> None:
        self.ctx = ctx

    def ListFeatures(
        self, request: pb.ListFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.FeatureCatalogue:
        try:
            bank_id = self.ctx.access.bank(context)
            allowed = set(self.ctx.access.features(bank_id, self.ctx.features.names))
            return pb.FeatureCatalogue(
                features=[
                    pb.FeatureInfo(
                        name=f.name, kind=f.kind, description=f.description, public=f.public
                    )
                    for f in self.ctx.features.catalogue()
                    if f.name in allowed
                ],
                enterprises=self.ctx.features.table.num_rows,
            )
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "catalogue", exc)
