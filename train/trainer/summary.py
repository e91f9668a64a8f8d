"""The last lines of a run: where it went, what it did, and what to run next with it."""
from __future__ import annotations

import math
import shlex
import time

from conf.errors import EXIT_DIVERGED, EXIT_PREEMPTED
from train.trainer.checkpoint.folders import latest_checkpoint
from train.trainer.metrics import METRICS_FILE, read_records


def summary(c, status: int) -> str:
    """A few lines for the console, after W&B's own: the run_dir, steps and tokens, the last
    training and validation losses, the wall time, and the next commands with the run_dir filled in."""
    config, state = c.config, c.state
    records = read_records(c.run_dir / METRICS_FILE)
    loss = next((r["loss"] for r in reversed(records) if r.get("loss") is not None), None)
    val = next((r for r in reversed(records) if r.get("val_loss") is not None), None)
    outcome = {0: "finished", EXIT_PREEMPTED: "stopped and saved (run the same command to resume)",
               EXIT_DIVERGED: "stopped: diverged"}.get(status, f"ended with status {status}")
    latest = latest_checkpoint(c.run_dir / "checkpoints")
    lines = [f"Run {outcome} after {_duration(time.monotonic() - c.started)}: step {state.step} of "
             f"{config.trainer.max_steps}, {state.tokens_seen:,} tokens seen"
             + (f", training loss {loss:.3f}" if loss is not None else "")
             + (f", validation perplexity {math.exp(min(val['val_loss'], 50)):.2f} (step {val['step']})" if val else ""),
             f"  run_dir:    {c.run_dir}",
             f"  checkpoint: {latest if latest is not None else 'none saved'}",
             f"  metrics:    {c.run_dir / METRICS_FILE}" + (f" (and W&B, {config.logger.mode})"
                                                          if config.logger.mode != "disabled" else "")]
    if latest is not None:
        run = shlex.quote(str(c.run_dir))
        lines += ["Next:",
                  f"  python -m train.evaluate checkpoint={run}{_evaluate_args(config)}",
                  f"  python -m train.generate checkpoint={run} \"prompt='The old house'\" max_new_tokens=32",
                  f"  python -m train.export checkpoint={run} output={shlex.quote(str(c.run_dir / 'export'))}"]
    return "\n".join(lines)


def _evaluate_args(config) -> str:
    """The data the run trained on, and window lengths sized to it: L, 2L and 4L."""
    data = config.data
    args = [] if data.source == "sample" else [f"data={data.source}"] + (
        [f"data.path={shlex.quote(data.path)}"] if data.path else [])
    n = data.seq_len
    args += [f"'eval.lengths=[{n},{2 * n},{4 * n}]'", f"eval.stride={n}", f"'eval.passkey.lengths=[{max(n, 256)}]'",
             "eval.passkey.cases=10"]
    return " " + " ".join(args)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
