"""Task files (diffbench/taskfile.py) and `diffbench run`: the shipped files, a run end to end, every
error as one line naming the file and the field, and hypothesis fuzzing of the loader.

The fuzz tests run derandomized, without an example database and with fixed example counts, so
every run (and CI) checks the same documents; ``EXAMPLES`` adds up to the cases run per session,
which the last test prints.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import diffbench.cli.halluc
import diffbench.cli.niah
import diffbench.cli.options
from diffbench import taskfile
from diffbench.cli import app
from diffbench.errors import UsageError
from diffbench.lengths import MAX_GRID, MAX_LENGTH
from diffbench.specs import HallucSpec, NiahSpec, RunManifest
from diffbench.taskfile import (
    FORMAT_VERSION,
    TASK_KINDS,
    TaskFile,
    load_task_file,
    parse_task_file,
)

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
TASK_GUIDE = TASKS.parent / "docs" / "guides" / "task-files.md"  # the format and the shipped suites
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Each shipped task file and the options of its command (`diffbench niah`, or `halluc` for a
# task = "halluc" file) that build the same spec.
SHIPPED = {
    "niah-8k-64k.toml": ["--lengths", "8k-64k", "--depths", "5", "--samples", "5", "--haystack", "prose"],
    "smoke.toml": ["--lengths", "1k,2k", "--depths", "3", "--samples", "1"],
    # the first run of its needles sweep (N = 1); test_the_multi_needle_sweep_... checks the others
    "multi-needle-4k.toml": ["--lengths", "4k", "--depths", "5", "--samples", "50"],
    "multi-needle-64k.toml": [
        *("--lengths", "8k-64k", "--depths", "5", "--samples", "5", "--needles", "8", "--queries", "1"),
    ],
    "halluc-probes.toml": ["--lengths", "4k", "--depths", "5", "--samples", "100"],
    "nonliteral-4k-32k.toml": [
        *("--lengths", "4k-32k", "--depths", "5", "--samples", "5", "--needle-style", "nonliteral"),
    ],
    "literal-4k-32k.toml": [
        *("--lengths", "4k-32k", "--depths", "5", "--samples", "5", "--needle-style", "literal"),
    ],
    "vartrack-4k-32k.toml": [
        *("--lengths", "4k-32k", "--depths", "5", "--samples", "5", "--kind", "vartrack"),
    ],
}
HALLUC_SHIPPED = {"halluc-probes.toml"}
MINIMAL = 'format = 1\ntask = "niah"\nlengths = "1k-4k"\ndepths = 5\n'
HALLUC = 'format = 1\ntask = "halluc"\n'
SpecT = TypeVar("SpecT", bound=NiahSpec | HallucSpec)


class Captured:
    """execute_niah and execute_halluc stand-in: keeps what `niah`, `halluc` or `run` would have run."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, spec: Any, models: list[str], out: Any, results_dir: Any, *rest: Any, **named: Any
    ) -> None:
        device, _dtype, json_output, options = rest[:4]
        self.calls.append(
            {
                "spec": spec,
                "models": models,
                "out": out,
                "device": device,
                "json": json_output,
                "options": options,
                "attn": rest[4] if len(rest) > 4 else named.get("attn", False),
            }
        )


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    capture = Captured()
    monkeypatch.setattr(diffbench.cli.niah, "execute_niah", capture)
    monkeypatch.setattr(diffbench.cli.halluc, "execute_halluc", capture)
    return capture


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def spec_of(captured: Captured, kind: type[SpecT], *options: str) -> SpecT:
    """The spec the command of ``kind`` (`niah` or `halluc`) builds from ``options``."""
    result = invoke(kind.model_fields["task"].default, *options)
    assert result.exit_code == 0, result.stderr
    spec = captured.calls.pop()["spec"]
    assert isinstance(spec, kind)
    return spec


def niah_runs(task: TaskFile) -> list[tuple[str, NiahSpec]]:
    """The runs of a niah file, typed as such."""
    runs = []
    for label, spec in task.runs():
        assert isinstance(spec, NiahSpec)
        runs.append((label, spec))
    return runs


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_error_line(result: Any) -> str:
    """Exit code 2 and exactly one 'error:' line on stderr; no traceback, nothing on stdout."""
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.exit_code == 2, (result.exit_code, errors[0])
    assert result.stdout == ""
    return errors[0]


# ----------------------------------------------------------------------------- the shipped files


def test_every_shipped_task_file_has_its_command_equivalent_here_and_a_line_in_the_guide() -> None:
    shipped = sorted(path.name for path in TASKS.glob("*.toml"))
    assert shipped == sorted(SHIPPED)
    readme = TASK_GUIDE.read_text(encoding="utf-8")
    for name in shipped:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_task_file_builds_the_spec_of_its_command_options(name: str, captured: Captured) -> None:
    task = load_task_file(TASKS / name)
    assert task.task == ("halluc" if name in HALLUC_SHIPPED else "niah")
    kind: type[NiahSpec | HallucSpec] = HallucSpec if name in HALLUC_SHIPPED else NiahSpec
    expected = spec_of(captured, kind, *SHIPPED[name])
    assert task.spec == expected
    assert task.spec.fingerprint() == expected.fingerprint()


