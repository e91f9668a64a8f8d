"""From a `data` config and a tokenizer to packed, cached splits."""
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import PurePath

from torch.utils.data import Dataset

from transformers import PreTrainedTokenizerBase

from data.cache import cache_root
from conf.data_schema import DataConfig
from data.encode import token_store
from data.mixture import Mixture
from data.packing import PackedDataset
from data.passkey_mix import PasskeyMix
from data.sources import load_raw_splits
from conf.checks import check_choice
from conf.errors import BadInput

log = logging.getLogger(__name__)


@dataclass
class Split:
    dataset: PackedDataset
    # False when this call tokenized the split, True when it reused the cache
    cached: bool


def build_splits(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, Split]:
    """The source's splits; with data.sources, the first source's, and each other source's training
    split as "train/<name>"."""
    check_config(cfg)
    root = cache_root(cfg.cache_dir)
    splits = {}
    for index, (name, source) in enumerate(source_configs(cfg)):
        raw, origin, sources = load_raw_splits(source)
        for split, ds in raw.items():
            if index and split != "train":
                continue  # validation and test come from the first source
            store, cached = token_store(ds, split, origin, tokenizer, cfg.num_proc, root)
            key = f"train/{name}" if index else split
            splits[key] = Split(PackedDataset(store, cfg.seq_len, cfg.mask_doc_boundaries, cfg.packing), cached)
            # So that a user sees which files trained and which were held out, and how much of each.
            books = f"{store.num_documents:,} book{'' if store.num_documents == 1 else 's'}"
            log.info("data split %s: %s, %s, %s tokens", key, sources[split], books, f"{store.num_tokens:,}")
    return splits


def build_datasets(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> dict[str, Dataset]:
    """"train", plus "validation" and "test" where the source has them (see data/__init__.py).
    With data.sources or data.upsample_long, the training split is a Mixture drawn from `seed`; with
    data.passkey_fraction, it mixes in retrieval sequences drawn from `seed`."""
    built = build_splits(cfg, tokenizer)
    splits = {name: split.dataset for name, split in built.items() if not name.startswith("train/")}
    if cfg.sources or cfg.upsample_long.min_tokens is not None:
        names = [name for name, _ in source_configs(cfg)]
        parts = [splits["train"], *(built[f"train/{name}"].dataset for name in names[1:])]
        weights = [source.weight for source in cfg.sources] or [1.0]
        splits["train"] = Mixture(names, parts, weights, seed, cfg.upsample_long)
    if cfg.passkey_fraction > 0:
        splits["train"] = PasskeyMix(splits["train"], cfg.passkey_fraction, seed, tokenizer)
    return splits


def source_configs(cfg: DataConfig) -> list[tuple[str, DataConfig]]:
    """(name, a data config of that source alone) for each source: data.sources, or the one source.
    Only the first source holds books out for validation: the others' validation is never read."""
    if not cfg.sources:
        return [(_default_name(cfg), cfg)]
    configs = []
    for index, source in enumerate(cfg.sources):
        one = dataclasses.replace(cfg, source=source.source, path=source.path, hub_name=source.hub_name or cfg.hub_name,
                                  text_field=source.text_field, sources=[],
                                  validation_fraction=cfg.validation_fraction if index == 0 else 0.0)
        configs.append((source.name or _default_name(one), one))
    return configs


def _default_name(cfg: DataConfig) -> str:
    if cfg.source == "local" and cfg.path:
        return PurePath(cfg.path.rstrip("/*")).stem or cfg.path
    return cfg.hub_name.rsplit("/", 1)[-1] if cfg.source == "pg19" else cfg.source


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
    up = cfg.upsample_long
    if up.min_tokens is not None and (up.min_tokens < 1 or up.factor <= 0):
        raise BadInput(f"data.upsample_long: min_tokens={up.min_tokens} must be >= 1 and factor={up.factor} > 0")
    for index, source in enumerate(cfg.sources):
        if source.weight <= 0:
            raise BadInput(f"data.sources[{index}].weight={source.weight}: weights must be positive")
        # Named here with its index: load_raw_splits would name only data.source.
        check_choice(f"data.sources[{index}].source", source.source, ("sample", "pg19", "local"))
    if cfg.sources:
        names = [name for name, _ in source_configs(cfg)]
        if len(set(names)) < len(names):
            raise BadInput(f"data.sources are named {names}: give each a different name (data.sources[i].name)")
        if cfg.passkey_fraction > 0:
            raise BadInput(f"data.passkey_fraction={cfg.passkey_fraction} with data.sources: retrieval sequences "
                           f"draw their haystacks from one source; use one source, or passkey_fraction=0")
