"""Scoring with a stored model (the bureau's contribution u_B per matched applicant) and
the bureau's half of a scorecard."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import grpc
import numpy as np

from protocols import explain, scorecard
from protocols import vertical_lr as vlr
from protocols.errors import ProtocolViolation, QuotaExceeded
from protocols.features import FeatureRecipe
from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc

from .context import BureauContext

log = logging.getLogger(__name__)
SCORES_PER_MESSAGE = 65_536


class ScoringServicer(model_pb2_grpc.ScoringServicer):
    def __init__(self, ctx: BureauContext) -> None:
        self.ctx = ctx
        self._making: set[str] = set()  # banks with a scorecard being made
        self._making_lock = threading.Lock()

    @contextlib.contextmanager
    def _one_scorecard_at_a_time(self, bank_id: str) -> Iterator[None]:
        """Each bank makes one scorecard at a time: a review held 33 such calls open (when
        each checked the bureau's whole table) and starved another bank's calls for 104 s."""
        with self._making_lock:
            if bank_id in self._making:
                raise QuotaExceeded(
                    f"bank {bank_id} is making a scorecard already: one at a time; try again "
                    "when it is made"
                )
            self._making.add(bank_id)
        try:
            yield
        finally:
            with self._making_lock:
                self._making.discard(bank_id)

    def MakeScorecard(
        self, request: pb.ScorecardRequest, context: grpc.ServicerContext
    ) -> pb.ScorecardMade:
        try:
            bank_id = self.ctx.access.bank(context)
            with self._one_scorecard_at_a_time(bank_id):
                return self._make_scorecard(bank_id, request)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "scorecard", exc)

    def _make_scorecard(self, bank_id: str, request: pb.ScorecardRequest) -> pb.ScorecardMade:
        scaling = scorecard.Scaling(request.base_score, request.pdo, request.base_odds)
        scaling.check()
        model = self.ctx.models.load(bank_id, request.model_id)
        recipe = FeatureRecipe.from_json(model["recipe"])
        slope = request.slope or 1.0
        if not (np.isfinite(slope) and 0 < slope < 100):
            raise ProtocolViolation(f"a calibration slope of {slope} is not plausible")
        kept = model.get("scorecard")
        if kept and kept["scaling"] == vars(scaling) and kept.get("slope") == slope:
            # made already: no new record (a review's 5,000 calls in 27 s were 5,000 signed
            # records, about 9 GB of audit log a day from one thread)
            return pb.ScorecardMade(
                model_id=request.model_id, features=len(recipe.columns), bins=len(kept["points"])
            )
        self.ctx.access.charge(bank_id, "daily_scorecards", 1)
        points = scorecard.points_table(recipe, slope * np.asarray(model["weights"]), scaling)
        made = {"scaling": vars(scaling), "slope": slope, "points": points}
        self.ctx.models.amend(bank_id, request.model_id, {"scorecard": made})
        log.info(
            "scorecard for model %s of bank %s: %d bins", request.model_id, bank_id, len(points)
        )
        self.ctx.record(bank_id, "scorecard", "OK", model_id=request.model_id, bins=len(points))
        return pb.ScorecardMade(
            model_id=request.model_id, features=len(recipe.columns), bins=len(points)
        )

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.KeptModels:
        """What the bank already knows of its own models, and its limit: no record needed."""
        try:
            bank_id = self.ctx.access.bank(context)
            kept = [
                pb.KeptModel(
                    model_id=m["model_id"],
                    created=m["created"],
                    features=m["features"],
                    epoch=m["epoch"],
                    psi_session_id=m["psi_session_id"],
                    scorecard=m["scorecard"],
                )
                for m in self.ctx.models.list(bank_id)
            ]
            limit = self.ctx.access.policy(bank_id).max_models
            return pb.KeptModels(models=kept, limit=limit)
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "models_listed", exc)

    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.ModelDeleted:
        """One of the calling bank's own models, with its lookup tables, on record."""
        try:
            bank_id = self.ctx.access.bank(context)
            removed = self.ctx.models.delete(bank_id, request.model_id)
            self.ctx.record(bank_id, "model_deleted", "OK", model_id=request.model_id, by="bank")
            log.info("model %s of bank %s deleted by the bank", request.model_id, bank_id)
            return pb.ModelDeleted(model_id=request.model_id, lookup_tables_removed=len(removed))
        except Exception as exc:  # noqa: BLE001
            # nothing deleted: within the caller's refusal budget, as any refusal of nothing
            self.ctx.refuse(context, "model_deleted", exc)

    def ScoreApplicants(
        self, request: pb.ScoreRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ApplicantScores]:
        try:
            bank_id = self.ctx.access.bank(context)
            model = self.ctx.models.load(bank_id, request.model_id)
            ids = self.ctx.store.session_matched_ids(bank_id, request.psi_session_id)
            recipe = FeatureRecipe.from_json(model["recipe"])
            # the bank's policy today, not the one the model was trained under: a feature
            # taken out of its configuration is not scored any more
            self.ctx.check_model_served(bank_id, model)
            if request.points:
                # a row's bureau points were a second, binned projection of its features,
                # each bin's points rounded at a scale the bank chose: a threshold per
                # feature, and a review's bank read two private flags of 3,000 enterprises
                # exactly (343 and 694 named, none false) from six scorecards of one honest
                # model. No client used them: a row's points are its calibrated score's.
                raise ProtocolViolation(
                    "the bureau does not serve scorecard points per row: a row's points are "
                    "those of its calibrated score, computed at the bank (bank-node predict "
                    "--scorecard, or predict_proba(points=True))"
                )
            # every row counts, the model's own training rows too: their scores u_B are
            # the bureau's features seen through the model's weights (charged last: a
            # refused request costs nothing). And as lookups: a session of any enterprises
            # the bank names reads their u_B as a private lookup would (a review read 300
            # after its lookup quota of 10 was spent); the model's own training session
            # not, whose scores the bank received with the model
            charges: dict[str, float] = {"daily_scored": len(ids)}
            if request.psi_session_id != model.get("psi_session_id"):
                charges["daily_lookup_ids"] = len(ids)
            self.ctx.access.charge_all(bank_id, charges)
            rows = self.ctx.features.rows_of(ids)
            x = recipe.transform(rows)
            scores = vlr.served_scores(x, np.asarray(model["weights"])).astype("<f8")
            public = self.ctx.features.public
            names, reasons = reason_codes(recipe, model, x, request.reasons, public)
            self.ctx.record(
                bank_id,
                "scoring",
                "OK",
                model_id=request.model_id,
                psi_session_id=request.psi_session_id,
                rows=len(ids),
                reasons=reasons.shape[1],
            )
            log.info(
                "scored %d applicants with model %s for bank %s",
                len(ids),
                request.model_id,
                bank_id,
            )
            for start in range(0, max(len(scores), 1), SCORES_PER_MESSAGE):
                yield pb.ApplicantScores(
                    offset=start,
                    total=len(scores),
                    scores=scores[start : start + SCORES_PER_MESSAGE].tobytes(),
                    reason_features=names if start == 0 else [],
                    reasons=reasons[start : start + SCORES_PER_MESSAGE].tobytes(),
                )
        except Exception as exc:  # noqa: BLE001
            self.ctx.refuse(context, "scoring", exc)


def reason_codes(
    recipe: FeatureRecipe, model: dict, x: np.ndarray, asked: int, public: frozenset[str]
) -> tuple[list[str], np.ndarray]:
    """Per row, 1 + the index of each of the (at most 3) bureau features pushing the score
    most towards default (0: none), as uint8, ranked among the ``public`` features only.

    Naming a feature tells on which side of the average training client its value lies:
    for a 0/1 flag (the abnormal-operation list) that is the value itself, and a review read
    three private flags of every enterprise exactly from a model's lookup table. A public
    feature's value is anyone's to look up, so naming it tells nothing new; private features
    are neither named nor ranked (ranking them would show through which public ones are
    left out)."""
    k = min(int(asked), explain.MAX_REASONS)
    names = [c.name for c in recipe.columns]
    if not k or len(names) > 255:
        return ([], np.zeros((len(x), 0), dtype=np.uint8))
    widths = [len(c.outputs) for c in recipe.columns]
    contrib = explain.contributions(x, np.asarray(model["weights"]), widths)
    nameable = np.array([n in public for n in names], dtype=bool)
    contrib = np.where(nameable[None, :], contrib, -np.inf)
    return names, (explain.top_reasons(contrib, k) + 1).astype(np.uint8)
