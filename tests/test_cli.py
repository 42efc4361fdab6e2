"""The diffbench CLI end to end on tiny random models: run directories, reports, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.engine.teacher_forcing import score_answer
from diffbench.haystack.sources import load_source
from diffbench.specs import SCHEMA_VERSION, Record, RunManifest, Sample
from diffbench.tasks.niah import generate_samples

GRID = ["--lengths", "256,512", "--depths", "3"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE_IDS = {f"niah/{length}/{depth}/0" for length in (256, 512) for depth in (0, 50, 100)}


@dataclass
class Invocation:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def invoke(*args: str) -> Invocation:
    result = CliRunner().invoke(app, list(args))
    return Invocation(result.exit_code, result.stdout, result.stderr, result.exception)


def niah(model_dirs: list[Path], out: Path, *extra: str) -> Invocation:
    models = [part for directory in model_dirs for part in ("--model", str(directory))]
    return invoke("niah", *models, *extra, "--out", str(out))


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]


def read_samples(path: Path) -> list[Sample]:
    return [Sample.model_validate_json(line) for line in path.read_text().splitlines()]


def error_line(outcome: Invocation) -> str:
    """The single 'error:' line on stderr (progress lines aside); stdout stays empty."""
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert outcome.stdout == ""
    assert isinstance(outcome.exception, SystemExit), repr(outcome.exception)
    return errors[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Invocation, Path]:
    out = tmp_path_factory.mktemp("cli") / "run"
    return niah([tiny_llama_dir], out, *GRID), out


def test_a_run_exits_0_and_writes_every_file(base_run: tuple[Invocation, Path]) -> None:
    outcome, out = base_run
    assert outcome.exit_code == 0, outcome.stderr
    for name in (
        "manifest.json",
        "records.jsonl",
        "summary.json",
        "heatmap_tiny-llama.png",
        "heatmap_tiny-llama.svg",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "samples").glob("*.jsonl"))) == 1
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".manifest.json.*"))  # no leftover temp files


def test_manifest_records_spec_seed_models_and_versions(
    base_run: tuple[Invocation, Path], tiny_llama: Any, tiny_tokenizer_dir: Path
) -> None:
    _, out = base_run
    manifest = RunManifest.model_validate_json((out / "manifest.json").read_text())
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.status == "complete"
    assert manifest.run_id == "run" and manifest.task == "niah"
    assert manifest.seed == manifest.spec.seed == 0
    assert manifest.spec.lengths == [256, 512]
    assert manifest.spec.depths == [0.0, 50.0, 100.0]
    assert manifest.spec.samples_per_cell == 1 and manifest.spec.answer_budget == 32
    assert manifest.spec_fingerprint == manifest.spec.fingerprint()
    [model] = manifest.models
    assert (model.name, model.variant, model.architecture) == ("tiny-llama", "baseline", "LlamaForCausalLM")
    assert model.kind == "local" and (model.device, model.dtype) == ("cpu", "float32")
    assert model.context_window == 4096
    assert model.parameters == sum(p.numel() for p in tiny_llama.parameters())
    for package in ("torch", "transformers", "tokenizers"):
        assert manifest.versions[package] == metadata.version(package)
    assert manifest.wall_seconds > 0


def test_records_have_one_line_per_sample_with_every_record_field(base_run: tuple[Invocation, Path]) -> None:
    _, out = base_run
    records = read_records(out)
    assert len(records) == 6
    assert {r["sample_id"] for r in records} == SAMPLE_IDS
    for raw in records:
        assert set(raw) == set(Record.model_fields)
        record = Record.model_validate(raw)
        assert record.model == "tiny-llama" and record.variant == "baseline" and record.run_id == "run"
        assert record.prompt_tokens == record.target_length - 32
        assert record.scoring == "teacher_forced" and record.prediction is None
        assert record.ruler_all is None and record.ruler_part is None
        assert record.correct == record.greedy_exact and record.score == float(record.correct)
        assert record.answer_tokens > 0 and record.answer_logprob < 0
    frame = pd.read_json(out / "records.jsonl", lines=True)  # plain JSON: no diffbench needed to read it
    assert len(frame) == 6 and set(frame.columns) == set(Record.model_fields)


def test_stored_samples_and_records_equal_a_direct_computation(
    base_run: tuple[Invocation, Path], tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    _, out = base_run
    manifest = RunManifest.model_validate_json((out / "manifest.json").read_text())
    [samples_file] = (out / "samples").glob("*.jsonl")
    assert samples_file.stem == manifest.models[0].tokenizer_fingerprint
    stored = read_samples(samples_file)
    direct = generate_samples(
        manifest.spec, tiny_tokenizer, load_source(manifest.spec.haystack, manifest.seed)
    )
    assert [s.model_dump_json() for s in stored] == [s.model_dump_json() for s in direct]
    by_id = {s.sample_id: s for s in stored}
    for record in read_records(out):
        sample = by_id[record["sample_id"]]
        assert record["prompt_sha256"] == sample.prompt_sha256
        assert tuple(record["needle_span"]) == sample.needle_span
        assert record["answer"] == sample.answer and record["answer_tokens"] == len(sample.answer_ids)
        scored = score_answer(tiny_llama, sample.input_ids, sample.answer_ids)
        assert record["answer_logprob"] == pytest.approx(scored.answer_logprob, abs=1e-5)
        assert record["greedy_exact"] == scored.greedy_exact


def test_summary_aggregates_the_records(base_run: tuple[Invocation, Path]) -> None:
    _, out = base_run
    records = read_records(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == "run" and summary["status"] == "complete"
    [model] = summary["models"]
    assert model["model"] == "tiny-llama" and model["variant"] == "baseline" and model["n"] == 6
    assert model["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 6)
    assert model["mean_answer_logprob"] == pytest.approx(
        sum(r["answer_logprob"] for r in records) / 6, abs=1e-5
    )
    assert len(summary["cells"]) == 6
    for cell in summary["cells"]:
        [record] = [
            r for r in records if (r["target_length"], r["depth"]) == (cell["target_length"], cell["depth"])
        ]
        assert cell["n"] == 1
        assert cell["accuracy"] == float(record["correct"])
        assert cell["mean_answer_logprob"] == pytest.approx(record["answer_logprob"], abs=1e-5)


def test_heatmaps_are_real_images(base_run: tuple[Invocation, Path]) -> None:
    import matplotlib.image

    _, out = base_run
    png = out / "heatmap_tiny-llama.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, channels = matplotlib.image.imread(png).shape
    assert height >= 200 and width >= 300 and channels in (3, 4)
    svg = (out / "heatmap_tiny-llama.svg").read_text()
    assert "<svg" in svg and "tiny-llama (baseline)" in svg


def test_terminal_output_shows_the_grid_and_accuracy(base_run: tuple[Invocation, Path]) -> None:
    outcome, out = base_run
    accuracy = sum(r["correct"] for r in read_records(out)) / 6
    assert f"tiny-llama (baseline): accuracy {accuracy:.3f} over 6 samples" in outcome.stdout
    assert "depth" in outcome.stdout and "0.5K" in outcome.stdout and "100%" in outcome.stdout
    assert "results:" in outcome.stdout


def test_rerunning_with_json_adds_no_records_and_prints_the_summary(
    base_run: tuple[Invocation, Path], tiny_llama_dir: Path
) -> None:
    _, out = base_run
    before = (out / "records.jsonl").read_bytes()
    outcome = niah([tiny_llama_dir], out, *GRID, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert (out / "records.jsonl").read_bytes() == before
    payload = json.loads(outcome.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert payload["directory"] == str(out)
    assert payload["status"] == "complete"
    assert payload["models"] == summary["models"] and payload["cells"] == summary["cells"]
    assert "resumed: 6 finished records kept, 0 new" in outcome.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_different_spec_in_the_same_out_is_refused(
    base_run: tuple[Invocation, Path], tiny_llama_dir: Path
) -> None:
    _, out = base_run
    before = (out / "records.jsonl").read_bytes()
    outcome = niah([tiny_llama_dir], out, *GRID, "--seed", "1")
    assert outcome.exit_code == 2
    line = error_line(outcome)
    assert "different task spec" in line and "seed" in line and str(out) in line
    assert (out / "records.jsonl").read_bytes() == before
    assert json.loads((out / "manifest.json").read_text())["seed"] == 0


def test_a_run_written_by_an_older_diffbench_is_refused_by_name(
    base_run: tuple[Invocation, Path], tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Same options, but the spec fingerprint of another diffbench (its spec had fewer fields)."""
    import shutil

    _, out = base_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["spec_fingerprint"] = "0" * 16
    (old / "manifest.json").write_text(json.dumps(manifest))
    outcome = niah([tiny_llama_dir], old, *GRID)
    assert outcome.exit_code == 2
    assert "an older diffbench wrote it" in error_line(outcome)


