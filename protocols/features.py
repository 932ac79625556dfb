"""How each party turns its own columns into model inputs, fitted on its training rows only
and stored with its half of the model.

Numbers: clipped to training quantiles (heavy tails push the Taylor-approximated sigmoid
out of its accurate range: design notes, section 4), missing values filled with the
training median and flagged in a column of their own, then standardised. Text: one level per
frequent category, rarer ones and categories never seen in training share "other", missing
values a level of their own; levels are standardised like numbers.

The bureau decides which outputs a column has (the missing-value flag, the levels) from its
whole table (``ColumnLayout``), never from a session's rows: the bank is told how many
columns the bureau prepared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputDataError, ProtocolViolation

CLIP_QUANTILE = 0.005
MAX_LEVELS = 30  # categories kept per text column
# a category keeps a level of its own when it holds this share of the table, or this many
# rows in a large one: in a national or provincial table a share alone would fold a city's
# industries or districts (a bank's whole portfolio, perhaps) into one "other" column
MIN_LEVEL_SHARE = 0.005
MIN_LEVEL_ROWS = 100
VALUE_BOUND = 16.0  # |model input| after standardising; the encrypted arithmetic relies on it
OTHER = "__other__"
MISSING = "__missing__"


FEATURE_KINDS = ("numeric", "category")  # what column_kind says; a peer may say no other


def column_kind(array_type: pa.DataType) -> str:
    if (
        pa.types.is_integer(array_type)
        or pa.types.is_floating(array_type)
        or pa.types.is_boolean(array_type)
        or pa.types.is_null(array_type)
    ):
        return "numeric"
    if (
        pa.types.is_string(array_type)
        or pa.types.is_large_string(array_type)
        or pa.types.is_dictionary(array_type)
    ):
        return "category"
    raise InputDataError(f"columns of type {array_type} are not supported as features")


def _numbers(column: pa.ChunkedArray | pa.Array, name: str = "") -> np.ndarray:
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = next(
            (v for v in pc.cast(column, pa.string()).to_pylist() if v and not _is_number(v)), "?"
        )
        raise InputDataError(
            f"column {name or '(unnamed)'!r} holds {str(bad)[:40]!r} where a number is expected "
            "(it was numeric when the model or bins were made): fix or blank such cells"
        ) from None
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    out[~np.isfinite(out)] = np.nan
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _texts(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    values = pc.cast(column, pa.string())
    return np.array(
        [MISSING if v is None or v == "" else v for v in values.to_pylist()], dtype=object
    )


@dataclass
class ColumnRecipe:
    name: str
    kind: str  # "numeric" | "category"
    low: float = 0.0
    high: float = 0.0
    fill: float = 0.0
    missing_flag: bool = False
    levels: list[str] = field(default_factory=list)
    means: list[float] = field(default_factory=list)  # one per output
    stds: list[float] = field(default_factory=list)
    # numbers: the training deciles and each decile bin's median, for scorecards
    bin_edges: list[float] = field(default_factory=list)
    bin_values: list[float] = field(default_factory=list)

    @property
    def training_missing_share(self) -> float:
        """The share of the training rows without a value, as the model stores it (in every
        model.json, older ones too): the mean of a number's missing flag, or of a category's
        missing level; without either, none (a number) or too few to keep a level (a
        category's few are pooled with its other levels)."""
        if self.kind == "numeric":
            return self.means[1] if self.missing_flag and len(self.means) > 1 else 0.0
        return self.means[self.levels.index(MISSING)] if MISSING in self.levels else 0.0

    @property
    def outputs(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name}[missing]"] if self.missing_flag else [])
        return [f"{self.name}={level}" for level in self.levels]

    def raw(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Unstandardised outputs (rows x outputs)."""
        if self.kind == "numeric":
            x = _numbers(column, self.name)
            missing = np.isnan(x)
            x = np.clip(np.where(missing, self.fill, x), self.low, self.high)
            parts = [x] + ([missing.astype(np.float64)] if self.missing_flag else [])
            return np.column_stack(parts)
        texts = _texts(column)
        known = {level: i for i, level in enumerate(self.levels)}
        other = known[OTHER]
        codes = np.array([known.get(t, other) for t in texts], dtype=np.int64)
        out = np.zeros((len(texts), len(self.levels)))
        out[np.arange(len(texts)), codes] = 1.0
        return out


@dataclass(frozen=True)
class ColumnLayout:
    """Which outputs a column has, decided from a whole table rather than from the training
    rows: the bureau's columns must not depend on which enterprises a bank's session holds
    (a flag column for missing values, or a category level, present only when one target
    is in the session would tell the bank that target's value through the column count it
    is told). For numbers it also carries the whole table's clipping range (training values
    are held inside it, so no one enterprise's extreme value decides whether a session can
    be standardised), its median (``fill``, when the training rows have no value) and its
    decile bins with each bin's median (a scorecard's bins, and the points of a bin no
    training row falls in)."""

    missing_flag: bool = False
    levels: tuple[str, ...] = ()
    fill: float = 0.0
    low: float = -math.inf
    high: float = math.inf
    edges: tuple[float, ...] = ()
    medians: tuple[float, ...] = ()

    @property
    def outputs(self) -> int:
        """How many model columns the feature has."""
        return len(self.levels) if self.levels else 1 + int(self.missing_flag)


def column_layout(column: pa.ChunkedArray | pa.Array) -> ColumnLayout:
    """The layout of a column over all its rows (the bureau's whole table)."""
    if column_kind(column.type) == "numeric":
        x = _numbers(column)
        present = x[~np.isnan(x)]
        if not present.size:
            return ColumnLayout(missing_flag=bool(x.size))
        low, high = np.quantile(present, [CLIP_QUANTILE, 1 - CLIP_QUANTILE])
        clipped = np.clip(present, low, high)
        edges = _decile_edges(clipped)
        return ColumnLayout(
            missing_flag=bool(present.size < x.size),
            fill=float(np.median(present)),
            low=float(low),
            high=float(high),
            edges=tuple(edges.tolist()),
            medians=tuple(_bin_medians(clipped, edges, float(low))),
        )
    return ColumnLayout(levels=tuple(_frequent_levels(_texts(column))) + (OTHER,))


def _decile_edges(clipped: np.ndarray) -> np.ndarray:
    """Decile edges a committee can read: to 6 significant digits (an interpolated quantile
    printed as 22.800000000000068 in a review's scorecard), and none at or below the least
    value (a count's first bin read "< 0", holding no one)."""
    edges = np.quantile(clipped, np.linspace(0.1, 0.9, 9)) if clipped.size else np.zeros(0)
    edges = np.unique([float(f"{e:.6g}") for e in edges])
    return edges[edges > clipped.min()] if clipped.size else edges


def _bin_medians(clipped: np.ndarray, edges: np.ndarray, empty: float) -> list[float]:
    where = np.searchsorted(edges, clipped, side="right")
    return [
        float(np.median(clipped[where == b])) if np.any(where == b) else empty
        for b in range(len(edges) + 1)
    ]


def _frequent_levels(texts: np.ndarray) -> list[str]:
    levels, counts = np.unique(texts, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    floor = max(1, min(int(MIN_LEVEL_SHARE * len(texts)), MIN_LEVEL_ROWS))
    kept = [str(levels[i]) for i in order[:MAX_LEVELS] if counts[i] >= floor and levels[i] != OTHER]
    return sorted(kept)


def _fit_column(
    name: str, column: pa.ChunkedArray, layout: ColumnLayout | None = None
) -> ColumnRecipe:
    kind = column_kind(column.type)
    if kind == "numeric":
        x = _numbers(column)
        present = x[~np.isnan(x)]
        if present.size == 0 and layout is None:
            raise InputDataError(f"feature {name!r} has no values in the training rows")
        if layout is not None and present.size:  # inside the whole table's range
            present = np.clip(present, layout.low, layout.high)
        elif layout is not None:  # no value in the training rows: a constant column
            present = np.array([layout.fill])
        low, high = np.quantile(present, [CLIP_QUANTILE, 1 - CLIP_QUANTILE])
        recipe = ColumnRecipe(
            name,
            kind,
            float(low),
            float(high),
            float(np.median(present)),
            layout.missing_flag if layout is not None else bool(present.size < x.size),
        )
        clipped = np.clip(present, low, high)
        # a scorecard's bins: the deciles of the whole table where there is one (their count
        # is told to the bank), else of the training rows; each bin's value is its training
        # median, or for a bin without training rows the whole table's
        if layout is not None and layout.edges:
            edges = np.array(layout.edges)
            empty = [min(max(m, float(low)), float(high)) for m in layout.medians]
        else:
            edges = _decile_edges(clipped)
            empty = [float(low)] * (len(edges) + 1)
        medians = _bin_medians(clipped, edges, math.nan)
        recipe.bin_edges = edges.tolist()
        recipe.bin_values = [e if math.isnan(m) else m for m, e in zip(medians, empty, strict=True)]
    else:
        if layout is not None:
            levels = list(layout.levels)
        else:
            levels = [*_frequent_levels(_texts(column)), OTHER]
        recipe = ColumnRecipe(name, kind, levels=levels)
    raw = recipe.raw(column)
    with np.errstate(over="ignore", invalid="ignore"):
        means, stds = raw.mean(axis=0), raw.std(axis=0)
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(stds))):
        raise InputDataError(f"feature {name!r} has values too large to standardise")
    recipe.means = means.tolist()
    # constant on the rows: an input of 0 (up to rounding), not a second intercept; relative,
    # because a constant's computed spread grows with its size (547.175 gave 5e-12)
    constant = stds <= 1e-9 * np.maximum(1.0, np.abs(means))
    recipe.stds = np.where(constant, 1.0, stds).tolist()
    return recipe


