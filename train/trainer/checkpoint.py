"""Checkpoints under <run_dir>/checkpoints/: DeepSpeed's shards plus the trainer's own state.

A save is complete or it does not count. Every rank writes its DeepSpeed shards and RNG
state, all ranks meet at a barrier, and only then does rank 0 write `trainer_state.json`
(the completion mark) and atomically repoint `latest`. A kill at any moment leaves `latest`
on the previous complete checkpoint; resume skips folders without the mark. Before the mark,
`manifest.json` records every file and its size, so that a checkpoint damaged later (a full
disk, a copy cut short) is recognised before DeepSpeed tries to read it (train/trainer/resume.py).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist

from train.trainer import distributed
from train.trainer.state import STATE_FILE, TrainerState, saved_world_size, write_atomically

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"  # every file of the checkpoint and its size, written before STATE_FILE

LATEST_FILE = "latest"  # DeepSpeed's name: `engine.load_checkpoint(dir)` follows it too
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_tag(step: int) -> str:
    return f"step-{step:08d}"


def _rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-rank{rank:05d}.pt"


def _rng_state() -> dict:
    accelerator = deepspeed.get_accelerator()
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "accelerator": None if accelerator.device_name() == "cpu" else accelerator.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["accelerator"] is not None:
        deepspeed.get_accelerator().set_rng_state(state["accelerator"])


def is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete step folders, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def named_by_latest(root: Path) -> Path | None:
    """The step folder `latest` names, if it names one; a damaged `latest` (garbage, cut short)
    names nothing, and the newest complete folder is used instead."""
    try:
        name = (root / LATEST_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return root / name if _STEP_DIR.match(name) else None


def latest_checkpoint(root: Path) -> Path | None:
    """What `latest` names if that is complete, else the newest complete folder."""
    named = named_by_latest(root)
    if named is not None and is_complete(named):
        return named
    complete = complete_checkpoints(root)
    return complete[-1] if complete else None


def write_manifest(folder: Path) -> None:
    """Every file of a saved checkpoint and its size, written before the completion mark."""
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*"))
             if f.is_file() and f.name not in (STATE_FILE, MANIFEST_FILE) and not f.name.endswith(".tmp")}
    write_atomically(folder / MANIFEST_FILE, json.dumps({"files": files}, indent=1))


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint's files, or None. A checkpoint saved before
    manifests existed has none and is trusted, as it was then."""
    try:
        files = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / MANIFEST_FILE} is unreadable"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, {size} when saved"
    return None


def set_aside(folder: Path, why: str) -> Path:
    """Move a checkpoint folder out of the way, never deleting it: <why>-<step>-<time>."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{why}-{folder.name.removeprefix('step-')}-{stamp}")
    os.replace(folder, target)
    return target


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """resume=auto|none|PATH -> the step folder to resume from, or None to start fresh."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir / "checkpoints")
    path = Path(resume)
    for candidate in (path, path / "checkpoints"):
        found = candidate if is_complete(candidate) else latest_checkpoint(candidate) if candidate.is_dir() else None
        if found is not None:
            if (problem := damage(found)) is not None:
                raise ValueError(f"{resume!r}: checkpoint {found} is damaged ({problem}); it is left as it is: "
                                 "name an earlier step folder")
            return found
    raise FileNotFoundError(
        f"resume={resume!r} holds no complete checkpoint (a step-N folder with {STATE_FILE}); "
        "give a run_dir, its checkpoints/ folder or a step folder, or use resume=auto|none"
    )


def save(engine, root: Path, state: TrainerState, keep_last: int, extras) -> Path:
    """Save state.step on every rank. `extras(folder)` writes rank 0's descriptive files (config, tokenizer)."""
    tag = step_tag(state.step)
    folder = root / tag
    if distributed.is_main() and folder.exists():
        # Never write into a finished checkpoint (a branch abandoned by resuming from an older
        # step): a kill half-way would leave its old mark on mixed weights. A half-written one
        # is the debris of a killed save.
        if is_complete(folder):
            log.warning("%s already holds a complete checkpoint: moved to %s", folder, set_aside(folder, "abandoned"))
        else:
            shutil.rmtree(folder)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    rank = distributed.rank()
    tmp = _rng_file(folder, rank).with_suffix(".tmp")
    torch.save(_rng_state(), tmp)
    os.replace(tmp, _rng_file(folder, rank))
    if distributed.is_main():
        extras(folder)
    dist.barrier()
    if distributed.is_main():
        write_manifest(folder)
        state.save(folder, distributed.world_size())
        write_atomically(root / LATEST_FILE, tag)
        _prune(root, keep_last, keep=folder)
    dist.barrier()
    return folder


def _prune(root: Path, keep_last: int, keep: Path) -> None:
    """Remove complete checkpoints beyond the newest `keep_last`, and older half-written ones."""
    complete = complete_checkpoints(root)
    for old in complete[: max(0, len(complete) - keep_last)]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    newest = int(_STEP_DIR.match(keep.name).group(1))
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and int(m.group(1)) < newest and not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)


def to_universal(folder: Path) -> Path:
    """DeepSpeed's universal form of a checkpoint, made once by rank 0 inside the step folder.

    ZeRO shards optimizer state by data-parallel rank, so a run with another world size can
    only load the universal form (engine config `checkpoint.load_universal`).
    """
    universal = folder / "universal"
    if distributed.is_main() and not universal.is_dir():
        tmp = folder / "universal.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(folder),
                        "--output_folder", str(tmp), "--inject_missing_state"], check=True)
        os.replace(tmp, universal)
    dist.barrier()
    return universal


def load(engine, folder: Path, weights_only: bool = False) -> TrainerState:
    """Restore the engine and RNG and return the trainer state; or, with weights_only (a new
    stage starting from an old one), the weights alone: fresh optimizer moments and schedule."""
    source = to_universal(folder) if engine.load_universal_checkpoint() else folder
    with _frozen_weights_from_module_state(engine, weights_only):
        load_path, _ = engine.load_checkpoint(
            str(source.parent),
            tag=source.name,
            load_optimizer_states=not weights_only,
            load_lr_scheduler_states=not weights_only,
        )
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint in {folder}")
    if not weights_only:
        rng = _rng_file(folder, distributed.rank())
        if saved_world_size(folder) == distributed.world_size() and rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
    return TrainerState.load(folder)


@contextlib.contextmanager
def _frozen_weights_from_module_state(engine, weights_only: bool):
    """A stage that freezes weights (model.trainable=t_only) starting from a run that trained
    them all: DeepSpeed (0.19.8) then looks up every frozen weight among the checkpoint's frozen
    fragments, finds none, and raises KeyError. Under ZeRO 0-2 the module state it has just
    loaded already holds them whole, so the lookup is skipped by showing it no frozen weight."""
    frozen = [p for p in engine.module.parameters() if not p.requires_grad]
    if not weights_only or engine.zero_optimization_partition_weights() or not frozen:
        yield
        return
    for param in frozen:
        param.requires_grad_(True)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(False)


def model_weights(folder: Path, suffixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The model's weights whose names end in `suffixes`, from a step folder saved under ZeRO
    stage 0-2, whose model-states file holds them whole (ZeRO-3 partitions them over the ranks'
    files instead). Memory-mapped: only the weights asked for are read."""
    states = folder / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise FileNotFoundError(f"{states} does not exist: expected a checkpoint saved under ZeRO stage 0, 1 or 2")
    module = torch.load(states, map_location="cpu", weights_only=False, mmap=True)["module"]
    return {name: value.clone() for name, value in module.items() if name.endswith(suffixes)}
