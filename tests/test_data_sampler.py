"""The sampler: sharding, determinism and exact resume under accumulation and world-size changes."""
import pytest
from torch.utils.data import DataLoader, Dataset

from data.sampler import ResumableDistributedSampler


class Indices(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


class Run:
    """A data-parallel job in one process: each rank's DataLoader, stepped like a trainer."""

    def __init__(self, num_blocks, micro, accum, world, seed=0, state=None, workers=0):
        self.accum = accum
        batch = micro * accum * world
        self.samplers = [ResumableDistributedSampler(num_blocks, batch, r, world, seed) for r in range(world)]
        for sampler in self.samplers:
            if state:
                sampler.load_state_dict(state)
        self.loaders = [DataLoader(Indices(num_blocks), batch_size=micro, sampler=s, num_workers=workers)
                        for s in self.samplers]
        self.iters = [iter(loader) for loader in self.loaders]

    def _next(self, rank):
        try:
            return next(self.iters[rank]).tolist()
        except StopIteration:  # the epoch is over: the next pass starts the next one
            self.iters[rank] = iter(self.loaders[rank])
            return next(self.iters[rank]).tolist()

    def step(self):
        """One optimizer step; returns the global batch in global order."""
        per_rank = [sum((self._next(r) for _ in range(self.accum)), []) for r in range(len(self.samplers))]
        for sampler in self.samplers:
            sampler.advance()
        return [i for column in zip(*per_rank) for i in column]

    def steps(self, n):
        return [self.step() for _ in range(n)]


def test_ranks_are_disjoint_and_cover_the_epoch():
    for world in (1, 2, 3, 4):
        batch = 6 * world
        samplers = [ResumableDistributedSampler(101, batch, r, world, seed=5) for r in range(world)]
        shards = [list(s) for s in samplers]
        assert all(len(shard) == len(s) == (101 // batch * batch) // world for shard, s in zip(shards, samplers))
        everything = sum(shards, [])
        assert len(set(everything)) == len(everything) == 101 // batch * batch
        assert set(everything) <= set(range(101))


def test_order_is_seeded_and_reshuffled_every_epoch():
    run = Run(40, micro=2, accum=2, world=2, seed=1)
    epoch0, epoch1 = run.steps(5), run.steps(5)
    assert sorted(sum(epoch0, [])) == sorted(sum(epoch1, [])) == list(range(40))
    assert epoch0 != epoch1
    assert Run(40, 2, 2, 2, seed=1).steps(10) == epoch0 + epoch1
    assert Run(40, 2, 2, 2, seed=2).steps(5) != epoch0
    assert run.samplers[0].state_dict() == {"epoch": 2, "position": 0, "seed": 1, "num_blocks": 40}


@pytest.mark.parametrize(
    "before, after",
    [
        ((2, 3, 2), (2, 3, 2)),  # same layout
        ((2, 3, 2), (1, 3, 4)),  # twice the ranks, same global batch
        ((2, 3, 2), (3, 4, 1)),  # one rank, more accumulation
        ((4, 1, 3), (2, 1, 6)),
    ],
)
def test_resume_sees_exactly_the_uninterrupted_blocks(before, after):
    num_blocks, total, stop = 100, 11, 6  # 11 steps of 12 cross the epoch end (8 steps per epoch)
    reference = Run(num_blocks, *before, seed=3).steps(total)
    first = Run(num_blocks, *before, seed=3, workers=1)  # a worker reads ahead of the consumed position
    head = first.steps(stop)
    state = first.samplers[0].state_dict()
    assert all(s.state_dict() == state for s in first.samplers)
    tail = Run(num_blocks, *after, seed=3, state=state).steps(total - stop)
    assert head + tail == reference
    assert state == {"epoch": 0, "position": stop * 12, "seed": 3, "num_blocks": num_blocks}


def test_resume_across_an_epoch_boundary():
    reference = Run(30, 2, 1, 3, seed=9).steps(12)  # 5 steps per epoch
    first = Run(30, 2, 1, 3, seed=9)
    head = first.steps(5)
    assert first.samplers[0].state_dict()["epoch"] == 1
    assert head + Run(30, 6, 1, 1, seed=9, state=first.samplers[0].state_dict()).steps(7) == reference


def test_bad_sampler_settings_and_states_fail_clearly():
    with pytest.raises(ValueError, match="rank=2 of world_size=2"):
        ResumableDistributedSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="global_batch_size=3 must be a positive multiple of world_size=2"):
        ResumableDistributedSampler(10, 3, rank=0, world_size=2)
    with pytest.raises(ValueError, match="global_batch_size=16 is more than the 10 training blocks"):
        ResumableDistributedSampler(10, 16)
    sampler = ResumableDistributedSampler(10, 4, seed=1)
    with pytest.raises(ValueError, match="state is for 11 blocks with seed 1"):
        sampler.load_state_dict({"epoch": 0, "position": 4, "seed": 1, "num_blocks": 11})
    with pytest.raises(ValueError, match="sampler position 11 is outside an epoch of 10 blocks"):
        ResumableDistributedSampler(10, 4, world_size=2, seed=1).load_state_dict(
            {"epoch": 0, "position": 11, "seed": 1, "num_blocks": 10})
    sampler.advance(2)
    assert (sampler.epoch, sampler.position) == (1, 0)
    with pytest.raises(ValueError, match=r"advance\(3\) goes past the end of epoch 1"):
        sampler.advance(3)


@pytest.mark.parametrize("micro, world", [(3, 1), (1, 2), (5, 3)], ids=["micro-3", "2-ranks", "15-per-step"])
def test_resume_with_another_global_batch_goes_on_from_the_same_sample(micro, world):
    """The issue's case: 525 blocks, saved at step 10 with micro-batch 2, resumed with another
    global batch; then across the epoch boundary into the next epoch."""
    blocks = 525
    first = Run(blocks, 2, 1, 1, seed=4)
    before = first.steps(10)
    state = first.samplers[0].state_dict()
    resumed = Run(blocks, micro, 1, world, seed=4, state=state)
    batch = micro * world
    per_epoch = (blocks - 20) // batch
    after = resumed.steps(per_epoch)
    seen = [i for step in before + after for i in step]
    assert len(seen) == len(set(seen))  # no block twice within the epoch
    assert blocks - len(seen) < batch  # only the tail shorter than a batch is left out
    assert all(len(step) == batch for step in after)
    assert resumed.samplers[0].state_dict()["epoch"] == 1 and resumed.samplers[0].position == 0
    nxt = resumed.steps(blocks // batch)  # the next epoch: a fresh order, every whole batch of it
    assert len({i for step in nxt for i in step}) == blocks // batch * batch
