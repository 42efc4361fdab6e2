"""`diffbench halluc` end to end on the tiny random Llama: records, summaries, resume, reports, two
models' paired tests, --dataset and the NLI judge (a tiny random BERT classifier built here)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from diffbench.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--lengths", "2k", "--samples", "2", "--device", "cpu"]


def invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("halluc") / "run"
    invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, "--out", str(out)])
    return out


def test_both_modes_on_one_prefill_give_each_modes_own_records(
    full_run: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """`--mode both` scores an item's candidates and decodes its answer on one prefill of the prompt:
    the same verdicts, log-probs and greedy tokens as running each mode on its own."""
    probes = ["--probes", "counterfactual"]  # both modes, and a closed-book prompt beside the document
    single = {}
    for mode in ("forced", "generate"):
        out = tmp_path / mode
        invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, *probes, "--mode", mode, "--out", str(out)])
        single.update({row["sample_id"]: row for row in records(out)})
    both = {row["sample_id"]: row for row in records(full_run) if row["sample_id"] in single}
    assert both.keys() == single.keys() and len(both) == 4
    for sample_id, row in both.items():
        alone = single[sample_id]
        assert (row["correct"], row["prediction"]) == (alone["correct"], alone["prediction"]), sample_id
        assert row["answer_logprob"] == pytest.approx(alone["answer_logprob"], abs=1e-5), sample_id
        assert row["details"].get("output_ids") == alone["details"].get("output_ids"), sample_id


def test_every_probe_writes_its_records_in_its_modes(full_run: Path) -> None:
    rows = records(full_run)
    counts = Counter((row["task"], row["scoring"]) for row in rows)
    assert counts == {
        ("halluc/factsum", "generate"): 2,
        ("halluc/factqa", "generate"): 2,
        ("halluc/factqa", "teacher_forced"): 2,
        ("halluc/unanswerable", "generate"): 2,
        ("halluc/unanswerable", "teacher_forced"): 2,
        ("halluc/counterfactual", "generate"): 2,
        ("halluc/counterfactual", "teacher_forced"): 2,
        ("halluc/contrastive", "teacher_forced"): 2,
    }
    forced = next(r for r in rows if r["task"] == "halluc/factqa" and r["scoring"] == "teacher_forced")
    details = forced["details"]
    assert details["correct"] == (details["choice"] == 0) == forced["correct"]
    assert forced["answer_logprob"] == details["logprobs"][0] < 0
    conflict = next(
        r for r in rows if r["task"] == "halluc/counterfactual" and r["scoring"] == "teacher_forced"
    )
    assert conflict["details"]["shift"] == pytest.approx(
        conflict["details"]["delta"] - conflict["details"]["delta0"], abs=2e-6
    )
    contrastive = next(r for r in rows if r["task"] == "halluc/contrastive")
    wins = contrastive["details"]["wins"]
    assert set(wins) == {"number_swap", "entity_swap", "date_swap", "negation", "extrinsic"}
    assert contrastive["score"] == pytest.approx(sum(wins.values()) / 5)
    assert "context_gain" in contrastive["details"]
    manifest = json.loads((full_run / "manifest.json").read_text())
    assert manifest["task"] == "halluc" and manifest["status"] == "complete"
    assert manifest["spec"]["probes"] == [
        "factsum",
        "factqa",
        "unanswerable",
        "counterfactual",
        "contrastive",
    ]


def test_the_summary_has_wilson_intervals_and_report_reads_the_run(full_run: Path) -> None:
    summary = json.loads((full_run / "summary.json").read_text())
    by_key = {(row["probe"], row["mode"]): row for row in summary["probes"]}
    factsum = by_key[("factsum", "generate")]
    assert factsum["metric"] == "hallucination_free_accuracy" and factsum["n"] == 2
    assert 0.0 <= factsum["low"] <= factsum["value"] <= factsum["high"] <= 1.0
    assert by_key[("unanswerable", "forced")]["metric"] == "balanced_accuracy"
    assert by_key[("contrastive", "forced")]["n"] == 10  # 2 items × 5 corruption types
    assert summary["comparisons"] == []
    result = invoke(["report", str(full_run), "--format", "csv"])  # one row per probe × mode headline
    assert "tiny-llama,baseline,factqa,generate,hallucination_free_accuracy," in result.stdout
    assert len(result.stdout.splitlines()) == 1 + len(summary["probes"])


def test_a_rerun_resumes_without_new_records(full_run: Path, tiny_llama_dir: Path) -> None:
    before = records(full_run)
    result = invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, "--out", str(full_run)])
    assert f"resumed: {len(before)} finished records kept, 0 new" in result.stderr
    assert records(full_run) == before


def test_two_models_get_paired_tests_on_the_same_items(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_llama_dir)
    args = ["halluc", "-m", model, "-m", model, "--probes", "factqa", "--mode", "forced", *SMALL]
    result = invoke([*args, "--out", str(tmp_path / "run"), "--json"])
    payload = json.loads(result.stdout)
    (comparison,) = payload["comparisons"]
    assert comparison["second"] == "tiny-llama#2" and comparison["n"] == 2
    # the same weights twice: identical verdicts, no discordant pair, no difference
    assert (comparison["only_first"], comparison["only_second"], comparison["mcnemar_p"]) == (0, 0, 1.0)
    assert comparison["difference"] == 0.0


def test_a_local_dataset_is_sampled_and_scored_on_real_text_checks(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    lines = [
        {
            "context": "The bridge opened in 1932 and carries 4,100 cars a day.",
            "question": "When?",
            "answer": "1932",
        },
        {"context": "A quiet report about the harbor and its boats.", "answer": "boats"},
        {"context": "The museum holds 812 paintings.", "question": "How many paintings?", "answer": "812"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "run"
    invoke(["halluc", "-m", str(tiny_llama_dir), "--dataset", str(path), "--samples", "2", "--lengths", "1k",
            "--out", str(out)])  # fmt: skip
    rows = records(out)
    assert len(rows) == 2 and {r["task"] for r in rows} == {"halluc/dataset"}
    for row in rows:
        details = row["details"]
        assert row["correct"] == (details["unsupported_numbers"] == [])
        assert set(details) >= {"k_precision", "token_f1", "abstained"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["probes"][0]["metric"] == "numbers_grounded_rate"


# ----------------------------------------------------------------------------- the NLI judge


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT sequence classifier with a WordLevel tokenizer built here, labels in an unusual order."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = (
        "the", "a", "is", "in", "of", "and", "was", "it", "company",
        "founded", "people", "employs", "led", "by", "city", "year", "not",
    )  # fmt: skip
    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=3,
        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2},
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("nli") / "tiny-nli"
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_nli_judge_reads_labels_from_config_and_scores_summac_zs(tiny_nli_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from diffbench.judges import JudgeItem
    from diffbench.judges.nli import NLIJudge, context_chunks

    judge = NLIJudge(str(tiny_nli_dir), threshold=0.0)
    assert (judge.entail, judge.contradict) == (2, 0)
    context = "the company was founded in the city. it employs people."
    response = "the company is in the city. it was not founded."
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_nli_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_nli_dir)).eval()
    expected = []
    for sentence in ("the company is in the city.", "it was not founded."):
        best = []
        for chunk in context_chunks(context):
            batch = tokenizer(
                chunk, sentence, return_tensors="pt"
            )  # premise = context, hypothesis = response
            with torch.inference_mode():
                probs = torch.softmax(model(**batch).logits[0], dim=-1)
            best.append(float(probs[2] - probs[0]))
        expected.append(max(best))
    (verdict,) = judge.judge([JudgeItem("summarization", context, response)])
    assert verdict.score == pytest.approx(sum(expected) / 2, abs=1e-5)
    assert verdict.supported == (verdict.score > 0.0)
    assert judge.judge([JudgeItem("qa", context, "   ")])[0].supported is None
    assert len(judge.cache) == 2


def test_nli_judge_adds_its_own_column(tiny_llama_dir: Path, tiny_nli_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["halluc", "-m", str(tiny_llama_dir), "--probes", "factqa", "--mode", "generate", *SMALL]
    result = invoke([*args, "--judge", f"nli:{tiny_nli_dir}", "--out", str(out), "--json"])
    payload = json.loads(result.stdout)
    (row,) = payload["probes"]
    assert row["judge"]["name"] == "nli:tiny-nli" and row["metric"] == "hallucination_free_accuracy"
    for record in records(out):
        judged = record["details"]["judge"]
        assert judged["name"] == "nli:tiny-nli" and set(judged) == {
            "name",
            "supported",
            "score",
            "problematic_spans",
        }


def test_rule_judge_checks_numbers_against_context_and_question() -> None:
    from diffbench.judges import JudgeItem, RuleJudge

    judge = RuleJudge()
    good, bad, empty = judge.judge(
        [
            JudgeItem("qa", "It employs 4,372 people.", "4372", question="How many in 2020?"),
            JudgeItem(
                "qa", "It employs 4,372 people.", "5,000 in 2020 and 6,100", question="How many in 2020?"
            ),
            JudgeItem("summarization", "text", ""),
        ]
    )
    assert good.supported is True and good.problematic_spans == ()
    assert bad.supported is False and bad.problematic_spans == ("5000", "6100")
    assert empty.supported is None


def test_fewshot_prompts_open_with_worked_examples_and_the_spec_records_them(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fewshot"
    invoke(
        [
            "halluc",
            "--model",
            str(tiny_llama_dir),
            *SMALL,
            "--probes",
            "factqa",
            "--fewshot",
            "2",
            "--out",
            str(out),
        ]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["fewshot"] == 2
    items = [
        json.loads(line) for line in next((out / "samples").glob("*.probes.jsonl")).read_text().splitlines()
    ]
    assert len(items) == 2
    assert all(item["prompt_sha256"] for item in items)
    assert [r["scoring"] for r in records(out)].count("generate") == 2
    plain = tmp_path / "plain"
    invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, "--probes", "factqa", "--out", str(plain)])
    bare = [
        json.loads(line) for line in next((plain / "samples").glob("*.probes.jsonl")).read_text().splitlines()
    ]
    for item, without in zip(items, bare, strict=True):
        assert item["prompt_tokens"] == without["prompt_tokens"]
        assert item["document_span"][0] > without["document_span"][0]  # the demos come before the document
