"""Perplexity and passkey accuracy against length, several runs on one chart (train.plot is the command)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from train.evaluation.groups import group_runs  # noqa: E402
from train.evaluation.report import length_name  # noqa: E402
from conf.errors import BadInput


def _plottable(value: float) -> float:
    """matplotlib leaves a gap at NaN but draws an infinite band edge across the axes."""
    return value if math.isfinite(value) else float("nan")


def plot_runs(runs: list[dict[str, Any]], out: Path, labels: list[str] | None = None, title: str | None = None) -> Path:
    """One PNG: perplexity (log scale) and, where any run has it, passkey accuracy by length.

    A line per model (the seeds of one pooled, train/evaluation/groups.py) with its 95% interval as
    a band: over documents for perplexity, Wilson's for passkey accuracy. Models of one training
    run share a colour, dashed where RoPE was rescaled at evaluation (e.g. dynamic NTK).
    """
    groups = group_runs(runs)
    if labels is not None and len(labels) != len(groups):
        raise BadInput(f"--labels has {len(labels)} names for {len(groups)} models (the seeds of one are pooled)")
    labels = labels or [group.label for group in groups]
    panels = [name for name in ("perplexity", "passkey") if any(run[name] is not None for run in runs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    colours = {}
    for group, label in zip(groups, labels):
        colour = colours.setdefault(group.label.split(" + ")[0], f"C{len(colours) % 10}")
        style = {"marker": "o", "label": label, "color": colour, "linestyle": "--" if group.rope != "-" else "-"}
        if group.perplexity is not None:
            lengths = group.lengths
            # An infinite perplexity leaves a gap rather than a point.
            values = [group.ppl(n) if math.isfinite(group.ppl(n)) else float("nan") for n in lengths]
            axes["perplexity"].plot(lengths, values, **style)
            bands = [group.ppl_interval(n) for n in lengths]
            axes["perplexity"].fill_between(lengths, [_plottable(low) for low, _ in bands],
                                            [_plottable(high) for _, high in bands], color=colour, alpha=0.15)
        if group.runs[0]["passkey"] is not None:
            accuracy = group.passkey()
            lengths = list(accuracy)
            axes["passkey"].plot(lengths, [accuracy[n]["accuracy"] for n in lengths], **style)
            axes["passkey"].fill_between(lengths, [accuracy[n]["ci"][0] for n in lengths],
                                         [accuracy[n]["ci"][1] for n in lengths], color=colour, alpha=0.15)
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
