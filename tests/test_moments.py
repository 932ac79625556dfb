"""A training step from cross moments (protocols/moments.py): the bureau's answer opens to
exactly the bank's share of the bureau's gradient, the bank's own gradient and the loss's
sum of squares; what the bank decrypts besides is masked; the codecs round-trip; the route
is taken where it pays."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from protocols import moments
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import ProtocolViolation, WrongStage
from protocols.optim import OptimizerConfig

# A uniformity check on fresh masks (drawn from secrets) fails by chance at its threshold's
# rate; 1e-6 keeps the suite's false alarms negligible, and a mask that depends on the
# labels or leaves the value readable moves these statistics far below it.
FALSE_ALARM = 1e-6


LIMITS = vlr.TrainingLimits(allow_test_keys=True, min_batch_size=32)


@pytest.fixture(scope="module")
def keys():
    return he.generate_keypair(768, True)


@given(st.lists(st.integers(-(2**200), 2**200), min_size=1, max_size=8))
def test_balanced_digits_give_back_the_value(values):
    bits = moments.share_bits_for(values)
    count = moments.Layouts.of(2048, 4, 4, bits).limbs
    digits = moments.balanced_digits(values, count)
    assert np.all(digits >= -(2**23)) and np.all(digits < 2**23)
    for value, row in zip(values, digits.tolist(), strict=True):
        assert sum(d << (24 * i) for i, d in enumerate(row)) == value


@settings(max_examples=30)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 2**32))
def test_packed_rows_hold_each_value_in_its_slot(bank_columns, bureau_columns, seed):
    rng = np.random.default_rng(seed)
    layout = moments.row_layout(bureau_columns, 2048)
    x8 = rng.integers(-1024, 1025, size=(5, bank_columns))
    y = rng.integers(0, 2, size=5)
    for packed, row, label in zip(moments.packed_rows(x8, y, layout), x8, y, strict=True):
        s = layout.slot_bits
        # read back as signed slots (the bureau's sums are read the same way, offset added)
        values = []
        for _ in range(bank_columns + 1):
            low = packed & ((1 << s) - 1)
            low = low - (1 << s) if low >= 1 << (s - 1) else low
            values.append(low)
            packed = (packed - low) >> s
        assert packed == 0
        assert values == [-128 if label else 128, *row.tolist()]


def test_power_products_match_plaintext_arithmetic(keys):
    pub, priv = keys
    plain = [secrets.randbelow(1 << 30) - (1 << 29) for _ in range(9)]
    bases = he.OwnerEncryptor(priv).encrypt(plain)
    exponents = [[secrets.randbits(180) - (1 << 179) for _ in range(4)] for _ in plain]
    out = he.power_products(bases, exponents, pub)
    for j, c in enumerate(out):
        expected = sum(p * row[j] for p, row in zip(plain, exponents, strict=True))
        assert he.from_residue(he.decrypt(priv, c), pub.n) == expected


def _step(keys, rows=256, ka=5, kb=6, s2_bits=90, training=True, seed=0):
    """One step with the real functions of both sides, and what it should open to."""
    pub, priv = keys
    rng = np.random.default_rng(seed)
    encryptor = he.OwnerEncryptor(priv)
    xa8 = np.hstack([np.full((rows, 1), 64), rng.integers(-1024, 1025, size=(rows, ka - 1))])
    xb8 = rng.integers(-1024, 1025, size=(rows, kb))
    y = rng.integers(0, 2, size=rows)
    layout = moments.row_layout(kb, pub.n.bit_length())
    packed = encryptor.encrypt(moments.packed_rows(xa8, y, layout))
    counts = he.OpCounts()
    batch, sent = moments.batch_moments(packed, xb8, ka, layout, pub, None, counts, None)
    w_a = [int(v) for v in rng.integers(-(2**21), 2**21, size=ka)]
    w_b = [int(v) for v in rng.integers(-(2**21), 2**21, size=kb)]
    s2 = [secrets.randbits(s2_bits) - (1 << (s2_bits - 1)) for _ in range(kb)]
    s1 = [b - t for b, t in zip(w_b, s2, strict=True)]
    answer = moments.step_answer(
        batch, encryptor.encrypt(s1), encryptor.encrypt(w_a), s2, training, pub, None, counts, None
    )
    lay = moments.Layouts.of(pub.n.bit_length(), ka, kb, answer.share_bits)
    cross = [he.unpack_slots([he.decrypt(priv, c)], lay.rows, ka + 1, False) for c in sent]
    received = [*answer.gradient, *answer.gram, *answer.limbs, *answer.cross, answer.loss_term]
    plain = [he.decrypt(priv, c) for c in received]
    a = [1 << 12, *w_a]
    opened = moments.open_step(plain, cross, s1, a, lay, kb, training, pub.n)
    # the truth, in Python integers
    y8 = np.where(y > 0, -128, 128)
    own = [int(v) for v in (np.column_stack([y8, xa8]) @ np.array(a, dtype=object)).tolist()]
    u_b = [int(v) for v in (xb8 @ np.array(w_b, dtype=object)).tolist()]
    d4 = [o + u for o, u in zip(own, u_b, strict=True)]
    truth = {
        "bureau_gradient": [int(v) for v in (xb8.T @ np.array(d4, dtype=object)).tolist()],
        "bank_cross": [int(v) for v in (xa8.T @ np.array(u_b, dtype=object)).tolist()],
        "interaction": sum(t * t for t in d4) - sum(o * o for o in own),
        "c": (xb8.T @ np.column_stack([y8, xa8])).tolist(),
    }
    return answer, opened, cross, truth, lay


@pytest.mark.parametrize(
    ("training", "ka", "kb"), [(True, 5, 6), (False, 5, 6), (True, 6, 43), (True, 1, 2)]
)
def test_a_step_opens_to_exactly_the_shares_the_gradient_and_the_loss(keys, training, ka, kb):
    answer, opened, cross, truth, _ = _step(keys, ka=ka, kb=kb, training=training)
    # the bank's share of X_B^T 4d plus the bureau's (-q) is the gradient, exactly
    assert [s - q for s, q in zip(opened.gradient_share, answer.masks, strict=True)] == truth[
        "bureau_gradient"
    ]
    assert opened.interaction == truth["interaction"]
    assert opened.cross_gradient == (truth["bank_cross"] if training else [])


def test_what_the_bank_decrypts_besides_its_outputs_is_masked(keys):
    """M = C + R with R uniform over 74 bits: the bank reads the bureau's cross moments
    under a fresh mask, never C itself; the masks' top bits are uniform."""
    spread = []
    for seed in range(6):
        _, _, cross, truth, _ = _step(keys, seed=seed)
        for held, exact in zip(cross, truth["c"], strict=True):
            for m, c in zip(held, exact, strict=True):
                r = m - c
                assert 0 <= r < 1 << moments.CROSS_MASK_BITS
                spread.append(r / float(1 << moments.CROSS_MASK_BITS))
    assert len(spread) == 6 * 6 * 6
    assert stats.kstest(spread, "uniform").pvalue > FALSE_ALARM


