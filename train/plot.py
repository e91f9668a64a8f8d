"""Perplexity and passkey accuracy against length, several runs on one chart.

    python -m train.plot OUT.png runs/a/eval/step-00001000/eval.json runs/b/eval/.../eval.json [--labels A B]

Each eval.json (written by train.evaluate) is one line per panel, named by its label.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from train.eval_report import length_name, read_results  # noqa: E402


def plot_runs(runs: list[dict[str, Any]], out: Path, labels: list[str] | None = None, title: str | None = None) -> Path:
    """One PNG: perplexity (log scale) and passkey accuracy by length, a line per run."""
    labels = labels or [run["label"] for run in runs]
    fig, (ppl_ax, key_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, label in zip(runs, labels):
        if run["perplexity"] is not None:
            rows = run["perplexity"]["by_length"]
            # An infinite (null) perplexity leaves a gap rather than a point.
            values = [row["ppl"] if row["ppl"] is not None else float("nan") for row in rows]
            ppl_ax.plot([row["length"] for row in rows], values, marker="o", label=label)
        if run["passkey"] is not None:
            rows = run["passkey"]["by_length"]
            key_ax.plot([row["length"] for row in rows], [row["accuracy"] for row in rows], marker="o", label=label)
    for ax, name in ((ppl_ax, "perplexity"), (key_ax, "passkey accuracy")):
        ax.set_xscale("log", base=2)
        ticks = sorted({int(x) for line in ax.lines for x in line.get_xdata()})
        ax.set_xticks(ticks, [length_name(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    ppl_ax.set_yscale("log")
    key_ax.set_ylim(-0.05, 1.05)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


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
