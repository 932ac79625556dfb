"""The bank's Python API: the command lines' verbs on tables in memory.

``connect()`` opens a session with one bureau; its methods take pandas DataFrames or
pyarrow Tables and return DataFrames (pyarrow Tables without pandas). Errors are the typed
exceptions of ``protocols.errors`` (the same the command lines print as one line).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import pyarrow as pa

from node_runtime import tables
from node_runtime.cli_common import resolves_to_loopback
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from node_runtime.transport import certs
from protocols import binning, psi, scorecard
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError
from protocols.features import FeatureRecipe
from protocols.ids import IdType, prepare_ids
from protocols.optim import OptimizerConfig

from . import toolkit, training
from .client import DEFAULT_BANK_ID, BureauConnection, run_psi
from .frames import as_table, output
from .lookup import LookupClient, lookup_rows, private_bureau_lookup

log = logging.getLogger(__name__)


def bank_identity(
    address: str | None, tls_dir: str | Path | None, bank_id: str | None, insecure: bool
) -> str:
    """The bank's name at the bureau: its certificate's with TLS (another name is refused),
    ``bank_id`` or DEFAULT_BANK_ID on plaintext, which only a loopback bureau gets."""
    if tls_dir:
        certified = certs.certified_bank_id(tls_dir)
        if bank_id not in (None, certified):
            raise InputDataError(
                f"the certificate in {tls_dir} is for bank {certified!r}, not "
                f"{bank_id!r}: leave out --bank-id, or use that bank's directory"
            )
        return certified
    if not insecure:
        raise InputDataError(
            "connect with mutual TLS: --tls-dir DIR (the directory the bureau issued to this "
            "bank), or --insecure for plaintext to a bureau on loopback (development)"
        )
    host = address.rsplit(":", 1)[0].strip("[]") if address else "127.0.0.1"
    if not resolves_to_loopback(host):  # what the name resolves to, not the name
        raise InputDataError(
            f"--insecure is for a bureau on loopback only; {host} does not resolve to a "
            "loopback address only"
        )
    return bank_id or DEFAULT_BANK_ID


def connect(
    address: str,
    *,
    tls_dir: str | Path | None = None,
    bank_id: str | None = None,
    insecure: bool = False,
    workers: int | None = None,
    executor: str | None = None,
    progress: bool = True,
    connect_timeout: float = 10.0,
) -> Bureau:
    """A session with the bureau at ``address`` (HOST:PORT), over mutual TLS with the
    certificates in ``tls_dir`` (from ``bureau-node certs issue-bank``), or in plaintext to
    a loopback bureau with ``insecure=True`` (development). Use it in ``with``, or
    ``close()`` it.

    ``workers``: processes for the cryptography (default one per core, 0 none);
    ``executor``: ``"dask://HOST:PORT"`` for this bank's own Dask cluster instead;
    ``progress``: bars on long steps where they can be seen (a terminal or a notebook).
    """
    name = bank_identity(address, tls_dir, bank_id, insecure)
    connection = BureauConnection(address, name, connect_timeout, tls_dir=tls_dir)
    return Bureau(connection, workers=workers, executor=executor, progress=progress)


class Bureau:
    """An open session with one bureau: the catalogue, PSI, information values and joint
    training. The worker processes start at the first job and live until ``close()``."""

    def __init__(
        self,
        connection: BureauConnection,
        *,
        workers: int | None = None,
        executor: str | None = None,
        progress: bool = True,
    ) -> None:
        self.connection = connection
        self.address, self.bank_id = connection.address, connection.bank_id
        self._workers, self._executor_spec = workers, executor
        self._executor: Executor | None = None
        self._executor_made = False
        self.quiet = not progress
        self._lookups: LookupClient | None = None

    def __repr__(self) -> str:
        return f"<bank_node.Bureau {self.address} as {self.bank_id}>"

    def __enter__(self) -> Bureau:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lookups is not None:
            self._lookups.close()
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
        self.connection.close()

    @property
    def executor(self) -> Executor | None:
        if not self._executor_made:
            self._executor = make_executor(self._workers, self._executor_spec)
            self._executor_made = True
        return self._executor

    def _say(self, text: str) -> None:
        # a notebook shows warnings (logging's default level), not progress
        if text.startswith("warning: "):
            log.warning("%s", text.removeprefix("warning: "))
        else:
            log.info("%s", text)

    @property
    def lookups(self) -> LookupClient:
        """The session's private lookups: tables downloaded once, then one round trip per
        call on one long-lived stream (keep the session open for many decisions)."""
        if self._lookups is None:
            self._lookups = LookupClient(
                self.connection, say=self._say, executor=self.executor, stream=True
            )
        return self._lookups

    def lookup(
        self,
        clients: Any,
        *,
        id_column: str,
        products: list[str] | tuple[str, ...] = ("size_class",),
        id_type: str = "uscc",
        encoding: str | None = None,
        sheet: str | None = None,
        skip_rows: int = 0,
    ) -> Any:
        """The bureau's data products for each row of ``clients``, looked up privately (the
        bureau learns how many IDs, not which): the ID as given, then each product's columns
        (``size_class``, ``size_class_zh``, ... see docs/private-lookups.md), empty where
        the bureau holds no entry or the ID is invalid. A file's path is read as
        ``bank-node`` reads it (``encoding``, ``sheet``, ``skip_rows``: its --encoding,
        --sheet, --skip-rows)."""
        table = as_table(clients, id_column, _read_options(encoding, sheet, skip_rows))
        result, _, _ = lookup_rows(
            self.connection, table, id_column, IdType(id_type), list(products), client=self.lookups
        )
        return output(result)

    def features(self) -> Any:
        """The bureau's catalogue: name, kind, description of each feature and whether anyone
        can look it up (``public``: it does not count towards a model's minimum of bureau
        features), never values."""
        rows = training.bureau_features(self.connection)
        return output(_from_rows(rows, ["name", "kind", "description", "public"]))

    def models(self) -> Any:
        """The models this bank keeps at the bureau: model_id, created, features (the
        bureau's), epoch (the one kept, 1-based), psi_session_id, scorecard. The bureau
        refuses a new job while the bank keeps its limit (``max_models``)."""
        rows, _ = toolkit.kept_models(self.connection)
        names = ["model_id", "created", "features", "epoch", "psi_session_id", "scorecard"]
        return output(_from_rows(rows, names))

    def delete_model(self, model_id: str) -> dict[str, Any]:
        """Delete one of this bank's models at the bureau, with its scorecard and lookup
        tables (and this machine's copy of its table); it no longer scores. The model's
        directory at the bank is left as it is."""
        return toolkit.delete_model(self.connection, model_id)

    def psi(
        self,
        data: Any,
        *,
        id_column: str,
        id_type: str = "uscc",
        reveal: str = "both",
        encoding: str | None = None,
        sheet: str | None = None,
        skip_rows: int = 0,
    ) -> Any:
        """The normalised IDs of ``data`` the bureau knows, in ``data``'s order, each once
        (column ``id_column``). ``reveal="bank"`` leaves the bureau with the set sizes only;
        ``"both"`` (default) lets it learn the intersection, as training needs. Invalid IDs
        are left out (and counted in the log)."""
        table = as_table(data, id_column, _read_options(encoding, sheet, skip_rows))
        prepared = prepare_ids(table.column(id_column), IdType(id_type))
        if prepared.rejects:
            log.warning("%d rows have invalid IDs and were left out", len(prepared.rejects))
        with ProgressBars(enabled=False if self.quiet else None) as bars:
            result = run_psi(
                self.connection,
                prepared.ids,
                psi.Reveal(reveal),
                self.executor if prepared.ids else None,
                bars,
            )
        return output(pa.table({id_column: pa.array(result.matched_ids, pa.string())}))

    def information_value(
        self,
        data: Any,
        *,
        id_column: str,
        label: str,
        id_type: str = "uscc",
        bank_features: list[str] | None = None,
        bureau_features: list[str] | None = None,
        bins: int = binning.DEFAULT_BINS,
        min_bin_count: int = binning.DEFAULT_MIN_BIN_COUNT,
        min_bin_share: float = binning.DEFAULT_MIN_BIN_SHARE,
        monotonic: bool = True,
        key_bits: int = he.DEFAULT_KEY_BITS,
        allow_test_keys: bool = False,
        positive_label: str | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
        skip_rows: int = 0,
    ) -> Any:
        """Weight of evidence and information value of every bank feature (here) and every
        bureau feature (binned at the bureau on labels encrypted under this bank's key), over
        the clients the bureau knows, most informative first: feature, party, kind, bins,
        iv, strength."""
        he.check_key_bits(key_bits, allow_test_keys)
        min_bin_count = toolkit.check_binning(bins, min_bin_count, min_bin_share)
        options = _read_options(encoding, sheet, skip_rows)
        table, labels = training.read(data, id_column, label, options, positive_label)
        kind = IdType(id_type)
        bank_features = toolkit.usable_bank_features(
            table, labels, id_column, kind, label, bank_features, self._say
        )
        found = toolkit.information_values(
            self.connection,
            self.executor,
            table,
            labels,
            id_column=id_column,
            id_type=kind,
            bank_features=bank_features,
            bureau_features=bureau_features,
            max_bins=bins,
            min_bin_count=min_bin_count,
            min_bin_share=min_bin_share,
            monotonic=monotonic,
            key_bits=key_bits,
            allow_test_keys=allow_test_keys,
            quiet=self.quiet,
            say=self._say,
        )
        return output(found.table())

    def train(
        self,
        data: Any,
        *,
        id_column: str,
        label: str,
        id_type: str = "uscc",
        bank_features: list[str] | None = None,
        bureau_features: list[str] | None = None,
        validation_fraction: float = 0.2,
        epochs: int = 10,
        batch_size: int | None = None,
        optimizer: str = "adam",
        learning_rate: float = 0.05,
        decay: float = 0.5,
        penalty: str = "l2",
        alpha: float = 1e-4,
        patience: int | None = None,
        positive_label: str | None = None,
        seed: int | None = None,
        key_bits: int = he.DEFAULT_KEY_BITS,
        allow_test_keys: bool = False,
        compare_bank_only: bool = False,
        model_dir: str | Path | None = None,
        on_epoch: Callable[[vlr.EpochRecord], None] | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
        skip_rows: int = 0,
        overwrite: bool = False,
    ) -> JointModel:
        """Trains a joint model on ``data`` (the bank's clients: ID, features, 0/1 label) and
        the bureau's features, as ``bank-node train`` does: PSI, a held-back validation
        share, Paillier-encrypted training with early stopping, calibration.

        ``model_dir``: where the per-epoch checkpoint (it holds the job's key) and the model
        are written; by default a private temporary directory, removed afterwards, and
        the model stays in memory until ``save()``. A file's path is read as ``bank-node``
        reads it (``encoding``, ``sheet``, ``skip_rows``: its --encoding, --sheet,
        --skip-rows). A ``model_dir`` that holds a model is refused unless ``overwrite``."""
        if model_dir is not None:
            training.refuse_a_kept_model(model_dir, overwrite)
        options = _read_options(encoding, sheet, skip_rows)
        job_settings: dict[str, Any] = {
            "bureau": self.address,
            "bank_id": self.bank_id,
            "id_column": id_column,
            "label": label,
            "id_type": IdType(id_type),
            "bank_features": bank_features,
            "bureau_features": bureau_features,
            "validation_fraction": validation_fraction,
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": OptimizerConfig(
                name=optimizer,
                learning_rate=learning_rate,
                penalty=penalty,
                alpha=alpha,
                decay=decay,
            ),
            "seed": seed,
            "key_bits": key_bits,
            "allow_test_keys": allow_test_keys,
            "compare_bank_only": compare_bank_only,
            "patience": patience,
            "positive_label": positive_label,
            "quiet": self.quiet,
            "say": self._say,
            "on_epoch": on_epoch,
            "read_options": options,
        }
        table, labels = training.read(data, id_column, label, options, positive_label)
        if model_dir is not None:  # one job at a time in a directory, as on the command line
            with training.hold_directory(model_dir, "training job", "model_dir"):
                job = training.TrainingJob(model_dir=Path(model_dir), **job_settings)
                fitted = training.fit(self.connection, self.executor, table, labels, job)
                training.save(model_dir, fitted)
        else:
            with tempfile.TemporaryDirectory(prefix="xinrong-job-") as scratch:
                job = training.TrainingJob(model_dir=Path(scratch), **job_settings)
                fitted = training.fit(self.connection, self.executor, table, labels, job)
        return JointModel(fitted.bank_half, self, fitted.evaluation, fitted.summary)


class JointModel:
    """The bank's half of a joint model, scored together with the bureau's half (kept at
    the bureau under the same ``model_id``).

    ``metrics``: AUC, KS, log-loss (and more) on the training and validation rows;
    ``history``: one row per epoch; ``summary``: the training job's figures (after
    ``train`` only)."""

    def __init__(
        self,
        bank_half: dict[str, Any],
        bureau: Bureau,
        evaluation: Any = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.bank_half = bank_half
        self.bureau = bureau
        self.evaluation = evaluation  # per matched row: ID, split, y, joint (pyarrow)
        self.summary = summary or {}

    def __repr__(self) -> str:
        auc = self.metrics.get("validation", {}).get("auc")
        return f"<bank_node.JointModel {self.model_id} validation AUC {auc}>"

    @property
    def model_id(self) -> str:
        return str(self.bank_half["model_id"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.bank_half.get("metrics", {}))

    @property
    def history(self) -> Any:
        """Per epoch: epoch (from 1), train_loss, validation_loss, seconds."""
        rows = [
            {
                "epoch": r["epoch"] + 1,
                "train_loss": r["train_loss"],
                "validation_loss": r.get("validation_loss"),
                "seconds": r["seconds"],
            }
            for r in self.bank_half.get("history", [])
        ]
        return output(_from_rows(rows, ["epoch", "train_loss", "validation_loss", "seconds"]))

    def predict_proba(
        self,
        applicants: Any,
        *,
        id_column: str | None = None,
        id_type: str | None = None,
        points: bool = False,
        scoring: str = "private",
        encoding: str | None = None,
        sheet: str | None = None,
        skip_rows: int = 0,
    ) -> Any:
        """One row per applicant, in ``applicants``' order: the ID as given, ``score`` (the
        probability of default), ``bureau_matched`` and reason codes (``reason_1..3`` from the
        bank's features, ``bureau_reason_1..3`` named by the bureau); ``points`` adds scorecard
        points (make the scorecard first), from the same log-odds as the probability.
        Applicants the bureau does not know get its neutral score and ``bureau_matched =
        False``; none is dropped. ``scoring="private"`` (default): the bureau's half comes
        from the model's lookup table and the bureau learns only how many applicants there
        were; ``"reveal-both"``: PSI tells the bureau who they are."""
        model = self.bank_half
        id_column = id_column or model["id_column"]
        recipe = FeatureRecipe.from_json(model["recipe"])
        options = training.as_trained(_read_options(encoding, sheet, skip_rows), recipe)
        table = as_table(applicants, id_column, options)
        training.warn_unlike_training(recipe, table, self.bureau._say)
        bureau = self.bureau
        if scoring not in training.SCORING_MODES:
            raise InputDataError(
                f"scoring {scoring!r}: choose one of {', '.join(training.SCORING_MODES)}"
            )
        if scoring == "private":
            lookup = private_bureau_lookup(bureau.connection, model, client=bureau.lookups)
        else:
            lookup = training.bureau_lookup(
                bureau.connection, bureau.executor, model, bureau.quiet, bureau._say
            )
        kind = IdType(id_type or model["id_type"])
        return output(training.score(model, table, id_column, kind, points, lookup).table)

    def scorecard(
        self, *, base_score: float = 600.0, pdo: float = 50.0, base_odds: float = 20.0
    ) -> Any:
        """Points per bin per feature: the bank's are returned (the base points first), the
        bureau's are made and kept at the bureau. ``predict_proba(..., points=True)`` then
        adds each applicant's points."""
        made = toolkit.make_scorecard(
            self.bureau.connection,
            self.bank_half,
            scorecard.Scaling(base_score, pdo, base_odds),
        )
        self.bank_half["scorecard"] = made.card
        return output(made.table())

    def save(self, directory: str | Path) -> Path:
        """Writes the bank's half (``model.json``, the format of docs/model-format.md) and,
        if known, its per-row results (``evaluation.csv``) and scorecard; the directory
        then works with the command lines too (``bank-node predict --model-dir``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        training.drop_stale_companions(directory, self.bank_half, keep_iv_table=False)
        model = json.dumps(self.bank_half, indent=2).encode()
        tables.atomic_write_bytes(directory / training.MODEL_FILE, model)
        if self.evaluation is not None:
            tables.write_csv(self.evaluation, directory / training.EVALUATION_FILE)
        if "scorecard" in self.bank_half:
            card = toolkit.Scorecard(self.bank_half["scorecard"], 0, 0)
            tables.write_csv(card.table(), directory / toolkit.SCORECARD_FILE)
        return directory


def load(directory: str | Path, bureau: Bureau) -> JointModel:
    """The model saved in ``directory`` (by ``save()`` or ``bank-node train``), scored with
    ``bureau``'s session."""
    model = training.load_model(directory)
    evaluation_path = Path(directory) / training.EVALUATION_FILE
    evaluation = None
    if evaluation_path.exists():
        evaluation = tables.read_table(evaluation_path, model["id_column"])
    return JointModel(model, bureau, evaluation)


def _read_options(encoding: str | None, sheet: str | None, skip_rows: int) -> tables.ReadOptions:
    """How a file's path given to the API is read (``None``: found out, as the CLI does)."""
    return tables.ReadOptions(encoding=encoding, sheet=sheet, skip_rows=skip_rows)


def _from_rows(rows: list[dict[str, Any]], names: list[str]) -> pa.Table:
    """A table of these columns, even with no rows."""
    return pa.table({name: [row.get(name) for row in rows] for name in names})
