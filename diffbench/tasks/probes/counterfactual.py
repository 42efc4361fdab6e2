"""P4 Counterfactual needle: a needle that contradicts a well-known fact, on the NIAH depth grid.

"Recent records state that the capital of Australia is Melbourne." Following the context (answering
Melbourne) is contextual faithfulness; answering Canberra is the model's prior winning. A
closed-book run (no document) tells which facts the model knows. Every fifth item is the Diff
paper's fictional magic-number needle instead: a knowledge-free control.
"""

from __future__ import annotations

from typing import Any

from diffbench.seeding import rng_for
from diffbench.tasks.probes.core import ANSWER_PREFIX, Builder, Insert, NameMaker, ProbeItem

# One fact a line: question | original o | substitute s | statement ({} takes the value).
_FACT_TABLE = """
What is the capital of Australia? | Canberra | Melbourne | the capital of Australia is {}
What is the capital of Canada? | Ottawa | Toronto | the capital of Canada is {}
What is the capital of France? | Paris | Lyon | the capital of France is {}
What is the capital of Japan? | Tokyo | Osaka | the capital of Japan is {}
What is the capital of Italy? | Rome | Milan | the capital of Italy is {}
What is the capital of Germany? | Berlin | Munich | the capital of Germany is {}
What is the capital of Spain? | Madrid | Seville | the capital of Spain is {}
What is the capital of Brazil? | Brasilia | Rio de Janeiro | the capital of Brazil is {}
What is the capital of Turkey? | Ankara | Istanbul | the capital of Turkey is {}
What is the capital of Egypt? | Cairo | Alexandria | the capital of Egypt is {}
What is the capital of Russia? | Moscow | Kazan | the capital of Russia is {}
What is the capital of China? | Beijing | Shanghai | the capital of China is {}
What is the capital of India? | New Delhi | Mumbai | the capital of India is {}
What is the capital of Kenya? | Nairobi | Mombasa | the capital of Kenya is {}
What is the capital of Norway? | Oslo | Bergen | the capital of Norway is {}
What is the capital of Scotland? | Edinburgh | Glasgow | the capital of Scotland is {}
What is the chemical symbol of gold? | Au | Ag | the chemical symbol of gold is {}
What is the chemical symbol of iron? | Fe | Ir | the chemical symbol of iron is {}
What is the chemical symbol of sodium? | Na | So | the chemical symbol of sodium is {}
What is the chemical symbol of potassium? | K | P | the chemical symbol of potassium is {}
What is the chemical symbol of silver? | Ag | Si | the chemical symbol of silver is {}
What is the chemical symbol of lead? | Pb | Ld | the chemical symbol of lead is {}
Which planet is closest to the Sun? | Mercury | Venus | the planet closest to the Sun is {}
Which planet is the largest in the solar system? | Jupiter | Saturn | the largest planet is {}
Which planet is known as the Red Planet? | Mars | Mercury | the Red Planet is {}
Which planet has the most famous rings? | Saturn | Neptune | the planet with the most famous rings is {}
Who wrote Romeo and Juliet? | Shakespeare | Marlowe | Romeo and Juliet was written by {}
Who wrote Pride and Prejudice? | Austen | Bronte | Pride and Prejudice was written by Jane {}
Who wrote War and Peace? | Tolstoy | Dostoevsky | War and Peace was written by Leo {}
Who wrote Don Quixote? | Cervantes | Lope de Vega | Don Quixote was written by Miguel de {}
Who wrote Hamlet? | Shakespeare | Jonson | Hamlet was written by {}
Who wrote The Odyssey? | Homer | Virgil | The Odyssey was written by {}
Who painted the Mona Lisa? | Leonardo | Raphael | the Mona Lisa was painted by {}
Who painted The Starry Night? | Van Gogh | Monet | The Starry Night was painted by {}
Who developed the theory of relativity? | Einstein | Bohr | the theory of relativity was developed by {}
Who proposed natural selection? | Darwin | Lamarck | natural selection was proposed by {}
What is the largest ocean on Earth? | Pacific | Atlantic | the largest ocean on Earth is the {}
What is the longest river in South America? | Amazon | Orinoco | the longest river in South America is the {}
What is the tallest mountain on Earth? | Everest | Kilimanjaro | the tallest mountain on Earth is {}
What is the largest desert in Asia? | Gobi | Thar | the largest desert in Asia is the {}
What is the hardest natural mineral? | diamond | quartz | the hardest natural mineral is {}
Which gas do plants use in photosynthesis? | carbon dioxide | nitrogen | plants use {} in photosynthesis
What is the freezing point of water in degrees Celsius? | zero | ten | water freezes at {} degrees Celsius
Which organ pumps blood through the human body? | heart | liver | the organ that pumps blood is the {}
What is the main language spoken in Brazil? | Portuguese | Spanish | the main language of Brazil is {}
What is the currency of Japan? | yen | won | the currency of Japan is the {}
What is the currency of the United Kingdom? | pound | euro | the currency of the United Kingdom is the {}
Which animal is the largest mammal? | blue whale | elephant | the largest mammal is the {}
Which metal is liquid at room temperature? | mercury | tin | the metal liquid at room temperature is {}
Which country is home to the Great Pyramid of Giza? | Egypt | Sudan | the Great Pyramid of Giza is in {}
"""
FACTS: tuple[tuple[str, str, str, str], ...] = tuple(
    (q, o, s, statement)
    for q, o, s, statement in (
        tuple(part.strip() for part in line.split("|")) for line in _FACT_TABLE.strip().splitlines()
    )
)

