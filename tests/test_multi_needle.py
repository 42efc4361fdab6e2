"""Multi-needle NIAH: token-exact prompts with N needles, R asked, per-value scoring, engine agreement."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from test_context import needle_offset, samples_of, sentence_starts
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.engine.shared_prefill import PromptJob, SharedPrefixEngine
from diffbench.engine.teacher_forcing import score_answer
from diffbench.errors import UsageError
from diffbench.specs import NeedleSpec, NiahSpec, Record, Sample
from diffbench.tasks.multi_needle import CITIES, needle_options
from diffbench.tasks.options import COMMAND_LINE, NiahOptions, command_line_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# sha256 over every sample id and its input_ids for GOLDEN_SPEC on the session's trained tokenizer
# (tests/conftest.py), whose own digest is TOKENIZER_DIGEST. An intended change to the generator
# changes this: check the new samples, then update it.
GOLDEN_SPEC = {"lengths": "512,768", "depths": "0,50,100", "samples": 2, "needles": 4, "queries": 2}
GOLDEN_HASH = "08a0aaebb1d60e5ac0495aeb0433def8ed47eee06efa26fc932292dd8f84ac6d"
TOKENIZER_DIGEST = "ee5a8b3a1e47a16e"


def multi_spec(
    lengths: str = "384,512",
    depths: str = "0,25,50,75,100",
    samples: int = 2,
    seed: int = 0,
    needles: int = 4,
    queries: int | None = 2,
    kind: str | None = None,
    values: str = "numbers",
    haystack: str = "prose",
) -> NiahSpec:
    options = {"lengths": lengths, "depths": depths, "samples_per_cell": samples, "seed": seed}
    extra = {"haystack": haystack, "needles": needles, "queries": queries, "kind": kind, "values": values}
    return command_line_options(NiahOptions, {**options, **extra}).to_spec(COMMAND_LINE)


@pytest.fixture(scope="module")
def grid(tiny_tokenizer: Any) -> list[Sample]:
    return samples_of(multi_spec(), tiny_tokenizer)


# ----------------------------------------------------------------------------- options


def test_options_resolve_kind_and_queries_and_refuse_bad_combinations() -> None:
    needle = NeedleSpec()
    assert needle_options(1, None, None, "numbers", needle) == (1, "multikey")
    assert needle_options(4, 2, None, "numbers", needle) == (2, "multiquery")
    assert needle_options(8, None, None, "numbers", needle) == (1, "multikey")
    assert needle_options(3, None, "multivalue", "words", needle) == (3, "multivalue")
    bad = [
        (2, 3, None, "numbers", "is more than --needles 2"),
        (0, None, None, "numbers", "--needles 0 must be 1 or more"),
        (4, 2, "multiset", "numbers", "unknown --kind 'multiset'"),
        (4, 2, None, "colours", "unknown --values 'colours'"),
        (4, 2, "multikey", "numbers", "--kind multikey asks one needle, not 2"),
        (4, 1, "multiquery", "numbers", "--kind multiquery asks several keys"),
        (4, 2, "multivalue", "numbers", "--kind multivalue gives one key"),
        (1, None, "multivalue", "numbers", "--kind multivalue gives one key"),
        (len(CITIES) + 1, 1, None, "numbers", "distinct needles diffbench has"),
    ]
    for needles, queries, kind, values, message in bad:
        with pytest.raises(UsageError, match=re.escape(message)):
            needle_options(needles, queries, kind, values, needle)
    custom = NeedleSpec(needle="The code is blue.", question="Which code?", answer="blue")
    with pytest.raises(UsageError, match="placeholders"):
        needle_options(3, 1, None, "numbers", custom)


def test_single_needle_specs_keep_their_fingerprint_and_sample_ids(tiny_tokenizer: Any) -> None:
    """The fingerprint of a default spec is the one diffbench gave it before multi-needle fields existed."""
    spec = command_line_options(NiahOptions, {"lengths": "256", "depths": "0%"}).to_spec(COMMAND_LINE)
    assert spec == NiahSpec(lengths=[256], depths=[0.0], samples_per_cell=1, answer_budget=32)
    # Before the answer-boundary rule: the fingerprint diffbench gave it before multi-needle fields existed.
    assert spec.model_copy(update={"answer_boundary": False}).fingerprint() == "db7047571e03ecb3"
    assert spec.fingerprint() == "340982b379f29873"  # under the rule: verdicts differ, so does the run
    assert not spec.multi_needle
    sample = samples_of(spec, tiny_tokenizer)[0]
    assert sample.sample_id == "niah/256/0/0"
    assert sample.needles is None and sample.answers is None


# ----------------------------------------------------------------------------- samples


def test_every_prompt_is_exactly_length_minus_the_answer_budget(grid: list[Sample]) -> None:
    spec = multi_spec()
    assert spec.answer_budget == 64  # 32 per asked needle
    assert len(grid) == 2 * 5 * 2
    for sample in grid:
        assert len(sample.input_ids) == sample.prompt_tokens == sample.target_length - 64
        assert len(sample.answer_ids) <= spec.answer_budget


def test_needles_sit_at_sentence_boundaries_and_the_answer_needle_at_its_depth(
    grid: list[Sample], tiny_tokenizer: Any
) -> None:
    for sample in grid:
        assert sample.needles is not None and len(sample.needles) == 4
        spans = sorted(n.span for n in sample.needles)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no overlap
        hay_start, hay_end = sample.haystack_span
        hay_ids: list[int] = []
        insertions: dict[tuple[int, int], int] = {}
        cursor = hay_start
        for span in spans:  # the needle-free haystack, and where each needle went into it
            hay_ids += sample.input_ids[cursor : span[0]]
            insertions[span] = len(hay_ids)
            cursor = span[1]
        hay_ids += sample.input_ids[cursor:hay_end]
        starts = sentence_starts(tiny_tokenizer, hay_ids)
        for needle in sample.needles:
            text = tiny_tokenizer.decode(sample.input_ids[needle.span[0] : needle.span[1]])
            assert text.strip() == f"The special magic number for {needle.key} is {needle.value}."
            assert insertions[needle.span] in starts or insertions[needle.span] == len(hay_ids)
        answer = sample.needles[0]
        assert answer.query == 0 and answer.depth == sample.depth and answer.span == sample.needle_span
        offset, sentence, _ = needle_offset(tiny_tokenizer, sample)
        assert offset <= sentence, (sample.sample_id, offset, sentence)  # within one sentence of its depth


def test_keys_values_queries_and_the_answer_string(grid: list[Sample], tiny_tokenizer: Any) -> None:
    depths: set[float] = set()
    for sample in grid:
        assert sample.needles is not None and sample.answers is not None
        assert sample.answer_value_spans is not None
        keys = [n.key for n in sample.needles]
        values = [n.value for n in sample.needles]
        assert len(set(keys)) == 4 and len(set(values)) == 4
        assert all(re.fullmatch(r"\d{7}", v) for v in values)
        assert [n.query for n in sample.needles] == [0, 1, None, None]
        assert sample.answers == values[:2]
        for gold, (start, end) in zip(sample.answers, sample.answer_value_spans, strict=True):
            assert tiny_tokenizer.decode(sample.answer_ids[start:end]).strip() == gold
        assert sample.question.count("What is the special magic number for") == 2
        assert keys[0] in sample.question and keys[1] in sample.question
        assert keys[0] not in sample.answer and f"for {keys[1]} mentioned" in sample.answer
        assert sample.sample_id.startswith("niah-multiquery-n4-r2-numbers/")
        depths.update(n.depth for n in sample.needles[1:])
    assert len(depths) > 30  # distractor depths are drawn per sample


def test_multivalue_asks_every_value_of_one_key_in_document_order(tiny_tokenizer: Any) -> None:
    samples = samples_of(
        multi_spec(needles=3, queries=None, kind="multivalue", values="words"), tiny_tokenizer
    )
    for sample in samples:
        assert sample.needles is not None and sample.answers is not None
        assert len({n.key for n in sample.needles}) == 1
        in_order = sorted(sample.needles, key=lambda n: n.span[0])
        assert [n.query for n in in_order] == [0, 1, 2]
        assert sample.answers == [n.value for n in in_order]
        assert "magic word" in sample.needle_text and "3 different answers" in sample.question


def test_uuid_values_get_a_larger_default_budget(tiny_tokenizer: Any) -> None:
    spec = multi_spec(lengths="512", depths="50%", samples=1, needles=2, queries=1, values="uuids")
    assert spec.answer_budget == 64
    (sample,) = samples_of(spec, tiny_tokenizer)
    assert sample.answers is not None
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", sample.answers[0]
    )


def test_samples_are_deterministic_and_depend_on_the_seed(tiny_tokenizer: Any) -> None:
    spec = multi_spec(lengths="384", samples=1)
    first, again = samples_of(spec, tiny_tokenizer), samples_of(spec, tiny_tokenizer)
    assert [s.model_dump() for s in first] == [s.model_dump() for s in again]
    other = samples_of(spec.model_copy(update={"seed": 1}), tiny_tokenizer)
    assert [s.prompt_sha256 for s in first] != [s.prompt_sha256 for s in other]


def test_samples_match_the_golden_hash(tiny_tokenizer: Any) -> None:
    digest = hashlib.sha256(tiny_tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]
    assert digest == TOKENIZER_DIGEST, "the locally trained tokenizer changed (new tokenizers version?)"
    samples = samples_of(multi_spec(**GOLDEN_SPEC), tiny_tokenizer)  # type: ignore[arg-type]
    hasher = hashlib.sha256()
    for sample in samples:
        hasher.update(sample.sample_id.encode("utf-8"))
        hasher.update(struct.pack(f"<{len(sample.input_ids)}q", *sample.input_ids))
    assert hasher.hexdigest() == GOLDEN_HASH


def test_an_answer_budget_too_small_for_the_asked_values_is_refused(tiny_tokenizer: Any) -> None:
    spec = multi_spec(lengths="384", depths="50%", samples=1).model_copy(update={"answer_budget": 20})
    with pytest.raises(UsageError, match="the answers to 2 questions"):
        samples_of(spec, tiny_tokenizer)


# ----------------------------------------------------------------------------- scoring


def test_shared_and_independent_prefill_agree_on_every_needle(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """N=4, R=2: the shared-prefix engine and one-pass prefills give the same verdicts and log-probs."""
    from diffbench.engine.runner import fork_hint

    samples = samples_of(multi_spec(lengths="384,512", samples=2), tiny_tokenizer)
    jobs = [PromptJob(s.input_ids, s.answer_ids, fork_hint(s)) for s in samples]
    shared_engine = SharedPrefixEngine(tiny_llama, chunk_tokens=96, share=True)
    shared = {r.position: r.score for r in shared_engine.run(jobs)}
    unshared_engine = SharedPrefixEngine(tiny_llama, chunk_tokens=100_000, share=False)
    unshared = {r.position: r.score for r in unshared_engine.run(jobs)}
    assert shared_engine.fed_tokens < 0.9 * unshared_engine.fed_tokens  # the prefix really was shared
    for position, sample in enumerate(samples):
        alone = score_answer(tiny_llama, sample.input_ids, sample.answer_ids)
        assert sample.answer_value_spans is not None
        for score in (shared[position], unshared[position]):
            assert score.greedy_exact == alone.greedy_exact
            assert score.answer_logprob == pytest.approx(alone.answer_logprob, abs=1e-4)
            for start, end in sample.answer_value_spans:
                logprob, greedy = score.span(start, end)
                want_logprob, want_greedy = alone.span(start, end)
                assert greedy == want_greedy
                assert logprob == pytest.approx(want_logprob, abs=1e-4)


def test_cli_multi_needle_run_records_every_needle_and_recall(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "384", "--depths", "3"]
    multi = [*args, "--needles", "4", "--queries", "2", "--teacher-forced"]
    result = CliRunner().invoke(app, [*multi, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    records = [Record.model_validate_json(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record.needles is not None and len(record.needles) == 4
        asked = [n for n in record.needles if n.query is not None]
        assert [n.query for n in asked] == [0, 1]
        assert all(n.retrieved is not None and n.logprob is not None and n.logprob < 0 for n in asked)
        assert all(n.retrieved is None and n.logprob is None for n in record.needles if n.query is None)
        assert record.recall == sum(bool(n.retrieved) for n in asked) / 2
        assert record.correct == (record.recall == 1.0) == record.greedy_exact
        assert record.ruler_all == record.recall and record.ruler_part == float(record.recall > 0)
        assert record.answer_logprob == pytest.approx(sum(n.logprob for n in asked if n.logprob), abs=1e-5)
        assert record.needle_span == record.needles[0].span
    summary = json.loads(result.stdout)
    (model,) = summary["models"]
    assert model["recall"] == pytest.approx(sum(r.recall or 0 for r in records) / 3, abs=1e-6)
    assert model["accuracy"] == pytest.approx(sum(r.correct for r in records) / 3, abs=1e-6)
    assert all("recall" in cell for cell in summary["cells"])


def test_records_of_older_runs_still_load() -> None:
    """Records written before the multi-needle fields existed have neither recall nor needles."""
    old = {
        "schema_version": 1, "run_id": "r", "sample_id": "niah/256/0/0", "task": "niah", "model": "m",
        "variant": "baseline", "target_length": 256, "prompt_tokens": 224, "depth": 0.0, "sample_index": 0,
        "needle_span": [3, 20], "answer": "1234567", "prediction": None, "correct": True, "score": 1.0,
        "scoring": "teacher_forced", "greedy_exact": True, "answer_logprob": -0.5, "answer_tokens": 4,
        "ruler_all": None, "ruler_part": None, "prompt_sha256": "x", "device": "cpu", "dtype": "float32",
        "seconds": 0.1,
    }  # fmt: skip
    record = Record.model_validate(old)
    assert record.recall is None and record.needles is None
