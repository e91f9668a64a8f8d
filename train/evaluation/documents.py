"""The evaluation documents: every book of a split, cut into consecutive pieces of equal length.

Perplexity by window length needs documents of one length, each read from a book's own tokens
(BOS where the book starts, as the model saw at training; no EOS and nothing of the next book).
Each book is tokenized once and cut into consecutive documents of `length` tokens; the tail that
does not fill one is dropped, and no document crosses from one book into the next. The whole
split is read. Documents are ordered round-robin over the books (every book's first document,
then every book's second, ...). A cap (`eval.num_docs`) gives each book its share of the first
`cap` places of that order, so that every book is sampled, and takes that share at evenly spaced
places through the book (the middle document of each of `share` equal stretches), still in
round-robin order: the capped documents are not all book openings (front matter, first chapters).

The `sample` source has no test split of its own: its test books are the next books of the same
generated series (indices num_books, num_books + 1, ...), which the run never trained on.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from itertools import zip_longest
from typing import Iterable, Iterator

import torch
from transformers import PreTrainedTokenizerBase

from conf.data_schema import DataConfig
from data.sample_corpus import generate_books
from data.pipeline import source_configs
from data.sources import load_raw_splits
from data.tokenizer import adds_bos
from conf.errors import BadInput

# How many books the `sample` source's test split has: the series' next ones after the training books.
SAMPLE_TEST_BOOKS = 4


@dataclasses.dataclass(frozen=True)
class Document:
    book: int  # the book's index in the split
    title: str
    offset: int  # where the document starts in the book's tokens (BOS included)
    ids: torch.Tensor  # int64, `length` tokens

    def record(self) -> dict:
        """What eval.json says of it: enough to find it again."""
        return {"book": self.book, "title": self.title, "offset": self.offset}


@dataclasses.dataclass(frozen=True)
class Documents:
    docs: list[Document]
    origin: str  # where they come from, in one line
    books: int  # books in the split
    available: int  # documents the split holds at this length, before a cap


def documents(cfg: DataConfig, split: str, tokenizer: PreTrainedTokenizerBase, length: int,
              cap: int | None = None) -> Documents:
    """Every document of `length` tokens in `split`, round-robin over the books (with a cap, each
    book's share of the first `cap` places, spread through the book)."""
    books, origin = _books(cfg, split)
    per_book = []
    for index, (title, text) in enumerate(books):
        ids = token_ids(text, tokenizer)
        per_book.append([Document(index, title, start, torch.tensor(ids[start:start + length], dtype=torch.int64))
                         for start in range(0, len(ids) - length + 1, length)])
    ordered = _round_robin(per_book)
    if not ordered:
        raise BadInput(f"{origin} holds no document of {length} tokens (max of eval.lengths): its longest book is "
                         f"shorter; lower the lengths")
    if cap is not None and cap > len(ordered):
        raise BadInput(f"eval.num_docs={cap}, but {origin} has only {len(ordered)} documents of {length} tokens "
                         "(max of eval.lengths): lower eval.num_docs (or leave it null: every document)")
    return Documents(ordered if cap is None else _spread(per_book, cap), origin, len(per_book), len(ordered))


def _round_robin(per_book: list[list[Document]]) -> list[Document]:
    return [doc for round_ in zip_longest(*per_book) for doc in round_ if doc is not None]


def _spread(per_book: list[list[Document]], cap: int) -> list[Document]:
    """Each book's share of the first `cap` round-robin places, the middles of equal stretches of
    the book, in round-robin order."""
    shares = Counter(doc.book for doc in _round_robin(per_book)[:cap])
    return _round_robin([[docs[(2 * i + 1) * len(docs) // (2 * shares[book])] for i in range(shares[book])]
                         for book, docs in enumerate(per_book)])


def token_ids(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    return [tokenizer.bos_token_id, *ids] if adds_bos(tokenizer) else ids


def _books(cfg: DataConfig, split: str) -> tuple[Iterable[tuple[str, str]], str]:
    """(title, text) of every book of the split, and a one-line description of where they come from.
    A mixture's validation and test books are its first source's."""
    cfg = source_configs(cfg)[0][1]
    if cfg.source == "sample" and split == "test":
        s = cfg.sample
        books = generate_books(s.num_books + SAMPLE_TEST_BOOKS, s.words_per_book, s.seed)[s.num_books:]
        origin = f"sample(num_books={s.num_books}, words_per_book={s.words_per_book}, seed={s.seed}) test books"
        return [(book["short_book_title"], book["text"]) for book in books], origin
    splits, origin, _ = load_raw_splits(cfg)
    if split not in splits:
        raise BadInput(f"eval.split={split!r}: {origin} has splits {', '.join(splits)}")
    return _rows(splits[split].select_columns(["short_book_title", "text"])), f"{origin} split {split!r}"


def _rows(rows) -> Iterator[tuple[str, str]]:
    # Row by row: a streamed split is read once, book by book.
    for row in rows:
        yield row["short_book_title"], row["text"]
