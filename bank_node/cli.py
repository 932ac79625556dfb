"""``bank-node``: the bank's jobs against a bureau."""

from __future__ import annotations

import argparse
import logging
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_runtime.cli_common import (
    add_common_arguments,
    add_id_arguments,
    add_read_arguments,
    add_version_argument,
    check_writable,
    pad,
    print_result,
    read_options,
    run_main,
    to_log_files,
)
from node_runtime.progress import ProgressBars
from protocols import psi
from protocols.errors import InputDataError, PeerError, XinrongError
from protocols.ids import IdType

from .client import DEFAULT_BANK_ID
from .jobs import psi_job
from .receipts import add_receipts_parser

if TYPE_CHECKING:
    from .batch import Thresholds

log = logging.getLogger("bank_node")

BANK_ID_HELP = (
    "this bank's name at the bureau (default: the one in the --tls-dir certificate; "
    f"{DEFAULT_BANK_ID} with --insecure)"
)


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
        executor_spec=args.executor,
        tls_dir=args.tls_dir,
        on_progress=ProgressBars(enabled=False) if args.quiet else None,
        read_options=read_options(args),
    )
    _say(args)(
        f"matched {summary.intersection:,} of {summary.bank_ids:,} IDs "
        f"({summary.rejected} rejected, {summary.duplicates} duplicates) -> {summary.out}"
    )
    print_result(summary.as_dict())
    return 0


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    """What a command says on stderr: nothing with --quiet but its warnings (README:
    "--quiet keeps only warnings"; rows left out, columns dropped), and with --json not
    even those ("nothing but the final JSON line and errors"); warnings go to the
    --log-file either way (a review's --quiet --log-file run had lost them all)."""
    shown = not getattr(args, "json", False)

    def say(text: str) -> None:
        warning = text.startswith("warning:")
        if not args.quiet or (warning and shown):
            print(text, file=sys.stderr, flush=warning)
        if warning:
            to_log_files(log, text.removeprefix("warning:").strip())

    return say


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_train(args: argparse.Namespace) -> int:
    """The job's ID comes first once the bank's data passed its checks (a run refused
    before that started no job), and with every later failure the command that resumes it."""
    job_id = args.resume or secrets.token_hex(16)
    started: list[str] = []

    def announce(started_id: str) -> None:
        print(f"training job {started_id}", file=sys.stderr, flush=True)
        started.append(started_id)

    from .training import held_job, hold_directory

    try:
        # one run at a time in --model-dir, held across a restarted bureau's wait too
        with hold_directory(args.model_dir, "training job", "--model-dir"):
            if args.resume is not None:  # as the user gave it, not the bank's own resume below
                _refuse_settings_a_resume_keeps(args)
            while True:
                try:
                    return _train(args, job_id, announce)
                except PeerError as exc:
                    if not (started and exc.nothing_done and _wait_for_restart(args, job_id, exc)):
                        raise
                    # the bureau is back: on from the job's checkpoint, or, its start refused
                    # before anything was registered, started again
                    if held_job(args.model_dir) == job_id:
                        args.resume = job_id
    except XinrongError as exc:
        refused = getattr(exc, "status", None) in REFUSED_AT_START
        held = held_job(args.model_dir) == job_id
        if started and getattr(exc, "nothing_done", False) and not held:
            exc.args = (f"training job {job_id}: {exc}: run the command again once it is",)
        elif started and refused and not held:
            exc.args = (f"training job {job_id}: {exc}",)  # no job to resume or run again
        elif started:
            exc.args = (f"training job {job_id}: {exc}; {_resume_hint(args, job_id)}",)
        raise
    except KeyboardInterrupt:
        if started:
            hint = _resume_hint(args, job_id)
            print(f"training job {job_id} interrupted; {hint}", file=sys.stderr)
        raise


# the bureau's refusals of a job by policy or quota: "run the command again" would only be
# refused again (a review), and there is nothing to resume
REFUSED_AT_START = {"PERMISSION_DENIED", "RESOURCE_EXHAUSTED"}


