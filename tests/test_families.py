"""Model families: a variant judged over its training seeds (stats.family_*, report/families.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from diffbench.cli import app
from diffbench.report.families import detect_families, explicit_families, parse_family
from diffbench.stats import family_comparison, family_estimate, paired_bootstrap
from tests.run_factory import sample_ids, spec, write_run


def test_one_seed_gives_the_items_bootstrap() -> None:
    """With one seed the two-way bootstrap draws items only: the interval of the items' mean."""
    rng = np.random.default_rng(1)
    scores = (rng.random(60) < 0.6).astype(float)
    estimate = family_estimate(scores[None, :], resamples=4000)
    reference = paired_bootstrap(np.zeros(60), scores, resamples=4000)
    assert estimate.mean == pytest.approx(scores.mean())
    assert estimate.low == pytest.approx(reference.low, abs=0.03)
    assert estimate.high == pytest.approx(reference.high, abs=0.03)


def test_disagreeing_seeds_widen_the_interval() -> None:
    """Three seeds at 0.2, 0.5 and 0.8 on 60 items: the variant's interval holds the seeds' spread,
    far wider than 180 independent verdicts' would be."""
    rng = np.random.default_rng(2)
    scores = np.stack([(rng.random(60) < p).astype(float) for p in (0.2, 0.5, 0.8)])
    estimate = family_estimate(scores)
    pooled = paired_bootstrap(np.zeros(180), scores.ravel())
    assert estimate.seeds == 3 and estimate.items == 60
    assert estimate.seed_means == pytest.approx(tuple(scores.mean(axis=1)))
    assert (estimate.high - estimate.low) > 2 * (pooled.high - pooled.low)
    assert estimate.low < estimate.mean < estimate.high


def test_the_two_way_interval_covers_the_variant_mean() -> None:
    """Coverage over simulated training runs: 8 seeds whose accuracies vary around 0.5, 40 items each;
    the 95% interval holds the variant's true mean in about 95% of 200 simulated studies (a bootstrap
    with few clusters runs a little narrow, hence the 0.85 floor)."""
    rng = np.random.default_rng(3)
    covered = 0
    for study in range(200):
        easiness = rng.normal(0, 1.0, size=40)  # items differ
        skill = rng.normal(0, 0.5, size=8)  # seeds differ
        probability = 1 / (1 + np.exp(-(skill[:, None] + easiness[None, :])))
        scores = (rng.random((8, 40)) < probability).astype(float)
        true_mean = np.mean(1 / (1 + np.exp(-(rng.normal(0, 0.5, 4000)[:, None] + easiness[None, :]))))
        estimate = family_estimate(scores, resamples=500, seed=study)
        covered += estimate.low <= true_mean <= estimate.high
    assert covered / 200 >= 0.85


def test_the_seed_permutation_p_is_exact() -> None:
    """The p-value is the share of splits of the pooled seeds at least as far apart as the observed one,
    counted here by brute force; 3 seeds against 3 cannot go below 2/20 = 0.1."""
    rng = np.random.default_rng(4)
    first = (rng.random((3, 30)) < 0.3).astype(float)
    second = (rng.random((3, 30)) < 0.7).astype(float)
    result = family_comparison(first, second)
    means = np.concatenate([first.mean(axis=1), second.mean(axis=1)])
    observed = second.mean() - first.mean()
    splits = list(itertools.combinations(range(6), 3))
    extreme = sum(
        abs(means[list(s)].mean() - np.delete(means, list(s)).mean()) >= abs(observed) - 1e-12 for s in splits
    )
    assert result.p_value == pytest.approx(extreme / 20)
    assert result.min_p == pytest.approx(0.1) and result.p_value >= 0.1
    assert result.difference == pytest.approx(observed)
    assert result.low < observed < result.high

    always, never = np.ones((3, 30)), np.zeros((3, 30))
    certain = family_comparison(never, always)
    assert (certain.difference, certain.low, certain.high, certain.p_value) == (1.0, 1.0, 1.0, 0.1)
    assert family_comparison(np.ones((1, 5)), np.zeros((1, 5))).p_value == 1.0  # one seed each: no evidence


