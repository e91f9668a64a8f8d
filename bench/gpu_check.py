"""The GPU check: one command, about 8 minutes on one H100/H200, for every GPU figure the project lacks.

    python bench/gpu_check.py --out "$OUT"                 # on the GPU (docs/development.md, "The GPU check")
    python bench/gpu_check.py --dry-run --out /tmp/check   # CPU, tiny shapes, the same code paths

It writes gpu_check.md (date, device, versions, then one section each) into --out after every
section, so that a run cut short still returns what it measured, in this order of priority:
  1. attention  one 7B-shaped attention layer in bf16, forward+backward at 8K and 32K tokens:
                slack and exact vs vanilla in the same run (interleaved rounds), on sdpa and,
                where the flash-attn package is installed, flash_attention_2
  2. parity     bf16 and fp16 error of slack and exact (and vanilla) against float64, through
                the GPU's kernels (bench/precision.py's measurement, on this device)
  3. 1b         the ~1B shape (TinyLlama's) at 8K, gradient checkpointing: tokens/s, MFU against
                the bf16 matmul rate measured in the same run, peak memory; vanilla, slack, exact
  4. longest    the longest seq_len whose forward+backward fits for the 7B shape (slack), with
                gradient checkpointing, tiled MLP and tiled logits: doubling, then bisection,
                under a time cap. Weights and gradients stay on the GPU (no optimizer states);
                the trainer's ZeRO-3 offload moves even those off, so its longest is not shorter.
  5. prep       the Q'/K' preparation's share of a layer step at 8K; above 3%, the same
                preparation through torch.compile, before and after
Sections 3 and 4 need DeepSpeed (TiledMLP, and the trainer modules that import it): carry the
wheels `bash bench/gpu_wheels.sh` builds. A section that fails is reported with its error,
and the next one runs. Every time is a median of interleaved rounds; ratios come from one run.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import attention_layer, precision  # noqa: E402
from bench.models import LLAMA_1B, LLAMA_7B, matmul_flops  # noqa: E402
from bench.step_memory import CudaPeak  # noqa: E402

VARIANTS = ("vanilla", "slack", "exact")
COCA = VARIANTS[1:]
PREP_THRESHOLD = 0.03  # the share of a layer step above which the preparation is worth fusing
GIB = 2**30
TINY_1B = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=512)
TINY_7B = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, vocab_size=512)


@dataclass
class Plan:
    """Shapes and budgets of one mode: the GPU's, or the dry run's tiny copy of it."""

    layer_hidden: int
    layer_heads: int
    layer_lengths: tuple[int, ...]
    parity_lengths: tuple[int, ...]
    parity_magnitudes: tuple[float, ...]
    parity_queries: int
    model_arch: dict
    model_len: int
    big_arch: dict
    longest_start: int
    longest_step: int  # bisection stops when the gap between fitting and failing is this small
    longest_cap_s: float
    prep_len: int
    rounds: int


GPU_PLAN = Plan(layer_hidden=4096, layer_heads=32, layer_lengths=(8192, 32768), parity_lengths=(8192, 32768),
                parity_magnitudes=(1, 32), parity_queries=128, model_arch=LLAMA_1B, model_len=8192,
                big_arch=LLAMA_7B, longest_start=32768, longest_step=8192, longest_cap_s=150, prep_len=8192,
                rounds=5)
DRY_PLAN = Plan(layer_hidden=256, layer_heads=4, layer_lengths=(256, 512), parity_lengths=(512,),
                parity_magnitudes=(1, 32), parity_queries=64, model_arch=TINY_1B, model_len=256,
                big_arch=TINY_7B, longest_start=256, longest_step=256, longest_cap_s=3, prep_len=256, rounds=2)


@dataclass
class Report:
    """gpu_check.md, rewritten after every section."""

    path: Path
    header: list[str]
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))
        self.path.write_text(self.text())

    def text(self) -> str:
        parts = ["# GPU check", "", *self.header]
        for title, body in self.sections:
            parts += ["", f"## {title}", "", body]
        return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each step, the steps taking turns within every round (after a warm-up)."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """The median of per-round ratios: drift of the machine's speed between rounds cancels."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def peak_bytes(device: torch.device, step: Callable[[], None]) -> int | None:
    """What one call of `step` allocates at its peak above what was live before; None on CPU."""
    if device.type != "cuda":
        step()
        return None
    meter = CudaPeak(device)
    meter.reset()
    step()
    return meter.peak()


