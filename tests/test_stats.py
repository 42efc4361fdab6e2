"""diffbench.stats against textbook values and brute force."""

from __future__ import annotations

import itertools
import math

import pytest

from diffbench.stats import (
    auroc_interval,
    holm_adjust,
    mcnemar_exact,
    paired_bootstrap,
    paired_comparison,
    wilson_interval,
)


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        (0, 10, 0.0, 0.2775),  # Agresti & Coull (1998), Table 1 style values
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), example 1
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edge_cases() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    narrow, wide = wilson_interval(50, 100, 0.8), wilson_interval(50, 100, 0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def brute_force_mcnemar(b: int, c: int) -> float:
    """Two-sided exact test: total probability of discordant splits no more likely than the observed one."""
    n = b + c
    if n == 0:
        return 1.0
    pmf = [math.comb(n, k) / 2**n for k in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[b] * (1 + 1e-12)))


@pytest.mark.parametrize("b, c", [*itertools.product(range(0, 9), range(0, 9)), (20, 0), (30, 12), (0, 150)])
def test_mcnemar_exact_equals_the_binomial_test(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(brute_force_mcnemar(b, c), rel=1e-12)


def test_mcnemar_known_values() -> None:
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) > 0.05 > mcnemar_exact(6, 0)  # 0.0625 vs 0.03125
    assert 0 < mcnemar_exact(3000, 2000) < 1e-40  # large n stays exact, no overflow


def test_paired_bootstrap_is_seeded_and_centred_on_the_mean_difference() -> None:
    first = [0.2, 0.4, 0.9, 0.5, 0.7, 0.3, 0.6, 0.8, 0.1, 0.5, 0.4, 0.6, 0.9, 0.2]
    second = [v - 0.1 + 0.05 * (i % 3) for i, v in enumerate(first)]
    one, two = paired_bootstrap(first, second, seed=3), paired_bootstrap(first, second, seed=3)
    assert one == two
    assert one.low <= one.mean_difference <= one.high
    assert one.mean_difference == pytest.approx(
        sum(b - a for a, b in zip(first, second, strict=True)) / len(first)
    )


def test_sign_flip_p_values_do_not_call_a_handful_of_pairs_significant() -> None:
    assert paired_bootstrap([0.9], [0.5]).p_value == 1.0
    assert paired_bootstrap([0.9] * 6, [0.5] * 6).p_value == pytest.approx(2 / 2**6)  # exact enumeration
    assert paired_bootstrap([0.9] * 60, [0.6] * 60).p_value == pytest.approx(1 / 2001)
    assert paired_bootstrap([0.5] * 30, [0.5] * 30).p_value == 1.0
    # On 0/1 verdicts the sign-flip test is McNemar's exact test.
    first, second = [1, 1, 1, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 0, 1, 1]
    assert paired_bootstrap(first, second).p_value == pytest.approx(mcnemar_exact(3, 1))


def test_paired_bootstrap_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])
    assert paired_bootstrap([], []).p_value == 1.0


def test_holm_adjust() -> None:
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm_adjust([]) == []
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def test_auroc_interval_brackets_the_auroc_and_is_seeded() -> None:
    from sklearn.metrics import roc_auc_score

    clean = [0.30, 0.25, 0.28, 0.22, 0.35, 0.19, 0.27, 0.31]
    hallucinated = [0.21, 0.24, 0.18, 0.26, 0.20, 0.23]
    point = roc_auc_score([1] * len(clean) + [0] * len(hallucinated), clean + hallucinated)
    low, high = auroc_interval(clean, hallucinated, seed=3)
    assert 0.0 <= low < point < high <= 1.0
    assert high - low > 0.1  # 14 scores: a wide interval, as it should be
    assert auroc_interval(clean, hallucinated, seed=3) == (low, high)
    assert auroc_interval(clean, hallucinated, seed=4) != (low, high)
    assert auroc_interval([2.0, 3.0], [0.0, 1.0]) == (1.0, 1.0)  # separated in every resample
    assert auroc_interval([0.5, 0.5], [0.5]) == (0.5, 0.5)  # ties count one half
    with pytest.raises(ValueError, match="both classes"):
        auroc_interval([0.5], [])


def test_paired_comparison_counts_discordant_verdicts_and_tests_them_with_mcnemar() -> None:
    first = [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    second = [0, 0, 1, 0, 1, 0, 0, 0, 1, 0]
    result = paired_comparison(first, second, seed=5)
    assert (result.n, result.only_first, result.only_second) == (10, 5, 1)
    assert result.mcnemar_p == mcnemar_exact(5, 1)
    boot = paired_bootstrap(first, second, seed=5)
    assert (result.difference, result.low, result.high, result.p_value) == (
        boot.mean_difference,
        boot.low,
        boot.high,
        boot.p_value,
    )
    assert result.difference == pytest.approx(-0.4)


def test_paired_comparison_of_partial_credit_scores_has_no_mcnemar() -> None:
    result = paired_comparison([0.5, 0.9, 0.2], [0.7, 0.9, 0.1], seed=0)
    assert (result.only_first, result.only_second, result.mcnemar_p) == (1, 1, None)
    assert result.difference == pytest.approx((0.2 + 0.0 - 0.1) / 3)


def test_paired_comparison_without_resamples_gives_counts_and_mcnemar_only() -> None:
    result = paired_comparison([1, 1, 1, 0], [0, 0, 1, 1], resamples=0)
    assert (result.only_first, result.only_second, result.difference) == (2, 1, -0.25)
    assert result.p_value == result.mcnemar_p == mcnemar_exact(2, 1)
    assert math.isnan(result.low) and math.isnan(result.high)
