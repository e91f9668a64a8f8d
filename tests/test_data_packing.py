"""Packing: exact blocks of any length, labels, masking, storage type and determinism."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conf.data_schema import DataConfig, SampleCorpusConfig
from conf.errors import BadInput
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


# ---------------------------------------------------------------- packing=documents


@pytest.mark.parametrize("variant", ["vanilla", "slack", "exact"])
@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_a_packed_block_gives_each_document_the_logits_it_gets_alone(variant, kernel):
    """Restarting position ids are all transformers needs to keep documents apart, without a KV
    cache, as the trainer runs (float64; RoPE's tables are fp32 in transformers, hence 1e-6)."""
    from tests.test_coca import tiny_config, tiny_model
    from train.coca import convert_to_coca

    model = tiny_model(config=tiny_config(max_position_embeddings=64))
    if variant != "vanilla":
        model = convert_to_coca(model, variant)
    model.set_attn_implementation(kernel)
    docs = [torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(n)) for n in (9, 14, 7)]
    block = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = model(block, position_ids=positions, use_cache=False).logits[0]
        concatenated = model(block, use_cache=False).logits[0]
        start = 0
        for doc in docs:
            alone = model(doc[None], use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + len(doc)], alone, rtol=1e-6, atol=1e-6)
            start += len(doc)
    assert (concatenated[9:] - packed[9:]).abs().max() > 1e-3  # concat attends across: another result


def test_documents_packing_restarts_positions_and_masks_the_label_across_each_boundary(tmp_path, sample_tokenizer):
    cfg = DataConfig(seq_len=64, packing="documents", sample=SampleCorpusConfig(num_books=6, words_per_book=200),
                     cache_dir=str(tmp_path), validation_fraction=0)
    train = build_datasets(cfg, sample_tokenizer)["train"]
    starts = set(train.store.doc_starts.tolist())
    crossing = next(i for i in range(len(train)) if any(i * 64 < s < (i + 1) * 64 for s in starts))
    item = train[crossing]
    inside = sorted(s - crossing * 64 for s in starts if crossing * 64 < s < (crossing + 1) * 64)
    expected, latest = [], 0
    for t in range(64):
        latest = t if t in inside else latest
        expected.append(t - latest)
    assert item["position_ids"].tolist() == expected
    assert all(item["labels"][s] == IGNORE_INDEX for s in inside)
    plain = build_datasets(DataConfig(seq_len=64, sample=cfg.sample, cache_dir=str(tmp_path), validation_fraction=0),
                           sample_tokenizer)["train"][crossing]
    assert plain["position_ids"].tolist() == list(range(64)) and plain["input_ids"].equal(item["input_ids"])


def test_documents_packing_is_refused_with_sequence_parallelism_and_an_unknown_packing_in_one_line(sample_tokenizer):
    from transformers import LlamaConfig

    from conf import FinetuneConfig
    from train.parallel import sequence_parallel

    config = FinetuneConfig()
    config.trainer.sequence_parallel_size = 2
    config.data.packing = "documents"
    with pytest.raises(BadInput, match="data.packing=documents needs a mask that DeepSpeed's Ulysses does not keep"):
        sequence_parallel.check(config, LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2), 2)
    with pytest.raises(BadInput, match=r"data.packing='document' is not supported; choose one of concat, documents"):
        build_datasets(DataConfig(packing="document"), sample_tokenizer)

