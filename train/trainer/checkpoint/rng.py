"""Every rank's random-number state (Python, NumPy, torch, the accelerator), one file per rank."""
from __future__ import annotations

import os
import random
from pathlib import Path

import deepspeed
import numpy as np
import torch


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-rank{rank:05d}.pt"


def save_rng(folder: Path, rank: int) -> None:
    accelerator = deepspeed.get_accelerator()
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "accelerator": None if accelerator.device_name() == "cpu" else accelerator.get_rng_state(),
    }
    path = rng_file(folder, rank)
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def restore_rng(folder: Path, rank: int) -> bool:
    """Restore the state `rank` saved; False when there is none for that rank."""
    path = rng_file(folder, rank)
    if not path.is_file():
        return False
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["accelerator"] is not None:
        deepspeed.get_accelerator().set_rng_state(state["accelerator"])
    return True
