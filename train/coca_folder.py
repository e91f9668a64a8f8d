"""The folder format of an exported CoCA model, written by `python -m train.export`, read by every loader.

A CoCA export is a LLaMA folder (same weights, W_t stored as `k_proj`) whose config.json says
`model_type: coca_llama` and `architectures: [CocaLlamaForCausalLM]`, with an `auto_map` naming
three files shipped beside the weights: this project's coca.py, configuration_coca_llama.py and
modeling_coca_llama.py, copied verbatim (their sha256 recorded under `coca_code_sha256`).
transformers runs them with `trust_remote_code=True` and refuses the folder without it.

The project's own loaders do not run the shipped copies: they read the folder as the LlamaConfig
and LLaMA model they always use, converted by train/coca.py, after checking that the copies are
complete and unedited. Folders of earlier versions (model_type llama with `coca_variant`) read as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from transformers.utils import cached_file

from train.coca import CONFIG_KEY
from conf.errors import BadInput

log = logging.getLogger(__name__)

MODEL_TYPE = "coca_llama"
ARCHITECTURE = "CocaLlamaForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_coca_llama.CocaLlamaConfig",
    "AutoModelForCausalLM": "modeling_coca_llama.CocaLlamaForCausalLM",
}
SHIPPED_FILES = ("coca.py", "configuration_coca_llama.py", "modeling_coca_llama.py")
CODE_KEY = "coca_code_sha256"
_PROJECT_DIR = Path(__file__).resolve().parent  # where the shipped files' originals live (train/)
# Keys the CoCA format adds to LLaMA's config.json, removed again when the project reads it.
_FORMAT_KEYS = ("model_type", "architectures", "auto_map", CODE_KEY)


def project_file(name: str) -> Path:
    return _PROJECT_DIR / name


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_coca_export(config_dict: dict[str, Any]) -> bool:
    return config_dict.get("model_type") == MODEL_TYPE


def ships_custom_code(config_dict: dict[str, Any]) -> bool:
    """Whether an export of a model with this config needs the custom code: every CoCA variant
    but vanilla, which stays a plain LLaMA folder that any LLaMA tool reads."""
    return config_dict.get(CONFIG_KEY) not in (None, "vanilla")


def ship_custom_code(folder: Path) -> None:
    """Turn the LLaMA folder `save_pretrained` wrote into a CoCA export: copy the code, rewrite config.json."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    for name in SHIPPED_FILES:
        shutil.copyfile(project_file(name), folder / name)
    config.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], auto_map=dict(AUTO_MAP))
    config[CODE_KEY] = {name: sha256(folder / name) for name in SHIPPED_FILES}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def llama_config_dict(name_or_path: str | Path, config_dict: dict[str, Any]) -> dict[str, Any]:
    """A CoCA export's config.json as the plain LLaMA config (with `coca_variant`) that the project's
    models use, after checking the shipped code. Without auto_map, nothing the project saves from
    this config later (a checkpoint, an export) can point at code that is not beside it."""
    check_shipped_code(name_or_path, config_dict)
    llama = {k: v for k, v in config_dict.items() if k not in _FORMAT_KEYS}
    return {**llama, "model_type": "llama"}


def check_shipped_code(name_or_path: str | Path, config_dict: dict[str, Any]) -> None:
    """Refuse an export whose shipped code is missing or edited; warn when it comes from another
    version of this project (then transformers' remote code and this project's loaders differ)."""
    recorded = config_dict.get(CODE_KEY) or {}
    fix = "export the checkpoint again with python -m train.export"
    for name in SHIPPED_FILES:
        path = cached_file(str(name_or_path), name, _raise_exceptions_for_missing_entries=False)
        if path is None:
            raise BadInput(f"{name_or_path} is a CoCA export ({MODEL_TYPE}) but lacks its custom code "
                                    f"file {name}: {fix}")
        found = sha256(Path(path))
        if found != recorded.get(name):
            raise BadInput(f"{name_or_path}/{name} was edited: its sha256 {found[:12]}... is not the "
                             f"{str(recorded.get(name))[:12]}... that config.json's {CODE_KEY} records; {fix}")
        if found != sha256(project_file(name)):
            log.warning("%s/%s comes from another version of this project than %s: this project's loaders "
                        "run their own copy, trust_remote_code=True runs the folder's", name_or_path, name,
                        project_file(name))
