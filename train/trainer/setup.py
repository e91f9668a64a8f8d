"""Everything a fine-tuning run works with, made and checked before the loop: `setup(config) -> Components`.

The order is the checks' order: cheap ones (paths, tokenizer, what a checkpoint to resume or
start from means, sequence parallelism) before the data is tokenized, the data's own identity
and the memory estimate before anything in run_dir moves or the weights load. One run holds
run_dir from the start, through its CheckpointManager (train/trainer/checkpoint/manager.py).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import deepspeed
import numpy as np
import torch
import yaml
from deepspeed import DeepSpeedEngine
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerBase, set_seed
from torch.utils.data import Dataset
from transformers.integrations import HfDeepSpeedConfig

from conf import FinetuneConfig
from conf.errors import BadInput
from data import PackedDataset, ResumableDistributedSampler, build_datasets, check_tokenizer_fits, load_tokenizer
from data.gguf_model import gguf_folder, is_gguf
from data.tokenizer import tokenizer_fingerprint
from train.coca import CONFIG_KEY, convert_to_coca
from train.lora import LORA_FILE, read_reference
from train.parallel import sequence_parallel, tiling
from train.parallel.memory import Setting, check_fits
from train.trainer import distributed
from train.trainer.build import build_model, model_config
from train.trainer.checkpoint.identity import Identity, check_architecture, check_init_from, check_resume
from train.trainer.checkpoint.load import load, load_weights
from train.trainer.checkpoint.manager import CheckpointManager
from train.trainer.engine import build_engine, check_precision, deepspeed_config
from train.trainer.fit_w_t import CALIBRATION_SEQUENCES, fit_w_t
from train.trainer.metrics import MetricsLogger, flops_per_token, peak_flops
from train.trainer.state import TrainerState, saved_world_size
from train.trainer.steps import Steps
from train.trainer.stop import StopRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Components:
    """What `setup` makes and the loop uses."""

    config: FinetuneConfig
    run_dir: Path
    resolved: dict[str, Any]  # the config as the run's config.yaml records it
    tokenizer: PreTrainedTokenizerBase
    model_config: PretrainedConfig
    engine: DeepSpeedEngine
    sampler: ResumableDistributedSampler
    steps: Steps  # optimizer steps and validation over the data
    state: TrainerState  # fresh, or restored from the checkpoint resumed
    metrics: MetricsLogger | None  # rank 0 only
    stop: StopRequest
    checkpoints: CheckpointManager  # holds the run_dir until the run ends
    identity: Identity  # what this run's checkpoints mean, saved with each
    started: float  # time.monotonic() at the start, for trainer.max_wall_time_min
    lora: dict | None  # with model.lora, what lora.json records as the base (train/lora.py)
    tokens_per_step: int
    flops_per_token: float
    peak_flops: float | None  # None: no MFU


def setup(config: FinetuneConfig) -> Components:
    """The run's components, every check done: a run that cannot work stops here, before the loop.
    The caller closes `checkpoints` (and restores the signal handlers) when the run ends."""
    stop, started = StopRequest(), time.monotonic()
    distributed.init_distributed(config.trainer.collective_timeout_min)
    check_precision(config.trainer.precision)
    set_seed(config.seed)
    run_dir = distributed.resolve_run_dir(config.run_dir, config.name)
    checkpoints = CheckpointManager(run_dir, config.trainer.keep_last)
    try:
        checkpoints.open()
        return _setup(config, run_dir, stop, started, checkpoints)
    except BaseException:
        checkpoints.close()
        stop.restore()
        raise


def _setup(config: FinetuneConfig, run_dir: Path, stop: StopRequest, started: float,
           checkpoints: CheckpointManager) -> Components:
    resolved = dataclasses.asdict(config) | {"run_dir": str(run_dir)}  # as the user gave it, .gguf paths included
    config = _with_gguf_dequantized(config)
    plan, init_from = checkpoints.plan(config.resume, config.model.init_from)
    resume_from = plan.chosen

    tokenizer = load_tokenizer(config.model.tokenizer, config.model.name_or_path, config.data.cache_dir)
    hf_config = model_config(config.model, tokenizer)
    check_tokenizer_fits(tokenizer, hf_config.vocab_size)
    sequence_parallel.check(config, hf_config, distributed.world_size())
    identity = Identity(config.model.attention, tokenizer_fingerprint(tokenizer), config.data.seq_len,
                        coca_slices=config.model.coca_slices if config.model.attention != "vanilla" else "all")
    if resume_from is not None:
        check_architecture(resume_from, hf_config)
        check_resume(resume_from, identity)
    if init_from is not None:
        check_architecture(init_from, hf_config)
        check_init_from(init_from, identity)
    train_set, val_set = _datasets(config, tokenizer)
    identity = dataclasses.replace(identity, data=train_set.fingerprint)
    if resume_from is not None:
        check_resume(resume_from, identity)
    ds_config = deepspeed_config(config)
    _check_memory(config, hf_config, ds_config)
    lora_base = _lora_base(config, resume_from, init_from)  # may refuse the resume: before anything moves
    checkpoints.apply(plan)
    engine, mpu, tile = _engine(config, hf_config, ds_config, resume_from, init_from, lora_base)

    rank, world = distributed.rank(), distributed.world_size()
    global_batch = config.trainer.micro_batch_size * config.trainer.grad_accum * world
    sampler = ResumableDistributedSampler(len(train_set), global_batch, rank, world, seed=config.seed)
    state = _restore(engine, sampler, resume_from, None if lora_base else init_from)
    if init_from is not None:
        _apply_t_init_after_load(config, engine, PretrainedConfig.from_json_file(str(init_from / "config.json")),
                                 train_set)
    elif resume_from is None and config.model.t_init == "fit":
        _apply_t_init_after_load(config, engine, hf_config, train_set)  # name_or_path's weights came with the build
    metrics = _start_metrics(config, run_dir, resolved, state)
    num_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in engine.module.parameters())
    steps = Steps(config, engine, train_set, val_set, sampler, rank, world, mpu,
                  logits_tile=tile if config.trainer.tiled_logits else None)
    lora = {"base": resolved["model"]["name_or_path"], "init_from": str(lora_base) if lora_base else None} \
        if config.model.lora.rank else None
    return Components(config, run_dir, resolved, tokenizer, hf_config, engine, sampler, steps, state, metrics, stop,
                      checkpoints, identity, started, lora, tokens_per_step=global_batch * config.data.seq_len,
                      flops_per_token=flops_per_token(hf_config, num_params, config.data.seq_len),
                      peak_flops=peak_flops())


def _with_gguf_dequantized(config: FinetuneConfig) -> FinetuneConfig:
    """`config` with a .gguf model.name_or_path or model.tokenizer replaced by its dequantized folder
    (data/gguf_model.py). Rank 0 makes it first, so a bad file is one line on every rank; then the
    first rank of each node (a node-local cache gets its own copy), then the others, from the cache."""
    m = config.model
    files = {key: getattr(m, key) for key in ("name_or_path", "tokenizer") if is_gguf(getattr(m, key))}
    if not files:
        return config

    def folders() -> dict[str, str]:
        return {key: str(gguf_folder(path, config.data.cache_dir, f"model.{key}")) for key, path in files.items()}

    distributed.main_decides(folders, long=True)
    if distributed.local_rank() == 0:
        folders()
    distributed.wait_long()
    return dataclasses.replace(config, model=dataclasses.replace(m, **folders()))


def _datasets(config: FinetuneConfig, tokenizer) -> tuple[Dataset, PackedDataset | None]:
    """The first rank of every node builds the caches (or finds them built: a cache shared by the
    nodes is safe to race for, node-local disks each get their own); the others then open them.
    The wait can take long on a fresh cache, so it is not a collective with the training timeout."""
    builder = distributed.local_rank() == 0
    if builder:
        splits = build_datasets(config.data, tokenizer, config.seed)
    elif distributed.local_rank() == 1:
        log.info("waiting for the first rank of this node to tokenize and pack the data (on a fresh cache "
                 "this can take long; `python -m data.prepare` with the same data settings builds it ahead)")
    waiting = time.monotonic()
    distributed.wait_long()
    if not builder:
        if distributed.local_rank() == 1:
            log.info("the data was ready after %.1f s of waiting", time.monotonic() - waiting)
        splits = build_datasets(config.data, tokenizer, config.seed)
    return splits["train"], splits.get("validation")


def _lora_base(config: FinetuneConfig, resume_from: Path | None, init_from: Path | None) -> Path | None:
    """With model.lora, the checkpoint whose model the adapters adapt, if not model.name_or_path: the
    init_from step (not its run_dir, whose latest moves on), or what the checkpoint resumed recorded.
    A resume must keep the checkpoint's LoRA settings: its weights are adapters of exactly that shape."""
    lora = dataclasses.asdict(config.model.lora) if config.model.lora.rank else None
    reference = read_reference(resume_from) if resume_from is not None else None
    if resume_from is not None and (reference or {}).get("lora") != lora:
        saved = f"model.lora={reference['lora']}" if reference else f"no model.lora (no {LORA_FILE})"
        raise BadInput(f"model.lora={lora} does not match {resume_from}, saved with {saved}: resume with the "
                       f"checkpoint's settings, or start a new run_dir from it with model.init_from")
    if lora is None:
        return None
    if reference is None:
        return init_from
    return Path(reference["init_from"]) if reference["init_from"] else None