def test_the_shipped_suites_have_their_documented_grids() -> None:
    big = load_task_file(TASKS / "niah-8k-64k.toml")
    assert big.spec.lengths == [8192, 16384, 32768, 65536]
    assert big.spec.depths == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert (big.spec.samples_per_cell, big.spec.haystack, big.models) == (5, "prose", ())
    smoke = load_task_file(TASKS / "smoke.toml")
    assert smoke.spec.lengths == [1024, 2048] and smoke.spec.depths == [0.0, 50.0, 100.0]
    assert smoke.spec.samples_per_cell == 1 and smoke.models == ("smollm2",)
    probes = load_task_file(TASKS / "halluc-probes.toml")
    assert isinstance(probes.spec, HallucSpec)
    assert probes.spec.probes == ["factsum", "factqa", "unanswerable", "counterfactual", "contrastive"]
    assert (probes.spec.lengths, probes.spec.samples_per_cell, probes.spec.mode) == ([4096], 100, "both")
    default_models = tuple(diffbench.cli.options.DEFAULT_MODELS)
    assert probes.models == ("zoo:baseline", "zoo:diff", "zoo:dex") == default_models


def test_the_multi_needle_sweep_runs_the_diff_papers_grid_each_as_its_niah_options(
    captured: Captured, tmp_path: Path
) -> None:
    task = load_task_file(TASKS / "multi-needle-4k.toml")
    grid = [(label, spec.needles, spec.queries, spec.kind) for label, spec in niah_runs(task)]
    assert grid == [
        ("n1-r1", 1, 1, "multikey"),
        ("n2-r2", 2, 2, "multiquery"),
        ("n4-r2", 4, 2, "multiquery"),
        ("n6-r2", 6, 2, "multiquery"),
    ]
    for _, spec in niah_runs(task):
        options = ["--lengths", "4k", "--depths", "5", "--samples", "50", "--needles", str(spec.needles)]
        expected = spec_of(captured, NiahSpec, *options, "--queries", str(spec.queries))
        assert spec == expected and spec.fingerprint() == expected.fingerprint()
    result = invoke("run", str(TASKS / "multi-needle-4k.toml"), "--model", "m", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.stderr
    assert [call["out"] for call in captured.calls] == [tmp_path / "o" / label for label, _ in task.runs()]
    assert [call["spec"] for call in captured.calls] == [spec for _, spec in task.runs()]


def readme_example(kind: str) -> str:
    readme = TASK_GUIDE.read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if f'task = "{kind}"' in b]
    return block


def test_the_format_example_in_the_task_guide_loads() -> None:
    task = parse_task_file(readme_example("niah"), "README.md")
    assert isinstance(task.spec, NiahSpec)
    assert task.spec.lengths == [8192, 16384, 32768, 65536] and task.spec.samples_per_cell == 5
    assert task.spec.needle.answer == "saffron" and task.engine.max_memory == "8GB"


def test_the_halluc_example_in_the_tasks_readme_loads_to_the_commands_defaults(captured: Captured) -> None:
    task = parse_task_file(readme_example("halluc"), "README.md")
    assert task.task == "halluc" and task.engine.chunk_tokens == 4096
    assert task.spec == spec_of(captured, HallucSpec, "--judge", "rule")
    assert parse_task_file(HALLUC, "t.toml").spec == spec_of(captured, HallucSpec)  # every field optional


