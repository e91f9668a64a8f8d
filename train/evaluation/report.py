"""An evaluation's results on disk: eval.json (for plots and comparisons) and eval.md (to read)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from data.files import json_ready, write_atomically
from conf.errors import BadInput

RESULTS_FILE, TABLE_FILE = "eval.json", "eval.md"


def length_name(length: int) -> str:
    """512, 1K, 1.5K, 32K: the paper's column names."""
    return f"{length / 1024:g}K" if length >= 1024 else str(length)


def write_results(results: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # Infinite perplexity (a model far outside its range) is null in JSON; nll keeps the value.
    write_atomically(folder / RESULTS_FILE, json.dumps(json_ready(results), indent=1, allow_nan=False) + "\n")
    write_atomically(folder / TABLE_FILE, markdown(results))
    return folder / RESULTS_FILE


def read_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"{path} does not exist (expected an {RESULTS_FILE} written by train.evaluate)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path} is not JSON ({error.msg}): expected an {RESULTS_FILE} written by "
                         "train.evaluate") from None
    if not isinstance(results, dict) or not {"label", "perplexity", "passkey"} <= results.keys():
        raise BadInput(f"{path} lacks label/perplexity/passkey: expected an {RESULTS_FILE} written by "
                         "train.evaluate")
    return results


def documents_read(ppl: dict[str, Any]) -> str:
    """E.g. "all 80 documents of 4096 tokens that the 4 books of local:... split 'test' hold"."""
    which = (f"all {ppl['num_docs']}" if ppl["num_docs"] == ppl["available_docs"]
             else f"{ppl['num_docs']} (each book's share, evenly spaced through it) of the {ppl['available_docs']}")
    return f"{which} documents of {ppl['doc_tokens']} tokens that the {ppl['books']} books of {ppl['data']} hold"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {results['label']}", "",
             f"- checkpoint: `{results['checkpoint']}`" + (f" (step {results['step']})" if results["step"] else ""),
             f"- attention: {results['model']['coca_variant']}; RoPE: {rope_label(results['model']['rope_parameters'])}; "
             f"{results['model']['dtype']} on {results['device']}", ""]
    ppl = results["perplexity"]
    if ppl is not None:
        rows = ppl["by_length"]
        lines += ["## Perplexity", "",
                  f"{documents_read(ppl)}; sliding windows moved by {ppl['stride']} tokens; [ ]: 95% bootstrap "
                  "interval over documents.", "",
                  markdown_table(["window"] + [length_name(r["length"]) for r in rows],
                                 [["perplexity"] + [number(r["ppl"]) for r in rows],
                                  ["95% interval"] + [_interval(r) for r in rows]]), ""]
    passkey = results["passkey"]
    if passkey is not None:
        rows = passkey["by_length"]
        depths = list(rows[0]["by_depth"])
        body = [[f"depth {d}"] + [f"{r['by_depth'][d]['accuracy']:.2f}" for r in rows] for d in depths]
        body.append(["**all**"] + [f"**{r['accuracy']:.2f}** [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" for r in rows])
        lines += ["## Passkey retrieval", "",
                  f"{passkey['cases']} cases per length (random 5-digit keys, seed {passkey['seed']}); "
                  "greedy decoding; accuracy by the key's depth in the haystack; [ ]: 95% Wilson interval.", "",
                  markdown_table(["length"] + [length_name(r["length"]) for r in rows], body), ""]
    return "\n".join(lines)


def _interval(row: dict[str, Any]) -> str:
    """A row's ppl_ci as eval.json keeps it: null for an infinite bound, and both null (with a finite
    perplexity) where one document gave no interval."""
    low, high = row["ppl_ci"]
    if low is None and high is None and row["ppl"] is not None and math.isfinite(row["ppl"]):
        return "one document: no interval"
    return f"[{number(low)}, {number(high)}]"


def rope_label(parameters: dict[str, Any]) -> str:
    """How reports name a RoPE setting: "dynamic x4" for {rope_type: dynamic, factor: 4.0}, "default" unscaled."""
    kind = parameters.get("rope_type", "default")
    return kind if kind == "default" else f"{kind} x{parameters.get('factor', 1):g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number(value: float | None) -> str:
    return "inf" if value is None or math.isinf(value) else f"{value:.2f}"
