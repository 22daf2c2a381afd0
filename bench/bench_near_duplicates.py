"""Near-duplicate removal, before vs after, in one run (prints one JSON object):

the hand-written MinHash LSH (`old_near_duplicates`, kept as the reference in tests/test_near_duplicates.py) vs
`unicorn.captions.near_duplicates` on datasketch's `MinHash.bulk` + `MinHashLSH`, same bands/rows/threshold, on
synthetic captions (80-140 words, a fifth of them edited copies of others). Reports seconds (best of `--reps`),
the ratio old/new, and whether the two found the same `{duplicate: kept}` map; if a mini run is present
(runs/mini/captions_raw, read-only) also whether re-finalising it keeps and rejects the same captions as the run did.

    .venv/bin/python bench/bench_near_duplicates.py [--n 2000] [--reps 3]
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_near_duplicates import VOCAB, old_near_duplicates   # noqa: E402  the reference lives with its test
from unicorn.captions import finalize_captions, near_duplicates  # noqa: E402


def captions(n: int, seed: int = 0) -> list[str]:
    "`n` synthetic captions: random words, and one in five a copy of an earlier one with 1-3 words replaced."
    rng = np.random.default_rng(seed)
    out: list[list[str]] = []
    for _ in range(n):
        if out and rng.random() < 0.2:
            w = list(out[rng.integers(len(out))])
            for p in rng.integers(0, len(w), rng.integers(1, 4)): w[p] = VOCAB[rng.integers(len(VOCAB))]
        else: w = [VOCAB[k] for k in rng.integers(0, len(VOCAB), rng.integers(80, 141))]
        out.append(w)
    return [" ".join(w).capitalize() + "." for w in out]


def best_of(fn, reps: int) -> tuple[float, object]:
    "The fastest of `reps` timed calls of `fn`, and its result."
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); res = fn(); ts.append(time.perf_counter() - t)
    return min(ts), res


def mini_same() -> bool | None:
    "Re-finalise the mini run's raw Stage 1 records: the same kept captions and rejected (id, reason)? None: no run."
    run = ROOT / "runs" / "mini"
    if not (run / "captions_raw").is_dir(): return None
    read = lambda d: [json.loads(l) for p in sorted((run / d).glob("part-*.jsonl")) for l in p.read_text().splitlines()]
    kept, rejected, _ = finalize_captions(read("captions_raw"))
    why = lambda rs: sorted((r["id"], r["reason"], r.get("duplicate_of")) for r in rs)
    return kept == read("captions") and why(rejected) == why(read("captions_rejected"))


def main():
    "Time both implementations on the same captions and print the comparison as JSON."
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000); ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--bands", type=int, default=16); ap.add_argument("--rows", type=int, default=4)
    a = ap.parse_args()
    texts = captions(a.n)
    args = (texts, a.threshold, a.bands, a.rows)
    t_old, d_old = best_of(lambda: old_near_duplicates(*args), a.reps)
    t_new, d_new = best_of(lambda: near_duplicates(*args), a.reps)
    print(json.dumps({"captions": a.n, "threshold": a.threshold, "bands": a.bands, "rows": a.rows, "reps": a.reps,
                      "duplicates": len(d_new), "same_result": d_old == d_new, "old_s": round(t_old, 4),
                      "new_s": round(t_new, 4), "ratio_old_over_new": round(t_old / t_new, 2),
                      "mini_run_same_captions": mini_same()}))


if __name__ == "__main__":
    main()
