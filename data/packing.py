"""Blocks of exactly `seq_len` tokens cut from a split's token stream, as a torch Dataset."""
import numpy as np
import torch
from torch.utils.data import Dataset

from data.store import TokenStore
from conf.errors import BadInput

IGNORE_INDEX = -100


class PackedDataset(Dataset):
    """Block i is tokens [i * seq_len, (i + 1) * seq_len) of the stream; the tail that does not
    fill a block is dropped, so there is never padding.

    Items are {"input_ids", "labels", "position_ids"}, int64 tensors of length seq_len, ready
    for a causal LM that shifts labels itself (transformers' do).

    `packing="concat"`: positions 0..seq_len-1 in every block, and attention spans the whole block,
    across the documents in it. With `mask_doc_boundaries`, the label of each document's first
    token is IGNORE_INDEX: the one prediction made across a boundary, from the previous document's EOS.

    `packing="documents"`: positions restart at 0 where each document starts, and that label is
    masked too. transformers reads restarting position ids (with no attention mask, as the trainer
    passes none) as packed sequences: SDPA, eager and flex get a block-diagonal causal mask and
    flash attention its variable-length path, so no token attends across a document boundary and
    each document gets the logits it would alone. That holds for slack CoCA too: its query
    depends on the absolute position, and a document alone starts at position 0, as here.
    """

    PACKINGS = ("concat", "documents")

    def __init__(self, store: TokenStore, seq_len: int, mask_doc_boundaries: bool = False, packing: str = "concat"):
        if seq_len <= 0:
            raise BadInput(f"data.seq_len={seq_len}: it must be a positive number of tokens")
        if seq_len > store.num_tokens:
            raise BadInput(f"data.seq_len={seq_len} is longer than the whole of {store.origin} "
                             f"({store.num_tokens} tokens)")
        self.store = store
        self.seq_len = seq_len
        self.packing = packing
        self.mask_doc_boundaries = mask_doc_boundaries or packing == "documents"

    @property
    def fingerprint(self) -> str:
        """The content of the token stream the blocks are cut from (the same books and tokenizer give
        the same fingerprint, wherever they are stored)."""
        return self.store.content

    @property
    def num_blocks(self) -> int:
        return self.store.num_tokens // self.seq_len

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} of {self.num_blocks}")
        start = index * self.seq_len
        input_ids = torch.from_numpy(self.store.tokens[start:start + self.seq_len].astype(np.int64))
        labels, positions = input_ids.clone(), torch.arange(self.seq_len)
        starts = self.store.doc_starts
        # Document starts strictly inside the block; one at offset 0 is never a label.
        inside = torch.from_numpy(starts[np.searchsorted(starts, start, side="right"):
                                         np.searchsorted(starts, start + self.seq_len)] - start)
        if self.mask_doc_boundaries:
            labels[inside] = IGNORE_INDEX
        if self.packing == "documents" and len(inside):
            # Each token's distance from the latest document start in the block (or the block's start).
            latest = torch.zeros(self.seq_len, dtype=torch.int64)
            latest[inside] = inside
            positions = positions - torch.cummax(latest, dim=0).values
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions}
