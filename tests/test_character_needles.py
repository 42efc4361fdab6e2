"""Character needles: literal and non-literal questions over the same needles, token-exact, paired."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import run_factory
from test_context import haystack_without_needle, needle_offset, samples_of, sentence_starts
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.errors import HaystackError, UsageError
from diffbench.specs import NiahSpec, Record, Sample
from diffbench.tasks.character_needles import LANDMARKS, NAMES
from diffbench.tasks.options import COMMAND_LINE, NiahOptions, command_line_options

STOP_WORDS = {"the", "a", "an", "to", "of", "in", "at", "for", "has", "is", "which", "who", "once"}


def character_spec(
    style: str, haystack: str = "prose", seed: int = 0, samples: int = 2, needles: int | None = None
) -> NiahSpec:
    options = {"lengths": "384,512", "depths": "0,25,50,75,100", "samples_per_cell": samples}
    extra = {"seed": seed, "haystack": haystack, "needle_style": style, "needles": needles}
    return command_line_options(NiahOptions, {**options, **extra}).to_spec(COMMAND_LINE)


def content_words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if word not in STOP_WORDS}


@pytest.fixture(scope="module")
def paired(tiny_tokenizer: Any) -> dict[str, list[Sample]]:
    return {style: samples_of(character_spec(style), tiny_tokenizer) for style in ("literal", "nonliteral")}


def test_the_style_is_part_of_the_spec_and_the_sample_ids(paired: dict[str, list[Sample]]) -> None:
    """A magic spec keeps its fingerprint (tests/test_multi_needle.py pins it); the styles get their own."""
    literal, nonliteral = character_spec("literal"), character_spec("nonliteral")
    magic = character_spec("magic")
    assert len({literal.fingerprint(), nonliteral.fingerprint(), magic.fingerprint()}) == 3
    assert not literal.multi_needle and literal.answer_budget == 32 and literal.needles == 4
    assert paired["nonliteral"][0].sample_id == "niah-nonliteral/384/0/0"
    assert paired["literal"][0].sample_id == "niah-literal/384/0/0"
    assert len(paired["literal"]) == len(paired["nonliteral"]) == 2 * 5 * 2


def test_both_styles_hide_the_same_needle_at_the_same_place(paired: dict[str, list[Sample]]) -> None:
    """The literal run is the non-literal run's control: the same needle in the same haystack at the same
    depth; the questions differ, and the haystack's budget by exactly the difference in their lengths."""
    for literal, nonliteral in zip(paired["literal"], paired["nonliteral"], strict=True):
        assert literal.needle_text == nonliteral.needle_text and literal.depth == nonliteral.depth
        assert literal.answer == nonliteral.answer == literal.needle_text.split()[0]
        (hay_a, _), (hay_b, _) = haystack_without_needle(literal), haystack_without_needle(nonliteral)
        shorter = min(len(hay_a), len(hay_b))
        assert hay_a[:shorter] == hay_b[:shorter]
        after_a, after_b = (len(s.input_ids) - s.haystack_span[1] for s in (literal, nonliteral))
        assert len(hay_b) - len(hay_a) == after_a - after_b  # the question and answer prefix after it
        assert literal.question != nonliteral.question
    names = {sample.answer for sample in paired["literal"]}
    landmarks = {sample.key for sample in paired["literal"]}
    assert len(names) > 5 and len(landmarks) > 5  # drawn per sample, not one needle for the grid


def test_the_nonliteral_question_shares_no_word_with_its_needle(paired: dict[str, list[Sample]]) -> None:
    for literal, nonliteral in zip(paired["literal"], paired["nonliteral"], strict=True):
        landmark, city = literal.key, nonliteral.key
        assert (landmark, city) in LANDMARKS
        assert nonliteral.question == f"Which character has been to {city}?"
        assert not content_words(nonliteral.question) & content_words(nonliteral.needle_text)
        assert landmark in literal.question and landmark in literal.needle_text
        act = literal.needle_text.removeprefix(f"{literal.answer} ").removesuffix(".")
        assert literal.question == f"Which character {act}?"  # the needle's act, word for word
        assert len(content_words(literal.question) & content_words(literal.needle_text)) >= 3


