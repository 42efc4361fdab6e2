"""Run directories: an atomic manifest, records appended one durable line at a time, resume, locking.

Layout of ``results/<run-id>/``: ``manifest.json`` (provenance and status), ``records.jsonl`` (one
line per model × sample, flushed and fsynced as it finishes), ``samples/<tokenizer>.jsonl`` (the
token-exact samples each tokenizer saw), ``summary.json`` and the heatmaps. Killing a run loses
nothing finished: reopening drops a half-written last line and skips every recorded sample.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from diffbench.errors import DiffbenchError, RunDirectoryError
from diffbench.specs import (
    SCHEMA_VERSION,
    HallucSpec,
    ModelEntry,
    NiahSpec,
    Record,
    RunManifest,
    RunStatus,
    Sample,
    spec_difference,
)

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
SUMMARY = "summary.json"
LOCK = ".lock"
SHARDS = "shards"
# Bounds on what a run's files may hold: a damaged or planted file is refused, never read whole.
MAX_JSON_BYTES = 64 * 2**20  # a manifest or summary
MAX_LINE_BYTES = 64 * 2**20  # one record or sample line (a 64K-token prompt's ids take about 0.5 MiB)
# Equal options but another fingerprint: the spec gained a field since (e.g. haystack_per_sample).
OLDER_SAMPLES = "how its samples were built: an older diffbench wrote it"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str, special_in_place: bool = False) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file.

    The rename replaces whatever has the name, a symbolic link included: nothing outside the directory
    is ever written through a link planted in it. Only outputs the user names (``check --output
    /dev/stdout``, a pipe) pass ``special_in_place``: a special file is then written in place, since
    renaming onto it would replace it.
    """
    if special_in_place and path.exists() and not path.is_file():
        try:
            with path.open("w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise DiffbenchError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
        return
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for bytes (figures): a temporary file, fsync, rename; the usual permissions."""
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = Path(handle.name)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # NamedTemporaryFile makes 0600: others could not read results
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:  # a full disk leaves no half-written temporary behind
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise DiffbenchError(f"cannot write {str(path)!r}: {error.strerror or error}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _not_regular(path: Path) -> str:
    return (
        f"{str(path)!r} is not a regular file (a symbolic link, pipe, device or directory): diffbench "
        "reads and writes only regular files in a run directory; remove it, or pick another --out"
    )


def open_regular(path: Path, flags: int) -> int:
    """os.open of a regular file in a run directory, never through a symbolic link or into a FIFO or
    device planted there (which would write outside the run, or hang); refused in one line instead."""
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise RunDirectoryError(_not_regular(path)) from None
        raise DiffbenchError(f"cannot open {str(path)!r}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise RunDirectoryError(_not_regular(path))
    os.set_blocking(descriptor, True)
    return descriptor


def decode_json(data: bytes) -> Any:
    """JSON from bytes; anything that is not UTF-8 JSON (or nests too deep to parse) is a ValueError."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"it is not JSON ({error.msg}, line {error.lineno})") from None
    except RecursionError:
        raise ValueError("its JSON nests too deeply") from None


def read_json_file(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A run's JSON file, read only if it is a regular file of at most ``limit`` bytes (ValueError else)."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as handle:
            data = handle.read(limit + 1)
    except DiffbenchError as error:
        raise ValueError(str(error)) from None
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit // 2**20} MiB")
    return decode_json(data)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file that may be absent or damaged (a model card, a note): None then, never an error."""
    try:
        payload = read_json_file(path)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def publish_directory(staging: Path, target: Path) -> None:
    """Move a finished conversion into place in one rename. When another process (a torchrun rank, a
    second command) published the same conversion first, its complete copy is kept and ours dropped."""
    try:
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise


def ensure_directory(path: Path, hint: str = "pass another --out") -> Path:
    """mkdir -p with a one-line error naming the directory and what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"cannot create {str(path)!r}: {error.strerror or error}; {hint}") from None
    return path


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_versioned_json(
    path: Path, model: type[ModelT], version_field: str, version: int, error: type[DiffbenchError]
) -> ModelT:
    """A JSON file validated as ``model``; an unknown format version is refused, naming both versions."""
    try:
        payload = read_json_file(path)
    except ValueError as problem:
        raise error(f"cannot read {str(path)!r}: {problem}") from None
    found = payload.get(version_field) if isinstance(payload, dict) else None
    if found != version:
        raise error(
            f"{str(path)!r} has {version_field} {found!r}; this diffbench reads {version}: use the "
            "diffbench version that wrote it, or write it anew"
        )
    try:
        return model.model_validate(payload)
    except ValidationError as problem:
        raise error(f"{str(path)!r} is malformed: {problem.errors()[0]['msg']}") from None


def read_manifest(directory: Path) -> RunManifest:
    """The manifest of a run directory; unknown schema versions are refused."""
    path = directory / MANIFEST
    if not path.is_file():
        raise RunDirectoryError(f"{str(directory)!r} is not a diffbench run directory (no {MANIFEST})")
    return read_versioned_json(path, RunManifest, "schema_version", SCHEMA_VERSION, RunDirectoryError)


def iter_record_lines(
    path: Path, hint: str = "remove that line to redo its sample"
) -> Iterator[dict[str, Any]]:
    """JSON objects of a .jsonl file; a corrupt line other than an unfinished last one is an error.

    A run's files are read only when they are regular files: a link or pipe planted in their place
    (to /dev/zero, to another run) is refused in one line instead of hanging or reading elsewhere.
    """
    if not path.exists() and not path.is_symlink():
        return
    with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise RunDirectoryError(
                    f"{str(path)!r} line {number} is longer than {MAX_LINE_BYTES // 2**20} MiB; {hint}"
                )
            if not line.endswith(b"\n"):
                return  # an unfinished last line: the run was killed while writing it
            if not line.strip():
                continue
            try:
                payload = decode_json(line)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):  # not JSON, or JSON but no object ('[1, 2]', '7')
                raise RunDirectoryError(f"{str(path)!r} line {number} is corrupt; {hint}")
            yield payload


