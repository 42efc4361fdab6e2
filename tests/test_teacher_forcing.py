"""Teacher-forced scoring agrees with real greedy decoding, token for token and in log-probability."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffbench.engine.teacher_forcing import score_and_generate, score_answer
from diffbench.haystack.sources import load_source
from diffbench.specs import NiahSpec, Sample
from diffbench.tasks.niah import generate_samples

NEW_TOKENS = 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def greedy(model: Any, input_ids: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """Plain ``generate`` (no EOS stop): the greedy tokens and each one's log-prob from the raw logits."""
    output = model.generate(
        input_ids=torch.tensor([input_ids]),
        attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    tokens = output.sequences[0, len(input_ids) :].tolist()
    # min_new_tokens masks EOS; the test is only meaningful if no step's raw argmax was masked away.
    assert [int(step[0].argmax()) for step in output.logits] == tokens
    logprobs = [
        float(torch.log_softmax(step[0].float(), dim=-1)[token])
        for step, token in zip(output.logits, tokens, strict=True)
    ]
    return tokens, logprobs


def plain_generate(
    model: Any, input_ids: list[int], max_new_tokens: int, eos_token_id: Any = None
) -> list[int]:
    kwargs: dict[str, Any] = {"eos_token_id": eos_token_id} if eos_token_id is not None else {}
    output = model.generate(
        input_ids=torch.tensor([input_ids]),
        attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=0,
        **kwargs,
    )
    return output[0, len(input_ids) :].tolist()


@pytest.fixture(scope="module")
def prompt(tiny_tokenizer: Any) -> list[int]:
    text = "The lamp is lit. The special magic number for calm-river is 1000042. What is the number? It is"
    return list(tiny_tokenizer(text)["input_ids"])


@pytest.fixture(scope="module")
def samples(tiny_tokenizer: Any) -> list[Sample]:
    spec = NiahSpec(lengths=[256, 512], depths=[0.0, 50.0, 100.0], samples_per_cell=2, seed=3)
    return generate_samples(spec, tiny_tokenizer, load_source("prose", 3))


def test_greedy_continuation_is_greedy_exact_with_the_generate_logprob(
    tiny_llama: Any, prompt: list[int]
) -> None:
    tokens, logprobs = greedy(tiny_llama, prompt, NEW_TOKENS)
    assert len(tokens) == NEW_TOKENS
    scored = score_answer(tiny_llama, prompt, tokens)
    assert scored.greedy_exact is True
    assert scored.answer_logprob == pytest.approx(sum(logprobs), abs=1e-4)
    assert scored.answer_logprob < 0
    for size in range(1, NEW_TOKENS):  # every prefix of a greedy answer is greedy too
        prefix = score_answer(tiny_llama, prompt, tokens[:size])
        assert prefix.greedy_exact is True
        assert prefix.answer_logprob == pytest.approx(sum(logprobs[:size]), abs=1e-4)


def test_flipping_the_last_answer_token_breaks_greedy_and_lowers_the_logprob(
    tiny_llama: Any, prompt: list[int]
) -> None:
    tokens, logprobs = greedy(tiny_llama, prompt, NEW_TOKENS)
    with torch.inference_mode():
        last_logits = tiny_llama(torch.tensor([prompt + tokens[:-1]])).logits[0, -1].float()
    step = torch.log_softmax(last_logits, dim=-1)
    runner_up = int(step.topk(2).indices[1])
    assert runner_up != tokens[-1]
    flipped = [*tokens[:-1], runner_up]
    base = score_answer(tiny_llama, prompt, tokens)
    scored = score_answer(tiny_llama, prompt, flipped)
    assert scored.greedy_exact is False
    assert scored.answer_logprob < base.answer_logprob
    expected = base.answer_logprob - logprobs[-1] + float(step[runner_up])
    assert scored.answer_logprob == pytest.approx(expected, abs=1e-4)


def answer_variants(model: Any, sample: Sample) -> list[list[int]]:
    """The real answer, the model's greedy output, a prefix of it, and copies with one token changed."""
    greedy_ids, _ = greedy(model, sample.input_ids, len(sample.answer_ids))
    changed_first = [(greedy_ids[0] + 1) % model.config.vocab_size, *greedy_ids[1:]]
    changed_middle = list(greedy_ids)
    changed_middle[len(greedy_ids) // 2] = (
        changed_middle[len(greedy_ids) // 2] + 7
    ) % model.config.vocab_size
    return [sample.answer_ids, greedy_ids, greedy_ids[:3], changed_first, changed_middle]


def test_greedy_exact_equals_whether_generate_emits_the_answer(
    tiny_llama: Any, samples: list[Sample]
) -> None:
    verdicts = []
    for sample in samples:
        for answer in answer_variants(tiny_llama, sample):
            emitted = plain_generate(tiny_llama, sample.input_ids, len(answer))
            scored = score_answer(tiny_llama, sample.input_ids, answer)
            assert scored.greedy_exact == (emitted == answer), (sample.sample_id, answer, emitted)
            verdicts.append(scored.greedy_exact)
    assert verdicts.count(True) >= 2 * len(samples)  # greedy output and its prefix, for every sample
    assert verdicts.count(False) >= 2 * len(samples)  # both changed copies, for every sample


def test_score_and_generate_matches_score_answer_and_plain_generate(
    tiny_llama: Any, samples: list[Sample]
) -> None:
    eos = tiny_llama.generation_config.eos_token_id
    for sample in samples:
        for answer in answer_variants(tiny_llama, sample)[:2]:
            both = score_and_generate(tiny_llama, sample.input_ids, answer, 12, eos)
            alone = score_answer(tiny_llama, sample.input_ids, answer)
            assert both.answer_logprob == pytest.approx(alone.answer_logprob, abs=1e-4)
            assert both.greedy_exact == alone.greedy_exact
            assert both.generated_ids == plain_generate(tiny_llama, sample.input_ids, 12, eos)


def test_score_answer_never_builds_full_length_logits(tiny_llama: Any, samples: list[Sample]) -> None:
    """The forward pass keeps logits for the answer positions and the one after only (model output)."""
    sample = samples[-1]
    seen: list[tuple[int, ...]] = []
    handle = tiny_llama.register_forward_hook(
        lambda module, args, output: seen.append(tuple(output.logits.shape))
    )
    try:
        score_answer(tiny_llama, sample.input_ids, sample.answer_ids)
    finally:
        handle.remove()
    assert seen == [(1, len(sample.answer_ids) + 1, tiny_llama.config.vocab_size)]
