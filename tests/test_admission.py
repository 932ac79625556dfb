"""Admission of streaming calls (bureau_node.admission) on a real node over loopback gRPC and
mutual TLS: a bank holding silent streaming calls (the review's attack: Exponentiate calls
that never send a message) holds at most its own bound of the bureau's threads; its extra
calls, and calls beyond the bureau's total, are refused at once and charged nothing;
another bank's calls are served as ever; and a call idle on its bank is cancelled."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pyarrow.csv as pacsv
import pytest

from bank_node.client import BureauConnection, run_psi
from bureau_node.admission import (
    REQUEST_WAITS_ANY_AGE_PER_BANK,
    REQUEST_WAITS_PER_BANK,
    CallPool,
)
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime.transport import certs
from node_runtime.transport.certs import BUREAU_NAME
from node_runtime.transport.channels import bank_metadata
from protocols import psi
from protocols import vertical_lr as vlr
from protocols.ids import IdType, prepare_ids
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import lookup_pb2, lookup_pb2_grpc
from xinrong.v1 import model_pb2 as mpb
from xinrong.v1 import psi_pb2 as pb

BANKS = ("bank-a", "bank-b", "bank-c")
QUOTA = 400  # bank-a's daily_psi_ids


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("admission")
    certs.init_ca(root / "tls")
    for bank in BANKS:
        certs.issue_bank(root / "tls", bank)
    city = write_city(generate_city(3000, 600, seed=3, graph=False), root / "city")
    config = root / "bureau.toml"
    config.write_text(
        f"[defaults]\nmax_streams = 3\n\n[banks.bank-a]\ndaily_psi_ids = {QUOTA}\n\n"
        "[banks.bank-b]\n\n[banks.bank-c]\nmax_streams = 4\n"
    )
    return {"root": root, "config": config, **city}


def _node(setting: dict[str, Path], state: str, **kwargs: float) -> BureauNode:
    node = BureauNode(
        setting["bureau"],
        "uscc",
        setting["root"] / state,
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
        tls_dir=setting["root"] / "tls",
        config=setting["config"],
        registry=setting["registry"],
        events=setting["events"],
        **kwargs,  # type: ignore[arg-type]
    )
    node.start("127.0.0.1:0")
    return node


@pytest.fixture(scope="module")
def bureau(setting):
    node = _node(setting, "state", streams_total=6)
    yield node
    node.stop()


def _connect(stack: ExitStack, node: BureauNode, setting, bank: str) -> BureauConnection:
    return stack.enter_context(
        BureauConnection(
            f"127.0.0.1:{node.port}", bank, tls_dir=setting["root"] / "tls" / "banks" / bank
        )
    )


def _until(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def _silent(silence: threading.Event) -> Iterator[object]:
    """A request stream that sends nothing until ``silence`` is set."""
    return iter(silence.wait, True)


def _served_quickly(connection: BureauConnection) -> float:
    """Seconds to answer a unary call. A call starved of threads waits for its 5 s deadline
    (and fails); the bound the tests put is 4 s, far above a loaded machine's pauses."""
    started = time.monotonic()
    connection.catalogue.ListFeatures(
        mpb.ListFeaturesRequest(), timeout=5, metadata=connection.metadata
    )
    return time.monotonic() - started


def _records(node: BureauNode, since: int) -> list[dict]:
    return AuditLog(node.store.root).records()[since:]


def _bank_ids(setting, count: int) -> list[str]:
    column = pacsv.read_csv(setting["bank"]).column("uscc")
    return prepare_ids(column, IdType.USCC).ids[:count]


