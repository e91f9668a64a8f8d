"""An evaluation run: checkpoint -> model and test documents -> perplexity, passkey -> files and W&B."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from transformers import PretrainedConfig, PreTrainedModel

from train.coca import CONFIG_KEY
from train.evaluation.config import EvalConfig, EvaluateConfig, validate
from train.evaluation.documents import Documents, documents
from train.evaluation.passkey import Prompt, make_prompts, passkey_accuracy
from train.evaluation.perplexity import sliding_window_perplexity
from train.evaluation.plot import plot_runs
from train.evaluation.report import write_results
from train.evaluation.stats import perplexity_interval
from train.evaluation.wandb_log import log_results
from train.inference.load import (DEEPSPEED, Checkpoint, checkpoint_config, device, load_checkpoint_tokenizer,
                                  load_model, resolve)

log = logging.getLogger(__name__)


def rope_tag(rope_scaling: Mapping[str, Any] | None) -> str | None:
    """dynamic-x4 for {rope_type: dynamic, factor: 4.0}: names the setting in folders and W&B keys."""
    if not rope_scaling:
        return None
    factor = rope_scaling.get("factor")
    return str(rope_scaling.get("rope_type", "rope")) + (f"-x{factor:g}" if factor is not None else "")


def output_dir(e: EvalConfig, ckpt: Checkpoint) -> Path:
    if e.output_dir is not None:
        return Path(e.output_dir).expanduser().absolute()
    tag = "-".join(filter(None, [rope_tag(e.rope_scaling), e.split if e.split != "test" else None,
                                 "filler" if e.passkey.haystack == "filler" else None]))
    if ckpt.kind == DEEPSPEED:
        return ckpt.home / "eval" / "-".join(filter(None, [ckpt.folder.name, tag]))
    return ckpt.home / "eval" / (tag or "default")


def training_run(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The training run's name and seed, from the checkpoint's config.yaml (none for an export)."""
    if ckpt.kind != DEEPSPEED or not (ckpt.folder / "config.yaml").is_file():
        return None
    resolved = yaml.safe_load((ckpt.folder / "config.yaml").read_text())
    return {"name": resolved["name"], "seed": resolved["seed"]}


def labels(e: EvalConfig, ckpt: Checkpoint, config: PretrainedConfig, run: dict | None) -> tuple[str, str]:
    """(label, group): the label names this evaluation (its run_dir, variant and RoPE); the group
    leaves out what tells seeds apart (the run's name instead of its run_dir), so that train.report
    can pool the seeds of one model."""
    if e.label is not None:
        return e.label, e.label
    tag = rope_tag(e.rope_scaling)
    suffix = f" {getattr(config, CONFIG_KEY, None) or 'vanilla'}" + (f" + {tag}" if tag else "")
    name = ckpt.name
    return name + suffix, (run["name"] if run else name) + suffix


def evaluate(config: EvaluateConfig) -> Path:
    """Run the configured evaluations; returns the eval.json written."""
    started = time.monotonic()
    validate(config)
    e, p = config.eval, config.eval.passkey
    ckpt = resolve(config.checkpoint, cache_dir=config.data.cache_dir)
    hf_config = checkpoint_config(ckpt, e.rope_scaling, "eval.rope_scaling")
    tokenizer = load_checkpoint_tokenizer(ckpt)
    lengths = sorted(set(e.lengths))
    # Documents and prompts before weights: bad lengths fail before a 7B model loads.
    docs = documents(config.data, e.split, tokenizer, lengths[-1], e.num_docs) if lengths else None
    prompts = _passkey_prompts(config, tokenizer)
    model = load_model(ckpt, hf_config, config.model.dtype, config.model.attn_implementation).to(device())
    run = training_run(ckpt)
    label, group = labels(e, ckpt, hf_config, run)
    results = {
        "label": label,
        "group": group,
        "run": run,
        "checkpoint": str(ckpt.folder),
        "kind": ckpt.kind,
        "step": ckpt.step,
        "model": {"coca_variant": getattr(hf_config, CONFIG_KEY, None) or "vanilla",
                  "rope_parameters": dict(hf_config.rope_parameters), "dtype": config.model.dtype,
                  "attn_implementation": config.model.attn_implementation},
        "device": str(device()),
        "perplexity": None,
        "passkey": None,
    }
    if lengths:
        results["perplexity"] = {
            "data": docs.origin, "split": e.split, "books": docs.books, "num_docs": len(docs.docs),
            "available_docs": docs.available, "doc_tokens": lengths[-1], "stride": e.stride,
            "documents": [doc.record() for doc in docs.docs],
            "by_length": _perplexities(model, docs, lengths, e)}
    if prompts:
        by_length = []
        for length, cases in prompts.items():
            by_length.append({"length": length, **passkey_accuracy(model, tokenizer, cases, p.max_new_tokens)})
            low, high = by_length[-1]["ci"]
            log.info("passkey accuracy at %d: %.2f [%.2f, %.2f]", length, by_length[-1]["accuracy"], low, high)
        results["passkey"] = {"cases": p.cases, "depths": list(p.depths), "seed": e.seed, "haystack": p.haystack,
                              "max_new_tokens": p.max_new_tokens, "by_length": by_length}
    results["seconds"] = round(time.monotonic() - started, 1)
    folder = output_dir(e, ckpt)
    path = write_results(results, folder)
    plot = plot_runs([results], folder / "eval.png")
    log_results(results, plot, ckpt, rope_tag(e.rope_scaling) or "default", config.logger)
    log.info("results in %s (eval.json, eval.md, eval.png)", folder)
    return path


def _passkey_prompts(config: EvaluateConfig, tokenizer) -> dict[int, list[Prompt]]:
    """The prompts of every passkey length; with book haystacks, from the evaluated split's books."""
    e, p = config.eval, config.eval.passkey
    lengths = sorted(set(p.lengths))
    books = None
    if lengths and p.haystack == "books":
        # Passages one token longer than the longest prompt: the first (BOS where a book starts) is dropped.
        passages = documents(config.data, e.split, tokenizer, lengths[-1] + 1)
        books = [doc.ids[1:].tolist() for doc in passages.docs]
    return {n: make_prompts(tokenizer, n, p.cases, list(p.depths), e.seed, books) for n in lengths}


def _perplexities(model: PreTrainedModel, docs: Documents, lengths: list[int], e: EvalConfig) -> list[dict]:
    """Each length's perplexity, its interval by the block bootstrap within each book (stats.py)."""
    ids, records = [doc.ids for doc in docs.docs], [doc.record() for doc in docs.docs]
    rows = []
    for length in lengths:
        # max_batch_tokens lets one setting batch many short windows and few long ones.
        per_batch = e.batch_size if e.max_batch_tokens is None else min(e.batch_size,
                                                                         max(1, e.max_batch_tokens // length))
        result = sliding_window_perplexity(model, ids, length, e.stride, per_batch)
        low, high = perplexity_interval(result.doc_nll, records)
        interval = "no interval" if math.isnan(low) else f"[{low:.4g}, {high:.4g}]"
        log.info("perplexity at %d: %.4g %s (%d documents, %d windows)", length, result.ppl, interval, len(ids),
                 result.windows)
        rows.append({"length": length, "ppl": result.ppl, "ppl_ci": [low, high], "nll": result.nll,
                     "tokens": result.tokens, "windows": result.windows, "doc_nll": result.doc_nll})
    return rows
