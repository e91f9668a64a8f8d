"""A seeded, sharded, exactly resumable order over the training blocks."""
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler
from conf.errors import BadInput


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
    another world size deals the same global order to other ranks; with the same B the global
    batches are the very same blocks. Resuming with another B (more nodes, a smaller
    micro-batch after an out-of-memory error) goes on from the same sample: the epoch then ends
    where fewer than the new B samples remain, a tail that is dropped as the cut to whole
    batches always drops one.
    """

    def __init__(self, num_blocks: int, global_batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise BadInput(f"rank={rank} of world_size={world_size}: need 0 <= rank < world_size")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise BadInput(f"global_batch_size={global_batch_size} must be a positive multiple of "
                             f"world_size={world_size}")
        if global_batch_size > num_blocks:
            raise BadInput(f"global_batch_size={global_batch_size} is more than the {num_blocks} training blocks: "
                             f"lower it or data.seq_len, or add data")
        self.num_blocks = num_blocks
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    @property
    def epoch_end(self) -> int:
        """Where this epoch stops: after the last whole global batch that fits from `position`."""
        return self.position + (self.num_blocks - self.position) // self.global_batch_size * self.global_batch_size

    def _order(self) -> np.ndarray:
        """This epoch's global order (kept: the mixture's share count asks for it every step)."""
        if getattr(self, "_order_of", (None,))[0] != self.epoch:
            self._order_of = (self.epoch, np.random.default_rng(self.seed + self.epoch).permutation(self.num_blocks))
        return self._order_of[1]

    def __iter__(self) -> Iterator[int]:
        # The slice is taken now: advance() during iteration moves the state, not this pass.
        mine = self._order()[self.position + self.rank:self.epoch_end:self.world_size]
        return (int(i) for i in mine)

    def next_global_batch(self) -> np.ndarray:
        """The blocks of the global batch that the next advance() records as consumed, every rank's."""
        return self._order()[self.position:self.position + self.global_batch_size]

    def __len__(self) -> int:
        return (self.epoch_end - self.position) // self.world_size

    def advance(self, steps: int = 1) -> None:
        """Records that `steps` optimizer steps, i.e. global batches, have been consumed."""
        position = self.position + steps * self.global_batch_size
        if position > self.epoch_end:
            raise BadInput(f"advance({steps}) goes past the end of epoch {self.epoch} "
                             f"({self.epoch_end} samples, {self.position} consumed)")
        self._set(self.epoch, position)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_blocks": self.num_blocks}

    def load_state_dict(self, state: dict) -> None:
        if (state["seed"], state["num_blocks"]) != (self.seed, self.num_blocks):
            raise BadInput(f"sampler state is for {state['num_blocks']} blocks with seed {state['seed']}, this run "
                             f"has {self.num_blocks} with seed {self.seed}: the data, seq_len or seed changed since "
                             f"the checkpoint")
        position = state["position"]
        if not 0 <= position <= self.num_blocks:
            raise BadInput(f"sampler position {position} is outside an epoch of {self.num_blocks} blocks")
        self._set(state["epoch"], position)

    def _set(self, epoch: int, position: int) -> None:
        # The epoch is over once fewer than a global batch of samples remain.
        rolls = self.num_blocks - position < self.global_batch_size
        self.epoch, self.position = (epoch + 1, 0) if rolls else (epoch, position)
