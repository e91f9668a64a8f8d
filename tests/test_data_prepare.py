"""Caching, crash safety, the `python -m data.prepare` CLI, and the real LLaMA-2 tokenizer."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conf.errors import BadInput
from conf.data_schema import DataConfig, SampleCorpusConfig
from data.pipeline import build_splits
from data.store import TokenStore
from data.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SMALL = SampleCorpusConfig(num_books=5, words_per_book=600, seed=2)


def sample_cfg(tmp_path, **kw):
    return DataConfig(source="sample", sample=SMALL, cache_dir=str(tmp_path), **{"seq_len": 128, **kw})


def snapshot(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.suffix in (".arrow", ".bin")}


def test_a_second_build_tokenizes_nothing(tmp_path, sample_tokenizer):
    first = build_splits(sample_cfg(tmp_path), sample_tokenizer)
    assert list(first) == ["train", "validation"] and not any(s.cached for s in first.values())
    files = snapshot(tmp_path)
    assert any(p.name.startswith("cache-") for p in files)  # Dataset.map's own cache files

    # A tokenizer loaded afresh is recognised by its content, and a new seq_len reuses the stream.
    again = build_splits(sample_cfg(tmp_path, seq_len=100), load_tokenizer("sample", cache_dir=str(tmp_path)))
    assert all(s.cached for s in again.values()) and snapshot(tmp_path) == files
    assert again["train"].dataset.store.folder == first["train"].dataset.store.folder

    # Without the stores, map's fingerprinted cache still spares the tokenization.
    for split in first.values():
        for f in split.dataset.store.folder.iterdir():
            f.unlink()
        split.dataset.store.folder.rmdir()
    rebuilt = build_splits(sample_cfg(tmp_path), sample_tokenizer)
    assert not any(s.cached for s in rebuilt.values())
    assert {p: t for p, t in snapshot(tmp_path).items() if p.suffix == ".arrow"} == {
        p: t for p, t in files.items() if p.suffix == ".arrow"}
    assert rebuilt["train"].dataset.store.tokens.tolist() == first["train"].dataset.store.tokens.tolist()


def test_parallel_tokenization_gives_the_same_stream(tmp_path, sample_tokenizer):
    serial = build_splits(sample_cfg(tmp_path / "1", validation_fraction=0), sample_tokenizer)["train"]
    parallel = build_splits(sample_cfg(tmp_path / "2", validation_fraction=0, num_proc=2), sample_tokenizer)["train"]
    assert np.array_equal(serial.dataset.store.tokens, parallel.dataset.store.tokens)


def test_a_killed_build_leaves_no_cache_that_is_trusted(tmp_path):
    store = tmp_path / "store"
    script = f"""
        import os, signal
        from pathlib import Path
        import numpy as np, pyarrow as pa
        from data.cache import publish_dir
        from data.store import write_store

        def batches():
            yield pa.chunked_array([pa.array([[1, 2, 3]], pa.list_(pa.uint16()))])
            os.kill(os.getpid(), signal.SIGKILL)

        with publish_dir(Path({str(store)!r})) as scratch:
            write_store(scratch, batches(), np.dtype(np.uint16), "test")
    """
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO)
    assert killed.returncode == -9 and not store.exists()

    (store / "tokens.bin").parent.mkdir()
    meta = {"format": 1, "dtype": "uint16", "num_tokens": 9, "num_documents": 1, "origin": "x", "content": "0"}
    (store / "meta.json").write_text(json.dumps(meta))
    (store / "tokens.bin").write_bytes(b"\0" * 4)
    with pytest.raises(ValueError, match="does not match its meta.json"):
        TokenStore.open(store)


@pytest.mark.parametrize("harm", ["tokenizer cut in half", "tokens.bin cut short", "doc_starts.bin edited",
                                  "meta.json edited", "corpus cut short", "manifest gone"])
def test_a_damaged_cache_is_named_set_aside_and_rebuilt(tmp_path, caplog, harm):
    cfg = sample_cfg(tmp_path, validation_fraction=0)
    tokenizer = load_tokenizer("sample", cache_dir=str(tmp_path))
    store = build_splits(cfg, tokenizer)["train"].dataset.store
    expected = store.tokens.tolist()
    root = tmp_path / "coca-longctx"
    (tokenizer_dir,), (corpus_dir,) = (root / "sample-tokenizer").iterdir(), (root / "sample-corpus").iterdir()
    victim = {"tokenizer cut in half": tokenizer_dir / "tokenizer.json", "tokens.bin cut short": store.folder / "tokens.bin",
              "doc_starts.bin edited": store.folder / "doc_starts.bin", "meta.json edited": store.folder / "meta.json",
              "corpus cut short": corpus_dir / "train.parquet", "manifest gone": store.folder / ".manifest.json"}[harm]
    data = victim.read_bytes()
    if harm == "manifest gone":
        victim.unlink()
    elif "edited" in harm:
        victim.write_bytes(data.replace(b"1", b"2", 1) if harm == "meta.json edited" else data[:-1] + b"\x07")
    else:
        victim.write_bytes(data[:len(data) // 2])

    with caplog.at_level("WARNING"):
        tokenizer = load_tokenizer("sample", cache_dir=str(tmp_path))
        rebuilt = build_splits(cfg, tokenizer)["train"]
    assert rebuilt.dataset.store.tokens.tolist() == expected
    (warning,) = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert str(victim.parent) in warning and "built again" in warning, warning
    assert len(list(victim.parent.parent.glob(f".damaged-{victim.parent.name}-*"))) == 1  # set aside, not deleted


def test_prepare_cli_on_the_sample(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    overrides = [f"data.cache_dir={tmp_path}", f"data.sample.num_books={SMALL.num_books}",
                 f"data.sample.words_per_book={SMALL.words_per_book}", f"data.sample.seed={SMALL.seed}",
                 "data.seq_len=128"]
    result = subprocess.run([sys.executable, "-m", "data.prepare", *overrides], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {m[0]: tuple(int(x.replace(",", "")) for x in m[1:]) for m in
            re.findall(r"^(train|validation)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)", result.stdout, re.M)}
    assert rows["train"][0] + rows["validation"][0] == SMALL.num_books
    assert all(blocks == tokens // 128 for _, tokens, blocks in rows.values())
    # The CLI built the sample tokenizer and the cache that an in-process build now reuses.
    splits = build_splits(sample_cfg(tmp_path), load_tokenizer("sample", cache_dir=str(tmp_path)))
    assert all(s.cached for s in splits.values())
    assert splits["train"].dataset.store.num_tokens == rows["train"][1]


def test_missing_or_unset_tokenizers_fail_in_one_line(tmp_path):
    with pytest.raises(BadInput, match=r"tokenizer folder '\./no/such/tokenizer' does not exist"):
        load_tokenizer("./no/such/tokenizer")
    with pytest.raises(ValueError, match="model.tokenizer and model.name_or_path are both null"):
        load_tokenizer(None, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="cannot load a tokenizer from") as error:
        load_tokenizer(str(tmp_path / "empty"))
    assert "\n" not in str(error.value)


def test_the_sample_tokenizer_is_rebuilt_identically(tmp_path):
    a = load_tokenizer("sample", cache_dir=str(tmp_path / "a"))
    b = load_tokenizer(None, "sample", cache_dir=str(tmp_path / "b"))
    assert len(a) == 512 and a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert [a.bos_token, a.eos_token, a.unk_token, a.pad_token] == ["<s>", "</s>", "<unk>", "<pad>"]
    assert a("x")["input_ids"][0] == a.bos_token_id


def test_real_books_with_the_llama2_tokenizer(tmp_path, shared_data):
    # Two real books under a train name, by link: the shared data is never copied.
    books = tmp_path / "books"
    books.mkdir()
    (books / "train.parquet").symlink_to(shared_data / "pg19-sample" / "validation.parquet")
    tokenizer = load_tokenizer(str(shared_data / "llama2-tokenizer"))
    cfg = DataConfig(source="local", path=str(books), seq_len=2048, validation_fraction=0.5,
                     cache_dir=str(tmp_path / "c"))
    splits = build_splits(cfg, tokenizer)
    stores = [s.dataset.store for s in splits.values()]
    # shared/data/SOURCES.md: 505,747 tokens without BOS/EOS for these two books.
    assert sum(s.num_tokens for s in stores) == 505_747 + 2 * 2
    assert all(s.tokens.dtype == np.uint16 and s.num_documents == 1 for s in stores)
    first = splits["validation"].dataset[0]["input_ids"]
    assert first[0] == tokenizer.bos_token_id == 1 and first.max() < 32000