def test_one_bank_holding_silent_streams_cannot_stall_the_bureau(bureau, setting):
    streams = bureau.admission.streams
    silence = threading.Event()
    with ExitStack() as stack:
        a = _connect(stack, bureau, setting, "bank-a")
        b = _connect(stack, bureau, setting, "bank-b")
        before = len(AuditLog(bureau.store.root).records())
        # the attack: many calls that never send a message, each meant to hold a thread
        calls = [a.psi.Exponentiate(_silent(silence), metadata=a.metadata) for _ in range(12)]
        calls += [
            a.binning.BinLabels.future(_silent(silence), metadata=a.metadata) for _ in range(4)
        ]
        _until(lambda: sum(c.done() for c in calls) == len(calls) - 3)
        assert streams.count("bank-a") == 3
        refused = [c for c in calls if c.done()]
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all("max_streams 3" in c.details() for c in refused)
        # a server-streaming call is refused before its servicer runs: nothing is charged
        with pytest.raises(grpc.RpcError) as err:
            list(a.psi.OpenSession(pb.OpenSessionRequest(bank_set_size=QUOTA), timeout=10,
                                   metadata=a.metadata))  # fmt: skip
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # every refusal is on record under its service's event, naming the method
        records = [r for r in _records(bureau, before) if r["outcome"] != "OK"]
        assert len(records) == len(refused) + 1
        assert {(r["bank_id"], r["event"], r["outcome"]) for r in records} == {
            ("bank-a", "psi", "RESOURCE_EXHAUSTED"),
            ("bank-a", "information_value", "RESOURCE_EXHAUSTED"),
        }
        assert "/xinrong.v1.Binning/BinLabels" in {
            json.loads(r["details"])["method"] for r in records
        }
        # another bank: its unary calls do not wait, and it runs a whole PSI session
        assert max(_served_quickly(b) for _ in range(5)) < 4.0
        assert len(run_psi(b, _bank_ids(setting, 50), psi.Reveal.BOTH).matched_ids) > 0
        # bank-a itself is still served unary calls
        assert _served_quickly(a) < 4.0
        silence.set()
        for c in calls:
            c.cancel()
        _until(lambda: streams.count() == 0)
        # the refused OpenSession charged nothing: the whole quota is still there
        result = run_psi(a, _bank_ids(setting, QUOTA), psi.Reveal.BOTH)
        assert len(result.matched_ids) > 0


def test_the_bureaus_total_leaves_other_banks_unary_calls_their_threads(bureau, setting):
    streams, lookups = bureau.admission.streams, bureau.admission.lookup
    assert streams.total == 6
    silence = threading.Event()
    with ExitStack() as stack:
        a, b, c = (_connect(stack, bureau, setting, bank) for bank in BANKS)
        held = [a.psi.Exponentiate(_silent(silence), metadata=a.metadata) for _ in range(3)]
        held += [c.psi.Exponentiate(_silent(silence), metadata=c.metadata) for _ in range(3)]
        _until(lambda: streams.count() == 6)
        # within bank-c's own bound (4), but beyond the bureau's total (6)
        extra = c.psi.Exponentiate(_silent(silence), metadata=c.metadata)
        _until(extra.done)
        assert extra.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the bureau holds 6 streaming calls of all banks" in extra.details()
        with pytest.raises(grpc.RpcError) as err:
            b.binning.BinLabels(_silent(silence), timeout=10, metadata=b.metadata)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # unary calls find threads; and lookup streams are a pool of their own
        assert max(_served_quickly(b) for _ in range(5)) < 4.0
        lookup_stream = b.lookup.EvaluateStream(_silent(silence), metadata=b.metadata)
        _until(lambda: lookups.count("bank-b") == 1)
        assert not lookup_stream.done()
        silence.set()
        for call in [*held, lookup_stream]:
            call.cancel()
        _until(lambda: streams.count() == 0 and lookups.count() == 0)


def _bank_channel(node: BureauNode, setting, bank: str, *options: tuple) -> grpc.Channel:
    """A bank's own mutual-TLS channel to the node, with the stock client's options."""
    tls = certs.bank_files(setting["root"] / "tls" / "banks" / bank)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    return grpc.secure_channel(
        f"127.0.0.1:{node.port}",
        credentials,
        options=[("grpc.ssl_target_name_override", BUREAU_NAME), *options],
    )


def _headers_only(node: BureauNode, setting, bank: str, method: str, silence: threading.Event):
    """The review's attack with the stock client: a unary or server-streaming method opened
    as client-streaming, whose request message never comes (only the call's headers)."""
    channel = _bank_channel(node, setting, bank)
    call = channel.stream_unary(method, request_serializer=lambda m: m.SerializeToString())
    return call.future(_silent(silence), metadata=bank_metadata(bank))


