"""A first look at CoCA: convert a tiny random LLaMA and generate with the KV cache.

Run `python -m train.demo`. It needs no download and runs on CPU in seconds.
"""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from train.coca import VARIANTS, convert_to_coca


def main() -> None:
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=256,
        initializer_range=0.3,  # random weights far from uniform attention: variants differ
    )
    prompt = torch.arange(1, 17)[None]  # (1, 16)
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = convert_to_coca(LlamaForCausalLM(config).eval(), variant)
        settings = dict(max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.no_grad():
            cached = model.generate(prompt, use_cache=True, **settings)
            uncached = model.generate(prompt, use_cache=False, **settings)
        same = "same" if torch.equal(cached, uncached) else "DIFFERENT"
        print(f"{variant:8s} {cached[0, 16:].tolist()}  (KV cache vs none: {same})")


if __name__ == "__main__":
    main()
