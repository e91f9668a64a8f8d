"""CoCA (Collinear Constrained Attention) for LLaMA-family models in transformers.

CoCA replaces the key projection W_k by a projection W_t whose output, per 2-D RoPE slice,
is one non-negative scalar, so that every key slice is collinear with its query slice.
Both variants reduce to ordinary attention on prepared queries and keys (../shared/COCA.md):

    c  = relu((t[:d/2] + t[d/2:]) / 2)        t' = cat(c, c)        K' = RoPE(t')
    slack:  Q' = q * RoPE(q)
    exact:  Q' = RoPE(u),  u = cat(a, a),  a = (q[:d/2]^2 + q[d/2:]^2) / 2

so `CocaAttention` computes Q'/K' and then calls whichever kernel transformers' attention
interface selects (eager, sdpa, flash, flex), in O(N) memory, with K' in the KV cache.

W_t keeps the checkpoint name `k_proj`: a vanilla checkpoint and a CoCA checkpoint have the
same keys, so both load through `from_pretrained` (sharded, ZeRO-3 partitioned) with no
missing or unexpected keys. What tells them apart is `config.coca_variant`, which
`train.model.load_pretrained` and `train.inference.load.load_model` read to convert the model they load.

This file imports only torch and transformers: `python -m train.export` ships it verbatim beside
the weights (with modeling_coca_llama.py), so that `trust_remote_code=True` runs this very code.
"""
from __future__ import annotations

import contextlib
import math
import sys
from typing import Callable

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

# Attention as LLaMA's: separate q/k/v/o projections, half-split RoPE, no q/k norms (not Qwen3, Gemma,
# Phi-3). coca_llama is an exported CoCA LLaMA (modeling_coca_llama.py).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "coca_llama")
CONFIG_KEY = "coca_variant"
# Which 2-D slices carry the collinear constraint: "all" (the paper's), or "low_frequency": only
# those whose RoPE wavelength exceeds the length the model was trained at; the others stay
# vanilla RoPE. The first CoCA slice is fixed when a model is converted, and recorded.
SLICES_KEY, FIRST_SLICE_KEY = "coca_slices", "coca_first_slice"
# conf/schema.py holds the same tuples for the config checks (tests/test_hub.py keeps them equal):
# this file cannot import the project's conf package, since exports ship it alone.
VARIANTS = ("vanilla", "slack", "exact")
T_INITS = ("k_proj", "random")
SLICES = ("all", "low_frequency")
# In fp16, the factor moved from CoCA's Q' to its K' (see coca_query_key): a power of two, so exact.
FP16_KEY_SHIFT = 2.0**4
# The oldest transformers this file works with (as pyproject.toml). 4.x passed the KV cache to attention
# as `past_key_value`, which this layer would miss: cached generation would attend to the newest token alone.
MIN_TRANSFORMERS = (5, 17)


def check_transformers(version: str) -> None:
    found = tuple(int(part) for part in version.split(".")[:2])
    if found < MIN_TRANSFORMERS:
        oldest = ".".join(map(str, MIN_TRANSFORMERS))
        raise ImportError(f"CoCA's attention (coca.py) needs transformers >= {oldest}, found {version}: older "
                          f"releases hand the KV cache to attention under another name; pip install "
                          f"'transformers>={oldest}'")


check_transformers(transformers.__version__)


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """conf.checks.check_choice's message, for the same reason as VARIANTS."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # HF layout: dim j is paired with dim j + d/2.
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rope_of_doubled(s: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE(cat(s, s)) for s (B, H, S, d/2): rotating the pair (s_j, s_j) by angle a gives
    (s_j (cos a - sin a), s_j (cos a + sin a)), one product with a table shared by all heads."""
    half = s.shape[-1]
    table = torch.cat((cos[..., :half] - sin[..., :half], cos[..., half:] + sin[..., half:]), dim=-1)
    return (s.unsqueeze(-2) * table.unflatten(-1, (2, half))).flatten(-2)  # (B, H, S, d)


