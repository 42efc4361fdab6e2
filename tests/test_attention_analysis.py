"""Attention allocation (diffbench.analysis): the chunked rows against eager attention, and `diffbench attn`.

The chunked two-pass softmax over captured queries and keys must give transformers' eager attention
weights (output_attentions) on the answer rows to 1e-5, for Llama with and without GQA, Diff V1
(DiffLlama) and Diff V2; the region shares, net differential maps, entropies and redundancies must
equal the same quantities computed directly from those eager maps; and no chunk size may change them.
Tiny random float32 models whose queries and keys are scaled up, so the maps are far from uniform.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_diff_attention import build_model, save_checkpoint, tiny_config
from typer.testing import CliRunner

from diffbench.analysis.attention_mass import (
    CATEGORIES,
    PARTITION,
    answer_span,
    capture_rows,
    key_labels,
    layer_head_records,
    pairing_for,
    row_probabilities,
)
from diffbench.cli import app
from diffbench.tasks.niah import generate_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-5
LENGTH, ROWS, VOCAB = 48, 5, 97
# needle [20, 26) with its answer [22, 25), haystack [8, 36): every region has keys
NEEDLE, HAYSTACK, ANSWER = (20, 26), (8, 36), (22, 25)
DISTRACTOR = (10, 13)  # inside the haystack, before the needle
MODELS = [
    ("llama", 2),
    ("llama", 1),
    ("llama", 4),
    ("diff_v1", 2),
    ("diff_v1", 4),
    ("diff_v2", 1),
    ("diff_v2", 2),
]
VERSION = {"llama": None, "diff_v1": "v1", "diff_v2": "v2"}


def sharp_model(variant: str, kv_heads: int) -> Any:
    """A tiny random model with queries and keys scaled ×8, so each head's softmax is peaked, not flat."""
    config = tiny_config(variant, kv_heads)
    config._attn_implementation = "sdpa"
    model = build_model(variant, config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


def sequence(seed: int = 3) -> list[int]:
    return torch.randint(0, VOCAB, (LENGTH,), generator=torch.Generator().manual_seed(seed)).tolist()


def eager_pass(model: Any, ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Eager attention weights of every layer on the last ROWS rows, (H_q, R, S), and Diff V2's λ (h, R)."""
    lambdas: list[torch.Tensor | None] = [None] * len(model.model.layers)
    hooks = []
    for index, layer in enumerate(model.model.layers):
        projection = getattr(layer.self_attn, "lambda_proj", None)
        if projection is not None:

            def keep(module: Any, args: Any, output: Any, index: int = index) -> None:
                lambdas[index] = output[0, -ROWS:].sigmoid().T

            hooks.append(projection.register_forward_hook(keep))
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
    finally:
        model.config._attn_implementation = previous
        for hook in hooks:
            hook.remove()
    return [weights[0, :, -ROWS:, :] for weights in out.attentions], lambdas


def diff_lambda_v1(module: Any) -> float:
    lam = torch.exp((module.lambda_q1 * module.lambda_k1).sum()) - torch.exp(
        (module.lambda_q2 * module.lambda_k2).sum()
    )
    return float(lam.detach()) + module.lambda_init


def regions(maps: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per head and row, each region's summed mass of (H, R, S) maps; needle includes the answer."""
    found = {name: maps[..., labels == i].sum(-1) for i, name in enumerate(CATEGORIES)}
    found["needle"] = found["needle"] + found["answer"]
    return found


def cosine_distances(maps: torch.Tensor) -> torch.Tensor:
    """Each head's mean cosine distance to the others, mean over rows; maps (H, R, S)."""
    unit = maps / maps.norm(dim=-1, keepdim=True)
    cosine = torch.einsum("hrs,grs->rhg", unit, unit)
    heads = maps.shape[0]
    return ((1 - cosine).sum(-1) / (heads - 1)).mean(0)


# --- The chunked rows are the eager attention weights ---------------------------------------------


@pytest.mark.parametrize(("variant", "kv_heads"), MODELS)
def test_chunked_rows_equal_eager_attention_weights(variant: str, kv_heads: int) -> None:
    model = sharp_model(variant, kv_heads)
    ids = sequence()
    captured = capture_rows(model, ids, ROWS, prefill_chunk=7)
    eager, _ = eager_pass(model, ids)
    for capture, expected in zip(captured.layers, eager, strict=True):
        rows = row_probabilities(capture, key_chunk=6)
        assert rows.shape == expected.shape
        torch.testing.assert_close(rows, expected, atol=TOLERANCE, rtol=0.0)
        assert expected.max() > 0.3  # the check is not vacuous: the maps are peaked, not uniform
        torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:2]), atol=TOLERANCE, rtol=0.0)


