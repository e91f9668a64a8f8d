"""Loading the model's tokenizer and checking it against the model and the packer."""
import os
from pathlib import Path
from typing import Optional

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from data.cache import cache_key, cache_root
from data.errors import first_line
from data.sample_tokenizer import sample_tokenizer_dir
from conf.errors import BadInput

SAMPLE = "sample"


def load_tokenizer(
    name_or_path: Optional[str], model_name_or_path: Optional[str] = None, cache_dir: Optional[str] = None
) -> PreTrainedTokenizerBase:
    """`model.tokenizer`, else the model's own (`model.name_or_path`): a folder, a hub name or "sample".

    Relative paths are relative to the working directory. "sample" builds (once, under
    `cache_dir`) the project's small BPE; see data/sample_tokenizer.py.
    """
    name = name_or_path or model_name_or_path
    if name is None:
        raise BadInput("model.tokenizer and model.name_or_path are both null: set model.tokenizer "
                         "to a tokenizer folder, a hub name or 'sample'")
    if name == SAMPLE:
        source = str(sample_tokenizer_dir(cache_root(cache_dir)))
    elif Path(name).expanduser().exists():
        source = str(Path(name).expanduser())
    elif looks_like_path(name):
        raise BadInput(f"tokenizer folder {name!r} does not exist (model.tokenizer, relative to "
                                f"{os.getcwd()})")
    else:
        source = name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise BadInput(f"cannot load a tokenizer from {name!r}: {first_line(error)}") from error
    if not tokenizer.is_fast:
        raise BadInput(f"tokenizer {name!r} is not backed by the `tokenizers` library; the pipeline needs a "
                         f"fast tokenizer")
    return tokenizer


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    """Fails when some token id would index past the model's embedding table."""
    if len(tokenizer) > vocab_size:
        raise BadInput(
            f"tokenizer {tokenizer.name_or_path!r} has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{vocab_size}: ids >= {vocab_size} have no embedding (use the model's own tokenizer)"
        )


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the model expects each sequence to start with BOS.

    Asked of the tokenizer's behaviour rather than its `add_bos_token` flag, which transformers
    5 leaves False on LLaMA tokenizers that do prepend <s>.
    """
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identifies what the tokenizer turns text into, independent of where it was loaded from."""
    return cache_key(
        tokenizer.backend_tokenizer.to_str(), len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id
    )


def looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else can only have meant a local folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
