"""`diffbench zoo train`: train a zoo model from scratch (baseline, diff) or adapt one (dex), resumably.

Why it reproduces: the tokenizer is trained on seeded generated text, initial weights come from a
seed derived from the recipe's, every batch and every position skip is a pure function of (seed,
step), and there is no dropout. A checkpoint (weights + AdamW state + step, renamed into place) is
written every ``eval_every`` steps; rerunning the same command in the same directory continues from
it, and a different recipe in that directory is refused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffbench.checkpoints import LOG_FILE, RESUME_FILE, append_log, atomic_torch_save, read_log, trim_log
from diffbench.errors import UsageError
from diffbench.events import EventHook, Planned, StepDone, ignore
from diffbench.seeding import derive_seed
from diffbench.store import acquire_lock, atomic_write_text, read_json_file, read_json_object
from diffbench.training.episodes import EpisodeMaker, skipped_positions
from diffbench.training.tokenizer import build_tokenizer
from diffbench.zoo.recipes import DexRecipe, TrainRecipe

RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class TrainOutcome:
    directory: Path
    steps: int
    tokens: int
    seconds: float
    resumed_from: int


def model_config(recipe: TrainRecipe, tokenizer: Any) -> Any:
    """A Llama or DiffLlama config of the recipe's widths; the two differ only in their attention."""
    from transformers import DiffLlamaConfig, LlamaConfig

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        head_dim=recipe.head_dim,
        max_position_embeddings=recipe.max_position,
        rope_parameters={"rope_type": "default", "rope_theta": recipe.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaConfig(**common) if recipe.variant == "baseline" else DiffLlamaConfig(**common)


def learning_rate(recipe: TrainRecipe, step: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    floor = recipe.min_lr_ratio
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def parameter_groups(model: Any, recipe: TrainRecipe) -> list[tuple[list[Any], float]]:
    """AdamW's parameter groups with each one's share of the scheduled rate: Diff's λ vectors apart when
    their ratio is not 1 (one group otherwise, so the shipped recipe's optimizer state stays loadable)."""
    if recipe.lambda_lr_ratio == 1.0:
        return [(list(model.parameters()), 1.0)]
    lambdas: list[Any] = []
    others: list[Any] = []
    for name, parameter in model.named_parameters():
        (lambdas if name.rsplit(".", 1)[-1].startswith("lambda_") else others).append(parameter)
    return [(others, 1.0), (lambdas, recipe.lambda_lr_ratio)]


def check_directory(out: Path, recipe: TrainRecipe | DexRecipe) -> None:
    """Refuse to mix two recipes in one directory; record the recipe on first use."""
    path = out / RECIPE_FILE
    if path.exists() or path.is_symlink():
        try:
            stored = read_json_file(path)
        except ValueError as problem:
            stored = problem
        if not isinstance(stored, dict):
            reason = stored if isinstance(stored, ValueError) else "it is not a JSON object"
            raise UsageError(f"{str(path)!r} is damaged ({reason}); restore it, or pass a new --out")
        if stored.get("fingerprint") != recipe.fingerprint():
            raise UsageError(
                f"{out} holds a training run of another recipe ({stored.get('recipe', {}).get('name')!r}, "
                f"fingerprint {stored.get('fingerprint')}); pass a new --out to train this one"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, json.dumps({"recipe": asdict(recipe), "fingerprint": recipe.fingerprint()}, indent=2) + "\n"
    )


def next_token_logits(model: Any, input_ids: Any, positions: Any) -> Any:
    """Logits predicting tokens 1..T-1 of each row, under the given (possibly skipping) position ids.

    The explicit all-ones mask matters: without one, transformers reads a jump in position_ids as the
    start of a second packed sequence and hides everything before the jump (the needle) from the
    question behind a block-diagonal mask.
    """
    import torch

    mask = torch.ones_like(input_ids)
    return model(input_ids=input_ids, position_ids=positions, attention_mask=mask).logits[:, :-1]


def answer_loss_and_accuracy(
    model: Any, maker: EpisodeMaker, seed: int, rows: int, skip_share: float, max_position: int
) -> tuple[float, float]:
    """Held-out episodes: mean answer-token loss, and the share whose every answer token is the argmax."""
    import torch

    input_ids, answer_mask, episodes = maker.batch(seed, 0, rows)
    positions = skipped_positions(episodes, maker.length, max_position, seed, 0, skip_share)
    model.eval()
    with torch.no_grad():
        logits = next_token_logits(model, input_ids, positions)
    model.train()
    targets, mask = input_ids[:, 1:], answer_mask[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    hits = (logits.argmax(-1) == targets) | ~mask
    return float(losses[mask].mean()), float(hits.all(dim=1).float().mean())


def train(recipe: TrainRecipe, out: Path, on_event: EventHook | None = None) -> TrainOutcome:
    """Train (or resume) ``recipe`` into ``out``; the finished directory is a normal checkpoint."""
    import torch

    emit = on_event or ignore
    check_directory(out, recipe)
    finished = (read_json_object(out / RECIPE_FILE) or {}).get("result")
    if finished and (out / "model.safetensors").is_file():  # rerunning a finished recipe changes nothing
        return TrainOutcome(
            out, recipe.steps, recipe.tokens, float(finished.get("seconds") or 0), recipe.steps
        )
    with acquire_lock(out):
        tokenizer = build_tokenizer(recipe.seed)
        makers = {phase: EpisodeMaker(tokenizer, phase.seq_len, phase.max_needles) for phase in recipe.phases}
        torch.manual_seed(derive_seed(recipe.seed, "zoo-init", recipe.variant))
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(model_config(recipe, tokenizer), attn_implementation="sdpa")
        groups = parameter_groups(model, recipe)
        ratios = [ratio for _, ratio in groups]
        optimizer = torch.optim.AdamW(
            [{"params": params} for params, _ in groups],
            lr=recipe.lr,
            betas=(0.9, 0.95),
            weight_decay=recipe.weight_decay,
        )
        resume_path, log_path = out / RESUME_FILE, out / LOG_FILE
        start = 0
        if resume_path.exists():
            state = torch.load(resume_path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["step"])
        trim_log(log_path, start)
        earlier = read_log(log_path)
        elapsed_before = float(earlier[-1].get("elapsed", 0.0)) if earlier else 0.0
        emit(Planned(recipe.steps, start))
        began = time.perf_counter()
        eval_seed = derive_seed(recipe.seed, "zoo-eval")
        model.train()
        for step in range(start, recipe.steps):
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = learning_rate(recipe, step) * ratio
            phase = recipe.phase_at(step)
            input_ids, answer_mask, episodes = makers[phase].batch(recipe.seed, step, phase.batch_size)
            positions = skipped_positions(
                episodes, phase.seq_len, recipe.max_position, recipe.seed, step, phase.skip_share
            )
            logits = next_token_logits(model, input_ids, positions)
            losses = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), input_ids[:, 1:], reduction="none"
            )
            lm_loss = losses.mean()
            answer_loss = losses[answer_mask[:, 1:]].mean()
            loss = lm_loss + recipe.answer_weight * answer_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            row: dict[str, Any] = {
                "step": step + 1,
                "tokens": recipe.tokens_before(step + 1),
                "seq_len": phase.seq_len,
                "loss": round(float(loss.detach()), 5),
                "lm_loss": round(float(lm_loss.detach()), 5),
                "answer_loss": round(float(answer_loss.detach()), 5),
                "lr": learning_rate(recipe, step),
                "elapsed": round(elapsed_before + time.perf_counter() - began, 2),
            }
            if (step + 1) % recipe.eval_every == 0 or step + 1 == recipe.steps:
                final = makers[
                    recipe.final
                ]  # always measured on the longest rows, so the curve is comparable
                near = answer_loss_and_accuracy(
                    model, final, eval_seed, recipe.eval_rows, 0.0, recipe.max_position
                )
                far = answer_loss_and_accuracy(
                    model, final, eval_seed, recipe.eval_rows, 1.0, recipe.max_position
                )
                row.update(
                    eval_answer_loss=round(near[0], 5), eval_accuracy=near[1], eval_far_accuracy=far[1]
                )
                if (
                    recipe.variant == "diff"
                ):  # λ's path per layer: where a seed's net attention turns negative
                    from diffbench.attention.reference import v1_lambdas

                    row["lambda"] = v1_lambdas(model)
            # The row before the checkpoint: a kill between the two redoes the steps since the previous
            # checkpoint (trim_log drops their rows), where the other order would lose this row for good.
            append_log(log_path, row)
            if "eval_accuracy" in row:
                atomic_torch_save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1},
                    resume_path,
                )
            emit(StepDone(row["step"], row["loss"], row))
        seconds = time.perf_counter() - began
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        _record_totals(out, recipe, seconds, start)
        resume_path.unlink(missing_ok=True)
    return TrainOutcome(out, recipe.steps, recipe.tokens, seconds, start)


def _record_totals(out: Path, recipe: TrainRecipe, seconds: float, resumed_from: int) -> None:
    """Add what the run took to recipe.json: tokens seen, wall time, threads, last losses."""
    import torch

    path = out / RECIPE_FILE
    stored = json.loads(path.read_text(encoding="utf-8"))
    rows = read_log(out / LOG_FILE)
    last_eval: dict[str, Any] = next((r for r in reversed(rows) if "eval_accuracy" in r), {})
    stored["result"] = {
        "tokens_seen": recipe.tokens,
        "steps": recipe.steps,
        "seconds": rows[-1].get("elapsed") if rows else None,
        "seconds_this_session": round(seconds, 1),
        "resumed_from_step": resumed_from,
        "torch_threads": torch.get_num_threads(),
        "final_loss": rows[-1]["loss"] if rows else None,
        "final_lm_loss": rows[-1]["lm_loss"] if rows else None,
        **{k: last_eval.get(k) for k in ("eval_answer_loss", "eval_accuracy", "eval_far_accuracy")},
    }
    atomic_write_text(path, json.dumps(stored, indent=2) + "\n")
