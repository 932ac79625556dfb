"""The credit modeller's tools on the bank's side: information value of the bank's and the
bureau's features (the bureau's computed on encrypted labels), and scorecards."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from node_runtime import tables
from node_runtime.cli_common import pad
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from node_runtime.transport import model_codec as codec
from protocols import binning, psi, scorecard
from protocols import paillier as he
from protocols.errors import InputDataError, ProtocolViolation
from protocols.features import FEATURE_KINDS, FeatureRecipe, check_peer_names
from protocols.ids import IdType, prepare_ids
from protocols.lookup import MODEL_ID, model_table
from xinrong.v1 import model_pb2 as pb

from .client import BureauConnection, run_psi
from .data_checks import check_bank_data, check_bureau_features, warn_rejected_ids
from .lookup import LookupClient
from .training import (
    MODEL_FILE,
    START_DEADLINE,
    _call,
    _id_positions,
    bureau_catalogue,
    load_model,
    read,
)

log = logging.getLogger(__name__)
Say = Callable[[str], None]
LABELS_PER_CHUNK = 4096
IV_COLUMNS = ["feature", "party", "kind", "bins", "iv", "iv_sd", "strength"]
SCORECARD_FILE = "scorecard.csv"


def bins_path_for(out: Path) -> Path:
    """``iv.csv`` -> ``iv.bins.json`` (per-bin counts and WOE), next to it."""
    return out.with_name(out.stem + ".bins.json")


def _label_chunks(
    session_id: str,
    key: he.PublicKey,
    key_proof: he.KeyProof,
    ciphertexts: Sequence[Any] | Callable[[int, int], Sequence[Any]],
    max_bins: int,
    features: list[str],
    total: int | None = None,
) -> Iterator[pb.EncryptedLabels]:
    """The request's settings first, with no labels: the bureau charges (or refuses) on
    them, before the bank encrypts a label. Then the labels, a chunk at a time:
    ``ciphertexts`` is the list, or a function encrypting the labels ``[start, end)``."""
    if total is None:
        assert not callable(ciphertexts)
        total = len(ciphertexts)
    span = ciphertexts if callable(ciphertexts) else (lambda a, b: ciphertexts[a:b])
    yield pb.EncryptedLabels(
        offset=0,
        total=total,
        psi_session_id=session_id,
        bank_public_key=codec.key_to_bytes(key),
        bank_key_proof=codec.key_proof_to_bytes(key_proof, key),
        max_bins=max_bins,
        features=features,
    )
    for start in range(0, total, LABELS_PER_CHUNK):
        end = min(total, start + LABELS_PER_CHUNK)
        try:
            chunk = span(start, end)
        except concurrent.futures.CancelledError:
            # the call ended (the bureau refused on the settings) and the bank's workers
            # were stopped under this chunk: the refusal is the error to say, not a
            # traceback of gRPC's request thread
            return
        yield pb.EncryptedLabels(
            offset=start, total=total, labels=he.ciphertexts_to_bytes(chunk, key)
        )


@dataclass
class InformationValues:
    """WOE and IV of every feature, most informative first, over the clients the bureau
    knows."""

    values: list[binning.FeatureValue]
    matched: int
    defaults: int
    bank_features: int
    bureau_features: int
    psi_session_id: str
    rho_charged: float  # the privacy loss (zCDP) the bureau charged for its noisy counts

    def table(self) -> pa.Table:
        """The IV table: feature, party, kind, bins, iv, strength."""
        return pa.table({c: [getattr(v, c) for v in self.values] for c in IV_COLUMNS})


def usable_bank_features(
    table: pa.Table,
    labels: np.ndarray,
    id_column: str,
    id_type: IdType,
    label: str,
    names: list[str] | None,
    say: Say,
) -> list[str]:
    """The bank's data checked before anything leaves the bank (``data_checks``): the
    features that are kept (all usable columns but the ID and the label by default)."""
    return check_bank_data(table, id_column, id_type, labels, names, label, say=say).bank_features


def information_values(
    connection: BureauConnection,
    executor: Executor | None,
    table: pa.Table,
    labels_all: np.ndarray,
    *,
    id_column: str,
    id_type: IdType,
    bank_features: list[str],
    bureau_features: list[str] | None,
    max_bins: int,
    min_bin_count: int,
    min_bin_share: float,
    monotonic: bool,
    key_bits: int,
    allow_test_keys: bool,
    quiet: bool,
    say: Say,
) -> InformationValues:
    """PSI, the bank's labels encrypted under its own key and binned at the bureau, and WOE
    and IV per bin of every bank (locally) and bureau (decrypted sums) feature."""
    catalogue = bureau_catalogue(connection)
    check_bureau_features(bureau_features, catalogue)  # before PSI
    # before PSI too: a request beyond today's budget costs no session
    budget = _call(
        "checking the day's information-value budget at the bureau",
        lambda: connection.binning.CheckIvBudget(
            pb.IvBudgetRequest(features=list(bureau_features or [])),
            timeout=60,
            metadata=connection.metadata,
        ),
    )
    log.info("the request will be charged rho %.4g (%d features)", budget.rho, budget.features)
    prepared = prepare_ids(table.column(id_column), id_type)
    warn_rejected_ids(prepared, say)
    bars = ProgressBars(enabled=False if quiet else None)
    say(f"private set intersection on {len(prepared.ids):,} IDs")
    result = run_psi(connection, prepared.ids, psi.Reveal.BOTH, executor, bars)
    bars.close()
    rows = len(result.matched_ids)
    positions = _id_positions(table, id_column, id_type, result.matched_ids)
    matched = table.take(pa.array(positions))
    y = labels_all[positions]
    defaults = int(y.sum())
    say(f"the bureau knows {rows:,} of them ({defaults:,} defaults)")
    if rows == 0:
        raise InputDataError("the bureau knows none of these clients: no information value")
    if y.min() == y.max():
        raise InputDataError(
            f"all {rows:,} matched clients have label {int(y[0])}: information value "
            "needs both defaults and non-defaults"
        )
    min_bin_count = binning.min_bin_rows(rows, min_bin_count, min_bin_share)
    say(f"bins of at least {min_bin_count:,} clients (smaller ones are merged)")
    if monotonic and budget.features:
        _check_measurable(defaults, rows, binning.BinNoise(budget.rho / budget.features))

    public_key, private_key = he.generate_keypair(key_bits, allow_test_keys)
    encryptor = he.OwnerEncryptor(private_key)
    labels = [int(v) for v in y]
    say(f"encrypting {rows:,} labels as the bureau takes them")
    with ProgressBars(enabled=False if quiet else None, unit="label") as label_bars:

        def encrypted(start: int, end: int) -> list[Any]:
            # encrypted as the stream goes: a request the bureau refuses on its settings
            # (its privacy budget spent) costs the bank no encryption
            out = encryptor.encrypt_many(labels[start:end], executor)
            label_bars("encrypting labels", end, rows)
            return out

        answer = _call(
            "binning the encrypted labels at the bureau",
            lambda: connection.binning.BinLabels(
                _label_chunks(
                    result.session_id,
                    public_key,
                    he.prove_key(private_key),
                    encrypted,
                    max_bins,
                    list(bureau_features or []),
                    total=rows,
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
    named = list(dict.fromkeys(bureau_features or catalogue))  # charged once each
    sigma = _answer_noise(answer, named)
    released = {f.name for f in answer.features}
    withheld = [n for n in named if n not in released]
    if withheld:  # charged: whether a feature has one bin is data
        say(
            f"the bureau released no bins of {', '.join(withheld)}: one bin over its whole "
            "table (each was charged to the budget like the others)"
        )
    for feature in answer.features:
        values.append(
            _bureau_feature(
                feature, private_key, public_key, rows, defaults, monotonic, sigma, min_bin_count
            )
        )
    values.sort(key=lambda v: -v.iv)
    unmeasured = [v.feature for v in values if v.strength == UNMEASURED]
    if unmeasured:
        say(
            f"warning: {len(unmeasured)} bureau feature(s) merged into one bin to carry 5 "
            f"sigmas of the noise in defaults and non-defaults: {', '.join(unmeasured[:5])}"
            f"{' ...' if len(unmeasured) > 5 else ''}; their IV 0 is unmeasured, not "
            "'not predictive' (more defaults would measure them)"
        )
    rough = [v for v in values if v.iv_sd > ROUGH_IV_SD]
    if rough:
        say(
            f"warning: the bureau's noise moves the IV of {len(rough)} bureau feature(s) by "
            f"more than {ROUGH_IV_SD} (the iv_sd column; {defaults:,} defaults in all): "
            "read them as rough; more defaults make them sharper"
        )
    return InformationValues(
        values,
        rows,
        defaults,
        len(bank_features),
        len(answer.features),
        result.session_id,
        round(answer.rho_charged, 6),
    )


def check_binning(max_bins: int, min_bin_count: int, min_bin_share: float = 0.0) -> int:
    """The bin settings checked; the bank's own bins follow the floor the bureau enforces on
    its bins."""
    if not 2 <= max_bins <= binning.MAX_BINS:
        raise InputDataError(f"--bins must be from 2 to {binning.MAX_BINS}")
    if min_bin_count < 1:
        raise InputDataError(f"--min-bin-count must be at least 1 client, not {min_bin_count}")
    if not 0.0 <= min_bin_share <= binning.MAX_MIN_BIN_SHARE:
        raise InputDataError(
            f"--min-bin-share must be from 0 to {binning.MAX_MIN_BIN_SHARE} (a share of the "
            f"matched clients; above it fewer than four bins are left), not {min_bin_share}"
        )
    return max(min_bin_count, binning.BUREAU_MIN_BIN_COUNT)


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
    min_bin_share: float = binning.DEFAULT_MIN_BIN_SHARE,
    monotonic: bool = True,
    key_bits: int = he.DEFAULT_KEY_BITS,
    allow_test_keys: bool = False,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    tls_dir: str | Path | None = None,
    read_options: tables.ReadOptions | None = None,
    positive_label: str | None = None,
) -> dict[str, Any]:
    """WOE and IV of every bank feature (locally) and every bureau feature (federated) over
    the clients the bureau knows; writes the IV table (CSV) and per-bin details (JSON)."""
    started = time.perf_counter()
    say = say or (lambda text: log.info("%s", text))
    out = Path(out)
    he.check_key_bits(key_bits, allow_test_keys)
    min_bin_count = check_binning(max_bins, min_bin_count, min_bin_share)
    table, labels_all = read(data, id_column, label, read_options, positive_label)
    bank_features = usable_bank_features(
        table, labels_all, id_column, id_type, label, bank_features, say
    )
    with contextlib.ExitStack() as stack:
        executor = make_executor(workers, executor_spec)
        if executor is not None:
            stack.callback(executor.shutdown, cancel_futures=True)
        connection = stack.enter_context(BureauConnection(bureau, bank_id, tls_dir=tls_dir))
        found = information_values(
            connection,
            executor,
            table,
            labels_all,
            id_column=id_column,
            id_type=id_type,
            bank_features=bank_features,
            bureau_features=bureau_features,
            max_bins=max_bins,
            min_bin_count=min_bin_count,
            min_bin_share=min_bin_share,
            monotonic=monotonic,
            key_bits=key_bits,
            allow_test_keys=allow_test_keys,
            quiet=quiet,
            say=say,
        )
    tables.write_csv(found.table(), out)
    details = bins_path_for(out)
    tables.atomic_write_bytes(
        details, json.dumps([vars(v) for v in found.values], indent=2).encode()
    )
    return {
        "matched": found.matched,
        "defaults": found.defaults,
        "features": len(found.values),
        "bank_features": found.bank_features,
        "bureau_features": found.bureau_features,
        # the privacy loss the bureau charged for its noisy counts (its daily budget)
        "rho_charged": found.rho_charged,
        "top": [{"feature": v.feature, "party": v.party, "iv": v.iv} for v in found.values[:5]],
        "out": str(out),
        "bins": str(details),
        "psi_session_id": found.psi_session_id,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _check_measurable(defaults: int, rows: int, noise: binning.BinNoise) -> None:
    """Refused before the labels are sent (nothing charged): matched clients too few in
    defaults or non-defaults for any bureau feature to keep two bins of 5 sigmas of the
    noise each, so that every bureau IV would read 0, "not predictive" (a review's 8
    defaults in 150 clients)."""
    need = math.ceil(2 * binning.NOISE_FLOOR_SIGMAS * noise.sigma)
    if min(defaults, rows - defaults) < need:
        raise InputDataError(
            f"{defaults:,} defaults and {rows - defaults:,} non-defaults among the {rows:,} "
            f"matched clients: the bureau's noise (sigma {noise.sigma:.3g}) needs {need} of "
            "each to tell two bins of a feature apart, so every bureau feature would read IV "
            "0. Nothing was charged to the IV budget. Use more clients or a longer default "
            "window, or --no-monotonic to see the bureau's bins without the merging for the "
            "noise (and very noisy)"
        )


def _answer_noise(answer: pb.BinnedLabelSums, named: list[str]) -> float:
    """The bureau's answer checked as a whole: features the bank named, each once, and a
    rho charged within the range a bureau may configure per feature. The noise's sigma that
    rho implies, which the range of every count rests on (a rho of 1e-24 claimed noise wide
    enough to pass counts of 2^39)."""
    check_peer_names([f.name for f in answer.features], "the bureau's information values")
    asked = set(named)
    strangers = [f.name for f in answer.features if f.name not in asked]
    if strangers:  # each would cost the bank its decryption and noise simulation
        raise ProtocolViolation(
            f"the bureau answered for features not asked for: {', '.join(strangers[:5])}"
        )
    low, high = binning.RHO_RANGE
    per_feature = answer.rho_charged / len(named) if named else 0.0
    if not low <= per_feature <= high:
        raise ProtocolViolation(
            f"the bureau says it charged rho {answer.rho_charged} for {len(named)} features: "
            f"not {low:g} to {high:g} per feature"
        )
    return binning.BinNoise(per_feature).sigma


ROUGH_IV_SD = 0.02  # an IV moved more than this by the bureau's noise is said to be rough
UNMEASURED = binning.UNMEASURED


def _bureau_feature(
    feature: pb.FeatureBins,
    private_key: he.PrivateKey,
    public_key: he.PublicKey,
    rows: int,
    positives: int,
    monotonic: bool,
    sigma: float = 0.0,
    min_rows: int = 0,
) -> binning.FeatureValue:
    """One bureau feature's IV from its noisy counts: the bureau's bins (fitted on its whole
    table) merged here, on the counts as received, until each holds ``min_rows`` clients
    and, unless ``monotonic`` is off, 5 sigmas of the noise in positives and negatives."""
    count = feature.bins
    if not 1 <= count <= binning.MAX_BINS + 1:
        raise ProtocolViolation(f"feature {feature.name!r} came with {count} bins")
    offset = feature.noise_offset
    if not 2 <= feature.slot_bits <= 64 or (1 << feature.slot_bits) <= rows + 2 * offset:
        raise ProtocolViolation(f"feature {feature.name!r}: slot width {feature.slot_bits}")
    if not -1 <= feature.missing_bin < count:
        raise ProtocolViolation(f"feature {feature.name!r}: no bin {feature.missing_bin}")
    # free text from the bureau that goes into the IV table's CSV: only the two kinds there are
    if feature.kind not in FEATURE_KINDS:
        raise ProtocolViolation(
            f"feature {feature.name!r}: kind {feature.kind[:40]!r} is neither 'numeric' nor "
            "'category'"
        )
    packed = he.ciphertexts_from_bytes(feature.sums, public_key)
    slots = he.unpack_sums(packed, private_key, feature.slot_bits, 2 * count)
    # positives and negatives per bin, each with the bureau's noise (cut at 0)
    received = stats = binning.noisy_bins(slots, offset, positives, rows, feature.name, sigma)
    missing = None if feature.missing_bin < 0 else feature.missing_bin
    # bins of the bank's smallest size and that carry more than the noise (post-processing:
    # no privacy spent); with --no-monotonic only the size counts
    floor = binning.NOISE_FLOOR_SIGMAS * sigma if monotonic else 0.0
    stats, merged_missing = binning.merge_for_noise(
        stats, feature.ordered, missing, floor, min_rows
    )
    value = binning.evaluate_feature(
        feature.name, "bureau", feature.kind, stats, feature.ordered, merged_missing, monotonic
    )
    if len(stats.totals) == 1 < count and _noise_merged_all(received, feature, missing, min_rows):
        value = dataclasses.replace(value, strength=UNMEASURED)
    # the spread of the whole path (noise on the received bins, merged, evaluated)
    spread = binning.iv_spread(
        received, feature.ordered, missing, sigma, monotonic, floor, min_rows=min_rows
    )
    return dataclasses.replace(value, iv_sd=round(spread, 4))


def _noise_merged_all(
    received: binning.BinStatistics, feature: pb.FeatureBins, missing: int | None, min_rows: int
) -> bool:
    """Whether the bins merged into one for the noise's sake: the bank's minimum size alone
    leaves more than one (a flag of 100 clients read IV 0.30 at --min-bin-share 0.02 and
    one bin at 0.25: that is the setting, not the noise)."""
    sized, _ = binning.merge_for_noise(received, feature.ordered, missing, 0.0, min_rows)
    return len(sized.totals) > 1


def format_iv_table(values: list[dict[str, Any]]) -> str:
    lines = [f"{'feature':<32} {'party':<7} {'bins':>4} {'IV':>8} {'noise':>7}  strength"]
    for v in values:
        spread = v.get("iv_sd") or 0.0
        noise = f"±{spread:.3f}" if spread else ""
        lines.append(
            f"{pad(v['feature'], 32)} {v['party']:<7} {v['bins']:>4} {v['iv']:>8.4f} "
            f"{noise:>7}  {v['strength']}"
        )
    return "\n".join(lines)


def read_iv_table(path: str | Path) -> list[dict[str, Any]]:
    table = tables.read_table(path, "feature")
    return table.to_pylist()


def unmeasured_features(path: str | Path) -> list[str]:
    """The bureau features of an IV table whose IV the noise left unmeasured."""
    rows = read_iv_table(path)
    return [
        r["feature"] for r in rows if r["party"] == "bureau" and r.get("strength") == UNMEASURED
    ]


def select_by_iv(path: str | Path, min_iv: float) -> tuple[list[str], list[str]]:
    """Bank and bureau features whose IV is at least ``min_iv``; never an unmeasured one
    (its IV of 0 is no measure, even at ``min_iv`` 0)."""
    rows = [r for r in read_iv_table(path) if r.get("strength") != UNMEASURED]
    bank = [r["feature"] for r in rows if r["party"] == "bank" and r["iv"] >= min_iv]
    bureau = [r["feature"] for r in rows if r["party"] == "bureau" and r["iv"] >= min_iv]
    return bank, bureau


@dataclass
class Scorecard:
    """A model's scorecard: the bank's points (with the base points) and, kept at the
    bureau, how many features and bins the bureau's part has."""

    card: dict[str, Any]  # stored in the bank's half as ``scorecard``
    bureau_features: int
    bureau_bins: int

    def table(self) -> pa.Table:
        """The bank's points: feature, bin, points; the base points first."""
        base = {"feature": "(base points)", "bin": "", "points": self.card["base_points"]}
        return pa.Table.from_pylist([base, *self.card["points"]])


