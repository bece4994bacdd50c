"""How many seeds a two-group comparison of the synthetic benchmark needs, from its recorded runs.

The benchmark compares groups of training seeds (ADD against the baseline or the depth-blind control)
with a one-sided exact permutation test. Whether a bar like "p <= 0.05" can be met at all depends on
the seed-to-seed spread: this script reads the two groups' records, measures their means and spread,
and prints (JSON) the seeds per group a one-sided test at ``--alpha`` needs for ``--power`` if the true
difference is the observed one, or each ``--effect`` (absolute, in the metric's unit) /
``--relative-effect`` (a fraction of group B's mean). Normal approximation with the pooled standard
deviation, n = 2 (z_(1-alpha) + z_power)^2 sd^2 / effect^2 per group; the permutation test needs about as
many (it is as efficient as the t-test for normal data), and never fewer than it takes for its smallest
possible p to reach alpha (3 + 3 seeds at 0.05; 5 pairs).

``--paired``: the files of A and B are pairs in the order given (the same seed), as ADD and its
depth-blind control are (one config, data order, augmentations and initialisation; only the teacher
differs). The figures then come from the per-seed differences: the exact sign-flip p and
n = (z_(1-alpha) + z_power)^2 sd_diff^2 / effect^2 pairs, far fewer when the seed's draw moves both runs.

``gain_upper_bound``: the one-sided (1 - alpha) upper confidence bound on A's gain over B by inverting
the same permutation test (no distributional assumption): a gain above it is ruled out at that level.

    python benchmarks/seed_power.py --metric depth \\
        --a benchmarks/records/synth1500_v3/gupnet_nojit2/diagnostics/add_s[0-5].json \\
        --b benchmarks/records/synth1500_v3/gupnet_nounc/diagnostics/rgb_teacher_s[0-5].json \\
        --relative-effect 0.036

Metrics: ``ap3d`` (Car moderate AP3D|R40 of a run record, higher is better) and ``depth`` (all-car
median depth error of an ``add_diagnostics.py`` output, lower is better). "Better" is always A over B.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from add_synthetic import METRIC, paired_permutation_p_value, permutation_p_value, read_record  # the sibling benchmark (a script's folder is on sys.path)

METRICS = {
    # name: (reader of one record file, +1 if higher is better else -1)
    "ap3d": (lambda path: float(read_record(path, "metrics")["last_metrics"][f"{METRIC}/moderate"]), +1),
    "depth": (lambda path: float(next(iter(read_record(path).values()))["car_depth_median_m"]), -1),
}


def seeds_needed(effect: float, sd: float, alpha: float, power: float, paired: bool = False) -> int | None:
    """Seeds per group for a one-sided test of a shift ``effect`` with spread ``sd``: two independent
    groups of common ``sd``, or (``paired``) pairs whose differences have ``sd``.
    None if ``effect`` <= 0: no number of seeds shows a difference in that direction."""
    if effect <= 0:
        return None
    z = statistics.NormalDist().inv_cdf
    approximate = math.ceil((1 if paired else 2) * ((z(1.0 - alpha) + z(power)) * sd / effect) ** 2)
    return max(approximate, exact_test_floor(alpha, paired))


def exact_test_floor(alpha: float, paired: bool = False) -> int:
    """The fewest seeds per group whose exact permutation test can reach p <= alpha at all: its
    smallest p is 1 / C(2n, n) for two groups of n, 1 / 2^n for n pairs."""
    n = 1
    while (0.5 ** n if paired else 1.0 / math.comb(2 * n, n)) > alpha:
        n += 1
    return n


def power_at(n: int, effect: float, sd: float, alpha: float, paired: bool = False) -> float:
    """Power of the one-sided test with ``n`` seeds per group, or ``n`` pairs (normal approximation)."""
    normal = statistics.NormalDist()
    return normal.cdf(effect / (sd * math.sqrt((1 if paired else 2) / n)) - normal.inv_cdf(1.0 - alpha))


def gain_upper_bound(a: list[float], b: list[float], alpha: float, paired: bool) -> float | None:
    """One-sided (1 - alpha) upper confidence bound on the gain mean(a) - mean(b), higher better.

    Distribution-free: the smallest shift delta that the permutation test (the sign-flip test if
    ``paired``) rejects in favour of "the gain is below delta" at level alpha, found by bisection
    (the test's p-value only falls as delta grows). Gains above the bound are ruled out at that level.
    """
    def p_below(delta: float) -> float:
        shifted = [x - delta for x in a]
        return paired_permutation_p_value(b, shifted) if paired else permutation_p_value(b, shifted)

    span = max(a + b) - min(a + b) or 1.0
    low, high = min(a) - max(b) - span, max(a) - min(b) + span  # p_below(low) = 1, p_below(high) = its minimum
    if p_below(high) > alpha:
        return None  # too few runs for any bound at this level
    for _ in range(40):  # the span / 2^40: far below any metric's precision
        middle = (low + high) / 2
        low, high = (low, middle) if p_below(middle) <= alpha else (middle, high)
    return high


def compare(a: list[float], b: list[float], sign: int, effects: dict[str, float], alpha: float, power: float,
            paired: bool = False) -> dict:
    """The figures of one comparison (each group >= 2 runs); ``sign`` = +1 if higher is better, -1 if lower is."""
    better_a, better_b = [sign * v for v in a], [sign * v for v in b]  # the tests' direction: higher is better
    if paired:
        differences = [x - y for x, y in zip(better_a, better_b)]
        spread = statistics.stdev(differences)
        p_value = paired_permutation_p_value(better_a, better_b)
    else:
        spread = math.sqrt(((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
                           / (len(a) + len(b) - 2))
        p_value = permutation_p_value(better_a, better_b)
    observed = statistics.fmean(better_a) - statistics.fmean(better_b)
    n = min(len(a), len(b))
    rows = {"observed": observed, **effects}
    result = {
        "a": {"n": len(a), "mean": statistics.fmean(a), "sd": statistics.stdev(a), "values": a},
        "b": {"n": len(b), "mean": statistics.fmean(b), "sd": statistics.stdev(b), "values": b},
        "paired": paired,
        "sd_used": spread,
        "p_one_sided_a_better": p_value,
        "gain_upper_bound": gain_upper_bound(better_a, better_b, alpha, paired),
        "alpha": alpha,
        "power": power,
        "effects": {
            name: {"effect": effect, "effect_in_sd": effect / spread if spread > 0 else None,
                   "seeds_per_group": seeds_needed(effect, spread, alpha, power, paired),
                   f"power_at_{n}_seeds": power_at(n, effect, spread, alpha, paired) if effect > 0 else 0.0}
            for name, effect in rows.items()
        },
    }
    if paired:
        result["differences_a_better"] = differences
        result["correlation"] = statistics.correlation(a, b)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", choices=sorted(METRICS), required=True)
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="group A's record files (e.g. ADD)")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="group B's record files (baseline or control)")
    parser.add_argument("--effect", nargs="*", type=float, default=[], help="hypothetical differences, metric units")
    parser.add_argument("--relative-effect", nargs="*", type=float, default=[], help="hypothetical differences, x B's mean")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--paired", action="store_true", help="A and B are pairs in the order given (same seeds)")
    args = parser.parse_args(argv)
    if args.paired and len(args.a) != len(args.b):
        print(f"error: --paired needs as many A files as B files, got {len(args.a)} and {len(args.b)}", file=sys.stderr)
        return 2
    read, sign = METRICS[args.metric]
    values = {}
    for path in args.a + args.b:
        if not path.is_file():
            print(f"error: {path}: no such record file", file=sys.stderr)
            return 2
        try:
            values[path] = read(path)
        except (KeyError, TypeError, StopIteration, ValueError):
            print(f"error: {path}: no {args.metric} figure (see --help for the record kinds)", file=sys.stderr)
            return 2
    a, b = [values[path] for path in args.a], [values[path] for path in args.b]
    if len(a) < 2 or len(b) < 2:
        print("error: each group needs at least two record files", file=sys.stderr)
        return 2
    effects = {f"effect {value:g}": value for value in args.effect}
    effects.update({f"relative effect {value:g}": value * statistics.fmean(b) for value in args.relative_effect})
    result = compare(a, b, sign, effects, args.alpha, args.power, args.paired)
    result["metric"] = args.metric
    result["files"] = {"a": [str(p) for p in args.a], "b": [str(p) for p in args.b]}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
