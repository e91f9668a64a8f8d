"""Raw books from the configured source, as named splits of PG-19-schema rows.

- `pg19`: `datasets.load_dataset(data.hub_name)`, by default `emozilla/pg19`, a Parquet copy of
  `deepmind/pg19` with the same columns and train/validation/test splits (deepmind/pg19
  itself is a loading script, which datasets 5 no longer runs). `data.streaming` reads it
  without downloading it first.
- `local`: `data.path`, a folder (searched recursively) or glob of .parquet, .jsonl or .txt
  files, one format per path. A .txt file is one book, titled by its file name. A file's
  split is the one its path below data.path names (below a glob's folder before its first
  wildcard, or a file's own folder), with the split keywords of datasets' own data-files
  patterns: train/training, validation/valid/val/dev, test/testing/eval/evaluation, in upper
  or lower case, as a whole folder name or as a word of a folder or file name that starts it or
  follows one of datasets' delimiters (`-`, `_`, `.`, space, a digit) and ends it or precedes
  one: `train/a.parquet`, `validation/part0/b.parquet`, `my_test/c.parquet`, `eval.parquet`,
  `valid-0.jsonl`; not `contest.parquet`. A file whose path names two splits
  (`train/test.parquet`) is refused; so is a file that names none while others do. When no
  file names a split, all of them train (a folder of books).
- `sample`: the generated corpus of data/sample_corpus.py, written once to the cache.

Without a validation split, a seeded `data.validation_fraction` of the training books is held out.
`data.text_field` names the column holding the text when it is not `text` (a code corpus's
`content`, say); such a source's documents are titled by their number.
"""
import glob
import itertools
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
from datasets.data_files import NON_WORDS_CHARS, SPLIT_KEYWORDS

from data.cache import cache_key, cache_root
from conf.data_schema import DataConfig
from data.errors import first_line
from data.sample_corpus import sample_corpus_dir
from data.schema import PG19_COLUMNS, PG19_FEATURES
from conf.errors import BadInput

RawSplit = Union[Dataset, IterableDataset]

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".txt": "text"}
_SPLIT_RANK = {"train": 0, "validation": 1, "test": 2}
# A keyword of datasets' table as its data-files patterns match one (`**/{keyword}/**`,
# `**/*[{sep}]{keyword}[{sep}]*`, ...), in each folder and file name. Those patterns accept a
# folder name's end after the keyword but want a delimiter in a file name's; one regex serves
# both, as a file name here always has "." before its suffix. Lower case: datasets' glob is
# case-sensitive, but a `Test/` folder must not train either.
_DELIMITER = f"[{NON_WORDS_CHARS}]"
_SPLIT_WORDS = {
    str(split): re.compile(rf"(?:^|{_DELIMITER})(?:{'|'.join(map(re.escape, words))})(?:{_DELIMITER}|$)")
    for split, words in SPLIT_KEYWORDS.items()
}
# Files named in the run's log per split; longer lists show their first few and last.
_LISTED_FILES = 4
# Fixed rather than the run's seed: the held-out books must not change between runs.
_HOLDOUT_SEED = 0


def load_raw_splits(cfg: DataConfig) -> tuple[dict[str, RawSplit], str, dict[str, str]]:
    """The source's splits (always "train"; "validation" and "test" when there are some), a
    one-line description of the source for messages, and where each split's books come from
    (its files, or the source), so that the run's log shows what trained."""
    if cfg.source == "sample":
        s = cfg.sample
        origin = f"sample(num_books={s.num_books}, words_per_book={s.words_per_book}, seed={s.seed})"
        splits, _ = _load_local(str(sample_corpus_dir(s, cache_root(cfg.cache_dir))), cfg.cache_dir, "text")
        sources = dict.fromkeys(splits, origin)
    elif cfg.source == "local":
        if not cfg.path:
            raise BadInput("data.source=local needs data.path: a folder or glob of .parquet, .jsonl or .txt files")
        origin = f"local:{cfg.path}"
        splits, files = _load_local(cfg.path, cfg.cache_dir, cfg.text_field)
        sources = {split: _describe_files(names, origin) for split, names in files.items()}
    elif cfg.source == "pg19":
        origin = f"pg19:{cfg.hub_name}"
        splits = _load_hub(cfg)
        sources = dict.fromkeys(splits, origin)
    else:
        raise BadInput(f"data.source={cfg.source!r}: allowed are sample, pg19, local")

    # train, validation, test, whatever order the source lists them in
    names = sorted(splits, key=lambda n: (_SPLIT_RANK.get(n, len(_SPLIT_RANK)), n))
    text_field = "text" if cfg.source == "sample" else cfg.text_field
    splits = {name: _as_pg19(splits[name], f"{origin} split {name!r}", text_field) for name in names}
    if "validation" not in splits and cfg.validation_fraction > 0:
        splits["train"], splits["validation"] = _hold_out(splits["train"], cfg.validation_fraction, origin)
        sources["validation"] = f"held out of train by data.validation_fraction={cfg.validation_fraction}"
    return splits, origin, {name: sources[name] for name in splits}


