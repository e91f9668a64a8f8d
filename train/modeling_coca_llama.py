"""The model class of an exported CoCA LLaMA: transformers' LLaMA with CoCA attention.

Shipped verbatim beside the weights (see configuration_coca_llama.py). The CoCA layers come
from coca.py, this project's own module, copied next to this file, so `trust_remote_code=True`
runs the same code as the project's loaders. The weights are LLaMA's, W_t under `k_proj`.
"""
import contextlib

import torch
from torch import nn
from transformers import LlamaForCausalLM

from .coca import CONFIG_KEY, VARIANTS, check_choice, convert_to_coca
from .configuration_coca_llama import CocaLlamaConfig


@contextlib.contextmanager
def one_rope_scale(model: nn.Module, length: int):
    """Dynamic NTK held at one scale, the one for `length` tokens, for every forward inside.

    transformers' dynamic NTK rescales RoPE each time a forward reaches a new longest position.
    Cached generation past max_position_embeddings then rotates each new query at a scale its
    cached keys were not rotated at (transformers issue #25104): for head_dim 32, base 10,000 and
    factor 4 they are 0.17 rad apart at the first token past the window and about 1 rad at the
    sixth. Generation of `length` tokens in all (prompt and new tokens) should instead fix the
    scale for the whole sequence before prefill: within max_position_embeddings that is the
    original RoPE, exactly as without scaling. Other RoPE types are left as they are.
    """
    rotaries = [module for module in model.modules()
                if "dynamic" in str(getattr(module, "rope_type", "")) and hasattr(module, "original_max_seq_len")]
    for rotary in rotaries:
        # A forward at position 0 takes transformers' reset to the original scale (a scale grown by an
        # earlier, longer sequence is forgotten); one at length - 1 then grows it to `length`.
        for position in (0, length - 1):
            rotary(rotary.inv_freq[:1], torch.full((1, 1), position, device=rotary.inv_freq.device))
    kinds = [rotary.rope_type for rotary in rotaries]
    for rotary in rotaries:
        rotary.rope_type = "default"  # transformers updates only a "dynamic" rope_type
    try:
        yield
    finally:
        for rotary, kind in zip(rotaries, kinds):
            rotary.rope_type = kind


class CocaLlamaForCausalLM(LlamaForCausalLM):
    config_class = CocaLlamaConfig

    def __init__(self, config: CocaLlamaConfig):
        super().__init__(config)
        variant = getattr(config, CONFIG_KEY, None)
        # A coca_llama config without a variant would otherwise need a guess; vanilla exports are plain llama.
        check_choice(f"config.{CONFIG_KEY}", variant, VARIANTS)
        # t_init=k_proj keeps the module weights: from_pretrained fills them afterwards.
        convert_to_coca(self, variant, t_init="k_proj")

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' generate, with dynamic NTK (if configured) at one scale for the whole
        sequence, prompt and new tokens, so that cached keys and new queries agree (one_rope_scale above)."""
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        settings = generation_config or self.generation_config
        new_tokens = kwargs.get("max_new_tokens", settings.max_new_tokens)
        total = (ids.shape[-1] + new_tokens if ids is not None and new_tokens is not None
                 else kwargs.get("max_length", settings.max_length))
        with one_rope_scale(self, total):
            return super().generate(inputs, generation_config, **kwargs)

