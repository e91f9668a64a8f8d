"""The `sample` tokenizer: a 512-token byte-level BPE trained on the default sample corpus.

It lets the tiny default model run with no download. It is trained once and saved as a
PreTrainedTokenizerFast folder in the cache. Its only input is the generated corpus, and BPE
training on a fixed corpus is deterministic, so every machine builds the same vocabulary (a
test checks two builds match). Like LLaMA's, it prepends <s> when asked for special tokens
and has </s> to end documents.
"""
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

import data.sample_corpus as sample_corpus
from data.cache import cache_key, cached_folder, source_fingerprint
from conf.data_schema import SampleCorpusConfig

VOCAB_SIZE = 512
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"


def sample_tokenizer_dir(root: Path) -> Path:
    code = source_fingerprint(Path(__file__), Path(sample_corpus.__file__))
    folder, _ = cached_folder(root / "sample-tokenizer" / cache_key(code, VOCAB_SIZE),
                              lambda scratch: _train().save_pretrained(scratch), "sample tokenizer")
    return folder


def _train() -> PreTrainedTokenizerFast:
    corpus = SampleCorpusConfig()
    books = sample_corpus.generate_books(corpus.num_books, corpus.words_per_book, corpus.seed)
    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((book["text"] for book in books), trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bpe.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD
    )
