"""Damaged and shared run directories: a run's integrity is checked when it opens, nothing wrong is
accepted, every refusal is one line with its exit code, and nothing finished is lost.

Each case damages a copy of one finished run the way a collaborator, a crash or a full disk would, and
runs the command a user would run next.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_factory import copy_run
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.errors import RunDirectoryError
from diffbench.specs import NiahSpec
from diffbench.store import RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
Run = tuple[Path, list[str]]
SHORT = ["--lengths", "256", "--depths", "1"]


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == (1 if result.exit_code else 0), result.stderr  # a refusal is one line
    return result.exit_code, result.stderr


def record_lines(run: Path) -> list[str]:
    return (run / "records.jsonl").read_text().splitlines(keepends=True)


def verdicts(run: Path) -> list[tuple[str, bool, bool, float]]:
    """Each sample's verdict, answer-boundary check and answer log-prob (to 3 decimals), in sample order."""
    records = [json.loads(line) for line in record_lines(run)]
    return sorted(
        (r["sample_id"], r["correct"], r["answer_ended"], round(r["answer_logprob"], 3)) for r in records
    )


def accuracy_table(run: Path) -> str:
    result = CliRunner().invoke(app, ["report", str(run), "--format", "csv", "--out", str(run.parent / "r")])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_records_without_a_manifest_are_never_scored_beside_another_spec(
    finished_run: Run, tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    before = record_lines(run)
    (run / "manifest.json").unlink()
    code, stderr = invoke([*args[:3], "--lengths", "256", "--depths", "50,100", "--out", str(run)])
    assert code == 2 and "no manifest.json" in stderr
    assert record_lines(run) == before and not (run / "manifest.json").exists()


def test_a_run_that_finished_nothing_is_taken_over_by_the_corrected_command(
    finished_run: Run, tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    (run / "records.jsonl").unlink()  # refused or killed before its first record
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}))
    code, stderr = invoke([*args[:3], "--lengths", "256", "--depths", "50,100", "--out", str(run)])
    assert code == 0, stderr
    taken = json.loads((run / "manifest.json").read_text())
    assert taken["status"] == "complete" and taken["spec"]["depths"] == [50.0, 100.0]
    assert {json.loads(line)["depth"] for line in record_lines(run)} == {50.0, 100.0}
    assert len(list((run / "samples").iterdir())) == 1  # only the new spec's samples


