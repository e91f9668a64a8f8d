"""Which checkpoint a run resumes from, with damaged and abandoned checkpoints set aside.

- `resume=auto`: the newest complete checkpoint of the run_dir whose files match its manifest.
  Damaged ones (a shard cut short by a full disk, a file gone) are moved aside as
  `checkpoints/damaged-<step>-<time>/`, one line each, and the one before is tried.
- `resume=PATH`: that checkpoint; a damaged one is refused (status 2) and left where it is.
- Resuming from a checkpoint of this run that is not its newest (a rewind after a loss spike)
  moves the newer ones aside as `checkpoints/abandoned-<step>-<time>/` and repoints `latest`,
  so that neither `resume=auto` nor the next save meets the abandoned branch.
Nothing is deleted. The choice (`plan_resume`) moves nothing: the run checks the chosen
checkpoint against its own config first, and only then `apply`s the plan. Every rank reads the
same folders; rank 0 alone moves them.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch.distributed as dist

from data.files import write_atomically
from train.trainer import distributed
from train.trainer.checkpoint.folders import LATEST_FILE, complete_checkpoints, find_resume_checkpoint, set_aside, step_of
from train.trainer.checkpoint.manifest import damage

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ResumePlan:
    root: Path  # the run's checkpoints/
    chosen: Path | None  # the step folder to resume from; None: start fresh
    damaged: list[tuple[Path, str]]  # (folder, what is wrong) to set aside
    abandoned: list[Path]  # this run's checkpoints newer than the chosen one

    def apply(self) -> Path | None:
        """Set the damaged and abandoned folders aside and point `latest` at the chosen one."""
        dist.barrier()  # every rank has chosen before anything moves
        if distributed.is_main():
            for folder, problem in self.damaged:
                log.warning("checkpoint %s is damaged (%s): moved to %s", folder, problem, set_aside(folder, "damaged"))
            for folder in self.abandoned:
                log.warning("resuming from %s, an earlier step: %s moved to %s", self.chosen, folder,
                            set_aside(folder, "abandoned"))
            if self.chosen is not None and self.chosen.parent.resolve() == self.root.resolve():
                write_atomically(self.root / LATEST_FILE, self.chosen.name)
        dist.barrier()
        if self.damaged and self.chosen is None:
            raise ValueError(f"no sound checkpoint left in {self.root} (the damaged ones were moved aside there): "
                             "resume=none starts the run over")
        return self.chosen


def plan_resume(resume: str, run_dir: Path) -> ResumePlan:
    """The step folder to resume from, and what must move out of the way first."""
    root = run_dir / "checkpoints"
    if resume == "none":
        return ResumePlan(root, None, [], [])
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
    abandoned = [c for c in complete_checkpoints(root) if ours and step_of(c) > step_of(chosen) and c not in set_apart]
    return ResumePlan(root, chosen, damaged, abandoned)
