"""Perplexity and passkey accuracy against length, several runs on one chart (train.plot is the command)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from train.evaluation.report import length_name  # noqa: E402


def plot_runs(runs: list[dict[str, Any]], out: Path, labels: list[str] | None = None, title: str | None = None) -> Path:
    """One PNG: perplexity (log scale) and, where any run has it, passkey accuracy by length.

    A line per run; runs of one checkpoint share a colour, dashed where RoPE was rescaled at
    evaluation (e.g. dynamic NTK).
    """
    labels = labels or [run["label"] for run in runs]
    panels = [name for name in ("perplexity", "passkey") if any(run[name] is not None for run in runs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    colours = {}
    for run, label in zip(runs, labels):
        colour = colours.setdefault(run["checkpoint"], f"C{len(colours) % 10}")
        rescaled = run["model"]["rope_parameters"].get("rope_type", "default") != "default"
        style = {"marker": "o", "label": label, "color": colour, "linestyle": "--" if rescaled else "-"}
        if run["perplexity"] is not None:
            rows = run["perplexity"]["by_length"]
            # An infinite (null) perplexity leaves a gap rather than a point.
            values = [row["ppl"] if row["ppl"] is not None else float("nan") for row in rows]
            axes["perplexity"].plot([row["length"] for row in rows], values, **style)
        if run["passkey"] is not None:
            rows = run["passkey"]["by_length"]
            axes["passkey"].plot([row["length"] for row in rows], [row["accuracy"] for row in rows], **style)
    for name, ax in axes.items():
        ax.set_xscale("log", base=2)
        ticks = sorted({int(x) for line in ax.lines for x in line.get_xdata()})
        ax.set_xticks(ticks, [length_name(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("perplexity" if name == "perplexity" else "passkey accuracy")
        ax.grid(alpha=0.3)
        if ax.lines:
            # Many runs: the legend goes beside the panel, where it hides no line.
            beside = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if len(ax.lines) > 6 else {}
            ax.legend(fontsize="small", **beside)
            if beside:
                width, height = fig.get_size_inches()
                fig.set_size_inches(width + 4.5, height)
    if "perplexity" in axes:
        axes["perplexity"].set_yscale("log")
    if "passkey" in axes:
        axes["passkey"].set_ylim(-0.05, 1.05)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # keeps a legend placed beside the panel
    plt.close(fig)
    return out
