"""The bureau's per-bank configuration: unknown banks are refused, features are limited per
bank, daily quotas hold, and a bad file is a clear error at start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bank_node.jobs import psi_job
from bank_node.training import list_features, train_job
from bureau_node.config import load_config
from bureau_node.server import BureauNode
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, PeerError, QuotaExceeded
from xinrong.synthetic import generate_city, write_city

CONFIG = """
[defaults]
daily_psi_ids = 100000

[banks.bank-a]
features = [
    "debt_ratio", "registered_capital_10k_cny", "invoice_amount_12m_10k_cny", "reg_age_years"
]
daily_scored = 1500

[banks.bank-b]
daily_psi_ids = 1500
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    city = write_city(generate_city(4000, 1200, seed=9), root / "city")
    (root / "bureau.toml").write_text(CONFIG)
    with BureauNode(
        city["bureau"],
        "uscc",
        root / "state",
        workers=0,
        # a model on bank-a's four features after one epoch may rest on one of them beyond
        # what a model may read alone (tests/test_attacks.py): these tests are about the
        # configuration
        training_limits=vlr.TrainingLimits(allow_test_keys=True, max_readable_share=1.0),
        config=root / "bureau.toml",
    ) as bureau:
        bureau.start("127.0.0.1:0")
        bureau.city = city  # type: ignore[attr-defined]
        yield bureau


def test_a_bank_not_in_the_configuration_is_refused(node, tmp_path):
    with pytest.raises(PeerError, match="PERMISSION_DENIED.*not in this bureau's configuration"):
        psi_job(
            f"127.0.0.1:{node.port}",
            node.city["bank"],
            "uscc",
            tmp_path / "m.csv",
            "bank-z",
            workers=0,
        )
    with pytest.raises(PeerError, match="PERMISSION_DENIED"):
        list_features(f"127.0.0.1:{node.port}", "bank-z")


def test_features_are_limited_per_bank(node, tmp_path, monkeypatch):
    address = f"127.0.0.1:{node.port}"
    assert sorted(f["name"] for f in list_features(address, "bank-a")) == [
        "debt_ratio",
        "invoice_amount_12m_10k_cny",
        "reg_age_years",
        "registered_capital_10k_cny",
    ]
    assert len(list_features(address, "bank-b")) == 17  # every column but the ID
    bad = {
        "bureau_features": ["industry"],
        "key_bits": 768,
        "allow_test_keys": True,
        "workers": 0,
        "quiet": True,
    }
    # the bank's own check, against its catalogue, before PSI
    with pytest.raises(InputDataError, match="the bureau offers no feature named 'industry'"):
        train_job(address, node.city["bank"], "uscc", "y", tmp_path / "m", "bank-a", **bad)
    # and the bureau's, for a bank that skips it
    import bank_node.training

    monkeypatch.setattr(bank_node.training, "check_bureau_features", lambda *a: None)
    # a withheld feature is answered as one the bureau does not hold: a review enumerated
    # the features licensed to other banks from the difference
    answers = []
    for name in ("industry", "no_such_feature"):
        with pytest.raises(PeerError, match="FAILED_PRECONDITION.*has no features named") as err:
            train_job(address, node.city["bank"], "uscc", "y", tmp_path / "m", "bank-a",
                      **{**bad, "bureau_features": [name]})  # fmt: skip
        answers.append(str(err.value).split("bureau answered ", 1)[1].replace(name, "NAME"))
    assert answers[0] == answers[1]
    summary = train_job(
        address,
        node.city["bank"],
        "uscc",
        "y",
        tmp_path / "m",
        "bank-a",
        epochs=1,
        key_bits=768,
        allow_test_keys=True,
        workers=0,
        quiet=True,
    )
    assert summary["bureau_features"] == 4
    # the training rows were scored on the quota; scoring them again (the bureau told who
    # they are) goes over 1,500. Private scoring is charged per ID to daily_lookup_ids
    # (tests/test_private_lookup.py).
    from bank_node.training import predict_job

    with pytest.raises(PeerError, match="RESOURCE_EXHAUSTED.*daily_scored"):
        predict_job(
            address,
            tmp_path / "m",
            node.city["bank"],
            "uscc",
            tmp_path / "s.csv",
            "bank-a",
            workers=0,
            quiet=True,
            scoring="reveal-both",
        )


