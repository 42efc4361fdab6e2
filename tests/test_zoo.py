"""The model zoo: tokenizer, training episodes, resumable training, and the shipped models end to end."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from diffbench.checkpoints import read_log
from diffbench.cli import app
from diffbench.errors import UsageError
from diffbench.events import StepDone
from diffbench.training.episodes import EpisodeMaker, skipped_positions
from diffbench.training.tokenizer import build_tokenizer
from diffbench.training.zoo_train import train
from diffbench.zoo import ZOO_MODELS, seed_model_name, zoo_root
from diffbench.zoo.recipes import RECIPES, ZOO_NAMES, ZOO_SEEDS, Phase, TrainRecipe

runner = CliRunner()


@pytest.fixture(scope="module")
def zoo_tokenizer() -> Any:
    return build_tokenizer(0)


def test_tokenizer_is_reproducible_and_splits_digits(zoo_tokenizer: Any) -> None:
    again = build_tokenizer(0)
    assert again.backend_tokenizer.to_str() == zoo_tokenizer.backend_tokenizer.to_str()
    shipped = zoo_root() / "baseline" / "tokenizer.json"
    if shipped.exists():  # the shipped models carry exactly the tokenizer the recipe builds
        assert (
            json.loads(shipped.read_text())["model"]
            == json.loads(zoo_tokenizer.backend_tokenizer.to_str())["model"]
        )
    text = "The special magic number for quiet-harbor is 4815162."
    ids = zoo_tokenizer(text)["input_ids"]
    assert ids[0] == zoo_tokenizer.bos_token_id
    pieces = [zoo_tokenizer.decode([i]) for i in ids]
    assert pieces[-8:] == ["4", "8", "1", "5", "1", "6", "2", "."]
    assert zoo_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert zoo_tokenizer("x — ü 日本")["input_ids"]  # any text encodes (byte fallback alphabet)


def test_episodes_are_exact_deterministic_and_ask_one_of_several_keys(zoo_tokenizer: Any) -> None:
    maker = EpisodeMaker(zoo_tokenizer, 512, 4)
    digest = hashlib.sha256()
    counts = set()
    for row in range(12):
        episode = maker.episode(0, 7, row)
        assert len(episode.input_ids) == 512
        assert episode.input_ids == maker.episode(0, 7, row).input_ids
        digest.update(str(episode.input_ids).encode())
        text = zoo_tokenizer.decode(episode.input_ids[: episode.question_start], skip_special_tokens=True)
        needles = text.count("The special magic number for ")
        counts.add(needles)
        assert len(episode.needle_ends) == needles == len(episode.answer_spans)
        asked = []
        for start, end in episode.answer_spans:  # every needle asked once, its own value answered
            question = zoo_tokenizer.decode(episode.input_ids[episode.question_start : start])
            key = question.rsplit("The special magic number for ", 1)[1].split(" ", 1)[0]
            answer = zoo_tokenizer.decode(episode.input_ids[start : end - 1]).strip()
            assert f"The special magic number for {key} is {answer}." in text
            assert episode.input_ids[end - 1] == zoo_tokenizer.eos_token_id
            asked.append(key)
        assert len(set(asked)) == needles
        assert max(episode.needle_ends) <= episode.question_start < episode.answer_spans[0][0]
        assert episode.answer_spans[-1][1] == 512
    assert counts == {1, 2, 3, 4}
    assert maker.episode(1, 7, 0).input_ids != maker.episode(0, 7, 0).input_ids


def test_position_skips_keep_both_sides_contiguous(zoo_tokenizer: Any) -> None:
    maker = EpisodeMaker(zoo_tokenizer, 256, 2)
    episodes = [maker.episode(0, 0, row) for row in range(64)]
    positions = skipped_positions(episodes, 256, 65_536, 0, 0, 0.5)
    jumped = 0
    for row, episode in zip(positions.tolist(), episodes, strict=True):
        steps = [b - a for a, b in itertools.pairwise(row)]
        jumps = [i for i, step in enumerate(steps) if step != 1]
        assert len(jumps) <= 1 and row[0] == 0 and row[-1] < 65_536
        if jumps:
            jumped += 1
            assert jumps[0] + 1 <= episode.question_start  # the jump comes before the question
    assert 20 <= jumped <= 44  # about half the rows, as skip_share says


TINY = TrainRecipe(
    name="tiny",
    variant="baseline",
    hidden_size=16,
    intermediate_size=32,
    heads=2,
    head_dim=8,
    phases=(Phase(6, 128, 2, 1, 0.5),),
    warmup_steps=2,
    eval_every=3,
    eval_rows=2,
)


def test_interrupted_training_resumes_to_the_uninterrupted_result(
    tmp_path: Path, one_torch_thread: None
) -> None:
    import torch
    from safetensors.torch import load_file

    whole = train(TINY, tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_after_four(event: Any) -> None:
        if isinstance(event, StepDone) and event.step == 4:
            raise Stop  # killed after the step-3 checkpoint, with step 4 logged and lost

    with pytest.raises(Stop):
        train(TINY, tmp_path / "cut", stop_after_four)
    resumed = train(TINY, tmp_path / "cut")
    assert resumed.resumed_from == 3 and whole.resumed_from == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]  # noqa: E731
    assert strip(read_log(tmp_path / "cut" / "train_log.jsonl")) == strip(
        read_log(tmp_path / "whole" / "train_log.jsonl")
    )
    a, b = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "cut" / "model.safetensors"),
    )
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not (tmp_path / "cut" / "resume.pt").exists()
    recipe = json.loads((tmp_path / "whole" / "recipe.json").read_text())
    assert recipe["result"]["tokens_seen"] == 6 * 2 * 128
    again = train(TINY, tmp_path / "whole")  # a finished run is not trained again
    assert again.resumed_from == TINY.steps
    assert len(read_log(tmp_path / "whole" / "train_log.jsonl")) == 6


def test_a_different_recipe_in_the_same_directory_is_refused(tmp_path: Path, one_torch_thread: None) -> None:
    from diffbench.errors import UsageError

    train(replace(TINY, phases=(Phase(1, 128, 2, 1, 0.5),), eval_every=1), tmp_path / "run")
    with pytest.raises(UsageError, match="another recipe"):
        train(TINY, tmp_path / "run")


def test_diff_recipe_trains_a_difflama_of_the_same_budget(tmp_path: Path, one_torch_thread: None) -> None:
    from transformers import AutoModelForCausalLM

    two = (Phase(2, 128, 2, 1, 0.5),)
    train(replace(TINY, variant="diff", phases=two, eval_every=2), tmp_path / "diff")
    train(replace(TINY, phases=two, eval_every=2), tmp_path / "base")
    diff = AutoModelForCausalLM.from_pretrained(tmp_path / "diff")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert type(diff).__name__ == "DiffLlamaForCausalLM"
    extra = sum(p.numel() for p in diff.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == TINY.layers * 4 * TINY.head_dim  # only the λ vectors
    # the diff log follows λ per layer at each evaluation; the last one is the saved model's
    from diffbench.attention.reference import v1_lambdas

    evaluated = [r for r in read_log(tmp_path / "diff" / "train_log.jsonl") if "eval_accuracy" in r]
    assert evaluated[-1]["lambda"] == v1_lambdas(diff) and len(evaluated[-1]["lambda"]) == TINY.layers
    assert all("lambda" not in r for r in read_log(tmp_path / "base" / "train_log.jsonl"))


def test_dex_recipe_converts_and_adapts_a_zoo_trained_source(tmp_path: Path, one_torch_thread: None) -> None:
    from diffbench.attention.dex import is_dex_checkpoint, read_dex_manifest
    from diffbench.training.zoo_dex import train_dex
    from diffbench.zoo.recipes import DexRecipe

    train(TINY, tmp_path / "source")
    outcome = train_dex(
        DexRecipe(seq_len=128, batch_size=2, token_share=0.2), tmp_path / "dex", str(tmp_path / "source")
    )
    assert is_dex_checkpoint(str(tmp_path / "dex"))
    manifest = read_dex_manifest(tmp_path / "dex")
    assert (
        manifest is not None and manifest.tokens_seen == outcome.tokens == 256
    )  # 20% of 1,536: one step of 2 × 128
    result = json.loads((tmp_path / "dex" / "recipe.json").read_text())["result"]
    assert result["source_tokens"] == 1536 and result["token_share"] == pytest.approx(256 / 1536, abs=1e-4)
    again = train_dex(
        DexRecipe(seq_len=128, batch_size=2, token_share=0.2), tmp_path / "dex", str(tmp_path / "source")
    )
    assert again.tokens == 256  # rerunning a finished recipe changes nothing


# ----- the shipped models -------------------------------------------------------------------------


def test_shipped_models_are_small_and_load_as_their_variant() -> None:
    from diffbench.models.load import detect_variant, load_config, resolve_model_ref
    from diffbench.report.zoo_card import directory_mb

    assert len(ZOO_MODELS) == len(ZOO_NAMES) * len(ZOO_SEEDS) == 9
    for name in ZOO_MODELS:
        variant = name.split("-s")[0]
        ref = resolve_model_ref(f"zoo:{name}")
        assert ref.kind == "zoo" and ref.name == f"zoo-{name}"
        assert directory_mb(Path(ref.location)) <= 10
        assert detect_variant(load_config(ref, ref.location), ref.location) == variant
        card = (Path(ref.location) / "README.md").read_text()
        assert card.startswith(f"# zoo:{name}") and "## Seed study" in card
        assert all(f"| zoo:{seed_model_name(variant, seed)} |" in card for seed in ZOO_SEEDS)
        assert ("λ per layer" in card) == (variant == "diff")
        recipe = json.loads((Path(ref.location) / "recipe.json").read_text())
        assert recipe["recipe"]["seed"] == ZOO_SEEDS[ZOO_MODELS.index(name) % len(ZOO_SEEDS)]
        if variant == "dex":  # DEX adapts the same seed's baseline on at most 1% of its training tokens
            assert recipe["result"]["token_share"] <= 0.01
            assert recipe["result"]["source"] == f"zoo:{name.replace('dex', 'baseline')}"


def test_seed_zero_has_one_name_and_unknown_names_list_the_catalogue() -> None:
    from diffbench.models.load import resolve_model_ref

    assert resolve_model_ref("zoo:diff-s0") == replace(resolve_model_ref("zoo:diff"), text="zoo:diff-s0")
    assert ZOO_MODELS[:3] == ("baseline", "baseline-s1", "baseline-s2")
    with pytest.raises(UsageError, match="unknown zoo model 'diff-s7': choose one of baseline, baseline-s1"):
        resolve_model_ref("zoo:diff-s7")


def test_shipped_training_log_reproduces_from_the_recipe(tmp_path: Path, one_torch_thread: None) -> None:
    """The first steps of the shipped baseline's loss curve, retrained from its seed, match (1 thread)."""
    recipe = RECIPES["baseline"]
    assert isinstance(recipe, TrainRecipe)
    shipped = [r for r in read_log(zoo_root() / "baseline" / "train_log.jsonl") if "loss" in r][:5]
    first = recipe.phases[0]
    five = (replace(first, steps=5),)
    train(
        replace(recipe, phases=five, eval_every=5, eval_rows=2), tmp_path / "again"
    )  # warmup lr: same 5 steps
    again = read_log(tmp_path / "again" / "train_log.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3, 4, 5]
    for ours, theirs in zip(again, shipped, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-3)


def test_zoo_baseline_retrieves_at_its_training_lengths(tmp_path: Path) -> None:
    """The trained baseline finds the needle at the lengths it was trained on (512 and 2K tokens)."""
    result = runner.invoke(
        app,
        ["niah", "--model", "zoo:baseline", "--lengths", "512,2k", "--depths", "3", "--samples", "3",
         "--out", str(tmp_path / "run"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["models"][0]["n"] == 18
    assert summary["models"][0]["accuracy"] >= 0.9, summary["models"]


def test_zoo_list_shows_every_model() -> None:
    result = runner.invoke(app, ["zoo", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == list(ZOO_MODELS)
    assert all(row["parameters"] > 100_000 and row["size_mb"] <= 10 for row in rows)


def test_unknown_zoo_model_is_a_usage_error() -> None:
    result = runner.invoke(app, ["niah", "--model", "zoo:giant", "--lengths", "1k"])
    assert result.exit_code == 2
    assert "unknown zoo model 'giant'" in result.output and "Traceback" not in result.output


def test_a_position_skip_still_lets_the_question_see_the_needle(tiny_llama: Any) -> None:
    """Changing a token before the jump changes the last logits: the skip is no packed-sequence boundary."""
    import torch

    from diffbench.training.zoo_train import next_token_logits

    torch.manual_seed(0)
    vocab = tiny_llama.config.vocab_size
    ids = torch.randint(3, vocab - 1, (1, 64))
    positions = torch.arange(64).unsqueeze(0).clone()
    positions[0, 32:] += 5000
    changed = ids.clone()
    changed[0, 5] = vocab - 1
    with torch.no_grad():
        before = next_token_logits(tiny_llama, ids, positions)[0, -1]
        after = next_token_logits(tiny_llama, changed, positions)[0, -1]
    assert (before - after).abs().max() > 1e-4


def test_zoo_train_seed_is_another_sample_of_the_recipe(
    tmp_path: Path, one_torch_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--seed replaces the recipe's seed (recorded in recipe.json); a directory keeps its seed."""
    from typer.testing import CliRunner

    from diffbench.cli import app

    monkeypatch.setitem(RECIPES, "baseline", replace(TINY, phases=(Phase(2, 128, 2, 1, 0.5),), eval_every=2))
    losses = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        result = CliRunner().invoke(app, ["zoo", "train", "baseline", "--out", str(out), "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "recipe.json").read_text())["recipe"]["seed"] == seed
        losses[seed] = [
            row["loss"] for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
        ]
    assert losses[0] != losses[1]
    again = CliRunner().invoke(
        app, ["zoo", "train", "baseline", "--out", str(tmp_path / "seed0"), "--seed", "1"]
    )
    assert again.exit_code == 2 and "another recipe" in again.output


def test_a_kill_between_log_and_checkpoint_loses_no_log_row(
    tmp_path: Path, one_torch_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed the moment step 3's checkpoint lands: the resume starts at step 3 and the log still holds
    each of the 6 rows once (with the checkpoint written before its row, row 3 was lost)."""
    import diffbench.training.zoo_train as training

    class Stop(Exception):
        pass

    saved = training.atomic_torch_save

    def die_after_the_first_checkpoint(state: dict[str, Any], path: Path) -> None:
        saved(state, path)
        raise Stop

    monkeypatch.setattr(training, "atomic_torch_save", die_after_the_first_checkpoint)
    with pytest.raises(Stop):
        train(TINY, tmp_path / "cut")
    monkeypatch.setattr(training, "atomic_torch_save", saved)
    resumed = train(TINY, tmp_path / "cut")
    assert resumed.resumed_from == 3
    assert [row["step"] for row in read_log(tmp_path / "cut" / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_lambda_lr_ratio_moves_only_the_lambda_vectors_slower(tmp_path: Path, one_torch_thread: None) -> None:
    """--lambda-lr-ratio scales λ's rate alone: at 0 the λ vectors keep their initial values exactly
    while every other weight trains, and the shipped recipes keep their fingerprints."""
    import torch
    from transformers import AutoModelForCausalLM

    from diffbench.seeding import derive_seed
    from diffbench.training.zoo_train import model_config

    three = (Phase(3, 128, 2, 1, 0.5),)
    frozen = replace(TINY, variant="diff", phases=three, eval_every=3, lambda_lr_ratio=0.0)
    train(frozen, tmp_path / "frozen")
    train(replace(frozen, lambda_lr_ratio=1.0), tmp_path / "full")
    torch.manual_seed(derive_seed(frozen.seed, "zoo-init", frozen.variant))
    initial = AutoModelForCausalLM.from_config(
        model_config(frozen, build_tokenizer(frozen.seed))
    ).state_dict()
    for name, trained in (("frozen", tmp_path / "frozen"), ("full", tmp_path / "full")):
        weights = AutoModelForCausalLM.from_pretrained(trained).state_dict()
        moved = {key for key, value in weights.items() if not torch.equal(value, initial[key])}
        lambdas = {key for key in weights if key.rsplit(".", 1)[-1].startswith("lambda_")}
        assert len(lambdas) == TINY.layers * 4
        assert moved & lambdas == (set() if name == "frozen" else lambdas)
        assert "model.layers.0.self_attn.q_proj.weight" in moved
    assert frozen.fingerprint() != replace(frozen, lambda_lr_ratio=1.0).fingerprint()
    for name in ("baseline", "diff"):  # a field added later leaves the shipped fingerprints alone
        stored = json.loads((zoo_root() / name / "recipe.json").read_text())["fingerprint"]
        assert RECIPES[name].fingerprint() == stored


def test_zoo_train_names_a_lambda_lr_ablation_and_refuses_it_without_lambda(
    tmp_path: Path, one_torch_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_diff = replace(TINY, variant="diff", phases=(Phase(1, 128, 2, 1, 0.5),), eval_every=1)
    monkeypatch.setitem(RECIPES, "diff", tiny_diff)
    out = tmp_path / "ablation"
    result = runner.invoke(
        app, ["zoo", "train", "diff", "--out", str(out), "--seed", "2", "--lambda-lr-ratio", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "zoo:diff-lambda-lr0.1-s2: " in result.output
    assert json.loads((out / "recipe.json").read_text())["recipe"]["lambda_lr_ratio"] == 0.1
    refused = runner.invoke(
        app, ["zoo", "train", "baseline", "--out", str(tmp_path / "b"), "--lambda-lr-ratio", "0.1"]
    )
    assert refused.exit_code == 2 and "only applies to 'diff'" in refused.output
