"""Differential Transformer V1 (transformers' DiffLlama) and V2 (diffbench's) against plain-torch oracles.

Tiny random float32 models (hidden 64, 4 heads, 2 layers). The oracles in diffbench.attention.reference
are written from docs/design/methods.md, so agreement to 1e-5 pins the layouts down: which heads pair
up, which KV heads a pair reads, which layer index λ_init uses. The rest checks what diffbench's engine
relies on: causality, save/load, logits_to_keep, KV caching, generate() and the niah CLI end to end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from diffbench.attention.diff_v2 import DiffV2Attention, DiffV2Config, DiffV2ForCausalLM
from diffbench.attention.model_types import DIFF_V2_MODEL_TYPE
from diffbench.attention.reference import (
    AttentionFn,
    diff_v1_reference,
    diff_v2_reference,
    lambda_init,
    llama_style_logits,
)
from diffbench.attention.registry import register_diffbench_models
from diffbench.cli import app
from diffbench.engine.teacher_forcing import score_and_generate
from diffbench.models.device import attention_implementation
from diffbench.models.load import (
    detect_variant,
    load_weights,
    prepare_model,
    resolve_model_ref,
    variant_version,
)

TOLERANCE = 1e-5  # absolute, in float32
IMPLEMENTATIONS = ["eager", "sdpa"]
VARIANTS = ["llama", "diff_v1", "diff_v2"]
VOCAB = 97
LENGTH = 24


def tiny_config(variant: str, num_kv_heads: int = 2, vocab_size: int = VOCAB, **extra: Any) -> Any:
    """The tiny shape shared by all variants; no special tokens (so no EOS stops decoding) unless given."""
    from transformers import DiffLlamaConfig, LlamaConfig

    shape: dict[str, Any] = {
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 4096,
        **extra,
    }
    if variant == "diff_v1":
        return DiffLlamaConfig(**shape, lambda_std_dev=0.3)  # λ visibly away from λ_init
    return (DiffV2Config if variant == "diff_v2" else LlamaConfig)(**shape)


def build_model(variant: str, config: Any, seed: int = 0) -> Any:
    """A seeded random model; Diff V2's W_λ is randomised too (its zero init would hide λ's wiring)."""
    from transformers import DiffLlamaForCausalLM, LlamaForCausalLM

    torch.manual_seed(seed)
    model_class = {"llama": LlamaForCausalLM, "diff_v1": DiffLlamaForCausalLM, "diff_v2": DiffV2ForCausalLM}
    model = model_class[variant](config).eval()
    if variant == "diff_v2":
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.lambda_proj.weight.normal_(0.0, 0.5)
    return model


def tiny_model(variant: str, num_kv_heads: int = 2, implementation: str = "sdpa") -> Any:
    config = tiny_config(variant, num_kv_heads)
    config._attn_implementation = implementation
    return build_model(variant, config)


def assert_near(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0.0)


def random_ids(batch: int = 2, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


REFERENCES: dict[str, AttentionFn] = {"diff_v1": diff_v1_reference, "diff_v2": diff_v2_reference}


# --- The oracles agree with the models ------------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("variant", "num_kv_heads"), [("diff_v1", 2), ("diff_v1", 4), ("diff_v2", 1), ("diff_v2", 2)]
)
def test_reference_matches_each_attention_layer(variant: str, num_kv_heads: int, implementation: str) -> None:
    """Every layer's attention output, on the exact inputs the model gives it, equals the oracle's."""
    model = tiny_model(variant, num_kv_heads, implementation)
    captured: list[tuple[Any, torch.Tensor, Any, torch.Tensor]] = []

    def capture(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        captured.append((module, kwargs["hidden_states"], kwargs["position_embeddings"], output[0]))

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(capture, with_kwargs=True)
    logits(model, random_ids())
    assert [module.layer_idx for module, *_ in captured] == [0, 1]
    for module, hidden, position_embeddings, output in captured:
        with torch.inference_mode():
            expected = REFERENCES[variant](module, hidden, position_embeddings)
        assert_near(output, expected)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("variant", ["diff_v1", "diff_v2"])
def test_reference_matches_full_model_logits(variant: str, implementation: str) -> None:
    model = tiny_model(variant, implementation=implementation)
    ids = random_ids()
    with torch.inference_mode():
        expected = llama_style_logits(model, ids, REFERENCES[variant])
    assert_near(logits(model, ids), expected)


def test_diffllama_lambda_init_uses_the_zero_based_layer_index() -> None:
    """0.8 − 0.6·exp(−0.3·(l−1)) for the 1-based layer l: 0.2 for the first layer, as in the paper."""
    model = tiny_model("diff_v1")
    assert [layer.self_attn.lambda_init for layer in model.model.layers] == [lambda_init(0), lambda_init(1)]
    assert lambda_init(0) == pytest.approx(0.2)


def test_diff_v2_pairs_share_a_kv_group_and_keep_llama_kv_shapes() -> None:
    llama, diff = tiny_model("llama"), tiny_model("diff_v2")
    attention = diff.model.layers[0].self_attn
    assert isinstance(attention, DiffV2Attention)
    assert attention.num_key_value_groups == 4  # 2h / h_kv query heads per KV head: an even count
    for name in ("k_proj", "v_proj", "o_proj"):
        assert (
            getattr(attention, name).weight.shape
            == getattr(llama.model.layers[0].self_attn, name).weight.shape
        )
    assert attention.q_proj.weight.shape == (2 * 4 * 16, 64)
    assert attention.lambda_proj.weight.shape == (4, 64) and attention.lambda_proj.bias is None


def test_diff_v2_starts_with_lambda_one_half() -> None:
    torch.manual_seed(0)
    model = DiffV2ForCausalLM(tiny_config("diff_v2"))
    for layer in model.model.layers:
        assert torch.count_nonzero(layer.self_attn.lambda_proj.weight) == 0  # λ = sigmoid(0) = 0.5
        assert torch.count_nonzero(layer.self_attn.q_proj.weight) > 0


def test_diff_v2_rejects_heads_that_do_not_split_over_kv_heads() -> None:
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        DiffV2Attention(tiny_config("diff_v2", num_kv_heads=3), layer_idx=0)


# --- What the engine relies on ------------------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_a_later_token_never_changes_earlier_logits(variant: str, implementation: str) -> None:
    model = tiny_model(variant, implementation=implementation)
    ids = random_ids(batch=1)
    changed = ids.clone()
    position = LENGTH // 2
    changed[0, position] = (changed[0, position] + 1) % VOCAB
    before, after = logits(model, ids), logits(model, changed)
    torch.testing.assert_close(after[:, :position], before[:, :position], atol=1e-6, rtol=0.0)
    assert not torch.allclose(after[:, position:], before[:, position:])  # the change is visible after it


@pytest.mark.parametrize("implementation", ["sdpa", "diffbench_sdpa"])
@pytest.mark.parametrize("cache_kind", ["dynamic", "reserved"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_to_keep_and_chunked_cache_match_the_full_pass(
    variant: str, cache_kind: str, implementation: str
) -> None:
    """The engine's shortcuts: last-position logits only, prefill continued from a cache, and the
    engine's mask-free chunk attention and reserved cache, for every variant."""
    from diffbench.attention.chunked import register_chunked_attention
    from diffbench.cache_api import forward_with_cache, new_dynamic_cache
    from diffbench.engine.kv_cache import reserved_cache_for

    model = tiny_model(variant)
    ids = random_ids(batch=1)
    full = logits(model, ids)
    if implementation == "diffbench_sdpa":
        model.config._attn_implementation = register_chunked_attention()
    cache = new_dynamic_cache(model) if cache_kind == "dynamic" else reserved_cache_for(model, LENGTH)
    with torch.inference_mode():
        last = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
        first = forward_with_cache(model, ids[:, :10], cache).logits
        rest = forward_with_cache(model, ids[:, 10:], cache).logits
    assert last.shape == (1, 1, VOCAB)
    assert_near(last, full[:, -1:])
    assert_near(torch.cat([first, rest], dim=1), full)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_last_layer_attends_only_for_the_rows_whose_logits_are_kept(variant: str) -> None:
    """The engine's trunk skips the last layer's attention and a branch runs it for its kept rows only:
    the kept logits equal the full pass, and the skipped rows really are skipped (zero attention out)."""
    from diffbench.attention.chunked import last_layer_rows, register_chunked_attention
    from diffbench.cache_api import forward_with_cache
    from diffbench.engine.kv_cache import reserved_cache_for

    model = tiny_model(variant)
    ids = random_ids(batch=1)
    full = logits(model, ids)
    model.config._attn_implementation = register_chunked_attention()
    outputs: list[torch.Tensor] = []
    hook = model.model.layers[-1].self_attn.register_forward_hook(lambda m, a, out: outputs.append(out[0]))
    cache = reserved_cache_for(model, LENGTH)
    with torch.inference_mode():
        with last_layer_rows(model, 0):  # a trunk: nobody reads its logits
            forward_with_cache(model, ids[:, :10], cache, logits_to_keep=1)
        with last_layer_rows(model, 3):  # a branch: the answer's 3 rows
            kept = forward_with_cache(model, ids[:, 10:], cache, logits_to_keep=3).logits
    hook.remove()
    assert_near(kept, full[:, -3:])
    trunk, branch = outputs
    assert not trunk.any() and not branch[:, :-3].any() and branch[:, -3:].abs().sum() > 0


