"""Sliding-window perplexity, the paper's protocol (and Press et al.'s, PI's, LongLoRA's).

Each document of T tokens is read through windows of L tokens whose starts move by the
stride S: [0, L), [S, L + S), ... up to [T - L, T). The first window scores all its tokens
(L - 1 predictions), each later one only the S tokens no earlier window reached, so every
token but the first is scored exactly once, with up to L - 1 tokens of context. When L = S
the windows do not overlap and a window's first token, which has no context in it, is not
scored (as in Hugging Face's recipe). Positions restart at 0 in every window: slack CoCA
depends on absolute positions, trained at 0..L-1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import PreTrainedModel

from train.modeling_coca_llama import one_rope_scale
from train.diagnose import require_finite
from conf.errors import BadInput

# Positions per output-projection call: the logits of a 32K window (32K x 32K vocab in fp32,
# 4 GiB) are never held at once.
_LOGIT_CHUNK = 4096


@dataclass(frozen=True)
class LengthResult:
    length: int
    windows: int
    doc_tokens: list[int]  # each document's scored tokens
    doc_nll: list[float]  # each document's mean negative log-likelihood per scored token, in nats

    @property
    def tokens(self) -> int:
        return sum(self.doc_tokens)

    @property
    def nll(self) -> float:
        """Per scored token, over all documents."""
        return sum(n * t for n, t in zip(self.doc_nll, self.doc_tokens)) / self.tokens

    @property
    def ppl(self) -> float:
        return math.exp(self.nll) if self.nll < 700 else math.inf


def plan_windows(doc_len: int, length: int, stride: int) -> list[tuple[int, int]]:
    """(start, scored) of each window: the window is [start, start + length), its last
    `scored` tokens are scored. Needs doc_len - length to be a multiple of stride."""
    if length > doc_len or (doc_len - length) % stride:
        raise BadInput(f"a {length}-token window moved by {stride} does not end at the document's end "
                         f"({doc_len} tokens): the lengths must be multiples of eval.stride")
    return [(start, length - 1 if start == 0 else min(stride, length - 1))
            for start in range(0, doc_len - length + 1, stride)]


@torch.no_grad()
def sliding_window_perplexity(model: PreTrainedModel, docs: list[torch.Tensor], length: int, stride: int,
                              batch_size: int) -> LengthResult:
    """Perplexity of `docs` (1-D token tensors) through `length`-token windows, `batch_size` per forward."""
    plan = [(doc, start, scored) for doc, ids in enumerate(docs) for start, scored in plan_windows(len(ids), length,
                                                                                                     stride)]
    device = next(model.parameters()).device
    totals = torch.zeros(len(docs), dtype=torch.float64, device=device)
    counts = [0] * len(docs)
    # Every window holds `length` tokens: under dynamic NTK, the scale for `length`, not one that an
    # earlier, longer sequence left behind (transformers keeps the longest it has seen).
    with one_rope_scale(model, length):
        for first in tqdm(range(0, len(plan), batch_size), desc=f"perplexity {length}", unit="batch",
                          dynamic_ncols=True):
            batch = plan[first:first + batch_size]
            ids = torch.stack([docs[doc][start:start + length] for doc, start, _ in batch]).to(device)
            nll = _scored_nll(model, ids, [scored for *_, scored in batch])
            require_finite(nll, model, {"input_ids": ids}, f"perplexity at {length} tokens")
            totals.index_add_(0, torch.tensor([doc for doc, *_ in batch], device=device), nll)
            for doc, _, scored in batch:
                counts[doc] += scored
    doc_nll = [total / count for total, count in zip(totals.tolist(), counts)]
    return LengthResult(length, len(plan), counts, doc_nll)


def _scored_nll(model: PreTrainedModel, ids: torch.Tensor, scored: list[int]) -> torch.Tensor:
    """Summed NLL of the last scored[i] tokens of window i, one per window (float64); logits only
    where they are scored."""
    length = ids.shape[1]
    positions = torch.arange(length, device=ids.device).expand_as(ids)
    hidden = model.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    sums = torch.zeros(len(scored), dtype=torch.float64, device=ids.device)
    for row, count in enumerate(scored):
        for lo in range(length - count, length, _LOGIT_CHUNK):
            hi = min(lo + _LOGIT_CHUNK, length)
            # The hidden state at position p predicts token p + 1.
            logits = head(hidden[row, lo - 1:hi - 1]).float()
            sums[row] += F.cross_entropy(logits, ids[row, lo:hi], reduction="sum").double()
    return sums
