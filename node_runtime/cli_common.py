"""What both command lines share: logging set-up, error reporting, the final JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from node_runtime.tables import ReadOptions
from protocols.errors import XinrongError
from protocols.ids import IdType


def distribution_version() -> str:
    """The installed ``xinrong`` distribution's version (both nodes ship in it)."""
    try:
        return metadata.version("xinrong")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {distribution_version()}")


def add_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="CSV, TSV, Excel (.xlsx/.xls) or Parquet file (by extension)"
    )
    parser.add_argument("--id-column", required=True, help="column holding the enterprise IDs")
    add_read_arguments(parser)
    parser.add_argument(
        "--id-type",
        choices=[t.value for t in IdType],
        default=IdType.USCC.value,
        help="uscc: Unified Social Credit Codes, normalised and checked (default); "
        "text: any non-empty string after trimming",
    )


def add_read_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoding",
        default=None,
        help="text encoding of a CSV/TSV file (default: detected; GBK is read as GB18030)",
    )
    parser.add_argument(
        "--delimiter",
        default=None,
        help="field separator of a text file (default: tab for .tsv, else comma)",
    )
    parser.add_argument("--sheet", default=None, help="Excel sheet (default: the first)")


def read_options(args: argparse.Namespace) -> ReadOptions:
    delimiter = args.delimiter
    if delimiter in ("\\t", "tab"):  # a tab is hard to type on a command line
        delimiter = "\t"
    return ReadOptions(encoding=args.encoding, delimiter=delimiter, sheet=args.sheet)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes for the cryptography (default: one per core; 0: none)",
    )
    parser.add_argument(
        "--executor",
        default=None,
        help="where the cryptography runs: 'local' (default: a process pool of --workers) "
        "or 'dask://HOST:PORT' (this party's own Dask scheduler)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument(
        "--json",
        action="store_true",
        help="for scripts: nothing but the final JSON line (on stdout) and errors",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def setup_logging(level: str, quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def print_result(result: dict[str, Any]) -> None:
    """The last line on stdout: one JSON object, for scripts."""
    print(json.dumps(result, ensure_ascii=False), flush=True)


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a sub-command; typed errors become one clear line on stderr and exit status 2."""
    try:
        return command(args)
    except XinrongError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse, set up logging, run the chosen sub-command (after ``check``, if given)."""
    args = parser.parse_args(argv)
    if getattr(args, "json", False):
        args.quiet = True
    setup_logging(args.log_level, args.quiet)

    def command(parsed: argparse.Namespace) -> int:
        if check is not None:
            check(parsed)
        return int(args.func(parsed))

    return run_command(command, args)
