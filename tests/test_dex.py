"""DEX: the operator's invariants, head selection, adaptation (with a kill and resume), fold, and the CLI.

Invariants held to 1e-5 on the tiny Llama of conftest.py (hidden 64, 4 heads, 2 KV heads, 2 layers):
λ = 0 is the baseline (even with W_D ≠ 0, with and without the RMS norm), folded equals unfolded, every
variant is causal, and save → load gives identical logits.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from diffbench.attention.dex import (
    DEX_MANIFEST,
    DEX_WEIGHTS,
    ScheduleState,
    attach_dex,
    dex_modules,
    fold_dex,
    lambda_init,
    read_dex_manifest,
    remove_dex,
    save_checkpoint,
    set_schedule,
    use_rms_norm,
)
from diffbench.cli import app
from diffbench.errors import UsageError
from diffbench.training.dex_adapt import AdaptOptions, adapt
from diffbench.training.dex_convert import convert, load_for_dex
from diffbench.training.dex_select import head_scores, parse_heads_per_layer, pick_heads

HEADS = [[0, 2], [1, 3]]
runner = CliRunner()


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, 500, (2, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def model(tiny_llama: Any) -> Any:
    """A private copy of the tiny Llama, so attaching DEX never leaks into other tests."""
    return copy.deepcopy(tiny_llama)


def randomise(model: Any, lam: float, seed: int = 1) -> None:
    """Nonzero W_D, λ_learn = lam, and the schedule past annealing so that λ = lam."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for dex in dex_modules(model):
            dex.w_d.copy_(torch.randn(dex.w_d.shape, generator=generator) * 0.3)
            dex.lambda_learn.fill_(lam)
    set_schedule(model, 10, 5)


