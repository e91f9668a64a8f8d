"""Peak memory and step time of one training step with and without tiled MLP and tiled logits+loss.

A LLaMA-shaped CoCA model (random weights, gradient checkpointing on, as at long seq_len) takes
forward+backward steps on one sequence, through the trainer's own functions: train.parallel.tiling's
tiled MLP, train.trainer.loss's tiled cross-entropy. Per length, the four settings run in interleaved
rounds after one warm-up step each (the warm-up also allocates the .grad buffers, so they are
part of the baseline). Peak is what a step adds above the weights and their gradients: CUDA's
max_memory_allocated, or on CPU the tensor allocations torch's profiler records (bench/step_memory.py).

    python bench/tiling.py                                   # CPU-sized default
    python bench/tiling.py --lengths 8192,32768 --hidden 2048 --intermediate 5504 --layers 4 --heads 16
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.step_memory import CudaPeak, cpu_step_memory  # noqa: E402
from train.parallel import tiling  # noqa: E402
from train.coca import convert_to_coca  # noqa: E402
from train.trainer.loss import cross_entropy_sum, shift_labels, tiled_cross_entropy_sum  # noqa: E402

SETTINGS = {"untiled": (False, False), "mlp": (True, False), "logits": (False, True), "both": (True, True)}
MIB = 2**20


def build_model(args, device, dtype) -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads, vocab_size=args.vocab,
                         max_position_embeddings=max(args.lengths), attn_implementation="sdpa")
    model = convert_to_coca(LlamaForCausalLM(config), variant=args.variant).to(device=device, dtype=dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def set_mlp_tiling(model, tiled: bool, tile: int) -> None:
    for layer in model.get_decoder().layers:
        layer.mlp.__dict__.pop("forward", None)  # back to the class's own forward
    if tiled:
        tiling.tile_mlps(model, tile)


def step(model, input_ids, positions, labels, tiled_logits: bool, tile: int) -> None:
    if tiled_logits:
        hidden = model.get_decoder()(input_ids=input_ids, position_ids=positions).last_hidden_state
        total = tiled_cross_entropy_sum(model.get_output_embeddings(), hidden, labels, tile)
    else:
        total = cross_entropy_sum(model(input_ids=input_ids, position_ids=positions).logits, labels)
    (total / labels.numel()).backward()


def step_peak(device: torch.device, fn) -> int:
    """Bytes that one call of fn allocates above the level before it, at its peak."""
    if device.type == "cpu":
        return cpu_step_memory(fn)[0]
    meter = CudaPeak(device)
    meter.reset()
    fn()
    return meter.peak()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 8192, 16384])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--variant", default="slack")
    parser.add_argument("--tile", type=int, default=None, help="tokens per tile (default: --hidden)")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds after the measured ones")
    args = parser.parse_args()
    tile = args.tile or args.hidden

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = build_model(args, device, dtype)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}; "
          f"model: hidden {args.hidden}, "
          f"MLP {args.intermediate}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}, "
          f"{model.num_parameters() / 1e6:.1f}M parameters, {args.variant} CoCA, gradient checkpointing; tile {tile}\n")
    print("| seq_len | setting | ms per step (median) | vs untiled | peak MiB above weights+grads | vs untiled |\n"
          "|---|---|---|---|---|---|")
    for n in args.lengths:
        input_ids = torch.randint(0, args.vocab, (1, n), device=device)
        positions = torch.arange(n, device=device)[None]
        labels = shift_labels(input_ids)
        peaks, times = {}, {s: [] for s in SETTINGS}

        def run(setting: str) -> None:
            tiled_mlp, tiled_logits = SETTINGS[setting]
            set_mlp_tiling(model, tiled_mlp, tile)
            step(model, input_ids, positions, labels, tiled_logits, tile)

        for setting in SETTINGS:
            run(setting)  # warm-up; the first also allocates the .grad buffers, which stay
            peaks[setting] = step_peak(device, lambda: run(setting))
        for _ in range(args.repeats):
            for setting in SETTINGS:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run(setting)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[setting].append(1000 * (time.perf_counter() - start))
        base_ms, base_peak = statistics.median(times["untiled"]), peaks["untiled"]
        for setting in SETTINGS:
            ms, peak = statistics.median(times[setting]), peaks[setting]
            print(f"| {n} | {setting} | {ms:,.0f} | {ms / base_ms:.2f}x | {peak / MIB:,.0f} "
                  f"| {peak / base_peak:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
