"""Export a checkpoint to a transformers folder: `python -m train.export checkpoint=PATH output=DIR`.

Any ZeRO stage and number of ranks: DeepSpeed's zero_to_fp32 consolidates the shards on the
CPU. The folder holds safetensors weights, config.json (with `coca_variant`) and the
tokenizer; `train.model.load_pretrained(DIR)` gives the checkpoint's model back. A plain
`from_pretrained` needs `convert_to_coca(model, model.config.coca_variant)` after it.
"""
import logging
import os
import shutil
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from config import check_choice
from config.finetune import DTYPE_NAMES
from train.cli import main_and_exit, run_job
from train.coca import CONFIG_KEY
from train.eval_config import ExportConfig
from train.load import checkpoint_config, load_checkpoint_tokenizer, load_model, resolve

log = logging.getLogger(__name__)
ConfigStore.instance().store(name="export_schema", node=ExportConfig)


def export(config: ExportConfig) -> Path:
    check_choice("dtype", config.dtype, DTYPE_NAMES)
    output = Path(config.output).expanduser().absolute()
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise ValueError(f"output={config.output!r} exists and is not an empty folder: give a new folder")
    ckpt = resolve(config.checkpoint)
    tokenizer = load_checkpoint_tokenizer(ckpt)
    model = load_model(ckpt, checkpoint_config(ckpt, None, "rope_scaling"), config.dtype)
    # Written aside and renamed into place: a crash never leaves a half export at `output`.
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s to %s (%s=%s, %s)", ckpt.folder, output, CONFIG_KEY,
             getattr(model.config, CONFIG_KEY, None), config.dtype)
    return output


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job("train.export", export, OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main_and_exit(main)
