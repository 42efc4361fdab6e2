"""P2 FactQA with distractors: single-hop (Qasper-like) and two-hop bridge (HotpotQA/2Wiki-like).

Distractor companies carry the same attribute types, so a wrong answer is usually another
in-context value: the attention-misallocation failure the Diff paper targets (Table 4b).
"""

from __future__ import annotations

import random

from diffbench.seeding import rng_for
from diffbench.tasks.probes.core import (
    ANSWER_PREFIX,
    BRIDGE_QUESTIONS,
    ENTITY_ATTRIBUTES,
    HOTPOT_INSTRUCTION,
    HOTPOT_QUESTION,
    NUMERIC_KINDS,
    QASPER_INSTRUCTION,
    QASPER_QUESTION,
    Builder,
    Company,
    FactWorld,
    Insert,
    ProbeItem,
    make_world,
    numeric_ownership,
    question_for,
    render_fact,
    render_value,
    seeded_depths,
)

VARIANTS = ("single", "multi")
MAX_NEW_TOKENS = {"single": 128, "multi": 32}  # LongBench: Qasper 128, HotpotQA / 2WikiMQA 32
QA_ATTRIBUTES = ("founded_year", "employees", "hq_city", "ceo", "product", "revenue_musd", "growth_pct")
COMPANIES = 4


def qa_world(rng: random.Random, asked: str, bridge: bool) -> FactWorld:
    """Every company has the asked attribute (hard distractors), plus two others (and a CEO to bridge)."""
    extra = rng.sample([a for a in QA_ATTRIBUTES if a not in (asked, "ceo")], 2)
    attributes = [asked, *extra, *(["ceo"] if bridge else [])]
    return make_world(rng, COMPANIES, attributes, attributes)


def rendered(attribute: str, value: str) -> str:
    return render_value(attribute, value)


def candidates_for(world: FactWorld, attribute: str, gold: str) -> tuple[list[str], list[str]]:
    """Gold first, then every distractor's value of the same attribute, then one never-mentioned value."""
    values = [rendered(attribute, gold)]
    kinds = ["gold"]
    for company in world.companies[1:]:
        if attribute in company.values:
            values.append(rendered(attribute, company.values[attribute]))
            kinds.append("distractor")
    if attribute in NUMERIC_KINDS:
        novel = world.numbers.make(NUMERIC_KINDS[attribute])
    else:
        novel = next(d.name for d in world.decoys if d.kind == ENTITY_ATTRIBUTES[attribute])
    values.append(rendered(attribute, novel))
    kinds.append("novel")
    return values, kinds


def scattered(world: FactWorld, rng: random.Random, skip: set[tuple[str, str]], depth: float) -> list[Insert]:
    """Every fact not in ``skip`` (company, attribute), each at its own seeded depth."""
    sentences = [
        render_fact(company, attribute, rng.randrange(3))
        for company in world.companies
        for attribute in company.values
        if (company.entity.name, attribute) not in skip
    ]
    return [Insert(d, s) for d, s in zip(seeded_depths(rng, len(sentences), depth), sentences, strict=True)]


def sentences_of(inserts: list[Insert]) -> list[str]:
    return [insert.text for insert in inserts]


def build_qa(
    builder: Builder,
    probe: str,
    variant: str,
    length: int,
    depth: float,
    index: int,
    supported: bool = True,
    decoy_subject: bool = False,
) -> ProbeItem:
    """A P2 item; P3 reuses it with the supporting sentence removed or a decoy company asked about."""
    item_id = f"{probe}/{variant}/{length}/{depth:g}/{index}"
    rng = rng_for(builder.seed, "probe", item_id)
    bridge = variant == "multi"
    asked = rng.choice(tuple(BRIDGE_QUESTIONS) if bridge else QA_ATTRIBUTES)
    world = qa_world(rng, asked, bridge)
    focal: Company = world.focal
    gold_value = focal.values[asked]
    if bridge:
        question = BRIDGE_QUESTIONS[asked].format(ceo=focal.values["ceo"])
        gold_insert = Insert(depth, render_fact(focal, "ceo", rng.randrange(3)), gold=True)
        skip = {(focal.entity.name, "ceo")}
        instruction, question_text = HOTPOT_INSTRUCTION, HOTPOT_QUESTION.format(question=question)
    else:
        subject = next(d for d in world.decoys if d.kind == "company") if decoy_subject else focal.entity
        question = question_for(Company(subject, focal.values), asked)
        gold_insert = Insert(depth, render_fact(focal, asked, rng.randrange(3)), gold=True)
        skip = {(focal.entity.name, asked)}
        instruction, question_text = QASPER_INSTRUCTION, QASPER_QUESTION.format(question=question)
    inserts = scattered(world, rng, skip, depth)
    if supported or decoy_subject:  # about a decoy, the focal company's own value stays in as bait
        inserts.insert(0, gold_insert)
    elif not bridge:  # the answer's sentence is gone; another fact of the company keeps it in view
        others = [a for a in focal.values if a != asked]
        inserts = [
            i for i in inserts if i.text not in {render_fact(focal, a, v) for a in others for v in range(3)}
        ]
        inserts.insert(0, Insert(depth, " ".join(render_fact(focal, a, 0) for a in others), gold=True))
    candidates, kinds = candidates_for(world, asked, gold_value)
    answerable = supported and not decoy_subject
    if probe == "unanswerable":
        candidates.append("unanswerable")
        kinds.append("abstain")
        if not answerable:  # candidates[0] is always the right answer
            kinds[0] = "removed"
            candidates = [candidates[-1], *candidates[:-1]]
            kinds = [kinds[-1], *kinds[:-1]]
    return builder.item(
        item_id=item_id,
        probe=probe,
        variant=variant,
        length=length,
        depth=depth,
        index=index,
        instruction=instruction,
        question_text=question_text,
        answer_prefix=ANSWER_PREFIX,
        inserts=inserts,
        question=question,
        answer=candidates[0],
        fact_sentences=sentences_of(inserts),
        key_facts=[(focal.entity.name, gold_value)],
        owners=world.owners(),
        ownership=numeric_ownership(world),
        lexicon=world.lexicon(),
        candidates=candidates,
        candidate_kinds=kinds,
        answerable=answerable,
        max_new_tokens=MAX_NEW_TOKENS["multi" if bridge else "single"],
        extra={"attribute": asked, "gold_value": rendered(asked, gold_value), "decoy_subject": decoy_subject},
    )


def build(builder: Builder, length: int, depth: float, index: int) -> ProbeItem:
    return build_qa(builder, "factqa", VARIANTS[index % len(VARIANTS)], length, depth, index)
