"""What a checkpoint's weights mean, and the checks that keep a resume or a new stage from changing it.

A checkpoint records the attention variant its W_t/W_k was trained for, the tokenizer its
embeddings index, the sequence length and the training data its sampler position counts in
(`identity.json`; for checkpoints saved before it existed, the same facts are read from its
config.yaml and tokenizer, the data's fingerprint excepted). Resuming continues the same run, so
none of these may change; `model.init_from` starts a new stage, where the length and the data may
change but the tokenizer may not, and a CoCA parent's W_t cannot become a vanilla model's W_k.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import yaml
from transformers import PretrainedConfig

from data.files import write_atomically
from data.tokenizer import load_tokenizer, tokenizer_fingerprint
from conf.errors import BadInput

log = logging.getLogger(__name__)
IDENTITY_FILE = "identity.json"

# Architecture fields that must match for a checkpoint's weights to fit this run's model at all.
_ARCHITECTURE = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size")


@dataclasses.dataclass(frozen=True)
class Identity:
    attention: str  # model.attention
    tokenizer: str  # data.tokenizer.tokenizer_fingerprint of model.tokenizer
    seq_len: int  # data.seq_len
    data: str | None = None  # the training data's fingerprint (PackedDataset.fingerprint); None: not recorded
    coca_slices: str = "all"  # model.coca_slices (checkpoints from before it existed: all)

    def save(self, folder: Path) -> None:
        write_atomically(folder / IDENTITY_FILE, json.dumps(dataclasses.asdict(self), indent=1))


# Each field's config key, as users set it.
_KEYS = {"attention": "model.attention", "tokenizer": "model.tokenizer", "seq_len": "data.seq_len",
         "data": "the training data (data.*)", "coca_slices": "model.coca_slices"}


def saved_identity(folder: Path) -> Identity:
    record = folder / IDENTITY_FILE
    if record.is_file():
        return Identity(**json.loads(record.read_text()))
    # Saved before identity.json: the run's config and tokenizer say the same, but for the data.
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    return Identity(resolved["model"]["attention"], tokenizer_fingerprint(load_tokenizer(str(folder))),
                    resolved["data"]["seq_len"], coca_slices=resolved["model"].get("coca_slices", "all"))


def check_architecture(folder: Path, config: PretrainedConfig) -> None:
    saved = PretrainedConfig.from_json_file(str(folder / "config.json"))
    for key in _ARCHITECTURE:
        ours, theirs = getattr(config, key, None), getattr(saved, key, None)
        if ours != theirs:
            raise BadInput(f"checkpoint {folder} is of another model: {key}={theirs}, this run's model has {ours}")


def check_resume(folder: Path, current: Identity) -> None:
    """A resume must not change any field; `current.data` None: not known yet, checked later."""
    saved = saved_identity(folder)
    for field in dataclasses.fields(Identity):
        before, now = getattr(saved, field.name), getattr(current, field.name)
        if before is None or now is None or before == now:
            if field.name == "data" and before is None and now is not None:
                log.warning("checkpoint %s predates data fingerprints: cannot check that the training data "
                            "is the same", folder)
            continue
        raise BadInput(f"cannot resume from {folder}: {_KEYS[field.name]} was {_value(field.name, before)} there, "
                         f"this run has {_value(field.name, now)}; a resume continues the same run and must not "
                         f"change what its weights mean. To start a new stage from these weights, give "
                         f"model.init_from={folder} and a new run_dir")


def check_init_from(folder: Path, current: Identity) -> None:
    """A new stage may change the length and the data, not the tokenizer; nor turn CoCA into vanilla."""
    saved = saved_identity(folder)
    if saved.tokenizer != current.tokenizer:
        raise BadInput(f"model.init_from={folder}: model.tokenizer was {_value('tokenizer', saved.tokenizer)} "
                         f"there, this run has {_value('tokenizer', current.tokenizer)}: its embeddings index other "
                         "tokens; use the parent's tokenizer")
    if saved.attention != "vanilla" and current.attention == "vanilla":
        raise BadInput(f"model.init_from={folder} is a CoCA model (model.attention={saved.attention}): its "
                         "k_proj holds W_t, which cannot serve as a vanilla model's W_k; keep "
                         "model.attention=slack or exact")
    if saved.attention != "vanilla" and saved.coca_slices != current.coca_slices:
        raise BadInput(f"model.init_from={folder} is a CoCA model with model.coca_slices={saved.coca_slices}, "
                         f"this run has {current.coca_slices}: its k_proj rows would change meaning (W_t against "
                         f"W_k); keep model.coca_slices={saved.coca_slices}")


def _value(field: str, value) -> str:
    return f"fingerprint {value[:12]}" if field in ("tokenizer", "data") else str(value)
