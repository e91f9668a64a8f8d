"""Stop requests: a signal caught so that the loop can save at the next step boundary."""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


class StopRequest:
    """Set by SIGTERM (SLURM preemption; torchrun forwards it), SIGINT (Ctrl-C) or SIGUSR1.

    The first Ctrl-C asks for a stop like SIGTERM; a second one aborts at once, without saving.
    Under torchrun every worker sees each Ctrl-C twice (from the terminal, then relayed by
    torchrun), so there SIGINT only asks for the stop. SIGUSR1 is left alone under torchrun:
    torchrun does not forward it, and NCCL uses it.
    """

    def __init__(self):
        self.signal: int | None = None
        self._under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        signals = [signal.SIGTERM, signal.SIGINT] + ([] if self._under_torchrun else [signal.SIGUSR1])
        self._before = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, signum, frame):
        if self.signal is None:
            log.warning("%s: stopping at the next step boundary, then saving%s", signal.Signals(signum).name,
                        "; press Ctrl-C again to abort without saving"
                        if signum == signal.SIGINT and not self._under_torchrun else "")
        self.signal = signum
        if signum == signal.SIGINT and not self._under_torchrun:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C raises KeyboardInterrupt

    def restore(self) -> None:
        """The handlers from before the run, once it has ended (the next job of a sweep sets its own)."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
