"""Runs sharded over torchrun ranks (gloo on CPU) give the records of one process, and lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from diffbench.engine.distributed import Ranks, leave_ranks_together
from diffbench.store import RECORDS, SHARDS, iter_record_lines

GRID = ["--lengths", "256,384", "--depths", "3", "--samples", "2", "--haystack", "noise"]
TIMEOUT = 300


HALLUC_GRID = ["--probes", "factqa,contrastive", "--mode", "forced", "--lengths", "1k", "--samples", "2"]


def niah(
    model: Path, out: Path, env: dict[str, str], ranks: int = 1, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return launch("niah", [*GRID, *extra], model, out, env, ranks)


def launch(
    command_name: str, grid: list[str], model: Path, out: Path, env: dict[str, str], ranks: int = 1
) -> subprocess.CompletedProcess[str]:
    """``diffbench COMMAND`` in one process, or under torchrun with ``ranks`` gloo ranks."""
    model_and_out = ["--model", str(model), *grid, "--out", str(out)]
    command = [sys.executable, "-m", "diffbench", command_name, *model_and_out]
    if ranks > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
        ]
        command = [*launcher, "-m", "diffbench", *command[3:]]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False)


def keyed(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    records = list(iter_record_lines(out / RECORDS))
    keys = [(r["model"], r["sample_id"]) for r in records]
    assert len(keys) == len(set(keys)), "a sample was recorded twice"
    return dict(zip(keys, records, strict=True))


def assert_same_results(actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert actual.keys() == expected.keys()
    for key, record in actual.items():
        assert record["correct"] == expected[key]["correct"], key
        assert record["answer_logprob"] == pytest.approx(expected[key]["answer_logprob"], abs=1e-4), key
        assert record["prompt_sha256"] == expected[key]["prompt_sha256"], key


def test_shards_are_balanced_and_disjoint() -> None:
    items = list(range(11))
    shards = [Ranks(rank, 3).shard(items) for rank in range(3)]
    assert sorted(item for shard in shards for item in shard) == items
    assert [len(s) for s in shards] == [4, 4, 3]


@pytest.fixture(scope="module")
def single_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, subprocess_env: dict[str, str]
) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    done = niah(tiny_llama_dir, out, subprocess_env)
    assert done.returncode == 0, done.stderr
    return out


def test_two_gloo_ranks_give_the_records_of_one_process(
    single_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    out = tmp_path / "run"
    done = niah(tiny_llama_dir, out, subprocess_env, ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(keyed(out), keyed(single_run))
    assert not (out / SHARDS).exists() or not list((out / SHARDS).iterdir())  # merged, then removed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert done.stdout.count("results:") == 1  # rank 0 alone reports


def test_halluc_shards_over_two_gloo_ranks_like_niah(
    tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Every task runs through the one loop, so the probes shard too: the records of one process."""
    from typer.testing import CliRunner

    from diffbench.cli import app

    single, sharded = tmp_path / "single", tmp_path / "sharded"
    args = ["halluc", "--model", str(tiny_llama_dir), *HALLUC_GRID]
    alone = CliRunner().invoke(app, [*args, "--out", str(single)])
    assert alone.exit_code == 0, alone.output
    done = launch("halluc", HALLUC_GRID, tiny_llama_dir, sharded, subprocess_env, ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = keyed(single)
    assert len(expected) == 2 * 2  # two items of each probe, forced-choice
    assert_same_results(keyed(sharded), expected)
    assert json.loads((sharded / "manifest.json").read_text())["status"] == "complete"
    assert (sharded / "summary.json").is_file() and done.stdout.count("results:") == 1  # rank 0 reports


def test_a_dead_ranks_shard_is_kept_on_resume(
    single_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """As if rank 1 died: its finished records sit in its shard (last line torn); the rerun keeps them."""
    out = tmp_path / "run"
    done = niah(tiny_llama_dir, out, subprocess_env)
    assert done.returncode == 0, done.stderr
    lines = (out / RECORDS).read_text().splitlines(keepends=True)
    (out / RECORDS).write_text("".join(lines[:3]))
    (out / SHARDS).mkdir()
    (out / SHARDS / "rank-1.jsonl").write_text("".join(lines[3:6]) + lines[6][:40])
    rerun = niah(tiny_llama_dir, out, subprocess_env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: 6 finished records kept, {len(lines) - 6} new" in rerun.stderr.replace("\n", " ")
    kept = keyed(out)
    for line in lines[:6]:
        record = json.loads(line)
        assert kept[record["model"], record["sample_id"]] == record  # byte-for-byte the finished record
    assert_same_results(kept, keyed(single_run))
    assert not list((out / SHARDS).glob("*.jsonl"))


def test_device_map_auto_places_the_model_with_accelerate(
    single_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """On a CPU-only machine accelerate puts every layer on the CPU: same records, placement recorded."""
    out = tmp_path / "run"
    done = niah(tiny_llama_dir, out, subprocess_env, extra=("--device-map", "auto"))
    assert done.returncode == 0, done.stderr
    assert_same_results(keyed(out), keyed(single_run))
    [entry] = json.loads((out / "manifest.json").read_text())["models"]
    assert entry["device_map"] and set(entry["device_map"].values()) == {"cpu"}


@pytest.fixture(scope="module")
def single_attention_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, subprocess_env: dict[str, str]
) -> Path:
    """niah --attn in one process: the reference of the sharded pass and the run the dead rank resumes."""
    out = tmp_path_factory.mktemp("single-attn") / "run"
    done = niah(tiny_llama_dir, out, subprocess_env, extra=("--attn",))
    assert done.returncode == 0, done.stderr
    return out


def test_the_attention_pass_follows_device_map_auto(
    single_attention_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """niah --attn --device-map auto loads the attention pass the same way (placement in its manifest)
    and measures the same attention as a run on one device."""
    mapped = tmp_path / "mapped"
    done = niah(tiny_llama_dir, mapped, subprocess_env, extra=("--attn", "--device-map", "auto"))
    assert done.returncode == 0, done.stderr
    summaries = []
    for out, placed in ((single_attention_run, False), (mapped, True)):
        summaries.append(json.loads((out / "attention" / "attention_summary.json").read_text()))
        [entry] = json.loads((out / "attention" / "attention_manifest.json").read_text())["models"]
        assert bool(entry["device_map"]) == placed
    plain, mapped = ({row["model"]: row for row in summary["models"]} for summary in summaries)
    assert plain.keys() == mapped.keys()
    for model, row in plain.items():
        for region in ("answer", "needle", "noise", "sink", "question"):
            if row.get(region) is not None:
                assert mapped[model][region] == pytest.approx(row[region], abs=1e-6)


def test_leaving_together_ends_the_group_and_needs_none(tmp_path: Path) -> None:
    """What the CLI's main runs after a command succeeds: a no-op in one process, else barrier and
    destroy (gloo on torch 2.6 hangs at exit when a rank destroys the group after its peers left)."""
    import torch.distributed as dist

    leave_ranks_together()  # no group: nothing to do, nothing raised
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        leave_ranks_together()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_local_rank_past_the_visible_gpus_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--nproc-per-node above the GPU count: one line naming the count, not a missing cuda:N later."""
    import torch

    from diffbench.engine.distributed import rank_device
    from diffbench.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("auto") == "cuda:1" and rank_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(UsageError, match="--nproc-per-node 2 or fewer"):
        rank_device("cuda")


def test_a_conversion_published_first_by_another_process_is_kept(tmp_path: Path) -> None:
    """Two torchrun ranks converting one GGUF file: the second rename finds the first's copy and keeps it."""
    from diffbench.store import publish_directory

    target, ours = tmp_path / "converted", tmp_path / ".staging-ours"
    target.mkdir()
    (target / "config.json").write_text("{}")
    ours.mkdir()
    (ours / "config.json").write_text('{"ours": true}')
    publish_directory(ours, target)
    assert (target / "config.json").read_text() == "{}"
    leftover = tmp_path / "leftover"
    leftover.mkdir()
    (leftover / "partial.bin").write_text("x")
    ours2 = tmp_path / ".staging-2"
    ours2.mkdir()
    (ours2 / "config.json").write_text("{}")
    with pytest.raises(OSError):  # a directory in the way that is no finished conversion is not ours to use
        publish_directory(ours2, leftover)


def test_device_map_under_torchrun_is_refused(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rank would spread its own copy over all GPUs: one line, exit 2, before anything loads."""
    from typer.testing import CliRunner

    from diffbench.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256", "--device-map", "auto"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "use one or the other" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--max-memory", "8GB"], "pass only one"),
        (["--device", "cpu"], "leave --device at auto"),
    ],
)
def test_options_that_device_map_would_ignore_are_refused(
    tiny_llama_dir: Path, tmp_path: Path, extra: list[str], phrase: str
) -> None:
    from typer.testing import CliRunner

    from diffbench.cli import app

    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256", "--device-map", "auto", *extra]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and phrase in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def attention_verdicts(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    verdicts = list(iter_record_lines(out / "attention" / "attention_samples.jsonl"))
    keys = [(v["model"], v["sample_id"]) for v in verdicts]
    assert len(keys) == len(set(keys)), "a sample was analysed twice"
    return dict(zip(keys, verdicts, strict=True))


def test_the_attention_pass_shards_over_two_gloo_ranks(
    single_attention_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """niah --attn under torchrun: the attention pass is a task of the one loop, so both ranks analyse
    their share and rank 0 merges them into the lines and summary one process writes. The torchrun
    process group outlives niah's pass, so the attention pass reuses it (no second rendezvous)."""
    single, sharded = single_attention_run, tmp_path / "sharded"
    done = niah(tiny_llama_dir, sharded, subprocess_env, ranks=2, extra=("--attn",))
    assert done.returncode == 0, done.stderr[-3000:]
    expected, actual = attention_verdicts(single), attention_verdicts(sharded)
    assert actual.keys() == expected.keys() and len(actual) == 2 * 3 * 2  # lengths × depths × samples
    for key, verdict in actual.items():
        assert verdict["greedy_exact"] == expected[key]["greedy_exact"], key
        assert verdict["answer_logprob"] == pytest.approx(expected[key]["answer_logprob"], abs=1e-4), key
    heads = [list(iter_record_lines(out / "attention" / "attention.jsonl")) for out in (single, sharded)]
    assert len(heads[1]) == len(heads[0]) > 0
    assert not list((sharded / "attention" / "shards").glob("*.jsonl"))  # merged, then removed
    summary = json.loads((sharded / "attention" / "attention_summary.json").read_text())
    reference = json.loads((single / "attention" / "attention_summary.json").read_text())
    assert summary["models"][0]["needle"] == pytest.approx(reference["models"][0]["needle"], abs=1e-6)
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["attention"]["status"] == "complete"
    assert done.stdout.count("results:") == 1  # rank 0 alone reports


def test_a_dead_ranks_attention_shard_is_kept_on_resume(
    single_attention_run: Path, tiny_llama_dir: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """As if rank 1 died during niah --attn: its finished units sit in its shard (last line torn); the
    rerun keeps them, redoes the torn one, and analyses no unit twice."""
    import shutil

    out = shutil.copytree(single_attention_run, tmp_path / single_attention_run.name)
    attention = out / "attention"
    verdicts = (attention / "attention_samples.jsonl").read_text().splitlines(keepends=True)
    heads = list(iter_record_lines(attention / "attention.jsonl"))
    units = [
        {
            "heads": [h for h in heads if h["sample_id"] == json.loads(v)["sample_id"]],
            "verdict": json.loads(v),
        }
        for v in verdicts
    ]
    kept, shard = units[:3], units[3:6]
    (attention / "attention_samples.jsonl").write_text("".join(verdicts[:3]))
    (attention / "attention.jsonl").write_text(
        "".join(json.dumps(h) + "\n" for u in kept for h in u["heads"])
    )
    (attention / "shards").mkdir()
    lines = [json.dumps(unit) + "\n" for unit in shard]
    (attention / "shards" / "rank-1.jsonl").write_text("".join(lines) + json.dumps(units[6])[:50])
    rerun = niah(tiny_llama_dir, out, subprocess_env, extra=("--attn",))
    assert rerun.returncode == 0, rerun.stderr
    resumed = attention_verdicts(out)
    assert len(resumed) == len(verdicts)
    for unit in [*kept, *shard]:  # byte-for-byte the finished verdicts
        verdict = unit["verdict"]
        assert resumed[verdict["model"], verdict["sample_id"]] == verdict
    assert len(list(iter_record_lines(attention / "attention.jsonl"))) == len(heads)
    assert not list((attention / "shards").glob("*.jsonl"))
