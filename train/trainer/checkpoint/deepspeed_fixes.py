"""Where DeepSpeed (0.19.8) needs help to load what it saved."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def frozen_weights_from_module_state(engine, weights_only: bool):
    """A stage that freezes weights (model.trainable=t_only) starting from a run that trained
    them all: DeepSpeed then looks up every frozen weight among the checkpoint's frozen
    fragments, finds none, and raises KeyError. Under ZeRO 0-2 the module state it has just
    loaded already holds them whole, so the lookup is skipped by showing it no frozen weight."""
    frozen = [p for p in engine.module.parameters() if not p.requires_grad]
    if not weights_only or engine.zero_optimization_partition_weights() or not frozen:
        yield
        return
    for param in frozen:
        param.requires_grad_(True)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(False)
