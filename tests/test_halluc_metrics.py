"""The probes' exact checks on hand-built outputs: every verdict's branches (docs/design/probes.md P1-P5)."""

from __future__ import annotations

import pytest

from diffbench.tasks.probes.metrics import (
    Lexicon,
    canonical_number,
    check_abstention,
    check_answer,
    check_choice,
    check_conflict,
    check_summary,
    extract_numbers,
    k_precision,
    memorization_ratio,
    normalize_answer,
    novel_ngram_rate,
    pairwise_preferences,
    token_f1,
    value_present,
)

LEXICON = Lexicon(
    {
        "Veltrix Labs": "Veltrix Labs",
        "Veltrix": "Veltrix Labs",
        "Mira Kessling": "Mira Kessling",
        "Kessling": "Mira Kessling",
        "Zorbin Works": "Zorbin Works",
        "Zorbin": "Zorbin Works",
        "Dorvane": "Dorvane",
        "Quelto Systems": "Quelto Systems",  # a decoy: never in the document
    }
)
FILLER = (
    "The old gardener walked slowly along the quiet path beside the river every single morning. "
    "Rain fell softly on the roof of the barn while the horses slept in the warm straw."
)
FACTS = [
    "Veltrix Labs was founded in 1923.",
    "Veltrix Labs employs 4,372 people.",
    "The chief executive of Veltrix Labs is Mira Kessling.",
    "Zorbin Works employs 5,118 people.",
    "Zorbin Works grew by 13.6 percent last year.",
    "Zorbin Works is headquartered in Dorvane.",
]
CONTEXT = " ".join(FACTS[:3]) + " " + FILLER + " " + " ".join(FACTS[3:])
TEMPLATE = "Summarize the document in 1 sentence.\n#Summary#:"
OWNERS = {
    "Veltrix Labs": "Veltrix Labs",
    "Mira Kessling": "Veltrix Labs",
    "Zorbin Works": "Zorbin Works",
    "Dorvane": "Zorbin Works",
}
OWNERSHIP = {"1923": "Veltrix Labs", "4372": "Veltrix Labs", "5118": "Zorbin Works", "13.6": "Zorbin Works"}
KEY = [("Veltrix Labs", "1923"), ("Veltrix Labs", "4372"), ("Veltrix Labs", "Mira Kessling")]


def summary(output: str):  # type: ignore[no-untyped-def]
    return check_summary(output, CONTEXT, TEMPLATE, LEXICON, KEY, OWNERS, OWNERSHIP, FACTS)


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("It employs 4,372 people.", {"4372"}),
        ("It employs 4372 people.", {"4372"}),
        ("growth of 12.5 percent and 12.5%", {"12.5"}),
        ("revenue of 1,234.50 million", {"1234.5"}),
        ("founded in 1923.", {"1923"}),
        ("four thousand three hundred seventy-two workers", {"4372"}),
        ("one of three offices", set()),  # small number words are ordinary language
        ("no digits here", set()),
    ],
)
def test_numbers_are_extracted_in_one_canonical_form(text: str, numbers: set[str]) -> None:
    assert extract_numbers(text) == numbers


def test_canonical_number_and_normalize_answer() -> None:
    assert canonical_number("4,372") == "4372"
    assert canonical_number("7", "0") == "7"
    assert canonical_number("12", "50") == "12.5"
    assert normalize_answer("The  Veltrix Labs!") == "veltrix labs"


def test_lexicon_is_case_sensitive_at_word_boundaries() -> None:
    assert LEXICON.find("Mira Kessling and Veltrix met.") == {"Mira Kessling", "Veltrix Labs"}
    assert LEXICON.find("veltrix labs and Veltrixian") == set()


def test_value_present_accepts_equivalent_renderings_only() -> None:
    assert value_present("4,372", "roughly 4372 people")
    assert not value_present("4,372", "about 43720 people")
    assert value_present("Dorvane", "in dorvane.")
    assert not value_present("Dorvane", "Dorvanes")


def test_token_f1_k_precision_and_novel_ngrams() -> None:
    assert token_f1("Mira Kessling", "Mira Kessling") == 1.0
    assert token_f1("the chief is Mira", "Mira Kessling") == pytest.approx(
        2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    )
    assert token_f1("nothing", "Mira") == 0.0
    assert k_precision("Veltrix Labs employs aliens", CONTEXT) == pytest.approx(3 / 4)
    assert k_precision("", CONTEXT) is None
    assert novel_ngram_rate("Veltrix Labs employs", CONTEXT) == 0.0
    assert novel_ngram_rate("Veltrix Labs hires", CONTEXT) == 1.0


