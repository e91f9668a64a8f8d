"""`model.t_init=fit`: W_t fitted by least squares so that CoCA's scores match the vanilla parent's.

Per attention layer, key head and 2-D slice j, CoCA's score of query m and key n is linear in the
key's scalar c_n: score_j(m, n) = c_n F_j(m, n), where F_j is what the score would be with c_n = 1
(coca_query_key with t = 1: Q' against K' = RoPE(1, 1) on that slice). The parent scores the same
pair as RoPE_m(q)_j . RoPE_n(k)_j. On calibration sequences run through the parent, every layer fed
the parent's own inputs, the c_n that best reproduces the parent's scores of key n over the queries
that see it (m >= n, all query heads sharing the key head) is c*_n = sum F S / sum F^2, and the
score gap grows as sum F^2 (c_n - c*_n)^2. Since c = relu(mean of the slice's two rows of t), both
rows of W_t for slice j become one ridge regression of c* on the layer's input, each key weighted
by its sum F^2: exactly the score gap, where an unweighted fit let keys that barely touch any
query (tiny F, huge c*) dominate and made the gap hundreds of times worse than W_k's. A layer whose
fit still scores worse than W_k on the calibration text keeps W_k. Slices that stay vanilla
(coca_slices=low_frequency) keep W_k. The fine-tuning that follows then starts from CoCA scores as
close to the parent's as a linear W_t allows.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from train.coca import CocaAttention, coca_query_key

log = logging.getLogger(__name__)
CALIBRATION_SEQUENCES = 16
_RIDGE = 1e-3  # times the mean diagonal of X^T X


@torch.no_grad()
def fit_w_t(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """Refit every CoCA layer's W_t (k_proj, which holds the parent's W_k on entry) on `batches`;
    returns, per layer, the squared gap between CoCA's scores and the parent's, relative to the
    parent's, before the fit (W_t = W_k) and after."""
    layers = [m for m in model.modules() if isinstance(m, CocaAttention)]
    inputs = _parent_inputs(model, layers, batches)
    errors = []
    for layer, (hidden, cos, sin) in zip(layers, inputs):
        errors.append(_fit_layer(layer, hidden, cos, sin))
    return errors