def test_families_are_detected_from_seed_suffixes() -> None:
    families = detect_families(["zoo-baseline", "zoo-diff", "zoo-diff-s1", "zoo-baseline-s1", "other"])
    assert [(f.name, f.members) for f in families] == [
        ("zoo-baseline", ("zoo-baseline", "zoo-baseline-s1")),
        ("zoo-diff", ("zoo-diff", "zoo-diff-s1")),
        ("other", ("other",)),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["diff"], "is not NAME=MODEL,MODEL"),
        (["diff=a,a"], "lists a model twice"),
        (["diff=a,x"], "'x' is not among the models"),
        (["diff=a,b", "base=b,c"], "'b' is in --family 'diff' and 'base'"),
        (["d=a", "d=b"], "is given twice"),
    ],
)
def test_bad_family_options_are_usage_errors(options: list[str], message: str) -> None:
    from diffbench.errors import UsageError

    with pytest.raises(UsageError, match=message):
        explicit_families(options, ["a", "b", "c"])
    assert parse_family("v = a, b ") == ("v", ["a", "b"])


def seeded_runs(tmp_path: Path, seeds: int = 3) -> Path:
    """One run: variant base (seeds at 1/2 of the samples) and variant diff (seeds at 5/6)."""
    task_spec = spec(samples_per_cell=6)
    models = {f"base-s{seed}": (lambda sid, i, s=seed: (i + s) % 2 == 0) for seed in range(seeds)}
    models |= {f"diff-s{seed}": (lambda sid, i, s=seed: (i + s) % 6 != 0) for seed in range(seeds)}
    return write_run(tmp_path / "run", task_spec, models)


