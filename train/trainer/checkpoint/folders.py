"""Where a run's checkpoints are and which of them count: step folders, `latest`, folders set aside."""
from __future__ import annotations

import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from train.trainer.checkpoint.manifest import damage
from train.trainer.state import STATE_FILE

LATEST_FILE = "latest"  # DeepSpeed's name: `engine.load_checkpoint(dir)` follows it too
_STEP_DIR = re.compile(r"^step-(\d+)$")


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


def prune(root: Path, keep_last: int, keep: Path) -> None:
    """Remove complete checkpoints beyond the newest `keep_last`, and older half-written ones."""
    complete = complete_checkpoints(root)
    for old in complete[: max(0, len(complete) - keep_last)]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    newest = step_of(keep)
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and int(m.group(1)) < newest and not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
