"""Ulysses sequence parallelism: two ranks sharing each sequence train exactly like one rank."""
import pytest
import torch
from transformers import LlamaConfig

from tests.runs import PER_SEQUENCE as COMMON, REPO, assert_same_weights, finetune, records
from train.parallel import sequence_parallel
from conf import FinetuneConfig



@pytest.mark.long
def test_two_ranks_on_one_sequence_match_one_rank(env, tmp_path, shared_run):
    # Exact here; slack shares sequences in tests/test_tiling.py, tiled, against the same one-rank
    # reference, at ZeRO-2 and ZeRO-3.
    args = [*COMMON, "deepspeed=zero2", "model.attention=exact"]
    one_rank = shared_run(*args, "trainer.grad_accum=2")
    code, out = finetune([f"run_dir={tmp_path / 'sp'}", "trainer.grad_accum=1", "trainer.sequence_parallel_size=2",
                          *args], env, REPO, nproc=2)
    assert code == 0, out
    one, sp = records(one_rank), records(tmp_path / "sp")
    for key in ("loss", "grad_norm", "val_loss"):
        expected = [r[key] for r in one if key in r]
        assert len(expected) >= 2
        torch.testing.assert_close(torch.tensor([r[key] for r in sp if key in r]), torch.tensor(expected),
                                   rtol=1e-5, atol=1e-5, msg=key)
    assert_same_weights(tmp_path / "sp", one_rank, step=4)


def test_sequence_parallel_size_must_divide_the_heads():
    config = FinetuneConfig()
    config.trainer.sequence_parallel_size = 2
    model_config = LlamaConfig(num_attention_heads=4, num_key_value_heads=1)
    with pytest.raises(ValueError, match="trainer.sequence_parallel_size=2: it does not divide the attention heads 4 "
                                         "and key-value heads 1"):
        sequence_parallel.check(config, model_config, world_size=2)


def test_zero3_keeps_the_reduce_scatter_whose_scaling_the_loss_undoes():
    config = FinetuneConfig()
    config.trainer.sequence_parallel_size = 2
    config.deepspeed = {"zero_optimization": {"stage": 3, "reduce_scatter": False}}
    model_config = LlamaConfig(num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="ZeRO-3 needs deepspeed.zero_optimization.reduce_scatter=true"):
        sequence_parallel.check(config, model_config, world_size=2)
    config.deepspeed["zero_optimization"]["reduce_scatter"] = True
    sequence_parallel.check(config, model_config, world_size=2)
