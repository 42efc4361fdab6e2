"""--dataset PATH: users' own local data (JSONL: context, question, answer) through the checks that
stay valid on real text: numbers grounded in the context, K-Precision, token F1 against the answer,
abstention. Names cannot be checked (no lexicon of what real text "places"), so they are not.

A seeded sample of up to --samples lines is taken, as the Diff paper took 100 per dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from diffbench.errors import UsageError
from diffbench.seeding import rng_for
from diffbench.tasks.probes.core import (
    ANSWER_PREFIX,
    QASPER_INSTRUCTION,
    QASPER_QUESTION,
    SUMMARY_INSTRUCTIONS,
    SUMMARY_PREFIX,
    SUMMARY_QUESTIONS,
    ProbeItem,
    build_frame,
    cut_at_stop,
    response_header,
    response_header_start,
)
from diffbench.tasks.probes.metrics import ABSTAIN_PATTERN, extract_numbers, k_precision, token_f1
from diffbench.tasks.probes.scoring import Verdict
from diffbench.tasks.prompt import prompt_sha256

MAX_NEW_TOKENS = 128
FIELDS_HINT = "each line must be a JSON object with a string 'context' and optional 'question' and 'answer'"


def read_dataset(path: Path) -> list[dict[str, str]]:
    """Every line of a JSONL dataset, checked; a missing file or a malformed line is a usage error."""
    if not path.is_file():
        raise UsageError(f"--dataset {str(path)!r}: no such file; pass a JSONL file ({FIELDS_HINT})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--dataset {str(path)!r}: cannot read it ({error})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(
                f"--dataset {str(path)!r} line {number} is not JSON ({error.msg}); {FIELDS_HINT}"
            ) from None
        problem = _row_problem(row)
        if problem:
            raise UsageError(f"--dataset {str(path)!r} line {number}: {problem}; {FIELDS_HINT}")
        rows.append({key: row[key] for key in ("context", "question", "answer") if row.get(key) is not None})
    if not rows:
        raise UsageError(f"--dataset {str(path)!r} holds no items; {FIELDS_HINT}")
    return rows


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if not isinstance(row.get("context"), str) or not row["context"].strip():
        return "no 'context' text"
    for key in ("question", "answer"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"'{key}' is not a string"
    return None


def dataset_fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def dataset_items(spec: Any, tokenizer: Any) -> list[ProbeItem]:
    """A seeded sample of up to spec.samples_per_cell rows, each fitted to every length (middle cut)."""
    from diffbench.haystack.fit import MIN_HAYSTACK_TOKENS, SegmentEncoder
    from diffbench.tasks.prompt import use_chat_template

    rows = read_dataset(Path(str(spec.dataset)))
    chosen = sorted(
        rng_for(spec.seed, "dataset").sample(range(len(rows)), min(spec.samples_per_cell, len(rows)))
    )
    encoder = SegmentEncoder(tokenizer)
    chat = use_chat_template(tokenizer, spec.chat_template)
    items = []
    for length in spec.lengths:
        for index in chosen:
            row = rows[index]
            question = row.get("question")
            if question:
                variant, instruction = "qa", QASPER_INSTRUCTION
                question_text, prefix = QASPER_QUESTION.format(question=question), ANSWER_PREFIX
            else:
                variant, instruction = "summarization", SUMMARY_INSTRUCTIONS["cnndm"]
                question_text, prefix = SUMMARY_QUESTIONS["cnndm"], SUMMARY_PREFIX["cnndm"]
            before, after = build_frame(tokenizer, encoder, instruction, question_text, prefix, chat)
            budget = length - MAX_NEW_TOKENS - len(before) - len(after)
            if budget < MIN_HAYSTACK_TOKENS:
                raise UsageError(
                    f"length {length} tokens is too short: template and question alone take "
                    f"{len(before) + len(after) + MAX_NEW_TOKENS} tokens; use longer --lengths"
                )
            ids = encoder.encode(" " + row["context"])
            if len(ids) > budget:  # LongBench's truncation: keep the start and the end
                ids = ids[: budget // 2] + ids[len(ids) - (budget - budget // 2) :]
            input_ids = before + ids + after
            items.append(
                ProbeItem(
                    item_id=f"dataset/{variant}/{length}/{index}",
                    probe="dataset",
                    variant=variant,
                    target_length=length,
                    depth=0.0,
                    sample_index=index,
                    input_ids=input_ids,
                    prompt_tokens=len(input_ids),
                    gold_span=(len(before), len(before) + len(ids)),
                    prompt_sha256=prompt_sha256(input_ids),
                    context=tokenizer.decode(ids, skip_special_tokens=True),
                    template_text=f"{instruction}\n{question_text}\n{prefix}",
                    question=question,
                    answer=row.get("answer", ""),
                    max_new_tokens=MAX_NEW_TOKENS,
                    document_span=(len(before), len(before) + len(ids)),
                    response_start=response_header_start(
                        tokenizer, input_ids, response_header(tokenizer, prefix, chat)
                    ),
                )
            )
    return items


def score_dataset(item: ProbeItem, output: str) -> Verdict:
    """Numbers grounded (the verdict), K-Precision, token F1 against the answer, abstention."""
    text = cut_at_stop(output, single_line=item.variant == "qa")
    allowed = extract_numbers(item.context) | extract_numbers(item.template_text)
    unsupported = sorted(extract_numbers(text) - allowed)
    precision = k_precision(text, item.context)
    details = {
        "probe": "dataset",
        "variant": item.variant,
        "mode": "generate",
        "raw_output": output,
        "unsupported_numbers": unsupported,
        "k_precision": precision,
        "token_f1": round(token_f1(text, item.answer), 6) if item.answer else None,
        "abstained": bool(ABSTAIN_PATTERN.search(text)),
    }
    return Verdict(not unsupported, precision or 0.0, text, details)
