"""Evaluation results into the W&B run of the training run they come from.

The trainer records its run id in trainer_state.json; the results join that run (offline
runs land under <run_dir>/wandb, `wandb sync` uploads them) as scalars at the checkpoint's
step, a table and the plot, under `eval/<setting>/` so that runs with and without RoPE
scaling stay apart.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from conf import LoggerConfig
from train.inference.load import Checkpoint

log = logging.getLogger(__name__)


def log_results(results: dict[str, Any], plot: Path, ckpt: Checkpoint, setting: str, config: LoggerConfig) -> None:
    if config.mode == "disabled" or ckpt.wandb_run_id is None:
        return
    import wandb

    try:
        run = wandb.init(mode=config.mode, project=config.project, entity=config.entity, id=ckpt.wandb_run_id,
                         resume="allow", dir=str(ckpt.run_dir))
    except Exception as error:  # noqa: BLE001 - the results are on disk already; W&B is a mirror
        log.warning("W&B could not start (%s): results are in %s only", error, plot.parent)
        return
    prefix = f"eval/{setting}"
    record: dict[str, Any] = {"step": ckpt.step}
    rows: dict[int, list] = {}
    if results["perplexity"] is not None:
        for row in results["perplexity"]["by_length"]:
            record[f"{prefix}/ppl_{row['length']}"] = row["ppl"]
            rows.setdefault(row["length"], [row["length"], None, None])[1] = row["ppl"]
    if results["passkey"] is not None:
        for row in results["passkey"]["by_length"]:
            record[f"{prefix}/passkey_{row['length']}"] = row["accuracy"]
            rows.setdefault(row["length"], [row["length"], None, None])[2] = row["accuracy"]
    record[f"{prefix}/table"] = wandb.Table(columns=["length", "perplexity", "passkey_accuracy"],
                                            data=[rows[length] for length in sorted(rows)])
    record[f"{prefix}/plot"] = wandb.Image(str(plot))
    run.log(record)
    run.finish()
    log.info("results logged to W&B run %s (%s mode)", ckpt.wandb_run_id, config.mode)
