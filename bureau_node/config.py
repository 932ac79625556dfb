"""The bureau's per-bank configuration: who may call, which features each bank may use, and
daily quotas (the ID space is small enough to probe). One TOML file, validated at start.

    [defaults]                       # optional; every key below may also be set per bank
    daily_psi_ids = 2_000_000        # IDs a bank may send to PSI per UTC day
    daily_scored = 200_000           # applicants a bank may score per UTC day
    min_batch_size = 64              # smallest training batch
    min_intersection = 100           # fewer shared IDs are not revealed for training

    [banks.bank-a]                   # a bank the bureau serves, by its certificate identity
    features = ["debt_ratio", "court_judgements_3y"]   # omitted: every feature

Without a configuration file the bureau serves any bank with the defaults (development).
"""

from __future__ import annotations

import datetime
import json
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node_runtime import tables
from node_runtime.transport.channels import bank_identity, valid_bank_id
from protocols.errors import InputDataError, NotAuthorised, QuotaExceeded

LIMIT_KEYS = {"daily_psi_ids", "daily_scored", "min_batch_size", "min_intersection"}
BANK_KEYS = LIMIT_KEYS | {"features"}
DEFAULTS = {
    "daily_psi_ids": 10_000_000,
    "daily_scored": 1_000_000,
    "min_batch_size": 64,
    "min_intersection": 1,  # below it the bureau does not reveal (mode BOTH) a session
}


@dataclass(frozen=True)
class BankPolicy:
    bank_id: str
    features: tuple[str, ...] | None  # None: every feature
    daily_psi_ids: int
    daily_scored: int
    min_batch_size: int
    min_intersection: int


def _limits(table: dict[str, Any], where: str, base: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for key in LIMIT_KEYS & table.keys():
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputDataError(f"{where}: {key} must be a whole number of at least 1")
        out[key] = value
    return out


def load_config(path: str | Path, feature_names: list[str] | None = None) -> dict[str, BankPolicy]:
    """Read and check the file: unknown keys, wrong types and unknown features are errors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputDataError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputDataError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "banks"}
    if unknown:
        raise InputDataError(f"{path}: unknown section(s) {sorted(unknown)}; use defaults, banks")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - LIMIT_KEYS:
        raise InputDataError(f"{path}: [defaults] takes only {sorted(LIMIT_KEYS)}")
    base = _limits(defaults, f"{path} [defaults]", DEFAULTS)
    banks = data.get("banks", {})
    if not isinstance(banks, dict) or not banks:
        raise InputDataError(f"{path}: no [banks.BANK_ID] table: the bureau would serve nobody")
    policies = {}
    for bank_id, table in banks.items():
        where = f"{path} [banks.{bank_id}]"
        if not valid_bank_id(bank_id):
            raise InputDataError(f"{where}: not a valid bank id")
        if not isinstance(table, dict) or set(table) - BANK_KEYS:
            raise InputDataError(f"{where}: takes only {sorted(BANK_KEYS)}")
        features = table.get("features")
        if features is not None:
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise InputDataError(f"{where}: features must be a list of names")
            missing = [f for f in features if feature_names is not None and f not in feature_names]
            if missing:
                raise InputDataError(f"{where}: the data file has no features {missing}")
            features = tuple(features)
        limits = _limits(table, where, base)
        policies[bank_id] = BankPolicy(bank_id, features, **limits)
    return policies


class Access:
    """Authorisation and quotas for every call. ``policies`` None: open (development)."""

    def __init__(
        self, state_dir: str | Path, policies: dict[str, BankPolicy] | None = None
    ) -> None:
        self.policies = policies
        self.root = Path(state_dir) / "banks"
        self._lock = threading.Lock()

    def policy(self, bank_id: str) -> BankPolicy:
        if self.policies is None:
            return BankPolicy(bank_id, None, **DEFAULTS)
        policy = self.policies.get(bank_id)
        if policy is None:
            raise NotAuthorised(f"bank {bank_id!r} is not in this bureau's configuration")
        return policy

    def bank(self, context: grpc.ServicerContext) -> str:
        """Who is calling, if it may call at all."""
        bank_id = bank_identity(context)
        self.policy(bank_id)
        return bank_id

    def features(self, bank_id: str, offered: list[str]) -> list[str]:
        allowed = self.policy(bank_id).features
        return offered if allowed is None else [f for f in offered if f in allowed]

    def charge(self, bank_id: str, what: str, amount: int) -> None:
        """Count ``amount`` against today's quota ``what`` (daily_psi_ids, daily_scored);
        refuse, counting nothing, if it would go over."""
        limit = getattr(self.policy(bank_id), what)
        day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        path = self.root / bank_id / f"usage-{day}.json"
        with self._lock:
            used = json.loads(path.read_text()) if path.exists() else {}
            if used.get(what, 0) + amount > limit:
                raise QuotaExceeded(
                    f"bank {bank_id} has used {used.get(what, 0):,} of its {limit:,} {what} "
                    f"today (UTC); this request needs {amount:,}"
                )
            used[what] = used.get(what, 0) + amount
            path.parent.mkdir(parents=True, exist_ok=True)
            tables.atomic_write_bytes(path, json.dumps(used).encode())
