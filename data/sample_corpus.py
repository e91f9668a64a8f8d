"""A small PG-19-shaped corpus the project generates itself, so that no run needs a download.

Each book is English-like prose with long-range structure: a fixed cast whose facts (trade,
home town, an heirloom and whose it was) are stated in the first chapter and recalled, in
other words, chapters later. A model can only predict those recalls by attending far back,
which is what long-context training should reward. Everything is seeded: the same
(num_books, words_per_book, seed) always gives byte-identical books.
"""
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data.cache import cache_key, cached_folder, source_fingerprint
from conf.data_schema import SampleCorpusConfig
from data.schema import PG19_FEATURES

_ONSETS = ["Al", "Bel", "Cor", "Dar", "El", "Fen", "Gar", "Hal", "Is", "Jor", "Kel", "Lor",
           "Mar", "Nor", "Or", "Per", "Ros", "Sel", "Tor", "Ul", "Ver", "Wil", "Yar", "Ber"]
_CODAS = ["a", "ic", "en", "wyn", "ith", "ora", "ald", "ene", "ius", "eth", "and", "ia"]
_TOWN_ENDS = ["ford", "bury", "wick", "haven", "moor", "dale", "field", "ton", "mouth"]
_TRADES = ["miller", "blacksmith", "weaver", "clerk", "physician", "sailor", "shepherd",
           "schoolmaster", "baker", "lawyer", "carpenter", "innkeeper"]
_HEIRLOOMS = ["watch", "ring", "lantern", "letter", "knife", "bible", "coat", "key", "compass", "violin"]
_COLOURS = ["red", "silver", "green", "black", "golden", "blue", "brown", "white"]
_KIN = ["mother", "father", "grandfather", "uncle", "aunt", "sister", "brother", "grandmother"]
_TIMES = ["In the morning", "At noon", "Towards evening", "Late that night", "Before dawn",
          "On the following day", "A week later", "When the rain had stopped"]
_PLACES = ["road", "river", "market", "church", "harbour", "bridge", "garden", "lane", "hill"]
_WEATHER = ["sky", "wind", "fog", "rain", "snow", "light"]
_ADJECTIVES = ["grey", "quiet", "cold", "bright", "heavy", "strange", "gentle", "dark", "empty"]
_VERBS = ["visited", "thanked", "watched", "followed", "answered", "warned", "met", "forgave"]
_MANNERS = ["slowly", "with some surprise", "without a word", "kindly", "at once", "in silence"]
_SAYINGS = ["I have heard of it before", "We shall see in the morning", "It is not my affair",
            "You were right after all", "Nobody will believe it", "Let us go home",
            "There is nothing more to be said", "I remember it very well"]
_TITLE_NOUNS = ["Secret", "House", "Daughter", "Voyage", "Inheritance", "Letters", "Winter"]


def generate_books(num_books: int, words_per_book: int, seed: int) -> list[dict]:
    return [_book(random.Random(f"pg19-sample:{seed}:{i}"), words_per_book, seed, i)
            for i in range(num_books)]


def sample_corpus_dir(sample: SampleCorpusConfig, root: Path) -> Path:
    """The corpus as `train.parquet` in a cached folder, written once per configuration.

    It lives on disk, not in memory, so that datasets fingerprints it like any local file and
    the tokenized cache is reused across runs.
    """
    key = cache_key(source_fingerprint(Path(__file__)), sample.num_books, sample.words_per_book, sample.seed)

    def build(scratch: Path) -> None:
        books = generate_books(sample.num_books, sample.words_per_book, sample.seed)
        pq.write_table(pa.Table.from_pylist(books, schema=PG19_FEATURES.arrow_schema), scratch / "train.parquet")

    folder, _ = cached_folder(root / "sample-corpus" / key, build, "sample corpus")
    return folder


def _name(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_CODAS)


def _book(rng: random.Random, words_per_book: int, seed: int, index: int) -> dict:
    towns = [_name(rng) + rng.choice(_TOWN_ENDS) for _ in range(4)]
    cast = [
        {
            "name": f"{_name(rng)} {_name(rng)}",
            "pronoun": rng.choice(["his", "her"]),
            "trade": rng.choice(_TRADES),
            "town": rng.choice(towns),
            "heirloom": f"{rng.choice(_COLOURS)} {rng.choice(_HEIRLOOMS)}",
            "kin": rng.choice(_KIN),
        }
        for _ in range(rng.randint(4, 6))
    ]
    title = f"The {rng.choice(_TITLE_NOUNS)} of {rng.choice(towns)}"
    author = f"{_name(rng)} {_name(rng)}"
    chapters, words = [], 0
    while words < words_per_book:
        paragraphs = [_introductions(cast)] if not chapters else []
        while sum(len(p.split()) for p in paragraphs) < 900 and words < words_per_book:
            paragraph = " ".join(_sentence(rng, cast, towns) for _ in range(rng.randint(3, 7)))
            paragraphs.append(paragraph)
            words += len(paragraph.split())
        chapters.append(f"CHAPTER {len(chapters) + 1}.\n\n" + "\n\n".join(paragraphs))
    return {
        "short_book_title": f"{title} by {author}",
        "publication_date": rng.randint(1800, 1918),
        "url": f"sample://seed-{seed}/book-{index}",
        "text": f"{title}\n\nBy {author}\n\n\n" + "\n\n\n".join(chapters) + "\n",
    }


def _introductions(cast: list[dict]) -> str:
    return " ".join(
        f"{c['name']} was a {c['trade']} from {c['town']}, and kept the {c['heirloom']} "
        f"that had belonged to {c['pronoun']} {c['kin']}."
        for c in cast
    )


def _sentence(rng: random.Random, cast: list[dict], towns: list[str]) -> str:
    a, b = rng.sample(cast, 2)
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.choice(_TIMES)}, {a['name']} walked along the {rng.choice(_PLACES)} towards {rng.choice(towns)}."
    if kind == 1:
        return f"{a['name']} {rng.choice(_VERBS)} {b['name']} {rng.choice(_MANNERS)}."
    if kind == 2:
        return (f"The {rng.choice(_WEATHER)} over {rng.choice(towns)} was {rng.choice(_ADJECTIVES)}, "
                f"and the {rng.choice(_PLACES)} lay {rng.choice(_ADJECTIVES)} and still.")
    if kind == 3:
        return f"\"{rng.choice(_SAYINGS)},\" said {a['name']}."
    # The recalls: each restates a first-chapter fact without restating the others.
    if kind == 4:
        return f"{a['name']}, the {a['trade']}, {rng.choice(_VERBS)} {b['name']} by the {rng.choice(_PLACES)}."
    if kind == 5:
        return f"{a['name']} held the {a['heirloom']} and thought of {a['pronoun']} {a['kin']}."
    return f"Nobody in {rng.choice(towns)} had forgotten that {a['name']} came from {a['town']}."
