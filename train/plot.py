"""Perplexity and passkey accuracy against length, several runs on one chart.

    python -m train.plot OUT.png runs/a/eval/step-00001000/eval.json runs/b/eval/.../eval.json [--labels A B]

Each model is one line per panel with its 95% interval as a band; the eval.json files (written
by train.evaluate) of one model's seeds are pooled into one line, named by their group.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.evaluation.plot import plot_runs
from conf.errors import BadInput
from train.evaluation.report import read_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.plot", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="eval.json files")
    parser.add_argument("--labels", nargs="+", help="one name per model, the seeds of one counted once (default: "
                                                    "the group each eval.json records)")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        parser.error(f"OUT={str(args.out)!r} must end in .png")
    try:
        runs = [read_results(path) for path in args.results]
        print(plot_runs(runs, args.out, args.labels, args.title))
    except BadInput as error:
        parser.error(str(error))


if __name__ == "__main__":
    main(sys.argv[1:])
