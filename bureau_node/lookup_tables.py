"""The bureau's lookup tables: for one bank, key epoch and table version, a sealed entry
``(tag, AEAD(payload))`` for every enterprise it holds (``protocols.lookup``).

Two kinds of table:

- a **data product** (``size_class``, ``headcount``, ``watch``, ``registration``): payloads
  from the bureau's product files (:mod:`bureau_node.products`);
- a **model** (``model_<model id>``): for each enterprise, the bureau's half of one of the
  bank's joint models, ``u_B`` (the score ``x_B . w_B``, clipped as in training) and the
  bureau features behind it as reason codes. This is what private scoring opens.

Versions are a per-product counter kept in ``STATE/lookup/versions.json``: a new version
whenever the payloads' content changes. A key is derived from (point, product, version, key
epoch) and encrypts one payload with a zero nonce, so a version must never be reused for
other content: a counter, unlike a truncated hash, cannot collide.

Sealed tables are kept under ``STATE/lookup/<bank>/`` (mode 0600; they are ciphertexts, but
the set of tables a bank fetched is its business) and rebuilt only when a version or the key
epoch changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from node_runtime import tables
from protocols import explain, lookup, psi
from protocols import vertical_lr as vlr
from protocols.errors import NotAuthorised, UnknownSession
from protocols.features import FeatureRecipe
from protocols.products import PAYLOAD_BYTES

from .features import BureauFeatures
from .models import ModelStore
from .products import ProductData
from .store import BureauStore, LookupPoints

log = logging.getLogger(__name__)

SEAL_CHUNK = 16_384  # entries per task: about 0.4 s of work, long enough to hide a hand-off
MODEL_CHUNK = 200_000  # enterprises scored at once when a model table is built
MODEL_PAYLOAD_BYTES = 8 + explain.MAX_REASONS  # float64 u_B, then one reason code per byte
MODEL_PREFIX = "model_"

# (n IDs as UTF-8 bytes) -> (payloads (n, payload_bytes) uint8, present (n,) bool)
Payloads = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TableSource:
    """What one table is made of, before sealing."""

    product: str
    payload_bytes: int
    data_date: str
    description: str
    content: str  # identifies the payloads' content: a new value means a new version
    payloads: Payloads = field(repr=False, compare=False)
    neutral_score: float = 0.0
    reason_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class SealedTable:
    info: TableSource
    version: lookup.TableVersion
    tags: np.ndarray  # ascending, lookup.TAG_ORDER
    sealed: np.ndarray  # (n, payload_bytes + 16) uint8

    @property
    def entries(self) -> int:
        return int(self.tags.size)

    def chunks(self, size: int) -> Iterator[tuple[int, bytes, bytes]]:
        for start in range(0, max(self.entries, 1), size):
            stop = min(self.entries, start + size)
            yield start, self.tags[start:stop].tobytes(), self.sealed[start:stop].tobytes()


def model_product(model_id: str) -> str:
    return MODEL_PREFIX + model_id


def model_source(features: BureauFeatures, model: dict[str, Any]) -> TableSource:
    """The table of a model: ``u_B`` and reason codes for every enterprise, computed exactly
    as :class:`ScoringServicer` computes them for matched applicants."""
    from .scoring_service import reason_codes  # the same codes as reveal-both scoring

    recipe = FeatureRecipe.from_json(model["recipe"])
    weights = np.asarray(model["weights"], dtype=np.float64)
    names, _ = reason_codes(recipe, model, np.zeros((0, len(weights))), explain.MAX_REASONS)

    def payloads(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((ids.size, MODEL_PAYLOAD_BYTES), dtype=np.uint8)
        for start in range(0, ids.size, MODEL_CHUNK):
            part = ids[start : start + MODEL_CHUNK]
            rows = features.rows_of_bytes(part)
            x = recipe.transform(rows)
            scores = np.clip(x @ weights, -vlr.SCORE_BOUND, vlr.SCORE_BOUND).astype("<f8")
            _, codes = reason_codes(recipe, model, x, explain.MAX_REASONS)
            block = out[start : start + part.size]
            block[:, :8] = scores.view(np.uint8).reshape(-1, 8)
            block[:, 8 : 8 + codes.shape[1]] = codes
        return out, np.ones(ids.size, dtype=bool)

    digest = hashlib.sha256(
        json.dumps([model["recipe"], model["weights"], features.version], default=str).encode()
    ).hexdigest()
    return TableSource(
        product=model_product(model["model_id"]),
        payload_bytes=MODEL_PAYLOAD_BYTES,
        data_date=features.data_date,
        description=f"the bureau's half of model {model['model_id']}: score and reason codes",
        content=digest,
        payloads=payloads,
        neutral_score=float(model.get("neutral_score", 0.0)),
        reason_features=tuple(names),
    )


PRODUCT_DESCRIPTIONS = {
    "size_class": "企业划型: size class by the 2011 standard, its industry group and the bands "
    "that decided it",
    "headcount": "参保人数: insured headcount, its band and its change over 12 months",
    "watch": "经营异常、严重违法、涉诉、欠税、行政处罚: watch lists and events with their dates",
    "registration": "登记信息: status, founding date, industry code, registered-capital band",
}


def product_source(data: ProductData, product: str) -> TableSource:
    """A data product's table, from the bureau's product files."""

    def payloads(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return data.payloads(product, ids_as_strings(ids))

    return TableSource(
        product=product,
        payload_bytes=PAYLOAD_BYTES[product],
        data_date=data.data_date.isoformat(),
        description=PRODUCT_DESCRIPTIONS[product],
        content=f"{data.version}",
        payloads=payloads,
    )


class TableVersions:
    """A counter per product, persisted: the version of each content ever published."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def version_of(self, product: str, content: str) -> int:
        with self._lock:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            known = data.setdefault(product, {"latest": 0, "contents": {}})
            if content not in known["contents"]:
                known["latest"] += 1
                known["contents"][content] = known["latest"]
                tables.atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
            return int(known["contents"][content])


