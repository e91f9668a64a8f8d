"""Process-group set-up and the few collective decisions the trainer makes."""
from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, TypeVar

import deepspeed
import torch
from packaging.version import Version
from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder
import torch.distributed as dist

from conf.errors import BadInput

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How long ranks wait for the data caches to be built: tokenizing full PG-19 on one process
# takes about 50 minutes (bench/RESULTS.md), far beyond a collective's usual timeout.
DATA_WAIT = timedelta(hours=24)


# The DeepSpeed releases the trainer is tested with (pyproject.toml says the same). Its gradient
# scaling under sequence parallelism (train/parallel/sequence_parallel.py) depends on this
# release's internals: another one can train with wrong gradients and no error, so it is refused
# rather than trusted.
DEEPSPEED_SUPPORTED = (Version("0.19.8"), Version("0.20"))


def check_deepspeed(version: str) -> None:
    oldest, first_unsupported = DEEPSPEED_SUPPORTED
    if not oldest <= Version(version) < first_unsupported:
        raise BadInput(f"DeepSpeed {version} is installed; this trainer supports deepspeed>={oldest},<{first_unsupported} "
                       f"(the release its gradient scaling and checkpoint handling are tested with): "
                       f"pip install 'deepspeed>={oldest},<{first_unsupported}'")


def init_distributed(timeout_min: float | None = None) -> None:
    """Join the process group that torchrun/the deepspeed launcher set up, or make a one-process one.

    Without a launcher DeepSpeed would go looking for MPI; a plain `python -m train.finetune`
    is a world of one on this machine. timeout_min: how long a collective may wait (null:
    DeepSpeed's, from DEEPSPEED_TIMEOUT, 10 minutes by default).
    """
    check_deepspeed(deepspeed.__version__)
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    accelerator = deepspeed.get_accelerator()
    if accelerator.device_name() == "cpu" and os.environ["WORLD_SIZE"] == "1":
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce (tens of seconds on a
        # fresh machine) that a process alone never uses; gloo does the rest.
        deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    if accelerator.device_name() != "cpu":
        accelerator.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = {} if timeout_min is None else {"timeout": timedelta(minutes=timeout_min)}
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name(), **timeout)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def wait_long() -> None:
    """A barrier that may wait DATA_WAIT: on a gloo group of its own, so the training group's
    timeout (and NCCL's watchdog) does not apply while a node builds the data caches."""
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT)
    dist.barrier(group=group)
    dist.destroy_process_group(group)


def main_decides(decide: Callable[[], T], long: bool = False) -> T:
    """`decide()` run on rank 0 alone, its result on every rank.

    For what must be one decision even where the ranks see a shared folder differently (an NFS
    client's cache): which checkpoint to resume, what to set aside, a conversion to make. What
    it raises reaches every rank at once, instead of leaving the others in a collective: BadInput
    as BadInput (one line everywhere), anything else re-raised on rank 0 with its traceback and
    as a RuntimeError naming it on the others. long: the others may wait DATA_WAIT (a conversion
    of a large checkpoint), on a gloo group of their own, as in `wait_long`.
    """
    outcome, error = None, None
    if is_main():
        try:
            outcome = ("done", decide())
        except BadInput as bad:
            outcome, error = ("bad input", str(bad)), bad
        except Exception as failure:  # noqa: BLE001 - every rank must hear of it, then it is raised
            outcome, error = ("failed", f"{type(failure).__name__}: {failure}"), failure
    if world_size() > 1:
        group = dist.new_group(backend="gloo", timeout=DATA_WAIT) if long else None
        box = [outcome]
        dist.broadcast_object_list(box, src=0, group=group)
        if group is not None:
            dist.destroy_process_group(group)
        outcome = box[0]
    if error is not None:
        raise error
    kind, value = outcome
    if kind == "bad input":
        raise BadInput(value)
    if kind == "failed":
        raise RuntimeError(f"rank 0 failed, so this rank stops too: {value}")
    return value


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> torch.device:
    """This rank's accelerator (the CPU under DS_ACCELERATOR=cpu)."""
    return torch.device(deepspeed.get_accelerator().current_device_name())


def broadcast_from_main(value):
    """Rank 0's value of a picklable object, on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value) -> list:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any: the decision to stop is taken together."""
    tensor = torch.tensor([int(flag)], device=local_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=local_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / world_size()


def resolve_run_dir(run_dir: str | None, name: str) -> Path:
    """One run_dir for every rank and node.

    Under SLURM the job id names it, so a requeued job finds its own checkpoints; otherwise
    rank 0 stamps the time and broadcasts it (per-process clocks can differ by a second).
    """
    if run_dir is None:
        job = os.environ.get("SLURM_JOB_ID")
        stamp = f"slurm-{job}" if job else datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = str(Path("outputs") / name / broadcast_from_main(stamp))
    return Path(run_dir).absolute()
