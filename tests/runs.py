"""Running `python -m train.finetune` from tests, as a user would: a subprocess, real launchers."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Small and quick, but several steps per checkpoint and an evaluation on the way.
QUICK = ["trainer.max_steps=8", "trainer.save_every=4", "trainer.eval_every=4", "trainer.eval_batches=2",
         "data.sample.num_books=6", "data.sample.words_per_book=3000", "data.seq_len=64"]
# Long enough that a signal sent at the first checkpoint lands well before the end.
LONG = [*QUICK, "trainer.max_steps=40"]
# Four steps at a constant rate, two sequences per micro-batch: one rank with grad_accum=2 against
# two ranks sharing each sequence (tests/test_sequence_parallel.py, tests/test_tiling.py).
PER_SEQUENCE = [*QUICK, "trainer.max_steps=4", "trainer.save_every=4", "trainer.eval_every=2", "logger.mode=disabled",
                "optim.schedule=constant", "trainer.micro_batch_size=2"]


def launch(module, args, env, cwd=REPO, nproc=1, wait=True):
    """`python -m module args` (under torchrun when nproc > 1): (status, output), or the process."""
    torchrun = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *torchrun, "-m", module, *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def finetune(args, env, cwd, nproc=1, wait=True):
    return launch("train.finetune", args, env, cwd, nproc, wait)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r}


def weights(run_dir: Path, step: int) -> dict:
    """The model's fp32 weights in a run's step-N checkpoint, consolidated over ranks."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"), tag=f"step-{step:08d}")


def assert_same_weights(run_dir: Path, expected_run_dir: Path, step: int) -> None:
    """Same weights after `step` optimizer steps: the gradients agreed in direction and scale."""
    import torch

    got, expected = weights(run_dir, step), weights(expected_run_dir, step)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"
