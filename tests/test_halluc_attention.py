"""`halluc --attn`: the probe items' token regions, Lookback Lens's ratio against eager attention, the
per-item Table 3 records, the AUROC figures and the CLI pass (records, resume, reports)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from test_attention_analysis import (
    LENGTH,
    ROWS,
    VERSION,
    diff_lambda_v1,
    eager_pass,
    sequence,
    sharp_model,
)
from typer.testing import CliRunner

from diffbench.analysis.attention_mass import capture_rows, lookback_ratios, pairing_for
from diffbench.analysis.halluc_attention import answer_ids, hallucinated, lookback_summary
from diffbench.cli import app
from diffbench.haystack.sources import load_source
from diffbench.specs import HallucSpec
from diffbench.tasks.probes import PROBE_NAMES, generate_items

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOLERANCE = 1e-5
SMALL = ["--lengths", "2k", "--samples", "2", "--device", "cpu"]


# --- Lookback ratio: the chunked computation is step01's formula on the eager maps -----------------


@pytest.mark.parametrize(
    ("variant", "kv_heads"), [("llama", 2), ("llama", 4), ("diff_v1", 2), ("diff_v2", 1)]
)
def test_lookback_ratio_equals_lookback_lens_on_eager_attention(variant: str, kv_heads: int) -> None:
    """LR[l, h, t] = mean(A[t, :C]) / (mean(A[t, :C]) + mean(A[t, C:t+1])), the keys a decoding step sees.

    Diff heads use the positive part of the net map A1 − λ·A2.
    """
    model = sharp_model(variant, kv_heads)
    ids = sequence()
    context_end = LENGTH - ROWS - 2  # two header tokens before the answer rows
    captured = capture_rows(model, ids, ROWS, prefill_chunk=7)
    eager, lambdas = eager_pass(model, ids)
    version = VERSION[variant]
    kind = "diff" if version else "baseline"
    for capture, maps, lam_rows in zip(captured.layers, eager, lambdas, strict=True):
        ratios = lookback_ratios(capture, kind, version, context_end, key_chunk=6)
        pairing = pairing_for(capture, kind, version)
        if version is None:
            primary = maps
        else:
            lam = (
                torch.full((len(pairing.positive), ROWS), diff_lambda_v1(capture.module))
                if version == "v1"
                else lam_rows
            )
            assert lam is not None
            primary = (maps[pairing.positive] - lam[..., None] * maps[pairing.negative]).clamp(min=0)
        expected = torch.empty(primary.shape[:2])
        for row in range(ROWS):
            position = LENGTH - ROWS + row
            on_context = primary[:, row, :context_end].mean(-1)
            on_new = primary[:, row, context_end : position + 1].mean(-1)
            expected[:, row] = on_context / (on_context + on_new)
        torch.testing.assert_close(ratios, expected, atol=TOLERANCE, rtol=0.0)
        assert float(expected.std()) > 0.01  # not vacuous: the ratios differ across heads and rows


# --- The items' token regions ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def items(tiny_tokenizer: Any) -> dict[str, list[Any]]:
    found = {}
    for probe in PROBE_NAMES:
        spec = HallucSpec(probes=[probe], lengths=[2048], samples_per_cell=4, seed=0)
        found[probe] = generate_items(spec, tiny_tokenizer, load_source("prose", 0))
    return found


def test_items_record_the_document_the_evidence_and_the_answer_tokens(
    items: dict[str, list[Any]], tiny_tokenizer: Any
) -> None:
    def text(item: Any, span: Any) -> str:
        return str(tiny_tokenizer.decode(item.input_ids[span[0] : span[1]], skip_special_tokens=True))

    for probe, found in items.items():
        for item in found:
            start, end = item.document_span
            assert text(item, (start, end)) == item.context
            assert all(start <= a and b <= end for a, b in [*item.evidence_spans, *item.answer_spans])
            assert text(item, (item.response_start, len(item.input_ids))).strip() == "Answer:" or probe in (
                "factsum",
                "contrastive",
            )
            spelled = [text(item, span) for span in item.answer_spans]
            if probe in ("factsum", "contrastive"):  # a summary's answer is its gold sentences whole
                assert item.answer_spans == [item.gold_span] == item.evidence_spans
            elif probe == "unanswerable" and not item.answerable:
                assert item.answer_spans == []  # the fact was removed: no answer tokens in context
            elif item.variant != "magic":
                assert spelled and all(item.answer in s and len(s) <= len(item.answer) + 2 for s in spelled)
                assert item.gold_span in item.evidence_spans
    two_hop = [item for item in items["factqa"] if item.variant == "multi"]
    assert two_hop and all(len(item.evidence_spans) == 2 for item in two_hop)  # bridge + answer sentence


def test_the_response_header_of_a_chat_prompt_is_its_assistant_turn(tiny_chat_tokenizer: Any) -> None:
    spec = HallucSpec(probes=["factqa"], lengths=[2048], samples_per_cell=1, seed=0, chat_template="on")
    item = generate_items(spec, tiny_chat_tokenizer, load_source("prose", 0))[0]
    header = tiny_chat_tokenizer.decode(item.input_ids[item.response_start :], skip_special_tokens=False)
    assert "assistant" in header and header.rstrip().endswith("Answer:")
    assert "Question" not in header


# --- Labels and the figures of the summary ---------------------------------------------------------


def test_hallucination_labels_follow_the_rule_checks() -> None:
    assert hallucinated("factqa", {"hallucination_free": False}, False) is True
    assert hallucinated("factsum", {"hallucination_free": True}, True) is False
    assert (
        hallucinated("unanswerable", {"fabricated": False}, False) is False
    )  # an abstention invents nothing
    assert hallucinated("unanswerable", {"fabricated": True}, False) is True
    assert hallucinated("counterfactual", {}, False) is True
    assert hallucinated("contrastive", {}, True) is None


def test_answer_ids_stop_where_the_scored_answer_stops(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer(" 1919\n\nQuestion: more", add_special_tokens=False)["input_ids"]
    kept = answer_ids(tiny_tokenizer, ids, "1919")
    assert tiny_tokenizer.decode(kept).strip() == "1919" and len(kept) < len(ids)
    assert answer_ids(tiny_tokenizer, ids, "") == []


def frames(clean: list[list[float]], dirty: list[list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Head records and verdicts of one model: per answer, one lookback ratio per head."""
    heads, verdicts = [], []
    for label, group in ((False, clean), (True, dirty)):
        for ratios in group:
            sample = f"item/{len(verdicts)}"
            verdicts.append(
                {
                    "model": "m",
                    "sample_id": sample,
                    "hallucinated": label,
                    "lookback": sum(ratios) / len(ratios),
                }
            )
            heads += [
                {"model": "m", "sample_id": sample, "layer": 0, "head": h, "lookback": r}
                for h, r in enumerate(ratios)
            ]
    return pd.DataFrame(heads), pd.DataFrame(verdicts)


