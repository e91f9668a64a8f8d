"""Loading a checkpoint into the engine: everything (a resume), or the weights alone (a new stage)."""
from __future__ import annotations

from pathlib import Path

from train.lora import is_lora
from train.trainer import distributed
from train.trainer.checkpoint.deepspeed_fixes import frozen_weights_from_module_state
from train.trainer.checkpoint.rng import restore_rng
from train.trainer.checkpoint.universal import to_universal
from train.trainer.state import TrainerState, saved_world_size
from conf.errors import BadInput


def load(engine, folder: Path, weights_only: bool = False) -> TrainerState:
    """Restore the engine and RNG and return the trainer state; or, with weights_only (a new
    stage starting from an old one), the weights alone: fresh optimizer moments and schedule."""
    source = to_universal(folder) if engine.load_universal_checkpoint() else folder
    with frozen_weights_from_module_state(engine, weights_only):
        load_path, _ = engine.load_checkpoint(
            str(source.parent),
            tag=source.name,
            load_optimizer_states=not weights_only,
            load_lr_scheduler_states=not weights_only,
            load_module_strict=not is_lora(engine.module),  # a LoRA checkpoint holds only what trains
        )
    if load_path is None:
        raise BadInput(f"DeepSpeed found no checkpoint in {folder}")
    if not weights_only and saved_world_size(folder) == distributed.world_size():
        restore_rng(folder, distributed.rank())
    return TrainerState.load(folder)
