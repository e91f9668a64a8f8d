"""Half-precision error of CoCA's attention against float64, vanilla RoPE beside it as the yardstick.

Queries and keys (before RoPE; for CoCA, t = x W_t with W_t initialised from W_k) are drawn like
a trained LLaMA layer's: unit-variance channels plus a few outlier channels of fixed sign and
large magnitude, the channel-wise outliers that key-cache quantisation studies (KIVI, KVQuant)
plot for LLaMA-2, in the tens. `--magnitudes` sweeps the outliers' size far past that.

For each dtype, length N, magnitude and variant, the prepared Q'/K' are what `coca_query_key`
returns for inputs and rotary tables in that dtype (transformers' LlamaRotaryEmbedding makes
the tables, as the model does); the reference is the same computation in float64 with float64
tables. The last `--queries` positions attend to all N keys (the longest distances), through
transformers' sdpa and eager attention functions, and the table reports:
  logit err   ||L - L64|| / ||L64||: the prepared Q'/K' multiplied exactly (float64), so it is
              the error of the preparation itself, whatever a kernel then accumulates in
  out err     ||O - O64|| / ||O64|| of the sdpa attention output, computed in the dtype
  max |logit| the float64 logits' largest magnitude (fp16 holds 65504)
  finite      sdpa / eager outputs free of inf and NaN (eager keeps the logits in the dtype)

    python bench/precision.py                                   # bf16 and fp16, 1K-8K, all magnitudes
    python bench/precision.py --lengths 1024 --magnitudes 1,16 --dtypes bf16
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.coca import VARIANTS, coca_query_key  # noqa: E402

HEAD_DIM = 128  # LLaMA's
HEADS, KV_HEADS = 8, 2  # grouped-query attention, as in LLaMA-2-70B, Mistral and TinyLlama
# Outlier channels: one high- and one low-frequency RoPE pair, both halves of each pair.
OUTLIER_CHANNELS = (5, 5 + HEAD_DIM // 2, 60, 60 + HEAD_DIM // 2)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Row:
    dtype: str
    length: int
    magnitude: float
    variant: str
    logit_error: float
    output_error: float
    max_logit: float
    sdpa_finite: bool
    eager_finite: bool


def draw(length: int, heads: int, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """(1, heads, length, HEAD_DIM) float64 projections with outlier channels of this magnitude."""
    x = torch.randn(1, heads, length, HEAD_DIM, generator=generator, dtype=torch.float64)
    sign = torch.where(torch.rand(heads, 1, len(OUTLIER_CHANNELS), generator=generator, dtype=torch.float64) < 0.5,
                       -1.0, 1.0)
    # Outlier channels hold their sign across tokens and vary by 25% around the magnitude.
    x[..., list(OUTLIER_CHANNELS)] = sign * magnitude * (1 + 0.25 * x[..., list(OUTLIER_CHANNELS)])
    return x


def rotary_tables(length: int, dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (1, length, HEAD_DIM) as a LLaMA model hands them to its layers in `dtype`."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=HEAD_DIM * HEADS, num_attention_heads=HEADS, max_position_embeddings=length)
    rotary = LlamaRotaryEmbedding(config).to(device)
    positions = torch.arange(length, device=device).unsqueeze(0)
    if dtype != torch.float64:
        return rotary(torch.empty(0, dtype=dtype, device=device), positions)
    angles = positions[..., None].double() * rotary.inv_freq.double()
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class _Layer(nn.Module):
    """What transformers' attention functions read from the layer calling them."""

    num_key_value_groups = HEADS // KV_HEADS
    is_causal = False  # the explicit mask below says which keys each query sees


def attend(kernel: str, query, key, value, mask, scaling):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    layer = _Layer().eval()
    function = eager_attention_forward if kernel == "eager" else ALL_ATTENTION_FUNCTIONS[kernel]
    return function(layer, query, key, value, mask, dropout=0.0, scaling=scaling)[0]


