"""The zoo's tokenizer: a small byte-level BPE trained on text diffbench generates.

Why byte-level BPE: every string a user may pass (their own haystack files, needles in any script)
still encodes, because the 256 byte symbols are always in the vocabulary; the merges learned on the
generated prose keep contexts compact. Digits are split one per token, so a model copies a number
digit by digit instead of having to memorise thousands of multi-digit tokens. A BOS token opens every
document (the sink a long context leans on) and EOS closes every answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffbench.seeding import derive_seed

VOCAB_SIZE = 1024
BOS, EOS = "<|bos|>", "<|eos|>"
_TRAINING_PARAGRAPHS = 6000


def tokenizer_corpus(seed: int) -> Iterator[str]:
    """The text the merges are learned on: generated prose and the task's own phrases with digits."""
    from diffbench.haystack.prose import iter_prose_paragraphs
    from diffbench.specs import NeedleSpec
    from diffbench.tasks.niah import KEY_ADJECTIVES, KEY_NOUNS

    for paragraph in itertools.islice(
        iter_prose_paragraphs(derive_seed(seed, "zoo", "tokenizer")), _TRAINING_PARAGRAPHS
    ):
        yield " ".join(paragraph)
    needle = NeedleSpec()
    for adjective, noun in itertools.product(KEY_ADJECTIVES, KEY_NOUNS):
        key = f"{adjective}-{noun}"
        for template in (needle.instruction, needle.needle, needle.question, needle.answer_prefix):
            yield template.replace("{key}", key).replace("{value}", "0123456789")


def build_tokenizer(seed: int) -> Any:
    """Train the BPE and wrap it as a transformers fast tokenizer (saved with ``save_pretrained``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
