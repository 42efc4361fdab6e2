"""SIGKILL at seeded random moments, resume each time: the records equal an uninterrupted run's.

A real ``python -m diffbench niah`` process is killed again and again over one run directory, each
time at a moment drawn from a seeded RNG: shortly after it takes the run's lock (loading the model,
building or saving samples), after a random number of new records plus a few milliseconds (inside
a sample, or an append), and once after the last record (writing the summary and heatmaps, the
manifest still 'running'). Once, the last record line is also torn in half, as a kill in the middle
of a write would leave it. After every kill nothing finished may be lost or changed; after the final
resume, records.jsonl must hold exactly the samples an uninterrupted run holds, once each, with the
same verdicts and answer log-probs (timing fields aside).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GRID = ["--lengths", "256,512", "--depths", "5", "--samples", "3"]
TOTAL = 2 * 5 * 3
SEED = 20261122
WAIT_SECONDS = 240
COMPARED = ("correct", "greedy_exact", "score", "prompt_sha256", "needle_span", "answer", "prompt_tokens")
IGNORED = {"seconds", "run_id", "answer_logprob"}  # timing and the directory's name; log-probs below
# A resumed process shares haystack prefixes among a different set of pending samples than an
# uninterrupted one, so float32 sums differ in their last bits: 1e-6 relative (4e-6 absolute was seen
# at a log-prob of -51.7, where float32 resolves about 4e-6); absolute 1e-6 is below that resolution.
LOGPROB_TOLERANCE = 1e-6


@dataclass
class Kill:
    """When to kill: after the lock, after ``records`` new records, or after the last one; then ``delay``."""

    trigger: str  # "lock" | "records" | "all-records"
    records: int
    delay: float
    tear_last_line: bool = False


def kill_plan(rng: random.Random) -> list[Kill]:
    middle = [Kill("records", rng.randint(1, 4), rng.uniform(0.0, 0.012)) for _ in range(4)]
    middle[rng.randrange(len(middle))].tear_last_line = True
    return [Kill("lock", 0, rng.uniform(0.0, 0.4)), *middle, Kill("all-records", 0, rng.uniform(0.0, 1.5))]


def complete_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return text[: text.rfind("\n") + 1].splitlines(keepends=True)


def wait_until(condition: Any, process: subprocess.Popen[bytes]) -> bool:
    """Poll every 2 ms; False if the process ended first (it then finished what it was doing)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no progress in {WAIT_SECONDS} s")
        time.sleep(0.002)
    return True


def check_nothing_finished_was_lost(before: list[str], after: list[str]) -> None:
    assert after[: len(before)] == before, "a finished record was lost or changed"
    records = [json.loads(line) for line in after]  # every complete line is a whole record
    counts = Counter((r["model"], r["sample_id"]) for r in records)
    assert not counts or max(counts.values()) == 1, "a sample was recorded twice"


def command(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "diffbench", "niah", "--model", str(model), *GRID, "--out", str(out)]


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in IGNORED}


def test_seeded_kills_and_resumes_give_the_uninterrupted_records(
    tmp_path: Path, tiny_llama_dir: Path, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    clean_out, out = tmp_path / "clean", tmp_path / "killed"
    # The uninterrupted reference runs alongside the kills (its own directory, its own process).
    clean_log = (tmp_path / "clean.log").open("wb")
    clean = subprocess.Popen(
        command(tiny_llama_dir, clean_out), stdout=clean_log, stderr=subprocess.STDOUT, env=subprocess_env
    )
    try:
        records_path, lock = out / "records.jsonl", out / ".lock"
        plan = kill_plan(random.Random(SEED))
        injections: list[str] = []
        started = time.monotonic()
        for number, kill in enumerate(plan, start=1):
            before = complete_lines(records_path)
            process = subprocess.Popen(
                command(tiny_llama_dir, out),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=subprocess_env,
            )
            try:
                if kill.trigger == "lock":
                    reached = wait_until(
                        lambda p=process: lock.exists() and lock.read_text().strip() == str(p.pid), process
                    )
                elif kill.trigger == "records":
                    goal = min(len(before) + kill.records, TOTAL)
                    reached = wait_until(lambda g=goal: len(complete_lines(records_path)) >= g, process)
                else:
                    reached = wait_until(lambda: len(complete_lines(records_path)) >= TOTAL, process)
                if reached:
                    time.sleep(kill.delay)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            killed = process.returncode == -signal.SIGKILL
            after = complete_lines(records_path)
            check_nothing_finished_was_lost(before, after)
            if (out / "manifest.json").exists():  # written atomically: whole, whatever the moment
                assert json.loads((out / "manifest.json").read_text())["status"] in ("running", "complete")
            injections.append(
                f"kill {number} ({kill.trigger}, +{kill.delay * 1000:.0f} ms): "
                f"{'killed' if killed else 'finished first'}, records {len(before)} -> {len(after)} "
                f"(at {time.monotonic() - started:.1f} s)"
            )
            if kill.tear_last_line and after:
                torn = after[-1][: len(after[-1]) // 2]
                records_path.write_text("".join(after[:-1]) + torn, encoding="utf-8")
                injections.append(f"torn: last record cut to {len(torn)} of {len(after[-1])} bytes")

        kept = complete_lines(records_path)
        resumed = subprocess.run(
            command(tiny_llama_dir, out),
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=WAIT_SECONDS,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed: {len(kept)} finished records kept, {TOTAL - len(kept)} new" in resumed.stderr

        clean_status = clean.wait(timeout=WAIT_SECONDS)
    finally:
        if clean.poll() is None:
            clean.kill()
            clean.wait()
        clean_log.close()
    assert clean_status == 0, (tmp_path / "clean.log").read_text()

    lines = records_path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    counts = Counter((r["model"], r["sample_id"]) for r in records)
    assert len(records) == TOTAL and max(counts.values()) == 1, counts.most_common(3)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    reference = {
        r["sample_id"]: r for r in map(json.loads, (clean_out / "records.jsonl").read_text().splitlines())
    }
    assert {r["sample_id"] for r in records} == set(reference)
    for record in records:
        expected = reference[record["sample_id"]]
        for field in COMPARED:
            assert record[field] == expected[field], (record["sample_id"], field)
        assert comparable(record) == comparable(expected), record["sample_id"]
        difference = abs(record["answer_logprob"] - expected["answer_logprob"])
        assert difference <= LOGPROB_TOLERANCE * max(1.0, abs(expected["answer_logprob"])), (
            record["sample_id"],
            record["answer_logprob"],
            expected["answer_logprob"],
        )
    samples = sorted((out / "samples").glob("*.jsonl"))
    clean_samples = sorted((clean_out / "samples").glob("*.jsonl"))
    assert [p.name for p in samples] == [p.name for p in clean_samples]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(samples, clean_samples, strict=True))

    kills = sum("killed" in line for line in injections)
    assert kills == len(plan), "\n".join(injections)  # every trigger comes well before the run's end
    with capsys.disabled():
        print(
            f"\nkill_resume_fuzz: {kills} SIGKILLs, {len(injections) - len(plan)} torn line, no record lost"
        )
        print("\n".join(injections))
