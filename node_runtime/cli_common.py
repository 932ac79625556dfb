"""What both command lines share: logging set-up, error reporting, the final JSON line."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import sys
import unicodedata
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from node_runtime.tables import ReadOptions
from protocols.errors import InputDataError, XinrongError
from protocols.ids import IdType

log = logging.getLogger("xinrong")


def distribution_version() -> str:
    """The installed ``xinrong`` distribution's version (both nodes ship in it)."""
    try:
        return metadata.version("xinrong")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {distribution_version()}")


def resolves_to_loopback(host: str) -> bool:
    """Every address ``host`` resolves to is a loopback address (what --insecure allows):
    the name ``localhost`` is not trusted, what it resolves to is."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


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
    parser.add_argument(
        "--skip-rows",
        type=int,
        default=0,
        help="rows above the header to pass over (a title row, notes; default 0)",
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    delimiter = args.delimiter
    if delimiter in ("\\t", "tab"):  # a tab is hard to type on a command line
        delimiter = "\t"
    return ReadOptions(
        encoding=args.encoding, delimiter=delimiter, sheet=args.sheet, skip_rows=args.skip_rows
    )


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
    parser.add_argument(
        "--log-file",
        default=None,
        help="also append the log to FILE (at --log-level, even with --quiet)",
    )


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, quiet: bool = False, log_file: str | None = None) -> None:
    chosen = getattr(logging, level.upper(), logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else chosen)
    handlers: list[logging.Handler] = [console]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise SystemExit(f"error: --log-file {log_file}: {exc.strerror}") from None
        handlers[-1].setLevel(chosen)
    logging.basicConfig(level=min(h.level for h in handlers), format=_FORMAT, handlers=handlers)


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns: a Chinese character takes two
    (f-string padding counts it as one, and a table of 中文 names went askew)."""
    shown = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - shown)


def print_result(result: dict[str, Any]) -> None:
    """The last line on stdout: one JSON object, for scripts."""
    print(json.dumps(result, ensure_ascii=False), flush=True)


def check_writable(
    path: str | Path,
    flag: str,
    directory: bool = False,
    inputs: dict[str, str | Path] | None = None,
) -> None:
    """Before any work is charged: ``path`` (a file, or with ``directory`` a directory,
    made if need be) can be written, and is none of the command's ``inputs`` (flag -> path:
    a review's `psi --out` equal to `--data` replaced the bank's client file), or
    InputDataError naming ``flag``."""
    target = Path(path)
    for input_flag, given in (inputs or {}).items():
        if given and target.exists() and target.resolve() == Path(given).resolve():
            raise InputDataError(
                f"{flag} {target} is the file given as {input_flag}: it would be overwritten; "
                "name another file (nothing was sent to the bureau)"
            )
    if target.exists() and target.is_dir() != directory:
        kind = "a directory" if target.is_dir() else "a file"
        raise InputDataError(
            f"{flag} {target} is {kind}: name a {'directory' if directory else 'file'}"
        )
    existing = target if directory and target.exists() else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise InputDataError(
            f"{flag} {target}: {existing if not target.exists() else target} is not writable "
            "by this user; choose another place (nothing was sent to the bureau)"
        )


def to_log_files(logger: logging.Logger, text: str, level: int = logging.WARNING) -> None:
    """A line already printed on stderr, for the --log-file only (not printed again by the
    console's handler): a review's --quiet --log-file run had lost every warning, and the
    log ended without the error that ended the run."""
    record = logger.makeRecord(logger.name, level, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a sub-command; typed errors become one clear line on stderr and exit status 2
    (and in the --log-file)."""
    try:
        return command(args)
    except XinrongError as exc:
        print(f"error: {exc}", file=sys.stderr)
        to_log_files(log, str(exc), logging.ERROR)
        return 2
    except OSError as exc:  # a disk full, a directory not writable: said, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        to_log_files(log, f"{where}{exc.strerror or exc}", logging.ERROR)
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
    setup_logging(args.log_level, args.quiet, getattr(args, "log_file", None))

    def command(parsed: argparse.Namespace) -> int:
        if check is not None:
            check(parsed)
        return int(args.func(parsed))

    return run_command(command, args)
