"""Ulysses sequence parallelism (DeepSpeed's ALST): one sequence split over several ranks.

DeepSpeed's `UlyssesSPAttentionHF` takes the place of the configured kernel in transformers'
attention interface, which `CocaAttention` calls after preparing Q'/K'. CoCA's preparation is
per token, so it runs on each rank's slice of the sequence; the wrapper's all-to-all then
gives every rank the whole sequence for a share of the heads. Position ids stay global
(`UlyssesSPDataLoaderAdapter` slices them with the tokens), which slack CoCA needs.

Past the key-value heads: the all-to-all gives each rank a share of the heads, so the degree must
divide the query heads, and DeepSpeed also needs it to divide the key-value heads or be a multiple
of them (it then copies each one). Otherwise (SmolLM2's 9 query and 3 key-value heads at 9 ranks
works, at 2 does not divide the 9 query heads; 6 and 2 at 3 ranks neither divides) each key-value
head is first copied `kv_copies` times, the fewest that make DeepSpeed's rule hold while every
query keeps its own key-value head: grouped-query attention computed as with fewer groups, at the
cost of more all-to-all volume for keys and values.

Each rank's DataLoader still yields its own micro-batches; the adapter has the ranks of a
sequence-parallel group work through the group's micro-batches one after another, so
DeepSpeed accumulates `grad_accum x sp` micro-steps per optimizer step and the global batch
stays `micro_batch_size x grad_accum x world_size` sequences, as without sequence parallelism.
"""
from __future__ import annotations

from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF, UlyssesSPDataLoaderAdapter
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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
    heads, kv_heads = model_config.num_attention_heads, model_config.num_key_value_heads
    if kv_copies(heads, kv_heads, sp) is None:
        degrees = [d for d in range(2, heads + 1) if kv_copies(heads, kv_heads, d) is not None]
        problems.append(f"it does not divide the {heads} attention heads (with {kv_heads} key-value heads the degrees "
                        f"that work are {', '.join(map(str, degrees)) or 'none'})")
    if config.data.packing == "documents":
        problems.append("data.packing=documents needs a mask that DeepSpeed's Ulysses does not keep (it attends "
                        "causally over the whole gathered sequence); use data.packing=concat")
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


def kv_copies(heads: int, kv_heads: int, sp: int) -> int | None:
    """How many times each key-value head is copied for `sp` ranks (1: as it is), or None where no
    number works (sp does not divide the query heads). The copies must divide the query heads per
    key-value head, so that each query still reads its own key-value head."""
    if heads % sp or heads % kv_heads:
        return None
    groups = heads // kv_heads
    return next((r for r in range(1, groups + 1) if groups % r == 0
                 and ((kv_heads * r) % sp == 0 or sp % (kv_heads * r) == 0)), None)


def share_scale(zero_stage: int, sp: int) -> int:
    """The factor on each rank's share of the loss that makes DeepSpeed sum gradients over the group.

    ZeRO-1/2 divide the all-reduced gradients by the data-parallel size only, summing over the
    sequence-parallel group; ZeRO-3's reduce-scatter divides by the whole group of sp x dp ranks
    (DeepSpeed 0.19; its other path, reduce_scatter=false, mixes both, hence refused in `check`).
    """
    return sp if zero_stage == 3 else 1


def setup(model, config: FinetuneConfig, ds_config: dict):
    """Register Ulysses with transformers and DeepSpeed; returns the parallel-state module (mpu)."""
    sp, kernel = config.trainer.sequence_parallel_size, config.model.attn_implementation
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    copies = kv_copies(heads, kv_heads, sp)
    # DeepSpeed sizes its all-to-all from the config's key-value heads: the copied count.
    model.config.num_key_value_heads = kv_heads * copies
    try:
        mpu = UlyssesSPAttentionHF.register_with_transformers(
            model_name_or_path=model,
            core_attn_implementation=kernel,
            sequence_parallel_size=sp,
            micro_batch_size=config.trainer.micro_batch_size,
            seq_length=config.data.seq_len,
            seq_length_is_variable=False,
        )
    finally:
        model.config.num_key_value_heads = kv_heads
    if copies > 1:
        _copy_kv_heads_before(kernel, copies, heads // (kv_heads * copies))
    ds_config["sequence_parallel_size"] = sp
    ds_config["gradient_accumulation_steps"] = config.trainer.grad_accum * sp
    return mpu


def _copy_kv_heads_before(kernel: str, copies: int, groups: int) -> None:
    """Wrap the Ulysses attention registered under `kernel`: each key-value head repeated `copies`
    times (next to itself, so query i still reads key-value head i // original groups) before it."""
    ulysses = ALL_ATTENTION_FUNCTIONS[kernel]

    def with_copies(module, query, key, value, *args, **kwargs):
        module.num_key_value_groups = groups  # what the kernel's own repeat_kv must still do
        return ulysses(module, query, key.repeat_interleave(copies, dim=1), value.repeat_interleave(copies, dim=1),
                       *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS[kernel] = with_copies


def shard(loader, mpu, device):
    """The group's micro-batches, each cut along the sequence: this rank's slice of every one."""
    return UlyssesSPDataLoaderAdapter(loader, mpu.get_sequence_parallel_rank(), mpu.get_sequence_parallel_group(),
                                      mpu.get_sequence_parallel_world_size(), device)