def _wait_for_restart(args: argparse.Namespace, job_id: str, exc: PeerError) -> bool:
    """The bureau stops (its operator restarts it) and refused the job's next epoch, or its
    resume, before doing any of it: wait for it to be back, up to --wait-for-bureau seconds.
    True: try the resume (again)."""
    from node_runtime.transport.probe import BureauUnreachable, probe

    if args.wait_for_bureau <= 0:
        return False
    deadline = args.__dict__.setdefault(
        "_restart_deadline", time.monotonic() + args.wait_for_bureau
    )
    if time.monotonic() >= deadline:
        return False
    log.warning(  # said even with --quiet: the run may wait minutes
        "%s: waiting for the bureau to be back (up to %.0f s in all, --wait-for-bureau), "
        "then going on with the job",
        exc,
        args.wait_for_bureau,
    )
    time.sleep(RESTART_POLL_SECONDS)  # a stopping bureau still answers, refusing
    while time.monotonic() < deadline:
        try:
            probe(args.bureau, args.tls_dir)
            return True
        except BureauUnreachable:
            time.sleep(RESTART_POLL_SECONDS)
    return False


RESTART_POLL_SECONDS = 5.0


def _resume_hint(args: argparse.Namespace, job_id: str) -> str:
    from .training import held_job

    if held_job(args.model_dir) != job_id:
        return (
            "it cannot be resumed (no epoch had finished, or steps of the next one had gone to "
            "the bureau, which decrypts each step once): run the command again for a new job"
        )
    transport = f"--tls-dir {shlex.quote(args.tls_dir)}" if args.tls_dir else "--insecure"
    if args.allow_test_keys:
        transport += " --allow-test-keys"
    return (
        f"resume it with: bank-node train --bureau {shlex.quote(args.bureau)} --model-dir "
        f"{shlex.quote(str(args.model_dir))} --resume {job_id} {transport}"
    )


# what a job's checkpoint fixes: given with --resume, they would be taken and not used
RESUME_FIXED = (
    "data",
    "id_column",
    "id_type",
    "label",
    "positive_label",
    "encoding",
    "delimiter",
    "sheet",
    "skip_rows",
    "bank_features",
    "bureau_features",
    "validation_fraction",
    "epochs",
    "patience",
    "batch_size",
    "optimizer",
    "learning_rate",
    "decay",
    "penalty",
    "alpha",
    "seed",
    "key_bits",
    "compare_bank_only",
)  # not --min-iv or --iv-table: they chose the features at the start, which a resume keeps


def _refuse_settings_a_resume_keeps(args: argparse.Namespace) -> None:
    """``--resume`` with a setting other than the job's (a review's ``--epochs 4
    --learning-rate 0.5`` were parsed and silently not used): refused, naming them. The
    same values as the job's pass, so the first command with ``--resume`` added works."""
    from .training import _load_checkpoint

    saved = _load_checkpoint(args.model_dir, args.resume)
    theirs = {**saved, **saved["optimizer"], **saved.get("read_options", {})}
    theirs["optimizer"] = saved["optimizer"]["name"]
    ours = {**vars(args), **vars(read_options(args))}  # the delimiter as the job reads it
    ours["data"] = args.data and str(Path(args.data).resolve())
    for name in ("bank_features", "bureau_features"):  # lists: the order does not matter
        ours[name] = sorted(_names(getattr(args, name)) or [])
        theirs[name] = sorted(theirs.get(name) or [])
    defaults = getattr(args, "resume_defaults", {})  # from the parser: given, or not
    changed = [
        f"--{dest.replace('_', '-')} {getattr(args, dest)}"
        + (f" (the job's: {theirs[dest]})" if dest in theirs else "")
        for dest in RESUME_FIXED
        if dest in defaults
        and getattr(args, dest) != defaults[dest]
        and (dest not in theirs or ours[dest] != theirs[dest])
    ]
    if changed:
        raise InputDataError(
            f"--resume continues job {args.resume} with the settings it started with; drop "
            f"{', '.join(changed)} (or start a new job with them)"
        )


