"""salm-protect: the headless front end. A thin layer over the same core calls as the GUI.

Exit codes: 0 success, 2 usage error or nothing loadable, 3 finished with some inputs skipped or
failed, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from salm_desktop import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_CANCELLED = 130


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salm-protect",
        description="Protect medical imaging datasets with SALM before sharing them (headless).",
    )
    parser.add_argument("--version", action="version", version=f"salm-protect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="list the series, images and skipped files found under PATHs")
    inspect.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    inspect.add_argument("--labels", default=None, help="label source: folders | npz | csv:FILE (default: auto)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    inspect.set_defaults(handler=_cmd_inspect)

    return parser


def _cmd_inspect(args: argparse.Namespace) -> int:
    from salm_desktop.core.studies import LabelsError, inspect_paths

    try:
        report = inspect_paths(args.paths, labels=args.labels)
    except (FileNotFoundError, LabelsError) as exc:  # a missing PATH or a bad labels source
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from salm_desktop.core.studies import format_inspect_report

        print(format_inspect_report(report))
    return EXIT_OK if report["series"] else EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"salm-protect: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("salm-protect: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    raise SystemExit(main())
