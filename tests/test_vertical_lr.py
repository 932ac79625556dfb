"""The training protocol with both parties in one process, no transport: it computes what
plaintext Taylor-loss training computes, each side's trace holds nothing of the other's
data, and the bureau refuses steps out of order, repeated decryptions and small batches."""

from __future__ import annotations

import json
import struct
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_runtime.transport import model_codec as codec
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import PolicyViolation, ProtocolViolation, WrongStage
from protocols.features import VALUE_BOUND, FeatureRecipe
from protocols.moments import row_layout
from protocols.optim import Optimizer, OptimizerConfig, epoch_batches, fixed_batches, split_rows

LIMITS = vlr.TrainingLimits(allow_test_keys=True, min_batch_size=32)
SGD = OptimizerConfig(name="sgd", learning_rate=0.1)


def _done(value):
    future = Future()
    future.set_result(value)
    return future


class RecordingPeer:
    """The bureau in-process; every message crossing is kept as its protobuf bytes."""

    def __init__(self, bureau: vlr.BureauTrainer) -> None:
        self.bureau = bureau
        self.to_bureau: list[bytes] = []
        self.to_bank: list[bytes] = []
        self.width = he.ciphertext_bytes(bureau.private_key.public_key)

    def step(self, msg):
        self.to_bureau.append(codec.residuals_to_proto(msg).SerializeToString())
        out = self.bureau.step(msg)
        self.to_bank += [c.SerializeToString() for c in codec.shares_to_proto(out, self.width)]
        return _done(out)

    def decrypt(self, msg):
        self.to_bureau.append(codec.masked_to_proto(msg).SerializeToString())
        out = self.bureau.decrypt(msg)
        self.to_bank.append(codec.decrypted_to_proto(out).SerializeToString())
        return _done(out)


def _data(rows=400, seed=0):
    rng = np.random.default_rng(seed)
    xa = rng.normal(size=(rows, 3))
    xb = rng.normal(size=(rows, 4))
    z = xa @ [0.8, -0.5, 0.3] + xb @ [1.0, 0.0, -0.7, 0.4] - 0.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return np.hstack([np.ones((rows, 1)), xa]), xb, y


@pytest.fixture(scope="module")
def bank_keys():
    return he.generate_keypair(768, allow_test_keys=True)


@pytest.fixture(scope="module")
def bureau_keys():
    return he.generate_keypair(768, allow_test_keys=True)


def _pair(bank_keys, bureau_keys, xa, xb, y, moments=False, **plan_changes):
    """A bank and a bureau on one plan; ``moments`` chooses the route (these shapes take the
    route from cross moments on their own: a test chooses to check each)."""
    encryptor = he.OwnerEncryptor(bank_keys[1])
    plan = vlr.TrainingPlan(
        "a" * 32,
        "s" * 32,
        len(y),
        xa.shape[1],
        0.2,
        11,
        64,
        4,
        SGD,
        (),
        bank_keys[0],
        bank_key_proof=he.prove_key(bank_keys[1]),
    )
    plan = replace(plan, **plan_changes)
    bureau = vlr.BureauTrainer(plan, xb, bureau_keys[1], LIMITS)
    bank = vlr.BankTrainer(plan, xa, y, bank_keys[1], LIMITS, encryptor=encryptor)
    bank.accept(bureau.accepted())
    # the route is the test's choice; the rows must fit a plaintext for it
    assert not moments or 1 + xa.shape[1] <= row_layout(xb.shape[1], 766).slots_per_plaintext
    bureau.by_moments = bank.by_moments = moments
    bureau._batches = plan.batches(bureau.train_rows, 0, moments)
    return plan, bank, bureau


ROUTES = pytest.mark.parametrize("moments", [False, True], ids=["by_rows", "from_moments"])


def _weights(share_sum):
    return np.array([v / 2.0**vlr.SHARE_BITS for v in share_sum])


