"""Saving a checkpoint on every rank: complete, or not there at all, even when the disk fills up.

Every rank writes its DeepSpeed shards and RNG state, and rank 0 the descriptive files (config,
tokenizer, identity); the first rank of each node then fsyncs everything in the folder, so that
a node that crashes later cannot leave torn shards under a completion mark. Only then rank 0
writes the manifest, the completion mark, and repoints `latest`. A disk that fills up on any rank stops the run on every rank with one line: the partial
folder is removed, `latest` stays on the last complete checkpoint, and the status is
EXIT_NO_SPACE, which launchers do not requeue (another try would fail the same way).
"""
from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from conf.errors import EXIT_NO_SPACE, StopRun
from data.files import fsync_tree, write_atomically
from train.lora import is_lora
from train.trainer import distributed
from train.trainer.checkpoint.folders import LATEST_FILE, complete_checkpoints, is_complete, set_aside, step_tag
from train.trainer.checkpoint.manifest import write_manifest
from train.trainer.checkpoint.rng import save_rng
from train.trainer.state import TrainerState

log = logging.getLogger(__name__)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# torch.save reports a full disk as a RuntimeError from its C++ stream, with no errno; a write
# that failed while less than this was left on the filesystem is taken for a full disk.
_NEARLY_FULL = 64 * 2**20


def save(engine, root: Path, state: TrainerState, extras: Callable[[Path], None]) -> Path:
    """Save state.step on every rank. `extras(folder)` writes rank 0's descriptive files."""
    folder = root / step_tag(state.step)
    _refuse_without_room(root, folder)
    if distributed.is_main() and folder.exists():
        # Never write into a finished checkpoint (a branch abandoned by resuming from an older
        # step): a kill half-way would leave its old mark on mixed weights. A half-written one
        # is the debris of a killed save.
        if is_complete(folder):
            log.warning("%s already holds a complete checkpoint: moved to %s", folder, set_aside(folder, "abandoned"))
        else:
            shutil.rmtree(folder)
    dist.barrier()
    # A LoRA run keeps only what trains; lora.json (written with the extras) says where the rest comes from.
    failure = _writing(lambda: engine.save_checkpoint(str(root), tag=folder.name, save_latest=False,
                                                      exclude_frozen_parameters=is_lora(engine.module)), root)
    if failure is not None:
        # Every other rank waits in the barrier DeepSpeed's save ends with; so does this one.
        dist.barrier()
    if failure is None:
        failure = _writing(lambda: save_rng(folder, distributed.rank()), root)
    if failure is None and distributed.is_main():
        failure = _writing(lambda: extras(folder), root)
    _stop_if_any_failed(failure, root, folder)  # also the barrier after which every rank's files are there
    if distributed.local_rank() == 0:
        failure = _writing(lambda: fsync_tree(folder), root)
    _stop_if_any_failed(failure, root, folder)
    if distributed.is_main():
        def mark_complete() -> None:
            write_manifest(folder)
            state.save(folder, distributed.world_size())
            write_atomically(root / LATEST_FILE, folder.name)

        failure = _writing(mark_complete, root)
    _stop_if_any_failed(failure, root, folder)
    return folder


def _writing(write: Callable[[], object], root: Path) -> Exception | None:
    """None if `write` succeeded; its error if the disk filled up meanwhile. Any other error is raised."""
    try:
        write()
    except (OSError, RuntimeError) as error:
        full = getattr(error, "errno", None) in _NO_SPACE or shutil.disk_usage(root).free < _NEARLY_FULL
        if not full:
            raise
        return error
    return None


def _stop_if_any_failed(failure: Exception | None, root: Path, folder: Path) -> None:
    if not distributed.any_rank(failure is not None):
        return
    written = _size(folder)
    if distributed.is_main():
        shutil.rmtree(folder, ignore_errors=True)
        if (root / LATEST_FILE).is_file() and (root / LATEST_FILE).read_text().strip() == folder.name:
            (root / LATEST_FILE).unlink()  # it named the folder just removed; the newest complete one is used
    dist.barrier()
    raise _no_space(root, folder, f"at least {_gib(written)} (written when the disk filled)")


def _refuse_without_room(root: Path, folder: Path) -> None:
    """Before writing anything: is there room for another checkpoint the size of the last one?"""
    previous = complete_checkpoints(root)
    needed = _size(previous[-1]) if previous else 0
    short = distributed.is_main() and bool(previous) and needed > shutil.disk_usage(root).free
    if distributed.any_rank(short):
        raise _no_space(root, folder, f"about {_gib(needed)} (the size of {previous[-1].name})")


def _no_space(root: Path, folder: Path, needed: str) -> StopRun:
    kept = complete_checkpoints(root)
    return StopRun(EXIT_NO_SPACE,
                   f"no space to save checkpoint {folder}: {_gib(shutil.disk_usage(root).free)} free there, and the "
                   f"checkpoint needs {needed}; nothing partial was left, and "
                   + (f"{kept[-1]} is the latest complete checkpoint" if kept else "no checkpoint was saved yet")
                   + "; free some space (or lower trainer.keep_last) and run the same command to resume")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
