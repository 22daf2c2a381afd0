"""The headline (52's per-question results) of two runs that differ only in the LM's compute dtype, row by row
(issue 23.2): per (method, centring), the float32 − bfloat16 difference in visual accuracy, paired by seed (the same
seeds, questions and data), with a seed-level t interval, Holm over the rows, and one of four verdicts at the study's
margin (±0.02): higher, lower, equivalent, undecided. Prints JSON.

    UNICORN_DTYPE=float32 make demo RUN=runs/fp32;  UNICORN_DTYPE=bfloat16 make demo RUN=runs/bf16
    .venv/bin/python bench/bench_dtype_headline.py runs/fp32 runs/bf16 [--out bench/results/bench_dtype_headline.json]
"""
import argparse, json
from pathlib import Path

import pandas as pd

from unicorn.studies import MARGIN, compare, four_verdicts, holm, outcomes


def per_question(run: Path) -> pd.DataFrame:
    "52's per-question results of run folder `run`."
    return pd.read_csv(Path(run) / "studies" / "shift_ablation" / "per_question.csv")


def dtype_table(a: pd.DataFrame, b: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    "One row per (method, centring) present in both: accuracies, a − b with its interval, Holm-adjusted p, verdict."
    rows = []
    for (m, c), ga in a.groupby(["method", "centring"]):
        gb = b[(b.method == m) & (b.centring == c)]
        if gb.empty: continue
        x, y = outcomes(ga), outcomes(gb)
        d = compare(x, y, margin=margin)
        rows.append({"method": m, "centring": c, "seeds": len(x[1]), "acc_a": x[0].mean(), "acc_b": y[0].mean(),
                     "diff": float(d["est"]), "low": float(d["low"]), "high": float(d["high"]), "p": float(d["p"]),
                     "p_equiv": float(d["p_equiv"])})
    t = pd.DataFrame(rows)
    t["p_holm"], t["p_equiv_holm"] = holm(t.p.to_numpy()), holm(t.p_equiv.to_numpy())
    t["verdict"] = four_verdicts(t["diff"], t.p_holm, t.p_equiv_holm)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_a", help="the float32 run folder")
    ap.add_argument("run_b", help="the bfloat16 run folder")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    t = dtype_table(per_question(a.run_a), per_question(a.run_b))
    out = {"a": a.run_a, "b": a.run_b, "margin": MARGIN, "rows": t.round(4).to_dict(orient="records"),
           "verdicts": t.verdict.value_counts().to_dict()}
    for r in (a.run_a, a.run_b):
        m = json.loads((Path(r) / "manifest.json").read_text())
        out[f"machine_{Path(r).name}"] = m.get("stages", {}).get("machine", {})
    print(t.round(3).to_string(index=False))
    if a.out: Path(a.out).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out["verdicts"]))


if __name__ == "__main__":
    main()
