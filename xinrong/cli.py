"""``xinrong demo``: the whole story on synthetic data, both nodes on this machine.

The demo runs a bureau node and a bank node side by side, so it lives here and not in
``bank_node`` (which, deployed inside a bank, imports nothing of the bureau's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node_runtime.cli_common import (
    add_common_arguments,
    add_version_argument,
    print_result,
    run_main,
)


def cmd_demo(args: argparse.Namespace) -> int:
    from xinrong.demo import run_demo

    say = (lambda text: None) if args.quiet else None
    result = run_demo(
        Path(args.workdir),
        enterprises=args.enterprises,
        bank_clients=args.bank_clients,
        seed=args.seed,
        workers=args.workers,
        say=say,
        key_bits=args.key_bits,
        allow_test_keys=args.allow_test_keys,
    )
    print_result(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xinrong", description=__doc__)
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole story on synthetic data, on this machine")
    demo.add_argument("--workdir", default="xinrong-demo", help="where data and outputs go")
    demo.add_argument("--enterprises", type=int, default=50_000)
    demo.add_argument("--bank-clients", type=int, default=5_000)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--key-bits", type=int, default=2048, help="Paillier key size")
    demo.add_argument(
        "--allow-test-keys",
        action="store_true",
        help="allow keys under 2048 bits (for tests and quick looks; never for real data)",
    )
    add_common_arguments(demo)
    demo.set_defaults(log_level="WARNING")  # the story on stderr, not the nodes' logs
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
