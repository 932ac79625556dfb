"""The bureau's halves of joint models: one JSON file per model under
``STATE_DIR/models/BANK_ID/MODEL_ID.json`` (format in docs/model-format.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node_runtime import tables
from protocols.errors import UnknownSession
from protocols.lookup import MODEL_ID


class ModelStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "models"

    def _path(self, bank_id: str, model_id: str) -> Path:
        if not MODEL_ID.match(model_id):
            raise UnknownSession(f"{model_id[:40]!r} is not a model id")
        return self.root / bank_id / f"{model_id}.json"

    def save(self, bank_id: str, model: dict[str, Any]) -> None:
        path = self._path(bank_id, model["model_id"])
        tables.private_dir(path.parent)
        tables.atomic_write_bytes(path, json.dumps(model, indent=2).encode(), mode=0o600)

    def load(self, bank_id: str, model_id: str) -> dict[str, Any]:
        path = self._path(bank_id, model_id)
        if not path.exists():
            raise UnknownSession(f"the bureau has no model {model_id} for bank {bank_id}")
        return json.loads(path.read_text())

    def count(self, bank_id: str) -> int:
        """How many models this bank keeps here."""
        return sum(1 for _ in (self.root / bank_id).glob("*.json"))

    def list(self, bank_id: str | None = None) -> list[dict[str, Any]]:
        banks = [self.root / bank_id] if bank_id else sorted(self.root.glob("*"))
        out = []
        for directory in banks:
            for path in sorted(directory.glob("*.json")):
                model = json.loads(path.read_text())
                out.append(
                    {
                        k: model[k]
                        for k in (
                            "model_id",
                            "bank_id",
                            "created",
                            "features",
                            "epoch",
                            "psi_session_id",
                        )
                    }
                )
        return out

    def delete(self, bank_id: str, model_id: str) -> None:
        path = self._path(bank_id, model_id)
        if not path.exists():
            raise UnknownSession(f"the bureau has no model {model_id} for bank {bank_id}")
        path.unlink()
