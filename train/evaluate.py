"""Evaluate a checkpoint as the paper does: `python -m train.evaluate checkpoint=PATH [overrides]`.

Composes conf/evaluate.yaml into the typed EvaluateConfig and calls train.evaluation.run.evaluate:
sliding-window perplexity by length on the data group's test split, passkey retrieval, then
eval.json, eval.md and eval.png in eval.output_dir, and the checkpoint's W&B run if any.
"""
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from train.cli import checked_then, main_and_exit, run_job
from train.evaluation.config import EvaluateConfig, validate

# The schema conf/evaluate.yaml names first in its defaults.
ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job("train.evaluate", checked_then(validate, "train.evaluation.run:evaluate"), cfg)


if __name__ == "__main__":
    main_and_exit(main)
