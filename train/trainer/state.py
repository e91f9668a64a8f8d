"""The trainer's own state in a checkpoint: `trainer_state.json`, written last, the mark of a complete save.

The file holds the TrainerState fields in this order, then the world size that saved it:
{"step", "tokens_seen", "wandb_run_id", "sampler", "tokens_by_source", "world_size"}.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from data.files import write_atomically

STATE_FILE = "trainer_state.json"


@dataclasses.dataclass
class TrainerState:
    step: int = 0  # optimizer steps taken
    tokens_seen: int = 0
    wandb_run_id: str | None = None  # the W&B run a resumed run keeps logging to
    sampler: dict[str, Any] | None = None  # ResumableDistributedSampler.state_dict(), filled in at each save
    # a data mixture's training tokens so far, by source name (data/mixture.py); empty without one
    tokens_by_source: dict[str, int] = dataclasses.field(default_factory=dict)

    def save(self, folder: Path, world_size: int) -> None:
        write_atomically(folder / STATE_FILE, json.dumps({**dataclasses.asdict(self), "world_size": world_size},
                                                         indent=1))

    @classmethod
    def load(cls, folder: Path) -> TrainerState:
        record = read_state(folder)
        # A state saved before a field existed gets the field's default.
        return cls(**{field.name: record[field.name] for field in dataclasses.fields(cls) if field.name in record})


def read_state(folder: Path) -> dict[str, Any]:
    """trainer_state.json as it is on disk, world_size included."""
    return json.loads((folder / STATE_FILE).read_text())


def saved_world_size(folder: Path) -> int:
    return read_state(folder)["world_size"]
