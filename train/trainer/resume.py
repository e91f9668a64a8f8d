"""Which checkpoint a run resumes from, with damaged and abandoned checkpoints set aside.

- `resume=auto`: the newest complete checkpoint of the run_dir whose files match its manifest.
  Damaged ones (a shard cut short by a full disk, a file gone) are moved aside as
  `checkpoints/damaged-<step>-<time>/`, one line each, and the one before is tried.
- `resume=PATH`: that checkpoint; a damaged one is refused (status 2) and left where it is.
- Resuming from a checkpoint of this run that is not its newest (a rewind after a loss spike)
  moves the newer ones aside as `checkpoints/abandoned-<step>-<time>/` and repoints `latest`,
  so that neither `resume=auto` nor the next save meets the abandoned branch.
Nothing is deleted. Every rank reads the same folders; rank 0 alone moves them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from train.trainer import distributed
from train.trainer.checkpoint import (
    LATEST_FILE,
    complete_checkpoints,
    damage,
    find_resume_checkpoint,
    set_aside,
)
from train.trainer.state import write_atomically

log = logging.getLogger(__name__)


def resume_point(resume: str, run_dir: Path) -> Path | None:
    """The step folder to resume from (None: start fresh), once the way to it is clear."""
    if resume == "none":
        return None
    root = run_dir / "checkpoints"
    damaged: list[tuple[Path, str]] = []
    if resume == "auto":
        chosen = None
        for candidate in reversed(complete_checkpoints(root)):
            if (problem := damage(candidate)) is None:
                chosen = candidate
                break
            damaged.append((candidate, problem))
    else:
        chosen = find_resume_checkpoint(resume, run_dir)
    ours = chosen is not None and chosen.parent.resolve() == root.resolve()
    set_apart = {folder for folder, _ in damaged}
    newer = [c for c in complete_checkpoints(root) if ours and _step(c) > _step(chosen) and c not in set_apart]
    dist.barrier()  # every rank has chosen before anything moves
    if distributed.is_main():
        for folder, problem in damaged:
            log.warning("checkpoint %s is damaged (%s): moved to %s", folder, problem, set_aside(folder, "damaged"))
        for folder in newer:
            log.warning("resuming from %s, an earlier step: %s moved to %s", chosen, folder,
                        set_aside(folder, "abandoned"))
        if ours:
            write_atomically(root / LATEST_FILE, chosen.name)
    dist.barrier()
    if damaged and chosen is None:
        raise ValueError(f"no sound checkpoint left in {root} (the damaged ones were moved aside there): "
                         "resume=none starts the run over")
    return chosen


def _step(folder: Path) -> int:
    return int(folder.name.removeprefix("step-"))
