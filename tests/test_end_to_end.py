"""A real bureau server on a loopback port and a real bank client."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bank_node.client import BureauConnection, run_psi
from bank_node.jobs import psi_job
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime import tables
from node_runtime.transport.channels import (
    BANK_ID_METADATA,
    PROTOCOL_METADATA,
    PROTOCOL_VERSION,
    bank_metadata,
    open_channel,
)
from protocols import group, psi, uscc
from protocols.errors import InputDataError, PeerError
from protocols.ids import IdType
from xinrong.v1 import psi_pb2 as pb
from xinrong.v1 import psi_pb2_grpc

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_codes(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(uscc.ALPHABET))
    codes = set()
    while len(codes) < count:
        prefix = "9135" + "".join(rng.choice(alphabet, 13))
        codes.add(prefix + uscc.check_character(prefix))
    return sorted(codes)


@pytest.fixture()
def city(tmp_path: Path) -> dict[str, object]:
    bureau_codes = make_codes(3000, seed=1)
    outsiders = make_codes(200, seed=2)
    bank_codes = bureau_codes[100:700] + outsiders
    dirty = [
        " " + bureau_codes[5][:6].lower() + " " + bureau_codes[5][6:],  # spaces, lower case
        "".join(chr(ord(c) + 0xFEE0) for c in bureau_codes[6]),  # full width
        bureau_codes[7][:-1] + ("0" if bureau_codes[7][-1] != "0" else "1"),  # bad check
        "",
        bureau_codes[100],  # duplicate
    ]
    bureau_file = tmp_path / "bureau.parquet"
    pq.write_table(pa.table({"uscc": bureau_codes, "x": np.arange(3000)}), bureau_file)
    bank_file = tmp_path / "clients.csv"
    pacsv.write_csv(pa.table({"uscc": bank_codes + dirty}), bank_file)
    expected = bureau_codes[100:700] + [bureau_codes[5], bureau_codes[6]]
    return {"bureau": bureau_file, "bank": bank_file, "expected": expected, "codes": bureau_codes}


@pytest.fixture()
def node(city, tmp_path: Path):
    with BureauNode(city["bureau"], "uscc", tmp_path / "state", workers=0) as bureau:
        bureau.start("127.0.0.1:0")
        yield bureau


def read_column(path: Path, column: str) -> list[str]:
    table = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={column: pa.string()})
    )
    return table.column(column).to_pylist()


def test_psi_over_grpc_both_sides_learn_the_intersection(city, node, tmp_path: Path):
    out = tmp_path / "out" / "matched.csv"
    summary = psi_job(f"127.0.0.1:{node.port}", city["bank"], "uscc", out, "bank-a", workers=2)
    assert read_column(out, "uscc") == city["expected"]
    assert summary.intersection == len(city["expected"])
    assert (summary.rows, summary.rejected, summary.duplicates) == (805, 2, 1)
    assert summary.bank_ids == 802 and summary.bureau_ids == 3000
    report = pacsv.read_csv(
        tmp_path / "out" / "matched.rejects.csv",
        convert_options=pacsv.ConvertOptions(
            column_types={"reason": pa.string(), "warnings": pa.string()},
            strings_can_be_null=False,
        ),
    ).to_pylist()
    rejects = [r for r in report if r["reason"]]
    assert [r["row"] for r in rejects] == [803, 804]
    assert "check character" in rejects[0]["reason"] and rejects[1]["reason"] == "empty"
    # these made-up codes break GB 32100's structure (letters in the region code, no valid
    # organisation code): kept and matched, and flagged in the warnings column
    kept = [r for r in report if not r["reason"]]
    assert kept and all(r["warnings"] for r in kept)
    assert summary.id_warnings == len(kept)
    # The bureau recorded the session and the IDs it now shares with this bank.
    sessions = node.store.root / "sessions"
    record = json.loads((sessions / f"{summary.session_id}.json").read_text())
    assert (record["bank_id"], record["matched"], record["bank_ids"]) == ("bank-a", 602, 802)
    # the same IDs, sorted: nothing of the bank's file order reaches the bureau
    at_bureau = read_column(sessions / f"{summary.session_id}.matched.csv", "uscc")
    assert sorted(at_bureau) == sorted(city["expected"]) and at_bureau != city["expected"]


def test_the_rejects_report_names_the_line_a_bank_sees_in_its_file(city, node, tmp_path: Path):
    """An export with a title line and blank lines: the reader passes over both, so the
    rejected IDs' data rows are not their lines; the report gives the line too, and the line
    holds the raw value."""
    body = city["bank"].read_text(encoding="utf-8").splitlines()
    header, rows = body[0], body[1:]
    lines = ["对公客户清单 2026-11", header]
    for i, row in enumerate(rows):
        lines += [row, ""] if i % 100 == 99 else [row]  # a blank line after every 100 rows
    exported = tmp_path / "export.csv"
    exported.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "matched.csv"
    summary = psi_job(
        f"127.0.0.1:{node.port}",
        exported,
        "uscc",
        out,
        "bank-a",
        read_options=tables.ReadOptions(skip_rows=1),
    )
    assert (summary.rows, summary.rejected) == (805, 2)
    report = pacsv.read_csv(
        tmp_path / "out" / "matched.rejects.csv",
        convert_options=pacsv.ConvertOptions(
            column_types={"raw": pa.string(), "reason": pa.string()}, strings_can_be_null=False
        ),
    ).to_pylist()
    rejects = [r for r in report if r["reason"]]
    assert [r["row"] for r in rejects] == [803, 804]  # data rows, as before
    assert [r["line"] for r in rejects] == [813, 814]  # a title, a header, 8 blank lines
    for r in report:
        assert lines[r["line"] - 1].strip('"') == r["raw"]


def test_bank_only_reveal_leaves_the_bureau_with_sizes(city, node, tmp_path: Path):
    summary = psi_job(
        f"127.0.0.1:{node.port}",
        city["bank"],
        "uscc",
        tmp_path / "m.csv",
        "bank-b",
        reveal=psi.Reveal.BANK,
        workers=0,
    )
    assert summary.intersection == len(city["expected"])
    record = json.loads((node.store.root / "sessions" / f"{summary.session_id}.json").read_text())
    assert record["matched"] is None and record["bank_ids"] == 802
    assert not (node.store.root / "sessions" / f"{summary.session_id}.matched.csv").exists()


def test_restart_keeps_the_prepared_tags_and_notices_a_changed_file(city, tmp_path: Path):
    state = tmp_path / "state"
    with BureauNode(city["bureau"], "uscc", state, workers=0) as bureau:
        bureau.start()
        with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as conn:
            first = run_psi(conn, city["expected"][:10])
    tags_file = state / "banks" / "bank-a" / "tags-1.npy"
    stamp = tags_file.stat().st_mtime_ns
    with BureauNode(city["bureau"], "uscc", state, workers=0) as bureau:
        assert bureau.prepare().added == 0  # nothing hashed again
        bureau.start()
        with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as conn:
            second = run_psi(conn, city["expected"][:10])
    assert tags_file.stat().st_mtime_ns == stamp  # nor tagged again
    assert first.matched_ids == second.matched_ids
    assert sorted(first.matched_ids) == sorted(city["expected"][:10])

    # The bureau's file changes: 2 IDs leave, 3 arrive. Only the 3 are hashed and tagged.
    newcomers = make_codes(3, seed=9)
    codes = city["codes"][2:] + newcomers
    pq.write_table(pa.table({"uscc": codes}), city["bureau"])
    with BureauNode(city["bureau"], "uscc", state, workers=0) as bureau:
        summary = bureau.prepare()
        assert (summary.added, summary.active) == (3, len(codes))
        bureau.start()
        with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as conn:
            probe = [city["codes"][0], city["codes"][2], *newcomers]
            third = run_psi(conn, probe)
    assert sorted(third.matched_ids) == sorted(probe[1:])
    assert np.load(tags_file).size == 3003


def test_text_ids_from_integer_columns(tmp_path: Path):
    bureau_file, bank_file = tmp_path / "host.parquet", tmp_path / "guest.csv"
    pq.write_table(pa.table({"id": pa.array(range(0, 500), pa.int64())}), bureau_file)
    pacsv.write_csv(pa.table({"id": pa.array(range(400, 650), pa.int64())}), bank_file)
    with BureauNode(bureau_file, "id", tmp_path / "s", IdType.TEXT, workers=0) as bureau:
        bureau.start()
        summary = psi_job(
            f"127.0.0.1:{bureau.port}",
            bank_file,
            "id",
            tmp_path / "m.csv",
            "bank-a",
            id_type=IdType.TEXT,
            workers=0,
        )
    assert summary.intersection == 100
    assert read_column(tmp_path / "m.csv", "id") == [str(i) for i in range(400, 500)]


# ---- garbage from the bank ------------------------------------------------------------


def _open(stub, bank: str, size: int, reveal=pb.REVEAL_MODE_BOTH) -> str:
    request = pb.OpenSessionRequest(protocol=psi.PROTOCOL, bank_set_size=size, reveal=reveal)
    updates = list(stub.OpenSession(request, metadata=bank_metadata(bank), timeout=30))
    return updates[-1].opened.session_id


def _exponentiate(stub, bank: str, messages: list[pb.BlindedIds]) -> list[pb.ExponentiatedIds]:
    return list(stub.Exponentiate(iter(messages), metadata=bank_metadata(bank), timeout=30))


@pytest.mark.parametrize(
    "points, offset, status, text",
    [
        (b"\x00" * 31, 0, grpc.StatusCode.INVALID_ARGUMENT, "multiple of 32"),
        (bytes.fromhex("ff" * 32), 0, grpc.StatusCode.INVALID_ARGUMENT, "blinded ID #0"),
        (bytes(32), 0, grpc.StatusCode.INVALID_ARGUMENT, "not a valid Ristretto255"),
        (group.hash_ids([b"a", b"b", b"c"]), 0, grpc.StatusCode.INVALID_ARGUMENT, "more blinded"),
        (group.hash_ids([b"a"]), 5, grpc.StatusCode.INVALID_ARGUMENT, "expected 0"),
    ],
)
def test_garbage_ends_the_session_and_the_bureau_serves_on(
    city, node, points, offset, status, text
):
    stub = psi_pb2_grpc.PrivateSetIntersectionStub(open_channel(f"127.0.0.1:{node.port}"))
    session_id = _open(stub, "mallory", 2)
    with pytest.raises(grpc.RpcError) as err:
        _exponentiate(
            stub, "mallory", [pb.BlindedIds(session_id=session_id, offset=offset, points=points)]
        )
    assert err.value.code() is status and text in err.value.details()
    # The failed session is gone ...
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.FetchTags(
                pb.FetchTagsRequest(session_id=session_id),
                metadata=bank_metadata("mallory"),
                timeout=10,
            )
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    # ... and another bank is served as before.
    with BureauConnection(f"127.0.0.1:{node.port}", "bank-c") as conn:
        matched = run_psi(conn, city["expected"][:20]).matched_ids
        assert sorted(matched) == sorted(city["expected"][:20])


def test_sessions_are_private_to_their_bank_and_need_an_identity(node):
    channel = open_channel(f"127.0.0.1:{node.port}")
    stub = psi_pb2_grpc.PrivateSetIntersectionStub(channel)
    session_id = _open(stub, "bank-a", 1)
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.FetchTags(
                pb.FetchTagsRequest(session_id=session_id),
                metadata=bank_metadata("bank-b"),
                timeout=10,
            )
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(stub.FetchTags(pb.FetchTagsRequest(session_id=session_id), timeout=10))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        _open(stub, "../etc", 1)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        _open(stub, "bank-a", 1, reveal=pb.REVEAL_MODE_UNSPECIFIED)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:  # reveal before exponentiation
        stub.RevealIntersection(
            iter([pb.MatchedTags(session_id=session_id)]),
            metadata=bank_metadata("bank-a"),
            timeout=10,
        )
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_a_bank_node_of_another_release_is_refused_before_anything_is_done(node, tmp_path):
    """The bank names its wire protocol on every call; the bureau refuses any other at once,
    FAILED_PRECONDITION naming both, on record, with nothing opened or charged."""
    stub = psi_pb2_grpc.PrivateSetIntersectionStub(open_channel(f"127.0.0.1:{node.port}"))
    request = pb.OpenSessionRequest(protocol=psi.PROTOCOL, bank_set_size=5)
    identity = (BANK_ID_METADATA, "bank-old")
    other = str(PROTOCOL_VERSION + 1)
    for sent, said in (([], "no protocol version"), ([(PROTOCOL_METADATA, other)], f"'{other}'")):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.OpenSession(request, metadata=[identity, *sent], timeout=10))
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = err.value.details()
        assert f"speaks Xinrong protocol {PROTOCOL_VERSION}" in details and said in details
    # the only records of this bank: no session was opened (OpenSession records one first)
    refused = [r for r in AuditLog(tmp_path / "state").records() if r["bank_id"] == "bank-old"]
    assert [(r["event"], r["outcome"]) for r in refused] == 2 * [
        ("call_refused", "FAILED_PRECONDITION")
    ]
    assert all("OpenSession" in json.loads(r["details"])["method"] for r in refused)
    assert _open(stub, "bank-old", 5)  # the same bank at this release is served


def test_too_large_a_request_is_refused_before_any_work(city, tmp_path: Path):
    limits = psi.PsiLimits(max_bank_set_size=10)
    with BureauNode(city["bureau"], "uscc", tmp_path / "s", workers=0, limits=limits) as bureau:
        bureau.start()
        with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as conn:
            with pytest.raises(PeerError, match="FAILED_PRECONDITION.*at most 10"):
                run_psi(conn, city["expected"][:11])
        assert not (tmp_path / "s" / "banks" / "bank-a" / "tags-1.npy").exists()


def test_unreachable_bureau_is_a_clear_error():
    with pytest.raises(PeerError, match="cannot connect to the bureau at 127.0.0.1:1"):
        BureauConnection("127.0.0.1:1", "bank-a", connect_timeout=0.5)


# ---- the command lines ------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from {args[0]}.cli import main; sys.exit(main())",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_command_lines_end_to_end(city, tmp_path: Path):
    serve = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bureau_node.cli import main; sys.exit(main())",
            "serve",
            "--data",
            str(city["bureau"]),
            "--id-column",
            "uscc",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
            "--workers",
            "1",
            "--insecure",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = json.loads(serve.stdout.readline())
        out = tmp_path / "matched.csv"
        done = run_cli(
            "bank_node",
            "psi",
            "--insecure",
            "--bureau",
            f"127.0.0.1:{started['port']}",
            "--data",
            str(city["bank"]),
            "--id-column",
            "uscc",
            "--out",
            str(out),
            "--bank-id",
            "bank-cli",
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for key in ("bank_ids", "intersection", "rejected", "duplicates", "seconds"):
            assert key in result
        assert result["intersection"] == len(city["expected"])
        assert read_column(out, "uscc") == city["expected"]
    finally:
        serve.terminate()
        _, log = serve.communicate(timeout=30)
    assert serve.returncode == 0
    assert "bank=bank-cli" in log and "matched=602" in log


@pytest.mark.parametrize(
    "setup, args, text",
    [
        (None, ["--data", "missing.csv", "--id-column", "uscc"], "no such file"),
        ("uscc\n", ["--data", "f.csv", "--id-column", "uscc"], "no data rows"),
        ("", ["--data", "f.csv", "--id-column", "uscc"], "empty"),
        ("code\nx\n", ["--data", "f.csv", "--id-column", "uscc"], "no column named 'uscc'"),
        ("uscc\nx\n", ["--data", "f.docx", "--id-column", "uscc"], "unknown file type"),
        ("uscc\nx\n", ["--data", "f.xlsx", "--id-column", "uscc"], "cannot read as a workbook"),
    ],
)
def test_bad_input_files_are_clear_errors(tmp_path: Path, setup, args, text):
    name = args[1]
    if setup is not None:
        (tmp_path / name).write_text(setup)
    args = [a if a != name else str(tmp_path / name) for a in args]
    done = run_cli(
        "bank_node",
        "psi",
        "--insecure",
        "--bureau",
        "127.0.0.1:1",
        *args,
        "--out",
        str(tmp_path / "o.csv"),
    )
    assert done.returncode == 2
    assert text in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o.csv").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_bureau_is_asked(tmp_path):
    """Before, a directory the bank cannot write to showed a traceback after the bureau had
    done (and charged) the work: an IV request's budget, a training job."""
    (tmp_path / "f.csv").write_text("uscc\nx\n")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    data = ["--data", str(tmp_path / "f.csv"), "--id-column", "uscc"]
    cases = [
        (["psi", *data, "--out", str(tmp_path)], "--out " + str(tmp_path) + " is a directory"),
        # a review's `--out` equal to `--data` replaced the bank's client file
        (["psi", *data, "--out", str(tmp_path / "f.csv")], "is the file given as --data"),
        (["iv", *data, "--label", "y", "--out", str(locked / "iv.csv")], "is not writable"),
        (["train", *data, "--label", "y", "--model-dir", str(locked / "m")], "is not writable"),
        (
            ["batch", "--portfolio", str(tmp_path / "f.csv"), "--id-column", "uscc"]
            + ["--model-dir", str(tmp_path), "--out", str(tmp_path / "f.csv")],
            "is a file",
        ),
    ]
    for command, text in cases:
        if "not writable" in text and os.geteuid() == 0:
            continue  # root writes anywhere
        # nothing listens at the bureau's address: the check must come first
        done = run_cli("bank_node", *command, "--insecure", "--bureau", "127.0.0.1:1")
        assert done.returncode == 2, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "cannot connect" not in done.stderr


