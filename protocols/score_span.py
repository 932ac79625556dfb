"""What a bank can read from the bureau's scores of several models taken together.

Each joint model gives the bank, for every enterprise it looks up, the bureau's part of the
score, ``u_m = x_B . w_m`` (clipped). Every linear combination ``sum_m a_m u_m`` is then open
to it as well, and with enough models over the same features the combinations reach a
feature's own value: a review read the abnormal-operation flag of 4,000 of 4,000 enterprises
with 20 honest-looking models, and three models on the same three features read all three
(SECURITY.md, "Several models"). One model alone can do it too when one feature carries
nearly all of its score.

The bureau knows every model's weights and its own table, so before it keeps one more model
it measures the best such read (``readable_shares``): each feature's inputs regressed on the
scores and on what the bank can look up anyway (the public features), each enterprise's
level of the feature read from the fitted values, and the share read right beyond guessing
the commonest level. A linear read with the answer at hand bounds what a bank without it
finds by searching the span (the review's clustering found the flag exactly where it lay in
the span); a bank's non-linear tricks on clipped scores are not covered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .features import ColumnRecipe

MAX_LEVELS = 10  # a number with more distinct values is read by its deciles


@dataclass(frozen=True)
class FeatureLevels:
    """One feature's inputs on the sampled enterprises (unstandardised: rows x outputs),
    each enterprise's level, and how a read of the inputs is turned into a level."""

    inputs: np.ndarray
    levels: np.ndarray
    category: bool
    edges: np.ndarray  # numbers: between levels of the value (never on a value)
    missing_flag: bool = False
    per_row: float = 1.0  # enterprises of the whole table each sampled row stands for

    def level_of(self, read: np.ndarray) -> np.ndarray:
        """The level that exact (or nearly exact) inputs are at."""
        if self.category:
            return np.argmax(read, axis=1)
        out = np.searchsorted(self.edges, read[:, 0], side="right")
        if self.missing_flag:
            out = np.where(read[:, 1] > 0.5, len(self.edges) + 1, out)
        return out

    def share_read(self, read: np.ndarray) -> float:
        """Of the rows not at the commonest level, the share by which the best naming of
        levels from ``read`` (fitted inputs, rows x outputs) gets them right beyond
        guessing that level: (right - commonest) / (rows - commonest). A midpoint cut of
        the fit had missed most of a rare flag that a bank's own cut, fitted on its
        clients' flags, read (a review: 0.20 measured, 0.69 read); so this is the best of
        naming each level against the rest by the best threshold on its fitted value (is
        this enterprise listed? has it a court case?), and of naming all levels at once,
        the commonest within each of up to ``MAX_CELLS`` cells of the fit. Both are
        measured on the rows they are chosen on, which errs towards more read."""
        rows = len(self.levels)
        cells = max(4, min(MAX_CELLS, rows // ROWS_PER_CELL))
        # (the fitted column a level is read from, the levels read from it)
        if self.category:
            confidence = _quantile_cells(read.max(axis=1), cells)
            together = np.argmax(read, axis=1) * cells + confidence
            each = [(read[:, level], [level]) for level in range(read.shape[1])]
        else:
            together = _quantile_cells(read[:, 0], cells)
            each = [(read[:, 0], [int(level) for level in np.unique(self.levels)])]
            if self.missing_flag:
                together = together * 4 + _quantile_cells(read[:, 1], 4)
                each.append((read[:, 1], [len(self.edges) + 1]))
        floor = MIN_READ_ENTERPRISES / self.per_row
        shares = [_share_right(together, self.levels, floor)]
        for score, levels in each:
            ranked = _Ranked.of(score)  # once for every level read from this column
            shares += [ranked.share(self.levels == level, floor) for level in levels]
        return max(shares)


MAX_CELLS = 64  # cells of a fitted value within which the commonest level is named ...
ROWS_PER_CELL = 300  # ... each of at least this many rows (fewer cells on fewer rows)


def _quantile_cells(values: np.ndarray, cells: int) -> np.ndarray:
    """Each value's cell among ``cells`` of equal counts (ties kept together)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, cells + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


@dataclass(frozen=True)
class _Ranked:
    """A fitted column's rows from the highest value down, and where each run of ties
    ends: what every threshold on it names."""

    order: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, score: np.ndarray) -> _Ranked:
        order = np.argsort(-score, kind="stable")
        return cls(order, np.r_[np.flatnonzero(np.diff(score[order])) + 1, len(score)])

    def share(self, truth: np.ndarray, floor: float = 0.0) -> float:
        """The best rule "the rows scoring at least (or at most) t are the ones": (right -
        commonest) / (rows - commonest) over every t, ties kept together."""
        rows, positives = len(truth), int(np.count_nonzero(truth))
        common = max(positives, rows - positives)
        if rows <= common:
            return 0.0
        above = np.cumsum(truth[self.order])[self.ends - 1]  # positives among those named
        right_top = above + (rows - positives) - (self.ends - above)  # name the top rows
        right_bottom = rows - right_top  # name the others
        best = max(int(right_top.max()), int(right_bottom.max()), common)
        return _beyond_guessing(best, common, rows, floor)


def _share_right(cells: np.ndarray, levels: np.ndarray, floor: float = 0.0) -> float:
    """(right - commonest) / (rows - commonest), naming each cell's commonest level; 0 when
    every row is at one level."""
    counts = np.zeros((int(cells.max()) + 1, int(levels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (cells, levels), 1)
    common = int(counts.sum(axis=0).max())
    rows = len(levels)
    if rows <= common:
        return 0.0
    return _beyond_guessing(int(counts.max(axis=1).sum()), common, rows, floor)


# A read counts only when it names at least this many of the bureau's enterprises beyond
# guessing: two honest models on the same rows differ by their training's randomness, and
# their difference singled out a rare legal form's handful of enterprises, so that a bank
# could not train twice. (A first floor of 1% of the table hid a flag on 0.9% of a city,
# which one model read whole: a review; at a million enterprises that is 9,000.)
MIN_READ_ENTERPRISES = 20


def _beyond_guessing(right: int, common: int, rows: int, floor: float) -> float:
    """(right - common) / (rows - common), 0 when it names fewer than ``floor`` rows beyond
    guessing."""
    if right - common < max(floor, 1e-9):
        return 0.0
    return (right - common) / (rows - common)


def column_levels(column: ColumnRecipe, inputs: np.ndarray, per_row: float = 1.0) -> FeatureLevels:
    """``inputs``: ``column.raw`` over the sample. A category's levels are its own; a
    number's are its distinct values when there are at most ``MAX_LEVELS``, else its deciles
    (cut between distinct values, so a read within rounding of a value keeps its level), and
    a missing value is a level of its own. ``per_row``: how many of the bureau's
    enterprises each sampled row stands for."""
    if column.kind == "category":
        levels = np.argmax(inputs, axis=1)
        return FeatureLevels(inputs, levels, True, np.zeros(0), per_row=per_row)
    value = inputs[:, 0]
    missing = inputs[:, 1] > 0.5 if column.missing_flag else np.zeros(len(value), dtype=bool)
    present = np.unique(value[~missing])
    if len(present) <= MAX_LEVELS:
        edges = (present[:-1] + present[1:]) / 2
    else:  # each interior decile moved to the middle of the gap above it
        deciles = np.quantile(value[~missing], np.linspace(0, 1, MAX_LEVELS + 1))[1:-1]
        above = np.clip(np.searchsorted(present, deciles, side="right"), 1, len(present) - 1)
        edges = np.unique((present[above - 1] + present[above]) / 2)
    unlevelled = FeatureLevels(inputs, np.zeros(0), False, edges, column.missing_flag, per_row)
    return dataclasses.replace(unlevelled, levels=unlevelled.level_of(inputs))


def span_basis(known: np.ndarray) -> np.ndarray:
    """An orthonormal basis (rows x rank) of the constant and the columns of ``known``:
    everything the bank can form from them linearly."""
    rows = known.shape[0]
    whole = np.column_stack([np.ones(rows), known]) if known.size else np.ones((rows, 1))
    scale = np.abs(whole).max(axis=0)
    whole = whole / np.where(scale > 0, scale, 1.0)
    q, r = np.linalg.qr(whole)
    diagonal = np.abs(np.diag(r))
    return q[:, diagonal > 1e-9 * max(diagonal.max(), 1e-300)]


def readable_share(basis: np.ndarray, feature: FeatureLevels) -> float:
    """What the best linear read from ``basis`` gives of the feature's levels: its fitted
    values, then the best way of naming a level from them (``FeatureLevels.share_read``)."""
    return feature.share_read(basis @ (basis.T @ feature.inputs))


def readable_shares(known: np.ndarray, features: dict[str, FeatureLevels]) -> dict[str, float]:
    """``readable_share`` of each feature, from the columns of ``known`` (rows x k: the
    scores a bank opens for each enterprise, and the public features' inputs)."""
    basis = span_basis(known)
    return {name: readable_share(basis, feature) for name, feature in features.items()}


# A set of models may read a feature as well as the best of them does alone, and this much
# better (honest retrains on default_credit: 0.815 alone, 0.819 with three); never beyond
# CAP, where a score is one feature's value in all but name (a model resting on one
# feature, its others given a token weight, passes min_bureau_features).
GAIN_OVER_ALONE = 0.1
CAP = 0.9


@dataclass(frozen=True)
class SpanVerdict:
    """Per feature: what the models read together, what each reads alone, the bound."""

    together: dict[str, float]
    each: tuple[dict[str, float], ...]
    limit: float

    @property
    def alone(self) -> dict[str, float]:
        """The best any one model reads of each feature."""
        return {n: max((one[n] for one in self.each), default=0.0) for n in self.together}

    def bound(self, name: str) -> float:
        return self._bound(self.alone[name])

    def _bound(self, alone: float) -> float:
        return max(self.limit, min(CAP, alone + GAIN_OVER_ALONE))

    @property
    def over(self) -> dict[str, float]:
        """The features read beyond their bound."""
        alone = self.alone
        return {n: v for n, v in self.together.items() if v > self._bound(alone[n])}

    def over_alone(self, model: int) -> dict[str, float]:
        """The features one model reads beyond the bound of a set of it alone: beyond
        ``CAP`` (or the limit, if higher)."""
        return {n: v for n, v in self.each[model].items() if v > max(self.limit, CAP)}


def judge_models(
    models: list[np.ndarray], public: np.ndarray, features: dict[str, FeatureLevels], limit: float
) -> SpanVerdict:
    """``models``: per model, what a bank may open of it for each enterprise (rows x k: the
    bureau's part of its score as served); ``public``: the public features' inputs;
    ``limit``: what any set of models may read (``readable_share``) of a feature, whatever
    its models read alone."""
    together = readable_shares(np.column_stack([*models, public]), features)
    each = tuple(readable_shares(np.column_stack([served, public]), features) for served in models)
    return SpanVerdict(together, each, limit)
