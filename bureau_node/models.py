"""The bureau's halves of joint models: one JSON file per model under
``STATE_DIR/models/BANK_ID/MODEL_ID.json`` (format in docs/model-format.md)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node_runtime import tables
from protocols.errors import UnknownSession
from protocols.lookup import MODEL_ID

# A deleted model's weights stay on record this long: the scores it served stay with the
# bank, and they combine with a later model's (protocols.score_span).
RETIRED_SECONDS = 365 * 86400
SERVED = ("model_id", "recipe", "weights")  # what decides the scores a model served


class ModelStore:
    """One lock for writes and deletes, across processes too (`bureau-node models delete`
    runs beside the serving node): a model deleted while a scorecard or a policy check was
    writing it must stay deleted, not come back with the write."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "models"
        self._threads = threading.Lock()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with self._threads:
            tables.private_dir(self.root)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # the lock goes with the descriptor

    def _path(self, bank_id: str, model_id: str) -> Path:
        if not MODEL_ID.match(model_id):
            raise UnknownSession(f"{model_id[:40]!r} is not a model id")
        return self.root / bank_id / f"{model_id}.json"

    def save(self, bank_id: str, model: dict[str, Any]) -> None:
        """A new model."""
        path = self._path(bank_id, model["model_id"])
        with self._lock():
            tables.private_dir(path.parent)
            _write(path, model)

    def amend(self, bank_id: str, model_id: str, changes: dict[str, Any]) -> None:
        """Set ``changes`` in a kept model (its scorecard, its policy stamp), read afresh
        under the lock: two amendments at once both land (a stamp written from a copy
        loaded before a scorecard was made had undone the scorecard); refused if the model
        was deleted since it was loaded."""
        path = self._path(bank_id, model_id)
        with self._lock():
            try:
                model = json.loads(path.read_text())
            except FileNotFoundError:
                raise UnknownSession(f"model {model_id} was deleted meanwhile") from None
            model.update(changes)
            _write(path, model)

    def load(self, bank_id: str, model_id: str) -> dict[str, Any]:
        path = self._path(bank_id, model_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UnknownSession(f"the bureau has no model {model_id} for bank {bank_id}") from None

    def exists(self, bank_id: str, model_id: str) -> bool:
        return self._path(bank_id, model_id).exists()

    def count(self, bank_id: str) -> int:
        """How many models this bank keeps here."""
        return sum(1 for _ in (self.root / bank_id).glob("*.json"))

    def list(self, bank_id: str | None = None) -> list[dict[str, Any]]:
        """Each model's id, bank, creation, bureau features, epoch (1-based, as the bank's
        history counts them), PSI session and whether it has a scorecard."""
        banks = [self.root / bank_id] if bank_id else sorted(self.root.glob("*"))
        out = []
        for directory in banks:
            for path in sorted(directory.glob("*.json")):
                try:
                    model = json.loads(path.read_text())
                except FileNotFoundError:
                    continue  # deleted while listed
                keys = ("model_id", "bank_id", "created", "features", "psi_session_id")
                out.append(
                    {
                        **{k: model[k] for k in keys},
                        "epoch": int(model["epoch"]) + 1,
                        "scorecard": "scorecard" in model,
                    }
                )
        return out

    def delete(self, bank_id: str, model_id: str) -> tuple[Path, ...]:
        """The model and its lookup tables (sealed for its bank, and their revisions), which
        would otherwise stay on the bureau's disk; returns the tables removed. Its recipe
        and weights are kept for ``RETIRED_SECONDS`` (``served``)."""
        from .lookup_tables import remove_model_tables

        path = self._path(bank_id, model_id)
        with self._lock():
            try:
                model = json.loads(path.read_text())
            except FileNotFoundError:
                raise UnknownSession(
                    f"the bureau has no model {model_id} for bank {bank_id}"
                ) from None
            retired = {k: model[k] for k in SERVED if k in model}
            retired["retired_at"] = time.time()
            tables.private_dir(path.parent / "retired")
            _write(path.parent / "retired" / path.name, retired)
            path.unlink()
            return tuple(remove_model_tables(self.root.parent, bank_id, model_id))

    def served(self, bank_id: str) -> tuple[dict[str, Any], ...]:
        """The recipe and weights of every model this bank keeps, and of those deleted in the
        last ``RETIRED_SECONDS`` (older records are removed here)."""
        directory = self.root / bank_id
        out = []
        with self._lock():  # a model deleted meanwhile is read once, kept or retired
            paths = sorted(directory.glob("*.json")) + sorted(directory.glob("retired/*.json"))
            models = [json.loads(path.read_text()) for path in paths]
        for path, model in zip(paths, models, strict=True):
            if time.time() - model.get("retired_at", time.time()) > RETIRED_SECONDS:
                path.unlink(missing_ok=True)
                continue
            out.append({k: model[k] for k in SERVED if k in model})
        return tuple(out)

    def forget_retired(
        self, bank_id: str, model_ids: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        """Remove the records of deleted models (these, or all of the bank's); the ids."""
        directory = self.root / bank_id / "retired"
        with self._lock():
            if model_ids is None:
                paths = sorted(directory.glob("*.json"))
            else:
                paths = [directory / self._path(bank_id, m).name for m in model_ids]
                unknown = [p.stem for p in paths if not p.exists()]
                if unknown:
                    raise UnknownSession(
                        f"bank {bank_id} has no deleted model {', '.join(unknown)} on record"
                    )
            for path in paths:
                path.unlink()
        return tuple(p.stem for p in paths)


def _write(path: Path, model: dict[str, Any]) -> None:
    tables.atomic_write_bytes(path, json.dumps(model, indent=2).encode(), mode=0o600)