def _train(args: argparse.Namespace, job_id: str, announce: Callable[[str], None]) -> int:
    if args.resume is None:
        missing = [
            f"--{n.replace('_', '-')}"
            for n in ("data", "id_column", "label")
            if getattr(args, n) is None
        ]
        if missing:
            raise InputDataError(f"train needs {', '.join(missing)} (or --resume JOB_ID)")
    from protocols.optim import OptimizerConfig

    from .training import refuse_a_kept_model, train_job

    if args.resume is None:  # before an IV request of --min-iv is charged
        refuse_a_kept_model(args.model_dir, args.overwrite)

    bank_features, bureau_features = _names(args.bank_features), _names(args.bureau_features)
    if args.iv_table is not None and args.min_iv is None:
        raise InputDataError("--iv-table is read with --min-iv: name the IV to keep features at")
    if args.min_iv is not None and args.resume is None:
        from .toolkit import iv_job, select_by_iv, unmeasured_features

        iv_table = Path(args.iv_table or Path(args.model_dir) / "iv.csv")
        if args.iv_table is None:  # an IV request of its own (charged to the day's budget)
            iv_job(out=iv_table, **_iv_job_arguments(args))
        bank_features, bureau_features = select_by_iv(iv_table, args.min_iv)
        unmeasured = unmeasured_features(iv_table)
        if unmeasured:  # IV 0 that says nothing: left out, but said
            _say(args)(
                f"warning: {len(unmeasured)} bureau feature(s) unmeasured (too few defaults for "
                f"the bureau's noise), left out: {', '.join(unmeasured[:5])}"
                f"{' ...' if len(unmeasured) > 5 else ''}"
            )
        if not bureau_features:
            print(
                f"error: no bureau feature has IV >= {args.min_iv} (see {iv_table})",
                file=sys.stderr,
            )
            return 2
        _say(args)(
            f"IV >= {args.min_iv}: {len(bank_features)} bank and {len(bureau_features)} "
            f"bureau features (table in {iv_table})"
        )
    optimizer = OptimizerConfig(
        name=args.optimizer,
        learning_rate=args.learning_rate,
        penalty=args.penalty,
        alpha=args.alpha,
        decay=args.decay,
    )
    summary = train_job(
        bureau=args.bureau,
        data=args.data,
        id_column=args.id_column,
        label=args.label,
        model_dir=args.model_dir,
        bank_id=args.bank_id,
        id_type=IdType(args.id_type),
        bank_features=bank_features,
        bureau_features=bureau_features,
        validation_fraction=args.validation_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=optimizer,
        seed=args.seed,
        key_bits=args.key_bits,
        allow_test_keys=args.allow_test_keys,
        compare_bank_only=args.compare_bank_only,
        workers=args.workers,
        executor_spec=args.executor,
        tls_dir=args.tls_dir,
        patience=args.patience,
        resume=args.resume,
        job_id=job_id,
        on_start=announce,
        overwrite=args.overwrite,
        # the features were chosen from MODEL_DIR/iv.csv, which this run wrote; one named
        # with --iv-table leaves an older MODEL_DIR/iv.csv stale, to go with the old model
        keep_iv_table=args.min_iv is not None and args.iv_table is None,
        quiet=args.quiet,
        say=_say(args),
        read_options=read_options(args),
        positive_label=args.positive_label,
    )
    line = (
        f"model {summary['model_id']}: validation AUC {summary['validation_auc']}, "
        f"KS {summary['validation_ks']} after {summary['epochs']} epochs"
    )
    if args.compare_bank_only:
        line += f"; bank-only AUC {summary['bank_only_auc']}"
    _say(args)(line)
    print_result(summary)
    return 0


def _iv_job_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """What `iv` and `train --min-iv` pass alike to ``toolkit.iv_job``."""
    return {
        "bureau": args.bureau,
        "data": args.data,
        "id_column": args.id_column,
        "label": args.label,
        "bank_id": args.bank_id,
        "id_type": IdType(args.id_type),
        "bank_features": _names(args.bank_features),
        "bureau_features": _names(args.bureau_features),
        "tls_dir": args.tls_dir,
        "key_bits": args.key_bits,
        "allow_test_keys": args.allow_test_keys,
        "workers": args.workers,
        "executor_spec": args.executor,
        "quiet": args.quiet,
        "say": _say(args),
        "read_options": read_options(args),
        "positive_label": args.positive_label,
    }


def cmd_iv(args: argparse.Namespace) -> int:
    from .toolkit import format_iv_table, iv_job, read_iv_table

    summary = iv_job(
        out=args.out,
        max_bins=args.bins,
        min_bin_count=args.min_bin_count,
        min_bin_share=args.min_bin_share,
        monotonic=not args.no_monotonic,
        **_iv_job_arguments(args),
    )
    if not args.quiet:
        print(format_iv_table(read_iv_table(summary["out"])), file=sys.stderr)
    print_result(summary)
    return 0


