"""Token-exact NIAH contexts: lengths, needle placement, determinism, golden samples, user haystacks.

Regenerate the golden file after an intended change with
``DIFFBENCH_REGEN_GOLDEN=1 python -m pytest tests/test_context.py -k golden``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from diffbench.errors import HaystackError, UsageError
from diffbench.haystack.sources import MIN_SENTENCES, load_source
from diffbench.specs import NiahSpec, Sample
from diffbench.tasks.niah import KEY_ADJECTIVES, KEY_NOUNS, generate_samples

LENGTHS = [256, 512, 1024]
DEPTHS = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 100.0]
SAMPLES_PER_CELL = 2
ANSWER_BUDGET = 32
GOLDEN = Path(__file__).parent / "golden" / "niah_samples.jsonl"
GOLDEN_CONFIGS = [("plain", "prose"), ("chat", "noise")]
CONFIGS = [(kind, haystack) for kind in ("plain", "chat") for haystack in ("prose", "noise")]
SENTENCE_END = re.compile(r"[.!?]$")


def niah_spec(haystack: str, seed: int = 0, lengths: list[int] | None = None) -> NiahSpec:
    return NiahSpec(
        lengths=lengths or LENGTHS,
        depths=DEPTHS,
        samples_per_cell=SAMPLES_PER_CELL,
        seed=seed,
        haystack=haystack,
        answer_budget=ANSWER_BUDGET,
    )


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer: Any, tiny_chat_tokenizer: Any) -> dict[str, Any]:
    return {"plain": tiny_tokenizer, "chat": tiny_chat_tokenizer}


@pytest.fixture(scope="module")
def grids(tokenizers: dict[str, Any]) -> dict[tuple[str, str], list[Sample]]:
    """The samples of every (tokenizer, haystack) pair for seed 0, generated once for the module."""
    return {
        (kind, haystack): generate_samples(niah_spec(haystack), tokenizers[kind], load_source(haystack, 0))
        for kind, haystack in CONFIGS
    }


def samples_of(spec: NiahSpec, tokenizer: Any) -> list[Sample]:
    """The spec's grid for one tokenizer, on the spec's own haystack and seed."""
    return generate_samples(spec, tokenizer, load_source(spec.haystack, spec.seed))


def haystack_without_needle(sample: Sample) -> tuple[list[int], int]:
    """The haystack ids with every needle (asked, decoys, distractors, statements) taken out, and where
    the sample's needle, the one at its depth, stood in them."""
    spans = sorted(tuple(n.span) for n in sample.needles) if sample.needles else [tuple(sample.needle_span)]
    ids, cursor, at = [], sample.haystack_span[0], 0
    for start, end in spans:
        ids += sample.input_ids[cursor:start]
        if (start, end) == tuple(sample.needle_span):
            at = len(ids)
        cursor = end
    return ids + sample.input_ids[cursor : sample.haystack_span[1]], at


def needle_offset(tokenizer: Any, sample: Sample) -> tuple[float, int, int]:
    """How far the sample's needle starts from token depth × L of its needle-free haystack, the longer of
    the sentences just before and after it (within one sentence: the first is at most the second), and
    L. Asserts that the needle starts a sentence."""
    hay, at = haystack_without_needle(sample)
    boundaries = [*sentence_starts(tokenizer, hay), len(hay)]
    assert at in boundaries, (sample.sample_id, tokenizer.decode(hay[max(0, at - 5) : at + 5]))
    index = boundaries.index(at)
    sizes = [b - a for a, b in itertools.pairwise(boundaries)]
    adjacent = sizes[max(0, index - 1) : index + 1]  # the sentences just before and after the needle
    return abs(at - sample.depth / 100.0 * len(hay)), max(adjacent), len(hay)


