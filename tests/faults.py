"""`python -m tests.faults FAULT[:ARG] OVERRIDES...`: `python -m train.finetune OVERRIDES` with one
fault injected, for what a test machine cannot produce for real.

A cluster can: a filesystem without flock (Lustre without -o flock), nodes whose views of a shared
folder differ (an NFS client's cache), a node slow to build the data, an error deep inside the
training loop, a checkpoint conversion that fails. Each fault replaces one function of this project
on the rank its name gives; DeepSpeed, Hydra, torchrun and the filesystem stay real.
"""
import errno
import fcntl
import os
import runpy
import subprocess
import sys
import time


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def no_flock_on_rank_0(_: str) -> None:
    """flock fails as on a Lustre mount without -o flock."""
    if _rank() == 0:
        def refuse(*args):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

        fcntl.flock = refuse


def stale_view_on_rank_1(step_folder: str) -> None:
    """Rank 1 does not yet see `step_folder`'s completion mark, as an NFS client with a stale cache."""
    if _rank() == 1:
        from train.trainer.checkpoint import folders

        real = folders.is_complete
        folders.is_complete = lambda folder: folder.name != step_folder and real(folder)


def slow_data_on_rank_0(seconds: str) -> None:
    """Rank 0 takes `seconds` longer to build the data caches."""
    if _rank() == 0:
        from train.trainer import setup

        real = setup.build_datasets

        def slow(*args, **kwargs):
            time.sleep(float(seconds))
            return real(*args, **kwargs)

        setup.build_datasets = slow


def value_error_at_step(step: str) -> None:
    """A ValueError from inside the training loop at optimizer step `step`, as a library may raise one."""
    from train.trainer.steps import Steps

    real, calls = Steps.train_step, []

    def train_step(self):
        calls.append(None)
        if len(calls) == int(step):
            raise ValueError(f"an error inside the training loop at step {step}")
        return real(self)

    Steps.train_step = train_step


def conversion_fails_on_rank_0(_: str) -> None:
    """DeepSpeed's universal conversion fails on rank 0 (a full disk, a bug)."""
    if _rank() == 0:
        from train.trainer.checkpoint import universal

        def fail(folder, output):
            raise subprocess.CalledProcessError(1, ["ds_to_universal", str(folder)])

        universal.convert = fail


if __name__ == "__main__":
    name, _, argument = sys.argv[1].partition(":")
    globals()[name](argument)
    sys.argv = ["train.finetune", *sys.argv[2:]]
    runpy.run_module("train.finetune", run_name="__main__", alter_sys=True)
