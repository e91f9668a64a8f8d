"""From a `data` config and a tokenizer to packed, cached splits."""
import logging
from dataclasses import dataclass

from torch.utils.data import Dataset

from transformers import PreTrainedTokenizerBase

from data.cache import cache_root
from conf.data_schema import DataConfig
from data.encode import token_store
from data.packing import PackedDataset
from data.passkey_mix import PasskeyMix
from data.sources import load_raw_splits
from conf.errors import BadInput

log = logging.getLogger(__name__)


@dataclass
class Split:
    dataset: PackedDataset
    # False when this call tokenized the split, True when it reused the cache
    cached: bool


def build_splits(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, Split]:
    check_config(cfg)
    raw, origin, sources = load_raw_splits(cfg)
    root = cache_root(cfg.cache_dir)
    splits = {}
    for name, ds in raw.items():
        store, cached = token_store(ds, name, origin, tokenizer, cfg.num_proc, root)
        splits[name] = Split(PackedDataset(store, cfg.seq_len, cfg.mask_doc_boundaries, cfg.packing), cached)
        # So that a user sees which files trained and which were held out, and how much of each.
        books = f"{store.num_documents:,} book{'' if store.num_documents == 1 else 's'}"
        log.info("data split %s: %s, %s, %s tokens", name, sources[name], books, f"{store.num_tokens:,}")
    return splits


def build_datasets(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> dict[str, Dataset]:
    """"train", plus "validation" and "test" where the source has them (see data/__init__.py).
    With data.passkey_fraction, the training split mixes in retrieval sequences drawn from `seed`."""
    splits = {name: split.dataset for name, split in build_splits(cfg, tokenizer).items()}
    if cfg.passkey_fraction > 0:
        splits["train"] = PasskeyMix(splits["train"], cfg.passkey_fraction, seed, tokenizer)
    return splits


def check_config(cfg: DataConfig) -> None:
    """Rejects values that would only fail after tokenizing."""
    if cfg.seq_len <= 0:
        raise BadInput(f"data.seq_len={cfg.seq_len}: it must be a positive number of tokens")
    if not 0 <= cfg.validation_fraction < 1:
        raise BadInput(f"data.validation_fraction={cfg.validation_fraction}: it must be in [0, 1)")
    if not 0 <= cfg.passkey_fraction < 1:
        raise BadInput(f"data.passkey_fraction={cfg.passkey_fraction}: it must be in [0, 1)")
    if cfg.packing not in PackedDataset.PACKINGS:
        raise BadInput(f"data.packing={cfg.packing!r} is not supported; choose one of {', '.join(PackedDataset.PACKINGS)}")
    if cfg.num_proc < 1:
        raise BadInput(f"data.num_proc={cfg.num_proc}: it must be at least 1")