def sentence_starts(tokenizer: Any, ids: list[int]) -> list[int]:
    """Token indices where a sentence (with its leading whitespace) starts, found from the decoded text."""
    pieces = [tokenizer.decode([i]) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids)  # ASCII text: tokens decode one by one
    starts, text = [0], ""
    for index, piece in enumerate(pieces):
        if index and piece[:1].isspace() and SENTENCE_END.search(text):
            starts.append(index)
        text += piece
    return starts


def test_grid_has_every_cell_once_sorted_by_length_depth_index(grids: dict[Any, list[Sample]]) -> None:
    for samples in grids.values():
        expected = [
            f"niah/{length}/{depth:g}/{index}"
            for length in LENGTHS
            for depth in DEPTHS
            for index in range(SAMPLES_PER_CELL)
        ]
        assert [s.sample_id for s in samples] == expected


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_prompts_have_exactly_length_minus_answer_budget_tokens(
    grids: dict[Any, list[Sample]], kind: str, haystack: str
) -> None:
    for sample in grids[kind, haystack]:
        assert len(sample.input_ids) == sample.prompt_tokens == sample.target_length - ANSWER_BUDGET
        assert sample.chat_template is (kind == "chat")
        assert (
            sample.prompt_sha256
            == hashlib.sha256(
                b"".join(i.to_bytes(8, "little", signed=True) for i in sample.input_ids)
            ).hexdigest()
        )


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_needle_ids_decode_to_the_needle_and_answer_ids_to_the_answer(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any], kind: str, haystack: str
) -> None:
    tokenizer = tokenizers[kind]
    for sample in grids[kind, haystack]:
        adjective, noun = sample.key.split("-")
        assert adjective in KEY_ADJECTIVES and noun in KEY_NOUNS
        assert re.fullmatch(r"[1-9]\d{6}", sample.answer)
        assert sample.needle_text == f"The special magic number for {sample.key} is {sample.answer}."
        start, end = sample.needle_span
        needle = tokenizer.decode(sample.input_ids[start:end])
        assert needle.lstrip() == sample.needle_text
        assert needle[: len(needle) - len(sample.needle_text)] in (" ", "\n\n")
        assert tokenizer.decode(sample.answer_ids) == " " + sample.answer
        text = tokenizer.decode(sample.input_ids)
        assert text.count(sample.answer) == 1  # the haystack never contains the value
        assert text.endswith(
            f"{sample.question}"
            + ("<|im_end|>\n<|im_start|>assistant\n" if kind == "chat" else "\n\n")
            + f"The special magic number for {sample.key} mentioned in the document is"
        )


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_plain_prompts_start_with_bos_and_chat_prompts_with_the_template(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any], kind: str, haystack: str
) -> None:
    tokenizer = tokenizers[kind]
    for sample in grids[kind, haystack]:
        text = tokenizer.decode(sample.input_ids)
        if kind == "chat":
            assert text.startswith("<|im_start|>user\nA long document follows.")
            assert text.count("<|im_start|>") == 2 and text.count("<|endoftext|>") == 0
        else:
            assert sample.input_ids[0] == tokenizer.bos_token_id
            assert text.startswith("<|endoftext|>A long document follows.")


def test_chat_template_modes(tiny_tokenizer: Any, tiny_chat_tokenizer: Any) -> None:
    def first(tokenizer: Any, mode: str) -> Sample:
        spec = NiahSpec(lengths=[256], depths=[50.0], haystack="noise", chat_template=mode)
        return generate_samples(spec, tokenizer, load_source("noise", 0))[0]

    assert first(tiny_chat_tokenizer, "auto").chat_template is True
    assert first(tiny_chat_tokenizer, "on").chat_template is True
    off = first(tiny_chat_tokenizer, "off")
    assert off.chat_template is False and "<|im_start|>" not in tiny_chat_tokenizer.decode(off.input_ids)
    assert first(tiny_tokenizer, "auto").chat_template is False
    assert off.key == first(tiny_tokenizer, "off").key  # the template changes tokens, never the sample
    with pytest.raises(UsageError, match="no chat template"):
        first(tiny_tokenizer, "on")


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_needle_sits_at_a_sentence_start_within_one_sentence_of_its_depth(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any], kind: str, haystack: str
) -> None:
    tokenizer = tokenizers[kind]
    worst = 0.0
    for sample in grids[kind, haystack]:
        offset, sentence, haystack_tokens = needle_offset(tokenizer, sample)
        assert offset <= sentence, (sample.sample_id, offset, sentence)
        worst = max(worst, offset / haystack_tokens)
    assert worst > 0  # the check above compared real, unequal positions


