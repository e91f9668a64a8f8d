"""Raw books from the configured source, as named splits of PG-19-schema rows.

- `pg19`: `datasets.load_dataset(data.hub_name)`, by default `emozilla/pg19`, a Parquet copy of
  `deepmind/pg19` with the same columns and train/validation/test splits (deepmind/pg19
  itself is a loading script, which datasets 5 no longer runs). `data.streaming` reads it
  without downloading it first.
- `local`: `data.path`, a folder (searched recursively) or glob of .parquet, .jsonl or .txt
  files, one format per path. A .txt file is one book, titled by its file name. A file's
  split comes from its name or its folder's: train*, validation*/valid*/val*/dev*, test*;
  anything else is train.
- `sample`: the generated corpus of data/sample_corpus.py, written once to the cache.

Without a validation split, a seeded `data.validation_fraction` of the training books is held out.
"""
import glob
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, IterableDataset, load_dataset

from data.cache import cache_key, cache_root
from conf.data_schema import DataConfig
from data.errors import first_line
from data.sample_corpus import sample_corpus_dir
from data.schema import PG19_COLUMNS, PG19_FEATURES

RawSplit = Union[Dataset, IterableDataset]

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".txt": "text"}
_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
           "dev": "validation", "test": "test"}
_SPLIT_RANK = {"train": 0, "validation": 1, "test": 2}
# Fixed rather than the run's seed: the held-out books must not change between runs.
_HOLDOUT_SEED = 0


def load_raw_splits(cfg: DataConfig) -> tuple[dict[str, RawSplit], str]:
    """The source's splits (always "train"; "validation" and "test" when there are some) and a
    one-line description of the source for messages."""
    if cfg.source == "sample":
        s = cfg.sample
        origin = f"sample(num_books={s.num_books}, words_per_book={s.words_per_book}, seed={s.seed})"
        splits = _load_local(str(sample_corpus_dir(s, cache_root(cfg.cache_dir))), cfg.cache_dir)
    elif cfg.source == "local":
        if not cfg.path:
            raise ValueError("data.source=local needs data.path: a folder or glob of .parquet, .jsonl or .txt files")
        origin = f"local:{cfg.path}"
        splits = _load_local(cfg.path, cfg.cache_dir)
    elif cfg.source == "pg19":
        origin = f"pg19:{cfg.hub_name}"
        splits = _load_hub(cfg)
    else:
        raise ValueError(f"data.source={cfg.source!r}: allowed are sample, pg19, local")

    # train, validation, test, whatever order the source lists them in
    names = sorted(splits, key=lambda n: (_SPLIT_RANK.get(n, len(_SPLIT_RANK)), n))
    splits = {name: _as_pg19(splits[name], f"{origin} split {name!r}") for name in names}
    if "validation" not in splits and cfg.validation_fraction > 0:
        splits["train"], splits["validation"] = _hold_out(splits["train"], cfg.validation_fraction, origin)
    return splits, origin


def _load_hub(cfg: DataConfig) -> dict[str, RawSplit]:
    try:
        splits = load_dataset(cfg.hub_name, streaming=cfg.streaming, cache_dir=cfg.cache_dir)
    except OSError as error:
        raise FileNotFoundError(f"cannot load data.hub_name={cfg.hub_name!r}: {first_line(error)}") from error
    if "train" not in splits:
        raise ValueError(f"data.hub_name={cfg.hub_name!r} has no 'train' split (it has {sorted(splits)})")
    return dict(splits)


def _load_local(path: str, cache_dir: str | None) -> dict[str, RawSplit]:
    files = _local_files(path)
    suffixes = sorted({f.suffix for f in files})
    if len(suffixes) > 1:
        raise ValueError(f"data.path={path!r} mixes {', '.join(suffixes)} files: use one format per path")
    by_split = defaultdict(list)
    for f in files:
        _check_file_schema(f)
        by_split[_split_of(f)].append(str(f))
    if "train" not in by_split:
        raise ValueError(f"data.path={path!r} has no training files, only {sorted(by_split)} (named by file or folder)")
    builder = _BUILDERS[suffixes[0]]
    if builder == "text":
        return {split: _load_books(paths, split, cache_dir) for split, paths in by_split.items()}
    # Parquet can skip unwanted columns while reading; JSON lines keeps them until _as_pg19.
    columns = {"columns": PG19_COLUMNS} if builder == "parquet" else {}
    return dict(load_dataset(builder, data_files=dict(by_split), cache_dir=cache_dir, **columns))