def test_calls_whose_request_never_comes_hold_a_bounded_few_threads(setting):
    """gRPC Python awaits a unary call's request message in a pool thread before any of the
    bureau's code runs: a review's 70 calls of headers alone, from one bank or a name the
    bureau does not serve, took all 64 threads and other banks' calls timed out. Such a wait
    is now admitted like a stream: a caller the bureau does not serve is refused at once; a
    bank's waits older than the grace beyond its bound are cancelled, and its new calls
    refused while it holds that many (on record); other banks are served meanwhile; and a
    wait is cancelled after its idle time."""
    certs.issue_bank(setting["root"] / "tls", "bank-z")  # a certificate, not in the config
    node = _node(setting, "state-headers")
    waits = node.admission.requests
    silence = threading.Event()
    try:
        before = len(_records(node, 0))
        calls = [
            _headers_only(node, setting, "bank-a", method, silence)
            for method in ["/xinrong.v1.Catalogue/ListFeatures"] * 6
            + ["/xinrong.v1.PrivateSetIntersection/OpenSession"] * 4
        ]
        # all admitted inside the grace; then all but the bound's oldest cancelled
        _until(lambda: sum(c.done() for c in calls) == len(calls) - REQUEST_WAITS_PER_BANK)
        assert waits.count("bank-a") == REQUEST_WAITS_PER_BANK
        ended = [c for c in calls if c.done()]
        assert {c.code() for c in ended} == {grpc.StatusCode.CANCELLED}
        late = _headers_only(node, setting, "bank-a", "/xinrong.v1.Catalogue/ListFeatures", silence)
        _until(late.done, 5)
        assert late.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "request message has not come" in late.details()
        stranger = _headers_only(
            node, setting, "bank-z", "/xinrong.v1.Catalogue/ListFeatures", silence
        )
        _until(stranger.done, 5)
        assert stranger.code() is grpc.StatusCode.PERMISSION_DENIED
        records = [r for r in _records(node, before) if r["event"] == "call"]
        assert {(r["bank_id"], r["outcome"]) for r in records} == {
            ("bank-a", "RESOURCE_EXHAUSTED"),
            ("bank-z", "PERMISSION_DENIED"),
        }
        reaped = [r for r in _records(node, before) if r["event"] == "call_ended"]
        assert len(reaped) == len(ended)
        with ExitStack() as stack:
            b = _connect(stack, node, setting, "bank-b")
            assert max(_served_quickly(b) for _ in range(5)) < 4.0
            assert len(run_psi(b, _bank_ids(setting, 50), psi.Reveal.BOTH).matched_ids) > 0
        # the waits end after their idle time, on record
        waits.idle_seconds = 0.5
        _until(lambda: waits.count() == 0)
        _until(lambda: all(c.done() for c in calls))
        assert {c.code() for c in calls if c not in ended} == {grpc.StatusCode.CANCELLED}
    finally:
        silence.set()
        node.stop()


def test_calls_cancelled_inside_the_grace_hold_a_bounded_number_of_threads(setting):
    """A second review: calls of headers alone, each cancelled just before it counted as
    old and opened again, were never refused nor recorded, and one bank's 250 of them took
    every thread. A bank's waits of any age are bounded too (above an honest bank's peak),
    and a call cancelled before its message is on record."""
    node = _node(setting, "state-grace")
    waits = node.admission.requests
    silence = threading.Event()
    try:
        before = len(_records(node, 0))
        calls = [
            _headers_only(node, setting, "bank-a", "/xinrong.v1.Catalogue/ListFeatures", silence)
            for _ in range(REQUEST_WAITS_ANY_AGE_PER_BANK + 6)
        ]
        _until(lambda: sum(c.done() for c in calls) == 6, 1.8)  # inside the grace
        refused = [c for c in calls if c.done()]
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all("request message has not come, the most" in c.details() for c in refused)
        assert waits.count("bank-a") == REQUEST_WAITS_ANY_AGE_PER_BANK
        for c in calls:
            c.cancel()
        _until(lambda: waits.count() == 0)
        # (a cancel can also read as the stream ending without a message, as gRPC tells it)
        ended = {("call", "CANCELLED"), ("call", "INVALID_ARGUMENT")}
        cancelled = lambda: [  # noqa: E731
            r for r in _records(node, before) if (r["event"], r["outcome"]) in ended
        ]
        _until(lambda: len(cancelled()) == REQUEST_WAITS_ANY_AGE_PER_BANK)
    finally:
        silence.set()
        node.stop()