@pytest.mark.parametrize(("variant", "kv_heads"), MODELS)
def test_head_records_equal_statistics_of_the_eager_maps(variant: str, kv_heads: int) -> None:
    """Shares, net maps with λ, negative share, entropies and redundancy, recomputed from eager maps."""
    model = sharp_model(variant, kv_heads)
    ids = sequence()
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER, distractors=[DISTRACTOR])
    captured = capture_rows(model, ids, ROWS, prefill_chunk=7)
    eager, lambdas = eager_pass(model, ids)
    version = VERSION[variant]
    for capture, maps, lam_rows in zip(captured.layers, eager, lambdas, strict=True):
        records = layer_head_records(capture, labels, "diff" if version else "baseline", version, key_chunk=5)
        pairing = pairing_for(capture, "diff" if version else "baseline", version)
        entropy = -(maps * maps.clamp(min=1e-38).log()).sum(-1)  # (H_q, R)
        if version is None:
            primary, shares = maps, regions(maps, labels)
        else:
            positive, negative = maps[pairing.positive], maps[pairing.negative]
            if version == "v1":
                lam = torch.full((len(pairing.positive), ROWS), diff_lambda_v1(capture.module))
            else:
                assert lam_rows is not None
                lam = lam_rows
            primary = positive - lam[..., None] * negative
            net = regions(primary, labels)
            total = primary.sum(-1)
            torch.testing.assert_close(total, 1 - lam, atol=TOLERANCE, rtol=0.0)
            # a net region's share is of the row's absolute mass Σ|net| (bounded even where 1 − λ nears 0)
            shares = {name: value / primary.abs().sum(-1) for name, value in net.items()}
        distance = cosine_distances(primary)
        assert len(records) == primary.shape[0]
        for index, record in enumerate(records):
            for name in CATEGORIES:
                assert record[name] == pytest.approx(float(shares[name][index].mean()), abs=TOLERANCE)
            head = pairing.positive[index]
            assert record["entropy"] == pytest.approx(float(entropy[head].mean()), abs=1e-4)
            assert record["redundancy"] == pytest.approx(float(distance[index]), abs=TOLERANCE)
            if version is not None:
                negative_head = pairing.negative[index]
                softmax = regions(maps, labels)
                for name in CATEGORIES:
                    assert record[f"pos_{name}"] == pytest.approx(
                        float(softmax[name][head].mean()), abs=TOLERANCE
                    )
                    assert record[f"neg_{name}"] == pytest.approx(
                        float(softmax[name][negative_head].mean()), abs=TOLERANCE
                    )
                net_map = primary[index]
                expected = (net_map.clamp(max=0).abs().sum(-1) / net_map.abs().sum(-1)).mean()
                assert record["negative_share"] == pytest.approx(float(expected), abs=TOLERANCE)
                assert record["lambda"] == pytest.approx(float(lam[index].mean()), abs=TOLERANCE)


@pytest.mark.parametrize(("variant", "kv_heads"), [("llama", 2), ("diff_v1", 2), ("diff_v2", 1)])
def test_softmax_shares_of_a_row_sum_to_one(variant: str, kv_heads: int) -> None:
    model = sharp_model(variant, kv_heads)
    captured = capture_rows(model, sequence(), ROWS)
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER, distractors=[DISTRACTOR])
    version = VERSION[variant]
    for capture in captured.layers:
        for record in layer_head_records(capture, labels, "diff" if version else "baseline", version):
            for prefix in ["pos_", "neg_"] if version else [""]:
                assert sum(record[f"{prefix}{name}"] for name in PARTITION) == pytest.approx(
                    1.0, abs=TOLERANCE
                )
            if version:  # a net row's shares are of its absolute mass: they sum to 1 − 2·negative share
                total = sum(record[name] for name in PARTITION)
                assert total == pytest.approx(1 - 2 * record["negative_share"], abs=TOLERANCE)
            else:
                assert 0.0 <= record["answer"] <= record["needle"] + TOLERANCE


@pytest.mark.parametrize(("variant", "kv_heads"), [("llama", 1), ("diff_v1", 2), ("diff_v2", 2)])
def test_chunk_sizes_do_not_change_the_records(variant: str, kv_heads: int) -> None:
    model = sharp_model(variant, kv_heads)
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER, distractors=[DISTRACTOR])
    version = VERSION[variant]
    kind = "diff" if version else "baseline"
    results = []
    for prefill, keys in [(LENGTH, LENGTH), (3, 1), (16, 7)]:
        captured = capture_rows(model, sequence(), ROWS, prefill_chunk=prefill)
        results.append(
            [r for c in captured.layers for r in layer_head_records(c, labels, kind, version, keys)]
        )
    for other in results[1:]:
        for mine, theirs in zip(results[0], other, strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in mine.items():
                if isinstance(value, float):
                    assert theirs[key] == pytest.approx(value, abs=TOLERANCE), key
                else:
                    assert theirs[key] == value


def test_key_labels_partition_the_sequence() -> None:
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER).tolist()
    name = [CATEGORIES[i] for i in labels]
    assert name[:4] == ["sink"] * 4 and name[4:8] == ["prefix"] * 4
    assert name[8:20] == ["noise"] * 12 and name[26:36] == ["noise"] * 10
    assert name[20:22] == ["needle"] * 2 and name[22:25] == ["answer"] * 3 and name[25] == "needle"
    assert name[36:] == ["question"] * (LENGTH - 36)
    with_distractor = [CATEGORIES[i] for i in key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER, 4, [DISTRACTOR])]
    assert with_distractor[10:13] == ["distractor"] * 3
    assert [n for i, n in enumerate(with_distractor) if i not in range(10, 13)] == name[:10] + name[13:]