def _narrow_pair(keys, seed):
    """A bank (3 columns and the intercept) and a bureau (4 columns) on 400 rows in batches
    of 128: a plan that takes the route from cross moments on its own."""
    rng = np.random.default_rng(seed)
    xa = np.hstack([np.ones((400, 1)), rng.normal(size=(400, 3))])
    xb = rng.normal(size=(400, 4))
    y = (rng.random(400) < 0.4).astype(np.int64)
    pub, priv = keys
    plan = vlr.TrainingPlan(
        f"job{seed}", "s" * 32, 400, 4, 0.0, 1, 128, 2, OptimizerConfig(), (), pub,
        bank_key_proof=he.prove_key(priv),
    )  # fmt: skip
    bureau = vlr.BureauTrainer(plan, xb, he.generate_keypair(768, True)[1], LIMITS)
    bank = vlr.BankTrainer(plan, xa, y, priv, LIMITS)
    bank.accept(bureau.accepted())
    return plan, bank, bureau


def test_a_share_bound_that_does_not_cover_the_share_is_refused(keys):
    """A bureau stating a bound too small for an honest share would have the bank cut its
    values; the bank refuses before reading anything, and refuses an absurd bound."""
    plan, bank, bureau = _narrow_pair(keys, 0)
    assert bank.by_moments and bureau.by_moments
    shares = bureau.step(bank.residuals(vlr.Step(plan.job_id, 0, 0), bank.batches(0)[0]))
    bank.update_from_moments(shares, 0)
    shares = bureau.step(bank.residuals(vlr.Step(plan.job_id, 0, 1), bank.batches(0)[1]))
    largest = max(abs(s) for s in bank._moment_step[3])
    assert largest.bit_length() > 40  # the share carries the bureau's masks
    for bits, match in ((largest.bit_length() - 1, "does not cover"), (10_000, "share bound")):
        with pytest.raises(ProtocolViolation, match=match):
            bank.update_from_moments(vlr.StepShares(**{**vars(shares), "share_bits": bits}), 0)


