"""The uncertainty on reported numbers: documents cut from whole books, bootstrap and Wilson
intervals, paired comparisons, and seeds pooled in train.report's tables."""
import math
import re

import numpy as np
import pytest

from conf.data_schema import DataConfig, SampleCorpusConfig
from data.sample_corpus import generate_books
from tests.test_evaluate import fake_results
from train.evaluation.documents import SAMPLE_TEST_BOOKS, documents, token_ids
from train.evaluation.groups import change, group_runs
from train.evaluation.report import write_results
from train.evaluation.stats import bootstrap_mean, paired_change, wilson
from train.report import main as report_main


def test_every_book_is_cut_into_consecutive_documents_that_never_cross_a_book(sample_tokenizer):
    cfg = DataConfig(sample=SampleCorpusConfig(num_books=3, words_per_book=1500, seed=4))
    books = generate_books(3 + SAMPLE_TEST_BOOKS, 1500, 4)[3:]
    book_ids = [token_ids(book["text"], sample_tokenizer) for book in books]
    found = documents(cfg, "test", sample_tokenizer, 512)
    expected = sum(len(ids) // 512 for ids in book_ids)
    assert found.books == SAMPLE_TEST_BOOKS and found.available == len(found.docs) == expected > 2 * SAMPLE_TEST_BOOKS
    for doc in found.docs:
        assert doc.ids.tolist() == book_ids[doc.book][doc.offset:doc.offset + 512]  # inside its own book
        assert doc.offset % 512 == 0 and doc.title == books[doc.book]["short_book_title"]
    # Round-robin: the first documents of every book come first.
    assert [(doc.book, doc.offset) for doc in found.docs[:SAMPLE_TEST_BOOKS]] == [
        (book, 0) for book in range(SAMPLE_TEST_BOOKS)]
    capped = documents(cfg, "test", sample_tokenizer, 512, cap=SAMPLE_TEST_BOOKS + 1)
    assert [doc.book for doc in capped.docs] == [*range(SAMPLE_TEST_BOOKS), 0]  # a cap samples every book
    assert capped.available == found.available


@pytest.mark.parametrize("extra", [0, 1])
def test_a_cap_spreads_each_books_share_through_the_book_instead_of_taking_its_opening(sample_tokenizer, extra):
    cfg = DataConfig(sample=SampleCorpusConfig(num_books=3, words_per_book=3000, seed=4))
    offsets = {}
    for doc in documents(cfg, "test", sample_tokenizer, 64).docs:
        offsets.setdefault(doc.book, []).append(doc.offset)
    capped = documents(cfg, "test", sample_tokenizer, 64, cap=3 * SAMPLE_TEST_BOOKS + extra)
    assert [doc.book for doc in capped.docs] == [*range(SAMPLE_TEST_BOOKS)] * 3 + [0] * extra  # still round-robin
    for book, every in offsets.items():
        chosen = [doc.offset for doc in capped.docs if doc.book == book]
        assert len(every) > 20 and chosen == sorted(chosen)
        if len(chosen) == 3:  # one in each third of the book, none at its start
            assert 0 < chosen[0] < every[len(every) // 3] <= chosen[1] < every[2 * len(every) // 3] <= chosen[2]
        else:  # book 0's one more: one in each quarter
            assert [sum(offset >= every[q * len(every) // 4] for offset in chosen) for q in range(1, 4)] == [3, 2, 1]


def test_the_bootstrap_covers_the_mean_of_a_known_distribution_as_often_as_it_claims():
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for trial in range(200):
        values = rng.normal(3.0, 0.5, size=400)  # one book of independent documents: blocks of 8
        low, high = bootstrap_mean(values, seed=trial, samples=1000)
        covered += low <= 3.0 <= high
        widths.append(high - low)
    assert 0.90 <= covered / 200 <= 0.99  # a 95% interval
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(400), rel=0.1)  # the normal theory's width
    assert bootstrap_mean([1.0, 2.0, 3.0]) == bootstrap_mean([1.0, 2.0, 3.0])  # seeded: the same every time


def test_a_paired_difference_sees_through_noise_that_both_models_share():
    rng = np.random.default_rng(1)
    hard = rng.normal(3.0, 1.0, size=80)  # documents differ far more than the models do
    baseline = hard + rng.normal(0, 0.01, size=80)
    better = hard - 0.02 + rng.normal(0, 0.01, size=80)
    value, low, high = paired_change(better, baseline)
    assert value == pytest.approx(math.exp(-0.02) - 1, abs=0.004) and high < 0  # 2% better, and known to be
    # Unpaired, the same 2% would vanish in the spread of the documents.
    assert (np.exp(bootstrap_mean(hard)[1] - bootstrap_mean(hard)[0]) - 1) > 0.2
    with pytest.raises(ValueError, match="the same documents: 80 against 79"):
        paired_change(better, baseline[:79])


@pytest.mark.parametrize("correct, cases, low, high", [(8, 10, 0.4902, 0.9433), (0, 50, 0.0, 0.0713),
                                                       (50, 50, 0.9287, 1.0), (45, 100, 0.3561, 0.5476)])
def test_wilson_intervals(correct, cases, low, high):
    assert wilson(correct, cases) == pytest.approx((low, high), abs=1e-4)


def _three_seeds(tmp_path, name, ppl, spread=0.05, group=None):
    return [str(write_results(fake_results(f"{name}-seed{seed}", ppl, seed=seed, group=group or name, spread=spread),
                              tmp_path / f"{name}-{seed}")) for seed in range(3)]


def test_the_report_pools_seeds_and_marks_only_differences_larger_than_interval_and_seed_spread(tmp_path, capsys):
    vanilla = _three_seeds(tmp_path, "vanilla", [10.0, 20.0, 40.0])
    coca = _three_seeds(tmp_path, "coca", [10.8, 12.0, 13.0])  # +8% in the window, far better beyond
    same = _three_seeds(tmp_path, "same", [10.0, 20.0, 40.0])  # vanilla's numbers: no difference at all
    report_main([*vanilla, *coca, *same, "--against", "vanilla"])
    printed = capsys.readouterr().out
    assert re.search(r"\| coca \| - \| 0,1,2 \| 10\.80 ±0\.00 \[\d+\.\d\d, \d+\.\d\d\] \|", printed), printed
    assert "| run | RoPE at eval | seeds | 512 | 1K | 2K | ppl(2K) / ppl(512) |" in printed
    assert re.search(r"\| coca \| - \| \+8\.0% ±0\.0 \[\+\d\.\d, \+\d+\.\d\] ✓ \| -40\.0% ", printed), printed
    assert re.search(r"\| same \| - \| \+0\.0% ±0\.0 \[[-+]\d\.\d, [-+]\d\.\d\] \|", printed), printed
    assert "Change in perplexity against vanilla (paired: same documents, seed against seed)" in printed


def test_a_difference_within_the_seed_spread_is_not_a_finding(tmp_path):
    runs = []
    for seed, (v, c) in enumerate([(10.0, 10.9), (10.0, 9.9), (10.0, 10.5)]):  # seeds disagree on the sign
        runs.append(fake_results(f"vanilla-seed{seed}", [v, v, v], seed=seed, group="vanilla", spread=0.01))
        runs.append(fake_results(f"coca-seed{seed}", [c, c, c], seed=seed, group="coca", spread=0.01))
    groups = {g.label: g for g in group_runs(runs)}
    coca, vanilla = groups["coca"], groups["vanilla"]
    result = change(coca, vanilla, 512)
    value, low, _ = paired_change(coca.doc_nll(512), vanilla.doc_nll(512), coca.perplexity["documents"])
    assert low > 0 and result.value == pytest.approx(value)  # the documents alone would call it real
    assert result.interval[0] < -0.005 < 0.085 < result.interval[1]  # drawing seeds spans their -1% to +9%
    assert result.spread > 0.04 and not result.is_finding


def test_seeds_of_one_model_must_not_repeat(tmp_path):
    twice = [fake_results("a-seed0", [1.0, 2.0, 3.0], seed=0, group="a") for _ in range(2)]
    with pytest.raises(ValueError, match="'a' has two evaluations of seed 0"):
        group_runs(twice)
