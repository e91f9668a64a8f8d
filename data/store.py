"""A split's token stream on disk: every document's ids end to end in one memory-mapped file.

Layout of a store folder: `tokens.bin` (the ids, in the narrowest unsigned type that holds
the vocabulary), `doc_starts.bin` (int64 offset of each document's first token) and
`meta.json`, which records the sha256 of the two streams (`content`): the same books and
tokenizer give the same content wherever the files or caches live. Any block of any length is
then a slice, so one store serves every seq_len.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from conf.errors import BadInput


_FORMAT = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for LLaMA's 32000 ids, uint32 above 65535."""
    return np.min_scalar_type(vocab_size - 1)


@dataclass
class TokenStore:
    folder: Path
    num_tokens: int
    num_documents: int
    dtype: np.dtype
    origin: str
    content: str  # sha256 of the token ids and document offsets, as written

    @classmethod
    def open(cls, folder: Path) -> "TokenStore":
        meta = json.loads((folder / "meta.json").read_text())
        store = cls(folder, meta["num_tokens"], meta["num_documents"], np.dtype(meta["dtype"]), meta["origin"],
                    meta["content"])
        size = (folder / "tokens.bin").stat().st_size
        if meta["format"] != _FORMAT or size != store.num_tokens * store.dtype.itemsize:
            raise BadInput(f"token cache {folder} does not match its meta.json: delete the folder to rebuild it")
        return store

    # Opened lazily and dropped when pickled, so that DataLoader workers map the file
    # themselves instead of receiving a copy of the whole array.
    @cached_property
    def tokens(self) -> np.memmap:
        return np.memmap(self.folder / "tokens.bin", dtype=self.dtype, mode="r", shape=(self.num_tokens,))

    @cached_property
    def doc_starts(self) -> np.memmap:
        return np.memmap(self.folder / "doc_starts.bin", dtype=np.int64, mode="r", shape=(self.num_documents,))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("tokens", "doc_starts")}


def write_store(folder: Path, documents: Iterable[pa.ChunkedArray], dtype: np.dtype, origin: str) -> None:
    """Streams batches of tokenized documents (Arrow list arrays) into the empty `folder`
    (a scratch folder of data.cache.publish_dir). Memory holds one batch at a time, whatever
    the corpus size."""
    num_tokens = num_documents = 0
    content = {"tokens": hashlib.sha256(), "starts": hashlib.sha256()}
    with open(folder / "tokens.bin", "wb") as tokens, open(folder / "doc_starts.bin", "wb") as starts:
        for batch in documents:
            lengths = pc.list_value_length(batch).to_numpy()
            offsets = num_tokens + np.cumsum(lengths, dtype=np.int64) - lengths
            ids = pc.list_flatten(batch).to_numpy().astype(dtype, copy=False)
            for array, file, digest in ((offsets, starts, content["starts"]), (ids, tokens, content["tokens"])):
                array.tofile(file)
                digest.update(array.tobytes())
            num_tokens += ids.size
            num_documents += lengths.size
        for f in (tokens, starts):
            f.flush()
            os.fsync(f.fileno())
    meta = {"format": _FORMAT, "dtype": np.dtype(dtype).name, "num_tokens": num_tokens,
            "num_documents": num_documents, "origin": origin,
            "content": hashlib.sha256((content["tokens"].hexdigest() + content["starts"].hexdigest()).encode()).hexdigest()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