def coca_query_key(
    query: torch.Tensor, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, variant: str, scaling: float,
    first_slice: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Queries and keys whose plain dot product, times the returned factor, is the logit of `variant`.

    query (B, H, S, d), t (B, Hkv, S, d): projections before RoPE, in the model's dtype.
    cos, sin (B, S, d): the model's rotary tables (any rope scaling is already in them).
    scaling: the layer's softmax scale. first_slice: slices below it (the high frequencies) stay
    vanilla RoPE, with `t` acting there as the key. Returns Q' (B, H, S, d), K' (B, Hkv, S, d),
    both in query's dtype, and the scale the kernel applies.

    Vanilla is RoPE as transformers computes it. CoCA's Q' grows like |q|^2, its logits like
    |q|^2 |k|, so in half precision it is prepared in fp32 and `scaling` is folded into Q' before
    the one rounding back, so that slack's Q' carries one rounding instead of four. In fp16, whose
    range ends at 65504, Q' also gives a factor FP16_KEY_SHIFT to K' (a power of two: the product,
    hence every logit, is unchanged bit for bit): it then holds |q_j| up to ~2,900 at head_dim 64
    (~3,400 at 128) and key scalars c_j up to ~2,900, where Q' alone overflowed at |q_j| ~ 724
    (~860): bench/precision.py measures the errors, train/diagnose.py names a layer that overflows.
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    if variant == "vanilla":
        return _rope(query, cos, sin), _rope(t, cos, sin), scaling
    dtype = query.dtype
    shift = FP16_KEY_SHIFT if dtype == torch.float16 else 1.0
    query, t, cos, sin = (x.to(torch.promote_types(x.dtype, torch.float32)) for x in (query, t, cos, sin))
    half = t.shape[-1] // 2
    # The means' halving, relu(x) / 2 == relu(x / 2), moves into the (head-free) tables.
    cos_half, sin_half = cos / 2, sin / 2
    c2 = F.relu(t[..., :half] + t[..., half:])  # (B, Hkv, S, d/2): twice the scalar per 2-D slice
    key = _rope_of_doubled(c2, cos_half * shift, sin_half * shift)
    q_scale = scaling / shift
    if variant == "slack":
        # q * RoPE(q) = q^2 cos + cat(-q1 q2, q1 q2) sin: autograd keeps q alone, not RoPE(q) too.
        p = query[..., :half] * query[..., half:]
        prepared = query.square() * (cos * q_scale) + torch.cat((-p, p), dim=-1) * (sin * q_scale)
    else:
        a2 = query[..., :half].square() + query[..., half:].square()  # |q_j|^2 = 2a, halved by the tables
        prepared = _rope_of_doubled(a2, cos_half * q_scale, sin_half * q_scale)
    if first_slice > 0:
        # Slices below first_slice score as vanilla RoPE: the same per-dimension products, so the two
        # parts concatenate into one ordinary attention (dim j pairs with j + d/2).
        vanilla = (torch.arange(2 * half, device=query.device) % half) < first_slice
        prepared = torch.where(vanilla, _rope(query, cos, sin) * q_scale, prepared)
        key = torch.where(vanilla, _rope(t, cos, sin) * shift, key)
    return prepared.to(dtype), key.to(dtype), 1.0


class CocaAttention(nn.Module):
    """A LLaMA-style attention layer running CoCA (or vanilla) on transformers' kernels.

    It takes over the projections of the layer it replaces under the same names, so the
    state dict is unchanged; `k_proj` holds W_t.
    """

    def __init__(self, attention: nn.Module, variant: str, first_slice: int = 0):
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        self.variant = variant
        self.first_slice = first_slice  # slices below it stay vanilla RoPE (coca_slices=low_frequency)
        self.config = attention.config
        self.layer_idx = attention.layer_idx
        self.head_dim = attention.head_dim
        self.num_key_value_groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        self.attention_dropout = attention.attention_dropout
        self.is_causal = True
        # Mistral and Qwen2 layers carry a sliding window for the kernel; LLaMA has none.
        self.sliding_window = getattr(attention, "sliding_window", None)
        self.q_proj = attention.q_proj
        self.k_proj = attention.k_proj
        self.v_proj = attention.v_proj
        self.o_proj = attention.o_proj

    def extra_repr(self) -> str:
        return f"variant={self.variant}" + (f", first_slice={self.first_slice}" if self.first_slice else "")

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # transformers renamed the decoder's `past_key_values` argument to `cache` in 5.2x.
        cache = kwargs.pop("cache", None)
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, S, d)
        t = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, S, d)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, S, d)

        cos, sin = position_embeddings
        query, key, scaling = coca_query_key(query, t, cos, sin, self.variant, self.scaling, self.first_slice)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if self.sliding_window is not None:
            kwargs["sliding_window"] = self.sliding_window
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