def _load_hub(cfg: DataConfig) -> dict[str, RawSplit]:
    try:
        splits = load_dataset(cfg.hub_name, streaming=cfg.streaming, cache_dir=cfg.cache_dir)
    except OSError as error:
        raise BadInput(f"cannot load data.hub_name={cfg.hub_name!r}: {first_line(error)}") from error
    if "train" not in splits:
        raise BadInput(f"data.hub_name={cfg.hub_name!r} has no 'train' split (it has {sorted(splits)})")
    return dict(splits)


def _load_local(path: str, cache_dir: str | None, text_field: str) -> tuple[dict[str, RawSplit], dict[str, list[str]]]:
    """The splits, and each one's files by their paths below data.path."""
    root, files = _local_files(path)
    suffixes = sorted({f.suffix for f in files})
    if len(suffixes) > 1:
        raise BadInput(f"data.path={path!r} mixes {', '.join(suffixes)} files: use one format per path")
    for f in files:
        _check_file_schema(f, text_field)
    by_split = _files_by_split(path, root, files)
    if "train" not in by_split:
        raise BadInput(f"data.path={path!r} has no training files, only {sorted(by_split)} (named by file or folder)")
    names = {split: [f.relative_to(root).as_posix() for f in split_files] for split, split_files in by_split.items()}
    paths = {split: [str(f) for f in split_files] for split, split_files in by_split.items()}
    builder = _BUILDERS[suffixes[0]]
    if builder == "text":
        return {split: _load_books(split_paths, split, cache_dir) for split, split_paths in paths.items()}, names
    # Parquet can skip unwanted columns while reading; JSON lines keeps them until _as_pg19.
    wanted = PG19_COLUMNS if text_field == "text" else [text_field]
    columns = {"columns": wanted} if builder == "parquet" else {}
    return dict(load_dataset(builder, data_files=paths, cache_dir=cache_dir, **columns)), names


def _local_files(path: str) -> tuple[Path, list[Path]]:
    """The folder that the files' splits are named below (data.path's own, a glob's folder before its
    first wildcard, a file's folder: names above it are the user's filing, not a split) and the files."""
    root = Path(path).expanduser()
    if root.is_dir():
        candidates = root.rglob("*")
    elif glob.has_magic(path):
        candidates = map(Path, glob.glob(os.path.expanduser(path), recursive=True))
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), root.parts))
    elif root.is_file():
        candidates, root = [root], root.parent
    else:
        raise BadInput(f"data.path={path!r} does not exist (relative to {os.getcwd()})")
    files = sorted(f for f in candidates if f.is_file() and f.suffix in _BUILDERS and not f.name.startswith("."))
    if not files:
        raise BadInput(f"data.path={path!r} holds no .parquet, .jsonl or .txt files")
    return root, files


