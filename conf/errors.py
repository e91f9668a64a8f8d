"""What every command's caller needs to tell outcomes apart: the bad-input error and the exit statuses.

`BadInput` is the one error that means "the user asked for something that cannot work": a config
value, a path, the data, a refused resume. Commands report it in one line with status 2 and no
traceback. Every other exception is a failure: its traceback is printed and the status is 1, so
that a launcher may retry it and a user sees where it came from.
"""


class BadInput(ValueError):
    """A configuration, path or data problem the user must fix; its message is the whole report.

    A ValueError, so that code calling the project as a library can catch it as one."""


# Exit statuses of every command (the README's "Run on a cluster" lists them).
EXIT_FAILED = 1  # an unexpected error: the traceback says where
EXIT_BAD_INPUT = 2
# max_bad_steps non-finite steps in a row stopped the run.
EXIT_DIVERGED = 3
# The disk filled up while saving a checkpoint; the partial one is removed. Not requeued: the
# same run would fail the same way until someone frees space.
EXIT_NO_SPACE = 4
# Stopped by a preemption signal or the wall-time budget, after saving: EX_TEMPFAIL, "try
# again". Launchers requeue on it (launch/slurm.sbatch).
EXIT_PREEMPTED = 75


class StopRun(Exception):
    """A run that ends early in a known way: its exit status and a one-line message saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
