"""Model families: the seeds of one attention variant, reported as the variant.

One training seed decides little (the zoo's Diff seed 0 retrieves nothing where seed 1 retrieves to
4K), so a variant is judged over its seeds: its accuracy over every seed and sample with a two-way
bootstrap interval (seeds and samples, ``stats.family_estimate``), each seed's accuracy beside it,
a depth × length grid of the mean over seeds with the seeds' spread, and its difference to the
reference variant with an interval and an exact seed-level permutation p (``stats.family_comparison``).

Families come from ``--family NAME=MODEL,MODEL,...`` or, without it, from the model names: names that
differ only by a ``-sN`` suffix (``zoo-diff``, ``zoo-diff-s1``, ``zoo-diff-s2``) are one family named
after the shared stem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from diffbench.errors import UsageError
from diffbench.stats import FamilyComparison, FamilyEstimate, family_comparison, family_estimate

SEED_SUFFIX = re.compile(r"-s(\d+)$")


@dataclass(frozen=True)
class Family:
    """A variant's name and its members: model names (labels) in the runs, one per training seed."""

    name: str
    members: tuple[str, ...]


def parse_family(text: str) -> tuple[str, list[str]]:
    """``NAME=A,B,C`` → (NAME, [A, B, C]); a malformed option is a usage error naming the form."""
    name, separator, listed = text.partition("=")
    members = [member.strip() for member in listed.split(",") if member.strip()]
    if not separator or not name.strip() or not members:
        raise UsageError(
            f"--family {text!r} is not NAME=MODEL,MODEL,...: e.g. --family diff=./diff-s0,./diff-s1"
        )
    if len(set(members)) != len(members):
        raise UsageError(f"--family {name.strip()!r} lists a model twice; list each seed's model once")
    return name.strip(), members


def family_stem(model: str) -> str:
    """The name without its seed suffix: ``zoo-diff-s2`` → ``zoo-diff``; other names are their own stem."""
    return SEED_SUFFIX.sub("", model)


def detect_families(models: list[str]) -> list[Family]:
    """Every model in one family: names that differ only by ``-sN`` share one; others stand alone."""
    stems: dict[str, list[str]] = {}
    for model in models:
        stems.setdefault(family_stem(model), []).append(model)
    return [Family(stem, tuple(members)) for stem, members in stems.items()]


def explicit_families(options: list[str], models: list[str]) -> list[Family]:
    """``--family`` options over the runs' models; models no family lists stand alone, in run order."""
    families: list[Family] = []
    claimed: dict[str, str] = {}
    for text in options:
        name, members = parse_family(text)
        if any(f.name == name for f in families):
            raise UsageError(f"--family {name!r} is given twice; give each family once")
        for member in members:
            if member not in models:
                raise UsageError(
                    f"--family {name!r}: {member!r} is not among the models ({', '.join(models)})"
                )
            if member in claimed:
                raise UsageError(
                    f"{member!r} is in --family {claimed[member]!r} and {name!r}; keep it in one"
                )
            claimed[member] = name
        families.append(Family(name, tuple(members)))
    return families + [Family(model, (model,)) for model in models if model not in claimed]


def seed_matrix(frame: pd.DataFrame, members: Sequence[str]) -> pd.DataFrame:
    """Verdicts (0/1) of a family's seeds (rows, in ``members``' order) × sample ids (columns); NaN where
    a seed has no record of the sample."""
    own = frame[frame["model"].isin(members)]
    matrix = own.pivot_table(index="model", columns="sample_id", values="correct", aggfunc="first")
    return matrix.reindex(list(members)).astype(float)


@dataclass
class FamilyView:
    """What the report shows of families: per variant its estimate, and the differences to the reference."""

    families: list[Family]
    reference: str
    estimates: dict[str, FamilyEstimate]
    comparisons: dict[str, FamilyComparison]
    grids: dict[str, pd.DataFrame] = field(default_factory=dict)  # mean over seeds, depth × length
    spreads: dict[str, pd.DataFrame] = field(default_factory=dict)  # max − min over seeds
    notes: list[str] = field(default_factory=list)

    def payload(self) -> list[dict[str, Any]]:
        """report.json's ``families``: one entry per variant, numbers as computed."""
        rows = []
        for family in self.families:
            estimate = self.estimates[family.name]
            row: dict[str, Any] = {
                "family": family.name,
                "members": list(family.members),
                "seeds": estimate.seeds,
                "samples": estimate.items,
                "accuracy": estimate.mean,
                "low": estimate.low,
                "high": estimate.high,
                "seed_accuracies": list(estimate.seed_means),
                "reference": self.reference,
            }
            comparison = self.comparisons.get(family.name)
            if comparison is not None:
                row |= {
                    "difference": comparison.difference,
                    "difference_low": comparison.low,
                    "difference_high": comparison.high,
                    "seed_permutation_p": comparison.p_value,
                    "smallest_possible_p": comparison.min_p,
                }
            rows.append(row)
        return rows


