"""train/evaluation/stats.py on synthetic numbers: block bootstrap within books, two-level
intervals over seeds, each book's own change, the finding rule and McNemar's test."""
import math

import numpy as np
import pytest

from tests.test_evaluate import fake_results
from train.evaluation.groups import change, group_runs
from train.evaluation.stats import (block_length, book_changes, bootstrap_mean, is_finding, mcnemar, seed_change,
                                    t_quantile)

BOOKS, PER_BOOK = 4, 1000


def _records(books: int, per_book: int) -> list[dict]:
    """Round-robin order, as train.evaluate writes them: the bootstrap must sort them by book and offset."""
    return [{"book": i % books, "title": f"book {i % books}", "offset": 128 * (i // books)}
            for i in range(books * per_book)]


def _round_robin(series: np.ndarray) -> np.ndarray:
    """(books, per_book) in reading order -> one value per record of _records."""
    return series.T.reshape(-1)


def _ar1(rng: np.random.Generator, phi: float) -> np.ndarray:
    """A stationary AR(1) series per book, unit variance: neighbours correlate by phi."""
    series = np.empty((BOOKS, PER_BOOK))
    series[:, 0] = rng.normal(size=BOOKS)
    for t in range(1, PER_BOOK):
        series[:, t] = phi * series[:, t - 1] + math.sqrt(1 - phi**2) * rng.normal(size=BOOKS)
    return series


def _plain_width(values: np.ndarray, seed: int = 0, samples: int = 4000) -> float:
    """The width of the document-by-document bootstrap the block bootstrap replaces."""
    means = values[np.random.default_rng(seed).integers(0, values.size, (samples, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return high - low


@pytest.mark.parametrize("phi, lowest, highest", [(0.9, 2.0, 4.5), (0.0, 0.85, 1.15)])
def test_blocks_widen_the_interval_of_correlated_documents_and_leave_independent_ones_alone(phi, lowest, highest):
    values = _round_robin(_ar1(np.random.default_rng(7), phi))
    low, high = bootstrap_mean(values, _records(BOOKS, PER_BOOK))
    # phi = 0.9: the mean's true standard error is sqrt((1 + phi) / (1 - phi)) = 4.4 times the plain one;
    # blocks of ceil(1000^(1/3)) = 10 documents recover most of it.
    assert lowest < (high - low) / _plain_width(values) < highest


@pytest.mark.parametrize("documents, block", [(1, 1), (2, 1), (3, 1), (4, 2), (8, 2), (9, 3), (27, 3), (28, 4),
                                              (1000, 10), (1001, 11), (1448, 12)])
def test_blocks_are_the_cube_root_rounded_up_and_every_book_has_two_of_them(documents, block):
    assert block_length(documents) == block


def test_books_of_two_documents_are_not_redrawn_whole():
    """A capped evaluation's 2 documents a book: one block of 2 would give an interval of width zero."""
    low, high = bootstrap_mean([1.0, 2.0, 3.0, 5.0], _records(2, 2))
    assert high - low > 1


def test_books_of_one_document_are_redrawn_together_rather_than_held_fixed():
    """One 16K document from each of two books: held fixed, each book would give [x, x] and a
    finding out of any difference."""
    values = [1.0, 3.0]
    low, high = bootstrap_mean(values, _records(2, 1))
    assert low < 1.5 and high > 2.5  # the plain bootstrap of two: both draws the same document a quarter of the time
    value, low, high = seed_change([[0.1, -0.3]], _records(2, 1))
    assert low < 0 < high and not is_finding((low, high), [value])
    # Beside a book of many documents, the single ones still vary: wider than with that book alone.
    many = _records(1, 20)
    mixed = many + [{"book": 1, "title": "b", "offset": 0}, {"book": 2, "title": "c", "offset": 0}]
    alone = bootstrap_mean([0.0] * 20, many)
    low, high = bootstrap_mean([0.0] * 20 + [5.0, -5.0], mixed)
    assert alone == (0.0, 0.0) and low < 0 < high


def test_a_table_of_one_document_a_book_says_how_it_redrew_them_and_what_so_few_can_say():
    from train.evaluation.tables import report

    table = report([fake_results("a", [10.0, 12.0], seed=0, docs=2), fake_results("b", [11.0, 13.0], seed=0, docs=2)],
                   ["a"])
    assert table.count("the books that gave one document each, together, one document at a time") == 2
    # A bootstrap of two values never leaves their range: the caption says how little that is.
    assert table.count("(only 2 documents: such an interval is close to the range of their values") == 2
    plenty = report([fake_results("a", [10.0, 12.0], seed=0, docs=10)], [])
    assert "one document at a time" not in plenty and "only 10 documents" not in plenty


def test_the_block_bootstrap_is_seeded():
    values = _round_robin(_ar1(np.random.default_rng(1), 0.5))
    records = _records(BOOKS, PER_BOOK)
    assert bootstrap_mean(values, records, seed=3) == bootstrap_mean(values, records, seed=3)
    assert bootstrap_mean(values, records, seed=3) != bootstrap_mean(values, records, seed=4)
    rows = [values, values + 0.1]
    assert seed_change(rows, records) == seed_change(rows, records)


def test_records_without_books_are_one_book_in_document_order():
    values = _round_robin(_ar1(np.random.default_rng(2), 0.9))
    records = [{"title": "t"} for _ in values]  # an eval.json that names no books
    assert bootstrap_mean(values, records) == bootstrap_mean(values)
    assert book_changes(values, records) == {}


def test_each_books_change_is_its_own_mean_difference():
    rng = np.random.default_rng(3)
    differences = _round_robin(rng.normal(0.01, 0.05, size=(BOOKS, PER_BOOK)) + np.arange(BOOKS)[:, None] * 0.02)
    records = _records(BOOKS, PER_BOOK)
    expected = {book: math.exp(differences[np.arange(book, differences.size, BOOKS)].mean()) - 1
                for book in range(BOOKS)}
    assert book_changes(differences, records) == pytest.approx(expected, rel=1e-12)


def test_a_groups_book_changes_pool_its_seeds():
    runs = [fake_results(f"{name}-seed{seed}", [p, p, p], seed=seed, group=name, spread=0.2)
            for seed in range(3) for name, p in (("vanilla", 10.0), ("coca", 10.5))]
    groups = {g.label: g for g in group_runs(runs)}
    by_book = change(groups["coca"], groups["vanilla"], 512).by_book
    books = [d["book"] for d in groups["coca"].perplexity["documents"]]
    differences = np.mean([np.subtract(ours, theirs) for ours, theirs in
                           zip(groups["coca"].seed_nll(512), groups["vanilla"].seed_nll(512))], axis=0)
    expected = {book: math.exp(np.mean([d for d, b in zip(differences, books) if b == book])) - 1 for book in (0, 1)}
    assert by_book == pytest.approx(expected, rel=1e-12)
    assert by_book[0] != pytest.approx(by_book[1])  # the documents' noise differs by book


def test_one_seed_gives_the_block_bootstrap_and_disagreeing_seeds_widen_the_interval():
    rng = np.random.default_rng(4)
    shared = _round_robin(rng.normal(0.02, 0.05, size=(BOOKS, PER_BOOK)))
    records = _records(BOOKS, PER_BOOK)
    _, low, high = seed_change([shared], records)
    assert (low, high) == tuple(math.exp(x) - 1 for x in bootstrap_mean(shared, records))
    # Seeds that agree (the same differences): as wide as one seed; seeds that disagree: wider.
    assert seed_change([shared] * 3, records)[1:] == pytest.approx((low, high), rel=1e-12)
    value, *disagree = seed_change([shared - 0.02, shared, shared + 0.02], records)
    assert value == pytest.approx(math.exp(shared.mean()) - 1)
    assert disagree[1] - disagree[0] > 2 * (high - low)


def test_t_quantiles():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(30) == pytest.approx(2.042, abs=1e-3) == t_quantile(100)
    with pytest.raises(ValueError, match="at least 1 degree of freedom"):
        t_quantile(0)


@pytest.mark.parametrize("interval, per_seed, finding", [
    # 3 seeds, mean 0.05: a finding when SD < 0.05 sqrt(3) / 4.303 = 0.0201
    ((0.01, 0.09), (0.032, 0.05, 0.068), True),  # SD 0.018
    ((0.01, 0.09), (0.028, 0.05, 0.072), False),  # SD 0.022: twice the SD (0.044) would have called it
    ((-0.01, 0.09), (0.05, 0.05, 0.05), False),  # the interval holds no change
    ((-0.09, -0.01), (-0.049, -0.05, -0.051), True),  # lower is as much a finding
    ((0.01, 0.09), (0.05,), True),  # one seed: the interval alone
    ((-0.01, 0.09), (0.05,), False),
    # 2 seeds: t = 12.706, so the mean must pass 12.706 x SD / sqrt(2) = 8.98 SD
    ((0.01, 0.09), (0.045, 0.055), False),  # SD 0.0071: 0.064 > 0.05
    ((0.01, 0.09), (0.048, 0.052), True),  # SD 0.0028: 0.025 < 0.05
])
def test_a_finding_needs_its_interval_and_a_t_test_across_seeds(interval, per_seed, finding):
    assert is_finding(interval, per_seed) is finding


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_prompts():
    a = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 3
    b = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 3
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (10, 2) and p == pytest.approx(0.0386, abs=1e-4)  # 2 x 79 / 4096
    assert mcnemar(b, a) == (2, 10, p)
    assert mcnemar([True, False], [True, False]) == (0, 0, 1.0)  # no discordant prompt
    assert mcnemar([True] * 3 + [False] * 3, [False] * 3 + [True] * 3) == (3, 3, 1.0)
    assert mcnemar([True] * 6, [False] * 6)[2] == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="the same cases: 2 against 1"):
        mcnemar([True, False], [True])


def test_one_document_gives_no_interval_and_no_finding_rather_than_a_zero_width_one():
    """Every resample of one document is that document: [x, x] would read as certainty."""
    from train.evaluation.tables import NO_INTERVAL, perplexity_table

    low, high = bootstrap_mean([2.0], [{"book": 0, "title": "a", "offset": 0}])
    assert math.isnan(low) and math.isnan(high)
    value, low, high = seed_change([[0.1]])
    assert value == pytest.approx(math.exp(0.1) - 1) and math.isnan(low) and math.isnan(high)
    assert not is_finding((low, high), [value])
    assert seed_change([[0.1], [0.2]])[1] < seed_change([[0.1], [0.2]])[2]  # one document, two seeds: the seeds vary
    one = fake_results("one", [10.0, 12.0], seed=0, docs=1)
    assert NO_INTERVAL in perplexity_table(group_runs([one]))