class LookupTables:
    """Builds, keeps and serves the sealed tables of every bank."""

    def __init__(
        self,
        store: BureauStore,
        models: ModelStore,
        features: BureauFeatures,
        products: Callable[[], list[TableSource]] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.features = features
        self.products = products or (lambda: [])
        self.executor = executor
        self.root = tables.private_dir(store.root / "lookup")
        self.versions = TableVersions(self.root / "versions.json")
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def sources(self, bank_id: str, allowed_products: tuple[str, ...] | None) -> list[TableSource]:
        """The tables this bank may download: the products its policy names (None: all the
        bureau serves) and its own models."""
        offered = [
            s for s in self.products() if allowed_products is None or s.product in allowed_products
        ]
        models = [self.models.load(bank_id, m["model_id"]) for m in self.models.list(bank_id)]
        return offered + [model_source(self.features, m) for m in models]

    def source(
        self, bank_id: str, product: str, allowed_products: tuple[str, ...] | None
    ) -> TableSource:
        if product.startswith(MODEL_PREFIX):
            model = self.models.load(bank_id, product[len(MODEL_PREFIX) :])
            return model_source(self.features, model)
        for source in self.products():
            if source.product == product:
                if allowed_products is not None and product not in allowed_products:
                    raise NotAuthorised(
                        f"bank {bank_id} may not look up {product}: the bureau's "
                        "configuration does not list it for this bank"
                    )
                return source
        raise UnknownSession(f"the bureau offers no table {product!r}")

    def version(self, source: TableSource) -> int:
        return self.versions.version_of(source.product, source.content)

    def sealed(self, bank_id: str, source: TableSource) -> SealedTable:
        """The table sealed for this bank's current key epoch, built if need be."""
        with self._lock_for(bank_id, source.product):
            points = self.store.lookup_points(bank_id, self.executor)
            version = lookup.TableVersion(source.product, self.version(source), points.key_epoch)
            version.check()
            directory = tables.private_dir(self.root / bank_id)
            stem = f"{source.product}-v{version.version}-e{version.key_epoch}"
            tags_path, sealed_path = directory / f"{stem}.tags.npy", directory / f"{stem}.npy"
            if tags_path.exists() and sealed_path.exists():
                tags = np.load(tags_path, allow_pickle=False)
                sealed = np.load(sealed_path, allow_pickle=False)
            else:
                for old in directory.glob(f"{source.product}-v*.npy"):
                    old.unlink()  # one version per product and bank is kept
                tags, sealed = self._seal(source, version, points)
                tables.atomic_write(tags_path, lambda h: np.save(h, tags, allow_pickle=False))
                tables.atomic_write(sealed_path, lambda h: np.save(h, sealed, allow_pickle=False))
            return SealedTable(source, version, tags, sealed)

    def _lock_for(self, bank_id: str, product: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((bank_id, product), threading.Lock())

    def _seal(
        self, source: TableSource, version: lookup.TableVersion, points: LookupPoints
    ) -> tuple[np.ndarray, np.ndarray]:
        log.info("sealing %s for %d enterprises", version, points.ids.size)
        payloads, present = source.payloads(points.ids)
        if payloads.shape != (points.ids.size, source.payload_bytes):
            raise ValueError(f"{source.product}: payloads of the wrong shape {payloads.shape}")
        keep = np.flatnonzero(present)
        width = lookup.sealed_bytes(source.payload_bytes)
        tags = np.empty(keep.size, dtype=lookup.TAG_ORDER)
        sealed = np.empty((keep.size, width), dtype=np.uint8)
        spans = list(psi.chunk_offsets(keep.size, SEAL_CHUNK))
        work = (
            (
                points.points[keep[a:b]].tobytes(),
                payloads[keep[a:b]].tobytes(),
                source.payload_bytes,
                version,
            )
            for a, b in spans
        )
        for (a, b), (tag_bytes, sealed_bytes) in zip(
            spans, psi.ordered_map(self.executor, lookup.seal_chunk, work)
        ):
            tags[a:b] = np.frombuffer(tag_bytes, dtype=lookup.TAG_ORDER)
            sealed[a:b] = np.frombuffer(sealed_bytes, dtype=np.uint8).reshape(b - a, width)
        order = np.argsort(tags, kind="stable")
        tags, sealed = tags[order], sealed[order]
        unique = np.ones(tags.size, dtype=bool)
        unique[1:] = tags[1:] != tags[:-1]
        if not unique.all():  # 8-byte tags of 2M enterprises collide with odds of 1 in 10^7
            clash = np.flatnonzero(~unique)
            unique[clash - 1] = False  # neither entry of a clash can be told apart: drop both
            log.warning("%s: %d tag collisions dropped", version, int(clash.size))
        return tags[unique], sealed[unique]


def ids_as_strings(ids: np.ndarray) -> pa.Array:
    """The store's UTF-8 ID bytes as a pyarrow string array."""
    return pa.array(ids.tolist(), pa.binary()).cast(pa.string())
