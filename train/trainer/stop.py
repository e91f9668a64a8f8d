"""Stop requests: a preemption signal, caught so that the loop can save at the next step boundary."""
from __future__ import annotations

import os
import signal


class StopRequest:
    """Set by SIGTERM (SLURM preemption; torchrun forwards it) or SIGUSR1 (plain python runs).

    Under torchrun SIGUSR1 is left alone: torchrun does not forward it, and NCCL uses it.
    """

    def __init__(self):
        self.signal: int | None = None
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        for sig in (signal.SIGTERM,) if under_torchrun else (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signum
