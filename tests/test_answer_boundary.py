"""The answer-boundary rule: an answer counts only when it ends, in text and under teacher forcing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.engine.runner import fork_hint, record_for
from diffbench.engine.shared_prefill import PromptJob, SharedPrefixEngine
from diffbench.engine.teacher_forcing import AnswerScore, score_and_generate, score_answer
from diffbench.haystack.sources import load_source
from diffbench.models.load import LoadedModel
from diffbench.scoring import answer_ends, contains_answer, ruler_all, ruler_part
from diffbench.specs import (
    LATER_FIELD_DEFAULTS,
    ModelEntry,
    NiahSpec,
    Record,
    RunManifest,
    Sample,
    stable_hash,
)
from diffbench.tasks.niah import generate_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUNAWAY = "3943425555222222555555522222255"  # what zoo:baseline emitted for 3943425


# ----------------------------------------------------------------------------- text


def test_a_gold_string_inside_a_longer_number_or_word_is_not_found() -> None:
    assert not contains_answer(RUNAWAY, "3943425")
    assert contains_answer(RUNAWAY, "3943425", boundary=False)  # RULER's plain substring did count it
    assert not contains_answer("x3943425", "3943425") and not contains_answer("apples", "apple")
    for text in ("3943425", "It is 3943425.", "(3943425)", "39434255, then 3943425", "IS 3943425\n"):
        assert contains_answer(text, "3943425"), text
    # Only letters and digits glue: a gold string with punctuation at its edge ends where it ends.
    assert contains_answer("the answer is paris.5", "Paris.")
    assert contains_answer("id 1f2e-9a is it", "1F2E-9A")
    assert ruler_all(f"{RUNAWAY} and 1234567", ["3943425", "1234567"]) == 0.5
    assert ruler_part(RUNAWAY, ["3943425"]) == 0.0
    assert ruler_part(RUNAWAY, ["3943425"], boundary=False) == 1.0


def test_the_next_token_ends_the_answer_unless_it_glues_on(tiny_tokenizer: Any) -> None:
    value = tiny_tokenizer.encode(" 3943425", add_special_tokens=False)
    for text, ends in ((".", True), (" and", True), ("\n", True), ("5", False), ("x", False)):
        (token, *_rest) = tiny_tokenizer.encode(text, add_special_tokens=False)
        assert answer_ends(tiny_tokenizer, value, token) is ends, text
    assert answer_ends(tiny_tokenizer, value, tiny_tokenizer.eos_token_id)


# ----------------------------------------------------------------------------- teacher forcing


@pytest.fixture(scope="module")
def samples(tiny_tokenizer: Any) -> list[Sample]:
    spec = NiahSpec(lengths=[256, 384], depths=[0.0, 50.0, 100.0], samples_per_cell=1, seed=5)
    return generate_samples(spec, tiny_tokenizer, load_source("prose", 5))


def test_every_path_gives_the_token_greedy_decoding_emits_after_the_answer(
    tiny_llama: Any, samples: list[Sample]
) -> None:
    """One forward, the engine (shared prefix, chunked) and score_and_generate agree on the row after the
    answer, and it is the token generate() emits after prompt + answer."""
    jobs = [PromptJob(s.input_ids, s.answer_ids, fork_hint(s)) for s in samples]
    engine = {done.position: done.score for done in SharedPrefixEngine(tiny_llama, 40).run(jobs)}
    for position, sample in enumerate(samples):
        answer = list(sample.answer_ids)
        alone = score_answer(tiny_llama, sample.input_ids, answer)
        both = score_and_generate(tiny_llama, sample.input_ids, answer, 4, None)
        assert len(alone.predicted_ids) == len(answer) + 1
        assert engine[position].predicted_ids == alone.predicted_ids == both.predicted_ids
        sequence = torch.tensor([sample.input_ids + answer])
        after = tiny_llama.generate(
            input_ids=sequence, attention_mask=torch.ones_like(sequence), max_new_tokens=1, do_sample=False
        )[0, -1]
        assert alone.following(len(answer)) == int(after)
        hits = [alone.predicted_ids[k] == token for k, token in enumerate(answer)]
        assert tuple(hits) == alone.token_greedy


def loaded_for(tokenizer: Any) -> LoadedModel:
    """The facts record_for reads: the tokenizer and the model's entry (no weights are needed)."""
    entry = ModelEntry(
        name="m", source="m", kind="local", path="m", variant="baseline", architecture="LlamaForCausalLM",
        parameters=1, context_window=4096, device="cpu", dtype="float32", attn_implementation="sdpa",
        tokenizer_fingerprint="t",
    )  # fmt: skip
    return LoadedModel(model=None, tokenizer=tokenizer, entry=entry)


