"""Intervals that cover (issue 24, item 5): simulate the studies' own variance structure and check what the intervals
and verdicts of `unicorn.studies` promise — coverage of the true difference ≥ 0.93 at 3 and 10 seeds, and "higher" or
"lower" for two equal conditions about 5 % of the time.

The simulation: two conditions, each trained with `seeds` seeds, answering the same 600 questions (200 test images ×
3 questions). Question q of image c under condition k and seed s is right with probability
base_k + seed effect (sd 0.02 or 0.05, drawn per condition and seed) + image difficulty (sd 0.08, shared) +
condition × image (sd 0.04) + question difficulty (sd 0.03, shared). The true difference is base_a − base_b: the
expected accuracy over new seeds *and* new test images, what a study's sentence claims.
"""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as hs

from unicorn.studies import (MARGIN, boot_tests, four_verdicts, hierarchical_bootstrap, holm, interval_table, reading,
                             seed_t, t_tests)

N_IMG, Q_PER_IMG = 200, 3


def simulate(rng, n_sim: int, seeds: int, seed_sd: float, diff: float, base: float = 0.75, img_sd: float = 0.08,
             cond_img_sd: float = 0.04, q_sd: float = 0.03, q_per_img: int = Q_PER_IMG):
    "`(a, b, groups)`: n_sim studies' outcomes [n_sim, seeds, questions] of two conditions, and each question's image."
    groups = np.repeat(np.arange(N_IMG), q_per_img)
    shape = (n_sim, 2, 1, N_IMG)
    img = rng.normal(0, img_sd, (n_sim, 1, 1, N_IMG))[..., groups] + rng.normal(0, cond_img_sd, shape)[..., groups]
    q = rng.normal(0, q_sd, (n_sim, 1, 1, len(groups)))
    s = rng.normal(0, seed_sd, (n_sim, 2, seeds, 1))
    p = np.clip(np.array([base + diff, base]).reshape(1, 2, 1, 1) + img + q + s, 0, 1)
    y = rng.random(p.shape) < p
    return y[:, 0].astype(np.float64), y[:, 1].astype(np.float64), groups


CASES = [(seeds, sd, diff) for seeds in (3, 10) for sd in (0.02, 0.05) for diff in (0.0, 0.04)]


@pytest.mark.parametrize("seeds,seed_sd,diff", CASES)
def test_seed_t_covers_the_true_difference(seeds, seed_sd, diff):
    rng = np.random.default_rng([seeds, int(seed_sd * 100), int(diff * 100)])
    a, b, groups = simulate(rng, 1000, seeds, seed_sd, diff)
    r = t_tests(seed_t(a, b, groups))
    cover = ((r["low"] <= diff) & (diff <= r["high"])).mean()
    assert cover >= 0.93, f"{seeds} seeds, seed sd {seed_sd}, difference {diff}: coverage {cover:.3f}"
    if diff == 0:                                                   # equal conditions: false "higher"/"lower"
        v = four_verdicts(r["est"], r["p"], r["p_equiv"])
        false = np.isin(v, ["higher", "lower"]).mean()
        assert 0.02 <= false <= 0.07, f"{seeds} seeds, seed sd {seed_sd}: false higher/lower rate {false:.3f}"


def test_unpaired_rows_cover_too():
    "Rows that do not share seeds: Welch on the per-seed accuracies (3 seeds against 10)."
    rng = np.random.default_rng(7)
    a, b, groups = simulate(rng, 1000, 10, 0.05, 0.03)
    r = t_tests(seed_t(a[:, :3], b, groups, paired=False))
    assert ((r["low"] <= 0.03) & (0.03 <= r["high"])).mean() >= 0.93


def test_the_image_share_is_needed_when_seeds_vary_little():
    "With a small seed effect and many questions per image, an interval over seeds alone misses the images' variance."
    rng = np.random.default_rng(11)
    a, b, groups = simulate(rng, 1000, 10, 0.005, 0.0, cond_img_sd=0.10, q_per_img=6)
    with_images = t_tests(seed_t(a, b, groups))
    seeds_only = t_tests({"est": (a - b).mean((-2, -1)), "se": (a - b).mean(-1).std(-1, ddof=1) / np.sqrt(10), "df": 9})
    cov = lambda r: ((r["low"] <= 0) & (0 <= r["high"])).mean()
    assert cov(with_images) >= 0.93 and cov(seeds_only) < 0.80, (cov(with_images), cov(seeds_only))