def cmd_scorecard(args: argparse.Namespace) -> int:
    from protocols.scorecard import Scaling

    from .toolkit import scorecard_job

    summary = scorecard_job(
        args.model_dir,
        args.bank_id,
        Scaling(args.base_score, args.pdo, args.base_odds),
        bureau=args.bureau,
        say=_say(args),
        tls_dir=args.tls_dir,
    )
    print_result(summary)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .training import predict_job

    summary = predict_job(
        bureau=args.bureau,
        model_dir=args.model_dir,
        data=args.data,
        id_column=args.id_column,
        out=args.out,
        bank_id=args.bank_id,
        points=args.scorecard,
        tls_dir=args.tls_dir,
        id_type=IdType(args.id_type) if args.id_type else None,
        workers=args.workers,
        executor_spec=args.executor,
        quiet=args.quiet,
        say=_say(args),
        read_options=read_options(args),
        scoring=args.scoring,
        fallback=args.fallback,
        id_problems=True,  # scores.csv is read by people: a mistyped ID must show as such
    )
    _say(args)(
        f"scored {summary['rows']:,} applicants ({summary['bureau_matched']:,} known to the "
        f"bureau) -> {summary['out']}"
    )
    print_result(summary)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    from .lookup import lookup_job

    products = [p.strip() for p in args.products.split(",") if p.strip()]
    summary = lookup_job(
        bureau=args.bureau,
        data=args.data,
        id_column=args.id_column,
        products=products,
        out=args.out,
        bank_id=args.bank_id,
        id_type=IdType(args.id_type),
        tls_dir=args.tls_dir,
        say=_say(args),
        read_options=read_options(args),
    )
    _say(args)(
        f"looked up {summary['looked_up']:,} enterprises privately ({summary['known_to_bureau']:,} "
        f"known to the bureau): {', '.join(products)} -> {summary['out']}"
    )
    print_result(summary)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .api import connect
    from .frames import records

    with connect(
        args.bureau, tls_dir=args.tls_dir, bank_id=args.bank_id, insecure=args.insecure
    ) as bureau:
        features = records(bureau.features())
    for f in features:
        public = "public" if f.get("public") else ""
        _say(args)(f"{pad(f['name'], 32)} {f['kind']:<9} {public:<7} {f['description']}")
    print_result({"features": features})
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .api import connect
    from .toolkit import kept_models

    with connect(
        args.bureau, tls_dir=args.tls_dir, bank_id=args.bank_id, insecure=args.insecure
    ) as bureau:
        if args.models_command == "delete":
            print_result(bureau.delete_model(args.model_id))
            return 0
        models, limit = kept_models(bureau.connection)
    say = _say(args)
    for m in models:
        card = ", scorecard" if m["scorecard"] else ""
        say(
            f"{m['model_id']} {m['created']} epoch {m['epoch']}, "
            f"{len(m['features'])} bureau features{card}"
        )
    say(f"{len(models)} of at most {limit} models kept at the bureau")
    print_result({"models": models, "limit": limit})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bank_node.report import build_report

    iv_table = args.iv_table
    if iv_table is None and (Path(args.model_dir) / "iv.csv").exists():
        iv_table = Path(args.model_dir) / "iv.csv"  # written by train --min-iv
    summary = build_report(
        args.model_dir, args.out, iv_table=iv_table, title=args.title, lang=args.lang
    )
    _say(args)(f"report: {summary['path']}")
    print_result(summary)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """Exit status 0 without alerts, 3 with alerts (a scheduler's signal), 2 for bad input."""
    from .batch import Thresholds, batch_job

    products = _names(args.products) or []
    thresholds = Thresholds(
        psi_moderate=args.psi_moderate,
        psi_significant=args.psi_significant,
        psi_bins=args.psi_bins,
        headcount_relative=args.headcount_change,
        headcount_absolute=args.headcount_min,
        band_drop=args.band_drop,
    )
    outcome = batch_job(
        portfolio=args.portfolio,
        id_column=args.id_column,
        model_dir=args.model_dir,
        out=args.out,
        bank_id=args.bank_id,
        bureau=args.bureau,
        products=products,
        previous=args.previous,
        thresholds=thresholds,
        id_type=IdType(args.id_type) if args.id_type else None,
        lang=args.lang,
        tls_dir=args.tls_dir,
        workers=args.workers,
        executor_spec=args.executor,
        quiet=args.quiet,
        say=_say(args),
        read_options=read_options(args),
    )
    summary = outcome.summary
    if summary["baseline"]:
        _say(args)(f"baseline run -> {outcome.out} (no previous run: nothing compared)")
    else:
        high = summary["alerts_by_severity"]["high"]
        _say(args)(
            f"{summary['alerts']:,} alerts ({high:,} high) against {outcome.previous} "
            f"-> {outcome.out / 'alerts.csv'}"
        )
    print_result({"out": str(outcome.out), **summary})
    return outcome.exit_status


