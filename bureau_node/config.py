"""The bureau's per-bank configuration: who may call, which features each bank may use, the
model policy, daily quotas (the ID space is small enough to probe) and the privacy budget of
federated information value. One TOML file, validated at start.

    [defaults]                       # optional; every key below may also be set per bank
    daily_psi_ids = 2_000_000        # IDs a bank may send to PSI per UTC day
    daily_psi_sessions = 100         # PSI sessions a bank may open per UTC day
    daily_scored = 200_000           # rows a bank may score per UTC day (training rows too)
    daily_lookup_ids = 200_000       # IDs a bank may look up privately per UTC day
    daily_iv_requests = 20           # information-value requests per UTC day
    daily_scorecards = 100           # scorecards (new or re-scaled) made per UTC day
    min_batch_size = 64              # smallest training batch
    min_intersection = 100           # fewer shared IDs are not revealed for training
    min_bureau_features = 3          # bureau features per model (a category counts once)
    max_models_per_session = 3       # training jobs started on one PSI session
    max_models = 20                  # models a bank keeps at the bureau (each with its tables)
    max_lookup_streams = 4           # lookup streams (online decisions) open at once
    max_streams = 8                  # other streaming calls (PSI, training, ...) open at once
    iv_rho_per_feature = 0.0625      # zCDP privacy loss per bureau feature of an IV request
    iv_rho_per_day = 2.5             # of all of a bank's IV requests in one UTC day

    [banks.bank-a]                   # a bank the bureau serves, by its certificate identity
    features = ["debt_ratio", "court_judgements_3y", "tax_paid_12m_10k_cny"]  # omitted: all
    products = ["size_class", "watch"]  # data products it may look up; omitted: all

Without a configuration file the bureau serves any bank with the defaults (development).
"""

from __future__ import annotations

import difflib
import json
import math
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node_runtime import tables
from node_runtime.transport.channels import bank_identity, valid_bank_id
from protocols.binning import RHO_RANGE
from protocols.errors import InputDataError, NotAuthorised, QuotaExceeded

FLUSH_SECONDS = 0.5  # usage counters reach the disk this often, and at shutdown
# the platform's data products (protocols.products); a bank's models are always its own
DATA_PRODUCTS = ("size_class", "headcount", "watch", "registration")

COUNT_KEYS = {
    "daily_psi_ids",
    "daily_psi_sessions",
    "daily_scored",
    "daily_lookup_ids",
    "daily_iv_requests",
    "daily_scorecards",
    "min_batch_size",
    "min_intersection",
    "min_bureau_features",
    "max_models_per_session",
    "max_models",
    "max_lookup_streams",
    "max_streams",
}
RHO_KEYS = {"iv_rho_per_feature", "iv_rho_per_day"}
# the budget was in pure epsilon-DP (discrete Laplace) before the noise became Gaussian
RETIRED_KEYS = {"iv_epsilon_per_feature", "iv_epsilon_per_day"}
LIMIT_KEYS = COUNT_KEYS | RHO_KEYS
BANK_KEYS = LIMIT_KEYS | {"features", "products"}
DEFAULTS: dict[str, Any] = {
    "daily_psi_ids": 10_000_000,
    # each session may download the bureau's whole tag table (8 bytes an enterprise) twice:
    # a review's sessions of one ID each made the bureau stream 40 tables for 20 IDs
    "daily_psi_sessions": 100,
    "daily_scored": 1_000_000,
    "daily_lookup_ids": 200_000,  # IDs a bank may look up privately (products, scores)
    "daily_iv_requests": 20,
    # each scorecard made is a signed record on the audit log, which is never pruned: a
    # review's 5,000 in 27 s would be about 9 GB of log a day
    "daily_scorecards": 100,
    "min_batch_size": 64,
    "min_intersection": 1,  # below it the bureau does not reveal (mode BOTH) a session
    # a model on one or two features would hand the bank (an affine function of) the raw
    # values through the bureau's score u_B
    "min_bureau_features": 3,
    "max_models_per_session": 3,
    # each kept model has a lookup table over every enterprise the bureau holds (for private
    # scoring) on the bureau's disk; a bank deletes the ones it no longer needs
    "max_models": 20,
    # each open stream holds one of the bureau's server threads (bureau_node.admission)
    "max_lookup_streams": 4,
    # so does every other streaming call (PSI, binning, training steps, scoring, table
    # downloads), at the bank's pace: a PSI session uses one at a time, a training job one
    "max_streams": 8,
    # discrete Gaussian noise of sigma 4 on each count of positives per bin (sigma^2 = 2 / (2
    # rho)); two requests over 16 features a day
    "iv_rho_per_feature": 0.0625,
    "iv_rho_per_day": 2.5,
}


