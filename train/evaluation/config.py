"""Typed schema of the evaluate command (train.evaluate registers it), and its checks.

`conf/evaluate.yaml` reuses the trainer's `model`, `data` and `logger` groups. Of the model
group only `dtype` and `attn_implementation` apply: everything else about the model
(architecture, CoCA variant, trained RoPE) comes from the checkpoint.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional

from conf import MISSING, DataConfig, LoggerConfig, ModelConfig, Problems
from conf.schema import DTYPE_NAMES, LOGGER_MODES

# The paper's windows: 512 to 32K tokens.
PAPER_LENGTHS = [512 * 2**i for i in range(7)]


@dataclass
class PasskeyConfig:
    # prompt lengths in tokens; empty: no passkey retrieval
    lengths: List[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    cases: int = 100  # prompts per length, each with its own random 5-digit key
    # books: a passage of the evaluated split's books around the key, as training's retrieval
    # sequences have; filler: the original task's repeated sentences (a second, unseen haystack)
    haystack: str = "books"
    # where the key sits in the haystack (0: start, 1: end); cases cycle through them
    depths: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    max_new_tokens: int = 8  # LLaMA spells 5 digits as 6 tokens (a space, then one per digit)


@dataclass
class EvalConfig:
    # sliding-window perplexity at each window length; empty: no perplexity
    lengths: List[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    stride: int = 512  # windows move by this many tokens; every length must be a multiple of it
    # every book of the split is cut into documents of max(lengths) tokens; this caps how many are
    # read (each book's share, evenly spaced through it); null: every one
    num_docs: Optional[int] = None
    split: str = "test"
    batch_size: int = 1  # windows per forward pass
    # caps batch_size x window length, so one setting serves short and long windows; null: no cap
    max_batch_tokens: Optional[int] = None
    # transformers' rope_parameters overrides at evaluation, e.g. {rope_type: dynamic, factor: 4.0}.
    # Typed Any (a mapping, checked at start): OmegaConf 2.3 cannot merge a command-line dict
    # into an Optional[Dict] that is null.
    rope_scaling: Any = None
    seed: int = 0  # passkey keys
    # null: <run_dir>/eval/<step>[-<rope>][-<split>] for a training checkpoint (the split named unless
    # test), <folder>/eval/<rope>[-<split>] or <folder>/eval/default for an export
    output_dir: Optional[str] = None
    label: Optional[str] = None  # the runs' name in tables and plots; null: run name, variant and RoPE
    passkey: PasskeyConfig = field(default_factory=PasskeyConfig)


@dataclass
class EvaluateConfig:
    # a run_dir (its latest complete checkpoint), a step-N folder, or an exported transformers folder
    checkpoint: str = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def validate(config: EvaluateConfig) -> None:
    """Checks the schema cannot express, before anything loads; reports every problem found."""
    e, p = config.eval, config.eval.passkey
    problems = Problems()
    problems.choice("model.dtype", config.model.dtype, DTYPE_NAMES)
    problems.choice("logger.mode", config.logger.mode, LOGGER_MODES)
    problems.choice("eval.passkey.haystack", p.haystack, ("books", "filler"))
    if not e.lengths and not p.lengths:
        problems.add("eval.lengths and eval.passkey.lengths are both empty: nothing to evaluate")
    for key, value in (("eval.stride", e.stride), ("eval.batch_size", e.batch_size),
                       ("eval.passkey.cases", p.cases), ("eval.passkey.max_new_tokens", p.max_new_tokens)):
        if value < 1:
            problems.add(f"{key}={value} must be >= 1")
    if e.num_docs is not None and e.num_docs < 1:
        problems.add(f"eval.num_docs={e.num_docs} must be >= 1, or null for every document of the split")
    if e.max_batch_tokens is not None and e.max_batch_tokens < 1:
        problems.add(f"eval.max_batch_tokens={e.max_batch_tokens} must be >= 1 or null")
    # A stride below 1 is reported above; the lengths are measured against a valid one only.
    for length in e.lengths if e.stride >= 1 else ():
        if length < 1 or length % e.stride:
            problems.add(f"eval.lengths has {length}: every length must be a positive multiple of "
                         f"eval.stride={e.stride}, so that each document's windows end at its end")
    if any(length < 1 for length in p.lengths):
        problems.add(f"eval.passkey.lengths={list(p.lengths)}: lengths must be >= 1")
    if not p.depths or any(not 0 <= d <= 1 for d in p.depths):
        problems.add(f"eval.passkey.depths={list(p.depths)}: give one or more depths in [0, 1]")
    problems.raise_if_any()