# ----------------------------------------------------------------------------- equivalence with the CLI


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ('lengths = "8k:32k:8k"\ndepths = "0,10,50"', ["--lengths", "8k:32k:8k", "--depths", "0,10,50"]),
        (
            'lengths = [4096, "12k", 4096]\ndepths = [100, 0, 12.5]',
            ["--lengths", "4096,12k", "--depths", "0,12.5,100"],
        ),
        ("lengths = 2048\ndepths = 1", ["--lengths", "2048", "--depths", "1"]),
        ('lengths = [2048.0]\ndepths = [5]', ["--lengths", "2048", "--depths", "5%"]),
        ('lengths = "1k-4k"\ndepths = [-0.0, 50]', ["--lengths", "1k-4k", "--depths", "0,50"]),
        (
            'lengths = "1k"\ndepths = 3\nsamples_per_cell = 2\nseed = 7\nhaystack = "noise"\n'
            'haystack_per_sample = true\nchat_template = "off"\nanswer_budget = 16\ngenerate = true\n'
            'rope_scaling = "yarn"',
            [
                "--lengths", "1k", "--depths", "3", "--samples", "2", "--seed", "7", "--haystack", "noise",
                "--haystack-per-sample", "--chat-template", "off", "--answer-budget", "16", "--generate",
                "--rope-scaling", "yarn",
            ],
        ),
        (
            'lengths = "1k"\ndepths = 3\n[needle]\nneedle = "The code is blue."\nquestion = "Which code?"\n'
            'answer = "blue"',
            ["--lengths", "1k", "--depths", "3", "--needle", "The code is blue.", "--question", "Which code?",
             "--answer", "blue"],
        ),
        (
            'lengths = "1k"\ndepths = 3\n[needle]\nneedle = "The code is blue."\nquestion = "Which code?"\n'
            'answer = "blue"\nanswer_prefix = "The code is"',
            ["--lengths", "1k", "--depths", "3", "--needle", "The code is blue.", "--question", "Which code?",
             "--answer", "blue", "--answer-prefix", "The code is"],
        ),
        (
            'lengths = "1k"\ndepths = 3\nneedle = { answer_prefix = "It is" }',
            ["--lengths", "1k", "--depths", "3", "--answer-prefix", "It is"],
        ),
    ],
)  # fmt: skip
def test_file_fields_build_the_spec_of_the_equivalent_niah_options(
    fields: str, options: list[str], captured: Captured
) -> None:
    task = parse_task_file(f'format = 1\ntask = "niah"\n{fields}\n', "t.toml")
    assert task.spec.fingerprint() == spec_of(captured, NiahSpec, *options).fingerprint()


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ("", []),
        ('probes = "p2,factsum"', ["--probes", "p2,factsum"]),
        ('probes = ["P3", "counterfactual", "p3"]', ["--probes", "unanswerable,counterfactual"]),
        ('lengths = [2048, "4k"]\ndepths = [100, 0]', ["--lengths", "2k,4k", "--depths", "0,100"]),
        (
            'lengths = "1k-4k"\ndepths = "0,50"\nsamples_per_cell = 3\nseed = 9\nmode = "forced"\n'
            'haystack = "noise"\nchat_template = "off"\nrope_scaling = "dynamic"\njudge = "rule"',
            [
                "--lengths", "1k-4k", "--depths", "0,50", "--samples", "3", "--seed", "9",
                "--mode", "forced", "--haystack", "noise", "--chat-template", "off",
                "--rope-scaling", "dynamic", "--judge", "rule",
            ],
        ),
    ],
)  # fmt: skip
def test_halluc_file_fields_build_the_spec_of_the_equivalent_halluc_options(
    fields: str, options: list[str], captured: Captured
) -> None:
    task = parse_task_file(f"{HALLUC}{fields}\n", "t.toml")
    expected = spec_of(captured, HallucSpec, *options)
    assert task.spec == expected and task.spec.fingerprint() == expected.fingerprint()


def test_a_halluc_file_s_dataset_and_judge_paths_are_read_from_where_diffbench_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qa.jsonl").write_text('{"context": "The bridge is red.", "question": "Colour?"}\n')
    (tmp_path / "nli").mkdir()
    task = parse_task_file(f'{HALLUC}dataset = "qa.jsonl"\njudge = "nli:nli"\n', "t.toml")
    expected = spec_of(captured, HallucSpec, "--dataset", "qa.jsonl", "--judge", "nli:nli")
    assert task.spec == expected
    assert isinstance(task.spec, HallucSpec) and task.spec.probes == ["dataset"]
    assert task.spec.dataset == str(tmp_path / "qa.jsonl") and task.spec.dataset_fingerprint
    # the dataset's content is part of the spec: another file, another fingerprint
    (tmp_path / "qa.jsonl").write_text('{"context": "The bridge is blue."}\n')
    assert parse_task_file(f'{HALLUC}dataset = "qa.jsonl"\n', "t.toml").spec.fingerprint() != (
        task.spec.fingerprint()
    )


