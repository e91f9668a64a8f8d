"""LLaMA-family models, vanilla or CoCA: loading a saved one, and what training and inference share.

`load_pretrained` is the public loader of anything this project saves. The model a run
trains is built in train/trainer/build.py; checkpoints are found and loaded for evaluation,
export and generation in train/inference/load.py.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from conf.checks import check_choice
from conf.schema import DTYPE_NAMES
from train.coca import CONFIG_KEY, convert_to_coca
from train.coca_folder import is_coca_export, llama_config_dict
from conf.errors import BadInput

log = logging.getLogger(__name__)


def warn_of_flex_on_cpu(attn_implementation: str) -> None:
    """torch 2.13's compiled flex attention returns wrong values on CPU once torch recompiles it with
    dynamic shapes, which it does by itself on meeting a second sequence length (tests/kernels.py)."""
    if attn_implementation == "flex_attention" and not torch.cuda.is_available():
        log.warning("attn_implementation=flex_attention on CPU: torch %s's compiled flex kernel has returned wrong "
                    "values on CPU after recompiling for a new sequence length (dynamic shapes); prefer sdpa here, "
                    "or set TORCH_DYNAMO_AUTOMATIC_DYNAMIC_SHAPES=0", torch.__version__)


def load_config(name_or_path: str | os.PathLike) -> PretrainedConfig:
    """`AutoConfig.from_pretrained`, reading a CoCA export (model_type coca_llama, train/coca_folder.py)
    as the LlamaConfig with `coca_variant` the project's models use, once its shipped code checks out.
    An earlier version's export, or any LLaMA-family folder, reads as it is."""
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    if is_coca_export(config_dict):
        return LlamaConfig.from_dict(llama_config_dict(name_or_path, config_dict))
    return AutoConfig.from_pretrained(name_or_path)


def load_pretrained(name_or_path: str | os.PathLike, **from_pretrained_kwargs) -> PreTrainedModel:
    """`from_pretrained`, then CoCA if the checkpoint's config records a variant.

    W_t is stored as `k_proj`, so the weights load as they are; only the attention forward
    differs, and `config.coca_variant` says which one the checkpoint was trained with.
    A CoCA export loads through its LLaMA config (`load_config`), so no remote code runs here.
    With output_loading_info=True, returns (model, loading_info) like `from_pretrained`.
    """
    if from_pretrained_kwargs.get("config") is None:
        from_pretrained_kwargs["config"] = load_config(name_or_path)
    loaded = AutoModelForCausalLM.from_pretrained(name_or_path, **from_pretrained_kwargs)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    variant = getattr(model.config, CONFIG_KEY, None)
    if variant is not None:
        convert_to_coca(model, variant=variant, t_init="k_proj")
    return loaded


# model.dtype's names to torch's dtypes
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))


def apply_rope_scaling(config: PretrainedConfig, rope_scaling: Any, key: str) -> PretrainedConfig:
    """Merge `rope_scaling` (config key `key`, e.g. {rope_type: dynamic, factor: 4.0}) into the
    config's RoPE parameters, checked by transformers' own validation."""
    if rope_scaling is None:
        return config
    if not isinstance(rope_scaling, Mapping):
        raise BadInput(f"{key}={rope_scaling!r} must be a mapping such as {{rope_type: dynamic, factor: 4.0}}")
    if not rope_scaling:
        return config
    merged = {**config.rope_parameters, **rope_scaling}
    check_choice(f"{key}.rope_type", merged.get("rope_type"), ("default", *ROPE_INIT_FUNCTIONS))
    config.rope_parameters = merged
    config.standardize_rope_params()
    try:
        config.validate_rope()
    except KeyError as error:  # transformers names missing keys with a KeyError
        raise BadInput(f"{key}={dict(rope_scaling)}: {error.args[0]}") from None
    return config
