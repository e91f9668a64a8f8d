"""Shared test setup: nothing is downloaded, and the real data is used only where it exists."""
import os
import sys
from pathlib import Path

import pytest

# Set before datasets, transformers and DeepSpeed are imported by any test module: they read them once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DS_ACCELERATOR"] = "cpu"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
# torch 2.13 recompiles flex attention with dynamic shapes once it meets a second sequence length,
# and on CPU that kernel returns wrong values (tests/kernels.py); static recompiles are right.
# Tests compare kernels at several lengths in one process, so they compile statically.
os.environ["TORCH_DYNAMO_AUTOMATIC_DYNAMIC_SHAPES"] = "0"
# What an in-process run (tests/runs.py `train_here`) puts in the environment for its one-rank
# process group; a subprocess must not inherit it, or it would try to join that group.
_PROCESS_GROUP_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"



def pytest_collection_modifyitems(items):
    """The tests marked `long` first, then the others that start processes (those taking `env`),
    each in their usual order: under xdist (pyproject's addopts) the short tests then fill the
    workers' ends, instead of a long one starting last and ending the run alone."""
    items.sort(key=lambda item: (item.get_closest_marker("long") is None,
                                 "env" not in getattr(item, "fixturenames", ())))

@pytest.fixture(scope="session")
def sample_tokenizer(tmp_path_factory):
    from data.tokenizer import load_tokenizer

    return load_tokenizer("sample", cache_dir=str(tmp_path_factory.mktemp("tokenizer-cache")))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """The environment of a trainer subprocess: offline, CPU DeepSpeed, caches in a temporary folder."""
    from tests.runs import REPO

    cache = tmp_path_factory.mktemp("cache")
    # The venv's bin first, as when it is activated (.ci/run): DeepSpeed JIT-builds its shm op with
    # the first `ninja` on PATH, and the venv's (1.13) and the system's (1.11) log different command
    # hashes for the same build file, so alternating between them rebuilds the op (~40 s) each time.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    inherited = {k: v for k, v in os.environ.items() if k not in _PROCESS_GROUP_VARS}
    return {**inherited, "PATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
            "HF_DATASETS_CACHE": str(cache), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def one_thread():
    """In-process models on one thread: the tiny model's matmuls are far slower split over
    threads on a busy 2-core machine. Modules opt in with pytestmark = usefixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_run(train_here, tmp_path_factory):
    """`shared_run(*args)`: the run dir of `train_here(*args)` (one rank, in this process),
    trained once per session for each args.

    For reference runs that several tests compare against and only read: a test that changes a
    run must copy it first (shutil.copytree)."""
    runs = {}

    def run(*args: str) -> Path:
        if args not in runs:
            run_dir = tmp_path_factory.mktemp("shared-run") / "run"
            assert train_here(f"run_dir={run_dir}", *args) == 0
            runs[args] = run_dir
        return runs[args]

    return run


@pytest.fixture(scope="session")
def trained(train_here, tmp_path_factory):
    """A tiny slack run trained two steps, its checkpoint at step 2 (tests/test_evaluate.py's, and
    tests/test_hub.py's slack run). Offline W&B, so that the checkpoint records a run for an
    evaluation to join. Only test_evaluate's evaluate command writes into it (eval/, a W&B run)."""
    from tests.test_evaluate import SMALL_DATA

    run_dir = tmp_path_factory.mktemp("run")
    assert train_here(f"run_dir={run_dir}", "trainer.max_steps=2", "trainer.save_every=2", *SMALL_DATA,
                      "logger.mode=offline") == 0
    return run_dir


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """`trained` exported (train.inference.export.export, which `python -m train.export` runs)."""
    from train.inference.config import ExportConfig
    from train.inference.export import export

    return export(ExportConfig(checkpoint=str(trained), output=str(tmp_path_factory.mktemp("exports") / "tiny")))


@pytest.fixture(scope="session")
def process_group():
    """This process as a one-rank DeepSpeed/gloo group, as `python -m train.finetune` makes it."""
    from train.trainer.distributed import init_distributed

    init_distributed()


@pytest.fixture(scope="session")
def train_here(tmp_path_factory, process_group):
    """`train_here(*overrides)`: what `python -m train.finetune overrides` does after Hydra's
    command line, in this process: the real composition, validation, DeepSpeed engine (a one-rank
    gloo group, made once and reused) and checkpoints, without a new process's ~8 s of start-up.
    Returns run()'s status; bad input raises BadInput instead of exiting 2.
    Caches go to a folder of the session; W&B is off unless the overrides say otherwise."""
    import torch

    from conf.schema import validate
    from tests.test_config import compose_config
    from train.trainer.loop import run

    cache = tmp_path_factory.mktemp("in-process-cache")

    def train(*overrides: str) -> int:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            config = compose_config(f"data.cache_dir={cache}", "logger.mode=disabled", *overrides)
            validate(config)  # as train.finetune does before it calls run
            return run(config)
        finally:
            torch.set_num_threads(threads)

    return train
