"""The probe generators: byte-identical items for a seed and tokenizer (golden hashes), and the
invariants the exact checks rely on (unique non-round numbers, exact lengths, gold where asked)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from diffbench.haystack.sources import load_source
from diffbench.specs import HallucSpec
from diffbench.tasks.probes import PROBE_NAMES, generate_items, parse_probes
from diffbench.tasks.probes.core import ProbeItem
from diffbench.tasks.probes.metrics import Lexicon, extract_numbers

LENGTH = 2048  # the tiny test tokenizer (600 merges) spends many tokens on the syllable names
SAMPLES = 6

# sha256 of the items' JSON for seed 0, the tiny tokenizer, 6 samples at 2048 tokens. A change here
# means a run's items changed: resumed runs would be refused, so bump only on purpose.
GOLDEN = {
    "factsum": "9210c9ea30efd2fb792079971d6571c6033e63f7112914607bcef5bf4374044e",
    "factqa": "5b940040746a655c57fbde96f292c0dd9d5f9007697ca9c4160aef3c94c1addb",
    "unanswerable": "bcbf3c00cefa9b56092040f74943d56c3fb1078cb2160118271c5d3dfd387874",
    "counterfactual": "984d5878f8ead1dbde16ee23b58d788040cae819ee3a15805980faa1e54a5ac9",
    "contrastive": "1aa1c92f14a0d2b1604db8f2dd26cb2579926539fbe2fda17bbc19d62eba2920",
}


def items_of(tokenizer: Any, probe: str, seed: int = 0) -> list[ProbeItem]:
    spec = HallucSpec(probes=[probe], lengths=[LENGTH], samples_per_cell=SAMPLES, seed=seed)
    return generate_items(spec, tokenizer, load_source("prose", seed))


def digest(items: list[ProbeItem]) -> str:
    return hashlib.sha256("".join(item.model_dump_json() + "\n" for item in items).encode()).hexdigest()


@pytest.fixture(scope="module")
def generated(tiny_tokenizer: Any) -> dict[str, list[ProbeItem]]:
    return {probe: items_of(tiny_tokenizer, probe) for probe in PROBE_NAMES}


@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_items_match_their_golden_hash(generated: dict[str, list[ProbeItem]], probe: str) -> None:
    assert digest(generated[probe]) == GOLDEN[probe]


def test_generation_is_deterministic_and_seeded(
    tiny_tokenizer: Any, generated: dict[str, list[ProbeItem]]
) -> None:
    again = items_of(tiny_tokenizer, "factqa")
    assert digest(again) == digest(generated["factqa"])
    other = items_of(tiny_tokenizer, "factqa", seed=1)
    assert digest(other) != digest(generated["factqa"])


@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_prompts_are_token_exact_and_the_gold_lies_at_its_depth(
    tiny_tokenizer: Any, generated: dict[str, list[ProbeItem]], probe: str
) -> None:
    for item in generated[probe]:
        assert item.prompt_tokens == len(item.input_ids) == LENGTH - item.max_new_tokens
        start, end = item.gold_span
        if item.variant == "removed":
            continue
        gold_text = tiny_tokenizer.decode(item.input_ids[start:end])
        assert gold_text.strip() and gold_text.strip() in item.context
        middle = (start - 40) / max(1, item.prompt_tokens - 80)  # the document between frame and question
        assert abs(middle * 100 - item.depth) < 30, (item.item_id, middle)
        for sentence in item.fact_sentences:
            assert sentence in item.context, (item.item_id, sentence)
        assert len(item.candidate_ids) == len(item.candidates) == len(item.candidate_kinds)


def test_numbers_in_a_document_are_unique_non_round_and_never_substrings(
    generated: dict[str, list[ProbeItem]],
) -> None:
    for probe in ("factsum", "factqa", "contrastive"):
        for item in generated[probe]:
            numbers = sorted(extract_numbers(" ".join(re.findall(r"\d[\d,.]*", item.context))))
            assert numbers, item.item_id
            bare = [n.replace(".", "") for n in numbers]
            for a in bare:
                assert not any(a != b and a in b for b in bare), (item.item_id, a, bare)
            for number in numbers:
                if "." not in number:
                    assert int(number) % 10 != 0, (item.item_id, number)
            years = [int(n) for n in numbers if "." not in n and len(n) == 4 and 1850 <= int(n) <= 2019]
            assert len(years) == len(set(years))


def test_decoys_are_in_the_lexicon_but_never_in_the_document(generated: dict[str, list[ProbeItem]]) -> None:
    for item in generated["factsum"] + generated["factqa"]:
        lexicon = Lexicon(item.lexicon)
        placed = lexicon.find(item.context)
        decoys = set(item.lexicon.values()) - placed
        assert len(decoys) >= 4, item.item_id
        assert all(name not in item.context for name in decoys)


def test_variants_and_candidates_per_probe(generated: dict[str, list[ProbeItem]]) -> None:
    assert [i.variant for i in generated["factsum"][:3]] == ["xsum", "cnndm", "multinews"]
    assert [i.variant for i in generated["factqa"][:2]] == ["single", "multi"]
    unanswerable = generated["unanswerable"]
    assert [i.answerable for i in unanswerable] == [True, False] * (SAMPLES // 2)
    assert {i.variant for i in unanswerable} == {"control", "removed", "decoy"}
    for item in unanswerable:
        assert "abstain" in item.candidate_kinds
        if not item.answerable:
            assert item.candidates[0] == "unanswerable"
            removed = item.candidates[item.candidate_kinds.index("removed")]
            if item.variant == "removed":
                assert removed not in item.context  # the supporting sentence is gone
    factqa = generated["factqa"][0]
    assert factqa.candidate_kinds[0] == "gold" and factqa.candidate_kinds[-1] == "novel"
    assert factqa.candidates[0] in factqa.context and factqa.candidates[-1] not in factqa.context
    counterfactual = generated["counterfactual"]
    assert counterfactual[4].variant == "magic" and counterfactual[0].variant == "conflict"
    assert counterfactual[0].closed_book_ids is not None
    assert "Recent records state that" in counterfactual[0].context
    contrastive = generated["contrastive"][0]
    assert contrastive.candidate_kinds == [
        "faithful", "number_swap", "entity_swap", "date_swap", "negation", "extrinsic",
    ]  # fmt: skip
    faithful = contrastive.candidates[0]
    assert all(negative != faithful for negative in contrastive.candidates[1:])
    assert " not " in contrastive.candidates[4] and contrastive.candidates[5].startswith(faithful)


def test_parse_probes_accepts_names_and_aliases() -> None:
    assert parse_probes("p1, factqa,P5,p1") == ["factsum", "factqa", "contrastive"]


# ----------------------------------------------------------------------------- few-shot demos


def test_fewshot_demos_open_the_qa_prompts_with_disjoint_names_and_numbers(tiny_tokenizer: Any) -> None:
    from diffbench.tasks.probes.core import DEMO_HEADER
    from diffbench.tasks.probes.registry import PROBES
    from diffbench.tasks.probes.scoring import GeneratedOutputs, score_generated

    spec = HallucSpec(probes=list(PROBE_NAMES), lengths=[4096], samples_per_cell=4, seed=0, fewshot=4)
    plain = HallucSpec(probes=list(PROBE_NAMES), lengths=[4096], samples_per_cell=4, seed=0)
    with_demos = generate_items(spec, tiny_tokenizer, load_source("prose", 0))
    without = generate_items(plain, tiny_tokenizer, load_source("prose", 0))
    for item, bare in zip(with_demos, without, strict=True):
        if not PROBES[item.probe].qa:  # summaries and likelihood pairs: unchanged
            assert item == bare
            continue
        opening = tiny_tokenizer.decode(item.input_ids[: item.document_span[0]], skip_special_tokens=True)
        demos = opening.split(DEMO_HEADER.strip(), 1)[1].split("Now the task itself.")[0]
        answers = [line.removeprefix("Answer: ") for line in demos.splitlines() if line.startswith("Answer:")]
        assert len(answers) == 4 and demos.count("Question:") == 4
        assert item.template_text == bare.template_text  # the checks never read the demos as template
        # the same facts and question; the filler gives the demos their tokens
        assert (item.fact_sentences, item.answer, item.question) == (
            bare.fact_sentences,
            bare.answer,
            bare.question,
        )
        assert item.prompt_tokens == bare.prompt_tokens and len(item.context) < len(bare.context)
        if item.probe == "unanswerable":
            assert answers[1] == answers[3] == "unanswerable" != answers[0]
        numbers = extract_numbers(demos)
        assert numbers and not numbers & extract_numbers(item.context)  # disjoint from the item's values
        # A value copied from a demo is not in the document: the checks call it unsupported.
        copied = next(answer for answer in answers if answer != "unanswerable")
        lexicon = Lexicon(item.lexicon)
        verdict = score_generated(item, GeneratedOutputs(copied), lexicon)
        assert not verdict.correct
        if item.probe == "factqa":
            assert verdict.details["extrinsic"] is True


def test_fewshot_zero_keeps_the_fingerprint_of_runs_made_before_it() -> None:
    from diffbench.specs import stable_hash

    spec = HallucSpec(probes=["factqa"], lengths=[4096])
    before = {k: v for k, v in spec.model_dump(mode="json").items() if k != "fewshot"}
    assert spec.fingerprint() == stable_hash(before)[:16]
    assert HallucSpec(probes=["factqa"], lengths=[4096], fewshot=2).fingerprint() != spec.fingerprint()


def test_the_probe_registry_holds_every_probe_and_the_modes_it_runs_in() -> None:
    from diffbench.tasks.probes import builder_of
    from diffbench.tasks.probes.registry import ALIASES, PROBES, modes_of

    assert [ALIASES[f"p{n}"] for n in range(1, 6)] == list(PROBE_NAMES)
    assert all(callable(builder_of(name)) for name in PROBE_NAMES)  # a module with build() for each
    assert modes_of("factqa", "both") == ["generate", "forced"]
    assert modes_of("factsum", "both") == modes_of("factsum", "forced") == ["generate"]  # P1 only generates
    assert modes_of("contrastive", "generate") == ["forced"]  # P5 only scores likelihoods
    assert [name for name, probe in PROBES.items() if probe.closed_book_candidates] == [
        "counterfactual",
        "contrastive",
    ]
