"""The joint model's quality on a synthetic city, as the demo trains it, without Paillier.

The demo of 2026-11-30 reported a joint validation AUC of 0.755 against 0.771 for the bank
alone. Rebuilt from that run's files, the protocol's plaintext equivalent gives exactly the
demo's figure and its per-epoch losses, and scikit-learn on the same design matrix and split
gives 0.754: the training lost nothing. That split was an unlucky one (the worst of 30 split
seeds on the same rows: the lift averages +0.09 with a spread of 0.04), and it changed with
every run because the matched rows came in the order of the PSI tags, keyed by the bureau's
fresh secret. Both parties now sort the matched rows by ID, so the same seed holds back the
same clients in every session (the last test here).

``tests/test_vertical_lr.py`` shows that the encrypted protocol computes the plaintext
updates; the first test here, that with the default flags those updates reach what the
features allow.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bank_node.training import auto_batch_size, default_patience
from bureau_node.edges import DEFAULT_FLAG_COLUMNS, graph_columns
from protocols import group, psi
from protocols import vertical_lr as vlr
from protocols.features import FeatureRecipe
from protocols.ids import IdType
from protocols.optim import Optimizer, OptimizerConfig, ShareSgd, epoch_batches, split_rows
from xinrong.synthetic import BANK_COLUMNS, generate_city, write_city

SEED = 3  # city and split; seeds 1 to 5 all give within 0.005 of scikit-learn or above it


def _matched(tmp: Path) -> tuple[pa.Table, list[str], list[str]]:
    """The bank's clients the bureau knows (each once), joined with the bureau's columns and
    its graph features, and the names of each party's features."""
    city = generate_city(20_000, 3_000, SEED)
    paths = write_city(city, tmp)
    ids = city.bureau.column("uscc").combine_chunks()
    graph, _ = graph_columns(paths["graph"], city.bureau, ids, IdType.USCC, DEFAULT_FLAG_COLUMNS)
    bureau = city.bureau
    for name in graph.column_names:
        bureau = bureau.append_column(name, graph.column(name))
    codes = city.bank.column("uscc").to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    joined = city.bank.take(np.sort(first)).join(bureau, "uscc", join_type="inner")
    joined = joined.sort_by("uscc")
    bank = list(BANK_COLUMNS[1:-1])
    return joined, bank, [n for n in bureau.column_names if n != "uscc"]


def _shared_step(shares: list[ShareSgd], gradient: np.ndarray, divisor: int, epoch: int) -> None:
    """Both parties' ShareSgd on two random additive shares of the batch's X_B^T 4d, as
    integers at the protocol's scale (what the bureau and the bank step in the protocol)."""
    exact = [int(v) for v in np.rint(gradient * 2.0**vlr.GRADIENT_BITS)]
    mask = [secrets.randbits(vlr.VALUE_BITS + 40) for _ in exact]
    shares[0].step(
        [g + m for g, m in zip(exact, mask, strict=True)], vlr.GRADIENT_BITS, divisor, epoch
    )
    shares[1].step([-m for m in mask], vlr.GRADIENT_BITS, divisor, epoch)


