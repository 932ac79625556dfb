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

import contextlib
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

from node_runtime import tables
from protocols import explain, lookup, psi
from protocols import vertical_lr as vlr
from protocols.errors import NotAuthorised, StaleKeyEpoch, UnknownSession
from protocols.features import FeatureRecipe
from protocols.lookup import MODEL_PAYLOAD_BYTES, MODEL_PREFIX, model_table
from protocols.products import PAYLOAD_BYTES

from .features import BureauFeatures
from .models import ModelStore
from .products import ProductData
from .store import BureauStore, LookupPoints, ids_as_strings

log = logging.getLogger(__name__)

SEAL_CHUNK = 16_384  # entries per task: about 0.4 s of work, long enough to hide a hand-off
MODEL_CHUNK = 200_000  # enterprises scored at once when a model table is built

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
    model_features: tuple[str, ...] = ()  # a model's table: the bureau features it uses
    # a model's table: the features' version it was made from (they can change while the
    # bureau serves: a live graph refresh; its payloads are computed when it is sealed)
    data_version: str = ""


@dataclass(frozen=True)
class SealedTable:
    info: TableSource
    version: lookup.TableVersion
    tags: np.ndarray  # ascending, lookup.TAG_ORDER
    sealed: np.ndarray  # (n, payload_bytes + 16) uint8
    revisions: np.ndarray  # lookup.REVISION: the version that sealed each entry
    removed: np.ndarray  # (tag, at): enterprises gone, and the version they left at

    @property
    def entries(self) -> int:
        return int(self.tags.size)

    def since(self, version: int) -> tuple[np.ndarray, bytes]:
        """Rows changed after ``version`` (0: all), and the tags gone since it."""
        if version == 0:
            return np.arange(self.entries), b""
        gone = self.removed["tag"][self.removed["at"] > version]
        return np.flatnonzero(self.revisions > version), gone.astype(lookup.TAG_ORDER).tobytes()

    def chunks(
        self, rows: np.ndarray, removed: bytes, size: int
    ) -> Iterator[tuple[int, bytes, bytes, bytes, bytes]]:
        """The rows and the removed tags, ``size`` of each per chunk: an update that drops
        most of a city (a data file cut short) must not go as one message over gRPC's
        limit."""
        gone = len(removed) // lookup.LOOKUP_TAG_BYTES
        for start in range(0, max(rows.size, gone, 1), size):
            part = rows[start : start + size]
            yield (
                min(start, rows.size),
                self.tags[part].tobytes(),
                self.sealed[part].tobytes(),
                self.revisions[part].tobytes(),
                removed[start * lookup.LOOKUP_TAG_BYTES : (start + size) * lookup.LOOKUP_TAG_BYTES],
            )


# STATE_DIR/lookup/BANK_ID/PRODUCT-vVERSION-eEPOCH.npz: a table sealed for a bank;
# STATE_DIR/lookup/revisions/PRODUCT.npz: the revision of each of a product's entries
LOOKUP_DIR = "lookup"
REVISIONS_DIR = "revisions"


def _sealed_files(root: Path, bank_id: str, product: str) -> list[Path]:
    """Every version of a product's table sealed for a bank under ``root`` (the lookup
    directory)."""
    return list((root / bank_id).glob(f"{product}-v*.npz"))


def remove_model_tables(state_dir: str | Path, bank_id: str, model_id: str) -> list[Path]:
    """A deleted model's lookup tables (sealed for its bank, and its entries' revisions):
    removed with it, or every model a bank ever trained would stay on the bureau's disk
    (about 60 bytes an enterprise each)."""
    root = Path(state_dir) / LOOKUP_DIR
    product = model_table(model_id)
    revisions = EntryRevisions.file_in(root / REVISIONS_DIR, product)
    files = [*_sealed_files(root, bank_id, product), revisions]
    removed = [f for f in files if f.exists()]
    for f in removed:
        f.unlink(missing_ok=True)  # a seal and a delete may both remove it
    return removed


