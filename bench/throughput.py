"""Trainer throughput: tokens/s and MFU of `python -m train.finetune`, vanilla vs CoCA, in one run.

Each variant trains for --steps steps in a subprocess (the real trainer, DeepSpeed included);
tokens/s is the median of the logged steps after --warmup. MFU divides the model FLOPs
(train.metrics.flops_per_token: 6N plus attention at seq_len) by the dense matmul rate
measured on the same device in the same run, so it needs no table of peak numbers.

    python bench/throughput.py                                  # the tiny default on this machine
    python bench/throughput.py --seq-len 2048 -- model.arch.hidden_size=512 model.arch.num_hidden_layers=8
Extra Hydra overrides go after `--`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.metrics import flops_per_token  # noqa: E402


def matmul_flops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
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


def train_variant(variant: str, args, overrides: list[str], run_dir: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "train.finetune", f"run_dir={run_dir}", f"model.attention={variant}",
           f"trainer.max_steps={args.steps}", f"trainer.save_every={args.steps}", f"trainer.eval_every={args.steps}",
           "trainer.log_every=1", "logger.mode=disabled", f"data.seq_len={args.seq_len}", *overrides]
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "WANDB_SILENT": "true"})
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "tokens_per_s" in r]


def model_flops_per_token(run_dir: Path, seq_len: int) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint = max((run_dir / "checkpoints").glob("step-*"))
    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        params = AutoModelForCausalLM.from_config(config).num_parameters()
    return flops_per_token(config, params, seq_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["vanilla", "slack", "exact"])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every variant (after --)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = matmul_flops(device, dtype)
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, measured {dtype} matmul rate "
          f"{peak / 1e12:.3f} TFLOP/s; seq_len {args.seq_len}; overrides: {' '.join(args.overrides) or '(none)'}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            run_dir = Path(tmp) / variant
            steps = train_variant(variant, args, args.overrides, run_dir)[args.warmup:]
            tokens_per_s = statistics.median(r["tokens_per_s"] for r in steps)
            mfu = tokens_per_s * model_flops_per_token(run_dir, args.seq_len) / peak
            rows.append((variant, tokens_per_s, mfu))
    base = rows[0][1]
    print(f"\n| variant | tokens/s | vs {rows[0][0]} (step time) | MFU |\n|---|---|---|---|")
    for variant, tokens_per_s, mfu in rows:
        print(f"| {variant} | {tokens_per_s:,.0f} | {base / tokens_per_s:.3f}x | {100 * mfu:.1f}% |")


if __name__ == "__main__":
    main()
