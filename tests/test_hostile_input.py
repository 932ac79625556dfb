"""Messages a bank should never send, each against a real bureau node over loopback gRPC:
refused with a precise status before anything is charged or kept, and no stream held open
by them. (A review, 2026-12-01, sent each of these.)"""

from __future__ import annotations

import json
import time

import grpc
import pytest

from bank_node.client import BureauConnection, run_psi
from bank_node.toolkit import _label_chunks
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime import tables
from protocols import group, psi
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import PeerError
from protocols.ids import IdType, prepare_ids
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import lookup_pb2 as lpb
from xinrong.v1 import model_pb2 as pb

BANK = "bank-h"
CONFIG = """
[banks.bank-h]

[banks.bank-few-sessions]
daily_psi_sessions = 2
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "bureau.toml").write_text(CONFIG)
    city = write_city(generate_city(2000, 500, seed=31), root / "city")
    ids = tables.read_table(city["bank"], "uscc", columns=[]).column("uscc")
    with BureauNode(
        city["bureau"],
        "uscc",
        root / "state",
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
        config=root / "bureau.toml",
    ) as bureau:
        bureau.start("127.0.0.1:0")
        bureau.bank_ids = prepare_ids(ids, IdType.USCC).ids  # type: ignore[attr-defined]
        yield bureau


def _connect(node: BureauNode, bank: str = BANK) -> BureauConnection:
    return BureauConnection(f"127.0.0.1:{node.port}", bank)


def _usage(node: BureauNode, bank: str = BANK) -> dict[str, float]:
    node.access.flush()
    files = sorted((node.access.root / bank).glob("usage-*.json"))
    return json.loads(files[-1].read_text()) if files else {}


def test_lookup_points_that_are_not_group_elements_are_refused_before_the_charge(node):
    """Three requests of malformed points (the identity, a non-canonical string, a valid
    point beside the identity) were each refused, but charged to the day's lookups and
    recorded OK beside the refusal. Now refused first: nothing charged, one record each."""
    before = len(AuditLog(node.store.root).records())
    good = group.hash_to_group(b"an enterprise")
    with _connect(node) as connection:
        epoch = connection.lookup.ListTables(
            lpb.ListTablesRequest(), metadata=connection.metadata, timeout=30
        ).key_epoch
        for points in (group.IDENTITY, b"\xff" * 32, good + group.IDENTITY):
            with pytest.raises(grpc.RpcError) as err:
                connection.lookup.Evaluate(
                    lpb.BlindedPoints(key_epoch=epoch, points=points),
                    metadata=connection.metadata,
                    timeout=30,
                )
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid Ristretto255 element" in err.value.details()
    assert _usage(node).get("daily_lookup_ids", 0) == 0
    outcomes = [(r["event"], r["outcome"]) for r in AuditLog(node.store.root).records()[before:]]
    assert outcomes == [("lookup", "INVALID_ARGUMENT")] * 3


def test_an_empty_chunk_of_labels_after_the_first_ends_the_iv_request(node):
    """A review kept an IV stream open past the bureau's idle limit, doing nothing, with an
    empty chunk of labels now and then. Only the first chunk (the settings) may be empty."""
    public, private = he.generate_keypair(768, allow_test_keys=True)
    with _connect(node) as connection:
        session = run_psi(connection, node.bank_ids, psi.Reveal.BOTH)
        total = len(session.matched_ids)
        labels = he.OwnerEncryptor(private).encrypt([0] * 10)
        settings, ten = _label_chunks(session.session_id, public, he.prove_key(private),
                                      labels, 10, [], total)  # fmt: skip
        empty = pb.EncryptedLabels(offset=10, total=total, labels=b"")
        with pytest.raises(grpc.RpcError) as err:
            connection.binning.BinLabels(
                iter([settings, ten, empty]), metadata=connection.metadata, timeout=60
            )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "empty chunk of labels" in err.value.details()


def test_psi_sessions_a_day_are_counted(node):
    """Each session may download the bureau's whole tag table: a review's sessions of one ID
    each made it stream 40 tables for 20 IDs. Sessions a bank opens a day are a quota."""
    with _connect(node, "bank-few-sessions") as connection:
        for _ in range(2):
            run_psi(connection, node.bank_ids[:50], psi.Reveal.BANK)
        with pytest.raises(PeerError, match="RESOURCE_EXHAUSTED.*2 daily_psi_sessions"):
            run_psi(connection, node.bank_ids[:50], psi.Reveal.BANK)
    assert _usage(node, "bank-few-sessions") == {"daily_psi_ids": 100, "daily_psi_sessions": 2}


def test_a_bank_hanging_up_while_the_bureau_prepares_is_on_record(node, monkeypatch):
    """The first session of a key epoch waits minutes for the bureau's preparation at ten
    million enterprises, and is charged first. A review hung up meanwhile: charged, with no
    session and nothing on record. The charge is on record now, as cancelled."""
    from node_runtime.transport import codec as psi_codec

    real = node.store.prepare_bank

    def slow(bank_id, executor=None):
        for done in range(50):
            time.sleep(0.1)
            yield (done, 50)
        yield from real(bank_id, executor)

    monkeypatch.setattr(node.store, "prepare_bank", slow)
    before = len(AuditLog(node.store.root).records())
    request = psi_codec.psi_request_to_proto(psi.PsiRequest(40, psi.Reveal.BOTH))
    with _connect(node) as connection:
        call = connection.psi.OpenSession(request, metadata=connection.metadata, timeout=60)
        assert next(call).WhichOneof("update") == "progress"
        call.cancel()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        records = AuditLog(node.store.root).records()[before:]
        if records:
            break
        time.sleep(0.1)
    assert [(r["event"], r["outcome"]) for r in records] == [("psi_opened", "CANCELLED")]
    assert json.loads(records[0]["details"]) == {"bank_ids": 40}


def test_refusals_of_nothing_stay_within_the_callers_budget_and_messages_are_bounded(node):
    """A review's 400 refused `OpenSession` calls (and `DeleteModel` alike) were each
    recorded, past the refusal budget that bounds how fast a caller writes the audit log;
    and a 1 MB protocol name came back whole in the refusal (and in the bureau's log), which
    the bank's gRPC then reported as RESOURCE_EXHAUSTED."""
    from bureau_node.audit import RefusalBudget
    from node_runtime.transport import codec as psi_codec
    from xinrong.v1 import model_pb2 as mpb

    assert node.audit is not None
    budget = node.audit.refusals
    node.audit.refusals = RefusalBudget(burst=5, per_second=1e-9)
    before = len(AuditLog(node.store.root).records())
    request = psi_codec.psi_request_to_proto(psi.PsiRequest(10, psi.Reveal.BOTH))
    request.protocol = "x" * 1_000_000
    try:
        with _connect(node, "bank-few-sessions") as connection:
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as err:
                    list(connection.psi.OpenSession(request, metadata=connection.metadata))
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert len(err.value.details()) < 300
                with pytest.raises(grpc.RpcError):
                    connection.scoring.DeleteModel(
                        mpb.DeleteModelRequest(model_id="0" * 32), metadata=connection.metadata
                    )
    finally:
        node.audit.refusals = budget
    records = AuditLog(node.store.root).records()[before:]
    assert len(records) <= 5 + 1  # the budget, and the count of those beyond it
    assert _usage(node, "bank-few-sessions").get("daily_psi_sessions", 0) <= 2


def test_a_list_of_feature_names_longer_than_the_catalogue_is_refused_unread(node):
    """A review sent 1,150,000 distinct names in one 8 MB `CheckIvBudget` (no session, no
    quota needed): each call built them all and joined every unknown one into its message,
    and 16 at once took the bureau from 209 MB to 2 GB. A list longer than the catalogue is
    refused before it is read; a message names at most five unknown features."""
    names = [f"f{i}" for i in range(20_000)]
    with _connect(node) as connection:
        with pytest.raises(grpc.RpcError) as err:
            connection.binning.CheckIvBudget(
                pb.IvBudgetRequest(features=names), metadata=connection.metadata, timeout=30
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "20,000 features named, more than the bureau's catalogue holds" in (
            err.value.details()
        )
        with pytest.raises(grpc.RpcError) as err:
            connection.binning.CheckIvBudget(
                pb.IvBudgetRequest(features=names[:8]), metadata=connection.metadata, timeout=30
            )
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "f0, f1, f2, f3, f4 and 3 more" in err.value.details()


def test_a_plan_for_a_session_that_does_not_exist_is_refused_before_its_key_is_checked(
    node, monkeypatch
):
    """A review resent one valid plan with a 4,096-bit key naming a session that does not
    exist: each was refused `NOT_FOUND` and charged nothing, after the bureau had checked the
    key's proof (0.15 s of its CPU, 140 times the bank's). The session is looked up first;
    likewise for an IV request's labels."""
    from node_runtime.transport import model_codec

    checked: list[int] = []
    real = model_codec.key_from_bytes
    monkeypatch.setattr(
        model_codec, "key_from_bytes", lambda *a, **k: checked.append(1) or real(*a, **k)
    )
    public, _ = he.generate_keypair(768, allow_test_keys=True)
    plan = pb.TrainingPlan(
        job_id="a" * 32,
        psi_session_id="nope",
        rows=100,
        bank_public_key=public.n.to_bytes(96, "big"),
        optimizer=pb.OptimizerSettings(name="adam"),
    )
    labels = pb.EncryptedLabels(psi_session_id="nope", total=100, max_bins=10)
    with _connect(node) as connection:
        with pytest.raises(grpc.RpcError) as start:
            connection.training.StartTraining(plan, metadata=connection.metadata, timeout=30)
        with pytest.raises(grpc.RpcError) as binned:
            connection.binning.BinLabels(iter([labels]), metadata=connection.metadata, timeout=30)
    assert start.value.code() is binned.value.code() is grpc.StatusCode.NOT_FOUND
    assert checked == []
    # a session of the bank's own, and a wrong row count: refused before its IDs are read
    # (a review's 70-byte plans naming a session of 1,000,000 IDs cost 0.11 s and 400 MB each)
    read: list[str] = []
    real_ids = node.store.session_matched_ids
    monkeypatch.setattr(
        node.store, "session_matched_ids", lambda *a: read.append(a[1]) or real_ids(*a)
    )
    with _connect(node) as connection:
        session = run_psi(connection, node.bank_ids[:200], psi.Reveal.BOTH)
        plan.psi_session_id = labels.psi_session_id = session.session_id
        plan.rows = labels.total = len(session.matched_ids) + 1
        with pytest.raises(grpc.RpcError) as start:
            connection.training.StartTraining(plan, metadata=connection.metadata, timeout=30)
        with pytest.raises(grpc.RpcError) as binned:
            connection.binning.BinLabels(iter([labels]), metadata=connection.metadata, timeout=30)
    assert start.value.code() is binned.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert checked == [] and read == []
