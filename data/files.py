"""Files that are either whole or recognisably not: atomic writes, and manifests checked on reading.

Everything the project writes and later trusts (caches, checkpoints, results) goes through
here. `write_atomically` never leaves a half-written file under the final name, even after a
power cut (the data and the rename are fsynced). A manifest records every file of a folder
with its size, and the sha256 of the small ones, at write time; `manifest_problem` then tells
a folder cut short by a full disk or edited since from a sound one, at the cost of a stat
per file (and reading the small ones).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

# Files up to this size are hashed as well as measured: configs, tokenizers, indices. Larger
# ones (token streams, weights) only by size, so that checking a folder stays cheap.
HASH_LIMIT = 16 * 2**20


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Make every file under `folder`, and the folder entries naming them, survive a crash: on
    one node, whichever process wrote them (the page cache is the node's)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for path in [p for p in folder.rglob("*") if p.is_dir()] + [folder]:
        fsync_dir(path)


def write_atomically(path: Path, text: str) -> None:
    """`path` holds `text` or what it held before, whatever happens meanwhile."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def json_ready(value):
    """`value` as strict JSON can hold it: scalars with .item() (tensors, numpy) as Python numbers, and
    non-finite floats as null (an overflowed perplexity, a diverged loss), in dicts and lists too."""
    if hasattr(value, "item") and not isinstance(value, (dict, list)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, name: str, hash_limit: int = HASH_LIMIT, skip: tuple[str, ...] = ()) -> None:
    """Record every file under `folder` (but `name` itself, `skip` and scratch *.tmp files)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name in (name, *skip) or path.name.endswith(".tmp"):
            continue
        size = path.stat().st_size
        files[str(path.relative_to(folder))] = {"size": size, **({"sha256": sha256(path)} if size <= hash_limit else {})}
    write_atomically(folder / name, json.dumps({"files": files}, indent=1))


def manifest_problem(folder: Path, name: str) -> str | None:
    """What is wrong with the files `folder`'s manifest lists, or None; raises FileNotFoundError
    when there is no manifest (the caller decides what an unrecorded folder is worth)."""
    try:
        files = json.loads((folder / name).read_text())["files"]
        entries = {path: entry if isinstance(entry, dict) else {"size": entry} for path, entry in files.items()}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{folder / name} is unreadable"
    for relative, entry in entries.items():
        path = folder / relative
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{path} has {size} bytes, {entry['size']} when written"
        if "sha256" in entry and sha256(path) != entry["sha256"]:
            return f"{path} has changed since it was written (sha256)"
    return None
