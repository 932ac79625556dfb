"""``bank-node``: the bank's jobs against a bureau."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xinrong.cli_common import (
    add_common_arguments,
    add_id_arguments,
    print_result,
    run_main,
)
from xinrong.progress import ProgressBars
from xinrong.protocols import psi
from xinrong.protocols.ids import IdType

from .jobs import psi_job

DEFAULT_BANK_ID = "demo-bank"


def cmd_psi(args: argparse.Namespace) -> int:
    summary = psi_job(
        bureau=args.bureau,
        data=args.data,
        id_column=args.id_column,
        out=args.out,
        bank_id=args.bank_id,
        id_type=IdType(args.id_type),
        reveal=psi.Reveal(args.reveal),
        workers=args.workers,
        on_progress=ProgressBars(enabled=False) if args.quiet else None,
    )
    print(
        f"matched {summary.intersection:,} of {summary.bank_ids:,} IDs "
        f"({summary.rejected} rejected, {summary.duplicates} duplicates) -> {summary.out}",
        file=sys.stderr,
    )
    print_result(summary.as_dict())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    say = (lambda text: None) if args.quiet else None
    result = run_demo(
        Path(args.workdir),
        enterprises=args.enterprises,
        bank_clients=args.bank_clients,
        seed=args.seed,
        workers=args.workers,
        say=say,
    )
    print_result(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bank-node", description="Xinrong's node inside a bank.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("psi", help="find which of the bank's clients the bureau knows")
    run.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    add_id_arguments(run)
    run.add_argument("--out", required=True, help="CSV of matched IDs (rejects go next to it)")
    run.add_argument("--bank-id", default=DEFAULT_BANK_ID, help="this bank's name at the bureau")
    run.add_argument(
        "--reveal",
        choices=[r.value for r in psi.Reveal],
        default=psi.Reveal.BOTH.value,
        help="both: the bureau learns the intersection too (needed for training); "
        "bank: only the bank learns it",
    )
    add_common_arguments(run)
    run.set_defaults(func=cmd_psi)

    demo = sub.add_parser("demo", help="run the whole story on synthetic data, on this machine")
    demo.add_argument("--workdir", default="xinrong-demo", help="where data and outputs go")
    demo.add_argument("--enterprises", type=int, default=50_000)
    demo.add_argument("--bank-clients", type=int, default=5_000)
    demo.add_argument("--seed", type=int, default=1)
    add_common_arguments(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
