"""The few statistics diffbench reports, written out so their assumptions are visible.

- Wilson score intervals for accuracies: unlike the normal approximation they stay inside [0, 1]
  and keep their coverage at 0% or 100% accuracy and small n, which NIAH cells often are.
- The exact McNemar test for paired verdicts: only samples where the two models disagree carry
  information, and under "no difference" each disagreement goes either way with probability 1/2.
- A seeded paired bootstrap for intervals of score differences, with a sign-flip test for their
  p-value (the bootstrap's own null distribution collapses on a handful of pairs).
- ``paired_comparison``: the one comparison of two models on paired items, both of the above.
- For variants trained on several seeds (model families): a two-way bootstrap over seeds and items,
  whose interval holds both training's variation and the benchmark's sampling, and a seed-level
  permutation test of two variants' difference, exact over every split of their seeds.
- Holm's step-down adjustment, so a grid of many cells does not flag cells by chance.
- A seeded stratified bootstrap interval for an AUROC (a score telling clean from hallucinated
  answers), so twenty answers are not read as a finding.

numpy only (imported inside functions); no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000


def normal_quantile(confidence: float) -> float:
    """The two-sided standard-normal critical value (1.96 for 95%)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when there are no trials."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (math.nan, math.nan)
    z = normal_quantile(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Clamp rounding noise only: the exact bounds are 0 and 1 at the extremes.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts.

    ``only_first``: pairs the first model got right and the second wrong; ``only_second`` the
    reverse. Concordant pairs do not enter. Exact binomial(n, 1/2) tail, doubled, capped at 1;
    with no discordant pairs there is no evidence of a difference (p = 1).
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("discordant counts must be non-negative")
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Integer arithmetic, then one correctly rounded division: exact for any n.
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class BootstrapResult:
    """Mean paired difference (second − first), its bootstrap interval and a two-sided p-value."""

    mean_difference: float
    low: float
    high: float
    p_value: float
    resamples: int


EXACT_SIGN_FLIPS = 12


def paired_bootstrap(
    first: Any,
    second: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> BootstrapResult:
    """Paired bootstrap interval of the mean difference, with a sign-flip p-value.

    The interval resamples pairs with replacement (percentile method). The p-value does not come
    from the bootstrap distribution: with few pairs, or pairs that all differ by the same amount,
    that distribution collapses to a point and would call a single sample significant. Instead,
    under "no difference" each pair's difference is as likely to have either sign, so the p-value
    is the share of sign assignments whose mean is at least as extreme: exact for up to 12 pairs,
    ``resamples`` seeded random flips beyond. For 0/1 verdicts this is McNemar's exact test again.
    """
    import numpy as np

    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired_bootstrap needs two 1-D sequences of equal length")
    if a.size == 0:
        return BootstrapResult(math.nan, math.nan, math.nan, 1.0, resamples)
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    differences = b - a
    n = differences.size
    observed = float(differences.mean())
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])

    # A tolerance so that floating-point noise does not decide whether a flip counts as extreme.
    threshold = abs(observed) - 1e-12
    if n <= EXACT_SIGN_FLIPS:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        flipped = np.abs((patterns * differences).mean(axis=1))
        p_value = float((flipped >= threshold).mean())
    else:
        signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
        flipped = np.abs((signs * differences).mean(axis=1))
        p_value = float((1 + (flipped >= threshold).sum()) / (resamples + 1))
    if observed == 0.0:
        p_value = 1.0
    return BootstrapResult(observed, float(low), float(high), min(1.0, p_value), resamples)


@dataclass(frozen=True)
class PairedComparison:
    """Two models on the same items: the discordant counts, McNemar's exact p-value (when both are 0/1
    verdicts), and the mean difference (second − first) with its bootstrap interval and sign-flip p."""

    n: int
    only_first: int
    only_second: int
    mcnemar_p: float | None
    difference: float
    low: float
    high: float
    p_value: float


