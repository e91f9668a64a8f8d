"""The attention layer that bench/attention.py and bench/gpu_check.py measure, and its inputs.

One LLaMA-7B-shaped attention layer per variant: the project's `CocaAttention` (vanilla, slack,
exact), and the reference code's N x N computation of slack (nxn-scores, nxn-einsum) on the same
weights. `run_step` is one forward+backward of a variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# LLaMA-7B's attention. Batch 1 is the long-context fine-tuning setting.
BATCH = 1
HIDDEN = 4096
HEADS = 32
HEAD_DIM = HIDDEN // HEADS
LAYER_VARIANTS = ("vanilla", "slack", "exact")
NXN_VARIANTS = ("nxn-scores", "nxn-einsum")
VARIANTS = LAYER_VARIANTS + NXN_VARIANTS


def build_layers(device: torch.device, dtype: torch.dtype, max_positions: int, hidden: int = HIDDEN,
                 heads: int = HEADS, attn_implementation: str = "sdpa"):
    """Real `CocaAttention` layers, one per variant, sharing one set of projections.

    A 1-layer LLaMA model is converted by the project's `convert_to_coca`; every variant (and
    the nxn-* rows, through the slack layer) then runs the same weights. Returns
    ({variant: layer}, the model's LlamaRotaryEmbedding). bench/gpu_check.py asks for other
    shapes and kernels.
    """
    from transformers import LlamaConfig, LlamaModel

    from train.coca import CocaAttention, convert_to_coca

    config = LlamaConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_hidden_layers=1,
        # The MLP and the embedding never run: tiny, so the resident baseline is attention.
        intermediate_size=8,
        vocab_size=8,
        max_position_embeddings=max(max_positions, 4096),
        attn_implementation=attn_implementation,
    )
    model = LlamaModel(config)
    convert_to_coca(model, variant="slack")
    model = model.to(device=device, dtype=dtype).train()
    slack = model.layers[0].self_attn
    layers = {v: slack if v == "slack" else CocaAttention(slack, v) for v in LAYER_VARIANTS}
    return layers, model.rotary_emb


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # The reference code's rotate_half RoPE: dim j pairs with dim j + d/2 (HF layout).
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def einsum_contracts_left_to_right() -> bool:
    """True when a 3-operand torch.einsum will materialise the (B, H, N, N, d) pair product."""
    return not (torch.backends.opt_einsum.is_available() and torch.backends.opt_einsum.enabled)


def reference_nxn_attention(
    attention: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    contraction: str = "einsum",
) -> torch.Tensor:
    """Slack CoCA the way the reference code computes it: the full N x N score matrix.

    hidden (B, N, hidden); cos, sin (B, N, d). contraction="einsum" is the reference's
    3-operand einsum as torch runs it; "scores" multiplies q * RoPE(q) first, which is the
    path opt_einsum picks for the reference code. Returns the layer output (B, N, hidden).
    """
    b, n, _ = hidden.shape
    d = attention.head_dim
    half = d // 2
    shape = (b, n, -1, d)
    q = attention.q_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d)
    t = attention.k_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d); k_proj holds W_t
    v = attention.v_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d)

    c = F.relu((t[..., :half] + t[..., half:]) / 2)  # (B, H, N, d/2)
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, d)
    key = _rope(torch.cat((c, c), dim=-1), cos, sin)  # (B, H, N, d)
    q_rot = _rope(q, cos, sin)  # (B, H, N, d)
    if contraction == "einsum":
        # Left to right, the first pair keeps d for the third operand: (B, H, N, N, d).
        scores = torch.einsum("bhmd,bhnd,bhmd->bhmn", q, key, q_rot)  # (B, H, N, N)
    elif contraction == "scores":
        scores = torch.einsum("bhmd,bhnd->bhmn", q * q_rot, key)  # (B, H, N, N)
    else:
        raise ValueError(f"contraction={contraction!r}: choose einsum or scores")
    scores = scores / math.sqrt(d)

    # Additive mask and a softmax upcast to fp32 (never down), as the reference code does.
    mask = torch.full((n, n), torch.finfo(scores.dtype).min, device=hidden.device, dtype=scores.dtype)
    mask = mask.triu(1)  # (N, N)
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
    probs = F.softmax(scores + mask, dim=-1, dtype=softmax_dtype).to(q.dtype)  # (B, H, N, N)
    out = probs @ v  # (B, H, N, d)
    return attention.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def estimate_peak_bytes(variant: str, n: int, dtype: torch.dtype) -> int:
    """Rough peak of one step above the weights and their gradients, to skip what cannot fit.

    In tensors alive at the peak, as measured on CPU in fp32 (bench/RESULTS.md): the O(N)
    layers hold 9-12 of size (B, N, hidden), counted as 16 here; nxn-scores adds 3 of size
    (B, H, N, N); a left-to-right nxn-einsum adds 3 of size (B, H, N, N, d) (the saved pair
    product and two of its size in the backward).
    """
    elem = torch.finfo(dtype).bits // 8
    linear = 16 * BATCH * n * HIDDEN * elem
    if variant in LAYER_VARIANTS:
        return linear
    # The softmax runs in fp32 whatever the dtype: score-sized tensors count 4 bytes or more.
    square = 3 * BATCH * HEADS * n * n * max(elem, 4)
    if variant == "nxn-einsum" and einsum_contracts_left_to_right():
        square += 3 * BATCH * HEADS * n * n * HEAD_DIM * elem
    return linear + square


@dataclass
class Inputs:
    hidden: torch.Tensor  # (B, N, hidden), requires grad
    grad_out: torch.Tensor  # (B, N, hidden)
    cos: torch.Tensor  # (B, N, d)
    sin: torch.Tensor  # (B, N, d)


def make_inputs(rotary: nn.Module, n: int, device: torch.device, dtype: torch.dtype, width: int = HIDDEN) -> Inputs:
    hidden = torch.randn(BATCH, n, width, device=device, dtype=dtype, requires_grad=True)  # (B, N, hidden)
    grad_out = torch.randn(BATCH, n, width, device=device, dtype=dtype)  # (B, N, hidden)
    positions = torch.arange(n, device=device)[None].expand(BATCH, -1)  # (B, N)
    # The model computes the rotary tables once for all layers: not a per-layer cost.
    with torch.no_grad():
        cos, sin = rotary(hidden, positions)  # (B, N, d) each, from fp32 angles
    return Inputs(hidden, grad_out, cos, sin)


def run_step(variant: str, layers: dict[str, nn.Module], x: Inputs) -> None:
    # A layer inside a stack also sends a gradient to its input: dX counts in the step.
    x.hidden.grad = None
    if variant in LAYER_VARIANTS:
        out, _ = layers[variant](x.hidden, position_embeddings=(x.cos, x.sin), attention_mask=None)
    else:
        contraction = "scores" if variant == "nxn-scores" else "einsum"
        out = reference_nxn_attention(layers["slack"], x.hidden, x.cos, x.sin, contraction)
    out.backward(x.grad_out)  # (B, N, hidden)