def test_report_shows_variants_over_seeds(tmp_path: Path) -> None:
    run = seeded_runs(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Variants over seeds" in result.stdout
    payload = json.loads((out / "report.json").read_text())
    base, diff = payload["families"]
    n = len(sample_ids(spec(samples_per_cell=6)))
    assert (base["family"], base["seeds"], base["samples"]) == ("base", 3, n)
    assert base["accuracy"] == pytest.approx(0.5) and diff["accuracy"] == pytest.approx(5 / 6)
    assert diff["seed_accuracies"] == pytest.approx([5 / 6] * 3)
    assert diff["difference"] == pytest.approx(5 / 6 - 0.5)
    assert diff["difference_low"] > 0  # paired on samples, the seeds agree: a clear difference
    assert diff["seed_permutation_p"] == pytest.approx(0.1) and diff["smallest_possible_p"] == pytest.approx(
        0.1
    )
    # the terminal shows each variant's grid (mean over seeds, max − min in brackets), not each seed's
    assert "base (3 seeds): accuracy by depth × length" in result.stdout
    assert "base-s0: accuracy by depth" not in result.stdout
    # base's seeds each get half of every cell right (different halves): cell means agree, no spread
    assert "0.50 (0.0)" in result.stdout and "0.83 (0.0)" in result.stdout
    assert (out / "families.csv").read_text().startswith("family,members,seeds")
    assert (out / "heatmap_family_diff.png").is_file()
    assert "Variants over seeds" in (out / "report.md").read_text()


def test_report_family_option_groups_named_models(tmp_path: Path) -> None:
    run = seeded_runs(tmp_path, seeds=2)
    out = tmp_path / "report"
    args = [
        "report",
        str(run),
        "--out",
        str(out),
        "--family",
        "mixed=base-s0,diff-s1",
        "--reference",
        "diff-s0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    families = {row["family"]: row for row in json.loads((out / "report.json").read_text())["families"]}
    assert families["mixed"]["members"] == ["base-s0", "diff-s1"]
    assert families["mixed"]["reference"] == "diff-s0"  # a lone model is its own variant
    assert set(families) == {"mixed", "base-s1", "diff-s0"}
    bad = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--family", "x=nope"])
    assert bad.exit_code == 2 and "'nope' is not among the models" in bad.output


def family_runs(tmp_path: Path, seeds: int, candidate_rate: int) -> tuple[Path, Path]:
    """A baseline run (seeds at 5/6 of the samples) and a candidate run (seeds at 1/candidate_rate)."""
    task_spec = spec(samples_per_cell=6)
    base = {f"base-s{s}": (lambda sid, i, s=s: (i + s) % 6 != 0) for s in range(seeds)}
    cand = {f"cand-s{s}": (lambda sid, i, s=s: (i + s) % candidate_rate == 0) for s in range(seeds)}
    return write_run(tmp_path / "base", task_spec, base), write_run(tmp_path / "cand", task_spec, cand)


def family_check(base: Path, cand: Path, seeds: int, tmp_path: Path) -> tuple[int, str, dict[str, object]]:
    members = [",".join(f"{role}-s{s}" for s in range(seeds)) for role in ("base", "cand")]
    args = ["check", "--baseline", str(base), "--candidate", str(cand), "--output", str(tmp_path / "c.json")]
    result = CliRunner().invoke(
        app, [*args, "--baseline-family", members[0], "--candidate-family", members[1]]
    )
    return result.exit_code, result.output, json.loads((tmp_path / "c.json").read_text())


def test_check_flags_a_variant_regression_over_four_seeds(tmp_path: Path) -> None:
    base, cand = family_runs(tmp_path, seeds=4, candidate_rate=2)
    code, output, verdict = family_check(base, cand, 4, tmp_path)
    assert code == 1 and "REGRESSION" in output and "seed-level" in output and "McNemar" not in output
    (row,) = verdict["rows"]  # type: ignore[misc]
    assert row["test"] == "seed permutation" and row["p_value"] == pytest.approx(2 / 70)
    assert row["drop"] == pytest.approx(5 / 6 - 1 / 2)
    assert row["baseline_accuracy"] == pytest.approx(5 / 6) and row["n"] == 36


def test_check_says_when_three_seeds_cannot_show_a_regression(tmp_path: Path) -> None:
    """The same drop over 3 seeds each: p cannot fall below 0.1, so the check passes and says why."""
    base, cand = family_runs(tmp_path, seeds=3, candidate_rate=2)
    code, output, verdict = family_check(base, cand, 3, tmp_path)
    assert code == 0 and "cannot go below p = 0.1" in " ".join(output.split())
    (row,) = verdict["rows"]  # type: ignore[misc]
    assert row["verdict"] == "not significant" and row["p_value"] == pytest.approx(0.1)
    half = CliRunner().invoke(
        app, ["check", "--baseline", str(base), "--candidate", str(cand), "--baseline-family", "base-s0"]
    )
    assert half.exit_code == 2 and "pass both --baseline-family and --candidate-family" in half.output


def test_leaderboard_shows_variants_over_seeds(tmp_path: Path) -> None:
    seeded_runs(tmp_path / "results", seeds=2)
    site = tmp_path / "site"
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "results"), "--out", str(site)])
    assert result.exit_code == 0, result.output
    page = (site / "index.html").read_text()
    assert "Variants over seeds" in page and "base: mean over 2 seed(s)" in page
    (families,) = json.loads((site / "leaderboard.json").read_text())["families"].values()
    assert [row["family"] for row in families] == ["base", "diff"]
    assert families[1]["accuracy"] == pytest.approx(5 / 6)


def test_niah_runs_and_reports_a_family(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """niah --family NAME=A,B adds the seeds' models and reports them as one variant (real models: two
    copies of the tiny Llama under seed names, so the seeds agree sample for sample)."""
    import shutil

    seeds = [shutil.copytree(tiny_llama_dir, tmp_path / f"tiny-s{seed}") for seed in range(2)]
    args = ["niah", "--lengths", "256", "--depths", "2", "--samples", "2", "--haystack", "noise", "--json"]
    args += ["--family", f"tiny={seeds[0]},{seeds[1]}", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (family,) = payload["families"]
    assert family["members"] == ["tiny-s0", "tiny-s1"] and family["seeds"] == 2 and family["samples"] == 4
    assert (
        family["seed_accuracies"][0] == family["seed_accuracies"][1]
    )  # identical weights, identical verdicts
    assert [row["model"] for row in payload["models"]] == ["tiny-s0", "tiny-s1"]
    # the same command without --json resumes the finished run and closes with the variant's line
    args.remove("--json")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    accuracy = family["accuracy"]
    assert f"tiny (2 seeds): accuracy {accuracy:.3f}" in again.stdout
    assert "tiny (2 seeds): accuracy by" in again.stdout  # the variant's grid (its title wraps here)
