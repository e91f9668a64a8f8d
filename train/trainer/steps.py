"""The work of one optimizer step, and of a validation: micro-batches through the engine."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from conf import FinetuneConfig
from train.diagnose import explain_non_finite
from train.parallel import sequence_parallel
from train.trainer import distributed
from train.trainer.loss import mean_loss, shift_labels


class Steps:
    """One optimizer step over its micro-batches, and validation; with or without sequence parallelism."""

    def __init__(self, config: FinetuneConfig, engine, train_set, val_set, sampler, rank: int, world: int, mpu,
                 logits_tile: int | None):
        self.config, self.engine, self.sampler, self.mpu = config, engine, sampler, mpu
        self.logits_tile = logits_tile
        self.train_set = train_set
        self.batches = self._epoch()
        # Under sequence parallelism each micro-batch of the group is one micro-step of every rank.
        self.micro_steps = config.trainer.grad_accum * (mpu.get_sequence_parallel_world_size() if mpu else 1)
        self.val_set = val_set
        self.val_sampler = None if val_set is None else DistributedSampler(val_set, world, rank, shuffle=False)

    def _loader(self, dataset, sampler):
        loader = DataLoader(dataset, batch_size=self.config.trainer.micro_batch_size, sampler=sampler)
        return iter(sequence_parallel.shard(loader, self.mpu, self.engine.device) if self.mpu else loader)

    def _epoch(self):
        return self._loader(self.train_set, self.sampler)

    def _next_batch(self) -> dict:
        batch = next(self.batches, None)
        if batch is None:  # the sampler has rolled over to the next epoch
            self.batches = self._epoch()
            batch = next(self.batches)
        return batch

    def _loss(self, batch: dict) -> tuple[torch.Tensor, float]:
        batch = {k: v.to(self.engine.device) for k, v in batch.items()}
        if "labels" in batch:  # Ulysses' loader adapter has already shifted them
            batch["shift_labels"] = shift_labels(batch.pop("labels"))
        if self.mpu is None:
            return mean_loss(self.engine, batch, self.logits_tile)
        return mean_loss(self.engine, batch, self.logits_tile, self.mpu.get_sequence_parallel_group(),
                         sequence_parallel.share_scale(self.engine.zero_optimization_stage(),
                                                       self.mpu.get_sequence_parallel_world_size()))

    def train_step(self) -> tuple[float, bool]:
        """Mean loss over micro-batches and ranks, and whether DeepSpeed applied the update."""
        self.engine.train()
        self.global_batch = self.sampler.next_global_batch()
        total = 0.0
        for _ in range(self.micro_steps):
            batch = self._next_batch()
            self.last_batch = batch
            loss, value = self._loss(batch)
            self.engine.backward(loss)
            self.engine.step()
            total += value
        self.sampler.advance()
        return distributed.mean_over_ranks(total / self.micro_steps), self.engine.was_step_applied()

    def explain_non_finite(self) -> str | None:
        """Why the last micro-batch's loss was not finite, if attention is to blame (train/diagnose.py),
        as found on any rank; every rank gets the same answer."""
        batch = {k: v.to(self.engine.device) for k, v in self.last_batch.items() if k != "labels"}
        found = explain_non_finite(self.engine, batch) if self.mpu is None else None
        return next((cause for cause in distributed.gather(found) if cause is not None), None)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over trainer.eval_batches validation micro-batches and the ranks."""
        self.engine.eval()
        losses = []
        for i, batch in enumerate(self._loader(self.val_set, self.val_sampler)):
            if i == self.config.trainer.eval_batches:
                break
            losses.append(self._loss(batch)[1])
        return distributed.mean_over_ranks(sum(losses) / max(len(losses), 1))
