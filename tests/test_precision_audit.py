"""The precision audit: a bf16 run says how far its answers are from float32's, measured, per model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.engine.precision import DRIFT_BOUND
from diffbench.specs import Record

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(model: Path, out: Path, *extra: str) -> CliRunner:
    args = ["niah", "--model", str(model), "--lengths", "256,384", "--depths", "0,50,100", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.stderr
    return result


def records(directory: Path) -> dict[str, Record]:
    lines = (directory / "records.jsonl").read_text().splitlines()
    return {r.sample_id: r for r in (Record.model_validate_json(line) for line in lines)}


def test_a_bf16_run_reports_its_drift_from_float32_on_its_first_samples(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    low = run(tiny_llama_dir, tmp_path / "bf16", "--dtype", "bfloat16", "--precision-audit", "4")
    run(tiny_llama_dir, tmp_path / "fp32", "--dtype", "float32")
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    (name,) = manifest["engine"]
    audit = manifest["engine"][name]["precision_audit"]
    assert (audit["dtype"], audit["reference_dtype"], audit["samples"]) == ("bfloat16", "float32", 4)
    assert (
        "precision_audit" not in json.loads((tmp_path / "fp32" / "manifest.json").read_text())["engine"][name]
    )

    bf16, fp32 = records(tmp_path / "bf16"), records(tmp_path / "fp32")
    audited = audit["sample_ids"]
    assert len(audited) == 4 and set(audited) < set(bf16)
    drifts = [abs(bf16[s].answer_logprob - fp32[s].answer_logprob) for s in audited]
    assert all(math.isfinite(d) for d in drifts) and max(drifts) > 0  # bf16 does move them
    assert audit["max_abs_logprob_drift"] == pytest.approx(max(drifts), abs=2e-6)
    assert audit["mean_abs_logprob_drift"] == pytest.approx(sum(drifts) / 4, abs=2e-6)
    flipped = [s for s in audited if bf16[s].correct != fp32[s].correct]
    assert audit["flipped_samples"] == flipped and audit["verdict_flips"] == len(flipped)
    assert audit["exceeds_bound"] == (bool(flipped) or max(drifts) > DRIFT_BOUND)
    assert ("drift" in low.stderr and "--dtype float32" in low.stderr) == audit["exceeds_bound"]
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert summary["precision_audit"][name] == audit

    off = run(tiny_llama_dir, tmp_path / "off", "--dtype", "bfloat16", "--precision-audit", "0")
    assert off.exit_code == 0
    engine = json.loads((tmp_path / "off" / "manifest.json").read_text())["engine"][name]
    assert "precision_audit" not in engine