def test_two_models_run_on_identical_samples(
    tmp_path: Path, tiny_llama_dir: Path, tiny_llama_chat_dir: Path
) -> None:
    outcome = niah([tiny_llama_dir, tiny_llama_chat_dir], tmp_path / "two", *GRID)
    assert outcome.exit_code == 0, outcome.stderr
    records = read_records(tmp_path / "two")
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_model.setdefault(record["model"], {})[record["sample_id"]] = record
    assert set(by_model) == {"tiny-llama", "tiny-llama-chat"}
    plain, chat = by_model["tiny-llama"], by_model["tiny-llama-chat"]
    assert set(plain) == set(chat) == SAMPLE_IDS and len(records) == 12
    for sample_id in SAMPLE_IDS:
        assert plain[sample_id]["answer"] == chat[sample_id]["answer"]
        assert plain[sample_id]["depth"] == chat[sample_id]["depth"]
        assert plain[sample_id]["prompt_sha256"] != chat[sample_id]["prompt_sha256"]  # each in its own tokens
    samples_files = sorted((tmp_path / "two" / "samples").glob("*.jsonl"))
    assert len(samples_files) == 2
    chat_flags = sorted({s.chat_template for s in read_samples(f)} == {True} for f in samples_files)
    assert chat_flags == [False, True]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["tiny-llama", "tiny-llama-chat"]
    assert (tmp_path / "two" / "heatmap_tiny-llama-chat.png").is_file()


