"""Training blocks drawn from several sources by weight (`data.sources`), and length upsampling
(`data.upsample_long`).

A mixture is a fixed table of (source, block) pairs, as long as the sources' blocks together,
built from the run's seed: source s gets its weight's share of the rows (largest remainders),
and its rows are spread over its blocks by systematic sampling, so each block appears the
floor or the ceiling of its expected number of times (a source weighted above its natural
share repeats blocks, one below it leaves some out, the same ones every epoch). With length
upsampling a block of a long document counts `factor` times in that spread. The sampler then
shuffles the table like any training split, so a resumed run continues the same stream, and
every block holds seq_len tokens, so a source's share of the rows is its share of the tokens.
"""
import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from conf.data_schema import UpsampleLongConfig
from data.cache import cache_key
from data.packing import PackedDataset

log = logging.getLogger(__name__)


class Mixture(Dataset):
    def __init__(self, names: list[str], parts: list[PackedDataset], weights: list[float], seed: int,
                 upsample: UpsampleLongConfig):
        self.names, self.parts = names, parts
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.seed, self.upsample = seed, upsample
        rows = _apportion(sum(len(p) for p in parts), self.weights)
        rng = np.random.default_rng([seed, 1])
        self.source = np.repeat(np.arange(len(parts), dtype=np.int64), rows)
        self.block = np.concatenate([_systematic(self._block_weights(p), n, rng.random()) for p, n in zip(parts, rows)])
        for name, part, n in zip(names, parts, rows):
            log.info("data mixture: %s gives %s of %s rows (%.1f%%) from its %s blocks", name, f"{n:,}",
                     f"{len(self):,}", 100 * n / len(self), f"{len(part):,}")

    @property
    def seq_len(self) -> int:
        return self.parts[0].seq_len

    @property
    def fingerprint(self) -> str:
        """Changes with any source's content, the weights, the seed or the upsampling."""
        return cache_key("mixture", [p.fingerprint for p in self.parts], self.weights.tolist(), self.seed,
                         self.upsample.min_tokens, self.upsample.factor)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.parts[self.source[index]][int(self.block[index])]

    def tokens_by_source(self, indices: np.ndarray) -> dict[str, int]:
        """The tokens of these rows, by source name."""
        counts = np.bincount(self.source[indices], minlength=len(self.parts)) * self.seq_len
        return dict(zip(self.names, counts.tolist()))

    def _block_weights(self, part: PackedDataset) -> np.ndarray:
        weights = np.ones(len(part))
        if self.upsample.min_tokens is None:
            return weights
        starts = np.asarray(part.store.doc_starts)
        ends = np.append(starts[1:], part.store.num_tokens)
        # The document each block starts in decides whether the block counts as long.
        doc = np.searchsorted(starts, np.arange(len(part)) * part.seq_len, side="right") - 1
        weights[(ends - starts)[doc] >= self.upsample.min_tokens] = self.upsample.factor
        return weights


def _apportion(total: int, shares: np.ndarray) -> np.ndarray:
    """Whole numbers summing to `total` in these shares: floors, then the largest remainders get one more."""
    exact = total * shares
    rows = np.floor(exact).astype(np.int64)
    rows[np.argsort(rows - exact, kind="stable")[:total - rows.sum()]] += 1
    return rows


def _systematic(weights: np.ndarray, n: int, offset: float) -> np.ndarray:
    """n block indices, block i about n * weights[i] / sum(weights) times: points offset/n, (offset+1)/n, ...
    along the cumulative weights."""
    bounds = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(bounds, (np.arange(n) + offset) / n, side="right"), len(weights) - 1)
