"""Evaluations of one model trained with several seeds, pooled: what train.report and train.plot show.

Every eval.json names its `group`: the training run's name, variant and RoPE setting, without what
tells seeds apart. A group's perplexity at a length is exp of the mean NLL over its seeds and
documents; its document interval bootstraps the seed-mean NLL per document; its seed spread is
the standard deviation of the seeds' own perplexities. Comparisons are paired twice over: on the
same documents, and seed against seed where both groups have that seed (the seeds of a model and
its baseline share their data order and initialisation).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from train.evaluation.stats import paired_change, perplexity_interval, spread, wilson
from conf.errors import BadInput


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


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
        return _exp(float(self.doc_nll(length).mean()))

    def ppl_interval(self, length: int) -> tuple[float, float]:
        return perplexity_interval(self.doc_nll(length))

    def ppl_spread(self, length: int) -> float | None:
        return spread([_exp(float(nll.mean())) for nll in self.seed_nll(length)])

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


@dataclasses.dataclass(frozen=True)
class Change:
    """A paired change in perplexity, as a fraction (+0.043 is 4.3% higher)."""

    value: float
    interval: tuple[float, float]  # 95%, over documents
    spread: float | None  # standard deviation of the seeds' own changes; None with one seed pair

    @property
    def is_finding(self) -> bool:
        """Larger than both its interval (which then excludes no change) and twice the seed spread."""
        low, high = self.interval
        return (low > 0 or high < 0) and self.spread is not None and abs(self.value) > 2 * self.spread


def _row(run: dict, length: int) -> dict:
    return next(row for row in run["perplexity"]["by_length"] if row["length"] == length)


def change(group: Group, baseline: Group, length: int, baseline_length: int | None = None) -> Change:
    """The paired change of `group` at `length` against `baseline` at `baseline_length` (the same
    length by default; a group against itself at another length gives its extrapolation ratio - 1)."""
    baseline_length = baseline_length or length
    if group.perplexity["documents"] != baseline.perplexity["documents"]:
        raise BadInput(f"{group.label!r} and {baseline.label!r} were evaluated on other documents: a paired "
                         "comparison needs the same ones")
    value, low, high = paired_change(group.doc_nll(length), baseline.doc_nll(baseline_length))
    ours = dict(zip(group.seeds, group.seed_nll(length)))
    theirs = dict(zip(baseline.seeds, baseline.seed_nll(baseline_length)))
    theirs_mean = np.mean(list(theirs.values()), axis=0)
    per_seed = [_exp(float((nll - theirs.get(seed, theirs_mean)).mean())) - 1 for seed, nll in ours.items()]
    return Change(value, (low, high), spread(per_seed))


def _rope(run: dict) -> str:
    parameters = run["model"]["rope_parameters"]
    if parameters.get("rope_type", "default") == "default":
        return "-"
    return f"{parameters['rope_type']} x{parameters.get('factor', 1):g}"


def group_runs(runs: Sequence[dict[str, Any]]) -> list[Group]:
    """One group per `group` label (a run's own label where it has none), in order of first appearance."""
    groups: dict[str, Group] = {}
    for run in runs:
        label = run.get("group") or run["label"]
        group = groups.setdefault(label, Group(label, _rope(run), []))
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
