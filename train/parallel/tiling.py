"""DeepSpeed's tiled compute (Arctic Long Sequence Training) for the MLP; train.trainer.loss tiles the logits.

At long seq_len the largest activations are no longer attention's (CoCA runs on O(N) kernels)
but the MLP's intermediates (3 x intermediate_size per token, 33K values for LLaMA-7B) and the
logits (vocab_size per token, upcast to fp32 for the loss, and their gradient). Tiled, each is
computed a tile of tokens at a time, so only one tile's intermediates exist at once. Both
recompute their tile's forward during the backward: one more MLP and lm_head forward per step.

A tile defaults to hidden_size tokens, so that a tile's MLP intermediates and logits are about
the size of one weight matrix (gate_proj, lm_head) whatever the sequence length.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP


def tile_count(tokens: int, tile_tokens: int) -> int:
    return max(1, math.ceil(tokens / tile_tokens))


def _chunkable(count: int, *sizes: int) -> int:
    """The largest count <= `count` that torch.chunk honours for every size.

    torch.chunk returns fewer chunks than asked when the sizes do not allow them (6 rows in 4
    gives 3 of 2), and TiledMLP marks gradients ready for ZeRO's reduction only on chunk count - 1.
    """
    while any(math.ceil(size / math.ceil(size / count)) != count for size in sizes):
        count -= 1
    return count


def tile_mlps(model, tile_tokens: int) -> None:
    """Run every decoder layer's MLP through DeepSpeed's TiledMLP, tile_tokens tokens at a time."""
    for layer in model.get_decoder().layers:
        # An instance attribute rather than another class or a wrapper module: the state dict,
        # the model class and ZeRO-3's per-module hooks stay exactly as they were.
        layer.mlp.forward = partial(_tiled_mlp_forward, layer.mlp, tile_tokens)


def _untiled_mlp_forward(mlp, x: torch.Tensor) -> torch.Tensor:
    return type(mlp).forward(mlp, x)


def _tiled_mlp_forward(mlp, tile_tokens: int, x: torch.Tensor) -> torch.Tensor:
    # TiledMLP chunks the sequence in its forward and batch x sequence rows in its backward.
    tiles = _chunkable(tile_count(x.shape[-2], tile_tokens), x.shape[-2], x.shape[:-1].numel())
    if tiles == 1:
        return _untiled_mlp_forward(mlp, x)
    return TiledMLP.apply(_untiled_mlp_forward, mlp, x, tiles, list(mlp.parameters()))
