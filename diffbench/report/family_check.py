"""`diffbench check` over model families: is the candidate variant (its seeds) worse than the baseline
variant (its seeds), beyond the seeds' own spread?

A checkpoint series trained on several seeds is judged as a variant: the drop is the difference of the
two variants' accuracies over every seed and the samples all of them answered (paired on samples), its
interval a two-way bootstrap, and its p-value the exact seed-level permutation test
(``stats.family_comparison``). That test is honest about how few seeds there are: with 3 seeds against
3 no p falls below 0.1, so at α = 0.05 no regression can be flagged, and the check says so.
"""

from __future__ import annotations

import math

from diffbench.errors import UsageError
from diffbench.report.check import CheckResult, Row, decide_row
from diffbench.report.families import seed_matrix
from diffbench.report.runs import Run
from diffbench.specs import HallucSpec, spec_difference
from diffbench.stats import DEFAULT_RESAMPLES, family_comparison, family_estimate

TEST = "seed permutation"


def parse_members(text: str, run: Run, role: str) -> list[str]:
    """``A,B,C``: models of the run, each once (its seeds)."""
    members = [m.strip() for m in text.split(",") if m.strip()]
    if not members:
        raise UsageError(f"--{role}-family is empty: list the seeds' models, e.g. --{role}-family a-s0,a-s1")
    if len(set(members)) != len(members):
        raise UsageError(f"--{role}-family lists a model twice; list each seed's model once")
    models = run.model_names()
    missing = [m for m in members if m not in models]
    if missing:
        raise UsageError(
            f"--{role}-family: {', '.join(map(repr, missing))} has no records in run {run.run_id!r}; "
            f"use models of {', '.join(models)}"
        )
    return members


def compare_families(
    baseline: Run,
    candidate: Run,
    baseline_members: list[str],
    candidate_members: list[str],
    max_drop: float = 0.02,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> CheckResult:
    """One overall row: baseline variant − candidate variant, over their seeds, on shared samples."""
    import pandas as pd

    if baseline.fingerprint != candidate.fingerprint:
        fields = ", ".join(spec_difference(baseline.manifest.spec, candidate.manifest.spec)) or "spec"
        raise UsageError(
            f"baseline and candidate runs differ in {fields}: families are compared on the same samples; "
            "run both with the same task options"
        )
    if isinstance(baseline.manifest.spec, HallucSpec):
        raise UsageError(
            "--baseline-family/--candidate-family compare niah runs; halluc runs compare one model"
        )
    verdicts = [
        seed_matrix(pd.DataFrame.from_records(run.records), members)
        for run, members in ((baseline, baseline_members), (candidate, candidate_members))
    ]
    shared = sorted(set(verdicts[0].dropna(axis=1).columns) & set(verdicts[1].dropna(axis=1).columns))
    if not shared:
        raise UsageError("the families share no sample that every seed answered; nothing to compare")
    first, second = (matrix[shared].to_numpy() for matrix in verdicts)
    before, after = family_estimate(first, resamples, seed), family_estimate(second, resamples, seed)
    compared = family_comparison(first, second, resamples, seed)
    means_first, means_second = first.mean(axis=0), second.mean(axis=0)
    row = Row(
        level="overall",
        name="all (variants over seeds)",
        n=len(shared),
        baseline_accuracy=before.mean,
        candidate_accuracy=after.mean,
        baseline_ci=(before.low, before.high),
        candidate_ci=(after.low, after.high),
        drop=-compared.difference,
        only_baseline=int((means_first > means_second).sum()),  # samples the baseline seeds do better on
        only_candidate=int((means_second > means_first).sum()),
        p_raw=compared.p_value,
        p_value=compared.p_value,
        test=TEST,
    )
    decide_row(row, max_drop, alpha)
    answered = [int(matrix.notna().to_numpy().sum()) for matrix in verdicts]  # records of all the seeds
    result = CheckResult(
        baseline_run=baseline.run_id,
        baseline_dir=str(baseline.directory),
        baseline_model=",".join(baseline_members),
        candidate_run=candidate.run_id,
        candidate_dir=str(candidate.directory),
        candidate_model=",".join(candidate_members),
        spec_fingerprint=baseline.fingerprint,
        max_drop=max_drop,
        alpha=alpha,
        score_test=False,
        paired=len(shared),
        baseline_only=answered[0] - len(shared) * len(baseline_members),
        candidate_only=answered[1] - len(shared) * len(candidate_members),
        identical_prompts=len(shared),
        rows=[row],
    )
    seeds = ", ".join(f"{value:.3f}" for value in before.seed_means)
    result.notes.append(
        f"per seed: baseline {seeds}; candidate {', '.join(f'{value:.3f}' for value in after.seed_means)}; "
        f"drop interval (two-way bootstrap 95%) [{-compared.high:+.3f}, {-compared.low:+.3f}]"
    )
    if compared.min_p >= alpha:
        result.notes.append(
            f"with {len(baseline_members)} baseline and {len(candidate_members)} candidate seeds the "
            f"seed-level test cannot go below p = {compared.min_p:.3g} ≥ α = {alpha:g}: no regression can be "
            "flagged; "
            f"train more seeds (4 against 4 reach p = {2 / math.comb(8, 4):.3g})"
        )
    result.notes += baseline.notes + candidate.notes
    return result
