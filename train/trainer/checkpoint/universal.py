"""DeepSpeed's universal checkpoint form, for resuming at another data-parallel size.

ZeRO shards optimizer state by data-parallel rank, so a run with another world size can only
load the universal form (engine config `checkpoint.load_universal`). Rank 0 makes it once, inside
the step folder, while the other ranks wait: for a 7B model that takes longer than a training
collective may wait, so they wait on the long barrier the data build uses.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from train.trainer import distributed


def to_universal(folder: Path) -> Path:
    universal = folder / "universal"
    if distributed.is_main() and not universal.is_dir():
        tmp = folder / "universal.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(folder),
                        "--output_folder", str(tmp), "--inject_missing_state"], check=True)
        os.replace(tmp, universal)
    distributed.wait_long()
    return universal