# ---------------------------------------------------------------------------------------------------
# The operator
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("share", ["layer", "head"])
@pytest.mark.parametrize("norm", ["none", "rms"])
def test_fresh_dex_is_the_baseline(model: Any, ids: torch.Tensor, share: str, norm: str) -> None:
    base = logits(model, ids)
    attach_dex(model, HEADS, share, norm)
    assert torch.allclose(logits(model, ids), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("share", ["layer", "head"])
@pytest.mark.parametrize("norm", ["none", "rms"])
def test_lambda_zero_is_the_baseline_even_with_random_w_d(
    model: Any, ids: torch.Tensor, share: str, norm: str
) -> None:
    base = logits(model, ids)
    attach_dex(model, HEADS, share, norm)
    randomise(model, lam=0.0)
    assert torch.allclose(logits(model, ids), base, atol=1e-5, rtol=0)
    randomise(model, lam=0.4)  # and the check is not vacuous: λ ≠ 0 changes the logits
    assert (logits(model, ids) - base).abs().max() > 1e-3


@pytest.mark.parametrize("share", ["layer", "head"])
def test_folded_dex_equals_unfolded(model: Any, ids: torch.Tensor, share: str) -> None:
    attach_dex(model, [[0, 1, 2, 3], [2]], share)  # every head in one layer, one head in the other
    randomise(model, lam=0.6)
    unfolded = logits(model, ids)
    folded = copy.deepcopy(model)
    fold_dex(folded)
    assert not dex_modules(folded)
    assert torch.allclose(logits(folded, ids), unfolded, atol=1e-5, rtol=0)
    assert torch.equal(logits(model, ids), unfolded)  # the deep copy carried its own hooks


def test_fold_matches_the_block_diagonal_formula(model: Any) -> None:
    """W_O' = blockdiag(I − λW_D) W_O (math convention) is W' = W · blockdiag(I − λW_D)ᵀ for nn.Linear."""
    attach_dex(model, HEADS, "head")
    randomise(model, lam=0.7)
    o_proj = model.model.layers[0].self_attn.o_proj
    dex = dex_modules(model)[0]
    blocks = [torch.eye(16, dtype=torch.float64) for _ in range(4)]
    for position, head in enumerate(dex.heads):
        blocks[head] = torch.eye(16, dtype=torch.float64) - 0.7 * dex.w_d[position].detach().double()
    expected = o_proj.weight.detach().double() @ torch.block_diag(*blocks).T
    fold_dex(model)
    assert torch.allclose(o_proj.weight.double(), expected, atol=1e-6)


def test_fold_refuses_the_rms_norm(model: Any) -> None:
    attach_dex(model, HEADS, "layer", "rms")
    with pytest.raises(UsageError, match="non-linear"):
        fold_dex(model)


@pytest.mark.parametrize("variant", ["layer", "head", "rms", "folded"])
def test_every_variant_is_causal(model: Any, variant: str) -> None:
    share = "head" if variant == "head" else "layer"
    attach_dex(model, HEADS, share, "rms" if variant == "rms" else "none")
    randomise(model, lam=0.5)
    if variant == "folded":
        fold_dex(model)
    first = torch.randint(3, 500, (1, 40), generator=torch.Generator().manual_seed(2))
    second = first.clone()
    second[0, 30:] = torch.randint(3, 500, (10,), generator=torch.Generator().manual_seed(3))
    a, b = logits(model, first), logits(model, second)
    assert torch.allclose(a[0, :30], b[0, :30], atol=1e-5, rtol=0)
    assert (a[0, 30:] - b[0, 30:]).abs().max() > 1e-3


def test_lambda_schedule_anneals_from_zero_to_lambda_learn(model: Any) -> None:
    attach_dex(model, HEADS)
    dex = dex_modules(model)[1]
    with torch.no_grad():
        dex.lambda_learn.fill_(0.3)
    assert (
        dex.lambda_init == pytest.approx(lambda_init(1)) == pytest.approx(0.8 - 0.6 * 2.718281828 ** (-0.3))
    )
    for step, expected in [(0, 0.0), (5, 0.5 * 0.5 * dex.lambda_init + 0.5 * 0.3), (10, 0.3), (12, 0.3)]:
        dex.step, dex.anneal_steps = step, 10
        assert float(dex.lambda_value().detach()) == pytest.approx(expected)


def test_remove_dex_restores_the_baseline(model: Any, ids: torch.Tensor) -> None:
    base = logits(model, ids)
    attach_dex(model, HEADS)
    randomise(model, lam=0.5)
    remove_dex(model)
    assert not dex_modules(model)
    assert torch.equal(logits(model, ids), base)
    assert not any(".dex." in key for key in model.state_dict())


# ---------------------------------------------------------------------------------------------------
# Checkpoints: convert, save → load, head selection
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dex") / "converted"
    convert(str(tiny_llama_dir), out, "0.5", "entropy", "layer", 0, ["test"])
    return out


def test_converted_checkpoint_loads_as_dex_and_equals_the_baseline(
    converted: Path, tiny_llama_dir: Path, ids: torch.Tensor
) -> None:
    manifest = read_dex_manifest(converted)
    assert manifest is not None and manifest.kind == "dex"
    assert manifest.base_model.path == str(tiny_llama_dir.resolve())
    assert [len(h) for h in manifest.selected_heads] == [2, 2]
    assert manifest.tokens_seen == 0 and manifest.final_lambda == [0.0, 0.0]
    loaded = load_for_dex(str(converted), 64)
    base = load_for_dex(str(tiny_llama_dir), 64)
    assert loaded.entry.variant == "dex" and base.entry.variant == "baseline"
    assert len(dex_modules(loaded.model)) == 2
    assert torch.allclose(logits(loaded.model, ids), logits(base.model, ids), atol=1e-5, rtol=0)


def test_save_load_round_trip_gives_identical_logits(
    converted: Path, tmp_path: Path, ids: torch.Tensor
) -> None:
    loaded = load_for_dex(str(converted), 64)
    use_rms_norm(loaded.model)
    randomise(loaded.model, lam=0.45)
    expected = logits(loaded.model, ids)
    manifest = read_dex_manifest(converted)
    assert manifest is not None
    manifest = manifest.model_copy(update={"norm": "rms", "schedule": ScheduleState(step=10, anneal_steps=5)})
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "saved", manifest)
    assert (tmp_path / "saved" / DEX_WEIGHTS).is_file()
    reloaded = load_for_dex(str(tmp_path / "saved"), 64)
    assert reloaded.entry.variant == "dex"
    assert torch.equal(logits(reloaded.model, ids), expected)


