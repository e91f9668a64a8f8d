"""The model class of an exported CoCA LLaMA: transformers' LLaMA with CoCA attention.

Shipped verbatim beside the weights (see configuration_coca_llama.py). The CoCA layers come
from coca.py, this project's own module, copied next to this file, so `trust_remote_code=True`
runs the same code as the project's loaders. The weights are LLaMA's, W_t under `k_proj`.
"""
from transformers import LlamaForCausalLM

from .coca import CONFIG_KEY, VARIANTS, check_choice, convert_to_coca, one_rope_scale
from .configuration_coca_llama import CocaLlamaConfig


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
        sequence, prompt and new tokens, so that cached keys and new queries agree (coca.one_rope_scale)."""
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        settings = generation_config or self.generation_config
        new_tokens = kwargs.get("max_new_tokens", settings.max_new_tokens)
        total = (ids.shape[-1] + new_tokens if ids is not None and new_tokens is not None
                 else kwargs.get("max_length", settings.max_length))
        with one_rope_scale(self, total):
            return super().generate(inputs, generation_config, **kwargs)