def test_needle_never_follows_a_cut_sentence(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any]
) -> None:
    cut = []
    for (kind, _), samples in grids.items():
        for sample in samples:
            hay, at = haystack_without_needle(sample)
            before = tokenizers[kind].decode(hay[:at])
            if before.strip() and not SENTENCE_END.search(before):
                cut.append((kind, sample.sample_id, before[-20:]))
    assert cut == []


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_decoded_prompts_retokenize_to_the_same_ids(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any], kind: str, haystack: str
) -> None:
    tokenizer = tokenizers[kind]
    for sample in grids[kind, haystack]:
        text = tokenizer.decode(sample.input_ids)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == sample.input_ids, sample.sample_id
        answer = tokenizer.decode(sample.input_ids + sample.answer_ids)
        assert (
            tokenizer(answer, add_special_tokens=False)["input_ids"] == sample.input_ids + sample.answer_ids
        )


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_same_spec_and_tokenizer_give_byte_identical_samples(
    grids: dict[Any, list[Sample]],
    tiny_tokenizer_dir: Path,
    tiny_chat_tokenizer_dir: Path,
    kind: str,
    haystack: str,
) -> None:
    from transformers import AutoTokenizer

    directory = tiny_chat_tokenizer_dir if kind == "chat" else tiny_tokenizer_dir
    fresh = AutoTokenizer.from_pretrained(str(directory))  # a separately loaded tokenizer instance
    again = generate_samples(niah_spec(haystack), fresh, load_source(haystack, 0))
    assert [s.model_dump_json() for s in again] == [s.model_dump_json() for s in grids[kind, haystack]]


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_a_different_seed_changes_keys_values_and_prose(
    grids: dict[Any, list[Sample]], tokenizers: dict[str, Any], kind: str, haystack: str
) -> None:
    base = grids[kind, haystack]
    other = generate_samples(niah_spec(haystack, seed=1), tokenizers[kind], load_source(haystack, 1))
    assert [s.sample_id for s in other] == [s.sample_id for s in base]
    assert all(a.answer != b.answer for a, b in zip(base, other, strict=True))
    assert sum(a.key != b.key for a, b in zip(base, other, strict=True)) >= len(base) - 2
    assert all(len(s.input_ids) == len(b.input_ids) for s, b in zip(other, base, strict=True))
    if haystack == "prose":
        for a, b in zip(base, other, strict=True):
            assert haystack_without_needle(a)[0] != haystack_without_needle(b)[0], a.sample_id


def haystack_streams(samples: list[Sample]) -> dict[int, list[int]]:
    """Per sample index, the longest haystack, after checking every other haystack is a prefix of it."""
    by_index: dict[int, list[list[int]]] = defaultdict(list)
    for sample in samples:
        by_index[sample.sample_index].append(haystack_without_needle(sample)[0])
    streams = {}
    for index, hays in by_index.items():
        longest = max(hays, key=len)
        for hay in hays:  # every haystack, and so every text before a needle, is a prefix of one stream
            assert longest[: len(hay)] == hay
        assert len({len(h) for h in hays}) > 1
        streams[index] = longest
    return streams


@pytest.mark.parametrize(("kind", "haystack"), CONFIGS)
def test_every_sample_reads_one_haystack_stream(
    grids: dict[Any, list[Sample]], kind: str, haystack: str
) -> None:
    streams = sorted(haystack_streams(grids[kind, haystack]).values(), key=len)
    for shorter, longer in itertools.pairwise(streams):  # one haystack for the grid, as RULER and NIAH do
        assert longer[: len(shorter)] == shorter