def test_auroc_and_the_cross_validated_probe() -> None:
    # head 0 carries the signal (clean answers look back more), head 1 is noise that swamps the mean
    clean = [[0.8, 0.1], [0.7, 0.9], [0.9, 0.2], [0.75, 0.8]]
    dirty = [[0.3, 0.95], [0.2, 0.15], [0.35, 0.9], [0.25, 0.3]]
    row = lookback_summary(*frames(clean, dirty), "m")
    assert (row["answers"], row["hallucinated"], row["probe_folds"]) == (8, 4, 4)
    assert row["lookback_clean"] == pytest.approx(sum(sum(r) / 2 for r in clean) / 4)
    assert row["auroc"] == pytest.approx(12 / 16)  # the mean ratio separates them only in part
    low, high = row["auroc_interval"]
    assert low < 12 / 16 < high
    assert row["probe_auroc"] >= 0.9  # the per-head probe, on held-out folds, finds head 0
    reverse = lookback_summary(*frames(dirty, clean), "m")
    assert reverse["auroc"] == pytest.approx(1 - row["auroc"])
    heads, verdicts = frames(clean, dirty)
    verdicts["probe"] = ["a", "b"] * 4  # two probes, each with both labels
    by_probe = lookback_summary(heads, verdicts, "m")["by_probe"]
    assert [(p["probe"], p["answers"], p["hallucinated"]) for p in by_probe] == [("a", 4, 2), ("b", 4, 2)]
    first = verdicts[verdicts["probe"] == "a"]
    assert by_probe[0]["lookback_clean"] == pytest.approx(first[~first["hallucinated"]]["lookback"].mean())
    one_class = lookback_summary(*frames(clean, []), "m")
    assert one_class["auroc"] is None and one_class["probe_auroc"] is None


# --- The CLI pass -----------------------------------------------------------------------------------


def invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def attention_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("halluc-attn") / "run"
    invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, "--out", str(out), "--attn"])
    return out


