"""Export a checkpoint to a transformers folder: `python -m train.export checkpoint=PATH output=DIR`.

Any ZeRO stage and number of ranks: DeepSpeed's zero_to_fp32 consolidates the shards on the
CPU. The folder holds safetensors weights, config.json (with `coca_variant`) and the
tokenizer; `train.model.load_pretrained(DIR)` gives the checkpoint's model back. A plain
`from_pretrained` needs `convert_to_coca(model, model.config.coca_variant)` after it.
"""
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from train.cli import main_and_exit, run_job
from train.inference.config import ExportConfig
from train.inference.export import export

# The schema conf/export.yaml names first in its defaults.
ConfigStore.instance().store(name="export_schema", node=ExportConfig)


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: ExportConfig = OmegaConf.to_object(cfg)
    run_job("train.export", export, config)


if __name__ == "__main__":
    main_and_exit(main)
