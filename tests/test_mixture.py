"""Data mixtures (data.sources) and length upsampling (data.upsample_long): the shares a run trains
on match the weights within sampling error, a resume continues the same stream, and the run logs
what it saw."""
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from conf.data_schema import UpsampleLongConfig
from conf.errors import BadInput
from data.mixture import Mixture
from data.packing import PackedDataset
from data.sampler import ResumableDistributedSampler
from data.store import TokenStore, write_store
from tests.runs import losses, records

SEQ_LEN = 16


def blocks(tmp_path, name: str, doc_lengths: list[int]) -> PackedDataset:
    """A split whose documents have these lengths in tokens."""
    folder = tmp_path / name
    folder.mkdir()
    docs = pa.chunked_array([pa.array([list(range(n)) for n in doc_lengths], pa.list_(pa.uint16()))])
    write_store(folder, [docs], np.dtype(np.uint16), name)
    return PackedDataset(TokenStore.open(folder), SEQ_LEN)


def test_each_source_gets_its_weights_share_of_the_table_and_of_the_batches_trained(tmp_path):
    books, code = blocks(tmp_path, "books", [SEQ_LEN * 300]), blocks(tmp_path, "code", [SEQ_LEN * 40] * 5)
    mixture = Mixture(["books", "code"], [books, code], [0.7, 0.3], seed=3, upsample=UpsampleLongConfig())
    assert len(mixture) == 500
    assert mixture.tokens_by_source(np.arange(500)) == {"books": 350 * SEQ_LEN, "code": 150 * SEQ_LEN}
    # code is drawn below its natural share (200 blocks): 150 different blocks, none twice
    assert len(set(mixture.block[mixture.source == 1])) == 150
    # 60 steps of 4 from the shuffled table: a share within 4 standard errors of 0.3
    sampler = ResumableDistributedSampler(len(mixture), 4, seed=0)
    seen = {"books": 0, "code": 0}
    for _ in range(60):
        for name, tokens in mixture.tokens_by_source(sampler.next_global_batch()).items():
            seen[name] += tokens
        sampler.advance()
    share = seen["code"] / sum(seen.values())
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 240)


def test_upsampling_draws_long_documents_blocks_factor_times_as_often(tmp_path):
    part = blocks(tmp_path, "books", [SEQ_LEN * 100, *[SEQ_LEN * 4] * 25])  # one long book, 25 short ones
    plain = Mixture(["books"], [part], [1.0], 0, UpsampleLongConfig())
    assert sorted(plain.block.tolist()) == list(range(200))  # without upsampling: every block once
    mixture = Mixture(["books"], [part], [1.0], 0, UpsampleLongConfig(min_tokens=SEQ_LEN * 50, factor=3.0))
    counts = np.bincount(mixture.block, minlength=200)
    # weights 3 x 100 blocks and 1 x 100 blocks spread over 200 rows: 1.5 and 0.5 per block
    assert counts[:100].sum() == 150 and counts[100:].sum() == 50
    assert set(counts[:100]) <= {1, 2} and set(counts[100:]) <= {0, 1}


def code_files(tmp_path):
    """Training documents in another schema: only a `content` column."""
    folder = tmp_path / "code"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / "train.jsonl", "w") as f:
        for i in range(30):
            body = "\n".join(f"def f{i}_{j}(x):\n    return x * {rng.integers(100)}" for j in range(40))
            f.write(json.dumps({"content": body, "repo": f"r{i}"}) + "\n")
    return folder


def mixture_args(tmp_path) -> list[str]:
    return ["data.seq_len=64", "data.sample.num_books=6", "data.sample.words_per_book=3000", "trainer.log_every=1",
            f"data.sources=[{{source:sample,weight:0.75}},"
            f"{{name:code,source:local,path:{code_files(tmp_path)},text_field:content,weight:0.25}}]"]


def test_a_run_logs_each_sources_share_and_resumes_the_same_stream(train_here, tmp_path):
    args = mixture_args(tmp_path)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train_here(f"run_dir={whole}", "trainer.max_steps=8", "trainer.save_every=8", *args) == 0
    assert train_here(f"run_dir={split}", "trainer.max_steps=4", "trainer.save_every=4", *args) == 0
    assert train_here(f"run_dir={split}", "trainer.max_steps=8", "trainer.save_every=4", *args) == 0
    assert losses(split) == losses(whole)
    logged = [r for r in records(whole) if "share/code" in r]
    assert [r["step"] for r in logged] == list(range(1, 9))
    last = logged[-1]
    assert last["share/sample"] + last["share/code"] == pytest.approx(1.0)
    # 8 steps of 2 blocks: 16 draws at 0.25
    assert abs(last["share/code"] - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 16)
    resumed = [r for r in records(split) if "share/code" in r]
    assert resumed[-1]["share/code"] == last["share/code"]


@pytest.mark.parametrize("override, message", [
    ("data.sources=[{source:sample,weight:0}]", "data.sources[0].weight=0.0"),
    ("data.sources=[{source:sample},{source:sample}]", "give each a different name"),
    ("data.upsample_long.min_tokens=0", "data.upsample_long: min_tokens=0"),
    ("data.sources=[{source:sample},{source:hub,path:x}]", "data.sources[1].source='hub' is not supported"),
])
def test_bad_mixtures_are_one_line_before_any_data_is_read(train_here, tmp_path, override, message):
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        train_here(f"run_dir={tmp_path / 'run'}", override)


def test_a_missing_text_field_names_the_file_and_its_columns(train_here, tmp_path):
    args = mixture_args(tmp_path)
    bad = [a.replace("text_field:content", "text_field:body") for a in args]
    with pytest.raises(BadInput, match=r"no column 'body' \(the text field\)"):
        train_here(f"run_dir={tmp_path / 'run'}", *bad)
