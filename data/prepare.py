"""Tokenize and pack ahead of training: `python -m data.prepare [overrides]`.

Uses the training configuration (conf/finetune.yaml), so the cache it fills is the one the
trainer opens. Examples:
    python -m data.prepare
    python -m data.prepare data=local data.path=../shared/data/pg19-sample data.seq_len=2048 \
        model.tokenizer=../shared/data/llama2-tokenizer
"""
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from conf import FinetuneConfig
from data.pipeline import build_splits
from data.tokenizer import load_tokenizer

# The schema conf/finetune.yaml names first in its defaults.
ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


def prepare(cfg: FinetuneConfig) -> dict[str, dict[str, int]]:
    """Prints and returns documents, tokens and blocks per split."""
    tokenizer = load_tokenizer(cfg.model.tokenizer, cfg.model.name_or_path, cfg.data.cache_dir)
    splits = build_splits(cfg.data, tokenizer)
    counts = {}
    print(f"{'split':<12}{'documents':>12}{'tokens':>15}{'blocks':>10}  (seq_len {cfg.data.seq_len})")
    for name, split in splits.items():
        store = split.dataset.store
        blocks = split.dataset.num_blocks
        counts[name] = {"documents": store.num_documents, "tokens": store.num_tokens, "blocks": blocks}
        print(f"{name:<12}{store.num_documents:>12,}{store.num_tokens:>15,}{split.dataset.num_blocks:>10,}"
              f"  {'cached' if split.cached else 'built now'}: {store.folder}")
    return counts


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    prepare(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
