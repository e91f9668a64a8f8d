"""Where a run's checkpoints are and which of them count: step folders, `latest`, folders set aside.

`latest` is the one definition of a run's newest checkpoint, for resume=auto, pruning and
evaluation alike: the step folder the `latest` file names when that is complete, else (the file
damaged or missing) the complete folder with the highest step. Whatever would contradict it (a
folder past a rewind, an earlier run's checkpoints) is set aside before a run starts
(checkpoint/resume.py), so the two readings agree.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from train.trainer.checkpoint.manifest import damage
from train.trainer.state import STATE_FILE
from conf.errors import BadInput

log = logging.getLogger(__name__)
LATEST_FILE = "latest"  # DeepSpeed's name: `engine.load_checkpoint(dir)` follows it too
_STEP_DIR = re.compile(r"^step-(\d+)$")
PRUNING_PREFIX = "pruning-"  # a folder being deleted


def step_tag(step: int) -> str:
    return f"step-{step:08d}"


def step_of(folder: Path) -> int:
    return int(_STEP_DIR.match(folder.name).group(1))


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
    return find_checkpoint(resume, "resume")


def find_checkpoint(path: str, key: str) -> Path:
    """The complete step folder that `path` names (a run_dir, its checkpoints/ folder or a step
    folder); `key` is the setting it came from, for messages."""
    for candidate in (Path(path), Path(path) / "checkpoints"):
        found = candidate if is_complete(candidate) else latest_checkpoint(candidate) if candidate.is_dir() else None
        if found is not None:
            if (problem := damage(found)) is not None:
                raise BadInput(f"{key}={path!r}: checkpoint {found} is damaged ({problem}); it is left as it is: "
                                 "name an earlier step folder")
            return found
    special = ", or use resume=auto|none" if key == "resume" else ""
    raise BadInput(f"{key}={path!r} holds no complete checkpoint (a step-N folder with {STATE_FILE}); "
                   f"give a run_dir, its checkpoints/ folder or a step folder{special}")


def to_prune(root: Path, keep_last: int, keep: Path) -> list[Path]:
    """What pruning after saving `keep` removes: the complete checkpoints before the newest
    `keep_last` up to `keep` (never `keep`, never anything newer), half-written folders older
    than it, and the leftovers of a prune that was killed."""
    newest = step_of(keep)
    older = [c for c in complete_checkpoints(root) if step_of(c) <= newest and c != keep]
    removed = older[: max(0, len(older) - (keep_last - 1))]
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if (m and int(m.group(1)) < newest and not is_complete(p)) or p.name.startswith(PRUNING_PREFIX):
            removed.append(p)
    return removed


def start_removal(folder: Path) -> Path:
    """Rename `folder` out of the checkpoints' names at once (a metadata operation): whatever
    happens to its slow deletion later, it never again reads as a checkpoint."""
    if folder.name.startswith(PRUNING_PREFIX):
        return folder
    target = folder.with_name(PRUNING_PREFIX + folder.name)
    os.replace(folder, target)
    return target


def remove(folder: Path) -> None:
    """Delete a folder renamed by `start_removal`; a failure is logged (the next prune tries again),
    since a prune that fails without a word lets the disk fill."""
    try:
        shutil.rmtree(folder)
    except OSError as error:
        log.warning("could not remove %s (%s): checkpoints are not being pruned, so the disk may fill; it is tried "
                    "again after the next save, or remove it by hand", folder, error)
