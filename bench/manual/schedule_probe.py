"""Train and score mini VLMs on a finished run folder with training settings overridden, one JSON line per model:
training seconds, training + scoring seconds, visual accuracy raw and centred on U (200 visual questions). Used to
test shorter schedules for the demo (issue 23; bench/README.md). Run after `make demo`:

    UNICORN_DTYPE=float32 .venv/bin/python bench/manual/schedule_probe.py real 0,1,2 pretrain_steps=10 sft_steps=25
"""
import json
import sys
import time
from dataclasses import replace

from unicorn.evaluate import EVAL_PRESETS, eval_questions
from unicorn.runs import RunFolder
from unicorn.studies import score_condition
from unicorn.train import PRESETS, config_overrides, load_base_lm


def main(argv: list[str]) -> None:
    methods, seeds, kw = argv[0].split(","), [int(s) for s in argv[1].split(",")], config_overrides(argv[2:])
    cfg, run = replace(PRESETS["mini"], **kw), RunFolder("runs/mini", profile="mini")
    ecfg = EVAL_PRESETS["mini"]
    questions = eval_questions(100, ecfg.eval_seed, 0)
    lm = load_base_lm(cfg)[0]
    for m in methods:
        for s in seeds:
            t0 = time.time()
            r = score_condition(run, m, replace(cfg, seed=s), questions, "label_text_train", lm, ("raw", "centred"))
            vis = r.groupby("centring").correct.mean()
            print(json.dumps({"method": m, "seed": s, **kw, "train_s": float(r.train_s.iloc[0]),
                              "total_s": round(time.time() - t0, 1), "raw": round(float(vis["raw"]), 3),
                              "centred": round(float(vis["centred"]), 3)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