def _attention_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(decoder layer, its attention) for every layer, after checking the layout is LLaMA's."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type={model_type!r} is not supported by CoCA; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (LLaMA-style attention)"
        )
    layers = [(m, m.self_attn) for m in model.modules() if hasattr(m, "self_attn")]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no `self_attn` layers to convert to CoCA")
    for _, attention in layers:
        missing = [p for p in ("q_proj", "k_proj", "v_proj", "o_proj") if not hasattr(attention, p)]
        if missing:
            raise ValueError(
                f"{type(attention).__name__} lacks {', '.join(missing)}: CoCA needs separate "
                "q_proj/k_proj/v_proj/o_proj projections"
            )
        if attention.head_dim % 2:
            raise ValueError(f"head_dim={attention.head_dim} is odd; RoPE and CoCA need an even head_dim")
    return layers


@torch.no_grad()
def _reinitialise(linear: nn.Linear, std: float, head_dim: int, first_slice: int) -> None:
    """Draw W_t afresh, but for the rows of slices below first_slice, which stay W_k."""
    params = [p for p in (linear.weight, linear.bias) if p is not None]
    with gathered(params):
        rows = (torch.arange(linear.weight.shape[0], device=linear.weight.device) % head_dim) % (head_dim // 2)
        coca_rows = rows >= first_slice
        fresh = torch.empty_like(linear.weight).normal_(mean=0.0, std=std)
        linear.weight[coca_rows] = fresh[coca_rows]
        if linear.bias is not None:
            linear.bias[coca_rows] = 0


def first_coca_slice(config) -> int:
    """The first 2-D slice j whose RoPE wavelength 2 pi / theta_j exceeds the length the model was
    trained at (rope_parameters' original_max_position_embeddings, else max_position_embeddings):
    slices from j on never turn once within that length; those below have met every angle."""
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    trained = rope.get("original_max_position_embeddings") or config.max_position_embeddings
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    half = head_dim // 2
    return next((j for j in range(half) if 2 * math.pi * theta ** (2 * j / head_dim) > trained), half)


def gathered(params: list[nn.Parameter]):
    """Whole parameters to modify: ZeRO-3 partitions them, and rank 0's new values are shared."""
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    # DeepSpeed made these parameters, so it is imported. No import statement here: transformers
    # refuses shipped code whose imports (even inside functions) are not installed.
    return sys.modules["deepspeed"].zero.GatheredParameters(params, modifier_rank=0)


def convert_to_coca(model: nn.Module, variant: str = "slack", t_init: str = "k_proj",
                    slices: str | None = None) -> nn.Module:
    """Swap every attention layer of a loaded LLaMA-family model for CoCA, in place.

    variant: "vanilla" (RoPE attention, for comparisons), "slack" (the paper's results) or
        "exact" (the collinear constraint itself).
    t_init: "k_proj" starts W_t from the pretrained W_k; "random" re-initialises it with the
        model's initializer_range, as the reference code does.
    slices: "all" (the paper's) or "low_frequency" (CoCA only on the slices whose wavelength
        exceeds the length the model was trained at; first_coca_slice). None: what the model's
        config records (`coca_slices`), else "all". The cut is computed once and recorded in the
        config (`coca_first_slice`), so that a saved model keeps it whatever its length later.
    A model converted before is switched to the new variant. Returns the model.
    """
    check_choice("variant", variant, VARIANTS)
    check_choice("t_init", t_init, T_INITS)
    config, recorded = model.config, getattr(model.config, SLICES_KEY, None)
    slices = slices or recorded or "all"
    check_choice("slices", slices, SLICES)
    first = 0
    if slices == "low_frequency" and variant != "vanilla":
        kept = getattr(config, FIRST_SLICE_KEY, None)
        first = kept if recorded == slices and kept is not None else first_coca_slice(config)
    for layer, attention in _attention_layers(model):
        if isinstance(attention, CocaAttention):
            attention.variant, attention.first_slice = variant, first
        else:
            layer.self_attn = CocaAttention(attention, variant, first)
        if t_init == "random":
            _reinitialise(layer.self_attn.k_proj, config.initializer_range, layer.self_attn.head_dim, first)
    setattr(config, CONFIG_KEY, variant)
    if variant != "vanilla":
        setattr(config, SLICES_KEY, slices)
        setattr(config, FIRST_SLICE_KEY, first)
    return model
