"""Three banks training and a fourth running PSI against one bureau at the same time: all
finish, each with the very model it gets alone, and the bureau's memory stays bounded."""

from __future__ import annotations

import resource
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bank_node.jobs import psi_job
from bank_node.training import load_model, train_job
from bureau_node.server import BureauNode
from protocols import vertical_lr as vlr
from xinrong.synthetic import generate_city, write_city

KEYS = {"key_bits": 768, "allow_test_keys": True, "workers": 0, "quiet": True}


def test_banks_at_once_see_nothing_of_each_other(tmp_path):
    city = write_city(generate_city(5000, 1500, seed=12), tmp_path / "city")
    limits = vlr.TrainingLimits(allow_test_keys=True)
    with BureauNode(
        city["bureau"], "uscc", tmp_path / "state", workers=0, training_limits=limits
    ) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        # each bank alone first: its rows come in the order of its own PSI tags
        alone = [
            train_job(
                address,
                city["bank"],
                "uscc",
                "y",
                tmp_path / f"alone-{i}",
                f"bank-{i}",
                epochs=2,
                seed=7,
                **KEYS,
            )
            for i in (1, 2, 3)
        ]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with ThreadPoolExecutor(max_workers=4) as pool:
            jobs = [
                pool.submit(
                    train_job,
                    address,
                    city["bank"],
                    "uscc",
                    "y",
                    tmp_path / f"bank-{i}",
                    f"bank-{i}",
                    epochs=2,
                    seed=7,
                    **KEYS,
                )
                for i in (1, 2, 3)
            ]
            psi = pool.submit(
                psi_job, address, city["bank"], "uscc", tmp_path / "psi.csv", "bank-4", workers=0
            )
            results = [j.result(timeout=600) for j in jobs]
            matched = psi.result(timeout=600)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert matched.intersection == alone[0]["rows"]
    for i, summary in zip((1, 2, 3), results, strict=True):
        model = load_model(tmp_path / f"bank-{i}")
        reference = load_model(tmp_path / f"alone-{i}")
        assert summary["rows"] == alone[0]["rows"]
        # the same seed and data: the same weights, whatever ran beside it (up to the fixed
        # point: each job splits the bureau's weights with its own fresh masks)
        np.testing.assert_allclose(model["weights"], reference["weights"], rtol=0, atol=1e-3)
        assert model["model_id"] not in {
            load_model(tmp_path / f"bank-{j}")["model_id"] for j in (1, 2, 3) if j != i
        }
    models = {m["bank_id"] for m in node.models.list()}
    assert models == {"bank-1", "bank-2", "bank-3"}
    assert grown_mb < 600  # three jobs and a session at once: bounded, not per-row state
