"""Perplexity and passkey accuracy against length, several runs on one chart (train.plot is the command)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from train.evaluation.report import length_name  # noqa: E402


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
