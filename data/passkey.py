"""The passkey retrieval task's text (Mohtashami & Jaggi, 2023), shared by the training mix and the evaluation.

A prompt is the task line, filler with the key line somewhere in it, then the question; the
answer is the key. The 5-digit keys are split once and for all into two disjoint halves by a
hash (which no model can learn): training sequences draw from one half, evaluation prompts from
the other, so an evaluation never asks for a key the model has seen.
"""
from __future__ import annotations

import hashlib
import random

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
QUESTION = "What is the pass key? The pass key is"


def key_line(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def is_evaluation_key(key: str) -> bool:
    """Which half a key belongs to: evaluation's (True) or training's (False)."""
    return hashlib.sha256(f"passkey:{key}".encode()).digest()[0] < 128


def draw_key(rng: random.Random, for_evaluation: bool) -> str:
    """A random 5-digit key from the evaluation's half or the training's."""
    while True:
        key = str(rng.randint(10000, 99999))
        if is_evaluation_key(key) == for_evaluation:
            return key