def test_run_dispatches_a_halluc_file_to_the_halluc_runner_with_the_files_models_and_engine(
    tmp_path: Path, captured: Captured
) -> None:
    assert invoke("run", str(TASKS / "halluc-probes.toml")).exit_code == 0
    call = captured.calls.pop()
    assert call["spec"] == load_task_file(TASKS / "halluc-probes.toml").spec
    assert call["models"] == ["zoo:baseline", "zoo:diff", "zoo:dex"]
    path = write(tmp_path, HALLUC + 'models = ["a"]\nprobes = "p1"\n[engine]\nchunk_tokens = 256\n')
    result = invoke("run", str(path), "-m", "b", "--out", str(tmp_path / "o"), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    call = captured.calls.pop()
    assert (call["models"], call["out"], call["device"], call["json"]) == (["b"], tmp_path / "o", "cpu", True)
    assert call["options"].chunk_tokens == 256 and call["spec"].probes == ["factsum"]
    assert captured.calls == []


def test_run_adds_the_attention_pass_from_the_file_or_the_command_line(
    tmp_path: Path, captured: Captured
) -> None:
    plain, with_attn = write(tmp_path, MINIMAL), tmp_path / "attn.toml"
    with_attn.write_text(MINIMAL + "attn = true\n")
    for path, flags, expected in [(plain, [], False), (plain, ["--attn"], True), (with_attn, [], True)]:
        assert invoke("run", str(path), "-m", "x", *flags).exit_code == 0
        assert captured.calls.pop()["attn"] is expected
    halluc = write(tmp_path, HALLUC + "attn = true\n", "halluc.toml")
    assert invoke("run", str(halluc), "-m", "x").exit_code == 0
    assert captured.calls.pop()["attn"] is True
    # attn is how the run goes on, not what it measures: the spec is the same
    assert load_task_file(with_attn).spec == load_task_file(plain).spec


def test_a_needle_instruction_in_the_file_is_used() -> None:
    spec = parse_task_file(MINIMAL + '[needle]\ninstruction = "Read this."\n', "t.toml").spec
    assert isinstance(spec, NiahSpec) and spec.needle.instruction == "Read this."
    assert spec.needle.needle == NiahSpec.model_fields["needle"].default.needle  # still the magic number


def test_run_takes_models_from_the_command_line_or_else_the_file(captured: Captured) -> None:
    assert invoke("run", str(TASKS / "smoke.toml")).exit_code == 0
    assert captured.calls[-1]["models"] == ["smollm2"]
    assert invoke("run", str(TASKS / "smoke.toml"), "--model", "a", "-m", "b").exit_code == 0
    assert captured.calls[-1]["models"] == ["a", "b"]
    assert captured.calls[-1]["spec"] == load_task_file(TASKS / "smoke.toml").spec


def test_run_merges_the_files_engine_table_with_command_line_overrides(
    tmp_path: Path, captured: Captured
) -> None:
    path = write(tmp_path, MINIMAL + "[engine]\nprefix_sharing = false\nchunk_tokens = 512\nbatch_size = 2\n")
    assert invoke("run", str(path), "-m", "x").exit_code == 0
    options = captured.calls[-1]["options"]
    assert (options.prefix_sharing, options.chunk_tokens, options.batch_size) == (False, 512, 2)
    assert options.max_memory_bytes is None
    result = invoke(
        "run", str(path), "-m", "x", "--max-memory", "8GB", "--prefix-sharing", "--batch-size", "3"
    )
    assert result.exit_code == 0, result.stderr
    options = captured.calls[-1]["options"]
    assert (options.prefix_sharing, options.chunk_tokens, options.batch_size) == (True, None, 3)
    assert options.max_memory_bytes == 8 * 2**30
    line = one_error_line(invoke("run", str(path), "-m", "x", "--max-memory", "8GB", "--chunk-tokens", "64"))
    assert "--max-memory and --chunk-tokens both set the chunk size" in line


# ----------------------------------------------------------------------------- a run end to end


def test_run_smoke_end_to_end_writes_the_records_of_its_spec(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    result = invoke(
        "run", str(TASKS / "smoke.toml"), "--model", str(tiny_llama_dir), "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["directory"] == str(out)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["sample_id"] for r in records} == {
        f"niah/{length}/{depth}/0" for length in (1024, 2048) for depth in (0, 50, 100)
    }
    assert all(r["model"] == "tiny-llama" and r["prompt_tokens"] == r["target_length"] - 32 for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    spec = load_task_file(TASKS / "smoke.toml").spec
    assert manifest["status"] == "complete"
    assert RunManifest.model_validate(manifest).spec.model_copy(update={"haystack_fingerprint": ""}) == spec
    # The same command again resumes the finished run: nothing new.
    again = invoke("run", str(TASKS / "smoke.toml"), "--model", str(tiny_llama_dir), "--out", str(out))
    assert again.exit_code == 0, again.stderr
    assert len((out / "records.jsonl").read_text().splitlines()) == len(records)
    # --attn on the finished run adds the attention pass of its own samples, and no records
    attn = invoke(
        "run", str(TASKS / "smoke.toml"), "--model", str(tiny_llama_dir), "--out", str(out), "--attn"
    )
    assert attn.exit_code == 0, attn.stderr
    analysed = (out / "attention" / "attention_samples.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["sample_id"] for line in analysed) == sorted(
        r["sample_id"] for r in records
    )
    assert len((out / "records.jsonl").read_text().splitlines()) == len(records)


def test_run_of_a_halluc_file_end_to_end_is_the_halluc_commands_run(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """The file's run, then `halluc` with the equivalent options on the same --out: same spec, so it
    resumes the finished run and adds nothing."""
    path = write(
        tmp_path, HALLUC + 'probes = "factqa"\nlengths = "2k"\nsamples_per_cell = 2\nmode = "forced"\n'
    )
    out = tmp_path / "probes"
    result = invoke("run", str(path), "--model", str(tiny_llama_dir), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "hallucination probes" in result.stdout and "factqa (forced)" in result.stdout
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["task"] for r in records} == {"halluc/factqa"}
    manifest = RunManifest.model_validate_json((out / "manifest.json").read_text())
    assert manifest.status == "complete" and (out / "summary.json").is_file()
    spec = load_task_file(path).spec
    assert manifest.spec.model_copy(update={"haystack_fingerprint": ""}) == spec
    options = ["--probes", "factqa", "--lengths", "2k", "--samples", "2", "--mode", "forced"]
    again = invoke("halluc", "--model", str(tiny_llama_dir), *options, "--out", str(out), "--device", "cpu")
    assert again.exit_code == 0, again.stderr
    assert len((out / "records.jsonl").read_text().splitlines()) == len(records)


# ----------------------------------------------------------------------------- errors

ERRORS = [
    # (id, file text or None for no file, the error's expected phrases after "{path}: ")
    ("missing-file", None, "no such task file"),
    ("toml-syntax", MINIMAL + "samples_per_cell = \n", "TOML syntax error at line 5, column 20"),
    ("toml-unterminated", 'format = 1\ntask = "niah\n', "TOML syntax error at line 2"),
    (
        "unknown-field",
        MINIMAL.replace("lengths", "lenghts"),
        "unknown field 'lenghts' (did you mean 'lengths'?)",
    ),
    ("unknown-nested-field", MINIMAL + "[needle]\nanwser = 1\n", "unknown field 'needle.anwser'"),
    ("engine-outside-its-table", MINIMAL + 'max_memory = "8GB"\n', "unknown field 'max_memory'"),
    (
        "wrong-type",
        MINIMAL + 'samples_per_cell = "5"\n',
        "field 'samples_per_cell' should be a valid integer",
    ),
    ("wrong-type-bool", MINIMAL + "generate = 1\n", "field 'generate' should be a valid boolean"),
    (
        "out-of-range",
        MINIMAL + "answer_budget = 0\n",
        "field 'answer_budget' should be greater than or equal",
    ),
    ("not-a-choice", MINIMAL + 'chat_template = "yes"\n', "field 'chat_template' should be 'auto', 'on' or"),
    ("not-a-table", MINIMAL + 'engine = "fast"\n', "field 'engine' should be a table"),
    ("missing-field", 'format = 1\ntask = "niah"\ndepths = 5\n', "field 'lengths' is missing"),
    ("bad-lengths", MINIMAL.replace('"1k-4k"', '"8k-"'), "field 'lengths': invalid lengths '8k-'"),
    ("bad-lengths-item", MINIMAL.replace('"1k-4k"', "[1024, -5]"), "field 'lengths': invalid length '-5'"),
    ("empty-lengths", MINIMAL.replace('"1k-4k"', "[]"), "field 'lengths' is an empty list"),
    ("bad-depths", MINIMAL.replace("depths = 5", 'depths = "10,x"'), "field 'depths': invalid depth 'x'"),
    (
        "bad-depths-item",
        MINIMAL.replace("depths = 5", "depths = [50, 150]"),
        "field 'depths': item 150 is outside",
    ),
    ("float-depth-count", MINIMAL.replace("depths = 5", "depths = 5.0"), "field 'depths': 5.0 is no count"),
    ("no-room", MINIMAL + "answer_budget = 1024\n", "field 'lengths': length 1024 leaves no room"),
    ("needle-incomplete", MINIMAL + '[needle]\nneedle = "x"\n', "field 'needle': a custom needle needs"),
    (
        "needle-answer",
        MINIMAL + '[needle]\nneedle = "x"\nquestion = "q"\nanswer = "y"\n',
        "does not occur in needle",
    ),
    (
        "engine-memory",
        MINIMAL + '[engine]\nmax_memory = "lots"\n',
        "field 'engine': max_memory 'lots' is not",
    ),
    (
        "engine-chunks",
        MINIMAL + '[engine]\nmax_memory = "8GB"\nchunk_tokens = 64\n',
        "both set the chunk size",
    ),
    (
        "unknown-task",
        MINIMAL.replace('"niah"', '"multi_needle"'),
        "field 'task': unknown task kind 'multi_needle'",
    ),
    ("task-typo", MINIMAL.replace('"niah"', '"NIAH"'), "unknown task kind 'NIAH' (did you mean 'niah'?)"),
    ("no-task", MINIMAL.replace('task = "niah"\n', ""), "field 'task' is missing"),
    (
        "format-version",
        MINIMAL.replace("format = 1", "format = 2"),
        "field 'format': format 2 is not supported",
    ),
    ("no-format", MINIMAL.replace("format = 1\n", ""), "field 'format' is missing"),
    ("format-type", MINIMAL.replace("format = 1", 'format = "1"'), "field 'format' should be a whole number"),
    ("no-models", MINIMAL, "names no models: pass --model"),
    # task = "halluc": halluc's own refusals, naming the field
    ("halluc-probe", HALLUC + 'probes = "factsum,p9"\n', "field 'probes': unknown probe 'p9' in probes: use"),
    ("halluc-probes-empty", HALLUC + "probes = []\n", "field 'probes' is an empty list"),
    ("halluc-probes-item", HALLUC + 'probes = ["p1", 2]\n', "field 'probes': item 2 is not a probe name"),
    ("halluc-mode", HALLUC + 'mode = "sample"\n', "field 'mode' should be 'generate', 'forced' or 'both'"),
    ("halluc-samples", HALLUC + "samples_per_cell = 0\n", "field 'samples_per_cell' should be greater"),
    ("halluc-dataset", HALLUC + 'dataset = "none.jsonl"\n', "field 'dataset': dataset 'none.jsonl': no such"),
    ("halluc-judge", HALLUC + 'judge = "gpt4"\n', "field 'judge': unknown judge 'gpt4': use 'rule'"),
    ("halluc-niah-field", HALLUC + "needles = 2\n", "unknown field 'needles'"),
    ("halluc-lengths", HALLUC + 'lengths = "4k-1k"\n', "field 'lengths': invalid lengths '4k-1k'"),
    ("halluc-typo", HALLUC.replace('"halluc"', '"hallucination"'), "(did you mean 'halluc'?)"),
]


@pytest.mark.parametrize(("name", "text", "phrase"), ERRORS, ids=[e[0] for e in ERRORS])
def test_a_bad_task_file_is_one_error_line_naming_the_file_and_field(
    name: str, text: str | None, phrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if text is not None:
        (tmp_path / "tasks").mkdir()
        (tmp_path / "tasks" / "x.toml").write_text(text, encoding="utf-8")
    line = one_error_line(invoke("run", "tasks/x.toml"))  # the path as typed, relative
    assert line.startswith("error: tasks/x.toml: "), line
    assert phrase in line, line


def test_a_directory_an_unreadable_file_and_non_utf8_bytes_are_errors_naming_the_file(tmp_path: Path) -> None:
    assert "is a directory" in one_error_line(invoke("run", str(tmp_path)))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'format = 1\ntask = "\xff"\n')
    assert f"{binary}: is not UTF-8 text (byte 19)" in one_error_line(invoke("run", str(binary)))


def test_the_file_s_models_cannot_be_empty_strings(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'models = ["smollm2", ""]\n')
    assert "field 'models[1]': string should have at least 1 character" in one_error_line(
        invoke("run", str(path))
    )


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'seed = "x"\ngenerate = "y"\nbogus = 1\n')
    line = one_error_line(invoke("run", str(path)))
    assert "unknown field 'bogus'" in line and "(and 2 more problems)" in line


def test_deeply_nested_toml_is_a_syntax_error_not_a_recursion_error() -> None:
    with pytest.raises(UsageError, match=r"^t.toml: TOML syntax error: arrays or tables nested too deeply$"):
        parse_task_file(MINIMAL + "x = " + "[" * 5000, "t.toml")


# ----------------------------------------------------------------------------- fuzzing the loader

EXAMPLES = {
    "near_valid_documents": 500,
    "damaged_documents": 300,
    "any_text": 500,
    "toml_like_text": 400,
    "any_bytes": 200,
}
ran: Counter[str] = Counter()
SOURCE = "tasks/fuzz.toml"


def fuzz(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=EXAMPLES[name],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def valid_spec_or_usage_error(data: bytes | str, *, names_a_field: bool = False) -> TaskFile | None:
    """parse_task_file checked against its promises; None when it (correctly) refused the input."""
    try:
        task = parse_task_file(data, SOURCE)
    except UsageError as error:
        message = str(error)
        assert len(message.splitlines()) == 1 and message.strip() == message, repr(message)
        assert message.startswith(f"{SOURCE}: "), message
        if names_a_field:
            # the name is quoted as Python's repr quotes it: "'" for a name holding a single quote
            assert re.match(rf"{re.escape(SOURCE)}: (field |unknown field )['\"]", message), message
        return None
    spec = task.spec
    assert task.task in TASK_KINDS and isinstance(spec, NiahSpec | HallucSpec)
    assert type(spec).model_validate(spec.model_dump()) == spec
    assert spec.lengths and len(spec.lengths) <= MAX_GRID
    assert all(type(v) is int and 1 <= v <= MAX_LENGTH for v in spec.lengths)
    assert all(a < b for a, b in itertools.pairwise(spec.lengths))
    assert all(type(v) is float and 0.0 <= v <= 100.0 and math.copysign(1, v) > 0 for v in spec.depths)
    assert all(a < b for a, b in itertools.pairwise(spec.depths))
    assert spec.samples_per_cell >= 1
    if isinstance(spec, NiahSpec):
        assert spec.lengths[0] > spec.answer_budget >= 1 and spec.needle.answer in spec.needle.needle
    assert all(isinstance(m, str) and m for m in task.models)
    assert task.engine.max_memory is None or task.engine.chunk_tokens is None
    return task


# TOML written by hand (no writer in the standard library): every generated document is valid TOML.


def toml_string(text: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any], sections: bool) -> str:
    """Top-level keys as lines; tables as [sections] (or inline when ``sections`` is False)."""
    lines = [
        f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not (sections and isinstance(v, dict))
    ]
    for key, table in data.items():
        if sections and isinstance(table, dict):
            lines.append(f"[{toml_key(key)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(
    st.booleans(),
    INT64,
    st.integers(min_value=-5, max_value=300),
    st.floats(),
    st.text(max_size=12),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
LENGTH_TEXT = st.one_of(
    st.sampled_from(
        ["1k-4k", "1k", "8k-64k", "4096,12k", "1k:4k:1k", "64", "33", "0", "1.5k", "", " ", "5m"]
    ),
    st.text(alphabet="0123456789kKm.,:- ", max_size=12),
)
length_item = st.one_of(
    st.integers(min_value=-10, max_value=5000),
    INT64,
    st.floats(),
    st.sampled_from(["1k", "2K", "x", "1k-2k", ""]),
)
DEPTH_TEXT = st.one_of(
    st.sampled_from(["5", "1", "0", "101", "0,50,100", "50%", "-5", "nan", ""]),
    st.text(alphabet="0123456789.,% -", max_size=10),
)
depth_item = st.one_of(st.integers(min_value=-5, max_value=150), st.floats(), st.text(max_size=4))
# Valid values of every field: a document of these alone must load.
custom_needles = st.sampled_from(
    [
        {"needle": "The code is blue.", "question": "Which code?", "answer": "blue"},
        {"needle": "{value} is it.", "question": "What?", "answer": "{value}", "answer_prefix": "It is"},
        {"needle": "", "question": "", "answer": "", "instruction": ""},
    ]
)
VALID: dict[str, Any] = {
    "format": st.just(FORMAT_VERSION),
    "task": st.just("niah"),
    "models": st.one_of(
        st.lists(st.sampled_from(["smollm2", "./ckpt", "org/name"]), max_size=3), st.just("x")
    ),
    "lengths": st.one_of(
        st.sampled_from(["1k-4k", "8k-64k", "4096,12k", "1k:4k:1k", "64", " 2k ", "1.5k", "4m"]),
        st.lists(st.one_of(st.integers(64, 10**5), st.sampled_from(["1k", "2K", " 3k", "1.5k"])), min_size=1),
        st.integers(64, MAX_LENGTH),
    ),
    "depths": st.one_of(
        st.integers(1, 101),
        st.sampled_from(["5", "0,50,100", "50%", " 3", "0.5,99.5"]),
        st.lists(st.one_of(st.integers(0, 100), st.floats(0, 100)), min_size=1, max_size=6),
    ),
    "samples_per_cell": st.integers(1, 10),
    "seed": INT64,
    "haystack": st.sampled_from(["prose", "noise", "essays", "./h.txt", ""]),
    "haystack_per_sample": st.booleans(),
    "needle": st.one_of(
        st.fixed_dictionaries(
            {}, optional={"answer_prefix": st.text(max_size=5), "instruction": st.text(max_size=5)}
        ),
        custom_needles,
    ),
    "chat_template": st.sampled_from(["auto", "on", "off"]),
    "answer_budget": st.integers(1, 63),
    "generate": st.booleans(),
    "rope_scaling": st.sampled_from(["none", "dynamic", "yarn"]),
    "engine": st.fixed_dictionaries(
        {},
        optional={
            "prefix_sharing": st.booleans(),
            "max_memory": st.sampled_from(["8GB", "1.5g", "512MiB", "800m"]),
            "batch_size": st.integers(1, 9),
        },
    ),
}
# Near misses and plain wrong values for each field.
LENGTH_TEXT = st.one_of(
    st.sampled_from(["0", "33", "1e3", "", " ", "5m", "64k-8k", "1k:2k", "1k,,2k", "-5", "x"]),
    st.text(alphabet="0123456789kKm.,:- ", max_size=12),
)
length_item = st.one_of(
    st.integers(min_value=-10, max_value=5000), INT64, st.floats(), st.sampled_from(["x", "1k-2k", "", "0"])
)
DEPTH_TEXT = st.one_of(
    st.sampled_from(["0", "101", "-5", "nan", "", "10,x", "101%", "²"]),
    st.text(alphabet="0123456789.,% -", max_size=10),
)
depth_item = st.one_of(st.integers(min_value=-5, max_value=150), st.floats(), st.text(max_size=4))
WRONG: dict[str, Any] = {
    "format": st.one_of(st.integers(-2, 3), st.sampled_from(["1", 1.0, True])),
    "task": st.sampled_from(["NIAH", "niah ", "multi_needle", "hallucination", "", 1]),
    "models": st.one_of(st.lists(st.sampled_from(["smollm2", ""]), min_size=1, max_size=3), st.just("")),
    "lengths": st.one_of(LENGTH_TEXT, st.lists(length_item, max_size=5), st.integers(-5, 63)),
    "depths": st.one_of(DEPTH_TEXT, st.lists(depth_item, max_size=5), st.integers(-2, 120), st.floats()),
    "samples_per_cell": st.one_of(st.integers(-1, 0), st.sampled_from(["5", 5.0, True])),
    "seed": st.sampled_from(["0", 1.5, False]),
    "haystack": st.sampled_from([1, ["prose"], True]),
    "haystack_per_sample": st.sampled_from([1, "true", "yes"]),
    "needle": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "needle": st.sampled_from(["The code is blue.", "x"]),
                "question": st.sampled_from(["Which code?", 1]),
                "answer": st.sampled_from(["blue", "red"]),
                "anwser": st.just("blue"),
            },
        ),
        st.just("The code is blue."),
    ),
    "chat_template": st.sampled_from(["sometimes", "On", True, ""]),
    "answer_budget": st.one_of(st.integers(-1, 0), st.integers(64, 10**6)),
    "generate": st.sampled_from([1, "false", None]),
    "rope_scaling": st.sampled_from(["linear", "Yarn", 0]),
    "engine": st.one_of(
        st.fixed_dictionaries(
            {"chunk_tokens": st.integers(-1, 9000)},
            optional={
                "max_memory": st.sampled_from(["8GB", "lots", "0", "", "1e9"]),
                "batch_size": st.integers(-1, 2),
                "prefix_sharing": st.sampled_from([True, 1, "no"]),
                "chunks": st.integers(),
            },
        ),
        st.sampled_from(["fast", 1, []]),
    ),
}
REQUIRED = ("format", "task", "lengths", "depths")
MISSPELT = st.sampled_from(
    ["lenghts", "samples", "Depths", "model", "answer-budget", "max_memory", "néedle", "formats", "task "]
)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> str:
    """A valid task file (required fields, a random subset of the optional ones), then 0 to 3 mistakes:
    a wrong or arbitrary value, a field left out, an unknown or misspelt field."""
    data: dict[str, Any] = {name: draw(VALID[name]) for name in REQUIRED}
    # sorted: a set's iteration order follows PYTHONHASHSEED, and the order of the draws below decides
    # the document, so an unsorted set made the "same" derandomized examples differ from run to run
    for name in sorted(draw(st.sets(st.sampled_from([n for n in VALID if n not in REQUIRED]), max_size=6))):
        data[name] = draw(VALID[name])
    for _ in range(draw(st.integers(0, 3))):
        mistake = draw(st.sampled_from(["wrong", "wrong", "anything", "leave out", "unknown"]))
        name = draw(st.sampled_from(list(VALID)))
        if mistake == "wrong":
            data[name] = draw(WRONG[name])
        elif mistake == "anything":
            data[name] = draw(toml_values)
        elif mistake == "leave out":
            data.pop(name, None)
        else:
            data[draw(st.one_of(MISSPELT, st.text(max_size=8)))] = draw(st.one_of(scalars, toml_values))
    data = {k: v for k, v in data.items() if v is not None}  # TOML has no null: None means "left out"
    document = toml_document(data, sections=draw(st.booleans()))
    assert taskfile.tomllib.loads(document).keys() == data.keys()  # the generator writes valid TOML
    return document


@fuzz("near_valid_documents")
@given(near_valid_documents())
@example(MINIMAL)
@example(MINIMAL + "[engine]\nchunk_tokens = 1\n")
@example(MINIMAL.replace('"1k-4k"', "[1, 33]") + "answer_budget = 1\n")
@example(MINIMAL.replace("depths = 5", "depths = [nan]"))
@example(MINIMAL.replace("depths = 5", "depths = [inf, -0.0]"))
@example(MINIMAL.replace('"1k-4k"', "[9223372036854775807]"))
@example(MINIMAL.replace("depths = 5", "depths = 9223372036854775807"))
@example(MINIMAL + "needle = { needle = '{value}', question = 'q', answer = '{value}' }\n")
def test_near_valid_documents_load_to_a_valid_spec_or_name_the_field(document: str) -> None:
    ran["near_valid_documents"] += 1
    valid_spec_or_usage_error(document, names_a_field=True)


@st.composite
def damaged_documents(draw: st.DrawFn) -> str:
    """A valid document with characters inserted, deleted or replaced: mostly TOML syntax errors."""
    text = draw(st.sampled_from([MINIMAL, (TASKS / "smoke.toml").read_text(), TASK_GUIDE.read_text()]))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.text(alphabet="\"'[]{}=,.#\n \\kx01", max_size=3)) + text[at + cut :]
    return text


