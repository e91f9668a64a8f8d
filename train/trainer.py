"""The fine-tuning run: config -> model and data -> DeepSpeed engine -> loop -> checkpoints and metrics."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from pathlib import Path

import deepspeed
import torch
import yaml
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PretrainedConfig, set_seed
from transformers.integrations import HfDeepSpeedConfig

from data import ResumableDistributedSampler, build_datasets, check_tokenizer_fits, load_tokenizer
from train import checkpoint, distributed, sequence_parallel, tiling
from train.cli import EXIT_DIVERGED, EXIT_PREEMPTED
from train.coca import CONFIG_KEY, T_INITS, VARIANTS, check_choice, convert_to_coca
from train.config import FinetuneConfig
from train.engine import PRECISIONS, SCHEDULES, build_engine, deepspeed_config
from train.loss import mean_loss, shift_labels
from train.memory import Setting, check_fits
from train.metrics import MetricsLogger, flops_per_token, memory_metrics, peak_flops
from train.model import DTYPES, TRAINABLE, build_model, model_config

log = logging.getLogger(__name__)

# Architecture fields that must match for a checkpoint to belong to this model.
_IDENTITY = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")


class _StopFlag:
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


def validate(config: FinetuneConfig) -> None:
    """Checks the schema cannot express, before any expensive work."""
    t, m = config.trainer, config.model
    check_choice("model.attention", m.attention, VARIANTS)
    check_choice("model.t_init", m.t_init, T_INITS)
    check_choice("model.trainable", m.trainable, TRAINABLE)
    check_choice("model.dtype", m.dtype, tuple(DTYPES))
    check_choice("trainer.precision", t.precision, PRECISIONS)
    check_choice("optim.schedule", config.optim.schedule, SCHEDULES)
    check_choice("logger.mode", config.logger.mode, ("online", "offline", "disabled"))
    for key in ("max_steps", "micro_batch_size", "grad_accum", "save_every", "keep_last", "eval_every", "log_every",
                "max_bad_steps", "sequence_parallel_size"):
        if getattr(t, key) < 1:
            raise ValueError(f"trainer.{key}={getattr(t, key)} must be >= 1")
    if config.optim.warmup_steps < 1:
        raise ValueError(f"optim.warmup_steps={config.optim.warmup_steps} must be >= 1 (DeepSpeed's schedules need one)")
    if t.tile_tokens is not None and t.tile_tokens < 1:
        raise ValueError(f"trainer.tile_tokens={t.tile_tokens} must be >= 1, or null for the model's hidden_size")
    if t.grad_clip <= 0:
        raise ValueError(f"trainer.grad_clip={t.grad_clip} must be > 0: DeepSpeed detects non-finite gradients "
                         "through the clipping norm and skips those steps")
    if config.resume not in ("auto", "none") and not Path(config.resume).exists():
        raise FileNotFoundError(f"resume={config.resume!r} does not exist; use auto, none or a checkpoint path")
    if config.model.init_from is not None and not Path(config.model.init_from).exists():
        raise FileNotFoundError(f"model.init_from={config.model.init_from!r} does not exist")


def check_same_model(folder: Path, config: PretrainedConfig) -> None:
    saved = PretrainedConfig.from_json_file(str(folder / "config.json"))
    for key in _IDENTITY:
        ours, theirs = getattr(config, key, None), getattr(saved, key, None)
        if ours != theirs:
            raise ValueError(f"checkpoint {folder} is of another model: {key}={theirs}, this run's model has {ours}")


def _check_memory(config: FinetuneConfig, hf_config: PretrainedConfig, ds_config: dict) -> None:
    """Refuse, before loading weights, a seq_len that clearly cannot fit the accelerator."""
    accelerator = deepspeed.get_accelerator()
    if accelerator.device_name() == "cpu":
        return
    with torch.device("meta"):
        num_params = AutoModelForCausalLM.from_config(hf_config).num_parameters()
    zero = ds_config.get("zero_optimization", {})
    t = config.trainer
    setting = Setting(t.micro_batch_size, config.model.gradient_checkpointing, zero.get("stage", 0),
                      "offload_param" in zero, t.tiled_mlp, t.tiled_logits, t.tile_tokens)
    # Under sequence parallelism each rank holds the activations of its slice of the sequence.
    seq_len = config.data.seq_len // config.trainer.sequence_parallel_size
    check_fits(hf_config, num_params, seq_len, setting, distributed.world_size(),
               half=config.trainer.precision != "fp32", device_bytes=accelerator.total_memory())


def run(config: FinetuneConfig) -> int:
    """Train as configured; returns the process exit status (0, EXIT_PREEMPTED or EXIT_DIVERGED)."""
    validate(config)
    stop = _StopFlag()
    started = time.monotonic()
    distributed.init_distributed()
    set_seed(config.seed)
    run_dir = distributed.resolve_run_dir(config.run_dir, config.name)
    ckpt_root = run_dir / "checkpoints"
    resume_from = checkpoint.find_resume_checkpoint(config.resume, run_dir)
    init_from = None
    if config.model.init_from is not None and resume_from is None:
        init_from = checkpoint.find_resume_checkpoint(config.model.init_from, Path(config.model.init_from))

    tokenizer = load_tokenizer(config.model.tokenizer, config.model.name_or_path, config.data.cache_dir)
    hf_config = model_config(config.model, tokenizer)
    check_tokenizer_fits(tokenizer, hf_config.vocab_size)
    sequence_parallel.check(config, hf_config, distributed.world_size())
    for folder in (resume_from, init_from):
        if folder is not None:
            check_same_model(folder, hf_config)

    # Rank 0 tokenizes; the others then open its cache instead of repeating the work.
    if distributed.is_main():
        splits = build_datasets(config.data, tokenizer)
    torch.distributed.barrier()
    if not distributed.is_main():
        splits = build_datasets(config.data, tokenizer)
    train_set, val_set = splits["train"], splits.get("validation")

    ds_config = deepspeed_config(config)
    _check_memory(config, hf_config, ds_config)
    saved_by = next((checkpoint.saved_world_size(f) for f in (resume_from, init_from) if f is not None), None)
    if saved_by is not None and saved_by != distributed.world_size():
        log.info("checkpoint saved by %d ranks, this run has %d: loading DeepSpeed's universal form",
                 saved_by, distributed.world_size())
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    # transformers creates the model partitioned under ZeRO-3 while this object lives.
    zero3 = HfDeepSpeedConfig(ds_config) if ds_config.get("zero_optimization", {}).get("stage") == 3 else None
    model = build_model(config.model, hf_config)
    tile = config.trainer.tile_tokens or hf_config.hidden_size
    if config.trainer.tiled_mlp:
        tiling.tile_mlps(model, tile)
    mpu = sequence_parallel.setup(model, config, ds_config) if config.trainer.sequence_parallel_size > 1 else None
    engine = build_engine(model, ds_config, mpu)
    del zero3

    rank, world = distributed.rank(), distributed.world_size()
    global_batch = config.trainer.micro_batch_size * config.trainer.grad_accum * world
    sampler = ResumableDistributedSampler(len(train_set), global_batch, rank, world, seed=config.seed)
    state = {"step": 0, "tokens_seen": 0, "wandb_run_id": None}
    if resume_from is not None:
        state = checkpoint.load(engine, resume_from)
        sampler.load_state_dict(state["sampler"])
        log.info("resumed from %s at step %d", resume_from, state["step"])
    elif init_from is not None:
        checkpoint.load(engine, init_from, weights_only=True)
        log.info("weights from %s (fresh optimizer and schedule)", init_from)
        _apply_t_init_after_load(config, engine, init_from)

    resolved = dataclasses.asdict(config) | {"run_dir": str(run_dir)}
    metrics = None
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        metrics = MetricsLogger(run_dir, config.logger, resolved, state["wandb_run_id"], state["step"])
        state["wandb_run_id"] = metrics.run_id

    def save() -> None:
        def extras(folder: Path) -> None:
            (folder / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
            engine.module.config.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        payload = {**state, "sampler": sampler.state_dict(), "wandb_run_id": distributed.broadcast_from_main(
            state["wandb_run_id"])}
        checkpoint.save(engine, ckpt_root, state["step"], payload, config.trainer.keep_last, extras)

    num_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in engine.module.parameters())
    flops_token = flops_per_token(hf_config, num_params, config.data.seq_len)
    peak = peak_flops()
    tokens_per_step = global_batch * config.data.seq_len
    loop = _Loop(config, engine, train_set, val_set, sampler, rank, world, mpu,
                 logits_tile=tile if config.trainer.tiled_logits else None)
    progress = tqdm(total=config.trainer.max_steps, initial=state["step"], disable=not distributed.is_main(),
                    desc="train", unit="step", dynamic_ncols=True)
    bad_in_row, exit_status = 0, 0
    window_start, window_steps = time.perf_counter(), 0
    while state["step"] < config.trainer.max_steps:
        loss, applied = loop.train_step()
        state["step"] += 1
        state["tokens_seen"] += tokens_per_step
        window_steps += 1
        progress.update(1)
        if applied and math.isfinite(loss):
            bad_in_row = 0
        else:
            bad_in_row += 1
            log.warning("step %d: non-finite loss or gradients (loss %s): step skipped (%d in a row)",
                        state["step"], loss, bad_in_row)
            if bad_in_row >= config.trainer.max_bad_steps:
                log.error("%d non-finite steps in a row: stopping; the last good checkpoint is kept", bad_in_row)
                exit_status = EXIT_DIVERGED
                break
        step = state["step"]
        if step % config.trainer.log_every == 0:
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * tokens_per_step / elapsed
            record = {
                "loss": loss,
                "ppl": math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan"),
                "lr": engine.get_lr()[0],
                "grad_norm": _as_float(engine.get_global_grad_norm()),
                "tokens_per_s": tokens_per_s,
                "tokens_seen": state["tokens_seen"],
                **({"mfu": tokens_per_s / world * flops_token / peak} if peak else {}),
                **memory_metrics(),
            }
            if metrics is not None:
                metrics.log(step, record)
            progress.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            window_start, window_steps = time.perf_counter(), 0
        if val_set is not None and step % config.trainer.eval_every == 0:
            val_loss = loop.evaluate()
            if metrics is not None:
                metrics.log(step, {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))})
        out_of_time = (config.trainer.max_wall_time_min is not None
                       and time.monotonic() - started > 60 * config.trainer.max_wall_time_min)
        if distributed.any_rank(stop.signal is not None or out_of_time):
            log.warning("stopping at step %d (%s): saving, then exiting with %d", step,
                        "signal" if stop.signal is not None else "wall-time budget", EXIT_PREEMPTED)
            save()
            exit_status = EXIT_PREEMPTED
            break
        if step % config.trainer.save_every == 0 or step == config.trainer.max_steps:
            save()
    progress.close()
    if metrics is not None:
        metrics.finish()
    torch.distributed.barrier()
    return exit_status


def _apply_t_init_after_load(config: FinetuneConfig, engine, init_from: Path) -> None:
    """Loading a vanilla parent's weights overwrote W_t with its W_k: with t_init=random, draw
    W_t again. The optimizer's fp32 master copy then takes the new weights."""
    parent = PretrainedConfig.from_json_file(str(init_from / "config.json"))
    if config.model.t_init != "random" or getattr(parent, CONFIG_KEY, None) not in (None, "vanilla"):
        return
    if config.model.attention == "vanilla":
        return
    convert_to_coca(engine.module, config.model.attention, t_init="random")
    engine.optimizer.refresh_fp32_params()
    log.info("model.t_init=random: W_t drawn afresh instead of the parent's W_k")


