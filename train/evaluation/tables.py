"""Tables comparing several evaluations (eval.json), for `python -m train.report` and the README's Results.

- Perplexity: a row per model (its seeds pooled, train/evaluation/groups.py), a column per window
  length, each cell the perplexity with its seed spread and document interval, and the
  extrapolation ratio ppl(longest) / ppl(shortest), itself a paired quantity with its interval.
- For each baseline named with --against: the paired change of every model against it at every
  length, marked where it is a finding (larger than its interval and twice the seed spread).
- Passkey accuracy by length (Wilson intervals, seeds pooled) and by depth, when some model
  retrieves keys at its shortest length; otherwise one line says that none does.
"""
from __future__ import annotations

import math
from typing import Any

from train.evaluation.groups import Change, Group, change, group_runs
from train.evaluation.report import documents_read, length_name, markdown_table, number
from conf.errors import BadInput

FINDING = "✓"


def _ppl_cell(group: Group, length: int) -> str:
    value, (low, high), sd = group.ppl(length), group.ppl_interval(length), group.ppl_spread(length)
    if math.isinf(value):
        return "inf"
    return f"{number(value)}" + (f" ±{sd:.2f}" if sd is not None else "") + f" [{number(low)}, {number(high)}]"


def _change_cell(c: Change, ratio: bool = False) -> str:
    """value ±seed spread [document interval], as a ratio ppl(longest) / ppl(shortest) or as a change in %."""
    low, high = c.interval
    if any(math.isinf(x) for x in (c.value, low, high)):
        return "inf"
    if ratio:
        sd = f" ±{c.spread:.2f}" if c.spread is not None else ""
        return f"{number(1 + c.value)}x{sd} [{number(1 + low)}, {number(1 + high)}]"
    sd = f" ±{100 * c.spread:.1f}" if c.spread is not None else ""
    return f"{100 * c.value:+.1f}%{sd} [{100 * low:+.1f}, {100 * high:+.1f}]" + (f" {FINDING}" if c.is_finding else "")


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
    lengths = baseline.lengths
    header = ["run", "RoPE at eval", *map(length_name, lengths)]
    body = [[g.label, g.rope, *(_change_cell(change(g, baseline, n)) for n in lengths)]
            for g in groups if g is not baseline]
    return (f"Change in perplexity against {baseline.label} (paired: same documents, seed against seed):\n\n"
            + markdown_table(header, body))


def passkey_tables(groups: list[Group]) -> str:
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
    return (f"Passkey accuracy by length ({cases} cases per length and seed; [ ]: 95% Wilson interval, seeds "
            f"pooled):\n\n" + markdown_table(["run", "RoPE at eval", "seeds", *map(length_name, lengths)], body)
            + "\n\nPasskey accuracy by the key's depth in the filler (0: start, 1: end), all lengths pooled:\n\n"
            + markdown_table(["run", "RoPE at eval", *(f"depth {d}" for d in names)], depth_body))


def _accuracy_cell(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['accuracy']:.2f} [{low:.2f}, {high:.2f}]"


def report(runs: list[dict[str, Any]], against: list[str]) -> str:
    groups = group_runs(runs)
    with_ppl = [g for g in groups if g.perplexity is not None]
    by_label = {g.label: g for g in with_ppl}
    for label in against:
        if label not in by_label:
            raise BadInput(f"--against {label!r} is none of the runs: {', '.join(map(repr, by_label))}")
    parts = []
    if with_ppl:
        ppl = with_ppl[0].perplexity
        parts.append(perplexity_table(with_ppl))
        parts.append(f"Perplexity on {documents_read(ppl)}, windows moved by {ppl['stride']} tokens. A cell: the "
                     "perplexity (seeds pooled), ± the standard deviation of the seeds' perplexities, [ ] the 95% "
                     "bootstrap interval over documents.")
        parts += [change_table(with_ppl, by_label[label]) for label in against]
        if against:
            parts.append(f"A cell: the change in perplexity, ± the standard deviation of the seeds' own changes, "
                         f"[ ] its 95% interval over documents; {FINDING}: a finding, larger than its interval "
                         "(which excludes no change) and than twice the seed spread.")
    parts.append(passkey_tables(groups))
    return "\n\n".join(part for part in parts if part) + "\n"