def _plaintext_reference(plan, xa, xb, y, moments=False):
    """The same schedule and optimisers over plaintext, with the protocol's fixed point
    (8-bit features in the products, the bureau's weights at 2^-12 in u_B): what the
    protocol must compute. The bureau's weights follow momentum SGD with L2. From cross
    moments the batches stay together and the bank's scores come from its fixed point too
    (its weights at 2^-12, unclipped)."""
    train, validation = split_rows(plan.rows, plan.validation_fraction, plan.seed)
    penalised = np.ones(xa.shape[1], dtype=bool)
    penalised[0] = False
    oa = Optimizer(plan.optimizer, xa.shape[1], penalised)
    c = plan.optimizer
    wb, mb = np.zeros(xb.shape[1]), np.zeros(xb.shape[1])
    unit = 2.0**vlr.EXPONENT_BITS
    xa8, xb8 = np.rint(xa * unit) / unit, np.rint(xb * unit) / unit

    def d4_of(rows):
        if moments:
            ua = xa8[rows] @ (np.rint(oa.weights * 2**vlr.SCORE_WEIGHT_BITS) / 2**12)
        else:
            ua = np.clip(xa[rows] @ oa.weights, -vlr.SCORE_BOUND, vlr.SCORE_BOUND)
        ub = xb8[rows] @ (np.floor(wb * 2**vlr.SCORE_WEIGHT_BITS) / 2**vlr.SCORE_WEIGHT_BITS)
        return 2 + ua + ub - 4 * y[rows]

    history = []
    for epoch in range(plan.max_epochs):
        schedule = fixed_batches if moments else epoch_batches
        for rows in schedule(train, plan.batch_size, plan.seed, epoch):
            d4 = d4_of(rows)
            oa.step(xa8[rows].T @ d4 / (4 * len(rows)), epoch)
            alpha = c.alpha if c.penalty == "l2" else 0.0  # L1 is for the bank's own only
            mb = c.momentum * mb + xb8[rows].T @ d4 / (4 * len(rows)) + alpha * wb
            wb = wb - c.learning_rate / (1 + c.decay * epoch) * mb
        d4 = d4_of(validation)
        history.append(float(np.mean(np.log(2) - 0.5 + d4 * d4 / 8)))
    return oa.weights, wb, history


@ROUTES
def test_encrypted_training_computes_the_plaintext_updates(bank_keys, bureau_keys, moments):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, moments)
    bank.early_stopping = vlr.EarlyStopping(patience=99)
    result = vlr.drive_training(bank, RecordingPeer(bureau))
    wa, wb, losses = _plaintext_reference(plan, xa, xb, y, moments)
    last = plan.max_epochs - 1
    assert len(result.history) == plan.max_epochs
    np.testing.assert_allclose(bank.snapshots[last], wa, atol=5e-4)
    np.testing.assert_allclose([r.validation_loss for r in result.history], losses, atol=1e-4)
    weights, _ = bureau.finish(last, bank.share_snapshots[last])
    np.testing.assert_allclose(weights, wb, atol=5e-4)  # shares rounded to 2^-12 in u_B
    # the joint model learned the planted signal
    assert np.corrcoef(xb @ weights, xb @ [1, 0, -0.7, 0.4])[0, 1] > 0.9
    assert bank.counts.encryptions > 0
    # from moments the bureau decrypts nothing: its view is ciphertexts under the bank's key
    assert (bureau.counts.decryptions == 0) is moments


@pytest.mark.parametrize(
    ("validation", "columns"), [(False, 0), (True, 0), (False, 100), (True, 100)]
)
def test_both_routes_give_the_bank_the_same_plaintexts(bank_keys, bureau_keys, validation, columns):
    """A ciphertext per row (wide bureaus) and shifted copies of [[s1]] with the Gram matrix
    (narrow ones): with the same masks the bank decrypts the same integers. Also with 100
    bureau columns of features up to their bound (|x| <= 16) and batches of 1,024: about the
    widest a bureau takes the copies at with these keys (100 x 10 slots)."""
    xa, xb, y = _data()
    rng = np.random.default_rng(8)
    changes = {}
    if columns:
        xa, _, y = _data(2400)
        xb = rng.choice([-16.0, 16.0], size=(2400, columns)) * rng.random((2400, columns))
        changes = {"rows": 2400, "batch_size": 1024}
        assert he.copies_pay(1024, columns, 10)
    bound = 2**33 if columns else 2**41  # |w_B| below 1/128 or 2: |u_B| within its 2^10
    s1 = [int(v) for v in rng.integers(-bound, bound, size=xb.shape[1])]
    s2 = [int(v) for v in rng.integers(-bound, bound, size=xb.shape[1])]
    opened = []
    for by_copies in (False, True):
        draws = np.random.default_rng(9)  # the same masks for both routes (a test only)
        plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, **changes)
        bank.shares.share, bureau.shares.share = list(s1), list(s2)
        bureau.by_copies = by_copies
        step, rows = vlr.Step(plan.job_id, 0, 0), bank.batches(0)[0]
        if validation:
            bureau._batch = vlr.VALIDATION
            step, rows = vlr.Step(plan.job_id, 0, vlr.VALIDATION), bank.validation[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                he,
                "draw_masks",
                lambda layout, count, draws=draws: [
                    int.from_bytes(draws.bytes(16), "big") % (1 << layout.mask_bits)
                    for _ in range(count)
                ],
            )
            shares = bureau.step(bank.residuals(step, rows))
        bank.open_shares(shares)
        opened.append((bank._opened, bureau.shares.share))
    assert opened[0] == opened[1]
    assert any(opened[0][0].v)
    assert len(opened[0][0].gradient) == (0 if validation else xb.shape[1])


