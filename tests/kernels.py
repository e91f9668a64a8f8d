"""Which attention kernels compute correctly on this machine, for tests that compare them.

torch 2.13's compiled flex attention returns NaN or wrong values on CPU once it has been
recompiled with dynamic shapes, which torch does by itself when a process meets a second sequence
length (and remembers in its compile cache for later processes): 24 tokens give NaN, 48 tokens
values 0.1-0.4 off, where the static kernel for either length is right. It is torch's defect,
shown by a plain LlamaForCausalLM with no CoCA in it. The tests compile statically
(TORCH_DYNAMO_AUTOMATIC_DYNAMIC_SHAPES=0, tests/conftest.py), check flex at lengths it gets right,
and skip, naming the defect, only where this probe still finds the kernel wrong.
"""
from __future__ import annotations

import functools

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import is_torch_flex_attn_available


@functools.lru_cache(maxsize=None)
def flex_defect(head_dim: int, seq_len: int) -> str | None:
    """Why flex attention cannot be checked at this shape here; None when it matches eager."""
    if not is_torch_flex_attn_available():
        return "flex attention is not available in this torch"
    config = LlamaConfig(hidden_size=4 * head_dim, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 97, (2, seq_len), generator=torch.Generator().manual_seed(1))
    logits = {}
    for kernel in ("eager", "flex_attention"):
        model.set_attn_implementation(kernel)
        with torch.no_grad():
            logits[kernel] = model(ids).logits
    gap = (logits["flex_attention"] - logits["eager"]).abs().max().item()
    if gap == gap and gap < 1e-4:  # not NaN, and close
        return None
    return (f"torch {torch.__version__}'s compiled flex attention is wrong on this CPU at head_dim {head_dim}, "
            f"{seq_len} tokens, even for a plain LLaMA (largest logit gap to eager: {gap:.3g}): a torch defect")