def test_a_sample_without_a_distractor_has_no_distractor_share() -> None:
    """Null, not 0: a region that is not there is left out of means (attention_summary), never averaged in."""
    model = sharp_model("diff_v1", 2)
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER)
    for capture in capture_rows(model, sequence(), ROWS).layers:
        for record in layer_head_records(capture, labels, "diff", VERSION["diff_v1"]):
            assert record["distractor"] is record["pos_distractor"] is record["neg_distractor"] is None
            assert isinstance(record["noise"], float) and isinstance(record["pos_noise"], float)


# --- DEX: the maps are the baseline's; the value side is measured --------------------------------


def test_dex_reports_the_relative_norm_of_its_value_term(tiny_llama: Any) -> None:
    from diffbench.attention.dex import attach_dex, dex_modules, set_schedule

    model = copy.deepcopy(tiny_llama)
    ids = sequence()
    labels = key_labels(LENGTH, NEEDLE, HAYSTACK, ANSWER, distractors=[DISTRACTOR])
    base = [
        r for c in capture_rows(model, ids, ROWS).layers for r in layer_head_records(c, labels, "baseline")
    ]
    attach_dex(model, [[0, 2], [1]])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for dex in dex_modules(model):
            dex.w_d.copy_(torch.randn(dex.w_d.shape, generator=generator) * 0.3)
            dex.lambda_learn.fill_(0.4)
    set_schedule(model, 10, 5)  # past the annealing: λ = λ_learn = 0.4
    # O_h as o_proj receives it before DEX (hook first in line), on the answer rows
    inputs: list[torch.Tensor] = []
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda module, args: inputs.append(args[0][0, -ROWS:].clone()), prepend=True
        )
        for layer in model.model.layers
    ]
    with torch.inference_mode():
        model(input_ids=torch.tensor([ids]), use_cache=False)
    for hook in hooks:
        hook.remove()
    records = [r for c in capture_rows(model, ids, ROWS).layers for r in layer_head_records(c, labels, "dex")]
    for layer, (dex, heads_input) in enumerate(zip(dex_modules(model), inputs, strict=True)):
        per_head = heads_input.reshape(ROWS, 4, 16)
        for record in [r for r in records if r["layer"] == layer]:
            head = record["head"]
            selected = head in dex.heads
            assert record["dex_selected"] == selected and record["dex_lambda"] == pytest.approx(0.4)
            o = per_head[:, head]
            expected = (
                (0.4 * o @ dex.w_d.detach()).norm(dim=-1) / o.norm(dim=-1) if selected else torch.zeros(ROWS)
            )
            assert record["dex_relative_norm"] == pytest.approx(float(expected.mean()), abs=1e-4)
    # DEX leaves a layer's maps untouched (later layers see its changed output, so only layer 0 compares)
    first = [(m, t) for m, t in zip(base, records, strict=True) if m["layer"] == 0]
    for mine, theirs in first:
        for name in CATEGORIES:
            assert theirs[name] == pytest.approx(mine[name], abs=1e-6)


@pytest.mark.parametrize(("variant", "kv_heads"), [("llama", 1), ("diff_v1", 2), ("diff_v2", 2)])
def test_a_shared_context_gives_the_records_of_fresh_prefills(
    variant: str, kv_heads: int, tiny_tokenizer: Any
) -> None:
    """Real niah samples of two lengths and three depths, analysed in shared order through one carried
    cache: each sample's records equal its own fresh prefill's, and the shared haystack is reused."""
    from diffbench.analysis.attention_mass import SharedContext, analyse_sample, shared_order
    from diffbench.analysis.attention_run import niah_sequence
    from diffbench.haystack.sources import load_source
    from diffbench.specs import NiahSpec

    model = sharp_model(variant, kv_heads)
    model.resize_token_embeddings(len(tiny_tokenizer))
    version = VERSION[variant]
    kind = "diff" if version else "baseline"
    spec = NiahSpec(lengths=[192, 256], depths=[0.0, 50.0, 100.0])
    samples = generate_samples(spec, tiny_tokenizer, load_source("prose", 0))
    ordered = shared_order(samples, niah_sequence)
    shared = SharedContext(model, max(len(niah_sequence(s)) for s in samples), prefill_chunk=64)
    for sample in ordered:
        carried = analyse_sample(model, tiny_tokenizer, sample, kind, version, shared=shared)
        fresh = analyse_sample(model, tiny_tokenizer, sample, kind, version, prefill_chunk=64)
        assert carried.answer_logprob == pytest.approx(fresh.answer_logprob, abs=TOLERANCE)
        for mine, theirs in zip(carried.records, fresh.records, strict=True):
            for key, value in theirs.items():
                if isinstance(value, float):
                    assert mine[key] == pytest.approx(value, abs=TOLERANCE), key
                else:
                    assert mine[key] == value
    total = sum(len(sample.input_ids) - 1 for sample in samples)  # the last prompt token is a row
    assert shared.reused + shared.prefilled == total
    # the 50% and 100% samples of both lengths read one haystack stream up to their needles
    assert shared.reused > 0.2 * total
    assert [len(s.input_ids) for s in ordered] != [len(s.input_ids) for s in samples]  # reordered


