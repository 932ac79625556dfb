"""Private lookups (labelled PSI): a bank opens exactly the entries of the IDs it holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import group
from protocols.errors import ProtocolViolation
from protocols.lookup import (
    REVISION,
    TAG_ORDER,
    EntryNotAuthentic,
    LookupTable,
    TableChunk,
    TableVersion,
    lookup_tag,
    open_all,
    open_entry,
    seal_chunk,
    seal_entry,
    seal_table,
)

TABLE = TableVersion("size_class", 1, 7)


def bureau_table(ids: list[bytes], payloads: list[bytes], b: bytes) -> dict[bytes, bytes]:
    points = group.split_points(group.exponentiate(b, group.hash_ids(ids)))
    return dict(seal_table(points, payloads, TABLE))


def bank_points(ids: list[bytes], b: bytes) -> list[bytes]:
    """The bank's side of the PSI exchange: blind with a, the bureau applies b, unblind."""
    a = group.random_scalar()
    blinded = group.hash_and_exponentiate(a, ids)
    answered = group.exponentiate(b, blinded)  # at the bureau: it sees only H(x)^a
    return group.split_points(group.exponentiate(group.invert_scalar(a), answered))


def test_a_bank_opens_exactly_the_ids_it_holds():
    b = group.random_scalar()
    bureau_ids = [f"91350100M0001{i:05d}".encode() for i in range(50)]
    payloads = [f"class-{i}".encode() for i in range(50)]
    entries = bureau_table(bureau_ids, payloads, b)
    mine = [bureau_ids[3], b"NOT-AT-THE-BUREAU", bureau_ids[41]]
    assert open_all(bank_points(mine, b), entries, TABLE) == [b"class-3", None, b"class-41"]


def test_another_key_epoch_opens_nothing():
    b, other = group.random_scalar(), group.random_scalar()
    ids = [b"A", b"B"]
    entries = bureau_table(ids, [b"1", b"2"], b)
    assert open_all(bank_points(ids, other), entries, TABLE) == [None, None]


def test_a_tampered_entry_fails_authentication_with_a_clear_error():
    b = group.random_scalar()
    entries = bureau_table([b"A"], [b"payload"], b)
    (point,) = bank_points([b"A"], b)
    tag = lookup_tag(point)
    sealed = bytearray(entries[tag])
    sealed[0] ^= 1
    with pytest.raises(EntryNotAuthentic, match="failed authentication"):
        open_entry(point, bytes(sealed), TABLE)


def test_an_entry_does_not_open_under_another_product_or_version():
    point = group.hash_to_group(b"A")
    _, sealed = seal_entry(point, b"x", TABLE)
    for other in (TableVersion("watch", 1, 7), TableVersion("size_class", 2, 7)):
        with pytest.raises(EntryNotAuthentic):
            open_entry(point, sealed, other)
    assert open_entry(point, sealed, TABLE) == b"x"


def test_an_entry_moved_to_another_tag_does_not_open():
    p1, p2 = group.hash_to_group(b"A"), group.hash_to_group(b"B")
    _, sealed = seal_entry(p1, b"x", TABLE)
    with pytest.raises(EntryNotAuthentic):
        open_entry(p2, sealed, TABLE)


@pytest.mark.parametrize(
    "table", [TableVersion("Bad", 1, 1), TableVersion("ok", -1, 1), TableVersion("ok", 1, 2**32)]
)
def test_table_names_and_numbers_are_checked(table):
    with pytest.raises(ProtocolViolation):
        list(seal_table([group.hash_to_group(b"A")], [b"x"], table))


def test_sizes_are_checked():
    point = group.hash_to_group(b"A")
    with pytest.raises(ProtocolViolation):
        open_entry(point, b"short", TABLE)
    with pytest.raises(ProtocolViolation):
        seal_entry(point, bytes(5000), TABLE)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.binary(max_size=200))
