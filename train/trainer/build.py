"""The model a run trains: its transformers config (checked before weights load), then the model itself."""
from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from conf import ModelConfig
from data.tokenizer import looks_like_path
from train.coca import CONFIG_KEY, convert_to_coca
from train.lora import add_adapters
from train.model import DTYPES, apply_rope_scaling, load_config, warn_of_flex_on_cpu
from conf.errors import BadInput

log = logging.getLogger(__name__)

# Parameter-name suffixes that train in each stage of the paper's recipe (W_t is `k_proj`).
_STAGE_PARAMS = {"t_only": ("self_attn.k_proj.weight", "self_attn.k_proj.bias"),
                 "qkv": tuple(f"self_attn.{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias"))}


def arch_fields() -> set[str]:
    """The keys `model.arch` may set: LlamaConfig's arguments and attributes (rope_theta too,
    which transformers still folds into rope_parameters)."""
    named = set(inspect.signature(LlamaConfig.__init__).parameters) - {"self", "kwargs"}
    return named | {k for k in LlamaConfig().to_dict() if not k.startswith("_")} | {"rope_theta"}


def check_arch(arch: Mapping[str, Any]) -> None:
    """model.arch is a free-form mapping, so a misspelt key in a YAML file would silently leave
    the default in place: refuse it, naming the nearest field."""
    fields = arch_fields()
    for key in arch:
        if key not in fields:
            nearest = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f"did you mean {nearest[0]!r}?" if nearest else "see transformers' LlamaConfig"
            raise BadInput(f"model.arch.{key} is not a LlamaConfig field; {hint}")


def model_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The transformers config the run will build, cheap to get: checked before weights load."""
    if cfg.name_or_path is None:
        if not cfg.arch:
            raise BadInput("model.name_or_path is null and model.arch is empty: give a checkpoint or an architecture")
        check_arch(cfg.arch)
        # arch.vocab_size may pad the vocabulary (benchmarks use LLaMA's 32000), never cut it
        vocab_size = cfg.arch.get("vocab_size", len(tokenizer))
        if vocab_size < len(tokenizer):
            raise BadInput(f"model.arch.vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} "
                             "tokens: leave it unset or make it at least that")
        config = LlamaConfig(
            **{"vocab_size": len(tokenizer), **cfg.arch},
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        _check_exists(cfg.name_or_path)
        if cfg.arch:
            raise BadInput(f"model.arch is only for random init, but model.name_or_path={cfg.name_or_path!r} is set")
        try:
            config = load_config(cfg.name_or_path)
        except OSError as error:
            raise BadInput(f"cannot load model.name_or_path={cfg.name_or_path!r}: {str(error).splitlines()[0]}") from error
    return apply_rope_scaling(config, cfg.rope_scaling, "model.rope_scaling")


def _check_exists(name_or_path: str) -> None:
    if looks_like_path(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        raise BadInput(f"model.name_or_path={name_or_path!r} is not a folder (relative to {os.getcwd()})")


def build_model(cfg: ModelConfig, config: PretrainedConfig, lora_base: Path | None = None) -> PreTrainedModel:
    """Weights (pretrained or random), CoCA, gradient checkpointing, and what trains: with
    model.lora, adapters over the base, which is `lora_base`'s model (model.init_from's) if given.

    Under ZeRO-3 the caller keeps a `HfDeepSpeedConfig` alive, so transformers creates the
    model partitioned (`deepspeed.zero.Init`) instead of one full copy per rank.
    """
    dtype = DTYPES[cfg.dtype]
    warn_of_flex_on_cpu(cfg.attn_implementation)
    if lora_base is not None:
        # Imported here: the inference loader imports the trainer's checkpoint helpers.
        from train.inference.load import checkpoint_config, load_model, resolve

        parent = resolve(str(lora_base), "model.init_from")
        model = load_model(parent, checkpoint_config(parent, cfg.rope_scaling, "model.rope_scaling"), cfg.dtype,
                           cfg.attn_implementation).train()
    elif cfg.name_or_path is None:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=cfg.attn_implementation)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path, config=config, dtype=dtype, attn_implementation=cfg.attn_implementation
        )
    trained_variant = getattr(model.config, CONFIG_KEY, None)
    if trained_variant is not None and cfg.t_init != "k_proj":
        log.warning("%s is a CoCA checkpoint (%s): its W_t is kept, model.t_init=%s does not apply",
                    cfg.name_or_path, trained_variant, cfg.t_init)
    # t_init=fit starts from the parent's W_k; the trainer fits W_t once the parent's weights are in
    t_init = cfg.t_init if trained_variant is None and cfg.t_init != "fit" else "k_proj"
    convert_to_coca(model, cfg.attention, t_init=t_init, slices=cfg.coca_slices)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad: frozen embeddings are fine.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if cfg.trainable != "all":
        suffixes = _STAGE_PARAMS[cfg.trainable]
        for name, param in model.named_parameters():
            param.requires_grad_(name.endswith(suffixes))
    if cfg.lora.rank:
        model = add_adapters(model, cfg.lora)
    return model