def paired_comparison(
    first: Any,
    second: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PairedComparison:
    """The one way diffbench compares two models on paired items (check, halluc, report).

    ``first[i]`` and ``second[i]`` are the two models' values on item i: verdicts (0/1) or scores
    with partial credit. ``only_first`` counts items where the first is higher, ``only_second`` the
    reverse; for verdicts these are the discordant pairs and ``mcnemar_p`` is McNemar's exact test
    on them (None for partial-credit scores, where the sign-flip ``p_value`` is the test).
    ``resamples=0`` skips the bootstrap where only the counts and McNemar are wanted: the interval is
    then (nan, nan) and ``p_value`` McNemar's.
    """
    import numpy as np

    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    only_first, only_second = int((a > b).sum()), int((b > a).sum())
    verdicts = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    mcnemar_p = mcnemar_exact(only_first, only_second) if verdicts else None
    if resamples == 0:
        difference = float((b - a).mean()) if a.size and a.shape == b.shape else math.nan
        p_value = math.nan if mcnemar_p is None else mcnemar_p
        interval = BootstrapResult(difference, math.nan, math.nan, p_value, 0)
    else:
        interval = paired_bootstrap(a, b, resamples, seed, confidence)
    return PairedComparison(
        n=int(a.size),
        only_first=only_first,
        only_second=only_second,
        mcnemar_p=mcnemar_p,
        difference=interval.mean_difference,
        low=interval.low,
        high=interval.high,
        p_value=interval.p_value,
    )


def auroc_interval(
    positive: Any,
    negative: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """Percentile interval of the AUROC P(score⁺ > score⁻) + ½·P(tie), from a stratified bootstrap.

    Positives and negatives are resampled apart, so every resample keeps both classes at their
    sizes; each resample's AUROC is the Mann-Whitney count over all its pairs.
    """
    import numpy as np

    pos = np.asarray(positive, dtype=float)
    neg = np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("an AUROC needs scores of both classes")
    rng = np.random.default_rng(seed)
    a = pos[rng.integers(0, pos.size, size=(resamples, pos.size))][:, :, None]
    b = neg[rng.integers(0, neg.size, size=(resamples, neg.size))][:, None, :]
    aurocs = ((a > b) + 0.5 * (a == b)).mean(axis=(1, 2))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(aurocs, [tail, 1.0 - tail])
    return float(low), float(high)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (controls the family-wise error rate)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class FamilyEstimate:
    """A variant's mean over its seeds and their items, with an interval that counts both seeds and items."""

    mean: float
    low: float
    high: float
    seeds: int
    items: int
    seed_means: tuple[float, ...]


def _two_way_means(scores: Any, seed_draws: Any, item_draws: Any) -> Any:
    """Mean of each resampled block: rows ``seed_draws[r]`` × columns ``item_draws[r]`` of ``scores``."""
    import numpy as np

    # per seed and resample, the mean over the resampled items; then the mean over the resampled seeds
    item_means = np.stack([scores[:, draws].mean(axis=1) for draws in item_draws], axis=1)  # seeds × R
    return np.take_along_axis(item_means, seed_draws.T, axis=0).mean(axis=0)


def family_estimate(
    scores: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> FamilyEstimate:
    """The mean of a seeds × items score matrix (every seed answered the same items) with a two-way
    bootstrap percentile interval: each resample draws seeds and items with replacement, independently,
    so the interval widens when seeds disagree as well as when items are few.

    With one seed it is the items' bootstrap; with few seeds (3) the bootstrap is known to be narrow
    (it cannot see seed variation beyond the seeds drawn), which the seed-level test below does not hide.
    """
    import numpy as np

    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError("family_estimate needs a non-empty seeds × items matrix")
    n_seeds, n_items = matrix.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    item_draws = rng.integers(0, n_items, size=(resamples, n_items))
    means = _two_way_means(matrix, seed_draws, item_draws)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    seed_means = tuple(float(v) for v in matrix.mean(axis=1))
    return FamilyEstimate(float(matrix.mean()), float(low), float(high), n_seeds, n_items, seed_means)


@dataclass(frozen=True)
class FamilyComparison:
    """``second`` − ``first`` over two variants' seeds on the same items: a two-way paired bootstrap
    interval and an exact seed-level permutation p-value (its smallest possible value, ``min_p``, says
    how much the seed counts allow: 3 seeds against 3 cannot go below 0.1)."""

    difference: float
    low: float
    high: float
    p_value: float
    min_p: float
    seeds_first: int
    seeds_second: int
    items: int


def family_comparison(
    first: Any,
    second: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> FamilyComparison:
    """Two variants' seeds × items matrices over the same items (columns aligned).

    The interval draws the items once per resample for both variants (they are paired on items) and
    each variant's seeds apart. The p-value permutes the variant labels over the seeds' means: under
    "no difference between the variants" every split of the pooled seeds is as likely, so it is
    exact, and honest about how few seeds there are.
    """
    import itertools

    import numpy as np

    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.size == 0 or b.size == 0:
        raise ValueError("family_comparison needs two non-empty seeds × items matrices over the same items")
    n_items = a.shape[1]
    rng = np.random.default_rng(seed)
    item_draws = rng.integers(0, n_items, size=(resamples, n_items))
    draws_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    draws_b = rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
    differences = _two_way_means(b, draws_b, item_draws) - _two_way_means(a, draws_a, item_draws)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])

    seed_means = np.concatenate([a.mean(axis=1), b.mean(axis=1)])
    observed = float(b.mean() - a.mean())
    pooled = range(seed_means.size)
    splits = list(itertools.combinations(pooled, b.shape[0]))
    extreme = 0
    for chosen in splits:
        mask = np.zeros(seed_means.size, dtype=bool)
        mask[list(chosen)] = True
        split = seed_means[mask].mean() - seed_means[~mask].mean()
        extreme += abs(split) >= abs(observed) - 1e-12
    p_value = 1.0 if observed == 0.0 else extreme / len(splits)
    # the observed split and its mirror (for equal counts) are always at least as extreme
    min_p = (2 if a.shape[0] == b.shape[0] else 1) / len(splits)
    return FamilyComparison(
        observed, float(low), float(high), p_value, min_p, a.shape[0], b.shape[0], n_items
    )