def test_round_trip(identifier, payload):
    point = group.hash_to_group(identifier)
    tag, sealed = seal_entry(point, payload, TABLE)
    assert tag == lookup_tag(point) and len(sealed) == len(payload) + 16
    assert open_entry(point, sealed, TABLE) == payload


# -- tables with revisions, and incremental updates ---------------------------------------


def _table(entries: list[tuple[bytes, bytes, int]], version: int) -> LookupTable:
    """A table as the bureau builds it from ``(point, payload, revision)``: each entry
    sealed under its revision, sorted by tag."""
    revisions = np.array([r for _, _, r in entries], REVISION)
    tags, sealed = seal_chunk(
        b"".join(p for p, _, _ in entries), b"".join(q for _, q, _ in entries),
        revisions.tobytes(), 4, "watch", 7,
    )  # fmt: skip
    order = np.argsort(np.frombuffer(tags, TAG_ORDER), kind="stable")
    chunk = TableChunk(
        0,
        np.frombuffer(tags, TAG_ORDER)[order].tobytes(),
        np.frombuffer(sealed, np.uint8).reshape(len(entries), 4 + 16)[order].tobytes(),
        revisions[order].tobytes(),
    )
    return LookupTable.from_chunks(TableVersion("watch", version, 7), 4, len(entries), [chunk])


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=12),
    changes=st.lists(st.sampled_from(["same", "changed", "removed"]), min_size=12, max_size=12),
    joined=st.lists(st.binary(min_size=4, max_size=4), max_size=4),
)
def test_an_update_brings_a_kept_table_to_the_new_version(before, changes, joined):
    points = [group.hash_to_group(b"id-%d" % i) for i in range(len(before) + len(joined))]
    old = _table([(points[i], p, 1) for i, p in enumerate(before)], 1)
    # version 2: unchanged payloads keep revision 1, changed and new ones get revision 2,
    # some enterprises are gone
    now = [
        (
            points[i],
            p if changes[i] == "same" else bytes(x ^ 0xFF for x in p),
            1 + (changes[i] == "changed"),
        )
        for i, p in enumerate(before)
        if changes[i] != "removed"
    ] + [(points[len(before) + i], p, 2) for i, p in enumerate(joined)]
    gone = [points[i] for i in range(len(before)) if changes[i] == "removed"]
    delta = _table([e for e in now if e[2] == 2], 2)  # what the bureau sends since version 1
    updated = old.updated(delta, b"".join(lookup_tag(p) for p in gone))
    full = _table(now, 2)
    assert np.array_equal(updated.tags, full.tags)
    assert np.array_equal(updated.sealed, full.sealed)  # the unchanged kept their ciphertext
    assert np.array_equal(updated.revisions, full.revisions)
    assert updated.open([p for p, _, _ in now]) == [q for _, q, _ in now]
    assert updated.open(gone) == [None] * len(gone)


def test_an_entry_under_another_revision_does_not_open():
    point = group.hash_to_group(b"id")
    table = _table([(point, b"abcd", 1)], 2)
    forged = LookupTable(table.version, 4, table.tags, table.sealed, table.revisions + 1)
    assert table.open_counted([point]) == ([b"abcd"], 0)
    # counted and taken as not held (never raised: see LookupTable.open_counted)
    assert forged.open_counted([point]) == ([None], 1)


