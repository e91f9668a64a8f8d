"""A quick look at a checkpoint's text: `python -m train.generate checkpoint=PATH "prompt='Once upon a time'"`.

Greedy by default; do_sample=true with temperature and top_p samples (seeded). Prints the
prompt and its continuation.
"""
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from train.cli import checked_then, main_and_exit, run_job
from train.inference.config import GenerateConfig, validate_generate

# The schema conf/generate.yaml names first in its defaults.
ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job("train.generate", checked_then(validate_generate, "train.inference.generate:generate"), cfg)


if __name__ == "__main__":
    main_and_exit(main)
