"""What torchrun starts in each worker: `python -m train.finetune`, plus a note of how it ended.

torchrun reports any worker that exits non-zero as its own exit status 1, so the trainer's 75
(checkpoint saved after a stop signal or the wall-time budget: run again) would not reach the
launch scripts. The trainer runs in this process, as with `-m`, so the signals torchrun passes
on reach its handlers directly; its status is written to COCA_LAUNCH_STATUS_DIR/rank-<RANK>
when the launch script has created that folder on this node.
"""
import os
import runpy
import sys
from pathlib import Path


def _exit_status(code) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1  # sys.exit("message") exits 1


def main() -> None:
    # `python -m` from the repository root would put the root first on sys.path; a script puts
    # its own folder there instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    status = 1  # an exception propagating out of the trainer
    try:
        runpy.run_module("train.finetune", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
        raise
    finally:
        folder = os.environ.get("COCA_LAUNCH_STATUS_DIR")
        if folder and os.path.isdir(folder):
            Path(folder, f"rank-{os.environ.get('RANK', '0')}").write_text(f"{status}\n")


if __name__ == "__main__":
    main()