# -- the bank's lookup stream: requests that share a message, answers split back ------------


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    epochs=st.lists(st.sampled_from([7, 8]), min_size=12, max_size=12),
    limit=st.integers(1, 120),
)
def test_queued_requests_share_messages_and_get_their_own_answers(counts, epochs, limit):
    from concurrent.futures import Future

    from bank_node.lookup_stream import _hand_out, _Request, _Stream
    from xinrong.v1 import lookup_pb2 as pb

    stream = _Stream()
    requests = [_Request(epochs[i], bytes([i]) * (32 * n), Future()) for i, n in enumerate(counts)]
    stream.queued.extend(requests)
    messages = stream.outgoing(limit)
    answered = []
    while stream.queued:
        message = next(messages)
        batch = stream.sent.popleft()  # what the reader does when the answer comes
        # one key epoch a message, within the limit unless a single request is larger
        assert {r.key_epoch for r in batch} == {message.key_epoch}
        assert len(message.points) <= 32 * limit or len(batch) == 1
        # the bureau's answer, point by point (here: each point reversed)
        answer = pb.EvaluatedPoints(
            key_epoch=message.key_epoch,
            points=b"".join(p[::-1] for p in group.split_points(message.points)),
        )
        _hand_out(answer, batch)
        answered.extend(batch)
    assert answered == requests  # in order, none lost, none twice
    for r in requests:
        got = r.future.result(0)
        assert got.points == b"".join(p[::-1] for p in group.split_points(r.points))
        assert got.key_epoch == r.key_epoch


def test_a_short_shared_answer_fails_every_request_it_was_for():
    from concurrent.futures import Future

    from bank_node.lookup_stream import _hand_out, _Request
    from xinrong.v1 import lookup_pb2 as pb

    batch = [_Request(1, b"\x01" * 64, Future()), _Request(1, b"\x02" * 32, Future())]
    _hand_out(pb.EvaluatedPoints(key_epoch=1, points=b"\x00" * 64), batch)
    for r in batch:
        with pytest.raises(ProtocolViolation, match="64 bytes of points for 96"):
            r.future.result(0)


def test_points_sent_again_are_blinded_again_and_open_the_same_entries():
    """After a broken stream the bank sends its points again on a unary call: under a fresh
    extra scalar, so the bureau cannot link the two calls, with the same answer."""
    from protocols import group
    from protocols import lookup as oprf

    key = group.random_scalar()
    query = oprf.blind([b"91440300MA5F000001", b"91440300MA5F000002"])
    direct = oprf.unblind(query, oprf.evaluate(key, query.points, 10))
    extra, again = oprf.blind_again(query.points)
    assert again != query.points and len(again) == len(query.points)
    answered = oprf.unblind_again(extra, oprf.evaluate(key, again, 10))
    assert oprf.unblind(query, answered) == direct


def test_a_table_larger_than_the_bank_can_hold_is_refused_before_any_memory_is_taken():
    """A hostile bureau announced a table of 2**40 entries: the bank allocated for them before
    the first chunk came and died of a MemoryError. Now the size is refused, named."""
    with pytest.raises(ProtocolViolation, match="1,099,511,627,776 entries"):
        LookupTable.from_chunks(TableVersion("watch", 1, 7), 4, 2**40, [])
    # within the count, but entries of the largest payload would take 200 GB
    with pytest.raises(ProtocolViolation, match="50,000,000 entries of 4096 bytes"):
        LookupTable.from_chunks(TableVersion("watch", 1, 7), 4096, 50_000_000, [])
    assert LookupTable.from_chunks(TableVersion("watch", 1, 7), 4, 0, []).tags.size == 0


def test_an_updated_table_keeps_its_tags_in_tag_order():
    """A monthly update merged the kept tags with the new ones, and numpy 2 gave them native
    byte order: the saved table no longer matched TAG_ORDER and was downloaded again at the
    next run. Tags and revisions now keep their dtypes through an update."""
    points = [group.hash_to_group(b"id-%d" % i) for i in range(3)]
    old = _table([(points[0], b"aaaa", 1), (points[1], b"bbbb", 1)], 1)
    delta = _table([(points[1], b"BBBB", 2), (points[2], b"cccc", 2)], 2)
    updated = old.updated(delta, b"")
    assert updated.tags.dtype == TAG_ORDER and updated.revisions.dtype == REVISION
    assert updated.open(points) == [b"aaaa", b"BBBB", b"cccc"]
