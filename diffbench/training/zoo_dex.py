"""zoo:dex: zoo:baseline given differential attention by diffbench's own DEX tools, as a user would.

The recipe runs the public path: `dex convert` (head selection by calibration, identity-initialised
DEX parameters) and `dex adapt --data FILE` on a text file of the baseline's kind of training episodes
(seeded apart from the baseline's own batches), for at most 1% of the tokens the baseline saw. Work
files (the converted checkpoint, the data file) live beside the output in ``OUT.work``; the output
itself is the adapted checkpoint, resumable by rerunning the command.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.errors import UsageError
from diffbench.events import EventHook, Status
from diffbench.seeding import derive_seed
from diffbench.store import atomic_write_text
from diffbench.training.zoo_train import RECIPE_FILE, check_directory
from diffbench.zoo.recipes import DexRecipe, TrainRecipe

DATA_FILE = "adapt_data.txt"
_EVAL_EPISODES = 8


@dataclass(frozen=True)
class DexOutcome:
    directory: Path
    tokens: int
    seconds: float


def source_recipe(location: str) -> TrainRecipe:
    """The recipe a zoo-trained source was made by (its tokens set DEX's budget)."""
    path = Path(location) / RECIPE_FILE
    if not path.is_file():
        raise UsageError(
            f"{location} has no {RECIPE_FILE}: zoo:dex adapts a model trained by 'diffbench zoo train'"
        )
    return TrainRecipe.from_dict(json.loads(path.read_text(encoding="utf-8"))["recipe"])


def write_episode_text(path: Path, tokenizer: Any, source: TrainRecipe, seed: int, episodes: int) -> None:
    """The adaptation text: ``episodes`` whole training episodes, decoded, one after another."""
    from diffbench.training.episodes import EpisodeMaker

    maker = EpisodeMaker(tokenizer, source.final.seq_len, source.final.max_needles)
    texts = [
        tokenizer.decode(maker.episode(seed, 0, row).input_ids, skip_special_tokens=True)
        for row in range(episodes)
    ]
    atomic_write_text(path, "\n\n".join(texts) + "\n")


def train_dex(recipe: DexRecipe, out: Path, source: str, on_event: EventHook | None = None) -> DexOutcome:
    """Convert ``source`` to DEX and adapt it on 1% of its training tokens into ``out``."""
    from diffbench.models.load import resolve_model_ref
    from diffbench.training.dex_adapt import AdaptOptions, adapt
    from diffbench.training.dex_convert import convert
    from diffbench.training.tokenizer import load_tokenizer

    began = time.perf_counter()
    work = out.parent / f"{out.name}.work"
    check_directory(work, recipe)
    location = resolve_model_ref(source).location
    trained = source_recipe(location)
    rows_per_step = recipe.batch_size
    steps = max(1, recipe.tokens(trained) // (recipe.seq_len * rows_per_step))
    tokens = steps * recipe.seq_len * rows_per_step
    data_file = work / DATA_FILE
    if not data_file.exists():
        episodes = (
            (tokens * 11) // (10 * trained.final.seq_len) + _EVAL_EPISODES + 1
        )  # 10% spare for decoding drift
        write_episode_text(
            data_file,
            load_tokenizer(Path(location)),
            trained,
            derive_seed(recipe.seed, "zoo-dex-data"),
            episodes,
        )
    converted = work / "converted"
    if not (converted / "config.json").is_file():
        if on_event:
            on_event(Status("dex convert"))
        convert(source, converted, seed=recipe.seed, command=["diffbench", "zoo", "train", "dex"])
    options = AdaptOptions(
        model=str(converted),
        out=out,
        tokens=tokens,
        data=str(data_file),
        train=recipe.train,
        seq_len=recipe.seq_len,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        eval_sequences=_EVAL_EPISODES,
        command=["diffbench", "zoo", "train", "dex"],
    )
    outcome = adapt(options, on_event)
    seconds = time.perf_counter() - began
    stored = json.loads((work / RECIPE_FILE).read_text(encoding="utf-8"))
    training = outcome.manifest.training
    stored["result"] = {
        "source": source,
        "source_tokens": trained.tokens,
        "tokens_seen": outcome.manifest.tokens_seen,
        "token_share": round(outcome.manifest.tokens_seen / trained.tokens, 5),
        "seconds": training.seconds if training is not None else round(seconds, 1),
        "held_out_loss_before": training.loss_before if training is not None else None,
        "held_out_loss_after": training.loss_after if training is not None else None,
    }
    atomic_write_text(out / RECIPE_FILE, json.dumps(stored, indent=2) + "\n")
    return DexOutcome(out, outcome.manifest.tokens_seen, seconds)
