"""Typed schema of the fine-tuning run's configuration, and the checks it cannot express.

`conf/finetune.yaml` lists `finetune_schema` first in its defaults (train.finetune and
data.prepare register it), so every group file is merged into these dataclasses: an unknown
key or a wrong type fails at compose time. `validate` checks values before any expensive work.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from conf.checks import Problems
from conf.data_schema import DataConfig

# The values some keys allow.
# model.attention: CoCA's variants. train/coca.py repeats them (it ships alone in exports and
# cannot import conf); tests/test_hub.py keeps the two equal.
VARIANTS = ("vanilla", "slack", "exact")
# model.t_init: train/coca.py's (k_proj, random), and fit, which the trainer does after the parent loads
T_INITS = ("k_proj", "random", "fit")
SLICES = ("all", "low_frequency")  # model.coca_slices
TRAINABLE = ("all", "t_only", "qkv")  # model.trainable: the paper's stages
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # model.dtype (train.model.DTYPES)
PRECISIONS = ("fp32", "bf16", "fp16")  # trainer.precision
LOSSES = ("lm",)  # trainer.loss
SCHEDULES = ("cosine", "linear", "constant")  # optim.schedule
LOGGER_MODES = ("online", "offline", "disabled")  # logger.mode


@dataclass
class LoraConfig:
    """LoRA through peft (train/lora.py). LongLoRA found that LoRA extends context only when the
    embeddings and norms train too: they do by default (`train_fully`)."""

    rank: int = 0  # 0: no LoRA, every weight the model.trainable setting names trains
    alpha: float = 16.0
    dropout: float = 0.0
    # the linear layers that get adapters; CoCA's W_t is stored as k_proj, so keep it here or in train_fully
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # parameters that train whole beside the adapters: those whose name contains one of these
    train_fully: List[str] = field(default_factory=lambda: ["embed_tokens", "norm"])


@dataclass
class ModelConfig:
    # hub name or local folder of a LLaMA-family checkpoint; null: random init from `arch`
    name_or_path: Optional[str] = None
    # defaults to name_or_path; "sample" is the byte-level BPE the project trains on its sample corpus
    tokenizer: Optional[str] = None
    attention: str = "slack"  # vanilla | slack | exact
    # all: the constraint on every 2-D RoPE slice (the paper's) | low_frequency: only on the slices
    # whose wavelength exceeds the training length (max_position_embeddings); the rest stay vanilla
    coca_slices: str = "all"
    # k_proj | random | fit: least squares on the parent's scores (a vanilla name_or_path or init_from;
    # train/trainer/fit_w_t.py)
    t_init: str = "k_proj"
    trainable: str = "all"  # all | t_only | qkv
    # transformers' rope_parameters overrides, e.g. {rope_type: linear, factor: 4.0}; null: none.
    # Typed Any because OmegaConf 2.3 cannot merge a command-line dict into a null Dict node;
    # the trainer checks that it is a mapping.
    rope_scaling: Any = None
    gradient_checkpointing: bool = False
    # weights only (no optimizer state) from a previous run's checkpoint or an exported folder
    init_from: Optional[str] = None
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 | flex_attention
    dtype: str = "float32"  # float32 | bfloat16 | float16
    # LlamaConfig fields for random init (name_or_path: null)
    arch: Dict[str, Any] = field(default_factory=dict)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    schedule: str = "cosine"  # cosine | linear | constant (each after a linear warmup)
    warmup_steps: int = 5  # >= 1: DeepSpeed's schedules need a warmup
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio; linear decays to 0


@dataclass
class TrainerConfig:
    max_steps: int = 30
    micro_batch_size: int = 2
    grad_accum: int = 1
    # DeepSpeed finds non-finite gradients through this norm and skips those steps: keep it > 0
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    # lm: next-token cross-entropy (attention distillation was tried as a conversion stage and
    # removed: it lost, bench/RESULTS.md)
    loss: str = "lm"
    save_every: int = 10
    keep_last: int = 2
    eval_every: int = 10
    eval_batches: int = 4
    log_every: int = 1
    # stop and save this many minutes after start (set it below the job's time limit); null: none
    max_wall_time_min: Optional[float] = None
    # how long a collective may wait for the slowest rank (a long checkpoint save on a slow
    # filesystem, say); null: DeepSpeed's, DEEPSPEED_TIMEOUT or 10 minutes. The data build at
    # start-up has its own 24-hour wait.
    collective_timeout_min: Optional[float] = None
    # this many skipped (non-finite) steps in a row stop the run
    max_bad_steps: int = 3
    # ranks that share each sequence (DeepSpeed Ulysses); must divide the world size and the heads
    sequence_parallel_size: int = 1
    # DeepSpeed's tiled compute for long sequences: the MLP, and the logits with the loss, run
    # tile_tokens tokens at a time, so their large intermediates never exist for the whole sequence
    tiled_mlp: bool = False
    tiled_logits: bool = False
    tile_tokens: Optional[int] = None  # null: the model's hidden_size


@dataclass
class LoggerConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "coca-longctx"
    entity: Optional[str] = None
    name: Optional[str] = None  # null: the run_dir's name
    tags: List[str] = field(default_factory=list)


@dataclass
class FinetuneConfig:
    name: str = "tiny"  # names the run: outputs/<name>/<date>_<time> unless run_dir is set
    # null: outputs/<name>/slurm-<job id> under SLURM, else outputs/<name>/<date>_<time> from rank 0
    run_dir: Optional[str] = None
    resume: str = "auto"  # auto | none | PATH of a checkpoint (a run_dir, checkpoints/ or step-N)
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # DeepSpeed's own JSON config (conf/deepspeed/*.yaml); DeepSpeed validates it
    deepspeed: Dict[str, Any] = field(default_factory=dict)



def validate(config: FinetuneConfig) -> None:
    """Checks the schema cannot express, before any expensive work; reports every problem found."""
    t, m = config.trainer, config.model
    problems = Problems()
    problems.choice("model.attention", m.attention, VARIANTS)
    problems.choice("model.coca_slices", m.coca_slices, SLICES)
    problems.choice("model.t_init", m.t_init, T_INITS)
    problems.choice("model.trainable", m.trainable, TRAINABLE)
    problems.choice("model.dtype", m.dtype, DTYPE_NAMES)
    problems.choice("trainer.precision", t.precision, PRECISIONS)
    problems.choice("trainer.loss", t.loss, LOSSES)
    if m.t_init == "fit":
        needs = {"a vanilla parent (model.name_or_path or model.init_from)": m.init_from is not None or m.name_or_path is not None,
                 "model.attention=slack or exact": m.attention != "vanilla",
                 "trainer.sequence_parallel_size=1": t.sequence_parallel_size == 1}
        missing = [need for need, met in needs.items() if not met]
        if missing:
            problems.add(f"model.t_init=fit fits W_t to a vanilla parent's scores: it needs {', '.join(missing)} "
                         "(or model.t_init=k_proj: W_t from W_k)")
    if m.lora.rank:
        _check_lora(m, problems)
    if t.precision == "fp16" and m.attention != "vanilla" and m.attn_implementation == "eager":
        # bench/precision.py: sdpa and flash keep the scores in fp32; eager stores them in fp16.
        problems.add(f"trainer.precision=fp16 with model.attn_implementation=eager is refused for "
                     f"model.attention={m.attention}: eager keeps the logits in fp16, and CoCA's (cubic in the "
                     "projections) pass 65504 at outlier channels of ~64; use sdpa or flash_attention_2, or bf16")
    problems.choice("optim.schedule", config.optim.schedule, SCHEDULES)
    problems.choice("logger.mode", config.logger.mode, LOGGER_MODES)
    for key in ("max_steps", "micro_batch_size", "grad_accum", "save_every", "keep_last", "eval_every", "log_every",
                "max_bad_steps", "sequence_parallel_size"):
        if getattr(t, key) < 1:
            problems.add(f"trainer.{key}={getattr(t, key)} must be >= 1")
    if config.optim.warmup_steps < 1:
        problems.add(f"optim.warmup_steps={config.optim.warmup_steps} must be >= 1 (DeepSpeed's schedules need one)")
    if t.collective_timeout_min is not None and t.collective_timeout_min <= 0:
        problems.add(f"trainer.collective_timeout_min={t.collective_timeout_min} must be > 0, or null for "
                     "DeepSpeed's default")
    if t.tile_tokens is not None and t.tile_tokens < 1:
        problems.add(f"trainer.tile_tokens={t.tile_tokens} must be >= 1, or null for the model's hidden_size")
    if t.grad_clip <= 0:
        problems.add(f"trainer.grad_clip={t.grad_clip} must be > 0: DeepSpeed detects non-finite gradients "
                     "through the clipping norm and skips those steps")
    if config.resume not in ("auto", "none") and not Path(config.resume).exists():
        problems.add(f"resume={config.resume!r} does not exist; use auto, none or a checkpoint path")
    if m.init_from is not None and not Path(m.init_from).exists():
        problems.add(f"model.init_from={m.init_from!r} does not exist")
    problems.raise_if_any()


def _check_lora(m: ModelConfig, problems: Problems) -> None:
    lora = m.lora
    if lora.rank < 0 or lora.alpha <= 0 or not 0 <= lora.dropout < 1:
        problems.add(f"model.lora: rank={lora.rank} must be >= 0, alpha={lora.alpha} > 0 and dropout={lora.dropout} "
                     "in [0, 1)")
    if not lora.target_modules:
        problems.add("model.lora.target_modules is empty: name the linear layers that get adapters, e.g. [q_proj, v_proj]")
    if m.trainable != "all":
        problems.add(f"model.lora with model.trainable={m.trainable}: LoRA decides what trains; keep trainable=all")
    if m.name_or_path is None and m.init_from is None:
        problems.add("model.lora adapts a pretrained model: give model.name_or_path or model.init_from")
    w_t = "model.layers.0.self_attn.k_proj.weight"  # how W_t's name reads
    w_t_trains = "k_proj" in lora.target_modules or any(part in w_t for part in lora.train_fully)
    if m.attention != "vanilla" and not w_t_trains:
        problems.add(f"model.lora with model.attention={m.attention}: W_t (k_proj) must train; add k_proj to "
                     f"model.lora.target_modules or model.lora.train_fully")
    if m.t_init != "k_proj":
        problems.add(f"model.lora with model.t_init={m.t_init}: a LoRA checkpoint rebuilds its base from the parent, "
                     "where W_t starts as W_k; use model.t_init=k_proj")
