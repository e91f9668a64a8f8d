"""Packing: exact blocks of any length, labels, masking, storage type and determinism."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conf.data_schema import DataConfig, SampleCorpusConfig
from data.packing import IGNORE_INDEX
from data.pipeline import build_datasets
from data.sample_corpus import generate_books
from data.store import token_dtype
from data.tokenizer import check_tokenizer_fits

SMALL = SampleCorpusConfig(num_books=4, words_per_book=800, seed=1)


def sample_cfg(tmp_path, **kw):
    return DataConfig(source="sample", sample=SMALL, validation_fraction=0, cache_dir=str(tmp_path), **kw)


def expected_stream(tokenizer):
    stream = []
    for book in generate_books(SMALL.num_books, SMALL.words_per_book, SMALL.seed):
        ids = tokenizer(book["text"], add_special_tokens=False)["input_ids"]
        stream += [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return stream


@pytest.mark.parametrize("seq_len", [1, 7, 256, 4096])
def test_blocks_concatenate_to_the_token_stream(tmp_path, sample_tokenizer, seq_len):
    train = build_datasets(sample_cfg(tmp_path, seq_len=seq_len), sample_tokenizer)["train"]
    stream = expected_stream(sample_tokenizer)
    assert len(train) == len(stream) // seq_len
    blocks = [train[i] for i in range(len(train))]
    assert torch.cat([b["input_ids"] for b in blocks]).tolist() == stream[: len(train) * seq_len]
    for block in blocks[:3] + blocks[-1:]:
        assert all(t.dtype == torch.int64 and t.shape == (seq_len,) for t in block.values())
        assert block["position_ids"].tolist() == list(range(seq_len))
        assert torch.equal(block["labels"], block["input_ids"])


def test_documents_start_with_bos_and_end_with_eos(tmp_path, sample_tokenizer):
    train = build_datasets(sample_cfg(tmp_path, seq_len=64), sample_tokenizer)["train"]
    tokens, starts = train.store.tokens, train.store.doc_starts
    assert train.store.num_documents == SMALL.num_books and starts[0] == 0
    assert (tokens[starts] == sample_tokenizer.bos_token_id).all()
    eos = sample_tokenizer.eos_token_id
    assert (tokens[starts[1:] - 1] == eos).all() and tokens[-1] == eos


def test_masking_hides_only_predictions_across_documents(tmp_path, sample_tokenizer):
    seq_len = 512
    masked = build_datasets(sample_cfg(tmp_path, seq_len=seq_len, mask_doc_boundaries=True), sample_tokenizer)["train"]
    starts = set(masked.store.doc_starts.tolist())
    crossings = 0
    for i in range(len(masked)):
        item = masked[i]
        hidden = (item["labels"] == IGNORE_INDEX).nonzero().flatten().tolist()
        assert hidden == [j for j in range(1, seq_len) if i * seq_len + j in starts]
        keep = item["labels"] != IGNORE_INDEX
        assert torch.equal(item["labels"][keep], item["input_ids"][keep])
        crossings += len(hidden)
    assert crossings == sum(1 for s in starts if s % seq_len and s < len(masked) * seq_len) > 0


def test_builds_are_deterministic(tmp_path, sample_tokenizer):
    a = build_datasets(sample_cfg(tmp_path / "a", seq_len=128), sample_tokenizer)["train"]
    b = build_datasets(sample_cfg(tmp_path / "b", seq_len=128), sample_tokenizer)["train"]
    assert (a.store.folder / "tokens.bin").read_bytes() == (b.store.folder / "tokens.bin").read_bytes()


def test_storage_type_is_the_narrowest_that_holds_the_vocabulary(tmp_path, sample_tokenizer):
    assert [token_dtype(v) for v in (256, 512, 32000, 65536, 65537, 128256)] == [
        np.uint8, np.uint16, np.uint16, np.uint16, np.uint32, np.uint32]
    train = build_datasets(sample_cfg(tmp_path, seq_len=64), sample_tokenizer)["train"]
    assert train.store.tokens.dtype == np.uint16
    assert (train.store.folder / "tokens.bin").stat().st_size == 2 * train.store.num_tokens


def test_workers_map_the_file_instead_of_copying_it(tmp_path, sample_tokenizer):
    train = build_datasets(sample_cfg(tmp_path, seq_len=64), sample_tokenizer)["train"]
    train[0]  # maps the file in this process
    assert len(pickle.dumps(train)) < 2000 < train.store.num_tokens * 2
    batches = list(DataLoader(train, batch_size=4, num_workers=2))
    in_order = torch.stack([train[i]["input_ids"] for i in range(len(train))])
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), in_order)


def test_seq_len_longer_than_the_corpus_and_oversized_tokenizers_fail(tmp_path, sample_tokenizer):
    message = r"data.seq_len=10000000 is longer than the whole of sample\(.*\) split 'train' \(\d+ tokens\)"
    with pytest.raises(ValueError, match=message):
        build_datasets(sample_cfg(tmp_path, seq_len=10_000_000), sample_tokenizer)
    check_tokenizer_fits(sample_tokenizer, 512)
    with pytest.raises(ValueError, match="has 512 tokens but the model's vocab_size is 500"):
        check_tokenizer_fits(sample_tokenizer, 500)
