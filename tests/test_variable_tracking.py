"""Variable tracking (--kind vartrack): chains of assignments, token-exact, scored per variable."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_context import needle_offset, samples_of
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.engine.runner import record_for
from diffbench.engine.teacher_forcing import AnswerScore
from diffbench.report.summary import model_summary, recall_by_hop, records_frame
from diffbench.specs import NiahSpec, Record, Sample
from diffbench.tasks.options import COMMAND_LINE, NiahOptions, command_line_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# sha256 over every sample id and its input_ids for GOLDEN on the session's trained tokenizer (whose
# digest test_multi_needle.py checks). An intended change to the generator changes this: check the new
# samples, then update it.
GOLDEN = {"lengths": "1024,1536", "depths": "0,50,100", "samples_per_cell": 2}
GOLDEN_HASH = "940688d365a37981f037f451576021fa742ea9292fabd1eb25f0b98727c16d94"


def vartrack_spec(**options: Any) -> NiahSpec:
    values = {"lengths": "1024", "depths": "0,25,50,75,100", "samples_per_cell": 2, "kind": "vartrack"}
    return command_line_options(NiahOptions, {**values, **options}).to_spec(COMMAND_LINE)


@pytest.fixture(scope="module")
def grid(tiny_tokenizer: Any) -> list[Sample]:
    return samples_of(vartrack_spec(), tiny_tokenizer)


def asked_chain(sample: Sample) -> list[Any]:
    assert sample.needles is not None
    return sorted((n for n in sample.needles if n.query is not None), key=lambda n: n.query)


def decoys(sample: Sample) -> list[Any]:
    assert sample.needles is not None
    return [n for n in sample.needles if n.query is None]


# ----------------------------------------------------------------------------- options


def test_the_defaults_are_two_chains_of_four_hops_scored_by_decoding() -> None:
    spec = vartrack_spec()
    assert (spec.kind, spec.needles, spec.hops, spec.queries) == ("vartrack", 2, 4, 5)
    assert spec.generate and spec.multi_needle
    assert spec.answer_budget == 60  # 12 tokens per variable
    shorter = vartrack_spec(hops=2, needles=1)
    assert (shorter.needles, shorter.hops, shorter.queries, shorter.answer_budget) == (1, 2, 3, 36)
    assert shorter.fingerprint() != spec.fingerprint()


VT = ["--kind", "vartrack"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([*VT, "--queries", "2"], "--kind vartrack asks every variable of one chain: leave out --queries"),
        ([*VT, "--values", "words"], "--kind vartrack assigns numbers of its own: leave out --values"),
        ([*VT, "--needle", "N 4.", "--question", "N?", "--answer", "4"], "hides assignment statements"),
        ([*VT, "--needles", "65"], "--needles 65 is out of range for --kind vartrack: use 1 to 64"),
        (["--hops", "3"], "--hops sets the chain length of --kind vartrack: add --kind vartrack"),
        (["--needle-style", "literal", *VT], "hides character needles of its own, which --kind"),
        ([*VT, "--hops", "0"], "--hops"),
        ([*VT, "--answer-budget", "10"], "5 variables of the asked chain take"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tiny_llama_dir: Path, extra: list[str], message: str) -> None:
    args = ["niah", "-m", str(tiny_llama_dir), "--lengths", "1k", "--depths", "50", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_task_file_takes_the_kind_and_the_hops(tmp_path: Path) -> None:
    from diffbench.errors import UsageError
    from diffbench.taskfile import load_task_file

    path = tmp_path / "vt.toml"
    text = 'format = 1\ntask = "niah"\nlengths = "8k"\ndepths = 3\nkind = "vartrack"\n'
    path.write_text(text + "hops = 2\nneedles = 3\n")
    spec = load_task_file(path).spec
    assert isinstance(spec, NiahSpec) and (spec.kind, spec.hops, spec.needles, spec.queries) == (
        "vartrack",
        2,
        3,
        3,
    )
    path.write_text(text + "queries = 2\n")
    with pytest.raises(UsageError, match="field 'needles': kind vartrack asks every variable of one chain"):
        load_task_file(path)


# ----------------------------------------------------------------------------- samples


def test_every_prompt_is_token_exact_and_holds_every_statement_once(
    grid: list[Sample], tiny_tokenizer: Any
) -> None:
    assert len(grid) == 5 * 2
    for sample in grid:
        assert len(sample.input_ids) == sample.prompt_tokens == 1024 - 60
        assert sample.needles is not None and len(sample.needles) == 2 * 5
        spans = sorted(n.span for n in sample.needles)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no overlap
        for needle in sample.needles:
            text = tiny_tokenizer.decode(sample.input_ids[needle.span[0] : needle.span[1]]).strip()
            source = needle.key if needle.key.isdigit() else f"VAR {needle.key}"
            assert text == f"VAR {needle.value} = {source}."
        names = [n.value for n in sample.needles]
        assert len(set(names)) == 10 and all(re.fullmatch(r"[A-Z]{5}", name) for name in names)


def test_each_chain_reads_in_document_order_from_its_value(grid: list[Sample]) -> None:
    for sample in grid:
        chain = asked_chain(sample)
        assert [n.query for n in chain] == [0, 1, 2, 3, 4]
        assert chain[0].key == sample.key and re.fullmatch(r"\d{5}", sample.key)
        assert all(later.key == earlier.value for earlier, later in itertools.pairwise(chain))
        assert all(a.span[0] < b.span[0] for a, b in itertools.pairwise(chain))  # assigned in order
        assert chain[0].span == sample.needle_span and chain[0].depth == sample.depth
        assert all(n.depth >= sample.depth for n in chain)  # the depth is where the chain starts
        decoy = sorted(decoys(sample), key=lambda n: n.span[0])
        assert decoy[0].key.isdigit() and decoy[0].key != sample.key  # a value of its own
        assert all(later.key == earlier.value for earlier, later in itertools.pairwise(decoy))
        assert f"value {sample.key}," in sample.question and sample.key not in sample.answer


def test_the_chain_starts_within_one_sentence_of_its_depth(grid: list[Sample], tiny_tokenizer: Any) -> None:
    for sample in grid:
        offset, sentence, _ = needle_offset(tiny_tokenizer, sample)
        assert offset <= sentence, sample.sample_id


def test_the_answer_lists_the_chain_and_each_variable_is_scored_alone(
    grid: list[Sample], tiny_tokenizer: Any
) -> None:
    for sample in grid:
        names = [n.value for n in asked_chain(sample)]
        assert sample.answers == names and sample.answer == ", ".join(names)
        assert tiny_tokenizer.decode(sample.answer_ids) == " " + ", ".join(names)
        assert sample.answer_value_spans is not None
        decoded = [
            tiny_tokenizer.decode(sample.answer_ids[a:b]).strip() for a, b in sample.answer_value_spans
        ]
        assert decoded == names
        assert sample.sample_id.startswith("niah-vartrack-n2-r5-numbers/1024/")


def test_samples_are_seeded_and_the_same_in_every_tokenizer(
    grid: list[Sample], tiny_tokenizer: Any, tiny_chat_tokenizer: Any
) -> None:
    again = samples_of(vartrack_spec(), tiny_tokenizer)
    assert [s.model_dump() for s in again] == [s.model_dump() for s in grid]
    chat = samples_of(vartrack_spec(), tiny_chat_tokenizer)

    def logical(samples: list[Sample]) -> list[Any]:
        return [[(n.key, n.value, n.depth, n.query) for n in s.needles or []] for s in samples]

    assert logical(chat) == logical(grid)
    assert [s.prompt_sha256 for s in chat] != [s.prompt_sha256 for s in grid]
    other = samples_of(vartrack_spec(seed=1), tiny_tokenizer)
    assert not set(s.key for s in other) & set(s.key for s in grid)


def test_samples_match_the_golden_hash(tiny_tokenizer: Any) -> None:
    hasher = hashlib.sha256()
    for sample in samples_of(vartrack_spec(**GOLDEN), tiny_tokenizer):
        hasher.update(sample.sample_id.encode("utf-8"))
        hasher.update(struct.pack(f"<{len(sample.input_ids)}q", *sample.input_ids))
    assert hasher.hexdigest() == GOLDEN_HASH


# ----------------------------------------------------------------------------- scoring


def scored_record(sample: Sample, spec: NiahSpec, tokenizer: Any, prediction: str) -> Record:
    """The record of a decoded ``prediction`` (teacher-forced figures all wrong: they are not read)."""
    loaded = SimpleNamespace(
        tokenizer=tokenizer,
        entry=SimpleNamespace(name="m", variant="baseline", device="cpu", dtype="float32"),
    )
    tokens = len(sample.answer_ids)
    scored = AnswerScore(
        answer_logprob=-9.0,
        greedy_exact=False,
        generated_ids=tokenizer(prediction, add_special_tokens=False)["input_ids"],
        token_logprobs=(-1.0,) * tokens,
        token_greedy=(False,) * tokens,
    )
    return record_for(loaded, sample, spec, "run", scored, 0.1)  # type: ignore[arg-type]


def test_recall_counts_the_chain_and_wrong_variables_the_decoys(
    grid: list[Sample], tiny_tokenizer: Any
) -> None:
    spec = vartrack_spec()
    sample = grid[3]
    names = [n.value for n in asked_chain(sample)]
    decoy = decoys(sample)[2].value
    full = scored_record(sample, spec, tiny_tokenizer, ", ".join(names) + ".")
    assert full.correct and full.recall == 1.0 and full.ruler_all == 1.0
    assert full.details == {"wrong_variables": []}
    assert full.needles is not None and all(n.retrieved for n in full.needles if n.query is not None)
    partial = scored_record(sample, spec, tiny_tokenizer, f"{names[0]}, {names[1]}, {decoy}, {names[3]}")
    assert not partial.correct and partial.recall == pytest.approx(0.6) and partial.ruler_part == 1.0
    assert partial.details == {"wrong_variables": [decoy]}
    assert partial.needles is not None
    assert [n.retrieved for n in sorted(partial.needles, key=lambda n: n.span) if n.query is not None] == [
        True, True, False, True, False
    ]  # fmt: skip
    glued = scored_record(sample, spec, tiny_tokenizer, f"{names[0]}X {names[1]}")  # not at word bounds
    assert glued.recall == pytest.approx(0.2)
    frame = records_frame([r.model_dump(mode="json") for r in (full, partial, glued)])
    assert recall_by_hop(frame) == {"m": pytest.approx([2 / 3, 1.0, 1 / 3, 2 / 3, 1 / 3])}
    (row,) = model_summary(frame).to_dict(orient="records")
    assert row["wrong_variable_rate"] == pytest.approx(1 / 3) and row["recall"] == pytest.approx(0.6)


def test_a_run_records_every_statement_and_the_summary_counts_wrong_variables(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "niah",
        "--model",
        str(tiny_llama_dir),
        "--lengths",
        "1k",
        "--depths",
        "0,100",
        "--kind",
        "vartrack",
    ]
    result = CliRunner().invoke(app, [*args, "--hops", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    records = [Record.model_validate_json(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record.scoring == "generate" and record.prediction is not None
        assert record.needles is not None and len(record.needles) == 2 * 3
        asked = [n for n in record.needles if n.query is not None]
        assert record.recall == sum(bool(n.retrieved) for n in asked) / 3
        assert record.details is not None
        wrong = record.details["wrong_variables"]
        assert wrong == [n.value for n in record.needles if n.query is None and n.value in record.prediction]
    (model,) = json.loads(result.stdout)["models"]
    rate = sum(bool(r.details and r.details["wrong_variables"]) for r in records) / 2
    assert model["wrong_variable_rate"] == pytest.approx(rate)
    assert len(model["recall_by_hop"]) == 3  # three variables per chain
    report = CliRunner().invoke(app, ["report", str(out), "--format", "markdown"])
    assert report.exit_code == 0, report.stderr
    assert "vartrack (2 chains of 2 hops, one asked)" in report.stdout
    recall = sum(r.recall or 0.0 for r in records) / 2
    assert "| accuracy | 95% CI | recall |" in report.stdout  # multi-needle reports show recall
    assert f"| 1K | 2 | {sum(r.correct for r in records) / 2:.3f} |" in report.stdout
    assert f"] | {recall:.3f} |" in report.stdout
