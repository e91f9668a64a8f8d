"""Loading LLaMA-family checkpoints, vanilla or CoCA."""
from __future__ import annotations

import os

from transformers import AutoModelForCausalLM, PreTrainedModel

from train.coca import CONFIG_KEY, convert_to_coca


def load_pretrained(name_or_path: str | os.PathLike, **from_pretrained_kwargs) -> PreTrainedModel:
    """`from_pretrained`, then CoCA if the checkpoint's config records a variant.

    W_t is stored as `k_proj`, so the weights load as they are; only the attention forward
    differs, and `config.coca_variant` says which one the checkpoint was trained with.
    With output_loading_info=True, returns (model, loading_info) like `from_pretrained`.
    """
    loaded = AutoModelForCausalLM.from_pretrained(name_or_path, **from_pretrained_kwargs)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    variant = getattr(model.config, CONFIG_KEY, None)
    if variant is not None:
        convert_to_coca(model, variant=variant, t_init="k_proj")
    return loaded
