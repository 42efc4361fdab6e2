"""`diffbench report` and `diffbench leaderboard` on real runs of tiny models, and on controlled ones."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from run_factory import always, spec, write_run, wrong_first
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.report.summary import effective_lengths

GRID = ["--lengths", "256,512", "--depths", "3"]


@dataclass
class Invocation:
    exit_code: int
    stdout: str
    stderr: str


def invoke(*args: str) -> Invocation:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Invocation(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def real_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, tiny_llama_chat_dir: Path
) -> Path:
    """results/run1 (two tiny models, one with a chat template) and results/run2 (one of them again)."""
    root = tmp_path_factory.mktemp("results")
    models = ["--model", str(tiny_llama_dir), "--model", str(tiny_llama_chat_dir)]
    first = invoke("niah", *models, *GRID, "--out", str(root / "run1"))
    assert first.exit_code == 0, first.stderr
    second = invoke("niah", "--model", str(tiny_llama_dir), *GRID, "--out", str(root / "run2"))
    assert second.exit_code == 0, second.stderr
    return root


def test_report_across_runs_writes_heatmaps_differences_and_tables(real_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    outcome = invoke("report", str(real_runs / "run1"), str(real_runs / "run2"), "--out", str(out))
    assert outcome.exit_code == 0, outcome.stderr
    payload = json.loads((out / "report.json").read_text())
    # tiny-llama ran in both runs, so its two results are told apart by run id.
    assert payload["models"] == ["tiny-llama@run1", "tiny-llama-chat", "tiny-llama@run2"]
    assert payload["reference"] == "tiny-llama@run1"
    names = {path.name for path in out.iterdir()}
    for stem in ("heatmap_tiny-llama-run1", "heatmap_tiny-llama-chat", "heatmap_tiny-llama-run2"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert "difference_tiny-llama-chat_vs_tiny-llama-run1.png" in names
    assert "difference_tiny-llama-run2_vs_tiny-llama-run1.svg" in names
    assert {"comparison.csv", "effective_length.csv", "report.md"} <= names
    # Identical model, identical samples: run2 reproduces run1 exactly, so every difference is 0.
    rows = {(r["model"], r["length"]): r for r in payload["comparison"]}
    again = rows[("tiny-llama@run2", "all")]
    assert again["delta"] == 0.0 and again["paired_n"] == 6
    assert rows[("tiny-llama@run1", "all")]["delta"] is None
    for row in payload["comparison"]:
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert "Effective length" in outcome.stdout and "Wilson 95% CI" in outcome.stdout
    assert len(payload["effective_lengths"]) == 3


def test_report_formats_csv_and_markdown(real_runs: Path, tmp_path: Path) -> None:
    run1 = str(real_runs / "run1")
    csv = invoke("report", run1, "--format", "csv", "--out", str(tmp_path / "a"))
    assert csv.exit_code == 0, csv.stderr
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert list(table["length"]) == ["256", "0.5K", "all"] * 2
    assert list(table["target_length"].fillna(0)) == [256, 512, 0] * 2
    assert list(table["n"]) == [3, 3, 6] * 2
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()
    assert table["delta"].notna().sum() == 3  # the chat model against the reference

    markdown = invoke(
        "report", run1, "-f", "markdown", "--reference", "tiny-llama-chat", "--out", str(tmp_path / "b")
    )
    assert markdown.exit_code == 0, markdown.stderr
    assert (
        "| task | model | variant | length | n | accuracy | 95% CI | Δ vs tiny-llama-chat | Δ 95% CI |"
        in (markdown.stdout)
    )
    assert "![heatmap_tiny-llama]" in markdown.stdout
    assert (tmp_path / "b" / "difference_tiny-llama_vs_tiny-llama-chat.png").exists()


def test_report_of_one_run_defaults_to_its_report_folder(real_runs: Path) -> None:
    outcome = invoke("report", str(real_runs / "run2"))
    assert outcome.exit_code == 0, outcome.stderr
    assert (real_runs / "run2" / "report" / "heatmap_tiny-llama.png").exists()
    assert not list((real_runs / "run2" / "report").glob("difference_*"))  # one model: no reference


@pytest.mark.parametrize(
    "reference, message",
    [("tiny-llama", "ambiguous: it ran in several runs; use one of"), ("gpt-9", "is not among the models")],
)
def test_report_refuses_an_unknown_or_ambiguous_reference(
    real_runs: Path, tmp_path: Path, reference: str, message: str
) -> None:
    runs = [str(real_runs / "run1"), str(real_runs / "run2")]
    outcome = invoke("report", *runs, "--reference", reference, "--out", str(tmp_path))
    assert outcome.exit_code == 2
    assert message in outcome.stderr


def test_report_says_clearly_when_runs_do_not_share_samples(tmp_path: Path) -> None:
    first = write_run(tmp_path / "first", spec(seed=0), {"a": always(True)})
    other = write_run(tmp_path / "other", spec(seed=1, lengths=[1024, 4096]), {"b": always(True)})
    outcome = invoke("report", str(first), str(other), "--out", str(tmp_path / "out"))
    assert outcome.exit_code == 2
    error = outcome.stderr.replace("\n", " ")
    assert "runs 'first' and 'other' have different sample sets" in error
    assert "differ in lengths, seed" in error
    assert not (tmp_path / "out").exists()


def test_difference_heatmaps_and_deltas_on_controlled_runs(tmp_path: Path) -> None:
    losing_2k = wrong_first(30, among=lambda sample_id: sample_id.startswith("niah/2048/"))
    run = write_run(tmp_path / "run", spec(), {"base": always(True), "worse": losing_2k})
    outcome = invoke("report", str(run), "--out", str(tmp_path / "out"))
    assert outcome.exit_code == 0, outcome.stderr
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    deltas = {r["length"]: r for r in payload["comparison"] if r["model"] == "worse"}
    assert deltas["1K"]["delta"] == 0.0
    assert deltas["2K"]["delta"] == -1.0
    assert deltas["all"]["delta"] == -0.5 and deltas["all"]["delta_high"] < 0
    effective = {r["model"]: r["effective_length"] for r in payload["effective_lengths"]}
    assert effective == {"base": 2048, "worse": 1024}
    svg = (tmp_path / "out" / "difference_worse_vs_base.svg").read_text()
    assert "−1.00" in svg or "-1.00" in svg


def test_effective_length_stops_at_the_first_length_below_85_percent() -> None:
    accuracy = {1024: 1.0, 2048: 0.9, 4096: 0.8, 8192: 0.95}
    rows = []
    for model, scale in (("good", 1.0), ("dead", 0.0)):
        for length, value in accuracy.items():
            hits = round(20 * value * scale)
            rows += [
                {
                    "task": "niah",
                    "model": model,
                    "variant": "baseline",
                    "target_length": length,
                    "correct": i < hits,
                }
                for i in range(20)
            ]
    table = effective_lengths(pd.DataFrame(rows)).set_index("model")
    assert table.loc["good", "threshold"] == pytest.approx(0.85)
    assert table.loc["good", "effective_length"] == 2048  # 4K drops to 0.8; 8K's recovery does not count
    assert pd.isna(table.loc["dead", "effective_length"])  # 0 at the shortest length: no effective length


def test_leaderboard_page_is_self_contained_with_heatmaps_and_provenance(
    real_runs: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    outcome = invoke("leaderboard", str(real_runs), "--out", str(site))
    assert outcome.exit_code == 0, outcome.stderr
    assert "2 models × 1 sample sets" in outcome.stdout
    assert "also in newer run run2" in outcome.stderr  # tiny-llama ran twice: the newest run counts
    page = (site / "index.html").read_text()
    # Self-contained: no stylesheet, script, image or font is fetched from anywhere.
    assert not re.search(r"""<(link|img|iframe)\b|<script[^>]*\bsrc=|url\((?!#)|@import""", page)
    targets = re.findall(r"""(?:src|href)=["']([^"']*)""", page)
    assert targets and all(target.startswith(("#", "data:")) for target in targets)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # several inline SVGs, no clashing element ids
    assert page.count("<svg") == 3  # two heatmaps, one difference view
    payload = json.loads((site / "leaderboard.json").read_text())
    assert [row["model"] for row in payload["rows"]] == ["tiny-llama", "tiny-llama-chat"]
    provenance = payload["rows"][0]["provenance"][0]
    assert provenance["run_id"] == "run2" and provenance["seed"] == 0 and provenance["device"] == "cpu"
    assert provenance["diffbench_version"] and provenance["date"] in page
    assert "niah 256–0.5K, 3 depths, prose, seed 0" in page


def test_leaderboard_shows_how_a_dex_checkpoint_was_made(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = write_run(results / "run", spec(), {"dex-ckpt": always(True)}, variants={"dex-ckpt": "dex"})
    manifest = json.loads((run / "manifest.json").read_text())
    checkpoint = tmp_path / "dex-ckpt"
    checkpoint.mkdir()
    (checkpoint / "diffbench.json").write_text(
        json.dumps(
            {
                "kind": "dex",
                "base_model": {"source": "smollm2", "name": "smollm2", "path": "/cache/smollm2"},
                "selected_heads": [[0, 1], [2]],
                "select": "retrieval",
                "training": {"steps": 200},
                "tokens_seen": 409600,
            }
        )
    )
    manifest["models"][0]["path"] = str(checkpoint)
    (run / "manifest.json").write_text(json.dumps(manifest))
    outcome = invoke("leaderboard", str(results), "--out", str(tmp_path / "site"))
    assert outcome.exit_code == 0, outcome.stderr
    provenance = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["rows"][0]["provenance"][0]
    assert provenance["variant"] == "dex" and provenance["base_model"] == "smollm2"
    assert provenance["adaptation"] == "DEX, 3 heads (retrieval), adapted 200 steps, 409,600 tokens"
    assert "409,600 tokens" in (tmp_path / "site" / "index.html").read_text()


def test_leaderboard_of_a_folder_without_runs_is_a_usage_error(tmp_path: Path) -> None:
    outcome = invoke("leaderboard", str(tmp_path), "--out", str(tmp_path / "site"))
    assert outcome.exit_code == 2
    assert "no run directories with records" in outcome.stderr


def test_leaderboard_rows_are_checkpoints_in_one_precision(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_run(results / "fp32", spec(), {"m": always(True)}, created_at="2026-11-20T10:00:00+00:00")
    write_run(results / "fp32-again", spec(), {"m": wrong_first(6)}, created_at="2026-11-21T10:00:00+00:00")
    bf16 = write_run(results / "bf16", spec(), {"m": wrong_first(30)})
    manifest = json.loads((bf16 / "manifest.json").read_text())
    manifest["models"][0]["dtype"] = "bfloat16"
    (bf16 / "manifest.json").write_text(json.dumps(manifest))
    outcome = invoke("leaderboard", str(results), "--out", str(tmp_path / "site"))
    assert outcome.exit_code == 0, outcome.stderr
    rows = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["rows"]
    accuracy = {row["model"]: next(iter(row["results"].values()))["accuracy"] for row in rows}
    assert accuracy == {"m": 0.9, "m (bfloat16)": 0.5}  # fp32: the newest of its two runs counts
    assert "fp32: m also in newer run fp32-again" in outcome.stderr.replace("\n", "")


def test_interval_cells_never_wrap_in_an_80_column_log() -> None:
    """CI logs are not TTYs: rich renders at 80 columns there, and a split '[0.44,\\n1.00]' is unreadable."""
    import io

    from rich.console import Console

    from diffbench.report.tables import rich_table

    headers = ["model", "variant", "length", "n", "accuracy", "95% CI", "Δ", "Δ 95% CI"]
    cells = [
        ["zoo-baseline", "baseline", "0.5K", "3", "1.00", "[0.44, 1.00]", "–", "–"],
        ["zoo-diff", "diff", "64K", "120", "0.00", "[0.00, 0.56]", "-1.00", "[-1.00, -1.00]"],
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=80, force_terminal=False).print(rich_table(headers, cells, "Accuracy"))
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "[" in line or "]" in line]
    assert len(rows) == 2
    for row, interval_cells in zip(rows, cells, strict=True):
        for cell in interval_cells[5::2]:
            if cell != "–":
                assert cell in row
        assert "zoo-" in row and interval_cells[1] in row
