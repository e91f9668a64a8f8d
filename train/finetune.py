"""Fine-tune a LLaMA-family model with CoCA: `python -m train.finetune [overrides]`.

Composes conf/finetune.yaml, turns it into the typed FinetuneConfig and calls `run`.
Launch with torchrun for several processes; `deepspeed` works too.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from train.cli import run_or_exit
from train.config import FinetuneConfig  # registers the schema named in the defaults list
from train.trainer import run


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: FinetuneConfig = OmegaConf.to_object(cfg)
    sys.exit(run_or_exit("train.finetune", run, config))


if __name__ == "__main__":
    # The deepspeed launcher appends --local_rank=N, which Hydra would reject; LOCAL_RANK
    # in the environment already says the same.
    sys.argv = [a for a in sys.argv if not a.startswith("--local_rank")]
    main()
