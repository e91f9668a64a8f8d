"""The uncertainty on an evaluation's numbers: over documents, over seeds, and over passkey cases.

- A perplexity is exp of the mean NLL per document (every document scores the same number of
  tokens); its 95% interval is a percentile bootstrap over documents, seeded, so the same
  eval.json always gives the same interval.
- A comparison of two models on the same documents is paired: the change in perplexity is
  exp(mean over documents of the NLL difference) - 1, and its interval bootstraps that mean.
- A passkey accuracy is a binomial proportion; its interval is Wilson's score interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from conf.errors import BadInput

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 4000
_Z = 1.959963984540054  # the standard normal's 97.5% quantile


def bootstrap_mean(values: Sequence[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (resampled with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise BadInput("bootstrap_mean needs at least one value")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def perplexity_interval(doc_nll: Sequence[float]) -> tuple[float, float]:
    """95% interval of exp(mean NLL) over documents."""
    low, high = bootstrap_mean(doc_nll)
    return _exp(low), _exp(high)


def paired_change(nll: Sequence[float], baseline_nll: Sequence[float]) -> tuple[float, float, float]:
    """(change, low, high): the relative change in perplexity against the baseline on the same
    documents, exp(mean(nll - baseline_nll)) - 1, with its 95% interval."""
    if len(nll) != len(baseline_nll):
        raise BadInput(f"a paired comparison needs the same documents: {len(nll)} against {len(baseline_nll)}")
    differences = np.asarray(nll, dtype=np.float64) - np.asarray(baseline_nll, dtype=np.float64)
    low, high = bootstrap_mean(differences)
    return _exp(float(differences.mean())) - 1, _exp(low) - 1, _exp(high) - 1


def wilson(correct: int, cases: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion correct / cases."""
    if cases <= 0:
        raise BadInput(f"a proportion needs cases > 0, got {cases}")
    p = correct / cases
    denominator = 1 + _Z**2 / cases
    centre = (p + _Z**2 / (2 * cases)) / denominator
    half = _Z * math.sqrt(p * (1 - p) / cases + _Z**2 / (4 * cases**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def spread(values: Sequence[float]) -> float | None:
    """The sample standard deviation across seeds; None with fewer than two."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None
