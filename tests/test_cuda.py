"""CUDA paths, run by benchmarks/gpu/gpu_check.py (DIFFBENCH_TEST_CUDA=1 pytest -m cuda); skipped on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffbench.cli import app

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (DIFFBENCH_TEST_CUDA=1 on a GPU)"),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_niah_runs_on_cuda_and_records_it(tiny_llama_dir: Path, tmp_path: Path, dtype: str) -> None:
    out = tmp_path / dtype
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256,512", "--depths", "0,50,100"]
    result = CliRunner().invoke(app, [*args, "--samples", "2", "--dtype", dtype, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (model,) = manifest["models"]
    assert model["device"].startswith("cuda") and model["dtype"] == dtype
    engine = manifest["engine"][model["name"]]
    assert engine["prefill_tokens_per_second"] > 0
    assert ("precision_audit" in engine) == (dtype != "float32")
    assert manifest["peak_memory_mb"] > 0


def test_cuda_float32_logits_match_cpu(tiny_llama: object) -> None:
    """The same weights on CUDA in float32 give the CPU's logits (TF32 off) to 1e-4."""
    ids = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cpu = tiny_llama(input_ids=ids).logits  # type: ignore[operator]
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            gpu = tiny_llama.to("cuda")(input_ids=ids.to("cuda")).logits.cpu()  # type: ignore[attr-defined]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
            tiny_llama.to("cpu")  # type: ignore[attr-defined]
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
