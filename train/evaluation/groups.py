"""Evaluations of one model trained with several seeds, pooled: what train.report and train.plot show.

Every eval.json names its `group`: the training run's name, variant and RoPE setting, without what
tells seeds apart. A group's perplexity at a length is exp of the mean NLL over its seeds and
documents; its document interval block-bootstraps the seed-mean NLL per document within each
book (train/evaluation/stats.py); its seed spread is the standard deviation of the seeds' own
perplexities. Comparisons are paired twice over: on the same documents (or passkey prompts), and
seed against seed where both groups have that seed (the seeds of a model and its baseline share
their data order and initialisation); a perplexity change pairs a seed the baseline lacks with the
baseline's seed-mean.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from train.evaluation.stats import (book_changes, exp_or_inf, is_finding, mcnemar, perplexity_interval, seed_change,
                                    spread, wilson)
from train.evaluation.report import rope_label
from conf.errors import BadInput


@dataclasses.dataclass
class Group:
    label: str
    rope: str  # "-" or e.g. "dynamic x4"
    runs: list[dict[str, Any]]  # its eval.json files, one per seed

    @property
    def seeds(self) -> list:
        return [(run.get("run") or {}).get("seed") for run in self.runs]

    @property
    def perplexity(self) -> dict | None:
        return self.runs[0]["perplexity"]

    @property
    def lengths(self) -> list[int]:
        return [row["length"] for row in self.perplexity["by_length"]]

    def seed_nll(self, length: int) -> list[np.ndarray]:
        """Per-document NLL at `length`, one array per seed."""
        return [np.asarray(_row(run, length)["doc_nll"], dtype=np.float64) for run in self.runs]

    def doc_nll(self, length: int) -> np.ndarray:
        return np.mean(self.seed_nll(length), axis=0)

    def ppl(self, length: int) -> float:
        return exp_or_inf(float(self.doc_nll(length).mean()))

    def ppl_interval(self, length: int) -> tuple[float, float]:
        return perplexity_interval(self.doc_nll(length), self.perplexity["documents"])

    def ppl_spread(self, length: int) -> float | None:
        return spread([exp_or_inf(float(nll.mean())) for nll in self.seed_nll(length)])

    def passkey(self) -> dict[int, dict]:
        """Accuracy by length, pooled over seeds: {length: {"correct", "cases", "accuracy", "ci", "spread"}}."""
        pooled: dict[int, dict] = {}
        for run in self.runs:
            for row in (run["passkey"] or {}).get("by_length", []):
                entry = pooled.setdefault(row["length"], {"correct": 0, "cases": 0, "seeds": []})
                entry["correct"] += row["correct"]
                entry["cases"] += row["cases"]
                entry["seeds"].append(row["accuracy"])
        for entry in pooled.values():
            entry["accuracy"] = entry["correct"] / entry["cases"]
            entry["ci"] = wilson(entry["correct"], entry["cases"])
            entry["spread"] = spread(entry.pop("seeds"))
        return dict(sorted(pooled.items()))

    def passkey_by_depth(self) -> dict[str, dict]:
        """Accuracy by the key's depth, pooled over seeds and lengths."""
        pooled: dict[str, dict] = {}
        for run in self.runs:
            for row in (run["passkey"] or {}).get("by_length", []):
                for depth, counts in row["by_depth"].items():
                    entry = pooled.setdefault(depth, {"correct": 0, "cases": 0})
                    entry["correct"] += counts["correct"]
                    entry["cases"] += counts["cases"]
        for entry in pooled.values():
            entry["accuracy"] = entry["correct"] / entry["cases"]
            entry["ci"] = wilson(entry["correct"], entry["cases"])
        return dict(sorted(pooled.items(), key=lambda item: float(item[0])))

    def passkey_prompts(self, length: int) -> dict:
        """{seed: its per-prompt records at `length`}, for the seeds whose eval.json stores them."""
        found = {}
        for seed, run in zip(self.seeds, self.runs):
            row = next((r for r in (run["passkey"] or {}).get("by_length", []) if r["length"] == length), None)
            if row is not None and "prompts" in row:
                found[seed] = row["prompts"]
        return found