def forced_score(answer: list[int], following: int) -> AnswerScore:
    """Every answer token greedy, then ``following``: the verdict hangs on the boundary alone."""
    count = len(answer)
    return AnswerScore(
        answer_logprob=-0.25,
        greedy_exact=True,
        token_logprobs=(-0.25 / count,) * count,
        token_greedy=(True,) * count,
        predicted_ids=(*answer, following),
    )


def test_a_teacher_forced_answer_that_runs_on_is_wrong(tiny_tokenizer: Any, samples: list[Sample]) -> None:
    sample = samples[0]
    answer = list(sample.answer_ids)
    digit = tiny_tokenizer.encode("5", add_special_tokens=False)[0]
    stop = tiny_tokenizer.encode(".", add_special_tokens=False)[0]
    loaded = loaded_for(tiny_tokenizer)
    spec = NiahSpec(lengths=[256], depths=[0.0])
    runs_on = record_for(loaded, sample, spec, "r", forced_score(answer, digit), 0.1)
    assert not runs_on.correct and not runs_on.greedy_exact and runs_on.answer_ended is False
    ends = record_for(loaded, sample, spec, "r", forced_score(answer, stop), 0.1)
    assert ends.correct and ends.greedy_exact and ends.answer_ended is True
    before_the_rule = spec.model_copy(update={"answer_boundary": False})
    legacy = record_for(loaded, sample, before_the_rule, "r", forced_score(answer, digit), 0.1)
    assert legacy.correct and legacy.answer_ended is None


# ----------------------------------------------------------------------------- old runs


def test_runs_stored_before_the_rule_read_as_scored_without_it_and_keep_their_fingerprint() -> None:
    spec = NiahSpec(lengths=[256], depths=[0.0, 100.0])
    assert spec.answer_boundary
    stored = spec.model_dump(mode="json")
    del stored["answer_boundary"]  # how every manifest written before the rule holds its spec
    for name in LATER_FIELD_DEFAULTS:  # fields added later still: absent from those manifests too
        del stored[name]
    old_fingerprint = stable_hash(stored)[:16]
    manifest = RunManifest.model_validate(
        {"run_id": "r", "task": "niah", "spec": stored, "spec_fingerprint": old_fingerprint, "seed": 0,
         "created_at": "t", "updated_at": "t"}
    )  # fmt: skip
    assert isinstance(manifest.spec, NiahSpec)
    assert manifest.spec.answer_boundary is False
    assert manifest.spec.fingerprint() == old_fingerprint
    assert spec.fingerprint() != old_fingerprint  # the rule changes verdicts: a new run, never a resume
    written = RunManifest.model_validate_json(manifest.model_copy(update={"spec": spec}).model_dump_json())
    assert isinstance(written.spec, NiahSpec) and written.spec.answer_boundary is True


# ----------------------------------------------------------------------------- multi-needle default


def read_records(directory: Path) -> list[Record]:
    return [
        Record.model_validate_json(line) for line in (directory / "records.jsonl").read_text().splitlines()
    ]


def test_several_asked_values_are_scored_by_greedy_decoding_with_the_agreement_shown(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "384", "--depths", "0,50,100"]
    multi = [*args, "--needles", "4", "--queries", "2", "--json"]
    result = CliRunner().invoke(app, [*multi, "--out", str(tmp_path / "decoded")])
    assert result.exit_code == 0, result.stderr
    records = read_records(tmp_path / "decoded")
    assert len(records) == 3 and all(r.scoring == "generate" and r.prediction is not None for r in records)
    for record in records:
        assert record.needles is not None
        golds = [n.value for n in sorted(record.needles, key=lambda n: n.query or 0) if n.query is not None]
        found = [contains_answer(record.prediction or "", gold) for gold in golds]
        assert record.recall == sum(found) / 2 and record.correct == all(found)
        assert record.answer_ended is not None
    (model,) = json.loads(result.stdout)["models"]
    agree = sum(r.correct == r.greedy_exact for r in records) / len(records)
    assert model["teacher_forced_agreement"] == pytest.approx(agree)
    assert model["teacher_forced_accuracy"] == pytest.approx(sum(r.greedy_exact for r in records) / 3)

    forced = CliRunner().invoke(app, [*multi, "--teacher-forced", "--out", str(tmp_path / "forced")])
    assert forced.exit_code == 0, forced.stderr
    forced_records = read_records(tmp_path / "forced")
    assert all(r.scoring == "teacher_forced" and r.prediction is None for r in forced_records)
    assert [r.greedy_exact for r in forced_records] == [r.greedy_exact for r in records]
    assert "teacher_forced_agreement" not in json.loads(forced.stdout)["models"][0]

    single = CliRunner().invoke(app, [*args, "--needles", "4", "--json", "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.stderr
    assert all(r.scoring == "teacher_forced" for r in read_records(tmp_path / "one"))