def test_daily_psi_quota(node, tmp_path):
    address = f"127.0.0.1:{node.port}"
    first = psi_job(address, node.city["bank"], "uscc", tmp_path / "1.csv", "bank-b", workers=0)
    assert first.bank_ids > 750  # the first run fits in 1,500 IDs; the second does not
    with pytest.raises(PeerError, match="RESOURCE_EXHAUSTED.*daily_psi_ids"):
        psi_job(address, node.city["bank"], "uscc", tmp_path / "2.csv", "bank-b", workers=0)


def test_quotas_start_afresh_each_utc_day(tmp_path, monkeypatch):
    """A day's quota, spent, is refused until the next UTC day; each day's usage has its
    own file, and a restarted bureau reads today's."""
    from bureau_node import config as bureau_config

    (tmp_path / "bureau.toml").write_text("[banks.bank-b]\ndaily_scored = 100\n")
    policies = load_config(tmp_path / "bureau.toml")
    access = bureau_config.Access(tmp_path / "state", policies)
    monkeypatch.setattr(bureau_config, "quota_day", lambda: "2026-12-01")
    access.charge("bank-b", "daily_scored", 80)
    with pytest.raises(QuotaExceeded, match="used 80 of its 100 daily_scored today"):
        access.charge("bank-b", "daily_scored", 30)
    monkeypatch.setattr(bureau_config, "quota_day", lambda: "2026-12-02")
    access.charge("bank-b", "daily_scored", 90)
    access.flush()
    restarted = bureau_config.Access(tmp_path / "state", policies)
    with pytest.raises(QuotaExceeded, match="used 90 of its 100"):
        restarted.charge("bank-b", "daily_scored", 20)
    usage = sorted(p.name for p in (tmp_path / "state" / "banks" / "bank-b").iterdir())
    assert usage == ["usage-2026-12-01.json", "usage-2026-12-02.json"]
    monkeypatch.undo()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", bureau_config.quota_day())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[banks.a]\nfeature = ['x']\n", "unknown setting 'feature' .did you mean 'features'"),
        ("[defaults]\ndaily_scored_ids = 5\n[banks.a]\n", "did you mean 'daily_scored'"),
        ("[bank.a]\n", "unknown section"),
        ("[defaults]\ndaily_scored = 0\n[banks.a]\n", "at least 1"),
        ("[banks.a]\nfeatures = ['salary']\n", "no features"),
        ("[banks.'../x']\n", "not a valid bank id"),
        ("[defaults]\n", "serve nobody"),
        ("[banks.a\n", "not valid TOML"),
        ("[banks.a]\nfeatures = ['debt_ratio']\n", "fewer than min_bureau_features"),
        ("[defaults]\niv_rho_per_feature = 0\n[banks.a]\n", "from 0.001"),
        ("[banks.a]\niv_rho_per_day = true\n", "from 0.001"),
        ("[banks.a]\niv_epsilon_per_day = 40\n", "no longer read"),
        (
            "[defaults]\niv_rho_per_feature = 5\niv_rho_per_day = 1\n[banks.a]\n",
            "no request could ever",
        ),
        ("[banks.a]\nmax_models_per_session = 0\n", "at least 1"),
    ],
)
def test_bad_configurations_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bureau.toml"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message):
        load_config(path, ["debt_ratio"])


def test_a_configuration_saved_with_a_bom_reads_and_one_in_gbk_is_named(tmp_path):
    path = tmp_path / "bureau.toml"
    path.write_bytes(b"\xef\xbb\xbf" + "# 城商行\n[banks.a]\n".encode())
    assert list(load_config(path, ["debt_ratio"])) == ["a"]
    path.write_bytes("[banks.a]\n# 城商行\n".encode("gbk"))
    with pytest.raises(InputDataError, match="line 2 is not UTF-8"):
        load_config(path, ["debt_ratio"])


def test_serve_refuses_a_bad_configuration(tmp_path):
    city = write_city(generate_city(500, 50, seed=1), tmp_path / "city")
    (tmp_path / "bad.toml").write_text("[banks.a]\nquota = 5\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bureau_node.cli",
            "serve",
            "--data",
            str(city["bureau"]),
            "--id-column",
            "uscc",
            "--state-dir",
            str(tmp_path / "s"),
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(tmp_path / "bad.toml"),
            "--insecure",
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "takes only" in result.stderr
    assert Path(tmp_path / "s").exists()
