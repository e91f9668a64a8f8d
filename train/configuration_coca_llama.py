"""The config class of an exported CoCA LLaMA: LLaMA's, under its own model_type.

`python -m train.export` ships this file verbatim beside the weights, with modeling_coca_llama.py
and coca.py, and names it in config.json's `auto_map`. The model_type `coca_llama` is unknown to
transformers, so without `trust_remote_code=True` the Auto classes refuse the folder instead of
loading it as a vanilla LLaMA (W_t would then silently act as W_k).

`coca_variant` (slack | exact) is an extra config attribute, as on every config this project saves.
"""
from transformers import LlamaConfig


class CocaLlamaConfig(LlamaConfig):
    model_type = "coca_llama"
