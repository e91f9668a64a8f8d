"""Export a checkpoint to a transformers folder: `python -m train.export checkpoint=PATH output=DIR [push_to_hub=owner/name]`.

Any ZeRO stage and number of ranks: DeepSpeed's zero_to_fp32 consolidates the shards on the
CPU. The folder holds safetensors weights, config.json, the tokenizer and a model card; a CoCA
model also its custom code (train/coca_folder.py), so that transformers loads it as CoCA with
trust_remote_code=True and refuses it without. `train.model.load_pretrained(DIR)` gives the
checkpoint's model back. push_to_hub uploads the folder (train/inference/hub.py).
"""
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from train.cli import checked_then, main_and_exit, run_job
from train.inference.config import ExportConfig, validate_export

# The schema conf/export.yaml names first in its defaults.
ConfigStore.instance().store(name="export_schema", node=ExportConfig)


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job("train.export", checked_then(validate_export, "train.inference.export:export"), cfg)


if __name__ == "__main__":
    main_and_exit(main)
