"""A checkpoint as a transformers folder: safetensors weights, config.json, tokenizer, model card.

Any ZeRO stage and number of ranks: DeepSpeed's zero_to_fp32 consolidates the shards on the CPU.
A CoCA model also gets its custom code and the coca_llama config (train/coca_folder.py), so that
transformers loads it as CoCA with trust_remote_code=True and refuses it otherwise; a vanilla
model stays a plain LLaMA folder. push_to_hub uploads the finished folder.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from train.coca import CONFIG_KEY
from train.coca_folder import ship_custom_code, ships_custom_code
from train.inference.config import ExportConfig, validate_export
from train.inference.hub import upload, write_card
from train.inference.load import checkpoint_config, load_checkpoint_tokenizer, load_model, resolve

log = logging.getLogger(__name__)


def export(config: ExportConfig) -> Path:
    """The checkpoint as a transformers folder at config.output, written atomically; returns that folder."""
    validate_export(config)
    output = Path(config.output).expanduser().absolute()
    ckpt = resolve(config.checkpoint)
    tokenizer = load_checkpoint_tokenizer(ckpt)
    model = load_model(ckpt, checkpoint_config(ckpt, None, "rope_scaling"), config.dtype)
    variant = getattr(model.config, CONFIG_KEY, None)
    # Written aside and renamed into place: a crash never leaves a half export at `output`.
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        if ships_custom_code({CONFIG_KEY: variant}):
            ship_custom_code(scratch)
        write_card(scratch, ckpt, config.push_to_hub or str(output))
        os.replace(scratch, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s to %s (%s=%s, %s)", ckpt.folder, output, CONFIG_KEY, variant, config.dtype)
    if config.push_to_hub is not None:
        log.info("uploaded to %s: %s", config.push_to_hub, upload(output, config.push_to_hub))
    return output
