"""Federated binning for information value: the bureau bins its features and sums the
bank's encrypted labels per bin; it never sees a label, the bank never sees a split point.

Per bin the bank gets its count of positives and of negatives, each with discrete Gaussian
noise added before packing (each vector summing to zero over a feature's bins; rho-zCDP per
feature from the bank's policy, charged against its daily budget), so that labels chosen to
single out one enterprise (all 0 but one) do not point at that enterprise's bins, and no
exact bin size does either (two sessions differing in one ID read its bin from those).

The bins are fitted on the bureau's whole table, never on a session's rows: fitted on the
session, whether a feature kept two bins of at least ``min_bin_count`` rows (``max_bins =
2``) told the bank how many of its rows had a flag, and a binary search over sessions with
and without a target read the target's flag exactly, whatever the noise and within a day's
budget; and one row more moved the quantile edges, and blocks of tied rows with them. Which
features are released (more than one bin) and how many bins each has are now the same for
every session. Every refusal comes before the data are touched and depends only on what the
bank sent and knows (its session's size, the catalogue, its budget); the request is charged
for every feature it names before a feature is binned, released or not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import numpy as np

from node_runtime.transport import model_codec as codec
from protocols import binning
from protocols import paillier as he
from protocols.errors import PolicyViolation, ProtocolViolation, QuotaExceeded
from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc

from .context import BureauContext

log = logging.getLogger(__name__)


class BinningServicer(model_pb2_grpc.BinningServicer):
    def __init__(self, ctx: BureauContext) -> None:
        self.ctx = ctx

    def CheckIvBudget(
        self, request: pb.IvBudgetRequest, context: grpc.ServicerContext
    ) -> pb.IvBudget:
        """The charge a request over these features would make, checked against today's
        budget and counted nowhere (a review's bank ran its PSI session, charged to its
        PSI quota, only to be refused on the budget after it)."""
        try:
            bank_id = self.ctx.access.bank(context)
            names = self.ctx.choose(bank_id, request.features)
            spent = binning.BinNoise(self.ctx.access.policy(bank_id).iv_rho_per_feature).rho
            spent *= len(names)
            self.ctx.access.charge_all(
                bank_id, {"daily_iv_requests": 1, "iv_rho_per_day": spent}, dry_run=True
            )
            return pb.IvBudget(rho=spent, features=len(names))
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "iv_budget", exc)

    def BinLabels(
        self, request_iterator: Iterator[pb.EncryptedLabels], context: grpc.ServicerContext
    ) -> pb.BinnedLabelSums:
        try:
            charged: dict[str, object] = {}  # on the record of a failure after the charge
            bank_id = self.ctx.access.bank(context)
            first: pb.EncryptedLabels | None = None
            key = None
            received = total = 0
            # per feature and bin, the product of its rows' encrypted labels so far: summed
            # as the chunks arrive, so no label ciphertext is kept past its chunk
            sums: list[list[he.mpz]] = []
            for chunk in request_iterator:
                if first is None:
                    first, total = chunk, chunk.total
                    # the session's size, then the key's proof (0.15 s at 4,096 bits), then
                    # its IDs: a refusal on what the bank sent costs the bureau little
                    matched = self.ctx.store.session_size(bank_id, chunk.psi_session_id)
                    if total != matched:
                        raise ProtocolViolation(
                            f"{total} labels announced; PSI session {chunk.psi_session_id} "
                            f"matched {matched} rows"
                        )
                    if not 2 <= chunk.max_bins <= binning.MAX_BINS:
                        raise ProtocolViolation(f"max_bins must be from 2 to {binning.MAX_BINS}")
                    key = codec.key_from_bytes(
                        chunk.bank_public_key, self.ctx.limits.allow_test_keys, chunk.bank_key_proof
                    )
                    if matched < self.ctx.limits.min_rows:
                        raise PolicyViolation(
                            f"only {matched} shared rows; information value needs at least "
                            f"{self.ctx.limits.min_rows}"
                        )
                    names = self.ctx.choose(bank_id, chunk.features)
                    bin_noise = binning.BinNoise(self.ctx.access.policy(bank_id).iv_rho_per_feature)
                    spent = bin_noise.rho * len(names)  # zCDP composes by addition
                    # the session first: a request refused for a used session costs no budget;
                    # then the charge, for every feature named, before any is binned
                    self.ctx.store.use_session_once(bank_id, chunk.psi_session_id, "binned")
                    try:
                        self.ctx.access.charge_all(
                            bank_id, {"daily_iv_requests": 1, "iv_rho_per_day": spent}
                        )
                    except QuotaExceeded:
                        self.ctx.store.release_session_use(chunk.psi_session_id, "binned")
                        raise
                    charged = {"rho": spent, "features_charged": len(names)}
                    ids = self.ctx.store.session_matched_ids(bank_id, chunk.psi_session_id)
                    columns = self._bins(names, ids, chunk.max_bins)
                    sums = [[he.mpz(1)] * bins.count for bins in columns]
                    nsquare = he.mpz(key.nsquare)
                elif chunk.total != total:
                    raise ProtocolViolation("chunks of labels disagree on the total")
                if chunk.offset != received:
                    raise ProtocolViolation("chunks of labels arrived out of order")
                assert key is not None
                parsed = he.ciphertexts_from_bytes(chunk.labels, key)
                if not parsed and chunk is not first:  # kept the stream open, doing nothing
                    raise ProtocolViolation("an empty chunk of labels after the first")
                if received + len(parsed) > total:
                    raise ProtocolViolation("more labels than announced")
                for bins, feature_sums in zip(columns, sums, strict=True):
                    rows = bins.index[received : received + len(parsed)].tolist()
                    for b, c in zip(rows, parsed, strict=True):
                        feature_sums[b] = feature_sums[b] * c % nsquare
                received += len(parsed)
            if first is None or key is None or received != total:
                raise ProtocolViolation("the labels ended before all announced chunks arrived")
            peer = he.PeerEncryptor(key)
            slot_bits = bin_noise.slot_bits(total)
            out = pb.BinnedLabelSums(rho_charged=spent)
            for bins, feature_sums in zip(columns, sums, strict=True):
                # positives per bin, then negatives (the bin's rows less its positives): no
                # exact bin size leaves, and the noise goes in before packing, so no exact
                # count does
                sizes = np.bincount(bins.index, minlength=bins.count).tolist()
                negatives = he.plain_minus(sizes, feature_sums, key)
                noisy = he.add_plain(feature_sums, bin_noise.sample(bins.count), key)
                noisy += he.add_plain(negatives, bin_noise.sample(bins.count), key)
                out.features.append(
                    pb.FeatureBins(
                        name=bins.name,
                        kind=bins.kind,
                        bins=bins.count,
                        ordered=bins.ordered,
                        missing_bin=-1 if bins.missing_bin is None else bins.missing_bin,
                        slot_bits=slot_bits,
                        sums=he.ciphertexts_to_bytes(he.pack_sums(noisy, slot_bits, peer), key),
                        noise_offset=bin_noise.offset,
                        noise_scale=bin_noise.sigma,  # the discrete Gaussian's sigma
                        epsilon=bin_noise.rho,  # the field carries the zCDP rho charged
                    )
                )
            self.ctx.record(
                bank_id,
                "information_value",
                "OK",
                psi_session_id=first.psi_session_id,
                rows=total,
                features=len(columns),
                features_charged=len(names),
                max_bins=first.max_bins,
                rho=spent,
            )
            log.info("binned %d labels of bank %s over %d features", total, bank_id, len(columns))
            return out
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "information_value", exc, **charged)

    def _bins(self, names: list[str], ids: list[str], max_bins: int) -> list[binning.ColumnBins]:
        """The bins of the features named over the session's rows, by rules fitted on the
        whole table (bins of at least the bureau's ``min_bin_count`` enterprises there):
        which features are released (more than one bin) and how many bins each has follow
        no session. The bank merges small bins itself, on the noisy counts."""
        rules = self.ctx.features.bin_rules(names, max_bins, self.ctx.limits.min_bin_count)
        rows = self.ctx.features.rows_of(ids)
        return [
            rules[n].apply(rows.column(n))
            for n in names
            if rules[n].count >= binning.MIN_RELEASED_BINS
        ]