def logits(query, key, scaling) -> torch.Tensor:
    key = key.double().repeat_interleave(HEADS // KV_HEADS, dim=1)
    return query.double() @ key.transpose(-1, -2) * scaling


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def measure(dtype_name: str, length: int, magnitude: float, queries: int, seed: int = 0,
            device: str = "cpu") -> list[Row]:
    """One row per variant, all on the same draws (made on the CPU, so equal on any device)."""
    generator = torch.Generator().manual_seed(seed)
    q, t = draw(length, HEADS, magnitude, generator), draw(length, KV_HEADS, magnitude, generator)
    v = torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator, dtype=torch.float64)
    q, t, v = q.to(device), t.to(device), v.to(device)
    dtype = DTYPES[dtype_name]
    scaling = HEAD_DIM**-0.5
    tables = {d: rotary_tables(length, d, device) for d in (dtype, torch.float64)}
    first = length - queries
    visible = torch.arange(length, device=device) <= torch.arange(first, length, device=device)[:, None]  # causal
    masks = {d: torch.zeros(visible.shape, dtype=d, device=device).masked_fill(~visible, torch.finfo(d).min)[None, None]
             for d in (dtype, torch.float64)}
    rows = []
    for variant in VARIANTS:
        ref_q, ref_k, ref_scale = coca_query_key(q, t, *tables[torch.float64], variant, scaling)
        ref_logits = logits(ref_q[..., first:, :], ref_k, ref_scale)
        ref_out = attend("sdpa", ref_q[..., first:, :], ref_k, v, masks[torch.float64], ref_scale)
        with torch.no_grad():
            low_q, low_k, low_scale = coca_query_key(q.to(dtype), t.to(dtype), *tables[dtype], variant, scaling)
            low_q = low_q[..., first:, :]
            sdpa = attend("sdpa", low_q, low_k, v.to(dtype), masks[dtype], low_scale)
            eager = attend("eager", low_q, low_k, v.to(dtype), masks[dtype], low_scale)
        rows.append(Row(dtype_name, length, magnitude, variant,
                        logit_error=relative_error(logits(low_q, low_k, low_scale), ref_logits),
                        output_error=relative_error(sdpa, ref_out),
                        max_logit=ref_logits.abs().max().item(),
                        sdpa_finite=bool(sdpa.isfinite().all()), eager_finite=bool(eager.isfinite().all())))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| dtype | N | outlier | variant | logit err | vs vanilla | out err | vs vanilla | max abs logit "
             "| finite (sdpa/eager) |", "|---|---|---|---|---|---|---|---|---|---|"]
    vanilla = {(r.dtype, r.length, r.magnitude): r for r in rows if r.variant == "vanilla"}
    for r in rows:
        base = vanilla[(r.dtype, r.length, r.magnitude)]
        finite = "/".join("yes" if ok else "**no**" for ok in (r.sdpa_finite, r.eager_finite))
        lines.append(f"| {r.dtype} | {r.length} | {r.magnitude:g} | {r.variant} | {r.logit_error:.2e} "
                     f"| {r.logit_error / base.logit_error:.2f}x | {r.output_error:.2e} "
                     f"| {r.output_error / base.output_error:.2f}x | {r.max_logit:.3g} | {finite} |")
    return "\n".join(lines)


def numbers(text: str, kind=int) -> list:
    try:
        return [kind(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="bf16,fp16", help=f"from {', '.join(DTYPES)}")
    parser.add_argument("--lengths", type=numbers, default=[1024, 4096, 8192])
    parser.add_argument("--magnitudes", type=lambda s: numbers(s, float), default=[1, 4, 16, 32, 64, 128, 256])
    parser.add_argument("--queries", type=int, default=128, help="last positions whose attention is compared")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    for name in dtypes:
        if name not in DTYPES:
            parser.error(f"--dtypes: {name!r} is not one of {', '.join(DTYPES)}")
    if args.queries < 1:
        parser.error(f"--queries={args.queries} must be >= 1")
    if min(args.lengths) < args.queries:
        parser.error(f"--lengths must be at least --queries={args.queries}")
    rows = [row for name in dtypes for length in args.lengths for magnitude in args.magnitudes
            for row in measure(name, length, magnitude, args.queries)]
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{HEADS} heads / {KV_HEADS} kv heads x {HEAD_DIM}, outlier channels {OUTLIER_CHANNELS}, "
          f"last {args.queries} queries\n")
    print(table(rows))


if __name__ == "__main__":
    main()