# ----------------------------------------------------------------------------- P1


def test_a_faithful_summary_is_hallucination_free_with_full_recall() -> None:
    check = summary("Veltrix Labs, founded in 1923, employs 4372 people and is led by Mira Kessling.")
    assert check.hallucination_free
    assert check.fact_recall == 1.0
    assert check.number_precision == 1.0 and check.entity_precision == 1.0
    assert check.degenerate == [] and check.misattributed == []


def test_a_swapped_number_is_a_misattribution() -> None:
    check = summary("Veltrix Labs was founded in 1923. Veltrix Labs employs 5,118 people.")
    assert check.misattributed == [("Veltrix Labs", "5118")]
    assert check.unsupported_numbers == []
    assert check.fact_recall == pytest.approx(1 / 3)
    assert not check.hallucination_free


def test_a_person_of_the_company_owns_its_numbers_and_two_owners_excuse_a_sentence() -> None:
    assert (
        summary("Mira Kessling runs a firm of 4,372 people founded in 1923 by Veltrix.").misattributed == []
    )
    both = summary("Veltrix Labs and Zorbin Works employ 4,372 and 5,118 people; Veltrix began in 1923.")
    assert both.misattributed == []
    assert both.hallucination_free


def test_an_invented_name_and_an_out_of_context_number_are_unsupported() -> None:
    invented = summary("Veltrix Labs was founded in 1923 by Quelto Systems.")
    assert invented.unsupported_entities == ["Quelto Systems"]
    assert invented.entity_precision == pytest.approx(1 / 2)
    assert not invented.hallucination_free
    extrinsic = summary("Veltrix Labs was founded in 1923 and employs 9,999 people.")
    assert extrinsic.unsupported_numbers == ["9999"]
    assert extrinsic.number_precision == pytest.approx(1 / 2)
    assert not extrinsic.hallucination_free


def test_numbers_of_the_prompt_template_are_not_hallucinations() -> None:
    check = summary("In 1 sentence: Veltrix Labs was founded in 1923.")
    assert check.unsupported_numbers == []
    assert check.hallucination_free


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("Veltrix Labs.", "short"),
        ("Veltrix Labs was founded in 1923. Veltrix Labs was founded in 1923.", "repetition"),
        (
            "Veltrix Labs was founded in 1923. The old gardener walked slowly along the quiet path "
            "beside the river every single morning. Rain fell softly on the roof of the barn.",
            "copied_filler",
        ),
        ("The company is doing well and has many people working for it.", "no_facts"),
    ],
)
def test_degenerate_outputs(output: str, reason: str) -> None:
    check = summary(output)
    assert reason in check.degenerate
    assert not check.hallucination_free


def test_known_blind_spots_negation_and_unknown_capitalised_words() -> None:
    """Negations pass P1 (P5 covers them); an unknown capitalised word is only the weaker signal."""
    negated = summary("Veltrix Labs was not founded in 1923, and Hendricks says it employs 4,372 people.")
    assert negated.hallucination_free
    assert negated.unknown_capitalised == ["Hendricks"]


# ----------------------------------------------------------------------------- P2

OTHERS = [("5,118", "distractor"), ("6,241", "novel")]


def answer(output: str, gold: str = "4,372", others: list[tuple[str, str]] = OTHERS):  # type: ignore[no-untyped-def]
    return check_answer(output, gold, others, CONTEXT, "How many people does Veltrix Labs employ?", LEXICON)


def test_the_gold_value_alone_is_correct_and_grounded() -> None:
    check = answer("4372")
    assert check.correct and check.grounded and check.hallucination_free
    assert not check.distractor_confusion and not check.extrinsic and not check.abstained
    assert check.token_f1 == 1.0  # SQuAD normalisation drops the comma


def test_a_hedge_listing_two_values_is_not_correct() -> None:
    check = answer("either 4,372 or 5,118")
    assert not check.correct
    assert check.distractor_confusion
    assert check.grounded


def test_a_distractor_value_is_confusion_and_a_novel_value_extrinsic() -> None:
    distractor = answer("5,118 people")
    assert distractor.distractor_confusion and not distractor.correct and distractor.grounded
    novel = answer("6,241")
    assert novel.extrinsic and not novel.grounded and novel.unsupported_numbers == ["6241"]


