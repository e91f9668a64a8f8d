"""Sources: the generated sample, each local format, the hub path, splits and bad input."""
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf.errors import BadInput
from conf.data_schema import DataConfig, SampleCorpusConfig
from data.pipeline import build_datasets
from data.sample_corpus import generate_books
from data.schema import PG19_FEATURES
from data.sources import load_raw_splits

SMALL = SampleCorpusConfig(num_books=4, words_per_book=800, seed=3)


def books(n, words=300, seed=0):
    return generate_books(n, words, seed)


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PG19_FEATURES.arrow_schema), path)


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def local(tmp_path, path, **kw):
    return DataConfig(source="local", path=str(path), cache_dir=str(tmp_path / "cache"), **{"seq_len": 64, **kw})


def stream_of(dataset):
    return dataset.store.tokens.tolist()


def test_sample_generator_is_deterministic_and_pg19_shaped():
    a, b = generate_books(3, 2000, seed=7), generate_books(3, 2000, seed=7)
    assert a == b
    assert generate_books(3, 2000, seed=8) != a
    for book in a:
        assert set(book) == set(PG19_FEATURES)
        assert len(book["text"].split()) >= 2000
    # Long-range structure: a first-chapter fact is recalled in later chapters.
    first_chapter, rest = a[0]["text"].split("CHAPTER 2.")
    intro = first_chapter.split("CHAPTER 1.\n\n")[1].split(".")[0]  # "<name> was a <trade> from <town>, ..."
    name = intro.split(" was a ")[0]
    assert name in rest and intro.split(" from ")[1].split(",")[0] in rest


def test_sample_source_holds_out_validation_books(tmp_path):
    cfg = DataConfig(source="sample", cache_dir=str(tmp_path), sample=SMALL, validation_fraction=0.25)
    splits, origin, _ = load_raw_splits(cfg)
    assert list(splits) == ["train", "validation"] and "sample" in origin
    train_titles, val_titles = splits["train"]["short_book_title"], splits["validation"]["short_book_title"]
    assert len(val_titles) == 1 and len(train_titles) == 3 and not set(train_titles) & set(val_titles)
    again, _, _ = load_raw_splits(cfg)
    assert again["validation"]["short_book_title"] == val_titles


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "txt"])
def test_each_local_format_gives_the_same_tokens(tmp_path, sample_tokenizer, fmt):
    rows = books(3)
    folder = tmp_path / fmt
    if fmt == "parquet":
        write_parquet(folder / "train.parquet", rows)
    elif fmt == "jsonl":
        write_jsonl(folder / "train.jsonl", rows)
    else:
        folder.mkdir()
        for i, row in enumerate(rows):
            (folder / f"book{i}.txt").write_text(row["text"])
    splits = build_datasets(local(tmp_path, folder, validation_fraction=0), sample_tokenizer)
    assert list(splits) == ["train"] and splits["train"].store.num_documents == 3
    expected = []
    for row in rows:
        ids = sample_tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        expected += [sample_tokenizer.bos_token_id, *ids, sample_tokenizer.eos_token_id]
    assert stream_of(splits["train"]) == expected


