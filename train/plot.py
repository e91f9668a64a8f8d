"""Perplexity and passkey accuracy against length, several runs on one chart.

    python -m train.plot OUT.png runs/a/eval/step-00001000/eval.json runs/b/eval/.../eval.json [--labels A B]

Each eval.json (written by train.evaluate) is one line per panel, named by its label.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.evaluation.plot import plot_runs
from train.evaluation.report import read_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.plot", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="eval.json files")
    parser.add_argument("--labels", nargs="+", help="one name per eval.json (default: the label each records)")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        parser.error(f"OUT={str(args.out)!r} must end in .png")
    if args.labels and len(args.labels) != len(args.results):
        parser.error(f"--labels has {len(args.labels)} names for {len(args.results)} eval.json files")
    try:
        runs = [read_results(path) for path in args.results]
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(plot_runs(runs, args.out, args.labels, args.title))


if __name__ == "__main__":
    main(sys.argv[1:])