def _add_bureau_question(
    parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]
) -> None:
    """A short question to the bureau: its address, the bank, a table on stderr or not."""
    parser.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    parser.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    parser.add_argument("--quiet", action="store_true", help="no table on stderr")
    parser.add_argument("--json", action="store_true", help="only the final JSON line")
    _add_tls(parser)
    parser.set_defaults(func=func, log_level="WARNING")


def _add_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-dir",
        default=None,
        help="mutual TLS with the bureau: DIR/ca.crt, bank.crt, bank.key (from the bureau's "
        "`bureau-node certs issue-bank`); required unless --insecure",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC to a bureau on loopback (development, tests)",
    )


# what the commands write where the user said (argument, flag, a directory?), checked before
# anything reaches the bureau (a charge for an IV request, a training job) and is lost to a
# directory that cannot be written; any other --out is a file
_OUTPUT_DIRS = {"train": ("model_dir", "--model-dir"), "batch": ("out", "--out")}


# what each command's --out is, and the names of other formats it must not be given: a
# review's `predict --out scores.xlsx` wrote CSV text under that name, which Excel refused
# to open ("the file format or extension is not valid"), as a PDF viewer a report's HTML
_OUT_FORMATS = {
    "psi": (".csv", "CSV"),
    "predict": (".csv", "CSV"),
    "lookup": (".csv", "CSV"),
    "iv": (".csv", "CSV"),
    "report": (".html", "an HTML page"),
}
_OTHER_FORMATS = {
    *(".xlsx", ".xls", ".xlsm", ".pdf", ".parquet", ".json", ".doc", ".docx"),
    *(".csv", ".tsv", ".tab", ".html", ".htm"),
}


def _check_out_format(command: str, out: Path) -> None:
    if command not in _OUT_FORMATS:
        return
    suffix, kind = _OUT_FORMATS[command]
    given = out.suffix.lower()
    allowed = {suffix, ".htm"} if suffix == ".html" else {suffix}
    if given in _OTHER_FORMATS - allowed:
        extra = " (UTF-8 with a BOM: Excel opens it as it is)" if suffix == ".csv" else ""
        raise InputDataError(
            f"--out {out}: {command} writes {kind}{extra}, not {given}: name it "
            f"{out.with_suffix(suffix).name} (nothing was sent to the bureau)"
        )


def _check_transport(args: argparse.Namespace) -> None:
    """Outputs writable; TLS unless the user explicitly asked for plaintext to a loopback
    bureau; the bank's name is its certificate's, or DEFAULT_BANK_ID on plaintext
    (``api.bank_identity``)."""
    if args.command in _OUTPUT_DIRS:
        name, flag = _OUTPUT_DIRS[args.command]
        check_writable(getattr(args, name), flag, directory=True)
    elif getattr(args, "out", None):
        data = getattr(args, "data", None)
        inputs: dict[str, str | Path] = {"--data": data} if data else {}
        model_dir = getattr(args, "model_dir", None)
        if model_dir:  # a review's `predict --out MODEL_DIR/model.json` replaced the model
            for name in ("model.json", "evaluation.csv", "scorecard.csv", "checkpoint.json"):
                inputs[f"--model-dir's {name}"] = Path(model_dir) / name
        check_writable(args.out, "--out", inputs=inputs)
        _check_out_format(args.command, Path(args.out))
    if not hasattr(args, "insecure"):
        return
    from .api import bank_identity

    name = bank_identity(
        getattr(args, "bureau", None), args.tls_dir, getattr(args, "bank_id", None), args.insecure
    )
    if hasattr(args, "bank_id"):
        args.bank_id = name


def _batch_defaults() -> Thresholds:
    from .batch import Thresholds

    return Thresholds()


