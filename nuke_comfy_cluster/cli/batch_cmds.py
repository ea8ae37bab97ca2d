"""batches, cleanup, resume: the batch ledger from a shell, and what a dead client left behind."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

from ..core.errors import ClusterError
from ..core.ledger import BatchSummary, Ledger


def register(sub: Any) -> None:
    p = sub.add_parser("batches", help="list the batches in the ledger: done, failed, cancelled, unfinished")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser(
        "cleanup",
        help="delete our orphaned queued prompts and interrupt our orphaned running ones (never another client's)",
    )
    p.add_argument(
        "batch_ids", nargs="*", metavar="BATCH_ID", help="only these batches (default: every unfinished one)"
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted or interrupted")
    p.add_argument("--force", action="store_true", help="also batches a live process on this machine is rendering")
    p.add_argument(
        "--cancel", action="store_true", help="then mark those batches cancelled (they can no longer be resumed)"
    )
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per server (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("resume", help="continue an unfinished batch: keep delivered frames, re-attach running prompts")
    p.add_argument("batch_id", metavar="BATCH_ID", help="a batch id from `batches` (a unique prefix will do)")
    p.add_argument("--server", help="pin the rest of the batch to this server")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON at the end")
    p.set_defaults(func=cmd_resume)


# --------------------------------------------------------------------------- batches


def age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _output(s: BatchSummary) -> str:
    if s.output_dir and s.sequence_name:
        return f"{s.output_dir}/{s.sequence_name}.####"
    return s.output_dir or "-"


def batches_table(summaries: List[BatchSummary], now: float) -> str:
    rows = [["ID", "STATE", "FRAMES", "FAILED", "AGE", "NAME", "OUTPUT"]]
    for s in summaries:
        if s.state == "damaged":
            rows.append([s.batch_id[:12], "damaged", "-", "-", "-", "-", s.problem])
            continue
        rows.append(
            [
                s.batch_id[:12],
                s.state,
                f"{s.done}/{s.total}",
                str(s.failed),
                age_text(now - s.created),
                s.name,
                _output(s),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_batches(args: argparse.Namespace) -> int:
    ledger = Ledger()
    summaries = ledger.list()
    now = time.time()
    if args.json:
        items: List[Dict[str, Any]] = []
        for s in summaries:
            item = s.as_dict()
            item["age_s"] = round(now - s.created, 1) if s.created else None
            items.append(item)
        print(json.dumps({"ledger": str(ledger.root), "batches": items}, indent=2))
        return 0
    if not summaries:
        print(f"no batches in {ledger.root}", file=sys.stderr)
        return 0
    print(batches_table(summaries, now))
    unfinished = [s for s in summaries if s.state == "unfinished"]
    if unfinished:
        print(
            f"{len(unfinished)} unfinished: `resume BATCH_ID` continues one, `cleanup` removes their prompts from the servers",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- cleanup


def cmd_cleanup(args: argparse.Namespace) -> int:
    from ..core.cleanup import cancel_in_ledger, cleanup, select_targets
    from ..core.pool import ComfyUIServerPool

    ledger = Ledger()
    selection = select_targets(ledger, args.batch_ids or None, include_live=args.force)
    if not selection.batches:
        if args.json:
            print(
                json.dumps(
                    {"dry_run": args.dry_run, "batches": [], "notes": list(selection.skipped), "servers": []}, indent=2
                )
            )
            return 0
        for note in selection.skipped:
            print(f"note: {note}", file=sys.stderr)
        print(f"nothing to clean: no unfinished batch in {ledger.root}")
        return 0
    with ComfyUIServerPool(use_websocket=False) as pool:
        loaded = pool.load_configuration()
        if not args.json:
            print(loaded.notice, file=sys.stderr)
        report = cleanup(
            pool,
            selection.targets,
            dry_run=args.dry_run,
            timeout=args.timeout,
            batches=selection.batches,
            notes=selection.skipped,
        )
    cancelled: List[str] = []
    if args.cancel and not args.dry_run and report.ok:
        cancelled = cancel_in_ledger(ledger, selection.batches)
    if args.json:
        out = report.as_dict()
        out["cancelled_in_ledger"] = cancelled
        print(json.dumps(out, indent=2))
        return 0 if report.ok else 1
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    verb = ("would delete", "would interrupt") if args.dry_run else ("deleted", "interrupted")
    print(f"batches: {', '.join(b[:12] for b in selection.batches)}")
    for server in report.servers:
        line = f"{server.server}: {verb[0]} {len(server.deleted)} queued, {verb[1]} {len(server.interrupted)} running"
        print(line)
        for error in server.errors:
            print(f"  error: {error}")
    if args.dry_run:
        print("dry run: nothing was changed")
    if cancelled:
        print(f"marked cancelled in the ledger: {', '.join(b[:12] for b in cancelled)}")
    elif args.cancel and not report.ok:
        print("not marked cancelled: some servers could not be cleaned (run cleanup again)", file=sys.stderr)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------- resume


def cmd_resume(args: argparse.Namespace) -> int:
    from ..core.api import Cluster
    from .progress import summary_table, wait_with_progress

    ledger = Ledger()
    batch_id = ledger.find(args.batch_id)
    summary = ledger.summary(batch_id)
    if summary.live:
        raise ClusterError(f"batch {batch_id} is being rendered by another process on this machine: not resumed")
    if summary.state == "done":
        print(f"batch {batch_id} ({summary.name}) is done: {summary.done}/{summary.total} frames, nothing to resume")
        return 0
    resume = getattr(Cluster, "resume", None)
    if resume is None:
        print(
            "error: this version cannot resume batches yet (Cluster.resume is missing); "
            f"`cleanup {batch_id[:12]}` removes what the batch left on the servers",
            file=sys.stderr,
        )
        return 2
    options: Dict[str, Any] = {}
    if args.server:
        options["server"] = args.server
    with Cluster.from_environment() as cluster:
        loaded = cluster.pool.config_load
        if loaded is not None:
            print(loaded.notice, file=sys.stderr)
        batch = cluster.resume(batch_id, options)
        try:
            # the stream passed explicitly: a default bound at import time may be a closed one
            snap = wait_with_progress(batch, args.timeout, sys.stderr)
        except KeyboardInterrupt:  # SIGINT, and SIGTERM / SIGHUP through cli.signals: cancel ours, then exit
            cluster.cancel(batch)
            print(summary_table(batch.wait(10)))
            raise
        if not snap.finished:
            cluster.cancel(batch)
            snap = batch.wait(10)
            print("timed out: cancelled what was left", file=sys.stderr)
        if args.json:
            jobs = [j.as_dict() for j in snap.jobs]
            print(
                json.dumps(
                    {"batch_id": batch_id, "makespan_s": snap.makespan, "state": snap.state, "jobs": jobs}, indent=2
                )
            )
        else:
            print(summary_table(snap))
        return 0 if snap.ok else 1