@fuzz("damaged_documents")
@given(damaged_documents())
def test_damaged_documents_load_or_raise_a_usage_error(document: str) -> None:
    ran["damaged_documents"] += 1
    valid_spec_or_usage_error(document)


@fuzz("any_text")
@given(st.text(max_size=200))
@example("")
@example("\x00")
@example("a = " + "[" * 3000)
@example("a = " + "{b = " * 3000)
@example("format = 1" + "0" * 5000)
@example('format = 1\ntask = "niah"\nlengths = "1k"\ndepths = 1\n"\\u0000" = 1\n')
def test_any_text_loads_or_raises_a_usage_error(text: str) -> None:
    ran["any_text"] += 1
    valid_spec_or_usage_error(text)


TOML_ALPHABET = string.ascii_lowercase[:6] + "0123456789 =\"'[]{},.#\n-_:k" + "ftnisahgdepl"


@fuzz("toml_like_text")
@given(st.text(alphabet=TOML_ALPHABET, max_size=120).map(lambda t: MINIMAL[: len(t) % 60] + t))
def test_toml_like_text_loads_or_raises_a_usage_error(text: str) -> None:
    ran["toml_like_text"] += 1
    valid_spec_or_usage_error(text)


@fuzz("any_bytes")
@given(st.binary(max_size=120))
@example(b"\xff")
@example(MINIMAL.encode() + b"# \xc3\n")
def test_any_bytes_load_or_raise_a_usage_error(data: bytes) -> None:
    ran["any_bytes"] += 1
    valid_spec_or_usage_error(data)


