"""Trainer throughput: tokens/s and MFU of `python -m train.finetune`, vanilla vs CoCA, in one run.

Each variant trains for --steps steps in a subprocess (the real trainer, DeepSpeed included);
tokens/s is the median of the logged steps after --warmup. MFU divides the model FLOPs
(train.trainer.metrics.flops_per_token: 6N plus attention at seq_len) by the dense matmul rate
measured on the same device in the same run, so it needs no table of peak numbers.

    python bench/throughput.py                                  # the tiny default on this machine
    python bench/throughput.py --seq-len 2048 -- model.arch.hidden_size=512 model.arch.num_hidden_layers=8
    python bench/throughput.py --shape 1b --seq-len 2048,8192,32768          # on a GPU
    python bench/throughput.py --shape 7b --seq-len 2048,8192,32768 -- deepspeed=zero3_offload
    python bench/throughput.py --shape 7b --longest --seq-len 16384 -- deepspeed=zero3_offload \
        trainer.tiled_mlp=true trainer.tiled_logits=true
    python bench/throughput.py --variants slack --packings concat documents --seq-len 1024   # data.packing's cost
Extra Hydra overrides go after `--` and win over --shape's. `--longest` doubles seq_len from
--seq-len (slack CoCA only) until a run fails, and reports each attempt.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.models import LLAMA_1B, LLAMA_7B, matmul_flops  # noqa: E402
from train.trainer.metrics import flops_per_token  # noqa: E402

# LLaMA-architecture shapes (random weights, the sample corpus tokenized with the project's
# small BPE: ids fit, the head is full size). On a GPU: bf16, SDPA, gradient checkpointing;
# the 7B shape also wants ZeRO-3 offload on one GPU.
ARCH = "++model.arch.{}={}"
SHAPES = {"tiny": [], **{name: [ARCH.format(k, v) for k, v in arch.items()]
                         for name, arch in (("1b", LLAMA_1B), ("7b", LLAMA_7B))}}
GPU = ["trainer.precision=bf16", "model.gradient_checkpointing=true", "trainer.micro_batch_size=1"]


class RunFailed(RuntimeError):
    pass


def train_variant(variant: str, seq_len: int, args, overrides: list[str], run_dir: Path) -> list[dict]:
    # Enough sample books that a few blocks of seq_len exist whatever the length.
    books = max(12, 8 * seq_len // 4096)
    cmd = [sys.executable, "-m", "train.finetune", f"run_dir={run_dir}", f"model.attention={variant}",
           f"trainer.max_steps={args.steps}", f"trainer.save_every={args.steps}", f"trainer.eval_every={args.steps}",
           "trainer.log_every=1", "logger.mode=disabled", f"data.seq_len={seq_len}", f"data.sample.num_books={books}",
           *([ARCH.format("max_position_embeddings", seq_len)] if args.shape != "tiny" else []), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "WANDB_SILENT": "true"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:]
        raise RunFailed(f"exit {proc.returncode}: {tail[0][:300] if tail else ''}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "tokens_per_s" in r]


def measure(variant: str, seq_len: int, args, overrides: list[str], run_dir: Path, peak: float,
            packing: str = "concat") -> dict:
    steps = train_variant(variant, seq_len, args, [*overrides, f"data.packing={packing}"], run_dir)[args.warmup:]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in steps)
    memory = [r["memory/peak_gib"] for r in steps if "memory/peak_gib" in r]
    return {"variant": variant if packing == "concat" else f"{variant}, packing={packing}", "seq_len": seq_len,
            "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * model_flops_per_token(run_dir, seq_len) / peak,
            "peak_gib": max(memory) if memory else None}


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
    parser.add_argument("--packings", nargs="+", default=["concat"], choices=["concat", "documents"],
                        help="data.packing settings, measured in turn for each variant")
    parser.add_argument("--seq-len", type=lambda s: [int(x) for x in s.split(",")], default=[256],
                        help="comma-separated lengths")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--longest", action="store_true", help="double seq_len until a run fails (slack only)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every variant (after --)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    overrides = [*SHAPES[args.shape], *(GPU if device == "cuda" else []), *args.overrides]
    peak = matmul_flops(device, dtype)
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, measured {dtype} matmul rate "
          f"{peak / 1e12:.3f} TFLOP/s; shape {args.shape}; overrides: {' '.join(overrides) or '(none)'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.longest:
            seq_len = args.seq_len[0]
            while True:
                try:
                    rows.append(measure("slack", seq_len, args, overrides, Path(tmp) / str(seq_len), peak))
                    print(f"seq_len {seq_len}: trains", flush=True)
                except RunFailed as failure:
                    print(f"seq_len {seq_len}: does not train ({failure})", flush=True)
                    break
                seq_len *= 2
        else:
            for seq_len in args.seq_len:
                for variant in args.variants:
                    for turn, packing in enumerate(args.packings):  # a packing may be named twice: two runs
                        rows.append(measure(variant, seq_len, args, overrides,
                                            Path(tmp) / f"{variant}-{packing}-{seq_len}-{turn}", peak, packing))
    print(f"\n| seq_len | variant | tokens/s | step time vs the first row | MFU | peak GiB |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["seq_len"] == row["seq_len"])["tokens_per_s"]
        memory = "" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        print(f"| {row['seq_len']} | {row['variant']} | {row['tokens_per_s']:,.0f} | {base / row['tokens_per_s']:.3f}x "
              f"| {100 * row['mfu']:.1f}% | {memory} |")


if __name__ == "__main__":
    main()
