"""What the benchmarks share: LLaMA-architecture shapes and the device's measured matmul rate.

It imports torch alone, so that bench/gpu_check.py's first sections run on a GPU image
without the project's other dependencies.
"""
from __future__ import annotations

import time

import torch

# LLaMA's 32000-token vocabulary, so the head is full size.
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000)  # TinyLlama-1.1B's shape
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000)


def matmul_flops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Dense matmul FLOP/s measured here: the denominator of MFU, so no table of peak numbers."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start)