def test_a_banks_many_concurrent_unary_calls_are_all_served(bureau, setting):
    """A review: a bound on calls between their admission and their message refused honest
    concurrent calls of one bank (399 of 640 `ListFeatures` at 32 threads), since each is in
    that window for a moment. Only waits older than the grace count."""
    with ExitStack() as stack:
        a = _connect(stack, bureau, setting, "bank-a")
        failures: list[BaseException] = []

        def calls() -> None:
            for _ in range(20):
                try:
                    a.catalogue.ListFeatures(
                        mpb.ListFeaturesRequest(), timeout=30, metadata=a.metadata
                    )
                except grpc.RpcError as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=calls) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def _slow_reader(node: BureauNode, setting, bank: str) -> lookup_pb2_grpc.PrivateLookupStub:
    """A bank's channel that announces no more than HTTP/2's initial window: once it stops
    reading, the bureau's send waits (a large table would do the same on any channel)."""
    channel = _bank_channel(node, setting, bank, ("grpc.http2.bdp_probe", 0))
    return lookup_pb2_grpc.PrivateLookupStub(channel)


def test_a_call_idle_on_its_bank_is_cancelled_and_a_busy_one_is_not(setting):
    node = _node(setting, "state-idle", stream_idle_seconds=1.0)
    try:
        streams = node.admission.streams
        silence = threading.Event()
        with ExitStack() as stack:
            a = _connect(stack, node, setting, "bank-b")
            before = len(AuditLog(node.store.root).records())
            # no request message received: cancelled, and on record saying why
            started = time.monotonic()
            quiet = a.psi.Exponentiate(_silent(silence), metadata=a.metadata)
            _until(quiet.done)
            assert quiet.code() is grpc.StatusCode.CANCELLED
            assert 1.0 <= time.monotonic() - started < 10

            def ended() -> list[dict]:
                return [r for r in _records(node, before) if r["outcome"] == "CANCELLED"]

            # the servicer records its end as its thread unwinds, after the bank saw it
            _until(lambda: len(_records(node, before)) >= 2)
            assert len(ended()) == 2, _records(node, before)
            assert sorted(r["event"] for r in ended()) == ["call_ended", "psi"]
            details = {r["event"]: json.loads(r["details"]) for r in ended()}
            assert "the bureau ended this call" in details["psi"]["error"]
            assert (
                details["call_ended"]["method"] == "/xinrong.v1.PrivateSetIntersection/Exponentiate"
            )
            # no response message taken: a table download whose reader stopped
            stub = _slow_reader(node, setting, "bank-b")
            metadata = bank_metadata("bank-b")
            catalogue = stub.ListTables(lookup_pb2.ListTablesRequest(), metadata=metadata)
            info = next(t for t in catalogue.tables if t.product == "size_class")
            download = stub.FetchTable(
                lookup_pb2.FetchTableRequest(
                    product=info.product, version=info.version, key_epoch=info.key_epoch
                ),
                metadata=metadata,
            )
            _until(lambda: streams.count("bank-b") == 1, 5)
            _until(lambda: streams.count("bank-b") == 0)
            with pytest.raises(grpc.RpcError) as err:
                list(download)
            assert err.value.code() is grpc.StatusCode.CANCELLED
            _until(lambda: len(ended()) == 3)
            assert ended()[-1]["event"] == "call_ended"
            # a bank that keeps its messages flowing is not idle, however long it runs
            assert len(run_psi(a, _bank_ids(setting, 300), psi.Reveal.BOTH).matched_ids) > 0
            silence.set()
    finally:
        node.stop()


def test_only_time_spent_waiting_on_the_bank_counts_as_idle():
    now = [0.0]
    pool = CallPool("streaming calls", "max_streams", 4, idle_seconds=10.0, clock=lambda: now[0])

    class Context:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    working, waiting = Context(), Context()
    busy = pool.open("bank-a", "/x/Busy", working, cap=2)  # type: ignore[arg-type]
    idle = pool.open("bank-a", "/x/Idle", waiting, cap=2)  # type: ignore[arg-type]
    idle.waiting()
    now[0] = 9.0
    busy.waiting()  # a moment on the bank, then the bureau's own work again
    now[0] = 9.5
    busy.working()
    now[0] = 60.0
    assert pool.reap() == [idle]
    assert waiting.cancelled and not working.cancelled
    assert idle.reaped is not None and "waited 60 s" in idle.reaped
    assert pool.count("bank-a") == 1