@dataclass(frozen=True)
class BankPolicy:
    bank_id: str
    features: tuple[str, ...] | None  # None: every feature
    daily_psi_ids: int
    daily_psi_sessions: int
    daily_scored: int
    daily_lookup_ids: int
    daily_iv_requests: int
    daily_scorecards: int
    min_batch_size: int
    min_intersection: int
    min_bureau_features: int
    max_models_per_session: int
    max_models: int
    max_lookup_streams: int
    max_streams: int
    iv_rho_per_feature: float
    iv_rho_per_day: float
    products: tuple[str, ...] | None = None  # data products it may look up; None: all


def _limits(table: dict[str, Any], where: str, base: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key in COUNT_KEYS & table.keys():
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputDataError(f"{where}: {key} must be a whole number of at least 1")
        out[key] = value
    retired = sorted(RETIRED_KEYS & table.keys())
    if retired:
        raise InputDataError(
            f"{where}: {', '.join(retired)}: no longer read; the information-value budget is "
            "kept in zero-concentrated DP (discrete Gaussian noise): set iv_rho_per_feature "
            "and iv_rho_per_day instead (SECURITY.md, 'Noise on information value')"
        )
    for key in RHO_KEYS & table.keys():
        value = table[key]
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not RHO_RANGE[0] <= value <= RHO_RANGE[1]
        ):
            low, high = RHO_RANGE
            raise InputDataError(f"{where}: {key} must be a number from {low:g} to {high:g}")
        out[key] = float(value)
    if out["iv_rho_per_feature"] > out["iv_rho_per_day"]:
        raise InputDataError(
            f"{where}: iv_rho_per_feature {out['iv_rho_per_feature']} is above iv_rho_per_day "
            f"{out['iv_rho_per_day']}: no request could ever be answered"
        )
    return out


def _unknown_keys(where: str, table: object, known: set[str] | frozenset[str]) -> str:
    """The keys a table has that the bureau does not read, each with its likeliest meaning."""
    if not isinstance(table, dict):
        return f"{where}: not a table of settings; it takes {', '.join(sorted(known))}"
    named = []
    for key in sorted(set(table) - set(known) - RETIRED_KEYS):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{where}: unknown setting {', '.join(named)}; it takes only {sorted(known)}"


