"""Some of a parent run's weights, read straight from its checkpoint without an engine."""
from __future__ import annotations

from pathlib import Path

import torch


def model_weights(folder: Path, suffixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The model's weights whose names end in `suffixes`, from a step folder saved under ZeRO
    stage 0-2, whose model-states file holds them whole (ZeRO-3 partitions them over the ranks'
    files instead). Memory-mapped: only the weights asked for are read."""
    states = folder / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise FileNotFoundError(f"{states} does not exist: expected a checkpoint saved under ZeRO stage 0, 1 or 2")
    module = torch.load(states, map_location="cpu", weights_only=False, mmap=True)["module"]
    return {name: value.clone() for name, value in module.items() if name.endswith(suffixes)}
