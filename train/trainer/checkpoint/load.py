"""Loading a checkpoint into the engine: everything (a resume), or the weights alone (a new stage)."""
from __future__ import annotations

from pathlib import Path

from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from train.coca import gathered
from train.lora import is_lora
from train.trainer import distributed
from train.trainer.checkpoint.rng import restore_rng
from train.trainer.checkpoint.universal import to_universal
from train.trainer.state import TrainerState, saved_world_size
from conf.errors import BadInput


def load(engine, folder: Path) -> TrainerState:
    """Restore the engine (weights, optimizer, schedule) and RNG; return the trainer state."""
    source = to_universal(folder) if engine.load_universal_checkpoint() else folder
    load_path, _ = engine.load_checkpoint(
        str(source.parent),
        tag=source.name,
        load_module_strict=not is_lora(engine.module),  # a LoRA checkpoint holds only what trains
    )
    if load_path is None:
        raise BadInput(f"DeepSpeed found no checkpoint in {folder}")
    if saved_world_size(folder) == distributed.world_size():
        restore_rng(folder, distributed.rank())
    return TrainerState.load(folder)


def load_weights(engine, folder: Path) -> None:
    """The weights alone, for a new stage (fresh optimizer moments and schedule), from a checkpoint
    of any ZeRO stage and number of ranks. DeepSpeed's own weights-only load is not used: under
    ZeRO-3 it consolidates the folder's `latest` step whatever step it was asked for, and it cannot
    read another stage's files."""
    params = list(engine.module.parameters())
    sharded = hasattr(params[0], "ds_id")  # ZeRO-3 partitions every weight
    with gathered(params):
        if not sharded or distributed.is_main():  # under ZeRO-3 rank 0 reads, and its copy goes to every shard
            engine.module.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name))
    engine.optimizer.refresh_fp32_params()  # the optimizer's fp32 master copy takes them
