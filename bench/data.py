"""Data pipeline benchmark on real books: tokenize + pack throughput and peak memory, then the
loader's throughput from the cache.

    python -m bench.data --data ../shared/data/pg19-sample --tokenizer ../shared/data/llama2-tokenizer

(from the repository root, as a module: run as a script, this file would shadow the `data` package)

Every measurement runs in a fresh process so that peak memory belongs to that step alone.
Peak memory is anonymous memory (RSS minus file-backed pages) of the process and its
`num_proc` workers, sampled every 100 ms from the parent: the memory-mapped Arrow and token
files are page cache that the kernel can drop, not memory the pipeline holds. CPU seconds
are reported next to wall time because other work on a small machine inflates the latter.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil


def anon_bytes(process: psutil.Process) -> int:
    info = process.memory_info()
    return info.rss - info.shared


def cpu_seconds() -> float:
    """This process's and its reaped workers' CPU time: robust to other load on the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def tokenize(args) -> dict:
    from data.cache import cache_root
    from conf.data_schema import DataConfig
    from data.encode import token_store
    from data.sources import load_raw_splits
    from data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    cfg = DataConfig(source="local", path=args.data, num_proc=args.num_proc, cache_dir=args.cache, seq_len=args.seq_len)
    start = time.perf_counter()
    raw, origin, _ = load_raw_splits(cfg)
    loaded, cpu = time.perf_counter(), cpu_seconds()
    baseline = anon_bytes(psutil.Process())
    root = cache_root(cfg.cache_dir)
    stores = [token_store(ds, name, origin, tokenizer, cfg.num_proc, root)[0] for name, ds in raw.items()]
    return {"documents": sum(s.num_documents for s in stores), "tokens": sum(s.num_tokens for s in stores),
            "load_s": loaded - start, "tokenize_pack_s": time.perf_counter() - loaded,
            "tokenize_pack_cpu_s": cpu_seconds() - cpu, "baseline_mib": baseline / 2**20}


def reuse(args) -> dict:
    from conf.data_schema import DataConfig
    from data.pipeline import build_splits
    from data.tokenizer import load_tokenizer

    cfg = DataConfig(source="local", path=args.data, cache_dir=args.cache, seq_len=args.seq_len)
    start = time.perf_counter()
    splits = build_splits(cfg, load_tokenizer(args.tokenizer))
    return {"seconds": time.perf_counter() - start, "all_cached": all(s.cached for s in splits.values())}


def load(args) -> dict:
    from torch.utils.data import DataLoader

    from data import ResumableDistributedSampler, build_datasets, load_tokenizer
    from conf.data_schema import DataConfig

    cfg = DataConfig(source="local", path=args.data, cache_dir=args.cache, seq_len=args.seq_len,
                     mask_doc_boundaries=args.mask)
    train = build_datasets(cfg, load_tokenizer(args.tokenizer))["train"]
    sampler = ResumableDistributedSampler(len(train), global_batch_size=args.batch, seed=0)
    loader = DataLoader(train, batch_size=args.batch, sampler=sampler)
    start = time.perf_counter()
    blocks = sum(batch["input_ids"].shape[0] for batch in loader)
    seconds = time.perf_counter() - start
    return {"blocks": blocks, "blocks_per_s": blocks / seconds, "tokens_per_s": blocks * args.seq_len / seconds}


def child(args, mode: str, **options) -> dict:
    command = [sys.executable, "-m", "bench.data", "--mode", mode, "--data", options.pop("data", args.data),
               "--tokenizer", args.tokenizer, "--cache", options.pop("cache")]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        command += [flag] if value is True else [] if value is False else [flag, str(value)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        # Sampled from here, not by a thread inside the child, so the measurement costs it nothing.
        watched, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, anon_bytes(watched) + sum(anon_bytes(c) for c in watched.children(recursive=True)))
            except psutil.Error:  # the child or a worker exited between listing and reading
                pass
            time.sleep(0.1)
        out.seek(0), err.seek(0)
        if proc.returncode:
            sys.exit(err.read())
        return dict(json.loads(out.read().strip().splitlines()[-1]), peak_mib=peak / 2**20)


def replicated(data: str, copies: int, folder: str) -> str:
    """`copies` links to every file of `data`, named so that each keeps its split."""
    os.makedirs(folder)
    for name in sorted(os.listdir(data)):
        stem, suffix = os.path.splitext(name)
        for i in range(copies):
            os.symlink(os.path.abspath(os.path.join(data, name)), os.path.join(folder, f"{stem}-{i}{suffix}"))
    return folder


def report(args) -> None:
    print(f"data {args.data}, tokenizer {args.tokenizer}, {os.cpu_count()} CPUs\n")
    print("| step | corpus | num_proc | documents | tokens | load s | tokenize+pack s (CPU s) | tokens/s (per CPU s) "
          "| peak MiB (before tokenizing) |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for copies, num_proc in ((1, 1), (1, 2), (4, 1)):
            cache = os.path.join(scratch, f"x{copies}-np{num_proc}")
            data = args.data if copies == 1 else replicated(args.data, copies, os.path.join(scratch, f"data-x{copies}"))
            r = child(args, "tokenize", data=data, cache=cache, num_proc=num_proc, seq_len=2048)
            print(f"| tokenize + pack | {copies}x | {num_proc} | {r['documents']} | {r['tokens']:,} | "
                  f"{r['load_s']:.1f} | "
                  f"{r['tokenize_pack_s']:.1f} ({r['tokenize_pack_cpu_s']:.1f}) | "
                  f"{r['tokens'] / r['tokenize_pack_s']:,.0f} ({r['tokens'] / r['tokenize_pack_cpu_s']:,.0f}) | "
                  f"{r['peak_mib']:,.0f} ({r['baseline_mib']:,.0f}) |")
        cache = os.path.join(scratch, "x1-np1")
        r = child(args, "reuse", cache=cache, seq_len=4096)
        print(f"\nsecond run, cache hit (load + open, no tokenization): {r['seconds']:.1f} s, "
              f"all cached: {r['all_cached']}\n")
        print("| loader (1 process, no workers) | seq_len | batch | blocks/s | tokens/s |")
        print("|---|---|---|---|---|")
        for seq_len, batch, mask in ((2048, 8, False), (2048, 8, True), (8192, 2, False), (32768, 1, True)):
            r = child(args, "load", cache=cache, seq_len=seq_len, batch=batch, mask=mask)
            label = "masked boundaries" if mask else "plain"
            print(f"| {label} | {seq_len} | {batch} | {r['blocks_per_s']:,.0f} | {r['tokens_per_s']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/pg19-sample")
    parser.add_argument("--tokenizer", default="../shared/data/llama2-tokenizer")
    parser.add_argument("--mode", choices=["tokenize", "reuse", "load"])
    parser.add_argument("--cache")
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mask", action="store_true")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps({"tokenize": tokenize, "reuse": reuse, "load": load}[args.mode](args)))
    else:
        report(args)


if __name__ == "__main__":
    main()
