"""The passkey retrieval task (Mohtashami & Jaggi, 2023), shared by the training mix and the evaluation.

A prompt is the task line, a haystack with the key line somewhere in it, then the question; the
answer is the key. Both sides build it from the same token pieces (`Pieces`), with a haystack of
book text from their own split, so that what is tested is what was trained, at any distance up
to the window. The task line is short, so that most of a window is haystack; the key line is the
original task's, which states the key twice (the fixed part is 81 tokens with the `sample`
tokenizer, 48 with LLaMA-2's, the answer included). Stated once, no pilot model learnt to retrieve
it at all: the second statement, a few tokens after the first, is a short copy a small model
learns first, and the long-range copy the question asks for grows out of it (bench/RESULTS.md,
round 2 pilots). The farthest trained key-question distance is the same either way: the window
less the task line, question and answer. The 5-digit keys are split once and for
all into two disjoint halves by a hash (which no model can learn): training sequences draw from
one half, evaluation prompts from the other, so an evaluation never asks for a key the model has seen.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random

TASK = "Remember the pass key."
# The original task's haystack, kept as a second evaluation (eval.passkey.haystack=filler).
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
QUESTION = "What is the pass key? The pass key is"


def key_line(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


@dataclasses.dataclass(frozen=True)
class Pieces:
    """One key's prompt pieces as token ids; a prompt is task, haystack with the line in it, question."""

    task: list[int]  # BOS (if the tokenizer adds one) and the task line
    line: list[int]
    question: list[int]
    answer: list[int]  # the key, as the model should continue the question

    @classmethod
    def of(cls, key: str, encode, bos: list[int]) -> "Pieces":
        """`encode(text) -> ids` without special tokens; each piece after the task starts with a space."""
        return cls(bos + encode(TASK), encode(" " + key_line(key)), encode(" " + QUESTION), encode(f" {key}."))

    @property
    def fixed(self) -> int:
        """Tokens of a prompt without haystack, the answer included."""
        return len(self.task) + len(self.line) + len(self.question) + len(self.answer)

    def prompt(self, haystack: list[int], before: int) -> list[int]:
        return [*self.task, *haystack[:before], *self.line, *haystack[before:], *self.question]


def is_evaluation_key(key: str) -> bool:
    """Which half a key belongs to: evaluation's (True) or training's (False)."""
    return hashlib.sha256(f"passkey:{key}".encode()).digest()[0] < 128


def draw_key(rng: random.Random, for_evaluation: bool) -> str:
    """A random 5-digit key from the evaluation's half or the training's."""
    while True:
        key = str(rng.randint(10000, 99999))
        if is_evaluation_key(key) == for_evaluation:
            return key
