"""Tables of several evaluations, from their eval.json files: what docs/experiments.md links.

    python -m train.report runs/*/eval/*/eval.json [--against LABEL ...] [--out FILE.md]

One row per model, the eval.json files of its seeds pooled (perplexity by window length with its
seed spread and 95% document interval, and ppl(longest)/ppl(shortest)); for each `--against`
model, the paired change of every model against it at every length; then passkey accuracy, with
Wilson intervals, where any model retrieves keys; see train/evaluation/tables.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conf.errors import BadInput
from train.evaluation.report import read_results
from train.evaluation.tables import report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="eval.json files, one row each, in this order")
    parser.add_argument("--against", action="append", default=[], metavar="LABEL",
                        help="a model's label (its group): add the paired change of every model against it (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the tables to this .md file")
    args = parser.parse_args(argv)
    try:
        text = report([read_results(path) for path in args.results], args.against)
    except BadInput as error:
        parser.error(str(error))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv[1:])
