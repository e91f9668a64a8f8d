"""PG-19 data: sources, tokenization, packing and the resumable sampler.

The trainer's API:

    tokenizer = load_tokenizer(cfg.model.tokenizer, cfg.model.name_or_path, cfg.data.cache_dir)
    check_tokenizer_fits(tokenizer, model.config.vocab_size)      # ValueError if ids overflow
    splits = build_datasets(cfg.data, tokenizer)                  # {"train", ["validation"], ["test"]}
    train = splits["train"]                                       # PackedDataset
    sampler = ResumableDistributedSampler(len(train), global_batch_size, rank, world_size, seed=cfg.seed)
    loader = DataLoader(train, batch_size=micro_batch_size, sampler=sampler)
    ...after each optimizer step: sampler.advance()
    ...checkpoint: sampler.state_dict(); resume: sampler.load_state_dict(state)

- `load_tokenizer(name_or_path, model_name_or_path=None, cache_dir=None)`: AutoTokenizer from a
  folder or hub name; "sample" is the project's own 512-token BPE (data/sample_tokenizer.py).
- `build_datasets(data_cfg, tokenizer) -> dict[str, PackedDataset]`: loads the source
  (data/sources.py), tokenizes each split once into the cache (data/encode.py) and cuts it
  into blocks of data.seq_len tokens. Items are {"input_ids", "labels", "position_ids"}
  int64 tensors; `default_collate` batches them.
- `ResumableDistributedSampler(num_blocks, global_batch_size, rank=0, world_size=1, seed=0)`:
  the training order; see its docstring for the resume semantics. Evaluation can use
  torch's DistributedSampler(shuffle=False) on the validation split.

Call build_datasets on one rank first (or run `python -m data.prepare` beforehand): the other
ranks then find the cache. Concurrent builders are safe but each does the work.
"""
from data.packing import PackedDataset
from data.pipeline import build_datasets
from data.sampler import ResumableDistributedSampler
from data.tokenizer import check_tokenizer_fits, load_tokenizer

__all__ = ["PackedDataset", "ResumableDistributedSampler", "build_datasets", "check_tokenizer_fits", "load_tokenizer"]
