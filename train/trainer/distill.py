"""Attention distillation: W_t learns to reproduce the vanilla parent's attention, layer by layer.

A conversion stage before the language-model loss (`trainer.loss=attention_distill`, with
`model.trainable=t_only`): every CoCA layer also runs as its parent did, vanilla RoPE
attention with the parent's frozen W_k and the layer's own W_q, W_v, W_o, on the same input.
The loss is the mean over layers of ||out_coca - out_parent||^2 / ||out_parent||^2, so each
layer's W_t is pulled towards the scores its parent computed, not only towards what the next
token needs. The parent's layers live outside the model: the state dict, checkpoints and
ZeRO's partitions are those of an ordinary t_only stage.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from train.coca import CocaAttention


class AttentionDistiller:
    """Holds each layer's frozen parent and collects the layers' losses during a forward."""

    def __init__(self, model: nn.Module, parent_state: dict[str, torch.Tensor] | None = None):
        """parent_state: the parent's weights by name, for its W_k; None: each layer's k_proj now."""
        named = [(name, m) for name, m in model.named_modules() if isinstance(m, CocaAttention)]
        if not named:
            raise ValueError("trainer.loss=attention_distill needs a CoCA model (model.attention=slack or exact)")
        self.layers = [layer for _, layer in named]
        self.losses: list[torch.Tensor] = []
        self.parents = []
        for name, layer in named:
            # The parent shares the layer's q/v/o projections (W_t is all that trains) and has
            # its own frozen W_k.
            parent = CocaAttention(layer, "vanilla")
            parent.k_proj = copy.deepcopy(layer.k_proj).requires_grad_(False)
            if parent_state is not None:
                for key, param in parent.k_proj.named_parameters():
                    param.data.copy_(parent_state[f"{name}.k_proj.{key}"])
            self.parents.append(parent)
            layer.register_forward_hook(self._hook(parent), with_kwargs=True)

    def _hook(self, parent: CocaAttention):
        def compare(layer, args, kwargs, output):
            if not layer.training:
                return
            with torch.no_grad():
                target = parent(*args, **kwargs)[0]
            error = (output[0].float() - target.float()).square().sum()
            self.losses.append(error / target.float().square().sum().clamp_min(1e-12))

        return compare

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, float]:
        """(what to backpropagate, its value) for one micro-batch; no logits are computed."""
        self.losses.clear()
        inputs = {k: v for k, v in batch.items() if k not in ("shift_labels", "labels")}
        no_position = torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device)
        engine(**inputs, logits_to_keep=no_position)
        if len(self.losses) != len(self.layers):
            raise RuntimeError(f"attention distillation saw {len(self.losses)} of {len(self.layers)} layers")
        loss = torch.stack(self.losses).mean()
        self.losses.clear()
        return loss, loss.item()