def test_hierarchical_bootstrap_covers_at_ten_seeds():
    "The second method: fine at 10 seeds (a percentile bootstrap of 3 seeds under-covers: t is the default)."
    rng = np.random.default_rng(3)
    a, b, groups = simulate(rng, 200, 10, 0.05, 0.04)
    hits = []
    for k in range(200):
        r = boot_tests(a[k].mean() - b[k].mean(), hierarchical_bootstrap(a[k], b[k], groups, n_boot=400, seed=k))
        hits.append(r["low"] <= 0.04 <= r["high"])
    assert np.mean(hits) >= 0.90, np.mean(hits)


def test_equivalence_is_shown_when_the_difference_is_small_and_well_measured():
    """Equal conditions with little seed noise and 10 seeds: TOST can call them equivalent within ±0.02 (about half the
    time: the 600 questions' own noise leaves a 90 % half-width near 0.015), and they are rarely called different."""
    rng = np.random.default_rng(5)
    a, b, groups = simulate(rng, 300, 10, 0.005, 0.0, cond_img_sd=0.0, img_sd=0.0, q_sd=0.0)
    r = t_tests(seed_t(a, b, groups))
    v = four_verdicts(r["est"], r["p"], r["p_equiv"])
    assert (v == "equivalent").mean() > 0.3 and not np.isin(v, ["higher", "lower"]).mean() > 0.1


def _frame(rng, method, p, seeds, q=120):
    return pd.DataFrame([{"method": method, "centring": "raw", "seed": s, "qid": f"q{j}", "qtype": "shape",
                          "image": f"i{j // 3}", "correct": int(rng.random() < p)}
                         for s in range(seeds) for j in range(q)])


def test_interval_table_is_backward_compatible_and_never_says_equal():
    rng = np.random.default_rng(0)
    res = pd.concat([_frame(rng, "ref", 0.9, 4), _frame(rng, "bad", 0.3, 4), _frame(rng, "same", 0.9, 4)])
    t = interval_table(res, ref=("ref", "raw"))
    old = ["method", "centring", "accuracy", "std_over_seeds", "ci_low", "ci_high", "seeds", "questions",
           "diff_to_ref", "diff_low", "diff_high", "vs_ref"]
    assert set(old) <= set(t.columns)
    assert {"interval", "p", "p_holm", "p_equiv", "p_equiv_holm", "margin", "verdict"} <= set(t.columns)
    assert list(t.verdict) == ["reference", "lower", "undecided"] and (t.margin == MARGIN).all()
    text = reading(t, ref_name="ref")
    assert " equal " not in text and "lower than ref" in text and "undecided against ref" in text
    legacy = t.drop(columns=["verdict", "p_holm", "margin"])
    legacy["vs_ref"] = ["reference", "lower", "no difference measured"]
    assert "undecided against ref" in reading(legacy, ref_name="ref")       # a table written before the four verdicts


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_monotone_and_bounded(ps):
    p = np.array(ps)
    adj = holm(p)
    assert (adj >= p - 1e-12).all() and (adj <= 1).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adj[order]) >= -1e-12).all()                      # the adjustment keeps the order of the p-values
    assert np.isclose(adj.min(), min(1.0, len(p) * p.min()))


def test_a_one_seed_group_gets_no_interval_instead_of_an_error():
    "53's k arms run one seed: the table still has the row (accuracy, no interval) and reads it as undecided."
    rng = np.random.default_rng(1)
    res = pd.concat([_frame(rng, "ref", 0.9, 3), _frame(rng, "k=64", 0.5, 1)])
    t = interval_table(res, ref=("ref", "raw")).set_index("method")
    assert np.isnan(t.loc["k=64", "ci_low"]) and t.loc["k=64", "verdict"] == "undecided"
    assert "no interval from one seed" in reading(t.reset_index())


def test_accuracy_intervals_stay_inside_zero_and_one():
    "52's demo showed Unicorn 0.937 [0.799, 1.074]: a seed-level t interval near 1 reaches past it; the table clips."
    rng = np.random.default_rng(3)
    hi = pd.concat([_frame(rng, "near_one", p, 1).assign(seed=s) for s, p in enumerate((1.0, 0.8, 1.0))])
    lo = pd.concat([_frame(rng, "near_zero", p, 1).assign(seed=s) for s, p in enumerate((0.0, 0.2, 0.0))])
    raw = seed_t(np.stack([hi[hi.seed == s].correct.to_numpy() for s in range(3)]),
                 groups=hi[hi.seed == 0].image.to_numpy())
    assert t_tests(raw)["high"] > 1                       # the unclipped interval does reach past 1
    t = interval_table(pd.concat([hi, lo])).set_index("method")
    assert t.loc["near_one", "ci_high"] == 1.0 and t.loc["near_zero", "ci_low"] == 0.0
    assert 0 < t.loc["near_one", "ci_low"] < t.loc["near_one", "accuracy"] < 1
