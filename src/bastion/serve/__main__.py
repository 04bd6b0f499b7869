"""``python -m bastion.serve RUN_DIR [--port N] [--setting key=value ...]``: run the service
without the full command line (used by the crash test and the benchmark)."""

from __future__ import annotations

import argparse
import json
import sys

from bastion.errors import BastionError
from bastion.serve.runner import serve
from bastion.serve.settings import ServeSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bastion.serve")
    parser.add_argument("run_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a ServeSettings field, value as JSON (e.g. --set audit_all=true)",
    )
    args = parser.parse_args(argv)
    values = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=JSON")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    try:
        serve(
            args.run_dir,
            host=args.host,
            port=args.port,
            settings=ServeSettings.from_mapping(values),
        )
    except BastionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
