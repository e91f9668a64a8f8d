"""Tables comparing several evaluations (eval.json), for `python -m train.report` (docs/experiments.md links them).

- Perplexity: a row per model (its seeds pooled, train/evaluation/groups.py), a column per window
  length, each cell the perplexity with its seed spread and block-bootstrap document interval
  (train/evaluation/stats.py), and the extrapolation ratio ppl(longest) / ppl(shortest), itself a
  paired quantity with its two-level interval.
- For each baseline named with --against: the paired change of every model against it at every
  length with its two-level interval (seeds, then document blocks), marked where it is a finding
  (stats.is_finding); beneath, each book's own change, so that a reader sees whether one book
  drives the result.
- Passkey accuracy by length (Wilson intervals, seeds pooled) and by depth, when some model
  retrieves keys at its shortest length; otherwise one line says that none does. For each
  baseline, where the eval.json files store their prompts: McNemar's test of every model against
  it on the same prompts at every length.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from train.evaluation.groups import Change, Group, change, group_runs, passkey_change
from train.evaluation.report import documents_read, length_name, markdown_table, number
from train.evaluation.stats import BLOCK_RULE, SINGLES_RULE, has_single_document_books, t_quantile
from conf.errors import BadInput

FINDING = "✓"
SIGNIFICANCE = 0.05
FEW_DOCUMENTS = 10


def _resampling(perplexity: dict) -> str:
    """How the documents of this evaluation are redrawn, in words, and what so few of them can say."""
    rule = BLOCK_RULE + (SINGLES_RULE if has_single_document_books(perplexity.get("documents")) else "")
    count = perplexity["num_docs"]
    if 2 <= count < FEW_DOCUMENTS:  # a bootstrap of n values never leaves their range: with few, it is that range
        rule += (f" (only {count} documents: such an interval is close to the range of their values and covers "
                 f"less than 95%)")
    return rule


def _change_caption(perplexity: dict) -> str:
    return ("A cell: the change in perplexity, ± the standard deviation of the seeds' own changes (seed s against the "
            "baseline's seed s), [ ] its 95% two-level bootstrap interval: each draw takes seeds with replacement and, "
            f"for them, resamples the documents by {_resampling(perplexity)}; with one seed, the block bootstrap alone. "
            f"{FINDING}: a finding: the interval excludes no change and, with k >= 2 seeds, |the mean of the seeds' "
            f"changes| > t(0.975, k-1) x their standard deviation / sqrt(k) (t = {t_quantile(2):.2f} for 3 seeds); "
            "with one seed, the interval alone decides.")


NO_INTERVAL = "[one document: no interval]"


def _ppl_cell(group: Group, length: int) -> str:
    value, (low, high), sd = group.ppl(length), group.ppl_interval(length), group.ppl_spread(length)
    if math.isinf(value):
        return "inf"
    interval = NO_INTERVAL if math.isnan(low) else f"[{number(low)}, {number(high)}]"
    return f"{number(value)}" + (f" ±{sd:.2f}" if sd is not None else "") + f" {interval}"


def _change_cell(c: Change, ratio: bool = False) -> str:
    """value ±seed spread [two-level interval], as a ratio ppl(longest) / ppl(shortest) or as a change in %."""
    low, high = c.interval
    if any(math.isinf(x) for x in (c.value, low, high)):
        return "inf"
    if ratio:
        sd = f" ±{c.spread:.2f}" if c.spread is not None else ""
        interval = NO_INTERVAL if math.isnan(low) else f"[{number(1 + low)}, {number(1 + high)}]"
        return f"{number(1 + c.value)}x{sd} {interval}"
    sd = f" ±{100 * c.spread:.1f}" if c.spread is not None else ""
    interval = NO_INTERVAL if math.isnan(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{100 * c.value:+.1f}%{sd} {interval}" + (f" {FINDING}" if c.is_finding else "")


def _seeds(group: Group) -> str:
    seeds = [s for s in group.seeds if s is not None]
    return ",".join(map(str, seeds)) if seeds else "-"


def perplexity_table(groups: list[Group]) -> str:
    lengths = groups[0].lengths
    for group in groups:
        if group.lengths != lengths:
            raise BadInput(f"{group.label!r} was evaluated at other lengths than {groups[0].label!r}: "
                             "tables compare runs at the same lengths")
    header = ["run", "RoPE at eval", "seeds", *map(length_name, lengths)]
    body = [[g.label, g.rope, _seeds(g), *(_ppl_cell(g, n) for n in lengths)] for g in groups]
    if len(lengths) > 1:  # the extrapolation ratio
        header.append(f"ppl({length_name(lengths[-1])}) / ppl({length_name(lengths[0])})")
        for g, row in zip(groups, body):
            row.append(_change_cell(change(g, g, lengths[-1], lengths[0]), ratio=True))
    return markdown_table(header, body)


def change_table(groups: list[Group], baseline: Group) -> str:
    """The change of every model against `baseline`, the rule for its marks, and each book's own change."""
    lengths = baseline.lengths
    others = [g for g in groups if g is not baseline]
    changes = {(g.label, n): change(g, baseline, n) for g in others for n in lengths}
    header = ["run", "RoPE at eval", *map(length_name, lengths)]
    body = [[g.label, g.rope, *(_change_cell(changes[g.label, n]) for n in lengths)] for g in others]
    return "\n\n".join(part for part in [
        f"Change in perplexity against {baseline.label} (paired: same documents, seed against seed):",
        markdown_table(header, body), _change_caption(baseline.perplexity), _book_table(others, baseline, changes)] if part)