def gib(value: int | None) -> str:
    return "n/a (CPU)" if value is None else f"{value / GIB:.1f}"


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- sections


def attention_section(plan: Plan, device: torch.device, dtype: torch.dtype) -> str:
    from transformers.utils import is_flash_attn_2_available

    kernels = ["sdpa"] + (["flash_attention_2"] if device.type == "cuda" and is_flash_attn_2_available() else [])
    lines = [f"One attention layer: hidden {plan.layer_hidden}, {plan.layer_heads} heads, batch 1, {dtype}, "
             f"forward+backward (dX included), median of {plan.rounds} interleaved rounds.", "",
             "| kernel | N | variant | ms | vs vanilla |", "|---|---|---|---|---|"]
    for kernel in kernels:
        for n in plan.layer_lengths:
            layers, rotary = attention_layer.build_layers(device, dtype, n, plan.layer_hidden, plan.layer_heads, kernel)
            inputs = attention_layer.make_inputs(rotary, n, device, dtype, plan.layer_hidden)
            times = interleaved({v: partial(attention_layer.run_step, v, layers, inputs) for v in VARIANTS},
                                plan.rounds, device)
            for v in VARIANTS:
                lines.append(f"| {kernel} | {n} | {v} | {statistics.median(times[v]) * 1e3:.2f} "
                             f"| {ratio(times, v, 'vanilla'):.3f}x |")
            del layers, rotary, inputs
            release(device)
    if len(kernels) == 1:
        lines += ["", "flash_attention_2: not measured (the flash-attn package is not installed here)."]
    return "\n".join(lines)


def parity_section(plan: Plan, device: torch.device, dtype: torch.dtype) -> str:
    rows = [row for name in ("bf16", "fp16") for n in plan.parity_lengths for m in plan.parity_magnitudes
            for row in precision.measure(name, n, m, plan.parity_queries, device=device.type)]
    return (f"bench/precision.py's measurement on {device.type}: the last {plan.parity_queries} queries of N, "
            f"{precision.HEADS} heads / {precision.KV_HEADS} kv heads x {precision.HEAD_DIM}, outlier channels of "
            "the given magnitude; errors against float64.\n\n" + precision.table(rows))


