"""A seeded, sharded, exactly resumable order over the training blocks."""
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[int]):
    """Epoch e visits the blocks in one global order, a permutation seeded by `seed + e`. The
    epoch is cut to whole global batches, so every rank runs the same number of micro-batches
    and no accumulation is left half done.

    Rank r of W takes global positions r, r + W, r + 2W, ... Whatever W, the first n global
    positions are therefore exactly the first n / W blocks of every rank, and global batch k
    is positions [k * B, (k + 1) * B) of the global order, with B = `global_batch_size` =
    micro-batch size x gradient accumulation steps x W.

    The state is (epoch, position), position counting the samples consumed globally in that
    epoch. The sampler cannot see what the training loop has consumed (a DataLoader reads
    ahead of it), so the loop calls `advance()` after each optimizer step; after the last
    one of an epoch the state rolls to (epoch + 1, 0). A run resumed from `state_dict()`
    continues the global order where it stopped: no block twice, none skipped. Resuming with
    another world size W' works when position is a multiple of W' (true whenever W' divides
    B); with the same B the global batches are the very same blocks, only dealt to
    different ranks.
    """

    def __init__(self, num_blocks: int, global_batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} of world_size={world_size}: need 0 <= rank < world_size")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                             f"world_size={world_size}")
        if global_batch_size > num_blocks:
            raise ValueError(f"global_batch_size={global_batch_size} is more than the {num_blocks} training blocks: "
                             f"lower it or data.seq_len, or add data")
        self.num_blocks = num_blocks
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    @property
    def samples_per_epoch(self) -> int:
        return self.num_blocks // self.global_batch_size * self.global_batch_size

    def __iter__(self) -> Iterator[int]:
        # The slice is taken now: advance() during iteration moves the state, not this pass.
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.num_blocks)
        mine = order[self.position + self.rank:self.samples_per_epoch:self.world_size]
        return (int(i) for i in mine)

    def __len__(self) -> int:
        return (self.samples_per_epoch - self.position) // self.world_size

    def advance(self, steps: int = 1) -> None:
        """Records that `steps` optimizer steps, i.e. global batches, have been consumed."""
        position = self.position + steps * self.global_batch_size
        if position > self.samples_per_epoch:
            raise ValueError(f"advance({steps}) goes past the end of epoch {self.epoch} "
                             f"({self.samples_per_epoch} samples, {self.position} consumed)")
        self._set(self.epoch, position)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_blocks": self.num_blocks}

    def load_state_dict(self, state: dict) -> None:
        if (state["seed"], state["num_blocks"]) != (self.seed, self.num_blocks):
            raise ValueError(f"sampler state is for {state['num_blocks']} blocks with seed {state['seed']}, this run "
                             f"has {self.num_blocks} with seed {self.seed}: the data, seq_len or seed changed since "
                             f"the checkpoint")
        position = state["position"]
        if position % self.world_size or position > self.samples_per_epoch:
            raise ValueError(f"sampler position {position} cannot resume with world_size={self.world_size} and "
                             f"{self.samples_per_epoch} samples per epoch: it must be a multiple of world_size "
                             f"within the epoch")
        self._set(state["epoch"], position)

    def _set(self, epoch: int, position: int) -> None:
        self.epoch, self.position = (epoch + 1, 0) if position == self.samples_per_epoch else (epoch, position)
