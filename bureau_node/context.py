"""What the bureau's model servicers share: the data, the stores, the policy and the log.

Each gRPC service has its own thin servicer (catalogue, training, binning, scoring); they
all read and write through one :class:`BureauContext`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import numpy as np

from node_runtime.transport.errors import abort_with
from protocols import score_span
from protocols import vertical_lr as vlr
from protocols.errors import NotAuthorised, PolicyViolation, ProtocolViolation
from protocols.features import FeatureRecipe

from .audit import AuditLog
from .config import Access
from .features import BureauFeatures
from .models import ModelStore
from .store import BureauStore

log = logging.getLogger(__name__)

# A feature counts towards min_bureau_features in a finished model only if its inputs vary
# among the training rows (at least this share of them off its most common value) ...
MIN_VARYING_SHARE = 0.01
# ... and it carries at least this share of the spread of the model's bureau score over the
# bureau's enterprises. Both catch features that carry nothing (constant on a chosen session,
# no weight), which make a one-feature model exact; neither bounds a dominant feature: an
# honest default_credit model rests 90% on x5 (a centralised fit), and an honest model on
# three of the synthetic city's features gave registered capital 0.36%
MIN_SCORE_SHARE = 1e-4
# What a bank's models read together is measured on this many of the bureau's enterprises
# (evenly spread over its table): shares to about a percentage point, in a second.
SPAN_SAMPLE_ROWS = 20_000


@dataclass
class BureauContext:
    features: BureauFeatures
    store: BureauStore
    models: ModelStore
    limits: vlr.TrainingLimits
    access: Access
    audit: AuditLog | None = None
    executor: Executor | None = None
    _keeping: dict[str, threading.Lock] = dataclasses.field(default_factory=dict)
    _keeping_guard: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def record(self, bank_id: str, event: str, outcome: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.append(bank_id, event, outcome, **details)

    def refuse(
        self, context: grpc.ServicerContext, event: str, exc: BaseException, **details: Any
    ) -> NoReturn:
        """Record the refusal (before the answer leaves), then answer with its status."""
        recorded = self.audit.refusal(context, event, exc, **details) if self.audit else True
        abort_with(context, exc, quiet=not recorded)

    def limits_for(self, bank_id: str) -> vlr.TrainingLimits:
        """The bureau-wide floor, raised by the bank's own configuration."""
        floor = max(self.limits.min_batch_size, self.access.policy(bank_id).min_batch_size)
        return dataclasses.replace(self.limits, min_batch_size=floor)

    def choose(self, bank_id: str, requested: Sequence[str]) -> list[str]:
        """The features a job uses: those asked for (default: all), all of them allowed."""
        self.check_feature_count(requested)
        requested = tuple(requested)
        allowed = self.access.features(bank_id, self.features.names)
        # a feature withheld from this bank is answered as one the bureau does not hold: a
        # review read which features exist (licensed to other banks) from the difference
        unknown = [f for f in requested if f not in allowed]
        if unknown:
            shown = ", ".join(unknown[:5]) + (
                f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            )
            raise PolicyViolation(
                f"the bureau has no features named {shown} for bank {bank_id}; "
                "ask ListFeatures for its catalogue"
            )
        names = self.features.choose(requested or tuple(allowed))
        if not names:
            raise NotAuthorised(f"bank {bank_id} may use none of the bureau's features")
        return names

    def check_feature_count(self, requested: Sequence[str]) -> None:
        """A list longer than the catalogue names something twice or something unknown:
        refused before anything is built from it (a review's 1,150,000 names in one 8 MB
        call, 16 such calls at once, took the bureau from 209 MB to 2 GB)."""
        if len(requested) > len(self.features.names):
            raise ProtocolViolation(
                f"{len(requested):,} features named, more than the bureau's catalogue holds "
                f"({len(self.features.names)}); ask ListFeatures for it"
            )

    def choose_for_model(self, bank_id: str, requested: Sequence[str]) -> list[str]:
        """:meth:`choose`, and at least the bank's ``min_bureau_features`` of them: the score
        of a model on one feature is an affine function of its raw value (or, for a category,
        names each row's level), and the bank receives that score for every training row."""
        names = self.choose(bank_id, requested)
        minimum = self.access.policy(bank_id).min_bureau_features
        # names are features: a category counts once; a public one not at all (the bank can
        # look it up and take its part out of the score)
        private = [n for n in names if n not in self.features.public]
        if len(private) < minimum:
            public = len(names) - len(private)
            raise NotAuthorised(
                f"a joint model must use at least {minimum} of the bureau's non-public "
                f"features (a category counts once, however many levels it has; a public one, "
                f"such as a registry field, not at all); this plan names {len(private)}"
                + (f" and {public} public" if public else "")
                + f" ({', '.join(names)}): add bureau features with --bureau-features, or "
                "leave it out to use all of them (`bank-node features` marks the public ones)"
            )
        return names

    def check_exposure(
        self, recipe: FeatureRecipe, limit: float, bank_id: str | None = None
    ) -> None:
        """Refuses a model whose score, on more than ``limit`` of the bureau's enterprises,
        would be an affine function of one feature: in groups of enterprises that share all
        the other features' values (a review trained honestly on court judgements, total
        assets and the debt ratio, and read the court counts of the 62% of enterprises that
        file no statements exactly, by looking their scores up)."""
        exposed = _over(recipe.exposure(self.features.table, self.features.public), limit)
        if exposed:
            log.info("a model refused: exposure %s", exposed)
            allowed = self.access.features(bank_id, self.features.names) if bank_id else []
            if bank_id and set(recipe.names) >= set(allowed):  # more features: none left
                advice = (
                    f"it uses every bureau feature bank {bank_id} may use, so training again "
                    "is refused alike: leave out the features that vary alone (fewer, "
                    "--bureau-features), or ask the bureau's operator about the policy "
                    "(max_feature_exposure)"
                )
            else:
                advice = (
                    "train with more bureau features, or with features that vary among more "
                    "enterprises"
                )
            raise NotAuthorised(
                f"this model is refused: on more than {limit:.0%} of the bureau's enterprises "
                "its score would be one feature's value, in groups that share the values of "
                "all the other features (missing statements, no records, one industry), so a "
                f"looked-up score would give that value ({len(exposed)} of the "
                f"{len(recipe.names)} features): {advice}"
            )

    def keeping_models(self, bank_id: str) -> threading.Lock:
        """Held while a bank's finished model is checked with its others and saved: two of
        its jobs finishing at once are each checked with the other (other banks' are not
        waited for)."""
        with self._keeping_guard:
            return self._keeping.setdefault(bank_id, threading.Lock())

    def check_models_together(self, bank_id: str, model: dict[str, Any], limit: float) -> None:
        """Refuses a new model (``recipe``, ``weights``) that, alone or with the bank's other models
        (kept, or deleted in the last year: their scores stay with the bank), would let
        linear combinations of their served scores read a non-public feature's level beyond the
        bound of ``score_span.judge_models`` (a review read a watch-list flag of 4,000 of
        4,000 enterprises from 20 models; three models on the same three features read all
        three; one model resting on a rare flag read 97% of it)."""
        table = _span_sample(self.features.table)
        per_row = self.features.table.num_rows / max(table.num_rows, 1)
        public = sorted(n for n in self.features.public if n in self.features.kinds)
        known = (
            FeatureRecipe.fit(table, public, self.features.layouts(public)).transform(table)
            if public
            else np.zeros((table.num_rows, 0))
        )
        others = [m for m in self.models.served(bank_id) if m["model_id"] != model.get("model_id")]
        targets: dict[str, score_span.FeatureLevels] = {}
        served = []
        for one in [model, *others]:
            # a feature the bureau no longer holds is taken out: the bank keeps the scores
            # it opened, and they still carry the others (a review dropped a column and
            # kept four more models, then read the flag from all nine)
            recipe, weights = _held_part(
                FeatureRecipe.from_json(one["recipe"]), one["weights"], table.column_names
            )
            if not recipe.columns:
                continue
            served.append(vlr.served_scores(recipe.transform(table), weights)[:, None])
            for column in recipe.columns:
                if column.name not in targets and column.name not in public:
                    raw = column.raw(table.column(column.name))
                    targets[column.name] = score_span.column_levels(column, raw, per_row)
        verdict = score_span.judge_models(served, known, targets, limit)
        alone = verdict.over_alone(0)
        if alone:
            log.info("a model of bank %s refused: alone it reads %s", bank_id, alone)
            raise NotAuthorised(
                "the model is not kept: what it serves alone would read "
                f"{_features_read(alone)} for more than {score_span.CAP:.0%} of the "
                "enterprises beyond guessing: a score that is one feature's value in all "
                "but name (max_readable_share). A model of few epochs can rest on a few "
                "rare features: train for more epochs, or on more or other bureau features, "
                "so that no one of them carries the score (the bureau's operator can say "
                "which were read: its log names them)"
            )
        over = verdict.over
        if over:
            log.info("a model of bank %s refused: read with its others %s", bank_id, over)
            raise NotAuthorised(
                f"the model is not kept: with the bank's {len(served) - 1} other models at "
                "the bureau (kept, or deleted in the last year: the scores they served stay "
                f"with the bank), sums of the scores would read {_features_read(over)} "
                f"for more than {limit:.0%} of the enterprises beyond guessing, and more "
                "than any of them reads alone (max_readable_share); train on more bureau "
                "features, or on features the other models do not use; deleting a model "
                "does not help, but the bureau's operator may forget deleted ones whose "
                "scores are stale (`bureau-node models forget`)"
            )

    def check_model_served(self, bank_id: str, model: dict[str, Any]) -> None:
        """A kept model is served (scored, its lookup table fetched) under today's policy:
        the bank's features and minimum, and the exposure rules again whenever the bureau's
        table or the features it marks public changed since the model was last checked (a
        model kept before a feature was marked public would otherwise be served on), or
        the exposure limit was changed (a model kept under a looser one stayed served)."""
        recipe = FeatureRecipe.from_json(model["recipe"])
        allowed = set(self.access.features(bank_id, self.features.names))
        withheld = [n for n in recipe.names if n not in allowed]
        if withheld:  # the bank trained on them: naming them tells it nothing new
            raise NotAuthorised(
                f"model {model['model_id']} uses bureau features bank {bank_id} may no longer "
                f"use ({', '.join(withheld)}): it is not served; train a new model"
            )
        self.choose_for_model(bank_id, tuple(recipe.names))
        limit = self.limits_for(bank_id).max_feature_exposure
        stamp = [self.features.version, sorted(self.features.public), limit]
        if model.get("policy_checked") == stamp:
            return
        self.check_exposure(recipe, limit)
        self.models.amend(bank_id, model["model_id"], {"policy_checked": stamp})

    def check_model_features(
        self, bank_id: str, recipe: FeatureRecipe, weights: np.ndarray, training: np.ndarray
    ) -> list[str]:
        """A finished model's bureau score must rest on ``min_bureau_features`` features,
        not only name them: a feature constant on a chosen session (every row missing, one
        category) adds nothing, and the score the bank can look up for any enterprise would
        then be an affine function of one raw value. ``training``: the model's inputs on its
        training rows. Returns the features that count; raises NotAuthorised when too few."""
        shares = recipe.contribution_shares(weights, self.features.table)
        varying = recipe.varying(training, MIN_VARYING_SHARE)
        counted = [
            n
            for n in recipe.names
            if n in varying and shares[n] >= MIN_SCORE_SHARE and n not in self.features.public
        ]
        minimum = self.access.policy(bank_id).min_bureau_features
        if len(counted) < minimum:
            # the count only: which features carried nothing is a bit about the session's
            # rows per feature (a session built around one target would read them)
            idle = [n for n in recipe.names if n not in counted]
            log.info("a model of bank %s refused: %s carried nothing", bank_id, idle)
            raise NotAuthorised(
                f"the model is not kept: its bureau score rests on {len(counted)} of its "
                f"{len(recipe.names)} bureau features that are not public and a model needs "
                f"{minimum}; the others are public or carried nothing (the same value on at "
                f"least {1 - MIN_VARYING_SHARE:.0%} of the training rows, e.g. missing for all "
                "of them, or no weight): train with more bureau features, or ones that vary "
                "among your clients"
            )
        return counted


