"""The one owner of a run_dir's checkpoints, for the life of a run.

Every decision about the folder is rank 0's, made once and broadcast (distributed.main_decides),
so that ranks whose views of a shared filesystem differ still act on one choice: the lock, which
checkpoint to resume and what to set aside first (checkpoint/resume.py), universal conversions
(checkpoint/universal.py) and pruning. Pruning renames the old folders at once and deletes them
in a thread of rank 0's, so no rank waits in a collective while a large checkpoint is removed.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from train.trainer import distributed
from train.trainer.checkpoint.folders import find_checkpoint, remove, start_removal, to_prune
from train.trainer.checkpoint.resume import ResumePlan, plan_resume
from train.trainer.checkpoint.save import save
from train.trainer.run_dir_lock import RunDirLock
from train.trainer.state import TrainerState

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, run_dir: Path, keep_last: int):
        self.run_dir, self.root, self.keep_last = run_dir, run_dir / "checkpoints", keep_last
        self.lock = RunDirLock(run_dir)
        self._removal: threading.Thread | None = None

    def open(self) -> None:
        """Take the run_dir for this run (refused on every rank if another run holds it)."""
        self.lock.acquire()

    def plan(self, resume: str, init_from: str | None) -> tuple[ResumePlan, Path | None]:
        """Rank 0's resume plan, and the `model.init_from` checkpoint when the run does not resume."""
        def decide() -> tuple[ResumePlan, Path | None]:
            plan = plan_resume(resume, self.run_dir)
            parent = None
            if init_from is not None and plan.chosen is None:
                parent = find_checkpoint(init_from, "model.init_from")
            return plan, parent

        return distributed.main_decides(decide)

    def apply(self, plan: ResumePlan) -> None:
        """Move what the plan sets aside; every rank returns once it is done."""
        distributed.main_decides(plan.apply)

    def save(self, engine, state: TrainerState, extras: Callable[[Path], None]) -> Path:
        """A complete checkpoint of state.step on every rank, then rank 0 prunes the old ones."""
        folder = save(engine, self.root, state, extras)
        if distributed.is_main():
            self._prune(keep=folder)
        return folder

    def _prune(self, keep: Path) -> None:
        self._wait_for_removal()
        try:
            doomed = [start_removal(folder) for folder in to_prune(self.root, self.keep_last, keep)]
        except OSError as error:
            log.warning("could not prune the checkpoints in %s (%s): the disk may fill; it is tried again after the "
                        "next save", self.root, error)
            return
        if doomed:
            self._removal = threading.Thread(target=lambda: [remove(folder) for folder in doomed],
                                             name="checkpoint-pruning")
            self._removal.start()

    def _wait_for_removal(self) -> None:
        if self._removal is not None:
            self._removal.join()
            self._removal = None

    def close(self) -> None:
        """Finish any deletion under way and release the run_dir."""
        self._wait_for_removal()
        self.lock.release()