@ROUTES
def test_adam_for_the_bank_momentum_for_the_shares(bank_keys, bureau_keys, moments):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(
        bank_keys, bureau_keys, xa, xb, y, moments, optimizer=OptimizerConfig()
    )
    bank.early_stopping = vlr.EarlyStopping(patience=99)
    result = vlr.drive_training(bank, RecordingPeer(bureau))
    wa, wb, losses = _plaintext_reference(plan, xa, xb, y, moments)
    np.testing.assert_allclose(bank.snapshots[plan.max_epochs - 1], wa, atol=5e-4)
    np.testing.assert_allclose([r.validation_loss for r in result.history], losses, atol=1e-4)


@ROUTES
def test_l1_penalises_the_banks_own_weights_only(bank_keys, bureau_keys, moments):
    xa, xb, y = _data()
    config = replace(SGD, penalty="l1", alpha=0.01)
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, moments, optimizer=config)
    bank.early_stopping = vlr.EarlyStopping(patience=99)
    vlr.drive_training(bank, RecordingPeer(bureau))
    wa, wb, _ = _plaintext_reference(replace(plan, optimizer=config), xa, xb, y, moments)
    last = plan.max_epochs - 1
    np.testing.assert_allclose(bank.snapshots[last], wa, atol=5e-4)
    weights, _ = bureau.finish(last, bank.share_snapshots[last])
    np.testing.assert_allclose(weights, wb, atol=5e-4)


def test_exact_products_match_python_integers():
    rng = np.random.default_rng(1)
    matrix = rng.integers(-4096, 4097, size=(7, 50))
    values = [int(v) for v in rng.integers(-(2**62), 2**62, size=50)]
    values[3] = -(2**130) + 17
    values[9] = 2**95
    expected = [sum(int(a) * b for a, b in zip(row, values)) for row in matrix]
    assert vlr.exact_products(matrix, values) == expected


def _float_patterns(values):
    out = set()
    for v in np.ravel(values):
        if abs(v) < 1e-6 or float(v).is_integer():
            continue  # 0.0 and whole numbers are no evidence either way
        out.add(struct.pack("<d", v))
        out.add(struct.pack(">d", v))
        for bits in (vlr.EXPONENT_BITS, vlr.SCALE_BITS):
            fixed = int(round(v * 2**bits))
            out.add(fixed.to_bytes(8, "big", signed=True))
            out.add(fixed.to_bytes(8, "little", signed=True))
    # a pattern of mostly 0x00 or 0xff bytes (a small integer) would match by chance
    return {p for p in out if p.count(0) <= 3 and p.count(0xFF) <= 3}


@ROUTES
def test_traces_hold_no_plaintext_of_the_other_party(bank_keys, bureau_keys, moments):
    xa, xb, y = _data(rows=300, seed=3)
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, moments, max_epochs=2)
    peer = RecordingPeer(bureau)
    vlr.drive_training(bank, peer)
    seen_by_bureau = b"".join(peer.to_bureau)
    seen_by_bank = b"".join(peer.to_bank)
    assert len(seen_by_bureau) > 10_000 and len(seen_by_bank) > 10_000
    # the bureau's trace: no bank feature value, no label sequence
    for pattern in _float_patterns(xa[:, 1:]):
        assert pattern not in seen_by_bureau
    for encoding in (np.int8, np.int64, np.float64):
        for start in range(0, len(y) - 64, 64):
            assert y[start : start + 64].astype(encoding).tobytes() not in seen_by_bureau
    assert np.packbits(y).tobytes()[:16] not in seen_by_bureau
    # the bank's trace: no bureau feature value, no bureau weight of any epoch
    for pattern in _float_patterns(xb):
        assert pattern not in seen_by_bank
    for epoch, share in bureau.snapshots.items():
        weights = _weights([a + b for a, b in zip(bank.share_snapshots[epoch], share)])
        for pattern in _float_patterns(weights):
            assert pattern not in seen_by_bank