def model_source(features: BureauFeatures, model: dict[str, Any]) -> TableSource:
    """The table of a model: ``u_B`` and reason codes for every enterprise, computed exactly
    as :class:`ScoringServicer` computes them for matched applicants."""
    from .scoring_service import reason_codes  # the same codes as reveal-both scoring

    recipe = FeatureRecipe.from_json(model["recipe"])
    weights = np.asarray(model["weights"], dtype=np.float64)
    public = features.public
    names, _ = reason_codes(recipe, model, np.zeros((0, len(weights))), explain.MAX_REASONS, public)

    def payloads(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((ids.size, MODEL_PAYLOAD_BYTES), dtype=np.uint8)
        for start in range(0, ids.size, MODEL_CHUNK):
            part = ids[start : start + MODEL_CHUNK]
            rows = features.rows_of_bytes(part)
            x = recipe.transform(rows)
            scores = vlr.served_scores(x, weights).astype("<f8")
            _, codes = reason_codes(recipe, model, x, explain.MAX_REASONS, public)
            block = out[start : start + part.size]
            block[:, :8] = scores.view(np.uint8).reshape(-1, 8)
            block[:, 8 : 8 + codes.shape[1]] = codes
        return out, np.ones(ids.size, dtype=bool)

    digest = hashlib.sha256(
        json.dumps(
            [model["recipe"], model["weights"], features.version, sorted(public), "served/2"],
            default=str,
        ).encode()
    ).hexdigest()
    return TableSource(
        product=model_table(model["model_id"]),
        payload_bytes=MODEL_PAYLOAD_BYTES,
        data_date=features.data_date,
        description=f"the bureau's half of model {model['model_id']}: score and reason codes",
        content=digest,
        payloads=payloads,
        neutral_score=float(model.get("neutral_score", 0.0)),
        reason_features=tuple(names),
        model_features=tuple(recipe.names),
        data_version=features.version,
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
    """A counter per product, persisted: a new version whenever the content differs from the
    latest one (content seen long ago gets a new number too: versions never go back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def version_of(self, product: str, content: str) -> int:
        with self._lock:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            known = data.setdefault(product, {"latest": 0, "content": None})
            if known.get("content") != content:
                known["latest"] += 1
                known["content"] = content
                tables.atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
            return int(known["latest"])


class DataGate:
    """Table downloads against a live swap of the bureau's data (a graph refresh): a
    download takes its source and seals it with the bank's key as one reading; a swap, and
    the end of the banks' lookup keys that goes with it, wait for the readings under way and
    hold new ones back. Without it a review sealed the new version of a model's table under
    the old key, between the swap and the new key, and opened it with its kept points."""

    def __init__(self) -> None:
        self._change = threading.Condition()
        self._readers = 0
        self._swapping = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._change:
            self._change.wait_for(lambda: not self._swapping)
            self._readers += 1
        try:
            yield
        finally:
            with self._change:
                self._readers -= 1
                self._change.notify_all()

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        with self._change:
            self._change.wait_for(lambda: not self._swapping)
            self._swapping = True
            self._change.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._change:
                self._swapping = False
                self._change.notify_all()


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
        self.root = tables.private_dir(store.root / LOOKUP_DIR)
        self.versions = TableVersions(self.root / "versions.json")
        self.revisions = EntryRevisions(self.root / REVISIONS_DIR)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.gate = DataGate()

    def sources(self, bank_id: str, allowed_products: tuple[str, ...] | None) -> list[TableSource]:
        """The tables this bank may download: the products its policy names (None: all the
        bureau serves) and its own models."""
        offered = [
            s for s in self.products() if allowed_products is None or s.product in allowed_products
        ]
        models = []
        for listed in self.models.list(bank_id):
            try:
                models.append(self.models.load(bank_id, listed["model_id"]))
            except UnknownSession:
                continue  # deleted since it was listed
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
        """The table sealed for this bank's current key epoch, built if need be; never
        across a live swap of the bureau's data, and never from a source made before one
        (its payloads would be the new data's, under the version and key of the old)."""
        with self.gate.reading():
            if source.data_version and source.data_version != self.features.version:
                raise StaleKeyEpoch(
                    f"the bureau's data changed while {source.product} was asked for: list "
                    "the tables again and download their new versions"
                )
            return self._sealed(bank_id, source)

    def _sealed(self, bank_id: str, source: TableSource) -> SealedTable:
        with self._lock_for(bank_id, source.product):
            points = self.store.lookup_points(bank_id, self.executor)
            version = lookup.TableVersion(source.product, self.version(source), points.key_epoch)
            version.check()
            directory = tables.private_dir(self.root / bank_id)
            path = directory / f"{source.product}-v{version.version}-e{version.key_epoch}.npz"
            if not path.exists():
                for old in _sealed_files(self.root, bank_id, source.product):
                    old.unlink()  # one version per product and bank is kept
                tags, sealed, revisions, removed = self._seal(source, version, points)
                tables.atomic_write(
                    path,
                    lambda h: np.savez(
                        h, tags=tags, sealed=sealed, revisions=revisions, removed=removed
                    ),
                )
            model_id = source.product[len(MODEL_PREFIX) :]
            if source.product.startswith(MODEL_PREFIX) and not self.models.exists(
                bank_id, model_id
            ):  # deleted while it was sealed: what was just written goes too
                remove_model_tables(self.root.parent, bank_id, model_id)
                raise UnknownSession(f"model {model_id} was deleted")
            try:
                with np.load(path, allow_pickle=False) as kept:
                    tags, sealed = kept["tags"], kept["sealed"]
                    revisions, removed = kept["revisions"], kept["removed"]
            except FileNotFoundError:  # its model deleted since the check above
                raise UnknownSession(f"{source.product} is no longer served") from None
            return SealedTable(source, version, tags, sealed, revisions, removed)

    def _lock_for(self, bank_id: str, product: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((bank_id, product), threading.Lock())

    def _seal(
        self, source: TableSource, version: lookup.TableVersion, points: LookupPoints
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every present enterprise's entry under its revision, sorted by tag; and the tags
        of enterprises gone, each with the version it left at."""
        log.info("sealing %s for %d enterprises", version, points.ids.size)
        payloads, present = source.payloads(points.ids)
        if payloads.shape != (points.ids.size, source.payload_bytes):
            raise ValueError(f"{source.product}: payloads of the wrong shape {payloads.shape}")
        with self._lock_for("", source.product):  # revisions are the product's, for all banks
            history = self.revisions.update(
                source.product, version.version, points, payloads, present
            )
        keep = np.flatnonzero(present)
        revisions = history.revision[points.positions[keep]]
        width = lookup.sealed_bytes(source.payload_bytes)
        tags = np.empty(keep.size, dtype=lookup.TAG_ORDER)
        sealed = np.empty((keep.size, width), dtype=np.uint8)
        spans = list(psi.chunk_offsets(keep.size, SEAL_CHUNK))
        work = (
            (
                points.every_point[points.positions[keep[a:b]]].tobytes(),
                payloads[keep[a:b]].tobytes(),
                revisions[a:b].astype(lookup.REVISION).tobytes(),
                source.payload_bytes,
                version.product,
                version.key_epoch,
            )
            for a, b in spans
        )
        for (a, b), (tag_bytes, sealed_bytes) in zip(
            spans, psi.ordered_map(self.executor, lookup.seal_chunk, work)
        ):
            tags[a:b] = np.frombuffer(tag_bytes, dtype=lookup.TAG_ORDER)
            sealed[a:b] = np.frombuffer(sealed_bytes, dtype=np.uint8).reshape(b - a, width)
        order = np.argsort(tags, kind="stable")
        tags, sealed, revisions = tags[order], sealed[order], revisions[order]
        unique = np.ones(tags.size, dtype=bool)
        unique[1:] = tags[1:] != tags[:-1]
        if not unique.all():  # 8-byte tags of 2M enterprises collide with odds of 1 in 10^7
            clash = np.flatnonzero(~unique)
            unique[clash - 1] = False  # neither entry of a clash can be told apart: drop both
            log.warning("%s: %d tag collisions dropped", version, int(clash.size))
        gone = np.flatnonzero(history.removed_at)
        removed = np.zeros(gone.size, dtype=[("tag", lookup.TAG_ORDER), ("at", "<u4")])
        removed["tag"] = np.frombuffer(
            b"".join(lookup.lookup_tag(p.tobytes()) for p in points.every_point[gone]),
            lookup.TAG_ORDER,
        )
        removed["at"] = history.removed_at[gone]
        return tags[unique], sealed[unique], revisions[unique].astype(lookup.REVISION), removed


@dataclass
class History:
    """A product's payloads as last published, per store position: ``payload`` (zeros where
    absent), ``revision`` (the version at which it last changed; 0: absent) and
    ``removed_at`` (the version at which it left; 0: present or never there)."""

    at_version: int
    payload: np.ndarray
    revision: np.ndarray
    removed_at: np.ndarray


class EntryRevisions:
    """Per product, the revision of every enterprise's entry: the table version at which
    its payload last changed. Payloads are compared byte for byte, never by a hash: a
    collision would seal a new payload under an old key."""

    def __init__(self, root: Path) -> None:
        self.root = tables.private_dir(root)

    @staticmethod
    def file_in(root: Path, product: str) -> Path:
        return root / f"{product}.npz"

    def update(
        self,
        product: str,
        version: int,
        points: LookupPoints,
        payloads: np.ndarray,
        present: np.ndarray,
    ) -> History:
        path = self.file_in(self.root, product)
        stored = points.every_point.shape[0]
        history = self._load(path, stored, payloads.shape[1])
        if history.at_version >= version:
            return history
        now = np.zeros((stored, payloads.shape[1]), dtype=np.uint8)
        here = np.zeros(stored, dtype=bool)
        rows = points.positions[present]
        now[rows], here[rows] = payloads[present], True
        was_here = history.revision > 0
        changed = here & (~was_here | np.any(now != history.payload, axis=1))
        left = was_here & ~here
        history.revision[changed], history.removed_at[changed] = version, 0
        history.revision[left], history.removed_at[left] = 0, version
        history.payload, history.at_version = now, version
        tables.atomic_write(
            path,
            lambda h: np.savez(
                h,
                at_version=np.array(version),
                payload=history.payload,
                revision=history.revision,
                removed_at=history.removed_at,
            ),
        )
        return history

    @staticmethod
    def _load(path: Path, stored: int, width: int) -> History:
        empty = History(
            0,
            np.zeros((stored, width), np.uint8),
            np.zeros(stored, np.uint32),
            np.zeros(stored, np.uint32),
        )
        if not path.exists():
            return empty
        with np.load(path, allow_pickle=False) as kept:
            if kept["payload"].shape[1] != width or kept["revision"].size > stored:
                return empty  # another payload layout, or a rebuilt store: start afresh
            grown = stored - kept["revision"].size  # IDs only ever join the store's end
            return History(
                int(kept["at_version"]),
                np.concatenate([kept["payload"], np.zeros((grown, width), np.uint8)]),
                np.concatenate([kept["revision"], np.zeros(grown, np.uint32)]),
                np.concatenate([kept["removed_at"], np.zeros(grown, np.uint32)]),
            )
