"""Tokenizing a split once: `Dataset.map` into datasets' cache, then streamed into a TokenStore.

Each document becomes [BOS] ids EOS (BOS only when the tokenizer prepends it, as LLaMA's
does), so the concatenated stream marks every boundary. The store's folder name is a key of
the raw split's datasets fingerprint, the tokenizer's content and `_VERSION`: a second run
with the same data and tokenizer opens the store and tokenizes nothing. If only the store is
missing, `map` finds its own cache file under the same fingerprint and skips the work too.
"""
from functools import partial
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, List, Value
from datasets.utils import tqdm
from transformers import PreTrainedTokenizerBase

from data.cache import cache_key, cached_folder, damage
from data.sources import RawSplit
from data.store import TokenStore, token_dtype, write_store
from data.tokenizer import adds_bos, tokenizer_fingerprint
from conf.errors import BadInput

# Bump when the token stream's content changes for the same data and tokenizer.
_VERSION = 2
# A PG-19 book averages ~400 KB of text and ~100K tokens; eight of them keep one batch's
# strings, encodings and ids in the low hundreds of MB, whatever the corpus size.
_DOCS_PER_BATCH = 8


def token_store(
    raw: RawSplit, split: str, origin: str, tokenizer: PreTrainedTokenizerBase, num_proc: int, root: Path
) -> tuple[TokenStore, bool]:
    """The split's store and whether it came from the cache (False: it was tokenized now)."""
    if tokenizer.eos_token_id is None:
        raise BadInput(f"tokenizer {tokenizer.name_or_path!r} has no EOS token: packing needs one between documents")
    # A streamed split has no datasets fingerprint: it is known by its name alone.
    raw_key = raw._fingerprint if isinstance(raw, Dataset) else cache_key(origin, split, "streamed")
    key = cache_key(_VERSION, raw_key, tokenizer_fingerprint(tokenizer), adds_bos(tokenizer))
    folder = root / "tokens" / key
    where = f"{origin} split {split!r}"
    # A store that was damaged may have been made from a damaged map cache: tokenize afresh.
    reuse_map_cache = not folder.is_dir() or damage(folder) is None

    def build(scratch: Path) -> None:
        dtype = token_dtype(len(tokenizer))
        tokenized = _tokenize(raw, tokenizer, dtype, num_proc, key, split, where, reuse_map_cache)
        total = len(raw) if isinstance(raw, Dataset) else None
        write_store(scratch, _batches(tokenized, total, split), dtype, where)

    folder, cached = cached_folder(folder, build, f"token store of {where}")
    return TokenStore.open(folder), cached


def _tokenize(
    raw: RawSplit, tokenizer, dtype: np.dtype, num_proc: int, fingerprint: str, split: str, where: str,
    reuse_map_cache: bool = True,
) -> RawSplit:
    encode = partial(
        _encode_batch, tokenizer=tokenizer, bos=tokenizer.bos_token_id if adds_bos(tokenizer) else None,
        eos=tokenizer.eos_token_id, dtype=dtype, where=where,
    )
    options = dict(batched=True, batch_size=_DOCS_PER_BATCH, remove_columns=raw.column_names,
                   features=Features({"input_ids": List(Value(dtype.name))}))
    if not isinstance(raw, Dataset):
        return raw.map(encode, **options)
    return raw.map(encode, **options, writer_batch_size=_DOCS_PER_BATCH, num_proc=num_proc if num_proc > 1 else None,
                   new_fingerprint=fingerprint, load_from_cache_file=reuse_map_cache, desc=f"Tokenizing {split}")


def _encode_batch(batch: dict, tokenizer, bos: Optional[int], eos: int, dtype: np.dtype, where: str) -> dict:
    for title, url, text in zip(batch["short_book_title"], batch["url"], batch["text"]):
        if not text or text.isspace():
            raise BadInput(f"{where}: document {title!r} ({url}) has no text")
    # The backend directly: no offsets computed and no max-length warnings for whole books.
    encodings = tokenizer.backend_tokenizer.encode_batch_fast(batch["text"], add_special_tokens=False)
    prefix = [] if bos is None else [bos]
    return {"input_ids": [np.array(prefix + e.ids + [eos], dtype=dtype) for e in encodings]}


def _batches(tokenized: RawSplit, total: Optional[int], split: str) -> Iterator[pa.ChunkedArray]:
    with tqdm(total=total, unit="doc", desc=f"Packing {split}") as progress:
        for table in tokenized.with_format("arrow").iter(batch_size=_DOCS_PER_BATCH):
            yield table.column("input_ids")
            progress.update(table.num_rows)