@pytest.mark.skipif(not SHARED.exists(), reason="the shared data sets are not beside the repo")
def test_public_split_data_sets_intersect_on_their_ids(tmp_path: Path):
    with BureauNode(
        SHARED / "breast_hetero_host.csv", "id", tmp_path / "s", IdType.TEXT, workers=0
    ) as bureau:
        bureau.start()
        summary = psi_job(
            f"127.0.0.1:{bureau.port}",
            SHARED / "breast_hetero_guest.csv",
            "id",
            tmp_path / "m.csv",
            "bank-a",
            id_type=IdType.TEXT,
            workers=0,
        )
    assert summary.intersection == summary.bank_ids == 569


def test_synth_and_demo_command_lines(tmp_path: Path):
    made = run_cli(
        "bureau_node",
        "synth",
        "--enterprises",
        "3000",
        "--bank-clients",
        "400",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "city"),
    )
    assert made.returncode == 0, made.stderr
    paths = json.loads(made.stdout.strip().splitlines()[-1])
    assert pq.read_table(paths["bureau"]).num_rows == 3000
    demo = run_cli(
        "xinrong",
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        "--enterprises",
        "4000",
        "--bank-clients",
        "1200",
        "--workers",
        "1",
        "--key-bits",
        "768",
        "--allow-test-keys",
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    result = json.loads(demo.stdout.strip().splitlines()[-1])
    assert 0 < result["matched"] <= result["bank_clients"] <= 1200
    assert 0.5 < result["bank_only_auc"] < 1 and 0.5 < result["joint_auc"] < 1
    assert result["top_bureau_features"] and result["applicants_scored"] == 240
    assert result["top_graph_features"] and "graph_auc_lift" in result
    # on this small city the bureau may refuse the model without the graph beside the
    # joint one (what the two read together); either way the demo goes on and says which
    if result["joint_auc_without_graph"] is None:
        assert result["graph_auc_lift"] is None
        assert "keeps no model without the graph features" in demo.stderr
    else:
        assert 0.5 < result["joint_auc_without_graph"] < 1
    report = Path(result["report"]).read_text()
    assert report.count("<img") >= 5 and result["model_id"] in report
    compared = result["joint_auc_without_graph"] is not None
    assert ("Joint model without graph features" in report) == compared
    scores = read_column(Path(result["scores"]), "uscc")
    assert len(scores) == 240
    # the bank's receipts and lookup tables of the demo's bureau stay in the demo's directory
    assert any((tmp_path / "demo" / "receipts").iterdir())
    assert (tmp_path / "demo" / "lookup-tables").is_dir()
    for step in ("1/9", "4/9", "7/9", "9/9"):
        assert step in demo.stderr
    assert re.search(r"IV \d\.\d{3} ±\d\.\d{3} \(", demo.stderr)  # and how far the noise moves it
    # private lookups: one applicant alone, the portfolio's size classes, a month-2 batch run
    assert 0 < result["one_applicant"]["score"] < 1
    assert sum(result["portfolio_size_classes"].values()) == 960
    assert set(result["portfolio_size_classes"]) <= {
        "大型",
        "中型",
        "小型",
        "微型",
        "(未知 unknown)",
    }
    run = Path(result["batch_run_month_2"])
    assert (run / "summary.json").exists() and (run / "alerts.csv").exists()
    assert any(kind.startswith("watch_") for kind in result["batch_alerts_month_2"])


def test_a_damaged_state_directory_is_rebuilt(city, tmp_path: Path):
    state = tmp_path / "state"
    with BureauNode(city["bureau"], "uscc", state, workers=0) as bureau:
        assert bureau.prepare().added == 3000
    (state / "points.npy").write_bytes(b"not an array")
    with BureauNode(city["bureau"], "uscc", state, workers=0) as bureau:
        assert bureau.prepare().added == 3000  # rebuilt, not served from a broken cache
        bureau.start()
        with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as conn:
            matched = run_psi(conn, city["expected"][:5]).matched_ids
            assert sorted(matched) == sorted(city["expected"][:5])


def test_a_sessions_tags_go_out_twice_at_most_and_a_session_needs_an_id(node):
    """The whole tag table goes out with every fetch: once, and once more after a broken
    download, then the bank opens a new session (which is on record and charged)."""
    stub = psi_pb2_grpc.PrivateSetIntersectionStub(open_channel(f"127.0.0.1:{node.port}"))
    session_id = _open(stub, "bank-a", 1)
    fetch = pb.FetchTagsRequest(session_id=session_id)
    with pytest.raises(grpc.RpcError) as err:  # the bank's blinded IDs first
        list(stub.FetchTags(fetch, metadata=bank_metadata("bank-a"), timeout=10))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    blinded = pb.BlindedIds(session_id=session_id, offset=0, points=group.hash_to_group(b"x"))
    assert list(stub.Exponentiate(iter([blinded]), metadata=bank_metadata("bank-a"), timeout=10))
    for _ in range(2):
        assert list(stub.FetchTags(fetch, metadata=bank_metadata("bank-a"), timeout=10))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.FetchTags(fetch, metadata=bank_metadata("bank-a"), timeout=10))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "open a new session" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        _open(stub, "bank-a", 0)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one" in err.value.details()


