"""A quick look at a checkpoint's text: `python -m train.generate checkpoint=PATH "prompt='Once upon a time'"`.

Greedy by default; do_sample=true with temperature and top_p samples (seeded). Prints the
prompt and its continuation.
"""
import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from config import check_choice
from config.finetune import DTYPE_NAMES
from train.cli import main_and_exit, run_job
from train.eval_config import GenerateConfig
from train.load import device, checkpoint_config, load_checkpoint_tokenizer, load_model, resolve

ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)

def generate(config: GenerateConfig) -> str:
    """The continuation of config.prompt, also printed after it."""
    check_choice("model.dtype", config.model.dtype, DTYPE_NAMES)
    if config.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={config.max_new_tokens} must be >= 1")
    if config.do_sample and (config.temperature <= 0 or not 0 < config.top_p <= 1):
        raise ValueError(f"temperature={config.temperature}, top_p={config.top_p}: sampling needs temperature > 0 "
                         "and top_p in (0, 1]")
    ckpt = resolve(config.checkpoint)
    tokenizer = load_checkpoint_tokenizer(ckpt)
    hf_config = checkpoint_config(ckpt, config.rope_scaling, "rope_scaling")
    model = load_model(ckpt, hf_config, config.model.dtype, config.model.attn_implementation).to(device())
    ids = tokenizer(config.prompt, return_tensors="pt")["input_ids"].to(device())
    set_seed(config.seed)
    sampling = dict(temperature=config.temperature, top_p=config.top_p) if config.do_sample else {}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=config.max_new_tokens,
                             do_sample=config.do_sample, pad_token_id=pad, **sampling)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(config.prompt + text)
    return text


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job("train.generate", generate, OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main_and_exit(main)
