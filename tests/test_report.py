"""`python -m train.report`: the published tables come from eval.json files, never by hand."""
import json
import re

import pytest

from tests.test_evaluate import fake_results
from train.evaluation.report import write_results
from train.report import main as report_main


def _write(tmp_path, label, ppl, accuracy=(1.0, 0.5), rope=None):
    results = fake_results(label, ppl, accuracy=accuracy)
    if rope:
        results["model"]["rope_parameters"] = {"rope_type": "dynamic", "factor": 4.0}
    return str(write_results(results, tmp_path / label.replace(" ", "_")))


def test_table_has_every_length_the_ratio_and_the_change_against_a_baseline(tmp_path, capsys):
    vanilla = _write(tmp_path, "vanilla", [10.0, 20.0, float("inf")])
    coca = _write(tmp_path, "coca", [10.5, 12.0, 21.0])
    ntk = _write(tmp_path, "coca ntk", [10.5, 11.0, 12.6], rope=True)
    out = tmp_path / "tables.md"
    report_main([vanilla, coca, ntk, "--against", "vanilla", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert "| run | RoPE at eval | seeds | 512 | 1K | 2K | ppl(2K) / ppl(512) |" in printed
    # One seed each: no seed spread, only the document interval.
    assert re.search(r"\| vanilla \| - \| - \| 10\.00 \[\d+\.\d\d, \d+\.\d\d\] \| 20\.00 \[.*\] \| inf \| inf \|", printed)
    assert re.search(r"\| coca \| - \| - \| 10\.50 \[.*\] \| 21\.00 \[.*\] \| 2\.00x \[2\.00, 2\.00\] \|", printed)
    assert re.search(r"\| coca ntk \| dynamic x4 \| - \| 10\.50 .* \| 1\.20x \[", printed)
    # One seed: the interval alone decides.
    assert re.search(r"\| coca \| - \| \+5\.0% \[\+\d+\.\d, \+\d+\.\d\] ✓ \| -40\.0% \[-\d+\.\d, -\d+\.\d\] ✓ \| "
                     r"-100\.0% ", printed)
    assert "Passkey accuracy by length (2 cases per length and seed" in printed
    assert "| coca | - | - | 1.00 [0.34, 1.00] | 0.50 [0.09, 0.91] |" in printed


def _seeds_with_prompts(tmp_path, prompts=True, haystack="filler"):
    """3 seeds of vanilla and of coca (+8%), 8 documents of 2 books of which 80 were available; at
    512 tokens coca alone answers 12 of 30 prompts per seed, at 2K 1 of them."""
    paths = []
    for seed in range(3):
        for name, ppl, answered in (("vanilla", 10.0, {512: 10, 2048: 10}), ("coca", 10.8, {512: 22, 2048: 11})):
            results = fake_results(f"{name}-seed{seed}", [ppl, ppl, ppl], seed=seed, group=name, spread=0.05)
            results["perplexity"]["available_docs"] = 80
            results["passkey"]["haystack"] = haystack
            for row in results["passkey"]["by_length"] if prompts else ():
                row["prompts"] = [{"key": str(10000 + i), "depth": 0.5, "answer": "",
                                   "correct": i < answered[row["length"]]} for i in range(30)]
            paths.append(str(write_results(results, tmp_path / f"{name}-{seed}")))
    return paths


def test_the_report_shows_each_books_change_the_finding_rule_and_paired_passkey_prompts(tmp_path, capsys):
    report_main([*_seeds_with_prompts(tmp_path), "--against", "vanilla"])
    printed = capsys.readouterr().out
    assert "Perplexity on 8 (each book's share, evenly spaced through it) of the 80 documents of 2048 tokens" in printed
    assert ("[ ] its 95% interval by a moving-block bootstrap within each book: blocks of ceil(n^(1/3)) "
            "consecutive documents (at most n/2) for a book of n, wrapping from its end to its start (only 8 "
            "documents: such an interval is close to the range of their values and covers less than 95%); the "
            "ratio's [ ] also draws seeds") in printed
    change_row = re.search(r"\| coca \| - \| \+8\.0% ±0\.0 \[\+\d\.\d, \+\d+\.\d\] ✓ \|", printed)
    rule = printed.index("✓: a finding: the interval excludes no change and, with k >= 2 seeds, |the mean of the "
                         "seeds' changes| > t(0.975, k-1) x their standard deviation / sqrt(k) (t = 4.30 for 3 "
                         "seeds); with one seed, the interval alone decides.")
    books = printed.index("Each book's own change against vanilla: exp(mean over that book's documents, seeds pooled, "
                          "of the NLL difference) - 1. The population is these 2 books, not books in general")
    assert change_row and change_row.start() < rule < books
    assert "| run | RoPE at eval | book | 512 | 1K | 2K |" in printed
    for book in (0, 1):
        cells = r" \| ".join([r"[-+]\d+\.\d%"] * 3)
        assert re.search(rf"\| coca \| - \| {book}: t \(4 documents\) \| {cells} \|", printed), book
    assert "Passkey retrieval against vanilla (paired: same prompts, seed s against seed s or a model without a seed" in printed
    assert "| coca | - | +36/-0 p=2.9e-11 ✓ | +3/-0 p=0.25 |" in printed  # 12 and 1 prompts a seed, 3 seeds
    assert ("A length's prompts are one filler text with keys at a few depths (seeded, the same for every model), "
            "not independent draws of prompts: the test is on these prompts, not on prompts in general.") in printed


def test_a_parent_without_a_seed_is_paired_with_every_seed_of_the_other_model(tmp_path, capsys):
    """Experiment 4's parent is evaluated once, without a seed; seed s against seed s would leave its
    row empty. It pairs with each seed of vanilla: 3 seeds x (12 at 512, 1 at 2K) prompts only it answers."""
    paths = [p for p in _seeds_with_prompts(tmp_path, haystack="books") if "/coca-" not in p]
    parent = fake_results("parent", [10.0, 10.0, 10.0])
    for row in parent["passkey"]["by_length"]:
        answered = {512: 22, 2048: 11}[row["length"]]
        row["prompts"] = [{"key": str(10000 + i), "depth": 0.5, "answer": "", "correct": i < answered}
                          for i in range(30)]
    paths.append(str(write_results(parent, tmp_path / "parent")))
    report_main([*paths, "--against", "vanilla"])
    printed = capsys.readouterr().out
    assert "| parent | - | +36/-0 p=2.9e-11 ✓ | +3/-0 p=0.25 |" in printed
    assert "passages of one book are not independent, so the test is on these prompts and books" in printed


def test_each_model_with_rope_scaling_is_paired_with_itself_as_trained(tmp_path, capsys):
    """The check that dynamic NTK changes nothing where the prompt fits the window: vanilla + NTK
    loses 3 prompts a seed at 512 that vanilla answers, and matches it at 2K."""
    paths = _seeds_with_prompts(tmp_path)
    for seed in range(3):
        results = fake_results(f"vanilla-seed{seed} + ntk", [10.0] * 3, seed=seed, group="vanilla + dynamic-x4")
        results["model"]["rope_parameters"] = {"rope_type": "dynamic", "factor": 4.0}
        for row in results["passkey"]["by_length"]:
            lost = 3 if row["length"] == 512 else 0
            row["prompts"] = [{"key": str(10000 + i), "depth": 0.5, "answer": "", "correct": lost <= i < 10}
                              for i in range(30)]
        paths.append(str(write_results(results, tmp_path / f"ntk-{seed}")))
    report_main([*paths, "--against", "vanilla"])
    printed = capsys.readouterr().out
    table = printed[printed.index("Passkey retrieval with RoPE scaling at evaluation against the same model"):]
    assert "| vanilla + dynamic-x4 | dynamic x4 | +0/-9 p=0.0039 ✓ | +0/-0 p=1 |" in table
    assert "| coca |" not in table  # no scaled counterpart


def test_results_without_passkey_prompts_get_no_paired_passkey_table(tmp_path, capsys):
    report_main([*_seeds_with_prompts(tmp_path, prompts=False), "--against", "vanilla"])
    printed = capsys.readouterr().out
    assert "Passkey accuracy by length" in printed and "Passkey retrieval against" not in printed


def test_one_length_has_no_extrapolation_ratio(tmp_path, capsys):
    """The in-window tables (every document at L alone) would show a meaningless 1.00x column."""
    paths = []
    for label, ppl in (("vanilla", 10.0), ("coca", 10.4)):
        results = fake_results(label, [ppl, 20.0, 30.0], accuracy=(0.0, 0.0))
        results["perplexity"]["by_length"] = results["perplexity"]["by_length"][:1]
        results["passkey"] = None
        paths.append(str(write_results(results, tmp_path / label)))
    report_main([*paths, "--against", "vanilla"])
    printed = capsys.readouterr().out
    assert "| run | RoPE at eval | seeds | 512 |\n" in printed and "ppl(" not in printed
    assert re.search(r"\| coca \| - \| \+4\.0% \[", printed)


def test_no_passkey_table_of_zeros(tmp_path, capsys):
    runs = [_write(tmp_path, name, [10.0, 11.0, 12.0], accuracy=(0.0, 0.0)) for name in ("a", "b")]
    report_main(runs)
    printed = capsys.readouterr().out
    assert "no run retrieves a single key even at 512 tokens (2 cases per length), so it is left out" in printed
    assert "Passkey accuracy" not in printed


@pytest.mark.parametrize("args, message", [
    (["--against", "nobody"], "--against 'nobody' is none of the runs"),
    (["missing.json"], "missing.json does not exist"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, args, message):
    run = _write(tmp_path, "a", [10.0, 11.0, 12.0])
    with pytest.raises(SystemExit) as exit_info:
        report_main([run, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_published_tables_are_linked_from_the_docs_never_copied():
    """bench/experiments/*.md are train.report's output for the published runs, kept once: the docs
    link each file, and no page repeats a row of one (a copy would go stale at the next rerun)."""
    from tests.runs import REPO

    pages = {page: page.read_text() for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]}
    experiments = pages[REPO / "docs" / "experiments.md"]
    for table in sorted((REPO / "bench" / "experiments").glob("*.md")):
        assert f"(../bench/experiments/{table.name})" in experiments, table.name
        rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and "---" not in line]
        for page, text in pages.items():
            assert not any(row in text for row in rows[1:]), (table.name, page.name)


def test_published_tables_are_what_train_report_writes_from_their_eval_files(tmp_path):
    """bench/experiments/sources.json names, for each table whose eval.json files are kept
    (bench/experiments/inputs/), the arguments of the script's train.report call: running it again
    must give the published file byte for byte."""
    from tests.runs import REPO

    experiments = REPO / "bench" / "experiments"
    sources = json.loads((experiments / "sources.json").read_text())
    assert sources
    for table, spec in sources.items():
        against = [arg for label in spec["against"] for arg in ("--against", label)]
        report_main([*(str(experiments / path) for path in spec["results"]), *against, "--out", str(tmp_path / table)])
        assert (tmp_path / table).read_text() == (experiments / table).read_text(), table
