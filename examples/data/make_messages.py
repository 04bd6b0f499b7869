"""Write ``messages.csv``, the example of a team's own text file, from the SMS Spam Collection.

The first ``--rows`` messages of ``SMSSpamCollection`` (Almeida et al., 2011; one
``label<TAB>text`` a line) become CSV rows ``id,message,category`` with RFC 4180 quoting, so
messages holding commas, quotes or line breaks survive. ``examples/text-own-csv.yaml`` reads the
file through ``text.dataset: csv``.

Run from the project root:
``python examples/data/make_messages.py ../shared/datasets/sms_spam/SMSSpamCollection``
(the output is identical on every run).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path


def make_csv(source: Path, rows: int) -> str:
    """The CSV text: a header and the first ``rows`` messages of ``source``."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "message", "category"])
    lines = source.read_text(encoding="utf-8").splitlines()[:rows]
    for i, line in enumerate(lines, start=1):
        label, _, text = line.partition("\t")
        writer.writerow([f"m{i:04d}", text, label])
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the SMSSpamCollection file")
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("messages.csv"))
    args = parser.parse_args()
    args.out.write_text(make_csv(args.source, args.rows), encoding="utf-8")


if __name__ == "__main__":
    main()
