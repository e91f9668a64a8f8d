"""Typed schemas of the evaluate, export and generate commands (their entry points register them).

`conf/evaluate.yaml` and `conf/generate.yaml` reuse the trainer's `model`, `data` and
`logger` groups. Of the model group only `dtype` and `attn_implementation` apply: everything
else about the model (architecture, CoCA variant, trained RoPE) comes from the checkpoint.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional

from config import MISSING, DataConfig, LoggerConfig, ModelConfig

# The paper's windows: 512 to 32K tokens.
PAPER_LENGTHS = [512 * 2**i for i in range(7)]


@dataclass
class PasskeyConfig:
    # prompt lengths in tokens; empty: no passkey retrieval
    lengths: List[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    cases: int = 100  # prompts per length, each with its own random 5-digit key
    # where the key sits in the filler (0: start, 1: end); cases cycle through them
    depths: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    max_new_tokens: int = 8  # LLaMA spells 5 digits as 6 tokens (a space, then one per digit)


@dataclass
class EvalConfig:
    # sliding-window perplexity at each window length; empty: no perplexity
    lengths: List[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    stride: int = 512  # windows move by this many tokens; every length must be a multiple of it
    num_docs: int = 100  # documents with at least max(lengths) tokens, truncated to that
    split: str = "test"
    batch_size: int = 1  # windows per forward pass
    # caps batch_size x window length, so one setting serves short and long windows; null: no cap
    max_batch_tokens: Optional[int] = None
    # transformers' rope_parameters overrides at evaluation, e.g. {rope_type: dynamic, factor: 4.0}.
    # Typed Any (a mapping, checked at start): OmegaConf 2.3 cannot merge a command-line dict
    # into an Optional[Dict] that is null.
    rope_scaling: Any = None
    seed: int = 0  # passkey keys
    # null: <run_dir>/eval/<step>[-<rope>] for a training checkpoint, <folder>/eval/<rope|default> for an export
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


@dataclass
class ExportConfig:
    checkpoint: str = MISSING  # a run_dir or a step-N folder (any ZeRO stage, any number of ranks)
    output: str = MISSING  # a new folder
    dtype: str = "float32"  # float32 (ZeRO's fp32 master weights, lossless) | bfloat16 | float16


@dataclass
class GenerateConfig:
    checkpoint: str = MISSING
    prompt: str = MISSING
    max_new_tokens: int = 64
    do_sample: bool = False  # false: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    rope_scaling: Any = None  # as eval.rope_scaling
    model: ModelConfig = field(default_factory=ModelConfig)

