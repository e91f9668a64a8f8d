"""On paper: what Ulysses sequence parallelism should reach on many GPUs, from a measured one-GPU figure.

Per layer and training step, Ulysses runs all-to-alls around the attention kernel: Q, K and V
into head-sharded form and the output back, in the forward, the same four for the gradients,
and four more for the forward recomputed under gradient checkpointing. Each moves the rank's
seq_len / sp tokens of those tensors, of which (sp - 1) / sp leave the GPU: per token and GPU
the volume does not grow with sp. ZeRO-3 adds, per step and GPU, the parameters gathered three
times (forward, recomputation, backward) and the gradients reduce-scattered once, spread over
the step's tokens on that GPU (micro_batch x seq_len / sp).

Compute per token grows with seq_len through attention only (train.trainer.metrics.flops_per_token), so
the measured time per token at one length scales to another by the FLOP ratio. Communication is
counted as not overlapped with compute (DeepSpeed's Ulysses runs its all-to-alls in sequence):

    tokens/s per GPU = 1 / (t_measured * F(seq_len) / F(measured_seq_len) + bytes_per_token / bandwidth)

Every input is explicit: the measured one-GPU tokens/s (bench/throughput.py, same model and
settings) and the all-to-all bandwidth per GPU of each layout (measure it: nccl-tests'
alltoall_perf, "busbw"). A layout is sp x dp GPUs; sp must divide the key-value heads.

    python bench/ulysses.py --shape 7b --measured-tokens-per-s 3000 --measured-seq-len 32768 \\
        --seq-len 262144 --layouts 8x1 32x2 --bandwidth-gbs 150 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import LLAMA_1B, LLAMA_7B  # noqa: E402
from train.trainer.metrics import flops_per_token  # noqa: E402

SHAPES = {"1b": LlamaConfig(**LLAMA_1B), "7b": LlamaConfig(**LLAMA_7B)}


def num_params(config: LlamaConfig) -> int:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config).num_parameters()


def all_to_all_bytes_per_token(config: LlamaConfig, sp: int, dtype_bytes: int = 2) -> float:
    """Bytes of Ulysses all-to-all that leave each GPU per token of its slice, per step, all layers."""
    head_dim = config.hidden_size // config.num_attention_heads
    q_and_out = 2 * config.num_attention_heads * head_dim
    k_and_v = 2 * config.num_key_value_heads * head_dim
    passes = 3  # forward, recomputed forward (gradient checkpointing), backward
    return passes * (q_and_out + k_and_v) * dtype_bytes * config.num_hidden_layers * (sp - 1) / sp


def zero3_bytes_per_token(params: int, sp: int, dp: int, seq_len: int, micro_batch: int, dtype_bytes: int = 2
                          ) -> float:
    """ZeRO-3's parameter all-gathers (3 per step) and gradient reduce-scatter, per token on a GPU."""
    world = sp * dp
    per_step = 4 * dtype_bytes * params * (world - 1) / world
    return per_step / (micro_batch * seq_len / sp)


def projected_tokens_per_s(shape: str, measured: float, measured_seq_len: int, seq_len: int, sp: int, dp: int,
                           bandwidth: float, micro_batch: int = 1) -> float:
    """Tokens/s per GPU; bandwidth in bytes/s per GPU."""
    config = SHAPES[shape]
    params = num_params(config)
    compute = flops_per_token(config, params, seq_len) / flops_per_token(config, params, measured_seq_len) / measured
    traffic = all_to_all_bytes_per_token(config, sp) + zero3_bytes_per_token(params, sp, dp, seq_len, micro_batch)
    return 1 / (compute + traffic / bandwidth)


def layout(text: str) -> tuple[int, int]:
    sp, _, dp = text.partition("x")
    if not (sp.isdigit() and dp.isdigit()) or int(sp) < 1 or int(dp) < 1:
        raise argparse.ArgumentTypeError(f"layout {text!r} is not SPxDP, e.g. 8x1")
    return int(sp), int(dp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--measured-tokens-per-s", type=float, required=True, help="one GPU, bench/throughput.py")
    parser.add_argument("--measured-seq-len", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True, help="the sequence length to project to")
    parser.add_argument("--layouts", type=layout, nargs="+", default=[(8, 1), (32, 2)], help="SPxDP GPUs")
    parser.add_argument("--bandwidth-gbs", type=float, nargs="+", required=True,
                        help="measured all-to-all bandwidth per GPU in GB/s, one per layout")
    args = parser.parse_args()
    if len(args.bandwidth_gbs) != len(args.layouts):
        parser.error(f"--bandwidth-gbs has {len(args.bandwidth_gbs)} values for {len(args.layouts)} layouts")
    config = SHAPES[args.shape]
    for sp, _ in args.layouts:
        if config.num_key_value_heads % sp or args.seq_len % sp:
            parser.error(f"sp={sp} must divide the {config.num_key_value_heads} key-value heads and --seq-len")
    print("| GPUs (sp x dp) | seq_len | MB per token per GPU (all-to-all + ZeRO-3) | GB/s | tokens/s per GPU "
          "| tokens/s in all |\n|---|---|---|---|---|---|")
    for (sp, dp), bandwidth in zip(args.layouts, args.bandwidth_gbs):
        per_gpu = projected_tokens_per_s(args.shape, args.measured_tokens_per_s, args.measured_seq_len,
                                         args.seq_len, sp, dp, bandwidth * 1e9)
        a2a = all_to_all_bytes_per_token(config, sp) / 1e6
        zero = zero3_bytes_per_token(num_params(config), sp, dp, args.seq_len, 1) / 1e6
        print(f"| {sp * dp} ({sp} x {dp}) | {args.seq_len} | {a2a:.2f} + {zero:.2f} | {bandwidth:g} "
              f"| {per_gpu:,.0f} | {sp * dp * per_gpu:,.0f} |")


if __name__ == "__main__":
    main()
