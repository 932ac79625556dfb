"""``bureau-node``: serve banks, prepare tag tables, make a synthetic city."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from node_runtime.cli_common import (
    add_common_arguments,
    add_id_arguments,
    add_version_argument,
    pad,
    print_result,
    read_options,
    resolves_to_loopback,
    run_main,
)
from node_runtime.progress import ProgressBars
from protocols import psi
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, XinrongError
from protocols.ids import IdType

from .admission import STREAM_IDLE_SECONDS, STREAMS_TOTAL
from .server import BureauNode

log = logging.getLogger("bureau_node")


def _node(args: argparse.Namespace) -> BureauNode:
    return BureauNode(
        data=args.data,
        id_column=args.id_column,
        state_dir=args.state_dir,
        id_type=IdType(args.id_type),
        workers=args.workers,
        executor=getattr(args, "executor", None),
        tls_dir=getattr(args, "tls_dir", None),
        config=getattr(args, "config", None),
        limits=psi.PsiLimits(max_bank_set_size=getattr(args, "max_bank_ids", 10_000_000)),
        graph=getattr(args, "graph", None),
        graph_flags=_graph_flags(getattr(args, "graph_flag", None)),
        graph_refresh_seconds=getattr(args, "graph_refresh", 60.0),
        registry=getattr(args, "registry", None),
        events=getattr(args, "events", None),
        training_limits=vlr.TrainingLimits(
            min_batch_size=getattr(args, "min_batch_size", 64),
            allow_test_keys=getattr(args, "allow_test_keys", False),
            max_feature_exposure=getattr(args, "max_feature_exposure", 0.05),
            max_readable_share=getattr(args, "max_readable_share", 0.5),
        ),
        read_options=read_options(args),
        streams_total=getattr(args, "max_streams_total", STREAMS_TOTAL),
        stream_idle_seconds=getattr(args, "stream_idle_seconds", STREAM_IDLE_SECONDS),
    )


def _graph_flags(pairs: list[str] | None) -> dict[str, str] | None:
    """``--graph-flag watch_list=abnormal_operation`` (repeatable) over the defaults."""
    if not pairs:
        return None
    from .edges import DEFAULT_FLAG_COLUMNS

    flags = dict(DEFAULT_FLAG_COLUMNS)
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name or not column:
            raise InputDataError(f"--graph-flag {pair!r}: expected NAME=COLUMN")
        flags[name] = column
    return {k: v for k, v in flags.items() if v != "none"}


def add_graph_arguments(parser: argparse.ArgumentParser, refresh: bool = False) -> None:
    parser.add_argument(
        "--graph",
        default=None,
        help="edge file (CSV or Parquet: src, dst, relation[, since, weight]) whose "
        "association-graph features the bureau offers beside its own columns",
    )
    parser.add_argument(
        "--graph-flag",
        action="append",
        default=None,
        metavar="NAME=COLUMN",
        help="the enterprise column behind a related-enterprise flag (value > 0), e.g. "
        "watch_list=abnormal_operation, defendant=court_judgements_3y, "
        "deregistered=deregistered (the defaults); COLUMN 'none' drops a flag",
    )
    if refresh:
        parser.add_argument(
            "--graph-refresh",
            type=float,
            default=60.0,
            help="seconds between checks of the edge file for changes (0: never)",
        )


def _prepare_dataset(node: BureauNode, quiet: bool) -> dict[str, object]:
    with ProgressBars(enabled=None if not quiet else False) as bars:
        summary = node.prepare(lambda done, total: bars("hashing IDs to the group", done, total))
    return asdict(summary)


def cmd_serve(args: argparse.Namespace) -> int:
    host = args.listen.rsplit(":", 1)[0].strip("[]")
    loopback = resolves_to_loopback(host)
    if not args.tls_dir and not args.insecure:
        print(
            "error: the bureau serves over mutual TLS: give --tls-dir DIR (made by "
            "`bureau-node certs init`), or --insecure for plaintext on loopback (development)",
            file=sys.stderr,
        )
        return 2
    if args.tls_dir and not args.config:
        print(
            "error: a bureau on mutual TLS serves the banks of its configuration: give "
            "--config FILE (see the README); --insecure alone serves any bank, on loopback",
            file=sys.stderr,
        )
        return 2
    if args.insecure and not loopback:
        print(
            f"error: --insecure serves plaintext, which is allowed on loopback only, not on "
            f"{host}; use --tls-dir",
            file=sys.stderr,
        )
        return 2
    node = _node(args)
    # the handlers only count: taking a lock in a handler (Event.set, the audit log) can
    # deadlock with the main thread it interrupted
    raised = {"stop": 0, "reload": 0}

    def count(name: str) -> Callable[..., None]:
        return lambda *_: raised.__setitem__(name, raised[name] + 1)

    signal.signal(signal.SIGTERM, count("stop"))
    signal.signal(signal.SIGHUP, count("reload"))
    try:
        summary = _prepare_dataset(node, args.quiet)
        port = node.start(args.listen)
        result = {"listening": args.listen, "port": port, "dataset": summary}
        if node.graph is not None and node.graph.summary is not None:
            result["graph"] = asdict(node.graph.summary)
        print_result(result)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, count("stop"))  # Ctrl-C as SIGTERM, once served
        while not raised["stop"]:
            time.sleep(0.2)
            if raised["reload"]:
                raised["reload"] = 0
                _reload(node)
        _let_jobs_pause(node, args.stop_seconds, raised)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop(grace=5)
    return 0


def _let_jobs_pause(node: BureauNode, seconds: float, raised: dict[str, int]) -> None:
    """Stopping: no new job or epoch starts, and the jobs inside an epoch run to its end,
    where their banks stop with a job they can resume (the bureau answers each step once in
    a job's life, so a job stopped inside an epoch is lost), for up to ``seconds``."""
    node.training.stopping.set()
    deadline = time.monotonic() + seconds
    waiting = node.training.pausing_jobs()
    if waiting:
        log.warning(
            "stopping: %d training job(s) finish their epoch first, for up to %.0f s "
            "(signal again to stop at once)",
            len(waiting),
            seconds,
        )
    while waiting and raised["stop"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        waiting = node.training.pausing_jobs()
    if waiting:
        log.warning("stopping with %d training job(s) inside an epoch: they end", len(waiting))


def _reload(node: BureauNode) -> None:
    """SIGHUP: the configuration file again; on error, the old one stays (and it is said)."""
    try:
        changes = node.reload()
    except XinrongError as exc:
        log.error("configuration NOT reloaded, the previous one stays in force: %s", exc)
        return
    except Exception:  # noqa: BLE001 - a reload never takes the node down with it
        log.exception("configuration NOT reloaded, the previous one stays in force")
        return
    summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in changes.items() if v)
    log.warning("configuration reloaded (%s)", summary or "no bank changed")


def cmd_prepare(args: argparse.Namespace) -> int:
    node = _node(args)
    try:
        banks: list[dict[str, object]] = []
        result: dict[str, object] = {"dataset": _prepare_dataset(node, args.quiet), "banks": banks}
        if node.graph is not None and node.graph.summary is not None:
            result["graph"] = asdict(node.graph.summary)
        for bank_id in args.bank_id:
            with ProgressBars(enabled=None if not args.quiet else False) as bars:
                for item in node.store.prepare_bank(bank_id, node.executor):
                    if isinstance(item, tuple):
                        bars(f"tags for {bank_id}", *item)
                if args.lookups:  # so that the bank's first table download does not wait
                    node.store.lookup_points(
                        bank_id,
                        node.executor,
                        functools.partial(bars, f"lookup points for {bank_id}"),
                    )
            banks.append({"bank_id": bank_id, "key_epoch": node.store.key_epoch(bank_id)})
    finally:
        node.stop()
    print_result(result)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from .store import BureauStore

    store = BureauStore(args.state_dir)
    if not (store.root / "banks" / args.bank_id).is_dir():
        raise InputDataError(
            f"the bureau has no key for bank {args.bank_id!r} in {args.state_dir} (it has "
            "never run PSI): check the bank id; its first PSI session makes its key"
        )
    epoch = store.rotate_key(args.bank_id)
    print_result({"bank_id": args.bank_id, "key_epoch": epoch})
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .features import BureauFeatures

    features = BureauFeatures(
        args.data, args.id_column, IdType(args.id_type), read_options=read_options(args)
    )
    if args.graph:
        import tempfile

        from .graph_source import GraphSource

        with tempfile.TemporaryDirectory() as scratch:
            GraphSource(args.graph, scratch, _graph_flags(args.graph_flag)).load(features)
    catalogue = [asdict(f) for f in features.catalogue()]
    for f in catalogue:
        public = "public" if f["public"] else ""
        line = f"{pad(f['name'], 32)} {f['kind']:<9} {public:<7} {f['description']}"
        print(line, file=sys.stderr)
    print_result({"features": catalogue, "enterprises": features.enterprises})
    return 0


def _bank_id(text: str) -> str:
    """A bank id as the configuration accepts it: it names a directory in the state."""
    from node_runtime.transport.channels import valid_bank_id

    if not valid_bank_id(text):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a bank id (1-64 letters, digits, '-', '_' or '.', starting "
            "with a letter or digit)"
        )
    return text


def cmd_models(args: argparse.Namespace) -> int:
    from .models import ModelStore

    models = ModelStore(args.state_dir)
    if args.models_command == "delete":
        from .audit import AuditLog
        from .store import BureauStore

        removed = models.delete(args.bank_id, args.model_id)
        # the bank's kept copy of the model's table opened on: its key epoch ends
        epoch = BureauStore(args.state_dir).rotate_key(args.bank_id)
        AuditLog(args.state_dir).append(
            args.bank_id, "model_deleted", "OK", model_id=args.model_id, by="bureau operator"
        )
        print_result(
            {
                "deleted": args.model_id,
                "bank_id": args.bank_id,
                "lookup_tables_removed": len(removed),
                "key_epoch": epoch,
            }
        )
        return 0
    if args.models_command == "forget":
        from .audit import AuditLog

        forgotten = models.forget_retired(args.bank_id, tuple(args.model_id) or None)
        AuditLog(args.state_dir).append(
            args.bank_id, "retired_forgotten", "OK", models=list(forgotten), by="bureau operator"
        )
        print_result({"bank_id": args.bank_id, "forgotten": list(forgotten)})
        return 0
    listed = models.list(args.bank_id)
    for m in listed:
        print(
            f"{m['bank_id']:<20} {m['model_id']} {m['created']} {len(m['features'])} features"
            f", epoch {m['epoch']}" + (", scorecard" if m["scorecard"] else ""),
            file=sys.stderr,
        )
    print_result({"models": listed})
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from node_runtime.transport import certs

    made: dict[str, object]
    if args.certs_command == "init":
        made = dict(certs.init_ca(args.tls_dir, args.host))
        print(
            f"CA and bureau certificate in {args.tls_dir}; keep ca.key at the bureau only",
            file=sys.stderr,
        )
    elif args.certs_command == "issue-bank":
        serials = [e["serial"] for e in certs.issued(args.tls_dir, args.bank_id)]
        if serials:  # a second issue replaced the bank's files, and the old stayed valid
            raise InputDataError(
                f"bank {args.bank_id} has a certificate already (serial {serials[-1]}): "
                f"`certs renew {args.bank_id}` issues a new one and names the old ones to "
                "revoke once the bank uses it"
            )
        made = dict(certs.issue_bank(args.tls_dir, args.bank_id))
        print(f"give the directory {made['dir']} to bank {args.bank_id}", file=sys.stderr)
    elif args.certs_command == "renew":
        made = certs.renew(args.tls_dir, args.bank_id)
        valid = [str(s) for s in made["previous_serials"]]  # type: ignore[attr-defined]
        later = (
            f"its earlier certificates ({', '.join(valid)}) stay valid until "
            f"revoked: `bureau-node certs revoke {args.bank_id} --serial SERIAL --tls-dir "
            f"{args.tls_dir}` once the bank uses the new one"
            if valid
            else "its earlier certificates are all revoked already"
        )
        print(f"give the directory {made['dir']} to bank {args.bank_id}; {later}", file=sys.stderr)
    else:
        made = certs.revoke(args.tls_dir, args.bank_id, args.serial)
        print(
            f"revoked {made['revoked']} of {args.bank_id}; a running bureau refuses them "
            "from their next call",
            file=sys.stderr,
        )
    print_result(made)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from protocols.transparency import Receipt

    from .audit import AuditLog, read_evidence

    if not (Path(args.state_dir) / "audit.sqlite3").exists():
        print(f"error: no audit log in {args.state_dir}", file=sys.stderr)
        return 2
    log = AuditLog(args.state_dir)
    if args.audit_command == "verify":
        evidence = [item for path in args.evidence for item in read_evidence(path)]
        count, problems = log.verify(evidence)
        for problem in problems:
            print(f"BROKEN: {problem.what}", file=sys.stderr)
        head = log.latest_head()
        print_result(
            {
                "records": count,
                "intact": not problems,
                "problems": [p.what for p in problems],
                "evidence": len(evidence),
                "signed_head": head.to_dict() if head else None,
            }
        )
        return 0 if not problems else 1
    if args.audit_command == "key":
        pem = log.public_key_pem()
        if args.out:
            Path(args.out).write_bytes(pem)
        else:
            sys.stderr.write(pem.decode())
        print_result({"log_id": log.log_id, "public_key": log.public_key.hex(), "out": args.out})
        return 0
    if args.audit_command == "prove":
        receipts = [r for r in read_evidence(args.receipts) if isinstance(r, Receipt)]
        proof = log.prove(receipts, args.bank)
        Path(args.out).write_text(json.dumps(proof) + "\n")
        print_result({"proofs": len(proof["proofs"]), "out": args.out})
        return 0
    written = log.export(args.out, args.since, args.format)
    print_result({"records": written, "out": args.out, "since": args.since})
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from xinrong.synthetic import generate_city, write_city

    if args.month < 1:
        raise InputDataError(f"--month counts from 1 (the first data date), got {args.month}")
    city = generate_city(args.enterprises, args.bank_clients, args.seed, month=args.month)
    paths = write_city(city, Path(args.out))
    print_result(
        {
            "enterprises": city.bureau.num_rows,
            "bank_clients": city.bank.num_rows,
            "seed": args.seed,
            "month": city.month,
            "data_date": city.data_date.isoformat(),
            **{k: str(v) for k, v in paths.items()},
        }
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureau-node", description="Xinrong's node at the credit-information platform."
    )
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve banks over gRPC")
    add_id_arguments(serve)
    serve.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on")
    serve.add_argument("--state-dir", required=True, help="where tag tables and logs are kept")
    serve.add_argument(
        "--max-bank-ids", type=int, default=10_000_000, help="most IDs a bank may send at once"
    )
    serve.add_argument(
        "--config",
        default=None,
        help="TOML file: the banks served, their features and daily quotas (see README); "
        "without it any bank is served (development)",
    )
    serve.add_argument(
        "--tls-dir",
        default=None,
        help="serve over mutual TLS with DIR/ca.crt, bureau.crt, bureau.key (bureau-node certs)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC, banks naming themselves: loopback only (development, tests)",
    )
    serve.add_argument(
        "--stop-seconds",
        type=float,
        default=60.0,
        help="on SIGTERM or Ctrl-C, wait up to this long for training jobs inside an epoch to "
        "finish it and pause where their banks can resume them (default 60; a second signal "
        "stops at once)",
    )
    serve.add_argument(
        "--min-batch-size",
        type=int,
        default=64,
        help="smallest training batch a bank may use (default 64)",
    )
    serve.add_argument(
        "--max-feature-exposure",
        type=float,
        default=0.05,
        help="refuse a model whose score, on more than this share of the enterprises, would "
        "be an affine function of one bureau feature (in groups sharing the others' values); "
        "default 0.05, 1 to turn the check off (SECURITY.md)",
    )
    serve.add_argument(
        "--max-readable-share",
        type=float,
        default=0.5,
        help="refuse a model when the scores of the bank's models together (kept, or deleted "
        "in the last year) would read one bureau feature's level right for more than this "
        "share of the enterprises beyond guessing, and more than the best of them alone; "
        "default 0.5, 1 to turn the check off (SECURITY.md)",
    )
    serve.add_argument(
        "--allow-test-keys",
        action="store_true",
        help="accept Paillier keys below 2048 bits (tests only; insecure)",
    )
    serve.add_argument(
        "--stream-idle-seconds",
        type=float,
        default=STREAM_IDLE_SECONDS,
        help="end a streaming call (PSI, binning, training step, scoring, table download) "
        "that waited this long on its bank, for a message or to take an answer "
        f"(default {STREAM_IDLE_SECONDS:g}; lookup streams: 30)",
    )
    serve.add_argument(
        "--max-streams-total",
        type=int,
        default=STREAMS_TOTAL,
        help="streaming calls of all banks open at once, lookup streams aside; each holds a "
        f"server thread (default {STREAMS_TOTAL}; per bank: max_streams in --config)",
    )
    add_graph_arguments(serve, refresh=True)
    serve.add_argument(
        "--registry",
        default=None,
        help="the registry file behind the data products (Parquet: uscc, industry_code, "
        "founded, status, capital, revenue, assets, insured employees now and 12 months ago)",
    )
    serve.add_argument(
        "--events",
        default=None,
        help="dated watch events (Parquet: uscc, kind, date) for the watch product",
    )
    add_common_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    features = sub.add_parser("features", help="list the feature catalogue banks see")
    add_id_arguments(features)
    add_graph_arguments(features)
    features.set_defaults(func=cmd_features, quiet=False, log_level="WARNING")

    models = sub.add_parser("models", help="list or delete the bureau's halves of models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="models per bank")
    listing.add_argument("--state-dir", required=True)
    listing.add_argument("--bank-id", type=_bank_id, default=None, help="only this bank's models")
    deleting = models_sub.add_parser("delete", help="delete one bank's model")
    deleting.add_argument("--state-dir", required=True)
    deleting.add_argument("--bank-id", type=_bank_id, required=True)
    deleting.add_argument("model_id")
    forgetting = models_sub.add_parser(
        "forget",
        help="forget deleted models' weights, which count for a year when a bank's new "
        "model is checked with its others (SECURITY.md, 'Several models'): the operator's "
        "call, e.g. for a bank that retrains monthly and whose old scores are stale",
    )
    forgetting.add_argument("--state-dir", required=True)
    forgetting.add_argument("--bank-id", type=_bank_id, required=True)
    forgetting.add_argument("model_id", nargs="*", help="these only (default: all of the bank's)")
    for p in (listing, deleting, forgetting):
        p.set_defaults(func=cmd_models, quiet=False, log_level="INFO")

    prepare = sub.add_parser(
        "prepare", help="hash the data file to the group and prepare banks' tag tables ahead"
    )
    add_id_arguments(prepare)
    add_graph_arguments(prepare)
    prepare.add_argument("--state-dir", required=True)
    prepare.add_argument("--bank-id", action="append", default=[], help="repeatable")
    prepare.add_argument(
        "--lookups",
        action="store_true",
        help="the banks' lookup points too (a scalar multiplication per ID under the lookup "
        "key, as much work again as the PSI tags): for banks that use private lookups; "
        "otherwise their first table download computes them",
    )
    add_common_arguments(prepare)
    prepare.set_defaults(func=cmd_prepare)

    rotate = sub.add_parser("rotate-key", help="start a new PSI key epoch for a bank")
    rotate.add_argument("--state-dir", required=True)
    rotate.add_argument("--bank-id", required=True)
    rotate.set_defaults(func=cmd_rotate_key, quiet=False, log_level="INFO")

    certs_parser = sub.add_parser("certs", help="the private CA for mutual TLS with banks")
    certs_sub = certs_parser.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create the CA and the bureau's certificate")
    init.add_argument("--tls-dir", required=True, help="directory to create them in")
    init.add_argument(
        "--host", action="append", default=[], help="a name or IP banks reach the bureau at"
    )
    issue = certs_sub.add_parser("issue-bank", help="a bank's key and certificate")
    issue.add_argument("bank_id", help="the bank's identity at the bureau")
    issue.add_argument("--tls-dir", required=True, help="the CA's directory")
    renew = certs_sub.add_parser(
        "renew", help="a new key and certificate for a bank (the old stay valid until revoked)"
    )
    renew.add_argument("bank_id")
    renew.add_argument("--tls-dir", required=True, help="the CA's directory")
    revoke = certs_sub.add_parser(
        "revoke", help="revoke a bank's certificates: refused from their next call, no restart"
    )
    revoke.add_argument("bank_id")
    revoke.add_argument("--tls-dir", required=True, help="the CA's directory")
    revoke.add_argument(
        "--serial", default=None, help="only this certificate (hex; default: all of the bank's)"
    )
    for p in (init, issue, renew, revoke):
        p.set_defaults(func=cmd_certs, quiet=False, log_level="INFO")

    audit = sub.add_parser("audit", help="verify, export or publish the verifiable audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="detect changed, removed or reordered records (exit status 1)"
    )
    verify.add_argument("--state-dir", required=True)
    verify.add_argument(
        "--evidence",
        action="append",
        default=[],
        help="a file of signed heads or receipts the log must still be consistent with: a "
        "bank's receipts (JSON lines), an earlier export; repeatable",
    )
    export = audit_sub.add_parser(
        "export", help="write the records and the latest signed head for a regulator"
    )
    export.add_argument("--state-dir", required=True)
    export.add_argument("--since", default=None, help="ISO date, e.g. 2026-11-01")
    export.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    export.add_argument("--out", required=True)
    key = audit_sub.add_parser(
        "key", help="the audit log's public key (PEM), for banks and regulators"
    )
    key.add_argument("--state-dir", required=True)
    key.add_argument("--out", default=None, help="write the PEM here (default: stderr)")
    prove = audit_sub.add_parser(
        "prove",
        help="for a bank's receipts: the latest signed head with inclusion and consistency "
        "proofs (the bank checks its records without seeing other banks')",
    )
    prove.add_argument("--state-dir", required=True)
    prove.add_argument("--receipts", required=True, help="the bank's receipts (JSON lines)")
    prove.add_argument(
        "--bank",
        required=True,
        help="the bank the receipts are from: its records go into the proof (so that it can "
        "check each is the one its receipt names), never another bank's",
    )
    prove.add_argument("--out", required=True)
    for p in (verify, export, key, prove):
        p.set_defaults(func=cmd_audit, quiet=False, log_level="WARNING")

    synth = sub.add_parser("synth", help="write a synthetic city of enterprises and a bank")
    synth.add_argument("--enterprises", type=int, default=50_000)
    synth.add_argument("--bank-clients", type=int, default=5_000)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument(
        "--month",
        type=int,
        default=1,
        help="the city's data as they stand at the end of this month: 1 is 2026-11-30, 2 the "
        "same city a month on (new watch events, headcounts moved, the same bank clients)",
    )
    synth.add_argument("--out", required=True, help="directory to write into")
    synth.set_defaults(func=cmd_synth, quiet=False, log_level="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