def _held_part(
    recipe: FeatureRecipe, weights: list[float], held: list[str]
) -> tuple[FeatureRecipe, np.ndarray]:
    """The columns of a model the bureau still holds, and their weights."""
    columns, parts, start = [], [], 0
    for column in recipe.columns:
        width = len(column.outputs)
        if column.name in held:
            columns.append(column)
            parts.append(np.asarray(weights[start : start + width], dtype=np.float64))
        start += width
    return FeatureRecipe(columns), (np.concatenate(parts) if parts else np.zeros(0))


def _span_sample(table: Any) -> Any:
    """Up to ``SPAN_SAMPLE_ROWS`` rows of the bureau's table, evenly spread."""
    if table.num_rows <= SPAN_SAMPLE_ROWS:
        return table
    return table.take(np.linspace(0, table.num_rows - 1, SPAN_SAMPLE_ROWS).astype(np.int64))


def _features_read(over: dict[str, float]) -> str:
    """How many features a refused model would read; not which, nor how much (a review
    steered its labels by the share a refusal stated)."""
    return "one bureau feature" if len(over) == 1 else f"{len(over)} bureau features"


def _over(exposure: dict[str, float], limit: float) -> dict[str, float]:
    """The features exposed beyond ``limit``."""
    return {name: share for name, share in exposure.items() if share > limit}
