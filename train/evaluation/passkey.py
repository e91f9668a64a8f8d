"""Passkey retrieval (Mohtashami & Jaggi, 2023): find a 5-digit key hidden in a haystack.

A prompt is the task line, a haystack with the key line at a chosen depth, and the question,
built from the same token pieces as training's retrieval sequences (data/passkey.py), to exactly
the requested number of tokens. The haystack (`eval.passkey.haystack`) is book text of the
evaluated split, a passage at a seeded random place for each prompt, like the training side's
own book text (`books`, the default); or the original task's repeated filler sentences
(`filler`), a second evaluation that no model saw in training. The model answers by greedy
decoding with the KV cache, under one RoPE scale for the prompt and the answer. Keys come from
the evaluation's half of the key space, which training's retrieval mix never uses.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from conf.errors import BadInput
from data.passkey import FILLER, Pieces, draw_key
from data.tokenizer import adds_bos
from train.modeling_coca_llama import one_rope_scale
from train.diagnose import require_finite
from train.evaluation.stats import wilson

@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]
    key: str
    depth: float
    before: int  # haystack tokens before the key line
    haystack: int  # haystack tokens in all


def pieces(tokenizer: PreTrainedTokenizerBase, key: str) -> Pieces:
    encode = lambda text: tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    return Pieces.of(key, encode, [tokenizer.bos_token_id] if adds_bos(tokenizer) else [])


def build_prompt(tokenizer: PreTrainedTokenizerBase, key: str, length: int, depth: float,
                 haystack: list[int]) -> Prompt:
    """A prompt of exactly `length` tokens, the key line after round(depth x haystack) of the haystack's tokens."""
    parts = pieces(tokenizer, key)
    room = length - (parts.fixed - len(parts.answer))
    if room < 0:
        raise BadInput(f"eval.passkey.lengths has {length}: a passkey prompt needs at least {length - room} tokens")
    if len(haystack) < room:
        raise BadInput(f"a passkey prompt of {length} tokens needs {room} tokens of haystack, the text has {len(haystack)}")
    before = round(depth * room)
    return Prompt(parts.prompt(haystack[:room], before), key, depth, before, room)


def filler_tokens(tokenizer: PreTrainedTokenizerBase, count: int) -> list[int]:
    """At least `count` tokens of the original task's filler sentences, repeated."""
    cycle = tokenizer.backend_tokenizer.encode(" " + " ".join(FILLER), add_special_tokens=False).ids
    return cycle * (count // len(cycle) + 1)


def make_prompts(tokenizer: PreTrainedTokenizerBase, length: int, cases: int, depths: list[float], seed: int,
                 books: list[list[int]] | None = None) -> list[Prompt]:
    """`cases` prompts cycling through `depths`, each with its own key and, from `books` (token ids of
    the evaluated split's books), its own passage; the filler haystack without books. The same for
    any model."""
    long_enough = None if books is None else [book for book in books if len(book) >= length]
    if long_enough == []:
        raise BadInput(f"eval.passkey.haystack=books needs a book of at least {length} tokens in the evaluated "
                       "split for eval.passkey.lengths; use shorter lengths or eval.passkey.haystack=filler")
    prompts = []
    for case in range(cases):
        rng = random.Random(f"passkey:{seed}:{length}:{case}")
        key = draw_key(rng, for_evaluation=True)
        if long_enough is None:
            haystack = filler_tokens(tokenizer, length)
        else:
            book = rng.choice(long_enough)
            start = rng.randrange(0, len(book) - length + 1)
            haystack = book[start:start + length]
        prompts.append(build_prompt(tokenizer, key, length, depths[case % len(depths)], haystack))
    return prompts


@torch.no_grad()
def answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_new_tokens: int) -> str:
    # One prompt at a time: padding would shift positions, and slack CoCA is position-absolute.
    device = next(model.parameters()).device
    ids = torch.tensor([prompt.input_ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Under dynamic NTK, one RoPE scale for the prompt and the answer (train/modeling_coca_llama.py one_rope_scale):
    # greedy decoding with the cache, as a user generates, without the answer's queries rotated at
    # a scale the prompt's cached keys never had. Scoring the key teacher-forced in one forward
    # would avoid the cache too, but would not show what the model writes.
    with one_rope_scale(model, ids.shape[1] + max_new_tokens):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, use_cache=True, pad_token_id=pad, return_dict_in_generate=True,
                             output_logits=True)
    require_finite(torch.stack(out.logits), model, {"input_ids": ids}, f"passkey prompt of {ids.shape[1]} tokens")
    return tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)


def is_correct(answer_text: str, key: str) -> bool:
    return answer_text.strip().startswith(key)


def passkey_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
                     max_new_tokens: int) -> dict:
    """{"cases", "correct", "accuracy", "ci" (Wilson, 95%), "by_depth": {depth: {"cases", "correct",
    "accuracy"}}, "prompt_tokens": [shortest, longest], "prompts": [{"key", "depth", "answer", "correct"}]},
    the prompts in their order, the same for every model: what a paired comparison needs."""
    records = []
    for prompt in tqdm(prompts, desc="passkey", unit="prompt", dynamic_ncols=True):
        text = answer(model, tokenizer, prompt, max_new_tokens)
        records.append({"key": prompt.key, "depth": prompt.depth, "answer": text, "correct": is_correct(text, prompt.key)})
    hits = defaultdict(list)
    for record in records:
        hits[record["depth"]].append(record["correct"])
    correct = sum(record["correct"] for record in records)
    return {
        "cases": len(records),
        "correct": correct,
        "accuracy": correct / len(records),
        "ci": list(wilson(correct, len(records))),
        "by_depth": {str(depth): {"cases": len(h), "correct": sum(h), "accuracy": sum(h) / len(h)}
                     for depth, h in sorted(hits.items())},
        "prompt_tokens": [min(len(p.input_ids) for p in prompts), max(len(p.input_ids) for p in prompts)],
        "prompts": records,
    }