@pytest.mark.parametrize("rule", ["entropy", "importance"])
def test_head_selection_is_deterministic_and_picks_the_count(
    model: Any, tiny_tokenizer: Any, rule: str
) -> None:
    from diffbench.training.dex_data import prose_blocks

    batches = prose_blocks(tiny_tokenizer, 0, "calibration", 2, 64)
    scores = head_scores(model, batches, rule)
    assert scores == head_scores(model, batches, rule)
    assert len(scores) == 2 and all(len(layer) == 4 for layer in scores)
    for count in (1, 2, 3, 4):
        picked = pick_heads(scores, count, rule)
        assert [len(layer) for layer in picked] == [count, count]
        assert all(layer == sorted(set(layer)) for layer in picked)
    assert model.config._attn_implementation == "sdpa"  # the eager calibration pass is undone


def test_pick_heads_prefers_high_entropy_and_low_importance() -> None:
    scores = [[0.3, 0.9, 0.1, 0.9]]
    assert pick_heads(scores, 2, "entropy") == [[1, 3]]  # tie 0.9/0.9 broken by head index
    assert pick_heads(scores, 2, "importance") == [[0, 2]]
    assert pick_heads(scores, 4, "all") == [[0, 1, 2, 3]]


@pytest.mark.parametrize(("text", "expected"), [("0.5", 2), ("1.0", 4), ("0.1", 1), ("3", 3), ("1", 1)])
def test_heads_per_layer_is_a_fraction_or_a_count(text: str, expected: int) -> None:
    assert parse_heads_per_layer(text, 4) == expected


@pytest.mark.parametrize("text", ["0", "1.5", "-0.5", "5", "half", "0.0"])
def test_bad_heads_per_layer_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="heads-per-layer"):
        parse_heads_per_layer(text, 4)


# ---------------------------------------------------------------------------------------------------
# Adaptation
# ---------------------------------------------------------------------------------------------------


def small_options(model: Path, out: Path, **changes: Any) -> AdaptOptions:
    base: dict[str, Any] = {
        "model": str(model),
        "out": out,
        "tokens": 12 * 4 * 64,
        "seq_len": 64,
        "batch_size": 4,
        "eval_sequences": 4,
        "checkpoint_every": 4,
        "command": ["test"],
    }
    return AdaptOptions(**{**base, **changes})


