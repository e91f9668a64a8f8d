"""The W_t fit's sums over later queries (train/trainer/fit_w_t.py) against the scores themselves."""
import copy

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

from train.coca import CocaAttention, coca_query_key
from train.trainer.fit_w_t import _fit_layer


def _score_gap(layer, hidden, cos, sin, parent_k):
    """sum over heads, queries m >= n and the CoCA slices of (CoCA's score - the parent's)^2, relative
    to the parent's, from every (m, n) score: what the fit reports, computed the slow way."""
    shape = (*hidden.shape[:-1], -1, layer.head_dim)
    q = layer.q_proj(hidden).view(shape).transpose(1, 2)
    t = layer.k_proj(hidden).view(shape).transpose(1, 2)
    groups, half = layer.num_key_value_groups, layer.head_dim // 2
    coca_q, coca_k, _ = coca_query_key(q, t, cos, sin, layer.variant, 1.0)
    vanilla_q, vanilla_k, _ = coca_query_key(q, parent_k, cos, sin, "vanilla", 1.0)

    def per_slice(queries, keys):  # (B, H, m, d), (B, Hkv, n, d) -> (B, H, m, n, d/2)
        products = torch.einsum("bhmd,bhnd->bhmnd", queries, keys.repeat_interleave(groups, dim=1))
        return products[..., :half] + products[..., half:]

    later = torch.ones(hidden.shape[1], hidden.shape[1], dtype=torch.bool).tril()[..., None]
    fitted = torch.arange(half) >= layer.first_slice
    parent = per_slice(vanilla_q, vanilla_k) * later * fitted
    coca = per_slice(coca_q, coca_k) * later * fitted
    return ((coca - parent).square().sum() / parent.square().sum()).item()


@pytest.mark.parametrize("variant, first_slice", [("slack", 0), ("slack", 5), ("exact", 3)])
@torch.no_grad()
def test_the_fit_reports_the_score_gap_of_every_query_key_pair_and_narrows_it(variant, first_slice):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         intermediate_size=64, num_hidden_layers=1)
    layer = CocaAttention(LlamaAttention(config, 0), variant, first_slice)
    hidden = torch.randn(3, 40, 64)
    cos, sin = LlamaRotaryEmbedding(config)(hidden, torch.arange(40)[None].expand(3, -1))
    parent_k = layer.k_proj(hidden).view(3, 40, -1, 16).transpose(1, 2)
    unfitted = copy.deepcopy(layer)
    before, after = _fit_layer(layer, hidden, cos, sin)
    assert before == pytest.approx(_score_gap(unfitted, hidden, cos, sin, parent_k), rel=1e-5)
    assert after == pytest.approx(_score_gap(layer, hidden, cos, sin, parent_k), rel=1e-5)
    assert after < 0.9 * before
    vanilla = torch.arange(32) % 16 % 8 < first_slice  # k_proj rows of 2 KV heads, slice j = row mod 8
    assert torch.equal(layer.k_proj.weight[vanilla], unfitted.k_proj.weight[vanilla])