# Draws 80 near-valid documents as the fuzz test does and prints their digest.
DIGEST_SCRIPT = """
import hashlib, sys
sys.path.insert(0, "tests")
import test_taskfile as t
from hypothesis import given, settings

seen = []

@settings(t.fuzz("near_valid_documents"), max_examples=80)
@given(t.near_valid_documents())
def collect(document):
    seen.append(document)

collect()
print(len(seen), hashlib.sha256(chr(0).join(seen).encode()).hexdigest())
"""


def test_the_fuzz_examples_are_the_same_under_every_hash_seed() -> None:
    """derandomize fixes hypothesis' choices, but a strategy that iterates a set would still draw
    other documents under another PYTHONHASHSEED; two seeds must give the same documents."""
    import os
    import subprocess
    import sys

    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST_SCRIPT],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1, digests
    assert next(iter(digests)).startswith("80 ")


def test_zz_report_how_many_fuzz_cases_ran(capsys: pytest.CaptureFixture[str]) -> None:
    """Last in this module: print the cases run above (the closing note of issue 9 quotes the sum)."""
    parts = ", ".join(f"{name} {count}" for name, count in sorted(ran.items()))
    with capsys.disabled():
        print(f"\ntaskfile fuzz: {sum(ran.values())} cases ran ({parts or 'none selected'})")
    for name, count in ran.items():
        assert count >= EXAMPLES[name], (name, count)