def _as_float(value) -> float | None:
    return None if value is None else float(value)


class _Loop:
    """One optimizer step over its micro-batches, and evaluation; with or without sequence parallelism."""

    def __init__(self, config: FinetuneConfig, engine, train_set, val_set, sampler, rank: int, world: int, mpu,
                 logits_tile: int | None):
        self.config, self.engine, self.sampler, self.mpu = config, engine, sampler, mpu
        self.logits_tile = logits_tile
        self.train_set = train_set
        self.batches = self._epoch()
        # Under sequence parallelism each micro-batch of the group is one micro-step of every rank.
        self.micro_steps = config.trainer.grad_accum * (mpu.get_sequence_parallel_world_size() if mpu else 1)
        self.val_set = val_set
        self.val_sampler = None if val_set is None else DistributedSampler(val_set, world, rank, shuffle=False)

    def _loader(self, dataset, sampler):
        loader = DataLoader(dataset, batch_size=self.config.trainer.micro_batch_size, sampler=sampler)
        return iter(sequence_parallel.shard(loader, self.mpu, self.engine.device) if self.mpu else loader)

    def _epoch(self):
        return self._loader(self.train_set, self.sampler)

    def _next_batch(self) -> dict:
        batch = next(self.batches, None)
        if batch is None:  # the sampler has rolled over to the next epoch
            self.batches = self._epoch()
            batch = next(self.batches)
        return batch

    def _loss(self, batch: dict) -> tuple[torch.Tensor, float]:
        batch = {k: v.to(self.engine.device) for k, v in batch.items()}
        if "labels" in batch:  # Ulysses' loader adapter has already shifted them
            batch["shift_labels"] = shift_labels(batch.pop("labels"))
        if self.mpu is None:
            return mean_loss(self.engine, batch, self.logits_tile)
        return mean_loss(self.engine, batch, self.logits_tile, self.mpu.get_sequence_parallel_group(),
                         sequence_parallel.share_scale(self.engine.zero_optimization_stage(),
                                                       self.mpu.get_sequence_parallel_world_size()))

    def train_step(self) -> tuple[float, bool]:
        """Mean loss over micro-batches and ranks, and whether DeepSpeed applied the update."""
        self.engine.train()
        total = 0.0
        for _ in range(self.micro_steps):
            loss, value = self._loss(self._next_batch())
            self.engine.backward(loss)
            self.engine.step()
            total += value
        self.sampler.advance()
        return distributed.mean_over_ranks(total / self.micro_steps), self.engine.was_step_applied()

    @torch.no_grad()
    def evaluate(self) -> float:
        self.engine.eval()
        losses = []
        for i, batch in enumerate(self._loader(self.val_set, self.val_sampler)):
            if i == self.config.trainer.eval_batches:
                break
            losses.append(self._loss(batch)[1])
        return distributed.mean_over_ranks(sum(losses) / max(len(losses), 1))
