"""An attention pass's files: what the pass writes, and how a resumed or sharded pass keeps each
finished unit once (its ledger for the one run loop, engine/loop.RunLedger).

    attention_manifest.json   provenance: spec, models, versions, command, options, status, time, memory
    attention.jsonl           one line per model × sample × layer × head (plain JSON, pandas-readable)
    attention_samples.jsonl   one line per model × sample: answer region, verdict, seconds
    samples/<tokenizer>.jsonl the exact token ids each tokenizer saw (``diffbench attn``)
    shards/rank-N.jsonl       a torchrun rank's finished units, merged by rank 0
    attention_summary.json    the summary (attention_summary.py), beside the plots
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.errors import RunDirectoryError
from diffbench.specs import AttentionManifest, RunStatus
from diffbench.store import RunFiles, append_durably, read_json_object

SCHEMA_VERSION = 1
MANIFEST = "attention_manifest.json"
RECORDS = "attention.jsonl"
SAMPLE_RESULTS = "attention_samples.jsonl"
SUMMARY = "attention_summary.json"
ATTENTION_DIRECTORY = "attention"  # a finished run's pass: RUN/attention


def _resumed_manifest(directory: Path) -> AttentionManifest | None:
    """The pass's manifest to go on with; one that is unreadable or of another schema is not ours, so
    the pass starts anew (it is written atomically, so a kill never leaves half of one)."""
    from pydantic import ValidationError

    path = directory / MANIFEST
    payload = read_json_object(path) if path.exists() else None
    if payload is None or payload.get("schema_version") != SCHEMA_VERSION:
        return None
    try:
        return AttentionManifest.model_validate(payload)
    except ValidationError:
        return None


def _keep_finished(directory: Path) -> None:
    """Keep the head records of samples with a verdict; those of any other sample are dropped.

    A sample's head records are written before its verdict, so a kill between the two leaves records
    that its redo would repeat.
    """
    from diffbench.store import atomic_write_text, iter_record_lines, record_key

    verdicts = list(iter_record_lines(directory / SAMPLE_RESULTS))
    done = {record_key(verdict) for verdict in verdicts}
    for path, rows in [(directory / SAMPLE_RESULTS, verdicts), (directory / RECORDS, None)]:
        if not path.exists():
            continue
        rows = [r for r in iter_record_lines(path) if record_key(r) in done] if rows is None else rows
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if text != path.read_text(encoding="utf-8"):
            atomic_write_text(path, text)


def _note_in_run(run_directory: Path, manifest: AttentionManifest) -> None:
    """The run's manifest.json says where its attention data is, its status, and which models it covers."""
    from diffbench.store import MANIFEST as RUN_MANIFEST
    from diffbench.store import read_manifest, write_json

    run = read_manifest(run_directory)
    run.attention = {
        "directory": ATTENTION_DIRECTORY,
        "status": manifest.status,
        "models": [entry.name for entry in manifest.models],
        "summary": f"{ATTENTION_DIRECTORY}/{SUMMARY}",
        "options": manifest.options,
        "wall_seconds": manifest.wall_seconds,
        "peak_memory_mb": manifest.peak_memory_mb,
    }
    write_json(run_directory / RUN_MANIFEST, run.model_dump(mode="json"))


def fresh_directory(directory: Path) -> Path:
    """Create --out, refusing one that already holds an attention run (there is no resume to mix into)."""
    from diffbench.store import ensure_directory

    if (directory / RECORDS).exists() or (directory / MANIFEST).exists():
        raise RunDirectoryError(
            f"{str(directory)!r} holds an attention run already; pass another --out "
            "(attention runs do not resume)"
        )
    return ensure_directory(directory)


def new_manifest(
    run_id: str, spec: Any, model_texts: list[str], options: dict[str, object], command: list[str]
) -> AttentionManifest:
    from diffbench.store import new_manifest as new_run_manifest

    return new_run_manifest(
        AttentionManifest,
        run_id,
        spec,
        model_texts,
        command,
        schema_version=SCHEMA_VERSION,
        options=dict(options),
    )


# A run manifest's fields that an attention manifest leaves out of its file (it has no engine entry, no
# attention note of its own and no record count).
NOT_IN_FILE = {"engine", "attention", "complete_records"}


@dataclass(frozen=True)
class AttentionRecord:
    """One unit's attention: its head lines and its verdict line, written together."""

    model: str
    sample_id: str
    heads: list[dict[str, Any]]
    verdict: dict[str, Any]


