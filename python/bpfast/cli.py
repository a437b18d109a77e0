"""The ``bpfast`` command (also ``python -m bpfast``)."""

from __future__ import annotations

import argparse
import json
import sys


def _print_info(args: argparse.Namespace) -> int:
    import bpfast

    report = bpfast.info()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    width = max(len(key) for key in report)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpfast", description="Fast layers for 'Deep Learning from Scratch'.")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="version, backends, CPU path, threads, build flags")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_print_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