def _book_table(groups: list[Group], baseline: Group, changes: dict[tuple[str, int], Change]) -> str:
    """Each book's own change at every length: a row per model and book; none where the records name no books."""
    lengths = baseline.lengths
    if not groups or not changes[groups[0].label, lengths[0]].by_book:
        return ""
    documents = baseline.perplexity["documents"]
    titles = {d["book"]: d["title"] for d in documents}
    counts = Counter(d["book"] for d in documents)
    body = [[g.label, g.rope, f"{book}: {titles[book]} ({counts[book]} documents)",
             *(_percent(changes[g.label, n].by_book[book]) for n in lengths)]
            for g in groups for book in sorted(titles)]
    return (f"Each book's own change against {baseline.label}: exp(mean over that book's documents, seeds pooled, "
            f"of the NLL difference) - 1. The population is these {len(titles)} books, not books in general; a "
            "change that one book drives shows here.\n\n"
            + markdown_table(["run", "RoPE at eval", "book", *map(length_name, lengths)], body))


def _percent(value: float) -> str:
    return "inf" if math.isinf(value) else f"{100 * value:+.1f}%"


def passkey_tables(groups: list[Group], baselines: Sequence[Group] = ()) -> str:
    """Accuracy by length and by depth; against each of `baselines`, the paired tests where prompts are stored."""
    keyed = [g for g in groups if g.runs[0]["passkey"] is not None]
    if not keyed:
        return ""
    by_length = {g.label: g.passkey() for g in keyed}
    shortest = min(n for accuracy in by_length.values() for n in accuracy)
    if all(accuracy[min(accuracy)]["correct"] == 0 for accuracy in by_length.values()):
        return (f"Passkey retrieval: no run retrieves a single key even at {length_name(shortest)} tokens "
                f"({keyed[0].runs[0]['passkey']['cases']} cases per length), so it is left out.")
    lengths = sorted({n for accuracy in by_length.values() for n in accuracy})
    body = []
    for g in keyed:
        accuracy = by_length[g.label]
        body.append([g.label, g.rope, _seeds(g), *(_accuracy_cell(accuracy[n]) if n in accuracy else ""
                                                   for n in lengths)])
    depths = {g.label: g.passkey_by_depth() for g in keyed}
    names = sorted({d for rows in depths.values() for d in rows}, key=float)
    depth_body = [[g.label, g.rope, *(_accuracy_cell(depths[g.label][d]) if d in depths[g.label] else "" for d in names)]
                  for g in keyed]
    cases = keyed[0].runs[0]["passkey"]["cases"]
    paired = [_paired_passkey_table(keyed, baseline, lengths) for baseline in baselines
              if baseline.runs[0]["passkey"] is not None]
    paired.append(_scaling_passkey_table(keyed, lengths))
    return "\n\n".join(part for part in [
        f"Passkey accuracy by length ({cases} cases per length and seed; [ ]: 95% Wilson interval, seeds pooled):",
        markdown_table(["run", "RoPE at eval", "seeds", *map(length_name, lengths)], body),
        "Passkey accuracy by the key's depth in the haystack (0: start, 1: end), all lengths pooled:",
        markdown_table(["run", "RoPE at eval", *(f"depth {d}" for d in names)], depth_body), *paired] if part)