def _first_step(plan, bank, bureau):
    step = vlr.Step(plan.job_id, 0, 0)
    request = bank.residuals(step, bank.batches(0)[0])
    return step, request, bureau.step(request)


def test_the_bureau_decrypts_once_per_step_and_in_order(bank_keys, bureau_keys):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y)
    wrong = bank.residuals(vlr.Step(plan.job_id, 0, 1), bank.batches(0)[1])
    with pytest.raises(WrongStage):
        bureau.step(wrong)  # not the next step
    step, request, shares = _first_step(plan, bank, bureau)
    share_before = list(bureau.shares.share)
    assert bureau.step(request) is shares  # a retried request: the recorded answer ...
    assert bureau.shares.share == share_before  # ... and the shares stepped once
    masked = bank.masked_gradient(shares)
    decrypted = bureau.decrypt(masked)
    assert bureau.decrypt(masked) is decrypted  # the same request: answered, not redone
    before = bureau.counts.decryptions
    other = replace(masked, ciphertexts=bank.masked_gradient(shares).ciphertexts)
    with pytest.raises(WrongStage, match="decryption"):
        bureau.decrypt(other)  # a second decryption oracle call in one step
    assert bureau.counts.decryptions == before
    stepped = list(bureau.shares.share)
    assert bureau.step(request) is shares  # late retry: the record, never fresh masks
    assert bureau.shares.share == stepped
    assert bureau.stage is vlr.BureauStage.READY  # refusals and replays change nothing


def test_a_malformed_message_ends_the_job(bank_keys, bureau_keys):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y)
    _, _, shares = _first_step(plan, bank, bureau)
    masked = bank.masked_gradient(shares)
    with pytest.raises(ProtocolViolation, match="expected 4 values"):
        bureau.decrypt(replace(masked, count=3))
    assert bureau.stage is vlr.BureauStage.FAILED
    with pytest.raises(WrongStage, match="has failed"):
        bureau.decrypt(masked)  # no second try: a rejected message could be a probe
    with pytest.raises(WrongStage, match="has failed"):
        bureau.finish(0, [0] * 4)


def test_the_bureau_stops_after_the_planned_epochs(bank_keys, bureau_keys):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, max_epochs=1)
    bank.early_stopping = vlr.EarlyStopping(patience=99)
    vlr.drive_training(bank, RecordingPeer(bureau))
    step = vlr.Step(plan.job_id, 1, 0)
    with pytest.raises(WrongStage, match="all its 1 epochs"):
        bureau.step(bank.residuals(step, bank.batches(1)[0]))


def test_a_corrupt_final_share_is_refused(bank_keys, bureau_keys):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, max_epochs=1)
    result = vlr.drive_training(bank, RecordingPeer(bureau))
    with pytest.raises(ProtocolViolation, match="range"):
        bureau.finish(0, [v + (1 << 60) for v in result.bureau_share])
    assert bureau.stage is vlr.BureauStage.FAILED


@pytest.mark.parametrize(
    "residuals",
    [
        lambda width, rows: b"\x00" * width * rows,  # zero is no ciphertext
        lambda width, rows: b"\x01" * width * (rows - 1),  # one short
        lambda width, rows: b"\xff" * width * rows,  # not below n^2
    ],
)
def test_garbage_ciphertexts_are_refused(bank_keys, bureau_keys, residuals):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y)
    step = vlr.Step(plan.job_id, 0, 0)
    request = bank.residuals(step, bank.batches(0)[0])
    rows = len(bank.batches(0)[0])
    width = he.ciphertext_bytes(bank_keys[0])
    with pytest.raises(ProtocolViolation):
        bureau.step(replace(request, residuals=residuals(width, rows)))
    assert bureau.stage is vlr.BureauStage.FAILED


def test_plans_below_the_floor_are_refused(bank_keys, bureau_keys):
    xa, xb, y = _data()
    with pytest.raises(PolicyViolation, match="batch size"):
        _pair(bank_keys, bureau_keys, xa, xb, y, batch_size=8)
    with pytest.raises(PolicyViolation, match="fewer than one batch"):
        _pair(bank_keys, bureau_keys, xa, xb, y, batch_size=4000)
    with pytest.raises(PolicyViolation, match="validation"):
        _pair(
            bank_keys, bureau_keys, xa[:120], xb[:120], y[:120], rows=120, validation_fraction=0.1
        )
    strict = vlr.TrainingLimits()
    plan = vlr.TrainingPlan(
        "a" * 32,
        "s",
        len(y),
        xa.shape[1],
        0.2,
        1,
        64,
        2,
        OptimizerConfig(),
        (),
        bank_keys[0],
        bank_key_proof=he.prove_key(bank_keys[1]),
    )
    with pytest.raises(ProtocolViolation, match="--allow-test-keys"):
        vlr.BureauTrainer(plan, xb, bureau_keys[1], strict)


