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

Every sum above runs over the queries m >= n of a key n, and a slice's scores are products of
2-vectors, so each is a quadratic form of the key's slice with a 2x2 matrix: the sum, over the
group's heads and the later queries, of the outer products of their slices. A reverse cumulative
sum gives those matrices for every key at once, so the fit costs O(S) per sequence, not the
O(S^2) of forming every score (which took SmolLM2 half an hour on two CPU cores).

Every rank fits on the same calibration text and keeps rank 0's W_t. Under ZeRO-3 a rank holds a
shard of each weight: a layer's weights are gathered whole for its fit, and rank 0's written back
into every shard (DeepSpeed's GatheredParameters); the projections are applied with F.linear, not
the modules, so ZeRO-3's forward hooks do not release a weight mid-fit.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn
from torch.nn import functional

from train.coca import CocaAttention, coca_query_key, gathered

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
    for layer, inputs_of_layer in zip(layers, inputs):
        device = layer.o_proj.weight.device
        with _rank0_weights(layer):
            errors.append(_fit_layer(layer, *(x.to(device) for x in inputs_of_layer)))
    return errors


@contextlib.contextmanager
def _rank0_weights(layer: CocaAttention):
    """The layer's whole weights inside; on leaving, every rank holds rank 0's."""
    with gathered(list(layer.parameters())):
        yield
    # Under ZeRO-3 the gather has already shared rank 0's values; otherwise every rank holds its own fit.
    if torch.distributed.is_initialized() and not hasattr(layer.k_proj.weight, "ds_id"):
        for tensor in (layer.k_proj.weight, layer.k_proj.bias):
            if tensor is not None:
                torch.distributed.broadcast(tensor.data, src=0)


def _project(linear: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    return functional.linear(hidden.to(linear.weight.dtype), linear.weight, linear.bias).float()


def _parent_inputs(model, layers, batches):
    """Each layer's input hidden states and rotary tables, from forwards of the parent (every layer vanilla)."""
    variants = [layer.variant for layer in layers]
    seen = [[] for _ in layers]

    def keep(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cos, sin = kwargs["position_embeddings"]
            # In host memory until the layer's turn: every layer's inputs at once would be 17 GB of
            # accelerator memory for LLaMA-7B at 2,048 tokens.
            seen[index].append(tuple(x.float().cpu() for x in (hidden, cos, sin)))
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
    q = _project(layer.q_proj, hidden).view(shape).transpose(1, 2)  # (B, H, S, d)
    k = _project(layer.k_proj, hidden).view(shape).transpose(1, 2)  # (B, Hkv, S, d): W_k
    parent_q, parent_k, _ = coca_query_key(q, k, cos, sin, "vanilla", 1.0)
    unit_q, unit_k, _ = coca_query_key(q, torch.ones_like(k), cos, sin, layer.variant, 1.0)  # c = 1
    kv_heads = k.shape[1]
    fitted = torch.arange(half, device=k.device) >= layer.first_slice  # the CoCA slices
    # (B, Hkv, S, d/2, 2, 2) for every key n: sums over its group's heads and the queries m >= n
    unit_unit, unit_parent, parent_parent = (_later_queries(a, b, groups) for a, b in
                                             ((unit_q, unit_q), (unit_q, parent_q), (parent_q, parent_q)))
    unit_key, parent_key = _slices(unit_k), _slices(parent_k)
    energy = _form(unit_key, unit_unit, unit_key) * fitted  # sum F^2 per key and slice: how much c_n matters
    target = _form(unit_key, unit_parent, parent_key) / (energy + 1e-12)  # c*_n, (B, Hkv, S, d/2)
    # weighted ridge regression of c* on the layer's input: one row per (key head, slice), both rows of the slice
    x = hidden.reshape(-1, hidden.shape[-1]).double()
    y = target.permute(0, 2, 1, 3).reshape(x.shape[0], kv_heads * half)
    weights = energy.permute(0, 2, 1, 3).reshape(x.shape[0], kv_heads * half)
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
    t = _project(layer.k_proj, hidden).view(shape).transpose(1, 2)

    def gap(key: torch.Tensor) -> torch.Tensor:
        """sum over keys, fitted slices and their later queries of (CoCA's score - the parent's)^2"""
        key = _slices(key)
        squares = (_form(key, unit_unit, key) - 2 * _form(key, unit_parent, parent_key)
                   + _form(parent_key, parent_parent, parent_key))
        return squares[..., fitted].sum()

    energy_parent = _form(parent_key, parent_parent, parent_key)[..., fitted].sum()
    before = (gap(unit_k * _scalars(k)) / energy_parent).item()  # W_t = W_k, as the conversion starts without the fit
    after = (gap(unit_k * _scalars(t)) / energy_parent).item()  # the fitted W_t, relu included
    if not after < before:  # the fit did not help on its own calibration text: W_k stays
        rows.copy_(w_k)
        if bias is not None:
            layer.k_proj.bias.copy_(bias)
        after = before
    return before, after


def _slices(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d/2, 2): slice j holds dimensions j and j + d/2, as RoPE pairs them; float64."""
    half = x.shape[-1] // 2
    return torch.stack((x[..., :half], x[..., half:]), dim=-1).double()


def _later_queries(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H, S, d) queries a, b -> (B, Hkv, S, d/2, 2, 2): for key n, the sum over the key head's
    `groups` query heads and the queries m >= n of the outer product of a's and b's slices."""
    outer = torch.einsum("bhmjx,bhmjy->bhmjxy", _slices(a), _slices(b))
    batch, heads, *rest = outer.shape
    outer = outer.view(batch, heads // groups, groups, *rest).sum(dim=2)
    return outer.flip(2).cumsum(dim=2).flip(2)


def _form(x: torch.Tensor, matrix: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x_n^T M_n y_n per key n and slice: (B, Hkv, S, d/2)."""
    return torch.einsum("bgnjx,bgnjxy,bgnjy->bgnj", x, matrix, y)


def _scalars(k: torch.Tensor) -> torch.Tensor:
    """W_t = W_k as CoCA reads it: c = relu(mean of each slice's two values), doubled back to (.., d)."""
    half = k.shape[-1] // 2
    c = torch.relu((k[..., :half] + k[..., half:]) / 2)
    return torch.cat((c, c), dim=-1)