def test_bank_cities_never_share_a_word_with_their_landmark() -> None:
    for landmark, city in LANDMARKS:
        assert not content_words(city) & content_words(landmark), (landmark, city)
    assert len(set(LANDMARKS)) == len(LANDMARKS) and len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("style", ["literal", "nonliteral"])
def test_prompts_are_token_exact_and_mention_name_and_city_only_where_they_belong(
    paired: dict[str, list[Sample]], tiny_tokenizer: Any, style: str
) -> None:
    for sample in paired[style]:
        assert len(sample.input_ids) == sample.prompt_tokens == sample.target_length - 32
        text = tiny_tokenizer.decode(sample.input_ids)
        needle = tiny_tokenizer.decode(sample.input_ids[slice(*sample.needle_span)])
        assert needle.strip() == sample.needle_text
        assert len(re.findall(rf"\b{sample.answer}\b", text)) == 1  # the character: in the needle only
        assert tiny_tokenizer.decode(sample.answer_ids).strip() == sample.answer
        # The question's key: in the question and the answer prefix after it, nowhere in the haystack.
        assert text.count(sample.key) == 2 + (style == "literal")
        assert text.endswith(f"The character who {sample.question.removeprefix('Which character ')[:-1]} is")


def test_the_needle_starts_within_one_sentence_of_its_depth(
    paired: dict[str, list[Sample]], tiny_tokenizer: Any
) -> None:
    for sample in paired["nonliteral"]:
        offset, sentence, _ = needle_offset(tiny_tokenizer, sample)
        assert offset <= sentence, sample.sample_id