class AttentionFiles:
    """An attention directory as every rank sees it: a unit is finished once its verdict line is written.

    ``samples`` holds the samples ``diffbench attn`` built, in niah's layout (samples/<tokenizer>.jsonl).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples = RunFiles(directory)

    def shard_path(self, rank: int) -> Path:
        return self.directory / "shards" / f"rank-{rank}.jsonl"

    def completed(self, model: str) -> set[str]:
        from diffbench.store import iter_record_lines

        lines = iter_record_lines(self.directory / SAMPLE_RESULTS)
        return {str(line.get("sample_id")) for line in lines if line.get("model") == model}

    def append_to_shard(self, rank: int, record: AttentionRecord) -> None:
        """A unit on one line (heads and verdict), so a rank killed mid-write leaves no half unit."""
        path = self.shard_path(rank)
        path.parent.mkdir(exist_ok=True)
        append_durably(path, json.dumps({"heads": record.heads, "verdict": record.verdict}) + "\n")


class AttentionLedger(AttentionFiles):
    """An attention directory as rank 0 writes it: attention_manifest.json and the two line files.

    Attached to a finished run (``run_directory``), it holds the run's lock and keeps the run's
    manifest.json told where the attention data is and how far it got, so reports find it.
    """

    def __init__(
        self, directory: Path, manifest: AttentionManifest, run_directory: Path | None, lock: Any
    ) -> None:
        super().__init__(directory)
        self.manifest = manifest
        self.run_directory = run_directory
        self._lock = lock

    @classmethod
    def fresh(
        cls,
        directory: Path,
        spec: Any,
        model_texts: list[str],
        options: dict[str, object],
        command: list[str],
    ) -> AttentionLedger:
        """``diffbench attn``'s own directory, which must not hold an attention run already."""
        fresh_directory(directory)
        ledger = cls(directory, new_manifest(directory.name, spec, model_texts, options, command), None, None)
        ledger.save_manifest()
        return ledger

    @classmethod
    def attached(
        cls,
        run_directory: Path,
        spec: Any,
        model_texts: list[str],
        options: dict[str, object],
        command: list[str],
    ) -> AttentionLedger:
        """RUN/attention, resumed: units with a verdict line are kept, a unit cut short is done again."""
        from diffbench.store import acquire_lock, ensure_directory, read_manifest

        directory = ensure_directory(run_directory / ATTENTION_DIRECTORY)
        lock = acquire_lock(run_directory)
        try:
            manifest = _resumed_manifest(directory) or new_manifest(
                read_manifest(run_directory).run_id, spec, model_texts, options, command
            )
            manifest.requested_models = list(dict.fromkeys([*manifest.requested_models, *model_texts]))
            manifest.options, manifest.command = dict(options), list(command)
            manifest.status = "running"
            ledger = cls(directory, manifest, run_directory, lock)
            _keep_finished(directory)
            ledger.merge_shards()
            ledger.save_manifest()
        except BaseException:
            lock.close()
            raise
        return ledger

    def save_manifest(self) -> None:
        from diffbench.store import now_iso, write_json

        self.manifest.updated_at = now_iso()
        write_json(self.directory / MANIFEST, self.manifest.model_dump(mode="json", exclude=NOT_IN_FILE))
        if self.run_directory is not None:
            _note_in_run(self.run_directory, self.manifest)

    def refuse_mixed_settings(self, name: str, device: str, dtype: str, attn_implementation: str) -> None:
        """Shares are compared within a model's own rows only: a pass may add rows made another way."""

    def register_model(self, entry: Any) -> None:
        self.manifest.models = [m for m in self.manifest.models if m.name != entry.name] + [entry]
        self.save_manifest()

    def record_engine(self, model: str, settings: dict[str, object]) -> None:
        """The pass's settings are its options, in the manifest already."""

    def append(self, record: AttentionRecord) -> None:
        """The head lines, then the verdict line: a unit without its verdict is redone on resume."""
        append_durably(self.directory / RECORDS, "".join(json.dumps(line) + "\n" for line in record.heads))
        append_durably(self.directory / SAMPLE_RESULTS, json.dumps(record.verdict) + "\n")

    def merge_shards(self) -> int:
        """The units of the ranks' shards, each once; a shard goes only after its units are here."""
        from diffbench.store import iter_record_lines, record_key

        shards = sorted((self.directory / "shards").glob("rank-*.jsonl"))
        if not shards:
            return 0
        present = {record_key(line) for line in iter_record_lines(self.directory / SAMPLE_RESULTS)}
        merged = 0
        for shard in shards:
            for line in iter_record_lines(shard):
                verdict = line["verdict"]
                if record_key(verdict) not in present:
                    model, sample_id = record_key(verdict)
                    self.append(AttentionRecord(model, sample_id, line["heads"], verdict))
                    present.add(record_key(verdict))
                    merged += 1
            shard.unlink()
        return merged

    def finish(self, status: RunStatus, wall_seconds: float, peak_memory_mb: float | None) -> None:
        """Time adds up over resumed passes; the peak memory is the largest of them."""
        self.manifest.status = status
        self.manifest.wall_seconds = round(self.manifest.wall_seconds + wall_seconds, 3)
        if peak_memory_mb is not None:
            peak = round(peak_memory_mb, 1)
            self.manifest.peak_memory_mb = max(self.manifest.peak_memory_mb or 0.0, peak)
        self.save_manifest()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
