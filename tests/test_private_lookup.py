"""Private lookups between two real nodes over loopback gRPC: private scoring with a joint
model's table, what the bureau sees of it, tables that do not open, tampering, quotas and
the bank-only fallback (issue 14)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bank_node.client import BureauConnection
from bank_node.lookup import LookupClient, lookup_job, model_table, private_bureau_lookup
from bank_node.training import load_model, predict_job, train_job
from bureau_node.audit import AuditLog
from bureau_node.lookup_service import PrivateLookupServicer
from bureau_node.products import ProductData
from bureau_node.server import BureauNode
from bureau_node.store import BureauStore
from node_runtime import tables
from protocols import group, lookup, products, psi
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, PeerError, QuotaExceeded, StaleKeyEpoch
from protocols.ids import IdType, normalise_column, prepare_ids
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import lookup_pb2, psi_pb2

TEST_KEYS = {"key_bits": 768, "allow_test_keys": True}


class Trace:
    """Every request the bureau's lookup servicer received, as it received it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object]] = []

    def wrap(self, name: str, method):  # noqa: ANN001
        def recorded(servicer, request, context):  # noqa: ANN001
            self.requests.append((name, request))
            return method(servicer, request, context)

        def recorded_stream(servicer, requests, context):  # noqa: ANN001
            def each():
                for request in requests:
                    self.requests.append((name, request))
                    yield request

            return method(servicer, each(), context)

        return recorded_stream if name.endswith("Stream") else recorded


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> dict[str, Path]:
    return write_city(
        generate_city(6000, 2000, seed=7, graph=False), tmp_path_factory.mktemp("city")
    )


@pytest.fixture(scope="module")
def trace() -> Trace:
    return Trace()