def _add_psi_parser(sub: Any) -> None:
    """`psi`: which of the bank's clients the bureau knows."""
    run = sub.add_parser("psi", help="find which of the bank's clients the bureau knows")
    run.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    add_id_arguments(run)
    run.add_argument("--out", required=True, help="CSV of matched IDs (rejects go next to it)")
    run.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    run.add_argument(
        "--reveal",
        choices=[r.value for r in psi.Reveal],
        default=psi.Reveal.BOTH.value,
        help="both: the bureau learns the intersection too (needed for training); "
        "bank: only the bank learns it",
    )
    add_common_arguments(run)
    _add_tls(run)
    run.set_defaults(func=cmd_psi)


def _add_train_parser(sub: Any) -> None:
    """`train`: a joint model with the bureau."""
    train = sub.add_parser("train", help="train a joint model with the bureau")
    train.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    add_id_arguments(train)
    for action in train._actions:  # not needed with --resume; checked in cmd_train
        if action.dest in ("data", "id_column"):
            action.required = False
    train.add_argument("--label", default=None, help="the 0/1 default label column")
    train.add_argument(
        "--positive-label",
        default=None,
        help="the label value that means default (e.g. 是 or bad); the column's one other "
        "value means no default (default: labels are 0/1)",
    )
    train.add_argument(
        "--resume",
        default=None,
        metavar="JOB_ID",
        help="continue this job from MODEL_DIR/checkpoint.json (after either side restarted); "
        "its data and settings come from the checkpoint",
    )
    train.add_argument(
        "--wait-for-bureau",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="when the bureau is restarted by its operator, the job pauses after its epoch: "
        "wait up to this long for the bureau to be back and resume it (default 600; 0 stops "
        "with the --resume command instead)",
    )
    train.add_argument("--model-dir", required=True, help="where the bank's half is written")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model MODEL_DIR holds (refused without: it may be in production)",
    )
    train.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    train.add_argument(
        "--bank-features",
        default=None,
        help="comma-separated bank columns (default: all but ID and label)",
    )
    train.add_argument(
        "--bureau-features",
        default=None,
        help="comma-separated bureau features (default: all it offers)",
    )
    train.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of matched rows held back (0: none; then early stopping "
        "watches the training loss)",
    )
    train.add_argument("--epochs", type=int, default=10, help="most epochs (default 10)")
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="epochs without improvement before stopping early (default 2; 4 when fewer "
        "than 1,000 rows are held back for validation)",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per batch (default: about a twentieth of the training rows, at most 1,024, "
        "at least the bureau's minimum and twice the wider party's columns)",
    )
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    train.add_argument("--learning-rate", type=float, default=0.05)
    train.add_argument(
        "--decay", type=float, default=0.5, help="learning rate / (1 + decay x epoch)"
    )
    train.add_argument("--penalty", choices=["l2", "l1", "none"], default="l2")
    train.add_argument("--alpha", type=float, default=1e-4, help="penalty strength")
    train.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split and batch order (default: random, recorded in the model)",
    )
    train.add_argument("--key-bits", type=int, default=2048, help="Paillier key size")
    train.add_argument(
        "--allow-test-keys",
        action="store_true",
        help="allow keys below 2048 bits (tests only; insecure)",
    )
    train.add_argument(
        "--min-iv",
        type=float,
        default=None,
        help="first compute information values (into MODEL_DIR/iv.csv) and keep only the "
        "features with at least this IV",
    )
    train.add_argument(
        "--iv-table",
        default=None,
        help="with --min-iv: the IV table `bank-node iv` wrote (its CSV), read instead of a "
        "new IV request (which spends the day's privacy budget again)",
    )
    train.add_argument(
        "--compare-bank-only",
        action="store_true",
        help="also fit a plaintext model on the bank's columns alone",
    )
    add_common_arguments(train)
    _add_tls(train)
    # what was given with --resume is told from these, before cmd_train sets args.resume
    resume_defaults = {dest: train.get_default(dest) for dest in RESUME_FIXED}
    train.set_defaults(func=cmd_train, resume_defaults=resume_defaults)


