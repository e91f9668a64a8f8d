"""A checkpoint as a transformers folder: safetensors weights, config.json (with `coca_variant`), tokenizer.

Any ZeRO stage and number of ranks: DeepSpeed's zero_to_fp32 consolidates the shards on the CPU.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from train.coca import CONFIG_KEY
from train.inference.config import ExportConfig, validate_export
from train.inference.load import checkpoint_config, load_checkpoint_tokenizer, load_model, resolve

log = logging.getLogger(__name__)


def export(config: ExportConfig) -> Path:
    """The checkpoint as a transformers folder at config.output, written atomically; returns that folder."""
    validate_export(config)
    output = Path(config.output).expanduser().absolute()
    ckpt = resolve(config.checkpoint)
    tokenizer = load_checkpoint_tokenizer(ckpt)
    model = load_model(ckpt, checkpoint_config(ckpt, None, "rope_scaling"), config.dtype)
    # Written aside and renamed into place: a crash never leaves a half export at `output`.
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s to %s (%s=%s, %s)", ckpt.folder, output, CONFIG_KEY,
             getattr(model.config, CONFIG_KEY, None), config.dtype)
    return output