INSTRUCTION = (
    "Answer the question based on the given document. Only give me the answer and do not output any "
    "other words.\n\nThe following is the document."
)
QUESTION = (
    "Answer the question based on the given document. Only give me the answer and do not output any "
    "other words.\n\nQuestion: {question}"
)
CLOSED_INSTRUCTION = "Answer the question. Only give me the answer and do not output any other words."
MAGIC_NEEDLE = "The special magic number for {key} is {value}."
MAGIC_QUESTION = "What is the special magic number for {key} mentioned in the document?"
MAX_NEW_TOKENS = 32


def build(builder: Builder, length: int, depth: float, index: int) -> ProbeItem:
    variant = "magic" if index % 5 == 4 else "conflict"
    item_id = f"counterfactual/{variant}/{length}/{depth:g}/{index}"
    rng = rng_for(builder.seed, "probe", item_id)
    common: dict[str, Any] = {
        "item_id": item_id,
        "probe": "counterfactual",
        "variant": variant,
        "length": length,
        "depth": depth,
        "index": index,
        "instruction": INSTRUCTION,
        "answer_prefix": ANSWER_PREFIX,
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    if variant == "magic":
        key = NameMaker(rng).single("city").name
        value, other = (str(rng.randint(1_000_000, 9_999_999)) for _ in range(2))
        needle = MAGIC_NEEDLE.format(key=key, value=value)
        question = MAGIC_QUESTION.format(key=key)
        return builder.item(
            **common,
            question_text=QUESTION.format(question=question),
            inserts=[Insert(depth, needle, gold=True)],
            question=question,
            answer=value,
            fact_sentences=[needle],
            candidates=[value, other],
            candidate_kinds=["gold", "novel"],
        )
    order = rng_for(builder.seed, "counterfactual-order").sample(range(len(FACTS)), len(FACTS))
    question, original, substitute, statement = FACTS[order[index % len(FACTS)]]
    needle = f"Recent records state that {statement.format(substitute)}."
    return builder.item(
        **common,
        question_text=QUESTION.format(question=question),
        inserts=[Insert(depth, needle, gold=True)],
        question=question,
        answer=substitute,
        fact_sentences=[needle],
        candidates=[substitute, original],
        candidate_kinds=["substitute", "original"],
        closed_book_ids=builder.closed_book(CLOSED_INSTRUCTION, f"Question: {question}", ANSWER_PREFIX),
        extra={"original": original, "substitute": substitute},
    )