@dataclasses.dataclass(frozen=True)
class Change:
    """A paired change in perplexity, as a fraction (+0.043 is 4.3% higher)."""

    value: float
    interval: tuple[float, float]  # 95%, two-level: seeds, then document blocks (stats.seed_change)
    per_seed: tuple[float, ...]  # each seed's own change against the baseline
    by_book: dict[int, float]  # each book's own change, seeds pooled; empty where the records name no books

    @property
    def spread(self) -> float | None:
        """The standard deviation of the seeds' own changes; None with one seed."""
        return spread(self.per_seed)

    @property
    def is_finding(self) -> bool:
        return is_finding(self.interval, self.per_seed)


def _row(run: dict, length: int) -> dict:
    return next(row for row in run["perplexity"]["by_length"] if row["length"] == length)


def change(group: Group, baseline: Group, length: int, baseline_length: int | None = None) -> Change:
    """The paired change of `group` at `length` against `baseline` at `baseline_length` (the same
    length by default; a group against itself at another length gives its extrapolation ratio - 1)."""
    baseline_length = baseline_length or length
    if group.perplexity["documents"] != baseline.perplexity["documents"]:
        raise BadInput(f"{group.label!r} and {baseline.label!r} were evaluated on other documents: a paired "
                         "comparison needs the same ones")
    theirs = {seed: nll for seed, nll in zip(baseline.seeds, baseline.seed_nll(baseline_length)) if seed is not None}
    theirs_mean = baseline.doc_nll(baseline_length)
    differences = np.array([nll - theirs.get(seed, theirs_mean)
                            for seed, nll in zip(group.seeds, group.seed_nll(length))])
    documents = group.perplexity["documents"]
    value, low, high = seed_change(differences, documents)
    per_seed = tuple(exp_or_inf(float(row.mean())) - 1 for row in differences)
    return Change(value, (low, high), per_seed, book_changes(differences.mean(axis=0), documents))


def passkey_change(group: Group, baseline: Group, length: int) -> tuple[int, int, float] | None:
    """McNemar's test of `group` against `baseline` on the passkey prompts at `length`, seed s
    against seed s, the pairs of every seed pooled: (prompts only `group` answers, only `baseline`
    answers, p); None where no seed of both stores its prompts there, or their numbers differ. A
    model evaluated once without a seed (a pretrained parent) pairs with every seed of the other."""
    ours, theirs = group.passkey_prompts(length), baseline.passkey_prompts(length)
    if list(ours) == [None]:
        pairs = [(ours[None], prompts) for prompts in theirs.values()]
    elif list(theirs) == [None]:
        pairs = [(prompts, theirs[None]) for prompts in ours.values()]
    else:
        pairs = [(ours[seed], theirs[seed]) for seed in ours if seed in theirs]
    if not pairs or any(len(a) != len(b) for a, b in pairs):
        return None
    for a, b in pairs:
        if [(p["key"], p["depth"]) for p in a] != [(p["key"], p["depth"]) for p in b]:
            raise BadInput(f"{group.label!r} and {baseline.label!r} were asked other passkey prompts at {length} "
                           "tokens: a paired test needs the same ones (the same eval.seed)")
    return mcnemar([p["correct"] for a, _ in pairs for p in a], [p["correct"] for _, b in pairs for p in b])


def group_runs(runs: Sequence[dict[str, Any]]) -> list[Group]:
    """One group per `group` label (a run's own label where it has none), in order of first appearance."""
    groups: dict[str, Group] = {}
    for run in runs:
        label = run.get("group") or run["label"]
        rope = rope_label(run["model"]["rope_parameters"])
        group = groups.setdefault(label, Group(label, "-" if rope == "default" else rope, []))
        seed = (run.get("run") or {}).get("seed")
        if seed is not None and seed in group.seeds:
            raise BadInput(f"{label!r} has two evaluations of seed {seed}: give each eval.json once")
        group.runs.append(run)
    for group in groups.values():
        lengths = [run["perplexity"] and [row["length"] for row in run["perplexity"]["by_length"]]
                   for run in group.runs]
        if any(other != lengths[0] for other in lengths):
            raise BadInput(f"the seeds of {group.label!r} were evaluated at other lengths: they cannot be pooled")
    return list(groups.values())
