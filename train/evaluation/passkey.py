"""Passkey retrieval (Mohtashami & Jaggi, 2023): find a 5-digit key hidden in filler text.

The prompt is their task line, filler sentences with the key line at a chosen depth, and the
question (data/passkey.py); the model answers by greedy decoding with the KV cache. The filler
is counted in sentences, so a prompt is the longest that fits the requested token length: it
falls short of it by less than one filler sentence. Keys come from the evaluation's half of the
key space, which training's retrieval mix (data.passkey_fraction) never uses.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data.passkey import FILLER, QUESTION, TASK, draw_key, key_line
from train.diagnose import require_finite
from train.evaluation.rope_state import forget_longer_sequences
from train.evaluation.stats import wilson
from conf.errors import BadInput


@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]
    key: str
    depth: float
    before: int  # filler sentences before the key line
    sentences: int  # filler sentences in all


def prompt_text(key: str, before: int, sentences: int) -> str:
    filler = [FILLER[i % len(FILLER)] for i in range(sentences)]
    return " ".join([TASK, *filler[:before], key_line(key), *filler[before:], QUESTION])


def build_prompt(tokenizer: PreTrainedTokenizerBase, key: str, length: int, depth: float) -> Prompt:
    """The longest prompt of at most `length` tokens, the key after round(depth x sentences) of them."""

    def encode(sentences: int) -> list[int]:
        return tokenizer(prompt_text(key, round(depth * sentences), sentences))["input_ids"]

    bare = len(encode(0))
    if bare > length:
        raise BadInput(f"eval.passkey.lengths has {length}: a passkey prompt needs at least {bare} tokens")
    cycle = len(encode(len(FILLER))) - bare
    # An estimate from the cost of one cycle of sentences, then corrected one sentence at a time.
    sentences = max(0, (length - bare) * len(FILLER) // cycle)
    while sentences > 0 and len(encode(sentences)) > length:
        sentences -= 1
    while len(encode(sentences + 1)) <= length:
        sentences += 1
    before = round(depth * sentences)
    return Prompt(encode(sentences), key, depth, before, sentences)


def make_prompts(tokenizer: PreTrainedTokenizerBase, length: int, cases: int, depths: list[float],
                 seed: int) -> list[Prompt]:
    """`cases` prompts cycling through `depths`, each with its own key; the same for any model."""
    prompts = []
    for case in range(cases):
        key = draw_key(random.Random(f"passkey:{seed}:{length}:{case}"), for_evaluation=True)
        prompts.append(build_prompt(tokenizer, key, length, depths[case % len(depths)]))
    return prompts


@torch.no_grad()
def answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_new_tokens: int) -> str:
    # One prompt at a time: padding would shift positions, and slack CoCA is position-absolute.
    device = next(model.parameters()).device
    ids = torch.tensor([prompt.input_ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    forget_longer_sequences(model)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         use_cache=True, pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
    require_finite(torch.stack(out.logits), model, {"input_ids": ids}, f"passkey prompt of {ids.shape[1]} tokens")
    return tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)


def is_correct(answer_text: str, key: str) -> bool:
    return answer_text.strip().startswith(key)


def passkey_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
                     max_new_tokens: int) -> dict:
    """{"cases", "correct", "accuracy", "ci" (Wilson, 95%), "by_depth": {depth: {"cases", "correct",
    "accuracy"}}, "prompt_tokens": [shortest, longest]}."""
    hits = defaultdict(list)
    for prompt in tqdm(prompts, desc="passkey", unit="prompt", dynamic_ncols=True):
        hits[prompt.depth].append(is_correct(answer(model, tokenizer, prompt, max_new_tokens), prompt.key))
    every = [hit for depth_hits in hits.values() for hit in depth_hits]
    return {
        "cases": len(every),
        "correct": sum(every),
        "accuracy": sum(every) / len(every),
        "ci": list(wilson(sum(every), len(every))),
        "by_depth": {str(depth): {"cases": len(h), "correct": sum(h), "accuracy": sum(h) / len(h)}
                     for depth, h in sorted(hits.items())},
        "prompt_tokens": [min(len(p.input_ids) for p in prompts), max(len(p.input_ids) for p in prompts)],
    }
