"""Every RPC driven with malformed, truncated, oversized and out-of-range messages: each gets
a precise status (never UNKNOWN or INTERNAL), and the bureau goes on serving."""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_node.jobs import psi_job
from bureau_node.server import BureauNode
from node_runtime.transport.channels import bank_metadata, open_channel
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.optim import OptimizerConfig
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import lookup_pb2 as lpb
from xinrong.v1 import lookup_pb2_grpc, model_pb2_grpc, psi_pb2_grpc
from xinrong.v1 import model_pb2 as mpb
from xinrong.v1 import psi_pb2 as ppb

PRECISE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
}
META = bank_metadata("fuzz-bank")
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    city = write_city(generate_city(3000, 900, seed=6), root / "city")
    node = BureauNode(
        city["bureau"],
        "uscc",
        root / "state",
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    )
    node.start("127.0.0.1:0")
    address = f"127.0.0.1:{node.port}"
    session = psi_job(address, city["bank"], "uscc", root / "m.csv", "fuzz-bank", workers=0)
    channel = open_channel(address)
    yield {
        "model": ModelStubs(channel),
        "psi": psi_pb2_grpc.PrivateSetIntersectionStub(channel),
        "lookup": lookup_pb2_grpc.PrivateLookupStub(channel),
        "session": session.session_id,
        "rows": session.intersection,
    }
    channel.close()
    node.stop()


class ModelStubs:
    """Every RPC of the bureau's model services (catalogue, training, binning, scoring)."""

    def __init__(self, channel) -> None:
        for stub in (
            model_pb2_grpc.CatalogueStub,
            model_pb2_grpc.JointTrainingStub,
            model_pb2_grpc.BinningStub,
            model_pb2_grpc.ScoringStub,
        ):
            vars(self).update(vars(stub(channel)))


def _precise(call) -> None:
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() in PRECISE, (err.code(), err.details())


def _still_serving(world) -> None:
    world["model"].ListFeatures(mpb.ListFeaturesRequest(), metadata=META, timeout=10)


anything = st.binary(max_size=700)
numbers = st.one_of(st.integers(0, 2**32 - 1))
floats = st.floats(allow_nan=True, allow_infinity=True)


@FUZZ
@given(
    rows=numbers,
    columns=st.integers(0, 20000),
    fraction=floats,
    batch=numbers,
    epochs=st.integers(0, 10**6),
    key=anything,
    name=st.text(max_size=8),
    lr=floats,
    job=st.text(max_size=40),
    seed=st.integers(0, 2**64 - 1),
)
def test_training_plans(world, rows, columns, fraction, batch, epochs, key, name, lr, job, seed):
    plan = mpb.TrainingPlan(
        job_id=job,
        psi_session_id=world["session"],
        rows=rows,
        bank_columns=columns,
        validation_fraction=fraction,
        seed=seed,
        batch_size=batch,
        max_epochs=epochs,
        optimizer=mpb.OptimizerSettings(name=name, learning_rate=lr),
        bank_public_key=key,
    )
    _precise(lambda: world["model"].StartTraining(plan, metadata=META, timeout=30))
    _still_serving(world)


@FUZZ
@given(
    job=st.text(max_size=40),
    epoch=numbers,
    batch=st.integers(-(2**31), 2**31 - 1),
    blob=anything,
    count=numbers,
)
def test_steps_of_unknown_or_malformed_jobs(world, job, epoch, batch, blob, count):
    step = mpb.Step(job_id=job, epoch=epoch, batch=batch)
    stub = world["model"]
    _precise(
        lambda: list(
            stub.TrainingStep(
                mpb.EncryptedResiduals(step=step, residuals=blob, weight_share=blob[:512]),
                metadata=META,
                timeout=10,
            )
        )
    )
    _precise(
        lambda: stub.Decrypt(
            mpb.MaskedValues(step=step, count=count, ciphertexts=blob), metadata=META, timeout=10
        )
    )
    _precise(
        lambda: stub.FinishTraining(
            mpb.FinishRequest(
                job_id=job, epoch=epoch, weight_share=[blob.hex()[:40], str(count), "-"]
            ),
            metadata=META,
            timeout=10,
        )
    )
    _precise(
        lambda: stub.ResumeTraining(
            mpb.ResumeRequest(job_id=job, epoch=epoch), metadata=META, timeout=10
        )
    )
    _still_serving(world)


@pytest.fixture(scope="module")
def live_job(world):
    """A real job, started with a good plan, for garbage aimed at its steps."""
    pub, priv = he.generate_keypair(768, allow_test_keys=True)
    plan = vlr.TrainingPlan(
        "f" * 32, world["session"], world["rows"], 7, 0.2, 1, 128, 2, OptimizerConfig(), (), pub,
        bank_key_proof=he.prove_key(priv),
    )  # fmt: skip
    from node_runtime.transport import model_codec

    world["model"].StartTraining(model_codec.plan_to_proto(plan), metadata=META, timeout=60)
    return plan