def validate_record(payload: dict[str, Any], path: Path, number: int) -> Record:
    """Record ``number`` of a records.jsonl; another schema version or a malformed record is refused."""
    found = payload.get("schema_version", SCHEMA_VERSION)
    if found != SCHEMA_VERSION:
        raise RunDirectoryError(
            f"{str(path)!r} record {number} has schema_version {found!r}; this diffbench reads "
            f"{SCHEMA_VERSION}: use the diffbench version that wrote it, or rerun the task into a new --out"
        )
    try:
        return Record.model_validate(payload)
    except ValidationError as error:
        detail = error.errors()[0]
        where = ".".join(str(part) for part in detail["loc"])
        raise RunDirectoryError(
            f"{str(path)!r} record {number} is malformed ({where}: {detail['msg']}); "
            "remove that line and rerun the task to redo its sample"
        ) from None


# What may differ between two copies of one result: when, where and in which session it was scored.
_SESSION_FIELDS = {"run_id", "seconds", "device"}


def _result_text(record: Record) -> str:
    """A record without its session fields, as JSON text (where NaN equals NaN)."""
    return record.model_dump_json(exclude=_SESSION_FIELDS)


def read_records_counted(path: Path) -> tuple[list[Record], int]:
    """Every record of a records.jsonl, validated, one per model × sample, and how many repeats were dropped.

    A result recorded twice identically (a copy, a concatenation) is kept once. Two different results
    for one sample (a flipped verdict, another answer) are refused, naming both lines: which is right
    is for the user to say, never for diffbench to guess.
    """
    kept: dict[tuple[str, str], tuple[int, Record]] = {}
    repeats = 0
    for number, payload in enumerate(iter_record_lines(path), start=1):
        record = validate_record(payload, path, number)
        key = (record.model, record.sample_id)
        if key not in kept:
            kept[key] = (number, record)
            continue
        first, earlier = kept[key]
        if _result_text(earlier) != _result_text(record):
            raise RunDirectoryError(
                f"{str(path)!r} records {first} and {number} give different results for {record.model} on "
                f"sample {record.sample_id}; delete the wrong line (or both, and rerun the task to redo it)"
            )
        repeats += 1
    return [record for _, record in kept.values()], repeats


def read_records(path: Path) -> list[Record]:
    """Every record of a records.jsonl, validated, one per model × sample (see read_records_counted)."""
    return read_records_counted(path)[0]


def append_durably(path: Path, line: str) -> None:
    """Append one line and fsync it before returning: a finished record survives a kill or power loss."""
    try:
        with os.fdopen(
            open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8"
        ) as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise DiffbenchError(
            f"cannot append to {str(path)!r}: {error.strerror or error}; "
            "finished records are kept, rerun the same command to resume"
        ) from None


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    return str(record.get("model")), str(record.get("sample_id"))


