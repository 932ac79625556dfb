"""Both PSI parties in one process, no transport: results, stages and bad messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import group, psi
from protocols.errors import (
    InvalidGroupElement,
    PolicyViolation,
    ProtocolViolation,
    WrongStage,
)


def make_table(ids: list[str], scalar: bytes | None = None) -> psi.BureauTagTable:
    scalar = scalar or group.random_scalar()
    chunks = [group.hash_ids([x.encode() for x in ids[i : i + 7]]) for i in range(0, len(ids), 7)]
    tags = np.frombuffer(b"".join(psi.prepare_tags(scalar, chunks)), dtype=psi.TAG_DTYPE)
    order = np.argsort(tags, kind="stable")
    return psi.BureauTagTable(1, scalar, tags[order], [ids[i] for i in order])


def run_session(
    bank_ids: list[str],
    table: psi.BureauTagTable,
    reveal: psi.Reveal = psi.Reveal.BOTH,
    chunk: int = 5,
    tag_chunk: int = 6,
    limits: psi.PsiLimits = psi.PsiLimits(),
) -> tuple[psi.BankPsiResult, psi.BureauPsiSession]:
    bank = psi.BankPsiSession(bank_ids, reveal=reveal, chunk=chunk)
    bureau = psi.BureauPsiSession(table, bank.request(), limits)
    bank.accept_params(bureau.params)
    for message in bank.blinded_ids():
        bank.receive_exponentiated(bureau.exponentiate(message).result())
    bureau.blinded_stream_ended()
    for tags in bureau.tags(tag_chunk):
        bank.receive_bureau_tags(tags)
    result = bank.intersect()
    if reveal is psi.Reveal.BOTH:
        for matched in bank.matched_tags(chunk=3):
            bureau.receive_matched(matched)
        bank.confirm_reveal(bureau.finish_reveal())
    return result, bureau


id_sets = st.sets(st.integers(min_value=0, max_value=60), max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bank=id_sets, bureau=id_sets, chunk=st.integers(1, 9))
def test_psi_finds_exactly_the_set_intersection(bank: set[int], bureau: set[int], chunk: int):
    bank_ids = [f"E{x:04d}" for x in sorted(bank)]
    bureau_ids = [f"E{x:04d}" for x in sorted(bureau)]
    result, bureau_session = run_session(bank_ids, make_table(bureau_ids), chunk=chunk)
    expected = [x for x in bank_ids if x in set(bureau_ids)]
    assert sorted(result.matched_ids) == expected
    assert bureau_session.matched_ids == result.matched_ids  # the same row order on both sides
    assert result.bank_set_size == len(bank_ids)
    assert result.bureau_set_size == len(bureau_ids)


@pytest.mark.parametrize(
    "bank, bureau",
    [
        ([], []),
        ([], ["a", "b"]),
        (["a", "b"], []),
        (["a", "b", "c"], ["x", "y"]),  # disjoint
        (["a", "b", "c"], ["c", "b", "a"]),  # identical
    ],
)
def test_psi_edge_sets(bank: list[str], bureau: list[str]):
    result, session = run_session(bank, make_table(bureau))
    assert sorted(result.matched_ids) == sorted(x for x in bank if x in bureau)
    assert session.stage is psi.BureauStage.REVEALED


@pytest.mark.parametrize("size", [4, 5, 6, 10, 11])
def test_chunk_boundaries(size: int):
    ids = [f"id{i}" for i in range(size)]
    result, _ = run_session(ids, make_table(ids[1:]), chunk=5, tag_chunk=5)
    assert sorted(result.matched_ids) == sorted(ids[1:])


def test_bank_reveal_mode_tells_the_bureau_nothing_of_the_intersection():
    ids = ["a", "b", "c"]
    result, bureau = run_session(ids, make_table(["b", "z"]), reveal=psi.Reveal.BANK)
    assert result.matched_ids == ["b"]
    assert bureau.matched_ids is None
    with pytest.raises(WrongStage, match="reveal mode 'bank'"):
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, b""))


def test_blinded_ids_hide_the_bank_order_and_values():
    ids = [f"id{i}" for i in range(40)]
    bank = psi.BankPsiSession(ids, chunk=40)
    bank.accept_params(psi.PsiParams("s", 0, 1))
    (message,) = list(bank.blinded_ids())
    points = group.split_points(message.points)
    plain = [group.hash_to_group(x.encode()) for x in ids]
    assert not set(points) & set(plain)  # blinded, not H(x)
    # Unblinding with the bank's own key gives H(x) in a shuffled order.
    unblinded = group.split_points(group.exponentiate(bank._inverse, message.points))
    assert sorted(unblinded) == sorted(plain)
    assert unblinded != plain


# ---- wrong order: every step before its time is a WrongStage ------------------------


def test_bank_steps_out_of_order():
    bank = psi.BankPsiSession(["a"])
    with pytest.raises(WrongStage):
        list(bank.blinded_ids())
    with pytest.raises(WrongStage):
        bank.intersect()
    with pytest.raises(WrongStage):
        list(bank.matched_tags())
    bank.request()
    bank.accept_params(psi.PsiParams("s", 1, 1))
    with pytest.raises(WrongStage):
        bank.accept_params(psi.PsiParams("s", 1, 1))
    with pytest.raises(WrongStage):
        bank.confirm_reveal(psi.RevealSummary("s", 0))


def test_bureau_steps_out_of_order():
    table = make_table(["a", "b"])
    bank = psi.BankPsiSession(["a", "b"], chunk=1)
    bureau = psi.BureauPsiSession(table, bank.request())
    bank.accept_params(bureau.params)
    # Reveal before every blinded ID was exponentiated.
    with pytest.raises(WrongStage):
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, b""))
    with pytest.raises(WrongStage):
        bureau.finish_reveal()
    messages = list(bank.blinded_ids())
    for m in messages:
        bureau.exponentiate(m).result()
    # Once all announced IDs are in, no more blinded IDs are taken.
    with pytest.raises(WrongStage):
        bureau.exponentiate(messages[0])


# ---- bad messages from the bank -------------------------------------------------------


@pytest.fixture()
def opened():
    table = make_table(["a", "b", "c"])
    bank = psi.BankPsiSession(["a", "b", "c"], chunk=2)
    bureau = psi.BureauPsiSession(table, bank.request())
    bank.accept_params(bureau.params)
    return bank, bureau


def valid_points(count: int) -> bytes:
    return group.hash_ids([f"p{i}".encode() for i in range(count)])


@pytest.mark.parametrize(
    "points, offset, match",
    [
        (b"\x01" * 31, 0, "multiple of 32"),
        (b"", 0, "non-empty"),
        (valid_points(4), 0, "more blinded IDs than"),
        (valid_points(1), 1, "offset 1; expected 0"),
    ],
)
def test_bureau_rejects_malformed_blinded_chunks(opened, points, offset, match):
    _, bureau = opened
    with pytest.raises(ProtocolViolation, match=match):
        bureau.exponentiate(psi.BlindedIds(bureau.session_id, offset, points))
    assert bureau.stage is psi.BureauStage.FAILED


def test_bureau_rejects_points_outside_the_group(opened):
    _, bureau = opened
    bad = bytes.fromhex("00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
    chunk = valid_points(1) + bad
    future = bureau.exponentiate(psi.BlindedIds(bureau.session_id, 0, chunk))
    with pytest.raises(InvalidGroupElement, match="blinded ID #1"):
        future.result()


def test_bureau_rejects_a_short_stream(opened):
    bank, bureau = opened
    first = next(iter(bank.blinded_ids()))
    bureau.exponentiate(first).result()
    with pytest.raises(ProtocolViolation, match="ended after 2 of the 3"):
        bureau.blinded_stream_ended()


def test_bureau_rejects_unknown_and_repeated_matched_tags():
    table = make_table(["a", "b"])
    bureau = psi.BureauPsiSession(table, psi.PsiRequest(0, psi.Reveal.BOTH))
    with pytest.raises(ProtocolViolation, match="more matched tags"):
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, table.sorted_tags[:1].tobytes()))
    bureau = psi.BureauPsiSession(table, psi.PsiRequest(2, psi.Reveal.BOTH))
    bureau.stage = psi.BureauStage.EXPONENTIATED
    with pytest.raises(ProtocolViolation, match="not in the bureau's table"):
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, b"\x00" * 8))
    bureau = psi.BureauPsiSession(table, psi.PsiRequest(2, psi.Reveal.BOTH))
    bureau.stage = psi.BureauStage.EXPONENTIATED
    twice = table.sorted_tags[:1].tobytes() * 2
    bureau.receive_matched(psi.MatchedTags(bureau.session_id, twice))
    with pytest.raises(ProtocolViolation, match="same matched tag twice"):
        bureau.finish_reveal()
    bureau = psi.BureauPsiSession(table, psi.PsiRequest(2, psi.Reveal.BOTH))
    bureau.stage = psi.BureauStage.EXPONENTIATED
    with pytest.raises(ProtocolViolation, match="tags are 8 bytes"):
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, b"\x00" * 7))


def test_an_empty_chunk_of_matched_tags_is_taken_only_as_the_first():
    """A review kept a reveal stream (and its server thread) open for as long as it liked
    by sending an empty chunk now and then. An empty intersection is one empty chunk."""
    table = make_table(["a", "b"])
    for first in (b"", table.sorted_tags[:1].tobytes()):
        bureau = psi.BureauPsiSession(table, psi.PsiRequest(2, psi.Reveal.BOTH))
        bureau.stage = psi.BureauStage.EXPONENTIATED
        bureau.receive_matched(psi.MatchedTags(bureau.session_id, first))
        with pytest.raises(ProtocolViolation, match="empty chunk of matched tags"):
            bureau.receive_matched(psi.MatchedTags(bureau.session_id, b""))
    bureau = psi.BureauPsiSession(table, psi.PsiRequest(2, psi.Reveal.BOTH))
    bureau.stage = psi.BureauStage.EXPONENTIATED
    bureau.receive_matched(psi.MatchedTags(bureau.session_id, b""))
    assert bureau.finish_reveal().matched == 0


def test_the_bureaus_tags_only_after_the_banks_blinded_ids(opened):
    """A review opened sessions of one ID, sent none, and downloaded the bureau's whole tag
    table twice from each: 40 tables for 20 IDs. Tags follow the blinded IDs now (and the
    sessions a bank opens a day are counted: ``daily_psi_sessions``)."""
    bank, bureau = opened
    with pytest.raises(WrongStage):
        next(bureau.tags())
    for message in bank.blinded_ids():
        bureau.exponentiate(message).result()
    bureau.blinded_stream_ended()
    assert b"".join(t.tags for t in bureau.tags()) == bureau.table.sorted_tags.tobytes()


def test_bureau_policy_limits():
    table = make_table(["a", "b"])
    with pytest.raises(PolicyViolation, match="at most 5"):
        psi.BureauPsiSession(table, psi.PsiRequest(6, psi.Reveal.BOTH), psi.PsiLimits(5))
    with pytest.raises(ProtocolViolation, match="speaks"):
        psi.BureauPsiSession(table, psi.PsiRequest(1, psi.Reveal.BOTH, protocol="other/v0"))
    with pytest.raises(PolicyViolation, match="reveals none below 2"):
        run_session(["a", "x"], table, limits=psi.PsiLimits(min_intersection=2))


# ---- bad messages from the bureau -----------------------------------------------------


def test_bank_rejects_malformed_answers(opened):
    bank, bureau = opened
    messages = list(bank.blinded_ids())
    answer = bureau.exponentiate(messages[0]).result()
    with pytest.raises(ProtocolViolation, match="starts at 2; expected 0"):
        bank.receive_exponentiated(psi.ExponentiatedIds(bank.session_id, 2, answer.points))
    with pytest.raises(ProtocolViolation, match="expected 64"):
        bank.receive_exponentiated(psi.ExponentiatedIds(bank.session_id, 0, answer.points[:32]))
    with pytest.raises(ProtocolViolation, match="another session"):
        bank.receive_exponentiated(psi.ExponentiatedIds("other", 0, answer.points))
    with pytest.raises(ProtocolViolation, match="more tags than"):
        bank.receive_bureau_tags(psi.BureauTags(bank.session_id, 0, b"\x00" * 8 * 4))
    with pytest.raises(ProtocolViolation, match="returned 0 of 3"):
        bank.intersect()


def test_bank_rejects_a_bureau_answer_outside_the_group(opened):
    bank, bureau = opened
    list(bank.blinded_ids())
    bad = bytes.fromhex("00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
    bank.receive_exponentiated(psi.ExponentiatedIds(bank.session_id, 0, bad + valid_points(1)))
    bank.receive_exponentiated(psi.ExponentiatedIds(bank.session_id, 2, valid_points(1)))
    bureau.stage = psi.BureauStage.EXPONENTIATED
    for tags in bureau.tags():
        bank.receive_bureau_tags(tags)
    with pytest.raises(InvalidGroupElement, match="exponentiated ID #0"):
        bank.intersect()


def test_bank_rejects_bad_params():
    bank = psi.BankPsiSession(["a"])
    with pytest.raises(ProtocolViolation, match="tag length"):
        bank.accept_params(psi.PsiParams("s", 1, 1, tag_bytes=4))
    with pytest.raises(ProtocolViolation, match="speaks"):
        bank.accept_params(psi.PsiParams("s", 1, 1, protocol="x"))


def test_ordered_map_keeps_order_with_a_process_pool():
    from node_runtime.parallel import make_executor

    executor = make_executor(2)
    try:
        results = list(psi.ordered_map(executor, pow, ((i, 2) for i in range(50)), window=3))
    finally:
        executor.shutdown()
    assert results == [i * i for i in range(50)]