def _engine(config: FinetuneConfig, hf_config: PretrainedConfig, ds_config: dict, resume_from: Path | None,
            init_from: Path | None, lora_base: Path | None):
    """(DeepSpeed engine, sequence-parallel mpu or None, tile tokens) over the model the run trains."""
    # init_from's weights load at any world size as they are (load_weights); a resume's optimizer needs this.
    saved_by = saved_world_size(resume_from) if resume_from is not None else None
    if saved_by is not None and saved_by != distributed.world_size():
        log.info("checkpoint saved by %d ranks, this run has %d: loading DeepSpeed's universal form",
                 saved_by, distributed.world_size())
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    # transformers creates the model partitioned under ZeRO-3 while this object lives.
    zero3 = HfDeepSpeedConfig(ds_config) if ds_config.get("zero_optimization", {}).get("stage") == 3 else None
    model = build_model(config.model, hf_config, lora_base)
    tile = config.trainer.tile_tokens or hf_config.hidden_size
    if config.trainer.tiled_mlp:
        tiling.tile_mlps(model, tile)
    mpu = sequence_parallel.setup(model, config, ds_config) if config.trainer.sequence_parallel_size > 1 else None
    engine = build_engine(model, ds_config, mpu)
    del zero3
    return engine, mpu, tile


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