def _parent_inputs(model, layers, batches):
    """Each layer's input hidden states and rotary tables, from forwards of the parent (every layer vanilla)."""
    variants = [layer.variant for layer in layers]
    seen = [[] for _ in layers]

    def keep(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cos, sin = kwargs["position_embeddings"]
            seen[index].append((hidden.float(), cos.float(), sin.float()))
        return hook

    handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for layer in layers:
            layer.variant = "vanilla"
        for batch in batches:
            model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
    finally:
        for handle in handles:
            handle.remove()
        for layer, variant in zip(layers, variants):
            layer.variant = variant
    return [tuple(torch.cat(parts, dim=0) for parts in zip(*per_layer)) for per_layer in seen]


def _fit_layer(layer: CocaAttention, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[float, float]:
    d, half, groups = layer.head_dim, layer.head_dim // 2, layer.num_key_value_groups
    shape = (*hidden.shape[:-1], -1, d)
    weight = layer.k_proj.weight
    q = layer.q_proj(hidden.to(weight.dtype)).float().view(shape).transpose(1, 2)  # (B, H, S, d)
    k = layer.k_proj(hidden.to(weight.dtype)).float().view(shape).transpose(1, 2)  # (B, Hkv, S, d): W_k
    parent_q, parent_k, _ = coca_query_key(q, k, cos, sin, "vanilla", 1.0)
    unit_q, unit_k, _ = coca_query_key(q, torch.ones_like(k), cos, sin, layer.variant, 1.0)  # c = 1
    as_is = unit_k * _scalars(k)  # K' with W_t = W_k, as the conversion starts without the fit
    b, kv_heads, s, _ = k.shape
    fitted = torch.arange(half, device=k.device) >= layer.first_slice  # the CoCA slices
    seen = torch.ones(s, s, dtype=torch.bool, device=k.device).tril()[..., None] & fitted  # (m, n, d/2)
    target = torch.zeros(b, kv_heads, s, half, device=k.device)
    energy = torch.zeros_like(target)  # sum F^2 per key and slice: how much the key's c_n matters
    for i in range(b):  # one sequence and key head at a time: (G, m, n, d/2) tensors
        for g in range(kv_heads):
            heads = slice(g * groups, (g + 1) * groups)
            f = _per_slice(unit_q[i, heads], unit_k[i, g]) * seen
            parent = _per_slice(parent_q[i, heads], parent_k[i, g]) * seen
            energy[i, g] = f.square().sum(dim=(0, 1))
            target[i, g] = (f * parent).sum(dim=(0, 1)) / (energy[i, g] + 1e-12)  # (n, d/2)
    # weighted ridge regression of c* on the layer's input: one row per (key head, slice), both rows of the slice
    x = hidden.reshape(-1, hidden.shape[-1]).double()
    y = target.permute(0, 2, 1, 3).reshape(x.shape[0], kv_heads * half).double()
    weights = energy.permute(0, 2, 1, 3).reshape(x.shape[0], kv_heads * half).double()
    w = torch.zeros(kv_heads * half, x.shape[1], dtype=torch.float64, device=x.device)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    for column in fitted.repeat(kv_heads).nonzero().flatten().tolist():
        weighted = x * weights[:, column, None]
        gram = weighted.T @ x
        gram += _RIDGE * gram.diagonal().mean() * eye
        w[column] = torch.linalg.solve(gram, weighted.T @ y[:, column])
    w = w.to(weight.dtype).view(kv_heads, half, -1)  # (Hkv, d/2, hidden)
    rows = weight.view(kv_heads, 2, half, -1)
    w_k = rows.clone()
    bias = layer.k_proj.bias.clone() if layer.k_proj.bias is not None else None
    for part in range(2):
        rows[:, part, fitted] = w[:, fitted]
    if layer.k_proj.bias is not None:
        layer.k_proj.bias.view(kv_heads, 2, half)[:, :, fitted] = 0
    t = layer.k_proj(hidden.to(weight.dtype)).float().view(shape).transpose(1, 2)
    as_fitted = unit_k * _scalars(t)  # K' with the fitted W_t, relu included
    errors = torch.zeros(3, dtype=torch.float64)  # the parent's scores' energy, the gaps before and after
    for i in range(b):
        for g in range(kv_heads):
            heads = slice(g * groups, (g + 1) * groups)
            parent = _per_slice(parent_q[i, heads], parent_k[i, g]) * seen
            errors += torch.stack([parent.square().sum(),
                                   (_per_slice(unit_q[i, heads], as_is[i, g]) * seen - parent).square().sum(),
                                   (_per_slice(unit_q[i, heads], as_fitted[i, g]) * seen - parent).square().sum()]).double()
    before, after = (errors[1] / errors[0]).item(), (errors[2] / errors[0]).item()
    if not after < before:  # the fit did not help on its own calibration text: W_k stays
        rows.copy_(w_k)
        if bias is not None:
            layer.k_proj.bias.copy_(bias)
        after = before
    return before, after


def _per_slice(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(G, S, d) queries and (S, d) keys -> per-slice products summed over the slice's two
    dimensions, (G, m, n, d/2)."""
    half = key.shape[-1] // 2
    products = torch.einsum("gmd,nd->gmnd", query, key)
    return products[..., :half] + products[..., half:]


def _scalars(k: torch.Tensor) -> torch.Tensor:
    """W_t = W_k as CoCA reads it: c = relu(mean of each slice's two values), doubled back to (.., d)."""
    half = k.shape[-1] // 2
    c = torch.relu((k[..., :half] + k[..., half:]) / 2)
    return torch.cat((c, c), dim=-1)