def test_without_validation_split_early_stopping_watches_training_loss(bank_keys, bureau_keys):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(
        bank_keys, bureau_keys, xa, xb, y, validation_fraction=0.0, max_epochs=3
    )
    result = vlr.drive_training(bank, RecordingPeer(bureau))
    assert all(r.validation_loss is None for r in result.history)
    assert result.history[-1].train_loss < result.history[0].train_loss
    weights, finished = bureau.finish(result.best_epoch, result.bureau_share)
    assert finished.epoch == result.best_epoch and weights.shape == (4,)


def test_early_stopping_keeps_the_best_epoch():
    stopper = vlr.EarlyStopping(patience=2, tolerance=0.0)
    assert not stopper.observe(0, 1.0)
    assert not stopper.observe(1, 0.5)
    assert not stopper.observe(2, 0.6)
    assert stopper.observe(3, 0.7)
    assert stopper.best_epoch == 1


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(50, 3000),
    fraction=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    batch=st.integers(16, 512),
    seed=st.integers(0, 2**32 - 1),
)
def test_schedule_covers_the_training_rows_once_per_epoch(rows, fraction, batch, seed):
    train, validation = split_rows(rows, fraction, seed)
    assert len(np.intersect1d(train, validation)) == 0
    assert len(train) + len(validation) == rows
    batches = epoch_batches(train, batch, seed, 3)
    assert np.array_equal(np.sort(np.concatenate(batches)), train)
    if len(train) >= batch:
        assert min(len(b) for b in batches) >= batch


def test_sgd_and_adam_and_penalties_descend_a_quadratic():
    for name in ("adam", "sgd"):
        for penalty in ("l2", "l1", "none"):
            opt = Optimizer(
                OptimizerConfig(name=name, learning_rate=0.05, penalty=penalty, decay=0.0), 2
            )
            for _ in range(500):
                opt.step(opt.weights - np.array([1.0, -2.0]), 0)
            np.testing.assert_allclose(opt.weights, [1.0, -2.0], atol=0.05)
    with pytest.raises(PolicyViolation, match="optimizer"):
        OptimizerConfig(name="lbfgs").check()
    with pytest.raises(PolicyViolation, match="learning_rate"):
        OptimizerConfig(learning_rate=float("nan")).check()


# -- feature preprocessing ---------------------------------------------------------------


def test_recipe_clips_fills_flags_and_handles_unseen_categories():
    train = pa.table(
        {
            "amount": pa.array([1.0, 2.0, None, 4.0, 1e9] * 40),
            "industry": pa.array(["retail", "tech", None, "retail", "farm"] * 40),
        }
    )
    recipe = FeatureRecipe.fit(train, ["amount", "industry"])
    assert recipe.outputs == [
        "amount",
        "amount[missing]",
        "industry=__missing__",
        "industry=farm",
        "industry=retail",
        "industry=tech",
        "industry=__other__",
    ]
    x = recipe.transform(train)
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= VALUE_BOUND)
    np.testing.assert_allclose(x[:, :2].mean(axis=0), 0, atol=1e-9)
    scoring = pa.table({"amount": pa.array([None, 3.0]), "industry": pa.array(["mining", "tech"])})
    out = recipe.transform(scoring)
    assert out.shape == (2, 7)
    other = recipe.outputs.index("industry=__other__")
    assert out[0, other] > out[1, other]  # unseen -> other, not an error
    again = FeatureRecipe.from_json(recipe.to_json())
    np.testing.assert_array_equal(again.transform(scoring), out)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(-1e100, 1e100, allow_nan=False)), min_size=2, max_size=60
    )
)
def test_recipe_outputs_are_always_bounded(values):
    table = pa.table({"v": pa.array(values, pa.float64())})
    if all(v is None for v in values):
        with pytest.raises(Exception, match="no values"):
            FeatureRecipe.fit(table, ["v"])
        return
    x = FeatureRecipe.fit(table, ["v"]).transform(table)
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= VALUE_BOUND)


