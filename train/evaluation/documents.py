"""The evaluation documents: whole books of a split, tokenized one by one and truncated.

Perplexity by window length needs each document's own tokens from its start (BOS, as the
model saw at training, but no EOS and nothing of the next document), not the packed blocks
training reads. The `sample` source has no test split of its own: its test books are the
next books of the same generated series (indices num_books, num_books + 1, ...), which the
run never trained on.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
from transformers import PreTrainedTokenizerBase

from conf.data_schema import DataConfig
from data.sample_corpus import generate_books
from data.sources import load_raw_splits
from data.tokenizer import adds_bos


def documents(cfg: DataConfig, split: str, tokenizer: PreTrainedTokenizerBase, num_docs: int,
              length: int) -> tuple[list[torch.Tensor], str]:
    """The first `num_docs` documents of `split` with at least `length` tokens, each cut to
    `length` (int64), and a one-line description of where they come from."""
    texts, origin = _texts(cfg, split, num_docs)
    found = []
    for text in texts:
        ids = token_ids(text, tokenizer)
        if len(ids) >= length:
            found.append(torch.tensor(ids[:length], dtype=torch.int64))
            if len(found) == num_docs:
                return found, origin
    raise ValueError(f"eval.num_docs={num_docs}, but {origin} has only {len(found)} documents of at least "
                     f"{length} tokens (max of eval.lengths): lower eval.num_docs or the lengths")


def token_ids(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    return [tokenizer.bos_token_id, *ids] if adds_bos(tokenizer) else ids


def _texts(cfg: DataConfig, split: str, num_docs: int) -> tuple[Iterable[str], str]:
    if cfg.source == "sample" and split == "test":
        s = cfg.sample
        books = generate_books(s.num_books + num_docs, s.words_per_book, s.seed)[s.num_books:]
        origin = f"sample(num_books={s.num_books}, words_per_book={s.words_per_book}, seed={s.seed}) test books"
        return (book["text"] for book in books), origin
    splits, origin = load_raw_splits(cfg)
    if split not in splits:
        raise ValueError(f"eval.split={split!r}: {origin} has splits {', '.join(splits)}")
    return _column(splits[split].select_columns(["text"])), f"{origin} split {split!r}"


def _column(rows) -> Iterator[str]:
    # Row by row, so that a streamed split is read only as far as needed.
    for row in rows:
        yield row["text"]
