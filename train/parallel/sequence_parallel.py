"""Ulysses sequence parallelism (DeepSpeed's ALST): one sequence split over several ranks.

DeepSpeed's `UlyssesSPAttentionHF` takes the place of the configured kernel in transformers'
attention interface, which `CocaAttention` calls after preparing Q'/K'. CoCA's preparation is
per token, so it runs on each rank's slice of the sequence; the wrapper's all-to-all then
gives every rank the whole sequence for a share of the heads. Position ids stay global
(`UlyssesSPDataLoaderAdapter` slices them with the tokens), which slack CoCA needs.

Each rank's DataLoader still yields its own micro-batches; the adapter has the ranks of a
sequence-parallel group work through the group's micro-batches one after another, so
DeepSpeed accumulates `grad_accum x sp` micro-steps per optimizer step and the global batch
stays `micro_batch_size x grad_accum x world_size` sequences, as without sequence parallelism.
"""
from __future__ import annotations

from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF, UlyssesSPDataLoaderAdapter

from conf import FinetuneConfig
from conf.errors import BadInput

# Kernels that work without a 4-D mask (the wrapper drops masks and attends causally).
KERNELS = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


def check(config: FinetuneConfig, model_config, world_size: int) -> None:
    sp = config.trainer.sequence_parallel_size
    if sp == 1:
        return
    problems = []
    if world_size % sp:
        problems.append(f"the world size {world_size} is not a multiple of it")
    heads = (model_config.num_attention_heads, model_config.num_key_value_heads)
    if any(h % sp for h in heads):
        problems.append(f"it does not divide the attention heads {heads[0]} and key-value heads {heads[1]}")
    if config.data.seq_len % sp:
        problems.append(f"it does not divide data.seq_len={config.data.seq_len}")
    if config.model.attn_implementation not in KERNELS:
        problems.append(f"model.attn_implementation={config.model.attn_implementation!r} is not one of "
                        f"{', '.join(KERNELS)}")
    zero = config.deepspeed.get("zero_optimization", {})
    if zero.get("stage") == 3 and zero.get("reduce_scatter") is False:
        problems.append("ZeRO-3 needs deepspeed.zero_optimization.reduce_scatter=true with it (with false, DeepSpeed "
                        "sums some gradients over the ranks sharing a sequence and averages others)")
    if problems:
        raise BadInput(f"trainer.sequence_parallel_size={sp}: {'; '.join(problems)}")


def share_scale(zero_stage: int, sp: int) -> int:
    """The factor on each rank's share of the loss that makes DeepSpeed sum gradients over the group.

    ZeRO-1/2 divide the all-reduced gradients by the data-parallel size only, summing over the
    sequence-parallel group; ZeRO-3's reduce-scatter divides by the whole group of sp x dp ranks
    (DeepSpeed 0.19; its other path, reduce_scatter=false, mixes both, hence refused in `check`).
    """
    return sp if zero_stage == 3 else 1


def setup(model, config: FinetuneConfig, ds_config: dict):
    """Register Ulysses with transformers and DeepSpeed; returns the parallel-state module (mpu)."""
    sp = config.trainer.sequence_parallel_size
    mpu = UlyssesSPAttentionHF.register_with_transformers(
        model_name_or_path=model,
        core_attn_implementation=config.model.attn_implementation,
        sequence_parallel_size=sp,
        micro_batch_size=config.trainer.micro_batch_size,
        seq_length=config.data.seq_len,
        seq_length_is_variable=False,
    )
    ds_config["sequence_parallel_size"] = sp
    ds_config["gradient_accumulation_steps"] = config.trainer.grad_accum * sp
    return mpu


def shard(loader, mpu, device):
    """The group's micro-batches, each cut along the sequence: this rank's slice of every one."""
    return UlyssesSPDataLoaderAdapter(loader, mpu.get_sequence_parallel_rank(), mpu.get_sequence_parallel_group(),
                                      mpu.get_sequence_parallel_world_size(), device)
