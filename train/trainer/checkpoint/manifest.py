"""`manifest.json`: every file a save wrote, with its size (and the sha256 of the small ones).

Written before the completion mark, so that a checkpoint damaged later (a full disk, a copy cut
short, a file edited by hand) is recognised before DeepSpeed tries to read it.
"""
from __future__ import annotations

from pathlib import Path

from data.files import manifest_problem, write_manifest as write_files
from train.trainer.state import STATE_FILE

MANIFEST_FILE = "manifest.json"


def write_manifest(folder: Path) -> None:
    write_files(folder, MANIFEST_FILE, skip=(STATE_FILE,))


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint's files, or None. A checkpoint saved before
    manifests existed has none and is trusted, as it was then."""
    try:
        return manifest_problem(folder, MANIFEST_FILE)
    except FileNotFoundError:
        return None
