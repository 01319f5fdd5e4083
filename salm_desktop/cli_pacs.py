"""salm-protect with a PACS: protect a study retrieved from dicomweb:/dimse: sources, send a release
(the parser and the protect command itself are in cli.py; see docs/pacs.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from salm_desktop.cli import EXIT_CANCELLED, EXIT_OK, EXIT_PARTIAL, UsageError, _cmd_protect


def cmd_protect_pacs(args: argparse.Namespace) -> int:
    """protect with PACS sources and/or --send: retrieve into a private temporary folder (removed
    afterwards, whatever happens), run the normal job, then send the finished release."""
    from salm_desktop.core.pacs import PacsError, Selection, is_pacs_spec, parse_endpoint, private_retrieval
    from salm_desktop.core.progress import Cancelled, Progress

    try:
        destinations = [parse_endpoint(d) for d in args.send]
        specs = [parse_endpoint(i) for i in args.inputs if is_pacs_spec(i)]
    except PacsError as exc:
        raise UsageError(str(exc)) from None
    local = [i for i in args.inputs if not is_pacs_spec(i)]
    if not specs and (args.study or args.series or args.accession):
        raise UsageError("--study/--series/--accession need a dicomweb: or dimse: source")
    selection = Selection(study=args.study, series=list(args.series), accession=args.accession)
    args._pacs_done = True
    original_uids: set[str] = set()

    def show(ev) -> None:  # noqa: ANN001
        if ev.stage != "log" and ev.done >= ev.total:
            print(f"[{ev.stage}] {ev.done}/{ev.total} {ev.message}", file=sys.stderr)

    try:
        if specs:
            with private_retrieval([(e, selection) for e in specs], progress=Progress(show)) as (folders, results):
                for e, r in zip(specs, results):
                    original_uids |= r.sop_uids
                    print(f"retrieved {r.instances} instances ({r.bytes / 1e6:.1f} MB) in {len(r.series)} series "
                          f"from {e.display}", file=sys.stderr)
                args.inputs = local + [str(f) for f in folders]
                code = _cmd_protect(args)
        else:
            code = _cmd_protect(args)
    except PacsError as exc:
        raise UsageError(str(exc)) from None
    except Cancelled:
        print("salm-protect: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    if code not in (EXIT_OK, EXIT_PARTIAL) or not destinations:
        return code
    return max(code, send_all(Path(args.out), destinations, original_uids, as_json=False))


def send_all(release: Path, destinations, original_uids: set[str], as_json: bool) -> int:  # noqa: ANN001
    from salm_desktop.core.pacs import PacsError, send_release
    from salm_desktop.core.progress import Progress

    try:  # the originals' UIDs as the job recorded them: never send one of those back
        original_uids = original_uids | set(json.loads((release / "manifest.json").read_text(encoding="utf-8"))
                                            .get("uid_map", {}))
    except (OSError, ValueError, AttributeError):
        pass
    code = EXIT_OK
    for dest in destinations:
        try:
            report = send_release(release, dest, original_uids=original_uids, progress=Progress())
        except PacsError as exc:
            raise UsageError(str(exc)) from None
        data = report.as_dict()
        (report.journal.parent / report.journal.name.replace(".jsonl", "-report.json")).write_text(
            json.dumps(data, indent=2), encoding="utf-8")
        if as_json:
            print(json.dumps(data))
        for item in report.instances:
            if item.status in ("failed", "refused"):
                print(f"not sent: {item.path}: {item.message}", file=sys.stderr)
        print(f"{dest.display}: {data['sent']} sent, {data['already_sent']} already sent earlier, "
              f"{data['failed']} failed, {data['refused']} refused", file=sys.stderr)
        if not report.complete:
            print(f"salm-protect: rerun 'salm-protect send {release} --to {dest.display}' to send the rest",
                  file=sys.stderr)
            code = EXIT_PARTIAL
    return code


def cmd_send(args: argparse.Namespace) -> int:
    from salm_desktop.core.pacs import PacsError, parse_endpoint

    try:
        destinations = [parse_endpoint(d) for d in args.to]
    except PacsError as exc:
        raise UsageError(str(exc)) from None
    if not (args.release / "manifest.json").is_file():
        raise UsageError(f"{args.release}: not a finished release (no manifest.json)")
    return send_all(args.release, destinations, set(), as_json=args.json)
