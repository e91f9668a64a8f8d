"""Which checkpoint a run resumes from, and what must move out of its way first.

- `resume=auto`: the run_dir's latest checkpoint (checkpoint/folders.py: what `latest` names, else
  the highest complete step) if its files match its manifest. A damaged one (a shard cut short
  by a full disk, a file gone) is moved aside as `checkpoints/damaged-<step>-<time>/`, one line
  each, and the complete one before it is tried.
- `resume=PATH`: that checkpoint; a damaged one is refused (status 2) and left where it is.
- Resuming from a checkpoint of this run that is not its newest (a rewind after a loss spike)
  moves the newer ones aside as `checkpoints/abandoned-<step>-<time>/` and repoints `latest`,
  so that neither `resume=auto` nor the next save meets the abandoned branch.
- A run that does not continue the run_dir's own checkpoints (`resume=none`, or a PATH outside
  it) over a run_dir that holds an earlier run: that run's checkpoints, metrics, config and
  evaluations move together to `<run_dir>/earlier-run-<time>/`, in one logged line. Otherwise
  the next `resume=auto` would meet the old run's higher steps, and pruning would keep them.
Nothing is deleted. The choice (`plan_resume`) moves nothing: the run checks the chosen
checkpoint against its own config first, and only then `apply`s the plan. Rank 0 makes both
(train/trainer/checkpoint/manager.py), so every rank follows one plan.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from datetime import datetime
from pathlib import Path

from conf.errors import BadInput
from data.files import write_atomically
from train.trainer.checkpoint.folders import (LATEST_FILE, complete_checkpoints, find_resume_checkpoint,
                                              latest_checkpoint, set_aside, step_of)
from train.trainer.checkpoint.manifest import damage

log = logging.getLogger(__name__)
# What a run writes in its run_dir, moved together when a new run replaces it; run.lock stays.
RUN_FILES = ("checkpoints", "metrics.jsonl", "config.yaml", "eval", "wandb")
EARLIER_RUN_PREFIX = "earlier-run-"


@dataclasses.dataclass
class ResumePlan:
    run_dir: Path
    chosen: Path | None  # the step folder to resume from; None: start fresh
    damaged: list[tuple[Path, str]]  # (folder, what is wrong) to set aside
    abandoned: list[Path]  # this run's checkpoints newer than the chosen one
    replaced: list[str]  # RUN_FILES of an earlier run that this one does not continue

    @property
    def root(self) -> Path:
        return self.run_dir / "checkpoints"

    def apply(self) -> None:
        """Set aside what the plan says and point `latest` at the chosen checkpoint (rank 0 only)."""
        for folder, problem in self.damaged:
            log.warning("checkpoint %s is damaged (%s): moved to %s", folder, problem, set_aside(folder, "damaged"))
        for folder in self.abandoned:
            log.warning("resuming from %s, an earlier step: %s moved to %s", self.chosen, folder,
                        set_aside(folder, "abandoned"))
        if self.replaced:
            target = self.run_dir / f"{EARLIER_RUN_PREFIX}{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
            target.mkdir()
            for name in self.replaced:
                os.replace(self.run_dir / name, target / name)
            steps = [step_of(c) for c in complete_checkpoints(target / "checkpoints")]
            log.warning("%s: run_dir=%s held an earlier run (%s); this run does not continue it, so it was moved "
                        "to %s, nothing deleted", self._why_new(), self.run_dir,
                        f"checkpoints to step {max(steps)}" if steps else "no complete checkpoint", target)
        if self.chosen is not None and self.chosen.parent.resolve() == self.root.resolve():
            write_atomically(self.root / LATEST_FILE, self.chosen.name)
        if self.damaged and self.chosen is None:
            raise BadInput(f"no sound checkpoint left in {self.root} (the damaged ones were moved aside there): "
                           "resume=none starts the run over")

    def _why_new(self) -> str:
        return "resume=none" if self.chosen is None else f"resuming from {self.chosen}, outside this run_dir"


def plan_resume(resume: str, run_dir: Path) -> ResumePlan:
    """The step folder to resume from, and what must move out of the way first."""
    root = run_dir / "checkpoints"
    damaged: list[tuple[Path, str]] = []
    if resume == "none":
        chosen = None
    elif resume == "auto":
        chosen = latest_checkpoint(root)
        older = [c for c in complete_checkpoints(root) if chosen is not None and step_of(c) < step_of(chosen)]
        while chosen is not None and (problem := damage(chosen)) is not None:
            damaged.append((chosen, problem))
            chosen = older.pop() if older else None
    else:
        chosen = find_resume_checkpoint(resume, run_dir)
    ours = chosen is not None and chosen.parent.resolve() == root.resolve()
    set_apart = {folder for folder, _ in damaged}
    abandoned = [c for c in complete_checkpoints(root) if ours and step_of(c) > step_of(chosen) and c not in set_apart]
    replaced = [] if ours or resume == "auto" else [name for name in RUN_FILES if _holds_a_run(run_dir, name)]
    return ResumePlan(run_dir, chosen, damaged, abandoned, replaced)


def _holds_a_run(run_dir: Path, name: str) -> bool:
    path = run_dir / name
    if name == "checkpoints":
        return path.is_dir() and any(path.iterdir())
    return path.exists()
