"""One writer per run_dir: an OS lock held for the run's whole life.

Two runs on one run_dir would prune, and on a rewind move aside, checkpoints the other is
writing. Rank 0 takes `flock` on <run_dir>/run.lock and keeps the file open until the run ends;
the kernel releases it when the process ends, even by `kill -9`, so no stale marker is ever left
to clear by hand. The file says who holds it, for the refusal's message.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from train.trainer import distributed

LOCK_FILE = "run.lock"


class RunDirLock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        """Take the lock on rank 0, or raise on every rank (ValueError: status 2) naming its holder."""
        refusal = self._take() if distributed.is_main() else None
        refusal = distributed.broadcast_from_main(refusal)
        if refusal is not None:
            raise ValueError(refusal)

    def _take(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = _holder(file.read())
            file.close()
            return (f"run_dir={self.path.parent} is in use by another run ({holder}): one run writes to a run_dir "
                    "at a time; wait for it to end, stop it, or give this run another run_dir")
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "since": datetime.now().astimezone().isoformat(timespec="seconds")}) + "\n")
        file.flush()
        self._file = file
        return None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _holder(text: str) -> str:
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, since {record['since']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said which"
