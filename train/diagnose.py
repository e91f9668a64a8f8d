"""Why a forward pass produced non-finite values, when attention is to blame.

A run that meets NaN or inf should say what happened rather than end as "diverged". Two causes
lie in attention itself, with finite inputs: CoCA's prepared queries or keys overflow a half
precision (Q' grows like |q|^2), or the attention kernel returns non-finite values from finite
Q', K', V (torch 2.13's compiled flex attention does so for some sequence lengths on CPUs without
AVX-512). `explain_non_finite` replays one forward, watching every attention layer, and names the
first layer where finite inputs turned non-finite, and why. Anything else (a learning rate that
blew the weights up, say) is not attention's doing: it returns None.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from train.coca import FP16_KEY_SHIFT, CocaAttention, coca_query_key

log = logging.getLogger(__name__)


class NonFinite(RuntimeError):
    """Training, evaluation or generation met non-finite values: a failure (traceback, status 1),
    not bad input, since no setting the user chose explains it; the message says what caused it
    when attention did."""
_FP16_MAX = 65504.0


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _slice_norms(x: torch.Tensor) -> torch.Tensor:
    """|x_j| of every 2-D RoPE slice (dim j paired with j + d/2), in fp32."""
    half = x.shape[-1] // 2
    x = x.float()
    return (x[..., :half].square() + x[..., half:].square()).sqrt()


def _overflow(layer: CocaAttention, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> str | None:
    """What overflowed in the layer's Q'/K' preparation, if anything did."""
    shape = (*hidden.shape[:-1], -1, layer.head_dim)
    query = layer.q_proj(hidden).view(shape).transpose(1, 2)
    t = layer.k_proj(hidden).view(shape).transpose(1, 2)
    if not (_finite(query) and _finite(t)):
        return f"its projections q/t are non-finite in {query.dtype}"
    prepared, key, _ = coca_query_key(query, t, cos, sin, layer.variant, layer.scaling, layer.first_slice)
    if _finite(prepared) and _finite(key):
        return None
    largest_q = _slice_norms(query).max().item()
    largest_c = torch.relu(t[..., :layer.head_dim // 2].float() + t[..., layer.head_dim // 2:].float()).max().item() / 2
    side, value = ("Q'", f"the largest |q_j| is {largest_q:,.0f}") if not _finite(prepared) else (
        "K'", f"the largest key scalar c_j is {largest_c:,.0f}")
    limit = ""
    if query.dtype == torch.float16:
        q_limit = math.sqrt(_FP16_MAX * FP16_KEY_SHIFT / layer.scaling)
        c_limit = _FP16_MAX / FP16_KEY_SHIFT / math.sqrt(2)
        limit = f" (float16 holds |q_j| up to ~{q_limit:,.0f} and c_j up to ~{c_limit:,.0f} here)"
    return f"CoCA's {side} overflows {str(query.dtype).removeprefix('torch.')}: {value}{limit}"


def explain_non_finite(model: nn.Module, inputs: dict[str, torch.Tensor]) -> str | None:
    """One line naming the first attention layer that turned finite inputs into non-finite values
    during `model(**inputs)`, and why; None when every attention layer's output was finite."""
    findings: list[str] = []

    def watch(layer: CocaAttention):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            if findings or not _finite(hidden) or _finite(output[0]):
                return
            cos, sin = kwargs["position_embeddings"]
            cause = _overflow(layer, hidden, cos, sin)
            kernel = layer.config._attn_implementation
            if cause is None:
                cause = (f"the attention kernel ({kernel}) returned non-finite values from finite queries, keys "
                         f"and values: a defect of that kernel on this machine; try model.attn_implementation=sdpa")
            else:
                cause += "; use bf16, whose range is fp32's"
            findings.append(f"attention layer {layer.layer_idx} ({layer.variant}): {cause}")
        return hook

    layers = [m for m in model.modules() if isinstance(m, CocaAttention)]
    handles = [layer.register_forward_hook(watch(layer), with_kwargs=True) for layer in layers]
    # The replay keeps the model's train/eval mode: transformers compiles flex attention once per
    # mode, and the two compiled kernels need not share a defect.
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception as error:  # noqa: BLE001 - a diagnosis must never hide the failure it explains
        log.warning("could not replay the forward to find the non-finite values (%s)", error)
    finally:
        for handle in handles:
            handle.remove()
    return findings[0] if findings else None


def require_finite(values: torch.Tensor, model: nn.Module, inputs: dict[str, torch.Tensor], what: str) -> None:
    """Raise NonFinite if `values`, computed by `model` from `inputs`, are not all finite:
    evaluation and generation stop rather than report NaN or decode from it."""
    if _finite(values):
        return
    cause = explain_non_finite(model, inputs)
    raise NonFinite(f"{what}: non-finite values, caused by {cause}" if cause else
                     f"{what}: non-finite values, not from attention (the weights or inputs are not finite, or "
                     f"another layer overflows {values.dtype})")
