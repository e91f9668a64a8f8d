"""Training blocks with a fraction replaced by synthetic passkey-retrieval sequences (`data.passkey_fraction`).

Small models trained on books alone never learn to retrieve a passkey, even inside their window,
so there is nothing to extrapolate. A retrieval sequence teaches it: the task line, a stretch of
haystack with the key line at a random depth, the question and the answer, then the training text
goes on to fill the block. The haystack's length is drawn up to the whole block less the task's
fixed part, so that every key-question distance up to the window is trained (the evaluation asks
for them all), and half the sequences start with a run of book text of random length, so that
the question sits anywhere in the window (slack CoCA's query depends on its absolute position).
Everything in it comes from the training side: the haystack, the prefix and the filling are
token runs of the training split itself, the key from training's half of the key space
(data/passkey.py), lengths, depths and offsets from the run's seed. Which blocks are
replaced, and by what, depends only on (seed, block index), so a resumed run, at any world size,
sees exactly the sequences the uninterrupted run would have. Validation stays plain text.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from data.cache import cache_key
from data.packing import PackedDataset
from data.passkey import Pieces, draw_key
from data.tokenizer import adds_bos
from conf.errors import BadInput


class PasskeyMix(Dataset):
    def __init__(self, blocks: PackedDataset, fraction: float, seed: int, tokenizer: PreTrainedTokenizerBase):
        self.blocks, self.fraction, self.seed = blocks, fraction, seed
        self.seq_len = blocks.seq_len
        self._encode = lambda text: tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
        self._bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
        self._eos = tokenizer.eos_token_id
        # Keys have 5 digits: every key encodes alike in length, or nearly.
        self.shortest = self._pieces("99999").fixed + 1  # with the EOS after the answer
        if self.shortest > self.seq_len:
            raise BadInput(f"data.passkey_fraction={fraction} needs data.seq_len >= {self.shortest} (a retrieval "
                           f"sequence without haystack), not {self.seq_len}")

    def _pieces(self, key: str) -> Pieces:
        return Pieces.of(key, self._encode, self._bos)

    @property
    def fingerprint(self) -> str:
        return cache_key(self.blocks.fingerprint, "passkey", self.fraction, self.seed)

    def __len__(self) -> int:
        return len(self.blocks)

    def is_retrieval(self, index: int) -> bool:
        return random.Random(f"passkey-mix:{self.seed}:{index}").random() < self.fraction

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not self.is_retrieval(index):
            return self.blocks[index]
        input_ids = torch.tensor(self.retrieval_sequence(index), dtype=torch.int64)
        return {"input_ids": input_ids, "labels": input_ids.clone(), "position_ids": torch.arange(self.seq_len)}

    def retrieval_sequence(self, index: int) -> list[int]:
        rng = random.Random(f"passkey-mix:{self.seed}:{index}:sequence")
        pieces = self._pieces(draw_key(rng, for_evaluation=False))
        room = max(0, self.seq_len - pieces.fixed - 1)
        haystack = self._training_text(rng, rng.randint(0, room))
        # Half the sequences start with book text, which moves the question through the window.
        prefix = rng.randint(0, room - len(haystack)) if rng.random() < 0.5 else 0
        start = (self._bos + self._training_text(rng, prefix))[:prefix]
        before = round(rng.random() * len(haystack))
        sequence = [*start, *pieces.prompt(haystack, before), *pieces.answer, self._eos]
        # The rest of the block: training text again, as a new document.
        return (sequence + self._bos + self._training_text(rng, self.seq_len))[:self.seq_len]

    def _training_text(self, rng: random.Random, length: int) -> list[int]:
        tokens = self.blocks.store.tokens
        start = rng.randrange(0, max(1, len(tokens) - length))
        return np.asarray(tokens[start:start + length], dtype=np.int64).tolist()
