"""PSI benchmark: Xinrong's nodes over loopback gRPC beside OpenMined PSI, in one run.

    python benchmarks/psi.py                                   # 2,000,000 x 100,000
    python benchmarks/psi.py --bureau-ids 200000 --bank-ids 10000

Measures, with both nodes as separate processes on this machine:
  1. the bureau's one-time preparation (`bureau-node prepare`: read, normalise and hash its
     IDs to the group, then the bank's tag table),
  2. one bank session end to end (`bank-node psi` against `bureau-node serve`, process start
     to exit),
  3. peak memory (RSS) of every process of each side, sampled every 20 ms,
  4. the same sizes through openmined-psi (C++, one thread, GCS filter, FPR 1e-9), timed
     step by step in this process.
Needs the bench extras: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from bureau_process import BANK_ID, start_bureau

from xinrong.synthetic import generate_usccs

BIN = Path(sys.executable).parent


class PeakRss:
    """Samples a process tree; keeps the largest RSS seen for any one process, and the
    largest sum over the tree."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.per_process = 0
        self.tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                sizes = []
                for p in procs:
                    try:
                        sizes.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                if sizes:
                    self.per_process = max(self.per_process, max(sizes))
                    self.tree = max(self.tree, sum(sizes))
            except psutil.Error:
                pass
            self._stop.wait(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb_one_process": self.per_process / 2**20,
            "peak_rss_mb_all": self.tree / 2**20,
        }


def make_data(
    workdir: Path, bureau_ids: int, bank_ids: int, overlap: float
) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(2026)
    outsiders = int(bank_ids * (1 - overlap))
    codes = generate_usccs(bureau_ids + outsiders, rng).astype(str)
    bureau = codes[:bureau_ids]
    shared = rng.choice(bureau_ids, bank_ids - outsiders, replace=False)
    bank = np.concatenate([bureau[shared], codes[bureau_ids:]])
    rng.shuffle(bank)
    pq.write_table(pa.table({"uscc": pa.array(bureau)}), workdir / "bureau.parquet")
    pacsv.write_csv(pa.table({"uscc": pa.array(bank)}), workdir / "bank.csv")
    return bureau.tolist(), bank.tolist()


def timed_process(args: list[str]) -> tuple[float, dict[str, float], str]:
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = PeakRss(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    memory = peak.stop()
    if proc.returncode:
        raise SystemExit(f"{args[0]} failed:\n{err}")
    return seconds, memory, out


def bench_xinrong(workdir: Path, workers: int | None) -> dict[str, object]:
    state = workdir / "bureau-state"
    extra = [] if workers is None else ["--workers", str(workers)]
    prep_s, prep_mem, _ = timed_process(
        [
            str(BIN / "bureau-node"),
            "prepare",
            "--data",
            str(workdir / "bureau.parquet"),
            "--id-column",
            "uscc",
            "--state-dir",
            str(state),
            "--bank-id",
            BANK_ID,
            "--quiet",
            *extra,
        ]
    )
    bureau = start_bureau(workdir / "bureau.parquet", "uscc", state, workdir / "tls", *extra)
    try:
        bureau_peak = PeakRss(bureau.process.pid)
        session_s, bank_mem, out = timed_process(
            [
                str(BIN / "bank-node"),
                "psi",
                "--bureau",
                bureau.address,
                "--tls-dir",
                str(bureau.bank_tls),
                "--data",
                str(workdir / "bank.csv"),
                "--id-column",
                "uscc",
                "--out",
                str(workdir / "matched.csv"),
                "--quiet",
                *extra,
            ]
        )
        bureau_mem = bureau_peak.stop()
    finally:
        bureau.stop()
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "preparation_s": prep_s,
        "preparation_memory": prep_mem,
        "session_s": session_s,
        "session_reported_s": result["seconds"],
        "bank_memory": bank_mem,
        "bureau_serving_memory": bureau_mem,
        "intersection": result["intersection"],
    }


def bench_openmined(bureau: list[str], bank: list[str]) -> dict[str, object]:
    import private_set_intersection.python as om

    t0 = time.perf_counter()
    server = om.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(bank), bureau, om.DataStructure.GCS)
    t1 = time.perf_counter()
    client = om.client.CreateWithNewKey(True)
    request = client.CreateRequest(bank)
    t2 = time.perf_counter()
    response = server.ProcessRequest(request)
    t3 = time.perf_counter()
    intersection = client.GetIntersection(setup, response)
    t4 = time.perf_counter()
    return {
        "setup_s": t1 - t0,
        "session_s": t4 - t1,
        "client_request_s": t2 - t1,
        "server_process_s": t3 - t2,
        "client_intersect_s": t4 - t3,
        "intersection": len(intersection),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bureau-ids", type=int, default=2_000_000)
    parser.add_argument("--bank-ids", type=int, default=100_000)
    parser.add_argument(
        "--overlap", type=float, default=0.8, help="share of bank IDs the bureau holds"
    )
    parser.add_argument("--workdir", default="bench-out/psi")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-openmined", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("bureau-state"):
        subprocess.run(["rm", "-rf", str(stale)], check=True)

    bureau, bank = make_data(workdir, args.bureau_ids, args.bank_ids, args.overlap)
    ours = bench_xinrong(workdir, args.workers)
    report: dict[str, object] = {
        "machine": f"{platform.machine()} {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "bureau_ids": args.bureau_ids,
        "bank_ids": args.bank_ids,
        "xinrong": ours,
    }
    if not args.skip_openmined:
        theirs = bench_openmined(bureau, bank)
        report["openmined_psi"] = theirs
        ours_total = ours["preparation_s"] + ours["session_s"]
        theirs_total = theirs["setup_s"] + theirs["session_s"]
        report["speedup_whole_run"] = theirs_total / ours_total
        report["speedup_session"] = theirs["session_s"] / ours["session_s"]
        if theirs["intersection"] != ours["intersection"]:
            report["warning"] = "the two implementations found different intersections"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