def test_halluc_attn_analyses_every_item_with_the_models_own_answers(attention_run: Path) -> None:
    verdicts = lines(attention_run / "attention" / "attention_samples.jsonl")
    heads = lines(attention_run / "attention" / "attention.jsonl")
    records = {r["sample_id"]: r for r in lines(attention_run / "records.jsonl")}
    assert Counter(v["probe"] for v in verdicts) == {probe: 2 for probe in PROBE_NAMES}
    assert len(heads) == len(verdicts) * 2 * 4  # 2 layers × 4 heads
    for verdict in verdicts:
        generated = records.get(f"{verdict['sample_id']}#gen")
        if generated is None:  # contrastive scores candidates only: the Table 3 row, no answer rows
            assert verdict["output_tokens"] == 0 and verdict["lookback"] is None
            continue
        ids = generated["details"]["output_ids"]
        assert verdict["output_tokens"] <= len(ids) and verdict["rows"] == max(verdict["output_tokens"], 1)
        mine = [h for h in heads if h["sample_id"] == verdict["sample_id"]]
        if verdict["output_tokens"]:
            assert verdict["lookback"] == pytest.approx(sum(h["lookback"] for h in mine) / len(mine))
            assert 0 < verdict["lookback"] < 1
        if not verdict["has_answer"]:
            assert all(h["answer"] is None for h in mine) and all(h["noise"] is not None for h in mine)
        else:
            assert all(0 <= h["answer"] <= h["needle"] <= 1 for h in mine)
    summary = json.loads((attention_run / "attention" / "attention_summary.json").read_text())
    (row,) = summary["lookback"]
    labelled = [v for v in verdicts if v["lookback"] is not None and v["hallucinated"] is not None]
    assert row["answers"] == len(labelled)
    assert row["hallucinated"] == sum(v["hallucinated"] for v in labelled)
    answered = [h["answer"] for h in heads if h["answer"] is not None]
    assert summary["models"][0]["answer"] == pytest.approx(sum(answered) / len(answered), abs=1e-9)
    manifest = json.loads((attention_run / "manifest.json").read_text())
    assert manifest["attention"]["status"] == "complete"


def test_halluc_attn_rerun_keeps_every_finished_item(attention_run: Path, tiny_llama_dir: Path) -> None:
    path = attention_run / "attention" / "attention_samples.jsonl"
    before = path.read_text().splitlines()
    kept = "".join(line + "\n" for line in before[:-3])  # the last three items lost, as by a kill
    path.write_text(kept)
    invoke(["halluc", "--model", str(tiny_llama_dir), *SMALL, "--out", str(attention_run), "--attn"])
    after = path.read_text().splitlines()
    assert after[: len(before) - 3] == before[:-3]
    keys = [(v["model"], v["sample_id"]) for v in map(json.loads, after)]
    assert len(keys) == len(set(keys)) == len(before)
    heads = lines(attention_run / "attention" / "attention.jsonl")
    assert Counter((h["sample_id"], h["layer"], h["head"]) for h in heads).most_common(1)[0][1] == 1


def test_report_of_a_halluc_run_shows_its_attention(attention_run: Path, tmp_path: Path) -> None:
    invoke(["report", str(attention_run), "--out", str(tmp_path / "report")])
    payload = json.loads((tmp_path / "report" / "report.json").read_text())
    assert payload["attention"]["models"][0]["noise"] > 0
    summary = json.loads((attention_run / "attention" / "attention_summary.json").read_text())
    assert payload["attention"]["lookback"] == summary["lookback"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Lookback ratio of the generated answers" in markdown


def test_old_items_without_spans_get_a_clear_error(attention_run: Path, tiny_llama_dir: Path) -> None:
    items = next((attention_run / "samples").glob("*.probes.jsonl"))
    text = items.read_text()
    stale = "".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "document_span"}) + "\n"
        for line in text.splitlines()
    )
    (attention_run / "attention" / "attention_samples.jsonl").unlink()
    items.write_text(stale)
    try:
        result = CliRunner().invoke(
            app, ["halluc", "--model", str(tiny_llama_dir), *SMALL, "--out", str(attention_run), "--attn"]
        )
    finally:
        items.write_text(text)
    assert result.exit_code == 2
    assert "predate halluc --attn" in result.output and "Traceback" not in result.output


def test_diff_answer_share_over_the_net_mass_is_the_papers_normalisation() -> None:
    """answer ÷ net = answer mass / Σ(A1 − λ·A2) = (share over |net|) / (1 − 2·negative share); none
    where the net mass is not positive (λ ≥ 1), and none for softmax heads."""
    from diffbench.analysis.attention_summary import summarise_heads

    def head(model: str, variant: str, answer: float, negative: float | None, layer: int) -> dict[str, Any]:
        shares = {
            "answer": answer,
            "needle": answer,
            "noise": 0.1,
            "sink": 0.0,
            "question": 0.1,
            "prefix": 0.0,
        }
        return {
            "model": model, "variant": variant, "layer": layer, "head": 0, "target_length": 512, "depth": 0.0,
            "entropy": 1.0, "redundancy": 0.5, "negative_share": negative, **shares,
        }  # fmt: skip

    rows = [
        head("d", "diff", 0.12, 0.4, 0),  # net mass 0.2: 0.12 / 0.2 = 0.6
        head("d", "diff", 0.10, 0.3, 1),  # net mass 0.4: 0.25
        head("d", "diff", 0.05, 0.55, 1),  # net mass −0.1 (λ > 1): undefined, left out
        head("b", "baseline", 0.12, None, 0),
    ]
    summary = summarise_heads(pd.DataFrame(rows))
    by_model = {row["model"]: row for row in summary["models"]}
    assert by_model["d"]["answer_over_net"] == pytest.approx((0.6 + 0.25) / 2)
    assert by_model["b"]["answer_over_net"] is None
    layers = {(row["model"], row["layer"]): row for row in summary["layers"]}
    assert layers[("d", 1)]["answer_over_net"] == pytest.approx(0.25)
