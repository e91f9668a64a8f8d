"""Dynamic NTK remembers: transformers grows RoPE's frequencies for the longest sequence a model
has seen and keeps using them for later, shorter ones, until one fits the original length again.
An evaluation that measured 16K tokens would otherwise score a 4K passkey prompt with 16K's scaling."""
from __future__ import annotations

import torch
from torch import nn


def forget_longer_sequences(model: nn.Module) -> None:
    """Let the next sequence set dynamic NTK's scaling from its own length, as if it came first.

    A one-position forward through each rotary embedding takes transformers' own reset path
    (a sequence within the original length); for other RoPE types it changes nothing.
    """
    for module in model.modules():
        if hasattr(module, "original_max_seq_len") and hasattr(module, "inv_freq"):
            one = torch.zeros(1, 1, dtype=torch.long, device=module.inv_freq.device)
            module(module.inv_freq[:1], one)