def test_a_second_demo_in_the_same_directory_sets_the_first_aside(tmp_path: Path):
    """A review ran the README's demo twice: the second run overwrote the first's model and
    scores and then failed at step 7 (its batch run's directory was taken). A directory the
    demo did not make is never moved or deleted."""
    from xinrong.demo import MARKER, _fresh

    said: list[str] = []
    workdir = tmp_path / "xinrong-demo"
    _fresh(workdir, said.append)
    (workdir / "report.html").write_text("first")
    _fresh(workdir, said.append)
    previous = tmp_path / "xinrong-demo-previous"
    assert (previous / "report.html").read_text() == "first"
    assert (workdir / MARKER).exists() and not (workdir / "report.html").exists()
    assert said == [f"    an earlier demo run was moved to {previous}"]
    _fresh(workdir, said.append)  # a third run replaces the marked -previous
    assert not (previous / "report.html").exists() and (previous / MARKER).exists()
    mine = tmp_path / "mine"  # the user's own directory: refused, untouched
    mine.mkdir()
    (mine / "thesis.docx").write_text("keep")
    (mine / "bureau-state").mkdir()
    with pytest.raises(InputDataError, match="files the demo did not make"):
        _fresh(mine, said.append)
    assert sorted(p.name for p in mine.iterdir()) == ["bureau-state", "thesis.docx"]
    backup = tmp_path / "xinrong-demo-previous"  # a user's own directory of that name
    shutil.rmtree(backup)
    backup.mkdir()
    (backup / "notes.txt").write_text("keep")
    with pytest.raises(InputDataError, match="is not an earlier demo's"):
        _fresh(workdir, said.append)
    assert (backup / "notes.txt").read_text() == "keep" and (workdir / MARKER).exists()