def test_local_splits_come_from_file_and_folder_names(tmp_path, sample_tokenizer):
    rows = books(6)
    write_parquet(tmp_path / "d" / "train-00000-of-00002.parquet", rows[:2])
    write_parquet(tmp_path / "d" / "train-00001-of-00002.parquet", rows[2:4])
    write_parquet(tmp_path / "d" / "valid.parquet", rows[4:5])
    write_parquet(tmp_path / "d" / "test" / "0.parquet", rows[5:])
    splits, _, _ = load_raw_splits(local(tmp_path, tmp_path / "d"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 1, "test": 1}
    glob_only, _, _ = load_raw_splits(local(tmp_path, tmp_path / "d" / "train-*.parquet", validation_fraction=0))
    assert {k: len(v) for k, v in glob_only.items()} == {"train": 4}


def titles(splits):
    return {name: sorted(split["short_book_title"]) for name, split in splits.items()}


def write_split_folders(folder, rows):
    """train/a, validation/part0/b and test/c: the split named by a folder at any depth."""
    write_parquet(folder / "train" / "a.parquet", rows[:2])
    write_parquet(folder / "validation" / "part0" / "b.parquet", rows[2:3])
    write_parquet(folder / "test" / "c.parquet", rows[3:4])


def test_a_split_is_named_anywhere_in_the_path(tmp_path):
    rows = books(4)
    write_split_folders(tmp_path / "d", rows)
    # No held-out books: validation is only what names it.
    splits, _, _ = load_raw_splits(local(tmp_path, tmp_path / "d", validation_fraction=0))
    names = [[r["short_book_title"] for r in part] for part in (rows[:2], rows[2:3], rows[3:4])]
    assert titles(splits) == {"train": sorted(names[0]), "validation": names[1], "test": names[2]}


def test_datasets_test_keywords_name_the_test_split(tmp_path):
    rows = books(6)
    write_split_folders(tmp_path / "d", rows)
    write_parquet(tmp_path / "d" / "testing.parquet", rows[4:5])
    write_parquet(tmp_path / "d" / "eval.parquet", rows[5:])
    splits, _, _ = load_raw_splits(local(tmp_path, tmp_path / "d"))
    assert titles(splits)["test"] == sorted(r["short_book_title"] for r in rows[3:])
    assert len(splits["train"]) == 2


def test_a_file_naming_no_split_beside_named_ones_is_refused(tmp_path):
    write_split_folders(tmp_path / "d", books(4))
    write_parquet(tmp_path / "d" / "notes.parquet", books(1, seed=1))
    with pytest.raises(BadInput, match="notes.parquet names no split") as error:
        load_raw_splits(local(tmp_path, tmp_path / "d"))
    assert str(tmp_path / "d" / "notes.parquet") in str(error.value) and "\n" not in str(error.value)


def test_a_folder_of_unnamed_files_all_trains(tmp_path):
    # data.path's own name ("dev-books") is the user's filing, not a split: only names below it count.
    rows = books(3)
    folder = tmp_path / "dev-books"
    write_parquet(folder / "a.parquet", rows[:1])
    write_parquet(folder / "part1" / "b.parquet", rows[1:2])
    write_parquet(folder / "Notes 2.parquet", rows[2:])
    splits, _, _ = load_raw_splits(local(tmp_path, folder, validation_fraction=0))
    assert titles(splits) == {"train": sorted(r["short_book_title"] for r in rows)}


def test_the_log_lists_each_splits_files_books_and_tokens(tmp_path, sample_tokenizer, caplog):
    rows = books(9)
    folder = tmp_path / "d"
    write_split_folders(folder, rows)
    for i, row in enumerate(rows[4:]):
        write_parquet(folder / "train" / f"more{i}.parquet", [row])
    with caplog.at_level(logging.INFO, logger="data.pipeline"):
        splits = build_datasets(local(tmp_path, folder), sample_tokenizer)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data split")]
    tokens = {name: f"{split.store.num_tokens:,} tokens" for name, split in splits.items()}
    origin = f"local:{folder}"
    assert lines == [
        f"data split train: 6 files of {origin} (train/a.parquet, train/more0.parquet, train/more1.parquet, ..., "
        f"train/more4.parquet), 7 books, {tokens['train']}",
        f"data split validation: 1 file of {origin} (validation/part0/b.parquet), 1 book, {tokens['validation']}",
        f"data split test: 1 file of {origin} (test/c.parquet), 1 book, {tokens['test']}",
    ]


def test_the_log_names_the_source_of_a_sample_and_a_held_out_split(tmp_path, sample_tokenizer, caplog):
    cfg = DataConfig(source="sample", cache_dir=str(tmp_path), sample=SMALL, validation_fraction=0.25, seq_len=64)
    with caplog.at_level(logging.INFO, logger="data.pipeline"):
        splits = build_datasets(cfg, sample_tokenizer)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data split")]
    assert lines == [
        f"data split train: sample(num_books=4, words_per_book=800, seed=3), 3 books, "
        f"{splits['train'].store.num_tokens:,} tokens",
        f"data split validation: held out of train by data.validation_fraction=0.25, 1 book, "
        f"{splits['validation'].store.num_tokens:,} tokens",
    ]


def test_extra_columns_are_dropped_and_types_cast(tmp_path):
    rows = [dict(r, publication_date=1900 + i, extra="x") for i, r in enumerate(books(2))]
    write_jsonl(tmp_path / "d" / "train.jsonl", rows)
    splits, _, _ = load_raw_splits(local(tmp_path, tmp_path / "d", validation_fraction=0))
    assert splits["train"].features == PG19_FEATURES


@pytest.mark.parametrize("streaming", [False, True])
def test_pg19_source_loads_a_hub_layout(tmp_path, sample_tokenizer, streaming):
    # datasets resolves a local folder exactly like a hub repository of Parquet files.
    hub = tmp_path / "hub"
    rows = books(4)
    write_parquet(hub / "data" / "train-00000-of-00001.parquet", rows[:3])
    write_parquet(hub / "data" / "validation-00000-of-00001.parquet", rows[3:])
    cfg = DataConfig(source="pg19", hub_name=str(hub), streaming=streaming, cache_dir=str(tmp_path / "c"), seq_len=32)
    splits = build_datasets(cfg, sample_tokenizer)
    reference = build_datasets(local(tmp_path, hub, seq_len=32), sample_tokenizer)
    assert list(splits) == ["train", "validation"]
    for name in splits:
        assert stream_of(splits[name]) == stream_of(reference[name])


def write_empty_parquet(path):
    write_parquet(path, [])


def write_blank_book(path):
    write_parquet(path, books(1) + [dict(books(1)[0], short_book_title="Blank", text="  \n")])


def write_wrong_columns(path):
    pq.write_table(pa.table({"title": ["a"], "body": ["b"]}), path)


def write_numeric_text(path):
    pq.write_table(pa.table({"short_book_title": ["a"], "publication_date": [1], "url": ["u"], "text": [5]}), path)


@pytest.mark.parametrize(
    "write, name, message",
    [
        (write_empty_parquet, "train.parquet", "train.parquet holds no documents"),
        (lambda p: p.write_text(""), "train.jsonl", "train.jsonl holds no documents"),
        (write_blank_book, "train.parquet", "document 'Blank'"),
        (write_wrong_columns, "train.parquet", "train.parquet: missing columns ['short_book_title', 'publ"),
        (write_numeric_text, "train.parquet", "column 'text' must hold strings"),
        (lambda p: p.write_text("not json\n"), "train.jsonl", "train.jsonl: line 1 is not JSON"),
        (lambda p: p.write_text('{"text": "x"}\n'), "train.jsonl", "missing columns ['short_book_title', 'publi"),
        (lambda p: p.write_bytes(b"PAR1garbage"), "train.parquet", "not a Parquet file"),
        (lambda p: p.write_text("a,b\n"), "train.csv", "holds no .parquet, .jsonl or .txt files"),
        (lambda p: write_parquet(p, books(2)), "validation.parquet", "has no training files"),
        (lambda p: write_parquet(p, books(2)), "train/test.parquet",
         "train/test.parquet: its path names the splits train and test"),
    ],
)
def test_bad_local_data_fails_in_one_line(tmp_path, sample_tokenizer, write, name, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    write(folder / name)
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        build_datasets(local(tmp_path, folder, validation_fraction=0), sample_tokenizer)
    assert "\n" not in str(error.value)


def test_bad_paths_and_settings_fail_in_one_line(tmp_path, sample_tokenizer):
    write_parquet(tmp_path / "mixed" / "a.parquet", books(1))
    write_jsonl(tmp_path / "mixed" / "b.jsonl", books(1))
    write_parquet(tmp_path / "one" / "a.parquet", books(1))
    cases = [
        (local(tmp_path, tmp_path / "missing"), BadInput, "does not exist"),
        (local(tmp_path, tmp_path / "mixed"), BadInput, "mixes .jsonl, .parquet files"),
        (local(tmp_path, tmp_path / "one"), BadInput, "holding out 1 of its 1 training books"),
        (DataConfig(source="local"), BadInput, "data.source=local needs data.path"),
        (DataConfig(source="web"), BadInput, "allowed are sample, pg19, local"),
        (DataConfig(source="pg19", hub_name=str(tmp_path / "nohub")), BadInput, "cannot load data.hub_name"),
        (DataConfig(seq_len=0), BadInput, "data.seq_len=0"),
        (DataConfig(seq_len=-5), BadInput, "data.seq_len=-5"),
        (DataConfig(validation_fraction=1.0), BadInput, "data.validation_fraction=1.0"),
    ]
    for cfg, kind, message in cases:
        with pytest.raises(kind, match=message) as error:
            build_datasets(cfg, sample_tokenizer)
        assert "\n" not in str(error.value)