def greedy_by_recompute(model: Any, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding the slow way: a full forward pass without cache for every new token."""
    sequence = list(ids)
    for _ in range(steps):
        sequence.append(int(logits(model, torch.tensor([sequence]))[0, -1].argmax()))
    return sequence[len(ids) :]


@pytest.mark.parametrize("variant", ["diff_v1", "diff_v2"])
def test_generate_with_cache_equals_greedy_recompute(variant: str) -> None:
    model = tiny_model(variant)
    prompt = random_ids(batch=1)[0].tolist()
    expected = greedy_by_recompute(model, prompt, steps=8)
    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )
    assert output[0, len(prompt) :].tolist() == expected
    # diffbench's scorer: one prefill, a teacher-forced answer, then generate() from the cropped cache.
    scored = score_and_generate(model, prompt, expected[:3], max_new_tokens=8, eos_token_id=None)
    assert scored.generated_ids == expected
    assert scored.greedy_exact


# --- Checkpoints load through diffbench ----------------------------------------------------------


def save_checkpoint(variant: str, directory: Path, tokenizer_dir: Path) -> tuple[Path, Any]:
    """A tiny random checkpoint with the test tokenizer, saved as a normal directory, and its model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = {name: getattr(tokenizer, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model = build_model(variant, tiny_config(variant, vocab_size=len(tokenizer), **ids))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diff-checkpoints")
    return {v: save_checkpoint(v, root / f"tiny-{v}", tiny_tokenizer_dir)[0] for v in ("diff_v1", "diff_v2")}


def load_through_diffbench(directory: Path) -> Any:
    ref = resolve_model_ref(str(directory))
    return load_weights(prepare_model(ref, "none", 256), torch.device("cpu"), torch.float32, "sdpa")


@pytest.mark.parametrize(
    ("variant", "version", "model_type"),
    [("diff_v1", "v1", "diffllama"), ("diff_v2", "v2", DIFF_V2_MODEL_TYPE)],
)
def test_save_load_round_trip_gives_identical_logits(
    tmp_path: Path, tiny_tokenizer_dir: Path, variant: str, version: str, model_type: str
) -> None:
    from transformers import AutoModelForCausalLM

    directory, original = save_checkpoint(variant, tmp_path / variant, tiny_tokenizer_dir)
    assert json.loads((directory / "config.json").read_text())["model_type"] == model_type
    loaded = load_through_diffbench(directory)
    assert loaded.entry.variant == "diff" and variant_version(loaded.model.config) == version
    ids = random_ids(batch=1)
    assert torch.equal(logits(loaded.model, ids), logits(original, ids))
    plain = AutoModelForCausalLM.from_pretrained(str(directory)).eval()  # transformers alone, once registered
    assert type(plain) is type(original)
    assert torch.equal(logits(plain, ids), logits(original, ids))


def test_variant_detection() -> None:
    register_diffbench_models()
    register_diffbench_models()  # idempotent
    expected = {"llama": ("baseline", None), "diff_v1": ("diff", "v1"), "diff_v2": ("diff", "v2")}
    for variant, (label, version) in expected.items():
        config = tiny_config(variant)
        assert (detect_variant(config), variant_version(config)) == (label, version)


def test_niah_cli_runs_both_diff_versions_and_records_variant_diff(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    for variant, directory in checkpoints.items():
        out = tmp_path / variant
        args = ["niah", "--model", str(directory), "--lengths", "256", "--depths", "2", "--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        assert len(records) == 2 and {r["variant"] for r in records} == {"diff"}
        manifest = json.loads((out / "manifest.json").read_text())
        [entry] = manifest["models"]
        assert entry["variant"] == "diff" and entry["attn_implementation"] == "diffbench_sdpa"
        assert (
            entry["architecture"]
            == {"diff_v1": "DiffLlamaForCausalLM", "diff_v2": "DiffV2ForCausalLM"}[variant]
        )
    # Loading and running Diff models on CPU must never touch flash-attn, installed or not.
    assert "flash_attn" not in sys.modules


def test_flash_attention_2_is_chosen_on_cuda_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils

    cuda = SimpleNamespace(type="cuda")
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    assert attention_implementation(cuda, torch.bfloat16) == "flash_attention_2"
    assert attention_implementation(cuda, torch.float16) == "flash_attention_2"
    assert attention_implementation(cuda, torch.float32) == "sdpa"  # flash-attn has no float32 kernel
    assert attention_implementation(torch.device("cpu"), torch.bfloat16) == "sdpa"
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    assert attention_implementation(cuda, torch.bfloat16) == "sdpa"
    # Both Diff models accept the flash-attention-2 kernel (DiffLlama splits V so q, k, v widths match).
    from transformers import DiffLlamaForCausalLM

    assert DiffLlamaForCausalLM._supports_flash_attn and DiffV2ForCausalLM._supports_flash_attn


def cuda_with_flash_attention() -> bool:
    """Checked without importing flash_attn (transformers reads the installed package's metadata)."""
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_with_flash_attention(), reason="needs CUDA and flash-attn")
@pytest.mark.parametrize("variant", ["diff_v1", "diff_v2"])
def test_flash_attention_2_matches_sdpa_on_cuda(variant: str) -> None:
    model = tiny_model(variant).to("cuda", torch.bfloat16)
    ids = random_ids().to("cuda")
    sdpa = logits(model, ids).float()
    model.set_attn_implementation("flash_attention_2")
    torch.testing.assert_close(logits(model, ids).float(), sdpa, atol=2e-2, rtol=2e-2)
