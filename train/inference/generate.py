"""A checkpoint's continuation of a prompt: greedy, or sampled (seeded) with temperature and top_p."""
from __future__ import annotations

import torch
from transformers import set_seed

from train.modeling_coca_llama import one_rope_scale
from train.diagnose import require_finite
from train.inference.config import GenerateConfig, validate_generate
from train.inference.load import checkpoint_config, device, load_checkpoint_tokenizer, load_model, resolve


def generate(config: GenerateConfig) -> str:
    """The continuation of config.prompt, also printed after it."""
    validate_generate(config)
    ckpt = resolve(config.checkpoint)
    tokenizer = load_checkpoint_tokenizer(ckpt)
    hf_config = checkpoint_config(ckpt, config.rope_scaling, "rope_scaling")
    model = load_model(ckpt, hf_config, config.model.dtype, config.model.attn_implementation).to(device())
    ids = tokenizer(config.prompt, return_tensors="pt")["input_ids"].to(device())
    set_seed(config.seed)
    sampling = dict(temperature=config.temperature, top_p=config.top_p) if config.do_sample else {}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Dynamic NTK at one scale for prompt and continuation: cached keys and new queries agree.
    with torch.no_grad(), one_rope_scale(model, ids.shape[1] + config.max_new_tokens):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=config.max_new_tokens,
                             do_sample=config.do_sample, pad_token_id=pad, return_dict_in_generate=True,
                             output_logits=True, **sampling)
    require_finite(torch.stack(out.logits), model, {"input_ids": ids}, "generation")
    text = tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)
    print(config.prompt + text)
    return text
