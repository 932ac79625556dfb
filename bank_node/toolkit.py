"""The credit modeller's tools on the bank's side: information value of the bank's and the
bureau's features (the bureau's computed on encrypted labels), and scorecards."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from node_runtime.transport import model_codec as codec
from protocols import binning, psi, scorecard
from protocols import paillier as he
from protocols.errors import InputDataError, ProtocolViolation
from protocols.features import FeatureRecipe, column_kind
from protocols.ids import IdType, prepare_ids
from xinrong.v1 import model_pb2 as pb

from .client import BureauConnection, run_psi
from .training import MODEL_FILE, START_DEADLINE, _call, _id_positions, load_model, read_labels

log = logging.getLogger(__name__)
Say = Callable[[str], None]
LABELS_PER_CHUNK = 4096
IV_COLUMNS = ["feature", "party", "kind", "bins", "iv", "strength"]


def bins_path_for(out: Path) -> Path:
    """``iv.csv`` -> ``iv.bins.json`` (per-bin counts and WOE), next to it."""
    return out.with_name(out.stem + ".bins.json")


def _label_chunks(
    session_id: str,
    key: he.PublicKey,
    ciphertexts: list,
    max_bins: int,
    min_bin_count: int,
    features: list[str],
) -> Iterator[pb.EncryptedLabels]:
    total = len(ciphertexts)
    for start in range(0, max(total, 1), LABELS_PER_CHUNK):
        chunk = pb.EncryptedLabels(
            offset=start,
            total=total,
            labels=he.ciphertexts_to_bytes(ciphertexts[start : start + LABELS_PER_CHUNK], key),
        )
        if start == 0:
            chunk.psi_session_id = session_id
            chunk.bank_public_key = codec.key_to_bytes(key)
            chunk.max_bins = max_bins
            chunk.min_bin_count = min_bin_count
            chunk.features.extend(features)
        yield chunk


def iv_job(
    bureau: str,
    data: str | Path,
    id_column: str,
    label: str,
    out: str | Path,
    bank_id: str,
    id_type: IdType = IdType.USCC,
    bank_features: list[str] | None = None,
    bureau_features: list[str] | None = None,
    max_bins: int = binning.DEFAULT_BINS,
    min_bin_count: int = binning.DEFAULT_MIN_BIN_COUNT,
    monotonic: bool = True,
    key_bits: int = he.DEFAULT_KEY_BITS,
    allow_test_keys: bool = False,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    tls_dir: str | Path | None = None,
) -> dict[str, Any]:
    """WOE and IV of every bank feature (locally) and every bureau feature (federated) over
    the clients the bureau knows; writes the IV table (CSV) and per-bin details (JSON)."""
    started = time.perf_counter()
    say = say or (lambda text: log.info("%s", text))
    out = Path(out)
    he.check_key_bits(key_bits, allow_test_keys)
    if not 2 <= max_bins <= binning.MAX_BINS:
        raise InputDataError(f"--bins must be from 2 to {binning.MAX_BINS}")
    # the bank's own bins follow the same floor the bureau enforces on its bins
    min_bin_count = max(min_bin_count, binning.BUREAU_MIN_BIN_COUNT)
    table = tables.read_table(data, id_column)
    labels_all = read_labels(table, label)
    if bank_features is None:
        bank_features = [c for c in table.column_names if c not in (id_column, label)]
    for name in bank_features:  # unsupported columns fail now, not after the exchange
        if name not in table.column_names:
            raise InputDataError(f"no column {name!r} in {data}")
        column_kind(table.schema.field(name).type)
    prepared = prepare_ids(table.column(id_column), id_type)
    bars = ProgressBars(enabled=False if quiet else None)
    with contextlib.ExitStack() as stack:
        executor = make_executor(workers, executor_spec)
        if executor is not None:
            stack.callback(executor.shutdown, cancel_futures=True)
        connection = stack.enter_context(BureauConnection(bureau, bank_id, tls_dir=tls_dir))
        say(f"private set intersection on {len(prepared.ids):,} IDs")
        result = run_psi(connection, prepared.ids, psi.Reveal.BOTH, executor, bars)
        bars.close()
        rows = len(result.matched_ids)
        positions = _id_positions(table, id_column, id_type, result.matched_ids)
        matched = table.take(pa.array(positions))
        y = labels_all[positions]
        say(f"the bureau knows {rows:,} of them ({int(y.sum()):,} defaults)")
        if y.min() == y.max():
            raise InputDataError(
                f"all {rows:,} matched clients have label {int(y[0])}: information value "
                "needs both defaults and non-defaults"
            )

        public_key, private_key = he.generate_keypair(key_bits, allow_test_keys)
        encryptor = he.OwnerEncryptor(private_key)
        say(f"encrypting {rows:,} labels")
        with ProgressBars(enabled=False if quiet else None, unit="label") as label_bars:
            ciphertexts = encryptor.encrypt_many(
                [int(v) for v in y],
                executor,
                on_progress=lambda done, total: label_bars("encrypting labels", done, total),
            )
        answer = _call(
            "binning the encrypted labels at the bureau",
            lambda: connection.binning.BinLabels(
                _label_chunks(
                    result.session_id,
                    public_key,
                    ciphertexts,
                    max_bins,
                    min_bin_count,
                    list(bureau_features or []),
                ),
                timeout=START_DEADLINE + rows * 0.01,
                metadata=connection.metadata,
            ),
        )
    values: list[binning.FeatureValue] = []
    for name in bank_features:
        bins = binning.bin_column(name, matched.column(name), max_bins, min_bin_count)
        stats = binning.local_statistics(bins, y)
        values.append(
            binning.evaluate_feature(
                name, "bank", bins.kind, stats, bins.ordered, bins.missing_bin, monotonic
            )
        )
    for feature in answer.features:
        values.append(_bureau_feature(feature, private_key, public_key, rows, monotonic))
    values.sort(key=lambda v: -v.iv)
    tables.write_csv(pa.table({c: [getattr(v, c) for v in values] for c in IV_COLUMNS}), out)
    details = bins_path_for(out)
    tables.atomic_write_bytes(details, json.dumps([vars(v) for v in values], indent=2).encode())
    return {
        "matched": rows,
        "defaults": int(y.sum()),
        "features": len(values),
        "bank_features": len(bank_features),
        "bureau_features": len(answer.features),
        # the privacy loss the bureau charged for its noisy counts (its daily budget)
        "bureau_epsilon": round(sum(f.epsilon for f in answer.features), 6),
        "top": [{"feature": v.feature, "party": v.party, "iv": v.iv} for v in values[:5]],
        "out": str(out),
        "bins": str(details),
        "psi_session_id": result.session_id,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _bureau_feature(
    feature: pb.FeatureBins,
    private_key: he.PrivateKey,
    public_key: he.PublicKey,
    rows: int,
    monotonic: bool,
) -> binning.FeatureValue:
    count = len(feature.totals)
    if not 1 <= count <= binning.MAX_BINS + 1:
        raise ProtocolViolation(f"feature {feature.name!r} came with {count} bins")
    if sum(feature.totals) != rows:
        raise ProtocolViolation(f"feature {feature.name!r}: bin sizes do not add up to {rows}")
    offset = feature.noise_offset
    if not 2 <= feature.slot_bits <= 64 or (1 << feature.slot_bits) <= rows + 2 * offset:
        raise ProtocolViolation(f"feature {feature.name!r}: slot width {feature.slot_bits}")
    if not -1 <= feature.missing_bin < count:
        raise ProtocolViolation(f"feature {feature.name!r}: no bin {feature.missing_bin}")
    packed = he.ciphertexts_from_bytes(feature.sums, public_key)
    slots = he.unpack_sums(packed, private_key, feature.slot_bits, count)
    totals = [int(t) for t in feature.totals]
    # the bureau's noise may make a count negative or larger than its bin: cut to range
    bads = binning.noisy_counts(slots, offset, totals, feature.name)
    missing = None if feature.missing_bin < 0 else feature.missing_bin
    return binning.evaluate_feature(
        feature.name,
        "bureau",
        feature.kind,
        binning.BinStatistics(totals, bads),
        feature.ordered,
        missing,
        monotonic,
    )


def format_iv_table(values: list[dict[str, Any]]) -> str:
    lines = [f"{'feature':<32} {'party':<7} {'bins':>4} {'IV':>8}  strength"]
    for v in values:
        lines.append(
            f"{v['feature']:<32} {v['party']:<7} {v['bins']:>4} {v['iv']:>8.4f}  {v['strength']}"
        )
    return "\n".join(lines)


def read_iv_table(path: str | Path) -> list[dict[str, Any]]:
    table = tables.read_table(path, "feature")
    return table.to_pylist()


def select_by_iv(path: str | Path, min_iv: float) -> tuple[list[str], list[str]]:
    """Bank and bureau features whose IV is at least ``min_iv``."""
    rows = read_iv_table(path)
    bank = [r["feature"] for r in rows if r["party"] == "bank" and r["iv"] >= min_iv]
    bureau = [r["feature"] for r in rows if r["party"] == "bureau" and r["iv"] >= min_iv]
    return bank, bureau


def scorecard_job(
    model_dir: str | Path,
    bank_id: str,
    scaling: scorecard.Scaling,
    bureau: str | None = None,
    say: Say | None = None,
    tls_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Points per bin per feature: the bank's here (with the base points), the bureau's at
    the bureau. Writes ``MODEL_DIR/scorecard.csv`` and records the scaling in model.json."""
    say = say or (lambda text: log.info("%s", text))
    scaling.check()
    model = load_model(model_dir)
    bureau = bureau or model["bureau"]
    recipe = FeatureRecipe.from_json(model["recipe"])
    weights = np.asarray(model["weights"])
    # the calibrated log-odds: slope x (both halves) + intercept
    calibration = model.get("calibration", {"slope": 1.0, "intercept": 0.0})
    slope = float(calibration["slope"])
    points = scorecard.points_table(recipe, slope * weights[1:], scaling)
    base_points = round(
        scaling.offset - scaling.factor * (slope * float(weights[0]) + calibration["intercept"]),
        2,
    )
    with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
        made = _call(
            "making the bureau's scorecard",
            lambda: connection.scoring.MakeScorecard(
                pb.ScorecardRequest(
                    model_id=model["model_id"],
                    base_score=scaling.base_score,
                    pdo=scaling.pdo,
                    base_odds=scaling.base_odds,
                    slope=slope,
                ),
                timeout=120,
                metadata=connection.metadata,
            ),
        )
    model["scorecard"] = {
        **vars(scaling),
        "factor": scaling.factor,
        "offset": scaling.offset,
        "base_points": base_points,
        "points": points,
    }
    directory = Path(model_dir)
    tables.atomic_write_bytes(directory / MODEL_FILE, json.dumps(model, indent=2).encode())
    rows = [{"feature": "(base points)", "bin": "", "points": base_points}, *points]
    out = directory / "scorecard.csv"
    tables.write_csv(pa.Table.from_pylist(rows), out)
    say(f"scorecard: {len(points)} bank bins here, {made.bins} bureau bins at the bureau")
    return {
        "model_id": model["model_id"],
        "base_score": scaling.base_score,
        "pdo": scaling.pdo,
        "base_odds": scaling.base_odds,
        "base_points": base_points,
        "bank_features": len(recipe.columns),
        "bank_bins": len(points),
        "bureau_features": made.features,
        "bureau_bins": made.bins,
        "out": str(out),
    }
