"""Rank 0's metrics: JSON lines in <run_dir>/metrics.jsonl, and the same to W&B.

W&B is a mirror, never a dependency of training: if the online run cannot start (no
network, bad key), the logger says so once and falls back to an offline run in run_dir.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import deepspeed
import torch

from conf import LoggerConfig
from data.files import json_ready, write_atomically
from conf.errors import BadInput

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"

# Dense bf16 peak of the accelerators people train on, for MFU; others report no MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12}


def peak_flops() -> float | None:
    accelerator = deepspeed.get_accelerator()
    if accelerator.device_name() == "cpu":
        return None
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def flops_per_token(model_config, num_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weights plus attention's scores and mixing at seq_len.

    Per layer and token, QK^T and PV cost 2 * 2 * seq_len * d_attn forward (causal: half of
    that), times 3 for forward and backward: 6 * seq_len * d_attn. CoCA's extra elementwise
    work is O(d), negligible here.
    """
    heads = model_config.num_attention_heads
    d_attn = heads * (getattr(model_config, "head_dim", None) or model_config.hidden_size // heads)
    return 6 * num_params + 6 * model_config.num_hidden_layers * seq_len * d_attn


def memory_metrics() -> dict[str, float]:
    accelerator = deepspeed.get_accelerator()
    if accelerator.device_name() == "cpu":
        return {}
    return {"memory/allocated_gib": accelerator.memory_allocated() / 2**30,
            "memory/peak_gib": accelerator.max_memory_allocated() / 2**30}


class MetricsLogger:
    """Open on rank 0 only. `resume_step` drops lines a killed run logged after its last save."""

    def __init__(self, run_dir: Path, config: LoggerConfig, full_config: dict, run_id: str | None, resume_step: int):
        self.path = run_dir / METRICS_FILE
        self._truncate_after(resume_step)
        self.wandb_run = self._start_wandb(run_dir, config, full_config, run_id)

    def _truncate_after(self, step: int) -> None:
        if self.path.is_file():
            kept = [record for record in read_records(self.path) if record["step"] <= step]
            write_atomically(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    @staticmethod
    def _start_wandb(run_dir: Path, config: LoggerConfig, full_config: dict, run_id: str | None):
        if config.mode == "disabled":
            return None
        import wandb

        settings = dict(
            project=config.project,
            entity=config.entity,
            name=config.name or run_dir.name,
            tags=list(config.tags),
            config=full_config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
        )
        try:
            run = wandb.init(mode=config.mode, **settings)
        except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
            if config.mode != "online":
                log.warning("W&B could not start (%s); metrics go to %s only", error, METRICS_FILE)
                return None
            log.warning("W&B online failed (%s); logging offline to %s/wandb, sync later", error, run_dir)
            run = wandb.init(mode="offline", **settings)
        # Steps repeat after a resume; keyed on our own step, W&B keeps those lines.
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    @property
    def run_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: json_ready(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(record)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records. A last line cut short (a kill or a full disk mid-write) is dropped
    with a warning; damage anywhere else is refused, naming the line."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise BadInput(f"{path}, line {number}, is not JSON: only a last line cut short is repaired; "
                                 "mend or remove that line") from None
            log.warning("%s: its last line was cut short (%r): dropped", path, line[:80])
    return records
