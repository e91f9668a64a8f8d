"""Finding and loading the model behind a checkpoint path, for evaluation, export and generation.

A path is a run_dir (its latest complete checkpoint), a run's checkpoints/ folder, a step-N
folder (DeepSpeed's shards, any ZeRO stage and world size), or a transformers folder (an
export, or any LLaMA-family model). DeepSpeed checkpoints are consolidated on the CPU by
DeepSpeed's own zero_to_fp32, with no process group, into ZeRO's fp32 master weights.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from data.tokenizer import load_tokenizer
from train.coca import CONFIG_KEY, convert_to_coca
from train.lora import merged, read_reference
from train.model import DTYPES, apply_rope_scaling, load_config, load_pretrained, warn_of_flex_on_cpu
from train.trainer.checkpoint.folders import find_checkpoint, is_complete
from data.gguf_model import gguf_folder, is_gguf
from train.trainer.state import STATE_FILE, read_state
from conf.errors import BadInput

log = logging.getLogger(__name__)

DEEPSPEED, EXPORTED = "deepspeed", "exported"
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path  # the step folder, or the transformers folder
    kind: str  # DEEPSPEED | EXPORTED
    run_dir: Path | None = None  # the training run a step folder belongs to
    step: int | None = None
    wandb_run_id: str | None = None
    gguf: Path | None = None  # the GGUF file an EXPORTED folder was dequantized from (data/gguf_model.py)

    @property
    def name(self) -> str:
        """How tables and folders name it: the run, or the exported folder (the GGUF file's stem)."""
        return self.run_dir.name if self.kind == DEEPSPEED else (self.gguf.stem if self.gguf else self.folder.name)

    @property
    def home(self) -> Path:
        """Where its evaluations go by default: the step folder's run_dir, or beside the model."""
        if self.kind == DEEPSPEED:
            return self.run_dir
        return self.gguf.parent / self.gguf.stem if self.gguf else self.folder


def resolve(path: str, key: str = "checkpoint", cache_dir: str | None = None) -> Checkpoint:
    """What `path` names; `key` is the config key it came from, for messages. A .gguf file is read
    through its dequantized folder in the cache under `cache_dir` (data.cache_dir)."""
    if is_gguf(path):
        return Checkpoint(gguf_folder(path, cache_dir, key), EXPORTED, gguf=Path(path).expanduser().absolute())
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise BadInput(f"{key}={path!r} is not a folder")
    if not is_complete(folder) and _is_transformers_folder(folder):
        return Checkpoint(folder, EXPORTED)
    try:
        step = find_checkpoint(str(folder), key)
    except BadInput:
        raise BadInput(
            f"{key}={path!r} is not a checkpoint: give a run_dir, its checkpoints/ folder, a complete step-N "
            f"folder (with {STATE_FILE}) or a transformers folder (config.json and weights)"
        ) from None
    state = read_state(step)
    return Checkpoint(step, DEEPSPEED, step.parent.parent, state["step"], state.get("wandb_run_id"))


def _is_transformers_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(next(folder.glob(p), None) for p in _WEIGHT_PATTERNS)


def checkpoint_config(ckpt: Checkpoint, rope_scaling: Mapping[str, Any] | None, key: str) -> PretrainedConfig:
    """The checkpoint's config.json, with `rope_scaling` (config key `key`) merged into its RoPE."""
    return apply_rope_scaling(load_config(ckpt.folder), rope_scaling, key)


def load_model(
    ckpt: Checkpoint, config: PretrainedConfig, dtype: str = "float32", attn_implementation: str = "sdpa"
) -> PreTrainedModel:
    """The checkpoint's model in eval mode on the CPU, CoCA as its config records, KV cache on.

    `dtype` is a key of train.model.DTYPES, checked by the caller under its own config key.
    """
    warn_of_flex_on_cpu(attn_implementation)
    options = dict(config=config, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
                   output_loading_info=True)
    if ckpt.kind == EXPORTED:
        model, info = load_pretrained(ckpt.folder, **options)
    else:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
        if model_class is None:
            raise BadInput(f"{ckpt.folder}/config.json: model_type={config.model_type!r} has no causal LM class")
        variant = getattr(config, CONFIG_KEY, None)
        if variant is None:
            # The trainer records the variant even for vanilla: without it, CoCA and vanilla look alike.
            raise BadInput(f"{ckpt.folder}/config.json lacks {CONFIG_KEY}, so a CoCA checkpoint cannot be told "
                             f"from a vanilla one: add \"{CONFIG_KEY}\": the run's model.attention "
                             f"(vanilla, slack or exact)")
        # zero_to_fp32 reports its progress with print(): keep stdout for what the command itself writes
        # (train.generate's text), so that it can be piped.
        with contextlib.redirect_stdout(sys.stderr):
            state_dict = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.folder.parent), tag=ckpt.folder.name)
        reference = read_reference(ckpt.folder)
        if reference is None:
            # from_pretrained with no path builds the model on the meta device and loads this state dict.
            model, info = model_class.from_pretrained(None, state_dict=state_dict, **options)
            convert_to_coca(model, variant)
        else:
            base = _adapted_model(reference, config, dtype, attn_implementation)
            model, info = merged(ckpt.folder, reference, base, state_dict)
    _check_loaded(ckpt.folder, info)
    # The trainer switches the KV cache off, and transformers copies that into the generation
    # config; exports inherit both, so generate() would re-read the whole sequence for every new
    # token (and overrun a static cache): switch it back on in both.
    model.config.use_cache = model.generation_config.use_cache = True
    return model.eval()


def _adapted_model(reference: dict, config: PretrainedConfig, dtype: str, attn_implementation: str) -> PreTrainedModel:
    """The model a LoRA checkpoint's adapters adapt, built with the checkpoint's config (its CoCA
    variant and slices, and the RoPE asked for): model.init_from's model, else model.name_or_path."""
    base = reference["init_from"] or reference["base"]
    if is_gguf(base) or Path(base).expanduser().exists():
        return load_model(resolve(base, "the LoRA base"), config, dtype, attn_implementation)
    return load_pretrained(base, config=config, dtype=DTYPES[dtype], attn_implementation=attn_implementation)


def _check_loaded(folder: Path, info: dict) -> None:
    wrong = {kind: sorted(info[kind]) for kind in ("missing_keys", "mismatched_keys") if info[kind]}
    if wrong:
        raise BadInput(f"the weights in {folder} do not fit its config.json: {wrong}")
    if info["unexpected_keys"]:
        log.warning("%s: ignored weights the model does not use: %s", folder, sorted(info["unexpected_keys"]))


def load_checkpoint_tokenizer(ckpt: Checkpoint) -> PreTrainedTokenizerBase:
    """Step folders and exports carry the run's tokenizer."""
    return load_tokenizer(str(ckpt.folder))


def device() -> torch.device:
    """Where evaluation and generation run a loaded model: the GPU if there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