class RunFiles:
    """What every process of a run may do with its directory: read records and samples, write a shard."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def records(self) -> list[dict[str, Any]]:
        """The records so far, validated: a resumed run never builds on a corrupt or foreign record."""
        return [record.model_dump(mode="json") for record in read_records(self.directory / RECORDS)]

    def completed(self, model: str) -> set[str]:
        return {r["sample_id"] for r in self.records() if r.get("model") == model}

    def shard_path(self, rank: int) -> Path:
        return self.directory / SHARDS / f"rank-{rank}.jsonl"

    def append_to_shard(self, rank: int, record: Record) -> None:
        """A distributed rank's durable append, to its own file: ranks never write one file together."""
        path = self.shard_path(rank)
        path.parent.mkdir(exist_ok=True)
        append_durably(path, record.model_dump_json() + "\n")

    def samples_path(self, tokenizer_fingerprint: str) -> Path:
        return self.directory / "samples" / f"{tokenizer_fingerprint}.jsonl"

    def save_samples(self, tokenizer_fingerprint: str, samples: Iterable[Sample]) -> None:
        """This tokenizer's samples, written once by rank 0 before any rank reads them."""
        path = self.samples_path(tokenizer_fingerprint)
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, "".join(s.model_dump_json() + "\n" for s in samples))

    def load_samples(self, tokenizer_fingerprint: str) -> list[Sample] | None:
        path = self.samples_path(tokenizer_fingerprint)
        if not path.exists():
            return None
        hint = "delete the file and rerun: the samples are generated again, identically, from the spec"
        samples = []
        for number, payload in enumerate(iter_record_lines(path, hint), start=1):
            try:
                samples.append(Sample.model_validate(payload))
            except ValidationError as error:
                detail = error.errors()[0]
                where = ".".join(str(part) for part in detail["loc"])
                raise RunDirectoryError(
                    f"{str(path)!r} sample {number} is malformed ({where}: {detail['msg']}); {hint}"
                ) from None
        return samples


