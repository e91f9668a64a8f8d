"""Tables comparing several evaluations (eval.json), for `python -m train.report` and the README's Results.

One row per run: perplexity at every window length, the extrapolation ratio
ppl(longest)/ppl(shortest), and the in-window (shortest length) change against chosen runs.
A passkey table follows when some run retrieves keys at its shortest length; otherwise one
line says that none does, rather than a table of zeros.
"""
from __future__ import annotations

import math
from typing import Any

from train.evaluation.report import length_name, markdown_table, number


def _ppl(row: dict[str, Any]) -> float:
    return float("inf") if row["ppl"] is None else row["ppl"]


def _rope(run: dict[str, Any]) -> str:
    parameters = run["model"]["rope_parameters"]
    if parameters.get("rope_type", "default") == "default":
        return "-"
    return f"{parameters['rope_type']} x{parameters.get('factor', 1):g}"


def _in_window(run: dict[str, Any]) -> float:
    return _ppl(run["perplexity"]["by_length"][0])


def perplexity_table(runs: list[dict[str, Any]], against: list[str]) -> str:
    """Markdown: a row per run; every run must share the same window lengths."""
    lengths = [row["length"] for row in runs[0]["perplexity"]["by_length"]]
    for run in runs:
        if [row["length"] for row in run["perplexity"]["by_length"]] != lengths:
            raise ValueError(f"{run['label']!r} was evaluated at other lengths than {runs[0]['label']!r}: "
                             "tables compare runs at the same lengths")
    by_label = {run["label"]: run for run in runs}
    for label in against:
        if label not in by_label:
            raise ValueError(f"--against {label!r} is none of the runs: {', '.join(map(repr, by_label))}")
    header = ["run", "RoPE at eval", *map(length_name, lengths),
              f"ppl({length_name(lengths[-1])}) / ppl({length_name(lengths[0])})",
              *(f"{length_name(lengths[0])} vs {label}" for label in against)]
    body = []
    for run in runs:
        rows = run["perplexity"]["by_length"]
        ratio = _ppl(rows[-1]) / _ppl(rows[0])
        change = [f"{100 * (_in_window(run) / _in_window(by_label[label]) - 1):+.1f}%" for label in against]
        ratio_text = number(ratio) + ("" if math.isinf(ratio) else "x")
        body.append([run["label"], _rope(run), *(number(_ppl(r)) for r in rows), ratio_text, *change])
    return markdown_table(header, body)


def passkey_table(runs: list[dict[str, Any]]) -> str:
    """Markdown accuracy by length, or one line when no run retrieves a key at its shortest length."""
    keyed = [run for run in runs if run["passkey"] is not None]
    if not keyed:
        return ""
    shortest = min(row["length"] for run in keyed for row in run["passkey"]["by_length"])
    if all(run["passkey"]["by_length"][0]["accuracy"] == 0 for run in keyed):
        return (f"Passkey retrieval: no run retrieves a single key even at {length_name(shortest)} tokens "
                f"({keyed[0]['passkey']['cases']} cases per length), so it is left out.")
    lengths = sorted({row["length"] for run in keyed for row in run["passkey"]["by_length"]})
    body = []
    for run in keyed:
        accuracy = {row["length"]: row["accuracy"] for row in run["passkey"]["by_length"]}
        body.append([run["label"], _rope(run), *(f"{accuracy[n]:.2f}" if n in accuracy else "" for n in lengths)])
    cases = keyed[0]["passkey"]["cases"]
    return (f"Passkey accuracy ({cases} cases per length):\n\n"
            + markdown_table(["run", "RoPE at eval", *map(length_name, lengths)], body))


def report(runs: list[dict[str, Any]], against: list[str]) -> str:
    with_ppl = [run for run in runs if run["perplexity"] is not None]
    parts = [perplexity_table(with_ppl, against)] if with_ppl else []
    if first := next(iter(with_ppl), None):
        ppl = first["perplexity"]
        parts.append(f"Perplexity: {ppl['num_docs']} documents of {ppl['data']}, "
                     f"each cut to {ppl['doc_tokens']} tokens, windows moved by {ppl['stride']} tokens.")
    parts.append(passkey_table(runs))
    return "\n\n".join(part for part in parts if part) + "\n"