def test_generate_fills_prediction_and_ruler_scores(
    tmp_path: Path, tiny_llama_dir: Path, tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    out = tmp_path / "gen"
    outcome = niah([tiny_llama_dir], out, "--lengths", "256", "--depths", "0,100", "--generate")
    assert outcome.exit_code == 0, outcome.stderr
    records = read_records(out)
    [samples_file] = (out / "samples").glob("*.jsonl")
    samples = {s.sample_id: s for s in read_samples(samples_file)}
    assert len(records) == 2
    eos = tiny_llama.generation_config.eos_token_id
    for record in records:
        sample = samples[record["sample_id"]]
        with torch.inference_mode():
            output = tiny_llama.generate(
                input_ids=torch.tensor([sample.input_ids]),
                attention_mask=torch.ones(1, len(sample.input_ids), dtype=torch.long),
                max_new_tokens=32,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        expected = tiny_tokenizer.decode(output[0, len(sample.input_ids) :], skip_special_tokens=True).strip()
        assert record["scoring"] == "generate"
        assert record["prediction"] == expected
        hit = float(sample.answer.lower() in expected.lower())
        assert record["ruler_all"] == record["ruler_part"] == hit
        assert record["correct"] == (hit == 1.0) and record["score"] == hit
        scored = score_answer(tiny_llama, sample.input_ids, sample.answer_ids)
        assert record["answer_logprob"] == pytest.approx(scored.answer_logprob, abs=1e-5)
        assert record["greedy_exact"] == scored.greedy_exact


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("unknown-model", 2, "not found"),
        ("non-causal-model", 2, "not a causal language model"),
        ("bad-lengths", 2, "invalid length"),
        ("bad-depths", 2, "invalid depth 101"),
        ("missing-haystack", 2, "nor an existing .txt file or directory"),
        ("empty-haystack", 2, "is empty"),
        ("over-window", 2, "exceeds the context window"),
        ("chat-template-missing", 2, "has no chat template"),
        ("unknown-chat-mode", 2, "unknown --chat-template"),
        ("budget-too-large", 2, "leaves no room"),
        ("answer-not-in-needle", 2, "does not occur in --needle"),
        pytest.param(
            "cuda",
            2,
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_input_exits_with_one_line_and_no_traceback(
    tmp_path: Path, tiny_llama_dir: Path, tiny_bert_dir: Path, case: str, code: int, fragment: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    model, grid = tiny_llama_dir, ["--lengths", "256", "--depths", "1"]
    extra = {
        "unknown-model": [],
        "non-causal-model": [],
        "bad-lengths": ["--lengths", "8k-"],
        "bad-depths": ["--depths", "101%"],
        "missing-haystack": ["--haystack", str(tmp_path / "nowhere.txt")],
        "empty-haystack": ["--haystack", str(empty)],
        "over-window": ["--lengths", "8k"],
        "chat-template-missing": ["--chat-template", "on"],
        "unknown-chat-mode": ["--chat-template", "sometimes"],
        "budget-too-large": ["--answer-budget", "256"],
        "answer-not-in-needle": [
            "--needle",
            "The code is blue.",
            "--question",
            "What code?",
            "--answer",
            "red",
        ],
        "cuda": ["--device", "cuda"],
    }[case]
    if case == "unknown-model":
        model = tmp_path / "no-such-model"
    elif case == "non-causal-model":
        model = tiny_bert_dir
    outcome = niah([model], tmp_path / "out", *grid, *extra)
    assert outcome.exit_code == code, (outcome.stderr, outcome.exception)
    line = error_line(outcome)
    assert fragment in line
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_a_refused_run_leaves_out_free_for_the_corrected_command(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    out = tmp_path / "out"
    refused = niah([tiny_llama_dir], out, "--lengths", "8k", "--depths", "1")
    assert refused.exit_code == 2
    corrected = niah([tiny_llama_dir], out, "--lengths", "256", "--depths", "1")
    assert corrected.exit_code == 0, corrected.stderr
    assert len(read_records(out)) == 1


def test_version_and_help_are_instant_commands() -> None:
    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip().startswith("diffbench ")
    helped = invoke("niah", "--help")
    assert helped.exit_code == 0 and "--lengths" in helped.stdout and "--model" in helped.stdout


def run_module(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diffbench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=240,
        check=False,
    )


def test_python_m_diffbench_runs_and_prints_json(
    tmp_path: Path, tiny_llama_dir: Path, subprocess_env: dict[str, str]
) -> None:
    out = tmp_path / "entry"
    done = run_module(
        "niah",
        "--model",
        str(tiny_llama_dir),
        "--lengths",
        "256",
        "--depths",
        "0,100",
        "--json",
        "--out",
        str(out),
        cwd=tmp_path,
        env=subprocess_env,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["directory"] == str(out) and payload["status"] == "complete"
    assert [m["n"] for m in payload["models"]] == [2]
    assert len(read_records(out)) == 2


def test_python_m_diffbench_reports_usage_errors_without_traceback(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    done = run_module("niah", "--lengths", "64k-8k", cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: invalid lengths '64k-8k': stop 8192 is below start 65536"
    ]
