"""Tokenize and pack ahead of training: `python -m data.prepare [overrides]`.

Uses the training configuration (conf/finetune.yaml), so the cache it fills is the one the
trainer opens. Examples:
    python -m data.prepare
    python -m data.prepare data=local data.path=../shared/data/pg19-sample data.seq_len=2048 \
        model.tokenizer=../shared/data/llama2-tokenizer
"""
import hydra
from omegaconf import DictConfig, OmegaConf

import train.config  # noqa: F401  (registers finetune_schema for the defaults list)
from data.pipeline import build_splits
from data.tokenizer import load_tokenizer


def prepare(cfg: "train.config.FinetuneConfig") -> dict[str, dict[str, int]]:
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