@ROUTES
def test_resuming_from_a_checkpoint_ends_with_the_same_model(bank_keys, bureau_keys, moments):
    xa, xb, y = _data()
    plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, moments, max_epochs=3)
    bank.early_stopping = vlr.EarlyStopping(patience=99)
    whole = vlr.drive_training(bank, RecordingPeer(bureau))
    # again, stopped after the first epoch, both sides restarted from their checkpoints
    plan2, bank2, bureau2 = _pair(bank_keys, bureau_keys, xa, xb, y, moments, max_epochs=3)
    bank2.early_stopping = vlr.EarlyStopping(patience=99)
    saved: dict = {}

    def stop_after_first(record):
        saved["bank"] = json.loads(json.dumps(bank2.checkpoint(history[:] + [record])))
        raise KeyboardInterrupt

    history: list = []
    with pytest.raises(KeyboardInterrupt):
        vlr.drive_training(bank2, RecordingPeer(bureau2), on_epoch=stop_after_first)
    bureau_saved = json.loads(json.dumps(bureau2.checkpoints))  # what the bureau wrote
    _, bank3, bureau3 = _pair(bank_keys, bureau_keys, xa, xb, y, moments, max_epochs=3)
    bureau3.checkpoints = {int(e): s for e, s in bureau_saved.items()}
    bureau3.restore(1)
    bank3.early_stopping = vlr.EarlyStopping(patience=99)
    restored_history = bank3.restore(saved["bank"])
    resumed = vlr.drive_training(
        bank3, RecordingPeer(bureau3), start_epoch=1, history=restored_history
    )
    # equal up to the fixed point: each run splits the bureau's weights with fresh masks,
    # and each side rounds its own share to 2^-12 before computing u_B
    np.testing.assert_allclose(resumed.weights, whole.weights, rtol=0, atol=5e-4)
    final, _ = bureau3.finish(2, resumed.bureau_share)
    expected, _ = bureau.finish(2, whole.bureau_share)
    np.testing.assert_allclose(final, expected, rtol=0, atol=5e-4)
    assert [r.epoch for r in resumed.history] == [0, 1, 2]


def test_a_job_resumed_after_its_last_epoch_keeps_the_epoch_it_would_have(bank_keys, bureau_keys):
    """A review: a one-epoch job whose finish was refused a moment was resumed from the
    checkpoint of its last epoch, and failed with KeyError -1: the checkpoint was written
    before the epoch's loss was observed, so no epoch was best (and a longer job's resume
    had lost its last epoch's observation). The epoch is observed before it is saved."""
    xa, xb, y = _data()
    _, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, False, max_epochs=1)
    saved: dict = {}

    def save(record):
        saved["bank"] = json.loads(json.dumps(bank.checkpoint([record])))

    whole = vlr.drive_training(bank, RecordingPeer(bureau), on_epoch=save)
    _, again, bureau2 = _pair(bank_keys, bureau_keys, xa, xb, y, False, max_epochs=1)
    history = again.restore(saved["bank"])
    resumed = vlr.drive_training(again, RecordingPeer(bureau2), start_epoch=1, history=history)
    assert resumed.best_epoch == whole.best_epoch == 0
    np.testing.assert_array_equal(resumed.weights, whole.weights)


@ROUTES
def test_with_worker_processes_the_same_model(bank_keys, bureau_keys, moments):
    """Chunks over process pools on both sides, the bureau's randomness drawn ahead."""
    from concurrent.futures import ProcessPoolExecutor

    xa, xb, y = _data()
    with ProcessPoolExecutor(2) as bank_pool, ProcessPoolExecutor(2) as bureau_pool:
        plan, bank, bureau = _pair(bank_keys, bureau_keys, xa, xb, y, moments, max_epochs=2)
        bank.executor, bureau.executor = bank_pool, bureau_pool
        bureau.noise.executor = bureau_pool
        bureau._prepare(vlr.Step(plan.job_id, 0, 0))
        bank.early_stopping = vlr.EarlyStopping(patience=99)
        result = vlr.drive_training(bank, RecordingPeer(bureau))
    wa, wb, losses = _plaintext_reference(plan, xa, xb, y, moments)
    np.testing.assert_allclose(bank.snapshots[1], wa, atol=5e-4)
    np.testing.assert_allclose([r.validation_loss for r in result.history], losses, atol=1e-4)
    weights, _ = bureau.finish(1, bank.share_snapshots[1])
    np.testing.assert_allclose(weights, wb, atol=5e-4)
