"""The model class of an exported CoCA LLaMA: transformers' LLaMA with CoCA attention.

Shipped verbatim beside the weights (see configuration_coca_llama.py). The CoCA layers come
from coca.py, this project's own module, copied next to this file, so `trust_remote_code=True`
runs the same code as the project's loaders. The weights are LLaMA's, W_t under `k_proj`.
"""
from transformers import LlamaForCausalLM

from .coca import CONFIG_KEY, VARIANTS, check_choice, convert_to_coca
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
