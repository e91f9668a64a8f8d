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


@pytest.mark.long
@pytest.mark.parametrize("heads, kv_heads, sp", [(6, 3, 2), (6, 2, 3)])
def test_more_ranks_than_the_key_value_heads_divide_match_one_rank(env, tmp_path, shared_run, heads, kv_heads, sp):
    """Degrees that divide the query heads but neither divide the key-value heads nor are a multiple
    of them (what DeepSpeed accepts): the key-value heads are copied first, and the run still trains
    like one rank."""
    assert sequence_parallel.kv_copies(heads, kv_heads, sp) == sp
    # Validation reads each rank's share in turn: sp batches cover the one rank's first sp batches.
    common = [arg for arg in COMMON if not arg.startswith(("data.seq_len=", "trainer.eval_batches="))]
    args = [*common, "data.seq_len=48", f"trainer.eval_batches={sp}", "deepspeed=zero2", "model.attention=slack", f"model.arch.hidden_size={16 * heads}",
            f"model.arch.num_attention_heads={heads}", f"model.arch.num_key_value_heads={kv_heads}"]
    one_rank = shared_run(*args, f"trainer.grad_accum={sp}")
    code, out = finetune([f"run_dir={tmp_path / 'sp'}", "trainer.grad_accum=1", f"trainer.sequence_parallel_size={sp}",
                          *args], env, REPO, nproc=sp)
    assert code == 0, out
    one, shared = records(one_rank), records(tmp_path / "sp")
    for key in ("loss", "grad_norm", "val_loss"):
        expected = [r[key] for r in one if key in r]
        torch.testing.assert_close(torch.tensor([r[key] for r in shared if key in r]), torch.tensor(expected),
                                   rtol=1e-5, atol=1e-5, msg=key)
    assert_same_weights(tmp_path / "sp", one_rank, step=4)


def test_kv_head_copies_are_the_fewest_that_work():
    assert sequence_parallel.kv_copies(32, 8, 8) == 1  # LLaMA-3-8B: as DeepSpeed has it
    assert sequence_parallel.kv_copies(32, 8, 16) == 1  # DeepSpeed copies them itself
    assert sequence_parallel.kv_copies(28, 4, 7) == 7  # Qwen2-7B at 7 ranks: every query head its own
    assert sequence_parallel.kv_copies(9, 3, 9) == 1 and sequence_parallel.kv_copies(9, 3, 3) == 1  # SmolLM2-135M
    assert sequence_parallel.kv_copies(9, 3, 2) is None  # 2 does not divide the 9 query heads


def test_a_degree_that_cannot_work_is_refused_with_those_that_would():
    config = FinetuneConfig()
    config.trainer.sequence_parallel_size = 2
    model_config = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3)  # SmolLM2-135M
    with pytest.raises(ValueError, match="trainer.sequence_parallel_size=2: it does not divide the 9 attention heads "
                                         r"\(with 3 key-value heads the degrees that work are 3, 9\)"):
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
