"""Telling a run that diverged from one that is only adjusting its fp16 loss scale.

DeepSpeed skips an optimizer step whose gradients are not finite. In fp32 and bf16 that means
something went wrong; `trainer.max_bad_steps` such steps in a row stop the run. In fp16 the
dynamic loss scale starts high (2^16) and is lowered by skipping steps whose scaled gradients
overflow: a fresh run skips several steps by design, and a skip with a finite loss is that search,
not divergence. (When the scale can go no lower, DeepSpeed raises itself; the loop reports that
as divergence.) A non-finite loss is always a bad step.
"""
from __future__ import annotations

import math


class DivergenceWatch:
    def __init__(self, max_bad_steps: int, loss_scaling: bool):
        self.max_bad_steps = max_bad_steps
        self.loss_scaling = loss_scaling  # fp16: skipped steps are the loss scale's search
        self.in_row = 0

    def is_bad(self, loss: float, applied: bool) -> bool:
        return not math.isfinite(loss) or (not applied and not self.loss_scaling)

    def record(self, loss: float, applied: bool) -> bool:
        """Count one optimizer step; True once max_bad_steps bad ones came in a row."""
        self.in_row = self.in_row + 1 if self.is_bad(loss, applied) else 0
        return self.in_row >= self.max_bad_steps


# What DeepSpeed's fp16 loss scaler raises when it can lower the scale no further.
LOSS_SCALE_EXHAUSTED = "loss scale already at minimum"
