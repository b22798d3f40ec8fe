"""The numbers a listening test ends in: preference with a 95% confidence interval and an
exact binomial test (A/B), mean score with a 95% interval and post-screening (MUSHRA).

Standard library only (no scipy): the formulas are short and their values are pinned by the
tests against published ones.
"""

import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% point
# Student's t 97.5% points for 1..30 degrees of freedom (beyond 30 the normal's is within 4%)
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
          2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
          2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
REFERENCE_FLOOR = 90.0  # MUSHRA post-screening (ITU-R BS.1534-3): a rater who scores the
REFERENCE_SHARE = 0.15  # hidden reference below 90 in more than 15% of trials is excluded


def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials -> (low, high); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_p(k: int, n: int) -> float:
    """Two-sided exact binomial test of k successes in n trials against p = 1/2: the chance
    of an outcome at least as far from n/2 as k. 1.0 for n = 0."""
    if n == 0:
        return 1.0
    far = max(k, n - k)
    tail = sum(math.comb(n, i) for i in range(far, n + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def t_975(df: int) -> float:
    return _T_975[df - 1] if df <= len(_T_975) else Z_95


def mean_ci(scores: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% interval (Student's t) -> (mean, low, high); one score: no spread;
    none: (None, None, None)."""
    n = len(scores)
    if n == 0:
        return None, None, None
    mean = sum(scores) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = t_975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def trials_to_exclude_half(share: float, limit: int = 100_000) -> int | None:
    """The fewest decided trials at which an observed preference of exactly `share` has a
    95% Wilson interval that leaves out 50%; None if not within `limit` (or share = 0.5)."""
    for n in range(1, limit + 1):
        low, high = wilson(share * n, n)
        if low > 0.5 or high < 0.5:
            return n
    return None


def pairs(answers: list[tuple[str, str, str | None]], conditions: list[str]) -> list[dict]:
    """A/B answers (a, b, winner: a's name, b's name or None for no preference), pairs in
    the order of `conditions` -> [{a, b, n, a_wins, b_wins, ties, pref_a, ci_low, ci_high,
    p_value}]: pref_a and its interval are over the decided trials (ties aside), n counts
    all of the pair's answers."""
    order = {c: i for i, c in enumerate(conditions)}
    table = {}
    for a, b, winner in answers:
        if order[a] > order[b]:
            a, b = b, a
        row = table.setdefault((a, b), [0, 0, 0])
        row[0 if winner == a else 1 if winner == b else 2] += 1
    out = []
    for i, a in enumerate(conditions):
        for b in conditions[i + 1:]:
            a_wins, b_wins, ties = table.get((a, b), (0, 0, 0))
            decided = a_wins + b_wins
            low, high = wilson(a_wins, decided)
            out.append({"a": a, "b": b, "n": decided + ties, "a_wins": a_wins,
                        "b_wins": b_wins, "ties": ties,
                        "pref_a": a_wins / decided if decided else None,
                        "ci_low": low if decided else None, "ci_high": high if decided else None,
                        "p_value": binomial_p(a_wins, decided)})
    return out


def screened_raters(scores: list[tuple[str, str, float]], reference: str) -> dict[str, float]:
    """MUSHRA post-screening: (rater, condition, score) rows -> {excluded rater: the share of
    their trials with the hidden reference below REFERENCE_FLOOR}."""
    seen, low = {}, {}
    for rater, condition, score in scores:
        if condition == reference:
            seen[rater] = seen.get(rater, 0) + 1
            low[rater] = low.get(rater, 0) + (score < REFERENCE_FLOOR)
    return {r: low[r] / seen[r] for r in seen if low[r] / seen[r] > REFERENCE_SHARE}


def mushra(scores: list[tuple[str, str, float]], conditions: list[str],
           reference: str) -> dict:
    """(rater, condition, score) rows -> {conditions: [{condition, n, mean, ci_low, ci_high}],
    excluded: {rater: share below the floor}, raters: n kept} after post-screening."""
    excluded = screened_raters(scores, reference)
    kept = [row for row in scores if row[0] not in excluded]
    rows = []
    for c in conditions:
        values = [s for _, condition, s in kept if condition == c]
        mean, low, high = mean_ci(values)
        rows.append({"condition": c, "n": len(values), "mean": mean, "ci_low": low,
                     "ci_high": high})
    return {"conditions": rows, "excluded": excluded,
            "raters": len({r for r, _, _ in kept})}
