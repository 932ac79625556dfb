"""Private lookups and private scoring, both nodes over mutual TLS on loopback (issue 14).

    python benchmarks/lookup.py                         # 2,000,000 enterprises, 100,000 applicants
    python benchmarks/lookup.py --enterprises 200000 --applicants 10000 --decisions 300

Steps, each timed on its own:
  1. the bureau's preparation for the bank (its PSI tags and its lookup points, once per key
     epoch), through `bureau-node prepare --lookups`;
  2. a joint model trained on a small client file (the table covers every enterprise,
     whatever the training set: this only makes a model to publish);
  3. publishing the model's table: the bank's first `FetchTable` (sealing at the bureau, the
     stream, the checks and the write at the bank), with the bytes on the wire; and the
     same for a data product when the city has product files;
  4. single-applicant decisions through the Python API (`predict_proba` on one row, the table
     already at the bank): median and 99th percentile over --decisions calls;
  5. the bureau's throughput on single-applicant lookups, side by side: 1, --clients and
     twice as many processes, each deciding one applicant at a time for --seconds, first
     with a unary Evaluate call per decision, then on one EvaluateStream per process; then
     1 and 2 processes of --threads threads each (a decision service answering many
     applicants at once: lookups queued while one is out share the next message). The
     clients share the machine's cores with the bureau. Also the bureau's CPU per decision;
     then the bureau's own capacity for decisions that each come alone in a message: 2x
     --clients and 8 processes of a load generator (points blinded beforehand, receipts
     not checked: none of the bank's work), unary calls and then a stream each;
  6. --applicants applicants scored privately (`bank-node predict`, table kept) beside a PSI
     session of the same file (`bank-node psi`), process start to exit, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from bureau_process import BANK_ID, start_bureau

from xinrong.synthetic import generate_city, write_city

BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def make_city(workdir: Path, enterprises: int, applicants: int) -> dict[str, Path]:
    marker = workdir / "city.json"
    if marker.exists() and json.loads(marker.read_text())["enterprises"] == enterprises:
        return {k: Path(v) for k, v in json.loads(marker.read_text())["paths"].items()}
    city = generate_city(enterprises, applicants, seed=3, graph=False)
    paths = write_city(city, workdir / "city")
    bank = city.bank
    train = bank.slice(0, 3000)  # a small training file: the model only has to exist
    pacsv.write_csv(train, workdir / "train.csv")
    pacsv.write_csv(bank.drop_columns(["y"]), workdir / "applicants.csv")
    paths |= {"train": workdir / "train.csv", "applicants": workdir / "applicants.csv"}
    marker.write_text(
        json.dumps({"enterprises": enterprises, "paths": {k: str(v) for k, v in paths.items()}})
    )
    return paths


def single_decisions(address: str, tls: Path, model_dir: Path, one: pa.Table, count: int) -> dict:
    import bank_node

    with bank_node.connect(address, tls_dir=tls, progress=False) as bureau:
        model = bank_node.load(model_dir, bureau)
        model.predict_proba(one, id_column="uscc")  # the table is fetched or read once
        times = []
        for _ in range(count):
            started = time.perf_counter()
            model.predict_proba(one, id_column="uscc")
            times.append(time.perf_counter() - started)
    times.sort()
    return {
        "decisions": count,
        "median_ms": 1e3 * statistics.median(times),
        "p99_ms": 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))],
        "max_ms": 1e3 * times[-1],
    }


def _evaluate_loop(  # noqa: ANN001
    address: str, tls: str, ids: list[str], seconds: float, queue, go, stream: bool, threads: int
) -> None:
    """One client process: ``threads`` threads each deciding one applicant at a time (the
    bank's OPRF round trip: blind, the bureau's Evaluate, unblind) on one LookupClient."""
    import threading

    from bank_node.client import BureauConnection
    from bank_node.lookup import LookupClient

    with BureauConnection(address, BANK_ID, tls_dir=tls) as connection:
        client = LookupClient(connection, stream=stream)
        client.points(ids[:1])  # the catalogue, and the stream opened
        queue.put("ready")
        go.wait()
        done = [0] * threads
        started = time.perf_counter()

        def decide(i: int) -> None:
            while time.perf_counter() - started < seconds:
                client.points([ids[(done[i] + i) % len(ids)]])
                done[i] += 1

        workers = [threading.Thread(target=decide, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        queue.put((sum(done), time.perf_counter() - started))
        client.close()


def _load_loop(  # noqa: ANN001
    address: str, tls: str, ids: list[str], seconds: float, queue, go, stream: bool, threads: int
) -> None:
    """A load generator, not a bank: single-applicant lookups, each in its own message (one
    in flight per process), of points blinded beforehand, with the answers' sizes checked
    and their receipts left unchecked. The bureau does all its work for each (checks,
    charge, audit record and signature, the OPRF); what is left out is the bank's (blinding,
    unblinding, checking the receipt), which runs on the bank's machine, not the bureau's."""
    import queue as queues

    from node_runtime.transport.certs import bank_files
    from node_runtime.transport.channels import bank_metadata, open_channel
    from protocols import lookup
    from xinrong.v1 import lookup_pb2 as pb
    from xinrong.v1 import lookup_pb2_grpc

    channel = open_channel(address, bank_files(tls))
    stub, metadata = lookup_pb2_grpc.PrivateLookupStub(channel), bank_metadata(BANK_ID)
    epoch = stub.ListTables(pb.ListTablesRequest(), metadata=metadata).key_epoch
    requests = [
        pb.BlindedPoints(key_epoch=epoch, points=lookup.blind([x.encode()]).points)
        for x in ids[:500]
    ]
    if stream:
        outgoing: queues.SimpleQueue = queues.SimpleQueue()
        call = stub.EvaluateStream(iter(outgoing.get, None), metadata=metadata)

        def one(request: pb.BlindedPoints) -> pb.EvaluatedPoints:
            outgoing.put(request)
            return next(call)
    else:

        def one(request: pb.BlindedPoints) -> pb.EvaluatedPoints:
            return stub.Evaluate(request, metadata=metadata)

    one(requests[0])
    queue.put("ready")
    go.wait()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        answer = one(requests[done % len(requests)])
        assert len(answer.points) == lookup.POINT_BYTES
        done += 1
    queue.put((done, time.perf_counter() - started))
    if stream:
        outgoing.put(None)
    channel.close()


def throughput(
    address: str,
    tls: Path,
    ids: list[str],
    clients: int,
    seconds: float,
    bureau_pid: int,
    stream: bool = False,
    threads: int = 1,
    load_generator: bool = False,
) -> dict:
    """Decisions per second over ``clients`` processes of ``threads`` threads, unary calls
    or one stream per process, and the bureau's CPU time per decision (its capacity on this
    machine's cores, were the clients elsewhere). ``load_generator``: the processes are
    ``_load_loop``s instead of banks."""
    import psutil

    bureau = psutil.Process(bureau_pid)
    ctx = get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_load_loop if load_generator else _evaluate_loop,
            args=(address, str(tls), ids, seconds, queue, go, stream, threads),
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # the clients' start-up (imports, TLS) is not the bureau's work
        assert queue.get(timeout=120) == "ready"
    before = bureau.cpu_times()
    go.set()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    after = bureau.cpu_times()
    for p in procs:
        p.join()
    decisions = sum(d for d, _ in results)
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "clients": clients,
        "threads_per_client": threads,
        "clients_are": "a load generator (the bank's work left out)" if load_generator else "banks",
        "calls": "one stream per client" if stream else "a unary call per decision",
        "seconds": seconds,
        "decisions": decisions,
        "per_second": sum(d / s for d, s in results),
        "bureau_cpu_ms_per_decision": 1e3 * cpu / max(decisions, 1),
        "bureau_capacity_per_second_all_cores": (os.cpu_count() or 1) * decisions / max(cpu, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enterprises", type=int, default=2_000_000)
    parser.add_argument("--applicants", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--threads", type=int, default=16, help="applicants decided at once per client process"
    )
    parser.add_argument("--key-bits", type=int, default=2048, help="of the small model's job")
    parser.add_argument("--workdir", default="bench-out/lookup")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XINRONG_TABLES_DIR": str(workdir / "bank-tables")}
    os.environ.update(env)
    paths = make_city(workdir, args.enterprises, args.applicants)
    state = workdir / f"bureau-state-{args.enterprises}"
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "enterprises": args.enterprises,
        "applicants": args.applicants,
        "load_before": os.getloadavg(),
    }
    prep_s, _ = run(
        [str(BIN / "bureau-node"), "prepare", "--data", str(paths["bureau"]), "--id-column",
         "uscc", "--state-dir", str(state), "--bank-id", BANK_ID, "--lookups", "--quiet"]
    )  # fmt: skip
    report["bureau_preparation_s"] = prep_s
    test_keys = ["--allow-test-keys"] if args.key_bits < 2048 else []
    extra = list(test_keys)
    if "registry" in paths:
        extra += ["--registry", str(paths["registry"]), "--events", str(paths["events"])]
    bureau = start_bureau(paths["bureau"], "uscc", state, workdir / "tls", *extra)
    tls = ["--tls-dir", str(bureau.bank_tls)]
    try:
        model_dir = workdir / "model"
        train_s, _ = run(
            [str(BIN / "bank-node"), "train", "--bureau", bureau.address, *tls, "--data",
             str(paths["train"]), "--id-column", "uscc", "--label", "y", "--model-dir",
             str(model_dir), "--key-bits", str(args.key_bits), "--epochs", "2", "--quiet",
             "--overwrite",
             *test_keys]
        )  # fmt: skip
        report["small_model_training_s"] = train_s
        report |= publish(bureau.address, bureau.bank_tls, model_dir)
        one = pacsv.read_csv(
            paths["applicants"],
            convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
        ).slice(0, 1)
        report["single_decision"] = single_decisions(
            bureau.address, bureau.bank_tls, model_dir, one, args.decisions
        )
        ids = (
            pacsv.read_csv(
                paths["applicants"],
                convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
            )
            .column("uscc")
            .to_pylist()[:1000]
        )
        at = (bureau.address, bureau.bank_tls, ids)
        pid = bureau.process.pid
        # side by side in one run: a unary call per decision, then one stream per client
        # process (one decision in flight each), then a decision service deciding
        # --threads applicants at once per process on its one stream
        report["throughput"] = [
            throughput(*at, n, args.seconds, pid, stream=stream)
            for stream in (False, True)
            for n in sorted({1, args.clients, 2 * args.clients})
        ] + [
            throughput(*at, n, args.seconds, pid, stream=True, threads=args.threads) for n in (1, 2)
        ]
        # the bureau's own capacity for decisions that each come alone: a load generator
        # with none of the bank's work, up to the bank's stream cap (max_lookup_streams)
        report["bureau_capacity"] = [
            throughput(*at, n, args.seconds, pid, stream=stream, load_generator=True)
            for stream in (False, True)
            for n in (args.clients * 2, 8)
        ]
        predict_s, _ = run(
            [str(BIN / "bank-node"), "predict", "--bureau", bureau.address, *tls,
             "--model-dir", str(model_dir), "--data", str(paths["applicants"]),
             "--id-column", "uscc", "--out", str(workdir / "scores.csv"), "--quiet"],
            env,
        )  # fmt: skip
        psi_s, _ = run(
            [str(BIN / "bank-node"), "psi", "--bureau", bureau.address, *tls, "--data",
             str(paths["applicants"]), "--id-column", "uscc", "--out",
             str(workdir / "matched.csv"), "--quiet"]
        )  # fmt: skip
        report["applicants_scored_privately_s"] = predict_s
        report["psi_session_same_file_s"] = psi_s
        report["ratio_private_scoring_to_psi"] = predict_s / psi_s
    finally:
        bureau.stop()
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def publish(address: str, tls: Path, model_dir: Path) -> dict[str, object]:
    """The first download of each table: the bureau seals it for this bank and key epoch."""
    from bank_node.client import BureauConnection
    from bank_node.lookup import MODEL_PREFIX, LookupClient, model_table
    from bank_node.training import load_model
    from protocols import lookup

    out: dict[str, object] = {}
    model_id = load_model(model_dir)["model_id"]
    with BureauConnection(address, BANK_ID, tls_dir=tls) as connection:
        client = LookupClient(connection, say=lambda text: None)
        catalogue = client.catalogue()
        names = [model_table(model_id)] + [p for p in catalogue if not p.startswith(MODEL_PREFIX)]
        for product in names:
            info = catalogue[product]
            started = time.perf_counter()
            table = client.table(product)
            seconds = time.perf_counter() - started
            wire = table.tags.nbytes + table.sealed.nbytes + table.revisions.nbytes
            out[f"publish_{product.split('_')[0] if product.startswith('model_') else product}"] = {
                "entries": table.tags.size,
                "payload_bytes": info.payload_bytes,
                "seconds": seconds,
                "wire_mb": wire / 1e6,
                "entry_bytes": lookup.LOOKUP_TAG_BYTES
                + lookup.sealed_bytes(info.payload_bytes)
                + lookup.REVISION.itemsize,
            }
    return out


if __name__ == "__main__":
    main()
