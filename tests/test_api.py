"""The bank's Python API: the README's example from a plain script over mutual TLS,
DataFrame and pyarrow inputs, typed errors, and an executor that never re-imports the
caller's main module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(path: Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a .py file in its own interpreter, as a user would (not under pytest)."""
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_pool_from_a_script_without_a_main_guard_does_not_rerun_the_script(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from node_runtime.parallel import make_executor
            from protocols import paillier as he

            print("top level", flush=True)
            pool = make_executor(2)
            pids = {pool.submit(os.getpid).result() for _ in range(6)}
            public_key, private_key = he.generate_keypair(768, allow_test_keys=True)
            sent = he.OwnerEncryptor(private_key).encrypt_many(list(range(200)), pool)
            back = [he.decrypt(private_key, c) for c in sent]
            pool.shutdown()
            print("in workers", os.getpid() not in pids, back == list(range(200)))
            """
        )
    )
    done = run_script(script, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    # the script's top level ran once, in its own process, and the workers did the work
    assert done.stdout.splitlines() == ["top level", "in workers True True"]
