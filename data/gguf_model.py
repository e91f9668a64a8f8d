"""A `.gguf` file as a model path: dequantized once into an ordinary transformers folder in the cache.

transformers reads GGUF files itself (`from_pretrained(folder, gguf_file=name)`, with the `gguf`
package), dequantizing every tensor to float32. But a model loaded that way refuses
`save_pretrained`, and it cannot be created partitioned under ZeRO-3. So `model.name_or_path` or
`model.tokenizer` naming a `.gguf` file is turned, once, into a folder holding safetensors
weights, config.json and the tokenizer, under `<cache>/coca-longctx/gguf/<sha256 of the file>/`.
It is built under a scratch name and renamed when whole (data/cache.py), so a kill leaves nothing
that is trusted later; another file, or the same file edited, gets its own folder. Everything
downstream (conversion to CoCA, ZeRO 1-3, checkpoints, `init_from`, export) then reads a plain folder.
"""
from __future__ import annotations

import functools
import logging
import os
import struct
from pathlib import Path
from typing import Optional

from conf.errors import BadInput
from data.cache import cache_root, cached_folder
from data.errors import first_line
from data.files import sha256

log = logging.getLogger(__name__)
SUFFIX = ".gguf"
_MAGIC = b"GGUF"


def is_gguf(name_or_path: Optional[str]) -> bool:
    return name_or_path is not None and name_or_path.lower().endswith(SUFFIX)


def gguf_folder(path: str, cache_dir: Optional[str], key: str = "model.name_or_path") -> Path:
    """The cached transformers folder of the GGUF file `path` (config key `key`, for messages)."""
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise BadInput(f"{key}={path!r} is not a file (relative to {os.getcwd()})")
    with open(file, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise BadInput(f"{key}={path!r} is not a GGUF file (it does not start with {_MAGIC.decode()})")
    stat = file.stat()
    folder, cached = cached_folder(cache_root(cache_dir) / "gguf" / _content_key(file, stat.st_size, stat.st_mtime_ns),
                                   lambda scratch: _dequantize(file, scratch, key), "dequantized GGUF model")
    if not cached:
        log.info("%s dequantized into %s (once: later runs read it from there)", file, folder)
    return folder


@functools.lru_cache(maxsize=None)
def _content_key(file: Path, size: int, mtime_ns: int) -> str:
    # Size and time in the arguments: an edited file is hashed again, an unchanged one once per process.
    return sha256(file)


def _dequantize(file: Path, out: Path, key: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, IndexError, TypeError, RuntimeError, struct.error) as error:
        raise BadInput(f"{key}={str(file)!r}: transformers cannot read it as a causal language model "
                       f"({first_line(error)})") from None
    # The loaded model carries GGUF's quantizer, which save_pretrained refuses: its weights go into
    # a fresh model of the same architecture instead.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