def _local_files(path: str) -> list[Path]:
    root = Path(path).expanduser()
    if root.is_dir():
        candidates = root.rglob("*")
    elif glob.has_magic(path):
        candidates = map(Path, glob.glob(os.path.expanduser(path), recursive=True))
    elif root.is_file():
        candidates = [root]
    else:
        raise FileNotFoundError(f"data.path={path!r} does not exist (relative to {os.getcwd()})")
    files = sorted(f for f in candidates if f.is_file() and f.suffix in _BUILDERS and not f.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"data.path={path!r} holds no .parquet, .jsonl or .txt files")
    return files


def _split_of(file: Path) -> str:
    for name in (file.stem, file.parent.name):
        split = _SPLITS.get(re.split(r"[-_.]", name.lower())[0])
        if split:
            return split
    return "train"


def _check_file_schema(file: Path) -> None:
    """Reads only a file's footer (Parquet) or first record (JSON lines), so that a wrong file
    is named before anything is converted."""
    if file.suffix == ".parquet":
        try:
            meta = pq.read_metadata(file)
        except pa.ArrowInvalid as error:
            raise ValueError(f"{file}: not a Parquet file ({first_line(error)})") from error
        schema = meta.schema.to_arrow_schema()
        empty = meta.num_rows == 0
        holds_strings = {f.name: pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in schema}
    elif file.suffix == ".jsonl":
        with open(file, encoding="utf-8") as f:
            first = f.readline()
        try:
            record = json.loads(first) if first.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: line 1 is not JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{file}: line 1 is not a JSON object with PG-19's columns {PG19_COLUMNS}")
        empty = not first.strip()
        holds_strings = {name: isinstance(value, str) for name, value in record.items()}
    else:
        return
    if empty:
        raise ValueError(f"{file} holds no documents")
    missing = [c for c in PG19_COLUMNS if c not in holds_strings]
    if missing:
        raise ValueError(f"{file}: missing columns {missing}; PG-19's schema is {PG19_COLUMNS}")
    if not holds_strings["text"]:
        raise ValueError(f"{file}: column 'text' must hold strings")


def _load_books(paths: list[str], split: str, cache_dir: str | None) -> Dataset:
    # The files' sizes and times are in the key so that an edited book is read again.
    stamps = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    return Dataset.from_generator(
        _read_books, gen_kwargs={"paths": paths}, features=PG19_FEATURES, cache_dir=cache_dir,
        split=split, fingerprint=cache_key("txt-books", stamps),
    )


def _read_books(paths: list[str]) -> Iterator[dict]:
    for p in paths:
        path = Path(p)
        yield {"short_book_title": path.stem, "publication_date": None, "url": path.resolve().as_uri(),
               "text": path.read_text(encoding="utf-8")}


def _as_pg19(ds: RawSplit, where: str) -> RawSplit:
    missing = [c for c in PG19_COLUMNS if c not in (ds.column_names or [])]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}; PG-19's schema is {PG19_COLUMNS}")
    if isinstance(ds, Dataset) and len(ds) == 0:
        raise ValueError(f"{where} has no documents")
    ds = ds.select_columns(PG19_COLUMNS)
    return ds if ds.features == PG19_FEATURES else ds.cast(PG19_FEATURES)


def _hold_out(train: RawSplit, fraction: float, origin: str) -> tuple[Dataset, Dataset]:
    if not isinstance(train, Dataset):
        raise ValueError(f"{origin} has no validation split to stream: set data.streaming=false or "
                         f"data.validation_fraction=0")
    count = max(1, round(len(train) * fraction))
    if count >= len(train):
        raise ValueError(f"{origin}: holding out {count} of its {len(train)} training books for validation leaves "
                         f"none to train on; add books or set data.validation_fraction=0")
    # Selections in book order, kept in memory: a few ints per book, no cache file to rewrite.
    held = np.random.default_rng(_HOLDOUT_SEED).permutation(len(train))[:count]
    is_held = np.isin(np.arange(len(train)), held)
    return train.select(np.flatnonzero(~is_held)), train.select(np.flatnonzero(is_held))
