"""Typed schemas of the export and generate commands (their entry points register them), and their checks.

`conf/generate.yaml` reuses the trainer's `model` group, of which only `dtype` and
`attn_implementation` apply: everything else about the model comes from the checkpoint.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from conf import MISSING, ModelConfig, Problems
from conf.schema import DTYPE_NAMES
from conf.errors import BadInput


@dataclass
class ExportConfig:
    checkpoint: str = MISSING  # a run_dir, a step-N folder (any ZeRO stage, any number of ranks) or an export
    output: str = MISSING  # a new folder
    dtype: str = "float32"  # float32 (ZeRO's fp32 master weights, lossless) | bfloat16 | float16
    push_to_hub: Optional[str] = None  # a Hub repo id, owner/name: upload the export there (train/inference/hub.py)


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


def validate_export(config: ExportConfig) -> None:
    """Checks before anything loads; reports every problem found."""
    problems = Problems()
    problems.choice("dtype", config.dtype, DTYPE_NAMES)
    output = Path(config.output).expanduser().absolute()
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        problems.add(f"output={config.output!r} exists and is not an empty folder: give a new folder")
    if config.push_to_hub is not None:
        try:
            check_repo_id(config.push_to_hub)
        except ValueError as error:
            problems.add(str(error))
    problems.raise_if_any()


def check_repo_id(repo_id: str, key: str = "push_to_hub") -> None:
    """Refuse a malformed repo id before anything loads or touches the network."""
    from huggingface_hub.errors import HFValidationError  # the Hub client only where it is asked for
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("it needs exactly one '/' between owner and name")
    except HFValidationError as error:
        reason = str(error).splitlines()[0].rstrip(".")
        raise BadInput(f"{key}={repo_id!r} is not a Hub repo id ({reason}): give owner/name, "
                         f"e.g. my-user/coca-llama-7b") from None


def validate_generate(config: GenerateConfig) -> None:
    """Checks before anything loads; reports every problem found."""
    problems = Problems()
    problems.choice("model.dtype", config.model.dtype, DTYPE_NAMES)
    if config.max_new_tokens < 1:
        problems.add(f"max_new_tokens={config.max_new_tokens} must be >= 1")
    if config.do_sample and (config.temperature <= 0 or not 0 < config.top_p <= 1):
        problems.add(f"temperature={config.temperature}, top_p={config.top_p}: sampling needs temperature > 0 "
                     "and top_p in (0, 1]")
    problems.raise_if_any()
