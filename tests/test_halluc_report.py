"""`diffbench report` and `diffbench leaderboard` of halluc runs: each probe's own headline per mode (never
one pooled NIAH accuracy), paired tests across runs, the numbers recomputed here from records.jsonl."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from diffbench.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--lengths", "2k", "--samples", "2", "--device", "cpu"]
Key = tuple[str, str, str]  # model, probe, mode


def invoke(args: list[str], code: int = 0) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_runs(
    tiny_llama_dir: Path, tiny_llama_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """One model per run, the same probe options: the same sample set, the way users compare variants."""
    root = tmp_path_factory.mktemp("halluc-runs")
    for offset, (model, name) in enumerate([(tiny_llama_dir, "first"), (tiny_llama_chat_dir, "second")]):
        invoke(["halluc", "--model", str(model), *SMALL, "--out", str(root / name)])
        vary(root / name, offset)
    return root / "first", root / "second"


def vary(directory: Path, offset: int) -> None:
    """Random tiny models fail nearly every check alike: give each run its own mix of verdicts (consistent
    with the details the headlines read), so rates and paired differences are not all 0."""
    rows = records(directory)
    for index, row in enumerate(rows):
        verdict = (index + offset) % 3 != 0
        row["correct"] = verdict
        details = row["details"]
        if row["task"] == "halluc/counterfactual" and details["variant"] == "conflict":
            details["follow"], details["parametric"] = verdict, not verdict
        if row["task"] == "halluc/contrastive":
            details["wins"] = {op: (index + j + offset) % 2 == 0 for j, op in enumerate(details["wins"])}
    (directory / "records.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def by_key(rows: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    groups: dict[Key, list[dict[str, Any]]] = {}
    for row in rows:
        mode = "generate" if row["scoring"] == "generate" else "forced"
        groups.setdefault((row["model"], row["task"].removeprefix("halluc/"), mode), []).append(row)
    return groups


def mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def headline(probe: str, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """docs/design/probes.md's headline of one model × probe × mode, and the count it is a rate over."""
    details = [row["details"] for row in rows]
    if probe == "unanswerable":  # balanced accuracy over the answerable and the unanswerable halves
        halves = [
            [r["correct"] for r in rows if bool(r["details"].get("answerable")) is side]
            for side in (True, False)
        ]
        return (mean(halves[0]) + mean(halves[1])) / 2, len(rows)
    if probe == "counterfactual":  # context-following rate over the conflict needles
        follows = [bool(d["follow"]) for d in details if d["variant"] == "conflict"]
        return mean(follows), len(follows)
    if probe == "contrastive":  # pairwise accuracy over every (item, corruption) comparison
        wins = [bool(won) for d in details for won in d["wins"].values()]
        return mean(wins), len(wins)
    return mean([r["correct"] for r in rows]), len(rows)


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar(only_first: int, only_second: int) -> float:
    n, k = only_first + only_second, min(only_first, only_second)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def test_report_shows_each_probes_headline_from_the_records(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_runs
    out = tmp_path / "report"
    result = invoke(["report", str(first), str(second), "--out", str(out)])
    payload = json.loads((out / "report.json").read_text())
    expected = by_key(records(first) + records(second))
    assert {(r["model"], r["probe"], r["mode"]) for r in payload["probes"]} == set(expected)
    assert len(expected) == 16  # 2 models × (5 probes in generate and forced, contrastive forced only)
    for row in payload["probes"]:
        value, n = headline(row["probe"], expected[(row["model"], row["probe"], row["mode"])])
        assert (row["value"], row["n"]) == (pytest.approx(value), n), row
        if row["probe"] != "unanswerable":  # the balanced accuracy's interval averages its halves' bounds
            assert (row["low"], row["high"]) == pytest.approx(wilson(value * n, n))
    assert [run["kind"] for run in payload["runs"]] == ["halluc", "halluc"]
    # no NIAH views: no pooled accuracy, no depth × length grid, no effective length, no heatmaps
    assert not {"effective_lengths", "comparison", "effective_length_fraction"} & set(payload)
    assert not list(out.glob("heatmap_*")) and not list(out.glob("difference_*"))
    assert sorted(p.name for p in out.iterdir()) == ["headlines.csv", "report.json", "report.md"]
    markdown = (out / "report.md").read_text()
    assert "## Hallucination probes" in markdown and "### tiny-llama-chat: hallucination probes" in markdown
    assert "| factsum | generate | hallucination-free accuracy |" in markdown
    assert "Effective length" not in markdown and "Accuracy by length" not in markdown
    assert "depth × length" not in result.stdout and "Effective length" not in result.stdout
    assert "tiny-llama: hallucination probes" in result.stdout
    assert "tiny-llama factsum (generate): unsupported_number_rate" in result.stdout  # the secondaries


def test_report_of_two_runs_pairs_their_models_on_the_same_items(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_runs
    groups = by_key(records(first) + records(second))
    for reference, other in [("tiny-llama", "tiny-llama-chat"), ("tiny-llama-chat", "tiny-llama")]:
        out = tmp_path / reference
        result = invoke(["report", str(first), str(second), "--reference", reference, "--out", str(out)])
        payload = json.loads((out / "report.json").read_text())
        assert payload["reference"] == reference
        assert len(payload["comparisons"]) == 8 and "paired comparisons" in result.stdout
        for row in payload["comparisons"]:
            assert (row["first"], row["second"]) == (reference, other)
            verdicts = [
                {r["sample_id"]: bool(r["correct"]) for r in groups[(model, row["probe"], row["mode"])]}
                for model in (reference, other)
            ]
            shared = sorted(set(verdicts[0]) & set(verdicts[1]))
            only = [sum(a[s] and not b[s] for s in shared) for a, b in (verdicts, verdicts[::-1])]
            assert (row["n"], row["only_first"], row["only_second"]) == (len(shared), *only)
            assert row["mcnemar_p"] == pytest.approx(mcnemar(*only))
            difference = mean([verdicts[1][s] for s in shared]) - mean([verdicts[0][s] for s in shared])
            assert row["difference"] == pytest.approx(difference)
            assert row["low"] <= row["difference"] <= row["high"]


def test_report_csv_has_a_row_per_headline_with_the_paired_difference(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    import csv
    import io

    first, second = two_runs
    out = tmp_path / "report"
    result = invoke(["report", str(first), str(second), "--format", "csv", "--out", str(out)])
    assert result.stdout == (out / "headlines.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    payload = json.loads((out / "report.json").read_text())
    assert len(rows) == len(payload["probes"]) == 16
    paired = {(c["probe"], c["mode"]): c for c in payload["comparisons"]}
    for row, headline_row in zip(rows, payload["probes"], strict=True):
        assert (row["model"], row["probe"], row["mode"], row["metric"]) == tuple(
            headline_row[k] for k in ("model", "probe", "mode", "metric")
        )
        assert float(row["value"]) == pytest.approx(headline_row["value"], rel=1e-5)
        if row["model"] == "tiny-llama":  # the reference: nothing to pair with
            assert row["reference"] == row["difference"] == ""
        else:
            comparison = paired[(row["probe"], row["mode"])]
            assert row["reference"] == "tiny-llama" and int(float(row["paired_n"])) == comparison["n"]
            assert float(row["difference"]) == pytest.approx(comparison["difference"], abs=1e-5)


def test_report_refuses_halluc_runs_of_different_sample_sets(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    from diffbench.specs import HallucSpec

    other = tmp_path / "other"
    shutil.copytree(two_runs[1], other)
    manifest = json.loads((other / "manifest.json").read_text())
    spec = HallucSpec.model_validate({**manifest["spec"], "seed": 7})
    manifest |= {
        "run_id": "other",
        "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(),
    }
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = invoke(["report", str(two_runs[0]), str(other), "--out", str(tmp_path / "r")], code=2)
    assert "have different sample sets (their task specs differ in seed)" in result.stderr
    assert "Traceback" not in result.output


def test_leaderboard_has_a_column_per_probe_and_mode_with_the_reports_numbers(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    root = tmp_path / "results"
    for run in two_runs:
        shutil.copytree(run, root / run.name)
    report = tmp_path / "report"
    invoke(["report", *(str(root / run.name) for run in two_runs), "--out", str(report)])
    headlines = {
        (r["model"], r["probe"], r["mode"]): r
        for r in json.loads((report / "report.json").read_text())["probes"]
    }
    site = tmp_path / "site"
    result = invoke(["leaderboard", str(root), "--out", str(site)])
    assert "2 models × 1 sample sets; 8 probe headline columns" in result.stdout
    board = json.loads((site / "leaderboard.json").read_text())
    columns = {column["key"]: column for column in board["columns"]}
    assert len(columns) == 8 and {c["task"] for c in columns.values()} == {"halluc"}
    labels = [column["label"] for column in board["columns"]]
    assert labels[:3] == [
        "factsum · generate: hallucination-free accuracy",
        "factqa · generate: hallucination-free accuracy",
        "factqa · forced: forced-choice accuracy",
    ]
    assert "contrastive · forced: pairwise accuracy" in labels
    assert {row["model"] for row in board["rows"]} == {"tiny-llama", "tiny-llama-chat"}
    for row in board["rows"]:
        assert set(row["results"]) == set(columns)
        for key, cell in row["results"].items():
            assert "accuracy" not in cell and "effective_length" not in cell  # no pooled accuracy
            column = columns[key]
            expected = headlines[(row["model"], column["probe"], column["mode"])]
            assert cell == {k: expected[k] for k in ("metric", "value", "low", "high", "n")}
    page = (site / "index.html").read_text()
    assert "factqa · generate: hallucination-free accuracy" in page and "Paired comparisons against" in page
    assert "Accuracy by depth × length" not in page and page.count("<svg") == 0


def test_paired_comparisons_count_the_items_the_headline_counts() -> None:
    """P4's headline is over conflict needles: its paired test leaves the magic-number controls out."""
    from diffbench.report.halluc import compare_models, groups

    def record(model: str, index: int, variant: str, correct: bool) -> dict[str, Any]:
        return {
            "model": model,
            "sample_id": f"counterfactual/{variant}/1024/0/{index}#gen",
            "task": "halluc/counterfactual",
            "scoring": "generate",
            "correct": correct,
            "details": {"variant": variant},
        }

    rows = [record("a", i, "conflict", i < 3) for i in range(4)] + [record("a", 4, "magic", True)]
    rows += [record("b", i, "conflict", i < 1) for i in range(4)] + [record("b", 4, "magic", False)]
    (comparison,) = compare_models(groups(rows), resamples=200)
    assert (comparison.n, comparison.only_first, comparison.only_second) == (4, 2, 0)
    assert comparison.difference == pytest.approx(1 / 4 - 3 / 4)  # the headlines' difference
