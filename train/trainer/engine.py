"""The DeepSpeed engine: its JSON config from ours, then `deepspeed.initialize`."""
from __future__ import annotations

import copy

import deepspeed
from torch import nn

from conf import FinetuneConfig
from conf.errors import BadInput


def check_precision(precision: str) -> None:
    """DeepSpeed would refuse an unsupported half precision only once the model is built."""
    accelerator = deepspeed.get_accelerator()
    supported = {"fp32": True, "bf16": accelerator.is_bf16_supported(), "fp16": accelerator.is_fp16_supported()}
    if not supported[precision]:
        allowed = ", ".join(name for name, ok in supported.items() if ok)
        raise BadInput(f"trainer.precision={precision} is not supported on this device "
                         f"({accelerator.device_name()}); choose one of {allowed}")


def deepspeed_config(config: FinetuneConfig) -> dict:
    """The `deepspeed` group plus precision, optimizer and schedule, which have one home each."""
    ds = copy.deepcopy(config.deepspeed)
    trainer, optim = config.trainer, config.optim
    # Keep whatever else the deepspeed group sets in these blocks (fp16's loss-scale settings).
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": trainer.precision == "bf16"}
    ds["fp16"] = {**ds.get("fp16", {}), "enabled": trainer.precision == "fp16"}
    # On CPU (tests, the default run) DeepSpeed's fused Adam kernels do not exist; torch's do.
    on_cpu = deepspeed.get_accelerator().device_name() == "cpu"
    ds["optimizer"] = {
        "type": "AdamW",
        "params": {
            "lr": optim.lr,
            "betas": list(optim.betas),
            "eps": optim.eps,
            "weight_decay": optim.weight_decay,
            **({"torch_adam": True} if on_cpu else {}),
        },
    }
    ds["scheduler"] = _scheduler(config)
    return ds


def _scheduler(config: FinetuneConfig) -> dict:
    optim, steps = config.optim, config.trainer.max_steps
    warmup = optim.warmup_steps
    if optim.schedule == "cosine":
        return {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": steps,
                "warmup_num_steps": warmup,
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": optim.min_lr_ratio,
                "warmup_type": "linear",
            },
        }
    kind = "WarmupDecayLR" if optim.schedule == "linear" else "WarmupLR"
    params = {"warmup_min_lr": 0.0, "warmup_max_lr": optim.lr, "warmup_num_steps": warmup, "warmup_type": "linear"}
    if optim.schedule == "linear":
        params["total_num_steps"] = steps
    return {"type": kind, "params": params}


def build_engine(model: nn.Module, ds_config: dict, mpu=None):
    """A DeepSpeed engine over the parameters that train (frozen ones stay out of the optimizer).

    `mpu` holds the sequence-parallel groups when there are some (train/parallel/sequence_parallel.py).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config, mpu=mpu)
    return engine
