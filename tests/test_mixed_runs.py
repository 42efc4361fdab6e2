"""Runs never mix: a resume under other package versions or model settings is refused, naming the
difference, and low-precision NaN/inf log-probs are stored, read back and reported, never a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.report.run_report import write_run_report
from diffbench.store import read_records
from diffbench.versions import environment_versions

GRID = ["--lengths", "256", "--depths", "0,100", "--samples", "2"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def niah(model: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["niah", "--model", str(model), *GRID, *extra, "--out", str(out)])
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def finished_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "run"
    code, stderr = niah(tiny_llama_dir, out)
    assert code == 0, stderr
    return out


def copy_without_last_record(run: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    records = target / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:-1]))
    return target, lines[:-1]


def edit_manifest(run: Path, **changes: object) -> None:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_other_package_versions_are_refused_naming_the_package(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run, kept = copy_without_last_record(finished_run, tmp_path)
    recorded = {**environment_versions(), "transformers": "4.0.0", "torch": "1.0"}
    edit_manifest(run, versions=recorded)
    code, stderr = niah(tiny_llama_dir, run)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "torch 1.0 (now 2." in lines[0] and "transformers 4.0.0 (now " in lines[0]
    assert (run / "records.jsonl").read_text() == "".join(kept)  # nothing finished lost, nothing added


def test_an_empty_run_adopts_the_current_versions(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run, _ = copy_without_last_record(finished_run, tmp_path)
    (run / "records.jsonl").write_text("")
    edit_manifest(run, versions={"transformers": "4.0.0"})
    code, stderr = niah(tiny_llama_dir, run)
    assert code == 0, stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["transformers"] == environment_versions()["transformers"]


def test_another_dtype_is_refused_before_loading_and_the_original_resumes(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run, kept = copy_without_last_record(finished_run, tmp_path)
    code, stderr = niah(tiny_llama_dir, run, "--dtype", "bfloat16")
    assert code == 2
    assert "made with another dtype float32 (now bfloat16)" in stderr
    assert (run / "records.jsonl").read_text() == "".join(kept)
    code, stderr = niah(tiny_llama_dir, run, "--dtype", "float32")
    assert code == 0, stderr
    records = read_records(run / "records.jsonl")
    assert len(records) == len(kept) + 1
    assert len({r.sample_id for r in records}) == len(records)


def test_another_attention_kernel_is_refused(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run, _ = copy_without_last_record(finished_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    for entry in manifest["models"]:
        entry["attn_implementation"] = "flash_attention_2"
        entry["device"] = "cuda:0"
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, stderr = niah(tiny_llama_dir, run)
    assert code == 2
    assert "device cuda (now cpu)" in stderr and "attention kernel flash_attention_2 (now " in stderr


def test_nonfinite_logprobs_are_stored_read_back_and_reported(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / "records.jsonl"
    payloads = [json.loads(line) for line in path.read_text().splitlines()]
    finite = [p["answer_logprob"] for p in payloads[2:]]
    payloads[0]["answer_logprob"] = float("-inf")  # written by diffbench as the JSON constant -Infinity
    payloads[1]["answer_logprob"] = None  # what earlier diffbench versions wrote for a NaN
    path.write_text("".join(json.dumps(p) + "\n" for p in payloads))
    records = read_records(path)
    assert records[0].answer_logprob == -math.inf and math.isnan(records[1].answer_logprob)
    assert "-Infinity" in records[0].model_dump_json()
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.stderr
    assert "tiny-llama has 2 NaN or infinite answer log-probs" in (run / "report" / "report.md").read_text()
    (model,) = write_run_report(run).summary["models"]  # summary.json, as niah writes it at the end
    assert model["nonfinite_logprobs"] == 2
    assert model["mean_answer_logprob"] == pytest.approx(sum(finite) / len(finite), abs=1e-5)


def test_a_finished_run_reopened_under_other_versions_is_only_read(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    recorded = {**environment_versions(), "transformers": "4.0.0"}
    edit_manifest(run, versions=recorded)
    before = (run / "records.jsonl").read_text()
    code, stderr = niah(tiny_llama_dir, run)
    assert code == 0, stderr
    assert (run / "records.jsonl").read_text() == before
    assert json.loads((run / "manifest.json").read_text())["versions"]["transformers"] == "4.0.0"


def test_the_default_resume_passes_over_a_run_made_under_other_versions(
    finished_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    stale, kept = copy_without_last_record(finished_run, results)
    edit_manifest(stale, versions={**environment_versions(), "torch": "1.0"}, status="interrupted")
    result = CliRunner().invoke(
        app, ["niah", "--model", str(tiny_llama_dir), *GRID, "--results-dir", str(results)]
    )
    assert result.exit_code == 0, result.stderr
    assert (stale / "records.jsonl").read_text() == "".join(kept)  # left as it was
    fresh = [d for d in results.iterdir() if d != stale]
    assert len(fresh) == 1 and len(read_records(fresh[0] / "records.jsonl")) == len(kept) + 1
