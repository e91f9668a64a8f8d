"""Fine-tune a LLaMA-family model with CoCA: `python -m train.finetune [overrides]`.

Composes conf/finetune.yaml, turns it into the typed FinetuneConfig and calls train.trainer.loop.run.
Launch with torchrun for several processes; `deepspeed` works too. A Hydra sweep
(`python -m train.finetune -m model.attention=vanilla,slack,exact`) runs the jobs one after
another, each in its own run_dir (`<hydra.sweep.dir>/<job number>-<name>`) and W&B run.
"""
import sys

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from conf import FinetuneConfig
from conf.schema import validate
from train.cli import checked_then, main_and_exit, run_job

# The schema conf/finetune.yaml names first in its defaults.
ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.run_dir is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        # Hydra's job folder: fixed by the sweep's folder and the job's place in it, so the
        # same sweep command with the same hydra.sweep.dir resumes every job.
        cfg.run_dir = HydraConfig.get().runtime.output_dir
    run_job("train.finetune", checked_then(validate, "train.trainer.loop:run"), cfg)


if __name__ == "__main__":
    # The deepspeed launcher appends --local_rank=N, which Hydra would reject; LOCAL_RANK
    # in the environment already says the same.
    sys.argv = [a for a in sys.argv if not a.startswith("--local_rank")]
    main_and_exit(main)
