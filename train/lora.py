"""LoRA through peft (`model.lora`): adapters on the linear layers, and the parameters that train whole.

A LoRA run's checkpoints hold only what trains (DeepSpeed's `exclude_frozen_parameters`) and
`lora.json`, which says how to rebuild the rest: the base model (model.name_or_path converted to
the run's CoCA variant, or model.init_from's model) and the adapters' settings. Loading such a
checkpoint for evaluation, generation or export rebuilds the base, adds the adapters, loads the
trained weights and merges them (`merged`), so an export is an ordinary CoCA folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from conf.errors import BadInput
from conf.schema import LoraConfig

log = logging.getLogger(__name__)

LORA_FILE = "lora.json"


def add_adapters(model: nn.Module, lora: LoraConfig) -> PeftModel:
    """The model with adapters on `lora.target_modules`; only they and `lora.train_fully` train."""
    peft_config = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.target_modules))
    wrapped = get_peft_model(model, peft_config)
    for name, param in wrapped.named_parameters():
        if any(part in name for part in lora.train_fully):
            param.requires_grad_(True)
    # Under ZeRO-3 the base's weights are already partitioned: ds_numel is their whole size.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in wrapped.parameters()]
    trained, total = sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)
    log.info("LoRA rank %d on %s, %s whole: %s of %s parameters train (%.2f%%)", lora.rank,
             ",".join(lora.target_modules), ",".join(lora.train_fully) or "nothing else", f"{trained:,}", f"{total:,}",
             100 * trained / total)
    return wrapped


def is_lora(module: nn.Module) -> bool:
    return isinstance(module, PeftModel)


def write_reference(folder: Path, lora: LoraConfig, base: str | None, init_from: str | None) -> None:
    """lora.json: the adapters' settings and what the base model is, beside the trained weights."""
    record = {"lora": dataclasses.asdict(lora), "base": base, "init_from": init_from}
    (folder / LORA_FILE).write_text(json.dumps(record, indent=1))


def read_reference(folder: Path) -> dict | None:
    path = folder / LORA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def merged(folder: Path, reference: dict, base: nn.Module, state_dict: dict) -> tuple[nn.Module, dict]:
    """The base with the checkpoint's adapters and fully trained weights merged in (a plain model),
    and the loading info, as from_pretrained's output_loading_info gives it."""
    model = add_adapters(base, LoraConfig(**reference["lora"]))
    result = model.load_state_dict(state_dict, strict=False)
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    missing = sorted(trained & set(result.missing_keys))
    if missing:
        raise BadInput(f"the LoRA checkpoint {folder} lacks {len(missing)} trained weights, e.g. {missing[0]}")
    info = {"missing_keys": [], "unexpected_keys": result.unexpected_keys, "mismatched_keys": []}
    return model.merge_and_unload(), info