def _paired_passkey_table(groups: list[Group], baseline: Group, lengths: list[int]) -> str:
    """Every model against `baseline` on the same prompts (McNemar); none where no eval.json stores its prompts."""
    table = _mcnemar_table([(g, baseline) for g in groups if g is not baseline], lengths)
    if not table:
        return ""
    return (f"Passkey retrieval against {baseline.label} (paired: same prompts, seed s against seed s or a model "
            "without a seed against every seed, the pairs of all seeds pooled):\n\n" + table
            + f"\n\nA cell: +k/-m: k prompts that only the model answers, m that only {baseline.label} answers; p: "
            f"McNemar's exact two-sided test on those k + m prompts; {FINDING}: p < {SIGNIFICANCE}. "
            + _prompts_note(baseline.runs[0]["passkey"]))


def _scaling_passkey_table(groups: list[Group], lengths: list[int]) -> str:
    """Each model evaluated with RoPE scaling against itself as trained, on the same prompts: where the
    scaling should change nothing (prompts that fit the window), a difference is an evaluation bug."""
    by_label = {g.label: g for g in groups}
    pairs = [(g, by_label[g.label.rsplit(" + ", 1)[0]]) for g in groups
             if g.rope != "-" and g.label.rsplit(" + ", 1)[0] in by_label]
    table = _mcnemar_table(pairs, lengths)
    if not table:
        return ""
    return ("Passkey retrieval with RoPE scaling at evaluation against the same model without it (paired: same "
            "prompts and seeds):\n\n" + table
            + "\n\nA cell: +k/-m: k prompts answered only with the scaling, m only without it; p: McNemar's exact "
            f"two-sided test; {FINDING}: p < {SIGNIFICANCE}.")


def _prompts_note(passkey: dict) -> str:
    """What a length's prompts are, so a reader knows what the paired test generalises to."""
    if passkey.get("haystack", "filler") == "books":
        return ("A length's prompts each hide their own key in their own passage of the evaluated split's books "
                "(seeded, the same for every model); passages of one book are not independent, so the test is on "
                "these prompts and books, not on prompts in general.")
    return ("A length's prompts are one filler text with keys at a few depths (seeded, the same for every model), "
            "not independent draws of prompts: the test is on these prompts, not on prompts in general.")


def _mcnemar_table(pairs: list[tuple[Group, Group]], lengths: list[int]) -> str:
    """One row per (model, other) pair: McNemar's test of the model against the other at each length;
    empty where no pair has prompts stored."""
    tests = {(g.label, n): passkey_change(g, other, n) for g, other in pairs for n in lengths}
    if all(test is None for test in tests.values()):
        return ""
    body = [[g.label, g.rope, *(_mcnemar_cell(tests[g.label, n]) for n in lengths)] for g, _ in pairs]
    return markdown_table(["run", "RoPE at eval", *map(length_name, lengths)], body)


def _mcnemar_cell(test: tuple[int, int, float] | None) -> str:
    if test is None:
        return ""
    only_model, only_baseline, p = test
    return f"+{only_model}/-{only_baseline} p={p:.2g}" + (f" {FINDING}" if p < SIGNIFICANCE else "")


def _accuracy_cell(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['accuracy']:.2f} [{low:.2f}, {high:.2f}]"


def report(runs: list[dict[str, Any]], against: list[str]) -> str:
    groups = group_runs(runs)
    by_label = {g.label: g for g in groups}
    for label in against:
        if label not in by_label:
            raise BadInput(f"--against {label!r} is none of the runs: {', '.join(map(repr, by_label))}")
    baselines = [by_label[label] for label in against]
    with_ppl = [g for g in groups if g.perplexity is not None]
    parts = []
    if with_ppl:
        ppl = with_ppl[0].perplexity
        parts.append(perplexity_table(with_ppl))
        ratio = "; the ratio's [ ] also draws seeds, as a change's does" if len(with_ppl[0].lengths) > 1 else ""
        parts.append(f"Perplexity on {documents_read(ppl)}, windows moved by {ppl['stride']} tokens. A cell: the "
                     "perplexity (seeds pooled), ± the standard deviation of the seeds' perplexities, [ ] its 95% "
                     f"interval by {_resampling(ppl)}{ratio}.")
        parts += [change_table(with_ppl, baseline) for baseline in baselines if baseline.perplexity is not None]
    parts.append(passkey_tables(groups, baselines))
    return "\n\n".join(part for part in parts if part) + "\n"