def build_model(arch: dict, seq_len: int, device: torch.device, dtype: torch.dtype):
    """A random LLaMA of this shape in `dtype` on `device`, training mode, gradient checkpointing."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**arch, max_position_embeddings=seq_len, attn_implementation="sdpa", use_cache=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.gradient_checkpointing_enable()
    return model.train()


def model_section(plan: Plan, device: torch.device, dtype: torch.dtype) -> str:
    from train.coca import convert_to_coca
    from train.trainer.metrics import flops_per_token

    n = plan.model_len
    model = build_model(plan.model_arch, n, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, model.config.vocab_size, (1, n), device=device)
    rate = matmul_flops(device.type, dtype, size=8192 if device.type == "cuda" else 512)

    def step(variant: str) -> None:
        convert_to_coca(model, variant)
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    peaks = {v: peak_bytes(device, partial(step, v)) for v in VARIANTS}
    times = interleaved({v: partial(step, v) for v in VARIANTS}, plan.rounds, device)
    flops = flops_per_token(model.config, params, n)
    lines = [f"{params / 1e9:.2f}B parameters ({model.config.num_hidden_layers} layers, hidden "
             f"{model.config.hidden_size}), N={n}, batch 1, {dtype}, sdpa, gradient checkpointing; forward+backward "
             f"with the loss (no optimizer step). MFU: {flops / 1e9:.1f} GFLOP per token (6N + attention) x "
             f"tokens/s over the {dtype} matmul rate measured here, {rate / 1e12:.1f} TFLOP/s.", "",
             "| variant | tokens/s | step vs vanilla | MFU | peak GiB |", "|---|---|---|---|---|"]
    for v in VARIANTS:
        tokens_per_s = n / statistics.median(times[v])
        lines.append(f"| {v} | {tokens_per_s:,.0f} | {ratio(times, v, 'vanilla'):.3f}x "
                     f"| {100 * flops * tokens_per_s / rate:.1f}% | {gib(peaks[v])} |")
    return "\n".join(lines)


def longest_section(plan: Plan, device: torch.device, dtype: torch.dtype) -> str:
    from train.coca import convert_to_coca
    from train.parallel.tiling import tile_mlps
    from train.trainer.loss import shift_labels, tiled_cross_entropy_sum

    model = convert_to_coca(build_model(plan.big_arch, 1 << 21, device, dtype), "slack")
    params = sum(p.numel() for p in model.parameters())
    tile = model.config.hidden_size  # the trainer's default trainer.tile_tokens
    tile_mlps(model, tile)
    attempts: list[tuple[int, str, float, int | None]] = []  # (N, outcome, seconds, peak bytes)

    def attempt(n: int) -> bool:
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=device)
        started = time.perf_counter()

        def step() -> None:
            hidden = model.model(input_ids=ids).last_hidden_state
            (tiled_cross_entropy_sum(model.lm_head, hidden, shift_labels(ids), tile) / n).backward()

        try:
            peak = peak_bytes(device, step)
            synchronize(device)
            attempts.append((n, "fits", time.perf_counter() - started, peak))
            return True
        except torch.OutOfMemoryError:
            attempts.append((n, "out of memory", time.perf_counter() - started, None))
            return False
        finally:
            model.zero_grad(set_to_none=True)
            release(device)

    deadline = time.monotonic() + plan.longest_cap_s
    fits, fails, n = 0, None, plan.longest_start
    note = "bisection finished"
    while True:
        if fails is not None:
            if fails - fits <= plan.longest_step:
                break
            n = (fits + fails) // 2 // plan.longest_step * plan.longest_step
        if fits:  # attention's cost grows with N^2: the next attempt takes at most this long
            last = max(seconds for m, outcome, seconds, _ in attempts if m == fits)
            predicted = last * (n / fits) ** 2
            if time.monotonic() + predicted > deadline:
                note = f"stopped at the {plan.longest_cap_s:.0f} s cap: N={n} would take about {predicted:.0f} s"
                break
        if attempt(n):
            fits = n
            if fails is None:
                n *= 2
        else:
            fails = n
            if not fits:
                note = f"even N={n} does not fit"
                break
    lines = [f"{params / 1e9:.2f}B parameters, slack, {dtype} weights and gradients on the device, gradient "
             f"checkpointing, tiled MLP and logits ({tile} tokens a tile), batch 1; forward+backward with the loss.",
             "", "| N | outcome | seconds | peak GiB |", "|---|---|---|---|"]
    lines += [f"| {m} | {outcome} | {seconds:.1f} | {gib(peak)} |" for m, outcome, seconds, peak in attempts]
    bound = f"between {fits} and {fails}" if fails else f"at least {fits} (nothing longer tried)"
    lines += ["", f"Longest that fits: **{fits or 'none'}** ({bound}; {note})."]
    return "\n".join(lines)


def prep_section(plan: Plan, device: torch.device, dtype: torch.dtype, fuse: str) -> str:
    import train.coca

    n = plan.prep_len
    layers, rotary = attention_layer.build_layers(device, dtype, n, plan.layer_hidden, plan.layer_heads)
    inputs = attention_layer.make_inputs(rotary, n, device, dtype, plan.layer_hidden)
    layer = layers["slack"]
    shape = (1, plan.layer_heads, n, plan.layer_hidden // plan.layer_heads)
    q, t = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    grads = [torch.randn(shape, device=device, dtype=dtype) for _ in range(2)]

    def prep(function, variant: str) -> None:
        query, key, _ = function(q, t, inputs.cos, inputs.sin, variant, layer.scaling)
        torch.autograd.backward([query, key], grads)
        q.grad = t.grad = None

    def rows(label: str, function) -> tuple[list[str], float]:
        """Table rows for one preparation, and its largest share of a layer step."""
        # CocaAttention.forward calls the module's coca_query_key, so the layer runs `function` too.
        with mock.patch.object(train.coca, "coca_query_key", function):
            steps = {**{f"prep {v}": partial(prep, function, v) for v in COCA},
                     **{f"layer {v}": partial(attention_layer.run_step, v, layers, inputs) for v in COCA}}
            times = interleaved(steps, plan.rounds, device)
        shares = {v: ratio(times, f"prep {v}", f"layer {v}") for v in COCA}
        return [f"| {v} | {label} | {shares[v]:.1%} | {statistics.median(times[f'prep {v}']) * 1e3:.2f} "
                f"| {statistics.median(times[f'layer {v}']) * 1e3:.2f} |" for v in COCA], max(shares.values())

    eager, share = rows("eager", train.coca.coca_query_key)
    lines = [f"Preparation (coca_query_key forward+backward) vs the whole layer step, N={n}, hidden "
             f"{plan.layer_hidden}, {dtype}; threshold {PREP_THRESHOLD:.0%}.", "",
             "| variant | preparation | share of the layer step | preparation ms | layer ms |", "|---|---|---|---|---|",
             *eager]
    if fuse == "always" or (fuse == "auto" and share > PREP_THRESHOLD):
        lines += rows("torch.compile", torch.compile(train.coca.coca_query_key, dynamic=False))[0]
    else:
        lines += ["", f"Below {PREP_THRESHOLD:.0%}: no fused version measured."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def versions() -> str:
    found = [f"python {platform.python_version()}"]
    for name in ("torch", "transformers", "triton", "deepspeed", "flash_attn"):
        try:
            found.append(f"{name} {importlib.import_module(name).__version__}")
        except Exception:  # not installed, or unusable here: the check says so instead of failing
            found.append(f"{name} absent")
    return ", ".join(found)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / GIB:.0f} GiB, CUDA {torch.version.cuda}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "bench")),
                        help="folder for gpu_check.md (default: $OUT, else bench/)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on whatever device is here")
    parser.add_argument("--sections", default="attention,parity,1b,longest,prep",
                        help="which sections, in priority order")
    parser.add_argument("--fuse", choices=("auto", "always", "never"), default="auto",
                        help=f"measure the torch.compile preparation: above {PREP_THRESHOLD:.0%} (auto), always, never")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder for gpu_check.md")
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: {', '.join(unknown)} not among {', '.join(SECTIONS)}")
    return args


SECTIONS = {
    "attention": ("1. Attention layer: CoCA vs vanilla", attention_section),
    "parity": ("2. Half-precision parity against float64", parity_section),
    "1b": ("3. ~1B shape: tokens/s, MFU, peak memory", model_section),
    "longest": ("4. 7B shape: longest seq_len that trains", longest_section),
    "prep": ("5. Q'/K' preparation's share of a layer step", prep_section),
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("no GPU here: pass --dry-run for the CPU rehearsal with tiny shapes")
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    dtype = torch.bfloat16
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_check.md", [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- device: {device_name(device)}", f"- versions: {versions()}",
        f"- command: `python bench/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        + (" (dry run: tiny shapes, not a measurement of anything)" if args.dry_run else "")])
    started = time.monotonic()
    for key in args.sections.split(","):
        title, section = SECTIONS[key]
        begun = time.monotonic()
        extra = {"fuse": args.fuse} if key == "prep" else {}
        try:
            body = section(plan, device, dtype, **extra)
        except Exception as error:  # report it and go on: later sections may still measure
            body = f"Failed: `{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}`\n\n" \
                   f"```\n{traceback.format_exc(limit=4)}```"
        release(device)  # the section's models and tensors, before the next one
        report.add(title, f"{body}\n\n({time.monotonic() - begun:.0f} s)")
        print(f"[gpu_check] {key} done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(report.text())


if __name__ == "__main__":
    main()