# --- A real NIAH sample and the command line -----------------------------------------------------


def test_answer_region_is_the_answer_inside_the_needle(tiny_tokenizer: Any) -> None:
    from diffbench.haystack.sources import load_source
    from diffbench.specs import NiahSpec
    from diffbench.tasks.niah import generate_samples

    spec = NiahSpec(lengths=[256], depths=[0.0, 50.0, 100.0])
    for sample in generate_samples(spec, tiny_tokenizer, load_source("prose", 0)):
        start, end = answer_span(sample.input_ids, sample.needle_span, sample.answer, tiny_tokenizer)
        assert sample.needle_span[0] <= start < end <= sample.needle_span[1]
        assert tiny_tokenizer.decode(sample.input_ids[start:end]).strip() == sample.answer


@pytest.fixture(scope="module")
def diffllama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    return save_checkpoint("diff_v1", tmp_path_factory.mktemp("attn") / "tiny-diffllama", tiny_tokenizer_dir)[
        0
    ]


def test_attn_cli_writes_records_summary_and_plots(
    tiny_llama_dir: Path, diffllama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "attn"
    args = ["attn", "--model", str(tiny_llama_dir), "--model", str(diffllama_dir)]
    args += ["--lengths", "256,384", "--depths", "0,100", "--key-chunk", "100", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "answer" in result.stdout and "noise" in result.stdout and "mean" in result.stdout
    records = [json.loads(line) for line in (out / "attention.jsonl").read_text().splitlines()]
    # 4 samples × 2 layers × (4 Llama heads + 2 differential heads of DiffLlama's 4 query heads)
    assert len(records) == 4 * 2 * (4 + 2)
    assert {r["variant"] for r in records} == {"baseline", "diff"}
    for record in records:
        assert record["distractor"] is None  # magic needles: no distractor region
        shares = [record[name] for name in PARTITION if name != "distractor"]
        assert sum(shares) == pytest.approx(1.0, abs=TOLERANCE)
    manifest = json.loads((out / "attention_manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["models"]) == 2
    assert manifest["options"] == {"key_chunk": 100, "prefill_chunk": 4096}
    summary = json.loads((out / "attention_summary.json").read_text())
    assert [row["model"] for row in summary["models"]] == ["tiny-llama", "tiny-diffllama"]
    assert len(summary["layers"]) == 4 and len(summary["grid"]) == 8
    assert all(row["distractor"] is None for row in summary["models"])
    diff_row = next(row for row in summary["models"] if row["variant"] == "diff")
    assert diff_row["negative_share"] is not None and 0.0 <= diff_row["negative_share"] <= 1.0
    for name in ["attention_layers", "attention_heads_tiny-llama", "attention_grid_tiny-diffllama"]:
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.svg").stat().st_size > 0
    assert len(list((out / "samples").glob("*.jsonl"))) == 1  # one tokenizer

    refused = CliRunner().invoke(app, args)  # attention runs do not resume: --out must be new
    assert refused.exit_code == 2 and "holds an attention run already" in refused.stderr

    one = ["attn", "--model", str(tiny_llama_dir), "--lengths", "256", "--depths", "0%", "--key-chunk", "7"]
    again = CliRunner().invoke(app, [*one, "--json", "--out", str(tmp_path / "json")])
    assert again.exit_code == 0, again.stderr
    payload = json.loads(again.stdout)
    expected = [r for r in records if r["model"] == "tiny-llama" and r["sample_id"] == "niah/256/0/0"]
    again_records = (tmp_path / "json" / "attention.jsonl").read_text().splitlines()
    for mine, theirs in zip(expected, map(json.loads, again_records), strict=True):
        assert theirs["answer"] == pytest.approx(mine["answer"], abs=1e-6)  # same sample, other chunking
    assert payload["directory"] == str(tmp_path / "json") and payload["models"][0]["samples"] == 1


# --- niah --attn: the same samples, into the run; reports and the leaderboard show it -------------


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def _without_attention(run: Path, copy_to: Path) -> Path:
    """A copy of a niah --attn run with its attention data removed: a plain niah run."""
    shutil.copytree(run, copy_to)
    manifest = json.loads((copy_to / "manifest.json").read_text())
    del manifest["attention"]
    (copy_to / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(copy_to / "attention")
    return copy_to


def _heads(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "attention.jsonl").open()]


@pytest.fixture(scope="module")
def attention_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A niah run of the tiny Llama with --attn: 2 lengths × 2 depths, one sample each."""
    out = tmp_path_factory.mktemp("niah-attn") / "run"
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256,384", "--depths", "0,100"]
    result = CliRunner().invoke(app, [*args, "--attn", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "Attention at the answer rows" in result.stdout and "attention: time" in result.stdout
    return out


def test_niah_attn_analyses_the_runs_own_samples(attention_run: Path) -> None:
    manifest = json.loads((attention_run / "manifest.json").read_text())
    noted = manifest["attention"]
    assert noted["status"] == "complete" and noted["models"] == ["tiny-llama"]
    assert noted["summary"] == "attention/attention_summary.json" and noted["peak_memory_mb"] > 0
    heads = [json.loads(line) for line in (attention_run / "attention" / "attention.jsonl").open()]
    assert len(heads) == 4 * 2 * 4  # samples × layers × heads
    assert {r["run_id"] for r in heads} == {manifest["run_id"]}
    verdicts = {
        r["sample_id"]: r
        for r in map(json.loads, (attention_run / "attention" / "attention_samples.jsonl").open())
    }
    records = [json.loads(line) for line in (attention_run / "records.jsonl").open()]
    assert {r["sample_id"] for r in records} == set(verdicts)
    for record in records:  # same prompt, same model: the same teacher-forced answer log-probability
        verdict = verdicts[record["sample_id"]]
        assert verdict["prompt_tokens"] == record["prompt_tokens"]
        assert verdict["needle_span"] == list(record["needle_span"])
        assert verdict["answer_logprob"] == pytest.approx(record["answer_logprob"], abs=1e-3)
        assert verdict["greedy_exact"] == record["greedy_exact"]
    assert not (attention_run / "attention" / "samples").exists()  # read from the run, never rebuilt


def test_report_and_leaderboard_show_the_table3_view(attention_run: Path, tmp_path: Path) -> None:
    heads = [json.loads(line) for line in (attention_run / "attention" / "attention.jsonl").open()]
    answer, noise = _mean(heads, "answer"), _mean(heads, "noise")
    assert 0.0 < answer < noise < 1.0
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["report", str(attention_run), "--format", "markdown", "--out", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    markdown = result.stdout
    assert "## Attention at the answer rows (Table 3 view)" in markdown
    assert f"| tiny-llama | baseline | {answer:.3f} | {noise:.3f} | 4 |" in markdown
    for depth in (0.0, 100.0):  # by depth: the mean over that depth's samples, layers and heads
        at = [r for r in heads if r["depth"] == depth]
        assert f"{_mean(at, 'answer'):.3f}" in markdown.split("by needle depth")[1].split("###")[0]
    for layer in (0, 1):
        at = [r for r in heads if r["layer"] == layer]
        assert f"| {layer} | {_mean(at, 'answer'):.3f} | {_mean(at, 'noise'):.3f} |" in markdown
    assert "![attention_layers](attention_layers.png)" in markdown
    assert (out / "attention_layers.png").stat().st_size > 0
    payload = json.loads((out / "report.json").read_text())
    assert payload["attention"]["models"][0]["answer"] == pytest.approx(answer, abs=1e-9)
    terminal = CliRunner().invoke(app, ["report", str(attention_run), "--out", str(tmp_path / "t")])
    assert "Attention: mean over layers" in terminal.stdout and f"{noise:.3f}" in terminal.stdout

    site = tmp_path / "site"
    board = CliRunner().invoke(app, ["leaderboard", str(attention_run.parent), "--out", str(site)])
    assert board.exit_code == 0, board.stderr
    page = (site / "index.html").read_text()
    assert "Attention at the answer rows (Table 3 view)" in page and "table.attention" in page
    assert (
        f'<th scope="row">tiny-llama</th><td>baseline</td><td>{answer:.3f}</td><td>{noise:.3f}</td>' in page
    )
    assert page.count("<svg") == 2  # the accuracy heatmap and the per-layer attention panels
    (column,) = json.loads((site / "leaderboard.json").read_text())["attention"].values()
    assert column["models"][0]["noise"] == pytest.approx(noise, abs=1e-9)


def test_a_run_without_attention_renders_as_before(attention_run: Path, tmp_path: Path) -> None:
    """The same run with its attention note removed: the report is the one above minus its section."""
    plain = _without_attention(attention_run, tmp_path / "results" / "plain")
    with_attention = CliRunner().invoke(
        app, ["report", str(attention_run), "-f", "markdown", "--out", str(tmp_path / "a")]
    )
    without = CliRunner().invoke(app, ["report", str(plain), "-f", "markdown", "--out", str(tmp_path / "b")])
    assert without.exit_code == 0, without.stderr
    head, _, section = with_attention.stdout.partition("## Attention at the answer rows")
    assert section and without.stdout == head.rstrip("\n") + "\n"
    assert "attention" not in json.loads((tmp_path / "b" / "report.json").read_text())
    assert not (tmp_path / "b" / "attention_layers.png").exists()
    site = tmp_path / "site"
    assert CliRunner().invoke(app, ["leaderboard", str(plain.parent), "--out", str(site)]).exit_code == 0
    page = (site / "index.html").read_text()
    assert "attention" not in page.lower().replace("attention-", "")  # no section, no style rules
    assert "attention" not in json.loads((site / "leaderboard.json").read_text())


def test_niah_attn_resumes_a_sample_cut_short(
    attention_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(attention_run, run)
    folder = run / "attention"
    heads = (folder / "attention.jsonl").read_text().splitlines(keepends=True)
    verdicts = (folder / "attention_samples.jsonl").read_text().splitlines(keepends=True)
    # killed after the last sample's head records, before its verdict, mid-way through a line
    (folder / "attention_samples.jsonl").write_text("".join(verdicts[:-1]) + verdicts[-1][:20])
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256,384", "--depths", "0,100"]
    result = CliRunner().invoke(app, [*args, "--attn", "--out", str(run), "--json"])
    assert result.exit_code == 0, result.stderr
    again = (folder / "attention.jsonl").read_text().splitlines(keepends=True)
    assert len(again) == len(heads)  # the cut sample's records were dropped, then written once
    assert again[:-8] == heads[:-8]  # finished samples are kept as they were
    for mine, theirs in zip(map(json.loads, heads[-8:]), map(json.loads, again[-8:]), strict=True):
        assert theirs["sample_id"] == mine["sample_id"]
        assert theirs["answer"] == pytest.approx(mine["answer"], abs=1e-6)
    assert len((folder / "attention_samples.jsonl").read_text().splitlines()) == len(verdicts)
    payload = json.loads(result.stdout)
    assert payload["attention"]["models"][0]["samples"] == 4
    assert json.loads((run / "manifest.json").read_text())["attention"]["status"] == "complete"


def test_multi_needle_labels_every_asked_answer(tiny_tokenizer: Any) -> None:
    from diffbench.haystack.sources import load_source
    from diffbench.tasks.options import NiahOptions

    spec = NiahOptions(lengths=[512], depths=[0.0, 50.0], needles=4, queries=2).to_spec()
    for sample in generate_samples(spec, tiny_tokenizer, load_source("prose", 0)):
        needles = sample.needles or []
        asked = sorted((n for n in needles if n.query is not None), key=lambda n: int(n.query or 0))
        spans = [answer_span(sample.input_ids, n.span, n.value, tiny_tokenizer) for n in asked]
        labels = key_labels(len(sample.input_ids), [n.span for n in asked], sample.haystack_span, spans)
        answer_ids = [
            t
            for t, label in zip(sample.input_ids, labels.tolist(), strict=True)
            if label == CATEGORIES.index("answer")
        ]
        text = tiny_tokenizer.decode(answer_ids).replace(" ", "")
        assert text == "".join(n.value for n in sorted(asked, key=lambda n: n.span[0])).replace(" ", "")
        distractors = [n for n in needles if n.query is None]
        assert distractors and all(labels[n.span[0]] == CATEGORIES.index("noise") for n in distractors)


def test_table3_view_of_a_diffllama_and_a_dex_model(
    tiny_llama_dir: Path, diffllama_dir: Path, tmp_path: Path
) -> None:
    """The zoo's pairing: Diff's negative share and DEX's value-term column, the figure with both."""
    from diffbench.training.dex_convert import convert

    dex = convert(str(tiny_llama_dir), tmp_path / "tiny-dex", "0.5", "entropy", "layer", 0, []).directory
    out = tmp_path / "results" / "run"
    args = ["niah", "--model", str(diffllama_dir), "--model", str(dex), "--lengths", "256", "--depths", "0%"]
    result = CliRunner().invoke(app, [*args, "--attn", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "attention" / "attention_summary.json").read_text())
    rows = {row["variant"]: row for row in summary["models"]}
    # near-uniform random maps: A1 − λ·A2 ≈ (1 − λ)/n stays positive, so the negative share is 0
    assert 0.0 <= rows["diff"]["negative_share"] < 1.0 and rows["diff"]["dex_relative_norm"] is None
    assert rows["dex"]["dex_relative_norm"] == 0.0  # converted, not adapted: λ = 0, W_D = 0
    assert rows["dex"]["negative_share"] is None
    report = CliRunner().invoke(app, ["report", str(out), "-f", "markdown", "--out", str(tmp_path / "r")])
    header = "| model | variant | answer | noise | negative | answer ÷ net | DEX ‖λ·f_D(O)‖/‖O‖ | samples |"
    assert header in report.stdout
    diff_line = next(
        line for line in report.stdout.splitlines() if line.startswith("| tiny-diffllama | diff |")
    )
    over_net = rows["diff"]["answer_over_net"]
    assert diff_line.split(" | ")[4:7] == [f"{rows['diff']['negative_share']:.3f}", f"{over_net:.3f}", "–"]
    if rows["diff"]["negative_share"] == 0.0:  # no negative mass: the net mass is the absolute mass
        assert over_net == pytest.approx(rows["diff"]["answer"])
    assert "| tiny-dex | dex |" in report.stdout and "| 0.000 | 1 |" in report.stdout
    site = tmp_path / "site"
    assert CliRunner().invoke(app, ["leaderboard", str(out.parent), "--out", str(site)]).exit_code == 0
    page = (site / "index.html").read_text()
    figure = page.split("<figcaption>answer, needle, noise and sink shares per layer")[0].rsplit(
        "<figure>", 1
    )[-1]
    for label in ("tiny-diffllama (diff)", "tiny-dex (dex)", "negative", "answer", "noise"):
        assert label in figure  # the inline SVG keeps its text: both panels and the shared legend


# --- standalone `diffbench attn` runs in reports and the leaderboard --------------------------------


def _attn(model_dir: Path, out: Path, lengths: str = "256,384", depths: str = "0,100") -> Path:
    args = ["attn", "--model", str(model_dir), "--lengths", lengths, "--depths", depths, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def standalone_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`diffbench attn` with the options of the niah --attn fixture: the same sample set."""
    return _attn(tiny_llama_dir, tmp_path_factory.mktemp("attn-run") / "attn")


def test_report_of_a_standalone_attn_run_is_its_table3_view(standalone_run: Path, tmp_path: Path) -> None:
    heads = _heads(standalone_run)
    answer, noise = _mean(heads, "answer"), _mean(heads, "noise")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(standalone_run), "-f", "markdown", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    markdown = result.stdout
    assert "- run `attn` (diffbench attn, complete): tiny-llama" in markdown
    assert "## Attention at the answer rows (Table 3 view)" in markdown
    assert f"| tiny-llama | baseline | {answer:.3f} | {noise:.3f} | 4 |" in markdown
    for layer in (0, 1):
        at = [r for r in heads if r["layer"] == layer]
        assert f"| {layer} | {_mean(at, 'answer'):.3f} | {_mean(at, 'noise'):.3f} |" in markdown
    for depth in (0.0, 100.0):
        at = [r for r in heads if r["depth"] == depth]
        assert f"{_mean(at, 'noise'):.3f}" in markdown.split("by needle depth")[1].split("###")[0]
    assert "Effective length" not in markdown and "Accuracy by length" not in markdown
    assert "no run has niah records" in result.stderr
    payload = json.loads((out / "report.json").read_text())
    assert payload["runs"][0]["kind"] == "attention" and payload["comparison"] == []
    (row,) = payload["attention"]["models"]
    assert row["answer"] == pytest.approx(answer, abs=1e-9) and row["noise"] == pytest.approx(noise, abs=1e-9)
    assert row["run_id"] == "attn" and row["samples"] == 4
    assert (out / "attention_layers.png").stat().st_size > 0
    assert not (out / "comparison.csv").exists() and not list(out.glob("heatmap_*"))

    terminal = CliRunner().invoke(app, ["report", str(standalone_run), "--out", str(tmp_path / "t")])
    assert terminal.exit_code == 0, terminal.stderr
    assert "Attention: mean over layers" in terminal.stdout and f"{noise:.3f}" in terminal.stdout
    assert "accuracy by depth" not in terminal.stdout and "Effective length" not in terminal.stdout


def test_report_puts_an_attn_run_beside_a_niah_run_of_the_same_samples(
    attention_run: Path, standalone_run: Path, tmp_path: Path
) -> None:
    plain = _without_attention(attention_run, tmp_path / "plain")
    niah = json.loads((plain / "manifest.json").read_text())
    attn = json.loads((standalone_run / "attention_manifest.json").read_text())
    assert attn["spec_fingerprint"] == niah["spec_fingerprint"]  # same options, same sample set
    out = tmp_path / "report"
    args = ["report", str(plain), str(standalone_run), "-f", "markdown", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    markdown = result.stdout
    accuracy = markdown.split("## Accuracy by length")[1].split("##")[0]
    assert "tiny-llama@run" in accuracy and "@attn" not in accuracy  # records come from the niah run
    section = markdown.split("## Attention at the answer rows")[1]
    heads = _heads(standalone_run)
    line = f"| tiny-llama@attn | baseline | {_mean(heads, 'answer'):.3f} | {_mean(heads, 'noise'):.3f} | 4 |"
    assert line in section and "tiny-llama@run |" not in section  # the niah run has no attention
    payload = json.loads((out / "report.json").read_text())
    assert [run["kind"] for run in payload["runs"]] == ["niah", "attention"]
    assert [row["model"] for row in payload["attention"]["models"]] == ["tiny-llama@attn"]

    # the niah run's own attention pass measured the same prompts: the two rows agree
    both = CliRunner().invoke(
        app, ["report", str(attention_run), str(standalone_run), "--out", str(tmp_path / "b")]
    )
    assert both.exit_code == 0, both.stderr
    rows = json.loads((tmp_path / "b" / "report.json").read_text())["attention"]["models"]
    assert [row["model"] for row in rows] == ["tiny-llama@run", "tiny-llama@attn"]
    for share in ("answer", "noise", "needle"):
        assert rows[0][share] == pytest.approx(rows[1][share], abs=1e-6)


def test_report_refuses_an_attn_run_of_another_sample_set(
    attention_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    other = _attn(tiny_llama_dir, tmp_path / "other", lengths="256", depths="0%")
    result = CliRunner().invoke(app, ["report", str(attention_run), str(other), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "have different sample sets (their task specs differ in depths, lengths)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_interrupted_attn_run_reports_its_finished_samples(standalone_run: Path, tmp_path: Path) -> None:
    """Killed mid-way: no summary, the last verdict half written; the two finished samples are shown."""
    cut = tmp_path / "results" / "cut"
    shutil.copytree(standalone_run, cut)
    (cut / "attention_summary.json").unlink()
    manifest = json.loads((cut / "attention_manifest.json").read_text())
    (cut / "attention_manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    verdicts = (cut / "attention_samples.jsonl").read_text().splitlines(keepends=True)
    (cut / "attention_samples.jsonl").write_text("".join(verdicts[:2]) + verdicts[2][:15])
    finished = {json.loads(line)["sample_id"] for line in verdicts[:2]}
    heads = [r for r in _heads(cut) if r["sample_id"] in finished]
    result = CliRunner().invoke(app, ["report", str(cut), "-f", "markdown", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.stderr
    assert "run attn: its attention pass is interrupted" in result.stdout
    assert f"| tiny-llama | baseline | {_mean(heads, 'answer'):.3f} | {_mean(heads, 'noise'):.3f} | 2 |" in (
        result.stdout
    )

    (cut / "attention_samples.jsonl").write_text(verdicts[0][:15])  # no sample finished yet
    empty = CliRunner().invoke(app, ["report", str(cut), "--out", str(tmp_path / "e")])
    assert empty.exit_code == 1 and "have no records yet; run the task first" in empty.stderr


def test_leaderboard_shows_a_niah_run_and_an_attn_run_of_the_same_samples(
    attention_run: Path, standalone_run: Path, tmp_path: Path
) -> None:
    root = tmp_path / "results"
    plain = _without_attention(attention_run, root / "plain")
    niah_id = json.loads((plain / "manifest.json").read_text())["run_id"]
    shutil.copytree(standalone_run, root / "attn")
    site = tmp_path / "site"
    result = CliRunner().invoke(app, ["leaderboard", str(root), "--out", str(site)])
    assert result.exit_code == 0, result.stderr
    assert "1 models × 1 sample sets" in result.stdout and "skipped" not in result.stderr
    board = json.loads((site / "leaderboard.json").read_text())
    (column,) = board["columns"]
    (row,) = board["rows"]  # accuracy from the niah run
    records = [json.loads(line) for line in (plain / "records.jsonl").open()]
    accuracy = sum(r["correct"] for r in records) / len(records)
    assert row["results"][column["fingerprint"]]["accuracy"] == pytest.approx(accuracy)
    assert [p["run_id"] for p in row["provenance"]] == [niah_id]
    (attention,) = board["attention"].values()  # attention from the attn run, same sample set
    assert list(board["attention"]) == [column["fingerprint"]]
    heads = _heads(root / "attn")
    (model,) = attention["models"]
    assert model["model"] == "tiny-llama" and model["run_id"] == "attn"
    assert model["noise"] == pytest.approx(_mean(heads, "noise"), abs=1e-9)
    page = (site / "index.html").read_text()
    assert page.count('<section class="task">') == 1 and 'id="leaderboard"' in page
    assert f"<td>{_mean(heads, 'answer'):.3f}</td><td>{_mean(heads, 'noise'):.3f}</td>" in page
    assert page.count("<svg") == 2  # the accuracy heatmap and the per-layer attention panels

    # a niah --attn run's own RUN/attention folder is part of the run, never a run of its own
    shutil.copytree(attention_run, root / "with-attention")
    again = CliRunner().invoke(app, ["leaderboard", str(root), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.stderr
    board = json.loads((tmp_path / "again" / "leaderboard.json").read_text())
    (attention,) = board["attention"].values()
    assert len(attention["models"]) == 1  # the newest run with attention data for the model
    assert "with-attention/attention" not in again.stderr


def test_leaderboard_of_attn_runs_alone_has_their_sections(
    standalone_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "results"
    shutil.copytree(standalone_run, root / "attn")
    _attn(tiny_llama_dir, root / "short", lengths="256", depths="0%")
    (root / "stray").mkdir()
    (root / "stray" / "attention_manifest.json").write_text("{cut")
    site = tmp_path / "site"
    result = CliRunner().invoke(app, ["leaderboard", str(root), "--out", str(site)])
    assert result.exit_code == 0, result.stderr
    assert "(0 models × 0 sample sets + 2 with attention data only)" in result.stdout
    assert "stray" in result.stderr and "cannot read" in result.stderr  # unreadable: skipped, named
    board = json.loads((site / "leaderboard.json").read_text())
    assert board["columns"] == [] and board["rows"] == []
    assert len(board["attention"]) == 2  # one section per sample set
    for fingerprint, attention in board["attention"].items():
        run = "attn" if attention["models"][0]["run_id"] == "attn" else "short"
        manifest = json.loads((root / run / "attention_manifest.json").read_text())
        assert manifest["spec_fingerprint"] == fingerprint
        answer = _mean(_heads(root / run), "answer")
        assert attention["models"][0]["answer"] == pytest.approx(answer, abs=1e-9)
    page = (site / "index.html").read_text()
    assert 'id="leaderboard"' not in page and "No accuracy results" in page
    assert page.count('<section class="task">') == 2 and "Accuracy by depth" not in page
