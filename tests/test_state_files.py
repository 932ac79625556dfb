"""State files are private whatever the umask, and atomic writes cannot be redirected."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from bank_node.jobs import psi_job
from bank_node.toolkit import iv_job
from bureau_node.server import BureauNode
from node_runtime import tables
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError
from xinrong.synthetic import generate_city, write_city


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_atomic_writes_are_0600_and_leave_no_temporary_file(tmp_path, open_umask):
    path = tmp_path / "f.json"
    tables.atomic_write_bytes(path, b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError):

        def broken(handle) -> None:
            handle.write(b"half")
            raise RuntimeError("disk full")

        tables.atomic_write(path, broken)
    assert path.read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_planted_link_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "f.json.partial").symlink_to(victim)  # the name the old code used
    tables.atomic_write_bytes(tmp_path / "f.json", b"new")
    assert victim.read_bytes() == b"keep" and (tmp_path / "f.json").read_bytes() == b"new"


def test_the_bureau_state_is_private_under_any_umask(tmp_path, open_umask):
    city = write_city(generate_city(1500, 400, seed=4), tmp_path / "city")
    state = tmp_path / "state"
    with BureauNode(
        city["bureau"],
        "uscc",
        state,
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    ) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        psi_job(address, city["bank"], "uscc", tmp_path / "m.csv", "bank-a", workers=0)
        iv_job(
            address,
            city["bank"],
            "uscc",
            "y",
            tmp_path / "iv.csv",
            "bank-a",
            key_bits=768,
            allow_test_keys=True,
            workers=0,
            quiet=True,
            monotonic=False,  # this city's 28 matched defaults are too few for the noise's bins
        )
    paths = [Path(state), *Path(state).rglob("*")]
    kinds = {p.suffix for p in paths if p.is_file()}
    assert {".csv", ".json", ".npy", ".sqlite3"} <= kinds  # sessions, tags, audit, usage
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_prepare_makes_the_lookup_points_only_when_asked(tmp_path):
    """`bureau-node prepare` does a bank's PSI tags; its lookup points (as much work again,
    under their own key) only with --lookups, for banks that use lookups."""
    import subprocess
    import sys

    city = write_city(generate_city(400, 60, seed=3), tmp_path / "city")
    for flag, expected in (([], False), (["--lookups"], True)):
        state = tmp_path / f"state{len(flag)}"
        done = subprocess.run(
            [sys.executable, "-m", "bureau_node", "prepare", "--data", str(city["bureau"]),
             "--id-column", "uscc", "--state-dir", str(state), "--bank-id", "bank-a",
             "--workers", "0", "--quiet", *flag],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        bank = state / "banks" / "bank-a"
        assert list(bank.glob("tags-*.npy"))
        assert bool(list(bank.glob("oprf-*.npy"))) is expected


def test_one_serving_bureau_per_state_directory_and_per_port(tmp_path):
    """A review started a second `bureau-node serve` on the same port and state directory:
    gRPC's SO_REUSEPORT let both listen, and half of a bank's PSI sessions went to the other
    one (its own data, audit log and quotas)."""
    city = write_city(generate_city(600, 100, seed=4), tmp_path / "city")
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as first:
        first.start("127.0.0.1:0")
        second = BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0)
        with pytest.raises(InputDataError, match="in use by another bureau node .pid"):
            second.start("127.0.0.1:0")
        # nor does a refused one first rewrite the running node's dataset files with another
        # data file (a review's `serve` of a test file did, before it was refused)
        files = [tmp_path / "state" / n for n in ("dataset.json", "active.npy", "ids.npy")]
        before = {p.name: p.stat().st_mtime_ns for p in files}
        small = write_city(generate_city(300, 50, seed=5), tmp_path / "small")
        third = BureauNode(small["bureau"], "uscc", tmp_path / "state", workers=0)
        with pytest.raises(InputDataError, match="in use by another bureau node .pid"):
            third.prepare()
        assert {p.name: p.stat().st_mtime_ns for p in files} == before
        other = BureauNode(city["bureau"], "uscc", tmp_path / "other-state", workers=0)
        with pytest.raises(OSError, match="cannot listen"):
            other.start(f"127.0.0.1:{first.port}")
        other.stop()
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as again:
        again.start("127.0.0.1:0")  # the first one stopped: its lock went with it


def test_a_key_rotated_by_the_command_line_takes_effect_on_the_running_bureau(tmp_path):
    """`bureau-node rotate-key` runs in another process: a review's serving bureau kept
    answering PSI under the old key epoch until it was restarted."""
    from bureau_node.store import BureauStore

    city = write_city(generate_city(600, 100, seed=4), tmp_path / "city")
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        first = psi_job(address, city["bank"], "uscc", tmp_path / "a.csv", "bank-a", workers=0)
        assert BureauStore(tmp_path / "state").rotate_key("bank-a") == first.key_epoch + 1
        after = psi_job(address, city["bank"], "uscc", tmp_path / "b.csv", "bank-a", workers=0)
    assert after.key_epoch == first.key_epoch + 1
    assert after.intersection == first.intersection


def test_a_new_months_data_or_an_upgraded_state_directory_ends_the_key_epoch(tmp_path):
    """Two reviews. Kept lookup points opened the next month's tables for free, and the
    changes of a model's scores named each enterprise's new events: the bureau's new data
    end the lookup key (the PSI key and its tags stay: they do not change with the data).
    And a state directory from before the record of what a bank may open was adopted as it
    was, so an operator who tightened a bank's policy in the same restart left its kept
    tables open: adopted now only if no table was downloaded in it."""
    from bureau_node.audit import AuditLog

    month1 = write_city(generate_city(600, 100, seed=4), tmp_path / "m1")
    month2 = write_city(generate_city(600, 100, seed=4, month=2), tmp_path / "m2")
    state = tmp_path / "state"
    bank = state / "banks" / "bank-a"

    def served(city, download: bool = True) -> int:
        with BureauNode(city["bureau"], "uscc", state, workers=0, registry=city["registry"],
                        events=city["events"]) as node:  # fmt: skip
            node.start("127.0.0.1:0")
            for _ in node.store.prepare_bank("bank-a"):
                pass
            if download:  # as the bank's first FetchTable of the epoch
                (source,) = [s for s in node._product_sources() if s.product == "size_class"]
                node.lookup_tables.sealed("bank-a", source)
            return node.store.key_epoch("bank-a")

    first = served(month1, download=False)
    (bank / "serving-policy").unlink()  # as an earlier version left it: nothing downloaded
    assert served(month1) == first  # adopted
    assert served(month1) == first  # the same data: the same epoch
    (bank / "serving-policy").unlink()  # now with a table downloaded in the epoch
    assert served(month1) == first + 1
    tags = np.load(bank / f"tags-{first + 1}.npy")
    assert served(month2) == first + 2  # a month on
    assert served(month2) == first + 2
    assert np.array_equal(np.load(bank / f"tags-{first + 2}.npy")[: tags.size], tags)
    causes = [r["details"] for r in AuditLog(state).records() if r["event"] == "key_rotated"]
    assert [json.loads(c)["cause"] for c in causes] == ["upgrade", "data"]


def test_a_graph_refreshed_while_serving_ends_the_lookup_key_too(tmp_path):
    """A review dropped next month's edge file in place on a serving bureau: every model
    table got a new version in the same key epoch, which the bank opened with its kept
    points, for free: the differencing a new epoch is there to stop. A live refresh of the
    graph ends the lookup key as a restart on new data does."""
    import dataclasses
    import time

    import pyarrow.parquet as pq

    from protocols.errors import StaleKeyEpoch

    city = write_city(generate_city(600, 100, seed=4), tmp_path / "city")
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0,
                    graph=city["graph"], graph_refresh_seconds=0.2,
                    registry=city["registry"], events=city["events"]) as node:  # fmt: skip
        node.start("127.0.0.1:0")
        (source,) = [s for s in node._product_sources() if s.product == "size_class"]
        node.lookup_tables.sealed("bank-a", source)  # the bank's download of the epoch
        first = node.store.key_epoch("bank-a")
        # a download asked for before the swap, sealed after it (a model's table computes
        # its payloads when sealed: the new data's, under the old version)
        before = dataclasses.replace(source, data_version=node.features.version)
        edges = pq.read_table(city["graph"])
        pq.write_table(edges.slice(0, edges.num_rows // 2), city["graph"])
        deadline = time.monotonic() + 20
        while node.store.key_epoch("bank-a") == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.store.key_epoch("bank-a") == first + 1
        with pytest.raises(StaleKeyEpoch, match="data changed while"):
            node.lookup_tables.sealed("bank-a", before)


def test_a_lookup_key_rotation_that_fails_half_way_leaves_the_old_epoch_whole(
    tmp_path, monkeypatch
):
    """A review's full disk failed the rotation after the PSI key had moved to the new
    epoch's name: the old epoch had no PSI key, and its next use made a new one inside it."""
    from bureau_node.store import BureauStore

    store = BureauStore(tmp_path / "state")
    psi_key = store._keys("bank-a", 1)[0]
    written = tables.atomic_write_bytes

    def full_disk(path, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).name == "epoch":
            raise OSError(28, "No space left on device")
        return written(path, data, *args, **kwargs)

    monkeypatch.setattr(tables, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError):
        store.rotate_lookup_key("bank-a")
    monkeypatch.setattr(tables, "atomic_write_bytes", written)
    assert store.key_epoch("bank-a") == 1 and store._keys("bank-a", 1)[0] == psi_key
    assert store.rotate_lookup_key("bank-a") == 2 and store._keys("bank-a", 2)[0] == psi_key


@pytest.mark.parametrize("command", [["forget"], ["delete", "0" * 32], ["list"]])
def test_the_operators_model_commands_refuse_a_bank_id_that_is_a_path(tmp_path, command, capsys):
    """`bureau-node models forget --bank-id ../x` had removed records and written an audit
    record outside the bank's directory: a bank id names a directory, so it is checked as the
    configuration checks it, and nothing is written."""
    from bureau_node.cli import main

    victim = tmp_path / "elsewhere" / "retired"
    victim.mkdir(parents=True)
    (victim / ("1" * 32 + ".json")).write_text("{}")
    state = tmp_path / "state"
    args = ["models", command[0], "--state-dir", str(state), "--bank-id", "../../elsewhere"]
    with pytest.raises(SystemExit) as exit_status:
        main([*args, *command[1:]])
    assert exit_status.value.code == 2
    assert "is not a bank id" in capsys.readouterr().err
    assert (victim / ("1" * 32 + ".json")).exists() and not state.exists()
