"""The training loss: next-token cross-entropy, averaged over a micro-batch's labelled tokens.

Computed as a sum and a count, so that the pieces of one micro-batch add up exactly: the tiles
of the logits (train.parallel.tiling) and the slices held by the ranks of a sequence-parallel group.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.runtime.sequence_parallel.ulysses_sp import sequence_tiled_compute

from data.packing import IGNORE_INDEX
from train.parallel import tiling


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next token's), IGNORE_INDEX after the last."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed over labelled positions; half-precision logits are upcast, as transformers' loss does."""
    if logits.element_size() < 4:
        logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def tiled_cross_entropy_sum(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                            tile_tokens: int) -> torch.Tensor:
    """Sum over labelled tokens of the cross-entropy of head(hidden), a tile of positions at a time.

    DeepSpeed's generic SequenceTiledCompute rather than its TiledFusedLogitsLoss: the latter
    back-propagates into lm_head during the forward with a gradient of 1, so lm_head's gradient
    misses every scale applied to the loss afterwards (the division by the token count, gradient
    accumulation, fp16 loss scaling). The generic one recomputes each tile in the backward with
    the true incoming gradient, at the cost of one more lm_head forward.
    """
    seq_len = hidden.shape[1]

    def tile_loss(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy_sum(head(hidden), labels)

    return sequence_tiled_compute(
        tile_loss,
        seq_len,
        tiling.tile_count(seq_len, tile_tokens),
        kwargs_to_shard={"hidden": hidden, "labels": labels},
        kwargs_to_pass={},
        grad_requiring_tensor_key="hidden",
        compute_params=list(head.parameters()),
        output_unshard_dimension=0,
        output_reduction="sum",
    )


def mean_loss(engine, batch: dict, logits_tile: int | None, group=None, share_scale: int = 1
              ) -> tuple[torch.Tensor, float]:
    """(what to backpropagate, the micro-batch's mean loss).

    `batch` holds input_ids, position_ids and shift_labels. `logits_tile`: tokens per tile of
    the logits (None: untiled). `group`: the sequence-parallel group whose ranks each hold a
    slice of the micro-batch. The mean over the group's tokens is sum_r S_r / N, and each rank
    backpropagates its share S_r / N times `share_scale` (train.parallel.sequence_parallel.share_scale),
    so that after DeepSpeed's reduction the shares add up to the gradient of the mean.
    """
    labels = batch["shift_labels"]
    inputs = {k: v for k, v in batch.items() if k != "shift_labels"}
    if logits_tile is None:
        local_sum = cross_entropy_sum(engine(**inputs).logits, labels)
    else:
        # Through the engine, whose forward hooks ZeRO-3 needs for correct gradients (calling the
        # decoder directly loses some), but with logits for no position: the tiles compute them.
        # transformers makes hidden_states[-1] the final, normalised hidden state.
        no_position = torch.empty(0, dtype=torch.long, device=labels.device)
        hidden = engine(**inputs, output_hidden_states=True, logits_to_keep=no_position).hidden_states[-1]
        head = engine.module.get_output_embeddings()
        local_sum = tiled_cross_entropy_sum(head, hidden, labels, logits_tile)
    totals = torch.stack([local_sum.detach(), (labels != IGNORE_INDEX).sum().to(local_sum.dtype)])
    if group is not None:
        dist.all_reduce(totals, group=group)
    return local_sum * (share_scale / totals[1]), (totals[0] / totals[1]).item()
