"""The fine-tuning run, the litgpt way: `run` = `setup` -> `fit` (train.finetune validates the config first).

`fit` is the loop, top to bottom: one optimizer step, then its bookkeeping in order
(divergence, metrics, validation, a stop request, a checkpoint).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time

import torch
import yaml
from tqdm import tqdm

from conf import FinetuneConfig
from conf.errors import EXIT_DIVERGED, EXIT_PREEMPTED
from data.mixture import Mixture
from train.lora import write_reference
from train.diagnose import NonFinite
from train.trainer import distributed
from train.trainer.divergence import LOSS_SCALE_EXHAUSTED, DivergenceWatch
from train.trainer.metrics import memory_metrics
from train.trainer.setup import Components, setup
from train.trainer.summary import summary

log = logging.getLogger(__name__)


def run(config: FinetuneConfig) -> int:
    """Train as configured; returns the process exit status (0, EXIT_PREEMPTED or EXIT_DIVERGED).
    `config` has passed conf.schema.validate: train.finetune checks it before torch is imported."""
    c = setup(config)
    try:
        status = fit(c)
    finally:
        if c.metrics is not None:
            c.metrics.finish()
        c.checkpoints.close()
        c.stop.restore()
    if distributed.is_main():
        print(summary(c, status), flush=True)  # after W&B's own summary: the run's last lines
    return status


def fit(c: Components) -> int:
    t, state = c.config.trainer, c.state
    window = _Window()
    divergence = DivergenceWatch(t.max_bad_steps, loss_scaling=t.precision == "fp16")
    with tqdm(total=t.max_steps, initial=state.step, disable=not distributed.is_main(), desc="train", unit="step",
              dynamic_ncols=True) as progress:
        status = _steps(c, divergence, window, progress)
    torch.distributed.barrier()
    return status


def _steps(c: Components, divergence: DivergenceWatch, window: _Window, progress: tqdm) -> int:
    """Optimizer steps until max_steps, a stop request or divergence; returns the exit status."""
    t, state = c.config.trainer, c.state
    while state.step < t.max_steps:
        try:
            loss, applied = c.steps.train_step()
        except Exception as error:
            if LOSS_SCALE_EXHAUSTED not in str(error):
                raise
            log.error("step %d: fp16 gradients overflow even at DeepSpeed's smallest loss scale: stopping; the "
                      "last good checkpoint is kept", state.step + 1)
            return EXIT_DIVERGED
        state.step += 1
        state.tokens_seen += c.tokens_per_step
        if isinstance(c.steps.train_set, Mixture):
            for name, tokens in c.steps.train_set.tokens_by_source(c.steps.global_batch).items():
                state.tokens_by_source[name] = state.tokens_by_source.get(name, 0) + tokens
        window.steps += 1
        progress.update(1)
        if not math.isfinite(loss) and (cause := c.steps.explain_non_finite()) is not None:
            raise NonFinite(f"step {state.step}: non-finite loss, caused by {cause}")
        if divergence.is_bad(loss, applied):
            log.warning("step %d: non-finite loss or gradients (loss %s): step skipped (%d in a row)",
                        state.step, loss, divergence.in_row + 1)
        if divergence.record(loss, applied):
            log.error("%d non-finite steps in a row: stopping; the last good checkpoint is kept", divergence.in_row)
            return EXIT_DIVERGED
        if state.step % t.log_every == 0:
            _log_step(c, loss, window, progress)
        if c.steps.val_set is not None and state.step % t.eval_every == 0:
            with window.paused():
                _log_validation(c)
        reason = _stop_reason(c)
        if reason is not None:
            log.warning("stopping at step %d (%s): saving, then exiting with %d", state.step, reason, EXIT_PREEMPTED)
            save(c)
            return EXIT_PREEMPTED
        if state.step % t.save_every == 0 or state.step == t.max_steps:
            with window.paused():
                save(c)
    return 0


class _Window:
    """The steps since the last logged one, for tokens/s: training time only, so that validation
    and saves do not show up as a dip in tokens/s and MFU after each."""

    def __init__(self):
        self.start, self.steps, self.excluded = time.perf_counter(), 0, 0.0

    def tokens_per_s(self, tokens_per_step: int) -> float:
        return self.steps * tokens_per_step / (time.perf_counter() - self.start - self.excluded)

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - began

    def reset(self) -> None:
        self.start, self.steps, self.excluded = time.perf_counter(), 0, 0.0


def _log_step(c: Components, loss: float, window: _Window, progress: tqdm) -> None:
    tokens_per_s = window.tokens_per_s(c.tokens_per_step)
    record = {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan"),
        "lr": c.engine.get_lr()[0],
        "grad_norm": _as_float(c.engine.get_global_grad_norm()),
        "tokens_per_s": tokens_per_s,
        "tokens_seen": c.state.tokens_seen,
        # a mixture's shares of the tokens trained so far, to set against data.sources' weights
        **{f"share/{name}": tokens / c.state.tokens_seen for name, tokens in c.state.tokens_by_source.items()},
        **({"mfu": tokens_per_s / distributed.world_size() * c.flops_per_token / c.peak_flops}
           if c.peak_flops else {}),
        **memory_metrics(),
    }
    if c.metrics is not None:
        c.metrics.log(c.state.step, record)
    progress.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
    window.reset()


def _log_validation(c: Components) -> None:
    val_loss = c.steps.evaluate()
    if c.metrics is not None:
        c.metrics.log(c.state.step, {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))})


def _stop_reason(c: Components) -> str | None:
    """Why every rank stops now (a signal on any rank, or the wall-time budget), or None; decided together."""
    budget = c.config.trainer.max_wall_time_min
    out_of_time = budget is not None and time.monotonic() - c.started > 60 * budget
    if not distributed.any_rank(c.stop.signal is not None or out_of_time):
        return None
    return "signal" if c.stop.signal is not None else "wall-time budget"


def save(c: Components) -> None:
    """A checkpoint of this step, on every rank: DeepSpeed's shards, then config, tokenizer and trainer state."""

    def extras(folder) -> None:
        (folder / "config.yaml").write_text(yaml.safe_dump(c.resolved, sort_keys=False))
        c.engine.module.config.save_pretrained(folder)
        c.tokenizer.save_pretrained(folder)
        c.identity.save(folder)
        if c.lora is not None:
            write_reference(folder, c.config.model.lora, **c.lora)

    c.state.sampler = c.sampler.state_dict()
    c.state.wandb_run_id = distributed.broadcast_from_main(c.state.wandb_run_id)
    c.checkpoints.save(c.engine, c.state, extras)


def _as_float(value) -> float | None:
    return None if value is None else float(value)