def family_view(
    frame: pd.DataFrame, families: list[Family], reference: str | None, seed: int = 0
) -> FamilyView | None:
    """Families' estimates from the records (``model`` holds run labels); None unless some family has
    several members. Only samples every member of a family answered count, and a comparison counts
    only samples both variants' members all answered: the items stay paired."""
    if not any(len(family.members) > 1 for family in families):
        return None
    names = [family.name for family in families]
    base = reference if reference in names else names[0]
    if reference is not None and reference not in names:
        base = next((f.name for f in families if reference in f.members), base)
    matrices: dict[str, pd.DataFrame] = {}
    notes = []
    for family in families:
        matrix = seed_matrix(frame, family.members)
        complete = matrix.dropna(axis=1)
        if complete.shape[1] < matrix.shape[1]:
            notes.append(
                f"family {family.name}: {matrix.shape[1] - complete.shape[1]} samples not answered by every "
                "seed are left out of its estimate"
            )
        matrices[family.name] = complete
    estimates = {
        name: family_estimate(matrix.to_numpy(), seed=seed)
        for name, matrix in matrices.items()
        if matrix.size
    }
    comparisons = {}
    for name, matrix in matrices.items():
        if name == base or not matrix.size or not matrices[base].size:
            continue
        shared = matrices[base].columns.intersection(matrix.columns)
        if len(shared):
            comparisons[name] = family_comparison(
                matrices[base][shared].to_numpy(), matrix[shared].to_numpy(), seed=seed
            )
    view = FamilyView([f for f in families if f.name in estimates], base, estimates, comparisons, notes=notes)
    cells = frame.groupby(["model", "target_length", "depth"])["correct"].mean().reset_index()
    for family in view.families:
        own = cells[cells["model"].isin(family.members)]
        per_cell = own.groupby(["depth", "target_length"])["correct"]
        view.grids[family.name] = per_cell.mean().unstack("target_length").sort_index()
        view.spreads[family.name] = (per_cell.max() - per_cell.min()).unstack("target_length").sort_index()
    return view


FAMILIES_TITLE = "Variants over seeds"
FAMILIES_CAPTION = (
    "accuracy over every seed and sample, two-way bootstrap 95% CI (seeds and samples); per seed: each "
    "seed's accuracy; Δ: difference to the reference variant, paired on samples, bootstrap 95% CI; p: exact "
    "seed-level permutation test (its smallest possible value, with these seed counts, in brackets)"
)


def family_cells(view: FamilyView) -> tuple[list[str], list[list[str]]]:
    """The variants table as text cells (terminal and report.md)."""
    headers = ["variant", "seeds", "accuracy [95% CI]", "per seed", f"Δ vs {view.reference} [95% CI]", "p"]
    cells = []
    for family in view.families:
        estimate = view.estimates[family.name]
        comparison = view.comparisons.get(family.name)
        delta = p_text = "–"
        if comparison is not None:
            delta = f"{comparison.difference:+.3f} [{comparison.low:+.3f}, {comparison.high:+.3f}]"
            p_text = f"{comparison.p_value:.2g} (≥{comparison.min_p:.2g})"
        cells.append(
            [
                family.name,
                str(estimate.seeds),
                f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]",
                " ".join(f"{value:.2f}" for value in estimate.seed_means),
                delta,
                p_text,
            ]
        )
    return headers, cells


def family_lines(view: FamilyView) -> list[str]:
    """One closing line per variant with several seeds: the verdict a reader should take away."""
    lines = []
    for family in view.families:
        if len(family.members) < 2:
            continue
        estimate = view.estimates[family.name]
        per_seed = " ".join(f"{value:.2f}" for value in estimate.seed_means)
        line = (
            f"{family.name} ({estimate.seeds} seeds): accuracy {estimate.mean:.3f} "
            f"[{estimate.low:.3f}, {estimate.high:.3f}], per seed {per_seed}"
        )
        comparison = view.comparisons.get(family.name)
        if comparison is not None:
            line += (
                f"; vs {view.reference} {comparison.difference:+.3f} [{comparison.low:+.3f}, "
                f"{comparison.high:+.3f}], seed permutation p {comparison.p_value:.2g} "
                f"(≥{comparison.min_p:.2g})"
            )
        lines.append(line)
    return lines


def families_csv(view: FamilyView) -> str:
    """families.csv: the payload's rows, seed accuracies joined by spaces."""
    rows = [
        {
            **row,
            "members": " ".join(row["members"]),
            "seed_accuracies": " ".join(map(str, row["seed_accuracies"])),
        }
        for row in view.payload()
    ]
    return str(pd.DataFrame(rows).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