@FUZZ
@given(blob=anything, count=st.integers(0, 40), batch=st.integers(-1, 3))
def test_garbage_at_a_live_job(world, live_job, blob, count, batch):
    step = mpb.Step(job_id=live_job.job_id, epoch=0, batch=batch)
    stub = world["model"]
    _precise(
        lambda: list(
            stub.TrainingStep(
                mpb.EncryptedResiduals(step=step, residuals=blob, weight_share=blob[::-1]),
                metadata=META,
                timeout=30,
            )
        )
    )
    _precise(
        lambda: stub.Decrypt(
            mpb.MaskedValues(step=step, count=count, ciphertexts=blob), metadata=META, timeout=30
        )
    )
    _precise(
        lambda: stub.FinishTraining(
            mpb.FinishRequest(
                job_id=live_job.job_id, epoch=0, weight_share=[str(count)] * (count % 9)
            ),
            metadata=META,
            timeout=30,
        )
    )
    _still_serving(world)


@FUZZ
@given(
    model=st.text(max_size=40),
    session=st.text(max_size=40),
    points=st.booleans(),
    base=floats,
    pdo=floats,
    odds=floats,
    slope=floats,
    labels=anything,
    total=numbers,
    bins=numbers,
    key=anything,
)
def test_scoring_scorecards_and_binning(
    world, model, session, points, base, pdo, odds, slope, labels, total, bins, key
):
    stub = world["model"]
    _precise(
        lambda: list(
            stub.ScoreApplicants(
                mpb.ScoreRequest(model_id=model, psi_session_id=session, points=points),
                metadata=META,
                timeout=10,
            )
        )
    )
    _precise(
        lambda: stub.MakeScorecard(
            mpb.ScorecardRequest(
                model_id=model, base_score=base, pdo=pdo, base_odds=odds, slope=slope
            ),
            metadata=META,
            timeout=10,
        )
    )
    chunk = mpb.EncryptedLabels(
        psi_session_id=session or world["session"],
        bank_public_key=key,
        max_bins=bins,
        total=total,
        labels=labels,
    )
    _precise(lambda: stub.BinLabels(iter([chunk]), metadata=META, timeout=30))
    _precise(
        lambda: stub.DeleteModel(mpb.DeleteModelRequest(model_id=model), metadata=META, timeout=10)
    )
    assert stub.ListModels(mpb.ListModelsRequest(), metadata=META, timeout=10).limit >= 1
    _precise(
        lambda: stub.CheckIvBudget(
            mpb.IvBudgetRequest(features=[model, session]), metadata=META, timeout=10
        )
    )
    _still_serving(world)


@FUZZ
@given(
    size=st.integers(0, 2**40),
    reveal=st.integers(0, 9),
    protocol=st.text(max_size=20),
    points=anything,
    tags=anything,
    session=st.text(max_size=40),
)
def test_psi_messages(world, size, reveal, protocol, points, tags, session):
    stub = world["psi"]
    _precise(
        lambda: list(
            stub.OpenSession(
                ppb.OpenSessionRequest(protocol=protocol, bank_set_size=size, reveal=reveal),
                metadata=META,
                timeout=30,
            )
        )
    )
    _precise(
        lambda: list(
            stub.Exponentiate(
                iter([ppb.BlindedIds(session_id=session, points=points)]), metadata=META, timeout=10
            )
        )
    )
    _precise(
        lambda: stub.RevealIntersection(
            iter([ppb.MatchedTags(session_id=session, tags=tags)]), metadata=META, timeout=10
        )
    )
    _still_serving(world)


@FUZZ
@given(
    epoch=st.one_of(st.just(1), st.integers(0, 2**64 - 1)),  # 1: the bank's current epoch
    points=st.one_of(anything, st.binary(min_size=32, max_size=32).map(lambda b: b * 3)),
    product=st.one_of(st.text(max_size=45), st.sampled_from(["size_class", "model_" + "0" * 32])),
    version=numbers,
    since=numbers,
)
def test_lookup_messages(world, epoch, points, product, version, since):
    stub = world["lookup"]
    # points that are not group elements, not whole points, none, or for a stale key epoch
    _precise(
        lambda: stub.Evaluate(
            lpb.BlindedPoints(key_epoch=epoch, points=points), metadata=META, timeout=10
        )
    )
    # the same on a stream, twice over: the first bad message ends it with its status
    _precise(
        lambda: list(
            stub.EvaluateStream(
                iter([lpb.BlindedPoints(key_epoch=epoch, points=points)] * 2),
                metadata=META,
                timeout=10,
            )
        )
    )
    _precise(
        lambda: list(
            stub.FetchTable(
                lpb.FetchTableRequest(
                    product=product, version=version, key_epoch=epoch, since_version=since
                ),
                metadata=META,
                timeout=30,
            )
        )
    )
    _still_serving(world)


def test_no_identity_is_unauthenticated(world):
    with pytest.raises(grpc.RpcError) as err:
        world["model"].ListFeatures(mpb.ListFeaturesRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert not math.isnan(0.0)
