"""Where the pipeline keeps what it builds, and how it publishes and checks it.

Every cache folder is built under a scratch name, given a manifest (data/files.py), and only
then renamed into place: a run killed half-way leaves nothing that is trusted later. On the
way back in, a folder whose files no longer match its manifest (a disk that filled up, a file
cut short or edited by hand) is set aside, named in a warning, and built again.
"""
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Optional

import datasets.config
from datasets.fingerprint import Hasher

from data.files import manifest_problem, write_manifest

log = logging.getLogger(__name__)
MANIFEST_FILE = ".manifest.json"


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
    """Yields a scratch folder that becomes `final`, with its manifest, once the block has succeeded.

    Readers trust `final` as soon as it exists, so it must never be seen half-written: a run
    killed mid-way leaves only a scratch folder, which nothing reads. When two processes race,
    the first rename wins and the loser's identical copy is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        write_manifest(scratch, MANIFEST_FILE)
        try:
            os.rename(scratch, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def damage(folder: Path) -> Optional[str]:
    """Why a published cache folder cannot be trusted, or None."""
    try:
        return manifest_problem(folder, MANIFEST_FILE)
    except FileNotFoundError:
        return f"{folder} has no {MANIFEST_FILE} (written by an earlier version, or not by this project)"


def cached_folder(folder: Path, build: Callable[[Path], None], what: str) -> tuple[Path, bool]:
    """`folder`, built by `build(scratch)` unless a sound copy is already there; and whether it was.

    A damaged copy is renamed aside (`.damaged-<name>-<time>`, never read again) and rebuilt.
    """
    if folder.is_dir():
        problem = damage(folder)
        if problem is None:
            return folder, True
        aside = folder.with_name(f".damaged-{folder.name}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")
        try:
            os.rename(folder, aside)
            log.warning("the cached %s at %s is damaged (%s): moved to %s and built again", what, folder, problem,
                        aside)
        except FileNotFoundError:  # another process set it aside first
            pass
    with publish_dir(folder) as scratch:
        build(scratch)
    return folder, False