def _files_by_split(path: str, root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Each file under the split its path below `root` names; all of them train when none names one.
    datasets would leave out a file that names none beside ones that do: here it is refused, so
    that no file is dropped or trained on by accident."""
    named = {f: _split_of(f, f.relative_to(root)) for f in files}
    if not any(named.values()):
        return {"train": files}
    unnamed = [f for f, split in named.items() if split is None]
    if unnamed:
        more = f" (and {len(unnamed) - 1} more files)" if len(unnamed) > 1 else ""
        example, split = next((f, split) for f, split in named.items() if split)
        raise BadInput(f"{unnamed[0]}{more} names no split while {example} names {split}: put train, validation or "
                       f"test in its file or folder name, or move it out of data.path={path!r}")
    by_split = defaultdict(list)
    for f, split in named.items():
        by_split[split].append(f)
    return dict(by_split)


def _split_of(file: Path, relative: Path) -> str | None:
    """The split that the file's path below data.path names, None if none.

    datasets has no order between two splits that one path names: it reads only folder names when
    any folder names a split (so `train/test.parquet` trains there) and puts a path that matches
    two splits' patterns (`train/validation/x.parquet`, `train-test.parquet`) in both. Such a
    path is refused rather than guessed."""
    parts = [part.lower() for part in relative.parts]
    named = [split for split, word in _SPLIT_WORDS.items() if any(word.search(part) for part in parts)]
    if len(named) > 1:
        raise BadInput(f"{file}: its path names the splits {' and '.join(named)}: rename the file or its folder "
                       f"so that it names one")
    return named[0] if named else None


def _describe_files(names: list[str], origin: str) -> str:
    shown = names if len(names) <= _LISTED_FILES else [*names[:_LISTED_FILES - 1], "...", names[-1]]
    return f"{len(names)} file{'' if len(names) == 1 else 's'} of {origin} ({', '.join(shown)})"


def _check_file_schema(file: Path, text_field: str) -> None:
    """Reads only a file's footer (Parquet) or first record (JSON lines), so that a wrong file
    is named before anything is converted."""
    if file.suffix == ".parquet":
        try:
            meta = pq.read_metadata(file)
        except pa.ArrowInvalid as error:
            raise BadInput(f"{file}: not a Parquet file ({first_line(error)})") from error
        schema = meta.schema.to_arrow_schema()
        empty = meta.num_rows == 0
        holds_strings = {f.name: pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in schema}
    elif file.suffix == ".jsonl":
        with open(file, encoding="utf-8") as f:
            first = f.readline()
        try:
            record = json.loads(first) if first.strip() else {}
        except json.JSONDecodeError as error:
            raise BadInput(f"{file}: line 1 is not JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise BadInput(f"{file}: line 1 is not a JSON object with PG-19's columns {PG19_COLUMNS}")
        empty = not first.strip()
        holds_strings = {name: isinstance(value, str) for name, value in record.items()}
    else:
        return
    if empty:
        raise BadInput(f"{file} holds no documents")
    if text_field != "text":
        if text_field not in holds_strings:
            raise BadInput(f"{file}: no column {text_field!r} (the text field); it has {sorted(holds_strings)}")
    elif missing := [c for c in PG19_COLUMNS if c not in holds_strings]:
        raise BadInput(f"{file}: missing columns {missing}; PG-19's schema is {PG19_COLUMNS}, or name the text "
                       f"column with data.text_field")
    if not holds_strings[text_field]:
        raise BadInput(f"{file}: column {text_field!r} must hold strings")


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


def _as_pg19(ds: RawSplit, where: str, text_field: str = "text") -> RawSplit:
    if text_field != "text":
        if text_field not in (ds.column_names or []):
            raise BadInput(f"{where}: no column {text_field!r} (the text field); it has {ds.column_names}")
        ds = ds.select_columns([text_field]).rename_column(text_field, "text").map(_numbered, with_indices=True)
    missing = [c for c in PG19_COLUMNS if c not in (ds.column_names or [])]
    if missing:
        raise BadInput(f"{where}: missing columns {missing}; PG-19's schema is {PG19_COLUMNS}")
    if isinstance(ds, Dataset) and len(ds) == 0:
        raise BadInput(f"{where} has no documents")
    ds = ds.select_columns(PG19_COLUMNS)
    return ds if ds.features == PG19_FEATURES else ds.cast(PG19_FEATURES)


def _numbered(row: dict, index: int) -> dict:
    """PG-19's other columns for a document that has only a text: its number is its title."""
    return {"short_book_title": f"document {index}", "publication_date": None, "url": ""}


def _hold_out(train: RawSplit, fraction: float, origin: str) -> tuple[Dataset, Dataset]:
    if not isinstance(train, Dataset):
        raise BadInput(f"{origin} has no validation split to stream: set data.streaming=false or "
                         f"data.validation_fraction=0")
    count = max(1, round(len(train) * fraction))
    if count >= len(train):
        raise BadInput(f"{origin}: holding out {count} of its {len(train)} training books for validation leaves "
                         f"none to train on; add books or set data.validation_fraction=0")
    # Selections in book order, kept in memory: a few ints per book, no cache file to rewrite.
    held = np.random.default_rng(_HOLDOUT_SEED).permutation(len(train))[:count]
    is_held = np.isin(np.arange(len(train)), held)
    return train.select(np.flatnonzero(~is_held)), train.select(np.flatnonzero(is_held))
