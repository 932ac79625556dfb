"""The same chunks on a local process pool and on a Dask cluster give the same answers,
and a whole training job gives the same model on either."""

from __future__ import annotations

import numpy as np
import pytest

from bank_node.training import load_model, train_job
from bureau_node.server import BureauNode
from node_runtime.parallel import make_executor
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError
from xinrong.synthetic import generate_city, write_city

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local.scheduler_address.replace("tcp://", "dask://")


@pytest.fixture(scope="module")
def pool():
    executor = make_executor(2)
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def keys():
    return he.generate_keypair(768, allow_test_keys=True)


def test_inner_products_are_identical_in_process_on_a_pool_and_on_dask(cluster, pool, keys):
    pub, priv = keys
    encryptor = he.OwnerEncryptor(priv)
    rng = np.random.default_rng(7)
    values = rng.integers(-(2**30), 2**30, size=700).tolist()
    ciphertexts = encryptor.encrypt(values)
    for columns in (3, 45):  # the bucket method and the shared-table method
        matrix = rng.integers(-(2**12), 2**12, size=(700, columns))
        alone = he.inner_products(ciphertexts, matrix, pub)
        dask = make_executor(spec=cluster)
        try:
            counts = he.OpCounts()
            on_dask = he.inner_products(ciphertexts, matrix, pub, dask, counts)
        finally:
            dask.shutdown()
        assert he.inner_products(ciphertexts, matrix, pub, pool) == alone == on_dask
        assert counts.inner_product_terms == 700 * columns and counts.multiplications > 0
        expected = matrix.astype(object).T @ np.array(values, dtype=object)
        assert [he.from_residue(he.decrypt(priv, c), pub.n) for c in alone] == list(expected)


def test_encryption_chunks_decrypt_the_same_everywhere(cluster, pool, keys):
    pub, priv = keys
    encryptor = he.OwnerEncryptor(priv)
    values = list(range(-600, 600))
    dask = make_executor(spec=cluster)
    try:
        for executor in (None, pool, dask):
            counts = he.OpCounts()
            ciphertexts = encryptor.encrypt_many(values, executor, counts)
            assert counts.encryptions == len(values)
            assert [he.from_residue(he.decrypt(priv, c), pub.n) for c in ciphertexts] == values
    finally:
        dask.shutdown()


def test_training_gives_the_same_model_on_a_pool_and_on_dask(cluster, tmp_path):
    paths = write_city(generate_city(3000, 1500, seed=8), tmp_path / "city")
    models = []
    for name, spec, workers in (("pool", None, 2), ("dask", cluster, None)):
        node = BureauNode(
            paths["bureau"],
            "uscc",
            tmp_path / "state",  # one PSI key for the bank: the same rows in the same order
            workers=workers,
            executor=spec,
            training_limits=vlr.TrainingLimits(allow_test_keys=True),
        )
        node.start("127.0.0.1:0")
        try:
            train_job(
                f"127.0.0.1:{node.port}",
                paths["bank"],
                "uscc",
                "y",
                tmp_path / name,
                "bank-a",
                epochs=2,
                seed=5,
                key_bits=768,
                allow_test_keys=True,
                workers=workers,
                executor_spec=spec,
                quiet=True,
            )
        finally:
            node.stop()
        models.append(load_model(tmp_path / name))
    pool_model, dask_model = models
    # exact integer arithmetic and masks that cancel exactly: the very same weights
    # the same up to the fixed point: each job splits the bureau's weights with fresh masks
    np.testing.assert_allclose(pool_model["weights"], dask_model["weights"], rtol=0, atol=1e-3)
    assert abs(pool_model["neutral_bureau_score"] - dask_model["neutral_bureau_score"]) < 1e-3
    assert pool_model["counts"]["encryptions"] == dask_model["counts"]["encryptions"]


def test_executor_specs_are_checked():
    with pytest.raises(InputDataError, match="unknown executor"):
        make_executor(spec="ray://x")
    with pytest.raises(InputDataError, match="HOST:PORT"):
        make_executor(spec="dask://")
    assert make_executor(0) is None