def protocol_equivalent(
    xa: np.ndarray, xb: np.ndarray, y: np.ndarray, seed: int, config: OptimizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's arithmetic in clear, with the bank's default plan: the Taylor residual
    ``4d = 2 + u_A + u_B - 4y`` (features at 2^-6, the bureau's weights at 2^-12 in u_B),
    the bank's optimiser on its own weights, ShareSgd on two shares of the bureau's, early
    stopping on the validation Taylor loss; the weights of the best epoch."""
    train, validation = split_rows(len(y), 0.2, seed)
    limits = vlr.TrainingLimits()
    batch = auto_batch_size(len(train), xa.shape[1], limits)
    batch = max(batch, 2 * xb.shape[1])  # the bureau raises it to its floor
    penalised = np.ones(xa.shape[1], dtype=bool)
    penalised[0] = False
    own = Optimizer(config, xa.shape[1], penalised)
    shares = [ShareSgd(config, xb.shape[1], vlr.SHARE_BITS) for _ in range(2)]
    unit = float(1 << vlr.EXPONENT_BITS)
    xa8, xb8 = np.rint(xa * unit) / unit, np.rint(xb * unit) / unit
    stopping = vlr.EarlyStopping(patience=default_patience(len(validation)))
    best: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def bureau_weights() -> np.ndarray:
        total = [a + b for a, b in zip(shares[0].share, shares[1].share, strict=True)]
        return np.array([v / 2.0**vlr.SHARE_BITS for v in total])

    def residual(rows: np.ndarray) -> np.ndarray:
        wb = np.floor(bureau_weights() * 2**vlr.SCORE_WEIGHT_BITS) / 2**vlr.SCORE_WEIGHT_BITS
        ua = np.clip(xa[rows] @ own.weights, -vlr.SCORE_BOUND, vlr.SCORE_BOUND)
        return 2.0 + ua + xb8[rows] @ wb - 4.0 * y[rows]

    for epoch in range(10):
        for rows in epoch_batches(train, batch, seed, epoch):
            d4 = residual(rows)
            own.step(xa8[rows].T @ d4 / (4 * len(rows)), epoch)
            _shared_step(shares, xb8[rows].T @ d4, 4 * len(rows), epoch)
        d4 = residual(validation)
        best[epoch] = (own.weights.copy(), bureau_weights())
        if stopping.observe(epoch, float(np.mean(np.log(2) - 0.5 + d4 * d4 / 8))):
            break
    return best[stopping.best_epoch]


@pytest.fixture(scope="module")
def design(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    joined, bank, bureau = _matched(tmp_path_factory.mktemp("city"))
    train, _ = split_rows(joined.num_rows, 0.2, SEED)
    fitted = joined.take(pa.array(train))
    xa = FeatureRecipe.fit(fitted, bank).transform(joined)
    return {
        "xa": np.hstack([np.ones((joined.num_rows, 1)), xa]),
        "xb": FeatureRecipe.fit(fitted, bureau).transform(joined),
        "y": joined.column("y").to_numpy().astype(np.float64),
    }


def _auc_of_sklearn(x: np.ndarray, y: np.ndarray, train: np.ndarray, held: np.ndarray) -> float:
    model = LogisticRegression(max_iter=5000).fit(x[train], y[train])
    return float(roc_auc_score(y[held], model.decision_function(x[held])))


def test_default_training_reaches_scikit_learn_on_a_city_with_graph_features(design):
    xa, xb, y = design["xa"], design["xb"], design["y"]
    assert np.abs(xb).max() > 8  # heavy-tailed graph columns, as in the demo
    train, held = split_rows(len(y), 0.2, SEED)
    wa, wb = protocol_equivalent(xa, xb, y, SEED, OptimizerConfig())
    joint = float(roc_auc_score(y[held], (xa @ wa + xb @ wb)[held]))
    reference = _auc_of_sklearn(np.hstack([xa[:, 1:], xb]), y, train, held)
    bank_only = _auc_of_sklearn(xa[:, 1:], y, train, held)
    assert joint >= reference - 0.02, (joint, reference)
    assert joint >= bank_only + 0.03, (joint, bank_only)


def _psi_order(ids: list[str]) -> list[str]:
    """The matched rows' order of one PSI session against a bureau with a fresh key."""
    scalar = group.random_scalar()
    tags = np.frombuffer(
        b"".join(psi.prepare_tags(scalar, [group.hash_ids([x.encode() for x in ids])])),
        dtype=psi.TAG_DTYPE,
    )
    order = np.argsort(tags, kind="stable")
    table = psi.BureauTagTable(1, scalar, tags[order], [ids[i] for i in order])
    bank = psi.BankPsiSession(ids, reveal=psi.Reveal.BOTH)
    bureau = psi.BureauPsiSession(table, bank.request(), psi.PsiLimits())
    bank.accept_params(bureau.params)
    for message in bank.blinded_ids():
        bank.receive_exponentiated(bureau.exponentiate(message).result())
    bureau.blinded_stream_ended()
    for chunk in bureau.tags():
        bank.receive_bureau_tags(chunk)
    return bank.intersect().matched_ids


def test_the_same_seed_holds_back_the_same_clients_in_two_sessions():
    ids = [f"E{i:05d}" for i in range(400)]
    held = []
    for _ in range(2):
        matched = _psi_order(ids)
        _, validation = split_rows(len(matched), 0.2, seed=1)
        held.append({matched[i] for i in validation})
    assert held[0] == held[1]
