"""Where the pipeline keeps what it builds, and how it publishes it safely."""
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import datasets.config
from datasets.fingerprint import Hasher


def cache_root(cache_dir: Optional[str]) -> Path:
    """Our own folder inside `data.cache_dir`, or inside datasets' cache when that is null."""
    base = Path(cache_dir).expanduser() if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    return base / "coca-longctx"


def cache_key(*parts: object) -> str:
    return Hasher.hash(parts)


def source_fingerprint(*files: Path) -> str:
    """Keys caches derived from these modules' code, so that editing the code rebuilds them."""
    return cache_key(*(f.read_bytes() for f in files))


@contextmanager
def publish_dir(final: Path) -> Iterator[Path]:
    """Yields a scratch folder that becomes `final` only once the block has succeeded.

    Readers trust `final` as soon as it exists, so it must never be seen half-written: a run
    killed mid-way leaves only a scratch folder, which nothing reads. When two processes race,
    the first rename wins and the loser's identical copy is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        try:
            os.rename(scratch, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