class RunStore(RunFiles):
    """One run directory, opened for writing by a single process (rank 0 of a distributed run)."""

    def __init__(self, directory: Path, manifest: RunManifest, lock_handle: Any) -> None:
        super().__init__(directory)
        self.manifest = manifest
        self._lock_handle = lock_handle
        self.stale_versions: list[str] = []  # set by open(): how the records' versions differ from ours

    @classmethod
    def open(
        cls,
        directory: Path,
        spec: NiahSpec | HallucSpec,
        run_id: str,
        requested_models: list[str],
        command: list[str],
    ) -> RunStore:
        """Create a run directory or resume the one there; a different spec in it is refused.

        A directory whose run finished nothing (refused or killed before its first record) is taken over
        by the new spec, so a corrected command can reuse its --out. Records without a manifest are
        refused: what they answer is unknown, and new samples must never be scored beside them.
        """
        ensure_directory(directory)
        lock = acquire_lock(directory)
        try:
            manifest, stale_versions = _open_manifest(directory, spec, run_id, requested_models, command)
            store = cls(directory, manifest, lock)
            store.stale_versions = stale_versions
            store._repair_records()
            store.merge_shards()
            store.save_manifest()
        except BaseException:
            lock.close()
            raise
        return store

    def _repair_records(self) -> None:
        """Cut a half-written last line left by a kill, so the next append starts on a fresh line."""
        path = self.directory / RECORDS
        if not path.exists() and not path.is_symlink():
            return
        with os.fdopen(open_regular(path, os.O_RDWR), "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def save_manifest(self) -> None:
        self.manifest.updated_at = now_iso()
        write_json(self.directory / MANIFEST, self.manifest.model_dump(mode="json"))

    def refuse_mixed_settings(self, name: str, device: str, dtype: str, attn_implementation: str) -> None:
        """Refuse to add records of ``name`` made another way than the records already here.

        Called for every model with pending samples before any loads (with what the runner will ask
        for) and again when it registers (with what the load gave): a run mixes no package versions,
        and per model no dtypes, device kinds or attention kernels. A run with nothing left to add is
        never refused: reopening a finished run only reads it.
        """
        if self.stale_versions:
            raise RunDirectoryError(
                f"{str(self.directory)!r} was run with {', '.join(self.stale_versions)}; resume it where its "
                "versions are installed (manifest.json lists them; pip install -c constraints.txt gives "
                "diffbench's tested set), or pass another --out"
            )
        entry = next((m for m in self.manifest.models if m.name == name), None)
        if entry is None or not self.completed(name):
            return
        differences = [
            f"{what} {old} (now {new})"
            for what, old, new in (
                ("device", device_kind(entry.device), device_kind(device)),
                ("dtype", entry.dtype, dtype),
                ("attention kernel", entry.attn_implementation, attn_implementation),
            )
            if old != new
        ]
        if differences:
            raise RunDirectoryError(
                f"{str(self.directory)!r} holds records of {name} made with another "
                f"{'; '.join(differences)}; resume with the original --device/--dtype on the same kind of "
                "machine, or pass another --out"
            )

    def register_model(self, entry: ModelEntry) -> None:
        self.refuse_mixed_settings(entry.name, entry.device, entry.dtype, entry.attn_implementation)
        self.manifest.models = [m for m in self.manifest.models if m.name != entry.name] + [entry]
        self.save_manifest()

    def record_engine(self, model: str, settings: dict[str, object]) -> None:
        """How the engine ran this model (chunk size, memory plan, prefix sharing), kept per model."""
        self.manifest.engine = {**self.manifest.engine, model: settings}
        self.save_manifest()

    def append(self, record: Record) -> None:
        """Append one record durably (flush + fsync) before the next sample starts."""
        append_durably(self.directory / RECORDS, record.model_dump_json() + "\n")

    def merge_shards(self) -> int:
        """Move the records of distributed ranks' shard files into records.jsonl, each once.

        Runs at the end of a distributed run and when any run opens the directory, so the records of
        a rank that died are kept. A shard is deleted only after its records are fsynced here; a kill
        in between leaves records that the next merge recognises as already present.
        """
        shards = sorted((self.directory / SHARDS).glob("rank-*.jsonl"))
        if not shards:
            return 0
        present = {record_key(r) for r in self.records()}
        merged = 0
        for shard in shards:
            for number, payload in enumerate(iter_record_lines(shard), start=1):
                record = validate_record(payload, shard, number)
                key = (record.model, record.sample_id)
                if key not in present:
                    self.append(record)
                    present.add(key)
                    merged += 1
            shard.unlink()
        return merged

    def finish(self, status: RunStatus, wall_seconds: float, peak_memory_mb: float | None) -> None:
        self.manifest.status = status
        if status == "complete":  # what a later loss of lines is measured against (report/runs.py)
            self.manifest.complete_records = dict(Counter(str(r["model"]) for r in self.records()))
        self.manifest.wall_seconds = round(self.manifest.wall_seconds + wall_seconds, 3)
        if peak_memory_mb is not None:
            self.manifest.peak_memory_mb = max(self.manifest.peak_memory_mb or 0.0, round(peak_memory_mb, 1))
        self.save_manifest()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._lock_handle.close()


def _open_manifest(
    directory: Path, spec: NiahSpec | HallucSpec, run_id: str, requested_models: list[str], command: list[str]
) -> tuple[RunManifest, list[str]]:
    """The manifest to run under (the one there, resumed, or a new one) and the records' stale versions."""
    samples = directory / "samples"
    if (directory / MANIFEST).exists() or (directory / MANIFEST).is_symlink():
        manifest = read_manifest(directory)
        if manifest.spec_fingerprint == spec.fingerprint():
            stale_versions = _stale_versions(directory, manifest)
            manifest.status = "running"
            for name in requested_models:
                if name not in manifest.requested_models:
                    manifest.requested_models.append(name)
            manifest.command = command
            return manifest, stale_versions
        if has_records(directory) or manifest.attention is not None:
            raise RunDirectoryError(
                f"{str(directory)!r} holds a run with a different task spec "
                f"(it differs in {', '.join(spec_difference(manifest.spec, spec)) or OLDER_SAMPLES}); "
                "pass another --out, or repeat the original options to resume it"
            )
        if samples.is_dir() and not samples.is_symlink():
            shutil.rmtree(samples)  # the old spec's samples; nothing was scored on them
    elif has_records(directory) or samples.exists() or samples.is_symlink():
        raise RunDirectoryError(
            f"{str(directory)!r} holds records or samples but no {MANIFEST}, so which task they answer is "
            f"unknown; restore its {MANIFEST}, or pass another --out"
        )
    return new_manifest(RunManifest, run_id, spec, requested_models, command), []


Manifest = TypeVar("Manifest", bound=RunManifest)


def new_manifest(
    kind: type[Manifest],
    run_id: str,
    spec: NiahSpec | HallucSpec,
    requested_models: list[str],
    command: list[str],
    **extra: Any,
) -> Manifest:
    """A new run's manifest (a RunManifest, or the attention pass's): its spec, models, versions, command."""
    from diffbench.versions import environment_versions

    return kind(
        run_id=run_id,
        task=spec.task,
        spec=spec,
        spec_fingerprint=spec.fingerprint(),
        seed=spec.seed,
        created_at=now_iso(),
        updated_at=now_iso(),
        requested_models=list(requested_models),
        versions=environment_versions(),
        command=list(command),
        **extra,
    )


def device_kind(device: str) -> str:
    """'cuda' for 'cuda:1': records from two GPUs of one kind may mix, CPU and GPU records may not."""
    return device.split(":", 1)[0]


def has_records(directory: Path) -> bool:
    """Whether any record exists, in records.jsonl or in a distributed rank's unmerged shard."""
    paths = [directory / RECORDS, *(directory / SHARDS).glob("rank-*.jsonl")]
    return any(path.is_file() and path.stat().st_size for path in paths)


def _stale_versions(directory: Path, manifest: RunManifest) -> list[str]:
    """How the run's records' package versions differ from ours; a run without records adopts ours."""
    from diffbench.versions import environment_versions, version_differences

    current = environment_versions()
    differences = version_differences(manifest.versions, current)
    if differences and has_records(directory):
        return differences
    manifest.versions = current
    return []


class RunLock:
    """An exclusive flock on a run directory itself, held until ``close`` or the process dies.

    Locking the directory rather than a file in it means deleting or replacing ``.lock`` lets no second
    writer in; ``.lock`` only tells the next process who holds it.
    """

    def __init__(self, descriptor: int) -> None:
        self.descriptor: int | None = descriptor

    def close(self) -> None:
        if self.descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _lock_directory(directory: Path) -> int | None:
    """The directory's descriptor, flocked; None when another process holds it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise RunDirectoryError(f"cannot open {str(directory)!r}: {error.strerror or error}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def acquire_lock(directory: Path) -> RunLock:
    """Lock a run directory for this process, naming the holder if another process has it."""
    descriptor = _lock_directory(directory)
    if descriptor is None:
        try:
            holder = str(read_json_file(directory / LOCK, 64))
        except ValueError:
            holder = "unknown"
        raise RunDirectoryError(
            f"{str(directory)!r} is in use by another diffbench process (pid {holder}); "
            "wait for it or pick another --out"
        )
    lock = RunLock(descriptor)
    try:
        atomic_write_text(directory / LOCK, f"{os.getpid()}\n")
    except DiffbenchError:
        lock.close()
        raise
    return lock


def is_locked(directory: Path) -> bool:
    """Whether another process holds the run directory now (a run in progress)."""
    try:
        descriptor = _lock_directory(directory)
    except RunDirectoryError:
        return False
    if descriptor is None:
        return True
    os.close(descriptor)
    return False


def claim_new_directory(root: Path, name: str) -> Path:
    """A new, empty directory ROOT/NAME (NAME-2, NAME-3, ... when taken): two runs started in the same
    second never share one."""
    ensure_directory(root, "pass --out or another --results-dir")
    for suffix in range(1, 1000):
        candidate = root / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise RunDirectoryError(
                f"cannot create {str(candidate)!r}: {error.strerror or error}; pass --out"
            ) from None
        return candidate
    raise RunDirectoryError(f"{str(root)!r} holds 999 runs named {name!r}; pass --out")


def find_resumable(root: Path, spec: NiahSpec | HallucSpec, requested_models: list[str]) -> Path | None:
    """The newest unfinished run under ``root`` with this spec and these models, to resume by default.

    A run whose records were made under other package versions is not resumed by default (that would be
    refused), nor one another process is running; a new run starts beside it. Damaged manifests are
    passed over.
    """
    from diffbench.versions import environment_versions, version_differences

    if not root.is_dir():
        return None
    current = environment_versions()
    candidates = []
    for manifest_path in root.glob(f"*/{MANIFEST}"):
        try:
            payload = read_json_file(manifest_path)
        except ValueError:
            continue
        if (
            isinstance(payload, dict)
            and payload.get("schema_version") == SCHEMA_VERSION
            and payload.get("spec_fingerprint") == spec.fingerprint()
            and payload.get("requested_models") == requested_models
            and payload.get("status") != "complete"
            and not (
                isinstance(payload.get("versions"), dict)
                and version_differences(payload["versions"], current)
                and has_records(manifest_path.parent)
            )
            and not is_locked(manifest_path.parent)  # in progress: a second default run starts beside it
        ):
            candidates.append((str(payload.get("created_at", "")), manifest_path.parent))
    return max(candidates)[1] if candidates else None