def _add_predict_parser(sub: Any) -> None:
    """`predict`: applicants scored with a joint model."""
    predict = sub.add_parser("predict", help="score applicants with a joint model")
    predict.add_argument(
        "--bureau", default=None, help="the bureau node's HOST:PORT (default: as in training)"
    )
    predict.add_argument("--model-dir", required=True)
    predict.add_argument("--data", required=True, help="CSV, TSV, Excel or Parquet of applicants")
    predict.add_argument("--id-column", required=True)
    add_read_arguments(predict)
    predict.add_argument(
        "--id-type", choices=[t.value for t in IdType], default=None, help="default: as in training"
    )
    predict.add_argument("--out", required=True, help="CSV: ID, score, bureau_matched")
    predict.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    predict.add_argument(
        "--scorecard", action="store_true", help="add scorecard points (make the card first)"
    )
    predict.add_argument(
        "--scoring",
        choices=["private", "reveal-both"],
        default="private",
        help="private (default): the bureau learns only how many applicants are scored; "
        "reveal-both: PSI tells the bureau who they are (only if your bank's rules ask for it)",
    )
    predict.add_argument(
        "--fallback",
        choices=["bank-only"],
        default=None,
        help="if the bureau cannot be reached, score with the model's neutral bureau part "
        "and flag every row (bureau_fallback)",
    )
    add_common_arguments(predict)
    _add_tls(predict)
    predict.set_defaults(func=cmd_predict)


def _add_lookup_parser(sub: Any) -> None:
    """`lookup`: the bureau's data products, looked up privately."""
    lookup = sub.add_parser(
        "lookup", help="look up the bureau's data products for your clients, privately"
    )
    lookup.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    lookup.add_argument(
        "--products",
        required=True,
        help="comma-separated: size_class, headcount, watch, registration",
    )
    add_id_arguments(lookup)
    lookup.add_argument("--out", required=True, help="CSV: the ID column, then the products'")
    lookup.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    add_common_arguments(lookup)
    _add_tls(lookup)
    lookup.set_defaults(func=cmd_lookup)


def _add_scorecard_parser(sub: Any) -> None:
    """`scorecard`: points per bin per feature."""
    card = sub.add_parser("scorecard", help="points per bin per feature for a trained model")
    card.add_argument("--model-dir", required=True)
    card.add_argument("--bureau", default=None, help="default: the bureau it was trained with")
    card.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    card.add_argument("--base-score", type=float, default=600.0, help="score at the base odds")
    card.add_argument("--pdo", type=float, default=50.0, help="points to double the odds")
    card.add_argument("--base-odds", type=float, default=20.0, help="good:bad odds at base")
    card.add_argument("--quiet", action="store_true", help="warnings only")
    card.add_argument("--json", action="store_true", help="only the final JSON line")
    _add_tls(card)
    card.set_defaults(func=cmd_scorecard, log_level="INFO")


def _add_report_parser(sub: Any) -> None:
    """`report`: one HTML page about a model."""
    report = sub.add_parser("report", help="one self-contained HTML page about a model")
    report.add_argument("--model-dir", required=True)
    report.add_argument("--out", default="report.html")
    report.add_argument("--iv-table", default=None, help="an IV table from `bank-node iv`")
    report.add_argument("--title", default=None)
    report.add_argument(
        "--lang",
        choices=["en", "zh"],
        default="en",
        help="en: English; zh: Chinese (needs a CJK font, e.g. Debian's fonts-noto-cjk)",
    )
    report.add_argument("--quiet", action="store_true", help="warnings only")
    report.add_argument("--json", action="store_true", help="only the final JSON line")
    report.set_defaults(func=cmd_report, log_level="INFO")


def _add_iv_parser(sub: Any) -> None:
    """`iv`: weight of evidence and information value."""
    iv = sub.add_parser("iv", help="weight of evidence and information value of every feature")
    iv.add_argument("--bureau", required=True, help="the bureau node's HOST:PORT")
    add_id_arguments(iv)
    iv.add_argument("--label", required=True, help="the 0/1 default label column")
    iv.add_argument(
        "--positive-label",
        default=None,
        help="the label value that means default (e.g. 是 or bad); the column's one other "
        "value means no default (default: labels are 0/1)",
    )
    iv.add_argument("--out", default="iv.csv", help="the IV table (CSV); bins go beside it")
    iv.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    iv.add_argument("--bank-features", default=None, help="comma-separated (default: all)")
    iv.add_argument("--bureau-features", default=None, help="comma-separated (default: all)")
    iv.add_argument("--bins", type=int, default=10, help="quantile bins per number (max 50)")
    iv.add_argument("--min-bin-count", type=int, default=50, help="smaller bins are merged")
    iv.add_argument(
        "--min-bin-share",
        type=float,
        default=0.02,
        help="bins below this share of the matched clients are merged too (default 0.02: "
        "the bureau's noise moves a small bin's WOE; 0 for --min-bin-count alone)",
    )
    iv.add_argument(
        "--no-monotonic",
        action="store_true",
        help="keep the quantile bins (default: merge to a monotonic bad rate)",
    )
    iv.add_argument("--key-bits", type=int, default=2048)
    iv.add_argument("--allow-test-keys", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(iv)
    _add_tls(iv)
    iv.set_defaults(func=cmd_iv)


def _add_catalogue_parsers(sub: Any) -> None:
    """`features` and `models`: the bureau's catalogue and this bank's models there."""
    features = sub.add_parser("features", help="list the bureau's feature catalogue")
    _add_bureau_question(features, cmd_features)

    models = sub.add_parser("models", help="the models this bank keeps at the bureau")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="list them, and the bureau's limit")
    deleting = models_sub.add_parser(
        "delete", help="delete one at the bureau, with its scorecard and lookup tables"
    )
    deleting.add_argument("model_id", help="the model's id (`models list`, model.json)")
    for command in (listing, deleting):
        _add_bureau_question(command, cmd_models)