@pytest.mark.parametrize(("train", "minimum_drop"), [("dex", 0.0), ("dex+attn", 0.02)])
def test_adapt_reduces_the_loss(converted: Path, tmp_path: Path, train: str, minimum_drop: float) -> None:
    options = small_options(converted, tmp_path / "adapted", train=train, lr=1e-2, base_lr=3e-3)
    outcome = adapt(options)
    training = outcome.manifest.training
    assert training is not None and training.loss_before is not None and training.loss_after is not None
    assert training.loss_before - training.loss_after > minimum_drop
    assert outcome.manifest.tokens_seen == 12 * 4 * 64
    assert outcome.manifest.schedule.step == 12 and outcome.manifest.schedule.anneal_steps == 6
    assert all(v is not None and v != 0.0 for v in outcome.manifest.final_lambda)
    log = [json.loads(line) for line in (tmp_path / "adapted" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == list(range(1, 13))
    assert not (tmp_path / "adapted" / "resume.pt").exists()
    again = adapt(options)  # the same command on a finished run does nothing
    assert again.already_complete


def test_user_text_is_split_into_held_out_and_seeded_training_blocks(
    tiny_tokenizer: Any, tmp_path: Path
) -> None:
    import itertools

    from diffbench.haystack.prose import iter_prose_paragraphs
    from diffbench.training.dex_data import adaptation_blocks, resolve_data

    paragraphs = itertools.islice(iter_prose_paragraphs(7), 60)
    (tmp_path / "notes.txt").write_text("\n\n".join(" ".join(p) for p in paragraphs))
    data = resolve_data(str(tmp_path), seed=0)
    train, held_out = adaptation_blocks(tiny_tokenizer, data, 0, 50, 3, 32)
    again, _ = adaptation_blocks(tiny_tokenizer, data, 0, 50, 3, 32)
    assert train.shape == (50, 32) and held_out.shape == (3, 32) and torch.equal(train, again)
    held = {tuple(row.tolist()) for row in held_out}
    assert not any(tuple(row.tolist()) in held for row in train)
    with pytest.raises(UsageError, match="too few"):
        adaptation_blocks(tiny_tokenizer, data, 0, 10, 10_000, 32)


def test_select_all_puts_dex_on_every_head(tiny_llama_dir: Path, tmp_path: Path) -> None:
    convert(str(tiny_llama_dir), tmp_path / "all", None, "all", "layer", 0, ["test"])
    manifest = read_dex_manifest(tmp_path / "all")
    assert manifest is not None and manifest.selected_heads == [[0, 1, 2, 3]] * 2
    assert (
        manifest.heads_per_layer == "all" and manifest.calibration and manifest.calibration["scores"] is None
    )
    with pytest.raises(UsageError, match="drop --heads-per-layer"):
        convert(str(tiny_llama_dir), tmp_path / "again", "0.5", "all", "layer", 0, ["test"])


def test_oproj_control_adapts_a_plain_model_and_changes_only_o_proj(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    outcome = adapt(small_options(tiny_llama_dir, tmp_path / "control", train="oproj", tokens=2 * 4 * 64))
    manifest = outcome.manifest
    assert manifest.kind == "oproj-control" and manifest.selected_heads == []
    assert manifest.base_model.path == str(tiny_llama_dir.resolve()) and manifest.tokens_seen == 2 * 4 * 64
    assert not (tmp_path / "control" / DEX_WEIGHTS).exists()
    before = load_file(str(tiny_llama_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "control" / "model.safetensors"))
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {f"model.layers.{layer}.self_attn.o_proj.weight" for layer in range(2)}


def test_adapt_refuses_bad_options(converted: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(UsageError, match="needs a DEX checkpoint"):
        adapt(small_options(tiny_llama_dir, out))
    with pytest.raises(UsageError, match="anneal-steps"):
        adapt(small_options(converted, out, anneal_steps=13))
    with pytest.raises(UsageError, match="--norm applies to DEX only"):
        adapt(small_options(converted, out, train="oproj", norm="rms"))
    with pytest.raises(UsageError, match="less than one step"):
        adapt(small_options(converted, out, tokens=100))
    assert not out.exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from diffbench.events import StepDone
    from diffbench.training.dex_adapt import AdaptOptions, adapt

    def on_event(event):
        # A hard kill two steps after the checkpoint at step 4: steps 5-6 are logged but not saved.
        if isinstance(event, StepDone) and event.step == 6:
            os.kill(os.getpid(), signal.SIGKILL)

    options = AdaptOptions(model=sys.argv[1], out=Path(sys.argv[2]), tokens=12 * 4 * 64, seq_len=64,
                           batch_size=4, eval_sequences=4, checkpoint_every=4, norm="rms", command=["test"])
    adapt(options, on_event)
    """
)


def test_adapt_resumes_after_a_kill_and_matches_an_uninterrupted_run(converted: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    interrupted = tmp_path / "interrupted"
    process = subprocess.run(
        [sys.executable, "-c", KILLER, str(converted), str(interrupted)], capture_output=True, text=True
    )
    assert process.returncode == -9, process.stderr
    assert (interrupted / "resume.pt").is_file() and not (interrupted / DEX_MANIFEST).exists()
    steps_logged = [
        json.loads(line)["step"] for line in (interrupted / "train_log.jsonl").read_text().splitlines()
    ]
    assert max(steps_logged) == 6

    resumed = adapt(small_options(converted, interrupted, norm="rms"))
    assert resumed.resumed_from == 4
    straight = adapt(small_options(converted, tmp_path / "straight", norm="rms"))
    assert straight.resumed_from == 0

    a, b = load_file(str(interrupted / DEX_WEIGHTS)), load_file(str(tmp_path / "straight" / DEX_WEIGHTS))
    assert a.keys() == b.keys() and len(a) == 4
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    rows_a = (interrupted / "train_log.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    assert rows_a == rows_b  # the log of steps 5-6 written before the kill was replaced, not duplicated


def test_adapt_refuses_a_different_run_in_the_same_out(converted: Path, tmp_path: Path) -> None:
    adapt(small_options(converted, tmp_path / "run"))
    with pytest.raises(UsageError, match="another checkpoint or adaptation run"):
        adapt(small_options(converted, tmp_path / "run", lr=5e-3))


# ---------------------------------------------------------------------------------------------------
# The command line, end to end
# ---------------------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_cli_convert_adapt_fold_niah(tiny_llama_dir: Path, tmp_path: Path) -> None:
    converted, adapted, folded, control = (tmp_path / n for n in ("c", "a", "f", "o"))
    result = invoke("dex", "convert", "--model", str(tiny_llama_dir), "--out", str(converted),
                    "--heads-per-layer", "3", "--select", "importance", "--share", "head")  # fmt: skip
    assert result.exit_code == 0, result.output
    common = ["--tokens", str(8 * 2 * 64), "--seq-len", "64", "--batch-size", "2", "--eval-sequences", "2"]
    result = invoke("dex", "adapt", "--model", str(converted), "--out", str(adapted), *common)
    assert result.exit_code == 0, result.output
    assert "held-out loss" in result.output
    result = invoke("dex", "fold", "--model", str(adapted), "--out", str(folded))
    assert result.exit_code == 0, result.output
    result = invoke(
        "dex", "adapt", "--model", str(converted), "--out", str(control), "--train", "oproj", *common
    )
    assert result.exit_code == 0, result.output

    manifest = read_dex_manifest(adapted)
    assert manifest is not None and manifest.training is not None
    assert manifest.base_model.path == str(tiny_llama_dir.resolve())
    assert [len(h) for h in manifest.selected_heads] == [3, 3] and manifest.share == "head"
    assert manifest.tokens_seen == 8 * 2 * 64 and manifest.training.train == "dex"
    folded_manifest = read_dex_manifest(folded)
    assert folded_manifest is not None and folded_manifest.folded
    assert not (folded / DEX_WEIGHTS).exists()
    control_manifest = read_dex_manifest(control)
    assert control_manifest is not None and control_manifest.kind == "oproj-control"

    ids = torch.randint(3, 500, (1, 40), generator=torch.Generator().manual_seed(4))
    unfolded_model = load_for_dex(str(adapted), 64).model
    folded_model = load_for_dex(str(folded), 64)
    assert folded_model.entry.variant == "dex" and not dex_modules(folded_model.model)
    assert torch.allclose(logits(folded_model.model, ids), logits(unfolded_model, ids), atol=1e-5, rtol=0)
    assert load_for_dex(str(control), 64).entry.variant == "baseline"

    runs = tmp_path / "runs"
    result = invoke("niah", "--model", str(adapted), "--model", str(folded), "--model", str(control),
                    "--lengths", "256", "--depths", "2", "--out", str(runs))  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (runs / "records.jsonl").read_text().splitlines()]
    variants = {record["model"]: record["variant"] for record in records}
    assert variants == {"a": "dex", "f": "dex", "o": "baseline"}


def test_cli_fold_refuses_a_normed_dex_with_the_reason(converted: Path, tmp_path: Path) -> None:
    adapted = tmp_path / "rms"
    adapt(small_options(converted, adapted, norm="rms", tokens=2 * 4 * 64))
    result = invoke("dex", "fold", "--model", str(adapted), "--out", str(tmp_path / "folded"))
    assert result.exit_code == 2
    assert "non-linear" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "folded").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "--model", "no/such-dir/", "--out", "OUT"], "not found"),
        (["convert", "--model", "TINY", "--out", "OUT", "--heads-per-layer", "1.5"], "(0, 1]"),
        (["convert", "--model", "TINY", "--out", "OUT", "--select", "random"], "unknown --select"),
        (["adapt", "--model", "TINY", "--out", "OUT"], "needs a DEX checkpoint"),
        (["adapt", "--model", "TINY", "--out", "OUT", "--train", "all"], "unknown --train"),
        (["fold", "--model", "TINY", "--out", "OUT"], "not a DEX checkpoint"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tiny_llama_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [str(tiny_llama_dir) if a == "TINY" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = invoke("dex", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_dex_on_a_layer_whose_weights_are_not_loaded_yet_lives_on_the_host(tiny_llama: Any) -> None:
    """accelerate's offloaded layers hold their weights on "meta" until a forward loads them: DEX's own
    parameters must be real (on the host), not meta tensors that load_state_dict cannot fill."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        shell = LlamaForCausalLM(tiny_llama.config)
    attach_dex(shell, HEADS)
    devices = {p.device.type for dex in dex_modules(shell) for p in dex.parameters()}
    assert devices == {"cpu"}