def load_config(path: str | Path, feature_names: list[str] | None = None) -> dict[str, BankPolicy]:
    """Read and check the file: unknown keys, wrong types and unknown features are errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        # UTF-8 as TOML requires; a BOM (Notepad's "UTF-8") is dropped, not an error
        data = tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError:
        raise InputDataError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputDataError(
            f"{path}: line {line} is not UTF-8 (a comment saved as GBK?): save the file as "
            "UTF-8, as TOML requires"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputDataError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "banks"}
    if unknown:
        raise InputDataError(f"{path}: unknown section(s) {sorted(unknown)}; use defaults, banks")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - LIMIT_KEYS - RETIRED_KEYS:
        raise InputDataError(_unknown_keys(f"{path}: [defaults]", defaults, LIMIT_KEYS))
    base = _limits(defaults, f"{path} [defaults]", DEFAULTS)
    banks = data.get("banks", {})
    if not isinstance(banks, dict) or not banks:
        raise InputDataError(f"{path}: no [banks.BANK_ID] table: the bureau would serve nobody")
    policies = {}
    for bank_id, table in banks.items():
        where = f"{path} [banks.{bank_id}]"
        if not valid_bank_id(bank_id):
            raise InputDataError(f"{where}: not a valid bank id")
        if not isinstance(table, dict) or set(table) - BANK_KEYS - RETIRED_KEYS:
            raise InputDataError(_unknown_keys(where, table, BANK_KEYS))
        features = table.get("features")
        if features is not None:
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise InputDataError(f"{where}: features must be a list of names")
            missing = [f for f in features if feature_names is not None and f not in feature_names]
            if missing:
                raise InputDataError(f"{where}: the data file has no features {missing}")
            features = tuple(features)
        limits = _limits(table, where, base)
        if features is not None and len(set(features)) < limits["min_bureau_features"]:
            raise InputDataError(
                f"{where}: {len(set(features))} features are fewer than min_bureau_features "
                f"{limits['min_bureau_features']}: the bank could train no model"
            )
        products = table.get("products")
        if products is not None:
            if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
                raise InputDataError(f"{where}: products must be a list of names")
            if set(products) - set(DATA_PRODUCTS):
                raise InputDataError(
                    f"{where}: no data products {sorted(set(products) - set(DATA_PRODUCTS))}; "
                    f"the bureau offers {list(DATA_PRODUCTS)}"
                )
            products = tuple(products)
        policies[bank_id] = BankPolicy(bank_id, features, **limits, products=products)
    return policies


class Access:
    """Authorisation and quotas for every call. ``policies`` None: open (development)."""

    def __init__(
        self, state_dir: str | Path, policies: dict[str, BankPolicy] | None = None
    ) -> None:
        self.policies = policies
        self.root = Path(state_dir) / "banks"
        self._lock = threading.Lock()
        self._usage: dict[Path, dict[str, float]] = {}  # today's usage file -> its counts
        self._dirty: set[Path] = set()
        self._flushed = 0.0
        self._paths: dict[tuple[str, str], Path] = {}

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

    def charge(self, bank_id: str, what: str, amount: float) -> None:
        """Count ``amount`` against today's quota ``what`` (daily_psi_ids, daily_scored,
        daily_iv_requests, iv_rho_per_day); refuse, counting nothing, if it would go over."""
        self.charge_all(bank_id, {what: amount})

    def left(self, bank_id: str, what: str) -> float:
        """What is left today (UTC) of the bank's quota ``what``."""
        limit = getattr(self.policy(bank_id), what)
        with self._lock:
            _, used = self._today_locked(bank_id)
            return max(0.0, limit - used.get(what, 0))

    def _today_locked(self, bank_id: str) -> tuple[Path, dict[str, float]]:
        """The bank's usage file of today and its counts (the lock held)."""
        day = quota_day()
        path = self._paths.get((bank_id, day))
        if path is None:  # built once a day per bank: a lookup is charged thousands a second
            if len(self._paths) > 4096:
                self._paths.clear()
            path = self._paths[(bank_id, day)] = self.root / bank_id / f"usage-{day}.json"
        used = self._usage.get(path)
        if used is None:  # read once a day per bank; this process keeps it since
            self._flush_locked()  # yesterday's counts written before they are dropped
            tables.private_dir(path.parent)
            used = json.loads(path.read_text()) if path.exists() else {}
            self._usage = {
                path: used,
                **{p: u for p, u in self._usage.items() if p.parent != path.parent},
            }
        return path, used

    def charge_all(self, bank_id: str, amounts: dict[str, float], dry_run: bool = False) -> None:
        """Several quotas at once: all counted, or (one would go over) none; ``dry_run``:
        refused the same way, never counted (a job's later charges, checked at its start)."""
        policy = self.policy(bank_id)
        with self._lock:
            path, used = self._today_locked(bank_id)
            for what, amount in amounts.items():
                limit, spent = getattr(policy, what), used.get(what, 0)
                if spent + amount > limit * (1 + 1e-9):  # sums of epsilons: no rounding refusals
                    raise QuotaExceeded(
                        f"bank {bank_id} has used {_amount(spent)} of its {_amount(limit)} "
                        f"{what} today (UTC); this request needs {_amount(amount)}"
                    )
            if dry_run:
                return
            for what, amount in amounts.items():
                used[what] = used.get(what, 0) + amount
            # written at most every FLUSH_SECONDS and without fsync: every charged request
            # is also on the audit log, durable before the answer leaves; a write per call
            # would cost a busy bureau more than the lookup itself
            self._dirty.add(path)
            if time.monotonic() - self._flushed >= FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        """Write the usage counters that changed since the last write (at shutdown)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        for path in self._dirty:
            tables.atomic_write_bytes(path, json.dumps(self._usage[path]).encode(), sync=False)
        self._dirty.clear()
        self._flushed = time.monotonic()


def quota_day() -> str:
    """The day a quota counts on: the UTC date."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def _amount(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:,.6g}"