def _add_batch_parser(sub: Any) -> None:
    """`batch`: a portfolio re-scored and compared with the previous run."""
    batch = sub.add_parser(
        "batch",
        help="re-score (and re-look-up) a portfolio and compare it with the previous run",
        description="A batch run (自动跑批): scores the portfolio with a joint model, looks up "
        "data products privately, compares everything with the previous run and writes "
        "OUT/scores.csv, products.csv, portfolio.parquet, alerts.csv, batch.html and, last, "
        "summary.json. Exit status: 0 without alerts, 3 with alerts, 2 for bad input.",
    )
    batch.add_argument(
        "--bureau", default=None, help="the bureau node's HOST:PORT (default: as in training)"
    )
    batch.add_argument("--portfolio", required=True, help="CSV, TSV, Excel or Parquet of clients")
    batch.add_argument("--id-column", required=True, help="column holding the enterprise IDs")
    add_read_arguments(batch)
    batch.add_argument(
        "--id-type", choices=[t.value for t in IdType], default=None, help="default: as in training"
    )
    batch.add_argument("--model-dir", required=True, help="the model to score with")
    batch.add_argument(
        "--products",
        default=None,
        help="comma-separated data products to look up privately: size_class, headcount, "
        "watch, registration (default: none, scores only)",
    )
    batch.add_argument("--out", required=True, help="this run's directory (e.g. runs/2026-12)")
    batch.add_argument(
        "--previous",
        default=None,
        help="the run to compare with (default: the newest finished run beside --out; "
        "none: a baseline run)",
    )
    batch.add_argument("--bank-id", default=None, help=BANK_ID_HELP)
    batch.add_argument(
        "--lang", choices=["en", "zh"], default="en", help="batch.html in English or Chinese"
    )
    defaults = _batch_defaults()
    batch.add_argument(
        "--psi-moderate",
        type=float,
        default=defaults.psi_moderate,
        help="PSI from which a shift is a medium alert (default %(default)s)",
    )
    batch.add_argument(
        "--psi-significant",
        type=float,
        default=defaults.psi_significant,
        help="PSI from which a shift is a high alert (default %(default)s)",
    )
    batch.add_argument(
        "--psi-bins",
        type=int,
        default=defaults.psi_bins,
        help="PSI bins of a number, at the previous run's quantiles (default %(default)s)",
    )
    batch.add_argument(
        "--headcount-change",
        type=float,
        default=defaults.headcount_relative,
        help="relative change of insured employees that is an alert (default %(default)s) ...",
    )
    batch.add_argument(
        "--headcount-min",
        type=int,
        default=defaults.headcount_absolute,
        help="... when at least this many people (default %(default)s)",
    )
    batch.add_argument(
        "--band-drop",
        type=int,
        default=defaults.band_drop,
        help="score bands an enterprise must fall to raise an alert (default %(default)s; 0: none)",
    )
    add_common_arguments(batch)
    _add_tls(batch)
    batch.set_defaults(func=cmd_batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bank-node", description="Xinrong's node inside a bank.")
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    _add_psi_parser(sub)
    _add_train_parser(sub)
    _add_predict_parser(sub)
    _add_lookup_parser(sub)
    _add_scorecard_parser(sub)
    _add_report_parser(sub)
    _add_iv_parser(sub)
    _add_catalogue_parsers(sub)
    _add_batch_parser(sub)
    add_receipts_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv, check=_check_transport)


if __name__ == "__main__":
    sys.exit(main())
