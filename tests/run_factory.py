"""Run directories with controlled verdicts, valid per diffbench.specs, for statistics-driven tests.

A real model cannot be told to lose exactly 20 of 60 samples; these directories can. Everything
is built through the pydantic models (RunManifest, Record), so a schema change breaks them loudly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from diffbench.specs import ModelEntry, NiahSpec, Record, RunManifest

LENGTHS = [1024, 2048]
DEPTHS = [0.0, 50.0, 100.0]


def spec(samples_per_cell: int = 10, seed: int = 0, lengths: list[int] | None = None) -> NiahSpec:
    return NiahSpec(
        lengths=lengths or LENGTHS,
        depths=DEPTHS,
        samples_per_cell=samples_per_cell,
        seed=seed,
        haystack_fingerprint="synthetic",
    )


def sample_ids(task_spec: NiahSpec) -> list[str]:
    """Sample ids in the order niah generates them: length, depth, index."""
    return [
        f"niah/{length}/{depth:g}/{index}"
        for length in task_spec.lengths
        for depth in task_spec.depths
        for index in range(task_spec.samples_per_cell)
    ]


def entry(name: str, variant: str = "baseline", path: str | None = None) -> ModelEntry:
    return ModelEntry(
        name=name,
        source=name,
        kind="local",
        path=path or f"/checkpoints/{name}",
        variant=variant,
        architecture="LlamaForCausalLM",
        parameters=1_000_000,
        context_window=4096,
        device="cpu",
        dtype="float32",
        attn_implementation="sdpa",
        tokenizer_fingerprint="tok0",
    )


Verdict = Callable[[str, int], bool | tuple[bool, float]]


def write_run(
    directory: Path,
    task_spec: NiahSpec,
    models: dict[str, Verdict],
    variants: dict[str, str] | None = None,
    ids: Iterable[str] | None = None,
    status: str = "complete",
    created_at: str = "2026-11-22T10:00:00+00:00",
) -> Path:
    """Write manifest.json and records.jsonl; ``models`` maps a model name to verdict(sample_id, i).

    A verdict is ``correct`` or ``(correct, score)``; the score defaults to float(correct).
    """
    directory.mkdir(parents=True, exist_ok=True)
    variants = variants or {}
    manifest = RunManifest(
        run_id=directory.name,
        task="niah",
        spec=task_spec,
        spec_fingerprint=task_spec.fingerprint(),
        seed=task_spec.seed,
        status=status,  # type: ignore[arg-type]
        created_at=created_at,
        updated_at=created_at,
        requested_models=list(models),
        models=[entry(name, variants.get(name, "baseline")) for name in models],
        versions={"diffbench": "0.1.0"},
    )
    (directory / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    chosen = list(ids) if ids is not None else sample_ids(task_spec)
    lines = []
    for name, verdict in models.items():
        for index, sample_id in enumerate(chosen):
            outcome = verdict(sample_id, index)
            correct, score = outcome if isinstance(outcome, tuple) else (outcome, float(outcome))
            _, length, depth, sample_index = sample_id.split("/")
            record = Record(
                run_id=directory.name,
                sample_id=sample_id,
                task="niah",
                model=name,
                variant=variants.get(name, "baseline"),
                target_length=int(length),
                prompt_tokens=int(length) - 32,
                depth=float(depth),
                sample_index=int(sample_index),
                needle_span=(10, 20),
                answer="1234567",
                prediction=None,
                correct=correct,
                score=score,
                scoring="teacher_forced",
                greedy_exact=correct,
                answer_logprob=-0.5 if correct else -9.0,
                answer_tokens=4,
                ruler_all=None,
                ruler_part=None,
                prompt_sha256=f"sha-{sample_id}",
                device="cpu",
                dtype="float32",
                seconds=0.01,
            )
            lines.append(record.model_dump_json() + "\n")
    (directory / "records.jsonl").write_text("".join(lines))
    return directory


def always(value: bool) -> Verdict:
    return lambda _sample_id, _index: value


def wrong_first(count: int, among: Callable[[str], bool] = lambda _: True) -> Verdict:
    """Right everywhere except the first ``count`` samples for which ``among(sample_id)`` holds."""
    lost: set[str] = set()

    def verdict(sample_id: str, _index: int) -> bool:
        if among(sample_id) and (sample_id in lost or len(lost) < count):
            lost.add(sample_id)
            return False
        return True

    return verdict


def copy_run(finished_run: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the ``finished_run`` fixture's run in ``tmp_path``, and the command that resumes the copy."""
    source, args = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    return run, [run.as_posix() if arg == source.as_posix() else arg for arg in args]
