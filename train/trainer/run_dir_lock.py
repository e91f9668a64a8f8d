"""One writer per run_dir: an OS lock held for the run's whole life.

Two runs on one run_dir would prune, and on a rewind move aside, checkpoints the other is
writing. Rank 0 takes `flock` on <run_dir>/run.lock and keeps the file open until the run ends;
the kernel releases it when the process ends, even by `kill -9`, so no stale marker is ever left
to clear by hand. The file says who holds it, for the refusal's message.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from conf.errors import BadInput
from train.trainer import distributed

LOCK_FILE = "run.lock"
# What flock raises on a filesystem mounted without lock support (Lustre without -o flock, some
# NFS and FUSE mounts).
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


class RunDirLock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        """Take the lock on rank 0; a refusal (BadInput) or a failure there is raised on every rank."""
        distributed.main_decides(self._take)

    def _take(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = _holder(file.read())
            file.close()
            raise BadInput(f"run_dir={self.path.parent} is in use by another run ({holder}): one run writes to a "
                           "run_dir at a time; wait for it to end, stop it, or give this run another run_dir") from None
        except OSError as error:
            file.close()
            if error.errno not in _NO_LOCKS:
                raise
            mount, kind = filesystem_of(self.path.parent)
            raise BadInput(f"run_dir={self.path.parent} is on a {kind} filesystem (mounted at {mount}) without file "
                           f"locks (flock: {error.strerror}): remount it with locking (Lustre: -o flock), or give "
                           "run_dir a folder on a filesystem that has them") from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "since": datetime.now().astimezone().isoformat(timespec="seconds")}) + "\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def filesystem_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount that holds `path`, from /proc/mounts."""
    target, best = str(path.resolve()), ("/", "unknown")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, fields[2])
    return best


def _holder(text: str) -> str:
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, since {record['since']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said which"