MAX_NAME_LENGTH = 128
# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@")


def check_peer_names(names: Iterable[str], what: str) -> list[str]:
    """Feature names from the other party, before they reach the bank's files (CSV and
    Excel cells, reports): printable, at most 128 characters, none a spreadsheet would run
    as a formula, none twice."""
    out = list(names)
    for name in out:
        if not (
            0 < len(name) <= MAX_NAME_LENGTH
            and name.isprintable()
            and not name.startswith(FORMULA_STARTS)
        ):
            raise ProtocolViolation(
                f"{what}: the name {name[:40]!r} is not a feature name (printable, at most "
                f"{MAX_NAME_LENGTH} characters, not starting with {' '.join(FORMULA_STARTS)})"
            )
    if len(set(out)) != len(out):
        raise ProtocolViolation(f"{what}: a feature is named twice")
    return out


def readable_number(value: float) -> str:
    """A bin edge as a credit committee reads it: whole numbers with thousands separators
    (1,410,920, not 1.41092e+06, which dropped digits), others in their shortest exact
    decimals (never an exponent)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    # the shortest digits that give the value back: two edges never read alike
    whole, _, fraction = np.format_float_positional(float(value), trim="-").partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-') or 0):,}" + (f".{fraction}" if fraction else "")


def interval_labels(edges: Sequence[float]) -> list[str]:
    """The labels of the bins that ``edges`` cut the line into: "< 10", "[10, 20)", ">= 20"."""
    if not len(edges):
        return ["all values"]
    shown = [readable_number(e) for e in edges]
    middle = [f"[{a}, {b})" for a, b in zip(shown, shown[1:], strict=False)]
    return [f"< {shown[0]}", *middle, f">= {shown[-1]}"]


def exposure_of(
    names: list[str],
    row_hash: Callable[[int], np.ndarray],
    rows: int,
    public: frozenset[str] = frozenset(),
    min_group: int = 10,
) -> dict[str, float]:
    """Per feature (``row_hash(k)``: one 64-bit hash per row of feature k's part of the
    score, its model inputs or its scorecard bin), the share of the rows in groups of at
    least ``min_group`` that share every other non-public feature's hash and differ in this
    one (``FeatureRecipe.exposure``); public features 0."""
    salts = [np.uint64((2 * k + 1) * 0x9E3779B97F4A7C15 % (1 << 64)) for k in range(len(names))]
    private = [k for k, name in enumerate(names) if name not in public]
    every = np.zeros(rows, dtype=np.uint64)
    for k in private:
        every ^= row_hash(k) * salts[k]
    out = dict.fromkeys(names, 0.0)
    for k in private:
        own = row_hash(k) * salts[k]  # again: k hashes of every row kept would be k x 8 bytes
        groups = (
            pa.table({"others": every ^ own, "own": own})
            .group_by("others")
            .aggregate([("own", "count"), ("own", "count_distinct")])
        )
        exposed = pc.and_(
            pc.greater_equal(groups["own_count"], min_group),
            pc.greater(groups["own_count_distinct"], 1),
        )
        count = pc.sum(groups.filter(exposed)["own_count"]).as_py() or 0
        out[names[k]] = count / rows if rows else 0.0
    return out


def _mixed(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea and Flood, OOPSLA 2014): every input bit moves
    every output bit. A product alone moves bits only upwards, and small whole numbers as
    doubles differ only in their top bits: a review found 39,763 distinct bin tuples in
    21,280 hashes, and grouping on them slowed to 50 s where it takes 0.3."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(values: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of ``values`` (rows x k, rounded; -0.0 is 0.0)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    words = np.ascontiguousarray(np.round(values, 9) + 0.0).view(np.uint64)
    h = np.full(words.shape[0], np.uint64(0xCBF29CE484222325))
    for j in range(words.shape[1]):
        h = _mixed(h ^ words[:, j])
    return h


@dataclass
class FeatureRecipe:
    """A party's preprocessing, fitted on its training rows. JSON-able."""

    columns: list[ColumnRecipe]

    @classmethod
    def fit(
        cls,
        table: pa.Table,
        names: list[str],
        layouts: dict[str, ColumnLayout] | None = None,
    ) -> FeatureRecipe:
        """Fitted on ``table``'s rows; with ``layouts`` (the bureau's, from its whole table)
        the outputs of each column are those of its layout, whatever the rows."""
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise InputDataError(f"feature columns not found: {', '.join(missing)}")
        if table.num_rows == 0:
            raise InputDataError("no training rows to fit the feature preprocessing on")
        chosen = layouts or {}
        return cls([_fit_column(n, table.column(n), chosen.get(n)) for n in names])

    @property
    def outputs(self) -> list[str]:
        return [name for c in self.columns for name in c.outputs]

    def outside_training_range(
        self, table: pa.Table, share: float = 0.2
    ) -> list[tuple[str, int, int, float, float]]:
        """Numeric columns of ``table`` with more than ``share`` of their values beyond the
        range the recipe clips to (the training rows' 0.5% and 99.5% quantiles, so about 1%
        of rows from the same population): (name, outside, present, low, high). The sign of
        a file in another unit than the training file's (72.3 for 0.723, 8.86 for 88,600):
        a review's applicants scored from such a file all changed, without a word."""
        found = []
        for c in self.columns:
            if c.kind != "numeric" or c.name not in table.column_names or c.high <= c.low:
                continue
            x = _numbers(table.column(c.name), c.name)
            present = x[~np.isnan(x)]
            outside = int(np.count_nonzero((present < c.low) | (present > c.high)))
            if present.size and outside > share * present.size:
                found.append((c.name, outside, int(present.size), c.low, c.high))
        return found

    def missing_more_than_training(
        self, table: pa.Table, margin: float = 0.2, min_rows: int = 20
    ) -> list[tuple[ColumnRecipe, int, int, float]]:
        """Columns of ``table`` missing on more than ``margin`` more of the rows than the
        training rows were, or on all of them: (the column's recipe, missing rows, rows,
        training share), in a table of ``min_rows`` or more. The sign of a broken export (a
        column left empty): a review's applicants were all scored with the training median
        for the bank's strongest column, without a word."""
        found: list[tuple[ColumnRecipe, int, int, float]] = []
        if table.num_rows < min_rows:  # one applicant's missing value is no broken export
            return found
        for c in self.columns:
            if c.name not in table.column_names:
                continue
            if c.kind == "numeric":
                missing = int(np.isnan(_numbers(table.column(c.name), c.name)).sum())
            else:
                missing = int((_texts(table.column(c.name)) == MISSING).sum())
            rows = table.num_rows
            before = c.training_missing_share
            if (missing == rows and before < 1) or missing > (before + margin) * rows:
                found.append((c, missing, rows, before))
        return found

    def unseen_levels(
        self, table: pa.Table, margin: float = 0.2
    ) -> list[tuple[str, int, int, float, list[str]]]:
        """Category columns of ``table`` whose values fall into the pooled "other levels"
        output on more than ``margin`` more of the rows than the training rows did: (name,
        such rows, rows, training share, the commonest such values). The sign of a file that
        spells its levels otherwise (有限责任公司 against "LLC", a code list of another
        year): its rows all score as "other levels", without a word."""
        found = []
        for c in self.columns:
            if c.kind != "category" or c.name not in table.column_names or OTHER not in c.levels:
                continue
            texts = _texts(table.column(c.name))
            unseen = ~np.isin(texts, np.array(c.levels, dtype=object))
            before = c.means[c.levels.index(OTHER)]  # the share of training rows in it
            if texts.size and unseen.sum() > (before + margin) * texts.size:
                values, counts = np.unique(texts[unseen], return_counts=True)
                commonest = [
                    "(empty)" if values[i] == MISSING else str(values[i])
                    for i in np.argsort(-counts, kind="stable")[:3]
                ]
                found.append((c.name, int(unseen.sum()), int(texts.size), before, commonest))
        return found

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def transform(self, table: pa.Table) -> np.ndarray:
        """Model inputs (rows x outputs), standardised and bounded by VALUE_BOUND."""
        parts = []
        for c in self.columns:
            if c.name not in table.column_names:
                raise InputDataError(f"the data has no column {c.name!r}, which the model uses")
            parts.append((c.raw(table.column(c.name)) - np.array(c.means)) / np.array(c.stds))
        if not parts:
            return np.zeros((table.num_rows, 0))
        return np.clip(np.column_stack(parts), -VALUE_BOUND, VALUE_BOUND)

    def _output_slices(self) -> Iterator[tuple[ColumnRecipe, slice]]:
        """Each column and where its outputs sit among the model's inputs."""
        start = 0
        for c in self.columns:
            yield c, slice(start, start + len(c.outputs))
            start += len(c.outputs)

    @staticmethod
    def _column_inputs(column: ColumnRecipe, table: pa.Table, chunk: int) -> Iterator[np.ndarray]:
        """One column's model inputs over ``table``, a chunk of rows at a time (a whole
        table's inputs at once would be its rows times all outputs)."""
        for start in range(0, max(table.num_rows, 1), chunk):
            yield FeatureRecipe([column]).transform(table.slice(start, chunk))

    def varying(self, inputs: np.ndarray, share: float) -> set[str]:
        """The features whose model inputs (``inputs``: rows x outputs, as ``transform``
        gives them) differ from their most common value on at least ``share`` of the rows."""
        out = set()
        for c, where in self._output_slices():
            part = np.round(inputs[:, where], 9)
            if part.shape[0] == 0:
                continue
            _, counts = np.unique(part, axis=0, return_counts=True)
            if part.shape[0] - counts.max() >= max(1.0, share * part.shape[0]):
                out.add(c.name)
        return out

    def exposure(
        self,
        table: pa.Table,
        public: frozenset[str] = frozenset(),
        min_group: int = 10,
        chunk: int = 1 << 16,
    ) -> dict[str, float]:
        """Per feature, the share of ``table``'s rows in groups of at least ``min_group``
        rows that share every other feature's input (statements missing, no court case,
        one industry and legal form) and differ in this one: within such a group a linear
        score is an affine function of this feature alone, so the scores of its members,
        looked up, read their values (their levels, for a count or a category). A
        ``public`` feature hides nothing (the bank can look its values up and take its part
        out of the score), so groups are formed over the other non-public features only, and
        a public feature itself has nothing to protect (0)."""
        return exposure_of(
            [c.name for c in self.columns],
            lambda k: self._input_hash(self.columns[k], table, chunk),
            table.num_rows,
            public,
            min_group,
        )

    @staticmethod
    def _input_hash(column: ColumnRecipe, table: pa.Table, chunk: int) -> np.ndarray:
        """One 64-bit FNV-1a hash per row of a column's model inputs (rounded)."""
        parts = [row_hashes(x) for x in FeatureRecipe._column_inputs(column, table, chunk)]
        return np.concatenate(parts)[: table.num_rows]

    def contribution_shares(
        self, weights: np.ndarray, table: pa.Table, chunk: int = 1 << 16
    ) -> dict[str, float]:
        """Each feature's share of a linear score's spread over ``table``'s rows: the
        variance of its own part of the score (``w_f . z_f``, a category's levels and a
        number's missing flag together) over the sum of every feature's. A feature that is
        constant after its recipe (all its training rows missing, or of one level) or whose
        weights are 0 has a share of 0 whatever the rows; all 0 when the score is flat."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.outputs),):
            raise ValueError(f"{weights.size} weights for {len(self.outputs)} model inputs")
        spread: dict[str, float] = {}
        for c, where in self._output_slices():
            part = np.concatenate(
                [x @ weights[where] for x in self._column_inputs(c, table, chunk)]
            )
            spread[c.name] = float(np.var(part)) if part.size else 0.0
        total = sum(spread.values())
        return {n: (v / total if total > 0 else 0.0) for n, v in spread.items()}

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.columns]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> FeatureRecipe:
        return cls([ColumnRecipe(**c) for c in data])