@pytest.mark.parametrize("haystack", ["prose", "essays"])
def test_haystack_per_sample_gives_each_sample_index_its_own_stream(
    tokenizers: dict[str, Any], haystack: str
) -> None:
    spec = niah_spec(haystack).model_copy(update={"haystack_per_sample": True})
    streams = haystack_streams(generate_samples(spec, tokenizers["plain"], load_source(haystack, 0)))
    assert streams[0][:200] != streams[1][:200]


# --------------------------------------------------------------------------------------------------
# Golden samples
# --------------------------------------------------------------------------------------------------


def tokenizer_digest(tokenizer: Any) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]


def golden_rows(grids: dict[Any, list[Sample]], tokenizers: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for kind, haystack in GOLDEN_CONFIGS:
        for sample in grids[kind, haystack]:
            rows.append(
                {
                    "config": f"{kind}/{haystack}",
                    "tokenizer": tokenizer_digest(tokenizers[kind]),
                    "sample_id": sample.sample_id,
                    "prompt_tokens": sample.prompt_tokens,
                    "needle_span": list(sample.needle_span),
                    "key": sample.key,
                    "answer": sample.answer,
                    "prompt_sha256": sample.prompt_sha256,
                }
            )
    return rows


def write_golden(rows: list[dict[str, Any]]) -> None:
    """Rewrite the golden file; only when DIFFBENCH_REGEN_GOLDEN=1 (after an intended change)."""
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), encoding="utf-8")


def test_samples_match_the_golden_file(grids: dict[Any, list[Sample]], tokenizers: dict[str, Any]) -> None:
    rows = golden_rows(grids, tokenizers)
    if os.environ.get("DIFFBENCH_REGEN_GOLDEN") == "1":
        write_golden(rows)
    golden = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    assert {row["tokenizer"] for row in golden} == {row["tokenizer"] for row in rows}, (
        "the locally trained tokenizer changed (new tokenizers version?): check the diff, then "
        "regenerate with DIFFBENCH_REGEN_GOLDEN=1"
    )
    assert len(golden) == len(rows) == len(GOLDEN_CONFIGS) * len(LENGTHS) * len(DEPTHS) * SAMPLES_PER_CELL
    for expected, actual in zip(golden, rows, strict=True):
        assert actual == expected


def test_golden_keys_and_answers_do_not_depend_on_the_tokenizer(grids: dict[Any, list[Sample]]) -> None:
    plain, chat = grids["plain", "prose"], grids["chat", "prose"]
    assert [(s.sample_id, s.key, s.answer) for s in plain] == [(s.sample_id, s.key, s.answer) for s in chat]
    assert all(a.prompt_sha256 != b.prompt_sha256 for a, b in zip(plain, chat, strict=True))


# --------------------------------------------------------------------------------------------------
# User haystacks
# --------------------------------------------------------------------------------------------------

COLORS = ["Red", "Blue", "Green", "Gold", "Gray", "Pink", "Teal", "Plum", "Rust", "Sand"]
THINGS = ["boats", "kites", "lamps", "bells", "gates"]


def story(name: str, sentences: int) -> str:
    """Distinct, recognisable sentences in paragraphs of four."""
    lines = [
        f"{COLORS[i % len(COLORS)]} {THINGS[i % len(THINGS)]} of {name} waited by the shore "
        f"for hour {chr(97 + i % 26)}."
        for i in range(sentences)
    ]
    return "\n\n".join(" ".join(lines[i : i + 4]) for i in range(0, len(lines), 4)) + "\n"


def haystack_sentences(tokenizer: Any, sample: Sample) -> list[str]:
    hay, _ = haystack_without_needle(sample)
    text = tokenizer.decode(hay)
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip())]