@pytest.fixture(scope="module")
def bureau(city, trace, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "bureau.toml"
    # the bureau's policy as a cautious operator sets it: no intersection below 100 revealed
    config.write_text(
        "[defaults]\nmin_intersection = 100\ndaily_lookup_ids = 50000\n\n"
        '[banks.bank-a]\nmax_lookup_streams = 3\n\n[banks.bank-b]\nproducts = ["size_class"]\n\n'
        "[banks.bank-poor]\ndaily_lookup_ids = 10\n\n"
        "[banks.bank-poor-online]\ndaily_lookup_ids = 10\n\n"
        "[banks.bank-psi]\ndaily_lookup_ids = 10\n\n"
        "[banks.bank-portfolio]\ndaily_lookup_ids = 3000\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ListTables", "Evaluate", "EvaluateStream", "FetchTable"):
            original = getattr(PrivateLookupServicer, name)
            patch.setattr(PrivateLookupServicer, name, trace.wrap(name, original))
        node = BureauNode(
            city["bureau"],
            "uscc",
            tmp_path_factory.mktemp("state"),
            workers=0,
            training_limits=vlr.TrainingLimits(allow_test_keys=True),
            config=config,
            registry=city["registry"],
            events=city["events"],
        )
        node.start("127.0.0.1:0")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def trained(city, bureau, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    train_job(
        f"127.0.0.1:{bureau.port}",
        city["bank"],
        "uscc",
        "y",
        model_dir,
        "bank-a",
        seed=1,
        quiet=True,
        **TEST_KEYS,
    )
    return model_dir


@pytest.fixture(autouse=True)
def _tables_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XINRONG_TABLES_DIR", str(tmp_path / "tables"))


def applicants(city: dict[str, Path], rows: slice) -> pa.Table:
    table = pacsv.read_csv(
        city["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    return table.drop_columns(["y"]).slice(rows.start, rows.stop - rows.start)


def write(table: pa.Table, path: Path) -> Path:
    pacsv.write_csv(table, path)
    return path


def scores_of(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )


def audit_records(bureau: BureauNode) -> list[dict]:
    log = AuditLog(bureau.store.root)
    return [dict(r) for r in log.records()]


def test_one_applicant_is_scored_privately_under_the_default_policy(
    city, bureau, trained, tmp_path
):
    address = f"127.0.0.1:{bureau.port}"
    one = write(applicants(city, slice(0, 1)), tmp_path / "one.csv")
    # the old path cannot decide one applicant: the bureau reveals no intersection below 100
    with pytest.raises(PeerError, match="100"):
        predict_job(
            address,
            trained,
            one,
            "uscc",
            tmp_path / "a.csv",
            "bank-a",
            quiet=True,
            scoring="reveal-both",
        )
    result = predict_job(address, trained, one, "uscc", tmp_path / "b.csv", "bank-a", quiet=True)
    assert result["rows"] == 1 and result["scoring"] == "private"
    assert 0 < scores_of(tmp_path / "b.csv").column("score")[0].as_py() < 1


def test_private_scores_equal_reveal_both_scores(city, bureau, trained, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    data = write(applicants(city, slice(0, 400)), tmp_path / "applicants.csv")
    predict_job(
        address,
        trained,
        data,
        "uscc",
        tmp_path / "old.csv",
        "bank-a",
        quiet=True,
        scoring="reveal-both",
    )
    predict_job(address, trained, data, "uscc", tmp_path / "new.csv", "bank-a", quiet=True)
    old, new = scores_of(tmp_path / "old.csv"), scores_of(tmp_path / "new.csv")
    assert old.column_names == new.column_names
    assert new.column("bureau_matched").to_pylist() == old.column("bureau_matched").to_pylist()
    assert sum(new.column("bureau_matched").to_pylist()) > 300
    np.testing.assert_allclose(
        new.column("score").to_numpy(), old.column("score").to_numpy(), rtol=0, atol=1e-9
    )
    for i in (1, 2, 3):
        assert new.column(f"bureau_reason_{i}").equals(old.column(f"bureau_reason_{i}"))


def test_the_bureau_sees_blinded_points_and_their_count_nothing_else(
    city, bureau, trained, trace, tmp_path
):
    address = f"127.0.0.1:{bureau.port}"
    table = applicants(city, slice(400, 450))
    ids = prepare_ids(table.column("uscc"), IdType.USCC).ids
    before_trace, before_audit = len(trace.requests), len(audit_records(bureau))
    data = write(table, tmp_path / "applicants.csv")
    for run in (1, 2):  # the same applicants twice
        predict_job(address, trained, data, "uscc", tmp_path / f"{run}.csv", "bank-a", quiet=True)
    seen = trace.requests[before_trace:]
    evaluated = [r for name, r in seen if name == "Evaluate"]
    assert [name for name, _ in seen if name not in ("Evaluate", "ListTables", "FetchTable")] == []
    assert len(evaluated) == 2 and all(len(r.points) == 32 * len(ids) for r in evaluated)
    first, second = (group.split_points(r.points) for r in evaluated)
    # fresh blinding: the same IDs give unrelated points, none of them H(x) itself
    assert not set(first) & set(second)
    assert not set(first) & {group.hash_to_group(x.encode()) for x in ids}
    # no ID, in any encoding, in anything the bureau received
    raw = b"".join(r.SerializeToString() for _, r in seen)
    assert not any(x.encode() in raw for x in ids)
    # on record: the count and the tables, never who
    added = audit_records(bureau)[before_audit:]
    lookups = [json.loads(r["details"]) for r in added if r["event"] == "lookup"]
    assert [d["points"] for d in lookups] == [len(ids), len(ids)]
    assert {r["event"] for r in added} <= {"lookup", "lookup_table"}
    assert not any(x in json.dumps(added) for x in ids)


def test_online_decisions_on_one_stream_are_the_same_lookups_on_record(
    city, bureau, trace, tmp_path
):
    """Decisions one applicant at a time, from one thread and from sixteen at once, on one
    EvaluateStream: each gets exactly the points a unary Evaluate gives, the bureau sees
    only fresh points and their count, and every point is on record and charged before its
    answer, with the record's receipt back at the bank."""
    address = f"127.0.0.1:{bureau.port}"
    ids = prepare_ids(applicants(city, slice(500, 548)).column("uscc"), IdType.USCC).ids
    before_trace, before_audit = len(trace.requests), len(audit_records(bureau))
    with BureauConnection(address, "bank-a") as connection:
        expected = dict(zip(ids, LookupClient(connection, tmp_path).points(ids), strict=True))
        client = LookupClient(connection, tmp_path, stream=True)
        receipts_before = connection.receipts.kept
        one_by_one = [client.points([x])[0] for x in ids[:8]]
        with ThreadPoolExecutor(16) as pool:
            at_once = list(pool.map(lambda x: client.points([x])[0], ids * 2))
        client.close()
        kept = connection.receipts.kept - receipts_before
    assert one_by_one == [expected[x] for x in ids[:8]]
    assert at_once == [expected[x] for x in ids * 2]
    seen = trace.requests[before_trace:]
    streamed = [r for name, r in seen if name == "EvaluateStream"]
    decided = 8 + 2 * len(ids)
    assert sum(len(r.points) for r in streamed) == 32 * decided
    points = [p for r in streamed for p in group.split_points(r.points)]
    assert len(set(points)) == len(points)  # the same IDs twice: fresh points each time
    raw = b"".join(r.SerializeToString() for _, r in seen)
    assert not any(x.encode() in raw for x in ids)
    added = audit_records(bureau)[before_audit:]
    lookups = [json.loads(r["details"]) for r in added if r["event"] == "lookup"]
    # one record per message (the unary call's, then the stream's), every point counted
    assert len(lookups) == 1 + len(streamed)
    assert sum(d["points"] for d in lookups) == len(ids) + decided
    assert kept == len(streamed)  # each stream answer brought its record's receipt


def _until(condition, seconds: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def test_streams_beyond_the_bureaus_cap_and_idle_ones_fall_back_to_unary_calls(
    city, bureau, tmp_path, monkeypatch
):
    address = f"127.0.0.1:{bureau.port}"
    ids = prepare_ids(applicants(city, slice(600, 606)).column("uscc"), IdType.USCC).ids
    streams = bureau.lookup_streams
    cap = bureau.access.policy("bank-a").max_lookup_streams
    _until(lambda: streams.count("bank-a") == 0)  # earlier tests' streams, closing
    with contextlib.ExitStack() as stack:
        connections = [
            stack.enter_context(BureauConnection(address, "bank-a")) for _ in range(cap + 1)
        ]
        expected = LookupClient(connections[0], tmp_path).points(ids)
        clients = [LookupClient(c, tmp_path, stream=True) for c in connections]
        for client in clients[:-1]:  # each holds a stream open
            assert client.points(ids[:1]) == expected[:1]
        assert streams.count("bank-a") == cap
        before = len(audit_records(bureau))
        # one more stream is refused; the decision is made by a unary call all the same
        assert clients[-1].points(ids) == expected
        refused = [r for r in audit_records(bureau)[before:] if r["outcome"] != "OK"]
        assert [(r["event"], r["outcome"]) for r in refused] == [("lookup", "RESOURCE_EXHAUSTED")]
        assert "lookup streams" in json.loads(refused[0]["details"])["error"]
        # idle streams are ended by the bureau (its threads are not held for nothing) ...
        monkeypatch.setattr(streams, "idle_seconds", 0.2)
        _until(lambda: streams.count("bank-a") == 0)
        # (long again: the new stream below must not be ended idle while it is counted)
        monkeypatch.setattr(streams, "idle_seconds", 3600)
        # ... decisions go on (the first may find the ended stream and be sent unary),
        # and a new stream is opened
        assert clients[0].points(ids[1:2]) == expected[1:2]
        assert clients[0].points(ids[2:3]) == expected[2:3]
        assert streams.count("bank-a") == 1
        # a stream is ended after its answer once old (its call's checks were made at its
        # start): whatever was sent after is answered all the same
        monkeypatch.setattr(streams, "max_age_seconds", 0.0)
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda x: clients[1].points([x])[0], ids * 3)) == expected * 3
        for client in clients:
            client.close()


def test_a_fault_reading_the_stream_fails_the_decision_at_once(city, bureau, tmp_path):
    """Whatever goes wrong in the thread that reads the stream reaches the decisions that
    wait on it, at once: none waits for its deadline."""
    address = f"127.0.0.1:{bureau.port}"
    ids = prepare_ids(applicants(city, slice(710, 711)).column("uscc"), IdType.USCC).ids
    with BureauConnection(address, "bank-b") as connection:
        client = LookupClient(connection, tmp_path, stream=True)
        expected = client.points(ids)

        def broken(value: bytes, sync: bool = True) -> None:
            raise RuntimeError("a fault in the bank's own code")

        connection.receipts.keep = broken
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="a fault in the bank's own code"):
            client.points(ids)
        assert time.monotonic() - started < 5
        del connection.receipts.keep
        assert client.points(ids) == expected  # and the next decision has a new stream
        client.close()


def test_a_bank_hoarding_streams_cannot_starve_the_bureau(city, bureau, tmp_path):
    """The attack: open stream after stream and send nothing, to hold the bureau's server
    threads. Beyond its cap each is refused at once, and another bank is served as ever."""
    address = f"127.0.0.1:{bureau.port}"
    streams = bureau.lookup_streams
    cap = bureau.access.policy("bank-a").max_lookup_streams
    _until(lambda: streams.count() == 0)
    ids = prepare_ids(applicants(city, slice(700, 702)).column("uscc"), IdType.USCC).ids
    silence = threading.Event()
    with BureauConnection(address, "bank-a") as hoarder, BureauConnection(address, "bank-b") as b:
        calls = [
            hoarder.lookup.EvaluateStream(iter(silence.wait, True), metadata=hoarder.metadata)
            for _ in range(3 * cap)
        ]
        _until(lambda: sum(not c.done() for c in calls) == cap)
        assert streams.count("bank-a") == cap
        refused = [c for c in calls if c.done()]
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        started = time.monotonic()
        assert len(LookupClient(b, tmp_path).points(ids)) == len(ids)
        assert time.monotonic() - started < 5
        silence.set()
        for c in calls:
            c.cancel()
    _until(lambda: streams.count() == 0)


def test_entries_open_only_for_the_bank_that_asked_and_an_altered_one_is_said_not_raised(
    city, bureau, trained, tmp_path
):
    address = f"127.0.0.1:{bureau.port}"
    model = load_model(trained)
    ids = prepare_ids(applicants(city, slice(0, 200)).column("uscc"), IdType.USCC).ids
    with BureauConnection(address, "bank-a") as a, BureauConnection(address, "bank-b") as b:
        client_a = LookupClient(a, tmp_path / "a")
        table = client_a.table(model_table(model["model_id"]))
        opened = table.open(client_a.points(ids))
        assert 150 < sum(p is not None for p in opened) <= len(ids)
        # bank-b's points for the same IDs (its own key) open nothing of bank-a's table
        assert LookupClient(b, tmp_path / "b").points(ids) and all(
            p is None for p in table.open(LookupClient(b, tmp_path / "b").points(ids))
        )
        # nor do the points a bank can compute without the bureau's key
        assert all(p is None for p in table.open([group.hash_to_group(x.encode()) for x in ids]))
        # an altered entry is named and taken as not held, never raised: stopping at it would
        # tell the bureau, by the calls that did not follow, that the bank had looked up the
        # enterprise whose entry it altered (one target's entry here, then the whole table)
        kept = next((tmp_path / "a").rglob("model_*.npz"))
        with np.load(kept) as arrays:
            table_arrays = dict(arrays)
        rows = table.find(client_a.points(ids))
        target = int(np.flatnonzero(rows >= 0)[0])
        table_arrays["sealed"][rows[target], 3] ^= 1
        np.savez(kept, **table_arrays)
        said: list[str] = []
        fresh = LookupClient(a, tmp_path / "a", say=said.append)
        chosen, scores, _ = private_bureau_lookup(a, model, client=fresh)(ids)
        assert ids[target] not in chosen and len(chosen) == sum(p is not None for p in opened) - 1
        assert any(
            "1 entries of the bureau's model_" in s and "failed authentication" in s for s in said
        )
        table_arrays["sealed"][:, 3] ^= 1  # now every entry but the target's is altered
        np.savez(kept, **table_arrays)
        said.clear()
        fresh = LookupClient(a, tmp_path / "a", say=said.append)
        assert private_bureau_lookup(a, model, client=fresh)(ids)[0] == [ids[target]]


@pytest.mark.parametrize(("bank", "stream"), [("bank-poor", False), ("bank-poor-online", True)])
def test_lookups_are_charged_to_a_quota(city, bureau, trained, tmp_path, bank, stream):
    address = f"127.0.0.1:{bureau.port}"
    ids = prepare_ids(applicants(city, slice(0, 11)).column("uscc"), IdType.USCC).ids
    with BureauConnection(address, bank) as connection:
        client = LookupClient(connection, tmp_path, stream=stream)
        assert len(client.points(ids[:10])) == 10
        with pytest.raises(PeerError, match="daily_lookup_ids") as caught:
            client.points(ids[10:11])
        assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert issubclass(QuotaExceeded, Exception)


def test_a_run_larger_than_the_days_lookups_left_is_refused_before_any_is_charged(
    city, bureau, tmp_path
):
    """A review's lookup of 200,000 enterprises was charged chunk by chunk until the bureau
    refused one: no output, and the day's quota spent. A run asks first what is left."""
    ids = bureau_ids(city, 2500)
    address = f"127.0.0.1:{bureau.port}"
    with BureauConnection(address, "bank-portfolio") as connection:
        client = LookupClient(connection, tmp_path)
        assert len(client.points(ids)) == 2500
        with pytest.raises(QuotaExceeded, match="has 500 lookups left today.*nothing was sent"):
            client.points(ids)
    bureau.access.flush()
    (usage,) = (bureau.access.root / "bank-portfolio").glob("usage-*.json")
    assert json.loads(usage.read_text()) == {"daily_lookup_ids": 2500}


def bureau_ids(city: dict[str, Path], count: int) -> list[str]:
    """IDs the bureau holds (its own data file's first ``count``)."""
    column = pq.read_table(city["bureau"], columns=["uscc"]).column("uscc").slice(0, count)
    return prepare_ids(column, IdType.USCC).ids


def psi_points(connection: BureauConnection, ids: list[str]) -> tuple[list[bytes], int]:
    """One PSI session in reveal mode ``bank`` over ``ids``, as a bank can run it by hand:
    the unblinded answers of ``Exponentiate`` (``H(x)^b``, charged to ``daily_psi_ids``),
    and how many of their tags the bureau's tag table holds (the PSI result)."""
    stub, metadata = connection.psi, connection.metadata
    request = psi_pb2.OpenSessionRequest(
        protocol=psi.PROTOCOL, bank_set_size=len(ids), reveal=psi_pb2.REVEAL_MODE_BANK
    )
    updates = stub.OpenSession(request, timeout=60, metadata=metadata)
    session = [u.opened for u in updates if u.HasField("opened")][-1].session_id
    query = lookup.blind([x.encode() for x in ids])
    blinded = psi_pb2.BlindedIds(session_id=session, offset=0, points=query.points)
    answers = stub.Exponentiate(iter([blinded]), timeout=60, metadata=metadata)
    points = lookup.unblind(query, b"".join(a.points for a in answers))
    fetched = stub.FetchTags(psi_pb2.FetchTagsRequest(session_id=session), metadata=metadata)
    held = set(np.concatenate([psi.tags_of(t.tags) for t in fetched]).tolist())
    tags = psi.tags_of(group.tag_points(b"".join(points))).tolist()
    return points, sum(t in held for t in tags)


def test_psi_answers_open_no_lookup_entry_so_the_lookup_quota_holds(
    city, bureau, trained, tmp_path
):
    """The review's attack: PSI's ``Exponentiate`` is the same exchange as ``Evaluate`` and
    is charged to ``daily_psi_ids``, not ``daily_lookup_ids``. Under one scalar its answers
    opened every lookup entry of the IDs sent; under a lookup key of its own they open none,
    while PSI itself and the lookups still work and the lookup quota still stops Evaluate."""
    address = f"127.0.0.1:{bureau.port}"
    ids = bureau_ids(city, 300)
    with BureauConnection(address, "bank-psi") as connection:
        client = LookupClient(connection, tmp_path / "psi")
        table = client.table("size_class")
        assert all(p is not None for p in table.open(client.points(ids[:10])))
        with pytest.raises(PeerError, match="daily_lookup_ids") as caught:
            client.points(ids[10:11])
        assert caught.value.status == "RESOURCE_EXHAUSTED"
        points, matched = psi_points(connection, ids)
        assert matched == len(ids)  # the PSI found every ID
        assert sum(p is not None for p in table.open(points)) == 0
    # a model's table (u_B and reason codes of every enterprise) is out of reach the same way
    model = load_model(trained)
    with BureauConnection(address, "bank-a") as connection:
        client = LookupClient(connection, tmp_path / "a")
        table = client.table(model_table(model["model_id"]))
        points, matched = psi_points(connection, ids)
        assert matched == len(ids)
        assert sum(p is not None for p in table.open(points)) == 0
        assert all(p is not None for p in table.open(client.points(ids)))
    banks = bureau.store.root / "banks"
    for bank in ("bank-psi", "bank-a"):
        epoch = bureau.store.key_epoch(bank)
        psi_key, lookup_key = banks / bank / f"key-{epoch}", banks / bank / f"lookup-key-{epoch}"
        assert psi_key.read_bytes() != lookup_key.read_bytes()
        assert lookup_key.stat().st_mode & 0o777 == 0o600


def test_a_state_directory_with_one_scalar_moves_to_a_new_key_epoch(tmp_path, monkeypatch):
    """A bureau of an earlier version keyed PSI and lookups with one scalar (``key-<epoch>``,
    no ``lookup-key-<epoch>``), and its banks keep tables sealed under it. The new version
    retires that epoch at start: the bank's kept tables name the old epoch, so it downloads
    the new ones (not a silent "the bureau holds none of these"); PSI answers of either
    epoch open nothing; a stale Evaluate is refused by name."""
    city = write_city(generate_city(600, 200, seed=3, graph=False), tmp_path / "city")
    ids = bureau_ids(city, 100)
    state, kept = tmp_path / "state", tmp_path / "tables"

    def one_scalar(self, bank_id: str, epoch: int) -> tuple[bytes, bytes]:
        """The earlier version's key: ``key-<epoch>`` alone, for PSI and lookups alike."""
        path = self._bank_dir(bank_id) / f"key-{epoch}"
        if not path.exists():
            tables.atomic_write_bytes(path, group.random_scalar(), mode=0o600)
            tables.atomic_write_bytes(self._bank_dir(bank_id) / "epoch", str(epoch).encode())
        return path.read_bytes(), path.read_bytes()

    def start() -> BureauNode:
        node = BureauNode(city["bureau"], "uscc", state, workers=0, registry=city["registry"])
        node.start("127.0.0.1:0")
        return node

    with monkeypatch.context() as patch:
        patch.setattr(BureauStore, "_keys", one_scalar)
        old = start()
        try:
            with BureauConnection(f"127.0.0.1:{old.port}", "bank-a") as connection:
                client = LookupClient(connection, kept)
                before = client.table("size_class").open(client.points(ids))
                old_psi, _ = psi_points(connection, ids)
                # the flaw under one scalar, as the review found it: PSI opens the entries
                assert client.table("size_class").open(old_psi) == before
        finally:
            old.stop()
    bank_dir = state / "banks" / "bank-a"
    assert not (bank_dir / "lookup-key-1").exists() and (bank_dir / "oprf-1.npy").exists()

    new = start()
    try:
        assert new.store.key_epoch("bank-a") == 2
        assert not any((bank_dir / n).exists() for n in ("key-1", "oprf-1.npy", "tags-1.npy"))
        with BureauConnection(f"127.0.0.1:{new.port}", "bank-a") as connection:
            with pytest.raises(grpc.RpcError) as caught:
                connection.lookup.Evaluate(
                    lookup_pb2.BlindedPoints(key_epoch=1, points=lookup.blind([b"x"]).points),
                    metadata=connection.metadata,
                    timeout=10,
                )
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "key epoch 1" in caught.value.details()
            client = LookupClient(connection, kept)
            table = client.table("size_class")
            assert table.version.key_epoch == 2
            assert table.open(client.points(ids)) == before
            new_psi, matched = psi_points(connection, ids)
            assert matched == len(ids)
            assert all(p is None for p in table.open(old_psi) + table.open(new_psi))
        assert (bank_dir / "lookup-key-2").read_bytes() != (bank_dir / "key-2").read_bytes()
    finally:
        new.stop()


def test_rotation_replaces_both_scalars_and_a_shared_one_is_never_served(tmp_path):
    store = BureauStore(tmp_path / "state")
    bank = store.root / "banks" / "bank-a"
    first = store.lookup_scalar("bank-a", 1)
    assert first == (bank / "lookup-key-1").read_bytes() != (bank / "key-1").read_bytes()
    assert store.rotate_key("bank-a") == 2
    assert not (bank / "key-1").exists() and not (bank / "lookup-key-1").exists()
    assert store.lookup_scalar("bank-a", 2) != first
    # a caller still naming the ended epoch is refused, not given fresh keys for it
    with pytest.raises(StaleKeyEpoch, match="key epoch 1 of bank bank-a has ended"):
        store.lookup_scalar("bank-a", 1)
    assert store.key_epoch("bank-a") == 2 and not (bank / "key-1").exists()
    # a PSI key with no lookup key of its epoch is only ever an earlier version's shared
    # scalar (here written behind the running store's back): it is retired, not served
    store.rotate_key("bank-a")
    tables.atomic_write_bytes(bank / "key-3", group.random_scalar())
    with pytest.raises(StaleKeyEpoch, match="key epoch 4"):
        store.lookup_scalar("bank-a", 3)
    assert store.key_epoch("bank-a") == 4 and not (bank / "key-3").exists()
    # and one found at start is retired there
    store.rotate_key("bank-a")
    tables.atomic_write_bytes(bank / "key-5", group.random_scalar())
    assert BureauStore(tmp_path / "state").key_epoch("bank-a") == 6


def test_bank_only_fallback_when_the_bureau_cannot_be_reached(city, trained, tmp_path):
    with contextlib.closing(__import__("socket").socket()) as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = write(applicants(city, slice(0, 20)), tmp_path / "applicants.csv")
    with pytest.raises(PeerError, match="cannot connect"):
        predict_job(
            f"127.0.0.1:{port}", trained, data, "uscc", tmp_path / "x.csv", "bank-a", quiet=True
        )
    result = predict_job(
        f"127.0.0.1:{port}",
        trained,
        data,
        "uscc",
        tmp_path / "s.csv",
        "bank-a",
        quiet=True,
        fallback="bank-only",
    )
    scores = scores_of(tmp_path / "s.csv")
    assert result["bureau_fallback"] and all(scores.column("bureau_fallback").to_pylist())
    assert not any(scores.column("bureau_matched").to_pylist())
    model = load_model(trained)
    from bank_node.training import _design
    from protocols.features import FeatureRecipe

    recipe = FeatureRecipe.from_json(model["recipe"])
    u = _design(recipe, applicants(city, slice(0, 20))) @ np.array(model["weights"])
    slope, intercept = model["calibration"]["slope"], model["calibration"]["intercept"]
    expected = 1 / (1 + np.exp(-(slope * (u + model["neutral_bureau_score"]) + intercept)))
    np.testing.assert_allclose(scores.column("score").to_numpy(), expected, rtol=1e-12)


def test_data_products_for_a_client_file_are_the_bureaus_payloads(city, bureau, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    clients = applicants(city, slice(0, 300)).select(["uscc"])
    dirty = pa.table({"uscc": pa.array(["not-a-code", " " + clients.column(0)[0].as_py().lower()])})
    path = write(pa.concat_tables([clients, dirty]), tmp_path / "clients.csv")
    out = tmp_path / "products.csv"
    summary = lookup_job(address, path, "uscc", list(products.PRODUCTS), out, "bank-a")
    got = pacsv.read_csv(
        out,
        convert_options=pacsv.ConvertOptions(
            column_types={"uscc": pa.string(), "registration_industry_code": pa.string()},
            strings_can_be_null=True,
        ),
    )
    assert (
        got.column("uscc").to_pylist() == pa.concat_tables([clients, dirty]).column(0).to_pylist()
    )
    assert got.column_names == ["uscc"] + [
        c for p in products.PRODUCTS for c in products.columns(p)
    ]
    truth = ProductData.load(city["registry"], city["events"])
    rows = got.to_pylist()
    known = 0
    for row in rows[:300]:
        uscc = normalise_column(pa.array([row["uscc"]]), IdType.USCC)  # as the bank sends it
        payloads = {p: truth.payloads(p, uscc) for p in products.PRODUCTS}
        if not payloads["size_class"][1][0]:
            assert row["size_class"] is None
            continue
        known += 1
        for product, (payload, _) in payloads.items():
            expected = products.decode(product, payload[0].tobytes(), truth.data_date)
            for name, value in expected.items():
                seen = row[name]
                assert (str(seen) if seen is not None else None) == (
                    str(value) if value is not None else None
                ), (product, name)
    assert known == summary["known_to_bureau"] > 200
    assert rows[300]["size_class"] is None  # an invalid ID: empty, not dropped
    assert rows[301]["size_class"] == rows[0]["size_class"]  # a dirty spelling of a client
    # the bureau's configuration chooses each bank's products
    with pytest.raises(InputDataError, match="no table 'watch'"):
        lookup_job(address, path, "uscc", ["watch"], tmp_path / "b.csv", "bank-b")
    lookup_job(address, path, "uscc", ["size_class"], tmp_path / "b.csv", "bank-b")


class _ScriptedLookup:
    """A bureau's lookup service as a test scripts it: one ``watch`` table of ``entries``
    at ``version``, and the chunks it sends for each ``since_version``."""

    def __init__(self, entries: int, version: int, chunks: dict[int, list]) -> None:
        self.entries, self.version, self.chunks = entries, version, chunks
        self.fetched: list[int] = []  # since_version of every FetchTable call

    def ListTables(self, request, timeout, metadata):  # noqa: ANN001, N802
        info = lookup_pb2.TableInfo(
            product="watch", version=self.version, key_epoch=7, data_date="2026-01-01",
            entries=self.entries, payload_bytes=4,
        )  # fmt: skip
        return lookup_pb2.TableCatalogue(
            key_epoch=7, max_points=1024, tables=[info], bureau_id="ab" * 32, max_streams=0
        )

    def FetchTable(self, request, timeout, metadata):  # noqa: ANN001, N802
        self.fetched.append(request.since_version)
        return iter(self.chunks[request.since_version])


def _scripted_client(service: _ScriptedLookup, tables_dir: Path) -> LookupClient:
    connection = type("Connection", (), {"lookup": service, "metadata": (), "bank_id": "bank-a"})
    return LookupClient(connection, tables_dir=tables_dir)  # type: ignore[arg-type]


def _sealed_chunk(entries: list[tuple[bytes, bytes, int]], since: int, removed: bytes = b""):
    """The bureau's one chunk of ``(point, payload, revision)`` entries, sorted by tag."""
    revisions = np.array([r for _, _, r in entries], lookup.REVISION)
    tags, sealed = lookup.seal_chunk(
        b"".join(p for p, _, _ in entries), b"".join(q for _, q, _ in entries),
        revisions.tobytes(), 4, "watch", 7,
    )  # fmt: skip
    order = np.argsort(np.frombuffer(tags, lookup.TAG_ORDER), kind="stable")
    return lookup_pb2.TableChunk(
        offset=0,
        total=len(entries),
        tags=np.frombuffer(tags, lookup.TAG_ORDER)[order].tobytes(),
        sealed=np.frombuffer(sealed, np.uint8).reshape(len(entries), 20)[order].tobytes(),
        revisions=revisions[order].tobytes(),
        since_version=since,
        removed=removed,
    )


def test_a_table_updated_once_is_kept_and_not_downloaded_again(tmp_path):
    """A bank's lookups ran monthly: each month's update was saved with its tags in the
    wrong byte order, refused at the next run, and the whole table downloaded again. Now
    the updated table is kept: the next run opens it without a download."""
    points = [group.hash_to_group(b"id-%d" % i) for i in range(4)]
    first = [(points[0], b"aaaa", 1), (points[1], b"bbbb", 1), (points[2], b"cccc", 1)]
    changed = [(points[1], b"BBBB", 2), (points[3], b"dddd", 2)]  # and points[2] left
    service = _ScriptedLookup(3, 1, {0: [_sealed_chunk(first, 0)]})
    client = _scripted_client(service, tmp_path)
    assert client.table("watch").open(points) == [b"aaaa", b"bbbb", b"cccc", None]
    service.version, service.entries = 2, 3
    service.chunks[1] = [_sealed_chunk(changed, 1, lookup.lookup_tag(points[2]))]
    client.catalogue(refresh=True)
    assert client.table("watch").open(points) == [b"aaaa", b"BBBB", None, b"dddd"]
    assert service.fetched == [0, 1]
    # the next run: a new client finds the updated table kept, and downloads nothing
    again = _scripted_client(service, tmp_path).table("watch")
    assert service.fetched == [0, 1]
    assert again.open(points) == [b"aaaa", b"BBBB", None, b"dddd"]


def test_an_update_removing_more_enterprises_than_a_chunk_holds_comes_whole(tmp_path):
    """The tags gone since the bank's version all went in an update's first chunk: an update
    dropping most of a large city (a data file cut short) would have been one message over
    gRPC's 8 MiB limit, and the bank's copy could never be updated. They now come spread
    over the chunks, chunks of no rows at the end if they outnumber the changed rows."""
    points = [group.hash_to_group(b"id-%d" % i) for i in range(5)]
    first = [(p, b"%04d" % i, 1) for i, p in enumerate(points)]
    service = _ScriptedLookup(5, 1, {0: [_sealed_chunk(first, 0)]})
    client = _scripted_client(service, tmp_path)
    assert client.table("watch").open(points[:1]) == [b"0000"]
    gone = [lookup.lookup_tag(p) for p in points[1:]]
    head = _sealed_chunk([(points[0], b"AAAA", 2)], 1, b"".join(gone[:2]))
    tail = lookup_pb2.TableChunk(offset=1, total=1, since_version=1, removed=b"".join(gone[2:]))
    service.version, service.entries = 2, 1
    service.chunks[1] = [head, tail]
    client.catalogue(refresh=True)
    assert client.table("watch").open(points) == [b"AAAA", None, None, None, None]


def test_removed_tags_the_banks_copy_never_held_are_passed_over(tmp_path):
    """A review: the bureau's update also names enterprises that joined after the bank's
    version and left again; a bound of the removed tags by the bank's copy then refused
    every update of a table that grew and shrank back, for good. Tags the copy does not hold
    are passed over (and so are a hostile bureau's made-up ones, without being kept)."""
    points = [group.hash_to_group(b"id-%d" % i) for i in range(10)]
    service = _ScriptedLookup(2, 1, {0: [_sealed_chunk([(p, b"aaaa", 1) for p in points[:2]], 0)]})
    client = _scripted_client(service, tmp_path)
    client.table("watch")
    came_and_went = b"".join(lookup.lookup_tag(p) for p in points[2:])  # in v2, gone in v3
    update = lookup_pb2.TableChunk(offset=0, total=0, since_version=1, removed=came_and_went)
    service.version, service.entries = 3, 2
    service.chunks[1] = [update, update]
    client.catalogue(refresh=True)
    table = client.table("watch")
    assert table.version.version == 3 and table.open(points[:3]) == [b"aaaa", b"aaaa", None]
    assert service.fetched == [0, 1]


@given(
    rows=st.integers(0, 40),
    gone=st.integers(0, 40),
    size=st.integers(1, 9),
)
def test_a_sealed_tables_chunks_carry_every_row_and_removed_tag_once(rows, gone, size):
    """The bureau's side of the above: every changed row and removed tag in order, at most
    ``size`` of each per chunk, offsets contiguous."""
    from bureau_node.lookup_tables import SealedTable

    n = 50
    table = SealedTable(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        np.arange(n, dtype=lookup.TAG_ORDER),
        np.zeros((n, 20), np.uint8),
        np.ones(n, lookup.REVISION),
        np.zeros(0, [("tag", lookup.TAG_ORDER), ("at", "<u4")]),
    )
    changed = np.arange(rows) + 3
    removed = np.arange(1000, 1000 + gone, dtype=lookup.TAG_ORDER).tobytes()
    chunks = list(table.chunks(changed, removed, size))
    filled = 0
    for offset, tags, _, _, part in chunks:
        assert offset == filled
        filled += len(tags) // 8
        assert len(tags) // 8 <= size and len(part) // 8 <= size
    assert filled == rows
    assert b"".join(c[1] for c in chunks) == table.tags[changed].tobytes()
    assert b"".join(c[4] for c in chunks) == removed
    assert len(chunks) == max(1, -(-rows // size), -(-gone // size))


@pytest.mark.parametrize("entries", [2**40, 2**63])
def test_a_bureau_announcing_a_table_too_large_to_hold_is_refused_before_the_download(
    tmp_path, entries
):
    """A hostile bureau listed a table of 2**40 entries (or 2**63, which overflowed the
    download's timeout): the bank allocated memory for all of them and died of a
    MemoryError. Now its catalogue is refused with the announced size, nothing fetched."""
    from protocols.errors import ProtocolViolation

    head = lookup_pb2.TableChunk(offset=0, total=entries, since_version=0)
    service = _ScriptedLookup(entries, 1, {0: [head]})
    with pytest.raises(ProtocolViolation, match=f"{entries:,} entries"):
        _scripted_client(service, tmp_path).table("watch")
    assert service.fetched == []
