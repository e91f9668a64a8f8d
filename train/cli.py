"""Running a command's plain function from its Hydra entry point."""
import logging
import os
import sys
from typing import Any, Callable


def run_or_exit(command: str, function: Callable[[Any], Any], config: Any) -> Any:
    """`function(config)`'s result. Bad input (ValueError, FileNotFoundError) ends the process
    with one line and status 2; HYDRA_FULL_ERROR=1 shows the traceback instead."""
    try:
        return function(config)
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger(command).error("%s: %s", type(error).__name__, error)
        sys.exit(2)