def test_a_name_answer_counts_by_alias_and_an_invented_name_is_ungrounded() -> None:
    others = [("Quelto Systems", "novel")]
    assert answer("Kessling", gold="Mira Kessling", others=others).correct
    wrong = answer("Quelto Systems", gold="Mira Kessling", others=others)
    assert not wrong.correct and not wrong.grounded and wrong.unsupported_entities == ["Quelto Systems"]


def test_abstention_needs_the_lexicon_and_no_value_and_not_the_bare_word_not() -> None:
    assert answer("The answer is not mentioned in the article.").abstained
    assert not answer("It was not 4,372.").abstained  # a value given: no abstention
    assert not answer("Veltrix Labs did not hire anyone.").abstained  # FaithEval's 'not' is no abstention


# ----------------------------------------------------------------------------- P3


def abstention(output: str, answerable: bool):  # type: ignore[no-untyped-def]
    return check_abstention(output, answerable, "4,372", OTHERS, CONTEXT, "How many?", LEXICON)


def test_abstaining_on_an_unanswerable_item_is_right() -> None:
    check = abstention("unanswerable", answerable=False)
    assert check.verdict and check.abstained and not check.fabricated and check.fabrication is None


def test_fabrication_splits_into_bait_and_extrinsic() -> None:
    bait = abstention("5,118", answerable=False)
    assert bait.fabricated and bait.fabrication == "bait" and not bait.verdict
    extrinsic = abstention("7,777 people", answerable=False)
    assert extrinsic.fabricated and extrinsic.fabrication == "extrinsic"
    hedged = abstention("Unknown, possibly 4,372", answerable=False)
    assert not hedged.abstained and hedged.fabricated


def test_abstaining_on_an_answerable_control_is_over_abstention() -> None:
    over = abstention("unanswerable", answerable=True)
    assert not over.verdict and over.abstained
    right = abstention("4,372", answerable=True)
    assert right.verdict and not right.abstained


# ----------------------------------------------------------------------------- P4


@pytest.mark.parametrize(
    ("output", "follow", "parametric"),
    [
        ("Melbourne", True, False),
        ("Canberra", False, True),
        ("Melbourne or Canberra", False, False),
        ("Sydney", False, False),
    ],
)
def test_conflict_follow_and_parametric(output: str, follow: bool, parametric: bool) -> None:
    check = check_conflict(output, "Canberra", "Melbourne", None)
    assert (check.follow, check.parametric, check.closed_book_known) == (follow, parametric, None)


def test_closed_book_knowledge_and_memorization_ratio() -> None:
    assert check_conflict("Melbourne", "Canberra", "Melbourne", "It is Canberra.").closed_book_known is True
    assert check_conflict("Melbourne", "Canberra", "Melbourne", "Sydney").closed_book_known is False
    assert memorization_ratio(parametric=1, follow=3) == 0.25
    assert memorization_ratio(0, 0) is None


# ----------------------------------------------------------------------------- forced choice and P5


def test_forced_choice_argmax_abstention_and_margin() -> None:
    kinds = ["gold", "distractor", "novel", "abstain"]
    right = check_choice([-1.0, -2.0, -3.0, -4.0], kinds)
    assert right.correct and right.choice_kind == "gold" and right.margin == 1.0 and not right.abstained
    wrong = check_choice([-2.0, -1.0, -3.0, -4.0], kinds)
    assert not wrong.correct and wrong.choice_kind == "distractor" and wrong.margin == -1.0
    first = check_choice([-0.5, -3.0, -3.0], ["abstain", "removed", "distractor"])
    assert first.correct and first.abstained  # on unanswerable items 'unanswerable' is candidates[0]
    abstained = check_choice([-5.0, -3.0, -0.5], ["removed", "distractor", "abstain"])
    assert abstained.abstained and abstained.choice_kind == "abstain"
    tie = check_choice([-1.0, -1.0], ["gold", "distractor"])
    assert tie.choice == 0  # ties go to the first candidate
    with pytest.raises(ValueError):
        check_choice([], [])


def test_pairwise_preferences_per_operation() -> None:
    wins = pairwise_preferences(-10.0, {"number_swap": -12.0, "negation": -9.0, "extrinsic": -10.0})
    assert wins == {"number_swap": True, "negation": False, "extrinsic": False}