def test_a_user_text_file_is_a_haystack(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = tmp_path / "story.txt"
    path.write_text(story("Ardent", 30), encoding="utf-8")
    known = set(re.split(r"(?<=\.)\s+", path.read_text().strip()))
    spec = niah_spec(str(path), lengths=[256, 512])
    source = load_source(str(path), 0)
    assert source.name == "files"
    samples = generate_samples(spec, tiny_tokenizer, source)
    assert len(samples) == 2 * len(DEPTHS) * SAMPLES_PER_CELL
    for sample in samples:
        assert len(sample.input_ids) == sample.target_length - ANSWER_BUDGET
        sentences = haystack_sentences(tiny_tokenizer, sample)
        assert set(sentences[:-1]) <= known  # all but the (possibly cut) last sentence come from the file
        assert tiny_tokenizer.decode(sample.input_ids).count(sample.needle_text) == 1
    assert generate_samples(spec, tiny_tokenizer, load_source(str(path), 0)) == samples


def test_a_directory_of_text_files_is_a_haystack(tmp_path: Path, tiny_tokenizer: Any) -> None:
    (tmp_path / "a.txt").write_text(story("Ardent", 12), encoding="utf-8")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "b.txt").write_text(story("Bristol", 12), encoding="utf-8")
    (tmp_path / "notes.md").write_text(story("Mdfile", 12), encoding="utf-8")
    source = load_source(str(tmp_path), 0)
    spec = niah_spec(str(tmp_path), lengths=[1024])
    samples = generate_samples(spec, tiny_tokenizer, source)
    text = " ".join(" ".join(haystack_sentences(tiny_tokenizer, s)) for s in samples)
    assert "of Ardent" in text and "of Bristol" in text  # both .txt files, the nested one too
    assert "of Mdfile" not in text  # other extensions are not read
    for sample in samples:
        assert len(sample.input_ids) == 1024 - ANSWER_BUDGET
    single = load_source(str(tmp_path / "a.txt"), 0)
    assert single.fingerprint != source.fingerprint
    assert load_source(str(tmp_path), 0).fingerprint == source.fingerprint


def test_a_file_of_exactly_the_minimum_sentences_is_accepted(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = tmp_path / "short.txt"
    path.write_text(story("Ardent", MIN_SENTENCES), encoding="utf-8")
    samples = generate_samples(niah_spec(str(path), lengths=[256]), tiny_tokenizer, load_source(str(path), 0))
    assert all(len(s.input_ids) == 256 - ANSWER_BUDGET for s in samples)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty-file", "is empty"),
        ("blank-file", "is empty"),
        ("dir-without-txt", "holds no .txt files"),
        ("three-sentences", "too short: 3 sentences"),
        ("missing", "neither 'prose', 'noise', 'essays' nor an existing"),
    ],
)
def test_unusable_haystacks_raise_haystack_error(tmp_path: Path, setup: str, message: str) -> None:
    if setup == "empty-file":
        target = tmp_path / "empty.txt"
        target.write_text("")
    elif setup == "blank-file":
        target = tmp_path / "blank.txt"
        target.write_text("\n\n   \n\t\n")
    elif setup == "dir-without-txt":
        target = tmp_path / "docs"
        target.mkdir()
        (target / "notes.md").write_text(story("Mdfile", 20))
    elif setup == "three-sentences":
        target = tmp_path / "three.txt"
        target.write_text("One sentence here. Another one follows. And a third one ends it.\n")
    else:
        target = tmp_path / "does-not-exist.txt"
    with pytest.raises(HaystackError) as caught:
        load_source(str(target), 0)
    assert message in str(caught.value)
    assert str(target) in str(caught.value)
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2


def test_a_length_too_short_for_the_frame_is_a_usage_error(tiny_tokenizer: Any) -> None:
    with pytest.raises(UsageError, match="too short"):
        generate_samples(niah_spec("noise", lengths=[96]), tiny_tokenizer, load_source("noise", 0))