def byte_tokenizer() -> Any:
    """A tokenizer of single bytes: a vocabulary unlike the trained one, ~4× the tokens per text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_every_tokenizer_gets_the_same_needles_and_the_seed_changes_them(
    paired: dict[str, list[Sample]], tiny_tokenizer: Any, tiny_chat_tokenizer: Any
) -> None:
    spec = character_spec("nonliteral")
    chat = samples_of(spec, tiny_chat_tokenizer)
    texts = [(s.sample_id, s.needle_text, s.question) for s in paired["nonliteral"]]
    assert [(s.sample_id, s.needle_text, s.question) for s in chat] == texts
    assert chat[0].chat_template and not paired["nonliteral"][0].chat_template
    long = spec.model_copy(update={"lengths": [1024]})
    mine, bytewise = samples_of(long, tiny_tokenizer), samples_of(long, byte_tokenizer())
    assert len(bytewise[0].input_ids) == len(mine[0].input_ids)  # both 1024 − 32 tokens: other text
    assert byte_tokenizer().decode(bytewise[0].input_ids) != tiny_tokenizer.decode(mine[0].input_ids)
    assert [(s.needle_text, s.question) for s in bytewise] == [(s.needle_text, s.question) for s in mine]
    again = samples_of(spec, tiny_tokenizer)
    assert [s.model_dump() for s in again] == [s.model_dump() for s in paired["nonliteral"]]
    other = samples_of(character_spec("nonliteral", seed=1), tiny_tokenizer)
    assert [s.needle_text for s in other] != [s.needle_text for s in paired["nonliteral"]]


def write_haystack(path: Path, mentions: list[str]) -> Path:
    """A haystack file of plain sentences, with one sentence per mentioned word."""
    plain = [f"The {noun} stood by the road all day." for noun in ("barn", "gate", "mill", "well")] * 20
    path.write_text(" ".join(plain + [f"Nobody forgot {word} that year." for word in mentions]) + "\n")
    return path


def test_nothing_the_haystack_mentions_is_drawn(tiny_tokenizer: Any, tmp_path: Path) -> None:
    """A name, landmark or city in the haystack would be a second mention: the draw skips it."""
    kept_name, (kept_landmark, kept_city) = NAMES[7], LANDMARKS[0]  # Dresden: one landmark only
    names = [name for name in NAMES if name != kept_name]
    places = [
        term for pair in LANDMARKS if pair != (kept_landmark, kept_city) for term in pair
    ]  # every other landmark and every other city; "the Louvre" is mentioned as "Louvre"
    hay = write_haystack(tmp_path / "hay.txt", names + [p.removeprefix("the ") for p in places])
    spec = character_spec("nonliteral", haystack=str(hay), samples=1, needles=1)  # room for no decoy
    samples = samples_of(spec, tiny_tokenizer)
    assert {(s.answer, s.key) for s in samples} == {(kept_name, kept_city)}
    seeded = samples_of(character_spec("nonliteral", samples=1), tiny_tokenizer)
    assert {s.answer for s in seeded} != {kept_name}  # the prose haystack leaves the whole bank


def test_a_landmark_named_in_part_is_never_drawn(tiny_tokenizer: Any, tmp_path: Path) -> None:
    """ "Hollywood" alone rules out the Hollywood sign; a curly apostrophe still names the Bastion."""
    keep = [("the Hollywood sign", "Los Angeles"), ("the Fisherman's Bastion", "Budapest"), LANDMARKS[0]]
    others = [term for pair in LANDMARKS if pair not in keep for term in pair]
    mentions = [p.removeprefix("the ") for p in others] + ["Hollywood", "the Fisherman\u2019s Bastion"]
    hay = write_haystack(tmp_path / "hay.txt", mentions)
    samples = samples_of(character_spec("literal", haystack=str(hay), samples=1, needles=1), tiny_tokenizer)
    assert {s.key for s in samples} == {LANDMARKS[0][0]}


def test_each_haystack_of_its_own_is_checked_for_its_own_mentions(tiny_tokenizer: Any) -> None:
    spec = character_spec("nonliteral", samples=3, needles=1).model_copy(update={"haystack_per_sample": True})
    samples = samples_of(spec, tiny_tokenizer)
    openings = {tuple(s.input_ids[s.haystack_span[0] :][:40]) for s in samples if s.depth == 100}
    assert len(openings) == 3  # one haystack per sample index
    for sample in samples:
        text = tiny_tokenizer.decode(sample.input_ids)
        assert len(re.findall(rf"\b{sample.answer}\b", text)) == 1 and text.count(sample.key) == 2


def test_a_haystack_that_names_every_character_is_refused_in_one_line(
    tmp_path: Path, tiny_llama_dir: Path, tiny_tokenizer: Any
) -> None:
    hay = write_haystack(tmp_path / "hay.txt", list(NAMES))
    args = ["niah", "-m", str(tiny_llama_dir), "--lengths", "384", "--depths", "1", "--haystack", str(hay)]
    result = CliRunner().invoke(app, [*args, "--needle-style", "literal", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "the haystack mentions every one of diffbench's 40 character names" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    with pytest.raises(HaystackError):
        samples_of(character_spec("literal", haystack=str(hay), samples=1), tiny_tokenizer)


def test_a_distractor_names_the_key_elsewhere_and_leaves_the_needle_as_it_was(tiny_tokenizer: Any) -> None:
    placed: dict[str, list[tuple[float, str]]] = {}
    for style in ("literal", "nonliteral"):
        longer = {"lengths": [512, 768]}  # five sentences need room at 384 tokens of this small vocabulary
        spec = character_spec(style).model_copy(update={**longer, "distractor": True})
        with_distractor = samples_of(spec, tiny_tokenizer)
        without = samples_of(character_spec(style).model_copy(update=longer), tiny_tokenizer)
        for plain, sample in zip(without, with_distractor, strict=True):
            assert sample.sample_id == plain.sample_id.replace(f"niah-{style}/", f"niah-{style}-distractor/")
            assert (sample.needle_text, sample.question, sample.answer) == (
                plain.needle_text,
                plain.question,
                plain.answer,
            )
            assert len(sample.input_ids) == sample.target_length - 32
            assert sample.needles is not None and sample.answer_value_spans == [(0, len(sample.answer_ids))]
            assert len(sample.needles) == 1 + 3 + 1  # the asked character, three decoys, the distractor
            needle, distractor = sample.needles[0], sample.needles[-1]
            assert plain.needles is not None  # the same characters as without it
            assert [n.value for n in plain.needles] == [n.value for n in sample.needles[:-1]]
            assert (needle.query, needle.value, needle.span) == (0, sample.answer, sample.needle_span)
            assert distractor.query is None and distractor.value == "" and distractor.key == sample.key
            assert abs(distractor.depth - sample.depth) >= 10
            text = tiny_tokenizer.decode(sample.input_ids[slice(*distractor.span)]).strip()
            assert sample.key in text and not set(re.findall(r"\w+", text)) & set(NAMES)
            prompt = tiny_tokenizer.decode(sample.input_ids)
            assert prompt.count(sample.key) == tiny_tokenizer.decode(plain.input_ids).count(sample.key) + 1
            hay = sample.input_ids[sample.haystack_span[0] : sample.haystack_span[1]]
            starts = sentence_starts(tiny_tokenizer, hay)
            assert distractor.span[0] - sample.haystack_span[0] in starts  # between two sentences
            placed.setdefault(style, []).append((distractor.depth, text.replace(sample.key, "KEY")))
    assert placed["literal"] == placed["nonliteral"]  # the same sentence at the same depth: runs pair


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--queries", "2"], "--needle-style nonliteral hides character needles of its own, which --queries"),
        (["--values", "words"], "which --values would change"),
        (["--kind", "multikey"], "which --kind would change"),
        (["--needle", "N 4.", "--question", "N?", "--answer", "4"], "--needle, --question and --answer "),
        (["--needle-style", "oblique"], "unknown --needle-style 'oblique': use magic, literal or nonliteral"),
        (["--needle-style", "magic", "--distractor"], "--distractor names a character needle's key"),
    ],
)
def test_clashing_options_are_usage_errors(tiny_llama_dir: Path, extra: list[str], message: str) -> None:
    args = ["niah", "-m", str(tiny_llama_dir), "--lengths", "384", "--needle-style", "nonliteral", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_run_scores_the_character_and_says_which_needles(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["niah", "-m", str(tiny_llama_dir), "--lengths", "384", "--depths", "3"]
    result = CliRunner().invoke(app, [*args, "--needle-style", "nonliteral", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    records = [Record.model_validate_json(line) for line in (out / "records.jsonl").read_text().splitlines()]
    samples: dict[str, Sample] = {}
    for path in (out / "samples").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            sample = Sample.model_validate_json(line)
            samples[sample.sample_id] = sample
    assert len(records) == 3
    for record in records:
        sample = samples[record.sample_id]
        assert record.sample_id.startswith("niah-nonliteral/384/")
        assert record.answer == sample.answer in NAMES
        assert record.answer_tokens == len(sample.answer_ids) and record.answer_logprob < 0
    distracted = tmp_path / "distracted"
    flags = ["--needle-style", "nonliteral", "--distractor", "--out", str(distracted)]
    result = CliRunner().invoke(app, [*args, *flags, "--json"])
    assert result.exit_code == 0, result.stderr
    lines = (distracted / "records.jsonl").read_text().splitlines()
    for record in map(Record.model_validate_json, lines):
        assert record.needles is not None and [n.query for n in record.needles] == [0, None, None, None, None]
        assert record.needles[0].retrieved == record.correct and record.needles[-1].retrieved is None
        assert record.recall is None and record.ruler_all is None  # one value: scored as a single needle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["needle_style"] == "nonliteral"
    report = CliRunner().invoke(app, ["report", str(out), "--format", "markdown"])
    assert report.exit_code == 0, report.stderr
    assert "nonliteral character needles" in report.stdout


def test_a_task_file_takes_the_style(tmp_path: Path) -> None:
    from diffbench.taskfile import load_task_file

    path = tmp_path / "literal.toml"
    text = 'format = 1\ntask = "niah"\nlengths = "8k"\ndepths = 3\nneedle_style = "literal"\n'
    path.write_text(text)
    assert load_task_file(path).spec.needle_style == "literal"  # type: ignore[union-attr]
    assert load_task_file(path).spec.needles == 4  # type: ignore[union-attr]
    path.write_text(text + "needles = 2\n")
    assert load_task_file(path).spec.needles == 2  # type: ignore[union-attr]
    path.write_text(text + "queries = 2\n")
    with pytest.raises(UsageError, match="needle_style literal hides character needles of its own"):
        load_task_file(path)


# ----------------------------------------------------------------------------- report --control


def styled(style: str, distractor: bool = False, lengths: list[int] | None = None) -> NiahSpec:
    update = {"needle_style": style, "distractor": distractor}
    return run_factory.spec(lengths=lengths).model_copy(update=update)


def styled_ids(task_spec: NiahSpec) -> list[str]:
    prefix = f"niah-{task_spec.needle_style}" + ("-distractor" if task_spec.distractor else "")
    return [sample_id.replace("niah/", f"{prefix}/") for sample_id in run_factory.sample_ids(task_spec)]


def write_styled(directory: Path, task_spec: NiahSpec, models: dict[str, Any]) -> Path:
    return run_factory.write_run(directory, task_spec, models, ids=styled_ids(task_spec))


def test_report_pairs_a_run_with_its_control_sample_by_sample(tmp_path: Path) -> None:
    """60 paired samples; the nonliteral run loses 20 of the 1K ones that the literal control gets right."""
    lost_at_1k = run_factory.wrong_first(20, among=lambda sample_id: "/1024/" in sample_id)
    control = write_styled(tmp_path / "literal", styled("literal"), {"m": run_factory.always(True)})
    run = write_styled(tmp_path / "nonliteral", styled("nonliteral"), {"m": lost_at_1k, "other": lost_at_1k})
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(run), "--control", str(control), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "Against the control: nonliteral needles, control literal" in result.stdout
    assert "the control run literal has no model other: it is not paired" in result.stderr
    rows = {row["length"]: row for row in json.loads((out / "report.json").read_text())["control"]}
    assert set(rows) == {"1K", "2K", "all"}
    assert (rows["1K"]["n"], rows["2K"]["n"], rows["all"]["n"]) == (30, 30, 60)
    assert rows["all"]["accuracy"] == pytest.approx(40 / 60) and rows["all"]["control_accuracy"] == 1.0
    assert rows["1K"]["delta"] == pytest.approx(-20 / 30) and rows["2K"]["delta"] == 0.0
    assert rows["all"]["delta"] == pytest.approx(-20 / 60)
    assert rows["all"]["delta_low"] < -20 / 60 < rows["all"]["delta_high"] < 0  # the bootstrap excludes 0
    assert (rows["all"]["only_control"], rows["all"]["only_here"]) == (20, 0)
    assert rows["all"]["mcnemar_p"] == pytest.approx(2 * 0.5**20, rel=1e-4)
    assert rows["all"]["logprob_delta"] == pytest.approx((-9.0 + 0.5) * 20 / 60)  # run_factory's log-probs
    assert "control.csv" in {path.name for path in out.iterdir()}


def test_a_distractor_run_pairs_with_the_same_style_without_it(tmp_path: Path) -> None:
    control = write_styled(tmp_path / "plain", styled("nonliteral"), {"m": run_factory.always(True)})
    run = write_styled(tmp_path / "distracted", styled("nonliteral", True), {"m": run_factory.always(False)})
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(run), "--control", str(control), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    (row,) = [r for r in json.loads((out / "report.json").read_text())["control"] if r["length"] == "all"]
    assert (row["needles"], row["control"], row["delta"]) == ("nonliteral + distractor", "nonliteral", -1.0)


@pytest.mark.parametrize(
    ("control_spec", "message"),
    [
        (run_factory.spec(), "magic-number needles pair with nothing"),
        (styled("literal", lengths=[1024]), "its task spec also differs in lengths"),
        (styled("nonliteral"), "it asks the needles the same way"),
    ],
)
def test_a_control_that_does_not_pair_is_refused_in_one_line(
    tmp_path: Path, control_spec: NiahSpec, message: str
) -> None:
    run = write_styled(tmp_path / "run", styled("nonliteral"), {"m": run_factory.always(True)})
    ids = None if control_spec.needle_style == "magic" else styled_ids(control_spec)
    everything = {"m": run_factory.always(True)}
    control = run_factory.write_run(tmp_path / "control", control_spec, everything, ids=ids)
    args = ["report", str(run), "--control", str(control), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_attn_measures_the_attention_on_the_distractor(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The distractor is its own region: every softmax row's shares, distractor included, sum to 1."""
    from diffbench.analysis.attention_mass import PARTITION

    out = tmp_path / "attn"
    args = ["attn", "-m", str(tiny_llama_dir), "--lengths", "384", "--depths", "0,100", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--needle-style", "nonliteral", "--distractor"])
    assert result.exit_code == 0, result.stderr
    assert "distractor" in result.stdout
    records = [json.loads(line) for line in (out / "attention.jsonl").read_text().splitlines()]
    assert records and all(0.0 < record["distractor"] < 1.0 for record in records)
    for record in records:
        assert sum(record[name] for name in PARTITION) == pytest.approx(1.0, abs=1e-5)
    summary = json.loads((out / "attention_summary.json").read_text())
    (row,) = summary["models"]
    mean = sum(record["distractor"] for record in records) / len(records)
    assert row["distractor"] == pytest.approx(mean, abs=1e-6)


# ----------------------------------------------------------------------------- the association check


def test_the_association_check_scores_the_city_with_no_document(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """Log-prob of " Paris" after the closed-book question, recomputed from one plain forward pass."""
    import torch

    from diffbench.engine.runner import association_knowledge
    from diffbench.models.load import LoadedModel

    samples = [SimpleNamespace(needle_text=f"{name} lives next to the Louvre.") for name in ("Yuki", "Omar")]
    samples.append(SimpleNamespace(needle_text="Omar sketched Big Ben."))
    loaded = LoadedModel(tiny_llama, tiny_tokenizer, None)  # type: ignore[arg-type]
    known = association_knowledge(loaded, samples, character_spec("nonliteral"))  # type: ignore[arg-type]
    assert list(known) == ["the Louvre", "Big Ben"]  # once per landmark
    text = "Answer briefly.\n\nIn which city is the Louvre?\n\nThe Louvre is in"
    prompt = tiny_tokenizer(text)["input_ids"]
    answer = tiny_tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = tiny_llama(input_ids=torch.tensor([prompt + answer])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    expected = float(logprobs[torch.arange(len(answer)), answer].sum())
    greedy = bool((logprobs.argmax(-1) == torch.tensor(answer)).all())
    louvre = known["the Louvre"]
    assert (louvre["city"], louvre["known"]) == ("Paris", greedy)
    assert louvre["logprob"] == pytest.approx(expected, abs=1e-4)


def test_records_and_summary_carry_the_association_check(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["niah", "-m", str(tiny_llama_dir), "--lengths", "384", "--depths", "5", "--samples", "2"]
    result = CliRunner().invoke(app, [*args, "--needle-style", "literal", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    records = [Record.model_validate_json(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by_landmark: dict[str, dict[str, Any]] = {}
    for record in records:
        assert record.details is not None
        association = record.details["association"]
        assert (association["landmark"], association["city"]) in LANDMARKS
        assert association["logprob"] < 0 and isinstance(association["known"], bool)
        assert by_landmark.setdefault(association["landmark"], association) == association  # once per model
    (row,) = json.loads(result.stdout)["models"]
    known = [bool(record.details and record.details["association"]["known"]) for record in records]
    assert row["association_known"] == pytest.approx(sum(known) / len(known), abs=1e-6)
    magic = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "magic"), "--json"])
    assert "association_known" not in json.loads(magic.stdout)["models"][0]
    assert all(
        json.loads(line)["details"] is None
        for line in (tmp_path / "magic" / "records.jsonl").read_text().splitlines()
    )


def test_the_control_report_has_a_row_for_the_known_associations(tmp_path: Path) -> None:
    """Half the samples' associations are known: the 'all, known' row pairs those 30 only."""
    lost = run_factory.wrong_first(20, among=lambda sample_id: sample_id.endswith(("/0", "/1", "/2", "/3")))
    control = write_styled(tmp_path / "literal", styled("literal"), {"m": run_factory.always(True)})
    run = write_styled(tmp_path / "nonliteral", styled("nonliteral"), {"m": lost})
    for directory in (control, run):
        lines = []
        for line in (directory / "records.jsonl").read_text().splitlines():
            record = json.loads(line)
            known = int(record["sample_id"].rsplit("/", 1)[1]) < 5
            record["details"] = {"association": {"landmark": "the Louvre", "city": "Paris", "known": known}}
            lines.append(json.dumps(record) + "\n")
        (directory / "records.jsonl").write_text("".join(lines))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(run), "--control", str(control), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = {row["length"]: row for row in json.loads((out / "report.json").read_text())["control"]}
    assert rows["all"]["n"] == 60 and rows["all, known"]["n"] == 30
    assert rows["all, known"]["delta"] == pytest.approx(-20 / 30)  # every loss is at an index below 5
    assert rows["all"]["delta"] == pytest.approx(-20 / 60)


def test_a_model_in_two_reported_runs_pairs_with_the_control_in_both(tmp_path: Path) -> None:
    """Labels m@a and m@b both match the control's m; a control missing samples is named in a note."""
    control = write_styled(tmp_path / "literal", styled("literal"), {"m": run_factory.always(True)})
    first = write_styled(tmp_path / "a", styled("nonliteral"), {"m": run_factory.always(False)})
    second = write_styled(tmp_path / "b", styled("nonliteral"), {"m": run_factory.always(True)})
    lines = (control / "records.jsonl").read_text().splitlines()
    (control / "records.jsonl").write_text("".join(line + "\n" for line in lines[:50]))  # 10 unfinished
    out = tmp_path / "report"
    args = ["report", str(first), str(second), "--control", str(control), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    rows = [row for row in json.loads((out / "report.json").read_text())["control"] if row["length"] == "all"]
    assert [(row["model"], row["n"], row["delta"]) for row in rows] == [("m@a", 50, -1.0), ("m@b", 50, 0.0)]
    assert (
        "m@a: 50 samples paired with the control; 10 here and 0 in the control have no partner"
        in " ".join(result.stderr.split())
    )


def test_an_attention_run_has_no_verdicts_to_pair(tiny_llama_dir: Path, tmp_path: Path) -> None:
    common = ["-m", str(tiny_llama_dir), "--lengths", "384", "--depths", "0%"]
    attn = CliRunner().invoke(
        app, ["attn", *common, "--needle-style", "nonliteral", "--out", str(tmp_path / "a")]
    )
    assert attn.exit_code == 0, attn.stderr
    niah = CliRunner().invoke(
        app, ["niah", *common, "--needle-style", "literal", "--out", str(tmp_path / "n")]
    )
    assert niah.exit_code == 0, niah.stderr
    result = CliRunner().invoke(app, ["report", str(tmp_path / "a"), "--control", str(tmp_path / "n")])
    assert result.exit_code == 2 and "the reported runs hold none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_decoys_are_other_characters_at_landmarks_of_other_cities(
    paired: dict[str, list[Sample]], tiny_tokenizer: Any
) -> None:
    """Three decoys per prompt: the asked character is not "the one name in the document"."""
    alone = samples_of(character_spec("nonliteral", needles=1), tiny_tokenizer)
    city_of = dict(LANDMARKS)
    for literal, nonliteral, single in zip(paired["literal"], paired["nonliteral"], alone, strict=True):
        assert nonliteral.needles is not None and single.needles is None
        assert (single.needle_text, single.question) == (nonliteral.needle_text, nonliteral.question)
        decoys = nonliteral.needles[1:]
        assert literal.needles is not None
        assert [(d.key, d.value, d.depth) for d in decoys] == [
            (d.key, d.value, d.depth) for d in literal.needles[1:]
        ]
        names = [d.value for d in decoys]
        assert len(set(names)) == 3 and nonliteral.answer not in names and set(names) <= set(NAMES)
        cities = [city_of[d.key] for d in decoys]
        assert len(set(cities)) == 3 and nonliteral.key not in cities  # "has been to <city>" fits one
        text = tiny_tokenizer.decode(nonliteral.input_ids)
        for decoy in decoys:
            sentence = tiny_tokenizer.decode(nonliteral.input_ids[slice(*decoy.span)]).strip()
            assert sentence.startswith(f"{decoy.value} ") and decoy.key in sentence
            assert len(re.findall(rf"\b{decoy.value}\b", text)) == 1
