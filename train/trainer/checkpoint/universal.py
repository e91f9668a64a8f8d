"""DeepSpeed's universal checkpoint form, for resuming at another data-parallel size.

ZeRO shards optimizer state by data-parallel rank, so a run with another world size can only
load the universal form (engine config `checkpoint.load_universal`). Rank 0 makes it once, inside
the step folder, while the other ranks wait: for a 7B model that takes longer than a training
collective may wait, so they wait on a long gloo group, and hear at once if it fails.

The step folder may be another run's (a `model.init_from` parent that several stages start from
at once), which this run does not lock: each conversion writes under a name of its own and
renames it into place; the first to finish wins and the others use its result.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from train.trainer import distributed

UNIVERSAL_DIR = "universal"


def to_universal(folder: Path) -> Path:
    return distributed.main_decides(lambda: _converted(folder), long=True)


def _converted(folder: Path) -> Path:
    universal = folder / UNIVERSAL_DIR
    if universal.is_dir():
        return universal
    scratch = Path(tempfile.mkdtemp(prefix=f"{UNIVERSAL_DIR}.tmp-", dir=folder))
    try:
        convert(folder, scratch / UNIVERSAL_DIR)
        os.replace(scratch / UNIVERSAL_DIR, universal)
    except OSError:
        if not universal.is_dir():  # not a rename that lost the race to another conversion
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return universal


def convert(folder: Path, output: Path) -> None:
    subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(folder),
                    "--output_folder", str(output), "--inject_missing_state"], check=True)
