"""The uncertainty on an evaluation's numbers: over documents, over seeds, and over passkey prompts.

- Documents are consecutive pieces of a few books, so neighbours are correlated (the same
  characters, the same stretch of plot): drawing documents one by one would treat thousands of
  them as independent and give intervals far too narrow. Every interval over documents is a
  moving-block bootstrap within each book instead. A book's documents, in reading order (by
  offset), are rebuilt to their own number from blocks of b = ceil(n ** (1/3)) consecutive
  documents (n: the book's documents; n ** (1/3) is the rate at which a block bootstrap best
  estimates the variance of a mean, Hall, Horowitz & Jing 1995), at most n // 2 and at least 1:
  every book of two or more documents has two blocks or more, or a capped evaluation's 2-document
  book would be redrawn whole every time, an interval of width zero. Blocks start
  anywhere in the book and wrap from its end to its start (circular, Politis & Romano 1992): every
  document is then drawn equally often, so the resampled means centre on the sample mean. The
  books are pooled, each with its own number of documents: the population is these books, not
  books in general. A book that gave one document has nothing of its own to redraw (the block
  bootstrap would hold it fixed, and an evaluation of one document from each of two books would get
  an interval of width zero); documents of different books are independent, so all such books are
  redrawn together, one document at a time. Results whose document records name no books count as
  one book in document order. Seeded: the same eval.json always gives the same interval.
- A perplexity is exp of the mean NLL per document (every document scores the same number of
  tokens); its 95% interval is the percentile interval of exp(resampled mean).
- A comparison of two models on the same documents is paired: the change in perplexity is
  exp(mean over documents of the NLL difference) - 1. With several seeds, its interval is
  two-level: a draw takes as many seeds as there are, with replacement, from the seeds' paired
  differences, and one set of document blocks for all of them (every seed read the same
  documents), and the change is exp of their mean - 1. With one seed it is the block bootstrap.
- A change is a finding when its interval excludes no change and, with k >= 2 seeds, the seeds'
  mean change passes a t test across seeds at 5% (`is_finding`).
- A passkey accuracy is a binomial proportion; its interval is Wilson's score interval. Two models
  asked the same prompts are compared by McNemar's exact test on the prompts only one answers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from conf.errors import BadInput

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 4000
# The rule in words, for captions.
BLOCK_RULE = ("a moving-block bootstrap within each book: blocks of ceil(n^(1/3)) consecutive documents (at most "
              "n/2) for a book of n, wrapping from its end to its start")
# Said where some book gave a single document (`strata`).
SINGLES_RULE = "; the books that gave one document each, together, one document at a time"
_Z = 1.959963984540054  # the standard normal's 97.5% quantile
# Student's t 97.5% quantile for 1..30 degrees of freedom (mpmath, to 4 decimals).
_T = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
      2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
      2.0518, 2.0484, 2.0452, 2.0423)


def exp_or_inf(x: float) -> float:
    """exp, infinite past where it overflows (a model far outside its range); NaN (no interval) stays NaN."""
    return math.inf if x >= 700 else math.exp(x)


def block_length(documents: int) -> int:
    """ceil(documents ** (1/3)), exactly (floating point puts 27 ** (1/3) above 3), at most
    documents // 2 and at least 1."""
    b = math.ceil(documents ** (1 / 3))
    b = b - 1 if (b - 1) ** 3 >= documents else b
    return max(1, min(b, documents // 2))


def _name_books(documents: Sequence[dict] | None) -> bool:
    return bool(documents) and all("book" in d and "offset" in d for d in documents)


def books(documents: Sequence[dict] | None, count: int) -> list[np.ndarray]:
    """Each book's document indices in reading order (by offset); one book in document order
    where the records name no books."""
    if documents is not None and len(documents) != count:
        raise BadInput(f"{len(documents)} document records for {count} values: one record per document")
    if not _name_books(documents):
        return [np.arange(count)]
    book = np.array([d["book"] for d in documents])
    order = np.lexsort((np.array([d["offset"] for d in documents]), book))
    return np.split(order, np.flatnonzero(np.diff(book[order])) + 1)


def strata(documents: Sequence[dict] | None, count: int) -> list[tuple[np.ndarray, int]]:
    """What the bootstrap redraws, each as (document indices in order, block length): every book of
    two documents or more on its own, in blocks of `block_length`; the books of one document
    together, one by one (documents of different books are independent)."""
    groups = books(documents, count)
    singles = [index for index in groups if index.size == 1]
    strata = [(index, block_length(index.size)) for index in groups if index.size > 1]
    if singles:
        strata.append((np.concatenate(singles), 1))
    return strata


def has_single_document_books(documents: Sequence[dict] | None) -> bool:
    """Whether some book gave one document, where the records name books."""
    return bool(documents) and len(documents) > 1 and any(
        index.size == 1 for index in books(documents, len(documents)))


def _block_means(series: np.ndarray, strata: list[tuple[np.ndarray, int]], rng: np.random.Generator,
                 samples: int) -> np.ndarray:
    """(rows, samples): each row of `series` (documents in columns) averaged after each sample's
    circular-block resampling of every stratum, the same draw for every row."""
    total = np.zeros((series.shape[0], samples))
    for index, b in strata:
        n = index.size
        blocks = -(-n // b)
        last = n - (blocks - 1) * b  # the last block is cut to end the book at its own length
        book = series[:, index]
        sums = np.cumsum(np.concatenate([np.zeros((len(book), 1)), book, book[:, :b]], axis=1), axis=1)
        starts = rng.integers(0, n, size=(samples, blocks))
        full, final = starts[:, :-1], starts[:, -1]
        total += (sums[:, full + b] - sums[:, full]).sum(axis=2) + sums[:, final + last] - sums[:, final]
    return total / series.shape[1]


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], documents: Sequence[dict] | None = None, seed: int = 0,
                   samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95% block-bootstrap interval of the mean of `values`, one per document of `documents`."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise BadInput("bootstrap_mean needs at least one value")
    if data.size == 1:
        return math.nan, math.nan  # one document: every resample is that document, which says nothing
    means = _block_means(data[None], strata(documents, data.size), np.random.default_rng(seed), samples)
    return _percentiles(means[0])


def perplexity_interval(doc_nll: Sequence[float], documents: Sequence[dict] | None = None) -> tuple[float, float]:
    """95% interval of exp(mean NLL) over documents."""
    low, high = bootstrap_mean(doc_nll, documents)
    return exp_or_inf(low), exp_or_inf(high)


def seed_change(differences: Sequence[Sequence[float]], documents: Sequence[dict] | None = None, seed: int = 0,
                samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """(change, low, high): exp(mean NLL difference) - 1 over seeds (rows of `differences`, each a
    seed's paired per-document differences) and documents, with its two-level 95% interval."""
    data = np.asarray(differences, dtype=np.float64)
    if data.ndim != 2 or data.size == 0:
        raise BadInput("seed_change needs one row of per-document differences per seed")
    if data.shape == (1, 1):
        return exp_or_inf(float(data[0, 0])) - 1, math.nan, math.nan  # one document, one seed: no interval
    rng = np.random.default_rng(seed)
    # Blocks first: with one seed the draws, and so the interval, are bootstrap_mean's.
    means = _block_means(data, strata(documents, data.shape[1]), rng, samples)
    drawn = rng.integers(0, len(data), size=(samples, len(data)))
    low, high = _percentiles(means[drawn, np.arange(samples)[:, None]].mean(axis=1))
    return exp_or_inf(float(data.mean())) - 1, exp_or_inf(low) - 1, exp_or_inf(high) - 1


def paired_change(nll: Sequence[float], baseline_nll: Sequence[float],
                  documents: Sequence[dict] | None = None) -> tuple[float, float, float]:
    """(change, low, high): the relative change in perplexity against the baseline on the same
    documents, exp(mean(nll - baseline_nll)) - 1, with its 95% interval (one seed pair)."""
    if len(nll) != len(baseline_nll):
        raise BadInput(f"a paired comparison needs the same documents: {len(nll)} against {len(baseline_nll)}")
    return seed_change([np.asarray(nll, dtype=np.float64) - np.asarray(baseline_nll, dtype=np.float64)], documents)


def book_changes(differences: Sequence[float], documents: Sequence[dict]) -> dict[int, float]:
    """Each book's own change, exp(mean NLL difference over its documents) - 1, by book; none where
    the records name no books."""
    if not _name_books(documents):
        return {}
    data = np.asarray(differences, dtype=np.float64)
    return {int(documents[index[0]]["book"]): exp_or_inf(float(data[index].mean())) - 1
            for index in books(documents, data.size)}


def t_quantile(df: int) -> float:
    """Student's t 97.5% quantile; past 30 degrees of freedom, the value at 30 (at most 4% above)."""
    if df < 1:
        raise BadInput(f"a t quantile needs at least 1 degree of freedom, got {df}")
    return _T[min(df, len(_T)) - 1]


def is_finding(interval: tuple[float, float], per_seed: Sequence[float]) -> bool:
    """The 95% interval excludes no change and, with k >= 2 seeds, |mean of the seeds' changes| >
    t(0.975, k - 1) x their SD / sqrt(k) (a one-sample t test across seeds at 5%); with one seed,
    the interval alone."""
    low, high = interval
    if not (low > 0 or high < 0):
        return False
    k = len(per_seed)
    return k < 2 or abs(float(np.mean(per_seed))) > t_quantile(k - 1) * spread(per_seed) / math.sqrt(k)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, float]:
    """(only_a, only_b, p): McNemar's exact two-sided test that a and b, right or wrong on the same
    cases, are right equally often: a binomial(only_a + only_b, 1/2) test on the discordant cases."""
    if len(a) != len(b):
        raise BadInput(f"a paired test needs the same cases: {len(a)} against {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    discordant = only_a + only_b
    if discordant == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1)) / 2**discordant
    return only_a, only_b, min(1.0, 2 * tail)


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