def make_scorecard(
    connection: BureauConnection, model: dict[str, Any], scaling: scorecard.Scaling
) -> Scorecard:
    """Points per bin per feature: the bank's here, the bureau's made and kept at the
    bureau, both on the calibrated log-odds."""
    scaling.check()
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
    card = {
        **vars(scaling),
        "factor": scaling.factor,
        "offset": scaling.offset,
        "base_points": base_points,
        "points": points,
    }
    return Scorecard(card, made.features, made.bins)


def scorecard_job(
    model_dir: str | Path,
    bank_id: str,
    scaling: scorecard.Scaling,
    bureau: str | None = None,
    say: Say | None = None,
    tls_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Makes the scorecard of the model in ``model_dir``; writes ``MODEL_DIR/scorecard.csv``
    and records the scaling in model.json."""
    say = say or (lambda text: log.info("%s", text))
    scaling.check()
    model = load_model(model_dir)
    with BureauConnection(bureau or model["bureau"], bank_id, tls_dir=tls_dir) as connection:
        made = make_scorecard(connection, model, scaling)
    model["scorecard"] = made.card
    directory = Path(model_dir)
    tables.atomic_write_bytes(directory / MODEL_FILE, json.dumps(model, indent=2).encode())
    out = directory / SCORECARD_FILE
    tables.write_csv(made.table(), out)
    points = made.card["points"]
    say(f"scorecard: {len(points)} bank bins here, {made.bureau_bins} bureau bins at the bureau")
    return {
        "model_id": model["model_id"],
        "base_score": scaling.base_score,
        "pdo": scaling.pdo,
        "base_odds": scaling.base_odds,
        "base_points": made.card["base_points"],
        "bank_features": len(FeatureRecipe.from_json(model["recipe"]).columns),
        "bank_bins": len(points),
        "bureau_features": made.bureau_features,
        "bureau_bins": made.bureau_bins,
        "out": str(out),
    }


# -- the models the bank keeps at the bureau --------------------------------------------

_CREATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_SESSION = re.compile(r"^[0-9a-f]{1,64}$")


def kept_models(connection: BureauConnection) -> tuple[list[dict[str, Any]], int]:
    """The models this bank keeps at the bureau (id, when made, bureau features, kept
    epoch 1-based, PSI session, whether a scorecard is kept) and how many it may keep."""
    answer = _call(
        "listing the models kept at the bureau",
        lambda: connection.scoring.ListModels(
            pb.ListModelsRequest(), timeout=60, metadata=connection.metadata
        ),
    )
    models = []
    for m in answer.models:
        checks = (
            MODEL_ID.match(m.model_id),
            _CREATED.match(m.created),
            _SESSION.match(m.psi_session_id),
            0 < m.epoch <= 100_000,  # any plausible count of epochs
        )
        if not all(checks):
            raise ProtocolViolation(f"the bureau listed a malformed model {m.model_id[:40]!r}")
        features = check_peer_names(m.features, f"model {m.model_id}")
        models.append(
            {
                "model_id": m.model_id,
                "created": m.created,
                "features": features,
                "epoch": m.epoch,
                "psi_session_id": m.psi_session_id,
                "scorecard": m.scorecard,
            }
        )
    return models, answer.limit


def delete_model(connection: BureauConnection, model_id: str) -> dict[str, Any]:
    """Delete one of this bank's models at the bureau (its half, scorecard and lookup
    tables) and this machine's copy of its lookup table. The model no longer scores; its
    directory at the bank (model.json, evaluation, report) is left to the bank."""
    if not MODEL_ID.match(model_id):
        raise InputDataError(f"{model_id[:40]!r} is not a model id (32 hexadecimal digits)")
    deleted = _call(
        f"deleting model {model_id} at the bureau",
        lambda: connection.scoring.DeleteModel(
            pb.DeleteModelRequest(model_id=model_id), timeout=60, metadata=connection.metadata
        ),
    )
    if deleted.model_id != model_id:
        raise ProtocolViolation(f"the bureau deleted {deleted.model_id[:40]!r}, not {model_id}")
    return {
        "deleted": model_id,
        "bureau_lookup_tables_removed": deleted.lookup_tables_removed,
        "local_tables_removed": LookupClient(connection).forget(model_table(model_id)),
    }
