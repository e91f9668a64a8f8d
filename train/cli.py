"""Running a command's plain function from its Hydra entry point, one job or a `-m` sweep.

A sweep runs its jobs one after another in one process, so no job may end the process: each
job's status is recorded, and the entry point exits with `exit_status()` once Hydra returns.
"""
import importlib
import logging
import os
import sys
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from conf.errors import EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_PREEMPTED, BadInput, StopRun

# Statuses after which the rest of a sweep is not started: the same command, run again, resumes.
_ENDS_SWEEP = (EXIT_NO_SPACE, EXIT_PREEMPTED)

_statuses: list[int] = []
_jobs_started: list[str] = []


def run_job(command: str, function: Callable[[Any], Any], config: Any) -> None:
    """Runs `function(config)` as one job and records its status: the int it returns, else 0.

    Bad input (conf.errors.BadInput) is one logged line and status 2 (HYDRA_FULL_ERROR=1 shows
    the traceback instead); the next job of a sweep still runs. So is a StopRun, with its own
    status. Any other exception is a failure: it propagates with its traceback, and Hydra's
    entry point ends the process with status 1. A stop request or a full disk ends the whole sweep at once:
    the jobs after it have not started, and the same command run again resumes every job from
    its own run_dir.
    """
    _jobs_started.append(command)
    try:
        result = function(config)
        status = result if isinstance(result, int) else 0
    except (BadInput, StopRun) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        kind = "error" if isinstance(error, StopRun) else "bad input"
        logging.getLogger(command).error("%s: %s", kind, error)
        status = error.status if isinstance(error, StopRun) else EXIT_BAD_INPUT
    _statuses.append(status)
    if status in _ENDS_SWEEP:
        sys.exit(status)


def checked_then(check: Callable[[Any], None], target: str) -> Callable[[DictConfig], Any]:
    """A command's job: the composed config made typed and `check`ed, then `target`
    ("module:function") imported and called with it.

    The command modules import only Hydra and the config dataclasses; torch, transformers and
    DeepSpeed (~10 s of imports on a 2-core CPU) come with `target`. So a typo on the command
    line, a required key left out or a bad value the check catches is reported within a second
    or two."""
    module, name = target.split(":")

    def job(cfg: DictConfig) -> Any:
        try:
            config = OmegaConf.to_object(cfg)
        except MissingMandatoryValue as error:
            raise BadInput(f"{error.full_key} is required: give {error.full_key}=... on the command line") from None
        check(config)
        return getattr(importlib.import_module(module), name)(config)

    return job


def exit_status() -> int:
    """The process's status: the first job's that did not succeed, else 0."""
    return next((status for status in _statuses if status != 0), 0)


def main_and_exit(main: Callable[[], None]) -> None:
    """What an entry point's `if __name__ == "__main__"` runs: Hydra's main, then the status.

    Hydra ends the process with status 1 both for a configuration it cannot compose (an unknown
    key or group option, a wrong type) and for a job that crashed. Before any job has started
    it can only be the first, which is bad input: status 2, like every other bad value.
    """
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1 and not _jobs_started:
            sys.exit(EXIT_BAD_INPUT)
        raise
    sys.exit(exit_status())