def test_deleting_the_lock_file_lets_no_second_writer_in(finished_run: Run, tmp_path: Path) -> None:
    run, _ = copy_run(finished_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    spec = NiahSpec.model_validate(manifest["spec"])
    first = RunStore.open(run, spec, run.name, manifest["requested_models"], ["first"])
    try:
        (run / ".lock").unlink()
        with pytest.raises(RunDirectoryError, match="in use by another diffbench process"):
            RunStore.open(run, spec, run.name, manifest["requested_models"], ["second"])
        probe = f"import pathlib, diffbench.store as s; print(s.is_locked(pathlib.Path({str(run)!r})))"
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        assert other.stdout.strip() == "True"  # another process sees the run as in use
    finally:
        first.close()
    RunStore.open(run, spec, run.name, manifest["requested_models"], ["third"]).close()


def test_an_identical_repeated_record_counts_once_and_is_noted(finished_run: Run, tmp_path: Path) -> None:
    run, _ = copy_run(finished_run, tmp_path)
    original = accuracy_table(run)
    lines = record_lines(run)
    repeated = {**json.loads(lines[0]), "seconds": 9.5, "run_id": "copied"}  # another session's copy
    (run / "records.jsonl").write_text("".join(lines) + json.dumps(repeated) + "\n")
    result = CliRunner().invoke(app, ["report", str(run), "--format", "csv", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and result.stdout == original
    assert "repeats 1 record(s) identically" in result.stderr


def test_a_repeated_record_with_a_flipped_verdict_is_refused_by_report_and_resume(
    finished_run: Run, tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    lines = record_lines(run)
    flipped = json.loads(lines[1])
    flipped["correct"] = not flipped["correct"]
    (run / "records.jsonl").write_text("".join(lines) + json.dumps(flipped) + "\n")
    for command in (["report", str(run)], args):
        code, stderr = invoke(command)
        assert code == 2 and f"records 2 and {len(lines) + 1} give different results" in stderr


def test_a_complete_run_that_lost_lines_is_refused_until_its_command_redoes_them(
    finished_run: Run, tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    original = accuracy_table(run)
    lines = record_lines(run)
    (run / "records.jsonl").write_text("".join(lines[: len(lines) // 2]))
    for command in (["report", str(run)], ["check", "--baseline", str(run), "--candidate", str(run)]):
        code, stderr = invoke(command)
        assert code == 2 and "is marked complete but has lost records" in stderr
        assert f"{len(lines) // 2} of {len(lines)}" in stderr
    code, stderr = invoke(args)  # the run's own command redoes exactly the lost samples
    assert code == 0, stderr
    redone = [json.loads(line) for line in record_lines(run)]
    assert len(redone) == len(lines) and len({r["sample_id"] for r in redone}) == len(lines)
    assert accuracy_table(run) == original


def test_the_leaderboard_skips_a_damaged_run_with_its_reason(finished_run: Run, tmp_path: Path) -> None:
    good, _ = copy_run(finished_run, tmp_path / "results")
    damaged, _ = copy_run(finished_run, tmp_path / "results" / "b")
    (damaged / "records.jsonl").write_text(record_lines(damaged)[0])
    code, stderr = invoke(["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / "site")])
    assert code == 0, stderr
    page = (tmp_path / "site" / "index.html").read_text()
    assert "is marked complete but has lost records" in page and good.name in page


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (b"\xff\xfe{", "it is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "its JSON nests too deeply"),
        (b"[]", "has schema_version None"),
        (b'{"schema_version": 1', "it is not JSON"),
    ],
)
def test_a_damaged_manifest_is_one_line_for_report_and_resume(
    finished_run: Run, tmp_path: Path, damage: bytes, phrase: str
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    (run / "manifest.json").write_bytes(damage)
    for command in (["report", str(run)], args):
        code, stderr = invoke(command)
        assert code == 2 and phrase in stderr


@pytest.mark.parametrize("damage", [b"\xff\xfe\n", b"[" * 100_000 + b"\n", b'{"a": "\xc3\x28"}\n'])
def test_a_damaged_record_line_is_one_line_naming_it(
    finished_run: Run, tmp_path: Path, damage: bytes
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    lines = record_lines(run)
    (run / "records.jsonl").write_bytes(lines[0].encode() + damage + "".join(lines[1:]).encode())
    for command in (["report", str(run)], args):
        code, stderr = invoke(command)
        assert code == 2 and "line 2 is corrupt" in stderr


def test_an_oversized_record_line_is_refused_without_reading_it_whole(
    finished_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffbench.store as store

    run, _ = copy_run(finished_run, tmp_path)
    monkeypatch.setattr(store, "MAX_LINE_BYTES", 4096)
    (run / "records.jsonl").write_text(record_lines(run)[0] + "x" * 10_000)  # no newline: a huge last line
    code, stderr = invoke(["report", str(run)])
    assert code == 2 and "line 2 is longer than" in stderr


def test_damaged_sibling_manifests_do_not_break_a_default_run(
    finished_run: Run, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    results = tmp_path / "results"
    for name, content in [("list", b"[]"), ("binary", b"\xff"), ("nested", b"[" * 100_000)]:
        (results / name).mkdir(parents=True)
        (results / name / "manifest.json").write_bytes(content)
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256", "--depths", "1"]
    code, stderr = invoke([*args, "--results-dir", str(results)])
    assert code == 0, stderr
    assert len([p for p in results.iterdir() if (p / "records.jsonl").is_file()]) == 1


def test_run_directories_named_in_one_second_never_collide(tmp_path: Path) -> None:
    from diffbench.store import claim_new_directory

    made = [claim_new_directory(tmp_path, "20261205-180000_niah_m") for _ in range(3)]
    assert [path.name for path in made] == [
        "20261205-180000_niah_m",
        "20261205-180000_niah_m-2",
        "20261205-180000_niah_m-3",
    ]
    assert all(path.is_dir() and not any(path.iterdir()) for path in made)


# The disk fills once the libraries are loaded: torch 2.6 to 2.8 write a generated module to the temporary
# directory while transformers imports them, which would otherwise be the write that fails first.
FULL_DISK_AFTER_IMPORTS = """
import resource, runpy, sys
import transformers.generation, transformers.models.auto.modeling_auto
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = ["diffbench", *sys.argv[2:]]
runpy.run_module("diffbench", run_name="__main__")
"""


def test_a_disk_that_fills_up_ends_in_one_line_and_each_rerun_keeps_what_finished(
    tmp_path: Path, tiny_llama_dir: Path, subprocess_env: dict[str, str]
) -> None:
    """The file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk) stops the same
    command at a later write each time it grows: the samples (2 KiB), the PNG heatmap (12), the SVG one
    (30); then, with room, the run completes with every record once and no temporary file left."""
    out = tmp_path / "run"
    arguments = ["niah", "--model", str(tiny_llama_dir)]
    arguments += ["--lengths", "256", "--depths", "0,50,100", "--samples", "2", "--out", str(out)]
    kept: list[str] = []
    for limit_kib, stopped_at in ((2, "samples"), (12, ".png"), (30, ".svg")):
        small_disk = [sys.executable, "-c", FULL_DISK_AFTER_IMPORTS, str(limit_kib * 1024)]
        full = subprocess.run(small_disk + arguments, env=subprocess_env, capture_output=True, text=True)
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
        assert len(errors) == 1 and stopped_at in errors[0] and "File too large" in errors[0], full.stderr
        now = record_lines(out) if (out / "records.jsonl").is_file() else []
        assert now[: len(kept)] == kept  # what finished before the disk filled is untouched
        kept = now
    command = [sys.executable, "-m", "diffbench", *arguments]
    again = subprocess.run(command, env=subprocess_env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in record_lines(out)]
    assert len(records) == 6 and len({r["sample_id"] for r in records}) == 6
    assert record_lines(out)[: len(kept)] == kept and len(kept) == 6
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not [path.name for path in out.rglob(".*") if path.name != ".lock"]  # no temporary left


# Dies (SIGKILL's exit, no cleanup) at the Nth call of one syscall wrapper: before it, or right after it.
KILL_AT_SYSCALL = """
import os, runpy, sys
name, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real = getattr(os, name)
calls = 0
def dying(*args, **kwargs):
    global calls
    calls += 1
    if calls == nth and when == "before":
        os._exit(137)
    result = real(*args, **kwargs)
    if calls == nth:
        os._exit(137)
    return result
setattr(os, name, dying)
sys.argv = ["diffbench", *sys.argv[4:]]
runpy.run_module("diffbench", run_name="__main__")
"""


@pytest.mark.parametrize(
    ("syscall", "nth", "when"),
    [("fsync", 1, "before"), ("fsync", 4, "after"), ("replace", 2, "after")],
)
def test_a_kill_at_a_syscall_loses_nothing_and_the_resume_completes(
    finished_run: Run, tmp_path: Path, subprocess_env: dict[str, str], syscall: str, nth: int, when: str
) -> None:
    """Killed at the Nth fsync (a record or file made durable) or os.replace (a file renamed into place),
    before or just after it: the resume keeps every finished record once and ends with the clean run's."""
    source, args = finished_run
    out = tmp_path / "run"
    argv = [*args[:-1], str(out)]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_SYSCALL, syscall, str(nth), when, *argv],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 137, killed.stderr
    kept = record_lines(out) if (out / "records.jsonl").is_file() else []
    resumed = subprocess.run(
        [sys.executable, "-m", "diffbench", *argv], env=subprocess_env, capture_output=True, text=True
    )
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert record_lines(out)[: len(kept)] == kept
    assert verdicts(out) == verdicts(source)


def test_names_with_dollar_signs_print_as_typed_in_figures(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import shutil

    for name in ("m$x^$", "m_$a_b_c$"):  # unbalanced or invalid as mathtext
        model = tmp_path / name
        shutil.copytree(tiny_llama_dir, model)
        out = tmp_path / f"run-{len(name)}"
        code, stderr = invoke(["niah", "--model", str(model), *SHORT, "--out", str(out)])
        assert code == 0, stderr
        assert len(list(out.glob("heatmap_*.png"))) == 1
        code, stderr = invoke(["report", str(out)])
        assert code == 0, stderr


def test_chunks_shorter_than_the_answer_give_the_same_verdicts(finished_run: Run, tmp_path: Path) -> None:
    source, args = finished_run
    out = tmp_path / "run"
    code, stderr = invoke([*args[:-1], str(out), "--chunk-tokens", "1"])
    assert code == 0, stderr
    by_sample = lambda run: {  # noqa: E731
        r["sample_id"]: (r["correct"], round(r["answer_logprob"], 3))
        for r in map(json.loads, record_lines(run))
    }
    assert by_sample(out) == by_sample(source)


def test_check_notes_pairs_whose_score_is_not_finite(finished_run: Run, tmp_path: Path) -> None:
    baseline, _ = copy_run(finished_run, tmp_path / "a")
    candidate, _ = copy_run(finished_run, tmp_path / "b")
    lines = record_lines(candidate)
    edited = {**json.loads(lines[0]), "score": float("inf")}
    (candidate / "records.jsonl").write_text(json.dumps(edited) + "\n" + "".join(lines[1:]))
    code, stderr = invoke(["check", "--baseline", str(baseline), "--candidate", str(candidate)])
    assert code == 0, stderr
    assert f"1 of {len(lines)} pairs have a non-finite score" in stderr