def test_the_bureau_refuses_a_step_without_the_batchs_rows_and_decrypts_nothing(keys):
    plan, bank, bureau = _narrow_pair(keys, 2)
    step = vlr.Step(plan.job_id, 0, 0)
    request = bank.residuals(step, bank.batches(0)[0])
    shares = bureau.step(request)
    assert bureau.step(request) is shares  # a retry: the recorded answer
    with pytest.raises(WrongStage):  # nothing to decrypt on this route
        bureau.decrypt(vlr.MaskedValues(step, 4, b""))
    bank.update_from_moments(shares, 0)
    # the next batch without its rows: the bureau holds no moments of it
    request = bank.residuals(vlr.Step(plan.job_id, 0, 1), bank.batches(0)[1])
    with pytest.raises(ProtocolViolation, match="without its rows"):
        bureau.step(vlr.EncryptedResiduals(**{**vars(request), "residuals": b""}))
    assert bureau.stage is vlr.BureauStage.FAILED
    assert bureau.counts.decryptions == 0


def test_the_route_is_taken_where_it_pays():
    # default_credit: 13 bank columns and the intercept, 10 bureau columns, 1,024 rows
    assert moments.pays(14, 10, 1024, 2048)
    # a bureau of 43 columns against 7 bank columns at 1,024 rows: 0.49 s a step against
    # about 3.5 per row (BENCHMARKS.md)
    assert moments.pays(7, 43, 1024, 2048)
    # the FATE shape: 300 bureau columns stay per row
    assert not moments.pays(32, 300, 1024, 2048)
    assert not moments.pays(18, 300, 1024, 2048)
    # a row must fit one plaintext
    assert not moments.pays(40, 10, 4096, 2048)
    # small batches: per row (the step's fixed cost would not pay)
    assert not moments.pays(14, 10, 120, 2048)


def test_the_bureau_takes_a_batchs_rows_once_per_run(keys):
    """Rows again for a batch whose moments the bureau holds would be a fresh masking of
    the same moments and a pass over the rows: refused, and the job ends."""
    plan, bank, bureau = _narrow_pair(keys, 3)
    batches = bank.batches(0)
    for number, rows in enumerate(batches):
        step = vlr.Step(plan.job_id, 0, number)
        bank.update_from_moments(bureau.step(bank.residuals(step, rows)), 0)
    step, rows = vlr.Step(plan.job_id, 1, 0), bank.batches(1)[0]
    request = bank.residuals(step, rows)
    assert not request.residuals  # the bank holds M: no rows in a later epoch
    packed = bank.encryptor.encrypt(bank._packed_rows(rows))
    again = vlr.EncryptedResiduals(
        **{**vars(request), "residuals": he.ciphertexts_to_bytes(packed, plan.bank_public_key)}
    )
    with pytest.raises(ProtocolViolation, match="came again"):
        bureau.step(again)
    assert bureau.stage is vlr.BureauStage.FAILED