def _restore(engine, sampler: ResumableDistributedSampler, resume_from: Path | None,
             init_from: Path | None) -> TrainerState:
    if resume_from is not None:
        state = load(engine, resume_from)
        sampler.load_state_dict(state.sampler)
        log.info("resumed from %s at step %d", resume_from, state.step)
        saved = yaml.safe_load((resume_from / "config.yaml").read_text())["trainer"]
        before = saved["micro_batch_size"] * saved["grad_accum"] * saved_world_size(resume_from)
        if before != sampler.global_batch_size:
            log.info("global batch %d -> %d sequences: epoch %d goes on from sample %d", before,
                     sampler.global_batch_size, sampler.epoch, sampler.position)
        return state
    if init_from is not None:
        load_weights(engine, init_from)
        log.info("weights from %s (fresh optimizer and schedule)", init_from)
    return TrainerState()


def _apply_t_init_after_load(config: FinetuneConfig, engine, parent: PretrainedConfig, train_set) -> None:
    """The parent's weights (init_from's, or name_or_path's) left W_t at its W_k: with t_init=random
    (init_from only: the build draws it for name_or_path), draw W_t again; with t_init=fit, fit it
    to the parent's scores. The optimizer's fp32 master copy then takes the new weights."""
    if config.model.t_init == "k_proj" or config.model.attention == "vanilla":
        return
    if getattr(parent, CONFIG_KEY, None) not in (None, "vanilla"):
        return  # a CoCA parent: its W_t is what this stage continues from
    if config.model.t_init == "random":
        convert_to_coca(engine.module, config.model.attention, t_init="random")
        log.info("model.t_init=random: W_t drawn afresh instead of the parent's W_k")
    else:
        started = time.perf_counter()
        errors = fit_w_t(engine.module, _calibration(config, engine, train_set))
        seconds = time.perf_counter() - started
        log.info("model.t_init=fit: W_t fitted to the parent's scores on %d sequences in %.0f s; squared score gap "
                 "per layer, relative to the parent's (a layer the fit does not improve keeps W_k), from W_k -> "
                 "fitted: %s", CALIBRATION_SEQUENCES, seconds,
                 ", ".join(f"{a:.3f} -> {b:.3f}" for a, b in errors))
    engine.optimizer.refresh_fp32_params()


def _calibration(config: FinetuneConfig, engine, train_set) -> list[dict]:
    """CALIBRATION_SEQUENCES training blocks, drawn with the run's seed, in micro-batches."""
    picked = np.random.default_rng(config.seed).choice(len(train_set), CALIBRATION_SEQUENCES, replace=False)
    items = [train_set[int(i)] for i in picked]
    size = config.trainer.micro_batch_size
    return [{key: torch.stack([item[key] for item in items[i:i + size]]).to(engine.device)
             for key in ("input_ids", "position_ids")} for i in range(0, len(items), size)]


def _start_metrics(config: FinetuneConfig, run_dir: Path, resolved: dict, state: TrainerState) -> MetricsLogger | None:
    """Rank 0 writes config.yaml and opens metrics.jsonl and W&B (resuming the run's W&B run)."""
    if not distributed.is_main():
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    metrics = MetricsLogger(run_dir, config.logger, resolved, state.wandb_run_id, state.step)
    state.wandb_run_id = metrics.run_id
    return metrics
