"""data.passkey_fraction: retrieval sequences mixed into training, from the training side only."""
import re

import pytest

from conf.data_schema import DataConfig, SampleCorpusConfig
from data import build_datasets
from data.passkey import QUESTION, is_evaluation_key, key_line
from tests.runs import QUICK, losses
from conf.errors import EXIT_PREEMPTED
from train.evaluation.passkey import make_prompts

SMALL = SampleCorpusConfig()  # 12 books: about 500 blocks of 256 tokens


def mixed(tmp_path, tokenizer, fraction=0.3, seed=0, seq_len=256):
    cfg = DataConfig(seq_len=seq_len, passkey_fraction=fraction, sample=SMALL, cache_dir=str(tmp_path))
    return build_datasets(cfg, tokenizer, seed)["train"]


def keys_of(dataset, tokenizer) -> dict[int, str]:
    found = {}
    for index in range(len(dataset)):
        if dataset.is_retrieval(index):
            text = tokenizer.decode(dataset[index]["input_ids"].tolist())
            found[index] = re.search(r"The pass key is (\d{5})\.", text).group(1)
    return found


def test_a_fraction_of_the_blocks_become_retrieval_sequences_of_the_same_length(tmp_path, sample_tokenizer):
    train = mixed(tmp_path, sample_tokenizer)
    retrieval = [i for i in range(len(train)) if train.is_retrieval(i)]
    assert len(train) > 150 and abs(len(retrieval) / len(train) - 0.3) < 0.08
    for index in retrieval[:20]:
        item = train[index]
        assert item["input_ids"].shape == item["labels"].shape == (256,)
        assert item["position_ids"].tolist() == list(range(256)) and item["input_ids"].equal(item["labels"])
        text = sample_tokenizer.decode(item["input_ids"].tolist())
        key = re.search(r"The pass key is (\d{5})\.", text).group(1)
        assert key_line(key) in text and f"What is the pass key? The pass key is {key}.</s>" in text
    plain = next(i for i in range(len(train)) if not train.is_retrieval(i))
    assert train[plain]["input_ids"].equal(train.blocks[plain]["input_ids"])  # the other blocks are untouched


def test_retrieval_is_trained_at_every_distance_and_position_the_window_holds(tmp_path, sample_tokenizer):
    """The evaluation asks for keys up to a window away and questions anywhere in it: training's
    sequences must reach both, not stop at half the window."""
    train = mixed(tmp_path, sample_tokenizer, fraction=0.9)
    question = sample_tokenizer.backend_tokenizer.encode(" " + QUESTION, add_special_tokens=False).ids
    distances, gaps, positions = [], [], []
    for index in (i for i in range(len(train)) if train.is_retrieval(i)):
        ids = train.retrieval_sequence(index)
        key = keys_of_sequence(ids, sample_tokenizer)
        line = sample_tokenizer.backend_tokenizer.encode(" " + key_line(key), add_special_tokens=False).ids
        at = next(i for i in range(len(ids)) if ids[i:i + len(question)] == question)
        line_at = next(i for i in range(len(ids)) if ids[i:i + len(line)] == line)
        distances.append(at - line_at)
        gaps.append(at - line_at - len(line))  # haystack between the key line and the question
        positions.append(at + len(question))  # where the answer is predicted
    assert max(distances) > 256 - 80 and min(gaps) < 10
    assert max(positions) > 256 - 12 and min(positions) < 90
    assert sum(p > 128 for p in positions) > len(positions) / 3  # not only at the start of the window


def keys_of_sequence(ids: list[int], tokenizer) -> str:
    return re.search(r"The pass key is (\d{5})\.", tokenizer.decode(ids)).group(1)


def test_the_mix_is_the_same_for_a_seed_and_another_for_another(tmp_path, sample_tokenizer):
    first, again = mixed(tmp_path, sample_tokenizer), mixed(tmp_path, sample_tokenizer)
    other = mixed(tmp_path, sample_tokenizer, seed=1)
    assert keys_of(first, sample_tokenizer) == keys_of(again, sample_tokenizer)
    assert all(first[i]["input_ids"].equal(again[i]["input_ids"]) for i in range(0, len(first), 7))
    assert keys_of(first, sample_tokenizer) != keys_of(other, sample_tokenizer)
    assert first.fingerprint != other.fingerprint != first.blocks.fingerprint


def test_training_keys_never_are_evaluation_keys(tmp_path, sample_tokenizer):
    training = set(keys_of(mixed(tmp_path, sample_tokenizer, fraction=0.9), sample_tokenizer).values())
    evaluation = {p.key for seed in (0, 1) for n in (256, 512)
                  for p in make_prompts(sample_tokenizer, n, 50, [0.0, 0.5, 1.0], seed)}
    assert len(training) > 150 and len(evaluation) > 150
    assert not any(is_evaluation_key(k) for k in training) and all(is_evaluation_key(k) for k in evaluation)
    assert not training & evaluation


def test_a_block_too_short_for_the_task_is_refused(tmp_path, sample_tokenizer):
    with pytest.raises(ValueError, match=r"data.passkey_fraction=0.3 needs data.seq_len >= \d\d \(a retrieval "
                                         r"sequence without haystack\), not 48"):
        mixed(tmp_path, sample_tokenizer, seq_len=48)
    with pytest.raises(ValueError, match=r"data.passkey_fraction=1.0: it must be in \[0, 1\)"):
        mixed(tmp_path, sample_tokenizer, fraction=1.0)


def test_a_run_with_the_mix_resumes_exactly(train_here, tmp_path):
    args = [*QUICK, "data.seq_len=192", "data.passkey_fraction=0.5", "trainer.max_steps=6"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert train_here(f"run_dir={whole}", *args) == 0
    assert train_here(f"run_dir={halves}", *args, "trainer.max_wall_time_min=0") == EXIT_PREEMPTED
    assert sorted(losses(halves)) == [1]
    assert train_here(f"run_dir={halves}", *args) == 0
    assert losses(halves) == losses(whole)
